//! RDNet (timm `rdnet.py`, "DenseNets Reloaded"): dense stages of ConvNeXt-like blocks.
//!
//! A patch (or overlapping two-conv) stem with LayerNorm2d; each later stage a transition
//! (LayerNorm2d, a 1×1 or 2×2 stride-2 conv compressing the width); in each stage `DenseBlock`s
//! that see the concatenation of the stage input and every earlier block's output and add
//! `growth_rate` channels: depthwise 7×7, LayerNorm2d, 1×1 up, act, 1×1 down (`BlockESE`: an
//! effective SE after it), times the layer scale `gamma`. The head is timm's
//! `NormMlpClassifierHead` (pool, LayerNorm2d, fc) or, with `head_norm_first`, `norm_pre` and a
//! `ClassifierHead`. Convolutional throughout: any input size.
//!
//! Feature maps: timm's `features_only` taps `dense_stages.<i>` of the stages before a
//! downsample and the last one (NCHW).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::heads::{classifier_head, norm_mlp_head};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::se::effective_se;
use crate::graph::layers::{self, act, conv2d, layer_norm_2d, Conv, Norm, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, OutputKind, Value};
use crate::timm_args;

static TABLE: Table = Table::new(include_str!("../tables/rdnet.json"));

/// The `rdnet` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "rdnet",
    examples: "rdnet_tiny, rdnet_small, rdnet_base, rdnet_large",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

timm_args! {
    /// `RDNet.__init__`'s keyword arguments with timm's defaults.
    pub struct RdNetArgs {
        in_chans: usize = 3,
        global_pool: String = "avg".into(),
        growth_rates: Vec<usize> = vec![64, 104, 128, 128, 128, 128, 224],
        num_blocks_list: Vec<usize> = vec![3; 7],
        block_type: Vec<String> = [vec!["Block".to_string(); 2], vec!["BlockESE".to_string(); 5]].concat(),
        is_downsample_block: Vec<Option<bool>> =
            vec![None, Some(true), Some(true), Some(false), Some(false), Some(false), Some(true)],
        bottleneck_width_ratio: f64 = 4.0,
        transition_compression_ratio: f64 = 0.5,
        ls_init_value: f64 = 1e-6,
        stem_type: String = "patch".into(),
        patch_size: usize = 4,
        num_init_features: usize = 64,
        head_norm_first: bool = false,
        conv_bias: bool = true,
        act_layer: String = "gelu".into(),
        norm_layer: String = "layernorm2d".into(),
        norm_eps: Option<f64> = None,
        device: Json = Json::Null,
        dtype: Json = Json::Null,
    }
}

#[derive(Debug, Clone)]
struct Stage {
    /// Transition (`i > 0`): the compressed width and whether it strides by 2.
    transition: Option<(usize, bool)>,
    growth: usize,
    blocks: usize,
    ese: bool,
    /// Whether timm's `feature_info` lists this stage, and its stride.
    tap: Option<usize>,
}

#[derive(Debug, Clone)]
struct Cfg {
    in_chans: usize,
    stem: String,
    patch: usize,
    init: usize,
    conv_bias: bool,
    stages: Vec<Stage>,
    bwr: f64,
    ls: bool,
    act: String,
    eps: f32,
    head_norm_first: bool,
    pool: PoolKind,
}

fn resolve(cfg: &ModelConfig) -> Result<Cfg> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not an RDNet architecture this build knows"
        ))
    })?;
    let a = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let v = RdNetArgs::read(&a)?;
    if v.norm_layer.to_ascii_lowercase().replace('_', "") != "layernorm2d" {
        return Err(a.unsupported("norm_layer", "only timm's LayerNorm2d is built natively"));
    }
    if !matches!(v.stem_type.as_str(), "patch" | "overlap" | "overlap_tiered") {
        return Err(a.unsupported(
            "stem_type",
            "timm takes 'patch', 'overlap' or 'overlap_tiered'",
        ));
    }
    let act = layers::act::canonical(&v.act_layer)
        .map_err(|_| a.unsupported("act_layer", "not an activation native graphs build"))?
        .to_string();
    let pool = PoolKind::from_timm(&v.global_pool)?;
    if pool == PoolKind::None {
        return Err(a.unsupported(
            "global_pool",
            "native graphs return one pooled vector per image",
        ));
    }
    if v.in_chans != cfg.pretrained_cfg.input_size[0] {
        return Err(Error::invalid_model(format!(
            "model_args in_chans {} but the pretrained cfg's input has {} channels",
            v.in_chans, cfg.pretrained_cfg.input_size[0]
        )));
    }
    let n = v.growth_rates.len();
    if n == 0
        || v.num_blocks_list.len() != n
        || v.is_downsample_block.len() != n
        || v.block_type.len() < n
    {
        return Err(Error::invalid_model(format!(
            "RDNet growth_rates ({n}), num_blocks_list ({}), is_downsample_block ({}) and block_type ({}) must have one entry per stage",
            v.num_blocks_list.len(),
            v.is_downsample_block.len(),
            v.block_type.len()
        )));
    }
    if v.patch_size == 0 || v.num_init_features == 0 {
        return Err(Error::invalid_model(
            "RDNet patch_size and num_init_features must be positive",
        ));
    }
    let mut stride = if v.stem_type == "patch" {
        v.patch_size
    } else {
        4
    };
    let mut features = v.num_init_features;
    let mut stages = Vec::with_capacity(n);
    let down = |i: usize| v.is_downsample_block[i].unwrap_or(false);
    for i in 0..n {
        let ese = match v.block_type[i].to_ascii_lowercase().trim() {
            "block" => false,
            "blockese" => true,
            _ => return Err(a.unsupported("block_type", "timm takes 'Block' or 'BlockESE'")),
        };
        let transition = if i > 0 {
            let c = (features as f64 * v.transition_compression_ratio / 8.0) as usize * 8;
            if c == 0 {
                return Err(Error::invalid_model(format!(
                    "RDNet stage {i}: the transition compresses {features} channels to none"
                )));
            }
            if down(i) {
                stride *= 2;
            }
            features = c;
            Some((c, down(i)))
        } else {
            None
        };
        features += v.num_blocks_list[i] * v.growth_rates[i];
        let tap = (i + 1 == n || down(i + 1)).then_some(stride);
        stages.push(Stage {
            transition,
            growth: v.growth_rates[i],
            blocks: v.num_blocks_list[i],
            ese,
            tap,
        });
    }
    Ok(Cfg {
        in_chans: v.in_chans,
        stem: v.stem_type,
        patch: v.patch_size,
        init: v.num_init_features,
        conv_bias: v.conv_bias,
        stages,
        bwr: v.bottleneck_width_ratio,
        ls: v.ls_init_value > 0.0,
        act,
        eps: v.norm_eps.unwrap_or(1e-6) as f32,
        head_norm_first: v.head_norm_first,
        pool,
    })
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let c = resolve(cfg)?;
    let input = b.input();
    let mut x = stem(&mut b.scope("stem"), &input, &c)?;
    let mut ch = c.init;
    for (i, st) in c.stages.iter().enumerate() {
        let mut ss = b.scope("dense_stages");
        let s = &mut ss.scope(i);
        let mut idx = 0;
        if let Some((out, strided)) = st.transition {
            x = layer_norm_2d(&mut s.scope(0), &x, ch, c.eps)?;
            let k = if strided { 2 } else { 1 };
            let conv = Conv::new(ch, out, k).stride(k).pad(Pad::Sym(0)).bias(true);
            x = conv2d(&mut s.scope(1), &x, conv)?;
            ch = out;
            idx = 2;
        }
        x = dense_stage(&mut s.scope(idx), &x, ch, st, &c)?;
        ch += st.blocks * st.growth;
        if let Some(r) = st.tap {
            s.feature(&x, ch, r, &format!("dense_stages.{i}"));
        }
    }
    // timm's feature_cfg: out_indices (0, 1, 2, 3) whatever the taps.
    b.default_out_indices(&[0, 1, 2, 3]);
    let features = b.output() == OutputKind::Features;
    let norm = Norm::Layer { eps: c.eps };
    if c.head_norm_first {
        let x = layer_norm_2d(&mut b.scope("norm_pre"), &x, ch, c.eps)?;
        classifier_head(
            &mut b.scope("head"),
            &x,
            ch,
            c.pool,
            cfg.num_classes,
            features,
        )
    } else {
        norm_mlp_head(
            &mut b.scope("head"),
            &x,
            ch,
            c.pool,
            &norm,
            None,
            "tanh",
            cfg.num_classes,
            features,
        )
    }
}

/// `stem`: a patch conv (`0`) and norm (`1`), or two 3×3 stride-2 convs (`0`, `1`) and norm (`2`).
fn stem(b: &mut Builder, x: &Value, c: &Cfg) -> Result<Value> {
    if c.stem == "patch" {
        let p = c.patch;
        let conv = Conv::new(c.in_chans, c.init, p)
            .stride(p)
            .pad(Pad::Sym(0))
            .bias(c.conv_bias);
        let y = conv2d(&mut b.scope(0), x, conv)?;
        return layer_norm_2d(&mut b.scope(1), &y, c.init, c.eps);
    }
    let mid = if c.stem.contains("tiered") {
        layers::make_divisible((c.init / 2) as f64, 8, 0.9)
    } else {
        c.init
    };
    let conv = |i, o| {
        Conv::new(i, o, 3)
            .stride(2)
            .pad(Pad::Sym(1))
            .bias(c.conv_bias)
    };
    let y = conv2d(&mut b.scope(0), x, conv(c.in_chans, mid))?;
    let y = conv2d(&mut b.scope(1), &y, conv(mid, c.init))?;
    layer_norm_2d(&mut b.scope(2), &y, c.init, c.eps)
}

/// `DenseStage`: each `dense_block{j}` sees everything so far concatenated and adds its
/// `growth_rate` channels; the stage returns the whole concatenation.
fn dense_stage(b: &mut Builder, x: &Value, ch: usize, st: &Stage, c: &Cfg) -> Result<Value> {
    let mut x = x.clone();
    let mut ch = ch;
    for j in 0..st.blocks {
        let s = &mut b.scope(format!("dense_block{j}"));
        let inter = (ch as f64 * c.bwr / 8.0) as usize * 8;
        let y = {
            // DenseBlock.layers is the Block, whose own `layers` is the Sequential.
            let mut outer = s.scope("layers");
            let l = &mut outer.scope("layers");
            let dw = Conv::new(ch, ch, 7).depthwise().pad(Pad::Sym(3)).bias(true);
            let y = conv2d(&mut l.scope(0), &x, dw)?;
            let y = layer_norm_2d(&mut l.scope(1), &y, ch, c.eps)?;
            let pw = |i, o| Conv::new(i, o, 1).pad(Pad::Sym(0)).bias(true);
            let y = conv2d(&mut l.scope(2), &y, pw(ch, inter))?;
            let y = act(l, &c.act, &y)?;
            let y = conv2d(&mut l.scope(4), &y, pw(inter, st.growth))?;
            if st.ese {
                effective_se(&mut l.scope(5), &y, st.growth, false, "hard_sigmoid")?
            } else {
                y
            }
        };
        let y = if c.ls {
            let g = s.param("gamma", &[st.growth], Init::Const(1e-6))?;
            let g = layers::per_channel(s, &g, st.growth);
            layers::mul(s, &y, &g)
        } else {
            y
        };
        x = layers::concat(s, &[&x, &y], 1);
        ch += st.growth;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_architecture_builds_its_shapes() {
        // The dry run (shapes only, no weight data) of every table entry at its own input size:
        // its pre-logits width is timm's num_features.
        for name in TABLE.names() {
            let cfg =
                ModelConfig::parse(TABLE.get(name).unwrap().config.to_string().as_bytes()).unwrap();
            let [_, h, w] = cfg.pretrained_cfg.input_size;
            let g = crate::graph::build_shapes(
                &cfg,
                crate::graph::ParamSource::Shapes,
                &crate::graph::Request {
                    output: OutputKind::Features,
                    ..Default::default()
                },
                (h, w),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let dim = match g.outputs[0].shape {
                crate::graph::OutputShape::Vector(d) => d,
                _ => 0,
            };
            assert_eq!(Some(dim), cfg.num_features, "{name}");
        }
    }
}
