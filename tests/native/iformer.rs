//! Native iFormer graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_iformer_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("iformer");
    assert!(fs.len() >= 2, "no iformer fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage; out_indices with a negative index.
    assert_eq!(check_feature_maps(&fixture("iformer_t-small"), TOL), 2);
    // Layer scale and the prefix / suffix ConvBlocks around an attention group.
    assert_eq!(
        check_feature_maps(&fixture("iformer_m_distilled-small"), TOL),
        1
    );
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("iformer_t", false, &[("seed", seed)])
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
    for (key, value, status) in [
        (
            "global_pool",
            serde_json::json!("max"),
            TimmStatus::TIMM_ERR_UNSUPPORTED,
        ),
        (
            "global_pool",
            serde_json::json!(""),
            TimmStatus::TIMM_ERR_UNSUPPORTED,
        ),
        (
            "act_layer",
            serde_json::json!("relu"),
            TimmStatus::TIMM_ERR_UNSUPPORTED,
        ),
        // Each attention group takes three blocks.
        (
            "attn_groups",
            serde_json::json!([0, 0, 2, 0]),
            TimmStatus::TIMM_ERR_INVALID_MODEL,
        ),
    ] {
        let dir = edited_copy("iformer_t-small", key, |c| {
            c["model_args"][key] = value.clone()
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, status, "{key}: {e:?}");
        assert!(e.message.contains(key), "{key}: {}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
