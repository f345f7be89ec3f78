//! Native Next-ViT graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_nextvit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("nextvit");
    assert!(!fs.is_empty(), "no nextvit fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage, and out_indices with a negative index.
    assert_eq!(check_feature_maps(&fixture("nextvit_small-narrow"), TOL), 2);
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
    let e = create_err("nextvit_small-narrow", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // Next-ViT has no dilated stages.
    let e = create_err("nextvit_small-narrow", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn another_input_size_runs_the_same_network() {
    // No position embedding: a 64x48 input builds and gives finite logits.
    let f = fixture("nextvit_small-narrow");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("graph", "native"), ("input_size", "64x48")],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let x: Vec<f32> = (0..3 * 64 * 48)
        .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
        .collect();
    let y = m.infer(&x, &[1, 3, 64, 48]).unwrap();
    assert_eq!(y.len(), 5);
    assert!(y.iter().all(|v| v.is_finite()), "non-finite logits");
}

#[test]
fn variants_not_built_are_refused_with_the_reason() {
    for (key, value) in [
        ("global_pool", serde_json::json!("")),
        ("norm_layer", serde_json::json!("layernorm2d")),
        ("act_layer", serde_json::json!("no_such_act")),
        ("use_magic", serde_json::json!(true)),
    ] {
        let dir = edited_copy("nextvit_small-narrow", key, |c| {
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

#[test]
fn bare_name_builds_timms_layout_without_weights() {
    // One build only (31.8M parameters): timm's own widths and block types, pre-logits 1024.
    let m = CModel::create(
        "nextvit_small",
        false,
        &[("output", "features"), ("seed", "3")],
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(m.output_dim(), 1024);
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let y = m.infer(&x, &[1, 3, 64, 64]).unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "non-finite features");
    assert!(y.iter().any(|v| *v != 0.0), "all-zero features");
}
