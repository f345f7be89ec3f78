//! timm's `resnet.py`: ResNet (B/C/D/S/T stems and shortcuts), ResNeXt, SE-ResNet(X)t, Wide ResNet,
//! SENet-154, ResNet-RS, average-pool anti-aliased ResNets and `test_resnet`.
//!
//! The arguments each timm entrypoint passes to `ResNet` (and the config.json timm writes for it)
//! come from [`table::ARCH_TABLE`], generated from timm by `scripts/fixtures/family_resnet.py`;
//! config.json's `model_args` override them as timm's `dict(model_args, **kwargs)` does. With a
//! weights file, what the tensors determine (blocks per stage, BasicBlock vs Bottleneck, SE, deep
//! stem, conv stem pool, avg-down shortcut, shortcut kernel) is read from them; widths come from
//! the arguments, so a weights file that disagrees with them fails on the tensor's shape.

mod table;

use serde_json::{Map, Value as Json};

use super::layers::{self, Conv, Pad};
use super::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

pub const FAMILY: Family = Family {
    name: "resnet",
    examples: "resnet18/26/34/50/101/152/200 with c/d/s/t variants, resnext*, seresnet*, seresnext*, wide_resnet*, senet154, resnetrs*, resnetaa*, test_resnet",
    matches,
    build: |b, cfg| super::with_output(b, cfg, build),
    default_config,
    any_size: false,
};

/// Architectures of timm's resnet.py this builder does not build, with the reason, so they get a
/// precise message instead of "no builder".
const UNSUPPORTED: &[(&str, &str)] = &[
    ("ecaresnet", "ECA attention"),
    ("ecaresnext", "ECA attention"),
    ("resnetblur", "BlurPool anti-aliasing"),
    ("resnet50_gn", "GroupNorm"),
];

/// timm's BatchNorm2d default.
const BN_EPS: f32 = 1e-5;

fn table_entry(arch: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    table::ARCH_TABLE.iter().find(|(name, _, _)| *name == arch)
}

fn unsupported_reason(arch: &str) -> Option<&'static str> {
    UNSUPPORTED
        .iter()
        .find(|(prefix, _)| arch.starts_with(prefix))
        .map(|(_, why)| *why)
}

fn matches(arch: &str) -> bool {
    table_entry(arch).is_some() || unsupported_reason(arch).is_some()
}

fn default_config(arch: &str) -> Option<Json> {
    if unsupported_reason(arch).is_some() {
        // A minimal config so building reports why the variant is not supported.
        return Some(serde_json::json!({"architecture": arch, "num_classes": 1000}));
    }
    table_entry(arch).and_then(|(_, _, cfg)| serde_json::from_str(cfg).ok())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Basic,
    Bottleneck,
}

impl BlockKind {
    fn expansion(self) -> usize {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobalPool {
    Avg,
    Max,
    AvgMax,
    CatAvgMax,
}

/// The `ResNet(...)` arguments that shape the network, after merging model_args.
#[derive(Debug, Clone)]
struct Args {
    blocks: Vec<BlockKind>,
    layers: Vec<usize>,
    channels: Vec<usize>,
    in_chans: usize,
    output_stride: usize,
    cardinality: usize,
    base_width: usize,
    stem_width: usize,
    deep_stem: bool,
    tiered_stem: bool,
    replace_stem_pool: bool,
    block_reduce_first: usize,
    down_kernel_size: usize,
    avg_down: bool,
    act: String,
    aa_avgpool: bool,
    se: bool,
    se_rd_ratio: f64,
    global_pool: GlobalPool,
    zero_init_last: bool,
}

fn bad_arg(key: &str, v: &Json, want: &str) -> Error {
    Error::invalid_model(format!("model_args `{key}` is {v}; expected {want}"))
}

fn as_usize(key: &str, v: &Json) -> Result<usize> {
    v.as_u64()
        .filter(|&n| n <= 1 << 20)
        .map(|n| n as usize)
        .ok_or_else(|| bad_arg(key, v, "a non-negative integer"))
}

fn as_bool(key: &str, v: &Json) -> Result<bool> {
    v.as_bool().ok_or_else(|| bad_arg(key, v, "true or false"))
}

fn as_str<'a>(key: &str, v: &'a Json) -> Result<&'a str> {
    v.as_str().ok_or_else(|| bad_arg(key, v, "a string"))
}

fn as_usize_list(key: &str, v: &Json) -> Result<Vec<usize>> {
    let arr = v
        .as_array()
        .ok_or_else(|| bad_arg(key, v, "a list of integers"))?;
    arr.iter().map(|x| as_usize(key, x)).collect()
}

fn block_kind(key: &str, v: &Json) -> Result<BlockKind> {
    match as_str(key, v)? {
        "basic" | "BasicBlock" => Ok(BlockKind::Basic),
        "bottleneck" | "Bottleneck" => Ok(BlockKind::Bottleneck),
        other => Err(Error::unsupported(format!(
            "resnet block `{other}` is not supported (BasicBlock or Bottleneck)"
        ))),
    }
}

fn parse_pool(name: &str) -> Result<GlobalPool> {
    match name {
        "avg" => Ok(GlobalPool::Avg),
        "max" => Ok(GlobalPool::Max),
        "avgmax" => Ok(GlobalPool::AvgMax),
        "catavgmax" => Ok(GlobalPool::CatAvgMax),
        other => Err(Error::unsupported(format!(
            "global_pool `{other}` is not supported by the native resnet graph (avg, max, avgmax, catavgmax)"
        ))),
    }
}

impl Args {
    /// The entrypoint's arguments from the table with `model_args` applied over them.
    fn resolve(cfg: &ModelConfig) -> Result<Args> {
        let arch = cfg.architecture.as_str();
        if let Some(why) = unsupported_reason(arch) {
            return Err(Error::unsupported(format!(
                "`{arch}` uses {why}, which the native resnet graph does not implement"
            )));
        }
        let (_, entry_args, _) = table_entry(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a resnet architecture this build knows"
            ))
        })?;
        let mut merged: Map<String, Json> = serde_json::from_str(entry_args)
            .map_err(|e| Error::internal(format!("resnet table entry for {arch}: {e}")))?;
        for (k, v) in &cfg.model_args {
            merged.insert(k.clone(), v.clone());
        }

        let mut a = Args {
            blocks: vec![BlockKind::Basic; 4],
            layers: vec![],
            channels: vec![64, 128, 256, 512],
            in_chans: cfg.pretrained_cfg.input_size[0],
            output_stride: 32,
            cardinality: 1,
            base_width: 64,
            stem_width: 64,
            deep_stem: false,
            tiered_stem: false,
            replace_stem_pool: false,
            block_reduce_first: 1,
            down_kernel_size: 1,
            avg_down: false,
            act: "relu".into(),
            aa_avgpool: false,
            se: false,
            se_rd_ratio: 1.0 / 16.0,
            global_pool: GlobalPool::Avg,
            zero_init_last: true,
        };
        let mut block_list: Option<Vec<BlockKind>> = None;
        let mut unknown = Vec::new();
        for (k, v) in &merged {
            match k.as_str() {
                "block" => {
                    block_list = Some(match v {
                        Json::Array(items) => items
                            .iter()
                            .map(|x| block_kind(k, x))
                            .collect::<Result<_>>()?,
                        _ => vec![block_kind(k, v)?],
                    })
                }
                "layers" => a.layers = as_usize_list(k, v)?,
                "channels" => a.channels = as_usize_list(k, v)?,
                "in_chans" => a.in_chans = as_usize(k, v)?,
                "output_stride" => a.output_stride = as_usize(k, v)?,
                "cardinality" => a.cardinality = as_usize(k, v)?,
                "base_width" => a.base_width = as_usize(k, v)?,
                "stem_width" => a.stem_width = as_usize(k, v)?,
                "stem_type" => {
                    let s = as_str(k, v)?;
                    match s {
                        "" | "deep" | "deep_tiered" => {}
                        other => {
                            return Err(Error::unsupported(format!(
                                "resnet stem_type `{other}` is not supported"
                            )))
                        }
                    }
                    // timm tests substrings: 'deep' in stem_type, 'tiered' in stem_type.
                    a.deep_stem = s.contains("deep");
                    a.tiered_stem = s.contains("tiered");
                }
                "replace_stem_pool" => a.replace_stem_pool = as_bool(k, v)?,
                "block_reduce_first" => a.block_reduce_first = as_usize(k, v)?,
                "down_kernel_size" => a.down_kernel_size = as_usize(k, v)?,
                "avg_down" => a.avg_down = as_bool(k, v)?,
                "act_layer" => a.act = as_str(k, v)?.to_string(),
                "norm_layer" => match as_str(k, v)? {
                    "batchnorm" | "batchnorm2d" => {}
                    other => {
                        return Err(Error::unsupported(format!(
                            "resnet norm_layer `{other}` is not supported (BatchNorm2d only)"
                        )))
                    }
                },
                "aa_layer" => match v {
                    Json::Null => a.aa_avgpool = false,
                    _ => match as_str(k, v)? {
                        "avg" | "avgpool" => a.aa_avgpool = true,
                        other => {
                            return Err(Error::unsupported(format!(
                                "resnet aa_layer `{other}` is not supported (avg pool only)"
                            )))
                        }
                    },
                },
                // Table form of block_args.attn_layer (a partial in timm's resnetrs entrypoints).
                "attn_layer" => a.se = parse_attn(v)?,
                "attn_rd_ratio" => {
                    a.se_rd_ratio = v.as_f64().ok_or_else(|| bad_arg(k, v, "a number"))?
                }
                "block_args" => match v {
                    Json::Null => {}
                    Json::Object(m) => {
                        for (bk, bv) in m {
                            match bk.as_str() {
                                "attn_layer" => a.se = parse_attn(bv)?,
                                other => unknown.push(format!("block_args.{other}")),
                            }
                        }
                    }
                    _ => return Err(bad_arg(k, v, "an object")),
                },
                "global_pool" => {
                    if let Some(s) = v.as_str() {
                        a.global_pool = parse_pool(s)?;
                    }
                }
                "zero_init_last" => a.zero_init_last = as_bool(k, v)?,
                // Set from the config's root; training-only regularisers change nothing at inference.
                "num_classes" | "drop_rate" | "drop_path_rate" | "drop_block_rate" => {}
                other => unknown.push(other.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::unsupported(format!(
                "model_args {} of `{arch}` are not supported by the native resnet graph",
                unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(gp) = cfg.global_pool.as_deref() {
            a.global_pool = parse_pool(gp)?;
        }
        let n = a.channels.len();
        if n == 0 || a.layers.len() != n {
            return Err(Error::invalid_model(format!(
                "`{arch}`: layers {:?} and channels {:?} must have the same, non-zero length",
                a.layers, a.channels
            )));
        }
        a.blocks = match block_list {
            Some(list) if list.len() == 1 => vec![list[0]; n],
            Some(list) if list.len() == n => list,
            Some(list) => {
                return Err(Error::invalid_model(format!(
                    "`{arch}`: {} block types for {n} stages",
                    list.len()
                )));
            }
            None => {
                return Err(Error::internal(format!(
                    "resnet table entry for {arch} has no block type"
                )))
            }
        };
        if ![8, 16, 32].contains(&a.output_stride) {
            return Err(Error::invalid_model(format!(
                "`{arch}`: output_stride must be 8, 16 or 32, not {}",
                a.output_stride
            )));
        }
        if a.in_chans != cfg.pretrained_cfg.input_size[0] {
            return Err(Error::invalid_model(format!(
                "`{arch}`: model_args in_chans {} disagrees with input_size {:?}",
                a.in_chans, cfg.pretrained_cfg.input_size
            )));
        }
        if a.cardinality == 0
            || a.block_reduce_first == 0
            || a.down_kernel_size == 0
            || a.stem_width == 0
        {
            return Err(Error::invalid_model(format!("`{arch}`: cardinality, block_reduce_first, down_kernel_size and stem_width must be positive")));
        }
        Ok(a)
    }

    /// Replaces what the weights determine with what they hold.
    fn read_weights(&mut self, b: &Builder) -> Result<()> {
        if b.weights().is_none() {
            return Ok(());
        }
        self.deep_stem = b.has_weight("conv1.0.weight");
        self.replace_stem_pool = b.has_weight("maxpool.0.weight");
        self.se = b.has_weight("layer1.0.se.fc1.weight");
        for s in 0..self.layers.len() {
            let stage = format!("layer{}", s + 1);
            let mut depth = 0;
            while b.has_weight(&format!("{stage}.{depth}.conv1.weight")) {
                depth += 1;
            }
            if depth == 0 {
                return Err(Error::invalid_model(format!(
                    "the weights have no `{stage}.0.conv1.weight`; {} stages were expected",
                    self.layers.len()
                )));
            }
            self.layers[s] = depth;
            self.blocks[s] = if b.has_weight(&format!("{stage}.0.conv3.weight")) {
                BlockKind::Bottleneck
            } else {
                BlockKind::Basic
            };
            // Avg-down shortcuts are (pool, conv, bn): a 4-D `downsample.1.weight`.
            if let Some(shape) = b.weight_shape(&format!("{stage}.0.downsample.1.weight")) {
                self.avg_down = shape.len() == 4;
            }
            if let Some(shape) = b.weight_shape(&format!("{stage}.0.downsample.0.weight")) {
                if shape.len() == 4 && shape[2] > 1 {
                    self.down_kernel_size = shape[2];
                }
            }
        }
        Ok(())
    }
}

fn parse_attn(v: &Json) -> Result<bool> {
    match v {
        Json::Null => Ok(false),
        Json::String(s) if s == "se" => Ok(true),
        Json::String(s) if s.is_empty() => Ok(false),
        Json::String(s) => Err(Error::unsupported(format!(
            "resnet attn_layer `{s}` is not supported by the native graph (se only)"
        ))),
        other => Err(bad_arg("attn_layer", other, "a string")),
    }
}

/// `nn.BatchNorm2d` with the weight initialised by `weight_init` when there are no weights
/// (timm zero-initialises the last BN of each residual branch).
fn bn(b: &mut Builder, x: &Value, prefix: &str, ch: usize, weight_init: Init) -> Result<Value> {
    let w = b.param(&format!("{prefix}.weight"), &[ch], weight_init)?;
    let bias = b.param(&format!("{prefix}.bias"), &[ch], Init::Zeros)?;
    let mean = b.param(&format!("{prefix}.running_mean"), &[ch], Init::Zeros)?;
    let var = b.param(&format!("{prefix}.running_var"), &[ch], Init::Ones)?;
    Ok(b.op(
        "BatchNormalization",
        &[x, &w, &bias, &mean, &var],
        vec![("epsilon", Attr::Float(BN_EPS))],
    ))
}

fn avg_pool(
    b: &mut Builder,
    x: &Value,
    k: usize,
    stride: usize,
    pads: [usize; 4],
    ceil: bool,
    count_pad: bool,
) -> Value {
    b.op(
        "AveragePool",
        &[x],
        vec![
            ("kernel_shape", Attr::Ints(vec![k as i64; 2])),
            ("strides", Attr::Ints(vec![stride as i64; 2])),
            ("pads", Attr::Ints(pads.iter().map(|&p| p as i64).collect())),
            ("ceil_mode", Attr::Int(ceil as i64)),
            ("count_include_pad", Attr::Int(count_pad as i64)),
        ],
    )
}

/// timm's `create_aa(nn.AvgPool2d, stride=s)`, i.e. `nn.AvgPool2d(s)`.
fn aa_pool(b: &mut Builder, x: &Value, stride: usize) -> Value {
    if stride == 1 {
        return x.clone();
    }
    avg_pool(b, x, stride, stride, [0; 4], false, true)
}

/// timm's `make_divisible(v, 8, round_limit=0)` for SE reduction channels.
fn se_channels(channels: usize, ratio: f64) -> usize {
    let v = channels as f64 * ratio;
    (((v + 4.0) as usize) / 8 * 8).max(8)
}

/// `SEModule`: global mean, 1x1 conv, ReLU, 1x1 conv, sigmoid gate.
fn squeeze_excite(
    b: &mut Builder,
    x: &Value,
    prefix: &str,
    ch: usize,
    ratio: f64,
) -> Result<Value> {
    let rd = match b.weight_shape(&format!("{prefix}.fc1.weight")) {
        Some(s) if s.len() == 4 => s[0],
        _ => se_channels(ch, ratio),
    };
    let s = layers::global_avg_pool(b, x);
    let s = layers::conv2d(
        b,
        &s,
        &format!("{prefix}.fc1"),
        Conv::new(ch, rd, 1).bias(true),
    )?;
    let s = layers::relu(b, &s);
    let s = layers::conv2d(
        b,
        &s,
        &format!("{prefix}.fc2"),
        Conv::new(rd, ch, 1).bias(true),
    )?;
    let g = layers::sigmoid(b, &s);
    Ok(layers::mul(b, x, &g))
}

/// Shortcut projection (`downsample_conv` / `downsample_avg`).
#[allow(clippy::too_many_arguments)]
fn downsample(
    b: &mut Builder,
    a: &Args,
    x: &Value,
    prefix: &str,
    in_ch: usize,
    out_ch: usize,
    stride: usize,
    dilation: usize,
    first_dilation: usize,
) -> Result<Value> {
    let prefix = format!("{prefix}.downsample");
    if a.avg_down {
        let avg_stride = if dilation == 1 { stride } else { 1 };
        let pooled = if stride == 1 && dilation == 1 {
            x.clone()
        } else if avg_stride == 1 && dilation > 1 {
            // AvgPool2dSame(2, 1): zero padding of one pixel at the end, counted in the mean.
            avg_pool(b, x, 2, 1, [0, 0, 1, 1], true, true)
        } else {
            avg_pool(b, x, 2, avg_stride, [0; 4], true, false)
        };
        let y = layers::conv2d(
            b,
            &pooled,
            &format!("{prefix}.1"),
            Conv::new(in_ch, out_ch, 1).pad(Pad::Sym(0)),
        )?;
        bn(b, &y, &format!("{prefix}.2"), out_ch, Init::Ones)
    } else {
        let k = if stride == 1 && dilation == 1 {
            1
        } else {
            a.down_kernel_size
        };
        let fd = if k > 1 { first_dilation } else { 1 };
        let p = ((stride - 1) + fd * (k - 1)) / 2;
        let y = layers::conv2d(
            b,
            x,
            &format!("{prefix}.0"),
            Conv::new(in_ch, out_ch, k)
                .stride(stride)
                .pad(Pad::Sym(p))
                .dilation(fd),
        )?;
        bn(b, &y, &format!("{prefix}.1"), out_ch, Init::Ones)
    }
}

struct BlockGeom {
    in_ch: usize,
    planes: usize,
    stride: usize,
    dilation: usize,
    first_dilation: usize,
    shortcut: bool,
}

fn block(
    b: &mut Builder,
    a: &Args,
    kind: BlockKind,
    x: &Value,
    prefix: &str,
    g: &BlockGeom,
) -> Result<Value> {
    let last_init = if a.zero_init_last {
        Init::Zeros
    } else {
        Init::Ones
    };
    let use_aa = a.aa_avgpool && (g.stride == 2 || g.first_dilation != g.dilation);
    let conv_stride = if use_aa { 1 } else { g.stride };
    let out_ch = g.planes * kind.expansion();
    let (y, ch) = match kind {
        BlockKind::Basic => {
            if a.cardinality != 1 || a.base_width != 64 {
                return Err(Error::invalid_model(format!(
                    "BasicBlock needs cardinality 1 and base_width 64 (got {} and {})",
                    a.cardinality, a.base_width
                )));
            }
            let first = g.planes / a.block_reduce_first;
            let fd = g.first_dilation;
            let y = layers::conv2d(
                b,
                x,
                &format!("{prefix}.conv1"),
                Conv::new(g.in_ch, first, 3)
                    .stride(conv_stride)
                    .pad(Pad::Sym(fd))
                    .dilation(fd),
            )?;
            let y = bn(b, &y, &format!("{prefix}.bn1"), first, Init::Ones)?;
            let y = layers::act(b, &a.act, &y)?;
            let y = if use_aa { aa_pool(b, &y, g.stride) } else { y };
            let d = g.dilation;
            let y = layers::conv2d(
                b,
                &y,
                &format!("{prefix}.conv2"),
                Conv::new(first, out_ch, 3).pad(Pad::Sym(d)).dilation(d),
            )?;
            (
                bn(b, &y, &format!("{prefix}.bn2"), out_ch, last_init)?,
                out_ch,
            )
        }
        BlockKind::Bottleneck => {
            // int(floor(planes * (base_width / 64)) * cardinality)
            let width = (g.planes * a.base_width / 64) * a.cardinality;
            let first = width / a.block_reduce_first;
            let y = layers::conv2d(
                b,
                x,
                &format!("{prefix}.conv1"),
                Conv::new(g.in_ch, first, 1),
            )?;
            let y = bn(b, &y, &format!("{prefix}.bn1"), first, Init::Ones)?;
            let y = layers::act(b, &a.act, &y)?;
            let fd = g.first_dilation;
            let y = layers::conv2d(
                b,
                &y,
                &format!("{prefix}.conv2"),
                Conv::new(first, width, 3)
                    .stride(conv_stride)
                    .pad(Pad::Sym(fd))
                    .dilation(fd)
                    .groups(a.cardinality),
            )?;
            let y = bn(b, &y, &format!("{prefix}.bn2"), width, Init::Ones)?;
            let y = layers::act(b, &a.act, &y)?;
            let y = if use_aa { aa_pool(b, &y, g.stride) } else { y };
            let y = layers::conv2d(
                b,
                &y,
                &format!("{prefix}.conv3"),
                Conv::new(width, out_ch, 1),
            )?;
            (
                bn(b, &y, &format!("{prefix}.bn3"), out_ch, last_init)?,
                out_ch,
            )
        }
    };
    let y = if a.se {
        squeeze_excite(b, &y, &format!("{prefix}.se"), ch, a.se_rd_ratio)?
    } else {
        y
    };
    let shortcut = if g.shortcut {
        downsample(
            b,
            a,
            x,
            prefix,
            g.in_ch,
            out_ch,
            g.stride,
            g.dilation,
            g.first_dilation,
        )?
    } else {
        x.clone()
    };
    let y = layers::add(b, &y, &shortcut);
    layers::act(b, &a.act, &y)
}

fn stem(b: &mut Builder, a: &Args, x: &Value) -> Result<(Value, usize)> {
    let inplanes = if a.deep_stem { a.stem_width * 2 } else { 64 };
    let y = if a.deep_stem {
        let (c0, c1) = if a.tiered_stem {
            (3 * (a.stem_width / 4), a.stem_width)
        } else {
            (a.stem_width, a.stem_width)
        };
        let y = layers::conv2d(
            b,
            x,
            "conv1.0",
            Conv::new(a.in_chans, c0, 3).stride(2).pad(Pad::Sym(1)),
        )?;
        let y = bn(b, &y, "conv1.1", c0, Init::Ones)?;
        let y = layers::act(b, &a.act, &y)?;
        let y = layers::conv2d(b, &y, "conv1.3", Conv::new(c0, c1, 3).pad(Pad::Sym(1)))?;
        let y = bn(b, &y, "conv1.4", c1, Init::Ones)?;
        let y = layers::act(b, &a.act, &y)?;
        layers::conv2d(
            b,
            &y,
            "conv1.6",
            Conv::new(c1, inplanes, 3).pad(Pad::Sym(1)),
        )?
    } else {
        layers::conv2d(
            b,
            x,
            "conv1",
            Conv::new(a.in_chans, inplanes, 7)
                .stride(2)
                .pad(Pad::Sym(3)),
        )?
    };
    let y = bn(b, &y, "bn1", inplanes, Init::Ones)?;
    let y = layers::act(b, &a.act, &y)?;

    // The stem pool keeps the name `maxpool` whatever it is.
    let y = if a.replace_stem_pool {
        let stride = if a.aa_avgpool { 1 } else { 2 };
        let y = layers::conv2d(
            b,
            &y,
            "maxpool.0",
            Conv::new(inplanes, inplanes, 3)
                .stride(stride)
                .pad(Pad::Sym(1)),
        )?;
        let (y, bn_name) = if a.aa_avgpool {
            (aa_pool(b, &y, 2), "maxpool.2")
        } else {
            (y, "maxpool.1")
        };
        let y = bn(b, &y, bn_name, inplanes, Init::Ones)?;
        layers::act(b, &a.act, &y)?
    } else if a.aa_avgpool {
        aa_pool(b, &y, 2)
    } else {
        b.op(
            "MaxPool",
            &[&y],
            vec![
                ("kernel_shape", Attr::Ints(vec![3, 3])),
                ("strides", Attr::Ints(vec![2, 2])),
                ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ],
        )
    };
    Ok((y, inplanes))
}

fn build(b: &mut Builder, cfg: &ModelConfig, output: OutputKind) -> Result<(Value, usize)> {
    let mut a = Args::resolve(cfg)?;
    a.read_weights(b)?;

    let x = b.input();
    let (mut x, mut inplanes) = stem(b, &a, &x)?;

    // make_blocks: stride 2 per stage after the first until output_stride, then dilation instead.
    let mut net_stride = 4;
    let (mut dilation, mut prev_dilation) = (1, 1);
    for s in 0..a.channels.len() {
        let kind = a.blocks[s];
        let planes = a.channels[s];
        let mut stride = if s == 0 { 1 } else { 2 };
        if net_stride >= a.output_stride {
            dilation *= stride;
            stride = 1;
        } else {
            net_stride *= stride;
        }
        let needs_shortcut = stride != 1 || inplanes != planes * kind.expansion();
        for i in 0..a.layers[s] {
            let g = BlockGeom {
                in_ch: inplanes,
                planes,
                stride: if i == 0 { stride } else { 1 },
                dilation,
                first_dilation: prev_dilation,
                shortcut: i == 0 && needs_shortcut,
            };
            x = block(b, &a, kind, &x, &format!("layer{}.{i}", s + 1), &g)?;
            prev_dilation = dilation;
            inplanes = planes * kind.expansion();
        }
    }

    let num_features = inplanes;
    let (pooled, dim) = match a.global_pool {
        GlobalPool::Avg => (layers::global_avg_pool_flat(b, &x), num_features),
        GlobalPool::Max => (global_max_pool_flat(b, &x), num_features),
        GlobalPool::AvgMax => {
            let avg = layers::global_avg_pool_flat(b, &x);
            let max = global_max_pool_flat(b, &x);
            let sum = layers::add(b, &avg, &max);
            let half = b.const_f32(vec![0.5], &[]);
            (layers::mul(b, &sum, &half), num_features)
        }
        GlobalPool::CatAvgMax => {
            let avg = layers::global_avg_pool_flat(b, &x);
            let max = global_max_pool_flat(b, &x);
            (
                b.op("Concat", &[&avg, &max], vec![("axis", Attr::Int(1))]),
                2 * num_features,
            )
        }
    };
    if output == OutputKind::Features || cfg.num_classes == 0 {
        // With num_classes 0 timm's fc is Identity and the logits are the pooled features.
        if output == OutputKind::Logits && b.has_weight("fc.weight") {
            return Err(Error::invalid_model(
                "num_classes is 0 but the weights hold a classifier `fc.weight`",
            ));
        }
        return Ok((pooled, dim));
    }
    let logits = layers::linear_2d(
        b,
        &pooled,
        "fc",
        dim,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}

fn global_max_pool_flat(b: &mut Builder, x: &Value) -> Value {
    let p = b.op("GlobalMaxPool", &[x], vec![]);
    b.op("Flatten", &[&p], vec![("axis", Attr::Int(1))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_entries_parse_and_match_their_config() {
        for (arch, args, cfg) in table::ARCH_TABLE {
            let a: Map<String, Json> = serde_json::from_str(args).unwrap();
            assert!(
                a.contains_key("block") && a.contains_key("layers"),
                "{arch}"
            );
            let c = default_config(arch)
                .unwrap_or_else(|| panic!("{arch}: config does not parse: {cfg}"));
            assert_eq!(c["architecture"], *arch);
            let parsed = ModelConfig::parse(cfg.as_bytes()).unwrap();
            Args::resolve(&parsed).unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }

    #[test]
    fn se_reduction_follows_make_divisible() {
        assert_eq!(se_channels(64, 1.0 / 16.0), 8);
        assert_eq!(se_channels(256, 1.0 / 16.0), 16);
        assert_eq!(se_channels(2048, 1.0 / 16.0), 128);
        assert_eq!(se_channels(256, 0.25), 64);
        assert_eq!(se_channels(200, 1.0 / 16.0), 16);
    }

    #[test]
    fn unsupported_resnet_variants_are_named() {
        assert!(matches("ecaresnet50d") && matches("resnet50") && !matches("resnetv2_50"));
        let cfg =
            ModelConfig::parse(br#"{"architecture":"ecaresnet50d","num_classes":10}"#).unwrap();
        let e = Args::resolve(&cfg).unwrap_err();
        assert!(e.message().contains("ECA"), "{}", e.message());
    }
}
