//! Inception-V3 (timm's `inception_v3.py`): `inception_v3` with any of its weights (`tv_in1k`,
//! `tf_in1k`, `adv_in1k`, `gluon_in1k`: one architecture, timm's default config).
//!
//! Every `ConvNormAct` (conv + BatchNorm eps 1e-3, folded, + act) takes its width from its
//! weight when there is one, timm's fixed width otherwise; block inputs follow from the
//! concatenations, so a narrowed model is built as its tensors say.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::fc;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::{concat, conv_norm_act, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/inception_v3.json"));

pub const FAMILY: Family = Family {
    name: "inception_v3",
    examples: "inception_v3",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `InceptionV3.__init__`, timm's defaults.
    struct InceptionV3Args {
        aux_logits: bool = false,
        norm_layer: String = "batchnorm2d".into(),
        norm_eps: f32 = 1e-3,
        act_layer: String = "relu".into(),
    }
}

/// A value and its channel count.
#[derive(Clone)]
struct X(Value, usize);

/// The module's `conv_block`: `ConvNormAct(padding=0)` with the model's norm eps and act.
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
            .init(Init::TruncNormal(0.1));
        let y = conv_norm_act(s, &x.0, c, &Norm::Batch { eps: self.eps }, Some(&self.act))?;
        Ok(X(y, out))
    }

    /// A square `k`x`k` conv_block with symmetric padding `p`.
    fn sq(&self, b: &mut Builder, name: &str, x: &X, out: usize, k: usize, p: usize) -> Result<X> {
        self.conv(b, name, x, out, (k, k), 1, (p, p))
    }
}

fn cat(b: &mut Builder, xs: &[X]) -> X {
    let vs: Vec<&Value> = xs.iter().map(|x| &x.0).collect();
    X(concat(b, &vs, 1), xs.iter().map(|x| x.1).sum())
}

fn avg_pool_3x3_s1(b: &mut Builder, x: &X) -> Result<X> {
    Ok(X(Pool2d::new(3, 1, 1).avg(b, &x.0, x.1)?, x.1))
}

fn max_pool_3x3_s2(b: &mut Builder, x: &X) -> Result<X> {
    Ok(X(Pool2d::new(3, 2, 0).max(b, &x.0, x.1)?, x.1))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = InceptionV3Args::read(&a)?;
    if r.aux_logits {
        return Err(a.unsupported(
            "aux_logits",
            "the auxiliary classifier makes a (logits, aux) pair, not one output",
        ));
    }
    if !matches!(Norm::from_timm(&r.norm_layer, None), Ok(Norm::Batch { .. })) {
        return Err(a.unsupported("norm_layer", "Inception-V3 supports batchnorm only"));
    }
    let c = Ctx {
        eps: r.norm_eps,
        act: r.act_layer,
    };
    let x = X(b.input(), cfg.pretrained_cfg.input_size[0]);
    let x = c.conv(b, "Conv2d_1a_3x3", &x, 32, (3, 3), 2, (0, 0))?;
    let x = c.sq(b, "Conv2d_2a_3x3", &x, 32, 3, 0)?;
    let x = c.sq(b, "Conv2d_2b_3x3", &x, 64, 3, 1)?;
    b.feature(&x.0, x.1, 2, "Conv2d_2b_3x3");
    let x = max_pool_3x3_s2(b, &x)?;
    let x = c.sq(b, "Conv2d_3b_1x1", &x, 80, 1, 0)?;
    let x = c.sq(b, "Conv2d_4a_3x3", &x, 192, 3, 0)?;
    b.feature(&x.0, x.1, 4, "Conv2d_4a_3x3");
    let x = max_pool_3x3_s2(b, &x)?;
    let x = inception_a(&mut b.scope("Mixed_5b"), &c, &x, 32)?;
    let x = inception_a(&mut b.scope("Mixed_5c"), &c, &x, 64)?;
    let x = inception_a(&mut b.scope("Mixed_5d"), &c, &x, 64)?;
    b.feature(&x.0, x.1, 8, "Mixed_5d");
    let x = inception_b(&mut b.scope("Mixed_6a"), &c, &x)?;
    let x = inception_c(&mut b.scope("Mixed_6b"), &c, &x, 128)?;
    let x = inception_c(&mut b.scope("Mixed_6c"), &c, &x, 160)?;
    let x = inception_c(&mut b.scope("Mixed_6d"), &c, &x, 160)?;
    let x = inception_c(&mut b.scope("Mixed_6e"), &c, &x, 192)?;
    b.feature(&x.0, x.1, 16, "Mixed_6e");
    let x = inception_d(&mut b.scope("Mixed_7a"), &c, &x)?;
    let x = inception_e(&mut b.scope("Mixed_7b"), &c, &x)?;
    let x = inception_e(&mut b.scope("Mixed_7c"), &c, &x)?;
    b.feature(&x.0, x.1, 32, "Mixed_7c");
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x.0, x.1));
    }
    head(b, cfg, &x)
}

/// `InceptionA`: 1x1 | 1x1→5x5 | 1x1→3x3→3x3 | avg pool→1x1.
fn inception_a(b: &mut Builder, c: &Ctx, x: &X, pool_features: usize) -> Result<X> {
    let b1 = c.sq(b, "branch1x1", x, 64, 1, 0)?;
    let b5 = c.sq(b, "branch5x5_1", x, 48, 1, 0)?;
    let b5 = c.sq(b, "branch5x5_2", &b5, 64, 5, 2)?;
    let b3 = c.sq(b, "branch3x3dbl_1", x, 64, 1, 0)?;
    let b3 = c.sq(b, "branch3x3dbl_2", &b3, 96, 3, 1)?;
    let b3 = c.sq(b, "branch3x3dbl_3", &b3, 96, 3, 1)?;
    let bp = avg_pool_3x3_s1(b, x)?;
    let bp = c.sq(b, "branch_pool", &bp, pool_features, 1, 0)?;
    Ok(cat(b, &[b1, b5, b3, bp]))
}

/// `InceptionB`: 3x3 s2 | 1x1→3x3→3x3 s2 | max pool s2.
fn inception_b(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let b3 = c.conv(b, "branch3x3", x, 384, (3, 3), 2, (0, 0))?;
    let bd = c.sq(b, "branch3x3dbl_1", x, 64, 1, 0)?;
    let bd = c.sq(b, "branch3x3dbl_2", &bd, 96, 3, 1)?;
    let bd = c.conv(b, "branch3x3dbl_3", &bd, 96, (3, 3), 2, (0, 0))?;
    let bp = max_pool_3x3_s2(b, x)?;
    Ok(cat(b, &[b3, bd, bp]))
}

/// `InceptionC`: factorised 7x7 branches (1x7 / 7x1) of `c7` channels.
fn inception_c(b: &mut Builder, c: &Ctx, x: &X, c7: usize) -> Result<X> {
    let (h, v) = (((1, 7), (0, 3)), ((7, 1), (3, 0)));
    let b1 = c.sq(b, "branch1x1", x, 192, 1, 0)?;
    let b7 = c.sq(b, "branch7x7_1", x, c7, 1, 0)?;
    let b7 = c.conv(b, "branch7x7_2", &b7, c7, h.0, 1, h.1)?;
    let b7 = c.conv(b, "branch7x7_3", &b7, 192, v.0, 1, v.1)?;
    let bd = c.sq(b, "branch7x7dbl_1", x, c7, 1, 0)?;
    let bd = c.conv(b, "branch7x7dbl_2", &bd, c7, v.0, 1, v.1)?;
    let bd = c.conv(b, "branch7x7dbl_3", &bd, c7, h.0, 1, h.1)?;
    let bd = c.conv(b, "branch7x7dbl_4", &bd, c7, v.0, 1, v.1)?;
    let bd = c.conv(b, "branch7x7dbl_5", &bd, 192, h.0, 1, h.1)?;
    let bp = avg_pool_3x3_s1(b, x)?;
    let bp = c.sq(b, "branch_pool", &bp, 192, 1, 0)?;
    Ok(cat(b, &[b1, b7, bd, bp]))
}

/// `InceptionD`: 1x1→3x3 s2 | 1x1→1x7→7x1→3x3 s2 | max pool s2.
fn inception_d(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let b3 = c.sq(b, "branch3x3_1", x, 192, 1, 0)?;
    let b3 = c.conv(b, "branch3x3_2", &b3, 320, (3, 3), 2, (0, 0))?;
    let b7 = c.sq(b, "branch7x7x3_1", x, 192, 1, 0)?;
    let b7 = c.conv(b, "branch7x7x3_2", &b7, 192, (1, 7), 1, (0, 3))?;
    let b7 = c.conv(b, "branch7x7x3_3", &b7, 192, (7, 1), 1, (3, 0))?;
    let b7 = c.conv(b, "branch7x7x3_4", &b7, 192, (3, 3), 2, (0, 0))?;
    let bp = max_pool_3x3_s2(b, x)?;
    Ok(cat(b, &[b3, b7, bp]))
}

/// `InceptionE`: 1x1 | 1x1→(1x3, 3x1) | 1x1→3x3→(1x3, 3x1) | avg pool→1x1.
fn inception_e(b: &mut Builder, c: &Ctx, x: &X) -> Result<X> {
    let b1 = c.sq(b, "branch1x1", x, 320, 1, 0)?;
    let b3 = c.sq(b, "branch3x3_1", x, 384, 1, 0)?;
    let b3a = c.conv(b, "branch3x3_2a", &b3, 384, (1, 3), 1, (0, 1))?;
    let b3b = c.conv(b, "branch3x3_2b", &b3, 384, (3, 1), 1, (1, 0))?;
    let b3 = cat(b, &[b3a, b3b]);
    let bd = c.sq(b, "branch3x3dbl_1", x, 448, 1, 0)?;
    let bd = c.sq(b, "branch3x3dbl_2", &bd, 384, 3, 1)?;
    let bda = c.conv(b, "branch3x3dbl_3a", &bd, 384, (1, 3), 1, (0, 1))?;
    let bdb = c.conv(b, "branch3x3dbl_3b", &bd, 384, (3, 1), 1, (1, 0))?;
    let bd = cat(b, &[bda, bdb]);
    let bp = avg_pool_3x3_s1(b, x)?;
    let bp = c.sq(b, "branch_pool", &bp, 192, 1, 0)?;
    Ok(cat(b, &[b1, b3, bd, bp]))
}

/// `create_classifier`: global pool, `fc` (trunc_normal 0.1).
fn head(b: &mut Builder, cfg: &ModelConfig, x: &X) -> Result<(Value, usize)> {
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native Inception-V3 graph",
        ));
    }
    let pooled = global_pool(b, &x.0, pool);
    let width = x.1 * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = fc(b, &pooled, width, cfg.num_classes, Init::TruncNormal(0.1))?;
    Ok((logits, cfg.num_classes))
}
