//! Legacy Xception native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (a narrowed model whose widths only its tensors record).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn legacy_xception_fixture_matches_timm_natively() {
    // The bound is relative to the largest logit / feature, as for every classic convnet.
    let f = fixture("legacy_xception-narrow");
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
    // Default out_indices, [1, -2], a 72x64 input.
    assert!(check_feature_maps(&fixture("legacy_xception-narrow"), TOL) >= 3);
}

#[test]
fn feature_info_names_timms_modules() {
    let f = fixture("legacy_xception-narrow");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "act2",
            "block2.rep.0",
            "block3.rep.0",
            "block12.rep.0",
            "act4",
        ]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
}

#[test]
fn bad_requests_are_refused() {
    let f = fixture("legacy_xception-narrow");
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
    // Two unpadded 3x3 stem convs (the first of stride 2): 6x6 ends empty.
    let m = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    let e = m
        .infer(&vec![0.0; 3 * 6 * 6], &[1, 3, 6, 6])
        .expect_err("6x6 is too small");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // Xception has no output_stride argument: a folder with one is refused, naming it.
    let e = edited_native_error("legacy_xception-narrow", "os", |c| {
        c["model_args"]["output_stride"] = 16.into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // The stem only (out_indices 0): the full network's random init is slow in debug builds.
    let run = |seed: &str| {
        let opts = [
            ("seed", seed),
            ("output", "feature_maps"),
            ("out_indices", "0"),
        ];
        let m = CModel::create("legacy_xception", false, &opts).unwrap();
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer_outputs(&x, &[1, 3, 64, 64]).unwrap().remove(0)
    };
    let a = run("1");
    assert_eq!(a.shape, [1, 64, 29, 29]);
    assert!(a.data.iter().all(|v| v.is_finite()), "non-finite maps");
    assert_eq!(a.data, run("1").data, "same seed, same network");
    assert_ne!(a.data, run("2").data, "another seed, another network");
}
