//! The learned attention bias over absolute coordinate offsets of the LeViT-style attentions in
//! timm (EfficientFormer's `Attention`, EfficientFormerV2's `Attention2d` and
//! `Attention2dDownsample`): `attention_biases[:, attention_bias_idxs]`, gathered at load.

use crate::error::Result;
use crate::graph::{Builder, Init, Value};

/// `attention_biases` `[heads, H·W]` (current scope) gathered to `[heads, Nq, H·W]`: queries on
/// the `res` grid every `q_stride` positions (from 0), keys on every position, the offset
/// `|q_y - k_y| · W + |q_x - k_x|` as timm's index buffer. The buffer itself (saved by some
/// models) is computed here, so it is marked as read.
pub fn offset_attention_bias(
    b: &mut Builder,
    heads: usize,
    res: (usize, usize),
    q_stride: usize,
) -> Result<Value> {
    let nk = res.0 * res.1;
    let table = b.read("attention_biases", &[heads, nk], Init::Zeros)?;
    b.ignore_weight("attention_bias_idxs");
    let q: Vec<(usize, usize)> = (0..res.0)
        .step_by(q_stride)
        .flat_map(|y| (0..res.1).step_by(q_stride).map(move |x| (y, x)))
        .collect();
    let mut data = Vec::with_capacity(heads * q.len() * nk);
    for h in 0..heads {
        for &(qy, qx) in &q {
            for ky in 0..res.0 {
                for kx in 0..res.1 {
                    data.push(table[h * nk + qy.abs_diff(ky) * res.1 + qx.abs_diff(kx)]);
                }
            }
        }
    }
    b.tensor("attention_biases", data, &[heads, q.len(), nk])
}
