//! FocalNet (timm's `focalnet.py`): `focalnet_tiny_srf` .. `focalnet_huge_fl4`.
//!
//! Fully convolutional on NCHW, as timm's refactor: a patch (or overlapping 7×7) stride-4 conv
//! stem with a LayerNorm2d, four stages of a stride-2 conv downsample (from the second stage on)
//! and `FocalNetBlock`s. A block's focal modulation projects to a query, a context and
//! `focal_level + 1` gates (`f`), aggregates the context through `focal_level` depthwise convs
//! with GELU (kernels `2·l + focal_window`) plus a global average, each gated, and modulates the
//! query with `h` of that sum before `proj`. The large models put the norms after the branches
//! (`use_post_norm`), optionally one inside the modulation, and scale both branches
//! (`layerscale_value`). The head is the final norm + `ClassifierHead`, or with
//! `head_hidden_size` timm's `NormMlpClassifierHead`.
//!
//! Feature maps: every stage (`layers.<i>`, before the final norm). timm's FocalNet takes no
//! output_stride.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::{classifier_head, norm_mlp_head};
use crate::graph::layers::mlp::{conv_mlp, layer_scale_2d, MlpCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::{
    act, add, conv2d, mul, reduce_mean, scale, slice, split, Conv, Norm, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/focalnet.json"));

pub const FAMILY: Family = Family {
    name: "focalnet",
    examples: "focalnet_tiny_srf..focalnet_base_lrf, focalnet_large_fl3..focalnet_huge_fl4",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `FocalNet.__init__`'s keyword arguments with timm's defaults.
    struct FocalNetArgs {
        in_chans: usize = 3,
        embed_dim: usize = 96,
        depths: Vec<usize> = vec![2, 2, 6, 2],
        mlp_ratio: f64 = 4.0,
        focal_levels: Vec<usize> = vec![2, 2, 2, 2],
        focal_windows: Vec<usize> = vec![3, 3, 3, 3],
        use_overlap_down: bool = false,
        use_post_norm: bool = false,
        use_post_norm_in_modulation: bool = false,
        normalize_modulator: bool = false,
        head_hidden_size: Option<usize> = None,
        layerscale_value: Option<f32> = None,
        /// Accepted at timm's default only (`partial(LayerNorm2d, eps=1e-5)`).
        norm_layer: serde_json::Value = serde_json::Value::Null,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Every conv and Linear: timm's `_init_weights`.
const INIT: Init = Init::TruncNormal(0.02);
/// `partial(LayerNorm2d, eps=1e-5)`, FocalNet's norm everywhere.
const NORM: Norm = Norm::Layer { eps: 1e-5 };
/// `FocalModulation`'s `focal_factor` (FocalNetBlock never passes another).
const FOCAL_FACTOR: usize = 2;

/// The resolved architecture.
#[derive(Debug, Clone)]
struct Cfg {
    embed_dim: usize,
    depths: Vec<usize>,
    mlp_ratio: f64,
    focal_levels: Vec<usize>,
    focal_windows: Vec<usize>,
    overlap: bool,
    post_norm: bool,
    post_norm_in_modulation: bool,
    normalize_modulator: bool,
    head_hidden: Option<usize>,
    layerscale: Option<f32>,
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let mut x = downsample(
        &mut b.scope("stem"),
        &input,
        in_chans,
        c.embed_dim,
        4,
        c.overlap,
    )?;
    let mut prev = c.embed_dim;
    for (i, &depth) in c.depths.iter().enumerate() {
        let mut layers = b.scope("layers");
        let s = &mut layers.scope(i);
        let dim = c.embed_dim << i;
        if i > 0 {
            x = downsample(&mut s.scope("downsample"), &x, prev, dim, 2, c.overlap)?;
        }
        for j in 0..depth {
            x = block(&mut s.scope("blocks").scope(j), &x, dim, i, &c)?;
        }
        let module = s.path().to_string();
        s.feature(&x, dim, 4 << i, &module);
        prev = dim;
    }
    let features = b.output() == OutputKind::Features;
    match c.head_hidden {
        Some(hidden) => norm_mlp_head(
            &mut b.scope("head"),
            &x,
            prev,
            c.pool,
            &NORM,
            Some(hidden),
            "tanh",
            cfg.num_classes,
            features,
        ),
        None => {
            let x = NORM.apply_2d(&mut b.scope("norm"), &x, prev)?;
            classifier_head(
                &mut b.scope("head"),
                &x,
                prev,
                c.pool,
                cfg.num_classes,
                features,
            )
        }
    }
}

/// timm's `Downsample`: `proj` (kernel = stride, or overlapping 7×7 / 3×3) and its `norm`.
fn downsample(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    out_chs: usize,
    stride: usize,
    overlap: bool,
) -> Result<Value> {
    let (k, p) = match (overlap, stride) {
        (true, 4) => (7, 2),
        (true, _) => (3, 1),
        (false, s) => (s, 0),
    };
    let conv = Conv::new(in_chs, out_chs, k)
        .stride(stride)
        .pad(Pad::Sym(p))
        .bias(true)
        .init(INIT);
    let y = conv2d(&mut b.scope("proj"), x, conv)?;
    NORM.apply_2d(&mut b.scope("norm"), &y, out_chs)
}

/// `FocalNetBlock`: `x + ls1(post(modulation(pre(x))))`, then the same around the conv MLP; the
/// norms sit before the branches, or after them with `use_post_norm`.
fn block(b: &mut Builder, x: &Value, dim: usize, stage: usize, c: &Cfg) -> Result<Value> {
    let branch = |b: &mut Builder, y: &Value, n: &str, ls: &str| -> Result<Value> {
        let y = if c.post_norm {
            NORM.apply_2d(&mut b.scope(format!("{n}_post")), y, dim)?
        } else {
            y.clone()
        };
        match c.layerscale {
            Some(v) => layer_scale_2d(&mut b.scope(ls), &y, dim, v),
            None => Ok(y),
        }
    };
    let pre = |b: &mut Builder, y: &Value, n: &str| -> Result<Value> {
        if c.post_norm {
            Ok(y.clone())
        } else {
            NORM.apply_2d(&mut b.scope(n), y, dim)
        }
    };
    let y = pre(b, x, "norm1")?;
    let y = modulation(&mut b.scope("modulation"), &y, dim, stage, c)?;
    let y = branch(b, &y, "norm1", "ls1")?;
    let x = add(b, x, &y);
    let y = pre(b, &x, "norm2")?;
    let hidden = match b.weight_shape("mlp.fc1.weight") {
        Some(s) if s.len() == 4 => s[0],
        _ => (dim as f64 * c.mlp_ratio) as usize,
    };
    let m = MlpCfg::new(dim, hidden, "gelu");
    let y = conv_mlp(&mut b.scope("mlp"), &y, &m)?;
    let y = branch(b, &y, "norm2", "ls2")?;
    Ok(add(b, &x, &y))
}

/// `FocalModulation`.
fn modulation(b: &mut Builder, x: &Value, dim: usize, stage: usize, c: &Cfg) -> Result<Value> {
    let levels = c.focal_levels[stage];
    let pw = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(true).init(INIT);
    let f = conv2d(&mut b.scope("f"), x, pw(dim, 2 * dim + levels + 1))?;
    let parts = split(b, &f, 1, &[dim, dim, levels + 1]);
    let (q, mut ctx, gates) = (&parts[0], parts[1].clone(), &parts[2]);
    let mut ctx_all: Option<Value> = None;
    for l in 0..levels {
        let k = FOCAL_FACTOR * l + c.focal_windows[stage];
        let dw = Conv::new(dim, dim, k)
            .depthwise()
            .pad(Pad::Sym(k / 2))
            .init(INIT);
        let y = conv2d(&mut b.scope("focal_layers").scope(l).scope(0), &ctx, dw)?;
        ctx = act(b, "gelu", &y)?;
        let g = slice(b, gates, 1, l as i64, l as i64 + 1);
        let term = mul(b, &ctx, &g);
        ctx_all = Some(match ctx_all {
            Some(a) => add(b, &a, &term),
            None => term,
        });
    }
    let global = reduce_mean(b, &ctx, &[2, 3], true);
    let global = act(b, "gelu", &global)?;
    let g = slice(b, gates, 1, levels as i64, levels as i64 + 1);
    let term = mul(b, &global, &g);
    let mut ctx_all = match ctx_all {
        // Ordered as timm adds: the map first, so the sum keeps its spatial size.
        Some(a) => add(b, &a, &term),
        // focal_level 0: timm's `0 + ctx_global * gate` broadcasts over the gate's map.
        None => mul(b, &g, &global),
    };
    if c.normalize_modulator {
        ctx_all = scale(b, &ctx_all, 1.0 / (levels + 1) as f32);
    }
    let hm = conv2d(&mut b.scope("h"), &ctx_all, pw(dim, dim))?;
    let mut y = mul(b, q, &hm);
    if c.post_norm_in_modulation {
        y = NORM.apply_2d(&mut b.scope("norm"), &y, dim)?;
    }
    conv2d(&mut b.scope("proj"), &y, pw(dim, dim))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a FocalNet variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = FocalNetArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if !(v.norm_layer.is_null() || v.norm_layer.as_str() == Some("layernorm2d")) {
        return Err(a.unsupported(
            "norm_layer",
            "the native FocalNet builds timm's LayerNorm2d(eps=1e-5)",
        ));
    }
    let pool_name =
        (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", String::as_str);
    let mut c = Cfg {
        embed_dim: v.embed_dim,
        depths: v.depths,
        mlp_ratio: v.mlp_ratio,
        focal_levels: v.focal_levels,
        focal_windows: v.focal_windows,
        overlap: v.use_overlap_down,
        post_norm: v.use_post_norm,
        post_norm_in_modulation: v.use_post_norm_in_modulation,
        normalize_modulator: v.normalize_modulator,
        head_hidden: v.head_hidden_size.filter(|&h| h > 0),
        layerscale: v.layerscale_value,
        pool: PoolKind::from_timm(pool_name)?,
    };
    if b.weights().is_some() {
        read_structure(b, &a, &mut c);
    }
    let n = c.depths.len();
    if n == 0 || n > 8 || c.embed_dim == 0 || c.embed_dim.checked_shl(n as u32).is_none() {
        return Err(Error::invalid_model(format!(
            "FocalNet embed_dim {} and depths {:?}: a positive width, 1..=8 stages",
            c.embed_dim, c.depths
        )));
    }
    if c.focal_levels.len() < n || c.focal_windows.len() < n {
        return Err(Error::invalid_model(format!(
            "FocalNet focal_levels {:?} and focal_windows {:?} need an entry per stage ({n})",
            c.focal_levels, c.focal_windows
        )));
    }
    if c.focal_windows[..n].iter().any(|w| w % 2 == 0) {
        // An even kernel with padding k // 2 grows the map, and timm's gating then fails.
        return Err(a.unsupported(
            "focal_windows",
            "timm's FocalModulation only runs with odd focal windows",
        ));
    }
    if c.pool == PoolKind::None || (c.pool == PoolKind::CatAvgMax && c.head_hidden.is_some()) {
        return Err(Error::unsupported(format!(
            "global_pool `{pool_name}` is not supported by the native FocalNet (avg, max, avgmax{})",
            if c.head_hidden.is_none() { ", catavgmax" } else { "" }
        )));
    }
    Ok(c)
}

/// Reads what the weights determine (for folders whose `model_args` were lost); an argument
/// config.json sets explicitly still wins, so a disagreeing file fails on that tensor.
fn read_structure(b: &mut Builder, a: &Args, c: &mut Cfg) {
    let ex = |k: &str| a.explicit(k);
    if let Some(w) = b.weight_shape("stem.proj.weight").filter(|w| w.len() == 4) {
        if !ex("embed_dim") {
            c.embed_dim = w[0];
        }
        if !ex("use_overlap_down") {
            c.overlap = w[2] == 7;
        }
    }
    if !ex("head_hidden_size") {
        c.head_hidden = b.weight_shape("head.pre_logits.fc.weight").map(|w| w[0]);
    }
    let st = &mut b.scope("layers");
    let n = (0..).take_while(|&i| st.has_module(&i.to_string())).count();
    if n == 0 {
        return;
    }
    if !ex("depths") {
        c.depths = (0..n)
            .map(|i| {
                (0..)
                    .take_while(|&j| st.has_module(&format!("{i}.blocks.{j}")))
                    .count()
            })
            .collect();
    }
    let blk = "0.blocks.0";
    if !ex("use_post_norm") && st.has_module(blk) {
        c.post_norm = st.has_weight(&format!("{blk}.norm1_post.weight"));
    }
    if !ex("use_post_norm_in_modulation") && st.has_module(blk) {
        c.post_norm_in_modulation = st.has_weight(&format!("{blk}.modulation.norm.weight"));
    }
    if !ex("layerscale_value") && st.has_module(blk) {
        // The value only initialises gamma; the weights hold the trained one.
        c.layerscale = st
            .has_weight(&format!("{blk}.ls1.gamma"))
            .then_some(c.layerscale.unwrap_or(1e-4));
    }
    for i in 0..n.min(c.focal_levels.len()).min(c.focal_windows.len()) {
        let m = format!("{i}.blocks.0.modulation.focal_layers");
        if !st.has_module(&m) {
            continue;
        }
        if !ex("focal_levels") {
            c.focal_levels[i] = (0..)
                .take_while(|&l| st.has_module(&format!("{m}.{l}")))
                .count();
        }
        if !ex("focal_windows") {
            if let Some(w) = st.weight_shape(&format!("{m}.0.0.weight")) {
                c.focal_windows[i] = w[2];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 12);
        for arch in TABLE.names() {
            assert!((FAMILY.matches)(arch), "{arch} is not matched");
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
