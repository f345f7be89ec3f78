//! Native hybrid ViTs through the C ABI, against timm's logits, pre-logits features and
//! `features_only` maps: ConvStem, ResNetV2 and features_only ResNet-D backbones.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_hybrid_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("vision_transformer_hybrid");
    assert!(!fs.is_empty(), "no hybrid ViT fixtures");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // The last block on the ConvStem's, the ResNetV2 and the ResNet-D backbone's grid.
    assert_eq!(check_feature_maps(&fixture("vit_base_mci-small"), TOL), 1);
    assert_eq!(check_feature_maps(&fixture("vit_small_r26-small"), TOL), 1);
    assert_eq!(
        check_feature_maps(&fixture("vit_small_resnet50d-small"), TOL),
        1
    );
}

#[test]
fn feature_info_is_the_blocks_at_the_backbone_reduction() {
    let info = |name: &str| {
        let f = fixture(name);
        let opts = [("output", "feature_maps"), ("out_indices", "0")];
        CModel::create(&f.spec("native"), true, &opts)
            .unwrap()
            .feature_info()
    };
    // ConvStem strides 4 · 2 · 2; the ResNetV2 stem's 2 · 2 (its one stage keeps the size);
    // patch 1 both.
    assert_eq!(
        info("vit_base_mci-small"),
        vec![(16, 16, "blocks.0".into())]
    );
    assert_eq!(info("vit_small_r26-small"), vec![(8, 4, "blocks.0".into())]);
    // ResNet-50-D up to its third stage: stride 16 (the backbone's own maps are not recorded).
    assert_eq!(
        info("vit_small_resnet50d-small"),
        vec![(16, 16, "blocks.0".into())]
    );
}

#[test]
fn seeded_random_weights_build_run_and_differ_by_seed() {
    // Without weights the ConvStem has timm's hard-coded widths (192, 192, 768), so embed_dim
    // must be 768 (timm asserts it without a projection): one block at 32 px keeps it quick.
    let dir = edited_copy("vit_base_mci-small", "seeded", |c| {
        let a = &mut c["model_args"];
        (a["embed_dim"], a["num_heads"], a["depth"]) = (768.into(), 12.into(), 1.into());
    });
    let spec = format!("local:{}", dir.display());
    let x: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(&spec, &[], 5, &x, &[1, 3, 32, 32], ("1", "2"));
    // The narrow weights of the fixture against that architecture: timm's assert.
    let e = CModel::create(&fixture("vit_base_mci-small").spec("native"), false, &[])
        .err()
        .expect("embed_dim 16 without weights must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resnet_d_backbone_builds_seeded_without_weights() {
    // pretrained=false: timm's ResNet-50-D widths and blocks (3, 4, 6) up to its third stage
    // in front of the fixture's one-block ViT, at 32 px.
    let f = fixture("vit_small_resnet50d-small");
    let x: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let run = |seed: &str| {
        let m = CModel::create(&f.spec("native"), false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 5);
        m.infer(&x, &[1, 3, 32, 32]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
}

#[test]
fn dynamic_img_size_is_refused() {
    let f = fixture("vit_base_mci-small");
    let e = CModel::create(&f.spec("native"), true, &[("dynamic_img_size", "true")])
        .err()
        .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}
