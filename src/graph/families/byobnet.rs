//! timm's Bring-Your-Own-Blocks networks: `byobnet.py` (GENet `gernet_*`, RepVGG `repvgg_*`,
//! MobileOne `mobileone_*`, `resnet51q` / `resnet61q`, the `*resnext26ts` / `*resnet33ts` /
//! `gcresnet*` ResNets, RegNetZ `regnetz_b16` .. `regnetz_e8`, the CLIP ResNets with the
//! classifier (`_gap`) or MLP head, `test_byobnet`), and the two modules built on its
//! `ByobNet` class, whose configs and block types it shares: `byoanet.py` (the `self_attn`
//! block with `BottleneckAttn`, `HaloAttn` or `LambdaLayer`: `botnet*`, `halonet*`,
//! `lambda_resnet*`, ...) and `mobilevit.py` (its registered `mobilevit` / `mobilevit2` blocks:
//! `mobilevit_*`, `mobilevitv2_*`). One table covers the three modules.
//!
//! A model is a `ByoModelCfg`: a stem and stages of `ByoBlockCfg`s (the generated table writes
//! one block per entry); config.json's `model_args` overlay its fields as `replace(cfg, **kwargs)`
//! does. RepVGG and MobileOne weights are stored unfused (timm's training-time branches): every
//! branch is folded into one conv at load, as `reparameterize_model` does. The fixed-size
//! self-attention layers (`BottleneckAttn`, `LambdaLayer` with `r=None`) take their size from
//! their relative-position weights, else from `img_size`; MobileViT transformers' widths and
//! depths come from the weights where they hold them. A `norm_layer` EvoNorm (the RegNetZ `_evos`,
//! EvoNorm2dS0a with group size 16) replaces every BatchNorm + activation. Refused with the
//! reason: the rotary attention-pool head (`attn_rot`) of the CLIP ResNets.
use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{self, Args};
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::attention_pool::AttentionPool2d;
use crate::graph::layers::evo_norm::EvoNorm;
use crate::graph::layers::heads::{fc, norm_mlp_head};
use crate::graph::layers::mlp::{conv_mlp, mlp, MlpCfg};
use crate::graph::layers::non_local_attn::{bat_non_local_attn, BatCfg};
use crate::graph::layers::pool::{avg_pool2d_same_s1, global_pool, Pool2d, PoolKind};
use crate::graph::layers::se::{eca, eca_kernel, global_context, GlobalContextCfg, SqueezeExcite};
use crate::graph::layers::{
    self, act, conv2d, conv_norm_act, make_divisible, py_round, Conv, Norm,
};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::transforms::{fold_bn, identity_branch, sum_branches, BnStats, Branch};
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/byobnet.json"));

pub const FAMILY: Family = Family {
    name: "byobnet",
    examples: "gernet_*, repvgg_*, mobileone_s0..s4, resnet51q, resnet61q, *resnext26ts, *resnet33ts, regnetz_b16..e8, resnet*_clip_gap, resnet50_mlp, test_byobnet, botnet*, halonet*, lambda_resnet*, mobilevit_*, mobilevitv2_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

const BN: Norm = Norm::Batch { eps: 1e-5 };

timm_args! {
    /// `ByoModelCfg`'s fields and the `ByobNet` arguments that shape the graph.
    struct ByobArgs {
        blocks: Json = Json::Null,
        downsample: String = "conv1x1".into(),
        stem_type: String = "3x3".into(),
        stem_pool: Option<String> = Some("maxpool".into()),
        stem_chs: Json = Json::from(32),
        width_factor: f64 = 1.0,
        num_features: usize = 0,
        /// Read so config.json may carry it; no effect on an inference graph.
        #[allow(dead_code)]
        fixed_input_size: bool = false,
        act_layer: String = "relu".into(),
        norm_layer: Json = Json::from("batchnorm"),
        aa_layer: Option<String> = None,
        head_hidden_size: Option<usize> = None,
        head_type: String = "classifier".into(),
        attn_layer: Option<String> = None,
        attn_kwargs: Json = Json::Null,
        self_attn_layer: Option<String> = None,
        self_attn_kwargs: Json = Json::Null,
        block_kwargs: Json = Json::Null,
        output_stride: usize = 32,
        /// The feature size of the fixed-size self-attention layers (`feat_size`).
        img_size: Json = Json::Null,
        /// Read so config.json may carry it; no effect on an inference graph.
        #[allow(dead_code)]
        drop_block_size: usize = 3,
    }
}

timm_args! {
    /// The block arguments `block_kwargs` may set (each block type takes a subset).
    struct BlockKwargs {
        kernel_size: usize = 3,
        bottle_in: bool = false,
        linear_out: bool = false,
        extra_conv: bool = false,
        attn_last: Option<bool> = None,
        num_conv_branches: usize = 1,
        inference_mode: bool = false,
        /// `SelfAttnBlock`'s norm + act after the attention (default true).
        post_attn_na: Option<bool> = None,
    }
}

timm_args! {
    /// `MobileVitBlock` / `MobileVitV2Block` arguments `block_kwargs` may set (`num_heads` and
    /// `no_fusion` are v1's; v2 swallows them as timm's `**kwargs` does).
    struct MobileVitKwargs {
        kernel_size: usize = 3,
        mlp_ratio: f64 = 2.0,
        transformer_dim: Option<usize> = None,
        transformer_depth: usize = 2,
        patch_size: usize = 8,
        num_heads: usize = 4,
        no_fusion: bool = false,
    }
}

timm_args! {
    /// `BottleneckAttn`'s kwargs (`self_attn_kwargs`).
    struct BottleneckKwargs {
        num_heads: usize = 4,
        dim_head: Option<usize> = None,
        qk_ratio: f64 = 1.0,
        qkv_bias: bool = false,
        scale_pos_embed: bool = false,
    }
}

timm_args! {
    /// `HaloAttn`'s kwargs.
    struct HaloKwargs {
        num_heads: usize = 8,
        dim_head: Option<usize> = None,
        block_size: usize = 8,
        halo_size: usize = 3,
        qk_ratio: f64 = 1.0,
        qkv_bias: bool = false,
        avg_down: bool = false,
        scale_pos_embed: bool = false,
    }
}

timm_args! {
    /// `LambdaLayer`'s kwargs.
    struct LambdaKwargs {
        num_heads: usize = 4,
        dim_head: Option<usize> = Some(16),
        r: Option<usize> = Some(9),
        qk_ratio: f64 = 1.0,
        qkv_bias: bool = false,
    }
}

timm_args! {
    /// `SEModule`'s arguments.
    struct SeArgs { rd_ratio: f64 = 1.0 / 16.0, rd_divisor: usize = 8 }
}

timm_args! {
    /// `EcaModule`'s arguments.
    struct EcaArgs { gamma: f64 = 2.0, beta: f64 = 1.0 }
}

timm_args! {
    /// `BatNonLocalAttn`'s arguments (its dropout is the identity at inference).
    struct BatArgs {
        block_size: usize = 7,
        groups: usize = 2,
        rd_ratio: f64 = 0.25,
        rd_channels: Option<usize> = None,
        rd_divisor: usize = 8,
        /// Dropout2d's rate: accepted as timm accepts it, unused at inference.
        #[allow(dead_code)]
        drop_rate: f64 = 0.2,
    }
}

timm_args! {
    /// `GlobalContext`'s arguments.
    struct GcArgs {
        use_attn: bool = true,
        fuse_add: bool = false,
        fuse_scale: bool = true,
        rd_ratio: f64 = 1.0 / 8.0,
        rd_divisor: usize = 1,
    }
}

/// An attention module (`get_attn`) of a block.
#[derive(Debug, Clone)]
enum Attn {
    Se {
        rd_ratio: f64,
        rd_divisor: usize,
    },
    /// The kernel follows the channels (`EcaModule(channels, gamma, beta)`).
    Eca {
        gamma: f64,
        beta: f64,
    },
    Gc(GcArgs),
    Bat(BatArgs),
}

/// `LayerFn`: the activation, anti-aliasing and the attention layer a block gets.
#[derive(Debug, Clone)]
struct Layers {
    act: String,
    /// `cfg.downsample`: every block's shortcut type.
    downsample: Downsample,
    aa: bool,
    attn: Option<Attn>,
    /// `self_attn`: the layer name and its kwargs, resolved per block (they depend on its width).
    self_attn: Option<(String, Map<String, Json>)>,
    /// `norm_layer` an EvoNorm / FRN (its activation its own) instead of BatchNorm.
    evo: Option<EvoNorm>,
}

/// One block of a stage, as `create_byob_stages` resolves it.
#[derive(Debug, Clone)]
struct BlockCfg {
    kind: String,
    c: f64,
    s: usize,
    gs: GroupSize,
    br: f64,
    layers: Layers,
    kw: BlockKwargs,
    /// The MobileViT blocks' arguments.
    mvit: Option<MobileVitKwargs>,
}

/// `ByoBlockCfg.gs`: a group size, or RepVGG's `chs // groups` on every second block.
#[derive(Debug, Clone, Copy)]
enum GroupSize {
    Fixed(Option<usize>),
    EverySecond(usize),
}

impl GroupSize {
    /// The group size of block `idx` of its stage with `chs` output channels.
    fn at(self, chs: usize, idx: usize) -> Option<usize> {
        match self {
            GroupSize::Fixed(g) => g,
            GroupSize::EverySecond(groups) => Some(if (idx + 1).is_multiple_of(2) {
                chs / groups
            } else {
                0
            }),
        }
    }
}

/// What a block is built with (`block_kwargs` of `create_byob_stages`).
struct BlockIo {
    in_chs: usize,
    out_chs: usize,
    stride: usize,
    dilation: (usize, usize),
    group_size: Option<usize>,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a byobnet architecture (timm's byobnet.py: {})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let r = ByobArgs::read(&a)?;
    let is_bn = r
        .norm_layer
        .as_str()
        .is_some_and(|n| matches!(Norm::from_timm(n, None), Ok(Norm::Batch { .. })));
    let evo = if is_bn {
        None
    } else {
        // A name or `partial(EvoNorm2dS0a, group_size=16)`, as `get_norm_act_layer` takes it.
        let (name, kw) = match &r.norm_layer {
            Json::String(n) => (Some(n.as_str()), None),
            Json::Object(m) => (m.get("partial").and_then(Json::as_str), Some(m)),
            _ => (None, None),
        };
        match name.and_then(|n| EvoNorm::from_timm(n, kw, Some(&r.act_layer))) {
            Some(e) => Some(e?),
            None => return Err(a.unsupported(
                "norm_layer",
                "the native byobnet graph supports BatchNorm, EvoNorm2d* and FilterResponseNorm*",
            )),
        }
    };
    if evo.is_some() && r.head_type == "mlp" {
        return Err(a.unsupported(
            "head_type",
            "the MLP head's norm with an EvoNorm norm_layer is not implemented",
        ));
    }
    if !matches!(r.head_type.as_str(), "" | "classifier" | "mlp" | "attn_abs") {
        return Err(a.unsupported(
            "head_type",
            "the rotary attention-pool head (attn_rot) is not implemented",
        ));
    }
    let output_stride = match b.output_stride().unwrap_or(r.output_stride) {
        os @ (8 | 16 | 32) => os,
        os => {
            return Err(Error::invalid_argument(format!(
                "output_stride {os} is not one of timm's byobnet output strides (8, 16, 32)"
            )))
        }
    };
    let downsample = match r.downsample.as_str() {
        "conv1x1" => Downsample::Conv,
        "avg" => Downsample::Avg,
        "" => Downsample::None,
        _ => return Err(a.unsupported("downsample", "timm takes 'conv1x1', 'avg' or ''")),
    };
    let stage_layers = Layers {
        act: r.act_layer.clone(),
        downsample,
        aa: r.aa_layer.as_deref().is_some_and(|s| !s.is_empty()),
        attn: resolve_attn(&a, r.attn_layer.as_deref(), r.attn_kwargs.as_object())?,
        self_attn: resolve_self_attn(r.self_attn_layer.as_deref(), &r.self_attn_kwargs),
        evo,
    };
    if let Some(aa) = r.aa_layer.as_deref().filter(|s| !s.is_empty()) {
        if !matches!(
            aa.to_ascii_lowercase().replace(['_', '-'], "").as_str(),
            "avg" | "avgpool"
        ) {
            return Err(a.unsupported("aa_layer", "only average-pool anti-aliasing is implemented"));
        }
    }
    let stages = resolve_blocks(&a, &r, &stage_layers)?;
    let wf = r.width_factor;

    // Stem (`get_layer_fns(cfg, allow_aa=False)`).
    let stem_layers = Layers {
        aa: false,
        ..stage_layers.clone()
    };
    let in_chs = cfg.pretrained_cfg.input_size[0];
    let stem_chs: Vec<usize> = match &r.stem_chs {
        Json::Array(v) => v
            .iter()
            .map(|c| c.as_f64().map(|c| py_round(c * wf) as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| a.unsupported("stem_chs", "a number or a list of numbers"))?,
        v => vec![py_round(
            v.as_f64()
                .ok_or_else(|| a.unsupported("stem_chs", "a number"))?
                * wf,
        ) as usize],
    };
    let (mut x, mut taps) = stem(
        &mut b.scope("stem"),
        in_chs,
        &stem_chs,
        matches!(r.stem_chs, Json::Array(_)),
        &r.stem_type,
        r.stem_pool.as_deref().unwrap_or(""),
        &stem_layers,
    )?;
    let Some(mut prev) = taps.pop() else {
        return Err(Error::invalid_model("byobnet stem without output"));
    };
    // `feat_size`: `img_size` (the pretrained input size for fixed-size models) reduced by the
    // stem and every stage's first stride, as timm's `reduce_feat_size`.
    let img_size = match &r.img_size {
        Json::Null if cfg.pretrained_cfg.fixed_input_size => {
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            Some((h, w))
        }
        Json::Null => None,
        Json::Array(v) if v.len() == 2 => Some((
            json_size(&v[0]).ok_or_else(|| a.unsupported("img_size", "two sizes"))?,
            json_size(&v[1]).ok_or_else(|| a.unsupported("img_size", "two sizes"))?,
        )),
        v => {
            let n = json_size(v).ok_or_else(|| a.unsupported("img_size", "a size or two"))?;
            Some((n, n))
        }
    };
    let mut feat = img_size.map(|(h, w)| (h / prev.2, w / prev.2));

    // `create_byob_stages`: a stage's first block strides, or dilates past output_stride.
    let (mut net_stride, mut dilation, mut prev_chs) = (prev.2, 1, prev.1);
    for (i, blocks) in stages.iter().enumerate() {
        let mut stride = blocks[0].s;
        if stride != 1 {
            taps.push(prev.clone());
        }
        if net_stride >= output_stride && stride > 1 {
            dilation *= stride;
            stride = 1;
        }
        net_stride *= stride;
        let mut first_dilation = if dilation <= 2 { 1 } else { 2 };
        let mut stages_scope = b.scope("stages");
        let s = &mut stages_scope.scope(i);
        for (j, bc) in blocks.iter().enumerate() {
            let out_chs = make_divisible(bc.c * wf, 8, 0.9);
            let io = BlockIo {
                in_chs: prev_chs,
                out_chs,
                stride: if j == 0 { stride } else { 1 },
                dilation: (first_dilation, dilation),
                group_size: bc.gs.at(out_chs, j),
            };
            x = block(&mut s.scope(j), &x, bc, &io, feat)?;
            first_dilation = dilation;
            prev_chs = io.out_chs;
            if stride > 1 && j == 0 {
                feat = feat.map(|(h, w)| (h / stride, w / stride));
            }
        }
        prev = (x.clone(), prev_chs, net_stride, format!("stages.{i}"));
    }
    for (v, c, red, m) in &taps {
        b.feature(v, *c, *red, m);
    }

    let num_features = if r.num_features > 0 {
        let n = py_round(wf * r.num_features as f64) as usize;
        let c = Conv::new(prev_chs, n, 1);
        x = cna(&mut b.scope("final_conv"), &x, c, true, &stage_layers)?;
        n
    } else {
        prev_chs
    };
    b.feature(&x, num_features, net_stride, "final_conv");
    if b.feature_count() > 5 {
        b.default_out_indices(&[0, 1, 2, 3, 4]);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, num_features));
    }
    head(b, cfg, &r, &x, num_features)
}

/// `ClassifierHead` or `NormMlpClassifierHead` (`head_type='mlp'`); `head.fc` init normal(0.01).
fn head(
    b: &mut Builder,
    cfg: &ModelConfig,
    r: &ByobArgs,
    x: &Value,
    width: usize,
) -> Result<(Value, usize)> {
    if r.head_type == "attn_abs" {
        return attention_pool_head(b, cfg, r, x, width);
    }
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native byobnet graph",
        ));
    }
    let features = b.output() == OutputKind::Features;
    if r.head_type == "mlp" {
        let s = &mut b.scope("head");
        let classes = cfg.num_classes;
        return norm_mlp_head(
            s,
            x,
            width,
            pool,
            &BN,
            r.head_hidden_size,
            &r.act_layer,
            classes,
            features,
        );
    }
    let pooled = global_pool(b, x, pool);
    let width = width * pool.multiplier();
    if features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = fc(
        &mut b.scope("head"),
        &pooled,
        width,
        cfg.num_classes,
        Init::Normal(0.01),
    )?;
    Ok((logits, cfg.num_classes))
}

/// CLIP ResNets' `head_type='attn_abs'`: `AttentionPool2d` over the final map (token pooling;
/// `proj` to `num_classes`, the embedding, unless pre-logits features are asked for).
fn attention_pool_head(
    b: &mut Builder,
    cfg: &ModelConfig,
    r: &ByobArgs,
    x: &Value,
    width: usize,
) -> Result<(Value, usize)> {
    let pool = cfg.global_pool.as_deref().unwrap_or("token");
    if pool != "token" {
        return Err(Error::unsupported(format!(
            "global_pool '{pool}': timm's AttentionPool2d head pools by its token only"
        )));
    }
    // timm's feat_size: the image size reduced by the network's stride.
    let [_, h, w] = cfg.pretrained_cfg.input_size;
    let stride = r.output_stride.min(32);
    let mut feat_size = (h / stride, w / stride);
    if let Some(s) = b.weight_shape("head.pos_embed") {
        let side = ((s[0].saturating_sub(1)) as f64).sqrt().round() as usize;
        if s[0] != feat_size.0 * feat_size.1 + 1 && side * side + 1 == s[0] {
            feat_size = (side, side);
        }
    }
    let embed_dim = match b.weight_shape("head.q.weight") {
        Some(s) => s[0],
        None => r.head_hidden_size.unwrap_or(width),
    };
    let pool = AttentionPool2d {
        in_features: width,
        embed_dim,
        head_dim: 64,
        out_features: cfg.num_classes,
        feat_size,
    };
    // The positions are resampled for the map's size at load, so the graph takes one size.
    b.fix_input_size();
    let (ih, iw) = b.nominal_hw();
    let grid = b
        .spatial(x)
        .and_then(|s| s.eval(ih).zip(s.eval(iw)))
        .ok_or_else(|| Error::internal("AttentionPool2d: the final map's size is unknown"))?;
    let pre_logits = b.output() == OutputKind::Features;
    let y = pool.apply(&mut b.scope("head"), x, grid, pre_logits)?;
    Ok((y, pool.width(pre_logits)))
}

// ---------------------------------------------------------------------------------------------
// stem

/// A feature tap: value, channels, reduction, module.
type Tap = (Value, usize, usize, String);

/// `create_byob_stem`: the taps of its `feature_info`, the last being the stem's output.
fn stem(
    b: &mut Builder,
    in_chs: usize,
    chs: &[usize],
    chs_listed: bool,
    stem_type: &str,
    pool: &str,
    l: &Layers,
) -> Result<(Value, Vec<Tap>)> {
    let x = b.input();
    let out = chs[chs.len() - 1];
    let single = |b: &mut Builder, y: Value| (y.clone(), vec![(y, out, 2, b.path().to_string())]);
    Ok(match stem_type {
        t if t.contains("quad") => {
            let num_act = if t.contains("quad2") { 2 } else { 4 };
            stem_stack(b, &x, in_chs, &decay_chs(out, 4, 0.5), 3, num_act, pool, l)?
        }
        t if t.contains("tiered") => {
            let c = [3 * out / 8, out / 2, out];
            stem_stack(b, &x, in_chs, &c, 3, 3, pool, l)?
        }
        t if t.contains("deep") => {
            stem_stack(b, &x, in_chs, &decay_chs(out, 3, 1.0), 3, 3, pool, l)?
        }
        t if t.contains("rep") => {
            let io = BlockIo {
                in_chs,
                out_chs: out,
                stride: 2,
                dilation: (1, 1),
                group_size: None,
            };
            let y = rep_vgg_block(b, &x, &io, 3, l)?;
            single(b, y)
        }
        t if t.contains("one") => {
            let io = BlockIo {
                in_chs,
                out_chs: out,
                stride: 2,
                dilation: (1, 1),
                group_size: None,
            };
            let y = mobile_one_block(b, &x, &io, 3, 1, l)?;
            single(b, y)
        }
        t => {
            let k = if t.contains("7x7") { 7 } else { 3 };
            if chs_listed && k == 3 {
                let n = chs.len();
                stem_stack(b, &x, in_chs, chs, 3, n, pool, l)?
            } else if !pool.is_empty() {
                stem_stack(b, &x, in_chs, &[out], k, 1, pool, l)?
            } else {
                let y = cna(b, &x, Conv::new(in_chs, out, k).stride(2), true, l)?;
                single(b, y)
            }
        }
    })
}

/// `Stem`'s `[round(out_chs * chs_decay ** i) for i in range(num_rep)][::-1]`.
fn decay_chs(out: usize, n: usize, decay: f64) -> Vec<usize> {
    (0..n)
        .rev()
        .map(|i| py_round(out as f64 * decay.powi(i as i32)) as usize)
        .collect()
}

/// timm's `Stem`: `conv1..convN` (the first `N - num_act` without norm and act), the first strided,
/// then a pool, or the last conv strided too (stride 4 in all).
#[allow(clippy::too_many_arguments)]
fn stem_stack(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    chs: &[usize],
    k: usize,
    num_act: usize,
    pool: &str,
    l: &Layers,
) -> Result<(Value, Vec<Tap>)> {
    let n = chs.len();
    let mut strides = vec![1; n];
    strides[0] = 2;
    if pool.is_empty() {
        strides[n - 1] = 2;
    }
    let (mut x, mut prev_chs, mut red, mut taps) = (x.clone(), in_chs, 1, Vec::new());
    let mut prev_name = String::new();
    for (i, (&ch, &s)) in chs.iter().zip(&strides).enumerate() {
        if i > 0 && s > 1 {
            taps.push((x.clone(), prev_chs, red, prev_name.clone()));
        }
        let name = format!("conv{}", i + 1);
        let c = Conv::new(prev_chs, ch, k).stride(s);
        x = if i + num_act >= n {
            cna(&mut b.scope(&name), &x, c, true, l)?
        } else {
            conv2d(&mut b.scope(&name), &x, c)?
        };
        prev_name = b.scope(&name).path().to_string();
        prev_chs = ch;
        red *= s;
    }
    if !pool.is_empty() {
        taps.push((x.clone(), prev_chs, red, prev_name));
        let p = pool.to_ascii_lowercase();
        x = match p.as_str() {
            "max2" => Pool2d::new(2, 2, 0).max(b, &x, prev_chs)?,
            "avg2" => Pool2d::new(2, 2, 0).avg(b, &x, prev_chs)?,
            "max" | "maxpool" => Pool2d::new(3, 2, 1).max(b, &x, prev_chs)?,
            "avg" | "avgpool" => Pool2d::new(3, 2, 1).count_include_pad(false).avg(b, &x, prev_chs)?,
            _ => {
                return Err(Error::unsupported(format!(
                    "byobnet stem_pool `{pool}` is not one of timm's (max, maxpool, avg, avgpool, max2, avg2)"
                )))
            }
        };
        red *= 2;
        prev_name = b.scope("pool").path().to_string();
    }
    taps.push((x.clone(), prev_chs, red, prev_name));
    Ok((x, taps))
}

// ---------------------------------------------------------------------------------------------
// blocks

/// `create_block`: the block types of `_block_registry` (with mobilevit.py's `mobilevit` and
/// `mobilevit2`); `feat` is the self-attention blocks' `feat_size`.
fn block(
    b: &mut Builder,
    x: &Value,
    bc: &BlockCfg,
    io: &BlockIo,
    feat: Option<(usize, usize)>,
) -> Result<Value> {
    let (l, kw) = (&bc.layers, &bc.kw);
    match bc.kind.as_str() {
        "basic" => basic_block(b, x, bc, io),
        "bottle" => bottleneck_block(b, x, bc, io),
        "dark" => dark_block(b, x, bc, io),
        "edge" => edge_block(b, x, bc, io),
        "rep" => rep_vgg_block(b, x, io, kw.kernel_size, l),
        "one" => {
            let k = kw.kernel_size;
            mobile_one_block(b, x, io, k, kw.num_conv_branches, l)
        }
        "self_attn" => self_attn_block(b, x, bc, io, feat),
        "mobilevit" => mobilevit_block(b, x, bc, io),
        "mobilevit2" => mobilevit_v2_block(b, x, bc, io),
        t => Err(Error::unsupported(format!(
            "byobnet block type `{t}` is not one of timm's (basic, bottle, dark, edge, rep, one, self_attn, mobilevit, mobilevit2)"
        ))),
    }
}

/// `BasicBlock`: kxk (strided) → kxk, attention last by default.
fn basic_block(b: &mut Builder, x: &Value, bc: &BlockCfg, io: &BlockIo) -> Result<Value> {
    let (l, k) = (&bc.layers, bc.kw.kernel_size);
    let mid = make_divisible(io.out_chs as f64 * bc.br, 8, 0.9);
    let groups = num_groups(io.group_size, mid)?;
    let attn_last = bc.kw.attn_last.unwrap_or(true);
    let c1 = Conv::new(io.in_chs, mid, k)
        .stride(io.stride)
        .dilation(io.dilation.0);
    let y = cna(&mut b.scope("conv1_kxk"), x, c1, true, l)?;
    let y = attn_at(&mut b.scope("attn"), &y, mid, l, !attn_last)?;
    let c2 = Conv::new(mid, io.out_chs, k)
        .dilation(io.dilation.1)
        .groups(groups);
    let y = cna(&mut b.scope("conv2_kxk"), &y, c2, false, l)?;
    let y = attn_at(&mut b.scope("attn_last"), &y, io.out_chs, l, attn_last)?;
    residual(b, x, &y, io, l, bc.kw.linear_out)
}

/// `BottleneckBlock`: 1x1 → kxk (strided, grouped) → optional kxk → attention → 1x1.
fn bottleneck_block(b: &mut Builder, x: &Value, bc: &BlockCfg, io: &BlockIo) -> Result<Value> {
    let (l, k, kw) = (&bc.layers, bc.kw.kernel_size, &bc.kw);
    let base = if kw.bottle_in { io.in_chs } else { io.out_chs };
    let mid = make_divisible(base as f64 * bc.br, 8, 0.9);
    let groups = kxk_groups(b, "conv2_kxk", io.group_size, mid)?;
    let attn_last = kw.attn_last.unwrap_or(false);
    let y = cna(
        &mut b.scope("conv1_1x1"),
        x,
        Conv::new(io.in_chs, mid, 1),
        true,
        l,
    )?;
    let c2 = Conv::new(mid, mid, k)
        .stride(io.stride)
        .dilation(io.dilation.0)
        .groups(groups);
    let mut y = cna(&mut b.scope("conv2_kxk"), &y, c2, true, l)?;
    if kw.extra_conv {
        let c = Conv::new(mid, mid, k)
            .dilation(io.dilation.1)
            .groups(groups);
        y = cna(&mut b.scope("conv2b_kxk"), &y, c, true, l)?;
    }
    let y = attn_at(&mut b.scope("attn"), &y, mid, l, !attn_last)?;
    let y = cna(
        &mut b.scope("conv3_1x1"),
        &y,
        Conv::new(mid, io.out_chs, 1),
        false,
        l,
    )?;
    let y = attn_at(&mut b.scope("attn_last"), &y, io.out_chs, l, attn_last)?;
    residual(b, x, &y, io, l, kw.linear_out)
}

/// `DarkBlock`: 1x1 → kxk (strided), attention last by default.
fn dark_block(b: &mut Builder, x: &Value, bc: &BlockCfg, io: &BlockIo) -> Result<Value> {
    let (l, k) = (&bc.layers, bc.kw.kernel_size);
    let mid = make_divisible(io.out_chs as f64 * bc.br, 8, 0.9);
    let groups = num_groups(io.group_size, mid)?;
    let attn_last = bc.kw.attn_last.unwrap_or(true);
    let y = cna(
        &mut b.scope("conv1_1x1"),
        x,
        Conv::new(io.in_chs, mid, 1),
        true,
        l,
    )?;
    let y = attn_at(&mut b.scope("attn"), &y, mid, l, !attn_last)?;
    let c2 = Conv::new(mid, io.out_chs, k)
        .stride(io.stride)
        .dilation(io.dilation.0)
        .groups(groups);
    let y = cna(&mut b.scope("conv2_kxk"), &y, c2, false, l)?;
    let y = attn_at(&mut b.scope("attn_last"), &y, io.out_chs, l, attn_last)?;
    residual(b, x, &y, io, l, bc.kw.linear_out)
}

/// `EdgeBlock`: kxk (strided, grouped) → 1x1.
fn edge_block(b: &mut Builder, x: &Value, bc: &BlockCfg, io: &BlockIo) -> Result<Value> {
    let (l, k) = (&bc.layers, bc.kw.kernel_size);
    let mid = make_divisible(io.out_chs as f64 * bc.br, 8, 0.9);
    let groups = num_groups(io.group_size, mid)?;
    let attn_last = bc.kw.attn_last.unwrap_or(false);
    let c1 = Conv::new(io.in_chs, mid, k)
        .stride(io.stride)
        .dilation(io.dilation.0)
        .groups(groups);
    let y = cna(&mut b.scope("conv1_kxk"), x, c1, true, l)?;
    let y = attn_at(&mut b.scope("attn"), &y, mid, l, !attn_last)?;
    let y = cna(
        &mut b.scope("conv2_1x1"),
        &y,
        Conv::new(mid, io.out_chs, 1),
        false,
        l,
    )?;
    let y = attn_at(&mut b.scope("attn_last"), &y, io.out_chs, l, attn_last)?;
    residual(b, x, &y, io, l, bc.kw.linear_out)
}

/// `SelfAttnBlock`: 1x1 → optional kxk (strided) → self-attention (strided when no kxk) →
/// norm + act → 1x1, `+ shortcut`, act.
fn self_attn_block(
    b: &mut Builder,
    x: &Value,
    bc: &BlockCfg,
    io: &BlockIo,
    feat: Option<(usize, usize)>,
) -> Result<Value> {
    let (l, kw) = (&bc.layers, &bc.kw);
    let base = if kw.bottle_in { io.in_chs } else { io.out_chs };
    let mid = make_divisible(base as f64 * bc.br, 8, 0.9);
    let groups = num_groups(io.group_size, mid)?;
    let y = cna(
        &mut b.scope("conv1_1x1"),
        x,
        Conv::new(io.in_chs, mid, 1),
        true,
        l,
    )?;
    let (y, stride) = if kw.extra_conv {
        let c = Conv::new(mid, mid, kw.kernel_size)
            .stride(io.stride)
            .dilation(io.dilation.0)
            .groups(groups);
        (cna(&mut b.scope("conv2_kxk"), &y, c, true, l)?, 1)
    } else {
        (y, io.stride)
    };
    let y = self_attn(&mut b.scope("self_attn"), &y, mid, stride, feat, l)?;
    let y = if kw.post_attn_na.unwrap_or(true) {
        let s = &mut b.scope("post_attn");
        if let Some(e) = &l.evo {
            e.apply(s, &y, mid, true)?
        } else {
            let y = layers::batch_norm(s, &y, mid, 1e-5)?;
            act(s, &l.act, &y)?
        }
    } else {
        y
    };
    let y = cna(
        &mut b.scope("conv3_1x1"),
        &y,
        Conv::new(mid, io.out_chs, 1),
        false,
        l,
    )?;
    residual(b, x, &y, io, l, kw.linear_out)
}

/// `layers.self_attn(dim, stride=..., feat_size=...)`: `bottleneck`, `halo` or `lambda`.
fn self_attn(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    stride: usize,
    feat: Option<(usize, usize)>,
    l: &Layers,
) -> Result<Value> {
    use crate::graph::layers::{bottleneck_attn, halo_attn, lambda_layer};
    let Some((name, kwargs)) = &l.self_attn else {
        return Err(Error::invalid_model(
            "byobnet self_attn block without a self_attn_layer",
        ));
    };
    let ka = Args::new("self_attn_kwargs", None, kwargs);
    // The size the fixed-size layers were trained at comes from their weights when present.
    let from_weights = |b: &Builder, key: &str| {
        b.weight_shape(key)
            .filter(|s| s.len() >= 2)
            .map(|s| (s[0].div_ceil(2), s[1].div_ceil(2)))
    };
    match name.as_str() {
        "bottleneck" | "bottleneck_attn" => {
            let k = BottleneckKwargs::read(&ka)?;
            let fh = b
                .weight_shape("pos_embed.height_rel")
                .map(|s| s[0].div_ceil(2));
            let fw = b
                .weight_shape("pos_embed.width_rel")
                .map(|s| s[0].div_ceil(2));
            let size = match (fh, fw) {
                (Some(h), Some(w)) => (h, w),
                _ => fixed_feat(b, x, feat)?,
            };
            check_feat(b, x, size, "BottleneckAttn")?;
            let c = bottleneck_attn::BottleneckAttnCfg::new(
                dim,
                None,
                size,
                stride,
                k.num_heads,
                k.dim_head,
                k.qk_ratio,
                k.qkv_bias,
                k.scale_pos_embed,
            )?;
            bottleneck_attn::bottleneck_attn(b, x, &c)
        }
        "halo" | "halo_attn" => {
            let k = HaloKwargs::read(&ka)?;
            // timm asserts the map is made of whole blocks; say so before ONNX Runtime does.
            let (h, w) = b.nominal_hw();
            if let Some((Some(fh), Some(fw))) = b.spatial(x).map(|s| (s.eval(h), s.eval(w))) {
                if k.block_size > 0 && (fh % k.block_size != 0 || fw % k.block_size != 0) {
                    return Err(Error::invalid_argument(format!(
                        "HaloAttn takes maps made of {0}x{0} blocks, but a {h}x{w} input gives \
                         {fh}x{fw}",
                        k.block_size
                    )));
                }
            }
            let c = halo_attn::HaloAttnCfg::new(
                dim,
                None,
                stride,
                k.num_heads,
                k.dim_head,
                k.block_size,
                k.halo_size,
                k.qk_ratio,
                k.qkv_bias,
                k.avg_down,
                k.scale_pos_embed,
            )?;
            halo_attn::halo_attn(b, x, &c)
        }
        "lambda" | "lambda_layer" => {
            let k = LambdaKwargs::read(&ka)?;
            let size = if k.r.is_some() {
                None
            } else {
                let size = match from_weights(b, "pos_emb") {
                    Some(s) => s,
                    None => fixed_feat(b, x, feat)?,
                };
                check_feat(b, x, size, "LambdaLayer")?;
                Some(size)
            };
            let c = lambda_layer::LambdaCfg::new(
                dim,
                None,
                size,
                stride,
                k.num_heads,
                k.dim_head,
                k.r,
                k.qk_ratio,
                k.qkv_bias,
            )?;
            lambda_layer::lambda_layer(b, x, &c)
        }
        other => Err(Error::unsupported(format!(
            "self_attn_layer `{other}` is not implemented natively (bottleneck, halo, lambda are)"
        ))),
    }
}

/// `feat_size` of a fixed-size layer built without weights: timm's (from `img_size`), else
/// the map this input size gives.
fn fixed_feat(b: &Builder, x: &Value, feat: Option<(usize, usize)>) -> Result<(usize, usize)> {
    if let Some(f) = feat {
        return Ok(f);
    }
    let (h, w) = b.nominal_hw();
    match b.spatial(x).map(|s| (s.eval(h), s.eval(w))) {
        Some((Some(fh), Some(fw))) => Ok((fh, fw)),
        _ => Err(Error::invalid_model(
            "a fixed-size self-attention layer needs img_size",
        )),
    }
}

/// A fixed-size layer's map must be its size at the input size the graph is built for.
fn check_feat(b: &Builder, x: &Value, size: (usize, usize), what: &str) -> Result<()> {
    let (h, w) = b.nominal_hw();
    if let Some((Some(fh), Some(fw))) = b.spatial(x).map(|s| (s.eval(h), s.eval(w))) {
        if (fh, fw) != size {
            return Err(Error::invalid_argument(format!(
                "{what} is built for a {}x{} feature map, but a {h}x{w} input gives {fh}x{fw} \
                 (this model takes a fixed input size)",
                size.0, size.1
            )));
        }
    }
    Ok(())
}

/// A MobileViT block's transformer width, depth and MLP width: from the weights where they
/// hold them (`conv_1x1`, `transformer.<i>`, `mlp.fc1`), else from its arguments.
fn transformer_dims(
    b: &Builder,
    m: &MobileVitKwargs,
    br: f64,
    in_chs: usize,
) -> (usize, usize, usize) {
    let dim = b
        .weight_shape("conv_1x1.weight")
        .map(|s| s[0])
        .or(m.transformer_dim)
        .unwrap_or_else(|| make_divisible(br * in_chs as f64, 8, 0.9));
    let depth = if b.weights().is_some() {
        (0..)
            .take_while(|i| b.has_module(&format!("transformer.{i}")))
            .count()
    } else {
        m.transformer_depth
    };
    let hidden = b
        .weight_shape("transformer.0.mlp.fc1.weight")
        .map(|s| s[0])
        .unwrap_or((dim as f64 * m.mlp_ratio) as usize);
    (dim, depth, hidden)
}

/// The MobileViT kwargs of a `mobilevit` / `mobilevit2` block.
fn mvit_kwargs(bc: &BlockCfg) -> Result<&MobileVitKwargs> {
    bc.mvit
        .as_ref()
        .ok_or_else(|| Error::invalid_model("MobileViT block without its block_kwargs"))
}

/// The MobileViT blocks' patch size `p`: `[N, C, H, W]` (H, W multiples of `p`) as
/// SpaceToDepth's `[N, p²·C, H/p, W/p]`, channel `(pixel in patch, c)`, timm's unfold order.
fn patches(b: &mut Builder, x: &Value, p: usize) -> Value {
    b.op(
        "SpaceToDepth",
        &[x],
        vec![("blocksize", Attr::Int(p as i64))],
    )
}

/// The inverse of [`patches`].
fn unpatch(b: &mut Builder, x: &Value, p: usize) -> Value {
    b.op(
        "DepthToSpace",
        &[x],
        vec![
            ("blocksize", Attr::Int(p as i64)),
            ("mode", Attr::Str("DCR".into())),
        ],
    )
}

/// `F.interpolate(x, size, mode='bilinear')` to the size of `like` (or `H, W` rounded up to
/// multiples of `p` when `like` is None); the identity when the sizes already agree.
fn resize_bilinear(
    b: &mut Builder,
    x: &Value,
    like: Option<&Value>,
    p: usize,
    align_corners: bool,
) -> Value {
    let sizes = match like {
        Some(l) => b.op("Shape", &[l], vec![]),
        None => {
            let shape = b.op("Shape", &[x], vec![]);
            let lead = layers::slice(b, &shape, 0, 0, 2);
            let hw = layers::slice(b, &shape, 0, 2, 4);
            let pp = b.ints(&[p as i64, p as i64]);
            let pm1 = b.ints(&[p as i64 - 1, p as i64 - 1]);
            let up = b.op("Add", &[&hw, &pm1], vec![]);
            let n = b.op("Div", &[&up, &pp], vec![]);
            let hw = b.op("Mul", &[&n, &pp], vec![]);
            layers::concat(b, &[&lead, &hw], 0)
        }
    };
    let none = b.none();
    let mode = if align_corners {
        "align_corners"
    } else {
        "half_pixel"
    };
    b.op(
        "Resize",
        &[x, &none, &none, &sizes],
        vec![
            ("mode", Attr::Str("linear".into())),
            ("coordinate_transformation_mode", Attr::Str(mode.into())),
        ],
    )
}

/// `MobileVitBlock`: kxk → 1x1 → transformer over patches (timm's ViT `Block`s, then `norm`)
/// → 1x1 `conv_proj` → kxk `conv_fusion` of the input and the result.
fn mobilevit_block(b: &mut Builder, x: &Value, bc: &BlockCfg, io: &BlockIo) -> Result<Value> {
    let (l, m) = (&bc.layers, mvit_kwargs(bc)?);
    let groups = num_groups(io.group_size, io.in_chs)?;
    let (dim, depth, hidden) = transformer_dims(b, m, bc.br, io.in_chs);
    let c = Conv::new(io.in_chs, io.in_chs, m.kernel_size)
        .stride(io.stride)
        .groups(groups)
        .dilation(io.dilation.0);
    let y = cna(&mut b.scope("conv_kxk"), x, c, true, l)?;
    let y = conv2d(&mut b.scope("conv_1x1"), &y, Conv::new(io.in_chs, dim, 1))?;
    let spatial = b.spatial(&y).cloned();
    let p = m.patch_size;
    // A side that is not a multiple of the patch is resized up and back, as timm does.
    let r = resize_bilinear(b, &y, None, p, false);
    let pt = patches(b, &r, p); // [B, P·C, nh, nw]
    let pp = (p * p) as i64;
    let t = layers::reshape(b, &pt, &[0, pp, dim as i64, -1]);
    let t4 = layers::transpose(b, &t, &[0, 1, 3, 2]); // [B, P, N, C]
    let t4_shape = b.op("Shape", &[&t4], vec![]);
    let t = layers::flatten(b, &t4, 2);
    let mut t = layers::reshape(b, &t, &[0, -1, dim as i64]); // [B·P, N, C]
    let mut tr = b.scope("transformer");
    for i in 0..depth {
        let s = &mut tr.scope(i);
        let n = layers::layer_norm(&mut s.scope("norm1"), &t, dim, 1e-5)?;
        let mut ac = AttnCfg::new(dim, m.num_heads);
        ac.qkv_bias = true;
        let a = attention(&mut s.scope("attn"), &n, &ac, &Hooks::default())?;
        t = layers::add(s, &t, &a);
        let n = layers::layer_norm(&mut s.scope("norm2"), &t, dim, 1e-5)?;
        let f = mlp(&mut s.scope("mlp"), &n, &MlpCfg::new(dim, hidden, &l.act))?;
        t = layers::add(s, &t, &f);
    }
    drop(tr);
    let t = layers::layer_norm(&mut b.scope("norm"), &t, dim, 1e-5)?;
    let t = b.op("Reshape", &[&t, &t4_shape], vec![]);
    let t = layers::transpose(b, &t, &[0, 1, 3, 2]);
    let pt_shape = b.op("Shape", &[&pt], vec![]);
    let t = b.op("Reshape", &[&t, &pt_shape], vec![]);
    let y2 = unpatch(b, &t, p);
    let y2 = resize_bilinear(b, &y2, Some(&y), p, false);
    if let Some(s) = spatial {
        b.assign_spatial(&y2, s);
    }
    let c = Conv::new(dim, io.out_chs, 1);
    let y2 = cna(&mut b.scope("conv_proj"), &y2, c, true, l)?;
    if m.no_fusion {
        return Ok(y2);
    }
    let cat = layers::concat(b, &[x, &y2], 1);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&cat, s);
    }
    let c = Conv::new(io.in_chs + io.out_chs, io.out_chs, m.kernel_size);
    cna(&mut b.scope("conv_fusion"), &cat, c, true, l)
}

/// `MobileVitV2Block`: (input resized to patch multiples) depthwise kxk → 1x1 →
/// `LinearTransformerBlock`s on `[B, C, P, N]` with GroupNorm1 → `norm` → 1x1 `conv_proj`.
fn mobilevit_v2_block(b: &mut Builder, x: &Value, bc: &BlockCfg, io: &BlockIo) -> Result<Value> {
    let (l, m) = (&bc.layers, mvit_kwargs(bc)?);
    let groups = num_groups(io.group_size, io.in_chs)?;
    let (dim, depth, hidden) = transformer_dims(b, m, bc.br, io.in_chs);
    let p = m.patch_size;
    let spatial = b.spatial(x).cloned();
    let xr = resize_bilinear(b, x, None, p, true);
    if let Some(s) = &spatial {
        let s = s
            .then(Step::Same { stride: p })
            .then(Step::Up { factor: p });
        b.assign_spatial(&xr, s);
    }
    let c = Conv::new(io.in_chs, io.in_chs, m.kernel_size)
        .groups(groups)
        .dilation(io.dilation.0);
    let y = cna(&mut b.scope("conv_kxk"), &xr, c, true, l)?;
    let y = conv2d(&mut b.scope("conv_1x1"), &y, Conv::new(io.in_chs, dim, 1))?;
    let spatial = b.spatial(&y).cloned();
    let pt = patches(b, &y, p);
    let pp = (p * p) as i64;
    let t = layers::reshape(b, &pt, &[0, pp, dim as i64, -1]);
    let mut t = layers::transpose(b, &t, &[0, 2, 1, 3]); // [B, C, P, N]
    let mut tr = b.scope("transformer");
    for i in 0..depth {
        let s = &mut tr.scope(i);
        let n = layers::group_norm(&mut s.scope("norm1"), &t, 1, dim, 1e-5)?;
        let a = linear_self_attention(&mut s.scope("attn"), &n, dim)?;
        t = layers::add(s, &t, &a);
        let n = layers::group_norm(&mut s.scope("norm2"), &t, 1, dim, 1e-5)?;
        let f = conv_mlp(&mut s.scope("mlp"), &n, &MlpCfg::new(dim, hidden, &l.act))?;
        t = layers::add(s, &t, &f);
    }
    drop(tr);
    let t = layers::group_norm(&mut b.scope("norm"), &t, 1, dim, 1e-5)?;
    let t = layers::transpose(b, &t, &[0, 2, 1, 3]);
    let pt_shape = b.op("Shape", &[&pt], vec![]);
    let t = b.op("Reshape", &[&t, &pt_shape], vec![]);
    let y = unpatch(b, &t, p);
    if let Some(s) = spatial {
        b.assign_spatial(&y, s);
    }
    let c = Conv::new(dim, io.out_chs, 1);
    cna(&mut b.scope("conv_proj"), &y, c, false, l)
}

/// MobileViTv2's `LinearSelfAttention` on `[B, C, P, N]`: one context score per patch pixel
/// (softmax over the patches), a context vector, `relu(value) * context`, `out_proj`.
fn linear_self_attention(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let pw = |i, o| Conv::new(i, o, 1).bias(true);
    let qkv = conv2d(&mut b.scope("qkv_proj"), x, pw(dim, 1 + 2 * dim))?;
    let parts = layers::split(b, &qkv, 1, &[1, dim, dim]);
    let scores = b.op("Softmax", &[&parts[0]], vec![("axis", Attr::Int(-1))]);
    let kv = layers::mul(b, &parts[1], &scores);
    let ax = b.ints(&[-1]);
    let ctx = b.op("ReduceSum", &[&kv, &ax], vec![("keepdims", Attr::Int(1))]);
    let v = b.op("Relu", &[&parts[2]], vec![]);
    let y = layers::mul(b, &v, &ctx);
    conv2d(&mut b.scope("out_proj"), &y, pw(dim, dim))
}

/// The end of the residual blocks: `+ shortcut` (none when `downsample=''` and the shape
/// changes), then the activation unless `linear_out`.
fn residual(
    b: &mut Builder,
    x: &Value,
    y: &Value,
    io: &BlockIo,
    l: &Layers,
    linear_out: bool,
) -> Result<Value> {
    let short = shortcut(&mut b.scope("shortcut"), x, io, l)?;
    let y = match short {
        Some(s) => layers::add(b, y, &s),
        None => y.clone(),
    };
    if linear_out {
        Ok(y)
    } else {
        act(b, &l.act, &y)
    }
}

/// `create_shortcut`: identity, `DownsampleAvg` (`avg`), a 1x1 `ConvNormAct` (`conv1x1`), none.
fn shortcut(b: &mut Builder, x: &Value, io: &BlockIo, l: &Layers) -> Result<Option<Value>> {
    let (d0, d1) = io.dilation;
    if io.in_chs == io.out_chs && io.stride == 1 && d0 == d1 {
        return Ok(Some(x.clone()));
    }
    let conv = Conv::new(io.in_chs, io.out_chs, 1);
    Ok(match l.downsample {
        Downsample::None => None,
        Downsample::Conv => Some(cna(b, x, conv.stride(io.stride).dilation(d0), false, l)?),
        Downsample::Avg => {
            let avg_stride = if d0 == 1 { io.stride } else { 1 };
            let pooled = if io.stride == 1 && d0 == 1 {
                x.clone()
            } else if avg_stride == 1 {
                avg_pool2d_same_s1(b, x, 2, io.in_chs)?
            } else {
                let p = Pool2d::new(2, avg_stride, 0)
                    .ceil(true)
                    .count_include_pad(false);
                p.avg(b, x, io.in_chs)?
            };
            // timm builds DownsampleAvg without the block's `layers` (a default `LayerFn`), so
            // its norm is a BatchNorm whatever `norm_layer` says.
            Some(conv_norm_act(
                &mut b.scope("conv"),
                &pooled,
                conv,
                &BN,
                None,
            )?)
        }
    })
}

/// `RepVggBlock`: kxk + 1x1 + identity BatchNorm branches (or timm's fused `reparam_conv`),
/// folded into one kxk conv at load; attention, activation.
fn rep_vgg_block(b: &mut Builder, x: &Value, io: &BlockIo, k: usize, l: &Layers) -> Result<Value> {
    bn_only(l, "rep")?;
    let groups = num_groups(io.group_size, io.in_chs)?;
    let conv = Conv::new(io.in_chs, io.out_chs, k)
        .stride(io.stride)
        .dilation(io.dilation.0)
        .groups(groups)
        .bias(true);
    let y = if b.has_weight("reparam_conv.weight") {
        conv2d(&mut b.scope("reparam_conv"), x, conv)?
    } else {
        let c1 = Conv::new(io.in_chs, io.out_chs, 1)
            .stride(io.stride)
            .groups(groups);
        let kxk = conv_bn_branch(&mut b.scope("conv_kxk"), conv)?;
        let mut branches = vec![kxk, conv_bn_branch(&mut b.scope("conv_1x1"), c1)?];
        let (d0, d1) = io.dilation;
        if io.in_chs == io.out_chs && io.stride == 1 && d0 == d1 {
            let bn = BnStats::read(&mut b.scope("identity"), io.out_chs, 1e-5)?;
            branches.push(identity_branch(&bn, io.in_chs / groups));
        }
        fused_conv(b, x, conv, &branches)?
    };
    let y = attn_at(&mut b.scope("attn"), &y, io.out_chs, l, true)?;
    act(b, &l.act, &y)
}

/// `MobileOneBlock`: `num_conv_branches` kxk + a 1x1 scale branch (k > 1) + identity BatchNorm
/// (or timm's fused `reparam_conv`), folded into one conv at load; attention, activation.
fn mobile_one_block(
    b: &mut Builder,
    x: &Value,
    io: &BlockIo,
    k: usize,
    num_conv_branches: usize,
    l: &Layers,
) -> Result<Value> {
    bn_only(l, "mobileone")?;
    let groups = num_groups(io.group_size, io.in_chs)?;
    let conv = Conv::new(io.in_chs, io.out_chs, k)
        .stride(io.stride)
        .groups(groups)
        .bias(true);
    let y = if b.has_weight("reparam_conv.weight") {
        conv2d(
            &mut b.scope("reparam_conv"),
            x,
            conv.dilation(io.dilation.0),
        )?
    } else {
        let mut branches = Vec::new();
        for i in 0..num_conv_branches {
            branches.push(conv_bn_branch(&mut b.scope("conv_kxk").scope(i), conv)?);
        }
        if k > 1 {
            let c = Conv::new(io.in_chs, io.out_chs, 1)
                .stride(io.stride)
                .groups(groups);
            branches.push(conv_bn_branch(&mut b.scope("conv_scale"), c)?);
        }
        let (d0, d1) = io.dilation;
        if io.in_chs == io.out_chs && io.stride == 1 && d0 == d1 {
            let bn = BnStats::read(&mut b.scope("identity"), io.out_chs, 1e-5)?;
            branches.push(identity_branch(&bn, io.in_chs / groups));
        }
        fused_conv(b, x, conv, &branches)?
    };
    let y = attn_at(&mut b.scope("attn"), &y, io.out_chs, l, true)?;
    act(b, &l.act, &y)
}

/// One re-parameterisable `ConvNormAct` branch (`conv`, `bn`) with its BatchNorm folded.
fn conv_bn_branch(b: &mut Builder, c: Conv) -> Result<Branch> {
    let w = b.scope("conv").read("weight", &c.weight_shape(), c.init)?;
    let bn = BnStats::read(&mut b.scope("bn"), c.out_ch, 1e-5)?;
    let (weight, bias) = fold_bn(w, None, &bn);
    Ok(Branch {
        weight,
        bias,
        k: c.kernel.0,
    })
}

/// The branches summed into one conv (timm's `reparameterize`).
fn fused_conv(b: &mut Builder, x: &Value, c: Conv, branches: &[Branch]) -> Result<Value> {
    let shape = c.weight_shape();
    let (w, bias) = sum_branches(branches, c.out_ch, shape[1], c.kernel.0);
    let wv = b.tensor("reparam_conv.weight", w, &shape)?;
    let bv = b.tensor("reparam_conv.bias", bias, &[c.out_ch])?;
    c.emit(b, x, &wv, Some(&bv))
}

// ---------------------------------------------------------------------------------------------
// layers

/// `ConvNormAct` of `LayerFn` (BatchNorm folded): with `aa_layer` a strided conv runs at stride
/// 1 and a 2x2 average pool (module `aa`) strides after the norm and activation.
fn cna(b: &mut Builder, x: &Value, c: Conv, apply_act: bool, l: &Layers) -> Result<Value> {
    let a = apply_act.then_some(l.act.as_str());
    let aa = l.aa && c.stride > 1;
    let conv = if aa { c.stride(1) } else { c };
    let y = match &l.evo {
        None => conv_norm_act(b, x, conv, &BN, a)?,
        Some(e) => {
            let y = conv2d(&mut b.scope("conv"), x, conv)?;
            e.apply(&mut b.scope("bn"), &y, c.out_ch, apply_act)?
        }
    };
    if aa {
        return Pool2d::new(c.stride, c.stride, 0).avg(b, &y, c.out_ch);
    }
    Ok(y)
}

/// The re-parameterisable blocks fold BatchNorm branches; EvoNorm has none to fold.
fn bn_only(l: &Layers, block: &str) -> Result<()> {
    match l.evo {
        Some(_) => Err(Error::unsupported(format!(
            "the {block} block's re-parameterised BatchNorm branches with an EvoNorm norm_layer"
        ))),
        None => Ok(()),
    }
}

/// The block's attention layer in this scope, when `here` (the block's `attn` or `attn_last`).
fn attn_at(b: &mut Builder, x: &Value, ch: usize, l: &Layers, here: bool) -> Result<Value> {
    match (&l.attn, here) {
        (
            Some(Attn::Se {
                rd_ratio,
                rd_divisor,
            }),
            true,
        ) => {
            let rd = make_divisible(ch as f64 * rd_ratio, *rd_divisor, 0.0);
            SqueezeExcite::se_module(ch, rd).apply(b, x)
        }
        (Some(Attn::Eca { gamma, beta }), true) => {
            eca(b, x, eca_kernel(ch, *gamma, *beta), false, "sigmoid")
        }
        (Some(Attn::Gc(g)), true) => {
            let rd = make_divisible(ch as f64 * g.rd_ratio, g.rd_divisor, 0.0);
            let c = GlobalContextCfg {
                channels: ch,
                rd_channels: rd,
                use_attn: g.use_attn,
                fuse_add: g.fuse_add,
                fuse_scale: g.fuse_scale,
                act: "relu",
            };
            global_context(b, x, &c)
        }
        (Some(Attn::Bat(k)), true) => {
            let c = BatCfg::new(
                ch,
                k.block_size,
                k.groups,
                k.rd_ratio,
                k.rd_channels,
                k.rd_divisor,
            )?;
            bat_non_local_attn(b, x, &c)
        }
        _ => Ok(x.clone()),
    }
}

/// `num_groups`: 1 for no group size, else `channels / group_size` (1: depthwise).
fn num_groups(gs: Option<usize>, channels: usize) -> Result<usize> {
    match gs.filter(|&g| g > 0) {
        None => Ok(1),
        Some(g) if channels.is_multiple_of(g) => Ok(channels / g),
        Some(g) => Err(Error::invalid_model(format!(
            "byobnet block: {channels} channels are not a multiple of the group size {g}"
        ))),
    }
}

/// The groups of a block's grouped kxk conv (`conv` names its ConvNormAct): the checkpoint's
/// weights decide where they hold the conv, as timm could load them only into that structure;
/// otherwise `num_groups` of the configured group size.
fn kxk_groups(b: &Builder, conv: &str, gs: Option<usize>, channels: usize) -> Result<usize> {
    if let Some(s) = b.weight_shape(&format!("{conv}.conv.weight")) {
        if s.len() == 4 && s[0] == channels && s[1] > 0 && channels.is_multiple_of(s[1]) {
            return Ok(channels / s[1]);
        }
    }
    num_groups(gs, channels)
}

/// `create_shortcut`'s type.
#[derive(Debug, Clone, Copy)]
enum Downsample {
    Conv,
    Avg,
    None,
}

// ---------------------------------------------------------------------------------------------
// configuration

/// `get_attn(name)` with its kwargs; attention types not built are refused.
fn resolve_attn(
    a: &Args,
    name: Option<&str>,
    kwargs: Option<&Map<String, Json>>,
) -> Result<Option<Attn>> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let empty = Map::new();
    let ka = Args::new(a.arch(), None, kwargs.unwrap_or(&empty));
    Ok(Some(match name {
        "se" => {
            let s = SeArgs::read(&ka)?;
            Attn::Se {
                rd_ratio: s.rd_ratio,
                rd_divisor: s.rd_divisor,
            }
        }
        "eca" => {
            let e = EcaArgs::read(&ka)?;
            Attn::Eca {
                gamma: e.gamma,
                beta: e.beta,
            }
        }
        // `gca` is `partial(GlobalContext, fuse_add=True, fuse_scale=False)`.
        "gc" | "gca" => {
            let mut g = GcArgs::read(&ka)?;
            if name == "gca" {
                g.fuse_add = g.fuse_add || !ka.explicit("fuse_add");
                g.fuse_scale = g.fuse_scale && ka.explicit("fuse_scale");
            }
            Attn::Gc(g)
        }
        "bat" => Attn::Bat(BatArgs::read(&ka)?),
        other => {
            return Err(Error::unsupported(format!(
            "`{}`: attention layer `{other}` is not implemented natively (se, eca, gc, gca, bat are)",
            a.arch()
        )))
        }
    }))
}

/// The stages' blocks with `update_block_kwargs` applied: block-level attention and
/// `block_kwargs` replace the model's.
fn resolve_blocks(a: &Args, r: &ByobArgs, model: &Layers) -> Result<Vec<Vec<BlockCfg>>> {
    let bad = |why: &str| a.unsupported("blocks", why);
    let stages = r.blocks.as_array().ok_or_else(|| bad("a list of stages"))?;
    if stages.is_empty() {
        return Err(Error::invalid_model("byobnet `blocks` has no stage"));
    }
    let mut out = Vec::new();
    for stage in stages {
        let list: Vec<&Json> = match stage {
            Json::Array(v) => v.iter().collect(),
            v => vec![v],
        };
        let mut blocks = Vec::new();
        for bj in list {
            let o = bj.as_object().ok_or_else(|| bad("ByoBlockCfg entries"))?;
            let ba = Args::new(a.arch(), None, o);
            let kind: String = ba.get("type", String::new())?;
            let blk = BlockFields::read(&ba)?;
            let mut layers = model.clone();
            if blk.attn_layer.is_some() || !blk.attn_kwargs.is_null() {
                layers.attn = if blk.attn_layer.as_deref() == Some("") {
                    None
                } else {
                    let kw = blk.attn_kwargs.as_object().or(r.attn_kwargs.as_object());
                    let name = blk.attn_layer.as_deref().or(r.attn_layer.as_deref());
                    resolve_attn(a, name, kw)?
                };
            }
            // `update_block_kwargs`: block-level kwargs replace the model's, not merge.
            if blk.self_attn_layer.is_some() || !blk.self_attn_kwargs.is_null() {
                layers.self_attn = if blk.self_attn_layer.as_deref() == Some("") {
                    None
                } else {
                    let kw = if blk.self_attn_kwargs.is_null() {
                        &r.self_attn_kwargs
                    } else {
                        &blk.self_attn_kwargs
                    };
                    let name = blk
                        .self_attn_layer
                        .as_deref()
                        .or(r.self_attn_layer.as_deref());
                    resolve_self_attn(name, kw)
                };
            }
            let empty = Map::new();
            let kw = blk
                .block_kwargs
                .as_object()
                .or(r.block_kwargs.as_object())
                .unwrap_or(&empty);
            let kw_args = Args::new(a.arch(), None, kw);
            let (kw, mvit) = if kind.starts_with("mobilevit") {
                let m = MobileVitKwargs::read(&kw_args)?;
                let base = BlockKwargs::read(&Args::new(a.arch(), None, &empty))?;
                (
                    BlockKwargs {
                        kernel_size: m.kernel_size,
                        ..base
                    },
                    Some(m),
                )
            } else {
                (BlockKwargs::read(&kw_args)?, None)
            };
            if kw.post_attn_na.is_some() && kind != "self_attn" {
                return Err(bad("post_attn_na is a self_attn block argument"));
            }
            if kw.inference_mode && !matches!(kind.as_str(), "rep" | "one") {
                return Err(bad("inference_mode is a RepVGG / MobileOne argument"));
            }
            let gs = match &blk.gs {
                Json::Null => GroupSize::Fixed(None),
                Json::Object(o) => match o.get("groups").and_then(Json::as_u64) {
                    Some(g) if g > 0 && o.len() == 1 => GroupSize::EverySecond(g as usize),
                    _ => return Err(bad("gs as {\"groups\": n} (RepVGG's rule) or a number")),
                },
                v => GroupSize::Fixed(Some(
                    v.as_u64()
                        .filter(|&g| g <= args::MAX_INT)
                        .ok_or_else(|| bad("gs as a number"))? as usize,
                )),
            };
            let cfg = BlockCfg {
                kind,
                c: blk.c,
                s: blk.s,
                gs,
                br: blk.br,
                layers,
                kw,
                mvit,
            };
            blocks.extend(std::iter::repeat_n(cfg, blk.d));
        }
        if blocks.is_empty() {
            return Err(Error::invalid_model("byobnet stage without blocks"));
        }
        out.push(blocks);
    }
    Ok(out)
}

timm_args! {
    /// `ByoBlockCfg`'s fields.
    struct BlockFields {
        d: usize = 1,
        c: f64 = 0.0,
        s: usize = 2,
        gs: Json = Json::Null,
        br: f64 = 1.0,
        attn_layer: Option<String> = None,
        attn_kwargs: Json = Json::Null,
        self_attn_layer: Option<String> = None,
        self_attn_kwargs: Json = Json::Null,
        block_kwargs: Json = Json::Null,
    }
}

/// `get_attn(name)` of a self-attention layer with its kwargs (checked when a block uses it).
fn resolve_self_attn(name: Option<&str>, kwargs: &Json) -> Option<(String, Map<String, Json>)> {
    let name = name.filter(|n| !n.is_empty())?;
    Some((
        name.to_string(),
        kwargs.as_object().cloned().unwrap_or_default(),
    ))
}

/// A size in `img_size`.
fn json_size(v: &Json) -> Option<usize> {
    v.as_u64()
        .filter(|&n| n > 0 && n <= args::MAX_INT)
        .map(|n| n as usize)
}
