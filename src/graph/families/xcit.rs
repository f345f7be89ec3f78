//! XCiT (timm `xcit.py`, `Xcit`): cross-covariance image transformers. A conv patch embedding
//! (`ConvPatchEmbed`: 3 or 4 stride-2 3×3 conv + BatchNorm stages with GELU between), the
//! Fourier positional encoding (`PositionalEncodingFourier`, computed at load for the patch grid
//! together with its 1×1 `token_projection`), `XCABlock`s — cross-covariance attention (`XCA`:
//! softmax over the channels' L2-normalised covariance, scaled by a learned temperature per
//! head), local patch interaction (`LPI`: depthwise 3×3 conv, GELU, BatchNorm, depthwise 3×3
//! conv on the token grid) and the MLP, each with its layer scale — then the class token through
//! CaiT-style `ClassAttentionBlock`s, `norm` and the head.
//!
//! The positional encoding follows the grid, so any input size builds (the encoding is made for
//! it at load). Feature maps are timm's `features_only=True` (`FeatureGetterNet` over
//! `forward_intermediates` with `norm=False`): every `XCABlock`'s output as an NCHW grid; by
//! default the last three blocks.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention;
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed;
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::{self, conv2d, conv_bn, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/xcit.json"));

/// The `xcit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "xcit",
    examples: "xcit_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Xcit.__init__`'s keyword arguments with timm's defaults.
    pub struct XcitArgs {
        img_size: Json = Json::Null,
        patch_size: usize = 16,
        global_pool: String = "token".into(),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        act_layer: Option<String> = None,
        norm_layer: Json = Json::Null,
        cls_attn_layers: usize = 2,
        use_pos_embed: bool = true,
        eta: f64 = 1.0,
        tokens_norm: bool = false,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// `PositionalEncodingFourier`'s `hidden_dim` and `temperature` (timm's defaults, not arguments
/// of `Xcit`).
const FOURIER_HIDDEN: usize = 32;
const FOURIER_TEMPERATURE: f32 = 10000.0;

/// An `Xcit` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Xcit {
    patch: usize,
    dim: usize,
    depth: usize,
    heads: usize,
    qkv_bias: bool,
    mlp_hidden: usize,
    act: String,
    norm: Norm,
    cls_attn_layers: usize,
    pos_embed: bool,
    /// Layer scale init (`eta`; timm's `XCABlock` needs one, so `None` does not build).
    eta: f32,
    tokens_norm: bool,
    pool: TokenPool,
}

/// `norm_layer`: `partial(nn.LayerNorm, eps=1e-6)` by default.
fn norm_layer(a: &Args, v: &Json) -> Result<Norm> {
    let (name, eps) = match v {
        Json::Null => ("layernorm", Some(1e-6)),
        Json::String(s) => (s.as_str(), None),
        Json::Object(o) if o.keys().all(|k| k == "partial" || k == "eps") => (
            o.get("partial").and_then(Json::as_str).unwrap_or(""),
            o.get("eps").and_then(Json::as_f64).map(|e| e as f32),
        ),
        _ => ("", None),
    };
    match name {
        // nn.LayerNorm's own eps when named without one.
        "layernorm" => Ok(Norm::Layer {
            eps: eps.unwrap_or(1e-5),
        }),
        _ => Err(a.unsupported("norm_layer", "only LayerNorm")),
    }
}

impl Xcit {
    fn resolve(cfg: &ModelConfig) -> Result<Xcit> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not an XCiT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = XcitArgs::read(&a)?;
        let norm = norm_layer(&a, &v.norm_layer)?;
        let act = v.act_layer.unwrap_or_else(|| "gelu".into());
        layers::act::canonical(&act)
            .map_err(|_| a.unsupported("act_layer", "unknown activation"))?;
        let p = v.patch_size;
        if p != 8 && p != 16 {
            return Err(Error::invalid_model(format!(
                "XCiT's conv patch embedding takes patch size 8 or 16, not {p}"
            )));
        }
        let (dim, heads) = (v.embed_dim, v.num_heads);
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        // The conv stem narrows to dim / 8 (patch 16) or dim / 4 (patch 8).
        if heads == 0 || dim % heads != 0 || dim < 8 || v.depth == 0 || mlp_hidden == 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim}, num_heads {heads} and depth {} do not make an XCiT",
                v.depth
            )));
        }
        let pool = match v.global_pool.as_str() {
            "token" => TokenPool::Token,
            "avg" => TokenPool::Avg,
            _ => {
                return Err(a.unsupported(
                    "global_pool",
                    "token or avg (no pooling returns every token)",
                ))
            }
        };
        Ok(Xcit {
            patch: p,
            dim,
            depth: v.depth,
            heads,
            qkv_bias: v.qkv_bias,
            mlp_hidden,
            act,
            norm,
            cls_attn_layers: v.cls_attn_layers,
            pos_embed: v.use_pos_embed,
            eta: v.eta as f32,
            tokens_norm: v.tokens_norm,
            pool,
        })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Xcit::resolve(cfg)?;
    let d = m.dim;
    let input = b.input();
    let patches = conv_patch_embed(
        &mut b.scope("patch_embed"),
        &m,
        &input,
        cfg.pretrained_cfg.input_size[0],
    )?;
    // ConvPatchEmbed's grid: each stride-2 3x3 conv (padding 1) gives ceil(size / 2).
    let (h, w) = b.image_size();
    let stages = if m.patch == 16 { 4 } else { 3 };
    let halve = |mut s: usize| {
        for _ in 0..stages {
            s = s.div_ceil(2);
        }
        s
    };
    let grid = (halve(h), halve(w));
    let mut x = layers::nchw_to_tokens(b, &patches, d);
    if m.pos_embed {
        let pos = fourier_pos_embed(&mut b.scope("pos_embed"), d, grid)?;
        x = layers::add(b, &x, &pos);
    }
    for i in 0..m.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = xca_block(s, &m, &x, grid)?;
        let map = patch_embed::token_map(s, &x, 0, &patches);
        let module = s.path().to_string();
        s.feature(&map, d, m.patch, &module);
    }
    // _create_xcit's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);

    // forward_cls: the class token prepended, through the class-attention blocks.
    let cls = b.param("cls_token", &[1, 1, d], Init::TruncNormal(0.02))?;
    let cls = patch_embed::expand_batch(b, &cls, &x, 1, d);
    let mut x = layers::concat(b, &[&cls, &x], 1);
    for i in 0..m.cls_attn_layers {
        let mut blocks = b.scope("cls_attn_blocks");
        x = class_attention_block(&mut blocks.scope(i), &m, &x)?;
    }
    let x = m.norm.apply_last(&mut b.scope("norm"), &x, d)?;
    let x = global_pool_nlc(b, &x, m.pool, 1, false);
    let classes = cfg.num_classes;
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((x, d));
    }
    let y = linear_2d(
        &mut b.scope("head"),
        &x,
        d,
        classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, classes))
}

/// `ConvPatchEmbed.proj`: `conv3x3` (conv `i.0` + BatchNorm `i.1`, stride 2) stages widening
/// to `dim`, the activation between them (modules `1`, `3`, `5`); NCHW out.
fn conv_patch_embed(b: &mut Builder, m: &Xcit, x: &Value, in_ch: usize) -> Result<Value> {
    let d = m.dim;
    let widths: &[usize] = if m.patch == 16 {
        &[d / 8, d / 4, d / 2, d]
    } else {
        &[d / 4, d / 2, d]
    };
    let mut s = b.scope("proj");
    let mut x = x.clone();
    let mut c_in = in_ch;
    for (j, &c) in widths.iter().enumerate() {
        if j > 0 {
            x = layers::act(&mut s, &m.act, &x)?;
        }
        let conv = Conv::new(c_in, c, 3).stride(2).init(Init::DefaultUniform);
        x = conv_bn(&mut s.scope(2 * j), &x, "0", "1", conv, 1e-5)?;
        c_in = c;
    }
    Ok(x)
}

/// `PositionalEncodingFourier(dim=dim)` for a `gh × gw` grid, computed at load: sin / cos
/// features of the normalised row and column positions (`hidden_dim` 32 each, interleaved as
/// timm stacks them), projected by the 1×1 `token_projection`; `[1, gh·gw, dim]` tokens.
fn fourier_pos_embed(b: &mut Builder, dim: usize, grid: (usize, usize)) -> Result<Value> {
    let hid = FOURIER_HIDDEN;
    let cin = 2 * hid;
    let (gh, gw) = grid;
    let w = b.read(
        "token_projection.weight",
        &[dim, cin, 1, 1],
        Init::DefaultUniform,
    )?;
    let bias = b.read("token_projection.bias", &[dim], Init::Zeros)?;
    // timm computes the features in float32.
    let scale = 2.0 * std::f32::consts::PI;
    let eps = 1e-6f32;
    let dim_t: Vec<f32> = (0..hid)
        .map(|i| FOURIER_TEMPERATURE.powf((2 * (i / 2)) as f32 / hid as f32))
        .collect();
    let feats = |pos: f32, out: &mut [f32]| {
        for (i, t) in dim_t.iter().enumerate() {
            let a = pos / t;
            out[i] = if i % 2 == 0 { a.sin() } else { a.cos() };
        }
    };
    let mut out = vec![0.0f32; gh * gw * dim];
    let mut f = vec![0.0f32; cin];
    for r in 0..gh {
        let y = (r + 1) as f32 / (gh as f32 + eps) * scale;
        for c in 0..gw {
            let x = (c + 1) as f32 / (gw as f32 + eps) * scale;
            feats(y, &mut f[..hid]);
            feats(x, &mut f[hid..]);
            let o = &mut out[(r * gw + c) * dim..(r * gw + c + 1) * dim];
            for (k, v) in o.iter_mut().enumerate() {
                let row = &w[k * cin..(k + 1) * cin];
                let s: f64 = row.iter().zip(&f).map(|(a, b)| *a as f64 * *b as f64).sum();
                *v = s as f32 + bias[k];
            }
        }
    }
    b.tensor("pos_encoding", out, &[1, gh * gw, dim])
}

/// `gamma · y` with the current scope's `name` `[dim]` (`eta` init).
fn gamma(b: &mut Builder, m: &Xcit, name: &str, y: &Value) -> Result<Value> {
    let g = b.param(name, &[m.dim], Init::Const(m.eta))?;
    Ok(layers::mul(b, y, &g))
}

/// `F.normalize(t, dim=-1)`: `t / max(‖t‖₂, 1e-12)` over the last axis.
fn l2_normalize(b: &mut Builder, t: &Value) -> Value {
    let axes = b.ints(&[-1]);
    let n = b.op("ReduceL2", &[t, &axes], vec![("keepdims", Attr::Int(1))]);
    let eps = b.scalar(1e-12);
    let n = b.op("Max", &[&n, &eps], vec![]);
    b.op("Div", &[t, &n], vec![])
}

/// `XCA`: q, k, v as `[N, heads, head_dim, L]`, q and k L2-normalised over the tokens, the
/// `head_dim × head_dim` cross-covariance times `temperature` `[heads, 1, 1]`, softmax, applied
/// to v, back to `[N, L, dim]`, `proj`.
fn xca(b: &mut Builder, m: &Xcit, x: &Value) -> Result<Value> {
    let (d, heads) = (m.dim, m.heads);
    let hd = d / heads;
    let init = Init::TruncNormal(0.02);
    let qkv = linear(&mut b.scope("qkv"), x, d, 3 * d, m.qkv_bias, init)?;
    let parts = layers::split(b, &qkv, -1, &[d; 3]);
    let view = |b: &mut Builder, t: &Value| {
        let t = layers::reshape(b, t, &[0, 0, heads as i64, hd as i64]);
        layers::transpose(b, &t, &[0, 2, 3, 1])
    };
    let q = view(b, &parts[0]);
    let q = l2_normalize(b, &q);
    let k = view(b, &parts[1]);
    let k = l2_normalize(b, &k);
    let v = view(b, &parts[2]);
    let kt = layers::transpose(b, &k, &[0, 1, 3, 2]);
    let attn = b.op("MatMul", &[&q, &kt], vec![]);
    let t = b.param("temperature", &[heads, 1, 1], Init::Ones)?;
    let attn = layers::mul(b, &attn, &t);
    let attn = b.op("Softmax", &[&attn], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&attn, &v], vec![]);
    let y = layers::transpose(b, &y, &[0, 3, 1, 2]);
    let y = layers::reshape(b, &y, &[0, 0, d as i64]);
    linear(&mut b.scope("proj"), &y, d, d, true, init)
}

/// `LPI` on tokens of a `gh × gw` grid: depthwise `conv1`, act, `bn`, depthwise `conv2`.
fn lpi(b: &mut Builder, m: &Xcit, x: &Value, grid: (usize, usize)) -> Result<Value> {
    let d = m.dim;
    let t = layers::transpose(b, x, &[0, 2, 1]);
    let t = layers::reshape(b, &t, &[0, d as i64, grid.0 as i64, grid.1 as i64]);
    let dw = || {
        Conv::new(d, d, 3)
            .pad(Pad::Sym(1))
            .depthwise()
            .bias(true)
            .init(Init::DefaultUniform)
    };
    let y = conv2d(&mut b.scope("conv1"), &t, dw())?;
    let y = layers::act(b, &m.act, &y)?;
    let y = layers::batch_norm(&mut b.scope("bn"), &y, d, 1e-5)?;
    let y = conv2d(&mut b.scope("conv2"), &y, dw())?;
    Ok(layers::nchw_to_tokens(b, &y, d))
}

/// `XCABlock`: `x + γ1·attn(norm1(x))`, `x + γ3·local_mp(norm3(x))`, `x + γ2·mlp(norm2(x))`.
fn xca_block(b: &mut Builder, m: &Xcit, x: &Value, grid: (usize, usize)) -> Result<Value> {
    let d = m.dim;
    let h = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = xca(&mut b.scope("attn"), m, &h)?;
    let y = gamma(b, m, "gamma1", &y)?;
    let x = layers::add(b, x, &y);
    let h = m.norm.apply_last(&mut b.scope("norm3"), &x, d)?;
    let y = lpi(&mut b.scope("local_mp"), m, &h, grid)?;
    let y = gamma(b, m, "gamma3", &y)?;
    let x = layers::add(b, &x, &y);
    let h = m.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let y = mlp(
        &mut b.scope("mlp"),
        &h,
        &MlpCfg::new(d, m.mlp_hidden, &m.act),
    )?;
    let y = gamma(b, m, "gamma2", &y)?;
    Ok(layers::add(b, &x, &y))
}

/// `ClassAttentionBlock` on [class, patches], as timm writes it: `x + γ1·[attn(n1), n1[1:]]`
/// with `n1 = norm1(x)`; `norm2` over every token (`tokens_norm`) or the class token only; then
/// `x + [γ2·mlp(x[0]), x[1:]]` (the patch tokens added to themselves).
fn class_attention_block(b: &mut Builder, m: &Xcit, x: &Value) -> Result<Value> {
    let d = m.dim;
    let n1 = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let a = attention::class_attn(&mut b.scope("attn"), &n1, m.dim, m.heads, m.qkv_bias)?;
    let rest = layers::slice(b, &n1, 1, 1, i64::MAX);
    let y = layers::concat(b, &[&a, &rest], 1);
    let y = gamma(b, m, "gamma1", &y)?;
    let x = layers::add(b, x, &y);
    let x = if m.tokens_norm {
        m.norm.apply_last(&mut b.scope("norm2"), &x, d)?
    } else {
        let c = layers::slice(b, &x, 1, 0, 1);
        let c = m.norm.apply_last(&mut b.scope("norm2"), &c, d)?;
        let rest = layers::slice(b, &x, 1, 1, i64::MAX);
        layers::concat(b, &[&c, &rest], 1)
    };
    let c = layers::slice(b, &x, 1, 0, 1);
    let c = mlp(
        &mut b.scope("mlp"),
        &c,
        &MlpCfg::new(d, m.mlp_hidden, &m.act),
    )?;
    let c = gamma(b, m, "gamma2", &c)?;
    let rest = layers::slice(b, &x, 1, 1, i64::MAX);
    let y = layers::concat(b, &[&c, &rest], 1);
    Ok(layers::add(b, &x, &y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_with_timms_width() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let m = Xcit::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.dim), "{name}");
            assert_eq!(
                m.patch,
                if name.contains("_p8_") { 8 } else { 16 },
                "{name}"
            );
            assert_eq!(m.tokens_norm, !name.contains("nano"), "{name}");
            assert_eq!(m.norm, Norm::Layer { eps: 1e-6 }, "{name}");
        }
        assert_eq!(TABLE.names().len(), 28);
    }

    #[test]
    fn a_patch_size_the_conv_stem_lacks_is_invalid() {
        let mut json = TABLE.get("xcit_nano_12_p16_224").unwrap().config.clone();
        json["model_args"] = serde_json::json!({"patch_size": 4});
        let e = Xcit::resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_INVALID_MODEL, "{e}");
    }
}
