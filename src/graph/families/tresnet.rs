//! TResNet (timm's `tresnet.py`): `tresnet_m`, `tresnet_l`, `tresnet_xl` and `tresnet_v2_l`.
//! A SpaceToDepth stem (4x4 blocks into channels) and one 3x3 conv, then ResNet stages whose
//! strided convs are anti-aliased (stride-1 conv, BatchNorm + leaky ReLU, then `BlurPool2d`),
//! SE in the first three stages, avg-pool shortcuts. The inplace-ABN of the original checkpoints
//! is BatchNorm + leaky ReLU in timm's model (its filter converted the weights); every
//! BatchNorm here is folded into its conv at load.
//!
//! `feature_info`: timm lists the stem as module `''` at reduction 2, which its features_only
//! wrapper cannot return (its default `out_indices` is 1..4); here index 0 is the stem conv's
//! output (`body.conv1`, reduction 4), then `body.layer1`..`body.layer4`.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::conv::conv_bn_init;
use crate::graph::layers::heads::fc;
use crate::graph::layers::pool::{blur_pool2d, global_pool, Pool2d, PoolKind};
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{add, conv_bn, Conv};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/tresnet.json"));

pub const FAMILY: Family = Family {
    name: "tresnet",
    examples: "tresnet_m, tresnet_l, tresnet_xl, tresnet_v2_l",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `TResNet.__init__`, timm's defaults.
    struct TResNetArgs {
        layers: Vec<usize> = vec![3, 4, 11, 3],
        width_factor: f64 = 1.0,
        v2: bool = false,
    }
}

const EPS: f32 = 1e-5;
/// The blocks' leaky ReLU slope (`partial(nn.LeakyReLU, negative_slope=1e-3)`).
const BLOCK_SLOPE: f32 = 1e-3;
/// The stem conv's `nn.LeakyReLU()` default slope.
const STEM_SLOPE: f32 = 1e-2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Basic,
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = TResNetArgs::read(&a)?;
    if r.layers.len() != 4 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: TResNet has four stages, model_args layers = {:?}",
            r.layers
        )));
    }
    if r.width_factor <= 0.0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: width_factor must be positive, got {}",
            r.width_factor
        )));
    }
    // Python's int(): truncation.
    let mut planes = (64.0 * r.width_factor) as usize;
    if r.v2 {
        planes = planes / 8 * 8;
    }
    if planes == 0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: width_factor {} leaves no channels",
            r.width_factor
        )));
    }
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let (x, ch) = body(&mut b.scope("body"), in_ch, planes, &r)?;
    b.default_out_indices(&[1, 2, 3, 4]);
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, ch));
    }
    head(b, cfg, &x, ch)
}

/// The `body` Sequential: `s2d`, `conv1`, `layer1`..`layer4`. Returns the output and its width.
fn body(b: &mut Builder, in_ch: usize, planes: usize, r: &TResNetArgs) -> Result<(Value, usize)> {
    let input = b.input();
    let x = space_to_depth(b, &input, in_ch * 16)?;
    let c = Conv::new(in_ch * 16, planes, 3);
    let x = conv_bn(&mut b.scope("conv1"), &x, "conv", "bn", c, EPS)?;
    let mut x = leaky(b, &x, STEM_SLOPE);
    b.feature(&x, planes, 4, "body.conv1");

    let early = if r.v2 {
        Block::Bottleneck
    } else {
        Block::Basic
    };
    let stages = [
        (early, planes, 1, true),
        (early, planes * 2, 2, true),
        (Block::Bottleneck, planes * 4, 2, true),
        (Block::Bottleneck, planes * 8, 2, false),
    ];
    let mut inplanes = planes;
    let mut reduction = 4;
    for (i, &(kind, p, stride, use_se)) in stages.iter().enumerate() {
        let name = format!("layer{}", i + 1);
        reduction *= stride;
        for j in 0..r.layers[i] {
            let s = &mut b.scope(format!("{name}.{j}"));
            let st = if j == 0 { stride } else { 1 };
            x = block(s, &x, inplanes, p, st, kind, use_se)?;
            inplanes = p * kind.expansion();
        }
        b.feature(&x, inplanes, reduction, &format!("body.{name}"));
    }
    Ok((x, inplanes))
}

/// timm's `SpaceToDepth(4)`: `[N, C, H, W]` → `[N, 16·C, H/4, W/4]`, channels ordered
/// (row in block, column in block, C) — ONNX `SpaceToDepth`'s order.
fn space_to_depth(b: &mut Builder, x: &Value, out_ch: usize) -> Result<Value> {
    let y = b.op("SpaceToDepth", &[x], vec![("blocksize", Attr::Int(4))]);
    let step = Step::Window {
        k: 4,
        stride: 4,
        pad: 0,
        dilation: 1,
        ceil: false,
    };
    b.set_spatial(&y, x, step, out_ch)?;
    Ok(y)
}

fn leaky(b: &mut Builder, x: &Value, slope: f32) -> Value {
    b.op("LeakyRelu", &[x], vec![("alpha", Attr::Float(slope))])
}

/// timm's `ConvNormAct` as TResNet uses it: a `k`x`k` conv and BatchNorm (`conv`, `bn`;
/// folded) with a leaky ReLU (`slope`) or none. With `stride` 2 the conv runs at stride 1 and
/// `BlurPool2d` (the `aa` module, no weights) downsamples after the activation.
#[derive(Debug, Clone, Copy)]
struct Cna {
    in_ch: usize,
    out_ch: usize,
    k: usize,
    stride: usize,
    slope: Option<f32>,
    /// The BatchNorm weight without weights (timm zeroes each residual branch's last).
    bn_init: Init,
}

impl Cna {
    fn new(in_ch: usize, out_ch: usize, k: usize, slope: Option<f32>) -> Self {
        Cna {
            in_ch,
            out_ch,
            k,
            stride: 1,
            slope,
            bn_init: Init::Ones,
        }
    }

    fn stride(self, stride: usize) -> Self {
        Cna { stride, ..self }
    }

    fn zero_init(self) -> Self {
        Cna {
            bn_init: Init::Zeros,
            ..self
        }
    }

    /// Applies it as module `name` of the current scope.
    fn apply(&self, b: &mut Builder, name: &str, x: &Value) -> Result<Value> {
        let s = &mut b.scope(name);
        let c = Conv::new(self.in_ch, self.out_ch, self.k);
        let y = conv_bn_init(s, x, "conv", "bn", c, EPS, self.bn_init)?;
        let y = match self.slope {
            Some(slope) => leaky(s, &y, slope),
            None => y,
        };
        if self.stride > 1 {
            blur_pool2d(s, &y, self.out_ch, 3, self.stride, true)
        } else {
            Ok(y)
        }
    }
}

/// timm's TResNet `BasicBlock` / `Bottleneck`: the shortcut (`downsample`: a 2x2 ceil-mode avg
/// pool when striding, then a 1x1 `ConvNormAct` without activation), SE (`SEModule`, at least
/// 64 reduction channels), the residual add and a ReLU.
fn block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    planes: usize,
    stride: usize,
    kind: Block,
    use_se: bool,
) -> Result<Value> {
    let out = planes * kind.expansion();
    let shortcut = if stride != 1 || in_ch != out {
        let (src, idx) = if stride == 2 {
            let p = Pool2d::new(2, 2, 0).ceil(true).count_include_pad(false);
            (p.avg(b, x, in_ch)?, 1)
        } else {
            (x.clone(), 0)
        };
        Cna::new(in_ch, out, 1, None).apply(b, &format!("downsample.{idx}"), &src)?
    } else {
        x.clone()
    };
    let se = |b: &mut Builder, y: &Value, ch: usize, rd: usize| -> Result<Value> {
        if !use_se {
            return Ok(y.clone());
        }
        let rd = b.weight_shape("se.fc1.weight").map_or(rd, |s| s[0]);
        SqueezeExcite::se_module(ch, rd).apply(&mut b.scope("se"), y)
    };
    let slope = Some(BLOCK_SLOPE);
    let y = match kind {
        Block::Basic => {
            let c1 = Cna::new(in_ch, planes, 3, slope).stride(stride);
            let y = c1.apply(b, "conv1", x)?;
            let y = Cna::new(planes, planes, 3, None)
                .zero_init()
                .apply(b, "conv2", &y)?;
            se(b, &y, out, (out / 4).max(64))?
        }
        Block::Bottleneck => {
            let y = Cna::new(in_ch, planes, 1, slope).apply(b, "conv1", x)?;
            let c2 = Cna::new(planes, planes, 3, slope).stride(stride);
            let y = c2.apply(b, "conv2", &y)?;
            let y = se(b, &y, planes, (out / 8).max(64))?;
            Cna::new(planes, out, 1, None)
                .zero_init()
                .apply(b, "conv3", &y)?
        }
    };
    let y = add(b, &y, &shortcut);
    Ok(b.op("Relu", &[&y], vec![]))
}

/// timm's `ClassifierHead`: global pool (default `'fast'`, the average), `head.fc` (init
/// normal(0, 0.01)).
fn head(b: &mut Builder, cfg: &ModelConfig, x: &Value, ch: usize) -> Result<(Value, usize)> {
    let name = cfg.global_pool.as_deref().unwrap_or("fast");
    let pool = PoolKind::from_timm(name)?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native TResNet graph",
        ));
    }
    let pooled = global_pool(b, x, pool);
    let width = ch * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = fc(
        &mut b.scope("head"),
        &pooled,
        width,
        cfg.num_classes,
        Init::Normal(0.01),
    )?;
    Ok((logits, cfg.num_classes))
}
