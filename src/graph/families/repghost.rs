//! RepGhostNet (timm's `repghost.py`): ghost bottlenecks whose cheap depthwise operation is
//! re-parameterisable (`cheap_operation` conv+BN plus a BatchNorm identity `fusion_bn`, summed
//! then ReLU'd instead of GhostNet's concatenation). timm's Hub weights are unfused (timm cannot
//! rebuild a deployed model from its name): the branches are folded into one depthwise conv at
//! load, as `switch_to_deploy` would.
//!
//! timm's entrypoints pass the block table `cfgs` (`[k, exp, c, se, s]` per block, one list per
//! stage) and `width`; config.json cannot carry another table, so with weights every block's
//! widths, stride, kernel and SE are read from them, and computed from the table otherwise.
//! RepGhostNet has no dilated variant: `output_stride` other than 32 is refused, as timm asserts.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::reparam::{bn_identity_branch, conv_bn_branch, emit_branches};
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{
    act, add, batch_norm, conv2d, conv_bn, make_divisible, reshape, Conv, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/repghost.json"));

pub const FAMILY: Family = Family {
    name: "repghost",
    examples: "repghostnet_050, _058, _080, _100, _111, _130, _150, _200",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `RepGhostNet.__init__`'s arguments that shape the inference graph.
    struct RepGhostArgs {
        cfgs: Json = Json::Null,
        width: f64 = 1.0,
        in_chans: usize = 3,
        output_stride: usize = 32,
        global_pool: Option<String> = None,
        reparam: bool = true,
    }
}

const EPS: f32 = 1e-5;

/// One `RepGhostBottleneck`.
#[derive(Debug, Clone)]
struct Block {
    in_ch: usize,
    mid: usize,
    out: usize,
    k: usize,
    stride: usize,
    se_rd: Option<usize>,
}

struct Net {
    stem: usize,
    stages: Vec<Vec<Block>>,
    final_ch: usize,
    head_hidden: usize,
    /// `reparam`: the `fusion_bn` identity branch exists (unfused form).
    reparam: bool,
    /// `global_pool` (model_args, else config.json's).
    pool: Option<String>,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = resolve(b, cfg)?;
    let input = b.input();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let stem = Conv::new(in_ch, net.stem, 3).stride(2).pad(Pad::Sym(1));
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
                x = bottleneck(&mut s.scope(j), &x, blk, net.reparam)?;
                prev = blk.out;
            }
            // timm taps a stage whose last block strides.
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
            "RepGhostNet's conv_head needs a pooled map of num_features channels (global_pool '{name}' is not built)"
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

/// `RepGhostBottleneck`: expanding ghost module, strided depthwise conv, SE, projecting ghost
/// module, plus the shortcut.
fn bottleneck(b: &mut Builder, x: &Value, blk: &Block, reparam: bool) -> Result<Value> {
    let (mid, k, s) = (blk.mid, blk.k, blk.stride);
    let mut y = ghost(&mut b.scope("ghost1"), x, blk.in_ch, mid, true, reparam)?;
    if s > 1 {
        let dw = Conv::new(mid, mid, k)
            .stride(s)
            .groups(mid)
            .pad(Pad::Sym((k - 1) / 2));
        y = conv_bn(b, &y, "conv_dw", "bn_dw", dw, EPS)?;
    }
    if let Some(rd) = blk.se_rd {
        y = SqueezeExcite::efficientnet(mid, rd, "relu", "hard_sigmoid")
            .init(Init::DefaultUniform)
            .apply(&mut b.scope("se"), &y)?;
    }
    y = ghost(&mut b.scope("ghost2"), &y, mid, blk.out, false, reparam)?;
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

/// `RepGhostModule`: a 1x1 primary conv+BN (+ReLU), then `relu?(cheap(x1) + fusion_bn(x1))`
/// where `cheap` is a 3x3 depthwise conv+BN; the identity BatchNorm is folded into that conv.
fn ghost(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out: usize,
    relu: bool,
    reparam: bool,
) -> Result<Value> {
    let c = Conv::new(in_ch, out, 1).pad(Pad::Sym(0));
    let x1 = conv_bn(b, x, "primary_conv.0", "primary_conv.1", c, EPS)?;
    let x1 = if relu { act(b, "relu", &x1)? } else { x1 };
    let dw = Conv::new(out, out, 3).groups(out).pad(Pad::Sym(1));
    let mut br = vec![conv_bn_branch(
        b,
        "cheap_operation.0",
        "cheap_operation.1",
        &dw,
        EPS,
    )?];
    if reparam {
        br.push(bn_identity_branch(b, "fusion_bn.0", out, 1, EPS)?);
    }
    let x2 = emit_branches(b, &x1, "cheap_operation", &br, dw)?;
    if relu {
        act(b, "relu", &x2)
    } else {
        Ok(x2)
    }
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Net> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a RepGhostNet variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = RepGhostArgs::read(&a)?;
    if v.output_stride != 32 {
        return Err(a.unsupported(
            "output_stride",
            "timm's RepGhostNet has no dilated variant (only output_stride 32)",
        ));
    }
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.width.is_nan() || v.width <= 0.0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: width must be positive"
        )));
    }
    let cfgs = parse_cfgs(&a, &v.cfgs)?;
    let mut net = from_cfgs(&cfgs, v.width);
    net.reparam = v.reparam;
    net.pool = v.global_pool.or(cfg.global_pool.clone());
    if b.weights().is_some() {
        from_weights(b, &mut net)?;
    }
    if net.stages.is_empty() || net.stages.iter().any(Vec::is_empty) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: RepGhostNet needs at least one stage of blocks"
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
                    "`{}`: RepGhostNet cfgs block {blk} is not [odd k, exp, c, se, stride 1|2]",
                    a.arch()
                )));
            }
            blocks.push([v[0], v[1], v[2], v[3], v[4]]);
        }
        out.push(blocks);
    }
    Ok(out)
}

/// `RepGhostNet.__init__` over the block table (`make_divisible(.., 4)`).
fn from_cfgs(cfgs: &[Vec<[f64; 5]>], width: f64) -> Net {
    let md = |v: f64| make_divisible(v, 4, 0.9);
    let stem = md(16.0 * width);
    let (mut prev, mut last_exp) = (stem, 16.0);
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
                    };
                    prev = out;
                    last_exp = exp;
                    blk
                })
                .collect()
        })
        .collect();
    Net {
        stem,
        stages,
        final_ch: md(last_exp * width * 2.0),
        head_hidden: 1280,
        reparam: true,
        pool: None,
    }
}

/// Every block's structure from the weights (timm's checkpoints for another table, or shrunk).
fn from_weights(b: &mut Builder, net: &mut Net) -> Result<()> {
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
            "RepGhostNet weights need block stages and the final ConvBnAct under `blocks`",
        ));
    }
    let Some(last) = bl.scope(n - 1).scope(0).weight_shape("conv.weight") else {
        return Err(Error::invalid_model(format!(
            "RepGhostNet weights have no final ConvBnAct `blocks.{}.0.conv.weight`",
            n - 1
        )));
    };
    net.final_ch = last[0];
    // Weights without fusion_bn were made with reparam=False.
    net.reparam = bl.scope(0).scope(0).has_module("ghost1.fusion_bn");
    let mut blocks: Vec<Vec<Block>> = Vec::new();
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
                        Error::invalid_model(format!("RepGhostNet weights lack `{}`", s.key(name)))
                    })
            };
            let g1 = shape(s, "ghost1.primary_conv.0.weight")?;
            let g2 = shape(s, "ghost2.primary_conv.0.weight")?;
            let (stride, k) = match s.weight_shape("conv_dw.weight") {
                Some(d) if d.len() == 4 => (2, d[2]),
                _ => (1, s.weight_shape("shortcut.0.weight").map_or(3, |d| d[2])),
            };
            stage.push(Block {
                in_ch: g1[1],
                mid: g1[0],
                out: g2[0],
                k,
                stride,
                se_rd: s.weight_shape("se.conv_reduce.weight").map(|d| d[0]),
            });
        }
        blocks.push(stage);
    }
    net.stages = blocks;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 8);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }

    #[test]
    fn repghostnet_100_widths_are_timms() {
        let a = Args::new(
            "repghostnet_100",
            Some(&TABLE.get("repghostnet_100").unwrap().args),
            &Default::default(),
        );
        let v = RepGhostArgs::read(&a).unwrap();
        let net = from_cfgs(&parse_cfgs(&a, &v.cfgs).unwrap(), 1.0);
        assert_eq!(net.stem, 16);
        assert_eq!(net.final_ch, 960);
        assert_eq!(net.stages.len(), 9);
        let b = &net.stages[3][0];
        assert_eq!(
            (b.mid, b.out, b.k, b.stride, b.se_rd),
            (36, 40, 5, 2, Some(12))
        );
    }
}
