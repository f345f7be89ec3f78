//! Native DeepSeek ViT graphs through the C ABI, against timm's logits, pooled features
//! (`forward_head(pre_logits=True)`) and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_deepseek_vit_fixture_matches_timm_natively() {
    // RMSNorm rope blocks with packed SwiGLU; the `_align` classifier through the aligner on a
    // padded grid, with dynamic_img_pad.
    let fs: Vec<Fixture> = fixtures_of_family("deepseek_vit")
        .into_iter()
        .filter(|f| f.output == "logits")
        .collect();
    assert!(fs.len() >= 2, "only {} deepseek_vit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
        // The non-affine RMSNorm keeps features near 1; judge them by their own largest value.
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
    // Default (last three blocks), [0, -1], and another input size (rope rebuilt).
    assert_eq!(check_feature_maps(&fixture("deepseek_vit_cls"), TOL), 3);
}

#[test]
fn feature_info_is_every_encoder_block_at_the_patch_stride() {
    let f = fixture("deepseek_vit_cls");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,1,2")],
    )
    .unwrap();
    let want: Vec<(usize, usize, String)> = (0..3)
        .map(|i| (16, 4, format!("encoder.blocks.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn token_outputs_and_unpadded_odd_inputs_are_refused() {
    // The encoder's forward is a token sequence: logits and pooled features do not exist.
    assert_tower_refuses_heads("deepseek_vit_412m_enc");
    let e = CModel::create(
        &fixture("deepseek_vit_cls").spec("native"),
        true,
        &[("output", "tokens")],
    )
    .err()
    .expect("a classifier has no token output");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // Without dynamic_img_pad timm's PatchEmbed asserts a multiple of the patch.
    let spec = fixture("deepseek_vit_cls").spec("native");
    let e = CModel::create(&spec, true, &[("input_size", "18x16")])
        .err()
        .expect("18x16 at patch 4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("multiple"), "{}", e.message);
    let dir = edited_copy("deepseek_vit_cls", "gp", |c| {
        c["model_args"]["global_pool"] = "".into()
    });
    let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
        .err()
        .expect("global_pool='' must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn encoder_returns_timms_token_sequence() {
    // `deepseek_vit_412m_enc`: the weights at the top level, forward = the projector's tokens.
    let f = fixture("deepseek_vit_enc");
    assert_eq!(reference(&f).logits_shape, [2, 4, 12]);
    check_tokens_fixture(&f, TOL);
}

#[test]
fn encoder_feature_maps_are_its_own_blocks() {
    let f = fixture("deepseek_vit_enc");
    assert_eq!(check_feature_maps(&f, TOL), 1);
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> =
        (0..3).map(|i| (16, 4, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // timm registers it with num_classes 0: the output is its pooled features.
    assert_bare_seeded("deepseek_vit_412m", 56, 1024);
}
