//! EfficientFormerV2 (timm's `efficientformer_v2.py`): `efficientformerv2_s0`, `_s1`, `_s2`, `_l`.
//!
//! `Stem4` (two 3×3 stride-2 ConvNormAct), then four stages of blocks on NCHW maps: a
//! `ConvMlpWithNorm` (1×1, 3×3 depthwise and 1×1 ConvNorms) after an optional `Attention2d`
//! (stages 2 and 3, the last `num_vit` blocks): 8 heads of key_dim 32, a learned bias over
//! absolute offsets, talking heads (1×1 convs over the heads) before and after the softmax, a
//! local 3×3 depthwise conv on v; stage 2's attention runs on a stride-2 depthwise-conv grid and
//! is upsampled bilinearly. Stage 3's downsample adds `Attention2dDownsample` (queries from a
//! strided depthwise conv plus a subsample, 8 heads of key_dim 16) to its strided conv. Every
//! BatchNorm after a conv is folded at load. The head: final BatchNorm, mean pool, and with
//! `distillation` timm's eval `(head(x) + head_dist(x)) / 2`.
//!
//! The attention biases are sized from `img_size`, so the graph takes that input size. Feature
//! maps: `stages.{i}` (timm's `FeatureListNet`), before the final norm.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention_bias::offset_attention_bias;
use crate::graph::layers::mlp::{layer_scale_2d, linear_2d};
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::{self, act, batch_norm, conv2d, conv_bn, Conv, Pad};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/efficientformer_v2.json"));

/// The `efficientformer_v2` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "efficientformer_v2",
    examples:
        "efficientformerv2_s0, efficientformerv2_s1, efficientformerv2_s2, efficientformerv2_l",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `EfficientFormerV2.__init__`'s keyword arguments with timm's defaults.
    pub struct EfficientFormerV2Args {
        depths: Vec<usize> = vec![2, 2, 6, 4],
        in_chans: usize = 3,
        img_size: Json = Json::Null,
        global_pool: String = "avg".into(),
        embed_dims: Vec<usize> = vec![32, 48, 96, 176],
        downsamples: Option<Vec<bool>> = None,
        /// A number, one per stage, or per stage one per block (timm's `to_ntuple`).
        mlp_ratios: Json = Json::from(4),
        norm_layer: String = "batchnorm2d".into(),
        norm_eps: f64 = 1e-5,
        act_layer: String = "gelu".into(),
        layer_scale_init_value: Option<f64> = Some(1e-5),
        num_vit: usize = 0,
        distillation: bool = true,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// timm's `_init_weights`: every Linear.
const INIT: Init = Init::TruncNormal(0.02);
/// `Attention2d`'s constructor defaults (the block never overrides them).
const HEADS: usize = 8;
const KEY_DIM: usize = 32;
/// `Attention2dDownsample`'s key_dim (8 heads, attn_ratio 4 too).
const DOWN_KEY_DIM: usize = 16;
const ATTN_RATIO: usize = 4;

#[derive(Debug, Clone)]
struct Cfg {
    depths: Vec<usize>,
    dims: Vec<usize>,
    downsamples: Vec<bool>,
    /// Per stage, per block.
    mlp_ratios: Vec<Vec<f64>>,
    eps: f32,
    act: String,
    ls_init: Option<f32>,
    num_vit: usize,
    distillation: bool,
    img: (usize, usize),
    pool: bool,
}

/// timm's `to_ntuple(n)(x)`: a number repeated, a list kept as it is.
fn ntuple(x: &Json, n: usize) -> Option<Vec<Json>> {
    match x {
        Json::Array(v) => Some(v.clone()),
        Json::Number(_) => Some(vec![x.clone(); n]),
        _ => None,
    }
}

fn ratio(x: &Json) -> Option<f64> {
    x.as_f64()
        .filter(|f| f.is_finite() && *f > 0.0 && *f <= crate::graph::args::MAX_FLOAT)
}

fn resolve(cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an EfficientFormerV2 architecture this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = EfficientFormerV2Args::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let n = v.depths.len();
    if n != 4 || v.embed_dims.len() != 4 || v.embed_dims.contains(&0) {
        // timm picks each stage's blocks by its index (attention from stage 2, a strided
        // attention in stage 2, an attention downsample from stage 3): four stages are the model.
        return Err(a.unsupported(
            "depths",
            "the native graph builds timm's four stages (depths and embed_dims of length 4, positive widths)",
        ));
    }
    let downsamples = match v.downsamples {
        Some(d) if !d.is_empty() => d,
        _ => vec![false, true, true, true],
    };
    if downsamples.len() < n {
        return Err(Error::invalid_model(format!(
            "EfficientFormerV2 downsamples {downsamples:?} has fewer entries than its {n} stages"
        )));
    }
    for (i, &down) in downsamples.iter().enumerate().take(n) {
        let prev = v.embed_dims[i.saturating_sub(1)];
        if !down && prev != v.embed_dims[i] {
            return Err(Error::invalid_model(format!(
                "EfficientFormerV2 stage {i} has no downsample but changes width {prev} -> {}",
                v.embed_dims[i]
            )));
        }
    }
    let bad_ratio = || {
        a.unsupported(
            "mlp_ratios",
            "a positive number, one per stage, or one list per stage with one per block",
        )
    };
    let per_stage = ntuple(&v.mlp_ratios, n)
        .filter(|s| s.len() >= n)
        .ok_or_else(bad_ratio)?;
    let mut mlp_ratios = Vec::with_capacity(n);
    for (i, r) in per_stage.iter().take(n).enumerate() {
        let blocks = ntuple(r, v.depths[i]).ok_or_else(bad_ratio)?;
        if blocks.len() < v.depths[i] {
            return Err(bad_ratio());
        }
        let rs: Option<Vec<f64>> = blocks.iter().take(v.depths[i]).map(ratio).collect();
        mlp_ratios.push(rs.ok_or_else(bad_ratio)?);
    }
    let nl = v.norm_layer.to_ascii_lowercase().replace('_', "");
    if nl != "batchnorm2d" && nl != "batchnorm" {
        return Err(a.unsupported("norm_layer", "only BatchNorm2d is built"));
    }
    let act = layers::act::canonical(&v.act_layer)?.to_string();
    // build_model_with_cfg passes the pretrained input size as img_size (fixed_input_size).
    let img = match &v.img_size {
        Json::Null => {
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            (h, w)
        }
        Json::Array(hw) if hw.len() == 2 => match (hw[0].as_u64(), hw[1].as_u64()) {
            (Some(h), Some(w)) if h > 0 && w > 0 => (h as usize, w as usize),
            _ => return Err(a.unsupported("img_size", "an int or [h, w]")),
        },
        j => match j.as_u64() {
            Some(s) if s > 0 => (s as usize, s as usize),
            _ => return Err(a.unsupported("img_size", "an int or [h, w]")),
        },
    };
    let pool = match v.global_pool.as_str() {
        "avg" => true,
        "" => false,
        _ => return Err(a.unsupported("global_pool", "timm takes 'avg' or ''")),
    };
    Ok(Cfg {
        depths: v.depths,
        dims: v.embed_dims,
        downsamples,
        mlp_ratios,
        eps: v.norm_eps as f32,
        act,
        ls_init: v.layer_scale_init_value.map(|f| f as f32),
        num_vit: v.num_vit,
        distillation: v.distillation,
        img,
        pool,
    })
}

// ---------------------------------------------------------------------------------------------
// Graph

/// A conv of `ConvNorm` / `ConvNormAct`: timm's `create_conv2d` padding, with bias.
fn cv(i: usize, o: usize, k: usize, stride: usize) -> Conv {
    Conv::new(i, o, k)
        .stride(stride)
        .bias(true)
        .init(Init::DefaultUniform)
}

/// `ConvNorm` (`conv`, `bn`), folded.
fn conv_norm(b: &mut Builder, x: &Value, c: Conv, eps: f32) -> Result<Value> {
    conv_bn(b, x, "conv", "bn", c, eps)
}

/// `ConvNormAct` (`conv`, `bn` with its activation), folded.
fn conv_norm_act(b: &mut Builder, x: &Value, c: Conv, cfg: &Cfg) -> Result<Value> {
    let y = conv_bn(b, x, "conv", "bn", c, cfg.eps)?;
    act(b, &cfg.act, &y)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let mut c = resolve(cfg)?;
    if b.weights().is_some() {
        // The weights say which head timm built.
        c.distillation = b.has_module("head_dist");
    }
    let (h, w) = b.image_size();
    if (h, w) != c.img {
        return Err(Error::invalid_argument(format!(
            "EfficientFormerV2 takes its img_size {}x{} only (attention biases are sized for it); got a {h}x{w} input",
            c.img.0, c.img.1
        )));
    }
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let d0 = c.dims[0];
    let mut x = {
        let s = &mut b.scope("stem");
        let y = conv_norm_act(&mut s.scope("conv1"), &input, cv(in_ch, d0 / 2, 3, 2), &c)?;
        let y = conv_norm_act(&mut s.scope("conv2"), &y, cv(d0 / 2, d0, 3, 2), &c)?;
        y
    };
    let mut stride = 4;
    let mut prev = d0;
    for i in 0..4 {
        let mut stages = b.scope("stages");
        let s = &mut stages.scope(i);
        let dim = c.dims[i];
        let mut res = (c.img.0.div_ceil(stride), c.img.1.div_ceil(stride));
        if c.downsamples[i] {
            let d = &mut s.scope("downsample");
            let out = conv_norm(&mut d.scope("conv"), &x, cv(prev, dim, 3, 2), c.eps)?;
            x = if i >= 3 {
                let y = attention_downsample(&mut d.scope("attn"), &x, prev, dim, res, &c)?;
                layers::add(d, &y, &out)
            } else {
                out
            };
            res = (res.0.div_ceil(2), res.1.div_ceil(2));
            stride *= 2;
        }
        let depth = c.depths[i];
        for j in 0..depth {
            // timm: `use_attn = block_use_attn and block_idx > depth - num_vit - 1`.
            let use_attn = i >= 2 && (j as i64) > depth as i64 - c.num_vit as i64 - 1;
            let block_stride = (i == 2).then_some(2);
            let ratio = c.mlp_ratios[i][j];
            let mut blocks = s.scope("blocks");
            x = block(
                &mut blocks.scope(j),
                &x,
                dim,
                ratio,
                use_attn.then_some(block_stride),
                res,
                &c,
            )?;
        }
        s.feature(&x, dim, stride, &format!("stages.{i}"));
        prev = dim;
    }
    let x = batch_norm(&mut b.scope("norm"), &x, prev, c.eps)?;
    if !c.pool && b.output() != OutputKind::FeatureMaps {
        // Feature maps need no pool (timm's features_only takes global_pool '' too).
        return Err(Error::unsupported(
            "EfficientFormerV2 with global_pool '' (a classifier per position) is not built natively",
        ));
    }
    let pooled = layers::reduce_mean(b, &x, &[2, 3], false);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, prev));
    }
    let k = cfg.num_classes;
    let y = linear_2d(&mut b.scope("head"), &pooled, prev, k, true, INIT)?;
    if !c.distillation {
        return Ok((y, k));
    }
    let yd = linear_2d(&mut b.scope("head_dist"), &pooled, prev, k, true, INIT)?;
    // timm's eval forward: `(x + x_dist) / 2`.
    let sum = layers::add(b, &y, &yd);
    let two = b.scalar(2.0);
    Ok((b.op("Div", &[&sum, &two], vec![]), k))
}

/// `EfficientFormerV2Block`: `x + ls1(attn(x))` when it has attention (`attn`: its stride),
/// then `x + ls2(mlp(x))`.
fn block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    ratio: f64,
    attn: Option<Option<usize>>,
    res: (usize, usize),
    c: &Cfg,
) -> Result<Value> {
    let mut x = x.clone();
    if let Some(stride) = attn {
        let y = attention_2d(&mut b.scope("token_mixer"), &x, dim, res, stride, c)?;
        let y = match c.ls_init {
            Some(init) => layer_scale_2d(&mut b.scope("ls1"), &y, dim, init)?,
            None => y,
        };
        x = layers::add(b, &x, &y);
    }
    let hidden = (dim as f64 * ratio) as usize;
    let y = {
        let m = &mut b.scope("mlp");
        let y = conv_norm_act(&mut m.scope("fc1"), &x, cv(dim, hidden, 1, 1), c)?;
        let mid = cv(hidden, hidden, 3, 1).depthwise();
        let y = conv_norm_act(&mut m.scope("mid"), &y, mid, c)?;
        let y = conv_norm(&mut m.scope("fc2"), &y, cv(hidden, dim, 1, 1), c.eps)?;
        y
    };
    let y = match c.ls_init {
        Some(init) => layer_scale_2d(&mut b.scope("ls2"), &y, dim, init)?,
        None => y,
    };
    Ok(layers::add(b, &x, &y))
}

/// `[B, heads·d, h, w]` → `[B, heads, h·w, d]` (timm's `reshape(B, heads, -1, N)` then
/// `permute(0, 1, 3, 2)`); with `keys`, `[B, heads, d, h·w]` (no permute).
fn heads_of(b: &mut Builder, x: &Value, heads: usize, n: usize, keys: bool) -> Value {
    let y = layers::reshape(b, x, &[0, heads as i64, -1, n as i64]);
    if keys {
        y
    } else {
        layers::transpose(b, &y, &[0, 1, 3, 2])
    }
}

/// `attn @ v` `[B, heads, Nq, d]` back to `[B, heads·d, h, w]` (`transpose(2, 3)`, reshape).
fn merge_heads(b: &mut Builder, y: &Value, dh: usize, res: (usize, usize)) -> Value {
    let y = layers::transpose(b, y, &[0, 1, 3, 2]);
    layers::reshape(b, &y, &[0, dh as i64, res.0 as i64, res.1 as i64])
}

/// The tracked grid of `x` at the built input size must be the one timm sized the bias for.
fn check_grid(b: &Builder, x: &Value, res: (usize, usize)) -> Result<()> {
    let (h, w) = b.image_size();
    let got = b.spatial(x).map(|s| (s.eval(h), s.eval(w)));
    if got != Some((Some(res.0), Some(res.1))) {
        return Err(Error::invalid_argument(format!(
            "EfficientFormerV2 attention is sized for a {}x{} grid; a {h}x{w} input gives {got:?}",
            res.0, res.1
        )));
    }
    Ok(())
}

/// `Attention2d`, on the stride-2 depthwise `stride_conv` grid (then upsampled) when `stride`.
fn attention_2d(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    res: (usize, usize),
    stride: Option<usize>,
    c: &Cfg,
) -> Result<Value> {
    let (x, res) = match stride {
        Some(st) if !res.0.is_multiple_of(st) || !res.1.is_multiple_of(st) => {
            // The upsampled attention would not match the block's grid: timm fails on it too.
            return Err(Error::invalid_argument(format!(
                "EfficientFormerV2's strided attention needs a grid divisible by {st}; img_size {}x{} gives {}x{}",
                c.img.0, c.img.1, res.0, res.1
            )));
        }
        Some(st) => {
            let y = conv_norm(
                &mut b.scope("stride_conv"),
                x,
                cv(dim, dim, 3, st).depthwise(),
                c.eps,
            )?;
            (y, (res.0.div_ceil(st), res.1.div_ceil(st)))
        }
        None => (x.clone(), res),
    };
    check_grid(b, &x, res)?;
    let n = res.0 * res.1;
    let kh = KEY_DIM * HEADS;
    let dh = ATTN_RATIO * KEY_DIM * HEADS;
    let q = conv_norm(&mut b.scope("q"), &x, cv(dim, kh, 1, 1), c.eps)?;
    let k = conv_norm(&mut b.scope("k"), &x, cv(dim, kh, 1, 1), c.eps)?;
    let v = conv_norm(&mut b.scope("v"), &x, cv(dim, dh, 1, 1), c.eps)?;
    let v_local = conv_norm(
        &mut b.scope("v_local"),
        &v,
        cv(dh, dh, 3, 1).depthwise(),
        c.eps,
    )?;
    let q = heads_of(b, &q, HEADS, n, false);
    let k = heads_of(b, &k, HEADS, n, true);
    let vh = heads_of(b, &v, HEADS, n, false);
    let attn = b.op("MatMul", &[&q, &k], vec![]);
    let attn = layers::scale(b, &attn, (KEY_DIM as f32).powf(-0.5));
    let bias = offset_attention_bias(b, HEADS, res, 1)?;
    let attn = layers::add(b, &attn, &bias);
    // Talking heads: 1×1 convs with the heads as channels of `[B, heads, N, N]`.
    let th = || {
        Conv::new(HEADS, HEADS, 1)
            .pad(Pad::Sym(0))
            .bias(true)
            .init(Init::DefaultUniform)
    };
    let attn = conv2d(&mut b.scope("talking_head1"), &attn, th())?;
    let attn = b.op("Softmax", &[&attn], vec![("axis", Attr::Int(-1))]);
    let attn = conv2d(&mut b.scope("talking_head2"), &attn, th())?;
    let y = b.op("MatMul", &[&attn, &vh], vec![]);
    let y = merge_heads(b, &y, dh, res);
    let mut y = layers::add(b, &y, &v_local);
    if let Some(st) = stride {
        // nn.Upsample(scale_factor=stride, mode='bilinear'): align_corners=False.
        let f = st as f32;
        let scales = b.const_f32(vec![1.0, 1.0, f, f], &[4]);
        let none = b.none();
        let up = b.op(
            "Resize",
            &[&y, &none, &scales],
            vec![
                ("mode", Attr::Str("linear".into())),
                (
                    "coordinate_transformation_mode",
                    Attr::Str("half_pixel".into()),
                ),
            ],
        );
        b.set_spatial(&up, &y, Step::Up { factor: st }, dh)?;
        y = up;
    }
    let y = act(b, &c.act, &y)?;
    conv_norm(&mut b.scope("proj"), &y, cv(dh, dim, 1, 1), c.eps)
}

/// `Attention2dDownsample`: queries from `LocalGlobalQuery` (a stride-2 depthwise conv plus a
/// stride-2 subsample, `proj`) on the halved grid, keys and values from every position.
fn attention_downsample(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out_dim: usize,
    res: (usize, usize),
    c: &Cfg,
) -> Result<Value> {
    check_grid(b, x, res)?;
    let res2 = (res.0.div_ceil(2), res.1.div_ceil(2));
    let (n, n2) = (res.0 * res.1, res2.0 * res2.1);
    let kh = DOWN_KEY_DIM * HEADS;
    let dh = ATTN_RATIO * DOWN_KEY_DIM * HEADS;
    let q = {
        let s = &mut b.scope("q");
        let local = conv2d(&mut s.scope("local"), x, cv(dim, dim, 3, 2).depthwise())?;
        let pooled = Pool2d::new(1, 2, 0).avg(s, x, dim)?;
        let q = layers::add(s, &local, &pooled);
        let q = conv_norm(&mut s.scope("proj"), &q, cv(dim, kh, 1, 1), c.eps)?;
        q
    };
    let k = conv_norm(&mut b.scope("k"), x, cv(dim, kh, 1, 1), c.eps)?;
    let v = conv_norm(&mut b.scope("v"), x, cv(dim, dh, 1, 1), c.eps)?;
    let v_local = conv_norm(
        &mut b.scope("v_local"),
        &v,
        cv(dh, dh, 3, 2).depthwise(),
        c.eps,
    )?;
    let q = heads_of(b, &q, HEADS, n2, false);
    let k = heads_of(b, &k, HEADS, n, true);
    let vh = heads_of(b, &v, HEADS, n, false);
    let attn = b.op("MatMul", &[&q, &k], vec![]);
    let attn = layers::scale(b, &attn, (DOWN_KEY_DIM as f32).powf(-0.5));
    let bias = offset_attention_bias(b, HEADS, res, 2)?;
    let attn = layers::add(b, &attn, &bias);
    let attn = b.op("Softmax", &[&attn], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&attn, &vh], vec![]);
    let y = merge_heads(b, &y, dh, res2);
    let y = layers::add(b, &y, &v_local);
    let y = act(b, &c.act, &y)?;
    conv_norm(&mut b.scope("proj"), &y, cv(dh, out_dim, 1, 1), c.eps)
}
