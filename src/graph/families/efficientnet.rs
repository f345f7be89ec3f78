//! EfficientNet(-Lite/-EdgeTPU/-V2), MixNet, MNASNet, FBNet, SPNASNet, TinyNet, LCNet,
//! MobileNet-V1/V2/V3/V4 and HardCoRe-NAS as timm 1.0.31 builds them (`efficientnet.py`,
//! `mobilenetv3.py`, `hardcorenas.py`, `_efficientnet_builder.py`, `_efficientnet_blocks.py`).
//!
//! timm's entrypoints call a `_gen_*` helper that decodes block-definition strings
//! (`ir_r2_k3_s2_e6_c24_se0.25`) and scales them by the channel / depth multipliers. The generated
//! table holds, per architecture, the helper's name and arguments, the strings and the model-class
//! arguments; this file decodes and scales them as `decode_arch_def` and `EfficientNetBuilder` do,
//! so a saved `model_args` that changes a multiplier gets timm's exact structure.

use super::super::args::{Args, PerStage};
use super::super::layers::evo_norm::EvoNorm;
use super::super::layers::pool::{global_pool, PoolKind};
use super::super::layers::se::SqueezeExcite;
use super::super::layers::{
    self, act, conv2d, make_divisible, mlp::linear_2d, norm::Norm, py_round, Conv, Pad,
};
use super::super::tables::Table;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

pub const FAMILY: Family = Family {
    name: "efficientnet",
    examples: EXAMPLES,
    matches,
    build,
    default_config,
    any_size: true,
};

pub const EXAMPLES: &str = "efficientnet_b0..b8/l2 (also _gn), efficientnet_lite0..4, efficientnet_es/em/el, \
efficientnetv2_*, their tf_ ports, mixnet_*, mnasnet_*, semnasnet_*, spnasnet_100, fbnetc_100, fbnetv3_*, tinynet_*, \
lcnet_*, mobilenetv1_*, mobilenetv2_*, mobilenetv3_*, mobilenetv4_conv_*/hybrid_*, hardcorenas_a..f, \
test_efficientnet(_gn/_ln)";

static TABLE: Table = Table::new(include_str!("../tables/efficientnet.json"));

/// Every architecture of timm's `efficientnet` and `mobilenetv3` modules; those whose generator
/// is not built here get a message from this family rather than "no builder".
pub fn matches(arch: &str) -> bool {
    TABLE.contains(arch)
}

pub fn default_config(arch: &str) -> Option<serde_json::Value> {
    let e = TABLE.get(arch)?;
    Gen::from_name(e.args.get("gen")?.as_str()?)?;
    Some(e.config.clone())
}

/// The `_gen_*` helpers whose networks this file builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gen {
    EfficientNet,
    Lite,
    Edge,
    MobileNetV1,
    MobileNetV2,
    TestEfficientNet,
    MnasnetA1,
    MnasnetB1,
    MnasnetSmall,
    Fbnetc,
    Spnasnet,
    V2Base,
    V2S,
    V2M,
    V2L,
    V2Xl,
    MixnetS,
    MixnetM,
    Tinynet,
    MobileNetV3,
    MobileNetV3Rw,
    Fbnetv3,
    Lcnet,
    MobileNetV4,
    /// HardCoRe-NAS (`hardcorenas.py`): the MobileNetV3 class over its own block strings.
    Hardcorenas,
}

impl Gen {
    fn from_name(name: &str) -> Option<Gen> {
        Some(match name {
            "efficientnet" => Gen::EfficientNet,
            "efficientnet_lite" => Gen::Lite,
            "efficientnet_edge" => Gen::Edge,
            "mobilenet_v1" => Gen::MobileNetV1,
            "mobilenet_v2" => Gen::MobileNetV2,
            "test_efficientnet" => Gen::TestEfficientNet,
            "mnasnet_a1" => Gen::MnasnetA1,
            "mnasnet_b1" => Gen::MnasnetB1,
            "mnasnet_small" => Gen::MnasnetSmall,
            "fbnetc" => Gen::Fbnetc,
            "spnasnet" => Gen::Spnasnet,
            "efficientnetv2_base" => Gen::V2Base,
            "efficientnetv2_s" => Gen::V2S,
            "efficientnetv2_m" => Gen::V2M,
            "efficientnetv2_l" => Gen::V2L,
            "efficientnetv2_xl" => Gen::V2Xl,
            "mixnet_s" => Gen::MixnetS,
            "mixnet_m" => Gen::MixnetM,
            "tinynet" => Gen::Tinynet,
            "mobilenet_v3" => Gen::MobileNetV3,
            "mobilenet_v3_rw" => Gen::MobileNetV3Rw,
            "fbnetv3" => Gen::Fbnetv3,
            "lcnet" => Gen::Lcnet,
            "mobilenet_v4" => Gen::MobileNetV4,
            "hardcorenas" => Gen::Hardcorenas,
            _ => return None,
        })
    }

    /// The model class: `MobileNetV3` (pool, then conv_head) or `EfficientNet`.
    fn mobilenetv3(self) -> bool {
        matches!(
            self,
            Gen::MobileNetV3
                | Gen::MobileNetV3Rw
                | Gen::Fbnetv3
                | Gen::Lcnet
                | Gen::MobileNetV4
                | Gen::Hardcorenas
        )
    }

    /// The `round_limit` the generator binds into `round_chs_fn`.
    fn round_limit(self) -> f64 {
        match self {
            Gen::TestEfficientNet | Gen::V2Base => 0.0,
            Gen::Fbnetv3 => 0.95,
            _ => 0.9,
        }
    }
}

timm_args! {
    /// The generator's arguments and the model class's, as the table and config.json give them.
    pub struct EffNetArgs {
        gen: String = String::new(),
        arch_def: Vec<Vec<String>> = Vec::new(),
        channel_multiplier: f64 = 1.0,
        /// TinyNet's name for the channel multiplier.
        model_width: Option<f64> = None,
        depth_multiplier: PerStage<f64> = PerStage::All(1.0),
        depth_trunc: String = "ceil".into(),
        fix_first_last: bool = false,
        channel_divisor: usize = 8,
        group_size: Option<usize> = None,
        fix_stem_head: bool = false,
        /// MobileNet-V1: a conv_head (`num_features` > 0) or none.
        head_conv: bool = false,
        /// EfficientNetV2-S: the generator already applied it to `arch_def` / `num_features`.
        rw: bool = false,
        stem_size: Option<usize> = None,
        stem_kernel_size: usize = 3,
        fix_stem: bool = false,
        num_features: Option<usize> = None,
        head_bias: bool = true,
        head_norm: bool = false,
        act_layer: String = "relu".into(),
        bn_eps: f32 = 1e-5,
        bn_momentum: Option<f64> = None,
        pad_type: String = String::new(),
        se_gate: String = "sigmoid".into(),
        se_force_act: Option<String> = None,
        se_round_chs: bool = false,
        se_from_exp: Option<bool> = None,
        output_stride: usize = 32,
        norm_layer: Option<serde_json::Value> = None,
        layer_scale_init_value: Option<f64> = None,
    }
}

// ------------------------------------------------------------------------------------------------
// `decode_arch_def`: block strings → block arguments, depth-scaled per stage.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `ConvBnAct`
    Cn,
    /// `DepthwiseSeparableConv`
    Ds,
    /// `InvertedResidual`
    Ir,
    /// `EdgeResidual` (fused MBConv)
    Er,
    /// `UniversalInvertedResidual` (MobileNetV4)
    Uir,
    /// `MobileAttention` with `MultiQueryAttention2d` (MobileNetV4 hybrids)
    Mqa,
}

/// A kernel size: one, or MixNet's list (`MixedConv2d` over split channels). 0: no conv (uir).
type Ks = Vec<usize>;

/// One decoded block string (`_decode_block_str`).
#[derive(Debug, Clone)]
struct BlockDef {
    kind: Kind,
    repeat: usize,
    /// ds/ir: depthwise; er: conv_exp; cn: conv; uir: dw_mid; mqa: the kv down conv.
    k: Ks,
    /// ir: conv_pw; uir: dw_start.
    exp_k: Ks,
    /// ds/ir/er: the pointwise conv; uir: dw_end.
    pw_k: Ks,
    stride: usize,
    exp: f64,
    out: usize,
    se: f64,
    act: Option<&'static str>,
    noskip: bool,
    skip: bool,
    pw_act: bool,
    force_in: usize,
    group_size: Option<usize>,
    heads: usize,
    kv_dim: usize,
    kv_stride: usize,
}

fn decode_block(s: &str) -> Result<BlockDef> {
    let bad = || {
        Error::unsupported(format!(
            "block definition `{s}` uses options the native EfficientNet builder does not implement"
        ))
    };
    let mut ops = s.split('_');
    let ty = ops.next().ok_or_else(bad)?;
    let kind = match ty {
        "cn" => Kind::Cn,
        "ds" | "dsa" => Kind::Ds,
        "ir" => Kind::Ir,
        "er" => Kind::Er,
        "uir" => Kind::Uir,
        "mqa" => Kind::Mqa,
        _ => return Err(bad()),
    };
    let (mut opts, mut skip, mut act) = (std::collections::HashMap::new(), None, None);
    for op in ops {
        match op {
            "noskip" => skip = Some(false),
            "skip" => skip = Some(true),
            _ if op.starts_with('n') => {
                act = Some(match &op[1..] {
                    "re" => "relu",
                    "r6" => "relu6",
                    "hs" => "hard_swish",
                    "sw" => "swish",
                    "mi" => "mish",
                    // timm ignores an activation code it does not know.
                    _ => continue,
                })
            }
            _ => {
                let at = op.find(|c: char| c.is_ascii_digit()).ok_or_else(bad)?;
                let key = &op[..at];
                let known = [
                    "r", "k", "a", "p", "s", "e", "c", "se", "fc", "gs", "h", "v", "d",
                ];
                if !known.contains(&key) {
                    return Err(bad());
                }
                opts.insert(key, &op[at..]);
            }
        }
    }
    let int = |k: &str, default: Option<usize>| -> Result<usize> {
        match opts.get(k) {
            Some(v) => v.parse().map_err(|_| bad()),
            None => default.ok_or_else(bad),
        }
    };
    let float = |k: &str, default: f64| -> Result<f64> {
        opts.get(k)
            .map_or(Ok(default), |v| v.parse().map_err(|_| bad()))
    };
    // `_parse_ksize`: `3` or `3.5.7`.
    let ks = |k: &str, default: usize| -> Result<Ks> {
        match opts.get(k) {
            Some(v) => v.split('.').map(|t| t.parse().map_err(|_| bad())).collect(),
            None => Ok(vec![default]),
        }
    };
    // EfficientNet-X's space-to-depth (`d` on ds/ir) is not built.
    if matches!(kind, Kind::Ds | Kind::Ir) && int("d", Some(0))? > 0 {
        return Err(bad());
    }
    let k = if kind == Kind::Cn {
        vec![int("k", None)?]
    } else {
        ks("k", 0)?
    };
    // Only ds / ir blocks take MixNet's kernel lists.
    if !matches!(kind, Kind::Ds | Kind::Ir) && k.len() != 1 {
        return Err(bad());
    }
    let uir = kind == Kind::Uir;
    Ok(BlockDef {
        kind,
        repeat: int("r", None)?,
        k,
        exp_k: ks("a", if uir { 0 } else { 1 })?,
        pw_k: ks("p", if uir { 0 } else { 1 })?,
        stride: int("s", None)?,
        exp: float("e", 1.0)?,
        out: int("c", None)?,
        se: float("se", 0.0)?,
        act,
        noskip: ty == "dsa" || skip == Some(false),
        skip: skip == Some(true),
        pw_act: ty == "dsa",
        force_in: int("fc", Some(0))?,
        group_size: opts
            .get("gs")
            .map(|v| v.parse())
            .transpose()
            .map_err(|_| bad())?,
        heads: int("h", Some(0))?,
        kv_dim: int("d", Some(0))?,
        kv_stride: int("v", Some(1))?,
    })
}

/// `_scale_stage_depth`: the blocks of one stage after depth scaling, the extra (or fewer)
/// repeats distributed from the last definition backwards.
fn scale_stage(defs: Vec<BlockDef>, multiplier: f64, ceil: bool) -> Vec<BlockDef> {
    let repeats: Vec<usize> = defs.iter().map(|d| d.repeat).collect();
    let mut num_repeat = repeats.iter().sum::<usize>() as f64;
    let mut scaled_total = if ceil {
        (num_repeat * multiplier).ceil()
    } else {
        py_round(num_repeat * multiplier).max(1.0)
    };
    let mut scaled = Vec::with_capacity(repeats.len());
    for &r in repeats.iter().rev() {
        let rs = py_round(r as f64 / num_repeat * scaled_total).max(1.0);
        scaled.push(rs as usize);
        num_repeat -= r as f64;
        scaled_total -= rs;
    }
    scaled.reverse();
    defs.into_iter()
        .zip(scaled)
        .flat_map(|(d, n)| std::iter::repeat_n(d, n))
        .collect()
}

fn decode_arch_def(a: &EffNetArgs) -> Result<Vec<Vec<BlockDef>>> {
    let n = a.arch_def.len();
    let dm = a.depth_multiplier.expand("depth_multiplier", n)?;
    let ceil = match a.depth_trunc.as_str() {
        "ceil" => true,
        "round" => false,
        other => {
            return Err(Error::unsupported(format!(
                "depth_trunc `{other}` is not timm's `ceil` or `round`"
            )))
        }
    };
    let mut stages = Vec::with_capacity(n);
    for (i, strings) in a.arch_def.iter().enumerate() {
        let defs = strings
            .iter()
            .map(|s| {
                let mut d = decode_block(s)?;
                // `group_size` of the generator: a default for blocks that do not set `gs`.
                d.group_size = d.group_size.or(a.group_size);
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        let fixed = a.fix_first_last && (i == 0 || i + 1 == n);
        if !(dm[i] > 0.0 && dm[i] <= 64.0) {
            return Err(Error::invalid_model(format!(
                "model_args depth_multiplier {} is out of range (0, 64]",
                dm[i]
            )));
        }
        stages.push(scale_stage(defs, if fixed { 1.0 } else { dm[i] }, ceil));
    }
    Ok(stages)
}

// ------------------------------------------------------------------------------------------------
// The model: what the `_gen_*` helper and the model class make of the arguments.

/// `round_channels(channels, multiplier, divisor, round_limit)` as the generator binds it.
#[derive(Debug, Clone, Copy)]
struct RoundChs {
    multiplier: f64,
    divisor: usize,
    round_limit: f64,
}

impl RoundChs {
    fn apply_f(&self, channels: f64) -> usize {
        if self.multiplier == 0.0 {
            return channels as usize;
        }
        make_divisible(channels * self.multiplier, self.divisor, self.round_limit)
    }

    fn apply(&self, channels: usize) -> usize {
        self.apply_f(channels as f64)
    }
}

/// The model's `norm_layer` (timm's `get_norm_act_layer` of it), with the activation after.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NormKind {
    /// `BatchNorm2d`: folded into the conv before it.
    Batch(f32),
    /// `GroupNormAct(group_size=g)`: channels / g groups.
    Group { group_size: usize, eps: f32 },
    /// `LayerNormAct2d`.
    Layer(f32),
    /// EvoNorm2d* / FilterResponseNorm*: the activation is the layer's own (`apply_act`).
    Evo(EvoNorm),
}

impl NormKind {
    fn from_args(a: &EffNetArgs, args: &Args) -> Result<NormKind> {
        let Some(v) = &a.norm_layer else {
            return Ok(NormKind::Batch(a.bn_eps));
        };
        let name = v
            .as_str()
            .or_else(|| v.get("partial").and_then(|p| p.as_str()))
            .unwrap_or("");
        let eps = v.get("eps").and_then(|e| e.as_f64()).map(|e| e as f32);
        let gs = v.get("group_size").and_then(|g| g.as_u64());
        if let Some(e) = EvoNorm::from_timm(name, v.as_object(), Some(&a.act_layer)) {
            return Ok(NormKind::Evo(e?));
        }
        Ok(match (name, gs) {
            ("groupnormact", Some(g)) if g > 0 => NormKind::Group {
                group_size: g as usize,
                eps: eps.unwrap_or(1e-5),
            },
            ("layernormact2d", None) => NormKind::Layer(eps.unwrap_or(1e-5)),
            ("batchnormact2d" | "batchnorm2d", None) => NormKind::Batch(eps.unwrap_or(1e-5)),
            _ => {
                return Err(args.unsupported(
                    "norm_layer",
                    "only BatchNorm2d, GroupNormAct(group_size), LayerNormAct2d and EvoNorm / \
                     FilterResponseNorm are built",
                ))
            }
        })
    }

    fn norm(self, ch: usize) -> Result<Norm> {
        Ok(match self {
            NormKind::Batch(eps) => Norm::Batch { eps },
            NormKind::Layer(eps) => Norm::Layer { eps },
            NormKind::Evo(e) => {
                return Err(Error::invalid_model(format!(
                    "{:?} is a norm-act layer, not a Norm",
                    e.kind
                )))
            }
            NormKind::Group { group_size, eps } => {
                if !ch.is_multiple_of(group_size) {
                    return Err(Error::invalid_model(format!(
                        "GroupNormAct(group_size={group_size}) over {ch} channels"
                    )));
                }
                Norm::Group {
                    groups: ch / group_size,
                    eps,
                }
            }
        })
    }
}

/// Settings shared by every block (`EfficientNetBuilder`'s).
#[derive(Debug, Clone)]
struct Model {
    gen: Gen,
    round: RoundChs,
    stem: usize,
    stem_k: usize,
    /// conv_head width; 0: no conv_head (MobileNet-V1 without `head_conv`).
    num_features: usize,
    head_bias: bool,
    head_norm: bool,
    act: String,
    norm: NormKind,
    tf_same: bool,
    se_gate: String,
    se_force_act: Option<String>,
    se_round_chs: bool,
    se_from_exp: bool,
    layer_scale: Option<f32>,
    output_stride: usize,
    pool: PoolKind,
}

fn model(
    arch: &str,
    a: &EffNetArgs,
    args: &Args,
    cfg: &ModelConfig,
    request_os: Option<usize>,
) -> Result<Model> {
    let gen = Gen::from_name(&a.gen).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` (timm's `_gen_{}`) is not an EfficientNet/MobileNet variant the native graph \
             builds (EfficientNet-X, CondConv, MobileNet-EdgeTPU are not); supported: {EXAMPLES}",
            a.gen
        ))
    })?;
    if a.arch_def.is_empty() {
        return Err(Error::invalid_model(format!(
            "`{arch}`: no block definitions"
        )));
    }
    let cm = a.model_width.unwrap_or(a.channel_multiplier);
    if !(0.0..=64.0).contains(&cm) {
        return Err(args.unsupported("channel_multiplier", "out of range [0, 64]"));
    }
    let round = RoundChs {
        multiplier: cm,
        divisor: a.channel_divisor.max(1),
        round_limit: gen.round_limit(),
    };
    // What each `_gen_*` derives from its multiplier (the table holds timm's values for the
    // entrypoint's own; a saved model_args may change the multiplier).
    let derived_features = match gen {
        Gen::EfficientNet | Gen::Edge | Gen::V2Base => Some(round.apply(1280)),
        Gen::V2S => Some(round.apply(if a.rw { 1792 } else { 1280 })),
        Gen::MobileNetV1 if !a.head_conv => Some(0),
        Gen::MobileNetV1 if a.fix_stem_head => Some(1024),
        Gen::MobileNetV1 => Some(round.apply(1024).max(1024)),
        Gen::MobileNetV2 if a.fix_stem_head => Some(1280),
        Gen::MobileNetV2 | Gen::Tinynet => Some(round.apply(1280).max(1280)),
        Gen::TestEfficientNet => Some(round.apply(256)),
        _ => None,
    };
    let num_features = if args.explicit("num_features") {
        a.num_features
    } else {
        derived_features.or(a.num_features)
    }
    .unwrap_or(1280);
    let fix_stem = match gen {
        _ if args.explicit("fix_stem") => a.fix_stem,
        Gen::MobileNetV1 | Gen::MobileNetV2 => a.fix_stem_head,
        Gen::MobileNetV3 => cm < 0.75,
        Gen::MobileNetV4 => cm < 1.0,
        _ => a.fix_stem,
    };
    let stem = a
        .stem_size
        .unwrap_or(if gen.mobilenetv3() { 16 } else { 32 });
    let tf_same = match a.pad_type.as_str() {
        "" => false,
        "same" | "SAME" => true,
        _ => return Err(args.unsupported("pad_type", "only '' and 'same' are implemented")),
    };
    // `output_stride`: the EfficientNet class's argument, or the features_only request.
    let output_stride = request_os.unwrap_or(a.output_stride);
    if ![8, 16, 32].contains(&output_stride) {
        return Err(args.unsupported("output_stride", "only 8, 16 and 32 are timm's"));
    }
    if args.explicit("output_stride") && gen.mobilenetv3() {
        return Err(args.unsupported(
            "output_stride",
            "timm's MobileNetV3 class takes no output_stride (only its features_only form does)",
        ));
    }
    let pool_name = if args.explicit("global_pool") {
        args.get("global_pool", String::from("avg"))?
    } else {
        cfg.global_pool.clone().unwrap_or_else(|| "avg".into())
    };
    if pool_name != "avg" {
        return Err(Error::unsupported(format!(
            "`{arch}`: global_pool `{pool_name}` is not supported; only `avg`"
        )));
    }
    for name in [
        Some(&a.act_layer),
        Some(&a.se_gate),
        a.se_force_act.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        layers::act::canonical(name)?;
    }
    Ok(Model {
        gen,
        round,
        stem: if fix_stem { stem } else { round.apply(stem) },
        stem_k: a.stem_kernel_size,
        num_features,
        head_bias: a.head_bias,
        head_norm: a.head_norm,
        act: a.act_layer.clone(),
        norm: NormKind::from_args(a, args)?,
        tf_same,
        se_gate: a.se_gate.clone(),
        se_force_act: a.se_force_act.clone(),
        se_round_chs: a.se_round_chs,
        se_from_exp: a.se_from_exp.unwrap_or(gen.mobilenetv3()),
        layer_scale: a.layer_scale_init_value.map(|v| v as f32),
        output_stride,
        pool: PoolKind::Avg,
    })
}

/// One block as `EfficientNetBuilder._make_block` makes it.
#[derive(Debug, Clone)]
struct Block {
    d: BlockDef,
    in_ch: usize,
    mid: usize,
    out: usize,
    stride: usize,
    dilation: usize,
    /// The block's `group_size` (None: the block class's default).
    group_size: Option<usize>,
    act: String,
    se_rd: Option<usize>,
    skip: bool,
    /// Network stride after the block (timm's feature_info `reduction`).
    reduction: usize,
}

/// timm's `num_groups(group_size, channels)`: 0 / none is a dense conv.
fn num_groups(group_size: usize, channels: usize) -> usize {
    channels.checked_div(group_size).unwrap_or(1)
}

/// `_split_channels`: equal parts, the remainder to the first.
fn split_channels(ch: usize, n: usize) -> Vec<usize> {
    let mut v = vec![ch / n; n];
    v[0] += ch - ch / n * n;
    v
}

impl Model {
    fn make_block(&self, d: &BlockDef, in_ch: usize, stride: usize, dilation: usize) -> Block {
        let out = self.round.apply(d.out);
        let act = d.act.map_or_else(|| self.act.clone(), str::to_string);
        let mid = match d.kind {
            Kind::Cn | Kind::Mqa => out,
            Kind::Ds => in_ch,
            Kind::Ir | Kind::Uir => make_divisible(in_ch as f64 * d.exp, 8, 0.9),
            Kind::Er => {
                let base = if d.force_in > 0 {
                    self.round.apply(d.force_in)
                } else {
                    in_ch
                };
                make_divisible(base as f64 * d.exp, 8, 0.9)
            }
        };
        // SE width: from the expanded width (MobileNetV3) or the block input (ratio / exp).
        let has_se = matches!(d.kind, Kind::Ds | Kind::Ir | Kind::Er | Kind::Uir);
        let se_rd = (d.se > 0.0 && has_se).then(|| {
            let exp = if d.kind == Kind::Ds { 1.0 } else { d.exp };
            let ratio = if self.se_from_exp { d.se } else { d.se / exp };
            let v = mid as f64 * ratio;
            match (self.se_round_chs, self.gen) {
                // FBNet-V3 rounds with its own `round_chs_fn` (multiplier, limit 0.95).
                (true, Gen::Fbnetv3) => self.round.apply_f(v),
                (true, _) => make_divisible(v, 8, 0.9),
                _ => py_round(v).max(0.0) as usize,
            }
        });
        let same_shape = stride == 1 && in_ch == out;
        Block {
            d: d.clone(),
            in_ch,
            mid,
            out,
            stride,
            dilation,
            group_size: d.group_size,
            act,
            se_rd,
            skip: match d.kind {
                Kind::Cn => d.skip && same_shape,
                _ => same_shape && !d.noskip,
            },
            reduction: 0,
        }
    }

    /// `create_conv2d(in, out, k, stride, dilation, groups, padding=pad_type)`.
    fn conv(&self, in_ch: usize, out: usize, k: usize, stride: usize, groups: usize) -> Conv {
        Conv::new(in_ch, out, k)
            .stride(stride)
            .groups(groups)
            .pad(Pad::create(k, stride, 1, self.tf_same))
    }

    fn conv_d(&self, in_ch: usize, out: usize, k: usize, s: usize, g: usize, d: usize) -> Conv {
        self.conv(in_ch, out, k, s, g)
            .dilation(d)
            .pad(Pad::create(k, s, d, self.tf_same))
    }

    /// The model's norm (+ act) over `ch` channels in scope `bn` (no conv before it to fold into).
    fn norm_act(
        &self,
        b: &mut Builder,
        x: &Value,
        bn: &str,
        ch: usize,
        act_name: Option<&str>,
    ) -> Result<Value> {
        if let NormKind::Evo(e) = self.norm {
            return e.apply(&mut b.scope(bn), x, ch, act_name.is_some());
        }
        let y = self.norm.norm(ch)?.apply_2d(&mut b.scope(bn), x, ch)?;
        match act_name {
            Some(a) => act(b, a, &y),
            None => Ok(y),
        }
    }

    /// conv + norm + optional activation; a BatchNorm is folded into the conv.
    fn conv_bn_act(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, bn): (&str, &str),
        c: Conv,
        act_name: Option<&str>,
    ) -> Result<Value> {
        let y = match self.norm {
            NormKind::Batch(eps) => layers::conv_bn(b, x, conv, bn, c, eps)?,
            NormKind::Evo(e) => {
                let y = conv2d(&mut b.scope(conv), x, c)?;
                return e.apply(&mut b.scope(bn), &y, c.out_ch, act_name.is_some());
            }
            _ => {
                let y = conv2d(&mut b.scope(conv), x, c)?;
                self.norm
                    .norm(c.out_ch)?
                    .apply_2d(&mut b.scope(bn), &y, c.out_ch)?
            }
        };
        match act_name {
            Some(a) => act(b, a, &y),
            None => Ok(y),
        }
    }

    /// `create_conv2d` with MixNet's kernel list: `MixedConv2d` (channels split per kernel,
    /// convs `conv.0`, `conv.1`, ...; depthwise when groups == in), then the norm (+ act).
    #[allow(clippy::too_many_arguments)]
    fn mixed_conv_bn_act(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, bn): (&str, &str),
        (in_ch, out, ks): (usize, usize, &[usize]),
        (stride, dilation, groups): (usize, usize, usize),
        act_name: Option<&str>,
    ) -> Result<Value> {
        if let [k] = ks {
            let c = self.conv_d(in_ch, out, *k, stride, groups, dilation);
            return self.conv_bn_act(b, x, (conv, bn), c, act_name);
        }
        let depthwise = groups == in_ch;
        if !depthwise && groups != 1 {
            return Err(Error::unsupported(
                "a grouped (not depthwise) MixedConv2d is not a timm layer",
            ));
        }
        let ins = split_channels(in_ch, ks.len());
        let outs = split_channels(out, ks.len());
        let parts = layers::split(b, x, 1, &ins);
        let mut ys = Vec::with_capacity(ks.len());
        for (i, (&k, xi)) in ks.iter().zip(&parts).enumerate() {
            let g = if depthwise { ins[i] } else { 1 };
            let c = self.conv_d(ins[i], outs[i], k, stride, g, dilation);
            ys.push(conv2d(&mut b.scope(conv).scope(i), xi, c)?);
        }
        let refs: Vec<&Value> = ys.iter().collect();
        let y = layers::concat(b, &refs, 1);
        self.norm_act(b, &y, bn, out, act_name)
    }

    /// `SqueezeExcite(chs, rd_ratio, act_layer=block act, gate_layer, force_act_layer)`.
    fn se(
        &self,
        b: &mut Builder,
        x: &Value,
        ch: usize,
        rd: usize,
        block_act: &str,
    ) -> Result<Value> {
        let a = self.se_force_act.as_deref().unwrap_or(block_act);
        SqueezeExcite::efficientnet(ch, rd, a, &self.se_gate).apply(&mut b.scope("se"), x)
    }

    fn maybe_se(&self, b: &mut Builder, x: Value, ch: usize, k: &Block) -> Result<Value> {
        match k.se_rd {
            Some(rd) => self.se(b, &x, ch, rd, &k.act),
            None => Ok(x),
        }
    }

    fn groups(&self, k: &Block, default: usize, ch: usize) -> usize {
        num_groups(k.group_size.unwrap_or(default), ch)
    }

    /// `ConvBnAct`: conv, bn1 + act, skip.
    fn conv_bn_act_block(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let g = self.groups(k, 0, k.in_ch);
        let c = self.conv_d(k.in_ch, k.out, k.d.k[0], k.stride, g, k.dilation);
        self.conv_bn_act(b, x, ("conv", "bn1"), c, Some(&k.act))
    }

    /// `DepthwiseSeparableConv`: conv_dw, bn1 + act, SE, conv_pw, bn2 (+ act for `dsa`).
    fn depthwise_separable(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let g = self.groups(k, 1, k.in_ch);
        let dw = (k.in_ch, k.in_ch, &k.d.k[..]);
        let y = self.mixed_conv_bn_act(
            b,
            x,
            ("conv_dw", "bn1"),
            dw,
            (k.stride, k.dilation, g),
            Some(&k.act),
        )?;
        let y = self.maybe_se(b, y, k.in_ch, k)?;
        let pw_act = k.d.pw_act.then_some(k.act.as_str());
        let pw = (k.in_ch, k.out, &k.d.pw_k[..]);
        self.mixed_conv_bn_act(b, &y, ("conv_pw", "bn2"), pw, (1, 1, 1), pw_act)
    }

    /// `InvertedResidual`: conv_pw, bn1 + act, conv_dw, bn2 + act, SE, conv_pwl, bn3.
    fn inverted_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let a = Some(k.act.as_str());
        let pw = (k.in_ch, k.mid, &k.d.exp_k[..]);
        let y = self.mixed_conv_bn_act(b, x, ("conv_pw", "bn1"), pw, (1, 1, 1), a)?;
        let g = self.groups(k, 1, k.mid);
        let dw = (k.mid, k.mid, &k.d.k[..]);
        let sd = (k.stride, k.dilation, g);
        let y = self.mixed_conv_bn_act(b, &y, ("conv_dw", "bn2"), dw, sd, a)?;
        let y = self.maybe_se(b, y, k.mid, k)?;
        let pwl = (k.mid, k.out, &k.d.pw_k[..]);
        self.mixed_conv_bn_act(b, &y, ("conv_pwl", "bn3"), pwl, (1, 1, 1), None)
    }

    /// `EdgeResidual` (fused MBConv): conv_exp (full k×k), bn1 + act, SE, conv_pwl, bn2.
    fn edge_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let g = self.groups(k, 0, k.mid);
        let c = self.conv_d(k.in_ch, k.mid, k.d.k[0], k.stride, g, k.dilation);
        let y = self.conv_bn_act(b, x, ("conv_exp", "bn1"), c, Some(&k.act))?;
        let y = self.maybe_se(b, y, k.mid, k)?;
        let pwl = (k.mid, k.out, &k.d.pw_k[..]);
        self.mixed_conv_bn_act(b, &y, ("conv_pwl", "bn2"), pwl, (1, 1, 1), None)
    }

    /// `UniversalInvertedResidual`: optional dw_start, pw_exp + act, optional dw_mid + act, SE,
    /// pw_proj, optional dw_end, layer scale. Each is a `ConvNormAct` (`conv`, `bn`).
    fn universal_inverted_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let (start, mid_k, end) = (k.d.exp_k[0], k.d.k[0], k.d.pw_k[0]);
        let cna = ("conv", "bn");
        let mut y = x.clone();
        if start > 0 {
            let s = if mid_k > 0 { 1 } else { k.stride };
            let g = self.groups(k, 1, k.in_ch);
            let c = self.conv_d(k.in_ch, k.in_ch, start, s, g, k.dilation);
            y = self.conv_bn_act(&mut b.scope("dw_start"), &y, cna, c, None)?;
        }
        let c = self.conv(k.in_ch, k.mid, 1, 1, 1);
        y = self.conv_bn_act(&mut b.scope("pw_exp"), &y, cna, c, Some(&k.act))?;
        if mid_k > 0 {
            let g = self.groups(k, 1, k.mid);
            let c = self.conv_d(k.mid, k.mid, mid_k, k.stride, g, k.dilation);
            y = self.conv_bn_act(&mut b.scope("dw_mid"), &y, cna, c, Some(&k.act))?;
        }
        y = self.maybe_se(b, y, k.mid, k)?;
        let c = self.conv(k.mid, k.out, 1, 1, 1);
        y = self.conv_bn_act(&mut b.scope("pw_proj"), &y, cna, c, None)?;
        if end > 0 {
            let s = if start == 0 && mid_k == 0 {
                k.stride
            } else {
                1
            };
            let g = self.groups(k, 1, k.out);
            let c = self.conv_d(k.out, k.out, end, s, g, k.dilation);
            y = self.conv_bn_act(&mut b.scope("dw_end"), &y, cna, c, None)?;
        }
        self.layer_scale(b, y, k.out)
    }

    fn layer_scale(&self, b: &mut Builder, y: Value, ch: usize) -> Result<Value> {
        match self.layer_scale {
            Some(init) => layers::mlp::layer_scale_2d(&mut b.scope("layer_scale"), &y, ch, init),
            None => Ok(y),
        }
    }

    /// `MobileAttention(use_multi_query=True)`: norm, `MultiQueryAttention2d`, layer scale.
    /// timm uses the block's stride only to drop the skip (the attention keeps the resolution).
    fn mobile_attention(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let y = self.norm_act(b, x, "norm", k.in_ch, None)?;
        let y = self.multi_query_attention(&mut b.scope("attn"), &y, k)?;
        self.layer_scale(b, y, k.out)
    }

    /// timm's `MultiQueryAttention2d` (no query stride): per-head queries, one key and value
    /// (after a strided depthwise conv + norm when `kv_stride` > 1), softmax attention, `output.proj`.
    fn multi_query_attention(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let (dim, heads, kd) = (k.in_ch, k.d.heads, k.d.kv_dim);
        if heads == 0 || kd == 0 {
            return Err(Error::invalid_model("mqa block without heads / key dim"));
        }
        let q = conv2d(
            &mut b.scope("query").scope("proj"),
            x,
            Conv::new(dim, heads * kd, 1).init(Init::DefaultUniform),
        )?;
        let mut kv = Vec::new();
        for name in ["key", "value"] {
            let s = &mut b.scope(name);
            let mut t = x.clone();
            if k.d.kv_stride > 1 {
                let c = self
                    .conv_d(dim, dim, k.d.k[0], k.d.kv_stride, dim, k.dilation)
                    .init(Init::DefaultUniform);
                t = self.conv_bn_act(s, &t, ("down_conv", "norm"), c, None)?;
            }
            let pad = if name == "key" { self.tf_same } else { false };
            let c = Conv::new(dim, kd, 1)
                .pad(Pad::create(1, 1, 1, pad))
                .init(Init::DefaultUniform);
            let t = conv2d(&mut s.scope("proj"), &t, c)?;
            // [B, kd, P] → [B, 1, P, kd]
            let t = layers::reshape(s, &t, &[0, 1, kd as i64, -1]);
            kv.push(layers::transpose(s, &t, &[0, 1, 3, 2]));
        }
        // [B, h·kd, H, W] → [B, h, HW, kd]
        let q4 = layers::reshape(b, &q, &[0, heads as i64, kd as i64, -1]);
        let q4 = layers::transpose(b, &q4, &[0, 1, 3, 2]);
        let q4 = layers::scale(b, &q4, (kd as f32).powf(-0.5));
        let kt = layers::transpose(b, &kv[0], &[0, 1, 3, 2]);
        let attn = b.op("MatMul", &[&q4, &kt], vec![]);
        let attn = b.op("Softmax", &[&attn], vec![("axis", Attr::Int(-1))]);
        let o = b.op("MatMul", &[&attn, &kv[1]], vec![]);
        // [B, h, HW, vd] → [B, h·vd, H, W] (channel = head·vd + i, as timm's reshape gives).
        let o = layers::transpose(b, &o, &[0, 1, 3, 2]);
        let hv = (heads * kd) as i64;
        let shape = b.op("Shape", &[x], vec![]);
        let n = layers::slice(b, &shape, 0, 0, 1);
        let hw = layers::slice(b, &shape, 0, 2, 4);
        let c = b.ints(&[hv]);
        let target = layers::concat(b, &[&n, &c, &hw], 0);
        let o = b.op("Reshape", &[&o, &target], vec![]);
        if let Some(s) = b.spatial(x).cloned() {
            b.assign_spatial(&o, s);
        }
        let c = Conv::new(heads * kd, k.out, 1).init(Init::DefaultUniform);
        conv2d(&mut b.scope("output").scope("proj"), &o, c)
    }

    fn block(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let y = match k.d.kind {
            Kind::Cn => self.conv_bn_act_block(b, x, k)?,
            Kind::Ds => self.depthwise_separable(b, x, k)?,
            Kind::Ir => self.inverted_residual(b, x, k)?,
            Kind::Er => self.edge_residual(b, x, k)?,
            Kind::Uir => self.universal_inverted_residual(b, x, k)?,
            Kind::Mqa => self.mobile_attention(b, x, k)?,
        };
        Ok(if k.skip { layers::add(b, &y, x) } else { y })
    }
}

/// Every block of every stage, with its input width, stride and dilation
/// (`EfficientNetBuilder.__call__`: past `output_stride`, a stride becomes dilation).
fn plan(m: &Model, stages: &[Vec<BlockDef>]) -> Vec<Vec<Block>> {
    let mut in_ch = m.stem;
    let (mut current_stride, mut dilation) = (2, 1);
    stages
        .iter()
        .map(|defs| {
            defs.iter()
                .enumerate()
                .map(|(j, d)| {
                    // Only the first block of a stage strides.
                    let mut stride = if j == 0 { d.stride } else { 1 };
                    let mut next_dilation = dilation;
                    if stride > 1 {
                        if current_stride * stride > m.output_stride {
                            next_dilation = dilation * stride;
                            stride = 1;
                        } else {
                            current_stride *= stride;
                        }
                    }
                    let mut blk = m.make_block(d, in_ch, stride, dilation);
                    dilation = next_dilation;
                    blk.reduction = current_stride;
                    in_ch = blk.out;
                    blk
                })
                .collect()
        })
        .collect()
}

/// Weights saved from another architecture lack a block's main conv: say which, before a shape
/// error elsewhere hides the cause.
fn check_layout(b: &Builder, arch: &str, plan: &[Vec<Block>]) -> Result<()> {
    if b.weights().is_none() {
        return Ok(());
    }
    for (i, stage) in plan.iter().enumerate() {
        for (j, blk) in stage.iter().enumerate() {
            let (class, main) = match blk.d.kind {
                Kind::Cn => ("ConvBnAct", "conv"),
                Kind::Ds => ("DepthwiseSeparableConv", "conv_dw"),
                Kind::Ir => ("InvertedResidual", "conv_pwl"),
                Kind::Er => ("EdgeResidual", "conv_exp"),
                Kind::Uir => ("UniversalInvertedResidual", "pw_proj.conv"),
                Kind::Mqa => ("MobileAttention", "attn.output.proj"),
            };
            let prefix = format!("blocks.{i}.{j}.{main}");
            // A MixedConv2d keeps its convs under `.0`, `.1`, ...
            if !b.has_weight(&format!("{prefix}.weight")) && !b.has_module(&format!("{prefix}.0")) {
                return Err(Error::invalid_model(format!(
                    "`{arch}` has a {class} block at blocks.{i}.{j}, but the weights have no tensor \
                     `{prefix}.weight`; they were saved from a different architecture or model_args"
                )));
            }
        }
    }
    if b.has_module(&format!("blocks.{}", plan.len())) {
        return Err(Error::invalid_model(format!(
            "the weights hold more block stages than the {} of `{arch}`",
            plan.len()
        )));
    }
    Ok(())
}

pub fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an architecture of timm's efficientnet / mobilenetv3 modules; supported: {EXAMPLES}"
        ))
    })?;
    let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let a = EffNetArgs::read(&args)?;
    let request_os = b.output_stride();
    let m = model(arch, &a, &args, cfg, request_os)?;
    let stages = plan(&m, &decode_arch_def(&a)?);
    check_layout(b, arch, &stages)?;

    // Stem: conv_stem, bn1 + act.
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let stem = m.conv(in_chans, m.stem, m.stem_k, 2, 1);
    let input = b.input();
    let mut x = m.conv_bn_act(b, &input, ("conv_stem", "bn1"), stem, Some(&m.act))?;
    // timm's feature_info: the stem when the first block strides, then the end of every stage
    // that the next one downsamples (by its block string), and the last stage.
    let defs = decode_arch_def(&a)?;
    if defs[0].first().is_some_and(|d| d.stride > 1) {
        b.feature(&x, m.stem, 2, "bn1");
    }
    let mut last = m.stem;
    for (i, stage) in stages.iter().enumerate() {
        for (j, blk) in stage.iter().enumerate() {
            x = m.block(&mut b.scope("blocks").scope(i).scope(j), &x, blk)?;
            last = blk.out;
        }
        let next_strides = defs
            .get(i + 1)
            .is_none_or(|s| s.first().is_some_and(|d| d.stride > 1));
        if next_strides {
            let reduction = stage.last().map_or(2, |k| k.reduction);
            b.feature(&x, last, reduction, &format!("blocks.{i}"));
        }
    }
    if b.feature_count() > 5 {
        b.default_out_indices(&[0, 1, 2, 3, 4]);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, last));
    }
    let (features, width) = if m.gen.mobilenetv3() {
        (head_mobilenetv3(b, &m, &x, last)?, m.num_features)
    } else if m.num_features == 0 {
        // No conv_head (MobileNet-V1 without head_conv): the last stage's width.
        (global_pool(b, &x, m.pool), last)
    } else {
        (head_efficientnet(b, &m, &x, last)?, m.num_features)
    };
    // Pre-logits width: conv_head's (timm's num_features, or MobileNetV3's head_hidden_size).
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((features, width));
    }
    let logits = linear_2d(
        &mut b.scope("classifier"),
        &features,
        width,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}

/// `EfficientNet`'s head: conv_head, bn2 + act, global pool.
fn head_efficientnet(b: &mut Builder, m: &Model, x: &Value, last: usize) -> Result<Value> {
    let c = m.conv(last, m.num_features, 1, 1, 1);
    let y = m.conv_bn_act(b, x, ("conv_head", "bn2"), c, Some(&m.act))?;
    Ok(global_pool(b, &y, m.pool))
}

/// `MobileNetV3`'s head: global pool, conv_head on the pooled map, then act (+ bias) or, with
/// `head_norm` (MobileNetV4), norm_head + act; flatten.
fn head_mobilenetv3(b: &mut Builder, m: &Model, x: &Value, last: usize) -> Result<Value> {
    let pooled = b.op("GlobalAveragePool", &[x], vec![]);
    let c = Conv::new(last, m.num_features, 1).pad(Pad::create(1, 1, 1, m.tf_same));
    let h = if m.head_norm {
        m.conv_bn_act(b, &pooled, ("conv_head", "norm_head"), c, Some(&m.act))?
    } else {
        let h = conv2d(&mut b.scope("conv_head"), &pooled, c.bias(m.head_bias))?;
        act(b, &m.act, &h)?
    };
    Ok(layers::flatten(b, &h, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_strings_decode_like_timm() {
        let d = decode_block("ir_r2_k3_s2_e4.5_c24_se0.25_nre").unwrap();
        assert_eq!(
            (d.kind, d.repeat, d.k.clone(), d.stride, d.out),
            (Kind::Ir, 2, vec![3], 2, 24)
        );
        assert_eq!((d.exp, d.se, d.act), (4.5, 0.25, Some("relu")));
        let e = decode_block("er_r1_k3_s1_e4_c24_fc24_noskip").unwrap();
        assert_eq!(
            (e.kind, e.k.clone(), e.force_in, e.noskip),
            (Kind::Er, vec![3], 24, true)
        );
        assert!(decode_block("cn_r1_k3_s1_e1_c16_skip").unwrap().skip);
        assert!(decode_block("dsa_r1_k3_s1_c64").unwrap().pw_act);
        // MixNet's kernel lists split the channels; uir / mqa carry their own options.
        let m = decode_block("ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c40").unwrap();
        assert_eq!(
            (m.k, m.exp_k, m.pw_k),
            (vec![3, 5, 7], vec![1, 1], vec![1, 1])
        );
        let u = decode_block("uir_r1_a3_k0_s1_e4_c160").unwrap();
        assert_eq!((u.exp_k, u.k, u.pw_k), (vec![3], vec![0], vec![0]));
        let q = decode_block("mqa_r1_k3_h4_s1_v2_d64_c160").unwrap();
        assert_eq!((q.heads, q.kv_dim, q.kv_stride), (4, 64, 2));
        // EfficientNet-X's space-to-depth and unknown options are not built here.
        assert!(decode_block("ir_r1_k3_s1_e4_c24_d1").is_err());
        assert!(decode_block("er_r1_k3_s1_e4_c24_xd1").is_err());
        assert_eq!(split_channels(10, 3), vec![4, 3, 3]);
    }

    #[test]
    fn depth_scaling_distributes_like_timm() {
        let defs = vec![
            decode_block("ir_r1_k3_s2_e6_c80").unwrap(),
            decode_block("ir_r2_k3_s1_e2.3_c80").unwrap(),
        ];
        assert_eq!(scale_stage(defs.clone(), 1.0, true).len(), 3);
        // ceil(3 * 1.1) = 4: the extra block goes to the last def.
        let s = scale_stage(defs.clone(), 1.1, true);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|d| d.stride == 2).count(), 1);
        assert_eq!(scale_stage(defs, 0.1, true).len(), 2);
    }

    /// For the entrypoints' own multipliers, what this file derives from the generator
    /// arguments (num_features, stem) gives timm's num_features in the table's config.
    #[test]
    fn every_supported_table_arch_builds_timms_num_features() {
        let mut built = 0;
        for arch in TABLE.names() {
            let e = TABLE.get(arch).unwrap();
            let Some(_) = default_config(arch) else {
                continue;
            };
            let cfg = ModelConfig::parse(e.config.to_string().as_bytes()).unwrap();
            let args = Args::new(arch, Some(&e.args), &cfg.model_args);
            // Blur / pruned / gc variants of a supported generator are refused.
            let Ok(a) = EffNetArgs::read(&args) else {
                continue;
            };
            let Ok(m) = model(arch, &a, &args, &cfg, None) else {
                assert!(a.norm_layer.is_some(), "{arch} refused");
                continue;
            };
            let stages = plan(&m, &decode_arch_def(&a).unwrap());
            let last = stages.iter().flatten().last().unwrap().out;
            let nf = if m.gen.mobilenetv3() || m.num_features == 0 {
                last
            } else {
                m.num_features
            };
            assert_eq!(Some(nf as u64), e.config["num_features"].as_u64(), "{arch}");
            built += 1;
        }
        assert!(built >= 115, "only {built} architectures built");
        assert!(default_config("efficientnet_x_b3").is_none() && matches("efficientnet_x_b3"));
        assert!(!matches("resnet50"));
    }
}
