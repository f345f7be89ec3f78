//! The process-wide log sink: libtimm's own warnings (a requested GPU provider that could not
//! be used, ...) and ONNX Runtime's session messages go to the caller's callback, or to stderr
//! when none is set.
//!
//! Holding the read lock while a callback runs is what lets `set_callback` promise that once it
//! returns the previous callback is neither running nor called again (its `user_data` may be
//! freed). A callback that tries to replace the sink from inside itself would deadlock on that
//! lock, so that case is refused with an error instead.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::RwLock;

use crate::error::{Error, Result};

/// Severity of a log message (the `level` argument of the C callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warning = 2,
    Error = 3,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// The C callback type (see `TimmLogFn` in the header).
pub type LogFn =
    extern "C" fn(level: std::ffi::c_int, message: *const c_char, user_data: *mut c_void);

#[derive(Clone, Copy)]
struct Sink {
    f: LogFn,
    // The caller's pointer, kept as an integer so the static is Sync; never dereferenced here.
    user: usize,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);

thread_local! {
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Installs (or with `None` removes) the process-wide callback.
pub fn set_callback(f: Option<LogFn>, user_data: *mut c_void) -> Result<()> {
    if IN_CALLBACK.with(Cell::get) {
        return Err(Error::invalid_argument(
            "timm_set_log_callback was called from inside the log callback; set it from another place",
        ));
    }
    let mut g = SINK.write().unwrap_or_else(|p| p.into_inner());
    *g = f.map(|f| Sink {
        f,
        user: user_data as usize,
    });
    Ok(())
}

/// Whether a caller's callback is installed (ORT's session messages are only captured then,
/// so that without one ORT keeps printing its errors exactly as before).
pub fn has_callback() -> bool {
    SINK.read().map(|g| g.is_some()).unwrap_or(false)
}

/// Sends a message to the callback, or prints warnings and errors to stderr when none is set.
pub fn emit(level: Level, message: &str) {
    // A message raised while the callback runs on this thread (it called into libtimm) must not
    // take the lock again: a waiting writer would make that a deadlock.
    if IN_CALLBACK.with(Cell::get) {
        if level >= Level::Warning {
            eprintln!("libtimm {}: {message}", level.name());
        }
        return;
    }
    let g = SINK.read().unwrap_or_else(|p| p.into_inner());
    match *g {
        Some(sink) => {
            let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
            IN_CALLBACK.with(|c| c.set(true));
            (sink.f)(
                level as std::ffi::c_int,
                text.as_ptr(),
                sink.user as *mut c_void,
            );
            IN_CALLBACK.with(|c| c.set(false));
        }
        None if level >= Level::Warning => eprintln!("libtimm {}: {message}", level.name()),
        None => {}
    }
}

pub fn warn(message: &str) {
    emit(Level::Warning, message);
}

/// Goes to the callback only: without one, nothing is printed.
pub fn info(message: &str) {
    emit(Level::Info, message);
}

/// ONNX Runtime's per-session logging function (`SetUserLoggingFunction`): forwards a session's
/// messages to the sink. ORT may call it from any of its threads.
///
/// # Safety
/// Called by ORT with NUL-terminated strings (or NULL) valid for the call.
pub unsafe extern "system" fn from_ort(
    _param: *mut c_void,
    severity: ort_sys::OrtLoggingLevel,
    _category: *const c_char,
    _logid: *const c_char,
    code_location: *const c_char,
    message: *const c_char,
) {
    use ort_sys::OrtLoggingLevel::*;
    if message.is_null() {
        return;
    }
    let level = match severity {
        ORT_LOGGING_LEVEL_VERBOSE => Level::Debug,
        ORT_LOGGING_LEVEL_INFO => Level::Info,
        ORT_LOGGING_LEVEL_WARNING => Level::Warning,
        _ => Level::Error,
    };
    // No panic may unwind into ORT's C++ frames.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: ORT passes NUL-terminated strings valid for the call.
        let msg = unsafe { CStr::from_ptr(message) }.to_string_lossy();
        let loc = if code_location.is_null() {
            String::new()
        } else {
            // SAFETY: as above.
            unsafe { CStr::from_ptr(code_location) }
                .to_string_lossy()
                .into_owned()
        };
        if loc.is_empty() {
            emit(level, &format!("onnxruntime: {msg}"));
        } else {
            emit(level, &format!("onnxruntime [{loc}]: {msg}"));
        }
    });
}
