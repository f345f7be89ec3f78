//! Global Context ViT (timm `gcvit.py`, `GlobalContextVit`): window attention whose odd blocks
//! take their queries from a global context map.
//!
//! A conv stem and `Downsample2d` (LayerNorm2d, a fused-MBConv-like `MbConvBlock` with a
//! bias-free SE, a strided 3×3 conv, LayerNorm2d), then per stage a `FeatureBlock` (MbConv blocks
//! and 3×3 max pools) that shrinks the map to one window: its tokens are the query of every
//! window in the odd (`use_global`) blocks, whose `qkv` projects keys and values only. Blocks
//! run channels-last with timm's window partition and relative-position bias (gathered at load).
//! The window sizes follow from `img_size`, so the graph takes that one input size, as timm's
//! `fixed_input_size`.
//!
//! Feature maps: timm's `features_only` taps `stages.<i>` (NCHW).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::mlp::{layer_scale, linear, mlp, MlpCfg};
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::pos_embed_rel::rel_pos_bias;
use crate::graph::layers::window::{int_pair, window_partition, window_reverse};
use crate::graph::layers::{self, act, conv2d, layer_norm, layer_norm_2d, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/gcvit.json"));

/// The `gcvit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "gcvit",
    examples: "gcvit_xxtiny, gcvit_xtiny, gcvit_tiny, gcvit_small, gcvit_base",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `GlobalContextVit.__init__`'s keyword arguments with timm's defaults.
    pub struct GcVitArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        img_size: Json = Json::from(224),
        window_ratio: Vec<usize> = vec![32, 32, 16, 32],
        window_size: Json = Json::Null,
        embed_dim: usize = 64,
        depths: Vec<usize> = vec![3, 4, 19, 5],
        num_heads: Vec<usize> = vec![2, 4, 8, 16],
        mlp_ratio: f64 = 3.0,
        qkv_bias: bool = true,
        layer_scale: Option<f64> = None,
        act_layer: String = "gelu".into(),
        norm_layer: String = "layernorm2d".into(),
        norm_layer_cl: String = "layernorm".into(),
        norm_eps: f64 = 1e-5,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone)]
struct Stage {
    /// Width after the stage's downsample.
    dim: usize,
    depth: usize,
    heads: usize,
    /// Map size inside the stage.
    feat: (usize, usize),
    window: (usize, usize),
    /// `FeatureBlock` levels (MbConv blocks) and how many of them pool.
    levels: usize,
    pools: usize,
}

#[derive(Debug, Clone)]
struct Cfg {
    in_chans: usize,
    embed_dim: usize,
    stages: Vec<Stage>,
    mlp_ratio: f64,
    qkv_bias: bool,
    layer_scale: Option<f32>,
    act: String,
    eps: f32,
    pool: PoolKind,
}

fn resolve(b: &Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a GCViT architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = GcVitArgs::read(&a)?;
    let low = |s: &str| s.to_ascii_lowercase().replace('_', "");
    if low(&v.norm_layer) != "layernorm2d" {
        return Err(a.unsupported("norm_layer", "only timm's LayerNorm2d is built natively"));
    }
    if low(&v.norm_layer_cl) != "layernorm" {
        return Err(a.unsupported("norm_layer_cl", "only timm's LayerNorm is built natively"));
    }
    let act = layers::act::canonical(&v.act_layer)
        .map_err(|_| a.unsupported("act_layer", "not an activation native graphs build"))?
        .to_string();
    let pool = PoolKind::from_timm(&v.global_pool)?;
    if pool == PoolKind::None {
        return Err(a.unsupported(
            "global_pool",
            "native graphs return one pooled vector per image",
        ));
    }
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    let img = int_pair(&v.img_size)
        .ok_or_else(|| a.unsupported("img_size", "expected an int or [h, w]"))?;
    if b.image_size() != img {
        return Err(Error::unsupported(format!(
            "`{arch}` is built for {}x{} inputs (img_size; its windows and global queries are fixed to it), not {}x{}",
            img.0,
            img.1,
            b.image_size().0,
            b.image_size().1
        )));
    }
    // The entrypoints fix depths, heads and widths; a checkpoint's own structure wins.
    let mut depths = v.depths.clone();
    let mut num_heads = v.num_heads.clone();
    let mut embed_dim = v.embed_dim;
    if b.weights().is_some() {
        if let Some(s) = b.weight_shape("stem.conv1.weight") {
            embed_dim = s[0];
        }
        let mut i = 0;
        while b.has_module(&format!("stages.{i}")) {
            let blocks = |j: usize| format!("stages.{i}.blocks.{j}");
            let d = (0..).take_while(|&j| b.has_module(&blocks(j))).count();
            let table = format!("{}.attn.rel_pos.relative_position_bias_table", blocks(0));
            if i >= depths.len() {
                depths.push(d);
                num_heads.push(0);
            }
            depths[i] = d;
            if let Some(s) = b.weight_shape(&table) {
                num_heads[i] = s[1];
            }
            i += 1;
        }
        depths.truncate(i.max(1));
        num_heads.truncate(i.max(1));
    }
    let n = depths.len();
    if n == 0 || num_heads.len() != n {
        return Err(Error::invalid_model(format!(
            "GCViT depths ({n} stages) and num_heads ({}) must have one entry per stage",
            num_heads.len()
        )));
    }
    // to_ntuple: one value for every stage, or one per stage.
    let windows: Vec<(usize, usize)> = match &v.window_size {
        Json::Null => {
            let r = match v.window_ratio.as_slice() {
                [r] => vec![*r; n],
                r if r.len() == n => r.to_vec(),
                _ => return Err(a.unsupported("window_ratio", "one value or one per stage")),
            };
            if r.contains(&0) {
                return Err(Error::invalid_model("GCViT window_ratio must be positive"));
            }
            r.iter().map(|&r| (img.0 / r, img.1 / r)).collect()
        }
        Json::Array(xs) if xs.len() == n => xs
            .iter()
            .map(int_pair)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| a.unsupported("window_size", "expected ints or [h, w] pairs"))?,
        j => match int_pair(j) {
            Some(p) => vec![p; n],
            None => return Err(a.unsupported("window_size", "one window or one per stage")),
        },
    };
    let feat0 = (img.0 / 4, img.1 / 4);
    let mut stages = Vec::with_capacity(n);
    for i in 0..n {
        let scale = 1usize << i.saturating_sub(1);
        let mut dim = embed_dim * scale;
        let mut feat = (feat0.0 / scale, feat0.1 / scale);
        if i > 0 {
            dim *= 2;
            feat = (feat.0 / 2, feat.1 / 2);
        }
        let win = windows[i];
        let heads = num_heads[i];
        if win.0 == 0
            || win.1 == 0
            || !feat.0.is_multiple_of(win.0)
            || !feat.1.is_multiple_of(win.1)
            || heads == 0
            || dim == 0
            || !dim.is_multiple_of(heads)
        {
            return Err(Error::invalid_model(format!(
                "GCViT stage {i}: a {feat:?} map in {win:?} windows, dim {dim} with {heads} heads"
            )));
        }
        // int(log2(min(feat) / min(window))), as timm's float arithmetic.
        let ratio = feat.0.min(feat.1) as f64 / win.0.min(win.1) as f64;
        let pools = ratio.log2().floor().max(0.0) as usize;
        // The global query must be one window: the map after `pools` 3x3/2 max pools.
        let pooled = |mut s: usize| {
            for _ in 0..pools {
                s = (s - 1) / 2 + 1;
            }
            s
        };
        if (pooled(feat.0), pooled(feat.1)) != win {
            return Err(Error::invalid_model(format!(
                "GCViT stage {i}: the global context of the {feat:?} map is {:?}, not the {win:?} window",
                (pooled(feat.0), pooled(feat.1))
            )));
        }
        stages.push(Stage {
            dim,
            depth: depths[i],
            heads,
            feat,
            window: win,
            levels: pools.max(1),
            pools,
        });
    }
    Ok(Cfg {
        in_chans: v.in_chans,
        embed_dim,
        stages,
        mlp_ratio: v.mlp_ratio,
        qkv_bias: v.qkv_bias,
        layer_scale: v.layer_scale.map(|x| x as f32),
        act,
        eps: v.norm_eps as f32,
        pool,
    })
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let d0 = c.embed_dim;
    let mut x = {
        let mut s = b.scope("stem");
        let conv = Conv::new(c.in_chans, d0, 3)
            .stride(2)
            .pad(Pad::Sym(1))
            .bias(true);
        let y = conv2d(&mut s.scope("conv1"), &input, conv)?;
        let x = downsample(&mut s.scope("down"), &y, d0, d0, &c)?;
        x
    };
    let mut prev = d0;
    for (i, st) in c.stages.iter().enumerate() {
        let mut ss = b.scope("stages");
        let s = &mut ss.scope(i);
        if i > 0 {
            x = downsample(&mut s.scope("downsample"), &x, prev, st.dim, &c)?;
        }
        x = stage(s, &x, st, i + 1 == c.stages.len(), &c)?;
        s.feature(&x, st.dim, 1 << (i + 2), &format!("stages.{i}"));
        prev = st.dim;
    }
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        prev,
        c.pool,
        cfg.num_classes,
        features,
    )
}

/// `MbConvBlock`: depthwise 3×3, act, SE (rd 1/4, no biases, the block's act), pointwise, residual.
fn mbconv(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let dw = Conv::new(dim, dim, 3).depthwise().pad(Pad::Sym(1));
    let y = conv2d(&mut b.scope("conv_dw"), x, dw)?;
    let y = act(b, &c.act, &y)?;
    let y = {
        let s = &mut b.scope("se");
        let rd = layers::make_divisible(dim as f64 * 0.25, 8, 0.0);
        let fc = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0));
        let p = s.op("GlobalAveragePool", &[&y], vec![]);
        let r = conv2d(&mut s.scope("fc1"), &p, fc(dim, rd))?;
        let r = act(s, &c.act, &r)?;
        let e = conv2d(&mut s.scope("fc2"), &r, fc(rd, dim))?;
        let g = act(s, "sigmoid", &e)?;
        layers::mul(s, &y, &g)
    };
    let pw = Conv::new(dim, dim, 1).pad(Pad::Sym(0));
    let y = conv2d(&mut b.scope("conv_pw"), &y, pw)?;
    Ok(layers::add(b, &y, x))
}

/// `Downsample2d` (reduction 'conv'): `norm1`, `conv_block`, a 3×3 stride-2 `reduction`, `norm2`.
fn downsample(b: &mut Builder, x: &Value, dim: usize, out: usize, c: &Cfg) -> Result<Value> {
    let y = layer_norm_2d(&mut b.scope("norm1"), x, dim, c.eps)?;
    let y = mbconv(&mut b.scope("conv_block"), &y, dim, c)?;
    let r = Conv::new(dim, out, 3).stride(2).pad(Pad::Sym(1));
    let y = conv2d(&mut b.scope("reduction"), &y, r)?;
    layer_norm_2d(&mut b.scope("norm2"), &y, out, c.eps)
}

/// `GlobalContextVitStage` after its downsample: NCHW in and out.
fn stage(b: &mut Builder, x: &Value, st: &Stage, last: bool, c: &Cfg) -> Result<Value> {
    let d = st.dim;
    // FeatureBlock: conv{i}, then pool{i} while reductions remain.
    let mut g = x.clone();
    for i in 0..st.levels {
        let mut gb = b.scope("global_block");
        let mut blocks = gb.scope("blocks");
        g = mbconv(&mut blocks.scope(format!("conv{}", i + 1)), &g, d, c)?;
        if i < st.pools {
            g = Pool2d::new(3, 2, 1).max(&mut blocks, &g, d)?;
        }
    }
    // [N, wh, ww, C] -> [N, 1, L, heads, hd] -> [N, 1, heads, L, hd]: one query per image,
    // broadcast over its windows.
    let (wh, ww) = st.window;
    let l = (wh * ww) as i64;
    let hd = (d / st.heads) as i64;
    let q = layers::nchw_to_nhwc(b, &g);
    let q = layers::reshape(b, &q, &[-1, 1, l, st.heads as i64, hd]);
    let q_global = layers::transpose(b, &q, &[0, 1, 3, 2, 4]);

    let mut x = layers::nchw_to_nhwc(b, x);
    for i in 0..st.depth {
        let mut blocks = b.scope("blocks");
        let q = (i % 2 != 0).then_some(&q_global);
        x = block(&mut blocks.scope(i), &x, st, q, c)?;
    }
    if last {
        // `stage_norm` of the last stage, channels-last.
        x = layer_norm(&mut b.scope("norm"), &x, d, c.eps)?;
    }
    Ok(layers::nhwc_to_nchw(b, &x))
}

/// `GlobalContextVitBlock` on `[N, H, W, C]`: windowed attention (with the global query in odd
/// blocks), `Mlp`, optional layer scales.
fn block(b: &mut Builder, x: &Value, st: &Stage, q: Option<&Value>, c: &Cfg) -> Result<Value> {
    let d = st.dim;
    let y = layer_norm(&mut b.scope("norm1"), x, d, c.eps)?;
    let win = window_partition(b, &y, st.feat, st.window, d);
    let att = window_attention(&mut b.scope("attn"), &win, st, q, c)?;
    let mut y = window_reverse(b, &att, st.feat, st.window, d);
    if let Some(init) = c.layer_scale {
        y = layer_scale(&mut b.scope("ls1"), &y, d, init)?;
    }
    let x = layers::add(b, x, &y);
    let h = layer_norm(&mut b.scope("norm2"), &x, d, c.eps)?;
    let hidden = (d as f64 * c.mlp_ratio) as usize;
    let mut h = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(d, hidden, &c.act))?;
    if let Some(init) = c.layer_scale {
        h = layer_scale(&mut b.scope("ls2"), &h, d, init)?;
    }
    Ok(layers::add(b, &x, &h))
}

/// `WindowAttentionGlobal` on windows `[N·nW, L, C]` (image-major). With a global query
/// (`[N, 1, heads, L, hd]`) `qkv` projects keys and values only and the windows are viewed as
/// `[N, nW, heads, L, hd]` so the query broadcasts over each image's windows.
fn window_attention(
    b: &mut Builder,
    x: &Value,
    st: &Stage,
    q_global: Option<&Value>,
    c: &Cfg,
) -> Result<Value> {
    let d = st.dim;
    let (h, hd) = (st.heads as i64, (d / st.heads) as i64);
    let l = (st.window.0 * st.window.1) as i64;
    let nw = ((st.feat.0 / st.window.0) * (st.feat.1 / st.window.1)) as i64;
    let n_proj = if q_global.is_some() { 2 } else { 3 };
    let init = Init::TruncNormal(0.02);
    let p = linear(&mut b.scope("qkv"), x, d, n_proj * d, c.qkv_bias, init)?;
    // [N, nW, L, n, heads, hd] -> [n, N, nW, heads, L, hd]
    let p = layers::reshape(b, &p, &[-1, nw, l, n_proj as i64, h, hd]);
    let p = layers::transpose(b, &p, &[3, 0, 1, 4, 2, 5]);
    let part = |b: &mut Builder, i: i64| {
        let idx = b.const_i64(vec![i], &[]);
        b.op("Gather", &[&p, &idx], vec![("axis", Attr::Int(0))])
    };
    let (q, k, v) = match q_global {
        Some(q) => (q.clone(), part(b, 0), part(b, 1)),
        None => (part(b, 0), part(b, 1), part(b, 2)),
    };
    let q = layers::scale(b, &q, (hd as f32).powf(-0.5));
    let kt = layers::transpose(b, &k, &[0, 1, 2, 4, 3]);
    let logits = b.op("MatMul", &[&q, &kt], vec![]);
    let bias = rel_pos_bias(&mut b.scope("rel_pos"), st.window, st.heads, 0)?;
    let logits = layers::add(b, &logits, &bias);
    let a = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let y = b.op("MatMul", &[&a, &v], vec![]);
    // [N, nW, heads, L, hd] -> [N·nW, L, C]
    let y = layers::transpose(b, &y, &[0, 1, 3, 2, 4]);
    let y = layers::reshape(b, &y, &[-1, l, d as i64]);
    linear(&mut b.scope("proj"), &y, d, d, true, init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_architecture_builds_its_shapes() {
        // The dry run (shapes only, no weight data) of every table entry at its own input size:
        // its pre-logits width is timm's num_features.
        for name in TABLE.names() {
            let cfg =
                ModelConfig::parse(TABLE.get(name).unwrap().config.to_string().as_bytes()).unwrap();
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            let g = crate::graph::build_shapes(
                &cfg,
                crate::graph::ParamSource::Shapes,
                &crate::graph::Request {
                    output: OutputKind::Features,
                    ..Default::default()
                },
                (h, w),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let dim = match g.outputs[0].shape {
                crate::graph::OutputShape::Vector(d) => d,
                _ => 0,
            };
            assert_eq!(Some(dim), cfg.num_features, "{name}");
        }
    }
}
