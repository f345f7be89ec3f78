//! timm's `PatchEmbed`: a conv with kernel = stride = patch size, flattened to tokens.

use super::{conv2d, Conv, Norm, Pad};
use crate::error::Result;
use crate::graph::{Builder, Init, Value};

/// `PatchEmbed` settings.
#[derive(Debug, Clone)]
pub struct PatchEmbedCfg {
    pub in_ch: usize,
    pub dim: usize,
    pub patch: usize,
    pub bias: bool,
    /// `dynamic_img_pad`: zeros after the last row / column up to a multiple of the patch.
    pub pad: (usize, usize),
    /// `norm` after flattening.
    pub norm: Option<Norm>,
    /// Keep the map NCHW (`flatten=False`, `output_fmt='NCHW'`).
    pub flatten: bool,
}

/// `PatchEmbed` (`proj`, optional `norm`) on the current scope: `[N, C, H, W]` → `[N, L, dim]`
/// (or the NCHW grid when not `flatten`).
pub fn patch_embed(b: &mut Builder, x: &Value, c: &PatchEmbedCfg) -> Result<Value> {
    let conv = Conv::new(c.in_ch, c.dim, c.patch)
        .stride(c.patch)
        .pad(Pad::Explicit(0, 0, c.pad.0, c.pad.1))
        .bias(c.bias)
        // PyTorch's default conv init: timm's ViT init does not touch the patch embedding.
        .init(Init::DefaultUniform);
    let y = conv2d(&mut b.scope("proj"), x, conv)?;
    if !c.flatten {
        return match &c.norm {
            Some(n) => n.apply_2d(&mut b.scope("norm"), &y, c.dim),
            None => Ok(y),
        };
    }
    let y = super::nchw_to_tokens(b, &y, c.dim);
    match &c.norm {
        Some(n) => n.apply_last(&mut b.scope("norm"), &y, c.dim),
        None => Ok(y),
    }
}
