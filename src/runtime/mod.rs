//! The runtimes: ONNX Runtime (loading the library, building sessions from ONNX files or
//! native graphs, running them), OpenVINO ([`openvino`]), and [`backend`], which picks one.

pub mod backend;
pub mod device;
pub mod graph_cache;
pub mod loader;
pub mod log;
pub mod openvino;
pub mod providers;
pub mod session;
pub mod sys;
pub mod values;

pub use session::{Keep, OptLevel, Session, SessionOptions};
