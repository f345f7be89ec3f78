//! Swin Transformer V2: timm's `swin_transformer_v2.py` (`SwinTransformerV2`).
//!
//! Swin v1's shifted windows on channels-last `[N, H, W, C]` maps, with v2's changes:
//! res-post-norm blocks (`x + norm1(attn(x))`, `x + norm2(mlp(x))`), `PatchMerging` as
//! `reduction` then `norm`, cosine attention scaled per head by `exp(min(logit_scale, ln 100))`,
//! `q_bias` / `v_bias` around a zero k bias, and the continuous position bias (`cpb_mlp` on
//! log-spaced coordinates, `16·sigmoid`) evaluated once at load. The relative-position index,
//! coordinates and shift masks, buffers timm does not save, are computed at load for the input
//! size; the graph takes that one size.
//!
//! Feature maps are timm's `features_only=True` stages `layers.{i}` (no final norm), returned
//! NCHW as `forward_intermediates` gives them (timm's `FeatureListNet` returns them
//! channels-last).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::mlp::{linear, linear_nobias, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::pos_embed_rel::cpb_mlp_bias;
use crate::graph::layers::window::{self, WindowGeom};
use crate::graph::layers::{self, Norm};
use crate::graph::spatial::{Spatial, Step};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/swin_transformer_v2.json"));

/// The `swin_transformer_v2` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "swin_transformer_v2",
    examples: "swinv2_tiny_window8_256, swinv2_base_window12to24_192to384",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `SwinTransformerV2.__init__`'s keyword arguments with timm's defaults.
    pub struct SwinV2Args {
        img_size: Json = Json::Null,
        patch_size: usize = 4,
        global_pool: String = "avg".into(),
        embed_dim: usize = 96,
        depths: Vec<usize> = vec![2, 2, 6, 2],
        num_heads: Vec<usize> = vec![3, 6, 12, 24],
        window_size: Json = Json::from(7),
        always_partition: bool = false,
        strict_img_size: bool = true,
        dynamic_img_size: bool = false,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        act_layer: String = "gelu".into(),
        pretrained_window_sizes: Vec<usize> = vec![0, 0, 0, 0],
        // Accepted at timm's default only (nn.LayerNorm).
        norm_layer: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `SwinTransformerV2Stage` as timm's constructor resolves it.
#[derive(Debug, Clone)]
struct Stage {
    depth: usize,
    dim: usize,
    heads: usize,
    mlp_hidden: usize,
    /// The window timm asks for, before clamping to the map.
    window: (usize, usize),
    /// `pretrained_window_size` of the stage's attention (0: the window itself).
    pretrained: usize,
}

/// A `SwinTransformerV2` as timm constructs it.
#[derive(Debug, Clone)]
struct SwinV2 {
    patch: usize,
    /// `patch_embed.grid_size` of the constructor's `img_size`.
    grid: (usize, usize),
    stages: Vec<Stage>,
    always_partition: bool,
    /// `strict_img_size=False`: masks follow the input, windows the constructor's grid.
    dynamic_mask: bool,
    qkv_bias: bool,
    act: String,
    pool: PoolKind,
    norm: Norm,
}

impl SwinV2 {
    fn resolve(cfg: &ModelConfig) -> Result<SwinV2> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a Swin V2 architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = SwinV2Args::read(&a)?;
        if !(v.norm_layer.is_null() || v.norm_layer.as_str() == Some("layernorm")) {
            return Err(a.unsupported("norm_layer", "only nn.LayerNorm is built natively"));
        }
        let n = v.depths.len();
        if n == 0 || v.num_heads.len() != n || v.pretrained_window_sizes.len() < n {
            return Err(Error::invalid_model(format!(
                "Swin V2 depths ({n} stages), num_heads ({}) and pretrained_window_sizes ({}) \
                 must have one entry per stage",
                v.num_heads.len(),
                v.pretrained_window_sizes.len()
            )));
        }
        let windows = window::resolve_stage_window_sizes(&a, &v.window_size, n)?;
        // timm's img_size: model_args, else the pretrained cfg's input size when it is fixed
        // (build_model_with_cfg passes it), else the class default 224.
        let img = match &v.img_size {
            Json::Null if cfg.pretrained_cfg.fixed_input_size => {
                let [_, h, w] = cfg.pretrained_cfg.input_size;
                (h, w)
            }
            Json::Null => (224, 224),
            j => window::int_pair(j)
                .ok_or_else(|| a.unsupported("img_size", "expected an int or [h, w]"))?,
        };
        let p = v.patch_size;
        if v.embed_dim == 0 || p == 0 || img.0 < p || img.1 < p {
            return Err(Error::invalid_model(
                "Swin V2 embed_dim, patch_size and img_size must be positive",
            ));
        }
        let mut stages = Vec::with_capacity(n);
        for (i, &window) in windows.iter().enumerate() {
            let dim = v.embed_dim << i;
            let heads = v.num_heads[i];
            if heads == 0 || dim % heads != 0 || v.depths[i] > crate::graph::args::MAX_INT as usize
            {
                return Err(Error::invalid_model(format!(
                    "Swin V2 stage {i}: {heads} heads do not divide dim {dim}"
                )));
            }
            stages.push(Stage {
                depth: v.depths[i],
                dim,
                heads,
                // Python's int(dim * mlp_ratio).
                mlp_hidden: (dim as f64 * v.mlp_ratio) as usize,
                window,
                pretrained: v.pretrained_window_sizes[i],
            });
        }
        let pool = PoolKind::from_timm(&v.global_pool)?;
        if pool == PoolKind::None {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one vector per image",
            ));
        }
        Ok(SwinV2 {
            patch: p,
            grid: (img.0 / p, img.1 / p),
            stages,
            always_partition: v.always_partition,
            dynamic_mask: v.dynamic_img_size || !v.strict_img_size,
            qkv_bias: v.qkv_bias,
            act: v.act_layer,
            pool,
            // nn.LayerNorm's eps.
            norm: Norm::Layer { eps: 1e-5 },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = SwinV2::resolve(cfg)?;
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
            "input {h}x{w} is smaller than the Swin V2 patch size {p}"
        )));
    }
    let mut spatial = b.spatial(&tokens).cloned().unwrap_or_else(Spatial::input);
    let mut x = layers::reshape(b, &tokens, &[-1, hw.0 as i64, hw.1 as i64, dim0 as i64]);
    // The resolution windows are clamped to: the input's, or with a dynamic mask the
    // constructor's grid (timm's input_resolution), halved (ceil) per merge.
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
    let x = v.norm.apply_last(&mut b.scope("norm"), &x, in_dim)?;
    let x = layers::nhwc_to_nchw(b, &x);
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

/// `PatchMerging` (v2): the 2×2 gather, `reduction` (no bias) to `out_dim`, then `norm`.
fn patch_merging(
    b: &mut Builder,
    x: &Value,
    hw: (usize, usize),
    dim: usize,
    out_dim: usize,
    norm: Norm,
) -> Result<Value> {
    let y = window::patch_merge_gather(b, x, hw, dim);
    let y = linear(
        &mut b.scope("reduction"),
        &y,
        4 * dim,
        out_dim,
        false,
        Init::TruncNormal(0.02),
    )?;
    norm.apply_last(&mut b.scope("norm"), &y, out_dim)
}

/// A stage's `blocks`: even blocks plain windows, odd ones shifted by half a window; the shift
/// mask is shared by the stage's shifted blocks.
fn stage_blocks(
    b: &mut Builder,
    v: &SwinV2,
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
        x = block(s, v, st, &x, g, m)?;
    }
    Ok(x)
}

/// `SwinTransformerV2Block`: `x + norm1(attn(x))` on shifted windows, `x + norm2(mlp(x))`.
fn block(
    b: &mut Builder,
    v: &SwinV2,
    st: &Stage,
    x: &Value,
    g: &WindowGeom,
    mask: Option<&Value>,
) -> Result<Value> {
    let d = st.dim;
    let y = window::shifted_windows(b, x, g, d, |b, windows| {
        window_attention(&mut b.scope("attn"), v, st, windows, g, x, mask)
    })?;
    let y = v.norm.apply_last(&mut b.scope("norm1"), &y, d)?;
    let x = layers::add(b, x, &y);
    let y = mlp(
        &mut b.scope("mlp"),
        &x,
        &MlpCfg::new(d, st.mlp_hidden, &v.act),
    )?;
    let y = v.norm.apply_last(&mut b.scope("norm2"), &y, d)?;
    Ok(layers::add(b, &x, &y))
}

/// `WindowAttention` (v2) on windows `[N·nW, L, C]`: `qkv` with `q_bias | 0 | v_bias`, cosine
/// attention (q and k L2-normalised per head, q scaled by the head's clamped `logit_scale`),
/// the continuous position bias plus the shift mask, `proj`. `like` is the block input
/// `[N, H, W, C]` (its batch sizes the bias).
fn window_attention(
    b: &mut Builder,
    v: &SwinV2,
    st: &Stage,
    windows: &Value,
    g: &WindowGeom,
    like: &Value,
    mask: Option<&Value>,
) -> Result<Value> {
    let (d, heads) = (st.dim, st.heads);
    let hd = d / heads;
    let init = Init::TruncNormal(0.02);
    let mut qkv = linear_nobias(&mut b.scope("qkv"), windows, d, 3 * d, init)?;
    if v.qkv_bias {
        let q = b.read("q_bias", &[d], Init::Zeros)?;
        let vb = b.read("v_bias", &[d], Init::Zeros)?;
        let bias = [q, vec![0.0; d], vb].concat();
        let bias = b.tensor("qkv_bias", bias, &[3 * d])?;
        qkv = b.op("Add", &[&qkv, &bias], vec![]);
    }
    let parts = layers::split(b, &qkv, -1, &[d; 3]);
    // exp(min(logit_scale, ln 100)) per head, at load.
    let ls = b.read("logit_scale", &[heads, 1, 1], Init::Const(10f32.ln()))?;
    let ls: Vec<f32> = ls.iter().map(|s| s.min(100f32.ln()).exp()).collect();
    let ls = b.tensor("logit_scale", ls, &[heads, 1])?;
    let q = l2_normalize_heads(b, &parts[0], heads, hd, Some(&ls));
    let k = l2_normalize_heads(b, &parts[1], heads, hd, None);
    let rel = cpb_mlp_bias(b, g.win, (st.pretrained, st.pretrained), heads)?;
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

/// `F.normalize(t, dim=-1)` of each head of `t` `[N, L, heads·hd]` (`t / max(‖t‖, 1e-12)`),
/// times a per-head `scale` `[heads, 1]` when given; returns `[N, L, heads·hd]`.
fn l2_normalize_heads(
    b: &mut Builder,
    t: &Value,
    heads: usize,
    hd: usize,
    scale: Option<&Value>,
) -> Value {
    let t = layers::reshape(b, t, &[0, 0, heads as i64, hd as i64]);
    let axes = b.ints(&[-1]);
    let norm = b.op("ReduceL2", &[&t, &axes], vec![("keepdims", Attr::Int(1))]);
    let eps = b.scalar(1e-12);
    let norm = b.op("Max", &[&norm, &eps], vec![]);
    let mut y = b.op("Div", &[&t, &norm], vec![]);
    if let Some(s) = scale {
        y = layers::mul(b, &y, s);
    }
    layers::reshape(b, &y, &[0, 0, (heads * hd) as i64])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_registered_swinv2_resolves_with_timms_widths() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let v = SwinV2::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                cfg.num_features,
                Some(v.stages.last().unwrap().dim),
                "{name}"
            );
        }
        assert_eq!(TABLE.names().len(), 12);
        let cfg = parse(
            &TABLE
                .get("swinv2_base_window12to24_192to384")
                .unwrap()
                .config,
        );
        let v = SwinV2::resolve(&cfg).unwrap();
        let pre: Vec<_> = v.stages.iter().map(|s| s.pretrained).collect();
        assert_eq!(pre, vec![12, 12, 12, 6]);
        assert!(v.stages.iter().all(|s| s.window == (24, 24)));
    }
}
