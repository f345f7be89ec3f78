//! MLP-Mixer, ResMLP, gMLP and Glu-Mixer (timm's `mlp_mixer.py`, class `MlpMixer`):
//! `mixer_*`, `resmlp_*`, `gmlp_*`, `gmixer_*`.
//!
//! A patch embedding to tokens, `num_blocks` blocks of one kind, a final norm, the mean over
//! tokens and a Linear head. The blocks mix tokens with an MLP across the token axis
//! (`MixerBlock`: `Mlp` or `GluMlp`), one Linear across it with `Affine` "norms" and layer
//! scale (`ResBlock`), or a spatial gating unit inside a `GatedMlp` (`SpatialGatingBlock`).
//! The token count is fixed by the weights, so the graph takes the input size it was built for.
//!
//! Feature maps are timm's `features_only` (`FeatureGetterNet` over `forward_intermediates`,
//! `norm=False`): every block's tokens on the patch grid, NCHW; by default the last three.

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{glu_mlp, linear, linear_2d, linear_act, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{patch_embed, token_map, PatchEmbedCfg};
use crate::graph::layers::{add, layer_norm, mul, nchw_to_tokens, reduce_mean, split, transpose};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/mlp_mixer.json"));

pub const FAMILY: Family = Family {
    name: "mlp_mixer",
    examples: "mixer_*, resmlp_*, gmlp_*, gmixer_*",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `MlpMixer.__init__`'s keyword arguments with timm's defaults.
    struct MixerArgs {
        in_chans: usize = 3,
        /// The token count comes from the weights and the built input size.
        #[allow(dead_code)]
        img_size: Json = Json::from(224),
        patch_size: usize = 16,
        num_blocks: usize = 8,
        embed_dim: usize = 512,
        mlp_ratio: Json = Json::from(vec![0.5, 4.0]),
        block_layer: Json = Json::from("mixerblock"),
        mlp_layer: Json = Json::from("mlp"),
        norm_layer: Json = Json::Null,
        act_layer: String = "gelu".into(),
        /// Head-bias init only.
        #[allow(dead_code)]
        nlhb: bool = false,
        stem_norm: bool = false,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Linears without weights (timm: xavier-uniform; any spread serves a seeded bare model).
const INIT: Init = Init::TruncNormal(0.02);

/// The block class.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BlockKind {
    /// `MixerBlock`: token MLP and channel MLP, pre-norm.
    Mixer,
    /// `ResBlock`: a token Linear and a channel MLP, `Affine` norms, layer scale.
    Res,
    /// `SpatialGatingBlock`: a `GatedMlp` with a `SpatialGatingUnit`.
    SpatialGating,
}

/// The MLP class of the blocks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MlpKind {
    /// `Mlp` (or `GatedMlp` with no gate, which is the same).
    Mlp,
    /// `GluMlp`: `x1 · act(x2)` of fc1's halves.
    Glu,
    /// `GatedMlp` with the spatial gating unit (gMLP).
    Gated,
}

/// The block norm: timm's `LayerNorm` (eps) or ResMLP's `Affine` (`alpha`, `beta`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum MixNorm {
    Layer(f32),
    Affine,
}

impl MixNorm {
    fn apply(&self, b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
        match *self {
            MixNorm::Layer(eps) => layer_norm(b, x, dim, eps),
            MixNorm::Affine => affine(b, x, dim),
        }
    }
}

/// ResMLP's `Affine`: `beta + alpha · x` with `[1, 1, dim]` parameters.
fn affine(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let alpha = b.param("alpha", &[1, 1, dim], Init::Ones)?;
    let beta = b.param("beta", &[1, 1, dim], Init::Zeros)?;
    let y = mul(b, x, &alpha);
    Ok(add(b, &y, &beta))
}

/// The resolved architecture.
struct Cfg {
    patch: usize,
    blocks: usize,
    dim: usize,
    block: BlockKind,
    mlp: MlpKind,
    norm: MixNorm,
    act: String,
    /// `MixerBlock`: (tokens, channels) hidden widths; other blocks: the channel MLP's.
    tokens_hidden: usize,
    channels_hidden: usize,
    /// `ResBlock`'s layer-scale init.
    init_values: f32,
    stem_norm: bool,
    pool: bool,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let (h, w) = b.image_size();
    let p = c.patch;
    if h < p || w < p {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the patch size {p}"
        )));
    }
    // PatchEmbed (strict size): the conv drops any remainder.
    let seq = (h / p) * (w / p);
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: c.dim,
        patch: p,
        bias: true,
        pad: (0, 0),
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("stem"), &input, &pe)?;
    let mut x = nchw_to_tokens(b, &patches, c.dim);
    if c.stem_norm {
        x = c
            .norm
            .apply(&mut b.scope("stem").scope("norm"), &x, c.dim)?;
    }
    for i in 0..c.blocks {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = match c.block {
            BlockKind::Mixer => mixer_block(s, &x, seq, &c)?,
            BlockKind::Res => res_block(s, &x, seq, &c)?,
            BlockKind::SpatialGating => spatial_gating_block(s, &x, seq, &c)?,
        };
        let map = token_map(s, &x, 0, &patches);
        let module = s.path().to_string();
        s.feature(&map, c.dim, p, &module);
    }
    // _create_mixer's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);
    let x = c.norm.apply(&mut b.scope("norm"), &x, c.dim)?;
    if !c.pool {
        return Err(Error::unsupported(
            "MlpMixer with global_pool '' (per-token logits) is not built natively",
        ));
    }
    let pooled = reduce_mean(b, &x, &[1], false);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, c.dim));
    }
    let logits = linear_2d(
        &mut b.scope("head"),
        &pooled,
        c.dim,
        cfg.num_classes,
        true,
        INIT,
    )?;
    Ok((logits, cfg.num_classes))
}

/// `f` applied across the token axis of `[N, L, C]` (transposed to `[N, C, L]` and back).
fn across_tokens(
    b: &mut Builder,
    x: &Value,
    f: impl FnOnce(&mut Builder, &Value) -> Result<Value>,
) -> Result<Value> {
    let t = transpose(b, x, &[0, 2, 1]);
    let y = f(b, &t)?;
    Ok(transpose(b, &y, &[0, 2, 1]))
}

/// The block's MLP (`Mlp` or `GluMlp`) from `in_f` through `hidden` back to `in_f`.
fn block_mlp(b: &mut Builder, x: &Value, in_f: usize, hidden: usize, c: &Cfg) -> Result<Value> {
    let mut m = MlpCfg::new(in_f, hidden, &c.act);
    m.init = INIT;
    match c.mlp {
        MlpKind::Glu => glu_mlp(b, x, &m, true),
        _ => mlp(b, x, &m),
    }
}

/// `MixerBlock`: `x + mlp_tokens(norm1(x)ᵀ)ᵀ`, then `x + mlp_channels(norm2(x))`.
fn mixer_block(b: &mut Builder, x: &Value, seq: usize, c: &Cfg) -> Result<Value> {
    let y = c.norm.apply(&mut b.scope("norm1"), x, c.dim)?;
    let y = across_tokens(b, &y, |b, t| {
        block_mlp(&mut b.scope("mlp_tokens"), t, seq, c.tokens_hidden, c)
    })?;
    let x = add(b, x, &y);
    let y = c.norm.apply(&mut b.scope("norm2"), &x, c.dim)?;
    let y = block_mlp(
        &mut b.scope("mlp_channels"),
        &y,
        c.dim,
        c.channels_hidden,
        c,
    )?;
    Ok(add(b, &x, &y))
}

/// `ResBlock`: `x + ls1 · linear_tokens(norm1(x)ᵀ)ᵀ`, then `x + ls2 · mlp_channels(norm2(x))`.
fn res_block(b: &mut Builder, x: &Value, seq: usize, c: &Cfg) -> Result<Value> {
    let y = c.norm.apply(&mut b.scope("norm1"), x, c.dim)?;
    let y = across_tokens(b, &y, |b, t| {
        linear(&mut b.scope("linear_tokens"), t, seq, seq, true, INIT)
    })?;
    let ls1 = b.param("ls1", &[c.dim], Init::Const(c.init_values))?;
    let y = mul(b, &y, &ls1);
    let x = add(b, x, &y);
    let y = c.norm.apply(&mut b.scope("norm2"), &x, c.dim)?;
    let y = block_mlp(
        &mut b.scope("mlp_channels"),
        &y,
        c.dim,
        c.channels_hidden,
        c,
    )?;
    let ls2 = b.param("ls2", &[c.dim], Init::Const(c.init_values))?;
    let y = mul(b, &y, &ls2);
    Ok(add(b, &x, &y))
}

/// `SpatialGatingBlock`: `x + GatedMlp(norm(x))` whose gate is a `SpatialGatingUnit`.
fn spatial_gating_block(b: &mut Builder, x: &Value, seq: usize, c: &Cfg) -> Result<Value> {
    let y = c.norm.apply(&mut b.scope("norm"), x, c.dim)?;
    let y = {
        let m = &mut b.scope("mlp_channels");
        let hidden = c.channels_hidden;
        let y = linear_act(&mut m.scope("fc1"), &y, c.dim, hidden, true, &c.act, INIT)?;
        let y = spatial_gating_unit(&mut m.scope("gate"), &y, hidden, seq)?;
        let y = linear(&mut m.scope("fc2"), &y, hidden / 2, c.dim, true, INIT)?;
        y
    };
    Ok(add(b, x, &y))
}

/// `SpatialGatingUnit`: `u · proj(norm(v)ᵀ)ᵀ` of the two halves of the channels; its norm is
/// `nn.LayerNorm` with torch's eps.
fn spatial_gating_unit(b: &mut Builder, x: &Value, dim: usize, seq: usize) -> Result<Value> {
    let half = dim / 2;
    let parts = split(b, x, -1, &[half, half]);
    let v = layer_norm(&mut b.scope("norm"), &parts[1], half, 1e-5)?;
    let v = across_tokens(b, &v, |b, t| {
        let s = &mut b.scope("proj");
        // timm's init_weights: weight ~ N(0, 1e-6), bias 1 (the gate starts open).
        let w = s.param("weight", &[seq, seq], Init::Normal(1e-6))?;
        let bias = s.param("bias", &[seq], Init::Ones)?;
        let wt = transpose(s, &w, &[1, 0]);
        let y = s.op("MatMul", &[t, &wt], vec![]);
        Ok(add(s, &y, &bias))
    })?;
    Ok(mul(b, &parts[0], &v))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

/// A layer argument as the table writes it: a name, or `{"partial": name, kwargs...}`.
fn layer_arg(v: &Json) -> Option<(String, Map<String, Json>)> {
    match v {
        Json::String(s) => Some((s.to_ascii_lowercase(), Map::new())),
        Json::Object(o) => {
            let name = o.get("partial")?.as_str()?.to_ascii_lowercase();
            let mut kw = o.clone();
            kw.remove("partial");
            Some((name, kw))
        }
        _ => None,
    }
}

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an MLP-Mixer variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = MixerArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let (mut blocks, mut dim, mut patch) = (v.num_blocks, v.embed_dim, v.patch_size);
    if b.weights().is_some() {
        if let Some(s) = b.scope("stem").weight_shape("proj.weight") {
            if !a.explicit("embed_dim") {
                dim = s[0];
            }
            if !a.explicit("patch_size") && s.len() == 4 {
                patch = s[2];
            }
        }
        if !a.explicit("num_blocks") {
            let bl = &mut b.scope("blocks");
            let n = (0..).take_while(|&i| bl.has_module(&i.to_string())).count();
            if n > 0 {
                blocks = n;
            }
        }
    }
    if dim == 0 || patch == 0 {
        return Err(Error::invalid_model(format!(
            "model_args embed_dim = {dim} and patch_size = {patch} must be positive"
        )));
    }
    let (block, init_values) =
        match layer_arg(&v.block_layer) {
            Some((name, kw)) => {
                let known: &[&str] = if name == "resblock" {
                    &["init_values"]
                } else {
                    &[]
                };
                if let Some(k) = kw.keys().find(|k| !known.contains(&k.as_str())) {
                    return Err(a.unsupported(
                        "block_layer",
                        &format!("argument `{k}` of the block is not built natively"),
                    ));
                }
                let init = match kw.get("init_values") {
                    None => 1e-4,
                    Some(j) => j.as_f64().ok_or_else(|| {
                        a.unsupported("block_layer", "init_values must be a number")
                    })? as f32,
                };
                let kind = match name.as_str() {
                    "mixerblock" => BlockKind::Mixer,
                    "resblock" => BlockKind::Res,
                    "spatialgatingblock" => BlockKind::SpatialGating,
                    _ => return Err(a.unsupported(
                        "block_layer",
                        "the native MlpMixer builds MixerBlock, ResBlock and SpatialGatingBlock",
                    )),
                };
                (kind, init)
            }
            None => {
                return Err(a.unsupported("block_layer", "a block class name (or a partial of one)"))
            }
        };
    let mlp_kind = match layer_arg(&v.mlp_layer) {
        Some((name, kw)) if kw.is_empty() => match name.as_str() {
            "mlp" => MlpKind::Mlp,
            "glumlp" => MlpKind::Glu,
            "gatedmlp" if block == BlockKind::SpatialGating => MlpKind::Gated,
            // Without a gate layer, GatedMlp is Mlp.
            "gatedmlp" => MlpKind::Mlp,
            _ => {
                return Err(a.unsupported(
                    "mlp_layer",
                    "the native MlpMixer builds Mlp, GluMlp and GatedMlp",
                ))
            }
        },
        _ => return Err(a.unsupported("mlp_layer", "Mlp, GluMlp or GatedMlp without arguments")),
    };
    if (block == BlockKind::SpatialGating) != (mlp_kind == MlpKind::Gated) {
        return Err(a.unsupported(
            "mlp_layer",
            "SpatialGatingBlock takes GatedMlp (its gate layer), the other blocks Mlp or GluMlp",
        ));
    }
    let norm = match &v.norm_layer {
        Json::Null => MixNorm::Layer(1e-6),
        j => match layer_arg(j) {
            Some((name, kw)) if name == "affine" && kw.is_empty() => MixNorm::Affine,
            Some((name, kw)) if name == "layernorm" && kw.keys().all(|k| k == "eps") => {
                MixNorm::Layer(kw.get("eps").and_then(Json::as_f64).unwrap_or(1e-5) as f32)
            }
            _ => {
                return Err(a.unsupported(
                    "norm_layer",
                    "the native MlpMixer builds LayerNorm and Affine",
                ))
            }
        },
    };
    let act = crate::graph::layers::act::canonical(&v.act_layer)?.to_string();
    let ratio = |j: &Json| {
        j.as_f64()
            .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1e3)
    };
    let (rt, rc) = match &v.mlp_ratio {
        Json::Array(r) if r.len() == 2 => (ratio(&r[0]), ratio(&r[1])),
        j => (ratio(j), ratio(j)),
    };
    let (Some(rt), Some(rc)) = (rt, rc) else {
        return Err(a.unsupported("mlp_ratio", "a positive number or a pair of them"));
    };
    // MixerBlock: int(r · dim) for (tokens, channels); ResBlock / SpatialGatingBlock take one ratio.
    if block != BlockKind::Mixer && v.mlp_ratio.is_array() {
        return Err(a.unsupported(
            "mlp_ratio",
            "ResBlock and SpatialGatingBlock take one ratio",
        ));
    }
    let tokens_hidden = (rt * dim as f64) as usize;
    let channels_hidden = (rc * dim as f64) as usize;
    let halves = mlp_kind != MlpKind::Mlp;
    if tokens_hidden == 0
        || channels_hidden == 0
        || (halves
            && (!channels_hidden.is_multiple_of(2)
                || (block == BlockKind::Mixer && !tokens_hidden.is_multiple_of(2))))
    {
        return Err(Error::invalid_model(format!(
            "mlp_ratio {} of embed_dim {dim} gives hidden widths ({tokens_hidden}, {channels_hidden}) this MLP cannot take",
            v.mlp_ratio
        )));
    }
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    let pool = match pool_name {
        "avg" => true,
        "" => false,
        _ => {
            return Err(Error::invalid_model(format!(
                "MlpMixer's global_pool is 'avg' or '', not `{pool_name}`"
            )))
        }
    };
    Ok(Cfg {
        patch,
        blocks,
        dim,
        block,
        mlp: mlp_kind,
        norm,
        act,
        tokens_hidden,
        channels_hidden,
        init_values,
        stem_norm: v.stem_norm,
        pool,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        let n = TABLE.validate().unwrap();
        assert_eq!(n, 15, "{n} archs");
        for arch in TABLE.names() {
            assert!(
                (FAMILY.matches)(arch),
                "{arch} is not matched by the family"
            );
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
