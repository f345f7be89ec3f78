//! The OpenVINO backend (option backend=openvino): the graph goes to OpenVINO as ONNX bytes in
//! memory, is compiled once per model for the chosen device and precision, and runs on a pool
//! of infer requests so many threads can share the compiled model.

pub mod compiled;
pub mod cpu;
pub mod loader;
pub mod sys;

pub use compiled::{Compiled, Config};
