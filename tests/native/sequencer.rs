//! Native Sequencer2D graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_sequencer_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("sequencer");
    assert!(fs.len() >= 4, "only {} sequencer fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

/// timm's `[N, H, W, C]` map as `[N, C, H, W]`.
fn nhwc_to_nchw(t: &Tensor) -> Tensor {
    let [n, h, w, c] = [0, 1, 2, 3].map(|i| t.shape[i] as usize);
    let mut data = vec![0f32; t.data.len()];
    for b in 0..n {
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    data[((b * c + k) * h + y) * w + x] = t.data[((b * h + y) * w + x) * c + k];
                }
            }
        }
    }
    Tensor {
        shape: vec![n as i64, c as i64, h as i64, w as i64],
        data,
    }
}

/// Every `features_only` reference of `name`: timm's FeatureListNet returns Sequencer's stages
/// channels-last; this library returns them NCHW (as timm's `forward_intermediates`).
fn check_nhwc_feature_maps(name: &str) -> usize {
    let f = fixture(name);
    let refs = feature_map_refs(&f);
    for (k, r) in refs.iter().enumerate() {
        let opts: Vec<(&str, &str)> = r
            .options
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let m = CModel::create(&f.spec("native"), true, &opts)
            .unwrap_or_else(|e| panic!("{name} feature maps {k} {opts:?}: {e:?}"));
        assert_eq!(m.output_count(), r.outputs.len(), "{name} [{k}]: map count");
        assert_eq!(
            m.feature_info(),
            r.feature_info,
            "{name} [{k}]: feature_info"
        );
        let got = m
            .infer_outputs(&r.input, &r.input_shape)
            .unwrap_or_else(|e| panic!("{name} feature maps {k}: {e:?}"));
        for (i, (g, want)) in got.iter().zip(&r.outputs).enumerate() {
            let want = nhwc_to_nchw(want);
            assert_eq!(g.shape, want.shape, "{name} [{k}] map {i}: shape");
            let shape = m.output_shape(i, &r.input_shape).unwrap();
            assert_eq!(shape, want.shape, "{name} [{k}] map {i}: reported shape");
            let scale = want
                .data
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()))
                .max(1e-12);
            let d = max_abs_diff(&g.data, &want.data) / scale;
            eprintln!(
                "{name:<24} maps[{k}] {i} {:?} rel max|diff| = {d:.3e}",
                g.shape
            );
            assert!(
                d <= TOL,
                "{name} [{k}] map {i}: differs from timm by {d} (relative)"
            );
        }
    }
    refs.len()
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default out_indices (0, 1, 2); [1, -1] at another input size.
    assert_eq!(check_nhwc_feature_maps("sequencer2d_s-small"), 2);
}

#[test]
fn feature_info_is_timms_stages_with_default_out_indices() {
    let f = fixture("sequencer2d_s-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(8, 4), (12, 8), (12, 8)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "3")],
    )
    .unwrap();
    assert_eq!(m.feature_info(), vec![(12, 8, "stages.3".to_string())]);
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
    let e = create_err("sequencer2d_s-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // Sequencer has no dilated stages.
    let e = create_err("sequencer2d_s-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // Smaller than the stem's 4x4 patch.
    let e = create_err("sequencer2d_s-small", &[("input_size", "3x3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn variants_not_built_are_refused_naming_the_argument() {
    for (key, value) in [
        ("rnn_layer", "gru2d"),
        ("union", "mul"),
        ("global_pool", ""),
    ] {
        let dir = edited_copy("sequencer2d_s-small", key, |c| {
            c["model_args"][key] = value.into()
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains(key), "{}", e.message);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // sequencer2d_s (27 M) at 64x64: the bidirectional row / column LSTMs on 8x8, 4x4 maps.
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    assert_seeded("sequencer2d_s", &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
}
