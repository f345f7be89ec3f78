//! SwiftFormer (timm's `swiftformer.py`): `swiftformer_xs`, `_s`, `_l1`, `_l3`.
//!
//! A stem of two 3×3 stride-2 conv + BatchNorm + ReLU, then stages of `ConvEncoder`s (3×3
//! depthwise conv + BatchNorm, two 1×1 convs around GELU, a per-channel layer scale) ending in
//! one SwiftFormer `Block`: a `LocalRepresentation` (the same shape of residual), then efficient
//! additive attention (L2-normalised query and key, a learned global query `w_g` normalised over
//! the tokens, `final(proj(g · key) + query)`) and a 1×1-conv MLP with a BatchNorm before it,
//! each through a layer scale. Each stage but the first starts with a strided conv + BatchNorm
//! `Embedding`. BatchNorms after a conv are folded at load. Head: BatchNorm, mean pool and
//! timm's eval `(head(x) + head_dist(x)) / 2`.
//!
//! Nothing is sized for one resolution, so the graph takes any input size. Feature maps:
//! `stages.{i}` (timm's `FeatureListNet`), before the final norm.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{linear, linear_2d};
use crate::graph::layers::{self, act, batch_norm, conv2d, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/swiftformer.json"));

/// The `swiftformer` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "swiftformer",
    examples: "swiftformer_xs, swiftformer_s, swiftformer_l1, swiftformer_l3",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `SwiftFormer.__init__`'s keyword arguments with timm's defaults.
    pub struct SwiftFormerArgs {
        layers: Vec<usize> = vec![3, 3, 6, 4],
        embed_dims: Vec<usize> = vec![48, 56, 112, 220],
        mlp_ratios: usize = 4,
        downsamples: Vec<bool> = vec![false, true, true, true],
        act_layer: String = "gelu".into(),
        down_patch_size: usize = 3,
        down_stride: usize = 2,
        down_pad: usize = 1,
        use_layer_scale: bool = true,
        layer_scale_init_value: f64 = 1e-5,
        global_pool: String = "avg".into(),
        output_stride: usize = 32,
        in_chans: usize = 3,
        /// Accepted and unused by timm.
        img_size: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;
/// timm's `_initialize_weights`: every conv and Linear.
const INIT: Init = Init::TruncNormal(0.02);

#[derive(Debug, Clone)]
struct Cfg {
    layers: Vec<usize>,
    dims: Vec<usize>,
    mlp_ratio: usize,
    downsamples: Vec<bool>,
    down: (usize, usize, usize),
    layer_scale: Option<f32>,
    pool: bool,
}

fn resolve(cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a SwiftFormer architecture this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = SwiftFormerArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.output_stride != 32 {
        return Err(a.unsupported(
            "output_stride",
            "timm's SwiftFormer asserts output_stride 32",
        ));
    }
    if v.act_layer != "gelu" {
        // timm calls the class; a string in config.json would not construct in timm either.
        return Err(a.unsupported("act_layer", "only timm's default (gelu) is built"));
    }
    let n = v.layers.len();
    if n == 0
        || n > 8
        || v.embed_dims.len() < n
        || v.embed_dims.contains(&0)
        || v.downsamples.len() < n
    {
        return Err(Error::invalid_model(format!(
            "SwiftFormer layers {:?}, embed_dims {:?}, downsamples {:?}: one positive width and flag per stage, 1..=8 stages",
            v.layers, v.embed_dims, v.downsamples
        )));
    }
    for i in 0..n {
        let prev = v.embed_dims[i.saturating_sub(1)];
        if !v.downsamples[i] && prev != v.embed_dims[i] {
            return Err(Error::invalid_model(format!(
                "SwiftFormer stage {i} has no downsample but changes width {prev} -> {}",
                v.embed_dims[i]
            )));
        }
    }
    if v.mlp_ratios == 0 || v.down_patch_size == 0 || v.down_stride == 0 {
        return Err(Error::invalid_model(
            "SwiftFormer mlp_ratios, down_patch_size and down_stride must be positive",
        ));
    }
    let pool = match v.global_pool.as_str() {
        "avg" => true,
        "" => false,
        _ => return Err(a.unsupported("global_pool", "timm takes 'avg' or ''")),
    };
    Ok(Cfg {
        layers: v.layers[..n].to_vec(),
        dims: v.embed_dims[..n].to_vec(),
        mlp_ratio: v.mlp_ratios,
        downsamples: v.downsamples[..n].to_vec(),
        down: (v.down_patch_size, v.down_stride, v.down_pad),
        layer_scale: v.use_layer_scale.then_some(v.layer_scale_init_value as f32),
        pool,
    })
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let d0 = c.dims[0];
    let mut x = {
        let s = &mut b.scope("stem");
        let conv = |i, o| {
            Conv::new(i, o, 3)
                .stride(2)
                .pad(Pad::Sym(1))
                .bias(true)
                .init(INIT)
        };
        let y = conv_bn(s, &input, "0", "1", conv(in_ch, d0 / 2), BN_EPS)?;
        let y = act(s, "relu", &y)?;
        let y = conv_bn(s, &y, "3", "4", conv(d0 / 2, d0), BN_EPS)?;
        act(s, "relu", &y)?
    };
    let mut prev = d0;
    for (i, &depth) in c.layers.iter().enumerate() {
        let mut stages = b.scope("stages");
        let s = &mut stages.scope(i);
        let dim = c.dims[i];
        if c.downsamples[i] {
            let (k, st, p) = c.down;
            let conv = Conv::new(prev, dim, k)
                .stride(st)
                .pad(Pad::Sym(p))
                .bias(true)
                .init(INIT);
            x = conv_bn(&mut s.scope("downsample"), &x, "proj", "norm", conv, BN_EPS)?;
        }
        for j in 0..depth {
            let mut blocks = s.scope("blocks");
            let bs = &mut blocks.scope(j);
            x = if j + 1 == depth {
                swift_block(bs, &x, dim, &c)?
            } else {
                conv_encoder(bs, &x, dim, c.mlp_ratio * dim, &c)?
            };
        }
        s.feature(&x, dim, 1 << (i + 2), &format!("stages.{i}"));
        prev = dim;
    }
    let x = batch_norm(&mut b.scope("norm"), &x, prev, BN_EPS)?;
    if !c.pool && b.output() != OutputKind::FeatureMaps {
        // Feature maps need no pool (timm's features_only takes global_pool '' too).
        return Err(Error::unsupported(
            "SwiftFormer with global_pool '' (a classifier per position) is not built natively",
        ));
    }
    let pooled = layers::reduce_mean(b, &x, &[2, 3], false);
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

/// swiftformer's own `LayerScale2d` (`gamma` `[dim, 1, 1]`), or nothing without layer scale.
fn layer_scale(b: &mut Builder, x: &Value, dim: usize, init: Option<f32>) -> Result<Value> {
    match init {
        Some(v) => {
            let g = b.param("gamma", &[dim, 1, 1], Init::Const(v))?;
            Ok(layers::mul(b, x, &g))
        }
        None => Ok(x.clone()),
    }
}

/// `ConvEncoder` / `LocalRepresentation`: `x + layer_scale(pwconv2(act(pwconv1(norm(dwconv(x))))))`
/// (their layer scale starts at 1).
fn conv_encoder(b: &mut Builder, x: &Value, dim: usize, hidden: usize, c: &Cfg) -> Result<Value> {
    let dw = Conv::new(dim, dim, 3)
        .depthwise()
        .pad(Pad::Sym(1))
        .bias(true)
        .init(INIT);
    let pw = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(true).init(INIT);
    let y = conv_bn(b, x, "dwconv", "norm", dw, BN_EPS)?;
    let y = conv2d(&mut b.scope("pwconv1"), &y, pw(dim, hidden))?;
    let y = act(b, "gelu", &y)?;
    let y = conv2d(&mut b.scope("pwconv2"), &y, pw(hidden, dim))?;
    let y = layer_scale(
        &mut b.scope("layer_scale"),
        &y,
        dim,
        c.layer_scale.map(|_| 1.0),
    )?;
    Ok(layers::add(b, x, &y))
}

/// `Block`: local representation, then `x + ls1(attn(x))` and `x + ls2(linear(x))`.
fn swift_block(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let x = conv_encoder(&mut b.scope("local_representation"), x, dim, dim, c)?;
    let y = additive_attention(&mut b.scope("attn"), &x, dim)?;
    let y = layer_scale(&mut b.scope("layer_scale_1"), &y, dim, c.layer_scale)?;
    let x = layers::add(b, &x, &y);
    let y = {
        let m = &mut b.scope("linear");
        let hidden = c.mlp_ratio * dim;
        let pw = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(true).init(INIT);
        let y = batch_norm(&mut m.scope("norm1"), &x, dim, BN_EPS)?;
        let y = conv2d(&mut m.scope("fc1"), &y, pw(dim, hidden))?;
        let y = act(m, "gelu", &y)?;
        let y = conv2d(&mut m.scope("fc2"), &y, pw(hidden, dim))?;
        y
    };
    let y = layer_scale(&mut b.scope("layer_scale_2"), &y, dim, c.layer_scale)?;
    Ok(layers::add(b, &x, &y))
}

/// `F.normalize(x, dim=axis)`: `x / max(‖x‖₂, 1e-12)`.
fn l2_normalize(b: &mut Builder, x: &Value, axis: i64) -> Value {
    let axes = b.ints(&[axis]);
    let n = b.op("ReduceL2", &[x, &axes], vec![("keepdims", Attr::Int(1))]);
    let eps = b.scalar(1e-12);
    let n = b.op("Max", &[&n, &eps], vec![]);
    b.op("Div", &[x, &n], vec![])
}

/// `EfficientAdditiveAttention` (one head, token_dim = dim) on NCHW, returning NCHW.
fn additive_attention(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let t = layers::nchw_to_tokens(b, x, dim);
    let q = linear(&mut b.scope("to_query"), &t, dim, dim, true, INIT)?;
    let q = l2_normalize(b, &q, -1);
    let k = linear(&mut b.scope("to_key"), &t, dim, dim, true, INIT)?;
    let k = l2_normalize(b, &k, -1);
    let w_g = b.param("w_g", &[dim, 1], Init::Normal(1.0))?;
    let g = b.op("MatMul", &[&q, &w_g], vec![]);
    let g = layers::scale(b, &g, (dim as f32).powf(-0.5));
    // Normalised over the tokens (dim=1), then the weighted sum of the queries.
    let g = l2_normalize(b, &g, 1);
    let g = layers::mul(b, &g, &q);
    let axes = b.ints(&[1]);
    let g = b.op("ReduceSum", &[&g, &axes], vec![("keepdims", Attr::Int(1))]);
    let gk = layers::mul(b, &g, &k);
    let out = linear(&mut b.scope("proj"), &gk, dim, dim, true, INIT)?;
    let out = layers::add(b, &out, &q);
    let out = linear(&mut b.scope("final"), &out, dim, dim, true, INIT)?;
    let out = layers::transpose(b, &out, &[0, 2, 1]);
    let shape = b.op("Shape", &[x], vec![]);
    Ok(b.op("Reshape", &[&out, &shape], vec![]))
}
