//! DenseNet native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_densenet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("densenet");
    assert!(
        fixtures.len() >= 2,
        "only {} densenet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1] and [-2], inputs of other sizes; the blur stem's reflect pad.
    for name in ["densenet121-small", "densenetblur121d-small-f16"] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 2, "{name}");
    }
}

#[test]
fn feature_info_is_timms_stem_norm_blocks_and_norm5() {
    let f = fixture("densenet121-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "features.norm0",
            "features.denseblock1",
            "features.denseblock2",
            "features.denseblock3",
            "features.norm5"
        ]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
}

#[test]
fn bad_feature_requests_are_invalid_arguments() {
    let f = fixture("densenet121-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "5")],
    )
    .err()
    .expect("out_indices=5 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // timm's DenseNet has no dilated form.
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    // Four halvings after the stride-4 stem: 8 pixels end at 0.
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let e = m
        .output_shape(0, &[1, 3, 8, 8])
        .expect_err("an 8x8 input is too small");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    assert_seeded("densenet121", &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("densenet121-small", "norm", |c| {
        c["model_args"]["norm_layer"] = "layernorm2d".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}
