//! Swin Transformer: timm's `swin_transformer.py` (`SwinTransformer`, shifted windows with a
//! relative-position bias table).
//!
//! The graph follows timm's forward on channels-last `[N, H, W, C]` maps: `PatchEmbed` (with
//! its LayerNorm), per stage `PatchMerging` (from the second stage on) and
//! `SwinTransformerBlock`s — cyclic shift, pad to whole windows, window attention with the
//! relative-position bias and the shift mask, reverse —, the final `norm` and `ClassifierHead`.
//! The relative-position index and the shift mask, buffers timm does not save, are computed at
//! load for the input size; the graph takes that one size.
//!
//! Feature maps are timm's `features_only=True` stages `layers.{i}` (no final norm), returned
//! NCHW as `forward_intermediates` gives them (timm's `FeatureListNet` returns the same values
//! channels-last).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::mlp::{linear, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::window::{self, WindowGeom};
use crate::graph::layers::{self, Norm};
use crate::graph::spatial::{Spatial, Step};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/swin_transformer.json"));

/// The `swin_transformer` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "swin_transformer",
    examples: "swin_tiny_patch4_window7_224, swin_base_patch4_window12_384, swin_s3_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `SwinTransformer.__init__`'s keyword arguments with timm's defaults.
    pub struct SwinArgs {
        img_size: Json = Json::Null,
        patch_size: usize = 4,
        global_pool: String = "avg".into(),
        embed_dim: usize = 96,
        depths: Vec<usize> = vec![2, 2, 6, 2],
        num_heads: Vec<usize> = vec![3, 6, 12, 24],
        head_dim: Json = Json::Null,
        window_size: Json = Json::from(7),
        always_partition: bool = false,
        strict_img_size: bool = true,
        dynamic_img_size: bool = false,
        mlp_ratio: PerStage<f64> = PerStage::All(4.0),
        qkv_bias: bool = true,
        // Accepted at timm's defaults only (PatchEmbed, nn.LayerNorm).
        embed_layer: Json = Json::Null,
        norm_layer: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One stage as timm's constructor resolves it.
#[derive(Debug, Clone)]
struct Stage {
    depth: usize,
    dim: usize,
    attn: AttnCfg,
    mlp_hidden: usize,
    /// The window timm asks for (`resolve_stage_window_sizes`), before clamping to the map.
    window: (usize, usize),
}

/// A `SwinTransformer` as timm constructs it.
#[derive(Debug, Clone)]
struct Swin {
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

/// An int or an `[h, w]` pair (timm's `to_2tuple`).
fn pair(j: &Json) -> Option<(usize, usize)> {
    let one = |j: &Json| {
        j.as_u64()
            .filter(|n| (1..=crate::graph::args::MAX_INT).contains(n))
            .map(|n| n as usize)
    };
    match j {
        Json::Array(hw) if hw.len() == 2 => one(&hw[0]).zip(one(&hw[1])),
        j => one(j).map(|n| (n, n)),
    }
}

/// timm's `resolve_stage_window_sizes`: one window for all stages, an `(h, w)` pair for all,
/// or one per stage (a list of two ints is always one `(h, w)`).
fn stage_windows(a: &Args, v: &Json, n: usize) -> Result<Vec<(usize, usize)>> {
    let bad = || {
        a.unsupported(
            "window_size",
            "expected an int, an [h, w] pair or one per stage",
        )
    };
    match v {
        Json::Array(l) if l.len() != 2 || l[0].is_array() => {
            if l.len() != n {
                return Err(Error::invalid_model(format!(
                    "model_args window_size has {} entries but the model has {n} stages",
                    l.len()
                )));
            }
            l.iter().map(|w| pair(w).ok_or_else(bad)).collect()
        }
        v => Ok(vec![pair(v).ok_or_else(bad)?; n]),
    }
}

/// timm's `to_ntuple(n)(head_dim)`: `None`, one value, or one per stage.
fn stage_head_dims(a: &Args, v: &Json, n: usize) -> Result<Vec<Option<usize>>> {
    let one = |j: &Json| match j {
        Json::Null => Ok(None),
        j => pair(j)
            .filter(|_| j.is_u64())
            .map(|p| Some(p.0))
            .ok_or_else(|| a.unsupported("head_dim", "expected null, an int or one per stage")),
    };
    match v {
        Json::Array(l) if l.len() == n => l.iter().map(one).collect(),
        Json::Array(_) => Err(Error::invalid_model(format!(
            "model_args head_dim does not have one entry per stage ({n})"
        ))),
        v => Ok(vec![one(v)?; n]),
    }
}

impl Swin {
    fn resolve(cfg: &ModelConfig) -> Result<Swin> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a Swin architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = SwinArgs::read(&a)?;
        for (key, j) in [
            ("embed_layer", &v.embed_layer),
            ("norm_layer", &v.norm_layer),
        ] {
            let default = if key == "embed_layer" {
                "patchembed"
            } else {
                "layernorm"
            };
            if !(j.is_null() || j.as_str() == Some(default)) {
                return Err(a.unsupported(key, "only timm's default layer is built natively"));
            }
        }
        let n = v.depths.len();
        if n == 0 || v.num_heads.len() != n {
            return Err(Error::invalid_model(format!(
                "Swin depths ({n} stages) and num_heads ({}) must have one entry per stage",
                v.num_heads.len()
            )));
        }
        let windows = stage_windows(&a, &v.window_size, n)?;
        let head_dims = stage_head_dims(&a, &v.head_dim, n)?;
        let ratios = v.mlp_ratio.expand("mlp_ratio", n)?;
        // timm's img_size: model_args, else the pretrained cfg's input size when it is fixed
        // (build_model_with_cfg passes it), else the class default 224.
        let img = match &v.img_size {
            Json::Null if cfg.pretrained_cfg.fixed_input_size => {
                let [_, h, w] = cfg.pretrained_cfg.input_size;
                (h, w)
            }
            Json::Null => (224, 224),
            j => pair(j).ok_or_else(|| a.unsupported("img_size", "expected an int or [h, w]"))?,
        };
        let p = v.patch_size;
        let mut stages = Vec::with_capacity(n);
        for i in 0..n {
            let dim = v.embed_dim << i;
            let heads = v.num_heads[i];
            let hd = head_dims[i].unwrap_or(dim.checked_div(heads).unwrap_or(0));
            if heads == 0 || hd == 0 || v.depths[i] > crate::graph::args::MAX_INT as usize {
                return Err(Error::invalid_model(format!(
                    "Swin stage {i}: {heads} heads of width {hd} for dim {dim}"
                )));
            }
            let mut attn = AttnCfg::new(dim, heads);
            attn.inner = Some(hd * heads);
            attn.qkv_bias = v.qkv_bias;
            stages.push(Stage {
                depth: v.depths[i],
                dim,
                attn,
                // Python's int(dim * mlp_ratio).
                mlp_hidden: (dim as f64 * ratios[i]) as usize,
                window: windows[i],
            });
        }
        if v.embed_dim == 0 || p == 0 || img.0 < p || img.1 < p {
            return Err(Error::invalid_model(
                "Swin embed_dim, patch_size and img_size must be positive",
            ));
        }
        let pool = PoolKind::from_timm(&v.global_pool)?;
        if pool == PoolKind::None {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one vector per image",
            ));
        }
        Ok(Swin {
            patch: p,
            grid: (img.0 / p, img.1 / p),
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
    let v = Swin::resolve(cfg)?;
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
            "input {h}x{w} is smaller than the Swin patch size {p}"
        )));
    }
    let mut spatial = b.spatial(&tokens).cloned().unwrap_or_else(Spatial::input);
    let mut x = layers::reshape(b, &tokens, &[-1, hw.0 as i64, hw.1 as i64, dim0 as i64]);
    // The resolution the constructor clamps windows to: the input's, or with a dynamic mask the
    // constructor's img_size grid (timm's input_resolution), halved (ceil) per merge.
    let mut res = if v.dynamic_mask { v.grid } else { hw };
    let mut in_dim = dim0;
    for (i, st) in v.stages.iter().enumerate() {
        let mut layers_scope = b.scope("layers");
        let s = &mut layers_scope.scope(i);
        if i > 0 {
            x = patch_merging(&mut s.scope("downsample"), &x, hw, in_dim, st.dim, v.norm)?;
            hw = (hw.0.div_ceil(2), hw.1.div_ceil(2));
            res = (res.0.div_ceil(2), res.1.div_ceil(2));
            spatial = spatial.then(Step::Same { stride: 2 });
        }
        s.activation(&[st.dim, hw.0, hw.1])?;
        x = stage_blocks(s, &v, st, &x, hw, res)?;
        in_dim = st.dim;
        let map = layers::nhwc_to_nchw(s, &x);
        s.assign_spatial(&map, spatial.clone());
        s.feature(&map, st.dim, p << i, &format!("layers.{i}"));
    }
    let d = in_dim;
    let x = v.norm.apply_last(&mut b.scope("norm"), &x, d)?;
    let x = layers::nhwc_to_nchw(b, &x);
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        d,
        v.pool,
        cfg.num_classes,
        features,
    )
}

/// `PatchMerging`: the 2×2 gather, `norm` over `4·dim`, `reduction` (no bias) to `out_dim`.
fn patch_merging(
    b: &mut Builder,
    x: &Value,
    hw: (usize, usize),
    dim: usize,
    out_dim: usize,
    norm: Norm,
) -> Result<Value> {
    let y = window::patch_merge_gather(b, x, hw, dim);
    let y = norm.apply_last(&mut b.scope("norm"), &y, 4 * dim)?;
    linear(
        &mut b.scope("reduction"),
        &y,
        4 * dim,
        out_dim,
        false,
        Init::TruncNormal(0.02),
    )
}

/// A stage's `blocks`: even blocks plain windows, odd ones shifted by half a window. The
/// relative-position index and the shift mask are shared by the stage's blocks.
fn stage_blocks(
    b: &mut Builder,
    v: &Swin,
    st: &Stage,
    x: &Value,
    hw: (usize, usize),
    res: (usize, usize),
) -> Result<Value> {
    let shift = (st.window.0 / 2, st.window.1 / 2);
    let plain = WindowGeom::new(hw, res, st.window, (0, 0), v.always_partition);
    let shifted = WindowGeom::new(hw, res, st.window, shift, v.always_partition);
    let index = window::rel_pos_index_const(b, plain.win);
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
        x = block(s, v, st, &x, g, &index, m)?;
    }
    Ok(x)
}

/// `SwinTransformerBlock`: `x + attn(norm1(x))` on shifted windows, then `x + mlp(norm2(x))`.
fn block(
    b: &mut Builder,
    v: &Swin,
    st: &Stage,
    x: &Value,
    g: &WindowGeom,
    index: &Value,
    mask: Option<&Value>,
) -> Result<Value> {
    let d = st.dim;
    let h = v.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = window::shifted_windows(b, &h, g, d, |b, windows| {
        let a = &mut b.scope("attn");
        let (wh, ww) = g.win;
        let table = a.param(
            "relative_position_bias_table",
            &[(2 * wh - 1) * (2 * ww - 1), st.attn.heads],
            Init::TruncNormal(0.02),
        )?;
        let rel = window::rel_pos_bias(a, &table, index, st.attn.heads, g.win);
        let bias = window::window_attn_bias(a, &rel, mask, x, st.attn.heads, wh * ww);
        let hooks = Hooks {
            bias: Some(bias),
            rope: None,
        };
        attention(a, windows, &st.attn, &hooks)
    })?;
    let x = layers::add(b, x, &y);
    let h = v.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let y = mlp(
        &mut b.scope("mlp"),
        &h,
        &MlpCfg::new(d, st.mlp_hidden, "gelu"),
    )?;
    Ok(layers::add(b, &x, &y))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_registered_swin_resolves_with_timms_widths() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let v = Swin::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                cfg.num_features,
                Some(v.stages.last().unwrap().dim),
                "{name}"
            );
            let [_, h, _] = cfg.pretrained_cfg.input_size;
            assert_eq!(v.grid.0, h / 4, "{name}");
        }
        assert_eq!(TABLE.names().len(), 9);
    }

    #[test]
    fn window_sizes_per_stage_follow_resolve_stage_window_sizes() {
        let cfg = parse(&TABLE.get("swin_s3_tiny_224").unwrap().config);
        let v = Swin::resolve(&cfg).unwrap();
        let w: Vec<_> = v.stages.iter().map(|s| s.window).collect();
        assert_eq!(w, vec![(7, 7), (7, 7), (14, 14), (7, 7)]);

        let mut json = TABLE
            .get("swin_tiny_patch4_window7_224")
            .unwrap()
            .config
            .clone();
        json["model_args"]["window_size"] = serde_json::json!([4, 6]);
        let v = Swin::resolve(&parse(&json)).unwrap();
        assert!(v.stages.iter().all(|s| s.window == (4, 6)));

        json["model_args"]["norm_layer"] = serde_json::json!("rmsnorm");
        let e = Swin::resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_UNSUPPORTED);
        assert!(e.message().contains("norm_layer"), "{e}");
    }
}
