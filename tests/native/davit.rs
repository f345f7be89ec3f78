//! Native DaViT graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_davit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("davit");
    assert!(fs.len() >= 2, "only {} davit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage and [1, -1] of the padded-window model; every stage of the Florence-2 tower
    // at another input size than its config's (windows padded for that size).
    assert_eq!(check_feature_maps(&fixture("davit_tiny-small"), TOL), 2);
    assert_eq!(check_feature_maps(&fixture("davit_base_fl-small"), TOL), 1);
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("davit_base_fl-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(8, 4), (8, 8), (8, 16), (16, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn map_shapes_follow_the_padded_stem_and_downsamples_at_any_size() {
    // 30x38: the stem pads to 32x40 (8x10), each downsample halves rounding up.
    let f = fixture("davit_tiny-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want = [[1, 8, 8, 10], [1, 8, 4, 5], [1, 8, 2, 3], [1, 16, 1, 2]];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(
            m.output_shape(i, &[1, 3, 30, 38]).unwrap(),
            w.to_vec(),
            "map {i}"
        );
    }
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let fm = ("output", "feature_maps");
    let e = create_err("davit_tiny-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // DaViT has no dilated stages.
    let e = create_err("davit_tiny-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

fn edited_err(tag: &str, key: &str, value: serde_json::Value) -> CError {
    let dir = edited_copy("davit_tiny-small", tag, |c| c["model_args"][key] = value);
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    let _ = std::fs::remove_dir_all(&dir);
    e
}

#[test]
fn unsupported_variants_say_so() {
    for (tag, key, value, says) in [
        (
            "norm",
            "norm_layer",
            serde_json::json!("rmsnorm2d"),
            "norm_layer",
        ),
        (
            "dk4",
            "down_kernel_size",
            serde_json::json!(4),
            "down_kernel_size",
        ),
        ("noffn", "ffn", serde_json::json!(false), "ffn"),
        ("unknown", "use_magic", serde_json::json!(true), "use_magic"),
    ] {
        let e = edited_err(tag, key, value);
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{tag}: {e:?}");
        assert!(e.message.contains(says), "{tag}: {}", e.message);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // davit_tiny, the smallest (28 M): windowed spatial and channel attention at 64x64.
    assert_bare_seeded("davit_tiny", 64, 1000);
}
