//! Aligned Xception (timm's `xception_aligned.py`): `xception41/65/71` (post-activation
//! separable convs, BatchNorm folded) and the pre-activation `xception41p/65p`, with
//! `output_stride` 8/16 by dilation as timm builds it.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::graph::args::Args;
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::{act, add, conv2d, conv_bn, conv_norm_act, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;
use serde_json::Value as Json;

static TABLE: Table = Table::new(include_str!("../tables/xception_aligned.json"));

pub const FAMILY: Family = Family {
    name: "xception_aligned",
    examples: "xception41, xception65p, xception71",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `XceptionAligned.__init__`, timm's defaults.
    struct XceptionAlignedArgs {
        block_cfg: Json = Json::Null,
        output_stride: usize = 32,
        preact: bool = false,
        act_layer: String = "relu".into(),
        norm_layer: Json = Json::Null,
    }
}

/// One `block_cfg` entry.
struct BlockCfg {
    in_chs: usize,
    out_chs: [usize; 3],
    stride: usize,
    no_skip: bool,
    start_with_relu: bool,
}

fn block_cfg(a: &Args, v: &Json) -> Result<Vec<BlockCfg>> {
    let bad = || {
        a.unsupported(
            "block_cfg",
            "expected a list of {in_chs, out_chs, stride, ...}",
        )
    };
    let int = |o: &serde_json::Map<String, Json>, k: &str| {
        o.get(k).and_then(Json::as_u64).map(|v| v as usize)
    };
    let flag = |o: &serde_json::Map<String, Json>, k: &str, d: bool| {
        o.get(k).and_then(Json::as_bool).unwrap_or(d)
    };
    let list = v.as_array().filter(|l| !l.is_empty()).ok_or_else(bad)?;
    list.iter()
        .map(|e| {
            let o = e.as_object().ok_or_else(bad)?;
            let out_chs = match o.get("out_chs") {
                Some(Json::Array(l)) if l.len() == 3 => {
                    let v: Option<Vec<usize>> =
                        l.iter().map(|c| c.as_u64().map(|c| c as usize)).collect();
                    let v = v.ok_or_else(bad)?;
                    [v[0], v[1], v[2]]
                }
                Some(c) => [c.as_u64().ok_or_else(bad)? as usize; 3],
                None => return Err(bad()),
            };
            Ok(BlockCfg {
                in_chs: int(o, "in_chs").ok_or_else(bad)?,
                out_chs,
                stride: int(o, "stride").unwrap_or(1).max(1),
                no_skip: flag(o, "no_skip", false),
                start_with_relu: flag(o, "start_with_relu", true),
            })
        })
        .collect()
}

/// `norm_layer`: `nn.BatchNorm2d` (eps 1e-5) or a `partial` of it with its eps.
fn norm_eps(a: &Args, v: &Json) -> Result<f32> {
    let (name, eps) = match v {
        Json::Null => ("batchnorm2d", None),
        Json::String(s) => (s.as_str(), None),
        Json::Object(o) => (
            o.get("partial").and_then(Json::as_str).unwrap_or(""),
            o.get("eps").and_then(Json::as_f64).map(|e| e as f32),
        ),
        _ => ("", None),
    };
    match Norm::from_timm(name, eps) {
        Ok(Norm::Batch { eps }) => Ok(eps),
        _ => Err(a.unsupported("norm_layer", "Aligned Xception supports BatchNorm2d only")),
    }
}

/// The model's act and BatchNorm eps.
struct Ctx {
    act: String,
    eps: f32,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = XceptionAlignedArgs::read(&a)?;
    let blocks = block_cfg(&a, &r.block_cfg)?;
    let c = Ctx {
        act: r.act_layer.clone(),
        eps: norm_eps(&a, &r.norm_layer)?,
    };
    let output_stride = b.output_stride().unwrap_or(r.output_stride);
    if ![8, 16, 32].contains(&output_stride) {
        return Err(a.unsupported("output_stride", "timm accepts 8, 16 or 32"));
    }
    let norm = Norm::Batch { eps: c.eps };
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let stem0 = Conv::new(in_chans, 32, 3)
        .stride(2)
        .init(Init::DefaultUniform);
    let x = conv_norm_act(&mut b.scope("stem.0"), &input, stem0, &norm, Some(&c.act))?;
    let stem1 = Conv::new(32, 64, 3).init(Init::DefaultUniform);
    let mut x = if r.preact {
        conv2d(&mut b.scope("stem.1"), &x, stem1)?
    } else {
        conv_norm_act(&mut b.scope("stem.1"), &x, stem1, &norm, Some(&c.act))?
    };
    let (mut dilation, mut stride) = (1, 2);
    let mut width = 64;
    let last = blocks.len() - 1;
    for (i, blk) in blocks.iter().enumerate() {
        let bs = &mut b.scope("blocks");
        let s = &mut bs.scope(i);
        let (mut blk_stride, blk_dilation) = (blk.stride, dilation);
        let tap = blk.stride > 1;
        let reduction = stride;
        if tap {
            if stride * blk.stride > output_stride {
                dilation *= blk.stride;
                blk_stride = 1;
            } else {
                stride *= blk.stride;
            }
        }
        let geo = (blk.in_chs, blk_stride, blk_dilation);
        let (y, x_tap) = if r.preact {
            pre_xception_module(s, &c, &x, blk, geo)?
        } else {
            xception_module(s, &c, &x, blk, geo)?
        };
        if tap {
            let module = if r.preact {
                "stack.conv2"
            } else {
                "stack.act3"
            };
            s.feature(
                &x_tap,
                blk.out_chs[1],
                reduction,
                &format!("blocks.{i}.{module}"),
            );
        }
        width = blk.out_chs[2];
        x = y;
        if i == last {
            s.feature(&x, width, stride, &format!("blocks.{i}"));
        }
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, width));
    }
    let x = if r.preact { act(b, &c.act, &x)? } else { x };
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        width,
        pool,
        cfg.num_classes,
        features,
    )
}

/// A 3x3 depthwise `conv_dw` of `ch` channels (stride, dilation, `get_padding`).
fn conv_dw(ch: usize, stride: usize, dilation: usize) -> Conv {
    Conv::new(ch, ch, 3)
        .dilation(dilation)
        .stride(stride)
        .depthwise()
        .init(Init::DefaultUniform)
}

/// `XceptionModule`: three `SeparableConv2d`s (each `conv_dw`+`bn_dw`, `conv_pw`+`bn_pw`,
/// folded; ReLU before each when `start_with_relu`, else after each part), the last strided,
/// plus the input or its `shortcut` ConvNormAct (no act). Returns the output and the input of
/// the last separable conv (timm's feature tap).
fn xception_module(
    b: &mut Builder,
    c: &Ctx,
    x: &Value,
    blk: &BlockCfg,
    (in_chs, stride, dil): (usize, usize, usize),
) -> Result<(Value, Value)> {
    let inner_act = (!blk.start_with_relu).then_some(c.act.as_str());
    let (mut y, mut ch) = (x.clone(), in_chs);
    let mut tap = x.clone();
    for i in 0..3 {
        if blk.start_with_relu {
            y = act(b, &c.act, &y)?;
        }
        if i == 2 {
            tap = y.clone();
        }
        let st = &mut b.scope("stack");
        let s = &mut st.scope(format!("conv{}", i + 1));
        let dw = conv_dw(ch, if i == 2 { stride } else { 1 }, dil);
        y = conv_bn(s, &y, "conv_dw", "bn_dw", dw, c.eps)?;
        y = match inner_act {
            Some(a) => act(s, a, &y)?,
            None => y,
        };
        let pw = Conv::new(ch, blk.out_chs[i], 1).init(Init::DefaultUniform);
        y = conv_bn(s, &y, "conv_pw", "bn_pw", pw, c.eps)?;
        y = match inner_act {
            Some(a) => act(s, a, &y)?,
            None => y,
        };
        ch = blk.out_chs[i];
    }
    if blk.no_skip {
        return Ok((y, tap));
    }
    let skip = if ch != in_chs || stride != 1 {
        let sc = Conv::new(in_chs, ch, 1)
            .stride(stride)
            .init(Init::DefaultUniform);
        conv_bn(b, x, "shortcut.conv", "shortcut.bn", sc, c.eps)?
    } else {
        x.clone()
    };
    Ok((add(b, &y, &skip), tap))
}

/// `PreXceptionModule`: `norm` (BatchNorm + act) first, three `PreSeparableConv2d`s (`norm` +
/// act before all but the first, `conv_dw`, `conv_pw`), plus the normed input or its
/// `shortcut` conv. Returns the output and the second separable conv's output (the tap).
fn pre_xception_module(
    b: &mut Builder,
    c: &Ctx,
    x: &Value,
    blk: &BlockCfg,
    (in_chs, stride, dil): (usize, usize, usize),
) -> Result<(Value, Value)> {
    let norm = Norm::Batch { eps: c.eps };
    let xn = norm.apply_2d(&mut b.scope("norm"), x, in_chs)?;
    let xn = act(b, &c.act, &xn)?;
    let (mut y, mut ch) = (xn.clone(), in_chs);
    let mut tap = xn.clone();
    for i in 0..3 {
        let st = &mut b.scope("stack");
        let s = &mut st.scope(format!("conv{}", i + 1));
        if i == 2 {
            tap = y.clone();
        }
        if i > 0 {
            y = norm.apply_2d(&mut s.scope("norm"), &y, ch)?;
            y = act(s, &c.act, &y)?;
        }
        let dw = conv_dw(ch, if i == 2 { stride } else { 1 }, dil);
        y = conv2d(&mut s.scope("conv_dw"), &y, dw)?;
        let pw = Conv::new(ch, blk.out_chs[i], 1).init(Init::DefaultUniform);
        y = conv2d(&mut s.scope("conv_pw"), &y, pw)?;
        ch = blk.out_chs[i];
    }
    if blk.no_skip {
        return Ok((y, tap));
    }
    let skip = if ch != in_chs || stride != 1 {
        let sc = Conv::new(in_chs, ch, 1)
            .stride(stride)
            .init(Init::DefaultUniform);
        conv2d(&mut b.scope("shortcut"), &xn, sc)?
    } else {
        xn
    };
    Ok((add(b, &y, &skip), tap))
}
