//! CPUBone (timm's `cpubone.py`): `cpubone_nano` .. `cpubone_b3`.
//!
//! A stride-2 ConvLayer stem with local blocks, two conv stages of (Fused)MBConv blocks, two
//! attention stages of a downsampling block and `CPUBoneBlock`s: GroupNorm1 + `ConvAttention`
//! (a strided depthwise `conv_proj`, a 1×1 `pwise` to q/k/v over the reduced grid, softmax
//! attention, an output projection, nearest or transposed-conv upsampling, cropped to the input
//! size), a GroupNorm1 MLP, and a local (Fused)MBConv, each residual. The head is a 1×1
//! ConvLayer, average pool, Linear + LayerNorm + act, and the classifier Linear. BatchNorms are
//! folded into their convs at load.
//!
//! Widths and depths are read from the weights when there are weights.
//! Feature maps: `stages.0`..`3` (timm's CPUBone has no output_stride).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{linear, linear_2d};
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::upsample::upsample_nearest;
use crate::graph::layers::{
    self, act, add, concat, conv2d, conv_bn, group_norm, layer_norm, py_round, reshape, scale,
    slice, split, transpose, Conv, Norm, Pad,
};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/cpubone.json"));

pub const FAMILY: Family = Family {
    name: "cpubone",
    examples: "cpubone_nano, cpubone_t0, cpubone_s0, cpubone_b0..b3 (_bfrobust, _dwnorm)",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `CPUBone.__init__`'s keyword arguments with timm's defaults.
    struct CpuBoneArgs {
        width_list: Vec<usize> = vec![],
        depth_list: Vec<usize> = vec![],
        in_chans: usize = 3,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
        head_widths: Vec<usize> = vec![1536, 1600],
        expand_ratio: f64 = 4.0,
        norm_layer: String = "batchnorm2d".into(),
        act_layer: String = "hardswish".into(),
        fused_conv: bool = false,
        fused_downsample: bool = false,
        attn_mlp_ratio: usize = 2,
        stem_expand_ratio: f64 = 2.0,
        downsample_expand_ratios: Option<Vec<f64>> = None,
        expand_groups: usize = 1,
        small_kernels: bool = false,
        attn_upsample: String = "transpose".into(),
        local_mbconv_norm: String = "proj".into(),
    }
}

/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;
/// `GroupNorm1` and `nn.LayerNorm`'s eps.
const GN_EPS: f32 = 1e-5;
const LN_EPS: f32 = 1e-5;
/// `CPUBoneBlock` uses MBConv rather than FusedMBConv from this width on (timm's rule).
const FUSED_MAX_WIDTH: usize = 256;

struct Cfg {
    act: String,
    expand_ratio: f64,
    fused_conv: bool,
    fused_downsample: bool,
    attn_mlp_ratio: usize,
    stem_expand_ratio: f64,
    down_ratios: Vec<f64>,
    groups: usize,
    small_kernels: bool,
    nearest: bool,
    /// (expand, depthwise, project) norms of an unfused block-local MBConv.
    local_norms: [bool; 3],
}

/// `ConvLayer`'s settings: conv, optional folded BatchNorm (`norm`), optional activation.
#[derive(Clone, Copy)]
struct Cl<'a> {
    out: usize,
    k: usize,
    stride: usize,
    groups: usize,
    bias: bool,
    norm: bool,
    act: Option<&'a str>,
}

impl<'a> Cl<'a> {
    fn new(out: usize, k: usize, norm: bool, act: Option<&'a str>) -> Self {
        Cl {
            out,
            k,
            stride: 1,
            groups: 1,
            bias: false,
            norm,
            act,
        }
    }
}

/// `ConvLayer`: `get_same_padding` (a 2×2 kernel at stride 1 is padded left / top by a
/// `ZeroPad2d`, its conv then `conv.1`); `tf_same` is the dynamic bottom / right pad
/// `ConvAttention` adds for a 2×2 strided projection of an odd-sized map.
fn conv_layer(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    l: Cl,
    tf_same: bool,
) -> Result<(Value, usize)> {
    let (pad, key) = match (l.k, l.stride) {
        _ if tf_same => (Pad::TfSame, "conv"),
        (2, 2) => (Pad::Sym(0), "conv"),
        (2, _) => (Pad::Explicit(1, 1, 0, 0), "conv.1"),
        (k, _) => (Pad::Sym(k / 2), "conv"),
    };
    let mut out = l.out;
    if let Some(s) = b.weight_shape(&format!("{key}.weight")) {
        if s.len() == 4 {
            out = s[0];
        }
    }
    let c = Conv::new(in_ch, out, l.k)
        .stride(l.stride)
        .groups(l.groups)
        .pad(pad)
        .bias(l.bias)
        .init(Init::DefaultUniform);
    if !in_ch.is_multiple_of(l.groups) || !out.is_multiple_of(l.groups) {
        return Err(Error::invalid_model(format!(
            "conv `{}`: {in_ch} -> {out} channels do not split into {} groups",
            b.key(key),
            l.groups
        )));
    }
    let y = if l.norm {
        conv_bn(b, x, key, "norm", c, BN_EPS)?
    } else {
        conv2d(&mut b.scope(key), x, c)?
    };
    let y = match l.act {
        Some(a) => act(b, a, &y)?,
        None => y,
    };
    Ok((y, out))
}

/// A local block's settings (`MBConv` or `FusedMBConv`).
struct Local<'a> {
    out: usize,
    stride: usize,
    expand_ratio: f64,
    fused: bool,
    k: usize,
    /// Conv biases and norms: (expand, depthwise, project) for MBConv, (spatial, project) in the
    /// first two for FusedMBConv.
    bias: [bool; 3],
    norm: [bool; 3],
    act: &'a str,
    groups: usize,
}

/// timm's `MBConv` (`inverted_conv`, `depth_conv`, `point_conv`) or `FusedMBConv`
/// (`spatial_conv`, `point_conv`); `mid` is `round(in · expand_ratio)`.
fn local_block(b: &mut Builder, x: &Value, in_ch: usize, l: &Local) -> Result<Value> {
    let mid = py_round(in_ch as f64 * l.expand_ratio) as usize;
    let a = Some(l.act);
    if l.fused {
        let sc = Cl {
            stride: l.stride,
            groups: l.groups,
            bias: l.bias[0],
            ..Cl::new(mid, l.k, l.norm[0], a)
        };
        let (y, mid) = conv_layer(&mut b.scope("spatial_conv"), x, in_ch, sc, false)?;
        let pc = Cl {
            bias: l.bias[1],
            ..Cl::new(l.out, 1, l.norm[1], None)
        };
        return Ok(conv_layer(&mut b.scope("point_conv"), &y, mid, pc, false)?.0);
    }
    let ic = Cl {
        groups: l.groups,
        bias: l.bias[0],
        ..Cl::new(mid, 1, l.norm[0], a)
    };
    let (y, mid) = conv_layer(&mut b.scope("inverted_conv"), x, in_ch, ic, false)?;
    let dc = Cl {
        stride: l.stride,
        groups: mid,
        bias: l.bias[1],
        ..Cl::new(mid, l.k, l.norm[1], a)
    };
    let (y, _) = conv_layer(&mut b.scope("depth_conv"), &y, mid, dc, false)?;
    let pc = Cl {
        bias: l.bias[2],
        ..Cl::new(l.out, 1, l.norm[2], None)
    };
    Ok(conv_layer(&mut b.scope("point_conv"), &y, mid, pc, false)?.0)
}

/// `CPUBone.build_local_block` (stem, conv stages, downsampling): 3×3, no conv biases; fused:
/// both convs normed; unfused: only the projection.
fn plain_local<'a>(c: &'a Cfg, out: usize, stride: usize, ratio: f64, fused: bool) -> Local<'a> {
    Local {
        out,
        stride,
        expand_ratio: ratio,
        fused,
        k: 3,
        bias: [false; 3],
        norm: if fused {
            [true, true, false]
        } else {
            [false, false, true]
        },
        act: &c.act,
        groups: c.groups,
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let (c, v) = resolve(cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let pool_name = v.global_pool.as_ref().or(cfg.global_pool.as_ref());
    let pool = PoolKind::from_timm(pool_name.map_or("avg", |s| s))?;

    // widths and depths: the arguments', then the weights'
    let (mut widths, mut depths, mut head_w) = (v.width_list, v.depth_list, v.head_widths);
    if b.weights().is_some() {
        if let Some(s) = b.weight_shape("stem.0.conv.weight") {
            widths[0] = s[0];
        }
        let stem = &mut b.scope("stem");
        depths[0] = (1..)
            .take_while(|&j| stem.has_module(&j.to_string()))
            .count();
    }
    if b.weights().is_some() {
        let st = &mut b.scope("stages");
        for i in 0..widths.len() - 1 {
            let s = &mut st.scope(i);
            if let Some(w) = s.weight_shape("0.main.point_conv.conv.weight") {
                widths[i + 1] = w[0];
            }
            let n = (0..).take_while(|&j| s.has_module(&j.to_string())).count();
            depths[i + 1] = if i >= 2 { n.saturating_sub(1) } else { n };
        }
    }
    if b.weights().is_some() {
        let h = &mut b.scope("head");
        if let Some(s) = h.weight_shape("in_conv.conv.weight") {
            head_w[0] = s[0];
        }
        if let Some(s) = h.weight_shape("pre_classifier.linear.weight") {
            head_w[1] = s[0];
        }
    }
    if widths.contains(&0) || head_w.contains(&0) {
        return Err(Error::invalid_model(format!(
            "CPUBone widths {widths:?} and head widths {head_w:?} must be positive"
        )));
    }

    let input = b.input();
    let mut x;
    let mut prev;
    {
        let s = &mut b.scope("stem");
        let l = Cl {
            stride: 2,
            ..Cl::new(widths[0], 3, true, Some(&c.act))
        };
        (x, prev) = conv_layer(&mut s.scope(0), &input, in_ch, l, false)?;
        let local = plain_local(&c, prev, 1, c.stem_expand_ratio, c.fused_conv);
        for j in 1..=depths[0] {
            let y = local_block(&mut s.scope(j).scope("main"), &x, prev, &local)?;
            x = add(s, &x, &y);
        }
    }
    for i in 0..widths.len() - 1 {
        let width = widths[i + 1];
        let depth = depths[i + 1];
        {
            let mut st = b.scope("stages");
            let s = &mut st.scope(i);
            if i < 2 {
                // conv stage: the first block strides (no shortcut), the rest are residual
                for j in 0..depth {
                    let (stride, ratio) = if j == 0 {
                        (2, c.down_ratios[i])
                    } else {
                        (1, c.expand_ratio)
                    };
                    let local = plain_local(&c, width, stride, ratio, c.fused_conv);
                    let y = local_block(&mut s.scope(j).scope("main"), &x, prev, &local)?;
                    x = if j == 0 { y } else { add(s, &x, &y) };
                    prev = width;
                }
            } else {
                let down = plain_local(&c, width, 2, c.down_ratios[i], c.fused_downsample);
                x = local_block(&mut s.scope(0).scope("main"), &x, prev, &down)?;
                prev = width;
                let att_stride = if i == 2 { 2 } else { 1 };
                for j in 1..=depth {
                    x = cpubone_block(&mut s.scope(j).scope("total"), &x, prev, att_stride, &c)?;
                }
            }
        }
        b.feature(&x, prev, 1 << (i + 2), &format!("stages.{i}"));
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    if pool != PoolKind::Avg {
        return Err(Error::unsupported(format!(
            "CPUBone with global_pool '{}': timm takes only 'avg' or '' and the native graph builds 'avg'",
            pool_name.map_or("avg", |s| s)
        )));
    }
    // ClsHead
    let h = &mut b.scope("head");
    let l = Cl::new(head_w[0], 1, true, Some(&c.act));
    let (y, w0) = conv_layer(&mut h.scope("in_conv"), &x, prev, l, false)?;
    let y = global_pool(h, &y, PoolKind::Avg);
    let y = {
        let p = &mut h.scope("pre_classifier");
        let y = linear(
            &mut p.scope("linear"),
            &y,
            w0,
            head_w[1],
            false,
            Init::DefaultUniform,
        )?;
        let y = layer_norm(&mut p.scope("norm"), &y, head_w[1], LN_EPS)?;
        act(p, &c.act, &y)?
    };
    if h.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((y, head_w[1]));
    }
    let sc = &mut h.scope("classifier.linear");
    let logits = linear_2d(
        sc,
        &y,
        head_w[1],
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}

/// `CPUBoneBlock.total`: `0.0` attention and `0.1` MLP (each after a GroupNorm1, residual),
/// then `1` the local block (residual).
fn cpubone_block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    att_stride: usize,
    c: &Cfg,
) -> Result<Value> {
    let x = {
        let s = &mut b.scope("0.0.main");
        let y = group_norm(&mut s.scope(0), x, 1, dim, GN_EPS)?;
        let y = conv_attention(&mut s.scope(1), &y, dim, att_stride, c)?;
        add(s, x, &y)
    };
    let x = {
        let s = &mut b.scope("0.1.main");
        let hidden = dim * c.attn_mlp_ratio;
        let y = group_norm(&mut s.scope(0), &x, 1, dim, GN_EPS)?;
        let pw = |i, o| Conv::new(i, o, 1).bias(true).init(Init::DefaultUniform);
        let y = conv2d(&mut s.scope(1), &y, pw(dim, hidden))?;
        let y = act(s, "gelu", &y)?;
        let y = conv2d(&mut s.scope(3), &y, pw(hidden, dim))?;
        add(s, &x, &y)
    };
    let s = &mut b.scope("1.main");
    let k = if c.small_kernels { 2 } else { 3 };
    let fused = match s.weights() {
        Some(_) => s.has_module("spatial_conv"),
        None => c.fused_conv && dim < FUSED_MAX_WIDTH,
    };
    let local = if fused {
        Local {
            out: dim,
            stride: 1,
            expand_ratio: c.expand_ratio,
            fused: true,
            k,
            bias: [true, false, false],
            norm: [true, true, false],
            act: &c.act,
            groups: c.groups,
        }
    } else {
        Local {
            out: dim,
            stride: 1,
            expand_ratio: c.expand_ratio,
            fused: false,
            k,
            bias: c.local_norms.map(|n| !n),
            norm: c.local_norms,
            act: &c.act,
            groups: c.groups,
        }
    };
    let y = local_block(s, &x, dim, &local)?;
    Ok(add(s, &x, &y))
}

/// timm's `ConvAttention(head_dim_mul=0.5)`: attention over the `att_stride`-reduced grid,
/// upsampled back and cropped to the input's size.
fn conv_attention(b: &mut Builder, x: &Value, dim: usize, stride: usize, c: &Cfg) -> Result<Value> {
    let heads = ((dim as f64 * 0.5 / 30.0).floor() as usize).max(1);
    let hd = ((dim / heads) as f64 * 0.5) as usize;
    let inner = hd * heads;
    if hd == 0 {
        return Err(Error::invalid_model(format!(
            "CPUBone attention over {dim} channels has an empty head"
        )));
    }
    let fused = c.fused_conv;
    let k = if c.small_kernels {
        2
    } else if stride > 1 {
        5
    } else {
        3
    };
    let l = Cl {
        stride,
        groups: dim,
        ..Cl::new(dim, k, true, None)
    };
    let tf_same = c.small_kernels && stride > 1;
    let (y, _) = conv_layer(&mut b.scope("conv_proj"), x, dim, l, tf_same)?;
    let pw = Conv::new(dim, 3 * inner, 1).init(Init::DefaultUniform);
    let qkv = conv2d(&mut b.scope("pwise"), &y, pw)?;
    // [N, heads, 3·hd, L] -> [N, heads, L, 3·hd] -> q, k, v
    let t = reshape(b, &qkv, &[0, heads as i64, 3 * hd as i64, -1]);
    let t = transpose(b, &t, &[0, 1, 3, 2]);
    let qkv = split(b, &t, 3, &[hd, hd, hd]);
    let q = scale(b, &qkv[0], (hd as f32).powf(-0.5));
    let kt = transpose(b, &qkv[1], &[0, 1, 3, 2]);
    let logits = b.op("MatMul", &[&q, &kt], vec![]);
    let p = b.op("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
    let o = b.op("MatMul", &[&p, &qkv[2]], vec![]);
    let o = transpose(b, &o, &[0, 1, 3, 2]);
    // back to [N, inner, h, w] on the reduced grid
    let shape = b.op("Shape", &[&y], vec![]);
    let hw = slice(b, &shape, 0, 2, 4);
    let head = b.const_i64(vec![0, inner as i64], &[2]);
    let target = concat(b, &[&head, &hw], 0);
    let o = b.op("Reshape", &[&o, &target], vec![]);
    let o = if fused {
        o
    } else {
        let c1 = Conv::new(inner, dim, 1)
            .bias(true)
            .init(Init::DefaultUniform);
        conv2d(&mut b.scope("o_proj"), &o, c1)?
    };
    let o_ch = if fused { inner } else { dim };
    let up = if c.nearest {
        let o = if fused {
            let c1 = Conv::new(inner, dim, 1)
                .bias(true)
                .init(Init::DefaultUniform);
            conv2d(&mut b.scope("upsampling").scope(0), &o, c1)?
        } else {
            o
        };
        if stride > 1 {
            upsample_nearest(b, &o, stride, dim)?
        } else {
            o
        }
    } else {
        conv_transpose_up(&mut b.scope("upsampling"), &o, o_ch, dim, stride, fused)?
    };
    // crop to the input's height and width
    let xs = b.op("Shape", &[x], vec![]);
    let ends = slice(b, &xs, 0, 2, 4);
    let starts = b.ints(&[0, 0]);
    let axes = b.ints(&[2, 3]);
    let y = b.op("Slice", &[&up, &starts, &ends, &axes], vec![]);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&y, s);
    }
    Ok(y)
}

/// `nn.ConvTranspose2d` upsampling (`weight`, `bias`): kernel 3 at stride 1, else `2·stride`
/// with padding `stride / 2`; depthwise unless it also carries the fused output projection.
fn conv_transpose_up(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    stride: usize,
    fused: bool,
) -> Result<Value> {
    let (k, p) = if stride == 1 {
        (3, 1)
    } else {
        (2 * stride, stride / 2)
    };
    let groups = if fused { 1 } else { in_ch };
    let w = b.param(
        "weight",
        &[in_ch, out_ch / groups, k, k],
        Init::DefaultUniform,
    )?;
    let bias = b.param("bias", &[out_ch], Init::Zeros)?;
    let y = b.op(
        "ConvTranspose",
        &[x, &w, &bias],
        vec![
            ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
            ("strides", Attr::Ints(vec![stride as i64; 2])),
            ("pads", Attr::Ints(vec![p as i64; 4])),
            ("group", Attr::Int(groups as i64)),
        ],
    );
    // (n - 1)·s - 2p + k = n·s for these kernels
    b.set_spatial(&y, x, Step::Up { factor: stride }, out_ch)?;
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// the architecture: table and model_args

fn resolve(cfg: &ModelConfig) -> Result<(Cfg, CpuBoneArgs)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a CPUBone variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = CpuBoneArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.width_list.len() != 5 || v.depth_list.len() != 5 || v.head_widths.len() != 2 {
        return Err(Error::invalid_model(format!(
            "CPUBone width_list {:?} / depth_list {:?}: a stem and four stages; head_widths {:?}: two",
            v.width_list, v.depth_list, v.head_widths
        )));
    }
    if !matches!(Norm::from_timm(&v.norm_layer, None), Ok(Norm::Batch { .. })) {
        return Err(a.unsupported("norm_layer", "CPUBone is built with batchnorm only"));
    }
    let nearest = match v.attn_upsample.as_str() {
        "nearest" => true,
        "transpose" => false,
        _ => {
            return Err(Error::invalid_model(
                "attn_upsample must be 'transpose' or 'nearest'",
            ))
        }
    };
    let local_norms = match v.local_mbconv_norm.as_str() {
        "proj" => [false, false, true],
        "depth_proj" => [false, true, true],
        "all" => [true, true, true],
        _ => {
            return Err(Error::invalid_model(
                "local_mbconv_norm must be 'proj', 'depth_proj' or 'all'",
            ))
        }
    };
    let down_ratios = v
        .downsample_expand_ratios
        .clone()
        .unwrap_or_else(|| vec![v.expand_ratio; 4]);
    let ratios = [v.expand_ratio, v.stem_expand_ratio];
    if down_ratios.len() != 4
        || down_ratios
            .iter()
            .chain(&ratios)
            .any(|&r| !(r > 0.0 && r <= 64.0))
        || v.expand_groups == 0
        || v.attn_mlp_ratio == 0
    {
        return Err(Error::invalid_model(format!(
            "CPUBone expand ratios {ratios:?} / {down_ratios:?} (four, positive), expand_groups {} and attn_mlp_ratio {} (positive)",
            v.expand_groups, v.attn_mlp_ratio
        )));
    }
    let c = Cfg {
        act: layers::act::canonical(&v.act_layer)?.to_string(),
        expand_ratio: v.expand_ratio,
        fused_conv: v.fused_conv,
        fused_downsample: v.fused_downsample,
        attn_mlp_ratio: v.attn_mlp_ratio,
        stem_expand_ratio: v.stem_expand_ratio,
        down_ratios,
        groups: v.expand_groups,
        small_kernels: v.small_kernels,
        nearest,
        local_norms,
    };
    Ok((c, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 9);
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
