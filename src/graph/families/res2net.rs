//! timm's `res2net.py`: Res2Net and Res2NeXt (`res2net50_*`, `res2net101_*`, `res2next50`,
//! `res2net50d`, `res2net101d`) — timm's `ResNet` with `Bottle2neck` blocks: the 1x1 conv's
//! output split into `scale` groups, a hierarchy of 3x3 convs over them (each adding the
//! previous group's output, except in a stage's first block), the last group passed through
//! (average-pooled in a first block), concatenated, 1x1 conv.
//!
//! The arguments come from the generated table under config.json's `model_args`; the weights
//! decide the stem, the blocks per stage and the shortcut kind. `aa_layer` (which timm applies
//! to the stem only), block attention and norms other than BatchNorm are refused.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::resnet_parts::{block_args, BlockGeom, ResNetArgs, ResNetBase};
use crate::graph::layers::{act, concat, split, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, Value};

static TABLE: Table = Table::new(include_str!("../tables/res2net.json"));

pub const FAMILY: Family = Family {
    name: "res2net",
    examples: "res2net50_26w_4s, res2net50_48w_2s, res2net50_14w_8s, res2net50_26w_6s/8s, res2net101_26w_4s, res2next50, res2net50d, res2net101d",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

struct Res2Net {
    base: ResNetBase,
    /// `Bottle2neck(scale)`: the number of width groups.
    scale: usize,
}

impl Res2Net {
    fn from_config(cfg: &ModelConfig, requested_os: Option<usize>) -> Result<Res2Net> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a res2net architecture this build knows"
            ))
        })?;
        let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let a = ResNetArgs::read_only(&args)?;
        if a.block != "bottle2neck" {
            return Err(args.unsupported("block", "Bottle2neck only"));
        }
        let ba = block_args(&args, &a.block_args, &["scale"])?;
        let scale = match ba.get("scale") {
            None => 4,
            Some(v) => v
                .as_u64()
                .filter(|&s| (1..=64).contains(&s))
                .ok_or_else(|| args.unsupported("block_args", "scale must be 1..64"))?
                as usize,
        };
        args.finish()?;
        let base = ResNetBase::new(cfg, &args, &a, requested_os)?;
        Ok(Res2Net { base, scale })
    }

    /// `Bottle2neck`.
    fn block(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<Value> {
        let n = &self.base;
        let width = n.group_width(g.planes);
        if width == 0 {
            return Err(Error::invalid_model(format!(
                "Res2Net block width floor({} * {} / 64) is zero",
                g.planes, n.base_width
            )));
        }
        let is_first = g.stride > 1 || g.downsample;
        let num_scales = (self.scale - 1).max(1);
        let c1 = Conv::new(g.in_ch, width * self.scale, 1);
        let y = n.conv_bn(b, x, ("conv1", "bn1"), c1, Init::Ones)?;
        let y = act(b, &n.act, &y)?;
        let spx = if self.scale > 1 {
            split(b, &y, 1, &vec![width; self.scale])
        } else {
            vec![y.clone()]
        };
        let mut spo: Vec<Value> = Vec::with_capacity(self.scale);
        let mut sp = spx[0].clone();
        for (i, part) in spx.iter().enumerate().take(num_scales) {
            sp = if i == 0 || is_first {
                part.clone()
            } else {
                let s = crate::graph::layers::add(b, &sp, part);
                b.set_spatial(
                    &s,
                    part,
                    crate::graph::layers::resnet_parts::IDENTITY,
                    width,
                )?;
                s
            };
            let c = Conv::new(width, width, 3)
                .stride(g.stride)
                .dilation(g.first_dilation)
                .groups(n.cardinality);
            let (convs, bns) = (format!("convs.{i}"), format!("bns.{i}"));
            sp = n.conv_bn(b, &sp, (&convs, &bns), c, Init::Ones)?;
            sp = act(b, &n.act, &sp)?;
            spo.push(sp.clone());
        }
        if self.scale > 1 {
            let last = &spx[self.scale - 1];
            spo.push(if is_first {
                // nn.AvgPool2d(3, stride, padding=1), count_include_pad.
                Pool2d::new(3, g.stride, 1).avg(b, last, width)?
            } else {
                last.clone()
            });
        }
        let refs: Vec<&Value> = spo.iter().collect();
        let cat = concat(b, &refs, 1);
        b.set_spatial(
            &cat,
            &spo[0],
            crate::graph::layers::resnet_parts::IDENTITY,
            width * self.scale,
        )?;
        let c3 = Conv::new(width * self.scale, g.out_ch, 1);
        let y = n.conv_bn(b, &cat, ("conv3", "bn3"), c3, n.last_bn_init)?;
        n.residual(b, x, &y, g)
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let requested_os = b.output_stride();
    let mut net = Res2Net::from_config(cfg, requested_os)?;
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
        assert_eq!(TABLE.names().len(), 9);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            if let Err(e) = Res2Net::from_config(&cfg, None) {
                panic!("{arch}: {e:?}");
            }
        }
        let c = TABLE.get("res2next50").unwrap().config.to_string();
        let n = Res2Net::from_config(&ModelConfig::parse(c.as_bytes()).unwrap(), None).unwrap();
        assert_eq!((n.scale, n.base.cardinality, n.base.base_width), (4, 8, 4));
    }
}
