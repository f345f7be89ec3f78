//! Aligned Xception native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (small `block_cfg`s, post- and pre-activation, output_stride 16 / 8).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;
const FIXTURES: [&str; 2] = ["xception41-tiny", "xception41p-tiny"];

fn largest(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

#[test]
fn xception_aligned_fixtures_match_timm_natively() {
    for name in FIXTURES {
        let f = fixture(name);
        let r = reference(&f);
        check_fixture(
            &f,
            "native",
            &[("graph", "native")],
            TOL * largest(&r.logits),
        );
        check_features(&f, TOL * largest(&r.features));
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1] / [0, -2], output_stride 16 and 8 (dilated), another size.
    assert!(check_feature_maps(&fixture("xception41-tiny"), TOL) >= 4);
    assert!(check_feature_maps(&fixture("xception41p-tiny"), TOL) >= 3);
}

#[test]
fn feature_info_taps_the_strided_blocks() {
    let f = fixture("xception41p-tiny");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "blocks.0.stack.conv2",
            "blocks.1.stack.conv2",
            "blocks.2.stack.conv2",
            "blocks.4.stack.conv2",
            "blocks.5"
        ]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
}

#[test]
fn bad_requests_are_refused() {
    let f = fixture("xception41-tiny");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,5")],
    )
    .err()
    .expect("out_indices=0,5 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = edited_native_error("xception41-tiny", "os", |c| {
        c["model_args"]["output_stride"] = 4.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // The first tap only: the full network's random init is slow in debug builds.
    let run = |seed: &str| {
        let opts = [
            ("seed", seed),
            ("output", "feature_maps"),
            ("out_indices", "0"),
        ];
        let m = CModel::create("xception41", false, &opts).unwrap();
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer_outputs(&x, &[1, 3, 64, 64]).unwrap().remove(0)
    };
    let a = run("1");
    assert_eq!(a.shape, [1, 128, 32, 32]);
    assert!(a.data.iter().all(|v| v.is_finite()), "non-finite maps");
    assert_eq!(a.data, run("1").data, "same seed, same network");
    assert_ne!(a.data, run("2").data, "another seed, another network");
}
