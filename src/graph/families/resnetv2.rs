//! timm's `resnetv2.py`: pre-activation ResNet V2 — BiT (`resnetv2_*x*_bit`: `StdConv2d` with
//! eps 1e-8, GroupNorm, the 'fixed' stem's zero pad before the max pool), the BatchNorm ResNet-V2s (`resnetv2_18..152d`, basic and
//! bottleneck blocks, deep / tiered stems, avg-down shortcuts), `resnetv2_50d_gn`, and the
//! non-pre-activation bottleneck (`preact=False`); `resnetv2_50d_evos` / `_frn` (and any
//! EvoNorm / FilterResponseNorm `norm_layer`) with the norm-act layer of `layers::evo_norm`.
//!
//! Weight standardisation is done once at load; a BatchNorm straight after a conv is folded into
//! it. The pre-activation norms that follow a residual sum (`norm1`, the final `norm`) stay norms.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::evo_norm::EvoNorm;
use crate::graph::layers::pool::{global_pool, PoolKind};
use crate::graph::layers::resnetv2_parts::{stages, stem, stem_pool, NormAct, ResNetV2};
use crate::graph::layers::{self, conv2d, make_divisible, Conv};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, OutputKind, Value};

static TABLE: Table = Table::new(include_str!("../tables/resnetv2.json"));

pub const FAMILY: Family = Family {
    name: "resnetv2",
    examples: "resnetv2_50x1_bit..resnetv2_152x4_bit, resnetv2_18..resnetv2_152d, resnetv2_50d_gn",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: true,
};

crate::timm_args! {
    /// `ResNetV2.__init__`'s keyword arguments, with timm's defaults (`norm_layer` None is
    /// `partial(GroupNormAct, num_groups=32)`, `conv_layer` None is `StdConv2d`).
    struct ResNetV2Args {
        layers: Vec<usize> = vec![],
        channels: Vec<usize> = vec![256, 512, 1024, 2048],
        in_chans: Option<usize> = None,
        global_pool: String = "avg".into(),
        output_stride: usize = 32,
        width_factor: usize = 1,
        stem_chs: usize = 64,
        stem_type: String = String::new(),
        avg_down: bool = false,
        preact: bool = true,
        basic: bool = false,
        bottle_ratio: f64 = 0.25,
        act_layer: String = "relu".into(),
        norm_layer: Option<Json> = None,
        conv_layer: Option<Json> = None,
        zero_init_last: bool = false,
    }
}

/// A layer given as a name or as `partial(name, **kw)`: the lower-cased name and the keywords.
fn layer_spec(v: &Json) -> Option<(String, Option<&serde_json::Map<String, Json>>)> {
    match v {
        Json::String(s) => Some((s.to_ascii_lowercase().replace('_', ""), None)),
        Json::Object(m) => {
            let name = m.get("partial")?.as_str()?;
            Some((name.to_ascii_lowercase().replace('_', ""), Some(m)))
        }
        _ => None,
    }
}

/// The network `cfg` names: the table's arguments under config.json's `model_args`.
fn from_config(cfg: &ModelConfig, requested_os: Option<usize>) -> Result<ResNetV2> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a resnetv2 architecture this build knows"
        ))
    })?;
    let args = Args::new(arch, Some(&entry.args), &cfg.model_args);
    let a = ResNetV2Args::read(&args)?;
    layers::act::canonical(&a.act_layer)?;
    // Only how a network without weights starts (zeroed last conv / norm); accepted as timm's.
    let _ = a.zero_init_last;

    let norm_json = a
        .norm_layer
        .clone()
        .unwrap_or_else(|| Json::String("groupnormact".into()));
    let (name, kw) = layer_spec(&norm_json)
        .ok_or_else(|| args.unsupported("norm_layer", "expected a norm layer name"))?;
    let kw_f = |k: &str| kw.and_then(|m| m.get(k)).and_then(Json::as_f64);
    let eps = kw_f("eps").map_or(1e-5, |e| e as f32);
    let norm = match name.as_str() {
            "batchnormact2d" | "batchnorm2d" | "batchnorm" => NormAct::Batch { eps },
            "groupnormact" | "groupnorm" => NormAct::Group {
                groups: kw_f("num_groups").map_or(32, |g| g as usize),
                eps,
            },
            "groupnorm1act" | "groupnorm1" => NormAct::Group { groups: 1, eps },
            n => match EvoNorm::from_timm(n, kw, Some(&a.act_layer)) {
                Some(e) => NormAct::Evo(e?),
                None => {
                    return Err(args.unsupported(
                        "norm_layer",
                        "resnetv2 norm layers are BatchNormAct2d, GroupNormAct, EvoNorm2d* and FilterResponseNorm*",
                    ))
                }
            },
        };
    let std_eps = match a.conv_layer.as_ref().map(layer_spec) {
        None => Some(1e-6),
        Some(Some((n, kw))) if n == "stdconv2d" => Some(
            kw.and_then(|m| m.get("eps"))
                .and_then(Json::as_f64)
                .map_or(1e-6, |e| e as f32),
        ),
        Some(Some((n, _))) if n == "createconv2d" || n == "conv2d" => None,
        _ => {
            return Err(args.unsupported(
                "conv_layer",
                "resnetv2 convs are StdConv2d or create_conv2d",
            ))
        }
    };
    let stem_type = a.stem_type.as_str();
    if !["", "fixed", "deep", "deep_fixed", "tiered"].contains(&stem_type) {
        return Err(args.unsupported(
                "stem_type",
                "stem_type must be '', 'fixed', 'deep', 'deep_fixed' or 'tiered' ('same' padding is not implemented)",
            ));
    }
    if a.basic && !a.preact {
        return Err(Error::invalid_model(format!(
            "`{arch}`: basic blocks are pre-activation only"
        )));
    }
    let pool = PoolKind::from_timm(cfg.global_pool.as_deref().unwrap_or(&a.global_pool))?;
    if pool == PoolKind::None {
        return Err(Error::unsupported(format!(
            "`{arch}`: global_pool '' is not supported by the native resnetv2 graph"
        )));
    }
    let n = a.layers.len();
    if n == 0 || a.channels.len() != n {
        return Err(Error::invalid_model(format!(
            "`{arch}`: layers {:?} and channels {:?} must have the same, non-zero length",
            a.layers, a.channels
        )));
    }
    let output_stride = requested_os.unwrap_or(a.output_stride);
    if ![8, 16, 32].contains(&output_stride) {
        return Err(Error::invalid_argument(format!(
            "output_stride {output_stride} is not one timm's ResNetV2 builds (8, 16 or 32)"
        )));
    }
    let input_chans = cfg.pretrained_cfg.input_size[0];
    let in_chans = a.in_chans.unwrap_or(input_chans);
    if in_chans != input_chans {
        return Err(Error::invalid_model(format!(
            "`{arch}`: model_args in_chans {in_chans} disagrees with input_size {:?}",
            cfg.pretrained_cfg.input_size
        )));
    }
    if a.width_factor == 0 || a.stem_chs == 0 || a.bottle_ratio.is_nan() || a.bottle_ratio <= 0.0 {
        return Err(Error::invalid_model(format!(
            "`{arch}`: width_factor, stem_chs and bottle_ratio must be positive"
        )));
    }
    let wf = a.width_factor as f64;
    Ok(ResNetV2 {
        layers: a.layers,
        channels: a
            .channels
            .iter()
            .map(|&c| make_divisible(c as f64 * wf, 8, 0.9))
            .collect(),
        in_chans,
        output_stride,
        stem_chs: make_divisible(a.stem_chs as f64 * wf, 8, 0.9),
        deep_stem: stem_type.contains("deep") || stem_type.contains("tiered"),
        tiered_stem: stem_type.contains("tiered"),
        fixed_pad: stem_type.contains("fixed"),
        avg_down: a.avg_down,
        preact: a.preact,
        basic: a.basic,
        bottle_ratio: a.bottle_ratio,
        act: a.act_layer,
        norm,
        std_eps,
        pool,
        same: false,
    })
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let net = from_config(cfg, b.output_stride())?;
    let x = b.input();
    let (tap, module) = stem(&mut b.scope("stem"), &net, &x)?;
    b.feature(&tap, net.stem_chs, 2, module);
    let x = stem_pool(b, &net, &tap)?;
    let (x, num_features) = stages(b, &net, &x, true)?;
    let out = b.output();
    if out == OutputKind::FeatureMaps {
        return Ok((x, num_features));
    }
    let x = if net.preact {
        net.norm_act(&mut b.scope("norm"), &x, num_features, true)?
    } else {
        x
    };
    // ClassifierHead(use_conv=True): the pooled map through a 1x1 conv `head.fc`, flattened.
    let pooled = global_pool(b, &x, net.pool);
    let width = num_features * net.pool.multiplier();
    if out == OutputKind::Features || cfg.num_classes == 0 {
        return Ok((pooled, width));
    }
    let map = layers::reshape(b, &pooled, &[0, -1, 1, 1]);
    let fc = Conv::new(width, cfg.num_classes, 1).bias(true);
    let y = conv2d(&mut b.scope("head").scope("fc"), &map, fc)?;
    let y = b.op("Flatten", &[&y], vec![("axis", crate::graph::Attr::Int(1))]);
    Ok((y, cfg.num_classes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::layers::evo_norm::EvoKind;

    #[test]
    fn every_table_architecture_builds() {
        assert_eq!(TABLE.validate(), Ok(TABLE.names().len()));
        for arch in TABLE.names() {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            if let Err(e) = from_config(&cfg, None) {
                panic!("{arch}: {e:?}");
            }
        }
    }

    #[test]
    fn evos_and_frn_take_timm_s_layer_and_defaults() {
        for (arch, kind, eps) in [
            ("resnetv2_50d_evos", EvoKind::S0, 1e-5),
            ("resnetv2_50d_frn", EvoKind::FrnTlu, 1e-5),
        ] {
            let cfg = (FAMILY.default_config)(arch).unwrap();
            let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
            let n = from_config(&cfg, None).unwrap();
            let NormAct::Evo(e) = &n.norm else {
                panic!("{arch}: {:?}", n.norm)
            };
            assert_eq!((e.kind, e.eps, e.groups), (kind, eps, 32), "{arch}");
            assert_eq!(n.std_eps, None, "{arch}: create_conv2d");
        }
    }

    #[test]
    fn bit_is_stdconv_with_eps_1e8_groupnorm_32_and_the_fixed_stem() {
        let cfg = (FAMILY.default_config)("resnetv2_50x1_bit").unwrap();
        let cfg = ModelConfig::parse(cfg.to_string().as_bytes()).unwrap();
        let n = from_config(&cfg, None).unwrap();
        assert_eq!(n.std_eps, Some(1e-8));
        assert_eq!(
            n.norm,
            NormAct::Group {
                groups: 32,
                eps: 1e-5
            }
        );
        assert!(n.fixed_pad && n.preact && !n.deep_stem);
    }
}
