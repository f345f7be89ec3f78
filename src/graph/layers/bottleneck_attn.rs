//! timm's `BottleneckAttn` (Bottleneck Transformers): multi-head self-attention over a whole
//! feature map of a fixed size, with the 2-D relative-position logits of `PosEmbedRel`
//! (`height_rel`, `width_rel`), then an optional 2x2 average pool for stride 2.

use super::{reshape, split, transpose, Conv};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// `BottleneckAttn`'s arguments (`self_attn_kwargs`), resolved for its input channels.
#[derive(Debug, Clone)]
pub struct BottleneckAttnCfg {
    pub dim: usize,
    pub dim_out: usize,
    pub feat_size: (usize, usize),
    pub stride: usize,
    pub num_heads: usize,
    pub dim_head_qk: usize,
    pub qkv_bias: bool,
    pub scale_pos_embed: bool,
}

impl BottleneckAttnCfg {
    /// `dim_head or make_divisible(dim_out * qk_ratio, 8) // num_heads`, as timm.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        dim_out: Option<usize>,
        feat_size: (usize, usize),
        stride: usize,
        num_heads: usize,
        dim_head: Option<usize>,
        qk_ratio: f64,
        qkv_bias: bool,
        scale_pos_embed: bool,
    ) -> Result<Self> {
        let dim_out = dim_out.unwrap_or(dim);
        if num_heads == 0 || !dim_out.is_multiple_of(num_heads) {
            return Err(Error::invalid_model(format!(
                "BottleneckAttn: {dim_out} channels are not a multiple of {num_heads} heads"
            )));
        }
        let dim_head_qk = dim_head
            .filter(|&d| d > 0)
            .unwrap_or(super::make_divisible(dim_out as f64 * qk_ratio, 8, 0.9) / num_heads);
        Ok(BottleneckAttnCfg {
            dim,
            dim_out,
            feat_size,
            stride,
            num_heads,
            dim_head_qk,
            qkv_bias,
            scale_pos_embed,
        })
    }
}

/// `rel_logits_1d` along both axes of `PosEmbedRel`, for queries `q` `[M, bh, bw, d]` (one
/// block of `bh x bw` queries each) against keys in a `wh x ww` window: `[M, bh, bw, wh, ww]`
/// with `q[y, x] · height_rel[y' - y + wh - 1] + q[y, x] · width_rel[x' - x + ww - 1]`, which is
/// what timm's pad-and-reshape shift computes. The gathers run on the parameters in the graph.
pub fn rel_logits_2d(
    b: &mut Builder,
    q: &Value,
    height_rel: &Value,
    width_rel: &Value,
    block: (usize, usize),
    win: (usize, usize),
) -> Value {
    // Relative embeddings per (query row, key row): R[i, j] = rel[j - i + win - 1].
    let table = |b: &mut Builder, rel: &Value, n: usize, w: usize| {
        let idx: Vec<i64> = (0..n)
            .flat_map(|i| (0..w).map(move |j| (j + w - 1 - i) as i64))
            .collect();
        let idx = b.const_i64(idx, &[n as i64, w as i64]);
        let g = b.op("Gather", &[rel, &idx], vec![("axis", Attr::Int(0))]);
        transpose(b, &g, &[0, 2, 1]) // [n, d, w]
    };
    let rh = table(b, height_rel, block.0, win.0);
    let rw = table(b, width_rel, block.1, win.1);
    // [M, bh, bw, d] @ [bh, d, wh]: the batch dims (M, bh) broadcast against (bh).
    let lh = b.op("MatMul", &[q, &rh], vec![]);
    let ax = b.ints(&[-1]);
    let lh = b.op("Unsqueeze", &[&lh, &ax], vec![]); // [M, bh, bw, wh, 1]
    let ax = b.ints(&[-2]);
    let q5 = b.op("Unsqueeze", &[q, &ax], vec![]); // [M, bh, bw, 1, d]
    let lw = b.op("MatMul", &[&q5, &rw], vec![]); // [M, bh, bw, 1, ww]
    b.op("Add", &[&lh, &lw], vec![])
}

/// `BottleneckAttn` on an NCHW map (`qkv`, `pos_embed.height_rel`, `pos_embed.width_rel` in
/// the current scope). The map must be `feat_size`; the graph's reshapes fix it.
pub fn bottleneck_attn(b: &mut Builder, x: &Value, c: &BottleneckAttnCfg) -> Result<Value> {
    b.fix_input_size();
    let (nh, dqk) = (c.num_heads, c.dim_head_qk);
    let dv = c.dim_out / nh;
    let (h, w) = c.feat_size;
    let (qk_out, v_out) = (nh * dqk, nh * dv);
    let scale = (dqk as f32).powf(-0.5);
    let conv = Conv::new(c.dim, 2 * qk_out + v_out, 1)
        .bias(c.qkv_bias)
        .init(Init::TruncNormal((c.dim as f32).powf(-0.5)));
    let qkv = super::conv2d(&mut b.scope("qkv"), x, conv)?;
    let parts = split(b, &qkv, 1, &[qk_out, qk_out, v_out]);
    let hw = (h * w) as i64;
    let q = reshape(b, &parts[0], &[-1, dqk as i64, hw]);
    let q = transpose(b, &q, &[0, 2, 1]); // [B·nh, HW, dqk]
    let k = reshape(b, &parts[1], &[-1, dqk as i64, hw]);
    let v = reshape(b, &parts[2], &[-1, dv as i64, hw]);
    let v = transpose(b, &v, &[0, 2, 1]);

    let (hr, wr) = {
        let pe = &mut b.scope("pos_embed");
        let hr = pe.param("height_rel", &[2 * h - 1, dqk], Init::TruncNormal(scale))?;
        (
            hr,
            pe.param("width_rel", &[2 * w - 1, dqk], Init::TruncNormal(scale))?,
        )
    };
    let q4 = reshape(b, &q, &[-1, h as i64, w as i64, dqk as i64]);
    let rel = rel_logits_2d(b, &q4, &hr, &wr, (h, w), (h, w));
    let rel = reshape(b, &rel, &[-1, hw, hw]);

    let qk = b.op("MatMul", &[&q, &k], vec![]);
    let logits = if c.scale_pos_embed {
        let s = b.op("Add", &[&qk, &rel], vec![]);
        super::scale(b, &s, scale)
    } else {
        let s = super::scale(b, &qk, scale);
        b.op("Add", &[&s, &rel], vec![])
    };
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&p, &v], vec![]); // [B·nh, HW, dv]
    let y = transpose(b, &y, &[0, 2, 1]);
    let y = reshape(b, &y, &[-1, v_out as i64, h as i64, w as i64]);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&y, s);
    }
    if c.stride == 2 {
        return super::pool::Pool2d::new(2, 2, 0).avg(b, &y, v_out);
    }
    Ok(y)
}
