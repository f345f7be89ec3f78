//! The network timm's `ghostnet.py` and `repghost.py` both build around their bottlenecks (timm
//! copies it between the two modules): the `cfgs` block table (`[k, exp, c, se, s]` per block, one
//! list per stage) scaled by `width`, or the same structure read from the weights; the stem, the
//! stages with their feature taps, the final ConvBnAct and the `conv_head` classifier; and the
//! bottleneck's squeeze-excite and shortcut. Each family keeps its own ghost module.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{
    act, add, batch_norm, conv2d, conv_bn, flatten, make_divisible, reshape, Conv, Pad,
};
use crate::graph::{Builder, Init, OutputKind, Value};

/// Every BatchNorm of both modules.
pub const EPS: f32 = 1e-5;

/// One ghost bottleneck.
#[derive(Debug, Clone)]
pub struct GhostBlock {
    pub in_ch: usize,
    pub mid: usize,
    pub out: usize,
    pub k: usize,
    pub stride: usize,
    pub se_rd: Option<usize>,
    /// The expanding ghost module is gated by the DFC attention branch (`short_conv`):
    /// GhostNet V2's `mode='attn'`, V3's `mode='shortcut'`; never in RepGhostNet.
    pub gated: bool,
}

/// The whole network around the bottlenecks.
#[derive(Debug, Clone)]
pub struct GhostNet {
    pub stem: usize,
    pub stages: Vec<Vec<GhostBlock>>,
    pub final_ch: usize,
    pub head_hidden: usize,
    /// `global_pool` (model_args, else config.json's).
    pub pool: Option<String>,
}

/// The arguments both `__init__`s check the same way: no dilation, `in_chans` as the input
/// size says, a positive `width`.
pub fn check_args(
    a: &Args,
    cfg: &ModelConfig,
    family: &str,
    output_stride: usize,
    in_chans: usize,
    width: f64,
) -> Result<()> {
    if output_stride != 32 {
        return Err(a.unsupported(
            "output_stride",
            &format!("timm's {family} has no dilated variant (only output_stride 32)"),
        ));
    }
    let in_c = cfg.pretrained_cfg.input_size[0];
    if in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {in_chans} but pretrained_cfg input_size has {in_c} channels"
        )));
    }
    if width.is_nan() || width <= 0.0 {
        return Err(Error::invalid_model(format!(
            "`{}`: width must be positive",
            a.arch()
        )));
    }
    Ok(())
}

/// `cfgs`: stages of `[k, exp, c, se, s]`.
pub fn parse_block_table(a: &Args, j: &Json, family: &str) -> Result<Vec<Vec<[f64; 5]>>> {
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
                    "`{}`: {family} cfgs block {blk} is not [odd k, exp, c, se, stride 1|2]",
                    a.arch()
                )));
            }
            blocks.push([v[0], v[1], v[2], v[3], v[4]]);
        }
        out.push(blocks);
    }
    Ok(out)
}

impl GhostNet {
    /// `__init__` over the block table (`make_divisible(.., 4)`): the final ConvBnAct widens the
    /// last expansion by `final_mult` (GhostNet 1, RepGhostNet 2); `gated(i)` says whether the
    /// i-th block (counted over all stages) carries the DFC gate.
    pub fn from_table(
        cfgs: &[Vec<[f64; 5]>],
        width: f64,
        final_mult: f64,
        gated: impl Fn(usize) -> bool,
    ) -> Self {
        let md = |v: f64| make_divisible(v, 4, 0.9);
        let stem = md(16.0 * width);
        let (mut prev, mut idx, mut last_exp) = (stem, 0usize, 16.0);
        let stages = cfgs
            .iter()
            .map(|st| {
                st.iter()
                    .map(|&[k, exp, c, se, s]| {
                        let (out, mid) = (md(c * width), md(exp * width));
                        let blk = GhostBlock {
                            in_ch: prev,
                            mid,
                            out,
                            k: k as usize,
                            stride: s as usize,
                            se_rd: (se > 0.0).then(|| md(mid as f64 * se)),
                            gated: gated(idx),
                        };
                        prev = out;
                        idx += 1;
                        last_exp = exp;
                        blk
                    })
                    .collect()
            })
            .collect();
        GhostNet {
            stem,
            stages,
            final_ch: md(last_exp * width * final_mult),
            head_hidden: 1280,
            pool: None,
        }
    }

    /// Every block's structure from the weights (timm's checkpoints for another table, or
    /// shrunk): `primary` names the ghost module's first conv weight (its input is the module's
    /// input), `dw` the strided depthwise conv's weight that only a stride-2 block has.
    pub fn read_weights(
        &mut self,
        b: &mut Builder,
        family: &str,
        primary: &str,
        dw: &str,
    ) -> Result<()> {
        if let Some(s) = b.weight_shape("conv_stem.weight") {
            self.stem = s[0];
        }
        if let Some(s) = b.weight_shape("conv_head.weight") {
            self.head_hidden = s[0];
        }
        let bl = &mut b.scope("blocks");
        let n = (0..).take_while(|&i| bl.has_module(&i.to_string())).count();
        if n < 2 {
            return Err(Error::invalid_model(format!(
                "{family} weights need block stages and the final ConvBnAct under `blocks`"
            )));
        }
        let Some(last) = bl.scope(n - 1).scope(0).weight_shape("conv.weight") else {
            return Err(Error::invalid_model(format!(
                "{family} weights have no final ConvBnAct `blocks.{}.0.conv.weight`",
                n - 1
            )));
        };
        self.final_ch = last[0];
        let mut stages: Vec<Vec<GhostBlock>> = Vec::new();
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
                            Error::invalid_model(format!("{family} weights lack `{}`", s.key(name)))
                        })
                };
                let in_ch = shape(s, &format!("ghost1.{primary}"))?[1];
                let mid = shape(s, &format!("ghost2.{primary}"))?[1];
                let (stride, k) = match s.weight_shape(dw) {
                    Some(d) if d.len() == 4 => (2, d[2]),
                    _ => (1, s.weight_shape("shortcut.0.weight").map_or(3, |d| d[2])),
                };
                ins.push(in_ch);
                stage.push(GhostBlock {
                    in_ch,
                    mid,
                    // A block's output is the next one's input.
                    out: 0,
                    k,
                    stride,
                    se_rd: s.weight_shape("se.conv_reduce.weight").map(|d| d[0]),
                    gated: s.has_module("ghost1.short_conv"),
                });
            }
            stages.push(stage);
        }
        ins.push(last[1]);
        for (blk, &out) in stages.iter_mut().flatten().zip(&ins[1..]) {
            blk.out = out;
        }
        self.stages = stages;
        Ok(())
    }

    /// Every stage holds at least one block (a table or weights without would build no network).
    pub fn check_stages(&self, arch: &str, family: &str) -> Result<()> {
        if self.stages.is_empty() || self.stages.iter().any(Vec::is_empty) {
            return Err(Error::invalid_model(format!(
                "`{arch}`: {family} needs at least one stage of blocks"
            )));
        }
        Ok(())
    }

    /// `forward_features`: stem conv (its output is timm's first feature), BN, ReLU, the stages
    /// of `bottleneck`s (a stage whose last block strides is a feature), the final 1x1
    /// ConvBnAct.
    pub fn features(
        &self,
        b: &mut Builder,
        in_ch: usize,
        mut bottleneck: impl FnMut(&mut Builder, &Value, &GhostBlock) -> Result<Value>,
    ) -> Result<Value> {
        let input = b.input();
        let stem = Conv::new(in_ch, self.stem, 3).stride(2).pad(Pad::Sym(1));
        let x = conv2d(&mut b.scope("conv_stem"), &input, stem)?;
        b.feature(&x, self.stem, 2, "conv_stem");
        let x = batch_norm(&mut b.scope("bn1"), &x, self.stem, EPS)?;
        let mut x = act(b, "relu", &x)?;
        let mut prev = self.stem;
        let mut stride = 2;
        let blocks = &mut b.scope("blocks");
        for (i, stage) in self.stages.iter().enumerate() {
            let s = &mut blocks.scope(i);
            for (j, blk) in stage.iter().enumerate() {
                x = bottleneck(&mut s.scope(j), &x, blk)?;
                prev = blk.out;
            }
            if stage.last().is_some_and(|blk| blk.stride > 1) {
                stride *= 2;
                s.feature(&x, prev, stride, &format!("blocks.{i}"));
            }
        }
        let mut last = blocks.scope(self.stages.len());
        let s = &mut last.scope(0);
        let c = Conv::new(prev, self.final_ch, 1);
        let x = conv_bn(s, &x, "conv", "bn1", c, EPS)?;
        act(s, "relu", &x)
    }

    /// `global_pool`, `conv_head` (1x1, bias), ReLU, flatten, `classifier`.
    pub fn head(
        &self,
        b: &mut Builder,
        cfg: &ModelConfig,
        x: &Value,
        family: &str,
    ) -> Result<(Value, usize)> {
        let name = self.pool.as_deref().unwrap_or("avg");
        let pool = PoolKind::from_timm(name)?;
        if pool == PoolKind::None || pool.multiplier() != 1 {
            return Err(Error::unsupported(format!(
                "{family}'s conv_head needs a pooled map of num_features channels (global_pool '{name}' is not built)"
            )));
        }
        let p = global_pool(b, x, pool);
        let p = reshape(b, &p, &[0, -1, 1, 1]);
        let c = Conv::new(self.final_ch, self.head_hidden, 1)
            .bias(true)
            .init(Init::DefaultUniform);
        let y = conv2d(&mut b.scope("conv_head"), &p, c)?;
        let y = act(b, "relu", &y)?;
        let y = flatten(b, &y, 1);
        if b.output() == OutputKind::Features || cfg.num_classes == 0 {
            return Ok((y, self.head_hidden));
        }
        let logits = linear_2d(
            &mut b.scope("classifier"),
            &y,
            self.head_hidden,
            cfg.num_classes,
            true,
            Init::DefaultUniform,
        )?;
        Ok((logits, cfg.num_classes))
    }
}

/// The bottleneck's `se` (ReLU, hard-sigmoid gate), where the block has one.
pub fn squeeze_excite(b: &mut Builder, y: &Value, blk: &GhostBlock) -> Result<Value> {
    match blk.se_rd {
        Some(rd) => SqueezeExcite::efficientnet(blk.mid, rd, "relu", "hard_sigmoid")
            .init(Init::DefaultUniform)
            .apply(&mut b.scope("se"), y),
        None => Ok(y.clone()),
    }
}

/// `y + shortcut(x)`: identity, or a depthwise k×k conv+BN at the block's stride and a 1x1
/// conv+BN where the block changes width or size.
pub fn residual(b: &mut Builder, x: &Value, y: &Value, blk: &GhostBlock) -> Result<Value> {
    let sc = if blk.in_ch == blk.out && blk.stride == 1 {
        x.clone()
    } else {
        let sh = &mut b.scope("shortcut");
        let (c, k) = (blk.in_ch, blk.k);
        let dw = Conv::new(c, c, k)
            .stride(blk.stride)
            .groups(c)
            .pad(Pad::Sym((k - 1) / 2));
        let t = conv_bn(sh, x, "0", "1", dw, EPS)?;
        conv_bn(sh, &t, "2", "3", Conv::new(c, blk.out, 1), EPS)?
    };
    Ok(add(b, y, &sc))
}

/// The strided depthwise `conv_dw` + `bn_dw` between the ghost modules of a stride-2 block.
pub fn strided_dw(b: &mut Builder, y: &Value, blk: &GhostBlock) -> Result<Value> {
    conv_bn(b, y, "conv_dw", "bn_dw", dw_conv(blk), EPS)
}

/// The block's strided depthwise conv.
pub fn dw_conv(blk: &GhostBlock) -> Conv {
    let (m, k) = (blk.mid, blk.k);
    Conv::new(m, m, k)
        .stride(blk.stride)
        .groups(m)
        .pad(Pad::Sym((k - 1) / 2))
}
