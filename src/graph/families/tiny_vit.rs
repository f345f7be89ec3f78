//! TinyViT: timm's `tiny_vit.py` (`TinyVit`).
//!
//! A two-conv `PatchEmbed`, an MBConv stage, then stages that open with `PatchMerging` (1×1,
//! strided 3×3 depthwise, 1×1 `ConvNorm`s) and run `TinyVitBlock`s on channels-last maps:
//! windowed attention (the map padded with zeros to whole windows) with a learned per-head bias
//! over absolute offsets, a 3×3 depthwise `local_conv`, and `NormMlp`. Every `ConvNorm`'s
//! BatchNorm is folded into its conv at load. The bias gather `attention_biases[:,
//! attention_bias_idxs]` (an index timm does not save) is computed at load, and the attention's
//! head-interleaved `qkv` rows are regrouped into q | k | v then. The windows' padding is fixed
//! for the input size, so the graph takes one size (any size through the `input_size` option).
//!
//! Feature maps are timm's `features_only` stages `stages.{i}` (a `FeatureListNet`; NCHW).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::heads::norm_mlp_head;
use crate::graph::layers::mlp::{linear, mlp, MlpCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::window::{pad_hw_end, window_partition, window_reverse};
use crate::graph::layers::{self, Conv, Norm, Pad};
use crate::graph::spatial::Spatial;
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/tiny_vit.json"));

/// The `tiny_vit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "tiny_vit",
    examples:
        "tiny_vit_5m_224, tiny_vit_11m_224, tiny_vit_21m_224, tiny_vit_21m_384, tiny_vit_21m_512",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// `nn.BatchNorm2d` of every `ConvNorm`.
const BN_EPS: f32 = 1e-5;
/// `nn.LayerNorm` of the attention and the MLP; the head's `LayerNorm2d(eps=1e-5)`.
const LN_EPS: f32 = 1e-5;

timm_args! {
    /// `TinyVit.__init__`'s keyword arguments with timm's defaults.
    pub struct TinyVitArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        embed_dims: Vec<usize> = vec![96, 192, 384, 768],
        depths: Vec<usize> = vec![2, 2, 6, 2],
        num_heads: Vec<usize> = vec![3, 6, 12, 24],
        window_sizes: Vec<usize> = vec![7, 7, 14, 7],
        mlp_ratio: f64 = 4.0,
        use_checkpoint: bool = false,
        mbconv_expand_ratio: f64 = 4.0,
        local_conv_size: usize = 3,
        act_layer: String = "gelu".into(),
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

struct TinyVit {
    dims: Vec<usize>,
    depths: Vec<usize>,
    heads: Vec<usize>,
    windows: Vec<usize>,
    mlp_ratio: f64,
    mbconv_ratio: f64,
    local_conv: usize,
    act: String,
    pool: PoolKind,
}

fn resolve(cfg: &ModelConfig) -> Result<TinyVit> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a TinyViT architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = TinyVitArgs::read(&a)?;
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    let pool = PoolKind::from_timm(&v.global_pool)?;
    if pool == PoolKind::None {
        return Err(a.unsupported(
            "global_pool",
            "no pooling; native graphs return one pooled vector per image",
        ));
    }
    let n = v.depths.len();
    if n < 2
        || [v.embed_dims.len(), v.num_heads.len(), v.window_sizes.len()]
            .iter()
            .any(|&l| l < n)
    {
        return Err(Error::invalid_model(format!(
            "TinyViT depths ({n} stages, at least 2): embed_dims, num_heads and window_sizes need one entry per stage"
        )));
    }
    for i in 1..n {
        let (d, h) = (v.embed_dims[i], v.num_heads[i]);
        if d == 0 || h == 0 || !d.is_multiple_of(h) || v.window_sizes[i] == 0 {
            return Err(Error::invalid_model(format!(
                "TinyViT stage {i}: dim {d} with {h} heads, window {}",
                v.window_sizes[i]
            )));
        }
    }
    if v.embed_dims[0] < 2 || v.local_conv_size == 0 {
        return Err(Error::invalid_model(
            "TinyViT embed_dims[0] < 2 or local_conv_size 0",
        ));
    }
    Ok(TinyVit {
        dims: v.embed_dims[..n].to_vec(),
        depths: v.depths,
        heads: v.num_heads[..n].to_vec(),
        windows: v.window_sizes[..n].to_vec(),
        mlp_ratio: v.mlp_ratio,
        mbconv_ratio: v.mbconv_expand_ratio,
        local_conv: v.local_conv_size,
        act: layers::act::canonical(&v.act_layer)?.to_string(),
        pool,
    })
}

/// `ConvNorm` (scopes `conv`, `bn`) folded into one conv: `k`×`k`, padding `pad`, no conv bias.
#[allow(clippy::too_many_arguments)]
fn conv_norm(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bn_weight_init: Init,
) -> Result<Value> {
    let c = Conv::new(in_ch, out_ch, k)
        .stride(stride)
        .pad(Pad::Sym(k / 2))
        .groups(groups)
        .init(Init::DefaultUniform);
    layers::conv::conv_bn_init(b, x, "conv", "bn", c, BN_EPS, bn_weight_init)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let t = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let d0 = t.dims[0];
    let mut x = patch_embed(&mut b.scope("patch_embed"), &input, in_ch, d0, &t.act)?;
    let mut reduction = 4;
    // stages.0: MBConvs.
    {
        let mut ss = b.scope("stages");
        let s = &mut ss.scope(0);
        let mid = (d0 as f64 * t.mbconv_ratio) as usize;
        if mid == 0 {
            return Err(Error::invalid_model(
                "TinyViT mbconv_expand_ratio gives 0 channels",
            ));
        }
        for j in 0..t.depths[0] {
            let mut blocks = s.scope("blocks");
            x = mbconv(&mut blocks.scope(j), &x, d0, mid, &t.act)?;
        }
        s.feature(&x, d0, reduction, "stages.0");
    }
    let (mut h, mut w) = b.image_size();
    for _ in 0..2 {
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
    }
    let mut prev = d0;
    for i in 1..t.dims.len() {
        let mut ss = b.scope("stages");
        let s = &mut ss.scope(i);
        let dim = t.dims[i];
        x = patch_merging(&mut s.scope("downsample"), &x, prev, dim, &t.act)?;
        (h, w) = (h.div_ceil(2), w.div_ceil(2));
        reduction *= 2;
        let spatial: Spatial = s
            .spatial(&x)
            .cloned()
            .ok_or_else(|| Error::internal("TinyViT: the downsample has no spatial size"))?;
        s.activation(&[dim, h, w])?;
        let mut y = layers::nchw_to_nhwc(s, &x);
        for j in 0..t.depths[i] {
            let mut blocks = s.scope("blocks");
            y = tiny_vit_block(&mut blocks.scope(j), &y, &t, i, (h, w))?;
        }
        x = layers::nhwc_to_nchw(s, &y);
        s.assign_spatial(&x, spatial);
        s.feature(&x, dim, reduction, &format!("stages.{i}"));
        prev = dim;
    }
    let features = b.output() == OutputKind::Features;
    norm_mlp_head(
        &mut b.scope("head"),
        &x,
        prev,
        t.pool,
        &Norm::Layer { eps: LN_EPS },
        None,
        "tanh",
        cfg.num_classes,
        features,
    )
}

/// `PatchEmbed`: two 3×3 stride-2 `ConvNorm`s, the activation between.
fn patch_embed(b: &mut Builder, x: &Value, in_ch: usize, d0: usize, act: &str) -> Result<Value> {
    let y = conv_norm(&mut b.scope("conv1"), x, in_ch, d0 / 2, 3, 2, 1, Init::Ones)?;
    let y = layers::act(b, act, &y)?;
    conv_norm(&mut b.scope("conv2"), &y, d0 / 2, d0, 3, 2, 1, Init::Ones)
}

/// `MBConv`: 1×1 expand, 3×3 depthwise, 1×1 project (its BatchNorm zero-initialised), the
/// shortcut added before the last activation.
fn mbconv(b: &mut Builder, x: &Value, dim: usize, mid: usize, act: &str) -> Result<Value> {
    let y = conv_norm(&mut b.scope("conv1"), x, dim, mid, 1, 1, 1, Init::Ones)?;
    let y = layers::act(b, act, &y)?;
    let y = conv_norm(&mut b.scope("conv2"), &y, mid, mid, 3, 1, mid, Init::Ones)?;
    let y = layers::act(b, act, &y)?;
    let y = conv_norm(&mut b.scope("conv3"), &y, mid, dim, 1, 1, 1, Init::Zeros)?;
    let y = layers::add(b, &y, x);
    layers::act(b, act, &y)
}

/// `PatchMerging`: 1×1, strided 3×3 depthwise and 1×1 `ConvNorm`s, activations between.
fn patch_merging(b: &mut Builder, x: &Value, dim: usize, out: usize, act: &str) -> Result<Value> {
    let y = conv_norm(&mut b.scope("conv1"), x, dim, out, 1, 1, 1, Init::Ones)?;
    let y = layers::act(b, act, &y)?;
    let y = conv_norm(&mut b.scope("conv2"), &y, out, out, 3, 2, out, Init::Ones)?;
    let y = layers::act(b, act, &y)?;
    conv_norm(&mut b.scope("conv3"), &y, out, out, 1, 1, 1, Init::Ones)
}

/// `TinyVitBlock` on `[N, H, W, C]`: windowed attention + shortcut, the depthwise
/// `local_conv`, then `x + mlp(x)`.
fn tiny_vit_block(
    b: &mut Builder,
    x: &Value,
    t: &TinyVit,
    i: usize,
    (h, w): (usize, usize),
) -> Result<Value> {
    let (dim, heads, ws) = (t.dims[i], t.heads[i], t.windows[i]);
    let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let (hp, wp) = (h + ph, w + pw);
    let y = pad_hw_end(b, x, ph, pw);
    let win = window_partition(b, &y, (hp, wp), (ws, ws), dim);
    let y = attention(&mut b.scope("attn"), &win, dim, heads, ws)?;
    let mut y = window_reverse(b, &y, (hp, wp), (ws, ws), dim);
    if ph > 0 || pw > 0 {
        y = layers::slice(b, &y, 1, 0, h as i64);
        y = layers::slice(b, &y, 2, 0, w as i64);
    }
    let x = layers::add(b, x, &y);
    let map = layers::nhwc_to_nchw(b, &x);
    let k = t.local_conv;
    let map = conv_norm(
        &mut b.scope("local_conv"),
        &map,
        dim,
        dim,
        k,
        1,
        dim,
        Init::Ones,
    )?;
    let x = layers::nchw_to_nhwc(b, &map);
    let hidden = (dim as f64 * t.mlp_ratio) as usize;
    let y = {
        let m = &mut b.scope("mlp");
        let y = layers::layer_norm(&mut m.scope("norm"), &x, dim, LN_EPS)?;
        mlp(m, &y, &MlpCfg::new(dim, hidden, &t.act))?
    };
    Ok(layers::add(b, &x, &y))
}

/// TinyViT's `Attention` on windows `[B, L, dim]` (`L = ws²`, `key_dim = val_dim = dim/heads`):
/// `norm`, `qkv` (rows `[q | k | v]` per head, regrouped at load), the offset bias, `proj`.
fn attention(b: &mut Builder, x: &Value, dim: usize, heads: usize, ws: usize) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let hd = dim / heads;
    let x = layers::layer_norm(&mut b.scope("norm"), x, dim, LN_EPS)?;
    let (wq, bq) = {
        let s = &mut b.scope("qkv");
        let w = s.read("weight", &[3 * dim, dim], init)?;
        let bias = s.read("bias", &[3 * dim], Init::Zeros)?;
        (w, bias)
    };
    // Row r of part p (q, k, v) of head h sits at h·3hd + p·hd + r; regroup as p·dim + h·hd + r,
    // and store the weight transposed for the MatMul.
    let mut wt = vec![0f32; 3 * dim * dim];
    let mut bb = vec![0f32; 3 * dim];
    for h in 0..heads {
        for p in 0..3 {
            for r in 0..hd {
                let src = h * 3 * hd + p * hd + r;
                let dst = p * dim + h * hd + r;
                bb[dst] = bq[src];
                for c in 0..dim {
                    wt[c * 3 * dim + dst] = wq[src * dim + c];
                }
            }
        }
    }
    let wv = b.tensor("qkv.weight", wt, &[dim, 3 * dim])?;
    let bv = b.tensor("qkv.bias", bb, &[3 * dim])?;
    let qkv = b.op("MatMul", &[&x, &wv], vec![]);
    let qkv = b.op("Add", &[&qkv, &bv], vec![]);
    let p = layers::split(b, &qkv, -1, &[dim; 3]);
    let bias = attention_bias(b, heads, ws)?;
    let hooks = Hooks {
        bias: Some(bias),
        rope: None,
    };
    let y = attention_core(b, &p[0], &p[1], &p[2], &AttnCfg::new(dim, heads), &hooks)?;
    linear(&mut b.scope("proj"), &y, dim, dim, true, init)
}

/// `attention_biases[:, attention_bias_idxs]` as `[1, heads, L, L]`: timm numbers the offsets
/// `(|dy|, |dx|)` in order of first appearance, which from the window's first point is
/// `|dy|·ws + |dx|`.
fn attention_bias(b: &mut Builder, heads: usize, ws: usize) -> Result<Value> {
    let l = ws * ws;
    let table = b.read("attention_biases", &[heads, l], Init::Zeros)?;
    let mut data = Vec::with_capacity(heads * l * l);
    for h in 0..heads {
        for q in 0..l {
            for k in 0..l {
                let idx = (q / ws).abs_diff(k / ws) * ws + (q % ws).abs_diff(k % ws);
                data.push(table[h * l + idx]);
            }
        }
    }
    b.tensor("attention_biases", data, &[1, heads, l, l])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_tiny_vit_resolves() {
        for name in TABLE.names() {
            let cfg =
                ModelConfig::parse(TABLE.get(name).unwrap().config.to_string().as_bytes()).unwrap();
            let t = resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(*t.dims.last().unwrap()), "{name}");
        }
        assert_eq!(TABLE.names().len(), 5);
    }
}
