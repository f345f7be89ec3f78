//! The ResNet-V2 family's native graphs (timm's resnetv2.py: BiT, the BatchNorm ResNet-V2s,
//! basic and non-pre-activation blocks, EvoNorm and FilterResponseNorm) through the C ABI,
//! against timm.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// The fixtures of the family (BiT with StdConv2d and the zero-padded stem pool among them).
fn native_fixtures() -> Vec<Fixture> {
    fixtures_of_family("resnetv2")
}

#[test]
fn every_fixture_matches_timm_logits_and_features() {
    let fixtures = native_fixtures();
    assert!(
        fixtures.len() >= 4,
        "only {} resnetv2 fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default out_indices, a negative one, output_stride 16 and 8 (dilated stages, the
    // AvgPool2dSame shortcut), another input size.
    let mut checked = 0;
    for f in native_fixtures() {
        checked += check_feature_maps(&f, TOL);
    }
    assert!(checked >= 9, "only {checked} feature-map references");
}

#[test]
fn feature_info_is_timms_stem_and_stages() {
    for (arch, stem) in [
        ("resnetv2_50", "stem.conv"),
        ("resnetv2_50d", "stem.conv3"),
        ("resnetv2_50x1_bit", "stem.conv"),
    ] {
        let m = CModel::create(arch, false, &[("output", "feature_maps")]).unwrap();
        let want: Vec<(usize, usize, String)> = [
            (64, 2, stem),
            (256, 4, "stages.0"),
            (512, 8, "stages.1"),
            (1024, 16, "stages.2"),
            (2048, 32, "stages.3"),
        ]
        .into_iter()
        .map(|(c, r, n)| (c, r, n.to_string()))
        .collect();
        assert_eq!(m.feature_info(), want, "{arch}");
    }
    let m = CModel::create(
        "resnetv2_50",
        false,
        &[("output", "feature_maps"), ("output_stride", "8")],
    )
    .unwrap();
    let reductions: Vec<usize> = m.feature_info().iter().map(|i| i.1).collect();
    assert_eq!(reductions, [2, 4, 8, 8, 8]);
    assert_eq!(
        m.output_shape(4, &[1, 3, 64, 80]).unwrap(),
        [1, 2048, 8, 10]
    );
}

#[test]
fn bare_name_pretrained_false_is_seeded_and_has_timms_widths() {
    let create = |seed: &str| {
        CModel::create("resnetv2_18", false, &[("seed", seed)]).unwrap_or_else(|e| panic!("{e:?}"))
    };
    let m = create("5");
    assert_eq!(m.output_dim(), 1000);
    let input: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
        .collect();
    let out = m.infer(&input, &[1, 3, 64, 64]).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    assert_eq!(out, create("5").infer(&input, &[1, 3, 64, 64]).unwrap());
    assert!(max_abs_diff(&out, &create("6").infer(&input, &[1, 3, 64, 64]).unwrap()) > 1e-6);
    let f = CModel::create("resnetv2_50d_gn", false, &[("output", "features")]).unwrap();
    assert_eq!(f.output_dim(), 2048);
}

#[test]
fn evonorm_and_filter_response_norm_variants_match_timm() {
    // resnetv2_50d_evos (EvoNorm2dS0, 32 groups), resnetv2_50d_frn (FilterResponseNormTlu2d, deep
    // stem) and the B0/B1/B2 EvoNorms and FilterResponseNormAct2d given as norm_layer names.
    let names = [
        "resnetv2_50d_evos-tiny",
        "resnetv2_50d_frn-tiny",
        "resnetv2_50-tiny-evonormb0",
        "resnetv2_50-tiny-evonormb1",
        "resnetv2_50-tiny-evonormb2",
        "resnetv2_50-tiny-frn",
    ];
    for name in names {
        let f = fixture(name);
        check_fixture(&f, "native", &[("graph", "native")], TOL);
        check_features(&f, TOL);
    }
    assert_eq!(
        check_feature_maps(&fixture("resnetv2_50d_frn-tiny"), TOL),
        1
    );
}

#[test]
fn an_unknown_norm_layer_or_evonorm_argument_is_refused() {
    for (tag, norm, why) in [
        ("inorm", serde_json::json!("instancenorm"), "norm_layer"),
        (
            "b0groups",
            serde_json::json!({"partial": "EvoNorm2dB0", "groups": 8}),
            "groups",
        ),
    ] {
        let dir = edited_copy("resnetv2_50-tiny-evonormb0", tag, |c| {
            c["model_args"]["norm_layer"] = norm
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains(why), "{}", e.message);
    }
}

#[test]
fn bad_feature_requests_are_invalid_arguments() {
    let f = fixture("resnetv2_50d-tiny");
    for idx in ["5", "-6"] {
        let e = CModel::create(
            &f.spec("native"),
            true,
            &[("output", "feature_maps"), ("out_indices", idx)],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("out_indices"), "{}", e.message);
    }
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "4")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn logits_take_any_input_size() {
    // Symmetric paddings everywhere: even a 1x1 input keeps a 1x1 map to the head.
    let f = fixture("resnetv2_50d-tiny");
    let m = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    for (h, w) in [(1, 1), (45, 61)] {
        let out = m
            .infer(&vec![0.25f32; 3 * h * w], &[1, 3, h as i64, w as i64])
            .unwrap();
        assert_eq!(out.len(), m.output_dim());
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
