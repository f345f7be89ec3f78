//! Hiera (timm `hiera.py`): a hierarchical ViT whose tokens are kept "unrolled" so that mask-unit
//! windows and q-pooling are plain reshapes and max-reductions.
//!
//! The graph takes one fixed input size (timm's `fixed_input_size`), so timm's `Unroll` and
//! `Reroll` are token permutations computed at build time and applied with one `Gather` each.
//! Everything between them runs in timm's unrolled order with timm's reshapes: `HieraBlock`
//! (`norm1`, the expand `proj` max-pooled over the q stride, or `[max, mean]` without it,
//! `MaskUnitAttention` with q-pooling per window or globally, optional layer scales, `Mlp`) and the
//! `ClNormMlpClassifierHead` (pool over tokens, `norm`, `fc`). The `abswin` models' position
//! embedding (`pos_embed` resized with antialiased bicubic plus the tiled `pos_embed_win`) is
//! computed at load.
//!
//! Feature maps: timm's `features_only` is a getter over `forward_intermediates`: the last block
//! of every stage (`blocks.<stage end>`), rerolled to spatial order and returned NCHW, with timm's
//! `reduction` of `2^(stage + 2)`.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{layer_scale, linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::pos_embed::{interpolate_hwc, Resample};
use crate::graph::layers::{self, conv2d, Conv, Norm, Pad};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/hiera.json"));

/// The `hiera` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "hiera",
    examples: "hiera_tiny_224 .. hiera_huge_224, hiera_small_abswin_256, hiera_base_abswin_256",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `Hiera.__init__`'s keyword arguments with timm's defaults.
    pub struct HieraArgs {
        img_size: Json = Json::Null,
        in_chans: usize = 3,
        embed_dim: usize = 96,
        num_heads: usize = 1,
        global_pool: String = "avg".into(),
        stages: Vec<usize> = vec![2, 3, 16, 3],
        q_pool: usize = 3,
        q_stride: Vec<usize> = vec![2, 2],
        mask_unit_size: Vec<usize> = vec![8, 8],
        mask_unit_attn: Vec<bool> = vec![true, true, false, false],
        use_expand_proj: bool = true,
        dim_mul: f64 = 2.0,
        head_mul: f64 = 2.0,
        patch_kernel: Vec<usize> = vec![7, 7],
        patch_stride: Vec<usize> = vec![4, 4],
        patch_padding: Vec<usize> = vec![3, 3],
        mlp_ratio: f64 = 4.0,
        init_values: Option<f64> = None,
        norm_layer: String = "LayerNorm".into(),
        sep_pos_embed: bool = false,
        abs_win_pos_embed: bool = false,
        global_pos_size: Vec<usize> = vec![14, 14],
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One `HieraBlock`, as timm's constructor loop decides it.
#[derive(Debug, Clone)]
struct Block {
    dim: usize,
    dim_out: usize,
    heads: usize,
    /// Flattened q stride (1: no pooling in this block).
    q_stride: usize,
    /// Flattened mask-unit size after pooling.
    window: usize,
    mask_unit_attn: bool,
    /// Tokens entering the block.
    tokens: usize,
}

#[derive(Debug, Clone)]
struct Cfg {
    in_chans: usize,
    embed_dim: usize,
    /// Token grid of the patch embedding.
    grid: (usize, usize),
    patch: (usize, usize, usize),
    q_stride: (usize, usize),
    q_pool: usize,
    mask_unit: (usize, usize),
    blocks: Vec<Block>,
    stage_ends: Vec<usize>,
    norm: Norm,
    layer_scale: Option<f32>,
    expand_proj: bool,
    mlp_ratio: f64,
    abs_win: Option<(usize, usize)>,
    pool: String,
}

fn pair(a: &Args, key: &str, v: &[usize]) -> Result<(usize, usize)> {
    match v {
        [h, w] => Ok((*h, *w)),
        _ => Err(a.unsupported(key, "native graphs build 2-d Hiera only (two values)")),
    }
}

fn resolve(b: &Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a Hiera architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = HieraArgs::read(&a)?;
    if v.sep_pos_embed {
        return Err(a.unsupported(
            "sep_pos_embed",
            "separate spatial / temporal position embeddings are for 3-d (video) Hiera",
        ));
    }
    let norm = match v.norm_layer.to_ascii_lowercase().replace('_', "").as_str() {
        "layernorm" => Norm::Layer { eps: 1e-6 },
        _ => return Err(a.unsupported("norm_layer", "only timm's LayerNorm is built natively")),
    };
    if !matches!(v.global_pool.as_str(), "avg" | "max" | "avgmax") {
        return Err(a.unsupported(
            "global_pool",
            "native graphs pool the tokens ('avg', 'max' or 'avgmax'); '' returns no vector",
        ));
    }
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    // timm's img_size: model_args, else the pretrained cfg's input size (build_model_with_cfg
    // passes it for fixed-size models), else the class default 224.
    let img = match &v.img_size {
        Json::Null if cfg.pretrained_cfg.fixed_input_size => {
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            (h, w)
        }
        Json::Null => (224, 224),
        Json::Number(n) => {
            let s = n.as_u64().unwrap_or(0) as usize;
            (s, s)
        }
        Json::Array(x) if x.len() == 2 => {
            let g = |i: usize| x[i].as_u64().unwrap_or(0) as usize;
            (g(0), g(1))
        }
        _ => return Err(a.unsupported("img_size", "expected an int or [h, w]")),
    };
    if b.image_size() != img {
        return Err(Error::unsupported(format!(
            "`{arch}` is built for {}x{} inputs (img_size; its position embedding and token unrolling are fixed to it), not {}x{}",
            img.0,
            img.1,
            b.image_size().0,
            b.image_size().1
        )));
    }
    let pk = pair(&a, "patch_kernel", &v.patch_kernel)?;
    let ps = pair(&a, "patch_stride", &v.patch_stride)?;
    let pp = pair(&a, "patch_padding", &v.patch_padding)?;
    let qs = pair(&a, "q_stride", &v.q_stride)?;
    let mu = pair(&a, "mask_unit_size", &v.mask_unit_size)?;
    if pk.0 != pk.1 || ps.0 != ps.1 || pp.0 != pp.1 {
        return Err(a.unsupported(
            "patch_kernel",
            "native graphs build square patch kernels, strides and paddings",
        ));
    }
    if qs.0 != qs.1 {
        return Err(a.unsupported("q_stride", "native graphs build square q strides"));
    }
    let n_stages = v.stages.len();
    if n_stages == 0
        || v.q_pool >= n_stages
        || v.mask_unit_attn.len() < n_stages
        || ps.0 == 0
        || qs.0 == 0
        || mu.0 == 0
        || mu.1 == 0
        || v.embed_dim == 0
        || v.num_heads == 0
    {
        return Err(Error::invalid_model(format!(
            "Hiera stages {:?}, q_pool {}, mask_unit_attn {:?}, patch_stride {ps:?}, q_stride {qs:?}, mask_unit_size {mu:?}",
            v.stages, v.q_pool, v.mask_unit_attn
        )));
    }
    let grid = (img.0 / ps.0, img.1 / ps.1);
    // The patch conv's own output must be the token grid timm's Unroll views it as.
    let conv_out = |n: usize| (n + 2 * pp.0).checked_sub(pk.0).map(|d| d / ps.0 + 1);
    let unrolls = n_stages - 1;
    let q_total = qs.0.checked_pow(unrolls as u32).unwrap_or(0);
    if conv_out(img.0) != Some(grid.0)
        || conv_out(img.1) != Some(grid.1)
        || q_total == 0
        || grid.0 % q_total != 0
        || grid.1 % q_total != 0
        || grid.0 % mu.0 != 0
        || grid.1 % mu.1 != 0
    {
        return Err(Error::invalid_model(format!(
            "Hiera token grid {grid:?} (img_size {img:?}, patch stride {}) must be the patch conv's output and divide by q_stride^{unrolls} and mask_unit_size {mu:?}",
            ps.0
        )));
    }
    let stage_ends: Vec<usize> = (1..=n_stages)
        .map(|i| v.stages[..i].iter().sum::<usize>().wrapping_sub(1))
        .collect();
    if v.stages.contains(&0) {
        return Err(Error::invalid_model(
            "Hiera stages must have at least one block",
        ));
    }
    let q_pool_blocks: Vec<usize> = stage_ends[..v.q_pool].iter().map(|e| e + 1).collect();
    let flat_q = qs.0 * qs.1;
    let mut flat_mu = mu.0 * mu.1;
    let mut embed_dim = v.embed_dim;
    let mut heads = v.num_heads;
    let mut cur_stage = 0;
    let mut tokens = grid.0 * grid.1;
    let depth: usize = v.stages.iter().sum();
    let mut blocks = Vec::with_capacity(depth);
    for i in 0..depth {
        let mut dim_out = embed_dim;
        // Lagging by one block, as timm's: the pooling block keeps its stage's attention kind.
        let mu_attn = v.mask_unit_attn[cur_stage];
        let pooled = q_pool_blocks.contains(&i);
        if i > 0 && stage_ends.contains(&(i - 1)) {
            dim_out = (embed_dim as f64 * v.dim_mul) as usize;
            heads = (heads as f64 * v.head_mul) as usize;
            cur_stage += 1;
            if pooled {
                flat_mu /= flat_q;
            }
        }
        let q = if pooled { flat_q } else { 1 };
        if heads == 0
            || dim_out == 0
            || !dim_out.is_multiple_of(heads)
            || dim_out > crate::graph::args::MAX_INT as usize
            || (mu_attn && (flat_mu == 0 || !tokens.is_multiple_of(q * flat_mu)))
            || (embed_dim != dim_out && !v.use_expand_proj && dim_out != 2 * embed_dim)
        {
            return Err(Error::invalid_model(format!(
                "Hiera block {i}: dim {embed_dim} -> {dim_out} with {heads} heads, mask unit {flat_mu}, {tokens} tokens"
            )));
        }
        blocks.push(Block {
            dim: embed_dim,
            dim_out,
            heads,
            q_stride: q,
            window: flat_mu,
            mask_unit_attn: mu_attn,
            tokens,
        });
        tokens /= q;
        embed_dim = dim_out;
    }
    let abs_win = if v.abs_win_pos_embed {
        Some(pair(&a, "global_pos_size", &v.global_pos_size)?)
    } else {
        None
    };
    Ok(Cfg {
        in_chans: v.in_chans,
        embed_dim: v.embed_dim,
        grid,
        patch: (pk.0, ps.0, pp.0),
        q_stride: qs,
        q_pool: v.q_pool,
        mask_unit: mu,
        blocks,
        stage_ends,
        norm,
        layer_scale: v.init_values.map(|x| x as f32),
        expand_proj: v.use_expand_proj,
        mlp_ratio: v.mlp_ratio,
        abs_win,
        pool: v.global_pool,
    })
}

/// timm's `Unroll` of a `h`×`w` token grid under `schedule` (strides applied in order): the
/// spatial (row-major) index of the token at each unrolled position.
fn unroll_order(h: usize, w: usize, schedule: &[(usize, usize)]) -> Vec<usize> {
    let mut data: Vec<usize> = (0..h * w).collect();
    let (mut nb, mut ch, mut cw) = (1, h, w);
    for &(sy, sx) in schedule {
        let (nh, nw) = (ch / sy, cw / sx);
        let mut next = vec![0; data.len()];
        // [B, nh, sy, nw, sx] -> [B, sy, sx, nh, nw], the strides moved into the batch.
        for bi in 0..nb {
            for a in 0..nh {
                for yi in 0..sy {
                    for c in 0..nw {
                        for xi in 0..sx {
                            let src = (bi * ch + a * sy + yi) * cw + c * sx + xi;
                            let dst = (((bi * sy + yi) * sx + xi) * nh + a) * nw + c;
                            next[dst] = data[src];
                        }
                    }
                }
            }
        }
        data = next;
        nb *= sy * sx;
        ch = nh;
        cw = nw;
    }
    data
}

/// Gathers tokens `[N, L, C]` by a build-time index along the token axis.
fn gather_tokens(b: &mut Builder, x: &Value, idx: &[usize]) -> Value {
    let i: Vec<i64> = idx.iter().map(|&v| v as i64).collect();
    let i = b.const_i64(i, &[idx.len() as i64]);
    b.op("Gather", &[x, &i], vec![("axis", Attr::Int(1))])
}

fn reduce(b: &mut Builder, op: &str, x: &Value, axis: i64) -> Value {
    let a = b.ints(&[axis]);
    b.op(op, &[x, &a], vec![("keepdims", Attr::Int(0))])
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let (k, s, p) = c.patch;
    let d0 = c.embed_dim;
    let conv = Conv::new(c.in_chans, d0, k)
        .stride(s)
        .pad(Pad::Sym(p))
        .bias(true);
    let map = conv2d(&mut b.scope("patch_embed").scope("proj"), &input, conv)?;
    let grid_spatial = b.spatial(&map).cloned();
    let mut x = layers::nchw_to_tokens(b, &map, d0);
    let (gh, gw) = c.grid;
    let n0 = gh * gw;
    let pos = match c.abs_win {
        None => b.param("pos_embed", &[1, n0, d0], Init::TruncNormal(0.02))?,
        Some(gp) => abs_win_pos_embed(b, &c, gp)?,
    };
    x = layers::add(b, &x, &pos);
    let schedule = vec![c.q_stride; c.stage_ends.len() - 1];
    x = gather_tokens(b, &x, &unroll_order(gh, gw, &schedule));

    let mut stage = 0;
    let mut pools = 0;
    for (i, blk) in c.blocks.iter().enumerate() {
        x = block(&mut b.scope("blocks").scope(i), &x, blk, &c)?;
        if !c.stage_ends.contains(&i) {
            continue;
        }
        // Reroll: the tokens of this stage lie in the order of the unrolls not yet consumed
        // by q-pooling, over the pooled grid.
        let f = c.q_stride.0.pow(pools as u32);
        let (h, w) = (gh / f, gw / f);
        let order = unroll_order(h, w, &schedule[pools.min(schedule.len())..]);
        let mut inv = vec![0; order.len()];
        for (j, &o) in order.iter().enumerate() {
            inv[o] = j;
        }
        let t = gather_tokens(b, &x, &inv);
        let t = layers::transpose(b, &t, &[0, 2, 1]);
        let fmap = layers::reshape(b, &t, &[0, blk.dim_out as i64, h as i64, w as i64]);
        if let Some(mut sp) = grid_spatial.clone() {
            for _ in 0..pools {
                let q = c.q_stride.0;
                sp = sp.then(Step::Window {
                    k: q,
                    stride: q,
                    pad: 0,
                    dilation: 1,
                    ceil: false,
                });
            }
            b.assign_spatial(&fmap, sp);
        }
        b.feature(&fmap, blk.dim_out, 1 << (stage + 2), &format!("blocks.{i}"));
        if stage < c.q_pool {
            pools += 1;
        }
        stage += 1;
    }

    // ClNormMlpClassifierHead over NLC tokens: pool, norm, fc.
    let nf = c.blocks.last().map(|b| b.dim_out).unwrap_or(d0);
    let pooled = match c.pool.as_str() {
        "max" => reduce(b, "ReduceMax", &x, 1),
        "avgmax" => {
            let m = reduce(b, "ReduceMax", &x, 1);
            let a = reduce(b, "ReduceMean", &x, 1);
            let s = layers::add(b, &m, &a);
            layers::scale(b, &s, 0.5)
        }
        _ => reduce(b, "ReduceMean", &x, 1),
    };
    let h = &mut b.scope("head");
    let y = c.norm.apply_last(&mut h.scope("norm"), &pooled, nf)?;
    if h.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((y, nf));
    }
    let y = linear_2d(
        &mut h.scope("fc"),
        &y,
        nf,
        cfg.num_classes,
        true,
        Init::TruncNormal(0.02),
    )?;
    Ok((y, cfg.num_classes))
}

/// `_pos_embed` of the `abswin` models, at load: `pos_embed` `[1, C, gh, gw]` resized
/// (bicubic, antialias) to the token grid plus `pos_embed_win` `[1, C, muy, mux]` tiled over
/// the mask units, flattened to `[1, N, C]`.
fn abs_win_pos_embed(b: &mut Builder, c: &Cfg, gp: (usize, usize)) -> Result<Value> {
    let d = c.embed_dim;
    let (gh, gw) = c.grid;
    let (my, mx) = c.mask_unit;
    let pe = b.read("pos_embed", &[1, d, gp.0, gp.1], Init::TruncNormal(0.02))?;
    let win = b.read("pos_embed_win", &[1, d, my, mx], Init::TruncNormal(0.02))?;
    // NCHW -> HWC for the resampler.
    let mut hwc = vec![0.0f32; pe.len()];
    for ch in 0..d {
        for p in 0..gp.0 * gp.1 {
            hwc[p * d + ch] = pe[ch * gp.0 * gp.1 + p];
        }
    }
    let mut out = interpolate_hwc(&hwc, gp, d, (gh, gw), &Resample::default());
    for y in 0..gh {
        for x in 0..gw {
            let w0 = (y % my) * mx + x % mx;
            for ch in 0..d {
                out[(y * gw + x) * d + ch] += win[ch * my * mx + w0];
            }
        }
    }
    b.tensor("pos_embed", out, &[1, gh * gw, d])
}

/// `HieraBlock`: q-pooled expansion of the residual, `MaskUnitAttention`, `Mlp`.
fn block(b: &mut Builder, x: &Value, blk: &Block, c: &Cfg) -> Result<Value> {
    let (d, dout) = (blk.dim, blk.dim_out);
    let xn = c.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let q = blk.q_stride as i64;
    let mut x = x.clone();
    if d != dout {
        if c.expand_proj {
            let init = Init::TruncNormal(0.02);
            let y = linear(&mut b.scope("proj"), &xn, d, dout, true, init)?;
            let y = layers::reshape(b, &y, &[0, q, -1, dout as i64]);
            x = reduce(b, "ReduceMax", &y, 1);
        } else {
            let y = layers::reshape(b, &x, &[0, q, -1, d as i64]);
            let m = reduce(b, "ReduceMax", &y, 1);
            let a = reduce(b, "ReduceMean", &y, 1);
            x = layers::concat(b, &[&m, &a], -1);
        }
    }
    let mut y = mask_unit_attention(&mut b.scope("attn"), &xn, blk)?;
    if let Some(init) = c.layer_scale {
        y = layer_scale(&mut b.scope("ls1"), &y, dout, init)?;
    }
    let x = layers::add(b, &x, &y);
    let h = c.norm.apply_last(&mut b.scope("norm2"), &x, dout)?;
    let hidden = (dout as f64 * c.mlp_ratio) as usize;
    let mut h = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(dout, hidden, "gelu"))?;
    if let Some(init) = c.layer_scale {
        h = layer_scale(&mut b.scope("ls2"), &h, dout, init)?;
    }
    Ok(layers::add(b, &x, &h))
}

/// `MaskUnitAttention`: attention within each mask unit (`num_windows` of them) or over all
/// tokens (one window), q max-pooled over the q stride; the windows are timm's interleaved
/// token layout (`token = t · num_windows + window`). The windows go into the batch, so every
/// stage runs as ORT's fused `MultiHeadAttention` on `[N · windows, t, dim_out]`.
fn mask_unit_attention(b: &mut Builder, x: &Value, blk: &Block) -> Result<Value> {
    let (dout, heads) = (blk.dim_out, blk.heads);
    let nw = if blk.mask_unit_attn {
        blk.tokens / (blk.q_stride * blk.window)
    } else {
        1
    };
    let t = (blk.tokens / nw) as i64;
    let init = Init::TruncNormal(0.02);
    let qkv = linear(&mut b.scope("qkv"), x, blk.dim, 3 * dout, true, init)?;
    let (nw, d) = (nw as i64, dout as i64);
    let (q, k, v) = if nw == 1 {
        let parts = layers::split(b, &qkv, -1, &[dout; 3]);
        (parts[0].clone(), parts[1].clone(), parts[2].clone())
    } else {
        // [N, t, windows, 3, heads · hd] -> [3, N · windows, t, heads · hd]
        let qkv = layers::reshape(b, &qkv, &[0, t, nw, 3, d]);
        let qkv = layers::transpose(b, &qkv, &[3, 0, 2, 1, 4]);
        let qkv = layers::reshape(b, &qkv, &[3, -1, t, d]);
        let part = |b: &mut Builder, i: i64| {
            let idx = b.const_i64(vec![i], &[]);
            b.op("Gather", &[&qkv, &idx], vec![("axis", Attr::Int(0))])
        };
        (part(b, 0), part(b, 1), part(b, 2))
    };
    let qs = blk.q_stride as i64;
    let q = if qs > 1 {
        // timm's view(..., q_stride, -1, hd).amax(3): the stride is the outer split of t.
        let qv = layers::reshape(b, &q, &[0, qs, t / qs, d]);
        reduce(b, "ReduceMax", &qv, 1)
    } else {
        q
    };
    let cfg = AttnCfg::new(dout, heads);
    let y = attention_core(b, &q, &k, &v, &cfg, &Hooks::default())?;
    let y = if nw == 1 {
        y
    } else {
        // [N · windows, t', D] -> timm's transpose(1, 3): [N, t', windows, D]
        let y = layers::reshape(b, &y, &[-1, nw, t / qs, d]);
        let y = layers::transpose(b, &y, &[0, 2, 1, 3]);
        layers::reshape(b, &y, &[0, -1, d])
    };
    linear(&mut b.scope("proj"), &y, dout, dout, true, init)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unroll_moves_strides_outermost() {
        // 4x4 grid, one 2x2 unroll: the tokens at (even, even) first, then (even, odd), ...
        let o = unroll_order(4, 4, &[(2, 2)]);
        assert_eq!(&o[..4], &[0, 2, 8, 10]);
        assert_eq!(&o[4..8], &[1, 3, 9, 11]);
        // Twice: the second unroll applies to each strided sub-grid.
        let o = unroll_order(4, 4, &[(2, 2), (2, 2)]);
        assert_eq!(&o[..4], &[0, 2, 8, 10]);
        let mut s = o.clone();
        s.sort();
        assert_eq!(s, (0..16).collect::<Vec<_>>());
    }

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
