//! timm's `SplitAttn` (`timm/layers/split_attn.py`, ResNeSt's split attention): one grouped conv
//! makes `radix` splits of the output, a squeeze of their sum gives per-split channel weights
//! (`RadixSoftmax`: softmax across splits, or a sigmoid for radix 1), the splits are summed
//! under them.

use super::conv::{conv_bn, Conv, Pad};
use super::{act, add, mul, reshape, split, transpose};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Value};

/// `SplitAttn(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
/// radix, ...)` with a BatchNorm `norm_layer`, the attention width already resolved
/// (`make_divisible(in_channels * radix * rd_ratio, rd_divisor, min_value=32)`).
#[derive(Debug, Clone, Copy)]
pub struct SplitAttnCfg {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
    pub radix: usize,
    pub attn_ch: usize,
    pub bn_eps: f32,
}

/// The module in the current scope: `conv` + `bn0` (folded), ReLU, `fc1` + `bn1` (folded),
/// ReLU, `fc2`, the radix softmax.
pub fn split_attn(b: &mut Builder, x: &Value, c: &SplitAttnCfg) -> Result<Value> {
    let (r, g) = (c.radix, c.groups);
    if r == 0 || g == 0 || !c.out_ch.is_multiple_of(g) || !c.attn_ch.is_multiple_of(g) {
        return Err(Error::invalid_model(format!(
            "SplitAttn: radix {r} and groups {g} must be positive and divide {} and {} channels",
            c.out_ch, c.attn_ch
        )));
    }
    let mid = c.out_ch * r;
    let conv = Conv::new(c.in_ch, mid, c.kernel)
        .stride(c.stride)
        .dilation(c.dilation)
        .pad(Pad::Sym(c.padding))
        .groups(g * r);
    let y = conv_bn(b, x, "conv", "bn0", conv, c.bn_eps)?;
    let y = act(b, "relu", &y)?;
    let splits = if r > 1 {
        split(b, &y, 1, &vec![c.out_ch; r])
    } else {
        vec![y.clone()]
    };
    let mut gap = splits[0].clone();
    for s in &splits[1..] {
        gap = add(b, &gap, s);
    }
    let gap = b.op("GlobalAveragePool", &[&gap], vec![]);
    let fc1 = Conv::new(c.out_ch, c.attn_ch, 1)
        .pad(Pad::Sym(0))
        .groups(g)
        .bias(true);
    let a = conv_bn(b, &gap, "fc1", "bn1", fc1, c.bn_eps)?;
    let a = act(b, "relu", &a)?;
    let fc2 = Conv::new(c.attn_ch, mid, 1)
        .pad(Pad::Sym(0))
        .groups(g)
        .bias(true);
    let a = super::conv2d(&mut b.scope("fc2"), &a, fc2)?;
    let out = if r > 1 {
        // RadixSoftmax: [B, card, radix, -1] -> transpose(1, 2) -> softmax over radix.
        let a = reshape(b, &a, &[0, g as i64, r as i64, -1]);
        let a = transpose(b, &a, &[0, 2, 1, 3]);
        let a = b.op("Softmax", &[&a], vec![("axis", Attr::Int(1))]);
        let a = reshape(b, &a, &[0, mid as i64, 1, 1]);
        let weights = split(b, &a, 1, &vec![c.out_ch; r]);
        let mut out: Option<Value> = None;
        for (s, w) in splits.iter().zip(&weights) {
            let t = mul(b, s, w);
            out = Some(match out {
                None => t,
                Some(o) => add(b, &o, &t),
            });
        }
        out.expect("radix > 1")
    } else {
        let a = act(b, "sigmoid", &a)?;
        mul(b, &y, &a)
    };
    b.set_spatial(&out, &y, super::resnet_parts::IDENTITY, c.out_ch)?;
    Ok(out)
}
