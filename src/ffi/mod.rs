//! The C ABI. The only module with `extern "C"` functions and raw-pointer work.
//!
//! Rules that hold for every function here (repeated in `include/timm.h`):
//! - No panic crosses the boundary: a caught panic is `TIMM_ERR_INTERNAL` with its message.
//! - Failures set this thread's last error (`timm_last_error`).
//! - NULL where a pointer is required is `TIMM_ERR_INVALID_ARGUMENT`.
//! - Every allocation handed to the caller has a matching `*_free`; strings returned as
//!   `const char *` are owned by the library and stay valid as the function documents.
//!
//! One file per C object, so a new call goes beside the object it works on: [`model`]
//! (`TimmModel`), [`options`] (`TimmOptions`), [`image`] (`TimmImage`, preprocess and
//! classify), [`outputs`] (several outputs: feature maps), [`export`] (ONNX and Triton files),
//! [`log`] (the log callback), [`status`] (status names, last error, version).
//! [`boundary`] holds what they share: the panic boundary, the last error, argument checks and
//! the registries of live handles.

// C entry points take raw pointers by design; each is checked (NULL, live handle) before use.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
pub mod export;
pub mod image;
pub mod log;
pub mod model;
pub mod options;
pub mod outputs;
pub mod status;

pub use self::export::*;
pub use self::image::*;
pub use self::log::*;
pub use self::model::*;
pub use self::options::*;
pub use self::outputs::*;
pub use self::status::*;
