//! The cache is shared with Python's huggingface_hub, both ways, and so is the blob lock.
//! Uses tests/hub_interop.py in the venv scripts/setup-test-python makes (pinned
//! huggingface_hub from PyPI). Skipped, with a message, only when python3 is absent.

mod common;
mod fake_hub;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fake_hub::{bytes, sha256_hex, FakeHub, Repo};
use timm::source::hub::{resolve_snapshot, HubOptions};

const C1: &str = "abcabcabcabcabcabcabcabcabcabcabcabcabca";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The venv's python, or None (after saying why) when there is no python3 to make one.
fn venv_python() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        if Command::new("python3").arg("--version").output().is_err() {
            eprintln!("SKIP hub_interop: python3 is not installed, so huggingface_hub interop is not tested");
            return None;
        }
        // Once per test binary: parallel tests must not build the venv concurrently.
        let out = Command::new(Path::new(ROOT).join("scripts/setup-test-python")).output().expect("run setup-test-python");
        assert!(
            out.status.success(),
            "scripts/setup-test-python failed (it needs PyPI the first time):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Path::new(ROOT).join(".venv-test/bin/python"))
    })
    .clone()
}

/// The interop script with a clean environment: no HF_* or proxy variables of the caller's,
/// a throw-away HF_HOME, and the fake Hub as endpoint.
fn script(py: &Path, home: &Path, endpoint: &str) -> Command {
    let mut cmd = Command::new(py);
    cmd.arg(Path::new(ROOT).join("tests/hub_interop.py"));
    for (k, _) in std::env::vars() {
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("HF_") || upper.starts_with("HUGGING") || upper.ends_with("_PROXY") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HF_HOME", home.join("hf-home"))
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_XET", "1")
        .env("NO_PROXY", "127.0.0.1,localhost");
    cmd
}

fn run(mut cmd: Command) -> String {
    let out = cmd.output().expect("start python");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn opts(cache: &Path, endpoint: String, offline: bool) -> HubOptions {
    HubOptions {
        cache_dir: Some(cache.to_path_buf()),
        offline: Some(offline),
        endpoint: Some(endpoint),
        token: Some(String::new()),
        progress: None,
    }
}

#[test]
fn a_cache_filled_by_huggingface_hub_resolves_offline() {
    let Some(py) = venv_python() else { return };
    let hub = FakeHub::start();
    let weights = bytes(300_000, 11);
    let mut repo = Repo::timm(C1, weights.clone());
    repo.refs.insert("v2".into(), C1.into());
    hub.add_repo("timm/py-net", repo);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut cmd = script(&py, tmp.path(), &hub.endpoint());
    cmd.args([
        "download",
        &hub.endpoint(),
        cache.to_str().unwrap(),
        "timm/py-net",
        "v2",
        "config.json",
        "model.safetensors",
    ]);
    run(cmd);
    assert!(
        !hub.requests("GET", "/cdn/").is_empty(),
        "python downloaded through the fake Hub"
    );

    hub.clear_log();
    for rev in ["v2", C1] {
        let snap = resolve_snapshot(
            "timm/py-net",
            Some(rev),
            &opts(&cache, hub.endpoint(), true),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(snap.join("model.safetensors")).unwrap(),
            weights
        );
    }
    // Online too: what Python cached is used as is.
    resolve_snapshot(
        "timm/py-net",
        Some("v2"),
        &opts(&cache, hub.endpoint(), false),
    )
    .unwrap();
    assert!(hub.log().is_empty(), "{:?}", hub.log());
}

#[test]
fn a_file_we_downloaded_is_found_by_huggingface_hub() {
    let Some(py) = venv_python() else { return };
    let hub = FakeHub::start();
    let weights = bytes(250_000, 12);
    hub.add_repo("org/rust-net", Repo::timm(C1, weights.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    resolve_snapshot("org/rust-net", None, &opts(&cache, hub.endpoint(), false)).unwrap();
    for rev in ["main", C1] {
        let mut cmd = script(&py, tmp.path(), &hub.endpoint());
        cmd.args([
            "check",
            cache.to_str().unwrap(),
            "org/rust-net",
            rev,
            "model.safetensors",
            &sha256_hex(&weights),
        ]);
        let path = run(cmd);
        assert!(
            path.trim()
                .ends_with(&format!("snapshots/{C1}/model.safetensors")),
            "{path}"
        );
    }
}

#[test]
fn our_download_waits_for_the_lock_huggingface_hub_holds() {
    let Some(py) = venv_python() else { return };
    let hub = FakeHub::start();
    let weights = bytes(100_000, 13);
    hub.add_repo("org/locked", Repo::timm(C1, weights.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let lock = cache
        .join(".locks/models--org--locked")
        .join(format!("{}.lock", sha256_hex(&weights)));
    let mut cmd = script(&py, tmp.path(), &hub.endpoint());
    cmd.args(["hold-lock", lock.to_str().unwrap(), "1.5"])
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    let start = Instant::now();
    let snap = resolve_snapshot("org/locked", None, &opts(&cache, hub.endpoint(), false)).unwrap();
    let waited = start.elapsed();
    assert!(child.wait().unwrap().success());
    assert!(
        waited >= Duration::from_millis(1000),
        "took the blob while Python held its lock ({waited:?})"
    );
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        weights
    );
}

/// A fake Hub repo holding a fixture's config.json and model.safetensors, as timm pushes them.
fn fixture_repo(name: &str) -> (Repo, common::Fixture) {
    let f = common::fixture(name);
    let dir = f.folder("native").unwrap();
    let read = |file: &str| std::fs::read(dir.join(file)).unwrap();
    (
        Repo::new(C1)
            .file("config.json", read("config.json"), false)
            .file("model.safetensors", read("model.safetensors"), true),
        f,
    )
}

fn check_logits(m: &common::CModel, f: &common::Fixture) {
    let r = common::reference(f);
    let out = m.infer(&r.input, &r.input_shape).unwrap();
    let d = common::max_abs_diff(&out, &r.logits);
    assert!(d <= 1e-4, "{}: logits differ from timm by {d}", f.name);
}

#[test]
fn a_timm_model_python_cached_loads_through_the_c_abi_offline() {
    let Some(py) = venv_python() else { return };
    let hub = FakeHub::start();
    let (repo, f) = fixture_repo("test_resnet");
    hub.add_repo("timm/test_resnet.fixture", repo);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let mut cmd = script(&py, tmp.path(), &hub.endpoint());
    cmd.args([
        "download",
        &hub.endpoint(),
        cache.to_str().unwrap(),
        "timm/test_resnet.fixture",
        "main",
        "config.json",
        "model.safetensors",
    ]);
    run(cmd);
    hub.clear_log();
    let cache_opt = cache.to_str().unwrap();
    // Both timm spellings: the hf-hub: spec and the bare `arch.tag` name (repo timm/<name>).
    for spec in [
        "hf-hub:timm/test_resnet.fixture",
        "hf-hub:timm/test_resnet.fixture@main",
        "test_resnet.fixture",
    ] {
        let m =
            common::CModel::create(spec, true, &[("cache_dir", cache_opt), ("offline", "true")])
                .unwrap_or_else(|e| panic!("{spec}: {e:?}"));
        check_logits(&m, &f);
    }
    assert!(
        hub.log().is_empty(),
        "offline loads touched the network: {:?}",
        hub.log()
    );
    let e = common::CModel::create(
        "hf-hub:timm/not-cached",
        true,
        &[("cache_dir", cache_opt), ("offline", "true")],
    )
    .err()
    .unwrap();
    assert_eq!(e.status, timm::TimmStatus::TIMM_ERR_NOT_FOUND, "{e:?}");
    assert!(
        e.message.contains("offline") || e.message.contains("OFFLINE"),
        "{}",
        e.message
    );
}

#[test]
fn a_timm_model_downloaded_through_the_c_abi_is_found_by_huggingface_hub() {
    let Some(py) = venv_python() else { return };
    let hub = FakeHub::start();
    let (repo, f) = fixture_repo("test_vit");
    hub.add_repo("timm/test_vit.fixture", repo);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let endpoint = hub.endpoint();
    let m = common::CModel::create(
        "hf-hub:timm/test_vit.fixture",
        true,
        &[
            ("cache_dir", cache.to_str().unwrap()),
            ("offline", "false"),
            ("endpoint", &endpoint),
            ("token", ""),
        ],
    )
    .unwrap();
    check_logits(&m, &f);
    let weights = std::fs::read(f.folder("native").unwrap().join("model.safetensors")).unwrap();
    let mut cmd = script(&py, tmp.path(), &endpoint);
    cmd.args([
        "check",
        cache.to_str().unwrap(),
        "timm/test_vit.fixture",
        "main",
        "model.safetensors",
        &sha256_hex(&weights),
    ]);
    let path = run(cmd);
    assert!(
        path.trim()
            .ends_with(&format!("snapshots/{C1}/model.safetensors")),
        "{path}"
    );
}
