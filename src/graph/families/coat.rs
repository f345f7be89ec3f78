//! CoaT (timm's `coat.py`): `coat_tiny`, `_mini`, `_small` (serial and parallel blocks) and
//! `coat_lite_*` (serial blocks only).
//!
//! Four scales, each a patch embedding (conv + LayerNorm), a class token and serial blocks: a
//! depthwise conv position encoding (`cpe`, shared by the scale's blocks), factorized attention
//! (`softmax(K)ᵀV` taken by Q) plus the conv relative position encoding (`crpe`: depthwise convs of
//! V per head group, times Q), and an MLP. CoaT's parallel blocks then run scales 2–4 together,
//! exchanging bilinearly resampled attention outputs; its head aggregates the three class tokens
//! with a Conv1d, CoaT-Lite's takes the last scale's.
//!
//! Shared modules (`cpe<i>`, `crpe<i>`, the parallel blocks' `mlp2` = `mlp3` = `mlp4`) appear in
//! timm's state dict under every name they have; one name is read, the others are marked used.
//! Widths, depths, MLP widths and crpe windows are read from the weights when there are weights.
//! Feature maps: the four scales without their class token (`serial_blocks1`, then
//! `parallel_blocks` for CoaT, `serial_blocks2..4` for CoaT-Lite), before the final norms.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{linear, linear_2d, mlp, MlpCfg};
use crate::graph::layers::patch_embed::{expand_batch, token_map};
use crate::graph::layers::{
    self, add, concat, conv2d, layer_norm, reduce_mean, reshape, scale, slice, split, transpose,
    Conv, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/coat.json"));

pub const FAMILY: Family = Family {
    name: "coat",
    examples: "coat_tiny, coat_mini, coat_small, coat_lite_tiny/mini/small/medium(_384)",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

timm_args! {
    /// `CoaT.__init__`'s keyword arguments with timm's defaults. `img_size` only sizes timm's
    /// strict patch-embedding check (the graph has no position table and is built at the
    /// requested input size); `out_features` matters only with `return_interm_layers`.
    #[allow(dead_code)]
    struct CoatArgs {
        img_size: Json = Json::from(224),
        patch_size: usize = 16,
        in_chans: usize = 3,
        embed_dims: Vec<usize> = vec![64, 128, 320, 512],
        serial_depths: Vec<usize> = vec![3, 4, 6, 3],
        parallel_depth: usize = 0,
        num_heads: usize = 8,
        mlp_ratios: Vec<f64> = vec![4.0, 4.0, 4.0, 4.0],
        qkv_bias: bool = true,
        return_interm_layers: bool = false,
        out_features: Option<Json> = None,
        crpe_window: Option<Json> = None,
        global_pool: String = "token".into(),
    }
}

/// timm's `LayerNorm` (the blocks' and final norms) and `nn.LayerNorm` (the patch embeddings').
const NORM_EPS: f32 = 1e-6;
const EMBED_NORM_EPS: f32 = 1e-5;
/// timm's `_init_weights`: Linear trunc_normal(0.02).
const INIT: Init = Init::TruncNormal(0.02);

/// One scale: width, serial depth, MLP width, crpe (window, head split) pairs.
struct Scale {
    dim: usize,
    depth: usize,
    hidden: usize,
    windows: Vec<(usize, usize)>,
}

struct Coat {
    patch: usize,
    scales: Vec<Scale>,
    parallel_depth: usize,
    parallel_hidden: usize,
    heads: usize,
    qkv_bias: bool,
    avg: bool,
}

/// One scale's running state: tokens `[N, 1 + H·W, C]`, the grid size, and the patch conv's
/// output (its shape and spatial size give the maps).
struct Tokens {
    x: Value,
    hw: (usize, usize),
    grid: Value,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let m = resolve(b, cfg)?;
    let (h, w) = b.image_size();
    let mut input = b.input();
    let mut in_ch = cfg.pretrained_cfg.input_size[0];
    let mut hw = (h, w);
    let mut patch = m.patch;
    let mut xs: Vec<Tokens> = Vec::with_capacity(4);
    for (i, sc) in m.scales.iter().enumerate() {
        let n = i + 1;
        hw = (hw.0 / patch, hw.1 / patch);
        if hw.0 == 0 || hw.1 == 0 {
            return Err(Error::invalid_argument(
                "the input is too small for this CoaT model: a scale's grid would be empty",
            ));
        }
        let (tokens, grid) = {
            let mut s = b.scope(format!("patch_embed{n}"));
            let c = Conv::new(in_ch, sc.dim, patch)
                .stride(patch)
                .pad(Pad::Sym(0))
                .bias(true)
                .init(Init::DefaultUniform);
            let grid = conv2d(&mut s.scope("proj"), &input, c)?;
            let t = layers::nchw_to_tokens(&mut s, &grid, sc.dim);
            let t = layer_norm(&mut s.scope("norm"), &t, sc.dim, EMBED_NORM_EPS)?;
            (t, grid)
        };
        b.activation(&[sc.dim, hw.0 * hw.1 + 1])?;
        let cls = b.param(
            &format!("cls_token{n}"),
            &[1, 1, sc.dim],
            Init::TruncNormal(0.02),
        )?;
        let cls = expand_batch(b, &cls, &tokens, 1, sc.dim);
        let mut x = concat(b, &[&cls, &tokens], 1);
        let cpe = shared(
            b,
            &format!("cpe{n}"),
            &format!("serial_blocks{n}"),
            "cpe",
            sc.depth,
        );
        let crpe = shared(
            b,
            &format!("crpe{n}"),
            &format!("serial_blocks{n}"),
            "factoratt_crpe.crpe",
            sc.depth,
        );
        for j in 0..sc.depth {
            let blk = format!("serial_blocks{n}.{j}");
            x = conv_pos_enc(&mut b.scope(&cpe), &x, sc.dim, hw)?;
            let y = layer_norm(&mut b.scope(format!("{blk}.norm1")), &x, sc.dim, NORM_EPS)?;
            let y = factor_attn(b, &format!("{blk}.factoratt_crpe"), &crpe, &y, sc, hw, &m)?;
            x = add(b, &x, &y);
            let s = &mut b.scope(&blk);
            let y = layer_norm(&mut s.scope("norm2"), &x, sc.dim, NORM_EPS)?;
            let y = mlp(
                &mut s.scope("mlp"),
                &y,
                &MlpCfg::new(sc.dim, sc.hidden, "gelu"),
            )?;
            x = add(s, &x, &y);
        }
        let map = token_map(b, &x, 1, &grid);
        input = map;
        in_ch = sc.dim;
        patch = 2;
        xs.push(Tokens { x, hw, grid });
    }

    if m.parallel_depth > 0 {
        parallel_blocks(b, &mut xs, &m)?;
    }
    for (i, t) in xs.iter().enumerate() {
        let map = token_map(b, &t.x, 1, &t.grid);
        let module = if i > 0 && m.parallel_depth > 0 {
            "parallel_blocks".to_string()
        } else {
            format!("serial_blocks{}", i + 1)
        };
        b.feature(&map, m.scales[i].dim, m.patch << i, &module);
    }
    if b.output() == OutputKind::FeatureMaps {
        let last = m.scales[3].dim;
        return Ok((token_map(b, &xs[3].x, 1, &xs[3].grid), last));
    }

    let dim = m.scales[3].dim;
    let pool = |b: &mut Builder, x: &Value| -> Value {
        if m.avg {
            let img = slice(b, x, 1, 1, i64::MAX);
            reduce_mean(b, &img, &[1], false)
        } else {
            let t = slice(b, x, 1, 0, 1);
            reshape(b, &t, &[0, dim as i64])
        }
    };
    let feats = if m.parallel_depth > 0 {
        // norm2..4 over scales 2-4, their pooled tokens stacked [N, 3, C], Conv1d(3 -> 1).
        let mut pooled = Vec::with_capacity(3);
        for (i, t) in xs.iter().enumerate().skip(1) {
            let d = m.scales[i].dim;
            let y = layer_norm(&mut b.scope(format!("norm{}", i + 1)), &t.x, d, NORM_EPS)?;
            let p = pool(b, &y);
            pooled.push(reshape(b, &p, &[0, 1, d as i64]));
        }
        let refs: Vec<&Value> = pooled.iter().collect();
        let stacked = concat(b, &refs, 1);
        let s = &mut b.scope("aggregate");
        let wgt = s.param("weight", &[1, 3, 1], Init::DefaultUniform)?;
        let bias = s.param("bias", &[1], Init::Zeros)?;
        let y = s.op("Conv", &[&stacked, &wgt, &bias], vec![]);
        reshape(s, &y, &[0, dim as i64])
    } else {
        let y = layer_norm(&mut b.scope("norm4"), &xs[3].x, dim, NORM_EPS)?;
        pool(b, &y)
    };
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((feats, dim));
    }
    let logits = linear_2d(
        &mut b.scope("head"),
        &feats,
        dim,
        cfg.num_classes,
        true,
        INIT,
    )?;
    Ok((logits, cfg.num_classes))
}

/// The scope a shared module is read from: its top-level name (`cpe1`) when the weights hold it
/// (or there are no weights), else its first alias inside the blocks; every other alias present
/// in the weights is marked used.
fn shared(b: &mut Builder, top: &str, blocks: &str, inner: &str, depth: usize) -> String {
    let aliases: Vec<String> = std::iter::once(top.to_string())
        .chain((0..depth).map(|j| format!("{blocks}.{j}.{inner}")))
        .collect();
    let chosen = match b.weights() {
        None => top.to_string(),
        Some(_) => aliases
            .iter()
            .find(|a| b.has_module(a))
            .cloned()
            .unwrap_or_else(|| top.to_string()),
    };
    ignore_aliases(b, &aliases, &chosen);
    chosen
}

/// Marks every tensor under `aliases` other than `chosen` as used (they are `chosen`'s tensors
/// again).
fn ignore_aliases(b: &mut Builder, aliases: &[String], chosen: &str) {
    let Some(w) = b.weights() else { return };
    let names: Vec<String> = w
        .names()
        .filter(|n| {
            aliases
                .iter()
                .any(|a| a != chosen && n.starts_with(&format!("{a}.")))
        })
        .map(|n| n.to_string())
        .collect();
    for n in names {
        b.ignore_weight(&n);
    }
}

/// `[N, 1 + H·W, C]` → class token `[N, 1, C]` and the image tokens as `[N, C, H, W]`.
fn split_cls(b: &mut Builder, x: &Value, c: usize, hw: (usize, usize)) -> (Value, Value) {
    let cls = slice(b, x, 1, 0, 1);
    let img = slice(b, x, 1, 1, i64::MAX);
    let img = transpose(b, &img, &[0, 2, 1]);
    let img = reshape(b, &img, &[0, c as i64, hw.0 as i64, hw.1 as i64]);
    (cls, img)
}

/// `[N, C, H, W]` back to tokens after the class token.
fn join_cls(b: &mut Builder, cls: &Value, img: &Value, c: usize) -> Value {
    let t = reshape(b, img, &[0, c as i64, -1]);
    let t = transpose(b, &t, &[0, 2, 1]);
    concat(b, &[cls, &t], 1)
}

/// `ConvPosEnc` (`proj`, a depthwise 3×3 conv with bias) over the image tokens, plus them.
fn conv_pos_enc(b: &mut Builder, x: &Value, c: usize, hw: (usize, usize)) -> Result<Value> {
    let (cls, img) = split_cls(b, x, c, hw);
    let conv = Conv::new(c, c, 3)
        .depthwise()
        .bias(true)
        .init(Init::DefaultUniform);
    let y = conv2d(&mut b.scope("proj"), &img, conv)?;
    let y = add(b, &y, &img);
    Ok(join_cls(b, &cls, &y, c))
}

/// `FactorAttnConvRelPosEnc` (`qkv`, `proj` under `at`) with the shared `ConvRelPosEnc` under
/// `crpe`.
fn factor_attn(
    b: &mut Builder,
    at: &str,
    crpe: &str,
    x: &Value,
    sc: &Scale,
    hw: (usize, usize),
    m: &Coat,
) -> Result<Value> {
    let (c, h) = (sc.dim, m.heads);
    let ch = c / h;
    let qkv = linear(
        &mut b.scope(format!("{at}.qkv")),
        x,
        c,
        3 * c,
        m.qkv_bias,
        INIT,
    )?;
    let parts = split(b, &qkv, 2, &[c, c, c]);
    let heads = |b: &mut Builder, t: &Value| {
        let t = reshape(b, t, &[0, 0, h as i64, ch as i64]);
        transpose(b, &t, &[0, 2, 1, 3])
    };
    let (q, k, v) = (
        heads(b, &parts[0]),
        heads(b, &parts[1]),
        heads(b, &parts[2]),
    );
    let ks = b.op("Softmax", &[&k], vec![("axis", Attr::Int(2))]);
    let kt = transpose(b, &ks, &[0, 1, 3, 2]);
    let fa = b.op("MatMul", &[&kt, &v], vec![]);
    let fa = b.op("MatMul", &[&q, &fa], vec![]);
    let fa = scale(b, &fa, (ch as f32).powf(-0.5));
    let ev = conv_rel_pos_enc(&mut b.scope(crpe), &q, &v, sc, h, hw)?;
    let y = add(b, &fa, &ev);
    let y = transpose(b, &y, &[0, 2, 1, 3]);
    let y = reshape(b, &y, &[0, 0, c as i64]);
    linear(&mut b.scope(format!("{at}.proj")), &y, c, c, true, INIT)
}

/// `ConvRelPosEnc`: V's image tokens as a map, a depthwise conv per head group
/// (`conv_list.<j>`), times Q's image tokens; zero for the class token.
fn conv_rel_pos_enc(
    b: &mut Builder,
    q: &Value,
    v: &Value,
    sc: &Scale,
    heads: usize,
    hw: (usize, usize),
) -> Result<Value> {
    let ch = sc.dim / heads;
    let q_img = slice(b, q, 2, 1, i64::MAX);
    let v_img = slice(b, v, 2, 1, i64::MAX);
    let v_img = transpose(b, &v_img, &[0, 1, 3, 2]);
    let v_img = reshape(b, &v_img, &[0, sc.dim as i64, hw.0 as i64, hw.1 as i64]);
    let sizes: Vec<usize> = sc.windows.iter().map(|&(_, s)| s * ch).collect();
    let groups = split(b, &v_img, 1, &sizes);
    let mut convs = Vec::with_capacity(groups.len());
    for (j, (g, &(k, _))) in groups.iter().zip(&sc.windows).enumerate() {
        let n = sizes[j];
        let conv = Conv::new(n, n, k)
            .depthwise()
            .pad(Pad::Sym(k / 2))
            .bias(true)
            .init(Init::DefaultUniform);
        convs.push(conv2d(&mut b.scope("conv_list").scope(j), g, conv)?);
    }
    let refs: Vec<&Value> = convs.iter().collect();
    let cv = concat(b, &refs, 1);
    let cv = reshape(b, &cv, &[0, heads as i64, ch as i64, (hw.0 * hw.1) as i64]);
    let cv = transpose(b, &cv, &[0, 1, 3, 2]);
    let ev = layers::mul(b, &q_img, &cv);
    // F.pad(.., (0, 0, 1, 0)): a zero row for the class token
    let pads = b.const_i64(vec![0, 0, 1, 0, 0, 0, 0, 0], &[8]);
    Ok(b.op("Pad", &[&ev, &pads], vec![]))
}

/// `ParallelBlock.interpolate`: the image tokens resampled bilinearly by `factor`
/// (`align_corners=False`, the given scale, no antialias), the class token kept.
fn interpolate(b: &mut Builder, x: &Value, c: usize, hw: (usize, usize), factor: f32) -> Value {
    let (cls, img) = split_cls(b, x, c, hw);
    let scales = b.const_f32(vec![1.0, 1.0, factor, factor], &[4]);
    let none = b.none();
    let y = b.op(
        "Resize",
        &[&img, &none, &scales],
        vec![
            ("mode", Attr::Str("linear".into())),
            (
                "coordinate_transformation_mode",
                Attr::Str("half_pixel".into()),
            ),
        ],
    );
    join_cls(b, &cls, &y, c)
}

/// The parallel blocks over scales 2–4: the scales' `cpe` first (as `forward_features` does),
/// then attention with cross-scale exchange, then the shared MLP.
fn parallel_blocks(b: &mut Builder, xs: &mut [Tokens], m: &Coat) -> Result<()> {
    let d = m.scales[1].dim;
    let mlp_cfg = MlpCfg::new(d, m.parallel_hidden, "gelu");
    let crpes: Vec<String> = (2..=4)
        .map(|n| {
            let mut aliases = vec![format!("crpe{n}")];
            aliases.extend(
                (0..m.scales[n - 1].depth)
                    .map(|j| format!("serial_blocks{n}.{j}.factoratt_crpe.crpe")),
            );
            aliases.extend(
                (0..m.parallel_depth)
                    .map(|j| format!("parallel_blocks.{j}.factoratt_crpe{n}.crpe")),
            );
            let chosen = match b.weights() {
                None => aliases[0].clone(),
                Some(_) => aliases
                    .iter()
                    .find(|a| b.has_module(a))
                    .cloned()
                    .unwrap_or_else(|| aliases[0].clone()),
            };
            ignore_aliases(b, &aliases, &chosen);
            chosen
        })
        .collect();
    let cpes: Vec<String> = (2..=4)
        .map(|n| {
            shared(
                b,
                &format!("cpe{n}"),
                &format!("serial_blocks{n}"),
                "cpe",
                m.scales[n - 1].depth,
            )
        })
        .collect();
    for j in 0..m.parallel_depth {
        let blk = format!("parallel_blocks.{j}");
        let mlps: Vec<String> = (2..=4).map(|n| format!("{blk}.mlp{n}")).collect();
        let mlp_scope = match b.weights() {
            None => mlps[0].clone(),
            Some(_) => mlps
                .iter()
                .find(|a| b.has_module(a))
                .cloned()
                .unwrap_or_else(|| mlps[0].clone()),
        };
        ignore_aliases(b, &mlps, &mlp_scope);
        let mut cur = Vec::with_capacity(3);
        for (k, n) in (2..=4).enumerate() {
            let t = &mut xs[n - 1];
            t.x = conv_pos_enc(&mut b.scope(&cpes[k]), &t.x, d, t.hw)?;
            let y = layer_norm(&mut b.scope(format!("{blk}.norm1{n}")), &t.x, d, NORM_EPS)?;
            let at = format!("{blk}.factoratt_crpe{n}");
            cur.push(factor_attn(
                b,
                &at,
                &crpes[k],
                &y,
                &m.scales[n - 1],
                t.hw,
                m,
            )?);
        }
        let (s2, s3, s4) = (xs[1].hw, xs[2].hw, xs[3].hw);
        let up3_2 = interpolate(b, &cur[1], d, s3, 2.0);
        let up4_3 = interpolate(b, &cur[2], d, s4, 2.0);
        let up4_2 = interpolate(b, &cur[2], d, s4, 4.0);
        let down2_3 = interpolate(b, &cur[0], d, s2, 0.5);
        let down3_4 = interpolate(b, &cur[1], d, s3, 0.5);
        let down2_4 = interpolate(b, &cur[0], d, s2, 0.25);
        let sums = [
            (&cur[0], &up3_2, &up4_2),
            (&cur[1], &up4_3, &down2_3),
            (&cur[2], &down3_4, &down2_4),
        ];
        let mut merged = Vec::with_capacity(3);
        for (a, p, q) in sums {
            let s = add(b, a, p);
            merged.push(add(b, &s, q));
        }
        for (k, n) in (2..=4).enumerate() {
            let x = add(b, &xs[n - 1].x, &merged[k]);
            let y = layer_norm(&mut b.scope(format!("{blk}.norm2{n}")), &x, d, NORM_EPS)?;
            let y = mlp(&mut b.scope(&mlp_scope), &y, &mlp_cfg)?;
            xs[n - 1].x = add(b, &x, &y);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Coat> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a CoaT variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = CoatArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.return_interm_layers {
        return Err(a.unsupported(
            "return_interm_layers",
            "CoaT's detection outputs (a dict of maps) are not built natively; use output=feature_maps",
        ));
    }
    let avg = match v.global_pool.as_str() {
        "avg" => true,
        "token" => false,
        _ => return Err(a.unsupported("global_pool", "CoaT pools with 'token' or 'avg' only")),
    };
    if v.embed_dims.len() != 4 || v.serial_depths.len() != 4 || v.mlp_ratios.len() != 4 {
        return Err(Error::invalid_model(format!(
            "CoaT embed_dims {:?}, serial_depths {:?} and mlp_ratios {:?}: four scales each",
            v.embed_dims, v.serial_depths, v.mlp_ratios
        )));
    }
    let heads = v.num_heads;
    let default_windows = vec![(3, 2), (5, 3), (7, 3)];
    let windows = match &v.crpe_window {
        None | Some(Json::Null) => default_windows,
        Some(Json::Object(map)) => {
            // serde keeps JSON objects sorted by key; timm's dict order is the conv order, which
            // the weights give when there are weights.
            let mut w: Vec<(usize, usize)> = Vec::new();
            for (k, s) in map {
                match (k.parse::<usize>(), s.as_u64()) {
                    (Ok(k), Some(s)) if k % 2 == 1 && k <= 31 && s > 0 => w.push((k, s as usize)),
                    _ => {
                        return Err(a.unsupported("crpe_window", "a {odd window: head split} dict"))
                    }
                }
            }
            w.sort();
            w
        }
        Some(_) => return Err(a.unsupported("crpe_window", "a {odd window: head split} dict")),
    };
    let mut dims = v.embed_dims.clone();
    let mut depths = v.serial_depths.clone();
    let mut parallel_depth = v.parallel_depth;
    let mut hidden: Vec<usize> = dims
        .iter()
        .zip(&v.mlp_ratios)
        .map(|(&d, &r)| (d as f64 * r) as usize)
        .collect();
    let mut parallel_hidden = (dims[1] as f64 * v.mlp_ratios[1]) as usize;
    let mut qkv_bias = v.qkv_bias;
    let mut scale_windows = vec![windows.clone(); 4];
    if b.weights().is_some() {
        for i in 0..4 {
            let n = i + 1;
            if let Some(s) = b.weight_shape(&format!("patch_embed{n}.proj.weight")) {
                dims[i] = s[0];
            }
            let sb = &mut b.scope(format!("serial_blocks{n}"));
            depths[i] = (0..).take_while(|&j| sb.has_module(&j.to_string())).count();
            if let Some(s) = sb.weight_shape("0.mlp.fc1.weight") {
                hidden[i] = s[0];
            }
            if depths[i] > 0 {
                qkv_bias = sb.has_weight("0.factoratt_crpe.qkv.bias");
            }
        }
        {
            let pb = &mut b.scope("parallel_blocks");
            parallel_depth = (0..).take_while(|&j| pb.has_module(&j.to_string())).count();
            if let Some(s) = pb.weight_shape("0.mlp2.fc1.weight") {
                parallel_hidden = s[0];
            }
        }
        for (i, sw) in scale_windows.iter_mut().enumerate() {
            let n = i + 1;
            let ch = dims[i] / heads.max(1);
            let mut found = Vec::new();
            for j in 0.. {
                let key = format!("crpe{n}.conv_list.{j}.weight");
                let alt = format!("serial_blocks{n}.0.factoratt_crpe.crpe.conv_list.{j}.weight");
                let Some(s) = b.weight_shape(&key).or_else(|| b.weight_shape(&alt)) else {
                    break;
                };
                if ch == 0 || !s[0].is_multiple_of(ch) {
                    break;
                }
                found.push((s[2], s[0] / ch));
            }
            if !found.is_empty() {
                *sw = found;
            }
        }
    }
    if heads == 0 || dims.iter().any(|&d| d == 0 || !d.is_multiple_of(heads)) {
        return Err(Error::invalid_model(format!(
            "CoaT embed_dims {dims:?} must be positive multiples of num_heads {heads}"
        )));
    }
    if scale_windows
        .iter()
        .any(|w| w.iter().map(|&(_, s)| s).sum::<usize>() != heads)
    {
        return Err(Error::invalid_model(format!(
            "CoaT crpe windows {scale_windows:?}: the head splits must add up to num_heads {heads}"
        )));
    }
    if parallel_depth > 0 && !(dims[1] == dims[2] && dims[2] == dims[3]) {
        return Err(Error::invalid_model(format!(
            "CoaT parallel blocks need equal widths for scales 2-4, got {dims:?}"
        )));
    }
    if v.patch_size == 0 {
        return Err(Error::invalid_model("CoaT patch_size must be positive"));
    }
    let scales = (0..4)
        .map(|i| Scale {
            dim: dims[i],
            depth: depths[i],
            hidden: hidden[i],
            windows: scale_windows[i].clone(),
        })
        .collect();
    Ok(Coat {
        patch: v.patch_size,
        scales,
        parallel_depth,
        parallel_hidden,
        heads,
        qkv_bias,
        avg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 8);
        for arch in TABLE.names() {
            assert!(
                (FAMILY.matches)(arch),
                "{arch} is not matched by the family"
            );
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
