//! LeViT: timm's `levit.py` (`Levit`, `LevitDistilled`), a convolutional stem, then stages of
//! attention blocks with a learned per-head bias over absolute coordinate offsets, strided-query
//! `AttentionDownsample` between stages, and the BatchNorm head.
//!
//! timm builds every linear as `LinearNorm` (`nn.Linear` without bias + `BatchNorm1d`) or, for
//! the `levit_conv_*` models, `ConvNorm` (a 1×1 conv + `BatchNorm2d`). Both are the same map per
//! token, so one token graph `[N, L, C]` serves both; only the stored weight shapes differ. Each
//! is folded at load into one MatMul + bias (`transforms::fold_bn`), the q rows also take the
//! softmax scale. The `attention_biases[:, attention_bias_idxs]` gather (an index timm does not
//! save) is computed at load for the constructor's resolution, so the graph takes that one size.
//! `LevitDistilled`'s `(head(x) + head_dist(x)) / 2` is one folded linear.
//!
//! Feature maps are the stage outputs `stages.{i}` as NCHW (timm's `forward_intermediates` for
//! the linear models, its `FeatureListNet` for the conv ones; the same values).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::heads::{folded_gemm, norm_linear_folded};
use crate::graph::layers::{self, conv_bn, Conv};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::transforms::{fold_bn, BnStats};
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/levit.json"));

/// The `levit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "levit",
    examples: "levit_128s, levit_256, levit_conv_384, levit_512_s8, ...",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// `nn.BatchNorm1d` / `nn.BatchNorm2d` eps.
const BN_EPS: f32 = 1e-5;

timm_args! {
    /// `Levit.__init__`'s keyword arguments with timm's defaults, plus `create_levit`'s
    /// `distilled` (which class it builds).
    pub struct LevitArgs {
        img_size: Json = Json::Null,
        embed_dim: Vec<usize> = vec![192],
        key_dim: usize = 64,
        depth: Vec<usize> = vec![12],
        num_heads: PerStage<usize> = PerStage::All(3),
        attn_ratio: PerStage<f64> = PerStage::All(2.0),
        mlp_ratio: PerStage<f64> = PerStage::All(2.0),
        stem_backbone: Json = Json::Null,
        stem_stride: Json = Json::Null,
        stem_type: String = "s16".into(),
        down_op: String = "subsample".into(),
        act_layer: String = "hard_swish".into(),
        attn_act_layer: Option<String> = None,
        use_conv: bool = false,
        global_pool: String = "avg".into(),
        distilled: bool = true,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `LevitStage` as timm's constructor resolves it.
#[derive(Debug, Clone)]
struct Stage {
    dim: usize,
    depth: usize,
    heads: usize,
    attn_ratio: f64,
    mlp_ratio: f64,
}

/// A `Levit` as timm constructs it.
#[derive(Debug, Clone)]
struct Levit {
    img: (usize, usize),
    stem_stride: usize,
    key_dim: usize,
    stages: Vec<Stage>,
    act: String,
    attn_act: String,
    /// `ConvNorm` (1×1 conv weights) instead of `LinearNorm`.
    conv: bool,
    distilled: bool,
}

/// An int or an `[h, w]` pair (timm's `to_2tuple`).
fn pair(j: &Json) -> Option<(usize, usize)> {
    let one = |j: &Json| {
        j.as_u64()
            .filter(|n| (1..=crate::graph::args::MAX_INT).contains(n))
            .map(|n| n as usize)
    };
    match j {
        Json::Array(hw) if hw.len() == 2 => one(&hw[0]).zip(one(&hw[1])),
        j => one(j).map(|n| (n, n)),
    }
}

impl Levit {
    fn resolve(cfg: &ModelConfig) -> Result<Levit> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a LeViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = LevitArgs::read(&a)?;
        if !v.stem_backbone.is_null() || !v.stem_stride.is_null() {
            return Err(a.unsupported(
                "stem_backbone",
                "a custom stem module cannot be saved in config.json",
            ));
        }
        let stem_stride = match v.stem_type.as_str() {
            "s16" => 16,
            "s8" => 8,
            _ => return Err(a.unsupported("stem_type", "timm builds 's16' or 's8'")),
        };
        if v.down_op.is_empty() && v.embed_dim.len() > 1 {
            // timm halves the resolution between stages regardless; without a downsample the
            // later stages' biases no longer fit their maps.
            return Err(a.unsupported("down_op", "stages without a downsample do not run in timm"));
        }
        let n = v.embed_dim.len();
        if n == 0 || v.depth.len() != n {
            return Err(Error::invalid_model(format!(
                "LeViT embed_dim ({n} stages) and depth ({}) must have one entry per stage",
                v.depth.len()
            )));
        }
        let heads = v.num_heads.expand("num_heads", n)?;
        let attn_ratio = v.attn_ratio.expand("attn_ratio", n)?;
        let mlp_ratio = v.mlp_ratio.expand("mlp_ratio", n)?;
        let stages: Vec<Stage> = (0..n)
            .map(|i| Stage {
                dim: v.embed_dim[i],
                depth: v.depth[i],
                heads: heads[i],
                attn_ratio: attn_ratio[i],
                mlp_ratio: mlp_ratio[i],
            })
            .collect();
        for (i, st) in stages.iter().enumerate() {
            // The downsample into stage i has `in_dim // key_dim` heads.
            let down_heads = (i > 0).then(|| stages[i - 1].dim / v.key_dim.max(1));
            if st.dim < 8 || st.heads == 0 || v.key_dim == 0 || down_heads == Some(0) {
                return Err(Error::invalid_model(format!(
                    "LeViT stage {i}: dim {}, {} heads, key_dim {}",
                    st.dim, st.heads, v.key_dim
                )));
            }
        }
        // build_model_with_cfg passes the pretrained input size as img_size (fixed_input_size).
        let img = match &v.img_size {
            Json::Null => {
                let [_, h, w] = cfg.pretrained_cfg.input_size;
                (h, w)
            }
            j => pair(j).ok_or_else(|| a.unsupported("img_size", "expected an int or [h, w]"))?,
        };
        if v.global_pool != "avg" {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one pooled vector per image",
            ));
        }
        let act = layers::act::canonical(&v.act_layer)?.to_string();
        let attn_act = match &v.attn_act_layer {
            Some(s) => layers::act::canonical(s)?.to_string(),
            None => act.clone(),
        };
        Ok(Levit {
            img,
            stem_stride,
            key_dim: v.key_dim,
            stages,
            act,
            attn_act,
            conv: v.use_conv,
            distilled: v.distilled,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let mut v = Levit::resolve(cfg)?;
    if b.weights().is_some() {
        // The weights say which class saved them.
        v.distilled = b.has_module("head_dist");
    }
    let (h, w) = b.image_size();
    let res0 = (v.img.0 / v.stem_stride, v.img.1 / v.stem_stride);
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let x = stem(&mut b.scope("stem"), &input, in_ch, &v)?;
    // The stem's own output grid must be the one timm sized the biases for.
    let grid = (0..v.stem_stride.trailing_zeros())
        .fold((h, w), |(h, w), _| (h.div_ceil(2), w.div_ceil(2)));
    if grid != res0 || res0.0 == 0 || res0.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "LeViT takes its img_size {}x{} only (attention biases are sized for a {}x{} grid); got a {h}x{w} input",
            v.img.0, v.img.1, res0.0, res0.1
        )));
    }
    let mut spatial = b
        .spatial(&x)
        .cloned()
        .ok_or_else(|| Error::invalid_model("LeViT stem has no tracked spatial size"))?;
    let mut x = layers::nchw_to_tokens(b, &x, v.stages[0].dim);
    let mut res = res0;
    let mut in_dim = v.stages[0].dim;
    let mut stride = v.stem_stride;
    for (i, st) in v.stages.iter().enumerate() {
        let mut stages = b.scope("stages");
        let s = &mut stages.scope(i);
        if i > 0 {
            x = levit_downsample(&mut s.scope("downsample"), &x, &v, in_dim, st.dim, res)?;
            res = (res.0.div_ceil(2), res.1.div_ceil(2));
            stride *= 2;
            spatial = spatial.then(Step::Same { stride: 2 });
        }
        s.activation(&[st.dim, res.0, res.1])?;
        for j in 0..st.depth {
            let mut blocks = s.scope("blocks");
            x = levit_block(&mut blocks.scope(j), &x, &v, st, res)?;
        }
        in_dim = st.dim;
        let map = layers::reshape(s, &x, &[-1, res.0 as i64, res.1 as i64, st.dim as i64]);
        let map = layers::nhwc_to_nchw(s, &map);
        s.assign_spatial(&map, spatial.clone());
        s.feature(&map, st.dim, stride, &format!("stages.{i}"));
    }
    let pooled = layers::reduce_mean(b, &x, &[1], false);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, in_dim));
    }
    head(b, &pooled, in_dim, cfg.num_classes, v.distilled)
}

/// `Stem16` / `Stem8`: 3×3 stride-2 `ConvNorm`s widening to `embed_dim[0]`, the activation
/// between them.
fn stem(b: &mut Builder, x: &Value, in_ch: usize, v: &Levit) -> Result<Value> {
    let out = v.stages[0].dim;
    let n = v.stem_stride.trailing_zeros() as usize;
    let mut x = x.clone();
    let mut c_in = in_ch;
    for i in 1..=n {
        let c_out = out >> (n - i);
        let c = Conv::new(c_in, c_out, 3)
            .stride(2)
            .bias(false)
            .init(Init::DefaultUniform);
        x = conv_bn(
            &mut b.scope(format!("conv{i}")),
            &x,
            "linear",
            "bn",
            c,
            BN_EPS,
        )?;
        if i < n {
            x = layers::act(b, &v.act, &x)?;
        }
        c_in = c_out;
    }
    Ok(x)
}

/// `LinearNorm` / `ConvNorm` (scopes `linear`, `bn`) folded: the weight `[out, in]` and bias.
fn linear_norm_folded(
    b: &mut Builder,
    in_f: usize,
    out_f: usize,
    conv: bool,
    bn_weight_init: Init,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let shape: &[usize] = if conv {
        &[out_f, in_f, 1, 1]
    } else {
        &[out_f, in_f]
    };
    let w = b
        .scope("linear")
        .read("weight", shape, Init::DefaultUniform)?;
    let bn = BnStats::read_init(&mut b.scope("bn"), out_f, BN_EPS, bn_weight_init)?;
    Ok(fold_bn(w, None, &bn))
}

/// `x @ w.T + bias` for a folded `[out, in]` weight, stored transposed for the MatMul.
fn folded_linear(
    b: &mut Builder,
    x: &Value,
    w: &[f32],
    bias: Vec<f32>,
    in_f: usize,
) -> Result<Value> {
    let out_f = bias.len();
    let mut wt = vec![0f32; w.len()];
    for o in 0..out_f {
        for i in 0..in_f {
            wt[i * out_f + o] = w[o * in_f + i];
        }
    }
    let wv = b.tensor("linear.weight", wt, &[in_f, out_f])?;
    let bv = b.tensor("linear.bias", bias, &[out_f])?;
    let y = b.op("MatMul", &[x, &wv], vec![]);
    Ok(b.op("Add", &[&y, &bv], vec![]))
}

/// `LinearNorm` / `ConvNorm` in the current scope on `[N, L, in]`.
fn linear_norm(
    b: &mut Builder,
    x: &Value,
    in_f: usize,
    out_f: usize,
    conv: bool,
    bn_weight_init: Init,
) -> Result<Value> {
    let (w, bias) = linear_norm_folded(b, in_f, out_f, conv, bn_weight_init)?;
    folded_linear(b, x, &w, bias, in_f)
}

/// A head-interleaved projection (timm views it `(heads, k_0 + k_1 + ...)` and splits per head)
/// regrouped at load into one block per part (`[part 0 of every head | part 1 of every head |
/// ...]`), the rows of part `p` multiplied by `scales[p]`; returns one value per part.
#[allow(clippy::too_many_arguments)]
fn per_head_parts(
    b: &mut Builder,
    x: &Value,
    in_f: usize,
    heads: usize,
    parts: &[usize],
    scales: &[f32],
    conv: bool,
) -> Result<Vec<Value>> {
    let per: usize = parts.iter().sum();
    let (w, bias) = linear_norm_folded(b, in_f, heads * per, conv, Init::Ones)?;
    let mut rw = Vec::with_capacity(w.len());
    let mut rb = Vec::with_capacity(bias.len());
    let mut off = 0;
    for (&p, &s) in parts.iter().zip(scales) {
        for h in 0..heads {
            for r in h * per + off..h * per + off + p {
                rw.extend(w[r * in_f..(r + 1) * in_f].iter().map(|v| v * s));
                rb.push(bias[r] * s);
            }
        }
        off += p;
    }
    let y = folded_linear(b, x, &rw, rb, in_f)?;
    let sizes: Vec<usize> = parts.iter().map(|p| p * heads).collect();
    Ok(layers::split(b, &y, -1, &sizes))
}

/// `attention_biases[:, attention_bias_idxs]` as `[heads, Nq, Nk]`, with timm's index
/// `|q_y - k_y| * res_w + |q_x - k_x|` over query positions every `stride` keys.
fn attention_bias(
    b: &mut Builder,
    heads: usize,
    res: (usize, usize),
    stride: usize,
) -> Result<Value> {
    let nk = res.0 * res.1;
    let table = b.read("attention_biases", &[heads, nk], Init::Zeros)?;
    let q: Vec<(usize, usize)> = (0..res.0)
        .step_by(stride)
        .flat_map(|y| (0..res.1).step_by(stride).map(move |x| (y, x)))
        .collect();
    let mut data = Vec::with_capacity(heads * q.len() * nk);
    for h in 0..heads {
        for &(qy, qx) in &q {
            for ky in 0..res.0 {
                for kx in 0..res.1 {
                    let idx = qy.abs_diff(ky) * res.1 + qx.abs_diff(kx);
                    data.push(table[h * nk + idx]);
                }
            }
        }
    }
    b.tensor("attention_biases", data, &[heads, q.len(), nk])
}

/// `softmax(q k^T + bias) v` for q `[N, Lq, heads*kd]` (already scaled), k `[N, Lk, heads*kd]`,
/// v `[N, Lk, heads*vd]`; returns `[N, Lq, heads*vd]` with heads outermost, as timm's.
#[allow(clippy::too_many_arguments)]
fn biased_attention(
    b: &mut Builder,
    q: &Value,
    k: &Value,
    v: &Value,
    bias: &Value,
    heads: usize,
    kd: usize,
    vd: usize,
) -> Value {
    let h = heads as i64;
    let qh = layers::reshape(b, q, &[0, 0, h, kd as i64]);
    let qh = layers::transpose(b, &qh, &[0, 2, 1, 3]);
    let kh = layers::reshape(b, k, &[0, 0, h, kd as i64]);
    let kt = layers::transpose(b, &kh, &[0, 2, 3, 1]);
    let vh = layers::reshape(b, v, &[0, 0, h, vd as i64]);
    let vh = layers::transpose(b, &vh, &[0, 2, 1, 3]);
    let logits = b.op("MatMul", &[&qh, &kt], vec![]);
    let logits = b.op("Add", &[&logits, bias], vec![]);
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&p, &vh], vec![]);
    let y = layers::transpose(b, &y, &[0, 2, 1, 3]);
    layers::reshape(b, &y, &[0, 0, (heads * vd) as i64])
}

/// `proj`: the attention activation, then a `LinearNorm` (`Attention` starts its BatchNorm at
/// zero, `AttentionDownsample` at one).
fn proj(
    b: &mut Builder,
    x: &Value,
    v: &Levit,
    in_f: usize,
    out_f: usize,
    bn_weight_init: Init,
) -> Result<Value> {
    let mut s = b.scope("proj");
    let y = layers::act(&mut s, &v.attn_act, x)?;
    let out = linear_norm(&mut s.scope("ln"), &y, in_f, out_f, v.conv, bn_weight_init);
    out
}

/// `Attention`: per-head q, k (key_dim) and v (`attn_ratio · key_dim`) from one `qkv`, the
/// attention bias over the stage's grid, `proj`.
fn attention(
    b: &mut Builder,
    x: &Value,
    v: &Levit,
    st: &Stage,
    res: (usize, usize),
) -> Result<Value> {
    let kd = v.key_dim;
    let vd = (st.attn_ratio * kd as f64) as usize;
    let scale = (kd as f32).powf(-0.5);
    let qkv = per_head_parts(
        &mut b.scope("qkv"),
        x,
        st.dim,
        st.heads,
        &[kd, kd, vd],
        &[scale, 1.0, 1.0],
        v.conv,
    )?;
    let bias = attention_bias(b, st.heads, res, 1)?;
    let y = biased_attention(b, &qkv[0], &qkv[1], &qkv[2], &bias, st.heads, kd, vd);
    proj(b, &y, v, st.heads * vd, st.dim, Init::Zeros)
}

/// `LevitMlp`: `ln1`, act, `ln2` (BatchNorm starting at zero).
fn levit_mlp(b: &mut Builder, x: &Value, v: &Levit, dim: usize, ratio: f64) -> Result<Value> {
    let hidden = (dim as f64 * ratio) as usize;
    let y = linear_norm(&mut b.scope("ln1"), x, dim, hidden, v.conv, Init::Ones)?;
    let y = layers::act(b, &v.act, &y)?;
    linear_norm(&mut b.scope("ln2"), &y, hidden, dim, v.conv, Init::Zeros)
}

/// `LevitBlock`: `x + attn(x)`, then `x + mlp(x)` (no norms: they are inside the linears).
fn levit_block(
    b: &mut Builder,
    x: &Value,
    v: &Levit,
    st: &Stage,
    res: (usize, usize),
) -> Result<Value> {
    let y = attention(&mut b.scope("attn"), x, v, st, res)?;
    let x = layers::add(b, x, &y);
    let y = levit_mlp(&mut b.scope("mlp"), &x, v, st.dim, st.mlp_ratio)?;
    Ok(layers::add(b, &x, &y))
}

/// `LevitDownsample`: `AttentionDownsample` (queries from every second position, `in_dim //
/// key_dim` heads, attn_ratio 4), then `x + mlp(x)` (mlp_ratio 2).
fn levit_downsample(
    b: &mut Builder,
    x: &Value,
    v: &Levit,
    in_dim: usize,
    out_dim: usize,
    res: (usize, usize),
) -> Result<Value> {
    let y = attention_downsample(&mut b.scope("attn_downsample"), x, v, in_dim, out_dim, res)?;
    let r = levit_mlp(&mut b.scope("mlp"), &y, v, out_dim, 2.0)?;
    Ok(layers::add(b, &y, &r))
}

/// `AttentionDownsample` with stride 2: k, v from every position (`kv`), q from the subsampled
/// grid (`q.down` — `Downsample` or a 1×1 stride-2 `AvgPool2d`, both a subsample — then `q.ln`).
fn attention_downsample(
    b: &mut Builder,
    x: &Value,
    v: &Levit,
    in_dim: usize,
    out_dim: usize,
    res: (usize, usize),
) -> Result<Value> {
    let kd = v.key_dim;
    let heads = in_dim / kd;
    let vd = 4 * kd;
    let kv = per_head_parts(
        &mut b.scope("kv"),
        x,
        in_dim,
        heads,
        &[kd, vd],
        &[1.0, 1.0],
        v.conv,
    )?;
    let grid = layers::reshape(b, x, &[-1, res.0 as i64, res.1 as i64, in_dim as i64]);
    let (starts, ends, axes, steps) = (
        b.ints(&[0, 0]),
        b.ints(&[i64::MAX, i64::MAX]),
        b.ints(&[1, 2]),
        b.ints(&[2, 2]),
    );
    let sub = b.op("Slice", &[&grid, &starts, &ends, &axes, &steps], vec![]);
    let nq = res.0.div_ceil(2) * res.1.div_ceil(2);
    let sub = layers::reshape(b, &sub, &[-1, nq as i64, in_dim as i64]);
    let scale = (kd as f32).powf(-0.5);
    let q = per_head_parts(
        &mut b.scope("q").scope("ln"),
        &sub,
        in_dim,
        heads,
        &[kd],
        &[scale],
        v.conv,
    )?;
    let bias = attention_bias(b, heads, res, 2)?;
    let y = biased_attention(b, &q[0], &kv[0], &kv[1], &bias, heads, kd, vd);
    proj(b, &y, v, heads * vd, out_dim, Init::Ones)
}

/// `head` (and `LevitDistilled`'s `head_dist`, the two averaged) on the pooled `[N, dim]`.
fn head(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    classes: usize,
    distilled: bool,
) -> Result<(Value, usize)> {
    let (mut w, mut bias) = norm_linear_folded(&mut b.scope("head"), dim, classes, BN_EPS)?;
    if distilled {
        let (w2, b2) = norm_linear_folded(&mut b.scope("head_dist"), dim, classes, BN_EPS)?;
        w.iter_mut().zip(&w2).for_each(|(a, c)| *a = (*a + c) / 2.0);
        bias.iter_mut()
            .zip(&b2)
            .for_each(|(a, c)| *a = (*a + c) / 2.0);
    }
    let y = folded_gemm(&mut b.scope("head"), x, &w, &bias)?;
    Ok((y, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_registered_levit_resolves_with_timms_widths() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let v = Levit::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                cfg.num_features,
                Some(v.stages.last().unwrap().dim),
                "{name}"
            );
            assert_eq!(v.conv, name.contains("_conv"), "{name}");
            assert_eq!(v.stem_stride, if name.ends_with("_s8") { 8 } else { 16 });
        }
        assert_eq!(TABLE.names().len(), 20);
    }

    #[test]
    fn distillation_heads_follow_the_class_timm_builds() {
        let distilled = |n: &str| {
            Levit::resolve(&parse(&TABLE.get(n).unwrap().config))
                .unwrap()
                .distilled
        };
        assert!(distilled("levit_128s") && distilled("levit_conv_384_s8"));
        assert!(!distilled("levit_512") && !distilled("levit_conv_256d"));
    }
}
