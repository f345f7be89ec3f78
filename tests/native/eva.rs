//! Native EVA graphs (timm `eva.py`: EVA02, rope ViTs, Perception Encoder, DINOv3, Sapiens2)
//! through the C ABI, against timm's logits, pooled features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_eva_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("eva");
    assert_eq!(fs.len(), 10, "eva fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_forward_intermediates() {
    // timm's default (last 3 blocks), named out_indices incl. negative ones, and other input
    // sizes through img_size= (rotary tables and position embedding for the new grid).
    let mut checked = 0;
    for name in ["eva02_tiny", "vit_small_dinov3", "vit_pe_core_tiny"] {
        checked += check_feature_maps(&fixture(name), TOL);
    }
    assert_eq!(checked, 6, "feature-map references");
}

fn feature_maps_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native"), ("output", "feature_maps")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let e = feature_maps_err("eva02_tiny", &[("out_indices", "3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // Transformers have no dilated stages.
    let e = feature_maps_err("eva02_tiny", &[("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // An input smaller than one patch.
    let e = feature_maps_err("eva02_tiny", &[("input_size", "4x4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // Rotary tables are built at load for one grid: a fixed input_size works, per-input
    // grids are refused.
    let e = feature_maps_err("vit_small_dinov3", &[("dynamic_img_size", "true")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

/// Image-like input (normalised pixels in about [-2, 2]).
fn test_input(n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    (0..n * c * h * w)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect()
}

#[test]
fn bare_names_build_seeded_models() {
    let (arch, classes, dim, hw) = ("eva02_tiny_patch14_224", 0, 192, 224);
    {
        let input = test_input(1, 3, hw, hw);
        let shape = [1, 3, hw as i64, hw as i64];
        let run = |seed: &str| {
            let m = CModel::create(arch, false, &[("seed", seed), ("output", "features")])
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
            assert_eq!(m.output_dim(), dim, "{arch}");
            m.infer(&input, &shape).unwrap()
        };
        let a = run("7");
        assert!(a.iter().all(|x| x.is_finite()), "{arch}");
        assert_eq!(a, run("7"), "{arch}: same seed, same network");
        assert_ne!(a, run("8"), "{arch}: another seed, another network");
        let m = CModel::create(arch, false, &[("seed", "7")]).unwrap();
        assert_eq!(m.output_dim(), if classes == 0 { dim } else { classes });
    }
}

#[test]
fn key_value_heads_that_do_not_divide_the_heads_are_an_invalid_model() {
    // timm asserts num_heads % num_kv_heads == 0 (the GQA fixture has 4 heads).
    let e = edited_native_error("vit_large_sapiens2_gqa", "kv", |c| {
        c["model_args"]["num_kv_heads"] = serde_json::json!([3, 1])
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(e.message.contains("num_kv_heads"), "{}", e.message);
}
