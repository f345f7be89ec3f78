//! MaxViT's block (window) and grid partitions of a channels-last map (timm `maxxvit.py`'s
//! `window_partition` / `window_reverse` / `grid_partition` / `grid_reverse`), as reshapes and
//! one transpose each. Maps are `[N, H, W, C]`, partitions `[N·P, h·w, C]` token sequences.

use super::{reshape, transpose};
use crate::graph::{Builder, Value};

fn i(v: usize) -> i64 {
    v as i64
}

/// `window_partition`: non-overlapping `win` windows, each window's pixels contiguous.
pub fn window_partition(
    b: &mut Builder,
    x: &Value,
    (h, w): (usize, usize),
    (wh, ww): (usize, usize),
    c: usize,
) -> Value {
    let y = reshape(b, x, &[-1, i(h / wh), i(wh), i(w / ww), i(ww), i(c)]);
    let y = transpose(b, &y, &[0, 1, 3, 2, 4, 5]);
    reshape(b, &y, &[-1, i(wh * ww), i(c)])
}

/// `window_reverse`: the inverse of [`window_partition`].
pub fn window_reverse(
    b: &mut Builder,
    t: &Value,
    (h, w): (usize, usize),
    (wh, ww): (usize, usize),
    c: usize,
) -> Value {
    let y = reshape(b, t, &[-1, i(h / wh), i(w / ww), i(wh), i(ww), i(c)]);
    let y = transpose(b, &y, &[0, 1, 3, 2, 4, 5]);
    reshape(b, &y, &[-1, i(h), i(w), i(c)])
}

/// `grid_partition`: a `grid` of pixels strided over the whole map per partition (dilated
/// "global" attention).
pub fn grid_partition(
    b: &mut Builder,
    x: &Value,
    (h, w): (usize, usize),
    (gh, gw): (usize, usize),
    c: usize,
) -> Value {
    let y = reshape(b, x, &[-1, i(gh), i(h / gh), i(gw), i(w / gw), i(c)]);
    let y = transpose(b, &y, &[0, 2, 4, 1, 3, 5]);
    reshape(b, &y, &[-1, i(gh * gw), i(c)])
}

/// `grid_reverse`: the inverse of [`grid_partition`].
pub fn grid_reverse(
    b: &mut Builder,
    t: &Value,
    (h, w): (usize, usize),
    (gh, gw): (usize, usize),
    c: usize,
) -> Value {
    let y = reshape(b, t, &[-1, i(h / gh), i(w / gw), i(gh), i(gw), i(c)]);
    let y = transpose(b, &y, &[0, 3, 1, 4, 2, 5]);
    reshape(b, &y, &[-1, i(h), i(w), i(c)])
}
