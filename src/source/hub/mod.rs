//! `hf-hub:org/name[@revision]` through the Hugging Face cache, offline first.
//!
//! The cache is the one huggingface_hub uses (see [`cache`] for the layout), so a model Python
//! downloaded is found here and the other way round. A snapshot already in the cache is used
//! without touching the network, even for a branch such as `main`: start-up stays fast and
//! deterministic. To pick up a newer commit of a branch, pin the commit (`@<hash>`) or delete
//! `refs/<branch>` in the repo's cache folder.
//!
//! Settings come from [`HubOptions`], each `None` falling back to the variables huggingface_hub
//! reads: `HF_HUB_CACHE` (then `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`,
//! `XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`), `HF_HUB_OFFLINE` (or
//! `TRANSFORMERS_OFFLINE`), `HF_ENDPOINT`, and `HF_TOKEN` (then `HUGGING_FACE_HUB_TOKEN`, then the
//! file at `HF_TOKEN_PATH` or `HF_HOME/token`).

mod cache;
mod download;
mod lock;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use self::cache::{is_commit_hash, validate_revision, RepoCache};
use self::download::{Client, Head};
use crate::error::{Error, Result};

pub use self::download::MAX_BLOB_SIZE;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_REVISION: &str = "main";
pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// timm's fallback weights; pickled, so only ever probed for, never downloaded.
pub const PICKLE_WEIGHTS_FILE: &str = "pytorch_model.bin";
/// A timm config.json is a few KiB; anything this big is not one.
pub const MAX_CONFIG_SIZE: u64 = 16 << 20;

/// Called with (bytes done, bytes total) of the file being downloaded, at least every MiB and
/// once at the end of each file.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How to reach the Hub and its cache. Every `None` falls back to the environment, then to
/// huggingface_hub's default (see the module docs).
#[derive(Clone, Default)]
pub struct HubOptions {
    pub cache_dir: Option<PathBuf>,
    /// `Some(true)`: never use the network; `Some(false)`: ignore `HF_HUB_OFFLINE`.
    pub offline: Option<bool>,
    /// Base URL such as `https://huggingface.co` (a trailing `/` is dropped).
    pub endpoint: Option<String>,
    /// Bearer token for private or gated repos; `Some("")` sends none, whatever the environment.
    pub token: Option<String>,
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

impl HubOptions {
    /// Every setting as the environment (or the default) gives it; no callback.
    pub fn from_env() -> HubOptions {
        let env = |k: &str| std::env::var(k).ok();
        HubOptions {
            cache_dir: Some(default_cache_dir(&env)),
            offline: Some(env_offline(&env)),
            endpoint: Some(env_endpoint(&env)),
            token: env_token(&env),
            progress: None,
        }
    }
}

/// Settings after applying the fallbacks.
struct Settings {
    cache_dir: PathBuf,
    offline: bool,
    endpoint: String,
}

impl Settings {
    fn resolve(opts: &HubOptions, env: &dyn Fn(&str) -> Option<String>) -> Settings {
        Settings {
            cache_dir: opts
                .cache_dir
                .clone()
                .unwrap_or_else(|| default_cache_dir(env)),
            offline: opts.offline.unwrap_or_else(|| env_offline(env)),
            endpoint: opts
                .endpoint
                .as_deref()
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| env_endpoint(env)),
        }
    }
}

/// An unset and an empty variable mean the same: use the default.
fn non_empty(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    env(key).filter(|v| !v.trim().is_empty())
}

fn expand_home(path: &str, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match (path.strip_prefix('~'), non_empty(env, "HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(format!("{home}{rest}"))
        }
        _ => PathBuf::from(path),
    }
}

fn hf_home(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(home) = non_empty(env, "HF_HOME") {
        return expand_home(&home, env);
    }
    let xdg = non_empty(env, "XDG_CACHE_HOME")
        .map(|x| expand_home(&x, env))
        .unwrap_or_else(|| expand_home("~/.cache", env));
    xdg.join("huggingface")
}

fn default_cache_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    non_empty(env, "HF_HUB_CACHE")
        .or_else(|| non_empty(env, "HUGGINGFACE_HUB_CACHE"))
        .map(|c| expand_home(&c, env))
        .unwrap_or_else(|| hf_home(env).join("hub"))
}

fn is_true(v: Option<String>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_uppercase().as_str(),
            "1" | "ON" | "YES" | "TRUE"
        )
    })
}

fn env_offline(env: &dyn Fn(&str) -> Option<String>) -> bool {
    is_true(non_empty(env, "HF_HUB_OFFLINE").or_else(|| env("TRANSFORMERS_OFFLINE")))
}

fn env_endpoint(env: &dyn Fn(&str) -> Option<String>) -> String {
    non_empty(env, "HF_ENDPOINT")
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
        .trim_end_matches('/')
        .to_string()
}

/// huggingface_hub's `_clean_token`: newlines removed, spaces trimmed, empty means none.
fn clean_token(t: &str) -> Option<String> {
    let t = t.replace(['\r', '\n'], "");
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn env_token(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(t) = env("HF_TOKEN")
        .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
        .and_then(|t| clean_token(&t))
    {
        return Some(t);
    }
    let path = non_empty(env, "HF_TOKEN_PATH")
        .map(|p| expand_home(&p, env))
        .unwrap_or_else(|| hf_home(env).join("token"));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| clean_token(&t))
}

/// The repository timm downloads pretrained weights from for a bare `arch[.tag]` name.
pub fn repo_for_name(arch: &str, tag: Option<&str>) -> String {
    match tag {
        Some(tag) => format!("timm/{arch}.{tag}"),
        None => format!("timm/{arch}"),
    }
}

/// Returns the snapshot folder holding config.json and model.safetensors for repo@revision
/// (default `main`), downloading what's missing unless offline.
pub fn resolve_snapshot(repo: &str, revision: Option<&str>, opts: &HubOptions) -> Result<PathBuf> {
    let env = |k: &str| std::env::var(k).ok();
    resolve_with_env(repo, revision, opts, &env)
}

fn resolve_with_env(
    repo: &str,
    revision: Option<&str>,
    opts: &HubOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf> {
    validate_repo(repo)?;
    let revision = revision.unwrap_or(DEFAULT_REVISION);
    validate_revision(revision)?;
    let settings = Settings::resolve(opts, env);
    let cache = RepoCache::new(&settings.cache_dir, repo);

    if let Some(commit) = cache.commit_for(revision)? {
        if cache.has_file(&commit, CONFIG_FILE) && cache.has_file(&commit, WEIGHTS_FILE) {
            return Ok(cache.snapshot_dir(&commit));
        }
        if settings.offline {
            return Err(offline_partial(&cache, revision, &commit));
        }
    } else if settings.offline {
        return Err(offline_miss(&cache, revision));
    }

    let token = match &opts.token {
        Some(t) => clean_token(t),
        None => env_token(env),
    };
    let client = Client::new(&settings.endpoint, token, opts.progress.clone())?;
    download_snapshot(&client, &cache, revision)
}

/// Same rules as `spec::parse` for `hf-hub:` ids, so a repo that reaches us is a safe folder name.
fn validate_repo(repo: &str) -> Result<()> {
    match crate::spec::parse(&format!("hf-hub:{repo}"))? {
        crate::spec::Spec::HfHub { revision: None, .. } => Ok(()),
        _ => Err(Error::invalid_argument(format!(
            "`{repo}` is not a Hugging Face repository id; pass the revision separately, not after `@`"
        ))),
    }
}

fn download_snapshot(client: &Client, cache: &RepoCache, revision: &str) -> Result<PathBuf> {
    let repo = &cache.repo;
    let label = format!("`{repo}`@{revision}");
    let config = match client.head(repo, revision, CONFIG_FILE)? {
        Head::Found(meta) => meta,
        Head::Missing { commit } => {
            if let Some(c) = &commit {
                cache.mark_missing(c, CONFIG_FILE);
                // As huggingface_hub does, so an offline retry finds the marker.
                let _ = cache.write_ref(revision, c);
            }
            return Err(Error::not_found(format!(
                "{label} has no {CONFIG_FILE} on the Hub (HTTP 404): the repository or file does not exist, \
                 or it is not a timm model"
            )));
        }
    };
    if config.size > MAX_CONFIG_SIZE {
        return Err(Error::invalid_model(format!(
            "{label}: {CONFIG_FILE} is {} bytes, over the {} MiB limit for a model config",
            config.size,
            MAX_CONFIG_SIZE >> 20
        )));
    }
    // Ask for the weights at the commit config.json came from, so a branch moving between
    // the two requests cannot mix files of two commits.
    let commit = config.commit.clone();
    let weights = match client.head(repo, &commit, WEIGHTS_FILE)? {
        Head::Found(meta) => meta,
        Head::Missing { .. } => {
            cache.mark_missing(&commit, WEIGHTS_FILE);
            let _ = cache.write_ref(revision, &commit);
            return Err(match client.head(repo, &commit, PICKLE_WEIGHTS_FILE)? {
                Head::Found(_) => pickle_only(&label),
                Head::Missing { .. } => {
                    cache.mark_missing(&commit, PICKLE_WEIGHTS_FILE);
                    Error::not_found(format!(
                        "{label} (commit {commit}) has no {WEIGHTS_FILE} on the Hub (HTTP 404)"
                    ))
                }
            });
        }
    };
    for (file, meta) in [(CONFIG_FILE, &config), (WEIGHTS_FILE, &weights)] {
        if !cache.has_file(&commit, file) {
            client.fetch_blob(cache, meta, file)?;
            cache.link_snapshot_file(&commit, file, &meta.etag)?;
        }
    }
    // After the files, so the ref of a fresh revision appears only once its snapshot is usable.
    cache.write_ref(revision, &commit)?;
    Ok(cache.snapshot_dir(&commit))
}

fn pickle_only(label: &str) -> Error {
    Error::unsupported(format!(
        "{label} has only {PICKLE_WEIGHTS_FILE} (pickled PyTorch weights), which this library never loads because \
         unpickling can run arbitrary code. Convert it once with Python: \
         `m = timm.create_model('hf-hub:<repo>', pretrained=True); safetensors.torch.save_model(m, 'model.safetensors')`, \
         put it next to the repo's {CONFIG_FILE} and load that folder with `local:<folder>`"
    ))
}

fn offline_note() -> &'static str {
    "offline mode is on (HF_HUB_OFFLINE or option `offline`)"
}

fn offline_miss(cache: &RepoCache, revision: &str) -> Error {
    let dir = cache.cache_dir.display();
    let root = cache.root();
    let how = if is_commit_hash(revision) {
        format!(
            "copy the snapshot folder to {}/",
            root.join("snapshots").join(revision).display()
        )
    } else {
        format!(
            "copy the snapshot folder to {}/<commit>/ and write the commit hash to {}",
            root.join("snapshots").display(),
            cache.ref_path(revision).display()
        )
    };
    Error::not_found(format!(
        "`{}`@{revision} is not in the Hugging Face cache at {dir} and {}: run once online, or {how}",
        cache.repo,
        offline_note()
    ))
}

fn offline_partial(cache: &RepoCache, revision: &str, commit: &str) -> Error {
    let label = format!("`{}`@{revision}", cache.repo);
    if cache.is_marked_missing(commit, CONFIG_FILE) {
        return Error::not_found(format!(
            "{label} (commit {commit}) has no {CONFIG_FILE} on the Hub"
        ));
    }
    if cache.is_marked_missing(commit, WEIGHTS_FILE) {
        if cache.has_file(commit, PICKLE_WEIGHTS_FILE)
            || !cache.is_marked_missing(commit, PICKLE_WEIGHTS_FILE)
        {
            return pickle_only(&label);
        }
        return Error::not_found(format!(
            "{label} (commit {commit}) has no {WEIGHTS_FILE} on the Hub"
        ));
    }
    let missing: Vec<&str> = [CONFIG_FILE, WEIGHTS_FILE]
        .into_iter()
        .filter(|f| !cache.has_file(commit, f))
        .collect();
    Error::not_found(format!(
        "{label} is commit {commit} in the Hugging Face cache at {}, but {} lacks {} and {}: \
         run once online, or copy the missing files there",
        cache.cache_dir.display(),
        display_dir(&cache.snapshot_dir(commit)),
        missing.join(" and "),
        offline_note()
    ))
}

fn display_dir(p: &Path) -> String {
    format!("{}/", p.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn cache_dir_fallback_chain() {
        let d = |pairs: &[(&str, &str)]| default_cache_dir(&env_of(pairs));
        assert_eq!(d(&[("HOME", "/h")]), Path::new("/h/.cache/huggingface/hub"));
        assert_eq!(
            d(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
            Path::new("/x/huggingface/hub")
        );
        assert_eq!(
            d(&[
                ("HOME", "/h"),
                ("XDG_CACHE_HOME", "/x"),
                ("HF_HOME", "~/hf")
            ]),
            Path::new("/h/hf/hub")
        );
        assert_eq!(
            d(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]),
            Path::new("/old")
        );
        assert_eq!(
            d(&[
                ("HF_HOME", "/hf"),
                ("HUGGINGFACE_HUB_CACHE", "/old"),
                ("HF_HUB_CACHE", "/c")
            ]),
            Path::new("/c")
        );
        assert_eq!(
            d(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "")]),
            Path::new("/hf/hub")
        );
    }

    #[test]
    fn offline_and_endpoint_from_env() {
        for v in ["1", "on", "YES", "True"] {
            assert!(env_offline(&env_of(&[("HF_HUB_OFFLINE", v)])), "{v}");
        }
        for v in ["0", "", "no", "off"] {
            assert!(!env_offline(&env_of(&[("HF_HUB_OFFLINE", v)])), "{v}");
        }
        assert!(env_offline(&env_of(&[("TRANSFORMERS_OFFLINE", "1")])));
        assert_eq!(env_endpoint(&env_of(&[])), DEFAULT_ENDPOINT);
        assert_eq!(
            env_endpoint(&env_of(&[("HF_ENDPOINT", "http://m.local:8080/")])),
            "http://m.local:8080"
        );
    }

    #[test]
    fn options_override_env() {
        let env = env_of(&[
            ("HF_HUB_CACHE", "/env"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_ENDPOINT", "http://env"),
        ]);
        let s = Settings::resolve(&HubOptions::default(), &env);
        assert_eq!(
            (s.cache_dir.as_path(), s.offline, s.endpoint.as_str()),
            (Path::new("/env"), true, "http://env")
        );
        let opts = HubOptions {
            cache_dir: Some("/opt".into()),
            offline: Some(false),
            endpoint: Some("http://opt/".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&opts, &env);
        assert_eq!(
            (s.cache_dir.as_path(), s.offline, s.endpoint.as_str()),
            (Path::new("/opt"), false, "http://opt")
        );
    }

    #[test]
    fn token_from_env_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        assert_eq!(env_token(&env_of(&[("HF_HOME", home)])), None);
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        assert_eq!(
            env_token(&env_of(&[("HF_HOME", home)])).as_deref(),
            Some("hf_file")
        );
        assert_eq!(
            env_token(&env_of(&[("HF_HOME", home), ("HF_TOKEN", " hf_env ")])).as_deref(),
            Some("hf_env")
        );
        let other = dir.path().join("elsewhere");
        std::fs::write(&other, "hf_path").unwrap();
        let env = env_of(&[
            ("HF_HOME", home),
            ("HF_TOKEN_PATH", other.to_str().unwrap()),
        ]);
        assert_eq!(env_token(&env).as_deref(), Some("hf_path"));
    }

    #[test]
    fn bad_repo_and_revision_are_invalid_arguments() {
        let opts = HubOptions {
            offline: Some(true),
            cache_dir: Some("/nonexistent".into()),
            ..Default::default()
        };
        let env = env_of(&[]);
        for (repo, rev) in [
            ("a/../b", None),
            ("a/b@main", None),
            ("a/b", Some("../x")),
            ("", None),
        ] {
            let e = resolve_with_env(repo, rev, &opts, &env).unwrap_err();
            assert_eq!(
                e.status(),
                crate::TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
                "{repo} {rev:?}: {e}"
            );
        }
    }

    #[test]
    fn names_map_to_timm_repos() {
        assert_eq!(
            repo_for_name("resnet50", Some("a1_in1k")),
            "timm/resnet50.a1_in1k"
        );
        assert_eq!(repo_for_name("resnet50", None), "timm/resnet50");
    }
}
