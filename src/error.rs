//! One status enum for the whole library and the error type that carries it.
//!
//! Every fallible function inside the crate returns [`Result`]; the FFI layer turns an
//! [`Error`] into its [`TimmStatus`] and keeps the message as the thread's last error.

use std::fmt;

/// Status codes returned by every fallible C function.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimmStatus {
    /// Success.
    TIMM_OK = 0,
    /// A NULL pointer, a malformed spec, a bad option value, an input of the wrong shape.
    TIMM_ERR_INVALID_ARGUMENT,
    /// The model folder, a file in it, or a cached snapshot does not exist.
    TIMM_ERR_NOT_FOUND,
    /// The folder exists but its config.json, weights or ONNX graph are malformed or disagree.
    TIMM_ERR_INVALID_MODEL,
    /// A valid request this build or this runtime cannot serve (unknown architecture, pickled weights, ...).
    TIMM_ERR_UNSUPPORTED,
    /// ONNX Runtime could not be loaded, or failed to build a session or run it.
    TIMM_ERR_RUNTIME,
    /// Reading a file or the network failed.
    TIMM_ERR_IO,
    /// The caller's output buffer is smaller than the result; the message names the length needed.
    TIMM_ERR_BUFFER_TOO_SMALL,
    /// A bug in this library (including a caught panic); the message says what happened.
    TIMM_ERR_INTERNAL,
}

impl TimmStatus {
    pub fn name(self) -> &'static str {
        match self {
            TimmStatus::TIMM_OK => "TIMM_OK",
            TimmStatus::TIMM_ERR_INVALID_ARGUMENT => "TIMM_ERR_INVALID_ARGUMENT",
            TimmStatus::TIMM_ERR_NOT_FOUND => "TIMM_ERR_NOT_FOUND",
            TimmStatus::TIMM_ERR_INVALID_MODEL => "TIMM_ERR_INVALID_MODEL",
            TimmStatus::TIMM_ERR_UNSUPPORTED => "TIMM_ERR_UNSUPPORTED",
            TimmStatus::TIMM_ERR_RUNTIME => "TIMM_ERR_RUNTIME",
            TimmStatus::TIMM_ERR_IO => "TIMM_ERR_IO",
            TimmStatus::TIMM_ERR_BUFFER_TOO_SMALL => "TIMM_ERR_BUFFER_TOO_SMALL",
            TimmStatus::TIMM_ERR_INTERNAL => "TIMM_ERR_INTERNAL",
        }
    }
}

/// An error: a status code plus a message meant for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: TimmStatus,
    message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(status: TimmStatus, message: impl Into<String>) -> Self {
        debug_assert!(status != TimmStatus::TIMM_OK);
        Error { status, message: message.into() }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_INVALID_ARGUMENT, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_NOT_FOUND, message)
    }
    pub fn invalid_model(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_INVALID_MODEL, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_UNSUPPORTED, message)
    }
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_RUNTIME, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_IO, message)
    }
    pub fn buffer_too_small(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_BUFFER_TOO_SMALL, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(TimmStatus::TIMM_ERR_INTERNAL, message)
    }

    /// An I/O failure on `path`; a missing file maps to `TIMM_ERR_NOT_FOUND`.
    pub fn from_io(err: &std::io::Error, what: &str, path: &std::path::Path) -> Self {
        let status = if err.kind() == std::io::ErrorKind::NotFound {
            TimmStatus::TIMM_ERR_NOT_FOUND
        } else {
            TimmStatus::TIMM_ERR_IO
        };
        Self::new(status, format!("{what} {}: {err}", path.display()))
    }

    pub fn status(&self) -> TimmStatus {
        self.status
    }
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with context, keeping the status.
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<ort::Error> for Error {
    fn from(e: ort::Error) -> Self {
        Error::runtime(format!("ONNX Runtime: {e}"))
    }
}
