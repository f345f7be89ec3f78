//! The skeleton of timm's `ResNet` class for the modules that plug their own block into it
//! (`sknet.py`, `res2net.py`, `resnest.py`): its arguments, the stem (7x7 or deep / tiered
//! 3x3 stem, max pool or strided conv), the stage layout of `make_blocks` (stride 2 per stage
//! after the first until `output_stride`, dilation after that), the `downsample_conv` /
//! `downsample_avg` shortcuts and the classifier head. The block itself is the family's.

use serde_json::Value as Json;

use super::conv::{conv_bn_init, Conv};
use super::heads::classifier_head;
use super::pool::{avg_pool2d_same_s1, Pool2d, PoolKind};
use super::{act, Norm};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::spatial::Step;
use crate::graph::{Builder, Init, OutputKind, Value};

crate::timm_args! {
    /// `ResNet.__init__`'s keyword arguments, with timm's defaults (the block is one class).
    pub struct ResNetArgs {
        block: String = String::new(),
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
    }
}

/// A spatial step that keeps the size (element-wise ops after a conv chain).
pub(crate) const IDENTITY: Step = Step::Window {
    k: 1,
    stride: 1,
    pad: 0,
    dilation: 1,
    ceil: false,
};

/// Gives `y` (an element-wise result) the spatial size of `like`.
pub fn keep_spatial(b: &mut Builder, y: &Value, like: &Value, channels: usize) -> Result<()> {
    b.set_spatial(y, like, IDENTITY, channels)
}

/// The network timm's `ResNet` builds around a block: the arguments, then what the weights
/// show (stem kind, blocks per stage, shortcut kind).
#[derive(Debug, Clone)]
pub struct ResNetBase {
    pub layers: Vec<usize>,
    pub channels: Vec<usize>,
    pub in_chans: usize,
    pub output_stride: usize,
    pub cardinality: usize,
    pub base_width: usize,
    pub stem_width: usize,
    pub deep_stem: bool,
    pub tiered_stem: bool,
    pub replace_stem_pool: bool,
    pub reduce_first: usize,
    pub down_kernel_size: usize,
    pub avg_down: bool,
    pub act: String,
    /// `nn.BatchNorm2d`'s eps (the only norm layer these blocks are built with here).
    pub bn_eps: f32,
    pub pool: PoolKind,
    /// Init of each residual branch's last BatchNorm weight without weights (`zero_init_last`).
    pub last_bn_init: Init,
}

/// Where a block sits: its input width, stride and dilations, whether it has the stage's
/// `downsample` shortcut, and its output width (`planes * expansion`).
#[derive(Debug, Clone, Copy)]
pub struct BlockGeom {
    pub in_ch: usize,
    pub planes: usize,
    pub out_ch: usize,
    pub stride: usize,
    pub dilation: usize,
    pub first_dilation: usize,
    pub downsample: bool,
}

impl ResNetBase {
    /// The common arguments; `requested_os` is the caller's `output_stride`, which wins over
    /// `model_args` as timm's kwargs do.
    pub fn new(
        cfg: &ModelConfig,
        args: &Args,
        a: &ResNetArgs,
        requested_os: Option<usize>,
    ) -> Result<ResNetBase> {
        let arch = cfg.architecture.as_str();
        if a.aa_layer.is_some() {
            return Err(args.unsupported(
                "aa_layer",
                "anti-aliased stems and blocks are not implemented for this module",
            ));
        }
        let bn_eps = match Norm::from_timm(&a.norm_layer, None) {
            Ok(Norm::Batch { eps }) => eps,
            _ => {
                return Err(args.unsupported(
                    "norm_layer",
                    "only nn.BatchNorm2d is implemented for this module",
                ))
            }
        };
        act::canonical(&a.act_layer)?;
        if !matches!(a.stem_type.as_str(), "" | "deep" | "deep_tiered") {
            return Err(
                args.unsupported("stem_type", "stem_type must be '', 'deep' or 'deep_tiered'")
            );
        }
        let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or(&a.global_pool))?;
        if pool == PoolKind::None {
            return Err(Error::unsupported(format!(
                "`{arch}`: global_pool '' (no pooling before the classifier) is not supported natively"
            )));
        }
        let n = a.channels.len();
        if n == 0 || a.layers.len() != n {
            return Err(Error::invalid_model(format!(
                "`{arch}`: layers {:?} and channels {:?} must have the same, non-zero length",
                a.layers, a.channels
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
            || a.base_width == 0
            || a.channels.contains(&0)
        {
            return Err(Error::invalid_model(format!(
                "`{arch}`: cardinality, base_width, block_reduce_first, down_kernel_size, stem_width and channels must be positive"
            )));
        }
        Ok(ResNetBase {
            layers: a.layers.clone(),
            channels: a.channels.clone(),
            in_chans,
            output_stride,
            cardinality: a.cardinality,
            base_width: a.base_width,
            stem_width: a.stem_width,
            deep_stem: a.stem_type.contains("deep"),
            tiered_stem: a.stem_type.contains("tiered"),
            replace_stem_pool: a.replace_stem_pool,
            reduce_first: a.block_reduce_first,
            down_kernel_size: a.down_kernel_size,
            avg_down: a.avg_down,
            act: a.act_layer.clone(),
            bn_eps,
            pool,
            last_bn_init: if a.zero_init_last {
                Init::Zeros
            } else {
                Init::Ones
            },
        })
    }

    /// Replaces what the weights determine (deep stem, conv stem pool, blocks per stage,
    /// avg-down shortcuts, shortcut kernel) with what they hold.
    pub fn read_weights(&mut self, b: &mut Builder) -> Result<()> {
        if b.weights().is_none() {
            return Ok(());
        }
        self.deep_stem = b.has_weight("conv1.0.weight");
        self.replace_stem_pool = b.has_weight("maxpool.0.weight");
        for s in 0..self.layers.len() {
            let stage = &mut b.scope(format!("layer{}", s + 1));
            self.layers[s] = (0..)
                .take_while(|&i| stage.has_module(&i.to_string()))
                .count();
            if self.layers[s] == 0 {
                return Err(Error::invalid_model(format!(
                    "the weights have no `{}`; {} stages were expected",
                    stage.key("0"),
                    self.layers.len()
                )));
            }
            let first = &mut stage.scope(0);
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

    /// `nn.Conv2d` + `nn.BatchNorm2d` (scopes `conv`, `bn`), folded.
    pub fn conv_bn(
        &self,
        b: &mut Builder,
        x: &Value,
        names: (&str, &str),
        c: Conv,
        init: Init,
    ) -> Result<Value> {
        conv_bn_init(b, x, names.0, names.1, c, self.bn_eps, init)
    }

    /// `int(floor(planes * (base_width / 64)) * cardinality)`, a bottleneck's 3x3 width.
    pub fn group_width(&self, planes: usize) -> usize {
        (planes * self.base_width / 64) * self.cardinality
    }

    /// `conv1` (one 7x7 conv, or the deep stem's three 3x3), `bn1`, `act1` (the `act1` feature
    /// map), then the stem pool `maxpool` (a max pool, or a strided conv + norm + act).
    /// Returns the output and its width (`inplanes`).
    pub fn stem(&self, b: &mut Builder, x: &Value) -> Result<(Value, usize)> {
        let ch = if self.deep_stem {
            self.stem_width * 2
        } else {
            64
        };
        let init = Init::Ones;
        let y = if self.deep_stem {
            let (c0, c1) = if self.tiered_stem {
                (3 * (self.stem_width / 4), self.stem_width)
            } else {
                (self.stem_width, self.stem_width)
            };
            let c = Conv::new(self.in_chans, c0, 3).stride(2);
            let y = self.conv_bn(b, x, ("conv1.0", "conv1.1"), c, init)?;
            let y = act(b, &self.act, &y)?;
            let y = self.conv_bn(b, &y, ("conv1.3", "conv1.4"), Conv::new(c0, c1, 3), init)?;
            let y = act(b, &self.act, &y)?;
            self.conv_bn(b, &y, ("conv1.6", "bn1"), Conv::new(c1, ch, 3), init)?
        } else {
            let c = Conv::new(self.in_chans, ch, 7).stride(2);
            self.conv_bn(b, x, ("conv1", "bn1"), c, init)?
        };
        let y = act(b, &self.act, &y)?;
        b.feature(&y, ch, 2, "act1");
        let y = if self.replace_stem_pool {
            let c = Conv::new(ch, ch, 3).stride(2);
            let y = self.conv_bn(b, &y, ("maxpool.0", "maxpool.1"), c, init)?;
            act(b, &self.act, &y)?
        } else {
            Pool2d::new(3, 2, 1).max(b, &y, ch)?
        };
        Ok((y, ch))
    }

    /// timm's `make_blocks`: stages `layer1..`, each block built by `block` in its scope
    /// (`layer{s}.{i}`) from its [`BlockGeom`]; records each stage's feature map. `expansion`
    /// is the block's (`planes * expansion` channels out). Returns the output and its width.
    pub fn stages(
        &self,
        b: &mut Builder,
        x: &Value,
        mut inplanes: usize,
        expansion: usize,
        mut block: impl FnMut(&mut Builder, &Value, &BlockGeom) -> Result<Value>,
    ) -> Result<(Value, usize)> {
        let mut x = x.clone();
        let mut net_stride = 4;
        let (mut dilation, mut prev_dilation) = (1, 1);
        for (s, &planes) in self.channels.iter().enumerate() {
            let name = format!("layer{}", s + 1);
            let mut stride = if s == 0 { 1 } else { 2 };
            if net_stride >= self.output_stride {
                dilation *= stride;
                stride = 1;
            } else {
                net_stride *= stride;
            }
            let out_ch = planes * expansion;
            let downsample = stride != 1 || inplanes != out_ch;
            for i in 0..self.layers[s] {
                let g = BlockGeom {
                    in_ch: inplanes,
                    planes,
                    out_ch,
                    stride: if i == 0 { stride } else { 1 },
                    dilation,
                    first_dilation: prev_dilation,
                    downsample: i == 0 && downsample,
                };
                let blk = &mut b.scope(&name);
                let blk = &mut blk.scope(i);
                x = block(blk, &x, &g)?;
                prev_dilation = dilation;
                inplanes = out_ch;
            }
            b.feature(&x, inplanes, net_stride, &name);
        }
        Ok((x, inplanes))
    }

    /// The block's shortcut: `downsample` (`downsample_avg`: pool, 1x1 conv, norm, or
    /// `downsample_conv`: conv, norm) or the identity.
    pub fn shortcut(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<Value> {
        if !g.downsample {
            return Ok(x.clone());
        }
        let b = &mut b.scope("downsample");
        let plain = g.stride == 1 && g.dilation == 1;
        if self.avg_down {
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
            let c = Conv::new(g.in_ch, g.out_ch, 1);
            self.conv_bn(b, &pooled, ("1", "2"), c, Init::Ones)
        } else {
            let k = if plain { 1 } else { self.down_kernel_size };
            let fd = if k > 1 { g.first_dilation } else { 1 };
            let c = Conv::new(g.in_ch, g.out_ch, k)
                .stride(g.stride)
                .dilation(fd);
            self.conv_bn(b, x, ("0", "1"), c, Init::Ones)
        }
    }

    /// The blocks' common tail: the shortcut added to the branch `y`, the activation.
    pub fn residual(&self, b: &mut Builder, x: &Value, y: &Value, g: &BlockGeom) -> Result<Value> {
        let shortcut = self.shortcut(b, x, g)?;
        let sum = super::add(b, y, &shortcut);
        keep_spatial(b, &sum, y, g.out_ch)?;
        act(b, &self.act, &sum)
    }

    /// The head (global pool, `fc`), or the trunk for `features_only`.
    pub fn head(
        &self,
        b: &mut Builder,
        x: &Value,
        num_features: usize,
        num_classes: usize,
    ) -> Result<(Value, usize)> {
        match b.output() {
            OutputKind::FeatureMaps => Ok((x.clone(), num_features)),
            out => classifier_head(
                b,
                x,
                num_features,
                self.pool,
                num_classes,
                out == OutputKind::Features,
            ),
        }
    }
}

/// `block_args` as an object (absent: empty); `allowed` are the keys the block implements.
pub fn block_args(
    args: &Args,
    block_args: &Option<Json>,
    allowed: &[&str],
) -> Result<serde_json::Map<String, Json>> {
    let m = match block_args {
        None | Some(Json::Null) => return Ok(serde_json::Map::new()),
        Some(Json::Object(m)) => m,
        Some(_) => return Err(args.unsupported("block_args", "expected an object")),
    };
    for (k, v) in m {
        // `attn_layer=None` is the blocks' default.
        if k == "attn_layer" && v.is_null() {
            continue;
        }
        if !allowed.contains(&k.as_str()) {
            return Err(args.unsupported(
                "block_args",
                &format!("block argument `{k}` is not implemented for this module"),
            ));
        }
    }
    Ok(m.clone())
}
