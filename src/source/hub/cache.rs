//! The Hugging Face cache layout, shared with huggingface_hub:
//!
//! ```text
//! <cache>/models--<org>--<name>/refs/<revision>            commit hash (text, no newline)
//!                              /blobs/<etag>                content (sha256 for LFS, git sha1 otherwise)
//!                              /snapshots/<commit>/<path>   relative symlink to ../../blobs/<etag>
//!                              /.no_exist/<commit>/<path>   empty marker: the file 404'd at that commit
//! <cache>/.locks/models--<org>--<name>/<etag>.lock
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A ref holds a 40-character commit hash; room for a newline and stray spaces, no more.
pub const MAX_REF_BYTES: u64 = 256;

/// A full git commit id, the only revision that names a snapshot folder directly.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// LFS blobs are named by their sha256 (64 hex digits), which we can check after download.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A revision becomes a path under `refs/` and a URL segment: reject anything that could climb
/// out of the folder or is not a git ref name.
pub fn validate_revision(rev: &str) -> Result<()> {
    let ok = !rev.is_empty()
        && rev.len() <= 256
        && !rev.starts_with('/')
        && !rev.ends_with('/')
        && rev
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && !rev
            .chars()
            .any(|c| c.is_control() || matches!(c, '\\' | ' ' | '?' | '#' | '%' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "`{rev}` is not a valid revision: expected a branch, a tag (e.g. `main`, `v1.0`, `refs/pr/1`) or a 40-character commit hash"
        )))
    }
}

/// Etags come from the server and become file names: accept only what the Hub sends (hex).
pub fn validate_etag(etag: &str) -> Result<()> {
    if !etag.is_empty()
        && etag.len() <= 128
        && etag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(Error::io(format!(
            "the server sent an unusable ETag `{etag}`; is the endpoint a Hugging Face Hub?"
        )))
    }
}

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub cache_dir: PathBuf,
    pub repo: String,
    pub folder_name: String,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        // huggingface_hub's repo_folder_name: type prefix plus the id with `/` turned into `--`.
        let folder_name = format!("models--{}", repo.replace('/', "--"));
        RepoCache {
            cache_dir: cache_dir.to_path_buf(),
            repo: repo.to_string(),
            folder_name,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.cache_dir.join(&self.folder_name)
    }
    pub fn ref_path(&self, revision: &str) -> PathBuf {
        self.root().join("refs").join(revision)
    }
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.root().join("blobs").join(etag)
    }
    pub fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.root().join("blobs").join(format!("{etag}.incomplete"))
    }
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root().join("snapshots").join(commit)
    }
    pub fn no_exist_path(&self, commit: &str, file: &str) -> PathBuf {
        self.root().join(".no_exist").join(commit).join(file)
    }
    pub fn lock_path(&self, etag: &str) -> PathBuf {
        self.cache_dir
            .join(".locks")
            .join(&self.folder_name)
            .join(format!("{etag}.lock"))
    }

    /// The commit a revision points to, from the cache alone.
    pub fn commit_for(&self, revision: &str) -> Result<Option<String>> {
        if is_commit_hash(revision) {
            return Ok(Some(revision.to_ascii_lowercase()));
        }
        let path = self.ref_path(revision);
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Ok(m) if m.is_dir() => return Ok(None),
            _ => {}
        }
        let text = self.read_ref(&path)?;
        // huggingface_hub writes no newline, but a hand-written ref often has one.
        let commit = text.trim();
        if is_commit_hash(commit) {
            Ok(Some(commit.to_ascii_lowercase()))
        } else {
            Err(Error::invalid_model(format!(
                "{} should hold a 40-character commit hash but holds `{}`",
                path.display(),
                commit.chars().take(80).collect::<String>()
            )))
        }
    }

    /// A ref's text: a regular file inside this repo's cache folder (a link elsewhere is refused
    /// without reading it, so no outside file is ever quoted), of at most [`MAX_REF_BYTES`].
    fn read_ref(&self, path: &Path) -> Result<String> {
        let real = fs::canonicalize(path).map_err(|e| Error::from_io(&e, "cannot read", path))?;
        let root = fs::canonicalize(self.root()).unwrap_or_else(|_| self.root());
        if !real.starts_with(&root) {
            return Err(Error::invalid_model(format!(
                "{} resolves to {}, outside the cache folder {}; a ref must be a file of the cache",
                path.display(),
                real.display(),
                self.root().display()
            )));
        }
        let bytes =
            crate::files::read_capped(path, "cache ref", MAX_REF_BYTES, Error::invalid_model)?;
        String::from_utf8(bytes).map_err(|_| {
            Error::invalid_model(format!(
                "{} should hold a 40-character commit hash but is not text",
                path.display()
            ))
        })
    }

    /// True when the snapshot has `file` and its link (if any) reaches a blob.
    pub fn has_file(&self, commit: &str, file: &str) -> bool {
        // `metadata` follows the link, so a dangling one counts as missing.
        fs::metadata(self.snapshot_dir(commit).join(file)).is_ok_and(|m| m.is_file())
    }

    pub fn is_marked_missing(&self, commit: &str, file: &str) -> bool {
        self.no_exist_path(commit, file).is_file()
    }

    /// Records that `file` 404'd at `commit`, as huggingface_hub does; best effort, since the
    /// marker only saves a request next time.
    pub fn mark_missing(&self, commit: &str, file: &str) {
        let path = self.no_exist_path(commit, file);
        if let Some(dir) = path.parent() {
            if fs::create_dir_all(dir).is_ok() {
                let _ = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path);
            }
        }
    }

    /// Points `refs/<revision>` at `commit` (skipped for commit hashes). Written to a temporary
    /// name and renamed, so a concurrent reader never sees a half-written hash.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if is_commit_hash(revision) {
            return Ok(());
        }
        let path = self.ref_path(revision);
        if self.read_ref(&path).is_ok_and(|t| t == commit) {
            return Ok(());
        }
        let dir = path.parent().expect("ref path has a parent");
        fs::create_dir_all(dir).map_err(|e| Error::from_io(&e, "cannot create", dir))?;
        let tmp = unique_sibling(&path, "tmp");
        let result = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(commit.as_bytes()))
            .and_then(|_| fs::rename(&tmp, &path));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Error::from_io(&e, "cannot write", &path));
        }
        Ok(())
    }

    /// Makes `snapshots/<commit>/<file>` a relative link to `blobs/<etag>`, replacing a stale or
    /// dangling one atomically (link under a temporary name, then rename over).
    pub fn link_snapshot_file(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf> {
        let dst = self.snapshot_dir(commit).join(file);
        let dir = dst.parent().expect("snapshot file has a parent");
        fs::create_dir_all(dir).map_err(|e| Error::from_io(&e, "cannot create", dir))?;
        // From snapshots/<commit>/<a/b/file> back up to the repo folder: one `..` per folder.
        let depth = 2 + file.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let tmp = unique_sibling(&dst, "tmp");
        let result =
            make_link(&target, &self.blob_path(etag), &tmp).and_then(|_| fs::rename(&tmp, &dst));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(Error::from_io(&e, "cannot create the snapshot link", &dst));
        }
        Ok(dst)
    }
}

#[cfg(unix)]
fn make_link(relative_target: &Path, _blob: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(relative_target, link)
}

/// Without unprivileged symlinks huggingface_hub copies the blob into the snapshot; so do we.
#[cfg(not(unix))]
fn make_link(_relative_target: &Path, blob: &Path, link: &Path) -> std::io::Result<()> {
    fs::copy(blob, link).map(|_| ())
}

/// `<name>.<pid>-<nanos>.<suffix>` next to `path`: unique enough for one process's rename dance.
fn unique_sibling(path: &Path, suffix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tid = format!("{:?}", std::thread::current().id())
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        "{name}.{}-{tid}-{nanos}.{suffix}",
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn revisions() {
        assert!(is_commit_hash(C));
        assert!(!is_commit_hash(&C[..39]));
        assert!(!is_commit_hash("main"));
        for ok in ["main", "v1.0", "refs/pr/1", C] {
            validate_revision(ok).unwrap();
        }
        for bad in [
            "", "../x", "a/../b", "/main", "main/", "a\\b", "a b", "a//b",
        ] {
            assert!(validate_revision(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_matches_huggingface_hub() {
        let c = RepoCache::new(Path::new("/c"), "timm/resnet50.a1_in1k");
        assert_eq!(c.root(), Path::new("/c/models--timm--resnet50.a1_in1k"));
        assert_eq!(
            c.ref_path("refs/pr/1"),
            Path::new("/c/models--timm--resnet50.a1_in1k/refs/refs/pr/1")
        );
        assert_eq!(
            c.lock_path("e"),
            Path::new("/c/.locks/models--timm--resnet50.a1_in1k/e.lock")
        );
        assert_eq!(
            c.incomplete_path("e"),
            Path::new("/c/models--timm--resnet50.a1_in1k/blobs/e.incomplete")
        );
        assert_eq!(
            RepoCache::new(Path::new("/c"), "gpt2").root(),
            Path::new("/c/models--gpt2")
        );
    }

    #[test]
    fn refs_round_trip_and_tolerate_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let c = RepoCache::new(dir.path(), "a/b");
        assert_eq!(c.commit_for("main").unwrap(), None);
        c.write_ref("refs/pr/1", C).unwrap();
        assert_eq!(fs::read_to_string(c.ref_path("refs/pr/1")).unwrap(), C);
        assert_eq!(c.commit_for("refs/pr/1").unwrap().as_deref(), Some(C));
        fs::write(c.ref_path("main"), format!("{C}\n")).unwrap();
        assert_eq!(c.commit_for("main").unwrap().as_deref(), Some(C));
        fs::write(c.ref_path("main"), "garbage").unwrap();
        assert!(c
            .commit_for("main")
            .unwrap_err()
            .message()
            .contains("garbage"));
        // A commit hash never touches refs/.
        c.write_ref(C, C).unwrap();
        assert!(!c.ref_path(C).exists());
    }

    #[cfg(unix)]
    #[test]
    fn snapshot_links_are_relative_and_replace_dangling_ones() {
        let dir = tempfile::tempdir().unwrap();
        let c = RepoCache::new(dir.path(), "a/b");
        let dst = c.snapshot_dir(C).join("config.json");
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("../../blobs/gone", &dst).unwrap();
        assert!(!c.has_file(C, "config.json"));
        fs::create_dir_all(c.root().join("blobs")).unwrap();
        fs::write(c.blob_path("e1"), "{}").unwrap();
        c.link_snapshot_file(C, "config.json", "e1").unwrap();
        assert_eq!(fs::read_link(&dst).unwrap(), Path::new("../../blobs/e1"));
        assert!(c.has_file(C, "config.json"));
        fs::write(c.blob_path("e2"), "x").unwrap();
        c.link_snapshot_file(C, "sub/w.bin", "e2").unwrap();
        assert_eq!(
            fs::read_link(c.snapshot_dir(C).join("sub/w.bin")).unwrap(),
            Path::new("../../../blobs/e2")
        );
        assert_eq!(
            fs::read_dir(c.snapshot_dir(C)).unwrap().count(),
            2,
            "no temporary names left behind"
        );
    }
}
