//! PNASNet-5 Large (timm's `pnasnet.py`, class `PNASNet5Large`): `pnasnet5large`.
//!
//! A 3×3 stride-2 conv + BatchNorm stem, a stem cell and twelve cells (three of them reducing),
//! a final ReLU, a global pool and a Linear head. Every cell takes the outputs of the two layers
//! before it (the older one through a `FactorizedReduction` when it is at twice the resolution)
//! and sums five pairs of ReLU → separable conv → BatchNorm branches and 3×3 max pools into its
//! output. Convs and pools use TF "SAME" padding where it cannot be static. Every BatchNorm after a
//! conv is folded into it at load. timm fixes the widths; they are read from the weights.
//!
//! Feature maps: timm's `features_only` (a FeatureHookNet): `conv_0`, then the ReLU the next cell
//! applies to `cell_stem_0`, `cell_3` and `cell_7` (`<next>.conv_1x1.act`), and `act`.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::nas_cell::{
    act_conv_bn, branch_separables, factorized_reduction, max_pool, sep, NasOps,
};
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::{act, add, concat, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/pnasnet.json"));

pub const FAMILY: Family = Family {
    name: "pnasnet",
    examples: "pnasnet5large",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `PNASNet5Large.__init__`'s keyword arguments with timm's defaults.
    struct PnasNetArgs {
        in_chans: usize = 3,
        output_stride: usize = 32,
        pad_type: String = "".into(),
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// Convs without weights (any spread serves a seeded bare model).
const INIT: Init = Init::KaimingFanOut;
/// timm's PNASNet BatchNorms: `eps=0.001`.
const BN_EPS: f32 = 1e-3;
/// timm's widths: the stem, `cell_stem_0`, `cell_stem_1`, then `cell_0`..`cell_11`.
const WIDTHS: [usize; 15] = [
    96, 54, 108, 216, 216, 216, 216, 432, 432, 432, 432, 864, 864, 864, 864,
];
/// The cells (of `cell_<i>`) that reduce.
const REDUCTION: [usize; 2] = [4, 8];

struct Cfg {
    /// As `WIDTHS`.
    widths: Vec<usize>,
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

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(b, cfg)?;
    let input = b.input();
    let in_chans = cfg.pretrained_cfg.input_size[0];
    let stem = c.widths[0];
    let conv = Conv::new(in_chans, stem, 3)
        .stride(2)
        .pad(Pad::Sym(0))
        .init(INIT);
    let x_conv0 = conv_bn(&mut b.scope("conv_0"), &input, "conv", "bn", conv, BN_EPS)?;
    b.feature(&x_conv0, stem, 2, "conv_0");
    let x_stem_0 = cell_stem_0(&mut b.scope("cell_stem_0"), &x_conv0, stem, c.widths[1], &c)?;
    let s0 = 5 * c.widths[1];
    let tap = act(b, "relu", &x_stem_0)?;
    b.feature(&tap, s0, 4, "cell_stem_1.conv_1x1.act");
    // (x_prev, x) as the cells consume them, with their widths.
    let (mut xp, mut pc) = (x_conv0, stem);
    let (mut x, mut xc) = (x_stem_0, s0);
    let mut prev_reduced = false;
    for i in 0..13 {
        // cell_stem_1 is a reducing Cell before cell_0.
        let (name, reduce) = if i == 0 {
            ("cell_stem_1".to_string(), true)
        } else {
            (format!("cell_{}", i - 1), REDUCTION.contains(&(i - 1)))
        };
        let w = c.widths[i + 2];
        // The cell after a reducing one sees x_prev at twice x's resolution (as does cell_stem_1).
        let match_prev = i == 0 || prev_reduced;
        let y = cell(
            &mut b.scope(&name),
            (&xp, pc),
            (&x, xc),
            w,
            reduce,
            match_prev,
            &c,
        )?;
        (xp, pc) = (x, xc);
        (x, xc) = (y, 5 * w);
        prev_reduced = reduce;
        let module = match i {
            4 => "cell_4.conv_1x1.act",
            8 => "cell_8.conv_1x1.act",
            12 => "act",
            _ => continue,
        };
        let y = act(b, "relu", &x)?;
        b.feature(&y, xc, 8 << (i / 4 - 1), module);
        if i == 12 {
            x = y;
        }
    }
    if c.pool == PoolKind::None {
        return Err(Error::unsupported(
            "PNASNet with global_pool '' (a Linear over the unpooled map) is not built natively",
        ));
    }
    let pooled = global_pool(b, &x, c.pool);
    let width = xc * c.pool.multiplier();
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

/// `CellStem0` on `x_left` (`i` channels), width `w`.
fn cell_stem_0(b: &mut Builder, xl: &Value, i: usize, w: usize, c: &Cfg) -> Result<Value> {
    let xr = act_conv_bn(&mut b.scope("conv_1x1"), xl, i, w, 1, c)?;
    let l0 = branch_separables(&mut b.scope("comb_iter_0_left"), xl, (i, w, w), 5, 2, c)?;
    let r0 = {
        let s = &mut b.scope("comb_iter_0_right");
        let p = max_pool(s, xl, 2, i, c)?;
        let conv = Conv::new(i, w, 1).pad(c.pad(1, 1)).init(INIT);
        conv_bn(s, &p, "conv", "bn", conv, BN_EPS)?
    };
    let x0 = add(b, &l0, &r0);
    let rest = cell_rest(b, &xr, w, 2, c)?;
    let l4 = branch_separables(&mut b.scope("comb_iter_4_left"), xl, (i, w, w), 3, 2, c)?;
    let r4 = act_conv_bn(&mut b.scope("comb_iter_4_right"), &xr, w, w, 2, c)?;
    let x4 = add(b, &l4, &r4);
    Ok(concat(b, &[&x0, &rest[0], &rest[1], &rest[2], &x4], 1))
}

/// `CellBase.cell_forward`'s combinations 1..3 (on `x_right` only).
fn cell_rest(b: &mut Builder, xr: &Value, w: usize, s: usize, c: &Cfg) -> Result<[Value; 3]> {
    let l1 = sep(b, "comb_iter_1_left", xr, w, 7, s, c)?;
    let r1 = max_pool(b, xr, s, w, c)?;
    let x1 = add(b, &l1, &r1);
    let l2 = sep(b, "comb_iter_2_left", xr, w, 5, s, c)?;
    let r2 = sep(b, "comb_iter_2_right", xr, w, 3, s, c)?;
    let x2 = add(b, &l2, &r2);
    // timm builds this branch without pad_type: symmetric padding (the same at 3x3 stride 1).
    let l3 = {
        let sym = NasOps {
            tf_same: false,
            ..c.ops
        };
        sep(b, "comb_iter_3_left", &x2, w, 3, 1, &sym)?
    };
    let r3 = max_pool(b, xr, s, w, c)?;
    let x3 = add(b, &l3, &r3);
    Ok([x1, x2, x3])
}

/// `Cell` of width `w` on (`x_left`, `x_right`) = (x_prev, x).
fn cell(
    b: &mut Builder,
    (xl, lc): (&Value, usize),
    (xr, rc): (&Value, usize),
    w: usize,
    reduce: bool,
    match_prev: bool,
    c: &Cfg,
) -> Result<Value> {
    let s = if reduce { 2 } else { 1 };
    let xl = if match_prev {
        let fr = &mut b.scope("conv_prev_1x1");
        factorized_reduction(fr, xl, lc, w / 2, c)?
    } else {
        act_conv_bn(&mut b.scope("conv_prev_1x1"), xl, lc, w, 1, c)?
    };
    let xr = act_conv_bn(&mut b.scope("conv_1x1"), xr, rc, w, 1, c)?;
    let l0 = sep(b, "comb_iter_0_left", &xl, w, 5, s, c)?;
    let r0 = max_pool(b, &xl, s, w, c)?;
    let x0 = add(b, &l0, &r0);
    let rest = cell_rest(b, &xr, w, s, c)?;
    let l4 = sep(b, "comb_iter_4_left", &xl, w, 3, s, c)?;
    let r4 = if reduce {
        act_conv_bn(&mut b.scope("comb_iter_4_right"), &xr, w, w, 2, c)?
    } else {
        xr.clone()
    };
    let x4 = add(b, &l4, &r4);
    Ok(concat(b, &[&x0, &rest[0], &rest[1], &rest[2], &x4], 1))
}

// ---------------------------------------------------------------------------------------------
// the architecture: table, model_args, weights

fn resolve(b: &mut Builder, cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a PNASNet variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = PnasNetArgs::read(&a)?;
    let in_c = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_c {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_c} channels",
            v.in_chans
        )));
    }
    if v.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's PNASNet asserts output_stride 32"));
    }
    let tf_same = match v.pad_type.as_str() {
        "same" => true,
        "" => false,
        _ => return Err(a.unsupported("pad_type", "timm's PNASNet pads 'same' or ''")),
    };
    // timm fixes the widths: read them from the weights where there are weights.
    let mut widths = WIDTHS.to_vec();
    if b.weights().is_some() {
        let mut keys = vec!["conv_0.conv.weight".to_string()];
        keys.push("cell_stem_0.conv_1x1.conv.weight".into());
        keys.push("cell_stem_1.conv_1x1.conv.weight".into());
        keys.extend((0..12).map(|i| format!("cell_{i}.conv_1x1.conv.weight")));
        let got: Option<Vec<usize>> = keys
            .iter()
            .map(|k| b.weight_shape(k).map(|s| s[0]))
            .collect();
        if let Some(got) = got {
            widths = got;
        }
    }
    if widths.contains(&0) || widths[2..].iter().any(|w| !w.is_multiple_of(2)) {
        return Err(Error::invalid_model(format!(
            "PNASNet widths {widths:?}: positive, the cells' even (their factorized reductions halve them)"
        )));
    }
    let pool_name = (v.global_pool.as_ref().or(cfg.global_pool.as_ref())).map_or("avg", |s| s);
    Ok(Cfg {
        widths,
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
