//! One file per timm model module, holding that module's structure; registered once in [`ALL`].

pub mod byobnet;
pub mod convnext;
pub mod densenet;
pub mod efficientnet;
pub mod eva;
pub mod fastvit;
pub mod inception_v3;
pub mod maxxvit;
pub mod regnet;
pub mod resnet;
pub mod resnetv2;
pub mod swin_transformer;
pub mod vgg;
pub mod vision_transformer_relpos;
pub mod vit;

use super::Family;

/// Every family this build knows, in matching order.
pub static ALL: &[&Family] = &[
    &resnet::FAMILY,
    &resnetv2::FAMILY,
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
    &vision_transformer_relpos::FAMILY,
    &byobnet::FAMILY,
    &fastvit::FAMILY,
];
