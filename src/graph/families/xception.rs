//! Xception (timm's `xception.py`): `legacy_xception`, the original Keras-ported model.
//!
//! Widths are read from the weights where there are weights (timm's literals otherwise), so a
//! narrowed model is built as its tensors say. Every BatchNorm follows a conv and is folded.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::fc;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::{act, add, conv2d, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};

static TABLE: Table = Table::new(include_str!("../tables/xception.json"));

pub const FAMILY: Family = Family {
    name: "xception",
    examples: "legacy_xception",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;

/// A value and its channel count.
#[derive(Clone)]
struct X(Value, usize);

/// The output width of conv `name` (its weight's first dimension), `default` without weights.
fn width(b: &Builder, name: &str, default: usize) -> usize {
    b.weight_shape(&format!("{name}.weight"))
        .map_or(default, |w| w[0])
}

/// `nn.Conv2d(in, out, k, stride, pad, bias=False)` + `nn.BatchNorm2d`, folded.
#[allow(clippy::too_many_arguments)]
fn conv_bn_k(
    b: &mut Builder,
    x: &X,
    conv: &str,
    bn: &str,
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> Result<X> {
    let out = width(b, conv, out);
    let c = Conv::new(x.1, out, k).stride(stride).pad(Pad::Sym(pad));
    Ok(X(conv_bn(b, &x.0, conv, bn, c, BN_EPS)?, out))
}

/// `SeparableConv2d(in, out, 3, 1, 1)` (depthwise `conv1`, `pointwise`) + the BatchNorm `bn`
/// after it, folded into the pointwise conv.
fn separable_bn(b: &mut Builder, x: &X, sep: &str, bn: &str, out: usize) -> Result<X> {
    let dw = Conv::new(x.1, x.1, 3).pad(Pad::Sym(1)).depthwise();
    let y = conv2d(&mut b.scope(sep).scope("conv1"), &x.0, dw)?;
    let pw_name = format!("{sep}.pointwise");
    conv_bn_k(b, &X(y, x.1), &pw_name, bn, out, 1, 1, 0)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    // `Xception.__init__` has no structural argument: any model_args key but the common ones is refused.
    a.finish()?;
    let x = X(b.input(), cfg.pretrained_cfg.input_size[0]);
    let x = conv_bn_k(b, &x, "conv1", "bn1", 32, 3, 2, 0)?;
    let x = X(act(b, "relu", &x.0)?, x.1);
    let x = conv_bn_k(b, &x, "conv2", "bn2", 64, 3, 1, 0)?;
    let mut x = X(act(b, "relu", &x.0)?, x.1);
    b.feature(&x.0, x.1, 2, "act2");
    // (out, reps, stride, start_with_relu, grow_first) of block1..block12.
    let mut blocks = vec![
        (128, 2, 2, false, true),
        (256, 2, 2, true, true),
        (728, 2, 2, true, true),
    ];
    blocks.extend([(728, 3, 1, true, true); 8]);
    blocks.push((1024, 2, 2, true, false));
    // timm hooks the ReLU opening the next block: the map after block1, block2 and block11.
    let taps = [
        (1, 4, "block2.rep.0"),
        (2, 8, "block3.rep.0"),
        (11, 16, "block12.rep.0"),
    ];
    for (i, &(out, reps, stride, relu_first, grow_first)) in blocks.iter().enumerate() {
        let n = i + 1;
        x = block(
            &mut b.scope(format!("block{n}")),
            &x,
            out,
            reps,
            stride,
            relu_first,
            grow_first,
        )?;
        if let Some(&(_, red, module)) = taps.iter().find(|t| t.0 == n) {
            let y = act(b, "relu", &x.0)?;
            b.feature(&y, x.1, red, module);
        }
    }
    let x = separable_bn(b, &x, "conv3", "bn3", 1536)?;
    let x = X(act(b, "relu", &x.0)?, x.1);
    let x = separable_bn(b, &x, "conv4", "bn4", 2048)?;
    let x = X(act(b, "relu", &x.0)?, x.1);
    b.feature(&x.0, x.1, 32, "act4");
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x.0, x.1));
    }
    head(b, cfg, &x)
}

/// `Block`: `reps` × (ReLU, SeparableConv2d 3x3, BatchNorm) (the first ReLU dropped unless
/// `start_with_relu`), a 3x3 max pool for a stride, plus the input or its `skip` conv + `skipbn`.
fn block(
    b: &mut Builder,
    inp: &X,
    out: usize,
    reps: usize,
    stride: usize,
    relu_first: bool,
    grow_first: bool,
) -> Result<X> {
    let mut x = inp.clone();
    // `rep` indices: (ReLU, SeparableConv2d, BatchNorm) per rep, less the dropped first ReLU.
    let first = usize::from(!relu_first);
    for i in 0..reps {
        let outc = if grow_first || i == reps - 1 {
            out
        } else {
            inp.1
        };
        if i > 0 || relu_first {
            x = X(act(b, "relu", &x.0)?, x.1);
        }
        let (sep, bn) = (3 * i + 1 - first, 3 * i + 2 - first);
        x = separable_bn(b, &x, &format!("rep.{sep}"), &format!("rep.{bn}"), outc)?;
    }
    if stride != 1 {
        x = X(Pool2d::new(3, stride, 1).max(b, &x.0, x.1)?, x.1);
    }
    let skip = if x.1 != inp.1 || stride != 1 {
        conv_bn_k(b, inp, "skip", "skipbn", x.1, 1, stride, 0)?.0
    } else {
        inp.0.clone()
    };
    Ok(X(add(b, &x.0, &skip), x.1))
}

/// `create_classifier`: global pool, `fc`.
fn head(b: &mut Builder, cfg: &ModelConfig, x: &X) -> Result<(Value, usize)> {
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native Xception graph",
        ));
    }
    let pooled = global_pool(b, &x.0, pool);
    let width = x.1 * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = fc(b, &pooled, width, cfg.num_classes, Init::DefaultUniform)?;
    Ok((logits, cfg.num_classes))
}
