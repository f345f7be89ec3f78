//! Native NaFlexViT graphs through the C ABI, against timm's logits, pooled features
//! (`forward_head(pre_logits=True)`) and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_naflexvit_fixture_matches_timm_natively() {
    // Learned (antialiased bicubic, bilinear, align_corners bilinear) and factorized position
    // embeddings resampled from another grid; avg / map / token heads.
    let fs = fixtures_of_family("naflexvit");
    assert!(fs.len() >= 5, "only {} naflexvit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
        // The random heads' outputs are far below 1 (C-RADIO's class token starts at 1e-6), so
        // also judge the features against their own largest value, not the floor of 1.
        let r = reference(f);
        let m = CModel::create(&f.spec("native"), true, &[("output", "features")]).unwrap();
        let got = m.infer(&r.input, &r.input_shape).unwrap();
        let scale = r.features.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(scale > 0.0, "{}: all-zero features", f.name);
        let d = max_abs_diff(&got, &r.features) / scale;
        assert!(
            d <= TOL,
            "{}: features differ from timm by {d} of the largest",
            f.name
        );
    }
}

#[test]
fn feature_maps_match_timms_forward_intermediates() {
    // Default (last three blocks), [0, -1], and another input size.
    assert_eq!(check_feature_maps(&fixture("naflexvit_gap"), TOL), 3);
}

#[test]
fn feature_info_is_every_block_at_the_patch_stride() {
    let f = fixture("naflexvit_gap");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,1,2")],
    )
    .unwrap();
    let want: Vec<(usize, usize, String)> = (0..3).map(|i| (8, 4, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn what_nchw_input_cannot_carry_or_this_build_lacks_is_refused() {
    let fx = "naflexvit_gap";
    let spec = fixture(fx).spec("native");
    // batch_patchify cannot view an input that is not a multiple of the patch.
    let e = CModel::create(&spec, true, &[("input_size", "18x16")])
        .err()
        .expect("18x16 with patch 4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("multiple"), "{}", e.message);

    for (key, val, why) in [
        ("rope_type", serde_json::json!("axial"), "EVA / RoPE"),
        ("enable_patch_interpolator", true.into(), "pre-patchified"),
        ("global_pool", "".into(), "one vector per image"),
        ("embed_norm_layer", "batchnorm".into(), "LayerNorm"),
        ("use_magic", 1.into(), "use_magic = 1"),
    ] {
        let dir = edited_copy(fx, key, |c| c["model_args"][key] = val.clone());
        let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
            .err()
            .unwrap_or_else(|| panic!("{key} must be refused"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{key}: {e:?}");
        assert!(
            e.message.contains(key) && e.message.contains(why),
            "{key}: {}",
            e.message
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // timm's defaults: the full-size network, at a small input.
    assert_bare_seeded("naflexvit_base_patch16_gap", 64, 1000);
}
