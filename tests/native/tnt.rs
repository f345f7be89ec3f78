//! Native TNT graphs through the C ABI, against timm's logits, pre-logits features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_tnt_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("tnt");
    assert!(fs.len() >= 2, "only {} tnt fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // The last three blocks by default, then [0, -1].
    assert_eq!(check_feature_maps(&fixture("tnt_s-small"), TOL), 2);
}

#[test]
fn feature_info_is_every_block_at_the_patch_stride() {
    let f = fixture("tnt_s-small");
    let opts = [("output", "feature_maps"), ("out_indices", "0,1,2")];
    let m = CModel::create(&f.spec("native"), true, &opts).unwrap();
    let want: Vec<(usize, usize, String)> =
        (0..3).map(|i| (16, 8, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn another_input_size_is_refused_as_timm_asserts() {
    let f = fixture("tnt_s-small");
    let opts = [("graph", "native"), ("input_size", "40x40")];
    let e = CModel::create(&f.spec("native"), true, &opts)
        .err()
        .expect("another input size must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("PixelEmbed"), "{}", e.message);
}

#[test]
fn no_pooling_is_refused_naming_global_pool() {
    let e = edited_native_error("tnt_s-small", "gp", |c| {
        c["model_args"]["global_pool"] = "".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
}

#[test]
fn seeded_random_weights_build_run_and_differ_by_seed() {
    // pretrained=false on a fixture folder: its narrow architecture, seeded weights (the registered
    // TNTs, 24M+ parameters at 224 px, are slow in a debug build).
    let spec = fixture("tnt_s-small").spec("native");
    let x: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(&spec, &[], 5, &x, &[1, 3, 32, 32], ("1", "2"));
}
