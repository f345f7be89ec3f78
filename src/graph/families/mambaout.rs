//! MambaOut (timm's `mambaout.py`): `mambaout_femto` .. `mambaout_base_plus_rw`, `test_mambaout`.
//!
//! A two-conv stem, four stages of gated CNN blocks (`GatedConvBlock`: LayerNorm, `fc1` to two
//! halves, a depthwise conv on part of one half, `fc2(act(gate) · [identity, conv])`, optional
//! layer scale) after a 3×3 stride-2 downsample (norm after the conv, or before it for
//! `conv_nf`), and an `MlpHead` (pool, norm, fc, GELU, norm, fc) or a `ClNormMlpClassifierHead`
//! (pool, norm, fc, GELU, fc). The network runs channels-last as timm's does; convs see NCHW.
//!
//! Feature maps: every stage (`stages.<i>`), as NCHW maps (timm's `features_only` returns them
//! channels-last; its `forward_intermediates` permutes them to NCHW, as here).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::{layer_scale, linear, linear_2d};
use crate::graph::layers::{
    act, add, concat, conv2d, layer_norm, mul, nchw_to_nhwc, nhwc_to_nchw, reduce_mean, split,
    Conv, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/mambaout.json"));

pub const FAMILY: Family = Family {
    name: "mambaout",
    examples: "mambaout_femto..mambaout_base_plus_rw, test_mambaout",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `MambaOut.__init__`'s keyword arguments with timm's defaults.
    struct MambaOutArgs {
        in_chans: usize = 3,
        depths: Vec<usize> = vec![3, 3, 9, 3],
        dims: Vec<usize> = vec![96, 192, 384, 576],
        norm_layer: Json = Json::from("layernorm"),
        act_layer: String = "gelu".into(),
        conv_ratio: f64 = 1.0,
        expansion_ratio: f64 = 8.0 / 3.0,
        kernel_size: usize = 7,
        stem_mid_norm: bool = true,
        ls_init_value: Option<f64> = None,
        downsample: String = "conv".into(),
        head_fn: String = "default".into(),
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Every conv and Linear: timm's `_init_weights`.
const INIT: Init = Init::TruncNormal(0.02);
/// timm's `LayerNorm` (the default `norm_layer`).
const LN_EPS: f32 = 1e-6;

/// The pooling of the heads: `avg` (both), `max` / `avgmax` (`ClNormMlpClassifierHead` only).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pool {
    Avg,
    Max,
    AvgMax,
}

struct Cfg {
    depths: Vec<usize>,
    dims: Vec<usize>,
    act: String,
    conv_ratio: f64,
    expansion_ratio: f64,
    kernel: usize,
    stem_mid_norm: bool,
    layer_scale: bool,
    norm_first: bool,
    mlp_head: bool,
    pool: Pool,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    // `grid`: the last NCHW conv output, whose spatial size the channels-last `x` has.
    let (mut x, mut grid) = stem(&mut b.scope("stem"), &input, in_chans, &c)?;
    let mut prev = c.dims[0];
    let mut reduction = 4;
    {
        let st = &mut b.scope("stages");
        for i in 0..c.dims.len() {
            let s = &mut st.scope(i);
            let dim = c.dims[i];
            if i > 0 {
                (x, grid) = downsample(&mut s.scope("downsample"), &x, prev, dim, &c)?;
                reduction *= 2;
            } else if prev != dim {
                return Err(Error::invalid_model(format!(
                    "MambaOut's first stage cannot change width {prev} -> {dim}"
                )));
            }
            {
                let blocks = &mut s.scope("blocks");
                for j in 0..c.depths[i] {
                    x = gated_conv_block(&mut blocks.scope(j), &x, dim, &c)?;
                }
            }
            let map = nhwc_to_nchw(s, &x);
            if let Some(sp) = s.spatial(&grid).cloned() {
                s.assign_spatial(&map, sp);
            }
            let module = s.path().to_string();
            s.feature(&map, dim, reduction, &module);
            prev = dim;
        }
    }
    head(&mut b.scope("head"), &x, prev, cfg.num_classes, &c)
}

/// `Stem`: conv1 (3×3/2), optional LayerNorm, act, conv2 (3×3/2), LayerNorm; channels-last out.
fn stem(b: &mut Builder, x: &Value, in_chans: usize, c: &Cfg) -> Result<(Value, Value)> {
    let out = c.dims[0];
    let mid = out / 2;
    let conv = |i, o| {
        Conv::new(i, o, 3)
            .stride(2)
            .pad(Pad::Sym(1))
            .bias(true)
            .init(INIT)
    };
    let mut y = conv2d(&mut b.scope("conv1"), x, conv(in_chans, mid))?;
    if c.stem_mid_norm {
        let t = nchw_to_nhwc(b, &y);
        let t = layer_norm(&mut b.scope("norm1"), &t, mid, LN_EPS)?;
        y = nhwc_to_nchw(b, &t);
    }
    let y = act(b, &c.act, &y)?;
    let g = conv2d(&mut b.scope("conv2"), &y, conv(mid, out))?;
    let t = nchw_to_nhwc(b, &g);
    Ok((layer_norm(&mut b.scope("norm2"), &t, out, LN_EPS)?, g))
}

/// `Downsample` (conv then norm) or `DownsampleNormFirst` (`conv_nf`): a 3×3 stride-2 conv.
fn downsample(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    out: usize,
    c: &Cfg,
) -> Result<(Value, Value)> {
    let conv = Conv::new(in_chs, out, 3)
        .stride(2)
        .pad(Pad::Sym(1))
        .bias(true)
        .init(INIT);
    let x = if c.norm_first {
        layer_norm(&mut b.scope("norm"), x, in_chs, LN_EPS)?
    } else {
        x.clone()
    };
    let t = nhwc_to_nchw(b, &x);
    let g = conv2d(&mut b.scope("conv"), &t, conv)?;
    let y = nchw_to_nhwc(b, &g);
    let y = if c.norm_first {
        y
    } else {
        layer_norm(&mut b.scope("norm"), &y, out, LN_EPS)?
    };
    Ok((y, g))
}

/// `GatedConvBlock` on `[N, H, W, C]`: `x + ls(fc2(act(g) · [i, conv(c)]))` of `fc1(norm(x))`
/// split into (gate, identity, conv) channels.
fn gated_conv_block(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let hidden = (c.expansion_ratio * dim as f64) as usize;
    let cc = (c.conv_ratio * dim as f64) as usize;
    if hidden == 0 || cc == 0 || cc > hidden {
        return Err(Error::invalid_model(format!(
            "MambaOut block of width {dim}: expansion_ratio {} and conv_ratio {} give hidden {hidden} and {cc} conv channels",
            c.expansion_ratio, c.conv_ratio
        )));
    }
    let y = layer_norm(&mut b.scope("norm"), x, dim, LN_EPS)?;
    let y = linear(&mut b.scope("fc1"), &y, dim, 2 * hidden, true, INIT)?;
    let kept = hidden - cc;
    let parts = if kept > 0 {
        split(b, &y, -1, &[hidden, kept, cc])
    } else {
        split(b, &y, -1, &[hidden, cc])
    };
    let conv_in = parts.last().unwrap().clone();
    let t = nhwc_to_nchw(b, &conv_in);
    let k = c.kernel;
    let dw = Conv::new(cc, cc, k)
        .depthwise()
        .pad(Pad::Sym(k / 2))
        .bias(true)
        .init(INIT);
    let t = conv2d(&mut b.scope("conv"), &t, dw)?;
    let conv_out = nchw_to_nhwc(b, &t);
    let ic = if kept > 0 {
        concat(b, &[&parts[1], &conv_out], -1)
    } else {
        conv_out
    };
    let g = act(b, &c.act, &parts[0])?;
    let y = mul(b, &g, &ic);
    let mut y = linear(&mut b.scope("fc2"), &y, hidden, dim, true, INIT)?;
    if c.layer_scale {
        // `LayerScale(dim)` with its own init (1e-5): ls_init_value only switches it on.
        y = layer_scale(&mut b.scope("ls"), &y, dim, 1e-5)?;
    }
    Ok(add(b, &y, x))
}

/// The pooled `[N, C]` of channels-last `[N, H, W, C]`.
fn pool(b: &mut Builder, x: &Value, p: Pool) -> Value {
    let max = |b: &mut Builder| {
        let axes = b.ints(&[1, 2]);
        b.op(
            "ReduceMax",
            &[x, &axes],
            vec![("keepdims", crate::graph::Attr::Int(0))],
        )
    };
    match p {
        Pool::Avg => reduce_mean(b, x, &[1, 2], false),
        Pool::Max => max(b),
        Pool::AvgMax => {
            let m = max(b);
            let a = reduce_mean(b, x, &[1, 2], false);
            let s = add(b, &m, &a);
            crate::graph::layers::scale(b, &s, 0.5)
        }
    }
}

/// `MlpHead` (pool, norm, `pre_logits` fc / GELU / norm, fc) or `ClNormMlpClassifierHead`
/// (pool, norm, `pre_logits` fc / GELU, fc); hidden 4× the width.
fn head(b: &mut Builder, x: &Value, nf: usize, classes: usize, c: &Cfg) -> Result<(Value, usize)> {
    let y = pool(b, x, c.pool);
    let y = layer_norm(&mut b.scope("norm"), &y, nf, LN_EPS)?;
    let hidden = 4 * nf;
    let y = {
        let s = &mut b.scope("pre_logits");
        let y = linear_2d(&mut s.scope("fc"), &y, nf, hidden, true, INIT)?;
        let y = act(s, "gelu", &y)?;
        if c.mlp_head {
            layer_norm(&mut s.scope("norm"), &y, hidden, LN_EPS)?
        } else {
            y
        }
    };
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((y, hidden));
    }
    let logits = linear_2d(&mut b.scope("fc"), &y, hidden, classes, true, INIT)?;
    Ok((logits, classes))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a MambaOut variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = MambaOutArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let (mut depths, mut dims) = (v.depths, v.dims);
    if b.weights().is_some() {
        read_structure(b, &a, &mut depths, &mut dims);
    }
    let n = depths.len();
    if n == 0 || dims.len() != n || dims.iter().any(|&d| d < 2) {
        return Err(Error::invalid_model(format!(
            "model_args depths {depths:?} and dims {dims:?} must list the same stages, widths at least 2"
        )));
    }
    let norm_ok = match &v.norm_layer {
        Json::String(s) => s.eq_ignore_ascii_case("layernorm"),
        _ => false,
    };
    if !norm_ok {
        return Err(a.unsupported("norm_layer", "the native MambaOut builds timm's LayerNorm"));
    }
    let norm_first = match v.downsample.as_str() {
        "conv" => false,
        "conv_nf" => true,
        _ => {
            return Err(a.unsupported(
                "downsample",
                "timm's MambaOut has 'conv' and 'conv_nf' downsampling (stage widths change)",
            ))
        }
    };
    // timm: 'default' is the MlpHead, any other name the ClNormMlpClassifierHead.
    let mlp_head = v.head_fn == "default";
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    let pool = match (pool_name, mlp_head) {
        ("avg", _) => Pool::Avg,
        ("max", false) => Pool::Max,
        ("avgmax", false) => Pool::AvgMax,
        ("", _) => {
            return Err(Error::unsupported(
                "MambaOut with global_pool '' (per-position logits) is not built natively",
            ))
        }
        _ => {
            return Err(Error::invalid_model(format!(
                "MambaOut's {} head does not pool `{pool_name}`",
                if mlp_head {
                    "MlpHead"
                } else {
                    "ClNormMlpClassifierHead"
                }
            )))
        }
    };
    if v.kernel_size == 0 || v.kernel_size.is_multiple_of(2) {
        return Err(a.unsupported(
            "kernel_size",
            "an odd kernel (padding kernel_size // 2 keeps the map's size)",
        ));
    }
    let ratio_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 64.0;
    if !ratio_ok(v.conv_ratio) || !ratio_ok(v.expansion_ratio) {
        return Err(Error::invalid_model(format!(
            "MambaOut conv_ratio {} / expansion_ratio {} out of range",
            v.conv_ratio, v.expansion_ratio
        )));
    }
    Ok(Cfg {
        depths,
        dims,
        act: crate::graph::layers::act::canonical(&v.act_layer)?.to_string(),
        conv_ratio: v.conv_ratio,
        expansion_ratio: v.expansion_ratio,
        kernel: v.kernel_size,
        stem_mid_norm: v.stem_mid_norm,
        layer_scale: v.ls_init_value.is_some(),
        norm_first,
        mlp_head,
        pool,
    })
}

/// Depths and widths from the weights where config.json does not set them.
fn read_structure(b: &mut Builder, a: &Args, depths: &mut Vec<usize>, dims: &mut Vec<usize>) {
    let st = &mut b.scope("stages");
    let n = (0..)
        .take_while(|&i| st.scope(i).has_module("blocks"))
        .count();
    if n == 0 {
        return;
    }
    if !a.explicit("depths") {
        *depths = (0..n)
            .map(|i| {
                let mut si = st.scope(i);
                let blocks = &mut si.scope("blocks");
                (0..)
                    .take_while(|&j| blocks.scope(j).has_module("norm"))
                    .count()
            })
            .collect();
    }
    if !a.explicit("dims") {
        let w: Option<Vec<usize>> = (0..n)
            .map(|i| {
                st.scope(i)
                    .scope("blocks")
                    .scope(0)
                    .weight_shape("norm.weight")
                    .map(|s| s[0])
            })
            .collect();
        if let Some(w) = w {
            *dims = w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 11);
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
