//! Finding and loading OpenVINO's C API library, once per process, only when a model asks for
//! backend=openvino (the ONNX Runtime backend never touches it).
//!
//! Order: option `openvino_library`, env `TIMM_OPENVINO_LIBRARY`, the directory holding
//! libtimm itself, then the system loader. OpenVINO finds its plugins and frontends beside the
//! C API library, so the whole fetched folder travels together.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use once_cell::sync::OnceCell;

use super::sys::Api;
use crate::error::{Error, Result};

/// The OpenVINO release this build was made and tested against (scripts/fetch-openvino).
pub const OV_VERSION: &str = "2026.4.1";
/// Its soname suffix in the PyPI wheel.
const OV_SO: &str = "2641";
pub const ENV_VAR: &str = "TIMM_OPENVINO_LIBRARY";

pub struct Loaded {
    pub api: Api,
    pub path: PathBuf,
}

static LOADED: OnceCell<Loaded> = OnceCell::new();
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// The process-wide OpenVINO API, loading the library on first use.
pub fn load(requested: Option<&Path>) -> Result<&'static Loaded> {
    if let Some(l) = LOADED.get() {
        return check_same(l, requested).map(|_| l);
    }
    let _guard = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = LOADED.get() {
        return check_same(l, requested).map(|_| l);
    }
    let mut tried = Vec::new();
    for (origin, path) in candidates(requested) {
        match Api::open(&path) {
            Ok(api) => return Ok(LOADED.get_or_init(|| Loaded { api, path })),
            Err(e) => tried.push(format!("  {origin}: {e}")),
        }
    }
    Err(Error::runtime(format!(
        "option backend=openvino: could not load OpenVINO's C API library (OpenVINO {OV_VERSION}). Tried:\n{}\n\
         Install it with scripts/fetch-openvino (the `openvino=={OV_VERSION}` wheel's openvino/libs/ folder), \
         then set option `openvino_library` or {ENV_VAR} to its libopenvino_c.so.{OV_SO}, or put that folder's \
         libraries next to libtimm.so. The default backend=onnxruntime does not need it",
        tried.join("\n")
    )))
}

fn check_same(l: &Loaded, requested: Option<&Path>) -> Result<()> {
    if let Some(req) = requested {
        let same = match (std::fs::canonicalize(req), std::fs::canonicalize(&l.path)) {
            (Ok(a), Ok(b)) => a == b,
            _ => req == l.path,
        };
        if !same {
            return Err(Error::invalid_argument(format!(
                "option openvino_library = {} but this process already loaded OpenVINO from {}; one runtime serves the whole process",
                req.display(),
                l.path.display()
            )));
        }
    }
    Ok(())
}

/// Where to look, in order. An explicit choice (option or env) is the only candidate.
fn candidates(requested: Option<&Path>) -> Vec<(&'static str, PathBuf)> {
    if let Some(p) = requested {
        return vec![("option openvino_library", p.to_path_buf())];
    }
    if let Some(p) = std::env::var_os(ENV_VAR).filter(|v| !v.is_empty()) {
        return vec![(ENV_VAR, PathBuf::from(p))];
    }
    let names = [
        format!("libopenvino_c.so.{OV_SO}"),
        "libopenvino_c.so".to_string(),
    ];
    let mut out = Vec::new();
    if let Some(dir) = crate::runtime::loader::own_dir() {
        let file = names
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .unwrap_or_else(|| dir.join(&names[0]));
        out.push(("directory of libtimm", file));
    }
    for n in names {
        out.push(("system loader", PathBuf::from(n)));
    }
    out
}
