//! timm's `resnetv2.py`: pre-activation ResNet V2 — BiT (`resnetv2_*x*_bit`: `StdConv2d` with
//! eps 1e-8, GroupNorm, the 'fixed' stem's zero pad before the max pool), the BatchNorm ResNet-V2s (`resnetv2_18..152d`, basic and
//! bottleneck blocks, deep / tiered stems, avg-down shortcuts), `resnetv2_50d_gn`, and the
//! non-pre-activation bottleneck (`preact=False`); `resnetv2_50d_evos` / `_frn` (and any
//! EvoNorm / FilterResponseNorm `norm_layer`) with the norm-act layer of `layers::evo_norm`.
//!
//! Weight standardisation is done once at load; a BatchNorm straight after a conv is folded into
//! it. The pre-activation norms that follow a residual sum (`norm1`, the final `norm`) stay norms.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::conv::std_conv_bn;
use crate::graph::layers::evo_norm::EvoNorm;
use crate::graph::layers::pool::{avg_pool2d_same_s1, global_pool, Pool2d, PoolKind};
use crate::graph::layers::{self, conv2d, conv_bn, make_divisible, Conv};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};

static TABLE: Table = Table::new(include_str!("../tables/resnetv2.json"));

pub const FAMILY: Family = Family {
    name: "resnetv2",
    examples: "resnetv2_50x1_bit..resnetv2_152x4_bit, resnetv2_18..resnetv2_152d, resnetv2_50d_gn",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

crate::timm_args! {
    /// `ResNetV2.__init__`'s keyword arguments, with timm's defaults (`norm_layer` None is
    /// `partial(GroupNormAct, num_groups=32)`, `conv_layer` None is `StdConv2d`).
    struct ResNetV2Args {
        layers: Vec<usize> = vec![],
        channels: Vec<usize> = vec![256, 512, 1024, 2048],
        in_chans: Option<usize> = None,
        global_pool: String = "avg".into(),
        output_stride: usize = 32,
        width_factor: usize = 1,
        stem_chs: usize = 64,
        stem_type: String = String::new(),
        avg_down: bool = false,
        preact: bool = true,
        basic: bool = false,
        bottle_ratio: f64 = 0.25,
        act_layer: String = "relu".into(),
        norm_layer: Option<Json> = None,
        conv_layer: Option<Json> = None,
        zero_init_last: bool = false,
    }
}

/// The norm-act layers resnetv2 builds (`get_norm_act_layer`), each followed by `act_layer`
/// unless `apply_act=False`.
#[derive(Debug, Clone, PartialEq)]
enum NormAct {
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
struct ResNetV2 {
    layers: Vec<usize>,
    channels: Vec<usize>,
    in_chans: usize,
    output_stride: usize,
    stem_chs: usize,
    deep_stem: bool,
    tiered_stem: bool,
    fixed_pad: bool,
    avg_down: bool,
    preact: bool,
    basic: bool,
    bottle_ratio: f64,
    act: String,
    norm: NormAct,
    /// `StdConv2d`'s eps, or None for a plain conv (`create_conv2d`).
    std_eps: Option<f32>,
    pool: PoolKind,
}

/// A layer given as a name or as `partial(name, **kw)`: the lower-cased name and the keywords.
fn layer_spec(v: &Json) -> Option<(String, Option<&serde_json::Map<String, Json>>)> {
    match v {
        Json::String(s) => Some((s.to_ascii_lowercase().replace('_', ""), None)),
        Json::Object(m) => {
            let name = m.get("partial")?.as_str()?;
            Some((name.to_ascii_lowercase().replace('_', ""), Some(m)))
        }
        _ => None,
    }
}

impl ResNetV2 {
    fn from_config(cfg: &ModelConfig, requested_os: Option<usize>) -> Result<ResNetV2> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a resnetv2 architecture this build knows"
            ))
        })?;
        let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let a = ResNetV2Args::read(&args)?;
        layers::act::canonical(&a.act_layer)?;
        // Only how a network without weights starts (zeroed last conv / norm); accepted as timm's.
        let _ = a.zero_init_last;

        let norm_json = a
            .norm_layer
            .clone()
            .unwrap_or_else(|| Json::String("groupnormact".into()));
        let (name, kw) = layer_spec(&norm_json)
            .ok_or_else(|| args.unsupported("norm_layer", "expected a norm layer name"))?;
        let kw_f = |k: &str| kw.and_then(|m| m.get(k)).and_then(Json::as_f64);
        let eps = kw_f("eps").map_or(1e-5, |e| e as f32);
        let norm = match name.as_str() {
            "batchnormact2d" | "batchnorm2d" | "batchnorm" => NormAct::Batch { eps },
            "groupnormact" | "groupnorm" => NormAct::Group {
                groups: kw_f("num_groups").map_or(32, |g| g as usize),
                eps,
            },
            "groupnorm1act" | "groupnorm1" => NormAct::Group { groups: 1, eps },
            n => match EvoNorm::from_timm(n, kw, Some(&a.act_layer)) {
                Some(e) => NormAct::Evo(e?),
                None => {
                    return Err(args.unsupported(
                        "norm_layer",
                        "resnetv2 norm layers are BatchNormAct2d, GroupNormAct, EvoNorm2d* and FilterResponseNorm*",
                    ))
                }
            },
        };
        let std_eps = match a.conv_layer.as_ref().map(layer_spec) {
            None => Some(1e-6),
            Some(Some((n, kw))) if n == "stdconv2d" => Some(
                kw.and_then(|m| m.get("eps"))
                    .and_then(Json::as_f64)
                    .map_or(1e-6, |e| e as f32),
            ),
            Some(Some((n, _))) if n == "createconv2d" || n == "conv2d" => None,
            _ => {
                return Err(args.unsupported(
                    "conv_layer",
                    "resnetv2 convs are StdConv2d or create_conv2d",
                ))
            }
        };
        let stem_type = a.stem_type.as_str();
        if !["", "fixed", "deep", "deep_fixed", "tiered"].contains(&stem_type) {
            return Err(args.unsupported(
                "stem_type",
                "stem_type must be '', 'fixed', 'deep', 'deep_fixed' or 'tiered' ('same' padding is not implemented)",
            ));
        }
        if a.basic && !a.preact {
            return Err(Error::invalid_model(format!(
                "`{arch}`: basic blocks are pre-activation only"
            )));
        }
        let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or(&a.global_pool))?;
        if pool == PoolKind::None {
            return Err(Error::unsupported(format!(
                "`{arch}`: global_pool '' is not supported by the native resnetv2 graph"
            )));
        }
        let n = a.layers.len();
        if n == 0 || a.channels.len() != n {
            return Err(Error::invalid_model(format!(
                "`{arch}`: layers {:?} and channels {:?} must have the same, non-zero length",
                a.layers, a.channels
            )));
        }
        let output_stride = requested_os.unwrap_or(a.output_stride);
        if ![8, 16, 32].contains(&output_stride) {
            return Err(Error::invalid_argument(format!(
                "output_stride {output_stride} is not one timm's ResNetV2 builds (8, 16 or 32)"
            )));
        }
        let input_chans = cfg.pretrained_cfg.input_size[0];
        let in_chans = a.in_chans.unwrap_or(input_chans);
        if in_chans != input_chans {
            return Err(Error::invalid_model(format!(
                "`{arch}`: model_args in_chans {in_chans} disagrees with input_size {:?}",
                cfg.pretrained_cfg.input_size
            )));
        }
        if a.width_factor == 0
            || a.stem_chs == 0
            || a.bottle_ratio.is_nan()
            || a.bottle_ratio <= 0.0
        {
            return Err(Error::invalid_model(format!(
                "`{arch}`: width_factor, stem_chs and bottle_ratio must be positive"
            )));
        }
        let wf = a.width_factor as f64;
        Ok(ResNetV2 {
            layers: a.layers,
            channels: a
                .channels
                .iter()
                .map(|&c| make_divisible(c as f64 * wf, 8, 0.9))
                .collect(),
            in_chans,
            output_stride,
            stem_chs: make_divisible(a.stem_chs as f64 * wf, 8, 0.9),
            deep_stem: stem_type.contains("deep") || stem_type.contains("tiered"),
            tiered_stem: stem_type.contains("tiered"),
            fixed_pad: stem_type.contains("fixed"),
            avg_down: a.avg_down,
            preact: a.preact,
            basic: a.basic,
            bottle_ratio: a.bottle_ratio,
            act: a.act_layer,
            norm,
            std_eps,
            pool,
        })
    }

    /// `conv` (standardised when `StdConv2d`) with the norm-act `norm` after it (BatchNorm
    /// folded in); `act` false for `apply_act=False`.
    fn conv_norm(
        &self,
        b: &mut Builder,
        x: &Value,
        (conv, norm): (&str, &str),
        c: Conv,
        act: bool,
    ) -> Result<Value> {
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
    fn conv(&self, b: &mut Builder, x: &Value, conv: &str, c: Conv) -> Result<Value> {
        match self.std_eps {
            Some(eps) => std_conv_bn(b, x, conv, None, c, eps),
            None => conv2d(&mut b.scope(conv), x, c),
        }
    }

    /// A norm-act layer on its own (in the current scope).
    fn norm_act(&self, b: &mut Builder, x: &Value, ch: usize, act: bool) -> Result<Value> {
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

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = ResNetV2::from_config(cfg, b.output_stride())?;
    let x = b.input();
    let (tap, module) = stem(&mut b.scope("stem"), &net, &x)?;
    b.feature(&tap, net.stem_chs, 2, module);
    let x = stem_pool(b, &net, &tap)?;
    let (x, num_features) = stages(b, &net, &x)?;
    let out = b.output();
    if out == OutputKind::FeatureMaps {
        return Ok((x, num_features));
    }
    let x = if net.preact {
        net.norm_act(&mut b.scope("norm"), &x, num_features, true)?
    } else {
        x
    };
    // ClassifierHead(use_conv=True): the pooled map through a 1x1 conv `head.fc`, flattened.
    let pooled = global_pool(b, &x, net.pool);
    let width = num_features * net.pool.multiplier();
    if out == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let map = layers::reshape(b, &pooled, &[0, -1, 1, 1]);
    let fc = Conv::new(width, cfg.num_classes, 1).bias(true);
    let y = conv2d(&mut b.scope("head").scope("fc"), &map, fc)?;
    let y = b.op("Flatten", &[&y], vec![("axis", crate::graph::Attr::Int(1))]);
    Ok((y, cfg.num_classes))
}

/// `create_resnetv2_stem`: a 7x7 conv or the deep 3x3 stack, a norm when not pre-activation,
/// then the max pool (after a zero pad for BiT's 'fixed' stems).
fn stem(b: &mut Builder, n: &ResNetV2, x: &Value) -> Result<(Value, &'static str)> {
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
fn stem_pool(b: &mut Builder, n: &ResNetV2, y: &Value) -> Result<Value> {
    let out = n.stem_chs;
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
/// after that; one feature map per stage.
fn stages(b: &mut Builder, n: &ResNetV2, x: &Value) -> Result<(Value, usize)> {
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
        b.feature(&x, prev, curr_stride, &format!("stages.{s}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::layers::evo_norm::EvoKind;

    #[test]
    fn every_table_architecture_builds() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            if let Err(e) = ResNetV2::from_config(&cfg, None) {
                panic!("{arch}: {e:?}");
            }
        }
    }

    #[test]
    fn evos_and_frn_take_timm_s_layer_and_defaults() {
        for (arch, kind, eps) in [
            ("resnetv2_50d_evos", EvoKind::S0, 1e-5),
            ("resnetv2_50d_frn", EvoKind::FrnTlu, 1e-5),
        ] {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            let n = ResNetV2::from_config(&cfg, None).unwrap();
            let NormAct::Evo(e) = &n.norm else {
                panic!("{arch}: {:?}", n.norm)
            };
            assert_eq!((e.kind, e.eps, e.groups), (kind, eps, 32), "{arch}");
            assert_eq!(n.std_eps, None, "{arch}: create_conv2d");
        }
    }

    #[test]
    fn bit_is_stdconv_with_eps_1e8_groupnorm_32_and_the_fixed_stem() {
        let cfg = (FAMILY.default_config)("resnetv2_50x1_bit").unwrap();
        let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
        let n = ResNetV2::from_config(&cfg, None).unwrap();
        assert_eq!(n.std_eps, Some(1e-8));
        assert_eq!(
            n.norm,
            NormAct::Group {
                groups: 32,
                eps: 1e-5
            }
        );
        assert!(n.fixed_pad && n.preact && !n.deep_stem);
    }
}
