//! MobileNet-V5, Gemma 3n's vision encoder (timm `mobilenetv5.py`): MobileNet-V4 blocks (edge
//! residual `er`, universal inverted residual `uir`, mobile multi-query attention `mqa`) decoded
//! from block strings by timm's `EfficientNetBuilder`, with RmsNorm2d, tanh-GELU and layer scale,
//! then the Multi-Scale Fusion Adapter (MSFA) neck: the last two feature levels resized to the
//! finer one (nearest), concatenated, a `UniversalInvertedResidual` FFN, average-pooled (or
//! bilinearly resized) to `msfa_output_resolution`, RmsNorm2d. The classifier pools that map.
//!
//! The MSFA's resizes are sized at build time, so a graph with the neck (logits, pre-logits)
//! declares its input size; feature maps (`forward_intermediates`: the stem and every stage end)
//! take any size. `MobileNetV5Encoder` (`*_enc`) builds its feature maps only: its forward returns
//! the MSFA map (B, 2048, 16, 16), not one vector per image, and timm gives it no `forward_head`.
//!
//! A `model_args` `block_args` (timm's decoded block dicts) replaces the entrypoint's strings, as
//! it does in timm's `_gen_mobilenet_v5`.

use serde_json::Value as Json;

use super::super::args::Args;
use super::super::layers::efficientnet_blocks::NormKind;
use super::super::layers::efficientnet_builder::{
    block_from_args, check_layout, decode_arch_def, decode_block, plan, Block, BlockDef,
    EfficientNetBuilder, RoundChs, SeRound,
};
use super::super::layers::pool::{global_pool, PoolKind};
use super::super::layers::upsample::resize_nearest_to;
use super::super::layers::{self, mlp::linear_2d, norm::Norm};
use super::super::tables::Table;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

pub const FAMILY: Family = Family {
    name: "mobilenetv5",
    examples: "mobilenetv5_300m, mobilenetv5_base",
    matches,
    build,
    default_config,
    any_size: true,
};

static TABLE: Table = Table::new(include_str!("../tables/mobilenetv5.json"));

pub fn matches(arch: &str) -> bool {
    TABLE.contains(arch)
}

pub fn default_config(arch: &str) -> Option<serde_json::Value> {
    TABLE.get(arch).map(|e| e.config.clone())
}

timm_args! {
    /// `_gen_mobilenet_v5`'s arguments and `MobileNetV5.__init__`'s, timm's defaults.
    struct Mnv5Args {
        /// `MobileNetV5Encoder` (the `_enc` entrypoint).
        encoder: bool = false,
        channel_multiplier: f64 = 1.0,
        group_size: Option<usize> = None,
        arch_def: Vec<Vec<String>> = Vec::new(),
        block_args: Option<Json> = None,
        stem_size: usize = 16,
        stem_bias: bool = true,
        fix_stem: bool = false,
        num_features: usize = 2048,
        pad_type: String = String::new(),
        use_msfa: bool = true,
        msfa_indices: Vec<i64> = vec![-2, -1],
        msfa_output_resolution: usize = 16,
        act_layer: String = "gelu_tanh".into(),
        norm_layer: String = "rmsnorm2d".into(),
        se_from_exp: bool = true,
        layer_scale_init_value: Option<f64> = None,
        global_pool: String = "avg".into(),
    }
}

/// The block definitions: `block_args` when given, else the entrypoint's strings decoded.
fn block_defs(a: &Mnv5Args, args: &Args) -> Result<Vec<Vec<BlockDef>>> {
    let defs = match &a.block_args {
        Some(Json::Array(stages)) => stages
            .iter()
            .map(|s| match s {
                Json::Array(blocks) => blocks.iter().map(block_from_args).collect(),
                _ => Err(args.unsupported("block_args", "not a list of stages")),
            })
            .collect::<Result<Vec<Vec<BlockDef>>>>()?,
        Some(Json::Null) | None => {
            let dm = vec![1.0; a.arch_def.len()];
            decode_arch_def(&a.arch_def, &dm, "ceil", false, a.group_size)?
        }
        Some(_) => return Err(args.unsupported("block_args", "not a list of stages")),
    };
    if defs.is_empty() || defs.iter().any(|s| s.is_empty()) {
        return Err(Error::invalid_model(
            "MobileNet-V5 without blocks in every stage",
        ));
    }
    Ok(defs)
}

pub fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an architecture of timm's mobilenetv5 module"
        ))
    })?;
    let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let a = Mnv5Args::read(&args)?;
    if a.encoder {
        // timm's encoder class has no `use_msfa`; its features_only maps are the classifier's.
        if args.explicit("use_msfa") {
            return Err(args.unsupported("use_msfa", "MobileNetV5Encoder takes no use_msfa"));
        }
        if b.output() != OutputKind::FeatureMaps {
            return Err(Error::unsupported(format!(
                "`{arch}` is MobileNetV5Encoder: its forward returns the MSFA map (B, 2048, 16, 16), \
                 not one vector per image, and timm gives it no forward_head; use output=feature_maps \
                 or the classifier `{}`",
                arch.trim_end_matches("_enc")
            )));
        }
    }
    let act = layers::act::canonical(&a.act_layer)?.to_string();
    if Norm::from_timm(&a.norm_layer, None)? != (Norm::Rms { eps: 1e-6 }) {
        return Err(args.unsupported("norm_layer", "only RmsNorm2d is built"));
    }
    let tf_same = match a.pad_type.as_str() {
        "" => false,
        "same" | "SAME" => true,
        _ => return Err(args.unsupported("pad_type", "only '' and 'same' are implemented")),
    };
    if a.global_pool != "avg" {
        return Err(args.unsupported("global_pool", "only `avg` is built"));
    }
    let cm = a.channel_multiplier;
    if !(0.0..=64.0).contains(&cm) {
        return Err(args.unsupported("channel_multiplier", "out of range [0, 64]"));
    }
    let eb = EfficientNetBuilder {
        round: RoundChs {
            multiplier: cm,
            divisor: 8,
            round_limit: 0.9,
        },
        act,
        norm: NormKind::Rms(1e-6),
        tf_same,
        se_gate: "sigmoid".into(),
        se_force_act: None,
        se_round: SeRound::Round,
        se_from_exp: a.se_from_exp,
        layer_scale: a.layer_scale_init_value.map(|v| v as f32),
        output_stride: 32,
        aa: None,
    };
    // `_gen_mobilenet_v5` fixes the stem below multiplier 1 (the table holds the entrypoint's).
    let fix_stem = if args.explicit("fix_stem") {
        a.fix_stem
    } else {
        cm < 1.0
    };
    let stem = if fix_stem {
        a.stem_size
    } else {
        eb.round.apply(a.stem_size)
    };
    let defs = block_defs(&a, &args)?;
    let stages = plan(&eb, stem, &defs)?;
    check_layout(b, arch, &stages)?;

    // Stem: ConvNormAct (conv with bias, RmsNorm2d + act).
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let c = eb.conv(in_chans, stem, 3, 2, 1).bias(a.stem_bias);
    let input = b.input();
    let mut x = eb.conv_bn_act(
        &mut b.scope("conv_stem"),
        &input,
        ("conv", "bn"),
        c,
        Some(&eb.act),
    )?;
    // `feat_idx` of forward_features: 0 the stem, i + 1 after stage i; the MSFA takes the
    // outputs at `msfa_indices` (counted over feature_info).
    let mut outputs = vec![(x.clone(), stem)];
    if defs[0][0].stride > 1 {
        b.feature(&x, stem, 2, "bn1");
    }
    let mut last = stem;
    for (i, stage) in stages.iter().enumerate() {
        for (j, blk) in stage.iter().enumerate() {
            x = eb.block(&mut b.scope("blocks").scope(i).scope(j), &x, blk)?;
            last = blk.out;
        }
        outputs.push((x.clone(), last));
        let next_strides = defs.get(i + 1).is_none_or(|s| s[0].stride > 1);
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

    let width;
    let pooled = if a.use_msfa {
        let n = b.feature_count() as i64;
        let mut take = Vec::new();
        for &i in &a.msfa_indices {
            let t = if i < 0 { n + i } else { i };
            if !(0..n).contains(&t) {
                return Err(args.unsupported("msfa_indices", "out of range of feature_info"));
            }
            take.push(t as usize);
        }
        let inputs: Vec<(Value, usize)> = outputs
            .iter()
            .enumerate()
            .filter(|(k, _)| take.contains(k))
            .map(|(_, o)| o.clone())
            .collect();
        if inputs.is_empty() || inputs.len() > outputs.len() {
            return Err(args.unsupported("msfa_indices", "no MSFA inputs"));
        }
        let y = msfa(&mut b.scope("msfa"), &eb, &inputs, &a)?;
        width = a.num_features;
        global_pool(b, &y, PoolKind::Avg)
    } else {
        // MobileNet-V4 style head: pool, a bias-free 1x1 conv_head, norm_head + act.
        let p = b.op("GlobalAveragePool", &[&x], vec![]);
        let c = eb.conv(last, a.num_features, 1, 1, 1);
        let h = eb.conv_bn_act(b, &p, ("conv_head", "norm_head"), c, Some(&eb.act))?;
        width = a.num_features;
        layers::flatten(b, &h, 1)
    };
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = linear_2d(
        &mut b.scope("classifier"),
        &pooled,
        width,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}

/// The (H, W) of `x` at the size the graph is built for.
fn size_at_build(b: &Builder, x: &Value) -> Result<(usize, usize)> {
    let (h, w) = b.nominal_hw();
    let s = b
        .spatial(x)
        .ok_or_else(|| Error::invalid_model("MSFA input without a known spatial size"))?;
    match (s.eval(h), s.eval(w)) {
        (Some(oh), Some(ow)) => Ok((oh, ow)),
        _ => Err(Error::invalid_argument(format!(
            "input {h}x{w} is too small for this model"
        ))),
    }
}

/// `Resize` of NCHW `x` to `(h, w)`: `nearest` as torch's (floor of dst · in/out) or `linear`
/// as `F.interpolate(mode='bilinear', align_corners=False)`.
fn resize(b: &mut Builder, x: &Value, (h, w): (usize, usize), linear: bool) -> Value {
    let shape = b.op("Shape", &[x], vec![]);
    let nc = layers::slice(b, &shape, 0, 0, 2);
    let hw = b.ints(&[h as i64, w as i64]);
    let sizes = layers::concat(b, &[&nc, &hw], 0);
    if !linear {
        return resize_nearest_to(b, x, &sizes);
    }
    let none = b.none();
    let attrs = vec![
        ("mode", Attr::Str("linear".into())),
        (
            "coordinate_transformation_mode",
            Attr::Str("pytorch_half_pixel".into()),
        ),
    ];
    b.op("Resize", &[x, &none, &none, &sizes], attrs)
}

/// `MobileNetV5MultiScaleFusionAdapter`: resize every input to the first's size, concatenate,
/// the FFN (`UniversalInvertedResidual`, no depthwise convs, expansion 2, no skip, no layer
/// scale), pool or resize to the output resolution, RmsNorm2d.
fn msfa(
    b: &mut Builder,
    eb: &EfficientNetBuilder,
    inputs: &[(Value, usize)],
    a: &Mnv5Args,
) -> Result<Value> {
    b.fix_input_size();
    let high = size_at_build(b, &inputs[0].0)?;
    let mut resized = Vec::with_capacity(inputs.len());
    for (x, _) in inputs {
        let hw = size_at_build(b, x)?;
        resized.push(if hw.0 < high.0 || hw.1 < high.1 {
            resize(b, x, high, false)
        } else {
            x.clone()
        });
    }
    let refs: Vec<&Value> = resized.iter().collect();
    let cat = layers::concat(b, &refs, 1);
    let in_ch: usize = inputs.iter().map(|(_, c)| c).sum();
    let out = a.num_features;
    let ffn_eb = EfficientNetBuilder {
        layer_scale: None,
        ..eb.clone()
    };
    let d = decode_block(&format!("uir_r1_a0_k0_s1_e2_c{out}_noskip"))?;
    let blk = Block {
        mid: layers::make_divisible(in_ch as f64 * 2.0, 8, 0.9),
        in_ch,
        out,
        stride: 1,
        dilation: 1,
        group_size: None,
        act: eb.act.clone(),
        se_rd: None,
        skip: false,
        reduction: 0,
        s2d: 0,
        in_s2d_region: false,
        d,
    };
    let mut y = ffn_eb.universal_inverted_residual(&mut b.scope("ffn"), &cat, &blk)?;
    let r = a.msfa_output_resolution;
    if r == 0 {
        return Err(Error::invalid_model("msfa_output_resolution 0"));
    }
    if high != (r, r) {
        y = if high.0 % r != 0 || high.1 % r != 0 {
            resize(b, &y, (r, r), true)
        } else {
            let (kh, kw) = (high.0 / r, high.1 / r);
            b.op(
                "AveragePool",
                &[&y],
                vec![
                    ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
                    ("strides", Attr::Ints(vec![kh as i64, kw as i64])),
                ],
            )
        };
    }
    NormKind::Rms(1e-6)
        .norm(out)?
        .apply_2d(&mut b.scope("norm"), &y, out)
}
