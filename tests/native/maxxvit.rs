//! MaxViT / CoAtNet / MaxxViT native graphs through the C ABI, against timm's logits, pre-logits
//! features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_maxxvit_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("maxxvit");
    assert!(fixtures.len() >= 11, "only {} fixtures", fixtures.len());
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        let df = check_features(f, TOL);
        assert!(df <= TOL, "{}: features differ from timm by {df}", f.name);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Stem + every stage, a subset with a negative index, and the TF model's subset.
    let mut checked = 0;
    for f in fixtures_of_family("maxxvit") {
        checked += check_feature_maps(&f, TOL);
    }
    assert!(checked >= 3, "only {checked} feature-map references");
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let f = fixture("test_maxvit-small");
    let create = |opts: &[(&str, &str)]| {
        let mut o = vec![("output", "feature_maps")];
        o.extend_from_slice(opts);
        CModel::create(&f.spec("native"), true, &o)
    };
    for bad in ["0,5", "-6"] {
        let e = create(&[("out_indices", bad)]).err().expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("out of range"), "{}", e.message);
    }
    // timm's MaxxVit has no dilated stages.
    let e = create(&[("output_stride", "16")]).err().expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);

    // The attention windows follow img_size: the graph takes that size only.
    let m = create(&[]).unwrap();
    let x = vec![0f32; 3 * 32 * 32];
    let e = m.infer_outputs(&x, &[1, 3, 32, 32]).expect_err("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    let e = create(&[("input_size", "32x32")]).err().expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("img_size"), "{}", e.message);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("test_coatnet", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 160 * 160)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 160, 160]).unwrap()
    };
    let a = run("3");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero logits");
    assert_eq!(a, run("3"), "same seed must give the same network");
    assert_ne!(a, run("4"), "another seed must give another network");
}

#[test]
fn variants_timm_has_but_this_build_does_not_are_unsupported() {
    let f = fixture("test_maxvit-small");
    for (key, value, why) in [
        (
            "transformer_use_nchw_attn",
            serde_json::json!(true),
            "channels-last",
        ),
        ("conv_attn_layer", serde_json::json!("eca"), "se"),
    ] {
        let dir = edited_copy(&f.name, key, |c| c["model_args"][key] = value);
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(
            e.message.contains(key) && e.message.contains(why),
            "{}",
            e.message
        );
    }
}
