//! Native Twins graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_twins_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("twins");
    assert!(fs.len() >= 2, "no twins fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage (the last before the final norm) and out_indices with a negative index.
    assert_eq!(
        check_feature_maps(&fixture("twins_pcpvt_small-small"), TOL),
        2
    );
    // Locally-grouped attention, and another img_size (the windows' padding recomputed).
    assert_eq!(
        check_feature_maps(&fixture("twins_svt_small-small"), TOL),
        2
    );
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
    let e = create_err("twins_pcpvt_small-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // Twins has no dilated stages.
    let e = create_err("twins_pcpvt_small-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("twins_svt_small", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let shape = [1i64, 3, 224, 224];
        let x: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &shape).unwrap()
    };
    let a = run("3");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero logits");
    assert_eq!(a, run("3"), "same seed must give the same network");
    assert_ne!(a, run("4"), "another seed must give another network");
    let m = CModel::create("twins_pcpvt_small", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 512);
}

#[test]
fn variants_not_built_are_refused_with_the_reason() {
    for (key, value) in [
        ("global_pool", serde_json::json!("")),
        ("norm_layer", serde_json::json!("rmsnorm")),
        ("block_cls", serde_json::json!("block2")),
        ("use_magic", serde_json::json!(true)),
    ] {
        let dir = edited_copy("twins_pcpvt_small-small", key, |c| {
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
