//! The CUDA execution provider: its options, registration, and the CUDA runtime and driver
//! questions (is there a device, what is it) asked through the libraries the provider loaded.

use std::ffi::{c_char, c_int, CStr};

use ort::AsPointer;

use super::diagnose::explain;
use super::dl::symbol;
use super::{ConvAlgoSearch, KeyValues, Provider, ProviderOptions};
use crate::error::{Error, Result};
use crate::runtime::sys;

pub(crate) const CUDART: &[&str] = &["libcudart.so.13", "libcudart.so"];
const CUDA_DRIVER: &[&str] = &["libcuda.so.1"];

/// Appends the CUDA provider with the options' settings, then checks the device exists.
pub(super) fn register(
    b: &mut ort::session::builder::SessionBuilder,
    opts: &ProviderOptions,
) -> Result<()> {
    let mut kv: Vec<(String, String)> = vec![("device_id".into(), opts.device_id.to_string())];
    if let Some(n) = opts.cuda_mem_limit {
        kv.push(("gpu_mem_limit".into(), n.to_string()));
    }
    if let Some(a) = opts.cudnn_conv_algo_search {
        let v = match a {
            ConvAlgoSearch::Exhaustive => "EXHAUSTIVE",
            ConvAlgoSearch::Heuristic => "HEURISTIC",
            ConvAlgoSearch::Default => "DEFAULT",
        };
        kv.push(("cudnn_conv_algo_search".into(), v.into()));
    }
    let kv = KeyValues::new(&kv)?;
    let api = ort::api();
    let fail = |e: Error| explain(Provider::Cuda, e.message());
    let mut o = std::ptr::null_mut();
    // SAFETY: creates an options struct ORT owns; released below on every path.
    sys::check(unsafe { (api.CreateCUDAProviderOptions)(&mut o) }).map_err(fail)?;
    // SAFETY: `o` is live; the key and value arrays have equal length and point into `kv`,
    // which outlives the call; ORT copies the options when appending them.
    let r = sys::check(unsafe {
        (api.UpdateCUDAProviderOptions)(o, kv.keys.as_ptr(), kv.values.as_ptr(), kv.keys.len())
    })
    .and_then(|()| {
        // SAFETY: valid session options and provider options.
        sys::check(unsafe { (api.SessionOptionsAppendExecutionProvider_CUDA_V2)(b.ptr_mut(), o) })
    });
    // SAFETY: releases the struct created above, once.
    unsafe { (api.ReleaseCUDAProviderOptions)(o) };
    r.map_err(fail)
}

pub(crate) fn cuda_error_text(code: c_int) -> String {
    type ErrStr = unsafe extern "C" fn(c_int) -> *const c_char;
    match symbol::<ErrStr>(CUDART, "cudaGetErrorString") {
        // SAFETY: returns a static string for any code.
        Some(f) => unsafe {
            let p = f(code);
            if p.is_null() {
                format!("CUDA error {code}")
            } else {
                format!("CUDA error {code}: {}", CStr::from_ptr(p).to_string_lossy())
            }
        },
        None => format!("CUDA error {code}"),
    }
}

/// Is there a CUDA device `device_id`? Asked of the CUDA runtime the provider loaded.
pub(super) fn check_device(p: Provider, device_id: u32) -> Result<()> {
    type Count = unsafe extern "C" fn(*mut c_int) -> c_int;
    let Some(count_fn) = symbol::<Count>(CUDART, "cudaGetDeviceCount") else {
        // The runtime is not loadable from here; session creation will report what is missing.
        return Ok(());
    };
    let mut n: c_int = 0;
    // SAFETY: writes one int.
    let rc = unsafe { count_fn(&mut n) };
    if rc != 0 {
        return Err(Error::unsupported(format!(
            "the {} provider cannot be used: the CUDA runtime finds no usable GPU ({}); check `nvidia-smi`, the driver \
             (CUDA 13 needs 580 or newer) and CUDA_VISIBLE_DEVICES",
            p.human(),
            cuda_error_text(rc)
        )));
    }
    if device_id as c_int >= n {
        return Err(Error::unsupported(format!(
            "the {} provider cannot be used: option device_id = {device_id} but this machine has {n} CUDA device(s)",
            p.human()
        )));
    }
    Ok(())
}

/// "NVIDIA H200 sm_90 driver 13000", or what could not be read.
pub fn gpu_identity(device_id: u32) -> String {
    type Init = unsafe extern "C" fn(u32) -> c_int;
    type Get = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type Name = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    type Attr = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
    let (Some(init), Some(get), Some(name), Some(attr)) = (
        symbol::<Init>(CUDA_DRIVER, "cuInit"),
        symbol::<Get>(CUDA_DRIVER, "cuDeviceGet"),
        symbol::<Name>(CUDA_DRIVER, "cuDeviceGetName"),
        symbol::<Attr>(CUDA_DRIVER, "cuDeviceGetAttribute"),
    ) else {
        return "no NVIDIA driver".into();
    };
    // SAFETY: driver API calls with valid out-pointers; 75/76 are
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR.
    unsafe {
        if init(0) != 0 {
            return "CUDA driver failed to initialise".into();
        }
        let mut dev = 0;
        if get(&mut dev, device_id as c_int) != 0 {
            return format!("no CUDA device {device_id}");
        }
        let mut buf = [0 as c_char; 256];
        let _ = name(buf.as_mut_ptr(), buf.len() as c_int, dev);
        let (mut major, mut minor) = (0, 0);
        let _ = attr(&mut major, 75, dev);
        let _ = attr(&mut minor, 76, dev);
        format!(
            "{} sm_{major}{minor}",
            CStr::from_ptr(buf.as_ptr()).to_string_lossy()
        )
    }
}
