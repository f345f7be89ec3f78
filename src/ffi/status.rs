//! Status names, the thread's last error and the version: the calls that cannot fail.

use std::ffi::CString;
use std::os::raw::c_char;

use once_cell::sync::Lazy;

use super::boundary;
use crate::error::TimmStatus;

/// This thread's last failure message, "" if none. The string stays valid until the next
/// failing call on the same thread; copy it to keep it. Never NULL.
#[no_mangle]
pub extern "C" fn timm_last_error() -> *const c_char {
    boundary::last_error_ptr()
}

/// The library version, e.g. "0.1.0". Static; never NULL.
#[no_mangle]
pub extern "C" fn timm_version() -> *const c_char {
    static V: Lazy<CString> =
        Lazy::new(|| CString::new(env!("CARGO_PKG_VERSION")).unwrap_or_default());
    V.as_ptr()
}

/// The name of a status code, e.g. "TIMM_ERR_NOT_FOUND" ("TIMM_ERR_UNKNOWN" for a value that
/// is not a status; an int, so any value is safe to pass). Static; never NULL.
#[no_mangle]
pub extern "C" fn timm_status_name(status: i32) -> *const c_char {
    static NAMES: Lazy<Vec<CString>> = Lazy::new(|| {
        use TimmStatus::*;
        [
            TIMM_OK,
            TIMM_ERR_INVALID_ARGUMENT,
            TIMM_ERR_NOT_FOUND,
            TIMM_ERR_INVALID_MODEL,
            TIMM_ERR_UNSUPPORTED,
            TIMM_ERR_RUNTIME,
            TIMM_ERR_IO,
            TIMM_ERR_BUFFER_TOO_SMALL,
            TIMM_ERR_INTERNAL,
        ]
        .iter()
        .map(|s| CString::new(s.name()).unwrap_or_default())
        .collect()
    });
    usize::try_from(status)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or(c"TIMM_ERR_UNKNOWN".as_ptr(), |s| s.as_ptr())
}
