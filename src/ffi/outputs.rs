//! Models with several outputs (timm's `features_only` feature maps): their count, shapes,
//! `feature_info`, and inference into one caller buffer per output.

use std::os::raw::c_char;

use super::boundary::{guard, guard_status};
use super::model::{input_slice, model_arg, TimmModel, MAX_NDIM};
use crate::error::{Error, TimmStatus};

/// The number of outputs `model` returns: 1 for logits and features, one per feature map for
/// `output=feature_maps`. 0 if `model` is NULL or not a live handle.
#[no_mangle]
pub extern "C" fn timm_model_output_count(model: *const TimmModel) -> usize {
    guard("timm_model_output_count", 0, || {
        // SAFETY: checked for NULL and liveness.
        let m = unsafe { model_arg(model)? };
        Ok(m.model.output_count())
    })
}

/// The shape output `index` has for an input of `input_shape` (`input_ndim` = 4, NCHW):
/// `[N, num_classes]` for logits, `[N, C, H, W]` for a feature map. Writes at most
/// `shape_capacity` dims to `shape` and the rank to `*ndim`.
///
/// Errors: `TIMM_ERR_INVALID_ARGUMENT` for NULLs, an index out of range, an input shape the
/// model does not take or one too small for it (the message names the smallest size);
/// `TIMM_ERR_BUFFER_TOO_SMALL` when `shape_capacity` is below the rank (`*ndim` is set).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_output_shape(
    model: *const TimmModel,
    index: usize,
    input_shape: *const i64,
    input_ndim: usize,
    shape: *mut i64,
    shape_capacity: usize,
    ndim: *mut usize,
) -> TimmStatus {
    guard_status("timm_model_output_shape", || {
        // SAFETY: pointers are checked for NULL; `input_shape` holds `input_ndim` values and
        // `shape` `shape_capacity` (the caller's contract), bounded by MAX_NDIM first.
        unsafe {
            let m = model_arg(model)?;
            if input_shape.is_null() || shape.is_null() || ndim.is_null() {
                return Err(Error::invalid_argument(
                    "`input_shape`, `shape` and `ndim` must not be NULL",
                ));
            }
            if input_ndim == 0 || input_ndim > MAX_NDIM {
                return Err(Error::invalid_argument(format!(
                    "input_ndim is {input_ndim}; expected 4 (NCHW)"
                )));
            }
            let ishape = std::slice::from_raw_parts(input_shape, input_ndim);
            let dims = m.model.output_shape(index, ishape)?;
            *ndim = dims.len();
            if shape_capacity < dims.len() {
                return Err(Error::buffer_too_small(format!(
                    "shape_capacity is {shape_capacity} but output {index} has {} dims",
                    dims.len()
                )));
            }
            let out = std::slice::from_raw_parts_mut(shape, dims.len());
            for (o, d) in out.iter_mut().zip(&dims) {
                *o = *d as i64;
            }
            Ok(())
        }
    })
}

/// Runs a batch and writes every output: `outputs[i]` (capacity `output_lens[i]` floats)
/// receives output `i`, row-major, with the shape `timm_model_output_shape` gives for this
/// input. `output_count` must equal `timm_model_output_count(model)`.
///
/// Errors as `timm_infer`; `TIMM_ERR_BUFFER_TOO_SMALL` names the output and the length it needs.
/// Thread-safe like `timm_infer`.
#[no_mangle]
pub extern "C" fn timm_infer_outputs(
    model: *mut TimmModel,
    input: *const f32,
    input_shape: *const i64,
    input_ndim: usize,
    outputs: *const *mut f32,
    output_lens: *const usize,
    output_count: usize,
) -> TimmStatus {
    guard_status("timm_infer_outputs", || {
        // SAFETY: pointers are checked for NULL, counts bounded before slices are formed; each
        // outputs[i] must hold output_lens[i] floats (the caller's contract).
        unsafe {
            let m = model_arg(model)?;
            if outputs.is_null() || output_lens.is_null() {
                return Err(Error::invalid_argument(
                    "`outputs` and `output_lens` must not be NULL",
                ));
            }
            if output_count != m.model.output_count() {
                return Err(Error::invalid_argument(format!(
                    "output_count is {output_count} but the model has {} output(s) (timm_model_output_count)",
                    m.model.output_count()
                )));
            }
            let (input, shape) = input_slice(input, input_shape, input_ndim)?;
            let ptrs = std::slice::from_raw_parts(outputs, output_count);
            let lens = std::slice::from_raw_parts(output_lens, output_count);
            let mut bufs = Vec::with_capacity(output_count);
            for (i, (&p, &len)) in ptrs.iter().zip(lens).enumerate() {
                if p.is_null() {
                    return Err(Error::invalid_argument(format!("outputs[{i}] is NULL")));
                }
                if len > isize::MAX as usize / 4 {
                    return Err(Error::invalid_argument(format!(
                        "output_lens[{i}] = {len} is not a buffer length"
                    )));
                }
                bufs.push(std::slice::from_raw_parts_mut(p, len));
            }
            m.model.infer_outputs(input, shape, &mut bufs)
        }
    })
}

/// timm's `feature_info` of output `index` of a `output=feature_maps` model: its channels, its
/// reduction (input stride) and timm's module name (`layer2`, `stages.1`, `blocks.11`; owned by
/// the model, valid until `timm_free`). Any of the out-pointers may be NULL.
///
/// Errors: `TIMM_ERR_INVALID_ARGUMENT` for a NULL model or an index out of range (a model that
/// does not return feature maps has none). Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_feature_info(
    model: *const TimmModel,
    index: usize,
    channels: *mut usize,
    reduction: *mut usize,
    module: *mut *const c_char,
) -> TimmStatus {
    guard_status("timm_model_feature_info", || {
        // SAFETY: checked for NULL and liveness; out-pointers are written only when non-NULL.
        unsafe {
            let m = model_arg(model)?;
            let info = m.model.feature_info();
            let f = info.get(index).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "feature index {index} is out of range; the model has {} feature map(s){}",
                    info.len(),
                    if info.is_empty() {
                        " (create it with option output=feature_maps)"
                    } else {
                        ""
                    }
                ))
            })?;
            if !channels.is_null() {
                *channels = f.channels;
            }
            if !reduction.is_null() {
                *reduction = f.reduction;
            }
            if !module.is_null() {
                *module = m
                    .model
                    .feature_module(index)
                    .map_or(std::ptr::null(), |c| c.as_ptr());
            }
            Ok(())
        }
    })
}
