//! Classifier heads: timm's `ClassifierHead`, `NormMlpClassifierHead` and the MAP head
//! `AttentionPoolLatent` of SigLIP models.

use super::attention::{attention_core, AttnCfg, Hooks};
use super::mlp::{linear, linear_2d, mlp, MlpCfg};
use super::pool::{global_pool, PoolKind};
use super::{act, Norm};
use crate::error::Result;
use crate::graph::{Builder, Init, Value};

/// The classifier `fc` (`[N, in]` → `[N, classes]`) in the current scope.
pub fn fc(b: &mut Builder, x: &Value, in_f: usize, classes: usize, init: Init) -> Result<Value> {
    linear_2d(&mut b.scope("fc"), x, in_f, classes, true, init)
}

/// timm's `ClassifierHead`: global pool, then `fc` unless `features` (pre-logits) or no classes.
/// Returns the output and its width.
pub fn classifier_head(
    b: &mut Builder,
    x: &Value,
    channels: usize,
    pool: PoolKind,
    classes: usize,
    features: bool,
) -> Result<(Value, usize)> {
    let pooled = global_pool(b, x, pool);
    let width = channels * pool.multiplier();
    if features || classes == 0 {
        return Ok((pooled, width));
    }
    Ok((
        fc(b, &pooled, width, classes, Init::DefaultUniform)?,
        classes,
    ))
}

/// timm's `NormMlpClassifierHead`: pool, `norm` (a 2-D norm on the pooled map), flatten,
/// optional `pre_logits.fc` + act (tanh by default), `fc`.
#[allow(clippy::too_many_arguments)]
pub fn norm_mlp_head(
    b: &mut Builder,
    x: &Value,
    channels: usize,
    pool: PoolKind,
    norm: &Norm,
    hidden: Option<usize>,
    hidden_act: &str,
    classes: usize,
    features: bool,
) -> Result<(Value, usize)> {
    let p = if pool == PoolKind::None {
        x.clone()
    } else {
        let flat = global_pool(b, x, pool);
        super::reshape(b, &flat, &[0, -1, 1, 1])
    };
    let c = channels * pool.multiplier();
    let y = norm.apply_2d(&mut b.scope("norm"), &p, c)?;
    let mut y = super::flatten(b, &y, 1);
    let mut width = c;
    if let Some(h) = hidden {
        let s = &mut b.scope("pre_logits");
        y = linear_2d(&mut s.scope("fc"), &y, c, h, true, Init::TruncNormal(0.02))?;
        y = act(s, hidden_act, &y)?;
        width = h;
    }
    if features || classes == 0 {
        return Ok((y, width));
    }
    Ok((fc(b, &y, width, classes, Init::TruncNormal(0.02))?, classes))
}

/// timm's `AttentionPoolLatent` (the `attn_pool` MAP head) over `[N, L, dim]`: a learned
/// latent query attends to the tokens, then `x + mlp(norm(x))`; returns `[N, dim]` (token 0).
#[allow(clippy::too_many_arguments)]
pub fn attention_pool_latent(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    heads: usize,
    mlp_hidden: usize,
    norm: &Norm,
    act_name: &str,
    qkv_bias: bool,
) -> Result<Value> {
    let latent = b.param("latent", &[1, 1, dim], Init::TruncNormal(0.02))?;
    // Expand the latent over the batch.
    let n = b.op(
        "Shape",
        &[x],
        vec![
            ("start", crate::graph::Attr::Int(0)),
            ("end", crate::graph::Attr::Int(1)),
        ],
    );
    let rest = b.ints(&[1, dim as i64]);
    let shape = super::concat(b, &[&n, &rest], 0);
    let latent = b.op("Expand", &[&latent, &shape], vec![]);
    let q = linear(
        &mut b.scope("q"),
        &latent,
        dim,
        dim,
        qkv_bias,
        Init::TruncNormal(0.02),
    )?;
    let kv = linear(
        &mut b.scope("kv"),
        x,
        dim,
        2 * dim,
        qkv_bias,
        Init::TruncNormal(0.02),
    )?;
    let parts = super::split(b, &kv, -1, &[dim, dim]);
    let c = AttnCfg::new(dim, heads);
    let y = attention_core(b, &q, &parts[0], &parts[1], &c, &Hooks::default())?;
    let y = linear(
        &mut b.scope("proj"),
        &y,
        dim,
        dim,
        true,
        Init::TruncNormal(0.02),
    )?;
    let h = norm.apply_last(&mut b.scope("norm"), &y, dim)?;
    let h = mlp(
        &mut b.scope("mlp"),
        &h,
        &MlpCfg::new(dim, mlp_hidden, act_name),
    )?;
    let y = super::add(b, &y, &h);
    Ok(super::token_at(b, &y, 0))
}

/// timm's `AttentionPoolPrr` (`global_pool='prr'`, patch representation refinement): a
/// parameter-free self-attention of the tokens with themselves as q, k and v, then the first
/// token (`token`) or the mean of all tokens (`avg`, when `!token`); returns `[N, dim]`.
pub fn attention_pool_prr(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    heads: usize,
    token: bool,
) -> Result<Value> {
    let c = AttnCfg::new(dim, heads);
    let y = attention_core(b, x, x, x, &c, &Hooks::default())?;
    Ok(if token {
        super::token_at(b, &y, 0)
    } else {
        super::reduce_mean(b, &y, &[1], false)
    })
}

/// timm's `NormLinear` (LeViT, EfficientViT-MSRA heads: `bn` = `BatchNorm1d` over the input, then
/// `linear`) folded at load into one `[classes, dim]` weight and bias (in f64): `W·diag(s)` and
/// `W·t + b` for the BatchNorm's `x·s + t`.
pub fn norm_linear_folded(
    b: &mut Builder,
    dim: usize,
    classes: usize,
    eps: f32,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let bn = crate::graph::transforms::BnStats::read(&mut b.scope("bn"), dim, eps)?;
    let (s, t) = bn.affine();
    let l = &mut b.scope("linear");
    let w = l.read("weight", &[classes, dim], Init::TruncNormal(0.02))?;
    let bias = l.read("bias", &[classes], Init::Zeros)?;
    let mut fw = Vec::with_capacity(w.len());
    let mut fb = Vec::with_capacity(classes);
    for o in 0..classes {
        let row = &w[o * dim..(o + 1) * dim];
        fw.extend(row.iter().zip(&s).map(|(&w, &s)| w as f64 * s));
        let shift: f64 = row.iter().zip(&t).map(|(&w, &t)| w as f64 * t).sum();
        fb.push(bias[o] as f64 + shift);
    }
    Ok((fw, fb))
}

/// [`norm_linear_folded`] applied to `[N, dim]` as one Gemm.
pub fn norm_linear(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    classes: usize,
    eps: f32,
) -> Result<Value> {
    let (w, bias) = norm_linear_folded(b, dim, classes, eps)?;
    folded_gemm(b, x, &w, &bias)
}

/// `x @ w.T + bias` for a load-time `[out, in]` weight in f64 (`weight` / `bias` in scope).
pub fn folded_gemm(b: &mut Builder, x: &Value, w: &[f64], bias: &[f64]) -> Result<Value> {
    let out = bias.len();
    let dim = w.len() / out.max(1);
    let wv = b.tensor("weight", w.iter().map(|&v| v as f32).collect(), &[out, dim])?;
    let bv = b.tensor("bias", bias.iter().map(|&v| v as f32).collect(), &[out])?;
    Ok(b.op(
        "Gemm",
        &[x, &wv, &bv],
        vec![("transB", crate::graph::Attr::Int(1))],
    ))
}

/// timm's `RepVitClassifier` (RepViT, iFormer) on pooled `[N, dim]`: `head` = `NormLinear`
/// (`bn`: BatchNorm1d, `l`: Linear), and with `distillation` the mean of it and `head_dist`,
/// all folded at load into one Gemm.
pub fn rep_vit_classifier(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    classes: usize,
    distillation: bool,
    eps: f32,
) -> Result<Value> {
    let norm_linear = |b: &mut Builder| -> Result<(Vec<f64>, Vec<f64>)> {
        let bn = crate::graph::transforms::BnStats::read(&mut b.scope("bn"), dim, eps)?;
        let (s, t) = bn.affine();
        let l = &mut b.scope("l");
        let w = l.read("weight", &[classes, dim], Init::TruncNormal(0.02))?;
        let bias = l.read("bias", &[classes], Init::Zeros)?;
        let mut fw = Vec::with_capacity(w.len());
        let mut fb = Vec::with_capacity(classes);
        for o in 0..classes {
            let row = &w[o * dim..(o + 1) * dim];
            fw.extend(row.iter().zip(&s).map(|(&w, &s)| w as f64 * s));
            let shift: f64 = row.iter().zip(&t).map(|(&w, &t)| w as f64 * t).sum();
            fb.push(bias[o] as f64 + shift);
        }
        Ok((fw, fb))
    };
    let (mut w, mut bias) = norm_linear(&mut b.scope("head"))?;
    if distillation {
        let (w2, b2) = norm_linear(&mut b.scope("head_dist"))?;
        w.iter_mut().zip(&w2).for_each(|(a, v)| *a = (*a + v) / 2.0);
        bias.iter_mut()
            .zip(&b2)
            .for_each(|(a, v)| *a = (*a + v) / 2.0);
    }
    folded_gemm(b, x, &w, &bias)
}
