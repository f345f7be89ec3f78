//! timm's relative position biases (`timm.layers.pos_embed_rel`): `RelPosBias` (a learned
//! table indexed by relative offsets, Swin v1 / BEiT / MaxViT), `RelPosBiasTf` (the TF MaxViT
//! table, re-indexed by one-hot lookups) and `RelPosMlp` (an MLP of log-spaced relative
//! coordinates, Swin v2 'swin' and timm's 'cr'). The index and coordinates are buffers
//! timm does not save; both are computed here at load, and so is the bias itself (it depends on
//! the weights only), as a `[1, heads, L, L]` tensor for [`super::attention::Hooks::bias`].

use crate::error::{Error, Result};
use crate::graph::{Builder, Init, Value};

/// `gen_relative_position_index(q_size, class_token)`: for tokens `(i1, j1)`, `(i2, j2)` of an
/// `h × w` grid, `(i1 − i2 + h − 1)·(2w − 1) + (j1 − j2 + w − 1)`; with a class token the
/// grid is padded by one row / column pointing at the three extra table entries
/// (cls→token, token→cls, cls→cls). Row-major `[L, L]`.
pub fn gen_relative_position_index(h: usize, w: usize, class_token: bool) -> Vec<usize> {
    let n = h * w;
    let nrd = (2 * h - 1) * (2 * w - 1);
    let p = usize::from(class_token);
    let l = n + p;
    let mut idx = vec![0; l * l];
    for a in 0..n {
        for c in 0..n {
            let (i1, j1, i2, j2) = (a / w, a % w, c / w, c % w);
            idx[(a + p) * l + c + p] = (i1 + h - 1 - i2) * (2 * w - 1) + (j1 + w - 1 - j2);
        }
    }
    if class_token {
        idx[1..l].fill(nrd);
        for r in 1..l {
            idx[r * l] = nrd + 1;
        }
        idx[0] = nrd + 2;
    }
    idx
}

/// `RelPosBias.get_bias()` for an `h × w` window (`prefix_tokens` ≤ 1): the current scope's
/// `relative_position_bias_table` `[(2h−1)(2w−1) + 3·prefix, heads]` gathered at load.
pub fn rel_pos_bias(
    b: &mut Builder,
    window: (usize, usize),
    heads: usize,
    prefix_tokens: usize,
) -> Result<Value> {
    if prefix_tokens > 1 {
        return Err(Error::invalid_model(
            "RelPosBias supports at most one prefix token",
        ));
    }
    let (h, w) = window;
    let rows = (2 * h - 1) * (2 * w - 1) + 3 * prefix_tokens;
    let table = b.read(
        "relative_position_bias_table",
        &[rows, heads],
        Init::TruncNormal(0.02),
    )?;
    let idx = gen_relative_position_index(h, w, prefix_tokens > 0);
    let l = h * w + prefix_tokens;
    gather_bias(b, &table, &idx, l, heads, 0)
}

/// The bias `[1, heads, L + pad, L + pad]` from per-offset values `table` `[rows, heads]` and
/// the `[L, L]` index, zero-padded before the first row / column by `pad` (prefix tokens).
fn gather_bias(
    b: &mut Builder,
    table: &[f32],
    idx: &[usize],
    l: usize,
    heads: usize,
    pad: usize,
) -> Result<Value> {
    let lp = l + pad;
    let mut out = vec![0.0f32; heads * lp * lp];
    for (k, &r) in idx.iter().enumerate() {
        let (q, c) = (k / l + pad, k % l + pad);
        for hd in 0..heads {
            out[(hd * lp + q) * lp + c] = table.get(r * heads + hd).copied().unwrap_or(0.0);
        }
    }
    b.tensor("relative_position_bias", out, &[1, heads, lp, lp])
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

/// `RelPosMlp`'s coordinate modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelPosMlpMode {
    /// Swin v2: coordinates scaled to ±8, `log2`, sigmoid · 16 on the output, no fc2 bias.
    Swin,
    /// timm's `cr`: `sign · ln(1 + |c|)`, output as is.
    Cr,
}

/// `gen_relative_log_coords(win_size, pretrained_win_size, mode)`: `[(2h−1)(2w−1), 2]`.
pub fn gen_relative_log_coords(
    window: (usize, usize),
    pretrained: (usize, usize),
    mode: RelPosMlpMode,
) -> Vec<[f32; 2]> {
    let (h, w) = (window.0 as i64, window.1 as i64);
    let mut out = Vec::with_capacity(((2 * h - 1) * (2 * w - 1)) as usize);
    for dy in -(h - 1)..h {
        for dx in -(w - 1)..w {
            let mut c = [dy as f32, dx as f32];
            match mode {
                RelPosMlpMode::Swin => {
                    let base = if pretrained.0 > 0 { pretrained } else { window };
                    c[0] /= base.0 as f32 - 1.0;
                    c[1] /= base.1 as f32 - 1.0;
                    for v in &mut c {
                        let s = *v * 8.0;
                        *v = s.signum() * (1.0 + s.abs()).log2() / 3.0;
                    }
                }
                RelPosMlpMode::Cr => {
                    for v in &mut c {
                        *v = v.signum() * (1.0 + v.abs()).ln();
                    }
                }
            }
            // torch.sign(0) is 0 (f32::signum(0.0) is 1; the log term is 0 there anyway).
            out.push(c);
        }
    }
    out
}

/// `RelPosMlp.get_bias()` for an `h × w` window: the current scope's `mlp.fc1` (2 → hidden,
/// ReLU) and `mlp.fc2` (hidden → heads) evaluated at load on the log coordinates, gathered by
/// the relative position index, zero-padded for `prefix_tokens`.
pub fn rel_pos_mlp(
    b: &mut Builder,
    window: (usize, usize),
    heads: usize,
    hidden: usize,
    prefix_tokens: usize,
    mode: RelPosMlpMode,
) -> Result<Value> {
    let (h, w) = window;
    if mode == RelPosMlpMode::Swin && (h < 2 || w < 2) {
        return Err(Error::unsupported(
            "RelPosMlp 'swin' coordinates need a window of at least 2x2",
        ));
    }
    let w1 = b.read("mlp.fc1.weight", &[hidden, 2], Init::DefaultUniform)?;
    let b1 = b.read("mlp.fc1.bias", &[hidden], Init::Zeros)?;
    let w2 = b.read("mlp.fc2.weight", &[heads, hidden], Init::DefaultUniform)?;
    let b2 = match mode {
        RelPosMlpMode::Cr => b.read("mlp.fc2.bias", &[heads], Init::Zeros)?,
        RelPosMlpMode::Swin => vec![0.0; heads],
    };
    let coords = gen_relative_log_coords(window, (0, 0), mode);
    let table = coords_mlp(&coords, (&w1, &b1), (&w2, &b2), hidden, heads, mode);
    let idx = gen_relative_position_index(h, w, false);
    gather_bias(b, &table, &idx, h * w, heads, prefix_tokens)
}

/// A two-layer ReLU MLP (`fc1` 2 → hidden, `fc2` hidden → heads, weights as nn.Linear stores
/// them) evaluated on each coordinate pair; `16·sigmoid` on the output in [`RelPosMlpMode::Swin`].
/// `[coords, heads]`.
fn coords_mlp(
    coords: &[[f32; 2]],
    (w1, b1): (&[f32], &[f32]),
    (w2, b2): (&[f32], &[f32]),
    hidden: usize,
    heads: usize,
    mode: RelPosMlpMode,
) -> Vec<f32> {
    let mut table = Vec::with_capacity(coords.len() * heads);
    let mut hid = vec![0.0f32; hidden];
    for c in coords {
        for (j, v) in hid.iter_mut().enumerate() {
            *v = (w1[2 * j] * c[0] + w1[2 * j + 1] * c[1] + b1[j]).max(0.0);
        }
        for o in 0..heads {
            let y: f64 = hid
                .iter()
                .zip(&w2[o * hidden..])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            let y = y as f32 + b2[o];
            table.push(match mode {
                RelPosMlpMode::Swin => 16.0 / (1.0 + (-y).exp()),
                RelPosMlpMode::Cr => y,
            });
        }
    }
    table
}

/// Swin v2's continuous position bias (`swin_transformer_v2.WindowAttention`): the current
/// scope's `cpb_mlp` (`0`: 2 → 512 with bias, ReLU, `2`: 512 → heads, no bias) evaluated at
/// load on the log-spaced coordinates of the `h × w` window (normalised by
/// `pretrained_window` when its height is positive, each side by `max(size − 1, 1)`), gathered
/// by the relative-position index, `16·sigmoid` → `[1, heads, L, L]`.
pub fn cpb_mlp_bias(
    b: &mut Builder,
    window: (usize, usize),
    pretrained_window: (usize, usize),
    heads: usize,
) -> Result<Value> {
    const HIDDEN: usize = 512;
    let w1 = b.read("cpb_mlp.0.weight", &[HIDDEN, 2], Init::TruncNormal(0.02))?;
    let b1 = b.read("cpb_mlp.0.bias", &[HIDDEN], Init::Zeros)?;
    let w2 = b.read(
        "cpb_mlp.2.weight",
        &[heads, HIDDEN],
        Init::TruncNormal(0.02),
    )?;
    let (h, w) = window;
    let base = if pretrained_window.0 > 0 {
        pretrained_window
    } else {
        window
    };
    // timm divides by max(size - 1, 1): a 1-wide window keeps its single offset 0.
    let base = (base.0.max(2), base.1.max(2));
    let coords = gen_relative_log_coords(window, base, RelPosMlpMode::Swin);
    let zeros = vec![0.0; heads];
    let table = coords_mlp(
        &coords,
        (&w1, &b1),
        (&w2, &zeros),
        HIDDEN,
        heads,
        RelPosMlpMode::Swin,
    );
    let idx = gen_relative_position_index(h, w, false);
    gather_bias(b, &table, &idx, h * w, heads, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_position_index_matches_timm_for_a_2x3_grid_with_a_class_token() {
        // timm: gen_relative_position_index((2, 3), class_token=True); 15 offsets + 3.
        let idx = gen_relative_position_index(2, 3, true);
        assert_eq!(idx.len(), 49);
        assert_eq!(&idx[0..7], &[17, 15, 15, 15, 15, 15, 15]);
        assert_eq!(idx[7], 16);
        // token (0,0) with itself: (1)*(5) + 2 = 7; with (1,2): (0-1+1)*5 + (0-2+2) = 0.
        assert_eq!(idx[8], 7);
        assert_eq!(idx[7 + 6], 0);
    }

    #[test]
    fn relative_position_index_matches_timm_for_a_2x3_window() {
        // timm: gen_relative_position_index((2, 3))[0] and [5] (first and last query).
        let idx = gen_relative_position_index(2, 3, false);
        assert_eq!(&idx[..6], &[7, 6, 5, 2, 1, 0]);
        assert_eq!(&idx[30..], &[14, 13, 12, 9, 8, 7]);
    }

    #[test]
    fn log_coords_are_zero_at_the_centre_and_odd() {
        let c = gen_relative_log_coords((3, 3), (0, 0), RelPosMlpMode::Cr);
        assert_eq!(c.len(), 25);
        assert_eq!(c[12], [0.0, 0.0]);
        assert_eq!(c[0][0], -c[24][0]);
        assert!((c[24][0] - 3f32.ln()).abs() < 1e-6);
        let s = gen_relative_log_coords((3, 3), (0, 0), RelPosMlpMode::Swin);
        // 2 / 2 * 8 = 8 -> log2(9) / 3.
        assert!((s[24][1] - 9f32.log2() / 3.0).abs() < 1e-6);
    }
}
