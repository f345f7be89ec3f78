//! Spatial-reduction attention: PVT v2's `Attention` and Twins' `GlobalSubSampleAttn` (the same
//! module): queries from every token, keys and values from the map shrunk by a strided conv
//! `sr` (kernel = stride = `sr_ratio`) and its LayerNorm `norm`, or, in PVT v2's linear mode,
//! from `AdaptiveAvgPool2d(7)` + a 1×1 `sr` + `norm` + GELU. Parameters `q`, `kv`, `sr`,
//! `norm`, `proj` in the current scope; the token grid follows the input's size.

use super::attention::{attention_core, AttnCfg, Hooks};
use super::mlp::linear;
use super::patch_embed::token_map;
use super::{conv2d, Conv, Pad};
use crate::error::Result;
use crate::graph::{Builder, Init, Value};

/// `nn.LayerNorm`'s default eps (the attention's own `norm`, whatever the blocks use).
const NORM_EPS: f32 = 1e-5;

/// What [`sr_attention`] needs to know.
#[derive(Debug, Clone, Copy)]
pub struct SrAttnCfg {
    pub dim: usize,
    pub heads: usize,
    pub sr_ratio: usize,
    /// PVT v2's `linear_attn`: pooled to `pool`×`pool` keys.
    pub linear: bool,
    pub pool: usize,
    pub qkv_bias: bool,
}

/// Spatial-reduction attention on tokens `x` `[N, L, dim]` laid out on the grid of `grid`
/// (an NCHW map of the same H×W, whose shape the reshapes take); returns `[N, L, dim]`.
pub fn sr_attention(b: &mut Builder, x: &Value, grid: &Value, c: &SrAttnCfg) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let q = linear(&mut b.scope("q"), x, c.dim, c.dim, c.qkv_bias, init)?;
    let src = if c.linear {
        let map = token_map(b, x, 0, grid);
        let pooled = super::adaptive_pool::adaptive_avg_pool2d(b, &map, (c.pool, c.pool));
        let sr = Conv::new(c.dim, c.dim, 1).pad(Pad::Sym(0)).bias(true);
        let y = conv2d(&mut b.scope("sr"), &pooled, sr)?;
        let y = super::nchw_to_tokens(b, &y, c.dim);
        let y = super::layer_norm(&mut b.scope("norm"), &y, c.dim, NORM_EPS)?;
        super::act(b, "gelu", &y)?
    } else if c.sr_ratio > 1 {
        let map = token_map(b, x, 0, grid);
        let sr = Conv::new(c.dim, c.dim, c.sr_ratio)
            .stride(c.sr_ratio)
            .pad(Pad::Sym(0))
            .bias(true);
        let y = conv2d(&mut b.scope("sr"), &map, sr)?;
        let y = super::nchw_to_tokens(b, &y, c.dim);
        super::layer_norm(&mut b.scope("norm"), &y, c.dim, NORM_EPS)?
    } else {
        x.clone()
    };
    let kv = linear(&mut b.scope("kv"), &src, c.dim, 2 * c.dim, c.qkv_bias, init)?;
    let parts = super::split(b, &kv, -1, &[c.dim, c.dim]);
    let a = AttnCfg::new(c.dim, c.heads);
    let y = attention_core(b, &q, &parts[0], &parts[1], &a, &Hooks::default())?;
    linear(&mut b.scope("proj"), &y, c.dim, c.dim, true, init)
}
