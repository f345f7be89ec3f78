//! Native Swin Transformer V2 'cr' graphs through the C ABI, against timm's logits, pooled
//! features and `features_only` maps (NCHW, as timm's stages return them).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_swinv2_cr_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("swin_transformer_v2_cr");
    assert!(fs.len() >= 3, "no swin v2 cr fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default (every stage) and out_indices with a negative index.
    assert_eq!(
        check_feature_maps(&fixture("swinv2_cr_tiny_ns-small"), TOL),
        2
    );
    // always_partition with a window wider than the map.
    assert_eq!(
        check_feature_maps(&fixture("swinv2_cr_base-2stage"), TOL),
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
fn feature_map_requests_timm_refuses_are_errors() {
    let fm = ("output", "feature_maps");
    let e = create_err("swinv2_cr_tiny_ns-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // No dilated stages.
    let e = create_err("swinv2_cr_tiny_ns-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn inputs_smaller_than_a_patch_are_refused() {
    let e = create_err("swinv2_cr_tiny_ns-small", &[("input_size", "3x3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn variants_not_built_are_refused_naming_the_argument() {
    let dir = edited_copy("swinv2_cr_tiny_ns-small", "norm", |c| {
        c["model_args"]["norm_layer"] = "rmsnorm".into()
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}

#[test]
fn a_bare_name_builds_a_seeded_full_size_model() {
    let arch = "swinv2_cr_tiny_224";
    let shape = [1, 3, 224, 224];
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &input, &shape, ("7", "8"));
}
