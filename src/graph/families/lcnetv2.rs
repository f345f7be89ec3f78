//! PP-LCNetV2 (timm's `lcnetv2.py`): `lcnetv2_small`, `_base`, `_large`.
//!
//! A strided ConvNormAct stem and a depthwise-separable block, then four stages of
//! `RepDepthwiseSeparable` blocks: a depthwise conv (in the last two stages the sum of 5×5, 3×3
//! and, at stride 1, 1×1 conv+BN branches, folded into one conv at load from timm's unfused
//! weights; `inference_mode=True` weights hold the folded conv), an SE module (stage 2), a
//! pointwise conv (split in two in stage 2) and a shortcut (stage 3). Head: pool, 1×1
//! `conv_head` (no bias) + act, Linear.
//!
//! Feature maps: `stages.0`..`3`. timm's model takes no `output_stride`.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::reparam::{conv_bn_branch, emit_branches};
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{act, add, conv2d, conv_bn, make_divisible, reshape, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/lcnetv2.json"));

pub const FAMILY: Family = Family {
    name: "lcnetv2",
    examples: "lcnetv2_small, lcnetv2_base, lcnetv2_large",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `LCNetV2.__init__`'s arguments that shape the inference graph.
    struct LcNetV2Args {
        scale: f64 = 1.0,
        depths: Vec<usize> = vec![2, 2, 6, 2],
        in_chans: usize = 3,
        global_pool: Option<String> = None,
        head_hidden_size: Option<usize> = Some(1280),
        act_layer: String = "relu".into(),
        norm_layer: Option<String> = None,
        inference_mode: bool = false,
    }
}

const EPS: f32 = 1e-5;

/// timm's `_STAGE_CFG`: (in_chs, dw_kernel_size, split_pw, use_rep, use_se, use_shortcut).
const STAGES: [(usize, usize, bool, bool, bool, bool); 4] = [
    (64, 3, false, false, false, false),
    (128, 3, false, false, false, false),
    (256, 5, true, true, true, false),
    (512, 5, false, true, false, true),
];

/// One `RepDepthwiseSeparable`.
#[derive(Debug, Clone, Copy)]
struct Block {
    in_ch: usize,
    out: usize,
    stride: usize,
    k: usize,
    split_pw: bool,
    rep: bool,
    se: bool,
    shortcut: bool,
}

struct Net {
    act: String,
    inference_mode: bool,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a PP-LCNetV2 variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = LcNetV2Args::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.depths.len() != 4 || v.depths.contains(&0) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: depths needs four positive entries"
        )));
    }
    if !(v.scale > 0.0 && v.scale <= 64.0) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: scale must be in (0, 64]"
        )));
    }
    if let Some(n) = &v.norm_layer {
        if n.to_ascii_lowercase().replace('_', "") != "batchnorm2d" {
            return Err(a.unsupported("norm_layer", "only BatchNorm2d is built"));
        }
    }
    let net = Net {
        act: crate::graph::layers::act::canonical(&v.act_layer)?.to_string(),
        inference_mode: v.inference_mode,
    };
    let pool_name = v
        .global_pool
        .or(cfg.global_pool.clone())
        .unwrap_or_else(|| "avg".into());
    let pool = PoolKind::from_timm(&pool_name)?;
    if pool == PoolKind::None || pool.multiplier() != 1 {
        return Err(a.unsupported(
            "global_pool",
            "PP-LCNetV2's head needs a pooling that keeps the width (not '' or catavgmax)",
        ));
    }
    let md = |c: f64| make_divisible(c, 8, 0.9);
    let stem = md(32.0 * v.scale);
    let mut prev = md(64.0 * v.scale);

    let input = b.input();
    let mut x = {
        let s = &mut b.scope("stem");
        let c = Conv::new(in_c, stem, 3).stride(2);
        let x = conv_norm_act(&mut s.scope(0), &input, c, Some(&net.act))?;
        let blk = Block {
            in_ch: stem,
            out: prev,
            stride: 1,
            k: 3,
            split_pw: false,
            rep: false,
            se: false,
            shortcut: false,
        };
        let x = rep_dw_sep(&mut s.scope(1), &x, &blk, &net)?;
        x
    };
    let mut reduction = 2;
    for (i, &(chs, k, split_pw, rep, se, shortcut)) in STAGES.iter().enumerate() {
        let out = md(chs as f64 * 2.0 * v.scale);
        {
            let s = &mut b.scope(format!("stages.{i}"));
            for j in 0..v.depths[i] {
                let stride = if j == 0 { 2 } else { 1 };
                let blk = Block {
                    in_ch: prev,
                    out,
                    stride,
                    k,
                    split_pw,
                    rep,
                    se,
                    shortcut: shortcut && stride == 1 && prev == out,
                };
                x = rep_dw_sep(&mut s.scope(j), &x, &blk, &net)?;
                prev = out;
            }
        }
        reduction *= 2;
        b.feature(&x, out, reduction, &format!("stages.{i}"));
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    // Head: pool, conv_head (1×1, no bias) + act, flatten, classifier.
    let hidden = v.head_hidden_size.filter(|&h| h > 0);
    let p = global_pool(b, &x, pool);
    let (y, width) = match hidden {
        Some(h) => {
            let p = reshape(b, &p, &[0, -1, 1, 1]);
            let c = Conv::new(prev, h, 1).init(Init::KaimingFanOut);
            let y = conv2d(&mut b.scope("conv_head"), &p, c)?;
            let y = act(b, &net.act, &y)?;
            (crate::graph::layers::flatten(b, &y, 1), h)
        }
        None => (p, prev),
    };
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((y, width));
    }
    let logits = linear_2d(
        &mut b.scope("classifier"),
        &y,
        width,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}

/// timm's `ConvNormAct` (`conv`, `bn` folded), with an optional activation.
fn conv_norm_act(b: &mut Builder, x: &Value, c: Conv, act_name: Option<&str>) -> Result<Value> {
    let y = conv_bn(b, x, "conv", "bn", c, EPS)?;
    match act_name {
        Some(a) => act(b, a, &y),
        None => Ok(y),
    }
}

/// `RepDepthwiseSeparable`: depthwise conv (+act), SE, pointwise conv(s), shortcut.
fn rep_dw_sep(b: &mut Builder, x: &Value, blk: &Block, net: &Net) -> Result<Value> {
    let (c_in, k) = (blk.in_ch, blk.k);
    let a = Some(net.act.as_str());
    let dw = Conv::new(c_in, c_in, k).stride(blk.stride).groups(c_in);
    let y = if !blk.rep {
        conv_norm_act(&mut b.scope("dw_conv"), x, dw, a)?
    } else {
        let y = if net.inference_mode {
            conv2d(&mut b.scope("dw_conv"), x, dw.bias(true))?
        } else {
            // Kernels k, k-2, .. 1; a 1×1 branch only at stride 1 (timm skips it otherwise).
            let mut br = Vec::new();
            for (i, kk) in (1..=k)
                .rev()
                .step_by(2)
                .filter(|&kk| !(kk == 1 && blk.stride != 1))
                .enumerate()
            {
                let c = Conv::new(c_in, c_in, kk).stride(blk.stride).groups(c_in);
                let (cv, bn) = (
                    format!("dw_conv_list.{i}.conv"),
                    format!("dw_conv_list.{i}.bn"),
                );
                br.push(conv_bn_branch(b, &cv, &bn, &c, EPS)?);
            }
            emit_branches(b, x, "dw_conv", &br, dw)?
        };
        act(b, &net.act, &y)?
    };
    let y = if blk.se {
        SqueezeExcite::se_module(c_in, c_in / 4)
            .act(&net.act)
            .apply(&mut b.scope("se"), &y)?
    } else {
        y
    };
    let y = if blk.split_pw {
        let mid = blk.out / 2;
        let s = &mut b.scope("pw_conv");
        let y = conv_norm_act(&mut s.scope(0), &y, Conv::new(c_in, mid, 1), a)?;
        let y = conv_norm_act(&mut s.scope(1), &y, Conv::new(mid, blk.out, 1), a)?;
        y
    } else {
        conv_norm_act(&mut b.scope("pw_conv"), &y, Conv::new(c_in, blk.out, 1), a)?
    };
    Ok(if blk.shortcut { add(b, &y, x) } else { y })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 3);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
