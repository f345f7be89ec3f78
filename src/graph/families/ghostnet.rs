//! GhostNet (timm's `ghostnet.py`): V1 (`ghostnet_*`), V2 with the DFC attention gate on the
//! expanding ghost module (`ghostnetv2_*`) and V3 with re-parameterisable branches
//! (`ghostnetv3_*`), folded at load from the unfused weights timm saves.
//!
//! timm's entrypoints pass the block table `cfgs` (`[k, exp, c, se, s]` per block, one list per
//! stage) and `width`; config.json cannot carry another table, so with weights every block's
//! widths, stride, kernel, SE and gate are read from them, and computed from the table otherwise.
//! GhostNet has no dilated variant: `output_stride` other than 32 is refused, as timm asserts.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::ghost::{
    check_args, dw_conv, parse_block_table, residual, squeeze_excite, strided_dw, GhostBlock,
    GhostNet, EPS,
};
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::reparam::{bn_identity_branch, conv_bn_branch, emit_branches};
use crate::graph::layers::upsample::resize_nearest_to;
use crate::graph::layers::{act, concat, conv_bn, slice, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/ghostnet.json"));

pub const FAMILY: Family = Family {
    name: "ghostnet",
    examples:
        "ghostnet_050..ghostnet_130, ghostnetv2_100..ghostnetv2_160, ghostnetv3_050..ghostnetv3_160",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `GhostNet.__init__`'s arguments that shape the inference graph.
    struct GhostNetArgs {
        cfgs: Json = Json::Null,
        width: f64 = 1.0,
        in_chans: usize = 3,
        output_stride: usize = 32,
        global_pool: Option<String> = None,
        version: String = "v1".into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
    V3,
}

const NAME: &str = "GhostNet";

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let (net, v) = resolve(b, cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let x = net.features(b, in_ch, |b, x, blk| bottleneck(b, x, blk, v))?;
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, net.final_ch));
    }
    net.head(b, cfg, &x, NAME)
}

/// `GhostBottleneck` / `GhostBottleneckV3`: expanding ghost module, strided depthwise conv, SE,
/// projecting ghost module, plus the shortcut.
fn bottleneck(b: &mut Builder, x: &Value, blk: &GhostBlock, v: Version) -> Result<Value> {
    let mid = blk.mid;
    let mut y = {
        let g = &mut b.scope("ghost1");
        if v == Version::V3 {
            ghost_v3(g, x, blk.in_ch, mid, true, blk.gated)?
        } else {
            ghost(g, x, blk.in_ch, mid, true, blk.gated)?
        }
    };
    if blk.stride > 1 {
        y = if v == Version::V3 {
            // dw_rpr_scale (1x1, stride 2) + three k x k branches, each with its BatchNorm.
            let dw = dw_conv(blk);
            let scale = Conv::new(mid, mid, 1)
                .stride(2)
                .groups(mid)
                .pad(Pad::Sym(0));
            let mut br = vec![conv_bn_branch(
                b,
                "dw_rpr_scale.conv",
                "dw_rpr_scale.bn1",
                &scale,
                EPS,
            )?];
            for i in 0..3 {
                let (c, n) = (
                    format!("dw_rpr_conv.{i}.conv"),
                    format!("dw_rpr_conv.{i}.bn1"),
                );
                br.push(conv_bn_branch(b, &c, &n, &dw, EPS)?);
            }
            emit_branches(b, &y, "conv_dw", &br, dw)?
        } else {
            strided_dw(b, &y, blk)?
        };
    }
    y = squeeze_excite(b, &y, blk)?;
    y = {
        let g = &mut b.scope("ghost2");
        if v == Version::V3 {
            ghost_v3(g, &y, mid, blk.out, false, false)?
        } else {
            ghost(g, &y, mid, blk.out, false, false)?
        }
    };
    residual(b, x, &y, blk)
}

/// `GhostModule` (and `GhostModuleV2` when `gated`): a 1x1 primary conv to `ceil(out / 2)`
/// channels, a cheap 3x3 depthwise conv of those, concatenated and cut to `out`.
fn ghost(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out: usize,
    relu: bool,
    gated: bool,
) -> Result<Value> {
    let init = out.div_ceil(2);
    let c = Conv::new(in_ch, init, 1).pad(Pad::Sym(0));
    let x1 = conv_bn(b, x, "primary_conv.0", "primary_conv.1", c, EPS)?;
    let x1 = if relu { act(b, "relu", &x1)? } else { x1 };
    let c = Conv::new(init, init, 3).groups(init).pad(Pad::Sym(1));
    let x2 = conv_bn(b, &x1, "cheap_operation.0", "cheap_operation.1", c, EPS)?;
    let x2 = if relu { act(b, "relu", &x2)? } else { x2 };
    let y = cat_cut(b, &x1, &x2, init, out);
    if gated {
        dfc_gate(b, x, &y, in_ch, out)
    } else {
        Ok(y)
    }
}

/// `GhostModuleV3` (unfused in timm's weights): the primary conv is the sum of three 1x1
/// conv+BN branches, the cheap op the sum of a 1x1 scale branch, a BatchNorm identity and
/// three 3x3 depthwise conv+BN branches; each sum is folded into one conv here.
fn ghost_v3(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out: usize,
    relu: bool,
    gated: bool,
) -> Result<Value> {
    let init = out.div_ceil(2);
    let c = Conv::new(in_ch, init, 1).pad(Pad::Sym(0));
    let mut br = Vec::with_capacity(3);
    for i in 0..3 {
        let (cv, n) = (
            format!("primary_rpr_conv.{i}.conv"),
            format!("primary_rpr_conv.{i}.bn1"),
        );
        br.push(conv_bn_branch(b, &cv, &n, &c, EPS)?);
    }
    let x1 = emit_branches(b, x, "primary_conv", &br, c)?;
    let x1 = if relu { act(b, "relu", &x1)? } else { x1 };
    let dw = Conv::new(init, init, 3).groups(init).pad(Pad::Sym(1));
    let scale = Conv::new(init, init, 1).groups(init).pad(Pad::Sym(0));
    let mut br = vec![
        conv_bn_branch(
            b,
            "cheap_rpr_scale.conv",
            "cheap_rpr_scale.bn1",
            &scale,
            EPS,
        )?,
        bn_identity_branch(b, "cheap_rpr_skip", init, 1, EPS)?,
    ];
    for i in 0..3 {
        let (cv, n) = (
            format!("cheap_rpr_conv.{i}.conv"),
            format!("cheap_rpr_conv.{i}.bn1"),
        );
        br.push(conv_bn_branch(b, &cv, &n, &dw, EPS)?);
    }
    let x2 = emit_branches(b, &x1, "cheap_operation", &br, dw)?;
    let x2 = if relu { act(b, "relu", &x2)? } else { x2 };
    if gated {
        let y = cat_cut(b, &x1, &x2, init, out);
        dfc_gate(b, x, &y, in_ch, out)
    } else {
        // timm's 'original' mode returns the whole concatenation.
        let y = concat(b, &[&x1, &x2], 1);
        keep_spatial(b, &y, &x1);
        Ok(y)
    }
}

/// `cat([x1, x2])[:, :out]`.
fn cat_cut(b: &mut Builder, x1: &Value, x2: &Value, init: usize, out: usize) -> Value {
    let y = concat(b, &[x1, x2], 1);
    let y = if 2 * init > out {
        slice(b, &y, 1, 0, out as i64)
    } else {
        y
    };
    keep_spatial(b, &y, x1);
    y
}

fn keep_spatial(b: &mut Builder, y: &Value, like: &Value) {
    if let Some(s) = b.spatial(like).cloned() {
        b.assign_spatial(y, s);
    }
}

/// The DFC attention of `GhostModuleV2` / V3's shortcut mode: `short_conv` (1x1 conv, 1x5 and
/// 5x1 depthwise convs, each with BatchNorm) on the 2x2-average-pooled input, sigmoid, nearest
/// upsampling to `y`'s size, times `y`.
fn dfc_gate(b: &mut Builder, x: &Value, y: &Value, in_ch: usize, out: usize) -> Result<Value> {
    let p = Pool2d::new(2, 2, 0).avg(b, x, in_ch)?;
    let s = &mut b.scope("short_conv");
    let r = conv_bn(s, &p, "0", "1", Conv::new(in_ch, out, 1), EPS)?;
    let wide = Conv::new(out, out, 1)
        .kernel2(1, 5)
        .groups(out)
        .pad(Pad::Explicit(0, 2, 0, 2));
    let r = conv_bn(s, &r, "2", "3", wide, EPS)?;
    let tall = Conv::new(out, out, 1)
        .kernel2(5, 1)
        .groups(out)
        .pad(Pad::Explicit(2, 0, 2, 0));
    let r = conv_bn(s, &r, "4", "5", tall, EPS)?;
    let g = act(s, "sigmoid", &r)?;
    let size = s.op("Shape", &[y], vec![]);
    let up = resize_nearest_to(s, &g, &size);
    let out_v = s.op("Mul", &[y, &up], vec![]);
    keep_spatial(s, &out_v, y);
    Ok(out_v)
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<(GhostNet, Version)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a GhostNet variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = GhostNetArgs::read(&a)?;
    check_args(&a, cfg, NAME, v.output_stride, v.in_chans, v.width)?;
    let version = match v.version.as_str() {
        "v1" => Version::V1,
        "v2" => Version::V2,
        "v3" => Version::V3,
        _ => return Err(a.unsupported("version", "timm's GhostNet versions are v1, v2, v3")),
    };
    let cfgs = parse_block_table(&a, &v.cfgs, NAME)?;
    let mut net = from_cfgs(&cfgs, v.width, version);
    net.pool = v.global_pool.or(cfg.global_pool.clone());
    if b.weights().is_some() {
        let (primary, dw) = if version == Version::V3 {
            (
                "primary_rpr_conv.0.conv.weight",
                "dw_rpr_conv.0.conv.weight",
            )
        } else {
            ("primary_conv.0.weight", "conv_dw.weight")
        };
        net.read_weights(b, NAME, primary, dw)?;
    }
    net.check_stages(arch, NAME)?;
    Ok((net, version))
}

/// `GhostNet.__init__` over the block table: V2 and V3 gate every block after the first two.
fn from_cfgs(cfgs: &[Vec<[f64; 5]>], width: f64, version: Version) -> GhostNet {
    GhostNet::from_table(cfgs, width, 1.0, |i| version != Version::V1 && i > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 10);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }

    #[test]
    fn ghostnet_100_widths_are_timms() {
        let a = Args::new(
            "ghostnet_100",
            Some(&TABLE.get("ghostnet_100").unwrap().args),
            &Default::default(),
        );
        let v = GhostNetArgs::read(&a).unwrap();
        let net = from_cfgs(
            &parse_block_table(&a, &v.cfgs, NAME).unwrap(),
            1.0,
            Version::V1,
        );
        assert_eq!(net.stem, 16);
        assert_eq!(net.final_ch, 960);
        assert_eq!(net.stages.len(), 9);
        let b = &net.stages[3][0];
        assert_eq!(
            (b.mid, b.out, b.k, b.stride, b.se_rd),
            (72, 40, 5, 2, Some(20))
        );
    }
}
