//! Hybrid Vision Transformers (timm `vision_transformer_hybrid.py`): timm's `VisionTransformer`
//! whose patch embedding is `HybridEmbed` — a CNN backbone, then a `kernel = stride = patch`
//! conv `proj` (or none, `proj=False`) flattened to tokens; the rest is the ViT trunk of
//! `layers::vision_transformer`.
//!
//! Built: MobileCLIP's `vit_base_mci_224`, whose backbone is the module's own `ConvStem`
//! (ConvNormAct with BatchNorm folded at load and GELU, the last conv biased without norm or
//! act); `vit_tiny_r_s16_p8_*` (ResNetV2's 'same' stem alone) and `vit_*_r26_*`, `vit_*_r50_*`
//! (`_resnetv2`: ResNetV2 without pre-activation, `StdConv2dSame` eps 1e-8 with TF "SAME"
//! padding, GroupNormAct, the 'same' stem), built by `layers::resnetv2_parts`; `vit_*_resnet26d_*`
//! and `vit_*_resnet50d_*` (timm's `features_only` ResNet-D: deep stem, avg-down shortcuts,
//! Bottlenecks, up to the stage `out_indices` names), built by `layers::resnet_parts`. Widths,
//! kernels and blocks per stage are read from the weights.
//!
//! Feature maps are the ViT's: every block's tokens on the backbone's grid, NCHW (the last
//! three by default), at the backbone's reduction times the patch.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::layers::patch_embed::{patch_embed, PatchEmbedCfg};
use crate::graph::layers::pool::PoolKind;
use crate::graph::layers::resnet_parts::{Block, ResNetBase};
use crate::graph::layers::resnetv2_parts::{stages, stem, stem_pool, NormAct, ResNetV2};
use crate::graph::layers::vision_transformer::{trunk, Vit};
use crate::graph::layers::{self, conv2d, conv_bn, Conv, Pad};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, Value};

static TABLE: Table = Table::new(include_str!("../tables/vision_transformer_hybrid.json"));

/// The `vision_transformer_hybrid` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "vision_transformer_hybrid",
    examples: "vit_base_mci_224, vit_*_r*_s*, vit_*_resnet*d_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// `nn.BatchNorm2d`'s eps in `ConvStem`.
const BN_EPS: f32 = 1e-5;

/// One `ConvNormAct` of `ConvStem` as its entrypoint makes it: output width, kernel, stride.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StemConv {
    out: usize,
    kernel: usize,
    stride: usize,
}

/// The CNN in front of the ViT.
#[derive(Debug, Clone, PartialEq)]
enum Backbone {
    /// `ConvStem`'s convs.
    ConvStem(Vec<StemConv>),
    /// `create_resnetv2_stem(stem_type='same', preact=False)` with `StdConv2dSame(eps=1e-8)`.
    ResNetV2StemSame,
    /// `_resnetv2(layers)`: `ResNetV2(preact=False, stem_type='same',
    /// conv_layer=partial(StdConv2dSame, eps=1e-8))` without its head; blocks per stage.
    ResNetV2 { layers: Vec<usize> },
    /// `resnet26d` / `resnet50d(features_only=True, out_indices=[n])`: timm's `ResNet` up to
    /// `layer{n}` (the table's stages), its last stage's map the output.
    ResNetFeatures {
        block: Block,
        layers: Vec<usize>,
        deep_stem: bool,
        stem_width: usize,
        avg_down: bool,
    },
}

/// A hybrid as its entrypoint builds it: the backbone, HybridEmbed's `proj`, the ViT.
#[derive(Debug)]
struct Hybrid {
    backbone: Backbone,
    proj: bool,
    vit: Vit,
}

/// The backbone the table describes (`scripts/tables/vision_transformer_hybrid.py`), or why
/// this build does not make it.
fn backbone_of(arch: &str, backbone: &Json) -> Result<Backbone> {
    let class = backbone.get("class").and_then(Json::as_str).unwrap_or("");
    let why = match class {
        "convstem" => {
            let convs = backbone.get("convs").and_then(Json::as_array);
            let parsed: Option<Vec<StemConv>> = convs.map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        let n = |k: &str| c.get(k).and_then(Json::as_u64).map(|v| v as usize);
                        Some(StemConv {
                            out: n("out")?,
                            kernel: n("kernel")?,
                            stride: n("stride")?,
                        })
                    })
                    .collect()
            });
            match parsed {
                Some(p) if !p.is_empty() && p.len() == convs.map_or(0, Vec::len) => {
                    return Ok(Backbone::ConvStem(p))
                }
                _ => "its ConvStem description is malformed".to_string(),
            }
        }
        "resnetv2_stem" => return Ok(Backbone::ResNetV2StemSame),
        "resnetv2" => {
            let layers: Option<Vec<usize>> =
                backbone.get("layers").and_then(Json::as_array).map(|l| {
                    l.iter()
                        .filter_map(|n| n.as_u64().map(|n| n as usize))
                        .collect()
                });
            match layers {
                Some(l) if !l.is_empty() && l.len() <= 4 => {
                    return Ok(Backbone::ResNetV2 { layers: l })
                }
                _ => "its ResNetV2 description is malformed".into(),
            }
        }
        "resnet_features" => {
            let n = |k: &str| backbone.get(k).and_then(Json::as_u64).map(|v| v as usize);
            let layers: Vec<usize> = backbone
                .get("layers")
                .and_then(Json::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|n| n.as_u64().map(|n| n as usize))
                        .collect()
                })
                .unwrap_or_default();
            let out: Vec<usize> = backbone
                .get("out_indices")
                .and_then(Json::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|n| n.as_u64().map(|n| n as usize))
                        .collect()
                })
                .unwrap_or_default();
            let block = backbone
                .get("block")
                .and_then(Json::as_str)
                .and_then(Block::from_timm);
            let stem_type = backbone.get("stem_type").and_then(Json::as_str);
            let avg_down = backbone.get("avg_down").and_then(Json::as_bool);
            match (block, stem_type, n("stem_width"), avg_down) {
                // HybridEmbed takes the last map; FeatureListNet stops at its stage.
                (Some(block), Some(st @ ("" | "deep")), Some(stem_width), Some(avg_down))
                    if !layers.is_empty() && layers.len() <= 4 && out == [layers.len()] =>
                {
                    return Ok(Backbone::ResNetFeatures {
                        block,
                        layers,
                        deep_stem: st == "deep",
                        stem_width,
                        avg_down,
                    })
                }
                _ => "its features_only ResNet description is malformed or not one stage's map"
                    .into(),
            }
        }
        other => format!("its backbone `{other}` is not known"),
    };
    Err(Error::unsupported(format!(
        "`{arch}` (hybrid ViT) is not built natively: {why}"
    )))
}

impl Hybrid {
    fn resolve(cfg: &ModelConfig) -> Result<Hybrid> {
        let arch = cfg.architecture.as_str();
        let entry = TABLE.get(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a hybrid ViT architecture this build knows"
            ))
        })?;
        let backbone = backbone_of(arch, entry.args.get("backbone").unwrap_or(&Json::Null))?;
        let embed = entry.args.get("embed_args").cloned().unwrap_or(Json::Null);
        let proj = embed.get("proj").and_then(Json::as_bool).unwrap_or(true);
        if embed
            .as_object()
            .is_some_and(|o| o.keys().any(|k| k != "proj"))
        {
            return Err(Error::unsupported(format!(
                "`{arch}`: HybridEmbed arguments {embed} are not built natively"
            )));
        }
        // The backbone and HybridEmbed's arguments are the entrypoint's, not VisionTransformer's.
        let mut defaults = entry.args.clone();
        defaults.remove("backbone");
        defaults.remove("embed_args");
        let vit = Vit::resolve(cfg, &defaults, false)?;
        if vit.embed_norm.is_some() || vit.dynamic_img_pad {
            return Err(Error::unsupported(format!(
                "`{arch}`: HybridEmbed takes no embed_norm_layer and no dynamic_img_pad here"
            )));
        }
        Ok(Hybrid {
            backbone,
            proj,
            vit,
        })
    }
}

/// `ConvStem` (`patch_embed.backbone.<i>`): `ConvNormAct`s with padding 0, BatchNorm and GELU,
/// the last one a biased conv alone. Widths and kernels from the weights where there are any.
fn conv_stem(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    convs: &[StemConv],
) -> Result<(Value, usize)> {
    let mut x = x.clone();
    let mut prev = in_ch;
    for (i, c) in convs.iter().enumerate() {
        let s = &mut b.scope(i);
        let shape = s.weight_shape("conv.weight");
        let (out, k) = match shape.as_deref() {
            Some([o, _, k, _]) => (*o, *k),
            _ => (c.out, c.kernel),
        };
        let conv = Conv::new(prev, out, k)
            .stride(c.stride)
            .pad(Pad::Sym(0))
            .init(Init::KaimingFanOut);
        x = if i + 1 == convs.len() {
            conv2d(&mut s.scope("conv"), &x, conv.bias(true))?
        } else {
            let y = conv_bn(s, &x, "conv", "bn", conv, BN_EPS)?;
            layers::act(s, "gelu", &y)?
        };
        prev = out;
    }
    Ok((x, prev))
}

/// `_resnetv2`'s ResNetV2 (timm's defaults: stem 64, stages 256·2^i wide, GroupNormAct with
/// 32 groups, bottleneck ratio 1/4), widths and blocks per stage read from the weights (in the
/// current scope, the backbone) where there are any.
fn resnetv2_backbone(b: &mut Builder, in_ch: usize, layers: &[usize]) -> Result<ResNetV2> {
    let stem_key = if layers.is_empty() {
        "conv.weight"
    } else {
        "stem.conv.weight"
    };
    let stem_chs = match b.weight_shape(stem_key).as_deref() {
        Some([o, ..]) => *o,
        _ => 64,
    };
    let mut depths = layers.to_vec();
    let mut channels: Vec<usize> = (0..layers.len()).map(|i| 256 << i).collect();
    if b.weights().is_some() && !layers.is_empty() {
        depths.clear();
        channels.clear();
        while b.has_module(&format!("stages.{}", depths.len())) {
            let s = depths.len();
            let n = (0..)
                .take_while(|j| b.has_module(&format!("stages.{s}.blocks.{j}")))
                .count();
            let key = format!("stages.{s}.blocks.0.conv3.weight");
            let out = match b.weight_shape(&key).as_deref() {
                Some([o, ..]) => *o,
                _ => {
                    return Err(Error::invalid_model(format!(
                        "hybrid ViT: `{key}` is missing"
                    )))
                }
            };
            depths.push(n);
            channels.push(out);
        }
        if depths.is_empty() || depths.contains(&0) {
            return Err(Error::invalid_model(
                "hybrid ViT: the ResNetV2 backbone's stages are missing from the weights",
            ));
        }
    }
    Ok(ResNetV2 {
        layers: depths,
        channels,
        in_chans: in_ch,
        output_stride: 32,
        stem_chs,
        deep_stem: false,
        tiered_stem: false,
        fixed_pad: false,
        avg_down: false,
        preact: false,
        basic: false,
        bottle_ratio: 0.25,
        act: "relu".into(),
        norm: NormAct::Group {
            groups: 32,
            eps: 1e-5,
        },
        std_eps: Some(1e-8),
        pool: PoolKind::Avg,
        same: true,
    })
}

/// The features_only `ResNet` (timm's defaults: BatchNorm, ReLU, stages 64·2^i planes) of the
/// table, its stem width, widths and blocks per stage read from the weights (in the current
/// scope, the backbone) where there are any. Its feature maps are not the hybrid's.
fn resnet_features(
    b: &mut Builder,
    in_ch: usize,
    backbone: &Backbone,
) -> Result<(ResNetBase, Vec<Block>)> {
    let Backbone::ResNetFeatures {
        block,
        layers,
        deep_stem,
        stem_width,
        avg_down,
    } = backbone
    else {
        unreachable!("resnet_features takes a ResNetFeatures backbone")
    };
    let n = layers.len();
    let mut net = ResNetBase {
        layers: layers.clone(),
        channels: (0..n).map(|i| 64 << i).collect(),
        in_chans: in_ch,
        output_stride: 32,
        cardinality: 1,
        base_width: 64,
        stem_width: *stem_width,
        deep_stem: *deep_stem,
        tiered_stem: false,
        replace_stem_pool: false,
        reduce_first: 1,
        down_kernel_size: 1,
        avg_down: *avg_down,
        act: "relu".into(),
        norm: layers::Norm::Batch { eps: BN_EPS },
        bn_eps: BN_EPS,
        pool: PoolKind::Avg,
        last_bn_init: Init::Zeros,
        aa: None,
        attn: None,
        pruned: None,
        taps: false,
    };
    let mut blocks = vec![*block; n];
    if b.weights().is_none() {
        return Ok((net, blocks));
    }
    net.read_block_weights(b, &mut blocks)?;
    if net.attn.is_some() {
        return Err(Error::invalid_model(
            "hybrid ViT: the ResNet-D backbone has no attention modules",
        ));
    }
    // Widths: the deep stem's first conv, each stage's last conv (planes · expansion).
    let dim = |b: &Builder, key: &str| match b.weight_shape(key).as_deref() {
        Some([o, ..]) => Ok(*o),
        _ => Err(Error::invalid_model(format!(
            "hybrid ViT: `{}` is missing",
            b.key(key)
        ))),
    };
    if net.deep_stem {
        net.stem_width = dim(b, "conv1.0.weight")?;
    } else if dim(b, "conv1.weight")? != 64 {
        return Err(Error::invalid_model(
            "hybrid ViT: timm's 7x7 ResNet stem is 64 wide",
        ));
    }
    for (s, block) in blocks.iter().enumerate() {
        let last = match block {
            Block::Basic => "conv2",
            Block::Bottleneck => "conv3",
        };
        net.channels[s] = dim(b, &format!("layer{}.0.{last}.weight", s + 1))? / block.expansion();
    }
    Ok((net, blocks))
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let Hybrid {
        backbone,
        proj,
        mut vit,
    } = Hybrid::resolve(cfg)?;
    let (h, w) = b.image_size();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let (feat, feat_dim) = {
        let mut pe = b.scope("patch_embed");
        let bb = &mut pe.scope("backbone");
        match &backbone {
            Backbone::ConvStem(convs) => conv_stem(bb, &input, in_ch, convs)?,
            Backbone::ResNetV2 { layers } => {
                let net = resnetv2_backbone(bb, in_ch, layers)?;
                let x = stem(&mut bb.scope("stem"), &net, &input)?.0;
                let x = stem_pool(bb, &net, &x)?;
                stages(bb, &net, &x, false)?
            }
            Backbone::ResNetFeatures { .. } => {
                let (net, blocks) = resnet_features(bb, in_ch, &backbone)?;
                let (x, inplanes, ch) = net.stem_widths(bb, &input)?;
                net.resnet_stages(bb, &x, inplanes, ch, &blocks)?
            }
            Backbone::ResNetV2StemSame => {
                let net = resnetv2_backbone(bb, in_ch, &[])?;
                // create_resnetv2_stem's modules sit right in the backbone (a Sequential).
                let x = stem(bb, &net, &input)?.0;
                (stem_pool(bb, &net, &x)?, net.stem_chs)
            }
        }
    };
    let p = vit.patch;
    let spatial = b.spatial(&feat).cloned();
    let size = |n: usize| spatial.as_ref().and_then(|s| s.eval(n)).unwrap_or(0);
    // HybridEmbed at img_size: the backbone's output grid (what pos_embed covers) and its
    // reduction, feature_ratio · patch (the feature maps').
    let img = (vit.grid.0 * p, vit.grid.1 * p);
    let feat_img = (size(img.0), size(img.1));
    if feat_img.0 < p || feat_img.1 < p {
        return Err(Error::invalid_model(format!(
            "img_size {}x{} gives the backbone a {}x{} map, smaller than the patch {p}",
            img.0, img.1, feat_img.0, feat_img.1
        )));
    }
    vit.grid = (feat_img.0 / p, feat_img.1 / p);
    vit.patch = (img.0 / feat_img.0).max(img.1 / feat_img.1) * p;
    let grid = (size(h) / p, size(w) / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is too small for this hybrid ViT's backbone and patch {p}"
        )));
    }
    let d = vit.dim;
    let patches = if proj {
        let pe = PatchEmbedCfg {
            in_ch: feat_dim,
            dim: d,
            patch: p,
            bias: true,
            pad: (0, 0),
            norm: None,
            flatten: false,
        };
        patch_embed(&mut b.scope("patch_embed"), &feat, &pe)?
    } else if feat_dim != d || p != 1 {
        return Err(Error::invalid_model(format!(
            "HybridEmbed without projection needs the backbone width {feat_dim} to be embed_dim {d} (and patch 1, not {p})"
        )));
    } else {
        feat
    };
    let tokens = layers::nchw_to_tokens(b, &patches, d);
    trunk(b, &vit, cfg, &tokens, &patches, grid, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_or_names_its_backbone() {
        let mut built = Vec::new();
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            match Hybrid::resolve(&cfg) {
                Ok(h) => {
                    assert_eq!(cfg.num_features, Some(h.vit.dim), "{name}");
                    built.push(name);
                }
                Err(e) => {
                    assert_eq!(
                        e.status(),
                        crate::TimmStatus::TIMM_ERR_UNSUPPORTED,
                        "{name}: {e}"
                    );
                    assert!(e.message().contains("backbone"), "{name}: {e}");
                }
            }
        }
        // timm 1.0.31: 14 entrypoints, all built.
        assert_eq!(TABLE.names().len(), 14);
        assert_eq!(built.len(), 14, "{built:?}");
    }

    #[test]
    fn mobileclip_stem_is_timms_convstem_without_projection() {
        let cfg = parse(&TABLE.get("vit_base_mci_224").unwrap().config);
        let h = Hybrid::resolve(&cfg).unwrap();
        let k = |out, kernel| StemConv {
            out,
            kernel,
            stride: kernel,
        };
        let want = Backbone::ConvStem(vec![k(192, 4), k(192, 2), k(768, 2)]);
        assert_eq!(h.backbone, want);
        assert!(!h.proj && h.vit.no_embed_class);
    }

    #[test]
    fn resnet_d_backbones_are_the_features_only_stages() {
        let cfg = parse(&TABLE.get("vit_small_resnet50d_s16_224").unwrap().config);
        let want = Backbone::ResNetFeatures {
            block: Block::Bottleneck,
            layers: vec![3, 4, 6],
            deep_stem: true,
            stem_width: 32,
            avg_down: true,
        };
        assert_eq!(Hybrid::resolve(&cfg).unwrap().backbone, want);
    }
}
