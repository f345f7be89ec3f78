//! Native SAM ViT image encoders through the C ABI, against timm's logits, pre-logits features
//! (`forward_head(pre_logits=True)`) and `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_samvit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("vision_transformer_sam");
    assert!(fs.len() >= 3, "only {} samvit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // The last three blocks, [0, -1], and a 40-pixel input: timm runs the 32-pixel model there
    // (resampling its position embedding and the global block's relative positions in forward,
    // a 5x5 grid in 3x3 windows); this library takes that size as `input_size`.
    let f = fixture("samvit_base-small");
    let refs = feature_map_refs(&f);
    assert_eq!(refs.len(), 3);
    for (k, r) in refs.iter().enumerate() {
        let size = format!("{}x{}", r.input_shape[2], r.input_shape[3]);
        let mut opts: Vec<(&str, &str)> = r
            .options
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        opts.push(("input_size", &size));
        let m = CModel::create(&f.spec("native"), true, &opts)
            .unwrap_or_else(|e| panic!("maps {k} {opts:?}: {e:?}"));
        assert_eq!(m.feature_info(), r.feature_info, "[{k}] feature_info");
        let got = m.infer_outputs(&r.input, &r.input_shape).unwrap();
        assert_eq!(got.len(), r.outputs.len(), "[{k}] map count");
        for (i, (g, want)) in got.iter().zip(&r.outputs).enumerate() {
            assert_eq!(g.shape, want.shape, "[{k}] map {i}: shape");
            let scale = want.data.iter().fold(1e-12f32, |a, v| a.max(v.abs()));
            let d = max_abs_diff(&g.data, &want.data) / scale;
            eprintln!("samvit maps[{k}] {i} {:?} rel max|diff| = {d:.3e}", g.shape);
            assert!(
                d <= TOL,
                "[{k}] map {i}: differs from timm by {d} (relative)"
            );
        }
    }
}

#[test]
fn feature_info_is_every_block_at_the_patch_stride() {
    let f = fixture("samvit_base-small");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,1,2")],
    )
    .unwrap();
    let want: Vec<(usize, usize, String)> = (0..3).map(|i| (8, 8, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn seeded_random_weights_build_run_and_differ_by_seed() {
    // pretrained=false on a fixture folder: its narrow architecture, seeded weights (every
    // registered SAM ViT is over 80M parameters, slow in a debug build).
    let spec = fixture("samvit_base-small").spec("native");
    let x: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(&spec, &[], 5, &x, &[1, 3, 32, 32], ("1", "2"));
}

#[test]
fn rope_and_unpooled_heads_are_refused_naming_why() {
    for (key, value) in [
        ("use_rope", serde_json::json!(true)),
        ("global_pool", serde_json::json!("")),
    ] {
        let dir = edited_copy("samvit_base-small", key, |c| {
            c["model_args"][key] = value.clone();
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains(key), "{}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
