//! The Hub client on hostile HTTP responses: `hub::resolve_snapshot` against a loopback server
//! that answers each connection with the next raw response cut from the input.
//!
//! Input: responses separated by `\0SEP\0`, written byte for byte (status line, headers, body)
//! to one connection each, in order; the server then closes it. `@PORT@` becomes the server's
//! port, and every `Location:` header is pinned to the loopback server (a relative one stays
//! relative; an absolute one keeps its path but goes to `localhost`, another origin on the same
//! server, as a CDN redirect does), so a run never leaves the machine.
//!
//! Besides "no panic, no hang", each run checks what the library promises about the cache:
//! - a success is a snapshot folder inside the cache holding config.json and model.safetensors;
//! - a failure has a status and a message;
//! - every completed blob named by a sha256 holds exactly the bytes of that hash (a download
//!   never leaves wrong bytes under a final name);
//! - nothing is written outside the cache folder.
#![no_main]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use timm::source::hub::{self, HubOptions};
use timm::TimmStatus;

const SEP: &[u8] = b"\0SEP\0";
/// Requests beyond this many connections get no answer (the connection closes at once).
const MAX_RESPONSES: usize = 16;

static RESPONSES: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());

fn port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                // Read the request head (the client sends no body).
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let next = RESPONSES.lock().unwrap().pop_front();
                if let Some(r) = next {
                    let _ = conn.write_all(&r);
                }
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
        });
        port
    })
}

/// `@PORT@` substituted, `Location:` values pinned to the loopback server.
fn prepare(raw: &[u8], port: u16) -> Vec<u8> {
    let text = replace(raw, b"@PORT@", port.to_string().as_bytes());
    let mut out = Vec::with_capacity(text.len());
    let mut in_head = true;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if in_head && (line == b"\r\n" || line == b"\n") {
            in_head = false;
        }
        if in_head && line.len() > 9 && line[..9].eq_ignore_ascii_case(b"location:") {
            let value = String::from_utf8_lossy(&line[9..]);
            let value = value.trim();
            let pinned = if value.starts_with('/') && !value.starts_with("//") {
                value.to_string()
            } else {
                // Keep the path of an absolute URL, send it to the other loopback origin.
                let rest = value.split_once("://").map_or(value, |(_, r)| r);
                let path = rest.find('/').map_or("/", |i| &rest[i..]);
                format!("http://localhost:{port}{path}")
            };
            out.extend_from_slice(format!("Location: {pinned}\r\n").as_bytes());
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(i) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..i]);
        rest = &rest[i + SEP.len()..];
    }
    parts.push(rest);
    parts.truncate(MAX_RESPONSES);
    parts
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every completed blob under a sha256 name holds those bytes.
fn check_blobs(cache: &Path) {
    let Ok(repos) = std::fs::read_dir(cache) else { return };
    for repo in repos.flatten() {
        let Ok(blobs) = std::fs::read_dir(repo.path().join("blobs")) else { continue };
        for blob in blobs.flatten() {
            let name = blob.file_name().to_string_lossy().into_owned();
            if is_hex(&name, 64) {
                let bytes = std::fs::read(blob.path()).unwrap();
                let got: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(got, name.to_ascii_lowercase(), "blob {name} holds other bytes");
            }
        }
    }
}

fn check_success(cache: &Path, snapshot: &Path) {
    let root = std::fs::canonicalize(cache).unwrap();
    let snap = std::fs::canonicalize(snapshot).expect("the snapshot folder exists");
    assert!(snap.starts_with(&root), "{} is outside the cache", snap.display());
    for f in ["config.json", "model.safetensors"] {
        let p = std::fs::canonicalize(snap.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(p.starts_with(&root), "{f} resolves outside the cache: {}", p.display());
        assert!(p.is_file(), "{f} is not a file");
    }
}

fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir().join(format!("timm-hub-fuzz-{}", std::process::id()));
    let dir = base.join(N.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fuzz_target!(|data: &[u8]| {
    let port = port();
    {
        let mut q = RESPONSES.lock().unwrap();
        q.clear();
        q.extend(split(data).into_iter().map(|r| prepare(r, port)));
    }
    let outer = scratch();
    let cache = outer.join("hub");
    let opts = HubOptions {
        cache_dir: Some(cache.clone()),
        offline: Some(false),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        token: Some("hf_fuzz".into()),
        progress: None,
    };
    match hub::resolve_snapshot("timm/fuzz", None, &opts) {
        Ok(snapshot) => check_success(&cache, &snapshot),
        Err(e) => {
            assert_ne!(e.status(), TimmStatus::TIMM_ERR_INTERNAL, "{e}");
            assert!(!e.message().is_empty());
        }
    }
    check_blobs(&cache);
    // Nothing beside the cache folder.
    for entry in std::fs::read_dir(&outer).unwrap().flatten() {
        assert_eq!(entry.file_name(), "hub", "written outside the cache: {:?}", entry.path());
    }
    let _ = std::fs::remove_dir_all(&outer);
});
