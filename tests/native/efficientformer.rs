//! Native EfficientFormer graphs through the C ABI, against timm's logits (the mean of `head`
//! and `head_dist`), pooled features and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;
const SMALL: &str = "efficientformer_l1-small";

#[test]
fn every_efficientformer_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("efficientformer");
    assert!(!fs.is_empty(), "no efficientformer fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_forward_intermediates() {
    // Both stages (the attention stage's tokens back on the grid), then the last one alone.
    assert_eq!(check_feature_maps(&fixture(SMALL), TOL), 2);
    let m = CModel::create(
        &fixture(SMALL).spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,1")],
    )
    .unwrap();
    let want = vec![
        (4, 4, "stages.0".to_string()),
        (8, 8, "stages.1".to_string()),
    ];
    assert_eq!(m.feature_info(), want);
}

fn create_err(options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(SMALL).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    // The attention bias is sized for a 7x7 grid: one input size.
    let e = create_err(&[("input_size", "64x64")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("7x7"), "{}", e.message);
    let fm = ("output", "feature_maps");
    let e = create_err(&[fm, ("out_indices", "2")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    let e = create_err(&[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let x: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let run = |seed: &str| {
        let m = CModel::create("efficientformer_l1", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        m.infer(&x, &[1, 3, 224, 224]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
    let m = CModel::create("efficientformer_l1", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 448);
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
        ("num_vit", serde_json::json!(0)),
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
    // timm reshapes the attention stage's tokens to half the previous grid: it needs a downsample.
    let dir = edited_copy(SMALL, "nodown", |c| {
        c["model_args"]["embed_dims"] = serde_json::json!([4, 4]);
        c["model_args"]["downsamples"] = serde_json::json!([false, false]);
    });
    let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
        .err()
        .expect("must fail");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("downsamples"), "{}", e.message);
}
