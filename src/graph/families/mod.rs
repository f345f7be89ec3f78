//! One file per timm model module, holding that module's structure; registered once in [`ALL`].

pub mod byobnet;
pub mod convnext;
pub mod efficientnet;
pub mod regnet;
pub mod resnet;
pub mod vit;

pub(crate) use super::{Builder, Family, Init, OutputKind, Value};

/// Every family this build knows, in matching order.
pub static ALL: &[&Family] = &[
    &resnet::FAMILY,
    &efficientnet::FAMILY,
    &convnext::FAMILY,
    &regnet::FAMILY,
    &vit::FAMILY,
    &byobnet::FAMILY,
];
