//! Pooling-based Vision Transformer (timm `pit.py`, `PoolingVisionTransformer`): a strided conv
//! patch embedding (`ConvEmbedding`) plus a learned NCHW position embedding, then three
//! `Transformer` stages of ViT pre-norm `Block`s over [class (+ distillation) tokens, patch
//! tokens]. Between stages `Pooling` halves the grid with a grouped stride-2 conv on the map and
//! widens the class tokens with a Linear. `norm` acts on the class tokens only; the head takes
//! the class token (distilled: the mean of `head` and `head_dist`).
//!
//! Feature maps are timm's `features_only=True` (`FeatureHookNet` on `transformers.<i>`): each
//! stage's patch-token map, NCHW, every stage by default.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{expand_batch, token_map};
use crate::graph::layers::{self, conv2d, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/pit.json"));

/// The `pit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "pit",
    examples: "pit_ti_224, pit_xs_224, pit_s_224, pit_b_224, pit_*_distilled_224",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `PoolingVisionTransformer.__init__`'s keyword arguments with timm's defaults.
    pub struct PitArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 16,
        stride: usize = 8,
        // Accepted and unused by timm's class.
        stem_type: String = "overlap".into(),
        base_dims: Vec<usize> = vec![48, 48, 48],
        depth: Vec<usize> = vec![2, 6, 4],
        heads: Vec<usize> = vec![2, 4, 8],
        mlp_ratio: f64 = 4.0,
        global_pool: String = "token".into(),
        distilled: bool = false,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// Every LayerNorm in PiT: the blocks' `partial(nn.LayerNorm, eps=1e-6)` and the final norm.
const NORM: Norm = Norm::Layer { eps: 1e-6 };
const INIT: Init = Init::TruncNormal(0.02);

/// A `PoolingVisionTransformer` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Pit {
    patch: usize,
    stride: usize,
    /// `patch_embed.grid_size`: the grid the position embedding covers.
    grid: (usize, usize),
    base_dims: Vec<usize>,
    depth: Vec<usize>,
    heads: Vec<usize>,
    mlp_ratio: f64,
    /// Class tokens: 2 when distilled.
    tokens: usize,
}

impl Pit {
    fn width(&self, i: usize) -> usize {
        self.base_dims[i] * self.heads[i]
    }

    fn resolve(cfg: &ModelConfig) -> Result<Pit> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a PiT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = PitArgs::read(&a)?;
        let _ = &v.stem_type;
        let img = match &v.img_size {
            Json::Array(hw) if hw.len() == 2 => hw[0].as_u64().zip(hw[1].as_u64()),
            j => j.as_u64().map(|n| (n, n)),
        }
        .filter(|&(h, w)| {
            h > 0 && w > 0 && h <= crate::graph::args::MAX_INT && w <= crate::graph::args::MAX_INT
        })
        .map(|(h, w)| (h as usize, w as usize))
        .ok_or_else(|| a.unsupported("img_size", "expected a positive int or [h, w]"))?;
        match v.global_pool.as_str() {
            "token" => {}
            _ => {
                return Err(a.unsupported(
                    "global_pool",
                    "token only (no pooling returns every class token)",
                ))
            }
        }
        let n = v.depth.len();
        let (p, s) = (v.patch_size, v.stride);
        if n == 0 || v.base_dims.len() != n || v.heads.len() != n {
            return Err(Error::invalid_model(
                "PiT base_dims, depth and heads must have one entry per stage",
            ));
        }
        if p == 0 || s == 0 || img.0 < p || img.1 < p {
            return Err(Error::invalid_model(
                "PiT patch_size and stride must be positive, img_size at least a patch",
            ));
        }
        let m = Pit {
            patch: p,
            stride: s,
            // ConvEmbedding: floor((img - patch) / stride + 1), no padding.
            grid: ((img.0 - p) / s + 1, (img.1 - p) / s + 1),
            base_dims: v.base_dims,
            depth: v.depth,
            heads: v.heads,
            mlp_ratio: v.mlp_ratio,
            tokens: if v.distilled { 2 } else { 1 },
        };
        for i in 0..n {
            if m.width(i) == 0 || (m.width(i) as f64 * m.mlp_ratio) as usize == 0 {
                return Err(Error::invalid_model("PiT stage widths must be positive"));
            }
        }
        Ok(m)
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Pit::resolve(cfg)?;
    let (h, w) = b.image_size();
    if h < m.patch || w < m.patch {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the patch size {}",
            m.patch
        )));
    }
    let grid = ((h - m.patch) / m.stride + 1, (w - m.patch) / m.stride + 1);
    // timm's PiT adds its position embedding as stored and never resamples it.
    if grid != m.grid {
        return Err(Error::unsupported(format!(
            "PiT at a {}x{} patch grid for input {h}x{w} (its position embedding covers {}x{}; timm does not resample it)",
            grid.0, grid.1, m.grid.0, m.grid.1
        )));
    }
    let d0 = m.width(0);
    let conv = Conv::new(cfg.pretrained_cfg.input_size[0], d0, m.patch)
        .stride(m.stride)
        .pad(Pad::Sym(0))
        .bias(true)
        .init(Init::DefaultUniform);
    let input = b.input();
    let x = conv2d(&mut b.scope("patch_embed").scope("conv"), &input, conv)?;
    let pos = b.param("pos_embed", &[1, d0, grid.0, grid.1], INIT)?;
    let mut x = layers::add(b, &x, &pos);
    let cls = b.param("cls_token", &[1, m.tokens, d0], INIT)?;
    let mut cls = expand_batch(b, &cls, &x, m.tokens, d0);
    let mut prev = d0;
    for i in 0..m.depth.len() {
        let mut st = b.scope("transformers");
        let s = &mut st.scope(i);
        let d = m.width(i);
        if i > 0 {
            // Pooling: a grouped stride-2 conv on the map, a Linear on the class tokens.
            let pool = &mut s.scope("pool");
            let c = Conv::new(prev, d, 3)
                .stride(2)
                .pad(Pad::Sym(1))
                .groups(prev)
                .bias(true)
                .init(Init::DefaultUniform);
            x = conv2d(&mut pool.scope("conv"), &x, c)?;
            cls = linear(
                &mut pool.scope("fc"),
                &cls,
                prev,
                d,
                true,
                Init::DefaultUniform,
            )?;
        }
        let map = x.clone();
        let tokens = layers::nchw_to_tokens(s, &x, d);
        let mut t = layers::concat(s, &[&cls, &tokens], 1);
        for j in 0..m.depth[i] {
            let mut blocks = s.scope("blocks");
            t = block(&mut blocks.scope(j), &m, i, &t)?;
        }
        cls = layers::slice(s, &t, 1, 0, m.tokens as i64);
        x = token_map(s, &t, m.tokens, &map);
        let module = s.path().to_string();
        s.feature(&x, d, m.stride << i, &module);
        prev = d;
    }
    let d = prev;
    let cls = NORM.apply_last(&mut b.scope("norm"), &cls, d)?;
    let classes = cfg.num_classes;
    let features = b.output() == OutputKind::Features || classes == 0;
    let first = layers::token_at(b, &cls, 0);
    if m.tokens == 2 {
        let dist = layers::token_at(b, &cls, 1);
        if features {
            // forward_head(pre_logits=True) of the distilled model: the mean of both tokens.
            return Ok((layers::mean2(b, &first, &dist), d));
        }
        let y = linear_2d(&mut b.scope("head"), &first, d, classes, true, INIT)?;
        let y_dist = linear_2d(&mut b.scope("head_dist"), &dist, d, classes, true, INIT)?;
        return Ok((layers::mean2(b, &y, &y_dist), classes));
    }
    if features {
        return Ok((first, d));
    }
    let y = linear_2d(&mut b.scope("head"), &first, d, classes, true, INIT)?;
    Ok((y, classes))
}

/// timm's ViT `Block` (qkv bias, LayerNorm eps 1e-6, no layer scale):
/// `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
fn block(b: &mut Builder, m: &Pit, stage: usize, x: &Value) -> Result<Value> {
    let d = m.width(stage);
    let h = NORM.apply_last(&mut b.scope("norm1"), x, d)?;
    let ac = AttnCfg::new(d, m.heads[stage]);
    let y = attention(&mut b.scope("attn"), &h, &ac, &Hooks::default())?;
    let x = layers::add(b, x, &y);
    let h = NORM.apply_last(&mut b.scope("norm2"), &x, d)?;
    let c = MlpCfg::new(d, (d as f64 * m.mlp_ratio) as usize, "gelu");
    let y = mlp(&mut b.scope("mlp"), &h, &c)?;
    Ok(layers::add(b, &x, &y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_with_timms_width_and_grid() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let m = Pit::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.width(2)), "{name}");
            assert_eq!(m.tokens == 2, name.contains("distilled"), "{name}");
            // 224 px: 27x27 (patch 16, stride 8) or 31x31 (patch 14, stride 7).
            assert!(
                matches!(m.grid, (27, 27) | (31, 31)),
                "{name}: {:?}",
                m.grid
            );
        }
        assert_eq!(TABLE.names().len(), 8);
    }

    #[test]
    fn no_pooling_is_refused_naming_the_argument() {
        let mut json = TABLE.get("pit_ti_224").unwrap().config.clone();
        json["model_args"] = serde_json::json!({"global_pool": ""});
        let e = Pit::resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");
        assert!(e.message().contains("global_pool"), "{e}");
    }
}
