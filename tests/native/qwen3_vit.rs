//! Native Qwen3 ViT graphs through the C ABI, against timm's logits, pooled features
//! (`forward_head(pre_logits=True)`) and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_qwen3_vit_fixture_matches_timm_natively() {
    // Rope attention + resampled learned grid; the `_merge` classifier through the projector.
    let fs = fixtures_of_family("qwen3_vit");
    assert!(fs.len() >= 2, "only {} qwen3_vit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
        // The non-affine LayerNorm keeps features near 1; judge them by their own largest value.
        let r = reference(f);
        let m = CModel::create(&f.spec("native"), true, &[("output", "features")]).unwrap();
        let got = m.infer(&r.input, &r.input_shape).unwrap();
        let scale = r.features.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(scale > 0.0, "{}: all-zero features", f.name);
        let d = max_abs_diff(&got, &r.features) / scale;
        assert!(
            d <= TOL,
            "{}: features differ from timm by {d} of the largest",
            f.name
        );
    }
}

#[test]
fn feature_maps_match_timms_forward_intermediates() {
    // Default (last three blocks), [0, -1], and another input size (grid and rope rebuilt).
    assert_eq!(check_feature_maps(&fixture("qwen3_vit_cls"), TOL), 3);
}

#[test]
fn feature_info_is_every_encoder_block_at_the_patch_stride() {
    let f = fixture("qwen3_vit_cls");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,1,2")],
    )
    .unwrap();
    let want: Vec<(usize, usize, String)> = (0..3)
        .map(|i| (16, 4, format!("encoder.blocks.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn token_outputs_and_odd_merge_grids_are_refused() {
    // The encoder returns the projector's tokens, not one vector per image.
    let e = CModel::create("qwen3_vit_88m_enc", false, &[])
        .err()
        .expect("the _enc encoder must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("token sequence"), "{}", e.message);
    // The 2x2 merge needs an even patch grid: 20x24 at patch 4 is 5x6.
    let spec = fixture("qwen3_vit_merge").spec("native");
    let e = CModel::create(&spec, true, &[("input_size", "20x24")])
        .err()
        .expect("an odd grid must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("merge_size"), "{}", e.message);
    let dir = edited_copy("qwen3_vit_cls", "gp", |c| {
        c["model_args"]["global_pool"] = "".into()
    });
    let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
        .err()
        .expect("global_pool='' must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}
