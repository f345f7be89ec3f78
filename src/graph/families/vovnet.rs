//! VoVNet V1 / V2 (timm's `vovnet.py`): `vovnet39a` / `57a`, `ese_vovnet19b*` (incl. the
//! depthwise `_dw` variants), `ese_vovnet39b` / `57b` / `99b`, `eca_vovnet39b`.
//!
//! A one-shot-aggregation block (`OsaBlock`) runs `layer_per_block` 3x3 convs in sequence and
//! concatenates the block input with every one of their outputs before a 1x1 `conv_concat`;
//! the last block of a stage adds ESE (or ECA) attention, every block but the first a residual.
//! The depthwise variants use `SeparableConvNormAct` (a depthwise 3x3, then a 1x1 with the
//! BatchNorm folded in) and a 1x1 `conv_reduction` in front. `ese_vovnet39b_evos` has every
//! BatchNorm + activation replaced by EvoNorm2dS0 (its own activation); timm's VoVNet has no
//! dilated form (`output_stride` 32 only).

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::evo_norm::EvoNorm;
use crate::graph::layers::heads::classifier_head;
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::se::{eca, eca_kernel, effective_se};
use crate::graph::layers::{act, add, concat, conv2d, conv_bn, conv_norm_act, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/vovnet.json"));

pub const FAMILY: Family = Family {
    name: "vovnet",
    examples:
        "vovnet39a, vovnet57a, ese_vovnet19b[_slim][_dw], ese_vovnet39b/57b/99b, eca_vovnet39b",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// The architecture's `model_cfgs` entry overlaid by `model_args` (as `VovNet.__init__`
    /// does), and the `VovNet` arguments that shape the graph.
    struct VovArgs {
        stem_chs: Vec<usize> = vec![],
        stage_conv_chs: Vec<usize> = vec![],
        stage_out_chs: Vec<usize> = vec![],
        layer_per_block: usize = 0,
        block_per_stage: Vec<usize> = vec![],
        residual: bool = false,
        depthwise: bool = false,
        attn: String = String::new(),
        stem_stride: usize = 4,
        output_stride: usize = 32,
        norm_layer: String = "batchnormact2d".into(),
        act_layer: String = "relu".into(),
    }
}

const BN: Norm = Norm::Batch { eps: 1e-5 };

/// The block attention timm's `create_attn` makes for `attn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attn {
    None,
    Ese,
    Eca,
}

struct Ctx<'a> {
    act: &'a str,
    depthwise: bool,
    /// The norm-act layer when not BatchNormAct2d (`norm_layer` an EvoNorm / FRN).
    evo: Option<EvoNorm>,
}

/// A `ConvNormAct` (`conv`, `bn`): the BatchNorm folded and `act_layer` after it, or the conv
/// then the EvoNorm, whose activation is its own.
fn conv_na(b: &mut Builder, x: &Value, c: Conv, ctx: &Ctx) -> Result<Value> {
    match &ctx.evo {
        None => conv_norm_act(b, x, c, &BN, Some(ctx.act)),
        Some(e) => {
            let y = conv2d(&mut b.scope("conv"), x, c)?;
            e.apply(&mut b.scope("bn"), &y, c.out_ch, true)
        }
    }
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    // The entrypoint passes `model_cfgs[arch]` as `cfg`; config.json's keys overlay it.
    let mut defaults = Map::new();
    if let Some(e) = TABLE.get(arch) {
        for (k, v) in &e.args {
            match (k.as_str(), v) {
                ("model_cfg", Json::Object(m)) => defaults.extend(m.clone()),
                _ => {
                    defaults.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let a = Args::new(arch, Some(&defaults), &cfg.model_args);
    let r = VovArgs::read(&a)?;
    if r.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's VoVNet has output stride 32 only"));
    }
    act::canonical(&r.act_layer)?;
    let norm = r.norm_layer.to_ascii_lowercase().replace('_', "");
    let evo = match norm.as_str() {
        "batchnormact2d" | "batchnorm2d" | "batchnorm" => None,
        // ese_vovnet39b_evos's `norm_act_fn`: create_norm_act_layer('evonorms0', ...), which binds
        // no act_layer.
        "normactfn" if arch == "ese_vovnet39b_evos" => {
            Some(EvoNorm::from_timm("evonorms0", None, None).expect("a known name")?)
        }
        n => match EvoNorm::from_timm(n, None, Some(&r.act_layer)) {
            Some(e) => Some(e?),
            None => {
                return Err(a.unsupported(
                    "norm_layer",
                    "VoVNet is built with BatchNormAct2d, EvoNorm2d* or FilterResponseNorm*",
                ))
            }
        },
    };
    let attn = match r.attn.as_str() {
        "" => Attn::None,
        "ese" => Attn::Ese,
        "eca" => Attn::Eca,
        _ => return Err(a.unsupported("attn", "VoVNet attention is '', 'ese' or 'eca'")),
    };
    let n = r.stage_out_chs.len();
    if r.stem_chs.len() != 3
        || n != 4
        || r.stage_conv_chs.len() != 4
        || r.block_per_stage.len() != 4
        || r.stage_out_chs.contains(&0)
        || r.stage_conv_chs.contains(&0)
        || r.stem_chs.contains(&0)
        || r.layer_per_block == 0
        || !matches!(r.stem_stride, 2 | 4)
    {
        return Err(Error::invalid_model(format!(
            "`{arch}`: VoVNet needs three stem widths, four stages of widths and blocks, layer_per_block > 0 and stem_stride 2 or 4"
        )));
    }
    let ctx = Ctx {
        act: &r.act_layer,
        depthwise: r.depthwise,
        evo,
    };

    // Stem: a strided 3x3 ConvNormAct, then two (separable when depthwise) 3x3s.
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let s = &r.stem_chs;
    let input = b.input();
    let x = {
        let st = &mut b.scope("stem");
        let c = Conv::new(in_ch, s[0], 3).stride(2);
        let x = conv_na(&mut st.scope(0), &input, c, &ctx)?;
        let x1 = conv3(&mut st.scope(1), &x, s[0], s[1], 1, &ctx)?;
        let x2 = conv3(&mut st.scope(2), &x1, s[1], s[2], r.stem_stride / 2, &ctx)?;
        if r.stem_stride == 4 {
            st.feature(&x1, s[1], 2, "stem.1");
        } else {
            st.feature(&x2, s[2], 2, "stem.2");
        }
        x2
    };
    let (mut x, mut prev, mut stride) = (x, s[2], r.stem_stride);
    for i in 0..4 {
        let sc = &mut b.scope("stages");
        let st = &mut sc.scope(i);
        if r.stem_stride == 2 || i > 0 {
            x = Pool2d::new(3, 2, 0).ceil(true).max(st, &x, prev)?;
            stride *= 2;
        }
        let (mid, out) = (r.stage_conv_chs[i], r.stage_out_chs[i]);
        let blocks = r.block_per_stage[i];
        for j in 0..blocks {
            let block_attn = if j + 1 == blocks { attn } else { Attn::None };
            let residual = r.residual && j > 0;
            let bs = &mut st.scope("blocks");
            x = osa_block(
                &mut bs.scope(j),
                &x,
                prev,
                mid,
                out,
                r.layer_per_block,
                residual,
                block_attn,
                &ctx,
            )?;
            prev = out;
        }
        st.feature(&x, prev, stride, &format!("stages.{i}"));
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native VoVNet graph",
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

/// A 3x3 `ConvNormAct`, or `SeparableConvNormAct` (`conv_dw`, `conv_pw` + `bn`) when depthwise.
fn conv3(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    stride: usize,
    ctx: &Ctx,
) -> Result<Value> {
    if !ctx.depthwise {
        let c = Conv::new(in_ch, out_ch, 3).stride(stride);
        return conv_na(b, x, c, ctx);
    }
    let dw = Conv::new(in_ch, in_ch, 3).stride(stride).depthwise();
    let y = conv2d(&mut b.scope("conv_dw"), x, dw)?;
    let pw = Conv::new(in_ch, out_ch, 1);
    if let Some(e) = &ctx.evo {
        let y = conv2d(&mut b.scope("conv_pw"), &y, pw)?;
        return e.apply(&mut b.scope("bn"), &y, out_ch, true);
    }
    let y = conv_bn(b, &y, "conv_pw", "bn", pw, 1e-5)?;
    act(b, ctx.act, &y)
}

/// `OsaBlock`: optional `conv_reduction`, the `conv_mid` chain, `conv_concat` over the block
/// input and every mid output, attention, residual.
#[allow(clippy::too_many_arguments)]
fn osa_block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    mid: usize,
    out: usize,
    layers: usize,
    residual: bool,
    attn: Attn,
    ctx: &Ctx,
) -> Result<Value> {
    let mut y = x.clone();
    if ctx.depthwise && in_ch != mid {
        if residual {
            return Err(Error::invalid_model(format!(
                "VoVNet block `{}`: a depthwise block with a conv_reduction cannot be residual",
                b.path()
            )));
        }
        let c = Conv::new(in_ch, mid, 1);
        y = conv_na(&mut b.scope("conv_reduction"), &y, c, ctx)?;
    }
    let mut outputs = vec![x.clone()];
    let mut next_in = if ctx.depthwise { mid } else { in_ch };
    for k in 0..layers {
        let cm = &mut b.scope("conv_mid");
        y = conv3(&mut cm.scope(k), &y, next_in, mid, 1, ctx)?;
        next_in = mid;
        outputs.push(y.clone());
    }
    let cat = concat(b, &outputs.iter().collect::<Vec<_>>(), 1);
    let c = Conv::new(in_ch + layers * mid, out, 1);
    let mut y = conv_na(&mut b.scope("conv_concat"), &cat, c, ctx)?;
    y = match attn {
        Attn::None => y,
        Attn::Ese => effective_se(&mut b.scope("attn"), &y, out, false, "hard_sigmoid")?,
        Attn::Eca => eca(
            &mut b.scope("attn"),
            &y,
            eca_kernel(out, 2.0, 1.0),
            false,
            "sigmoid",
        )?,
    };
    if residual {
        if in_ch != out {
            return Err(Error::invalid_model(format!(
                "VoVNet block `{}`: {in_ch} -> {out} channels cannot add its residual",
                b.path()
            )));
        }
        y = add(b, &y, x);
    }
    Ok(y)
}
