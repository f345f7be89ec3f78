//! Native MambaOut graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_mambaout_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("mambaout");
    assert!(fs.len() >= 3, "only {} mambaout fixtures", fs.len());
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

/// Every `features_only` reference of `name`: timm's FeatureListNet returns MambaOut's stages
/// channels-last; this library returns them NCHW (as timm's `forward_intermediates`).
fn check_mambaout_feature_maps(name: &str) -> usize {
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
                "{name:<28} maps[{k}] {i} {:?} rel max|diff| = {d:.3e}",
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
    // Every stage, [1, -1], another input size (odd maps through the stride-2 convs).
    assert_eq!(check_mambaout_feature_maps("test_mambaout-small"), 3);
    assert_eq!(check_mambaout_feature_maps("mambaout_femto-small"), 1);
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("mambaout_base_wide_rw-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(8, 4), (16, 8), (16, 16), (24, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
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
    let e = create_err("test_mambaout-small", &[fm, ("out_indices", "4")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // MambaOut takes no output_stride.
    let e = create_err("test_mambaout-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    for (arch, dim) in [("test_mambaout", 256), ("mambaout_femto", 1152)] {
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
            .collect();
        let run = |seed: &str| {
            let m = CModel::create(arch, false, &[("seed", seed)])
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
            assert_eq!(m.output_dim(), 1000, "{arch}");
            m.infer(&x, &[1, 3, 64, 64]).unwrap()
        };
        let a = run("1");
        assert!(a.iter().all(|v| v.is_finite()), "{arch}: non-finite logits");
        assert_eq!(a, run("1"), "{arch}: same seed, same network");
        assert_ne!(a, run("2"), "{arch}: another seed, another network");
        let m = CModel::create(arch, false, &[("output", "features")]).unwrap();
        assert_eq!(m.output_dim(), dim, "{arch}");
    }
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("mambaout_femto-small", "ds", |c| {
        c["model_args"]["downsample"] = "pool".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("downsample"), "{}", e.message);
}
