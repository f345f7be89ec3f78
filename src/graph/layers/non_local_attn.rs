//! timm's `BatNonLocalAttn` (`timm.layers.non_local_attn`): the bilinear attention transform of
//! BAT. A reduced map is pooled into a row and a column context, each turned into a
//! `block_size × block_size` row-stochastic matrix per channel group, and the map is multiplied
//! by them on both sides: `kron(P, I_t) · x · kron(Q, I_t)` with `t = H / block_size`.
//!
//! timm builds the Kronecker products with `torch.eye(t)`; here the map is reshaped into block
//! rows and columns instead, so no product with zeros is computed. The products sum the same
//! nonzero terms. The graph takes one input size: a map of partial blocks would reshape without
//! an error into wrong blocks, so other sizes are refused (a graph is built per `input_size`).

use super::{act, conv2d, conv_norm_act, make_divisible, reshape, transpose, Conv, Norm};
use crate::error::{Error, Result};
use crate::graph::{Attr, Builder, Init, Value};

/// timm's defaults: `BatchNorm2d` and `ReLU` (byobnet passes only `attn_kwargs`).
const BN: Norm = Norm::Batch { eps: 1e-5 };
const ACT: &str = "relu";

/// `BatNonLocalAttn`'s arguments, resolved for its input channels.
#[derive(Debug, Clone, Copy)]
pub struct BatCfg {
    pub channels: usize,
    pub rd_channels: usize,
    pub block_size: usize,
    pub groups: usize,
}

impl BatCfg {
    /// `rd_channels or make_divisible(channels * rd_ratio, rd_divisor)`, as timm.
    pub fn new(
        channels: usize,
        block_size: usize,
        groups: usize,
        rd_ratio: f64,
        rd_channels: Option<usize>,
        rd_divisor: usize,
    ) -> Result<Self> {
        let rd_channels = rd_channels
            .filter(|&c| c > 0)
            .unwrap_or_else(|| make_divisible(channels as f64 * rd_ratio, rd_divisor, 0.9));
        if block_size == 0 || groups == 0 || !rd_channels.is_multiple_of(groups) {
            return Err(Error::invalid_model(format!(
                "BatNonLocalAttn: {rd_channels} channels, {groups} groups and block size \
                 {block_size} do not fit"
            )));
        }
        Ok(BatCfg {
            channels,
            rd_channels,
            block_size,
            groups,
        })
    }
}

/// timm asserts the map is made of whole blocks; say so before ONNX Runtime does.
fn check_blocks(b: &Builder, x: &Value, block_size: usize) -> Result<()> {
    let (h, w) = b.nominal_hw();
    let Some((Some(fh), Some(fw))) = b.spatial(x).map(|s| (s.eval(h), s.eval(w))) else {
        return Ok(());
    };
    if fh % block_size != 0 || fw % block_size != 0 {
        return Err(Error::invalid_argument(format!(
            "BatNonLocalAttn takes maps made of {block_size}x{block_size} blocks, but a {h}x{w} \
             input gives {fh}x{fw}; use an input_size whose maps are whole blocks at every \
             stage (the model's default size is)"
        )));
    }
    Ok(())
}

/// `BatNonLocalAttn` on an NCHW map (`conv1`, `ba`, `conv2` in the current scope), residual
/// included. Its dropout is the identity at inference.
pub fn bat_non_local_attn(b: &mut Builder, x: &Value, c: &BatCfg) -> Result<Value> {
    check_blocks(b, x, c.block_size)?;
    b.fix_input_size();
    let rd = c.rd_channels;
    let xl = conv_norm_act(
        &mut b.scope("conv1"),
        x,
        Conv::new(c.channels, rd, 1),
        &BN,
        Some(ACT),
    )?;
    let y = bilinear_attn_transform(&mut b.scope("ba"), &xl, c)?;
    let y = conv_norm_act(
        &mut b.scope("conv2"),
        &y,
        Conv::new(rd, c.channels, 1),
        &BN,
        Some(ACT),
    )?;
    let out = b.op("Add", &[&y, x], vec![]);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&out, s);
    }
    Ok(out)
}

/// `BilinearAttnTransform(rd_channels, block_size, groups)` on `x` `[N, C, H, W]`.
fn bilinear_attn_transform(b: &mut Builder, x: &Value, c: &BatCfg) -> Result<Value> {
    let (ch, g, bs) = (c.rd_channels, c.groups, c.block_size);
    let (g_, bs_) = (g as i64, bs as i64);
    let out = conv_norm_act(
        &mut b.scope("conv1"),
        x,
        Conv::new(ch, g, 1),
        &BN,
        Some(ACT),
    )?;
    // adaptive_max_pool2d to (bs, 1) and (1, bs) on whole blocks: row block i is the
    // contiguous run of t rows, column block j the t columns of every row.
    let rows = reshape(b, &out, &[0, g_, bs_, -1]);
    let rp = reduce_max(b, &rows, &[3], true); // [N, g, bs, 1]
    let cols = reshape(b, &out, &[0, g_, 0, bs_, -1]);
    let cp = reduce_max(b, &cols, &[2, 4], false); // [N, g, bs]
    let cp = reshape(b, &cp, &[0, g_, 1, bs_]);

    let p = conv2d(
        &mut b.scope("conv_p"),
        &rp,
        Conv::new(g, bs * bs * g, 1)
            .kernel2(bs, 1)
            .bias(true)
            .init(Init::KaimingFanOut),
    )?;
    let q = conv2d(
        &mut b.scope("conv_q"),
        &cp,
        Conv::new(g, bs * bs * g, 1)
            .kernel2(1, bs)
            .bias(true)
            .init(Init::KaimingFanOut),
    )?;
    let p = reshape(b, &p, &[0, g_, bs_, bs_]);
    let q = reshape(b, &q, &[0, g_, bs_, bs_]);
    let p = act(b, "sigmoid", &p)?;
    let q = act(b, "sigmoid", &q)?;
    let p = normalise(b, &p, 3);
    let q = normalise(b, &q, 2);
    // The group's matrices for each of its C / g channels: [N, C, bs, bs].
    let p = per_channel(b, &p, ch, g, bs);
    let q = per_channel(b, &q, ch, g, bs);

    // kron(P, I_t) · x: row block j of x is rows j·t .. j·t + t - 1, a [t · W] run.
    let ch_ = ch as i64;
    let shape = b.op("Shape", &[x], vec![]);
    let xr = reshape(b, x, &[0, ch_, bs_, -1]);
    let y = b.op("MatMul", &[&p, &xr], vec![]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    // · kron(Q, I_t): column i·t + a takes Σ_j Q[j, i] · column j·t + a, so per row the
    // [bs, t] blocks are multiplied by Qᵀ from the left.
    let yr = reshape(b, &y, &[0, 0, 0, bs_, -1]); // [N, C, H, bs, t]
    let qt = transpose(b, &q, &[0, 1, 3, 2]);
    let qt = reshape(b, &qt, &[0, ch_, 1, bs_, bs_]);
    let y = b.op("MatMul", &[&qt, &yr], vec![]);
    let y = reshape(b, &y, &[0, 0, 0, -1]);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&y, s);
    }
    conv_norm_act(
        &mut b.scope("conv2"),
        &y,
        Conv::new(ch, ch, 1),
        &BN,
        Some(ACT),
    )
}

fn reduce_max(b: &mut Builder, x: &Value, axes: &[i64], keep: bool) -> Value {
    let a = b.ints(axes);
    b.op(
        "ReduceMax",
        &[x, &a],
        vec![("keepdims", Attr::Int(keep as i64))],
    )
}

/// `p / p.sum(dim=axis, keepdim=True)`.
fn normalise(b: &mut Builder, p: &Value, axis: i64) -> Value {
    let a = b.ints(&[axis]);
    let s = b.op("ReduceSum", &[p, &a], vec![("keepdims", Attr::Int(1))]);
    b.op("Div", &[p, &s], vec![])
}

/// `[N, g, bs, bs]` expanded over the group's channels to `[N, C, bs, bs]`, as timm's
/// `expand(...).contiguous().view(B, C, bs, bs)`.
fn per_channel(b: &mut Builder, m: &Value, ch: usize, g: usize, bs: usize) -> Value {
    let (g_, bs_) = (g as i64, bs as i64);
    let m5 = reshape(b, m, &[0, g_, 1, bs_, bs_]);
    let to = b.ints(&[1, g_, (ch / g) as i64, bs_, bs_]);
    let e = b.op("Expand", &[&m5, &to], vec![]);
    reshape(b, &e, &[0, ch as i64, bs_, bs_])
}
