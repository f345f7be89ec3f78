//! Native ConvMixer graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (`forward_intermediates`).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_convmixer_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("convmixer");
    assert!(fs.len() >= 3, "only {} convmixer fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default (last three blocks), [0, -1], another input size (not a multiple of the patch).
    assert_eq!(
        check_feature_maps(&fixture("convmixer_1536_20-small"), TOL),
        3
    );
    assert_eq!(
        check_feature_maps(&fixture("convmixer_768_32-small"), TOL),
        1
    );
}

#[test]
fn feature_info_is_every_block_at_the_patch_stride() {
    let f = fixture("convmixer_1024_20_ks9_p14-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> =
        (0..3).map(|i| (16, 14, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
    assert_eq!(
        m.output_shape(0, &[1, 3, 56, 70]).unwrap(),
        vec![1, 16, 4, 5]
    );
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let fm = ("output", "feature_maps");
    let e = create_err("convmixer_768_32-small", &[fm, ("out_indices", "-4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // ConvMixer takes no output_stride.
    let e = create_err("convmixer_768_32-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    let m = CModel::create(&fixture("convmixer_768_32-small").spec("native"), true, &[]).unwrap();
    let e = m
        .output_shape(0, &[1, 3, 5, 5])
        .expect_err("a 5x5 input is smaller than a 7x7 patch");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let arch = "convmixer_768_32";
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
    let m = CModel::create(arch, false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 768);
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("convmixer_768_32-small", "pool", |c| {
        c["model_args"]["global_pool"] = "".into();
        c["global_pool"] = "".into();
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
}
