//! Native HieraDet (SAM 2 Hiera) graphs through the C ABI, against timm's logits, pooled features
//! and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_hieradet_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("hieradet_sam2");
    assert!(fs.len() >= 2, "no hieradet_sam2 fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage end; out_indices with a negative index.
    assert_eq!(
        check_feature_maps(&fixture("sam2_hiera_tiny-small"), TOL),
        2
    );
    // Padded, pooled windows cropped back; an unpooled stage change.
    assert_eq!(check_feature_maps(&fixture("hieradet_small-small"), TOL), 1);
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_the_model_cannot_serve_are_errors() {
    let fm = ("output", "feature_maps");
    let e = create_err("sam2_hiera_tiny-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    let e = create_err("sam2_hiera_tiny-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // 40 px: a 10x10 token grid the 4x4 window position embedding does not tile.
    let e = create_err("sam2_hiera_tiny-small", &[("input_size", "40x40")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("window"), "{}", e.message);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create(
            "sam2_hiera_tiny",
            false,
            &[("seed", seed), ("input_size", "64x64")],
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let shape = [1i64, 3, 64, 64];
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &shape).unwrap()
    };
    let a = run("3");
    // sam2 models are feature extractors (num_classes 0): the normed pooled features.
    assert_eq!(a.len(), 768);
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero output");
    assert_eq!(a, run("3"), "same seed must give the same network");
    assert_ne!(a, run("4"), "another seed must give another network");
}

#[test]
fn variants_not_built_are_refused_with_the_reason() {
    for (key, value) in [
        ("global_pool", serde_json::json!("")),
        ("norm_layer", serde_json::json!("rmsnorm")),
        ("patch_kernel", serde_json::json!([7, 5])),
        ("use_magic", serde_json::json!(true)),
    ] {
        let dir = edited_copy("sam2_hiera_tiny-small", key, |c| {
            c["model_args"][key] = value.clone()
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{key}: {e:?}");
        assert!(e.message.contains(key), "{key}: {}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
