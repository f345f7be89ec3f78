//! Finding the folder a spec names: a local folder, or a snapshot in the Hugging Face cache.

pub mod hub;
pub mod local;

pub use local::ModelFolder;
