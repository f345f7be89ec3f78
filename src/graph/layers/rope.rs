//! Rotary position embeddings as timm computes them (`timm/layers/pos_embed_sincos.py`): the
//! sin/cos tables of `RotaryEmbeddingCat` (EVA02, the SBB rope ViTs, Perception Encoder),
//! `RotaryEmbeddingDinoV3` and `RotaryEmbeddingMixed` (learned per-block, per-head frequencies),
//! built at load for one token grid (timm keeps them as non-persistent buffers, never in the
//! weights), and `apply_rot_embed_cat` in the graph.
//!
//! Tables are computed in f32 in timm's order of operations so they match its buffers to the
//! last bits that matter at 1e-4.

use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Value};

/// `_build_grid`'s coordinate type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GridType {
    /// Integer positions `0..s` plus `grid_offset` (EVA, rope ViTs, mixed).
    Index,
    /// 0.5-centred positions plus `grid_offset`, divided by the axis size, mapped to [-1, 1]
    /// (DINOv3, `normalize_coords='separate'`).
    Centered,
}

/// The coordinate grid of `_build_grid` for one feature shape.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeGrid {
    pub grid_type: GridType,
    /// `grid_indexing='xy'` (coordinate channels (x, y) instead of (row, col)).
    pub xy: bool,
    pub offset: f32,
    /// `ref_feat_shape` (EVA's rescale of positions onto the pretraining grid), as (h, w).
    pub ref_shape: Option<(usize, usize)>,
}

impl RopeGrid {
    /// Coordinates `[h·w, 2]` in row-major spatial order; channel order per `grid_indexing`.
    pub fn coords(&self, (h, w): (usize, usize)) -> Vec<[f32; 2]> {
        // 'xy' swaps the axes of feat_shape and ref_feat_shape, then meshgrid('xy') keeps the
        // spatial layout (h, w): channel 0 runs along the width.
        let (s0, s1) = if self.xy { (w, h) } else { (h, w) };
        let r = self
            .ref_shape
            .map(|(rh, rw)| if self.xy { (rw, rh) } else { (rh, rw) });
        let axis = |s: usize, r: Option<usize>| -> Vec<f32> {
            (0..s)
                .map(|i| {
                    let mut t = match self.grid_type {
                        GridType::Index => i as f32 + self.offset,
                        GridType::Centered => (i as f32 + 0.5 + self.offset) / s as f32,
                    };
                    if let Some(r) = r {
                        t = t / s as f32 * r as f32;
                    }
                    if self.grid_type == GridType::Centered {
                        t = 2.0 * t - 1.0;
                    }
                    t
                })
                .collect()
        };
        let t0 = axis(s0, r.map(|r| r.0));
        let t1 = axis(s1, r.map(|r| r.1));
        let mut out = Vec::with_capacity(h * w);
        for i in 0..h {
            for j in 0..w {
                out.push(if self.xy {
                    [t0[j], t1[i]]
                } else {
                    [t0[i], t1[j]]
                });
            }
        }
        out
    }
}

/// A sin/cos table pair `[.., L, head_dim]` in the layout `apply_rot_embed` expects.
#[derive(Debug, Clone)]
pub struct RopeTable {
    pub sin: Vec<f32>,
    pub cos: Vec<f32>,
    pub shape: Vec<usize>,
}

/// `_rope_layout`: interleaved `[f0, f0, f1, f1, ..]` or half `[f0, f1, .., f0, f1, ..]`, for
/// rows of `n` angles.
fn layout(angles: &[f32], n: usize, rotate_half: bool, f: fn(f64) -> f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(angles.len() * 2);
    for row in angles.chunks(n) {
        let v: Vec<f32> = row.iter().map(|&a| f(a as f64) as f32).collect();
        if rotate_half {
            out.extend_from_slice(&v);
            out.extend_from_slice(&v);
        } else {
            out.extend(v.iter().flat_map(|&x| [x, x]));
        }
    }
    out
}

fn table(angles: &[f32], n: usize, rotate_half: bool, shape: Vec<usize>) -> RopeTable {
    RopeTable {
        sin: layout(angles, n, rotate_half, f64::sin),
        cos: layout(angles, n, rotate_half, f64::cos),
        shape,
    }
}

fn check_dim(head_dim: usize) -> Result<usize> {
    if head_dim == 0 || !head_dim.is_multiple_of(4) {
        return Err(Error::invalid_model(format!(
            "rotary embeddings need a head dim divisible by 4, not {head_dim}"
        )));
    }
    Ok(head_dim / 4)
}

/// `RotaryEmbeddingCat(dim=head_dim, in_pixels=False, ...)`'s `get_embed()` for a grid:
/// `freq_bands(head_dim // 4, temperature)` times each coordinate; `[h·w, head_dim]`.
pub fn rotary_embedding_cat(
    head_dim: usize,
    temperature: f32,
    grid: &RopeGrid,
    feat: (usize, usize),
    rotate_half: bool,
) -> Result<RopeTable> {
    let nb = check_dim(head_dim)?;
    // freq_bands(step=1): 1 / temperature ** (arange(nb) / nb), in f32.
    let bands: Vec<f32> = (0..nb)
        .map(|i| 1.0 / temperature.powf(i as f32 / nb as f32))
        .collect();
    let coords = grid.coords(feat);
    let angles: Vec<f32> = coords
        .iter()
        .flat_map(|c| c.iter().flat_map(|&t| bands.iter().map(move |&f| t * f)))
        .collect();
    Ok(table(
        &angles,
        2 * nb,
        rotate_half,
        vec![coords.len(), head_dim],
    ))
}

/// `RotaryEmbeddingDinoV3(dim=head_dim, temperature)`'s `get_embed()`: periods
/// `temperature ** (2·i / (head_dim // 2))`, angles `2π·coord / period`; `[h·w, head_dim]`.
pub fn rotary_embedding_dinov3(
    head_dim: usize,
    temperature: f32,
    grid: &RopeGrid,
    feat: (usize, usize),
    rotate_half: bool,
) -> Result<RopeTable> {
    let nb = check_dim(head_dim)?;
    let periods: Vec<f32> = (0..nb)
        .map(|i| temperature.powf(2.0 * i as f32 / (head_dim / 2) as f32))
        .collect();
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let coords = grid.coords(feat);
    let angles: Vec<f32> = coords
        .iter()
        .flat_map(|c| {
            c.iter()
                .flat_map(|&t| periods.iter().map(move |&p| two_pi * t / p))
        })
        .collect();
    Ok(table(
        &angles,
        2 * nb,
        rotate_half,
        vec![coords.len(), head_dim],
    ))
}

/// `RotaryEmbeddingMixed.get_embed()` for one block: `freqs` is the learned `rope.freqs`
/// `[2, depth, heads, head_dim / 2]`; angles `t_x·fx + t_y·fy` per head, interleaved;
/// `[heads, h·w, head_dim]`.
pub fn rotary_embedding_mixed(
    freqs: &[f32],
    depth: usize,
    heads: usize,
    head_dim: usize,
    block: usize,
    grid: &RopeGrid,
    feat: (usize, usize),
) -> Result<RopeTable> {
    let half = head_dim / 2;
    check_dim(head_dim)?;
    if freqs.len() != 2 * depth * heads * half || block >= depth {
        return Err(Error::invalid_model(
            "rope.freqs does not match depth x heads x head_dim / 2",
        ));
    }
    let coords = grid.coords(feat);
    let at =
        |axis: usize, h: usize, k: usize| freqs[((axis * depth + block) * heads + h) * half + k];
    let mut angles = Vec::with_capacity(heads * coords.len() * half);
    for h in 0..heads {
        for c in &coords {
            for k in 0..half {
                angles.push(c[0] * at(0, h, k) + c[1] * at(1, h, k));
            }
        }
    }
    Ok(table(
        &angles,
        half,
        false,
        vec![heads, coords.len(), head_dim],
    ))
}

/// `rot` (interleaved: `[-x1, x0, -x3, x2, ..]`) or `rope_rotate_half` (`[-x_{d/2}.., x0..]`)
/// as a `[d, d]` signed permutation, so the rotation is one exact MatMul.
fn rotation_matrix(d: usize, half: bool) -> Vec<f32> {
    let mut m = vec![0.0f32; d * d];
    // out[j] = sign · x[src]: row src, column j of x @ M.
    for j in 0..d {
        let (src, sign) = if half {
            if j < d / 2 {
                (j + d / 2, -1.0)
            } else {
                (j - d / 2, 1.0)
            }
        } else if j % 2 == 0 {
            (j + 1, -1.0)
        } else {
            (j - 1, 1.0)
        };
        m[src * d + j] = sign;
    }
    m
}

/// The tables as graph constants. A table shared by every head (`[L, head_dim]`) runs as ONNX
/// Runtime's `RotaryEmbedding` on the token layout, so attention can stay fused; a per-head
/// table (`[heads, L, head_dim]`, `RotaryEmbeddingMixed`) as `x·cos + (x @ rot)·sin`.
pub struct RopeConsts {
    form: Form,
    /// Leading tokens (class, registers) that pass unrotated.
    prefix: usize,
}

enum Form {
    Fused(Fused),
    Explicit { sin: Value, cos: Value, rot: Value },
}

/// `RotaryEmbedding`'s caches `[prefix + L, head_dim / 2]` (cos 1, sin 0 over the prefix), its
/// position offset 0, and whether pairs are adjacent (`rot`) or half a head apart.
struct Fused {
    cos: Value,
    sin: Value,
    offset: Value,
    interleaved: bool,
}

impl Fused {
    /// The node on `x`: the token layout given `heads`, else `[N, H, L, head_dim]`.
    fn node(&self, b: &mut Builder, x: &Value, heads: Option<usize>) -> Value {
        let mut attrs = vec![("interleaved", Attr::Int(self.interleaved as i64))];
        if let Some(h) = heads {
            attrs.push(("num_heads", Attr::Int(h as i64)));
        }
        b.ms_op(
            "RotaryEmbedding",
            &[x, &self.offset, &self.cos, &self.sin],
            attrs,
        )
    }
}

impl RopeConsts {
    /// `half`: timm's `rotate_half` layout; `prefix`: tokens before the patches left unrotated.
    pub fn new(b: &mut Builder, t: RopeTable, half: bool, prefix: usize) -> RopeConsts {
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        let d = *t.shape.last().unwrap_or(&0);
        let form = match fused_caches(&t, half, prefix) {
            Some((cos, sin)) => {
                let rows = [(prefix + t.shape[0]) as i64, (d / 2) as i64];
                Form::Fused(Fused {
                    cos: b.const_f32(cos, &rows),
                    sin: b.const_f32(sin, &rows),
                    offset: b.ints(&[0]),
                    interleaved: !half,
                })
            }
            None => Form::Explicit {
                sin: b.const_f32(t.sin, &dims),
                cos: b.const_f32(t.cos, &dims),
                rot: b.const_f32(rotation_matrix(d, half), &[d as i64, d as i64]),
            },
        };
        RopeConsts { form, prefix }
    }

    /// Whether [`RopeConsts::apply_tokens`] can rotate the token layout.
    pub fn on_tokens(&self) -> bool {
        matches!(self.form, Form::Fused { .. })
    }

    /// timm's rotation (`apply_rot_embed_cat` after the prefix) of `[N, L, heads·head_dim]`;
    /// `None` where only the head layout is possible.
    pub fn apply_tokens(&self, b: &mut Builder, x: &Value, heads: usize) -> Option<Value> {
        match &self.form {
            Form::Fused(f) => Some(f.node(b, x, Some(heads))),
            Form::Explicit { .. } => None,
        }
    }

    /// The same rotation of `[N, H, L, head_dim]`.
    pub fn apply_heads(&self, b: &mut Builder, x: &Value) -> Value {
        match &self.form {
            Form::Fused(f) => f.node(b, x, None),
            Form::Explicit { sin, cos, rot } => {
                // EVA: `torch.cat([q[:, :, :npt], apply_rot_embed_cat(q[:, :, npt:], rope)], 2)`.
                let rotate = |b: &mut Builder, x: &Value| {
                    let xc = b.op("Mul", &[x, cos], vec![]);
                    let xr = b.op("MatMul", &[x, rot], vec![]);
                    let xs = b.op("Mul", &[&xr, sin], vec![]);
                    b.op("Add", &[&xc, &xs], vec![])
                };
                if self.prefix == 0 {
                    return rotate(b, x);
                }
                let head = super::slice(b, x, 2, 0, self.prefix as i64);
                let rest = super::slice(b, x, 2, self.prefix as i64, i64::MAX);
                let rest = rotate(b, &rest);
                super::concat(b, &[&head, &rest], 2)
            }
        }
    }
}

/// `RotaryEmbedding`'s cos / sin caches for a table shared by every head, `None` for a per-head
/// table or one whose rotated pairs do not share an angle (the layouts [`layout`] writes do).
fn fused_caches(t: &RopeTable, half: bool, prefix: usize) -> Option<(Vec<f32>, Vec<f32>)> {
    let [l, d] = t.shape[..] else { return None };
    if d % 2 != 0 || t.sin.len() != l * d || t.cos.len() != l * d {
        return None;
    }
    let pair = |i: usize| {
        if half {
            (i, i + d / 2)
        } else {
            (2 * i, 2 * i + 1)
        }
    };
    let (mut cos, mut sin) = (vec![1.0; prefix * d / 2], vec![0.0; prefix * d / 2]);
    for row in 0..l {
        for i in 0..d / 2 {
            let (a, z) = pair(i);
            let (c, s) = (&t.cos[row * d..], &t.sin[row * d..]);
            if c[a] != c[z] || s[a] != s[z] {
                return None;
            }
            cos.push(c[a]);
            sin.push(s[a]);
        }
    }
    Some((cos, sin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_tables_become_rotary_caches_with_unrotated_prefix_rows() {
        let angles = [0.1f32, 0.2, 0.3, 0.4];
        for half in [true, false] {
            let t = table(&angles, 2, half, vec![2, 4]);
            let (cos, sin) = fused_caches(&t, half, 1).unwrap();
            // Prefix row: cos 1, sin 0; then one angle per rotated pair, position by position.
            let want: Vec<f32> = [0.0f32, 0.0].iter().chain(&angles).copied().collect();
            let cos_want: Vec<f32> = want.iter().map(|&a| (a as f64).cos() as f32).collect();
            let sin_want: Vec<f32> = want.iter().map(|&a| (a as f64).sin() as f32).collect();
            assert_eq!(cos, cos_want, "half={half}");
            assert_eq!(sin, sin_want, "half={half}");
        }
        // Per-head tables (RotaryEmbeddingMixed) keep the explicit form.
        let t = table(&[0.1; 8], 2, false, vec![2, 2, 4]);
        assert!(fused_caches(&t, false, 0).is_none());
    }

    #[test]
    fn xy_grid_swaps_channels_but_keeps_row_major_positions() {
        let g = RopeGrid {
            grid_type: GridType::Index,
            xy: true,
            offset: 0.0,
            ref_shape: None,
        };
        let c = g.coords((2, 3));
        assert_eq!(c[1], [1.0, 0.0]);
        assert_eq!(c[3], [0.0, 1.0]);
        let ij = RopeGrid { xy: false, ..g };
        assert_eq!(ij.coords((2, 3))[1], [0.0, 1.0]);
    }

    #[test]
    fn ref_feat_shape_rescales_positions_onto_the_reference_grid() {
        let g = RopeGrid {
            grid_type: GridType::Index,
            xy: false,
            offset: 0.0,
            ref_shape: Some((4, 8)),
        };
        let c = g.coords((2, 2));
        assert_eq!(c[3], [2.0, 4.0]);
    }

    #[test]
    fn centered_grid_spans_minus_one_to_one() {
        let g = RopeGrid {
            grid_type: GridType::Centered,
            xy: false,
            offset: 0.0,
            ref_shape: None,
        };
        let c = g.coords((2, 4));
        assert_eq!(c[0], [-0.5, -0.75]);
        assert_eq!(c[7], [0.5, 0.75]);
    }

    #[test]
    fn rotation_matrices_are_timms_rot_and_rotate_half() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let apply = |m: &[f32]| -> Vec<f32> {
            (0..4)
                .map(|j| (0..4).map(|i| x[i] * m[i * 4 + j]).sum())
                .collect()
        };
        assert_eq!(apply(&rotation_matrix(4, false)), [-2.0, 1.0, -4.0, 3.0]);
        assert_eq!(apply(&rotation_matrix(4, true)), [-3.0, -4.0, 1.0, 2.0]);
    }
}
