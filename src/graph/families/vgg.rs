//! VGG (timm's `vgg.py`): `vgg11` / `13` / `16` / `19` and their `_bn` forms, with timm's
//! `ConvMlp` pre-logits (a 7x7 conv `fc1` and a 1x1 conv `fc2`, 4096 wide) before the head.
//!
//! The layer pattern (convs and max pools) is the entrypoint's `cfg`; each conv's width is
//! read from its weight when a weights file is there (timm's entrypoints fix `cfg`, so a
//! narrowed VGG is only recorded by its tensors).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::fc;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::{act, add, conv2d, conv_bn, scale, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/vgg.json"));

pub const FAMILY: Family = Family {
    name: "vgg",
    examples: "vgg11, vgg13, vgg16, vgg19 and their _bn forms",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `VGG.__init__` (the entrypoint's `cfg` as `model_cfg`), timm's defaults.
    struct VggArgs {
        model_cfg: Json = Json::Null,
        output_stride: usize = 32,
        mlp_ratio: f64 = 1.0,
        act_layer: String = "relu".into(),
        norm_layer: Option<String> = None,
    }
}

/// `ConvMlp`'s (and the head's) width, fixed by timm.
const HIDDEN: usize = 4096;

/// One entry of timm's `cfg`: a 3x3 conv of that many channels, or `'M'` (max pool).
enum Layer {
    Conv(usize),
    Pool,
}

fn parse_cfg(a: &Args, cfg: &Json) -> Result<Vec<Layer>> {
    let bad = || a.unsupported("model_cfg", "VGG's cfg is a list of widths and 'M'");
    cfg.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|v| match v {
            Json::String(s) if s == "M" => Ok(Layer::Pool),
            v => v
                .as_u64()
                .filter(|&c| c > 0)
                .map(|c| Layer::Conv(c as usize))
                .ok_or_else(bad),
        })
        .collect()
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = VggArgs::read(&a)?;
    if r.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's VGG asserts output_stride == 32"));
    }
    let bn = match r.norm_layer.as_deref() {
        None => None,
        Some(n) => match Norm::from_timm(n, None) {
            Ok(Norm::Batch { eps }) => Some(eps),
            _ => return Err(a.unsupported("norm_layer", "VGG supports batchnorm only")),
        },
    };
    let layers = parse_cfg(&a, &r.model_cfg)?;
    let act_name = r.act_layer.as_str();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let (x, ch) = features(&mut b.scope("features"), in_ch, &layers, bn, act_name)?;
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, ch));
    }
    let mid = (HIDDEN as f64 * r.mlp_ratio) as usize;
    let y = conv_mlp(&mut b.scope("pre_logits"), &x, ch, mid, act_name)?;
    head(b, cfg, &y)
}

/// The `features` Sequential: conv (+ BatchNorm, folded) + act per width, `MaxPool2d(2, 2)`
/// per `'M'`; a feature map before each pool (the act) and after the last one.
fn features(
    f: &mut Builder,
    in_ch: usize,
    layers: &[Layer],
    bn: Option<f32>,
    act_name: &str,
) -> Result<(Value, usize)> {
    let mut x = f.input();
    let (mut prev, mut idx, mut stride) = (in_ch, 0usize, 1);
    for l in layers {
        match *l {
            Layer::Pool => {
                f.feature(&x, prev, stride, &format!("features.{}", idx - 1));
                x = Pool2d::new(2, 2, 0).max(f, &x, prev)?;
                idx += 1;
                stride *= 2;
            }
            Layer::Conv(v) => {
                let conv_name = idx.to_string();
                let v = f
                    .weight_shape(&format!("{conv_name}.weight"))
                    .map_or(v, |s| s[0]);
                let c = Conv::new(prev, v, 3).bias(true).init(Init::KaimingFanOut);
                x = match bn {
                    Some(eps) => {
                        idx += 1;
                        conv_bn(f, &x, &conv_name, &idx.to_string(), c, eps)?
                    }
                    None => conv2d(&mut f.scope(&conv_name), &x, c)?,
                };
                x = act(f, act_name, &x)?;
                idx += 2;
                prev = v;
            }
        }
    }
    f.feature(&x, prev, stride, &format!("features.{}", idx - 1));
    Ok((x, prev))
}

/// VGG's `ConvMlp`: a map smaller than 7 on a side is first adaptive-average-pooled up to 7
/// there, then `fc1` (7x7 conv) → act → `fc2` (1x1 conv) → act.
fn conv_mlp(b: &mut Builder, x: &Value, ch: usize, mid: usize, a: &str) -> Result<Value> {
    let k = 7usize;
    let x = adaptive_avg_up(b, x, 2, k as i64);
    let x = adaptive_avg_up(b, &x, 3, k as i64);
    let conv = |b: &mut Builder, name: &str, x: &Value, cin, cout, k: usize| -> Result<Value> {
        let c = Conv::new(cin, cout, k).pad(crate::graph::layers::Pad::Sym(0));
        let s = &mut b.scope(name);
        let w = s.param("weight", &c.weight_shape(), Init::KaimingFanOut)?;
        let bias = s.param("bias", &[cout], Init::Zeros)?;
        let kk = k as i64;
        Ok(s.op(
            "Conv",
            &[x, &w, &bias],
            vec![("kernel_shape", Attr::Ints(vec![kk, kk]))],
        ))
    };
    let y = conv(b, "fc1", &x, ch, mid, k)?;
    let y = act(b, a, &y)?;
    let y = conv(b, "fc2", &y, mid, HIDDEN, 1)?;
    act(b, a, &y)
}

/// `F.adaptive_avg_pool2d` along `axis` to `max(n, min)`: the identity when `n >= min`; else
/// bin `i` averages `x[i·n/t ..= ceil((i+1)·n/t) - 1]`, one or two elements since `n < t`.
fn adaptive_avg_up(b: &mut Builder, x: &Value, axis: i64, min: i64) -> Value {
    let shape = b.op("Shape", &[x], vec![]);
    let ax = b.ints(&[axis]);
    let n = b.op("Gather", &[&shape, &ax], vec![("axis", Attr::Int(0))]);
    let min_v = b.ints(&[min]);
    let t = b.op("Max", &[&n, &min_v], vec![]);
    let zero = b.const_i64(vec![0], &[]);
    let one = b.const_i64(vec![1], &[]);
    let t_s = b.op("Squeeze", &[&t], vec![]);
    let i = b.op("Range", &[&zero, &t_s, &one], vec![]);
    let i_n = b.op("Mul", &[&i, &n], vec![]);
    let start = b.op("Div", &[&i_n, &t], vec![]);
    // ceil((i+1)·n / t) - 1 = ((i+1)·n + t - 1) / t - 1 = (i·n + n - 1) / t
    let n1 = b.op("Sub", &[&n, &one], vec![]);
    let num = b.op("Add", &[&i_n, &n1], vec![]);
    let last = b.op("Div", &[&num, &t], vec![]);
    let g =
        |b: &mut Builder, idx: &Value| b.op("Gather", &[x, idx], vec![("axis", Attr::Int(axis))]);
    let lo = g(b, &start);
    let hi = g(b, &last);
    let s = add(b, &lo, &hi);
    scale(b, &s, 0.5)
}

/// `ClassifierHead(4096, num_classes, global_pool)`: pool, `head.fc` (normal(0, 0.01)).
fn head(b: &mut Builder, cfg: &ModelConfig, x: &Value) -> Result<(Value, usize)> {
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native VGG graph",
        ));
    }
    let pooled = global_pool(b, x, pool);
    let width = HIDDEN * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let s = &mut b.scope("head");
    let logits = fc(s, &pooled, width, cfg.num_classes, Init::Normal(0.01))?;
    Ok((logits, cfg.num_classes))
}
