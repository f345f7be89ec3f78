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
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::reparam::{bn_identity_branch, conv_bn_branch, emit_branches};
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{
    act, add, batch_norm, concat, conv2d, conv_bn, make_divisible, reshape, slice, Conv, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
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

const EPS: f32 = 1e-5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
    V3,
}

/// One `GhostBottleneck` / `GhostBottleneckV3`.
#[derive(Debug, Clone)]
struct Block {
    in_ch: usize,
    mid: usize,
    out: usize,
    k: usize,
    stride: usize,
    se_rd: Option<usize>,
    /// The expanding ghost module gated by the DFC attention branch (`short_conv`): V2's
    /// `mode='attn'`, V3's `mode='shortcut'`.
    gated: bool,
}

struct Net {
    version: Version,
    stem: usize,
    stages: Vec<Vec<Block>>,
    final_ch: usize,
    head_hidden: usize,
    /// `global_pool` (model_args, else config.json's).
    pool: Option<String>,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = resolve(b, cfg)?;
    let input = b.input();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let stem = Conv::new(in_ch, net.stem, 3).stride(2);
    let x = conv2d(&mut b.scope("conv_stem"), &input, stem)?;
    // timm's feature is the stem conv's output, before bn1.
    b.feature(&x, net.stem, 2, "conv_stem");
    let x = batch_norm(&mut b.scope("bn1"), &x, net.stem, EPS)?;
    let mut x = act(b, "relu", &x)?;
    let mut prev = net.stem;
    let mut stride = 2;
    {
        let blocks = &mut b.scope("blocks");
        for (i, stage) in net.stages.iter().enumerate() {
            let s = &mut blocks.scope(i);
            for (j, blk) in stage.iter().enumerate() {
                x = bottleneck(&mut s.scope(j), &x, blk, net.version)?;
                prev = blk.out;
            }
            if stage.last().is_some_and(|blk| blk.stride > 1) {
                stride *= 2;
                s.feature(&x, prev, stride, &format!("blocks.{i}"));
            }
        }
        // The last stage: one ConvBnAct (1x1, ReLU).
        let mut last = blocks.scope(net.stages.len());
        let s = &mut last.scope(0);
        let c = Conv::new(prev, net.final_ch, 1);
        x = conv_bn(s, &x, "conv", "bn1", c, EPS)?;
        x = act(s, "relu", &x)?;
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, net.final_ch));
    }
    head(b, cfg, &x, &net)
}

/// `global_pool`, `conv_head` (1x1, bias), ReLU, flatten, `classifier`.
fn head(b: &mut Builder, cfg: &ModelConfig, x: &Value, net: &Net) -> Result<(Value, usize)> {
    let name = net.pool.as_deref().unwrap_or("avg");
    let pool = PoolKind::from_timm(name)?;
    if pool == PoolKind::None || pool.multiplier() != 1 {
        return Err(Error::unsupported(format!(
            "GhostNet's conv_head needs a pooled map of num_features channels (global_pool '{name}' is not built)"
        )));
    }
    let p = global_pool(b, x, pool);
    let p = reshape(b, &p, &[0, -1, 1, 1]);
    let c = Conv::new(net.final_ch, net.head_hidden, 1)
        .bias(true)
        .init(Init::DefaultUniform);
    let y = conv2d(&mut b.scope("conv_head"), &p, c)?;
    let y = act(b, "relu", &y)?;
    let y = crate::graph::layers::flatten(b, &y, 1);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((y, net.head_hidden));
    }
    let logits = linear_2d(
        &mut b.scope("classifier"),
        &y,
        net.head_hidden,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}

/// `GhostBottleneck` / `GhostBottleneckV3`: expanding ghost module, strided depthwise conv, SE,
/// projecting ghost module, plus the shortcut.
fn bottleneck(b: &mut Builder, x: &Value, blk: &Block, v: Version) -> Result<Value> {
    let (mid, k, s) = (blk.mid, blk.k, blk.stride);
    let mut y = {
        let g = &mut b.scope("ghost1");
        if v == Version::V3 {
            ghost_v3(g, x, blk.in_ch, mid, true, blk.gated)?
        } else {
            ghost(g, x, blk.in_ch, mid, true, blk.gated)?
        }
    };
    if s > 1 {
        let dw = Conv::new(mid, mid, k)
            .stride(s)
            .groups(mid)
            .pad(Pad::Sym((k - 1) / 2));
        y = if v == Version::V3 {
            // dw_rpr_scale (1x1, stride 2) + three k x k branches, each with its BatchNorm.
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
            conv_bn(b, &y, "conv_dw", "bn_dw", dw, EPS)?
        };
    }
    if let Some(rd) = blk.se_rd {
        y = SqueezeExcite::efficientnet(mid, rd, "relu", "hard_sigmoid")
            .init(Init::DefaultUniform)
            .apply(&mut b.scope("se"), &y)?;
    }
    y = {
        let g = &mut b.scope("ghost2");
        if v == Version::V3 {
            ghost_v3(g, &y, mid, blk.out, false, false)?
        } else {
            ghost(g, &y, mid, blk.out, false, false)?
        }
    };
    let sc = if blk.in_ch == blk.out && s == 1 {
        x.clone()
    } else {
        let sh = &mut b.scope("shortcut");
        let dw = Conv::new(blk.in_ch, blk.in_ch, k)
            .stride(s)
            .groups(blk.in_ch)
            .pad(Pad::Sym((k - 1) / 2));
        let t = conv_bn(sh, x, "0", "1", dw, EPS)?;
        conv_bn(sh, &t, "2", "3", Conv::new(blk.in_ch, blk.out, 1), EPS)?
    };
    Ok(add(b, &y, &sc))
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
    let none = s.none();
    let up = s.op(
        "Resize",
        &[&g, &none, &none, &size],
        vec![
            ("mode", Attr::Str("nearest".into())),
            (
                "coordinate_transformation_mode",
                Attr::Str("asymmetric".into()),
            ),
            ("nearest_mode", Attr::Str("floor".into())),
        ],
    );
    let out_v = s.op("Mul", &[y, &up], vec![]);
    keep_spatial(s, &out_v, y);
    Ok(out_v)
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Net> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a GhostNet variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = GhostNetArgs::read(&a)?;
    if v.output_stride != 32 {
        return Err(a.unsupported(
            "output_stride",
            "timm's GhostNet has no dilated variant (only output_stride 32)",
        ));
    }
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let version = match v.version.as_str() {
        "v1" => Version::V1,
        "v2" => Version::V2,
        "v3" => Version::V3,
        _ => return Err(a.unsupported("version", "timm's GhostNet versions are v1, v2, v3")),
    };
    if v.width.is_nan() || v.width <= 0.0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: width must be positive"
        )));
    }
    let cfgs = parse_cfgs(&a, &v.cfgs)?;
    let mut net = from_cfgs(&cfgs, v.width, version);
    net.pool = v.global_pool.or(cfg.global_pool.clone());
    if b.weights().is_some() {
        from_weights(b, &mut net)?;
    }
    if net.stages.is_empty() || net.stages.iter().any(Vec::is_empty) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: GhostNet needs at least one stage of blocks"
        )));
    }
    Ok(net)
}

/// `cfgs`: stages of `[k, exp, c, se, s]`.
fn parse_cfgs(a: &Args, j: &Json) -> Result<Vec<Vec<[f64; 5]>>> {
    let bad = || a.unsupported("cfgs", "expected stages of [k, exp, c, se, s] blocks");
    let stages = j.as_array().ok_or_else(bad)?;
    let mut out = Vec::with_capacity(stages.len());
    for st in stages {
        let mut blocks = Vec::new();
        for blk in st.as_array().ok_or_else(bad)? {
            let v: Vec<f64> = blk
                .as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|x| x.as_f64().ok_or_else(bad))
                .collect::<Result<_>>()?;
            let ok = v.len() == 5
                && v.iter().all(|x| x.is_finite() && *x >= 0.0 && *x <= 1e5)
                && v[0] >= 1.0
                && v[0] % 2.0 == 1.0
                && v[1] >= 1.0
                && v[2] >= 1.0
                && v[4] >= 1.0
                && v[4] <= 2.0;
            if !ok {
                return Err(Error::invalid_model(format!(
                    "`{}`: GhostNet cfgs block {blk} is not [odd k, exp, c, se, stride 1|2]",
                    a.arch()
                )));
            }
            blocks.push([v[0], v[1], v[2], v[3], v[4]]);
        }
        out.push(blocks);
    }
    Ok(out)
}

/// `GhostNet.__init__` over the block table.
fn from_cfgs(cfgs: &[Vec<[f64; 5]>], width: f64, version: Version) -> Net {
    let md = |v: f64| make_divisible(v, 4, 0.9);
    let stem = md(16.0 * width);
    let (mut prev, mut layer_idx, mut last_exp) = (stem, 0usize, 16.0);
    let stages = cfgs
        .iter()
        .map(|st| {
            st.iter()
                .map(|&[k, exp, c, se, s]| {
                    let (out, mid) = (md(c * width), md(exp * width));
                    let blk = Block {
                        in_ch: prev,
                        mid,
                        out,
                        k: k as usize,
                        stride: s as usize,
                        se_rd: (se > 0.0).then(|| md(mid as f64 * se)),
                        gated: version != Version::V1 && layer_idx > 1,
                    };
                    prev = out;
                    layer_idx += 1;
                    last_exp = exp;
                    blk
                })
                .collect()
        })
        .collect();
    Net {
        version,
        stem,
        stages,
        final_ch: md(last_exp * width),
        head_hidden: 1280,
        pool: None,
    }
}

/// Every block's structure from the weights (timm's checkpoints for another table, or shrunk).
fn from_weights(b: &mut Builder, net: &mut Net) -> Result<()> {
    let v3 = net.version == Version::V3;
    let primary = if v3 {
        "primary_rpr_conv.0.conv.weight"
    } else {
        "primary_conv.0.weight"
    };
    let dw = if v3 {
        "dw_rpr_conv.0.conv.weight"
    } else {
        "conv_dw.weight"
    };
    if let Some(s) = b.weight_shape("conv_stem.weight") {
        net.stem = s[0];
    }
    if let Some(s) = b.weight_shape("conv_head.weight") {
        net.head_hidden = s[0];
    }
    let bl = &mut b.scope("blocks");
    let n = (0..).take_while(|&i| bl.has_module(&i.to_string())).count();
    if n < 2 {
        return Err(Error::invalid_model(
            "GhostNet weights need block stages and the final ConvBnAct under `blocks`",
        ));
    }
    let last = bl.scope(n - 1).scope(0).weight_shape("conv.weight");
    let Some(last) = last else {
        return Err(Error::invalid_model(format!(
            "GhostNet weights have no final ConvBnAct `blocks.{}.0.conv.weight`",
            n - 1
        )));
    };
    net.final_ch = last[0];
    let mut blocks: Vec<Vec<Block>> = Vec::new();
    let mut ins = Vec::new();
    for i in 0..n - 1 {
        let st = &mut bl.scope(i);
        let m = (0..)
            .take_while(|&j| st.scope(j).has_module("ghost1"))
            .count();
        let mut stage = Vec::with_capacity(m);
        for j in 0..m {
            let s = &mut st.scope(j);
            let shape = |s: &Builder, name: &str| -> Result<Vec<usize>> {
                s.weight_shape(name)
                    .filter(|v| v.len() == 4)
                    .ok_or_else(|| {
                        Error::invalid_model(format!("GhostNet weights lack `{}`", s.key(name)))
                    })
            };
            let in_ch = shape(s, &format!("ghost1.{primary}"))?[1];
            let mid = shape(s, &format!("ghost2.{primary}"))?[1];
            let (stride, k) = match s.weight_shape(dw) {
                Some(d) if d.len() == 4 => (2, d[2]),
                _ => (1, s.weight_shape("shortcut.0.weight").map_or(3, |d| d[2])),
            };
            let se_rd = s.weight_shape("se.conv_reduce.weight").map(|d| d[0]);
            let gated = s.has_module("ghost1.short_conv");
            ins.push(in_ch);
            stage.push(Block {
                in_ch,
                mid,
                out: 0,
                k,
                stride,
                se_rd,
                gated,
            });
        }
        blocks.push(stage);
    }
    ins.push(last[1]);
    let mut idx = 1;
    for st in &mut blocks {
        for blk in st {
            blk.out = ins[idx];
            idx += 1;
        }
    }
    net.stages = blocks;
    Ok(())
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
        let net = from_cfgs(&parse_cfgs(&a, &v.cfgs).unwrap(), 1.0, Version::V1);
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
