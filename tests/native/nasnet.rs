//! Native NASNet-A graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_nasnet_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("nasnet");
    assert!(!fs.is_empty(), "no nasnet fixtures");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

/// timm's feature_info for NASNet lists the full-size widths (96, 168, 1008, 2016, 4032) whatever
/// the model's, so the maps are compared with timm's and the widths with the maps'.
#[test]
fn feature_maps_match_timms_features_only() {
    let f = fixture("nasnetalarge-small");
    let refs = feature_map_refs(&f);
    assert_eq!(refs.len(), 2);
    for (k, r) in refs.iter().enumerate() {
        let opts: Vec<(&str, &str)> = r
            .options
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let m = CModel::create(&f.spec("native"), true, &opts)
            .unwrap_or_else(|e| panic!("feature maps {k} {opts:?}: {e:?}"));
        assert_eq!(m.output_count(), r.outputs.len(), "[{k}]: map count");
        let info = m.feature_info();
        let names: Vec<_> = info.iter().map(|(_, r, n)| (*r, n.clone())).collect();
        let want: Vec<_> = r
            .feature_info
            .iter()
            .map(|(_, r, n)| (*r, n.clone()))
            .collect();
        assert_eq!(names, want, "[{k}]: reductions and modules");
        let got = m.infer_outputs(&r.input, &r.input_shape).unwrap();
        for (i, (g, want)) in got.iter().zip(&r.outputs).enumerate() {
            assert_eq!(g.shape, want.shape, "[{k}] map {i}: shape");
            assert_eq!(
                g.shape[1] as usize, info[i].0,
                "[{k}] map {i}: feature_info width"
            );
            let scale = want
                .data
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()))
                .max(1e-12);
            let d = max_abs_diff(&g.data, &want.data) / scale;
            eprintln!("nasnet maps[{k}] {i} {:?} rel max|diff| = {d:.3e}", g.shape);
            assert!(
                d <= TOL,
                "[{k}] map {i}: differs from timm by {d} (relative)"
            );
        }
    }
}

#[test]
fn feature_info_is_timms_five_taps() {
    let f = fixture("nasnetalarge-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [
        (4, 2, "conv0"),
        (4, 4, "cell_stem_1.conv_1x1.act"),
        (24, 8, "reduction_cell_0.conv_1x1.act"),
        (48, 16, "reduction_cell_1.conv_1x1.act"),
        (96, 32, "act"),
    ]
    .iter()
    .map(|&(c, r, n)| (c, r, n.to_string()))
    .collect();
    assert_eq!(m.feature_info(), want);
}

fn create_err(options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture("nasnetalarge-small").spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let fm = ("output", "feature_maps");
    let e = create_err(&[fm, ("out_indices", "5")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // timm's NASNet asserts output_stride 32.
    let e = create_err(&[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn variants_not_built_are_refused_naming_the_argument() {
    for (key, value) in [
        ("output_stride", serde_json::json!(16)),
        ("pad_type", "valid".into()),
    ] {
        let dir = edited_copy("nasnetalarge-small", key, |c| {
            c["model_args"][key] = value.clone()
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
    // timm's defaults: the full-size network, at a small input.
    assert_bare_seeded("nasnetalarge", 64, 1000);
}
