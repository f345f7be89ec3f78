//! MobileNet-V5 (Gemma 3n's vision encoder) native graphs through the C ABI, against timm's
//! logits, pooled features and `features_only` maps. The fixtures' narrow block tables come
//! through model_args `block_args` (timm's decoded block dicts).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

fn scale(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

#[test]
fn every_mobilenetv5_fixture_matches_timm_natively() {
    // 300m: the MSFA neck (nearest upsampling, bilinear resize to 3x3); base: use_msfa=False
    // with TF "SAME" padding on an odd input.
    let fixtures = fixtures_of_family("mobilenetv5");
    assert_eq!(fixtures.len(), 2);
    for f in &fixtures {
        let r = reference(f);
        assert!(
            scale(&r.logits) > 0.0 && scale(&r.features) > 0.0,
            "{}",
            f.name
        );
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
        let m = CModel::create(&f.spec("native"), true, &[("output", "features")]).unwrap();
        let got = m.infer(&r.input, &r.input_shape).unwrap();
        let d = max_abs_diff(&got, &r.features) / scale(&r.features);
        assert!(d <= TOL, "{}: features off by {d} of the largest", f.name);
    }
}

#[test]
fn feature_maps_match_timms_forward_intermediates() {
    // Every map; [1, -1] on another input size (the neck is not built for maps: any size).
    assert_eq!(
        check_feature_maps(&fixture("mobilenetv5_300m-small"), TOL),
        2
    );
    assert_eq!(
        check_feature_maps(&fixture("mobilenetv5_base-small"), TOL),
        1
    );
}

#[test]
fn feature_info_is_the_stem_and_every_stage_as_timm_names_them() {
    let f = fixture("mobilenetv5_300m-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [
        (8, 2, "bn1"),
        (8, 4, "blocks.0"),
        (8, 8, "blocks.1"),
        (16, 16, "blocks.2"),
        (16, 32, "blocks.3"),
    ]
    .iter()
    .map(|&(c, r, m)| (c, r, m.to_string()))
    .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn the_msfa_graph_declares_its_input_size() {
    // The neck's resizes are sized for 32x32: another size is refused, not a runtime failure.
    let f = fixture("mobilenetv5_300m-small");
    let r = reference(&f);
    let m = CModel::create(&f.spec("native"), true, &[]).unwrap();
    let x = vec![0.5f32; 2 * 3 * 48 * 48];
    let e = m
        .infer(&x, &[2, 3, 48, 48])
        .expect_err("48x48 must be refused");
    assert_ne!(e.status, TimmStatus::TIMM_OK, "{e:?}");
    assert!(m.infer(&r.input, &r.input_shape).is_ok());
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |seed: &str| {
        let m = CModel::create(
            "mobilenetv5_base",
            false,
            &[("seed", seed), ("input_size", "64x64")],
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
    let m = CModel::create(
        "mobilenetv5_base",
        false,
        &[("output", "features"), ("input_size", "64x64")],
    )
    .unwrap();
    assert_eq!(m.output_dim(), 2048);
}

#[test]
fn the_encoders_feature_maps_are_its_blocks_and_its_forward_is_refused() {
    // timm's `mobilenetv5_300m_enc` features_only (forward_intermediates, the MSFA pruned) runs
    // the same stem and blocks as the classifier: with base-small's block_args, stem and TF
    // "SAME" padding (the encoder's default) its maps are base-small's timm references, exactly.
    let f = fixture("mobilenetv5_base-small");
    let dir = edited_copy("mobilenetv5_base-small", "enc", |c| {
        c["architecture"] = "mobilenetv5_300m_enc".into();
        let ma = c["model_args"].as_object_mut().unwrap();
        for k in [
            "use_msfa",
            "num_features",
            "pad_type",
            "num_classes",
            "global_pool",
        ] {
            ma.remove(k);
        }
        c["num_classes"] = 0.into();
    });
    let spec = format!("local:{}", dir.display());
    let refs = feature_map_refs(&f);
    let m = CModel::create(&spec, true, &[("output", "feature_maps")]).unwrap();
    assert_eq!(m.feature_info(), refs[0].feature_info);
    let got = m
        .infer_outputs(&refs[0].input, &refs[0].input_shape)
        .unwrap();
    assert_eq!(got.len(), 5);
    for (i, (g, want)) in got.iter().zip(&refs[0].outputs).enumerate() {
        assert_eq!(g.shape, want.shape, "map {i}");
        let d = max_abs_diff(&g.data, &want.data) / scale(&want.data);
        assert!(d <= TOL, "map {i}: {d}");
    }
    // Its forward is the MSFA map, not one vector per image.
    for opts in [&[][..], &[("output", "features")][..]] {
        let e = CModel::create(&spec, true, opts)
            .err()
            .expect("the _enc encoder's forward must be refused");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains("MSFA map"), "{}", e.message);
    }
    let e = CModel::create("mobilenetv5_300m_enc", false, &[])
        .err()
        .expect("the bare _enc encoder's forward must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unbuilt_options_are_refused() {
    // timm's MobileNetV5 takes no output_stride.
    let f = fixture("mobilenetv5_300m-small");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    for (key, value, why) in [
        ("global_pool", serde_json::json!("max"), "global_pool"),
        ("norm_layer", serde_json::json!("layernorm2d"), "RmsNorm2d"),
    ] {
        let dir = edited_copy("mobilenetv5_300m-small", key, |c| {
            c["model_args"][key] = value.clone()
        });
        let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
            .err()
            .unwrap_or_else(|| panic!("{key} must be refused"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains(why), "{}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
