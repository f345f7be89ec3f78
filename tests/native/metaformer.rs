//! MetaFormer (PoolFormer v1/v2, ConvFormer, CAFormer) native graphs through the C ABI, against
//! timm's logits, pooled features and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_metaformer_fixture_matches_timm_natively() {
    // The fixtures record depths and widths only in their tensors (timm's entrypoints fix them),
    // so these also check that the structure is read from the weights.
    let fixtures = fixtures_of_family("metaformer");
    assert!(fixtures.len() >= 4, "only {} fixtures", fixtures.len());
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1], [0, -2], [-1], other input sizes; CAFormer's token stages
    // reshaped back to NCHW.
    for name in [
        "poolformer_s12-small",
        "convformer_s18-small",
        "caformer_s18-small",
    ] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 1, "{name}");
    }
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("caformer_s18-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let want: Vec<(usize, usize, String)> = [(8, 4), (16, 8), (32, 16), (64, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(info, want);
}

#[test]
fn bad_feature_requests_are_refused() {
    let f = fixture("poolformer_s12-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "4")],
    )
    .err()
    .expect("out_indices=4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // timm's MetaFormer has no dilated form.
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    // The stride-4 stem and three halvings: 2 pixels end at 0.
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let e = m
        .output_shape(0, &[1, 3, 2, 2])
        .expect_err("a 2x2 input is too small");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    assert_seeded("caformer_s18", &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
    let m = CModel::create("poolformer_s12", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 512);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("convformer_s18-small", "mixer", |c| {
        c["model_args"]["token_mixers"] = "randommixing".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("token_mixers"), "{}", e.message);
}
