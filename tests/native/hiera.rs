//! Native Hiera graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (rerolled from the unrolled token order).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_hiera_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("hiera");
    assert!(fs.len() >= 2, "no hiera fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage end, rerolled; out_indices with a negative index.
    assert_eq!(check_feature_maps(&fixture("hiera_tiny-small"), TOL), 2);
    // q_pool=2: the last stage is rerolled through the unroll it never consumed.
    assert_eq!(
        check_feature_maps(&fixture("hiera_small_abswin-small"), TOL),
        1
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
fn requests_the_fixed_size_model_cannot_serve_are_errors() {
    let fm = ("output", "feature_maps");
    let e = create_err("hiera_tiny-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = create_err("hiera_tiny-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // The position embedding and the unroll permutation are fixed to img_size.
    let e = create_err("hiera_tiny-small", &[("input_size", "64x64")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("img_size"), "{}", e.message);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("hiera_tiny_224", false, &[("seed", seed)])
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
        ("sep_pos_embed", serde_json::json!(true)),
        ("global_pool", serde_json::json!("")),
        ("norm_layer", serde_json::json!("rmsnorm")),
        ("q_stride", serde_json::json!([2, 1])),
        ("use_magic", serde_json::json!(true)),
    ] {
        let dir = edited_copy("hiera_tiny-small", key, |c| {
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
