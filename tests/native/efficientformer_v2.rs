//! Native EfficientFormerV2 graphs through the C ABI, against timm's logits (the mean of `head`
//! and `head_dist`), pooled features and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;
const SMALL: &str = "efficientformerv2_s0-small";

#[test]
fn every_efficientformer_v2_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("efficientformer_v2");
    assert!(
        !fs.is_empty(),
        "no efficientformer_v2 fixtures in index.json"
    );
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    assert_eq!(check_feature_maps(&fixture(SMALL), TOL), 1);
    let m = CModel::create(
        &fixture(SMALL).spec("native"),
        true,
        &[("output", "feature_maps")],
    )
    .unwrap();
    // timm's reductions follow `downsamples` (stages 1 and 2 keep stride 4 here).
    let want: Vec<(usize, usize, String)> = [(4, 4), (4, 4), (4, 4), (6, 8)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
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
    // The attention biases are sized from img_size: one input size.
    let e = create_err(&[("input_size", "64x64")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("img_size"), "{}", e.message);
    let fm = ("output", "feature_maps");
    let e = create_err(&[fm, ("out_indices", "4")]);
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
        let m = CModel::create("efficientformerv2_s0", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        m.infer(&x, &[1, 3, 224, 224]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
    let m = CModel::create("efficientformerv2_l", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 384);
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
        ("depths", serde_json::json!([1, 1, 1])),
        ("global_pool", serde_json::json!("")),
        ("norm_layer", serde_json::json!("layernorm2d")),
        ("mlp_ratios", serde_json::json!("wide")),
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

#[test]
fn an_img_size_timm_cannot_run_is_refused() {
    // 36x36: stage 2's 9x9 grid halves to 5x5 and upsamples to 10x10, which timm cannot add.
    let dir = edited_copy(SMALL, "odd", |c| {
        c["model_args"]["img_size"] = serde_json::json!([36, 36]);
        c["pretrained_cfg"]["input_size"] = serde_json::json!([3, 36, 36]);
    });
    let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
        .err()
        .expect("must fail");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("divisible"), "{}", e.message);
}
