//! EfficientViT (MSRA): timm's `efficientvit_msra.py` (`EfficientVitMsra`), a conv stem, stages
//! of sandwich blocks (depthwise conv + FFN around a `LocalWindowAttention` of cascaded group
//! attention) with `PatchMerging` downsamples, and the BatchNorm `NormLinear` head.
//!
//! Every `ConvNorm` is a conv with its BatchNorm folded at load. The attention-bias gather over
//! absolute coordinate offsets (`attention_bias_idxs`, a buffer timm does not save) is computed at
//! load for each stage's window, which timm clamps to the stage's map: the graph is built for one
//! input size (timm's `img_size`; its min side sets the windows).
//!
//! Feature maps are the stage outputs `stages.{i}` (timm's `FeatureListNet`, NCHW).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::conv::conv_bn_init;
use crate::graph::layers::heads::norm_linear;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::pos_embed::{interpolate_hwc, Resample};
use crate::graph::layers::se::{rd_channels, SqueezeExcite};
use crate::graph::layers::{self, Conv, Pad};
use crate::graph::spatial::Spatial;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/efficientvit_msra.json"));

/// The `efficientvit_msra` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "efficientvit_msra",
    examples: "efficientvit_m0 ... efficientvit_m5",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// `nn.BatchNorm2d` / `nn.BatchNorm1d` eps.
const BN_EPS: f32 = 1e-5;

timm_args! {
    /// `EfficientVitMsra.__init__`'s keyword arguments with timm's defaults.
    pub struct MsraArgs {
        img_size: Json = Json::from(224),
        embed_dim: Vec<usize> = vec![64, 128, 192],
        key_dim: Vec<usize> = vec![16, 16, 16],
        depth: Vec<usize> = vec![1, 2, 3],
        num_heads: Vec<usize> = vec![4, 4, 4],
        window_size: Vec<usize> = vec![7, 7, 7],
        kernels: Vec<usize> = vec![5, 5, 5, 5],
        down_ops: Json = serde_json::json!([["", 1], ["subsample", 2], ["subsample", 2]]),
        global_pool: String = "avg".into(),
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `EfficientVitStage` as timm's constructor resolves it.
#[derive(Debug, Clone)]
struct Stage {
    dim: usize,
    key_dim: usize,
    depth: usize,
    heads: usize,
    window: usize,
    /// `('subsample', 2)`: res1, `PatchMerging`, res2 before the blocks.
    downsample: bool,
}

#[derive(Debug, Clone)]
struct Msra {
    stages: Vec<Stage>,
    kernels: Vec<usize>,
    pool: PoolKind,
}

impl Msra {
    fn resolve(cfg: &ModelConfig) -> Result<Msra> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not an EfficientViT (MSRA) architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = MsraArgs::read(&a)?;
        let n = v.embed_dim.len();
        let lens = [
            v.key_dim.len(),
            v.depth.len(),
            v.num_heads.len(),
            v.window_size.len(),
        ];
        let downs = v.down_ops.as_array().cloned().unwrap_or_default();
        if n == 0 || lens.iter().any(|&l| l != n) || downs.len() != n {
            return Err(Error::invalid_model(format!(
                "EfficientViT embed_dim ({n} stages), key_dim, depth, num_heads, window_size and down_ops must have one entry per stage"
            )));
        }
        let mut stages = Vec::with_capacity(n);
        for (i, down) in downs.iter().enumerate() {
            let downsample = match down.as_array().map(|d| d.as_slice()) {
                Some([op, s]) if op == "subsample" && s == 2 && i > 0 => true,
                Some([op, _]) if op == "" && (i == 0 || v.embed_dim[i] == v.embed_dim[i - 1]) => {
                    false
                }
                _ => {
                    return Err(a.unsupported(
                        "down_ops",
                        "timm's models use ('', 1) first and ('subsample', 2) after",
                    ))
                }
            };
            let (dim, heads, kd) = (v.embed_dim[i], v.num_heads[i], v.key_dim[i]);
            // Cascaded heads feed each head's output into the next head's input chunk.
            if heads == 0 || kd == 0 || dim % heads != 0 || dim < 8 || v.window_size[i] == 0 {
                return Err(Error::invalid_model(format!(
                    "EfficientViT stage {i}: dim {dim}, {heads} heads, key_dim {kd}"
                )));
            }
            if heads > v.kernels.len() {
                return Err(Error::invalid_model(format!(
                    "EfficientViT stage {i}: {heads} heads but {} kernels",
                    v.kernels.len()
                )));
            }
            stages.push(Stage {
                dim,
                key_dim: kd,
                depth: v.depth[i],
                heads,
                window: v.window_size[i],
                downsample,
            });
        }
        if v.kernels.iter().any(|&k| k == 0 || k % 2 == 0) {
            return Err(a.unsupported("kernels", "odd query kernel sizes only"));
        }
        let pool = PoolKind::from_timm(&v.global_pool)?;
        if pool == PoolKind::None {
            return Err(a.unsupported(
                "global_pool",
                "no pooling; native graphs return one pooled vector per image",
            ));
        }
        // img_size is the graph's input size (its min side sets the windows).
        let _ = v.img_size;
        Ok(Msra {
            stages,
            kernels: v.kernels,
            pool,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = Msra::resolve(cfg)?;
    let (h, w) = b.image_size();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let mut x = patch_embed(&mut b.scope("patch_embed"), &input, in_ch, v.stages[0].dim)?;
    let mut spatial = b
        .spatial(&x)
        .cloned()
        .ok_or_else(|| Error::invalid_model("EfficientViT stem has no tracked spatial size"))?;
    // timm's window resolution: min(img_size) // 16, then (r - 1) // 2 + 1 per downsample.
    let mut res = h.min(w) / 16;
    let mut stride = 16;
    let mut in_dim = v.stages[0].dim;
    for (i, st) in v.stages.iter().enumerate() {
        let mut stages = b.scope("stages");
        let s = &mut stages.scope(i);
        if st.downsample {
            let (y, sp) = downsample(&mut s.scope("downsample"), &x, &spatial, in_dim, st.dim)?;
            x = y;
            spatial = sp;
            res = (res.max(1) - 1) / 2 + 1;
            stride *= 2;
        }
        let hw = hw_of(&spatial, (h, w))?;
        let ws = st.window.min(res);
        if ws == 0 {
            return Err(Error::invalid_argument(format!(
                "input {h}x{w} is too small for EfficientViT: stage {i} has no attention window"
            )));
        }
        s.activation(&[st.dim, hw.0, hw.1])?;
        for j in 0..st.depth {
            let mut blocks = s.scope("blocks");
            x = block(&mut blocks.scope(j), &x, &v, st, hw, ws)?;
        }
        in_dim = st.dim;
        s.assign_spatial(&x, spatial.clone());
        s.feature(&x, st.dim, stride, &format!("stages.{i}"));
    }
    let pooled = global_pool(b, &x, v.pool);
    let width = in_dim * v.pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let y = norm_linear(
        &mut b.scope("head"),
        &pooled,
        width,
        cfg.num_classes,
        BN_EPS,
    )?;
    Ok((y, cfg.num_classes))
}

fn hw_of(s: &Spatial, (h, w): (usize, usize)) -> Result<(usize, usize)> {
    match (s.eval(h), s.eval(w)) {
        (Some(a), Some(b)) if a > 0 && b > 0 => Ok((a, b)),
        _ => Err(Error::invalid_argument(format!(
            "input {h}x{w} is too small for EfficientViT"
        ))),
    }
}

/// `ConvNorm` (scopes `conv`, `bn`; BatchNorm folded) with PyTorch's explicit padding.
fn conv_norm(
    b: &mut Builder,
    x: &Value,
    c: Conv,
    pad: usize,
    bn_weight_init: Init,
) -> Result<Value> {
    let c = c.pad(Pad::Sym(pad)).bias(false).init(Init::DefaultUniform);
    conv_bn_init(b, x, "conv", "bn", c, BN_EPS, bn_weight_init)
}

/// `PatchEmbedding`: four 3×3 stride-2 `ConvNorm`s (dim/8, /4, /2, dim), ReLU between.
fn patch_embed(b: &mut Builder, x: &Value, in_ch: usize, dim: usize) -> Result<Value> {
    let mut x = x.clone();
    let mut c_in = in_ch;
    for i in 1..=4 {
        let c_out = dim >> (4 - i);
        let c = Conv::new(c_in, c_out, 3).stride(2);
        x = conv_norm(&mut b.scope(format!("conv{i}")), &x, c, 1, Init::Ones)?;
        if i < 4 {
            x = layers::act(b, "relu", &x)?;
        }
        c_in = c_out;
    }
    Ok(x)
}

/// `ResidualDrop(ConvNorm(dim, dim, 3, groups=dim))`: `x + dw(x)` (module `m`).
fn residual_dw(b: &mut Builder, x: &Value, dim: usize, bn_weight_init: Init) -> Result<Value> {
    let c = Conv::new(dim, dim, 3).depthwise();
    let y = conv_norm(&mut b.scope("m"), x, c, 1, bn_weight_init)?;
    Ok(layers::add(b, x, &y))
}

/// `ResidualDrop(ConvMlp(dim, 2·dim))`: `x + pw2(relu(pw1(x)))` (module `m`).
fn residual_ffn(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let hidden = dim * 2;
    let y = {
        let mut m = b.scope("m");
        let y = conv_norm(
            &mut m.scope("pw1"),
            x,
            Conv::new(dim, hidden, 1),
            0,
            Init::Ones,
        )?;
        let y = layers::act(&mut m, "relu", &y)?;
        let y = conv_norm(
            &mut m.scope("pw2"),
            &y,
            Conv::new(hidden, dim, 1),
            0,
            Init::Zeros,
        )?;
        y
    };
    Ok(layers::add(b, x, &y))
}

/// The `('subsample', 2)` downsample: `res1` (dw + FFN residuals at `in_dim`), `patchmerge`,
/// `res2` (the same at `out_dim`). Returns the map and its spatial size.
fn downsample(
    b: &mut Builder,
    x: &Value,
    spatial: &Spatial,
    in_dim: usize,
    out_dim: usize,
) -> Result<(Value, Spatial)> {
    let mut x = x.clone();
    {
        let r = &mut b.scope("res1");
        x = residual_dw(&mut r.scope(0), &x, in_dim, Init::Ones)?;
        x = residual_ffn(&mut r.scope(1), &x, in_dim)?;
    }
    b.assign_spatial(&x, spatial.clone());
    let x = patch_merging(&mut b.scope("patchmerge"), &x, in_dim, out_dim)?;
    let sp = b
        .spatial(&x)
        .cloned()
        .ok_or_else(|| Error::invalid_model("EfficientViT patch merge lost its spatial size"))?;
    let r = &mut b.scope("res2");
    let x = residual_dw(&mut r.scope(0), &x, out_dim, Init::Ones)?;
    let x = residual_ffn(&mut r.scope(1), &x, out_dim)?;
    Ok((x, sp))
}

/// `PatchMerging`: 1×1 to 4·dim, ReLU, 3×3 stride-2 depthwise, ReLU, SE (ratio 1/4), 1×1.
fn patch_merging(b: &mut Builder, x: &Value, dim: usize, out_dim: usize) -> Result<Value> {
    let hid = dim * 4;
    let y = conv_norm(
        &mut b.scope("conv1"),
        x,
        Conv::new(dim, hid, 1),
        0,
        Init::Ones,
    )?;
    let y = layers::act(b, "relu", &y)?;
    let c = Conv::new(hid, hid, 3).stride(2).depthwise();
    let y = conv_norm(&mut b.scope("conv2"), &y, c, 1, Init::Ones)?;
    let y = layers::act(b, "relu", &y)?;
    let y =
        SqueezeExcite::se_module(hid, rd_channels(hid, 0.25, 8)).apply(&mut b.scope("se"), &y)?;
    conv_norm(
        &mut b.scope("conv3"),
        &y,
        Conv::new(hid, out_dim, 1),
        0,
        Init::Ones,
    )
}

/// `EfficientVitBlock`: dw0, ffn0, the window attention mixer, dw1, ffn1, each residual.
fn block(
    b: &mut Builder,
    x: &Value,
    v: &Msra,
    st: &Stage,
    hw: (usize, usize),
    ws: usize,
) -> Result<Value> {
    let d = st.dim;
    let x = residual_dw(&mut b.scope("dw0"), x, d, Init::Zeros)?;
    let x = residual_ffn(&mut b.scope("ffn0"), &x, d)?;
    let y = {
        let mut mixer = b.scope("mixer");
        let mut m = mixer.scope("m");
        local_window_attention(&mut m, &x, v, st, hw, ws)?
    };
    let x = layers::add(b, &x, &y);
    let x = residual_dw(&mut b.scope("dw1"), &x, d, Init::Zeros)?;
    residual_ffn(&mut b.scope("ffn1"), &x, d)
}

/// `LocalWindowAttention`: the map as one window when it is exactly `ws × ws`, else padded at the
/// bottom / right to whole windows, attended per window, reversed and cropped.
fn local_window_attention(
    b: &mut Builder,
    x: &Value,
    v: &Msra,
    st: &Stage,
    (h, w): (usize, usize),
    ws: usize,
) -> Result<Value> {
    let c = st.dim as i64;
    if h == ws && w == ws {
        return cascaded_group_attention(&mut b.scope("attn"), x, v, st, ws);
    }
    let (ph, pw) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
    let (nh, nw, wsi) = ((ph / ws) as i64, (pw / ws) as i64, ws as i64);
    let pads = b.ints(&[0, 0, 0, 0, 0, 0, (ph - h) as i64, (pw - w) as i64]);
    let xp = b.op("Pad", &[x, &pads], vec![]);
    let t = layers::reshape(b, &xp, &[-1, c, nh, wsi, nw, wsi]);
    let t = layers::transpose(b, &t, &[0, 2, 4, 1, 3, 5]);
    let windows = layers::reshape(b, &t, &[-1, c, wsi, wsi]);
    let y = cascaded_group_attention(&mut b.scope("attn"), &windows, v, st, ws)?;
    let t = layers::reshape(b, &y, &[-1, nh, nw, c, wsi, wsi]);
    let t = layers::transpose(b, &t, &[0, 3, 1, 4, 2, 5]);
    let t = layers::reshape(b, &t, &[-1, c, ph as i64, pw as i64]);
    let (starts, ends, axes) = (
        b.ints(&[0, 0]),
        b.ints(&[h as i64, w as i64]),
        b.ints(&[2, 3]),
    );
    Ok(b.op("Slice", &[&t, &starts, &ends, &axes], vec![]))
}

/// `attention_biases[:, attention_bias_idxs]` as `[heads, N, N]` over a `ws × ws` window: timm
/// numbers the offsets `(|dy|, |dx|)` in first-seen order, which is `|dy| · ws + |dx|`.
fn attention_bias(b: &mut Builder, heads: usize, ws: usize) -> Result<Vec<Value>> {
    let n = ws * ws;
    // Saved for another window (another img_size): timm's checkpoint filter resizes the table
    // with `resize_rel_pos_bias_table_levit` (bicubic, antialiased) as it loads.
    let saved = match b.weight_shape("attention_biases").as_deref() {
        Some(&[h, n0]) if h == heads && n0 != n => {
            let s0 = (n0 as f64).sqrt() as usize;
            if s0 * s0 != n0 {
                return Err(Error::invalid_model(format!(
                    "{}: {n0} biases per head are not a square window",
                    b.key("attention_biases")
                )));
            }
            s0
        }
        _ => ws,
    };
    let mut table = b.read("attention_biases", &[heads, saved * saved], Init::Zeros)?;
    if saved != ws {
        let hwc: Vec<f32> = (0..saved * saved)
            .flat_map(|p| (0..heads).map(move |h| (h, p)))
            .map(|(h, p)| table[h * saved * saved + p])
            .collect();
        let r = interpolate_hwc(&hwc, (saved, saved), heads, (ws, ws), &Resample::default());
        table = (0..heads)
            .flat_map(|h| (0..n).map(move |p| (h, p)))
            .map(|(h, p)| r[p * heads + h])
            .collect();
    }
    let mut out = Vec::with_capacity(heads);
    for hd in 0..heads {
        let mut data = Vec::with_capacity(n * n);
        for p in 0..n {
            for q in 0..n {
                let idx = (p / ws).abs_diff(q / ws) * ws + (p % ws).abs_diff(q % ws);
                data.push(table[hd * n + idx]);
            }
        }
        out.push(b.tensor(&format!("attention_biases.{hd}"), data, &[n, n])?);
    }
    Ok(out)
}

/// `CascadedGroupAttention` on `[B, dim, ws, ws]`: head `i` attends over its input chunk plus
/// head `i - 1`'s output, its q through a depthwise `ConvNorm`; the heads' outputs concatenated,
/// ReLU, `proj`.
fn cascaded_group_attention(
    b: &mut Builder,
    x: &Value,
    v: &Msra,
    st: &Stage,
    ws: usize,
) -> Result<Value> {
    let (kd, heads) = (st.key_dim, st.heads);
    let chunk = st.dim / heads;
    // int(attn_ratio * key_dim) with attn_ratio = dim / (key_dim * heads).
    let vd = (st.dim as f64 / (kd * heads) as f64 * kd as f64) as usize;
    if vd != chunk {
        return Err(Error::invalid_model(format!(
            "EfficientViT: value width {vd} differs from the head chunk {chunk}"
        )));
    }
    let n = (ws * ws) as i64;
    let biases = attention_bias(b, heads, ws)?;
    let chunks = layers::split(b, x, 1, &vec![chunk; heads]);
    let scale = (kd as f32).powf(-0.5);
    let mut outs = Vec::with_capacity(heads);
    let mut feat = chunks[0].clone();
    for (i, bias) in biases.iter().enumerate() {
        if i > 0 {
            feat = layers::add(b, &feat, &chunks[i]);
        }
        let qkv = conv_norm(
            &mut b.scope("qkvs").scope(i),
            &feat,
            Conv::new(chunk, 2 * kd + vd, 1),
            0,
            Init::Ones,
        )?;
        let parts = layers::split(b, &qkv, 1, &[kd, kd, vd]);
        let k = v.kernels[i];
        let q = conv_norm(
            &mut b.scope("dws").scope(i),
            &parts[0],
            Conv::new(kd, kd, k).depthwise(),
            k / 2,
            Init::Ones,
        )?;
        let q = layers::reshape(b, &q, &[0, kd as i64, n]);
        let q = layers::scale(b, &q, scale);
        let kk = layers::reshape(b, &parts[1], &[0, kd as i64, n]);
        let vv = layers::reshape(b, &parts[2], &[0, vd as i64, n]);
        let qt = layers::transpose(b, &q, &[0, 2, 1]);
        let logits = b.op("MatMul", &[&qt, &kk], vec![]);
        let logits = layers::add(b, &logits, bias);
        let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
        let pt = layers::transpose(b, &p, &[0, 2, 1]);
        let y = b.op("MatMul", &[&vv, &pt], vec![]);
        feat = layers::reshape(b, &y, &[0, vd as i64, ws as i64, ws as i64]);
        outs.push(feat.clone());
    }
    let refs: Vec<&Value> = outs.iter().collect();
    let cat = layers::concat(b, &refs, 1);
    let p = &mut b.scope("proj");
    let y = layers::act(p, "relu", &cat)?;
    let c = Conv::new(vd * heads, st.dim, 1);
    let out = conv_norm(&mut p.scope(1), &y, c, 0, Init::Zeros);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_registered_efficientvit_msra_resolves_with_timms_widths() {
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let v = Msra::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                cfg.num_features,
                Some(v.stages.last().unwrap().dim),
                "{name}"
            );
            assert!(!v.stages[0].downsample && v.stages[1].downsample, "{name}");
        }
        assert_eq!(TABLE.names().len(), 6);
    }
}
