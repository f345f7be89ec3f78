//! EfficientViT from MIT Han Lab (timm's `efficientvit_mit.py`): `efficientvit_b0`..`b3`
//! (`EfficientVit`: hard-swish, MBConv stages, lite multi-scale linear attention in the last two)
//! and `efficientvit_l1`..`l3` (`EfficientVitLarge`: GELU-tanh, fused MBConv in the first stages,
//! attention in the last, BatchNorm / LayerNorm eps `norm_eps`).
//!
//! `LiteMLA`: a 1×1 qkv conv, a 5×5 depthwise + grouped 1×1 aggregation of it, heads of
//! `head_dim` channels each for q, k, v; ReLU kernels on q and k, then
//! `(v·kᵀ)·q / (Σk·q + eps)` per head, which is timm's `q·(kᵀ·[v, 1])` with the padded column
//! taken apart. Every BatchNorm right after a conv is folded into it at load.
//!
//! Feature maps: `stages.0`..`3`. timm's model takes no `output_stride`.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::norm::layer_norm;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{act, add, concat, conv2d, conv_bn, reshape, slice, Conv};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/efficientvit_mit.json"));

pub const FAMILY: Family = Family {
    name: "efficientvit_mit",
    examples: "efficientvit_b0..b3, efficientvit_l1..l3",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `EfficientVit.__init__` / `EfficientVitLarge.__init__`'s arguments that shape the graph.
    struct EfficientVitArgs {
        in_chans: usize = 3,
        widths: Vec<usize> = Vec::new(),
        depths: Vec<usize> = Vec::new(),
        head_dim: usize = 32,
        /// `EfficientVit` only (`EfficientVitLarge` fixes its expansions).
        expand_ratio: Option<f64> = None,
        norm_layer: Option<String> = None,
        act_layer: Option<String> = None,
        global_pool: Option<String> = None,
        head_widths: Vec<usize> = Vec::new(),
        /// `EfficientVitLarge` only: every BatchNorm's and the head LayerNorm's eps.
        norm_eps: Option<f64> = None,
    }
}

/// `LiteMLA`'s eps in the attention's denominator.
const ATTN_EPS: f32 = 1e-5;
/// `nn.BatchNorm2d`'s default eps (the B models, and the head's `in_conv` of every model).
const BN_EPS: f32 = 1e-5;

/// Which `build_local_block` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalType {
    /// DSConv (expand 1) / MBConv.
    Default,
    /// ConvBlock (expand 1) / FusedMBConv.
    Large,
}

struct Net {
    large: bool,
    widths: Vec<usize>,
    depths: Vec<usize>,
    head_dim: usize,
    expand: f64,
    act: String,
    eps: f32,
    /// The head's LayerNorm eps.
    head_eps: f32,
    head_widths: [usize; 2],
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = resolve(cfg)?;
    let input = b.input();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let w0 = net.widths[0];
    // Stem: a strided ConvNormAct, then residual DSConv (B) / ConvBlock (L) blocks.
    let mut x = {
        let s = &mut b.scope("stem");
        let c = Conv::new(in_ch, w0, 3).stride(2);
        let mut x = conv_norm_act(
            &mut s.scope("in_conv"),
            &input,
            c,
            true,
            net.eps,
            Some(&net.act),
        )?;
        let kind = if net.large {
            LocalType::Large
        } else {
            LocalType::Default
        };
        for i in 0..net.depths[0] {
            let r = &mut s.scope(format!("res{i}"));
            let y = local_block(&mut r.scope("main"), &x, w0, w0, 1, 1.0, false, kind, &net)?;
            x = add(r, &y, &x);
        }
        x
    };
    let mut in_c = w0;
    let mut stride = 2;
    for (i, (&w, &d)) in net.widths[1..].iter().zip(&net.depths[1..]).enumerate() {
        x = {
            let s = &mut b.scope(format!("stages.{i}.blocks"));
            if net.large {
                stage_large(s, &x, in_c, w, d, i, &net)?
            } else {
                stage(s, &x, in_c, w, d, i, &net)?
            }
        };
        stride *= 2;
        in_c = w;
        b.feature(&x, w, stride, &format!("stages.{i}"));
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, in_c));
    }
    head(&mut b.scope("head"), cfg, &x, in_c, &net)
}

/// `EfficientVitStage`: a strided local block without shortcut, then MBConv blocks (stages 0,
/// 1) or `depth` EfficientViT blocks (stages 2, 3).
fn stage(
    b: &mut Builder,
    x: &Value,
    in_c: usize,
    w: usize,
    depth: usize,
    i: usize,
    net: &Net,
) -> Result<Value> {
    let vit = i >= 2;
    let d = LocalType::Default;
    let mut x = local_block(
        &mut b.scope(0).scope("main"),
        x,
        in_c,
        w,
        2,
        net.expand,
        vit,
        d,
        net,
    )?;
    if vit {
        for j in 1..=depth {
            x = vit_block(&mut b.scope(j), &x, w, net.expand, net)?;
        }
    } else {
        for j in 1..depth {
            let r = &mut b.scope(j);
            let y = local_block(&mut r.scope("main"), &x, w, w, 1, net.expand, false, d, net)?;
            x = add(r, &y, &x);
        }
    }
    Ok(x)
}

/// `EfficientVitLargeStage`: fused MBConv (stages 0, 1) or MBConv with fewer norms (stage 2)
/// local blocks, or EfficientViT blocks (stage 3 on), after a strided local block.
fn stage_large(
    b: &mut Builder,
    x: &Value,
    in_c: usize,
    w: usize,
    depth: usize,
    i: usize,
    net: &Net,
) -> Result<Value> {
    let (vit, fewer) = (i >= 3, i >= 2);
    let kind = if fewer {
        LocalType::Default
    } else {
        LocalType::Large
    };
    let expand = if vit { 24.0 } else { 16.0 };
    let mut x = local_block(
        &mut b.scope(0).scope("main"),
        x,
        in_c,
        w,
        2,
        expand,
        vit || fewer,
        kind,
        net,
    )?;
    for j in 1..=depth {
        if vit {
            x = vit_block(&mut b.scope(j), &x, w, 6.0, net)?;
        } else {
            let r = &mut b.scope(j);
            let y = local_block(&mut r.scope("main"), &x, w, w, 1, 4.0, fewer, kind, net)?;
            x = add(r, &y, &x);
        }
    }
    Ok(x)
}

/// timm's `ConvNormAct` of this module: `conv` (with `bias`), an optional BatchNorm `norm`
/// (folded), an optional activation.
fn conv_norm_act(
    b: &mut Builder,
    x: &Value,
    c: Conv,
    norm: bool,
    eps: f32,
    act_name: Option<&str>,
) -> Result<Value> {
    let y = if norm {
        conv_bn(b, x, "conv", "norm", c, eps)?
    } else {
        conv2d(&mut b.scope("conv"), x, c)?
    };
    match act_name {
        Some(a) => act(b, a, &y),
        None => Ok(y),
    }
}

/// `build_local_block`: DSConv / ConvBlock (expand 1), MBConv / FusedMBConv. `fewer_norm`: only
/// the last conv has a BatchNorm, the others a bias.
#[allow(clippy::too_many_arguments)]
fn local_block(
    b: &mut Builder,
    x: &Value,
    in_c: usize,
    out: usize,
    stride: usize,
    expand: f64,
    fewer_norm: bool,
    kind: LocalType,
    net: &Net,
) -> Result<Value> {
    let (eps, a) = (net.eps, Some(net.act.as_str()));
    let first = |c: Conv| c.bias(fewer_norm);
    let norm_first = !fewer_norm;
    if expand == 1.0 {
        let y = if kind == LocalType::Default {
            let c = first(Conv::new(in_c, in_c, 3).stride(stride).groups(in_c));
            conv_norm_act(&mut b.scope("depth_conv"), x, c, norm_first, eps, a)?
        } else {
            // `round(in * 1)`.
            let c = first(Conv::new(in_c, in_c, 3).stride(stride));
            conv_norm_act(&mut b.scope("conv1"), x, c, norm_first, eps, a)?
        };
        let (name, k) = if kind == LocalType::Default {
            ("point_conv", 1)
        } else {
            ("conv2", 3)
        };
        let c = Conv::new(in_c, out, k);
        return conv_norm_act(&mut b.scope(name), &y, c, true, eps, None);
    }
    let mid = py_round_usize(in_c as f64 * expand);
    let y = if kind == LocalType::Default {
        let c = first(Conv::new(in_c, mid, 1));
        let y = conv_norm_act(&mut b.scope("inverted_conv"), x, c, norm_first, eps, a)?;
        let c = first(Conv::new(mid, mid, 3).stride(stride).groups(mid));
        conv_norm_act(&mut b.scope("depth_conv"), &y, c, norm_first, eps, a)?
    } else {
        let c = first(Conv::new(in_c, mid, 3).stride(stride));
        conv_norm_act(&mut b.scope("spatial_conv"), x, c, norm_first, eps, a)?
    };
    let c = Conv::new(mid, out, 1);
    conv_norm_act(&mut b.scope("point_conv"), &y, c, true, eps, None)
}

/// Python's `round` of a non-negative value to an integer (halves to even).
fn py_round_usize(v: f64) -> usize {
    crate::graph::layers::py_round(v).max(0.0) as usize
}

/// `EfficientVitBlock`: residual LiteMLA (`context_module`), then a residual MBConv with fewer
/// norms (`local_module`).
fn vit_block(b: &mut Builder, x: &Value, dim: usize, expand: f64, net: &Net) -> Result<Value> {
    let x = {
        let r = &mut b.scope("context_module");
        let y = lite_mla(&mut r.scope("main"), x, dim, net)?;
        add(r, &y, x)
    };
    let r = &mut b.scope("local_module");
    let d = LocalType::Default;
    let y = local_block(&mut r.scope("main"), &x, dim, dim, 1, expand, true, d, net)?;
    Ok(add(r, &y, &x))
}

/// `LiteMLA(in, in, dim=head_dim, scales=(5,))` with a BatchNorm after `proj`.
fn lite_mla(b: &mut Builder, x: &Value, ch: usize, net: &Net) -> Result<Value> {
    let d = net.head_dim;
    let heads = ch / d;
    let total = heads * d;
    let qkv = conv_norm_act(
        &mut b.scope("qkv"),
        x,
        Conv::new(ch, 3 * total, 1),
        false,
        net.eps,
        None,
    )?;
    let agg = {
        let s = &mut b.scope("aggreg.0");
        let c = Conv::new(3 * total, 3 * total, 5).groups(3 * total);
        let y = conv2d(&mut s.scope(0), &qkv, c)?;
        let c = Conv::new(3 * total, 3 * total, 1).groups(3 * heads);
        let y = conv2d(&mut s.scope(1), &y, c)?;
        y
    };
    let ms = concat(b, &[&qkv, &agg], 1);
    // [B, G, 3·d, H·W]: G = 2·heads groups of (q, k, v) channels.
    let groups = 2 * heads;
    let t = reshape(b, &ms, &[0, groups as i64, 3 * d as i64, -1]);
    let q = slice(b, &t, 2, 0, d as i64);
    let k = slice(b, &t, 2, d as i64, 2 * d as i64);
    let v = slice(b, &t, 2, 2 * d as i64, 3 * d as i64);
    let q = act(b, "relu", &q)?;
    let k = act(b, "relu", &k)?;
    // timm: out = q·(kᵀ·[v, 1]) over tokens; here transposed, [B, G, d, N].
    let kt = b.op(
        "Transpose",
        &[&k],
        vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
    );
    let vk = b.op("MatMul", &[&v, &kt], vec![]);
    let num = b.op("MatMul", &[&vk, &q], vec![]);
    let axes = b.ints(&[3]);
    let ksum = b.op("ReduceSum", &[&k, &axes], vec![("keepdims", Attr::Int(1))]);
    let ksum_t = b.op(
        "Transpose",
        &[&ksum],
        vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
    );
    let den = b.op("MatMul", &[&ksum_t, &q], vec![]);
    let eps = b.scalar(ATTN_EPS);
    let den = b.op("Add", &[&den, &eps], vec![]);
    let out = b.op("Div", &[&num, &den], vec![]);
    // Back to [B, G·d, H, W] with x's batch and spatial size.
    let shape = b.op("Shape", &[x], vec![]);
    let batch = slice(b, &shape, 0, 0, 1);
    let hw = slice(b, &shape, 0, 2, 4);
    let c = b.const_i64(vec![(groups * d) as i64], &[1]);
    let new_shape = concat(b, &[&batch, &c, &hw], 0);
    let out = b.op("Reshape", &[&out, &new_shape], vec![]);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&out, s);
    }
    conv_norm_act(
        &mut b.scope("proj"),
        &out,
        Conv::new(groups * d, ch, 1),
        true,
        net.eps,
        None,
    )
}

/// `ClassifierHead`: `in_conv` (1×1 ConvNormAct), global pool, Linear (no bias), LayerNorm, act
/// (the pre-logits features), Linear.
fn head(
    b: &mut Builder,
    cfg: &ModelConfig,
    x: &Value,
    in_c: usize,
    net: &Net,
) -> Result<(Value, usize)> {
    let [w0, w1] = net.head_widths;
    let c = Conv::new(in_c, w0, 1);
    // The head's BatchNorm is the default nn.BatchNorm2d in both classes.
    let y = conv_norm_act(&mut b.scope("in_conv"), x, c, true, BN_EPS, Some(&net.act))?;
    let p = global_pool(b, &y, net.pool);
    let h = {
        let cls = &mut b.scope("classifier");
        let h = linear_2d(
            &mut cls.scope(0),
            &p,
            w0,
            w1,
            false,
            Init::TruncNormal(0.02),
        )?;
        let h = layer_norm(&mut cls.scope(1), &h, w1, net.head_eps)?;
        act(cls, &net.act, &h)?
    };
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((h, w1));
    }
    let logits = linear_2d(
        &mut b.scope("classifier.4"),
        &h,
        w1,
        cfg.num_classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((logits, cfg.num_classes))
}

fn resolve(cfg: &ModelConfig) -> Result<Net> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an EfficientViT (MIT) variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = EfficientVitArgs::read(&a)?;
    // The entrypoint picks the class: efficientvit_b* EfficientVit, efficientvit_l* the large one.
    let large = arch.starts_with("efficientvit_l");
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if large && v.expand_ratio.is_some() {
        return Err(a.unsupported(
            "expand_ratio",
            "EfficientVitLarge takes no expand_ratio (its expansions are fixed)",
        ));
    }
    if !large && v.norm_eps.is_some() {
        return Err(a.unsupported("norm_eps", "only EfficientVitLarge takes norm_eps"));
    }
    if let Some(n) = &v.norm_layer {
        let n = n.to_ascii_lowercase().replace('_', "");
        if n != "batchnorm2d" {
            return Err(a.unsupported("norm_layer", "only BatchNorm2d is built"));
        }
    }
    let act_name = match &v.act_layer {
        Some(s) => crate::graph::layers::act::canonical(s)?.to_string(),
        None if large => "gelu_tanh".into(),
        None => "hard_swish".into(),
    };
    let n = v.widths.len();
    if n != 5 || v.depths.len() != 5 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: widths and depths need 5 entries (stem and four stages), got {} and {}",
            n,
            v.depths.len()
        )));
    }
    if v.widths.contains(&0) || v.head_dim == 0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: widths and head_dim must be positive"
        )));
    }
    // Attention stages: LiteMLA's heads are `in // head_dim`.
    let first_vit = if large { 4 } else { 3 };
    for &w in &v.widths[first_vit..] {
        if w < v.head_dim {
            return Err(Error::invalid_model(format!(
                "`{arch}`: attention width {w} is smaller than head_dim {}",
                v.head_dim
            )));
        }
    }
    if v.head_widths.len() != 2 || v.head_widths.contains(&0) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: head_widths needs two positive widths"
        )));
    }
    let expand = v.expand_ratio.unwrap_or(4.0);
    if !(expand > 0.0 && expand <= 64.0) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: expand_ratio must be in (0, 64]"
        )));
    }
    let eps = v
        .norm_eps
        .map_or(if large { 1e-7 } else { BN_EPS }, |e| e as f32);
    let pool_name = v
        .global_pool
        .or(cfg.global_pool.clone())
        .unwrap_or_else(|| "avg".into());
    let pool = PoolKind::from_timm(&pool_name)?;
    if pool == PoolKind::None || pool.multiplier() != 1 {
        return Err(a.unsupported(
            "global_pool",
            "timm's ClassifierHead needs a pooling that keeps the width (not '' or catavgmax)",
        ));
    }
    Ok(Net {
        large,
        widths: v.widths,
        depths: v.depths,
        head_dim: v.head_dim,
        expand,
        act: act_name,
        eps,
        head_eps: if large { eps } else { BN_EPS },
        head_widths: [v.head_widths[0], v.head_widths[1]],
        pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 7);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
            resolve(&cfg).unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
