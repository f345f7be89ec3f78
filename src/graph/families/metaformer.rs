//! MetaFormer (timm's `metaformer.py`): PoolFormer v1 / v2, ConvFormer and CAFormer
//! (`poolformer_s12` .. `caformer_b36`).
//!
//! One skeleton, four token mixers: a 7×7/4 stem, four stages of `MetaFormerBlock`s
//! (`x·res_scale + layer_scale·mixer(norm(x))`, then the same with an MLP), a pooled head with
//! an output LayerNorm2d and a Linear or `MlpHead`. Convolutional stages stay NCHW (1×1 convs);
//! attention stages run on tokens and return to NCHW at the stage's end, as timm does.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::attention::{attention, AttnCfg, Hooks};
use crate::graph::layers::heads::norm_mlp_head;
use crate::graph::layers::mlp::{linear, linear_2d, linear_act};
use crate::graph::layers::norm::{group_norm_affine, layer_norm_2d_affine, layer_norm_affine};
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::{act, add, conv2d, nchw_to_tokens, per_channel, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/metaformer.json"));

pub const FAMILY: Family = Family {
    name: "metaformer",
    examples: "poolformer_s12..m48, poolformerv2_s12..m48, convformer_s18..b36, caformer_s18..b36",
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
    /// `MetaFormer.__init__`'s keyword arguments that shape the inference graph.
    struct MetaFormerArgs {
        in_chans: usize = 3,
        depths: Vec<usize> = vec![2, 2, 6, 2],
        dims: Vec<usize> = vec![64, 128, 320, 512],
        token_mixers: PerStage<String> = PerStage::All("pooling".into()),
        mlp_act: String = "starrelu".into(),
        mlp_bias: bool = false,
        layer_scale_init_values: PerStage<Option<f32>> = PerStage::All(None),
        res_scale_init_values: PerStage<Option<f32>> =
            PerStage::Each(vec![None, None, Some(1.0), Some(1.0)]),
        downsample_norm: Option<String> = Some("layernorm2dnobias".into()),
        norm_layers: PerStage<String> = PerStage::All("layernorm2dnobias".into()),
        output_norm: String = "layernorm2d".into(),
        use_mlp_head: bool = true,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Every conv and Linear: timm's `_init_weights`.
const INIT: Init = Init::TruncNormal(0.02);

/// A stage's token mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mixer {
    Identity,
    Pooling,
    SepConv,
    Attention,
}

/// MetaFormer's norm layers: LayerNorm (over channels, of NCHW maps or tokens) or GroupNorm1,
/// with or without their bias (`*NoBias` classes).
#[derive(Debug, Clone, Copy, PartialEq)]
struct MfNorm {
    group: bool,
    bias: bool,
    eps: f32,
}

impl MfNorm {
    /// timm's class by its lower-cased name; `tokens`: the stage runs on `[N, L, C]`.
    fn from_timm(name: &str, tokens: bool) -> Result<MfNorm> {
        let n = |group, bias, eps| MfNorm { group, bias, eps };
        let norm = match (name, tokens) {
            ("groupnorm1", false) => n(true, true, 1e-5),
            ("groupnorm1nobias", false) => n(true, false, 1e-6),
            ("layernorm2d", false) => n(false, true, 1e-6),
            ("layernorm2dnobias", false) => n(false, false, 1e-6),
            ("layernorm", true) => n(false, true, 1e-6),
            ("layernormnobias", true) => n(false, false, 1e-6),
            _ => {
                return Err(Error::unsupported(format!(
                    "MetaFormer norm layer `{name}` in a {} stage is not built natively \
                     (NCHW stages: groupnorm1, groupnorm1nobias, layernorm2d, layernorm2dnobias; \
                     attention stages: layernorm, layernormnobias)",
                    if tokens { "token (attention)" } else { "NCHW" }
                )))
            }
        };
        Ok(norm)
    }

    fn apply(&self, b: &mut Builder, x: &Value, ch: usize, tokens: bool) -> Result<Value> {
        match (self.group, tokens) {
            (true, _) => group_norm_affine(b, x, 1, ch, self.eps, self.bias),
            (false, false) => layer_norm_2d_affine(b, x, ch, self.eps, self.bias),
            (false, true) => layer_norm_affine(b, x, ch, self.eps, self.bias),
        }
    }
}

/// The resolved architecture.
struct Cfg {
    depths: Vec<usize>,
    dims: Vec<usize>,
    mixers: Vec<Mixer>,
    norms: Vec<MfNorm>,
    layer_scale: Vec<Option<f32>>,
    res_scale: Vec<Option<f32>>,
    downsample_norm: Option<MfNorm>,
    mlp_act: String,
    mlp_bias: bool,
    use_mlp_head: bool,
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let mut x = stem(&mut b.scope("stem"), &input, in_chans, &c)?;
    let mut prev = c.dims[0];
    {
        let st = &mut b.scope("stages");
        for i in 0..c.dims.len() {
            let s = &mut st.scope(i);
            x = stage(s, &x, prev, i, &c)?;
            let module = s.path().to_string();
            s.feature(&x, c.dims[i], 1 << (i + 2), &module);
            prev = c.dims[i];
        }
    }
    head(&mut b.scope("head"), &x, prev, cfg.num_classes, &c)
}

/// `Stem`: a 7×7 stride-4 conv (padding 2) and the downsample norm.
fn stem(b: &mut Builder, x: &Value, in_chans: usize, c: &Cfg) -> Result<Value> {
    let conv = Conv::new(in_chans, c.dims[0], 7)
        .stride(4)
        .pad(Pad::Sym(2))
        .bias(true)
        .init(INIT);
    let x = conv2d(&mut b.scope("conv"), x, conv)?;
    match &c.downsample_norm {
        Some(n) => n.apply(&mut b.scope("norm"), &x, c.dims[0], false),
        None => Ok(x),
    }
}

/// `MetaFormerStage`: `Downsampling` (norm, 3×3 stride-2 conv) when the width changes, then
/// the blocks; attention stages run them on tokens.
fn stage(b: &mut Builder, x: &Value, in_chs: usize, i: usize, c: &Cfg) -> Result<Value> {
    let dim = c.dims[i];
    let mut x = x.clone();
    if in_chs != dim {
        let ds = &mut b.scope("downsample");
        if let Some(n) = &c.downsample_norm {
            x = n.apply(&mut ds.scope("norm"), &x, in_chs, false)?;
        }
        let conv = Conv::new(in_chs, dim, 3)
            .stride(2)
            .pad(Pad::Sym(1))
            .bias(true)
            .init(INIT);
        x = conv2d(&mut ds.scope("conv"), &x, conv)?;
    }
    let tokens = c.mixers[i] == Mixer::Attention;
    let map = x.clone();
    if tokens {
        x = nchw_to_tokens(b, &x, dim);
    }
    {
        let blocks = &mut b.scope("blocks");
        for j in 0..c.depths[i] {
            x = block(&mut blocks.scope(j), &x, dim, i, tokens, c)?;
        }
    }
    if !tokens {
        return Ok(x);
    }
    // [N, HW, C] back to the shape of the stage's input map.
    let y = b.op(
        "Transpose",
        &[&x],
        vec![("perm", crate::graph::Attr::Ints(vec![0, 2, 1]))],
    );
    let shape = b.op("Shape", &[&map], vec![]);
    let y = b.op("Reshape", &[&y, &shape], vec![]);
    if let Some(s) = b.spatial(&map).cloned() {
        b.assign_spatial(&y, s);
    }
    Ok(y)
}

/// `MetaFormerBlock`: two residual branches, each `res_scale(x) + layer_scale(f(norm(x)))`.
fn block(b: &mut Builder, x: &Value, dim: usize, i: usize, tokens: bool, c: &Cfg) -> Result<Value> {
    let n = &c.norms[i];
    let y = n.apply(&mut b.scope("norm1"), x, dim, tokens)?;
    let y = token_mixer(&mut b.scope("token_mixer"), &y, dim, c.mixers[i])?;
    let x = residual(b, x, &y, ("res_scale1", "layer_scale1"), dim, i, tokens, c)?;
    let y = n.apply(&mut b.scope("norm2"), &x, dim, tokens)?;
    let y = mlp(&mut b.scope("mlp"), &y, dim, tokens, c)?;
    residual(b, &x, &y, ("res_scale2", "layer_scale2"), dim, i, tokens, c)
}

/// `res_scale(x) + layer_scale(y)`, each `Scale` only where the stage has its init value.
#[allow(clippy::too_many_arguments)]
fn residual(
    b: &mut Builder,
    x: &Value,
    y: &Value,
    (rs, ls): (&str, &str),
    dim: usize,
    i: usize,
    tokens: bool,
    c: &Cfg,
) -> Result<Value> {
    let x = match c.res_scale[i] {
        Some(v) => scale(&mut b.scope(rs), x, dim, v, tokens)?,
        None => x.clone(),
    };
    let y = match c.layer_scale[i] {
        Some(v) => scale(&mut b.scope(ls), y, dim, v, tokens)?,
        None => y.clone(),
    };
    Ok(add(b, &x, &y))
}

/// MetaFormer's `Scale`: a learnable per-channel `scale` (over NCHW, or the last axis).
fn scale(b: &mut Builder, x: &Value, dim: usize, init: f32, tokens: bool) -> Result<Value> {
    let s = b.param("scale", &[dim], Init::Const(init))?;
    let s = if tokens { s } else { per_channel(b, &s, dim) };
    Ok(b.op("Mul", &[x, &s], vec![]))
}

fn token_mixer(b: &mut Builder, x: &Value, dim: usize, m: Mixer) -> Result<Value> {
    match m {
        Mixer::Identity => Ok(x.clone()),
        // `Pooling`: avg_pool(x) - x (3×3, stride 1, padding excluded from the mean).
        Mixer::Pooling => {
            let p = Pool2d::new(3, 1, 1)
                .count_include_pad(false)
                .avg(b, x, dim)?;
            Ok(b.op("Sub", &[&p, x], vec![]))
        }
        Mixer::SepConv => sep_conv(b, x, dim),
        // `Attention`: head_dim 32, dim // 32 heads (at least one), no biases.
        Mixer::Attention => {
            let heads = (dim / 32).max(1);
            let mut a = AttnCfg::new(dim, heads);
            a.inner = Some(heads * 32).filter(|&n| n != dim);
            a.qkv_bias = false;
            a.proj_bias = false;
            a.init = INIT;
            attention(b, x, &a, &Hooks::default())
        }
    }
}

/// `SepConv`: 1×1 conv to 2·dim, StarReLU, 7×7 depthwise conv, 1×1 conv back; no biases.
fn sep_conv(b: &mut Builder, x: &Value, dim: usize) -> Result<Value> {
    let mid = 2 * dim;
    let pw = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(false).init(INIT);
    let y = conv2d(&mut b.scope("pwconv1"), x, pw(dim, mid))?;
    let y = act(&mut b.scope("act1"), "star_relu", &y)?;
    let dw = Conv::new(mid, mid, 7)
        .depthwise()
        .pad(Pad::Sym(3))
        .bias(false)
        .init(INIT);
    let y = conv2d(&mut b.scope("dwconv"), &y, dw)?;
    conv2d(&mut b.scope("pwconv2"), &y, pw(mid, dim))
}

/// timm's `Mlp` (1×1 convs on NCHW stages, Linears on tokens), hidden 4·dim, `mlp_act` in
/// the `act` scope (StarReLU has parameters).
fn mlp(b: &mut Builder, x: &Value, dim: usize, tokens: bool, c: &Cfg) -> Result<Value> {
    let (hidden, bias, a) = (4 * dim, c.mlp_bias, c.mlp_act.as_str());
    if tokens {
        let y = if a == "star_relu" {
            let y = linear(&mut b.scope("fc1"), x, dim, hidden, bias, INIT)?;
            act(&mut b.scope("act"), a, &y)?
        } else {
            linear_act(&mut b.scope("fc1"), x, dim, hidden, bias, a, INIT)?
        };
        return linear(&mut b.scope("fc2"), &y, hidden, dim, bias, INIT);
    }
    let fc = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(bias).init(INIT);
    let y = conv2d(&mut b.scope("fc1"), x, fc(dim, hidden))?;
    let y = act(&mut b.scope("act"), a, &y)?;
    conv2d(&mut b.scope("fc2"), &y, fc(hidden, dim))
}

/// `head`: global pool, output norm (LayerNorm2d on the pooled map), flatten, then `fc`: a
/// Linear or `MlpHead` (fc1, SquaredReLU, LayerNorm, fc2).
fn head(b: &mut Builder, x: &Value, nf: usize, classes: usize, c: &Cfg) -> Result<(Value, usize)> {
    let norm = Norm::Layer { eps: 1e-6 };
    let (y, nf) = norm_mlp_head(b, x, nf, c.pool, &norm, None, "", 0, true)?;
    if b.output() == OutputKind::Features || classes == 0 {
        return Ok((y, nf));
    }
    let f = &mut b.scope("fc");
    let logits = if c.use_mlp_head {
        let hidden = 4 * nf;
        let y = linear_2d(&mut f.scope("fc1"), &y, nf, hidden, true, INIT)?;
        let y = act(f, "squared_relu", &y)?;
        let y = layer_norm_affine(&mut f.scope("norm"), &y, hidden, 1e-6, true)?;
        linear_2d(&mut f.scope("fc2"), &y, hidden, classes, true, INIT)?
    } else {
        linear_2d(f, &y, nf, classes, true, INIT)?
    };
    Ok((logits, classes))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a MetaFormer variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = MetaFormerArgs::read(&a)?;
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
    let mixers = v
        .token_mixers
        .expand("token_mixers", n)?
        .iter()
        .map(|m| match m.as_str() {
            "identity" => Ok(Mixer::Identity),
            "pooling" => Ok(Mixer::Pooling),
            "sepconv" => Ok(Mixer::SepConv),
            "attention" => Ok(Mixer::Attention),
            _ => Err(a.unsupported(
                "token_mixers",
                "the native MetaFormer builds identity, pooling, sepconv and attention",
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let norms = v
        .norm_layers
        .expand("norm_layers", n)?
        .iter()
        .zip(&mixers)
        .map(|(name, m)| MfNorm::from_timm(name, *m == Mixer::Attention))
        .collect::<Result<Vec<_>>>()?;
    let downsample_norm = match v.downsample_norm.as_deref() {
        None | Some("identity") => None,
        Some(name) => Some(MfNorm::from_timm(name, false)?),
    };
    if v.output_norm != "layernorm2d" {
        return Err(a.unsupported(
            "output_norm",
            "the native MetaFormer builds timm's layernorm2d",
        ));
    }
    let mlp_act = crate::graph::layers::act::canonical(&v.mlp_act)?.to_string();
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    let pool = PoolKind::from_timm(pool_name)?;
    if !matches!(pool, PoolKind::Avg | PoolKind::Max | PoolKind::AvgMax) {
        return Err(Error::unsupported(format!(
            "global_pool `{pool_name}` is not supported by the native MetaFormer (avg, max, avgmax)"
        )));
    }
    Ok(Cfg {
        layer_scale: v
            .layer_scale_init_values
            .expand("layer_scale_init_values", n)?,
        res_scale: v.res_scale_init_values.expand("res_scale_init_values", n)?,
        depths,
        dims,
        mixers,
        norms,
        downsample_norm,
        mlp_act,
        mlp_bias: v.mlp_bias,
        use_mlp_head: v.use_mlp_head,
        pool,
    })
}

/// Depths and widths from the weights where config.json does not set them (transformers'
/// folders have `"model_args": null`).
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
                    .take_while(|&j| blocks.scope(j).has_module("norm1"))
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
                    .weight_shape("mlp.fc1.weight")
                    .map(|s| s[1])
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
        let n = TABLE.validate().unwrap();
        assert_eq!(n, 18, "{n} archs");
        for arch in TABLE.names() {
            assert!(matches(arch), "{arch} is not matched by the family");
            let cfg = default_config(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
        assert!(default_config("poolformer_unknown").is_none());
    }
}
