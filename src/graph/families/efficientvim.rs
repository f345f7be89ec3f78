//! EfficientViM (timm's `efficientvim.py`): `efficientvim_m1` .. `_m4` and their `_dist` forms.
//!
//! A four-conv stride-16 stem, three stages of blocks (gated depthwise-conv residuals around the
//! HSM-SSD mixer — input-dependent `softmax(dt + A)·B` reducing the tokens to a small hidden
//! state, mixed by `hz_proj` / `out_proj`, read back with `C` — and an FFN), an MBConv
//! `PatchMerging` with SE between stages. The head pools each stage's normed hidden state and the
//! normed final map and sums four Linears under softmax weights (the `_dist` models average a
//! second such head). BatchNorms are folded into their convs at load; the gated residuals stay
//! as timm's unfused forward computes them.
//!
//! Widths and depths are read from the weights when there are weights.
//! Feature maps: every stage's output before its downsample (`stages.<i>`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::se::{rd_channels, SqueezeExcite};
use crate::graph::layers::{
    act, add, concat, conv2d, conv_bn, layer_norm, layer_norm_2d, mul, reduce_mean, reshape, split,
    transpose, Conv,
};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/efficientvim.json"));

pub const FAMILY: Family = Family {
    name: "efficientvim",
    examples: "efficientvim_m1..m4, efficientvim_m1..m4_dist",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `EfficientViM.__init__`'s keyword arguments with timm's defaults.
    struct EfficientVimArgs {
        in_chans: usize = 3,
        embed_dim: Vec<usize> = vec![128, 256, 512],
        depths: Vec<usize> = vec![2, 2, 2],
        mlp_ratio: f64 = 4.0,
        ssd_expand: f64 = 1.0,
        state_dim: Vec<usize> = vec![49, 25, 9],
        global_pool: String = "avg".into(),
    }
}

/// `nn.BatchNorm2d`'s eps; `LayerNorm` / `LayerNorm2d(eps=1e-5)` as timm builds them.
const BN_EPS: f32 = 1e-5;
const LN_EPS: f32 = 1e-5;
/// `PatchMerging`'s expansion ratio (fixed in timm).
const MERGE_RATIO: f64 = 4.0;
/// timm's `_init_weights`: Linear trunc_normal(0.02).
const INIT: Init = Init::TruncNormal(0.02);

/// `ConvLayer2d`: conv (`conv`, no bias) + folded BatchNorm (`norm`) + optional ReLU.
fn conv_layer(b: &mut Builder, x: &Value, c: Conv, relu: bool) -> Result<Value> {
    let y = conv_bn(b, x, "conv", "norm", c.init(Init::DefaultUniform), BN_EPS)?;
    if relu {
        act(b, "relu", &y)
    } else {
        Ok(y)
    }
}

/// `ConvLayer1d` / `ConvLayer2d` with neither norm nor act, a 1×1 conv on `[N, C, L]`: `W · x`.
fn conv1x1_tokens(b: &mut Builder, x: &Value, in_ch: usize, out_ch: usize) -> Result<Value> {
    let w = b.param("conv.weight", &[out_ch, in_ch, 1], Init::DefaultUniform)?;
    let w = reshape(b, &w, &[out_ch as i64, in_ch as i64]);
    Ok(b.op("MatMul", &[&w, x], vec![]))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an EfficientViM variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = EfficientVimArgs::read(&a)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_ch {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_ch} channels",
            v.in_chans
        )));
    }
    let n = v.depths.len();
    if n == 0 || n > 8 || v.embed_dim.len() != n || v.state_dim.len() != n {
        return Err(Error::invalid_model(format!(
            "EfficientViM depths {:?}, embed_dim {:?} and state_dim {:?}: one of each per stage",
            v.depths, v.embed_dim, v.state_dim
        )));
    }
    if v.global_pool != "avg" {
        return Err(a.unsupported(
            "global_pool",
            "EfficientViM's unpooled branch features (global_pool '') are not built natively",
        ));
    }
    let (mut dims, mut depths, mut states) =
        (v.embed_dim.clone(), v.depths.clone(), v.state_dim.clone());
    if b.weights().is_some() {
        for i in 0..n {
            let st = &mut b.scope(format!("stages.{i}.blocks"));
            depths[i] = (0..).take_while(|&j| st.has_module(&j.to_string())).count();
            if let Some(s) = st.weight_shape("0.norm.weight") {
                dims[i] = s[0];
            }
            if let Some(s) = st.weight_shape("0.mixer.A") {
                states[i] = s[0];
            }
        }
    }
    if dims.iter().any(|&d| d < 8) || states.contains(&0) || depths.contains(&0) {
        return Err(Error::invalid_model(format!(
            "EfficientViM embed_dim {dims:?} (at least 8), state_dim {states:?} and depths {depths:?} must be positive"
        )));
    }
    let distilled = match b.weights() {
        Some(_) => b.has_weight("weights_dist"),
        None => arch.ends_with("_dist"),
    };

    // Stem: four stride-2 ConvLayer2d, ReLU but on the last
    let input = b.input();
    let d0 = dims[0];
    let widths = [d0 / 8, d0 / 4, d0 / 2, d0];
    let mut x = input;
    let mut prev = in_ch;
    for (k, &w) in widths.iter().enumerate() {
        let mut out = w;
        if let Some(s) = b.weight_shape(&format!("patch_embed.conv.{k}.conv.weight")) {
            out = s[0];
        }
        let c = Conv::new(prev, out, 3).stride(2);
        x = conv_layer(&mut b.scope(format!("patch_embed.conv.{k}")), &x, c, k < 3)?;
        prev = out;
    }
    let mut pooled = Vec::with_capacity(n + 1);
    let mut reduction = 16;
    for i in 0..n {
        let dim = dims[i];
        let mut h = None;
        for j in 0..depths[i] {
            let s = &mut b.scope(format!("stages.{i}.blocks.{j}"));
            let (y, hs) = block(s, &x, dim, states[i], v.mlp_ratio, v.ssd_expand)?;
            x = y;
            h = Some(hs);
        }
        b.feature(&x, dim, reduction, &format!("stages.{i}"));
        // the stage's hidden state [N, C, S], normed over C, pooled over S
        let h = h.ok_or_else(|| Error::invalid_model("EfficientViM stage without blocks"))?;
        let t = transpose(b, &h, &[0, 2, 1]);
        let t = layer_norm(&mut b.scope(format!("norm.{i}")), &t, dim, LN_EPS)?;
        pooled.push((reduce_mean(b, &t, &[1], false), dim));
        if i + 1 < n {
            let s = &mut b.scope(format!("stages.{i}.downsample"));
            x = patch_merging(s, &x, dim, dims[i + 1])?;
            reduction *= 2;
        }
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, dims[n - 1]));
    }
    let last = dims[n - 1];
    let y = layer_norm_2d(&mut b.scope(format!("norm.{n}")), &x, last, LN_EPS)?;
    let y = b.op("GlobalAveragePool", &[&y], vec![]);
    pooled.push((reshape(b, &y, &[0, last as i64]), last));
    let width: usize = pooled.iter().map(|p| p.1).sum();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        let refs: Vec<&Value> = pooled.iter().map(|p| &p.0).collect();
        return Ok((concat(b, &refs, 1), width));
    }
    let z = fused_heads(b, "heads", "weights", &pooled, cfg.num_classes)?;
    if !distilled {
        return Ok((z, cfg.num_classes));
    }
    let zd = fused_heads(b, "heads_dist", "weights_dist", &pooled, cfg.num_classes)?;
    let s = add(b, &z, &zd);
    Ok((crate::graph::layers::scale(b, &s, 0.5), cfg.num_classes))
}

/// `sum_i softmax(weights)_i · heads.<i>(x_i)`.
fn fused_heads(
    b: &mut Builder,
    heads: &str,
    weights: &str,
    xs: &[(Value, usize)],
    classes: usize,
) -> Result<Value> {
    let w = b.param(weights, &[xs.len()], Init::Ones)?;
    let w = b.op("Softmax", &[&w], vec![("axis", Attr::Int(0))]);
    let mut sum: Option<Value> = None;
    for (i, (x, d)) in xs.iter().enumerate() {
        let y = linear_2d(
            &mut b.scope(format!("{heads}.{i}")),
            x,
            *d,
            classes,
            true,
            INIT,
        )?;
        let wi = crate::graph::layers::slice(b, &w, 0, i as i64, i as i64 + 1);
        let y = mul(b, &y, &wi);
        sum = Some(match sum {
            Some(s) => add(b, &s, &y),
            None => y,
        });
    }
    sum.ok_or_else(|| Error::invalid_model("EfficientViM head without inputs"))
}

/// `EfficientViMBlock`: each branch gated as `x + σ(alpha_k) · (f(x) - x)`; returns the output
/// and the mixer's hidden state.
fn block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    state: usize,
    mlp_ratio: f64,
    ssd_expand: f64,
) -> Result<(Value, Value)> {
    let alpha = b.param("alpha", &[4, dim], Init::Const(1e-4))?;
    let alpha = act(b, "sigmoid", &alpha)?;
    let alpha = reshape(b, &alpha, &[4, dim as i64, 1, 1]);
    let one = b.scalar(1.0);
    let keep = b.op("Sub", &[&one, &alpha], vec![]);
    let gates = split(b, &alpha, 0, &[1, 1, 1, 1]);
    let keeps = split(b, &keep, 0, &[1, 1, 1, 1]);
    // Written as (1 - a)·x + a·f(x): per-channel scales of both terms (folded from constants).
    // OpenVINO 2026.4's CPU plugin computes `x + a·(conv(x) - x)` wrongly at batch 1 with a
    // dynamic batch on 1x1 maps (the depthwise conv's fused post-ops).
    let gated = |b: &mut Builder, x: &Value, y: &Value, k: usize| {
        let kept = mul(b, x, &keeps[k]);
        let new = mul(b, y, &gates[k]);
        add(b, &kept, &new)
    };
    let dw = || Conv::new(dim, dim, 3).depthwise();
    let y = conv_layer(&mut b.scope("dwconv1"), x, dw(), false)?;
    let x = gated(b, x, &y, 0);
    let xn = layer_norm_2d(&mut b.scope("norm"), &x, dim, LN_EPS)?;
    let (y, h) = hsm_ssd(&mut b.scope("mixer"), &xn, dim, state, ssd_expand)?;
    let x = gated(b, &x, &y, 1);
    let y = conv_layer(&mut b.scope("dwconv2"), &x, dw(), false)?;
    let x = gated(b, &x, &y, 2);
    let mut hidden = (dim as f64 * mlp_ratio) as usize;
    if let Some(s) = b.weight_shape("ffn.fc1.conv.weight") {
        hidden = s[0];
    }
    let y = conv_layer(&mut b.scope("ffn.fc1"), &x, Conv::new(dim, hidden, 1), true)?;
    let y = conv_layer(
        &mut b.scope("ffn.fc2"),
        &y,
        Conv::new(hidden, dim, 1),
        false,
    )?;
    let x = gated(b, &x, &y, 3);
    Ok((x, h))
}

/// `HSMSSD`: returns `y` (`[N, C, H, W]`) and the hidden state `h` (`[N, C, S]`).
fn hsm_ssd(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    state: usize,
    ssd_expand: f64,
) -> Result<(Value, Value)> {
    let mut inner = (ssd_expand * dim as f64) as usize;
    if let Some(s) = b.weight_shape("out_proj.conv.weight") {
        inner = s[1];
    }
    let shape = b.op("Shape", &[x], vec![]);
    let tokens = reshape(b, x, &[0, dim as i64, -1]);
    let bcdt = conv1x1_tokens(&mut b.scope("BCdt_proj"), &tokens, dim, 3 * state)?;
    // back to the map for the depthwise conv, then tokens again
    let map_shape = {
        let nb = crate::graph::layers::slice(b, &shape, 0, 0, 1);
        let hw = crate::graph::layers::slice(b, &shape, 0, 2, 4);
        let c = b.const_i64(vec![3 * state as i64], &[1]);
        concat(b, &[&nb, &c, &hw], 0)
    };
    let m = b.op("Reshape", &[&bcdt, &map_shape], vec![]);
    let c3 = 3 * state;
    let m = conv2d(
        &mut b.scope("dw.conv"),
        &m,
        Conv::new(c3, c3, 3).depthwise().init(Init::DefaultUniform),
    )?;
    let bcdt = reshape(b, &m, &[0, c3 as i64, -1]);
    let parts = split(b, &bcdt, 1, &[state, state, state]);
    let (bb, cc, dt) = (&parts[0], &parts[1], &parts[2]);
    let a_param = b.param("A", &[state], Init::Const(8.5))?;
    let a_param = reshape(b, &a_param, &[1, state as i64, 1]);
    let logits = add(b, dt, &a_param);
    let a = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let ab = mul(b, &a, bb);
    let abt = transpose(b, &ab, &[0, 2, 1]);
    let h = b.op("MatMul", &[&tokens, &abt], vec![]);
    let hz = conv1x1_tokens(&mut b.scope("hz_proj"), &h, dim, 2 * inner)?;
    let hz = split(b, &hz, 1, &[inner, inner]);
    let (hh, z) = (&hz[0], &hz[1]);
    let gate = act(b, "silu", z)?;
    let d = b.param("D", &[1], Init::Ones)?;
    let u = mul(b, hh, &gate);
    let hd = mul(b, hh, &d);
    let u = add(b, &u, &hd);
    let h = conv1x1_tokens(&mut b.scope("out_proj"), &u, inner, dim)?;
    let y = b.op("MatMul", &[&h, cc], vec![]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&y, s);
    }
    Ok((y, h))
}

/// `PatchMerging`: `x + dwconv1(x)`, the MBConv (`conv.0` expand, `conv.1` strided depthwise,
/// `conv.2` SE, `conv.3` project), `+ dwconv2`.
fn patch_merging(b: &mut Builder, x: &Value, in_dim: usize, out_dim: usize) -> Result<Value> {
    let mut out = out_dim;
    if let Some(s) = b.weight_shape("conv.3.conv.weight") {
        out = s[0];
    }
    let mut hidden = (out as f64 * MERGE_RATIO) as usize;
    if let Some(s) = b.weight_shape("conv.0.conv.weight") {
        hidden = s[0];
    }
    let y = conv_layer(
        &mut b.scope("dwconv1"),
        x,
        Conv::new(in_dim, in_dim, 3).depthwise(),
        false,
    )?;
    let x = add(b, x, &y);
    let y = conv_layer(
        &mut b.scope("conv.0"),
        &x,
        Conv::new(in_dim, hidden, 1),
        true,
    )?;
    let dw = Conv::new(hidden, hidden, 3).depthwise().stride(2);
    let y = conv_layer(&mut b.scope("conv.1"), &y, dw, true)?;
    let mut rd = rd_channels(hidden, 0.25, 8);
    if let Some(s) = b.weight_shape("conv.2.fc1.weight") {
        rd = s[0];
    }
    let y = SqueezeExcite::se_module(hidden, rd).apply(&mut b.scope("conv.2"), &y)?;
    let y = conv_layer(&mut b.scope("conv.3"), &y, Conv::new(hidden, out, 1), false)?;
    let z = conv_layer(
        &mut b.scope("dwconv2"),
        &y,
        Conv::new(out, out, 3).depthwise(),
        false,
    )?;
    Ok(add(b, &y, &z))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 8);
        for arch in TABLE.names() {
            assert!(
                (FAMILY.matches)(arch),
                "{arch} is not matched by the family"
            );
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
