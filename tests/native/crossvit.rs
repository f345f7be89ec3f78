//! Native CrossViT (timm `crossvit.py`) through the C ABI, against timm's logits, pre-logits
//! features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_crossvit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("crossvit");
    assert!(fs.len() >= 2, "crossvit fixtures missing from index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default (each branch's last block, branch-major) and out_indices with a negative one.
    let n = check_feature_maps(&fixture("crossvit_tiny_small"), TOL);
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
    // timm's PatchEmbed asserts the input is img_size.
    let e = create_err("crossvit_tiny_small", &[("input_size", "48x48")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("32x32 only"), "{}", e.message);
    let maps = ("output", "feature_maps");
    let e = create_err("crossvit_tiny_small", &[maps, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn a_grid_timms_position_embedding_does_not_cover_is_refused() {
    // 224/240 of 32 pixels is 29: timm sizes pos_embed_1 as 29 // 8 * 29 // 8 = 10 tokens
    // for a 3x3 grid, and fails at the addition.
    let dir = edited_copy("crossvit_tiny_small", "scale", |cfg| {
        cfg["model_args"]["img_scale"] = serde_json::json!([1.0, 224.0 / 240.0]);
    });
    let spec = format!("local:{}", dir.display());
    let e = CModel::create(&spec, true, &[("graph", "native")])
        .err()
        .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("position embedding"), "{}", e.message);
}

#[test]
fn bare_names_build_with_seeded_weights() {
    let input: Vec<f32> = (0..3 * 240 * 240)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let shape = [1, 3, 240, 240];
    assert_seeded("crossvit_tiny_240", &[], 1000, &input, &shape, ("7", "8"));
}
