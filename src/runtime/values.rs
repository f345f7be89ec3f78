//! Weights → ONNX Runtime values, the one place for both the native graph's initializers and
//! the safetensors tensors a model.onnx binds by name: a view of the mapping when its bytes can
//! be used as they are (map mode, aligned, big enough for external data), else one copy into
//! memory ONNX Runtime owns and frees, converted to float32 when the graph wants float32 from
//! another float type.

use ort_sys::ONNXTensorElementDataType;

use super::sys::{self, OwnedValue};
use crate::error::{Error, Result};
use crate::weights::{self, DType, TensorInfo, Weights};

/// ORT's minimum size for initializers handed over as external data.
pub const MIN_EXTERNAL_BYTES: usize = 128;

/// A weight as a value. `external`: the bytes are not ORT's graph memory (a view of the
/// mapping, or a deleter-owned buffer), so the Model Editor may take them without a copy.
pub struct WeightValue {
    pub value: OwnedValue,
    pub external: bool,
}

/// Where a weight that cannot be a view is copied to.
pub enum CopyTo<'a> {
    /// Memory ORT allocates and frees (the Model Editor takes such values).
    Ort,
    /// 8-byte aligned buffers the caller keeps for the session's lifetime:
    /// `AddExternalInitializers` (a model.onnx's bound weights) only takes memory it does not own.
    Caller(&'a mut Vec<Vec<u64>>),
}

/// ORT's element type for a safetensors dtype that is stored as it is.
pub fn element_type(dtype: DType) -> Option<ONNXTensorElementDataType> {
    Some(match dtype {
        DType::F32 => sys::F32,
        DType::F16 => sys::F16,
        DType::BF16 => sys::BF16,
        DType::F64 => sys::F64,
        _ => return None,
    })
}

/// Tensor `info` of `w` as a value of element type `elem` and shape `dims` (the caller has
/// checked they agree with the file). `elem` may be float32 for any float dtype (converted
/// here); otherwise it must be the file's own type.
///
/// # Safety
/// In map mode the value may view `w`'s mapping: `w` must outlive the value and every session
/// built with it (the model owns both and drops the session first).
pub unsafe fn weight_value(
    w: &Weights,
    info: &TensorInfo,
    dims: &[i64],
    elem: ONNXTensorElementDataType,
    copy_to: CopyTo<'_>,
) -> Result<WeightValue> {
    let bytes = info.end - info.start;
    if element_type(info.dtype) == Some(elem) {
        if let Some(mapped) = w.mapped(info).filter(|b| {
            b.len() >= MIN_EXTERNAL_BYTES && (b.as_ptr() as usize).is_multiple_of(info.dtype.size())
        }) {
            // SAFETY: the caller keeps the mapping alive for the value and its sessions.
            let value = unsafe { sys::tensor_over(mapped.as_ptr(), mapped.len(), dims, elem)? };
            return Ok(WeightValue {
                value,
                external: true,
            });
        }
        return copy(copy_to, dims, elem, bytes, |dst| w.read(info, dst));
    }
    if elem != sys::F32 || !(info.dtype.is_float() || info.dtype == DType::F64) {
        return Err(Error::internal(format!(
            "weight of dtype {:?} asked for as ONNX element type {elem:?}",
            info.dtype
        )));
    }
    let raw = w.bytes(info)?;
    let f = weights::to_f32(&raw, info.dtype).ok_or_else(|| Error::internal("float conversion"))?;
    copy(copy_to, dims, sys::F32, f.len() * 4, |dst| {
        for (d, x) in dst.chunks_exact_mut(4).zip(&f) {
            d.copy_from_slice(&x.to_le_bytes());
        }
        Ok(())
    })
}

fn copy(
    to: CopyTo<'_>,
    dims: &[i64],
    elem: ONNXTensorElementDataType,
    bytes: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<WeightValue> {
    let CopyTo::Caller(buffers) = to else {
        return owned(dims, elem, bytes, fill);
    };
    let mut buf = vec![0u64; bytes.div_ceil(8)];
    // SAFETY: `buf` holds at least `bytes` initialised bytes, and u8 has no alignment needs.
    fill(unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, bytes) })?;
    // SAFETY: moving the Vec into `buffers` does not move its heap block, which the caller
    // keeps for the session's lifetime.
    let value = unsafe { sys::tensor_over(buf.as_ptr() as *const u8, bytes, dims, elem)? };
    buffers.push(buf);
    Ok(WeightValue {
        value,
        external: true,
    })
}

/// `bytes` filled by `fill` into memory ORT owns: deleter-owned (external data) when large
/// enough, else an ordinary ORT tensor.
///
/// Large tensors go as external data with a deleter: measured on resnet50 (copy mode, level
/// `all`), handing them over as graph-owned data made ORT copy every weight into its graph and
/// keep the originals after the optimizer rewrote them (peak RSS ~4x the weights, RSS after load
/// ~2.7x); see bench/README-section.md. Tiny ones stay graph-owned: ORT requires at least
/// `MIN_EXTERNAL_BYTES` for external data, and shape inference reads small constants.
pub fn owned(
    dims: &[i64],
    elem: ONNXTensorElementDataType,
    bytes: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<WeightValue> {
    Ok(if bytes >= MIN_EXTERNAL_BYTES {
        WeightValue {
            value: sys::tensor_filled_owned(dims, elem, bytes, fill)?,
            external: true,
        }
    } else {
        WeightValue {
            value: sys::tensor_filled(dims, elem, bytes, fill)?,
            external: false,
        }
    })
}
