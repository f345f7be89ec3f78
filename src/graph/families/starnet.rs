//! StarNet (timm's `starnet.py`): `starnet_s050` .. `starnet_s4`.
//!
//! A 3×3 stride-2 ConvBN stem, four stages of a stride-2 ConvBN downsample and star blocks
//! (7×7 depthwise ConvBN, two 1×1 convs multiplied as `act(f1) · f2`, a 1×1 ConvBN `g` and a 7×7
//! depthwise conv, residual), a final BatchNorm and a pooled Linear head. Every BatchNorm right
//! after a conv is folded into it at load.
//!
//! Feature maps: every stage (`stages.<i>`, before the final norm). timm's StarNet takes only
//! output_stride 32.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{act, add, batch_norm, conv2d, conv_bn, mul, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/starnet.json"));

pub const FAMILY: Family = Family {
    name: "starnet",
    examples: "starnet_s050, starnet_s100, starnet_s150, starnet_s1..s4",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `StarNet.__init__`'s keyword arguments with timm's defaults.
    struct StarNetArgs {
        base_dim: usize = 32,
        depths: Vec<usize> = vec![3, 3, 12, 5],
        mlp_ratio: usize = 4,
        act_layer: String = "relu6".into(),
        in_chans: usize = 3,
        output_stride: usize = 32,
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Every conv and Linear: timm's `_init_weights`.
const INIT: Init = Init::TruncNormal(0.02);
/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;
/// The stem's width (fixed in timm).
const STEM_CHS: usize = 32;

struct Cfg {
    base_dim: usize,
    depths: Vec<usize>,
    mlp_ratio: usize,
    act: String,
    pool: PoolKind,
}

/// timm's `ConvBN` with its BatchNorm (`conv`, `bn`), folded.
fn conv_bn_block(b: &mut Builder, x: &Value, c: Conv) -> Result<Value> {
    conv_bn(b, x, "conv", "bn", c.bias(true).init(INIT), BN_EPS)
}

/// timm's `ConvBN(with_bn=False)`: the conv alone (`conv`, with its bias).
fn conv_only(b: &mut Builder, x: &Value, c: Conv) -> Result<Value> {
    conv2d(&mut b.scope("conv"), x, c.bias(true).init(INIT))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let x = {
        let s = &mut b.scope("stem");
        let conv = Conv::new(in_chans, STEM_CHS, 3).stride(2).pad(Pad::Sym(1));
        let x = conv_bn_block(&mut s.scope(0), &input, conv)?;
        act(s, &c.act, &x)?
    };
    let mut x = x;
    let mut prev = STEM_CHS;
    {
        let st = &mut b.scope("stages");
        for (i, &depth) in c.depths.iter().enumerate() {
            let s = &mut st.scope(i);
            let dim = c.base_dim << i;
            let down = Conv::new(prev, dim, 3).stride(2).pad(Pad::Sym(1));
            x = conv_bn_block(&mut s.scope(0), &x, down)?;
            for j in 1..=depth {
                x = block(&mut s.scope(j), &x, dim, &c)?;
            }
            let module = s.path().to_string();
            s.feature(&x, dim, 1 << (i + 2), &module);
            prev = dim;
        }
    }
    let x = batch_norm(&mut b.scope("norm"), &x, prev, BN_EPS)?;
    if c.pool == PoolKind::None {
        return Err(Error::unsupported(
            "StarNet with global_pool '' (a Linear over the unpooled map) is not built natively",
        ));
    }
    let pooled = global_pool(b, &x, c.pool);
    let width = prev * c.pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = linear_2d(
        &mut b.scope("head"),
        &pooled,
        width,
        cfg.num_classes,
        true,
        INIT,
    )?;
    Ok((logits, cfg.num_classes))
}

/// `Block`: `x + dwconv2(g(act(f1(y)) · f2(y)))` with `y = dwconv(x)`.
fn block(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let hidden = c.mlp_ratio * dim;
    let dw = || Conv::new(dim, dim, 7).depthwise().pad(Pad::Sym(3));
    let pw = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0));
    let y = conv_bn_block(&mut b.scope("dwconv"), x, dw())?;
    let x1 = conv_only(&mut b.scope("f1"), &y, pw(dim, hidden))?;
    let x2 = conv_only(&mut b.scope("f2"), &y, pw(dim, hidden))?;
    let a = act(b, &c.act, &x1)?;
    let y = mul(b, &a, &x2);
    let y = conv_bn_block(&mut b.scope("g"), &y, pw(hidden, dim))?;
    let y = conv_only(&mut b.scope("dwconv2"), &y, dw())?;
    Ok(add(b, x, &y))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a StarNet variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = StarNetArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's StarNet asserts output_stride 32"));
    }
    let (mut base_dim, mut depths, mut mlp_ratio) = (v.base_dim, v.depths, v.mlp_ratio);
    if b.weights().is_some() {
        let st = &mut b.scope("stages");
        let n = (0..).take_while(|&i| st.scope(i).has_module("0")).count();
        if n > 0 && !a.explicit("depths") {
            depths = (0..n)
                .map(|i| {
                    let s = &mut st.scope(i);
                    (1..).take_while(|&j| s.has_module(&j.to_string())).count()
                })
                .collect();
        }
        if !a.explicit("base_dim") {
            if let Some(s) = st.weight_shape("0.0.conv.weight") {
                base_dim = s[0];
            }
        }
        if !a.explicit("mlp_ratio") {
            if let Some(s) = st.weight_shape("0.1.f1.conv.weight") {
                if base_dim > 0 && s[0].is_multiple_of(base_dim) {
                    mlp_ratio = s[0] / base_dim;
                }
            }
        }
    }
    if base_dim == 0 || mlp_ratio == 0 || depths.is_empty() || depths.len() > 8 {
        return Err(Error::invalid_model(format!(
            "StarNet base_dim {base_dim}, mlp_ratio {mlp_ratio} and depths {depths:?}: positive widths, 1..=8 stages"
        )));
    }
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    Ok(Cfg {
        base_dim,
        depths,
        mlp_ratio,
        act: crate::graph::layers::act::canonical(&v.act_layer)?.to_string(),
        pool: PoolKind::from_timm(pool_name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 7);
        for arch in TABLE.names() {
            assert!(
                (FAMILY.matches)(arch),
                "{arch} is not matched by the family"
            );
            let cfg = (FAMILY.default_config)(arch).unwrap();
            ModelConfig::parse(cfg.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        }
    }
}
