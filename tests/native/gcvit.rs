//! Native GCViT graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_gcvit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("gcvit");
    assert!(!fs.is_empty(), "no gcvit fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage, and out_indices with a negative index.
    assert_eq!(check_feature_maps(&fixture("gcvit_small-narrow"), TOL), 2);
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_the_fixed_size_model_cannot_serve_are_errors() {
    let fm = ("output", "feature_maps");
    let e = create_err("gcvit_small-narrow", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = create_err("gcvit_small-narrow", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // Windows and the global query are fixed to img_size.
    let e = create_err("gcvit_small-narrow", &[("input_size", "64x64")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("img_size"), "{}", e.message);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("gcvit_xxtiny", false, &[("seed", seed)])
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
}

#[test]
fn variants_not_built_are_refused_with_the_reason() {
    for (key, value) in [
        ("global_pool", serde_json::json!("")),
        ("norm_layer", serde_json::json!("batchnorm2d")),
        ("norm_layer_cl", serde_json::json!("rmsnorm")),
        ("use_magic", serde_json::json!(true)),
    ] {
        let dir = edited_copy("gcvit_small-narrow", key, |c| {
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
