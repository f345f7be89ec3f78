//! Native Gemma4 ViT graphs through the C ABI, against timm's logits, pooled features
//! (`forward_head(pre_logits=True)`) and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_gemma4_vit_fixture_matches_timm_natively() {
    // Sandwich-norm blocks with 2-D rope and q/k/v norms; the soft 2x2 token pool with standardize.
    let fs: Vec<Fixture> = fixtures_of_family("gemma4_vit")
        .into_iter()
        .filter(|f| f.output == "logits")
        .collect();
    assert!(fs.len() >= 2, "only {} gemma4_vit fixtures", fs.len());
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
    // Default (last three blocks), [0, -1], and another input size (position table and rope rebuilt).
    assert_eq!(check_feature_maps(&fixture("gemma4_vit_cls"), TOL), 3);
}

#[test]
fn feature_info_is_every_block_unprefixed_as_timm_copies_it() {
    let f = fixture("gemma4_vit_cls");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,1,2")],
    )
    .unwrap();
    let want: Vec<(usize, usize, String)> =
        (0..3).map(|i| (16, 4, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn token_outputs_and_odd_pool_grids_are_refused() {
    // The encoder's forward is a token sequence: logits and pooled features do not exist.
    assert_tower_refuses_heads("gemma4_vit_570m_enc");
    let e = CModel::create(
        &fixture("gemma4_vit_cls").spec("native"),
        true,
        &[("output", "tokens")],
    )
    .err()
    .expect("a classifier has no token output");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // The 2x2 soft pool needs an even patch grid: 20x24 at patch 4 is 5x6.
    let spec = fixture("gemma4_vit_soft").spec("native");
    let e = CModel::create(&spec, true, &[("input_size", "20x24")])
        .err()
        .expect("an odd grid must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("pooling_kernel_size"), "{}", e.message);
    let dir = edited_copy("gemma4_vit_cls", "gp", |c| {
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
    // `gemma4_vit_570m_enc`: the weights at the top level, forward = the projector's tokens.
    let f = fixture("gemma4_vit_enc");
    assert_eq!(reference(&f).logits_shape, [2, 6, 16]);
    check_tokens_fixture(&f, TOL);
}

#[test]
fn encoder_feature_maps_are_its_own_blocks() {
    let f = fixture("gemma4_vit_enc");
    assert_eq!(check_feature_maps(&f, TOL), 1);
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> =
        (0..3).map(|i| (16, 4, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // timm registers it with num_classes 0: the output is its pooled features.
    assert_bare_seeded("gemma4_vit_167m", 96, 768);
}
