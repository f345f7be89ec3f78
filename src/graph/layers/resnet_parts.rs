//! timm's `ResNet` (`resnet.py`) in parts, for `resnet.py` itself, for the modules that plug
//! their own block into it (`sknet.py`, `res2net.py`, `resnest.py`) and for the hybrid ViTs'
//! `features_only` ResNet-D backbones: its arguments, the stem (7x7 or deep / tiered 3x3 stem,
//! max pool, strided conv or anti-aliasing pool), the stage layout of `make_blocks` (stride 2 per
//! stage after the first until `output_stride`, dilation after that), the `downsample_conv` /
//! `downsample_avg` shortcuts, `BasicBlock` and `Bottleneck` (with their `attn_layer` and
//! `aa_layer`, and a pruned network's conv widths) and the classifier head.

use serde_json::{Map, Value as Json};

use super::conv::{conv2d, conv_bn_init, Conv};
use super::heads::classifier_head;
use super::pool::{avg_pool2d_same_s1, blur_pool2d, Pool2d, PoolKind};
use super::se::{eca, eca_kernel, rd_channels, SqueezeExcite};
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

/// `BasicBlock` or `Bottleneck`, the blocks `resnet.py` defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Basic,
    Bottleneck,
}

impl Block {
    /// `BasicBlock` / `Bottleneck` by the class name timm's config holds (lower-cased).
    pub fn from_timm(name: &str) -> Option<Block> {
        match name.to_ascii_lowercase().as_str() {
            "basicblock" | "basic" => Some(Block::Basic),
            "bottleneck" => Some(Block::Bottleneck),
            _ => None,
        }
    }

    pub fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// `aa_layer`: `nn.AvgPool2d` or `BlurPool2d` (reflect padding, or `blurpc`'s zeros).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aa {
    Avg,
    Blur { reflect: bool },
}

impl Aa {
    /// timm's `_normalize_aa_layer` keys (a class name lower-cased by the table).
    pub fn from_timm(args: &Args, aa_layer: Option<&str>) -> Result<Option<Aa>> {
        let key = aa_layer.map(|s| {
            s.to_ascii_lowercase()
                .replace(['_', '-'], "")
                .trim_end_matches("2d")
                .to_string()
        });
        match key.as_deref() {
            None => Ok(None),
            Some("avgpool" | "avg") => Ok(Some(Aa::Avg)),
            Some("blurpool" | "blur") => Ok(Some(Aa::Blur { reflect: true })),
            Some("blurpc") => Ok(Some(Aa::Blur { reflect: false })),
            Some(_) => Err(args.unsupported(
                "aa_layer",
                "anti-aliasing is nn.AvgPool2d, BlurPool2d or 'blurpc'",
            )),
        }
    }
}

/// `block_args.attn_layer`: `SEModule` with its `rd_ratio`, or `EcaModule` / `CecaModule`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attn {
    Se(f64),
    Eca { circular: bool },
}

/// `block_args.attn_layer`: `'se'` / `partial(SEModule, rd_ratio=r)`, `'eca'` or `'ceca'`.
pub fn attn_layer(args: &Args, block_args: Option<&Json>) -> Result<Option<Attn>> {
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

/// Where a pruned network's conv widths come from.
#[derive(Debug, Clone)]
pub enum Pruned {
    Weights,
    /// Conv module name → output channels (timm's `_pruned/<arch>.txt`).
    Table(Map<String, Json>),
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
    /// `norm_layer` (anything but the identity).
    pub norm: Norm,
    /// `nn.BatchNorm2d`'s eps, for the blocks built with BatchNorm only ([`ResNetBase::new`]
    /// refuses other norms).
    pub bn_eps: f32,
    pub pool: PoolKind,
    /// Init of each residual branch's last BatchNorm weight without weights (`zero_init_last`).
    pub last_bn_init: Init,
    /// `aa_layer` of the stem and of `BasicBlock` / `Bottleneck`.
    pub aa: Option<Aa>,
    /// `block_args.attn_layer` of `BasicBlock` / `Bottleneck`.
    pub attn: Option<Attn>,
    /// A pruned network's conv widths (`BasicBlock` / `Bottleneck` and the stem).
    pub pruned: Option<Pruned>,
    /// Whether the stem and stages record feature maps (not when the ResNet is a backbone
    /// inside another network whose feature maps are its own).
    pub taps: bool,
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
    /// The common arguments for a block of the family's own, which is built with BatchNorm and
    /// without anti-aliasing; `requested_os` is the caller's `output_stride`, which wins over
    /// `model_args` as timm's kwargs do.
    pub fn new(
        cfg: &ModelConfig,
        args: &Args,
        a: &ResNetArgs,
        requested_os: Option<usize>,
    ) -> Result<ResNetBase> {
        if a.aa_layer.is_some() {
            return Err(args.unsupported(
                "aa_layer",
                "anti-aliased stems and blocks are not implemented for this module",
            ));
        }
        if !matches!(Norm::from_timm(&a.norm_layer, None), Ok(Norm::Batch { .. })) {
            return Err(args.unsupported(
                "norm_layer",
                "only nn.BatchNorm2d is implemented for this module",
            ));
        }
        Self::resolve(cfg, args, a, requested_os)
    }

    /// The arguments of `ResNet` built with `BasicBlock` / `Bottleneck`: any norm layer but
    /// the identity, and `aa_layer`. `attn` and `pruned` are the caller's to set.
    pub fn resolve(
        cfg: &ModelConfig,
        args: &Args,
        a: &ResNetArgs,
        requested_os: Option<usize>,
    ) -> Result<ResNetBase> {
        let arch = cfg.architecture.as_str();
        let aa = Aa::from_timm(args, a.aa_layer.as_deref())?;
        let norm = Norm::from_timm(&a.norm_layer, None)
            .map_err(|e| args.unsupported("norm_layer", e.message()))?;
        if norm == Norm::Identity {
            return Err(args.unsupported("norm_layer", "a ResNet needs a norm layer"));
        }
        let bn_eps = match norm {
            Norm::Batch { eps } => eps,
            _ => 1e-5,
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
            // timm tests substrings: 'deep' in stem_type, 'tiered' in stem_type.
            deep_stem: a.stem_type.contains("deep"),
            tiered_stem: a.stem_type.contains("tiered"),
            replace_stem_pool: a.replace_stem_pool,
            reduce_first: a.block_reduce_first,
            down_kernel_size: a.down_kernel_size,
            avg_down: a.avg_down,
            act: a.act_layer.clone(),
            norm,
            bn_eps,
            pool,
            last_bn_init: if a.zero_init_last {
                Init::Zeros
            } else {
                Init::Ones
            },
            aa,
            attn: None,
            pruned: None,
            taps: true,
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

    /// [`ResNetBase::read_weights`] for a network of `BasicBlock` / `Bottleneck` (`blocks`,
    /// one per stage): also each stage's block class, the attention module's kind and a
    /// pruned network's widths.
    pub fn read_block_weights(&mut self, b: &mut Builder, blocks: &mut [Block]) -> Result<()> {
        if b.weights().is_none() {
            return Ok(());
        }
        self.read_weights(b)?;
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
        for (s, block) in blocks.iter_mut().enumerate() {
            let first = format!("layer{}.0.conv3.weight", s + 1);
            *block = if b.has_weight(&first) {
                Block::Bottleneck
            } else {
                Block::Basic
            };
        }
        Ok(())
    }

    /// A conv's output width: the argument's, or a pruned network's (`conv` in `b`'s scope).
    pub fn width(&self, b: &Builder, conv: &str, default: usize) -> Result<usize> {
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

    /// A conv and its norm: BatchNorm folded into the conv, another norm after it.
    pub fn conv_norm(
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

    /// `int(floor(planes * (base_width / 64)) * cardinality)`, a bottleneck's 3x3 width.
    pub fn group_width(&self, planes: usize) -> usize {
        (planes * self.base_width / 64) * self.cardinality
    }

    /// `conv1` (one 7x7 conv, or the deep stem's three 3x3), `bn1`, `act1` (the `act1` feature
    /// map), then the stem pool `maxpool` (a max pool, or a strided conv + norm + act).
    /// Returns the output and its width (`inplanes`).
    pub fn stem(&self, b: &mut Builder, x: &Value) -> Result<(Value, usize)> {
        let (y, inplanes, _) = self.stem_widths(b, x)?;
        Ok((y, inplanes))
    }

    /// [`ResNetBase::stem`] with the anti-aliasing pools and a pruned network's widths: the
    /// stem pool keeps the name `maxpool` whatever it is. Returns the output and the stem's
    /// (timm, actual) widths.
    pub fn stem_widths(&self, b: &mut Builder, x: &Value) -> Result<(Value, usize, usize)> {
        let inplanes = if self.deep_stem {
            self.stem_width * 2
        } else {
            64
        };
        let init = Init::Ones;
        let (y, ch) = if self.deep_stem {
            let (c0, c1) = if self.tiered_stem {
                (3 * (self.stem_width / 4), self.stem_width)
            } else {
                (self.stem_width, self.stem_width)
            };
            let c0 = self.width(b, "conv1.0", c0)?;
            let c1 = self.width(b, "conv1.3", c1)?;
            let ch = self.width(b, "conv1.6", inplanes)?;
            let c = Conv::new(self.in_chans, c0, 3).stride(2);
            let y = self.conv_norm(b, x, ("conv1.0", "conv1.1"), c, init)?;
            let y = act(b, &self.act, &y)?;
            let y = self.conv_norm(b, &y, ("conv1.3", "conv1.4"), Conv::new(c0, c1, 3), init)?;
            let y = act(b, &self.act, &y)?;
            let y = self.conv_norm(b, &y, ("conv1.6", "bn1"), Conv::new(c1, ch, 3), init)?;
            (y, ch)
        } else {
            let ch = self.width(b, "conv1", inplanes)?;
            let c = Conv::new(self.in_chans, ch, 7).stride(2);
            (self.conv_norm(b, x, ("conv1", "bn1"), c, init)?, ch)
        };
        let y = act(b, &self.act, &y)?;
        if self.taps {
            b.feature(&y, ch, 2, "act1");
        }
        let y = match (self.replace_stem_pool, self.aa) {
            // conv, anti-aliasing pool, norm, act. A BatchNorm folds into the conv before a
            // pool that averages each channel with weights summing to one and no zero padding.
            (true, Some(aa)) => {
                let c = Conv::new(ch, ch, 3);
                if matches!(self.norm, Norm::Batch { .. }) && aa != (Aa::Blur { reflect: false }) {
                    let y = self.conv_norm(b, &y, ("maxpool.0", "maxpool.2"), c, init)?;
                    let y = aa_pool(b, aa, &y, 2, ch)?;
                    act(b, &self.act, &y)?
                } else {
                    let y = conv2d(&mut b.scope("maxpool.0"), &y, c)?;
                    let y = aa_pool(b, aa, &y, 2, ch)?;
                    let y = self.norm.apply_2d(&mut b.scope("maxpool.2"), &y, ch)?;
                    act(b, &self.act, &y)?
                }
            }
            (true, None) => {
                let c = Conv::new(ch, ch, 3).stride(2);
                let y = self.conv_norm(b, &y, ("maxpool.0", "maxpool.1"), c, init)?;
                act(b, &self.act, &y)?
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

    /// timm's `make_blocks`: stages `layer1..`, each block built by `block` in its scope
    /// (`layer{s}.{i}`) from its [`BlockGeom`]; records each stage's feature map. `expansion`
    /// is the block's (`planes * expansion` channels out). Returns the output and its width.
    pub fn stages(
        &self,
        b: &mut Builder,
        x: &Value,
        inplanes: usize,
        expansion: usize,
        mut block: impl FnMut(&mut Builder, &Value, &BlockGeom) -> Result<Value>,
    ) -> Result<(Value, usize)> {
        let expansions = vec![expansion; self.channels.len()];
        self.make_blocks(b, x, inplanes, inplanes, &expansions, |b, x, _, g| {
            Ok((block(b, x, g)?, g.out_ch))
        })
    }

    /// timm's `make_blocks` with one expansion per stage and blocks (given their stage index)
    /// that return their actual output width (a pruned network's): `inplanes` is timm's input
    /// width, `ch` the actual.
    pub fn make_blocks(
        &self,
        b: &mut Builder,
        x: &Value,
        mut inplanes: usize,
        mut ch: usize,
        expansions: &[usize],
        mut block: impl FnMut(&mut Builder, &Value, usize, &BlockGeom) -> Result<(Value, usize)>,
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
            let out_ch = planes * expansions[s];
            let downsample = stride != 1 || inplanes != out_ch;
            for i in 0..self.layers[s] {
                let g = BlockGeom {
                    in_ch: ch,
                    planes,
                    out_ch,
                    stride: if i == 0 { stride } else { 1 },
                    dilation,
                    first_dilation: prev_dilation,
                    downsample: i == 0 && downsample,
                };
                let stage = &mut b.scope(&name);
                let blk = &mut stage.scope(i);
                (x, ch) = block(blk, &x, s, &g)?;
                prev_dilation = dilation;
                inplanes = out_ch;
            }
            if self.taps {
                b.feature(&x, ch, net_stride, &name);
            }
        }
        Ok((x, ch))
    }

    /// `make_blocks` of `BasicBlock` / `Bottleneck` (`blocks`, one per stage) after a stem of
    /// (timm, actual) widths `inplanes`, `ch`. Returns the output and its width.
    pub fn resnet_stages(
        &self,
        b: &mut Builder,
        x: &Value,
        inplanes: usize,
        ch: usize,
        blocks: &[Block],
    ) -> Result<(Value, usize)> {
        let expansions: Vec<usize> = blocks.iter().map(|k| k.expansion()).collect();
        self.make_blocks(b, x, inplanes, ch, &expansions, |b, x, s, g| {
            match blocks[s] {
                Block::Basic => self.basic_block(b, x, g),
                Block::Bottleneck => self.bottleneck(b, x, g),
            }
        })
    }

    /// The block's shortcut: `downsample` (`downsample_avg`: pool, 1x1 conv, norm, or
    /// `downsample_conv`: conv, norm) or the identity.
    pub fn shortcut(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<Value> {
        self.shortcut_to(b, x, g, g.out_ch)
    }

    /// [`ResNetBase::shortcut`] to `out` channels (a pruned block's).
    pub fn shortcut_to(
        &self,
        b: &mut Builder,
        x: &Value,
        g: &BlockGeom,
        out: usize,
    ) -> Result<Value> {
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
            let c = Conv::new(g.in_ch, out, 1);
            self.conv_norm(b, &pooled, ("1", "2"), c, Init::Ones)
        } else {
            let k = if plain { 1 } else { self.down_kernel_size };
            let fd = if k > 1 { g.first_dilation } else { 1 };
            let c = Conv::new(g.in_ch, out, k).stride(g.stride).dilation(fd);
            self.conv_norm(b, x, ("0", "1"), c, Init::Ones)
        }
    }

    /// The blocks' common tail: the shortcut added to the branch `y`, the activation.
    pub fn residual(&self, b: &mut Builder, x: &Value, y: &Value, g: &BlockGeom) -> Result<Value> {
        let shortcut = self.shortcut(b, x, g)?;
        let sum = super::add(b, y, &shortcut);
        keep_spatial(b, &sum, y, g.out_ch)?;
        act(b, &self.act, &sum)
    }

    /// `BasicBlock`: two 3x3 convs (the first strided, or followed by the anti-aliasing pool).
    /// Returns the block's output and its width.
    pub fn basic_block(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<(Value, usize)> {
        let first = self.width(b, "conv1", g.planes / self.reduce_first)?;
        let out = self.width(b, "conv2", g.planes)?;
        let aa = self
            .aa
            .filter(|_| g.stride == 2 || g.first_dilation != g.dilation);
        let c1 = Conv::new(g.in_ch, first, 3)
            .stride(if aa.is_some() { 1 } else { g.stride })
            .dilation(g.first_dilation);
        let y = self.conv_norm(b, x, ("conv1", "bn1"), c1, Init::Ones)?;
        let y = act(b, &self.act, &y)?;
        let y = match aa {
            Some(aa) => aa_pool(b, aa, &y, g.stride, first)?,
            None => y,
        };
        let c2 = Conv::new(first, out, 3).dilation(g.dilation);
        let y = self.conv_norm(b, &y, ("conv2", "bn2"), c2, self.last_bn_init)?;
        let shortcut = self.shortcut_to(b, x, g, out)?;
        Ok((self.attn_residual(b, &y, &shortcut, g.planes, out)?, out))
    }

    /// `Bottleneck`: 1x1 reduce, grouped 3x3 (strided, or followed by the anti-aliasing pool),
    /// 1x1 expand. Returns the block's output and its width.
    pub fn bottleneck(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<(Value, usize)> {
        let width = self.group_width(g.planes);
        let first = self.width(b, "conv1", width / self.reduce_first)?;
        let width = self.width(b, "conv2", width)?;
        let out = self.width(b, "conv3", g.planes * 4)?;
        let aa = self
            .aa
            .filter(|_| g.stride == 2 || g.first_dilation != g.dilation);
        let c1 = Conv::new(g.in_ch, first, 1);
        let y = self.conv_norm(b, x, ("conv1", "bn1"), c1, Init::Ones)?;
        let y = act(b, &self.act, &y)?;
        let c2 = Conv::new(first, width, 3)
            .stride(if aa.is_some() { 1 } else { g.stride })
            .dilation(g.first_dilation)
            .groups(self.cardinality);
        let y = self.conv_norm(b, &y, ("conv2", "bn2"), c2, Init::Ones)?;
        let y = act(b, &self.act, &y)?;
        let y = match aa {
            Some(aa) => aa_pool(b, aa, &y, g.stride, width)?,
            None => y,
        };
        let c3 = Conv::new(width, out, 1);
        let y = self.conv_norm(b, &y, ("conv3", "bn3"), c3, self.last_bn_init)?;
        let shortcut = self.shortcut_to(b, x, g, out)?;
        Ok((
            self.attn_residual(b, &y, &shortcut, g.planes * 4, out)?,
            out,
        ))
    }

    /// `BasicBlock` / `Bottleneck`'s tail: `se` (timm builds it for the unpruned width
    /// `planes_out`), the shortcut added, the activation.
    fn attn_residual(
        &self,
        b: &mut Builder,
        y: &Value,
        shortcut: &Value,
        planes_out: usize,
        out: usize,
    ) -> Result<Value> {
        let y = match self.attn {
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
        let sum = super::add(b, &y, shortcut);
        // The sum has the branch's size. Recorded after the shortcut so that the branch, whose
        // floor-mode anti-aliasing pools are what an input can be too small for, is the
        // deepest spatial chain the builder checks inputs against (the shortcut's ceil-mode
        // pools never empty a map).
        b.set_spatial(&sum, &y, IDENTITY, out)?;
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

/// timm's `create_aa(aa_layer, channels, stride)`: `nn.AvgPool2d(stride)` (the identity for
/// stride 1) or `BlurPool2d(channels, filt_size=3, stride)` (which blurs at stride 1 too).
pub fn aa_pool(
    b: &mut Builder,
    aa: Aa,
    x: &Value,
    stride: usize,
    channels: usize,
) -> Result<Value> {
    match aa {
        Aa::Avg if stride == 1 => Ok(x.clone()),
        Aa::Avg => Pool2d::new(stride, stride, 0).avg(b, x, channels),
        Aa::Blur { reflect } => blur_pool2d(b, x, channels, 3, stride, reflect),
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
