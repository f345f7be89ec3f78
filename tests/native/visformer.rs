//! Native Visformer (timm `visformer.py`) through the C ABI, against timm's logits, pre-logits
//! features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_visformer_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("visformer");
    assert!(fs.len() >= 2, "visformer fixtures missing from index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage (timm's default) and out_indices with a negative one.
    let n = check_feature_maps(&fixture("visformer_tiny_small"), TOL);
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
    // timm's PatchEmbed asserts its img_size and the position maps cover that grid only.
    let e = create_err("visformer_tiny_small", &[("input_size", "64x64")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("32x32 only"), "{}", e.message);
    let maps = ("output", "feature_maps");
    let e = create_err("visformer_tiny_small", &[maps, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn the_vit_stem_timm_cannot_run_is_refused() {
    let dir = edited_copy("visformer_tiny_small", "vitstem", |cfg| {
        cfg["model_args"]["vit_stem"] = serde_json::json!(true);
    });
    let spec = format!("local:{}", dir.display());
    let e = CModel::create(&spec, true, &[("graph", "native")])
        .err()
        .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("vit_stem"), "{}", e.message);
}

#[test]
fn bare_names_build_with_seeded_weights() {
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let shape = [1, 3, 224, 224];
    assert_seeded("visformer_tiny", &[], 1000, &input, &shape, ("7", "8"));
}
