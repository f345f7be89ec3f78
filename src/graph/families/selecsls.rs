//! SelecSLS (timm's `selecsls.py`): `selecsls42`, `selecsls42b`, `selecsls60`, `selecsls60b`,
//! `selecsls84`.
//!
//! timm's entrypoints pass a cfg (block tuples, head convs, `feature_info`; the generated table)
//! that config.json cannot describe. A `SelecSlsBlock` passes `[x, skip]` on: a chain of five
//! conv-bn-relu, `conv6` over `d1, d2, d3` (and the skip of the stage's first block), the first
//! block of a stage starting a new skip. Every conv's width (and kernel) is read from the weights
//! when there are weights, and taken from the cfg otherwise. timm's SelecSLS has no dilated form.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::{act, concat, conv_bn, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/selecsls.json"));

pub const FAMILY: Family = Family {
    name: "selecsls",
    examples: "selecsls42, selecsls42b, selecsls60, selecsls60b, selecsls84",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `SelecSls.__init__`: only the cfg shapes the graph.
    struct SelecSlsArgs {
        model_cfg: Json = Json::Null,
    }
}

const EPS: f32 = 1e-5;

/// One `SelecSlsBlock`: `(in_chs, skip_chs, mid_chs, out_chs, is_first, stride)`; the input
/// and skip widths follow from the blocks before it.
#[derive(Debug, Clone, Copy)]
struct BlockCfg {
    mid: usize,
    out: usize,
    is_first: bool,
    stride: usize,
}

/// One head `conv_bn`: `(in_chs, out_chs, kernel, stride)`; the input width follows.
#[derive(Debug, Clone, Copy)]
struct HeadCfg {
    out: usize,
    k: usize,
    stride: usize,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = SelecSlsArgs::read(&a)?;
    let (blocks, head, taps) = parse_cfg(&a, &r.model_cfg)?;
    b.default_out_indices(&[0, 1, 2, 3, 4]);

    // The maps timm's feature_info names, in its order: (module, value, channels, stride).
    let mut found: Vec<(String, Value, usize, usize)> = Vec::new();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let stem_c = b.weight_shape("stem.0.weight").map_or(32, |s| s[0]);
    let mut x = conv_bn_relu(
        &mut b.scope("stem"),
        &input,
        Conv::new(in_ch, stem_c, 3).stride(2),
    )?;
    let (mut ch, mut stride) = (stem_c, 2);
    found.push(("stem.2".into(), x.clone(), ch, stride));

    let mut skip: Option<(Value, usize)> = None;
    for (i, bc) in blocks.iter().enumerate() {
        let fs = &mut b.scope("features");
        let s = &mut fs.scope(i);
        let (y, out, new_skip) = block(s, &x, ch, skip.as_ref(), bc)?;
        x = y;
        ch = out;
        skip = Some(new_skip);
        stride *= bc.stride;
        found.push((format!("features.{i}"), x.clone(), ch, stride));
    }
    for (i, hc) in head.iter().enumerate() {
        let hs = &mut b.scope("head");
        let s = &mut hs.scope(i);
        let (out, k) = s
            .weight_shape("0.weight")
            .filter(|w| w.len() == 4)
            .map_or((hc.out, hc.k), |w| (w[0], w[2]));
        let c = Conv::new(ch, out, k).stride(hc.stride);
        x = conv_bn_relu(s, &x, c)?;
        ch = out;
        stride *= hc.stride;
        found.push((format!("head.{i}"), x.clone(), ch, stride));
    }
    for t in &taps {
        let Some((m, v, c, red)) = found.iter().find(|f| &f.0 == t) else {
            return Err(Error::invalid_model(format!(
                "`{arch}`: feature_info names `{t}`, which the cfg does not build"
            )));
        };
        b.feature(v, *c, *red, m);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, ch));
    }
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native SelecSLS graph",
        ));
    }
    let features = b.output() == OutputKind::Features;
    classifier_head(b, &x, ch, pool, cfg.num_classes, features)
}

/// The cfg's blocks, head convs and `feature_info` module names.
fn parse_cfg(a: &Args, v: &Json) -> Result<(Vec<BlockCfg>, Vec<HeadCfg>, Vec<String>)> {
    let bad = |why: &str| a.unsupported("model_cfg", why);
    let m = v
        .as_object()
        .ok_or_else(|| bad("the native graph reads timm's cfg object"))?;
    for k in m.keys() {
        if !matches!(
            k.as_str(),
            "block" | "features" | "head" | "num_features" | "feature_info"
        ) {
            return Err(bad(&format!(
                "cfg key `{k}` is not one timm's SelecSls reads"
            )));
        }
    }
    if m.get("block").and_then(Json::as_str) != Some("selecslsblock") {
        return Err(bad("the only SelecSLS block is SelecSlsBlock"));
    }
    let int = |v: &Json| {
        v.as_u64()
            .filter(|&n| n <= crate::graph::args::MAX_INT)
            .map(|n| n as usize)
    };
    let list = |key: &str| {
        m.get(key)
            .and_then(Json::as_array)
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad(&format!("cfg `{key}` must be a non-empty list")))
    };
    let mut blocks = Vec::new();
    for t in list("features")? {
        let t = t.as_array().map(Vec::as_slice).unwrap_or_default();
        let parsed = match t {
            [i, s, md, o, f, st] => match (int(i), int(s), int(md), int(o), f.as_bool(), int(st)) {
                (Some(_), Some(_), Some(mid), Some(out), Some(is_first), Some(stride))
                    if mid > 1 && out > 0 && matches!(stride, 1 | 2) =>
                {
                    Some(BlockCfg {
                        mid,
                        out,
                        is_first,
                        stride,
                    })
                }
                _ => None,
            },
            _ => None,
        };
        blocks.push(parsed.ok_or_else(|| {
            Error::invalid_model(format!(
                "`{}`: a SelecSLS block is (in, skip, mid, out, is_first, stride 1|2), got {t:?}",
                a.arch()
            ))
        })?);
    }
    if !blocks[0].is_first {
        return Err(Error::invalid_model(format!(
            "`{}`: the first SelecSLS block must start a skip (is_first)",
            a.arch()
        )));
    }
    let mut head = Vec::new();
    for t in list("head")? {
        let t = t.as_array().map(Vec::as_slice).unwrap_or_default();
        let parsed = match t {
            [i, o, k, s] => match (int(i), int(o), int(k), int(s)) {
                (Some(_), Some(out), Some(k), Some(stride))
                    if out > 0 && k % 2 == 1 && (1..=2).contains(&stride) =>
                {
                    Some(HeadCfg { out, k, stride })
                }
                _ => None,
            },
            _ => None,
        };
        head.push(parsed.ok_or_else(|| {
            Error::invalid_model(format!(
                "`{}`: a SelecSLS head conv is (in, out, odd kernel, stride 1|2), got {t:?}",
                a.arch()
            ))
        })?);
    }
    let taps = list("feature_info")?
        .iter()
        .map(|f| {
            f.get("module")
                .and_then(Json::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad("feature_info entries name their module"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((blocks, head, taps))
}

/// timm's `conv_bn` Sequential: conv `0` (no bias, `get_padding`), BatchNorm `1` folded, relu.
fn conv_bn_relu(b: &mut Builder, x: &Value, c: Conv) -> Result<Value> {
    let y = conv_bn(b, x, "0", "1", c, EPS)?;
    act(b, "relu", &y)
}

/// A conv's output width: the weights' when there are weights.
fn width(b: &Builder, name: &str, nominal: usize) -> usize {
    b.weight_shape(&format!("{name}.0.weight"))
        .filter(|s| s.len() == 4)
        .map_or(nominal, |s| s[0])
}

/// `SelecSlsBlock.forward` on `[x, skip]`: returns the output, its width and the skip the
/// next block gets (the output itself after a stage's first block).
fn block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    skip: Option<&(Value, usize)>,
    bc: &BlockCfg,
) -> Result<(Value, usize, (Value, usize))> {
    let mid = width(b, "conv1", bc.mid);
    let half = width(b, "conv3", bc.mid / 2);
    let out = width(b, "conv6", bc.out);
    let d1 = conv_bn_relu(
        &mut b.scope("conv1"),
        x,
        Conv::new(in_ch, mid, 3).stride(bc.stride),
    )?;
    let y = conv_bn_relu(&mut b.scope("conv2"), &d1, Conv::new(mid, mid, 1))?;
    let d2 = conv_bn_relu(&mut b.scope("conv3"), &y, Conv::new(mid, half, 3))?;
    let y = conv_bn_relu(&mut b.scope("conv4"), &d2, Conv::new(half, mid, 1))?;
    let d3 = conv_bn_relu(&mut b.scope("conv5"), &y, Conv::new(mid, half, 3))?;
    if bc.is_first {
        let cat = concat(b, &[&d1, &d2, &d3], 1);
        let y = conv_bn_relu(
            &mut b.scope("conv6"),
            &cat,
            Conv::new(mid + 2 * half, out, 1),
        )?;
        return Ok((y.clone(), out, (y, out)));
    }
    let Some((s, skip_ch)) = skip else {
        return Err(Error::invalid_model(format!(
            "SelecSLS block `{}` needs the skip of an earlier block",
            b.path()
        )));
    };
    let cat = concat(b, &[&d1, &d2, &d3, s], 1);
    let c = Conv::new(mid + 2 * half + skip_ch, out, 1);
    let y = conv_bn_relu(&mut b.scope("conv6"), &cat, c)?;
    Ok((y, out, (s.clone(), *skip_ch)))
}
