//! Building blocks shared by the family builders, named after the PyTorch modules they mirror.
//! Parameter names are always timm's (`<prefix>.weight`, `<prefix>.running_mean`, ...).

use super::{Attr, Builder, Init, Value};
use crate::error::Result;

/// Convolution padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pad {
    /// PyTorch's symmetric `padding=p` on both spatial axes.
    Sym(usize),
    /// Explicit (top, left, bottom, right).
    Explicit(usize, usize, usize, usize),
    /// TensorFlow "SAME" (timm's `Conv2dSame` / `padding='same'` for `tf_*` models): total
    /// padding from the input size, the extra pixel at the end — ONNX `SAME_UPPER`.
    TfSame,
}

/// A 2-D convolution with timm's `<prefix>.weight` (and `<prefix>.bias` when `bias`).
#[derive(Debug, Clone, Copy)]
pub struct Conv {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: Pad,
    pub dilation: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv {
    pub fn new(in_ch: usize, out_ch: usize, k: usize) -> Self {
        Conv {
            in_ch,
            out_ch,
            kernel: (k, k),
            stride: 1,
            pad: Pad::Sym(k / 2),
            dilation: 1,
            groups: 1,
            bias: false,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn pad(mut self, p: Pad) -> Self {
        self.pad = p;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
}

pub fn conv2d(b: &mut Builder, x: &Value, prefix: &str, c: Conv) -> Result<Value> {
    let shape = [c.out_ch, c.in_ch / c.groups.max(1), c.kernel.0, c.kernel.1];
    let w = b.param(
        &format!("{prefix}.weight"),
        &shape,
        super::Init::KaimingFanOut,
    )?;
    let bias = if c.bias {
        Some(b.param(&format!("{prefix}.bias"), &[c.out_ch], Init::Zeros)?)
    } else {
        None
    };
    let mut attrs = vec![
        (
            "kernel_shape",
            Attr::Ints(vec![c.kernel.0 as i64, c.kernel.1 as i64]),
        ),
        ("strides", Attr::Ints(vec![c.stride as i64; 2])),
        ("dilations", Attr::Ints(vec![c.dilation as i64; 2])),
        ("group", Attr::Int(c.groups as i64)),
    ];
    match c.pad {
        Pad::Sym(p) => attrs.push(("pads", Attr::Ints(vec![p as i64; 4]))),
        Pad::Explicit(t, l, bo, r) => attrs.push((
            "pads",
            Attr::Ints(vec![t as i64, l as i64, bo as i64, r as i64]),
        )),
        Pad::TfSame => attrs.push(("auto_pad", Attr::Str("SAME_UPPER".into()))),
    }
    Ok(match &bias {
        Some(bb) => b.op("Conv", &[x, &w, bb], attrs),
        None => b.op("Conv", &[x, &w], attrs),
    })
}

/// `nn.BatchNorm2d` in eval mode.
pub fn batch_norm(b: &mut Builder, x: &Value, prefix: &str, ch: usize, eps: f32) -> Result<Value> {
    let w = b.param(&format!("{prefix}.weight"), &[ch], Init::Ones)?;
    let bias = b.param(&format!("{prefix}.bias"), &[ch], Init::Zeros)?;
    let mean = b.param(&format!("{prefix}.running_mean"), &[ch], Init::Zeros)?;
    let var = b.param(&format!("{prefix}.running_var"), &[ch], Init::Ones)?;
    Ok(b.op(
        "BatchNormalization",
        &[x, &w, &bias, &mean, &var],
        vec![("epsilon", Attr::Float(eps))],
    ))
}

/// `nn.LayerNorm` over the last axis (or `axis`), as ONNX's fused LayerNormalization.
pub fn layer_norm(
    b: &mut Builder,
    x: &Value,
    prefix: &str,
    dim: usize,
    eps: f32,
    axis: i64,
) -> Result<Value> {
    let w = b.param(&format!("{prefix}.weight"), &[dim], Init::Ones)?;
    let bias = b.param(&format!("{prefix}.bias"), &[dim], Init::Zeros)?;
    Ok(b.op(
        "LayerNormalization",
        &[x, &w, &bias],
        vec![("axis", Attr::Int(axis)), ("epsilon", Attr::Float(eps))],
    ))
}

/// `nn.Linear` on `[N, in]` input, as Gemm.
pub fn linear_2d(
    b: &mut Builder,
    x: &Value,
    prefix: &str,
    in_f: usize,
    out_f: usize,
    bias: bool,
    init: Init,
) -> Result<Value> {
    let w = b.param(&format!("{prefix}.weight"), &[out_f, in_f], init)?;
    if bias {
        let bb = b.param(&format!("{prefix}.bias"), &[out_f], Init::Zeros)?;
        Ok(b.op("Gemm", &[x, &w, &bb], vec![("transB", Attr::Int(1))]))
    } else {
        Ok(b.op("Gemm", &[x, &w], vec![("transB", Attr::Int(1))]))
    }
}

/// `nn.Linear` on `[..., in]` input: MatMul with the transposed weight (ONNX Runtime folds the
/// transpose at load) plus the bias.
pub fn linear(
    b: &mut Builder,
    x: &Value,
    prefix: &str,
    in_f: usize,
    out_f: usize,
    bias: bool,
    init: Init,
) -> Result<Value> {
    let w = b.param(&format!("{prefix}.weight"), &[out_f, in_f], init)?;
    let wt = b.op("Transpose", &[&w], vec![("perm", Attr::Ints(vec![1, 0]))]);
    let y = b.op("MatMul", &[x, &wt], vec![]);
    if bias {
        let bb = b.param(&format!("{prefix}.bias"), &[out_f], Init::Zeros)?;
        Ok(b.op("Add", &[&y, &bb], vec![]))
    } else {
        Ok(y)
    }
}

pub fn relu(b: &mut Builder, x: &Value) -> Value {
    b.op("Relu", &[x], vec![])
}

pub fn relu6(b: &mut Builder, x: &Value) -> Value {
    let lo = b.const_f32(vec![0.0], &[]);
    let hi = b.const_f32(vec![6.0], &[]);
    b.op("Clip", &[x, &lo, &hi], vec![])
}

pub fn sigmoid(b: &mut Builder, x: &Value) -> Value {
    b.op("Sigmoid", &[x], vec![])
}

/// SiLU / Swish: `x * sigmoid(x)`.
pub fn silu(b: &mut Builder, x: &Value) -> Value {
    let s = b.op("Sigmoid", &[x], vec![]);
    b.op("Mul", &[x, &s], vec![])
}

/// Exact (erf) GELU, PyTorch's default.
pub fn gelu(b: &mut Builder, x: &Value) -> Value {
    b.op("Gelu", &[x], vec![])
}

/// GELU with the tanh approximation.
pub fn gelu_tanh(b: &mut Builder, x: &Value) -> Value {
    b.op(
        "Gelu",
        &[x],
        vec![("approximate", Attr::Str("tanh".into()))],
    )
}

pub fn hard_swish(b: &mut Builder, x: &Value) -> Value {
    b.op("HardSwish", &[x], vec![])
}

/// timm's `hard_sigmoid`: `relu6(x + 3) / 6`.
pub fn hard_sigmoid(b: &mut Builder, x: &Value) -> Value {
    b.op(
        "HardSigmoid",
        &[x],
        vec![
            ("alpha", Attr::Float(1.0 / 6.0)),
            ("beta", Attr::Float(0.5)),
        ],
    )
}

/// Activation by timm's name (`act_layer` strings).
pub fn act(b: &mut Builder, name: &str, x: &Value) -> crate::error::Result<Value> {
    Ok(match name {
        "relu" => relu(b, x),
        "relu6" => relu6(b, x),
        "silu" | "swish" => silu(b, x),
        "gelu" => gelu(b, x),
        "gelu_tanh" => gelu_tanh(b, x),
        "hard_swish" | "hardswish" => hard_swish(b, x),
        "hard_sigmoid" | "hardsigmoid" => hard_sigmoid(b, x),
        "sigmoid" => sigmoid(b, x),
        "identity" => x.clone(),
        other => {
            return Err(crate::Error::unsupported(format!(
                "activation `{other}` is not supported by native graphs"
            )))
        }
    })
}

/// Global average pool over H, W, then flatten to `[N, C]`.
pub fn global_avg_pool_flat(b: &mut Builder, x: &Value) -> Value {
    let p = b.op("GlobalAveragePool", &[x], vec![]);
    b.op("Flatten", &[&p], vec![("axis", Attr::Int(1))])
}

/// Global average pool keeping dims, `[N, C, 1, 1]`.
pub fn global_avg_pool(b: &mut Builder, x: &Value) -> Value {
    b.op("GlobalAveragePool", &[x], vec![])
}

pub fn add(b: &mut Builder, x: &Value, y: &Value) -> Value {
    b.op("Add", &[x, y], vec![])
}

pub fn mul(b: &mut Builder, x: &Value, y: &Value) -> Value {
    b.op("Mul", &[x, y], vec![])
}
