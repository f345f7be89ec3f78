//! One file per timm model module, holding that module's structure; registered once in [`ALL`].

pub mod convnext;
pub mod efficientnet;
pub mod regnet;
pub mod resnet;
pub mod vision_transformer_relpos;
pub mod vit;

// The five first families still build on the older helpers while they move to `layers`.
pub(crate) use super::legacy as layers;
pub(crate) use super::{Attr, Builder, Family, Init, OutputKind, Value};

/// Every family this build knows, in matching order.
pub static ALL: &[&Family] = &[
    &resnet::FAMILY,
    &efficientnet::FAMILY,
    &convnext::FAMILY,
    &regnet::FAMILY,
    &vit::FAMILY,
    &vision_transformer_relpos::FAMILY,
];

/// Adapts a family written against `(builder, config, output)`: feature maps build the
/// classifier graph, whose trunk carries the taps.
pub(crate) fn with_output(
    b: &mut Builder,
    cfg: &crate::config::ModelConfig,
    f: fn(
        &mut Builder,
        &crate::config::ModelConfig,
        OutputKind,
    ) -> crate::error::Result<(Value, usize)>,
) -> crate::error::Result<(Value, usize)> {
    let o = match b.output() {
        OutputKind::FeatureMaps => OutputKind::Logits,
        o => o,
    };
    f(b, cfg, o)
}
