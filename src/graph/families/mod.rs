//! One file per timm model module, holding that module's structure; registered once in [`ALL`].

pub mod convnext;
pub mod densenet;
pub mod efficientnet;
pub mod efficientvit_msra;
pub mod eva;
pub mod inception_v3;
pub mod levit;
pub mod maxxvit;
pub mod regnet;
pub mod resnet;
pub mod swin_transformer;
pub mod vgg;
pub mod vit;

use super::Family;

/// Every family this build knows, in matching order.
pub static ALL: &[&Family] = &[
    &resnet::FAMILY,
    &efficientnet::FAMILY,
    &convnext::FAMILY,
    &regnet::FAMILY,
    &vit::FAMILY,
    &swin_transformer::FAMILY,
    &eva::FAMILY,
    &densenet::FAMILY,
    &vgg::FAMILY,
    &inception_v3::FAMILY,
    &maxxvit::FAMILY,
    &levit::FAMILY,
    &efficientvit_msra::FAMILY,
];
