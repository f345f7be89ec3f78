//! byobnet (GENet / RepVGG / MobileOne / RegNetZ / byob ResNets) native graphs through the C ABI,
//! against timm's logits, pooled features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_byobnet_fixture_matches_timm_natively() {
    // RepVGG and MobileOne folders hold timm's unfused branches; the graph folds them at load.
    let fixtures = fixtures_of_family("byobnet");
    assert!(
        fixtures.len() >= 6,
        "only {} byobnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        // Relative to the largest value, as the full-size check compares: the calibrated
        // BatchNorm of every branch makes a many-branch MobileOne's activations grow to ~1e4,
        // where f32 summation order alone moves the logits by more than 1e-4 absolute.
        let r = reference(f);
        let scale = |v: &[f32]| v.iter().fold(1f32, |m, x| m.max(x.abs()));
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        let d = check_features(f, TOL * scale(&r.features));
        eprintln!("{:<24} features max|diff| = {d:.3e}", f.name);
    }
}

/// The fixtures with `features_only` references (meta.json `feature_maps`).
const FEATURE_FIXTURES: [&str; 4] = [
    "test_byobnet",
    "repvgg_b1g4-small",
    "regnetz_d8-small",
    "bat_resnext26ts-small",
];

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1] and [0, -2], output_stride 16 and 8 (dilated stages),
    // inputs of other sizes: values, shapes from timm_model_output_shape and feature_info.
    for name in FEATURE_FIXTURES {
        let f = fixture(name);
        assert!(check_feature_maps(&f, TOL) >= 2, "{name}: no feature_maps");
    }
}

#[test]
fn feature_info_names_the_stem_tap_and_final_conv() {
    // A tiered stem without pool taps its second conv (before the last stride); the last map is
    // timm's `final_conv` entry.
    let f = fixture("regnetz_d8-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "stem.conv2",
            "stages.0",
            "stages.1",
            "stages.2",
            "final_conv"
        ]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
}

#[test]
fn out_of_range_indices_and_other_output_strides_are_invalid_arguments() {
    let f = fixture("test_byobnet");
    for (k, v) in [
        ("out_indices", "5"),
        ("out_indices", "-6"),
        ("output_stride", "4"),
    ] {
        let e = CModel::create(
            &f.spec("native"),
            true,
            &[("output", "feature_maps"), (k, v)],
        )
        .err()
        .unwrap_or_else(|| panic!("{k}={v} must fail"));
        assert_eq!(
            e.status,
            TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
            "{k}={v}: {e:?}"
        );
    }
}

#[test]
fn an_input_too_small_is_an_invalid_argument() {
    let f = fixture("test_byobnet");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    for shape in [[1, 3, 0, 8], [1, 3, 8, 0]] {
        let e = m
            .output_shape(0, &shape)
            .expect_err("empty input must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    }
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |arch: &str, seed: &str| {
        let m = CModel::create(arch, false, &[("seed", seed), ("input_size", "64x64")])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000, "{arch}");
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("repvgg_a0", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(
        a,
        run("repvgg_a0", "1"),
        "same seed must give the same network"
    );
    assert_ne!(
        a,
        run("repvgg_a0", "2"),
        "another seed must give another network"
    );
    for arch in ["mobileone_s0", "gernet_s", "resnet32ts"] {
        assert!(run(arch, "0").iter().all(|v| v.is_finite()), "{arch}");
    }
}

#[test]
fn bat_attention_takes_maps_of_whole_blocks() {
    // bat_resnext26ts at its 256x256 default: every stage's map is a multiple of block size 8.
    let m = CModel::create("bat_resnext26ts", false, &[("seed", "5")])
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(m.output_dim(), 1000);
    let x: Vec<f32> = (0..3 * 256 * 256)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let y = m.infer(&x, &[1, 3, 256, 256]).unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "non-finite logits");
    // 224 gives a 28x28 second stage, which timm's BilinearAttnTransform asserts against.
    let e = CModel::create("bat_resnext26ts", false, &[("input_size", "224x224")])
        .err()
        .expect("a 224 input must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("8x8 blocks"), "{}", e.message);
    // The fixture's block size is 2: a 72x72 input gives a 9x9 second stage.
    let f = fixture("bat_resnext26ts-small");
    let e = CModel::create(&f.spec("native"), true, &[("input_size", "72x72")])
        .err()
        .expect("a 72 input must be refused");
    assert!(e.message.contains("2x2 blocks"), "{}", e.message);
    // A graph takes the size it was built for: another one is refused, not run on partial
    // blocks.
    let m = CModel::create(&f.spec("native"), true, &[]).unwrap();
    let x = vec![0.5f32; 3 * 96 * 128];
    let e = m
        .infer(&x, &[1, 3, 96, 128])
        .expect_err("another input size must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn variants_not_built_are_unsupported_with_the_reason() {
    let e = edited_native_error("eca_resnet33ts-small", "nl", |c| {
        c["model_args"]["attn_layer"] = "nl".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("`nl`"), "{}", e.message);
    // The CLIP ResNets' attention-pool head is built; its rotary form is not.
    let e = edited_native_error("resnet50_clip-small", "rot", |c| {
        c["model_args"]["head_type"] = "attn_rot".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("attn_rot"), "{}", e.message);
}

#[test]
fn evonorm_regnetz_builds_and_evonorm_rep_blocks_are_refused() {
    // regnetz_b16_evos: EvoNorm2dS0a with group size 16 (too large for a fixture: built seeded
    // without weights and run; gernet_s-evonormb0 checks the EvoNorm placement against timm).
    let m = CModel::create("regnetz_b16_evos", false, &[("seed", "3")])
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(m.output_dim(), 1000);
    let input: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i % 89) as f32 / 44.0) - 1.0)
        .collect();
    let out = m.infer(&input, &[1, 3, 32, 32]).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    assert!(out.iter().any(|v| v.abs() > 1e-6));
    let e = edited_native_error("repvgg_b1g4-small", "evo", |c| {
        c["model_args"]["norm_layer"] = "evonormb0".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("re-parameterised"), "{}", e.message);
}
