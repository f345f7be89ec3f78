//! timm's `PatchEmbed`: a conv with kernel = stride = patch size, flattened to tokens.

use super::{conv2d, Conv, Norm, Pad};
use crate::error::Result;
use crate::graph::{Attr, Builder, Init, Value};

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

/// `forward_intermediates`' NCHW map of a token sequence: the `n_prefix` prefix tokens
/// dropped, the patch tokens laid out on the patch grid of `patches` (`[N, D, gh, gw]`, the
/// patch conv's output, whose spatial size the map takes).
pub fn token_map(b: &mut Builder, x: &Value, n_prefix: usize, patches: &Value) -> Value {
    let t = if n_prefix > 0 {
        super::slice(b, x, 1, n_prefix as i64, i64::MAX)
    } else {
        x.clone()
    };
    let t = super::transpose(b, &t, &[0, 2, 1]);
    let hw = b.op(
        "Shape",
        &[patches],
        vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
    );
    let nd = b.ints(&[0, 0]);
    let shape = super::concat(b, &[&nd, &hw], 0);
    let map = b.op("Reshape", &[&t, &shape], vec![]);
    if let Some(s) = b.spatial(patches).cloned() {
        b.assign_spatial(&map, s);
    }
    map
}

/// `[1, n, d]` tokens (class, distillation, register) broadcast over the batch of `like`.
pub fn expand_batch(b: &mut Builder, tok: &Value, like: &Value, n: usize, d: usize) -> Value {
    let batch = b.op(
        "Shape",
        &[like],
        vec![("start", Attr::Int(0)), ("end", Attr::Int(1))],
    );
    let rest = b.ints(&[n as i64, d as i64]);
    let shape = super::concat(b, &[&batch, &rest], 0);
    b.op("Expand", &[tok, &shape], vec![])
}

/// timm's `_pos_embed`: the prefix tokens (`[1, n_i, d]` each) concatenated before the patch
/// tokens, and the position embedding added over the patches only (`no_embed_class`) or over
/// prefix and patches.
pub fn prefix_and_pos(
    b: &mut Builder,
    x: &Value,
    prefix: &[Value],
    n_prefix: usize,
    pos: Option<&Value>,
    no_embed_class: bool,
    d: usize,
) -> Value {
    let mut x = x.clone();
    if let (true, Some(pe)) = (no_embed_class, pos) {
        x = super::add(b, &x, pe);
    }
    if !prefix.is_empty() {
        let refs: Vec<&Value> = prefix.iter().collect();
        let tok = super::concat(b, &refs, 1);
        let tok = expand_batch(b, &tok, &x, n_prefix, d);
        x = super::concat(b, &[&tok, &x], 1);
    }
    if let (false, Some(pe)) = (no_embed_class, pos) {
        x = super::add(b, &x, pe);
    }
    x
}
