//! EdgeNeXt: timm's `edgenext.py` (`EdgeNeXt`).
//!
//! A ConvNeXt-like convnet: a patch (4×4) or overlapping (9×9) stem with LayerNorm2d, stages
//! that downsample with LayerNorm2d + a 2×2 conv (or, with `downsample_block`, in their first
//! block's strided depthwise conv), `ConvBlock`s (depthwise conv, LayerNorm, MLP, layer scale)
//! and, closing each stage, split depthwise transpose attention (`SplitTransposeBlock`): the
//! channels split into chunks run through a cascade of 3×3 depthwise convs, optionally the
//! Fourier position encoding, then cross-covariance attention (`XCA`: attention between
//! channels of L2-normalised q and k, per-head temperature) and an MLP. The position encoding
//! depends on the map size only; the graph computes it from the input's shape, so it takes any
//! size, as timm does.
//!
//! Feature maps are timm's `features_only` stages `stages.{i}` (a `FeatureListNet`; NCHW).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::{classifier_head, norm_mlp_head};
use crate::graph::layers::mlp::{linear, mlp, MlpCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::{self, conv2d, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/edgenext.json"));

/// The `edgenext` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "edgenext",
    examples:
        "edgenext_xx_small, edgenext_x_small, edgenext_small, edgenext_base, edgenext_small_rw",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// `partial(LayerNorm2d, eps=1e-6)` and `partial(nn.LayerNorm, eps=1e-6)`.
const EPS: f32 = 1e-6;
/// `PositionalEncodingFourier`'s defaults.
const POS_HIDDEN: usize = 32;
const POS_TEMPERATURE: f64 = 10000.0;

timm_args! {
    /// `EdgeNeXt.__init__`'s keyword arguments with timm's defaults.
    pub struct EdgeNextArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        dims: Vec<usize> = vec![24, 48, 88, 168],
        depths: Vec<usize> = vec![3, 3, 9, 3],
        global_block_counts: Vec<usize> = vec![0, 1, 1, 1],
        kernel_sizes: Vec<usize> = vec![3, 5, 7, 9],
        heads: Vec<usize> = vec![8, 8, 8, 8],
        d2_scales: Vec<usize> = vec![2, 2, 3, 4],
        use_pos_emb: Vec<bool> = vec![false, true, false, false],
        ls_init_value: f64 = 1e-6,
        expand_ratio: f64 = 4.0,
        downsample_block: bool = false,
        conv_bias: bool = true,
        stem_type: String = "patch".into(),
        head_norm_first: bool = false,
        act_layer: String = "gelu".into(),
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `EdgeNeXtStage`.
#[derive(Debug, Clone)]
struct Stage {
    dim: usize,
    depth: usize,
    global_blocks: usize,
    kernel: usize,
    heads: usize,
    scales: usize,
    pos_emb: bool,
    stride: usize,
}

struct EdgeNext {
    stages: Vec<Stage>,
    overlap_stem: bool,
    downsample_block: bool,
    conv_bias: bool,
    ls: bool,
    expand: f64,
    act: String,
    head_norm_first: bool,
    pool: PoolKind,
}

fn resolve(cfg: &ModelConfig) -> Result<EdgeNext> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an EdgeNeXt architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = EdgeNextArgs::read(&a)?;
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    let overlap_stem = match v.stem_type.as_str() {
        "patch" => false,
        "overlap" => true,
        _ => return Err(a.unsupported("stem_type", "timm builds 'patch' or 'overlap'")),
    };
    let pool = PoolKind::from_timm(&v.global_pool)?;
    if pool == PoolKind::None {
        return Err(a.unsupported(
            "global_pool",
            "no pooling; native graphs return one pooled vector per image",
        ));
    }
    // timm always builds four stages.
    let lists = [
        ("dims", v.dims.len()),
        ("depths", v.depths.len()),
        ("global_block_counts", v.global_block_counts.len()),
        ("kernel_sizes", v.kernel_sizes.len()),
        ("heads", v.heads.len()),
        ("d2_scales", v.d2_scales.len()),
        ("use_pos_emb", v.use_pos_emb.len()),
    ];
    if let Some((key, n)) = lists.iter().find(|(_, n)| *n < 4) {
        return Err(Error::invalid_model(format!(
            "EdgeNeXt model_args {key} has {n} entries; timm builds four stages"
        )));
    }
    let mut stages = Vec::with_capacity(4);
    for i in 0..4 {
        let st = Stage {
            dim: v.dims[i],
            depth: v.depths[i],
            global_blocks: v.global_block_counts[i],
            kernel: v.kernel_sizes[i],
            heads: v.heads[i],
            scales: v.d2_scales[i],
            pos_emb: v.use_pos_emb[i],
            stride: if i > 0 { 2 } else { 1 },
        };
        if st.dim == 0 || st.kernel == 0 {
            return Err(Error::invalid_model(format!(
                "EdgeNeXt stage {i}: dim 0 or kernel 0"
            )));
        }
        if st.global_blocks > 0 {
            if st.heads == 0 || !st.dim.is_multiple_of(st.heads) || st.scales < 2 {
                return Err(Error::unsupported(format!(
                    "`{arch}` stage {i}: split transpose attention over {} channels with {} heads and {} scales (timm runs 2 or more scales, heads dividing the width)",
                    st.dim, st.heads, st.scales
                )));
            }
            if chunks(st.dim, st.scales).len() != st.scales {
                return Err(Error::unsupported(format!(
                    "`{arch}` stage {i}: {} channels do not split into {} chunks (timm's forward fails)",
                    st.dim, st.scales
                )));
            }
            if st.global_blocks >= st.depth && i > 0 && v.downsample_block {
                return Err(Error::unsupported(format!(
                    "`{arch}` stage {i}: with downsample_block the first block must be a ConvBlock (a split transpose attention block cannot stride or change the width)"
                )));
            }
        }
        stages.push(st);
    }
    Ok(EdgeNext {
        stages,
        overlap_stem,
        downsample_block: v.downsample_block,
        conv_bias: v.conv_bias,
        ls: v.ls_init_value > 0.0,
        expand: v.expand_ratio,
        act: layers::act::canonical(&v.act_layer)?.to_string(),
        head_norm_first: v.head_norm_first,
        pool,
    })
}

/// `torch.chunk(c, n)` sizes: chunks of `⌈c/n⌉`, the last one smaller (fewer when they run out).
fn chunks(c: usize, n: usize) -> Vec<usize> {
    let w = c.div_ceil(n.max(1));
    let mut out = Vec::new();
    let mut left = c;
    while left > 0 && w > 0 {
        out.push(w.min(left));
        left -= w.min(left);
    }
    out
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let e = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let d0 = e.stages[0].dim;
    let mut x = stem(&mut b.scope("stem"), &input, in_ch, d0, &e)?;
    let mut in_ch = d0;
    let mut reduction = 4;
    for (i, st) in e.stages.iter().enumerate() {
        let mut ss = b.scope("stages");
        let s = &mut ss.scope(i);
        let mut cur = in_ch;
        if !(e.downsample_block || st.stride == 1) {
            let ds = &mut s.scope("downsample");
            x = layers::layer_norm_2d(&mut ds.scope(0), &x, cur, EPS)?;
            let c = Conv::new(cur, st.dim, 2)
                .stride(2)
                .pad(Pad::Sym(0))
                .bias(e.conv_bias)
                .init(Init::TruncNormal(0.02));
            x = conv2d(&mut ds.scope(1), &x, c)?;
            cur = st.dim;
        }
        for j in 0..st.depth {
            let mut blocks = s.scope("blocks");
            let bs = &mut blocks.scope(j);
            x = if j + st.global_blocks < st.depth {
                let stride = if e.downsample_block && j == 0 {
                    st.stride
                } else {
                    1
                };
                conv_block(bs, &x, cur, st.dim, st.kernel, stride, &e)?
            } else {
                split_transpose_block(bs, &x, cur, st, &e)?
            };
            cur = st.dim;
        }
        reduction *= st.stride;
        s.feature(&x, st.dim, reduction, &format!("stages.{i}"));
        in_ch = st.dim;
    }
    let features = b.output() == OutputKind::Features;
    if e.head_norm_first {
        let y = layers::layer_norm_2d(&mut b.scope("norm_pre"), &x, in_ch, EPS)?;
        return classifier_head(
            &mut b.scope("head"),
            &y,
            in_ch,
            e.pool,
            cfg.num_classes,
            features,
        );
    }
    norm_mlp_head(
        &mut b.scope("head"),
        &x,
        in_ch,
        e.pool,
        &Norm::Layer { eps: EPS },
        None,
        "tanh",
        cfg.num_classes,
        features,
    )
}

/// The stem: a 4×4 stride-4 conv (`patch`) or a 9×9 one padded by 4 (`overlap`), then
/// LayerNorm2d.
fn stem(b: &mut Builder, x: &Value, in_ch: usize, d0: usize, e: &EdgeNext) -> Result<Value> {
    let c = if e.overlap_stem {
        Conv::new(in_ch, d0, 9).stride(4).pad(Pad::Sym(4))
    } else {
        Conv::new(in_ch, d0, 4).stride(4).pad(Pad::Sym(0))
    };
    let c = c.bias(e.conv_bias).init(Init::TruncNormal(0.02));
    let y = conv2d(&mut b.scope(0), x, c)?;
    layers::layer_norm_2d(&mut b.scope(1), &y, d0, EPS)
}

/// A layer-scale `gamma` (name `name`, `[dim]`) on channels-last `x`, when the block has one.
fn gamma(b: &mut Builder, x: &Value, name: &str, dim: usize, ls: bool) -> Result<Value> {
    let present = match b.weights() {
        Some(_) => b.has_weight(name),
        None => ls,
    };
    if !present {
        return Ok(x.clone());
    }
    let g = b.param(name, &[dim], Init::Const(1e-6))?;
    Ok(b.op("Mul", &[x, &g], vec![]))
}

/// `ConvBlock`: depthwise `conv_dw` (stride and width change possible, then the shortcut is
/// taken after it), LayerNorm `norm`, `mlp`, `gamma`, residual.
fn conv_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    out: usize,
    k: usize,
    stride: usize,
    e: &EdgeNext,
) -> Result<Value> {
    let c = Conv::new(dim, out, k)
        .stride(stride)
        .groups(dim)
        .bias(e.conv_bias)
        .init(Init::TruncNormal(0.02));
    let y = conv2d(&mut b.scope("conv_dw"), x, c)?;
    let shortcut = if stride > 1 || dim != out {
        y.clone()
    } else {
        x.clone()
    };
    let t = layers::nchw_to_nhwc(b, &y);
    let t = layers::layer_norm(&mut b.scope("norm"), &t, out, EPS)?;
    let hidden = (e.expand * out as f64) as usize;
    let t = mlp(&mut b.scope("mlp"), &t, &MlpCfg::new(out, hidden, &e.act))?;
    let t = gamma(b, &t, "gamma", out, e.ls)?;
    let t = layers::nhwc_to_nchw(b, &t);
    Ok(layers::add(b, &shortcut, &t))
}

/// `SplitTransposeBlock`: the channels' cascade of depthwise `convs`, the position encoding
/// `pos_embd`, `x + gamma_xca · xca(norm_xca(x))`, then `norm`, `mlp`, `gamma` and the residual.
fn split_transpose_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    st: &Stage,
    e: &EdgeNext,
) -> Result<Value> {
    let sizes = chunks(dim, st.scales);
    let width = sizes[0];
    let parts = layers::split(b, x, 1, &sizes);
    let mut outs = Vec::with_capacity(parts.len());
    let mut sp = parts[0].clone();
    for (i, part) in parts.iter().enumerate().take(parts.len() - 1) {
        if i > 0 {
            sp = layers::add(b, &sp, part);
        }
        let c = Conv::new(width, width, 3)
            .depthwise()
            .bias(e.conv_bias)
            .init(Init::TruncNormal(0.02));
        sp = conv2d(&mut b.scope("convs").scope(i), &sp, c)?;
        outs.push(sp.clone());
    }
    outs.push(parts[parts.len() - 1].clone());
    let refs: Vec<&Value> = outs.iter().collect();
    let map = layers::concat(b, &refs, 1);
    let mut t = layers::nchw_to_tokens(b, &map, dim);
    if st.pos_emb {
        let pos = pos_encoding_fourier(&mut b.scope("pos_embd"), &map, dim)?;
        t = layers::add(b, &t, &pos);
    }
    let y = layers::layer_norm(&mut b.scope("norm_xca"), &t, dim, EPS)?;
    let y = cross_covariance_attn(&mut b.scope("xca"), &y, dim, st.heads)?;
    let y = gamma(b, &y, "gamma_xca", dim, e.ls)?;
    let t = layers::add(b, &t, &y);
    let y = layers::layer_norm(&mut b.scope("norm"), &t, dim, EPS)?;
    let hidden = (e.expand * dim as f64) as usize;
    let y = mlp(&mut b.scope("mlp"), &y, &MlpCfg::new(dim, hidden, &e.act))?;
    let y = gamma(b, &y, "gamma", dim, e.ls)?;
    // [N, HW, C] back onto the map.
    let y = layers::patch_embed::token_map(b, &y, 0, &map);
    Ok(layers::add(b, x, &y))
}

/// `CrossCovarianceAttn` on `[N, L, dim]`: per head, `softmax(temperature · q̂ k̂ᵀ)` over the
/// head's channels (q, k L2-normalised along the tokens) applied to v; `qkv`, `temperature`,
/// `proj` in the current scope.
fn cross_covariance_attn(b: &mut Builder, x: &Value, dim: usize, heads: usize) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let hd = (dim / heads) as i64;
    let qkv = linear(&mut b.scope("qkv"), x, dim, 3 * dim, true, init)?;
    let p = layers::split(b, &qkv, -1, &[dim; 3]);
    // [N, L, H·hd] -> [N, H, hd, L]
    let view = |b: &mut Builder, t: &Value| {
        let t = layers::reshape(b, t, &[0, 0, heads as i64, hd]);
        layers::transpose(b, &t, &[0, 2, 3, 1])
    };
    let normalize = |b: &mut Builder, t: &Value| {
        let axes = b.ints(&[-1]);
        let n = b.op("ReduceL2", &[t, &axes], vec![("keepdims", Attr::Int(1))]);
        let eps = b.scalar(1e-12);
        let n = b.op("Max", &[&n, &eps], vec![]);
        b.op("Div", &[t, &n], vec![])
    };
    let q = view(b, &p[0]);
    let q = normalize(b, &q);
    let k = view(b, &p[1]);
    let k = normalize(b, &k);
    let v = view(b, &p[2]);
    let kt = layers::transpose(b, &k, &[0, 1, 3, 2]);
    let attn = b.op("MatMul", &[&q, &kt], vec![]);
    let temp = b.param("temperature", &[heads, 1, 1], Init::Ones)?;
    let attn = b.op("Mul", &[&attn, &temp], vec![]);
    let attn = b.op("Softmax", &[&attn], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&attn, &v], vec![]);
    let y = layers::transpose(b, &y, &[0, 3, 1, 2]);
    let y = layers::reshape(b, &y, &[0, 0, dim as i64]);
    linear(&mut b.scope("proj"), &y, dim, dim, true, init)
}

/// `PositionalEncodingFourier` for the map `like` `[N, C, H, W]` as tokens `[H·W, dim]`: the
/// sine / cosine features of the normalised row and column (`(i+1)/(n+1e-6)·2π` over
/// `10000^(2⌊j/2⌋/32)`), projected by the 1×1 `token_projection`. The projection is linear,
/// so rows and columns are projected apart (`[H, dim]`, `[W, dim]`) and summed.
fn pos_encoding_fourier(b: &mut Builder, like: &Value, dim: usize) -> Result<Value> {
    let hid = POS_HIDDEN;
    let s = &mut b.scope("token_projection");
    let w = s.read("weight", &[dim, 2 * hid, 1, 1], Init::TruncNormal(0.02))?;
    let bias = s.param("bias", &[dim], Init::Zeros)?;
    // [2·hid, dim]: rows 0..hid project the y features, hid..2·hid the x features.
    let mut wt = vec![0f32; 2 * hid * dim];
    for d in 0..dim {
        for j in 0..2 * hid {
            wt[j * dim + d] = w[d * 2 * hid + j];
        }
    }
    let wy = s.tensor("weight_y", wt[..hid * dim].to_vec(), &[hid, dim])?;
    let wx = s.tensor("weight_x", wt[hid * dim..].to_vec(), &[hid, dim])?;
    let inv_t: Vec<f32> = (0..hid)
        .map(|j| (POS_TEMPERATURE.powf(2.0 * (j / 2) as f64 / hid as f64)) as f32)
        .collect();
    let dim_t = s.const_f32(inv_t, &[1, hid as i64]);
    let even: Vec<f32> = (0..hid).map(|j| ((j + 1) % 2) as f32).collect();
    let even = s.const_f32(even, &[1, hid as i64]);
    let shape = s.op("Shape", &[like], vec![]);
    let axis = |s: &mut Builder, k: i64| -> Value {
        let idx = s.const_i64(vec![k], &[]);
        let n = s.op("Gather", &[&shape, &idx], vec![("axis", Attr::Int(0))]);
        let one = s.const_i64(vec![1], &[]);
        let n1 = s.op("Add", &[&n, &one], vec![]);
        let r = s.op("Range", &[&one, &n1, &one], vec![]);
        let r = s.op("Cast", &[&r], vec![("to", Attr::Int(1))]);
        let nf = s.op("Cast", &[&n], vec![("to", Attr::Int(1))]);
        let eps = s.scalar(1e-6);
        let den = s.op("Add", &[&nf, &eps], vec![]);
        let e = s.op("Div", &[&r, &den], vec![]);
        let e = layers::scale(s, &e, (2.0 * std::f64::consts::PI) as f32);
        layers::reshape(s, &e, &[-1, 1])
    };
    let features = |s: &mut Builder, e: &Value, wproj: &Value| -> Value {
        let p = s.op("Div", &[e, &dim_t], vec![]);
        let sin = s.op("Sin", &[&p], vec![]);
        let cos = s.op("Cos", &[&p], vec![]);
        // even j: sin, odd j: cos
        let d = s.op("Sub", &[&sin, &cos], vec![]);
        let d = s.op("Mul", &[&d, &even], vec![]);
        let f = s.op("Add", &[&cos, &d], vec![]);
        s.op("MatMul", &[&f, wproj], vec![])
    };
    let ey = axis(s, 2);
    let ex = axis(s, 3);
    let py = features(s, &ey, &wy);
    let px = features(s, &ex, &wx);
    // [H, 1, dim] + [1, W, dim] + bias -> [H·W, dim]
    let py = layers::reshape(s, &py, &[-1, 1, dim as i64]);
    let px = layers::reshape(s, &px, &[1, -1, dim as i64]);
    let p = layers::add(s, &py, &px);
    let p = layers::add(s, &p, &bias);
    Ok(layers::reshape(s, &p, &[-1, dim as i64]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_edgenext_resolves() {
        for name in TABLE.names() {
            let cfg =
                ModelConfig::parse(TABLE.get(name).unwrap().config.to_string().as_bytes()).unwrap();
            let e = resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(e.stages[3].dim), "{name}");
            assert_eq!(e.overlap_stem, name.ends_with("_rw"), "{name}");
        }
        assert_eq!(TABLE.names().len(), 5);
    }

    #[test]
    fn chunks_follow_torch() {
        assert_eq!(chunks(88, 3), vec![30, 30, 28]);
        assert_eq!(chunks(168, 4), vec![42; 4]);
        assert_eq!(chunks(9, 4), vec![3, 3, 3]);
    }
}
