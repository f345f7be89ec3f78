//! timm's `ScaledStdConv2d` / `ScaledStdConv2dSame` (`timm.layers.std_conv`): a conv whose weight
//! is standardised per output channel at every forward and scaled by `gain * gamma / sqrt(fan_in)`.
//! Done once here at load (`transforms::standardize`), so the graph holds a plain conv.

use super::Conv;
use crate::error::Result;
use crate::graph::{transforms, Builder, Init, Value};

/// `ScaledStdConv2d(gamma, eps, gain_init)`: `weight`, `gain` (`[out, 1, 1, 1]`) and `bias` (when
/// `c.bias`) in the current scope. `c.pad` carries the padding (`get_padding` for
/// `ScaledStdConv2d`, TF "SAME" for `ScaledStdConv2dSame`). `gain_init` is the gain a network
/// without weights starts with (timm zeroes the last conv of a residual branch).
pub fn scaled_std_conv2d(
    b: &mut Builder,
    x: &Value,
    c: Conv,
    gamma: f64,
    eps: f32,
    gain_init: f32,
) -> Result<Value> {
    let shape = c.weight_shape();
    let mut w = b.read("weight", &shape, c.init)?;
    let gain = b.read("gain", &[c.out_ch, 1, 1, 1], Init::Const(gain_init))?;
    let bias = b.read_opt("bias", &[c.out_ch], Init::Zeros, c.bias)?;
    let fan_in: usize = shape[1..].iter().product();
    let scale = gamma / (fan_in.max(1) as f64).sqrt();
    transforms::standardize(&mut w, c.out_ch, eps, Some(&gain), scale);
    let wv = b.tensor("weight", w, &shape)?;
    let bv = match bias {
        Some(bias) => Some(b.tensor("bias", bias, &[c.out_ch])?),
        None => None,
    };
    c.emit(b, x, &wv, bv.as_ref())
}
