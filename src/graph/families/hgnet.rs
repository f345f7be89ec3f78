//! PP-HGNet (timm's `hgnet.py`): `hgnet_tiny/small/base` (V1 stem, ESE aggregation) and
//! `hgnetv2_b0`..`b6` (V2 stem with its zero-padded 2x2 convs and pool, SE-style two-conv
//! aggregation, light depthwise blocks, learnable affine blocks after every activation for
//! `use_lab`).
//!
//! timm's entrypoints pass a `model_cfg` dict (the generated table) that config.json cannot
//! override; with weights, every stage's widths, depth, layer count, kernel, block kind and
//! downsample are read from them (checkpoints of shrunk cfgs build too), the table's otherwise.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::{act, add, concat, conv2d, conv_bn, flatten, reshape, Conv, Pad};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/hgnet.json"));

pub const FAMILY: Family = Family {
    name: "hgnet",
    examples: "hgnet_tiny, hgnet_small, hgnet_base, hgnetv2_b0..hgnetv2_b6",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `HighPerfGpuNet.__init__`'s arguments that shape the inference graph.
    struct HgArgs {
        model_cfg: Json = Json::Null,
        in_chans: usize = 3,
        global_pool: Option<String> = None,
        head_hidden_size: Option<usize> = Some(2048),
        use_lab: bool = false,
    }
}

const EPS: f32 = 1e-5;

/// One `HighPerfGpuStage`: `[in, mid, out, block_num, downsample, light_block, kernel, layer_num]`.
#[derive(Debug, Clone, PartialEq)]
struct Stage {
    in_ch: usize,
    mid: usize,
    out: usize,
    blocks: usize,
    downsample: bool,
    light: bool,
    k: usize,
    layers: usize,
}

#[derive(Debug)]
struct Net {
    v2: bool,
    stem_chs: Vec<usize>,
    stages: Vec<Stage>,
    lab: bool,
    head_hidden: Option<usize>,
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = resolve(b, cfg)?;
    let input = b.input();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let mut x = if net.v2 {
        stem_v2(&mut b.scope("stem"), &input, in_ch, &net)?
    } else {
        stem_v1(&mut b.scope("stem"), &input, in_ch, &net)?
    };
    let mut stride = 4;
    let mut prev = *net.stem_chs.last().unwrap_or(&in_ch);
    {
        let st = &mut b.scope("stages");
        for (i, s) in net.stages.iter().enumerate() {
            if s.in_ch != prev {
                return Err(Error::invalid_model(format!(
                    "HGNet stage {i} takes {} channels but gets {prev}",
                    s.in_ch
                )));
            }
            let sc = &mut st.scope(i);
            x = stage(sc, &x, s, &net)?;
            if s.downsample {
                stride *= 2;
            }
            sc.feature(&x, s.out, stride, &format!("stages.{i}"));
            prev = s.out;
        }
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    head(&mut b.scope("head"), &x, prev, cfg.num_classes, &net)
}

/// `LearnableAffineBlock`: `scale * x + bias` (one value each) in scope `name`.
fn lab(b: &mut Builder, x: &Value, name: &str) -> Result<Value> {
    let s = &mut b.scope(name);
    let scale = s.param("scale", &[1], Init::Ones)?;
    let bias = s.param("bias", &[1], Init::Zeros)?;
    let y = s.op("Mul", &[x, &scale], vec![]);
    Ok(s.op("Add", &[&y, &bias], vec![]))
}

/// timm's hgnet `ConvBNAct`: conv (`get_padding` symmetric), BatchNorm (folded), ReLU and, with
/// `use_lab`, the affine block — both only when `use_act`.
fn conv_bn_act(b: &mut Builder, x: &Value, c: Conv, use_act: bool, net: &Net) -> Result<Value> {
    let y = conv_bn(b, x, "conv", "bn", c, EPS)?;
    if !use_act {
        return Ok(y);
    }
    let y = act(b, "relu", &y)?;
    if net.lab {
        lab(b, &y, "lab")
    } else {
        Ok(y)
    }
}

/// `StemV1`: 3x3 `ConvBNAct`s (the first strided), then a 3x3 / 2 max pool.
fn stem_v1(b: &mut Builder, x: &Value, in_ch: usize, net: &Net) -> Result<Value> {
    let mut y = x.clone();
    let mut prev = in_ch;
    {
        let s = &mut b.scope("stem");
        for (i, &c) in net.stem_chs.iter().enumerate() {
            let conv = Conv::new(prev, c, 3).stride(if i == 0 { 2 } else { 1 });
            y = conv_bn_act(&mut s.scope(i), &y, conv, true, net)?;
            prev = c;
        }
    }
    Pool2d::new(3, 2, 1).max(b, &y, prev)
}

/// `F.pad(x, (0, 1, 0, 1))`: one zero row and column at the end.
fn pad_end(b: &mut Builder, x: &Value, ch: usize) -> Result<Value> {
    let pads = b.ints(&[0, 0, 0, 0, 0, 0, 1, 1]);
    let y = b.op(
        "Pad",
        &[x, &pads],
        vec![("mode", Attr::Str("constant".into()))],
    );
    let step = Step::Window {
        k: 1,
        stride: 1,
        pad: 1,
        dilation: 1,
        ceil: false,
    };
    b.set_spatial(&y, x, step, ch)?;
    Ok(y)
}

/// `StemV2`: stem1 (3x3 / 2); a branch of two zero-padded 2x2 convs beside a 2x2 max pool of
/// the padded map; concatenated; stem3 (3x3 / 2), stem4 (1x1).
fn stem_v2(b: &mut Builder, x: &Value, in_ch: usize, net: &Net) -> Result<Value> {
    let (mid, out) = (net.stem_chs[0], net.stem_chs[1]);
    let y = conv_bn_act(
        &mut b.scope("stem1"),
        x,
        Conv::new(in_ch, mid, 3).stride(2),
        true,
        net,
    )?;
    let y = pad_end(b, &y, mid)?;
    let c = Conv::new(mid, mid / 2, 2).pad(Pad::Sym(0));
    let x2 = conv_bn_act(&mut b.scope("stem2a"), &y, c, true, net)?;
    let x2 = pad_end(b, &x2, mid / 2)?;
    let c = Conv::new(mid / 2, mid, 2).pad(Pad::Sym(0));
    let x2 = conv_bn_act(&mut b.scope("stem2b"), &x2, c, true, net)?;
    let x1 = Pool2d::new(2, 1, 0).ceil(true).max(b, &y, mid)?;
    let cat = concat(b, &[&x1, &x2], 1);
    let c = Conv::new(2 * mid, mid, 3).stride(2);
    let y = conv_bn_act(&mut b.scope("stem3"), &cat, c, true, net)?;
    conv_bn_act(&mut b.scope("stem4"), &y, Conv::new(mid, out, 1), true, net)
}

/// `HighPerfGpuStage`: optional depthwise 3x3 / 2 downsample (no activation), then the blocks.
fn stage(b: &mut Builder, x: &Value, s: &Stage, net: &Net) -> Result<Value> {
    let mut y = x.clone();
    if s.downsample {
        let c = Conv::new(s.in_ch, s.in_ch, 3).stride(2).groups(s.in_ch);
        y = conv_bn_act(&mut b.scope("downsample"), &y, c, false, net)?;
    }
    let bl = &mut b.scope("blocks");
    for j in 0..s.blocks {
        let in_ch = if j == 0 { s.in_ch } else { s.out };
        y = block(&mut bl.scope(j), &y, in_ch, s, j > 0, net)?;
    }
    Ok(y)
}

/// `HighPerfGpuBlock`: a chain of `ConvBNAct` / `LightConvBNAct` layers, every output (and the
/// input) concatenated, aggregated (V1: 1x1 conv + ESE; V2: two 1x1 convs), plus the input
/// after the first block.
fn block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    s: &Stage,
    residual: bool,
    net: &Net,
) -> Result<Value> {
    let mut outs = vec![x.clone()];
    let mut y = x.clone();
    {
        let ls = &mut b.scope("layers");
        for i in 0..s.layers {
            let cin = if i == 0 { in_ch } else { s.mid };
            let l = &mut ls.scope(i);
            y = if s.light {
                let t = conv_bn_act(
                    &mut l.scope("conv1"),
                    &y,
                    Conv::new(cin, s.mid, 1),
                    false,
                    net,
                )?;
                let dw = Conv::new(s.mid, s.mid, s.k).groups(s.mid);
                conv_bn_act(&mut l.scope("conv2"), &t, dw, true, net)?
            } else {
                conv_bn_act(l, &y, Conv::new(cin, s.mid, s.k), true, net)?
            };
            outs.push(y.clone());
        }
    }
    let refs: Vec<&Value> = outs.iter().collect();
    let cat = concat(b, &refs, 1);
    if let Some(sp) = b.spatial(x).cloned() {
        b.assign_spatial(&cat, sp);
    }
    let total = in_ch + s.layers * s.mid;
    let y = aggregate(&mut b.scope("aggregation"), &cat, total, s.out, net)?;
    Ok(if residual { add(b, &y, x) } else { y })
}

/// The block's aggregation: V2 two 1x1 `ConvBNAct`s (squeeze to out / 2, excite), V1 one 1x1
/// `ConvBNAct` and the `EseModule`.
fn aggregate(agg: &mut Builder, cat: &Value, total: usize, out: usize, net: &Net) -> Result<Value> {
    let s = Stage {
        in_ch: total,
        mid: 0,
        out,
        blocks: 0,
        downsample: false,
        light: false,
        k: 1,
        layers: 0,
    };
    let cat = cat.clone();
    let y = if net.v2 {
        let t = conv_bn_act(
            &mut agg.scope(0),
            &cat,
            Conv::new(total, s.out / 2, 1),
            true,
            net,
        )?;
        conv_bn_act(
            &mut agg.scope(1),
            &t,
            Conv::new(s.out / 2, s.out, 1),
            true,
            net,
        )?
    } else {
        let t = conv_bn_act(
            &mut agg.scope(0),
            &cat,
            Conv::new(total, s.out, 1),
            true,
            net,
        )?;
        // EseModule: mean, 1x1 conv (bias), sigmoid gate.
        let p = agg.op("GlobalAveragePool", &[&t], vec![]);
        let c = Conv::new(s.out, s.out, 1).bias(true);
        let g = conv2d(&mut agg.scope(1).scope("conv"), &p, c)?;
        let g = act(agg, "sigmoid", &g)?;
        agg.op("Mul", &[&t, &g], vec![])
    };
    Ok(y)
}

/// hgnet's `ClassifierHead`: pool, `last_conv` (1x1, no bias, ReLU, affine block) when
/// `head_hidden_size`, flatten, `fc`.
fn head(
    b: &mut Builder,
    x: &Value,
    ch: usize,
    classes: usize,
    net: &Net,
) -> Result<(Value, usize)> {
    let p = global_pool(b, x, net.pool);
    let (y, width) = match net.head_hidden {
        Some(h) => {
            let p = reshape(b, &p, &[0, -1, 1, 1]);
            let c = Conv::new(ch, h, 1).pad(Pad::Sym(0));
            let y = conv2d(&mut b.scope("last_conv").scope(0), &p, c)?;
            let y = act(b, "relu", &y)?;
            let y = if net.lab {
                lab(&mut b.scope("last_conv"), &y, "2")?
            } else {
                y
            };
            (flatten(b, &y, 1), h)
        }
        None => (p, ch),
    };
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((y, width));
    }
    let logits = linear_2d(
        &mut b.scope("fc"),
        &y,
        width,
        classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, classes))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Net> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an HGNet variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = HgArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let pool_name = v
        .global_pool
        .as_deref()
        .or(cfg.global_pool.as_deref())
        .unwrap_or("avg");
    let pool = PoolKind::from_timm(pool_name)?;
    if pool == PoolKind::None || pool.multiplier() != 1 {
        return Err(a.unsupported(
            "global_pool",
            "HGNet's head needs a pooled map of num_features channels",
        ));
    }
    let mut net = from_cfg(&a, &v.model_cfg)?;
    net.lab = v.use_lab;
    net.head_hidden = v.head_hidden_size;
    net.pool = pool;
    if b.weights().is_some() {
        from_weights(b, &mut net)?;
    }
    let bad = net.stem_chs.len() < if net.v2 { 2 } else { 1 }
        || net.stem_chs.contains(&0)
        || net
            .stages
            .iter()
            .any(|s| s.blocks == 0 || s.layers == 0 || s.mid == 0 || s.out < 2 || s.k == 0);
    if bad || net.stages.is_empty() {
        return Err(Error::invalid_model(format!(
            "`{arch}`: HGNet stem {:?} / stages {:?} do not describe a network",
            net.stem_chs, net.stages
        )));
    }
    Ok(net)
}

/// The entrypoint's `model_cfg`.
fn from_cfg(a: &Args, j: &Json) -> Result<Net> {
    let bad = || a.unsupported("model_cfg", "expected timm's HGNet cfg dict");
    let m = j.as_object().ok_or_else(bad)?;
    let v2 = match m.get("stem_type").and_then(Json::as_str) {
        Some("v1") => false,
        Some("v2") => true,
        _ => return Err(bad()),
    };
    let uint = |x: &Json| {
        x.as_u64()
            .filter(|&n| n <= crate::graph::args::MAX_INT)
            .map(|n| n as usize)
            .ok_or_else(bad)
    };
    let stem_chs = m
        .get("stem_chs")
        .and_then(Json::as_array)
        .ok_or_else(bad)?
        .iter()
        .map(uint)
        .collect::<Result<Vec<_>>>()?;
    let mut stages = Vec::with_capacity(4);
    for i in 1..=4 {
        let s = m
            .get(&format!("stage{i}"))
            .and_then(Json::as_array)
            .filter(|s| s.len() == 8)
            .ok_or_else(bad)?;
        let flag = |x: &Json| x.as_bool().ok_or_else(bad);
        stages.push(Stage {
            in_ch: uint(&s[0])?,
            mid: uint(&s[1])?,
            out: uint(&s[2])?,
            blocks: uint(&s[3])?,
            downsample: flag(&s[4])?,
            light: flag(&s[5])?,
            k: uint(&s[6])?,
            layers: uint(&s[7])?,
        });
    }
    Ok(Net {
        v2,
        stem_chs,
        stages,
        lab: false,
        head_hidden: None,
        pool: PoolKind::Avg,
    })
}

/// The structure from the weights: stem widths, and per stage its widths, block and layer
/// counts, kernel, block kind and downsample; the head's hidden width and the affine blocks.
fn from_weights(b: &mut Builder, net: &mut Net) -> Result<()> {
    let dim = |b: &Builder, name: &str, i: usize| -> Result<usize> {
        b.weight_shape(name)
            .filter(|s| s.len() > i)
            .map(|s| s[i])
            .ok_or_else(|| Error::invalid_model(format!("HGNet weights lack `{}`", b.key(name))))
    };
    net.v2 = b.has_module("stem.stem1");
    if net.v2 {
        net.stem_chs = vec![
            dim(b, "stem.stem1.conv.weight", 0)?,
            dim(b, "stem.stem4.conv.weight", 0)?,
        ];
        net.lab = b.has_weight("stem.stem1.lab.scale");
    } else {
        let mut outer = b.scope("stem");
        let s = &mut outer.scope("stem");
        let n = (0..)
            .take_while(|&i| s.has_weight(&format!("{i}.conv.weight")))
            .count();
        net.stem_chs = (0..n)
            .map(|i| dim(s, &format!("{i}.conv.weight"), 0))
            .collect::<Result<_>>()?;
        net.lab = s.has_weight("0.lab.scale");
    }
    net.head_hidden = b.weight_shape("head.last_conv.0.weight").map(|s| s[0]);
    let st = &mut b.scope("stages");
    let n = (0..).take_while(|&i| st.has_module(&i.to_string())).count();
    let mut stages = Vec::with_capacity(n);
    for i in 0..n {
        let s = &mut st.scope(i);
        let blocks = (0..)
            .take_while(|&j| s.has_module(&format!("blocks.{j}")))
            .count();
        let l0 = "blocks.0.layers.0";
        let layers = (0..)
            .take_while(|&k| s.has_module(&format!("blocks.0.layers.{k}")))
            .count();
        let light = s.has_module(&format!("{l0}.conv1"));
        let (in_ch, mid, k) = if light {
            (
                dim(s, &format!("{l0}.conv1.conv.weight"), 1)?,
                dim(s, &format!("{l0}.conv1.conv.weight"), 0)?,
                dim(s, &format!("{l0}.conv2.conv.weight"), 2)?,
            )
        } else {
            (
                dim(s, &format!("{l0}.conv.weight"), 1)?,
                dim(s, &format!("{l0}.conv.weight"), 0)?,
                dim(s, &format!("{l0}.conv.weight"), 2)?,
            )
        };
        let last = if net.v2 { 1 } else { 0 };
        let out = dim(s, &format!("blocks.0.aggregation.{last}.conv.weight"), 0)?;
        stages.push(Stage {
            in_ch,
            mid,
            out,
            blocks,
            downsample: s.has_module("downsample"),
            light,
            k,
            layers,
        });
    }
    net.stages = stages;
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
            let a = Args::new(
                arch,
                Some(&TABLE.get(arch).unwrap().args),
                &Default::default(),
            );
            let v = HgArgs::read(&a).unwrap();
            let net = from_cfg(&a, &v.model_cfg).unwrap();
            assert_eq!(net.v2, arch.starts_with("hgnetv2"), "{arch}");
            assert_eq!(net.stages.len(), 4, "{arch}");
        }
    }
}
