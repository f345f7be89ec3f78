//! DenseNet (timm's `densenet.py`): `densenet121` / `161` / `169` / `201`, the deep-stem
//! `densenet264d` and `densenetblur121d` (3x3 deep stem, BlurPool2d after the stem's max pool).
//!
//! Dense layers are pre-activation (`norm1` → relu → `conv1`): those BatchNorms stay
//! BatchNormalization nodes; the ones right after a conv (`norm0..2` of the stem, `norm2` after
//! `conv1`) are folded into it.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::mlp::linear_2d;
use crate::graph::layers::pool::{blur_pool2d, global_pool, Pool2d, PoolKind};
use crate::graph::layers::{act, batch_norm, concat, conv2d, conv_bn, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/densenet.json"));

pub const FAMILY: Family = Family {
    name: "densenet",
    examples: "densenet121, densenet161, densenet169, densenet201, densenet264d, densenetblur121d",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `DenseNet.__init__`, timm's defaults.
    struct DenseNetArgs {
        growth_rate: usize = 32,
        block_config: Vec<usize> = vec![6, 12, 24, 16],
        bn_size: usize = 4,
        stem_type: String = String::new(),
        act_layer: String = "relu".into(),
        norm_layer: String = "batchnorm2d".into(),
        aa_layer: Option<String> = None,
        aa_stem_only: bool = true,
        /// Gradient checkpointing: training only, no effect on the graph.
        #[allow(dead_code)]
        memory_efficient: bool = false,
    }
}

const EPS: f32 = 1e-5;

/// The official torchvision init timm keeps: `kaiming_normal_` (fan_in, relu gain).
fn kaiming(c: Conv) -> Conv {
    let fan_in = c.in_ch / c.groups * c.kernel.0 * c.kernel.1;
    c.init(Init::Normal((2.0 / fan_in as f64).sqrt() as f32))
}

/// `BatchNormAct2d` on a value not produced by a conv (pre-activation).
fn norm_act(b: &mut Builder, x: &Value, ch: usize, a: &str) -> Result<Value> {
    let y = batch_norm(b, x, ch, EPS)?;
    act(b, a, &y)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let arch = cfg.architecture.as_str();
    let a = Args::new(arch, TABLE.get(arch).map(|e| &e.args), &cfg.model_args);
    let r = DenseNetArgs::read(&a)?;
    if !matches!(Norm::from_timm(&r.norm_layer, None), Ok(Norm::Batch { .. })) {
        return Err(a.unsupported("norm_layer", "DenseNet supports batchnorm only"));
    }
    let blur = match r.aa_layer.as_deref() {
        None => false,
        Some("blurpool2d" | "blurpool") => true,
        Some(_) => return Err(a.unsupported("aa_layer", "DenseNet supports BlurPool2d only")),
    };
    if blur && !r.aa_stem_only {
        return Err(a.unsupported(
            "aa_stem_only",
            "blur-pooled transitions are not supported by the native DenseNet",
        ));
    }
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let (x, ch) = features(&mut b.scope("features"), in_ch, &r, blur)?;
    if b.output() == OutputKind::FeatureMaps {
        return Ok((x, ch));
    }
    head(b, cfg, &x, ch)
}

/// The `features` Sequential: stem, dense blocks and transitions, `norm5`.
fn features(f: &mut Builder, in_ch: usize, r: &DenseNetArgs, blur: bool) -> Result<(Value, usize)> {
    let act_name = r.act_layer.as_str();
    let g = r.growth_rate;
    let init_features = 2 * g;

    // Stem: conv0/norm0 (7x7 s2) or the deep 3x3 stem, then the max pool (and blur).
    let deep = r.stem_type.contains("deep");
    let mut x = f.input();
    let stem_norm = if deep {
        let (mut c1, mut c2) = (g, g);
        if r.stem_type.contains("tiered") {
            c1 = 3 * (g / 4);
            c2 = if r.stem_type.contains("narrow") {
                init_features
            } else {
                6 * (g / 4)
            };
        }
        let convs = [(in_ch, c1, 2), (c1, c2, 1), (c2, init_features, 1)];
        for (i, (ci, co, s)) in convs.into_iter().enumerate() {
            let c = kaiming(Conv::new(ci, co, 3).stride(s));
            x = conv_bn(f, &x, &format!("conv{i}"), &format!("norm{i}"), c, EPS)?;
            x = act(f, act_name, &x)?;
        }
        "features.norm2"
    } else {
        let c = kaiming(Conv::new(in_ch, init_features, 7).stride(2));
        x = conv_bn(f, &x, "conv0", "norm0", c, EPS)?;
        x = act(f, act_name, &x)?;
        "features.norm0"
    };
    f.feature(&x, init_features, 2, stem_norm);
    x = if blur {
        let p = Pool2d::new(3, 1, 1).max(f, &x, init_features)?;
        blur_pool2d(
            &mut f.scope("pool0").scope(1),
            &p,
            init_features,
            3,
            2,
            true,
        )?
    } else {
        Pool2d::new(3, 2, 1).max(f, &x, init_features)?
    };

    let mut ch = init_features;
    let mut stride = 4;
    let n_blocks = r.block_config.len();
    for (i, &layers) in r.block_config.iter().enumerate() {
        let name = format!("denseblock{}", i + 1);
        x = dense_block(&mut f.scope(&name), &x, ch, layers, r)?;
        ch += layers * g;
        if i + 1 != n_blocks {
            f.feature(&x, ch, stride, &format!("features.{name}"));
            stride *= 2;
            x = transition(
                &mut f.scope(format!("transition{}", i + 1)),
                &x,
                ch,
                act_name,
            )?;
            ch /= 2;
        }
    }
    x = norm_act(&mut f.scope("norm5"), &x, ch, act_name)?;
    f.feature(&x, ch, stride, "features.norm5");
    Ok((x, ch))
}

/// `DenseBlock`: each `denselayer<j>` sees the concatenation of the block input and every
/// earlier layer's output; the block returns the concatenation of all.
fn dense_block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    layers: usize,
    r: &DenseNetArgs,
) -> Result<Value> {
    let mut feats = vec![x.clone()];
    for j in 0..layers {
        let cat = if feats.len() == 1 {
            feats[0].clone()
        } else {
            concat(b, &feats.iter().collect::<Vec<_>>(), 1)
        };
        let c = in_ch + j * r.growth_rate;
        let y = dense_layer(&mut b.scope(format!("denselayer{}", j + 1)), &cat, c, r)?;
        feats.push(y);
    }
    Ok(concat(b, &feats.iter().collect::<Vec<_>>(), 1))
}

/// `DenseLayer`: norm1 → act → conv1 (1x1) → norm2 (folded) → act → conv2 (3x3).
fn dense_layer(b: &mut Builder, x: &Value, in_ch: usize, r: &DenseNetArgs) -> Result<Value> {
    let a = r.act_layer.as_str();
    let mid = r.bn_size * r.growth_rate;
    let y = norm_act(&mut b.scope("norm1"), x, in_ch, a)?;
    let y = conv_bn(
        b,
        &y,
        "conv1",
        "norm2",
        kaiming(Conv::new(in_ch, mid, 1)),
        EPS,
    )?;
    let y = act(b, a, &y)?;
    conv2d(
        &mut b.scope("conv2"),
        &y,
        kaiming(Conv::new(mid, r.growth_rate, 3)),
    )
}

/// `DenseTransition`: norm → act → 1x1 conv halving the channels → AvgPool2d(2, 2).
fn transition(b: &mut Builder, x: &Value, ch: usize, a: &str) -> Result<Value> {
    let y = norm_act(&mut b.scope("norm"), x, ch, a)?;
    let y = conv2d(&mut b.scope("conv"), &y, kaiming(Conv::new(ch, ch / 2, 1)))?;
    Pool2d::new(2, 2, 0).avg(b, &y, ch / 2)
}

/// `create_classifier`: global pool, `classifier` Linear.
fn head(b: &mut Builder, cfg: &ModelConfig, x: &Value, ch: usize) -> Result<(Value, usize)> {
    let pool_name = cfg.global_pool.as_deref().unwrap_or("avg");
    let pool = PoolKind::from_timm(pool_name)?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(
            "global_pool '' (unpooled features) is not supported by the native DenseNet graph",
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
