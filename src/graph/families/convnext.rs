//! ConvNeXt v1 and v2 (timm's `convnext.py`): `convnext_zepto_rms` .. `convnext_xxlarge`,
//! `convnextv2_atto` .. `convnextv2_huge` and timm's `test_convnext*`.
//!
//! The structure comes from three places, in this order: `model_args` in config.json, the
//! weights (transformers' folders drop `model_args`, so the tensors are the only record of a
//! customised model: depths, widths, kernel sizes, layer scale, GRN, MLP layout, stem, head),
//! then the entrypoint's arguments from the generated table. Activation, norm type and eps are
//! not in the weights and come from the table / `model_args` only.
//!
//! Blocks keep timm's two layouts, each in the form ONNX Runtime runs fastest: the Linear MLP
//! channels-last (one Transpose in, one out; LayerNormalization on the last axis, MatMul +
//! BiasGelu), the `conv_mlp=True` MLP as NCHW 1x1 Convs for its NCHWc transformer.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::heads::{classifier_head, norm_mlp_head};
use crate::graph::layers::mlp::{conv_mlp, grn_mlp, layer_scale, layer_scale_2d, mlp, MlpCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::{
    act, add, conv2d, make_divisible, nchw_to_nhwc, nhwc_to_nchw, Conv, Norm, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/convnext.json"));

pub const FAMILY: Family = Family {
    name: "convnext",
    examples: "convnext_atto..convnext_xxlarge, convnextv2_atto..convnextv2_huge, test_convnext",
    matches,
    build,
    default_config,
    any_size: true,
};

fn matches(arch: &str) -> bool {
    arch.starts_with("convnext_")
        || arch.starts_with("convnextv2_")
        || arch.starts_with("test_convnext")
}

fn default_config(arch: &str) -> Option<serde_json::Value> {
    TABLE.get(arch).map(|e| e.config.clone())
}

timm_args! {
    /// `ConvNeXt.__init__`'s keyword arguments that shape the inference graph.
    struct ConvNeXtArgs {
        in_chans: usize = 3,
        output_stride: usize = 32,
        depths: Vec<usize> = vec![3, 3, 9, 3],
        dims: Vec<usize> = vec![96, 192, 384, 768],
        kernel_sizes: PerStage<usize> = PerStage::All(7),
        ls_init_value: Option<f32> = Some(1e-6),
        stem_type: String = "patch".into(),
        patch_size: usize = 4,
        head_norm_first: bool = false,
        head_hidden_size: Option<usize> = None,
        conv_mlp: bool = false,
        conv_bias: bool = true,
        use_grn: bool = false,
        act_layer: String = "gelu".into(),
        norm_layer: Option<String> = None,
        norm_eps: Option<f32> = None,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stem {
    /// Non-overlapping `patch_size` conv + norm.
    Patch(usize),
    /// Two 3x3 stride-2 convs (an activation between them for `overlap_act`) + norm, `mid`
    /// channels after the first.
    Overlap { mid: usize, act: bool },
}

/// The resolved architecture.
#[derive(Debug, Clone)]
struct Cfg {
    depths: Vec<usize>,
    dims: Vec<usize>,
    kernel_sizes: Vec<usize>,
    ls_init_value: Option<f32>,
    stem: Stem,
    head_norm_first: bool,
    head_hidden_size: Option<usize>,
    conv_mlp: bool,
    conv_bias: bool,
    use_grn: bool,
    act: String,
    norm: Norm,
    pool: PoolKind,
    output_stride: usize,
}

/// Every conv and Linear: timm's `_init_weights`.
const INIT: Init = Init::TruncNormal(0.02);

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let x = stem(
        &mut b.scope("stem"),
        &input,
        cfg.pretrained_cfg.input_size[0],
        &c,
    )?;
    let x = stages(b, &x, &c)?;
    let nf = c.dims[3];
    let features = b.output() == OutputKind::Features;
    if c.head_norm_first {
        let x = c.norm.apply_2d(&mut b.scope("norm_pre"), &x, nf)?;
        classifier_head(
            &mut b.scope("head"),
            &x,
            nf,
            c.pool,
            cfg.num_classes,
            features,
        )
    } else {
        let h = &mut b.scope("head");
        let hidden = c.head_hidden_size;
        norm_mlp_head(
            h,
            &x,
            nf,
            c.pool,
            &c.norm,
            hidden,
            "gelu",
            cfg.num_classes,
            features,
        )
    }
}

/// `self.stem`: the patch conv, or the two overlapping convs; then the norm.
fn stem(b: &mut Builder, x: &Value, in_chans: usize, c: &Cfg) -> Result<Value> {
    let conv = |i, o, k, s, p| {
        Conv::new(i, o, k)
            .stride(s)
            .pad(Pad::Sym(p))
            .bias(c.conv_bias)
            .init(INIT)
    };
    let dim = c.dims[0];
    let (x, norm_idx) = match c.stem {
        Stem::Patch(p) => (conv2d(&mut b.scope(0), x, conv(in_chans, dim, p, p, 0))?, 1),
        Stem::Overlap { mid, act: with_act } => {
            let y = conv2d(&mut b.scope(0), x, conv(in_chans, mid, 3, 2, 1))?;
            let (y, next) = if with_act {
                (act(b, &c.act, &y)?, 2)
            } else {
                (y, 1)
            };
            let y = conv2d(&mut b.scope(next), &y, conv(mid, dim, 3, 2, 1))?;
            (y, next + 1)
        }
    };
    c.norm.apply_2d(&mut b.scope(norm_idx), &x, dim)
}

/// `self.stages`, recording each stage's output as timm's `feature_info` (`stages.<i>`). Past
/// `output_stride` a stage keeps stride 1 and dilates instead, as timm builds it.
fn stages(b: &mut Builder, x: &Value, c: &Cfg) -> Result<Value> {
    let st = &mut b.scope("stages");
    let mut x = x.clone();
    let mut prev = c.dims[0];
    let mut curr_stride = match c.stem {
        Stem::Patch(p) => p,
        Stem::Overlap { .. } => 4,
    };
    let mut dilation = 1;
    for i in 0..4 {
        let mut stride = if curr_stride == 2 || i > 0 { 2 } else { 1 };
        if curr_stride >= c.output_stride && stride > 1 {
            dilation *= stride;
            stride = 1;
        }
        curr_stride *= stride;
        let first_dilation = if dilation <= 2 { 1 } else { 2 };
        let s = &mut st.scope(i);
        x = stage(s, &x, prev, i, stride, (first_dilation, dilation), c)?;
        let module = s.path().to_string();
        s.feature(&x, c.dims[i], curr_stride, &module);
        prev = c.dims[i];
    }
    Ok(x)
}

/// timm's `ConvNeXtStage`: the downsample (norm + conv) when the width, stride or dilation
/// changes, then the blocks.
fn stage(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    i: usize,
    stride: usize,
    (d0, d1): (usize, usize),
    c: &Cfg,
) -> Result<Value> {
    let out = c.dims[i];
    let mut x = x.clone();
    if in_chs != out || stride > 1 || d0 != d1 {
        let k = if stride > 1 || d0 != d1 { 2 } else { 1 };
        // timm pads 'same' once the stage is dilated.
        let pad = if d1 > 1 {
            Pad::same(k, stride, d0)
        } else {
            Pad::Sym(0)
        };
        let ds = &mut b.scope("downsample");
        x = c.norm.apply_2d(&mut ds.scope(0), &x, in_chs)?;
        let conv = Conv::new(in_chs, out, k)
            .stride(stride)
            .dilation(d0)
            .pad(pad)
            .bias(c.conv_bias)
            .init(INIT);
        x = conv2d(&mut ds.scope(1), &x, conv)?;
    }
    let blocks = &mut b.scope("blocks");
    for j in 0..c.depths[i] {
        x = block(&mut blocks.scope(j), &x, out, c.kernel_sizes[i], d1, c)?;
    }
    Ok(x)
}

/// timm's `ConvNeXtBlock`: depthwise conv, norm, MLP (GRN in v2), layer scale, residual.
fn block(b: &mut Builder, x: &Value, dim: usize, k: usize, dil: usize, c: &Cfg) -> Result<Value> {
    let dw = Conv::new(dim, dim, k)
        .depthwise()
        .dilation(dil)
        .bias(c.conv_bias)
        .init(INIT);
    let y = conv2d(&mut b.scope("conv_dw"), x, dw)?;
    let m = MlpCfg::new(dim, 4 * dim, &c.act);
    let y = if c.conv_mlp {
        let y = c.norm.apply_2d(&mut b.scope("norm"), &y, dim)?;
        let y = if c.use_grn {
            grn_mlp(&mut b.scope("mlp"), &y, &m, true)?
        } else {
            conv_mlp(&mut b.scope("mlp"), &y, &m)?
        };
        match c.ls_init_value {
            Some(v) => layer_scale_2d(b, &y, dim, v)?,
            None => y,
        }
    } else {
        let y = nchw_to_nhwc(b, &y);
        let y = c.norm.apply_last(&mut b.scope("norm"), &y, dim)?;
        let y = if c.use_grn {
            grn_mlp(&mut b.scope("mlp"), &y, &m, false)?
        } else {
            mlp(&mut b.scope("mlp"), &y, &m)?
        };
        let y = match c.ls_init_value {
            Some(v) => layer_scale(b, &y, dim, v)?,
            None => y,
        };
        nhwc_to_nchw(b, &y)
    };
    Ok(add(b, &y, x))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a ConvNeXt variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = ConvNeXtArgs::read(&a)?;
    let pool_name =
        (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", String::as_str);

    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    for (key, list) in [("depths", &v.depths), ("dims", &v.dims)] {
        if list.len() != 4 {
            return Err(Error::invalid_model(format!(
                "model_args `{key}` must list 4 stages, got {list:?}"
            )));
        }
    }
    let kernel_sizes = v.kernel_sizes.expand("kernel_sizes", 4)?;
    if v.dims.contains(&0) || kernel_sizes.contains(&0) || v.patch_size == 0 {
        return Err(Error::invalid_model(
            "model_args `dims`, `kernel_sizes` and `patch_size` must be positive",
        ));
    }
    let requested = b.output_stride();
    let output_stride = requested.unwrap_or(v.output_stride);
    if ![8, 16, 32].contains(&output_stride) {
        let why = format!("output_stride {output_stride}: timm's ConvNeXt supports 8, 16 or 32");
        return Err(match requested {
            Some(_) => Error::invalid_argument(format!("option {why}")),
            None => Error::invalid_model(format!("model_args {why}")),
        });
    }
    let norm = match v.norm_layer.as_deref().unwrap_or("layernorm") {
        n @ ("layernorm" | "layernorm2d" | "rmsnorm" | "rmsnorm2d" | "simplenorm"
        | "simplenorm2d") => Norm::from_timm(n, v.norm_eps)?,
        _ => {
            return Err(a.unsupported(
                "norm_layer",
                "the native ConvNeXt builds layernorm, rmsnorm and simplenorm",
            ))
        }
    };
    let stem = match v.stem_type.as_str() {
        "patch" => Stem::Patch(v.patch_size),
        "overlap" | "overlap_act" => Stem::Overlap {
            mid: v.dims[0],
            act: v.stem_type == "overlap_act",
        },
        "overlap_tiered" => Stem::Overlap {
            mid: make_divisible((v.dims[0] / 2) as f64, 8, 0.9),
            act: false,
        },
        _ => {
            return Err(a.unsupported(
                "stem_type",
                "timm's ConvNeXt stems are patch, overlap, overlap_tiered, overlap_act",
            ))
        }
    };
    let mut c = Cfg {
        depths: v.depths,
        dims: v.dims,
        kernel_sizes,
        ls_init_value: v.ls_init_value,
        stem,
        head_norm_first: v.head_norm_first,
        head_hidden_size: v.head_hidden_size,
        conv_mlp: v.conv_mlp,
        conv_bias: v.conv_bias,
        use_grn: v.use_grn,
        act: v.act_layer,
        norm,
        pool: PoolKind::from_timm(pool_name)?,
        output_stride,
    };
    if b.weights().is_some() {
        read_structure(b, &a, &mut c);
    }
    if c.head_norm_first && c.head_hidden_size.is_some() {
        return Err(Error::invalid_model(
            "ConvNeXt head_norm_first cannot be combined with head_hidden_size (timm asserts this)",
        ));
    }
    // timm's heads pool to a vector; NormMlpClassifierHead's norm is sized for one pool.
    let cat_ok = c.head_norm_first;
    if c.pool == PoolKind::None || (c.pool == PoolKind::CatAvgMax && !cat_ok) {
        return Err(Error::unsupported(format!(
            "global_pool `{pool_name}` is not supported by the native ConvNeXt (avg, max, avgmax{})",
            if cat_ok { ", catavgmax" } else { "" }
        )));
    }
    Ok(c)
}

/// Reads what config.json does not set from the weights (for folders whose `model_args` were
/// lost). An argument config.json sets explicitly still wins, so a disagreeing file fails on
/// the tensor that disagrees.
fn read_structure(b: &mut Builder, a: &Args, c: &mut Cfg) {
    let ex = |k: &str| a.explicit(k);
    {
        let st = &mut b.scope("stages");
        for i in 0..4 {
            let s = &mut st.scope(i);
            if !ex("depths") {
                c.depths[i] = (0..)
                    .take_while(|&j| s.scope("blocks").scope(j).has_weight("conv_dw.weight"))
                    .count();
            }
            let dw = s.scope("blocks").scope(0).weight_shape("conv_dw.weight");
            if let Some(w) = dw.filter(|w| w.len() == 4) {
                if !ex("dims") {
                    c.dims[i] = w[0];
                }
                if !ex("kernel_sizes") {
                    c.kernel_sizes[i] = w[2];
                }
            } else if let Some(w) = s.scope("downsample").scope(1).weight_shape("weight") {
                if !ex("dims") {
                    c.dims[i] = w[0];
                }
            }
        }
    }
    {
        let blk = &mut b.scope("stages.0.blocks.0");
        if blk.has_weight("conv_dw.weight") {
            if !ex("ls_init_value") {
                c.ls_init_value = match (blk.has_weight("gamma"), c.ls_init_value) {
                    (false, _) => None,
                    (true, v) => v.or(Some(1e-6)),
                };
            }
            if !ex("use_grn") {
                c.use_grn = blk.has_weight("mlp.grn.weight");
            }
            if !ex("conv_mlp") {
                if let Some(w) = blk.weight_shape("mlp.fc1.weight") {
                    c.conv_mlp = w.len() == 4;
                }
            }
            if !ex("conv_bias") {
                c.conv_bias = blk.has_weight("conv_dw.bias");
            }
        }
    }
    if !ex("head_norm_first") {
        c.head_norm_first = b.has_weight("norm_pre.weight");
    }
    if !ex("head_hidden_size") {
        c.head_hidden_size = b.weight_shape("head.pre_logits.fc.weight").map(|w| w[0]);
    }
    if !ex("stem_type") && !ex("patch_size") {
        if let Some(w) = b.weight_shape("stem.0.weight").filter(|w| w.len() == 4) {
            let conv_at = |n: &str| b.weight_shape(n).is_some_and(|s| s.len() == 4);
            c.stem = if conv_at("stem.1.weight") {
                Stem::Overlap {
                    mid: w[0],
                    act: false,
                }
            } else if conv_at("stem.2.weight") {
                Stem::Overlap {
                    mid: w[0],
                    act: true,
                }
            } else {
                Stem::Patch(w[2])
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        let n = TABLE.validate().unwrap();
        assert!(n >= 31, "{n} archs");
        for arch in TABLE.names() {
            assert!(matches(arch), "{arch} is not matched by the family");
            let cfg = default_config(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
        assert!(default_config("convnext_unknown").is_none());
    }
}
