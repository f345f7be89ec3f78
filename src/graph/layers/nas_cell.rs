//! The operations NASNet-style cells are made of, as timm's `nasnet.py` and `pnasnet.py` each
//! define them (the same modules in both): `ActConvBn`, `BranchSeparables`, the 3×3 pools of
//! `create_pool2d` and the factorized reduction on a shifted second path. Every BatchNorm after
//! a conv is folded into it at load.

use crate::error::Result;
use crate::graph::layers::pool::create_pool2d;
use crate::graph::layers::{act, concat, conv2d, conv_bn, Conv, Pad};
use crate::graph::{transforms, Builder, Init, Value};

/// A family's settings for the cell operations.
#[derive(Debug, Clone, Copy)]
pub struct NasOps {
    /// timm's `pad_type='same'`: TF "SAME" padding where it cannot be static.
    pub tf_same: bool,
    /// Conv weights of a model without a weights file.
    pub init: Init,
    pub bn_eps: f32,
}

impl NasOps {
    /// timm's `create_conv2d` padding for a k×k conv of `stride`.
    pub fn pad(&self, k: usize, stride: usize) -> Pad {
        Pad::create(k, stride, 1, self.tf_same)
    }
}

/// `ActConvBn`: ReLU, a 1×1 conv (stride `s`) and its BatchNorm (scopes `conv`, `bn`).
pub fn act_conv_bn(
    b: &mut Builder,
    x: &Value,
    i: usize,
    o: usize,
    s: usize,
    c: &NasOps,
) -> Result<Value> {
    let y = act(b, "relu", x)?;
    let conv = Conv::new(i, o, 1).stride(s).pad(c.pad(1, s)).init(c.init);
    conv_bn(b, &y, "conv", "bn", conv, c.bn_eps)
}

/// `BranchSeparables`: (ReLU, depthwise k×k, pointwise 1×1, BatchNorm) twice, the stride on
/// the first; `mid` is the first pair's width.
pub fn branch_separables(
    b: &mut Builder,
    x: &Value,
    (i, mid, o): (usize, usize, usize),
    k: usize,
    stride: usize,
    c: &NasOps,
) -> Result<Value> {
    let mut y = x.clone();
    for (n, (ci, co, s)) in [(i, mid, stride), (mid, o, 1)].into_iter().enumerate() {
        let n = n + 1;
        y = act(b, "relu", &y)?;
        let dw = Conv::new(ci, ci, k)
            .stride(s)
            .depthwise()
            .pad(c.pad(k, s))
            .init(c.init);
        y = conv2d(
            &mut b.scope(format!("separable_{n}.depthwise_conv2d")),
            &y,
            dw,
        )?;
        let pw = Conv::new(ci, co, 1).pad(Pad::Sym(0)).init(c.init);
        y = conv_bn(
            b,
            &y,
            &format!("separable_{n}.pointwise_conv2d"),
            &format!("bn_sep_{n}"),
            pw,
            c.bn_eps,
        )?;
    }
    Ok(y)
}

/// A `BranchSeparables` of width `w` in and out, in scope `name`.
pub fn sep(
    b: &mut Builder,
    name: &str,
    x: &Value,
    w: usize,
    k: usize,
    s: usize,
    c: &NasOps,
) -> Result<Value> {
    branch_separables(&mut b.scope(name), x, (w, w, w), k, s, c)
}

/// `create_pool2d('max', 3, stride, padding=1)` on `ch` channels.
pub fn max_pool(b: &mut Builder, x: &Value, stride: usize, ch: usize, c: &NasOps) -> Result<Value> {
    create_pool2d(b, x, true, 3, stride, true, c.tf_same, ch)
}

/// `create_pool2d('avg', 3, stride, padding=1, count_include_pad=False)` on `ch` channels.
pub fn avg_pool(b: &mut Builder, x: &Value, stride: usize, ch: usize, c: &NasOps) -> Result<Value> {
    create_pool2d(b, x, false, 3, stride, false, c.tf_same, ch)
}

/// The factorized reduction on `x` (`i` channels): ReLU, then `path_1` (every second pixel)
/// and `path_2` (shifted by one, zero past the end), each a 1×1 conv to `o`, concatenated and
/// `final_path_bn` (its two halves folded into the two convs).
pub fn factorized_reduction(
    b: &mut Builder,
    x: &Value,
    i: usize,
    o: usize,
    c: &NasOps,
) -> Result<Value> {
    let y = act(b, "relu", x)?;
    let bn = transforms::BnStats::read(&mut b.scope("final_path_bn"), 2 * o, c.bn_eps)?;
    // `ZeroPad2d((-1, 1, -1, 1))`: drop the first row / column, a zero one after the last.
    let pads = b.ints(&[0, 0, 0, 0, 0, 0, 1, 1]);
    let padded = b.op("Pad", &[&y, &pads], vec![]);
    let starts = b.ints(&[1, 1]);
    let ends = b.ints(&[i64::MAX, i64::MAX]);
    let axes = b.ints(&[2, 3]);
    let shifted = b.op("Slice", &[&padded, &starts, &ends, &axes], vec![]);
    let mut outs = Vec::new();
    for (p, src) in [(0, &y), (1, &shifted)] {
        let name = format!("path_{}.conv", p + 1);
        let w = b.scope(&name).read("weight", &[o, i, 1, 1], c.init)?;
        let half = |v: &[f32]| v[p * o..(p + 1) * o].to_vec();
        let stats = transforms::BnStats {
            weight: half(&bn.weight),
            bias: half(&bn.bias),
            mean: half(&bn.mean),
            var: half(&bn.var),
            eps: bn.eps,
        };
        let (w, bias) = transforms::fold_bn(w, None, &stats);
        let wv = b.tensor(&format!("{name}.weight"), w, &[o, i, 1, 1])?;
        let bv = b.tensor(&format!("{name}.bias"), bias, &[o])?;
        // AvgPool2d(1, stride=2) then a 1×1 conv is a 1×1 conv of stride 2.
        let conv = Conv::new(i, o, 1).stride(2).pad(Pad::Sym(0));
        outs.push(conv.emit(b, src, &wv, Some(&bv))?);
    }
    Ok(concat(b, &[&outs[0], &outs[1]], 1))
}
