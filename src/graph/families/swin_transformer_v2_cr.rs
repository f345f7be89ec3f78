//! Swin Transformer V2 'cr': timm's `swin_transformer_v2_cr.py` (`SwinTransformerV2Cr`,
//! Christoph Reich's implementation).
//!
//! Shifted windows on channels-last `[N, H, W, C]` maps with res-post-norm blocks
//! (`x + norm1(attn(x))`, `x + norm2(mlp(x))`, then `norm3` on blocks with an extra norm — every
//! `extra_norm_period` blocks, the last block of a stage with `extra_norm_stage`, and always the
//! last block of the model), `PatchMerging` as `norm` then `reduction`, cosine attention scaled
//! per head by `exp(min(logit_scale, ln 100))`, and the position bias of `meta_mlp` on
//! log-spaced offsets, evaluated once at load. No final norm; the head pools the NCHW stage
//! output. Windows come from `window_size` or the constructor's patch grid divided by
//! `window_ratio`; masks and biases are computed at load for the input size.
//!
//! Feature maps are timm's `features_only=True` stages `stages.{i}`, NCHW as the stages return
//! them.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, normalize_heads, AttnCfg, Hooks};
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::mlp::{linear, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::pos_embed_rel::meta_mlp_bias;
use crate::graph::layers::window::{self, WindowGeom};
use crate::graph::layers::{self, Norm};
use crate::graph::spatial::{Spatial, Step};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/swin_transformer_v2_cr.json"));

/// The `swin_transformer_v2_cr` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "swin_transformer_v2_cr",
    examples: "swinv2_cr_tiny_ns_224, swinv2_cr_base_384",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// `WindowMultiHeadAttention`'s `meta_hidden_dim` (timm never changes it).
const META_HIDDEN: usize = 384;

timm_args! {
    /// `SwinTransformerV2Cr.__init__`'s keyword arguments with timm's defaults.
    pub struct SwinV2CrArgs {
        img_size: Json = Json::from(vec![224, 224]),
        patch_size: usize = 4,
        window_size: Json = Json::Null,
        window_ratio: Json = Json::from(8),
        always_partition: bool = false,
        strict_img_size: bool = true,
        dynamic_img_size: bool = false,
        embed_dim: usize = 96,
        depths: Vec<usize> = vec![2, 2, 6, 2],
        num_heads: Vec<usize> = vec![3, 6, 12, 24],
        mlp_ratio: f64 = 4.0,
        extra_norm_period: usize = 0,
        extra_norm_stage: bool = false,
        global_pool: String = "avg".into(),
        // Initialisation and an attention flag timm's forward never reads.
        init_values: Json = Json::from(0.0),
        sequential_attn: bool = false,
        weight_init: String = "reset".into(),
        // Accepted at timm's default only (nn.LayerNorm).
        norm_layer: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `SwinTransformerV2CrStage` as timm's constructor resolves it.
#[derive(Debug, Clone)]
struct Stage {
    depth: usize,
    dim: usize,
    heads: usize,
    mlp_hidden: usize,
    window: (usize, usize),
    /// Which blocks end with `norm3`.
    extra_norm: Vec<bool>,
}

/// A `SwinTransformerV2Cr` as timm constructs it.
#[derive(Debug, Clone)]
struct SwinV2Cr {
    patch: usize,
    /// `patch_embed.grid_size` of the constructor's `img_size`.
    grid: (usize, usize),
    stages: Vec<Stage>,
    always_partition: bool,
    /// `strict_img_size=False`: masks follow the input, windows the constructor's grid.
    dynamic_mask: bool,
    pool: PoolKind,
    norm: Norm,
}

/// timm's `window_sizes_from_ratio`: the patch grid divided by each stage's ratio (at least 1).
fn windows_from_ratio(
    a: &Args,
    ratio: &Json,
    grid: (usize, usize),
    n: usize,
) -> Result<Vec<(usize, usize)>> {
    let one = |j: &Json| {
        j.as_u64()
            .filter(|r| (1..=crate::graph::args::MAX_INT).contains(r))
            .map(|r| r as usize)
            .ok_or_else(|| {
                a.unsupported("window_ratio", "expected a positive int or one per stage")
            })
    };
    let ratios = match ratio {
        Json::Array(l) if l.len() == n => l.iter().map(one).collect::<Result<Vec<_>>>()?,
        Json::Array(l) => {
            return Err(Error::invalid_model(format!(
                "model_args window_ratio has {} entries but the model has {n} stages",
                l.len()
            )))
        }
        j => vec![one(j)?; n],
    };
    Ok(ratios
        .iter()
        .map(|r| ((grid.0 / r).max(1), (grid.1 / r).max(1)))
        .collect())
}

impl SwinV2Cr {
    fn resolve(cfg: &ModelConfig) -> Result<SwinV2Cr> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a Swin V2 cr architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = SwinV2CrArgs::read(&a)?;
        if !(v.norm_layer.is_null() || v.norm_layer.as_str() == Some("layernorm")) {
            return Err(a.unsupported("norm_layer", "only nn.LayerNorm is built natively"));
        }
        let n = v.depths.len();
        if n == 0 || v.num_heads.len() != n {
            return Err(Error::invalid_model(format!(
                "Swin V2 cr depths ({n} stages) and num_heads ({}) must have one entry per stage",
                v.num_heads.len()
            )));
        }
        let img = window::int_pair(&v.img_size)
            .ok_or_else(|| a.unsupported("img_size", "expected an int or [h, w]"))?;
        let p = v.patch_size;
        if v.embed_dim == 0 || p == 0 || img.0 < p || img.1 < p {
            return Err(Error::invalid_model(
                "Swin V2 cr embed_dim, patch_size and img_size must be positive",
            ));
        }
        let grid = (img.0 / p, img.1 / p);
        let windows = match &v.window_size {
            Json::Null => windows_from_ratio(&a, &v.window_ratio, grid, n)?,
            w => window::resolve_stage_window_sizes(&a, w, n)?,
        };
        let mut stages = Vec::with_capacity(n);
        for (i, &window) in windows.iter().enumerate() {
            let (depth, heads) = (v.depths[i], v.num_heads[i]);
            let dim = v.embed_dim << i;
            if heads == 0 || dim % heads != 0 || depth > crate::graph::args::MAX_INT as usize {
                return Err(Error::invalid_model(format!(
                    "Swin V2 cr stage {i}: {heads} heads do not divide dim {dim}"
                )));
            }
            // `_extra_norm`: the last stage always ends with a norm.
            let stage_end = v.extra_norm_stage || i + 1 == n;
            let extra_norm = (1..=depth)
                .map(|k| {
                    (v.extra_norm_period > 0 && k % v.extra_norm_period == 0)
                        || (stage_end && k == depth)
                })
                .collect();
            stages.push(Stage {
                depth,
                dim,
                heads,
                // Python's int(dim * mlp_ratio).
                mlp_hidden: (dim as f64 * v.mlp_ratio) as usize,
                window,
                extra_norm,
            });
        }
        let pool = PoolKind::from_timm(&v.global_pool)?;
        if pool == PoolKind::None {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one vector per image",
            ));
        }
        Ok(SwinV2Cr {
            patch: p,
            grid,
            stages,
            always_partition: v.always_partition,
            dynamic_mask: v.dynamic_img_size || !v.strict_img_size,
            pool,
            // nn.LayerNorm's eps.
            norm: Norm::Layer { eps: 1e-5 },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = SwinV2Cr::resolve(cfg)?;
    let (h, w) = b.image_size();
    let p = v.patch;
    let dim0 = v.stages[0].dim;
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: dim0,
        patch: p,
        bias: true,
        pad: (0, 0),
        norm: Some(v.norm),
        flatten: true,
    };
    let input = b.input();
    let tokens = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let mut hw = (h / p, w / p);
    if hw.0 == 0 || hw.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the Swin V2 cr patch size {p}"
        )));
    }
    let mut spatial = b.spatial(&tokens).cloned().unwrap_or_else(Spatial::input);
    let mut x = layers::reshape(b, &tokens, &[-1, hw.0 as i64, hw.1 as i64, dim0 as i64]);
    // The resolution windows are clamped to: the input's, or with a dynamic mask the
    // constructor's grid (timm's feat_size), halved (ceil) per merge.
    let mut res = if v.dynamic_mask { v.grid } else { hw };
    let mut in_dim = dim0;
    let mut map = None;
    for (i, st) in v.stages.iter().enumerate() {
        let mut stages_scope = b.scope("stages");
        let s = &mut stages_scope.scope(i);
        if i > 0 {
            x = patch_merging(&mut s.scope("downsample"), &x, hw, in_dim, v.norm)?;
            hw = (hw.0.div_ceil(2), hw.1.div_ceil(2));
            res = (res.0.div_ceil(2), res.1.div_ceil(2));
            spatial = spatial.then(Step::Same { stride: 2 });
        }
        s.activation(&[st.dim, hw.0, hw.1])?;
        x = stage_blocks(s, &v, st, &x, hw, res)?;
        in_dim = st.dim;
        let m = layers::nhwc_to_nchw(s, &x);
        s.assign_spatial(&m, spatial.clone());
        s.feature(&m, st.dim, p << i, &format!("stages.{i}"));
        map = Some(m);
    }
    let x = map.expect("at least one stage");
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        in_dim,
        v.pool,
        cfg.num_classes,
        features,
    )
}

/// `PatchMerging`: the 2×2 gather, `norm` over `4·dim`, `reduction` (no bias) to `2·dim`.
fn patch_merging(
    b: &mut Builder,
    x: &Value,
    hw: (usize, usize),
    dim: usize,
    norm: Norm,
) -> Result<Value> {
    let y = window::patch_merge_gather(b, x, hw, dim);
    let y = norm.apply_last(&mut b.scope("norm"), &y, 4 * dim)?;
    linear(
        &mut b.scope("reduction"),
        &y,
        4 * dim,
        2 * dim,
        false,
        Init::TruncNormal(0.02),
    )
}

/// A stage's `blocks`: even blocks plain windows, odd ones shifted by half a window.
fn stage_blocks(
    b: &mut Builder,
    v: &SwinV2Cr,
    st: &Stage,
    x: &Value,
    hw: (usize, usize),
    res: (usize, usize),
) -> Result<Value> {
    let shift = (st.window.0 / 2, st.window.1 / 2);
    let plain = WindowGeom::new(hw, res, st.window, (0, 0), v.always_partition);
    let shifted = WindowGeom::new(hw, res, st.window, shift, v.always_partition);
    let mask = window::shift_mask_const(b, &shifted);
    let mut x = x.clone();
    for j in 0..st.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(j);
        let (g, m) = if j % 2 == 0 {
            (&plain, None)
        } else {
            (&shifted, mask.as_ref())
        };
        x = block(s, v, st, &x, g, m, st.extra_norm[j])?;
    }
    Ok(x)
}

/// `SwinTransformerV2CrBlock`: `x + norm1(attn(x))`, `x + norm2(mlp(x))`, then `norm3`.
fn block(
    b: &mut Builder,
    v: &SwinV2Cr,
    st: &Stage,
    x: &Value,
    g: &WindowGeom,
    mask: Option<&Value>,
    extra_norm: bool,
) -> Result<Value> {
    let d = st.dim;
    let y = window::shifted_windows(b, x, g, d, |b, windows| {
        window_attention(&mut b.scope("attn"), st, windows, g, x, mask)
    })?;
    let y = v.norm.apply_last(&mut b.scope("norm1"), &y, d)?;
    let x = layers::add(b, x, &y);
    let y = mlp(
        &mut b.scope("mlp"),
        &x,
        &MlpCfg::new(d, st.mlp_hidden, "gelu"),
    )?;
    let y = v.norm.apply_last(&mut b.scope("norm2"), &y, d)?;
    let x = layers::add(b, &x, &y);
    if extra_norm {
        v.norm.apply_last(&mut b.scope("norm3"), &x, d)
    } else {
        Ok(x)
    }
}

/// `WindowMultiHeadAttention` on windows `[N·nW, L, C]`: `qkv`, cosine attention (q and k
/// L2-normalised per head, q scaled by the head's clamped `logit_scale`), the `meta_mlp` bias
/// plus the shift mask, `proj`. `like` is the block input `[N, H, W, C]`.
fn window_attention(
    b: &mut Builder,
    st: &Stage,
    windows: &Value,
    g: &WindowGeom,
    like: &Value,
    mask: Option<&Value>,
) -> Result<Value> {
    let (d, heads) = (st.dim, st.heads);
    let hd = d / heads;
    let init = Init::TruncNormal(0.02);
    let qkv = linear(&mut b.scope("qkv"), windows, d, 3 * d, true, init)?;
    let parts = layers::split(b, &qkv, -1, &[d; 3]);
    // exp(min(logit_scale, ln 100)) per head, at load.
    let ls = b.read("logit_scale", &[heads], Init::Const(10f32.ln()))?;
    let ls: Vec<f32> = ls.iter().map(|s| s.min(100f32.ln()).exp()).collect();
    let ls = b.tensor("logit_scale", ls, &[heads, 1])?;
    let q = normalize_heads(b, &parts[0], heads, hd, Some(&ls));
    let k = normalize_heads(b, &parts[1], heads, hd, None);
    let rel = meta_mlp_bias(b, g.win, heads, META_HIDDEN)?;
    let bias = window::window_attn_bias(b, &rel, mask, like, heads, g.area());
    let mut c = AttnCfg::new(d, heads);
    c.scale = Some(1.0);
    let hooks = Hooks {
        bias: Some(bias),
        rope: None,
    };
    let y = attention_core(b, &q, &k, &parts[2], &c, &hooks)?;
    linear(&mut b.scope("proj"), &y, d, d, true, init)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_registered_swinv2_cr_resolves_with_timms_widths_and_windows() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let v = SwinV2Cr::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                cfg.num_features,
                Some(v.stages.last().unwrap().dim),
                "{name}"
            );
            // window_ratio 8 of the patch grid: 7 at 224, 12 at 384.
            let [_, h, _] = cfg.pretrained_cfg.input_size;
            assert!(v.stages.iter().all(|s| s.window.0 == h / 32), "{name}");
            assert!(v.stages.last().unwrap().extra_norm.last().unwrap());
        }
        assert_eq!(TABLE.names().len(), 16);
        let v =
            SwinV2Cr::resolve(&parse(&TABLE.get("swinv2_cr_huge_224").unwrap().config)).unwrap();
        let third: Vec<_> = (0..18).filter(|&k| v.stages[2].extra_norm[k]).collect();
        assert_eq!(third, vec![5, 11, 17]);
    }
}
