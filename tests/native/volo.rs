//! Native VOLO (timm `volo.py`) through the C ABI, against timm's logits, pre-logits features
//! and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_volo_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("volo");
    assert!(fs.len() >= 2, "volo fixtures missing from index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default (the last 3 stages) and out_indices with a negative one.
    let n = check_feature_maps(&fixture("volo_d1_small"), TOL);
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
    // The position embedding covers img_size's grid only.
    let e = create_err("volo_d1_small", &[("input_size", "64x64")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("32x32 only"), "{}", e.message);
    let maps = ("output", "feature_maps");
    let e = create_err("volo_d1_small", &[maps, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn a_position_embedding_off_the_map_is_refused() {
    // pooling_scale 4 sizes pos_embed for a 1x1 grid; the map it is added to is 2x2 (timm fails
    // at the addition).
    let dir = edited_copy("volo_d1_small", "pool4", |cfg| {
        cfg["model_args"]["pooling_scale"] = serde_json::json!(4);
    });
    let spec = format!("local:{}", dir.display());
    let e = CModel::create(&spec, true, &[("graph", "native")])
        .err()
        .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("position embedding"), "{}", e.message);
}

#[test]
fn a_bare_name_builds_and_runs_with_seeded_weights() {
    // Once only: volo_d1_224 (27M parameters) is slow to build in a debug build; the seed's
    // determinism is the builder's, tested by the other families.
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let m = CModel::create("volo_d1_224", false, &[("seed", "7")]).unwrap();
    assert_eq!(m.output_dim(), 1000);
    let a = m.infer(&input, &[1, 3, 224, 224]).unwrap();
    assert!(a.iter().all(|x| x.is_finite()));
    assert!(a.iter().any(|x| *x != a[0]), "logits vary over classes");
}
