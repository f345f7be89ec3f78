//! The ResNet family's native graphs (built from config.json + model.safetensors, no model.onnx)
//! through the C ABI, against timm's logits and pooled features.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// The family's fixtures plus the foundation's test_resnet, which the same builder runs.
fn resnet_fixtures() -> Vec<Fixture> {
    let mut v = fixtures_of_family("resnet");
    v.push(fixture("test_resnet"));
    v
}

fn features_options() -> [(&'static str, &'static str); 2] {
    [("graph", "native"), ("output", "features")]
}

#[test]
fn every_fixture_matches_timm_logits_natively() {
    let fixtures = resnet_fixtures();
    assert!(
        fixtures.len() >= 8,
        "only {} resnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
    }
}

#[test]
fn every_fixture_matches_timm_features_natively() {
    for f in resnet_fixtures() {
        let r = reference(&f);
        let m = CModel::create(&f.spec("native"), true, &features_options())
            .unwrap_or_else(|e| panic!("{}: {e:?}", f.name));
        // timm's pre-logits width: num_features, doubled by catavgmax pooling.
        assert_eq!(
            m.output_dim() as i64,
            r.features_shape[1],
            "{}: output dim",
            f.name
        );
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(f.folder("native").unwrap().join("config.json")).unwrap(),
        )
        .unwrap();
        let num_features = cfg["num_features"].as_u64().unwrap() as usize;
        let mult = if cfg["global_pool"] == "catavgmax" {
            2
        } else {
            1
        };
        assert_eq!(
            m.output_dim(),
            num_features * mult,
            "{}: output dim vs num_features",
            f.name
        );
        let out = m
            .infer(&r.input, &r.input_shape)
            .unwrap_or_else(|e| panic!("{}: {e:?}", f.name));
        let d = max_abs_diff(&out, &r.features);
        eprintln!(
            "{:<32} {:<14} features max|diff| = {d:.3e}",
            f.name, "native"
        );
        assert!(d <= TOL, "{}: features differ from timm by {d}", f.name);
    }
}

#[test]
fn half_precision_weight_files_are_covered() {
    let dtypes: Vec<String> = fixtures_of_family("resnet")
        .into_iter()
        .map(|f| f.weights_dtype)
        .collect();
    assert!(dtypes.iter().any(|d| d == "F16"), "{dtypes:?}");
    assert!(dtypes.iter().any(|d| d == "BF16"), "{dtypes:?}");
    for f in fixtures_of_family("resnet")
        .into_iter()
        .filter(|f| f.weights_dtype != "F32")
    {
        check_fixture(&f, "native", &[("graph", "native")], TOL);
    }
}

#[test]
fn native_graph_matches_timms_own_onnx_export() {
    let f = fixtures_of_family("resnet")
        .into_iter()
        .find(|f| f.folders.contains_key("onnx_embedded"))
        .expect("an ONNX fixture");
    let r = reference(&f);
    let native = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    let onnx = CModel::create(&f.spec("onnx_embedded"), true, &[("graph", "onnx")]).unwrap();
    let a = native.infer(&r.input, &r.input_shape).unwrap();
    let b = onnx.infer(&r.input, &r.input_shape).unwrap();
    assert!(max_abs_diff(&a, &b) <= TOL);
}

#[test]
fn bare_name_pretrained_false_builds_full_size_resnet50() {
    let create = |seed: &str| {
        CModel::create("resnet50", false, &[("seed", seed)]).unwrap_or_else(|e| panic!("{e:?}"))
    };
    let m = create("7");
    assert_eq!(m.output_dim(), 1000);
    // timm's default cfg for resnet50 (a1_in1k): 224x224.
    let shape = [2i64, 3, 224, 224];
    let input: Vec<f32> = (0..2 * 3 * 224 * 224)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let out = m.infer(&input, &shape).unwrap();
    assert_eq!(out.len(), 2 * 1000);
    assert!(out.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(out.iter().any(|v| *v != 0.0), "all-zero logits");
    let again = create("7").infer(&input, &shape).unwrap();
    assert_eq!(out, again, "same seed must give the same network");
    let other = create("8").infer(&input, &shape).unwrap();
    assert!(
        max_abs_diff(&out, &other) > 1e-6,
        "different seeds gave the same output"
    );

    let feats =
        CModel::create("resnet50", false, &[("seed", "7"), ("output", "features")]).unwrap();
    assert_eq!(feats.output_dim(), 2048);
}

#[test]
fn bare_name_pretrained_false_builds_small_defaults() {
    // Tiered stem with BasicBlocks, and timm's mixed-block test model, at their default sizes.
    for (arch, side) in [("resnet10t", 176), ("test_resnet", 160)] {
        let m = CModel::create(arch, false, &[]).unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000, "{arch}");
        let input = vec![0.5f32; 3 * side * side];
        let out = m.infer(&input, &[1, 3, side as i64, side as i64]).unwrap();
        assert!(out.iter().all(|v| v.is_finite()), "{arch}");
    }
}

#[test]
fn pretrained_false_builds_every_fixture_architecture_from_its_config() {
    // No weights to read structure from: everything comes from the arch table and model_args,
    // so every variant (SE, aa, conv stem pool, 3x3 shortcut, dilation, pooling) is built blind.
    for f in fixtures_of_family("resnet") {
        let r = reference(&f);
        for (output, dim) in [
            ("logits", r.logits_shape[1]),
            ("features", r.features_shape[1]),
        ] {
            let m = CModel::create(
                &f.spec("native"),
                false,
                &[("output", output), ("seed", "3")],
            )
            .unwrap_or_else(|e| panic!("{} [{output}]: {e:?}", f.name));
            assert_eq!(m.output_dim() as i64, dim, "{} [{output}]", f.name);
            let out = m.infer(&r.input, &r.input_shape).unwrap();
            assert!(out.iter().all(|v| v.is_finite()), "{} [{output}]", f.name);
            let again = CModel::create(
                &f.spec("native"),
                false,
                &[("output", output), ("seed", "3")],
            )
            .unwrap();
            assert_eq!(
                out,
                again.infer(&r.input, &r.input_shape).unwrap(),
                "{} [{output}]: not deterministic",
                f.name
            );
        }
    }
}

/// A copy of a fixture folder with config.json edited.
fn edited_copy(f: &Fixture, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let src = f.folder("native").unwrap();
    let dir = std::env::temp_dir().join(format!(
        "timm-native-resnet-{}-{}",
        f.name,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    dir
}

#[test]
fn weights_that_disagree_with_the_architecture_are_invalid_and_name_the_tensor() {
    let f = fixture("resnext50-tiny");
    // Different stage widths than the weights were saved with.
    let dir = edited_copy(&f, |c| {
        c["model_args"]["channels"] = serde_json::json!([8, 8, 16, 16])
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    eprintln!("{}", e.message);
    assert!(e.message.contains("layer1.0.conv1.weight"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);

    // A BasicBlock architecture name over bottleneck weights with another stem.
    let dir = edited_copy(&f, |c| {
        c["architecture"] = "resnet18d".into();
        c["model_args"] = serde_json::json!({"layers": [1, 1, 1, 1], "channels": [4, 4, 8, 8]});
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    eprintln!("{}", e.message);
    assert!(e.message.contains("layer1.0.conv1.weight"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_variants_and_arguments_are_refused_by_name() {
    let f = fixture("resnet18-tiny");
    let dir = edited_copy(&f, |c| c["model_args"]["aa_layer"] = "lowpass".into());
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("lowpass"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = edited_copy(&f, |c| c["model_args"]["frobnicate"] = 3.into());
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("frobnicate"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = edited_copy(&f, |c| c["global_pool"] = "".into());
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);

    let dir = edited_copy(&f, |c| {
        c["model_args"]["block_args"] = serde_json::json!({"attn_layer": "cbam"})
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("attn_layer"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pruned_ecaresnets_take_timms_pruned_widths_without_weights() {
    // timm's features_only channels for the pruned networks (adapt_model_from_file's widths).
    for (arch, chans) in [
        ("ecaresnet50d_pruned", [64, 19, 171, 818, 2022]),
        ("ecaresnet101d_pruned", [64, 26, 142, 278, 2042]),
    ] {
        let m = CModel::create(arch, false, &[("output", "feature_maps")])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        let got: Vec<usize> = m.feature_info().iter().map(|i| i.0).collect();
        assert_eq!(got, chans, "{arch}");
        let logits = CModel::create(arch, false, &[("output", "features")]).unwrap();
        assert_eq!(logits.output_dim(), chans[4], "{arch}");
    }
}

/// The fixtures the generator made `features_only` references for.
fn feature_map_fixtures() -> Vec<Fixture> {
    let v: Vec<Fixture> = fixtures_of_family("resnet")
        .into_iter()
        .filter(|f| !feature_map_refs(f).is_empty())
        .collect();
    assert!(v.len() >= 4, "only {} resnet feature-map fixtures", v.len());
    v
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default out_indices, chosen and negative ones, output_stride 8/16 (over model_args too),
    // inputs of other sizes: maps, shapes and feature_info as timm gives them.
    let mut checked = 0;
    for f in feature_map_fixtures() {
        checked += check_feature_maps(&f, TOL);
    }
    assert!(checked >= 10, "only {checked} feature-map references");
}

#[test]
fn feature_info_is_timms_act1_and_layer1_to_4() {
    let m = CModel::create("resnet50", false, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let want: Vec<(usize, usize, String)> = [
        (64, 2, "act1"),
        (256, 4, "layer1"),
        (512, 8, "layer2"),
        (1024, 16, "layer3"),
        (2048, 32, "layer4"),
    ]
    .into_iter()
    .map(|(c, r, n)| (c, r, n.to_string()))
    .collect();
    assert_eq!(info, want);
    // Dilated stages keep their reduction at the output stride, as timm's feature_info does.
    let m = CModel::create(
        "resnet50",
        false,
        &[("output", "feature_maps"), ("output_stride", "8")],
    )
    .unwrap();
    let reductions: Vec<usize> = m.feature_info().iter().map(|i| i.1).collect();
    assert_eq!(reductions, [2, 4, 8, 8, 8]);
    assert_eq!(
        m.output_shape(4, &[1, 3, 64, 80]).unwrap(),
        [1, 2048, 8, 10]
    );
}

#[test]
fn out_of_range_feature_indices_are_invalid_arguments() {
    let f = fixture("resnet18-tiny");
    for idx in ["5", "-6", "0,7"] {
        let e = CModel::create(
            &f.spec("native"),
            true,
            &[("output", "feature_maps"), ("out_indices", idx)],
        )
        .err()
        .unwrap_or_else(|| panic!("out_indices {idx} must fail"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("out_indices"), "{}", e.message);
    }
}

#[test]
fn output_strides_other_than_8_16_32_are_refused() {
    let f = fixture("resnet18-tiny");
    for os in ["4", "12", "64"] {
        let e = CModel::create(
            &f.spec("native"),
            true,
            &[("output", "feature_maps"), ("output_stride", os)],
        )
        .err()
        .unwrap_or_else(|| panic!("output_stride {os} must fail"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("output_stride"), "{}", e.message);
    }
}

#[test]
fn inputs_too_small_for_the_anti_aliasing_pools_are_refused() {
    // Floor-mode AvgPool2d(2) after the stem and in stages 2-4: 30 -> 15 -> 7 -> 3 -> 1 -> 0,
    // while 31 -> 16 -> 8 -> 4 -> 2 -> 1 still works.
    let f = fixture("seresnextaa-tiny");
    for output in ["feature_maps", "logits"] {
        let m = CModel::create(&f.spec("native"), true, &[("output", output)]).unwrap();
        let e = m
            .output_shape(0, &[1, 3, 30, 30])
            .expect_err("30x30 must be too small");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("at least 31x31"), "{}", e.message);
        let e = m
            .infer_outputs(&[0.5; 3 * 30 * 40], &[1, 3, 30, 40])
            .unwrap_err();
        assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
        assert!(e.message.contains("too small"), "{}", e.message);
        let out = m
            .infer_outputs(&[0.5; 3 * 31 * 31], &[1, 3, 31, 31])
            .unwrap();
        assert!(out.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
    }
}

#[test]
fn logits_take_any_input_size() {
    // A convnet: the same weights at another size give timm's size-independent head width.
    let f = fixture("resnet50d-tiny-f16");
    let m = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    let input = vec![0.25f32; 3 * 45 * 61];
    let out = m.infer(&input, &[1, 3, 45, 61]).unwrap();
    assert_eq!(out.len(), m.output_dim());
    assert!(out.iter().all(|v| v.is_finite()));
}
