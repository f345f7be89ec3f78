//! Normalisation layers with timm's eps defaults: `BatchNorm2d`, `LayerNorm` / `LayerNorm2d`,
//! `GroupNorm` / `GroupNorm1`, `RmsNorm` / `RmsNorm2d`, `SimpleNorm`. Parameters are the
//! current scope's `weight`, `bias`, `running_mean`, `running_var`.

use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// A norm layer as timm's `get_norm_layer` names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Norm {
    Batch {
        eps: f32,
    },
    Layer {
        eps: f32,
    },
    Group {
        groups: usize,
        eps: f32,
    },
    Rms {
        eps: f32,
    },
    /// `SimpleNorm`: `x / sqrt(var(x, unbiased) + eps) * w` (no bias, mean kept).
    Simple {
        eps: f32,
    },
    Identity,
}

impl Norm {
    /// timm's name (`norm_layer` in `model_args`) with the class's own eps default, or `eps`.
    pub fn from_timm(name: &str, eps: Option<f32>) -> Result<Norm> {
        let n = name.to_ascii_lowercase().replace('_', "");
        Ok(match n.as_str() {
            "batchnorm" | "batchnorm2d" | "batchnorm1d" | "frozenbatchnorm2d" => Norm::Batch {
                eps: eps.unwrap_or(1e-5),
            },
            "layernorm" | "layernorm2d" => Norm::Layer {
                eps: eps.unwrap_or(1e-6),
            },
            "groupnorm" => Norm::Group {
                groups: 32,
                eps: eps.unwrap_or(1e-5),
            },
            "groupnorm1" => Norm::Group {
                groups: 1,
                eps: eps.unwrap_or(1e-5),
            },
            "rmsnorm" | "rmsnorm2d" => Norm::Rms {
                eps: eps.unwrap_or(1e-6),
            },
            "simplenorm" | "simplenorm2d" => Norm::Simple {
                eps: eps.unwrap_or(1e-6),
            },
            "identity" | "" => Norm::Identity,
            _ => {
                return Err(Error::unsupported(format!(
                    "norm_layer `{name}` is not supported by native graphs (batchnorm2d, layernorm, layernorm2d, groupnorm, groupnorm1, rmsnorm, rmsnorm2d, simplenorm)"
                )))
            }
        })
    }

    /// The norm over the channels of an NCHW map.
    pub fn apply_2d(&self, b: &mut Builder, x: &Value, ch: usize) -> Result<Value> {
        match *self {
            Norm::Batch { eps } => batch_norm(b, x, ch, eps),
            Norm::Layer { eps } => layer_norm_2d(b, x, ch, eps),
            Norm::Group { groups, eps } => group_norm(b, x, groups, ch, eps),
            Norm::Rms { eps } => rms_norm_2d(b, x, ch, eps),
            Norm::Simple { eps } => {
                let t = super::nchw_to_nhwc(b, x);
                let y = rms_like(b, &t, ch, eps, true)?;
                Ok(super::nhwc_to_nchw(b, &y))
            }
            Norm::Identity => Ok(x.clone()),
        }
    }

    /// The norm over the last axis (tokens, channels-last maps, pooled vectors).
    pub fn apply_last(&self, b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
        match *self {
            Norm::Layer { eps } => layer_norm(b, x, dim, eps),
            Norm::Rms { eps } => rms_norm(b, x, dim, eps),
            Norm::Simple { eps } => rms_like(b, x, dim, eps, true),
            Norm::Batch { eps } => {
                // BatchNorm1d on [N, C]: an affine map per channel.
                batch_norm(b, x, dim, eps)
            }
            Norm::Group { .. } => Err(Error::unsupported(
                "GroupNorm over the last axis is not a timm layer",
            )),
            Norm::Identity => Ok(x.clone()),
        }
    }
}

/// `nn.BatchNorm2d` in eval mode (for a BatchNorm not preceded by a conv; after a conv use
/// [`super::conv_bn`], which folds it).
pub fn batch_norm(b: &mut Builder, x: &Value, ch: usize, eps: f32) -> Result<Value> {
    let w = b.param("weight", &[ch], Init::Ones)?;
    let bias = b.param("bias", &[ch], Init::Zeros)?;
    let mean = b.param("running_mean", &[ch], Init::Zeros)?;
    let var = b.param("running_var", &[ch], Init::Ones)?;
    Ok(b.op(
        "BatchNormalization",
        &[x, &w, &bias, &mean, &var],
        vec![("epsilon", Attr::Float(eps))],
    ))
}

/// `nn.LayerNorm` over the last axis, as ONNX's fused LayerNormalization.
pub fn layer_norm(b: &mut Builder, x: &Value, dim: usize, eps: f32) -> Result<Value> {
    layer_norm_affine(b, x, dim, eps, true)
}

/// LayerNorm with or without its bias (`bias=False` norms of some transformers).
pub fn layer_norm_affine(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    eps: f32,
    bias: bool,
) -> Result<Value> {
    let w = b.param("weight", &[dim], Init::Ones)?;
    let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))];
    if bias {
        let bb = b.param("bias", &[dim], Init::Zeros)?;
        Ok(b.op("LayerNormalization", &[x, &w, &bb], attrs))
    } else {
        Ok(b.op("LayerNormalization", &[x, &w], attrs))
    }
}

/// timm's `LayerNorm2d`: LayerNorm over the channels of an NCHW map (permuted channels-last).
pub fn layer_norm_2d(b: &mut Builder, x: &Value, ch: usize, eps: f32) -> Result<Value> {
    let t = super::nchw_to_nhwc(b, x);
    let y = layer_norm(b, &t, ch, eps)?;
    Ok(super::nhwc_to_nchw(b, &y))
}

/// [`layer_norm_2d`] with or without its `bias` (MetaFormer's `LayerNorm2dNoBias`).
pub fn layer_norm_2d_affine(
    b: &mut Builder,
    x: &Value,
    ch: usize,
    eps: f32,
    bias: bool,
) -> Result<Value> {
    let t = super::nchw_to_nhwc(b, x);
    let y = layer_norm_affine(b, &t, ch, eps, bias)?;
    Ok(super::nhwc_to_nchw(b, &y))
}

/// `nn.GroupNorm` (timm's `GroupNorm`, `GroupNorm1` with one group): normalised per group as
/// InstanceNormalization over `[N, G, -1]`, then the per-channel affine.
pub fn group_norm(b: &mut Builder, x: &Value, groups: usize, ch: usize, eps: f32) -> Result<Value> {
    group_norm_affine(b, x, groups, ch, eps, true)
}

/// [`group_norm`] with or without its `bias` (MetaFormer's `GroupNorm1NoBias`).
pub fn group_norm_affine(
    b: &mut Builder,
    x: &Value,
    groups: usize,
    ch: usize,
    eps: f32,
    bias: bool,
) -> Result<Value> {
    if groups == 0 || !ch.is_multiple_of(groups) {
        return Err(Error::invalid_model(format!(
            "GroupNorm with {groups} groups over {ch} channels"
        )));
    }
    let w = b.param("weight", &[ch], Init::Ones)?;
    let bias = if bias {
        Some(b.param("bias", &[ch], Init::Zeros)?)
    } else {
        None
    };
    let shape = b.op("Shape", &[x], vec![]);
    let g = super::reshape(b, x, &[0, groups as i64, -1]);
    let ones = b.const_f32(vec![1.0; groups], &[groups as i64]);
    let zeros = b.const_f32(vec![0.0; groups], &[groups as i64]);
    let n = b.op(
        "InstanceNormalization",
        &[&g, &ones, &zeros],
        vec![("epsilon", Attr::Float(eps))],
    );
    let y = b.op("Reshape", &[&n, &shape], vec![]);
    let w = super::per_channel(b, &w, ch);
    let y = b.op("Mul", &[&y, &w], vec![]);
    let Some(bias) = bias else {
        return Ok(y);
    };
    let bias = super::per_channel(b, &bias, ch);
    Ok(b.op("Add", &[&y, &bias], vec![]))
}

/// timm's `RmsNorm` over the last axis: `x / sqrt(mean(x²) + eps) · w` (the pattern ONNX
/// Runtime fuses into SimplifiedLayerNormalization).
pub fn rms_norm(b: &mut Builder, x: &Value, dim: usize, eps: f32) -> Result<Value> {
    rms_like(b, x, dim, eps, false)
}

/// timm's `RmsNorm2d`: RMS norm over the channels of an NCHW map.
pub fn rms_norm_2d(b: &mut Builder, x: &Value, ch: usize, eps: f32) -> Result<Value> {
    let t = super::nchw_to_nhwc(b, x);
    let y = rms_norm(b, &t, ch, eps)?;
    Ok(super::nhwc_to_nchw(b, &y))
}

/// RMS norm, or with `simple` timm's `SimpleNorm` (the unbiased variance of the centred values
/// divides the uncentred input).
fn rms_like(b: &mut Builder, x: &Value, dim: usize, eps: f32, simple: bool) -> Result<Value> {
    let w = b.param("weight", &[dim], Init::Ones)?;
    let axes = b.ints(&[-1]);
    let centred = if simple {
        let mean = b.op("ReduceMean", &[x, &axes], vec![("keepdims", Attr::Int(1))]);
        b.op("Sub", &[x, &mean], vec![])
    } else {
        x.clone()
    };
    let two = b.scalar(2.0);
    let sq = b.op("Pow", &[&centred, &two], vec![]);
    let mut var = b.op(
        "ReduceMean",
        &[&sq, &axes],
        vec![("keepdims", Attr::Int(1))],
    );
    if simple {
        // torch.var is unbiased: sum / (n - 1).
        var = super::scale(b, &var, dim as f32 / (dim.max(2) - 1) as f32);
    }
    let e = b.scalar(eps);
    let v = b.op("Add", &[&var, &e], vec![]);
    let s = b.op("Sqrt", &[&v], vec![]);
    let y = b.op("Div", &[x, &s], vec![]);
    Ok(b.op("Mul", &[&y, &w], vec![]))
}
