//! Transformer in Transformer (timm `tnt.py`, `TNT`): `PixelEmbed` cuts the image into patches
//! and embeds each one's pixels with a 7×7 strided conv (legacy: the conv over the whole image,
//! then cut), plus `pixel_pos`; the flattened pixels of a patch, normed and projected, make its
//! patch token (`norm1_proj`, `proj`, `norm2_proj`), after a class token and `patch_pos`. Each
//! `Block` runs an inner transformer over the pixels of every patch, adds their projection to
//! the patch tokens, then an outer transformer over [class, patches]. Attention projects q and
//! k together (`qk`) and v apart (`v`). `norm`, then the class token (or the patch mean) into
//! `head`.
//!
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over `forward_intermediates`
//! with `norm=False`): every block's patch tokens as an NCHW grid; by default the last three.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::expand_batch;
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::{self, conv2d, Conv, Norm, Pad};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/tnt.json"));

/// The `tnt` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "tnt",
    examples: "tnt_s_patch16_224, tnt_b_patch16_224, tnt_s_legacy_patch16_224",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `TNT.__init__`'s keyword arguments with timm's defaults.
    pub struct TntArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 16,
        global_pool: String = "token".into(),
        embed_dim: usize = 768,
        inner_dim: usize = 48,
        depth: usize = 12,
        num_heads_inner: usize = 4,
        num_heads_outer: usize = 12,
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = false,
        norm_layer: Json = Json::Null,
        first_stride: usize = 4,
        legacy: bool = false,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

const INIT: Init = Init::TruncNormal(0.02);

/// A `TNT` as timm constructs it from its arguments.
#[derive(Debug, Clone)]
struct Tnt {
    patch: usize,
    /// `img_size`: the only input size timm's `PixelEmbed` accepts.
    img: (usize, usize),
    /// `pixel_embed.grid_size`: the patch grid `patch_pos` covers.
    grid: (usize, usize),
    dim: usize,
    inner: usize,
    depth: usize,
    heads_in: usize,
    heads_out: usize,
    mlp_hidden: usize,
    qkv_bias: bool,
    norm: Norm,
    stride: usize,
    legacy: bool,
    /// `new_patch_size`: each patch's pixel grid, `ceil(patch / first_stride)`.
    pixels: usize,
    pool: TokenPool,
}

impl Tnt {
    fn resolve(cfg: &ModelConfig) -> Result<Tnt> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a TNT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = TntArgs::read(&a)?;
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
        let max = crate::graph::args::MAX_INT;
        let img = match &v.img_size {
            Json::Array(hw) if hw.len() == 2 => hw[0].as_u64().zip(hw[1].as_u64()),
            j => j.as_u64().map(|n| (n, n)),
        }
        .filter(|&(h, w)| (1..=max).contains(&h) && (1..=max).contains(&w))
        .map(|(h, w)| (h as usize, w as usize))
        .ok_or_else(|| a.unsupported("img_size", "expected a positive int or [h, w]"))?;
        let pool = match v.global_pool.as_str() {
            "token" => TokenPool::Token,
            "avg" => TokenPool::Avg,
            _ => {
                return Err(a.unsupported(
                    "global_pool",
                    "token or avg (no pooling returns every token)",
                ))
            }
        };
        let (dim, inner, p, s) = (v.embed_dim, v.inner_dim, v.patch_size, v.first_stride);
        let (hi, ho) = (v.num_heads_inner, v.num_heads_outer);
        let mlp_hidden = (dim as f64 * v.mlp_ratio) as usize;
        let ok = dim > 0
            && inner > 0
            && hi > 0
            && ho > 0
            && dim % ho == 0
            && inner % hi == 0
            && v.depth > 0
            && p > 0
            && s > 0
            && mlp_hidden > 0;
        if !ok {
            return Err(Error::invalid_model(format!(
                "embed_dim {dim} / num_heads_outer {ho}, inner_dim {inner} / num_heads_inner {hi}, depth {}, patch {p}, first_stride {s} do not make a TNT",
                v.depth
            )));
        }
        if img.0 < p || img.1 < p {
            return Err(Error::invalid_model("img_size is smaller than a patch"));
        }
        Ok(Tnt {
            patch: p,
            img,
            grid: (img.0 / p, img.1 / p),
            dim,
            inner,
            depth: v.depth,
            heads_in: hi,
            heads_out: ho,
            mlp_hidden,
            qkv_bias: v.qkv_bias,
            norm,
            stride: s,
            legacy: v.legacy,
            pixels: p.div_ceil(s),
            pool,
        })
    }

    fn num_pixel(&self) -> usize {
        self.pixels * self.pixels
    }
}

/// `x` `[N, C, H, W]` cut into `k`×`k` tiles as `nn.Unfold(k, stride=k)` then the reshape:
/// `[N·gh·gw, C, k, k]`, tiles row-major (the rows and columns past the last tile dropped).
fn tiles(b: &mut Builder, x: &Value, c: usize, hw: (usize, usize), k: usize) -> Value {
    let (gh, gw) = (hw.0 / k, hw.1 / k);
    let mut x = x.clone();
    if hw.0 != gh * k {
        x = layers::slice(b, &x, 2, 0, (gh * k) as i64);
    }
    if hw.1 != gw * k {
        x = layers::slice(b, &x, 3, 0, (gw * k) as i64);
    }
    let (c, k, gh, gw) = (c as i64, k as i64, gh as i64, gw as i64);
    let t = layers::reshape(b, &x, &[-1, c, gh, k, gw, k]);
    let t = layers::transpose(b, &t, &[0, 2, 4, 1, 3, 5]);
    layers::reshape(b, &t, &[-1, c, k, k])
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = Tnt::resolve(cfg)?;
    let (h, w) = b.image_size();
    // PixelEmbed asserts the input is img_size; patch_pos is never resampled in forward.
    if (h, w) != m.img {
        return Err(Error::unsupported(format!(
            "TNT at input {h}x{w} (timm's PixelEmbed asserts the model's own size, {}x{})",
            m.img.0, m.img.1
        )));
    }
    let (d, di, np) = (m.dim, m.inner, m.pixels);
    let l = m.grid.0 * m.grid.1;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let proj = |c_in: usize| {
        Conv::new(c_in, di, 7)
            .stride(m.stride)
            .pad(Pad::Sym(3))
            .bias(true)
            .init(Init::DefaultUniform)
    };
    let pixels = if m.legacy {
        let y = conv2d(
            &mut b.scope("pixel_embed").scope("proj"),
            &input,
            proj(in_ch),
        )?;
        // The conv's output size: floor((n + 6 - 7) / stride) + 1.
        let out = |n: usize| (n - 1) / m.stride + 1;
        tiles(b, &y, di, (out(h), out(w)), np)
    } else {
        let t = tiles(b, &input, in_ch, (h, w), m.patch);
        conv2d(&mut b.scope("pixel_embed").scope("proj"), &t, proj(in_ch))?
    };
    let pixel_pos = b.param("pixel_pos", &[1, di, np, np], INIT)?;
    let pixels = layers::add(b, &pixels, &pixel_pos);
    let pixels = layers::reshape(b, &pixels, &[-1, di as i64, m.num_pixel() as i64]);
    let mut pixels = layers::transpose(b, &pixels, &[0, 2, 1]);

    let flat = m.num_pixel() * di;
    let t = layers::reshape(b, &pixels, &[-1, l as i64, flat as i64]);
    let t = m.norm.apply_last(&mut b.scope("norm1_proj"), &t, flat)?;
    let t = linear(&mut b.scope("proj"), &t, flat, d, true, INIT)?;
    let t = m.norm.apply_last(&mut b.scope("norm2_proj"), &t, d)?;
    let cls = b.param("cls_token", &[1, 1, d], INIT)?;
    let cls = expand_batch(b, &cls, &t, 1, d);
    let t = layers::concat(b, &[&cls, &t], 1);
    let pos = b.param("patch_pos", &[1, l + 1, d], INIT)?;
    let mut x = layers::add(b, &t, &pos);

    for i in 0..m.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        (pixels, x) = block(s, &m, &pixels, &x)?;
        // forward_intermediates: the patch tokens on the patch grid, NCHW.
        let tok = layers::slice(s, &x, 1, 1, i64::MAX);
        let (gh, gw) = (m.grid.0 as i64, m.grid.1 as i64);
        let map = layers::reshape(s, &tok, &[-1, gh, gw, d as i64]);
        let map = layers::nhwc_to_nchw(s, &map);
        let patchify = Step::Window {
            k: m.patch,
            stride: m.patch,
            pad: 0,
            dilation: 1,
            ceil: false,
        };
        s.set_spatial(&map, &input, patchify, d)?;
        let module = s.path().to_string();
        s.feature(&map, d, m.patch, &module);
    }
    // _create_tnt's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);

    let x = m.norm.apply_last(&mut b.scope("norm"), &x, d)?;
    let x = global_pool_nlc(b, &x, m.pool, 1, false);
    let classes = cfg.num_classes;
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((x, d));
    }
    let y = linear_2d(&mut b.scope("head"), &x, d, classes, true, INIT)?;
    Ok((y, classes))
}

/// TNT's `Attention` (current scope) on `[N, L, dim]`: `qk` → q, k; `v`; softmax; `proj`.
fn attn(b: &mut Builder, m: &Tnt, x: &Value, dim: usize, heads: usize) -> Result<Value> {
    let qk = linear(&mut b.scope("qk"), x, dim, 2 * dim, m.qkv_bias, INIT)?;
    let parts = layers::split(b, &qk, -1, &[dim, dim]);
    let v = linear(&mut b.scope("v"), x, dim, dim, m.qkv_bias, INIT)?;
    let c = AttnCfg::new(dim, heads);
    let y = attention_core(b, &parts[0], &parts[1], &v, &c, &Hooks::default())?;
    linear(&mut b.scope("proj"), &y, dim, dim, true, INIT)
}

/// `x + attn(norm(x))`, then `x + mlp(norm_mlp(x))` with the given scope names.
#[allow(clippy::too_many_arguments)]
fn transformer(
    b: &mut Builder,
    m: &Tnt,
    x: &Value,
    dim: usize,
    heads: usize,
    hidden: usize,
    names: [&str; 4],
) -> Result<Value> {
    let h = m.norm.apply_last(&mut b.scope(names[0]), x, dim)?;
    let y = attn(&mut b.scope(names[1]), m, &h, dim, heads)?;
    let x = layers::add(b, x, &y);
    let h = m.norm.apply_last(&mut b.scope(names[2]), &x, dim)?;
    let y = mlp(
        &mut b.scope(names[3]),
        &h,
        &MlpCfg::new(dim, hidden, "gelu"),
    )?;
    Ok(layers::add(b, &x, &y))
}

/// TNT's `Block`: the inner transformer over the pixels `[N·L, P, inner]`, their projection
/// added to the patch tokens of `x` `[N, 1 + L, dim]`, the outer transformer over `x`.
fn block(b: &mut Builder, m: &Tnt, pixels: &Value, x: &Value) -> Result<(Value, Value)> {
    let (d, di) = (m.dim, m.inner);
    let names = ["norm_in", "attn_in", "norm_mlp_in", "mlp_in"];
    let pixels = transformer(b, m, pixels, di, m.heads_in, 4 * di, names)?;
    let l = (m.grid.0 * m.grid.1) as i64;
    let flat = m.num_pixel() * di;
    let proj = if m.legacy {
        let t = m.norm.apply_last(&mut b.scope("norm1_proj"), &pixels, di)?;
        let t = layers::reshape(b, &t, &[-1, l, flat as i64]);
        linear(&mut b.scope("proj"), &t, flat, d, true, INIT)?
    } else {
        let t = layers::reshape(b, &pixels, &[-1, l, flat as i64]);
        let t = m.norm.apply_last(&mut b.scope("norm1_proj"), &t, flat)?;
        let t = linear(&mut b.scope("proj"), &t, flat, d, false, INIT)?;
        m.norm.apply_last(&mut b.scope("norm2_proj"), &t, d)?
    };
    let cls = layers::slice(b, x, 1, 0, 1);
    let patches = layers::slice(b, x, 1, 1, i64::MAX);
    let patches = layers::add(b, &patches, &proj);
    let x = layers::concat(b, &[&cls, &patches], 1);
    let names = ["norm_out", "attn_out", "norm_mlp", "mlp"];
    let x = transformer(b, m, &x, d, m.heads_out, m.mlp_hidden, names)?;
    Ok((pixels, x))
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
            let m = Tnt::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.dim), "{name}");
            assert_eq!((m.grid, m.pixels), ((14, 14), 4), "{name}");
            assert_eq!(m.legacy, name.contains("legacy"), "{name}");
        }
        assert_eq!(TABLE.names().len(), 3);
    }
}
