//! Native CaiT (timm `cait.py`) through the C ABI, against timm's logits, pre-logits features and
//! features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_cait_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("cait");
    assert!(fs.len() >= 2, "cait fixtures missing from index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default (the last 3 trunk blocks) and out_indices with a negative one.
    let n = check_feature_maps(&fixture("cait_xxs_token"), TOL);
    assert_eq!(n, 2, "feature-map references");
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_timm_does_not_support_are_refused_naming_why() {
    // timm never resamples CaiT's position embedding.
    let e = create_err("cait_xxs_token", &[("input_size", "48x48")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("position embedding"), "{}", e.message);
    let maps = ("output", "feature_maps");
    let e = create_err("cait_xxs_token", &[maps, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_names_build_with_seeded_weights() {
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let shape = [1, 3, 224, 224];
    assert_seeded("cait_xxs24_224", &[], 1000, &input, &shape, ("7", "8"));
}
