//! ConvNeXt native graphs through the C ABI, against timm's logits and pooled features.

mod common;
use common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// Logits and `output=features` of the native graph against timm, for one fixture.
fn check_native(f: &Fixture) -> (f32, f32) {
    check_fixture(f, "native", &[("graph", "native")], TOL);
    let r = reference(f);
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("graph", "native"), ("output", "features")],
    )
    .unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    assert_eq!(
        m.output_dim() as i64,
        r.features_shape[1],
        "{}: timm_model_output_dim vs num_features",
        f.name
    );
    let feats = m
        .infer(&r.input, &r.input_shape)
        .unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    let df = max_abs_diff(&feats, &r.features);
    eprintln!(
        "{:<32} {:<14} features max|diff| = {df:.3e}",
        f.name, "native"
    );
    assert!(df <= TOL, "{}: features differ from timm by {df}", f.name);

    let logits = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    let out = logits.infer(&r.input, &r.input_shape).unwrap();
    (max_abs_diff(&out, &r.logits), df)
}

#[test]
fn every_convnext_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("convnext");
    assert!(
        fixtures.len() >= 8,
        "only {} convnext fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_native(f);
    }
}

#[test]
fn foundation_convnext_fixtures_run_natively() {
    // timm's own test_convnext, and the same architecture saved by transformers' TimmWrapper
    // (prefixed tensor names, "model_args": null).
    for name in ["test_convnext", "test_convnext-transformers"] {
        check_native(&fixture(name));
    }
}

#[test]
fn half_precision_weight_files_match_timm() {
    let half: Vec<_> = fixtures_of_family("convnext")
        .into_iter()
        .filter(|f| f.weights_dtype != "F32")
        .collect();
    assert!(
        half.iter().any(|f| f.weights_dtype == "F16"),
        "no F16 convnext fixture"
    );
    assert!(
        half.iter().any(|f| f.weights_dtype == "BF16"),
        "no BF16 convnext fixture"
    );
    for f in &half {
        let (dl, df) = check_native(f);
        assert!(dl <= TOL && df <= TOL);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    let run = |seed: &str| {
        let m = CModel::create("convnext_atto", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let shape = [1i64, 3, 224, 224];
        let x: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &shape).unwrap()
    };
    let a = run("3");
    assert_eq!(a.len(), 1000);
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero logits");
    assert_eq!(a, run("3"), "same seed must give the same network");
    assert_ne!(a, run("4"), "another seed must give another network");

    // The v2 (GRN) path and features output without weights.
    let m = CModel::create("convnextv2_atto", false, &[("output", "features")]).unwrap();
    assert_eq!(m.output_dim(), 320);
}

#[test]
fn structure_is_read_from_the_weights_when_model_args_are_lost() {
    // transformers' TimmWrapper writes "model_args": null; every fixture is shrunk through
    // model_args, so depths, widths, stem, head MLP and norm placement must come from the weights.
    for f in fixtures_of_family("convnext") {
        let r = reference(&f);
        let dir = edited_copy(&f.name, "lost", |c| {
            c["model_args"] = serde_json::Value::Null
        });
        for (output, want) in [("logits", &r.logits), ("features", &r.features)] {
            let m = CModel::create(
                &format!("local:{}", dir.display()),
                true,
                &[("graph", "native"), ("output", output)],
            )
            .unwrap_or_else(|e| panic!("{} [model_args=null {output}]: {e:?}", f.name));
            let d = max_abs_diff(&m.infer(&r.input, &r.input_shape).unwrap(), want);
            eprintln!(
                "{:<32} model_args=null {output:<8} max|diff| = {d:.3e}",
                f.name
            );
            assert!(
                d <= TOL,
                "{} [model_args=null]: {output} differ from timm by {d}",
                f.name
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn weights_that_disagree_with_the_architecture_are_an_invalid_model() {
    // model_args claim wider stages than the weights hold.
    let dir = edited_copy("convnext_atto-small", "dims", |c| {
        c["model_args"]["dims"] = serde_json::json!([8, 8, 16, 24])
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("stages.3."),
        "message must name the tensor: {}",
        e.message
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A v1 file (layer scale, no GRN) under a v2 architecture with the MLP layout forced.
    let dir = edited_copy("convnext_atto-small", "v2", |c| {
        c["architecture"] = "convnextv2_atto".into();
        c["model_args"]["use_grn"] = true.into();
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("mlp.grn.weight"),
        "message must name the tensor: {}",
        e.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_variants_and_arguments_are_unsupported() {
    let dir = edited_copy("convnext_atto-small", "arch", |c| {
        c["architecture"] = "convnext_mega".into()
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("convnext_mega"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = edited_copy("convnext_atto-small", "args", |c| {
        c["model_args"]["mlp_ratio"] = 3.into()
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("mlp_ratio"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = edited_copy("convnext_atto-small", "pool", |c| {
        c["global_pool"] = "fast".into();
        c["model_args"]["global_pool"] = "fast".into();
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// feature maps (timm's features_only=True)

/// The `feature_maps` references of a fixture's meta.json, with the reference directory.
fn feature_map_refs(f: &Fixture) -> (std::path::PathBuf, Vec<serde_json::Value>) {
    let dir = fixtures_dir().join(&f.reference);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let maps = meta["feature_maps"].as_array().cloned().unwrap_or_default();
    (dir, maps)
}

/// The native graph of `f` for `output=feature_maps` with the reference's kwargs (or `indices`).
fn feature_graph(
    f: &Fixture,
    kwargs: &serde_json::Value,
    indices: Option<Vec<i64>>,
) -> (timm::graph::Graph, timm::weights::Weights) {
    let dir = f.folder("native").unwrap();
    let cfg =
        timm::config::ModelConfig::parse(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let w = timm::weights::Weights::open(
        &dir.join("model.safetensors"),
        timm::weights::WeightsMode::Map,
    )
    .unwrap();
    let request = timm::graph::Request {
        output: timm::graph::OutputKind::FeatureMaps,
        out_indices: indices.or_else(|| {
            kwargs["out_indices"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_i64().unwrap()).collect())
        }),
        output_stride: kwargs["output_stride"].as_u64().map(|s| s as usize),
        ..Default::default()
    };
    let size = &cfg.pretrained_cfg.input_size;
    let g = timm::graph::build(
        &cfg,
        timm::graph::ParamSource::Weights(&w),
        &request,
        (size[1], size[2]),
    )
    .unwrap_or_else(|e| panic!("{} {kwargs}: {e:?}", f.name));
    (g, w)
}

/// Ends a one-output feature-map graph in a Flatten to `[N, k]`.
fn flatten_output(g: &mut timm::graph::Graph, k: usize) {
    let from = g.outputs[0].name.clone();
    g.nodes.push(timm::graph::Node {
        op: "Flatten".into(),
        domain: String::new(),
        name: "flatten_output".into(),
        inputs: vec![from],
        outputs: vec!["flat".into()],
        attrs: vec![("axis".into(), timm::graph::Attr::Int(1))],
    });
    g.outputs = vec![timm::graph::GraphOutput {
        name: "flat".into(),
        shape: timm::graph::OutputShape::Vector(k),
    }];
}

#[test]
fn feature_maps_match_timm_features_only() {
    init_runtime();
    let mut checked = 0;
    for f in fixtures_of_family("convnext") {
        let (dir, maps) = feature_map_refs(&f);
        for fm in &maps {
            let kwargs = &fm["kwargs"];
            let input = match fm["input"].as_str() {
                Some(file) => read_f32(&dir.join(file)),
                None => reference(&f).input,
            };
            let shape: Vec<i64> = fm["input_shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect();
            let (n, h, w) = (shape[0] as usize, shape[2] as usize, shape[3] as usize);
            let (g, _) = feature_graph(&f, kwargs, None);
            let want_info: Vec<(usize, usize, String)> = fm["feature_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["num_chs"].as_u64().unwrap() as usize,
                        d["reduction"].as_u64().unwrap() as usize,
                        d["module"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let got_info: Vec<(usize, usize, String)> = g
                .feature_info
                .iter()
                .map(|i| (i.channels, i.reduction, i.module.clone()))
                .collect();
            assert_eq!(got_info, want_info, "{} {kwargs}: feature_info", f.name);
            let outputs = fm["outputs"].as_array().unwrap();
            assert_eq!(g.outputs.len(), outputs.len(), "{} {kwargs}", f.name);
            // Each selected map on its own (one output per session), by its index in timm's
            // full feature_info.
            let all = feature_graph(&f, &serde_json::json!({}), None)
                .0
                .feature_info;
            for (o, want) in g.outputs.iter().zip(outputs) {
                let want_shape: Vec<usize> = want["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                assert_eq!(
                    o.shape.dims(n, h, w),
                    Some(want_shape.clone()),
                    "{} {kwargs}: shape of {}",
                    f.name,
                    o.name
                );
                let i = g.outputs.iter().position(|x| x.name == o.name).unwrap();
                let module = &g.feature_info[i].module;
                let idx = all.iter().position(|x| &x.module == module).unwrap() as i64;
                let (mut one, weights) = feature_graph(&f, kwargs, Some(vec![idx]));
                // Sessions take one [N, K] output until the multi-output ABI lands: flatten.
                flatten_output(&mut one, want_shape[1..].iter().product());
                let session = timm::runtime::session::Session::from_graph(
                    &one,
                    Some(&weights),
                    &Default::default(),
                )
                .unwrap();
                let mut out = vec![0f32; want_shape.iter().product()];
                let out_shape = [n as i64, (out.len() / n) as i64];
                session.run(&input, &shape, &mut out, &out_shape).unwrap();
                let r = read_f32(&dir.join(want["file"].as_str().unwrap()));
                let scale = r.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let d = max_abs_diff(&out, &r) / scale;
                eprintln!(
                    "{:<24} {:<36} {module:<9} rel max|diff| = {d:.3e}",
                    f.name,
                    kwargs.to_string()
                );
                assert!(d <= TOL, "{} {kwargs} {module}: differs by {d}", f.name);
                checked += 1;
            }
        }
    }
    assert!(checked >= 16, "only {checked} feature maps checked");
}

#[test]
fn feature_map_requests_timm_refuses_are_errors() {
    let f = fixture("convnext_atto-small");
    let dir = f.folder("native").unwrap();
    let cfg =
        timm::config::ModelConfig::parse(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let build = |out_indices: Option<Vec<i64>>, output_stride: Option<usize>, hw| {
        let request = timm::graph::Request {
            output: timm::graph::OutputKind::FeatureMaps,
            out_indices,
            output_stride,
            ..Default::default()
        };
        timm::graph::build(&cfg, timm::graph::ParamSource::Shapes, &request, hw)
    };
    let e = build(Some(vec![0, 4]), None, (32, 32)).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message().contains("index 4"), "{}", e.message());
    let e = build(Some(vec![-5]), None, (32, 32)).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    let e = build(None, Some(4), (32, 32)).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message().contains("output_stride"), "{}", e.message());
    // A 16x16 input leaves nothing for the last stage's stride-2 downsample... at 8x8.
    let e = build(None, None, (8, 8)).unwrap_err();
    assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message().contains("too small"), "{}", e.message());
    // The graph takes any size: the maps' shapes follow the input's.
    let g = build(None, None, (32, 32)).unwrap();
    assert_eq!(g.input_chw[1..], [None, None]);
    let dims: Vec<_> = g.outputs.iter().map(|o| o.shape.dims(1, 64, 33)).collect();
    assert_eq!(
        dims,
        [
            Some(vec![1, 8, 16, 8]),
            Some(vec![1, 8, 8, 4]),
            Some(vec![1, 16, 4, 2]),
            Some(vec![1, 16, 2, 1])
        ]
    );
    assert_eq!(g.outputs[3].shape.dims(1, 31, 31), None);
}
