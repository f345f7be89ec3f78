//! DeepSeek-V4 vision towers (timm `deepseek_vit.py`): `DeepseekVitClassifier` (the encoder,
//! optionally its VLM projector `aligner`, mean pooling, a non-affine RMSNorm and the head).
//!
//! The encoder is a pre-norm ViT of `DeepseekVitBlock`s: RMSNorm, rope attention (fused qkv with
//! bias, axial `RotaryEmbeddingCat` on integer patch coordinates in the rotate-half layout; the
//! only position encoding, so any patch grid works) and a bias-free packed SwiGLU, then a final
//! RMSNorm. The aligner zero-pads the token grid to a multiple of `downsample_ratio`, unshuffles
//! each r×r block channel-major (`(C, kh, kw)`), then `fc1`, exact GELU, `fc2`.
//!
//! `DeepseekVitEncoder` (`*_enc`, its weights at the top level) has no `forward_head` (timm
//! raises for classification use): its forward is built as it is, with option `output=tokens`
//! for the token sequences of `global_pool='align'` (the aligner's tokens) and `''` (the normed
//! patch tokens, timm's NHWC map row-major), and as the one vector of `'avg'`.
//!
//! Feature maps are `forward_intermediates` (`feature_cls='getter'`, `norm=False`): every block's
//! output on the patch grid, by default the last three.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks, Rope};
use crate::graph::layers::encoder_tower::{read_pool, TowerOutput};
use crate::graph::layers::mlp::{glu_mlp, linear, linear_2d, MlpCfg};
use crate::graph::layers::patch_embed::{self, patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::rope::{self, GridType, RopeConsts, RopeGrid};
use crate::graph::layers::{self, Norm};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/deepseek_vit.json"));

/// The `deepseek_vit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "deepseek_vit",
    examples: "deepseek_vit_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `DeepseekVitClassifier.__init__`, timm's defaults.
    pub struct DeepseekArgs {
        img_size: Json = Json::from(546),
        patch_size: usize = 14,
        global_pool: String = "avg".into(),
        encoder_pool: String = String::new(),
        out_features: usize = 0,
        embed_dim: usize = 1024,
        depth: usize = 32,
        num_heads: usize = 16,
        mlp_ratio: f64 = 2816.0 / 1024.0,
        downsample_ratio: usize = 3,
        rope_temperature: f64 = 10000.0,
        norm_eps: f64 = 1e-6,
        final_norm: bool = true,
        dynamic_img_pad: bool = false,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone)]
struct Deepseek {
    patch: usize,
    dim: usize,
    depth: usize,
    heads: usize,
    /// `int(dim * mlp_ratio)`: each half of the packed fc1.
    mlp_hidden: usize,
    eps: f32,
    temperature: f32,
    /// The aligner (`downsample_ratio`, `out_features`), when the graph runs it.
    aligner: Option<(usize, usize)>,
    final_norm: bool,
    dynamic_img_pad: bool,
    /// `DeepseekVitEncoder`: its own forward, no head.
    encoder: Option<TowerOutput>,
}

impl Deepseek {
    fn resolve(cfg: &ModelConfig) -> Result<Deepseek> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a DeepSeek ViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        // DeepseekVitEncoder takes the classifier's arguments with its own global_pool.
        let mut v = DeepseekArgs::read_only(&a)?;
        let encoder = if arch.ends_with("_enc") {
            let pools = [
                ("align", TowerOutput::Tokens, "align"),
                ("", TowerOutput::Tokens, ""),
                ("avg", TowerOutput::Mean, ""),
            ];
            let (out, pool) = read_pool(&a, "DeepseekVitEncoder", "align", &pools)?;
            (v.global_pool, v.encoder_pool, v.final_norm) = ("avg".into(), pool, false);
            Some(out)
        } else {
            None
        };
        a.finish()?;
        let (dim, heads) = (v.embed_dim, v.num_heads);
        if heads == 0 || dim == 0 || dim % heads != 0 || (dim / heads) % 4 != 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim} / num_heads {heads} must give a head dim divisible by 4 (axial rope)"
            )));
        }
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if v.depth == 0 || mlp_hidden == 0 || v.patch_size == 0 {
            return Err(Error::invalid_model(
                "DeepSeek ViT depth, mlp width and patch must be positive",
            ));
        }
        let aligner = match v.encoder_pool.as_str() {
            "" => None,
            "align" if v.out_features == 0 || v.downsample_ratio == 0 => {
                return Err(Error::invalid_model(
                    "the DeepSeek aligner needs out_features and downsample_ratio > 0 (timm asserts)",
                ))
            }
            "align" => Some((v.downsample_ratio, v.out_features)),
            _ => return Err(a.unsupported("encoder_pool", "'' or align")),
        };
        if v.global_pool != "avg" {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one vector per image",
            ));
        }
        // img_size only sets timm's nominal grid; the graph takes the input's.
        let _ = &v.img_size;
        Ok(Deepseek {
            patch: v.patch_size,
            dim,
            depth: v.depth,
            heads,
            mlp_hidden,
            eps: v.norm_eps as f32,
            temperature: v.rope_temperature as f32,
            aligner,
            final_norm: v.final_norm,
            dynamic_img_pad: v.dynamic_img_pad,
            encoder,
        })
    }

    fn num_features(&self) -> usize {
        self.aligner.map_or(self.dim, |(_, out)| out)
    }
}

/// `RmsNormFp32(affine=False)` over the last axis: `x / sqrt(mean(x²) + eps)`.
fn rms_norm_plain(b: &mut Builder, x: &Value, eps: f32) -> Value {
    let axes = b.ints(&[-1]);
    let sq = b.op("Mul", &[x, x], vec![]);
    let ms = b.op(
        "ReduceMean",
        &[&sq, &axes],
        vec![("keepdims", Attr::Int(1))],
    );
    let e = b.scalar(eps);
    let v = b.op("Add", &[&ms, &e], vec![]);
    let s = b.op("Sqrt", &[&v], vec![]);
    b.op("Div", &[x, &s], vec![])
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = Deepseek::resolve(cfg)?;
    if let Some(out) = v.encoder {
        // `DeepseekVitEncoder.forward` as the model.
        out.check(b, &cfg.architecture, "DeepseekVitEncoder")?;
        let (x, tokens) = encoder(b, &v, cfg)?;
        return Ok(out.finish(b, &x, tokens, v.num_features()));
    }
    let (mut x, _) = encoder(&mut b.scope("encoder"), &v, cfg)?;
    let nf = v.num_features();
    // forward_head: the mean over the (aligned) tokens, the non-affine norm, the head.
    x = global_pool_nlc(b, &x, TokenPool::Avg, 0, false);
    if v.final_norm {
        x = rms_norm_plain(b, &x, v.eps);
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

/// `DeepseekVitEncoder.forward` (in the current scope): the normed tokens after the blocks and,
/// when enabled, the aligner; with the number of tokens per image.
fn encoder(b: &mut Builder, v: &Deepseek, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let (h, w) = b.image_size();
    let p = v.patch;
    let pad = if v.dynamic_img_pad {
        ((p - h % p) % p, (p - w % p) % p)
    } else if h % p != 0 || w % p != 0 {
        // PatchEmbed(strict_img_size=False) asserts a multiple of the patch.
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is not a multiple of the DeepSeek ViT patch size {p} (timm asserts without dynamic_img_pad)"
        )));
    } else {
        (0, 0)
    };
    let grid = ((h + pad.0) / p, (w + pad.1) / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the DeepSeek ViT patch size {p}"
        )));
    }
    let d = v.dim;
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: d,
        patch: p,
        bias: true,
        pad,
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let mut x = layers::nchw_to_tokens(b, &patches, d);
    let rg = RopeGrid {
        grid_type: GridType::Index,
        xy: false,
        offset: 0.0,
        ref_shape: None,
    };
    let table = rope::rotary_embedding_cat(d / v.heads, v.temperature, &rg, grid, true)?;
    let r = RopeConsts::new(b, table, true, 0);
    let norm = Norm::Rms { eps: v.eps };
    for i in 0..v.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, v, &norm, &x, &r)?;
        let map = patch_embed::token_map(s, &x, 0, &patches);
        let module = s.path().to_string();
        s.feature(&map, d, p, &module);
    }
    b.default_out_indices(&[-3, -2, -1]);
    x = norm.apply_last(&mut b.scope("norm"), &x, d)?;
    let mut tokens = grid.0 * grid.1;
    if let Some((k, out)) = v.aligner {
        x = aligner(&mut b.scope("aligner"), &x, d, grid, k, out)?;
        tokens = grid.0.div_ceil(k) * grid.1.div_ceil(k);
    }
    Ok((x, tokens))
}

/// `DeepseekVitBlock`: `x + attn(norm1(x))`, `x + mlp(norm2(x))` with the bias-free packed SwiGLU
/// (`act(gate) · up`, gate first).
fn block(b: &mut Builder, v: &Deepseek, norm: &Norm, x: &Value, r: &RopeConsts) -> Result<Value> {
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
    let c = MlpCfg::new(d, 2 * v.mlp_hidden, "silu").bias(false);
    let y = glu_mlp(&mut b.scope("mlp"), &h, &c, false)?;
    Ok(layers::add(b, &x, &y))
}

/// `DeepseekVitAligner`: the token grid zero-padded to a multiple of `k` (bottom / right), each
/// k×k block flattened channel-major, `fc1`, GELU, `fc2`.
fn aligner(
    b: &mut Builder,
    x: &Value,
    d: usize,
    (gh, gw): (usize, usize),
    k: usize,
    out: usize,
) -> Result<Value> {
    let (ph, pw) = ((k - gh % k) % k, (k - gw % k) % k);
    let (hh, ww) = ((gh + ph) / k, (gw + pw) / k);
    let (k64, d64) = (k as i64, d as i64);
    let x = layers::reshape(b, x, &[0, gh as i64, gw as i64, d64]);
    let mut x = layers::transpose(b, &x, &[0, 3, 1, 2]);
    if ph > 0 || pw > 0 {
        let pads = b.ints(&[0, 0, 0, 0, 0, 0, ph as i64, pw as i64]);
        x = b.op("Pad", &[&x, &pads], vec![]);
    }
    let x = layers::reshape(b, &x, &[0, d64, hh as i64, k64, ww as i64, k64]);
    let x = layers::transpose(b, &x, &[0, 2, 4, 1, 3, 5]);
    let hidden = d * k * k;
    let x = layers::reshape(b, &x, &[0, (hh * ww) as i64, hidden as i64]);
    let init = Init::TruncNormal(0.02);
    let x = linear(&mut b.scope("fc1"), &x, hidden, out, true, init)?;
    // The aligner's act_layer is nn.GELU (exact).
    let x = layers::act(b, "gelu", &x)?;
    linear(&mut b.scope("fc2"), &x, out, out, true, init)
}
