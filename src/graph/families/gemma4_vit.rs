//! Gemma 4 vision towers (timm `gemma4_vit.py`): `Gemma4VitClassifier` (the encoder, optionally
//! its `soft` k×k token pool, mean pooling, a non-affine RMSNorm and the head).
//!
//! The encoder: `Gemma4PatchEmbed` (pixels scaled to [-1, 1], a bias-free linear over the
//! `(C, ph, pw)` patch, loaded as the equivalent conv; the 2-D position table looked up at the
//! patch's x and y), then `Gemma4Block`s with the four-norm sandwich (RMSNorm), attention with
//! separate bias-free q/k/v, RMS q/k norms and a non-affine v norm, Gemma's 2-D RoPE (x on the first
//! half of each head, y on the second, rotate-half within each) and scale 1, and a tanh-GELU gated
//! MLP. `use_clipped_linears` clamps each linear's input and output by its stored bounds.
//!
//! `Gemma4VitEncoder` (`*_enc`, its weights at the top level) has no `forward_head` (timm raises
//! for classification use): its forward is built as it is, with option `output=tokens` for the
//! token sequences of `global_pool='soft'` (the soft tokens) and `'none'` / `''` (the raw patch
//! tokens), and as the one vector of `'avg'`.
//!
//! Feature maps are `forward_intermediates` (`feature_cls='getter'`): every block's output on the
//! patch grid, by default the last three.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks, Rope};
use crate::graph::layers::conv::Conv;
use crate::graph::layers::encoder_tower::{read_pool, TowerOutput};
use crate::graph::layers::mlp::{linear, linear_2d};
use crate::graph::layers::patch_embed;
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::{self, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/gemma4_vit.json"));

/// The `gemma4_vit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "gemma4_vit",
    examples: "gemma4_vit_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Gemma4VitClassifier.__init__`, timm's defaults.
    pub struct Gemma4Args {
        img_size: Json = Json::from(768),
        patch_size: usize = 16,
        global_pool: String = "avg".into(),
        encoder_pool: String = String::new(),
        embed_dim: usize = 768,
        depth: usize = 16,
        num_heads: usize = 12,
        head_dim: usize = 64,
        num_kv_heads: Option<usize> = None,
        intermediate_size: usize = 3072,
        norm_eps: f64 = 1e-6,
        rope_theta: f64 = 100.0,
        position_embedding_size: usize = 10240,
        pooling_kernel_size: usize = 3,
        standardize: bool = false,
        use_clipped_linears: bool = false,
        final_norm: bool = true,
        act_layer: Option<String> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone)]
struct Gemma4 {
    patch: usize,
    dim: usize,
    depth: usize,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    eps: f32,
    theta: f32,
    pos_size: usize,
    /// `encoder_pool='soft'`: the k×k pool (and `standardize`).
    soft: Option<usize>,
    standardize: bool,
    clipped: bool,
    final_norm: bool,
    act: String,
    /// `Gemma4VitEncoder`: its own forward, no head.
    encoder: Option<TowerOutput>,
}

impl Gemma4 {
    fn resolve(cfg: &ModelConfig) -> Result<Gemma4> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a Gemma4 ViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        // Gemma4VitEncoder takes the classifier's arguments with its own global_pool.
        let mut v = Gemma4Args::read_only(&a)?;
        let encoder = if arch.ends_with("_enc") {
            let pools = [
                ("soft", TowerOutput::Tokens, "soft"),
                ("none", TowerOutput::Tokens, ""),
                ("", TowerOutput::Tokens, ""),
                ("avg", TowerOutput::Mean, ""),
            ];
            let (out, pool) = read_pool(&a, "Gemma4VitEncoder", "soft", &pools)?;
            (v.global_pool, v.encoder_pool, v.final_norm) = ("avg".into(), pool, false);
            Some(out)
        } else {
            None
        };
        a.finish()?;
        let (dim, heads, hd) = (v.embed_dim, v.num_heads, v.head_dim);
        if dim == 0 || heads == 0 || hd == 0 || hd % 4 != 0 {
            return Err(Error::invalid_model(
                "Gemma4 ViT needs positive widths and a head dim divisible by 4 (2-D rope)",
            ));
        }
        if v.num_kv_heads.is_some_and(|k| k != heads) {
            return Err(a.unsupported(
                "num_kv_heads",
                "grouped-query attention is not built natively",
            ));
        }
        if v.depth == 0
            || v.intermediate_size == 0
            || v.patch_size == 0
            || v.position_embedding_size == 0
        {
            return Err(Error::invalid_model(
                "Gemma4 ViT depth, mlp width, patch and position table must be positive",
            ));
        }
        let soft = match v.encoder_pool.as_str() {
            "" | "none" => None,
            "soft" if v.pooling_kernel_size == 0 => {
                return Err(Error::invalid_model("pooling_kernel_size must be positive"))
            }
            "soft" => Some(v.pooling_kernel_size),
            _ => return Err(a.unsupported("encoder_pool", "'', none or soft")),
        };
        if v.global_pool != "avg" {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one vector per image",
            ));
        }
        // img_size only sets timm's nominal grid; the graph takes the input's.
        let _ = &v.img_size;
        Ok(Gemma4 {
            patch: v.patch_size,
            dim,
            depth: v.depth,
            heads,
            head_dim: hd,
            hidden: v.intermediate_size,
            eps: v.norm_eps as f32,
            theta: v.rope_theta as f32,
            pos_size: v.position_embedding_size,
            soft,
            standardize: v.standardize,
            clipped: v.use_clipped_linears,
            final_norm: v.final_norm,
            act: v.act_layer.unwrap_or_else(|| "gelu_tanh".into()),
            encoder,
        })
    }
}

/// Non-affine RMSNorm over the last axis: `x / sqrt(mean(x²) + eps)`.
fn rms_plain(b: &mut Builder, x: &Value, eps: f32) -> Value {
    let axes = b.ints(&[-1]);
    let sq = b.op("Mul", &[x, x], vec![]);
    let ms = b.op(
        "ReduceMean",
        &[&sq, &axes],
        vec![("keepdims", Attr::Int(1))],
    );
    let e = b.scalar(eps);
    let v = b.op("Add", &[&ms, &e], vec![]);
    let s = b.op("Sqrt", &[&v], vec![]);
    b.op("Div", &[x, &s], vec![])
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = Gemma4::resolve(cfg)?;
    if let Some(out) = v.encoder {
        // `Gemma4VitEncoder.forward` as the model.
        out.check(b, &cfg.architecture, "Gemma4VitEncoder")?;
        let x = encoder(b, &v, cfg)?;
        let (h, w) = b.image_size();
        let k = v.soft.unwrap_or(1);
        return Ok(out.finish(b, &x, (h / v.patch / k) * (w / v.patch / k), v.dim));
    }
    let mut x = encoder(&mut b.scope("encoder"), &v, cfg)?;
    let d = v.dim;
    // forward_head: mean over the tokens, the non-affine norm, the head.
    x = global_pool_nlc(b, &x, TokenPool::Avg, 0, false);
    if v.final_norm {
        x = rms_plain(b, &x, v.eps);
    }
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

/// `Gemma4ClippableLinear` (bias-free `linear`, clamped by its bounds when `use_clipped`).
fn clip_linear(b: &mut Builder, v: &Gemma4, x: &Value, i: usize, o: usize) -> Result<Value> {
    let clip = |b: &mut Builder, x: &Value, lo: &str, hi: &str| -> Result<Value> {
        let lo = b.param(lo, &[], Init::Const(f32::NEG_INFINITY))?;
        let hi = b.param(hi, &[], Init::Const(f32::INFINITY))?;
        Ok(b.op("Clip", &[x, &lo, &hi], vec![]))
    };
    let mut x = x.clone();
    if v.clipped {
        x = clip(b, &x, "input_min", "input_max")?;
    }
    let mut y = linear(
        &mut b.scope("linear"),
        &x,
        i,
        o,
        false,
        Init::TruncNormal(0.02),
    )?;
    if v.clipped {
        y = clip(b, &y, "output_min", "output_max")?;
    }
    Ok(y)
}

/// `Gemma4VitEncoder.forward` (in the current scope) up to the tokens the classifier pools.
fn encoder(b: &mut Builder, v: &Gemma4, cfg: &ModelConfig) -> Result<Value> {
    let (h, w) = b.image_size();
    let p = v.patch;
    if h % p != 0 || w % p != 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is not a multiple of the Gemma4 ViT patch size {p} (timm's batch_patchify needs it)"
        )));
    }
    let grid = (h / p, w / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the Gemma4 ViT patch size {p}"
        )));
    }
    if let Some(k) = v.soft {
        if !grid.0.is_multiple_of(k) || !grid.1.is_multiple_of(k) {
            return Err(Error::invalid_argument(format!(
                "input {h}x{w} is not a multiple of patch_size * pooling_kernel_size = {} (timm raises for the soft pool)",
                p * k
            )));
        }
    }
    if grid.0 > v.pos_size || grid.1 > v.pos_size {
        return Err(Error::invalid_argument(format!(
            "a {}x{} patch grid exceeds the {}-entry position table",
            grid.0, grid.1, v.pos_size
        )));
    }
    let d = v.dim;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    // Patch embedding: 2·(x − 0.5), then the linear over (C, ph, pw) patches = a patch conv with
    // the same weight viewed as [D, C, ph, pw].
    let patches = {
        let s = &mut b.scope("patch_embed");
        let input = s.input();
        let two = s.scalar(2.0);
        let one = s.scalar(1.0);
        let x2 = s.op("Mul", &[&input, &two], vec![]);
        let x2 = s.op("Sub", &[&x2, &one], vec![]);
        let k = in_ch * p * p;
        let wt = s
            .scope("input_proj")
            .read("weight", &[d, k], Init::TruncNormal(0.02))?;
        let wt = s
            .scope("input_proj")
            .tensor("weight", wt, &[d, in_ch, p, p])?;
        let conv = Conv::new(in_ch, d, p)
            .stride(p)
            .pad(Pad::Explicit(0, 0, 0, 0))
            .bias(false);
        conv.emit(s, &x2, &wt, None)?
    };
    let mut x = layers::nchw_to_tokens(b, &patches, d);
    // Position table: row 0 indexed by x, row 1 by y.
    let table = {
        let s = &mut b.scope("patch_embed");
        s.read(
            "position_embedding_table",
            &[2, v.pos_size, d],
            Init::TruncNormal(0.02),
        )?
    };
    let (gh, gw) = grid;
    let mut pos = vec![0.0f32; gh * gw * d];
    for y in 0..gh {
        for xx in 0..gw {
            let o = &mut pos[(y * gw + xx) * d..][..d];
            let tx = &table[xx * d..][..d];
            let ty = &table[(v.pos_size + y) * d..][..d];
            for c in 0..d {
                o[c] = tx[c] + ty[c];
            }
        }
    }
    let pos = b
        .scope("patch_embed")
        .tensor("position_embedding_table", pos, &[1, gh * gw, d])?;
    x = layers::add(b, &x, &pos);
    let (cos, sin, rot) = rope_consts(b, v, grid);
    let norm = Norm::Rms { eps: v.eps };
    for i in 0..v.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, v, &norm, &x, (&cos, &sin, &rot))?;
        let map = patch_embed::token_map(s, &x, 0, &patches);
        // The classifier copies the encoder's feature_info unprefixed: `blocks.<i>`.
        s.feature(&map, d, p, &format!("blocks.{i}"));
    }
    b.default_out_indices(&[-3, -2, -1]);
    if v.standardize && v.soft.is_none() {
        // Only the soft pool applies them; timm still saves the buffers.
        b.ignore_weight("std_bias");
        b.ignore_weight("std_scale");
    }
    if let Some(k) = v.soft {
        x = soft_pool(b, v, &x, grid, k)?;
    }
    Ok(x)
}

/// `Gemma4VisionPooler`: the mean of each k×k cell of the token grid (cells row-major), times
/// √D, then `(x − std_bias) · std_scale` when `standardize`.
fn soft_pool(
    b: &mut Builder,
    v: &Gemma4,
    x: &Value,
    (gh, gw): (usize, usize),
    k: usize,
) -> Result<Value> {
    let d = v.dim as i64;
    let m = layers::reshape(b, x, &[0, gh as i64, gw as i64, d]);
    let m = layers::nhwc_to_nchw(b, &m);
    let ks = vec![k as i64, k as i64];
    let m = b.op(
        "AveragePool",
        &[&m],
        vec![
            ("kernel_shape", Attr::Ints(ks.clone())),
            ("strides", Attr::Ints(ks)),
        ],
    );
    let t = layers::nchw_to_tokens(b, &m, v.dim);
    let mut t = layers::scale(b, &t, (v.dim as f32).sqrt());
    if v.standardize {
        let bias = b.param("std_bias", &[v.dim], Init::Zeros)?;
        let scale = b.param("std_scale", &[v.dim], Init::Ones)?;
        t = b.op("Sub", &[&t, &bias], vec![]);
        t = b.op("Mul", &[&t, &scale], vec![]);
    }
    Ok(t)
}

/// `Gemma4RotaryEmbedding2D` + `apply_multidimensional_rope` as constants: cos / sin `[L, hd]`
/// (x frequencies on the first half, y on the second, each `cat(freqs, freqs)`) and the
/// block-diagonal rotate-half matrix of the two halves.
fn rope_consts(b: &mut Builder, v: &Gemma4, (gh, gw): (usize, usize)) -> (Value, Value, Value) {
    let hd = v.head_dim;
    let spatial = hd / 2;
    let nf = spatial / 2;
    // inv_freq = 1 / theta ** (arange(0, spatial, 2) / spatial), in f32.
    let inv: Vec<f32> = (0..nf)
        .map(|i| 1.0 / v.theta.powf((2 * i) as f32 / spatial as f32))
        .collect();
    let mut cos = Vec::with_capacity(gh * gw * hd);
    let mut sin = Vec::with_capacity(gh * gw * hd);
    for y in 0..gh {
        for x in 0..gw {
            for pos in [x as f32, y as f32] {
                for _ in 0..2 {
                    for f in &inv {
                        let a = pos * f;
                        cos.push(a.cos());
                        sin.push(a.sin());
                    }
                }
            }
        }
    }
    // rotate_half per part of `spatial`: out[j] = -x[j + m/2] (j < m/2), x[j − m/2] (j ≥ m/2).
    let half = spatial / 2;
    let mut r = vec![0.0f32; hd * hd];
    for part in 0..2 {
        let o = part * spatial;
        for j in 0..spatial {
            if j < half {
                r[(o + j + half) * hd + o + j] = -1.0;
            } else {
                r[(o + j - half) * hd + o + j] = 1.0;
            }
        }
    }
    let l = (gh * gw) as i64;
    let cos = b.const_f32(cos, &[l, hd as i64]);
    let sin = b.const_f32(sin, &[l, hd as i64]);
    let rot = b.const_f32(r, &[hd as i64, hd as i64]);
    (cos, sin, rot)
}

/// `Gemma4Block`: `x + norm2(attn(norm1(x)))`, `x + norm4(mlp(norm3(x)))`.
fn block(
    b: &mut Builder,
    v: &Gemma4,
    norm: &Norm,
    x: &Value,
    (cos, sin, rot): (&Value, &Value, &Value),
) -> Result<Value> {
    let d = v.dim;
    let inner = v.heads * v.head_dim;
    let h = norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = {
        let s = &mut b.scope("attn");
        let q = clip_linear(&mut s.scope("q_proj"), v, &h, d, inner)?;
        let k = clip_linear(&mut s.scope("k_proj"), v, &h, d, inner)?;
        let vv = clip_linear(&mut s.scope("v_proj"), v, &h, d, inner)?;
        // v_norm: RMS over each head without a gain.
        let hd = v.head_dim as i64;
        let vv = layers::reshape(s, &vv, &[0, 0, v.heads as i64, hd]);
        let vv = rms_plain(s, &vv, v.eps);
        let vv = layers::reshape(s, &vv, &[0, 0, inner as i64]);
        let rope = |b: &mut Builder, t: &Value| -> Result<Value> {
            let tc = b.op("Mul", &[t, cos], vec![]);
            let tr = b.op("MatMul", &[t, rot], vec![]);
            let ts = b.op("Mul", &[&tr, sin], vec![]);
            Ok(b.op("Add", &[&tc, &ts], vec![]))
        };
        let hooks = Hooks {
            bias: None,
            rope: Some(Rope::Heads(&rope)),
        };
        let mut c = AttnCfg::new(d, v.heads);
        c.inner = Some(inner);
        c.qk_norm = Some(*norm);
        c.scale = Some(1.0);
        let y = attention_core(s, &q, &k, &vv, &c, &hooks)?;
        let y = clip_linear(&mut s.scope("o_proj"), v, &y, inner, d)?;
        y
    };
    let y = norm.apply_last(&mut b.scope("norm2"), &y, d)?;
    let x = layers::add(b, x, &y);
    let h = norm.apply_last(&mut b.scope("norm3"), &x, d)?;
    let y = {
        let s = &mut b.scope("mlp");
        let g = clip_linear(&mut s.scope("gate_proj"), v, &h, d, v.hidden)?;
        let u = clip_linear(&mut s.scope("up_proj"), v, &h, d, v.hidden)?;
        let g = layers::act(s, &v.act, &g)?;
        let m = layers::mul(s, &g, &u);
        let y = clip_linear(&mut s.scope("down_proj"), v, &m, v.hidden, d)?;
        y
    };
    let y = norm.apply_last(&mut b.scope("norm4"), &y, d)?;
    Ok(layers::add(b, &x, &y))
}
