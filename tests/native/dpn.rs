//! DPN native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_dpn_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("dpn");
    assert!(fixtures.len() >= 2, "only {} dpn fixtures", fixtures.len());
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
    // Default out_indices, a negative index at a wider input.
    assert!(check_feature_maps(&fixture("dpn68b-narrow"), TOL) >= 2);
}

#[test]
fn feature_info_is_timms_stem_and_last_block_of_each_stage() {
    let f = fixture("dpn68b-narrow");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "features.conv1_1",
            "features.conv2_1",
            "features.conv3_2",
            "features.conv4_2",
            "features.conv5_1"
        ]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
    // Both paths: bw + 3·inc after the first block, + inc per block after it (bw 4·2^i here).
    let channels: Vec<usize> = info.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(channels, [8, 4 + 12, 8 + 12 + 4, 16 + 24 + 8, 32 + 24]);
}

#[test]
fn output_stride_is_refused_as_timm_has_no_dilated_dpn() {
    let f = fixture("dpn68b-narrow");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "8")],
    )
    .err()
    .expect("output_stride=8 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    assert_seeded("dpn48b", &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("dpn68b-narrow", "norm", |c| {
        c["model_args"]["norm_layer"] = "layernorm2d".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}
