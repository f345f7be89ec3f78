//! timm's `HaloAttn` (HaloNets): self-attention of each `block_size` block of queries over its
//! block plus a `halo_size` border of keys, with `PosEmbedRel`'s relative-position logits. The
//! overlapping key windows (timm's `pad` + `unfold`) are one conv with an identity kernel, so the
//! graph takes any map whose sides are multiples of the block size.

use super::bottleneck_attn::rel_logits_2d;
use super::{reshape, split, transpose, Conv};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// `HaloAttn`'s arguments, resolved for its input channels.
#[derive(Debug, Clone)]
pub struct HaloAttnCfg {
    pub dim: usize,
    pub dim_out: usize,
    pub stride: usize,
    pub num_heads: usize,
    pub dim_head_qk: usize,
    pub block_size: usize,
    pub halo_size: usize,
    pub qkv_bias: bool,
    pub avg_down: bool,
    pub scale_pos_embed: bool,
}

impl HaloAttnCfg {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        dim_out: Option<usize>,
        stride: usize,
        num_heads: usize,
        dim_head: Option<usize>,
        block_size: usize,
        halo_size: usize,
        qk_ratio: f64,
        qkv_bias: bool,
        avg_down: bool,
        scale_pos_embed: bool,
    ) -> Result<Self> {
        let dim_out = dim_out.unwrap_or(dim);
        if num_heads == 0 || !dim_out.is_multiple_of(num_heads) || !matches!(stride, 1 | 2) {
            return Err(Error::invalid_model(format!(
                "HaloAttn: {dim_out} channels, {num_heads} heads, stride {stride} (timm asserts \
                 a multiple of the heads and stride 1 or 2)"
            )));
        }
        if block_size == 0 {
            return Err(Error::invalid_model("HaloAttn: block_size 0"));
        }
        let dim_head_qk = dim_head
            .filter(|&d| d > 0)
            .unwrap_or(super::make_divisible(dim_out as f64 * qk_ratio, 8, 0.9) / num_heads);
        Ok(HaloAttnCfg {
            dim,
            dim_out,
            stride,
            num_heads,
            dim_head_qk,
            block_size,
            halo_size,
            qkv_bias,
            avg_down,
            scale_pos_embed,
        })
    }
}

/// One dimension of `x`'s shape as a 1-element int64 tensor.
fn dim_of(b: &mut Builder, x: &Value, i: i64) -> Value {
    b.op(
        "Shape",
        &[x],
        vec![("start", Attr::Int(i)), ("end", Attr::Int(i + 1))],
    )
}

/// `HaloAttn` on an NCHW map (`q`, `kv`, `pos_embed.height_rel`, `pos_embed.width_rel`).
pub fn halo_attn(b: &mut Builder, x: &Value, c: &HaloAttnCfg) -> Result<Value> {
    let (nh, dqk, bs, halo) = (c.num_heads, c.dim_head_qk, c.block_size, c.halo_size);
    let dv = c.dim_out / nh;
    let (qk_out, v_out) = (nh * dqk, nh * dv);
    let win = bs + 2 * halo;
    let scale = (dqk as f32).powf(-0.5);
    // A stride the blocks cannot take is an average pool after the attention.
    let use_avg_pool = c.stride > 1 && (c.avg_down || !bs.is_multiple_of(c.stride));
    let block_stride = if c.stride > 1 && !use_avg_pool {
        c.stride
    } else {
        1
    };
    let bq = bs / block_stride;
    let init = Init::TruncNormal((c.dim as f32).powf(-0.5));

    // Queries: [B, nh·dqk, H', W'] -> blocks [B, nh, nb, bq², dqk] (SpaceToDepth's channel
    // order is (pixel in block, channel)).
    let qc = Conv::new(c.dim, qk_out, 1)
        .stride(block_stride)
        .bias(c.qkv_bias)
        .init(init);
    let q = super::conv2d(&mut b.scope("q"), x, qc)?;
    let qs = b.op(
        "SpaceToDepth",
        &[&q],
        vec![("blocksize", Attr::Int(bq as i64))],
    );
    let p = (bq * bq) as i64;
    let qb = reshape(b, &qs, &[0, p, nh as i64, dqk as i64, -1]);
    let qb = transpose(b, &qb, &[0, 2, 4, 1, 3]);

    // Keys and values: timm reshapes the kv channels as (head, dqk + dv) and splits per head.
    let dkv = dqk + dv;
    let kvc = Conv::new(c.dim, nh * dkv, 1).bias(c.qkv_bias).init(init);
    let kv = super::conv2d(&mut b.scope("kv"), x, kvc)?;
    let flat = reshape(b, &kv, &[-1, 1, 0, 0]);
    let ww = win * win;
    let eye: Vec<f32> = (0..ww * ww)
        .map(|i| if i / ww == i % ww { 1.0 } else { 0.0 })
        .collect();
    let eye = b.const_f32(eye, &[ww as i64, 1, win as i64, win as i64]);
    let h = halo as i64;
    let unfold = b.op(
        "Conv",
        &[&flat, &eye],
        vec![
            ("kernel_shape", Attr::Ints(vec![win as i64; 2])),
            ("strides", Attr::Ints(vec![bs as i64; 2])),
            ("pads", Attr::Ints(vec![h, h, h, h])),
        ],
    ); // [B·nh·dkv, win², nbh, nbw]
    let nbh = dim_of(b, &unfold, 2);
    let nbw = dim_of(b, &unfold, 3);
    let nb = b.op("Mul", &[&nbh, &nbw], vec![]);
    let lead = b.ints(&[-1, nh as i64, dkv as i64, ww as i64]);
    let shape = super::concat(b, &[&lead, &nb], 0);
    let kvb = b.op("Reshape", &[&unfold, &shape], vec![]);
    let kvb = transpose(b, &kvb, &[0, 1, 4, 3, 2]); // [B, nh, nb, win², dkv]
    let kv = split(b, &kvb, -1, &[dqk, dv]);

    let (hr, wr) = {
        let pe = &mut b.scope("pos_embed");
        let hr = pe.param("height_rel", &[2 * win - 1, dqk], Init::TruncNormal(scale))?;
        (
            hr,
            pe.param("width_rel", &[2 * win - 1, dqk], Init::TruncNormal(scale))?,
        )
    };
    let kt = transpose(b, &kv[0], &[0, 1, 2, 4, 3]);
    let qk = b.op("MatMul", &[&qb, &kt], vec![]); // [B, nh, nb, bq², win²]
    let q4 = reshape(b, &qb, &[-1, bq as i64, bq as i64, dqk as i64]);
    let rel = rel_logits_2d(b, &q4, &hr, &wr, (bq, bq), (win, win));
    let qk_shape = b.op("Shape", &[&qk], vec![]);
    let rel = b.op("Reshape", &[&rel, &qk_shape], vec![]);
    let logits = if c.scale_pos_embed {
        let s = b.op("Add", &[&qk, &rel], vec![]);
        super::scale(b, &s, scale)
    } else {
        let s = super::scale(b, &qk, scale);
        b.op("Add", &[&s, &rel], vec![])
    };
    let attn = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&attn, &kv[1]], vec![]); // [B, nh, nb, bq², dv]

    // Fold: [B, bq², nh·dv, nbh, nbw] and DepthToSpace (DCR undoes SpaceToDepth's order).
    let y = transpose(b, &y, &[0, 3, 1, 4, 2]);
    let qh = dim_of(b, &qs, 2);
    let qw = dim_of(b, &qs, 3);
    let lead = b.ints(&[0, p * v_out as i64]);
    let shape = super::concat(b, &[&lead, &qh, &qw], 0);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let y = b.op(
        "DepthToSpace",
        &[&y],
        vec![
            ("blocksize", Attr::Int(bq as i64)),
            ("mode", Attr::Str("DCR".into())),
        ],
    );
    if let Some(s) = b.spatial(&q).cloned() {
        b.assign_spatial(&y, s);
    }
    if use_avg_pool {
        return super::pool::Pool2d::new(2, 2, 0).avg(b, &y, v_out);
    }
    Ok(y)
}
