//! EVA (timm `eva.py`): EVA / EVA02, the SBB rope ViTs, Perception Encoder (PE core / lang /
//! spatial), the Naver rope ViTs (axial and mixed), DINOv3, LingBot-Vision and Sapiens2 — one
//! `Eva` class: a ViT whose attention rotates q and k with a rotary position embedding (prefix
//! tokens unrotated), with q/v-only bias, optional SwiGLU with its sub-norm, layer scale,
//! pre- / post-norm blocks and an attention-pool (MAP) head.
//!
//! The rotary tables are non-persistent buffers in timm, computed at load here for the input's
//! token grid (`layers::rope`). Feature maps are timm's `forward_intermediates` (every block,
//! `norm=False`, prefix tokens dropped, NCHW), by default the last three blocks.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks, Rope};
use crate::graph::layers::heads::attention_pool_latent;
use crate::graph::layers::mlp::{glu_mlp, linear, linear_2d, mlp, swiglu, MlpCfg};
use crate::graph::layers::patch_embed::{self, patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed::{self, Resample};
use crate::graph::layers::rope::{self, GridType, RopeConsts, RopeGrid};
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/eva.json"));

/// The `eva` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "eva",
    examples:
        "eva02_*, eva_giant_*, vit_*_rope_*, vit_pe_*, vit_*_dinov3*, vit_*_lingbot, vit_*_sapiens2",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Eva.__init__`'s keyword arguments with timm's defaults.
    pub struct EvaArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 16,
        global_pool: String = "avg".into(),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        num_kv_heads: Json = Json::Null,
        qkv_bias: bool = true,
        qkv_fused: bool = true,
        qk_norm: bool = false,
        mlp_ratio: f64 = 4.0,
        swiglu_mlp: bool = false,
        swiglu_align_to: usize = 0,
        scale_mlp: bool = false,
        scale_attn_inner: bool = false,
        attn_type: String = "eva".into(),
        norm_layer: Json = Json::Null,
        init_values: Option<f64> = None,
        attn_only_layer_scale: bool = false,
        class_token: bool = true,
        num_reg_tokens: usize = 0,
        no_embed_class: bool = false,
        use_abs_pos_emb: bool = true,
        use_rot_pos_emb: bool = false,
        rope_type: Option<String> = Some("cat".into()),
        rope_grid_offset: f64 = 0.0,
        rope_grid_indexing: String = "ij".into(),
        rope_temperature: f64 = 10000.0,
        rope_rotate_half: bool = false,
        // Train-time coordinate augmentations: no effect in eval.
        rope_shift_coords: Option<f64> = None,
        rope_jitter_coords: Option<f64> = None,
        rope_rescale_coords: Option<f64> = None,
        rope_mrope_section: Json = Json::Null,
        use_post_norm: bool = false,
        use_pre_transformer_norm: bool = false,
        use_post_transformer_norm: Option<bool> = None,
        use_fc_norm: Option<bool> = None,
        attn_pool_num_heads: Option<usize> = None,
        attn_pool_mlp_ratio: Option<f64> = None,
        dynamic_img_size: bool = false,
        dynamic_img_pad: bool = false,
        ref_feat_shape: Json = Json::Null,
        use_naflex: Option<bool> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// Which rotary embedding `create_rope_embed` makes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RopeKind {
    Cat,
    Mixed,
    DinoV3,
}

/// The model's pooling: a token pool or the attention pool (`map`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pool {
    Tokens(TokenPool),
    Map { heads: usize, hidden: usize },
}

/// An `Eva` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Eva {
    patch: usize,
    /// `patch_embed.grid_size`: the grid of the stored position embedding.
    grid: (usize, usize),
    dim: usize,
    depth: usize,
    heads: usize,
    /// Each block's key / value heads (grouped-query attention where fewer than `heads`).
    kv_heads: Vec<usize>,
    /// `AttentionRope` (`attn_type='rope'`) rather than `EvaAttention`.
    attn_rope: bool,
    qkv_bias: bool,
    qkv_fused: bool,
    qk_norm: bool,
    scale_attn_inner: bool,
    mlp: MlpKind,
    norm: Norm,
    init_values: Option<f32>,
    attn_only_layer_scale: bool,
    post_norm: bool,
    class_token: bool,
    reg_tokens: usize,
    no_embed_class: bool,
    abs_pos: bool,
    rope: Option<(RopeKind, RopeGrid, f32, bool)>,
    pre_norm: bool,
    final_norm: bool,
    fc_norm: bool,
    pool: Pool,
}

/// `EvaBlock`'s MLP choice.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MlpKind {
    /// `Mlp` (GELU), `norm` with `scale_mlp`.
    Mlp { hidden: usize, norm: bool },
    /// `SwiGLU` (separate `fc1_g` / `fc1_x`), `norm` with `scale_mlp`.
    SwiGlu { hidden: usize, norm: bool },
    /// `GluMlp` with packed `fc1` (SwiGLU without norm or alignment).
    GluPacked { hidden: usize },
}

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

/// `norm_layer`: timm's `LayerNorm` (eps 1e-6) by default, or a `partial` with its eps.
fn norm_layer(a: &Args, v: &Json) -> Result<Norm> {
    let (name, eps) = match v {
        Json::Null => ("layernorm", None),
        Json::String(s) => (s.as_str(), None),
        Json::Object(o) => (
            o.get("partial").and_then(Json::as_str).unwrap_or(""),
            o.get("eps").and_then(Json::as_f64).map(|e| e as f32),
        ),
        _ => ("", None),
    };
    match name {
        "layernorm" => Ok(Norm::Layer {
            eps: eps.unwrap_or(1e-6),
        }),
        "rmsnorm" => Ok(Norm::Rms {
            eps: eps.unwrap_or(1e-6),
        }),
        _ => Err(a.unsupported("norm_layer", "only LayerNorm and RmsNorm")),
    }
}

impl Eva {
    fn resolve(cfg: &ModelConfig) -> Result<Eva> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not an EVA architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = EvaArgs::read(&a)?;
        if v.use_naflex == Some(true) {
            return Err(a.unsupported("use_naflex", "NaFlexVit"));
        }
        if v.dynamic_img_pad {
            return Err(a.unsupported("dynamic_img_pad", "padding to the patch size"));
        }
        let img = match &v.img_size {
            Json::Null => (224, 224),
            j => pair(&a, "img_size", j)?,
        };
        let (dim, heads, p) = (v.embed_dim, v.num_heads, v.patch_size);
        if heads == 0 || dim == 0 || dim % heads != 0 || v.depth == 0 || img.0 < p || img.1 < p {
            return Err(Error::invalid_model(format!(
                "EVA embed_dim {dim} must be a positive multiple of num_heads {heads}, depth positive, \
                 img_size at least the patch"
            )));
        }
        // Grouped-query attention (Sapiens2): an int for every block or one per block.
        let kv_heads: Vec<usize> = match &v.num_kv_heads {
            Json::Null => vec![heads; v.depth],
            Json::Number(n) => vec![n.as_u64().unwrap_or(0) as usize; v.depth],
            Json::Array(hs) => hs
                .iter()
                .map(|h| h.as_u64().unwrap_or(0) as usize)
                .collect(),
            _ => Vec::new(),
        };
        if kv_heads.len() != v.depth || kv_heads.iter().any(|&k| k == 0 || heads % k != 0) {
            return Err(Error::invalid_model(format!(
                "num_kv_heads {} must give {} blocks a positive divisor of num_heads {heads}",
                v.num_kv_heads, v.depth
            )));
        }
        // timm asserts it: fewer key / value heads only with AttentionRope's separate projections.
        if kv_heads.iter().any(|&k| k != heads) && (v.attn_type != "rope" || v.qkv_fused) {
            return Err(Error::invalid_model(
                "grouped-query attention (num_kv_heads) needs attn_type='rope' and qkv_fused=False",
            ));
        }
        if !v.rope_mrope_section.is_null() {
            return Err(a.unsupported("rope_mrope_section", "multimodal RoPE"));
        }
        let norm = norm_layer(&a, &v.norm_layer)?;
        let hidden = (dim as f64 * v.mlp_ratio) as usize;
        let mlp = if v.swiglu_mlp && (v.scale_mlp || v.swiglu_align_to > 0) {
            let al = v.swiglu_align_to;
            let hidden = if al > 0 {
                hidden.div_ceil(al) * al
            } else {
                hidden
            };
            MlpKind::SwiGlu {
                hidden,
                norm: v.scale_mlp,
            }
        } else if v.swiglu_mlp {
            MlpKind::GluPacked { hidden }
        } else {
            MlpKind::Mlp {
                hidden,
                norm: v.scale_mlp,
            }
        };
        let grid = (img.0 / p, img.1 / p);
        let rope = if v.use_rot_pos_emb {
            let kind = match v.rope_type.as_deref() {
                Some("cat") | None => RopeKind::Cat,
                Some("mixed") => RopeKind::Mixed,
                Some("dinov3") => RopeKind::DinoV3,
                Some(_) => return Err(a.unsupported("rope_type", "cat, mixed or dinov3")),
            };
            let xy = match v.rope_grid_indexing.as_str() {
                "ij" => false,
                "xy" => true,
                _ => return Err(a.unsupported("rope_grid_indexing", "ij or xy")),
            };
            let ref_shape = match (&v.ref_feat_shape, kind) {
                (Json::Null, _) | (_, RopeKind::Mixed | RopeKind::DinoV3) => None,
                (j, RopeKind::Cat) => Some(pair(&a, "ref_feat_shape", j)?),
            };
            let g = RopeGrid {
                grid_type: if kind == RopeKind::DinoV3 {
                    GridType::Centered
                } else {
                    GridType::Index
                },
                xy,
                // Mixed builds its grid without an offset.
                offset: if kind == RopeKind::Mixed {
                    0.0
                } else {
                    v.rope_grid_offset as f32
                },
                ref_shape,
            };
            if kind == RopeKind::Mixed && v.rope_rotate_half {
                return Err(Error::invalid_model(
                    "rope_type='mixed' requires rotate_half=False",
                ));
            }
            if (dim / heads) % 4 != 0 {
                return Err(Error::invalid_model(
                    "rotary embeddings need a head dim divisible by 4",
                ));
            }
            Some((kind, g, v.rope_temperature as f32, v.rope_rotate_half))
        } else {
            None
        };
        let fc_norm = v.use_fc_norm.unwrap_or(v.global_pool == "avg");
        let final_norm = v.use_post_transformer_norm.unwrap_or(!fc_norm);
        let pool = match v.global_pool.as_str() {
            "map" => Pool::Map {
                heads: v.attn_pool_num_heads.unwrap_or(heads),
                hidden: (dim as f64 * v.attn_pool_mlp_ratio.unwrap_or(v.mlp_ratio)) as usize,
            },
            "" => {
                return Err(a.unsupported(
                    "global_pool",
                    "no pooling; native graphs return one vector per image",
                ))
            }
            s => Pool::Tokens(TokenPool::from_timm(s)?),
        };
        if pool == Pool::Tokens(TokenPool::Token) && !v.class_token {
            return Err(Error::invalid_model("token pooling needs the class token"));
        }
        Ok(Eva {
            patch: p,
            grid,
            dim,
            depth: v.depth,
            heads,
            kv_heads,
            attn_rope: v.attn_type == "rope",
            qkv_bias: v.qkv_bias,
            qkv_fused: v.qkv_fused,
            qk_norm: v.qk_norm,
            scale_attn_inner: v.scale_attn_inner,
            mlp,
            norm,
            init_values: v.init_values.map(|x| x as f32),
            attn_only_layer_scale: v.attn_only_layer_scale,
            post_norm: v.use_post_norm,
            class_token: v.class_token,
            reg_tokens: v.num_reg_tokens,
            no_embed_class: v.no_embed_class,
            abs_pos: v.use_abs_pos_emb,
            rope,
            pre_norm: v.use_pre_transformer_norm,
            final_norm,
            fc_norm,
            pool,
        })
    }

    fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token) + self.reg_tokens
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = Eva::resolve(cfg)?;
    let (h, w) = b.image_size();
    let p = v.patch;
    // timm's PatchEmbed drops a remainder (strict off with dynamic_img_size; img_size= with
    // another size builds the grid it covers).
    let grid = (h / p, w / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the EVA patch size {p}"
        )));
    }
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: v.dim,
        patch: p,
        bias: !v.pre_norm,
        pad: (0, 0),
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let tokens = layers::nchw_to_tokens(b, &patches, v.dim);
    let mut x = pos_embed_tokens(b, &v, &tokens, grid)?;
    if v.pre_norm {
        x = v.norm.apply_last(&mut b.scope("norm_pre"), &x, v.dim)?;
    }
    let mixed_freqs = match v.rope {
        Some((RopeKind::Mixed, ..)) => {
            let hd2 = v.dim / v.heads / 2;
            Some(b.read(
                "rope.freqs",
                &[2, v.depth, v.heads, hd2],
                Init::TruncNormal(0.02),
            )?)
        }
        _ => None,
    };
    let shared = match &v.rope {
        Some((kind, g, temp, half)) if *kind != RopeKind::Mixed => {
            let hd = v.dim / v.heads;
            let t = match kind {
                RopeKind::Cat => rope::rotary_embedding_cat(hd, *temp, g, grid, *half)?,
                _ => rope::rotary_embedding_dinov3(hd, *temp, g, grid, *half)?,
            };
            Some(RopeConsts::new(b, t, *half, v.num_prefix_tokens()))
        }
        _ => None,
    };
    for i in 0..v.depth {
        let per_block = match (&v.rope, &mixed_freqs) {
            (Some((_, g, ..)), Some(freqs)) => {
                let hd = v.dim / v.heads;
                let t = rope::rotary_embedding_mixed(freqs, v.depth, v.heads, hd, i, g, grid)?;
                Some(RopeConsts::new(b, t, false, v.num_prefix_tokens()))
            }
            _ => None,
        };
        let r = per_block.as_ref().or(shared.as_ref());
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, &v, &x, r, v.kv_heads[i])?;
        let map = patch_embed::token_map(s, &x, v.num_prefix_tokens(), &patches);
        let module = s.path().to_string();
        s.feature(&map, v.dim, p, &module);
    }
    // _create_eva's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);
    head(b, &v, cfg, x)
}

/// `_pos_embed`: class / register tokens and the learned position embedding (resampled at load
/// for another grid, bicubic with antialias as timm's `resample_abs_pos_embed`).
fn pos_embed_tokens(b: &mut Builder, v: &Eva, x: &Value, grid: (usize, usize)) -> Result<Value> {
    let d = v.dim;
    let mut prefix = Vec::new();
    if v.class_token {
        prefix.push(b.param("cls_token", &[1, 1, d], Init::TruncNormal(0.02))?);
    }
    if v.reg_tokens > 0 {
        prefix.push(b.param("reg_token", &[1, v.reg_tokens, d], Init::TruncNormal(0.02))?);
    }
    let n_pre = if v.no_embed_class {
        0
    } else {
        v.num_prefix_tokens()
    };
    let pos = if v.abs_pos {
        let shape = [1, n_pre + v.grid.0 * v.grid.1, d];
        let init = Init::TruncNormal(0.02);
        Some(if grid != v.grid {
            let data = b.read("pos_embed", &shape, init)?;
            let r = Resample::default();
            let data = pos_embed::resample_abs_pos_embed(&data, d, v.grid, grid, n_pre, &r)?;
            b.tensor("pos_embed", data, &[1, n_pre + grid.0 * grid.1, d])?
        } else {
            b.param("pos_embed", &shape, init)?
        })
    } else {
        None
    };
    // DeiT III / big_vision (`no_embed_class`): the embedding covers the patches only.
    Ok(patch_embed::prefix_and_pos(
        b,
        x,
        &prefix,
        v.num_prefix_tokens(),
        pos.as_ref(),
        v.no_embed_class,
        d,
    ))
}

/// `EvaAttention` / `AttentionRope`: q, k, v projections (fused `qkv` with EVA's `q_bias` /
/// `v_bias`, or `q_proj` / `k_proj` / `v_proj`), q/k norms, rope after the prefix tokens,
/// `norm` (`scale_attn_inner`) and `proj`. With fewer key / value heads than query heads
/// (grouped-query attention) each k / v head serves `heads / kv_heads` query heads in turn, as
/// timm's `repeat_interleave`.
fn eva_attention(
    b: &mut Builder,
    v: &Eva,
    x: &Value,
    r: Option<&RopeConsts>,
    kv_heads: usize,
) -> Result<Value> {
    let d = v.dim;
    let init = Init::TruncNormal(0.02);
    let (q, k, val) = if v.qkv_fused {
        // EvaAttention keeps the bias out of the Linear (k has none); AttentionRope's is qkv.bias.
        let qkv = if v.attn_rope {
            linear(&mut b.scope("qkv"), x, d, 3 * d, v.qkv_bias, init)?
        } else {
            let y = linear(&mut b.scope("qkv"), x, d, 3 * d, false, init)?;
            if v.qkv_bias {
                let qb = b.param("q_bias", &[d], Init::Zeros)?;
                let vb = b.param("v_bias", &[d], Init::Zeros)?;
                let kb = b.const_f32(vec![0.0; d], &[d as i64]);
                let bias = layers::concat(b, &[&qb, &kb, &vb], 0);
                layers::add(b, &y, &bias)
            } else {
                y
            }
        };
        let parts = layers::split(b, &qkv, -1, &[d; 3]);
        (parts[0].clone(), parts[1].clone(), parts[2].clone())
    } else {
        let k_bias = v.qkv_bias && v.attn_rope;
        let hd = d / v.heads;
        let kv = kv_heads * hd;
        let q = linear(&mut b.scope("q_proj"), x, d, d, v.qkv_bias, init)?;
        let k = linear(&mut b.scope("k_proj"), x, d, kv, k_bias, init)?;
        let val = linear(&mut b.scope("v_proj"), x, d, kv, v.qkv_bias, init)?;
        if kv_heads == v.heads {
            (q, k, val)
        } else {
            let groups = (v.heads / kv_heads) as i64;
            let shape = [0, 0, kv_heads as i64, 1, hd as i64];
            let to = b.ints(&[1, 1, 1, groups, 1]);
            let mut repeat = |t: &Value| {
                let t = layers::reshape(b, t, &shape);
                let t = b.op("Expand", &[&t, &to], vec![]);
                layers::reshape(b, &t, &[0, 0, d as i64])
            };
            (q, repeat(&k), repeat(&val))
        }
    };
    let mut c = AttnCfg::new(d, v.heads);
    c.qk_norm = v.qk_norm.then_some(v.norm);
    let hooks = Hooks {
        bias: None,
        rope: r.map(Rope::Tables),
    };
    let y = attention_core(b, &q, &k, &val, &c, &hooks)?;
    let y = if v.scale_attn_inner {
        v.norm.apply_last(&mut b.scope("norm"), &y, d)?
    } else {
        y
    };
    linear(&mut b.scope("proj"), &y, d, d, true, init)
}

/// The block's MLP.
fn block_mlp(b: &mut Builder, v: &Eva, x: &Value) -> Result<Value> {
    let d = v.dim;
    let mut s = b.scope("mlp");
    let s = &mut s;
    match v.mlp {
        MlpKind::Mlp { hidden, norm } => mlp(
            s,
            x,
            &MlpCfg::new(d, hidden, "gelu").norm(norm.then_some(v.norm)),
        ),
        MlpKind::SwiGlu { hidden, norm } => swiglu(
            s,
            x,
            &MlpCfg::new(d, hidden, "silu").norm(norm.then_some(v.norm)),
        ),
        MlpKind::GluPacked { hidden } => glu_mlp(s, x, &MlpCfg::new(d, 2 * hidden, "silu"), false),
    }
}

/// `gamma_1` / `gamma_2` layer scale (a plain parameter in EVA blocks).
fn gamma(b: &mut Builder, v: &Eva, name: &str, y: Value) -> Result<Value> {
    let Some(init) = v.init_values else {
        return Ok(y);
    };
    if name == "gamma_2" && v.attn_only_layer_scale {
        return Ok(y);
    }
    let g = b.param(name, &[v.dim], Init::Const(init))?;
    Ok(layers::mul(b, &y, &g))
}

/// `EvaBlock` (pre-norm, layer scale) or `EvaBlockPostNorm`.
fn block(
    b: &mut Builder,
    v: &Eva,
    x: &Value,
    r: Option<&RopeConsts>,
    kv_heads: usize,
) -> Result<Value> {
    let d = v.dim;
    if v.post_norm {
        let y = eva_attention(&mut b.scope("attn"), v, x, r, kv_heads)?;
        let y = v.norm.apply_last(&mut b.scope("norm1"), &y, d)?;
        let x = layers::add(b, x, &y);
        let y = block_mlp(b, v, &x)?;
        let y = v.norm.apply_last(&mut b.scope("norm2"), &y, d)?;
        return Ok(layers::add(b, &x, &y));
    }
    let h = v.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = eva_attention(&mut b.scope("attn"), v, &h, r, kv_heads)?;
    let y = gamma(b, v, "gamma_1", y)?;
    let x = layers::add(b, x, &y);
    let h = v.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let y = block_mlp(b, v, &h)?;
    let y = gamma(b, v, "gamma_2", y)?;
    Ok(layers::add(b, &x, &y))
}

/// `norm`, `pool` (token pools or the attention pool), `fc_norm` and the head.
fn head(b: &mut Builder, v: &Eva, cfg: &ModelConfig, x: Value) -> Result<(Value, usize)> {
    let d = v.dim;
    let classes = cfg.num_classes;
    let mut x = x;
    if v.final_norm {
        x = v.norm.apply_last(&mut b.scope("norm"), &x, d)?;
    }
    let mut x = match v.pool {
        Pool::Map { heads, hidden } => attention_pool_latent(
            &mut b.scope("attn_pool"),
            &x,
            d,
            heads,
            hidden,
            &v.norm,
            "gelu",
            true,
        )?,
        Pool::Tokens(kind) => global_pool_nlc(b, &x, kind, v.num_prefix_tokens(), false),
    };
    if v.fc_norm {
        x = v.norm.apply_last(&mut b.scope("fc_norm"), &x, d)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_or_is_unsupported_naming_what() {
        let mut built = 0;
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            match Eva::resolve(&cfg) {
                Ok(v) => {
                    built += 1;
                    assert_eq!(cfg.num_features, Some(v.dim), "{name}");
                }
                Err(e) => {
                    assert_eq!(
                        e.status(),
                        crate::TimmStatus::TIMM_ERR_UNSUPPORTED,
                        "{name}: {e}"
                    );
                    assert!(e.message().contains(" = "), "{name}: {e}");
                }
            }
        }
        // timm 1.0.31: 65 entrypoints, the Sapiens2 models with grouped-query attention included.
        assert_eq!(built, 65);
    }

    #[test]
    fn mlp_choice_follows_evablock() {
        let r = |a: &str| Eva::resolve(&parse(&TABLE.get(a).unwrap().config)).unwrap();
        // EVA02-L: SwiGLU with its sub-norm; EVA02-Ti: packed GluMlp.
        assert!(matches!(
            r("eva02_large_patch14_224").mlp,
            MlpKind::SwiGlu { norm: true, .. }
        ));
        assert!(matches!(
            r("eva02_tiny_patch14_224").mlp,
            MlpKind::GluPacked { hidden: 512 }
        ));
        assert!(matches!(
            r("vit_pe_core_tiny_patch16_384").pool,
            Pool::Map { heads: 8, .. }
        ));
    }
}
