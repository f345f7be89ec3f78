//! ConvMixer (timm's `convmixer.py`): `convmixer_768_32`, `convmixer_1024_20_ks9_p14`,
//! `convmixer_1536_20`.
//!
//! A patch-size conv stem (conv, act, BatchNorm), then `depth` blocks of a residual depthwise
//! conv ('same' padding, act, BatchNorm) and a 1×1 conv (act, BatchNorm), at one resolution; a
//! pooled Linear head. Each BatchNorm follows an activation, so it stays an affine map (nothing
//! to fold into a conv).
//!
//! Feature maps are timm's `features_only` (`FeatureGetterNet` over `forward_intermediates`):
//! every block's output, by default the last three.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{act, add, batch_norm, conv2d, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/convmixer.json"));

pub const FAMILY: Family = Family {
    name: "convmixer",
    examples: "convmixer_768_32, convmixer_1024_20_ks9_p14, convmixer_1536_20",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `ConvMixer.__init__`'s keyword arguments with timm's defaults (`dim` and `depth` have
    /// none; every entrypoint passes them).
    struct ConvMixerArgs {
        dim: usize = 768,
        depth: usize = 32,
        kernel_size: usize = 9,
        patch_size: usize = 7,
        in_chans: usize = 3,
        act_layer: String = "gelu".into(),
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;

struct Cfg {
    dim: usize,
    depth: usize,
    kernel: usize,
    patch: usize,
    act: String,
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let x = {
        let s = &mut b.scope("stem");
        let conv = Conv::new(in_chans, c.dim, c.patch)
            .stride(c.patch)
            .pad(Pad::Sym(0))
            .bias(true)
            .init(Init::DefaultUniform);
        let x = conv2d(&mut s.scope(0), &input, conv)?;
        let x = act(s, &c.act, &x)?;
        let x = batch_norm(&mut s.scope(2), &x, c.dim, BN_EPS)?;
        x
    };
    let mut x = x;
    for i in 0..c.depth {
        let mut blocks = b.scope("blocks");
        let s = &mut blocks.scope(i);
        x = block(s, &x, &c)?;
        let module = s.path().to_string();
        s.feature(&x, c.dim, c.patch, &module);
    }
    // _create_convmixer's out_indices=3: the last three blocks.
    b.default_out_indices(&[-3, -2, -1]);
    if c.pool == PoolKind::None {
        return Err(Error::unsupported(
            "ConvMixer with global_pool '' (a Linear over the unpooled map) is not built natively",
        ));
    }
    let pooled = global_pool(b, &x, c.pool);
    let width = c.dim * c.pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = linear_2d(
        &mut b.scope("head"),
        &pooled,
        width,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}

/// One block: `Residual(dwconv 'same', act, BatchNorm)`, then 1×1 conv, act, BatchNorm.
fn block(b: &mut Builder, x: &Value, c: &Cfg) -> Result<Value> {
    let dim = c.dim;
    let y = {
        let mut r = b.scope(0);
        let f = &mut r.scope("fn");
        // PyTorch's padding='same': total k-1, the smaller half first.
        let total = c.kernel - 1;
        let (lo, hi) = (total / 2, total - total / 2);
        let dw = Conv::new(dim, dim, c.kernel)
            .depthwise()
            .pad(Pad::Explicit(lo, lo, hi, hi))
            .bias(true)
            .init(Init::DefaultUniform);
        let y = conv2d(&mut f.scope(0), x, dw)?;
        let y = act(f, &c.act, &y)?;
        let y = batch_norm(&mut f.scope(2), &y, dim, BN_EPS)?;
        y
    };
    let x = add(b, &y, x);
    let pw = Conv::new(dim, dim, 1)
        .pad(Pad::Sym(0))
        .bias(true)
        .init(Init::DefaultUniform);
    let y = conv2d(&mut b.scope(1), &x, pw)?;
    let y = act(b, &c.act, &y)?;
    batch_norm(&mut b.scope(3), &y, dim, BN_EPS)
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a ConvMixer variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = ConvMixerArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let (mut dim, mut depth, mut kernel, mut patch) = (v.dim, v.depth, v.kernel_size, v.patch_size);
    if b.weights().is_some() {
        if let Some(s) = b.scope("stem").weight_shape("0.weight") {
            if !a.explicit("dim") {
                dim = s[0];
            }
            if !a.explicit("patch_size") && s.len() == 4 {
                patch = s[2];
            }
        }
        let bl = &mut b.scope("blocks");
        if !a.explicit("depth") {
            let n = (0..).take_while(|&i| bl.has_module(&i.to_string())).count();
            if n > 0 {
                depth = n;
            }
        }
        if !a.explicit("kernel_size") {
            if let Some(s) = bl.weight_shape("0.0.fn.0.weight") {
                kernel = s.get(2).copied().unwrap_or(kernel);
            }
        }
    }
    if dim == 0 || kernel == 0 || patch == 0 {
        return Err(Error::invalid_model(format!(
            "ConvMixer dim {dim}, kernel_size {kernel} and patch_size {patch} must be positive"
        )));
    }
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    Ok(Cfg {
        dim,
        depth,
        kernel,
        patch,
        act: crate::graph::layers::act::canonical(&v.act_layer)?.to_string(),
        pool: PoolKind::from_timm(pool_name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 3);
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
