//! Inception-V4 (timm's `inception_v4.py`): `inception_v4`, one architecture.
//!
//! Every `ConvNormAct` (conv + BatchNorm, folded, + act) takes its width from its weight when
//! there is one, timm's fixed width otherwise; block inputs follow from the concatenations, so a
//! narrowed model is built as its tensors say.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::{concat, conv_norm_act, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/inception_v4.json"));

pub const FAMILY: Family = Family {
    name: "inception_v4",
    examples: "inception_v4",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `InceptionV4.__init__`, timm's defaults.
    struct InceptionV4Args {
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

    /// A `1x7` (padding 0, 3) conv_block.
    fn h7(&self, b: &mut Builder, name: &str, x: &X, out: usize) -> Result<X> {
        self.conv(b, name, x, out, (1, 7), 1, (0, 3))
    }

    /// A `7x1` (padding 3, 0) conv_block.
    fn v7(&self, b: &mut Builder, name: &str, x: &X, out: usize) -> Result<X> {
        self.conv(b, name, x, out, (7, 1), 1, (3, 0))
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
    let r = InceptionV4Args::read(&a)?;
    if r.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's Inception-V4 asserts 32"));
    }
    if !matches!(Norm::from_timm(&r.norm_layer, None), Ok(Norm::Batch { .. })) {
        return Err(a.unsupported("norm_layer", "Inception-V4 supports batchnorm only"));
    }
    let c = Ctx {
        eps: r.norm_eps,
        act: r.act_layer,
    };
    let taps = [(2, 2), (3, 4), (9, 8), (17, 16), (21, 32)];
    let mut x = X(b.input(), cfg.pretrained_cfg.input_size[0]);
    for i in 0..22 {
        let f = &mut b.scope("features");
        let s = &mut f.scope(i);
        x = match i {
            0 => c.sq(s, "", &x, 32, 3, 2, 0)?,
            1 => c.sq(s, "", &x, 32, 3, 1, 0)?,
            2 => c.sq(s, "", &x, 64, 3, 1, 1)?,
            3 => mixed_3a(s, &c, &x)?,
            4 => mixed_4a(s, &c, &x)?,
            5 => mixed_5a(s, &c, &x)?,
            6..=9 => inception_a(s, &c, &x)?,
            10 => reduction_a(s, &c, &x)?,
            11..=17 => inception_b(s, &c, &x)?,
            18 => reduction_b(s, &c, &x)?,
            _ => inception_c(s, &c, &x)?,
        };
        if let Some(&(_, red)) = taps.iter().find(|t| t.0 == i) {
            s.feature(&x.0, x.1, red, &format!("features.{i}"));
        }
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x.0, x.1));
    }
    head(b, cfg, &x)
}

/// `Mixed3a`: max pool s2 | 3x3 s2.
fn mixed_3a(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = max_pool_3x3_s2(b, x)?;
    let x1 = c.sq(b, "conv", x, 96, 3, 2, 0)?;
    Ok(cat(b, &[x0, x1]))
}

/// `Mixed4a`: 1x1→3x3 | 1x1→1x7→7x1→3x3.
fn mixed_4a(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0.0", x, 64, 1, 1, 0)?;
    let x0 = c.sq(b, "branch0.1", &x0, 96, 3, 1, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 64, 1, 1, 0)?;
    let x1 = c.h7(b, "branch1.1", &x1, 64)?;
    let x1 = c.v7(b, "branch1.2", &x1, 64)?;
    let x1 = c.sq(b, "branch1.3", &x1, 96, 3, 1, 0)?;
    Ok(cat(b, &[x0, x1]))
}

/// `Mixed5a`: 3x3 s2 | max pool s2.
fn mixed_5a(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "conv", x, 192, 3, 2, 0)?;
    let x1 = max_pool_3x3_s2(b, x)?;
    Ok(cat(b, &[x0, x1]))
}

/// `InceptionA`: 1x1 | 1x1→3x3 | 1x1→3x3→3x3 | avg pool→1x1.
fn inception_a(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 96, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 64, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.1", &x1, 96, 3, 1, 1)?;
    let x2 = c.sq(b, "branch2.0", x, 64, 1, 1, 0)?;
    let x2 = c.sq(b, "branch2.1", &x2, 96, 3, 1, 1)?;
    let x2 = c.sq(b, "branch2.2", &x2, 96, 3, 1, 1)?;
    let x3 = avg_pool_3x3_s1(b, x)?;
    let x3 = c.sq(b, "branch3.1", &x3, 96, 1, 1, 0)?;
    Ok(cat(b, &[x0, x1, x2, x3]))
}

/// `ReductionA`: 3x3 s2 | 1x1→3x3→3x3 s2 | max pool s2.
fn reduction_a(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 384, 3, 2, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 192, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.1", &x1, 224, 3, 1, 1)?;
    let x1 = c.sq(b, "branch1.2", &x1, 256, 3, 2, 0)?;
    let x2 = max_pool_3x3_s2(b, x)?;
    Ok(cat(b, &[x0, x1, x2]))
}

/// `InceptionB`: 1x1 | 1x1→1x7→7x1 | 1x1→7x1→1x7→7x1→1x7 | avg pool→1x1.
fn inception_b(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0", x, 384, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 192, 1, 1, 0)?;
    let x1 = c.h7(b, "branch1.1", &x1, 224)?;
    let x1 = c.v7(b, "branch1.2", &x1, 256)?;
    let x2 = c.sq(b, "branch2.0", x, 192, 1, 1, 0)?;
    let x2 = c.v7(b, "branch2.1", &x2, 192)?;
    let x2 = c.h7(b, "branch2.2", &x2, 224)?;
    let x2 = c.v7(b, "branch2.3", &x2, 224)?;
    let x2 = c.h7(b, "branch2.4", &x2, 256)?;
    let x3 = avg_pool_3x3_s1(b, x)?;
    let x3 = c.sq(b, "branch3.1", &x3, 128, 1, 1, 0)?;
    Ok(cat(b, &[x0, x1, x2, x3]))
}

/// `ReductionB`: 1x1→3x3 s2 | 1x1→1x7→7x1→3x3 s2 | max pool s2.
fn reduction_b(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let x0 = c.sq(b, "branch0.0", x, 192, 1, 1, 0)?;
    let x0 = c.sq(b, "branch0.1", &x0, 192, 3, 2, 0)?;
    let x1 = c.sq(b, "branch1.0", x, 256, 1, 1, 0)?;
    let x1 = c.h7(b, "branch1.1", &x1, 256)?;
    let x1 = c.v7(b, "branch1.2", &x1, 320)?;
    let x1 = c.sq(b, "branch1.3", &x1, 320, 3, 2, 0)?;
    let x2 = max_pool_3x3_s2(b, x)?;
    Ok(cat(b, &[x0, x1, x2]))
}

/// `InceptionC`: 1x1 | 1x1→(1x3, 3x1) | 1x1→3x1→1x3→(1x3, 3x1) | avg pool→1x1.
fn inception_c(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let (h, v) = (((1, 3), (0, 1)), ((3, 1), (1, 0)));
    let x0 = c.sq(b, "branch0", x, 256, 1, 1, 0)?;
    let x1 = c.sq(b, "branch1_0", x, 384, 1, 1, 0)?;
    let x1a = c.conv(b, "branch1_1a", &x1, 256, h.0, 1, h.1)?;
    let x1b = c.conv(b, "branch1_1b", &x1, 256, v.0, 1, v.1)?;
    let x1 = cat(b, &[x1a, x1b]);
    let x2 = c.sq(b, "branch2_0", x, 384, 1, 1, 0)?;
    let x2 = c.conv(b, "branch2_1", &x2, 448, v.0, 1, v.1)?;
    let x2 = c.conv(b, "branch2_2", &x2, 512, h.0, 1, h.1)?;
    let x2a = c.conv(b, "branch2_3a", &x2, 256, h.0, 1, h.1)?;
    let x2b = c.conv(b, "branch2_3b", &x2, 256, v.0, 1, v.1)?;
    let x2 = cat(b, &[x2a, x2b]);
    let x3 = avg_pool_3x3_s1(b, x)?;
    let x3 = c.sq(b, "branch3.1", &x3, 256, 1, 1, 0)?;
    Ok(cat(b, &[x0, x1, x2, x3]))
}

/// `create_classifier`: global pool, `last_linear`.
fn head(b: &mut Builder, cfg: &ModelConfig, x: &X) -> Result<(Value, usize)> {
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native Inception-V4 graph",
        ));
    }
    let pooled = global_pool(b, &x.0, pool);
    let width = x.1 * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let s = &mut b.scope("last_linear");
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
