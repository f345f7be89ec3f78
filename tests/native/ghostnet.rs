//! GhostNet V1 / V2 / V3 native graphs through the C ABI, against timm's logits, pooled
//! features and `features_only` maps (V3's re-parameterisable branches folded at load).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_ghostnet_fixture_matches_timm_natively() {
    // The fixtures' block tables are shorter and narrower than the architectures': the
    // structure comes from the weights.
    let fixtures = fixtures_of_family("ghostnet");
    assert!(fixtures.len() >= 3, "only {} fixtures", fixtures.len());
    for f in &fixtures {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Every map (the stem conv before its BatchNorm), [1, -1], an input with odd-sized maps.
    for name in [
        "ghostnet_050-small",
        "ghostnetv2_100-small",
        "ghostnetv3_050-small",
    ] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 3, "{name}");
    }
}

#[test]
fn feature_info_is_the_stem_and_every_striding_stage() {
    let f = fixture("ghostnetv3_050-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [
        (8, 2, "conv_stem"),
        (8, 4, "blocks.1"),
        (12, 8, "blocks.2"),
        (16, 16, "blocks.4"),
        (16, 32, "blocks.5"),
    ]
    .iter()
    .map(|&(c, r, m)| (c, r, m.to_string()))
    .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn output_stride_is_refused_as_timm_does() {
    let f = fixture("ghostnet_050-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_ne!(e.status, TimmStatus::TIMM_OK, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    for arch in ["ghostnet_050", "ghostnetv2_100", "ghostnetv3_050"] {
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
    let m = CModel::create("ghostnet_100", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 1280);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("ghostnet_050-small", "pool", |c| {
        c["model_args"]["global_pool"] = "catavgmax".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
    let e = edited_native_error("ghostnet_050-small", "version", |c| {
        c["model_args"]["version"] = "v4".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("version"), "{}", e.message);
}
