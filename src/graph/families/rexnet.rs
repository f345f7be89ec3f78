//! ReXNet (timm's `rexnet.py`): `rexnet_*` and the channel-rounded `rexnetr_*`. Linear
//! bottlenecks (1x1 expansion, 3x3 depthwise, SE with a BatchNorm, ReLU6, 1x1 projection) whose
//! widths grow linearly, a partial residual over the first `in` channels; `output_stride` 8 / 16
//! dilates the last stages as timm does.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{
    act, add, concat, conv_norm_act, make_divisible, py_round, slice, Conv, Norm,
};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/rexnet.json"));

pub const FAMILY: Family = Family {
    name: "rexnet",
    examples: "rexnet_100..rexnet_300, rexnetr_100..rexnetr_300",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `RexNet.__init__`, timm's defaults.
    struct RexNetArgs {
        in_chans: usize = 3,
        global_pool: Option<String> = None,
        output_stride: usize = 32,
        initial_chs: usize = 16,
        final_chs: usize = 180,
        width_mult: f64 = 1.0,
        depth_mult: f64 = 1.0,
        se_ratio: f64 = 1.0 / 12.0,
        ch_div: usize = 1,
        act_layer: String = "swish".into(),
        dw_act_layer: String = "relu6".into(),
    }
}

const BN: Norm = Norm::Batch { eps: 1e-5 };

/// One `LinearBottleneck`'s arguments as `_build_blocks` hands them over.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    in_ch: usize,
    out: usize,
    /// `None` for `exp_ratio == 1` (no `conv_exp`).
    dw_chs: Option<usize>,
    stride: usize,
    dilation: (usize, usize),
    se_rd: Option<usize>,
}

/// A `feature_info` entry: the module's output before block `before` (or the last block's).
#[derive(Debug, Clone, PartialEq)]
struct Feat {
    /// Index of the block whose input is the feature (`None`: the last block's output).
    before: Option<usize>,
    channels: usize,
    reduction: usize,
    module: String,
}

#[derive(Debug)]
struct Net {
    stem: usize,
    blocks: Vec<Block>,
    feats: Vec<Feat>,
    pen: usize,
    act: String,
    dw_act: String,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let (net, pool) = resolve(b, cfg)?;
    let input = b.input();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let c = Conv::new(in_ch, net.stem, 3).stride(2);
    let mut x = conv_norm_act(&mut b.scope("stem"), &input, c, &BN, Some(&net.act))?;
    {
        let fs = &mut b.scope("features");
        for (i, blk) in net.blocks.iter().enumerate() {
            for f in net.feats.iter().filter(|f| f.before == Some(i)) {
                fs.feature(&x, f.channels, f.reduction, &f.module);
            }
            x = bottleneck(&mut fs.scope(i), &x, blk, &net)?;
        }
        for f in net.feats.iter().filter(|f| f.before.is_none()) {
            fs.feature(&x, f.channels, f.reduction, &f.module);
        }
        let prev = net.blocks.last().map_or(net.stem, |b| b.out);
        let c = Conv::new(prev, net.pen, 1);
        let s = &mut fs.scope(net.blocks.len());
        x = conv_norm_act(s, &x, c, &BN, Some(&net.act))?;
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, net.pen));
    }
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        net.pen,
        pool,
        cfg.num_classes,
        features,
    )
}

/// `LinearBottleneck`: `conv_exp`, `conv_dw`, `se`, ReLU6, `conv_pwl`, and the residual over
/// the first `in` channels.
fn bottleneck(b: &mut Builder, x: &Value, blk: &Block, net: &Net) -> Result<Value> {
    let mut y = x.clone();
    let dw = match blk.dw_chs {
        Some(dw) => {
            let c = Conv::new(blk.in_ch, dw, 1);
            y = conv_norm_act(&mut b.scope("conv_exp"), &y, c, &BN, Some(&net.act))?;
            dw
        }
        None => blk.in_ch,
    };
    let c = Conv::new(dw, dw, 3)
        .stride(blk.stride)
        .dilation(blk.dilation.0)
        .depthwise();
    y = conv_norm_act(&mut b.scope("conv_dw"), &y, c, &BN, None)?;
    if let Some(rd) = blk.se_rd {
        y = SqueezeExcite::se_module(dw, rd)
            .norm(true)
            .apply(&mut b.scope("se"), &y)?;
    }
    y = act(b, &net.dw_act, &y)?;
    let c = Conv::new(dw, blk.out, 1);
    y = conv_norm_act(&mut b.scope("conv_pwl"), &y, c, &BN, None)?;
    let shortcut = blk.stride == 1 && blk.dilation.0 == blk.dilation.1 && blk.in_ch <= blk.out;
    if !shortcut {
        return Ok(y);
    }
    if blk.in_ch == blk.out {
        return Ok(add(b, &y, x));
    }
    let head = slice(b, &y, 1, 0, blk.in_ch as i64);
    let tail = slice(b, &y, 1, blk.in_ch as i64, blk.out as i64);
    let head = add(b, &head, x);
    let out = concat(b, &[&head, &tail], 1);
    if let Some(s) = b.spatial(&y).cloned() {
        b.assign_spatial(&out, s);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// the architecture

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<(Net, PoolKind)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a ReXNet variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = RexNetArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let requested = b.output_stride();
    let os = requested.unwrap_or(v.output_stride);
    if ![8, 16, 32].contains(&os) {
        let why = format!("output_stride {os}: timm's ReXNet supports 8, 16 or 32");
        return Err(match requested {
            Some(_) => Error::invalid_argument(format!("option {why}")),
            None => Error::invalid_model(format!("model_args {why}")),
        });
    }
    let bad = |what: &str| Error::invalid_model(format!("`{arch}`: model_args {what}"));
    if v.width_mult.is_nan() || v.width_mult <= 0.0 || v.width_mult > 100.0 {
        return Err(bad("width_mult must be in (0, 100]"));
    }
    if v.depth_mult.is_nan() || v.depth_mult <= 0.0 || v.depth_mult > 100.0 {
        return Err(bad("depth_mult must be in (0, 100]"));
    }
    if v.ch_div == 0 || !(0.0..=1.0).contains(&v.se_ratio) {
        return Err(bad("ch_div must be positive and se_ratio in [0, 1]"));
    }
    let pool = PoolKind::from_timm(
        v.global_pool
            .as_deref()
            .or(cfg.global_pool.as_deref())
            .unwrap_or("avg"),
    )?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "ReXNet with global_pool '' (unpooled features) is not built natively",
        ));
    }
    let mut net = rexnet(&v, os);
    net.act = crate::graph::layers::act::canonical(&v.act_layer)?.to_string();
    net.dw_act = crate::graph::layers::act::canonical(&v.dw_act_layer)?.to_string();
    Ok((net, pool))
}

/// `RexNet.__init__`: `_block_cfg` and `_build_blocks`.
fn rexnet(v: &RexNetArgs, output_stride: usize) -> Net {
    let md = |x: f64| make_divisible(x, v.ch_div, 0.9);
    let w = v.width_mult;
    let stem_base = if w < 1.0 { 32.0 / w } else { 32.0 };
    let stem = md(py_round(stem_base * w));
    // _block_cfg
    let layers: Vec<usize> = [1.0, 2.0, 2.0, 3.0, 3.0, 5.0]
        .iter()
        .map(|&e: &f64| (e * v.depth_mult).ceil() as usize)
        .collect();
    let mut strides = Vec::new();
    for (i, &s) in [1usize, 2, 2, 2, 1, 2].iter().enumerate() {
        strides.push(s);
        strides.extend(std::iter::repeat_n(1, layers[i].saturating_sub(1)));
    }
    let n: usize = layers.iter().sum();
    let mut base = if w < 1.0 {
        v.initial_chs as f64 / w
    } else {
        v.initial_chs as f64
    };
    let mut out_chs = Vec::with_capacity(n);
    for _ in 0..n {
        out_chs.push(md(py_round(base * w)));
        base += v.final_chs as f64 / (n as f64);
    }
    let no_se = layers[0] + layers[1];
    // _build_blocks
    let (mut prev, mut curr_stride, mut dilation) = (stem, 2usize, 1usize);
    let mut feat_chs = stem;
    let (mut blocks, mut feats) = (Vec::with_capacity(n), Vec::new());
    for i in 0..n {
        let exp = if i < layers[0] { 1.0 } else { 6.0 };
        let se = if i < no_se { 0.0 } else { v.se_ratio };
        let mut stride = strides[i];
        let mut next = dilation;
        if stride > 1 {
            let module = if i == 0 {
                "stem".to_string()
            } else {
                format!("features.{}", i - 1)
            };
            feats.push(Feat {
                before: Some(i),
                channels: feat_chs,
                reduction: curr_stride,
                module,
            });
            if curr_stride >= output_stride {
                next = dilation * stride;
                stride = 1;
            }
        }
        let dw_chs = (exp != 1.0).then(|| md(py_round(prev as f64 * exp)));
        let dw = dw_chs.unwrap_or(prev);
        blocks.push(Block {
            in_ch: prev,
            out: out_chs[i],
            dw_chs,
            stride,
            dilation: (dilation, next),
            se_rd: (se > 0.0).then(|| md((dw as f64 * se).trunc())),
        });
        curr_stride *= stride;
        dilation = next;
        prev = out_chs[i];
        feat_chs = prev;
    }
    feats.push(Feat {
        before: None,
        channels: feat_chs,
        reduction: curr_stride,
        module: format!("features.{}", n - 1),
    });
    Net {
        stem,
        blocks,
        feats,
        pen: md(1280.0 * w),
        act: String::new(),
        dw_act: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(arch: &str) -> Net {
        let a = Args::new(
            arch,
            Some(&TABLE.get(arch).unwrap().args),
            &Default::default(),
        );
        rexnet(&RexNetArgs::read(&a).unwrap(), 32)
    }

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
    fn rexnet_100_widths_are_timms() {
        // timm: rexnet_100 has 16 bottlenecks, 16 -> 185 channels, pen 1280.
        let n = net("rexnet_100");
        assert_eq!(n.stem, 32);
        assert_eq!(n.blocks.len(), 16);
        assert_eq!(n.blocks[0].out, 16);
        assert_eq!(n.blocks[15].out, 185);
        assert_eq!(n.pen, 1280);
        let r = net("rexnetr_100");
        assert!(r.blocks.iter().all(|b| b.out % 8 == 0));
    }
}
