//! The options object: `timm_options_new`, `_set`, `_set_progress`, `_free`.

use std::os::raw::c_char;

use super::boundary::{guard, guard_status, str_arg, Registry};
use crate::error::{Error, Result, TimmStatus};
use crate::options::Options;

/// Creation options (string keys and values). Opaque; create with `timm_options_new`, release
/// with `timm_options_free`.
pub struct TimmOptions {
    pub(super) options: Options,
}

static OPTIONS: Registry = Registry::new();

/// The live options behind `p`, or None for NULL.
///
/// # Safety
/// A non-null `p` that is registered must still point to its `TimmOptions`.
pub(super) unsafe fn options_arg<'a>(p: *const TimmOptions) -> Result<Option<&'a TimmOptions>> {
    if p.is_null() {
        return Ok(None);
    }
    if !OPTIONS.contains(p as usize) {
        return Err(Error::invalid_argument(
            "`options` is not a live options handle",
        ));
    }
    // SAFETY: registered, hence live.
    Ok(Some(unsafe { &*p }))
}

/// A new, empty options object. Release with `timm_options_free`. Never NULL unless out of memory.
#[no_mangle]
pub extern "C" fn timm_options_new() -> *mut TimmOptions {
    guard("timm_options_new", std::ptr::null_mut(), || {
        let p = Box::into_raw(Box::new(TimmOptions {
            options: Options::new(),
        }));
        OPTIONS.insert(p as usize);
        Ok(p)
    })
}

/// Sets an option. Keys: `intra_op_threads`, `inter_op_threads`, `graph_optimization_level`
/// (disable|basic|extended|all), `ort_library` (path), `output` (logits|features),
/// `graph` (auto|native|onnx), `seed`, `use_test_size` (true|false), and for `hf-hub:` specs
/// `cache_dir`, `offline` (true|false), `endpoint`, `token`; for GPUs (docs/GPU.md)
/// `providers` (comma list of tensorrt, cuda, cpu), `device_id`, `strict_providers`,
/// `cuda_mem_limit`, `cudnn_conv_algo_search`, `trt_fp16`, `trt_engine_cache_dir`,
/// `trt_workspace_size`, `max_batch`. An unknown key or a bad
/// value is `TIMM_ERR_INVALID_ARGUMENT`; the message lists the known keys. Not thread-safe
/// on the same options object.
#[no_mangle]
pub extern "C" fn timm_options_set(
    options: *mut TimmOptions,
    key: *const c_char,
    value: *const c_char,
) -> TimmStatus {
    guard_status("timm_options_set", || {
        if options.is_null() || !OPTIONS.contains(options as usize) {
            return Err(Error::invalid_argument(
                "`options` is NULL or not a live options handle",
            ));
        }
        // SAFETY: checked above; strings are NUL-terminated per the contract.
        unsafe {
            let key = str_arg(key, "key")?;
            let value = str_arg(value, "value")?;
            (*options).options.set(key, value)
        }
    })
}

/// Download progress: bytes done and total of the file being fetched, and the caller's pointer.
pub type TimmProgressFn =
    Option<extern "C" fn(done: u64, total: u64, user_data: *mut std::os::raw::c_void)>;

/// Sets a callback for download progress of `hf-hub:` models (NULL removes it). It is called
/// on the thread that runs `timm_create_model_with_options`, at least every MiB and at the end
/// of each file; `user_data` is passed back untouched and must stay valid while models are
/// created with these options. The callback must return normally (no longjmp, no exception).
#[no_mangle]
pub extern "C" fn timm_options_set_progress(
    options: *mut TimmOptions,
    callback: TimmProgressFn,
    user_data: *mut std::os::raw::c_void,
) -> TimmStatus {
    guard_status("timm_options_set_progress", || {
        if options.is_null() || !OPTIONS.contains(options as usize) {
            return Err(Error::invalid_argument(
                "`options` is NULL or not a live options handle",
            ));
        }
        // The pointer is carried as an integer so the closure is Send; the caller vouches for it.
        let user = user_data as usize;
        let progress = callback.map(|f| -> crate::source::hub::Progress {
            std::sync::Arc::new(move |done, total| {
                f(done, total, user as *mut std::os::raw::c_void)
            })
        });
        // SAFETY: checked live above.
        unsafe { (*options).options.set_progress(progress) };
        Ok(())
    })
}

/// Releases options. NULL is a no-op; a double free is detected and ignored.
#[no_mangle]
pub extern "C" fn timm_options_free(options: *mut TimmOptions) {
    guard("timm_options_free", (), || {
        if options.is_null() {
            return Ok(());
        }
        if !OPTIONS.remove(options as usize) {
            return Err(Error::invalid_argument(
                "timm_options_free: not a live options handle (double free?); ignored",
            ));
        }
        // SAFETY: registered pointers come from Box::into_raw.
        drop(unsafe { Box::from_raw(options) });
        Ok(())
    })
}
