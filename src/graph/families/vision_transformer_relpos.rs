//! Relative-position ViTs (timm `vision_transformer_relpos.py`, `VisionTransformerRelPos`):
//! no absolute position embedding; each block's attention (or one `shared_rel_pos` for all)
//! adds a relative position bias, `RelPosMlp` ('mlp', 'mlp_swin') or `RelPosBias` ('bias'),
//! computed at load for the patch grid. Blocks are the pre-norm `RelPosBlock` or the post-norm
//! `ResPostRelPosBlock`; the head pools the patch tokens (avg) or takes the class token.
//!
//! Feature maps are timm's `features_only=True` (`forward_intermediates` with `norm=False`):
//! every block's output without the class token as an NCHW grid; by default the last three.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::mlp::{layer_scale, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{self, patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed_rel::{rel_pos_bias, rel_pos_mlp, RelPosMlpMode};
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/vision_transformer_relpos.json"));

/// The `vision_transformer_relpos` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "vision_transformer_relpos",
    examples: "vit_relpos_*, vit_srelpos_*, test_vit_relpos",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `VisionTransformerRelPos.__init__`'s keyword arguments with timm's defaults.
    pub struct RelPosArgs {
        img_size: Json = Json::Null,
        patch_size: usize = 16,
        global_pool: String = "avg".into(),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        qk_norm: bool = false,
        init_values: Option<f64> = Some(1e-6),
        class_token: bool = false,
        fc_norm: bool = false,
        rel_pos_type: String = "mlp".into(),
        rel_pos_dim: Option<usize> = None,
        shared_rel_pos: bool = false,
        norm_layer: Json = Json::Null,
        act_layer: Option<String> = None,
        block_fn: String = "relposblock".into(),
    }
}

/// Which relative position module the attention uses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RelPos {
    Mlp { hidden: usize, mode: RelPosMlpMode },
    Bias,
}

/// A `VisionTransformerRelPos` as timm constructs it.
#[derive(Debug, Clone)]
struct Model {
    patch: usize,
    /// The patch grid the model is built for (timm's `img_size // patch_size`).
    grid: (usize, usize),
    dim: usize,
    depth: usize,
    attn: AttnCfg,
    mlp_hidden: usize,
    act: String,
    norm: Norm,
    init_values: Option<f32>,
    class_token: bool,
    fc_norm: bool,
    pool: TokenPool,
    rel_pos: RelPos,
    shared_rel_pos: bool,
    res_post: bool,
}

impl Model {
    fn resolve(cfg: &ModelConfig) -> Result<Model> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!("`{arch}` is not a relative-position ViT"))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = RelPosArgs::read(&a)?;
        let p = v.patch_size;
        let img = match &v.img_size {
            Json::Null => {
                let [_, h, w] = cfg.pretrained_cfg.input_size;
                (h, w)
            }
            Json::Array(hw) if hw.len() == 2 => match (hw[0].as_u64(), hw[1].as_u64()) {
                (Some(h), Some(w)) => (h as usize, w as usize),
                _ => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
            j => match j.as_u64() {
                Some(n) => (n as usize, n as usize),
                None => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
        };
        let (dim, heads) = (v.embed_dim, v.num_heads);
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if heads == 0 || dim % heads != 0 || v.depth == 0 || mlp_hidden == 0 || p == 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim}, num_heads {heads}, depth {} and patch {p} do not make a ViT",
                v.depth
            )));
        }
        if img.0 < p || img.1 < p {
            return Err(Error::invalid_model("img_size is smaller than a patch"));
        }
        let norm = match &v.norm_layer {
            Json::Null => Norm::Layer { eps: 1e-6 },
            Json::String(s) if s.eq_ignore_ascii_case("layernorm") => Norm::Layer { eps: 1e-5 },
            Json::Object(o) if o.get("partial").and_then(Json::as_str) == Some("layernorm") => {
                let eps = o.get("eps").and_then(Json::as_f64).unwrap_or(1e-5);
                Norm::Layer { eps: eps as f32 }
            }
            _ => return Err(a.unsupported("norm_layer", "only LayerNorm")),
        };
        let pool = match v.global_pool.as_str() {
            "avg" => TokenPool::Avg,
            "token" if v.class_token => TokenPool::Token,
            "token" => {
                return Err(Error::invalid_model(
                    "global_pool 'token' needs the class token",
                ))
            }
            _ => {
                return Err(a.unsupported(
                    "global_pool",
                    "avg or token (no pooling returns every token)",
                ))
            }
        };
        let rel_pos = match v.rel_pos_type.as_str() {
            t if t.starts_with("mlp") => RelPos::Mlp {
                hidden: v.rel_pos_dim.filter(|&d| d > 0).unwrap_or(128),
                mode: if t.contains("swin") {
                    RelPosMlpMode::Swin
                } else {
                    RelPosMlpMode::Cr
                },
            },
            _ => RelPos::Bias,
        };
        let res_post = match v.block_fn.to_ascii_lowercase().as_str() {
            "relposblock" => false,
            "respostrelposblock" => true,
            _ => return Err(a.unsupported("block_fn", "RelPosBlock or ResPostRelPosBlock")),
        };
        let mut attn = AttnCfg::new(dim, heads);
        attn.qkv_bias = v.qkv_bias;
        attn.qk_norm = v.qk_norm.then_some(norm);
        Ok(Model {
            patch: p,
            grid: (img.0 / p, img.1 / p),
            dim,
            depth: v.depth,
            attn,
            mlp_hidden,
            act: v.act_layer.unwrap_or_else(|| "gelu".into()),
            norm,
            init_values: v.init_values.filter(|x| *x != 0.0).map(|x| x as f32),
            class_token: v.class_token,
            fc_norm: v.fc_norm,
            pool,
            rel_pos,
            shared_rel_pos: v.shared_rel_pos,
            res_post,
        })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Model::resolve(cfg)?;
    let (h, w) = b.image_size();
    let p = m.patch;
    let grid = (h / p, w / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the patch size {p}"
        )));
    }
    // A bias table is sized for the model's grid; timm resizes it only through its checkpoint
    // filter, which this build does not reproduce. The MLP bias follows any grid.
    if m.rel_pos == RelPos::Bias && grid != m.grid {
        return Err(Error::unsupported(format!(
            "relative position bias tables for a {}x{} patch grid at {h}x{w} input (resizing them is not implemented)",
            m.grid.0, m.grid.1
        )));
    }
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: m.dim,
        patch: p,
        bias: true,
        pad: (0, 0),
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let mut x = layers::nchw_to_tokens(b, &patches, m.dim);
    let n_pre = usize::from(m.class_token);
    if m.class_token {
        let cls = b.param("cls_token", &[1, 1, m.dim], Init::Normal(1e-6))?;
        let cls = patch_embed::expand_batch(b, &cls, &x, 1, m.dim);
        x = layers::concat(b, &[&cls, &x], 1);
    }
    let shared = if m.shared_rel_pos {
        Some(relative_bias(
            &mut b.scope("shared_rel_pos"),
            &m,
            grid,
            n_pre,
        )?)
    } else {
        None
    };
    for i in 0..m.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        let bias = match &shared {
            Some(bias) => bias.clone(),
            None => relative_bias(&mut s.scope("attn").scope("rel_pos"), &m, grid, n_pre)?,
        };
        x = if m.res_post {
            res_post_block(s, &m, &x, bias)?
        } else {
            block(s, &m, &x, bias)?
        };
        let map = patch_embed::token_map(s, &x, n_pre, &patches);
        let module = s.path().to_string();
        s.feature(&map, m.dim, p, &module);
    }
    // _create_vision_transformer_relpos's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);
    head(b, &m, cfg, x, n_pre)
}

/// `rel_pos.get_bias()` in the current scope for the patch grid.
fn relative_bias(b: &mut Builder, m: &Model, grid: (usize, usize), n_pre: usize) -> Result<Value> {
    let heads = m.attn.heads;
    match m.rel_pos {
        RelPos::Mlp { hidden, mode } => rel_pos_mlp(b, grid, heads, hidden, n_pre, mode),
        RelPos::Bias => rel_pos_bias(b, grid, heads, n_pre),
    }
}

/// `RelPosAttention` in scope `attn`: timm's attention with the relative bias on its logits.
fn rel_pos_attention(b: &mut Builder, m: &Model, x: &Value, bias: Value) -> Result<Value> {
    let hooks = Hooks {
        bias: Some(bias),
        rope: None,
    };
    attention(&mut b.scope("attn"), x, &m.attn, &hooks)
}

fn block_mlp(b: &mut Builder, m: &Model, x: &Value) -> Result<Value> {
    mlp(
        &mut b.scope("mlp"),
        x,
        &MlpCfg::new(m.dim, m.mlp_hidden, &m.act),
    )
}

/// `RelPosBlock`: `x + ls1(attn(norm1(x)))`, then `x + ls2(mlp(norm2(x)))`.
fn block(b: &mut Builder, m: &Model, x: &Value, bias: Value) -> Result<Value> {
    let d = m.dim;
    let h = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let mut y = rel_pos_attention(b, m, &h, bias)?;
    if let Some(g) = m.init_values {
        y = layer_scale(&mut b.scope("ls1"), &y, d, g)?;
    }
    let x = layers::add(b, x, &y);
    let h = m.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let mut y = block_mlp(b, m, &h)?;
    if let Some(g) = m.init_values {
        y = layer_scale(&mut b.scope("ls2"), &y, d, g)?;
    }
    Ok(layers::add(b, &x, &y))
}

/// `ResPostRelPosBlock`: `x + norm1(attn(x))`, then `x + norm2(mlp(x))`.
fn res_post_block(b: &mut Builder, m: &Model, x: &Value, bias: Value) -> Result<Value> {
    let d = m.dim;
    let y = rel_pos_attention(b, m, x, bias)?;
    let y = m.norm.apply_last(&mut b.scope("norm1"), &y, d)?;
    let x = layers::add(b, x, &y);
    let y = block_mlp(b, m, &x)?;
    let y = m.norm.apply_last(&mut b.scope("norm2"), &y, d)?;
    Ok(layers::add(b, &x, &y))
}

/// `norm`, `forward_head`'s pooling, `fc_norm` and `head`.
fn head(
    b: &mut Builder,
    m: &Model,
    cfg: &ModelConfig,
    x: Value,
    n_pre: usize,
) -> Result<(Value, usize)> {
    let d = m.dim;
    let x = if m.fc_norm {
        x
    } else {
        m.norm.apply_last(&mut b.scope("norm"), &x, d)?
    };
    let mut x = global_pool_nlc(b, &x, m.pool, n_pre, false);
    if m.fc_norm {
        x = m.norm.apply_last(&mut b.scope("fc_norm"), &x, d)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_resolves_with_timms_width() {
        for name in TABLE.names() {
            let json = &TABLE.get(name).unwrap().config;
            let cfg = ModelConfig::parse(json.to_string().as_bytes()).unwrap();
            let m = Model::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.dim), "{name}");
            assert_eq!(m.res_post, name.contains("rpn"), "{name}");
            assert_eq!(m.shared_rel_pos, name.contains("srelpos"), "{name}");
        }
        assert_eq!(TABLE.names().len(), 14);
    }
}
