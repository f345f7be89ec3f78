//! Native Swin Transformer V2 graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_swinv2_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("swin_transformer_v2");
    assert!(fs.len() >= 3, "no swin v2 fixtures in index.json");
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

/// Every `features_only` reference of `name`: timm's FeatureListNet returns Swin V2's stages
/// channels-last; this library returns them NCHW (as timm's `forward_intermediates`).
fn check_swin_feature_maps(name: &str) -> usize {
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
    // Default (every stage), out_indices with a negative index, img_size= at another size.
    assert_eq!(check_swin_feature_maps("swinv2_tiny-small"), 3);
    // always_partition with a window wider than the map.
    assert_eq!(check_swin_feature_maps("swinv2_small_w16-2stage"), 1);
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let fm = ("output", "feature_maps");
    let e = create_err("swinv2_tiny-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("out of range"), "{}", e.message);
    // Swin has no dilated stages.
    let e = create_err("swinv2_tiny-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // The masks are computed at load for one input size.
    let e = create_err("swinv2_tiny-small", &[("dynamic_img_size", "true")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn inputs_smaller_than_a_patch_are_refused() {
    let e = create_err("swinv2_tiny-small", &[("input_size", "3x3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn variants_not_built_are_refused_naming_the_argument() {
    let dir = edited_copy("swinv2_tiny-small", "norm", |c| {
        c["model_args"]["norm_layer"] = "rmsnorm".into()
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
    assert!(e.message.contains("norm_layer"), "{}", e.message);
}

#[test]
fn a_bare_name_builds_a_seeded_full_size_model() {
    let arch = "swinv2_tiny_window8_256";
    let shape = [1, 3, 256, 256];
    let input: Vec<f32> = (0..3 * 256 * 256)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &input, &shape, ("7", "8"));
}
