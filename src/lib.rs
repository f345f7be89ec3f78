//! libtimm: timm image models for C, C++ and Go, run on ONNX Runtime.
//!
//! Data flows one way: [`spec`] → [`source`] (the folder) → [`config`] + [`weights`] →
//! [`graph`] (or the folder's `model.onnx`, read by [`onnx`]) → [`runtime`] session →
//! [`model::Model`] → the C handle in [`ffi`]. Images go through [`preprocess`] (timm's eval
//! transform, Pillow-exact) before inference.

// Every unsafe block says why it is sound (`// SAFETY:`).
#![deny(clippy::undocumented_unsafe_blocks)]

// `unsafe` lives in `ffi` (the C ABI's raw pointers), `runtime` (ONNX Runtime's raw API and the
// NVIDIA libraries behind it) and a few OS calls: the read-only mapping of `weights_memory=map`
// (weights.rs), flock (source/hub/lock.rs) and the non-blocking open of files.rs. Everything
// else cannot contain any.
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
pub mod error;
#[forbid(unsafe_code)]
pub mod export;
pub mod ffi;
pub mod files;
#[forbid(unsafe_code)]
pub mod graph;
#[forbid(unsafe_code)]
pub mod model;
#[forbid(unsafe_code)]
pub mod onnx;
#[forbid(unsafe_code)]
pub mod options;
#[forbid(unsafe_code)]
pub mod preprocess;
pub mod runtime;
pub mod source;
#[forbid(unsafe_code)]
pub mod spec;
pub mod weights;

pub use error::{Error, Result, TimmStatus};
