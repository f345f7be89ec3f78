//! ResNeSt (timm `resnest.py`) native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (dilated stages included).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// The largest magnitude in `v`, at least 1 (the tolerance is relative to it).

#[test]
fn every_resnest_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("resnest");
    assert!(
        fixtures.len() >= 3,
        "only {} resnest fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        let d = check_features(f, TOL * scale(&r.features));
        eprintln!("{:<34} features max|diff| = {d:.3e}", f.name);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1] and [0, -2], output_stride 16 and 8, other input sizes.
    for name in ["resnest14d-tiny", "resnest50d_4s2x40d-tiny"] {
        let f = fixture(name);
        assert!(check_feature_maps(&f, TOL) >= 1, "{name}: no feature_maps");
    }
}

#[test]
fn feature_info_is_timms() {
    let f = fixture("resnest14d-tiny");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [
        (16, 2, "act1"),
        (32, 4, "layer1"),
        (32, 8, "layer2"),
        (64, 16, "layer3"),
        (64, 32, "layer4"),
    ]
    .iter()
    .map(|&(c, r, m)| (c, r, m.to_string()))
    .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("resnest14d", false, &[("seed", seed)])
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
    let m = CModel::create("resnest14d", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 2048);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("resnest14d-tiny", "radix0", |c| {
        c["model_args"]["block_args"]["radix"] = 0.into();
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("radix"), "{}", e.message);
    let e = edited_native_error("resnest14d-tiny", "norm", |c| {
        c["model_args"]["norm_layer"] = "groupnorm".into();
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}
