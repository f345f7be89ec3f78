//! Re-parameterisable branches read from timm's unfused weights: a conv with its BatchNorm (or a
//! bare BatchNorm identity) as a [`Branch`], and the one conv their sum makes
//! (`transforms::sum_branches`), emitted at load as timm's `reparameterize` would.

use super::Conv;
use crate::error::Result;
use crate::graph::transforms::{self, BnStats, Branch};
use crate::graph::{Builder, Init, Value};

/// A conv (`conv` scope: `weight`, optional `bias`) followed by a BatchNorm (`bn` scope) as one
/// folded branch of kernel `c.kernel`.
pub fn conv_bn_branch(b: &mut Builder, conv: &str, bn: &str, c: &Conv, eps: f32) -> Result<Branch> {
    let shape = c.weight_shape();
    let (w, bias) = {
        let s = &mut b.scope(conv);
        let w = s.read("weight", &shape, c.init)?;
        (w, s.read_opt("bias", &[c.out_ch], Init::Zeros, c.bias)?)
    };
    let stats = BnStats::read(&mut b.scope(bn), c.out_ch, eps)?;
    let (weight, bias) = transforms::fold_bn(w, bias, &stats);
    Ok(Branch {
        weight,
        bias,
        k: c.kernel.0,
    })
}

/// A bare BatchNorm on the input (`bn` scope) as an identity branch of `channels` channels,
/// `in_per_group` inputs per group.
pub fn bn_identity_branch(
    b: &mut Builder,
    bn: &str,
    channels: usize,
    in_per_group: usize,
    eps: f32,
) -> Result<Branch> {
    let stats = BnStats::read(&mut b.scope(bn), channels, eps)?;
    Ok(transforms::identity_branch(&stats, in_per_group))
}

/// The identity itself (`x` added unchanged) as a 1×1 branch.
pub fn plain_identity_branch(channels: usize, in_per_group: usize) -> Branch {
    let mut weight = vec![0f32; channels * in_per_group];
    for o in 0..channels {
        weight[o * in_per_group + o % in_per_group] = 1.0;
    }
    Branch {
        weight,
        bias: vec![0.0; channels],
        k: 1,
    }
}

/// The sum of `branches` as one conv `c` (whose kernel is the largest branch's), named `name`
/// in the current scope (`name.weight`, `name.bias`).
pub fn emit_branches(
    b: &mut Builder,
    x: &Value,
    name: &str,
    branches: &[Branch],
    c: Conv,
) -> Result<Value> {
    let shape = c.weight_shape();
    let (w, bias) = transforms::sum_branches(branches, c.out_ch, shape[1], c.kernel.0);
    let wv = b.tensor(&format!("{name}.weight"), w, &shape)?;
    let bv = b.tensor(&format!("{name}.bias"), bias, &[c.out_ch])?;
    c.bias(true).emit(b, x, &wv, Some(&bv))
}
