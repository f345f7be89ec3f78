//! timm's `resnest.py`: ResNeSt (`resnest14d/26d/50d`, `resnest101e/200e/269e`,
//! `resnest50d_4s2x40d`, `resnest50d_1s4x24d`) — timm's `ResNet` with `ResNestBottleneck`
//! blocks: a split-attention 3x3 conv (`SplitAttn`, radix splits mixed by a radix softmax, a
//! sigmoid gate for radix 1) and, with `avd`, the stride moved to a 3x3 average pool before
//! (`avd_first`) or after it.
//!
//! The arguments come from the generated table under config.json's `model_args`; the weights
//! decide the stem, the blocks per stage, the shortcut kind and each SplitAttn's attention
//! width. timm asserts `aa_layer`, `attn_layer` and `block_reduce_first` away; radix 0 (a plain
//! conv block) and norms other than BatchNorm are refused here.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::resnet_parts::{block_args, BlockGeom, ResNetArgs, ResNetBase};
use crate::graph::layers::split_attn::{split_attn, SplitAttnCfg};
use crate::graph::layers::{act, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, Value};

static TABLE: Table = Table::new(include_str!("../tables/resnest.json"));

pub const FAMILY: Family = Family {
    name: "resnest",
    examples: "resnest14d, resnest26d, resnest50d, resnest101e, resnest200e, resnest269e, resnest50d_4s2x40d, resnest50d_1s4x24d",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

struct ResNest {
    base: ResNetBase,
    radix: usize,
    avd: bool,
    avd_first: bool,
    is_first: bool,
}

impl ResNest {
    fn from_config(cfg: &ModelConfig, requested_os: Option<usize>) -> Result<ResNest> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a resnest architecture this build knows"
            ))
        })?;
        let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let a = ResNetArgs::read_only(&args)?;
        if a.block != "resnestbottleneck" {
            return Err(args.unsupported("block", "ResNestBottleneck only"));
        }
        let ba = block_args(
            &args,
            &a.block_args,
            &["radix", "avd", "avd_first", "is_first"],
        )?;
        let flag = |k: &str| -> Result<bool> {
            match ba.get(k) {
                None => Ok(false),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| args.unsupported("block_args", "avd flags must be booleans")),
            }
        };
        let (avd, avd_first, is_first) = (flag("avd")?, flag("avd_first")?, flag("is_first")?);
        let radix = match ba.get("radix") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|&r| (1..=64).contains(&r))
                .ok_or_else(|| {
                    args.unsupported("block_args", "radix must be 1..64 (radix 0 is not built)")
                })? as usize,
        };
        args.finish()?;
        let base = ResNetBase::new(cfg, &args, &a, requested_os)?;
        if base.reduce_first != 1 {
            return Err(Error::invalid_model(format!(
                "`{arch}`: ResNestBottleneck takes block_reduce_first 1 only"
            )));
        }
        Ok(ResNest {
            base,
            radix,
            avd,
            avd_first,
            is_first,
        })
    }

    /// `ResNestBottleneck`.
    fn block(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<Value> {
        let n = &self.base;
        let gw = n.group_width(g.planes);
        let (stride, avd_stride) = if self.avd && (g.stride > 1 || self.is_first) {
            (1, g.stride)
        } else {
            (g.stride, 0)
        };
        let c1 = Conv::new(g.in_ch, gw, 1);
        let y = n.conv_bn(b, x, ("conv1", "bn1"), c1, Init::Ones)?;
        let mut y = act(b, &n.act, &y)?;
        let avd_pool = |b: &mut Builder, y: &Value| Pool2d::new(3, avd_stride, 1).avg(b, y, gw);
        if avd_stride > 0 && self.avd_first {
            y = avd_pool(b, &y)?;
        }
        y = {
            let s = &mut b.scope("conv2");
            let attn_ch = match s.weight_shape("fc1.weight") {
                Some(shape) => shape[0],
                None => make_divisible_min(gw as f64 * self.radix as f64 * 0.25, 8, 32),
            };
            let c = SplitAttnCfg {
                in_ch: gw,
                out_ch: gw,
                kernel: 3,
                stride,
                padding: g.first_dilation,
                dilation: g.first_dilation,
                groups: n.cardinality,
                radix: self.radix,
                attn_ch,
                bn_eps: n.bn_eps,
            };
            split_attn(s, &y, &c)?
        };
        if avd_stride > 0 && !self.avd_first {
            y = avd_pool(b, &y)?;
        }
        let c3 = Conv::new(gw, g.planes * 4, 1);
        let y = n.conv_bn(b, &y, ("conv3", "bn3"), c3, n.last_bn_init)?;
        n.residual(b, x, &y, g)
    }
}

/// timm's `make_divisible(v, divisor, min_value)` (round_limit 0.9).
fn make_divisible_min(v: f64, divisor: usize, min_value: usize) -> usize {
    let d = divisor as f64;
    let mut n = (((v + d / 2.0) / d).floor() * d).max(min_value as f64);
    if n < 0.9 * v {
        n += d;
    }
    n as usize
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let requested_os = b.output_stride();
    let mut net = ResNest::from_config(cfg, requested_os)?;
    net.base.read_weights(b)?;
    let x = b.input();
    let (x, inplanes) = net.base.stem(b, &x)?;
    let (x, num_features) = net
        .base
        .stages(b, &x, inplanes, 4, |b, x, g| net.block(b, x, g))?;
    net.base.head(b, &x, num_features, cfg.num_classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_architecture_resolves() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        assert_eq!(TABLE.names().len(), 8);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            if let Err(e) = ResNest::from_config(&cfg, None) {
                panic!("{arch}: {e:?}");
            }
        }
        let c = TABLE.get("resnest50d_4s2x40d").unwrap().config.to_string();
        let n = ResNest::from_config(&ModelConfig::parse(c.as_bytes()).unwrap(), None).unwrap();
        assert_eq!((n.radix, n.avd, n.avd_first), (4, true, true));
        // timm: make_divisible(64 * 2 * 0.25, min_value=32, divisor=8) == 32.
        assert_eq!(make_divisible_min(32.0, 8, 32), 32);
    }
}
