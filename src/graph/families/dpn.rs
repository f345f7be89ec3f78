//! Dual Path Networks (timm's `dpn.py`): `dpn48b`, `dpn68[b]`, `dpn92`, `dpn98`, `dpn107`,
//! `dpn131`.
//!
//! Every `DualPathBlock` carries two paths in one tensor, a residual one (the first `bw`
//! channels, summed) and a dense one (grown by `inc` channels per block, concatenated); the
//! block's convs are pre-activation (`BnActConv2d`: BatchNorm, act, conv), so those BatchNorms
//! stay BatchNormalization nodes. The `b` variants end the block with a `BnAct` and two 1x1
//! convs, one per path. `act_layer` reaches only the stem (`conv1_1`) and the final
//! `conv5_bn_ac`: timm builds the blocks' `BatchNormAct2d` with its default relu. Widths,
//! group counts and depths are read from the weights when there are weights. timm's DPN has
//! no dilated form (`output_stride` 32 only) and classifies with a 1x1 conv (`classifier`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::classifier::conv_classifier;
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::{
    act, add, batch_norm, concat, conv2d, conv_norm_act, slice, Conv, Norm,
};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/dpn.json"));

pub const FAMILY: Family = Family {
    name: "dpn",
    examples: "dpn48b, dpn68, dpn68b, dpn92, dpn98, dpn107, dpn131",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `DPN.__init__`, timm's defaults.
    struct DpnArgs {
        k_sec: Vec<usize> = vec![3, 4, 20, 3],
        inc_sec: Vec<usize> = vec![16, 32, 24, 128],
        k_r: usize = 96,
        groups: usize = 32,
        output_stride: usize = 32,
        small: bool = false,
        num_init_features: usize = 64,
        b: bool = false,
        norm_layer: String = "batchnorm2d".into(),
        act_layer: String = "relu".into(),
        /// timm binds the final `CatBnAct`'s norm from the (already act-bound) block norm, and
        /// `get_norm_act_layer` keeps the bound `act_layer`: this argument changes nothing.
        #[allow(dead_code)]
        fc_act_layer: String = "elu".into(),
    }
}

/// `BatchNormAct2d(eps=0.001)` everywhere in DPN.
const EPS: f32 = 1e-3;

/// One stage's widths: the residual path `bw`, the dense growth `inc`, the bottleneck `r`
/// (the 3x3's width too), its groups and the number of blocks.
struct Stage {
    bw: usize,
    inc: usize,
    r: usize,
    groups: usize,
    blocks: usize,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = DpnArgs::read(&a)?;
    if r.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's DPN has output stride 32 only"));
    }
    if !matches!(Norm::from_timm(&r.norm_layer, None), Ok(Norm::Batch { .. })) {
        return Err(a.unsupported("norm_layer", "DPN is built with batchnorm only"));
    }
    act::canonical(&r.act_layer)?;
    if r.k_sec.len() != 4 || r.inc_sec.len() != 4 || r.k_sec.contains(&0) || r.groups == 0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: DPN needs four stages of at least one block (k_sec {:?}, inc_sec {:?}) and groups > 0",
            r.k_sec, r.inc_sec
        )));
    }
    let act_name = r.act_layer.as_str();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let (y, width) = {
        let f = &mut b.scope("features");

        // conv1_1: ConvNormAct (7x7, or 3x3 when small), stride 2; conv1_pool.
        let (stem_ch, k) = match f.weight_shape("conv1_1.conv.weight") {
            Some(s) if s.len() == 4 => (s[0], s[2]),
            _ => (r.num_init_features, if r.small { 3 } else { 7 }),
        };
        let c = Conv::new(in_ch, stem_ch, k)
            .stride(2)
            .init(Init::DefaultUniform);
        let x = conv_norm_act(
            &mut f.scope("conv1_1"),
            &input,
            c,
            &Norm::Batch { eps: EPS },
            Some(act_name),
        )?;
        f.feature(&x, stem_ch, 2, "features.conv1_1");
        let x = Pool2d::new(3, 2, 1).max(f, &x, stem_ch)?;

        let bw_factor = if r.small { 1 } else { 4 };
        let (mut x, mut width) = (x, stem_ch);
        for s in 0..4 {
            let n = s + 2;
            let nominal = Stage {
                bw: (64 << s) * bw_factor,
                inc: r.inc_sec[s],
                r: r.k_r << s,
                groups: r.groups,
                blocks: r.k_sec[s],
            };
            let st = stage_from_weights(f, n, nominal, r.b);
            for j in 1..=st.blocks {
                let kind = match (j, s) {
                    (1, 0) => Kind::Proj,
                    (1, _) => Kind::Down,
                    _ => Kind::Normal,
                };
                (x, width) = dual_path_block(
                    &mut f.scope(format!("conv{n}_{j}")),
                    &x,
                    width,
                    &st,
                    kind,
                    r.b,
                )?;
            }
            f.feature(
                &x,
                width,
                4 << s,
                &format!("features.conv{n}_{}", st.blocks),
            );
        }
        if f.output() == OutputKind::FeatureMaps {
            return Ok((x, width));
        }
        // conv5_bn_ac: BnAct.
        let y = bn_act(&mut f.scope("conv5_bn_ac"), &x, width, act_name)?;
        (y, width)
    };
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    let features = b.output() == OutputKind::Features;
    conv_classifier(
        b,
        &y,
        width,
        pool,
        "classifier",
        cfg.num_classes,
        features,
        Init::DefaultUniform,
    )
}

/// `features.conv<n>_*`'s widths and depth as the weights have them, else the nominal ones.
fn stage_from_weights(f: &Builder, n: usize, nominal: Stage, b: bool) -> Stage {
    if f.weights().is_none() {
        return nominal;
    }
    let dim = |name: &str, i: usize| {
        f.weight_shape(&format!("conv{n}_1.{name}"))
            .filter(|s| s.len() == 4)
            .map(|s| s[i])
    };
    let proj = dim("c1x1_w_s1.conv.weight", 0).or_else(|| dim("c1x1_w_s2.conv.weight", 0));
    let (bw, inc) = if b {
        match (dim("c1x1_c1.weight", 0), dim("c1x1_c2.weight", 0)) {
            (Some(bw), Some(inc)) => (bw, inc),
            _ => (nominal.bw, nominal.inc),
        }
    } else {
        match (proj, dim("c1x1_c.conv.weight", 0)) {
            (Some(p), Some(c)) if p >= c && c >= p - c => (c - (p - c), p - c),
            _ => (nominal.bw, nominal.inc),
        }
    };
    let r = dim("c1x1_a.conv.weight", 0).unwrap_or(nominal.r);
    let groups = match dim("c3x3_b.conv.weight", 1) {
        Some(per) if per > 0 && r.is_multiple_of(per) => r / per,
        _ => nominal.groups,
    };
    let blocks = (1..)
        .take_while(|j| f.has_module(&format!("conv{n}_{j}")))
        .count()
        .max(1);
    Stage {
        bw,
        inc,
        r,
        groups,
        blocks,
    }
}

/// `DualPathBlock`'s `block_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Proj,
    Down,
    Normal,
}

/// `BnAct`: its `bn` (`BatchNormAct2d`, eps 0.001).
fn bn_act(b: &mut Builder, x: &Value, ch: usize, act_name: &str) -> Result<Value> {
    let y = batch_norm(&mut b.scope("bn"), x, ch, EPS)?;
    act(b, act_name, &y)
}

/// `BnActConv2d`: BatchNorm (eps 0.001), act, conv (no bias).
fn bn_act_conv(b: &mut Builder, x: &Value, c: Conv, act_name: &str) -> Result<Value> {
    let y = bn_act(b, x, c.in_ch, act_name)?;
    conv2d(&mut b.scope("conv"), &y, c.init(Init::DefaultUniform))
}

/// One `DualPathBlock` on the concatenated paths (residual first): the projection (`proj` /
/// `down`) or the input itself split at `bw`, the bottleneck `c1x1_a` → `c3x3_b` → `c1x1_c`,
/// then `cat(x_s1 + out1, x_s2, out2)`. Returns the output and its width.
fn dual_path_block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    st: &Stage,
    kind: Kind,
    b_variant: bool,
) -> Result<(Value, usize)> {
    // timm hands its blocks no norm layer: their BatchNormAct2d keep its default relu.
    let act_name = "relu";
    let (bw, inc) = (st.bw, st.inc);
    let key_stride = if kind == Kind::Down { 2 } else { 1 };
    let x_s = match kind {
        Kind::Proj | Kind::Down => {
            let name = if kind == Kind::Down {
                "c1x1_w_s2"
            } else {
                "c1x1_w_s1"
            };
            let c = Conv::new(in_ch, bw + 2 * inc, 1).stride(key_stride);
            bn_act_conv(&mut b.scope(name), x, c, act_name)?
        }
        Kind::Normal => x.clone(),
    };
    let s_ch = if kind == Kind::Normal {
        in_ch
    } else {
        bw + 2 * inc
    };
    if s_ch < bw || st.groups == 0 || !st.r.is_multiple_of(st.groups) {
        return Err(Error::invalid_model(format!(
            "DPN block `{}`: {s_ch} channels cannot hold a {bw}-channel residual path, or {} channels do not split into {} groups",
            b.path(),
            st.r,
            st.groups
        )));
    }
    let x_s1 = slice(b, &x_s, 1, 0, bw as i64);
    let x_s2 = slice(b, &x_s, 1, bw as i64, s_ch as i64);
    let y = bn_act_conv(
        &mut b.scope("c1x1_a"),
        x,
        Conv::new(in_ch, st.r, 1),
        act_name,
    )?;
    let c = Conv::new(st.r, st.r, 3)
        .stride(key_stride)
        .groups(st.groups);
    let y = bn_act_conv(&mut b.scope("c3x3_b"), &y, c, act_name)?;
    let (out1, out2) = if b_variant {
        let y = bn_act(&mut b.scope("c1x1_c"), &y, st.r, act_name)?;
        let init = Init::DefaultUniform;
        let o1 = conv2d(
            &mut b.scope("c1x1_c1"),
            &y,
            Conv::new(st.r, bw, 1).init(init),
        )?;
        let o2 = conv2d(
            &mut b.scope("c1x1_c2"),
            &y,
            Conv::new(st.r, inc, 1).init(init),
        )?;
        (o1, o2)
    } else {
        let c = Conv::new(st.r, bw + inc, 1);
        let y = bn_act_conv(&mut b.scope("c1x1_c"), &y, c, act_name)?;
        let o1 = slice(b, &y, 1, 0, bw as i64);
        let o2 = slice(b, &y, 1, bw as i64, (bw + inc) as i64);
        (o1, o2)
    };
    let resid = add(b, &x_s1, &out1);
    Ok((concat(b, &[&resid, &x_s2, &out2], 1), s_ch + inc))
}
