//! MViTv2 (timm's `mvitv2.py`): `mvitv2_tiny` .. `mvitv2_huge_cls`.
//!
//! A 7×7 stride-4 patch embedding, an optional class token, then stages of multi-scale blocks:
//! pooling attention (q, k and v each pooled per head by a depthwise conv, or a max / average
//! pool, then normed), decomposed spatial relative positions added to the logits, the pooled q
//! added back (`residual_pooling`), a max-pooled (and, when the width changes, projected)
//! shortcut, and an MLP. Final LayerNorm, average or class-token pooling, Linear head.
//!
//! timm's entrypoints pass a `MultiScaleVitCfg` (the generated table); widths, head counts, MLP
//! widths and depths are read from the weights when there are weights, strides and kernels come
//! from the cfg. The relative-position tables are gathered for the built input size at load.
//! Feature maps: every stage (`block.<i>` as timm names them), the class token dropped.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::expand_batch;
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::{
    add, concat, conv2d, layer_norm, reduce_mean, reshape, scale, slice, split, transpose, Conv,
    Pad,
};
use crate::graph::spatial::{Spatial, Step};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/mvitv2.json"));

pub const FAMILY: Family = Family {
    name: "mvitv2",
    examples: "mvitv2_tiny/small/base/large, mvitv2_small/base/large/huge_cls",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `MultiScaleVitCfg` (after `__post_init__`) and `MultiScaleVit.__init__`'s arguments.
    struct MvitArgs {
        depths: Vec<usize> = vec![2, 3, 16, 3],
        embed_dim: Vec<usize> = vec![96, 192, 384, 768],
        num_heads: Vec<usize> = vec![1, 2, 4, 8],
        mlp_ratio: f64 = 4.0,
        pool_first: bool = false,
        expand_attn: bool = true,
        qkv_bias: bool = true,
        use_cls_token: bool = false,
        use_abs_pos: bool = false,
        residual_pooling: bool = true,
        mode: String = "conv".into(),
        kernel_qkv: Vec<usize> = vec![3, 3],
        stride_q: Vec<Vec<usize>> = vec![vec![1, 1], vec![2, 2], vec![2, 2], vec![2, 2]],
        stride_kv: Vec<Vec<usize>> = vec![vec![4, 4], vec![2, 2], vec![1, 1], vec![1, 1]],
        stride_kv_adaptive: Option<Vec<usize>> = Some(vec![4, 4]),
        patch_kernel: Vec<usize> = vec![7, 7],
        patch_stride: Vec<usize> = vec![4, 4],
        patch_padding: Vec<usize> = vec![3, 3],
        pool_type: String = "max".into(),
        rel_pos_type: String = "spatial".into(),
        act_layer: String = "gelu".into(),
        norm_layer: String = "layernorm".into(),
        norm_eps: f64 = 1e-6,
        img_size: serde_json::Value = serde_json::Value::from(224),
        in_chans: usize = 3,
        global_pool: Option<String> = None,
    }
}

/// timm's `_init_weights`: Linear trunc_normal(0.02).
const INIT: Init = Init::TruncNormal(0.02);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Conv,
    Max,
    Avg,
}

struct Mvit {
    depths: Vec<usize>,
    dims: Vec<usize>,
    heads: Vec<usize>,
    mlp_ratio: f64,
    expand_attn: bool,
    qkv_bias: bool,
    cls: bool,
    abs_pos: bool,
    residual_pooling: bool,
    mode: Mode,
    kernel: (usize, usize),
    stride_q: Vec<(usize, usize)>,
    stride_kv: Vec<(usize, usize)>,
    patch: [(usize, usize); 3],
    rel_pos: bool,
    eps: f32,
    avg: bool,
}

/// One block's widths (from the weights when there are weights).
struct BlockDims {
    dim: usize,
    att: usize,
    out: usize,
    heads: usize,
    hidden: usize,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let (ih, iw) = b.image_size();
    let [(kh, kw), (sh, sw), (ph, pw)] = m.patch;
    let grid_size =
        |n: usize, k: usize, s: usize, p: usize| (n + 2 * p).checked_sub(k).map(|v| v / s + 1);
    let (Some(gh), Some(gw)) = (grid_size(ih, kh, sh, ph), grid_size(iw, kw, sw, pw)) else {
        return Err(Error::invalid_argument(
            "the input is too small for this MViTv2 model",
        ));
    };
    let mut dim = m.dims[0];
    if let Some(s) = b.weight_shape("patch_embed.proj.weight") {
        dim = s[0];
    }
    let input = b.input();
    let conv = Conv::new(in_ch, dim, kh)
        .kernel2(kh, kw)
        .stride(sh)
        .pad(Pad::Explicit(ph, pw, ph, pw))
        .bias(true)
        .init(Init::DefaultUniform);
    let grid = conv2d(&mut b.scope("patch_embed.proj"), &input, conv)?;
    let mut x = crate::graph::layers::nchw_to_tokens(b, &grid, dim);
    let mut spatial = b.spatial(&grid).cloned().unwrap_or_else(Spatial::input);
    if m.cls {
        let cls = b.param("cls_token", &[1, 1, dim], Init::TruncNormal(0.02))?;
        let cls = expand_batch(b, &cls, &x, 1, dim);
        x = concat(b, &[&cls, &x], 1);
    }
    if m.abs_pos {
        let n = gh * gw + m.cls as usize;
        let pos = b.param("pos_embed", &[1, n, dim], Init::TruncNormal(0.02))?;
        x = add(b, &x, &pos);
    }
    let mut hw = (gh, gw);
    let mut reduction = sh.max(sw);
    let n_stages = m.depths.len();
    for i in 0..n_stages {
        let mut depth = m.depths[i];
        if b.weights().is_some() {
            let st = &mut b.scope(format!("stages.{i}.blocks"));
            depth = (0..).take_while(|&j| st.has_module(&j.to_string())).count();
        }
        let dim_out = if m.expand_attn {
            m.dims[i]
        } else {
            m.dims[(i + 1).min(n_stages - 1)]
        };
        for j in 0..depth {
            let s = &mut b.scope(format!("stages.{i}.blocks.{j}"));
            let out = if m.expand_attn || j + 1 == depth {
                dim_out
            } else {
                dim
            };
            let d = block_dims(s, dim, out, m.heads[i], &m)?;
            let stride_q = if j == 0 { m.stride_q[i] } else { (1, 1) };
            let (y, new_hw) = block(s, &x, &d, hw, stride_q, m.stride_kv[i], &m)?;
            x = y;
            if new_hw != hw {
                spatial = spatial.then(Step::Window {
                    k: m.kernel.0,
                    stride: stride_q.0,
                    pad: 2 * (m.kernel.0 / 2),
                    dilation: 1,
                    ceil: false,
                });
            }
            hw = new_hw;
            dim = d.out;
        }
        reduction *= m.stride_q[i].0.max(m.stride_q[i].1);
        let map = to_map(b, &x, dim, hw, m.cls);
        b.assign_spatial(&map, spatial.clone());
        b.feature(&map, dim, reduction, &format!("block.{i}"));
    }
    if b.output() == OutputKind::FeatureMaps {
        let map = to_map(b, &x, dim, hw, m.cls);
        b.assign_spatial(&map, spatial);
        return Ok((map, dim));
    }
    let y = layer_norm(&mut b.scope("norm"), &x, dim, m.eps)?;
    let pooled = if m.avg {
        let t = slice(b, &y, 1, m.cls as i64, i64::MAX);
        reduce_mean(b, &t, &[1], false)
    } else {
        let t = slice(b, &y, 1, 0, 1);
        reshape(b, &t, &[0, dim as i64])
    };
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, dim));
    }
    let logits = linear_2d(
        &mut b.scope("head.fc"),
        &pooled,
        dim,
        cfg.num_classes,
        true,
        INIT,
    )?;
    Ok((logits, cfg.num_classes))
}

/// Tokens `[N, (1 +) H·W, C]` as the NCHW map `forward_intermediates` returns.
fn to_map(b: &mut Builder, x: &Value, c: usize, hw: (usize, usize), cls: bool) -> Value {
    let t = if cls {
        slice(b, x, 1, 1, i64::MAX)
    } else {
        x.clone()
    };
    let t = reshape(b, &t, &[0, hw.0 as i64, hw.1 as i64, c as i64]);
    transpose(b, &t, &[0, 3, 1, 2])
}

fn block_dims(
    b: &mut Builder,
    dim: usize,
    out: usize,
    heads: usize,
    m: &Mvit,
) -> Result<BlockDims> {
    let mut d = BlockDims {
        dim,
        att: if m.expand_attn { out } else { dim },
        out,
        heads,
        hidden: 0,
    };
    if let Some(s) = b.weight_shape("attn.proj.weight") {
        d.att = s[0];
    }
    if let Some(s) = b.weight_shape("mlp.fc2.weight") {
        d.out = s[0];
    }
    d.hidden = (d.att as f64 * m.mlp_ratio) as usize;
    if let Some(s) = b.weight_shape("mlp.fc1.weight") {
        d.hidden = s[0];
    }
    if let Some(s) = b.weight_shape("attn.rel_pos_h") {
        if s[1] > 0 && d.att.is_multiple_of(s[1]) {
            d.heads = d.att / s[1];
        }
    }
    if d.heads == 0 || !d.att.is_multiple_of(d.heads) {
        return Err(Error::invalid_model(format!(
            "MViTv2 block `{}`: {} attention channels over {} heads",
            b.key(""),
            d.att,
            d.heads
        )));
    }
    Ok(d)
}

/// `MultiScaleBlock`: returns the tokens and the new grid.
fn block(
    b: &mut Builder,
    x: &Value,
    d: &BlockDims,
    hw: (usize, usize),
    stride_q: (usize, usize),
    stride_kv: (usize, usize),
    m: &Mvit,
) -> Result<(Value, (usize, usize))> {
    let xn = layer_norm(&mut b.scope("norm1"), x, d.dim, m.eps)?;
    let proj_needed = d.dim != d.out;
    let mut short = if proj_needed && m.expand_attn {
        linear(
            &mut b.scope("shortcut_proj_attn"),
            &xn,
            d.dim,
            d.out,
            true,
            INIT,
        )?
    } else {
        x.clone()
    };
    let short_ch = if proj_needed && m.expand_attn {
        d.out
    } else {
        d.dim
    };
    if stride_q.0 * stride_q.1 > 1 {
        // MaxPool2d(stride + 1, stride, (stride + 1) // 2) over the image tokens
        if stride_q.0 != stride_q.1 {
            return Err(Error::unsupported(
                "MViTv2 with non-square q strides is not built natively",
            ));
        }
        let s = stride_q.0;
        let k = if s > 1 { s + 1 } else { s };
        short = on_image_tokens(b, &short, short_ch, hw, m.cls, |b, img| {
            Pool2d::new(k, s, k / 2).max(b, img, short_ch)
        })?;
    }
    let (y, new_hw) = attention(&mut b.scope("attn"), &xn, d, hw, stride_q, stride_kv, m)?;
    let x = add(b, &short, &y);
    let xn = layer_norm(&mut b.scope("norm2"), &x, d.att, m.eps)?;
    let short = if proj_needed && !m.expand_attn {
        linear(
            &mut b.scope("shortcut_proj_mlp"),
            &xn,
            d.dim,
            d.out,
            true,
            INIT,
        )?
    } else {
        x
    };
    let c = MlpCfg::new(d.att, d.hidden, "gelu").out(d.out);
    let y = mlp(&mut b.scope("mlp"), &xn, &c)?;
    Ok((add(b, &short, &y), new_hw))
}

/// Applies `f` to the image tokens of `[N, (1 +) H·W, C]` as `[N, C, H, W]`, the class token kept.
fn on_image_tokens(
    b: &mut Builder,
    x: &Value,
    c: usize,
    hw: (usize, usize),
    cls: bool,
    f: impl FnOnce(&mut Builder, &Value) -> Result<Value>,
) -> Result<Value> {
    let (tok, img) = if cls {
        (Some(slice(b, x, 1, 0, 1)), slice(b, x, 1, 1, i64::MAX))
    } else {
        (None, x.clone())
    };
    let img = reshape(b, &img, &[0, hw.0 as i64, hw.1 as i64, c as i64]);
    let img = transpose(b, &img, &[0, 3, 1, 2]);
    let y = f(b, &img)?;
    let y = reshape(b, &y, &[0, c as i64, -1]);
    let y = transpose(b, &y, &[0, 2, 1]);
    Ok(match tok {
        Some(t) => concat(b, &[&t, &y], 1),
        None => y,
    })
}

/// Output size of a pool / conv of kernel `k`, stride `s`, padding `k / 2`.
fn pooled(n: usize, k: usize, s: usize) -> usize {
    (n + 2 * (k / 2) - k) / s + 1
}

/// `MultiScaleAttention` (`qkv`, `pool_*`, `norm_*`, `rel_pos_h/w`, `proj`).
fn attention(
    b: &mut Builder,
    x: &Value,
    d: &BlockDims,
    hw: (usize, usize),
    stride_q: (usize, usize),
    stride_kv: (usize, usize),
    m: &Mvit,
) -> Result<(Value, (usize, usize))> {
    let (h, hd) = (d.heads, d.att / d.heads);
    let qkv = linear(&mut b.scope("qkv"), x, d.dim, 3 * d.att, m.qkv_bias, INIT)?;
    let parts = split(b, &qkv, 2, &[d.att, d.att, d.att]);
    let heads = |b: &mut Builder, t: &Value| {
        let t = reshape(b, t, &[0, 0, h as i64, hd as i64]);
        transpose(b, &t, &[0, 2, 1, 3])
    };
    let (k1, k2) = m.kernel;
    let pool_of = |s: (usize, usize)| k1 * k2 > 1 || s.0 * s.1 > 1;
    let mut out = Vec::with_capacity(3);
    let mut sizes = Vec::with_capacity(3);
    for (t, name, s) in [
        (&parts[0], "q", stride_q),
        (&parts[1], "k", stride_kv),
        (&parts[2], "v", stride_kv),
    ] {
        let t = heads(b, t);
        if !pool_of(s) {
            out.push(t);
            sizes.push(hw);
            continue;
        }
        let new = (pooled(hw.0, k1, s.0), pooled(hw.1, k2, s.1));
        let y = pool_heads(b, &t, name, hd, h, hw, new, s, m)?;
        let y = if m.mode == Mode::Conv {
            layer_norm(&mut b.scope(format!("norm_{name}")), &y, hd, m.eps)?
        } else {
            y
        };
        out.push(y);
        sizes.push(new);
    }
    let (q, k, v) = (&out[0], &out[1], &out[2]);
    let (q_size, k_size) = (sizes[0], sizes[1]);
    let qs = scale(b, q, (hd as f32).powf(-0.5));
    let kt = transpose(b, k, &[0, 1, 3, 2]);
    let mut logits = b.op("MatMul", &[&qs, &kt], vec![]);
    if m.rel_pos {
        let bias = rel_pos_bias(b, q, hd, h, q_size, k_size, m.cls)?;
        logits = add(b, &logits, &bias);
    }
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let mut y = b.op("MatMul", &[&p, v], vec![]);
    if m.residual_pooling {
        y = add(b, &y, q);
    }
    let y = transpose(b, &y, &[0, 2, 1, 3]);
    let y = reshape(b, &y, &[0, 0, d.att as i64]);
    let y = linear(&mut b.scope("proj"), &y, d.att, d.att, true, INIT)?;
    Ok((y, q_size))
}

/// `reshape_pre_pool` → `pool_<name>` → `reshape_post_pool`: `[N, h, (1 +) H·W, hd]` pooled per
/// head (the heads folded into the batch, one depthwise conv or pool shared by them).
#[allow(clippy::too_many_arguments)]
fn pool_heads(
    b: &mut Builder,
    t: &Value,
    name: &str,
    hd: usize,
    heads: usize,
    hw: (usize, usize),
    new: (usize, usize),
    s: (usize, usize),
    m: &Mvit,
) -> Result<Value> {
    let (tok, img) = if m.cls {
        (Some(slice(b, t, 2, 0, 1)), slice(b, t, 2, 1, i64::MAX))
    } else {
        (None, t.clone())
    };
    let img = reshape(b, &img, &[-1, hw.0 as i64, hw.1 as i64, hd as i64]);
    let img = transpose(b, &img, &[0, 3, 1, 2]);
    let (k1, k2) = m.kernel;
    let pads = vec![
        (k1 / 2) as i64,
        (k2 / 2) as i64,
        (k1 / 2) as i64,
        (k2 / 2) as i64,
    ];
    let mut attrs = vec![
        ("kernel_shape", Attr::Ints(vec![k1 as i64, k2 as i64])),
        ("strides", Attr::Ints(vec![s.0 as i64, s.1 as i64])),
        ("pads", Attr::Ints(pads)),
    ];
    let y = match m.mode {
        Mode::Conv => {
            let w = b.param(
                &format!("pool_{name}.weight"),
                &[hd, 1, k1, k2],
                Init::DefaultUniform,
            )?;
            attrs.push(("group", Attr::Int(hd as i64)));
            b.op("Conv", &[&img, &w], attrs)
        }
        Mode::Max => b.op("MaxPool", &[&img], attrs),
        Mode::Avg => {
            attrs.push(("count_include_pad", Attr::Int(1)));
            b.op("AveragePool", &[&img], attrs)
        }
    };
    let y = reshape(
        b,
        &y,
        &[-1, heads as i64, hd as i64, (new.0 * new.1) as i64],
    );
    let y = transpose(b, &y, &[0, 1, 3, 2]);
    Ok(match tok {
        Some(tk) => concat(b, &[&tk, &y], 2),
        None => y,
    })
}

/// `cal_rel_pos_type`: `q · Rh` over the key rows plus `q · Rw` over the key columns, with the
/// tables `rel_pos_h[dist_h]`, `rel_pos_w[dist_w]` gathered at load; zero for the class token.
fn rel_pos_bias(
    b: &mut Builder,
    q: &Value,
    hd: usize,
    heads: usize,
    q_size: (usize, usize),
    k_size: (usize, usize),
    cls: bool,
) -> Result<Value> {
    let table = |b: &mut Builder, name: &str, qn: usize, kn: usize| -> Result<Value> {
        let shape = b
            .weight_shape(name)
            .unwrap_or_else(|| vec![2 * qn.max(kn) - 1, hd]);
        let len = shape[0];
        let data = b.read(name, &[len, hd], Init::TruncNormal(0.02))?;
        let q_ratio = (kn as f64 / qn as f64).max(1.0);
        let k_ratio = (qn as f64 / kn as f64).max(1.0);
        let mut out = Vec::with_capacity(qn * kn * hd);
        for i in 0..qn {
            for j in 0..kn {
                let dist = i as f64 * q_ratio - j as f64 * k_ratio + (kn - 1) as f64 * k_ratio;
                let idx = dist as usize;
                if idx >= len {
                    return Err(Error::invalid_argument(format!(
                        "MViTv2 `{}` has {len} relative positions, too few for a {qn}x{kn} attention: build at the model's input size",
                        b.key(name)
                    )));
                }
                out.extend_from_slice(&data[idx * hd..(idx + 1) * hd]);
            }
        }
        // [q, hd, k] for the batched MatMul
        let mut t = vec![0f32; qn * kn * hd];
        for i in 0..qn {
            for j in 0..kn {
                for c in 0..hd {
                    t[(i * hd + c) * kn + j] = out[(i * kn + j) * hd + c];
                }
            }
        }
        b.tensor(name, t, &[qn, hd, kn])
    };
    let (qh, qw) = q_size;
    let (kh, kw) = k_size;
    let rh = table(b, "rel_pos_h", qh, kh)?;
    let rw = table(b, "rel_pos_w", qw, kw)?;
    let r_q = if cls {
        slice(b, q, 2, 1, i64::MAX)
    } else {
        q.clone()
    };
    let r_q = reshape(b, &r_q, &[0, heads as i64, qh as i64, qw as i64, hd as i64]);
    // [N, h, qh, qw, hd] @ [qh, hd, kh] -> [N, h, qh, qw, kh]
    let rel_h = b.op("MatMul", &[&r_q, &rh], vec![]);
    // [N, h, qw, qh, hd] @ [qw, hd, kw] -> [N, h, qw, qh, kw] -> [N, h, qh, qw, kw]
    let r_t = transpose(b, &r_q, &[0, 1, 3, 2, 4]);
    let rel_w = b.op("MatMul", &[&r_t, &rw], vec![]);
    let rel_w = transpose(b, &rel_w, &[0, 1, 3, 2, 4]);
    let rel_h = reshape(
        b,
        &rel_h,
        &[0, heads as i64, qh as i64, qw as i64, kh as i64, 1],
    );
    let rel_w = reshape(
        b,
        &rel_w,
        &[0, heads as i64, qh as i64, qw as i64, 1, kw as i64],
    );
    let bias = add(b, &rel_h, &rel_w);
    let bias = reshape(
        b,
        &bias,
        &[0, heads as i64, (qh * qw) as i64, (kh * kw) as i64],
    );
    Ok(if cls {
        let pads = b.const_i64(vec![0, 0, 1, 1, 0, 0, 0, 0], &[8]);
        b.op("Pad", &[&bias, &pads], vec![])
    } else {
        bias
    })
}

// ---------------------------------------------------------------------------------------------
// the architecture: table and model_args

fn pair(v: &[usize], what: &str) -> Result<(usize, usize)> {
    match v {
        [a, b] if *a > 0 && *b > 0 => Ok((*a, *b)),
        _ => Err(Error::invalid_model(format!(
            "MViTv2 {what} {v:?}: two positive values"
        ))),
    }
}

fn resolve(cfg: &ModelConfig) -> Result<Mvit> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an MViTv2 variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = MvitArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.pool_first {
        return Err(a.unsupported(
            "pool_first",
            "MViTv2's pool-first attention is not built natively",
        ));
    }
    let mode = match v.mode.as_str() {
        "conv" => Mode::Conv,
        "max" => Mode::Max,
        "avg" => Mode::Avg,
        _ => {
            return Err(a.unsupported(
                "mode",
                "MViTv2 pooling is built for 'conv', 'max' and 'avg' (timm's 'conv_unshared' needs pool_first)",
            ))
        }
    };
    let rel_pos = match v.rel_pos_type.as_str() {
        "spatial" => true,
        "" | "none" => false,
        _ => return Err(a.unsupported("rel_pos_type", "'spatial' or none")),
    };
    if v.act_layer != "gelu" || v.norm_layer != "layernorm" {
        return Err(Error::unsupported(format!(
            "`{arch}`: MViTv2 with act_layer {} / norm_layer {} is built with gelu / layernorm only",
            v.act_layer, v.norm_layer
        )));
    }
    let n = v.depths.len();
    if n == 0
        || n > 8
        || [
            v.embed_dim.len(),
            v.num_heads.len(),
            v.stride_q.len(),
            v.stride_kv.len(),
        ]
        .iter()
        .any(|&l| l != n)
    {
        return Err(Error::invalid_model(format!(
            "`{arch}`: MViTv2 depths, embed_dim, num_heads, stride_q and stride_kv need one value per stage"
        )));
    }
    let stride_q = v
        .stride_q
        .iter()
        .map(|s| pair(s, "stride_q"))
        .collect::<Result<Vec<_>>>()?;
    let stride_kv = v
        .stride_kv
        .iter()
        .map(|s| pair(s, "stride_kv"))
        .collect::<Result<Vec<_>>>()?;
    let kernel = pair(&v.kernel_qkv, "kernel_qkv")?;
    let patch = [
        pair(&v.patch_kernel, "patch_kernel")?,
        pair(&v.patch_stride, "patch_stride")?,
        (
            *v.patch_padding.first().unwrap_or(&0),
            *v.patch_padding.get(1).unwrap_or(&0),
        ),
    ];
    if patch[0].0 != patch[0].1 || patch[1].0 != patch[1].1 {
        return Err(Error::unsupported(
            "MViTv2 with a non-square patch embedding is not built natively",
        ));
    }
    let avg = match v.global_pool.as_deref() {
        None => !v.use_cls_token,
        Some("avg") => true,
        Some("token") if v.use_cls_token => false,
        Some("token") => {
            return Err(Error::invalid_model(
                "MViTv2 token pooling needs the class token",
            ))
        }
        Some(_) => {
            return Err(a.unsupported(
                "global_pool",
                "MViTv2 is built with 'avg' or 'token' pooling (not unpooled features)",
            ))
        }
    };
    // img_size only sizes timm's tables (the weights give them), stride_kv_adaptive is already
    // folded into stride_kv, and pool_type is unused by timm's model.
    let _ = (&v.img_size, &v.stride_kv_adaptive, &v.pool_type);
    Ok(Mvit {
        depths: v.depths,
        dims: v.embed_dim,
        heads: v.num_heads,
        mlp_ratio: v.mlp_ratio,
        expand_attn: v.expand_attn,
        qkv_bias: v.qkv_bias,
        cls: v.use_cls_token,
        abs_pos: v.use_abs_pos,
        residual_pooling: v.residual_pooling,
        mode,
        kernel,
        stride_q,
        stride_kv,
        patch,
        rel_pos,
        eps: v.norm_eps as f32,
        avg,
    })
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
