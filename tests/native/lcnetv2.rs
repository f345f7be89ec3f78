//! PP-LCNetV2 native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps: timm's unfused re-parameterisable depthwise branches (folded at load)
//! and an `inference_mode=True` model.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_lcnetv2_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("lcnetv2");
    assert!(fixtures.len() >= 2, "only {} fixtures", fixtures.len());
    for f in &fixtures {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Every stage, then [1, -1] at another input size.
    assert!(check_feature_maps(&fixture("lcnetv2_base-small"), TOL) >= 2);
}

#[test]
fn feature_info_is_every_stage() {
    let f = fixture("lcnetv2_base-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(8, 4), (16, 8), (32, 16), (64, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    {
        let arch = "lcnetv2_small";
        let run = |seed: &str| {
            let m = CModel::create(arch, false, &[("seed", seed)])
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
            assert_eq!(m.output_dim(), 1000);
            let x: Vec<f32> = (0..3 * 64 * 64)
                .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
                .collect();
            m.infer(&x, &[1, 3, 64, 64]).unwrap()
        };
        let a = run("1");
        assert!(a.iter().all(|v| v.is_finite()), "{arch}: non-finite logits");
        assert_eq!(a, run("1"), "{arch}: same seed, same network");
        assert_ne!(a, run("2"), "{arch}: another seed, another network");
    }
    let m = CModel::create("lcnetv2_small", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 1280);
}

#[test]
fn unsupported_variants_say_so() {
    let f = fixture("lcnetv2_base-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_ne!(e.status, TimmStatus::TIMM_OK, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    for (key, value) in [
        ("global_pool", serde_json::json!("catavgmax")),
        ("norm_layer", serde_json::json!("layernorm2d")),
    ] {
        let dir = edited_copy("lcnetv2_base-small", key, |c| {
            c["model_args"][key] = value.clone()
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .unwrap_or_else(|| panic!("{key} must fail"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{key}: {e:?}");
        assert!(e.message.contains(key), "{key}: {}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
