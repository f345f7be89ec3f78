//! Native Qwen3 ViT graphs through the C ABI, against timm's logits, pooled features
//! (`forward_head(pre_logits=True)`) and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_qwen3_vit_fixture_matches_timm_natively() {
    // Rope attention + resampled learned grid; the `_merge` classifier through the projector.
    let fs: Vec<Fixture> = fixtures_of_family("qwen3_vit")
        .into_iter()
        .filter(|f| f.output == "logits")
        .collect();
    assert!(fs.len() >= 2, "only {} qwen3_vit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
        // The non-affine LayerNorm keeps features near 1; judge them by their own largest value.
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
    // Default (last three blocks), [0, -1], and another input size (grid and rope rebuilt).
    assert_eq!(check_feature_maps(&fixture("qwen3_vit_cls"), TOL), 3);
}

#[test]
fn feature_info_is_every_encoder_block_at_the_patch_stride() {
    let f = fixture("qwen3_vit_cls");
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
fn encoder_returns_timms_projector_tokens() {
    // qwen3_vit_88m_enc: the weights at the top level, forward = the merger's tokens.
    let f = fixture("qwen3_vit_enc");
    assert_eq!(reference(&f).logits_shape, [2, 6, 12]);
    check_tokens_fixture(&f, TOL);
}

#[test]
fn encoder_feature_maps_are_its_own_blocks() {
    let f = fixture("qwen3_vit_enc");
    assert_eq!(check_feature_maps(&f, TOL), 1);
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> =
        (0..3).map(|i| (16, 4, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn encoder_raw_and_mean_pools_follow_timms_forward() {
    // global_pool='' is forward_features: the last block's NHWC map, as [N, H*W, C] (the same
    // floats). 'avg' is its mean over the tokens.
    let f = fixture("qwen3_vit_enc_raw");
    let r = reference(&f);
    assert_eq!(r.logits_shape, [2, 24, 16]);
    check_tokens_fixture(&f, TOL);
    let (n, c, hw) = (2usize, 16usize, 24usize);
    let raw = CModel::create(&f.spec("native"), true, &[("output", "tokens")]).unwrap();
    assert_eq!(raw.output_shape(0, &r.input_shape).unwrap(), r.logits_shape);
    let tokens = raw.infer(&r.input, &r.input_shape).unwrap();
    let avg_dir = edited_copy("qwen3_vit_enc_raw", "avg", |c| {
        c["model_args"]["global_pool"] = "avg".into()
    });
    let spec = format!("local:{}", avg_dir.display());
    let mean = CModel::create(&spec, true, &[]).unwrap();
    assert_eq!(mean.output_dim(), c);
    let got = mean.infer(&r.input, &r.input_shape).unwrap();
    let want: Vec<f32> = (0..n * c)
        .map(|i| {
            (0..hw)
                .map(|t| tokens[((i / c) * hw + t) * c + i % c])
                .sum::<f32>()
                / hw as f32
        })
        .collect();
    assert!(max_abs_diff(&got, &want) <= 1e-5 * scale(&want));
    let e = CModel::create(&spec, true, &[("output", "tokens")])
        .err()
        .unwrap();
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    let _ = std::fs::remove_dir_all(&avg_dir);
}

#[test]
fn bare_encoder_without_weights_builds_runs_and_is_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let opts = [("output", "tokens"), ("input_size", "64x64")];
    // 88m_enc at 64x64: a 4x4 patch grid, merged 2x2 into 4 tokens of out_features 1024.
    assert_seeded(
        "qwen3_vit_88m_enc",
        &opts,
        4 * 1024,
        &x,
        &[1, 3, 64, 64],
        ("1", "2"),
    );
}

#[test]
fn token_outputs_and_odd_merge_grids_are_refused() {
    // The encoder's forward is a token sequence: logits and pooled features do not exist.
    assert_tower_refuses_heads("qwen3_vit_88m_enc");
    // A classifier returns one vector per image.
    let e = CModel::create(
        &fixture("qwen3_vit_cls").spec("native"),
        true,
        &[("output", "tokens")],
    )
    .err()
    .expect("a classifier has no token output");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("one vector per image"), "{}", e.message);
    // The 2x2 merge needs an even patch grid: 20x24 at patch 4 is 5x6.
    let spec = fixture("qwen3_vit_merge").spec("native");
    let e = CModel::create(&spec, true, &[("input_size", "20x24")])
        .err()
        .expect("an odd grid must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("merge_size"), "{}", e.message);
    let dir = edited_copy("qwen3_vit_cls", "gp", |c| {
        c["model_args"]["global_pool"] = "".into()
    });
    let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
        .err()
        .expect("global_pool='' must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}
