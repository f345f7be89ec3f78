//! NASNet-A Large (timm's `nasnet.py`, class `NASNetALarge`): `nasnetalarge`.
//!
//! A 3×3 stride-2 conv + BatchNorm stem, two stem cells, three stacks of six cells (a
//! `FirstCell` and five `NormalCell`s) joined by two `ReductionCell`s, a final ReLU, a global
//! pool and a Linear head. Every cell takes the outputs of the two layers before it; its branches
//! are ReLU → separable conv → BatchNorm pairs and 3×3 pools, summed in pairs and concatenated.
//! Convs and pools use timm's `pad_type` ('same': TF "SAME" where it cannot be static). Every
//! BatchNorm after a conv is folded into it at load; the factorized-reduction paths' shared
//! `final_path_bn` is folded into both 1×1 convs.
//!
//! Feature maps: timm's `features_only` (a FeatureHookNet): `conv0`, then the ReLU the next cell
//! applies to `cell_stem_0`, `cell_5` and `cell_11` (`<next>.conv_1x1.act`), and `act`.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::nas_cell::{
    act_conv_bn, avg_pool, branch_separables, factorized_reduction, max_pool, sep, NasOps,
};
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{act, add, concat, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/nasnet.json"));

pub const FAMILY: Family = Family {
    name: "nasnet",
    examples: "nasnetalarge",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `NASNetALarge.__init__`'s keyword arguments with timm's defaults.
    struct NasNetArgs {
        in_chans: usize = 3,
        stem_size: usize = 96,
        channel_multiplier: usize = 2,
        num_features: usize = 4032,
        output_stride: usize = 32,
        pad_type: String = "same".into(),
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Convs without weights (any spread serves a seeded bare model).
const INIT: Init = Init::KaimingFanOut;
/// timm's NASNet BatchNorms: `eps=0.001`.
const BN_EPS: f32 = 1e-3;

struct Cfg {
    stem: usize,
    /// `cell_stem_0`'s and `cell_stem_1`'s branch widths.
    stem_chs: [usize; 2],
    /// `num_features // 24`.
    channels: usize,
    ops: NasOps,
    pool: PoolKind,
}

/// The cell operations take the family's settings straight from its `Cfg`.
impl std::ops::Deref for Cfg {
    type Target = NasOps;
    fn deref(&self) -> &NasOps {
        &self.ops
    }
}

/// The cell kinds after the stem cells.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    First,
    Normal,
    Reduction,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let conv = Conv::new(in_chans, c.stem, 3)
        .stride(2)
        .pad(Pad::Sym(0))
        .init(INIT);
    let x_conv0 = conv_bn(&mut b.scope("conv0"), &input, "conv", "bn", conv, BN_EPS)?;
    b.feature(&x_conv0, c.stem, 2, "conv0");
    let x_stem_0 = stem_cell(&mut b.scope("cell_stem_0"), &x_conv0, None, &c)?;
    let c0 = 4 * c.stem_chs[0];
    let tap = act(b, "relu", &x_stem_0)?;
    b.feature(&tap, c0, 4, "cell_stem_1.conv_1x1.act");
    let x_stem_1 = stem_cell(&mut b.scope("cell_stem_1"), &x_conv0, Some(&x_stem_0), &c)?;
    let ch = c.channels;
    // (x, chs) and (x_prev, chs) as the cells consume them.
    let (mut x, mut xc) = (x_stem_1, 4 * c.stem_chs[1]);
    let (mut xp, mut pc) = (x_stem_0, c0);
    let mut cell = 0;
    for (stack, &w) in [ch, 2 * ch, 4 * ch].iter().enumerate() {
        if stack > 0 {
            let name = format!("reduction_cell_{}", stack - 1);
            let y = cell_forward(&mut b.scope(&name), Kind::Reduction, &x, xc, &xp, pc, w, &c)?;
            // The cell after a reduction takes the same x_prev.
            (x, xc) = (y, 4 * w);
        }
        for j in 0..6 {
            let kind = if j == 0 { Kind::First } else { Kind::Normal };
            let s = &mut b.scope(format!("cell_{cell}"));
            let y = cell_forward(s, kind, &x, xc, &xp, pc, w, &c)?;
            (xp, pc) = (x, xc);
            (x, xc) = (y, 6 * w);
            cell += 1;
        }
        let y = act(b, "relu", &x)?;
        let module = match stack {
            0 => "reduction_cell_0.conv_1x1.act",
            1 => "reduction_cell_1.conv_1x1.act",
            _ => "act",
        };
        b.feature(&y, xc, 8 << stack, module);
        if stack == 2 {
            x = y;
        }
    }
    let nf = xc;
    if c.pool == PoolKind::None {
        return Err(Error::unsupported(
            "NASNet with global_pool '' (a Linear over the unpooled map) is not built natively",
        ));
    }
    let pooled = global_pool(b, &x, c.pool);
    let width = nf * c.pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
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

/// `CellStem0` (`x_stem_0` = None: takes `x_conv0`) and `CellStem1` (`x_conv0`, `x_stem_0`).
fn stem_cell(b: &mut Builder, x_conv0: &Value, x_stem_0: Option<&Value>, c: &Cfg) -> Result<Value> {
    let (left, right, n, rc) = match x_stem_0 {
        None => {
            let n = c.stem_chs[0];
            let l = act_conv_bn(&mut b.scope("conv_1x1"), x_conv0, c.stem, n, 1, c)?;
            (l, x_conv0.clone(), n, c.stem)
        }
        Some(s0) => {
            let n = c.stem_chs[1];
            let l = act_conv_bn(&mut b.scope("conv_1x1"), s0, 4 * c.stem_chs[0], n, 1, c)?;
            let r = factorized_reduction(b, x_conv0, c.stem, n / 2, c)?;
            (l, r, n, n)
        }
    };
    // CellStem0's right branches are `stem_cell=True`: their first pair already maps to n.
    let rsep = |b: &mut Builder, name: &str, k: usize| {
        let mid = if x_stem_0.is_none() { n } else { rc };
        branch_separables(&mut b.scope(name), &right, (rc, mid, n), k, 2, c)
    };
    let l0 = sep(b, "comb_iter_0_left", &left, n, 5, 2, c)?;
    let r0 = rsep(b, "comb_iter_0_right", 7)?;
    let x0 = add(b, &l0, &r0);
    let l1 = max_pool(b, &left, 2, n, c)?;
    let r1 = rsep(b, "comb_iter_1_right", 7)?;
    let x1 = add(b, &l1, &r1);
    let l2 = avg_pool(b, &left, 2, n, c)?;
    let r2 = rsep(b, "comb_iter_2_right", 5)?;
    let x2 = add(b, &l2, &r2);
    let r3 = avg_pool(b, &x0, 1, n, c)?;
    let x3 = add(b, &r3, &x1);
    let l4 = sep(b, "comb_iter_4_left", &x0, n, 3, 1, c)?;
    let r4 = max_pool(b, &left, 2, n, c)?;
    let x4 = add(b, &l4, &r4);
    Ok(concat(b, &[&x1, &x2, &x3, &x4], 1))
}

/// `FirstCell`, `NormalCell` and `ReductionCell0/1` of width `w` on (`x`, `x_prev`).
#[allow(clippy::too_many_arguments)]
fn cell_forward(
    b: &mut Builder,
    kind: Kind,
    x: &Value,
    xc: usize,
    x_prev: &Value,
    pc: usize,
    w: usize,
    c: &Cfg,
) -> Result<Value> {
    let right = act_conv_bn(&mut b.scope("conv_1x1"), x, xc, w, 1, c)?;
    let left = match kind {
        Kind::First => factorized_reduction(b, x_prev, pc, w / 2, c)?,
        _ => act_conv_bn(&mut b.scope("conv_prev_1x1"), x_prev, pc, w, 1, c)?,
    };
    if kind == Kind::Reduction {
        let l0 = sep(b, "comb_iter_0_left", &right, w, 5, 2, c)?;
        let r0 = sep(b, "comb_iter_0_right", &left, w, 7, 2, c)?;
        let x0 = add(b, &l0, &r0);
        let l1 = max_pool(b, &right, 2, w, c)?;
        let r1 = sep(b, "comb_iter_1_right", &left, w, 7, 2, c)?;
        let x1 = add(b, &l1, &r1);
        let l2 = avg_pool(b, &right, 2, w, c)?;
        let r2 = sep(b, "comb_iter_2_right", &left, w, 5, 2, c)?;
        let x2 = add(b, &l2, &r2);
        let r3 = avg_pool(b, &x0, 1, w, c)?;
        let x3 = add(b, &r3, &x1);
        let l4 = sep(b, "comb_iter_4_left", &x0, w, 3, 1, c)?;
        let r4 = max_pool(b, &right, 2, w, c)?;
        let x4 = add(b, &l4, &r4);
        return Ok(concat(b, &[&x1, &x2, &x3, &x4], 1));
    }
    let l0 = sep(b, "comb_iter_0_left", &right, w, 5, 1, c)?;
    let r0 = sep(b, "comb_iter_0_right", &left, w, 3, 1, c)?;
    let x0 = add(b, &l0, &r0);
    let l1 = sep(b, "comb_iter_1_left", &left, w, 5, 1, c)?;
    let r1 = sep(b, "comb_iter_1_right", &left, w, 3, 1, c)?;
    let x1 = add(b, &l1, &r1);
    let l2 = avg_pool(b, &right, 1, w, c)?;
    let x2 = add(b, &l2, &left);
    let l3 = avg_pool(b, &left, 1, w, c)?;
    let r3 = avg_pool(b, &left, 1, w, c)?;
    let x3 = add(b, &l3, &r3);
    let l4 = sep(b, "comb_iter_4_left", &right, w, 3, 1, c)?;
    let x4 = add(b, &l4, &right);
    Ok(concat(b, &[&left, &x0, &x1, &x2, &x3, &x4], 1))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a NASNet variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = NasNetArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's NASNet asserts output_stride 32"));
    }
    let tf_same = match v.pad_type.as_str() {
        "same" => true,
        "" => false,
        _ => return Err(a.unsupported("pad_type", "timm's NASNet pads 'same' or ''")),
    };
    let cm = v.channel_multiplier;
    let (mut stem, mut channels) = (v.stem_size, v.num_features / 24);
    let mut stem_chs = [
        channels / cm.saturating_mul(cm).max(1),
        channels / cm.max(1),
    ];
    // Widths from the weights where config.json does not set them.
    if !a.explicit("stem_size") {
        if let Some(s) = b.weight_shape("conv0.conv.weight") {
            stem = s[0];
        }
    }
    if !a.explicit("num_features") && !a.explicit("channel_multiplier") {
        let get = |b: &Builder, k: &str| b.weight_shape(k).map(|s| s[0]);
        if let (Some(c0), Some(c1), Some(c)) = (
            get(b, "cell_stem_0.conv_1x1.conv.weight"),
            get(b, "cell_stem_1.conv_1x1.conv.weight"),
            get(b, "cell_0.conv_1x1.conv.weight"),
        ) {
            stem_chs = [c0, c1];
            channels = c;
        }
    }
    // The cells' widths must chain as timm's do (it fails at the first forward otherwise).
    if stem == 0
        || channels < 2
        || !channels.is_multiple_of(2)
        || 4 * stem_chs[0] != channels
        || 2 * stem_chs[1] != channels
    {
        return Err(Error::invalid_model(format!(
            "NASNet stem_size {stem}, num_features {} and channel_multiplier {cm}: the cells need \
             num_features // 24 = 4·(it // multiplier²) = 2·(it // multiplier), even",
            v.num_features
        )));
    }
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    Ok(Cfg {
        stem,
        stem_chs,
        channels,
        ops: NasOps {
            tf_same,
            init: INIT,
            bn_eps: BN_EPS,
        },
        pool: PoolKind::from_timm(pool_name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 1);
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
