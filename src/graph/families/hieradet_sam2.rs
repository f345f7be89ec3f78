//! HieraDet (timm `hieradet_sam2.py`): SAM 2's Hiera image encoder, a channels-last ViT with
//! windowed attention whose first block of a stage max-pools q (and the projected shortcut).
//!
//! Unlike timm's `hiera.py` the tokens stay in spatial `[N, H, W, C]` order: `MultiScaleBlock`
//! pads the map to whole windows, partitions it (timm's `window_partition`), attends inside each
//! window (the `global_att_blocks` over the whole map), reverses the partition at the pooled
//! window size and crops. The position embedding (`pos_embed` resized with plain bicubic to the
//! token grid plus `pos_embed_window` tiled over it) depends only on the input size, so it is
//! computed at load. The head is a `ClNormMlpClassifierHead` (pool over H, W, `norm`, `fc`).
//!
//! Feature maps: timm's `features_only` is a getter over `forward_intermediates`: the last block
//! of every stage (`blocks.<stage end>`), NCHW, with timm's `reduction` of `2^(stage + 2)`.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{layer_scale, linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::layers::pos_embed::{interpolate_hwc, Interp, Resample};
use crate::graph::layers::window::{int_pair, pad_hw_end, window_partition, window_reverse};
use crate::graph::layers::{self, conv2d, Conv, Norm, Pad};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/hieradet_sam2.json"));

/// The `hieradet_sam2` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "hieradet_sam2",
    examples: "sam2_hiera_tiny .. sam2_hiera_large, hieradet_small",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `HieraDet.__init__`'s keyword arguments with timm's defaults.
    pub struct HieraDetArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        embed_dim: usize = 96,
        num_heads: usize = 1,
        patch_kernel: Vec<usize> = vec![7, 7],
        patch_stride: Vec<usize> = vec![4, 4],
        patch_padding: Vec<usize> = vec![3, 3],
        patch_size: Json = Json::Null,
        q_pool: usize = 3,
        q_stride: Vec<usize> = vec![2, 2],
        stages: Vec<usize> = vec![2, 3, 16, 3],
        dim_mul: f64 = 2.0,
        head_mul: f64 = 2.0,
        global_pos_size: Vec<usize> = vec![7, 7],
        window_spec: Vec<usize> = vec![8, 4, 14, 7],
        global_att_blocks: Json = serde_json::json!([12, 16, 20]),
        init_values: Option<f64> = None,
        weight_init: String = String::new(),
        fix_init: bool = true,
        head_init_scale: f64 = 0.001,
        norm_layer: String = "LayerNorm".into(),
        act_layer: String = "GELU".into(),
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `MultiScaleBlock`, as timm's constructor loop decides it.
#[derive(Debug, Clone)]
struct Block {
    dim: usize,
    dim_out: usize,
    heads: usize,
    /// `q_stride` of the stage-changing blocks.
    q_stride: Option<(usize, usize)>,
    /// 0: global attention.
    window: usize,
}

struct Cfg {
    in_chans: usize,
    embed_dim: usize,
    /// Conv kernel, stride, padding of `HieraPatchEmbed`, or a ViT patch (k = stride, no pad).
    patch: (usize, usize, usize),
    vit_patch: bool,
    global_pos: (usize, usize),
    window0: usize,
    blocks: Vec<Block>,
    stage_ends: Vec<usize>,
    norm: Norm,
    act: String,
    layer_scale: Option<f32>,
    pool: TokenPool,
}

fn pair(a: &Args, key: &str, v: &[usize]) -> Result<(usize, usize)> {
    match v {
        [h, w] => Ok((*h, *w)),
        _ => Err(a.unsupported(key, "expected two values")),
    }
}

fn resolve(cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a HieraDet architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = HieraDetArgs::read(&a)?;
    let norm = match v.norm_layer.to_ascii_lowercase().replace('_', "").as_str() {
        "layernorm" => Norm::Layer { eps: 1e-6 },
        _ => return Err(a.unsupported("norm_layer", "only timm's LayerNorm is built natively")),
    };
    let act = layers::act::canonical(&v.act_layer)
        .map_err(|_| a.unsupported("act_layer", "not an activation native graphs build"))?
        .to_string();
    let pool = match v.global_pool.as_str() {
        "avg" => TokenPool::Avg,
        "max" => TokenPool::Max,
        "avgmax" => TokenPool::AvgMax,
        _ => {
            return Err(a.unsupported(
                "global_pool",
                "native graphs pool the map ('avg', 'max' or 'avgmax'); '' returns no vector",
            ))
        }
    };
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    let pk = pair(&a, "patch_kernel", &v.patch_kernel)?;
    let ps = pair(&a, "patch_stride", &v.patch_stride)?;
    let pp = pair(&a, "patch_padding", &v.patch_padding)?;
    let qs = pair(&a, "q_stride", &v.q_stride)?;
    let gp = pair(&a, "global_pos_size", &v.global_pos_size)?;
    let (patch, vit_patch) = match &v.patch_size {
        Json::Null => {
            if pk.0 != pk.1 || ps.0 != ps.1 || pp.0 != pp.1 {
                return Err(a.unsupported(
                    "patch_kernel",
                    "native graphs build square patch kernels, strides and paddings",
                ));
            }
            ((pk.0, ps.0, pp.0), false)
        }
        j => match int_pair(j) {
            Some((p, q)) if p == q => ((p, p, 0), true),
            _ => return Err(a.unsupported("patch_size", "expected one square patch size")),
        },
    };
    let global: Vec<usize> = match &v.global_att_blocks {
        Json::Null => Vec::new(),
        Json::Array(l) => l
            .iter()
            .map(|x| x.as_u64().map(|n| n as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| a.unsupported("global_att_blocks", "expected block indices"))?,
        _ => return Err(a.unsupported("global_att_blocks", "expected a list of block indices")),
    };
    let n_stages = v.stages.len();
    if n_stages == 0
        || v.window_spec.len() != n_stages
        || v.q_pool >= n_stages
        || v.stages.contains(&0)
        || patch.1 == 0
        || qs.0 == 0
        || qs.1 == 0
        || v.embed_dim == 0
        || v.num_heads == 0
        || gp.0 == 0
        || gp.1 == 0
    {
        return Err(Error::invalid_model(format!(
            "HieraDet stages {:?}, window_spec {:?}, q_pool {}, q_stride {qs:?}",
            v.stages, v.window_spec, v.q_pool
        )));
    }
    let stage_ends: Vec<usize> = (1..=n_stages)
        .map(|i| v.stages[..i].iter().sum::<usize>() - 1)
        .collect();
    let q_pool_blocks: Vec<usize> = stage_ends[..v.q_pool].iter().map(|e| e + 1).collect();
    let depth: usize = v.stages.iter().sum();
    let (mut embed_dim, mut heads, mut cur_stage) = (v.embed_dim, v.num_heads, 0);
    let mut blocks = Vec::with_capacity(depth);
    for i in 0..depth {
        let mut dim_out = embed_dim;
        // The window lags by a block, as timm's: a stage's first block keeps the previous
        // stage's window.
        let mut window = v.window_spec[cur_stage];
        if global.contains(&i) {
            window = 0;
        }
        if i > 0 && stage_ends.contains(&(i - 1)) {
            dim_out = (embed_dim as f64 * v.dim_mul) as usize;
            heads = (heads as f64 * v.head_mul) as usize;
            cur_stage += 1;
        }
        let q_stride = q_pool_blocks.contains(&i).then_some(qs);
        // A pooled block must pool its shortcut too (timm pools it only through the expand
        // projection) and pooled windows must stay whole.
        if heads == 0
            || dim_out == 0
            || !dim_out.is_multiple_of(heads)
            || dim_out > crate::graph::args::MAX_INT as usize
            || (q_stride.is_some() && dim_out == embed_dim)
            // timm divides by the pooled window of a global block (zero) and fails.
            || (q_stride.is_some() && window == 0)
            || (q_stride.is_some()
                && window > 0
                && (!window.is_multiple_of(qs.0) || !window.is_multiple_of(qs.1)))
        {
            return Err(Error::invalid_model(format!(
                "HieraDet block {i}: dim {embed_dim} -> {dim_out} with {heads} heads, window {window}, q_stride {q_stride:?}"
            )));
        }
        blocks.push(Block {
            dim: embed_dim,
            dim_out,
            heads,
            q_stride,
            window,
        });
        embed_dim = dim_out;
    }
    Ok(Cfg {
        in_chans: v.in_chans,
        embed_dim: v.embed_dim,
        patch,
        vit_patch,
        global_pos: gp,
        window0: v.window_spec[0],
        blocks,
        stage_ends,
        norm,
        act,
        layer_scale: v.init_values.map(|x| x as f32),
        pool,
    })
}

/// Max pool of a channels-last map `[N, H, W, C]` (the `nn.MaxPool2d(q_stride, q_stride)` timm
/// runs on the NCHW view).
fn max_pool_nhwc(b: &mut Builder, x: &Value, (sh, sw): (usize, usize)) -> Value {
    let t = layers::nhwc_to_nchw(b, x);
    let k = vec![sh as i64, sw as i64];
    let p = b.op(
        "MaxPool",
        &[&t],
        vec![
            ("kernel_shape", Attr::Ints(k.clone())),
            ("strides", Attr::Ints(k)),
        ],
    );
    layers::nchw_to_nhwc(b, &p)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(cfg)?;
    let input = b.input();
    let (img_h, img_w) = b.image_size();
    let (k, s, p) = c.patch;
    let d0 = c.embed_dim;
    let conv = Conv::new(c.in_chans, d0, k).stride(s).bias(true);
    let conv = if c.vit_patch {
        // PatchEmbed(dynamic_img_pad=True): zeros after the last row / column up to whole
        // patches.
        let (ph, pw) = ((k - img_h % k) % k, (k - img_w % k) % k);
        conv.pad(Pad::Explicit(0, 0, ph, pw))
    } else {
        conv.pad(Pad::Sym(p))
    };
    let map = conv2d(&mut b.scope("patch_embed").scope("proj"), &input, conv)?;
    let grid_spatial = b.spatial(&map).cloned();
    let out = |n: usize| match c.vit_patch {
        true => n.div_ceil(k),
        false => (n + 2 * p).checked_sub(k).map_or(0, |e| e / s + 1),
    };
    let (mut h, mut w) = (out(img_h), out(img_w));
    if h == 0 || w == 0 {
        return Err(Error::unsupported(format!(
            "input {img_h}x{img_w} is too small for the HieraDet patch embedding"
        )));
    }
    let mut x = layers::nchw_to_nhwc(b, &map);
    let pos = pos_embed(b, &c, (h, w))?;
    x = layers::add(b, &x, &pos);

    let mut stage = 0;
    let mut sp = grid_spatial;
    for (i, blk) in c.blocks.iter().enumerate() {
        let hw = (h, w);
        x = block(&mut b.scope("blocks").scope(i), &x, blk, hw, &c)?;
        if let Some((qh, qw)) = blk.q_stride {
            (h, w) = (h / qh, w / qw);
            // Square strides only keep a tracked spatial chain; others are still built.
            sp = sp.filter(|_| qh == qw).map(|s| {
                s.then(Step::Window {
                    k: qh,
                    stride: qh,
                    pad: 0,
                    dilation: 1,
                    ceil: false,
                })
            });
        }
        if !c.stage_ends.contains(&i) {
            continue;
        }
        if h == 0 || w == 0 {
            return Err(Error::unsupported(format!(
                "input {img_h}x{img_w} is too small for HieraDet's q-pooling"
            )));
        }
        let fmap = layers::nhwc_to_nchw(b, &x);
        if let Some(s) = sp.clone() {
            b.assign_spatial(&fmap, s);
        }
        b.feature(&fmap, blk.dim_out, 1 << (stage + 2), &format!("blocks.{i}"));
        stage += 1;
    }

    // ClNormMlpClassifierHead on NHWC: pool over H, W, norm, fc.
    let nf = c.blocks.last().map(|b| b.dim_out).unwrap_or(d0);
    let tokens = layers::reshape(b, &x, &[0, -1, nf as i64]);
    let pooled = global_pool_nlc(b, &tokens, c.pool, 0, false);
    let hd = &mut b.scope("head");
    let y = c.norm.apply_last(&mut hd.scope("norm"), &pooled, nf)?;
    if hd.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((y, nf));
    }
    let y = linear_2d(
        &mut hd.scope("fc"),
        &y,
        nf,
        cfg.num_classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, cfg.num_classes))
}

/// `_pos_embed` at load: `pos_embed` `[1, C, gh, gw]` resized (bicubic, no antialias) to the
/// token grid plus `pos_embed_window` `[1, C, w0, w0]` tiled over it, as `[1, H, W, C]`.
fn pos_embed(b: &mut Builder, c: &Cfg, (h, w): (usize, usize)) -> Result<Value> {
    let d = c.embed_dim;
    let gp = c.global_pos;
    let w0 = c.window0;
    if w0 == 0 || !h.is_multiple_of(w0) || !w.is_multiple_of(w0) {
        // timm's tile would not cover the grid and its addition fails.
        return Err(Error::unsupported(format!(
            "HieraDet's token grid {h}x{w} must be a multiple of the first window ({w0}) for its tiled window position embedding; choose another input size"
        )));
    }
    let pe = b.read("pos_embed", &[1, d, gp.0, gp.1], Init::TruncNormal(0.02))?;
    let win = b.read("pos_embed_window", &[1, d, w0, w0], Init::TruncNormal(0.02))?;
    let mut hwc = vec![0.0f32; pe.len()];
    for ch in 0..d {
        for q in 0..gp.0 * gp.1 {
            hwc[q * d + ch] = pe[ch * gp.0 * gp.1 + q];
        }
    }
    let plain = Resample {
        mode: Interp::Bicubic,
        antialias: false,
        align_corners: false,
    };
    let mut out = interpolate_hwc(&hwc, gp, d, (h, w), &plain);
    for y in 0..h {
        for x in 0..w {
            let wi = (y % w0) * w0 + x % w0;
            for ch in 0..d {
                out[(y * w + x) * d + ch] += win[ch * w0 * w0 + wi];
            }
        }
    }
    b.tensor("pos_embed", out, &[1, h, w, d])
}

/// `MultiScaleBlock` on `[N, H, W, dim]`.
fn block(
    b: &mut Builder,
    x: &Value,
    blk: &Block,
    (h, w): (usize, usize),
    c: &Cfg,
) -> Result<Value> {
    let (d, dout) = (blk.dim, blk.dim_out);
    let init = Init::TruncNormal(0.02);
    let xn = c.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let mut shortcut = x.clone();
    if d != dout {
        shortcut = linear(&mut b.scope("proj"), &xn, d, dout, true, init)?;
        if let Some(q) = blk.q_stride {
            shortcut = max_pool_nhwc(b, &shortcut, q);
        }
    }
    let (qh, qw) = blk.q_stride.unwrap_or((1, 1));
    let (h2, w2) = (h / qh, w / qw);
    let y = if blk.window > 0 {
        let ws = blk.window;
        let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
        let t = pad_hw_end(b, &xn, hp - h, wp - w);
        let t = window_partition(b, &t, (hp, wp), (ws, ws), d);
        let y = attention(&mut b.scope("attn"), &t, blk, (ws, ws))?;
        // Reverse at the pooled window over the pooled map padded to it, then crop.
        let (wh, ww) = (ws / qh, ws / qw);
        let (hp2, wp2) = (h2.div_ceil(wh) * wh, w2.div_ceil(ww) * ww);
        if hp2 / wh != hp / ws || wp2 / ww != wp / ws {
            // timm's unpartition would regroup the windows of another batch element.
            return Err(Error::unsupported(format!(
                "HieraDet's q-pooled windows do not tile the {h}x{w} map (window {ws}); choose another input size"
            )));
        }
        let y = window_reverse(b, &y, (hp2, wp2), (wh, ww), dout);
        if (hp2, wp2) != (h2, w2) {
            let y = layers::slice(b, &y, 1, 0, h2 as i64);
            layers::slice(b, &y, 2, 0, w2 as i64)
        } else {
            y
        }
    } else {
        let t = layers::reshape(b, &xn, &[0, -1, d as i64]);
        let y = attention(&mut b.scope("attn"), &t, blk, (h, w))?;
        layers::reshape(b, &y, &[0, h2 as i64, w2 as i64, dout as i64])
    };
    let mut y = y;
    if let Some(init) = c.layer_scale {
        y = layer_scale(&mut b.scope("ls1"), &y, dout, init)?;
    }
    let x = layers::add(b, &shortcut, &y);
    let t = c.norm.apply_last(&mut b.scope("norm2"), &x, dout)?;
    let mut t = mlp(
        &mut b.scope("mlp"),
        &t,
        &MlpCfg::new(dout, 4 * dout, &c.act),
    )?;
    if let Some(init) = c.layer_scale {
        t = layer_scale(&mut b.scope("ls2"), &t, dout, init)?;
    }
    Ok(layers::add(b, &x, &t))
}

/// `MultiScaleAttention` on tokens `[M, hw.0·hw.1, dim]` (a window or the whole map): q, k, v
/// from one `qkv`, q max-pooled over the q stride on its `hw` grid, softmax attention, `proj`.
fn attention(b: &mut Builder, x: &Value, blk: &Block, hw: (usize, usize)) -> Result<Value> {
    let (d, dout) = (blk.dim, blk.dim_out);
    let init = Init::TruncNormal(0.02);
    let qkv = linear(&mut b.scope("qkv"), x, d, 3 * dout, true, init)?;
    // timm's reshape to (3, heads, head_dim): q | k | v, heads contiguous in each.
    let parts = layers::split(b, &qkv, -1, &[dout; 3]);
    let mut q = parts[0].clone();
    if let Some(s) = blk.q_stride {
        let m = layers::reshape(b, &q, &[-1, hw.0 as i64, hw.1 as i64, dout as i64]);
        let m = max_pool_nhwc(b, &m, s);
        q = layers::reshape(b, &m, &[0, -1, dout as i64]);
    }
    let ac = AttnCfg::new(dout, blk.heads);
    let y = attention_core(b, &q, &parts[1], &parts[2], &ac, &Hooks::default())?;
    linear(&mut b.scope("proj"), &y, dout, dout, true, init)
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
