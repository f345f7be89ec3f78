//! LowFormer (timm `lowformer.py`): an EfficientViT-like convnet, (Fused)MBConv stem and early
//! stages, then `LowFormerBlock`s whose attention runs on a strided depthwise-conv projection of
//! the map and is brought back with a transposed conv.
//!
//! `ConvLayer` = conv + optional BatchNorm (folded at load) + optional activation. `ConvAttention`:
//! depthwise `conv_proj` (stride 2 in stage 3, 1 in stage 4) with its BatchNorm, a 1x1 `pwise` to
//! q | k | v per head, softmax attention over the small map, then either `o_proj` + a depthwise
//! `upsampling` ConvTranspose2d or (`fused_conv`) one dense ConvTranspose2d, cropped to the input
//! size. The head is `in_conv` (1x1 ConvLayer), the global pool, `pre_classifier` (Linear,
//! LayerNorm, activation) and `classifier`. Any input size.
//!
//! Feature maps: `stages.<i>` (timm's `feature_info`; an empty stage repeats its input).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{linear_2d, linear_nobias};
use crate::graph::layers::norm::group_norm;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{self, act, add, conv2d, conv_bn, py_round, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/lowformer.json"));

/// The `lowformer` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "lowformer",
    examples: "lowformer_b0 .. lowformer_b3, lowformer_e1 .. lowformer_e3",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// `nn.BatchNorm2d` / `nn.GroupNorm` eps.
const EPS: f32 = 1e-5;
/// `act_layer`: timm's default `nn.Hardswish` (the class is not a `model_args` value).
const ACT: &str = "hard_swish";

timm_args! {
    /// `LowFormer.__init__`'s keyword arguments with timm's defaults.
    pub struct LowFormerArgs {
        width_list: Vec<usize> = Vec::new(),
        depth_list: Vec<usize> = Vec::new(),
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        head_widths: Vec<usize> = vec![1536, 1600],
        expand_ratio: f64 = 4.0,
        fused_conv: bool = true,
        attn: bool = true,
        attn_mlp: bool = true,
        attn_mlp_ratio: usize = 4,
        stem_expand_ratio: f64 = 2.0,
        downsample_expand_ratios: Option<Vec<f64>> = None,
        expand_groups: usize = 1,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

struct Cfg {
    fused: bool,
    groups: usize,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a LowFormer architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = LowFormerArgs::read(&a)?;
    let (w, d) = (&v.width_list, &v.depth_list);
    let n = w.len().saturating_sub(1);
    let ds = v
        .downsample_expand_ratios
        .clone()
        .unwrap_or_else(|| vec![v.expand_ratio; n]);
    if n == 0
        || d.len() != w.len()
        || ds.len() != n
        || v.head_widths.len() != 2
        || v.expand_groups == 0
        || w.iter()
            .any(|&c| c == 0 || !c.is_multiple_of(v.expand_groups))
    {
        return Err(Error::invalid_model(format!(
            "LowFormer width_list {w:?}, depth_list {d:?}, downsample_expand_ratios {ds:?}, head_widths {:?}, expand_groups {}",
            v.head_widths, v.expand_groups
        )));
    }
    let pool = PoolKind::from_timm(&v.global_pool)?;
    if pool == PoolKind::None || pool.multiplier() != 1 {
        return Err(a.unsupported(
            "global_pool",
            "native graphs pool to one vector of the head's width ('' and concatenating pools are not built)",
        ));
    }
    let c = Cfg {
        fused: v.fused_conv,
        groups: v.expand_groups,
    };

    // Stem: a strided ConvLayer, then residual (Fused)MBConvs.
    let input = b.input();
    let c0 = Conv::new(v.in_chans, w[0], 3).stride(2).pad(Pad::Sym(1));
    let mut x = conv_layer(&mut b.scope("stem.0"), &input, c0, true, Some(ACT))?;
    let mut ch = w[0];
    for i in 0..d[0] {
        let y = mb_block(
            &mut b.scope(format!("stem.{}.main", i + 1)),
            &x,
            ch,
            ch,
            1,
            v.stem_expand_ratio,
            false,
            c.fused,
            &c,
        )?;
        x = add(b, &x, &y);
    }
    let mut reduction = 2;
    for si in 1..=n {
        let (width, depth) = (w[si], d[si]);
        let st = format!("stages.{}", si - 1);
        if si >= 3 {
            x = mb_block(
                &mut b.scope(format!("{st}.0.main")),
                &x,
                ch,
                width,
                2,
                ds[si - 1],
                false,
                c.fused,
                &c,
            )?;
            ch = width;
            for j in 0..depth {
                x = lowformer_block(
                    &mut b.scope(format!("{st}.{}", j + 1)),
                    &x,
                    ch,
                    &v,
                    si == 3,
                    &c,
                )?;
            }
            reduction *= 2;
        } else {
            for j in 0..depth {
                let stride = if j == 0 { 2 } else { 1 };
                let ratio = if stride == 2 {
                    ds[si - 1]
                } else {
                    v.expand_ratio
                };
                let y = mb_block(
                    &mut b.scope(format!("{st}.{j}.main")),
                    &x,
                    ch,
                    width,
                    stride,
                    ratio,
                    false,
                    c.fused,
                    &c,
                )?;
                x = if stride == 1 { add(b, &x, &y) } else { y };
                ch = width;
            }
            if depth > 0 {
                reduction *= 2;
            }
        }
        b.scope(&st).feature(&x, ch, reduction, &st);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, ch));
    }
    let (h0, h1) = (v.head_widths[0], v.head_widths[1]);
    let y = conv_layer(
        &mut b.scope("in_conv"),
        &x,
        Conv::new(ch, h0, 1),
        true,
        Some(ACT),
    )?;
    let y = global_pool(b, &y, pool);
    let y = layers::flatten(b, &y, 1);
    let y = linear_nobias(
        &mut b.scope("pre_classifier.0"),
        &y,
        h0,
        h1,
        Init::TruncNormal(0.02),
    )?;
    let y = Norm::Layer { eps: 1e-5 }.apply_last(&mut b.scope("pre_classifier.1"), &y, h1)?;
    let y = act(b, ACT, &y)?;
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((y, h1));
    }
    let y = linear_2d(
        &mut b.scope("classifier"),
        &y,
        h1,
        cfg.num_classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, cfg.num_classes))
}

/// `ConvLayer`: `conv` (padding k // 2), `norm` (BatchNorm, folded) if any, activation if any.
fn conv_layer(b: &mut Builder, x: &Value, c: Conv, norm: bool, a: Option<&str>) -> Result<Value> {
    let y = if norm {
        conv_bn(b, x, "conv", "norm", c, EPS)?
    } else {
        conv2d(&mut b.scope("conv"), x, c)?
    };
    match a {
        Some(a) => act(b, a, &y),
        None => Ok(y),
    }
}

/// A `k`×`k` conv with `ConvLayer`'s padding.
fn conv(in_ch: usize, out: usize, k: usize, stride: usize, groups: usize, bias: bool) -> Conv {
    Conv::new(in_ch, out, k)
        .stride(stride)
        .pad(Pad::Sym(k / 2))
        .groups(groups)
        .bias(bias)
}

/// `FusedMBConv` (`fused`) or `MBConv` from `in_ch` to `out` (mid = `round(in · ratio)`).
#[allow(clippy::too_many_arguments)]
fn mb_block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out: usize,
    stride: usize,
    ratio: f64,
    bias: bool,
    fused: bool,
    c: &Cfg,
) -> Result<Value> {
    let mid = py_round(in_ch as f64 * ratio) as usize;
    let g = c.groups;
    if mid == 0 || !mid.is_multiple_of(g) {
        return Err(Error::invalid_model(format!(
            "LowFormer MBConv {in_ch} -> {mid} channels with expand_groups {g}"
        )));
    }
    if fused {
        let sc = conv(in_ch, mid, 3, stride, g, bias);
        let y = conv_layer(&mut b.scope("spatial_conv"), x, sc, true, Some(ACT))?;
        let pc = conv(mid, out, 1, 1, 1, false);
        conv_layer(&mut b.scope("point_conv"), &y, pc, true, None)
    } else {
        let ic = conv(in_ch, mid, 1, 1, g, bias);
        let y = conv_layer(&mut b.scope("inverted_conv"), x, ic, false, Some(ACT))?;
        let dc = conv(mid, mid, 3, stride, mid, bias);
        let y = conv_layer(&mut b.scope("depth_conv"), &y, dc, false, Some(ACT))?;
        let pc = conv(mid, out, 1, 1, g, false);
        conv_layer(&mut b.scope("point_conv"), &y, pc, true, None)
    }
}

/// `LowFormerBlock`: residual attention (after a GroupNorm1 with the MLP), residual MLP, residual
/// local (Fused)MBConv.
fn lowformer_block(
    b: &mut Builder,
    x: &Value,
    ch: usize,
    v: &LowFormerArgs,
    strided: bool,
    c: &Cfg,
) -> Result<Value> {
    let mut x = x.clone();
    if v.attn {
        let y = if v.attn_mlp {
            let t = group_norm(&mut b.scope("attn.main.0"), &x, 1, ch, EPS)?;
            conv_attention(&mut b.scope("attn.main.1"), &t, &x, ch, strided, c.fused)?
        } else {
            conv_attention(&mut b.scope("attn.main"), &x, &x, ch, strided, c.fused)?
        };
        x = add(b, &x, &y);
    }
    if v.attn_mlp {
        let hid = ch * v.attn_mlp_ratio;
        let t = group_norm(&mut b.scope("mlp.main.0"), &x, 1, ch, EPS)?;
        let t = conv2d(
            &mut b.scope("mlp.main.1"),
            &t,
            Conv::new(ch, hid, 1).bias(true),
        )?;
        let t = act(b, "gelu", &t)?;
        let t = conv2d(
            &mut b.scope("mlp.main.3"),
            &t,
            Conv::new(hid, ch, 1).bias(true),
        )?;
        x = add(b, &x, &t);
    }
    // FusedMBConv only below 256 channels.
    let fused = c.fused && ch < 256;
    let y = mb_block(
        &mut b.scope("local.main"),
        &x,
        ch,
        ch,
        1,
        v.expand_ratio,
        true,
        fused,
        c,
    )?;
    Ok(add(b, &x, &y))
}

/// `ConvAttention` on `x` (NCHW); the result is cropped to the size of `like`.
fn conv_attention(
    b: &mut Builder,
    x: &Value,
    like: &Value,
    dim: usize,
    strided: bool,
    fused: bool,
) -> Result<Value> {
    let heads = ((dim as f64 * 0.5 / 30.0).floor() as usize).max(1);
    let hd = ((dim / heads) as f64 * 0.5) as usize;
    let inner = hd * heads;
    if hd == 0 {
        return Err(Error::invalid_model(format!(
            "LowFormer attention over {dim} channels has an empty head"
        )));
    }
    let (stride, k) = if strided { (2, 5) } else { (1, 3) };
    let cp = conv(dim, dim, k, stride, dim, false);
    let t = conv_layer(&mut b.scope("conv_proj"), x, cp, true, None)?;
    let t = conv2d(&mut b.scope("pwise"), &t, Conv::new(dim, 3 * inner, 1))?;
    // [N, heads, 3·hd, hw] -> [N, heads, hw, 3·hd], q | k | v along the last axis.
    let (h_i, hd_i) = (heads as i64, hd as i64);
    let qkv = layers::reshape(b, &t, &[0, h_i, 3 * hd_i, -1]);
    let qkv = layers::transpose(b, &qkv, &[0, 1, 3, 2]);
    let p = layers::split(b, &qkv, -1, &[hd; 3]);
    let q = layers::scale(b, &p[0], (hd as f32).powf(-0.5));
    let kt = layers::transpose(b, &p[1], &[0, 1, 3, 2]);
    let logits = b.op("MatMul", &[&q, &kt], vec![]);
    let att = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&att, &p[2]], vec![]);
    // [N, heads, hw, hd] -> [N, heads·hd, h, w], the small map's shape.
    let y = layers::transpose(b, &y, &[0, 1, 3, 2]);
    let hw = b.op(
        "Shape",
        &[&t],
        vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
    );
    let lead = b.const_i64(vec![0, inner as i64], &[2]);
    let shape = layers::concat(b, &[&lead, &hw], 0);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let (y, up_in, groups) = if fused {
        (y, inner, 1)
    } else {
        let o = conv2d(
            &mut b.scope("o_proj"),
            &y,
            Conv::new(inner, dim, 1).bias(true),
        )?;
        (o, dim, dim)
    };
    let (uk, us, up) = if strided { (4, 2, 1) } else { (3, 1, 1) };
    let u = &mut b.scope("upsampling");
    let wt = u.param(
        "weight",
        &[up_in, dim / groups, uk, uk],
        Init::KaimingFanOut,
    )?;
    let bias = u.param("bias", &[dim], Init::Zeros)?;
    let y = u.op(
        "ConvTranspose",
        &[&y, &wt, &bias],
        vec![
            ("kernel_shape", Attr::Ints(vec![uk as i64, uk as i64])),
            ("strides", Attr::Ints(vec![us as i64, us as i64])),
            ("pads", Attr::Ints(vec![up as i64; 4])),
            ("group", Attr::Int(groups as i64)),
        ],
    );
    // o[..., :H, :W]
    let end = u.op(
        "Shape",
        &[like],
        vec![("start", Attr::Int(2)), ("end", Attr::Int(4))],
    );
    let start = u.const_i64(vec![0, 0], &[2]);
    let axes = u.const_i64(vec![2, 3], &[2]);
    let y = u.op("Slice", &[&y, &start, &end, &axes], vec![]);
    if let Some(s) = u.spatial(like).cloned() {
        u.assign_spatial(&y, s);
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_architecture_builds_its_shapes() {
        // The dry run (shapes only) of every table entry: its pre-logits width is the head's
        // `head_widths[1]` (timm's head_hidden_size).
        for name in TABLE.names() {
            let e = TABLE.get(name).unwrap();
            let cfg = ModelConfig::parse(e.config.to_string().as_bytes()).unwrap();
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            let g = crate::graph::build_shapes(
                &cfg,
                crate::graph::ParamSource::Shapes,
                &crate::graph::Request {
                    output: OutputKind::Features,
                    ..Default::default()
                },
                (h, w),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let hidden = e
                .args
                .get("head_widths")
                .map_or(1600, |v| v[1].as_u64().unwrap());
            let dim = match g.outputs[0].shape {
                crate::graph::OutputShape::Vector(d) => d,
                _ => 0,
            };
            assert_eq!(dim as u64, hidden, "{name}");
        }
    }
}
