//! Activations by timm's names (`timm.layers.get_act_layer`), as one table.

use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// Every name [`act`] accepts, for messages.
pub const NAMES: &[&str] = &[
    "relu",
    "relu6",
    "leaky_relu",
    "prelu",
    "elu",
    "celu",
    "selu",
    "gelu",
    "gelu_tanh",
    "quick_gelu",
    "silu",
    "swish",
    "mish",
    "hard_swish",
    "hard_sigmoid",
    "hard_mish",
    "sigmoid",
    "tanh",
    "squared_relu",
    "star_relu",
    "identity",
];

/// timm's canonical spelling of an activation name (`hardswish` → `hard_swish`, class names
/// from saved configs → their function name), or an unsupported error listing [`NAMES`].
pub fn canonical(name: &str) -> Result<&'static str> {
    let n = name.trim().to_ascii_lowercase().replace(['-', ' '], "_");
    let n = n.trim_start_matches("nn.").to_string();
    let c = match n.as_str() {
        "relu" => "relu",
        "relu6" => "relu6",
        "leaky_relu" | "leakyrelu" => "leaky_relu",
        "prelu" => "prelu",
        "elu" => "elu",
        "celu" => "celu",
        "selu" => "selu",
        "gelu" => "gelu",
        "gelu_tanh" | "geluTanh" => "gelu_tanh",
        "quick_gelu" | "quickgelu" => "quick_gelu",
        "silu" => "silu",
        "swish" => "silu",
        "mish" => "mish",
        "hard_swish" | "hardswish" => "hard_swish",
        "hard_sigmoid" | "hardsigmoid" => "hard_sigmoid",
        "hard_mish" | "hardmish" => "hard_mish",
        "sigmoid" => "sigmoid",
        "tanh" => "tanh",
        "squared_relu" | "squaredrelu" => "squared_relu",
        "star_relu" | "starrelu" => "star_relu",
        "identity" | "" | "none" => "identity",
        _ => {
            return Err(Error::unsupported(format!(
                "activation `{name}` is not supported by native graphs (supported: {})",
                NAMES.join(", ")
            )))
        }
    };
    Ok(c)
}

/// The activation `name` applied to `x`. `prelu` reads its `weight`, `star_relu` its `scale` and
/// `bias` in the current scope.
pub fn act(b: &mut Builder, name: &str, x: &Value) -> Result<Value> {
    Ok(match canonical(name)? {
        "relu" => b.op("Relu", &[x], vec![]),
        "relu6" => clip(b, x, 0.0, 6.0),
        "leaky_relu" => b.op("LeakyRelu", &[x], vec![("alpha", Attr::Float(0.01))]),
        "prelu" => {
            let w = b.param("weight", &[1], Init::Const(0.25))?;
            b.op("PRelu", &[x, &w], vec![])
        }
        "elu" => b.op("Elu", &[x], vec![("alpha", Attr::Float(1.0))]),
        "celu" => b.op("Celu", &[x], vec![("alpha", Attr::Float(1.0))]),
        "selu" => b.op("Selu", &[x], vec![]),
        "gelu" => b.op("Gelu", &[x], vec![]),
        "gelu_tanh" => b.op(
            "Gelu",
            &[x],
            vec![("approximate", Attr::Str("tanh".into()))],
        ),
        // CLIP's x * sigmoid(1.702 x).
        "quick_gelu" => b.ms_op("QuickGelu", &[x], vec![("alpha", Attr::Float(1.702))]),
        "silu" => {
            let s = b.op("Sigmoid", &[x], vec![]);
            b.op("Mul", &[x, &s], vec![])
        }
        "mish" => b.op("Mish", &[x], vec![]),
        "hard_swish" => b.op("HardSwish", &[x], vec![]),
        // timm / PyTorch: relu6(x + 3) / 6.
        "hard_sigmoid" => b.op(
            "HardSigmoid",
            &[x],
            vec![
                ("alpha", Attr::Float(1.0 / 6.0)),
                ("beta", Attr::Float(0.5)),
            ],
        ),
        // 0.5 * x * clamp(x + 2, 0, 2).
        "hard_mish" => {
            let two = b.scalar(2.0);
            let t = b.op("Add", &[x, &two], vec![]);
            let t = clip(b, &t, 0.0, 2.0);
            let y = b.op("Mul", &[x, &t], vec![]);
            super::scale(b, &y, 0.5)
        }
        "sigmoid" => b.op("Sigmoid", &[x], vec![]),
        "tanh" => b.op("Tanh", &[x], vec![]),
        // MetaFormer's SquaredReLU: relu(x)².
        "squared_relu" => {
            let r = b.op("Relu", &[x], vec![]);
            b.op("Mul", &[&r, &r], vec![])
        }
        "star_relu" => star_relu(b, x)?,
        _ => x.clone(),
    })
}

/// `act(x + bias)`, fused into ONNX Runtime's `BiasGelu` / `FastGelu` kernels for GELU (the
/// ops its optimiser makes of torch's erf / tanh decompositions).
pub fn bias_act(b: &mut Builder, x: &Value, bias: &Value, name: &str) -> Result<Value> {
    match canonical(name)? {
        "gelu" => Ok(b.ms_op("BiasGelu", &[x, bias], vec![])),
        "gelu_tanh" => Ok(b.ms_op("FastGelu", &[x, bias], vec![])),
        _ => {
            let y = b.op("Add", &[x, bias], vec![]);
            act(b, name, &y)
        }
    }
}

pub fn clip(b: &mut Builder, x: &Value, lo: f32, hi: f32) -> Value {
    let lo = b.scalar(lo);
    let hi = b.scalar(hi);
    b.op("Clip", &[x, &lo, &hi], vec![])
}

/// MetaFormer's `StarReLU`: `scale · relu(x)² + bias`, with the learnable one-element `scale`
/// and `bias` of the current scope.
pub fn star_relu(b: &mut Builder, x: &Value) -> Result<Value> {
    let s = b.param("scale", &[1], Init::Ones)?;
    let bias = b.param("bias", &[1], Init::Zeros)?;
    let r = b.op("Relu", &[x], vec![]);
    let sq = b.op("Mul", &[&r, &r], vec![]);
    let y = b.op("Mul", &[&sq, &s], vec![]);
    Ok(b.op("Add", &[&y, &bias], vec![]))
}
