//! A fake Hugging Face Hub on 127.0.0.1 for the hub tests: just enough HTTP/1.1 to serve
//! `/{repo}/resolve/{revision}/{file}` the way huggingface.co does (headers, LFS redirect to a
//! CDN-like path on `localhost`, 401/404 error codes) and to misbehave on request (drop the
//! connection mid-file, serve corrupt bytes, serve slowly).
//!
//! Raw `TcpListener` rather than an HTTP server crate, because the tests need to cut a response
//! short after N body bytes, which a well-behaved server would not do.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The server stops by itself after this long even if a test forgets it.
const LIFETIME: Duration = Duration::from_secs(180);

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic bytes of a given length, different per seed.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed as usize * 7) % 251) as u8)
        .collect()
}

#[derive(Clone, Debug)]
pub struct Repo {
    pub commit: String,
    /// branch or tag → commit
    pub refs: HashMap<String, String>,
    /// file → (content, stored in LFS)
    pub files: HashMap<String, (Vec<u8>, bool)>,
    /// Some(token): answers 401 unless `Authorization: Bearer <token>` is sent.
    pub token: Option<String>,
}

impl Repo {
    pub fn new(commit: &str) -> Repo {
        Repo {
            commit: commit.into(),
            refs: HashMap::from([("main".into(), commit.into())]),
            files: HashMap::new(),
            token: None,
        }
    }
    pub fn file(mut self, name: &str, content: Vec<u8>, lfs: bool) -> Repo {
        self.files.insert(name.into(), (content, lfs));
        self
    }
    pub fn timm(commit: &str, weights: Vec<u8>) -> Repo {
        Repo::new(commit)
            .file(
                "config.json",
                br#"{"architecture": "resnet18", "num_classes": 10}"#.to_vec(),
                false,
            )
            .file("model.safetensors", weights, true)
    }
}

/// The etag the Hub gives a non-LFS file is its git blob sha1; any stable 40-hex name per
/// content serves the same purpose here.
pub fn small_etag(content: &[u8]) -> String {
    sha256_hex(&[b"blob ".as_slice(), content].concat())[..40].to_string()
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

#[derive(Default)]
pub struct Behaviour {
    /// CDN responses send only this many body bytes, then close the connection.
    pub drop_after: Option<usize>,
    /// CDN responses flip a byte (the sha256 no longer matches the etag).
    pub corrupt: bool,
    /// Pause between 64 KiB chunks of CDN bodies.
    pub chunk_delay: Option<Duration>,
    /// (file, size): HEAD claims this size for that file instead of the real one.
    pub claimed_size: Option<(String, u64)>,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    /// old repo id → new one: the resolve URL answers with a relative 307, as for a renamed repo.
    renamed: HashMap<String, String>,
    behaviour: Behaviour,
    log: Vec<Logged>,
}

pub struct FakeHub {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeHub {
    pub fn start() -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            while !sp.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || {
                            let _ = handle(conn, port, &st);
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        });
        FakeHub {
            port,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// The Hub endpoint (`HF_ENDPOINT`); CDN redirects go to `localhost` on the same port, a
    /// different origin.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
    pub fn add_repo(&self, id: &str, repo: Repo) {
        self.state.lock().unwrap().repos.insert(id.into(), repo);
    }
    pub fn rename(&self, old: &str, new: &str) {
        self.state
            .lock()
            .unwrap()
            .renamed
            .insert(old.into(), new.into());
    }
    pub fn set_behaviour(&self, b: Behaviour) {
        self.state.lock().unwrap().behaviour = b;
    }
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
    pub fn requests(&self, method: &str, path_contains: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method == method && l.path.contains(path_contains))
            .collect()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Content-Length to announce when it differs from the body (HEAD, dropped connections).
    length: Option<usize>,
    delay: Option<Duration>,
}

impl Reply {
    fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: vec![],
            length: None,
            delay: None,
        }
    }
    fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

fn handle(conn: TcpStream, port: u16, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let reply = {
        let mut st = state.lock().unwrap();
        st.log.push(Logged {
            method: method.clone(),
            path: target.clone(),
            headers: headers.clone(),
        });
        route(&target, &headers, port, &st)
    };
    write_reply(conn, &method, reply)
}

fn write_reply(mut conn: TcpStream, method: &str, r: Reply) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", r.status);
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\n\r\n",
        r.length.unwrap_or(r.body.len())
    ));
    conn.write_all(head.as_bytes())?;
    if method != "HEAD" {
        for chunk in r.body.chunks(64 * 1024) {
            conn.write_all(chunk)?;
            if let Some(d) = r.delay {
                std::thread::sleep(d);
            }
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Let the client read everything before the socket goes away.
    let mut sink = [0u8; 256];
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = conn.read(&mut sink);
    Ok(())
}

fn route(target: &str, headers: &HashMap<String, String>, port: u16, st: &State) -> Reply {
    if let Some(sha) = target.strip_prefix("/cdn/") {
        return cdn(sha, headers, st);
    }
    // /{org}/{name}/resolve/{rev}/{file...}
    let segs: Vec<&str> = target.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() != 5 || segs[2] != "resolve" {
        return Reply::new(404);
    }
    let repo_id = format!("{}/{}", segs[0], segs[1]);
    let (rev, file) = (percent_decode(segs[3]), percent_decode(segs[4]));
    if let Some(new) = st.renamed.get(&repo_id) {
        return Reply::new(307).header(
            "Location",
            format!("/{new}/resolve/{}/{}", segs[3], segs[4]),
        );
    }
    let not_found = Reply::new(401).header("X-Error-Code", "RepoNotFound");
    let Some(repo) = st.repos.get(&repo_id) else {
        return not_found;
    };
    if let Some(token) = &repo.token {
        if headers.get("authorization") != Some(&format!("Bearer {token}")) {
            return not_found;
        }
    }
    let commit = if rev == repo.commit {
        repo.commit.clone()
    } else if let Some(c) = repo.refs.get(&rev) {
        c.clone()
    } else {
        return Reply::new(404).header("X-Error-Code", "RevisionNotFound");
    };
    let Some((content, lfs)) = repo.files.get(&file) else {
        return Reply::new(404)
            .header("X-Error-Code", "EntryNotFound")
            .header("X-Repo-Commit", commit);
    };
    let claimed = st
        .behaviour
        .claimed_size
        .as_ref()
        .filter(|(f, _)| *f == file)
        .map(|(_, n)| *n);
    if *lfs {
        let sha = sha256_hex(content);
        let mut r = Reply::new(302)
            .header("X-Repo-Commit", commit)
            .header("X-Linked-Etag", format!("\"{sha}\""))
            .header(
                "X-Linked-Size",
                claimed.unwrap_or(content.len() as u64).to_string(),
            )
            // The Hub's plain ETag on an LFS file is the pointer's git sha1: not the blob name.
            .header("ETag", format!("\"{}\"", small_etag(b"pointer")))
            .header("Location", format!("http://localhost:{port}/cdn/{sha}"));
        r.body = b"Found. Redirecting".to_vec();
        r
    } else {
        let mut r = Reply::new(200)
            .header("X-Repo-Commit", commit)
            .header("ETag", format!("\"{}\"", small_etag(content)));
        if let Some(n) = claimed {
            r.length = Some(n as usize);
        }
        r.body = content.clone();
        r
    }
}

fn cdn(sha: &str, headers: &HashMap<String, String>, st: &State) -> Reply {
    let Some(content) = st
        .repos
        .values()
        .flat_map(|r| r.files.values())
        .find(|(c, lfs)| *lfs && sha256_hex(c) == sha)
        .map(|(c, _)| c.clone())
    else {
        return Reply::new(404);
    };
    let mut body = content.clone();
    if st.behaviour.corrupt {
        body[0] ^= 0xff;
    }
    let start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let mut r = match start {
        Some(s) if s >= body.len() => return Reply::new(416),
        Some(s) => {
            let r = Reply::new(206).header(
                "Content-Range",
                format!("bytes {s}-{}/{}", body.len() - 1, body.len()),
            );
            body = body[s..].to_vec();
            r
        }
        None => Reply::new(200),
    };
    r = r.header("Content-Type", "application/octet-stream");
    r.delay = st.behaviour.chunk_delay;
    if let Some(n) = st.behaviour.drop_after {
        r.length = Some(body.len());
        body.truncate(n.min(body.len()));
    }
    r.body = body;
    r
}
