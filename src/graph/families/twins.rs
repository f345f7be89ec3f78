//! Twins: timm's `twins.py` (`Twins`: the PCPVT and SVT models).
//!
//! Per stage a non-overlapping `PatchEmbed` (conv + LayerNorm), then blocks whose attention is
//! global sub-sampled attention (`layers::sr_attention`, PVT's spatial-reduction attention) or,
//! in the SVT models' even blocks, locally-grouped attention: self-attention inside `ws`×`ws`
//! windows of the map padded with zeros to whole windows (timm attends to the padding too).
//! The `PosConv` position generator (a 3×3 depthwise conv plus its input) follows each stage's
//! first block. The graph takes one input size: timm's models are `fixed_input_size`, and the
//! windows' padding is computed for it.
//!
//! Feature maps are timm's `features_only` (`forward_intermediates` through a getter): every
//! stage `block.{k}` as NCHW, the last one before the final norm.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::token_map;
use crate::graph::layers::sr_attention::{sr_attention, SrAttnCfg};
use crate::graph::layers::window::{pad_hw_end, window_partition, window_reverse};
use crate::graph::layers::{self, conv2d, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/twins.json"));

/// The `twins` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "twins",
    examples: "twins_pcpvt_small, twins_pcpvt_base, twins_svt_small, twins_svt_large, ...",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// The blocks' and the final `norm_layer` (`partial(nn.LayerNorm, eps=1e-6)`).
const NORM_EPS: f32 = 1e-6;
/// `nn.LayerNorm` of the patch embeddings.
const EMBED_NORM_EPS: f32 = 1e-5;

timm_args! {
    /// `Twins.__init__`'s keyword arguments with timm's defaults.
    pub struct TwinsArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 4,
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        embed_dims: Vec<usize> = vec![64, 128, 256, 512],
        num_heads: Vec<usize> = vec![1, 2, 4, 8],
        mlp_ratios: Vec<f64> = vec![4.0, 4.0, 4.0, 4.0],
        depths: Vec<usize> = vec![3, 4, 6, 3],
        sr_ratios: Vec<usize> = vec![8, 4, 2, 1],
        wss: Option<PerStage<usize>> = None,
        // Accepted at timm's defaults only.
        norm_layer: Json = Json::Null,
        block_cls: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One stage as timm's constructor resolves it.
#[derive(Debug, Clone)]
struct Stage {
    dim: usize,
    depth: usize,
    heads: usize,
    hidden: usize,
    sr_ratio: usize,
    /// `wss[k]` (SVT): the even blocks' window; `None` or 1: every block is global.
    ws: Option<usize>,
}

struct Twins {
    patch: usize,
    stages: Vec<Stage>,
    pool: bool,
}

fn resolve(cfg: &ModelConfig) -> Result<Twins> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a Twins architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = TwinsArgs::read(&a)?;
    for key in ["norm_layer", "block_cls"] {
        let j = if key == "norm_layer" {
            &v.norm_layer
        } else {
            &v.block_cls
        };
        if !j.is_null() {
            return Err(a.unsupported(key, "only timm's default layer is built natively"));
        }
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
    let lens = [
        v.embed_dims.len(),
        v.num_heads.len(),
        v.mlp_ratios.len(),
        v.sr_ratios.len(),
    ];
    if n == 0 || lens.iter().any(|&l| l < n) {
        return Err(Error::invalid_model(format!(
            "Twins depths ({n} stages): embed_dims, num_heads, mlp_ratios and sr_ratios need one entry per stage"
        )));
    }
    let wss = match &v.wss {
        None => None,
        Some(w) => Some(w.expand("wss", n)?),
    };
    if v.patch_size == 0 {
        return Err(Error::invalid_model("Twins patch_size 0"));
    }
    let mut stages = Vec::with_capacity(n);
    for k in 0..n {
        let (dim, heads) = (v.embed_dims[k], v.num_heads[k]);
        if dim == 0 || heads == 0 || !dim.is_multiple_of(heads) || v.sr_ratios[k] == 0 {
            return Err(Error::invalid_model(format!(
                "Twins stage {k}: dim {dim} with {heads} heads, sr_ratio {}",
                v.sr_ratios[k]
            )));
        }
        let ws = wss.as_ref().map(|w| w[k]).filter(|&w| w != 1);
        if ws == Some(0) {
            return Err(Error::invalid_model(format!("Twins stage {k}: window 0")));
        }
        stages.push(Stage {
            dim,
            depth: v.depths[k],
            heads,
            hidden: (dim as f64 * v.mlp_ratios[k]) as usize,
            sr_ratio: v.sr_ratios[k],
            ws,
        });
    }
    Ok(Twins {
        patch: v.patch_size,
        stages,
        pool: v.global_pool == "avg",
    })
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let t = resolve(cfg)?;
    let (mut h, mut w) = b.image_size();
    let mut x = b.input();
    let mut in_ch = cfg.pretrained_cfg.input_size[0];
    let mut patch = t.patch;
    let mut reduction = 1;
    let last = t.stages.len() - 1;
    let mut tokens = x.clone();
    for (k, st) in t.stages.iter().enumerate() {
        // patch_embeds.k: conv kernel = stride = patch, LayerNorm over the tokens.
        let grid = {
            let mut pe = b.scope("patch_embeds");
            let s = &mut pe.scope(k);
            let c = Conv::new(in_ch, st.dim, patch)
                .stride(patch)
                .pad(Pad::Sym(0))
                .bias(true);
            let grid = conv2d(&mut s.scope("proj"), &x, c)?;
            let tk = layers::nchw_to_tokens(s, &grid, st.dim);
            tokens = layers::layer_norm(&mut s.scope("norm"), &tk, st.dim, EMBED_NORM_EPS)?;
            grid
        };
        (h, w) = (h / patch, w / patch);
        if h == 0 || w == 0 {
            return Err(Error::invalid_argument(
                "the input is too small for this Twins model: a stage's map would be empty",
            ));
        }
        reduction *= patch;
        b.activation(&[st.dim, h, w])?;
        for j in 0..st.depth {
            {
                let mut blocks = b.scope("blocks");
                let mut stage = blocks.scope(k);
                let ws = st.ws.filter(|_| j % 2 == 0);
                tokens = block(&mut stage.scope(j), &tokens, &grid, st, ws, (h, w))?;
            }
            if j == 0 {
                let mut pos = b.scope("pos_block");
                tokens = pos_conv(&mut pos.scope(k), &tokens, &grid, st.dim)?;
            }
        }
        let map = token_map(b, &tokens, 0, &grid);
        b.feature(&map, st.dim, reduction, &format!("block.{k}"));
        if k < last {
            x = map;
        }
        in_ch = st.dim;
        patch = 2;
    }
    let dim = t.stages[last].dim;
    let y = layers::layer_norm(&mut b.scope("norm"), &tokens, dim, NORM_EPS)?;
    if !t.pool {
        return Err(Error::unsupported(
            "global_pool '': no pooling; native graphs return one pooled vector per image",
        ));
    }
    let pooled = layers::reduce_mean(b, &y, &[1], false);
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, dim));
    }
    let y = linear_2d(
        &mut b.scope("head"),
        &pooled,
        dim,
        cfg.num_classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, cfg.num_classes))
}

/// `Block`: `x + attn(norm1(x))` (locally grouped with a window `ws`, else global sub-sampled),
/// then `x + mlp(norm2(x))`.
fn block(
    b: &mut Builder,
    x: &Value,
    grid: &Value,
    st: &Stage,
    ws: Option<usize>,
    hw: (usize, usize),
) -> Result<Value> {
    let d = st.dim;
    let y = layers::layer_norm(&mut b.scope("norm1"), x, d, NORM_EPS)?;
    let y = match ws {
        Some(ws) => locally_grouped_attn(&mut b.scope("attn"), &y, d, st.heads, ws, hw)?,
        None => {
            let c = SrAttnCfg {
                dim: d,
                heads: st.heads,
                sr_ratio: st.sr_ratio,
                linear: false,
                pool: 7,
                qkv_bias: true,
            };
            sr_attention(&mut b.scope("attn"), &y, grid, &c)?
        }
    };
    let x = layers::add(b, x, &y);
    let y = layers::layer_norm(&mut b.scope("norm2"), &x, d, NORM_EPS)?;
    let y = mlp(&mut b.scope("mlp"), &y, &MlpCfg::new(d, st.hidden, "gelu"))?;
    Ok(layers::add(b, &x, &y))
}

/// `LocallyGroupedAttn`: the `[N, H·W, C]` tokens as a map padded with zeros to whole `ws`×`ws`
/// windows, attention (`qkv`) inside each window, the padding cropped, `proj`.
fn locally_grouped_attn(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    heads: usize,
    ws: usize,
    (h, w): (usize, usize),
) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let (hp, wp) = (h + ph, w + pw);
    let m = layers::reshape(b, x, &[-1, h as i64, w as i64, dim as i64]);
    let m = pad_hw_end(b, &m, ph, pw);
    let win = window_partition(b, &m, (hp, wp), (ws, ws), dim);
    let qkv = linear(&mut b.scope("qkv"), &win, dim, 3 * dim, true, init)?;
    let p = layers::split(b, &qkv, -1, &[dim; 3]);
    let a = AttnCfg::new(dim, heads);
    let y = attention_core(b, &p[0], &p[1], &p[2], &a, &Hooks::default())?;
    let mut y = window_reverse(b, &y, (hp, wp), (ws, ws), dim);
    if ph > 0 || pw > 0 {
        y = layers::slice(b, &y, 1, 0, h as i64);
        y = layers::slice(b, &y, 2, 0, w as i64);
    }
    let y = layers::reshape(b, &y, &[-1, (h * w) as i64, dim as i64]);
    linear(&mut b.scope("proj"), &y, dim, dim, true, init)
}

/// `PosConv` (stride 1): `x + proj.0(x)` on the map, a 3×3 depthwise conv with bias.
fn pos_conv(b: &mut Builder, x: &Value, grid: &Value, dim: usize) -> Result<Value> {
    let map = token_map(b, x, 0, grid);
    let c = Conv::new(dim, dim, 3).depthwise().bias(true);
    let y = conv2d(&mut b.scope("proj").scope(0), &map, c)?;
    let y = layers::add(b, &y, &map);
    Ok(layers::nchw_to_tokens(b, &y, dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_twins_resolves() {
        for name in TABLE.names() {
            let cfg =
                ModelConfig::parse(TABLE.get(name).unwrap().config.to_string().as_bytes()).unwrap();
            let t = resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                cfg.num_features,
                Some(t.stages.last().unwrap().dim),
                "{name}"
            );
            assert_eq!(t.stages[0].ws.is_some(), name.contains("_svt_"), "{name}");
        }
        assert_eq!(TABLE.names().len(), 6);
    }
}
