//! RepViT (timm's `repvit.py`): `repvit_m*`. MobileNet-like stages of RepViT blocks (a RepVGG
//! depthwise token mixer, SE on every other block, a 1x1-conv MLP); timm's weights keep the
//! RepVGG-DW branches unfused, so each mixer's branches (conv+BN, 1x1 conv, identity, and the
//! BatchNorm after their sum) are folded into one depthwise conv at load. The distillation head
//! is the mean of `head` and `head_dist`, as timm evaluates it.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::heads::folded_gemm;
use crate::graph::layers::reparam::{conv_bn_branch, plain_identity_branch};
use crate::graph::layers::se::{rd_channels, SqueezeExcite};
use crate::graph::layers::{act, add, conv_bn, reduce_mean, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::transforms::{self, BnStats, Branch};
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/repvit.json"));

pub const FAMILY: Family = Family {
    name: "repvit",
    examples: "repvit_m0_9, repvit_m1, repvit_m1_0, repvit_m1_1, repvit_m1_5, repvit_m2, repvit_m2_3, repvit_m3",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `RepVit.__init__`, timm's defaults.
    struct RepVitArgs {
        in_chans: usize = 3,
        img_size: usize = 224,
        embed_dim: Vec<usize> = vec![48],
        depth: Vec<usize> = vec![2],
        mlp_ratio: PerStage<f64> = PerStage::All(2.0),
        global_pool: Option<String> = None,
        kernel_size: usize = 3,
        act_layer: String = "gelu".into(),
        distillation: bool = true,
        legacy: bool = false,
    }
}

const EPS: f32 = 1e-5;

struct Cfg {
    dims: Vec<usize>,
    depth: Vec<usize>,
    mlp_ratios: Vec<f64>,
    k: usize,
    act: String,
    distillation: bool,
    legacy: bool,
    pool: bool,
}

/// timm's `ConvNorm` (`c` + `bn`), folded.
fn conv_norm(b: &mut Builder, x: &Value, c: Conv) -> Result<Value> {
    conv_bn(b, x, "c", "bn", c.init(Init::KaimingFanOut), EPS)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let d0 = c.dims[0];
    let mut x = stem(&mut b.scope("stem"), &input, in_ch, d0, &c.act)?;
    let (mut prev, mut stride) = (d0, 4);
    {
        let st = &mut b.scope("stages");
        for i in 0..c.dims.len() {
            let s = &mut st.scope(i);
            let (dim, ratio) = (c.dims[i], c.mlp_ratios[i]);
            if i > 0 {
                x = downsample(&mut s.scope("downsample"), &x, prev, dim, ratio, &c)?;
                stride *= 2;
            } else if prev != dim {
                return Err(Error::invalid_model(format!(
                    "RepViT stage 0 changes width {prev} -> {dim} without a downsample"
                )));
            }
            {
                let bl = &mut s.scope("blocks");
                for j in 0..c.depth[i] {
                    x = block(&mut bl.scope(j), &x, dim, ratio, j % 2 == 0, &c)?;
                }
            }
            s.feature(&x, dim, stride, &format!("stages.{i}"));
            prev = dim;
        }
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    if !c.pool {
        return Err(Error::unsupported(
            "RepViT with global_pool '' (unpooled features) is not built natively",
        ));
    }
    let pooled = reduce_mean(b, &x, &[2, 3], false);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, prev));
    }
    let h = &mut b.scope("head");
    let (mut w, mut bias) = norm_linear(&mut h.scope("head"), prev, cfg.num_classes)?;
    if c.distillation {
        let (w2, b2) = norm_linear(&mut h.scope("head_dist"), prev, cfg.num_classes)?;
        for (a, v) in w.iter_mut().zip(&w2) {
            *a = (*a + v) / 2.0;
        }
        for (a, v) in bias.iter_mut().zip(&b2) {
            *a = (*a + v) / 2.0;
        }
    }
    let logits = folded_gemm(h, &pooled, &w, &bias)?;
    Ok((logits, cfg.num_classes))
}

/// `RepVitStem`: two strided 3x3 `ConvNorm`s with the activation between them.
fn stem(b: &mut Builder, x: &Value, in_ch: usize, dim: usize, act_name: &str) -> Result<Value> {
    let c1 = Conv::new(in_ch, dim / 2, 3).stride(2);
    let y = conv_norm(&mut b.scope("conv1"), x, c1)?;
    let y = act(b, act_name, &y)?;
    conv_norm(
        &mut b.scope("conv2"),
        &y,
        Conv::new(dim / 2, dim, 3).stride(2),
    )
}

/// `NormLinear` (`bn`: BatchNorm1d, `l`: Linear) folded into one `[out, in]` weight and bias.
fn norm_linear(b: &mut Builder, dim: usize, classes: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let bn = BnStats::read(&mut b.scope("bn"), dim, EPS)?;
    let (s, t) = bn.affine();
    let l = &mut b.scope("l");
    let w = l.read("weight", &[classes, dim], Init::TruncNormal(0.02))?;
    let bias = l.read("bias", &[classes], Init::Zeros)?;
    let mut fw = Vec::with_capacity(w.len());
    let mut fb = Vec::with_capacity(classes);
    for o in 0..classes {
        let row = &w[o * dim..(o + 1) * dim];
        fw.extend(row.iter().zip(&s).map(|(&w, &s)| w as f64 * s));
        let shift: f64 = row.iter().zip(&t).map(|(&w, &t)| w as f64 * t).sum();
        fb.push(bias[o] as f64 + shift);
    }
    Ok((fw, fb))
}

/// `RepVitDownsample`: a RepViT block without SE, a strided depthwise `ConvNorm`, a 1x1
/// `ConvNorm` to the new width, and a residual MLP.
fn downsample(
    b: &mut Builder,
    x: &Value,
    in_dim: usize,
    out_dim: usize,
    ratio: f64,
    c: &Cfg,
) -> Result<Value> {
    let k = c.k;
    let y = block(&mut b.scope("pre_block"), x, in_dim, ratio, false, c)?;
    let dw = Conv::new(in_dim, in_dim, k)
        .stride(2)
        .groups(in_dim)
        .pad(Pad::Sym((k - 1) / 2));
    let y = conv_norm(&mut b.scope("spatial_downsample"), &y, dw)?;
    let y = conv_norm(
        &mut b.scope("channel_downsample"),
        &y,
        Conv::new(in_dim, out_dim, 1),
    )?;
    let m = mlp(&mut b.scope("ffn"), &y, out_dim, ratio, c)?;
    Ok(add(b, &y, &m))
}

/// `RepViTBlock`: token mixer (folded RepVGG-DW), optional SE, then `x + channel_mixer(x)`.
fn block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    ratio: f64,
    use_se: bool,
    c: &Cfg,
) -> Result<Value> {
    let mut y = rep_vgg_dw(&mut b.scope("token_mixer"), x, dim, c)?;
    if use_se {
        let rd = rd_channels(dim, 0.25, 8);
        y = SqueezeExcite::se_module(dim, rd).apply(&mut b.scope("se"), &y)?;
    }
    let m = mlp(&mut b.scope("channel_mixer"), &y, dim, ratio, c)?;
    Ok(add(b, &y, &m))
}

/// `RepVitMlp`: 1x1 `ConvNorm`, activation, 1x1 `ConvNorm`.
fn mlp(b: &mut Builder, x: &Value, dim: usize, ratio: f64, c: &Cfg) -> Result<Value> {
    let hidden = (dim as f64 * ratio) as usize;
    let y = conv_norm(&mut b.scope("conv1"), x, Conv::new(dim, hidden, 1))?;
    let y = act(b, &c.act, &y)?;
    conv_norm(&mut b.scope("conv2"), &y, Conv::new(hidden, dim, 1))
}

/// `RepVggDw`: `bn(conv(x) + conv1(x) + x)` (legacy: `conv(x) + conv1(x) + x`, `conv1` a
/// `ConvNorm`), as timm's `fuse` makes it one k x k depthwise conv.
fn rep_vgg_dw(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let k = c.k;
    let conv = Conv::new(dim, dim, k)
        .groups(dim)
        .pad(Pad::Sym((k - 1) / 2));
    let one = Conv::new(dim, dim, 1).groups(dim).pad(Pad::Sym(0));
    let mut br = vec![conv_bn_branch(b, "conv.c", "conv.bn", &conv, EPS)?];
    if c.legacy {
        br.push(conv_bn_branch(b, "conv1.c", "conv1.bn", &one, EPS)?);
    } else {
        let s = &mut b.scope("conv1");
        let weight = s.read("weight", &one.weight_shape(), Init::KaimingFanOut)?;
        let bias = s.read("bias", &[dim], Init::Zeros)?;
        br.push(Branch { weight, bias, k: 1 });
    }
    br.push(plain_identity_branch(dim, 1));
    let (mut w, mut bias) = transforms::sum_branches(&br, dim, 1, k);
    if !c.legacy {
        let bn = BnStats::read(&mut b.scope("bn"), dim, EPS)?;
        (w, bias) = transforms::fold_bn(w, Some(bias), &bn);
    }
    let shape = conv.weight_shape();
    let wv = b.tensor("conv.weight", w, &shape)?;
    let bv = b.tensor("conv.bias", bias, &[dim])?;
    conv.bias(true).emit(b, x, &wv, Some(&bv))
}

// ---------------------------------------------------------------------------------------------
// the architecture

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a RepViT variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = RepVitArgs::read(&a)?;
    let _ = (v.img_size, b.weights().is_some());
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let n = v.embed_dim.len();
    if n == 0 || v.depth.len() < n || v.embed_dim.iter().any(|&d| d < 2 || d % 2 != 0) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: model_args embed_dim {:?} (even widths) and depth {:?} must list the same stages",
            v.embed_dim, v.depth
        )));
    }
    if v.kernel_size % 2 == 0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: RepViT kernel_size must be odd (got {})",
            v.kernel_size
        )));
    }
    let mlp_ratios = v.mlp_ratio.expand("mlp_ratio", n)?;
    if mlp_ratios.iter().any(|&r| r <= 0.0) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: mlp_ratio must be positive"
        )));
    }
    let pool = match v
        .global_pool
        .as_deref()
        .or(cfg.global_pool.as_deref())
        .unwrap_or("avg")
    {
        "avg" => true,
        "" => false,
        _ => {
            return Err(a.unsupported(
                "global_pool",
                "timm's RepViT pools by the mean only ('avg' or '')",
            ))
        }
    };
    Ok(Cfg {
        dims: v.embed_dim,
        depth: v.depth[..n].to_vec(),
        mlp_ratios,
        k: v.kernel_size,
        act: crate::graph::layers::act::canonical(&v.act_layer)?.to_string(),
        distillation: v.distillation,
        legacy: v.legacy,
        pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 8);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
