//! timm's `senet.py`: the legacy SENet class ported from Cadene's models (`legacy_seresnet18/34/
//! 50/101/152`, `legacy_seresnext26/50/101_32x4d`, `legacy_senet154`). Its own layout: `layer0`
//! (a 7x7 conv, or three 3x3 convs with `input_3x3`), a ceil-mode max pool `pool0`, four stages
//! whose blocks end in an `SEModule` (`se_module`), the classifier `last_linear`. The bottleneck
//! of SE-ResNet strides its first 1x1 conv (Caffe style); SE-ResNeXt and SENet-154 stride the 3x3.
//!
//! timm fixes the stage widths (64, 128, 256, 512 planes); with weights, each stage's planes and
//! every SE reduction width are read from the tensors, so a narrowed checkpoint builds as its
//! tensors say. timm's SENet has no `output_stride`, and the builder refuses it.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::resnet_parts::keep_spatial;
use crate::graph::layers::se::SqueezeExcite;
use crate::graph::layers::{act, add, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};

static TABLE: Table = Table::new(include_str!("../tables/senet.json"));

pub const FAMILY: Family = Family {
    name: "senet",
    examples:
        "legacy_seresnet18..legacy_seresnet152, legacy_seresnext26_32x4d/50/101, legacy_senet154",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;

crate::timm_args! {
    /// `SENet.__init__`'s keyword arguments, with timm's defaults.
    struct SeNetArgs {
        block: String = String::new(),
        layers: Vec<usize> = vec![],
        groups: usize = 1,
        reduction: usize = 16,
        in_chans: Option<usize> = None,
        inplanes: usize = 64,
        input_3x3: bool = false,
        downsample_kernel_size: usize = 1,
        downsample_padding: usize = 0,
        global_pool: String = "avg".into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// `SEBottleneck` (SENet-154): 1x1 to planes·2, strided grouped 3x3 to planes·4, 1x1.
    Senet154Bottleneck,
    /// `SEResNetBottleneck`: strided 1x1 to planes, 3x3, 1x1 to planes·4.
    ResNetBottleneck,
    /// `SEResNeXtBottleneck`: 1x1 to floor(planes·4/64)·groups, strided grouped 3x3, 1x1.
    ResNeXtBottleneck,
    /// `SEResNetBlock`: two 3x3 convs (the first strided).
    ResNetBasic,
}

impl Block {
    fn expansion(self) -> usize {
        if self == Block::ResNetBasic {
            1
        } else {
            4
        }
    }
}

#[derive(Debug, Clone)]
struct SeNet {
    block: Block,
    layers: Vec<usize>,
    planes: Vec<usize>,
    groups: usize,
    reduction: usize,
    in_chans: usize,
    inplanes: usize,
    input_3x3: bool,
    ds_kernel: usize,
    ds_padding: usize,
    pool: PoolKind,
}

impl SeNet {
    fn from_config(cfg: &ModelConfig) -> Result<SeNet> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a senet architecture this build knows"
            ))
        })?;
        let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let a = SeNetArgs::read(&args)?;
        let block = match a.block.as_str() {
            "sebottleneck" => Block::Senet154Bottleneck,
            "seresnetbottleneck" => Block::ResNetBottleneck,
            "seresnextbottleneck" => Block::ResNeXtBottleneck,
            "seresnetblock" => Block::ResNetBasic,
            _ => {
                return Err(args.unsupported(
                    "block",
                    "SEBottleneck, SEResNetBottleneck, SEResNeXtBottleneck or SEResNetBlock",
                ))
            }
        };
        let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or(&a.global_pool))?;
        if pool == PoolKind::None {
            return Err(Error::unsupported(format!(
                "`{arch}`: global_pool '' (no pooling before the classifier) is not supported natively"
            )));
        }
        if a.layers.len() != 4 {
            return Err(Error::invalid_model(format!(
                "`{arch}`: SENet has four stages, layers is {:?}",
                a.layers
            )));
        }
        let input_chans = cfg.pretrained_cfg.input_size[0];
        let in_chans = a.in_chans.unwrap_or(input_chans);
        if in_chans != input_chans {
            return Err(Error::invalid_model(format!(
                "`{arch}`: model_args in_chans {in_chans} disagrees with input_size {:?}",
                cfg.pretrained_cfg.input_size
            )));
        }
        if a.groups == 0 || a.reduction == 0 || a.inplanes == 0 || a.downsample_kernel_size == 0 {
            return Err(Error::invalid_model(format!(
                "`{arch}`: groups, reduction, inplanes and downsample_kernel_size must be positive"
            )));
        }
        Ok(SeNet {
            block,
            layers: a.layers,
            planes: vec![64, 128, 256, 512],
            groups: a.groups,
            reduction: a.reduction,
            in_chans,
            inplanes: a.inplanes,
            input_3x3: a.input_3x3,
            ds_kernel: a.downsample_kernel_size,
            ds_padding: a.downsample_padding,
            pool,
        })
    }

    /// Replaces what the weights determine (the stem kind, its width, blocks and planes per
    /// stage) with what they hold.
    fn read_weights(&mut self, b: &mut Builder) -> Result<()> {
        if b.weights().is_none() {
            return Ok(());
        }
        self.input_3x3 = b.has_weight("layer0.conv3.weight");
        let stem_out = if self.input_3x3 {
            "layer0.conv3.weight"
        } else {
            "layer0.conv1.weight"
        };
        if let Some(s) = b.weight_shape(stem_out) {
            self.inplanes = s[0];
        }
        for s in 0..4 {
            let stage = &mut b.scope(format!("layer{}", s + 1));
            self.layers[s] = (0..)
                .take_while(|&i| stage.has_weight(&format!("{i}.conv1.weight")))
                .count();
            if self.layers[s] == 0 {
                return Err(Error::invalid_model(format!(
                    "the weights have no `{}`",
                    stage.key("0.conv1.weight")
                )));
            }
            // The block's output width is planes · expansion.
            let last = if self.block == Block::ResNetBasic {
                "0.conv2.weight"
            } else {
                "0.conv3.weight"
            };
            if let Some(shape) = stage.weight_shape(last) {
                self.planes[s] = shape[0] / self.block.expansion();
            }
        }
        Ok(())
    }
}

/// `nn.Conv2d(in, out, k, stride, padding, groups, bias=False)` + `nn.BatchNorm2d`, folded.
#[allow(clippy::too_many_arguments)]
fn conv_bn_k(
    b: &mut Builder,
    x: &Value,
    names: (&str, &str),
    (in_ch, out_ch): (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> Result<Value> {
    let c = Conv::new(in_ch, out_ch, k)
        .stride(stride)
        .pad(Pad::Sym(pad))
        .groups(groups);
    conv_bn(b, x, names.0, names.1, c, BN_EPS)
}

/// `layer0`: conv1/bn1/relu1 (7x7, stride 2) or three 3x3 convs (64, 64, inplanes).
fn layer0(b: &mut Builder, n: &SeNet, x: &Value) -> Result<Value> {
    let b = &mut b.scope("layer0");
    if n.input_3x3 {
        // timm's literal 64, or the weights' width.
        let w = |b: &Builder, conv: &str| b.weight_shape(conv).map_or(64, |s| s[0]);
        let (c1, c2) = (w(b, "conv1.weight"), w(b, "conv2.weight"));
        let y = conv_bn_k(b, x, ("conv1", "bn1"), (n.in_chans, c1), 3, 2, 1, 1)?;
        let y = act(b, "relu", &y)?;
        let y = conv_bn_k(b, &y, ("conv2", "bn2"), (c1, c2), 3, 1, 1, 1)?;
        let y = act(b, "relu", &y)?;
        let y = conv_bn_k(b, &y, ("conv3", "bn3"), (c2, n.inplanes), 3, 1, 1, 1)?;
        act(b, "relu", &y)
    } else {
        let y = conv_bn_k(b, x, ("conv1", "bn1"), (n.in_chans, n.inplanes), 7, 2, 3, 1)?;
        act(b, "relu", &y)
    }
}

/// One block of a stage (`stride` and `downsample` for the first).
fn block(
    b: &mut Builder,
    n: &SeNet,
    x: &Value,
    in_ch: usize,
    planes: usize,
    stride: usize,
    downsample: Option<(usize, usize)>,
) -> Result<Value> {
    let out = planes * n.block.expansion();
    let g = n.groups;
    let y = match n.block {
        Block::ResNetBasic => {
            let y = conv_bn_k(b, x, ("conv1", "bn1"), (in_ch, planes), 3, stride, 1, 1)?;
            let y = act(b, "relu", &y)?;
            let y = conv_bn_k(b, &y, ("conv2", "bn2"), (planes, planes), 3, 1, 1, g)?;
            act(b, "relu", &y)?
        }
        bottleneck => {
            let (w1, w2, s1, s2) = match bottleneck {
                Block::Senet154Bottleneck => (planes * 2, planes * 4, 1, stride),
                Block::ResNetBottleneck => (planes, planes, stride, 1),
                _ => {
                    let w = (planes * 4 / 64) * g;
                    (w, w, 1, stride)
                }
            };
            if w1 == 0 || w2 == 0 {
                return Err(Error::invalid_model(format!(
                    "SENet block width is zero for {planes} planes"
                )));
            }
            let y = conv_bn_k(b, x, ("conv1", "bn1"), (in_ch, w1), 1, s1, 0, 1)?;
            let y = act(b, "relu", &y)?;
            let y = conv_bn_k(b, &y, ("conv2", "bn2"), (w1, w2), 3, s2, 1, g)?;
            let y = act(b, "relu", &y)?;
            conv_bn_k(b, &y, ("conv3", "bn3"), (w2, out), 1, 1, 0, 1)?
        }
    };
    let z = {
        let se = &mut b.scope("se_module");
        let rd = se
            .weight_shape("fc1.weight")
            .map_or(out / n.reduction, |s| s[0]);
        if rd == 0 {
            return Err(Error::invalid_model(format!(
                "SEModule width {out} // reduction {} is zero",
                n.reduction
            )));
        }
        SqueezeExcite::se_module(out, rd)
            .init(Init::KaimingFanOut)
            .apply(se, &y)?
    };
    let shortcut = match downsample {
        Some((k, pad)) => conv_bn_k(
            &mut b.scope("downsample"),
            x,
            ("0", "1"),
            (in_ch, out),
            k,
            stride,
            pad,
            1,
        )?,
        None => x.clone(),
    };
    let sum = add(b, &z, &shortcut);
    keep_spatial(b, &sum, &y, out)?;
    act(b, "relu", &sum)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let mut n = SeNet::from_config(cfg)?;
    n.read_weights(b)?;
    let x = b.input();
    let y = layer0(b, &n, &x)?;
    b.feature(&y, n.inplanes, 2, "layer0");
    // MaxPool2d(3, stride=2, ceil_mode=True), no padding.
    let mut x = Pool2d::new(3, 2, 0).ceil(true).max(b, &y, n.inplanes)?;
    let mut in_ch = n.inplanes;
    let mut reduction = 4;
    for s in 0..4 {
        let planes = n.planes[s];
        let stride = if s == 0 { 1 } else { 2 };
        let (k, pad) = if s == 0 {
            (1, 0)
        } else {
            (n.ds_kernel, n.ds_padding)
        };
        let out = planes * n.block.expansion();
        let ds = (stride != 1 || in_ch != out).then_some((k, pad));
        let name = format!("layer{}", s + 1);
        for i in 0..n.layers[s] {
            let stage = &mut b.scope(&name);
            let blk = &mut stage.scope(i);
            x = if i == 0 {
                block(blk, &n, &x, in_ch, planes, stride, ds)?
            } else {
                block(blk, &n, &x, out, planes, 1, None)?
            };
        }
        in_ch = out;
        if s > 0 {
            reduction *= 2;
        }
        b.feature(&x, out, reduction, &name);
    }
    match b.output() {
        OutputKind::FeatureMaps => Ok((x, in_ch)),
        out => {
            let pooled = global_pool(b, &x, n.pool);
            let width = in_ch * n.pool.multiplier();
            if out == OutputKind::Features || cfg.num_classes == 0 {
                return Ok((pooled, width));
            }
            let logits = linear_2d(
                &mut b.scope("last_linear"),
                &pooled,
                width,
                cfg.num_classes,
                true,
                Init::DefaultUniform,
            )?;
            Ok((logits, cfg.num_classes))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_architecture_resolves() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        assert_eq!(TABLE.names().len(), 9);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            if let Err(e) = SeNet::from_config(&cfg) {
                panic!("{arch}: {e:?}");
            }
        }
        let c = TABLE.get("legacy_senet154").unwrap().config.to_string();
        let n = SeNet::from_config(&ModelConfig::parse(c.as_bytes()).unwrap()).unwrap();
        assert_eq!(n.block, Block::Senet154Bottleneck);
        assert!(n.input_3x3 && n.inplanes == 128 && n.ds_kernel == 3 && n.ds_padding == 1);
    }
}
