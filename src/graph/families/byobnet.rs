//! timm's `byobnet.py` (Bring-Your-Own-Blocks): GENet (`gernet_*`), RepVGG (`repvgg_*`),
//! MobileOne (`mobileone_*`), `resnet51q` / `resnet61q`, the `*resnext26ts` / `*resnet33ts` /
//! `gcresnet*` ResNets, RegNetZ (`regnetz_b16` .. `regnetz_e8`), the CLIP ResNets with the
//! classifier (`_gap`) or MLP head and `test_byobnet`.
//!
//! A model is a `ByoModelCfg`: a stem and stages of `ByoBlockCfg`s (the generated table writes
//! one block per entry); config.json's `model_args` overlay its fields as `replace(cfg, **kwargs)`
//! does. RepVGG and MobileOne weights are stored unfused (timm's training-time branches): every
//! branch is folded into one conv at load, as `reparameterize_model` does. Refused with the
//! reason: EvoNorm (`_evos`), the attention-pool heads of the CLIP models, the `bat` attention and
//! byoanet's self-attention blocks.

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{self, Args};
use crate::graph::layers::heads::{fc, norm_mlp_head};
use crate::graph::layers::pool::{avg_pool2d_same_s1, global_pool, Pool2d, PoolKind};
use crate::graph::layers::se::{eca, eca_kernel, global_context, GlobalContextCfg, SqueezeExcite};
use crate::graph::layers::{
    self, act, conv2d, conv_norm_act, make_divisible, py_round, Conv, Norm,
};
use crate::graph::tables::Table;
use crate::graph::transforms::{fold_bn, identity_branch, sum_branches, BnStats, Branch};
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/byobnet.json"));

pub const FAMILY: Family = Family {
    name: "byobnet",
    examples: "gernet_*, repvgg_*, mobileone_s0..s4, resnet51q, resnet61q, *resnext26ts, *resnet33ts, regnetz_b16..e8, resnet*_clip_gap, resnet50_mlp, test_byobnet",
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
        /// Read so config.json may carry it; self-attention blocks are refused.
        #[allow(dead_code)]
        self_attn_kwargs: Json = Json::Null,
        block_kwargs: Json = Json::Null,
        output_stride: usize = 32,
        /// Read so config.json may carry it; no effect on an inference graph.
        #[allow(dead_code)]
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
}

/// `LayerFn`: the activation, anti-aliasing and the attention layer a block gets.
#[derive(Debug, Clone)]
struct Layers {
    act: String,
    /// `cfg.downsample`: every block's shortcut type.
    downsample: Downsample,
    aa: bool,
    attn: Option<Attn>,
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
    let norm_ok = r
        .norm_layer
        .as_str()
        .is_some_and(|n| matches!(Norm::from_timm(n, None), Ok(Norm::Batch { .. })));
    if !norm_ok {
        return Err(a.unsupported(
            "norm_layer",
            "the native byobnet graph supports BatchNorm only (EvoNorm is not implemented)",
        ));
    }
    if !matches!(r.head_type.as_str(), "" | "classifier" | "mlp") {
        return Err(a.unsupported(
            "head_type",
            "the attention-pool heads of the CLIP ResNets are not implemented (the `_gap` variants are)",
        ));
    }
    if r.self_attn_layer.is_some() {
        return Err(a.unsupported(
            "self_attn_layer",
            "self-attention blocks are byoanet's (not part of this family)",
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
            x = block(&mut s.scope(j), &x, bc, &io)?;
            first_dilation = dilation;
            prev_chs = io.out_chs;
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

/// `create_block`: the block types of `_block_registry`.
fn block(b: &mut Builder, x: &Value, bc: &BlockCfg, io: &BlockIo) -> Result<Value> {
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
        t => Err(Error::unsupported(format!(
            "byobnet block type `{t}` is not implemented natively (self_attn needs byoanet's attention layers)"
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
    let groups = num_groups(io.group_size, mid)?;
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
            Some(cna(&mut b.scope("conv"), &pooled, conv, false, l)?)
        }
    })
}

/// `RepVggBlock`: kxk + 1x1 + identity BatchNorm branches (or timm's fused `reparam_conv`),
/// folded into one kxk conv at load; attention, activation.
fn rep_vgg_block(b: &mut Builder, x: &Value, io: &BlockIo, k: usize, l: &Layers) -> Result<Value> {
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
    if l.aa && c.stride > 1 {
        let s = c.stride;
        let y = conv_norm_act(b, x, c.stride(1), &BN, a)?;
        return Pool2d::new(s, s, 0).avg(b, &y, c.out_ch);
    }
    conv_norm_act(b, x, c, &BN, a)
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
            };
            global_context(b, x, &c)
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

/// `create_shortcut`'s type.
#[derive(Debug, Clone, Copy)]
enum Downsample {
    Conv,
    Avg,
    None,
}

// ---------------------------------------------------------------------------------------------
// configuration

/// `get_attn(name)` with its kwargs; `bat` and other attention types are refused.
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
        other => {
            return Err(Error::unsupported(format!(
            "`{}`: attention layer `{other}` is not implemented natively (se, eca, gc, gca are)",
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
            if blk
                .self_attn_layer
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            {
                return Err(bad(
                    "self-attention blocks are byoanet's (not part of this family)",
                ));
            }
            let empty = Map::new();
            let kw = blk
                .block_kwargs
                .as_object()
                .or(r.block_kwargs.as_object())
                .unwrap_or(&empty);
            let kw = BlockKwargs::read(&Args::new(a.arch(), None, kw))?;
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
        /// Read so config.json may carry it; self-attention blocks are refused.
        #[allow(dead_code)]
        self_attn_kwargs: Json = Json::Null,
        block_kwargs: Json = Json::Null,
    }
}
