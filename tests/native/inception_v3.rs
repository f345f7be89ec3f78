//! Inception-V3 native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (a narrowed model whose widths only its tensors record).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn inception_v3_fixture_matches_timm_natively() {
    // timm's init (trunc_normal std 0.1, no down-scaling) gives logits near 400 and features
    // near 1300: f32 rounding alone is ~1e-4 there, so the bound is relative to the largest.
    let f = fixture("inception_v3-narrow");
    let r = reference(&f);
    let largest = |v: &[f32]| v.iter().fold(0f32, |a, x| a.max(x.abs()));
    check_fixture(
        &f,
        "native",
        &[("graph", "native")],
        TOL * largest(&r.logits),
    );
    check_features(&f, TOL * largest(&r.features));
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [0, -2], an 83x77 input.
    assert!(check_feature_maps(&fixture("inception_v3-narrow"), TOL) >= 3);
}

#[test]
fn feature_info_names_timms_modules() {
    let f = fixture("inception_v3-narrow");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "Conv2d_2b_3x3",
            "Conv2d_4a_3x3",
            "Mixed_5d",
            "Mixed_6e",
            "Mixed_7c"
        ]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
}

#[test]
fn bad_requests_are_refused() {
    let f = fixture("inception_v3-narrow");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,5")],
    )
    .err()
    .expect("out_indices=0,5 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // Unpadded stride-2 convs and pools: below 75 pixels a map ends empty.
    let m = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    let e = m
        .infer(&vec![0.0; 3 * 74 * 74], &[1, 3, 74, 74])
        .expect_err("74x74 is too small");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // aux_logits makes two outputs in timm.
    let e = edited_native_error("inception_v3-narrow", "aux", |c| {
        c["model_args"]["aux_logits"] = true.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("aux_logits"), "{}", e.message);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // The stem only (out_indices 1): the full network's random init is slow in debug builds.
    let run = |seed: &str| {
        let opts = [
            ("seed", seed),
            ("output", "feature_maps"),
            ("out_indices", "1"),
        ];
        let m = CModel::create("inception_v3", false, &opts).unwrap();
        let x: Vec<f32> = (0..3 * 75 * 75)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer_outputs(&x, &[1, 3, 75, 75]).unwrap().remove(0)
    };
    let a = run("1");
    assert_eq!(a.shape, [1, 192, 15, 15]);
    assert!(a.data.iter().all(|v| v.is_finite()), "non-finite maps");
    assert_eq!(a.data, run("1").data, "same seed, same network");
    assert_ne!(a.data, run("2").data, "another seed, another network");
}
