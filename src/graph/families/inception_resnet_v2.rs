//! Inception-ResNet-V2 (timm's `inception_resnet_v2.py`): `inception_resnet_v2`, one
//! architecture.
//!
//! Every `ConvNormAct` (conv + BatchNorm, folded, + act) takes its width from its weight when
//! there is one, timm's fixed width otherwise; block inputs follow from the concatenations, so a
//! narrowed model is built as its tensors say.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::{act, add, concat, conv2d, conv_norm_act, scale, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/inception_resnet_v2.json"));

pub const FAMILY: Family = Family {
    name: "inception_resnet_v2",
    examples: "inception_resnet_v2",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `InceptionResnetV2.__init__`, timm's defaults.
    struct InceptionResnetV2Args {
        output_stride: usize = 32,
        norm_layer: String = "batchnorm2d".into(),
        norm_eps: f32 = 1e-3,
        act_layer: String = "relu".into(),
    }
}

/// A value and its channel count.
#[derive(Clone)]
struct X(Value, usize);

/// The model's `conv_block`: `ConvNormAct(padding=0)` with its norm eps and act.
struct Ctx {
    eps: f32,
    act: String,
}

impl Ctx {
    /// `conv_block(in, out, kernel_size=(kh, kw), stride, padding=(ph, pw))` as scope `name`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &self,
        b: &mut Builder,
        name: &str,
        x: &X,
        out: usize,
        (kh, kw): (usize, usize),
        stride: usize,
        (ph, pw): (usize, usize),
    ) -> Result<X> {
        let s = &mut b.scope(name);
        let out = s.weight_shape("conv.weight").map_or(out, |w| w[0]);
        let c = Conv::new(x.1, out, kh)
            .kernel2(kh, kw)
            .stride(stride)
            .pad(Pad::Explicit(ph, pw, ph, pw))
            .init(Init::DefaultUniform);
        let y = conv_norm_act(s, &x.0, c, &Norm::Batch { eps: self.eps }, Some(&self.act))?;
        Ok(X(y, out))
    }

    /// A square `k`x`k` conv_block with stride `s` and symmetric padding `p`.
    #[allow(clippy::too_many_arguments)]
    fn sq(
        &self,
        b: &mut Builder,
        name: &str,
        x: &X,
        out: usize,
        k: usize,
        s: usize,
        p: usize,
    ) -> Result<X> {
        self.conv(b, name, x, out, (k, k), s, (p, p))
    }
}

fn cat(b: &mut Builder, xs: &[X]) -> X {
    let vs: Vec<&Value> = xs.iter().map(|x| &x.0).collect();
    X(concat(b, &vs, 1), xs.iter().map(|x| x.1).sum())
}

/// `nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)`.
fn avg_pool_3x3_s1(b: &mut Builder, x: &X) -> Result<X> {
    let p = Pool2d::new(3, 1, 1).count_include_pad(false);
    Ok(X(p.avg(b, &x.0, x.1)?, x.1))
}

/// `nn.MaxPool2d(3, stride=2)`.
fn max_pool_3x3_s2(b: &mut Builder, x: &X) -> Result<X> {
    Ok(X(Pool2d::new(3, 2, 0).max(b, &x.0, x.1)?, x.1))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = InceptionResnetV2Args::read(&a)?;
    if r.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's Inception-ResNet-V2 asserts 32"));
    }
    if !matches!(Norm::from_timm(&r.norm_layer, None), Ok(Norm::Batch { .. })) {
        return Err(a.unsupported("norm_layer", "Inception-ResNet-V2 supports batchnorm only"));
    }
    let c = Ctx {
        eps: r.norm_eps,
        act: r.act_layer,
    };
    let x = X(b.input(), cfg.pretrained_cfg.input_size[0]);
    let x = c.sq(b, "conv2d_1a", &x, 32, 3, 2, 0)?;
    let x = c.sq(b, "conv2d_2a", &x, 32, 3, 1, 0)?;
    let x = c.sq(b, "conv2d_2b", &x, 64, 3, 1, 1)?;
    b.feature(&x.0, x.1, 2, "conv2d_2b");
    let x = max_pool_3x3_s2(b, &x)?;
    let x = c.sq(b, "conv2d_3b", &x, 80, 1, 1, 0)?;
    let x = c.sq(b, "conv2d_4a", &x, 192, 3, 1, 0)?;
    b.feature(&x.0, x.1, 4, "conv2d_4a");
    let x = max_pool_3x3_s2(b, &x)?;
    let mut x = mixed_5b(&mut b.scope("mixed_5b"), &c, &x)?;
    for i in 0..10 {
        x = block35(&mut b.scope("repeat").scope(i), &c, &x, 0.17)?;
    }
    b.feature(&x.0, x.1, 8, "repeat");
    let mut x = mixed_6a(&mut b.scope("mixed_6a"), &c, &x)?;
    for i in 0..20 {
        x = block17(&mut b.scope("repeat_1").scope(i), &c, &x, 0.10)?;
    }
    b.feature(&x.0, x.1, 16, "repeat_1");
    let mut x = mixed_7a(&mut b.scope("mixed_7a"), &c, &x)?;
    for i in 0..9 {
        x = block8(&mut b.scope("repeat_2").scope(i), &c, &x, 0.20, true)?;
    }
    let x = block8(&mut b.scope("block8"), &c, &x, 1.0, false)?;
    let x = c.sq(b, "conv2d_7b", &x, 1536, 1, 1, 0)?;
    b.feature(&x.0, x.1, 32, "conv2d_7b");
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x.0, x.1));
    }
    head(b, cfg, &x)
}

/// `Mixed_5b`: 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | avg pool→1x1.
fn mixed_5b(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 96, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 48, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.1", &x1, 64, 5, 1, 2)?;
    let x2 = c.sq(b, "branch2.0", x, 64, 1, 1, 0)?;
    let x2 = c.sq(b, "branch2.1", &x2, 96, 3, 1, 1)?;
    let x2 = c.sq(b, "branch2.2", &x2, 96, 3, 1, 1)?;
    let x3 = avg_pool_3x3_s1(b, x)?;
    let x3 = c.sq(b, "branch3.1", &x3, 64, 1, 1, 0)?;
    Ok(cat(b, &[x0, x1, x2, x3]))
}

/// The residual end of `Block35` / `Block17` / `Block8`: `conv2d` (1x1 with bias) back to the
/// input's width, `out * scale + x`, then ReLU unless `no_relu`.
fn residual(b: &mut Builder, branches: &X, x: &X, s: f32, relu: bool) -> Result<X> {
    let out = b.weight_shape("conv2d.weight").map_or(x.1, |w| w[0]);
    let c = Conv::new(branches.1, out, 1)
        .bias(true)
        .init(Init::DefaultUniform);
    let y = conv2d(&mut b.scope("conv2d"), &branches.0, c)?;
    let y = scale(b, &y, s);
    let y = add(b, &y, &x.0);
    let y = if relu { act(b, "relu", &y)? } else { y };
    Ok(X(y, out))
}

/// `Block35`: 1x1 | 1x1→3x3 | 1x1→3x3→3x3, then the scaled residual.
fn block35(b: &mut Builder, c: &Ctx, x: &X, s: f32) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 32, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 32, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.1", &x1, 32, 3, 1, 1)?;
    let x2 = c.sq(b, "branch2.0", x, 32, 1, 1, 0)?;
    let x2 = c.sq(b, "branch2.1", &x2, 48, 3, 1, 1)?;
    let x2 = c.sq(b, "branch2.2", &x2, 64, 3, 1, 1)?;
    let br = cat(b, &[x0, x1, x2]);
    residual(b, &br, x, s, true)
}

/// `Mixed_6a`: 3x3 s2 | 1x1→3x3→3x3 s2 | max pool s2.
fn mixed_6a(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 384, 3, 2, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 256, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.1", &x1, 256, 3, 1, 1)?;
    let x1 = c.sq(b, "branch1.2", &x1, 384, 3, 2, 0)?;
    let x2 = max_pool_3x3_s2(b, x)?;
    Ok(cat(b, &[x0, x1, x2]))
}

/// `Block17`: 1x1 | 1x1→1x7→7x1, then the scaled residual.
fn block17(b: &mut Builder, c: &Ctx, x: &X, s: f32) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 192, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 128, 1, 1, 0)?;
    let x1 = c.conv(b, "branch1.1", &x1, 160, (1, 7), 1, (0, 3))?;
    let x1 = c.conv(b, "branch1.2", &x1, 192, (7, 1), 1, (3, 0))?;
    let br = cat(b, &[x0, x1]);
    residual(b, &br, x, s, true)
}

/// `Mixed_7a`: 1x1→3x3 s2 | 1x1→3x3 s2 | 1x1→3x3→3x3 s2 | max pool s2.
fn mixed_7a(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0.0", x, 256, 1, 1, 0)?;
    let x0 = c.sq(b, "branch0.1", &x0, 384, 3, 2, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 256, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.1", &x1, 288, 3, 2, 0)?;
    let x2 = c.sq(b, "branch2.0", x, 256, 1, 1, 0)?;
    let x2 = c.sq(b, "branch2.1", &x2, 288, 3, 1, 1)?;
    let x2 = c.sq(b, "branch2.2", &x2, 320, 3, 2, 0)?;
    let x3 = max_pool_3x3_s2(b, x)?;
    Ok(cat(b, &[x0, x1, x2, x3]))
}

/// `Block8`: 1x1 | 1x1→1x3→3x1, then the scaled residual (no ReLU for the last one).
fn block8(b: &mut Builder, c: &Ctx, x: &X, s: f32, relu: bool) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 192, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 192, 1, 1, 0)?;
    let x1 = c.conv(b, "branch1.1", &x1, 224, (1, 3), 1, (0, 1))?;
    let x1 = c.conv(b, "branch1.2", &x1, 256, (3, 1), 1, (1, 0))?;
    let br = cat(b, &[x0, x1]);
    residual(b, &br, x, s, relu)
}

/// `create_classifier`: global pool, `classif`.
fn head(b: &mut Builder, cfg: &ModelConfig, x: &X) -> Result<(Value, usize)> {
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native Inception-ResNet-V2 graph",
        ));
    }
    let pooled = global_pool(b, &x.0, pool);
    let width = x.1 * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let s = &mut b.scope("classif");
    let logits = linear_2d(
        s,
        &pooled,
        width,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}
