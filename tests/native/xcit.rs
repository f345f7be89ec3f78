//! Native XCiT (timm `xcit.py`) through the C ABI, against timm's logits, pre-logits features and
//! features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_xcit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("xcit");
    assert!(fs.len() >= 3, "xcit fixtures missing from index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default (the last 3 blocks), out_indices with a negative one, and a 48x32 input
    // (the Fourier encoding made at load for its 3x2 grid).
    let n = check_feature_maps(&fixture("xcit_nano_p16"), TOL);
    assert_eq!(n, 3, "feature-map references");
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let f = fixture("xcit_nano_p16");
    let create = |opts: &[(&str, &str)]| {
        CModel::create(&f.spec("native"), true, opts)
            .err()
            .expect("must fail")
    };
    let maps = ("output", "feature_maps");
    let e = create(&[maps, ("out_indices", "3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    let e = create(&[maps, ("output_stride", "8")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_names_build_with_seeded_weights() {
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let shape = [1, 3, 224, 224];
    assert_seeded(
        "xcit_nano_12_p16_224",
        &[],
        1000,
        &input,
        &shape,
        ("7", "8"),
    );
}
