//! Pyramid Vision Transformer v2: timm's `pvt_v2.py` (`PyramidVisionTransformerV2`).
//!
//! Overlapping patch embeddings (a 7×7 stride-4 conv, then 3×3 stride-2 convs between stages,
//! each with its LayerNorm), blocks of spatial-reduction attention (`layers::sr_attention`; the
//! `linear` models pool keys to 7×7 with an adaptive pool) and `MlpWithDepthwiseConv` (a 3×3
//! depthwise conv between `fc1` and the GELU, after a ReLU in the linear models), each stage
//! closed by its norm and returned NCHW. No position embedding: the graph takes any input size,
//! as timm does.
//!
//! Feature maps are timm's `features_only` stages `stages.{i}` (a `FeatureListNet`; NCHW).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::mlp::{linear, linear_2d};
use crate::graph::layers::patch_embed::token_map;
use crate::graph::layers::sr_attention::{sr_attention, SrAttnCfg};
use crate::graph::layers::{self, conv2d, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/pvt_v2.json"));

/// The `pvt_v2` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "pvt_v2",
    examples: "pvt_v2_b0 .. pvt_v2_b5, pvt_v2_b2_li",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// timm's `LayerNorm` (the blocks' and stages' `norm_layer`).
const NORM_EPS: f32 = 1e-6;
/// `nn.LayerNorm` of the patch embeddings.
const EMBED_NORM_EPS: f32 = 1e-5;

timm_args! {
    /// `PyramidVisionTransformerV2.__init__`'s keyword arguments with timm's defaults.
    pub struct PvtArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        depths: Vec<usize> = vec![3, 4, 6, 3],
        embed_dims: Vec<usize> = vec![64, 128, 256, 512],
        num_heads: PerStage<usize> = PerStage::Each(vec![1, 2, 4, 8]),
        sr_ratios: PerStage<usize> = PerStage::Each(vec![8, 4, 2, 1]),
        mlp_ratios: PerStage<f64> = PerStage::Each(vec![8.0, 8.0, 4.0, 4.0]),
        qkv_bias: bool = true,
        linear: bool = false,
        // Accepted at timm's default only (timm's LayerNorm).
        norm_layer: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `PyramidVisionTransformerStage`.
#[derive(Debug, Clone)]
struct Stage {
    dim: usize,
    depth: usize,
    attn: SrAttnCfg,
    hidden: usize,
}

fn resolve(cfg: &ModelConfig) -> Result<(Vec<Stage>, bool)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a PVT v2 architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = PvtArgs::read(&a)?;
    if !(v.norm_layer.is_null() || v.norm_layer.as_str() == Some("layernorm")) {
        return Err(a.unsupported(
            "norm_layer",
            "only timm's default LayerNorm is built natively",
        ));
    }
    if !matches!(v.global_pool.as_str(), "avg" | "") {
        return Err(a.unsupported("global_pool", "timm takes 'avg' or ''"));
    }
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    let n = v.depths.len();
    if n == 0 || v.embed_dims.len() != n {
        return Err(Error::invalid_model(format!(
            "PVT v2 depths ({n} stages) and embed_dims ({}) must have one entry per stage",
            v.embed_dims.len()
        )));
    }
    let heads = v.num_heads.expand("num_heads", n)?;
    let srs = v.sr_ratios.expand("sr_ratios", n)?;
    let ratios = v.mlp_ratios.expand("mlp_ratios", n)?;
    let mut stages = Vec::with_capacity(n);
    for i in 0..n {
        let dim = v.embed_dims[i];
        if dim == 0 || heads[i] == 0 || !dim.is_multiple_of(heads[i]) || srs[i] == 0 {
            return Err(Error::invalid_model(format!(
                "PVT v2 stage {i}: dim {dim} with {} heads, sr_ratio {}",
                heads[i], srs[i]
            )));
        }
        stages.push(Stage {
            dim,
            depth: v.depths[i],
            attn: SrAttnCfg {
                dim,
                heads: heads[i],
                sr_ratio: srs[i],
                linear: v.linear,
                pool: 7,
                qkv_bias: v.qkv_bias,
            },
            hidden: (dim as f64 * ratios[i]) as usize,
        });
    }
    Ok((stages, v.global_pool == "avg"))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let (stages, pool) = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    // patch_embed: the map NCHW (the grid the tokens lie on) and the normed tokens.
    let (mut grid, mut x) = overlap_patch_embed(
        &mut b.scope("patch_embed"),
        &input,
        in_ch,
        stages[0].dim,
        7,
        4,
    )?;
    let mut prev = stages[0].dim;
    for (i, st) in stages.iter().enumerate() {
        let mut ss = b.scope("stages");
        let s = &mut ss.scope(i);
        if i > 0 {
            let map = token_map(s, &x, 0, &grid);
            (grid, x) = overlap_patch_embed(&mut s.scope("downsample"), &map, prev, st.dim, 3, 2)?;
        }
        for j in 0..st.depth {
            let mut blocks = s.scope("blocks");
            x = block(&mut blocks.scope(j), &x, &grid, st)?;
        }
        x = layers::layer_norm(&mut s.scope("norm"), &x, st.dim, NORM_EPS)?;
        let map = token_map(s, &x, 0, &grid);
        s.feature(&map, st.dim, 4 << i, &format!("stages.{i}"));
        prev = st.dim;
    }
    let pooled = if pool {
        layers::reduce_mean(b, &x, &[1], false)
    } else {
        return Err(Error::unsupported(
            "global_pool '': no pooling; native graphs return one pooled vector per image",
        ));
    };
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, prev));
    }
    let y = linear_2d(
        &mut b.scope("head"),
        &pooled,
        prev,
        cfg.num_classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, cfg.num_classes))
}

/// `OverlapPatchEmbed`: a `k`×`k` conv `proj` with stride `stride` and padding `k/2`, then
/// `norm` over the channels; returns the conv's map and the normed tokens.
fn overlap_patch_embed(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    dim: usize,
    k: usize,
    stride: usize,
) -> Result<(Value, Value)> {
    let c = Conv::new(in_ch, dim, k)
        .stride(stride)
        .pad(Pad::Sym(k / 2))
        .bias(true);
    let map = conv2d(&mut b.scope("proj"), x, c)?;
    let t = layers::nchw_to_tokens(b, &map, dim);
    let t = layers::layer_norm(&mut b.scope("norm"), &t, dim, EMBED_NORM_EPS)?;
    Ok((map, t))
}

/// `Block`: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`.
fn block(b: &mut Builder, x: &Value, grid: &Value, st: &Stage) -> Result<Value> {
    let d = st.dim;
    let y = layers::layer_norm(&mut b.scope("norm1"), x, d, NORM_EPS)?;
    let y = sr_attention(&mut b.scope("attn"), &y, grid, &st.attn)?;
    let x = layers::add(b, x, &y);
    let y = layers::layer_norm(&mut b.scope("norm2"), &x, d, NORM_EPS)?;
    let y = mlp_dwconv(&mut b.scope("mlp"), &y, grid, d, st.hidden, st.attn.linear)?;
    Ok(layers::add(b, &x, &y))
}

/// `MlpWithDepthwiseConv`: `fc1`, (ReLU with `extra_relu`), the 3×3 depthwise `dwconv` on the
/// map, GELU, `fc2`.
fn mlp_dwconv(
    b: &mut Builder,
    x: &Value,
    grid: &Value,
    dim: usize,
    hidden: usize,
    extra_relu: bool,
) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let y = linear(&mut b.scope("fc1"), x, dim, hidden, true, init)?;
    let mut map = token_map(b, &y, 0, grid);
    if extra_relu {
        map = layers::act(b, "relu", &map)?;
    }
    let dw = Conv::new(hidden, hidden, 3).depthwise().bias(true);
    let map = conv2d(&mut b.scope("dwconv"), &map, dw)?;
    let y = layers::nchw_to_tokens(b, &map, hidden);
    let y = layers::act(b, "gelu", &y)?;
    linear(&mut b.scope("fc2"), &y, hidden, dim, true, init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_pvt_v2_resolves() {
        for name in TABLE.names() {
            let cfg =
                ModelConfig::parse(TABLE.get(name).unwrap().config.to_string().as_bytes()).unwrap();
            let (stages, pool) = resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(pool);
            assert_eq!(cfg.num_features, Some(stages.last().unwrap().dim), "{name}");
            assert_eq!(stages[0].attn.linear, name.ends_with("_li"), "{name}");
        }
        assert_eq!(TABLE.names().len(), 7);
    }
}
