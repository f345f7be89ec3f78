//! timm's `Attention`: fused or split q/k/v projections, optional q/k norms, and hooks where the
//! transformer families plug in their relative-position bias or rotary embedding. Without hooks
//! it runs as ONNX Runtime's fused `Attention` / `MultiHeadAttention` kernels.

use super::mlp::linear;
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
    /// Applied to q and k as `[N, H, L, head_dim]` (rotary position embedding).
    #[allow(clippy::type_complexity)]
    pub rope: Option<&'a dyn Fn(&mut Builder, &Value) -> Result<Value>>,
}

impl Hooks<'_> {
    fn none(&self) -> bool {
        self.bias.is_none() && self.rope.is_none()
    }
}

/// timm's `Attention` on `[N, L, dim]` with `qkv` / `proj` (and `q_norm`, `k_norm`, `norm`) in
/// the current scope.
pub fn attention(b: &mut Builder, x: &Value, c: &AttnCfg, hooks: &Hooks) -> Result<Value> {
    let inner = c.inner_dim();
    let y = if hooks.none() && c.qk_norm.is_none() && c.scale.is_none() {
        // One fused node: the weight is qkv.weight transposed ([D, 3D], q | k | v with heads
        // contiguous, the order of timm's reshape to (3, H, hd)).
        let w = b.param("qkv.weight", &[3 * inner, c.dim], c.init)?;
        let wt = transpose(b, &w, &[1, 0]);
        let bias = if c.qkv_bias {
            b.param("qkv.bias", &[3 * inner], Init::Zeros)?
        } else {
            b.const_f32(vec![0.0; 3 * inner], &[3 * inner as i64])
        };
        b.ms_op(
            "Attention",
            &[x, &wt, &bias],
            vec![("num_heads", Attr::Int(c.heads as i64))],
        )
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
    if hooks.none() && c.scale.is_none() {
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
        return Ok(b.ms_op(
            "MultiHeadAttention",
            &[&q, &k, v],
            vec![("num_heads", Attr::Int(heads))],
        ));
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
    if let Some(rope) = hooks.rope {
        q = rope(b, &q)?;
        k = rope(b, &k)?;
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
