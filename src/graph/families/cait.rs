//! CaiT (timm `cait.py`, `Cait`): a ViT without class token in its trunk — patch tokens plus a
//! learned position embedding through `LayerScaleBlock`s with talking-heads attention
//! (`TalkingHeadAttn`: `proj_l` mixes the heads' logits before the softmax, `proj_w` after) —
//! then the class token joins in `depth_token_only` `LayerScaleBlockClassAttn`s, whose
//! `ClassAttn` lets only the class token attend to [class, patches]. `norm`, then the class
//! token (or the mean of the patch tokens) into `head`.
//!
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over
//! `forward_intermediates` with `norm=False`): every trunk block's output as an NCHW grid; by
//! default the last three blocks.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention;
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{self, patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/cait.json"));

/// The `cait` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "cait",
    examples: "cait_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Cait.__init__`'s keyword arguments with timm's defaults.
    pub struct CaitArgs {
        img_size: Json = Json::Null,
        patch_size: usize = 16,
        global_pool: String = "token".into(),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        norm_layer: Json = Json::Null,
        act_layer: Option<String> = None,
        init_values: f64 = 1e-4,
        depth_token_only: usize = 2,
        mlp_ratio_token_only: f64 = 4.0,
        // timm's own classes only (the defaults).
        block_layers: Json = Json::Null,
        block_layers_token: Json = Json::Null,
        patch_layer: Json = Json::Null,
        attn_block: Json = Json::Null,
        mlp_block: Json = Json::Null,
        attn_block_token_only: Json = Json::Null,
        mlp_block_token_only: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// A `Cait` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Cait {
    patch: usize,
    /// `patch_embed.grid_size`: the grid the position embedding covers.
    grid: (usize, usize),
    dim: usize,
    depth: usize,
    heads: usize,
    qkv_bias: bool,
    mlp_hidden: usize,
    mlp_hidden_token: usize,
    depth_token: usize,
    act: String,
    norm: Norm,
    init_values: f32,
    pool: TokenPool,
}

/// `norm_layer`: `partial(nn.LayerNorm, eps=1e-6)` by default.
fn norm_layer(a: &Args, v: &Json) -> Result<Norm> {
    let (name, eps) = match v {
        Json::Null => ("layernorm", Some(1e-6)),
        // nn.LayerNorm's own eps.
        Json::String(s) => (s.as_str(), None),
        Json::Object(o) if o.keys().all(|k| k == "partial" || k == "eps") => (
            o.get("partial").and_then(Json::as_str).unwrap_or(""),
            o.get("eps").and_then(Json::as_f64).map(|e| e as f32),
        ),
        _ => ("", None),
    };
    match name {
        "layernorm" => Ok(Norm::Layer {
            eps: eps.unwrap_or(1e-5),
        }),
        _ => Err(a.unsupported("norm_layer", "only LayerNorm")),
    }
}

/// The class arguments accept timm's default classes only.
fn default_class(a: &Args, key: &str, v: &Json, names: &[&str]) -> Result<()> {
    match v {
        Json::Null => Ok(()),
        Json::String(s) if names.contains(&s.as_str()) => Ok(()),
        _ => Err(a.unsupported(key, &format!("only timm's {}", names[0]))),
    }
}

impl Cait {
    fn resolve(cfg: &ModelConfig) -> Result<Cait> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a CaiT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = CaitArgs::read(&a)?;
        default_class(&a, "block_layers", &v.block_layers, &["layerscaleblock"])?;
        default_class(
            &a,
            "block_layers_token",
            &v.block_layers_token,
            &["layerscaleblockclassattn"],
        )?;
        default_class(&a, "patch_layer", &v.patch_layer, &["patchembed"])?;
        default_class(&a, "attn_block", &v.attn_block, &["talkingheadattn"])?;
        default_class(&a, "mlp_block", &v.mlp_block, &["mlp"])?;
        default_class(
            &a,
            "attn_block_token_only",
            &v.attn_block_token_only,
            &["classattn"],
        )?;
        default_class(
            &a,
            "mlp_block_token_only",
            &v.mlp_block_token_only,
            &["mlp"],
        )?;
        let norm = norm_layer(&a, &v.norm_layer)?;
        let act = v.act_layer.unwrap_or_else(|| "gelu".into());
        layers::act::canonical(&act)
            .map_err(|_| a.unsupported("act_layer", "unknown activation"))?;
        let p = v.patch_size;
        let img = match &v.img_size {
            Json::Null if cfg.pretrained_cfg.fixed_input_size => {
                let [_, h, w] = cfg.pretrained_cfg.input_size;
                (h, w)
            }
            Json::Null => (224, 224),
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
        let mlp_hidden_token = (dim as f64 * v.mlp_ratio_token_only) as usize;
        if heads == 0 || dim == 0 || dim % heads != 0 || v.depth == 0 || p == 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim}, num_heads {heads}, depth {} and patch {p} do not make a CaiT",
                v.depth
            )));
        }
        if mlp_hidden == 0 || (v.depth_token_only > 0 && mlp_hidden_token == 0) {
            return Err(Error::invalid_model("CaiT MLP widths must be positive"));
        }
        if img.0 < p || img.1 < p {
            return Err(Error::invalid_model("img_size is smaller than a patch"));
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
        Ok(Cait {
            patch: p,
            grid: (img.0 / p, img.1 / p),
            dim,
            depth: v.depth,
            heads,
            qkv_bias: v.qkv_bias,
            mlp_hidden,
            mlp_hidden_token,
            depth_token: v.depth_token_only,
            act,
            norm,
            init_values: v.init_values as f32,
            pool,
        })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Cait::resolve(cfg)?;
    let (h, w) = b.image_size();
    let p = m.patch;
    let grid = (h / p, w / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the patch size {p}"
        )));
    }
    // timm's CaiT never resamples its position embedding (its checkpoint filter only renames).
    if grid != m.grid {
        return Err(Error::unsupported(format!(
            "CaiT at a {}x{} patch grid for input {h}x{w} (its position embedding covers {}x{}; timm does not resample it)",
            grid.0, grid.1, m.grid.0, m.grid.1
        )));
    }
    let d = m.dim;
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: d,
        patch: p,
        bias: true,
        pad: (0, 0),
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let tokens = layers::nchw_to_tokens(b, &patches, d);
    let pos = b.param(
        "pos_embed",
        &[1, grid.0 * grid.1, d],
        Init::TruncNormal(0.02),
    )?;
    let mut x = layers::add(b, &tokens, &pos);
    for i in 0..m.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = layer_scale_block(s, &m, &x)?;
        let map = patch_embed::token_map(s, &x, 0, &patches);
        let module = s.path().to_string();
        s.feature(&map, d, p, &module);
    }
    // _create_cait's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);

    // forward_cls: the class token through the class-attention blocks.
    let cls = b.param("cls_token", &[1, 1, d], Init::TruncNormal(0.02))?;
    let mut cls = patch_embed::expand_batch(b, &cls, &x, 1, d);
    for i in 0..m.depth_token {
        let mut blocks = b.scope("blocks_token_only");
        cls = class_attn_block(&mut blocks.scope(i), &m, &x, &cls)?;
    }
    let x = layers::concat(b, &[&cls, &x], 1);
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

/// `nn.Linear(heads, heads)` (current scope) over the head axis of `[N, H, L, L]` logits.
fn mix_heads(b: &mut Builder, x: &Value, heads: usize) -> Result<Value> {
    let t = layers::transpose(b, x, &[0, 2, 3, 1]);
    let y = linear(b, &t, heads, heads, true, Init::TruncNormal(0.02))?;
    Ok(layers::transpose(b, &y, &[0, 3, 1, 2]))
}

/// `TalkingHeadAttn`: `qkv`, the scaled logits mixed across heads by `proj_l`, softmax, mixed
/// again by `proj_w`, applied to v, `proj`.
fn talking_head_attn(b: &mut Builder, m: &Cait, x: &Value) -> Result<Value> {
    let (d, heads) = (m.dim, m.heads);
    let hd = d / heads;
    let init = Init::TruncNormal(0.02);
    let qkv = linear(&mut b.scope("qkv"), x, d, 3 * d, m.qkv_bias, init)?;
    let parts = layers::split(b, &qkv, -1, &[d; 3]);
    let view = |b: &mut Builder, t: &Value| {
        let t = layers::reshape(b, t, &[0, 0, heads as i64, hd as i64]);
        layers::transpose(b, &t, &[0, 2, 1, 3])
    };
    let q = view(b, &parts[0]);
    let q = layers::scale(b, &q, (hd as f32).powf(-0.5));
    let k = view(b, &parts[1]);
    let kt = layers::transpose(b, &k, &[0, 1, 3, 2]);
    let v = view(b, &parts[2]);
    let logits = b.op("MatMul", &[&q, &kt], vec![]);
    let logits = mix_heads(&mut b.scope("proj_l"), &logits, heads)?;
    let attn = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let attn = mix_heads(&mut b.scope("proj_w"), &attn, heads)?;
    let y = b.op("MatMul", &[&attn, &v], vec![]);
    let y = layers::transpose(b, &y, &[0, 2, 1, 3]);
    let y = layers::reshape(b, &y, &[0, 0, d as i64]);
    linear(&mut b.scope("proj"), &y, d, d, true, init)
}

/// `gamma · y` with the current scope's `name` `[dim]`.
fn gamma(b: &mut Builder, m: &Cait, name: &str, y: &Value) -> Result<Value> {
    let g = b.param(name, &[m.dim], Init::Const(m.init_values))?;
    Ok(layers::mul(b, y, &g))
}

/// `LayerScaleBlock`: `x + γ1·attn(norm1(x))`, then `x + γ2·mlp(norm2(x))`.
fn layer_scale_block(b: &mut Builder, m: &Cait, x: &Value) -> Result<Value> {
    let d = m.dim;
    let h = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = talking_head_attn(&mut b.scope("attn"), m, &h)?;
    let y = gamma(b, m, "gamma_1", &y)?;
    let x = layers::add(b, x, &y);
    let h = m.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let c = MlpCfg::new(d, m.mlp_hidden, &m.act);
    let y = mlp(&mut b.scope("mlp"), &h, &c)?;
    let y = gamma(b, m, "gamma_2", &y)?;
    Ok(layers::add(b, &x, &y))
}

/// `LayerScaleBlockClassAttn`: `cls + γ1·attn(norm1([cls, x]))`, then
/// `cls + γ2·mlp(norm2(cls))`.
fn class_attn_block(b: &mut Builder, m: &Cait, x: &Value, cls: &Value) -> Result<Value> {
    let d = m.dim;
    let u = layers::concat(b, &[cls, x], 1);
    let u = m.norm.apply_last(&mut b.scope("norm1"), &u, d)?;
    let y = attention::class_attn(&mut b.scope("attn"), &u, m.dim, m.heads, m.qkv_bias)?;
    let y = gamma(b, m, "gamma_1", &y)?;
    let cls = layers::add(b, cls, &y);
    let h = m.norm.apply_last(&mut b.scope("norm2"), &cls, d)?;
    let c = MlpCfg::new(d, m.mlp_hidden_token, &m.act);
    let y = mlp(&mut b.scope("mlp"), &h, &c)?;
    let y = gamma(b, m, "gamma_2", &y)?;
    Ok(layers::add(b, &cls, &y))
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
            let m = Cait::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.dim), "{name}");
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            assert_eq!(m.grid, (h / 16, w / 16), "{name}");
            assert_eq!(
                (m.depth_token, m.norm),
                (2, Norm::Layer { eps: 1e-6 }),
                "{name}"
            );
        }
        assert_eq!(TABLE.names().len(), 10);
    }

    #[test]
    fn other_classes_are_refused_naming_the_argument() {
        let mut json = TABLE.get("cait_xxs24_224").unwrap().config.clone();
        json["model_args"] = serde_json::json!({"attn_block": "attention"});
        let e = Cait::resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");
        assert!(e.message().contains("attn_block"), "{e}");
    }
}
