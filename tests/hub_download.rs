//! Downloads from a fake Hub on loopback (see tests/fake_hub): headers, CDN redirect, auth,
//! errors, resume, corruption, size limits and the blob lock.

mod fake_hub;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use fake_hub::{bytes, sha256_hex, Behaviour, FakeHub, Repo};
use timm::source::hub::{resolve_snapshot, HubOptions};
use timm::TimmStatus;

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

fn opts(hub: &FakeHub, cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: Some(false),
        endpoint: Some(hub.endpoint()),
        // Never pick up a token from the environment of whoever runs the tests.
        token: Some(String::new()),
        progress: None,
    }
}

fn repo_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// Every file under `dir`, relative, sorted: to check a failed call left the cache as it was.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = vec![];
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn downloads_through_the_cdn_redirect_and_then_uses_the_cache() {
    let hub = FakeHub::start();
    let weights = bytes(3 << 20, 1);
    let mut repo = Repo::timm(C1, weights.clone());
    repo.token = Some("hf_secret".into());
    hub.add_repo("timm/private-net", repo);
    let cache = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let s = seen.clone();
    let o = HubOptions {
        token: Some("hf_secret".into()),
        progress: Some(Arc::new(move |done, total| {
            s.lock().unwrap().push((done, total))
        })),
        ..opts(&hub, cache.path())
    };

    let snap = resolve_snapshot("timm/private-net", None, &o).unwrap();
    let root = repo_dir(cache.path(), "timm/private-net");
    assert_eq!(snap, root.join("snapshots").join(C1));
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(std::fs::read_to_string(snap.join("config.json"))
        .unwrap()
        .contains("resnet18"));
    let sha = sha256_hex(&weights);
    assert_eq!(
        std::fs::read_link(snap.join("model.safetensors")).unwrap(),
        Path::new("../../blobs").join(&sha)
    );
    assert_eq!(std::fs::read_to_string(root.join("refs/main")).unwrap(), C1);
    assert!(
        !tree(&root)
            .iter()
            .any(|f| f.ends_with(".incomplete") || f.ends_with(".tmp")),
        "{:?}",
        tree(&root)
    );

    // The token goes to the Hub, never to the CDN host the LFS file redirects to.
    let heads = hub.requests("HEAD", "/resolve/");
    assert!(
        !heads.is_empty()
            && heads
                .iter()
                .all(|r| r.headers.get("authorization").map(String::as_str)
                    == Some("Bearer hf_secret"))
    );
    assert!(heads
        .iter()
        .all(|r| r.headers.get("accept-encoding").map(String::as_str) == Some("identity")));
    let cdn = hub.requests("GET", "/cdn/");
    assert_eq!(cdn.len(), 1);
    assert_eq!(
        cdn[0].headers.get("host").unwrap(),
        &format!("localhost:{}", hub.endpoint().rsplit(':').next().unwrap())
    );
    assert!(
        !cdn[0].headers.contains_key("authorization"),
        "token leaked to the CDN: {:?}",
        cdn[0].headers
    );

    let seen = seen.lock().unwrap().clone();
    let total = weights.len() as u64;
    assert_eq!(seen.last(), Some(&(total, total)));
    assert!(
        seen.iter().filter(|(_, t)| *t == total).count() >= 3,
        "progress every MiB: {seen:?}"
    );
    assert!(
        seen.windows(2)
            .all(|w| w[0].1 != w[1].1 || w[0].0 <= w[1].0),
        "{seen:?}"
    );

    // Second call: served from the cache, no request at all.
    hub.clear_log();
    assert_eq!(
        resolve_snapshot("timm/private-net", Some("main"), &o).unwrap(),
        snap
    );
    assert_eq!(
        resolve_snapshot("timm/private-net", Some(C1), &o).unwrap(),
        snap
    );
    assert!(hub.log().is_empty(), "{:?}", hub.log());
}

#[test]
fn branch_tag_and_pr_revisions_write_refs_and_pin_one_commit() {
    let hub = FakeHub::start();
    let mut repo = Repo::timm(C1, bytes(1000, 2));
    repo.refs.insert("v1.0".into(), C1.into());
    repo.refs.insert("refs/pr/1".into(), C1.into());
    hub.add_repo("org/net", repo);
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    for rev in ["v1.0", "refs/pr/1"] {
        let snap = resolve_snapshot("org/net", Some(rev), &o).unwrap();
        assert!(snap.ends_with(C1));
        let root = repo_dir(cache.path(), "org/net");
        assert_eq!(
            std::fs::read_to_string(root.join("refs").join(rev)).unwrap(),
            C1
        );
    }
    // `refs/pr/1` is sent encoded, and the weights are asked for at the commit, not the branch.
    assert!(
        hub.requests("HEAD", "/resolve/refs%2Fpr%2F1/config.json")
            .len()
            == 1
    );
    assert!(
        hub.requests("HEAD", &format!("/resolve/{C1}/model.safetensors"))
            .len()
            == 2
    );
    assert_eq!(
        hub.requests("GET", "/cdn/").len(),
        1,
        "one blob, downloaded once"
    );
}

#[test]
fn renamed_repo_follows_the_relative_redirect() {
    let hub = FakeHub::start();
    hub.add_repo("org/new-name", Repo::timm(C1, bytes(5000, 3)));
    hub.rename("org/old-name", "org/new-name");
    let cache = tempfile::tempdir().unwrap();
    let snap = resolve_snapshot("org/old-name", None, &opts(&hub, cache.path())).unwrap();
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        bytes(5000, 3)
    );
    assert!(snap.starts_with(repo_dir(cache.path(), "org/old-name")));
    assert!(!hub.requests("HEAD", "/org/new-name/resolve/").is_empty());
}

#[test]
fn unauthorized_asks_for_a_token_and_writes_nothing() {
    let hub = FakeHub::start();
    let mut repo = Repo::timm(C1, bytes(100, 4));
    repo.token = Some("right".into());
    hub.add_repo("org/gated", repo);
    let cache = tempfile::tempdir().unwrap();
    for token in ["", "wrong"] {
        let o = HubOptions {
            token: Some(token.into()),
            ..opts(&hub, cache.path())
        };
        let e = resolve_snapshot("org/gated", None, &o).unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND, "{e}");
        assert!(
            e.message().contains("HF_TOKEN") && e.message().contains("`token`"),
            "{e}"
        );
    }
    assert!(tree(cache.path()).is_empty(), "{:?}", tree(cache.path()));
}

#[test]
fn unknown_repo_revision_and_file_are_not_found() {
    let hub = FakeHub::start();
    hub.add_repo("org/net", Repo::timm(C1, bytes(100, 5)));
    hub.add_repo(
        "org/no-config",
        Repo::new(C2).file("model.safetensors", bytes(10, 1), true),
    );
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    let e = resolve_snapshot("org/nope", None, &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
    let e = resolve_snapshot("org/net", Some("v9"), &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
    assert!(e.message().contains("revision `v9`"), "{e}");
    let e = resolve_snapshot("org/no-config", None, &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
    assert!(e.message().contains("config.json"), "{e}");
    assert!(repo_dir(cache.path(), "org/no-config")
        .join(".no_exist")
        .join(C2)
        .join("config.json")
        .is_file());
}

#[test]
fn pickle_only_repo_is_unsupported_online_and_offline() {
    let hub = FakeHub::start();
    hub.add_repo(
        "org/pickled",
        Repo::new(C1)
            .file("config.json", b"{}".to_vec(), false)
            .file("pytorch_model.bin", bytes(64, 1), true),
    );
    hub.add_repo(
        "org/empty",
        Repo::new(C2).file("config.json", b"{}".to_vec(), false),
    );
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    let e = resolve_snapshot("org/pickled", None, &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");
    assert!(
        e.message().contains("safetensors") && e.message().contains("pytorch_model.bin"),
        "{e}"
    );
    let root = repo_dir(cache.path(), "org/pickled");
    assert!(root
        .join(".no_exist")
        .join(C1)
        .join("model.safetensors")
        .is_file());
    assert!(
        hub.requests("GET", "").is_empty(),
        "nothing is downloaded for a pickle-only repo"
    );

    let offline = HubOptions {
        offline: Some(true),
        ..o.clone()
    };
    let e = resolve_snapshot("org/pickled", None, &offline).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");

    let e = resolve_snapshot("org/empty", None, &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND, "{e}");
    let e = resolve_snapshot("org/empty", None, &offline).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND, "{e}");
    assert!(e.message().contains("model.safetensors"), "{e}");
}

#[test]
fn dropped_connection_keeps_the_partial_file_and_the_next_call_resumes() {
    let hub = FakeHub::start();
    let weights = bytes(1 << 20, 6);
    hub.add_repo("org/net", Repo::timm(C1, weights.clone()));
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    let piece = 100_000;
    hub.set_behaviour(Behaviour {
        drop_after: Some(piece),
        ..Default::default()
    });

    let e = resolve_snapshot("org/net", None, &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_IO, "{e}");
    assert!(e.message().contains("resumes"), "{e}");
    let root = repo_dir(cache.path(), "org/net");
    let sha = sha256_hex(&weights);
    let partial = root.join("blobs").join(format!("{sha}.incomplete"));
    // The first try and three in-call resumes each got `piece` bytes.
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 4 * piece as u64);
    assert!(
        !root.join("blobs").join(&sha).exists(),
        "no blob under its final name"
    );
    assert!(
        std::fs::symlink_metadata(root.join("snapshots").join(C1).join("model.safetensors"))
            .is_err(),
        "no link"
    );
    assert!(!root.join("refs/main").exists());
    let ranges: Vec<_> = hub
        .requests("GET", "/cdn/")
        .iter()
        .map(|r| r.headers.get("range").cloned())
        .collect();
    assert_eq!(
        ranges,
        vec![
            None,
            Some(format!("bytes={piece}-")),
            Some(format!("bytes={}-", 2 * piece)),
            Some(format!("bytes={}-", 3 * piece))
        ]
    );

    hub.set_behaviour(Behaviour::default());
    hub.clear_log();
    let snap = resolve_snapshot("org/net", None, &o).unwrap();
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        weights
    );
    let get = hub.requests("GET", "/cdn/");
    assert_eq!(get.len(), 1);
    assert_eq!(
        get[0].headers.get("range"),
        Some(&format!("bytes={}-", 4 * piece))
    );
    assert!(!partial.exists());
}

#[test]
fn wrong_sha256_is_rejected_and_nothing_is_kept() {
    let hub = FakeHub::start();
    let weights = bytes(200_000, 7);
    hub.add_repo("org/net", Repo::timm(C1, weights.clone()));
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    hub.set_behaviour(Behaviour {
        corrupt: true,
        ..Default::default()
    });
    let e = resolve_snapshot("org/net", None, &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_IO, "{e}");
    assert!(e.message().contains("sha256"), "{e}");
    let root = repo_dir(cache.path(), "org/net");
    let files = tree(&root.join("blobs"));
    assert_eq!(files.len(), 1, "only config.json's blob: {files:?}");
    assert!(
        std::fs::symlink_metadata(root.join("snapshots").join(C1).join("model.safetensors"))
            .is_err()
    );

    hub.set_behaviour(Behaviour::default());
    let snap = resolve_snapshot("org/net", None, &o).unwrap();
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        weights
    );
}

#[test]
fn oversized_claims_are_refused_before_downloading() {
    let hub = FakeHub::start();
    hub.add_repo("org/net", Repo::timm(C1, bytes(100, 8)));
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    hub.set_behaviour(Behaviour {
        claimed_size: Some(("model.safetensors".into(), 65 << 30)),
        ..Default::default()
    });
    let e = resolve_snapshot("org/net", None, &o).unwrap_err();
    assert!(e.message().contains("GiB limit"), "{e}");
    hub.set_behaviour(Behaviour {
        claimed_size: Some(("config.json".into(), 17 << 20)),
        ..Default::default()
    });
    let e = resolve_snapshot("org/net", None, &o).unwrap_err();
    assert!(e.message().contains("MiB limit"), "{e}");
    assert!(hub.requests("GET", "").is_empty());
    assert!(tree(cache.path()).is_empty(), "{:?}", tree(cache.path()));
}

#[test]
fn two_threads_downloading_one_blob_write_it_once() {
    let hub = FakeHub::start();
    let weights = bytes(1 << 20, 9);
    hub.add_repo("org/net", Repo::timm(C1, weights.clone()));
    // 16 chunks of 64 KiB, 25 ms apart: both threads are mid-flight together.
    hub.set_behaviour(Behaviour {
        chunk_delay: Some(Duration::from_millis(25)),
        ..Default::default()
    });
    let cache = tempfile::tempdir().unwrap();
    let o = opts(&hub, cache.path());
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (o, b) = (o.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                resolve_snapshot("org/net", None, &o)
            })
        })
        .collect();
    let snaps: Vec<PathBuf> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert_eq!(snaps[0], snaps[1]);
    assert_eq!(
        std::fs::read(snaps[0].join("model.safetensors")).unwrap(),
        weights
    );
    assert_eq!(
        hub.requests("HEAD", "model.safetensors").len(),
        2,
        "both threads went to the network"
    );
    assert_eq!(
        hub.requests("GET", "/cdn/").len(),
        1,
        "the blob was downloaded once"
    );
    let lock = cache
        .path()
        .join(".locks/models--org--net")
        .join(format!("{}.lock", sha256_hex(&weights)));
    assert!(lock.is_file());
}
