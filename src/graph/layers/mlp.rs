//! timm's MLP blocks: `Mlp`, `GluMlp`, `SwiGLU` / `SwiGLUPacked`, ViTamin's `GeGluMlp`,
//! `ConvMlp`, `LayerScale` / `LayerScale2d`, and `nn.Linear` itself.

use super::{act, conv2d, Conv, Norm, Pad};
use crate::error::Result;
use crate::graph::{Attr, Builder, Init, Value};

/// `nn.Linear` on `[..., in]`: MatMul with the transposed weight (folded at load) plus bias.
pub fn linear(
    b: &mut Builder,
    x: &Value,
    in_f: usize,
    out_f: usize,
    bias: bool,
    init: Init,
) -> Result<Value> {
    let y = linear_nobias(b, x, in_f, out_f, init)?;
    if bias {
        let bb = b.param("bias", &[out_f], Init::Zeros)?;
        Ok(b.op("Add", &[&y, &bb], vec![]))
    } else {
        Ok(y)
    }
}

/// The MatMul of `nn.Linear` without its bias (for a fused bias + activation after it).
pub fn linear_nobias(
    b: &mut Builder,
    x: &Value,
    in_f: usize,
    out_f: usize,
    init: Init,
) -> Result<Value> {
    let w = b.param("weight", &[out_f, in_f], init)?;
    let wt = b.op("Transpose", &[&w], vec![("perm", Attr::Ints(vec![1, 0]))]);
    Ok(b.op("MatMul", &[x, &wt], vec![]))
}

/// `nn.Linear` on `[N, in]` as Gemm (classifier heads).
pub fn linear_2d(
    b: &mut Builder,
    x: &Value,
    in_f: usize,
    out_f: usize,
    bias: bool,
    init: Init,
) -> Result<Value> {
    let w = b.param("weight", &[out_f, in_f], init)?;
    if bias {
        let bb = b.param("bias", &[out_f], Init::Zeros)?;
        Ok(b.op("Gemm", &[x, &w, &bb], vec![("transB", Attr::Int(1))]))
    } else {
        Ok(b.op("Gemm", &[x, &w], vec![("transB", Attr::Int(1))]))
    }
}

/// `linear` followed by `act`, the bias and a GELU fused where ONNX Runtime has the kernel.
pub fn linear_act(
    b: &mut Builder,
    x: &Value,
    in_f: usize,
    out_f: usize,
    bias: bool,
    act_name: &str,
    init: Init,
) -> Result<Value> {
    if !bias {
        let y = linear_nobias(b, x, in_f, out_f, init)?;
        return act(b, act_name, &y);
    }
    let y = linear_nobias(b, x, in_f, out_f, init)?;
    let bb = b.param("bias", &[out_f], Init::Zeros)?;
    super::act::bias_act(b, &y, &bb, act_name)
}

/// timm's `Mlp` settings.
#[derive(Debug, Clone)]
pub struct MlpCfg<'a> {
    pub in_f: usize,
    pub hidden: usize,
    pub out_f: usize,
    pub act: &'a str,
    pub bias: bool,
    /// A norm (module `norm`) between the activation and `fc2` (`scale_mlp_norm`).
    pub norm: Option<Norm>,
    pub init: Init,
}

impl<'a> MlpCfg<'a> {
    pub fn new(dim: usize, hidden: usize, act: &'a str) -> Self {
        MlpCfg {
            in_f: dim,
            hidden,
            out_f: dim,
            act,
            bias: true,
            norm: None,
            init: Init::TruncNormal(0.02),
        }
    }
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
    pub fn norm(mut self, n: Option<Norm>) -> Self {
        self.norm = n;
        self
    }
    pub fn out(mut self, o: usize) -> Self {
        self.out_f = o;
        self
    }
}

/// timm's `Mlp`: `fc1`, act, optional `norm`, `fc2` on tokens.
pub fn mlp(b: &mut Builder, x: &Value, c: &MlpCfg) -> Result<Value> {
    let y = linear_act(
        &mut b.scope("fc1"),
        x,
        c.in_f,
        c.hidden,
        c.bias,
        c.act,
        c.init,
    )?;
    let y = match &c.norm {
        Some(n) => n.apply_last(&mut b.scope("norm"), &y, c.hidden)?,
        None => y,
    };
    linear(&mut b.scope("fc2"), &y, c.hidden, c.out_f, c.bias, c.init)
}

/// timm's `GluMlp`: `fc1` to `2·hidden/2`, chunked; `x1 · act(x2)` (or `act(x1) · x2` when not
/// `gate_last`, as `SwiGLUPacked`), optional `norm`, `fc2`. `c.hidden` is fc1's width.
pub fn glu_mlp(b: &mut Builder, x: &Value, c: &MlpCfg, gate_last: bool) -> Result<Value> {
    let y = linear(&mut b.scope("fc1"), x, c.in_f, c.hidden, c.bias, c.init)?;
    let half = c.hidden / 2;
    let parts = super::split(b, &y, -1, &[half, half]);
    let y = if gate_last {
        let g = act(b, c.act, &parts[1])?;
        b.op("Mul", &[&parts[0], &g], vec![])
    } else {
        let g = act(b, c.act, &parts[0])?;
        b.op("Mul", &[&g, &parts[1]], vec![])
    };
    let y = match &c.norm {
        Some(n) => n.apply_last(&mut b.scope("norm"), &y, half)?,
        None => y,
    };
    linear(&mut b.scope("fc2"), &y, half, c.out_f, c.bias, c.init)
}

/// timm's `SwiGLU`: `act(fc1_g(x)) · fc1_x(x)`, optional `norm`, `fc2`.
pub fn swiglu(b: &mut Builder, x: &Value, c: &MlpCfg) -> Result<Value> {
    let g = linear(&mut b.scope("fc1_g"), x, c.in_f, c.hidden, c.bias, c.init)?;
    let v = linear(&mut b.scope("fc1_x"), x, c.in_f, c.hidden, c.bias, c.init)?;
    let g = act(b, c.act, &g)?;
    let y = b.op("Mul", &[&g, &v], vec![]);
    let y = match &c.norm {
        Some(n) => n.apply_last(&mut b.scope("norm"), &y, c.hidden)?,
        None => y,
    };
    linear(&mut b.scope("fc2"), &y, c.hidden, c.out_f, c.bias, c.init)
}

/// ViTamin's `GeGluMlp` (timm `vitamin.py`, used as a ViT `mlp_layer`): its own `norm` on the
/// input (`c.norm`, timm's LayerNorm eps 1e-6 when the block passes none), then
/// `w2(act(w0(x)) · w1(x))`.
pub fn ge_glu_mlp(b: &mut Builder, x: &Value, c: &MlpCfg) -> Result<Value> {
    let n = c.norm.unwrap_or(Norm::Layer { eps: 1e-6 });
    let x = n.apply_last(&mut b.scope("norm"), x, c.in_f)?;
    let g = linear_act(
        &mut b.scope("w0"),
        &x,
        c.in_f,
        c.hidden,
        c.bias,
        c.act,
        c.init,
    )?;
    let v = linear(&mut b.scope("w1"), &x, c.in_f, c.hidden, c.bias, c.init)?;
    let y = b.op("Mul", &[&g, &v], vec![]);
    linear(&mut b.scope("w2"), &y, c.hidden, c.out_f, c.bias, c.init)
}

/// timm's `ConvMlp`: 1×1 convs `fc1`, optional `norm`, act, `fc2` on NCHW.
pub fn conv_mlp(b: &mut Builder, x: &Value, c: &MlpCfg) -> Result<Value> {
    let fc = |i, o| {
        Conv::new(i, o, 1)
            .pad(Pad::Sym(0))
            .bias(c.bias)
            .init(c.init)
    };
    let y = conv2d(&mut b.scope("fc1"), x, fc(c.in_f, c.hidden))?;
    let y = match &c.norm {
        Some(n) => n.apply_2d(&mut b.scope("norm"), &y, c.hidden)?,
        None => y,
    };
    let y = act(b, c.act, &y)?;
    conv2d(&mut b.scope("fc2"), &y, fc(c.hidden, c.out_f))
}

/// timm's `LayerScale` (`gamma` `[dim]`, on tokens or channels-last maps).
pub fn layer_scale(b: &mut Builder, x: &Value, dim: usize, init: f32) -> Result<Value> {
    let g = b.param("gamma", &[dim], Init::Const(init))?;
    Ok(b.op("Mul", &[x, &g], vec![]))
}

/// timm's `LayerScale2d` (`gamma` `[C]` over NCHW).
pub fn layer_scale_2d(b: &mut Builder, x: &Value, dim: usize, init: f32) -> Result<Value> {
    let g = b.param("gamma", &[dim], Init::Const(init))?;
    let g = super::per_channel(b, &g, dim);
    Ok(b.op("Mul", &[x, &g], vec![]))
}

/// timm's `GlobalResponseNorm` (ConvNeXt-V2) over NHWC (`channels_last`) or NCHW maps:
/// `x + bias + weight · x · (‖x‖₂ over HW / (mean over C of it + eps))`, computed as
/// `x · (1 + weight · n) + bias` so the per-channel factor is formed on the small `[N,1,1,C]`.
pub fn global_response_norm(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    channels_last: bool,
) -> Result<Value> {
    let mut w = b.param("weight", &[dim], Init::Zeros)?;
    let mut bias = b.param("bias", &[dim], Init::Zeros)?;
    let (spatial, channel) = if channels_last {
        (b.ints(&[1, 2]), b.ints(&[-1]))
    } else {
        w = super::per_channel(b, &w, dim);
        bias = super::per_channel(b, &bias, dim);
        (b.ints(&[2, 3]), b.ints(&[1]))
    };
    let keep = || vec![("keepdims", Attr::Int(1))];
    let g = b.op("ReduceL2", &[x, &spatial], keep());
    let gm = b.op("ReduceMean", &[&g, &channel], keep());
    let eps = b.scalar(1e-6);
    let den = b.op("Add", &[&gm, &eps], vec![]);
    let n = b.op("Div", &[&g, &den], vec![]);
    let wn = b.op("Mul", &[&n, &w], vec![]);
    let one = b.scalar(1.0);
    let s = b.op("Add", &[&wn, &one], vec![]);
    let y = b.op("Mul", &[x, &s], vec![]);
    Ok(b.op("Add", &[&y, &bias], vec![]))
}

/// timm's `GlobalResponseNormMlp`: `fc1`, act, `grn`, `fc2`, as 1×1 convs on NCHW
/// (`use_conv`) or Linears on channels-last maps.
pub fn grn_mlp(b: &mut Builder, x: &Value, c: &MlpCfg, use_conv: bool) -> Result<Value> {
    let y = if use_conv {
        let fc1 = Conv::new(c.in_f, c.hidden, 1)
            .pad(Pad::Sym(0))
            .bias(c.bias)
            .init(c.init);
        let y = conv2d(&mut b.scope("fc1"), x, fc1)?;
        act(b, c.act, &y)?
    } else {
        let s = &mut b.scope("fc1");
        linear_act(s, x, c.in_f, c.hidden, c.bias, c.act, c.init)?
    };
    let y = global_response_norm(&mut b.scope("grn"), &y, c.hidden, !use_conv)?;
    if use_conv {
        let fc2 = Conv::new(c.hidden, c.out_f, 1)
            .pad(Pad::Sym(0))
            .bias(c.bias)
            .init(c.init);
        conv2d(&mut b.scope("fc2"), &y, fc2)
    } else {
        linear(&mut b.scope("fc2"), &y, c.hidden, c.out_f, c.bias, c.init)
    }
}
