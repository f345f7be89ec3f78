//! ViTamin (timm `vitamin.py`): timm's `VisionTransformer` (no class token, average pooling,
//! `fc_norm`, vitamin's `GeGluMlp`) whose patch embedding is `HybridEmbed(proj=False)` around
//! `MbConvStages`: a `Stem` (3×3/2 conv, LayerNorm2d + GELU, 3×3 conv), two stages of pre-norm
//! `MbConvLNBlock`s (LayerNorm2d, 1×1 expand, GELU, 3×3 depthwise, GELU, 1×1; the first block
//! of a stage strided, its shortcut a 3×3/2 average pool without padding counted and a 1×1
//! conv where the width changes) and `StridedConv` (LayerNorm2d, 3×3/2 conv to the ViT width).
//! The entrypoints fix the backbone (`VitCfg`); its widths and blocks per stage are read from
//! the weights where there are any.
//!
//! Feature maps are the ViT's (`feature_cls='getter'`, `forward_intermediates`): every block's
//! tokens on the backbone's 1/16 grid, NCHW, the last three by default.

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::layers::pool::Pool2d;
use crate::graph::layers::vision_transformer::{trunk, Vit};
use crate::graph::layers::{self, conv2d, Conv, Norm};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Init, Value};

static TABLE: Table = Table::new(include_str!("../tables/vitamin.json"));

/// The `vitamin` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "vitamin",
    examples: "vitamin_*",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// `LayerNorm2d` / `LayerNormAct2d` of the stem, the blocks and `StridedConv`: eps 1e-6.
const LN: Norm = Norm::Layer { eps: 1e-6 };
/// `VitConvCfg`'s act_layer, which `MbConvStages` leaves at the blocks' default.
const ACT: &str = "gelu";
/// `MbConvLNBlock`'s `expand_ratio` (`make_divisible(out · 4)`).
const EXPAND: f64 = 4.0;

/// `MbConvStages` as the entrypoint's `VitCfg` makes it.
#[derive(Debug, Clone, PartialEq)]
struct MbConvStages {
    stem_width: usize,
    /// Width and blocks of the two MbConv stages (`embed_dim[:2]`, `depths[:2]`).
    stages: Vec<(usize, usize)>,
    /// `StridedConv`'s output width (`embed_dim[2]`).
    out: usize,
}

/// The table's backbone (`scripts/tables/vitamin.py`).
fn backbone_of(arch: &str, bb: &Json) -> Result<MbConvStages> {
    let n = |k: &str| bb.get(k).and_then(Json::as_u64).map(|v| v as usize);
    let list = |k: &str| -> Option<Vec<usize>> {
        bb.get(k)?
            .as_array()?
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect()
    };
    match (
        n("stem_width"),
        list("widths"),
        list("depths"),
        n("embed_dim"),
    ) {
        (Some(stem_width), Some(w), Some(d), Some(out)) if w.len() == 2 && d.len() == 2 => {
            Ok(MbConvStages {
                stem_width,
                stages: w.into_iter().zip(d).collect(),
                out,
            })
        }
        _ => Err(Error::unsupported(format!(
            "`{arch}`: its MbConvStages description is malformed"
        ))),
    }
}

/// The model `cfg` names: its backbone and its ViT.
fn resolve(cfg: &ModelConfig) -> Result<(MbConvStages, Vit)> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a ViTamin architecture this build knows"
        ))
    })?;
    let backbone = backbone_of(arch, entry.args.get("backbone").unwrap_or(&Json::Null))?;
    let embed = entry.args.get("embed_args").cloned().unwrap_or(Json::Null);
    if embed != serde_json::json!({"proj": false}) {
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
    Ok((backbone, vit))
}

/// The output width of the conv `name` (in the current scope) in the weights, else `default`.
fn out_width(b: &Builder, name: &str, default: usize) -> usize {
    match b.weight_shape(name).as_deref() {
        Some([o, ..]) => *o,
        _ => default,
    }
}

/// The backbone's widths and blocks per stage from the weights (in the current scope,
/// `patch_embed.backbone`) where there are any, else the table's.
fn read_backbone(b: &mut Builder, t: &MbConvStages) -> Result<MbConvStages> {
    if b.weights().is_none() {
        return Ok(t.clone());
    }
    let mut stages = Vec::new();
    for (s, &(w, _)) in t.stages.iter().enumerate() {
        let depth = (0..)
            .take_while(|j| b.has_module(&format!("stages.{s}.{j}")))
            .count();
        if depth == 0 {
            return Err(Error::invalid_model(format!(
                "ViTamin: `{}` is missing from the weights",
                b.key(&format!("stages.{s}.0"))
            )));
        }
        stages.push((
            out_width(b, &format!("stages.{s}.0.conv3_1x1.weight"), w),
            depth,
        ));
    }
    Ok(MbConvStages {
        stem_width: out_width(b, "stem.conv1.weight", t.stem_width),
        stages,
        out: out_width(b, "pool.proj.weight", t.out),
    })
}

/// A biased conv with timm's symmetric padding and vitamin's `_init_conv` (normal, fan-out).
fn conv(in_ch: usize, out_ch: usize, k: usize) -> Conv {
    Conv::new(in_ch, out_ch, k)
        .bias(true)
        .init(Init::KaimingFanOut)
}

/// `Stem`: conv1 (3×3/2), norm1 (LayerNormAct2d with GELU), conv2 (3×3).
fn stem(b: &mut Builder, x: &Value, in_ch: usize, w: usize) -> Result<Value> {
    let x = conv2d(&mut b.scope("conv1"), x, conv(in_ch, w, 3).stride(2))?;
    let x = LN.apply_2d(&mut b.scope("norm1"), &x, w)?;
    let x = layers::act(b, ACT, &x)?;
    conv2d(&mut b.scope("conv2"), &x, conv(w, w, 3))
}

/// `MbConvLNBlock`: shortcut (`Downsample2d` when strided, a 1×1 conv where the width changes)
/// plus `conv3_1x1(act(conv2_kxk(act(conv1_1x1(pre_norm(x))))))`.
fn mbconv_block(
    b: &mut Builder,
    x: &Value,
    in_ch: usize,
    out: usize,
    stride: usize,
) -> Result<Value> {
    let shortcut = if stride == 2 {
        let s = &mut b.scope("shortcut");
        // AvgPool2d(3, 2, 1, count_include_pad=False), then `expand` when the width changes.
        let p = Pool2d::new(3, 2, 1)
            .count_include_pad(false)
            .avg(s, x, in_ch)?;
        if in_ch != out {
            conv2d(&mut s.scope("expand"), &p, conv(in_ch, out, 1))?
        } else {
            p
        }
    } else if in_ch != out {
        conv2d(&mut b.scope("shortcut"), x, conv(in_ch, out, 1))?
    } else {
        x.clone()
    };
    let k = match b.weight_shape("conv2_kxk.weight").as_deref() {
        Some([_, _, k, _]) => *k,
        _ => 3,
    };
    let mid = out_width(
        b,
        "conv1_1x1.weight",
        layers::make_divisible(out as f64 * EXPAND, 8, 0.9),
    );
    let y = LN.apply_2d(&mut b.scope("pre_norm"), x, in_ch)?;
    let y = conv2d(&mut b.scope("conv1_1x1"), &y, conv(in_ch, mid, 1))?;
    let y = layers::act(b, ACT, &y)?;
    let dw = conv(mid, mid, k).stride(stride).depthwise();
    let y = conv2d(&mut b.scope("conv2_kxk"), &y, dw)?;
    let y = layers::act(b, ACT, &y)?;
    let y = conv2d(&mut b.scope("conv3_1x1"), &y, conv(mid, out, 1))?;
    Ok(layers::add(b, &y, &shortcut))
}

/// `MbConvStages.forward`: the stem, the two stages (each first block strided), `StridedConv`
/// (`pool`: LayerNorm2d over its input, then a 3×3/2 conv).
fn mbconv_stages(b: &mut Builder, x: &Value, in_ch: usize, m: &MbConvStages) -> Result<Value> {
    let mut x = stem(&mut b.scope("stem"), x, in_ch, m.stem_width)?;
    let mut prev = m.stem_width;
    for (s, &(w, depth)) in m.stages.iter().enumerate() {
        for d in 0..depth {
            let mut st = b.scope("stages");
            let mut st = st.scope(s);
            let blk = &mut st.scope(d);
            let (i, stride) = if d == 0 { (prev, 2) } else { (w, 1) };
            x = mbconv_block(blk, &x, i, w, stride)?;
        }
        prev = w;
    }
    let mut p = b.scope("pool");
    let x = LN.apply_2d(&mut p.scope("norm"), &x, prev)?;
    let y = conv2d(&mut p.scope("proj"), &x, conv(prev, m.out, 3).stride(2))?;
    Ok(y)
}

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let (table_backbone, mut vit) = resolve(cfg)?;
    let (h, w) = b.image_size();
    let in_ch = cfg.pretrained_cfg.input_size[0];
    let input = b.input();
    let feat = {
        let mut pe = b.scope("patch_embed");
        let bb = &mut pe.scope("backbone");
        let m = read_backbone(bb, &table_backbone)?;
        if m.out != vit.dim {
            return Err(Error::invalid_model(format!(
                "HybridEmbed without projection needs the backbone width {} to be embed_dim {} (timm asserts)",
                m.out, vit.dim
            )));
        }
        mbconv_stages(bb, &input, in_ch, &m)?
    };
    // HybridEmbed at img_size: the backbone's grid (what pos_embed covers) and its reduction.
    let p = vit.patch;
    let spatial = b.spatial(&feat).cloned();
    let size = |n: usize| spatial.as_ref().and_then(|s| s.eval(n)).unwrap_or(0);
    let img = (vit.grid.0 * p, vit.grid.1 * p);
    let feat_img = (size(img.0), size(img.1));
    if p != 1 || feat_img.0 == 0 || feat_img.1 == 0 {
        return Err(Error::invalid_model(format!(
            "ViTamin's HybridEmbed needs patch 1 (not {p}) and an img_size {}x{} the backbone maps to at least 1x1",
            img.0, img.1
        )));
    }
    vit.grid = feat_img;
    vit.patch = (img.0 / feat_img.0).max(img.1 / feat_img.1);
    let grid = (size(h), size(w));
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is too small for ViTamin's stride-16 backbone"
        )));
    }
    let tokens = layers::nchw_to_tokens(b, &feat, vit.dim);
    trunk(b, &vit, cfg, &tokens, &feat, grid, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::layers::vision_transformer::MlpKind;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_with_geglu_and_avg_pool() {
        // timm 1.0.31 registers 13 ViTamins.
        assert_eq!(TABLE.names().len(), 13);
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            let (bb, v) = resolve(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(cfg.num_features, Some(v.dim), "{name}");
            assert_eq!(bb.out, v.dim, "{name}");
            assert_eq!(v.mlp_kind, MlpKind::GeGlu, "{name}");
            assert!(!v.class_token && v.use_fc_norm, "{name}");
            // Only the xlarge models drop the position embedding.
            assert_eq!(v.pos_embed, !name.contains("xlarge"), "{name}");
        }
    }

    #[test]
    fn small_backbone_is_its_vitcfg() {
        let cfg = parse(&TABLE.get("vitamin_small_224").unwrap().config);
        let want = MbConvStages {
            stem_width: 64,
            stages: vec![(64, 2), (128, 4)],
            out: 384,
        };
        assert_eq!(resolve(&cfg).unwrap().0, want);
    }
}
