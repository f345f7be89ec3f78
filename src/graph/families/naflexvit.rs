//! NaFlexViT (timm `naflexvit.py`, `NaFlexVit`) on standard NCHW input: `NaFlexEmbeds` (the
//! linear patch projection over timm's `(ph, pw, C)` patch layout, or a conv; optional
//! `embed_norm`; a learned `[1, gh, gw, D]` or factorized `pos_embed_y` / `pos_embed_x` position
//! embedding resampled to the input's grid as timm does in forward; class and register tokens
//! before the patches), `norm_pre`, timm's pre-norm `Block`s, `norm`, token / avg / max pooling or
//! the `map` head (`AttentionPoolLatent`), `fc_norm` and the head.
//!
//! What the C ABI's one NCHW image tensor cannot express is refused: NaFlex's pre-patchified
//! `patch_coord` / `patch_valid` input (variable resolution per sample in one batch). The input
//! size is fixed per graph, so the position embedding is resampled once at load with timm's own
//! `F.interpolate` arguments (mode, antialias, align_corners, aspect-preserving square + crop).
//! The EVA / RoPE block variants (`rope_type`, `attn_type`, SwiGLU, gated attention, GQA) are
//! not built here; no registered architecture uses them.
//!
//! Feature maps are `forward_intermediates` (timm's `feature_cls='getter'`): every block's
//! output, prefix tokens dropped, on the patch grid; by default the last three blocks.

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::conv::Conv;
use crate::graph::layers::heads::attention_pool_latent;
use crate::graph::layers::mlp::{layer_scale, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{self, prefix_and_pos};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed::{interpolate_hwc, Interp, Resample};
use crate::graph::layers::{self, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/naflexvit.json"));

/// The `naflexvit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "naflexvit",
    examples: "naflexvit_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `NaFlexVitCfg`'s fields (the entrypoint's `cfg`, overlaid by `model_args` as
    /// `NaFlexVit.__init__` does) and the class's own `img_size`, with timm's defaults.
    pub struct NaFlexArgs {
        img_size: Json = Json::Null,
        patch_size: Json = Json::from(16),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        mlp_ratio: f64 = 4.0,
        scale_mlp_norm: bool = false,
        num_kv_heads: Json = Json::Null,
        qkv_bias: bool = true,
        qk_norm: bool = false,
        proj_bias: bool = true,
        scale_attn_inner_norm: bool = false,
        // Only shapes a mask for NaFlex (patch_valid) input; NCHW input has none.
        use_key_only_attn_mask: bool = false,
        init_values: Option<f64> = None,
        class_token: bool = false,
        reg_tokens: usize = 0,
        pos_embed: String = "learned".into(),
        pos_embed_grid_size: Json = Json::from(vec![16, 16]),
        pos_embed_interp_mode: String = "bicubic".into(),
        pos_embed_ar_preserving: bool = false,
        pos_embed_antialias: bool = true,
        pos_embed_align_corners: bool = false,
        // grid_sample only serves NaFlex (patch_coord) input.
        pos_embed_use_grid_sample: bool = false,
        rope_type: String = String::new(),
        rope_temperature: f64 = 10000.0,
        rope_ref_feat_shape: Json = Json::Null,
        rope_grid_offset: f64 = 0.0,
        rope_grid_indexing: String = "ij".into(),
        rope_rotate_half: bool = false,
        rope_shift_coords: Json = Json::Null,
        rope_jitter_coords: Json = Json::Null,
        rope_rescale_coords: Json = Json::Null,
        rope_mrope_section: Json = Json::Null,
        dynamic_img_pad: bool = false,
        patchify_channels_last: bool = true,
        pre_norm: bool = false,
        final_norm: bool = true,
        fc_norm: Option<bool> = None,
        global_pool: String = "map".into(),
        pool_include_prefix: bool = false,
        attn_pool_num_heads: Option<usize> = None,
        attn_pool_mlp_ratio: Option<f64> = None,
        embed_proj_type: String = "linear".into(),
        input_norm_layer: Json = Json::Null,
        embed_norm_layer: Json = Json::Null,
        norm_layer: Json = Json::Null,
        act_layer: Option<String> = None,
        block_fn: Json = Json::Null,
        mlp_layer: Json = Json::Null,
        attn_layer: Json = Json::Null,
        attn_type: String = "standard".into(),
        attn_gated: bool = false,
        swiglu_mlp: bool = false,
        swiglu_align_to: usize = 0,
        qkv_fused: bool = true,
        attn_only_layer_scale: bool = false,
        enable_patch_interpolator: bool = false,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// The position embedding of `NaFlexEmbeds`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PosEmbed {
    None,
    /// `pos_embed` `[1, gh, gw, D]`.
    Learned,
    /// `pos_embed_y` `[1, gh, D]` + `pos_embed_x` `[1, gw, D]`.
    Factorized,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Pool {
    Tokens(TokenPool),
    Map,
}

/// A `NaFlexVit` as timm constructs it from its config.
#[derive(Debug, Clone)]
struct NaFlex {
    patch: (usize, usize),
    dim: usize,
    depth: usize,
    attn: AttnCfg,
    mlp_hidden: usize,
    act: String,
    norm: Norm,
    embed_norm: Option<Norm>,
    /// `embed_proj_type='linear'` (else a conv).
    linear: bool,
    channels_last: bool,
    dynamic_img_pad: bool,
    scale_mlp_norm: bool,
    init_values: Option<f32>,
    class_token: bool,
    reg_tokens: usize,
    pos: PosEmbed,
    /// The stored position-embedding grid.
    pos_grid: (usize, usize),
    resample: Resample,
    ar_preserving: bool,
    pre_norm: bool,
    final_norm: bool,
    use_fc_norm: bool,
    pool: Pool,
    pool_include_prefix: bool,
    pool_heads: usize,
    pool_mlp_hidden: usize,
}

/// An int or an `[h, w]` pair.
fn pair(a: &Args, key: &str, v: &Json) -> Result<(usize, usize)> {
    let one = |j: &Json| {
        j.as_u64()
            .filter(|n| (1..=crate::graph::args::MAX_INT).contains(n))
            .map(|n| n as usize)
    };
    match v {
        Json::Array(hw) if hw.len() == 2 => one(&hw[0]).zip(one(&hw[1])),
        v => one(v).map(|n| (n, n)),
    }
    .ok_or_else(|| a.unsupported(key, "expected a positive integer or an [h, w] pair"))
}

/// `get_norm_layer` of a norm name (timm's LayerNorm / RmsNorm default to eps 1e-6).
fn norm_arg(a: &Args, key: &str, v: &Json) -> Result<Option<Norm>> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => match s.to_ascii_lowercase().replace('_', "").as_str() {
            n @ ("layernorm" | "rmsnorm" | "simplenorm") => Ok(Some(Norm::from_timm(n, None)?)),
            _ => Err(a.unsupported(key, "LayerNorm, RmsNorm or SimpleNorm")),
        },
        _ => Err(a.unsupported(key, "a norm layer name")),
    }
}

/// The table's `{"cfg": {...}}` and `model_args` flattened into one namespace of cfg fields, as
/// `_overlay_kwargs` does.
fn flat(m: &Map<String, Json>) -> Map<String, Json> {
    let mut out = Map::new();
    for (k, v) in m {
        match (k.as_str(), v) {
            ("cfg", Json::Object(c)) => out.extend(c.clone()),
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

impl NaFlex {
    fn resolve(cfg: &ModelConfig) -> Result<NaFlex> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a NaFlexViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&flat(&entry.args)), &flat(&cfg.model_args));
        let v = NaFlexArgs::read(&a)?;

        // The EVA-block path of get_block_fn.
        let rope = !matches!(v.rope_type.as_str(), "" | "none");
        for (key, on) in [
            ("rope_type", rope),
            ("attn_type", v.attn_type != "standard"),
            ("swiglu_mlp", v.swiglu_mlp),
            ("attn_gated", v.attn_gated),
            ("attn_only_layer_scale", v.attn_only_layer_scale),
            ("num_kv_heads", !v.num_kv_heads.is_null()),
            ("qkv_fused", !v.qkv_fused),
        ] {
            if on {
                return Err(a.unsupported(
                    key,
                    "NaFlexViT's EVA / RoPE block variants are not built natively",
                ));
            }
        }
        for (key, val) in [
            ("block_fn", &v.block_fn),
            ("mlp_layer", &v.mlp_layer),
            ("attn_layer", &v.attn_layer),
            ("input_norm_layer", &v.input_norm_layer),
        ] {
            if !val.is_null() {
                return Err(a.unsupported(key, "only timm's default layer is built natively"));
            }
        }
        if v.enable_patch_interpolator {
            return Err(a.unsupported(
                "enable_patch_interpolator",
                "variable patch sizes need NaFlex's pre-patchified input, which the C ABI's NCHW image cannot carry",
            ));
        }
        let patch = pair(&a, "patch_size", &v.patch_size)?;
        let pos = match v.pos_embed.as_str() {
            "" | "none" => PosEmbed::None,
            "learned" => PosEmbed::Learned,
            "factorized" => PosEmbed::Factorized,
            _ => return Err(a.unsupported("pos_embed", "learned, factorized or none")),
        };
        // NaFlexEmbeds: pos_embed_grid_size, else img_size // patch_size.
        let pos_grid = match (&v.pos_embed_grid_size, &v.img_size) {
            (Json::Null, Json::Null) if pos != PosEmbed::None => {
                return Err(Error::invalid_model(
                    "NaFlexViT position embedding without pos_embed_grid_size or img_size",
                ))
            }
            (Json::Null, Json::Null) => (1, 1),
            (Json::Null, img) => {
                let (h, w) = pair(&a, "img_size", img)?;
                (h / patch.0, w / patch.1)
            }
            (g, _) => pair(&a, "pos_embed_grid_size", g)?,
        };
        if pos != PosEmbed::None && (pos_grid.0 == 0 || pos_grid.1 == 0) {
            return Err(Error::invalid_model("NaFlexViT position grid is empty"));
        }
        let mode = match v.pos_embed_interp_mode.as_str() {
            "bicubic" => Interp::Bicubic,
            "bilinear" => Interp::Bilinear,
            _ => return Err(a.unsupported("pos_embed_interp_mode", "bicubic or bilinear")),
        };
        let linear = match v.embed_proj_type.as_str() {
            "linear" => true,
            "conv" => false,
            _ => return Err(a.unsupported("embed_proj_type", "linear or conv")),
        };
        let norm = norm_arg(&a, "norm_layer", &v.norm_layer)?.unwrap_or(Norm::Layer { eps: 1e-6 });
        let embed_norm = norm_arg(&a, "embed_norm_layer", &v.embed_norm_layer)?;
        let (dim, heads) = (v.embed_dim, v.num_heads);
        if heads == 0 || dim == 0 || dim % heads != 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim} is not divisible by num_heads {heads}"
            )));
        }
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if v.depth == 0 || mlp_hidden == 0 {
            return Err(Error::invalid_model(
                "NaFlexViT depth and mlp width must be positive",
            ));
        }
        let pool = match v.global_pool.as_str() {
            "map" => Pool::Map,
            "" => {
                return Err(a.unsupported(
                    "global_pool",
                    "no pooling; native graphs return one vector per image",
                ))
            }
            p @ ("avg" | "avgmax" | "max" | "token") => Pool::Tokens(TokenPool::from_timm(p)?),
            _ => return Err(a.unsupported("global_pool", "avg, avgmax, max, token or map")),
        };
        if pool == Pool::Tokens(TokenPool::Token) && !v.class_token {
            return Err(Error::invalid_model(
                "global_pool 'token' needs the class token (class_token=false)",
            ));
        }
        let pool_heads = v.attn_pool_num_heads.filter(|&h| h > 0).unwrap_or(heads);
        if pool == Pool::Map && dim % pool_heads != 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim} is not divisible by attn_pool_num_heads {pool_heads}"
            )));
        }
        // `attn_pool_mlp_ratio or mlp_ratio`.
        let pool_ratio = v
            .attn_pool_mlp_ratio
            .filter(|&r| r != 0.0)
            .unwrap_or(v.mlp_ratio);
        let mut attn = AttnCfg::new(dim, heads);
        attn.qkv_bias = v.qkv_bias;
        attn.proj_bias = v.proj_bias;
        attn.qk_norm = v.qk_norm.then_some(norm);
        attn.attn_norm = v.scale_attn_inner_norm.then_some(norm);
        Ok(NaFlex {
            patch,
            dim,
            depth: v.depth,
            attn,
            mlp_hidden,
            act: v.act_layer.unwrap_or_else(|| "gelu".into()),
            norm,
            embed_norm,
            linear,
            channels_last: v.patchify_channels_last,
            dynamic_img_pad: v.dynamic_img_pad,
            scale_mlp_norm: v.scale_mlp_norm,
            init_values: v.init_values.map(|x| x as f32),
            class_token: v.class_token,
            reg_tokens: v.reg_tokens,
            pos,
            pos_grid,
            resample: Resample {
                mode,
                antialias: v.pos_embed_antialias,
                align_corners: v.pos_embed_align_corners,
            },
            ar_preserving: v.pos_embed_ar_preserving,
            pre_norm: v.pre_norm,
            final_norm: v.final_norm,
            // fc_norm None: on for avg pooling.
            use_fc_norm: v.fc_norm.unwrap_or(pool == Pool::Tokens(TokenPool::Avg)),
            pool,
            pool_include_prefix: v.pool_include_prefix,
            pool_heads,
            pool_mlp_hidden: (dim as f64 * pool_ratio) as usize,
        })
    }

    fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.reg_tokens
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = NaFlex::resolve(cfg)?;
    let (h, w) = b.image_size();
    let (ph, pw) = v.patch;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    // dynamic_img_pad: zeros after the last row / column. Without it the conv drops a remainder
    // while batch_patchify (linear) cannot view a non-multiple.
    let pad = if v.dynamic_img_pad {
        ((ph - h % ph) % ph, (pw - w % pw) % pw)
    } else {
        if v.linear && (h % ph != 0 || w % pw != 0) {
            return Err(Error::invalid_argument(format!(
                "input {h}x{w} is not a multiple of the NaFlexViT patch {ph}x{pw} (timm's batch_patchify needs it without dynamic_img_pad)"
            )));
        }
        (0, 0)
    };
    let grid = ((h + pad.0) / ph, (w + pad.1) / pw);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the NaFlexViT patch {ph}x{pw}"
        )));
    }
    let input = b.input();
    let patches = embeds_proj(&mut b.scope("embeds").scope("proj"), &v, &input, in_ch, pad)?;
    let mut x = layers::nchw_to_tokens(b, &patches, v.dim);
    if let Some(n) = &v.embed_norm {
        x = n.apply_last(&mut b.scope("embeds").scope("norm"), &x, v.dim)?;
    }
    let pos = pos_embed(&mut b.scope("embeds"), &v, grid)?;
    let mut prefix = Vec::new();
    {
        let s = &mut b.scope("embeds");
        if v.class_token {
            prefix.push(s.param("cls_token", &[1, 1, v.dim], Init::Normal(1e-6))?);
        }
        if v.reg_tokens > 0 {
            prefix.push(s.param("reg_token", &[1, v.reg_tokens, v.dim], Init::Normal(1e-6))?);
        }
    }
    // Position embedding over the patches only, then the prefix tokens before them.
    let n_pre = v.num_prefix_tokens();
    x = prefix_and_pos(b, &x, &prefix, n_pre, pos.as_ref(), true, v.dim);
    if v.pre_norm {
        x = v.norm.apply_last(&mut b.scope("norm_pre"), &x, v.dim)?;
    }
    for i in 0..v.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, &v, &x)?;
        let map = patch_embed::token_map(s, &x, n_pre, &patches);
        let module = s.path().to_string();
        s.feature(&map, v.dim, ph.max(pw), &module);
    }
    // _create_naflexvit's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);
    head(b, &v, cfg, x)
}

/// `embeds.proj` as a patch conv: timm's `nn.Linear` over `batch_patchify`'s flat patch (`(ph,
/// pw, C)` with `patchify_channels_last`, else `(C, ph, pw)`) is that conv with the weight laid
/// out as `[D, C, ph, pw]`, permuted once at load.
fn embeds_proj(
    b: &mut Builder,
    v: &NaFlex,
    x: &Value,
    in_ch: usize,
    pad: (usize, usize),
) -> Result<Value> {
    let (ph, pw) = v.patch;
    let d = v.dim;
    // proj_bias = not pre_norm.
    let bias = !v.pre_norm;
    let conv = Conv::new(in_ch, d, ph)
        .kernel2(ph, pw)
        .stride(ph)
        .pad(Pad::Explicit(0, 0, pad.0, pad.1))
        .bias(bias)
        .init(Init::DefaultUniform);
    if ph != pw {
        return Err(Error::unsupported(
            "NaFlexViT with a non-square patch: the native patch conv has one stride",
        ));
    }
    let w = if v.linear {
        let k = ph * pw * in_ch;
        let lin = b.read("weight", &[d, k], Init::TruncNormal(0.02))?;
        let mut out = vec![0.0f32; d * k];
        for o in 0..d {
            for c in 0..in_ch {
                for y in 0..ph {
                    for xx in 0..pw {
                        let src = if v.channels_last {
                            (y * pw + xx) * in_ch + c
                        } else {
                            (c * ph + y) * pw + xx
                        };
                        out[o * k + (c * ph + y) * pw + xx] = lin[o * k + src];
                    }
                }
            }
        }
        b.tensor("weight", out, &[d, in_ch, ph, pw])?
    } else {
        b.param("weight", &conv.weight_shape(), Init::DefaultUniform)?
    };
    let bias = if bias {
        Some(b.param("bias", &[d], Init::Zeros)?)
    } else {
        None
    };
    conv.emit(b, x, &w, bias.as_ref())
}

/// `_apply_learned_pos_embed` / `_apply_factorized_pos_embed` for the fixed grid: the stored
/// table resampled as timm's forward does (aspect-preserving: to the square of the longer side,
/// then the top-left crop), `[1, gh·gw, D]`.
fn pos_embed(b: &mut Builder, v: &NaFlex, grid: (usize, usize)) -> Result<Option<Value>> {
    let d = v.dim;
    let (oh, ow) = v.pos_grid;
    let (gh, gw) = grid;
    let target = if v.ar_preserving {
        let l = gh.max(gw);
        (l, l)
    } else {
        grid
    };
    let crop = |data: Vec<f32>, (th, tw): (usize, usize)| -> Vec<f32> {
        let mut out = Vec::with_capacity(gh * gw * d);
        for y in 0..gh {
            out.extend_from_slice(&data[(y * tw) * d..(y * tw + gw) * d]);
        }
        debug_assert!(th >= gh);
        out
    };
    match v.pos {
        PosEmbed::None => Ok(None),
        PosEmbed::Learned => {
            let shape = [1, oh, ow, d];
            if (gh, gw) == (oh, ow) {
                // Stored grid: used as is, no resampling.
                let p = b.param("pos_embed", &shape, Init::Normal(0.02))?;
                return Ok(Some(layers::reshape(
                    b,
                    &p,
                    &[1, (oh * ow) as i64, d as i64],
                )));
            }
            let data = b.read("pos_embed", &shape, Init::Normal(0.02))?;
            let r = interpolate_hwc(&data, (oh, ow), d, target, &v.resample);
            let out = crop(r, target);
            Ok(Some(b.tensor("pos_embed", out, &[1, gh * gw, d])?))
        }
        PosEmbed::Factorized => {
            // 1-D `F.interpolate(mode='linear', align_corners=False)`, no antialias: the
            // bilinear kernel on a width-1 grid.
            let lin = Resample {
                mode: Interp::Bilinear,
                antialias: false,
                align_corners: false,
            };
            let mut axis = |name: &str, n0: usize, n1: usize, keep: usize| -> Result<Vec<f32>> {
                let t = b.read(name, &[1, n0, d], Init::Normal(0.02))?;
                let t = if n0 == n1 {
                    t
                } else {
                    interpolate_hwc(&t, (n0, 1), d, (n1, 1), &lin)
                };
                Ok(t[..keep * d].to_vec())
            };
            let py = axis("pos_embed_y", oh, target.0, gh)?;
            let px = axis("pos_embed_x", ow, target.1, gw)?;
            let mut out = vec![0.0f32; gh * gw * d];
            for y in 0..gh {
                for x in 0..gw {
                    let o = &mut out[(y * gw + x) * d..][..d];
                    for c in 0..d {
                        o[c] = py[y * d + c] + px[x * d + c];
                    }
                }
            }
            Ok(Some(b.tensor("pos_embed", out, &[1, gh * gw, d])?))
        }
    }
}

/// timm's pre-norm `Block`: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`.
fn block(b: &mut Builder, v: &NaFlex, x: &Value) -> Result<Value> {
    let d = v.dim;
    let ls = |b: &mut Builder, name: &str, y: Value| match v.init_values.filter(|x| *x != 0.0) {
        Some(init) => layer_scale(&mut b.scope(name), &y, d, init),
        None => Ok(y),
    };
    let h = v.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = attention(&mut b.scope("attn"), &h, &v.attn, &Hooks::default())?;
    let y = ls(b, "ls1", y)?;
    let x = layers::add(b, x, &y);
    let h = v.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let c = MlpCfg::new(d, v.mlp_hidden, &v.act)
        .bias(v.attn.proj_bias)
        .norm(v.scale_mlp_norm.then_some(v.norm));
    let y = mlp(&mut b.scope("mlp"), &h, &c)?;
    let y = ls(b, "ls2", y)?;
    Ok(layers::add(b, &x, &y))
}

/// `norm`, `_pool`, `fc_norm` and the head; `output=features` stops after `fc_norm`
/// (`forward_head(pre_logits=True)`).
fn head(b: &mut Builder, v: &NaFlex, cfg: &ModelConfig, x: Value) -> Result<(Value, usize)> {
    let d = v.dim;
    let classes = cfg.num_classes;
    let features = b.output() == OutputKind::Features || classes == 0;
    let mut x = x;
    if v.final_norm && !v.use_fc_norm {
        x = v.norm.apply_last(&mut b.scope("norm"), &x, d)?;
    }
    let n_pre = v.num_prefix_tokens();
    let mut x = match v.pool {
        Pool::Tokens(p) => global_pool_nlc(b, &x, p, n_pre, v.pool_include_prefix),
        Pool::Map => {
            let t = if n_pre > 0 && !v.pool_include_prefix {
                layers::slice(b, &x, 1, n_pre as i64, i64::MAX)
            } else {
                x
            };
            let s = &mut b.scope("attn_pool");
            let (heads, hidden) = (v.pool_heads, v.pool_mlp_hidden);
            attention_pool_latent(s, &t, d, heads, hidden, &v.norm, &v.act, true)?
        }
    };
    if v.final_norm && v.use_fc_norm {
        x = v.norm.apply_last(&mut b.scope("fc_norm"), &x, d)?;
    }
    if features {
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
