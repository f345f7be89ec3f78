//! Native SwiftFormer graphs through the C ABI, against timm's logits (the mean of `head` and
//! `head_dist`), pooled features and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;
const SMALL: &str = "swiftformer_xs-small";

#[test]
fn every_swiftformer_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("swiftformer");
    assert!(fs.len() >= 2, "only {} swiftformer fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage; [0, -1] at another input size (nothing in SwiftFormer is sized for one).
    assert_eq!(check_feature_maps(&fixture(SMALL), TOL), 2);
    let m = CModel::create(
        &fixture(SMALL).spec("native"),
        true,
        &[("output", "feature_maps")],
    )
    .unwrap();
    let want: Vec<(usize, usize, String)> = [(4, 4), (6, 8), (8, 16), (8, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let f = fixture(SMALL);
    let fm = ("output", "feature_maps");
    let e = CModel::create(&f.spec("native"), true, &[fm, ("out_indices", "-5")])
        .err()
        .expect("out_indices=-5 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // timm's SwiftFormer asserts output_stride == 32.
    let e = CModel::create(&f.spec("native"), true, &[fm, ("output_stride", "16")])
        .err()
        .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let run = |seed: &str| {
        let m = CModel::create("swiftformer_xs", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
    let m = CModel::create("swiftformer_l3", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 512);
}

#[test]
fn feature_maps_of_a_model_without_pooling_build() {
    // timm's features_only works with global_pool '', which the classifier refuses.
    let dir = edited_copy(SMALL, "nopool", |c| {
        c["model_args"]["global_pool"] = serde_json::json!("");
        c["global_pool"] = serde_json::json!("");
    });
    let m = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("output", "feature_maps")],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let m = m.unwrap_or_else(|e| panic!("{e:?}"));
    // The same maps as the pooled model's.
    let f = fixture(SMALL);
    let pooled = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let r = reference(&f);
    let (a, b) = (
        m.infer_outputs(&r.input, &r.input_shape).unwrap(),
        pooled.infer_outputs(&r.input, &r.input_shape).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.shape, &x.data), (&y.shape, &y.data));
    }
}

#[test]
fn variants_not_built_are_refused_with_the_reason() {
    for (key, value) in [
        ("output_stride", serde_json::json!(16)),
        ("global_pool", serde_json::json!("")),
        ("act_layer", serde_json::json!("relu")),
        ("no_such_arg", serde_json::json!(1)),
    ] {
        let dir = edited_copy(SMALL, key, |c| c["model_args"][key] = value.clone());
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{key}: {e:?}");
        assert!(e.message.contains(key), "{key}: {}", e.message);
    }
}
