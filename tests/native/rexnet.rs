//! ReXNet native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (dilated stages included).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_rexnet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("rexnet");
    assert!(fixtures.len() >= 2, "only {} fixtures", fixtures.len());
    for f in &fixtures {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Every map, [1, -1], output_stride 16, output_stride 8 at another input size.
    for name in ["rexnet_100-small", "rexnetr_100-small"] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 1, "{name}");
    }
}

#[test]
fn feature_info_taps_the_block_before_each_stride() {
    let f = fixture("rexnet_100-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let got: Vec<(usize, String)> = m
        .feature_info()
        .into_iter()
        .map(|(_, r, m)| (r, m))
        .collect();
    let want: Vec<(usize, String)> = [
        (2, "features.0"),
        (4, "features.1"),
        (8, "features.2"),
        (16, "features.6"),
        (32, "features.8"),
    ]
    .iter()
    .map(|&(r, m)| (r, m.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn bad_output_strides_are_refused() {
    let f = fixture("rexnet_100-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "4")],
    )
    .err()
    .expect("output_stride=4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("rexnet_100", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
    let m = CModel::create("rexnetr_200", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 2560);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("rexnet_100-small", "act", |c| {
        c["model_args"]["act_layer"] = "nonsense_act".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("nonsense_act"), "{}", e.message);
}
