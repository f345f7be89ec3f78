//! The model object: `timm_model_create` and its wrappers, `timm_infer`, the accessors and
//! `timm_free`.

use std::os::raw::c_char;

use super::boundary::{arg, guard, guard_status, str_arg, Registry};
use super::options::{options_arg, TimmOptions};
use crate::error::{Error, Result, TimmStatus};
use crate::model::Model;

/// A loaded model. Opaque; create with `timm_model_create`, release with `timm_free`.
pub struct TimmModel {
    pub(super) model: Model,
}

static MODELS: Registry = Registry::new();

/// Longest accepted input rank; a larger `input_ndim` is a caller bug, not a tensor.
pub(super) const MAX_NDIM: usize = 8;

/// The live model behind `p`.
///
/// # Safety
/// A non-null `p` that is registered must still point to its `TimmModel` (the registry is
/// checked first, so a freed handle is refused before it is dereferenced).
pub(super) unsafe fn model_arg<'a>(p: *const TimmModel) -> Result<&'a TimmModel> {
    if !p.is_null() && !MODELS.contains(p as usize) {
        return Err(Error::invalid_argument(
            "`model` is not a live model handle (already freed, or not from timm_model_create)",
        ));
    }
    // SAFETY: NULL or registered, hence live (the caller's contract covers reuse of addresses).
    unsafe { arg(p, "model") }
}

fn create(
    spec: *const c_char,
    pretrained: bool,
    options: *const TimmOptions,
) -> Result<*mut TimmModel> {
    // SAFETY: the caller passes a NUL-terminated string or NULL.
    let spec = unsafe { str_arg(spec, "spec")? };
    // SAFETY: NULL or a pointer from timm_options_new, checked live by options_arg.
    let parsed = match unsafe { options_arg(options)? } {
        Some(o) => o.options.parse()?,
        None => Default::default(),
    };
    let model = Model::create(spec, pretrained, &parsed)?;
    let p = Box::into_raw(Box::new(TimmModel { model }));
    MODELS.insert(p as usize);
    Ok(p)
}

/// Loads a model into `*out`.
///
/// `spec` is `local:<folder>` (or timm's `local-dir:<folder>`), a folder timm wrote with
/// config.json and model.safetensors and/or model.onnx; `hf-hub:org/name[@revision]`, a
/// Hugging Face repo resolved through the local Hugging Face cache (downloaded on a miss unless
/// offline); or a bare timm name: `arch.tag` with `pretrained = true` is the repo `timm/arch.tag`,
/// `arch` with `pretrained = false` builds timm's default architecture with random weights.
/// `pretrained = false` on a folder builds its architecture with seeded random weights.
/// `options` may be NULL for defaults; they are copied, the caller still owns them.
///
/// Returns `TIMM_OK` and the model in `*out`, or the failure's status with `*out` set to NULL
/// (`timm_last_error()` says why). `out` NULL is `TIMM_ERR_INVALID_ARGUMENT`. Release the model
/// with `timm_free`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_create(
    spec: *const c_char,
    pretrained: bool,
    options: *const TimmOptions,
    out: *mut *mut TimmModel,
) -> TimmStatus {
    guard_status("timm_model_create", || {
        if out.is_null() {
            return Err(Error::invalid_argument("`out` is NULL"));
        }
        // SAFETY: `out` is non-null and points to a writable `TimmModel *` per the contract;
        // it is cleared first so a failure leaves NULL there.
        unsafe { out.write(std::ptr::null_mut()) };
        let p = create(spec, pretrained, options)?;
        // SAFETY: as above.
        unsafe { out.write(p) };
        Ok(())
    })
}

/// `timm_model_create` without options, returning the model or NULL (the status is lost; use
/// `timm_model_create` to handle failures by status).
#[no_mangle]
pub extern "C" fn timm_create_model(spec: *const c_char, pretrained: bool) -> *mut TimmModel {
    timm_create_model_with_options(spec, pretrained, std::ptr::null())
}

/// `timm_model_create` returning the model or NULL (the status is lost; use
/// `timm_model_create` to handle failures by status).
#[no_mangle]
pub extern "C" fn timm_create_model_with_options(
    spec: *const c_char,
    pretrained: bool,
    options: *const TimmOptions,
) -> *mut TimmModel {
    let mut model = std::ptr::null_mut();
    // The status is dropped by design: the message is in timm_last_error.
    let _ = timm_model_create(spec, pretrained, options, &mut model);
    model
}

/// Runs the model on a batch.
///
/// `input` holds `N*C*H*W` floats in NCHW order, already preprocessed (see `timm_preprocess`),
/// with `input_shape` = {N, C, H, W} (`input_ndim` = 4). `output` receives `N * timm_model_output_dim(model)`
/// floats (`[N, output_dim]`, row-major); `output_len` is its capacity in floats.
///
/// Errors: `TIMM_ERR_INVALID_ARGUMENT` for NULLs or a shape that does not match the model
/// (the message names expected and got), `TIMM_ERR_BUFFER_TOO_SMALL` with the needed length.
/// NaN or Inf inputs are computed, not rejected.
///
/// Thread-safe: many threads may call `timm_infer` on the same model at once; results equal
/// single-threaded ones. The model must not be freed while a call is running. Each call is one
/// ONNX Runtime `Run` on the model's single session, which ONNX Runtime guarantees may be called
/// from many threads at once, and every provider this library registers keeps that guarantee:
/// CPU calls run in parallel; CUDA calls run in parallel, each on its own stream (CUDA graphs,
/// which would not allow it, are never enabled); TensorRT's provider locks each engine while
/// it executes and synchronises its stream (ONNX Runtime 1.17 and later), so concurrent calls
/// are correct but take turns inside the TensorRT part of the graph: for more throughput there,
/// create one model per thread. On GPUs each call takes its own device buffers from a pool.
#[no_mangle]
pub extern "C" fn timm_infer(
    model: *mut TimmModel,
    input: *const f32,
    input_shape: *const i64,
    input_ndim: usize,
    output: *mut f32,
    output_len: usize,
) -> TimmStatus {
    guard_status("timm_infer", || {
        // SAFETY: pointers are checked for NULL; lengths are the caller's contract, checked for
        // overflow before any slice is formed.
        unsafe {
            let m = model_arg(model)?;
            if output.is_null() {
                return Err(Error::invalid_argument(
                    "`input`, `input_shape` and `output` must not be NULL",
                ));
            }
            let (input, shape) = input_slice(input, input_shape, input_ndim)?;
            if output_len > isize::MAX as usize / 4 {
                return Err(Error::invalid_argument(format!(
                    "output_len {output_len} is not a buffer length"
                )));
            }
            let output = std::slice::from_raw_parts_mut(output, output_len);
            m.model.infer(input, shape, output).map(|_| ())
        }
    })
}

/// The input tensor and its shape from the C arguments, checked for NULL, rank and overflow.
///
/// # Safety
/// Non-null `input_shape` holds `input_ndim` values and `input` the product of them.
pub(super) unsafe fn input_slice<'a>(
    input: *const f32,
    input_shape: *const i64,
    input_ndim: usize,
) -> Result<(&'a [f32], &'a [i64])> {
    if input.is_null() || input_shape.is_null() {
        return Err(Error::invalid_argument(
            "`input`, `input_shape` and `output` must not be NULL",
        ));
    }
    if input_ndim == 0 || input_ndim > MAX_NDIM {
        return Err(Error::invalid_argument(format!(
            "input_ndim is {input_ndim}; expected 4 (NCHW)"
        )));
    }
    // SAFETY: the caller's contract: `input_ndim` values at `input_shape`.
    let shape = unsafe { std::slice::from_raw_parts(input_shape, input_ndim) };
    if shape.iter().any(|&d| d <= 0) {
        return Err(Error::invalid_argument(format!(
            "input shape {shape:?} has a zero or negative dimension"
        )));
    }
    let total = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .filter(|t| t.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| Error::invalid_argument(format!("input shape {shape:?} overflows")))?;
    // SAFETY: the caller's contract: `total` floats at `input`, checked to fit isize.
    Ok((unsafe { std::slice::from_raw_parts(input, total) }, shape))
}

/// Releases a model. NULL is a no-op. Freeing the same pointer twice is detected and ignored
/// (the last error says so) as long as the address was not reused by a newer model.
#[no_mangle]
pub extern "C" fn timm_free(model: *mut TimmModel) {
    guard("timm_free", (), || {
        if model.is_null() {
            return Ok(());
        }
        if !MODELS.remove(model as usize) {
            return Err(Error::invalid_argument(
                "timm_free: not a live model handle (double free?); ignored",
            ));
        }
        // SAFETY: the registry proves this pointer came from Box::into_raw and was not freed.
        drop(unsafe { Box::from_raw(model) });
        Ok(())
    })
}

/// Floats per image that `timm_infer` writes: the class count for logits, `num_features` for
/// the `features` output, `T * D` for an encoder tower's `tokens` (`timm_model_output_shape`
/// gives `{N, T, D}`). 0 if `model` is NULL or not live. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_output_dim(model: *const TimmModel) -> usize {
    guard("timm_model_output_dim", 0, || {
        // SAFETY: `model_arg` refuses NULL and handles that are not live.
        Ok(unsafe { model_arg(model)? }.model.output_dim())
    })
}

/// The input size `{C, H, W}` the model takes and `timm_preprocess` produces into `chw[3]`:
/// config.json's `input_size`, or `test_input_size` with option `use_test_size`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_input_size(model: *const TimmModel, chw: *mut i64) -> TimmStatus {
    guard_status("timm_model_input_size", || {
        // SAFETY: checked for NULL; the caller provides room for 3 values.
        unsafe {
            let m = model_arg(model)?;
            if chw.is_null() {
                return Err(Error::invalid_argument("`chw` is NULL"));
            }
            let s = m.model.input_size();
            for (i, v) in s.iter().enumerate() {
                *chw.add(i) = *v as i64;
            }
        }
        Ok(())
    })
}

/// Number of classes of the classifier (config.json `num_classes`). 0 if `model` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_num_classes(model: *const TimmModel) -> usize {
    guard("timm_model_num_classes", 0, || {
        // SAFETY: `model_arg` refuses NULL and handles that are not live.
        Ok(unsafe { model_arg(model)? }.model.num_classes())
    })
}

/// The label name of class `index` (config.json `label_names`), or NULL when the config has
/// none for it or `index` is out of range. Owned by the model; valid until `timm_free`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_label(model: *const TimmModel, index: usize) -> *const c_char {
    guard("timm_model_label", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        let m = unsafe { model_arg(model)? };
        Ok(m.model
            .label(index)
            .map_or(std::ptr::null(), |s| s.as_ptr()))
    })
}

/// The description of class `index` (config.json `label_descriptions`, keyed by label name),
/// or NULL. Owned by the model; valid until `timm_free`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_label_description(
    model: *const TimmModel,
    index: usize,
) -> *const c_char {
    guard("timm_model_label_description", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        let m = unsafe { model_arg(model)? };
        Ok(m.model
            .description(index)
            .map_or(std::ptr::null(), |s| s.as_ptr()))
    })
}

/// The resolved config as JSON (architecture, num_classes, model_args, pretrained_cfg with
/// timm's defaults filled in, labels). Owned by the model; valid until `timm_free`. NULL if
/// `model` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_config_json(model: *const TimmModel) -> *const c_char {
    guard("timm_model_config_json", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        Ok(unsafe { model_arg(model)? }.model.config_json().as_ptr())
    })
}

/// The ONNX Runtime execution providers that run nodes of this model, comma-separated in
/// priority order, e.g. "CUDAExecutionProvider,CPUExecutionProvider" or
/// "CPUExecutionProvider". Read from ONNX Runtime's record of how it partitioned the graph, so
/// a requested GPU provider that was silently replaced by the CPU is not listed. A GPU provider
/// listed together with CPUExecutionProvider means some nodes (often shape computations ONNX
/// Runtime prefers on the CPU) run there. With option backend=openvino:
/// "OpenVINO:<device>:<precision>" as the compiled model reports them, e.g. "OpenVINO:CPU:bf16".
/// Owned by the model; valid until `timm_free`. NULL if
/// `model` is NULL or not live. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_providers(model: *const TimmModel) -> *const c_char {
    guard("timm_model_providers", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        Ok(unsafe { model_arg(model)? }.model.providers().as_ptr())
    })
}
