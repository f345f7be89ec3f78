//! DaViT (timm's `davit.py`): `davit_tiny` .. `davit_giant` and the Florence-2 towers
//! `davit_base_fl`, `davit_huge_fl`.
//!
//! A 7×7 stride-4 conv stem with a LayerNorm2d, four stages of a LayerNorm2d + stride-2 conv
//! downsample (from the second stage on) and dual attention blocks: a `SpatialBlock` (window
//! self-attention over non-overlapping windows, the map zero-padded after `norm1` to whole
//! windows and no mask, as timm does) and a `ChannelBlock` (attention across the channels of
//! each head, timm's `ChannelAttention` or the Florence-2 `ChannelAttentionV2`), each with a
//! depthwise `ConvPosEnc` before the attention and before the MLP. The head is timm's
//! `NormMlpClassifierHead` (pool, norm, fc) or, with `head_norm_first`, `norm_pre` + pool + fc.
//!
//! Any input size, as timm's: the zero padding to whole windows and `ChannelAttentionV2`'s
//! `N^-0.5` scale are computed in the graph from the map's shape.
//!
//! Feature maps: every stage (`stages.<i>`, NCHW, no final norm), as timm's `features_only`.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::heads::{classifier_head, norm_mlp_head};
use crate::graph::layers::mlp::{linear, mlp, MlpCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::{
    act, add, concat, conv2d, mul, nchw_to_nhwc, nhwc_to_nchw, reshape, scale, split, transpose,
    Conv, Norm, Pad,
};
use crate::graph::spatial::{Spatial, Step};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/davit.json"));

pub const FAMILY: Family = Family {
    name: "davit",
    examples: "davit_tiny..davit_giant, davit_base_fl, davit_huge_fl",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `DaVit.__init__`'s keyword arguments with timm's defaults.
    struct DaVitArgs {
        in_chans: usize = 3,
        depths: Vec<usize> = vec![1, 1, 3, 1],
        embed_dims: Vec<usize> = vec![96, 192, 384, 768],
        num_heads: Vec<usize> = vec![3, 6, 12, 24],
        window_size: serde_json::Value = serde_json::Value::from(7),
        mlp_ratio: f64 = 4.0,
        qkv_bias: bool = true,
        norm_layer: String = "layernorm2d".into(),
        norm_layer_cl: String = "layernorm".into(),
        norm_eps: f32 = 1e-5,
        attn_types: Vec<String> = vec!["spatial".into(), "channel".into()],
        ffn: bool = true,
        cpe_act: bool = false,
        down_kernel_size: usize = 2,
        channel_attn_v2: bool = false,
        named_blocks: bool = false,
        head_norm_first: bool = false,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Every Linear: timm's `_init_weights`; convs keep PyTorch's default.
const INIT: Init = Init::TruncNormal(0.02);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attn {
    Spatial,
    Channel,
}

/// The resolved architecture.
#[derive(Debug, Clone)]
struct Cfg {
    depths: Vec<usize>,
    dims: Vec<usize>,
    heads: Vec<usize>,
    window: (usize, usize),
    mlp_ratio: f64,
    qkv_bias: bool,
    /// `norm_layer` (stem, downsample, head) and `norm_layer_cl` (the blocks' tokens).
    norm: Norm,
    norm_cl: Norm,
    attn_types: Vec<Attn>,
    ffn: bool,
    cpe_act: bool,
    down_k: usize,
    v2: bool,
    named: bool,
    head_norm_first: bool,
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    // Stem: timm's F.pad to a multiple of 4 at the bottom / right only adds zeros where the 7×7
    // stride-4 conv's own pad of 3 already reads zeros: the same ⌈H/4⌉ map, the same values.
    let mut x = {
        let mut s = b.scope("stem");
        let conv = Conv::new(in_chans, c.dims[0], 7)
            .stride(4)
            .pad(Pad::Sym(3))
            .bias(true)
            .init(Init::DefaultUniform);
        let y = conv2d(&mut s.scope("conv"), &input, conv)?;
        let y = c.norm.apply_2d(&mut s.scope("norm"), &y, c.dims[0])?;
        y
    };
    let (h, w) = b.nominal_hw();
    let mut hw = (h.div_ceil(4), w.div_ceil(4));
    let mut spatial = Spatial::input().then(Step::Same { stride: 4 });
    let mut prev = c.dims[0];
    for i in 0..c.depths.len() {
        let mut stages = b.scope("stages");
        let s = &mut stages.scope(i);
        let dim = c.dims[i];
        if i > 0 {
            x = downsample(&mut s.scope("downsample"), &x, prev, dim, &c)?;
            hw = (hw.0.div_ceil(2), hw.1.div_ceil(2));
            spatial = spatial.then(Step::Same { stride: 2 });
        }
        s.activation(&[4 * dim, hw.0, hw.1])?;
        for j in 0..c.depths[i] {
            let mut blocks = s.scope("blocks");
            let bs = &mut blocks.scope(j);
            for (k, &t) in c.attn_types.iter().enumerate() {
                let name = match (c.named, t) {
                    (true, Attn::Spatial) => "spatial_block".to_string(),
                    (true, Attn::Channel) => "channel_block".to_string(),
                    (false, _) => k.to_string(),
                };
                let blk = &mut bs.scope(name);
                x = match t {
                    Attn::Spatial => spatial_block(blk, &x, dim, c.heads[i], &c)?,
                    Attn::Channel => channel_block(blk, &x, dim, c.heads[i], &c)?,
                };
            }
        }
        s.assign_spatial(&x, spatial.clone());
        let module = s.path().to_string();
        s.feature(&x, dim, 4 << i, &module);
        prev = dim;
    }
    let features = b.output() == OutputKind::Features;
    if c.head_norm_first {
        let x = c.norm.apply_2d(&mut b.scope("norm_pre"), &x, prev)?;
        classifier_head(
            &mut b.scope("head"),
            &x,
            prev,
            c.pool,
            cfg.num_classes,
            features,
        )
    } else {
        norm_mlp_head(
            &mut b.scope("head"),
            &x,
            prev,
            c.pool,
            &c.norm,
            None,
            "tanh",
            cfg.num_classes,
            features,
        )
    }
}

/// `Downsample`: `norm`, then the stride-2 `conv`. timm pads the map for the 2×2 kernel to even
/// sizes at the bottom / right; one zero row and column there give the same ⌈H/2⌉ map at any
/// size. An odd kernel pads `k // 2` around.
fn downsample(b: &mut Builder, x: &Value, in_chs: usize, out_chs: usize, c: &Cfg) -> Result<Value> {
    let k = c.down_k;
    let y = c.norm.apply_2d(&mut b.scope("norm"), x, in_chs)?;
    let pad = if k == 2 {
        Pad::Explicit(0, 0, 1, 1)
    } else {
        Pad::Sym(k / 2)
    };
    let conv = Conv::new(in_chs, out_chs, k)
        .stride(2)
        .pad(pad)
        .bias(true)
        .init(Init::DefaultUniform);
    conv2d(&mut b.scope("conv"), &y, conv)
}

/// `ConvPosEnc`: `x + act(proj(x))`, `proj` a 3×3 depthwise conv (GELU with `cpe_act`).
fn conv_pos_enc(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let conv = Conv::new(dim, dim, 3)
        .depthwise()
        .bias(true)
        .init(Init::DefaultUniform);
    let y = conv2d(&mut b.scope("proj"), x, conv)?;
    let y = if c.cpe_act { act(b, "gelu", &y)? } else { y };
    Ok(add(b, x, &y))
}

/// Axis `axis` of `x`'s shape, as a one-element int64 tensor.
fn dim_of(b: &mut Builder, x: &Value, axis: i64) -> Value {
    b.op(
        "Shape",
        &[x],
        vec![("start", Attr::Int(axis)), ("end", Attr::Int(axis + 1))],
    )
}

/// The part both blocks share after their attention: `cpe2`, then (with `ffn`)
/// `x + mlp(norm2(x))` channels-last; NCHW in and out.
fn cpe2_and_mlp(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let x = conv_pos_enc(&mut b.scope("cpe2"), x, dim, c)?;
    if !c.ffn {
        return Ok(x);
    }
    let t = nchw_to_nhwc(b, &x);
    let hidden = match b.weight_shape("mlp.fc1.weight") {
        Some(s) if s.len() == 2 => s[0],
        _ => (dim as f64 * c.mlp_ratio) as usize,
    };
    let h = c.norm_cl.apply_last(&mut b.scope("norm2"), &t, dim)?;
    let h = mlp(&mut b.scope("mlp"), &h, &MlpCfg::new(dim, hidden, "gelu"))?;
    let t = add(b, &t, &h);
    Ok(nhwc_to_nchw(b, &t))
}

/// `SpatialBlock`: `cpe1`, window attention over `norm1`'s map zero-padded at the bottom /
/// right to whole windows (padded tokens take part, unmasked, as in timm), the crop, the
/// residual; then `cpe2` and the MLP. The padding follows the input size in the graph.
fn spatial_block(b: &mut Builder, x: &Value, dim: usize, heads: usize, c: &Cfg) -> Result<Value> {
    let x = conv_pos_enc(&mut b.scope("cpe1"), x, dim, c)?;
    let shortcut = nchw_to_nhwc(b, &x);
    let t = c
        .norm_cl
        .apply_last(&mut b.scope("norm1"), &shortcut, dim)?;
    let (wh, ww) = (c.window.0 as i64, c.window.1 as i64);
    let (h, w) = (dim_of(b, &t, 1), dim_of(b, &t, 2));
    // (win - n % win) % win, as (-n) mod win (ONNX Mod takes the divisor's sign).
    let pad_to = |b: &mut Builder, n: &Value, win: i64| {
        let neg = b.op("Neg", &[n], vec![]);
        let m = b.ints(&[win]);
        b.op("Mod", &[&neg, &m], vec![])
    };
    let (ph, pw) = (pad_to(b, &h, wh), pad_to(b, &w, ww));
    let zeros = b.ints(&[0, 0, 0, 0, 0]);
    let zero = b.ints(&[0]);
    let pads = concat(b, &[&zeros, &ph, &pw, &zero], 0);
    let t = b.op("Pad", &[&t, &pads], vec![]);
    let (hp, wp) = (add(b, &h, &ph), add(b, &w, &pw));
    let (whv, wwv) = (b.ints(&[wh]), b.ints(&[ww]));
    let nh = b.op("Div", &[&hp, &whv], vec![]);
    let nw = b.op("Div", &[&wp, &wwv], vec![]);
    let (lead, rest) = (b.ints(&[-1]), b.ints(&[ww, dim as i64]));
    // timm's window_partition: [N, Hp, Wp, C] -> [N·nW, wh·ww, C].
    let shape = concat(b, &[&lead, &nh, &whv, &nw, &rest], 0);
    let t = b.op("Reshape", &[&t, &shape], vec![]);
    let t = transpose(b, &t, &[0, 1, 3, 2, 4, 5]);
    let windows = reshape(b, &t, &[-1, wh * ww, dim as i64]);
    let mut ac = AttnCfg::new(dim, heads);
    ac.qkv_bias = c.qkv_bias;
    let y = attention(&mut b.scope("attn"), &windows, &ac, &Hooks::default())?;
    // window_reverse, then the crop to the map.
    let win = b.ints(&[wh, ww, dim as i64]);
    let shape = concat(b, &[&lead, &nh, &nw, &win], 0);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let y = transpose(b, &y, &[0, 1, 3, 2, 4, 5]);
    let ch = b.ints(&[dim as i64]);
    let shape = concat(b, &[&lead, &hp, &wp, &ch], 0);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let starts = b.ints(&[0, 0]);
    let ends = concat(b, &[&h, &w], 0);
    let axes = b.ints(&[1, 2]);
    let y = b.op("Slice", &[&y, &starts, &ends, &axes], vec![]);
    let x = add(b, &shortcut, &y);
    let x = nhwc_to_nchw(b, &x);
    cpe2_and_mlp(b, &x, dim, c)
}

/// `ChannelBlock`: `cpe1`, `x + attn(norm1(x))` with channel attention over the map's tokens,
/// `cpe2`, the MLP.
fn channel_block(b: &mut Builder, x: &Value, dim: usize, heads: usize, c: &Cfg) -> Result<Value> {
    let x = conv_pos_enc(&mut b.scope("cpe1"), x, dim, c)?;
    let t = nchw_to_nhwc(b, &x);
    let h = c.norm_cl.apply_last(&mut b.scope("norm1"), &t, dim)?;
    let shape = b.op("Shape", &[&h], vec![]);
    let tokens = reshape(b, &h, &[0, -1, dim as i64]);
    let y = channel_attention(&mut b.scope("attn"), &tokens, dim, heads, c)?;
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    let t = add(b, &t, &y);
    let x = nhwc_to_nchw(b, &t);
    cpe2_and_mlp(b, &x, dim, c)
}

/// `ChannelAttention` / `ChannelAttentionV2` on `[N, L, C]`: per head, a `hd×hd` softmax over
/// channels applied to the third operand. v1: `softmax((k·s)ᵀ v) qᵀ` with `s = hd^-0.5`; v2:
/// `softmax((q·s)ᵀ k) vᵀ` with `s = L^-0.5` (`dynamic_scale`, from the input's token count).
fn channel_attention(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    heads: usize,
    c: &Cfg,
) -> Result<Value> {
    let hd = dim / heads;
    let qkv = linear(&mut b.scope("qkv"), x, dim, 3 * dim, c.qkv_bias, INIT)?;
    let parts = split(b, &qkv, -1, &[dim; 3]);
    // [N, L, C] -> [N, H, L, hd]
    let heads_view = |b: &mut Builder, t: &Value| {
        let t = reshape(b, t, &[0, 0, heads as i64, hd as i64]);
        transpose(b, &t, &[0, 2, 1, 3])
    };
    let (q, k, v) = (
        heads_view(b, &parts[0]),
        heads_view(b, &parts[1]),
        heads_view(b, &parts[2]),
    );
    let (first, second, third) = if c.v2 { (q, k, v) } else { (k, v, q) };
    let first = if c.v2 {
        let n = dim_of(b, x, 1);
        let n = b.op("Cast", &[&n], vec![("to", Attr::Int(1))]);
        let e = b.scalar(-0.5);
        let s = b.op("Pow", &[&n, &e], vec![]);
        mul(b, &first, &s)
    } else {
        scale(b, &first, (hd as f32).powf(-0.5))
    };
    let ft = transpose(b, &first, &[0, 1, 3, 2]);
    let logits = b.op("MatMul", &[&ft, &second], vec![]);
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let tt = transpose(b, &third, &[0, 1, 3, 2]);
    // [N, H, hd, L] -> [N, L, H, hd] -> [N, L, C]
    let y = b.op("MatMul", &[&p, &tt], vec![]);
    let y = transpose(b, &y, &[0, 3, 1, 2]);
    let y = reshape(b, &y, &[0, 0, dim as i64]);
    linear(&mut b.scope("proj"), &y, dim, dim, true, INIT)
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a DaViT variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = DaVitArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let norm = match v.norm_layer.as_str() {
        "layernorm2d" => Norm::Layer { eps: v.norm_eps },
        _ => {
            return Err(a.unsupported(
                "norm_layer",
                "the native DaViT builds timm's default layernorm2d",
            ))
        }
    };
    let norm_cl = match v.norm_layer_cl.as_str() {
        "layernorm" => Norm::Layer { eps: v.norm_eps },
        _ => {
            return Err(a.unsupported(
                "norm_layer_cl",
                "the native DaViT builds timm's default layernorm",
            ))
        }
    };
    let mut attn_types = Vec::new();
    for t in &v.attn_types {
        attn_types.push(match t.as_str() {
            "spatial" => Attn::Spatial,
            "channel" => Attn::Channel,
            // timm's DaVitStage silently builds nothing for another name.
            _ => continue,
        });
    }
    let window = crate::graph::layers::window::int_pair(&v.window_size)
        .ok_or_else(|| a.unsupported("window_size", "expected a positive int or [h, w]"))?;
    let pool_name =
        (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", String::as_str);
    let pool = PoolKind::from_timm(pool_name)?;
    let mut c = Cfg {
        depths: v.depths,
        dims: v.embed_dims,
        heads: v.num_heads,
        window,
        mlp_ratio: v.mlp_ratio,
        qkv_bias: v.qkv_bias,
        norm,
        norm_cl,
        attn_types,
        ffn: v.ffn,
        cpe_act: v.cpe_act,
        down_k: v.down_kernel_size,
        v2: v.channel_attn_v2,
        named: v.named_blocks,
        head_norm_first: v.head_norm_first,
        pool,
    };
    if b.weights().is_some() {
        read_structure(b, &a, &mut c);
    }
    let n = c.depths.len();
    if n == 0 || n > 8 || c.dims.len() != n || c.heads.len() != n {
        return Err(Error::invalid_model(format!(
            "DaViT depths {:?}, embed_dims {:?} and num_heads {:?} must have one entry per stage (1..=8)",
            c.depths, c.dims, c.heads
        )));
    }
    for i in 0..n {
        if c.heads[i] == 0 || c.dims[i] == 0 || !c.dims[i].is_multiple_of(c.heads[i]) {
            return Err(Error::invalid_model(format!(
                "DaViT stage {i}: embed_dim {} is not a positive multiple of {} heads",
                c.dims[i], c.heads[i]
            )));
        }
    }
    if c.down_k == 0 || (c.down_k.is_multiple_of(2) && c.down_k != 2) {
        return Err(a.unsupported(
            "down_kernel_size",
            "the native DaViT builds odd kernels and timm's default 2",
        ));
    }
    if !c.ffn && c.attn_types.contains(&Attn::Spatial) {
        // SpatialBlock(ffn=False) drops its drop_path1 and cannot run in timm.
        return Err(a.unsupported("ffn", "timm's SpatialBlock fails in forward with ffn=False"));
    }
    if c.named
        && c.attn_types.len() > 1
        && c.attn_types.iter().skip(1).any(|t| *t == c.attn_types[0])
    {
        return Err(a.unsupported(
            "attn_types",
            "named_blocks with a repeated attention type (timm's OrderedDict keeps one)",
        ));
    }
    if c.pool == PoolKind::None || (c.pool == PoolKind::CatAvgMax && !c.head_norm_first) {
        return Err(Error::unsupported(format!(
            "global_pool `{pool_name}` is not supported by the native DaViT (avg, max, avgmax{})",
            if c.head_norm_first { ", catavgmax" } else { "" }
        )));
    }
    Ok(c)
}

/// Reads what the weights determine (for folders whose `model_args` were lost); an argument
/// config.json sets explicitly still wins, so a disagreeing file fails on that tensor.
fn read_structure(b: &mut Builder, a: &Args, c: &mut Cfg) {
    let d0 = b.weight_shape("stem.conv.weight").map(|w| w[0]);
    if !a.explicit("head_norm_first") {
        c.head_norm_first = b.has_weight("norm_pre.weight");
    }
    let st = &mut b.scope("stages");
    let n = (0..).take_while(|&i| st.has_module(&i.to_string())).count();
    if n == 0 {
        return;
    }
    if !a.explicit("named_blocks") {
        c.named =
            st.has_module("0.blocks.0.spatial_block") || st.has_module("0.blocks.0.channel_block");
    }
    if !a.explicit("depths") {
        c.depths = (0..n)
            .map(|i| {
                (0..)
                    .take_while(|&j| st.has_module(&format!("{i}.blocks.{j}")))
                    .count()
            })
            .collect();
    }
    if !a.explicit("embed_dims") {
        let dims: Option<Vec<usize>> = (0..n)
            .map(|i| match i {
                0 => d0,
                _ => st
                    .weight_shape(&format!("{i}.downsample.conv.weight"))
                    .map(|w| w[0]),
            })
            .collect();
        if let Some(d) = dims {
            c.dims = d;
        }
    }
    if !a.explicit("down_kernel_size") {
        if let Some(w) = st.weight_shape("1.downsample.conv.weight") {
            c.down_k = w[2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 8);
        for arch in TABLE.names() {
            assert!((FAMILY.matches)(arch), "{arch} is not matched");
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
