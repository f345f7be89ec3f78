//! Vision Transformers: timm's `vision_transformer.py` (`VisionTransformer`) and `deit.py`
//! (`VisionTransformerDistilled`), every registered architecture: the pre-norm `Block` (with
//! `Attention` or `DiffAttention`), `ResPostBlock`, `ParallelScalingBlock`,
//! `DiffParallelScalingBlock`, `ParallelThingsBlock`; `Mlp`, `SwiGLU`, `GluMlp`; LayerNorm /
//! RmsNorm (also in the patch embedding); token / avg / max pooling or the `map`
//! (`AttentionPoolLatent`) and `prr` (`AttentionPoolPrr`) heads.
//!
//! The graph follows timm's forward: `PatchEmbed`, `_pos_embed` (class / distillation / register
//! tokens and the learned position embedding, added before or after the prefix tokens per
//! `no_embed_class`), `norm_pre`, the blocks, `norm`, `global_pool_nlc`, `fc_norm` and the head.
//! Attention runs as ONNX Runtime's fused `com.microsoft.Attention` (QKV projection and
//! attention in one kernel; on ORT 1.31 CPU it beat `MultiHeadAttention`, opset-23 `Attention`,
//! unfused MatMul/Softmax and timm's own torch.onnx export), the MLP with a fused bias + GELU.
//!
//! Feature maps are timm's `features_only=True` (`FeatureGetterNet` over `forward_intermediates`
//! with `norm=False`): every block's output, prefix tokens dropped, as an NCHW grid; by default
//! the last three blocks.
//!
//! Other input sizes: option `dynamic_img_size` resamples the position embedding in the graph for
//! each input as timm's `dynamic_img_size=True` does; a fixed input size other than `img_size`
//! resamples it once at load as timm's `img_size=` argument does (through the checkpoint filter).

use serde_json::Value as Json;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::layers;
use crate::graph::layers::patch_embed::{patch_embed, PatchEmbedCfg};
use crate::graph::layers::vision_transformer::{trunk, Vit};
use crate::graph::tables::Table;
use crate::graph::{Builder, Family, Value};

static TABLE: Table = Table::new(include_str!("../tables/vit.json"));

/// The `vit` family entry for [`super::ALL`].
pub const FAMILY: Family = Family {
    name: "vit",
    examples: "vit_*, deit_*, deit3_*, flexivit_*, beit3_*, eva_large_patch14_*, test_vit",
    matches: |arch| TABLE.contains(arch),
    build,
    default_config: |arch| TABLE.get(arch).map(|e| e.config.clone()),
    any_size: false,
};

/// The table's row for `cfg`'s architecture, resolved (DeiT's distilled models name
/// `head_dist` among their classifiers).
fn resolve(cfg: &ModelConfig) -> Result<Vit> {
    let arch = cfg.architecture.as_str();
    let entry = TABLE.get(arch).ok_or_else(|| {
        Error::unsupported(format!(
            "`{arch}` is not a ViT architecture this build knows"
        ))
    })?;
    let distilled = entry
        .config
        .pointer("/pretrained_cfg/classifier")
        .and_then(Json::as_array)
        .is_some_and(|c| c.iter().any(|n| n == "head_dist"));
    Vit::resolve(cfg, &entry.args, distilled)
}

// ---------------------------------------------------------------------------------------------
// Graph

fn build(b: &mut Builder, cfg: &ModelConfig) -> Result<(Value, usize)> {
    let v = resolve(cfg)?;
    let dynamic = b.dynamic_img_size();
    let (h, w) = b.image_size();
    let p = v.patch;
    // PatchEmbed: without dynamic_img_pad the conv drops a remainder (vit_*_patch14 at 384);
    // with it, zeros after the last row / column.
    let pad = if v.dynamic_img_pad {
        if dynamic {
            return Err(Error::unsupported(
                "option dynamic_img_size with model_args dynamic_img_pad: the padding would follow each input",
            ));
        }
        ((p - h % p) % p, (p - w % p) % p)
    } else {
        if v.dynamic_img_size && (h % p != 0 || w % p != 0) {
            return Err(Error::invalid_model(format!(
                "input size {h}x{w} is not a multiple of the ViT patch size {p} (timm requires it with dynamic_img_size)"
            )));
        }
        (0, 0)
    };
    let grid = ((h + pad.0) / p, (w + pad.1) / p);
    if grid.0 == 0 || grid.1 == 0 {
        return Err(Error::invalid_argument(format!(
            "input {h}x{w} is smaller than the ViT patch size {p}"
        )));
    }
    let pe = PatchEmbedCfg {
        in_ch: cfg.pretrained_cfg.input_size[0],
        dim: v.dim,
        patch: p,
        // CLIP-style pre-norm models have no patch-embed bias.
        bias: !v.pre_norm,
        pad,
        norm: None,
        flatten: false,
    };
    let input = b.input();
    let patches = patch_embed(&mut b.scope("patch_embed"), &input, &pe)?;
    let mut tokens = layers::nchw_to_tokens(b, &patches, v.dim);
    if let Some(n) = &v.embed_norm {
        tokens = n.apply_last(&mut b.scope("patch_embed").scope("norm"), &tokens, v.dim)?;
    }
    trunk(b, &v, cfg, &tokens, &patches, grid, dynamic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::layers::pool::TokenPool;
    use crate::graph::layers::pos_embed::{Interp, Resample};
    use crate::graph::layers::vision_transformer::{BlockKind, MlpKind, Pool};
    use crate::graph::layers::Norm;

    fn parse(json: &Json) -> ModelConfig {
        ModelConfig::parse(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_table_entry_resolves_or_is_unsupported_naming_what() {
        let mut built = 0;
        for name in TABLE.names() {
            let cfg = parse(&TABLE.get(name).unwrap().config);
            match resolve(&cfg) {
                Ok(v) => {
                    built += 1;
                    assert_eq!(cfg.num_features, Some(v.dim), "{name}");
                    assert_eq!(v.distilled, name.contains("distilled"), "{name}");
                    let [_, h, w] = cfg.pretrained_cfg.input_size;
                    assert_eq!(v.grid, (h / v.patch, w / v.patch), "{name}");
                }
                Err(e) => {
                    assert_eq!(
                        e.status(),
                        crate::TimmStatus::TIMM_ERR_UNSUPPORTED,
                        "{name}: {e}"
                    );
                    assert!(e.message().contains(" = "), "{name}: {e}");
                }
            }
        }
        // timm 1.0.31: every one of the 179 entrypoints.
        assert_eq!(built, 179);
    }

    #[test]
    fn model_args_override_the_architecture_like_timm() {
        let mut json = TABLE.get("vit_base_patch16_224").unwrap().config.clone();
        json["model_args"] = serde_json::json!({"embed_dim": 64, "num_heads": 4, "mlp_ratio": 3.7362, "global_pool": "avg", "drop_path_rate": 0.1, "img_size": 224});
        let v = resolve(&parse(&json)).unwrap();
        assert_eq!((v.dim, v.mlp_hidden, v.depth), (64, 239, 12));
        // model_args' pool (and the fc_norm it implies), not config.json's root global_pool.
        assert!(v.use_fc_norm);
        assert_eq!(v.pool, Pool::Tokens(TokenPool::Avg));

        json["model_args"] = serde_json::json!({"mlp_layer": "swiglu", "norm_layer": "rmsnorm", "block_fn": "parallelscalingblock"});
        let v = resolve(&parse(&json)).unwrap();
        assert_eq!(v.mlp_kind, MlpKind::SwiGlu);
        assert_eq!(v.norm, Norm::Rms { eps: 1e-6 });
        let fuse_out_proj = false;
        assert_eq!(v.block_kind, BlockKind::ParallelScaling { fuse_out_proj });

        json["model_args"] = serde_json::json!({"mlp_layer": "convmlp"});
        let e = resolve(&parse(&json)).unwrap_err();
        assert!(e.message().contains("mlp_layer = \"convmlp\""), "{e}");
        json["model_args"] = serde_json::json!({"block_fn": {"partial": "block", "x": 1}});
        let e = resolve(&parse(&json)).unwrap_err();
        assert_eq!(e.status(), crate::TimmStatus::TIMM_ERR_UNSUPPORTED, "{e}");
        assert!(e.message().contains("block_fn"), "{e}");

        json["model_args"] = serde_json::json!({"use_magic": 1});
        let e = resolve(&parse(&json)).unwrap_err();
        assert!(e.message().contains("use_magic = 1"), "{e}");

        json["model_args"] = serde_json::json!({"patch_size": [32, 32], "img_size": [224, 160]});
        let v = resolve(&parse(&json)).unwrap();
        assert_eq!((v.patch, v.grid), (32, (7, 5)));
    }

    #[test]
    fn flexivit_and_radio_resample_bilinear_at_load_like_timms_filter() {
        let r = |a: &str| resolve(&parse(&TABLE.get(a).unwrap().config)).unwrap();
        assert_eq!(r("vit_base_patch16_224").load_resample, Resample::default());
        assert_eq!(r("flexivit_small").load_resample.mode, Interp::Bilinear);
        assert!(r("vit_base_patch16_radio_v3").load_resample.align_corners);
    }
}
