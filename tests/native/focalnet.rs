//! Native FocalNet graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps. The fixtures' config.json lacks the narrowed depths, widths and focal
//! settings (timm's entrypoints fix them), so every check here also reads them from the weights.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_focalnet_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("focalnet");
    assert!(fs.len() >= 2, "only {} focalnet fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage; [1, -1] at another input size; the three-stage post-norm model.
    assert_eq!(
        check_feature_maps(&fixture("focalnet_tiny_srf-narrow"), TOL),
        2
    );
    assert_eq!(
        check_feature_maps(&fixture("focalnet_huge_fl3-narrow"), TOL),
        1
    );
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("focalnet_tiny_srf-narrow");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(4, 4), (8, 8), (16, 16), (32, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("layers.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let f = fixture("focalnet_tiny_srf-narrow");
    let fm = ("output", "feature_maps");
    let e = CModel::create(&f.spec("native"), true, &[fm, ("out_indices", "4")])
        .err()
        .expect("out_indices=4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // timm's FocalNet has no output_stride.
    let e = CModel::create(&f.spec("native"), true, &[fm, ("output_stride", "16")])
        .err()
        .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn unsupported_variants_say_so() {
    for (tag, key, value, says) in [
        (
            "norm",
            "norm_layer",
            serde_json::json!("rmsnorm2d"),
            "norm_layer",
        ),
        // timm's FocalModulation breaks on even kernels (the map grows by one per level).
        (
            "even",
            "focal_windows",
            serde_json::json!([2, 2, 2, 2]),
            "focal_windows",
        ),
        ("unknown", "use_magic", serde_json::json!(true), "use_magic"),
    ] {
        let dir = edited_copy("focalnet_tiny_srf-narrow", tag, |c| {
            c["model_args"][key] = value
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{tag}: {e:?}");
        assert!(e.message.contains(says), "{tag}: {}", e.message);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // The smallest FocalNet (28 M), its structure from timm's entrypoint, at 64x64.
    assert_bare_seeded("focalnet_tiny_srf", 64, 1000);
}
