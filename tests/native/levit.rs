//! Native LeViT graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_levit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("levit");
    assert!(fs.len() >= 4, "no levit fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default (every stage) and out_indices with a negative index on a linear model.
    assert_eq!(check_feature_maps(&fixture("levit_128s-small"), TOL), 2);
    // A conv model on a non-square grid, a negative index first.
    assert_eq!(check_feature_maps(&fixture("levit_conv_192-small"), TOL), 1);
    // Odd grids through the strided queries.
    assert_eq!(check_feature_maps(&fixture("levit_512_s8-small"), TOL), 1);
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
    let e = create_err("levit_128s-small", &[fm, ("out_indices", "3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = create_err("levit_128s-small", &[fm, ("out_indices", "-4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // LeViT has no dilated stages.
    let e = create_err("levit_128s-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    let e = create_err("levit_128s-small", &[("dynamic_img_size", "true")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn inputs_of_another_size_than_img_size_are_refused() {
    // The attention biases are gathered for the img_size grid; timm runs no other size.
    for size in ["48x48", "16x16", "3x3"] {
        let e = create_err("levit_128s-small", &[("input_size", size)]);
        assert_eq!(
            e.status,
            TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
            "{size}: {e:?}"
        );
        assert!(e.message.contains("img_size"), "{size}: {}", e.message);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("levit_128s", false, &[("seed", seed)])
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
    let m = CModel::create("levit_conv_256", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 512);
}

#[test]
fn variants_not_built_are_refused_with_the_reason() {
    for (key, value) in [
        ("stem_type", serde_json::json!("s4")),
        ("down_op", serde_json::json!("")),
        ("global_pool", serde_json::json!("")),
    ] {
        let dir = edited_copy("levit_128s-small", key, |c| {
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
