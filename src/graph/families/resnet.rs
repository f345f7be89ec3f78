//! timm's `resnet.py`: ResNet (B/C/D/S/T stems and shortcuts), ResNeXt, SE-ResNet(X)t, Wide
//! ResNet, SENet-154, ResNet-RS, average-pool anti-aliased ResNets and `test_resnet`.
//!
//! The arguments each entrypoint passes to `ResNet` (and the config.json timm writes for it) come
//! from the generated table; config.json's `model_args` override them as timm's
//! `dict(model_args, **kwargs)` does. With a weights file, what the tensors determine (blocks per
//! stage, BasicBlock vs Bottleneck, SE, deep stem, conv stem pool, avg-down shortcut, shortcut
//! kernel) is read from them; widths come from the arguments, so weights that disagree with them
//! fail on the tensor's shape. The table also lists the variants this graph refuses by name (ECA
//! attention, GroupNorm, blur-pool anti-aliasing, pruned channel counts).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::conv::conv_bn_init;
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::pool::{avg_pool2d_same_s1, Pool2d, PoolKind};
use crate::graph::layers::se::{rd_channels, SqueezeExcite};
use crate::graph::layers::{self, conv_bn, Conv, Norm};
use crate::graph::spatial::Step;
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};

static TABLE: Table = Table::new(include_str!("../tables/resnet.json"));

pub const FAMILY: Family = Family {
    name: "resnet",
    examples: "resnet10t..resnet200d with c/d/s/t variants, resnext*, seresnet*, seresnext*, wide_resnet*, senet154, resnetrs*, resnetaa*, test_resnet",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// A spatial step that keeps the size.
const IDENTITY: Step = Step::Window {
    k: 1,
    stride: 1,
    pad: 0,
    dilation: 1,
    ceil: false,
};

/// timm's `BatchNorm2d` eps.
const BN_EPS: f32 = 1e-5;

crate::timm_args! {
    /// `ResNet.__init__`'s keyword arguments, with timm's defaults.
    struct ResNetArgs {
        block: PerStage<String> = PerStage::All("basicblock".into()),
        layers: Vec<usize> = vec![],
        channels: Vec<usize> = vec![64, 128, 256, 512],
        in_chans: Option<usize> = None,
        output_stride: usize = 32,
        global_pool: String = "avg".into(),
        cardinality: usize = 1,
        base_width: usize = 64,
        stem_width: usize = 64,
        stem_type: String = String::new(),
        replace_stem_pool: bool = false,
        block_reduce_first: usize = 1,
        down_kernel_size: usize = 1,
        avg_down: bool = false,
        act_layer: String = "relu".into(),
        norm_layer: String = "batchnorm2d".into(),
        aa_layer: Option<String> = None,
        zero_init_last: bool = true,
        block_args: Option<Json> = None,
        // `build_model_with_cfg(pruned=True)`: channel counts from timm's pruning files.
        pruned: bool = false,
    }
}

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

/// The network as timm builds it: the arguments, then what the weights show.
#[derive(Debug, Clone)]
struct ResNet {
    blocks: Vec<Block>,
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
    reduce_first: usize,
    down_kernel_size: usize,
    avg_down: bool,
    act: String,
    /// `aa_layer=nn.AvgPool2d`.
    aa: bool,
    /// `attn_layer='se'`: SEModule's `rd_ratio`.
    se: Option<f64>,
    pool: PoolKind,
    /// Init of each residual branch's last BatchNorm weight without weights (`zero_init_last`).
    last_bn_init: Init,
}

impl ResNet {
    /// The table's arguments under config.json's; `requested_os` is the caller's
    /// `output_stride`, which wins over `model_args` as timm's kwargs do.
    fn from_config(cfg: &ModelConfig, requested_os: Option<usize>) -> Result<ResNet> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a resnet architecture this build knows"
            ))
        })?;
        let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let a = ResNetArgs::read(&args)?;
        let se = attn_layer(&args, a.block_args.as_ref())?;
        let aa = match a
            .aa_layer
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => false,
            Some("avgpool2d" | "avgpool" | "avg") => true,
            Some(_) => {
                return Err(args.unsupported(
                    "aa_layer",
                    "only nn.AvgPool2d anti-aliasing is implemented (BlurPool is not)",
                ))
            }
        };
        if !matches!(Norm::from_timm(&a.norm_layer, None), Ok(Norm::Batch { .. })) {
            return Err(args.unsupported(
                "norm_layer",
                "the native resnet graph implements BatchNorm2d only (not GroupNorm or others)",
            ));
        }
        if a.pruned {
            return Err(args.unsupported(
                "pruned",
                "pruned channel counts (timm's pruning files) are not implemented",
            ));
        }
        layers::act::canonical(&a.act_layer)?;
        if !matches!(a.stem_type.as_str(), "" | "deep" | "deep_tiered") {
            return Err(
                args.unsupported("stem_type", "stem_type must be '', 'deep' or 'deep_tiered'")
            );
        }
        let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or(&a.global_pool))?;
        if pool == PoolKind::None {
            return Err(Error::unsupported(format!(
                "`{arch}`: global_pool '' (no pooling before the classifier) is not supported by the native resnet graph"
            )));
        }

        let n = a.channels.len();
        if n == 0 || a.layers.len() != n {
            return Err(Error::invalid_model(format!(
                "`{arch}`: layers {:?} and channels {:?} must have the same, non-zero length",
                a.layers, a.channels
            )));
        }
        let blocks = a
            .block
            .expand("block", n)?
            .iter()
            .map(|name| match name.to_ascii_lowercase().as_str() {
                "basicblock" | "basic" => Ok(Block::Basic),
                "bottleneck" => Ok(Block::Bottleneck),
                _ => Err(args.unsupported("block", "BasicBlock or Bottleneck only")),
            })
            .collect::<Result<Vec<_>>>()?;
        if blocks.contains(&Block::Basic) && (a.cardinality != 1 || a.base_width != 64) {
            return Err(Error::invalid_model(format!(
                "`{arch}`: BasicBlock needs cardinality 1 and base_width 64 (got {} and {})",
                a.cardinality, a.base_width
            )));
        }
        let output_stride = match requested_os {
            Some(os) if ![8, 16, 32].contains(&os) => {
                return Err(Error::invalid_argument(format!(
                    "option output_stride: {os} is not one timm's ResNet builds (8, 16 or 32)"
                )))
            }
            Some(os) => os,
            None if ![8, 16, 32].contains(&a.output_stride) => {
                return Err(Error::invalid_model(format!(
                    "`{arch}`: output_stride must be 8, 16 or 32, not {}",
                    a.output_stride
                )))
            }
            None => a.output_stride,
        };
        let input_chans = cfg.pretrained_cfg.input_size[0];
        let in_chans = a.in_chans.unwrap_or(input_chans);
        if in_chans != input_chans {
            return Err(Error::invalid_model(format!(
                "`{arch}`: model_args in_chans {in_chans} disagrees with input_size {:?}",
                cfg.pretrained_cfg.input_size
            )));
        }
        if a.cardinality == 0
            || a.block_reduce_first == 0
            || a.down_kernel_size == 0
            || a.stem_width == 0
        {
            return Err(Error::invalid_model(format!(
                "`{arch}`: cardinality, block_reduce_first, down_kernel_size and stem_width must be positive"
            )));
        }
        Ok(ResNet {
            blocks,
            layers: a.layers,
            channels: a.channels,
            in_chans,
            output_stride,
            cardinality: a.cardinality,
            base_width: a.base_width,
            stem_width: a.stem_width,
            // timm tests substrings: 'deep' in stem_type, 'tiered' in stem_type.
            deep_stem: a.stem_type.contains("deep"),
            tiered_stem: a.stem_type.contains("tiered"),
            replace_stem_pool: a.replace_stem_pool,
            reduce_first: a.block_reduce_first,
            down_kernel_size: a.down_kernel_size,
            avg_down: a.avg_down,
            act: a.act_layer,
            aa,
            se,
            pool,
            last_bn_init: if a.zero_init_last {
                Init::Zeros
            } else {
                Init::Ones
            },
        })
    }

    /// Replaces what the weights determine with what they hold.
    fn read_weights(&mut self, b: &mut Builder) -> Result<()> {
        if b.weights().is_none() {
            return Ok(());
        }
        self.deep_stem = b.has_weight("conv1.0.weight");
        self.replace_stem_pool = b.has_weight("maxpool.0.weight");
        self.se = match b.has_weight("layer1.0.se.fc1.weight") {
            true => Some(self.se.unwrap_or(1.0 / 16.0)),
            false => None,
        };
        for s in 0..self.layers.len() {
            let stage = &mut b.scope(format!("layer{}", s + 1));
            let depth = (0..).take_while(|&i| stage.scope(i).has_weight("conv1.weight"));
            self.layers[s] = depth.count();
            if self.layers[s] == 0 {
                return Err(Error::invalid_model(format!(
                    "the weights have no `{}`; {} stages were expected",
                    stage.key("0.conv1.weight"),
                    self.layers.len()
                )));
            }
            let first = &mut stage.scope(0);
            self.blocks[s] = if first.has_weight("conv3.weight") {
                Block::Bottleneck
            } else {
                Block::Basic
            };
            // Avg-down shortcuts are (pool, conv, bn): a 4-D `downsample.1.weight`.
            if let Some(shape) = first.weight_shape("downsample.1.weight") {
                self.avg_down = shape.len() == 4;
            }
            if let Some(shape) = first.weight_shape("downsample.0.weight") {
                if shape.len() == 4 && shape[2] > 1 {
                    self.down_kernel_size = shape[2];
                }
            }
        }
        Ok(())
    }
}

/// `block_args.attn_layer`: `'se'` or `partial(SEModule, rd_ratio=r)`; the SE `rd_ratio`.
fn attn_layer(args: &Args, block_args: Option<&Json>) -> Result<Option<f64>> {
    let Some(block_args) = block_args else {
        return Ok(None);
    };
    let Some(m) = block_args.as_object() else {
        return Err(args.unsupported("block_args", "expected an object"));
    };
    if m.keys().any(|k| k != "attn_layer") {
        return Err(args.unsupported("block_args", "only attn_layer is implemented"));
    }
    let attn = m.get("attn_layer").unwrap_or(&Json::Null);
    let (name, rd_ratio) = match attn {
        Json::Null => return Ok(None),
        Json::String(s) => (s.as_str(), 1.0 / 16.0),
        Json::Object(p) => (
            p.get("partial").and_then(Json::as_str).unwrap_or_default(),
            p.get("rd_ratio")
                .and_then(Json::as_f64)
                .unwrap_or(1.0 / 16.0),
        ),
        _ => return Err(args.unsupported("block_args", "attn_layer must name a layer")),
    };
    match name.to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "se" | "semodule" if rd_ratio > 0.0 && rd_ratio <= 1.0 => Ok(Some(rd_ratio)),
        "eca" | "ecamodule" | "ceca" | "cecamodule" => Err(args.unsupported(
            "block_args",
            "ECA attention (EcaModule) is not implemented by the native resnet graph",
        )),
        _ => Err(args.unsupported(
            "block_args",
            "the native resnet graph implements attn_layer 'se' only",
        )),
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let requested_os = b.output_stride();
    let mut net = ResNet::from_config(cfg, requested_os)?;
    net.read_weights(b)?;
    let x = b.input();
    let (x, inplanes) = stem(b, &net, &x)?;
    let (x, num_features) = make_blocks(b, &net, &x, inplanes)?;
    match b.output() {
        // `features_only` drops the head.
        OutputKind::FeatureMaps => Ok((x, num_features)),
        out => classifier_head(
            b,
            &x,
            num_features,
            net.pool,
            cfg.num_classes,
            out == OutputKind::Features,
        ),
    }
}

/// `conv1` (one 7x7 conv, or the deep stem's three 3x3), `bn1`, `act1`, then the stem pool,
/// which keeps the name `maxpool` whatever it is.
fn stem(b: &mut Builder, n: &ResNet, x: &Value) -> Result<(Value, usize)> {
    let inplanes = if n.deep_stem { n.stem_width * 2 } else { 64 };
    let y = if n.deep_stem {
        let (c0, c1) = if n.tiered_stem {
            (3 * (n.stem_width / 4), n.stem_width)
        } else {
            (n.stem_width, n.stem_width)
        };
        let c = Conv::new(n.in_chans, c0, 3).stride(2);
        let y = conv_bn(b, x, "conv1.0", "conv1.1", c, BN_EPS)?;
        let y = layers::act(b, &n.act, &y)?;
        let y = conv_bn(b, &y, "conv1.3", "conv1.4", Conv::new(c0, c1, 3), BN_EPS)?;
        let y = layers::act(b, &n.act, &y)?;
        conv_bn(b, &y, "conv1.6", "bn1", Conv::new(c1, inplanes, 3), BN_EPS)?
    } else {
        let c = Conv::new(n.in_chans, inplanes, 7).stride(2);
        conv_bn(b, x, "conv1", "bn1", c, BN_EPS)?
    };
    let y = layers::act(b, &n.act, &y)?;
    b.feature(&y, inplanes, 2, "act1");

    let y = if n.replace_stem_pool && n.aa {
        // conv, AvgPool2d(2), bn, act: the pool averages each channel without padding, so the
        // BatchNorm folds into the conv before it.
        let c = Conv::new(inplanes, inplanes, 3);
        let y = conv_bn(b, &y, "maxpool.0", "maxpool.2", c, BN_EPS)?;
        let y = aa_pool(b, &y, 2, inplanes)?;
        layers::act(b, &n.act, &y)?
    } else if n.replace_stem_pool {
        let c = Conv::new(inplanes, inplanes, 3).stride(2);
        let y = conv_bn(b, &y, "maxpool.0", "maxpool.1", c, BN_EPS)?;
        layers::act(b, &n.act, &y)?
    } else if n.aa {
        aa_pool(b, &y, 2, inplanes)?
    } else {
        Pool2d::new(3, 2, 1).max(b, &y, inplanes)?
    };
    Ok((y, inplanes))
}

/// Where a block sits: its input width, stride and dilations, and whether it has the stage's
/// `downsample` shortcut.
struct Geom {
    inplanes: usize,
    planes: usize,
    stride: usize,
    dilation: usize,
    first_dilation: usize,
    downsample: bool,
}

/// timm's `make_blocks`: stages `layer1..`, stride 2 per stage after the first until the
/// output stride is reached, dilation after that. Records each stage's feature map.
fn make_blocks(
    b: &mut Builder,
    n: &ResNet,
    x: &Value,
    mut inplanes: usize,
) -> Result<(Value, usize)> {
    let mut x = x.clone();
    let mut net_stride = 4;
    let (mut dilation, mut prev_dilation) = (1, 1);
    for (s, &block) in n.blocks.iter().enumerate() {
        let name = format!("layer{}", s + 1);
        let planes = n.channels[s];
        let mut stride = if s == 0 { 1 } else { 2 };
        if net_stride >= n.output_stride {
            dilation *= stride;
            stride = 1;
        } else {
            net_stride *= stride;
        }
        let outplanes = planes * block.expansion();
        let downsample = stride != 1 || inplanes != outplanes;
        for i in 0..n.layers[s] {
            let g = Geom {
                inplanes,
                planes,
                stride: if i == 0 { stride } else { 1 },
                dilation,
                first_dilation: prev_dilation,
                downsample: i == 0 && downsample,
            };
            let stage = &mut b.scope(&name);
            let blk = &mut stage.scope(i);
            x = match block {
                Block::Basic => basic_block(blk, n, &x, &g)?,
                Block::Bottleneck => bottleneck(blk, n, &x, &g)?,
            };
            prev_dilation = dilation;
            inplanes = outplanes;
        }
        b.feature(&x, inplanes, net_stride, &name);
    }
    Ok((x, inplanes))
}

/// `BasicBlock`: two 3x3 convs (the first strided, or followed by the anti-aliasing pool).
fn basic_block(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom) -> Result<Value> {
    let first = g.planes / n.reduce_first;
    let out = g.planes;
    let use_aa = n.aa && (g.stride == 2 || g.first_dilation != g.dilation);
    let c1 = Conv::new(g.inplanes, first, 3)
        .stride(if use_aa { 1 } else { g.stride })
        .dilation(g.first_dilation);
    let y = conv_bn(b, x, "conv1", "bn1", c1, BN_EPS)?;
    let y = layers::act(b, &n.act, &y)?;
    let y = if use_aa {
        aa_pool(b, &y, g.stride, first)?
    } else {
        y
    };
    let c2 = Conv::new(first, out, 3).dilation(g.dilation);
    let y = conv_bn_init(b, &y, "conv2", "bn2", c2, BN_EPS, n.last_bn_init)?;
    let shortcut = shortcut(b, n, x, g, out)?;
    residual(b, n, &y, &shortcut, out)
}

/// `Bottleneck`: 1x1 reduce, grouped 3x3 (strided, or followed by the anti-aliasing pool), 1x1
/// expand.
fn bottleneck(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom) -> Result<Value> {
    // int(floor(planes * (base_width / 64)) * cardinality)
    let width = (g.planes * n.base_width / 64) * n.cardinality;
    let first = width / n.reduce_first;
    let out = g.planes * 4;
    let use_aa = n.aa && (g.stride == 2 || g.first_dilation != g.dilation);
    let c1 = Conv::new(g.inplanes, first, 1);
    let y = conv_bn(b, x, "conv1", "bn1", c1, BN_EPS)?;
    let y = layers::act(b, &n.act, &y)?;
    let c2 = Conv::new(first, width, 3)
        .stride(if use_aa { 1 } else { g.stride })
        .dilation(g.first_dilation)
        .groups(n.cardinality);
    let y = conv_bn(b, &y, "conv2", "bn2", c2, BN_EPS)?;
    let y = layers::act(b, &n.act, &y)?;
    let y = if use_aa {
        aa_pool(b, &y, g.stride, width)?
    } else {
        y
    };
    let c3 = Conv::new(width, out, 1);
    let y = conv_bn_init(b, &y, "conv3", "bn3", c3, BN_EPS, n.last_bn_init)?;
    let shortcut = shortcut(b, n, x, g, out)?;
    residual(b, n, &y, &shortcut, out)
}

/// The block's shortcut: `downsample` or the identity.
fn shortcut(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom, out: usize) -> Result<Value> {
    if g.downsample {
        downsample(&mut b.scope("downsample"), n, x, g, out)
    } else {
        Ok(x.clone())
    }
}

/// The blocks' common tail: `se`, the shortcut added, the activation.
fn residual(b: &mut Builder, n: &ResNet, y: &Value, shortcut: &Value, out: usize) -> Result<Value> {
    let y = match n.se {
        Some(rd_ratio) => {
            let se = &mut b.scope("se");
            // The weights' reduction width when there are weights.
            let rd = se
                .weight_shape("fc1.weight")
                .map_or_else(|| rd_channels(out, rd_ratio, 8), |s| s[0]);
            SqueezeExcite::se_module(out, rd)
                .init(Init::KaimingFanOut)
                .apply(se, y)?
        }
        None => y.clone(),
    };
    let sum = layers::add(b, &y, shortcut);
    // The sum has the branch's size. Recorded after the shortcut so that the branch, whose
    // floor-mode anti-aliasing pools are what an input can be too small for, is the deepest
    // spatial chain the builder checks inputs against (the shortcut's ceil-mode pools never
    // empty a map).
    b.set_spatial(&sum, &y, IDENTITY, out)?;
    layers::act(b, &n.act, &sum)
}

/// `downsample_avg` (pool, 1x1 conv, bn) or `downsample_conv` (conv, bn).
fn downsample(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom, out: usize) -> Result<Value> {
    let plain = g.stride == 1 && g.dilation == 1;
    if n.avg_down {
        let pooled = if plain {
            x.clone()
        } else if g.dilation > 1 {
            // avg_stride 1 in a dilated stage: AvgPool2dSame(2, 1).
            avg_pool2d_same_s1(b, x, 2, g.inplanes)?
        } else {
            Pool2d::new(2, g.stride, 0)
                .ceil(true)
                .count_include_pad(false)
                .avg(b, x, g.inplanes)?
        };
        conv_bn(b, &pooled, "1", "2", Conv::new(g.inplanes, out, 1), BN_EPS)
    } else {
        let k = if plain { 1 } else { n.down_kernel_size };
        let fd = if k > 1 { g.first_dilation } else { 1 };
        let c = Conv::new(g.inplanes, out, k).stride(g.stride).dilation(fd);
        conv_bn(b, x, "0", "1", c, BN_EPS)
    }
}

/// timm's `create_aa(nn.AvgPool2d, stride=s)`, i.e. `nn.AvgPool2d(s)` (identity for stride 1).
fn aa_pool(b: &mut Builder, x: &Value, stride: usize, channels: usize) -> Result<Value> {
    if stride == 1 {
        return Ok(x.clone());
    }
    Pool2d::new(stride, stride, 0).avg(b, x, channels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    /// timm's resnet.py entrypoints this graph refuses, with the word its message must use.
    fn refused_for(arch: &str) -> Option<&'static str> {
        [
            ("ecaresnet", "ECA"),
            ("ecaresnext", "ECA"),
            ("resnetblur", "BlurPool"),
            ("resnet50_gn", "GroupNorm"),
        ]
        .into_iter()
        .find(|(prefix, _)| arch.starts_with(prefix))
        .map(|(_, why)| why)
    }

    #[test]
    fn every_table_architecture_resolves_or_is_refused_with_its_reason() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        let mut built = 0;
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            match (ResNet::from_config(&cfg, None), refused_for(arch)) {
                (Ok(_), None) => built += 1,
                (Err(e), Some(why)) => {
                    assert_eq!(e.status(), TimmStatus::TIMM_ERR_UNSUPPORTED, "{arch}");
                    assert!(e.message().contains(why), "{arch}: {}", e.message());
                }
                (r, why) => panic!("{arch}: {:?} (expected refusal: {why:?})", r.err()),
            }
        }
        assert!(built >= 65, "only {built} resnet architectures build");
        assert!(!(FAMILY.matches)("resnetv2_50") && (FAMILY.matches)("resnet50"));
    }

    #[test]
    fn output_stride_request_overrides_model_args_and_is_checked() {
        let cfg = ModelConfig::parse(TABLE.get("resnet50").unwrap().config.to_string().as_bytes())
            .unwrap();
        assert_eq!(ResNet::from_config(&cfg, Some(8)).unwrap().output_stride, 8);
        assert_eq!(ResNet::from_config(&cfg, None).unwrap().output_stride, 32);
        let e = ResNet::from_config(&cfg, Some(4)).unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
        assert!(e.message().contains("output_stride"), "{}", e.message());
    }

    #[test]
    fn resnet_rs_se_ratio_comes_from_the_table() {
        let cfg = ModelConfig::parse(
            TABLE
                .get("resnetrs50")
                .unwrap()
                .config
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        let n = ResNet::from_config(&cfg, None).unwrap();
        assert_eq!(n.se, Some(0.25));
        assert!(n.replace_stem_pool && n.deep_stem && n.avg_down);
    }
}
