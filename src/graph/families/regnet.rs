//! RegNet X / Y / Z / V (timm's `regnet.py`): `regnetx_002` .. `regnetx_320`, `regnety_002` ..
//! `regnety_2560` (SE), the torchvision-rounded `_tv` variants, `regnetz_005` / `regnetz_040[_h]`,
//! the pre-activation `regnetv_040` / `regnetv_064` (`PreBottleneck`) and the GroupNorm
//! `regnety_040_sgn`; `output_stride` 8 / 16 dilates the last stages.
//!
//! Stage widths come from timm's quantised linear rule (`generate_regnet` + width/group
//! adjustment). When config.json's `model_args` do not set the rule's arguments (transformers'
//! TimmWrapper writes `null`), the weights are what records the widths, so stage depths, widths,
//! bottleneck and group widths, SE widths, stem width, shortcut type and the final 1x1 conv are
//! read from the tensors themselves.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::efficientnet_blocks::NormKind;
use crate::graph::layers::heads::fc;
use crate::graph::layers::pool::{avg_pool2d_same_s1, global_pool, Pool2d, PoolKind};
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{self, act, conv2d, conv_norm_act, make_divisible, py_round, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/regnet.json"));

pub const FAMILY: Family = Family {
    name: "regnet",
    examples: "regnetx_002..regnetx_320, regnety_002..regnety_2560, regnetv_040, regnetv_064, regnetz_005, regnetz_040[_h]",
    matches,
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

fn matches(arch: &str) -> bool {
    ["regnetx_", "regnety_", "regnetv_"]
        .iter()
        .any(|p| arch.starts_with(p))
        || TABLE.contains(arch)
}

timm_args! {
    /// timm's `RegNetCfg` (the entrypoint's cfg, overlaid by `model_args`) and the `RegNet`
    /// arguments that shape the graph.
    struct RegNetArgs {
        depth: usize = 21,
        w0: usize = 80,
        wa: f64 = 42.63,
        wm: f64 = 2.66,
        group_size: usize = 24,
        bottle_ratio: f64 = 1.0,
        se_ratio: Option<f64> = None,
        group_min_ratio: Option<f64> = None,
        stem_width: usize = 32,
        downsample: Option<String> = Some("conv1x1".into()),
        linear_out: bool = false,
        preact: bool = false,
        num_features: Option<usize> = None,
        act_layer: String = "relu".into(),
        norm_layer: Json = Json::from("batchnorm"),
        in_chans: Option<usize> = None,
        output_stride: usize = 32,
    }
}

/// The model arguments the width rule reads; when config.json sets none of them, the weights'
/// shapes are the widths.
const RULE_ARGS: &[&str] = &[
    "depth",
    "w0",
    "wa",
    "wm",
    "group_size",
    "bottle_ratio",
    "group_min_ratio",
];

/// A `RegStage`'s shape.
#[derive(Debug, Clone)]
struct Stage {
    width: usize,
    depth: usize,
    /// `int(round(width * bottle_ratio))`.
    bottleneck: usize,
    group_size: usize,
    /// SE reduction width of each block (0: no SE).
    se: Vec<usize>,
}

/// timm's `create_shortcut` type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Downsample {
    Conv1x1,
    Avg,
    None,
}

/// Everything the graph needs, resolved from the arguments and the weights.
struct RegNet {
    stem_width: usize,
    stages: Vec<Stage>,
    downsample: Downsample,
    linear_out: bool,
    /// `PreBottleneck` blocks, a bare stem conv and shortcut convs without norms.
    preact: bool,
    /// BatchNorm2d or GroupNormAct(group_size), per layer width.
    norm: NormKind,
    num_features: usize,
    act: String,
    output_stride: usize,
}

impl RegNet {
    /// `ConvNormAct` with the model's norm (a BatchNorm folded into the conv).
    fn conv_norm_act(&self, b: &mut Builder, x: &Value, c: Conv, act: bool) -> Result<Value> {
        let norm = self.norm.norm(c.out_ch)?;
        conv_norm_act(b, x, c, &norm, act.then_some(self.act.as_str()))
    }

    /// `get_norm_act_layer(norm_layer, act_layer)` over `ch` channels: the norm, then the act.
    fn norm_act(&self, b: &mut Builder, x: &Value, ch: usize) -> Result<Value> {
        let y = self.norm.norm(ch)?.apply_2d(b, x, ch)?;
        act(b, &self.act, &y)
    }

    /// A block's conv `name`: `ConvNormAct` (`name.conv`, `name.bn`) or, pre-activation, a bare
    /// conv (`name.weight`) whose norm is the next layer's.
    fn block_conv(
        &self,
        b: &mut Builder,
        x: &Value,
        name: &str,
        c: Conv,
        act: bool,
    ) -> Result<Value> {
        if self.preact {
            conv2d(&mut b.scope(name), x, init(c))
        } else {
            self.conv_norm_act(&mut b.scope(name), x, init(c), act)
        }
    }
}

/// One `Bottleneck` as `RegStage` builds it.
struct Block {
    in_ch: usize,
    out_ch: usize,
    bottleneck: usize,
    group_size: usize,
    se: usize,
    stride: usize,
    /// `dilation[0]` (conv2 and the shortcut) and `dilation[1]` (the stage's).
    dilation: (usize, usize),
}

/// timm's RegNet conv init: normal(0, sqrt(2 / fan_out)), fan_out = k·k·out / groups.
fn init(c: Conv) -> Conv {
    let fan_out = c.kernel.0 * c.kernel.1 * c.out_ch / c.groups.max(1);
    c.init(Init::Normal((2.0 / fan_out.max(1) as f64).sqrt() as f32))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = resolve(b, cfg)?;
    let act_name = net.act.as_str();
    let x = b.input();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let stem = init(Conv::new(in_ch, net.stem_width, 3).stride(2));
    let mut x = if net.preact {
        conv2d(&mut b.scope("stem"), &x, stem)?
    } else {
        net.conv_norm_act(&mut b.scope("stem"), &x, stem, true)?
    };
    b.feature(&x, net.stem_width, 2, "stem");

    // `_get_stage_args`: stride 2 per stage until output_stride, dilation after.
    let (mut prev, mut net_stride, mut dilation) = (net.stem_width, 2, 1);
    for (i, st) in net.stages.iter().enumerate() {
        let stride = if net_stride >= net.output_stride {
            dilation *= 2;
            1
        } else {
            net_stride *= 2;
            2
        };
        let name = format!("s{}", i + 1);
        x = reg_stage(&mut b.scope(&name), &x, st, prev, stride, dilation, &net)?;
        prev = st.width;
        b.feature(&x, prev, net_stride, &name);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }

    let width = if net.num_features > 0 {
        let c = init(Conv::new(prev, net.num_features, 1));
        x = net.conv_norm_act(&mut b.scope("final_conv"), &x, c, true)?;
        net.num_features
    } else {
        if net.linear_out || net.preact {
            x = act(b, act_name, &x)?;
        }
        prev
    };
    head(b, cfg, &x, width)
}

/// timm's `ClassifierHead` with RegNet's init of `head.fc`: normal(0, 0.01).
fn head(b: &mut Builder, cfg: &ModelConfig, x: &Value, width: usize) -> Result<(Value, usize)> {
    let pool_name = cfg.global_pool.as_deref().unwrap_or("avg");
    let pool = PoolKind::from_timm(pool_name)?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native RegNet graph",
        ));
    }
    let pooled = global_pool(b, x, pool);
    let width = width * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let classes = cfg.num_classes;
    let logits = fc(
        &mut b.scope("head"),
        &pooled,
        width,
        classes,
        Init::Normal(0.01),
    )?;
    Ok((logits, classes))
}

/// timm's `RegStage`: blocks `b1`.., the first with the stage's stride.
fn reg_stage(
    b: &mut Builder,
    x: &Value,
    st: &Stage,
    in_ch: usize,
    stride: usize,
    dilation: usize,
    net: &RegNet,
) -> Result<Value> {
    let mut first_dilation = if dilation <= 2 { 1 } else { 2 };
    let mut x = x.clone();
    for j in 0..st.depth {
        let blk = Block {
            in_ch: if j == 0 { in_ch } else { st.width },
            out_ch: st.width,
            bottleneck: st.bottleneck,
            group_size: st.group_size,
            se: st.se[j],
            stride: if j == 0 { stride } else { 1 },
            dilation: (first_dilation, dilation),
        };
        let mut bs = b.scope(format!("b{}", j + 1));
        x = if net.preact {
            pre_bottleneck(&mut bs, &x, &blk, net)?
        } else {
            bottleneck(&mut bs, &x, &blk, net)?
        };
        first_dilation = dilation;
    }
    Ok(x)
}

/// timm's `Bottleneck`: 1x1 conv, grouped 3x3 conv, SE, 1x1 conv, shortcut, activation.
fn bottleneck(b: &mut Builder, x: &Value, blk: &Block, net: &RegNet) -> Result<Value> {
    let a = net.act.as_str();
    let bott = blk.bottleneck;
    let y = net.block_conv(b, x, "conv1", Conv::new(blk.in_ch, bott, 1), true)?;
    let y = net.block_conv(b, &y, "conv2", grouped_conv(blk), true)?;
    let y = squeeze_excite(b, &y, blk, a)?;
    let y = net.block_conv(b, &y, "conv3", Conv::new(bott, blk.out_ch, 1), false)?;
    let y = residual(b, y, x, blk, net)?;
    if net.linear_out {
        Ok(y)
    } else {
        act(b, a, &y)
    }
}

/// timm's `PreBottleneck`: norm-act before each conv; the shortcut takes the first norm's output.
fn pre_bottleneck(b: &mut Builder, x: &Value, blk: &Block, net: &RegNet) -> Result<Value> {
    let bott = blk.bottleneck;
    let x = net.norm_act(&mut b.scope("norm1"), x, blk.in_ch)?;
    let y = net.block_conv(b, &x, "conv1", Conv::new(blk.in_ch, bott, 1), true)?;
    let y = net.norm_act(&mut b.scope("norm2"), &y, bott)?;
    let y = net.block_conv(b, &y, "conv2", grouped_conv(blk), true)?;
    let y = squeeze_excite(b, &y, blk, &net.act)?;
    let y = net.norm_act(&mut b.scope("norm3"), &y, bott)?;
    let y = net.block_conv(b, &y, "conv3", Conv::new(bott, blk.out_ch, 1), false)?;
    residual(b, y, &x, blk, net)
}

/// The grouped 3x3 conv2 of both block types.
fn grouped_conv(blk: &Block) -> Conv {
    Conv::new(blk.bottleneck, blk.bottleneck, 3)
        .stride(blk.stride)
        .dilation(blk.dilation.0)
        .groups(blk.bottleneck / blk.group_size)
}

/// `SEModule(bottleneck, rd_channels=se)`, when the block has one.
fn squeeze_excite(b: &mut Builder, y: &Value, blk: &Block, a: &str) -> Result<Value> {
    if blk.se == 0 {
        return Ok(y.clone());
    }
    let se = SqueezeExcite::se_module(blk.bottleneck, blk.se)
        .act(a)
        .init(Init::KaimingFanOut);
    se.apply(&mut b.scope("se"), y)
}

/// `y + downsample(x)`, or `y` alone when the block has no shortcut (RegNetZ's strided blocks).
fn residual(b: &mut Builder, y: Value, x: &Value, blk: &Block, net: &RegNet) -> Result<Value> {
    let short = shortcut(&mut b.scope("downsample"), x, blk, net)?;
    match short {
        Some(s) => Ok(layers::add(b, &y, &s)),
        None => Ok(y),
    }
}

/// timm's `create_shortcut`: identity, `downsample_conv`, `downsample_avg` (module `1` after the
/// pool), or none at all (RegNetZ); pre-activation shortcuts are bare convs.
fn shortcut(b: &mut Builder, x: &Value, blk: &Block, net: &RegNet) -> Result<Option<Value>> {
    let (d0, d1) = blk.dilation;
    if blk.in_ch == blk.out_ch && blk.stride == 1 && d0 == d1 {
        return Ok(Some(x.clone()));
    }
    let conv = |stride| init(Conv::new(blk.in_ch, blk.out_ch, 1).stride(stride));
    let project = |b: &mut Builder, x: &Value, c: Conv| {
        if net.preact {
            conv2d(b, x, c)
        } else {
            net.conv_norm_act(b, x, c, false)
        }
    };
    Ok(match net.downsample {
        Downsample::None => None,
        Downsample::Conv1x1 => Some(project(b, x, conv(blk.stride))?),
        Downsample::Avg => {
            let pooled = if blk.stride > 1 && d0 == 1 {
                let p = Pool2d::new(2, blk.stride, 0).ceil(true);
                p.count_include_pad(false).avg(b, x, blk.in_ch)?
            } else if d0 > 1 {
                avg_pool2d_same_s1(b, x, 2, blk.in_ch)?
            } else {
                x.clone()
            };
            Some(project(&mut b.scope(1), &pooled, conv(1))?)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// arguments and widths

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<RegNet> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a RegNet variant this build knows (timm's regnet.py: {})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let r = RegNetArgs::read(&a)?;
    let norm = NormKind::from_args(Some(&r.norm_layer), 1e-5, &r.act_layer, &a)?;
    if matches!(norm, NormKind::Evo(_)) {
        return Err(a.unsupported(
            "norm_layer",
            "RegNet builds BatchNorm2d and GroupNormAct norms, not EvoNorm",
        ));
    }
    if let Some(ch) = r.in_chans.filter(|_| a.explicit("in_chans")) {
        if ch != cfg.pretrained_cfg.input_size[0] {
            return Err(Error::invalid_model(format!(
                "model_args in_chans = {ch} but pretrained_cfg input_size has {} channels",
                cfg.pretrained_cfg.input_size[0]
            )));
        }
    }
    let output_stride = match b.output_stride() {
        Some(os) if ![8, 16, 32].contains(&os) => {
            return Err(Error::invalid_argument(format!(
                "option output_stride: {os} is not one of timm's RegNet output strides (8, 16, 32)"
            )))
        }
        Some(os) => os,
        None if [8, 16, 32].contains(&r.output_stride) => r.output_stride,
        None => return Err(a.unsupported("output_stride", "timm's RegNet takes 8, 16 or 32")),
    };
    let mut downsample = match r.downsample.as_deref() {
        Some("conv1x1") => Downsample::Conv1x1,
        Some("avg") => Downsample::Avg,
        None | Some("") => Downsample::None,
        Some(_) => return Err(a.unsupported("downsample", "timm takes conv1x1, avg or none")),
    };
    let se_ratio = r.se_ratio.unwrap_or(0.0);
    let mut stem_width = r.stem_width;
    let mut num_features = r.num_features.unwrap_or(0);

    // A ConvNormAct's conv weight is `<name>.conv.weight`, a pre-activation model's bare conv
    // `<name>.weight`.
    let conv_key = |name: &str| match r.preact {
        true => format!("{name}.weight"),
        false => format!("{name}.conv.weight"),
    };
    let from_weights = b.weights().is_some() && !RULE_ARGS.iter().any(|k| a.explicit(k));
    let stages = if from_weights {
        if !a.explicit("stem_width") {
            if let Some(s) = b.weight_shape(&conv_key("stem")) {
                stem_width = s[0];
            }
        }
        let se_ratio = a.explicit("se_ratio").then_some(se_ratio);
        let stages = stages_from_weights(b, se_ratio, stem_width, &conv_key)?;
        if !a.explicit("num_features") {
            num_features = b.weight_shape("final_conv.conv.weight").map_or(0, |s| s[0]);
        }
        if !a.explicit("downsample") {
            downsample = if b.has_weight(&conv_key("s1.b1.downsample")) {
                Downsample::Conv1x1
            } else if b.has_weight(&conv_key("s1.b1.downsample.1")) {
                Downsample::Avg
            } else {
                Downsample::None
            };
        }
        stages
    } else {
        stages_from_rule(&r, se_ratio, stem_width)?
    };
    for (i, st) in stages.iter().enumerate() {
        if st.group_size == 0 || !st.bottleneck.is_multiple_of(st.group_size) {
            return Err(Error::invalid_model(format!(
                "RegNet stage s{}: bottleneck width {} is not a multiple of the group width {}",
                i + 1,
                st.bottleneck,
                st.group_size
            )));
        }
    }
    Ok(RegNet {
        stem_width,
        stages,
        downsample,
        linear_out: r.linear_out,
        preact: r.preact,
        norm,
        num_features,
        act: r.act_layer,
        output_stride,
    })
}

/// `generate_regnet` (float32 tensors, as timm computes it) and `adjust_widths_groups_comp`.
fn stages_from_rule(r: &RegNetArgs, se_ratio: f64, stem_width: usize) -> Result<Vec<Stage>> {
    if !(r.wa >= 0.0 && r.w0 > 0 && r.wm > 1.0 && r.w0.is_multiple_of(8))
        || r.depth == 0
        || r.group_size == 0
    {
        return Err(Error::invalid_model(format!(
            "RegNet cfg w0={} wa={} wm={} depth={} group_size={} is outside timm's domain (wa >= 0, w0 > 0 and divisible by 8, wm > 1)",
            r.w0, r.wa, r.wm, r.depth, r.group_size
        )));
    }
    let (w0, wa, wm) = (r.w0 as f32, r.wa as f32, r.wm as f32);
    let ln_wm = r.wm.ln() as f32;
    let mut widths: Vec<i64> = (0..r.depth)
        .map(|i| {
            let exp = ((i as f32 * wa + w0) / w0).ln() / ln_wm;
            let w = (w0 * wm.powf(exp.round_ties_even()) / 8.0).round_ties_even() * 8.0;
            w as i64
        })
        .collect();
    widths.sort_unstable();
    let mut stages: Vec<(i64, usize)> = Vec::new();
    for w in widths {
        match stages.last_mut() {
            Some((lw, n)) if *lw == w => *n += 1,
            _ => stages.push((w, 1)),
        }
    }
    if stages.len() != 4 {
        return Err(Error::unsupported(format!(
            "RegNet cfg gives {} stages; timm builds exactly 4",
            stages.len()
        )));
    }
    let br = r.bottle_ratio;
    let mut in_ch = stem_width;
    Ok(stages
        .into_iter()
        .map(|(w, depth)| {
            let bott = (w as f64 * br) as usize;
            let g = r.group_size.min(bott.max(1));
            let bott = match r.group_min_ratio.filter(|&m| m != 0.0) {
                Some(m) => make_divisible(bott as f64, g, m),
                None => (py_round(bott as f64 / g as f64) * g as f64) as usize,
            };
            let width = (bott as f64 / br) as usize;
            // SE: int(round(in_chs * se_ratio)) of each block's input width.
            let se = (0..depth)
                .map(|j| {
                    let block_in = if j == 0 { in_ch } else { width };
                    py_round(block_in as f64 * se_ratio) as usize
                })
                .collect();
            in_ch = width;
            Stage {
                width,
                depth,
                bottleneck: py_round(width as f64 * br) as usize,
                group_size: g,
                se,
            }
        })
        .collect())
}

/// Stage shapes from the weights' `s<i>.b<j>.conv<k>` conv weights (`conv_key` spells a conv's
/// tensor name); SE widths from `se.fc1.weight`, or from `se_ratio` when config.json gives it (so
/// a file without SE tensors then fails naming the missing one).
fn stages_from_weights(
    b: &Builder,
    se_ratio: Option<f64>,
    stem_width: usize,
    conv_key: &dyn Fn(&str) -> String,
) -> Result<Vec<Stage>> {
    let mut stages = Vec::new();
    let mut in_ch = stem_width;
    for s in 1..=4 {
        let key = |j: usize, t: &str| conv_key(&format!("s{s}.b{j}.{t}"));
        let depth = (1..)
            .take_while(|&j| b.has_weight(&key(j, "conv1")))
            .count();
        let shapes = ["conv1", "conv2", "conv3"].map(|c| b.weight_shape(&key(1, c)));
        let [Some(c1), Some(c2), Some(c3)] = shapes else {
            return Err(Error::invalid_model(format!(
                "the weights have no RegNet stage s{s} (`{}`, conv2, conv3)",
                key(1, "conv1")
            )));
        };
        if c1.len() != 4 || c2.len() != 4 || c3.len() != 4 {
            return Err(Error::invalid_model(format!(
                "RegNet conv weights of stage s{s} are not 4-D"
            )));
        }
        let width = c3[0];
        let se = (1..=depth)
            .map(|j| match se_ratio {
                None => b
                    .weight_shape(&format!("s{s}.b{j}.se.fc1.weight"))
                    .map_or(0, |v| v[0]),
                Some(r) => {
                    let block_in = if j == 1 { in_ch } else { width };
                    py_round(block_in as f64 * r) as usize
                }
            })
            .collect();
        in_ch = width;
        stages.push(Stage {
            width,
            depth,
            bottleneck: c1[0],
            group_size: c2[1].max(1),
            se,
        });
    }
    Ok(stages)
}
