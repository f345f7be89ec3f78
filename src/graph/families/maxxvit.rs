//! MaxViT, CoAtNet and MaxxViT (v1, v2) — timm's `maxxvit.py`: every `coatnet_*`, `coatnext_*`,
//! `maxvit_*`, `maxxvit_*`, `maxxvitv2_*` and `test_maxvit` / `test_coatnet`.
//!
//! One `MaxxVit` class built from a `MaxxVitCfg`: a conv stem, four stages of blocks — `C`
//! (`MbConvBlock` or `ConvNeXtBlock`), `T` (`TransformerBlock2d`, attention over the whole map),
//! `M` (`MaxxVitBlock`: conv block, block-window then grid attention) and `PM` (the parallel
//! window | grid variant) — and timm's `ClassifierHead` or `NormMlpClassifierHead`. The table
//! holds the cfg flattened as `MaxxVit.__init__` overlays keyword arguments (`conv_*`,
//! `transformer_*`), so config.json's model_args override it key by key.
//!
//! Attention windows depend on `img_size` (timm's `partition_ratio`), so the graph takes that one
//! input size. Relative-position biases (tables, TF tables, MLPs) are evaluated at load.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::grid_window::{
    grid_partition, grid_reverse, window_partition, window_reverse,
};
use crate::graph::layers::heads::{classifier_head, norm_mlp_head};
use crate::graph::layers::mlp::{conv_mlp, layer_scale, layer_scale_2d, linear, mlp, MlpCfg};
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{
    act, add, concat, conv2d, conv_bn, make_divisible, nchw_to_nhwc, nhwc_to_nchw, pos_embed_rel,
    reshape, split, transpose, Conv, Norm, Pad,
};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/maxxvit.json"));

pub const FAMILY: Family = Family {
    name: "maxxvit",
    examples: "coatnet_*, coatnext_nano_rw_224, maxvit_*, maxxvit_*, maxxvitv2_*, test_maxvit",
    matches,
    build,
    default_config,
    any_size: false,
};

fn matches(arch: &str) -> bool {
    TABLE.get(arch).is_some()
}

fn default_config(arch: &str) -> Option<serde_json::Value> {
    TABLE.get(arch).map(|e| e.config.clone())
}

timm_args! {
    /// `MaxxVitCfg` flattened as `_overlay_kwargs` reads it, plus `MaxxVit.__init__`'s own.
    #[allow(dead_code)]
    struct MaxxVitArgs {
        img_size: Json = Json::Null,
        global_pool: Option<String> = None,
        embed_dim: Vec<usize> = vec![96, 192, 384, 768],
        depths: Vec<usize> = vec![2, 3, 5, 2],
        block_type: Json = Json::Null,
        stem_width: PerStage<usize> = PerStage::All(64),
        stem_bias: bool = false,
        head_hidden_size: Option<usize> = None,
        conv_block_type: String = "mbconv".into(),
        conv_expand_ratio: f64 = 4.0,
        conv_expand_output: bool = true,
        conv_kernel_size: usize = 3,
        conv_group_size: usize = 1,
        conv_pre_norm_act: bool = false,
        conv_output_bias: bool = true,
        conv_stride_mode: String = "dw".into(),
        conv_pool_type: String = "avg2".into(),
        conv_downsample_pool_type: String = "avg2".into(),
        conv_padding: String = String::new(),
        conv_attn_early: bool = false,
        conv_attn_layer: Option<String> = Some("se".into()),
        conv_attn_act_layer: String = "silu".into(),
        conv_attn_ratio: f64 = 0.25,
        conv_init_values: Option<f32> = Some(1e-6),
        conv_act_layer: String = "gelu".into(),
        conv_norm_layer: String = "batchnorm2d".into(),
        // Read so model_args may carry them; the ConvNeXt block of MaxxVit never uses the
        // channels-last norm, dropout is training-only.
        conv_norm_layer_cl: String = String::new(),
        conv_norm_eps: Option<f32> = Some(1e-5),
        transformer_dim_head: usize = 32,
        transformer_head_first: bool = true,
        transformer_expand_ratio: f64 = 4.0,
        transformer_expand_first: bool = true,
        transformer_shortcut_bias: bool = true,
        transformer_attn_bias: bool = true,
        transformer_attn_drop: f64 = 0.0,
        transformer_proj_drop: f64 = 0.0,
        transformer_pool_type: String = "avg2".into(),
        transformer_rel_pos_type: String = "bias".into(),
        transformer_rel_pos_dim: usize = 512,
        transformer_partition_ratio: usize = 32,
        transformer_window_size: Json = Json::Null,
        transformer_grid_size: Json = Json::Null,
        transformer_no_block_attn: bool = false,
        transformer_use_nchw_attn: bool = false,
        transformer_init_values: Option<f32> = None,
        transformer_act_layer: String = "gelu".into(),
        transformer_norm_layer: String = "layernorm2d".into(),
        transformer_norm_layer_cl: String = "layernorm".into(),
        transformer_norm_eps: f32 = 1e-6,
    }
}

/// `MaxxVitConvCfg`, resolved.
#[derive(Debug, Clone)]
struct ConvCfg {
    convnext: bool,
    expand_ratio: f64,
    expand_output: bool,
    kernel_size: usize,
    group_size: usize,
    pre_norm_act: bool,
    output_bias: bool,
    /// Stride in a pool before the convs (`pool`), the first 1x1 (`1x1`) or the kxk (`dw`).
    stride_mode: String,
    pool_type: String,
    downsample_pool_type: String,
    /// `padding='same'`: TF "SAME" convs and pools.
    same: bool,
    attn_early: bool,
    se: bool,
    attn_act: String,
    attn_ratio: f64,
    init_values: Option<f32>,
    act: String,
    norm: Norm,
}

/// `MaxxVitTransformerCfg`, resolved (window and grid sizes from `img_size`).
#[derive(Debug, Clone)]
struct TfCfg {
    dim_head: usize,
    head_first: bool,
    expand_ratio: f64,
    expand_first: bool,
    shortcut_bias: bool,
    attn_bias: bool,
    pool_type: String,
    rel_pos: RelPos,
    window: (usize, usize),
    grid: (usize, usize),
    no_block_attn: bool,
    init_values: Option<f32>,
    act: String,
    norm: Norm,
    norm_cl: Norm,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RelPos {
    None,
    Bias,
    BiasTf,
    Mlp(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    C,
    T,
    M,
    PM,
}

#[derive(Debug, Clone)]
struct Cfg {
    img: (usize, usize),
    embed_dim: Vec<usize>,
    block_types: Vec<Vec<Kind>>,
    stem_width: (usize, usize),
    stem_bias: bool,
    head_hidden_size: Option<usize>,
    pool: PoolKind,
    conv: ConvCfg,
    tf: TfCfg,
}

/// Convs without weights: timm's `_init_conv` (efficientnet-like fan-out normal).
const CONV_INIT: Init = Init::KaimingFanOut;
/// Transformer Linears / 1x1 convs without weights.
const TF_INIT: Init = Init::TruncNormal(0.02);

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(cfg)?;
    if b.image_size() != c.img {
        let (h, w) = b.image_size();
        return Err(Error::invalid_argument(format!(
            "input {h}x{w}: this MaxxViT is built for {}x{} (its attention windows and relative \
             positions follow img_size)",
            c.img.0, c.img.1
        )));
    }
    let input = b.input();
    let in_chs = cfg.pretrained_cfg.input_size[0];
    let mut x = stem(&mut b.scope("stem"), &input, in_chs, &c)?;
    b.feature(&x, c.stem_width.1, 2, "stem");
    let mut feat = ((c.img.0 - 1) / 2 + 1, (c.img.1 - 1) / 2 + 1);
    let mut in_c = c.stem_width.1;
    for (i, kinds) in c.block_types.iter().enumerate() {
        feat = ((feat.0 - 1) / 2 + 1, (feat.1 - 1) / 2 + 1);
        let st = &mut b.scope("stages");
        let s = &mut st.scope(i);
        x = stage(
            &mut s.scope("blocks"),
            &x,
            in_c,
            c.embed_dim[i],
            kinds,
            feat,
            &c,
        )?;
        let module = s.path().to_string();
        s.feature(&x, c.embed_dim[i], 4 << i, &module);
        in_c = c.embed_dim[i];
    }
    let features = b.output() == OutputKind::Features;
    let final_norm = c.tf.norm;
    match c.head_hidden_size {
        Some(hidden) => norm_mlp_head(
            &mut b.scope("head"),
            &x,
            in_c,
            c.pool,
            &final_norm,
            Some(hidden),
            "tanh",
            cfg.num_classes,
            features,
        ),
        None => {
            let x = final_norm.apply_2d(&mut b.scope("norm"), &x, in_c)?;
            classifier_head(
                &mut b.scope("head"),
                &x,
                in_c,
                c.pool,
                cfg.num_classes,
                features,
            )
        }
    }
}

/// timm's `Stem`: 3x3 stride-2 conv, norm-act, 3x3 conv.
fn stem(b: &mut Builder, x: &Value, in_chs: usize, c: &Cfg) -> Result<Value> {
    let (w0, w1) = c.stem_width;
    let conv = |i, o, s| {
        Conv::new(i, o, 3)
            .pad(Pad::create(3, s, 1, c.conv.same))
            .stride(s)
            .bias(c.stem_bias)
            .init(CONV_INIT)
    };
    let y = conv_norm_act(b, x, "conv1", "norm1", conv(in_chs, w0, 2), &c.conv.norm)?;
    let y = act(b, &c.conv.act, &y)?;
    conv2d(&mut b.scope("conv2"), &y, conv(w0, w1, 1))
}

/// timm's `MaxxVitStage`: its blocks, the first with stride 2.
fn stage(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    out: usize,
    kinds: &[Kind],
    feat: (usize, usize),
    c: &Cfg,
) -> Result<Value> {
    let mut x = x.clone();
    let mut dim = in_chs;
    for (j, &kind) in kinds.iter().enumerate() {
        let stride = if j == 0 { 2 } else { 1 };
        let s = &mut b.scope(j);
        x = match kind {
            Kind::C => conv_block(s, &x, dim, out, stride, &c.conv)?,
            Kind::T => transformer_block_2d(s, &x, dim, out, stride, feat, &c.tf)?,
            Kind::M => maxxvit_block(s, &x, dim, out, stride, c)?,
            Kind::PM => parallel_maxxvit_block(s, &x, dim, out, stride, c)?,
        };
        dim = out;
    }
    Ok(x)
}

// ---------------------------------------------------------------------------------------------
// conv blocks

fn conv_block(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    out: usize,
    stride: usize,
    c: &ConvCfg,
) -> Result<Value> {
    if c.convnext {
        convnext_block(b, x, in_chs, out, stride, c)
    } else {
        mbconv_block(b, x, in_chs, out, stride, c)
    }
}

/// timm's `MbConvBlock`: pre-norm, (pool), 1x1 expansion, kxk depthwise with SE, 1x1
/// projection, plus the (downsampled) shortcut.
fn mbconv_block(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    out: usize,
    stride: usize,
    c: &ConvCfg,
) -> Result<Value> {
    let base = if c.expand_output { out } else { in_chs };
    let mid = make_divisible(base as f64 * c.expand_ratio, 8, 0.9);
    let groups = match c.group_size {
        0 => 1,
        g if mid.is_multiple_of(g) => mid / g,
        g => {
            return Err(Error::invalid_model(format!(
                "MbConv group_size {g} does not divide {mid} channels"
            )))
        }
    };
    let shortcut = if stride == 2 {
        let (t, same) = (&c.pool_type, c.same);
        downsample_2d(
            &mut b.scope("shortcut"),
            x,
            in_chs,
            out,
            t,
            same,
            c.output_bias,
        )?
    } else {
        x.clone()
    };
    let (s_pool, s_1, s_2) = match c.stride_mode.as_str() {
        "pool" => (stride, 1, 1),
        "1x1" => (1, stride, 1),
        _ => (1, 1, stride),
    };
    let pre_act = c.pre_norm_act.then_some(c.act.as_str());
    let mut y = norm_act(&mut b.scope("pre_norm"), x, in_chs, &c.norm, pre_act)?;
    if s_pool > 1 {
        let t = &c.downsample_pool_type;
        y = downsample_2d(&mut b.scope("down"), &y, in_chs, in_chs, t, c.same, true)?;
    }
    let conv1 = Conv::new(in_chs, mid, 1).stride(s_1).init(CONV_INIT);
    y = conv_norm_act(b, &y, "conv1_1x1", "norm1", conv1, &c.norm)?;
    y = act(b, &c.act, &y)?;
    let k = c.kernel_size;
    let conv2 = Conv::new(mid, mid, k)
        .pad(Pad::create(k, s_2, 1, c.same))
        .stride(s_2)
        .groups(groups)
        .init(CONV_INIT);
    let rd = (c.attn_ratio * (if c.expand_output { out } else { mid }) as f64) as usize;
    let se = SqueezeExcite::se_module(mid, rd).act(&c.attn_act);
    if c.attn_early {
        y = conv2d(&mut b.scope("conv2_kxk"), &y, conv2)?;
        if c.se {
            y = se.apply(&mut b.scope("se_early"), &y)?;
        }
        y = norm_act(&mut b.scope("norm2"), &y, mid, &c.norm, Some(&c.act))?;
    } else {
        y = conv_norm_act(b, &y, "conv2_kxk", "norm2", conv2, &c.norm)?;
        y = act(b, &c.act, &y)?;
        if c.se {
            y = se.apply(&mut b.scope("se"), &y)?;
        }
    }
    let conv3 = Conv::new(mid, out, 1).bias(c.output_bias).init(CONV_INIT);
    y = conv2d(&mut b.scope("conv3_1x1"), &y, conv3)?;
    Ok(add(b, &y, &shortcut))
}

/// timm's `ConvNeXtBlock` as MaxxVit builds it (7x7 depthwise, `conv_mlp=True`).
fn convnext_block(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    out: usize,
    stride: usize,
    c: &ConvCfg,
) -> Result<Value> {
    let shortcut = if stride == 2 {
        downsample_2d(
            &mut b.scope("shortcut"),
            x,
            in_chs,
            out,
            "avg2",
            false,
            true,
        )?
    } else if in_chs != out {
        let conv = Conv::new(in_chs, out, 1)
            .bias(c.output_bias)
            .init(CONV_INIT);
        conv2d(&mut b.scope("shortcut"), x, conv)?
    } else {
        x.clone()
    };
    let (s_pool, s_dw) = if c.stride_mode == "pool" {
        (stride, 1)
    } else {
        (1, stride)
    };
    let mut y = x.clone();
    if s_pool == 2 {
        let t = &c.downsample_pool_type;
        y = downsample_2d(&mut b.scope("down"), &y, in_chs, in_chs, t, false, true)?;
    }
    let dw = Conv::new(in_chs, out, 7)
        .stride(s_dw)
        .groups(in_chs)
        .bias(c.output_bias)
        .init(CONV_INIT);
    y = conv2d(&mut b.scope("conv_dw"), &y, dw)?;
    y = c.norm.apply_2d(&mut b.scope("norm"), &y, out)?;
    let hidden = (c.expand_ratio * out as f64) as usize;
    let m = MlpCfg::new(out, hidden, &c.act).bias(c.output_bias);
    y = conv_mlp(&mut b.scope("mlp"), &y, &m)?;
    if let Some(v) = c.init_values {
        y = layer_scale_2d(&mut b.scope("ls"), &y, out, v)?;
    }
    Ok(add(b, &y, &shortcut))
}

// ---------------------------------------------------------------------------------------------
// transformer blocks

/// timm's `TransformerBlock2d`: attention over the whole NCHW map with a relative-position bias
/// of the stage's size, then a 1x1-conv MLP; stride 2 pools before the attention.
fn transformer_block_2d(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    stride: usize,
    feat: (usize, usize),
    c: &TfCfg,
) -> Result<Value> {
    let (shortcut, y) = if stride == 2 {
        let sc = downsample_2d(
            &mut b.scope("shortcut"),
            x,
            dim,
            out,
            &c.pool_type,
            false,
            c.shortcut_bias,
        )?;
        let n = &mut b.scope("norm1");
        let y = c.norm.apply_2d(&mut n.scope("norm"), x, dim)?;
        let y = downsample_2d(
            &mut n.scope("down"),
            &y,
            dim,
            dim,
            &c.pool_type,
            false,
            true,
        )?;
        (sc, y)
    } else {
        if dim != out {
            return Err(Error::invalid_model(format!(
                "TransformerBlock2d at stride 1 keeps its width ({dim} -> {out})"
            )));
        }
        (x.clone(), c.norm.apply_2d(&mut b.scope("norm1"), x, dim)?)
    };
    let spatial = b.spatial(&y).cloned();
    let y = attention_2d(&mut b.scope("attn"), &y, dim, out, feat, c)?;
    if let Some(s) = spatial {
        b.assign_spatial(&y, s);
    }
    let y = match c.init_values {
        Some(v) => layer_scale_2d(&mut b.scope("ls1"), &y, out, v)?,
        None => y,
    };
    let x = add(b, &shortcut, &y);
    let y = c.norm.apply_2d(&mut b.scope("norm2"), &x, out)?;
    let hidden = (out as f64 * c.expand_ratio) as usize;
    let y = conv_mlp(&mut b.scope("mlp"), &y, &MlpCfg::new(out, hidden, &c.act))?;
    let y = match c.init_values {
        Some(v) => layer_scale_2d(&mut b.scope("ls2"), &y, out, v)?,
        None => y,
    };
    Ok(add(b, &x, &y))
}

/// timm's `Attention2d` on an NCHW map of `feat` size: 1x1 `qkv` / `proj` convs (heads always
/// first in the qkv channels).
fn attention_2d(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    feat: (usize, usize),
    c: &TfCfg,
) -> Result<Value> {
    let attn_dim = if c.expand_first { out } else { dim };
    let heads = heads(attn_dim, c.dim_head)?;
    let conv = |i, o| Conv::new(i, o, 1).bias(c.attn_bias).init(TF_INIT);
    let qkv = conv2d(&mut b.scope("qkv"), x, conv(dim, 3 * attn_dim))?;
    let l = (feat.0 * feat.1) as i64;
    let qkv = reshape(b, &qkv, &[0, 3 * attn_dim as i64, l]);
    let qkv = transpose(b, &qkv, &[0, 2, 1]);
    let y = attend(b, &qkv, attn_dim, heads, true, feat, c)?;
    let y = transpose(b, &y, &[0, 2, 1]);
    let y = reshape(b, &y, &[0, attn_dim as i64, feat.0 as i64, feat.1 as i64]);
    conv2d(&mut b.scope("proj"), &y, conv(attn_dim, out))
}

/// The heads of `qkv` tokens `[N, L, 3·D]` (`head_first`: per head q | k | v; else q | k | v
/// each with its heads), attention with the relative-position bias of `window` (module
/// `rel_pos` in the current scope); returns `[N, L, D]`.
fn attend(
    b: &mut Builder,
    qkv: &Value,
    d: usize,
    heads: usize,
    head_first: bool,
    window: (usize, usize),
    c: &TfCfg,
) -> Result<Value> {
    let hd = d / heads;
    let (q, k, v) = if head_first {
        let t = reshape(b, qkv, &[0, 0, heads as i64, 3 * hd as i64]);
        let p = split(b, &t, -1, &[hd; 3]);
        let flat = |b: &mut Builder, t: &Value| reshape(b, t, &[0, 0, d as i64]);
        (flat(b, &p[0]), flat(b, &p[1]), flat(b, &p[2]))
    } else {
        let p = split(b, qkv, -1, &[d; 3]);
        (p[0].clone(), p[1].clone(), p[2].clone())
    };
    let bias = {
        let r = &mut b.scope("rel_pos");
        match c.rel_pos {
            RelPos::None => None,
            RelPos::Bias => Some(pos_embed_rel::rel_pos_bias(r, window, heads, 0)?),
            RelPos::BiasTf => Some(pos_embed_rel::rel_pos_bias_tf(r, window, heads)?),
            RelPos::Mlp(hidden) => Some(pos_embed_rel::rel_pos_mlp(
                r,
                window,
                heads,
                hidden,
                0,
                pos_embed_rel::RelPosMlpMode::Cr,
            )?),
        }
    };
    let cfg = AttnCfg::new(d, heads);
    let hooks = Hooks { bias, rope: None };
    attention_core(b, &q, &k, &v, &cfg, &hooks)
}

fn heads(attn_dim: usize, dim_head: usize) -> Result<usize> {
    if dim_head == 0 || !attn_dim.is_multiple_of(dim_head) {
        return Err(Error::invalid_model(format!(
            "attention width {attn_dim} is not a multiple of dim_head {dim_head}"
        )));
    }
    Ok(attn_dim / dim_head)
}

/// timm's `AttentionCl` on partitions `[N·P, L, dim]`: Linear `qkv` / `proj`.
fn attention_cl(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    window: (usize, usize),
    c: &TfCfg,
) -> Result<Value> {
    let attn_dim = if c.expand_first && out > dim {
        out
    } else {
        dim
    };
    let heads = heads(attn_dim, c.dim_head)?;
    let qkv = linear(
        &mut b.scope("qkv"),
        x,
        dim,
        3 * attn_dim,
        c.attn_bias,
        TF_INIT,
    )?;
    let y = attend(b, &qkv, attn_dim, heads, c.head_first, window, c)?;
    linear(
        &mut b.scope("proj"),
        &y,
        attn_dim,
        out,
        c.attn_bias,
        TF_INIT,
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Partition {
    Block,
    Grid,
}

/// Partition, `AttentionCl`, reverse, on a channels-last `[N, H, W, dim]` map.
fn partition_attn(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    hw: (usize, usize),
    p: Partition,
    c: &TfCfg,
) -> Result<Value> {
    let size = if p == Partition::Block {
        c.window
    } else {
        c.grid
    };
    if size.0 == 0 || size.1 == 0 || !hw.0.is_multiple_of(size.0) || !hw.1.is_multiple_of(size.1) {
        return Err(Error::invalid_argument(format!(
            "a {}x{} stage map does not divide into {}x{} partitions",
            hw.0, hw.1, size.0, size.1
        )));
    }
    let t = match p {
        Partition::Block => window_partition(b, x, hw, size, dim),
        Partition::Grid => grid_partition(b, x, hw, size, dim),
    };
    let t = attention_cl(b, &t, dim, out, size, c)?;
    Ok(match p {
        Partition::Block => window_reverse(b, &t, hw, size, out),
        Partition::Grid => grid_reverse(b, &t, hw, size, out),
    })
}

/// timm's `PartitionAttentionCl`: `x + ls1(partition attention(norm1(x)))`, then the MLP.
fn partition_attention_cl(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    hw: (usize, usize),
    p: Partition,
    c: &TfCfg,
) -> Result<Value> {
    let y = c.norm_cl.apply_last(&mut b.scope("norm1"), x, dim)?;
    let y = partition_attn(&mut b.scope("attn"), &y, dim, dim, hw, p, c)?;
    mlp_residuals(b, x, &y, dim, c)
}

/// `x + ls1(y)`, then `x + ls2(mlp(norm2(x)))` on channels-last maps.
fn mlp_residuals(b: &mut Builder, x: &Value, y: &Value, dim: usize, c: &TfCfg) -> Result<Value> {
    let y = match c.init_values {
        Some(v) => layer_scale(&mut b.scope("ls1"), y, dim, v)?,
        None => y.clone(),
    };
    let x = add(b, x, &y);
    let y = c.norm_cl.apply_last(&mut b.scope("norm2"), &x, dim)?;
    let hidden = (dim as f64 * c.expand_ratio) as usize;
    let y = mlp(&mut b.scope("mlp"), &y, &MlpCfg::new(dim, hidden, &c.act))?;
    let y = match c.init_values {
        Some(v) => layer_scale(&mut b.scope("ls2"), &y, dim, v)?,
        None => y,
    };
    Ok(add(b, &x, &y))
}

/// The spatial size of an NCHW map at the model's input size.
fn map_hw(b: &Builder, x: &Value) -> Result<(usize, usize)> {
    let (h, w) = b.image_size();
    b.spatial(x)
        .and_then(|s| Some((s.eval(h)?, s.eval(w)?)))
        .ok_or_else(|| Error::invalid_argument(format!("input {h}x{w} is too small")))
}

/// timm's `MaxxVitBlock`: conv block, then block (window) and grid attention channels-last.
fn maxxvit_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    stride: usize,
    c: &Cfg,
) -> Result<Value> {
    let y = conv_block(&mut b.scope("conv"), x, dim, out, stride, &c.conv)?;
    let hw = map_hw(b, &y)?;
    let spatial = b.spatial(&y).cloned();
    let mut t = nchw_to_nhwc(b, &y);
    if !c.tf.no_block_attn {
        let s = &mut b.scope("attn_block");
        t = partition_attention_cl(s, &t, out, hw, Partition::Block, &c.tf)?;
    }
    t = partition_attention_cl(
        &mut b.scope("attn_grid"),
        &t,
        out,
        hw,
        Partition::Grid,
        &c.tf,
    )?;
    let y = nhwc_to_nchw(b, &t);
    if let Some(s) = spatial {
        b.assign_spatial(&y, s);
    }
    Ok(y)
}

/// timm's `ParallelMaxxVitBlock`: two conv blocks, then window and grid attention side by side
/// on halves of the width (`ParallelPartitionAttention`).
fn parallel_maxxvit_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    stride: usize,
    c: &Cfg,
) -> Result<Value> {
    let y = {
        let mut s = b.scope("conv");
        let y = conv_block(&mut s.scope(0), x, dim, out, stride, &c.conv)?;
        let y = conv_block(&mut s.scope(1), &y, out, out, 1, &c.conv)?;
        y
    };
    if c.tf.window != c.tf.grid || !out.is_multiple_of(2) {
        return Err(Error::unsupported(
            "ParallelMaxxVitBlock needs window_size == grid_size and an even width (timm asserts)",
        ));
    }
    let hw = map_hw(b, &y)?;
    let spatial = b.spatial(&y).cloned();
    let t = nchw_to_nhwc(b, &y);
    let t = {
        let mut a = b.scope("attn");
        let n = c.tf.norm_cl.apply_last(&mut a.scope("norm1"), &t, out)?;
        let half = out / 2;
        let (tf, blk, grid) = (&c.tf, Partition::Block, Partition::Grid);
        let xw = partition_attn(&mut a.scope("attn_block"), &n, out, half, hw, blk, tf)?;
        let xg = partition_attn(&mut a.scope("attn_grid"), &n, out, half, hw, grid, tf)?;
        let y = concat(&mut a, &[&xw, &xg], -1);
        mlp_residuals(&mut a, &t, &y, out, tf)?
    };
    let y = nhwc_to_nchw(b, &t);
    if let Some(s) = spatial {
        b.assign_spatial(&y, s);
    }
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// shared pieces

/// A conv then its norm (BatchNorm folded into the conv at load).
fn conv_norm_act(
    b: &mut Builder,
    x: &Value,
    conv: &str,
    norm_name: &str,
    c: Conv,
    norm: &Norm,
) -> Result<Value> {
    match norm {
        Norm::Batch { eps } => conv_bn(b, x, conv, norm_name, c, *eps),
        n => {
            let y = conv2d(&mut b.scope(conv), x, c)?;
            n.apply_2d(&mut b.scope(norm_name), &y, c.out_ch)
        }
    }
}

/// timm's `BatchNormAct2d` / `LayerNormAct2d` not preceded by a conv.
fn norm_act(b: &mut Builder, x: &Value, ch: usize, n: &Norm, a: Option<&str>) -> Result<Value> {
    let y = n.apply_2d(b, x, ch)?;
    match a {
        Some(a) => act(b, a, &y),
        None => Ok(y),
    }
}

/// timm's `Downsample2d`: a stride-2 pool (`avg2`, `max2`: 2x2; `avg`, `max`: 3x3 padded 1),
/// then the 1x1 `expand` conv when the width changes. `same`: TF "SAME" pool padding.
fn downsample_2d(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    pool_type: &str,
    same: bool,
    bias: bool,
) -> Result<Value> {
    let (k, pad) = match pool_type {
        "avg2" | "max2" => (2, 0),
        _ => (3, 1),
    };
    let is_max = pool_type.starts_with("max");
    let y = if same {
        pool_same(b, x, dim, k, is_max)?
    } else if is_max {
        Pool2d::new(k, 2, pad).max(b, x, dim)?
    } else {
        Pool2d::new(k, 2, pad)
            .count_include_pad(k == 2)
            .avg(b, x, dim)?
    };
    if dim == out {
        return Ok(y);
    }
    let conv = Conv::new(dim, out, 1).bias(bias).init(CONV_INIT);
    conv2d(&mut b.scope("expand"), &y, conv)
}

/// timm's `AvgPool2dSame` / `MaxPool2dSame` at stride 2: TF "SAME" padding from the map's
/// size (the extra pixel at the end), zeros counted in the average as `F.pad` makes them.
fn pool_same(b: &mut Builder, x: &Value, ch: usize, k: usize, is_max: bool) -> Result<Value> {
    let (h, w) = map_hw(b, x)?;
    let pad = |n: usize| {
        let total = ((n.div_ceil(2) - 1) * 2 + k).saturating_sub(n);
        (total / 2, total - total / 2)
    };
    let ((t, bo), (l, r)) = (pad(h), pad(w));
    let mut attrs = vec![
        ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
        ("strides", Attr::Ints(vec![2; 2])),
        (
            "pads",
            Attr::Ints(vec![t as i64, l as i64, bo as i64, r as i64]),
        ),
    ];
    let y = if is_max {
        b.op("MaxPool", &[x], attrs)
    } else {
        attrs.push(("count_include_pad", Attr::Int(1)));
        b.op("AveragePool", &[x], attrs)
    };
    b.set_spatial(&y, x, Step::Same { stride: 2 }, ch)?;
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// the architecture: table and model_args

fn resolve(cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a MaxxViT variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = MaxxVitArgs::read(&a)?;
    let n = v.embed_dim.len();
    if n == 0 || v.depths.len() != n || v.embed_dim.contains(&0) {
        return Err(Error::invalid_model(format!(
            "model_args embed_dim {:?} and depths {:?} must name the same stages",
            v.embed_dim, v.depths
        )));
    }
    let img = match &v.img_size {
        Json::Null if cfg.pretrained_cfg.fixed_input_size => {
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            (h, w)
        }
        Json::Null => (224, 224),
        j => pair(&a, "img_size", j)?.ok_or_else(|| a.unsupported("img_size", "null"))?,
    };
    if img.0 < 32 || img.1 < 32 {
        return Err(Error::invalid_model(format!(
            "img_size {}x{} is smaller than the model's stride 32",
            img.0, img.1
        )));
    }
    let block_types = block_types(&a, &v.block_type, &v.depths)?;
    let stem_width = match v.stem_width {
        PerStage::All(w) => (w, w),
        PerStage::Each(ref l) if l.len() == 2 => (l[0], l[1]),
        PerStage::Each(_) => return Err(a.unsupported("stem_width", "one width or two")),
    };
    let pool_name = v.global_pool.as_ref().or(cfg.global_pool.as_ref());
    let pool = PoolKind::from_timm(pool_name.map_or("avg", String::as_str))?;
    if matches!(pool, PoolKind::None | PoolKind::CatAvgMax) {
        return Err(a.unsupported(
            "global_pool",
            "the native MaxxViT head pools with avg, max or avgmax",
        ));
    }
    let conv = ConvCfg {
        convnext: match v.conv_block_type.as_str() {
            "mbconv" => false,
            "convnext" => true,
            _ => return Err(a.unsupported("conv_block_type", "timm has mbconv and convnext")),
        },
        expand_ratio: v.conv_expand_ratio,
        expand_output: v.conv_expand_output,
        kernel_size: v.conv_kernel_size,
        group_size: v.conv_group_size,
        pre_norm_act: v.conv_pre_norm_act,
        output_bias: v.conv_output_bias,
        stride_mode: one_of(
            &a,
            "conv_stride_mode",
            v.conv_stride_mode,
            &["pool", "1x1", "dw"],
        )?,
        pool_type: pool_type(&a, "conv_pool_type", v.conv_pool_type)?,
        downsample_pool_type: pool_type(&a, "conv_downsample_pool_type", {
            let d = v.conv_downsample_pool_type;
            if d.is_empty() {
                "avg2".into()
            } else {
                d
            }
        })?,
        same: match v.conv_padding.as_str() {
            "" => false,
            "same" => true,
            _ => return Err(a.unsupported("conv_padding", "the native MaxxViT pads '' or 'same'")),
        },
        attn_early: v.conv_attn_early,
        se: match v.conv_attn_layer.as_deref() {
            Some("se") => true,
            None | Some("") => false,
            Some(_) => return Err(a.unsupported("conv_attn_layer", "the native MaxxViT builds se")),
        },
        attn_act: v.conv_attn_act_layer,
        attn_ratio: v.conv_attn_ratio,
        init_values: v.conv_init_values.filter(|&x| x != 0.0),
        act: v.conv_act_layer,
        norm: Norm::from_timm(&v.conv_norm_layer, v.conv_norm_eps)?,
    };
    if conv.convnext && conv.stride_mode == "1x1" {
        return Err(a.unsupported("conv_stride_mode", "ConvNeXt blocks stride by pool or dw"));
    }
    let (window, grid) = {
        let w = pair(&a, "transformer_window_size", &v.transformer_window_size)?;
        let g = pair(&a, "transformer_grid_size", &v.transformer_grid_size)?;
        let r = v.transformer_partition_ratio.max(1);
        match w {
            Some(w) => (w, g.unwrap_or(w)),
            None => ((img.0 / r, img.1 / r), (img.0 / r, img.1 / r)),
        }
    };
    if v.transformer_use_nchw_attn {
        return Err(a.unsupported(
            "transformer_use_nchw_attn",
            "the native MaxxViT builds the channels-last partition attention",
        ));
    }
    let tf = TfCfg {
        dim_head: v.transformer_dim_head,
        head_first: v.transformer_head_first,
        expand_ratio: v.transformer_expand_ratio,
        expand_first: v.transformer_expand_first,
        shortcut_bias: v.transformer_shortcut_bias,
        attn_bias: v.transformer_attn_bias,
        pool_type: pool_type(&a, "transformer_pool_type", v.transformer_pool_type)?,
        rel_pos: match v.transformer_rel_pos_type.as_str() {
            "bias" => RelPos::Bias,
            "bias_tf" => RelPos::BiasTf,
            "mlp" => RelPos::Mlp(v.transformer_rel_pos_dim),
            _ => RelPos::None,
        },
        window,
        grid,
        no_block_attn: v.transformer_no_block_attn,
        init_values: v.transformer_init_values.filter(|&x| x != 0.0),
        act: v.transformer_act_layer,
        norm: Norm::from_timm(&v.transformer_norm_layer, Some(v.transformer_norm_eps))?,
        norm_cl: Norm::from_timm(&v.transformer_norm_layer_cl, Some(v.transformer_norm_eps))?,
    };
    Ok(Cfg {
        img,
        embed_dim: v.embed_dim,
        block_types,
        stem_width,
        stem_bias: v.stem_bias,
        head_hidden_size: v.head_hidden_size.filter(|&h| h > 0),
        pool,
        conv,
        tf,
    })
}

fn one_of(a: &Args, key: &str, v: String, allowed: &[&str]) -> Result<String> {
    if allowed.contains(&v.as_str()) {
        Ok(v)
    } else {
        Err(a.unsupported(key, &format!("timm takes one of {allowed:?}")))
    }
}

fn pool_type(a: &Args, key: &str, v: String) -> Result<String> {
    one_of(a, key, v, &["avg2", "max2", "avg", "max"])
}

/// timm's `to_2tuple` of a size: `null`, one integer, or two.
fn pair(a: &Args, key: &str, j: &Json) -> Result<Option<(usize, usize)>> {
    let int = |v: &Json| {
        v.as_u64()
            .filter(|&n| n > 0 && n <= 1 << 16)
            .map(|n| n as usize)
    };
    match j {
        Json::Null => Ok(None),
        Json::Array(l) if l.len() == 2 => match (int(&l[0]), int(&l[1])) {
            (Some(h), Some(w)) => Ok(Some((h, w))),
            _ => Err(a.unsupported(key, "sizes are positive integers")),
        },
        v => int(v)
            .map(|n| Some((n, n)))
            .ok_or_else(|| a.unsupported(key, "a size is one integer or two")),
    }
}

/// Per stage, the block kinds of `extend_tuple(block_types[i], depths[i])`.
fn block_types(a: &Args, j: &Json, depths: &[usize]) -> Result<Vec<Vec<Kind>>> {
    let default = Json::from(vec!["C", "C", "T", "T"]);
    let j = if j.is_null() { &default } else { j };
    let bad = || {
        a.unsupported(
            "block_type",
            "per stage one of C, T, M, PM or a list of them",
        )
    };
    let stages = j
        .as_array()
        .filter(|l| l.len() == depths.len())
        .ok_or_else(bad)?;
    let kind = |v: &Json| match v.as_str() {
        Some("C") => Ok(Kind::C),
        Some("T") => Ok(Kind::T),
        Some("M") => Ok(Kind::M),
        Some("PM") => Ok(Kind::PM),
        _ => Err(bad()),
    };
    stages
        .iter()
        .zip(depths)
        .map(|(s, &depth)| {
            let listed: Vec<Kind> = match s {
                Json::Array(l) if !l.is_empty() => l.iter().map(kind).collect::<Result<_>>()?,
                v => vec![kind(v)?],
            };
            let last = *listed.last().unwrap_or(&Kind::C);
            Ok((0..depth)
                .map(|i| listed.get(i).copied().unwrap_or(last))
                .collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        let n = TABLE.validate().unwrap();
        assert!(n >= 58, "{n} archs");
        for arch in TABLE.names() {
            assert!(matches(arch), "{arch} is not matched by the family");
            let cfg = default_config(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
        assert!(!matches("maxvit_unknown"));
    }

    #[test]
    fn block_types_extend_the_last_kind_as_timm() {
        let a = Args::new("x", None, &serde_json::Map::new());
        let j = serde_json::json!(["C", "M", ["C", "T"], "T"]);
        let k = block_types(&a, &j, &[2, 1, 3, 1]).unwrap();
        assert_eq!(k[0], vec![Kind::C, Kind::C]);
        assert_eq!(k[2], vec![Kind::C, Kind::T, Kind::T]);
    }
}
