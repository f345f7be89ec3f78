//! Cross Stage Partial networks (timm's `cspnet.py`): CSPResNet(e)Xt, CSPDarkNet, DarkNet and the
//! CS3 variants (`cs3darknet_*`, `cs3sedarknet_*`, `cs3edgenet_x`, ...); `output_stride` 8 / 16
//! dilates the last stages as timm does.
//!
//! timm's entrypoints pass a `CspModelCfg` (stem and per-stage settings, the generated table);
//! config.json cannot describe another one, so every conv's width (and group count) and every
//! stage's depth are read from the weights when there are weights, and computed from the cfg's
//! ratios otherwise.

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::{Args, PerStage};
use crate::graph::layers::heads::fc;
use crate::graph::layers::pool::{global_pool, Pool2d, PoolKind};
use crate::graph::layers::se::{rd_channels, SqueezeExcite};
use crate::graph::layers::{self, act, conv_norm_act, py_round, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/cspnet.json"));

pub const FAMILY: Family = Family {
    name: "cspnet",
    examples: "cspresnet50[d|w], cspresnext50, cspdarknet53, [se]darknet17..53, darknetaa53, cs3darknet_*, cs3sedarknet_*, cs3[se_]edgenet_x",
    matches,
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

fn matches(arch: &str) -> bool {
    ["cspresne", "cspdarknet", "darknet", "sedarknet", "cs3"]
        .iter()
        .any(|p| arch.starts_with(p))
        || TABLE.contains(arch)
}

timm_args! {
    /// `CspModelCfg` fields (overlaid by `model_args`, as `CspNet.__init__` does) and the
    /// `CspNet` arguments that shape the graph.
    struct CspArgs {
        stem: Json = Json::Null,
        stages: Json = Json::Null,
        act_layer: String = "leaky_relu".into(),
        norm_layer: String = "batchnorm".into(),
        aa_layer: Option<String> = None,
        output_stride: usize = 32,
    }
}

timm_args! {
    /// timm's `CspStemCfg`.
    struct StemCfg {
        out_chs: PerStage<usize> = PerStage::All(32),
        stride: usize = 2,
        kernel_size: usize = 3,
        padding: Json = Json::from(""),
        pool: Option<String> = Some(String::new()),
    }
}

timm_args! {
    /// timm's `CspStagesCfg` after `__post_init__` (one value per stage).
    struct StagesCfg {
        depth: Vec<usize> = vec![3, 3, 5, 2],
        out_chs: Vec<usize> = vec![128, 256, 512, 1024],
        stride: Vec<usize> = vec![],
        groups: Vec<usize> = vec![],
        block_ratio: Vec<f64> = vec![],
        bottle_ratio: Vec<f64> = vec![],
        avg_down: Vec<bool> = vec![],
        attn_layer: Vec<Option<String>> = vec![],
        attn_kwargs: Vec<Option<Json>> = vec![],
        stage_type: Vec<String> = vec![],
        block_type: Vec<String> = vec![],
        expand_ratio: Vec<f64> = vec![],
        cross_linear: Vec<bool> = vec![],
        down_growth: Vec<bool> = vec![],
    }
}

const BN: Norm = Norm::Batch { eps: 1e-5 };

/// timm's `_get_stage_fn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageType {
    Dark,
    Csp,
    Cs3,
}

/// timm's `_get_block_fn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockType {
    Dark,
    Edge,
    Bottle,
}

/// One stage's arguments, as `create_csp_stages` hands them to the stage class.
struct Stage {
    stage_type: StageType,
    block_type: BlockType,
    depth: usize,
    out_chs: usize,
    stride: usize,
    dilation: usize,
    first_dilation: usize,
    groups: usize,
    block_ratio: f64,
    bottle_ratio: f64,
    expand_ratio: f64,
    avg_down: bool,
    cross_linear: bool,
    down_growth: bool,
    /// SE reduction ratio (`attn_layer='se'`), `None` without attention.
    se_ratio: Option<f64>,
}

/// What every conv of the network shares.
struct Ctx<'a> {
    act: &'a str,
}

/// A pending `feature_info` entry: timm records a stage's (or the stem's) output only when the
/// next stage strides, and the last one always.
type Feat = (Value, usize, usize, String);

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a CSPNet variant this build knows (timm's cspnet.py: {})",
            FAMILY.examples
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let r = CspArgs::read(&a)?;
    if r.aa_layer.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(a.unsupported("aa_layer", "anti-aliased CSPNet is not built natively"));
    }
    if !matches!(Norm::from_timm(&r.norm_layer, None), Ok(Norm::Batch { .. })) {
        return Err(a.unsupported("norm_layer", "CSPNet is built with batchnorm only"));
    }
    let output_stride = match b.output_stride().unwrap_or(r.output_stride) {
        os @ (8 | 16 | 32) => os,
        os => {
            return Err(Error::invalid_argument(format!(
                "output_stride {os} is not one of timm's CSPNet output strides (8, 16, 32)"
            )))
        }
    };
    let stem = sub_args(&a, "stem", &r.stem, StemCfg::read)?;
    let stages_cfg = sub_args(&a, "stages", &r.stages, StagesCfg::read)?;
    let ctx = Ctx { act: &r.act_layer };

    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let (x, mut pending) = csp_stem(&mut b.scope("stem"), &input, in_ch, &stem, &ctx)?;
    let mut x = x;
    let (mut prev, mut net_stride) = (pending.1, pending.2);
    let stages = stage_args(&a, &stages_cfg, net_stride, output_stride)?;
    for (i, st) in stages.iter().enumerate() {
        // timm tests the configured stride, before output_stride turned it into dilation.
        if stages_cfg.stride[i] != 1 {
            let (v, c, red, m) = pending.clone();
            b.feature(&v, c, red, &m);
        }
        net_stride *= st.stride;
        let mut stages_scope = b.scope("stages");
        let s = &mut stages_scope.scope(i);
        (x, prev) = match st.stage_type {
            StageType::Dark => dark_stage(s, &x, prev, st, &ctx)?,
            StageType::Csp | StageType::Cs3 => cross_stage(s, &x, prev, st, &ctx)?,
        };
        pending = (x.clone(), prev, net_stride, format!("stages.{i}"));
    }
    let (v, c, red, m) = pending;
    b.feature(&v, c, red, &m);
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, prev));
    }
    head(b, cfg, &x, prev)
}

/// A nested cfg (`stem`, `stages`) read with its own typed reader; every key it holds is read.
fn sub_args<T>(a: &Args, key: &str, v: &Json, read: fn(&Args) -> Result<T>) -> Result<T> {
    let map: &Map<String, Json> = v
        .as_object()
        .ok_or_else(|| a.unsupported(key, "the native graph reads a CspNet cfg object here"))?;
    read(&Args::new(
        &format!("{} {key}", a.arch()),
        Some(map),
        &Map::new(),
    ))
}

/// timm's `ClassifierHead` with CSPNet's `head.fc` init: normal(0, 0.01).
fn head(b: &mut Builder, cfg: &ModelConfig, x: &Value, width: usize) -> Result<(Value, usize)> {
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native CSPNet graph",
        ));
    }
    let pooled = global_pool(b, x, pool);
    let width = width * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let logits = fc(
        &mut b.scope("head"),
        &pooled,
        width,
        cfg.num_classes,
        Init::Normal(0.01),
    )?;
    Ok((logits, cfg.num_classes))
}

/// `create_csp_stages`' per-stage arguments: stride until `output_stride`, dilation after.
fn stage_args(
    a: &Args,
    s: &StagesCfg,
    mut net_stride: usize,
    output_stride: usize,
) -> Result<Vec<Stage>> {
    let n = s.depth.len();
    let lens = [
        s.out_chs.len(),
        s.stride.len(),
        s.groups.len(),
        s.block_ratio.len(),
        s.bottle_ratio.len(),
        s.avg_down.len(),
        s.attn_layer.len(),
        s.attn_kwargs.len(),
        s.stage_type.len(),
        s.block_type.len(),
        s.expand_ratio.len(),
        s.cross_linear.len(),
        s.down_growth.len(),
    ];
    if n == 0 || lens.iter().any(|&l| l != n) {
        return Err(Error::invalid_model(format!(
            "`{}`: CspStagesCfg fields must have one value per stage ({n})",
            a.arch()
        )));
    }
    let mut dilation = 1;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut stride = s.stride[i];
        if net_stride >= output_stride && stride > 1 {
            dilation *= stride;
            stride = 1;
        }
        net_stride *= stride;
        let stage_type = match s.stage_type[i].as_str() {
            "dark" => StageType::Dark,
            "csp" => StageType::Csp,
            "cs3" => StageType::Cs3,
            _ => return Err(a.unsupported("stages", "stage_type must be dark, csp or cs3")),
        };
        let block_type = match s.block_type[i].as_str() {
            "dark" => BlockType::Dark,
            "edge" => BlockType::Edge,
            "bottle" => BlockType::Bottle,
            _ => return Err(a.unsupported("stages", "block_type must be dark, edge or bottle")),
        };
        let se_ratio = match s.attn_layer[i].as_deref() {
            None | Some("") => None,
            Some("se") => Some(se_rd_ratio(a, s.attn_kwargs[i].as_ref())?),
            Some(other) => {
                return Err(a.unsupported(
                    "stages",
                    &format!("attn_layer '{other}' is not built natively (only 'se')"),
                ))
            }
        };
        if s.groups[i] == 0 {
            return Err(Error::invalid_model(format!(
                "`{}`: stage {i} has groups = 0",
                a.arch()
            )));
        }
        out.push(Stage {
            stage_type,
            block_type,
            depth: s.depth[i],
            out_chs: s.out_chs[i],
            stride,
            dilation,
            first_dilation: if dilation <= 2 { 1 } else { 2 },
            groups: s.groups[i],
            block_ratio: s.block_ratio[i],
            bottle_ratio: s.bottle_ratio[i],
            expand_ratio: s.expand_ratio[i],
            avg_down: s.avg_down[i],
            cross_linear: s.cross_linear[i],
            down_growth: s.down_growth[i],
            se_ratio,
        });
    }
    Ok(out)
}

/// `SEModule`'s `rd_ratio` from the stage's `attn_kwargs` (timm's default 1/16).
fn se_rd_ratio(a: &Args, kwargs: Option<&Json>) -> Result<f64> {
    let Some(Json::Object(m)) = kwargs else {
        return Ok(1.0 / 16.0);
    };
    let mut ratio = 1.0 / 16.0;
    for (k, v) in m {
        match (k.as_str(), v.as_f64()) {
            ("rd_ratio", Some(r)) if r > 0.0 && r <= 1.0 => ratio = r,
            _ => {
                return Err(a.unsupported(
                    "stages",
                    &format!("SE attn_kwargs {k} = {v} is not built natively"),
                ))
            }
        }
    }
    Ok(ratio)
}

/// timm's `ConvNormAct` whose output width (and group count) the weights give when there are
/// weights; returns the output and its width.
#[allow(clippy::too_many_arguments)]
fn cna(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    groups: usize,
    act_name: Option<&str>,
) -> Result<(Value, usize)> {
    let (mut out_ch, mut groups) = (out_ch, groups);
    if let Some(s) = b.weight_shape("conv.weight") {
        if s.len() == 4 && s[1] > 0 && in_ch.is_multiple_of(s[1]) {
            out_ch = s[0];
            groups = in_ch / s[1];
        }
    }
    if groups == 0 || !in_ch.is_multiple_of(groups) || !out_ch.is_multiple_of(groups) {
        return Err(Error::invalid_model(format!(
            "conv `{}`: {in_ch} -> {out_ch} channels do not split into {groups} groups",
            b.key("conv")
        )));
    }
    let c = Conv::new(in_ch, out_ch, k)
        .stride(stride)
        .dilation(dilation)
        .groups(groups);
    Ok((conv_norm_act(b, x, c, &BN, act_name)?, out_ch))
}

/// timm's `create_csp_stem`: `conv1`.. (the first strides, and the last when the stem strides
/// 4 without a pool), then an optional max pool. Returns the output and its pending feature.
fn csp_stem(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    s: &StemCfg,
    ctx: &Ctx,
) -> Result<(Value, Feat)> {
    let out_chs = match &s.out_chs {
        PerStage::All(c) => vec![*c],
        PerStage::Each(v) => v.clone(),
    };
    let pool = s.pool.as_deref().unwrap_or("");
    if out_chs.is_empty() || ![1, 2, 4].contains(&s.stride) || !matches!(pool, "" | "max") {
        return Err(Error::unsupported(format!(
            "CSPNet stem with {} convs, stride {} and pool '{pool}' is not one timm builds",
            out_chs.len(),
            s.stride
        )));
    }
    if !pool.is_empty() && s.stride <= 2 {
        return Err(Error::invalid_model(
            "a CSPNet stem pool needs stem stride 4",
        ));
    }
    let pad = match &s.padding {
        Json::String(p) if p.is_empty() => None,
        Json::Number(n) if n.as_u64().is_some_and(|p| p <= 16) => Some(n.as_u64().unwrap_or(0)),
        other => {
            return Err(Error::unsupported(format!(
                "CSPNet stem padding {other} is not built natively"
            )))
        }
    };
    let last = out_chs.len() - 1;
    let (mut x, mut prev, mut stride) = (x.clone(), in_ch, 1);
    let mut pending: Option<Feat> = None;
    for (i, &chs) in out_chs.iter().enumerate() {
        let name = format!("conv{}", i + 1);
        let conv_stride =
            if (i == 0 && s.stride > 1) || (i == last && s.stride > 2 && pool.is_empty()) {
                2
            } else {
                1
            };
        if conv_stride > 1 {
            if let Some((v, c, r, m)) = pending.take() {
                b.feature(&v, c, r, &m);
            }
        }
        let sc = &mut b.scope(&name);
        let (out_ch, k) = (stem_width(sc, chs), s.kernel_size);
        let mut c = Conv::new(prev, out_ch, k).stride(conv_stride);
        if let (0, Some(p)) = (i, pad) {
            c = c.pad(Pad::Sym(p as usize));
        }
        x = conv_norm_act(sc, &x, c, &BN, Some(ctx.act))?;
        stride *= conv_stride;
        prev = out_ch;
        pending = Some((x.clone(), prev, stride, format!("stem.{name}")));
    }
    if pool == "max" {
        if let Some((v, c, r, m)) = pending.take() {
            b.feature(&v, c, r, &m);
        }
        x = Pool2d::new(3, 2, 1).max(b, &x, prev)?;
        stride *= 2;
        pending = Some((x.clone(), prev, stride, "stem.pool".into()));
    }
    let pending = pending.ok_or_else(|| Error::invalid_model("empty CSPNet stem"))?;
    Ok((x, pending))
}

/// A stem conv's width: the weights' when there are weights.
fn stem_width(b: &Builder, chs: usize) -> usize {
    b.weight_shape("conv.weight")
        .filter(|s| s.len() == 4)
        .map_or(chs, |s| s[0])
}

/// How many blocks `blocks.<j>` the stage holds: the weights' count, else the cfg's depth.
fn depth(b: &Builder, cfg_depth: usize) -> usize {
    if b.weights().is_none() {
        return cfg_depth;
    }
    (0..)
        .take_while(|j| b.has_module(&format!("blocks.{j}")))
        .count()
}

/// The stage's `conv_down`: a strided (or first-dilated) 3x3 `ConvNormAct`, or with `avg_down`
/// a 2x2 average pool (module `0`, when striding) and a 1x1 `ConvNormAct` (module `1`).
fn conv_down(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    st: &Stage,
    ctx: &Ctx,
) -> Result<(Value, usize)> {
    let a = Some(ctx.act);
    let d = &mut b.scope("conv_down");
    if st.avg_down {
        // timm: `ConvNormAct(in_chs, out_chs, 1, groups=groups)` after the pool.
        let pooled = if st.stride == 2 {
            Pool2d::new(2, 2, 0).avg(d, x, in_ch)?
        } else {
            x.clone()
        };
        let w = st.out_chs;
        cna(&mut d.scope(1), &pooled, in_ch, w, 1, 1, 1, st.groups, a)
    } else {
        let (s, dil, g) = (st.stride, st.first_dilation, st.groups);
        cna(d, x, in_ch, out_ch, 3, s, dil, g, a)
    }
}

/// timm's `DarkStage`: `conv_down`, then the blocks. Returns the output and its width.
fn dark_stage(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    st: &Stage,
    ctx: &Ctx,
) -> Result<(Value, usize)> {
    let (mut x, mut prev) = conv_down(b, x, in_ch, st.out_chs, st, ctx)?;
    let block_out = py_round(st.out_chs as f64 * st.block_ratio) as usize;
    for j in 0..depth(b, st.depth) {
        (x, prev) = block(
            &mut b.scope("blocks").scope(j),
            &x,
            prev,
            block_out,
            st,
            ctx,
        )?;
    }
    Ok((x, prev))
}

/// timm's `CrossStage` (`csp`) and `CrossStage3` (`cs3`): optional `conv_down`, `conv_exp`
/// split in two halves, blocks on one half, and the transition convs over both. Returns the
/// output and its width.
fn cross_stage(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    st: &Stage,
    ctx: &Ctx,
) -> Result<(Value, usize)> {
    let a = Some(ctx.act);
    let down_chs = if st.down_growth { st.out_chs } else { in_ch };
    let (x, prev) = if st.stride != 1 || st.first_dilation != st.dilation {
        conv_down(b, x, in_ch, down_chs, st, ctx)?
    } else {
        (x.clone(), in_ch)
    };
    let exp = py_round(st.out_chs as f64 * st.expand_ratio) as usize;
    let exp_act = if st.cross_linear { None } else { a };
    let (x, exp) = cna(&mut b.scope("conv_exp"), &x, prev, exp, 1, 1, 1, 1, exp_act)?;
    if exp % 2 != 0 {
        return Err(Error::invalid_model(format!(
            "`{}`: conv_exp gives {exp} channels, which timm splits in two halves",
            b.key("conv_exp")
        )));
    }
    let half = exp / 2;
    let parts = layers::split(b, &x, 1, &[half, half]);
    // CrossStage runs the blocks on the second half, CrossStage3 on the first.
    let (kept, run) = match st.stage_type {
        StageType::Cs3 => (&parts[1], &parts[0]),
        _ => (&parts[0], &parts[1]),
    };
    let block_out = py_round(st.out_chs as f64 * st.block_ratio) as usize;
    let (mut y, mut prev) = (run.clone(), half);
    for j in 0..depth(b, st.depth) {
        (y, prev) = block(
            &mut b.scope("blocks").scope(j),
            &y,
            prev,
            block_out,
            st,
            ctx,
        )?;
    }
    let cat = match st.stage_type {
        StageType::Cs3 => layers::concat(b, &[&y, kept], 1),
        _ => {
            let (y, _) = {
                let t = &mut b.scope("conv_transition_b");
                cna(t, &y, prev, half, 1, 1, 1, 1, a)?
            };
            layers::concat(b, &[kept, &y], 1)
        }
    };
    let t = &mut b.scope("conv_transition");
    cna(t, &cat, exp, st.out_chs, 1, 1, 1, 1, a)
}

/// One block (`BottleneckBlock`, `DarkBlock` or `EdgeBlock`) with its residual; returns the
/// output and its width.
fn block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    st: &Stage,
    ctx: &Ctx,
) -> Result<(Value, usize)> {
    let a = Some(ctx.act);
    let mid = py_round(out_ch as f64 * st.bottle_ratio) as usize;
    let (d, g) = (st.dilation, st.groups);
    let (y, out) = match st.block_type {
        BlockType::Bottle => {
            let (y, mid) = cna(&mut b.scope("conv1"), x, in_ch, mid, 1, 1, 1, 1, a)?;
            let (y, mid) = cna(&mut b.scope("conv2"), &y, mid, mid, 3, 1, d, g, a)?;
            let y = se(&mut b.scope("attn2"), &y, mid, st, ctx)?;
            cna(&mut b.scope("conv3"), &y, mid, out_ch, 1, 1, 1, 1, None)?
        }
        BlockType::Dark => {
            let (y, mid) = cna(&mut b.scope("conv1"), x, in_ch, mid, 1, 1, 1, 1, a)?;
            let y = se(&mut b.scope("attn"), &y, mid, st, ctx)?;
            cna(&mut b.scope("conv2"), &y, mid, out_ch, 3, 1, d, g, a)?
        }
        BlockType::Edge => {
            let (y, mid) = cna(&mut b.scope("conv1"), x, in_ch, mid, 3, 1, d, g, a)?;
            let y = se(&mut b.scope("attn"), &y, mid, st, ctx)?;
            cna(&mut b.scope("conv2"), &y, mid, out_ch, 1, 1, 1, 1, a)?
        }
    };
    // The residual needs the block to keep its width, as every timm config has it.
    if out != in_ch {
        return Err(Error::invalid_model(format!(
            "CSPNet block `{}`: {in_ch} -> {out} channels cannot add its shortcut",
            b.path()
        )));
    }
    let y = layers::add(b, &y, x);
    let y = match st.block_type {
        BlockType::Bottle => act(b, ctx.act, &y)?,
        _ => y,
    };
    Ok((y, out))
}

/// The stage's `attn_layer` (timm's `SEModule` with the block's activation), if any.
fn se(b: &mut Builder, x: &Value, ch: usize, st: &Stage, ctx: &Ctx) -> Result<Value> {
    let Some(ratio) = st.se_ratio else {
        return Ok(x.clone());
    };
    let rd = b
        .weight_shape("fc1.weight")
        .map_or_else(|| rd_channels(ch, ratio, 8), |s| s[0]);
    SqueezeExcite::se_module(ch, rd)
        .act(ctx.act)
        .init(Init::KaimingFanOut)
        .apply(b, x)
}
