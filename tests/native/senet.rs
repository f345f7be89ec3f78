//! Legacy SENet (timm `senet.py`) native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// The largest magnitude in `v`, at least 1 (the tolerance is relative to it).

#[test]
fn every_senet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("senet");
    assert!(
        fixtures.len() >= 4,
        "only {} senet fixtures",
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
    // Default out_indices (layer0 before the ceil-mode pool), [1, -1], [0, -2], other input sizes.
    for name in ["legacy_seresnet18-narrow", "legacy_seresnet50-narrow"] {
        let f = fixture(name);
        assert!(check_feature_maps(&f, TOL) >= 1, "{name}: no feature_maps");
    }
}

#[test]
fn feature_info_is_timms() {
    let f = fixture("legacy_seresnet18-narrow");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [
        (16, 2, "layer0"),
        (8, 4, "layer1"),
        (8, 8, "layer2"),
        (16, 16, "layer3"),
        (16, 32, "layer4"),
    ]
    .iter()
    .map(|&(c, r, m)| (c, r, m.to_string()))
    .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("legacy_seresnet18", false, &[("seed", seed)])
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
    let m = CModel::create("legacy_seresnet18", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 512);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("legacy_seresnet18-narrow", "block", |c| {
        c["model_args"]["block"] = "bottle2neck".into();
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("block"), "{}", e.message);
    // timm's SENet has no output_stride: the builder refuses it.
    let f = fixture("legacy_seresnet18-narrow");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride must be refused");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}
