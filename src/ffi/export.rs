//! C entry points of the export: the model's graph as an ONNX file, and a Triton model
//! repository entry.

use std::ffi::{CStr, OsStr};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::boundary::{guard_status, str_arg};
use super::model::{model_arg, TimmModel};
use crate::error::{Error, Result, TimmStatus};
use crate::export;

/// A file-system path argument (any bytes but NUL, as the OS takes them).
///
/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn path_arg<'a>(p: *const c_char, what: &str) -> Result<&'a Path> {
    if p.is_null() {
        return Err(Error::invalid_argument(format!(
            "`{what}` must not be NULL"
        )));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    if bytes.is_empty() {
        return Err(Error::invalid_argument(format!("`{what}` is empty")));
    }
    Ok(Path::new(OsStr::from_bytes(bytes)))
}

/// Writes the graph `model` runs (its native graph, or the folder's `model.onnx` with the
/// weights bound to it embedded) to `path` as a standard ONNX file (opset 17, no ONNX Runtime
/// contrib operators) that ONNX Runtime, TensorRT and OpenVINO read.
///
/// The file has the model's output kind, a dynamic batch dimension (and dynamic height and
/// width for convolutional families), and `metadata_props` with timm's architecture
/// (`timm.architecture`), data config (`timm.data_config`, JSON), label names
/// (`timm.label_names`, JSON) and resolved config (`timm.config`). Weights are inside the file,
/// or in `<path>.data` beside it above 2 GB or with option `export_external_data=true`.
/// An existing file is overwritten. Thread-safe; the model may run meanwhile.
#[no_mangle]
pub extern "C" fn timm_model_export_onnx(
    model: *const TimmModel,
    path: *const c_char,
) -> TimmStatus {
    guard_status("timm_model_export_onnx", || {
        // SAFETY: checked by model_arg and path_arg.
        let (m, path) = unsafe { (model_arg(model)?, path_arg(path, "path")?) };
        export::export_onnx(&m.model, path).map(|_| ())
    })
}

/// Writes a Triton Inference Server model repository entry for `model`:
/// `<repository>/<name>/config.pbtxt` (onnxruntime backend, the input and outputs with their
/// dims, `max_batch_size` = `max_batch`, dynamic batching) and `<repository>/<name>/1/model.onnx`
/// (as `timm_model_export_onnx`). `max_batch` = 0 turns Triton's batching off (dims then include
/// the batch). `name` must be a folder name (letters, digits, `-`, `_`, `.`). Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_export_triton(
    model: *const TimmModel,
    repository: *const c_char,
    name: *const c_char,
    max_batch: u32,
) -> TimmStatus {
    guard_status("timm_model_export_triton", || {
        // SAFETY: checked by model_arg, path_arg and str_arg.
        let (m, repo, name) = unsafe {
            (
                model_arg(model)?,
                path_arg(repository, "repository")?,
                str_arg(name, "name")?,
            )
        };
        export::triton::export(&m.model, repo, name, max_batch).map(|_| ())
    })
}
