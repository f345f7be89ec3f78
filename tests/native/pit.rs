//! Native PiT graphs through the C ABI, against timm's logits, pre-logits features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_pit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("pit");
    assert!(fs.len() >= 2, "only {} pit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage by default, then [0, -1].
    assert_eq!(check_feature_maps(&fixture("pit_ti-small"), TOL), 2);
}

#[test]
fn feature_info_is_timms_three_stages() {
    let f = fixture("pit_xs_distilled-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    // base_dims 4 × heads [1, 2, 2]; reductions stride · 2^i.
    let want: Vec<(usize, usize, String)> = [(4, 8), (8, 16), (8, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("transformers.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn another_input_size_is_refused_as_timm_cannot_resample() {
    let f = fixture("pit_ti-small");
    let e = CModel::create(&f.spec("native"), true, &[("input_size", "48x48")])
        .err()
        .expect("another patch grid must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("position embedding"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let arch = "pit_ti_distilled_224";
    let x: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &x, &[1, 3, 224, 224], ("1", "2"));
    let m = CModel::create(arch, false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 256);
}

#[test]
fn no_pooling_is_refused_naming_global_pool() {
    let e = edited_native_error("pit_ti-small", "gp", |c| {
        c["model_args"]["global_pool"] = "".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
}
