//! VOLO (timm `volo.py`, `VOLO`): a three-conv stem and patch projection, then stages on
//! channels-last maps — `Outlooker` blocks (outlook attention: each position's 3×3 window of
//! values is re-weighted by attention logits predicted from the stride-2 average-pooled map,
//! and the windows are folded back, overlapping windows summing) where `outlook_attention` says
//! so, `Transformer` blocks elsewhere, 2×2 `Downsample`s between — a position embedding added
//! before `network.2`, the class token through `ClassBlock`s (`post_network`), `norm`, and the
//! head plus half the token-wise maximum of `aux_head`.
//!
//! ONNX has no `Unfold` / `Fold`: the unfold is a grouped conv whose fixed one-hot kernels pick
//! each window offset into its own channel (the layout `nn.Unfold` gives), and the fold is the
//! transposed conv with the same kernels, which scatters each offset back and sums the overlaps.
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over `forward_intermediates`
//! with `norm=False`): every stage's output, NCHW; by default the last three.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed;
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::{self, conv2d, conv_bn, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/volo.json"));

/// The `volo` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "volo",
    examples: "volo_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `VOLO.__init__`'s keyword arguments with timm's defaults.
    pub struct VoloArgs {
        layers: Vec<usize> = Vec::new(),
        img_size: Json = Json::from(224),
        global_pool: String = "token".into(),
        patch_size: usize = 8,
        stem_hidden_dim: usize = 64,
        embed_dims: Vec<usize> = Vec::new(),
        num_heads: Vec<usize> = Vec::new(),
        downsamples: Vec<bool> = vec![true, false, false, false],
        outlook_attention: Vec<bool> = vec![true, false, false, false],
        mlp_ratio: Json = Json::from(3.0),
        qkv_bias: bool = false,
        norm_layer: Json = Json::Null,
        post_layers: Json = serde_json::json!(["ca", "ca"]),
        use_aux_head: bool = true,
        // Training only (token mixing).
        use_mix_token: bool = false,
        pooling_scale: usize = 2,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// `outlooker_blocks`' defaults (not arguments of `VOLO`).
const OUTLOOK_K: usize = 3;
const OUTLOOK_PAD: usize = 1;
const OUTLOOK_STRIDE: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Token,
    Avg,
}

#[derive(Debug, Clone)]
struct Stage {
    depth: usize,
    dim: usize,
    heads: usize,
    mlp_ratio: f64,
    outlook: bool,
    downsample: bool,
    /// Map size at this stage.
    hw: (usize, usize),
    reduction: usize,
}

#[derive(Debug, Clone)]
struct Volo {
    img: (usize, usize),
    patch: usize,
    stem: usize,
    stages: Vec<Stage>,
    qkv_bias: bool,
    /// `post_layers`: how many class blocks (all 'ca'); `None` without a class token.
    post: Option<usize>,
    aux_head: bool,
    pool: Pool,
    /// `pos_embed`'s grid.
    pos_grid: (usize, usize),
}

const NORM: Norm = Norm::Layer { eps: 1e-5 };

impl Volo {
    // One index runs over timm's parallel per-branch / per-stage lists.
    #[allow(clippy::needless_range_loop)]
    fn resolve(cfg: &ModelConfig) -> Result<Volo> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a VOLO architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = VoloArgs::read(&a)?;
        if !v.norm_layer.is_null() {
            return Err(a.unsupported("norm_layer", "only nn.LayerNorm"));
        }
        let img = match &v.img_size {
            Json::Array(hw) if hw.len() == 2 => match (hw[0].as_u64(), hw[1].as_u64()) {
                (Some(h), Some(w)) => (h as usize, w as usize),
                _ => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
            j => match j.as_u64() {
                Some(n) => (n as usize, n as usize),
                None => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
            },
        };
        let n = v.layers.len();
        let ratios: Vec<f64> = match &v.mlp_ratio {
            Json::Array(r) => r
                .iter()
                .map(|x| x.as_f64().filter(|f| *f > 0.0 && *f <= 64.0))
                .collect::<Option<_>>()
                .ok_or_else(|| a.unsupported("mlp_ratio", "a number or one per stage"))?,
            j => vec![
                j.as_f64()
                    .filter(|f| *f > 0.0 && *f <= 64.0)
                    .ok_or_else(|| a.unsupported("mlp_ratio", "a number or one per stage"))?;
                n
            ],
        };
        if n == 0
            || v.embed_dims.len() < n
            || v.num_heads.len() < n
            || v.downsamples.len() < n
            || v.outlook_attention.len() < n
            || ratios.len() < n
        {
            return Err(Error::invalid_model(format!(
                "`{arch}`: layers, embed_dims, num_heads, downsamples, outlook_attention and mlp_ratio need one entry per stage"
            )));
        }
        if ![4, 8, 16].contains(&v.patch_size) {
            return Err(Error::invalid_model("VOLO's patch_size is 4, 8 or 16"));
        }
        if v.downsamples[n - 1] {
            return Err(Error::invalid_model(
                "the last VOLO stage cannot downsample",
            ));
        }
        let post = match &v.post_layers {
            Json::Null => None,
            Json::Array(p) if p.iter().all(|x| x.as_str() == Some("ca")) => Some(p.len()),
            _ => return Err(a.unsupported("post_layers", "a list of 'ca' (ClassBlock) or None")),
        };
        let pool = match v.global_pool.as_str() {
            "token" => Pool::Token,
            "avg" => Pool::Avg,
            _ => return Err(a.unsupported("global_pool", "token or avg ('' returns every token)")),
        };
        // Stem: stride-2 7x7 (padding 3), two 3x3, then the patch projection (kernel = stride
        // = patch / 2).
        let k = v.patch_size / 2;
        let stem = |s: usize| ((s - 1) / 2 + 1) / k;
        let mut hw = (stem(img.0.max(1)), stem(img.1.max(1)));
        let mut reduction = v.patch_size;
        let mut stages = Vec::new();
        for i in 0..n {
            let (dim, heads) = (v.embed_dims[i], v.num_heads[i]);
            if dim == 0 || heads == 0 || dim % heads != 0 || hw.0 == 0 || hw.1 == 0 {
                return Err(Error::invalid_model(format!(
                    "`{arch}`: stage {i} ({dim} channels, {heads} heads, a {}x{} map) is not a VOLO stage",
                    hw.0, hw.1
                )));
            }
            stages.push(Stage {
                depth: v.layers[i],
                dim,
                heads,
                mlp_ratio: ratios[i],
                outlook: v.outlook_attention[i],
                downsample: v.downsamples[i],
                hw,
                reduction,
            });
            if v.downsamples[i] {
                hw = (hw.0 / 2, hw.1 / 2);
                reduction *= 2;
            }
        }
        let ps = v.pooling_scale.max(1);
        let pos_grid = (img.0 / v.patch_size / ps, img.1 / v.patch_size / ps);
        Ok(Volo {
            img,
            patch: v.patch_size,
            stem: v.stem_hidden_dim,
            stages,
            qkv_bias: v.qkv_bias,
            post,
            aux_head: v.use_aux_head,
            pool,
            pos_grid,
        })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let mut m = Volo::resolve(cfg)?;
    from_weights(b, &mut m)?;
    let hw = b.image_size();
    // The position embedding covers img_size's grid only (timm never resamples it).
    if hw != m.img {
        return Err(Error::unsupported(format!(
            "VOLO at input {}x{}: the model takes {}x{} only",
            hw.0, hw.1, m.img.0, m.img.1
        )));
    }
    let x = patch_embed_stem(
        &mut b.scope("patch_embed"),
        &m,
        cfg.pretrained_cfg.input_size[0],
    )?;
    let mut x = layers::nchw_to_nhwc(b, &x);
    let mut idx = 0;
    let mut pos_added = false;
    let last = m.stages.last().map(|s| s.dim).unwrap_or(0);
    for (i, st) in m.stages.iter().enumerate() {
        if idx == 2 {
            x = add_pos(b, &m, &x, st.hw, last)?;
            pos_added = true;
        }
        for j in 0..st.depth {
            let s = &mut b.scope(format!("network.{idx}.{j}"));
            x = if st.outlook {
                outlooker(s, &m, st, &x)?
            } else {
                transformer(s, &m, st, &x)?
            };
        }
        let map = layers::nhwc_to_nchw(b, &x);
        b.feature(&map, st.dim, st.reduction, &format!("network.{idx}"));
        idx += 1;
        if st.downsample {
            if idx == 2 {
                x = add_pos(b, &m, &x, st.hw, last)?;
                pos_added = true;
            }
            let next = m.stages[i + 1].dim;
            let t = layers::nhwc_to_nchw(b, &x);
            let c = Conv::new(st.dim, next, 2)
                .stride(2)
                .pad(Pad::Sym(0))
                .bias(true)
                .init(Init::DefaultUniform);
            let t = conv2d(&mut b.scope(format!("network.{idx}.proj")), &t, c)?;
            x = layers::nchw_to_nhwc(b, &t);
            idx += 1;
        }
    }
    if !pos_added {
        // forward_tokens adds it before network.2 only.
        b.ignore_weight("pos_embed");
    }
    // _create_volo's out_indices=3: the last three stages.
    let k = m.stages.len().min(3) as i64;
    b.default_out_indices(&(-k..0).collect::<Vec<_>>());

    let d = last;
    let mut x = layers::reshape(b, &x, &[0, -1, d as i64]);
    match m.post {
        Some(n) => {
            let cls = b.param("cls_token", &[1, 1, d], Init::TruncNormal(0.02))?;
            let cls = patch_embed::expand_batch(b, &cls, &x, 1, d);
            x = layers::concat(b, &[&cls, &x], 1);
            let st = m.stages.last().unwrap();
            for i in 0..n {
                x = class_block(&mut b.scope(format!("post_network.{i}")), &m, st, &x)?;
            }
        }
        None => b.ignore_weight("cls_token"),
    }
    let x = NORM.apply_last(&mut b.scope("norm"), &x, d)?;
    let out = match m.pool {
        Pool::Token => layers::token_at(b, &x, 0),
        Pool::Avg => layers::reduce_mean(b, &x, &[1], false),
    };
    let classes = cfg.num_classes;
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((out, d));
    }
    let init = Init::TruncNormal(0.02);
    let y = linear_2d(&mut b.scope("head"), &out, d, classes, true, init)?;
    if !m.aux_head {
        return Ok((y, classes));
    }
    // out + 0.5 * max over tokens of aux_head(x[:, 1:]).
    let t = layers::slice(b, &x, 1, 1, i64::MAX);
    let aux = linear(&mut b.scope("aux_head"), &t, d, classes, true, init)?;
    let axes = b.ints(&[1]);
    let mx = b.op(
        "ReduceMax",
        &[&aux, &axes],
        vec![("keepdims", Attr::Int(0))],
    );
    let mx = layers::scale(b, &mx, 0.5);
    Ok((layers::add(b, &y, &mx), classes))
}

/// The depths and widths a checkpoint holds: timm's entrypoints fix `layers` and
/// `embed_dims`, so a folder's config.json need not name them.
fn from_weights(b: &Builder, m: &mut Volo) -> Result<()> {
    if b.weights().is_none() {
        return Ok(());
    }
    if let Some(s) = b.weight_shape("patch_embed.conv.0.weight") {
        m.stem = s[0];
    }
    let mut idx = 0;
    for st in m.stages.iter_mut() {
        let mut depth = 0;
        while b.has_module(&format!("network.{idx}.{depth}")) {
            depth += 1;
        }
        st.depth = depth;
        if let Some(s) = b.weight_shape(&format!("network.{idx}.0.norm1.weight")) {
            st.dim = s[0];
        }
        if st.dim % st.heads != 0 {
            return Err(Error::invalid_model(format!(
                "VOLO stage network.{idx}: {} channels do not split into {} heads",
                st.dim, st.heads
            )));
        }
        idx += 1 + usize::from(st.downsample);
    }
    Ok(())
}

/// `pos_embed` (`[1, gh, gw, C]`) added to the channels-last map, checked against its grid.
fn add_pos(b: &mut Builder, m: &Volo, x: &Value, hw: (usize, usize), c: usize) -> Result<Value> {
    let (gh, gw) = m.pos_grid;
    if (gh, gw) != hw {
        return Err(Error::unsupported(format!(
            "VOLO's {gh}x{gw} position embedding does not cover the {}x{} map it is added to (pooling_scale)",
            hw.0, hw.1
        )));
    }
    let pos = b.param("pos_embed", &[1, gh, gw, c], Init::TruncNormal(0.02))?;
    Ok(layers::add(b, x, &pos))
}

/// `PatchEmbed`: `conv.0` (7×7, stride 2) `conv.3`, `conv.6` (3×3) each with its BatchNorm
/// (folded) and ReLU, then `proj` (kernel = stride = patch / 2); NCHW out.
fn patch_embed_stem(b: &mut Builder, m: &Volo, in_ch: usize) -> Result<Value> {
    let h = m.stem;
    let mut x = b.input();
    for (i, (cin, k, s)) in [(in_ch, 7, 2), (h, 3, 1), (h, 3, 1)]
        .into_iter()
        .enumerate()
    {
        let c = Conv::new(cin, h, k).stride(s).pad(Pad::Sym(k / 2));
        let (cv, bn) = (format!("conv.{}", 3 * i), format!("conv.{}", 3 * i + 1));
        x = conv_bn(b, &x, &cv, &bn, c, 1e-5)?;
        x = layers::act(b, "relu", &x)?;
    }
    let k = m.patch / 2;
    let dim = m.stages[0].dim;
    let c = Conv::new(h, dim, k)
        .stride(k)
        .pad(Pad::Sym(0))
        .bias(true)
        .init(Init::DefaultUniform);
    conv2d(&mut b.scope("proj"), &x, c)
}

/// One-hot kernels `[C·k², 1, k, k]`: output channel `c·k² + i·k + j` of the grouped conv is
/// input channel `c` at window offset `(i, j)` — `nn.Unfold`'s channel order.
fn window_kernels(b: &mut Builder, c: usize, k: usize) -> Value {
    let kk = k * k;
    let mut w = vec![0.0f32; c * kk * kk];
    for ch in 0..c {
        for o in 0..kk {
            w[(ch * kk + o) * kk + o] = 1.0;
        }
    }
    b.const_f32(w, &[(c * kk) as i64, 1, k as i64, k as i64])
}

/// `OutlookAttention` on a channels-last `[B, H, W, C]` map.
fn outlook_attention(b: &mut Builder, m: &Volo, st: &Stage, x: &Value) -> Result<Value> {
    let (c, heads) = (st.dim, st.heads);
    let hd = c / heads;
    let (k, p, s) = (OUTLOOK_K, OUTLOOK_PAD, OUTLOOK_STRIDE);
    let kk = k * k;
    let (hh, ww) = st.hw;
    let (h, w) = (hh.div_ceil(s), ww.div_ceil(s));
    let n = (h * w) as i64;
    let init = Init::TruncNormal(0.02);
    let v = linear(&mut b.scope("v"), x, c, c, m.qkv_bias, init)?;
    let v = layers::nhwc_to_nchw(b, &v);
    let kernels = window_kernels(b, c, k);
    let conv_attrs = |out_pad: Option<[i64; 2]>| {
        let mut a = vec![
            ("group", Attr::Int(c as i64)),
            ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
            ("pads", Attr::Ints(vec![p as i64; 4])),
            ("strides", Attr::Ints(vec![s as i64; 2])),
        ];
        if let Some(op) = out_pad {
            a.push(("output_padding", Attr::Ints(op.to_vec())));
        }
        a
    };
    // unfold: [B, C·k², h, w] -> [B, heads, hd, k², N] -> [B, heads, N, k², hd]
    let u = b.op("Conv", &[&v, &kernels], conv_attrs(None));
    let u = layers::reshape(b, &u, &[0, heads as i64, hd as i64, kk as i64, n]);
    let u = layers::transpose(b, &u, &[0, 1, 4, 3, 2]);
    // The attention weights from the average-pooled map (ceil mode, partial windows averaged
    // over their inside).
    let xc = layers::nhwc_to_nchw(b, x);
    let pooled = Pool2d::new(s, s, 0)
        .ceil(true)
        .count_include_pad(false)
        .avg(b, &xc, c)?;
    let pooled = layers::nchw_to_nhwc(b, &pooled);
    let a = linear(
        &mut b.scope("attn"),
        &pooled,
        c,
        kk * kk * heads,
        true,
        init,
    )?;
    let a = layers::reshape(b, &a, &[0, n, heads as i64, kk as i64, kk as i64]);
    let a = layers::transpose(b, &a, &[0, 2, 1, 3, 4]);
    let a = layers::scale(b, &a, (hd as f32).powf(-0.5));
    let a = b.op("Softmax", &[&a], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&a, &u], vec![]);
    // [B, heads, N, k², hd] -> [B, heads, hd, k², N] -> [B, C·k², h, w], then fold.
    let y = layers::transpose(b, &y, &[0, 1, 4, 3, 2]);
    let y = layers::reshape(b, &y, &[0, (c * kk) as i64, h as i64, w as i64]);
    let full = |n: usize, o: usize| (n + 2 * p) as i64 - ((o as i64 - 1) * s as i64 + k as i64);
    let y = b.op(
        "ConvTranspose",
        &[&y, &kernels],
        conv_attrs(Some([full(hh, h), full(ww, w)])),
    );
    let y = layers::nchw_to_nhwc(b, &y);
    linear(&mut b.scope("proj"), &y, c, c, true, init)
}

/// `x + f(norm1(x))`, `x + mlp(norm2(x))` around the current scope's `attn`.
fn residual_block(
    b: &mut Builder,
    st: &Stage,
    x: &Value,
    f: impl FnOnce(&mut Builder, &Value) -> Result<Value>,
) -> Result<Value> {
    let d = st.dim;
    let h = NORM.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = f(&mut b.scope("attn"), &h)?;
    let x = layers::add(b, x, &y);
    let h = NORM.apply_last(&mut b.scope("norm2"), &x, d)?;
    let hidden = (d as f64 * st.mlp_ratio) as usize;
    let y = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(d, hidden, "gelu"))?;
    Ok(layers::add(b, &x, &y))
}

/// `Outlooker`.
fn outlooker(b: &mut Builder, m: &Volo, st: &Stage, x: &Value) -> Result<Value> {
    residual_block(b, st, x, |b, h| outlook_attention(b, m, st, h))
}

/// `Transformer`: multi-head self-attention over the H·W positions.
fn transformer(b: &mut Builder, m: &Volo, st: &Stage, x: &Value) -> Result<Value> {
    residual_block(b, st, x, |b, h| {
        let d = st.dim as i64;
        let (hh, ww) = (st.hw.0 as i64, st.hw.1 as i64);
        let t = layers::reshape(b, h, &[0, -1, d]);
        let mut c = AttnCfg::new(st.dim, st.heads);
        c.qkv_bias = m.qkv_bias;
        let y = attention(b, &t, &c, &Hooks::default())?;
        Ok(layers::reshape(b, &y, &[0, hh, ww, d]))
    })
}

/// `ClassBlock`: `cls + ClassAttention(norm1(x))`, `cls + mlp(norm2(cls))`, then
/// `[cls, x[:, 1:]]`.
fn class_block(b: &mut Builder, m: &Volo, st: &Stage, x: &Value) -> Result<Value> {
    let d = st.dim;
    let init = Init::TruncNormal(0.02);
    let h = NORM.apply_last(&mut b.scope("norm1"), x, d)?;
    let y = {
        let mut a = b.scope("attn");
        let kv = linear(&mut a.scope("kv"), &h, d, 2 * d, m.qkv_bias, init)?;
        let kv = layers::split(&mut a, &kv, -1, &[d, d]);
        let h0 = layers::slice(&mut a, &h, 1, 0, 1);
        let q = linear(&mut a.scope("q"), &h0, d, d, m.qkv_bias, init)?;
        let c = AttnCfg::new(d, st.heads);
        let y = attention_core(&mut a, &q, &kv[0], &kv[1], &c, &Hooks::default())?;
        let y = linear(&mut a.scope("proj"), &y, d, d, true, init)?;
        y
    };
    let cls = layers::slice(b, x, 1, 0, 1);
    let cls = layers::add(b, &cls, &y);
    let h = NORM.apply_last(&mut b.scope("norm2"), &cls, d)?;
    let hidden = (d as f64 * st.mlp_ratio) as usize;
    let y = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(d, hidden, "gelu"))?;
    let cls = layers::add(b, &cls, &y);
    let rest = layers::slice(b, x, 1, 1, i64::MAX);
    Ok(layers::concat(b, &[&cls, &rest], 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_resolves_with_timms_width() {
        for name in TABLE.names() {
            let json = &TABLE.get(name).unwrap().config;
            let cfg = ModelConfig::parse(json.to_string().as_bytes()).unwrap();
            let m = Volo::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(m.stages[3].dim), "{name}");
            let [_, h, _] = cfg.pretrained_cfg.input_size;
            assert_eq!(m.stages[0].hw, (h / 8, h / 8), "{name}");
            assert_eq!(m.pos_grid, (h / 16, h / 16), "{name}");
        }
        assert_eq!(TABLE.names().len(), 11);
    }
}
