//! Native FasterNet graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_fasternet_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("fasternet");
    assert!(fs.len() >= 2, "only {} fasternet fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage; [1, -1] at another input size.
    assert_eq!(check_feature_maps(&fixture("fasternet_t0-small"), TOL), 2);
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("fasternet_t2-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(4, 4), (8, 8), (16, 16), (32, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let f = fixture("fasternet_t0-small");
    let fm = ("output", "feature_maps");
    let e = CModel::create(&f.spec("native"), true, &[fm, ("out_indices", "4")])
        .err()
        .expect("out_indices=4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // FasterNet takes no output_stride.
    let e = CModel::create(&f.spec("native"), true, &[fm, ("output_stride", "8")])
        .err()
        .expect("output_stride=8 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let arch = "fasternet_t0";
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
    let m = CModel::create(arch, false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 1280);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("fasternet_t0-small", "norm", |c| {
        c["model_args"]["norm_layer"] = "layernorm2d".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}
