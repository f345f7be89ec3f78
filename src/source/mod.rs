//! Finding the folder a spec names.

pub mod local;

pub use local::ModelFolder;
