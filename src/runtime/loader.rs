//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! Order: option `ort_library`, env `TIMM_ORT_LIBRARY`, the directory holding libtimm itself,
//! then the system loader. The first library that loads and is new enough wins for the whole
//! process (ONNX Runtime keeps global state); a later request for a different file is an error.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use once_cell::sync::OnceCell;
use ort::environment::Environment;

use crate::error::{Error, Result};

/// The ONNX Runtime version this build was made and tested against (the pinned wheel).
pub const ORT_VERSION: &str = "1.31.1";
pub const ENV_VAR: &str = "TIMM_ORT_LIBRARY";

struct Loaded {
    env: Environment,
    path: PathBuf,
}

static LOADED: OnceCell<Loaded> = OnceCell::new();
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment(requested: Option<&Path>) -> Result<&'static Environment> {
    if let Some(l) = LOADED.get() {
        return check_same(l, requested).map(|_| &l.env);
    }
    let _guard = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = LOADED.get() {
        return check_same(l, requested).map(|_| &l.env);
    }
    disable_telemetry();
    let mut tried = Vec::new();
    for (origin, path) in candidates(requested) {
        match ort::init_from(&path) {
            Ok(builder) => {
                let env = builder
                    .with_name("timm")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| {
                        Error::runtime(format!(
                            "ONNX Runtime loaded from {} but its environment failed: {e}",
                            path.display()
                        ))
                    })?;
                let loaded = LOADED.get_or_init(|| Loaded { env, path });
                return Ok(&loaded.env);
            }
            Err(e) => tried.push(format!("  {origin}: {}", load_error_text(&e))),
        }
    }
    Err(Error::runtime(format!(
        "could not load the ONNX Runtime shared library (version {ORT_VERSION} or newer compatible 1.x is needed). Tried:\n{}\n\
         Install it with scripts/fetch-ort (or the `onnxruntime=={ORT_VERSION}` wheel's onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}), \
         then set option `ort_library` or {ENV_VAR} to that file, or put it next to libtimm.so",
        tried.join("\n")
    )))
}

/// The variable ONNX Runtime 1.31 reads before it sets up its telemetry store.
pub const TELEMETRY_VAR: &str = "ORT_DISABLE_TELEMETRY";

/// ONNX Runtime 1.31's Linux telemetry writes a store under the user's home
/// (`~/.cache/Microsoft/DeveloperTools/.onnxruntime/`: device id, program path, OS, CPU) on
/// every environment, even when the environment is asked to disable telemetry events (which
/// `with_telemetry(false)` still does). Only `ORT_DISABLE_TELEMETRY=1`, present before the
/// library is loaded, stops it, so it is set here, once, before the first load. A library
/// should not write outside what it was asked to, so this is not optional.
fn disable_telemetry() {
    if std::env::var_os(TELEMETRY_VAR).is_some_and(|v| v == "1") {
        return;
    }
    // Changing the environment races with getenv on other threads; this runs once per process,
    // under LOAD_LOCK, before any ONNX Runtime thread exists.
    std::env::set_var(TELEMETRY_VAR, "1");
}

/// ONNX Runtime's API table, or an error if the library was not loaded yet (`ort::api()` would
/// panic instead).
pub fn api() -> Result<&'static ort_sys::OrtApi> {
    if LOADED.get().is_none() {
        return Err(Error::internal("ONNX Runtime used before it was loaded"));
    }
    Ok(ort::api())
}

/// The path of the loaded ONNX Runtime library, if loaded.
pub fn loaded_path() -> Option<&'static Path> {
    LOADED.get().map(|l| l.path.as_path())
}

fn check_same(l: &Loaded, requested: Option<&Path>) -> Result<()> {
    if let Some(req) = requested {
        let same = match (std::fs::canonicalize(req), std::fs::canonicalize(&l.path)) {
            (Ok(a), Ok(b)) => a == b,
            _ => req == l.path,
        };
        if !same {
            return Err(Error::invalid_argument(format!(
                "option ort_library = {} but this process already loaded ONNX Runtime from {}; one runtime serves the whole process",
                req.display(),
                l.path.display()
            )));
        }
    }
    Ok(())
}

/// ort's load error with the loader's own reason: ort prints only "dlopen failed" and keeps
/// dlerror()'s text ("cannot open shared object file", "invalid ELF header", a missing
/// dependency) as the error's source.
fn load_error_text(e: &ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::Dlopen { error, path } => {
            let reason = std::error::Error::source(error)
                .map(|s| s.to_string())
                .unwrap_or_else(|| error.to_string());
            format!("failed to load `{}`: {reason}", path.display())
        }
        other => other.to_string(),
    }
}

/// Where to look, in order. An explicit choice (option or env) is the only candidate: falling
/// back silently to another runtime would hide a mistake.
fn candidates(requested: Option<&Path>) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    if let Some(p) = requested {
        out.push(("option ort_library", p.to_path_buf()));
        return out;
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        out.push((ENV_VAR, PathBuf::from(p)));
        return out;
    }
    if let Some(dir) = own_dir() {
        out.push((
            "directory of libtimm",
            find_in_dir(&dir).unwrap_or_else(|| dir.join("libonnxruntime.so")),
        ));
    }
    out.push(("system loader", PathBuf::from("libonnxruntime.so")));
    out.push(("system loader", PathBuf::from("libonnxruntime.so.1")));
    out
}

/// `libonnxruntime.so`, else the newest `libonnxruntime.so.<version>` in `dir`.
fn find_in_dir(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join("libonnxruntime.so");
    if plain.exists() {
        return Some(plain);
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    versioned.sort_by_key(|p| version_key(p));
    versioned.pop()
}

fn version_key(p: &Path) -> Vec<u64> {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.trim_start_matches("libonnxruntime.so.")
        .split('.')
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// The directory of the binary that holds this code (libtimm.so, or the executable it is
/// statically linked into).
pub(crate) fn own_dir() -> Option<PathBuf> {
    // SAFETY: dladdr only reads loader tables; `info` is fully written when it returns non-zero.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(own_dir as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null()
        {
            return None;
        }
        let file = PathBuf::from(CStr::from_ptr(info.dli_fname).to_str().ok()?);
        let file = std::fs::canonicalize(&file).unwrap_or(file);
        file.parent().map(Path::to_path_buf)
    }
}
