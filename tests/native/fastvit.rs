//! FastViT / MobileCLIP (timm's fastvit.py) native graphs through the C ABI, against timm's
//! logits, pooled features and features_only maps. Every fixture holds timm's unfused branches.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_fastvit_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("fastvit");
    assert!(
        fixtures.len() >= 4,
        "only {} fastvit fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        // Relative to the largest value: calibrated BatchNorms on every folded branch let the
        // activations grow well past 1.
        let r = reference(f);
        let scale = |v: &[f32]| v.iter().fold(1f32, |m, x| m.max(x.abs()));
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        let d = check_features(f, TOL * scale(&r.features));
        eprintln!("{:<24} features max|diff| = {d:.3e}", f.name);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices (all four stages; the first four of MobileCLIP's five), [1, -1],
    // [0, -2] and [2, -1], inputs of other sizes: values, shapes and feature_info.
    for (name, refs) in [
        ("fastvit_t8-small", 3),
        ("fastvit_sa12-small", 2),
        ("fastvit_mci3-small", 2),
    ] {
        let f = fixture(name);
        assert_eq!(check_feature_maps(&f, TOL), refs, "{name}");
    }
}

#[test]
fn five_stage_towers_default_to_the_first_four_maps() {
    let f = fixture("fastvit_mci3-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let got: Vec<(usize, &str)> = info.iter().map(|(_, r, m)| (*r, m.as_str())).collect();
    assert_eq!(
        got,
        [
            (4, "stages.0"),
            (8, "stages.1"),
            (16, "stages.2"),
            (32, "stages.3")
        ]
    );
}

#[test]
fn out_of_range_indices_are_invalid_and_output_strides_unsupported() {
    let f = fixture("fastvit_t8-small");
    let create = |k: &str, v: &str| {
        CModel::create(
            &f.spec("native"),
            true,
            &[("output", "feature_maps"), (k, v)],
        )
        .err()
        .unwrap_or_else(|| panic!("{k}={v} must fail"))
    };
    for v in ["4", "-5"] {
        let e = create("out_indices", v);
        assert_eq!(
            e.status,
            TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
            "{v}: {e:?}"
        );
    }
    // timm's FastViT has no dilated stages.
    let e = create("output_stride", "16");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn an_input_too_small_is_an_invalid_argument() {
    let f = fixture("fastvit_t8-small");
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
    let a = run("fastvit_t8", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(
        a,
        run("fastvit_t8", "1"),
        "same seed must give the same network"
    );
    assert_ne!(
        a,
        run("fastvit_t8", "2"),
        "another seed must give another network"
    );
}

#[test]
fn the_detection_variant_is_unsupported_with_the_reason() {
    let dir = edited_copy("fastvit_t8-small", "fork", |c| {
        c["model_args"]["fork_feat"] = serde_json::Value::Bool(true)
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("fork_feat must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("fork_feat"), "{}", e.message);
}
