//! EfficientNet, EfficientNet-Lite / -EdgeTPU, MobileNet-V2 and MobileNet-V3 as timm 1.0.31
//! builds them (`efficientnet.py`, `mobilenetv3.py`, `_efficientnet_builder.py`,
//! `_efficientnet_blocks.py`).
//!
//! timm's entrypoints call a `_gen_*` helper that decodes block-definition strings
//! (`ir_r2_k3_s2_e6_c24_se0.25`) and scales them by the channel / depth multipliers. The generated
//! table holds, per architecture, the helper's name and arguments, the strings and the model-class
//! arguments; this file decodes and scales them as `decode_arch_def` and `EfficientNetBuilder` do,
//! so a saved `model_args` that changes a multiplier gets timm's exact structure.

use super::super::args::{Args, PerStage};
use super::super::layers::pool::{global_pool, PoolKind};
use super::super::layers::se::SqueezeExcite;
use super::super::layers::{
    self, act, conv2d, make_divisible, mlp::linear_2d, py_round, Conv, Pad,
};
use super::super::tables::Table;
use super::{Builder, Family, Init, OutputKind, Value};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::timm_args;

pub const FAMILY: Family = Family {
    name: "efficientnet",
    examples: EXAMPLES,
    matches,
    build,
    default_config,
    any_size: true,
};

pub const EXAMPLES: &str = "efficientnet_b0..b8/l2, efficientnet_lite0..4, efficientnet_es/em/el and their tf_ ports, \
mobilenetv2_035..140/110d/120d, mobilenetv3_large/small_*, tf_mobilenetv3_*, mobilenetv3_rw, test_efficientnet";

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
    MobileNetV2,
    TestEfficientNet,
    MobileNetV3,
    MobileNetV3Rw,
}

impl Gen {
    fn from_name(name: &str) -> Option<Gen> {
        Some(match name {
            "efficientnet" => Gen::EfficientNet,
            "efficientnet_lite" => Gen::Lite,
            "efficientnet_edge" => Gen::Edge,
            "mobilenet_v2" => Gen::MobileNetV2,
            "test_efficientnet" => Gen::TestEfficientNet,
            "mobilenet_v3" => Gen::MobileNetV3,
            "mobilenet_v3_rw" => Gen::MobileNetV3Rw,
            _ => return None,
        })
    }

    /// The model class: `MobileNetV3` (pool, then conv_head) or `EfficientNet`.
    fn mobilenetv3(self) -> bool {
        matches!(self, Gen::MobileNetV3 | Gen::MobileNetV3Rw)
    }
}

timm_args! {
    /// The generator's arguments and the model class's, as the table and config.json give them.
    pub struct EffNetArgs {
        gen: String = String::new(),
        arch_def: Vec<Vec<String>> = Vec::new(),
        channel_multiplier: f64 = 1.0,
        depth_multiplier: PerStage<f64> = PerStage::All(1.0),
        depth_trunc: String = "ceil".into(),
        fix_first_last: bool = false,
        channel_divisor: usize = 8,
        group_size: Option<usize> = None,
        fix_stem_head: bool = false,
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
    /// `EdgeResidual`
    Er,
}

/// One decoded block string (`_decode_block_str`).
#[derive(Debug, Clone)]
struct BlockDef {
    kind: Kind,
    repeat: usize,
    k: usize,
    exp_k: usize,
    pw_k: usize,
    stride: usize,
    exp: f64,
    out: usize,
    se: f64,
    act: Option<&'static str>,
    noskip: bool,
    skip: bool,
    pw_act: bool,
    force_in: usize,
}

fn decode_block(s: &str) -> Result<BlockDef> {
    let bad = || {
        Error::unsupported(format!(
            "block definition `{s}` uses options the native EfficientNet builder does not implement"
        ))
    };
    let mut ops = s.split('_');
    let ty = ops.next().ok_or_else(bad)?;
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
                    _ => return Err(bad()),
                })
            }
            _ => {
                let at = op.find(|c: char| c.is_ascii_digit()).ok_or_else(bad)?;
                let key = &op[..at];
                if !matches!(key, "r" | "k" | "a" | "p" | "s" | "e" | "c" | "se" | "fc") {
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
    let kind = match ty {
        "cn" => Kind::Cn,
        "ds" | "dsa" => Kind::Ds,
        "ir" => Kind::Ir,
        "er" => Kind::Er,
        _ => return Err(bad()),
    };
    let k = int("k", None)?;
    Ok(BlockDef {
        kind,
        repeat: int("r", None)?,
        k,
        // `er` blocks take their expansion kernel from `k`; `ir` from `a`.
        exp_k: if kind == Kind::Er {
            k
        } else {
            int("a", Some(1))?
        },
        pw_k: int("p", Some(1))?,
        stride: int("s", None)?,
        exp: float("e", 1.0)?,
        out: int("c", None)?,
        se: float("se", 0.0)?,
        act,
        noskip: ty == "dsa" || skip == Some(false),
        skip: skip == Some(true),
        pw_act: ty == "dsa",
        force_in: int("fc", Some(0))?,
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
            .map(|s| decode_block(s))
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
    fn apply(&self, channels: usize) -> usize {
        if self.multiplier == 0.0 {
            return channels;
        }
        make_divisible(
            channels as f64 * self.multiplier,
            self.divisor,
            self.round_limit,
        )
    }
}

/// Settings shared by every block (`EfficientNetBuilder`'s).
#[derive(Debug, Clone)]
struct Model {
    gen: Gen,
    round: RoundChs,
    stem: usize,
    stem_k: usize,
    num_features: usize,
    head_bias: bool,
    act: String,
    eps: f32,
    tf_same: bool,
    group_size: Option<usize>,
    se_gate: String,
    se_force_act: Option<String>,
    se_round_chs: bool,
    se_from_exp: bool,
    pool: PoolKind,
}

fn model(arch: &str, a: &EffNetArgs, args: &Args, cfg: &ModelConfig) -> Result<Model> {
    let gen = Gen::from_name(&a.gen).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` (timm's `_gen_{}`) is not an EfficientNet/MobileNet variant the native graph \
             builds (EfficientNet-V2/X, MixNet, MnasNet, FBNet, TinyNet, LCNet, MobileNet-V1/V4, \
             CondConv are not); supported: {EXAMPLES}",
            a.gen
        ))
    })?;
    if a.arch_def.is_empty() {
        return Err(Error::invalid_model(format!(
            "`{arch}`: no block definitions"
        )));
    }
    let cm = a.channel_multiplier;
    if !(0.0..=64.0).contains(&cm) {
        return Err(args.unsupported("channel_multiplier", "out of range [0, 64]"));
    }
    let round = RoundChs {
        multiplier: cm,
        divisor: a.channel_divisor.max(1),
        round_limit: if gen == Gen::TestEfficientNet {
            0.0
        } else {
            0.9
        },
    };
    // What each `_gen_*` derives from its multiplier (the table holds timm's values for the
    // entrypoint's own; a saved model_args may change the multiplier).
    let derived_features = match gen {
        Gen::EfficientNet | Gen::Edge => Some(round.apply(1280)),
        Gen::MobileNetV2 if a.fix_stem_head => Some(1280),
        Gen::MobileNetV2 => Some(round.apply(1280).max(1280)),
        Gen::TestEfficientNet => Some(round.apply(256)),
        Gen::Lite | Gen::MobileNetV3 | Gen::MobileNetV3Rw => None,
    };
    let num_features = if args.explicit("num_features") {
        a.num_features
    } else {
        derived_features.or(a.num_features)
    }
    .unwrap_or(1280);
    let fix_stem = match gen {
        _ if args.explicit("fix_stem") => a.fix_stem,
        Gen::MobileNetV2 => a.fix_stem_head,
        Gen::MobileNetV3 => cm < 0.75,
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
    if a.output_stride != 32 {
        return Err(args.unsupported(
            "output_stride",
            "dilated stages are not implemented (output_stride 32 only)",
        ));
    }
    if a.head_norm {
        return Err(args.unsupported("head_norm", "a normed MobileNet head is not implemented"));
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
        act: a.act_layer.clone(),
        eps: a.bn_eps,
        tf_same,
        group_size: a.group_size.filter(|&g| g > 0),
        se_gate: a.se_gate.clone(),
        se_force_act: a.se_force_act.clone(),
        se_round_chs: a.se_round_chs,
        se_from_exp: a.se_from_exp.unwrap_or(gen.mobilenetv3()),
        pool: PoolKind::Avg,
    })
}

/// One block as `EfficientNetBuilder._make_block` makes it.
#[derive(Debug, Clone)]
struct Block {
    kind: Kind,
    in_ch: usize,
    mid: usize,
    out: usize,
    k: usize,
    exp_k: usize,
    pw_k: usize,
    stride: usize,
    /// Groups of the spatial conv (depthwise: its channel count).
    groups: usize,
    act: String,
    se_rd: Option<usize>,
    skip: bool,
    pw_act: bool,
}

/// timm's `num_groups(group_size, channels)`: 0 / none is a dense conv.
fn num_groups(group_size: usize, channels: usize) -> usize {
    channels.checked_div(group_size).unwrap_or(1)
}

impl Model {
    fn make_block(&self, d: &BlockDef, in_ch: usize, stride: usize) -> Block {
        let out = self.round.apply(d.out);
        let act = d.act.map_or_else(|| self.act.clone(), str::to_string);
        // The block classes' default group sizes: depthwise for ds/ir, dense for cn/er.
        let gs = |default: usize| self.group_size.unwrap_or(default);
        let (mid, groups) = match d.kind {
            Kind::Cn => (out, num_groups(gs(0), in_ch)),
            Kind::Ds => (in_ch, num_groups(gs(1), in_ch)),
            Kind::Ir => {
                let mid = make_divisible(in_ch as f64 * d.exp, 8, 0.9);
                (mid, num_groups(gs(1), mid))
            }
            Kind::Er => {
                let base = if d.force_in > 0 {
                    self.round.apply(d.force_in)
                } else {
                    in_ch
                };
                let mid = make_divisible(base as f64 * d.exp, 8, 0.9);
                (mid, num_groups(gs(0), mid))
            }
        };
        // SE width: from the expanded width (MobileNetV3) or the block input (ratio / exp).
        let se_rd = (d.se > 0.0 && d.kind != Kind::Cn).then(|| {
            let exp = if d.kind == Kind::Ds { 1.0 } else { d.exp };
            let ratio = if self.se_from_exp { d.se } else { d.se / exp };
            let v = mid as f64 * ratio;
            if self.se_round_chs {
                make_divisible(v, 8, 0.9)
            } else {
                py_round(v).max(0.0) as usize
            }
        });
        let same_shape = stride == 1 && in_ch == out;
        Block {
            kind: d.kind,
            in_ch,
            mid,
            out,
            k: d.k,
            exp_k: d.exp_k,
            pw_k: d.pw_k,
            stride,
            groups,
            act,
            se_rd,
            skip: match d.kind {
                Kind::Cn => d.skip && same_shape,
                _ => same_shape && !d.noskip,
            },
            pw_act: d.pw_act,
        }
    }

    /// `create_conv2d(in, out, k, stride, groups, padding=pad_type)`.
    fn conv(&self, in_ch: usize, out: usize, k: usize, stride: usize, groups: usize) -> Conv {
        Conv::new(in_ch, out, k)
            .stride(stride)
            .groups(groups)
            .pad(Pad::create(k, stride, 1, self.tf_same))
    }

    /// conv + BatchNorm + optional activation. The BatchNorm stays a node (ONNX Runtime fuses it
    /// at load in f32): folding it here in f64 moves the F16 MobileNetV3 fixture's logits from
    /// 1.5e-5 to 1.02e-4 of timm's (timm's own f32 result is 4.1e-5 from its f64 one), past the
    /// 1e-4 the tests hold.
    fn conv_bn_act(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, bn): (&str, &str),
        c: Conv,
        act_name: Option<&str>,
    ) -> Result<Value> {
        let y = conv2d(&mut b.scope(conv), x, c)?;
        let y = layers::batch_norm(&mut b.scope(bn), &y, c.out_ch, self.eps)?;
        match act_name {
            Some(a) => act(b, a, &y),
            None => Ok(y),
        }
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

    /// `ConvBnAct`: conv, bn1 + act, skip.
    fn conv_bn_act_block(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let c = self.conv(k.in_ch, k.out, k.k, k.stride, k.groups);
        self.conv_bn_act(b, x, ("conv", "bn1"), c, Some(&k.act))
    }

    /// `DepthwiseSeparableConv`: conv_dw, bn1 + act, SE, conv_pw, bn2 (+ act for `dsa`).
    fn depthwise_separable(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let c = self.conv(k.in_ch, k.in_ch, k.k, k.stride, k.groups);
        let mut y = self.conv_bn_act(b, x, ("conv_dw", "bn1"), c, Some(&k.act))?;
        if let Some(rd) = k.se_rd {
            y = self.se(b, &y, k.in_ch, rd, &k.act)?;
        }
        let pw = self.conv(k.in_ch, k.out, k.pw_k, 1, 1);
        let pw_act = k.pw_act.then_some(k.act.as_str());
        self.conv_bn_act(b, &y, ("conv_pw", "bn2"), pw, pw_act)
    }

    /// `InvertedResidual`: conv_pw, bn1 + act, conv_dw, bn2 + act, SE, conv_pwl, bn3.
    fn inverted_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let pw = self.conv(k.in_ch, k.mid, k.exp_k, 1, 1);
        let y = self.conv_bn_act(b, x, ("conv_pw", "bn1"), pw, Some(&k.act))?;
        let dw = self.conv(k.mid, k.mid, k.k, k.stride, k.groups);
        let mut y = self.conv_bn_act(b, &y, ("conv_dw", "bn2"), dw, Some(&k.act))?;
        if let Some(rd) = k.se_rd {
            y = self.se(b, &y, k.mid, rd, &k.act)?;
        }
        let pwl = self.conv(k.mid, k.out, k.pw_k, 1, 1);
        self.conv_bn_act(b, &y, ("conv_pwl", "bn3"), pwl, None)
    }

    /// `EdgeResidual`: conv_exp (full k×k), bn1 + act, SE, conv_pwl, bn2.
    fn edge_residual(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let c = self.conv(k.in_ch, k.mid, k.k, k.stride, k.groups);
        let mut y = self.conv_bn_act(b, x, ("conv_exp", "bn1"), c, Some(&k.act))?;
        if let Some(rd) = k.se_rd {
            y = self.se(b, &y, k.mid, rd, &k.act)?;
        }
        let pwl = self.conv(k.mid, k.out, k.pw_k, 1, 1);
        self.conv_bn_act(b, &y, ("conv_pwl", "bn2"), pwl, None)
    }

    fn block(&self, b: &mut Builder, x: &Value, k: &Block) -> Result<Value> {
        let y = match k.kind {
            Kind::Cn => self.conv_bn_act_block(b, x, k)?,
            Kind::Ds => self.depthwise_separable(b, x, k)?,
            Kind::Ir => self.inverted_residual(b, x, k)?,
            Kind::Er => self.edge_residual(b, x, k)?,
        };
        Ok(if k.skip { layers::add(b, &y, x) } else { y })
    }
}

/// Every block of every stage, with its input width and stride (`EfficientNetBuilder.__call__`).
fn plan(m: &Model, stages: &[Vec<BlockDef>]) -> Vec<Vec<Block>> {
    let mut in_ch = m.stem;
    stages
        .iter()
        .map(|defs| {
            defs.iter()
                .enumerate()
                .map(|(j, d)| {
                    // Only the first block of a stage strides.
                    let blk = m.make_block(d, in_ch, if j == 0 { d.stride } else { 1 });
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
            let (class, main) = match blk.kind {
                Kind::Cn => ("ConvBnAct", "conv"),
                Kind::Ds => ("DepthwiseSeparableConv", "conv_dw"),
                Kind::Ir => ("InvertedResidual", "conv_pwl"),
                Kind::Er => ("EdgeResidual", "conv_exp"),
            };
            let key = format!("blocks.{i}.{j}.{main}.weight");
            if !b.has_weight(&key) {
                return Err(Error::invalid_model(format!(
                    "`{arch}` has a {class} block at blocks.{i}.{j}, but the weights have no tensor \
                     `{key}`; they were saved from a different architecture or model_args"
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
    let m = model(arch, &a, &args, cfg)?;
    let stages = plan(&m, &decode_arch_def(&a)?);
    check_layout(b, arch, &stages)?;

    // Stem: conv_stem, bn1 + act.
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let stem = m.conv(in_chans, m.stem, m.stem_k, 2, 1);
    let input = b.input();
    let mut x = m.conv_bn_act(b, &input, ("conv_stem", "bn1"), stem, Some(&m.act))?;
    // timm's feature_info: the stem when the first block strides, then the end of every stage
    // that the next one downsamples, and the last stage.
    let mut reduction = 2;
    if stages[0].first().is_some_and(|k| k.stride > 1) {
        b.feature(&x, m.stem, reduction, "bn1");
    }
    let mut last = m.stem;
    for (i, stage) in stages.iter().enumerate() {
        for (j, blk) in stage.iter().enumerate() {
            x = m.block(&mut b.scope("blocks").scope(i).scope(j), &x, blk)?;
            reduction *= blk.stride;
            last = blk.out;
        }
        let next_strides = stages
            .get(i + 1)
            .is_none_or(|s| s.first().is_some_and(|k| k.stride > 1));
        if next_strides {
            b.feature(&x, last, reduction, &format!("blocks.{i}"));
        }
    }
    if b.feature_count() > 5 {
        b.default_out_indices(&[0, 1, 2, 3, 4]);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, last));
    }
    let features = if m.gen.mobilenetv3() {
        head_mobilenetv3(b, &m, &x, last)?
    } else {
        head_efficientnet(b, &m, &x, last)?
    };
    // Pre-logits width: conv_head's (timm's num_features, or MobileNetV3's head_hidden_size).
    let width = m.num_features;
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

/// `MobileNetV3`'s head: global pool, conv_head (+ bias) + act on the pooled map, flatten.
fn head_mobilenetv3(b: &mut Builder, m: &Model, x: &Value, last: usize) -> Result<Value> {
    let pooled = b.op("GlobalAveragePool", &[x], vec![]);
    let c = Conv::new(last, m.num_features, 1)
        .pad(Pad::create(1, 1, 1, m.tf_same))
        .bias(m.head_bias);
    let h = conv2d(&mut b.scope("conv_head"), &pooled, c)?;
    let h = act(b, &m.act, &h)?;
    Ok(layers::flatten(b, &h, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_strings_decode_like_timm() {
        let d = decode_block("ir_r2_k3_s2_e4.5_c24_se0.25_nre").unwrap();
        assert_eq!(
            (d.kind, d.repeat, d.k, d.stride, d.out),
            (Kind::Ir, 2, 3, 2, 24)
        );
        assert_eq!((d.exp, d.se, d.act), (4.5, 0.25, Some("relu")));
        let e = decode_block("er_r1_k3_s1_e4_c24_fc24_noskip").unwrap();
        assert_eq!(
            (e.kind, e.exp_k, e.force_in, e.noskip),
            (Kind::Er, 3, 24, true)
        );
        assert!(decode_block("cn_r1_k3_s1_e1_c16_skip").unwrap().skip);
        assert!(decode_block("dsa_r1_k3_s1_c64").unwrap().pw_act);
        // MixNet's multi-kernel and EfficientNet-X's space-to-depth options are not built here.
        assert!(decode_block("ir_r1_k3.5.7_s2_e6_c40").is_err());
        assert!(decode_block("er_r1_k3_s1_e4_c24_xd1").is_err());
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
            // GroupNorm / blur / pruned variants of a supported generator are refused.
            let Ok(a) = EffNetArgs::read(&args) else {
                continue;
            };
            let m = model(arch, &a, &args, &cfg).unwrap_or_else(|err| panic!("{arch}: {err:?}"));
            let stages = plan(&m, &decode_arch_def(&a).unwrap());
            let last = stages.iter().flatten().last().unwrap().out;
            let nf = if m.gen.mobilenetv3() {
                last
            } else {
                m.num_features
            };
            assert_eq!(Some(nf as u64), e.config["num_features"].as_u64(), "{arch}");
            built += 1;
        }
        assert!(built >= 50, "only {built} architectures built");
        assert!(default_config("mixnet_s").is_none() && matches("mixnet_s"));
        assert!(!matches("resnet50"));
    }
}
