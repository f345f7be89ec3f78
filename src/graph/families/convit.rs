//! ConViT (timm `convit.py`, `ConVit`): a ViT whose first `local_up_to_layer` blocks use gated
//! positional self-attention (`GPSA`: a per-head gate mixes the content softmax of `qk` with a
//! softmax of `pos_proj` over the fixed relative offsets (dx, dy, dx² + dy²) of the patch grid,
//! renormalised), the class token joining only after them for plain `MHSA` blocks. `norm`, then
//! the first token (or the mean of the tokens after it) into `head`.
//!
//! The relative offsets (`rel_indices`, a buffer timm does not save) are a constant made at load
//! for the patch grid. Feature maps are timm's `features_only=True` (`FeatureGetterNet` over
//! `forward_intermediates` with `norm=False`): every block's patch tokens as an NCHW grid; by
//! default the last three blocks.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{self, patch_embed, token_map, PatchEmbedCfg};
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/convit.json"));

/// The `convit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "convit",
    examples: "convit_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `ConVit.__init__`'s keyword arguments with timm's defaults.
    pub struct ConVitArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 16,
        global_pool: String = "token".into(),
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = false,
        hybrid_backbone: Json = Json::Null,
        norm_layer: Json = Json::Null,
        local_up_to_layer: usize = 3,
        // Weight init only (GPSA.local_init).
        locality_strength: f64 = 1.0,
        use_pos_embed: bool = true,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Token,
    Avg,
    None,
}

#[derive(Debug, Clone)]
struct ConVit {
    img: (usize, usize),
    patch: usize,
    /// `embed_dim * num_heads`.
    dim: usize,
    depth: usize,
    heads: usize,
    mlp_hidden: usize,
    qkv_bias: bool,
    local: usize,
    pos_embed: bool,
    pool: Pool,
}

impl ConVit {
    fn resolve(cfg: &ModelConfig) -> Result<ConVit> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a ConViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = ConVitArgs::read(&a)?;
        if !v.hybrid_backbone.is_null() {
            return Err(a.unsupported("hybrid_backbone", "only the patch embedding"));
        }
        if !v.norm_layer.is_null() {
            return Err(a.unsupported("norm_layer", "only timm's LayerNorm (eps 1e-6)"));
        }
        let img = match &v.img_size {
            Json::Array(hw) if hw.len() == 2 => match (hw[0].as_u64(), hw[1].as_u64()) {
                (Some(h), Some(w)) => (h as usize, w as usize),
                _ => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
            j => match j.as_u64() {
                Some(n) => (n as usize, n as usize),
                None => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
        };
        let (p, heads) = (v.patch_size, v.num_heads);
        let dim = v.embed_dim * heads;
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if p == 0 || heads == 0 || dim == 0 || v.depth == 0 || mlp_hidden == 0 {
            return Err(Error::invalid_model(format!(
                "`{arch}`: embed_dim {}, {heads} heads, depth {} and patch {p} do not make a ConViT",
                v.embed_dim, v.depth
            )));
        }
        let grid = (img.0 / p, img.1 / p);
        if grid.0 == 0 || grid.1 == 0 {
            return Err(Error::invalid_model("img_size is smaller than a patch"));
        }
        // GPSA's rel_indices take the grid side as int(sqrt(N)): only square grids run in timm.
        if v.local_up_to_layer > 0 && grid.0 != grid.1 {
            return Err(Error::unsupported(format!(
                "`{arch}`: GPSA on a {}x{} patch grid (timm's relative indices assume a square grid)",
                grid.0, grid.1
            )));
        }
        let pool = match v.global_pool.as_str() {
            "token" => Pool::Token,
            "avg" => Pool::Avg,
            "" => Pool::None,
            _ => return Err(a.unsupported("global_pool", "token, avg or ''")),
        };
        Ok(ConVit {
            img,
            patch: p,
            dim,
            depth: v.depth,
            heads,
            mlp_hidden,
            qkv_bias: v.qkv_bias,
            local: v.local_up_to_layer,
            pos_embed: v.use_pos_embed,
            pool,
        })
    }
}

const NORM: Norm = Norm::Layer { eps: 1e-6 };

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = ConVit::resolve(cfg)?;
    let hw = b.image_size();
    // PatchEmbed asserts img_size; timm never resamples the position embedding.
    if hw != m.img {
        return Err(Error::unsupported(format!(
            "ConViT at input {}x{}: the model takes {}x{} only (timm asserts it)",
            hw.0, hw.1, m.img.0, m.img.1
        )));
    }
    let d = m.dim;
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: d,
        patch: m.patch,
        bias: true,
        pad: (0, 0),
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let (gh, gw) = (m.img.0 / m.patch, m.img.1 / m.patch);
    let n = gh * gw;
    let mut x = layers::nchw_to_tokens(b, &patches, d);
    if m.pos_embed {
        let pos = b.param("pos_embed", &[1, n, d], Init::TruncNormal(0.02))?;
        x = layers::add(b, &x, &pos);
    }
    let rel = (m.local > 0).then(|| rel_indices(b, gh));
    let cls = b.param("cls_token", &[1, 1, d], Init::TruncNormal(0.02))?;
    for i in 0..m.depth {
        if i == m.local {
            let c = patch_embed::expand_batch(b, &cls, &x, 1, d);
            x = layers::concat(b, &[&c, &x], 1);
        }
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, &m, &x, rel.as_ref().filter(|_| i < m.local))?;
        let prefix = usize::from(i >= m.local);
        let map = token_map(s, &x, prefix, &patches);
        let module = s.path().to_string();
        s.feature(&map, d, m.patch, &module);
    }
    // _create_convit's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);
    let x = NORM.apply_last(&mut b.scope("norm"), &x, d)?;
    // forward_head skips num_prefix_tokens (1) for the mean, and takes token 0, whether or not
    // the class token was ever inserted.
    let x = match m.pool {
        Pool::Token => layers::token_at(b, &x, 0),
        Pool::Avg => {
            let t = layers::slice(b, &x, 1, 1, i64::MAX);
            layers::reduce_mean(b, &t, &[1], false)
        }
        Pool::None => {
            return Err(Error::unsupported(
                "ConViT with global_pool '' (the head would see every token)",
            ))
        }
    };
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

/// `GPSA.get_rel_indices` for an `s`×`s` grid: `[1, N, N, 3]` of (dx, dy, dx² + dy²) from
/// query n to key m (x the column, y the row).
fn rel_indices(b: &mut Builder, s: usize) -> Value {
    let n = s * s;
    let mut out = Vec::with_capacity(n * n * 3);
    for q in 0..n {
        for k in 0..n {
            let dx = (k % s) as f32 - (q % s) as f32;
            let dy = (k / s) as f32 - (q / s) as f32;
            out.extend([dx, dy, dx * dx + dy * dy]);
        }
    }
    b.const_f32(out, &[1, n as i64, n as i64, 3])
}

/// `GPSA`: `(1 − σ(g))·softmax(q·kᵀ·scale) + σ(g)·softmax(pos_proj(rel))`, divided by its row
/// sum, applied to `v`, then `proj`.
fn gpsa(b: &mut Builder, m: &ConVit, x: &Value, rel: &Value) -> Result<Value> {
    let (d, h) = (m.dim, m.heads);
    let hd = d / h;
    let init = Init::TruncNormal(0.02);
    let heads_view = |b: &mut Builder, t: &Value| {
        let t = layers::reshape(b, t, &[0, 0, h as i64, hd as i64]);
        layers::transpose(b, &t, &[0, 2, 1, 3])
    };
    let qk = linear(&mut b.scope("qk"), x, d, 2 * d, m.qkv_bias, init)?;
    let parts = layers::split(b, &qk, -1, &[d, d]);
    let q = heads_view(b, &parts[0]);
    let k = heads_view(b, &parts[1]);
    let v = linear(&mut b.scope("v"), x, d, d, m.qkv_bias, init)?;
    let v = heads_view(b, &v);
    // pos_proj over the offsets: [1, N, N, H] -> [1, H, N, N] (input-independent).
    let pos = linear(&mut b.scope("pos_proj"), rel, 3, h, true, init)?;
    let pos = layers::transpose(b, &pos, &[0, 3, 1, 2]);
    let softmax = |b: &mut Builder, t: &Value| b.op("Softmax", &[t], vec![("axis", Attr::Int(-1))]);
    let pos = softmax(b, &pos);
    let kt = layers::transpose(b, &k, &[0, 1, 3, 2]);
    let logits = b.op("MatMul", &[&q, &kt], vec![]);
    let logits = layers::scale(b, &logits, (hd as f32).powf(-0.5));
    let patch = softmax(b, &logits);
    let g = b.param("gating_param", &[h], Init::Ones)?;
    let g = layers::reshape(b, &g, &[1, h as i64, 1, 1]);
    let sg = b.op("Sigmoid", &[&g], vec![]);
    let one = b.scalar(1.0);
    let rest = b.op("Sub", &[&one, &sg], vec![]);
    let a1 = layers::mul(b, &rest, &patch);
    let a2 = layers::mul(b, &sg, &pos);
    let attn = layers::add(b, &a1, &a2);
    let axes = b.ints(&[-1]);
    let sum = b.op(
        "ReduceSum",
        &[&attn, &axes],
        vec![("keepdims", Attr::Int(1))],
    );
    let attn = b.op("Div", &[&attn, &sum], vec![]);
    let y = b.op("MatMul", &[&attn, &v], vec![]);
    let y = layers::transpose(b, &y, &[0, 2, 1, 3]);
    let y = layers::reshape(b, &y, &[0, 0, d as i64]);
    linear(&mut b.scope("proj"), &y, d, d, true, init)
}

/// `Block`: `x + attn(norm1(x))` (GPSA given the offsets, else MHSA), `x + mlp(norm2(x))`.
fn block(b: &mut Builder, m: &ConVit, x: &Value, rel: Option<&Value>) -> Result<Value> {
    let d = m.dim;
    let h = NORM.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = match rel {
        Some(rel) => gpsa(&mut b.scope("attn"), m, &h, rel)?,
        None => {
            let mut c = AttnCfg::new(d, m.heads);
            c.qkv_bias = m.qkv_bias;
            attention(&mut b.scope("attn"), &h, &c, &Hooks::default())?
        }
    };
    let x = layers::add(b, x, &y);
    let h = NORM.apply_last(&mut b.scope("norm2"), &x, d)?;
    let y = mlp(
        &mut b.scope("mlp"),
        &h,
        &MlpCfg::new(d, m.mlp_hidden, "gelu"),
    )?;
    Ok(layers::add(b, &x, &y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_resolves_with_timms_width() {
        for name in TABLE.names() {
            let json = &TABLE.get(name).unwrap().config;
            let cfg = ModelConfig::parse(json.to_string().as_bytes()).unwrap();
            let m = ConVit::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.dim), "{name}");
            assert_eq!(m.local, 10, "{name}");
        }
        assert_eq!(TABLE.names().len(), 3);
    }
}
