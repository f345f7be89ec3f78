//! EfficientFormer (timm's `efficientformer.py`): `efficientformer_l1`, `_l3`, `_l7`.
//!
//! `Stem4` (two 3×3 stride-2 conv + BatchNorm + ReLU), then stages of PoolFormer-like
//! `MetaBlock2d`s (`pool(x) - x` token mixer, a 1×1-conv MLP with BatchNorms, LayerScale2d) with
//! a 3×3 stride-2 conv + BatchNorm `downsample` before each but the first; the last stage ends
//! in `num_vit` `MetaBlock1d`s on flattened tokens (`Flat` takes a slot in `blocks`): LayerNorm,
//! an attention with fixed 8 heads of key_dim 32 and value dim 128 and a learned bias over
//! absolute offsets of a 7×7 grid, timm's `Mlp`, LayerScale. Every BatchNorm after a conv is
//! folded at load. The head: final LayerNorm, mean over tokens, and in eval `(head(x) +
//! head_dist(x)) / 2` computed as timm does, two linears then the mean.
//!
//! The attention bias is sized for a 7×7 grid (timm fixes it, a 224×224 input), so the graph
//! takes one input size. Feature maps: `stages.{i}` via timm's `forward_intermediates` (the last
//! stage's tokens reshaped to NCHW, before the final norm).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention_bias::offset_attention_bias;
use crate::graph::layers::mlp::{layer_scale, layer_scale_2d, linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::{self, act, conv_bn, layer_norm, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/efficientformer.json"));

/// The `efficientformer` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "efficientformer",
    examples: "efficientformer_l1, efficientformer_l3, efficientformer_l7",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `EfficientFormer.__init__`'s keyword arguments with timm's defaults.
    pub struct EfficientFormerArgs {
        depths: Vec<usize> = vec![3, 2, 6, 4],
        embed_dims: Vec<usize> = vec![48, 96, 224, 448],
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        downsamples: Option<Vec<bool>> = None,
        num_vit: usize = 0,
        mlp_ratios: f64 = 4.0,
        pool_size: usize = 3,
        layer_scale_init_value: f64 = 1e-5,
        act_layer: String = "gelu".into(),
        norm_layer: String = "batchnorm2d".into(),
        norm_layer_cl: String = "layernorm".into(),
        /// Accepted and unused by timm (the attention grid is fixed at 7×7).
        img_size: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;
/// `nn.LayerNorm`'s eps (the blocks' and the final norm).
const LN_EPS: f32 = 1e-5;
/// timm's `_init_weights`: every Linear.
const INIT: Init = Init::TruncNormal(0.02);
/// `Attention`'s constructor defaults, which `MetaBlock1d` never overrides.
const HEADS: usize = 8;
const KEY_DIM: usize = 32;
const VAL_DIM: usize = 4 * KEY_DIM;
const ATTN_RES: (usize, usize) = (7, 7);

#[derive(Debug, Clone)]
struct Cfg {
    depths: Vec<usize>,
    dims: Vec<usize>,
    downsamples: Vec<bool>,
    num_vit: usize,
    mlp_ratio: f64,
    pool_size: usize,
    ls_init: f32,
    pool: bool,
}

fn resolve(cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an EfficientFormer architecture this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = EfficientFormerArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    // timm calls these classes (a string in config.json would not construct in timm either).
    for (key, val, want) in [
        ("act_layer", &v.act_layer, "gelu"),
        ("norm_layer", &v.norm_layer, "batchnorm2d"),
        ("norm_layer_cl", &v.norm_layer_cl, "layernorm"),
    ] {
        if val != want {
            return Err(a.unsupported(key, &format!("only timm's default ({want}) is built")));
        }
    }
    let n = v.depths.len();
    if n == 0 || n > 8 || v.embed_dims.len() != n || v.embed_dims.contains(&0) {
        return Err(Error::invalid_model(format!(
            "EfficientFormer depths {:?} and embed_dims {:?}: one positive width per stage, 1..=8 stages",
            v.depths, v.embed_dims
        )));
    }
    let downsamples = match v.downsamples {
        // timm's `downsamples or ...`: an empty list takes the default too.
        Some(d) if !d.is_empty() => d,
        _ => (0..n).map(|i| i > 0).collect(),
    };
    if downsamples.len() < n {
        return Err(Error::invalid_model(format!(
            "EfficientFormer downsamples {downsamples:?} has fewer entries than its {n} stages"
        )));
    }
    for (i, &down) in downsamples.iter().enumerate().take(n) {
        let prev = v.embed_dims[i.saturating_sub(1)];
        if !down && prev != v.embed_dims[i] {
            return Err(Error::invalid_model(format!(
                "EfficientFormer stage {i} has no downsample but changes width {prev} -> {}",
                v.embed_dims[i]
            )));
        }
    }
    if v.num_vit == 0 {
        // Without attention blocks the last stage stays NCHW, and timm's head then applies its
        // LayerNorm to the width axis and averages over channels: no classifier comes out.
        return Err(a.unsupported(
            "num_vit",
            "timm's head needs the final stage's tokens (num_vit >= 1)",
        ));
    }
    if !downsamples[n - 1] {
        // forward_intermediates reshapes the last stage's tokens to half the previous grid.
        return Err(a.unsupported(
            "downsamples",
            "timm's EfficientFormer needs a downsample before the last (attention) stage",
        ));
    }
    if v.pool_size == 0 || v.pool_size.is_multiple_of(2) {
        return Err(a.unsupported("pool_size", "an odd pool keeps the map size in timm"));
    }
    if v.mlp_ratios.is_nan() || v.mlp_ratios <= 0.0 {
        return Err(Error::invalid_model(
            "EfficientFormer mlp_ratios must be positive",
        ));
    }
    let pool = match v.global_pool.as_str() {
        "avg" => true,
        "" => false,
        _ => return Err(a.unsupported("global_pool", "timm takes 'avg' or ''")),
    };
    Ok(Cfg {
        depths: v.depths,
        dims: v.embed_dims,
        downsamples,
        num_vit: v.num_vit,
        mlp_ratio: v.mlp_ratios,
        pool_size: v.pool_size,
        ls_init: v.layer_scale_init_value as f32,
        pool,
    })
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let mut x = {
        let s = &mut b.scope("stem");
        let d0 = c.dims[0];
        let conv = |i, o| {
            Conv::new(i, o, 3)
                .stride(2)
                .pad(Pad::Sym(1))
                .bias(true)
                .init(Init::DefaultUniform)
        };
        let y = conv_bn(s, &input, "conv1", "norm1", conv(in_ch, d0 / 2), BN_EPS)?;
        let y = act(s, "relu", &y)?;
        let y = conv_bn(s, &y, "conv2", "norm2", conv(d0 / 2, d0), BN_EPS)?;
        act(s, "relu", &y)?
    };
    let n = c.depths.len();
    let mut prev = c.dims[0];
    let mut tokens = None;
    for (i, &depth) in c.depths.iter().enumerate() {
        let mut stages = b.scope("stages");
        let s = &mut stages.scope(i);
        let dim = c.dims[i];
        if c.downsamples[i] {
            let conv = Conv::new(prev, dim, 3)
                .stride(2)
                .pad(Pad::Sym(1))
                .bias(true)
                .init(Init::DefaultUniform);
            x = conv_bn(&mut s.scope("downsample"), &x, "conv", "norm", conv, BN_EPS)?;
        }
        let num_vit = if i == n - 1 { c.num_vit } else { 0 };
        // timm's `blocks` Sequential: `Flat` takes an index before the first MetaBlock1d.
        let mut idx = 0;
        let mut grid = None;
        let mut flat = |s: &mut Builder, x: &Value, idx: &mut usize| -> Result<Value> {
            let sp = s
                .spatial(x)
                .cloned()
                .ok_or_else(|| Error::invalid_model("EfficientFormer map has no spatial size"))?;
            grid = Some(sp);
            *idx += 1;
            Ok(layers::nchw_to_tokens(s, x, dim))
        };
        if num_vit >= depth {
            x = flat(s, &x, &mut idx)?;
        }
        for j in 0..depth {
            let remain = depth - j - 1;
            if num_vit > remain {
                x = meta_block_1d(&mut s.scope("blocks").scope(idx), &x, dim, &c)?;
                idx += 1;
            } else {
                x = meta_block_2d(&mut s.scope("blocks").scope(idx), &x, dim, &c)?;
                idx += 1;
                if num_vit == remain && num_vit > 0 {
                    x = flat(s, &x, &mut idx)?;
                }
            }
        }
        let reduction = 1 << (i + 2);
        let module = format!("stages.{i}");
        match grid {
            None => s.feature(&x, dim, reduction, &module),
            Some(sp) => {
                let (h, w) = s.image_size();
                let (gh, gw) = (sp.eval(h), sp.eval(w));
                if (gh, gw) != (Some(ATTN_RES.0), Some(ATTN_RES.1)) {
                    return Err(Error::invalid_argument(format!(
                        "EfficientFormer's attention bias is sized for a 7x7 grid (a 224x224 input); a {h}x{w} input gives {gh:?}x{gw:?}"
                    )));
                }
                let map = layers::reshape(s, &x, &[-1, 7, 7, dim as i64]);
                let map = layers::nhwc_to_nchw(s, &map);
                s.assign_spatial(&map, sp);
                s.feature(&map, dim, reduction, &module);
                tokens = Some(x.clone());
            }
        }
        prev = dim;
    }
    if n > 4 {
        // timm's default out_indices=4: the last four stages.
        let idx: Vec<i64> = (n as i64 - 4..n as i64).collect();
        b.default_out_indices(&idx);
    }
    let x = tokens.ok_or_else(|| Error::invalid_model("EfficientFormer ends without tokens"))?;
    let x = layer_norm(&mut b.scope("norm"), &x, prev, LN_EPS)?;
    if !c.pool && b.output() != OutputKind::FeatureMaps {
        // Feature maps need no pool (timm's features_only takes global_pool '' too).
        return Err(Error::unsupported(
            "EfficientFormer with global_pool '' (a classifier per token) is not built natively",
        ));
    }
    let pooled = layers::reduce_mean(b, &x, &[1], false);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, prev));
    }
    let k = cfg.num_classes;
    let y = linear_2d(&mut b.scope("head"), &pooled, prev, k, true, INIT)?;
    let yd = linear_2d(&mut b.scope("head_dist"), &pooled, prev, k, true, INIT)?;
    // timm's eval forward: `(x + x_dist) / 2`.
    let sum = layers::add(b, &y, &yd);
    let two = b.scalar(2.0);
    Ok((b.op("Div", &[&sum, &two], vec![]), k))
}

/// `MetaBlock2d`: `x + ls1(pool(x) - x)`, then `x + ls2(mlp(x))` on NCHW.
fn meta_block_2d(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let p = c.pool_size;
    let pooled = Pool2d::new(p, 1, p / 2)
        .count_include_pad(false)
        .avg(b, x, dim)?;
    let y = b.op("Sub", &[&pooled, x], vec![]);
    let y = layer_scale_2d(&mut b.scope("ls1"), &y, dim, c.ls_init)?;
    let x = layers::add(b, x, &y);
    let hidden = (dim as f64 * c.mlp_ratio) as usize;
    let y = {
        let m = &mut b.scope("mlp");
        let pw = |i, o| {
            Conv::new(i, o, 1)
                .pad(Pad::Sym(0))
                .bias(true)
                .init(Init::DefaultUniform)
        };
        let y = conv_bn(m, &x, "fc1", "norm1", pw(dim, hidden), BN_EPS)?;
        let y = act(m, "gelu", &y)?;
        conv_bn(m, &y, "fc2", "norm2", pw(hidden, dim), BN_EPS)?
    };
    let y = layer_scale_2d(&mut b.scope("ls2"), &y, dim, c.ls_init)?;
    Ok(layers::add(b, &x, &y))
}

/// `MetaBlock1d`: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))` on tokens.
fn meta_block_1d(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let y = layer_norm(&mut b.scope("norm1"), x, dim, LN_EPS)?;
    let y = attention(&mut b.scope("token_mixer"), &y, dim)?;
    let y = layer_scale(&mut b.scope("ls1"), &y, dim, c.ls_init)?;
    let x = layers::add(b, x, &y);
    let y = layer_norm(&mut b.scope("norm2"), &x, dim, LN_EPS)?;
    let hidden = (dim as f64 * c.mlp_ratio) as usize;
    let y = mlp(&mut b.scope("mlp"), &y, &MlpCfg::new(dim, hidden, "gelu"))?;
    let y = layer_scale(&mut b.scope("ls2"), &y, dim, c.ls_init)?;
    Ok(layers::add(b, &x, &y))
}

/// `Attention`: `qkv` viewed `(heads, q | k | v)` per token, `softmax(q kᵀ · scale + bias) v`,
/// heads concatenated, `proj`.
fn attention(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let per = 2 * KEY_DIM + VAL_DIM;
    let qkv = linear(&mut b.scope("qkv"), x, dim, HEADS * per, true, INIT)?;
    let qkv = layers::reshape(b, &qkv, &[0, 0, HEADS as i64, per as i64]);
    let qkv = layers::transpose(b, &qkv, &[0, 2, 1, 3]);
    let p = layers::split(b, &qkv, 3, &[KEY_DIM, KEY_DIM, VAL_DIM]);
    let kt = layers::transpose(b, &p[1], &[0, 1, 3, 2]);
    let logits = b.op("MatMul", &[&p[0], &kt], vec![]);
    let logits = layers::scale(b, &logits, (KEY_DIM as f32).powf(-0.5));
    let bias = offset_attention_bias(b, HEADS, ATTN_RES, 1)?;
    let logits = layers::add(b, &logits, &bias);
    let attn = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&attn, &p[2]], vec![]);
    let y = layers::transpose(b, &y, &[0, 2, 1, 3]);
    let y = layers::reshape(b, &y, &[0, 0, (HEADS * VAL_DIM) as i64]);
    linear(&mut b.scope("proj"), &y, HEADS * VAL_DIM, dim, true, INIT)
}
