//! InceptionNeXt (timm's `inception_next.py`, class `MetaNeXt`): `inception_next_atto` ..
//! `inception_next_base`.
//!
//! A ConvNeXt-like skeleton whose token mixer is `InceptionDWConv2d` (channels split into an
//! identity part and square / wide / tall depthwise-conv branches), BatchNorm, a 1×1-conv MLP,
//! layer scale, and an `MlpClassifierHead`. Dilated stages for output_stride 8 / 16 as timm
//! builds them.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::mlp::{conv_mlp, layer_scale_2d, linear_2d, MlpCfg};
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{act, add, batch_norm, concat, conv2d, conv_bn, layer_norm, split};
use crate::graph::layers::{Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;
use serde_json::Value as Json;

static TABLE: Table = Table::new(include_str!("../tables/inception_next.json"));

pub const FAMILY: Family = Family {
    name: "inception_next",
    examples: "inception_next_atto..inception_next_base",
    matches,
    build,
    default_config,
    any_size: true,
};

fn matches(arch: &str) -> bool {
    TABLE.get(arch).is_some()
}

fn default_config(arch: &str) -> Option<serde_json::Value> {
    TABLE.get(arch).map(|e| e.config.clone())
}

timm_args! {
    /// `MetaNeXt.__init__`'s keyword arguments that shape the inference graph.
    struct MetaNeXtArgs {
        in_chans: usize = 3,
        output_stride: usize = 32,
        depths: Vec<usize> = vec![3, 3, 9, 3],
        dims: Vec<usize> = vec![96, 192, 384, 768],
        token_mixers: Json = Json::from("inceptiondwconv2d"),
        norm_layer: String = "batchnorm2d".into(),
        act_layer: String = "gelu".into(),
        mlp_ratios: PerStage<f64> = PerStage::Each(vec![4.0, 4.0, 4.0, 3.0]),
        ls_init_value: Option<f32> = Some(1e-6),
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Every conv and Linear: timm's `_init_weights`.
const INIT: Init = Init::TruncNormal(0.02);
/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;

/// `InceptionDWConv2d`'s arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mixer {
    square: usize,
    band: usize,
    branch_ratio: f64,
}

struct Cfg {
    depths: Vec<usize>,
    dims: Vec<usize>,
    mixer: Mixer,
    act: String,
    mlp_ratios: Vec<f64>,
    ls_init_value: Option<f32>,
    pool: PoolKind,
    output_stride: usize,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let stem = Conv::new(in_chans, c.dims[0], 4)
        .stride(4)
        .pad(Pad::Sym(0))
        .bias(true)
        .init(INIT);
    let mut x = conv_bn(&mut b.scope("stem"), &input, "0", "1", stem, BN_EPS)?;
    let (mut prev, mut curr_stride, mut dilation) = (c.dims[0], 4, 1);
    {
        let st = &mut b.scope("stages");
        for i in 0..c.dims.len() {
            let mut stride = if curr_stride == 2 || i > 0 { 2 } else { 1 };
            if curr_stride >= c.output_stride && stride > 1 {
                dilation *= stride;
                stride = 1;
            }
            curr_stride *= stride;
            let first = if dilation <= 2 { 1 } else { 2 };
            let s = &mut st.scope(i);
            x = stage(s, &x, prev, i, stride, (first, dilation), &c)?;
            let module = s.path().to_string();
            s.feature(&x, c.dims[i], curr_stride, &module);
            prev = c.dims[i];
        }
    }
    head(&mut b.scope("head"), &x, prev, cfg.num_classes, &c)
}

/// `MetaNeXtStage`: the downsample (BatchNorm, 2×2 conv) when striding or changing dilation,
/// then the blocks.
fn stage(
    b: &mut Builder,
    x: &Value,
    in_chs: usize,
    i: usize,
    stride: usize,
    (d0, d1): (usize, usize),
    c: &Cfg,
) -> Result<Value> {
    let dim = c.dims[i];
    let mut x = x.clone();
    if stride > 1 || d0 != d1 {
        // timm pads 'same' once the stage is dilated.
        let pad = if d1 > 1 {
            Pad::same(2, stride, d0)
        } else {
            Pad::Sym(0)
        };
        let ds = &mut b.scope("downsample");
        x = batch_norm(&mut ds.scope(0), &x, in_chs, BN_EPS)?;
        let conv = Conv::new(in_chs, dim, 2)
            .stride(stride)
            .dilation(d0)
            .pad(pad)
            .bias(true)
            .init(INIT);
        x = conv2d(&mut ds.scope(1), &x, conv)?;
    } else if in_chs != dim {
        return Err(Error::invalid_model(format!(
            "InceptionNeXt stage {i} changes width {in_chs} -> {dim} without a downsample"
        )));
    }
    let blocks = &mut b.scope("blocks");
    for j in 0..c.depths[i] {
        let hidden = (c.mlp_ratios[i] * dim as f64) as usize;
        x = block(&mut blocks.scope(j), &x, dim, hidden, d1, c)?;
    }
    Ok(x)
}

/// `MetaNeXtBlock`: token mixer, BatchNorm, ConvMlp, layer scale (`gamma`), residual.
fn block(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    hidden: usize,
    dil: usize,
    c: &Cfg,
) -> Result<Value> {
    let y = inception_dw_conv(&mut b.scope("token_mixer"), x, dim, dil, &c.mixer)?;
    let y = batch_norm(&mut b.scope("norm"), &y, dim, BN_EPS)?;
    let y = conv_mlp(&mut b.scope("mlp"), &y, &MlpCfg::new(dim, hidden, &c.act))?;
    let y = match c.ls_init_value.filter(|&v| v != 0.0) {
        Some(v) => layer_scale_2d(b, &y, dim, v)?,
        None => y,
    };
    Ok(add(b, &y, x))
}

/// `InceptionDWConv2d`: split the channels into (identity, square, wide, tall) and run a
/// depthwise conv on each of the last three; concatenate.
fn inception_dw_conv(
    b: &mut Builder,
    x: &Value,
    dim: usize,
    dil: usize,
    m: &Mixer,
) -> Result<Value> {
    let gc = (dim as f64 * m.branch_ratio) as usize;
    if gc == 0 || 3 * gc > dim {
        return Err(Error::invalid_model(format!(
            "InceptionDWConv2d branch ratio {} of {dim} channels gives no valid branches",
            m.branch_ratio
        )));
    }
    let parts = split(b, x, 1, &[dim - 3 * gc, gc, gc, gc]);
    let dw = |k| Conv::new(gc, gc, k).depthwise().bias(true).init(INIT);
    let sq = dw(m.square).dilation(dil);
    let hw = conv2d(&mut b.scope("dwconv_hw"), &parts[1], sq)?;
    // A size-1 kernel axis ignores its dilation, so one dilation serves both band convs.
    let p = dil * (m.band - 1) / 2;
    let wide = dw(1)
        .kernel2(1, m.band)
        .dilation(dil)
        .pad(Pad::Explicit(0, p, 0, p));
    let w = conv2d(&mut b.scope("dwconv_w"), &parts[2], wide)?;
    let tall = dw(1)
        .kernel2(m.band, 1)
        .dilation(dil)
        .pad(Pad::Explicit(p, 0, p, 0));
    let h = conv2d(&mut b.scope("dwconv_h"), &parts[3], tall)?;
    let y = concat(b, &[&parts[0], &hw, &w, &h], 1);
    if let Some(s) = b.spatial(x).cloned() {
        b.assign_spatial(&y, s);
    }
    Ok(y)
}

/// `MlpClassifierHead`: global pool, `fc1` (3× width), GELU, LayerNorm, `fc2`; pre-logits are
/// the normed hidden layer.
fn head(b: &mut Builder, x: &Value, nf: usize, classes: usize, c: &Cfg) -> Result<(Value, usize)> {
    let pooled = global_pool(b, x, c.pool);
    let (in_f, hidden) = (nf * c.pool.multiplier(), 3 * nf);
    let y = linear_2d(&mut b.scope("fc1"), &pooled, in_f, hidden, true, INIT)?;
    let y = act(b, "gelu", &y)?;
    let y = layer_norm(&mut b.scope("norm"), &y, hidden, 1e-6)?;
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((y, hidden));
    }
    let logits = linear_2d(&mut b.scope("fc2"), &y, hidden, classes, true, INIT)?;
    Ok((logits, classes))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an InceptionNeXt variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = MetaNeXtArgs::read(&a)?;
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
    if n == 0 || dims.len() != n || dims.contains(&0) {
        return Err(Error::invalid_model(format!(
            "model_args depths {depths:?} and dims {dims:?} must list the same, positive stages"
        )));
    }
    if !v.norm_layer.eq_ignore_ascii_case("batchnorm2d") {
        return Err(a.unsupported("norm_layer", "the native InceptionNeXt builds batchnorm2d"));
    }
    let mixer = mixer(&v.token_mixers).ok_or_else(|| {
        a.unsupported(
            "token_mixers",
            "the native InceptionNeXt builds one InceptionDWConv2d (or its partial) for every stage",
        )
    })?;
    let requested = b.output_stride();
    let output_stride = requested.unwrap_or(v.output_stride);
    if ![8, 16, 32].contains(&output_stride) {
        let why =
            format!("output_stride {output_stride}: timm's InceptionNeXt supports 8, 16 or 32");
        return Err(match requested {
            Some(_) => Error::invalid_argument(format!("option {why}")),
            None => Error::invalid_model(format!("model_args {why}")),
        });
    }
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    let pool = PoolKind::from_timm(pool_name)?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "InceptionNeXt's MlpClassifierHead cannot disable pooling (global_pool '')",
        ));
    }
    Ok(Cfg {
        mlp_ratios: v.mlp_ratios.expand("mlp_ratios", n)?,
        depths,
        dims,
        mixer,
        act: crate::graph::layers::act::canonical(&v.act_layer)?.to_string(),
        ls_init_value: v.ls_init_value,
        pool,
        output_stride,
    })
}

/// `inceptiondwconv2d` or `{"partial": "inceptiondwconv2d", ...}` (its keyword arguments).
fn mixer(j: &Json) -> Option<Mixer> {
    let mut m = Mixer {
        square: 3,
        band: 11,
        branch_ratio: 0.125,
    };
    match j {
        Json::String(s) if s == "inceptiondwconv2d" => Some(m),
        Json::Object(o) if o.get("partial")? == "inceptiondwconv2d" => {
            for (k, v) in o {
                match k.as_str() {
                    "partial" => {}
                    "square_kernel_size" => m.square = v.as_u64().filter(|&k| k % 2 == 1)? as usize,
                    "band_kernel_size" => m.band = v.as_u64().filter(|&k| k % 2 == 1)? as usize,
                    "branch_ratio" => m.branch_ratio = v.as_f64().filter(|r| *r > 0.0)?,
                    _ => return None,
                }
            }
            Some(m)
        }
        _ => None,
    }
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
        assert_eq!(TABLE.validate().unwrap(), 4);
        for arch in TABLE.names() {
            assert!(matches(arch), "{arch} is not matched by the family");
            let cfg = default_config(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
            let mixer_arg = &TABLE.get(arch).unwrap().args["token_mixers"];
            assert!(mixer(mixer_arg).is_some(), "{arch}: {mixer_arg}");
        }
    }
}
