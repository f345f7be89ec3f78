//! libtimm: timm image models for C, C++ and Go, run on ONNX Runtime.
//!
//! Data flows one way: [`spec`] → [`source`] (the folder) → [`config`] + [`weights`] →
//! graph → [`runtime`] session → [`model::Model`] → the C handle in [`ffi`].

pub mod error;
pub mod preprocess;
pub mod spec;

pub use error::{Error, Result, TimmStatus};
