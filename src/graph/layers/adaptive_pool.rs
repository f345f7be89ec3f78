//! `nn.AdaptiveAvgPool2d(out)` for an NCHW map whose size is only known when the graph runs:
//! PyTorch's bins (`start = ⌊i·n/out⌋`, `end = ⌈(i+1)·n/out⌉`) as two averaging matrices built
//! from the input's shape, applied as `M_h · x · M_wᵀ`.

use crate::graph::{Attr, Builder, Value};

/// The `[out, n]` averaging matrix of one axis of length `n` (a scalar i64 value).
fn bins(b: &mut Builder, n: &Value, out: usize) -> Value {
    let o = out as i64;
    let i = b.const_i64((0..o).collect(), &[o, 1]);
    let i1 = b.const_i64((1..=o).collect(), &[o, 1]);
    let ov = b.const_i64(vec![o], &[]);
    let om1 = b.const_i64(vec![o - 1], &[]);
    let s = b.op("Mul", &[&i, n], vec![]);
    let start = b.op("Div", &[&s, &ov], vec![]);
    let e = b.op("Mul", &[&i1, n], vec![]);
    let e = b.op("Add", &[&e, &om1], vec![]);
    let end = b.op("Div", &[&e, &ov], vec![]);
    let zero = b.const_i64(vec![0], &[]);
    let one = b.const_i64(vec![1], &[]);
    let j = b.op("Range", &[&zero, n, &one], vec![]);
    let ge = b.op("GreaterOrEqual", &[&j, &start], vec![]);
    let lt = b.op("Less", &[&j, &end], vec![]);
    let inside = b.op("And", &[&ge, &lt], vec![]);
    let inside = b.op("Cast", &[&inside], vec![("to", Attr::Int(1))]);
    let count = b.op("Sub", &[&end, &start], vec![]);
    let count = b.op("Cast", &[&count], vec![("to", Attr::Int(1))]);
    b.op("Div", &[&inside, &count], vec![])
}

/// `nn.AdaptiveAvgPool2d(out)` of `x` `[N, C, H, W]` → `[N, C, out.0, out.1]` for any H, W.
pub fn adaptive_avg_pool2d(b: &mut Builder, x: &Value, out: (usize, usize)) -> Value {
    let shape = b.op("Shape", &[x], vec![]);
    let axis = |b: &mut Builder, k: i64| {
        let idx = b.const_i64(vec![k], &[]);
        b.op("Gather", &[&shape, &idx], vec![("axis", Attr::Int(0))])
    };
    let h = axis(b, 2);
    let w = axis(b, 3);
    let mh = bins(b, &h, out.0);
    let mw = bins(b, &w, out.1);
    let mwt = super::transpose(b, &mw, &[1, 0]);
    let y = b.op("MatMul", &[&mh, x], vec![]);
    b.op("MatMul", &[&y, &mwt], vec![])
}
