//! InceptionNeXt native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (dilated stages included).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_inception_next_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("inception_next");
    assert!(fixtures.len() >= 2, "only {} fixtures", fixtures.len());
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1], output_stride 16 and 8 (with [0, -2]), another input size.
    for name in ["inception_next_atto-small", "inception_next_tiny-small"] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 1, "{name}");
    }
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("inception_next_tiny-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(16, 4), (32, 8), (48, 16), (64, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bad_feature_requests_are_refused() {
    let f = fixture("inception_next_atto-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "-5")],
    )
    .err()
    .expect("out_indices=-5 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "4")],
    )
    .err()
    .expect("output_stride=4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let e = m
        .output_shape(0, &[1, 3, 3, 3])
        .expect_err("a 3x3 input is too small");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("inception_next_atto", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
    let m = CModel::create("inception_next_atto", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 960);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("inception_next_atto-small", "norm", |c| {
        c["model_args"]["norm_layer"] = "layernorm2d".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}
