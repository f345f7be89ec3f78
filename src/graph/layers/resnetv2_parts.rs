//! Parts of timm's `resnetv2.py` built outside the `resnetv2` family: `create_resnetv2_stem`
//! with `stem_type='same'` and `preact=False`, the stem of the hybrid ViTs
//! (`vision_transformer_hybrid.py`): `StdConv2dSame` 7×7/2 (TF "SAME" padding, the weight
//! standardised at load), `GroupNormAct` (ReLU), `MaxPool2dSame` 3×3/2.

use super::conv::{std_conv_bn, Conv, Pad};
use super::pool::max_pool2d_same;
use super::{act, group_norm};
use crate::error::Result;
use crate::graph::{Builder, Init, Value};

/// The 'same' stem's settings: widths, `StdConv2dSame`'s eps, `GroupNormAct`'s groups and eps.
#[derive(Debug, Clone, Copy)]
pub struct StemSame {
    pub in_ch: usize,
    pub out_ch: usize,
    pub std_eps: f32,
    pub groups: usize,
    pub gn_eps: f32,
}

/// `create_resnetv2_stem(stem_type='same', preact=False)` in the current scope (`conv`,
/// `norm`; the pool has no parameters).
pub fn stem_same(b: &mut Builder, x: &Value, s: &StemSame) -> Result<Value> {
    let conv = Conv::new(s.in_ch, s.out_ch, 7)
        .stride(2)
        .pad(Pad::same(7, 2, 1))
        .init(Init::KaimingFanOut);
    let y = std_conv_bn(b, x, "conv", None, conv, s.std_eps)?;
    let y = group_norm(&mut b.scope("norm"), &y, s.groups, s.out_ch, s.gn_eps)?;
    let y = act(b, "relu", &y)?;
    max_pool2d_same(b, &y, 3, 2, s.out_ch)
}
