//! EfficientNet, EfficientNet-Lite, EfficientNet-EdgeTPU, MobileNet-V2 and MobileNet-V3 as timm 1.0.31
//! builds them (`efficientnet.py`, `mobilenetv3.py`, `_efficientnet_builder.py`,
//! `_efficientnet_blocks.py`).
//!
//! timm describes these networks with block-definition strings (`ir_r2_k3_s2_e6_c24_se0.25`) that
//! its builder scales by the channel / depth multipliers. The same strings are decoded here, so a
//! model without weights (`pretrained=false`) gets timm's exact structure. With weights, what the
//! tensors determine is read from them — depth per stage, widths, expansion, kernel sizes, SE
//! presence and width, stem and head widths — and only what they cannot tell (strides, activations,
//! skip rules, BN eps, padding style, head type) comes from the architecture and its `model_args`.

use serde_json::{json, Map, Value as Json};

use super::layers::{self, Conv, Pad};
use super::{Attr, Builder, Family, Init, OutputKind, Value};

pub const FAMILY: Family = Family {
    name: "efficientnet",
    examples: EXAMPLES,
    matches,
    build: |b, cfg| super::with_output(b, cfg, build),
    default_config,
    any_size: false,
};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// timm's `_gen_*` function an architecture comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gen {
    EfficientNet,
    Lite,
    Edge,
    /// `fix_stem_head` as the `*d` variants pass it.
    MobileNetV2 {
        fix_stem_head: bool,
    },
    MobileNetV3 {
        small: bool,
        minimal: bool,
    },
    MobileNetV3Rw,
    Test,
}

/// One registered architecture: its generator, the multipliers its `@register_model` function
/// passes, whether it is a TensorFlow port (`bn_eps=1e-3`, `pad_type='same'`), and timm's default
/// pretrained cfg (for models created from a bare name).
struct Arch {
    name: &'static str,
    gen: Gen,
    channel_multiplier: f64,
    depth_multiplier: f64,
    tf: bool,
    cfg: DefaultCfg,
}

/// timm 1.0.31 `default_cfgs` entry of an architecture's default tag.
struct DefaultCfg {
    tag: &'static str,
    res: usize,
    test_res: Option<usize>,
    interpolation: &'static str,
    crop_pct: f64,
    test_crop_pct: Option<f64>,
    crop_mode: &'static str,
    /// mean = std = 0.5 (TF ports and some timm-trained weights) instead of ImageNet's.
    half_mean: bool,
    pool: usize,
}

#[allow(clippy::too_many_arguments)]
const fn cfg(
    _name: &'static str,
    tag: &'static str,
    res: usize,
    test_res: Option<usize>,
    interpolation: &'static str,
    crop_pct: f64,
    test_crop_pct: Option<f64>,
    crop_mode: &'static str,
    half_mean: bool,
    pool: usize,
) -> DefaultCfg {
    DefaultCfg {
        tag,
        res,
        test_res,
        interpolation,
        crop_pct,
        test_crop_pct,
        crop_mode,
        half_mean,
        pool,
    }
}

const fn arch(name: &'static str, gen: Gen, cm: f64, dm: f64, tf: bool, cfg: DefaultCfg) -> Arch {
    Arch {
        name,
        gen,
        channel_multiplier: cm,
        depth_multiplier: dm,
        tf,
        cfg,
    }
}

use Gen::*;
const MNV2: Gen = MobileNetV2 {
    fix_stem_head: false,
};
const MNV2D: Gen = MobileNetV2 {
    fix_stem_head: true,
};
const MNV3L: Gen = MobileNetV3 {
    small: false,
    minimal: false,
};
const MNV3LM: Gen = MobileNetV3 {
    small: false,
    minimal: true,
};
const MNV3S: Gen = MobileNetV3 {
    small: true,
    minimal: false,
};
const MNV3SM: Gen = MobileNetV3 {
    small: true,
    minimal: true,
};

/// Every architecture this builder knows, with the arguments its timm register function passes.
#[rustfmt::skip]
static ARCHS: &[Arch] = &[
    arch("efficientnet_b0", EfficientNet, 1.0, 1.0, false, cfg("efficientnet_b0", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("efficientnet_b1", EfficientNet, 1.0, 1.1, false, cfg("efficientnet_b1", "ra4_e3600_r240_in1k", 240, Some(288), "bicubic", 0.9, Some(1.0), "center", true, 8)),
    arch("efficientnet_b2", EfficientNet, 1.1, 1.2, false, cfg("efficientnet_b2", "ra_in1k", 256, Some(288), "bicubic", 0.875, Some(1.0), "center", false, 8)),
    arch("efficientnet_b3", EfficientNet, 1.2, 1.4, false, cfg("efficientnet_b3", "ra2_in1k", 288, Some(320), "bicubic", 0.875, Some(1.0), "center", false, 9)),
    arch("efficientnet_b4", EfficientNet, 1.4, 1.8, false, cfg("efficientnet_b4", "ra2_in1k", 320, Some(384), "bicubic", 0.875, Some(1.0), "center", false, 10)),
    arch("efficientnet_b5", EfficientNet, 1.6, 2.2, false, cfg("efficientnet_b5", "sw_in12k_ft_in1k", 448, None, "bicubic", 1.0, None, "squash", false, 14)),
    arch("efficientnet_b6", EfficientNet, 1.8, 2.6, false, cfg("efficientnet_b6", "untrained", 528, None, "bicubic", 0.942, None, "center", false, 17)),
    arch("efficientnet_b7", EfficientNet, 2.0, 3.1, false, cfg("efficientnet_b7", "untrained", 600, None, "bicubic", 0.949, None, "center", false, 19)),
    arch("efficientnet_b8", EfficientNet, 2.2, 3.6, false, cfg("efficientnet_b8", "untrained", 672, None, "bicubic", 0.954, None, "center", false, 21)),
    arch("efficientnet_l2", EfficientNet, 4.3, 5.3, false, cfg("efficientnet_l2", "untrained", 800, None, "bicubic", 0.961, None, "center", false, 25)),
    arch("efficientnet_lite0", Lite, 1.0, 1.0, false, cfg("efficientnet_lite0", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("efficientnet_lite1", Lite, 1.0, 1.1, false, cfg("efficientnet_lite1", "untrained", 240, None, "bicubic", 0.882, None, "center", false, 8)),
    arch("efficientnet_lite2", Lite, 1.1, 1.2, false, cfg("efficientnet_lite2", "untrained", 260, None, "bicubic", 0.89, None, "center", false, 9)),
    arch("efficientnet_lite3", Lite, 1.2, 1.4, false, cfg("efficientnet_lite3", "untrained", 300, None, "bicubic", 0.904, None, "center", false, 10)),
    arch("efficientnet_lite4", Lite, 1.4, 1.8, false, cfg("efficientnet_lite4", "untrained", 380, None, "bicubic", 0.922, None, "center", false, 12)),
    arch("tf_efficientnet_b0", EfficientNet, 1.0, 1.0, true, cfg("tf_efficientnet_b0", "ns_jft_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("tf_efficientnet_b1", EfficientNet, 1.0, 1.1, true, cfg("tf_efficientnet_b1", "ns_jft_in1k", 240, None, "bicubic", 0.882, None, "center", false, 8)),
    arch("tf_efficientnet_b2", EfficientNet, 1.1, 1.2, true, cfg("tf_efficientnet_b2", "ns_jft_in1k", 260, None, "bicubic", 0.89, None, "center", false, 9)),
    arch("tf_efficientnet_b3", EfficientNet, 1.2, 1.4, true, cfg("tf_efficientnet_b3", "ns_jft_in1k", 300, None, "bicubic", 0.904, None, "center", false, 10)),
    arch("tf_efficientnet_b4", EfficientNet, 1.4, 1.8, true, cfg("tf_efficientnet_b4", "ns_jft_in1k", 380, None, "bicubic", 0.922, None, "center", false, 12)),
    arch("tf_efficientnet_b5", EfficientNet, 1.6, 2.2, true, cfg("tf_efficientnet_b5", "ns_jft_in1k", 456, None, "bicubic", 0.934, None, "center", false, 15)),
    arch("tf_efficientnet_b6", EfficientNet, 1.8, 2.6, true, cfg("tf_efficientnet_b6", "ns_jft_in1k", 528, None, "bicubic", 0.942, None, "center", false, 17)),
    arch("tf_efficientnet_b7", EfficientNet, 2.0, 3.1, true, cfg("tf_efficientnet_b7", "ns_jft_in1k", 600, None, "bicubic", 0.949, None, "center", false, 19)),
    arch("tf_efficientnet_b8", EfficientNet, 2.2, 3.6, true, cfg("tf_efficientnet_b8", "ap_in1k", 672, None, "bicubic", 0.954, None, "center", true, 21)),
    arch("tf_efficientnet_l2", EfficientNet, 4.3, 5.3, true, cfg("tf_efficientnet_l2", "ns_jft_in1k_475", 475, None, "bicubic", 0.936, None, "center", false, 15)),
    arch("tf_efficientnet_lite0", Lite, 1.0, 1.0, true, cfg("tf_efficientnet_lite0", "in1k", 224, None, "bicubic", 0.875, None, "center", true, 7)),
    arch("tf_efficientnet_lite1", Lite, 1.0, 1.1, true, cfg("tf_efficientnet_lite1", "in1k", 240, None, "bicubic", 0.882, None, "center", true, 8)),
    arch("tf_efficientnet_lite2", Lite, 1.1, 1.2, true, cfg("tf_efficientnet_lite2", "in1k", 260, None, "bicubic", 0.89, None, "center", true, 9)),
    arch("tf_efficientnet_lite3", Lite, 1.2, 1.4, true, cfg("tf_efficientnet_lite3", "in1k", 300, None, "bilinear", 0.904, None, "center", true, 10)),
    arch("tf_efficientnet_lite4", Lite, 1.4, 1.8, true, cfg("tf_efficientnet_lite4", "in1k", 380, None, "bilinear", 0.92, None, "center", true, 12)),
    arch("efficientnet_es", Edge, 1.0, 1.0, false, cfg("efficientnet_es", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("efficientnet_em", Edge, 1.0, 1.1, false, cfg("efficientnet_em", "ra2_in1k", 240, None, "bicubic", 0.882, None, "center", false, 8)),
    arch("efficientnet_el", Edge, 1.2, 1.4, false, cfg("efficientnet_el", "ra_in1k", 300, None, "bicubic", 0.904, None, "center", false, 10)),
    arch("tf_efficientnet_es", Edge, 1.0, 1.0, true, cfg("tf_efficientnet_es", "in1k", 224, None, "bicubic", 0.875, None, "center", true, 7)),
    arch("tf_efficientnet_em", Edge, 1.0, 1.1, true, cfg("tf_efficientnet_em", "in1k", 240, None, "bicubic", 0.882, None, "center", true, 8)),
    arch("tf_efficientnet_el", Edge, 1.2, 1.4, true, cfg("tf_efficientnet_el", "in1k", 300, None, "bicubic", 0.904, None, "center", true, 10)),
    arch("mobilenetv2_035", MNV2, 0.35, 1.0, false, cfg("mobilenetv2_035", "untrained", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv2_050", MNV2, 0.5, 1.0, false, cfg("mobilenetv2_050", "lamb_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv2_075", MNV2, 0.75, 1.0, false, cfg("mobilenetv2_075", "untrained", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv2_100", MNV2, 1.0, 1.0, false, cfg("mobilenetv2_100", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv2_140", MNV2, 1.4, 1.0, false, cfg("mobilenetv2_140", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv2_110d", MNV2D, 1.1, 1.2, false, cfg("mobilenetv2_110d", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv2_120d", MNV2D, 1.2, 1.4, false, cfg("mobilenetv2_120d", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv3_large_075", MNV3L, 0.75, 1.0, false, cfg("mobilenetv3_large_075", "untrained", 224, None, "bilinear", 0.875, None, "center", false, 7)),
    arch("mobilenetv3_large_100", MNV3L, 1.0, 1.0, false, cfg("mobilenetv3_large_100", "ra_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv3_large_150d", MNV3L, 1.5, 1.2, false, cfg("mobilenetv3_large_150d", "ra4_e3600_r256_in1k", 256, Some(320), "bilinear", 0.95, Some(1.0), "center", true, 8)),
    arch("mobilenetv3_small_050", MNV3S, 0.5, 1.0, false, cfg("mobilenetv3_small_050", "lamb_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv3_small_075", MNV3S, 0.75, 1.0, false, cfg("mobilenetv3_small_075", "lamb_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("mobilenetv3_small_100", MNV3S, 1.0, 1.0, false, cfg("mobilenetv3_small_100", "lamb_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("tf_mobilenetv3_large_075", MNV3L, 0.75, 1.0, true, cfg("tf_mobilenetv3_large_075", "in1k", 224, None, "bilinear", 0.875, None, "center", true, 7)),
    arch("tf_mobilenetv3_large_100", MNV3L, 1.0, 1.0, true, cfg("tf_mobilenetv3_large_100", "in1k", 224, None, "bilinear", 0.875, None, "center", true, 7)),
    arch("tf_mobilenetv3_large_minimal_100", MNV3LM, 1.0, 1.0, true, cfg("tf_mobilenetv3_large_minimal_100", "in1k", 224, None, "bilinear", 0.875, None, "center", true, 7)),
    arch("tf_mobilenetv3_small_075", MNV3S, 0.75, 1.0, true, cfg("tf_mobilenetv3_small_075", "in1k", 224, None, "bilinear", 0.875, None, "center", true, 7)),
    arch("tf_mobilenetv3_small_100", MNV3S, 1.0, 1.0, true, cfg("tf_mobilenetv3_small_100", "in1k", 224, None, "bilinear", 0.875, None, "center", true, 7)),
    arch("tf_mobilenetv3_small_minimal_100", MNV3SM, 1.0, 1.0, true, cfg("tf_mobilenetv3_small_minimal_100", "in1k", 224, None, "bilinear", 0.875, None, "center", true, 7)),
    arch("mobilenetv3_rw", MobileNetV3Rw, 1.0, 1.0, false, cfg("mobilenetv3_rw", "rmsp_in1k", 224, None, "bicubic", 0.875, None, "center", false, 7)),
    arch("test_efficientnet", Test, 1.0, 1.0, false, cfg("test_efficientnet", "r160_in1k", 160, None, "bicubic", 0.95, None, "center", false, 5)),
];

// Block-definition strings, verbatim from timm's `_gen_*` functions.
const DEF_EFFICIENTNET: &[&[&str]] = &[
    &["ds_r1_k3_s1_e1_c16_se0.25"],
    &["ir_r2_k3_s2_e6_c24_se0.25"],
    &["ir_r2_k5_s2_e6_c40_se0.25"],
    &["ir_r3_k3_s2_e6_c80_se0.25"],
    &["ir_r3_k5_s1_e6_c112_se0.25"],
    &["ir_r4_k5_s2_e6_c192_se0.25"],
    &["ir_r1_k3_s1_e6_c320_se0.25"],
];
const DEF_LITE: &[&[&str]] = &[
    &["ds_r1_k3_s1_e1_c16"],
    &["ir_r2_k3_s2_e6_c24"],
    &["ir_r2_k5_s2_e6_c40"],
    &["ir_r3_k3_s2_e6_c80"],
    &["ir_r3_k5_s1_e6_c112"],
    &["ir_r4_k5_s2_e6_c192"],
    &["ir_r1_k3_s1_e6_c320"],
];
const DEF_EDGE: &[&[&str]] = &[
    &["er_r1_k3_s1_e4_c24_fc24_noskip"],
    &["er_r2_k3_s2_e8_c32"],
    &["er_r4_k3_s2_e8_c48"],
    &["ir_r5_k5_s2_e8_c96"],
    &["ir_r4_k5_s1_e8_c144"],
    &["ir_r2_k5_s2_e8_c192"],
];
const DEF_MNV2: &[&[&str]] = &[
    &["ds_r1_k3_s1_c16"],
    &["ir_r2_k3_s2_e6_c24"],
    &["ir_r3_k3_s2_e6_c32"],
    &["ir_r4_k3_s2_e6_c64"],
    &["ir_r3_k3_s1_e6_c96"],
    &["ir_r3_k3_s2_e6_c160"],
    &["ir_r1_k3_s1_e6_c320"],
];
const DEF_MNV3_LARGE: &[&[&str]] = &[
    &["ds_r1_k3_s1_e1_c16_nre"],
    &["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    &["ir_r3_k5_s2_e3_c40_se0.25_nre"],
    &[
        "ir_r1_k3_s2_e6_c80",
        "ir_r1_k3_s1_e2.5_c80",
        "ir_r2_k3_s1_e2.3_c80",
    ],
    &["ir_r2_k3_s1_e6_c112_se0.25"],
    &["ir_r3_k5_s2_e6_c160_se0.25"],
    &["cn_r1_k1_s1_c960"],
];
const DEF_MNV3_LARGE_MINIMAL: &[&[&str]] = &[
    &["ds_r1_k3_s1_e1_c16"],
    &["ir_r1_k3_s2_e4_c24", "ir_r1_k3_s1_e3_c24"],
    &["ir_r3_k3_s2_e3_c40"],
    &[
        "ir_r1_k3_s2_e6_c80",
        "ir_r1_k3_s1_e2.5_c80",
        "ir_r2_k3_s1_e2.3_c80",
    ],
    &["ir_r2_k3_s1_e6_c112"],
    &["ir_r3_k3_s2_e6_c160"],
    &["cn_r1_k1_s1_c960"],
];
const DEF_MNV3_SMALL: &[&[&str]] = &[
    &["ds_r1_k3_s2_e1_c16_se0.25_nre"],
    &["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
    &["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],
    &["ir_r2_k5_s1_e3_c48_se0.25"],
    &["ir_r3_k5_s2_e6_c96_se0.25"],
    &["cn_r1_k1_s1_c576"],
];
const DEF_MNV3_SMALL_MINIMAL: &[&[&str]] = &[
    &["ds_r1_k3_s2_e1_c16"],
    &["ir_r1_k3_s2_e4.5_c24", "ir_r1_k3_s1_e3.67_c24"],
    &["ir_r1_k3_s2_e4_c40", "ir_r2_k3_s1_e6_c40"],
    &["ir_r2_k3_s1_e3_c48"],
    &["ir_r3_k3_s2_e6_c96"],
    &["cn_r1_k1_s1_c576"],
];
const DEF_MNV3_RW: &[&[&str]] = &[
    &["ds_r1_k3_s1_e1_c16_nre_noskip"],
    &["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
    &["ir_r3_k5_s2_e3_c40_se0.25_nre"],
    &[
        "ir_r1_k3_s2_e6_c80",
        "ir_r1_k3_s1_e2.5_c80",
        "ir_r2_k3_s1_e2.3_c80",
    ],
    &["ir_r2_k3_s1_e6_c112_se0.25"],
    &["ir_r3_k5_s2_e6_c160_se0.25"],
    &["cn_r1_k1_s1_c960"],
];
const DEF_TEST: &[&[&str]] = &[
    &["cn_r1_k3_s1_e1_c16_skip"],
    &["er_r1_k3_s2_e4_c24"],
    &["er_r1_k3_s2_e4_c32"],
    &["ir_r1_k3_s2_e4_c48_se0.25"],
    &["ir_r1_k3_s2_e4_c64_se0.25"],
];

fn find_arch(name: &str) -> Option<&'static Arch> {
    ARCHS.iter().find(|a| a.name == name)
}

/// The prefixes this family claims, so unknown variants (GroupNorm, CondConv, blur, ...) get a
/// message from this family rather than "no builder".
pub fn matches(arch: &str) -> bool {
    find_arch(arch).is_some()
        || [
            "efficientnet_",
            "tf_efficientnet_",
            "mobilenetv2_",
            "mobilenetv3_",
            "tf_mobilenetv3_",
            "test_efficientnet",
        ]
        .iter()
        .any(|p| arch.starts_with(p))
}

pub const EXAMPLES: &str = "efficientnet_b0..b8/l2, efficientnet_lite0..4, efficientnet_es/em/el and their tf_ ports, \
mobilenetv2_035..140/110d/120d, mobilenetv3_large/small_*, tf_mobilenetv3_*, mobilenetv3_rw, test_efficientnet";

// ------------------------------------------------------------------------------------------------
// timm's channel / depth arithmetic, reproduced exactly (Python float semantics).

/// `timm.layers.make_divisible`.
fn make_divisible(v: f64, divisor: usize, round_limit: f64) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0).trunc() as i64).div_euclid(divisor as i64) * divisor as i64)
        .max(divisor as i64) as usize;
    if (new_v as f64) < round_limit * v {
        new_v += divisor;
    }
    new_v
}

/// `round_channels(channels, multiplier, divisor, round_limit=...)` as the generators bind it.
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

/// Python's `round()` on a float: half to even.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

fn num_groups(group_size: usize, channels: usize) -> usize {
    channels.checked_div(group_size).unwrap_or(1)
}

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

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cn => "ConvBnAct",
            Kind::Ds => "DepthwiseSeparableConv",
            Kind::Ir => "InvertedResidual",
            Kind::Er => "EdgeResidual",
        }
    }
}

/// A decoded block string (`_decode_block_str`).
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
    let bad = || Error::internal(format!("cannot decode block definition `{s}`"));
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
                opts.insert(&op[..at], &op[at..]);
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

/// `_scale_stage_depth` with `depth_trunc='ceil'`: the blocks of one stage after depth scaling.
fn scale_stage(defs: Vec<BlockDef>, multiplier: f64) -> Vec<BlockDef> {
    let repeats: Vec<usize> = defs.iter().map(|d| d.repeat).collect();
    let mut num_repeat = repeats.iter().sum::<usize>() as i64;
    let mut scaled_total = (num_repeat as f64 * multiplier).ceil() as i64;
    let mut scaled = Vec::with_capacity(repeats.len());
    for &r in repeats.iter().rev() {
        let rs = py_round(r as f64 / num_repeat as f64 * scaled_total as f64).max(1);
        scaled.push(rs as usize);
        num_repeat -= r as i64;
        scaled_total -= rs;
    }
    scaled.reverse();
    defs.into_iter()
        .zip(scaled)
        .flat_map(|(d, n)| std::iter::repeat_n(d, n))
        .collect()
}

// ------------------------------------------------------------------------------------------------
// Resolved settings: the generator's defaults with model_args applied.

#[derive(Debug, Clone)]
struct SeStyle {
    /// MobileNetV3 sizes SE from the expanded width (`se_from_exp=True`); EfficientNet divides
    /// the ratio by the expansion.
    from_exp: bool,
    /// Reduced width rounded with `round_channels` (MobileNetV3) instead of `round`.
    round_channels: bool,
    gate: &'static str,
    /// MobileNetV3 forces ReLU inside SE; others use the block's activation.
    force_act: Option<&'static str>,
}

#[derive(Debug, Clone)]
enum HeadKind {
    /// EfficientNet: conv_head + bn2 + act before the pool (`num_features` 0: none).
    Efficient { num_features: usize },
    /// MobileNetV3: pool, then conv_head (+bias) + act on the pooled vector.
    MobileV3 { hidden: usize, bias: bool },
}

#[derive(Debug, Clone)]
struct Settings {
    defs: &'static [&'static [&'static str]],
    depth_multiplier: f64,
    fix_first_last: bool,
    round: RoundChs,
    stem: usize,
    fix_stem: bool,
    act: String,
    eps: f32,
    same: bool,
    group_size: Option<usize>,
    se: SeStyle,
    head: HeadKind,
    in_chans: usize,
}

/// model_args that only affect training (or are read elsewhere) and are accepted as-is.
const IGNORED_ARGS: &[&str] = &[
    "num_classes",
    "drop_rate",
    "drop_path_rate",
    "bn_momentum",
    "pretrained_cfg_overlay",
];

fn arg_f64(args: &Map<String, Json>, key: &str) -> Result<Option<f64>> {
    match args.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            Error::invalid_model(format!("model_args `{key}` must be a number, got {v}"))
        }),
    }
}

fn arg_usize(args: &Map<String, Json>, key: &str) -> Result<Option<usize>> {
    match args.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&n| n <= 1 << 20)
            .map(|n| Some(n as usize))
            .ok_or_else(|| {
                Error::invalid_model(format!(
                    "model_args `{key}` must be a non-negative integer, got {v}"
                ))
            }),
    }
}

fn arg_bool(args: &Map<String, Json>, key: &str) -> Result<Option<bool>> {
    match args.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| {
            Error::invalid_model(format!("model_args `{key}` must be a boolean, got {v}"))
        }),
    }
}

fn arg_str<'a>(args: &'a Map<String, Json>, key: &str) -> Result<Option<&'a str>> {
    match args.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or_else(|| {
            Error::unsupported(format!(
                "model_args `{key}` = {v} is not a name native graphs understand"
            ))
        }),
    }
}

/// timm's act_layer names → the names `act` understands.
fn canonical_act(name: &str) -> Result<String> {
    let n = name.to_ascii_lowercase();
    Ok(match n.as_str() {
        "swish" | "silu" => "silu",
        "relu" | "relu6" | "gelu" | "gelu_tanh" | "sigmoid" | "tanh" | "mish" | "identity" => {
            n.as_str()
        }
        "hard_swish" | "hardswish" => "hard_swish",
        "hard_sigmoid" | "hardsigmoid" => "hard_sigmoid",
        _ => {
            return Err(Error::unsupported(format!(
                "activation `{name}` is not supported by the native EfficientNet/MobileNet graph"
            )))
        }
    }
    .to_string())
}

fn settings(a: &Arch, cfg: &ModelConfig) -> Result<Settings> {
    let args = &cfg.model_args;
    // Which keyword arguments this generator's code path honours (others make timm raise, so a
    // config carrying them did not come from timm).
    let mut known: Vec<&str> = vec![
        "act_layer",
        "bn_eps",
        "pad_type",
        "in_chans",
        "global_pool",
        "output_stride",
        "fix_stem",
    ];
    match a.gen {
        EfficientNet => known.extend(["channel_divisor", "group_size"]),
        Edge => known.push("group_size"),
        MobileNetV2 {
            fix_stem_head: false,
        } => known.extend(["depth_multiplier", "group_size", "fix_stem_head"]),
        MobileNetV2 { .. } => known.push("group_size"),
        MobileNetV3 { .. } => {
            known.extend(["group_size", "head_bias"]);
            if a.name != "mobilenetv3_large_150d" {
                known.push("depth_multiplier");
            }
            known.retain(|k| *k != "fix_stem");
        }
        MobileNetV3Rw => known.extend(["stem_size", "num_features"]),
        Test => known.extend(["channel_multiplier", "depth_multiplier"]),
        Lite => known.retain(|k| *k != "fix_stem"),
    }
    let unknown: Vec<&str> = args
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k) && !IGNORED_ARGS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::unsupported(format!(
            "model_args {unknown:?} of `{}` are not supported by the native graph (supported here: {known:?})",
            a.name
        )));
    }
    if let Some(os) = arg_usize(args, "output_stride")? {
        if os != 32 {
            return Err(Error::unsupported(format!(
                "model_args output_stride={os} (dilated stages) is not supported; only 32"
            )));
        }
    }
    let pool = arg_str(args, "global_pool")?
        .map(str::to_string)
        .or(cfg.global_pool.clone())
        .unwrap_or_else(|| "avg".into());
    if pool != "avg" {
        return Err(Error::unsupported(format!(
            "global_pool `{pool}` is not supported for `{}`; only `avg`",
            a.name
        )));
    }
    let in_chans = cfg.pretrained_cfg.input_size[0];
    if let Some(c) = arg_usize(args, "in_chans")? {
        if c != in_chans {
            return Err(Error::invalid_model(format!(
                "model_args in_chans={c} but pretrained_cfg input_size has {in_chans} channels"
            )));
        }
    }

    let cm = arg_f64(args, "channel_multiplier")?.unwrap_or(a.channel_multiplier);
    let dm = arg_f64(args, "depth_multiplier")?.unwrap_or(a.depth_multiplier);
    if !((0.0..=64.0).contains(&cm) && dm > 0.0 && dm <= 64.0) {
        return Err(Error::invalid_model(format!(
            "model_args multipliers out of range (channel {cm}, depth {dm})"
        )));
    }
    let divisor = arg_usize(args, "channel_divisor")?.unwrap_or(8).max(1);
    let round = RoundChs {
        multiplier: cm,
        divisor,
        round_limit: if a.gen == Test { 0.0 } else { 0.9 },
    };
    let fix_stem_head = match a.gen {
        MobileNetV2 { fix_stem_head } => arg_bool(args, "fix_stem_head")?.unwrap_or(fix_stem_head),
        _ => false,
    };
    let default_act = match a.gen {
        EfficientNet => "swish",
        Lite | MobileNetV2 { .. } => "relu6",
        Edge => "relu",
        MobileNetV3 { minimal: true, .. } => "relu",
        MobileNetV3 { .. } | MobileNetV3Rw => "hard_swish",
        Test => "silu",
    };
    let act = canonical_act(arg_str(args, "act_layer")?.unwrap_or(default_act))?;
    let eps = arg_f64(args, "bn_eps")?.unwrap_or(if a.tf || a.gen == MobileNetV3Rw {
        1e-3
    } else {
        1e-5
    }) as f32;
    let same = match arg_str(args, "pad_type")?.unwrap_or(if a.tf { "same" } else { "" }) {
        "" => false,
        "same" | "SAME" => true,
        other => {
            return Err(Error::unsupported(format!(
                "model_args pad_type `{other}` is not supported; only '' or 'same'"
            )))
        }
    };
    let effnet_se = SeStyle {
        from_exp: false,
        round_channels: false,
        gate: "sigmoid",
        force_act: None,
    };
    let (defs, stem, fix_stem, head, se) = match a.gen {
        EfficientNet => (
            DEF_EFFICIENTNET,
            32,
            false,
            HeadKind::Efficient {
                num_features: round.apply(1280),
            },
            effnet_se,
        ),
        Lite => (
            DEF_LITE,
            32,
            true,
            HeadKind::Efficient { num_features: 1280 },
            effnet_se,
        ),
        Edge => (
            DEF_EDGE,
            32,
            false,
            HeadKind::Efficient {
                num_features: round.apply(1280),
            },
            effnet_se,
        ),
        MobileNetV2 { .. } => {
            let nf = if fix_stem_head {
                1280
            } else {
                round.apply(1280).max(1280)
            };
            (
                DEF_MNV2,
                32,
                fix_stem_head,
                HeadKind::Efficient { num_features: nf },
                effnet_se,
            )
        }
        MobileNetV3 { small, minimal } => {
            let defs = match (small, minimal) {
                (false, false) => DEF_MNV3_LARGE,
                (false, true) => DEF_MNV3_LARGE_MINIMAL,
                (true, false) => DEF_MNV3_SMALL,
                (true, true) => DEF_MNV3_SMALL_MINIMAL,
            };
            let bias = arg_bool(args, "head_bias")?.unwrap_or(true);
            let se = SeStyle {
                from_exp: true,
                round_channels: true,
                gate: "hard_sigmoid",
                force_act: Some("relu"),
            };
            (
                defs,
                16,
                cm < 0.75,
                HeadKind::MobileV3 {
                    hidden: if small { 1024 } else { 1280 },
                    bias,
                },
                se,
            )
        }
        MobileNetV3Rw => {
            let hidden = arg_usize(args, "num_features")?.unwrap_or(1280);
            let stem = arg_usize(args, "stem_size")?.unwrap_or(16);
            let se = SeStyle {
                from_exp: true,
                round_channels: false,
                gate: "hard_sigmoid",
                force_act: None,
            };
            (
                DEF_MNV3_RW,
                stem,
                false,
                HeadKind::MobileV3 {
                    hidden,
                    bias: false,
                },
                se,
            )
        }
        Test => (
            DEF_TEST,
            24,
            false,
            HeadKind::Efficient {
                num_features: round.apply(256),
            },
            effnet_se,
        ),
    };
    let fix_stem = arg_bool(args, "fix_stem")?.unwrap_or(fix_stem);
    Ok(Settings {
        defs,
        depth_multiplier: dm,
        fix_first_last: a.gen == Lite || fix_stem_head,
        round,
        stem,
        fix_stem,
        act,
        eps,
        same,
        group_size: arg_usize(args, "group_size")?.filter(|&g| g > 0),
        se,
        head,
        in_chans,
    })
}

// ------------------------------------------------------------------------------------------------
// The network plan: every block with its channels, as timm's builder makes it.

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

#[derive(Debug, Clone)]
struct Plan {
    stem: usize,
    stem_k: usize,
    stages: Vec<Vec<Block>>,
    head: HeadKind,
}

impl Plan {
    fn last_chs(&self) -> usize {
        self.stages
            .iter()
            .flatten()
            .last()
            .map_or(self.stem, |b| b.out)
    }

    /// timm's `num_features` (what config.json records).
    fn num_features(&self) -> usize {
        match self.head {
            HeadKind::Efficient { num_features } if num_features > 0 => num_features,
            _ => self.last_chs(),
        }
    }

    /// Width of `forward_head(pre_logits=True)`.
    fn pre_logits_dim(&self) -> usize {
        match self.head {
            HeadKind::MobileV3 { hidden, .. } => hidden,
            _ => self.num_features(),
        }
    }
}

/// Decoded, depth-scaled block definitions per stage (`decode_arch_def`).
fn stage_defs(s: &Settings) -> Result<Vec<Vec<BlockDef>>> {
    let n = s.defs.len();
    s.defs
        .iter()
        .enumerate()
        .map(|(i, strs)| {
            let defs = strs
                .iter()
                .map(|d| decode_block(d))
                .collect::<Result<Vec<_>>>()?;
            let fixed = s.fix_first_last && (i == 0 || i + 1 == n);
            Ok(scale_stage(
                defs,
                if fixed { 1.0 } else { s.depth_multiplier },
            ))
        })
        .collect()
}

/// One block as `EfficientNetBuilder._make_block` builds it, given its input width.
fn make_block(s: &Settings, d: &BlockDef, in_ch: usize, stride: usize) -> Block {
    let out = s.round.apply(d.out);
    let act = d.act.map_or_else(|| s.act.clone(), str::to_string);
    // Default group sizes of the block classes: depthwise for ds/ir, dense for cn/er.
    let gs = |default: usize| s.group_size.unwrap_or(default);
    let (mid, groups, se_base) = match d.kind {
        Kind::Cn => (out, num_groups(gs(0), in_ch), in_ch),
        Kind::Ds => (in_ch, num_groups(gs(1), in_ch), in_ch),
        Kind::Ir => {
            let mid = make_divisible(in_ch as f64 * d.exp, 8, 0.9);
            (mid, num_groups(gs(1), mid), mid)
        }
        Kind::Er => {
            let base = if d.force_in > 0 {
                s.round.apply(d.force_in)
            } else {
                in_ch
            };
            let mid = make_divisible(base as f64 * d.exp, 8, 0.9);
            (mid, num_groups(gs(0), mid), mid)
        }
    };
    let se_rd = (d.se > 0.0 && d.kind != Kind::Cn).then(|| {
        let exp = if matches!(d.kind, Kind::Ir | Kind::Er) {
            d.exp
        } else {
            1.0
        };
        let ratio = if s.se.from_exp { d.se } else { d.se / exp };
        let v = se_base as f64 * ratio;
        if s.se.round_channels {
            make_divisible(v, 8, 0.9)
        } else {
            py_round(v).max(0) as usize
        }
    });
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
        skip: false,
        pw_act: d.pw_act,
    }
}

fn skip_of(d: &BlockDef, b: &Block) -> bool {
    let same_shape = b.stride == 1 && b.in_ch == b.out;
    match d.kind {
        Kind::Cn => d.skip && same_shape,
        _ => same_shape && !d.noskip,
    }
}

/// Stage and block indices present in the weights (`blocks.<i>.<j>.*`).
fn weight_layout(b: &Builder) -> Option<Vec<usize>> {
    let w = b.weights()?;
    let mut counts: Vec<usize> = Vec::new();
    for name in w.names() {
        let mut parts = name.split('.');
        if parts.next() != Some("blocks") {
            continue;
        }
        let (Some(i), Some(j)) = (
            parts.next().and_then(|p| p.parse::<usize>().ok()),
            parts.next().and_then(|p| p.parse::<usize>().ok()),
        ) else {
            continue;
        };
        if i >= 64 || j >= 1024 {
            continue;
        }
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] = counts[i].max(j + 1);
    }
    Some(counts)
}

/// The plan from the architecture alone, then corrected by the weight shapes where they tell.
fn plan(s: &Settings, b: &Builder, arch: &str) -> Result<Plan> {
    let defs = stage_defs(s)?;
    let shape = |name: &str| b.weight_shape(name);
    let layout = weight_layout(b);
    // Checked per stage below (first the block kind, which names a tensor), then the count.
    let stage_count_error = |l: &Vec<usize>| {
        Error::invalid_model(format!(
            "the weights hold {} block stage(s) (blocks.0..blocks.{}) but `{arch}` has {} stages",
            l.len(),
            l.len().saturating_sub(1),
            defs.len()
        ))
    };
    let mut stem = if s.fix_stem {
        s.stem
    } else {
        s.round.apply(s.stem)
    };
    let mut stem_k = 3;
    if let Some(sh) = shape("conv_stem.weight").filter(|sh| sh.len() == 4) {
        stem = sh[0];
        stem_k = sh[2];
    }
    let mut in_ch = stem;
    let mut stages = Vec::with_capacity(defs.len());
    for (i, stage) in defs.iter().enumerate() {
        let depth = match &layout {
            None => stage.len(),
            Some(l) if l.get(i).is_some_and(|&n| n > 0) => l[i],
            Some(l) => return Err(stage_count_error(l)),
        };
        let mut blocks = Vec::with_capacity(depth);
        for j in 0..depth {
            // Extra blocks in the weights (another depth multiplier) repeat the stage's last def.
            let d = &stage[j.min(stage.len() - 1)];
            let stride = if j == 0 { d.stride } else { 1 };
            let mut blk = make_block(s, d, in_ch, stride);
            if b.weights().is_some() {
                read_block_shapes(b, &format!("blocks.{i}.{j}"), &mut blk, arch)?;
            }
            blk.skip = skip_of(d, &blk);
            in_ch = blk.out;
            blocks.push(blk);
        }
        stages.push(blocks);
    }
    if let Some(l) = layout.as_ref().filter(|l| l.len() != defs.len()) {
        return Err(stage_count_error(l));
    }
    let mut head = s.head.clone();
    if b.weights().is_some() {
        let hw = shape("conv_head.weight")
            .filter(|sh| sh.len() == 4)
            .map(|sh| sh[0]);
        match &mut head {
            HeadKind::Efficient { num_features } => *num_features = hw.unwrap_or(0),
            HeadKind::MobileV3 { hidden, bias } => {
                if let Some(h) = hw {
                    *hidden = h;
                }
                *bias = b.has_weight("conv_head.bias");
            }
        }
    }
    Ok(Plan {
        stem,
        stem_k,
        stages,
        head,
    })
}

/// Widths, kernels, groups and SE width of one block from its tensors. The block kind comes from
/// the architecture; weights saved from another one lack its main conv, named in the error. Other
/// missing tensors are left to `Builder::param`, which names them too.
fn read_block_shapes(b: &Builder, p: &str, blk: &mut Block, arch: &str) -> Result<()> {
    let main = match blk.kind {
        Kind::Cn => "conv",
        Kind::Ds => "conv_dw",
        Kind::Ir => "conv_pwl",
        Kind::Er => "conv_exp",
    };
    if !b.has_weight(&format!("{p}.{main}.weight")) {
        return Err(Error::invalid_model(format!(
            "`{arch}` has a {} block at {p}, but the weights have no tensor `{p}.{main}.weight`; \
             they were saved from a different architecture or model_args",
            blk.kind.name()
        )));
    }
    let sh = |n: &str| b.weight_shape(&format!("{p}.{n}")).filter(|s| s.len() == 4);
    let groups_of = |ch: usize, per_group: usize| {
        if per_group > 0 && ch.is_multiple_of(per_group) {
            Some(ch / per_group)
        } else {
            None
        }
    };
    match blk.kind {
        Kind::Cn => {
            if let Some(w) = sh("conv.weight") {
                blk.out = w[0];
                blk.mid = w[0];
                blk.k = w[2];
                blk.groups = groups_of(blk.in_ch, w[1]).unwrap_or(blk.groups);
            }
        }
        Kind::Ds => {
            blk.mid = blk.in_ch;
            if let Some(w) = sh("conv_dw.weight") {
                blk.k = w[2];
                blk.groups = groups_of(blk.in_ch, w[1]).unwrap_or(blk.groups);
            }
            if let Some(w) = sh("conv_pw.weight") {
                blk.out = w[0];
                blk.pw_k = w[2];
            }
        }
        Kind::Ir => {
            if let Some(w) = sh("conv_pw.weight") {
                blk.mid = w[0];
                blk.exp_k = w[2];
            }
            if let Some(w) = sh("conv_dw.weight") {
                blk.k = w[2];
                blk.groups = groups_of(blk.mid, w[1]).unwrap_or(blk.groups);
            }
            if let Some(w) = sh("conv_pwl.weight") {
                blk.out = w[0];
                blk.pw_k = w[2];
            }
        }
        Kind::Er => {
            if let Some(w) = sh("conv_exp.weight") {
                blk.mid = w[0];
                blk.k = w[2];
                blk.groups = groups_of(blk.in_ch, w[1]).unwrap_or(blk.groups);
            }
            if let Some(w) = sh("conv_pwl.weight") {
                blk.out = w[0];
                blk.pw_k = w[2];
            }
        }
    }
    if blk.kind != Kind::Cn {
        blk.se_rd = sh("se.conv_reduce.weight").map(|w| w[0]);
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Graph construction.

struct Net<'s> {
    s: &'s Settings,
}

impl Net<'_> {
    fn pad(&self, k: usize, stride: usize) -> Pad {
        // timm's 'same' is static (symmetric) when stride 1 and the kernel is odd, else
        // Conv2dSame's TF padding (extra pixel at the end).
        let static_pad = stride == 1 && (k - 1).is_multiple_of(2);
        if self.s.same && !static_pad {
            Pad::TfSame
        } else {
            Pad::Sym(((stride - 1) + (k - 1)) / 2)
        }
    }

    /// A conv with timm's EfficientNet init (`_init_weight_goog`: normal, std sqrt(2 / fan_out)
    /// with fan_out = k*k*out/groups) when there are no weights.
    fn conv(&self, b: &mut Builder, x: &Value, prefix: &str, c: Conv) -> Result<Value> {
        let (kh, kw) = c.kernel;
        let fan_out = (kh * kw * c.out_ch / c.groups.max(1)).max(1);
        b.param(
            &format!("{prefix}.weight"),
            &[c.out_ch, c.in_ch / c.groups.max(1), kh, kw],
            Init::Normal((2.0 / fan_out as f64).sqrt() as f32),
        )?;
        layers::conv2d(b, x, prefix, c)
    }

    fn conv_bn(
        &self,
        b: &mut Builder,
        x: &Value,
        conv: &str,
        bn: &str,
        c: Conv,
        act: Option<&str>,
    ) -> Result<Value> {
        let y = self.conv(b, x, conv, c)?;
        let y = layers::batch_norm(b, &y, bn, c.out_ch, self.s.eps)?;
        match act {
            Some(a) => activation(b, a, &y),
            None => Ok(y),
        }
    }

    fn se(
        &self,
        b: &mut Builder,
        x: &Value,
        p: &str,
        ch: usize,
        rd: usize,
        block_act: &str,
    ) -> Result<Value> {
        let pooled = layers::global_avg_pool(b, x);
        let r = self.conv(
            b,
            &pooled,
            &format!("{p}.se.conv_reduce"),
            Conv::new(ch, rd, 1).pad(Pad::Sym(0)).bias(true),
        )?;
        let r = activation(b, self.s.se.force_act.unwrap_or(block_act), &r)?;
        let e = self.conv(
            b,
            &r,
            &format!("{p}.se.conv_expand"),
            Conv::new(rd, ch, 1).pad(Pad::Sym(0)).bias(true),
        )?;
        let g = activation(b, self.s.se.gate, &e)?;
        Ok(layers::mul(b, x, &g))
    }

    fn block(&self, b: &mut Builder, x: &Value, p: &str, blk: &Block) -> Result<Value> {
        let act = blk.act.as_str();
        let kconv = |cin: usize, cout: usize, k: usize, stride: usize, groups: usize| {
            Conv::new(cin, cout, k)
                .stride(stride)
                .pad(self.pad(k, stride))
                .groups(groups)
        };
        let pw = |cin: usize, cout: usize, k: usize| Conv::new(cin, cout, k).pad(self.pad(k, 1));
        let mut y = match blk.kind {
            Kind::Cn => {
                let c = kconv(blk.in_ch, blk.out, blk.k, blk.stride, blk.groups);
                self.conv_bn(
                    b,
                    x,
                    &format!("{p}.conv"),
                    &format!("{p}.bn1"),
                    c,
                    Some(act),
                )?
            }
            Kind::Ds => {
                let c = kconv(blk.in_ch, blk.in_ch, blk.k, blk.stride, blk.groups);
                let mut y = self.conv_bn(
                    b,
                    x,
                    &format!("{p}.conv_dw"),
                    &format!("{p}.bn1"),
                    c,
                    Some(act),
                )?;
                if let Some(rd) = blk.se_rd {
                    y = self.se(b, &y, p, blk.in_ch, rd, act)?;
                }
                let pw_act = blk.pw_act.then_some(act);
                self.conv_bn(
                    b,
                    &y,
                    &format!("{p}.conv_pw"),
                    &format!("{p}.bn2"),
                    pw(blk.in_ch, blk.out, blk.pw_k),
                    pw_act,
                )?
            }
            Kind::Ir => {
                let y = self.conv_bn(
                    b,
                    x,
                    &format!("{p}.conv_pw"),
                    &format!("{p}.bn1"),
                    pw(blk.in_ch, blk.mid, blk.exp_k),
                    Some(act),
                )?;
                let c = kconv(blk.mid, blk.mid, blk.k, blk.stride, blk.groups);
                let mut y = self.conv_bn(
                    b,
                    &y,
                    &format!("{p}.conv_dw"),
                    &format!("{p}.bn2"),
                    c,
                    Some(act),
                )?;
                if let Some(rd) = blk.se_rd {
                    y = self.se(b, &y, p, blk.mid, rd, act)?;
                }
                self.conv_bn(
                    b,
                    &y,
                    &format!("{p}.conv_pwl"),
                    &format!("{p}.bn3"),
                    pw(blk.mid, blk.out, blk.pw_k),
                    None,
                )?
            }
            Kind::Er => {
                let c = kconv(blk.in_ch, blk.mid, blk.k, blk.stride, blk.groups);
                let mut y = self.conv_bn(
                    b,
                    x,
                    &format!("{p}.conv_exp"),
                    &format!("{p}.bn1"),
                    c,
                    Some(act),
                )?;
                if let Some(rd) = blk.se_rd {
                    y = self.se(b, &y, p, blk.mid, rd, act)?;
                }
                self.conv_bn(
                    b,
                    &y,
                    &format!("{p}.conv_pwl"),
                    &format!("{p}.bn2"),
                    pw(blk.mid, blk.out, blk.pw_k),
                    None,
                )?
            }
        };
        if blk.skip {
            y = layers::add(b, &y, x);
        }
        Ok(y)
    }
}

/// Activation by timm name, adding the few `layers::act` does not cover.
fn activation(b: &mut Builder, name: &str, x: &Value) -> Result<Value> {
    match name {
        "tanh" => Ok(b.op("Tanh", &[x], vec![])),
        "mish" => Ok(b.op("Mish", &[x], vec![])),
        _ => layers::act(b, name, x),
    }
}

fn unknown_arch(arch: &str) -> Error {
    Error::unsupported(format!(
        "`{arch}` is not an EfficientNet/MobileNet variant the native graph supports (GroupNorm/EvoNorm, CondConv, \
         anti-aliased, pruned, MixNet/MnasNet/FBNet and EfficientNet-V2/X variants are not); supported: {EXAMPLES}"
    ))
}

pub fn build(b: &mut Builder, cfg: &ModelConfig, output: OutputKind) -> Result<(Value, usize)> {
    let a = find_arch(&cfg.architecture).ok_or_else(|| unknown_arch(&cfg.architecture))?;
    let s = settings(a, cfg)?;
    let plan = plan(&s, b, a.name)?;
    let net = Net { s: &s };

    let x = b.input();
    let stem = Conv::new(s.in_chans, plan.stem, plan.stem_k)
        .stride(2)
        .pad(net.pad(plan.stem_k, 2));
    let mut x = net.conv_bn(b, &x, "conv_stem", "bn1", stem, Some(&s.act))?;
    for (i, stage) in plan.stages.iter().enumerate() {
        for (j, blk) in stage.iter().enumerate() {
            x = net.block(b, &x, &format!("blocks.{i}.{j}"), blk)?;
        }
    }
    let last = plan.last_chs();
    let features = match plan.head {
        HeadKind::Efficient { num_features } => {
            if num_features > 0 {
                let c = Conv::new(last, num_features, 1).pad(net.pad(1, 1));
                x = net.conv_bn(b, &x, "conv_head", "bn2", c, Some(&s.act))?;
            }
            layers::global_avg_pool_flat(b, &x)
        }
        HeadKind::MobileV3 { hidden, bias } => {
            let pooled = layers::global_avg_pool(b, &x);
            let c = Conv::new(last, hidden, 1).pad(Pad::Sym(0)).bias(bias);
            let h = net.conv(b, &pooled, "conv_head", c)?;
            let h = activation(b, &s.act, &h)?;
            b.op("Flatten", &[&h], vec![("axis", Attr::Int(1))])
        }
    };
    let dim = plan.pre_logits_dim();
    if output == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((features, dim));
    }
    // timm's Linear init here is uniform(±1/sqrt(fan_out)); a normal of the same variance.
    let std = (1.0 / (cfg.num_classes as f64).sqrt() / 3f64.sqrt()) as f32;
    b.param(
        "classifier.weight",
        &[cfg.num_classes, dim],
        Init::Normal(std),
    )?;
    let logits = layers::linear_2d(
        b,
        &features,
        "classifier",
        dim,
        cfg.num_classes,
        true,
        Init::Normal(std),
    )?;
    Ok((logits, cfg.num_classes))
}

/// config.json for a bare architecture name, as timm would write it with default arguments.
pub fn default_config(arch: &str) -> Option<Json> {
    let a = find_arch(arch)?;
    let c = &a.cfg;
    let mut pc = Map::new();
    pc.insert("tag".into(), json!(c.tag));
    pc.insert("custom_load".into(), json!(false));
    pc.insert("input_size".into(), json!([3, c.res, c.res]));
    if let Some(t) = c.test_res {
        pc.insert("test_input_size".into(), json!([3, t, t]));
    }
    pc.insert("fixed_input_size".into(), json!(false));
    pc.insert("interpolation".into(), json!(c.interpolation));
    pc.insert("crop_pct".into(), json!(c.crop_pct));
    if let Some(t) = c.test_crop_pct {
        pc.insert("test_crop_pct".into(), json!(t));
    }
    pc.insert("crop_mode".into(), json!(c.crop_mode));
    let (mean, std) = if c.half_mean {
        (json!([0.5, 0.5, 0.5]), json!([0.5, 0.5, 0.5]))
    } else {
        (
            json!(crate::config::IMAGENET_MEAN),
            json!(crate::config::IMAGENET_STD),
        )
    };
    pc.insert("mean".into(), mean);
    pc.insert("std".into(), std);
    pc.insert("num_classes".into(), json!(1000));
    pc.insert("pool_size".into(), json!([c.pool, c.pool]));
    pc.insert("first_conv".into(), json!("conv_stem"));
    pc.insert("classifier".into(), json!("classifier"));
    pc.insert("license".into(), json!("apache-2.0"));
    // num_features as timm reports it, from the same plan the graph is built from.
    let cfg0 = ModelConfig::parse(json!({"architecture": arch, "num_classes": 1000, "pretrained_cfg": {"input_size": [3, c.res, c.res]}}).to_string().as_bytes()).ok()?;
    let s = settings(a, &cfg0).ok()?;
    let b = Builder::new(
        super::ParamSource::Shapes,
        [None, None, None],
        Default::default(),
        crate::graph::budget::Budget::new(u64::MAX, (c.res, c.res)),
    );
    let num_features = plan(&s, &b, a.name).ok()?.num_features();
    Some(json!({
        "architecture": a.name,
        "num_classes": 1000,
        "num_features": num_features,
        "global_pool": "avg",
        "pretrained_cfg": Json::Object(pc),
    }))
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
    }

    #[test]
    fn channel_rounding_matches_make_divisible() {
        // Values checked by hand against timm.layers.make_divisible.
        assert_eq!(make_divisible(16.0 * 0.35, 8, 0.9), 8);
        assert_eq!(make_divisible(32.0 * 0.35, 8, 0.9), 16);
        assert_eq!(make_divisible(18.0, 8, 0.0), 16);
        assert_eq!(make_divisible(40.0 * 1.1, 8, 0.9), 48);
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
    }

    #[test]
    fn depth_scaling_distributes_like_timm() {
        let defs = vec![
            decode_block("ir_r1_k3_s2_e6_c80").unwrap(),
            decode_block("ir_r2_k3_s1_e2.3_c80").unwrap(),
        ];
        assert_eq!(scale_stage(defs.clone(), 1.0).len(), 3);
        // ceil(3 * 1.1) = 4: the extra block goes to the last def.
        let s = scale_stage(defs.clone(), 1.1);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|d| d.stride == 2).count(), 1);
        assert_eq!(scale_stage(defs, 0.1).len(), 2);
    }

    #[test]
    fn every_table_arch_has_a_default_config() {
        for a in ARCHS {
            let c = default_config(a.name).unwrap_or_else(|| panic!("{}", a.name));
            assert!(c["num_features"].as_u64().unwrap() > 0, "{}", a.name);
            assert!(matches(a.name));
        }
        assert!(default_config("efficientnet_b0_gn").is_none());
        assert!(matches("efficientnet_b0_gn") && !matches("resnet50"));
    }
}
