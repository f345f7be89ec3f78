//! TResNet native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_tresnet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("tresnet");
    assert!(
        fixtures.len() >= 2,
        "only {} tresnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // timm's default out_indices (1..4), [2, -1] and [1, 3], inputs of other (odd) sizes.
    for name in ["tresnet_m-tiny", "tresnet_v2_l-tiny-f16"] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 2, "{name}");
    }
}

#[test]
fn feature_info_is_timms_body_layers() {
    let f = fixture("tresnet_v2_l-tiny-f16");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        ["body.layer1", "body.layer2", "body.layer3", "body.layer4"]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [4, 8, 16, 32]);
    // v2: Bottlenecks everywhere, planes int(64 * 0.125) // 8 * 8 = 8.
    let channels: Vec<usize> = info.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(channels, [32, 64, 128, 256]);
    // Index 0 is the stem conv (timm lists it but cannot return it).
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0")],
    )
    .unwrap();
    assert_eq!(m.feature_info(), [(8, 4, "body.conv1".to_string())]);
    assert_eq!(m.output_shape(0, &[1, 3, 64, 48]).unwrap(), [1, 8, 16, 12]);
}

#[test]
fn bad_requests_are_refused() {
    let f = fixture("tresnet_m-tiny");
    // timm's TResNet has no dilated form.
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "5")],
    )
    .err()
    .expect("out_indices=5 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    assert_seeded("tresnet_m", &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("tresnet_m-tiny", "aa", |c| {
        c["model_args"]["no_aa_jit"] = true.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("no_aa_jit"), "{}", e.message);
}
