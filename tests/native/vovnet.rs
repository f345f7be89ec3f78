//! VoVNet native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_vovnet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("vovnet");
    assert!(
        fixtures.len() >= 3,
        "only {} vovnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        // 1e-4 relative to the largest pooled feature (at least 1), as for the logits.
        let scale = reference(f)
            .features
            .iter()
            .fold(1f32, |a, v| a.max(v.abs()));
        check_features(f, TOL * scale);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices (stem.1, stages.0..3), a negative index at another input size.
    assert!(check_feature_maps(&fixture("ese_vovnet19b_dw-small"), TOL) >= 2);
    assert!(check_feature_maps(&fixture("ese_vovnet39b-small-f16"), TOL) >= 1);
    assert_eq!(
        check_feature_maps(&fixture("ese_vovnet39b_evos-small-f16"), TOL),
        1
    );
}

#[test]
fn feature_info_is_timms_stem_and_stages() {
    let f = fixture("ese_vovnet39b-small-f16");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        ["stem.1", "stages.0", "stages.1", "stages.2", "stages.3"]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
    let channels: Vec<usize> = info.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(channels, [8, 16, 16, 32, 32]);
}

#[test]
fn output_stride_is_refused_as_timm_has_no_dilated_vovnet() {
    let f = fixture("ese_vovnet19b_dw-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |arch: &str, seed: &str| {
        let m = CModel::create(arch, false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("ese_vovnet19b_slim_dw", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(
        a,
        run("ese_vovnet19b_slim_dw", "1"),
        "same seed, same network"
    );
    assert_ne!(
        a,
        run("ese_vovnet19b_slim_dw", "2"),
        "another seed, another network"
    );
}

#[test]
fn unknown_norms_or_attention_are_refused() {
    // ese_vovnet39b_evos (EvoNorm2dS0 everywhere) is checked by its fixture above.
    let e = edited_native_error("eca_vovnet39b-small-f16", "norm", |c| {
        c["model_args"]["norm_layer"] = "layernorm2d".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);
    let e = edited_native_error("eca_vovnet39b-small-f16", "attn", |c| {
        c["model_args"]["attn"] = "cbam".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("attn"), "{}", e.message);
}
