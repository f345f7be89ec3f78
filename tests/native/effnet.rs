//! EfficientNet / MobileNet native graphs through the C ABI, against timm's own outputs.
//!
//! Fixtures come from scripts/fixtures/family_effnet.py (real timm, random weights) plus the
//! foundation's test_efficientnet. An `#[ignore]`d test checks any extra fixture folders (e.g.
//! full-size models generated outside the repo) named by TIMM_EFFNET_EXTRA.

use crate::common::*;
use std::path::{Path, PathBuf};
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// This family's fixtures and the foundation's test_efficientnet.
fn effnet_fixtures() -> Vec<Fixture> {
    let mut v = fixtures_of_family("effnet");
    v.push(fixture("test_efficientnet"));
    v
}

/// `max|a - b|` relative to the reference's largest `|value|` (the 1e-4 criterion).
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-12);
    max_abs_diff(got, want) / scale
}

/// Logits and pooled features of one fixture, natively; returns (logits, features) max
/// differences relative to timm's largest value of each.
fn check_native(f: &Fixture) -> (f32, f32) {
    let r = reference(f);
    let spec = f.spec("native");
    let m = CModel::create(&spec, true, &[("graph", "native")])
        .unwrap_or_else(|e| panic!("{}: {e:?}", f.name));
    let logits = m
        .infer(&r.input, &r.input_shape)
        .unwrap_or_else(|e| panic!("{}: {e:?}", f.name));
    let dl = rel_diff(&logits, &r.logits);

    let mf = CModel::create(&spec, true, &[("graph", "native"), ("output", "features")])
        .unwrap_or_else(|e| panic!("{} features: {e:?}", f.name));
    assert_eq!(
        mf.output_dim() as i64,
        r.features_shape[1],
        "{}: features width",
        f.name
    );
    let feats = mf
        .infer(&r.input, &r.input_shape)
        .unwrap_or_else(|e| panic!("{} features: {e:?}", f.name));
    let df = rel_diff(&feats, &r.features);
    eprintln!(
        "{:<34} {:<5} logits rel max|diff| = {dl:.3e}  features rel max|diff| = {df:.3e}",
        f.name, f.weights_dtype
    );
    (dl, df)
}

#[test]
fn every_fixture_matches_timm_natively_logits_and_features() {
    let fx = effnet_fixtures();
    assert!(
        fx.len() >= 3,
        "expected several effnet fixtures, found {}",
        fx.len()
    );
    let mut failures = Vec::new();
    for f in &fx {
        let (dl, df) = check_native(f);
        if dl > TOL || df > TOL {
            failures.push(format!("{}: logits {dl:.3e}, features {df:.3e}", f.name));
        }
    }
    assert!(
        failures.is_empty(),
        "differ from timm by more than {TOL}: {failures:#?}"
    );
}

#[test]
fn features_width_is_timms_num_features_for_efficientnet_heads() {
    // EfficientNet-style heads pool after conv_head, so pre-logits width is config.json's
    // num_features; MobileNetV3 pools first and returns conv_head's width instead.
    let f = fixture("test_efficientnet");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.folder("native").unwrap().join("config.json")).unwrap(),
    )
    .unwrap();
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("graph", "native"), ("output", "features")],
    )
    .unwrap();
    assert_eq!(m.output_dim() as u64, cfg["num_features"].as_u64().unwrap());
}

#[test]
fn half_precision_weights_fixture_matches_timm() {
    let half: Vec<Fixture> = effnet_fixtures()
        .into_iter()
        .filter(|f| f.weights_dtype != "F32")
        .collect();
    assert!(!half.is_empty(), "no F16/BF16 effnet fixture");
    for f in &half {
        let (dl, df) = check_native(f);
        assert!(
            dl <= TOL && df <= TOL,
            "{}: logits {dl}, features {df}",
            f.name
        );
    }
}

#[test]
fn onnx_export_and_native_graph_agree_with_timm() {
    // Fixtures with timm's own torch.onnx export (the foundation's test_efficientnet; the family
    // budget has no room for another): both graphs must give timm's logits.
    let with_onnx: Vec<Fixture> = effnet_fixtures()
        .into_iter()
        .filter(|f| f.folders.contains_key("onnx_embedded"))
        .collect();
    assert!(!with_onnx.is_empty());
    for f in &with_onnx {
        check_fixture(f, "onnx_embedded", &[("graph", "onnx")], TOL);
        check_fixture(f, "native", &[("graph", "native")], TOL);
    }
}

#[test]
fn batch_of_one_equals_the_same_row_of_a_batch_of_two() {
    let f = effnet_fixtures()
        .into_iter()
        .find(|f| f.family == "effnet")
        .expect("an effnet fixture");
    let r = reference(&f);
    let m = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
    let per = (r.input_shape[1] * r.input_shape[2] * r.input_shape[3]) as usize;
    let mut shape1 = r.input_shape.clone();
    shape1[0] = 1;
    let one = m.infer(&r.input[per..2 * per], &shape1).unwrap();
    let k = m.output_dim();
    assert!(max_abs_diff(&one, &r.logits[k..2 * k]) <= TOL);
}

fn run_random(arch: &str, seed: &str) -> (usize, Vec<f32>) {
    let m =
        CModel::create(arch, false, &[("seed", seed)]).unwrap_or_else(|e| panic!("{arch}: {e:?}"));
    // A smooth deterministic image at the model's default input size.
    let cfg: serde_json::Value = {
        let p = unsafe { std::ffi::CStr::from_ptr(timm::ffi::timm_model_config_json(m.0)) };
        serde_json::from_str(p.to_str().unwrap()).unwrap()
    };
    let size: Vec<i64> = cfg["pretrained_cfg"]["input_size"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let n = (size[0] * size[1] * size[2]) as usize;
    let input: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.001).sin()).collect();
    let out = m.infer(&input, &[1, size[0], size[1], size[2]]).unwrap();
    (m.output_dim(), out)
}

#[test]
fn bare_names_build_with_seeded_random_weights() {
    // HardCoRe-NAS: the MobileNetV3 class over hardcorenas.py's own block strings.
    for arch in [
        "tf_efficientnet_lite0",
        "mobilenetv3_large_100",
        "hardcorenas_a",
        "fbnetv3_b",
        "mobilenetv4_hybrid_medium",
        "mobilenet_edgetpu_v2_xs",
        "efficientnet_cc_b0_4e",
        // Widths from timm's pruning file (the table's), no weights to read them from.
        "efficientnet_b1_pruned",
    ] {
        let (dim, a) = run_random(arch, "1");
        assert_eq!(dim, 1000, "{arch}");
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|v| v.is_finite()), "{arch}: non-finite output");
        assert!(a.iter().any(|v| *v != 0.0), "{arch}: all-zero output");
        let (_, b) = run_random(arch, "1");
        assert_eq!(a, b, "{arch}: same seed must give the same output");
        let (_, c) = run_random(arch, "2");
        assert_ne!(
            a, c,
            "{arch}: a different seed must give a different output"
        );
    }
}

#[test]
fn unknown_variants_and_unsupported_args_are_unsupported() {
    // EfficientNet-X's `version` picks the generator's block table, which the architecture's
    // table entry already is: another one given in model_args is refused, not ignored.
    let dir = copy_fixture(&fixture("effnet_x_b3_s2d"), "version");
    edit_config(&dir, |c| c["model_args"]["version"] = 2.into());
    let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
        .err()
        .expect("model_args version must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("version"), "{}", e.message);
    std::fs::remove_dir_all(&dir).ok();

    // A MobileNetV3-class fixture (its class takes no output_stride).
    let f = fixture("effnet_mnv3_small");
    for (key, value, needle) in [
        ("global_pool", serde_json::json!("max"), "global_pool"),
        ("se_layer", serde_json::json!("ese"), "se_layer"),
        ("aa_layer", serde_json::json!("gaussian"), "aa_layer"),
        // timm's MobileNetV3 class has no output_stride argument (its features_only form has).
        ("output_stride", serde_json::json!(16), "output_stride"),
        (
            "norm_layer",
            serde_json::json!("instancenorm"),
            "norm_layer",
        ),
    ] {
        let dir = copy_fixture(&f, &format!("arg-{key}"));
        edit_config(&dir, |c| {
            c["model_args"][key] = value.clone();
            if key == "global_pool" {
                c["global_pool"] = value.clone();
            }
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{key}: {e:?}");
        assert!(e.message.contains(needle), "{key}: {}", e.message);
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn weights_that_disagree_with_the_architecture_are_invalid_and_named() {
    let f = effnet_fixtures()
        .into_iter()
        .find(|f| f.family == "effnet")
        .unwrap();
    // A classifier size that the saved classifier does not have.
    let dir = copy_fixture(&f, "classes");
    edit_config(&dir, |c| {
        let n = c["num_classes"].as_u64().unwrap() + 3;
        c["num_classes"] = n.into();
        c["pretrained_cfg"]["num_classes"] = n.into();
        c["model_args"]["num_classes"] = n.into();
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(e.message.contains("classifier.weight"), "{}", e.message);
    std::fs::remove_dir_all(&dir).ok();

    // test_efficientnet's weights (ConvBnAct first block, 5 stages) under another architecture.
    let t = fixture("test_efficientnet");
    let dir = copy_fixture(&t, "arch");
    edit_config(&dir, |c| {
        c["architecture"] = "efficientnet_b0".into();
        c["model_args"] = serde_json::json!({});
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
        e.message.contains("blocks.0.0.conv_dw.weight"),
        "{}",
        e.message
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Checks fixture folders generated elsewhere (e.g. full-size models too large to commit):
/// TIMM_EFFNET_EXTRA=<dir with models/ and reference/ as the generator writes them>.
#[test]
#[ignore]
fn extra_fixture_folders_match_timm() {
    let Some(root) = std::env::var_os("TIMM_EFFNET_EXTRA") else {
        eprintln!("TIMM_EFFNET_EXTRA not set; nothing to check");
        return;
    };
    let root = PathBuf::from(root);
    let mut names: Vec<String> = std::fs::read_dir(root.join("reference"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for name in names {
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("reference").join(&name).join("meta.json")).unwrap(),
        )
        .unwrap();
        let dir = root.join("reference").join(&name);
        let shape = |k: &str| {
            meta[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect::<Vec<_>>()
        };
        let input = read_f32(&dir.join("input.f32"));
        let spec = format!("local:{}", root.join("models").join(&name).display());
        for (output, file) in [("logits", "logits.f32"), ("features", "features.f32")] {
            let m = CModel::create(&spec, true, &[("graph", "native"), ("output", output)])
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let got = m.infer(&input, &shape("input_shape")).unwrap();
            let d = max_abs_diff(&got, &read_f32(&dir.join(file)));
            eprintln!("{name:<34} {output:<8} max|diff| = {d:.3e}");
            if d > TOL {
                failures.push(format!("{name} {output}: {d}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

fn copy_fixture(f: &Fixture, tag: &str) -> PathBuf {
    let src = f.folder("native").unwrap();
    let dst = std::env::temp_dir().join(format!(
        "timm-effnet-{}-{tag}-{}",
        f.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&dst).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(file), dst.join(file)).unwrap();
    }
    dst
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, serde_json::to_string_pretty(&c).unwrap()).unwrap();
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default out_indices, a negative index, and another input size, per fixture: every map
    // within 1e-4 of timm's (relative to its largest value), feature_info and the output shapes
    // timm_model_output_shape reports equal to timm's.
    let mut checked = 0;
    for f in fixtures_of_family("effnet") {
        checked += check_feature_maps(&f, TOL);
    }
    assert!(
        checked >= 6,
        "expected feature-map references, found {checked}"
    );
}

#[test]
fn feature_info_starts_at_the_stem_when_the_first_block_strides() {
    // timm's EfficientNetFeatures: `bn1` when blocks.0.0 has stride 2 (MobileNetV3-Small), else
    // the first map is blocks.0; then each stage the next one downsamples, and the last.
    let small = fixture("effnet_mnv3_small");
    let m = CModel::create(
        &small.spec("native"),
        true,
        &[("graph", "native"), ("output", "feature_maps")],
    )
    .unwrap();
    let info = m.feature_info();
    assert_eq!(info[0], (16, 2, "bn1".to_string()));
    assert_eq!(
        info.iter().map(|i| i.1).collect::<Vec<_>>(),
        vec![2, 4, 8, 16, 32]
    );
    let t = fixture("test_efficientnet");
    let m = CModel::create(
        &t.spec("native"),
        true,
        &[("graph", "native"), ("output", "feature_maps")],
    )
    .unwrap();
    let modules: Vec<String> = m.feature_info().into_iter().map(|i| i.2).collect();
    assert_eq!(
        modules,
        ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"]
    );
}

#[test]
fn feature_map_requests_timm_refuses_or_cannot_run_are_errors() {
    let f = fixture("effnet_mnv3_small");
    let spec = f.spec("native");
    let fm = [("graph", "native"), ("output", "feature_maps")];
    // Out-of-range index: invalid, naming it and the maps there are.
    let e = CModel::create(&spec, true, &[fm[0], fm[1], ("out_indices", "0,5")])
        .err()
        .expect("index 5 of 5 maps must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("index 5"), "{}", e.message);
    // Dilated stages stop at 8, 16 or 32 as timm's builder allows; another stride is refused.
    let e = CModel::create(&spec, true, &[fm[0], fm[1], ("output_stride", "4")])
        .err()
        .expect("output_stride 4 must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
    // Any input size runs (the 3x3 stride-2 convs with padding 1 keep even 1x1 at 1x1); an empty
    // one is refused before ONNX Runtime sees it.
    let m = CModel::create(&spec, true, &fm).unwrap();
    assert_eq!(
        m.output_shape(4, &[1, 3, 37, 24]).unwrap(),
        vec![1, 288, 2, 1]
    );
    let maps = m.infer_outputs(&[0.5f32; 3], &[1, 3, 1, 1]).unwrap();
    assert_eq!(maps[4].shape, vec![1, 288, 1, 1]);
    let e = m
        .output_shape(0, &[1, 3, 0, 24])
        .expect_err("an empty input must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn mobilenetv4_hybrid_and_fbnetv3_match_timm() {
    // MobileAttention (MultiQueryAttention2d with and without kv down-sampling, layer scale) and
    // FBNet-V3 (hard-sigmoid SE rounded by the generator's round_chs_fn): logits, pre-logits
    // features and feature maps, each by name so neither can drop out of the suite unnoticed.
    for name in ["effnet_mnv4_hybrid", "effnet_fbnetv3_b"] {
        let f = fixture(name);
        let (dl, df) = check_native(&f);
        assert!(dl <= TOL && df <= TOL, "{name}: logits {dl}, features {df}");
        assert!(check_feature_maps(&f, TOL) >= 1, "{name}: no feature maps");
    }
    // A channel_multiplier below 1 keeps MobileNetV4's stem at 32 (timm's fix_stem).
    let f = fixture("effnet_mnv4_hybrid");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[
            ("graph", "native"),
            ("output", "feature_maps"),
            ("out_indices", "0"),
        ],
    )
    .unwrap();
    assert_eq!(m.feature_info()[0], (32, 2, "bn1".to_string()));
}

#[test]
fn mqa_blocks_without_heads_are_invalid() {
    let f = fixture("effnet_mnv4_hybrid");
    let dir = copy_fixture(&f, "mqa-heads");
    edit_config(&dir, |c| {
        c["model_args"]["arch_def"][2][1] = "mqa_r1_k3_h0_s1_v2_d8_c24".into();
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(e.message.contains("mqa"), "{}", e.message);
    std::fs::remove_dir_all(&dir).ok();
}
