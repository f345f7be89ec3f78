//! CSPNeXt (timm's `cspnext.py`, the RTMDet backbone): `cspnext_tiny`, `_s`, `_m`, `_l`, `_x`.
//!
//! A three-conv stem, then stages of a strided 3×3 ConvNormAct and a CSP layer (`short_conv` and
//! `main_conv` 1×1 branches, `main` through blocks of a 3×3 conv and a 5×5 depthwise-separable
//! conv, concatenated, an effective-SE `attention`, `final_conv`). The last stage has an SPP
//! bottleneck (parallel stride-1 max pools) before its CSP layer and no residuals. BatchNorms
//! are folded into their convs at load.
//!
//! Widths, depths and the attention switch are read from the weights when there are weights.
//! Feature maps: `stem` and every stage; `output_stride` 8 / 16 dilates the last stages.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::se::effective_se;
use crate::graph::layers::{self, add, concat, conv_norm_act, py_round, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/cspnext.json"));

pub const FAMILY: Family = Family {
    name: "cspnext",
    examples: "cspnext_tiny, cspnext_s, cspnext_m, cspnext_l, cspnext_x",
    matches: |arch| TABLE.get(arch).is_some(),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `CspNext.__init__`'s keyword arguments with timm's defaults.
    struct CspNextArgs {
        in_chans: usize = 3,
        output_stride: usize = 32,
        depths: Vec<usize> = vec![3, 6, 6, 3],
        channels: Vec<usize> = vec![128, 256, 512, 1024],
        deepen_factor: f64 = 1.0,
        widen_factor: f64 = 1.0,
        expand_ratio: f64 = 0.5,
        channel_attention: bool = true,
        norm_layer: String = "batchnorm2d".into(),
        act_layer: String = "silu".into(),
        /// Unset: config.json's root `global_pool`.
        global_pool: Option<String> = None,
    }
}

/// timm's `SPPBottleneck` pool sizes (fixed).
const SPP_KERNELS: [usize; 3] = [5, 9, 13];
/// `CspNextBlock`'s depthwise kernel (fixed).
const DW_KERNEL: usize = 5;

struct Ctx {
    norm: Norm,
    act: String,
}

impl Ctx {
    /// timm's `ConvNormAct`; the output width is the weights' when there are weights.
    fn cna(&self, b: &mut Builder, x: &Value, c: Conv) -> Result<(Value, usize)> {
        let mut c = c;
        if let Some(s) = b.weight_shape("conv.weight") {
            if s.len() == 4 {
                c.out_ch = s[0];
            }
        }
        let out = c.out_ch;
        Ok((conv_norm_act(b, x, c, &self.norm, Some(&self.act))?, out))
    }
}

/// One stage's geometry.
struct Stage {
    chs: usize,
    depth: usize,
    stride: usize,
    first_dilation: usize,
    dilation: usize,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a CSPNeXt variant this build knows (known: {})",
            TABLE.names().join(", ")
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = CspNextArgs::read(&a)?;
    let in_ch = cfg.pretrained_cfg.input_size[0];
    if v.in_chans != in_ch {
        return Err(Error::invalid_model(format!(
            "model_args in_chans = {} but pretrained_cfg input_size has {in_ch} channels",
            v.in_chans
        )));
    }
    let output_stride = match b.output_stride().unwrap_or(v.output_stride) {
        os @ (8 | 16 | 32) => os,
        os => {
            return Err(Error::invalid_argument(format!(
                "output_stride {os} is not one of CSPNeXt's (8, 16, 32)"
            )))
        }
    };
    if v.depths.len() != v.channels.len() || v.depths.is_empty() || v.depths.len() > 8 {
        return Err(Error::invalid_model(format!(
            "CSPNeXt depths {:?} and channels {:?}: one of each per stage, 1..=8 stages",
            v.depths, v.channels
        )));
    }
    if !(v.expand_ratio > 0.0 && v.expand_ratio <= 4.0) || v.widen_factor <= 0.0 {
        return Err(Error::invalid_model(format!(
            "CSPNeXt expand_ratio {} / widen_factor {}: positive (expand_ratio at most 4)",
            v.expand_ratio, v.widen_factor
        )));
    }
    let ctx = Ctx {
        norm: Norm::from_timm(&v.norm_layer, None)?,
        act: layers::act::canonical(&v.act_layer)?.to_string(),
    };
    let pool_name = v.global_pool.as_ref().or(cfg.global_pool.as_ref());
    let pool = PoolKind::from_timm(pool_name.map_or("avg", |s| s))?;

    // stage widths and depths as timm computes them, then as the weights have them
    let mut chs: Vec<usize> = v
        .channels
        .iter()
        .map(|&c| (c as f64 * v.widen_factor) as usize)
        .collect();
    let mut depths: Vec<usize> = v
        .depths
        .iter()
        .map(|&d| (py_round(d as f64 * v.deepen_factor) as usize).max(1))
        .collect();
    if b.weights().is_some() {
        let st = &mut b.scope("stages");
        let n = (0..).take_while(|&i| st.scope(i).has_module("0")).count();
        if n > 0 {
            depths.resize(n, 1);
            chs.resize(n, 1);
            for i in 0..n {
                let s = &mut st.scope(i);
                let csp = if i + 1 == n { 2 } else { 1 };
                if let Some(w) = s.weight_shape("0.conv.weight") {
                    chs[i] = w[0];
                }
                let mut layer = s.scope(csp);
                let blocks = layer.scope("blocks");
                depths[i] = (0..)
                    .take_while(|&j| blocks.has_module(&j.to_string()))
                    .count();
            }
        }
    }
    if chs.contains(&0) {
        return Err(Error::invalid_model(format!(
            "CSPNeXt stage widths {chs:?} must be positive"
        )));
    }
    let mut stages = Vec::with_capacity(chs.len());
    let (mut net_stride, mut dilation) = (2, 1);
    for (&c, &d) in chs.iter().zip(&depths) {
        let first_dilation = dilation;
        let mut stride = 2;
        if net_stride * 2 > output_stride {
            stride = 1;
            dilation *= 2;
        }
        net_stride *= stride;
        stages.push(Stage {
            chs: c,
            depth: d,
            stride,
            first_dilation,
            dilation,
        });
    }

    let input = b.input();
    let stem_chs = (chs[0] / 2).max(1);
    let half = (stem_chs / 2).max(1);
    let (mut x, mut prev) = {
        let mut s = b.scope("stem");
        let (x, c) = ctx.cna(&mut s.scope(0), &input, Conv::new(in_ch, half, 3).stride(2))?;
        let (x, c) = ctx.cna(&mut s.scope(1), &x, Conv::new(c, c, 3))?;
        let out = ctx.cna(&mut s.scope(2), &x, Conv::new(c, stem_chs, 3))?;
        out
    };
    b.feature(&x, prev, 2, "stem");
    let mut reduction = 2;
    let n = stages.len();
    for (i, st) in stages.iter().enumerate() {
        let last = i + 1 == n;
        {
            let mut stages_scope = b.scope("stages");
            let s = &mut stages_scope.scope(i);
            let down = Conv::new(prev, st.chs, 3)
                .stride(st.stride)
                .dilation(st.first_dilation);
            let (mut y, c) = ctx.cna(&mut s.scope(0), &x, down)?;
            if last {
                y = spp(&mut s.scope(1), &y, c, &ctx)?;
            }
            let csp = &mut s.scope(if last { 2 } else { 1 });
            x = csp_layer(
                csp,
                &y,
                c,
                st,
                v.expand_ratio,
                v.channel_attention,
                !last,
                &ctx,
            )?;
            prev = c;
        }
        reduction *= st.stride;
        b.feature(&x, prev, reduction, &format!("stages.{i}"));
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "CSPNeXt with global_pool '' (unpooled features) is not built natively",
        ));
    }
    let features = b.output() == OutputKind::Features;
    classifier_head(
        &mut b.scope("head"),
        &x,
        prev,
        pool,
        cfg.num_classes,
        features,
    )
}

/// `SPPBottleneck`: `conv1` (to half), the input and its max pools concatenated, `conv2`.
fn spp(b: &mut Builder, x: &Value, ch: usize, ctx: &Ctx) -> Result<Value> {
    let (y, mid) = ctx.cna(&mut b.scope("conv1"), x, Conv::new(ch, ch / 2, 1))?;
    let mut parts = vec![y.clone()];
    for k in SPP_KERNELS {
        parts.push(Pool2d::new(k, 1, k / 2).max(b, &y, mid)?);
    }
    let refs: Vec<&Value> = parts.iter().collect();
    let cat = concat(b, &refs, 1);
    let conv2 = Conv::new(mid * (SPP_KERNELS.len() + 1), ch, 1);
    Ok(ctx.cna(&mut b.scope("conv2"), &cat, conv2)?.0)
}

/// `CspNextLayer`: two 1×1 branches, blocks on `main`, concat (main first), attention,
/// `final_conv`.
#[allow(clippy::too_many_arguments)]
fn csp_layer(
    b: &mut Builder,
    x: &Value,
    ch: usize,
    st: &Stage,
    expand_ratio: f64,
    channel_attention: bool,
    add_identity: bool,
    ctx: &Ctx,
) -> Result<Value> {
    let mid = (ch as f64 * expand_ratio) as usize;
    let (short, mid) = ctx.cna(&mut b.scope("short_conv"), x, Conv::new(ch, mid, 1))?;
    let (mut main, _) = ctx.cna(&mut b.scope("main_conv"), x, Conv::new(ch, mid, 1))?;
    for j in 0..st.depth {
        main = csp_block(
            &mut b.scope("blocks").scope(j),
            &main,
            mid,
            st.dilation,
            add_identity,
            ctx,
        )?;
    }
    let cat = concat(b, &[&main, &short], 1);
    let has_attn = match b.weights() {
        Some(_) => b.has_module("attention"),
        None => channel_attention,
    };
    let y = if has_attn {
        effective_se(
            &mut b.scope("attention"),
            &cat,
            2 * mid,
            false,
            "hard_sigmoid",
        )?
    } else {
        cat
    };
    Ok(ctx
        .cna(&mut b.scope("final_conv"), &y, Conv::new(2 * mid, ch, 1))?
        .0)
}

/// `CspNextBlock`: 3×3 `conv1`, `conv2` = 5×5 depthwise + 1×1 pointwise, identity residual.
fn csp_block(
    b: &mut Builder,
    x: &Value,
    ch: usize,
    dilation: usize,
    add_identity: bool,
    ctx: &Ctx,
) -> Result<Value> {
    let (y, _) = ctx.cna(
        &mut b.scope("conv1"),
        x,
        Conv::new(ch, ch, 3).dilation(dilation),
    )?;
    let y = {
        let mut s = b.scope("conv2");
        let dw = Conv::new(ch, ch, DW_KERNEL).depthwise().dilation(dilation);
        let (y, _) = ctx.cna(&mut s.scope("depthwise_conv"), &y, dw)?;
        let y = ctx
            .cna(&mut s.scope("pointwise_conv"), &y, Conv::new(ch, ch, 1))?
            .0;
        y
    };
    Ok(if add_identity { add(b, &y, x) } else { y })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_arch_has_a_config_that_parses() {
        assert_eq!(TABLE.validate().unwrap(), 5);
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
