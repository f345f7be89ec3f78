//! PP-HGNet V1 / V2 native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_hgnet_fixture_matches_timm_natively() {
    // The fixtures' stage cfgs are narrower and shallower than the architectures': the
    // structure comes from the weights.
    let fixtures = fixtures_of_family("hgnet");
    assert!(fixtures.len() >= 3, "only {} fixtures", fixtures.len());
    for f in &fixtures {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    for name in ["hgnet_tiny-small", "hgnetv2_b0-small", "hgnetv2_b4-small"] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 1, "{name}");
    }
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("hgnetv2_b0-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(16, 4), (32, 8), (32, 16), (48, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("HGNet has no output_stride");
    assert_ne!(e.status, TimmStatus::TIMM_OK, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    for arch in ["hgnet_tiny", "hgnetv2_b0"] {
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
    let m = CModel::create("hgnetv2_b0", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 2048);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("hgnet_tiny-small", "pool", |c| {
        c["model_args"]["global_pool"] = "catavgmax".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
}
