//! `model.safetensors`, memory-mapped and validated before anything else touches it.
//!
//! The file comes from the internet, so every rule of the format is checked before a tensor is
//! handed out: the header length is capped before any allocation, the JSON header must be an
//! object with unique names, offsets must be in bounds, ordered, contiguous and sized exactly
//! `prod(shape) × dtype size` (checked arithmetic), and `8 + header + data == file length`.
//! The last three come from the `safetensors` crate; the cap, the `{` and the duplicate checks are
//! ours because the crate accepts a duplicated name (last one wins), which lets a file smuggle a
//! second definition past a reviewer.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapOptions};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::error::{Error, Result};

/// The header cap of the Rust safetensors crate; huggingface_hub uses 25 MB.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// transformers' `TimmWrapper` saves timm's state dict under this prefix.
const TRANSFORMERS_PREFIX: &str = "timm_model.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
    Other,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::Other => 0,
        }
    }
    fn from_st(d: safetensors::Dtype) -> Self {
        use safetensors::Dtype as D;
        match d {
            D::F32 => DType::F32,
            D::F16 => DType::F16,
            D::BF16 => DType::BF16,
            D::F64 => DType::F64,
            D::I64 => DType::I64,
            D::I32 => DType::I32,
            D::I16 => DType::I16,
            D::I8 => DType::I8,
            D::U8 => DType::U8,
            D::BOOL => DType::Bool,
            _ => DType::Other,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

/// Where one tensor lives in the mapped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// How tensor data is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsMode {
    /// Tensors are read (`pread`) into memory ONNX Runtime owns and the file is closed once the
    /// session exists: a file changed or truncated later cannot affect the model.
    Copy,
    /// The file is memory-mapped and its bytes handed to ONNX Runtime without a copy; the file
    /// must not be truncated or rewritten while the model lives (that would be SIGBUS or
    /// silently different weights).
    Map,
}

enum Backing {
    /// The mapping, and the mapped file kept open (none for in-memory weights): reading the
    /// whole file through a buffer (hashing it) is faster than faulting in every page.
    Map(Mmap, Option<File>),
    File(File),
}

/// A validated safetensors file.
pub struct Weights {
    path: PathBuf,
    backing: Backing,
    tensors: HashMap<String, TensorInfo>,
    metadata: HashMap<String, String>,
    /// The mapping (if any) is of the file, not anonymous memory.
    file_backed: bool,
    /// What identifies this version of the file (see [`Weights::file_identity`]).
    identity: Option<String>,
    len: u64,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl Weights {
    /// Opens and validates a safetensors file. Only the header is read here (with plain reads,
    /// so nothing is allocated or mapped before it is checked); tensor data is reached through
    /// the mapping ([`WeightsMode::Map`]) or read on demand ([`WeightsMode::Copy`]).
    pub fn open(path: &Path, mode: WeightsMode) -> Result<Self> {
        let (file, len) =
            crate::files::open_regular(path, "cannot open weights", Error::invalid_model)?;
        let bad = |why: String| {
            Error::invalid_model(format!(
                "{} is not a valid safetensors file: {why}",
                path.display()
            ))
        };
        let n = check_prefix(path, &file, len)?;
        let identity = file.metadata().ok().map(|m| stat_identity(&m));
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| Error::from_io(&e, "cannot read weights header", path))?;
        let (tensors, metadata) = parse_header(&header, len).map_err(bad)?;
        let backing = match mode {
            WeightsMode::Copy => Backing::File(file),
            WeightsMode::Map => {
                // SAFETY: read-only mapping; Map mode documents that the file must not change.
                let map = unsafe { MmapOptions::new().map(&file) }
                    .map_err(|e| Error::from_io(&e, "cannot map weights", path))?;
                if map.len() as u64 != len {
                    return Err(bad("the file changed while it was opened".into()));
                }
                Backing::Map(map, Some(file))
            }
        };
        Ok(Weights {
            path: path.to_path_buf(),
            backing,
            tensors,
            metadata,
            file_backed: true,
            identity,
            len,
        })
    }

    /// Validates an in-memory safetensors file with the same checks as [`Weights::open`] and
    /// copies it into an anonymous read-only mapping; `name` stands in for the path in
    /// messages. For fuzzing and tests that build hostile files without touching the disk.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let path = PathBuf::from(name);
        // Validate first: parse refuses short buffers, and an empty anonymous map is an error.
        let (tensors, metadata) = parse(bytes).map_err(|why| not_safetensors(&path, why))?;
        let mut anon = MmapOptions::new()
            .len(bytes.len())
            .map_anon()
            .map_err(|e| Error::from_io(&e, "cannot map weights", &path))?;
        anon.copy_from_slice(bytes);
        let map = anon
            .make_read_only()
            .map_err(|e| Error::from_io(&e, "cannot map weights", &path))?;
        Ok(Weights {
            path,
            backing: Backing::Map(map, None),
            tensors,
            metadata,
            file_backed: false,
            identity: None,
            len: bytes.len() as u64,
        })
    }

    pub fn mode(&self) -> WeightsMode {
        match self.backing {
            Backing::Map(..) => WeightsMode::Map,
            Backing::File(_) => WeightsMode::Copy,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks a tensor up by timm's state-dict name.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The raw little-endian bytes of a tensor in the mapping (Map mode only).
    pub fn mapped(&self, info: &TensorInfo) -> Option<&[u8]> {
        match &self.backing {
            Backing::Map(m, _) => m.get(info.start..info.end),
            Backing::File(_) => None,
        }
    }

    /// Copies a tensor's raw little-endian bytes into `dst` (`info.end - info.start` bytes).
    /// A file truncated since it was opened is an error here, never a crash.
    pub fn read(&self, info: &TensorInfo, dst: &mut [u8]) -> Result<()> {
        if dst.len() != info.end - info.start {
            return Err(Error::internal("weights read with a wrong buffer size"));
        }
        match &self.backing {
            Backing::Map(m, _) => {
                dst.copy_from_slice(&m[info.start..info.end]);
                Ok(())
            }
            Backing::File(f) => f.read_exact_at(dst, info.start as u64).map_err(|e| {
                Error::io(format!(
                    "cannot read weights from {} (was the file changed?): {e}",
                    self.path.display()
                ))
            }),
        }
    }

    /// Feeds a tensor's raw bytes to `f` in pieces of at most 4 MiB: from the mapping, or read
    /// through one small buffer, so hashing a large tensor never needs a copy of it.
    pub fn for_each_chunk(&self, info: &TensorInfo, mut f: impl FnMut(&[u8])) -> Result<()> {
        const CHUNK: usize = 4 << 20;
        if let Some(b) = self.mapped(info) {
            b.chunks(CHUNK).for_each(f);
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK.min(info.end - info.start)];
        let mut at = info.start;
        while at < info.end {
            let n = CHUNK.min(info.end - at);
            let part = TensorInfo {
                start: at,
                end: at + n,
                ..info.clone()
            };
            self.read(&part, &mut buf[..n])?;
            f(&buf[..n]);
            at += n;
        }
        Ok(())
    }

    /// Device, inode, size, modification and status-change times of the opened file (taken
    /// from the open handle, so it names the bytes this object reads). Any write changes the
    /// status-change time, which no user tool sets, so an unchanged identity means unchanged
    /// content (git's index relies on the same). `None` for in-memory weights.
    pub fn file_identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Feeds the whole file (header and data) to `f` in pieces of at most 4 MiB, read through
    /// one small buffer (in-memory weights: from their mapping).
    pub fn for_each_file_chunk(&self, mut f: impl FnMut(&[u8])) -> Result<()> {
        const CHUNK: usize = 4 << 20;
        let file = match &self.backing {
            Backing::File(file) | Backing::Map(_, Some(file)) => file,
            Backing::Map(m, None) => {
                m.chunks(CHUNK).for_each(f);
                return Ok(());
            }
        };
        let mut buf = vec![0u8; CHUNK.min(self.len as usize)];
        let mut at = 0u64;
        while at < self.len {
            let n = (CHUNK as u64).min(self.len - at) as usize;
            file.read_exact_at(&mut buf[..n], at)
                .map_err(|e| Error::from_io(&e, "cannot read weights", &self.path))?;
            f(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }

    /// A tensor's raw bytes, borrowed from the mapping or read into a new buffer.
    pub fn bytes(&self, info: &TensorInfo) -> Result<std::borrow::Cow<'_, [u8]>> {
        if let Some(b) = self.mapped(info) {
            return Ok(std::borrow::Cow::Borrowed(b));
        }
        let mut v = vec![0u8; info.end - info.start];
        self.read(info, &mut v)?;
        Ok(std::borrow::Cow::Owned(v))
    }

    /// Drops the mapping's pages from this process's resident set (map mode; nothing in copy
    /// mode). The data stays valid: a later access faults it in again from the page cache.
    /// Called once ONNX Runtime holds its own copies or views it rarely reads.
    pub fn release_pages(&self) {
        // `from_bytes` maps anonymous memory: DONTNEED would zero it.
        if !self.file_backed {
            return;
        }
        if let Backing::Map(m, _) = &self.backing {
            // SAFETY: a read-only private file mapping: DONTNEED drops only page-table entries,
            // and a later read sees the same file bytes (the file must not change in map mode).
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// [`Weights::release_pages`] for one tensor's pages.
    pub fn release_tensor(&self, info: &TensorInfo) {
        if !self.file_backed {
            return;
        }
        if let Backing::Map(m, _) = &self.backing {
            let page = 4096;
            let start = info.start / page * page;
            let end = info.end.div_ceil(page) * page;
            let len = end.min(m.len()).saturating_sub(start);
            // SAFETY: as in `release_pages`, on a sub-range of the same file mapping.
            let _ =
                unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        }
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.end - t.start).sum()
    }

    /// A tensor's values as f32: borrowed from the mapping when the file stores them as
    /// aligned f32, else read or converted into one buffer. The caller releases the tensor's
    /// pages ([`Weights::release_tensor`]) once it is done with them.
    pub fn f32_values(&self, name: &str) -> Result<std::borrow::Cow<'_, [f32]>> {
        let info = self
            .get(name)
            .ok_or_else(|| Error::invalid_model(format!("weights have no tensor `{name}`")))?;
        if info.dtype == DType::F32 {
            match self.mapped(info) {
                Some(b) => {
                    if let Ok(view) = bytemuck::try_cast_slice::<u8, f32>(b) {
                        return Ok(std::borrow::Cow::Borrowed(view));
                    }
                }
                None => {
                    // Read straight into the f32 buffer (little-endian: see `graph`'s assertion).
                    let mut v = vec![0f32; (info.end - info.start) / 4];
                    self.read(info, bytemuck::cast_slice_mut(&mut v))?;
                    return Ok(std::borrow::Cow::Owned(v));
                }
            }
        }
        let v = to_f32(&self.bytes(info)?, info.dtype).ok_or_else(|| {
            Error::invalid_model(format!(
                "tensor `{name}` has dtype {:?}; expected a float tensor",
                info.dtype
            ))
        })?;
        Ok(std::borrow::Cow::Owned(v))
    }

    /// A tensor converted to f32 (a copy), for the few places that compute with weights.
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let v = self.f32_values(name)?.into_owned();
        // The copy is what gets used (e.g. folded into a conv): the mapped pages need not stay.
        if let Some(info) = self.get(name) {
            self.release_tensor(info);
        }
        Ok(v)
    }
}

/// Converts little-endian float bytes to f32; `None` for non-float dtypes.
pub fn to_f32(bytes: &[u8], dtype: DType) -> Option<Vec<f32>> {
    Some(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => return None,
    })
}

/// Reads the 8-byte header length and the first header byte with plain reads, so an absurd
/// length is refused before anything is allocated for it; returns the header length.
fn stat_identity(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

fn check_prefix(path: &Path, file: &File, len: u64) -> Result<u64> {
    let bad = |why: String| {
        Error::invalid_model(format!(
            "{} is not a valid safetensors file: {why}",
            path.display()
        ))
    };
    if len < 9 {
        return Err(bad(format!("it is {len} bytes long")));
    }
    let mut head = [0u8; 9];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Error::from_io(&e, "cannot read weights", path))?;
    let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    if n > len - 8 {
        return Err(bad(format!(
            "header length {n} runs past the end of the {len}-byte file"
        )));
    }
    if head[8] != b'{' {
        return Err(bad("the header does not start with `{`".into()));
    }
    Ok(n)
}

fn not_safetensors(path: &Path, why: String) -> Error {
    Error::invalid_model(format!(
        "{} is not a valid safetensors file: {why}",
        path.display()
    ))
}

type Parsed = (HashMap<String, TensorInfo>, HashMap<String, String>);

/// Validates a whole safetensors buffer and returns its tensors by name.
pub fn parse(buf: &[u8]) -> std::result::Result<Parsed, String> {
    if buf.len() < 9 {
        return Err(format!("it is {} bytes long", buf.len()));
    }
    let n = u64::from_le_bytes(buf[..8].try_into().map_err(|_| "short header")?);
    if n > MAX_HEADER_BYTES {
        return Err(format!(
            "header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"
        ));
    }
    let n = n as usize;
    let header = buf
        .get(8..8 + n)
        .ok_or_else(|| format!("header length {n} runs past the end of the file"))?;
    parse_header(header, buf.len() as u64)
}

/// Validates a header (the JSON after the 8-byte length) against the length of its file.
pub fn parse_header(header: &[u8], file_len: u64) -> std::result::Result<Parsed, String> {
    if header.first() != Some(&b'{') {
        return Err("the header does not start with `{`".into());
    }
    reject_duplicate_names(header)?;
    // The crate's Metadata checks dtype names, offsets (ordered, contiguous, begin <= end) and
    // sizes (prod(shape) x dtype size, with checked arithmetic).
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))?;
    let n = header.len();
    let data_end = meta
        .tensors()
        .values()
        .map(|t| t.data_offsets.1)
        .max()
        .unwrap_or(0);
    let expected = (8u64)
        .checked_add(n as u64)
        .and_then(|v| v.checked_add(data_end as u64));
    if expected != Some(file_len) {
        return Err(format!(
            "MetadataIncompleteBuffer: the header describes {data_end} bytes of data but the file holds {}",
            file_len.saturating_sub(8 + n as u64)
        ));
    }
    let data_start = 8 + n;
    let mut names: Vec<(String, &safetensors::tensor::TensorInfo)> =
        meta.tensors().into_iter().collect();
    // transformers' wrapper prefixes every name; strip it when all names carry it.
    let strip = !names.is_empty()
        && names
            .iter()
            .all(|(k, _)| k.starts_with(TRANSFORMERS_PREFIX));
    let mut tensors = HashMap::with_capacity(names.len());
    for (name, info) in names.drain(..) {
        let dtype = DType::from_st(info.dtype);
        let (s, e) = info.data_offsets;
        let name = if strip {
            name[TRANSFORMERS_PREFIX.len()..].to_string()
        } else {
            name
        };
        if dtype == DType::Other {
            return Err(format!(
                "tensor `{name}` has dtype {:?}, which this library does not read",
                info.dtype
            ));
        }
        tensors.insert(
            name,
            TensorInfo {
                dtype,
                shape: info.shape.clone(),
                start: data_start + s,
                end: data_start + e,
            },
        );
    }
    let metadata = meta.metadata().clone().unwrap_or_default();
    Ok((tensors, metadata))
}

fn reject_duplicate_names(header: &[u8]) -> std::result::Result<(), String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!(
                        "tensor name `{key}` appears twice in the header"
                    )));
                }
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(header);
    de.deserialize_map(Keys)
        .map_err(|e| format!("bad header: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a safetensors buffer from raw parts so tests can write malformed files.
    pub fn build(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn valid_file_parses_and_names_map_to_ranges() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[1],"data_offsets":[8,10]},"__metadata__":{"format":"pt"}}"#;
        let buf = build(h, &[0; 10]);
        let (t, m) = parse(&buf).unwrap();
        assert_eq!(t["a"].start, 8 + h.len());
        assert_eq!(t["b"].dtype, DType::F16);
        assert_eq!(m["format"], "pt");
    }

    #[test]
    fn from_bytes_validates_like_open() {
        let h = r#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#;
        let w = Weights::from_bytes("mem.safetensors", &build(h, &[0, 0x3c, 0, 0xc0])).unwrap();
        assert_eq!(w.to_f32("a").unwrap(), vec![1.0, -2.0]);
        for bad in [&[][..], &build(h, &[0; 2])] {
            let e = Weights::from_bytes("mem.safetensors", bad).unwrap_err();
            assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_INVALID_MODEL);
            assert!(
                e.message()
                    .starts_with("mem.safetensors is not a valid safetensors file: "),
                "{e}"
            );
        }
    }

    #[test]
    fn transformers_prefix_is_stripped() {
        let h = r#"{"timm_model.fc.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let (t, _) = parse(&build(h, &[0; 4])).unwrap();
        assert!(t.contains_key("fc.weight"));
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let ok_entry = r#""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 2, 3], "bytes long"),
            (
                {
                    let mut v = u64::MAX.to_le_bytes().to_vec();
                    v.extend_from_slice(b"{}");
                    v
                },
                "exceeds",
            ),
            (
                {
                    let mut v = 1000u64.to_le_bytes().to_vec();
                    v.extend_from_slice(b"{}");
                    v
                },
                "past the end",
            ),
            (build(r#"[{"a":1}]"#, &[]), "start with"),
            (
                build(&format!("{{{ok_entry},{ok_entry}}}"), &[0; 4]),
                "appears twice",
            ),
            (
                build(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#,
                    &[0; 8],
                ),
                "invalid",
            ),
            (
                build(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                    &[0; 12],
                ),
                "invalid",
            ),
            (
                build(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                    &[0; 8],
                ),
                "describes",
            ),
            (
                build(
                    r#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#,
                    &[0; 4],
                ),
                "overflow",
            ),
            (
                build(
                    r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551615,3]}}"#,
                    &[0; 4],
                ),
                "invalid",
            ),
        ];
        for (buf, needle) in cases {
            let e = parse(&buf).unwrap_err();
            assert!(
                e.to_lowercase().contains(needle),
                "expected `{needle}` in `{e}`"
            );
        }
    }
}
