//! HRNet (timm's `hrnet.py`): `hrnet_w18_small[_v2]`, `hrnet_w18` .. `hrnet_w64` and the
//! `_ssld` variants (bias-free head convs). Parallel branches at strides 4, 8, 16, 32, fused
//! after every `HighResolutionModule` (1x1 conv + nearest upsampling from the lower branches,
//! strided 3x3 convs from the higher ones); the classification head widens each branch with a
//! Bottleneck (`incre_modules`), folds them down stride by stride (`downsamp_modules`) and ends in
//! a 1x1 conv to `num_features` (`final_layer`).
//!
//! timm hard-codes the head's widths (32, 64, 128, 256 planes; 2048 features); with weights they
//! are read from them. `features_only` follows `HighResolutionNetFeatures` with its default
//! `feature_location='incre'`: the stem's first conv (stride 2), then each branch after its
//! `incre_modules` Bottleneck.

use serde_json::{Map, Value as Json};

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::upsample::upsample_nearest;
use crate::graph::layers::{act, add, conv_bn, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/hrnet.json"));

pub const FAMILY: Family = Family {
    name: "hrnet",
    examples: "hrnet_w18_small, hrnet_w18_small_v2, hrnet_w18, hrnet_w30, hrnet_w32, hrnet_w40, hrnet_w44, hrnet_w48, hrnet_w64, hrnet_w18_ssld, hrnet_w48_ssld",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `HighResolutionNet.__init__` with its `cfg` keys overlaid (`dict(cfg, **kwargs)`).
    struct HrnetArgs {
        stem_width: usize = 64,
        stage1: Json = Json::Null,
        stage2: Json = Json::Null,
        stage3: Json = Json::Null,
        stage4: Json = Json::Null,
        head_conv_bias: bool = true,
        head: String = "classification".into(),
        output_stride: usize = 32,
    }
}

timm_args! {
    /// One `stageN` dict of timm's `cfg_cls`.
    struct StageCfg {
        num_modules: usize = 1,
        num_branches: usize = 1,
        block_type: String = String::new(),
        num_blocks: Vec<usize> = vec![],
        num_channels: Vec<usize> = vec![],
        /// timm's forward always sums; the value is never used.
        #[allow(dead_code)]
        fuse_method: String = "SUM".into(),
    }
}

const EPS: f32 = 1e-5;
/// `_make_head`'s `head_channels` and `num_features` (timm's constants).
const HEAD_CHANNELS: [usize; 4] = [32, 64, 128, 256];
const HEAD_FEATURES: usize = 2048;

/// timm's `BasicBlock` / `Bottleneck` (from `resnet.py`) with their `expansion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Basic,
    Bottleneck,
}

impl Block {
    fn expansion(self) -> usize {
        match self {
            Block::Basic => 1,
            Block::Bottleneck => 4,
        }
    }
}

/// One stage's cfg, checked as `HighResolutionModule._check_branches` does.
struct Stage {
    num_modules: usize,
    block: Block,
    num_blocks: Vec<usize>,
    num_channels: Vec<usize>,
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = HrnetArgs::read(&a)?;
    if r.output_stride != 32 || b.output_stride().is_some_and(|os| os != 32) {
        return Err(Error::unsupported(
            "HRNet has no dilated form: timm asserts output_stride == 32",
        ));
    }
    if r.head != "classification" {
        return Err(a.unsupported(
            "head",
            "only the classification head gives timm's logits (the others return branch lists)",
        ));
    }
    let stages: Vec<Stage> = [&r.stage1, &r.stage2, &r.stage3, &r.stage4]
        .iter()
        .enumerate()
        .map(|(i, v)| stage_cfg(&a, &format!("stage{}", i + 1), v, i == 0))
        .collect::<Result<_>>()?;
    if stages[3].num_channels.len() != 4 {
        return Err(a.unsupported(
            "stage4",
            "timm's head (incre_modules, downsamp_modules, final_layer) needs 4 branches",
        ));
    }
    let in_ch = cfg.pretrained_cfg.input_size[0];

    // Stem: two stride-2 3x3 convs; timm's stride-2 feature is the first one.
    let x = b.input();
    let c = Conv::new(in_ch, r.stem_width, 3).stride(2);
    let x = conv_bn(b, &x, "conv1", "bn1", c, EPS)?;
    let x = act(b, "relu", &x)?;
    b.feature(&x, r.stem_width, 2, "stem");
    let c = Conv::new(r.stem_width, 64, 3).stride(2);
    let x = conv_bn(b, &x, "conv2", "bn2", c, EPS)?;
    let x = act(b, "relu", &x)?;

    // layer1: stage1's first branch as a plain stack of blocks.
    let s1 = &stages[0];
    let (mut x, mut ch) = (x, 64);
    for k in 0..s1.num_blocks[0] {
        (x, ch) = block(
            &mut b.scope("layer1").scope(k),
            &x,
            ch,
            s1.num_channels[0],
            s1.block,
        )?;
    }

    // stage2..4, each after its transition from the previous stage's branches.
    let (mut yl, mut pre) = (vec![x], vec![ch]);
    for (t, st) in stages.iter().enumerate().skip(1) {
        let cur: Vec<usize> = st
            .num_channels
            .iter()
            .map(|c| c * st.block.expansion())
            .collect();
        let xl = transition(&mut b.scope(format!("transition{t}")), &yl, &pre, &cur)?;
        let mut chs = cur;
        let mut xs = xl;
        for m in 0..st.num_modules {
            xs = hr_module(
                &mut b.scope(format!("stage{}", t + 1)).scope(m),
                xs,
                &mut chs,
                st,
            )?;
        }
        (yl, pre) = (xs, chs);
    }

    // The head's Bottlenecks on every branch (timm's incre features).
    let head_planes: Vec<usize> = (0..4)
        .map(|i| {
            b.weight_shape(&format!("incre_modules.{i}.0.conv1.weight"))
                .map_or(HEAD_CHANNELS[i], |s| s[0])
        })
        .collect();
    let mut incre = Vec::with_capacity(4);
    for (i, y) in yl.iter().enumerate() {
        let s = &mut b.scope(format!("incre_modules.{i}.0"));
        let (v, c) = block(s, y, pre[i], head_planes[i], Block::Bottleneck)?;
        s.feature(&v, c, 4 << i, &format!("stage{}", i + 1));
        incre.push((v, c));
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok(incre[3].clone());
    }

    // downsamp_modules fold the widened branches from the highest resolution down.
    let (mut y, mut ch) = incre[0].clone();
    for (i, (v, c)) in incre.iter().enumerate().skip(1) {
        let s = &mut b.scope(format!("downsamp_modules.{}", i - 1));
        let conv = Conv::new(ch, *c, 3).stride(2).bias(r.head_conv_bias);
        let d = conv_bn_relu(s, &y, conv, true)?;
        y = add(s, v, &d);
        ch = *c;
    }
    let features = b
        .weight_shape("final_layer.0.weight")
        .map_or(HEAD_FEATURES, |s| s[0]);
    let conv = Conv::new(ch, features, 1).bias(r.head_conv_bias);
    let y = conv_bn_relu(&mut b.scope("final_layer"), &y, conv, true)?;
    head(b, cfg, &y, features)
}

/// A `stageN` dict read with its own typed reader (every key it holds is read), checked as
/// `_check_branches` does; `stage1` only needs its first branch (`layer1`).
fn stage_cfg(a: &Args, key: &str, v: &Json, first: bool) -> Result<Stage> {
    let map: &Map<String, Json> = v
        .as_object()
        .ok_or_else(|| a.unsupported(key, "the native graph reads a stage cfg dict here"))?;
    let s = StageCfg::read(&Args::new(
        &format!("{} {key}", a.arch()),
        Some(map),
        &Map::new(),
    ))?;
    let block = match s.block_type.as_str() {
        "BASIC" => Block::Basic,
        "BOTTLENECK" => Block::Bottleneck,
        other => {
            return Err(Error::invalid_model(format!(
                "`{}` {key}: block_type '{other}' is not one of timm's (BASIC, BOTTLENECK)",
                a.arch()
            )))
        }
    };
    let n = s.num_branches;
    let bad = if first {
        s.num_blocks.is_empty() || s.num_channels.is_empty()
    } else {
        n == 0 || s.num_blocks.len() != n || s.num_channels.len() != n
    };
    if bad || s.num_channels.contains(&0) {
        return Err(Error::invalid_model(format!(
            "`{}` {key}: num_branches {n}, num_blocks {:?} and num_channels {:?} do not agree",
            a.arch(),
            s.num_blocks,
            s.num_channels
        )));
    }
    Ok(Stage {
        num_modules: s.num_modules,
        block,
        num_blocks: s.num_blocks,
        num_channels: s.num_channels,
    })
}

/// A Sequential conv + BatchNorm (`0`, `1` in the scope; folded) + optional ReLU.
fn conv_bn_relu(b: &mut Builder, x: &Value, c: Conv, relu: bool) -> Result<Value> {
    let y = conv_bn(b, x, "0", "1", c, EPS)?;
    if relu {
        act(b, "relu", &y)
    } else {
        Ok(y)
    }
}

/// timm's `BasicBlock` / `Bottleneck` at stride 1 (every HRNet block), with the 1x1 conv +
/// BatchNorm `downsample` shortcut when the width changes. Returns the output and its width.
fn block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    planes: usize,
    kind: Block,
) -> Result<(Value, usize)> {
    let out = planes * kind.expansion();
    let shortcut = if in_ch != out {
        let c = Conv::new(in_ch, out, 1);
        conv_bn(b, x, "downsample.0", "downsample.1", c, EPS)?
    } else {
        x.clone()
    };
    let y = match kind {
        Block::Basic => {
            let y = conv_bn(b, x, "conv1", "bn1", Conv::new(in_ch, planes, 3), EPS)?;
            let y = act(b, "relu", &y)?;
            conv_bn(b, &y, "conv2", "bn2", Conv::new(planes, out, 3), EPS)?
        }
        Block::Bottleneck => {
            let y = conv_bn(b, x, "conv1", "bn1", Conv::new(in_ch, planes, 1), EPS)?;
            let y = act(b, "relu", &y)?;
            let y = conv_bn(b, &y, "conv2", "bn2", Conv::new(planes, planes, 3), EPS)?;
            let y = act(b, "relu", &y)?;
            conv_bn(b, &y, "conv3", "bn3", Conv::new(planes, out, 1), EPS)?
        }
    };
    let y = add(b, &y, &shortcut);
    Ok((act(b, "relu", &y)?, out))
}

/// `_make_transition_layer` applied as `HighResolutionNet.stages` does: a branch keeps its
/// input (`Identity`) or gets a 3x3 conv when its width changes; each new branch is a chain of
/// strided 3x3 convs. timm feeds every non-identity transition the last branch (`yl[-1]`).
fn transition(b: &mut Builder, yl: &[Value], pre: &[usize], cur: &[usize]) -> Result<Vec<Value>> {
    let last = pre.len() - 1;
    let mut out = Vec::with_capacity(cur.len());
    for (i, &c) in cur.iter().enumerate() {
        if i < pre.len() {
            if c == pre[i] {
                out.push(yl[i].clone());
                continue;
            }
            if i != last {
                return Err(Error::invalid_model(format!(
                    "HRNet `{}`: branch {i} changes width ({} -> {c}) but timm feeds its transition the last branch",
                    b.path(),
                    pre[i]
                )));
            }
            let conv = Conv::new(pre[i], c, 3);
            out.push(conv_bn_relu(&mut b.scope(i), &yl[last], conv, true)?);
        } else {
            let mut y = yl[last].clone();
            let n = i + 1 - pre.len();
            for j in 0..n {
                let o = if j + 1 == n { c } else { pre[last] };
                let conv = Conv::new(pre[last], o, 3).stride(2);
                y = conv_bn_relu(&mut b.scope(i).scope(j), &y, conv, true)?;
            }
            out.push(y);
        }
    }
    Ok(out)
}

/// `HighResolutionModule`: every branch's blocks, then (with more than one branch) each output
/// is the ReLU of the sum over all branches brought to its resolution and width.
fn hr_module(
    b: &mut Builder,
    mut xs: Vec<Value>,
    chs: &mut [usize],
    st: &Stage,
) -> Result<Vec<Value>> {
    for (i, x) in xs.iter_mut().enumerate() {
        for k in 0..st.num_blocks[i] {
            let s = &mut b.scope(format!("branches.{i}.{k}"));
            (*x, chs[i]) = block(s, x, chs[i], st.num_channels[i], st.block)?;
        }
    }
    let n = xs.len();
    if n == 1 {
        return Ok(xs);
    }
    let mut fused = Vec::with_capacity(n);
    for i in 0..n {
        let mut y: Option<Value> = None;
        for j in 0..n {
            let f = &mut b.scope(format!("fuse_layers.{i}.{j}"));
            let t = if j > i {
                let t = conv_bn(f, &xs[j], "0", "1", Conv::new(chs[j], chs[i], 1), EPS)?;
                upsample_nearest(f, &t, 1 << (j - i), chs[i])?
            } else if j == i {
                xs[j].clone()
            } else {
                let mut t = xs[j].clone();
                for k in 0..i - j {
                    let lastk = k + 1 == i - j;
                    let o = if lastk { chs[i] } else { chs[j] };
                    let conv = Conv::new(chs[j], o, 3).stride(2);
                    t = conv_bn_relu(&mut f.scope(k), &t, conv, !lastk)?;
                }
                t
            };
            y = Some(match y {
                None => t,
                Some(acc) => add(f, &acc, &t),
            });
        }
        let y = y.ok_or_else(|| Error::invalid_model("HRNet module without branches"))?;
        fused.push(act(b, "relu", &y)?);
    }
    Ok(fused)
}

/// `create_classifier`: global pool, `classifier` Linear (PyTorch's default init).
fn head(b: &mut Builder, cfg: &ModelConfig, x: &Value, ch: usize) -> Result<(Value, usize)> {
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native HRNet graph",
        ));
    }
    let pooled = global_pool(b, x, pool);
    let width = ch * pool.multiplier();
    if b.output() == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let s = &mut b.scope("classifier");
    let logits = linear_2d(
        s,
        &pooled,
        width,
        cfg.num_classes,
        true,
        Init::DefaultUniform,
    )?;
    Ok((logits, cfg.num_classes))
}
