//! CSPNet / DarkNet / CS3 native graphs through the C ABI, against timm's logits, pooled
//! features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_cspnet_fixture_matches_timm_natively() {
    // The fixtures' stages are narrower and shallower than the architectures' cfgs: widths,
    // group counts and depths come from the weights.
    let fixtures = fixtures_of_family("cspnet");
    assert!(
        fixtures.len() >= 6,
        "only {} cspnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        let r = reference(f);
        let scale = |v: &[f32]| v.iter().fold(1f32, |m, x| m.max(x.abs()));
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        let d = check_features(f, TOL * scale(&r.features));
        eprintln!("{:<28} features max|diff| = {d:.3e}", f.name);
    }
}

/// The fixtures with `features_only` references (meta.json `feature_maps`).
const FEATURE_FIXTURES: [&str; 3] = [
    "cspresnet50-small",
    "cspdarknet53-small",
    "cs3darknet_focus_s-small",
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
fn feature_info_follows_timms_stage_strides() {
    // A max-pool stem taps conv1 (before the pool); stage 0 does not stride, so the pool output
    // is no feature. A stride-1 stem's conv1 is one (DarkNet: six maps).
    let modules = |name: &str| {
        let f = fixture(name);
        let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
        m.feature_info()
            .into_iter()
            .map(|(_, r, m)| (r, m))
            .collect::<Vec<_>>()
    };
    let want = |v: &[(usize, &str)]| {
        v.iter()
            .map(|(r, m)| (*r, m.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        modules("cspresnet50-small"),
        want(&[
            (2, "stem.conv1"),
            (4, "stages.0"),
            (8, "stages.1"),
            (16, "stages.2"),
            (32, "stages.3")
        ])
    );
    assert_eq!(
        modules("cspdarknet53-small"),
        want(&[
            (1, "stem.conv1"),
            (2, "stages.0"),
            (4, "stages.1"),
            (8, "stages.2"),
            (16, "stages.3"),
            (32, "stages.4")
        ])
    );
}

#[test]
fn out_of_range_indices_and_other_output_strides_are_invalid_arguments() {
    let f = fixture("cspresnet50-small");
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
    let f = fixture("cspdarknet53-small");
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
    let a = run("cs3darknet_s", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(
        a,
        run("cs3darknet_s", "1"),
        "same seed must give the same network"
    );
    assert_ne!(
        a,
        run("cs3darknet_s", "2"),
        "another seed must give another network"
    );
}

#[test]
fn variants_not_built_are_unsupported_with_the_reason() {
    let f = fixture("cspresnet50-small");
    for (key, value, needle) in [
        ("aa_layer", serde_json::json!("blurpool"), "aa_layer"),
        ("norm_layer", serde_json::json!("groupnorm"), "batchnorm"),
    ] {
        let dir = edited_copy(&f.name, key, |c| c["model_args"][key] = value.clone());
        let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
            .err()
            .unwrap_or_else(|| panic!("{key} must fail"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{key}: {e:?}");
        assert!(e.message.contains(needle), "{key}: {}", e.message);
    }
}
