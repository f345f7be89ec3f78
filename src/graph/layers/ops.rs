//! Small tensor helpers every block uses (layout changes, slicing, arithmetic).

use crate::graph::{Attr, Builder, Value};

pub fn add(b: &mut Builder, x: &Value, y: &Value) -> Value {
    b.op("Add", &[x, y], vec![])
}

pub fn mul(b: &mut Builder, x: &Value, y: &Value) -> Value {
    b.op("Mul", &[x, y], vec![])
}

/// `x * c` for a constant.
pub fn scale(b: &mut Builder, x: &Value, c: f32) -> Value {
    let s = b.scalar(c);
    b.op("Mul", &[x, &s], vec![])
}

/// `(x + y) / 2`, exact in floating point as timm's.
pub fn mean2(b: &mut Builder, x: &Value, y: &Value) -> Value {
    let s = add(b, x, y);
    scale(b, &s, 0.5)
}

pub fn transpose(b: &mut Builder, x: &Value, perm: &[i64]) -> Value {
    b.op("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
}

pub fn nchw_to_nhwc(b: &mut Builder, x: &Value) -> Value {
    transpose(b, x, &[0, 2, 3, 1])
}

pub fn nhwc_to_nchw(b: &mut Builder, x: &Value) -> Value {
    transpose(b, x, &[0, 3, 1, 2])
}

/// Reshape with ONNX semantics (0 copies a dim, -1 infers one).
pub fn reshape(b: &mut Builder, x: &Value, shape: &[i64]) -> Value {
    let s = b.ints(shape);
    b.op("Reshape", &[x, &s], vec![])
}

pub fn flatten(b: &mut Builder, x: &Value, axis: i64) -> Value {
    b.op("Flatten", &[x], vec![("axis", Attr::Int(axis))])
}

pub fn concat(b: &mut Builder, xs: &[&Value], axis: i64) -> Value {
    b.op("Concat", xs, vec![("axis", Attr::Int(axis))])
}

/// `x[..., start:end]` along `axis`.
pub fn slice(b: &mut Builder, x: &Value, axis: i64, start: i64, end: i64) -> Value {
    let s = b.ints(&[start]);
    let e = b.ints(&[end]);
    let a = b.ints(&[axis]);
    b.op("Slice", &[x, &s, &e, &a], vec![])
}

/// Splits `x` along `axis` into parts of the given sizes.
pub fn split(b: &mut Builder, x: &Value, axis: i64, sizes: &[usize]) -> Vec<Value> {
    let s: Vec<i64> = sizes.iter().map(|&v| v as i64).collect();
    let s = b.ints(&s);
    b.op_n(
        "Split",
        "",
        &[x, &s],
        vec![("axis", Attr::Int(axis))],
        sizes.len(),
    )
}

/// Token `i` of `[N, L, D]` as `[N, D]`.
pub fn token_at(b: &mut Builder, x: &Value, i: i64) -> Value {
    let idx = b.const_i64(vec![i], &[]);
    b.op("Gather", &[x, &idx], vec![("axis", Attr::Int(1))])
}

/// A per-channel vector `[C]` shaped `[C, 1, 1]` to broadcast over NCHW (folded at load).
pub fn per_channel(b: &mut Builder, v: &Value, c: usize) -> Value {
    reshape(b, v, &[c as i64, 1, 1])
}

/// `[N, C, H, W]` → `[N, H·W, C]` tokens.
pub fn nchw_to_tokens(b: &mut Builder, x: &Value, c: usize) -> Value {
    let y = reshape(b, x, &[0, c as i64, -1]);
    transpose(b, &y, &[0, 2, 1])
}

/// Mean over `axes` keeping them or not.
pub fn reduce_mean(b: &mut Builder, x: &Value, axes: &[i64], keep: bool) -> Value {
    let a = b.ints(axes);
    b.op(
        "ReduceMean",
        &[x, &a],
        vec![("keepdims", Attr::Int(keep as i64))],
    )
}
