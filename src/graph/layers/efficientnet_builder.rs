//! timm's `_efficientnet_builder.py`: the block-definition strings (`ir_r2_k3_s2_e6_c24_se0.25`)
//! decoded and depth-scaled as `decode_arch_def` does, channel rounding (`round_channels`), and
//! `EfficientNetBuilder`: the settings every block shares and the per-block widths, strides and
//! dilations it derives. The blocks themselves are in `efficientnet_blocks`.

use super::efficientnet_blocks::NormKind;
use super::{make_divisible, py_round};
use crate::error::{Error, Result};
use crate::graph::Builder;

// ------------------------------------------------------------------------------------------------
// `decode_arch_def`: block strings → block arguments, depth-scaled per stage.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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
pub type Ks = Vec<usize>;

/// One decoded block string (`_decode_block_str`).
#[derive(Debug, Clone)]
pub struct BlockDef {
    pub kind: Kind,
    pub repeat: usize,
    /// ds/ir: depthwise; er: conv_exp; cn: conv; uir: dw_mid; mqa: the kv down conv.
    pub k: Ks,
    /// ir: conv_pw; uir: dw_start.
    pub exp_k: Ks,
    /// ds/ir/er: the pointwise conv; uir: dw_end.
    pub pw_k: Ks,
    pub stride: usize,
    pub exp: f64,
    pub out: usize,
    pub se: f64,
    pub act: Option<&'static str>,
    pub noskip: bool,
    pub skip: bool,
    pub pw_act: bool,
    pub force_in: usize,
    pub group_size: Option<usize>,
    pub heads: usize,
    pub kv_dim: usize,
    pub kv_stride: usize,
    /// ds / ir: EfficientNet-X's space-to-depth (`d1`): the block starts a region of 4x the
    /// channels at half the resolution (see [`plan`]).
    pub s2d: bool,
    /// ir: CondConv experts (`cc`, times the generator's `experts_multiplier`); 0: plain convs.
    pub experts: usize,
}

pub fn decode_block(s: &str) -> Result<BlockDef> {
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
                    "r", "k", "a", "p", "s", "e", "c", "se", "fc", "gs", "h", "v", "d", "cc",
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
    // `d` is the space-to-depth flag of ds / ir blocks (mqa's key width otherwise).
    let s2d = matches!(kind, Kind::Ds | Kind::Ir) && int("d", Some(0))? > 0;
    // Every block type names its kernel (timm reads `options['k']`); a uir's `k0` is no conv.
    if !opts.contains_key("k") {
        return Err(Error::invalid_model(format!(
            "block definition `{s}` has no kernel size (`k`)"
        )));
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
        s2d,
        experts: if kind == Kind::Ir {
            int("cc", Some(0))?
        } else {
            0
        },
    })
}

/// One block of timm's already-decoded `block_args` (what `_decode_block_str` returns; a
/// `model_args` entry may give them instead of block strings). Kernel sizes are ints or MixNet
/// lists; options this builder does not implement are refused.
pub fn block_from_args(v: &serde_json::Value) -> Result<BlockDef> {
    let bad = |why: &str| Error::unsupported(format!("block_args entry {v}: {why}"));
    let o = v.as_object().ok_or_else(|| bad("not a dict"))?;
    let known = [
        "block_type",
        "out_chs",
        "stride",
        "act_layer",
        "exp_kernel_size",
        "pw_kernel_size",
        "dw_kernel_size",
        "kernel_size",
        "dw_kernel_size_start",
        "dw_kernel_size_mid",
        "dw_kernel_size_end",
        "exp_ratio",
        "se_ratio",
        "noskip",
        "skip",
        "force_in_chs",
        "pw_act",
        "s2d",
        "group_size",
        "num_heads",
        "key_dim",
        "value_dim",
        "kv_stride",
        "num_experts",
    ];
    if let Some(k) = o.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(&format!("option `{k}` is not built")));
    }
    let int = |k: &str, default: usize| -> Result<usize> {
        match o.get(k) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(x) => x
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(&format!("`{k}` is not an integer"))),
        }
    };
    let float = |k: &str, default: f64| -> Result<f64> {
        match o.get(k) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(x) => x
                .as_f64()
                .ok_or_else(|| bad(&format!("`{k}` is not a number"))),
        }
    };
    let flag = |k: &str| o.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
    let ks = |k: &str, default: usize| -> Result<Ks> {
        match o.get(k) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| x.as_u64().map(|n| n as usize))
                .collect::<Option<Ks>>()
                .ok_or_else(|| bad(&format!("`{k}` is not a kernel size"))),
            _ => Ok(vec![int(k, default)?]),
        }
    };
    let ty = o
        .get("block_type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| bad("no block_type"))?;
    let kind = match ty {
        "cn" => Kind::Cn,
        "ds" | "dsa" => Kind::Ds,
        "ir" => Kind::Ir,
        "er" => Kind::Er,
        "uir" => Kind::Uir,
        "mqa" => Kind::Mqa,
        _ => return Err(bad("block type not built")),
    };
    if !matches!(o.get("act_layer"), None | Some(serde_json::Value::Null)) {
        return Err(bad("a per-block act_layer is not built from block_args"));
    }
    // `s2d` is a bool from the block string, an int once the builder has seen it.
    let s2d = flag("s2d") || o.get("s2d").and_then(|x| x.as_u64()).is_some_and(|n| n > 0);
    if s2d && !matches!(kind, Kind::Ds | Kind::Ir) {
        return Err(bad("space-to-depth is only a ds / ir option"));
    }
    let (k, exp_k, pw_k) = match kind {
        Kind::Cn => (ks("kernel_size", 3)?, vec![1], vec![1]),
        Kind::Ds => (ks("dw_kernel_size", 3)?, vec![1], ks("pw_kernel_size", 1)?),
        Kind::Ir => (
            ks("dw_kernel_size", 3)?,
            ks("exp_kernel_size", 1)?,
            ks("pw_kernel_size", 1)?,
        ),
        Kind::Er => (ks("exp_kernel_size", 3)?, vec![1], ks("pw_kernel_size", 1)?),
        Kind::Uir => (
            ks("dw_kernel_size_mid", 3)?,
            ks("dw_kernel_size_start", 0)?,
            ks("dw_kernel_size_end", 0)?,
        ),
        Kind::Mqa => (ks("dw_kernel_size", 3)?, vec![1], vec![1]),
    };
    if !matches!(kind, Kind::Ds | Kind::Ir) && [&k, &exp_k, &pw_k].iter().any(|v| v.len() != 1) {
        return Err(bad("kernel lists are only built for ds / ir blocks"));
    }
    if int("num_experts", 0)? > 0 && kind != Kind::Ir {
        return Err(bad("CondConv experts are only an ir option"));
    }
    let kv_dim = int("key_dim", 0)?;
    if kind == Kind::Mqa && int("value_dim", kv_dim)? != kv_dim {
        return Err(bad("a value_dim other than key_dim is not built"));
    }
    Ok(BlockDef {
        kind,
        repeat: 1,
        k,
        exp_k,
        pw_k,
        stride: int("stride", 1)?,
        exp: float("exp_ratio", 1.0)?,
        out: int("out_chs", 0)?,
        se: float("se_ratio", 0.0)?,
        act: None,
        noskip: flag("noskip"),
        skip: flag("skip"),
        pw_act: flag("pw_act"),
        force_in: int("force_in_chs", 0)?,
        group_size: o
            .get("group_size")
            .and_then(|g| g.as_u64())
            .map(|g| g as usize),
        heads: int("num_heads", 0)?,
        kv_dim,
        kv_stride: int("kv_stride", 1)?,
        s2d,
        experts: int("num_experts", 0)?,
    })
}

/// `_scale_stage_depth`: the blocks of one stage after depth scaling, the extra (or fewer)
/// repeats distributed from the last definition backwards.
pub fn scale_stage(defs: Vec<BlockDef>, multiplier: f64, ceil: bool) -> Vec<BlockDef> {
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

/// `decode_arch_def`: the stages' block strings, each stage depth-scaled (`depth_multiplier`
/// already expanded per stage; `fix_first_last` keeps the first and last stage unscaled).
/// `group_size` is the generator's default for blocks that do not set `gs`.
pub fn decode_arch_def(
    arch_def: &[Vec<String>],
    depth_multiplier: &[f64],
    depth_trunc: &str,
    fix_first_last: bool,
    group_size: Option<usize>,
) -> Result<Vec<Vec<BlockDef>>> {
    let n = arch_def.len();
    let ceil = match depth_trunc {
        "ceil" => true,
        "round" => false,
        other => {
            return Err(Error::unsupported(format!(
                "depth_trunc `{other}` is not timm's `ceil` or `round`"
            )))
        }
    };
    let mut stages = Vec::with_capacity(n);
    for (i, strings) in arch_def.iter().enumerate() {
        let defs = strings
            .iter()
            .map(|s| {
                let mut d = decode_block(s)?;
                d.group_size = d.group_size.or(group_size);
                Ok(d)
            })
            .collect::<Result<Vec<_>>>()?;
        let fixed = fix_first_last && (i == 0 || i + 1 == n);
        let dm = depth_multiplier[i];
        if !(dm > 0.0 && dm <= 64.0) {
            return Err(Error::invalid_model(format!(
                "model_args depth_multiplier {dm} is out of range (0, 64]"
            )));
        }
        stages.push(scale_stage(defs, if fixed { 1.0 } else { dm }, ceil));
    }
    Ok(stages)
}

// ------------------------------------------------------------------------------------------------
// Channel rounding and the per-block plan.

/// `round_channels(channels, multiplier, divisor, round_limit)` as the generator binds it.
#[derive(Debug, Clone, Copy)]
pub struct RoundChs {
    pub multiplier: f64,
    pub divisor: usize,
    pub round_limit: f64,
}

impl RoundChs {
    pub fn apply_f(&self, channels: f64) -> usize {
        if self.multiplier == 0.0 {
            return channels as usize;
        }
        make_divisible(channels * self.multiplier, self.divisor, self.round_limit)
    }

    pub fn apply(&self, channels: usize) -> usize {
        self.apply_f(channels as f64)
    }
}

/// How an SE block's reduced width is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeRound {
    /// `round(mid · ratio)` (timm's `SqueezeExcite` default).
    Round,
    /// `make_divisible(mid · ratio, 8)` (`se_round_chs`).
    Divisible,
    /// The model's own `round_chs_fn` (FBNet-V3).
    RoundChs,
    /// `se_layer='gc'`: timm's `GlobalContext` in the SE's place, `make_divisible(mid · ratio, 1,
    /// round_limit=0)` wide.
    GlobalContext,
}

/// `EfficientNetBuilder`'s settings, shared by every block it makes.
#[derive(Debug, Clone)]
pub struct EfficientNetBuilder {
    pub round: RoundChs,
    pub act: String,
    pub norm: NormKind,
    /// `pad_type='same'`: TF "SAME" padding.
    pub tf_same: bool,
    pub se_gate: String,
    pub se_force_act: Option<String>,
    pub se_round: SeRound,
    pub se_from_exp: bool,
    pub layer_scale: Option<f32>,
    pub output_stride: usize,
    /// `aa_layer`: anti-aliasing after the norm of every strided block conv.
    pub aa: Option<super::resnet_parts::Aa>,
}

/// One block as `EfficientNetBuilder._make_block` makes it.
#[derive(Debug, Clone)]
pub struct Block {
    pub d: BlockDef,
    pub in_ch: usize,
    pub mid: usize,
    pub out: usize,
    pub stride: usize,
    pub dilation: usize,
    /// The block's `group_size` (None: the block class's default).
    pub group_size: Option<usize>,
    pub act: String,
    pub se_rd: Option<usize>,
    pub skip: bool,
    /// Network stride after the block (timm's feature_info `reduction`).
    pub reduction: usize,
    /// Space-to-depth: 1 for the block that starts the region (`conv_s2d`), 2 inside it.
    pub s2d: u8,
    /// Inside a space-to-depth region, where timm takes no feature map at a stage's end.
    pub in_s2d_region: bool,
}

/// timm's `num_groups(group_size, channels)`: 0 / none is a dense conv.
pub fn num_groups(group_size: usize, channels: usize) -> usize {
    channels.checked_div(group_size).unwrap_or(1)
}

/// `_split_channels`: equal parts, the remainder to the first.
pub fn split_channels(ch: usize, n: usize) -> Vec<usize> {
    let mut v = vec![ch / n; n];
    v[0] += ch - ch / n * n;
    v
}

impl EfficientNetBuilder {
    pub fn make_block(&self, d: &BlockDef, in_ch: usize, stride: usize, dilation: usize) -> Block {
        self.make_block_s2d(d, in_ch, stride, dilation, 0)
    }

    /// [`Self::make_block`] inside a space-to-depth region (`s2d` 1: the block's own
    /// `conv_s2d` makes 4x the input channels; 1 or 2: 4x the output channels).
    pub fn make_block_s2d(
        &self,
        d: &BlockDef,
        in_ch: usize,
        stride: usize,
        dilation: usize,
        s2d: u8,
    ) -> Block {
        let out = self.round.apply(d.out) * if s2d > 0 { 4 } else { 1 };
        let act = d.act.map_or_else(|| self.act.clone(), str::to_string);
        let inner = if s2d == 1 { in_ch * 4 } else { in_ch };
        let mid = match d.kind {
            Kind::Cn | Kind::Mqa => out,
            Kind::Ds => inner,
            Kind::Ir | Kind::Uir => make_divisible(inner as f64 * d.exp, 8, 0.9),
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
            // The region's first block sizes its SE from 4x the channels.
            let ratio = if s2d == 1 { ratio / 4.0 } else { ratio };
            let v = mid as f64 * ratio;
            match self.se_round {
                SeRound::Round => py_round(v).max(0.0) as usize,
                SeRound::Divisible => make_divisible(v, 8, 0.9),
                SeRound::RoundChs => self.round.apply_f(v),
                SeRound::GlobalContext => make_divisible(v, 1, 0.0),
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
            s2d,
            in_s2d_region: false,
        }
    }
}
/// Every block of every stage, with its input width, stride and dilation
/// (`EfficientNetBuilder.__call__`: past `output_stride`, a stride becomes dilation). A
/// space-to-depth block (EfficientNet-X) halves the resolution itself; the region it starts ends
/// at the next strided block, whose stride is dropped and whose expansion is divided by 4.
pub fn plan(
    m: &EfficientNetBuilder,
    stem: usize,
    stages: &[Vec<BlockDef>],
) -> Result<Vec<Vec<Block>>> {
    let mut in_ch = stem;
    let (mut current_stride, mut dilation) = (2, 1);
    let mut space2depth = 0u8;
    stages
        .iter()
        .map(|defs| {
            defs.iter()
                .enumerate()
                .map(|(j, d)| {
                    // Only the first block of a stage strides.
                    let mut stride = if j == 0 { d.stride } else { 1 };
                    let mut d = d.clone();
                    if space2depth == 0 && d.s2d {
                        if stride != 1 {
                            return Err(Error::invalid_model(
                                "a space-to-depth block must have stride 1 (timm asserts it)",
                            ));
                        }
                        space2depth = 1;
                        current_stride *= 2;
                    }
                    let mut s2d = 0;
                    if space2depth == 2 && stride == 2 {
                        stride = 1;
                        d.exp /= 4.0;
                        space2depth = 0;
                    } else if space2depth > 0 {
                        s2d = space2depth;
                    }
                    let in_region = space2depth > 0;
                    let mut next_dilation = dilation;
                    if stride > 1 {
                        if current_stride * stride > m.output_stride {
                            next_dilation = dilation * stride;
                            stride = 1;
                        } else {
                            current_stride *= stride;
                        }
                    }
                    let mut blk = m.make_block_s2d(&d, in_ch, stride, dilation, s2d);
                    dilation = next_dilation;
                    blk.reduction = current_stride;
                    blk.in_s2d_region = in_region;
                    if space2depth == 1 {
                        space2depth = 2;
                    }
                    in_ch = blk.out;
                    Ok(blk)
                })
                .collect()
        })
        .collect()
}

/// Weights saved from another architecture lack a block's main conv: say which, before a shape
/// error elsewhere hides the cause.
pub fn check_layout(b: &Builder, arch: &str, plan: &[Vec<Block>]) -> Result<()> {
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
        // `d` is EfficientNet-X's space-to-depth on ds / ir (mqa's key width above).
        assert!(decode_block("ir_r1_k3_s1_e4_c24_d1").unwrap().s2d);
        assert!(decode_block("ds_r1_k3_s1_e1_c16_se0.25_d1").unwrap().s2d);
        assert!(!decode_block("ir_r1_k3_s1_e4_c24").unwrap().s2d);
        // Unknown options are not built here.
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

    /// timm's decoded dicts (as `_decode_block_str` returns them for these strings) give the
    /// same blocks as the strings.
    #[test]
    fn decoded_block_args_match_block_strings() {
        use serde_json::json;
        let cases = [
            (
                "er_r1_k3_s2_e4_c128",
                json!({"block_type": "er", "out_chs": 128, "stride": 2, "act_layer": null,
                       "exp_kernel_size": 3, "pw_kernel_size": 1, "exp_ratio": 4.0,
                       "force_in_chs": 0, "se_ratio": 0.0, "noskip": false}),
            ),
            (
                "uir_r1_a3_k5_s2_e6_c256",
                json!({"block_type": "uir", "out_chs": 256, "stride": 2, "act_layer": null,
                       "dw_kernel_size_start": 3, "dw_kernel_size_mid": 5,
                       "dw_kernel_size_end": 0, "exp_ratio": 6.0, "se_ratio": 0.0,
                       "noskip": false}),
            ),
            (
                "mqa_r1_k3_h12_v2_s1_d64_c640",
                json!({"block_type": "mqa", "out_chs": 640, "stride": 1, "act_layer": null,
                       "dw_kernel_size": 3, "num_heads": 12, "key_dim": 64, "value_dim": 64,
                       "kv_stride": 2, "noskip": false}),
            ),
        ];
        for (s, v) in cases {
            let a = format!("{:?}", decode_block(s).unwrap());
            assert_eq!(a, format!("{:?}", block_from_args(&v).unwrap()), "{s}");
        }
        let bad = json!({"block_type": "mqa", "out_chs": 8, "stride": 1, "key_dim": 8,
                         "value_dim": 16, "num_heads": 2});
        assert!(block_from_args(&bad).is_err());
        assert!(
            block_from_args(&json!({"block_type": "ir", "s2d": 1}))
                .unwrap()
                .s2d
        );
        assert!(block_from_args(&json!({"block_type": "er", "s2d": 1})).is_err());
    }
}
