//! ConvNeXt v1 and v2 (timm's `convnext.py`): `convnext_zepto_rms` .. `convnext_xxlarge`,
//! `convnextv2_atto` .. `convnextv2_huge` and timm's `test_convnext*`.
//!
//! The structure comes from three places, in this order: `model_args` in config.json (what timm
//! built the model with), the weights (depths, widths, kernel sizes, layer scale, GRN, conv-MLP,
//! stem type, head layout: transformers' folders drop `model_args`, so the weights are the only
//! record of a customised model), then timm's defaults for the architecture name. Activations,
//! norm type and eps cannot be read from weights and come from the table / `model_args` only.
//!
//! Blocks keep timm's two layouts, each in the form ONNX Runtime runs fastest: the Linear MLP
//! channels-last (one Transpose in, one out; LayerNormalization on the last axis is its fused
//! kernel, MatMul + BiasGelu for the MLP), and the `conv_mlp=True` MLP as NCHW 1x1 Convs that
//! its NCHWc transformer executes in the blocked layout.

use serde_json::{json, Map, Value as Json};

use super::layers::{self, Conv, Pad};
use super::{Attr, Builder, Family, Init, OutputKind, Value, MS_DOMAIN};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

pub const FAMILY: Family = Family {
    name: "convnext",
    examples: "convnext_atto..convnext_xxlarge, convnextv2_atto..convnextv2_huge, test_convnext",
    matches,
    build: |b, cfg| super::with_output(b, cfg, build),
    default_config,
    any_size: false,
};

fn matches(arch: &str) -> bool {
    arch.starts_with("convnext_")
        || arch.starts_with("convnextv2_")
        || arch.starts_with("test_convnext")
}

/// The normalisation layer timm's `norm_layer` names (channels-first and -last forms alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NormKind {
    /// `LayerNorm` / `LayerNorm2d`: mean and variance, affine weight and bias.
    Layer,
    /// `RmsNorm` / `RmsNorm2d`: `x / sqrt(mean(x²) + eps) * w`.
    Rms,
    /// `SimpleNorm` / `SimpleNorm2d`: `x / sqrt(var(x, unbiased) + eps) * w`.
    Simple,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stem {
    /// Non-overlapping `patch_size` conv + norm.
    Patch(usize),
    /// Two 3x3 stride-2 convs (+ act between them for `overlap_act`) + norm; `mid` channels
    /// after the first (`dims[0] // 2` rounded for `overlap_tiered`).
    Overlap { mid: usize, act: bool },
}

/// Everything the graph needs, resolved from model_args, weights and the arch table.
#[derive(Debug, Clone)]
struct Arch {
    depths: Vec<usize>,
    dims: Vec<usize>,
    kernel_sizes: Vec<usize>,
    ls_init_value: Option<f32>,
    stem: Stem,
    head_init_scale: f32,
    head_norm_first: bool,
    head_hidden_size: Option<usize>,
    conv_mlp: bool,
    conv_bias: bool,
    use_grn: bool,
    act: String,
    norm: NormKind,
    eps: f32,
}

/// timm's defaults for each registered architecture (the `model_args` of its entrypoint over
/// `ConvNeXt.__init__`'s defaults). `None` for names timm does not register.
fn table(arch: &str) -> Option<Map<String, Json>> {
    let v = match arch {
        "convnext_zepto_rms" => {
            json!({"depths": [2, 2, 4, 2], "dims": [32, 64, 128, 256], "conv_mlp": true, "norm_layer": "simplenorm"})
        }
        "convnext_zepto_rms_ols" => {
            json!({"depths": [2, 2, 4, 2], "dims": [32, 64, 128, 256], "conv_mlp": true, "norm_layer": "simplenorm", "stem_type": "overlap_act"})
        }
        "convnext_atto" => {
            json!({"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320], "conv_mlp": true})
        }
        "convnext_atto_ols" => {
            json!({"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320], "conv_mlp": true, "stem_type": "overlap_tiered"})
        }
        "convnext_atto_rms" => {
            json!({"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320], "conv_mlp": true, "norm_layer": "rmsnorm2d"})
        }
        "convnext_femto" => {
            json!({"depths": [2, 2, 6, 2], "dims": [48, 96, 192, 384], "conv_mlp": true})
        }
        "convnext_femto_ols" => {
            json!({"depths": [2, 2, 6, 2], "dims": [48, 96, 192, 384], "conv_mlp": true, "stem_type": "overlap_tiered"})
        }
        "convnext_pico" => {
            json!({"depths": [2, 2, 6, 2], "dims": [64, 128, 256, 512], "conv_mlp": true})
        }
        "convnext_pico_ols" => {
            json!({"depths": [2, 2, 6, 2], "dims": [64, 128, 256, 512], "conv_mlp": true, "stem_type": "overlap_tiered"})
        }
        "convnext_nano" => {
            json!({"depths": [2, 2, 8, 2], "dims": [80, 160, 320, 640], "conv_mlp": true})
        }
        "convnext_nano_ols" => {
            json!({"depths": [2, 2, 8, 2], "dims": [80, 160, 320, 640], "conv_mlp": true, "stem_type": "overlap"})
        }
        "convnext_tiny_hnf" => {
            json!({"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768], "head_norm_first": true, "conv_mlp": true})
        }
        "convnext_tiny" => json!({"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768]}),
        "convnext_small" => json!({"depths": [3, 3, 27, 3], "dims": [96, 192, 384, 768]}),
        "convnext_base" => json!({"depths": [3, 3, 27, 3], "dims": [128, 256, 512, 1024]}),
        "convnext_large" => json!({"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536]}),
        "convnext_large_mlp" => {
            json!({"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536], "head_hidden_size": 1536})
        }
        "convnext_xlarge" => json!({"depths": [3, 3, 27, 3], "dims": [256, 512, 1024, 2048]}),
        "convnext_xxlarge" => {
            json!({"depths": [3, 4, 30, 3], "dims": [384, 768, 1536, 3072], "norm_eps": 1e-5})
        }
        "convnextv2_atto" => {
            json!({"depths": [2, 2, 6, 2], "dims": [40, 80, 160, 320], "use_grn": true, "ls_init_value": null, "conv_mlp": true})
        }
        "convnextv2_femto" => {
            json!({"depths": [2, 2, 6, 2], "dims": [48, 96, 192, 384], "use_grn": true, "ls_init_value": null, "conv_mlp": true})
        }
        "convnextv2_pico" => {
            json!({"depths": [2, 2, 6, 2], "dims": [64, 128, 256, 512], "use_grn": true, "ls_init_value": null, "conv_mlp": true})
        }
        "convnextv2_nano" => {
            json!({"depths": [2, 2, 8, 2], "dims": [80, 160, 320, 640], "use_grn": true, "ls_init_value": null, "conv_mlp": true})
        }
        "convnextv2_tiny" => {
            json!({"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768], "use_grn": true, "ls_init_value": null})
        }
        "convnextv2_small" => {
            json!({"depths": [3, 3, 27, 3], "dims": [96, 192, 384, 768], "use_grn": true, "ls_init_value": null})
        }
        "convnextv2_base" => {
            json!({"depths": [3, 3, 27, 3], "dims": [128, 256, 512, 1024], "use_grn": true, "ls_init_value": null})
        }
        "convnextv2_large" => {
            json!({"depths": [3, 3, 27, 3], "dims": [192, 384, 768, 1536], "use_grn": true, "ls_init_value": null})
        }
        "convnextv2_huge" => {
            json!({"depths": [3, 3, 27, 3], "dims": [352, 704, 1408, 2816], "use_grn": true, "ls_init_value": null})
        }
        "test_convnext" => {
            json!({"depths": [1, 2, 4, 2], "dims": [24, 32, 48, 64], "norm_eps": 1e-5, "act_layer": "gelu_tanh"})
        }
        "test_convnext2" => {
            json!({"depths": [1, 1, 1, 1], "dims": [32, 64, 96, 128], "norm_eps": 1e-5, "act_layer": "gelu_tanh"})
        }
        "test_convnext3" => {
            json!({"depths": [1, 1, 1, 1], "dims": [32, 64, 96, 128], "norm_eps": 1e-5, "kernel_sizes": [7, 5, 5, 3], "act_layer": "silu"})
        }
        _ => return None,
    };
    match v {
        Json::Object(m) => Some(m),
        _ => None,
    }
}

/// `ConvNeXt.__init__` keyword arguments that leave the inference graph unchanged.
const IGNORED_ARGS: &[&str] = &[
    "num_classes",
    "global_pool",
    "drop_rate",
    "drop_path_rate",
    "pretrained_cfg_overlay",
];
/// Arguments this builder honours.
const STRUCTURE_ARGS: &[&str] = &[
    "in_chans",
    "output_stride",
    "depths",
    "dims",
    "kernel_sizes",
    "ls_init_value",
    "stem_type",
    "patch_size",
    "head_init_scale",
    "head_norm_first",
    "head_hidden_size",
    "conv_mlp",
    "conv_bias",
    "use_grn",
    "act_layer",
    "norm_layer",
    "norm_eps",
];

// ---------------------------------------------------------------------------------------------
// model_args readers (shared with the RegNet builder)

pub(crate) fn arg_usize(m: &Map<String, Json>, key: &str) -> Result<Option<usize>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0 && n <= 1 << 20)
            .map(|n| Some(n as usize))
            .ok_or_else(|| {
                Error::invalid_model(format!(
                    "model_args `{key}` must be a positive integer, got {v}"
                ))
            }),
    }
}

pub(crate) fn arg_f32(m: &Map<String, Json>, key: &str) -> Result<Option<f32>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| Some(f as f32))
            .ok_or_else(|| {
                Error::invalid_model(format!("model_args `{key}` must be a number, got {v}"))
            }),
    }
}

pub(crate) fn arg_bool(m: &Map<String, Json>, key: &str) -> Result<Option<bool>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::invalid_model(format!(
            "model_args `{key}` must be true or false, got {v}"
        ))),
    }
}

pub(crate) fn arg_str(m: &Map<String, Json>, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(Error::unsupported(format!("model_args `{key}` = {v} is not supported by the native graph (only timm's names as strings)"))),
    }
}

/// A per-stage list; a single integer means the same value for all `n` stages (timm's `to_ntuple`).
pub(crate) fn arg_list(m: &Map<String, Json>, key: &str, n: usize) -> Result<Option<Vec<usize>>> {
    let bad = |v: &Json| {
        Error::invalid_model(format!(
            "model_args `{key}` must be {n} positive integers, got {v}"
        ))
    };
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v @ Json::Number(_)) => arg_usize(m, key)?
            .map(|x| Some(vec![x; n]))
            .ok_or_else(|| bad(v)),
        Some(v @ Json::Array(a)) => {
            let out: Option<Vec<usize>> = a
                .iter()
                .map(|x| x.as_u64().filter(|&x| x <= 1 << 20).map(|x| x as usize))
                .collect();
            out.filter(|o| o.len() == n).map(Some).ok_or_else(|| bad(v))
        }
        Some(v) => Err(bad(v)),
    }
}

/// Refuses `model_args` keys that would change the graph in ways this builder does not know.
pub(crate) fn check_args(
    m: &Map<String, Json>,
    arch: &str,
    honoured: &[&str],
    ignored: &[&str],
) -> Result<()> {
    let unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !honoured.contains(k) && !ignored.contains(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::unsupported(format!(
            "model_args {} of `{arch}` are not supported by the native graph (supported: {})",
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            honoured.join(", ")
        )))
    }
}

/// timm's `SelectAdaptivePool2d` followed by flatten: `[N, C, H, W]` → `[N, C·mult]`.
/// Returns the pooled value and the width multiplier (2 for `catavgmax`).
pub(crate) fn global_pool(
    b: &mut Builder,
    x: &Value,
    pool: &str,
    allow_cat: bool,
) -> Result<(Value, usize)> {
    let flat = |b: &mut Builder, v: &Value| b.op("Flatten", &[v], vec![("axis", Attr::Int(1))]);
    Ok(match pool {
        "avg" => (layers::global_avg_pool_flat(b, x), 1),
        "max" => {
            let p = b.op("GlobalMaxPool", &[x], vec![]);
            (flat(b, &p), 1)
        }
        "avgmax" | "catavgmax" if pool == "avgmax" || allow_cat => {
            let a = layers::global_avg_pool_flat(b, x);
            let m = b.op("GlobalMaxPool", &[x], vec![]);
            let m = flat(b, &m);
            if pool == "avgmax" {
                let s = layers::add(b, &a, &m);
                let half = b.const_f32(vec![0.5], &[]);
                (layers::mul(b, &s, &half), 1)
            } else {
                (b.op("Concat", &[&a, &m], vec![("axis", Attr::Int(1))]), 2)
            }
        }
        other => {
            return Err(Error::unsupported(format!(
                "global_pool `{other}` is not supported by the native graph (supported: avg, max, avgmax{})",
                if allow_cat { ", catavgmax" } else { "" }
            )))
        }
    })
}

// ---------------------------------------------------------------------------------------------
// structure

fn norm_kind(name: Option<&str>) -> Result<NormKind> {
    match name.unwrap_or("layernorm") {
        "layernorm" | "layernorm2d" => Ok(NormKind::Layer),
        "rmsnorm" | "rmsnorm2d" => Ok(NormKind::Rms),
        "simplenorm" | "simplenorm2d" => Ok(NormKind::Simple),
        other => Err(Error::unsupported(format!(
            "ConvNeXt norm_layer `{other}` is not supported by the native graph (supported: layernorm, rmsnorm, simplenorm)"
        ))),
    }
}

/// `make_divisible(v, 8)` as timm rounds channel counts.
pub(crate) fn make_divisible(v: f64, divisor: usize, round_limit: f64) -> usize {
    let d = divisor as f64;
    let mut n = (((v + d / 2.0) / d).floor() * d).max(d);
    if n < round_limit * v {
        n += d;
    }
    n as usize
}

fn resolve(b: &Builder, cfg: &ModelConfig) -> Result<Arch> {
    let arch_name = cfg.architecture.as_str();
    let defaults = table(arch_name).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch_name}` is not a ConvNeXt variant this build knows (known: convnext_zepto_rms[_ols], convnext_atto[_ols|_rms], \
             convnext_femto[_ols], convnext_pico[_ols], convnext_nano[_ols], convnext_tiny[_hnf], convnext_small, convnext_base, \
             convnext_large[_mlp], convnext_xlarge, convnext_xxlarge, convnextv2_atto..huge, test_convnext[2|3])"
        ))
    })?;
    let args = &cfg.model_args;
    check_args(args, arch_name, STRUCTURE_ARGS, IGNORED_ARGS)?;
    // What timm applies: the entrypoint's model_args, then the saved kwargs over them.
    let mut m = defaults;
    for (k, v) in args {
        m.insert(k.clone(), v.clone());
    }
    let explicit = |k: &str| args.contains_key(k);

    if let Some(os) = arg_usize(&m, "output_stride")? {
        if os != 32 {
            return Err(Error::unsupported(format!(
                "ConvNeXt output_stride {os} (dilated stages) is not supported by the native graph"
            )));
        }
    }
    if let Some(c) = arg_usize(&m, "in_chans")? {
        if c != cfg.pretrained_cfg.input_size[0] {
            return Err(Error::invalid_model(format!(
                "model_args in_chans = {c} but pretrained_cfg input_size has {} channels",
                cfg.pretrained_cfg.input_size[0]
            )));
        }
    }

    let mut depths = arg_list(&m, "depths", 4)?.unwrap_or_else(|| vec![3, 3, 9, 3]);
    let mut dims = arg_list(&m, "dims", 4)?.unwrap_or_else(|| vec![96, 192, 384, 768]);
    if dims.contains(&0) {
        return Err(Error::invalid_model("model_args `dims` must be positive"));
    }
    let mut kernel_sizes = arg_list(&m, "kernel_sizes", 4)?.unwrap_or_else(|| vec![7; 4]);
    let mut ls_init_value = if m.contains_key("ls_init_value") {
        arg_f32(&m, "ls_init_value")?
    } else {
        Some(1e-6)
    };
    let stem_type = arg_str(&m, "stem_type")?.unwrap_or_else(|| "patch".into());
    let patch_size = arg_usize(&m, "patch_size")?.unwrap_or(4);
    let mut head_norm_first = arg_bool(&m, "head_norm_first")?.unwrap_or(false);
    let mut head_hidden_size = arg_usize(&m, "head_hidden_size")?;
    let mut conv_mlp = arg_bool(&m, "conv_mlp")?.unwrap_or(false);
    let mut conv_bias = arg_bool(&m, "conv_bias")?.unwrap_or(true);
    let mut use_grn = arg_bool(&m, "use_grn")?.unwrap_or(false);
    let act = arg_str(&m, "act_layer")?.unwrap_or_else(|| "gelu".into());
    let norm_name = arg_str(&m, "norm_layer")?;
    let norm = norm_kind(norm_name.as_deref())?;
    let eps = arg_f32(&m, "norm_eps")?.unwrap_or(1e-6);
    let head_init_scale = arg_f32(&m, "head_init_scale")?.unwrap_or(1.0);
    let mut stem = match stem_type.as_str() {
        "patch" => Stem::Patch(patch_size),
        "overlap" | "overlap_act" => Stem::Overlap { mid: dims[0], act: stem_type == "overlap_act" },
        "overlap_tiered" => Stem::Overlap { mid: make_divisible((dims[0] / 2) as f64, 8, 0.9), act: false },
        other => return Err(Error::unsupported(format!("ConvNeXt stem_type `{other}` is not supported (patch, overlap, overlap_tiered, overlap_act)"))),
    };

    // The weights record the structure; explicit model_args still win so a disagreeing file
    // fails on the tensor that disagrees.
    if b.weights().is_some() {
        for i in 0..4 {
            let blk = |j: usize| format!("stages.{i}.blocks.{j}");
            if !explicit("depths") {
                depths[i] = (0..)
                    .take_while(|&j| b.has_weight(&format!("{}.conv_dw.weight", blk(j))))
                    .count();
            }
            if let Some(s) = b.weight_shape(&format!("{}.conv_dw.weight", blk(0))) {
                if !explicit("dims") && s.len() == 4 {
                    dims[i] = s[0];
                }
                if !explicit("kernel_sizes") && s.len() == 4 {
                    kernel_sizes[i] = s[2];
                }
            } else if let Some(s) = b.weight_shape(&format!("stages.{i}.downsample.1.weight")) {
                if !explicit("dims") {
                    dims[i] = s[0];
                }
            }
        }
        let b0 = "stages.0.blocks.0";
        if b.has_weight(&format!("{b0}.conv_dw.weight")) {
            if !explicit("ls_init_value") {
                let has = b.has_weight(&format!("{b0}.gamma"));
                ls_init_value = match (has, ls_init_value) {
                    (true, None) => Some(1e-6),
                    (false, _) => None,
                    (true, v) => v,
                };
            }
            if !explicit("use_grn") {
                use_grn = b.has_weight(&format!("{b0}.mlp.grn.weight"));
            }
            if !explicit("conv_mlp") {
                if let Some(s) = b.weight_shape(&format!("{b0}.mlp.fc1.weight")) {
                    conv_mlp = s.len() == 4;
                }
            }
            if !explicit("conv_bias") {
                conv_bias = b.has_weight(&format!("{b0}.conv_dw.bias"));
            }
        }
        if !explicit("head_norm_first") {
            head_norm_first = b.has_weight("norm_pre.weight");
        }
        if !explicit("head_hidden_size") {
            head_hidden_size = b.weight_shape("head.pre_logits.fc.weight").map(|s| s[0]);
        }
        if !explicit("stem_type") && !explicit("patch_size") {
            if let Some(s) = b.weight_shape("stem.0.weight") {
                let second_conv = |n: &str| b.weight_shape(n).is_some_and(|s| s.len() == 4);
                stem = if second_conv("stem.1.weight") {
                    Stem::Overlap {
                        mid: s[0],
                        act: false,
                    }
                } else if second_conv("stem.2.weight") {
                    Stem::Overlap {
                        mid: s[0],
                        act: true,
                    }
                } else if s.len() == 4 {
                    Stem::Patch(s[2])
                } else {
                    stem
                };
            }
        }
    }
    if head_norm_first && head_hidden_size.is_some() {
        return Err(Error::invalid_model(
            "ConvNeXt head_norm_first cannot be combined with head_hidden_size (timm asserts this)",
        ));
    }
    Ok(Arch {
        depths,
        dims,
        kernel_sizes,
        ls_init_value,
        stem,
        head_init_scale,
        head_norm_first,
        head_hidden_size,
        conv_mlp,
        conv_bias,
        use_grn,
        act,
        norm,
        eps,
    })
}

// ---------------------------------------------------------------------------------------------
// graph pieces

/// The convolution init timm's ConvNeXt `_init_weights` uses; registering it first makes the
/// shared conv helper pick this parameter up instead of its own default.
fn conv(b: &mut Builder, x: &Value, prefix: &str, c: Conv) -> Result<Value> {
    b.param(
        &format!("{prefix}.weight"),
        &[c.out_ch, c.in_ch / c.groups, c.kernel.0, c.kernel.1],
        Init::TruncNormal(0.02),
    )?;
    layers::conv2d(b, x, prefix, c)
}

fn nchw_to_nhwc(b: &mut Builder, x: &Value) -> Value {
    b.op(
        "Transpose",
        &[x],
        vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
    )
}

fn nhwc_to_nchw(b: &mut Builder, x: &Value) -> Value {
    b.op(
        "Transpose",
        &[x],
        vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))],
    )
}

/// The arch's norm over the last axis of `x` (channels-last maps and `[N, C]` vectors).
fn norm_last(b: &mut Builder, x: &Value, prefix: &str, dim: usize, a: &Arch) -> Result<Value> {
    if a.norm == NormKind::Layer {
        return layers::layer_norm(b, x, prefix, dim, a.eps, -1);
    }
    let w = b.param(&format!("{prefix}.weight"), &[dim], Init::Ones)?;
    let axes = b.const_i64(vec![-1], &[1]);
    let eps = b.const_f32(vec![a.eps], &[]);
    // The x² → mean → +eps → sqrt → div → ·w chain is the pattern ONNX Runtime fuses into its
    // SimplifiedLayerNormalization kernel for RMS norm.
    let centred = if a.norm == NormKind::Simple {
        let mean = b.op("ReduceMean", &[x, &axes], vec![("keepdims", Attr::Int(1))]);
        b.op("Sub", &[x, &mean], vec![])
    } else {
        x.clone()
    };
    let two = b.const_f32(vec![2.0], &[]);
    let sq = b.op("Pow", &[&centred, &two], vec![]);
    let mut var = b.op(
        "ReduceMean",
        &[&sq, &axes],
        vec![("keepdims", Attr::Int(1))],
    );
    if a.norm == NormKind::Simple {
        // torch.var is unbiased: sum / (n - 1).
        let k = b.const_f32(vec![dim as f32 / (dim.max(2) - 1) as f32], &[]);
        var = b.op("Mul", &[&var, &k], vec![]);
    }
    let v = b.op("Add", &[&var, &eps], vec![]);
    let s = b.op("Sqrt", &[&v], vec![]);
    let y = b.op("Div", &[x, &s], vec![]);
    Ok(b.op("Mul", &[&y, &w], vec![]))
}

/// The arch's norm over the channels of an NCHW map (timm's `*Norm2d`).
fn norm_2d(b: &mut Builder, x: &Value, prefix: &str, dim: usize, a: &Arch) -> Result<Value> {
    let t = nchw_to_nhwc(b, x);
    let y = norm_last(b, &t, prefix, dim, a)?;
    Ok(nhwc_to_nchw(b, &y))
}

/// timm's `nn.Linear` on a channels-last map: MatMul with the transposed weight (folded by
/// ONNX Runtime at load) plus bias, then `act` if given. GELU is fused with the bias add as
/// ONNX Runtime's `BiasGelu` / `FastGelu` contrib kernels, the ops its optimiser makes of the
/// erf/tanh decompositions torch.onnx emits.
fn pointwise(
    b: &mut Builder,
    x: &Value,
    prefix: &str,
    in_f: usize,
    out_f: usize,
    act: Option<&str>,
) -> Result<Value> {
    let w = b.param(
        &format!("{prefix}.weight"),
        &[out_f, in_f],
        Init::TruncNormal(0.02),
    )?;
    let wt = b.op("Transpose", &[&w], vec![("perm", Attr::Ints(vec![1, 0]))]);
    let y = b.op("MatMul", &[x, &wt], vec![]);
    // timm's Mlp always has biases (conv_bias covers only the stem, downsample and dw convs).
    let bias = b.param(&format!("{prefix}.bias"), &[out_f], Init::Zeros)?;
    match act {
        Some("gelu") => Ok(b
            .op_n("BiasGelu", MS_DOMAIN, &[&y, &bias], vec![], 1)
            .remove(0)),
        Some("gelu_tanh") => Ok(b
            .op_n("FastGelu", MS_DOMAIN, &[&y, &bias], vec![], 1)
            .remove(0)),
        Some(other) => {
            let y = b.op("Add", &[&y, &bias], vec![]);
            layers::act(b, other, &y)
        }
        None => Ok(b.op("Add", &[&y, &bias], vec![])),
    }
}

/// timm's `GlobalResponseNorm` on an NHWC (or NCHW) map:
/// `x + bias + weight · x · (‖x‖₂,HW / (mean_C ‖x‖₂,HW + eps))`, computed as
/// `x · (1 + weight · n) + bias` so the per-channel factor is formed on the small `[N,1,1,C]`.
fn grn(
    b: &mut Builder,
    x: &Value,
    prefix: &str,
    dim: usize,
    channels_first: bool,
) -> Result<Value> {
    let mut w = b.param(&format!("{prefix}.weight"), &[dim], Init::Zeros)?;
    let mut bias = b.param(&format!("{prefix}.bias"), &[dim], Init::Zeros)?;
    let (spatial, channel) = if channels_first {
        // Per-channel vectors broadcast over NCHW as [C, 1, 1] (folded at load).
        let s = b.const_i64(vec![dim as i64, 1, 1], &[3]);
        w = b.op("Reshape", &[&w, &s], vec![]);
        bias = b.op("Reshape", &[&bias, &s], vec![]);
        (vec![2, 3], 1)
    } else {
        (vec![1, 2], -1)
    };
    let hw = b.const_i64(spatial, &[2]);
    let c = b.const_i64(vec![channel], &[1]);
    let g = b.op("ReduceL2", &[x, &hw], vec![("keepdims", Attr::Int(1))]);
    let gm = b.op("ReduceMean", &[&g, &c], vec![("keepdims", Attr::Int(1))]);
    let eps = b.const_f32(vec![1e-6], &[]);
    let den = b.op("Add", &[&gm, &eps], vec![]);
    let n = b.op("Div", &[&g, &den], vec![]);
    let wn = b.op("Mul", &[&n, &w], vec![]);
    let one = b.const_f32(vec![1.0], &[]);
    let scale = b.op("Add", &[&wn, &one], vec![]);
    let y = b.op("Mul", &[x, &scale], vec![]);
    Ok(b.op("Add", &[&y, &bias], vec![]))
}

/// GELU as ONNX Runtime's contrib kernels (what its optimiser turns torch's erf/tanh
/// decompositions into); other activations as standard ops.
fn fast_act(b: &mut Builder, name: &str, x: &Value) -> Result<Value> {
    match name {
        "gelu" => Ok(b.op_n("Gelu", MS_DOMAIN, &[x], vec![], 1).remove(0)),
        "gelu_tanh" => Ok(b.op_n("FastGelu", MS_DOMAIN, &[x], vec![], 1).remove(0)),
        other => layers::act(b, other, x),
    }
}

fn block(b: &mut Builder, x: &Value, p: &str, dim: usize, k: usize, a: &Arch) -> Result<Value> {
    let dw = Conv::new(dim, dim, k)
        .groups(dim)
        .pad(Pad::Sym((k - 1) / 2))
        .bias(a.conv_bias);
    let y = conv(b, x, &format!("{p}.conv_dw"), dw)?;
    let hidden = 4 * dim;
    let y = if a.conv_mlp {
        // timm's conv-MLP layout kept as is: 1x1 Convs on NCHW let ONNX Runtime's NCHWc
        // transformer run the whole MLP in its blocked layout, faster than MatMuls here.
        let y = norm_2d(b, &y, &format!("{p}.norm"), dim, a)?;
        let fc = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(true);
        let y = conv(b, &y, &format!("{p}.mlp.fc1"), fc(dim, hidden))?;
        let y = fast_act(b, &a.act, &y)?;
        let y = if a.use_grn {
            grn(b, &y, &format!("{p}.mlp.grn"), hidden, true)?
        } else {
            y
        };
        let mut y = conv(b, &y, &format!("{p}.mlp.fc2"), fc(hidden, dim))?;
        if let Some(ls) = a.ls_init_value {
            let g = b.param(&format!("{p}.gamma"), &[dim], Init::Const(ls))?;
            let s = b.const_i64(vec![dim as i64, 1, 1], &[3]);
            let g = b.op("Reshape", &[&g, &s], vec![]);
            y = b.op("Mul", &[&y, &g], vec![]);
        }
        y
    } else {
        let y = nchw_to_nhwc(b, &y);
        let y = norm_last(b, &y, &format!("{p}.norm"), dim, a)?;
        let y = pointwise(b, &y, &format!("{p}.mlp.fc1"), dim, hidden, Some(&a.act))?;
        let y = if a.use_grn {
            grn(b, &y, &format!("{p}.mlp.grn"), hidden, false)?
        } else {
            y
        };
        let mut y = pointwise(b, &y, &format!("{p}.mlp.fc2"), hidden, dim, None)?;
        if let Some(ls) = a.ls_init_value {
            let g = b.param(&format!("{p}.gamma"), &[dim], Init::Const(ls))?;
            y = b.op("Mul", &[&y, &g], vec![]);
        }
        nhwc_to_nchw(b, &y)
    };
    Ok(layers::add(b, &y, x))
}

fn build(b: &mut Builder, cfg: &ModelConfig, output: OutputKind) -> Result<(Value, usize)> {
    let a = resolve(b, cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let pool = cfg.global_pool.clone().unwrap_or_else(|| "avg".into());
    let pool = if cfg.model_args.contains_key("global_pool") {
        arg_str(&cfg.model_args, "global_pool")?.unwrap_or(pool)
    } else {
        pool
    };

    // Stem.
    let x = b.input();
    let (mut x, stem_stride, norm_idx) = match a.stem {
        Stem::Patch(p) => (
            conv(
                b,
                &x,
                "stem.0",
                Conv::new(in_ch, a.dims[0], p)
                    .stride(p)
                    .pad(Pad::Sym(0))
                    .bias(a.conv_bias),
            )?,
            p,
            1,
        ),
        Stem::Overlap { mid, act } => {
            let y = conv(
                b,
                &x,
                "stem.0",
                Conv::new(in_ch, mid, 3)
                    .stride(2)
                    .pad(Pad::Sym(1))
                    .bias(a.conv_bias),
            )?;
            let (y, next) = if act {
                (layers::act(b, &a.act, &y)?, 2)
            } else {
                (y, 1)
            };
            let y = conv(
                b,
                &y,
                &format!("stem.{next}"),
                Conv::new(mid, a.dims[0], 3)
                    .stride(2)
                    .pad(Pad::Sym(1))
                    .bias(a.conv_bias),
            )?;
            (y, 4, next + 1)
        }
    };
    x = norm_2d(b, &x, &format!("stem.{norm_idx}"), a.dims[0], &a)?;

    // Stages.
    let mut prev = a.dims[0];
    let mut curr_stride = stem_stride;
    for i in 0..4 {
        let stride = if curr_stride == 2 || i > 0 { 2 } else { 1 };
        if curr_stride >= 32 && stride > 1 {
            return Err(Error::unsupported("ConvNeXt with a stem stride that makes timm dilate the last stages is not supported"));
        }
        curr_stride *= stride;
        let out = a.dims[i];
        if prev != out || stride > 1 {
            let p = format!("stages.{i}.downsample");
            let y = norm_2d(b, &x, &format!("{p}.0"), prev, &a)?;
            let ks = if stride > 1 { 2 } else { 1 };
            x = conv(
                b,
                &y,
                &format!("{p}.1"),
                Conv::new(prev, out, ks)
                    .stride(stride)
                    .pad(Pad::Sym(0))
                    .bias(a.conv_bias),
            )?;
        }
        for j in 0..a.depths[i] {
            x = block(
                b,
                &x,
                &format!("stages.{i}.blocks.{j}"),
                out,
                a.kernel_sizes[i],
                &a,
            )?;
        }
        prev = out;
    }

    // Head.
    let nf = prev;
    let features = if a.head_norm_first {
        let y = norm_2d(b, &x, "norm_pre", nf, &a)?;
        let (p, mult) = global_pool(b, &y, &pool, true)?;
        (p, nf * mult)
    } else {
        let (p, mult) = global_pool(b, &x, &pool, false)?;
        let mut y = norm_last(b, &p, "head.norm", nf * mult, &a)?;
        let mut width = nf * mult;
        if let Some(h) = a.head_hidden_size {
            y = layers::linear_2d(
                b,
                &y,
                "head.pre_logits.fc",
                width,
                h,
                true,
                Init::TruncNormal(0.02),
            )?;
            y = layers::gelu(b, &y);
            width = h;
        }
        (y, width)
    };
    let (feat, width) = features;
    if output == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((feat, width));
    }
    let init = Init::TruncNormal(0.02 * a.head_init_scale);
    let logits = layers::linear_2d(b, &feat, "head.fc", width, cfg.num_classes, true, init)?;
    Ok((logits, cfg.num_classes))
}

// ---------------------------------------------------------------------------------------------
// default configs

const IMAGENET: ([f64; 3], [f64; 3]) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
const CLIP: ([f64; 3], [f64; 3]) = (
    [0.48145466, 0.4578275, 0.40821073],
    [0.26862954, 0.26130258, 0.27577711],
);
const HALF: ([f64; 3], [f64; 3]) = ([0.5; 3], [0.5; 3]);

/// One row of timm 1.0.31's default (first) pretrained cfg for an architecture.
pub(crate) struct Pcfg {
    pub tag: &'static str,
    pub size: usize,
    pub test_size: Option<usize>,
    pub crop_pct: f64,
    pub test_crop_pct: Option<f64>,
    pub crop_mode: &'static str,
    pub norm: ([f64; 3], [f64; 3]),
    pub license: &'static str,
}

/// The config.json timm writes for a model with this pretrained cfg.
pub(crate) fn config_json(arch: &str, p: &Pcfg, num_features: usize, first_conv: &str) -> Json {
    let mut pc = json!({
        "tag": p.tag,
        "custom_load": false,
        "input_size": [3, p.size, p.size],
        "fixed_input_size": false,
        "interpolation": "bicubic",
        "crop_pct": p.crop_pct,
        "crop_mode": p.crop_mode,
        "mean": p.norm.0,
        "std": p.norm.1,
        "num_classes": 1000,
        "pool_size": [p.size / 32, p.size / 32],
        "first_conv": first_conv,
        "classifier": "head.fc",
        "license": p.license,
    });
    if let Some(t) = p.test_size {
        pc["test_input_size"] = json!([3, t, t]);
    }
    if let Some(t) = p.test_crop_pct {
        pc["test_crop_pct"] = json!(t);
    }
    json!({
        "architecture": arch,
        "num_classes": 1000,
        "num_features": num_features,
        "global_pool": "avg",
        "model_args": {},
        "pretrained_cfg": pc,
    })
}

fn pcfg(arch: &str) -> Option<Pcfg> {
    let p = |tag, size, test_size, crop_pct, test_crop_pct, norm, license| Pcfg {
        tag,
        size,
        test_size,
        crop_pct,
        test_crop_pct,
        crop_mode: "center",
        norm,
        license,
    };
    const A: &str = "apache-2.0";
    const NC: &str = "cc-by-nc-4.0";
    Some(match arch {
        "convnext_atto" => p("d2_in1k", 224, Some(288), 0.875, Some(0.95), IMAGENET, A),
        "convnext_atto_ols" => p("a2_in1k", 224, Some(288), 0.875, Some(0.95), IMAGENET, A),
        "convnext_atto_rms" => p("untrained", 224, Some(256), 0.875, Some(0.95), IMAGENET, A),
        "convnext_femto" | "convnext_femto_ols" | "convnext_pico" => {
            p("d1_in1k", 224, Some(288), 0.875, Some(0.95), IMAGENET, A)
        }
        "convnext_pico_ols" => p("d1_in1k", 224, Some(288), 0.95, Some(1.0), IMAGENET, A),
        "convnext_nano" | "convnext_tiny" | "convnext_small" => p(
            "in12k_ft_in1k",
            224,
            Some(288),
            0.95,
            Some(1.0),
            IMAGENET,
            A,
        ),
        "convnext_nano_ols" => p("d1h_in1k", 224, Some(288), 0.95, Some(1.0), IMAGENET, A),
        "convnext_tiny_hnf" => p("a2h_in1k", 224, Some(288), 0.95, Some(1.0), IMAGENET, A),
        "convnext_base" | "convnext_large" | "convnext_xlarge" => p(
            "fb_in22k_ft_in1k",
            224,
            Some(288),
            0.875,
            Some(1.0),
            IMAGENET,
            A,
        ),
        "convnext_large_mlp" => p(
            "clip_laion2b_soup_ft_in12k_in1k_320",
            320,
            None,
            1.0,
            None,
            CLIP,
            A,
        ),
        "convnext_xxlarge" => p("clip_laion2b_soup_ft_in1k", 256, None, 1.0, None, CLIP, A),
        "convnext_zepto_rms" => p("ra4_e3600_r224_in1k", 224, None, 0.875, None, HALF, A),
        "convnext_zepto_rms_ols" => p("ra4_e3600_r224_in1k", 224, None, 0.9, None, HALF, A),
        "convnextv2_atto" | "convnextv2_femto" | "convnextv2_pico" => p(
            "fcmae_ft_in1k",
            224,
            Some(288),
            0.875,
            Some(0.95),
            IMAGENET,
            NC,
        ),
        "convnextv2_nano" | "convnextv2_tiny" | "convnextv2_base" | "convnextv2_large" => p(
            "fcmae_ft_in22k_in1k",
            224,
            Some(288),
            0.875,
            Some(1.0),
            IMAGENET,
            NC,
        ),
        "convnextv2_huge" => Pcfg {
            crop_mode: "squash",
            ..p(
                "fcmae_ft_in22k_in1k_384",
                384,
                None,
                1.0,
                None,
                IMAGENET,
                NC,
            )
        },
        "convnextv2_small" => p("untrained", 224, None, 0.875, None, IMAGENET, A),
        "test_convnext" | "test_convnext2" | "test_convnext3" => {
            p("r160_in1k", 160, None, 0.95, None, HALF, A)
        }
        _ => return None,
    })
}

fn default_config(arch: &str) -> Option<Json> {
    let t = table(arch)?;
    let p = pcfg(arch)?;
    let dims = arg_list(&t, "dims", 4).ok()??;
    let nf = dims[3];
    Some(config_json(arch, &p, nf, "stem.0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_default_config() {
        for arch in [
            "convnext_atto",
            "convnext_xxlarge",
            "convnextv2_huge",
            "test_convnext3",
            "convnext_zepto_rms_ols",
        ] {
            let cfg = default_config(arch).unwrap_or_else(|| panic!("{arch}"));
            ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
        }
        assert!(default_config("convnext_unknown").is_none());
    }

    #[test]
    fn make_divisible_matches_timm_rounding() {
        // timm: make_divisible(v, 8) = max(8, int(v + 4) // 8 * 8), +8 when below 0.9·v.
        assert_eq!(make_divisible(20.0, 8, 0.9), 24);
        assert_eq!(make_divisible(3.0, 8, 0.9), 8);
    }
}
