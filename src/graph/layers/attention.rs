//! timm's `Attention`: fused or split q/k/v projections, optional q/k norms, and hooks where the
//! transformer families plug in their relative-position bias or rotary embedding. Without hooks
//! it runs as ONNX Runtime's fused `Attention` / `MultiHeadAttention` kernels.

use super::mlp::linear;
use super::rope::RopeConsts;
use super::{reshape, transpose, Norm};
use crate::error::Result;
use crate::graph::{Attr, Builder, Init, Value};

/// What [`attention`] needs to know.
#[derive(Debug, Clone)]
pub struct AttnCfg {
    pub dim: usize,
    pub heads: usize,
    /// `head_dim * heads` when it differs from `dim`.
    pub inner: Option<usize>,
    pub qkv_bias: bool,
    pub proj_bias: bool,
    /// `q_norm` / `k_norm` over the head dim (`qk_norm=True`).
    pub qk_norm: Option<Norm>,
    /// `norm` between the attention and `proj` (`scale_attn_norm`).
    pub attn_norm: Option<Norm>,
    /// Softmax scale; default `head_dim^-0.5`.
    pub scale: Option<f32>,
    pub init: Init,
}

impl AttnCfg {
    pub fn new(dim: usize, heads: usize) -> Self {
        AttnCfg {
            dim,
            heads,
            inner: None,
            qkv_bias: true,
            proj_bias: true,
            qk_norm: None,
            attn_norm: None,
            scale: None,
            init: Init::TruncNormal(0.02),
        }
    }
    pub fn inner_dim(&self) -> usize {
        self.inner.unwrap_or(self.dim)
    }
    pub fn head_dim(&self) -> usize {
        self.inner_dim() / self.heads.max(1)
    }
}

/// Where families change attention.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Additive bias of the attention logits, `[1 or N, H, L, L]` (relative-position bias,
    /// shifted-window masks).
    pub bias: Option<Value>,
    /// Applied to q and k (rotary position embedding).
    pub rope: Option<Rope<'a>>,
}

/// A rotary embedding of q and k.
#[derive(Clone, Copy)]
pub enum Rope<'a> {
    /// timm's tables; one shared by every head rotates the token layout, so the attention
    /// after it stays one fused node.
    Tables(&'a RopeConsts),
    /// Any rotation of `[N, H, L, head_dim]`.
    #[allow(clippy::type_complexity)]
    Heads(&'a dyn Fn(&mut Builder, &Value) -> Result<Value>),
}

impl Hooks<'_> {
    /// What ORT's fused attention ops can take of these hooks: `Some(None)` without a bias,
    /// `Some(Some(bias))` for a bias computed at load of `[1, H or 1, L, L]` (their
    /// `attention_bias`), `None` when the explicit form is needed (rotary embedding, or a bias the
    /// graph computes, such as shifted-window masks of `[windows, H, L, L]`).
    fn fused_bias(&self, b: &Builder, heads: usize) -> Option<Option<Value>> {
        match self.rope {
            Some(Rope::Tables(r)) if r.on_tokens() => {}
            None => {}
            _ => return None,
        }
        match &self.bias {
            None => Some(None),
            Some(bias) => match b.initializer_dims(bias) {
                Some(&[1, h, _, _]) if h == 1 || h == heads as i64 => Some(Some(bias.clone())),
                _ => None,
            },
        }
    }
}

/// The inputs and attributes shared by ORT's `Attention` and `MultiHeadAttention`: the
/// `attention_bias` input (index 5) when there is one, `scale` when timm's is not 1/√head_dim.
fn fused_node<'v>(
    mut inputs: Vec<&'v Value>,
    none: &'v Value,
    bias: &'v Option<Value>,
    c: &AttnCfg,
) -> (Vec<&'v Value>, Vec<(&'static str, Attr)>) {
    if let Some(bias) = bias {
        inputs.resize(5, none);
        inputs.push(bias);
    }
    let mut attrs = vec![("num_heads", Attr::Int(c.heads as i64))];
    if let Some(s) = c.scale {
        attrs.push(("scale", Attr::Float(s)));
    }
    (inputs, attrs)
}

/// timm's `Attention` on `[N, L, dim]` with `qkv` / `proj` (and `q_norm`, `k_norm`, `norm`) in
/// the current scope.
pub fn attention(b: &mut Builder, x: &Value, c: &AttnCfg, hooks: &Hooks) -> Result<Value> {
    let inner = c.inner_dim();
    let fused = hooks
        .fused_bias(b, c.heads)
        .filter(|_| c.qk_norm.is_none() && hooks.rope.is_none());
    let y = if let Some(attn_bias) = fused {
        // One fused node: the weight is qkv.weight transposed ([D, 3D], q | k | v with heads
        // contiguous, the order of timm's reshape to (3, H, hd)).
        let w = b.param("qkv.weight", &[3 * inner, c.dim], c.init)?;
        let wt = transpose(b, &w, &[1, 0]);
        let bias = if c.qkv_bias {
            b.param("qkv.bias", &[3 * inner], Init::Zeros)?
        } else {
            b.const_f32(vec![0.0; 3 * inner], &[3 * inner as i64])
        };
        let none = b.none();
        let (inputs, attrs) = fused_node(vec![x, &wt, &bias], &none, &attn_bias, c);
        b.ms_op("Attention", &inputs, attrs)
    } else {
        let qkv = linear(&mut b.scope("qkv"), x, c.dim, 3 * inner, c.qkv_bias, c.init)?;
        let parts = super::split(b, &qkv, -1, &[inner; 3]);
        attention_core(b, &parts[0], &parts[1], &parts[2], c, hooks)?
    };
    let y = match &c.attn_norm {
        Some(n) => n.apply_last(&mut b.scope("norm"), &y, inner)?,
        None => y,
    };
    linear(&mut b.scope("proj"), &y, inner, c.dim, c.proj_bias, c.init)
}

/// Scaled dot-product attention of projected `q`, `k`, `v` (`[N, L, inner]` each), with the
/// q/k norms (`q_norm`, `k_norm` in the current scope) and hooks; returns `[N, L, inner]`.
pub fn attention_core(
    b: &mut Builder,
    q: &Value,
    k: &Value,
    v: &Value,
    c: &AttnCfg,
    hooks: &Hooks,
) -> Result<Value> {
    let hd = c.head_dim();
    let heads = c.heads as i64;
    if let Some(attn_bias) = hooks.fused_bias(b, c.heads) {
        // MultiHeadAttention takes [N, L, inner]; only the q/k norms need the head view.
        let (q, k) = match &c.qk_norm {
            Some(n) => {
                let per_head = |b: &mut Builder, t: &Value, name: &str| -> Result<Value> {
                    let t = reshape(b, t, &[0, 0, heads, hd as i64]);
                    let t = n.apply_last(&mut b.scope(name), &t, hd)?;
                    Ok(reshape(b, &t, &[0, 0, (c.inner_dim()) as i64]))
                };
                (per_head(b, q, "q_norm")?, per_head(b, k, "k_norm")?)
            }
            None => (q.clone(), k.clone()),
        };
        let (q, k) = match hooks.rope {
            Some(Rope::Tables(r)) => {
                let rotated = |b: &mut Builder, t: &Value| {
                    r.apply_tokens(b, t, c.heads).ok_or_else(|| {
                        crate::error::Error::internal("rope tables without the token layout")
                    })
                };
                (rotated(b, &q)?, rotated(b, &k)?)
            }
            _ => (q, k),
        };
        let none = b.none();
        let (inputs, attrs) = fused_node(vec![&q, &k, v], &none, &attn_bias, c);
        return Ok(b.ms_op("MultiHeadAttention", &inputs, attrs));
    }
    // [N, L, inner] -> [N, H, L, hd]
    let heads_view = |b: &mut Builder, t: &Value| {
        let t = reshape(b, t, &[0, 0, heads, hd as i64]);
        transpose(b, &t, &[0, 2, 1, 3])
    };
    let mut q = heads_view(b, q);
    let mut k = heads_view(b, k);
    let v = heads_view(b, v);
    if let Some(n) = &c.qk_norm {
        q = n.apply_last(&mut b.scope("q_norm"), &q, hd)?;
        k = n.apply_last(&mut b.scope("k_norm"), &k, hd)?;
    }
    match hooks.rope {
        Some(Rope::Tables(r)) => {
            q = r.apply_heads(b, &q);
            k = r.apply_heads(b, &k);
        }
        Some(Rope::Heads(rope)) => {
            q = rope(b, &q)?;
            k = rope(b, &k)?;
        }
        None => {}
    }
    let scale = c.scale.unwrap_or((hd as f32).powf(-0.5));
    let q = super::scale(b, &q, scale);
    let kt = transpose(b, &k, &[0, 1, 3, 2]);
    let mut logits = b.op("MatMul", &[&q, &kt], vec![]);
    if let Some(bias) = &hooks.bias {
        logits = b.op("Add", &[&logits, bias], vec![]);
    }
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&p, &v], vec![]);
    let y = transpose(b, &y, &[0, 2, 1, 3]);
    Ok(reshape(b, &y, &[0, 0, c.inner_dim() as i64]))
}

/// timm's `ClassAttn` (CaiT, XCiT's class-attention blocks) on `u` = `[N, 1 + L, dim]`
/// ([class, patches]): only the class token's query attends to every token; `[N, 1, dim]` out.
/// `q`, `k`, `v` and `proj` are linears of the current scope.
pub fn class_attn(
    b: &mut Builder,
    u: &Value,
    dim: usize,
    heads: usize,
    qkv_bias: bool,
) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let u0 = super::slice(b, u, 1, 0, 1);
    let q = linear(&mut b.scope("q"), &u0, dim, dim, qkv_bias, init)?;
    let k = linear(&mut b.scope("k"), u, dim, dim, qkv_bias, init)?;
    let v = linear(&mut b.scope("v"), u, dim, dim, qkv_bias, init)?;
    let c = AttnCfg::new(dim, heads);
    let y = attention_core(b, &q, &k, &v, &c, &Hooks::default())?;
    linear(&mut b.scope("proj"), &y, dim, dim, true, init)
}

/// `lambda_full` of timm's `DiffAttention` / `DiffParallelScalingBlock`, computed at load from
/// the current scope's `lambda_q1`, `lambda_k1`, `lambda_q2`, `lambda_k2` (`[head_dim]`), or
/// `lambda_a`, `lambda_b` (scalars) with `dual_lambda`:
/// `exp(Σ q1·k1) − exp(Σ q2·k2) + lambda_init`.
pub fn diff_lambda(b: &mut Builder, head_dim: usize, dual: bool, lambda_init: f32) -> Result<f32> {
    let (l1, l2) = if dual {
        let a = b.read("lambda_a", &[], Init::Zeros)?;
        let c = b.read("lambda_b", &[], Init::Zeros)?;
        (a[0].exp(), c[0].exp())
    } else {
        let mut dot = |q: &str, k: &str| -> Result<f32> {
            let q = b.read(q, &[head_dim], Init::Normal(0.1))?;
            let k = b.read(k, &[head_dim], Init::Normal(0.1))?;
            Ok(q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>().exp())
        };
        (
            dot("lambda_q1", "lambda_k1")?,
            dot("lambda_q2", "lambda_k2")?,
        )
    };
    Ok(l1 - l2 + lambda_init)
}

/// timm's `DiffAttention` lambda_init for the block at `depth`: `0.8 − 0.6·exp(−0.3·depth)`.
pub fn diff_lambda_init(depth: usize) -> f32 {
    (0.8 - 0.6 * (-0.3 * depth as f64).exp()) as f32
}

/// Differential attention of projected `q`, `k`, `v` (`[N, L, dim]` each, `heads` heads of
/// `2·head_dim`): q and k split into `2·heads` heads of `head_dim` (`q_norm` / `k_norm` in the
/// current scope over them when `qk_norm`), `softmax(q1·k1ᵀ) − λ·softmax(q2·k2ᵀ)` applied to v,
/// then `sub_norm` (RmsNorm eps 1e-5 over `2·head_dim`) scaled by `1 − lambda_init`;
/// returns `[N, L, dim]`.
#[allow(clippy::too_many_arguments)]
pub fn diff_attention_core(
    b: &mut Builder,
    q: &Value,
    k: &Value,
    v: &Value,
    heads: usize,
    head_dim: usize,
    qk_norm: Option<Norm>,
    lambda_full: f32,
    lambda_init: f32,
) -> Result<Value> {
    let (h, hd) = (heads as i64, head_dim as i64);
    let view = |b: &mut Builder, t: &Value, n: i64, d: i64| {
        let t = reshape(b, t, &[0, 0, n, d]);
        transpose(b, &t, &[0, 2, 1, 3])
    };
    let mut q = view(b, q, 2 * h, hd);
    let mut k = view(b, k, 2 * h, hd);
    let v = view(b, v, h, 2 * hd);
    if let Some(n) = &qk_norm {
        q = n.apply_last(&mut b.scope("q_norm"), &q, head_dim)?;
        k = n.apply_last(&mut b.scope("k_norm"), &k, head_dim)?;
    }
    let q = super::scale(b, &q, (head_dim as f32).powf(-0.5));
    let kt = transpose(b, &k, &[0, 1, 3, 2]);
    let logits = b.op("MatMul", &[&q, &kt], vec![]);
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    // [N, 2H, L, L] -> [N, H, 2, L, L]: heads 2h and 2h+1 are the pair.
    let shape = b.op("Shape", &[&p], vec![("start", Attr::Int(2))]);
    let nh = b.ints(&[0, h, 2]);
    let shape = super::concat(b, &[&nh, &shape], 0);
    let p = b.op("Reshape", &[&p, &shape], vec![]);
    let parts = super::split(b, &p, 2, &[1, 1]);
    let lam = b.scalar(lambda_full);
    let p2 = b.op("Mul", &[&parts[1], &lam], vec![]);
    let p = b.op("Sub", &[&parts[0], &p2], vec![]);
    let axis = b.ints(&[2]);
    let p = b.op("Squeeze", &[&p, &axis], vec![]);
    let y = b.op("MatMul", &[&p, &v], vec![]);
    let y = super::rms_norm(&mut b.scope("sub_norm"), &y, 2 * head_dim, 1e-5)?;
    let y = super::scale(b, &y, 1.0 - lambda_init);
    let y = transpose(b, &y, &[0, 2, 1, 3]);
    Ok(reshape(b, &y, &[0, 0, 2 * h * hd]))
}

/// timm's `DiffAttention` on `[N, L, dim]` (`qkv`, `proj`, the lambdas, `sub_norm` and the
/// optional `q_norm`, `k_norm`, `norm` in the current scope), for the block at `depth`.
pub fn diff_attention(
    b: &mut Builder,
    x: &Value,
    c: &AttnCfg,
    depth: usize,
    dual_lambda: bool,
) -> Result<Value> {
    let dim = c.dim;
    let hd = dim / c.heads.max(1) / 2;
    let qkv = linear(&mut b.scope("qkv"), x, dim, 3 * dim, c.qkv_bias, c.init)?;
    let parts = super::split(b, &qkv, -1, &[dim; 3]);
    let init = diff_lambda_init(depth);
    let lambda = diff_lambda(b, hd, dual_lambda, init)?;
    let y = diff_attention_core(
        b, &parts[0], &parts[1], &parts[2], c.heads, hd, c.qk_norm, lambda, init,
    )?;
    let y = match &c.attn_norm {
        Some(n) => n.apply_last(&mut b.scope("norm"), &y, dim)?,
        None => y,
    };
    linear(&mut b.scope("proj"), &y, dim, dim, c.proj_bias, c.init)
}

/// Cosine attention's `F.normalize(t, dim=-1)` (Swin v2) of each head of `t` `[N, L, heads·hd]` (`t / max(‖t‖, 1e-12)`),
/// times a per-head `scale` `[heads, 1]` when given; returns `[N, L, heads·hd]`.
pub fn normalize_heads(
    b: &mut Builder,
    t: &Value,
    heads: usize,
    hd: usize,
    scale: Option<&Value>,
) -> Value {
    let t = reshape(b, t, &[0, 0, heads as i64, hd as i64]);
    let axes = b.ints(&[-1]);
    let norm = b.op("ReduceL2", &[&t, &axes], vec![("keepdims", Attr::Int(1))]);
    let eps = b.scalar(1e-12);
    let norm = b.op("Max", &[&norm, &eps], vec![]);
    let mut y = b.op("Div", &[&t, &norm], vec![]);
    if let Some(s) = scale {
        y = super::mul(b, &y, s);
    }
    reshape(b, &y, &[0, 0, (heads * hd) as i64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::budget::Budget;
    use crate::graph::builder::ParamSource;
    use crate::graph::rng::Rng;
    use crate::graph::Request;

    fn ops_of_attention(bias: impl Fn(&mut Builder) -> Value) -> Vec<String> {
        let mut b = Builder::new(
            ParamSource::Random(Rng::new(0)),
            [Some(3), Some(8), Some(8)],
            Request::default(),
            Budget::new(u64::MAX, (8, 8)),
        );
        let x = b.input();
        let bias = bias(&mut b);
        let hooks = Hooks {
            bias: Some(bias),
            rope: None,
        };
        attention(&mut b, &x, &AttnCfg::new(8, 2), &hooks).unwrap();
        b.nodes.iter().map(|n| n.op.clone()).collect()
    }

    #[test]
    fn a_bias_computed_at_load_runs_in_one_fused_attention_node() {
        let ops = ops_of_attention(|b| b.const_f32(vec![0.0; 2 * 16], &[1, 2, 4, 4]));
        assert!(ops.contains(&"Attention".to_string()), "{ops:?}");
        assert!(!ops.contains(&"Softmax".to_string()), "{ops:?}");
    }

    #[test]
    fn a_bias_the_graph_computes_keeps_the_explicit_softmax() {
        // A per-window bias ([windows, H, L, L]) or one made by graph nodes cannot broadcast
        // over ORT's batch as `attention_bias` must.
        for per_window in [true, false] {
            let ops = ops_of_attention(|b| {
                let c = b.const_f32(vec![0.0; 4 * 2 * 16], &[4, 2, 4, 4]);
                if per_window {
                    c
                } else {
                    b.op("Neg", &[&c], vec![])
                }
            });
            assert!(ops.contains(&"Softmax".to_string()), "{ops:?}");
            assert!(!ops.iter().any(|o| o.contains("Attention")), "{ops:?}");
        }
    }
}
