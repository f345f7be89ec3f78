//! RegNet native graphs through the C ABI, against timm's logits and pooled features.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// Logits and `output=features` of the native graph of `spec` against fixture `f`'s reference.
fn check_spec(f: &Fixture, spec: &str, what: &str) {
    let r = reference(f);
    for (output, want, shape) in [
        ("logits", &r.logits, &r.logits_shape),
        ("features", &r.features, &r.features_shape),
    ] {
        let m = CModel::create(spec, true, &[("graph", "native"), ("output", output)])
            .unwrap_or_else(|e| panic!("{} [{what} {output}]: {e:?}", f.name));
        assert_eq!(
            m.output_dim() as i64,
            shape[1],
            "{}: timm_model_output_dim for {output}",
            f.name
        );
        let out = m
            .infer(&r.input, &r.input_shape)
            .unwrap_or_else(|e| panic!("{} [{what} {output}]: {e:?}", f.name));
        let d = max_abs_diff(&out, want);
        eprintln!("{:<32} {what:<22} {output:<8} max|diff| = {d:.3e}", f.name);
        assert!(
            d <= TOL,
            "{} [{what}]: {output} differ from timm by {d}",
            f.name
        );
    }
}

#[test]
fn every_regnet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("regnet");
    assert!(
        fixtures.len() >= 7,
        "only {} regnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_spec(f, &f.spec("native"), "native");
    }
}

#[test]
fn half_precision_weight_file_matches_timm() {
    let f = fixtures_of_family("regnet")
        .into_iter()
        .find(|f| f.weights_dtype == "F16")
        .expect("an F16 regnet fixture");
    check_spec(&f, &f.spec("native"), "native f16");
}

#[test]
fn structure_is_read_from_the_weights_when_model_args_are_lost() {
    // transformers' TimmWrapper writes "model_args": null; the widths then differ from the
    // architecture's defaults and only the weights know them (global_pool stays at the root).
    for f in fixtures_of_family("regnet") {
        let dir = edited_copy(&f.name, "lost", |c| {
            c["model_args"] = serde_json::Value::Null
        });
        check_spec(&f, &format!("local:{}", dir.display()), "model_args=null");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |arch: &str, seed: &str| {
        let m = CModel::create(arch, false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 224, 224]).unwrap()
    };
    let a = run("regnety_002", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero logits");
    assert_eq!(
        a,
        run("regnety_002", "1"),
        "same seed must give the same network"
    );
    assert_ne!(
        a,
        run("regnety_002", "2"),
        "another seed must give another network"
    );
    for arch in ["regnetx_002", "regnetx_004_tv", "regnetz_005"] {
        assert!(run(arch, "0").iter().all(|v| v.is_finite()), "{arch}");
    }
}

#[test]
fn weights_that_disagree_with_the_architecture_are_an_invalid_model() {
    // model_args describe wider stages than the weights hold.
    let e = edited_native_error("regnetx_002-small", "w0", |c| {
        c["model_args"]["w0"] = 16.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("s1.b1."),
        "message must name the tensor: {}",
        e.message
    );

    // An X file (no SE) under a Y architecture with the SE ratio given.
    let e = edited_native_error("regnetx_002-small", "se", |c| {
        c["architecture"] = "regnety_002".into();
        c["model_args"]["se_ratio"] = 0.25.into();
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("se.fc1.weight"),
        "message must name the tensor: {}",
        e.message
    );
}

#[test]
fn pre_activation_and_groupnorm_variants_build_from_their_names() {
    // regnetv (PreBottleneck: bare stem conv, norm-act before each conv, final act without a
    // norm) and regnety_040_sgn (GroupNormAct(group_size=16) in every ConvNormAct).
    for arch in ["regnetv_040", "regnetv_064", "regnety_040_sgn"] {
        let m = CModel::create(arch, false, &[("seed", "3")])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000, "{arch}");
        let x: Vec<f32> = (0..3 * 64 * 64).map(|i| (i % 17) as f32 / 17.0).collect();
        let y = m.infer(&x, &[1, 3, 64, 64]).unwrap();
        assert!(y.iter().all(|v| v.is_finite()), "{arch}: non-finite logits");
    }
}

#[test]
fn a_groupnorm_that_does_not_divide_the_widths_is_an_invalid_model() {
    // timm asserts num_channels % group_size == 0 in GroupNormAct: an 8-wide stem under
    // regnety_040_sgn's group size of 16.
    let e = edited_native_error("regnetx_002-small", "gs", |c| {
        c["architecture"] = "regnety_040_sgn".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(e.message.contains("group_size=16"), "{}", e.message);
}

#[test]
fn unsupported_variants_say_so() {
    // An EvoNorm norm-act layer is not one RegNet takes natively.
    let e = edited_native_error("regnetx_002-small", "evo", |c| {
        c["model_args"]["norm_layer"] = "evonorm2ds0".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);

    let e = edited_native_error("regnetx_002-small", "args", |c| {
        c["model_args"]["block_type"] = "dark".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("block_type"), "{}", e.message);
}

/// The fixtures with `features_only` references (meta.json `feature_maps`).
const FEATURE_FIXTURES: [&str; 6] = [
    "regnetx_002-small",
    "regnety_008_tv-avg-small",
    "regnetz_005-small",
    "regnetv_040-small",
    "regnetv_064-avg-small-f16",
    "regnety_040_sgn-small",
];

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1] and [-2], output_stride 16 and 8 (dilated stages, the
    // avg-down shortcut's AvgPool2dSame), inputs of other sizes down to 3x2: values, shapes from
    // timm_model_output_shape and feature_info against timm's.
    for name in FEATURE_FIXTURES {
        let f = fixture(name);
        assert!(check_feature_maps(&f, TOL) >= 2, "{name}: no feature_maps");
    }
}

#[test]
fn feature_info_is_timms_stem_and_four_stages() {
    let f = fixture("regnetx_002-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let modules: Vec<String> = m.feature_info().into_iter().map(|(_, _, m)| m).collect();
    assert_eq!(modules, ["stem", "s1", "s2", "s3", "s4"]);
    let reductions: Vec<usize> = m.feature_info().into_iter().map(|(_, r, _)| r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
    // output_stride 8: the last two stages keep stride 8 (timm's reduction is the real stride).
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "8")],
    )
    .unwrap();
    let reductions: Vec<usize> = m.feature_info().into_iter().map(|(_, r, _)| r).collect();
    assert_eq!(reductions, [2, 4, 8, 8, 8]);
}

#[test]
fn out_of_range_feature_indices_are_invalid_arguments() {
    let f = fixture("regnetx_002-small");
    for idx in ["5", "-6", "0,7"] {
        let e = CModel::create(
            &f.spec("native"),
            true,
            &[("output", "feature_maps"), ("out_indices", idx)],
        )
        .err()
        .unwrap_or_else(|| panic!("out_indices={idx} must fail"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("out of range"), "{}", e.message);
        assert!(e.message.contains("s4"), "names the maps: {}", e.message);
    }
}

#[test]
fn output_strides_timm_does_not_take_are_refused() {
    let f = fixture("regnetx_002-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "4")],
    )
    .err()
    .expect("output_stride=4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // In model_args timm asserts output_stride in (8, 16, 32).
    let e = edited_native_error("regnetx_002-small", "os", |c| {
        c["model_args"]["output_stride"] = 12.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn empty_inputs_are_refused_and_any_other_size_is_taken() {
    // Every RegNet layer maps a 1-pixel side to 1 pixel (timm too), so no non-empty input is too
    // small; an empty one is an invalid argument, before ONNX Runtime sees it.
    let f = fixture("regnety_008_tv-avg-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    for shape in [[1, 3, 0, 8], [1, 3, 8, 0]] {
        let e = m
            .output_shape(0, &shape)
            .expect_err("empty input must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        let e = m
            .infer_outputs(&[], &shape)
            .expect_err("empty input must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    }
    let x = vec![0.5f32; 3];
    let maps = m.infer_outputs(&x, &[1, 3, 1, 1]).unwrap();
    assert!(maps.iter().all(|t| t.shape[2..] == [1, 1]), "{maps:?}");
}
