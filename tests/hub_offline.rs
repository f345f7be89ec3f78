//! Resolving from a cache laid out by hand, with no network: the endpoint is a closed port, so
//! any request would fail the test.

use std::fs;
use std::path::{Path, PathBuf};

use timm::source::hub::{resolve_snapshot, HubOptions};
use timm::TimmStatus;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "timm/resnet50.a1_in1k";

/// A port nothing listens on: bound, then released.
fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
}

fn opts(cache: &Path, offline: bool) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: Some(offline),
        endpoint: Some(dead_endpoint()),
        token: Some(String::new()),
        progress: None,
    }
}

/// The layout huggingface_hub writes: blobs, relative snapshot links, refs.
fn lay_out(cache: &Path, refs: &[&str]) -> PathBuf {
    let root = cache.join("models--timm--resnet50.a1_in1k");
    fs::create_dir_all(root.join("blobs")).unwrap();
    fs::write(root.join("blobs/aaaa"), br#"{"architecture": "resnet50"}"#).unwrap();
    fs::write(root.join("blobs/bbbb"), b"weights").unwrap();
    let snap = root.join("snapshots").join(COMMIT);
    fs::create_dir_all(&snap).unwrap();
    std::os::unix::fs::symlink("../../blobs/aaaa", snap.join("config.json")).unwrap();
    std::os::unix::fs::symlink("../../blobs/bbbb", snap.join("model.safetensors")).unwrap();
    for r in refs {
        let p = root.join("refs").join(r);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, COMMIT).unwrap();
    }
    snap
}

#[test]
fn branch_tag_pr_and_commit_resolve_without_network() {
    let cache = tempfile::tempdir().unwrap();
    let snap = lay_out(cache.path(), &["main", "v1.0", "refs/pr/1"]);
    for offline in [true, false] {
        let o = opts(cache.path(), offline);
        for rev in [
            None,
            Some("main"),
            Some("v1.0"),
            Some("refs/pr/1"),
            Some(COMMIT),
        ] {
            let got = resolve_snapshot(REPO, rev, &o)
                .unwrap_or_else(|e| panic!("{rev:?} offline={offline}: {e}"));
            assert_eq!(got, snap);
            assert_eq!(fs::read(got.join("model.safetensors")).unwrap(), b"weights");
        }
    }
}

#[test]
fn offline_miss_says_what_to_copy_where() {
    let cache = tempfile::tempdir().unwrap();
    let e = resolve_snapshot(REPO, None, &opts(cache.path(), true)).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
    let m = e.message();
    let dir = cache.path().display().to_string();
    assert!(
        m.contains(&format!(
            "`{REPO}`@main is not in the Hugging Face cache at {dir}"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "{dir}/models--timm--resnet50.a1_in1k/snapshots/<commit>/"
        )),
        "{m}"
    );
    assert!(
        m.contains("refs/main") && m.contains("HF_HUB_OFFLINE") && m.contains("run once online"),
        "{m}"
    );

    // A commit hash needs no ref: the message says so.
    let e = resolve_snapshot(REPO, Some(COMMIT), &opts(cache.path(), true)).unwrap_err();
    assert!(
        e.message().contains(&format!("snapshots/{COMMIT}/")) && !e.message().contains("refs/"),
        "{e}"
    );
    assert!(
        fs::read_dir(cache.path()).unwrap().next().is_none(),
        "a miss writes nothing"
    );
}

#[test]
fn offline_partial_snapshot_and_dangling_link_name_the_missing_file() {
    let cache = tempfile::tempdir().unwrap();
    let snap = lay_out(cache.path(), &["main"]);
    fs::remove_file(
        cache
            .path()
            .join("models--timm--resnet50.a1_in1k/blobs/bbbb"),
    )
    .unwrap();
    let e = resolve_snapshot(REPO, None, &opts(cache.path(), true)).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
    assert!(
        e.message().contains(COMMIT) && e.message().contains("lacks model.safetensors"),
        "{e}"
    );
    assert!(e.message().contains(&snap.display().to_string()), "{e}");

    // Online, the same cache is repaired from the network; a dead endpoint makes that an IO error.
    let e = resolve_snapshot(REPO, None, &opts(cache.path(), false)).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_IO, "{e}");
    assert!(e.message().contains("HF_HUB_OFFLINE"), "{e}");
}

#[test]
fn a_ref_with_garbage_is_reported() {
    let cache = tempfile::tempdir().unwrap();
    lay_out(cache.path(), &[]);
    let refs = cache.path().join("models--timm--resnet50.a1_in1k/refs");
    fs::create_dir_all(&refs).unwrap();
    fs::write(refs.join("main"), "not-a-hash").unwrap();
    let e = resolve_snapshot(REPO, None, &opts(cache.path(), true)).unwrap_err();
    assert!(e.message().contains("not-a-hash"), "{e}");
}
