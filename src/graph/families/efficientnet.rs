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
use super::super::layers::efficientnet_blocks::NormKind;
use super::super::layers::efficientnet_builder::{
    self, check_layout, plan, BlockDef, EfficientNetBuilder, Kind, RoundChs, SeRound,
};
use super::super::layers::pool::{global_pool, PoolKind};
use super::super::layers::resnet_parts::Aa;
use super::super::layers::{self, act, conv2d, mlp::linear_2d, Conv, Pad};
use super::super::tables::Table;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::{Builder, Family, Init, OutputKind, Value};
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
lcnet_*, efficientnet_x_b3/b5, efficientnet_h_b5, efficientnet_cc_*, mobilenet_edgetpu_100/v2_*, mobilenetv1_*, mobilenetv2_*, mobilenetv3_*, mobilenetv4_conv_*/hybrid_*, hardcorenas_a..f, \
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
    /// MobileNet-EdgeTPU v1 / v2 (the EfficientNet class: `cn` / `er` blocks, grouped `er`).
    EdgeTpu,
    /// EfficientNet-X / -H (`_gen_efficientnet_x`): a space-to-depth first block.
    X,
    /// EfficientNet-CondConv: `cc<n>` blocks with n × `experts_multiplier` experts.
    CondConv,
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
            "mobilenet_edgetpu" => Gen::EdgeTpu,
            "efficientnet_x" => Gen::X,
            "efficientnet_condconv" => Gen::CondConv,
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
        /// EfficientNet-X's block table (1: X, 2: H); the table's `arch_def` is the entrypoint's.
        version: usize = 1,
        /// EfficientNet-CondConv: experts per `cc<n>` block are n times this.
        experts_multiplier: usize = 1,
        /// Anti-aliasing of strided block convs (`avg`, `blurpc`, ...).
        aa_layer: Option<String> = None,
        /// `gc`: GlobalContext blocks in the SE's place (gc_efficientnetv2_rw_t).
        se_layer: Option<String> = None,
        /// The pruned EfficientNets: conv module -> output width (timm's pruning file).
        pruned: serde_json::Value = serde_json::Value::Bool(false),
    }
}

// ------------------------------------------------------------------------------------------------
// The model: what the `_gen_*` helper and the model class make of the arguments.

/// The model class's own settings; `eb` holds those every block shares (`EfficientNetBuilder`'s).
#[derive(Debug, Clone)]
struct Model {
    gen: Gen,
    eb: EfficientNetBuilder,
    stem: usize,
    stem_k: usize,
    /// conv_head width; 0: no conv_head (MobileNet-V1 without `head_conv`).
    num_features: usize,
    head_bias: bool,
    head_norm: bool,
    pool: PoolKind,
}

/// `decode_arch_def` over the generator's strings and depth and experts settings.
fn decode_arch_def(a: &EffNetArgs) -> Result<Vec<Vec<BlockDef>>> {
    let dm = a
        .depth_multiplier
        .expand("depth_multiplier", a.arch_def.len())?;
    let mut stages = efficientnet_builder::decode_arch_def(
        &a.arch_def,
        &dm,
        &a.depth_trunc,
        a.fix_first_last,
        a.group_size,
    )?;
    for d in stages.iter_mut().flatten() {
        d.experts *= a.experts_multiplier;
    }
    Ok(stages)
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
             builds; supported: {EXAMPLES}",
            a.gen
        ))
    })?;
    if args.explicit("version") {
        return Err(args.unsupported(
            "version",
            "the block table is the entrypoint's own; give `arch_def` instead",
        ));
    }
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
        Gen::EfficientNet | Gen::Edge | Gen::V2Base | Gen::X | Gen::CondConv => {
            Some(round.apply(1280))
        }
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
    let se_round = match (a.se_round_chs, gen) {
        // FBNet-V3 rounds with its own `round_chs_fn` (multiplier, limit 0.95).
        (true, Gen::Fbnetv3) => SeRound::RoundChs,
        (true, _) => SeRound::Divisible,
        _ => SeRound::Round,
    };
    let se_round = match a.se_layer.as_deref() {
        None => se_round,
        Some("gc") => SeRound::GlobalContext,
        Some(_) => return Err(args.unsupported("se_layer", "only timm's SqueezeExcite and 'gc'")),
    };
    Ok(Model {
        gen,
        eb: EfficientNetBuilder {
            round,
            act: a.act_layer.clone(),
            norm: NormKind::from_args(a.norm_layer.as_ref(), a.bn_eps, &a.act_layer, args)?,
            tf_same,
            se_gate: a.se_gate.clone(),
            se_force_act: a.se_force_act.clone(),
            se_round,
            se_from_exp: a.se_from_exp.unwrap_or(gen.mobilenetv3()),
            layer_scale: a.layer_scale_init_value.map(|v| v as f32),
            output_stride,
            aa: Aa::from_timm(args, a.aa_layer.as_deref())?,
        },
        stem: if fix_stem { stem } else { round.apply(stem) },
        stem_k: a.stem_kernel_size,
        num_features,
        head_bias: a.head_bias,
        head_norm: a.head_norm,
        pool: PoolKind::Avg,
    })
}

/// timm's `adapt_model_from_file` for the pruned EfficientNets: each block's expanded, SE and
/// output widths from the weights' shapes, or without weights from the pruning file's widths
/// (`widths`: conv module -> output channels); each block's input is the previous output.
fn prune(
    b: &Builder,
    stages: &mut [Vec<efficientnet_builder::Block>],
    widths: &serde_json::Map<String, serde_json::Value>,
    stem: usize,
) -> Result<()> {
    let width = |name: String| -> Result<usize> {
        let w = match b.weights() {
            Some(_) => b.weight_shape(&format!("{name}.weight")).map(|s| s[0]),
            None => widths
                .get(&name)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize),
        };
        w.filter(|&w| w > 0).ok_or_else(|| {
            Error::invalid_model(format!(
                "pruned EfficientNet: no width for `{name}` (the weights have no `{name}.weight`: \
                 they were saved from another architecture or model_args)"
            ))
        })
    };
    let mut in_ch = stem;
    for (i, stage) in stages.iter_mut().enumerate() {
        for (j, blk) in stage.iter_mut().enumerate() {
            let at = |conv: &str| format!("blocks.{i}.{j}.{conv}");
            blk.in_ch = in_ch;
            match blk.d.kind {
                Kind::Ir => {
                    blk.mid = width(at("conv_pw"))?;
                    blk.out = width(at("conv_pwl"))?;
                }
                Kind::Ds => {
                    blk.mid = in_ch;
                    blk.out = width(at("conv_pw"))?;
                }
                _ => {
                    return Err(Error::unsupported(
                        "pruned EfficientNets are built of ds / ir blocks only",
                    ))
                }
            }
            if blk.se_rd.is_some() {
                blk.se_rd = Some(width(at("se.conv_reduce"))?);
            }
            blk.skip = blk.stride == 1 && blk.in_ch == blk.out && !blk.d.noskip;
            in_ch = blk.out;
        }
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
    let mut stages = plan(&m.eb, m.stem, &decode_arch_def(&a)?)?;
    if let Some(widths) = a.pruned.as_object() {
        prune(b, &mut stages, widths, m.stem)?;
    }
    check_layout(b, arch, &stages)?;

    // Stem: conv_stem, bn1 + act.
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let stem = m.eb.conv(in_chans, m.stem, m.stem_k, 2, 1);
    let input = b.input();
    let mut x =
        m.eb.conv_bn_act(b, &input, ("conv_stem", "bn1"), stem, Some(&m.eb.act))?;
    // timm's feature_info: the stem when the first block strides, then the end of every stage
    // that the next one downsamples (by its block string), and the last stage.
    let defs = decode_arch_def(&a)?;
    if defs[0].first().is_some_and(|d| d.stride > 1 || d.s2d) {
        b.feature(&x, m.stem, 2, "bn1");
    }
    let mut last = m.stem;
    for (i, stage) in stages.iter().enumerate() {
        for (j, blk) in stage.iter().enumerate() {
            x =
                m.eb.block(&mut b.scope("blocks").scope(i).scope(j), &x, blk)?;
            last = blk.out;
        }
        // Inside a space-to-depth region timm takes no map at a stage's end.
        let in_region = stage.last().is_some_and(|k| k.in_s2d_region);
        let next_strides = defs
            .get(i + 1)
            .is_none_or(|s| s.first().is_some_and(|d| d.stride > 1 && !in_region));
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
    let c = m.eb.conv(last, m.num_features, 1, 1, 1);
    let y =
        m.eb.conv_bn_act(b, x, ("conv_head", "bn2"), c, Some(&m.eb.act))?;
    Ok(global_pool(b, &y, m.pool))
}

/// `MobileNetV3`'s head: global pool, conv_head on the pooled map, then act (+ bias) or, with
/// `head_norm` (MobileNetV4), norm_head + act; flatten.
fn head_mobilenetv3(b: &mut Builder, m: &Model, x: &Value, last: usize) -> Result<Value> {
    let pooled = b.op("GlobalAveragePool", &[x], vec![]);
    let c = Conv::new(last, m.num_features, 1).pad(Pad::create(1, 1, 1, m.eb.tf_same));
    let h = if m.head_norm {
        m.eb.conv_bn_act(b, &pooled, ("conv_head", "norm_head"), c, Some(&m.eb.act))?
    } else {
        let h = conv2d(&mut b.scope("conv_head"), &pooled, c.bias(m.head_bias))?;
        act(b, &m.eb.act, &h)?
    };
    Ok(layers::flatten(b, &h, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let Ok(a) = EffNetArgs::read(&args) else {
                continue;
            };
            let Ok(m) = model(arch, &a, &args, &cfg, None) else {
                assert!(a.norm_layer.is_some(), "{arch} refused");
                continue;
            };
            let stages = plan(&m.eb, m.stem, &decode_arch_def(&a).unwrap()).unwrap();
            let last = stages.iter().flatten().last().unwrap().out;
            let nf = if m.gen.mobilenetv3() || m.num_features == 0 {
                last
            } else {
                m.num_features
            };
            assert_eq!(Some(nf as u64), e.config["num_features"].as_u64(), "{arch}");
            built += 1;
        }
        eprintln!("{built} architectures built");
        assert!(built >= 150, "only {built} architectures built");
        // Every generator of the table is built.
        assert!(TABLE.names().iter().all(|a| default_config(a).is_some()));
        assert!(!matches("resnet50"));
    }
}
