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
//!
//! The stem, `make_blocks`, `BasicBlock`, `Bottleneck` and the shortcuts are
//! `layers::resnet_parts`'; this file holds the family's table, arguments and assembly.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::resnet_parts::{self, attn_layer, Block, Pruned, ResNetBase};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Value};

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

/// The network as timm builds it: `ResNet`'s common arguments and each stage's block.
#[derive(Debug, Clone)]
struct ResNet {
    base: ResNetBase,
    blocks: Vec<Block>,
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
        let pruned = match &a.pruned {
            None | Some(Json::Bool(false)) => None,
            Some(Json::Bool(true)) => Some(Pruned::Weights),
            Some(Json::Object(m)) => Some(Pruned::Table(m.clone())),
            Some(_) => return Err(args.unsupported("pruned", "expected a boolean")),
        };
        if pruned.is_some() && a.cardinality != 1 {
            return Err(args.unsupported(
                "pruned",
                "pruned grouped convs (cardinality > 1) are not implemented",
            ));
        }
        let common = resnet_parts::ResNetArgs {
            block: String::new(),
            layers: a.layers.clone(),
            channels: a.channels.clone(),
            in_chans: a.in_chans,
            output_stride: a.output_stride,
            global_pool: a.global_pool.clone(),
            cardinality: a.cardinality,
            base_width: a.base_width,
            stem_width: a.stem_width,
            stem_type: a.stem_type.clone(),
            replace_stem_pool: a.replace_stem_pool,
            block_reduce_first: a.block_reduce_first,
            down_kernel_size: a.down_kernel_size,
            avg_down: a.avg_down,
            act_layer: a.act_layer.clone(),
            norm_layer: a.norm_layer.clone(),
            aa_layer: a.aa_layer.clone(),
            zero_init_last: a.zero_init_last,
            block_args: None,
        };
        let mut base = ResNetBase::resolve(cfg, &args, &common, requested_os)?;
        base.attn = attn;
        base.pruned = pruned;
        let blocks = a
            .block
            .expand("block", a.channels.len())?
            .iter()
            .map(|name| {
                Block::from_timm(name)
                    .ok_or_else(|| args.unsupported("block", "BasicBlock or Bottleneck only"))
            })
            .collect::<Result<Vec<_>>>()?;
        if blocks.contains(&Block::Basic) && (a.cardinality != 1 || a.base_width != 64) {
            return Err(Error::invalid_model(format!(
                "`{arch}`: BasicBlock needs cardinality 1 and base_width 64 (got {} and {})",
                a.cardinality, a.base_width
            )));
        }
        Ok(ResNet { base, blocks })
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let requested_os = b.output_stride();
    let ResNet {
        mut base,
        mut blocks,
    } = ResNet::from_config(cfg, requested_os)?;
    base.read_block_weights(b, &mut blocks)?;
    let x = b.input();
    let (x, inplanes, ch) = base.stem_widths(b, &x)?;
    let (x, num_features) = base.resnet_stages(b, &x, inplanes, ch, &blocks)?;
    // `features_only` drops the head.
    base.head(b, &x, num_features, cfg.num_classes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;
    use crate::graph::layers::resnet_parts::{Aa, Attn};
    use crate::graph::layers::Norm;

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
            net("ecaresnet50d").base.attn,
            Some(Attn::Eca { circular: false })
        );
        assert_eq!(
            net("resnetblur50").base.aa,
            Some(Aa::Blur { reflect: true })
        );
        assert_eq!(net("resnetaa50").base.aa, Some(Aa::Avg));
        assert!(matches!(
            net("resnet50_gn").base.norm,
            Norm::Group { groups: 32, .. }
        ));
        assert!(matches!(
            net("ecaresnet50d_pruned").base.pruned,
            Some(Pruned::Table(_))
        ));
        assert!(net("ecaresnet50d").base.pruned.is_none());
    }

    #[test]
    fn output_stride_request_overrides_model_args_and_is_checked() {
        let cfg = ModelConfig::parse(TABLE.get("resnet50").unwrap().config.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            ResNet::from_config(&cfg, Some(8))
                .unwrap()
                .base
                .output_stride,
            8
        );
        assert_eq!(
            ResNet::from_config(&cfg, None).unwrap().base.output_stride,
            32
        );
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
        let n = ResNet::from_config(&cfg, None).unwrap().base;
        assert_eq!(n.attn, Some(Attn::Se(0.25)));
        assert!(n.replace_stem_pool && n.deep_stem && n.avg_down);
    }
}
