//! SelecSLS native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_selecsls_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("selecsls");
    assert!(
        fixtures.len() >= 3,
        "only {} selecsls fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        // 1e-4 relative to the largest pooled feature (at least 1), as for the logits.
        let scale = reference(f)
            .features
            .iter()
            .fold(1f32, |a, v| a.max(v.abs()));
        check_features(f, TOL * scale);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices (stem.2 .. head.1), the last head conv at another input size.
    assert!(check_feature_maps(&fixture("selecsls42b-narrow"), TOL) >= 2);
}

#[test]
fn feature_info_is_timms_cfg_taps() {
    let f = fixture("selecsls60-narrow-f16");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    // timm's default out_indices (0..4): head.3 only when asked for.
    assert_eq!(
        modules,
        ["stem.2", "features.1", "features.4", "features.8", "head.1"]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
    // The narrowed widths, read from the weights.
    let channels: Vec<usize> = info.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(channels, [32, 8, 8, 12, 8]);
}

#[test]
fn output_stride_is_refused_as_timm_has_no_dilated_selecsls() {
    let f = fixture("selecsls42b-narrow");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    assert_seeded("selecsls42b", &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
}

#[test]
fn unknown_model_args_are_refused() {
    let e = edited_native_error("selecsls42b-narrow", "arg", |c| {
        c["model_args"]["output_stride"] = 16.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}
