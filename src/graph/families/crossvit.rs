//! CrossViT (timm `crossvit.py`, `CrossVit`): two ViT branches over patch grids of different
//! sizes (the second branch sees the image bicubically rescaled, `img_scale`), joined in every
//! `MultiScaleBlock` by cross attention of each branch's class token over the other branch's
//! patch tokens (`projs`, `fusion`, `revert_projs`). Per-branch `norm`, class token (or mean of
//! the patch tokens) into per-branch `head`s whose logits are averaged.
//!
//! The rescale is PyTorch's `F.interpolate(mode='bicubic', align_corners=False)` as two MatMuls
//! with weights computed at load (the image size is fixed). Feature maps are timm's
//! `features_only=True` (`FeatureGetterNet` over `forward_intermediates` with `norm=False`): the
//! patch tokens of every branch after every block, branch-major; by default the last block of
//! each branch.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, attention_core, AttnCfg, Hooks};
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{self, token_map};
use crate::graph::layers::pos_embed::{interp_matrix, Interp, Resample};
use crate::graph::layers::{self, conv2d, py_round, Conv, Norm, Pad};
use crate::graph::spatial::{Spatial, Step};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/crossvit.json"));

/// The `crossvit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "crossvit",
    examples: "crossvit_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `CrossVit.__init__`'s keyword arguments with timm's defaults.
    pub struct CrossVitArgs {
        img_size: Json = Json::from(224),
        img_scale: Json = serde_json::json!([1.0, 1.0]),
        patch_size: Vec<usize> = vec![8, 16],
        embed_dim: Vec<usize> = vec![192, 384],
        depth: Vec<Vec<usize>> = vec![vec![1, 3, 1]; 3],
        num_heads: Vec<usize> = vec![6, 12],
        mlp_ratio: Vec<f64> = vec![2.0, 2.0, 4.0],
        multi_conv: bool = false,
        crop_scale: bool = false,
        qkv_bias: bool = true,
        norm_layer: Json = Json::Null,
        global_pool: String = "token".into(),
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

/// One branch: its input size after `scale_image`, patch embedding and transformer width.
#[derive(Debug, Clone)]
struct Branch {
    /// `img_size_scaled[i]`.
    size: (usize, usize),
    patch: usize,
    dim: usize,
    heads: usize,
    mlp_ratio: f64,
    /// `PatchEmbed`'s token grid (what the position embedding covers).
    grid: (usize, usize),
    /// `feature_info` reduction: `round(patch / img_scale)`.
    reduction: usize,
}

#[derive(Debug, Clone)]
struct CrossVit {
    img: (usize, usize),
    branches: Vec<Branch>,
    /// Per `MultiScaleBlock`: each branch's depth, then the fusion depth.
    depth: Vec<Vec<usize>>,
    multi_conv: bool,
    crop_scale: bool,
    qkv_bias: bool,
    norm: Norm,
    avg_pool: bool,
}

fn pair(a: &Args, key: &str, v: &Json) -> Result<(usize, usize)> {
    let n = |j: &Json| {
        j.as_u64()
            .filter(|&n| n > 0 && n <= 1 << 16)
            .map(|n| n as usize)
    };
    match v {
        Json::Array(hw) if hw.len() == 2 => match (n(&hw[0]), n(&hw[1])) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(a.unsupported(key, "expected an int or [h, w]")),
        },
        j => n(j)
            .map(|s| (s, s))
            .ok_or_else(|| a.unsupported(key, "expected an int or [h, w]")),
    }
}

/// `int(sj * si)`, Python's truncation of the scaled size. JSON numbers may be read one unit
/// in the last place off (224/240 is written 0.9333333333333333), so a product within 1e-9 of
/// an integer is that integer, as the exact double timm multiplies gives.
fn scaled(n: usize, s: f64) -> usize {
    let x = n as f64 * s;
    let r = x.round();
    if (x - r).abs() <= 1e-9 * r.max(1.0) {
        r as usize
    } else {
        x as usize
    }
}

/// `PatchEmbed`'s token grid along one axis for an input of `n`.
fn embed_grid(n: usize, patch: usize, multi_conv: bool) -> Option<usize> {
    let conv =
        |n: usize, k: usize, s: usize, p: usize| (n + 2 * p).checked_sub(k).map(|r| r / s + 1);
    if !multi_conv {
        return (n >= patch).then_some(n / patch);
    }
    let n = conv(n, 7, 4, 3)?;
    match patch {
        12 => conv(conv(n, 3, 3, 0)?, 3, 1, 1),
        _ => conv(conv(n, 3, 2, 1)?, 3, 2, 1),
    }
}

impl CrossVit {
    // One index runs over timm's parallel per-branch / per-stage lists.
    #[allow(clippy::needless_range_loop)]
    fn resolve(cfg: &ModelConfig) -> Result<CrossVit> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a CrossViT architecture this build knows"
            ))
        })?;
        let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let v = CrossVitArgs::read(&a)?;
        let norm = match &v.norm_layer {
            Json::Null => Norm::Layer { eps: 1e-6 },
            _ => return Err(a.unsupported("norm_layer", "only timm's LayerNorm (eps 1e-6)")),
        };
        let img = pair(&a, "img_size", &v.img_size)?;
        // to_2tuple: a number is used for every branch.
        let scales: Vec<f64> = match &v.img_scale {
            Json::Array(s) => s
                .iter()
                .map(|x| x.as_f64().filter(|f| *f > 0.0 && *f <= 16.0))
                .collect::<Option<_>>()
                .ok_or_else(|| a.unsupported("img_scale", "expected positive numbers"))?,
            j => {
                let s = j
                    .as_f64()
                    .filter(|f| *f > 0.0 && *f <= 16.0)
                    .ok_or_else(|| a.unsupported("img_scale", "expected positive numbers"))?;
                vec![s, s]
            }
        };
        let nb = v.patch_size.len();
        // timm's _embed reads cls_token_0 for branch 0 and cls_token_1 for every other one.
        if !(1..=2).contains(&nb) {
            return Err(a.unsupported(
                "patch_size",
                "one or two branches (timm's CrossVit reuses branch 1's class token and position embedding beyond two)",
            ));
        }
        if scales.len() < nb
            || v.embed_dim.len() < nb
            || v.num_heads.len() < nb
            || v.mlp_ratio.len() < nb
        {
            return Err(Error::invalid_model(format!(
                "`{arch}`: img_scale, embed_dim, num_heads and mlp_ratio need one entry per branch ({nb})"
            )));
        }
        if v.depth.is_empty() || v.depth.iter().any(|d| d.len() != nb + 1) {
            return Err(Error::invalid_model(format!(
                "`{arch}`: every depth entry needs {nb} branch depths and a fusion depth"
            )));
        }
        // timm drops a branch with no blocks from `blocks`, which shifts the others.
        if v.depth.iter().any(|d| d[..nb].contains(&0)) {
            return Err(a.unsupported("depth", "every branch needs at least one block per stage"));
        }
        if v.multi_conv && v.patch_size.iter().any(|p| *p != 12 && *p != 16) {
            return Err(a.unsupported(
                "multi_conv",
                "timm's multi-conv stem has patch 12 or 16 only",
            ));
        }
        let mut branches = Vec::new();
        for i in 0..nb {
            let (p, d, h) = (v.patch_size[i], v.embed_dim[i], v.num_heads[i]);
            let s = scales[i];
            let size = (scaled(img.0, s), scaled(img.1, s));
            if p == 0 || h == 0 || d == 0 || d % h != 0 || size.0 == 0 || size.1 == 0 {
                return Err(Error::invalid_model(format!(
                    "`{arch}`: branch {i} (patch {p}, embed_dim {d}, {h} heads, size {size:?}) is not a CrossViT branch"
                )));
            }
            if v.multi_conv && (d % 4 != 0) {
                return Err(Error::invalid_model(
                    "multi_conv needs embed_dim divisible by 4",
                ));
            }
            let grid = match (
                embed_grid(size.0, p, v.multi_conv),
                embed_grid(size.1, p, v.multi_conv),
            ) {
                (Some(gh), Some(gw)) if gh > 0 && gw > 0 => (gh, gw),
                _ => {
                    return Err(Error::invalid_model(format!(
                        "`{arch}`: branch {i}'s input {size:?} is smaller than its patch {p}"
                    )))
                }
            };
            // timm sizes the position embedding as `h // p * w // p` and asserts nothing else.
            if grid.0 * grid.1 != size.0 / p * size.1 / p || (size.0 / p, size.1 / p) != grid {
                return Err(Error::unsupported(format!(
                    "`{arch}`: branch {i}'s {}x{} token grid for input {size:?} does not match timm's position embedding ({} tokens)",
                    grid.0,
                    grid.1,
                    size.0 / p * size.1 / p
                )));
            }
            branches.push(Branch {
                size,
                patch: p,
                dim: d,
                heads: h,
                mlp_ratio: v.mlp_ratio[i],
                grid,
                reduction: py_round(p as f64 / s) as usize,
            });
        }
        let avg_pool = match v.global_pool.as_str() {
            "token" => false,
            "avg" => true,
            _ => return Err(a.unsupported("global_pool", "token or avg")),
        };
        Ok(CrossVit {
            img,
            branches,
            depth: v.depth,
            multi_conv: v.multi_conv,
            crop_scale: v.crop_scale,
            qkv_bias: v.qkv_bias,
            norm,
            avg_pool,
        })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = CrossVit::resolve(cfg)?;
    let hw = b.image_size();
    // PatchEmbed asserts the input is img_size.
    if hw != m.img {
        return Err(Error::unsupported(format!(
            "CrossViT at input {}x{}: the model takes {}x{} only (timm asserts it)",
            hw.0, hw.1, m.img.0, m.img.1
        )));
    }
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    // _embed: each branch's tokens [cls, patches] + pos_embed.
    let mut xs = Vec::new();
    let mut grids = Vec::new();
    for (i, br) in m.branches.iter().enumerate() {
        let img = scale_image(b, &m, &input, br.size)?;
        let patches = patch_embed_branch(
            &mut b.scope(format!("patch_embed.{i}")),
            &m,
            &img,
            in_ch,
            br,
        )?;
        let d = br.dim;
        let tokens = layers::nchw_to_tokens(b, &patches, d);
        let j = i.min(1);
        let cls = b.param(
            &format!("cls_token_{j}"),
            &[1, 1, d],
            Init::TruncNormal(0.02),
        )?;
        let cls = patch_embed::expand_batch(b, &cls, &tokens, 1, d);
        let x = layers::concat(b, &[&cls, &tokens], 1);
        let n = 1 + br.grid.0 * br.grid.1;
        let pos = b.param(
            &format!("pos_embed_{j}"),
            &[1, n, d],
            Init::TruncNormal(0.02),
        )?;
        xs.push(layers::add(b, &x, &pos));
        grids.push(patches);
    }
    let nb = m.branches.len();
    let mut maps: Vec<Vec<Value>> = vec![Vec::new(); nb];
    for (i, block_cfg) in m.depth.iter().enumerate() {
        let mut blocks = b.scope("blocks");
        xs = multi_scale_block(&mut blocks.scope(i), &m, block_cfg, &xs)?;
        for (k, x) in xs.iter().enumerate() {
            maps[k].push(token_map(&mut blocks, x, 1, &grids[k]));
        }
    }
    // feature_info is branch-major: index b * num_blocks + i.
    for (k, br) in m.branches.iter().enumerate() {
        for (i, map) in maps[k].iter().enumerate() {
            b.feature(map, br.dim, br.reduction, &format!("blocks.{i}"));
        }
    }
    let nblocks = m.depth.len() as i64;
    let defaults: Vec<i64> = (1..=nb as i64).map(|k| k * nblocks - 1).collect();
    b.default_out_indices(&defaults);

    let mut pooled = Vec::new();
    for (k, br) in m.branches.iter().enumerate() {
        let x = m
            .norm
            .apply_last(&mut b.scope(format!("norm.{k}")), &xs[k], br.dim)?;
        pooled.push(if m.avg_pool {
            let t = layers::slice(b, &x, 1, 1, i64::MAX);
            let axes = b.ints(&[1]);
            b.op(
                "ReduceMean",
                &[&t, &axes],
                vec![("keepdims", crate::graph::Attr::Int(0))],
            )
        } else {
            layers::token_at(b, &x, 0)
        });
    }
    let classes = cfg.num_classes;
    if b.output() == OutputKind::Features || classes == 0 {
        let refs: Vec<&Value> = pooled.iter().collect();
        let width: usize = m.branches.iter().map(|br| br.dim).sum();
        let x = if nb == 1 {
            pooled[0].clone()
        } else {
            layers::concat(b, &refs, 1)
        };
        return Ok((x, width));
    }
    let mut logits = Vec::new();
    for (k, br) in m.branches.iter().enumerate() {
        let mut heads = b.scope("head");
        let s = &mut heads.scope(k);
        logits.push(linear_2d(
            s,
            &pooled[k],
            br.dim,
            classes,
            true,
            Init::TruncNormal(0.02),
        )?);
    }
    // torch.mean over the stacked heads.
    let y = if nb == 1 {
        logits[0].clone()
    } else {
        layers::mean2(b, &logits[0], &logits[1])
    };
    Ok((y, classes))
}

/// `scale_image`: the input at `img` rescaled (or centre-cropped with `crop_scale`) to `ss`.
fn scale_image(b: &mut Builder, m: &CrossVit, x: &Value, ss: (usize, usize)) -> Result<Value> {
    let (h, w) = m.img;
    if ss == (h, w) {
        return Ok(x.clone());
    }
    let y = if m.crop_scale && ss.0 <= h && ss.1 <= w {
        let cu = py_round((h - ss.0) as f64 / 2.0) as i64;
        let cl = py_round((w - ss.1) as f64 / 2.0) as i64;
        let y = layers::slice(b, x, 2, cu, cu + ss.0 as i64);
        layers::slice(b, &y, 3, cl, cl + ss.1 as i64)
    } else {
        // F.interpolate(size=ss, mode='bicubic', align_corners=False): rows of the height
        // matrix times the image times the transposed width matrix.
        let r = Resample {
            mode: Interp::Bicubic,
            antialias: false,
            align_corners: false,
        };
        let flat =
            |m: Vec<Vec<f64>>| -> Vec<f32> { m.into_iter().flatten().map(|v| v as f32).collect() };
        let mh = flat(interp_matrix(h, ss.0, &r));
        let mw = interp_matrix(w, ss.1, &r);
        // [W, W'] for x @ mw^T.
        let mut mwt = vec![0.0f32; w * ss.1];
        for (o, row) in mw.iter().enumerate() {
            for (i, v) in row.iter().enumerate() {
                mwt[i * ss.1 + o] = *v as f32;
            }
        }
        let mwt = b.const_f32(mwt, &[w as i64, ss.1 as i64]);
        let mh = b.const_f32(mh, &[ss.0 as i64, h as i64]);
        let y = b.op("MatMul", &[x, &mwt], vec![]);
        b.op("MatMul", &[&mh, &y], vec![])
    };
    // The size change as a window step, so feature maps know their size (the input is fixed
    // and the chain applies to both axes alike).
    if h - ss.0.min(h) == w - ss.1.min(w) && ss.0 <= h {
        let step = Step::Window {
            k: h - ss.0 + 1,
            stride: 1,
            pad: 0,
            dilation: 1,
            ceil: false,
        };
        b.assign_spatial(&y, Spatial::input().then(step));
    } else if b.output() == OutputKind::FeatureMaps {
        return Err(Error::unsupported(
            "CrossViT feature maps of a branch rescaled unevenly in height and width (or enlarged)",
        ));
    }
    Ok(y)
}

/// `PatchEmbed.proj`: one conv with kernel = stride = patch, or the multi-conv stem (`proj.0`,
/// `proj.2`, `proj.4` with ReLUs between); NCHW out.
fn patch_embed_branch(
    b: &mut Builder,
    m: &CrossVit,
    x: &Value,
    in_ch: usize,
    br: &Branch,
) -> Result<Value> {
    let mut s = b.scope("proj");
    let d = br.dim;
    let conv = |i, o, k, st, p| {
        Conv::new(i, o, k)
            .stride(st)
            .pad(Pad::Sym(p))
            .bias(true)
            .init(Init::DefaultUniform)
    };
    if !m.multi_conv {
        let c = conv(in_ch, d, br.patch, br.patch, 0);
        return conv2d(&mut s, x, c);
    }
    let (k2, s2, p2, s3) = if br.patch == 12 {
        (3, 3, 0, 1)
    } else {
        (3, 2, 1, 2)
    };
    let y = conv2d(&mut s.scope(0), x, conv(in_ch, d / 4, 7, 4, 3))?;
    let y = layers::act(&mut s, "relu", &y)?;
    let y = conv2d(&mut s.scope(2), &y, conv(d / 4, d / 2, k2, s2, p2))?;
    let y = layers::act(&mut s, "relu", &y)?;
    let y = conv2d(&mut s.scope(4), &y, conv(d / 2, d, 3, s3, 1))?;
    Ok(y)
}

/// timm's ViT `Block`: `x + attn(norm1(x))`, `x + mlp(norm2(x))`.
fn vit_block(b: &mut Builder, m: &CrossVit, br: &Branch, x: &Value) -> Result<Value> {
    let d = br.dim;
    let h = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let mut c = AttnCfg::new(d, br.heads);
    c.qkv_bias = m.qkv_bias;
    let y = attention(&mut b.scope("attn"), &h, &c, &Hooks::default())?;
    let x = layers::add(b, x, &y);
    let h = m.norm.apply_last(&mut b.scope("norm2"), &x, d)?;
    let hidden = (d as f64 * br.mlp_ratio) as usize;
    let y = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(d, hidden, "gelu"))?;
    Ok(layers::add(b, &x, &y))
}

/// `norm`, GELU, `Linear` (modules `0`, `2` of the current scope's Sequential) from `din` to
/// `dout`.
fn proj(b: &mut Builder, m: &CrossVit, x: &Value, din: usize, dout: usize) -> Result<Value> {
    let y = m.norm.apply_last(&mut b.scope(0), x, din)?;
    let y = layers::act(b, "gelu", &y)?;
    linear(
        &mut b.scope(2),
        &y,
        din,
        dout,
        true,
        Init::TruncNormal(0.02),
    )
}

/// `CrossAttentionBlock`: `x[:, :1] + CrossAttention(norm1(x))`, the class token's query
/// against every token.
fn cross_attention_block(
    b: &mut Builder,
    m: &CrossVit,
    x: &Value,
    d: usize,
    heads: usize,
) -> Result<Value> {
    let init = Init::TruncNormal(0.02);
    let u = m.norm.apply_last(&mut b.scope("norm1"), x, d)?;
    let mut a = b.scope("attn");
    let u0 = layers::slice(&mut a, &u, 1, 0, 1);
    let q = linear(&mut a.scope("wq"), &u0, d, d, m.qkv_bias, init)?;
    let k = linear(&mut a.scope("wk"), &u, d, d, m.qkv_bias, init)?;
    let v = linear(&mut a.scope("wv"), &u, d, d, m.qkv_bias, init)?;
    let y = attention_core(
        &mut a,
        &q,
        &k,
        &v,
        &AttnCfg::new(d, heads),
        &Hooks::default(),
    )?;
    let y = linear(&mut a.scope("proj"), &y, d, d, true, init)?;
    drop(a);
    let x0 = layers::slice(b, x, 1, 0, 1);
    Ok(layers::add(b, &x0, &y))
}

/// `MultiScaleBlock`: each branch's ViT blocks, then for every branch its class token projected
/// to the next branch's width, fused with that branch's patch tokens by cross attention, and
/// projected back.
fn multi_scale_block(
    b: &mut Builder,
    m: &CrossVit,
    block_cfg: &[usize],
    xs: &[Value],
) -> Result<Vec<Value>> {
    let nb = m.branches.len();
    let mut outs_b = Vec::new();
    for (k, br) in m.branches.iter().enumerate() {
        let mut x = xs[k].clone();
        for j in 0..block_cfg[k] {
            let mut blocks = b.scope("blocks");
            let mut bk = blocks.scope(k);
            x = vit_block(&mut bk.scope(j), m, br, &x)?;
        }
        outs_b.push(x);
    }
    let fusion_depth = block_cfg[nb];
    let mut outs = Vec::new();
    for k in 0..nb {
        let k1 = (k + 1) % nb;
        let (d, d1) = (m.branches[k].dim, m.branches[k1].dim);
        let cls = layers::slice(b, &outs_b[k], 1, 0, 1);
        let cls = proj(&mut b.scope(format!("projs.{k}")), m, &cls, d, d1)?;
        let other = layers::slice(b, &outs_b[k1], 1, 1, i64::MAX);
        let mut t = layers::concat(b, &[&cls, &other], 1);
        let heads = m.branches[k1].heads;
        {
            let mut f = b.scope("fusion");
            let mut fk = f.scope(k);
            if fusion_depth == 0 {
                // timm's backward-compatible layout: a single block, not a Sequential.
                let c = cross_attention_block(&mut fk, m, &t, d1, heads)?;
                t = layers::concat(&mut fk, &[&c, &other], 1);
            } else {
                for j in 0..fusion_depth {
                    let c = cross_attention_block(&mut fk.scope(j), m, &t, d1, heads)?;
                    t = layers::concat(&mut fk, &[&c, &other], 1);
                }
            }
        }
        let cls = layers::slice(b, &t, 1, 0, 1);
        let cls = proj(&mut b.scope(format!("revert_projs.{k}")), m, &cls, d1, d)?;
        let own = layers::slice(b, &outs_b[k], 1, 1, i64::MAX);
        outs.push(layers::concat(b, &[&cls, &own], 1));
    }
    Ok(outs)
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
            let m = CrossVit::resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            let width: usize = m.branches.iter().map(|b| b.dim).sum();
            assert_eq!(cfg.num_features, Some(width), "{name}");
            // 240 -> 224 and 408 -> 384 for the second branch, as timm computes.
            let [_, h, _] = cfg.pretrained_cfg.input_size;
            let small = if h == 240 { 224 } else { 384 };
            assert_eq!(m.branches[1].size, (small, small), "{name}");
            assert_eq!(m.branches[1].reduction, 17, "{name}");
        }
        assert_eq!(TABLE.names().len(), 11);
    }

    #[test]
    fn the_bicubic_rows_sum_to_one() {
        let r = Resample {
            mode: Interp::Bicubic,
            antialias: false,
            align_corners: false,
        };
        for row in interp_matrix(240, 224, &r) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}
