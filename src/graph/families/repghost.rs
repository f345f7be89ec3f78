//! RepGhostNet (timm's `repghost.py`): ghost bottlenecks whose cheap depthwise operation is
//! re-parameterisable (`cheap_operation` conv+BN plus a BatchNorm identity `fusion_bn`, summed
//! then ReLU'd instead of GhostNet's concatenation). timm's Hub weights are unfused (timm cannot
//! rebuild a deployed model from its name): the branches are folded into one depthwise conv at
//! load, as `switch_to_deploy` would.
//!
//! timm's entrypoints pass the block table `cfgs` (`[k, exp, c, se, s]` per block, one list per
//! stage) and `width`; config.json cannot carry another table, so with weights every block's
//! widths, stride, kernel and SE are read from them, and computed from the table otherwise.
//! RepGhostNet has no dilated variant: `output_stride` other than 32 is refused, as timm asserts.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::ghost::{
    check_args, parse_block_table, residual, squeeze_excite, strided_dw, GhostBlock, GhostNet, EPS,
};
use crate::graph::layers::reparam::{bn_identity_branch, conv_bn_branch, emit_branches};
use crate::graph::layers::{act, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/repghost.json"));

pub const FAMILY: Family = Family {
    name: "repghost",
    examples: "repghostnet_050, _058, _080, _100, _111, _130, _150, _200",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `RepGhostNet.__init__`'s arguments that shape the inference graph.
    struct RepGhostArgs {
        cfgs: Json = Json::Null,
        width: f64 = 1.0,
        in_chans: usize = 3,
        output_stride: usize = 32,
        global_pool: Option<String> = None,
        reparam: bool = true,
    }
}

const NAME: &str = "RepGhostNet";

struct Net {
    net: GhostNet,
    /// `reparam`: the `fusion_bn` identity branch exists (unfused form).
    reparam: bool,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let Net { net, reparam } = resolve(b, cfg)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let x = net.features(b, in_ch, |b, x, blk| bottleneck(b, x, blk, reparam))?;
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, net.final_ch));
    }
    net.head(b, cfg, &x, NAME)
}

/// `RepGhostBottleneck`: expanding ghost module, strided depthwise conv, SE, projecting ghost
/// module, plus the shortcut.
fn bottleneck(b: &mut Builder, x: &Value, blk: &GhostBlock, reparam: bool) -> Result<Value> {
    let mut y = ghost(&mut b.scope("ghost1"), x, blk.in_ch, blk.mid, true, reparam)?;
    if blk.stride > 1 {
        y = strided_dw(b, &y, blk)?;
    }
    y = squeeze_excite(b, &y, blk)?;
    y = ghost(&mut b.scope("ghost2"), &y, blk.mid, blk.out, false, reparam)?;
    residual(b, x, &y, blk)
}

/// `RepGhostModule`: a 1x1 primary conv+BN (+ReLU), then `relu?(cheap(x1) + fusion_bn(x1))`
/// where `cheap` is a 3x3 depthwise conv+BN; the identity BatchNorm is folded into that conv.
fn ghost(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out: usize,
    relu: bool,
    reparam: bool,
) -> Result<Value> {
    let c = Conv::new(in_ch, out, 1).pad(Pad::Sym(0));
    let x1 = conv_bn(b, x, "primary_conv.0", "primary_conv.1", c, EPS)?;
    let x1 = if relu { act(b, "relu", &x1)? } else { x1 };
    let dw = Conv::new(out, out, 3).groups(out).pad(Pad::Sym(1));
    let mut br = vec![conv_bn_branch(
        b,
        "cheap_operation.0",
        "cheap_operation.1",
        &dw,
        EPS,
    )?];
    if reparam {
        br.push(bn_identity_branch(b, "fusion_bn.0", out, 1, EPS)?);
    }
    let x2 = emit_branches(b, &x1, "cheap_operation", &br, dw)?;
    if relu {
        act(b, "relu", &x2)
    } else {
        Ok(x2)
    }
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Net> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a RepGhostNet variant this build knows ({})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = RepGhostArgs::read(&a)?;
    check_args(&a, cfg, NAME, v.output_stride, v.in_chans, v.width)?;
    let cfgs = parse_block_table(&a, &v.cfgs, NAME)?;
    let mut net = from_cfgs(&cfgs, v.width);
    net.pool = v.global_pool.or(cfg.global_pool.clone());
    let mut reparam = v.reparam;
    if b.weights().is_some() {
        net.read_weights(b, NAME, "primary_conv.0.weight", "conv_dw.weight")?;
        // Weights without fusion_bn were made with reparam=False.
        reparam = b.has_module("blocks.0.0.ghost1.fusion_bn");
    }
    net.check_stages(arch, NAME)?;
    Ok(Net { net, reparam })
}

/// `RepGhostNet.__init__` over the block table: the final ConvBnAct is twice the last expansion.
fn from_cfgs(cfgs: &[Vec<[f64; 5]>], width: f64) -> GhostNet {
    GhostNet::from_table(cfgs, width, 2.0, |_| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 8);
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }

    #[test]
    fn repghostnet_100_widths_are_timms() {
        let a = Args::new(
            "repghostnet_100",
            Some(&TABLE.get("repghostnet_100").unwrap().args),
            &Default::default(),
        );
        let v = RepGhostArgs::read(&a).unwrap();
        let net = from_cfgs(&parse_block_table(&a, &v.cfgs, NAME).unwrap(), 1.0);
        assert_eq!(net.stem, 16);
        assert_eq!(net.final_ch, 960);
        assert_eq!(net.stages.len(), 9);
        let b = &net.stages[3][0];
        assert_eq!(
            (b.mid, b.out, b.k, b.stride, b.se_rd),
            (36, 40, 5, 2, Some(12))
        );
    }
}
