//! Native relative-position ViTs (timm `vision_transformer_relpos.py`) through the C ABI, against
//! timm's logits, pre-logits features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_relpos_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("vision_transformer_relpos");
    assert!(fs.len() >= 6, "relpos fixtures missing from index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default (the last 3 blocks), another input size (the MLP bias follows the grid),
    // and out_indices with a negative one after a class token.
    let n = check_feature_maps(&fixture("test_vit_relpos"), TOL)
        + check_feature_maps(&fixture("vit_relpos_cls"), TOL);
    assert_eq!(n, 3, "feature-map references");
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let maps = ("output", "feature_maps");
    let e = create_err("vit_relpos_cls", &[maps, ("out_indices", "2")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = create_err("vit_relpos_cls", &[maps, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    let e = create_err("test_vit_relpos", &[maps, ("input_size", "4x4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn a_bias_table_at_another_grid_is_refused_naming_why() {
    // The RelPosBias table is sized for the 2x2 grid; timm resizes it only in its checkpoint filter.
    let e = create_err("vit_relpos_bias_clsgap", &[("input_size", "24x24")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(
        e.message.contains("relative position bias"),
        "{}",
        e.message
    );
}

#[test]
fn bare_names_build_with_seeded_weights() {
    let input: Vec<f32> = (0..3 * 160 * 160)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let shape = [1, 3, 160, 160];
    assert_seeded("test_vit_relpos", &[], 1000, &input, &shape, ("7", "8"));
}
