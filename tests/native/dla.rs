//! DLA native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_dla_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("dla");
    assert!(fixtures.len() >= 4, "only {} dla fixtures", fixtures.len());
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        // 1e-4 relative to the largest pooled feature (at least 1), as for the logits.
        let scale = reference(f)
            .features
            .iter()
            .fold(1f32, |a, v| a.max(v.abs()));
        check_features(f, TOL * scale);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices (level1..level5), level0 and a negative index, other input sizes.
    for name in [
        "dla34-small-f16",
        "dla102x-small-f16",
        "dla60_res2next-small-f16",
    ] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 1, "{name}");
    }
}

#[test]
fn feature_info_is_timms_levels() {
    let f = fixture("dla34-small-f16");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(modules, ["level1", "level2", "level3", "level4", "level5"]);
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
    let channels: Vec<usize> = info.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(channels, [8, 8, 16, 16, 16]);
}

#[test]
fn output_stride_is_refused_as_timm_has_no_dilated_dla() {
    let f = fixture("dla34-small-f16");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    assert_seeded("dla46_c", &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("dla34-small-f16", "block", |c| {
        c["model_args"]["block"] = "dlabottle3neck".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("block"), "{}", e.message);
}
