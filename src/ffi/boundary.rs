//! The one panic boundary, the thread's last error, null checks and the registry of live
//! handles. Every export goes through [`guard`] so no panic unwinds into C and every failure
//! leaves a message for `timm_last_error`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use crate::error::{Error, Result, TimmStatus};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub fn set_last_error(e: &Error) {
    let text = format!("{}: {}", e.status().name(), e.message());
    let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// Runs `f`, turning a panic into an internal error.
fn catch<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::internal(format!(
                "{name} panicked: {msg} (this is a bug in libtimm; please report it)"
            )))
        }
    }
}

/// Runs `f` behind the panic boundary; on failure records the message and returns `on_error`.
pub fn guard<T>(name: &str, on_error: T, f: impl FnOnce() -> Result<T>) -> T {
    match catch(name, f) {
        Ok(v) => v,
        Err(e) => {
            set_last_error(&e);
            on_error
        }
    }
}

/// [`guard`] for functions that return a status.
pub fn guard_status(name: &str, f: impl FnOnce() -> Result<()>) -> TimmStatus {
    match catch(name, f) {
        Ok(()) => TimmStatus::TIMM_OK,
        Err(e) => {
            set_last_error(&e);
            e.status()
        }
    }
}

/// A reference from a pointer the caller passed, or INVALID_ARGUMENT naming the parameter.
///
/// # Safety
/// A non-null `p` must point to a valid `T` for the duration of the call.
pub unsafe fn arg<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    p.as_ref()
        .ok_or_else(|| Error::invalid_argument(format!("`{what}` is NULL")))
}

/// A UTF-8 string argument.
///
/// # Safety
/// A non-null `p` must point to a NUL-terminated string.
pub unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::invalid_argument(format!("`{what}` is NULL")));
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| Error::invalid_argument(format!("`{what}` is not valid UTF-8")))
}

/// Addresses of handles this library handed out and has not freed: lets `*_free` refuse a
/// pointer twice and other calls refuse a freed handle, instead of corrupting memory. (A freed
/// address reused by a new handle cannot be told apart; that is documented.)
pub struct Registry(Mutex<Option<HashSet<usize>>>);

impl Registry {
    pub const fn new() -> Self {
        Registry(Mutex::new(None))
    }
    fn with<R>(&self, f: impl FnOnce(&mut HashSet<usize>) -> R) -> R {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(HashSet::new))
    }
    pub fn insert(&self, p: usize) {
        self.with(|s| s.insert(p));
    }
    pub fn remove(&self, p: usize) -> bool {
        self.with(|s| s.remove(&p))
    }
    pub fn contains(&self, p: usize) -> bool {
        self.with(|s| s.contains(&p))
    }
}
