//! Window attention plumbing of the Swin family (timm's `swin_transformer*.py`): window
//! partition / reverse and the cyclic shift on channels-last `[N, H, W, C]` maps, patch merging's
//! 2×2 gather, and the buffers timm computes instead of saving — the relative-position index and
//! the shifted-window attention mask — computed at load exactly as timm computes them.
//!
//! Every map size here is static: the masks depend on it, so these graphs take one input size.

use super::{concat, reshape, slice, transpose};
use crate::graph::{Attr, Builder, Value};

/// timm's `get_relative_position_index(win_h, win_w)`: for each pair of tokens `(i, j)` of a
/// window (row-major), the row of the `(2·wh−1)(2·ww−1)` bias table; `[L·L]`, `L = wh·ww`.
pub fn relative_position_index(wh: usize, ww: usize) -> Vec<usize> {
    let l = wh * ww;
    let mut idx = Vec::with_capacity(l * l);
    for i in 0..l {
        let (hi, wi) = ((i / ww) as i64, (i % ww) as i64);
        for j in 0..l {
            let (hj, wj) = ((j / ww) as i64, (j % ww) as i64);
            let dh = hi - hj + wh as i64 - 1;
            let dw = wi - wj + ww as i64 - 1;
            idx.push((dh * (2 * ww as i64 - 1) + dw) as usize);
        }
    }
    idx
}

/// Python's `range(n)[start:end]` for the negative-or-positive bounds timm's mask slices use.
fn py_range(start: i64, end: Option<i64>, n: usize) -> std::ops::Range<usize> {
    let n = n as i64;
    let fix = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
    let (s, e) = (fix(start), end.map_or(n, fix));
    s as usize..e.max(s) as usize
}

/// `SwinTransformerBlock.get_attn_mask` for a (padded) map `hw` split into `win` windows with
/// cyclic `shift`: `[nW, L, L]` with −100 between tokens of different regions, else 0. `None`
/// when there is no shift.
pub fn shift_attn_mask(
    hw: (usize, usize),
    win: (usize, usize),
    shift: (usize, usize),
) -> Option<Vec<f32>> {
    if shift == (0, 0) {
        return None;
    }
    // timm computes it on the map padded up to whole windows.
    let (h, w) = (hw.0.div_ceil(win.0) * win.0, hw.1.div_ceil(win.1) * win.1);
    let bounds = |ws: usize, s: usize| {
        let (ws, s) = (ws as i64, s as i64);
        [(0, Some(-ws)), (-ws, Some(-s)), (-s, None)]
    };
    let mut img = vec![0f32; h * w];
    let mut cnt = 0f32;
    for (hs, he) in bounds(win.0, shift.0) {
        for (ws, we) in bounds(win.1, shift.1) {
            // -0 is 0 in Python: a zero shift makes `(-s, None)` the whole axis.
            for r in py_range(hs, he, h) {
                for c in py_range(ws, we, w) {
                    img[r * w + c] = cnt;
                }
            }
            cnt += 1.0;
        }
    }
    let l = win.0 * win.1;
    let (nh, nw) = (h / win.0, w / win.1);
    let mut mask = Vec::with_capacity(nh * nw * l * l);
    for wy in 0..nh {
        for wx in 0..nw {
            let region = |t: usize| img[(wy * win.0 + t / win.1) * w + wx * win.1 + t % win.1];
            for i in 0..l {
                for j in 0..l {
                    mask.push(if region(j) - region(i) != 0.0 {
                        -100.0
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    Some(mask)
}

/// An int or an `[h, w]` pair (timm's `to_2tuple`) within the argument bounds.
pub fn int_pair(j: &serde_json::Value) -> Option<(usize, usize)> {
    let one = |j: &serde_json::Value| {
        j.as_u64()
            .filter(|n| (1..=crate::graph::args::MAX_INT).contains(n))
            .map(|n| n as usize)
    };
    match j {
        serde_json::Value::Array(hw) if hw.len() == 2 => one(&hw[0]).zip(one(&hw[1])),
        j => one(j).map(|n| (n, n)),
    }
}

/// timm's `resolve_stage_window_sizes` (model_args `window_size`): one window for all `n`
/// stages, an `(h, w)` pair for all, or one per stage (a list of two ints is one `(h, w)`).
pub fn resolve_stage_window_sizes(
    a: &crate::graph::args::Args,
    v: &serde_json::Value,
    n: usize,
) -> crate::error::Result<Vec<(usize, usize)>> {
    let bad = || {
        a.unsupported(
            "window_size",
            "expected an int, an [h, w] pair or one per stage",
        )
    };
    match v {
        serde_json::Value::Array(l) if l.len() != 2 || l[0].is_array() => {
            if l.len() != n {
                return Err(crate::error::Error::invalid_model(format!(
                    "model_args window_size has {} entries but the model has {n} stages",
                    l.len()
                )));
            }
            l.iter().map(|w| int_pair(w).ok_or_else(bad)).collect()
        }
        v => Ok(vec![int_pair(v).ok_or_else(bad)?; n]),
    }
}

/// Where a block's windows fall: timm's `_calc_window_shift` and the padded map.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowGeom {
    /// The block's map `(H, W)`.
    pub hw: (usize, usize),
    /// The window and the cyclic shift in use.
    pub win: (usize, usize),
    pub shift: (usize, usize),
}

impl WindowGeom {
    /// `_calc_window_shift`: unless `always_partition`, a window no smaller than the block's
    /// `input_resolution` `res` becomes the whole map and is not shifted.
    pub fn new(
        hw: (usize, usize),
        res: (usize, usize),
        win: (usize, usize),
        shift: (usize, usize),
        always_partition: bool,
    ) -> Self {
        if always_partition {
            return WindowGeom { hw, win, shift };
        }
        let clamp = |r: usize, w: usize, s: usize| if r <= w { (r, 0) } else { (w, s) };
        let (wh, sh) = clamp(res.0, win.0, shift.0);
        let (ww, sw) = clamp(res.1, win.1, shift.1);
        WindowGeom {
            hw,
            win: (wh, ww),
            shift: (sh, sw),
        }
    }

    /// The map padded to whole windows.
    pub fn padded(&self) -> (usize, usize) {
        (
            self.hw.0.div_ceil(self.win.0) * self.win.0,
            self.hw.1.div_ceil(self.win.1) * self.win.1,
        )
    }

    /// Tokens per window.
    pub fn area(&self) -> usize {
        self.win.0 * self.win.1
    }
}

/// [`relative_position_index`] as an int64 constant `[L·L]`.
pub fn rel_pos_index_const(b: &mut Builder, win: (usize, usize)) -> Value {
    let idx: Vec<i64> = relative_position_index(win.0, win.1)
        .into_iter()
        .map(|i| i as i64)
        .collect();
    let n = idx.len() as i64;
    b.const_i64(idx, &[n])
}

/// [`shift_attn_mask`] of a block as a constant `[nW, L, L]`; `None` without a shift.
pub fn shift_mask_const(b: &mut Builder, g: &WindowGeom) -> Option<Value> {
    let m = shift_attn_mask(g.hw, g.win, g.shift)?;
    let l = g.area() as i64;
    let n = m.len() as i64 / (l * l);
    Some(b.const_f32(m, &[n, l, l]))
}

/// `WindowAttention._get_rel_pos_bias`: the table `[(2wh−1)(2ww−1), heads]` gathered by the
/// index → `[1, heads, L, L]`.
pub fn rel_pos_bias(
    b: &mut Builder,
    table: &Value,
    index: &Value,
    heads: usize,
    win: (usize, usize),
) -> Value {
    let l = (win.0 * win.1) as i64;
    let g = b.op("Gather", &[table, index], vec![("axis", Attr::Int(0))]);
    let t = transpose(b, &g, &[1, 0]);
    reshape(b, &t, &[1, heads as i64, l, l])
}

/// `SwinTransformerBlock._attn` around a window attention `attn` (windows `[N·nW, L, C]` in and
/// out): cyclic shift, pad to whole windows, partition, attention, reverse, crop, shift back.
pub fn shifted_windows(
    b: &mut Builder,
    x: &Value,
    g: &WindowGeom,
    c: usize,
    attn: impl FnOnce(&mut Builder, &Value) -> crate::error::Result<Value>,
) -> crate::error::Result<Value> {
    let (h, w) = g.hw;
    let (sh, sw) = (g.shift.0 as i64, g.shift.1 as i64);
    let y = roll(b, x, -sh, 1, h);
    let y = roll(b, &y, -sw, 2, w);
    let hp = g.padded();
    let y = pad_hw_end(b, &y, hp.0 - h, hp.1 - w);
    let windows = window_partition(b, &y, hp, g.win, c);
    let out = attn(b, &windows)?;
    let mut y = window_reverse(b, &out, hp, g.win, c);
    if hp != g.hw {
        y = slice(b, &y, 1, 0, h as i64);
        y = slice(b, &y, 2, 0, w as i64);
    }
    let y = roll(b, &y, sh, 1, h);
    Ok(roll(b, &y, sw, 2, w))
}

/// `torch.roll(x, shift, dim=axis)` of an axis of static length `n` (a negative shift moves
/// elements towards the start).
pub fn roll(b: &mut Builder, x: &Value, shift: i64, axis: i64, n: usize) -> Value {
    let n = n as i64;
    let s = shift.rem_euclid(n);
    if s == 0 {
        return x.clone();
    }
    let tail = slice(b, x, axis, n - s, n);
    let head = slice(b, x, axis, 0, n - s);
    concat(b, &[&tail, &head], axis)
}

/// Zeros after the last row / column of `[N, H, W, C]` (`F.pad(x, (0, 0, 0, pw, 0, ph))`).
pub fn pad_hw_end(b: &mut Builder, x: &Value, ph: usize, pw: usize) -> Value {
    if ph == 0 && pw == 0 {
        return x.clone();
    }
    let pads = b.ints(&[0, 0, 0, 0, 0, ph as i64, pw as i64, 0]);
    b.op("Pad", &[x, &pads], vec![])
}

/// timm's `window_partition`: `[N, H, W, C]` (H, W multiples of the window) → windows
/// `[N·nW, wh·ww, C]`, batch-major, windows row-major.
pub fn window_partition(
    b: &mut Builder,
    x: &Value,
    hw: (usize, usize),
    win: (usize, usize),
    c: usize,
) -> Value {
    let (wh, ww) = (win.0 as i64, win.1 as i64);
    let y = reshape(
        b,
        x,
        &[-1, hw.0 as i64 / wh, wh, hw.1 as i64 / ww, ww, c as i64],
    );
    let y = transpose(b, &y, &[0, 1, 3, 2, 4, 5]);
    reshape(b, &y, &[-1, wh * ww, c as i64])
}

/// timm's `window_reverse`: windows `[N·nW, wh·ww, C]` → `[N, H, W, C]`.
pub fn window_reverse(
    b: &mut Builder,
    x: &Value,
    hw: (usize, usize),
    win: (usize, usize),
    c: usize,
) -> Value {
    let (wh, ww) = (win.0 as i64, win.1 as i64);
    let y = reshape(
        b,
        x,
        &[-1, hw.0 as i64 / wh, hw.1 as i64 / ww, wh, ww, c as i64],
    );
    let y = transpose(b, &y, &[0, 1, 3, 2, 4, 5]);
    reshape(b, &y, &[-1, hw.0 as i64, hw.1 as i64, c as i64])
}

/// The attention bias of a window attention: the relative-position bias `[1, heads, L, L]`
/// plus, for shifted windows, the mask `[nW, L, L]`, broadcast over the batch of `like`
/// (`[N, …]`) to the windows' `[N·nW, heads, L, L]`, as timm adds them to the logits.
pub fn window_attn_bias(
    b: &mut Builder,
    rel_bias: &Value,
    mask: Option<&Value>,
    like: &Value,
    heads: usize,
    l: usize,
) -> Value {
    let Some(mask) = mask else {
        return rel_bias.clone();
    };
    let (h, l) = (heads as i64, l as i64);
    // [1, 1, H, L, L] + [1, nW, 1, L, L] -> [1, nW, H, L, L], then the batch.
    let rb = reshape(b, rel_bias, &[1, 1, h, l, l]);
    let m = reshape(b, mask, &[1, -1, 1, l, l]);
    let sum = b.op("Add", &[&rb, &m], vec![]);
    let batch = b.op(
        "Shape",
        &[like],
        vec![("start", Attr::Int(0)), ("end", Attr::Int(1))],
    );
    let rest = b.op(
        "Shape",
        &[&sum],
        vec![("start", Attr::Int(1)), ("end", Attr::Int(5))],
    );
    let shape = concat(b, &[&batch, &rest], 0);
    let full = b.op("Expand", &[&sum, &shape], vec![]);
    reshape(b, &full, &[-1, h, l, l])
}

/// `PatchMerging`'s gather: `[N, H, W, C]` padded to even H, W, every 2×2 block's tokens
/// concatenated as timm's `reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5)` orders them
/// → `[N, ⌈H/2⌉, ⌈W/2⌉, 4C]`.
pub fn patch_merge_gather(b: &mut Builder, x: &Value, hw: (usize, usize), c: usize) -> Value {
    let x = pad_hw_end(b, x, hw.0 % 2, hw.1 % 2);
    let (h2, w2) = (hw.0.div_ceil(2) as i64, hw.1.div_ceil(2) as i64);
    let y = reshape(b, &x, &[-1, h2, 2, w2, 2, c as i64]);
    let y = transpose(b, &y, &[0, 1, 3, 4, 2, 5]);
    reshape(b, &y, &[-1, h2, w2, 4 * c as i64])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_position_index_matches_timm_for_a_2x3_window() {
        // torch: get_relative_position_index(2, 3)[0] and [5].
        let idx = relative_position_index(2, 3);
        assert_eq!(&idx[..6], &[7, 6, 5, 2, 1, 0]);
        assert_eq!(&idx[30..36], &[14, 13, 12, 9, 8, 7]);
    }

    #[test]
    fn shift_mask_separates_the_wrapped_regions_like_timm() {
        // 4x4 map, 2x2 windows, shift 1: the last window mixes four regions.
        let m = shift_attn_mask((4, 4), (2, 2), (1, 1)).unwrap();
        assert_eq!(m.len(), 4 * 16);
        assert!(m[..16].iter().all(|&v| v == 0.0));
        let last = &m[48..];
        assert_eq!(last.iter().filter(|&&v| v == 0.0).count(), 4);
        assert!(shift_attn_mask((4, 4), (2, 2), (0, 0)).is_none());
    }

    #[test]
    fn python_slices_with_negative_and_zero_bounds() {
        assert_eq!(py_range(0, Some(-2), 5), 0..3);
        assert_eq!(py_range(-2, Some(-0), 5), 3..3);
        assert_eq!(py_range(-0, None, 5), 0..5);
    }
}
