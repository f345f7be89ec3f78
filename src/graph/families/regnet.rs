//! RegNet X / Y / Z (timm's `regnet.py`, post-activation `Bottleneck` blocks): `regnetx_002` ..
//! `regnetx_320`, `regnety_002` .. `regnety_2560` (SE), the torchvision-rounded `_tv` variants
//! and `regnetz_005` / `regnetz_040[_h]`.
//!
//! RegNet widths come from a quantised linear rule (`generate_regnet` + width/group
//! adjustment). With weights, stage depths, widths, bottleneck and group widths, SE widths,
//! stem width, shortcut type and the final 1x1 conv are read from the tensors themselves;
//! without weights the rule is evaluated as timm does (float32 arithmetic, the same rounding).
//! Activations, `linear_out` and BatchNorm eps come from timm's cfg and `model_args`.

use serde_json::{Map, Value as Json};

use super::convnext::{
    arg_bool, arg_f32, arg_str, arg_usize, check_args, config_json, global_pool, Pcfg,
};
use super::layers::{self, Conv, Pad};
use super::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

pub const FAMILY: Family = Family {
    name: "regnet",
    examples: "regnetx_002..regnetx_320, regnety_002..regnety_2560, regnetz_005, regnetz_040[_h]",
    matches,
    build: |b, cfg| super::with_output(b, cfg, build),
    default_config,
    any_size: false,
};

fn matches(arch: &str) -> bool {
    ["regnetx_", "regnety_", "regnetv_"]
        .iter()
        .any(|p| arch.starts_with(p))
        || ["regnetz_005", "regnetz_040", "regnetz_040_h"].contains(&arch)
}

/// timm's `RegNetCfg`.
#[derive(Debug, Clone)]
struct RegCfg {
    depth: usize,
    w0: usize,
    wa: f32,
    wm: f32,
    group_size: usize,
    bottle_ratio: f32,
    se_ratio: f32,
    group_min_ratio: f32,
    stem_width: usize,
    downsample: Option<String>,
    linear_out: bool,
    preact: bool,
    num_features: usize,
    act_layer: String,
    norm_layer: String,
}

impl Default for RegCfg {
    fn default() -> Self {
        RegCfg {
            depth: 21,
            w0: 80,
            wa: 42.63,
            wm: 2.66,
            group_size: 24,
            bottle_ratio: 1.0,
            se_ratio: 0.0,
            group_min_ratio: 0.0,
            stem_width: 32,
            downsample: Some("conv1x1".into()),
            linear_out: false,
            preact: false,
            num_features: 0,
            act_layer: "relu".into(),
            norm_layer: "batchnorm".into(),
        }
    }
}

/// timm 1.0.31's `model_cfgs` for the architectures of `regnet.py`.
fn table(arch: &str) -> Option<RegCfg> {
    let c = |w0, wa, wm, group_size, depth, se: bool| RegCfg {
        w0,
        wa,
        wm,
        group_size,
        depth,
        se_ratio: if se { 0.25 } else { 0.0 },
        ..RegCfg::default()
    };
    let tv = |r: RegCfg| RegCfg {
        group_min_ratio: 0.9,
        ..r
    };
    let z = |w0, wa, wm, group_size, depth, num_features| RegCfg {
        depth,
        w0,
        wa,
        wm,
        group_size,
        bottle_ratio: 4.0,
        se_ratio: 0.25,
        downsample: None,
        linear_out: true,
        num_features,
        act_layer: "silu".into(),
        ..RegCfg::default()
    };
    Some(match arch {
        "regnetx_002" => c(24, 36.44, 2.49, 8, 13, false),
        "regnetx_004" => c(24, 24.48, 2.54, 16, 22, false),
        "regnetx_004_tv" => tv(c(24, 24.48, 2.54, 16, 22, false)),
        "regnetx_006" => c(48, 36.97, 2.24, 24, 16, false),
        "regnetx_008" => c(56, 35.73, 2.28, 16, 16, false),
        "regnetx_016" => c(80, 34.01, 2.25, 24, 18, false),
        "regnetx_032" => c(88, 26.31, 2.25, 48, 25, false),
        "regnetx_040" => c(96, 38.65, 2.43, 40, 23, false),
        "regnetx_064" => c(184, 60.83, 2.07, 56, 17, false),
        "regnetx_080" => c(80, 49.56, 2.88, 120, 23, false),
        "regnetx_120" => c(168, 73.36, 2.37, 112, 19, false),
        "regnetx_160" => c(216, 55.59, 2.1, 128, 22, false),
        "regnetx_320" => c(320, 69.86, 2.0, 168, 23, false),
        "regnety_002" => c(24, 36.44, 2.49, 8, 13, true),
        "regnety_004" => c(48, 27.89, 2.09, 8, 16, true),
        "regnety_006" => c(48, 32.54, 2.32, 16, 15, true),
        "regnety_008" => c(56, 38.84, 2.4, 16, 14, true),
        "regnety_008_tv" => tv(c(56, 38.84, 2.4, 16, 14, true)),
        "regnety_016" => c(48, 20.71, 2.65, 24, 27, true),
        "regnety_032" => c(80, 42.63, 2.66, 24, 21, true),
        "regnety_040" => c(96, 31.41, 2.24, 64, 22, true),
        "regnety_064" => c(112, 33.22, 2.27, 72, 25, true),
        "regnety_080" => c(192, 76.82, 2.19, 56, 17, true),
        "regnety_080_tv" => tv(c(192, 76.82, 2.19, 56, 17, true)),
        "regnety_120" => c(168, 73.36, 2.37, 112, 19, true),
        "regnety_160" => c(200, 106.23, 2.48, 112, 18, true),
        "regnety_320" => c(232, 115.89, 2.53, 232, 20, true),
        "regnety_640" => c(352, 147.48, 2.4, 328, 20, true),
        "regnety_1280" => c(456, 160.83, 2.52, 264, 27, true),
        "regnety_2560" => c(640, 230.83, 2.53, 373, 27, true),
        "regnety_040_sgn" => RegCfg {
            act_layer: "silu".into(),
            norm_layer: "groupnorm".into(),
            ..c(96, 31.41, 2.24, 64, 22, true)
        },
        "regnetv_040" => RegCfg {
            preact: true,
            act_layer: "silu".into(),
            ..c(96, 31.41, 2.24, 64, 22, true)
        },
        "regnetv_064" => RegCfg {
            preact: true,
            act_layer: "silu".into(),
            downsample: Some("avg".into()),
            ..c(112, 33.22, 2.27, 72, 25, true)
        },
        "regnetz_005" => z(16, 10.7, 2.51, 4, 21, 1024),
        "regnetz_040" => z(48, 14.5, 2.226, 8, 28, 0),
        "regnetz_040_h" => z(48, 14.5, 2.226, 8, 28, 1536),
        _ => return None,
    })
}

const IGNORED_ARGS: &[&str] = &[
    "num_classes",
    "global_pool",
    "drop_rate",
    "drop_path_rate",
    "zero_init_last",
    "pretrained_cfg_overlay",
];
const STRUCTURE_ARGS: &[&str] = &[
    "in_chans",
    "output_stride",
    "depth",
    "w0",
    "wa",
    "wm",
    "group_size",
    "bottle_ratio",
    "se_ratio",
    "group_min_ratio",
    "stem_width",
    "downsample",
    "linear_out",
    "preact",
    "num_features",
    "act_layer",
    "norm_layer",
];

/// timm's `make_divisible(v, divisor, round_limit)`.
fn make_divisible(v: f64, divisor: usize, round_limit: f64) -> usize {
    super::convnext::make_divisible(v, divisor, round_limit)
}

/// Python's `round()` on a double: half to even.
fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// Per-stage (width, depth, bottleneck width, group width) from the cfg, exactly as timm's
/// `generate_regnet` (float32 tensors) and `adjust_widths_groups_comp` compute them.
fn stages_from_cfg(c: &RegCfg) -> Result<Vec<Stage>> {
    if !(c.wa >= 0.0
        && c.w0 > 0
        && c.wm > 1.0
        && c.w0.is_multiple_of(8)
        && c.depth > 0
        && c.group_size > 0)
    {
        return Err(Error::invalid_model(format!(
            "RegNet cfg w0={} wa={} wm={} depth={} group_size={} is outside timm's domain (wa >= 0, w0 > 0 and divisible by 8, wm > 1)",
            c.w0, c.wa, c.wm, c.depth, c.group_size
        )));
    }
    let w0 = c.w0 as f32;
    let ln_wm = (c.wm as f64).ln() as f32;
    let mut widths: Vec<i64> = Vec::with_capacity(c.depth);
    for i in 0..c.depth {
        let cont = i as f32 * c.wa + w0;
        let exp = ((cont / w0).ln() / ln_wm).round_ties_even();
        let w = ((w0 * c.wm.powf(exp)) / 8.0).round_ties_even() * 8.0;
        widths.push(w as i64);
    }
    let mut stages: Vec<(i64, usize)> = Vec::new();
    let mut sorted = widths.clone();
    sorted.sort_unstable();
    for w in sorted {
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
    let b = c.bottle_ratio as f64;
    Ok(stages
        .into_iter()
        .map(|(w, depth)| {
            let bott = (w as f64 * b) as usize;
            let g = c.group_size.min(bott.max(1));
            let bott = if c.group_min_ratio != 0.0 {
                make_divisible(bott as f64, g, c.group_min_ratio as f64)
            } else {
                (py_round(bott as f64 / g as f64) * g as f64) as usize
            };
            let width = (bott as f64 / b) as usize;
            // Bottleneck: int(round(out_chs * bottle_ratio)), groups = bottleneck // group_size.
            let bottleneck = py_round(width as f64 * b) as usize;
            Stage {
                width,
                depth,
                bottleneck,
                group_width: g,
            }
        })
        .collect())
}

#[derive(Debug, Clone)]
struct Stage {
    width: usize,
    depth: usize,
    bottleneck: usize,
    group_width: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shortcut {
    Conv,
    Avg,
    None,
}

struct Arch {
    stem_width: usize,
    stages: Vec<Stage>,
    /// SE reduction width for each block's input width, `round(in · se_ratio)`; 0 without SE.
    se_ratio: f32,
    /// SE widths read from the weights, by (stage, block).
    se_from_weights: Option<Vec<Vec<usize>>>,
    shortcut: Shortcut,
    linear_out: bool,
    num_features: usize,
    act: String,
}

fn resolve(b: &Builder, cfg: &ModelConfig) -> Result<Arch> {
    let name = cfg.architecture.as_str();
    let mut c = table(name).ok_or_else(|| {
        Error::unsupported(format!(
            "`{name}` is not a RegNet variant this build knows (known: regnetx_002..320, regnety_002..2560, \
             regnetx_004_tv, regnety_008_tv, regnety_080_tv, regnetz_005, regnetz_040, regnetz_040_h)"
        ))
    })?;
    let m: &Map<String, Json> = &cfg.model_args;
    check_args(m, name, STRUCTURE_ARGS, IGNORED_ARGS)?;
    let explicit = |k: &str| m.contains_key(k);
    if let Some(v) = arg_usize(m, "depth")? {
        c.depth = v;
    }
    if let Some(v) = arg_usize(m, "w0")? {
        c.w0 = v;
    }
    if let Some(v) = arg_f32(m, "wa")? {
        c.wa = v;
    }
    if let Some(v) = arg_f32(m, "wm")? {
        c.wm = v;
    }
    if let Some(v) = arg_usize(m, "group_size")? {
        c.group_size = v;
    }
    if let Some(v) = arg_f32(m, "bottle_ratio")? {
        c.bottle_ratio = v;
    }
    if explicit("se_ratio") {
        c.se_ratio = arg_f32(m, "se_ratio")?.unwrap_or(0.0);
    }
    if explicit("group_min_ratio") {
        c.group_min_ratio = arg_f32(m, "group_min_ratio")?.unwrap_or(0.0);
    }
    if let Some(v) = arg_usize(m, "stem_width")? {
        c.stem_width = v;
    }
    if explicit("downsample") {
        c.downsample = arg_str(m, "downsample")?.filter(|s| !s.is_empty());
    }
    if let Some(v) = arg_bool(m, "linear_out")? {
        c.linear_out = v;
    }
    if let Some(v) = arg_bool(m, "preact")? {
        c.preact = v;
    }
    if explicit("num_features") {
        c.num_features = m.get("num_features").and_then(Json::as_u64).unwrap_or(0) as usize;
    }
    if let Some(v) = arg_str(m, "act_layer")? {
        c.act_layer = v;
    }
    if let Some(v) = arg_str(m, "norm_layer")? {
        c.norm_layer = v;
    }
    if let Some(os) = arg_usize(m, "output_stride")? {
        if os != 32 {
            return Err(Error::unsupported(format!(
                "RegNet output_stride {os} (dilated stages) is not supported by the native graph"
            )));
        }
    }
    if let Some(ch) = arg_usize(m, "in_chans")? {
        if ch != cfg.pretrained_cfg.input_size[0] {
            return Err(Error::invalid_model(format!(
                "model_args in_chans = {ch} but pretrained_cfg input_size has {} channels",
                cfg.pretrained_cfg.input_size[0]
            )));
        }
    }
    if c.preact {
        return Err(Error::unsupported(format!("`{name}`: pre-activation RegNet (regnetv, preact=true) is not supported by the native graph")));
    }
    if !matches!(c.norm_layer.as_str(), "batchnorm" | "batchnorm2d") {
        return Err(Error::unsupported(format!(
            "`{name}`: RegNet norm_layer `{}` is not supported (only batchnorm)",
            c.norm_layer
        )));
    }
    let mut shortcut = match c.downsample.as_deref() {
        Some("conv1x1") => Shortcut::Conv,
        Some("avg") => Shortcut::Avg,
        None => Shortcut::None,
        Some(other) => {
            return Err(Error::unsupported(format!(
                "RegNet downsample `{other}` is not supported (conv1x1, avg or none)"
            )))
        }
    };

    // Widths from the rule; the weights override what they record unless model_args set it.
    let rule_args = [
        "depth",
        "w0",
        "wa",
        "wm",
        "group_size",
        "bottle_ratio",
        "group_min_ratio",
    ];
    let from_rule = stages_from_cfg(&c);
    let mut stem_width = c.stem_width;
    let mut num_features = c.num_features;
    let mut se_from_weights = None;
    let stages = match b.weights() {
        Some(_) if !rule_args.iter().any(|k| explicit(k)) => {
            let mut stages = Vec::new();
            let mut se = Vec::new();
            for s in 1..=4 {
                let blk = |j: usize, t: &str| format!("s{s}.b{j}.{t}");
                let depth = (1..)
                    .take_while(|&j| b.has_weight(&blk(j, "conv1.conv.weight")))
                    .count();
                let (Some(c1), Some(c2), Some(c3)) = (
                    b.weight_shape(&blk(1, "conv1.conv.weight")),
                    b.weight_shape(&blk(1, "conv2.conv.weight")),
                    b.weight_shape(&blk(1, "conv3.conv.weight")),
                ) else {
                    return Err(Error::invalid_model(format!(
                        "the weights have no RegNet stage s{s} (`{}`, conv2, conv3)",
                        blk(1, "conv1.conv.weight")
                    )));
                };
                if c1.len() != 4 || c2.len() != 4 || c3.len() != 4 {
                    return Err(Error::invalid_model(format!(
                        "RegNet conv weights of stage s{s} are not 4-D"
                    )));
                }
                stages.push(Stage {
                    width: c3[0],
                    depth,
                    bottleneck: c1[0],
                    group_width: c2[1].max(1),
                });
                se.push(
                    (1..=depth)
                        .map(|j| b.weight_shape(&blk(j, "se.fc1.weight")).map_or(0, |v| v[0]))
                        .collect(),
                );
            }
            if !explicit("se_ratio") {
                se_from_weights = Some(se);
            }
            if !explicit("stem_width") {
                if let Some(s) = b.weight_shape("stem.conv.weight") {
                    stem_width = s[0];
                }
            }
            if !explicit("num_features") {
                num_features = b.weight_shape("final_conv.conv.weight").map_or(0, |s| s[0]);
            }
            if !explicit("downsample") {
                shortcut = if b.has_weight("s1.b1.downsample.conv.weight") {
                    Shortcut::Conv
                } else if b.has_weight("s1.b1.downsample.1.conv.weight") {
                    Shortcut::Avg
                } else {
                    Shortcut::None
                };
            }
            stages
        }
        _ => from_rule?,
    };
    Ok(Arch {
        stem_width,
        stages,
        se_ratio: c.se_ratio,
        se_from_weights,
        shortcut,
        linear_out: c.linear_out,
        num_features,
        act: c.act_layer,
    })
}

/// timm's RegNet conv init: normal(0, sqrt(2 / fan_out)), fan_out = k·k·out / groups.
fn conv_bn(b: &mut Builder, x: &Value, prefix: &str, c: Conv, zero_gamma: bool) -> Result<Value> {
    let fan_out = c.kernel.0 * c.kernel.1 * c.out_ch / c.groups;
    let std = (2.0 / fan_out.max(1) as f64).sqrt() as f32;
    b.param(
        &format!("{prefix}.conv.weight"),
        &[c.out_ch, c.in_ch / c.groups, c.kernel.0, c.kernel.1],
        Init::Normal(std),
    )?;
    let y = layers::conv2d(b, x, &format!("{prefix}.conv"), c)?;
    if zero_gamma {
        // Bottleneck.zero_init_last: each residual branch starts as zero.
        b.param(&format!("{prefix}.bn.weight"), &[c.out_ch], Init::Zeros)?;
    }
    layers::batch_norm(b, &y, &format!("{prefix}.bn"), c.out_ch, 1e-5)
}

fn se(b: &mut Builder, x: &Value, prefix: &str, ch: usize, rd: usize, act: &str) -> Result<Value> {
    let pooled = layers::global_avg_pool(b, x);
    let conv = |b: &mut Builder, x: &Value, name: &str, i: usize, o: usize| -> Result<Value> {
        let std = (2.0 / o as f64).sqrt() as f32;
        b.param(
            &format!("{prefix}.{name}.weight"),
            &[o, i, 1, 1],
            Init::Normal(std),
        )?;
        layers::conv2d(
            b,
            x,
            &format!("{prefix}.{name}"),
            Conv::new(i, o, 1).bias(true),
        )
    };
    let s = conv(b, &pooled, "fc1", ch, rd)?;
    let s = layers::act(b, act, &s)?;
    let s = conv(b, &s, "fc2", rd, ch)?;
    let g = layers::sigmoid(b, &s);
    Ok(layers::mul(b, x, &g))
}

fn build(b: &mut Builder, cfg: &ModelConfig, output: OutputKind) -> Result<(Value, usize)> {
    let a = resolve(b, cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let pool = cfg.global_pool.clone().unwrap_or_else(|| "avg".into());

    let x = b.input();
    let x = conv_bn(
        b,
        &x,
        "stem",
        Conv::new(in_ch, a.stem_width, 3).stride(2).pad(Pad::Sym(1)),
        false,
    )?;
    let mut x = layers::act(b, &a.act, &x)?;
    let mut prev = a.stem_width;
    for (si, st) in a.stages.iter().enumerate() {
        if !st.bottleneck.is_multiple_of(st.group_width) {
            return Err(Error::invalid_model(format!(
                "RegNet stage s{}: bottleneck width {} is not a multiple of the group width {}",
                si + 1,
                st.bottleneck,
                st.group_width
            )));
        }
        for j in 0..st.depth {
            let p = format!("s{}.b{}", si + 1, j + 1);
            let (in_w, stride) = if j == 0 { (prev, 2) } else { (st.width, 1) };
            let bott = st.bottleneck;
            let y = conv_bn(
                b,
                &x,
                &format!("{p}.conv1"),
                Conv::new(in_w, bott, 1),
                false,
            )?;
            let y = layers::act(b, &a.act, &y)?;
            let groups = bott / st.group_width;
            let y = conv_bn(
                b,
                &y,
                &format!("{p}.conv2"),
                Conv::new(bott, bott, 3)
                    .stride(stride)
                    .pad(Pad::Sym(1))
                    .groups(groups),
                false,
            )?;
            let mut y = layers::act(b, &a.act, &y)?;
            let rd = match &a.se_from_weights {
                Some(w) => w[si][j],
                None => py_round(in_w as f64 * a.se_ratio as f64) as usize,
            };
            if rd > 0 {
                y = se(b, &y, &format!("{p}.se"), bott, rd, &a.act)?;
            }
            let y = conv_bn(
                b,
                &y,
                &format!("{p}.conv3"),
                Conv::new(bott, st.width, 1),
                true,
            )?;
            let needs_proj = in_w != st.width || stride != 1;
            let sum = match (needs_proj, a.shortcut) {
                (false, _) => Some(layers::add(b, &y, &x)),
                (true, Shortcut::Conv) => {
                    let s = conv_bn(
                        b,
                        &x,
                        &format!("{p}.downsample"),
                        Conv::new(in_w, st.width, 1).stride(stride).pad(Pad::Sym(0)),
                        false,
                    )?;
                    Some(layers::add(b, &y, &s))
                }
                (true, Shortcut::Avg) => {
                    let pooled = b.op(
                        "AveragePool",
                        &[&x],
                        vec![
                            ("kernel_shape", Attr::Ints(vec![2, 2])),
                            ("strides", Attr::Ints(vec![stride as i64; 2])),
                            ("ceil_mode", Attr::Int(1)),
                            ("count_include_pad", Attr::Int(0)),
                        ],
                    );
                    let s = conv_bn(
                        b,
                        &pooled,
                        &format!("{p}.downsample.1"),
                        Conv::new(in_w, st.width, 1),
                        false,
                    )?;
                    Some(layers::add(b, &y, &s))
                }
                (true, Shortcut::None) => None,
            };
            let y = sum.unwrap_or(y);
            x = if a.linear_out {
                y
            } else {
                layers::act(b, &a.act, &y)?
            };
        }
        prev = st.width;
    }
    let nf = if a.num_features > 0 {
        let y = conv_bn(
            b,
            &x,
            "final_conv",
            Conv::new(prev, a.num_features, 1),
            false,
        )?;
        x = layers::act(b, &a.act, &y)?;
        a.num_features
    } else {
        if a.linear_out {
            x = layers::act(b, &a.act, &x)?;
        }
        prev
    };
    let (feat, mult) = global_pool(b, &x, &pool, true)?;
    let width = nf * mult;
    if output == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((feat, width));
    }
    let logits = layers::linear_2d(
        b,
        &feat,
        "head.fc",
        width,
        cfg.num_classes,
        true,
        Init::Normal(0.01),
    )?;
    Ok((logits, cfg.num_classes))
}

fn default_config(arch: &str) -> Option<Json> {
    let c = table(arch)?;
    if c.preact || c.norm_layer != "batchnorm" {
        return None;
    }
    let stages = stages_from_cfg(&c).ok()?;
    let nf = if c.num_features > 0 {
        c.num_features
    } else {
        stages[3].width
    };
    const IMAGENET: ([f64; 3], [f64; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    let p = |tag, size, test_size, crop_pct, test_crop_pct, license| Pcfg {
        tag,
        size,
        test_size,
        crop_pct,
        test_crop_pct,
        crop_mode: "center",
        norm: IMAGENET,
        license,
    };
    let pc = match arch {
        "regnetx_002" | "regnetx_004" | "regnetx_006" | "regnetx_040" | "regnetx_064"
        | "regnetx_120" | "regnety_002" | "regnety_006" | "regnety_008" => {
            p("pycls_in1k", 224, None, 0.875, None, "mit")
        }
        "regnetx_004_tv" | "regnetx_008" | "regnetx_016" | "regnetx_032" | "regnetx_080"
        | "regnetx_160" | "regnetx_320" | "regnety_004" | "regnety_008_tv" | "regnety_016"
        | "regnety_080_tv" | "regnety_320" => p("tv2_in1k", 224, None, 0.965, None, "bsd-3-clause"),
        "regnety_032" => p("ra_in1k", 224, Some(288), 0.95, Some(1.0), "apache-2.0"),
        "regnety_040" | "regnety_064" | "regnety_080" => {
            p("ra3_in1k", 224, Some(288), 0.95, Some(1.0), "apache-2.0")
        }
        "regnety_120" | "regnety_160" => p(
            "sw_in12k_ft_in1k",
            224,
            Some(288),
            0.95,
            Some(1.0),
            "apache-2.0",
        ),
        "regnety_1280" => p("swag_ft_in1k", 384, None, 1.0, None, "cc-by-nc-4.0"),
        "regnety_640" | "regnety_2560" => p("seer_ft_in1k", 384, None, 1.0, None, "seer-license"),
        "regnetz_005" => p("untrained", 224, Some(288), 0.95, Some(1.0), "apache-2.0"),
        "regnetz_040" | "regnetz_040_h" => {
            p("ra3_in1k", 256, Some(320), 1.0, Some(1.0), "apache-2.0")
        }
        _ => return None,
    };
    Some(config_json(arch, &pc, nf, "stem.conv"))
}
