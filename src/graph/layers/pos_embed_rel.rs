//! timm's relative-position biases (`timm.layers.pos_embed_rel`): `RelPosBias` (a table indexed
//! by `gen_relative_position_index`), `RelPosBiasTf` (the TF MaxViT table, re-indexed by one-hot
//! lookups) and `RelPosMlp` (an MLP over log-spaced relative coordinates, mode `cr`). Each is
//! evaluated at load into the `[1, heads, L, L]` bias its `get_bias()` returns; the index and
//! coordinate buffers timm does not save are computed here as timm computes them.

use crate::error::Result;
use crate::graph::{Builder, Init, Value};

/// `gen_relative_position_index(window)` flattened: `[L·L]`, `L = wh·ww`.
pub fn gen_relative_position_index((wh, ww): (usize, usize)) -> Vec<usize> {
    let l = wh * ww;
    let mut idx = Vec::with_capacity(l * l);
    for q in 0..l {
        let (qy, qx) = (q / ww, q % ww);
        for k in 0..l {
            let (ky, kx) = (k / ww, k % ww);
            let dy = qy + wh - 1 - ky;
            let dx = qx + ww - 1 - kx;
            idx.push(dy * (2 * ww - 1) + dx);
        }
    }
    idx
}

/// `[L·L]` rows of a `[vocab, heads]` table → the `[1, heads, L, L]` bias.
fn gather_heads(table: &[f32], heads: usize, idx: &[usize]) -> Vec<f32> {
    let ll = idx.len();
    let mut out = vec![0.0; heads * ll];
    for (p, &r) in idx.iter().enumerate() {
        for h in 0..heads {
            out[h * ll + p] = table[r * heads + h];
        }
    }
    out
}

/// `RelPosBias` (`relative_position_bias_table` `[(2wh-1)(2ww-1), heads]` in the current scope).
pub fn rel_pos_bias(b: &mut Builder, window: (usize, usize), heads: usize) -> Result<Value> {
    let (wh, ww) = window;
    let vocab = (2 * wh - 1) * (2 * ww - 1);
    let table = b.read(
        "relative_position_bias_table",
        &[vocab, heads],
        Init::TruncNormal(0.02),
    )?;
    let bias = gather_heads(&table, heads, &gen_relative_position_index(window));
    let l = wh * ww;
    b.tensor("relative_position_bias", bias, &[1, heads, l, l])
}

/// `RelPosBiasTf` (`relative_position_bias_table` `[heads, 2wh-1, 2ww-1]`): the bias of query
/// `(i, j)` and key `(x, y)` is `table[n, x - i + wh - 1, y - j + ww - 1]`, what timm's two
/// one-hot einsums select.
pub fn rel_pos_bias_tf(b: &mut Builder, window: (usize, usize), heads: usize) -> Result<Value> {
    let (wh, ww) = window;
    let (vh, vw) = (2 * wh - 1, 2 * ww - 1);
    let table = b.read(
        "relative_position_bias_table",
        &[heads, vh, vw],
        Init::Normal(0.02),
    )?;
    let l = wh * ww;
    let mut bias = vec![0.0; heads * l * l];
    for n in 0..heads {
        for q in 0..l {
            let (qi, qj) = (q / ww, q % ww);
            for k in 0..l {
                let (kx, ky) = (k / ww, k % ww);
                let r = kx + wh - 1 - qi;
                let c = ky + ww - 1 - qj;
                bias[(n * l + q) * l + k] = table[(n * vh + r) * vw + c];
            }
        }
    }
    b.tensor("relative_position_bias", bias, &[1, heads, l, l])
}

/// `gen_relative_log_coords(window, mode='cr')`: `sign(d)·ln(1 + |d|)` for each offset, as
/// `[(2wh-1)·(2ww-1), 2]`.
pub fn gen_relative_log_coords_cr((wh, ww): (usize, usize)) -> Vec<f32> {
    // ln(1) = 0 at d = 0, so Rust's signum(0) = 1 gives timm's sign(0) · 0.
    let f = |d: i64| (d as f32).signum() * (1.0 + (d as f32).abs()).ln();
    let mut out = Vec::new();
    for dy in -(wh as i64 - 1)..wh as i64 {
        for dx in -(ww as i64 - 1)..ww as i64 {
            out.push(f(dy));
            out.push(f(dx));
        }
    }
    out
}

/// `RelPosMlp` in timm's default mode `cr` (`mlp.fc1`: 2 → hidden, ReLU, `mlp.fc2`: hidden →
/// heads, both with bias; no output gain), evaluated at load.
pub fn rel_pos_mlp(
    b: &mut Builder,
    window: (usize, usize),
    heads: usize,
    hidden: usize,
) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let (w1, b1, w2, b2) = {
        let m = &mut b.scope("mlp");
        let w1 = m.scope("fc1").read("weight", &[hidden, 2], init)?;
        let b1 = m.scope("fc1").read("bias", &[hidden], Init::Zeros)?;
        let w2 = m.scope("fc2").read("weight", &[heads, hidden], init)?;
        let b2 = m.scope("fc2").read("bias", &[heads], Init::Zeros)?;
        (w1, b1, w2, b2)
    };
    let coords = gen_relative_log_coords_cr(window);
    let vocab = coords.len() / 2;
    let mut table = vec![0.0f32; vocab * heads];
    let mut act = vec![0.0f32; hidden];
    for v in 0..vocab {
        let (cy, cx) = (coords[2 * v], coords[2 * v + 1]);
        for (j, a) in act.iter_mut().enumerate() {
            *a = (w1[2 * j] * cy + w1[2 * j + 1] * cx + b1[j]).max(0.0);
        }
        for h in 0..heads {
            let row = &w2[h * hidden..(h + 1) * hidden];
            let s: f64 = row
                .iter()
                .zip(&act)
                .map(|(&w, &a)| w as f64 * a as f64)
                .sum();
            table[v * heads + h] = s as f32 + b2[h];
        }
    }
    let bias = gather_heads(&table, heads, &gen_relative_position_index(window));
    let l = window.0 * window.1;
    b.tensor("relative_position_bias", bias, &[1, heads, l, l])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_position_index_matches_timm_for_a_2x3_window() {
        // timm: gen_relative_position_index((2, 3))[0] and [5] (first and last query).
        let idx = gen_relative_position_index((2, 3));
        assert_eq!(&idx[..6], &[7, 6, 5, 2, 1, 0]);
        assert_eq!(&idx[30..], &[14, 13, 12, 9, 8, 7]);
    }

    #[test]
    fn log_coords_are_signed_log1p() {
        let c = gen_relative_log_coords_cr((2, 2));
        assert_eq!(c.len(), 9 * 2);
        assert!((c[0] + 2f32.ln()).abs() < 1e-7 && (c[1] + 2f32.ln()).abs() < 1e-7);
        assert_eq!(&c[8..10], &[0.0, 0.0]);
    }
}
