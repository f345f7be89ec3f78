//! timm's `sknet.py`: Selective Kernel ResNets (`skresnet18/34/50/50d`, `skresnext50_32x4d`) —
//! timm's `ResNet` with `SelectiveKernelBasic` / `SelectiveKernelBottleneck` blocks, whose 3x3
//! conv is a `SelectiveKernel` (two dilated 3x3 paths mixed by a softmax attention).
//!
//! The arguments come from the generated table under config.json's `model_args`; the weights
//! decide the stem, the blocks per stage, the shortcut kind and each SelectiveKernel's attention
//! width. `aa_layer`, block attention (`attn_layer`) and norms other than BatchNorm are refused.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::resnet_parts::{block_args, BlockGeom, ResNetArgs, ResNetBase};
use crate::graph::layers::selective_kernel::{selective_kernel, SelectiveKernelCfg};
use crate::graph::layers::{conv_norm_act, make_divisible, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Value};

static TABLE: Table = Table::new(include_str!("../tables/sknet.json"));

pub const FAMILY: Family = Family {
    name: "sknet",
    examples: "skresnet18, skresnet34, skresnet50, skresnet50d, skresnext50_32x4d",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Basic,
    Bottleneck,
}

/// `sk_kwargs`: `SelectiveKernel`'s keyword arguments, timm's defaults.
#[derive(Debug, Clone)]
struct SkArgs {
    kernels: Vec<usize>,
    rd_ratio: f64,
    rd_channels: Option<usize>,
    rd_divisor: usize,
    keep_3x3: bool,
    split_input: bool,
}

impl SkArgs {
    fn read(args: &Args, sk: Option<&Json>) -> Result<SkArgs> {
        let bad = |why: &str| args.unsupported("block_args", why);
        let m = match sk {
            None | Some(Json::Null) => serde_json::Map::new(),
            Some(Json::Object(m)) => m.clone(),
            Some(_) => return Err(bad("sk_kwargs must be an object")),
        };
        let mut a = SkArgs {
            kernels: vec![3, 5],
            rd_ratio: 1.0 / 16.0,
            rd_channels: None,
            rd_divisor: 8,
            keep_3x3: true,
            split_input: true,
        };
        let uint = |v: &Json| {
            v.as_u64()
                .filter(|&n| n > 0 && n < 1 << 20)
                .map(|n| n as usize)
        };
        for (k, v) in &m {
            match k.as_str() {
                "kernel_size" => {
                    a.kernels =
                        match v {
                            Json::Null => vec![3, 5],
                            Json::Array(ks) => {
                                ks.iter().map(uint).collect::<Option<Vec<_>>>().ok_or_else(
                                    || bad("sk_kwargs kernel_size must be positive integers"),
                                )?
                            }
                            v => vec![uint(v).ok_or_else(|| bad("sk_kwargs kernel_size"))?; 2],
                        }
                }
                "rd_ratio" => {
                    a.rd_ratio = v
                        .as_f64()
                        .filter(|r| *r > 0.0 && *r <= 1.0)
                        .ok_or_else(|| bad("sk_kwargs rd_ratio must be in (0, 1]"))?
                }
                "rd_channels" => {
                    a.rd_channels = match v {
                        Json::Null => None,
                        v => Some(uint(v).ok_or_else(|| bad("sk_kwargs rd_channels"))?),
                    }
                }
                "rd_divisor" => {
                    a.rd_divisor = uint(v).ok_or_else(|| bad("sk_kwargs rd_divisor"))?
                }
                "keep_3x3" => a.keep_3x3 = v.as_bool().ok_or_else(|| bad("sk_kwargs keep_3x3"))?,
                "split_input" => {
                    a.split_input = v.as_bool().ok_or_else(|| bad("sk_kwargs split_input"))?
                }
                _ => return Err(bad(&format!("sk_kwargs `{k}` is not implemented natively"))),
            }
        }
        Ok(a)
    }
}

struct SkNet {
    base: ResNetBase,
    block: Block,
    sk: SkArgs,
}

impl SkNet {
    fn from_config(cfg: &ModelConfig, requested_os: Option<usize>) -> Result<SkNet> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not an sknet architecture this build knows"
            ))
        })?;
        let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
        let a = ResNetArgs::read_only(&args)?;
        let block = match a.block.as_str() {
            "selectivekernelbasic" => Block::Basic,
            "selectivekernelbottleneck" => Block::Bottleneck,
            _ => {
                return Err(args.unsupported(
                    "block",
                    "SelectiveKernelBasic or SelectiveKernelBottleneck only",
                ))
            }
        };
        let ba = block_args(&args, &a.block_args, &["sk_kwargs"])?;
        let sk = SkArgs::read(&args, ba.get("sk_kwargs"))?;
        args.finish()?;
        let base = ResNetBase::new(cfg, &args, &a, requested_os)?;
        if block == Block::Basic && (base.cardinality != 1 || base.base_width != 64) {
            return Err(Error::invalid_model(format!(
                "`{arch}`: SelectiveKernelBasic needs cardinality 1 and base_width 64"
            )));
        }
        Ok(SkNet { base, block, sk })
    }

    fn expansion(&self) -> usize {
        match self.block {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }

    /// `SelectiveKernel(in_ch, out_ch, stride, dilation, groups, **sk_kwargs)` in scope `name`.
    fn sk_conv(
        &self,
        b: &mut Builder,
        x: &Value,
        name: &str,
        (in_ch, out_ch): (usize, usize),
        g: &BlockGeom,
        groups: usize,
    ) -> Result<Value> {
        let s = &mut b.scope(name);
        let attn_ch = match s.weight_shape("attn.fc_reduce.weight") {
            Some(shape) => shape[0],
            None => self.sk.rd_channels.unwrap_or_else(|| {
                make_divisible(out_ch as f64 * self.sk.rd_ratio, self.sk.rd_divisor, 0.9)
            }),
        };
        let c = SelectiveKernelCfg {
            in_ch,
            out_ch,
            kernels: self.sk.kernels.clone(),
            stride: g.stride,
            dilation: g.first_dilation,
            groups,
            attn_ch,
            keep_3x3: self.sk.keep_3x3,
            split_input: self.sk.split_input,
            act: &self.base.act,
            bn_eps: self.base.bn_eps,
        };
        selective_kernel(s, x, &c)
    }

    /// `SelectiveKernelBasic`: SelectiveKernel `conv1` (strided), 3x3 `conv2` without act.
    fn basic(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<Value> {
        let first = g.planes / self.base.reduce_first;
        let y = self.sk_conv(b, x, "conv1", (g.in_ch, first), g, 1)?;
        let norm = Norm::Batch {
            eps: self.base.bn_eps,
        };
        let c2 = Conv::new(first, g.out_ch, 3).dilation(g.dilation);
        let y = conv_norm_act(&mut b.scope("conv2"), &y, c2, &norm, None)?;
        self.base.residual(b, x, &y, g)
    }

    /// `SelectiveKernelBottleneck`: 1x1 `conv1`, SelectiveKernel `conv2` (grouped, strided),
    /// 1x1 `conv3` without act.
    fn bottleneck(&self, b: &mut Builder, x: &Value, g: &BlockGeom) -> Result<Value> {
        let width = self.base.group_width(g.planes);
        let first = width / self.base.reduce_first;
        let norm = Norm::Batch {
            eps: self.base.bn_eps,
        };
        let act_name = self.base.act.as_str();
        let c1 = Conv::new(g.in_ch, first, 1);
        let y = conv_norm_act(&mut b.scope("conv1"), x, c1, &norm, Some(act_name))?;
        let y = self.sk_conv(b, &y, "conv2", (first, width), g, self.base.cardinality)?;
        let c3 = Conv::new(width, g.out_ch, 1);
        let y = conv_norm_act(&mut b.scope("conv3"), &y, c3, &norm, None)?;
        self.base.residual(b, x, &y, g)
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let requested_os = b.output_stride();
    let mut net = SkNet::from_config(cfg, requested_os)?;
    net.base.read_weights(b)?;
    let x = b.input();
    let (x, inplanes) = net.base.stem(b, &x)?;
    let (x, num_features) =
        net.base
            .stages(b, &x, inplanes, net.expansion(), |b, x, g| {
                match net.block {
                    Block::Basic => net.basic(b, x, g),
                    Block::Bottleneck => net.bottleneck(b, x, g),
                }
            })?;
    net.base.head(b, &x, num_features, cfg.num_classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_architecture_resolves() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        assert_eq!(TABLE.names().len(), 5);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            if let Err(e) = SkNet::from_config(&cfg, None) {
                panic!("{arch}: {e:?}");
            }
        }
        let cfg = |arch: &str| {
            let c = TABLE.get(arch).unwrap().config.to_string();
            ModelConfig::parse(c.as_bytes()).unwrap()
        };
        let n = SkNet::from_config(&cfg("skresnext50_32x4d"), None).unwrap();
        assert_eq!(n.block, Block::Bottleneck);
        assert!(!n.sk.split_input && n.sk.rd_divisor == 32);
        let n = SkNet::from_config(&cfg("skresnet18"), None).unwrap();
        assert_eq!(n.block, Block::Basic);
        assert!(n.sk.split_input && n.sk.rd_divisor == 16);
    }
}
