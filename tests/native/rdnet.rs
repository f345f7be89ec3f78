//! Native RDNet graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_rdnet_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("rdnet");
    assert!(fs.len() >= 2, "no rdnet fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default out_indices (0..3), a negative index at another input size.
    assert_eq!(check_feature_maps(&fixture("rdnet_tiny-small"), TOL), 2);
    // Tiered overlapping stem, head_norm_first (norm_pre is not in the maps).
    assert_eq!(check_feature_maps(&fixture("rdnet_small-tiered"), TOL), 1);
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let fm = ("output", "feature_maps");
    let e = create_err("rdnet_tiny-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // RDNet has no dilated stages.
    let e = create_err("rdnet_tiny-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("rdnet_tiny", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let shape = [1i64, 3, 64, 64];
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &shape).unwrap()
    };
    let a = run("3");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero logits");
    assert_eq!(a, run("3"), "same seed must give the same network");
    assert_ne!(a, run("4"), "another seed must give another network");
}

#[test]
fn variants_not_built_are_refused_with_the_reason() {
    for (key, value) in [
        ("global_pool", serde_json::json!("")),
        ("norm_layer", serde_json::json!("batchnorm2d")),
        ("stem_type", serde_json::json!("deep")),
        (
            "block_type",
            serde_json::json!(["Block", "BlockX", "Block", "Block", "Block"]),
        ),
        ("use_magic", serde_json::json!(true)),
    ] {
        let dir = edited_copy("rdnet_tiny-small", key, |c| {
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
