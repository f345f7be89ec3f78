//! timm's `resample_abs_pos_embed`: a learned position embedding `[1, prefix + gh·gw, D]`
//! resampled to another token grid, either once at load (a fixed other input size, as timm's
//! `img_size=` argument does through the checkpoint filter) or in the graph for every input
//! (`dynamic_img_size=True`).
//!
//! The load-time path is an exact port of PyTorch's `F.interpolate` for the modes timm uses
//! (bicubic and bilinear, with or without `antialias`, `align_corners`). PyTorch's antialiased
//! kernels are not its plain ones: they use a = -0.5 for the cubic (not -0.75), widen the support
//! by the scale when downsampling, and renormalise the weights over the taps inside the image
//! instead of replicating the edge.

use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Value};

/// `F.interpolate`'s `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    Bicubic,
    Bilinear,
}

/// How a position embedding is resampled (`interpolation`, `antialias`, `align_corners` of
/// `resample_abs_pos_embed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resample {
    pub mode: Interp,
    pub antialias: bool,
    pub align_corners: bool,
}

/// `resample_abs_pos_embed`'s defaults: bicubic with antialias.
impl Default for Resample {
    fn default() -> Self {
        Resample {
            mode: Interp::Bicubic,
            antialias: true,
            align_corners: false,
        }
    }
}

/// PyTorch's `area_pixel_compute_scale` for a size given (no scale factor).
fn scale(input: usize, output: usize, align_corners: bool) -> f64 {
    if align_corners {
        if output > 1 {
            (input as f64 - 1.0) / (output as f64 - 1.0)
        } else {
            0.0
        }
    } else {
        input as f64 / output as f64
    }
}

/// The antialiased kernels (`aa_filter` in PyTorch's UpSampleKernel.cpp).
fn aa_filter(mode: Interp, x: f64) -> f64 {
    let x = x.abs();
    match mode {
        Interp::Bilinear => (1.0 - x).max(0.0),
        Interp::Bicubic => {
            let a = -0.5;
            if x < 1.0 {
                ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * a
            } else {
                0.0
            }
        }
    }
}

/// PyTorch's plain cubic convolution (a = -0.75) for offsets in [0, 1] and [1, 2].
fn cubic1(x: f64) -> f64 {
    let a = -0.75;
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}
fn cubic2(x: f64) -> f64 {
    let a = -0.75;
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// The 1-D interpolation matrix `[output][input]` of `F.interpolate` along one axis.
fn weights_1d(input: usize, output: usize, r: &Resample) -> Vec<Vec<f64>> {
    let s = scale(input, output, r.align_corners);
    let mut m = vec![vec![0.0; input]; output];
    let last = input as i64 - 1;
    for (i, row) in m.iter_mut().enumerate() {
        if r.antialias {
            let interp = match r.mode {
                Interp::Bicubic => 4.0,
                Interp::Bilinear => 2.0,
            };
            let support = if s >= 1.0 {
                interp * 0.5 * s
            } else {
                interp * 0.5
            };
            let center = s * (i as f64 + 0.5);
            let inv = if s >= 1.0 { 1.0 / s } else { 1.0 };
            // C++ casts truncate toward zero.
            let lo = ((center - support + 0.5) as i64).max(0);
            let hi = ((center + support + 0.5) as i64).min(input as i64);
            let mut total = 0.0;
            for j in lo..hi {
                let w = aa_filter(r.mode, (j as f64 - center + 0.5) * inv);
                row[j as usize] = w;
                total += w;
            }
            if total != 0.0 {
                row.iter_mut().for_each(|w| *w /= total);
            }
            continue;
        }
        let src = if r.align_corners {
            s * i as f64
        } else {
            s * (i as f64 + 0.5) - 0.5
        };
        match r.mode {
            Interp::Bilinear => {
                let src = src.max(0.0);
                let i0 = (src as i64).min(last);
                let i1 = if i0 < last { i0 + 1 } else { i0 };
                let l1 = src - i0 as f64;
                row[i0 as usize] += 1.0 - l1;
                row[i1 as usize] += l1;
            }
            Interp::Bicubic => {
                let i0 = src.floor();
                let t = src - i0;
                let taps = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
                for (k, w) in taps.into_iter().enumerate() {
                    let j = (i0 as i64 - 1 + k as i64).clamp(0, last);
                    row[j as usize] += w;
                }
            }
        }
    }
    m
}

/// The 1-D interpolation matrix `[output][input]` of `F.interpolate` along one axis (for a
/// resize done in the graph as two MatMuls with fixed weights, e.g. an image rescaled to a
/// fixed size).
pub fn interp_matrix(input: usize, output: usize, r: &Resample) -> Vec<Vec<f64>> {
    weights_1d(input, output, r)
}

/// `F.interpolate(x, size=(h1, w1), mode, align_corners, antialias)` of a channels-last grid
/// `[h0, w0, C]` (the token layout), returning `[h1, w1, C]`.
pub fn interpolate_hwc(
    data: &[f32],
    (h0, w0): (usize, usize),
    c: usize,
    (h1, w1): (usize, usize),
    r: &Resample,
) -> Vec<f32> {
    let wh = weights_1d(h0, h1, r);
    let ww = weights_1d(w0, w1, r);
    // Height first, then width, as PyTorch's separable kernel.
    let mut tmp = vec![0.0f64; h1 * w0 * c];
    for (y, row) in wh.iter().enumerate() {
        for (i, &w) in row.iter().enumerate().filter(|(_, w)| **w != 0.0) {
            for x in 0..w0 {
                let src = &data[(i * w0 + x) * c..][..c];
                let dst = &mut tmp[(y * w0 + x) * c..][..c];
                dst.iter_mut()
                    .zip(src)
                    .for_each(|(d, s)| *d += w * *s as f64);
            }
        }
    }
    let mut out = vec![0.0f32; h1 * w1 * c];
    for y in 0..h1 {
        for (x, row) in ww.iter().enumerate() {
            let dst = &mut out[(y * w1 + x) * c..][..c];
            let mut acc = vec![0.0f64; c];
            for (j, &w) in row.iter().enumerate().filter(|(_, w)| **w != 0.0) {
                let src = &tmp[(y * w0 + j) * c..][..c];
                acc.iter_mut().zip(src).for_each(|(a, s)| *a += w * s);
            }
            dst.iter_mut().zip(acc).for_each(|(d, a)| *d = a as f32);
        }
    }
    out
}

/// `resample_abs_pos_embed` at load: `posemb` is `[1, prefix + old.0·old.1, dim]`; the prefix
/// rows are kept, the grid is resampled to `new`.
pub fn resample_abs_pos_embed(
    posemb: &[f32],
    dim: usize,
    old: (usize, usize),
    new: (usize, usize),
    num_prefix: usize,
    r: &Resample,
) -> Result<Vec<f32>> {
    if posemb.len() != (num_prefix + old.0 * old.1) * dim {
        return Err(Error::invalid_model(format!(
            "pos_embed has {} values, not the {} of a {}x{} grid of width {dim} with {num_prefix} prefix tokens",
            posemb.len(),
            (num_prefix + old.0 * old.1) * dim,
            old.0,
            old.1
        )));
    }
    if old == new {
        return Ok(posemb.to_vec());
    }
    let (prefix, grid) = posemb.split_at(num_prefix * dim);
    let mut out = prefix.to_vec();
    out.extend(interpolate_hwc(grid, old, dim, new, r));
    Ok(out)
}

/// `resample_abs_pos_embed` in the graph, for `dynamic_img_size`: `pos` (`[1, prefix +
/// old.0·old.1, dim]`) resampled with timm's defaults (antialiased bicubic) to the grid of
/// `grid_nchw` (`[N, dim, gh, gw]`, the patch embedding's output) — an ONNX `Resize` with
/// `cubic_coeff_a = -0.5`, `antialias` and `exclude_outside`, which is PyTorch's kernel.
pub fn resample_abs_pos_embed_dynamic(
    b: &mut Builder,
    pos: &Value,
    dim: usize,
    old: (usize, usize),
    num_prefix: usize,
    grid_nchw: &Value,
) -> Value {
    let d = dim as i64;
    let grid = if num_prefix > 0 {
        super::slice(b, pos, 1, num_prefix as i64, i64::MAX)
    } else {
        pos.clone()
    };
    let g = super::reshape(b, &grid, &[1, old.0 as i64, old.1 as i64, d]);
    let g = super::nhwc_to_nchw(b, &g);
    let hw = b.op(
        "Shape",
        &[grid_nchw],
        vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
    );
    let lead = b.ints(&[1, d]);
    let sizes = super::concat(b, &[&lead, &hw], 0);
    let none = b.none();
    let g = b.op(
        "Resize",
        &[&g, &none, &none, &sizes],
        vec![
            ("mode", Attr::Str("cubic".into())),
            ("cubic_coeff_a", Attr::Float(-0.5)),
            ("antialias", Attr::Int(1)),
            ("exclude_outside", Attr::Int(1)),
            (
                "coordinate_transformation_mode",
                Attr::Str("half_pixel".into()),
            ),
        ],
    );
    let g = super::nchw_to_tokens(b, &g, dim);
    if num_prefix == 0 {
        return g;
    }
    let prefix = super::slice(b, pos, 1, 0, num_prefix as i64);
    super::concat(b, &[&prefix, &g], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let x: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 * 0.37).collect();
        for r in [
            Resample::default(),
            Resample {
                mode: Interp::Bilinear,
                antialias: false,
                align_corners: true,
            },
        ] {
            let y = interpolate_hwc(&x, (3, 4), 2, (3, 4), &r);
            let d = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(d < 1e-5, "{r:?}: {d}");
        }
    }

    #[test]
    fn antialiased_weights_sum_to_one_and_widen_when_downsampling() {
        let w = weights_1d(14, 5, &Resample::default());
        for row in &w {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        // Scale 2.8: support 5.6 taps each side instead of 2.
        assert!(w[2].iter().filter(|v| **v != 0.0).count() > 4);
    }

    #[test]
    fn prefix_tokens_are_kept() {
        let pe: Vec<f32> = (0..(1 + 4) * 3).map(|i| i as f32).collect();
        let out = resample_abs_pos_embed(&pe, 3, (2, 2), (3, 3), 1, &Resample::default()).unwrap();
        assert_eq!(out.len(), (1 + 9) * 3);
        assert_eq!(&out[..3], &pe[..3]);
        assert!(resample_abs_pos_embed(&pe, 3, (3, 3), (2, 2), 1, &Resample::default()).is_err());
    }
}
