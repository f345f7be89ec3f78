//! The optimised-model cache: ONNX Runtime's optimised graph of a native model, saved once with
//! its initializers in an external data file, so a later load maps that file instead of
//! rebuilding, re-optimising and prepacking again: the entry holds ORT's prepacked weights
//! beside the graph's, and ORT maps both. Every tensor and blob of the data file is 64-byte
//! aligned before the entry is published ([`DATA_ALIGN`]).
//!
//! An entry is a folder `<root>/<key>/` holding `model.onnx`, `weights.bin` and `manifest.json`
//! (written last, so an entry without it is incomplete). The key hashes everything the saved
//! graph depends on: the model (its graph and every weight byte, i.e. the folder's content),
//! this library's binary, the ONNX Runtime library, the providers, the optimisation level and
//! the CPU's features (ORT's NCHWc layout and prepacked blobs are specific to the CPU).
//!
//! Concurrency: an entry is written into a private temporary folder and published with one
//! `rename`; a process that loses the race discards its own copy. Readers never see partial
//! entries. A corrupt entry (sizes or graph hash disagree with the manifest, or ORT refuses it)
//! is moved aside atomically and rebuilt. The cache is bounded: after a write, least recently
//! used entries are removed until the total fits.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bumped when the entry layout or what the key covers changes.
const FORMAT: &str = "timm-graph-cache-2";
pub const MODEL_FILE: &str = "model.onnx";
pub const DATA_FILE: &str = "weights.bin";
const MANIFEST: &str = "manifest.json";
/// The folder of [`Pending::stage_dir`].
const STAGE: &str = "stage";
/// Folder of remembered weights digests (see [`weights_digest`]); never an entry.
const DIGESTS: &str = "digests";
/// Remembered digests kept; the oldest go first (each is one small file).
const MAX_DIGESTS: usize = 4096;
/// Every tensor in an entry's data file starts at a multiple of this. ORT aligns only large
/// tensors when it saves; a cached load runs on the mapped file's addresses, and kernels reading
/// weights only 32-byte aligned measured 2-3% slower than on ORT's own 64-byte-aligned copies.
const DATA_ALIGN: u64 = 64;
/// Default bound on the cache's total size.
pub const DEFAULT_MAX_BYTES: u64 = 8 << 30;

/// What the options ask of the cache.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub enabled: bool,
    /// `None`: the user's cache folder (`$XDG_CACHE_HOME/timm/graphs`, `~/.cache/timm/graphs`).
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            enabled: true,
            dir: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

impl CacheOptions {
    /// The cache root, or `None` when disabled or no cache folder can be found.
    pub fn root(&self) -> Option<PathBuf> {
        if !self.enabled {
            return None;
        }
        if let Some(d) = &self.dir {
            return Some(d.clone());
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("timm").join("graphs"))
    }
}

/// One model's place in the cache.
pub struct Cache {
    root: PathBuf,
    key: String,
    max_bytes: u64,
}

/// A complete, checked entry: the model file to load.
pub struct Hit {
    pub model: PathBuf,
}

/// An entry being written: ORT saves into `dir`, then [`Pending::publish`] moves it in place.
pub struct Pending {
    dir: PathBuf,
    published: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: String,
    key: String,
    model_bytes: u64,
    model_sha256: String,
    data_bytes: u64,
}

impl Cache {
    /// `identity` feeds the model's own identity (graph and weights) into the key; `parts` are
    /// the settings the optimised graph depends on.
    pub fn new(
        opts: &CacheOptions,
        identity: impl FnOnce(&mut Sha256) -> Result<()>,
        parts: &[&str],
    ) -> Result<Option<Cache>> {
        let Some(root) = opts.root() else {
            return Ok(None);
        };
        let mut h = Sha256::new();
        h.update(FORMAT.as_bytes());
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        h.update(binary_identity().as_bytes());
        h.update(cpu_identity().as_bytes());
        identity(&mut h)?;
        Ok(Some(Cache {
            root,
            key: hex(&h.finalize()),
            max_bytes: opts.max_bytes,
        }))
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn entry(&self) -> PathBuf {
        self.root.join(&self.key)
    }

    /// The entry when it is complete and consistent. A corrupt one is moved aside (so the
    /// caller rebuilds it); a missing one is simply a miss.
    pub fn lookup(&self) -> Option<Hit> {
        let dir = self.entry();
        if !dir.exists() {
            return None;
        }
        match check_entry(&dir, &self.key) {
            Ok(model) => {
                // Recently used: eviction removes the oldest first.
                if let Ok(f) = fs::File::options().write(true).open(dir.join(MANIFEST)) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(Hit { model })
            }
            Err(why) => {
                super::log::warn(&format!(
                    "optimised-model cache entry {} is unusable ({why}); rebuilding it",
                    dir.display()
                ));
                self.discard();
                None
            }
        }
    }

    /// Moves the entry aside and removes it (an ORT refusal of a checked entry lands here too).
    /// Atomic against other processes: only one `rename` wins, the others find nothing.
    pub fn discard(&self) {
        let trash = self.root.join(format!(".trash-{}", unique()));
        if fs::rename(self.entry(), &trash).is_ok() {
            let _ = fs::remove_dir_all(&trash);
        }
    }

    /// A private folder for ORT to save the optimised model into.
    pub fn begin(&self) -> Result<Pending> {
        let dir = self.root.join(format!(".tmp-{}", unique()));
        fs::create_dir_all(&dir).map_err(|e| Error::from_io(&e, "cannot create", &dir))?;
        Ok(Pending {
            dir,
            published: false,
        })
    }

    /// Aligns what ORT saved into `pending`. The caller may then open the model
    /// ([`Sealed::model_path`]) while another thread makes it durable ([`Sealed::sync`]), and
    /// [`Cache::publish`] publishes it.
    pub fn seal(&self, pending: Pending) -> Result<Sealed> {
        let model = pending.dir.join(MODEL_FILE);
        let mut bytes = fs::read(&model).map_err(|e| Error::from_io(&e, "cannot read", &model))?;
        if let Some(aligned) = align_data(&pending.dir, &bytes)? {
            fs::write(&model, &aligned).map_err(|e| Error::from_io(&e, "cannot write", &model))?;
            bytes = aligned;
        }
        let data = pending.dir.join(DATA_FILE);
        // ORT writes no data file when no initializer reaches the size threshold.
        let data_bytes = match fs::metadata(&data) {
            Ok(m) => m.len(),
            Err(_) => {
                fs::File::create(&data).map_err(|e| Error::from_io(&e, "cannot create", &data))?;
                0
            }
        };
        let manifest = Manifest {
            format: FORMAT.into(),
            key: self.key.clone(),
            model_bytes: bytes.len() as u64,
            model_sha256: hex(&Sha256::digest(&bytes)),
            data_bytes,
        };
        Ok(Sealed { pending, manifest })
    }

    /// Makes a sealed entry durable (its files, then the manifest that marks it complete) and
    /// publishes it with one rename, then trims the cache to its bound.
    pub fn publish(&self, sealed: Sealed) -> Result<()> {
        sealed.sync();
        let Sealed {
            mut pending,
            manifest,
        } = sealed;
        let text = serde_json::to_vec(&manifest).map_err(|e| Error::internal(e.to_string()))?;
        let mpath = pending.dir.join(MANIFEST);
        let mut f =
            fs::File::create(&mpath).map_err(|e| Error::from_io(&e, "cannot create", &mpath))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::from_io(&e, "cannot write", &mpath))?;
        match fs::rename(&pending.dir, self.entry()) {
            Ok(()) => pending.published = true,
            // Another process published the same entry first: keep theirs, ours is dropped.
            Err(_) if self.entry().join(MANIFEST).exists() => {}
            Err(e) => return Err(Error::from_io(&e, "cannot publish", &self.entry())),
        }
        evict(&self.root, self.max_bytes, &self.key);
        Ok(())
    }
}

/// An entry ORT saved and [`Cache::seal`] aligned, not yet published.
pub struct Sealed {
    pending: Pending,
    manifest: Manifest,
}

impl Sealed {
    /// The sealed model, where a session can be opened before the entry is published (its files
    /// stay valid for a session that maps them, published or dropped).
    pub fn model_path(&self) -> PathBuf {
        self.pending.model_path()
    }

    /// Waits until the entry's files are on disk (a second call returns at once): published
    /// only after this, an entry survives a crash whole or not at all.
    pub fn sync(&self) {
        for name in [MODEL_FILE, DATA_FILE] {
            if let Ok(f) = fs::File::open(self.pending.dir.join(name)) {
                let _ = f.sync_all();
            }
        }
    }
}

impl Pending {
    /// Where ORT saves the optimised graph; its external data goes next to it as [`DATA_FILE`].
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    /// A folder inside the entry being written, for files that go into making it and are not
    /// part of it; [`Pending::remove_stage`] removes it before the entry is published.
    pub fn stage_dir(&self) -> Result<PathBuf> {
        let dir = self.dir.join(STAGE);
        fs::create_dir(&dir).map_err(|e| Error::from_io(&e, "cannot create", &dir))?;
        Ok(dir)
    }

    pub fn remove_stage(&self) -> Result<()> {
        let dir = self.dir.join(STAGE);
        fs::remove_dir_all(&dir).map_err(|e| Error::from_io(&e, "cannot remove", &dir))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Aligns every extent of the data file ORT saved in `dir` (tensors and prepacked blobs) to
/// [`DATA_ALIGN`] and returns the model bytes that point at the new places. ORT aligns large
/// tensors itself, so only the few small ones it left off a boundary are copied, to the file's
/// end (their old bytes stay behind unused); the rest of the file is not rewritten. `None` when
/// nothing moved, or there is no data file or the model never names it.
fn align_data(dir: &Path, model: &[u8]) -> Result<Option<Vec<u8>>> {
    let names_data = model
        .windows(DATA_FILE.len())
        .any(|w| w == DATA_FILE.as_bytes());
    let path = dir.join(DATA_FILE);
    let Some(mut src) = fs::File::open(&path).ok().filter(|_| names_data) else {
        return Ok(None);
    };
    let src_len = src
        .metadata()
        .map_err(|e| Error::from_io(&e, "cannot read", &path))?
        .len();
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::from_io(&e, "cannot write", &path))?;
    let (mut end, mut moved) = (src_len, 0usize);
    let write_err = |e: io::Error| Error::from_io(&e, "cannot write", &path);
    let relocated = crate::onnx::relocate_external_data(model, &mut |location, offset, len| {
        if location != DATA_FILE || offset % DATA_ALIGN == 0 {
            return Ok(offset);
        }
        if offset.checked_add(len).is_none_or(|e| e > src_len) {
            return Err(Error::invalid_model(format!(
                "the saved optimised model names bytes {offset}+{len} of a {src_len}-byte data file"
            )));
        }
        let at = end.next_multiple_of(DATA_ALIGN);
        src.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::from_io(&e, "cannot read", &path))?;
        dst.seek(SeekFrom::Start(at)).map_err(write_err)?;
        let copied = io::copy(&mut (&mut src).take(len), &mut dst).map_err(write_err)?;
        if copied != len {
            return Err(Error::invalid_model(format!(
                "{} ended inside a tensor",
                path.display()
            )));
        }
        end = at + len;
        moved += 1;
        Ok(at)
    })?;
    Ok((moved > 0).then_some(relocated))
}

fn check_entry(dir: &Path, key: &str) -> std::result::Result<PathBuf, String> {
    let text = fs::read(dir.join(MANIFEST)).map_err(|e| format!("no manifest: {e}"))?;
    let m: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("manifest unreadable: {e}"))?;
    if m.format != FORMAT || m.key != key {
        return Err("manifest of another format or key".into());
    }
    let model = dir.join(MODEL_FILE);
    let mut bytes = Vec::new();
    fs::File::open(&model)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| format!("model file: {e}"))?;
    if bytes.len() as u64 != m.model_bytes || hex(&Sha256::digest(&bytes)) != m.model_sha256 {
        return Err("model file differs from its manifest".into());
    }
    let data = fs::metadata(dir.join(DATA_FILE)).map_err(|e| format!("data file: {e}"))?;
    if data.len() != m.data_bytes {
        return Err(format!(
            "data file has {} bytes, the manifest says {}",
            data.len(),
            m.data_bytes
        ));
    }
    Ok(model)
}

/// The BLAKE3 hash of a weights file, its content hash in the key. Hashing every byte costs more
/// than the rest of a cached load, so the digest is remembered under the cache root by the
/// file's path and identity ([`Weights::file_identity`]: device, inode, size, mtime, ctime):
/// a later load of the unchanged file reads one small file instead. A changed file has another
/// identity and is hashed again. In-memory weights are hashed every time.
pub fn weights_digest(root: Option<&Path>, w: &crate::weights::Weights) -> Result<String> {
    let memo = match (root, w.file_identity()) {
        (Some(root), Some(id)) => {
            let path = fs::canonicalize(w.path()).unwrap_or_else(|_| w.path().to_path_buf());
            let mut h = Sha256::new();
            // The format names the hash, so a digest remembered by another format is not reused.
            h.update(FORMAT.as_bytes());
            h.update(path.as_os_str().as_encoded_bytes());
            h.update(b"\0");
            h.update(id.as_bytes());
            Some(root.join(DIGESTS).join(&hex(&h.finalize())[..40]))
        }
        _ => None,
    };
    if let Some(m) = &memo {
        let mut text = String::new();
        let read = fs::File::open(m).and_then(|f| f.take(128).read_to_string(&mut text));
        let text = text.trim();
        if read.is_ok() && text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            // Recently used: trimming removes the oldest first.
            if let Ok(f) = fs::File::options().write(true).open(m) {
                let _ = f.set_modified(SystemTime::now());
            }
            return Ok(text.to_string());
        }
    }
    let mut h = blake3::Hasher::new();
    w.for_each_file_chunk(|c| {
        h.update(c);
    })?;
    let digest = h.finalize().to_hex().to_string();
    if let Some(m) = &memo {
        // Best effort, atomic: a reader sees the whole digest or no file.
        let dir = m.parent().expect("memo path has a parent");
        let tmp = dir.join(format!(".tmp-{}", unique()));
        let written = fs::create_dir_all(dir)
            .and_then(|_| fs::write(&tmp, &digest))
            .and_then(|_| fs::rename(&tmp, m));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
    Ok(digest)
}

/// Keeps the newest [`MAX_DIGESTS`] remembered digests (and drops stale temporary files).
fn trim_digests(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let mut memos: Vec<(SystemTime, PathBuf)> = rd
        .flatten()
        .map(|e| {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (t, e.path())
        })
        .collect();
    if memos.len() <= MAX_DIGESTS {
        return;
    }
    memos.sort();
    let excess = memos.len() - MAX_DIGESTS;
    for (_, p) in memos.into_iter().take(excess) {
        let _ = fs::remove_file(p);
    }
}

/// Removes least recently used entries (and stale temporary folders) until the cache holds at
/// most `max_bytes`; `keep` (just written) is never removed.
pub fn evict(root: &Path, max_bytes: u64, keep: &str) {
    let Ok(rd) = fs::read_dir(root) else {
        return;
    };
    let now = SystemTime::now();
    let mut entries = Vec::new();
    let mut total = 0u64;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name == DIGESTS {
            trim_digests(&path);
            continue;
        }
        if name.starts_with('.') {
            // A writer that died leaves its temporary folder; an hour is far longer than a save.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|d| d.as_secs() > 3600);
            if old {
                let _ = fs::remove_dir_all(&path);
            }
            continue;
        }
        let size: u64 = fs::read_dir(&path)
            .map(|r| {
                r.flatten()
                    .filter_map(|f| f.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        let used = fs::metadata(path.join(MANIFEST))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        total += size;
        entries.push((used, name, path, size));
    }
    entries.sort();
    for (_, name, path, size) in entries {
        if total <= max_bytes {
            break;
        }
        if name == keep {
            continue;
        }
        let trash = root.join(format!(".trash-{}", unique()));
        if fs::rename(&path, &trash).is_ok() {
            let _ = fs::remove_dir_all(&trash);
        }
        total = total.saturating_sub(size);
    }
}

/// Identifies this library's binary (path, size, modification time): a rebuilt library may
/// build other graphs from the same weights, so its entries are not reused.
fn binary_identity() -> String {
    // SAFETY: Dl_info is plain C data (pointers and integers); all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address; `info` is a plain out-parameter.
    let found = unsafe { libc::dladdr(binary_identity as *const libc::c_void, &mut info) };
    let path = if found != 0 && !info.dli_fname.is_null() {
        // SAFETY: dladdr returns a NUL-terminated path that lives as long as the object.
        let c = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        PathBuf::from(c.to_string_lossy().into_owned())
    } else {
        std::env::current_exe().unwrap_or_default()
    };
    file_identity(&path) + env!("CARGO_PKG_VERSION")
}

/// Path, size and modification time of a file (the ONNX Runtime library, this library).
pub fn file_identity(path: &Path) -> String {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let (len, mtime) = fs::metadata(&path)
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (m.len(), t)
        })
        .unwrap_or((0, 0));
    format!("{}|{len}|{mtime}|", path.display())
}

/// The CPU's model and feature flags: ORT picks NCHWc block sizes and packed layouts by them.
fn cpu_identity() -> String {
    let mut s = std::env::consts::ARCH.to_string();
    // What the CPU reports to this process (cpuid), which is what ONNX Runtime picks its
    // kernels and NCHWc block size by; /proc/cpuinfo alone can disagree (emulators such as
    // valgrind mask features), and a graph optimised for AVX-512 fails on an AVX2 path.
    #[cfg(target_arch = "x86_64")]
    {
        let f = [
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            (
                "avx512bf16",
                std::arch::is_x86_feature_detected!("avx512bf16"),
            ),
        ];
        for (name, on) in f {
            if on {
                s.push('+');
                s.push_str(name);
            }
        }
    }
    if let Ok(text) = fs::read_to_string("/proc/cpuinfo") {
        for key in ["flags", "Features", "model name"] {
            if let Some(line) = text.lines().find(|l| l.starts_with(key)) {
                s.push('|');
                s.push_str(line);
            }
        }
    }
    s
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{t}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(root: &Path, id: &[u8]) -> Cache {
        let opts = CacheOptions {
            enabled: true,
            dir: Some(root.to_path_buf()),
            max_bytes: DEFAULT_MAX_BYTES,
        };
        Cache::new(
            &opts,
            |h| {
                h.update(id);
                Ok(())
            },
            &["cpu"],
        )
        .unwrap()
        .unwrap()
    }

    fn safetensors(value: f32) -> Vec<u8> {
        let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&value.to_le_bytes());
        b
    }

    #[test]
    fn weights_digest_is_remembered_until_the_file_changes() {
        use crate::weights::{Weights, WeightsMode};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let file = dir.path().join("model.safetensors");
        fs::write(&file, safetensors(1.0)).unwrap();
        let open = || Weights::open(&file, WeightsMode::Copy).unwrap();
        let real = weights_digest(Some(&root), &open()).unwrap();
        assert_eq!(
            real,
            blake3::hash(&fs::read(&file).unwrap()).to_hex().as_str()
        );
        assert_eq!(weights_digest(None, &open()).unwrap(), real);
        // While the file is unchanged the remembered digest is used, not the bytes.
        let memos: Vec<_> = fs::read_dir(root.join(DIGESTS))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(memos.len(), 1);
        let planted = "ab".repeat(32);
        fs::write(memos[0].path(), &planted).unwrap();
        assert_eq!(weights_digest(Some(&root), &open()).unwrap(), planted);
        // A rewrite changes the identity: hashed again.
        fs::write(&file, safetensors(2.0)).unwrap();
        let new = weights_digest(Some(&root), &open()).unwrap();
        assert_eq!(
            new,
            blake3::hash(&fs::read(&file).unwrap()).to_hex().as_str()
        );
        assert_ne!(new, real);
        // A garbled memo is ignored.
        for m in fs::read_dir(root.join(DIGESTS)).unwrap().flatten() {
            fs::write(m.path(), "garbage").unwrap();
        }
        assert_eq!(weights_digest(Some(&root), &open()).unwrap(), new);
    }

    #[test]
    fn eviction_keeps_the_digests_folder_and_bounds_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(DIGESTS);
        fs::create_dir_all(&d).unwrap();
        for i in 0..MAX_DIGESTS + 3 {
            fs::write(d.join(format!("{i:040}")), "x").unwrap();
        }
        evict(dir.path(), 0, "none");
        assert_eq!(fs::read_dir(&d).unwrap().count(), MAX_DIGESTS);
    }

    fn write_entry(c: &Cache, data: &[u8]) {
        let p = c.begin().unwrap();
        fs::write(p.model_path(), b"graph").unwrap();
        fs::write(p.dir.join(DATA_FILE), data).unwrap();
        c.publish(c.seal(p).unwrap()).unwrap();
    }

    #[test]
    fn disabled_cache_has_no_root() {
        let o = CacheOptions {
            enabled: false,
            ..Default::default()
        };
        assert!(o.root().is_none());
    }

    #[test]
    fn published_entry_is_found_and_other_identities_miss() {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path(), b"a");
        assert!(c.lookup().is_none());
        write_entry(&c, b"0123456789");
        assert!(c.lookup().is_some());
        assert!(cache(d.path(), b"b").lookup().is_none());
        // No temporary folder is left behind.
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn truncated_data_file_is_discarded() {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path(), b"a");
        write_entry(&c, b"0123456789");
        let data = d.path().join(c.key()).join(DATA_FILE);
        fs::OpenOptions::new()
            .write(true)
            .open(&data)
            .unwrap()
            .set_len(4)
            .unwrap();
        assert!(c.lookup().is_none());
        assert!(!d.path().join(c.key()).exists());
    }

    #[test]
    fn altered_model_file_is_discarded() {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path(), b"a");
        write_entry(&c, b"0123456789");
        fs::write(d.path().join(c.key()).join(MODEL_FILE), b"grapH").unwrap();
        assert!(c.lookup().is_none());
    }

    #[test]
    fn losing_a_publish_race_keeps_the_first_entry() {
        let d = tempfile::tempdir().unwrap();
        let c = cache(d.path(), b"a");
        let first = c.begin().unwrap();
        let second = c.begin().unwrap();
        for p in [&first, &second] {
            fs::write(p.model_path(), b"graph").unwrap();
            fs::write(p.dir.join(DATA_FILE), b"xy").unwrap();
        }
        c.publish(c.seal(first).unwrap()).unwrap();
        c.publish(c.seal(second).unwrap()).unwrap();
        assert!(c.lookup().is_some());
        let names: Vec<_> = fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "the loser's temporary folder is removed");
    }

    #[test]
    fn eviction_removes_oldest_entries_beyond_the_bound() {
        let d = tempfile::tempdir().unwrap();
        let old = cache(d.path(), b"old");
        write_entry(&old, &[0u8; 1000]);
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(d.path().join(old.key()).join(MANIFEST))
            .unwrap()
            .set_modified(t)
            .unwrap();
        let mut new = cache(d.path(), b"new");
        new.max_bytes = 1500;
        write_entry(&new, &[0u8; 1000]);
        assert!(new.lookup().is_some());
        assert!(old.lookup().is_none(), "the least recently used entry goes");
    }
}
