//! Where a model folder comes from.

pub mod hub;
