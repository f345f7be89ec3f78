//! timm's `LambdaLayer` (LambdaNetworks): a content lambda (softmaxed keys times values) and a
//! position lambda, either the local `conv_lambda` (a 3-D conv of radius `r`, i.e. one r x r
//! conv per value channel) or, with `r=None`, a relative-position embedding `pos_emb` over a
//! fixed feature size. `u` is 1, as in timm.

use super::{batch_norm, reshape, split, transpose, Conv};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// `LambdaLayer`'s arguments, resolved for its input channels.
#[derive(Debug, Clone)]
pub struct LambdaCfg {
    pub dim: usize,
    pub dim_out: usize,
    pub stride: usize,
    pub num_heads: usize,
    pub dim_qk: usize,
    /// `Some(r)`: `conv_lambda`; `None`: `pos_emb` at `feat_size`.
    pub r: Option<usize>,
    pub feat_size: Option<(usize, usize)>,
    pub qkv_bias: bool,
}

impl LambdaCfg {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        dim_out: Option<usize>,
        feat_size: Option<(usize, usize)>,
        stride: usize,
        num_heads: usize,
        dim_head: Option<usize>,
        r: Option<usize>,
        qk_ratio: f64,
        qkv_bias: bool,
    ) -> Result<Self> {
        let dim_out = dim_out.unwrap_or(dim);
        if num_heads == 0 || !dim_out.is_multiple_of(num_heads) {
            return Err(Error::invalid_model(format!(
                "LambdaLayer: {dim_out} channels are not a multiple of {num_heads} heads"
            )));
        }
        if r.is_none() && feat_size.is_none() {
            return Err(Error::invalid_model(
                "LambdaLayer with r=None needs a feature size (img_size)",
            ));
        }
        let dim_qk = dim_head
            .filter(|&d| d > 0)
            .unwrap_or(super::make_divisible(dim_out as f64 * qk_ratio, 8, 0.9) / num_heads);
        Ok(LambdaCfg {
            dim,
            dim_out,
            stride,
            num_heads,
            dim_qk,
            r,
            feat_size,
            qkv_bias,
        })
    }
}

/// `LambdaLayer` on an NCHW map (`qkv`, `norm_q`, `norm_v`, `conv_lambda` or `pos_emb`).
pub fn lambda_layer(b: &mut Builder, x: &Value, c: &LambdaCfg) -> Result<Value> {
    if c.feat_size.is_some() && c.r.is_none() {
        b.fix_input_size();
    }
    let (nh, k) = (c.num_heads, c.dim_qk);
    let v_dim = c.dim_out / nh;
    let conv = Conv::new(c.dim, nh * k + k + v_dim, 1)
        .bias(c.qkv_bias)
        .init(Init::TruncNormal((c.dim as f32).powf(-0.5)));
    let qkv = super::conv2d(&mut b.scope("qkv"), x, conv)?;
    let parts = split(b, &qkv, 1, &[nh * k, k, v_dim]);
    let q = batch_norm(&mut b.scope("norm_q"), &parts[0], nh * k, 1e-5)?;
    let q = reshape(b, &q, &[0, nh as i64, k as i64, -1]);
    let q = transpose(b, &q, &[0, 1, 3, 2]); // [B, nh, M, K]
    let v_map = batch_norm(&mut b.scope("norm_v"), &parts[2], v_dim, 1e-5)?; // [B, V, H, W]
    let v = reshape(b, &v_map, &[0, v_dim as i64, -1]);
    let v = transpose(b, &v, &[0, 2, 1]); // [B, M, V]
    let kk = reshape(b, &parts[1], &[0, k as i64, -1]);
    let kk = b.op("Softmax", &[&kk], vec![("axis", Attr::Int(-1))]); // [B, K, M]

    let content_lam = b.op("MatMul", &[&kk, &v], vec![]); // [B, K, V]
    let ax1 = b.ints(&[1]);
    let cl = b.op("Unsqueeze", &[&content_lam, &ax1], vec![]);
    let content_out = b.op("MatMul", &[&q, &cl], vec![]); // [B, nh, M, V]

    let position_lam = match c.r {
        Some(r) => {
            // Conv3d(1, K, (r, r, 1)) over (H, W, V) is an r x r conv of every value channel.
            let w = b.param(
                "conv_lambda.weight",
                &[k, 1, r, r, 1],
                Init::TruncNormal((k as f32).powf(-0.5)),
            )?;
            let bias = b.param("conv_lambda.bias", &[k], Init::Zeros)?;
            let w = reshape(b, &w, &[k as i64, 1, r as i64, r as i64]);
            let per = reshape(b, &v_map, &[-1, 1, 0, 0]); // [B·V, 1, H, W]
            let pc = Conv::new(1, k, r).pad(super::Pad::Sym(r / 2)).bias(true);
            let pl = pc.emit(b, &per, &w, Some(&bias))?; // [B·V, K, H, W]
                                                         // -> [B, M, K, V]: flatten the map, put M first so a reshape can keep it.
            let pl = super::flatten(b, &pl, 2); // [B·V·K, M]
            let pl = transpose(b, &pl, &[1, 0]);
            let pl = reshape(b, &pl, &[0, -1, v_dim as i64, k as i64]); // [M, B, V, K]
            transpose(b, &pl, &[1, 0, 3, 2])
        }
        None => {
            let (fh, fw) = c.feat_size.unwrap_or((1, 1));
            let (rh, rw) = (2 * fh - 1, 2 * fw - 1);
            let pe = b.param("pos_emb", &[rh, rw, k], Init::TruncNormal(0.02))?;
            let pe = reshape(b, &pe, &[(rh * rw) as i64, k as i64]);
            // rel_pos_indices: E[i, j] = pos_emb[yj - yi + fh - 1, xj - xi + fw - 1].
            let m = fh * fw;
            let mut idx = Vec::with_capacity(m * m);
            for i in 0..m {
                for j in 0..m {
                    let dy = (j / fw + fh - 1 - i / fw) as i64;
                    let dx = (j % fw + fw - 1 - i % fw) as i64;
                    idx.push(dy * rw as i64 + dx);
                }
            }
            let idx = b.const_i64(idx, &[m as i64, m as i64]);
            let e = b.op("Gather", &[&pe, &idx], vec![("axis", Attr::Int(0))]); // [M, M, K]
            let et = transpose(b, &e, &[0, 2, 1]); // [M, K, M]
            let v1 = b.op("Unsqueeze", &[&v, &ax1], vec![]); // [B, 1, M, V]
            b.op("MatMul", &[&et, &v1], vec![]) // [B, M, K, V]
        }
    };
    let pl = b.op("Unsqueeze", &[&position_lam, &ax1], vec![]); // [B, 1, M, K, V]
    let ax = b.ints(&[-2]);
    let q5 = b.op("Unsqueeze", &[&q, &ax], vec![]); // [B, nh, M, 1, K]
    let po = b.op("MatMul", &[&q5, &pl], vec![]);
    let po = b.op("Squeeze", &[&po, &ax], vec![]); // [B, nh, M, V]

    let y = b.op("Add", &[&content_out, &po], vec![]);
    let y = transpose(b, &y, &[0, 1, 3, 2]); // [B, nh, V, M]
    let shape = b.op("Shape", &[x], vec![]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&y, s);
    }
    if c.stride == 2 {
        return super::pool::Pool2d::new(2, 2, 0).avg(b, &y, c.dim_out);
    }
    Ok(y)
}
