//! BEiT and BEiT v2 (timm `beit.py`, `Beit`): a ViT with a class token, q/v-only attention bias,
//! a relative position bias per block (`use_rel_pos_bias`) and / or one shared by every block
//! (`use_shared_rel_pos_bias`), an optional absolute position embedding, layer scale
//! (`gamma_1` / `gamma_2`), `Mlp` or `SwiGLU` (with its norm under `scale_mlp`), and mean pooling
//! of the patch tokens into `fc_norm` (or the class token after `norm`).
//!
//! The relative position index is a non-persistent buffer in timm, computed here at load, and
//! the bias tables are gathered at load into `[1, heads, L, L]` (`layers::pos_embed_rel`).
//!
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over
//! `forward_intermediates` with `norm=False`): every block's output, class token dropped, as an
//! NCHW grid; by default the last three blocks.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, swiglu, MlpCfg};
use crate::graph::layers::patch_embed::{self, patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed_rel::rel_pos_bias;
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/beit.json"));

/// The `beit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "beit",
    examples: "beit_*, beitv2_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Beit.__init__`'s keyword arguments with timm's defaults.
    pub struct BeitArgs {
        img_size: Json = Json::Null,
        patch_size: Json = Json::from(16),
        global_pool: String = "avg".into(),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        qkv_bias: bool = true,
        mlp_ratio: f64 = 4.0,
        swiglu_mlp: bool = false,
        scale_mlp: bool = false,
        norm_layer: Json = Json::Null,
        init_values: Option<f64> = None,
        use_abs_pos_emb: bool = true,
        use_rel_pos_bias: bool = false,
        use_shared_rel_pos_bias: bool = false,
        use_fc_norm: Option<bool> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// A `Beit` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Beit {
    patch: usize,
    /// `patch_embed.grid_size`: the grid the position embedding and bias tables cover.
    grid: (usize, usize),
    dim: usize,
    depth: usize,
    heads: usize,
    qkv_bias: bool,
    mlp_hidden: usize,
    swiglu: bool,
    scale_mlp: bool,
    norm: Norm,
    /// Layer scale when `init_values` is truthy.
    init_values: Option<f32>,
    abs_pos: bool,
    rel_pos: bool,
    shared_rel_pos: bool,
    pool: TokenPool,
    fc_norm: bool,
}

/// An int or an `[h, w]` pair (timm's `to_2tuple` arguments).
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

/// `norm_layer`: timm's `LayerNorm` (eps 1e-6) unless named otherwise.
fn norm_layer(a: &Args, v: &Json) -> Result<Norm> {
    let (name, eps) = match v {
        Json::Null => ("layernorm", None),
        Json::String(s) => (s.as_str(), None),
        Json::Object(o) if o.keys().all(|k| k == "partial" || k == "eps") => (
            o.get("partial").and_then(Json::as_str).unwrap_or(""),
            o.get("eps").and_then(Json::as_f64).map(|e| e as f32),
        ),
        _ => ("", None),
    };
    match name.to_ascii_lowercase().as_str() {
        "layernorm" => Ok(Norm::Layer {
            eps: eps.unwrap_or(1e-6),
        }),
        "rmsnorm" => Ok(Norm::Rms {
            eps: eps.unwrap_or(1e-6),
        }),
        _ => Err(a.unsupported("norm_layer", "LayerNorm or RmsNorm")),
    }
}

impl Beit {
    fn resolve(cfg: &ModelConfig) -> Result<Beit> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a BEiT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = BeitArgs::read(&a)?;
        let norm = norm_layer(&a, &v.norm_layer)?;
        let (ph, pw) = pair(&a, "patch_size", &v.patch_size)?;
        if ph != pw {
            return Err(a.unsupported("patch_size", "only square patches are supported"));
        }
        // timm's img_size: model_args, else the pretrained cfg's fixed input size, else 224.
        let img = match &v.img_size {
            Json::Null if cfg.pretrained_cfg.fixed_input_size => {
                let [_, h, w] = cfg.pretrained_cfg.input_size;
                (h, w)
            }
            Json::Null => (224, 224),
            j => pair(&a, "img_size", j)?,
        };
        let (dim, heads) = (v.embed_dim, v.num_heads);
        if heads == 0 || dim == 0 || dim % heads != 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim} is not divisible by num_heads {heads}"
            )));
        }
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if v.depth == 0 || mlp_hidden == 0 || img.0 < ph || img.1 < ph {
            return Err(Error::invalid_model(
                "BEiT depth, mlp width and the patch grid must be positive",
            ));
        }
        let pool = match v.global_pool.as_str() {
            "avg" => TokenPool::Avg,
            "token" => TokenPool::Token,
            _ => {
                return Err(a.unsupported(
                    "global_pool",
                    "avg or token (no pooling returns every token)",
                ))
            }
        };
        let grid = (img.0 / ph, img.1 / ph);
        let (gh, gw) = grid;
        // timm's checkpoint filter re-samples a table of a non-square grid whose size is a
        // perfect square as if it were square; that resampling is not reproduced here.
        let rows = (2 * gh - 1) * (2 * gw - 1);
        let r = (rows as f64).sqrt() as usize;
        if (v.use_rel_pos_bias || v.use_shared_rel_pos_bias) && gh != gw && r * r == rows {
            return Err(Error::unsupported(format!(
                "a {gh}x{gw} patch grid: timm's loader resamples its relative position tables as a square one"
            )));
        }
        Ok(Beit {
            patch: ph,
            grid,
            dim,
            depth: v.depth,
            heads,
            qkv_bias: v.qkv_bias,
            mlp_hidden,
            swiglu: v.swiglu_mlp,
            scale_mlp: v.scale_mlp,
            norm,
            init_values: v.init_values.filter(|x| *x != 0.0).map(|x| x as f32),
            abs_pos: v.use_abs_pos_emb,
            rel_pos: v.use_rel_pos_bias,
            shared_rel_pos: v.use_shared_rel_pos_bias,
            pool,
            fc_norm: v.use_fc_norm.unwrap_or(pool == TokenPool::Avg),
        })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Beit::resolve(cfg)?;
    let (h, w) = b.image_size();
    let p = m.patch;
    let grid = (h / p, w / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the patch size {p}"
        )));
    }
    // The position embedding and bias tables cover the model's grid; timm resizes them only in
    // its checkpoint filter (for a model made at another img_size), not reproduced here.
    if grid != m.grid {
        return Err(Error::unsupported(format!(
            "BEiT at a {}x{} patch grid for input {h}x{w} (built for {}x{}; resizing the position tables is not implemented)",
            grid.0, grid.1, m.grid.0, m.grid.1
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
    let tokens = layers::nchw_to_tokens(b, &patches, m.dim);
    let d = m.dim;
    let cls = b.param("cls_token", &[1, 1, d], Init::TruncNormal(0.02))?;
    let pos = if m.abs_pos {
        let n = 1 + grid.0 * grid.1;
        Some(b.param("pos_embed", &[1, n, d], Init::TruncNormal(0.02))?)
    } else {
        None
    };
    let mut x = patch_embed::prefix_and_pos(b, &tokens, &[cls], 1, pos.as_ref(), false, d);
    let shared = if m.shared_rel_pos {
        let s = &mut b.scope("rel_pos_bias");
        s.ignore_weight("relative_position_index");
        Some(rel_pos_bias(s, grid, m.heads, 1)?)
    } else {
        None
    };
    for i in 0..m.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        let own = if m.rel_pos {
            let a = &mut s.scope("attn");
            a.ignore_weight("relative_position_index");
            Some(rel_pos_bias(a, grid, m.heads, 1)?)
        } else {
            None
        };
        let bias = match (own, &shared) {
            (Some(o), Some(sh)) => Some(layers::add(s, &o, sh)),
            (Some(o), None) => Some(o),
            (None, sh) => sh.clone(),
        };
        x = block(s, &m, &x, bias)?;
        let map = patch_embed::token_map(s, &x, 1, &patches);
        let module = s.path().to_string();
        s.feature(&map, d, p, &module);
    }
    // _create_beit's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);
    head(b, &m, cfg, x)
}

/// BEiT's `Attention`: `qkv` without its own bias, `q_bias` / zero k / `v_bias` added, the
/// relative position bias on the logits, `proj`.
fn attention(b: &mut Builder, m: &Beit, x: &Value, bias: Option<Value>) -> Result<Value> {
    let d = m.dim;
    let init = Init::TruncNormal(0.02);
    let mut qkv = linear(&mut b.scope("qkv"), x, d, 3 * d, false, init)?;
    if m.qkv_bias {
        let qb = b.param("q_bias", &[d], Init::Zeros)?;
        let vb = b.param("v_bias", &[d], Init::Zeros)?;
        let kb = b.const_f32(vec![0.0; d], &[d as i64]);
        let all = layers::concat(b, &[&qb, &kb, &vb], 0);
        qkv = layers::add(b, &qkv, &all);
    }
    let parts = layers::split(b, &qkv, -1, &[d; 3]);
    let c = AttnCfg::new(d, m.heads);
    let hooks = Hooks { bias, rope: None };
    let y = attention_core(b, &parts[0], &parts[1], &parts[2], &c, &hooks)?;
    linear(&mut b.scope("proj"), &y, d, d, true, init)
}

/// `Block`: `x + γ1·attn(norm1(x))`, then `x + γ2·mlp(norm2(x))`.
fn block(b: &mut Builder, m: &Beit, x: &Value, bias: Option<Value>) -> Result<Value> {
    let d = m.dim;
    let h = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let mut y = attention(&mut b.scope("attn"), m, &h, bias)?;
    if let Some(g) = m.init_values {
        let gamma = b.param("gamma_1", &[d], Init::Const(g))?;
        y = layers::mul(b, &y, &gamma);
    }
    let x = layers::add(b, x, &y);
    let h = m.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let c = MlpCfg::new(d, m.mlp_hidden, if m.swiglu { "silu" } else { "gelu" })
        .norm(m.scale_mlp.then_some(m.norm));
    let mut y = if m.swiglu {
        swiglu(&mut b.scope("mlp"), &h, &c)?
    } else {
        mlp(&mut b.scope("mlp"), &h, &c)?
    };
    if let Some(g) = m.init_values {
        let gamma = b.param("gamma_2", &[d], Init::Const(g))?;
        y = layers::mul(b, &y, &gamma);
    }
    Ok(layers::add(b, &x, &y))
}

/// `norm` (without fc_norm), `forward_head`'s pooling, `fc_norm` and `head`.
fn head(b: &mut Builder, m: &Beit, cfg: &ModelConfig, x: Value) -> Result<(Value, usize)> {
    let d = m.dim;
    let x = if m.fc_norm {
        x
    } else {
        m.norm.apply_last(&mut b.scope("norm"), &x, d)?
    };
    let mut x = global_pool_nlc(b, &x, m.pool, 1, false);
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

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_with_timms_width() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let m = Beit::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.dim), "{name}");
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            assert_eq!(m.grid, (h / 16, w / 16), "{name}");
            assert!(m.rel_pos && !m.abs_pos && m.fc_norm, "{name}");
        }
        assert_eq!(TABLE.names().len(), 7);
    }

    #[test]
    fn model_args_override_the_architecture_like_timm() {
        let mut json = TABLE.get("beit_base_patch16_224").unwrap().config.clone();
        json["model_args"] = serde_json::json!({"global_pool": "token", "use_shared_rel_pos_bias": true, "img_size": [64, 64]});
        let m = Beit::resolve(&parse(&json)).unwrap();
        assert_eq!(
            (m.pool, m.fc_norm, m.shared_rel_pos),
            (TokenPool::Token, false, true)
        );
        assert_eq!(m.grid, (4, 4));
        json["model_args"] = serde_json::json!({"use_magic": 1});
        let e = Beit::resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");
        assert!(e.message().contains("use_magic = 1"), "{e}");
        json["model_args"] = serde_json::json!({"global_pool": ""});
        let e = Beit::resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");
    }
}
