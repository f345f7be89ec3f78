//! The process-wide log callback.

use std::os::raw::c_char;

use super::boundary::guard_status;
use crate::error::TimmStatus;

/// Severity passed as `level` to a `TimmLogFn`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimmLogLevel {
    TIMM_LOG_DEBUG = 0,
    TIMM_LOG_INFO = 1,
    /// e.g. a requested GPU provider could not be used and the model runs on the next one.
    TIMM_LOG_WARNING = 2,
    TIMM_LOG_ERROR = 3,
}

/// A log callback: `level` is a `TimmLogLevel`, `message` is valid only during the call.
pub type TimmLogFn = Option<
    extern "C" fn(
        level: std::os::raw::c_int,
        message: *const c_char,
        user_data: *mut std::os::raw::c_void,
    ),
>;

/// Sets the process-wide log callback (NULL restores the default: warnings and errors printed
/// to stderr). It receives libtimm's warnings (a requested GPU provider that could not be
/// used, and why) and, for models created while it is set, ONNX Runtime's session warnings and
/// errors.
///
/// Thread rules: the callback may be called from any thread, including ONNX Runtime's own,
/// and from several threads at once, so it must be thread-safe. It must return normally and
/// must not call `timm_set_log_callback` (that is refused with `TIMM_ERR_INVALID_ARGUMENT`).
/// When `timm_set_log_callback` returns, the previous callback is no longer running and will
/// not be called again, so its `user_data` may be released. `user_data` is passed back
/// untouched. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_set_log_callback(
    callback: TimmLogFn,
    user_data: *mut std::os::raw::c_void,
) -> TimmStatus {
    guard_status("timm_set_log_callback", || {
        crate::runtime::log::set_callback(callback, user_data)
    })
}
