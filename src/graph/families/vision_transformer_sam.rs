//! Segment Anything image encoders (timm `vision_transformer_sam.py`, `VisionTransformerSAM`):
//! a `PatchEmbed` to an NHWC token grid, an optional learned NHWC position embedding, then ViT
//! blocks whose attention runs in non-overlapping windows (zero-padded to a multiple of
//! `window_size`) except at `global_attn_indexes`, each adding the decomposed relative-position
//! bias (`get_decomposed_rel_pos_bias`: `q · R_h` over rows plus `q · R_w` over columns) to
//! its logits. The `neck` (1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d; or LayerNorm2d alone
//! without `neck_chans`) feeds timm's `ClassifierHead` (or `NormMlpClassifierHead` with
//! `head_hidden_size`); `output=features` is `forward_head(pre_logits=True)`, the pooled neck.
//!
//! The position embedding and the global blocks' relative positions are resampled at load for
//! another input size, as timm does in its forward (`resample_abs_pos_embed_nhwc`, bicubic with
//! antialias; `get_rel_pos`, linear).
//!
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over `forward_intermediates`
//! with `norm=False`): every block's output as NCHW, by default the last three.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::{classifier_head, norm_mlp_head};
use crate::graph::layers::mlp::{layer_scale, linear, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{patch_embed, token_map, PatchEmbedCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::pos_embed::{interpolate_hwc, resample_abs_pos_embed, Interp, Resample};
use crate::graph::layers::window::{pad_hw_end, window_partition, window_reverse};
use crate::graph::layers::{self, conv2d, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/vision_transformer_sam.json"));

/// The `vision_transformer_sam` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "vision_transformer_sam",
    examples:
        "samvit_base_patch16, samvit_large_patch16, samvit_huge_patch16, samvit_base_patch16_224",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `VisionTransformerSAM.__init__`'s keyword arguments with timm's defaults.
    pub struct SamArgs {
        img_size: Json = Json::from(1024),
        patch_size: usize = 16,
        embed_dim: usize = 768,
        depth: usize = 12,
        num_heads: usize = 12,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        qk_norm: bool = false,
        init_values: Option<f64> = None,
        pre_norm: bool = false,
        weight_init: String = "".into(),
        embed_layer: Json = Json::Null,
        norm_layer: Json = Json::Null,
        act_layer: Option<String> = None,
        block_fn: Json = Json::Null,
        mlp_layer: Json = Json::Null,
        use_abs_pos: bool = true,
        use_rel_pos: bool = false,
        use_rope: bool = false,
        window_size: usize = 14,
        global_attn_indexes: Vec<usize> = vec![],
        neck_chans: Option<usize> = Some(256),
        global_pool: String = "avg".into(),
        head_hidden_size: Option<usize> = None,
        ref_feat_shape: Json = Json::Null,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

const INIT: Init = Init::TruncNormal(0.02);
/// `LayerNorm2d`'s eps in the neck and `NormMlpClassifierHead`.
const LN2D: Norm = Norm::Layer { eps: 1e-6 };

/// A `VisionTransformerSAM` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Sam {
    patch: usize,
    /// `patch_embed.grid_size` at `img_size`: what `pos_embed` and the global blocks'
    /// `rel_pos_*` cover.
    grid: (usize, usize),
    dim: usize,
    depth: usize,
    heads: usize,
    mlp_hidden: usize,
    qkv_bias: bool,
    qk_norm: bool,
    init_values: Option<f32>,
    pre_norm: bool,
    norm: Norm,
    act: String,
    abs_pos: bool,
    rel_pos: bool,
    window: usize,
    global: Vec<usize>,
    neck: Option<usize>,
    head_hidden: Option<usize>,
    pool: PoolKind,
}

/// The class arguments accept timm's defaults only.
fn default_class(a: &Args, key: &str, v: &Json, names: &[&str]) -> Result<()> {
    match v {
        Json::Null => Ok(()),
        Json::String(s) if names.contains(&s.to_ascii_lowercase().as_str()) => Ok(()),
        _ => Err(a.unsupported(key, &format!("only timm's {}", names[0]))),
    }
}

impl Sam {
    fn resolve(cfg: &ModelConfig) -> Result<Sam> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a SAM ViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = SamArgs::read(&a)?;
        let _ = &v.weight_init;
        default_class(&a, "block_fn", &v.block_fn, &["block"])?;
        default_class(&a, "mlp_layer", &v.mlp_layer, &["mlp"])?;
        if !v.embed_layer.is_null() {
            return Err(a.unsupported("embed_layer", "only timm's NHWC PatchEmbed"));
        }
        if v.use_rope {
            return Err(a.unsupported(
                "use_rope",
                "rotary position embedding in SAM ViTs is not built natively",
            ));
        }
        let _ = &v.ref_feat_shape;
        // nn.LayerNorm (eps 1e-5) is the class default.
        let norm = match &v.norm_layer {
            Json::Null => Norm::Layer { eps: 1e-5 },
            Json::String(s) if s.eq_ignore_ascii_case("layernorm") => Norm::Layer { eps: 1e-5 },
            Json::Object(o)
                if o.get("partial").and_then(Json::as_str) == Some("layernorm")
                    && o.keys().all(|k| k == "partial" || k == "eps") =>
            {
                Norm::Layer {
                    eps: o.get("eps").and_then(Json::as_f64).unwrap_or(1e-5) as f32,
                }
            }
            _ => return Err(a.unsupported("norm_layer", "only LayerNorm")),
        };
        let act = v.act_layer.unwrap_or_else(|| "gelu".into());
        layers::act::canonical(&act)
            .map_err(|_| a.unsupported("act_layer", "unknown activation"))?;
        let img = match &v.img_size {
            Json::Array(hw) if hw.len() == 2 => hw[0].as_u64().zip(hw[1].as_u64()),
            j => j.as_u64().map(|n| (n, n)),
        }
        .filter(|&(h, w)| {
            (1..=crate::graph::args::MAX_INT).contains(&h)
                && (1..=crate::graph::args::MAX_INT).contains(&w)
        })
        .map(|(h, w)| (h as usize, w as usize))
        .ok_or_else(|| a.unsupported("img_size", "expected a positive int or [h, w]"))?;
        let pool = match v.global_pool.as_str() {
            "" => {
                return Err(a.unsupported(
                    "global_pool",
                    "no pooling; native graphs return one vector per image",
                ))
            }
            p => PoolKind::from_timm(p)?,
        };
        let (dim, heads, p) = (v.embed_dim, v.num_heads, v.patch_size);
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        if heads == 0 || dim == 0 || dim % heads != 0 || v.depth == 0 || p == 0 || mlp_hidden == 0 {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim}, num_heads {heads}, depth {}, patch {p} and mlp_ratio {} do not make a SAM ViT",
                v.depth, v.mlp_ratio
            )));
        }
        if img.0 < p || img.1 < p {
            return Err(Error::invalid_model("img_size is smaller than a patch"));
        }
        Ok(Sam {
            patch: p,
            grid: (img.0 / p, img.1 / p),
            dim,
            depth: v.depth,
            heads,
            mlp_hidden,
            qkv_bias: v.qkv_bias,
            qk_norm: v.qk_norm,
            init_values: v.init_values.filter(|g| *g != 0.0).map(|g| g as f32),
            pre_norm: v.pre_norm,
            norm,
            act,
            abs_pos: v.use_abs_pos,
            rel_pos: v.use_rel_pos,
            window: v.window_size,
            global: v.global_attn_indexes,
            neck: v.neck_chans.filter(|&c| c > 0),
            head_hidden: v.head_hidden_size.filter(|&h| h > 0),
            pool,
        })
    }

    /// The block's window (0: global attention).
    fn window_of(&self, i: usize) -> usize {
        if self.global.contains(&i) {
            0
        } else {
            self.window
        }
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Sam::resolve(cfg)?;
    let (h, w) = b.image_size();
    let p = m.patch;
    let grid = (h / p, w / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the patch size {p}"
        )));
    }
    let d = m.dim;
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: d,
        patch: p,
        bias: !m.pre_norm,
        pad: (0, 0),
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    // Tokens [N, H·W, D] in the row-major order of timm's NHWC grid.
    let mut x = layers::nchw_to_tokens(b, &patches, d);
    if m.abs_pos {
        let shape = [1, m.grid.0, m.grid.1, d];
        let pos = if grid == m.grid {
            b.param("pos_embed", &shape, INIT)?
        } else {
            let data = b.read("pos_embed", &shape, INIT)?;
            let data = resample_abs_pos_embed(&data, d, m.grid, grid, 0, &Resample::default())?;
            b.tensor("pos_embed", data, &[1, grid.0 * grid.1, d])?
        };
        let pos = layers::reshape(b, &pos, &[1, (grid.0 * grid.1) as i64, d as i64]);
        x = layers::add(b, &x, &pos);
    }
    if m.pre_norm {
        x = m.norm.apply_last(&mut b.scope("norm_pre"), &x, d)?;
    }
    for i in 0..m.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, &m, &x, grid, m.window_of(i))?;
        let map = token_map(s, &x, 0, &patches);
        let module = s.path().to_string();
        s.feature(&map, d, p, &module);
    }
    // _create_vision_transformer's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);

    let map = token_map(b, &x, 0, &patches);
    let (y, c) = match m.neck {
        Some(nc) => {
            let mut s = b.scope("neck");
            let c1 = Conv::new(d, nc, 1)
                .pad(Pad::Sym(0))
                .init(Init::DefaultUniform);
            let y = conv2d(&mut s.scope(0), &map, c1)?;
            let y = LN2D.apply_2d(&mut s.scope(1), &y, nc)?;
            let c2 = Conv::new(nc, nc, 3)
                .pad(Pad::Sym(1))
                .init(Init::DefaultUniform);
            let y = conv2d(&mut s.scope(2), &y, c2)?;
            let y = LN2D.apply_2d(&mut s.scope(3), &y, nc)?;
            (y, nc)
        }
        None if m.head_hidden.is_some() => (map, d),
        None => (LN2D.apply_2d(&mut b.scope("neck"), &map, d)?, d),
    };
    let classes = cfg.num_classes;
    let features = b.output() == OutputKind::Features;
    let head = &mut b.scope("head");
    match m.head_hidden {
        Some(hidden) => norm_mlp_head(
            head,
            &y,
            c,
            m.pool,
            &LN2D,
            Some(hidden),
            "tanh",
            classes,
            features,
        ),
        None => classifier_head(head, &y, c, m.pool, classes, features),
    }
}

/// timm's SAM `Block` on tokens `[N, H·W, D]` of the grid `hw`: `x + ls1(attn(norm1(x)))` with
/// the attention in `window`-sized windows (0: global), then `x + ls2(mlp(norm2(x)))`.
fn block(b: &mut Builder, m: &Sam, x: &Value, hw: (usize, usize), window: usize) -> Result<Value> {
    let d = m.dim;
    let y = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = if window > 0 {
        let ws = window;
        let (ph, pw) = ((ws - hw.0 % ws) % ws, (ws - hw.1 % ws) % ws);
        let padded = (hw.0 + ph, hw.1 + pw);
        let t = layers::reshape(b, &y, &[-1, hw.0 as i64, hw.1 as i64, d as i64]);
        let t = pad_hw_end(b, &t, ph, pw);
        let t = window_partition(b, &t, padded, (ws, ws), d);
        let t = attention(&mut b.scope("attn"), m, &t, (ws, ws), (ws, ws))?;
        let t = window_reverse(b, &t, padded, (ws, ws), d);
        let t = if ph > 0 || pw > 0 {
            let t = layers::slice(b, &t, 1, 0, hw.0 as i64);
            layers::slice(b, &t, 2, 0, hw.1 as i64)
        } else {
            t
        };
        layers::reshape(b, &t, &[0, (hw.0 * hw.1) as i64, d as i64])
    } else {
        attention(&mut b.scope("attn"), m, &y, hw, m.grid)?
    };
    let y = match m.init_values {
        Some(g) => layer_scale(&mut b.scope("ls1"), &y, d, g)?,
        None => y,
    };
    let x = layers::add(b, x, &y);
    let h = m.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let c = MlpCfg::new(d, m.mlp_hidden, &m.act);
    let y = mlp(&mut b.scope("mlp"), &h, &c)?;
    let y = match m.init_values {
        Some(g) => layer_scale(&mut b.scope("ls2"), &y, d, g)?,
        None => y,
    };
    Ok(layers::add(b, &x, &y))
}

/// `get_rel_pos(S, S, rel_pos)` transposed for a MatMul: `[S, head_dim, S]` with entry
/// `[i, c, j] = rel_pos[i − j + S − 1, c]`, the table (`[stored, head_dim]`) linearly resampled to
/// `2S − 1` rows first when its length differs, as timm does.
fn rel_pos_table(stored: &[f32], len: usize, hd: usize, s: usize) -> Vec<f32> {
    let want = 2 * s - 1;
    let table = if len == want {
        stored.to_vec()
    } else {
        let r = Resample {
            mode: Interp::Bilinear,
            antialias: false,
            align_corners: false,
        };
        interpolate_hwc(stored, (len, 1), hd, (want, 1), &r)
    };
    let mut out = vec![0f32; s * hd * s];
    for i in 0..s {
        for j in 0..s {
            let row = &table[(i + s - 1 - j) * hd..][..hd];
            for (c, &v) in row.iter().enumerate() {
                out[(i * hd + c) * s + j] = v;
            }
        }
    }
    out
}

/// SAM's `Attention` on `[B, H·W, D]` tokens of the grid `hw` (a window or the whole map):
/// `qkv`, the optional `q_norm` / `k_norm`, the decomposed relative-position bias from
/// `rel_pos_h` / `rel_pos_w` (stored for the grid `stored`) on the unscaled q, softmax, `proj`.
fn attention(
    b: &mut Builder,
    m: &Sam,
    x: &Value,
    hw: (usize, usize),
    stored: (usize, usize),
) -> Result<Value> {
    let (d, heads) = (m.dim, m.heads);
    let hd = d / heads;
    let qkv = linear(&mut b.scope("qkv"), x, d, 3 * d, m.qkv_bias, INIT)?;
    let parts = layers::split(b, &qkv, -1, &[d; 3]);
    let view = |b: &mut Builder, t: &Value| {
        let t = layers::reshape(b, t, &[0, 0, heads as i64, hd as i64]);
        layers::transpose(b, &t, &[0, 2, 1, 3])
    };
    let mut q = view(b, &parts[0]);
    let mut k = view(b, &parts[1]);
    let v = view(b, &parts[2]);
    if m.qk_norm {
        q = m.norm.apply_last(&mut b.scope("q_norm"), &q, hd)?;
        k = m.norm.apply_last(&mut b.scope("k_norm"), &k, hd)?;
    }
    let kt = layers::transpose(b, &k, &[0, 1, 3, 2]);
    let qs = layers::scale(b, &q, (hd as f32).powf(-0.5));
    let mut logits = b.op("MatMul", &[&qs, &kt], vec![]);
    if m.rel_pos {
        let (qh, qw) = hw;
        let table = |b: &mut Builder, name: &str, stored_s: usize, s: usize| -> Result<Value> {
            let len = 2 * stored_s - 1;
            let data = b.read(name, &[len, hd], INIT)?;
            let t = rel_pos_table(&data, len, hd, s);
            b.tensor(name, t, &[s, hd, s])
        };
        let rh = table(b, "rel_pos_h", stored.0, qh)?;
        let rw = table(b, "rel_pos_w", stored.1, qw)?;
        // r_q [B, heads, qh, qw, hd]; rel_h[..., y, x, ky] = Σ_c r_q[..., y, x, c] · R_h[y, ky, c].
        let rq = layers::reshape(b, &q, &[0, heads as i64, qh as i64, qw as i64, hd as i64]);
        let rel_h = b.op("MatMul", &[&rq, &rh], vec![]);
        let rq_t = layers::transpose(b, &rq, &[0, 1, 3, 2, 4]);
        let rel_w = b.op("MatMul", &[&rq_t, &rw], vec![]);
        let rel_w = layers::transpose(b, &rel_w, &[0, 1, 3, 2, 4]);
        let ax_h = b.ints(&[5]);
        let rel_h = b.op("Unsqueeze", &[&rel_h, &ax_h], vec![]);
        let ax_w = b.ints(&[4]);
        let rel_w = b.op("Unsqueeze", &[&rel_w, &ax_w], vec![]);
        let bias = layers::add(b, &rel_h, &rel_w);
        let l = (qh * qw) as i64;
        let bias = layers::reshape(b, &bias, &[0, heads as i64, l, l]);
        logits = layers::add(b, &logits, &bias);
    }
    let attn = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&attn, &v], vec![]);
    let y = layers::transpose(b, &y, &[0, 2, 1, 3]);
    let y = layers::reshape(b, &y, &[0, 0, d as i64]);
    linear(&mut b.scope("proj"), &y, d, d, true, INIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_with_timms_width() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let m = Sam::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.neck.unwrap_or(m.dim)), "{name}");
            assert_eq!(m.global.len(), 4, "{name}");
            assert!(m.rel_pos, "{name}");
        }
        assert_eq!(TABLE.names().len(), 4);
    }

    #[test]
    fn rel_pos_table_is_timms_gather() {
        // rel_pos rows r0..r4 (S = 3, head_dim 1): [i, 0, j] = r[i - j + 2].
        let t = rel_pos_table(&[0.0, 1.0, 2.0, 3.0, 4.0], 5, 1, 3);
        assert_eq!(t, vec![2.0, 1.0, 0.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0]);
    }

    #[test]
    fn rope_is_refused_naming_the_argument() {
        let mut json = TABLE.get("samvit_base_patch16").unwrap().config.clone();
        json["model_args"] = serde_json::json!({"use_rope": true, "use_rel_pos": false});
        let e = Sam::resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");
        assert!(e.message().contains("use_rope"), "{e}");
    }
}
