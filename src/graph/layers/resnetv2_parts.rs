//! timm's `ResNetV2` (`resnetv2.py`) as a network to build: `create_resnetv2_stem` (7×7 or
//! deep stems, BiT's zero-padded 'fixed' pool, the 'same' stem of the hybrid ViTs), the
//! `ResNetStage`s of `PreActBasic` / `PreActBottleneck` / `Bottleneck` blocks with
//! `DownsampleConv` / `DownsampleAvg` shortcuts, convs plain or `StdConv2d` /
//! `StdConv2dSame` (weights standardised at load), BatchNorm (folded) or GroupNorm. For the
//! `resnetv2` family and the hybrid ViTs' backbones (`vision_transformer_hybrid.py`).

use crate::error::Result;
use crate::graph::layers::conv::std_conv_bn;
use crate::graph::layers::evo_norm::EvoNorm;
use crate::graph::layers::pool::{avg_pool2d_same_s1, max_pool2d_same, Pool2d, PoolKind};
use crate::graph::layers::{self, conv2d, conv_bn, make_divisible, Conv, Pad};
use crate::graph::spatial::Step;
use crate::graph::{Builder, Value};

/// The norm-act layers resnetv2 builds (`get_norm_act_layer`), each followed by `act_layer`
/// unless `apply_act=False`.
#[derive(Debug, Clone, PartialEq)]
pub enum NormAct {
    Batch {
        eps: f32,
    },
    Group {
        groups: usize,
        eps: f32,
    },
    /// EvoNorm2d* / FilterResponseNorm*: the activation is the layer's own, `act_layer` unused
    /// (except by FilterResponseNormAct2d, which `get_norm_act_layer` hands it).
    Evo(EvoNorm),
}

#[derive(Debug, Clone)]
pub struct ResNetV2 {
    pub layers: Vec<usize>,
    pub channels: Vec<usize>,
    pub in_chans: usize,
    pub output_stride: usize,
    pub stem_chs: usize,
    pub deep_stem: bool,
    pub tiered_stem: bool,
    pub fixed_pad: bool,
    pub avg_down: bool,
    pub preact: bool,
    pub basic: bool,
    pub bottle_ratio: f64,
    pub act: String,
    pub norm: NormAct,
    /// `StdConv2d`'s eps, or None for a plain conv (`create_conv2d`).
    pub std_eps: Option<f32>,
    pub pool: PoolKind,
    /// timm's `stem_type='same'` with `StdConv2dSame` (the hybrid ViTs): every conv TF "SAME"
    /// padded, the stem's pool `MaxPool2dSame`.
    pub same: bool,
}

impl ResNetV2 {
    /// The conv's padding: timm's symmetric one, or TF "SAME" (`StdConv2dSame`).
    fn padded(&self, c: Conv) -> Conv {
        if self.same {
            c.pad(Pad::same(c.kernel.0, c.stride, c.dilation))
        } else {
            c
        }
    }

    /// `conv` (standardised when `StdConv2d`) with the norm-act `norm` after it (BatchNorm
    /// folded in); `act` false for `apply_act=False`.
    pub fn conv_norm(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, norm): (&str, &str),
        c: Conv,
        act: bool,
    ) -> Result<Value> {
        let c = self.padded(c);
        let y = match (&self.norm, self.std_eps) {
            (&NormAct::Batch { eps }, None) => conv_bn(b, x, conv, norm, c, eps)?,
            (&NormAct::Batch { eps }, Some(std)) => {
                std_conv_bn(b, x, conv, Some((norm, eps)), c, std)?
            }
            (NormAct::Group { .. } | NormAct::Evo(_), _) => {
                let y = self.conv(b, x, conv, c)?;
                return self.norm_act(&mut b.scope(norm), &y, c.out_ch, act);
            }
        };
        if act {
            layers::act(b, &self.act, &y)
        } else {
            Ok(y)
        }
    }

    /// A conv with no norm after it.
    pub fn conv(&self, b: &mut Builder, x: &Value, conv: &str, c: Conv) -> Result<Value> {
        let c = self.padded(c);
        match self.std_eps {
            Some(eps) => std_conv_bn(b, x, conv, None, c, eps),
            None => conv2d(&mut b.scope(conv), x, c),
        }
    }

    /// A norm-act layer on its own (in the current scope).
    pub fn norm_act(&self, b: &mut Builder, x: &Value, ch: usize, act: bool) -> Result<Value> {
        let y = match &self.norm {
            &NormAct::Batch { eps } => layers::batch_norm(b, x, ch, eps)?,
            &NormAct::Group { groups, eps } => layers::group_norm(b, x, groups, ch, eps)?,
            NormAct::Evo(e) => return e.apply(b, x, ch, act),
        };
        if act {
            layers::act(b, &self.act, &y)
        } else {
            Ok(y)
        }
    }
}

/// `create_resnetv2_stem`: a 7x7 conv or the deep 3x3 stack, a norm when not pre-activation,
/// then the max pool (after a zero pad for BiT's 'fixed' stems).
pub fn stem(b: &mut Builder, n: &ResNetV2, x: &Value) -> Result<(Value, &'static str)> {
    let out = n.stem_chs;
    Ok(if n.deep_stem {
        let (c0, c1) = if n.tiered_stem {
            (3 * out / 8, out / 2)
        } else {
            (out / 2, out / 2)
        };
        let y = n.conv_norm(
            b,
            x,
            ("conv1", "norm1"),
            Conv::new(n.in_chans, c0, 3).stride(2),
            true,
        )?;
        let y = n.conv_norm(b, &y, ("conv2", "norm2"), Conv::new(c0, c1, 3), true)?;
        let c = Conv::new(c1, out, 3);
        if n.preact {
            let y = n.conv(b, &y, "conv3", c)?;
            (y, "stem.conv3")
        } else {
            let y = n.conv_norm(b, &y, ("conv3", "norm3"), c, true)?;
            (y, "stem.norm3")
        }
    } else {
        let c = Conv::new(n.in_chans, out, 7).stride(2);
        if n.preact {
            let y = n.conv(b, x, "conv", c)?;
            (y, "stem.conv")
        } else {
            let y = n.conv_norm(b, x, ("conv", "norm"), c, true)?;
            (y, "stem.norm")
        }
    })
}

/// The stem's max pool (`stem.pool`), after a zero pad (`stem.pad`) for BiT's 'fixed' stems.
pub fn stem_pool(b: &mut Builder, n: &ResNetV2, y: &Value) -> Result<Value> {
    let out = n.stem_chs;
    if n.same {
        return max_pool2d_same(b, y, 3, 2, out);
    }
    if n.fixed_pad {
        // nn.ConstantPad2d(1, 0.) then MaxPool2d(3, 2): the zeros take part in the max. Written
        // as zero rows and columns concatenated around the map, not as an ONNX Pad: ONNX
        // Runtime's Pad fusion folds a zero Pad into the MaxPool's pads, which pad with -inf
        // (wrong wherever a border window is all negative), and breaks the graph when the
        // padded map is also a feature output.
        let zeros = |b: &mut Builder, v: &Value, axis: i64| {
            let edge = layers::slice(b, v, axis, 0, 1);
            layers::scale(b, &edge, 0.0)
        };
        let z = zeros(b, y, 2);
        let p = layers::concat(b, &[&z, y, &z], 2);
        let z = zeros(b, &p, 3);
        let p = layers::concat(b, &[&z, &p, &z], 3);
        let grow = Step::Window {
            k: 1,
            stride: 1,
            pad: 2,
            dilation: 1,
            ceil: false,
        };
        b.set_spatial(&p, y, grow, out)?;
        Pool2d::new(3, 2, 0).max(b, &p, out)
    } else {
        Pool2d::new(3, 2, 1).max(b, y, out)
    }
}

/// A block's place: widths, stride, dilations, and whether it has the stage's projection.
struct Geom {
    in_chs: usize,
    out_chs: usize,
    stride: usize,
    dilation: usize,
    first_dilation: usize,
    proj: bool,
}

/// `stages.{i}` (`ResNetStage`): stride 2 after the first until the output stride, dilation
/// after that; one feature map per stage when `taps` (the network's own feature maps).
pub fn stages(b: &mut Builder, n: &ResNetV2, x: &Value, taps: bool) -> Result<(Value, usize)> {
    let mut x = x.clone();
    let mut prev = n.stem_chs;
    let (mut curr_stride, mut dilation) = (4, 1);
    for (s, (&depth, &out_chs)) in n.layers.iter().zip(&n.channels).enumerate() {
        let mut stride = if s == 0 { 1 } else { 2 };
        if curr_stride >= n.output_stride {
            dilation *= stride;
            stride = 1;
        }
        let mut first_dilation = if dilation == 1 || dilation == 2 { 1 } else { 2 };
        for i in 0..depth {
            let g = Geom {
                in_chs: prev,
                out_chs,
                stride: if i == 0 { stride } else { 1 },
                dilation,
                first_dilation,
                proj: i == 0,
            };
            let stage = &mut b.scope("stages");
            let stage = &mut stage.scope(s);
            let blocks = &mut stage.scope("blocks");
            let blk = &mut blocks.scope(i);
            x = match (n.preact, n.basic) {
                (true, true) => preact_basic(blk, n, &x, &g)?,
                (true, false) => preact_bottleneck(blk, n, &x, &g)?,
                (false, _) => bottleneck(blk, n, &x, &g)?,
            };
            prev = out_chs;
            first_dilation = dilation;
        }
        curr_stride *= stride;
        if taps {
            b.feature(&x, prev, curr_stride, &format!("stages.{s}"));
        }
    }
    Ok((x, prev))
}

/// The block's bottleneck width: `make_divisible(out_chs * bottle_ratio)`.
fn mid_chs(n: &ResNetV2, g: &Geom) -> usize {
    make_divisible(g.out_chs as f64 * n.bottle_ratio, 8, 0.9)
}

/// `PreActBasic`: norm1 (shared with the projection), 3x3, norm2, 3x3, plus the shortcut.
fn preact_basic(b: &mut Builder, n: &ResNetV2, x: &Value, g: &Geom) -> Result<Value> {
    let mid = mid_chs(n, g);
    let pre = n.norm_act(&mut b.scope("norm1"), x, g.in_chs, true)?;
    let needs_proj = g.stride != 1 || g.first_dilation != g.dilation || g.in_chs != g.out_chs;
    let shortcut = if g.proj && needs_proj {
        downsample(&mut b.scope("downsample"), n, &pre, g)?
    } else {
        x.clone()
    };
    let c1 = Conv::new(g.in_chs, mid, 3)
        .stride(g.stride)
        .dilation(g.first_dilation);
    let y = n.conv_norm(b, &pre, ("conv1", "norm2"), c1, true)?;
    let y = n.conv(
        b,
        &y,
        "conv2",
        Conv::new(mid, g.out_chs, 3).dilation(g.dilation),
    )?;
    residual_sum(b, &y, &shortcut, g.out_chs)
}

/// `PreActBottleneck`: norm1 (shared with the projection), 1x1, norm2, 3x3 (strided), norm3,
/// 1x1, plus the shortcut.
fn preact_bottleneck(b: &mut Builder, n: &ResNetV2, x: &Value, g: &Geom) -> Result<Value> {
    let mid = mid_chs(n, g);
    let pre = n.norm_act(&mut b.scope("norm1"), x, g.in_chs, true)?;
    let shortcut = if g.proj {
        downsample(&mut b.scope("downsample"), n, &pre, g)?
    } else {
        x.clone()
    };
    let y = n.conv_norm(
        b,
        &pre,
        ("conv1", "norm2"),
        Conv::new(g.in_chs, mid, 1),
        true,
    )?;
    let c2 = Conv::new(mid, mid, 3)
        .stride(g.stride)
        .dilation(g.first_dilation);
    let y = n.conv_norm(b, &y, ("conv2", "norm3"), c2, true)?;
    let y = n.conv(b, &y, "conv3", Conv::new(mid, g.out_chs, 1))?;
    residual_sum(b, &y, &shortcut, g.out_chs)
}

/// `Bottleneck` (not pre-activation, as in V1.5): conv-norm-act ×2, conv-norm, sum, act.
fn bottleneck(b: &mut Builder, n: &ResNetV2, x: &Value, g: &Geom) -> Result<Value> {
    let mid = mid_chs(n, g);
    let shortcut = if g.proj {
        downsample(&mut b.scope("downsample"), n, x, g)?
    } else {
        x.clone()
    };
    let y = n.conv_norm(b, x, ("conv1", "norm1"), Conv::new(g.in_chs, mid, 1), true)?;
    let c2 = Conv::new(mid, mid, 3)
        .stride(g.stride)
        .dilation(g.first_dilation);
    let y = n.conv_norm(b, &y, ("conv2", "norm2"), c2, true)?;
    let c3 = Conv::new(mid, g.out_chs, 1);
    let y = n.conv_norm(b, &y, ("conv3", "norm3"), c3, false)?;
    let y = residual_sum(b, &y, &shortcut, g.out_chs)?;
    layers::act(b, &n.act, &y)
}

/// The branch plus the shortcut; the sum has the branch's size.
fn residual_sum(b: &mut Builder, y: &Value, shortcut: &Value, ch: usize) -> Result<Value> {
    let sum = layers::add(b, y, shortcut);
    let same = Step::Window {
        k: 1,
        stride: 1,
        pad: 0,
        dilation: 1,
        ceil: false,
    };
    b.set_spatial(&sum, y, same, ch)?;
    Ok(sum)
}

/// `DownsampleAvg` (pool, 1x1 conv) or `DownsampleConv` (strided 1x1 conv); a norm without
/// activation after the conv when not pre-activation.
fn downsample(b: &mut Builder, n: &ResNetV2, x: &Value, g: &Geom) -> Result<Value> {
    let (x, stride) = if !n.avg_down {
        (x.clone(), g.stride)
    } else if g.dilation > 1 {
        (avg_pool2d_same_s1(b, x, 2, g.in_chs)?, 1)
    } else if g.stride > 1 {
        let p = Pool2d::new(2, g.stride, 0)
            .ceil(true)
            .count_include_pad(false)
            .avg(b, x, g.in_chs)?;
        (p, 1)
    } else {
        (x.clone(), 1)
    };
    let c = Conv::new(g.in_chs, g.out_chs, 1).stride(stride);
    if n.preact {
        n.conv(b, &x, "conv", c)
    } else {
        n.conv_norm(b, &x, ("conv", "norm"), c, false)
    }
}
