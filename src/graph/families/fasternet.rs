//! FasterNet (timm's `fasternet.py`): `fasternet_t0` .. `fasternet_l`.
//!
//! A patch-embedding conv + BatchNorm, four stages of a `PatchMerging` downsample (conv +
//! BatchNorm) and `MLPBlock`s: a partial 3×3 conv on the first `dim / n_div` channels (the rest
//! pass untouched), then `x + layer_scale · (1×1 conv, BatchNorm, act, 1×1 conv)`. The head
//! pools first, then a bias-free 1×1 conv to `feature_dim`, the activation and the classifier.
//! Every BatchNorm after a conv is folded into it at load.
//!
//! Feature maps: every stage (`stages.<i>`), with timm's `feature_info` reductions.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{
    act, add, concat, conv2d, conv_bn, mul, per_channel, reshape, split, Conv, Pad,
};
use crate::graph::tables::Table;
use crate::graph::{Attr, Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/fasternet.json"));

pub const FAMILY: Family = Family {
    name: "fasternet",
    examples: "fasternet_t0, fasternet_t1, fasternet_t2, fasternet_s, fasternet_m, fasternet_l",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `FasterNet.__init__`'s keyword arguments with timm's defaults.
    struct FasterNetArgs {
        in_chans: usize = 3,
        embed_dim: usize = 96,
        depths: Vec<usize> = vec![1, 2, 8, 2],
        mlp_ratio: f64 = 2.0,
        n_div: usize = 4,
        patch_size: usize = 4,
        merge_size: usize = 2,
        patch_norm: bool = true,
        feature_dim: usize = 1280,
        layer_scale_init_value: f64 = 0.0,
        act_layer: Json = Json::from("relu"),
        norm_layer: Json = Json::from("batchnorm2d"),
        /// `split_cat` and `slicing` compute the same.
        pconv_fw_type: String = "split_cat".into(),
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Every conv and Linear: timm's `_initialize_weights`.
const INIT: Init = Init::TruncNormal(0.02);
/// `nn.BatchNorm2d`'s eps.
const BN_EPS: f32 = 1e-5;

struct Cfg {
    embed_dim: usize,
    depths: Vec<usize>,
    mlp_ratio: f64,
    n_div: usize,
    patch: usize,
    merge: usize,
    patch_norm: bool,
    feature_dim: usize,
    layer_scale: Option<f32>,
    act: String,
    pool: PoolKind,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let embed = Conv::new(in_chans, c.embed_dim, c.patch)
        .stride(c.patch)
        .pad(Pad::Sym(0))
        .init(INIT);
    let mut x = if c.patch_norm {
        conv_bn(
            &mut b.scope("patch_embed"),
            &input,
            "proj",
            "norm",
            embed,
            BN_EPS,
        )?
    } else {
        conv2d(&mut b.scope("patch_embed").scope("proj"), &input, embed)?
    };
    let mut dim = c.embed_dim;
    {
        let st = &mut b.scope("stages");
        for (i, &depth) in c.depths.iter().enumerate() {
            let s = &mut st.scope(i);
            if i > 0 {
                // PatchMerging(dim // 2): a merge_size conv to twice that, BatchNorm.
                let half = (c.embed_dim << i) / 2;
                let conv = Conv::new(half, 2 * half, c.merge)
                    .stride(c.merge)
                    .pad(Pad::Sym(0))
                    .init(INIT);
                x = conv_bn(
                    &mut s.scope("downsample"),
                    &x,
                    "reduction",
                    "norm",
                    conv,
                    BN_EPS,
                )?;
                dim = 2 * half;
            }
            {
                let blocks = &mut s.scope("blocks");
                for j in 0..depth {
                    x = mlp_block(&mut blocks.scope(j), &x, dim, &c)?;
                }
            }
            let module = s.path().to_string();
            s.feature(&x, dim, 1 << (i + 2), &module);
        }
    }
    if c.pool == PoolKind::None {
        return Err(Error::unsupported(
            "FasterNet with global_pool '' (the head conv over the unpooled map) is not built natively",
        ));
    }
    if c.pool == PoolKind::CatAvgMax {
        return Err(Error::invalid_model(
            "FasterNet's head takes no pooling that changes the width (timm asserts it)",
        ));
    }
    // global pool, conv_head (1×1, no bias) on the pooled [N, C, 1, 1], act, flatten.
    let pooled = global_pool(b, &x, c.pool);
    let y = {
        let s = &mut b.scope("conv_head");
        let w = s.param("weight", &[c.feature_dim, dim, 1, 1], INIT)?;
        let w = reshape(s, &w, &[c.feature_dim as i64, dim as i64]);
        s.op("Gemm", &[&pooled, &w], vec![("transB", Attr::Int(1))])
    };
    let y = act(b, &c.act, &y)?;
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((y, c.feature_dim));
    }
    let logits = linear_2d(
        &mut b.scope("classifier"),
        &y,
        c.feature_dim,
        cfg.num_classes,
        true,
        INIT,
    )?;
    Ok((logits, cfg.num_classes))
}

/// `MLPBlock`: `x + ls · mlp(partial_conv3(x))`.
fn mlp_block(b: &mut Builder, x: &Value, dim: usize, c: &Cfg) -> Result<Value> {
    let pc = dim / c.n_div;
    let mixed = if pc == 0 {
        return Err(Error::invalid_model(format!(
            "FasterNet n_div {} leaves no channels of {dim} for the partial conv",
            c.n_div
        )));
    } else if pc == dim {
        let conv = Conv::new(pc, pc, 3).pad(Pad::Sym(1)).init(INIT);
        conv2d(
            &mut b.scope("spatial_mixing").scope("partial_conv3"),
            x,
            conv,
        )?
    } else {
        let parts = split(b, x, 1, &[pc, dim - pc]);
        let conv = Conv::new(pc, pc, 3).pad(Pad::Sym(1)).init(INIT);
        let y = conv2d(
            &mut b.scope("spatial_mixing").scope("partial_conv3"),
            &parts[0],
            conv,
        )?;
        let y = concat(b, &[&y, &parts[1]], 1);
        if let Some(s) = b.spatial(x).cloned() {
            b.assign_spatial(&y, s);
        }
        y
    };
    let hidden = (dim as f64 * c.mlp_ratio) as usize;
    if hidden == 0 {
        return Err(Error::invalid_model(format!(
            "FasterNet mlp_ratio {} of {dim} channels gives no hidden width",
            c.mlp_ratio
        )));
    }
    let y = {
        let m = &mut b.scope("mlp");
        let fc1 = Conv::new(dim, hidden, 1).pad(Pad::Sym(0)).init(INIT);
        let y = conv_bn(m, &mixed, "0", "1", fc1, BN_EPS)?;
        let y = act(m, &c.act, &y)?;
        let fc2 = Conv::new(hidden, dim, 1).pad(Pad::Sym(0)).init(INIT);
        let y = conv2d(&mut m.scope(3), &y, fc2)?;
        y
    };
    let y = match c.layer_scale {
        Some(init) => {
            let g = b.param("layer_scale", &[dim], Init::Const(init))?;
            let g = per_channel(b, &g, dim);
            mul(b, &y, &g)
        }
        None => y,
    };
    Ok(add(b, x, &y))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

/// `act_layer`: a name, or `partial(nn.ReLU, inplace=True)` as the table writes it.
fn act_arg(a: &Args, v: &Json) -> Result<String> {
    let name = match v {
        Json::String(s) => Some(s.as_str()),
        Json::Object(o) if o.keys().all(|k| k == "partial" || k == "inplace") => {
            o.get("partial").and_then(Json::as_str)
        }
        _ => None,
    };
    let Some(name) = name else {
        return Err(a.unsupported("act_layer", "an activation name (or its inplace partial)"));
    };
    Ok(crate::graph::layers::act::canonical(name)?.to_string())
}

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a FasterNet variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = FasterNetArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    let norm_ok = matches!(&v.norm_layer, Json::String(s) if s.eq_ignore_ascii_case("batchnorm2d"));
    if !norm_ok {
        return Err(a.unsupported("norm_layer", "the native FasterNet builds BatchNorm2d"));
    }
    if !matches!(v.pconv_fw_type.as_str(), "split_cat" | "slicing") {
        return Err(Error::invalid_model(format!(
            "FasterNet pconv_fw_type `{}`: timm takes 'split_cat' or 'slicing'",
            v.pconv_fw_type
        )));
    }
    let act = act_arg(&a, &v.act_layer)?;
    let (mut embed_dim, mut depths, mut feature_dim) = (v.embed_dim, v.depths, v.feature_dim);
    if b.weights().is_some() {
        if !a.explicit("embed_dim") {
            if let Some(s) = b.scope("patch_embed").weight_shape("proj.weight") {
                embed_dim = s[0];
            }
        }
        if !a.explicit("feature_dim") {
            if let Some(s) = b.scope("conv_head").weight_shape("weight") {
                feature_dim = s[0];
            }
        }
        if !a.explicit("depths") {
            let st = &mut b.scope("stages");
            let n = (0..)
                .take_while(|&i| st.scope(i).has_module("blocks"))
                .count();
            if n > 0 {
                depths = (0..n)
                    .map(|i| {
                        let mut si = st.scope(i);
                        let bl = &mut si.scope("blocks");
                        (0..).take_while(|&j| bl.has_module(&j.to_string())).count()
                    })
                    .collect();
            }
        }
    }
    if embed_dim == 0
        || feature_dim == 0
        || depths.is_empty()
        || depths.len() > 8
        || v.n_div == 0
        || v.patch_size == 0
        || v.merge_size == 0
    {
        return Err(Error::invalid_model(format!(
            "FasterNet embed_dim {embed_dim}, feature_dim {feature_dim}, depths {depths:?}, n_div {}, patch / merge sizes {} / {} must be positive (1..=8 stages)",
            v.n_div, v.patch_size, v.merge_size
        )));
    }
    if !(v.mlp_ratio.is_finite() && v.mlp_ratio > 0.0 && v.mlp_ratio <= 64.0) {
        return Err(Error::invalid_model(format!(
            "FasterNet mlp_ratio {} out of range",
            v.mlp_ratio
        )));
    }
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    Ok(Cfg {
        embed_dim,
        depths,
        mlp_ratio: v.mlp_ratio,
        n_div: v.n_div,
        patch: v.patch_size,
        merge: v.merge_size,
        patch_norm: v.patch_norm,
        feature_dim,
        layer_scale: (v.layer_scale_init_value > 0.0).then_some(v.layer_scale_init_value as f32),
        act,
        pool: PoolKind::from_timm(pool_name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 6);
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
