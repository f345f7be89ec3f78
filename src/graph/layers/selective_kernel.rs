//! timm's `SelectiveKernel` (`timm/layers/selective_kernel.py`): parallel conv paths of growing
//! receptive field (3x3 kernels with growing dilation under `keep_3x3`), each `ConvNormAct`,
//! mixed by `SelectiveKernelAttn` — a softmax over the paths of a squeeze of their sum.

use super::conv::{conv_bn, conv_norm_act, Conv, Pad};
use super::{act, add, mul, reshape, split, Norm};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Value};

/// `SelectiveKernel(in_channels, out_channels, kernel_size, stride, dilation, groups, ...)`
/// with the attention width already resolved (`rd_channels` or
/// `make_divisible(out_channels * rd_ratio, rd_divisor)`).
#[derive(Debug, Clone)]
pub struct SelectiveKernelCfg<'a> {
    pub in_ch: usize,
    pub out_ch: usize,
    /// `kernel_size`: one per path (timm's default `[3, 5]`).
    pub kernels: Vec<usize>,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub attn_ch: usize,
    pub keep_3x3: bool,
    pub split_input: bool,
    pub act: &'a str,
    pub bn_eps: f32,
}

impl SelectiveKernelCfg<'_> {
    /// The paths' (kernel, dilation): `keep_3x3` turns a k×k kernel into a dilated 3x3.
    pub fn paths(&self) -> Vec<(usize, usize)> {
        self.kernels
            .iter()
            .map(|&k| {
                if self.keep_3x3 {
                    (3, self.dilation * (k - 1) / 2)
                } else {
                    (k, self.dilation)
                }
            })
            .collect()
    }
}

/// The module in the current scope: `paths.{i}.conv/bn`, `attn.fc_reduce`, `attn.bn`,
/// `attn.fc_select`. BatchNorms are folded into their convs.
pub fn selective_kernel(b: &mut Builder, x: &Value, c: &SelectiveKernelCfg) -> Result<Value> {
    let paths = c.paths();
    let n = paths.len();
    if n < 2 || c.kernels.iter().any(|&k| k < 3 || k % 2 == 0) {
        return Err(Error::invalid_model(format!(
            "SelectiveKernel kernel sizes {:?} must be odd, at least 3, two or more of them",
            c.kernels
        )));
    }
    let groups = c.groups.min(c.out_ch);
    let in_ch = if c.split_input {
        if !c.in_ch.is_multiple_of(n) {
            return Err(Error::invalid_model(format!(
                "SelectiveKernel: {} input channels do not split across {n} paths",
                c.in_ch
            )));
        }
        c.in_ch / n
    } else {
        c.in_ch
    };
    let inputs = if c.split_input {
        split(b, x, 1, &vec![in_ch; n])
    } else {
        vec![x.clone(); n]
    };
    let norm = Norm::Batch { eps: c.bn_eps };
    let mut ys = Vec::with_capacity(n);
    for (i, ((k, d), xi)) in paths.iter().zip(&inputs).enumerate() {
        let conv = Conv::new(in_ch, c.out_ch, *k)
            .stride(c.stride)
            .dilation(*d)
            .pad(Pad::timm(*k, c.stride, *d))
            .groups(groups);
        let p = &mut b.scope("paths");
        ys.push(conv_norm_act(
            &mut p.scope(i),
            xi,
            conv,
            &norm,
            Some(c.act),
        )?);
    }
    // SelectiveKernelAttn: sum over paths, global mean, fc_reduce + bn + act, fc_select,
    // softmax over the paths.
    let mut sum = ys[0].clone();
    for y in &ys[1..] {
        sum = add(b, &sum, y);
    }
    let a = &mut b.scope("attn");
    let pooled = a.op("GlobalAveragePool", &[&sum], vec![]);
    let fc = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0));
    let r = conv_bn(
        a,
        &pooled,
        "fc_reduce",
        "bn",
        fc(c.out_ch, c.attn_ch),
        c.bn_eps,
    )?;
    let r = act(a, "relu", &r)?;
    let sel = super::conv2d(&mut a.scope("fc_select"), &r, fc(c.attn_ch, c.out_ch * n))?;
    let sel = reshape(a, &sel, &[0, n as i64, c.out_ch as i64, 1, 1]);
    let sel = a.op("Softmax", &[&sel], vec![("axis", Attr::Int(1))]);
    let weights = split(a, &sel, 1, &vec![1; n]);
    let mut out: Option<Value> = None;
    for (y, w) in ys.iter().zip(&weights) {
        let w = reshape(a, w, &[0, c.out_ch as i64, 1, 1]);
        let t = mul(a, y, &w);
        out = Some(match out {
            None => t,
            Some(o) => add(a, &o, &t),
        });
    }
    let out = out.expect("two or more paths");
    a.set_spatial(&out, &ys[0], super::resnet_parts::IDENTITY, c.out_ch)?;
    Ok(out)
}
