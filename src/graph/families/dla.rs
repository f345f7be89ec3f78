//! Deep Layer Aggregation (timm's `dla.py`): `dla34` .. `dla169`, the ResNeXt-style `dla*x*` and
//! the Res2Net-style `dla60_res2net` / `dla60_res2next`.
//!
//! `level2` .. `level5` are `DlaTree`s: a tree of depth `levels` whose leaves are two blocks
//! and whose roots (`DlaRoot`, a 1x1 conv over the concatenated children) aggregate the blocks
//! and the (max-pooled) input of each `level_root` level. timm's DLA has no dilated form
//! (`output_stride` 32 only) and classifies with a 1x1 conv (`fc`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::classifier::conv_classifier;
use crate::graph::layers::pool::{Pool2d, PoolKind};
use crate::graph::layers::{act, add, concat, conv_bn, split, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/dla.json"));

pub const FAMILY: Family = Family {
    name: "dla",
    examples: "dla34, dla46_c, dla46x_c, dla60[x][_c], dla102[x|x2], dla169, dla60_res2net, dla60_res2next",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `DLA.__init__`, timm's defaults (the entrypoints pass `levels`, `channels`, `block`, ...).
    struct DlaArgs {
        levels: Vec<usize> = vec![],
        channels: Vec<usize> = vec![],
        output_stride: usize = 32,
        cardinality: usize = 1,
        base_width: usize = 64,
        block: String = "dlabottle2neck".into(),
        shortcut_root: bool = false,
    }
}

const EPS: f32 = 1e-5;

/// timm's `DlaBasic`, `DlaBottleneck` and `DlaBottle2neck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Basic,
    Bottleneck,
    Bottle2neck,
}

/// What every block and root of the network shares.
struct Ctx {
    block: Block,
    cardinality: usize,
    base_width: usize,
    shortcut_root: bool,
}

/// DLA's init: `normal(0, sqrt(2 / (k·k·out_channels)))` for every conv.
fn conv(in_ch: usize, out_ch: usize, k: usize) -> Conv {
    Conv::new(in_ch, out_ch, k).init(Init::KaimingFanOut)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = DlaArgs::read(&a)?;
    if r.output_stride != 32 {
        return Err(a.unsupported("output_stride", "timm's DLA has output stride 32 only"));
    }
    let block = match r.block.as_str() {
        "dlabasic" => Block::Basic,
        "dlabottleneck" => Block::Bottleneck,
        "dlabottle2neck" => Block::Bottle2neck,
        _ => {
            return Err(a.unsupported(
                "block",
                "DLA blocks are dlabasic, dlabottleneck or dlabottle2neck",
            ))
        }
    };
    let (lv, ch) = (&r.levels, &r.channels);
    if lv.len() != 6 || ch.len() != 6 || ch.contains(&0) || lv[2..].contains(&0) {
        return Err(Error::invalid_model(format!(
            "`{arch}`: DLA needs six levels and six non-zero channel counts (got {lv:?}, {ch:?})"
        )));
    }
    if r.cardinality == 0 {
        return Err(Error::invalid_model(format!("`{arch}`: cardinality 0")));
    }
    let ctx = Ctx {
        block,
        cardinality: r.cardinality,
        base_width: r.base_width,
        shortcut_root: r.shortcut_root,
    };
    b.default_out_indices(&[1, 2, 3, 4, 5]);

    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let x = {
        let s = &mut b.scope("base_layer");
        let y = conv_bn(s, &input, "0", "1", conv(in_ch, ch[0], 7), EPS)?;
        act(s, "relu", &y)?
    };
    let x = conv_level(&mut b.scope("level0"), &x, ch[0], ch[0], lv[0], 1)?;
    b.feature(&x, ch[0], 1, "level0");
    let mut x = conv_level(&mut b.scope("level1"), &x, ch[0], ch[1], lv[1], 2)?;
    b.feature(&x, ch[1], 2, "level1");
    for i in 2..6 {
        let name = format!("level{i}");
        x = tree(
            &mut b.scope(&name),
            &x,
            lv[i],
            ch[i - 1],
            ch[i],
            2,
            i > 2,
            0,
            &mut Vec::new(),
            &ctx,
        )?;
        b.feature(&x, ch[i], 1 << i, &name);
    }
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, ch[5]));
    }
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or("avg"))?;
    let features = b.output() == OutputKind::Features;
    conv_classifier(
        b,
        &x,
        ch[5],
        pool,
        "fc",
        cfg.num_classes,
        features,
        Init::KaimingFanOut,
    )
}

/// `_make_conv_level`: `convs` × (3x3 conv, BatchNorm, relu), the first with `stride`.
fn conv_level(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    convs: usize,
    stride: usize,
) -> Result<Value> {
    let (mut x, mut prev) = (x.clone(), in_ch);
    for i in 0..convs {
        let c = conv(prev, out_ch, 3).stride(if i == 0 { stride } else { 1 });
        x = conv_bn(
            b,
            &x,
            &(3 * i).to_string(),
            &(3 * i + 1).to_string(),
            c,
            EPS,
        )?;
        x = act(b, "relu", &x)?;
        prev = out_ch;
    }
    Ok(x)
}

/// `DlaTree.forward`: `children` is the list the parent tree hands down (and this one appends
/// to); `root_dim` 0 means `2 * out_ch`.
#[allow(clippy::too_many_arguments)]
fn tree(
    b: &mut Builder,
    x: &Value,
    levels: usize,
    in_ch: usize,
    out_ch: usize,
    stride: usize,
    level_root: bool,
    root_dim: usize,
    children: &mut Vec<(Value, usize)>,
    ctx: &Ctx,
) -> Result<Value> {
    let mut root_dim = if root_dim == 0 { 2 * out_ch } else { root_dim };
    if level_root {
        root_dim += in_ch;
    }
    let bottom = if stride > 1 {
        Pool2d::new(stride, stride, 0).max(b, x, in_ch)?
    } else {
        x.clone()
    };
    if level_root {
        children.push((bottom.clone(), in_ch));
    }
    if levels == 1 {
        let shortcut = if in_ch != out_ch {
            let c = conv(in_ch, out_ch, 1);
            conv_bn(&mut b.scope("project"), &bottom, "0", "1", c, EPS)?
        } else {
            bottom
        };
        let x1 = block(
            &mut b.scope("tree1"),
            x,
            &shortcut,
            in_ch,
            out_ch,
            stride,
            ctx,
        )?;
        let x2 = block(&mut b.scope("tree2"), &x1, &x1, out_ch, out_ch, 1, ctx)?;
        let mut parts: Vec<&Value> = vec![&x2, &x1];
        parts.extend(children.iter().map(|(v, _)| v));
        let got: usize = 2 * out_ch + children.iter().map(|(_, c)| c).sum::<usize>();
        if got != root_dim {
            return Err(Error::invalid_model(format!(
                "DLA root `{}`: {got} channels where timm's tree has {root_dim}",
                b.key("root")
            )));
        }
        let cat = concat(b, &parts, 1);
        let s = &mut b.scope("root");
        let y = conv_bn(s, &cat, "conv", "bn", conv(root_dim, out_ch, 1), EPS)?;
        let y = if ctx.shortcut_root {
            add(s, &y, &x2)
        } else {
            y
        };
        return act(s, "relu", &y);
    }
    let x1 = tree(
        &mut b.scope("tree1"),
        x,
        levels - 1,
        in_ch,
        out_ch,
        stride,
        false,
        0,
        &mut Vec::new(),
        ctx,
    )?;
    children.push((x1.clone(), out_ch));
    tree(
        &mut b.scope("tree2"),
        &x1,
        levels - 1,
        out_ch,
        out_ch,
        1,
        false,
        root_dim + out_ch,
        children,
        ctx,
    )
}

/// One block with its residual (`shortcut` is the block input unless the tree projects).
fn block(
    b: &mut Builder,
    x: &Value,
    shortcut: &Value,
    in_ch: usize,
    out_ch: usize,
    stride: usize,
    ctx: &Ctx,
) -> Result<Value> {
    let relu = |b: &mut Builder, v: &Value| act(b, "relu", v);
    // Bottleneck widths: `floor(out * base_width / 64) * cardinality // expansion (2)`.
    let mid =
        ((out_ch as f64 * (ctx.base_width as f64 / 64.0)).floor() as usize) * ctx.cardinality / 2;
    let g = ctx.cardinality;
    let y = match ctx.block {
        Block::Basic => {
            let y = conv_bn(
                b,
                x,
                "conv1",
                "bn1",
                conv(in_ch, out_ch, 3).stride(stride),
                EPS,
            )?;
            let y = relu(b, &y)?;
            conv_bn(b, &y, "conv2", "bn2", conv(out_ch, out_ch, 3), EPS)?
        }
        Block::Bottleneck => {
            check_groups(b, mid, g)?;
            let y = conv_bn(b, x, "conv1", "bn1", conv(in_ch, mid, 1), EPS)?;
            let y = relu(b, &y)?;
            let c = conv(mid, mid, 3).stride(stride).groups(g);
            let y = conv_bn(b, &y, "conv2", "bn2", c, EPS)?;
            let y = relu(b, &y)?;
            conv_bn(b, &y, "conv3", "bn3", conv(mid, out_ch, 1), EPS)?
        }
        Block::Bottle2neck => bottle2neck(b, x, in_ch, out_ch, mid, stride, g)?,
    };
    let y = add(b, &y, shortcut);
    relu(b, &y)
}

fn check_groups(b: &Builder, mid: usize, groups: usize) -> Result<()> {
    if mid == 0 || !mid.is_multiple_of(groups) {
        return Err(Error::invalid_model(format!(
            "DLA block `{}`: {mid} bottleneck channels do not split into {groups} groups",
            b.path()
        )));
    }
    Ok(())
}

/// `DlaBottle2neck` (scale 4): `conv1` to `4 · width`, three 3x3 convs over the splits (each
/// fed the previous output plus its split, unless the block strides), the last split kept (or
/// average-pooled when striding), `conv3` over the concatenation.
fn bottle2neck(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out_ch: usize,
    width: usize,
    stride: usize,
    groups: usize,
) -> Result<Value> {
    const SCALE: usize = 4;
    check_groups(b, width, groups)?;
    let is_first = stride > 1;
    let y = conv_bn(b, x, "conv1", "bn1", conv(in_ch, width * SCALE, 1), EPS)?;
    let y = act(b, "relu", &y)?;
    let spx = split(b, &y, 1, &[width; SCALE]);
    let mut spo = Vec::with_capacity(SCALE);
    let mut sp = spx[0].clone();
    for (i, part) in spx.iter().enumerate().take(SCALE - 1) {
        sp = if i == 0 || is_first {
            part.clone()
        } else {
            add(b, &sp, part)
        };
        let c = conv(width, width, 3).stride(stride).groups(groups);
        sp = conv_bn(b, &sp, &format!("convs.{i}"), &format!("bns.{i}"), c, EPS)?;
        sp = act(b, "relu", &sp)?;
        spo.push(sp.clone());
    }
    let last = if is_first {
        Pool2d::new(3, stride, 1).avg(b, &spx[SCALE - 1], width)?
    } else {
        spx[SCALE - 1].clone()
    };
    spo.push(last);
    let cat = concat(b, &spo.iter().collect::<Vec<_>>(), 1);
    conv_bn(b, &cat, "conv3", "bn3", conv(width * SCALE, out_ch, 1), EPS)
}
