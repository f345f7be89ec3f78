//! Qwen3-VL / Qwen3.5 vision towers (timm `qwen3_vit.py`): `Qwen3VitClassifier` (the encoder,
//! optionally its VLM projector `merger`, mean pooling, a non-affine LayerNorm and the head).
//!
//! The encoder is a pre-norm ViT of `EvaBlock`s with rope attention (fused qkv with bias, axial
//! `RotaryEmbeddingCat` on integer patch coordinates in the rotate-half layout) plus a learned
//! square position grid, bilinearly resampled (align_corners) to the input's patch grid — at load,
//! since a graph has one input size. The merger is per-token LayerNorm, a k×k pixel-unshuffle of
//! the token grid, `fc1`, exact GELU and `fc2`.
//!
//! `Qwen3VitEncoder` (`*_enc`, its weights at the top level) has no `forward_head` (timm raises
//! for classification use): its forward is built as it is, with option `output=tokens` for the
//! token sequences of `global_pool='merge'` (the projector's tokens, what the LLM consumes) and
//! `''` (the raw patch tokens, timm's NHWC map row-major), and as the one vector of `'avg'`.
//!
//! Feature maps are `forward_intermediates` (`feature_cls='getter'`): every block's output on the
//! patch grid, by default the last three.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks, Rope};
use crate::graph::layers::encoder_tower::{read_pool, TowerOutput};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{self, patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed::{interpolate_hwc, Interp, Resample};
use crate::graph::layers::rope::{self, GridType, RopeConsts, RopeGrid};
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/qwen3_vit.json"));

/// The `qwen3_vit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "qwen3_vit",
    examples: "qwen3_vit_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Qwen3VitClassifier.__init__`, timm's defaults.
    pub struct Qwen3Args {
        img_size: Json = Json::from(768),
        patch_size: usize = 16,
        global_pool: String = String::new(),
        encoder_pool: String = String::new(),
        out_features: usize = 0,
        embed_dim: usize = 1152,
        depth: usize = 27,
        num_heads: usize = 16,
        mlp_ratio: f64 = 4304.0 / 1152.0,
        merge_size: usize = 2,
        pos_embed_grid_size: usize = 48,
        rope_temperature: f64 = 10000.0,
        norm_eps: f64 = 1e-6,
        act_layer: Option<String> = None,
        final_norm: bool = true,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone)]
struct Qwen3 {
    patch: usize,
    dim: usize,
    depth: usize,
    heads: usize,
    mlp_hidden: usize,
    act: String,
    eps: f32,
    pos_grid: usize,
    temperature: f32,
    /// The projector (`merge_size`, `out_features`), when the graph runs it.
    merger: Option<(usize, usize)>,
    final_norm: bool,
    /// `Qwen3VitEncoder`: its own forward, no head.
    encoder: Option<TowerOutput>,
}

impl Qwen3 {
    fn resolve(cfg: &ModelConfig) -> Result<Qwen3> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a Qwen3 ViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        // Qwen3VitEncoder takes the classifier's arguments with its own global_pool.
        let mut v = Qwen3Args::read_only(&a)?;
        let encoder = if arch.ends_with("_enc") {
            let pools = [
                ("merge", TowerOutput::Tokens, "merge"),
                ("", TowerOutput::Tokens, ""),
                ("avg", TowerOutput::Mean, ""),
            ];
            let (out, pool) = read_pool(&a, "Qwen3VitEncoder", "merge", &pools)?;
            (v.global_pool, v.encoder_pool, v.final_norm) = ("avg".into(), pool, false);
            Some(out)
        } else {
            None
        };
        a.finish()?;
        let (dim, heads) = (v.embed_dim, v.num_heads);
        if heads == 0 || dim == 0 || dim % heads != 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim} is not divisible by num_heads {heads}"
            )));
        }
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if v.depth == 0 || mlp_hidden == 0 || v.patch_size == 0 || v.pos_embed_grid_size == 0 {
            return Err(Error::invalid_model(
                "Qwen3 ViT depth, mlp width, patch and position grid must be positive",
            ));
        }
        if v.merge_size == 0 {
            return Err(Error::invalid_model("merge_size must be positive"));
        }
        let merge = match v.encoder_pool.as_str() {
            "" => false,
            "merge" => true,
            _ => return Err(a.unsupported("encoder_pool", "'' or merge")),
        };
        if v.global_pool != "avg" {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one vector per image",
            ));
        }
        // img_size only sets timm's nominal grid; the graph takes the input's.
        let _ = &v.img_size;
        Ok(Qwen3 {
            patch: v.patch_size,
            dim,
            depth: v.depth,
            heads,
            mlp_hidden,
            act: v.act_layer.unwrap_or_else(|| "gelu_tanh".into()),
            eps: v.norm_eps as f32,
            pos_grid: v.pos_embed_grid_size,
            temperature: v.rope_temperature as f32,
            merger: merge.then_some((v.merge_size, v.out_features)),
            final_norm: v.final_norm,
            encoder,
        })
    }

    /// The width after the merger (`merger.out_features`), else the trunk's.
    fn num_features(&self) -> usize {
        match self.merger {
            Some((k, 0)) => self.dim * k * k,
            Some((_, out)) => out,
            None => self.dim,
        }
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = Qwen3::resolve(cfg)?;
    if let Some(out) = v.encoder {
        return encoder_forward(b, &v, cfg, out);
    }
    let mut x = encoder(&mut b.scope("encoder"), &v, cfg)?;
    let nf = v.num_features();
    // forward_head: the mean over the (merged) tokens.
    x = global_pool_nlc(b, &x, TokenPool::Avg, 0, false);
    if v.final_norm {
        // LayerNorm(affine=False).
        let ones = b.const_f32(vec![1.0; nf], &[nf as i64]);
        let zeros = b.const_f32(vec![0.0; nf], &[nf as i64]);
        let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(v.eps))];
        x = b.op("LayerNormalization", &[&x, &ones, &zeros], attrs);
    }
    let classes = cfg.num_classes;
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((x, nf));
    }
    let y = linear_2d(
        &mut b.scope("head"),
        &x,
        nf,
        classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, classes))
}

/// `Qwen3VitEncoder.forward` as the model (`*_enc`): the merged or raw tokens, or their mean.
fn encoder_forward(
    b: &mut Builder,
    v: &Qwen3,
    cfg: &ModelConfig,
    out: TowerOutput,
) -> Result<(Value, usize)> {
    out.check(b, &cfg.architecture, "Qwen3VitEncoder")?;
    let x = encoder(b, v, cfg)?;
    let (h, w) = b.image_size();
    let k = v.merger.map_or(1, |(k, _)| k);
    Ok(out.finish(
        b,
        &x,
        (h / v.patch / k) * (w / v.patch / k),
        v.num_features(),
    ))
}

/// `Qwen3VitEncoder.forward` (in the current scope): the tokens after the blocks and, when
/// enabled, the merger.
fn encoder(b: &mut Builder, v: &Qwen3, cfg: &ModelConfig) -> Result<Value> {
    let (h, w) = b.image_size();
    let p = v.patch;
    // PatchEmbed(strict_img_size=False) asserts a multiple of the patch.
    if h % p != 0 || w % p != 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is not a multiple of the Qwen3 ViT patch size {p} (timm asserts)"
        )));
    }
    let grid = (h / p, w / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the Qwen3 ViT patch size {p}"
        )));
    }
    if let Some((k, _)) = v.merger {
        if !grid.0.is_multiple_of(k) || !grid.1.is_multiple_of(k) {
            return Err(Error::invalid_argument(format!(
                "the {}x{} patch grid of a {h}x{w} input is not divisible by merge_size {k} (timm asserts)",
                grid.0, grid.1
            )));
        }
    }
    let d = v.dim;
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
    let mut x = layers::nchw_to_tokens(b, &patches, d);
    // resample_pos_embed_grid: bilinear, align_corners=True, identity on the stored grid.
    let g = v.pos_grid;
    let shape = [1, g * g, d];
    let pos = if grid == (g, g) {
        b.param("pos_embed", &shape, Init::TruncNormal(0.02))?
    } else {
        let data = b.read("pos_embed", &shape, Init::TruncNormal(0.02))?;
        let r = Resample {
            mode: Interp::Bilinear,
            antialias: false,
            align_corners: true,
        };
        let out = interpolate_hwc(&data, (g, g), d, grid, &r);
        b.tensor("pos_embed", out, &[1, grid.0 * grid.1, d])?
    };
    x = layers::add(b, &x, &pos);
    // RotaryEmbeddingCat(in_pixels=False, rotate_half=True) on the integer grid.
    let rg = RopeGrid {
        grid_type: GridType::Index,
        xy: false,
        offset: 0.0,
        ref_shape: None,
    };
    let table = rope::rotary_embedding_cat(d / v.heads, v.temperature, &rg, grid, true)?;
    let r = RopeConsts::new(b, table, true, 0);
    let norm = Norm::Layer { eps: v.eps };
    for i in 0..v.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, v, &norm, &x, &r)?;
        let map = patch_embed::token_map(s, &x, 0, &patches);
        let module = s.path().to_string();
        s.feature(&map, d, p, &module);
    }
    b.default_out_indices(&[-3, -2, -1]);

    if let Some((k, out)) = v.merger {
        x = merger(&mut b.scope("merger"), &x, d, grid, k, out, &norm)?;
    }
    Ok(x)
}

/// `EvaBlock(attn_type='rope')` without layer scale: `x + attn(norm1(x))`, `x + mlp(norm2(x))`.
fn block(b: &mut Builder, v: &Qwen3, norm: &Norm, x: &Value, r: &RopeConsts) -> Result<Value> {
    let d = v.dim;
    let h = norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let hooks = Hooks {
        bias: None,
        rope: Some(Rope::Tables(r)),
    };
    let c = AttnCfg::new(d, v.heads);
    let y = attention(&mut b.scope("attn"), &h, &c, &hooks)?;
    let x = layers::add(b, x, &y);
    let h = norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let y = mlp(
        &mut b.scope("mlp"),
        &h,
        &MlpCfg::new(d, v.mlp_hidden, &v.act),
    )?;
    Ok(layers::add(b, &x, &y))
}

/// `Qwen3VitPatchMerger`: LayerNorm per token, the k×k blocks of the token grid concatenated
/// row-major (`(kh, kw, C)`), `fc1`, GELU, `fc2` (when `out_features > 0`).
fn merger(
    b: &mut Builder,
    x: &Value,
    d: usize,
    (gh, gw): (usize, usize),
    k: usize,
    out: usize,
    norm: &Norm,
) -> Result<Value> {
    let x = norm.apply_last(&mut b.scope("norm"), x, d)?;
    let (gh, gw, k64, d64) = (gh as i64, gw as i64, k as i64, d as i64);
    let x = layers::reshape(b, &x, &[0, gh / k64, k64, gw / k64, k64, d64]);
    let x = layers::transpose(b, &x, &[0, 1, 3, 2, 4, 5]);
    let hidden = d * k * k;
    let x = layers::reshape(b, &x, &[0, (gh / k64) * (gw / k64), hidden as i64]);
    let init = Init::TruncNormal(0.02);
    let x = linear(&mut b.scope("fc1"), &x, hidden, hidden, true, init)?;
    // The merger's act_layer is nn.GELU (exact), not the blocks' tanh GELU.
    let x = layers::act(b, "gelu", &x)?;
    if out == 0 {
        return Ok(x);
    }
    linear(&mut b.scope("fc2"), &x, hidden, out, true, init)
}
