//! ConvNeXt native graphs through the C ABI, against timm's logits and pooled features.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// Logits and `output=features` of the native graph against timm, for one fixture.
fn check_native(f: &Fixture) -> (f32, f32) {
    check_fixture(f, "native", &[("graph", "native")], TOL);
    let r = reference(f);
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("graph", "native"), ("output", "features")],
    )
    .unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    assert_eq!(
        m.output_dim() as i64,
        r.features_shape[1],
        "{}: timm_model_output_dim vs num_features",
        f.name
    );
    let feats = m
        .infer(&r.input, &r.input_shape)
        .unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    let df = max_abs_diff(&feats, &r.features);
    eprintln!(
        "{:<32} {:<14} features max|diff| = {df:.3e}",
        f.name, "native"
    );
    assert!(df <= TOL, "{}: features differ from timm by {df}", f.name);

    let logits = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    let out = logits.infer(&r.input, &r.input_shape).unwrap();
    (max_abs_diff(&out, &r.logits), df)
}

#[test]
fn every_convnext_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("convnext");
    assert!(
        fixtures.len() >= 8,
        "only {} convnext fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_native(f);
    }
}

#[test]
fn foundation_convnext_fixtures_run_natively() {
    // timm's own test_convnext, and the same architecture saved by transformers' TimmWrapper
    // (prefixed tensor names, "model_args": null).
    for name in ["test_convnext", "test_convnext-transformers"] {
        check_native(&fixture(name));
    }
}

#[test]
fn half_precision_weight_files_match_timm() {
    let half: Vec<_> = fixtures_of_family("convnext")
        .into_iter()
        .filter(|f| f.weights_dtype != "F32")
        .collect();
    assert!(
        half.iter().any(|f| f.weights_dtype == "F16"),
        "no F16 convnext fixture"
    );
    assert!(
        half.iter().any(|f| f.weights_dtype == "BF16"),
        "no BF16 convnext fixture"
    );
    for f in &half {
        let (dl, df) = check_native(f);
        assert!(dl <= TOL && df <= TOL);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("convnext_atto", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let shape = [1i64, 3, 224, 224];
        let x: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &shape).unwrap()
    };
    let a = run("3");
    assert_eq!(a.len(), 1000);
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero logits");
    assert_eq!(a, run("3"), "same seed must give the same network");
    assert_ne!(a, run("4"), "another seed must give another network");

    // The v2 (GRN) path and features output without weights.
    let m = CModel::create("convnextv2_atto", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 320);
}

#[test]
fn structure_is_read_from_the_weights_when_model_args_are_lost() {
    // transformers' TimmWrapper writes "model_args": null; every fixture is shrunk through
    // model_args, so depths, widths, stem, head MLP and norm placement must come from the weights.
    for f in fixtures_of_family("convnext") {
        let r = reference(&f);
        let dir = edited_copy(&f.name, "lost", |c| {
            c["model_args"] = serde_json::Value::Null
        });
        for (output, want) in [("logits", &r.logits), ("features", &r.features)] {
            let m = CModel::create(
                &format!("local:{}", dir.display()),
                true,
                &[("graph", "native"), ("output", output)],
            )
            .unwrap_or_else(|e| panic!("{} [model_args=null {output}]: {e:?}", f.name));
            let d = max_abs_diff(&m.infer(&r.input, &r.input_shape).unwrap(), want);
            eprintln!(
                "{:<32} model_args=null {output:<8} max|diff| = {d:.3e}",
                f.name
            );
            assert!(
                d <= TOL,
                "{} [model_args=null]: {output} differ from timm by {d}",
                f.name
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn weights_that_disagree_with_the_architecture_are_an_invalid_model() {
    // model_args claim wider stages than the weights hold.
    let e = edited_native_error("convnext_atto-small", "dims", |c| {
        c["model_args"]["dims"] = serde_json::json!([8, 8, 16, 24])
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("stages.3."),
        "message must name the tensor: {}",
        e.message
    );

    // A v1 file (layer scale, no GRN) under a v2 architecture with the MLP layout forced.
    let e = edited_native_error("convnext_atto-small", "v2", |c| {
        c["architecture"] = "convnextv2_atto".into();
        c["model_args"]["use_grn"] = true.into();
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("mlp.grn.weight"),
        "message must name the tensor: {}",
        e.message
    );
}

#[test]
fn unknown_variants_and_arguments_are_unsupported() {
    let e = edited_native_error("convnext_atto-small", "arch", |c| {
        c["architecture"] = "convnext_mega".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("convnext_mega"), "{}", e.message);

    let e = edited_native_error("convnext_atto-small", "args", |c| {
        c["model_args"]["mlp_ratio"] = 3.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("mlp_ratio"), "{}", e.message);

    // timm's `fast` pool is its average: the same logits as the fixture's `avg`.
    let dir = edited_copy("convnext_atto-small", "pool", |c| {
        c["global_pool"] = "fast".into();
        c["model_args"]["global_pool"] = "fast".into();
    });
    let m = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .unwrap_or_else(|e| panic!("global_pool fast: {e:?}"));
    let r = reference(&fixture("convnext_atto-small"));
    let d = max_abs_diff(&m.infer(&r.input, &r.input_shape).unwrap(), &r.logits);
    assert!(
        d <= 1e-4 * r.logits.iter().fold(1f32, |a, v| a.max(v.abs())),
        "{d}"
    );
    drop(m);
    // A pool timm does not have is refused, naming the key.
    let dir2 = edited_copy("convnext_atto-small", "pool2", |c| {
        c["global_pool"] = "lp".into();
        c["model_args"]["global_pool"] = "lp".into();
    });
    let e = CModel::create(
        &format!("local:{}", dir2.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir2);
}

// ---------------------------------------------------------------------------------------------
// feature maps (timm's features_only=True)

#[test]
fn feature_maps_match_timm_features_only() {
    // Every stage, a subset with a negative index, output_stride 16 and 8 (dilated stages, the
    // Linear- and conv-MLP layouts) and inputs of other sizes.
    let mut checked = 0;
    for f in fixtures_of_family("convnext") {
        checked += check_feature_maps(&f, TOL);
    }
    assert!(checked >= 6, "only {checked} feature-map references");
}

#[test]
fn feature_maps_take_any_input_size() {
    let f = fixture("convnext_atto-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let shapes: Vec<_> = (0..m.output_count())
        .map(|i| m.output_shape(i, &[1, 3, 64, 33]).unwrap())
        .collect();
    assert_eq!(
        shapes,
        [
            vec![1, 8, 16, 8],
            vec![1, 8, 8, 4],
            vec![1, 16, 4, 2],
            vec![1, 16, 2, 1]
        ]
    );
    let x = vec![0.25f32; 3 * 64 * 33];
    let maps = m.infer_outputs(&x, &[1, 3, 64, 33]).unwrap();
    assert!(maps.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let f = fixture("convnext_atto-small");
    let create = |opts: &[(&str, &str)]| {
        let mut o = vec![("output", "feature_maps")];
        o.extend_from_slice(opts);
        CModel::create(&f.spec("native"), true, &o)
    };
    for bad in ["0,4", "-5"] {
        let e = create(&[("out_indices", bad)]).err().expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("out of range"), "{}", e.message);
    }
    let e = create(&[("output_stride", "4")]).err().expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);

    // 31x31 leaves the last stage's 2x2 downsample nothing to cover.
    let m = create(&[]).unwrap();
    let e = m.output_shape(3, &[1, 3, 31, 31]).expect_err("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    let x = vec![0f32; 3 * 31 * 31];
    let e = m.infer_outputs(&x, &[1, 3, 31, 31]).expect_err("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("too small"), "{}", e.message);
}
