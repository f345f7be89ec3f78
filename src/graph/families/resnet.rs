//! timm's `resnet.py`: ResNet (B/C/D/S/T stems and shortcuts), ResNeXt, SE-ResNet(X)t, ECA-ResNet(X)t
//! (pruned ones included), Wide ResNet, SENet-154, ResNet-RS, GroupNorm ResNet, average-pool and
//! blur-pool anti-aliased ResNets and `test_resnet`.
//!
//! The arguments each entrypoint passes to `ResNet` (and the config.json timm writes for it) come
//! from the generated table; config.json's `model_args` override them as timm's
//! `dict(model_args, **kwargs)` does. With a weights file, what the tensors determine (blocks per
//! stage, BasicBlock vs Bottleneck, SE, deep stem, conv stem pool, avg-down shortcut, shortcut
//! kernel, ECA kernel) is read from them; widths come from the arguments, so weights that disagree
//! with them fail on the tensor's shape — except for `pruned` architectures, whose every conv width
//! is the weights' (without weights: timm's pruning file, which the generated table carries).

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::conv::{conv2d, conv_bn_init};
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::pool::{avg_pool2d_same_s1, blur_pool2d, Pool2d, PoolKind};
use crate::graph::layers::se::{eca, eca_kernel, rd_channels, SqueezeExcite};
use crate::graph::layers::{self, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};

static TABLE: Table = Table::new(include_str!("../tables/resnet.json"));

pub const FAMILY: Family = Family {
    name: "resnet",
    examples: "resnet10t..resnet200d with c/d/s/t variants, resnext*, seresnet*, seresnext*, ecaresnet*, wide_resnet*, senet154, resnetrs*, resnetaa*, resnetblur*, resnet50_gn, test_resnet",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

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
        // `build_model_with_cfg(pruned=True)`; the table holds the pruning file's conv widths.
        pruned: Option<Json> = None,
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

/// `aa_layer`: `nn.AvgPool2d` or `BlurPool2d` (reflect padding, or `blurpc`'s zeros).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Aa {
    Avg,
    Blur { reflect: bool },
}

/// `block_args.attn_layer`: `SEModule` with its `rd_ratio`, or `EcaModule` / `CecaModule`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Attn {
    Se(f64),
    Eca { circular: bool },
}

/// Where a pruned network's conv widths come from.
#[derive(Debug, Clone)]
enum Pruned {
    Weights,
    /// Conv module name → output channels (timm's `_pruned/<arch>.txt`).
    Table(Map<String, Json>),
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
    norm: Norm,
    aa: Option<Aa>,
    attn: Option<Attn>,
    pruned: Option<Pruned>,
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
        let attn = attn_layer(&args, a.block_args.as_ref())?;
        // timm's `_normalize_aa_layer` keys (a class name lower-cased by the table).
        let aa_key = a.aa_layer.as_deref().map(|s| {
            s.to_ascii_lowercase()
                .replace(['_', '-'], "")
                .trim_end_matches("2d")
                .to_string()
        });
        let aa = match aa_key.as_deref() {
            None => None,
            Some("avgpool" | "avg") => Some(Aa::Avg),
            Some("blurpool" | "blur") => Some(Aa::Blur { reflect: true }),
            Some("blurpc") => Some(Aa::Blur { reflect: false }),
            Some(_) => {
                return Err(args.unsupported(
                    "aa_layer",
                    "anti-aliasing is nn.AvgPool2d, BlurPool2d or 'blurpc'",
                ))
            }
        };
        let norm = Norm::from_timm(&a.norm_layer, None)
            .map_err(|e| args.unsupported("norm_layer", e.message()))?;
        if norm == Norm::Identity {
            return Err(args.unsupported("norm_layer", "a ResNet needs a norm layer"));
        }
        let pruned = match a.pruned {
            None | Some(Json::Bool(false)) => None,
            Some(Json::Bool(true)) => Some(Pruned::Weights),
            Some(Json::Object(m)) => Some(Pruned::Table(m)),
            Some(_) => return Err(args.unsupported("pruned", "expected a boolean")),
        };
        if pruned.is_some() && a.cardinality != 1 {
            return Err(args.unsupported(
                "pruned",
                "pruned grouped convs (cardinality > 1) are not implemented",
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
            norm,
            aa,
            attn,
            pruned,
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
        self.attn = if b.has_weight("layer1.0.se.fc1.weight") {
            match self.attn {
                Some(Attn::Se(r)) => Some(Attn::Se(r)),
                _ => Some(Attn::Se(1.0 / 16.0)),
            }
        } else if b.has_weight("layer1.0.se.conv.weight") {
            match self.attn {
                Some(Attn::Eca { circular }) => Some(Attn::Eca { circular }),
                _ => Some(Attn::Eca { circular: false }),
            }
        } else {
            None
        };
        if self.pruned.is_some() {
            self.pruned = Some(Pruned::Weights);
        }
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

    /// A conv's output width: the argument's, or a pruned network's (`conv` in `b`'s scope).
    fn width(&self, b: &Builder, conv: &str, default: usize) -> Result<usize> {
        let width = match &self.pruned {
            None => return Ok(default),
            Some(Pruned::Weights) => b.weight_shape(&format!("{conv}.weight")).map(|s| s[0]),
            Some(Pruned::Table(m)) => m
                .get(&b.key(conv))
                .and_then(Json::as_u64)
                .map(|w| w as usize),
        };
        match width {
            Some(w) if w > 0 => Ok(w),
            _ => Err(Error::invalid_model(format!(
                "pruned network: no width for `{}`",
                b.key(conv)
            ))),
        }
    }

    /// A conv and its norm: BatchNorm folded into the conv, another norm after it.
    fn conv_norm(
        &self,
        b: &mut Builder,
        x: &Value,
        names: (&str, &str),
        c: Conv,
        init: Init,
    ) -> Result<Value> {
        match self.norm {
            Norm::Batch { eps } => conv_bn_init(b, x, names.0, names.1, c, eps, init),
            norm => {
                let y = conv2d(&mut b.scope(names.0), x, c)?;
                norm.apply_2d(&mut b.scope(names.1), &y, c.out_ch)
            }
        }
    }
}

/// `block_args.attn_layer`: `'se'` / `partial(SEModule, rd_ratio=r)`, `'eca'` or `'ceca'`.
fn attn_layer(args: &Args, block_args: Option<&Json>) -> Result<Option<Attn>> {
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
        "se" | "semodule" if rd_ratio > 0.0 && rd_ratio <= 1.0 => Ok(Some(Attn::Se(rd_ratio))),
        "eca" | "ecamodule" => Ok(Some(Attn::Eca { circular: false })),
        "ceca" | "cecamodule" => Ok(Some(Attn::Eca { circular: true })),
        _ => Err(args.unsupported(
            "block_args",
            "the native resnet graph implements attn_layer 'se', 'eca' and 'ceca'",
        )),
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let requested_os = b.output_stride();
    let mut net = ResNet::from_config(cfg, requested_os)?;
    net.read_weights(b)?;
    let x = b.input();
    let (x, inplanes, ch) = stem(b, &net, &x)?;
    let (x, num_features) = make_blocks(b, &net, &x, inplanes, ch)?;
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
/// which keeps the name `maxpool` whatever it is. Returns the stem's (timm, actual) widths.
fn stem(b: &mut Builder, n: &ResNet, x: &Value) -> Result<(Value, usize, usize)> {
    let inplanes = if n.deep_stem { n.stem_width * 2 } else { 64 };
    let init = Init::Ones;
    let (y, ch) = if n.deep_stem {
        let (c0, c1) = if n.tiered_stem {
            (3 * (n.stem_width / 4), n.stem_width)
        } else {
            (n.stem_width, n.stem_width)
        };
        let c0 = n.width(b, "conv1.0", c0)?;
        let c1 = n.width(b, "conv1.3", c1)?;
        let ch = n.width(b, "conv1.6", inplanes)?;
        let c = Conv::new(n.in_chans, c0, 3).stride(2);
        let y = n.conv_norm(b, x, ("conv1.0", "conv1.1"), c, init)?;
        let y = layers::act(b, &n.act, &y)?;
        let y = n.conv_norm(b, &y, ("conv1.3", "conv1.4"), Conv::new(c0, c1, 3), init)?;
        let y = layers::act(b, &n.act, &y)?;
        let y = n.conv_norm(b, &y, ("conv1.6", "bn1"), Conv::new(c1, ch, 3), init)?;
        (y, ch)
    } else {
        let ch = n.width(b, "conv1", inplanes)?;
        let c = Conv::new(n.in_chans, ch, 7).stride(2);
        (n.conv_norm(b, x, ("conv1", "bn1"), c, init)?, ch)
    };
    let y = layers::act(b, &n.act, &y)?;
    b.feature(&y, ch, 2, "act1");

    let y = match (n.replace_stem_pool, n.aa) {
        // conv, anti-aliasing pool, norm, act. A BatchNorm folds into the conv before a pool
        // that averages each channel with weights summing to one and no zero padding.
        (true, Some(aa)) => {
            let c = Conv::new(ch, ch, 3);
            if matches!(n.norm, Norm::Batch { .. }) && aa != (Aa::Blur { reflect: false }) {
                let y = n.conv_norm(b, &y, ("maxpool.0", "maxpool.2"), c, init)?;
                let y = aa_pool(b, aa, &y, 2, ch)?;
                layers::act(b, &n.act, &y)?
            } else {
                let y = conv2d(&mut b.scope("maxpool.0"), &y, c)?;
                let y = aa_pool(b, aa, &y, 2, ch)?;
                let y = n.norm.apply_2d(&mut b.scope("maxpool.2"), &y, ch)?;
                layers::act(b, &n.act, &y)?
            }
        }
        (true, None) => {
            let c = Conv::new(ch, ch, 3).stride(2);
            let y = n.conv_norm(b, &y, ("maxpool.0", "maxpool.1"), c, init)?;
            layers::act(b, &n.act, &y)?
        }
        (false, Some(Aa::Avg)) => aa_pool(b, Aa::Avg, &y, 2, ch)?,
        // MaxPool2d(3, stride 1), then the blur pool strides.
        (false, Some(aa)) => {
            let y = Pool2d::new(3, 1, 1).max(b, &y, ch)?;
            aa_pool(b, aa, &y, 2, ch)?
        }
        (false, None) => Pool2d::new(3, 2, 1).max(b, &y, ch)?,
    };
    Ok((y, inplanes, ch))
}

/// Where a block sits: its input width (a pruned network's actual one), stride and
/// dilations, and whether it has the stage's `downsample` shortcut.
struct Geom {
    in_ch: usize,
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
    mut ch: usize,
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
                in_ch: ch,
                planes,
                stride: if i == 0 { stride } else { 1 },
                dilation,
                first_dilation: prev_dilation,
                downsample: i == 0 && downsample,
            };
            let stage = &mut b.scope(&name);
            let blk = &mut stage.scope(i);
            (x, ch) = match block {
                Block::Basic => basic_block(blk, n, &x, &g)?,
                Block::Bottleneck => bottleneck(blk, n, &x, &g)?,
            };
            prev_dilation = dilation;
            inplanes = outplanes;
        }
        b.feature(&x, ch, net_stride, &name);
    }
    Ok((x, ch))
}

/// `BasicBlock`: two 3x3 convs (the first strided, or followed by the anti-aliasing pool).
/// Returns the block's output and its width.
fn basic_block(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom) -> Result<(Value, usize)> {
    let first = n.width(b, "conv1", g.planes / n.reduce_first)?;
    let out = n.width(b, "conv2", g.planes)?;
    let aa =
        n.aa.filter(|_| g.stride == 2 || g.first_dilation != g.dilation);
    let c1 = Conv::new(g.in_ch, first, 3)
        .stride(if aa.is_some() { 1 } else { g.stride })
        .dilation(g.first_dilation);
    let y = n.conv_norm(b, x, ("conv1", "bn1"), c1, Init::Ones)?;
    let y = layers::act(b, &n.act, &y)?;
    let y = match aa {
        Some(aa) => aa_pool(b, aa, &y, g.stride, first)?,
        None => y,
    };
    let c2 = Conv::new(first, out, 3).dilation(g.dilation);
    let y = n.conv_norm(b, &y, ("conv2", "bn2"), c2, n.last_bn_init)?;
    let shortcut = shortcut(b, n, x, g, out)?;
    Ok((residual(b, n, &y, &shortcut, g.planes, out)?, out))
}

/// `Bottleneck`: 1x1 reduce, grouped 3x3 (strided, or followed by the anti-aliasing pool), 1x1
/// expand. Returns the block's output and its width.
fn bottleneck(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom) -> Result<(Value, usize)> {
    // int(floor(planes * (base_width / 64)) * cardinality)
    let width = (g.planes * n.base_width / 64) * n.cardinality;
    let first = n.width(b, "conv1", width / n.reduce_first)?;
    let width = n.width(b, "conv2", width)?;
    let out = n.width(b, "conv3", g.planes * 4)?;
    let aa =
        n.aa.filter(|_| g.stride == 2 || g.first_dilation != g.dilation);
    let c1 = Conv::new(g.in_ch, first, 1);
    let y = n.conv_norm(b, x, ("conv1", "bn1"), c1, Init::Ones)?;
    let y = layers::act(b, &n.act, &y)?;
    let c2 = Conv::new(first, width, 3)
        .stride(if aa.is_some() { 1 } else { g.stride })
        .dilation(g.first_dilation)
        .groups(n.cardinality);
    let y = n.conv_norm(b, &y, ("conv2", "bn2"), c2, Init::Ones)?;
    let y = layers::act(b, &n.act, &y)?;
    let y = match aa {
        Some(aa) => aa_pool(b, aa, &y, g.stride, width)?,
        None => y,
    };
    let c3 = Conv::new(width, out, 1);
    let y = n.conv_norm(b, &y, ("conv3", "bn3"), c3, n.last_bn_init)?;
    let shortcut = shortcut(b, n, x, g, out)?;
    Ok((residual(b, n, &y, &shortcut, g.planes * 4, out)?, out))
}

/// The block's shortcut: `downsample` or the identity.
fn shortcut(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom, out: usize) -> Result<Value> {
    if g.downsample {
        downsample(&mut b.scope("downsample"), n, x, g, out)
    } else {
        Ok(x.clone())
    }
}

/// The blocks' common tail: `se` (timm builds it for the unpruned width `planes_out`), the
/// shortcut added, the activation.
fn residual(
    b: &mut Builder,
    n: &ResNet,
    y: &Value,
    shortcut: &Value,
    planes_out: usize,
    out: usize,
) -> Result<Value> {
    let y = match n.attn {
        Some(Attn::Se(rd_ratio)) => {
            let se = &mut b.scope("se");
            // The weights' reduction width when there are weights.
            let rd = se
                .weight_shape("fc1.weight")
                .map_or_else(|| rd_channels(out, rd_ratio, 8), |s| s[0]);
            SqueezeExcite::se_module(out, rd)
                .init(Init::KaimingFanOut)
                .apply(se, y)?
        }
        Some(Attn::Eca { circular }) => {
            let se = &mut b.scope("se");
            let k = se
                .weight_shape("conv.weight")
                .map_or_else(|| eca_kernel(planes_out, 2.0, 1.0), |s| s[2]);
            eca(se, y, k, circular, "sigmoid")?
        }
        None => y.clone(),
    };
    let sum = layers::add(b, &y, shortcut);
    // The sum has the branch's size. Recorded after the shortcut so that the branch, whose
    // floor-mode anti-aliasing pools are what an input can be too small for, is the deepest
    // spatial chain the builder checks inputs against (the shortcut's ceil-mode pools never
    // empty a map).
    b.set_spatial(&sum, &y, layers::resnet_parts::IDENTITY, out)?;
    layers::act(b, &n.act, &sum)
}

/// `downsample_avg` (pool, 1x1 conv, norm) or `downsample_conv` (conv, norm).
fn downsample(b: &mut Builder, n: &ResNet, x: &Value, g: &Geom, out: usize) -> Result<Value> {
    let plain = g.stride == 1 && g.dilation == 1;
    if n.avg_down {
        let pooled = if plain {
            x.clone()
        } else if g.dilation > 1 {
            // avg_stride 1 in a dilated stage: AvgPool2dSame(2, 1).
            avg_pool2d_same_s1(b, x, 2, g.in_ch)?
        } else {
            Pool2d::new(2, g.stride, 0)
                .ceil(true)
                .count_include_pad(false)
                .avg(b, x, g.in_ch)?
        };
        let c = Conv::new(g.in_ch, out, 1);
        n.conv_norm(b, &pooled, ("1", "2"), c, Init::Ones)
    } else {
        let k = if plain { 1 } else { n.down_kernel_size };
        let fd = if k > 1 { g.first_dilation } else { 1 };
        let c = Conv::new(g.in_ch, out, k).stride(g.stride).dilation(fd);
        n.conv_norm(b, x, ("0", "1"), c, Init::Ones)
    }
}

/// timm's `create_aa(aa_layer, channels, stride)`: `nn.AvgPool2d(stride)` (the identity for
/// stride 1) or `BlurPool2d(channels, filt_size=3, stride)` (which blurs at stride 1 too).
fn aa_pool(b: &mut Builder, aa: Aa, x: &Value, stride: usize, channels: usize) -> Result<Value> {
    match aa {
        Aa::Avg if stride == 1 => Ok(x.clone()),
        Aa::Avg => Pool2d::new(stride, stride, 0).avg(b, x, channels),
        Aa::Blur { reflect } => blur_pool2d(b, x, channels, 3, stride, reflect),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    #[test]
    fn every_table_architecture_resolves() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        assert_eq!(TABLE.names().len(), 81);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            if let Err(e) = ResNet::from_config(&cfg, None) {
                panic!("{arch}: {e:?}");
            }
        }
        assert!(!(FAMILY.matches)("resnetv2_50") && (FAMILY.matches)("resnet50"));
    }

    #[test]
    fn variants_read_from_the_table() {
        let net = |arch: &str| {
            let cfg = TABLE.get(arch).unwrap().config.to_string();
            ResNet::from_config(&ModelConfig::parse(cfg.as_bytes()).unwrap(), None).unwrap()
        };
        assert_eq!(
            net("ecaresnet50d").attn,
            Some(Attn::Eca { circular: false })
        );
        assert_eq!(net("resnetblur50").aa, Some(Aa::Blur { reflect: true }));
        assert_eq!(net("resnetaa50").aa, Some(Aa::Avg));
        assert!(matches!(
            net("resnet50_gn").norm,
            Norm::Group { groups: 32, .. }
        ));
        assert!(matches!(
            net("ecaresnet50d_pruned").pruned,
            Some(Pruned::Table(_))
        ));
        assert!(net("ecaresnet50d").pruned.is_none());
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
        assert_eq!(n.attn, Some(Attn::Se(0.25)));
        assert!(n.replace_stem_pool && n.deep_stem && n.avg_down);
    }
}
