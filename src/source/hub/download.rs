//! HTTP side of the Hub: file metadata (HEAD on the resolve URL) and blob downloads into the
//! cache, resumable, size- and sha256-checked, under the blob lock huggingface_hub uses.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::Agent;

use super::cache::{is_commit_hash, is_sha256, validate_etag, RepoCache};
use super::lock::BlobLock;
use crate::error::{Error, Result};

/// Called with (bytes done, bytes total) while a blob downloads.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// No model file is anywhere near this; a bigger claim is a broken or hostile server.
pub const MAX_BLOB_SIZE: u64 = 64 << 30;
const MAX_REDIRECTS: usize = 10;
/// Retries of one download within a call, only while each try makes progress.
const MAX_RESUMES: usize = 3;
const PROGRESS_STEP: u64 = 1 << 20;
/// Python waits for the lock forever; a holder is a live process (flock dies with it), so an
/// hour only guards against a stuck one.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3600);
const USER_AGENT: &str = concat!("libtimm/", env!("CARGO_PKG_VERSION"), "; ureq");

/// What a HEAD on `/{repo}/resolve/{revision}/{file}` told us.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub commit: String,
    pub etag: String,
    pub size: u64,
    /// Where to GET the bytes: the CDN URL when the Hub redirected, else the resolve URL.
    pub location: String,
}

#[derive(Debug)]
pub enum Head {
    Found(FileMeta),
    /// 404 for the file itself; the commit (from X-Repo-Commit) lets the caller record `.no_exist`.
    Missing {
        commit: Option<String>,
    },
}

pub struct Client {
    /// Loopback hosts skip any HTTPS_PROXY/ALL_PROXY from the environment.
    direct: Agent,
    proxied: Agent,
    endpoint: String,
    token: Option<String>,
    progress: Option<ProgressFn>,
}

fn agent(proxy: bool) -> Agent {
    let mut cfg = Agent::config_builder()
        // We look at every status ourselves and follow redirects by hand, because the rules
        // differ for HEAD (same origin only) and because the token must not leave the Hub.
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(30)))
        .user_agent(USER_AGENT);
    if !proxy {
        cfg = cfg.proxy(None);
    }
    cfg.build().new_agent()
}

/// A transient failure (connection dropped mid-body) is worth resuming in the same call.
struct FetchError {
    error: Error,
    transient: bool,
}

impl From<Error> for FetchError {
    fn from(error: Error) -> Self {
        FetchError {
            error,
            transient: false,
        }
    }
}

impl Client {
    pub fn new(
        endpoint: &str,
        token: Option<String>,
        progress: Option<ProgressFn>,
    ) -> Result<Client> {
        let origin = origin(endpoint);
        if !matches!(origin.as_ref(), Some((s, h, _)) if (s == "https" || s == "http") && !h.is_empty())
        {
            return Err(Error::invalid_argument(format!(
                "Hugging Face endpoint `{endpoint}` is not an http(s) URL (HF_ENDPOINT or option `endpoint`)"
            )));
        }
        Ok(Client {
            direct: agent(false),
            proxied: agent(true),
            endpoint: endpoint.to_string(),
            token,
            progress,
        })
    }

    fn agent_for(&self, url: &str) -> &Agent {
        match origin(url) {
            Some((_, host, _)) if is_loopback(&host) => &self.direct,
            _ => &self.proxied,
        }
    }

    /// The bearer token goes only to the Hub's own origin, never to a CDN we were sent to.
    fn auth_for(&self, url: &str) -> Option<String> {
        let token = self.token.as_ref()?;
        (origin(url).is_some() && origin(url) == origin(&self.endpoint))
            .then(|| format!("Bearer {token}"))
    }

    pub fn resolve_url(&self, repo: &str, revision: &str, file: &str) -> String {
        // huggingface_hub quotes the revision with no safe characters (`refs/pr/1` → `refs%2Fpr%2F1`).
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            quote(revision, false),
            quote(file, true)
        )
    }

    /// HEAD the resolve URL, following same-origin redirects (a renamed repo) but not a
    /// redirect to another host: that response already carries the metadata and the CDN URL.
    pub fn head(&self, repo: &str, revision: &str, file: &str) -> Result<Head> {
        let what = format!("`{repo}`@{revision} file {file}");
        let mut url = self.resolve_url(repo, revision, file);
        for _ in 0..MAX_REDIRECTS {
            let mut req = self
                .agent_for(&url)
                .head(&url)
                .header("Accept-Encoding", "identity");
            if let Some(auth) = self.auth_for(&url) {
                req = req.header("Authorization", auth);
            }
            let resp = req
                .call()
                .map_err(|e| network_error(&e, &url, &self.endpoint))?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let is_redirect = (300..400).contains(&status);
            if is_redirect {
                let location = header("Location").ok_or_else(|| {
                    Error::io(format!(
                        "HTTP {status} without a Location header from {url}"
                    ))
                })?;
                let target = join_url(&url, &location);
                if origin(&target) == origin(&url) {
                    url = target;
                    continue;
                }
            } else if status == 404 {
                let commit = header("X-Repo-Commit").filter(|c| is_commit_hash(c));
                return match header("X-Error-Code").as_deref() {
                    Some("RepoNotFound") => Err(repo_not_found(repo, status)),
                    Some("RevisionNotFound") => Err(Error::not_found(format!(
                        "revision `{revision}` does not exist in the Hugging Face repository `{repo}` (HTTP 404 for {url})"
                    ))),
                    _ => Ok(Head::Missing { commit }),
                };
            } else if !(200..300).contains(&status) {
                return Err(http_error(
                    status,
                    header("X-Error-Code").as_deref(),
                    repo,
                    &url,
                ));
            }

            let commit = header("X-Repo-Commit").ok_or_else(|| {
                Error::io(format!(
                    "{url} answered without an X-Repo-Commit header, so it is not a Hugging Face Hub endpoint; \
                     check HF_ENDPOINT (or option `endpoint`), proxies and firewalls"
                ))
            })?;
            if !is_commit_hash(&commit) {
                return Err(Error::io(format!(
                    "{url} sent X-Repo-Commit `{commit}`, which is not a commit hash"
                )));
            }
            let etag = header("X-Linked-Etag")
                .or_else(|| header("ETag"))
                .map(|e| normalize_etag(&e))
                .ok_or_else(|| {
                    Error::io(format!(
                        "{url} sent no ETag for {what}; cannot name the cached file"
                    ))
                })?;
            validate_etag(&etag)?;
            // Content-Length of a redirect is the redirect body's, not the file's.
            let size_text = header("X-Linked-Size").or_else(|| {
                if is_redirect {
                    None
                } else {
                    header("Content-Length")
                }
            });
            let size = size_text
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::io(format!(
                        "{url} sent no usable size (X-Linked-Size / Content-Length) for {what}"
                    ))
                })?;
            if size > MAX_BLOB_SIZE {
                return Err(Error::io(format!(
                    "{url} claims {what} is {size} bytes, over the {} GiB limit; refusing to download",
                    MAX_BLOB_SIZE >> 30
                )));
            }
            let location = if is_redirect {
                join_url(&url, &header("Location").unwrap_or_default())
            } else {
                url
            };
            return Ok(Head::Found(FileMeta {
                commit: commit.to_ascii_lowercase(),
                etag,
                size,
                location,
            }));
        }
        Err(Error::io(format!(
            "more than {MAX_REDIRECTS} redirects while resolving {what}"
        )))
    }

    /// Makes sure `blobs/<etag>` holds the verified file. Only one process downloads a blob at
    /// a time; the bytes go to `<etag>.incomplete`, which a later call resumes.
    pub fn fetch_blob(&self, cache: &RepoCache, meta: &FileMeta, file: &str) -> Result<()> {
        let blob = cache.blob_path(&meta.etag);
        if blob.is_file() {
            return Ok(());
        }
        let _lock = BlobLock::acquire(&cache.lock_path(&meta.etag), LOCK_TIMEOUT)?;
        // Someone else may have finished it while we waited.
        if blob.is_file() {
            return Ok(());
        }
        let dir = blob.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).map_err(|e| Error::from_io(&e, "cannot create", dir))?;
        let incomplete = cache.incomplete_path(&meta.etag);
        let mut resumes = 0;
        loop {
            let before = file_len(&incomplete);
            match self.fetch_into(&incomplete, meta) {
                Ok(()) => break,
                Err(f)
                    if f.transient && resumes < MAX_RESUMES && file_len(&incomplete) > before =>
                {
                    resumes += 1
                }
                Err(f) => {
                    let kept = file_len(&incomplete);
                    let hint = if f.transient && kept > 0 {
                        format!(
                            " ({kept} of {} bytes kept in {}; the next attempt resumes)",
                            meta.size,
                            incomplete.display()
                        )
                    } else {
                        String::new()
                    };
                    return Err(f
                        .error
                        .context(format!("downloading {file} of `{}`{hint}", cache.repo)));
                }
            }
        }
        verify(&incomplete, meta, file).inspect_err(|_| {
            // Wrong bytes cannot be resumed into right ones.
            let _ = fs::remove_file(&incomplete);
        })?;
        fs::rename(&incomplete, &blob)
            .map_err(|e| Error::from_io(&e, "cannot move the download into", &blob))?;
        Ok(())
    }

    fn fetch_into(
        &self,
        incomplete: &Path,
        meta: &FileMeta,
    ) -> std::result::Result<(), FetchError> {
        let (mut out, _) = crate::files::open_with(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            incomplete,
            "cannot open",
            Error::io,
        )?;
        let io_err =
            |e: std::io::Error| FetchError::from(Error::from_io(&e, "cannot write", incomplete));
        let mut have = out.metadata().map_err(io_err)?.len();
        if have > meta.size {
            out.set_len(0).map_err(io_err)?;
            have = 0;
        }
        if have == meta.size {
            return Ok(());
        }
        let mut url = meta.location.clone();
        for _ in 0..MAX_REDIRECTS {
            let mut req = self
                .agent_for(&url)
                .get(&url)
                .header("Accept-Encoding", "identity");
            if let Some(auth) = self.auth_for(&url) {
                req = req.header("Authorization", auth);
            }
            if have > 0 {
                req = req.header("Range", format!("bytes={have}-"));
            }
            let resp = req.call().map_err(|e| FetchError {
                error: network_error(&e, &url, &self.endpoint),
                transient: true,
            })?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            match status {
                300..=399 => {
                    let location = header("Location").ok_or_else(|| {
                        Error::io(format!(
                            "HTTP {status} without a Location header from {url}"
                        ))
                    })?;
                    url = join_url(&url, &location);
                    continue;
                }
                206 if have > 0 => {
                    let range = header("Content-Range").unwrap_or_default();
                    if !range.starts_with(&format!("bytes {have}-")) {
                        out.set_len(0).map_err(io_err)?;
                        return Err(Error::io(format!(
                            "{url} answered a resume from byte {have} with Content-Range `{range}`; the partial download was discarded"
                        ))
                        .into());
                    }
                }
                200 => {
                    // The server ignored our Range: start over rather than append a second copy.
                    if have > 0 {
                        out.set_len(0).map_err(io_err)?;
                        have = 0;
                    }
                }
                416 => {
                    // Our partial file does not fit the remote one; restart from zero.
                    out.set_len(0).map_err(io_err)?;
                    have = 0;
                    continue;
                }
                _ => {
                    return Err(
                        http_error(status, header("X-Error-Code").as_deref(), "", &url).into(),
                    )
                }
            }
            out.seek(SeekFrom::Start(have)).map_err(io_err)?;
            let mut body = resp.into_body().into_reader();
            let mut buf = vec![0u8; 256 * 1024];
            let mut done = have;
            let mut reported = done;
            loop {
                let n = match body.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        out.flush().ok();
                        return Err(FetchError {
                            error: Error::io(format!(
                                "connection lost after {done} of {} bytes from {url}: {e}",
                                meta.size
                            )),
                            transient: true,
                        });
                    }
                };
                if done + n as u64 > meta.size {
                    out.set_len(0).map_err(io_err)?;
                    return Err(Error::io(format!(
                        "{url} sent more than the {} bytes it announced; the partial download was discarded",
                        meta.size
                    ))
                    .into());
                }
                out.write_all(&buf[..n]).map_err(io_err)?;
                done += n as u64;
                if let Some(progress) = &self.progress {
                    if done - reported >= PROGRESS_STEP || done == meta.size {
                        progress(done, meta.size);
                        reported = done;
                    }
                }
            }
            out.sync_all().map_err(io_err)?;
            if done != meta.size {
                return Err(FetchError {
                    error: Error::io(format!("{url} ended after {done} of {} bytes", meta.size)),
                    transient: true,
                });
            }
            return Ok(());
        }
        Err(Error::io(format!(
            "more than {MAX_REDIRECTS} redirects downloading {}",
            meta.location
        ))
        .into())
    }
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Size always; content too when the etag is a sha256 (LFS files). Git-sha1 etags of small
/// files are not checked, as in huggingface_hub.
fn verify(path: &Path, meta: &FileMeta, file: &str) -> Result<()> {
    let len = file_len(path);
    if len != meta.size {
        return Err(Error::io(format!(
            "{file}: downloaded {len} bytes but the Hub announced {}",
            meta.size
        )));
    }
    if is_sha256(&meta.etag) {
        let (mut f, _) = crate::files::open_regular(path, "cannot read", Error::io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Error::from_io(&e, "cannot read", path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        let got = hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(&meta.etag) {
            return Err(Error::io(format!(
                "{file}: sha256 of the download is {got} but the Hub says {}; the download was discarded, try again",
                meta.etag
            )));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `W/"abc"` and `"abc"` → `abc`, as huggingface_hub's `_normalize_etag`.
pub fn normalize_etag(etag: &str) -> String {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"').to_string()
}

fn repo_not_found(repo: &str, status: u16) -> Error {
    Error::not_found(format!(
        "Hugging Face repository `{repo}` was not found (HTTP {status}); check the name, or if it is private or gated, \
         give a token with access (HF_TOKEN, the token file from `hf auth login`, or option `token`)"
    ))
}

fn http_error(status: u16, code: Option<&str>, repo: &str, url: &str) -> Error {
    match (status, code) {
        (401, _) | (_, Some("RepoNotFound")) => Error::not_found(format!(
            "{url} needs authentication (HTTP {status}): the repository{} is private, gated or does not exist; \
             set HF_TOKEN (or option `token`) to a token with read access",
            if repo.is_empty() { String::new() } else { format!(" `{repo}`") }
        )),
        (403, Some("GatedRepo")) => Error::io(format!(
            "{url} is a gated repository (HTTP 403): accept its conditions on the model page, then use a token of that account"
        )),
        (403, _) => Error::io(format!("{url} refused access (HTTP 403); check that the token has read access")),
        (404, _) => Error::not_found(format!("{url} was not found (HTTP 404)")),
        _ => Error::io(format!("HTTP {status} from {url}")),
    }
}

fn network_error(e: &ureq::Error, url: &str, endpoint: &str) -> Error {
    Error::io(format!(
        "cannot reach {url}: {e}; check the network, proxy settings and HF_ENDPOINT ({endpoint}), \
         or set HF_HUB_OFFLINE=1 to use only the local cache"
    ))
}

/// (scheme, lowercase host, port with the scheme's default filled in).
fn origin(url: &str) -> Option<(String, String, u16)> {
    let uri: ureq::http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Some((scheme, host, port))
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Resolves a Location header against the URL that sent it (RFC 3986 reference forms the Hub
/// uses: absolute, scheme-relative, absolute-path, or relative-path).
fn join_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{}{rest}", &base[..scheme_end]);
    }
    let path_start = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    if location.starts_with('/') {
        return format!("{}{location}", &base[..path_start]);
    }
    let path = base[path_start..].split(['?', '#']).next().unwrap_or("");
    let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(0)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{}{dir}{location}", &base[..path_start])
}

/// Percent-encodes all but unreserved characters (and `/` when `keep_slash`), like Python's
/// `urllib.parse.quote`.
fn quote(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_normalized() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("abc"), "abc");
    }

    #[test]
    fn urls() {
        let c = Client::new("https://hub.example", None, None).unwrap();
        assert_eq!(
            c.resolve_url("timm/r50", "refs/pr/1", "config.json"),
            "https://hub.example/timm/r50/resolve/refs%2Fpr%2F1/config.json"
        );
        assert_eq!(join_url("http://a:1/x/y/z?q", "/p"), "http://a:1/p");
        assert_eq!(join_url("http://a:1/x/y/z?q", "w"), "http://a:1/x/y/w");
        assert_eq!(join_url("https://a/x", "//cdn/b"), "https://cdn/b");
        assert_eq!(join_url("https://a/x", "http://cdn/b"), "http://cdn/b");
        assert_eq!(
            origin("https://Hub.example/x"),
            Some(("https".into(), "hub.example".into(), 443))
        );
        assert_ne!(
            origin("http://127.0.0.1:8/x"),
            origin("http://localhost:8/x")
        );
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("[::1]"));
        assert!(!is_loopback("huggingface.co"));
        assert!(Client::new("ftp://x", None, None).is_err());
        assert!(Client::new("huggingface.co", None, None).is_err());
    }

    #[test]
    fn token_goes_only_to_the_endpoint_origin() {
        let c = Client::new("https://hub.example", Some("t".into()), None).unwrap();
        assert_eq!(
            c.auth_for("https://hub.example/a/resolve/main/x")
                .as_deref(),
            Some("Bearer t")
        );
        assert_eq!(c.auth_for("https://cdn.example/a"), None);
        assert_eq!(c.auth_for("http://hub.example/a"), None);
        assert_eq!(c.auth_for("https://hub.example:8443/a"), None);
    }
}
