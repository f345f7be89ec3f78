//! ONNX Runtime: loading the library, building sessions (from ONNX files or native graphs)
//! and running them.

pub mod device;
pub mod graph_cache;
pub mod loader;
pub mod log;
pub mod providers;
pub mod session;
pub mod sys;
pub mod values;

pub use session::{Keep, OptLevel, Session, SessionOptions};
