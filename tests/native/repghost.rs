//! RepGhostNet native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (the unfused re-parameterisable cheap operation folded at load).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_repghost_fixture_matches_timm_natively() {
    // The fixture's block table and conv_head are narrower than the architecture's: the
    // structure comes from the weights.
    let fixtures = fixtures_of_family("repghost");
    assert!(!fixtures.is_empty());
    for f in &fixtures {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Every map (the stem conv before its BatchNorm), then [1, -1] at another input size.
    assert!(check_feature_maps(&fixture("repghostnet_050-small"), TOL) >= 2);
}

#[test]
fn feature_info_is_the_stem_and_every_striding_stage() {
    let f = fixture("repghostnet_050-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [
        (8, 2, "conv_stem"),
        (8, 4, "blocks.0"),
        (12, 8, "blocks.1"),
        (16, 16, "blocks.2"),
        (16, 32, "blocks.3"),
    ]
    .iter()
    .map(|&(c, r, m)| (c, r, m.to_string()))
    .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    // timm's default (unfused) at full width, and the fixture's config with `reparam=False` (no
    // fusion_bn) built from its table without weights.
    let dir = edited_copy("repghostnet_050-small", "noreparam", |c| {
        c["model_args"]["reparam"] = false.into()
    });
    let local = format!("local:{}", dir.display());
    for (spec, classes) in [("repghostnet_050", 1000), (local.as_str(), 5)] {
        let run = |seed: &str| {
            let m = CModel::create(spec, false, &[("seed", seed)])
                .unwrap_or_else(|e| panic!("{spec}: {e:?}"));
            assert_eq!(m.output_dim(), classes);
            let x: Vec<f32> = (0..3 * 64 * 64)
                .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
                .collect();
            m.infer(&x, &[1, 3, 64, 64]).unwrap()
        };
        let a = run("1");
        assert!(a.iter().all(|v| v.is_finite()), "{spec}: non-finite logits");
        assert_eq!(a, run("1"), "{spec}: same seed, same network");
        assert_ne!(a, run("2"), "{spec}: another seed, another network");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let m = CModel::create("repghostnet_100", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 1280);
}

#[test]
fn unsupported_variants_say_so() {
    let f = fixture("repghostnet_050-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_ne!(e.status, TimmStatus::TIMM_OK, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    let e = edited_native_error("repghostnet_050-small", "pool", |c| {
        c["model_args"]["global_pool"] = "catavgmax".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
}
