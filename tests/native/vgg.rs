//! VGG native graphs through the C ABI, against timm's logits, pre-logits features (after
//! ConvMlp) and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_vgg_fixture_matches_timm_natively() {
    // vgg11-narrow ends at 1x1 before ConvMlp (adaptive pool up to 7x7 on both axes),
    // vgg11_bn-narrow at 1x7 (height only); widths read from the weights.
    let fixtures = fixtures_of_family("vgg");
    assert!(fixtures.len() >= 2, "only {} vgg fixtures", fixtures.len());
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    assert!(check_feature_maps(&fixture("vgg11-narrow"), TOL) >= 3);
}

#[test]
fn feature_info_is_timms_six_taps_from_stride_1() {
    let f = fixture("vgg11-narrow");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "features.1",
            "features.4",
            "features.9",
            "features.14",
            "features.19",
            "features.20"
        ]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [1, 2, 4, 8, 16, 32]);
}

#[test]
fn bad_feature_requests_are_refused() {
    let f = fixture("vgg11-narrow");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "-7")],
    )
    .err()
    .expect("out_indices=-7 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // Five 2x2 max pools: a 16-pixel side ends at 0.
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let e = m.output_shape(0, &[1, 3, 16, 64]).expect_err("too small");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |arch: &str, seed: &str| {
        let m = CModel::create(
            arch,
            false,
            &[
                ("seed", seed),
                ("output", "feature_maps"),
                ("out_indices", "2"),
            ],
        )
        .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        let x: Vec<f32> = (0..3 * 32 * 32)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer_outputs(&x, &[1, 3, 32, 32]).unwrap().remove(0)
    };
    let a = run("vgg11_bn", "1");
    assert_eq!(a.shape, [1, 256, 8, 8]);
    assert!(a.data.iter().all(|v| v.is_finite()), "non-finite maps");
    assert_eq!(a.data, run("vgg11_bn", "1").data, "same seed, same network");
    assert_ne!(
        a.data,
        run("vgg11_bn", "2").data,
        "another seed, another network"
    );
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("vgg11-narrow", "norm", |c| {
        c["model_args"]["norm_layer"] = "groupnorm".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}
