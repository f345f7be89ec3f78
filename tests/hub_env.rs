//! The environment variables, read by the library itself. This binary holds one test so
//! setting process variables cannot race with other tests.

use std::fs;

use timm::source::hub::{resolve_snapshot, HubOptions};
use timm::TimmStatus;

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

#[test]
fn hf_hub_cache_and_hf_hub_offline_are_honoured_and_options_win() {
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hub-cache");
    let snap = cache.join("models--org--net/snapshots").join(COMMIT);
    fs::create_dir_all(&snap).unwrap();
    fs::write(snap.join("config.json"), "{}").unwrap();
    fs::write(snap.join("model.safetensors"), "w").unwrap();
    fs::create_dir_all(cache.join("models--org--net/refs")).unwrap();
    fs::write(cache.join("models--org--net/refs/main"), COMMIT).unwrap();

    // SAFETY: the only test in this binary; nothing else reads the environment concurrently.
    unsafe {
        for (k, _) in std::env::vars() {
            if k.starts_with("HF_") || k.starts_with("HUGGING") || k == "TRANSFORMERS_OFFLINE" {
                std::env::remove_var(k);
            }
        }
        std::env::set_var("HF_HOME", home.path().join("hf-home"));
        std::env::set_var("HF_HUB_CACHE", &cache);
        std::env::set_var("HF_HUB_OFFLINE", "yes");
        // Unreachable on purpose: offline must not try it.
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9/");
        std::env::set_var("HF_TOKEN", " hf_from_env\n");
    }

    let from_env = HubOptions::from_env();
    assert_eq!(from_env.cache_dir.as_deref(), Some(cache.as_path()));
    assert_eq!(from_env.offline, Some(true));
    assert_eq!(from_env.endpoint.as_deref(), Some("http://127.0.0.1:9"));
    assert_eq!(from_env.token.as_deref(), Some("hf_from_env"));
    assert!(
        !format!("{from_env:?}").contains("hf_from_env"),
        "Debug must not print the token"
    );

    assert_eq!(
        resolve_snapshot("org/net", None, &HubOptions::default()).unwrap(),
        snap
    );
    let e = resolve_snapshot("org/other", None, &HubOptions::default()).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
    assert!(
        e.message().contains("HF_HUB_OFFLINE")
            && e.message().contains(&cache.display().to_string()),
        "{e}"
    );

    // Options override: another cache dir (empty) gives a miss there.
    let other = home.path().join("other");
    let o = HubOptions {
        cache_dir: Some(other.clone()),
        ..Default::default()
    };
    let e = resolve_snapshot("org/net", None, &o).unwrap_err();
    assert!(e.message().contains(&other.display().to_string()), "{e}");
    // offline: Some(false) overrides HF_HUB_OFFLINE, so the (dead) endpoint is tried.
    let o = HubOptions {
        offline: Some(false),
        ..Default::default()
    };
    let e = resolve_snapshot("org/other", None, &o).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_IO, "{e}");
    assert!(
        e.message()
            .contains("http://127.0.0.1:9/org/other/resolve/main/config.json"),
        "{e}"
    );
}
