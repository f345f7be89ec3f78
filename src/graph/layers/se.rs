//! Channel attention: timm's `SEModule`, `EffectiveSEModule`, the EfficientNet / MobileNet
//! `SqueezeExcite` with its gate, `EcaModule` and `CecaModule`.

use super::{act, conv2d, Conv, Pad};
use crate::error::Result;
use crate::graph::{Attr, Builder, Init, Value};

/// A squeeze-excite block: global average pool, reduce conv, activation, expand conv, gate,
/// multiply. `reduce` / `expand` are the two 1×1 convs' module names.
#[derive(Debug, Clone)]
pub struct SqueezeExcite<'a> {
    pub channels: usize,
    pub rd_channels: usize,
    pub act: &'a str,
    pub gate: &'a str,
    pub reduce: &'a str,
    pub expand: &'a str,
    /// A BatchNorm (module `bn`) after the reduce conv (`SEModule(use_norm=True)`).
    pub norm: bool,
    /// Weight init of the two convs without weights.
    pub init: Init,
}

impl<'a> SqueezeExcite<'a> {
    /// timm's `SEModule` (`fc1`, relu, `fc2`, sigmoid).
    pub fn se_module(channels: usize, rd_channels: usize) -> Self {
        SqueezeExcite {
            channels,
            rd_channels,
            act: "relu",
            gate: "sigmoid",
            reduce: "fc1",
            expand: "fc2",
            norm: false,
            init: Init::DefaultUniform,
        }
    }

    /// The EfficientNet / MobileNet `SqueezeExcite` (`conv_reduce`, act, `conv_expand`, gate).
    pub fn efficientnet(channels: usize, rd_channels: usize, act: &'a str, gate: &'a str) -> Self {
        SqueezeExcite {
            channels,
            rd_channels,
            act,
            gate,
            reduce: "conv_reduce",
            expand: "conv_expand",
            norm: false,
            init: Init::KaimingFanOut,
        }
    }

    pub fn act(mut self, a: &'a str) -> Self {
        self.act = a;
        self
    }
    pub fn gate(mut self, g: &'a str) -> Self {
        self.gate = g;
        self
    }
    pub fn init(mut self, i: Init) -> Self {
        self.init = i;
        self
    }
    pub fn norm(mut self, n: bool) -> Self {
        self.norm = n;
        self
    }

    pub fn apply(&self, b: &mut Builder, x: &Value) -> Result<Value> {
        let pooled = b.op("GlobalAveragePool", &[x], vec![]);
        let fc = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(true);
        let r = conv2d(
            &mut b.scope(self.reduce),
            &pooled,
            fc(self.channels, self.rd_channels).init(self.init),
        )?;
        let r = if self.norm {
            super::batch_norm(&mut b.scope("bn"), &r, self.rd_channels, 1e-5)?
        } else {
            r
        };
        let r = act(b, self.act, &r)?;
        let e = conv2d(
            &mut b.scope(self.expand),
            &r,
            fc(self.rd_channels, self.channels).init(self.init),
        )?;
        let g = act(b, self.gate, &e)?;
        Ok(b.op("Mul", &[x, &g], vec![]))
    }
}

/// timm's SE reduction width: `make_divisible(channels * rd_ratio, rd_divisor, round_limit=0)`.
pub fn rd_channels(channels: usize, rd_ratio: f64, rd_divisor: usize) -> usize {
    super::make_divisible(channels as f64 * rd_ratio, rd_divisor, 0.0)
}

/// timm's `EffectiveSEModule` (`fc`, hard_sigmoid gate; `add_maxpool` adds the max pool).
pub fn effective_se(
    b: &mut Builder,
    x: &Value,
    channels: usize,
    add_maxpool: bool,
    gate: &str,
) -> Result<Value> {
    let mut s = b.op("GlobalAveragePool", &[x], vec![]);
    if add_maxpool {
        let m = b.op("GlobalMaxPool", &[x], vec![]);
        let sum = b.op("Add", &[&s, &m], vec![]);
        s = super::scale(b, &sum, 0.5);
    }
    let c = Conv::new(channels, channels, 1).pad(Pad::Sym(0)).bias(true);
    let s = conv2d(&mut b.scope("fc"), &s, c)?;
    let g = act(b, gate, &s)?;
    Ok(b.op("Mul", &[x, &g], vec![]))
}

/// timm's ECA kernel size for `channels` (`gamma=2, beta=1`): `t = int(|log2(C) + beta| /
/// gamma)`, made odd, at least 3.
pub fn eca_kernel(channels: usize, gamma: f64, beta: f64) -> usize {
    let t = (((channels as f64).log2() + beta).abs() / gamma) as usize;
    3.max(if t.is_multiple_of(2) { t + 1 } else { t })
}

/// `EcaModule` (zero padding) or `CecaModule` (`circular`): a 1-D conv across the pooled
/// channels (`conv.weight` `[1, 1, k]`), sigmoid gate.
pub fn eca(b: &mut Builder, x: &Value, k: usize, circular: bool, gate: &str) -> Result<Value> {
    let w = b.param("conv.weight", &[1, 1, k], Init::DefaultUniform)?;
    let pooled = b.op("GlobalAveragePool", &[x], vec![]);
    // [N, C, 1, 1] -> [N, 1, C]
    let y = super::reshape(b, &pooled, &[0, 1, -1]);
    let p = (k - 1) / 2;
    let y = if circular && p > 0 {
        // Wrap the last p channels before the first and the first p after the last.
        let head = super::slice(b, &y, 2, 0, p as i64);
        let tail = super::slice(b, &y, 2, -(p as i64), i64::MAX);
        let y = super::concat(b, &[&tail, &y, &head], 2);
        b.op(
            "Conv",
            &[&y, &w],
            vec![
                ("kernel_shape", Attr::Ints(vec![k as i64])),
                ("pads", Attr::Ints(vec![0, 0])),
            ],
        )
    } else {
        b.op(
            "Conv",
            &[&y, &w],
            vec![
                ("kernel_shape", Attr::Ints(vec![k as i64])),
                ("pads", Attr::Ints(vec![p as i64, p as i64])),
            ],
        )
    };
    let g = act(b, gate, &y)?;
    // [N, 1, C] -> [N, C, 1, 1]
    let g = super::reshape(b, &g, &[0, -1, 1, 1]);
    Ok(b.op("Mul", &[x, &g], vec![]))
}

/// timm's `GlobalContext` settings (GCNet): `rd_channels` is
/// `make_divisible(channels * rd_ratio, rd_divisor, round_limit=0)`.
#[derive(Debug, Clone, Copy)]
pub struct GlobalContextCfg {
    pub channels: usize,
    pub rd_channels: usize,
    /// Softmax attention pooling (`conv_attn`) instead of the mean.
    pub use_attn: bool,
    pub fuse_add: bool,
    pub fuse_scale: bool,
    /// The `ConvMlp`s' activation (timm's default ReLU; EfficientNet passes the block's).
    pub act: &'static str,
}

/// timm's `GlobalContext`: context pooled by a softmax over `conv_attn`'s map (or the mean),
/// then `x * sigmoid(mlp_scale(ctx))` and / or `x + mlp_add(ctx)`, each a `ConvMlp` with
/// `LayerNorm2d` and `act`.
pub fn global_context(b: &mut Builder, x: &Value, c: &GlobalContextCfg) -> Result<Value> {
    let ch = c.channels;
    let context = if c.use_attn {
        let conv = Conv::new(ch, 1, 1).pad(Pad::Sym(0)).bias(true);
        let a = conv2d(&mut b.scope("conv_attn"), x, conv)?;
        let a = super::reshape(b, &a, &[0, -1, 1]);
        let a = b.op("Softmax", &[&a], vec![("axis", Attr::Int(1))]);
        let xs = super::reshape(b, x, &[0, ch as i64, -1]);
        let ctx = b.op("MatMul", &[&xs, &a], vec![]);
        super::reshape(b, &ctx, &[0, ch as i64, 1, 1])
    } else {
        super::reduce_mean(b, x, &[2, 3], true)
    };
    let mlp = |b: &mut Builder, name: &str| {
        let m = super::mlp::MlpCfg::new(ch, c.rd_channels, c.act)
            .norm(Some(super::Norm::Layer { eps: 1e-6 }));
        let m = super::mlp::MlpCfg {
            init: Init::DefaultUniform,
            ..m
        };
        super::mlp::conv_mlp(&mut b.scope(name), &context, &m)
    };
    let mut y = x.clone();
    if c.fuse_scale {
        let s = mlp(b, "mlp_scale")?;
        let g = act(b, "sigmoid", &s)?;
        y = b.op("Mul", &[&y, &g], vec![]);
    }
    if c.fuse_add {
        let s = mlp(b, "mlp_add")?;
        y = b.op("Add", &[&y, &s], vec![]);
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::eca_kernel;

    #[test]
    fn eca_kernel_is_timms_odd_size_of_at_least_three() {
        // timm: t = int(abs(log2(C) + 1) / 2); max(t if t % 2 else t + 1, 3)
        for (c, k) in [
            (4, 3),
            (16, 3),
            (64, 3),
            (128, 5),
            (256, 5),
            (1024, 5),
            (2048, 7),
        ] {
            assert_eq!(eca_kernel(c, 2.0, 1.0), k, "{c} channels");
        }
    }
}
