//! `spec::parse` on arbitrary text. Specs arrive through the C ABI as NUL-terminated bytes that
//! must be UTF-8 (non-UTF-8 is refused before parsing), so valid UTF-8 is parsed as is and
//! other bytes lossily, which still exercises every branch with odd characters.
//!
//! Besides "no panic", it checks the property the hub code relies on: whatever `hf-hub:` or
//! bare-name spec is accepted names a repository whose cache folder is a single safe path
//! component (no `/`, `\`, `..`), so a spec cannot climb out of the Hugging Face cache.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timm::spec::{self, Spec};
use timm::TimmStatus;

fn check_repo_is_safe_folder(repo: &str) {
    let folder = format!("models--{}", repo.replace('/', "--"));
    assert!(!folder.contains(['/', '\\', '\0']), "{folder:?}");
    assert!(!repo.contains(".."), "{repo:?}");
    assert!(repo.split('/').count() <= 2, "{repo:?}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match spec::parse(&text) {
        Ok(Spec::Local(path)) => assert!(!path.as_os_str().is_empty()),
        Ok(Spec::HfHub { repo, revision }) => {
            check_repo_is_safe_folder(&repo);
            assert!(revision.is_none_or(|r| !r.is_empty()));
        }
        Ok(Spec::Name { arch, tag }) => {
            assert!(!arch.is_empty());
            // A pretrained bare name becomes `timm/arch.tag`, which must pass the hub's repo
            // check (the same parser) or be refused with a clean error.
            let repo = timm::source::hub::repo_for_name(&arch, tag.as_deref());
            match spec::parse(&format!("hf-hub:{repo}")) {
                Ok(Spec::HfHub { repo, .. }) => check_repo_is_safe_folder(&repo),
                Ok(other) => panic!("hf-hub: spec parsed as {other:?}"),
                Err(e) => assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT),
            }
        }
        Err(e) => {
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e}");
            assert!(!e.message().is_empty());
        }
    }
});
