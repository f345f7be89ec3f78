//! libtimm: timm image models for C, C++ and Go, run on ONNX Runtime.
//!
//! Data flows one way: [`spec`] → [`source`] (the folder) → [`config`] + [`weights`] →
//! [`graph`] (or the folder's `model.onnx`, read by [`onnx`]) → [`runtime`] session →
//! [`model::Model`] → the C handle in [`ffi`]. Images go through [`preprocess`] (timm's eval
//! transform, Pillow-exact) before inference.

pub mod config;
pub mod error;
pub mod export;
pub mod ffi;
pub mod files;
pub mod graph;
pub mod model;
pub mod onnx;
pub mod options;
pub mod preprocess;
pub mod runtime;
pub mod source;
pub mod spec;
pub mod weights;

pub use error::{Error, Result, TimmStatus};
