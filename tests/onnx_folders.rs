//! Folders with a model.onnx, in every weight mode, through the C ABI, against timm's logits.

mod common;
use common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_fixture_in_every_onnx_weight_mode_matches_timm() {
    let mut checked = 0;
    for f in fixtures() {
        for mode in ["onnx_stripped", "onnx_embedded", "onnx_external"] {
            if f.folders.contains_key(mode) {
                check_fixture(&f, mode, &[("graph", "onnx")], TOL);
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 12,
        "only {checked} fixture folders have a model.onnx"
    );
}

#[test]
fn transformers_saved_folder_loads_like_timms_own() {
    let f = fixture("test_convnext-transformers");
    check_fixture(&f, "onnx_stripped", &[], TOL);
}

#[test]
fn pretrained_false_on_an_onnx_folder_without_a_native_builder_is_unsupported() {
    // An architecture this library cannot build natively, carried only by its model.onnx.
    let f = fixture("test_resnet");
    let src = f.folder("onnx_embedded").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"test_resnet\"", "\"my_private_net\"");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    std::fs::copy(src.join("model.onnx"), tmp.path().join("model.onnx")).unwrap();
    let spec = format!("local:{}", tmp.path().display());
    let e = CModel::create(&spec, false, &[]).err().expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(
        e.message.contains("pretrained=false") && e.message.contains("my_private_net"),
        "{}",
        e.message
    );
    // With pretrained=true the same folder runs from its model.onnx.
    let r = reference(&f);
    let m = CModel::create(&spec, true, &[]).unwrap();
    assert!(max_abs_diff(&m.infer(&r.input, &r.input_shape).unwrap(), &r.logits) <= TOL);
}

#[test]
fn batch_of_one_equals_the_same_row_of_a_batch_of_two() {
    let f = fixture("test_resnet");
    let r = reference(&f);
    let m = CModel::create(&f.spec("onnx_stripped"), true, &[]).unwrap();
    let per = (r.input_shape[1] * r.input_shape[2] * r.input_shape[3]) as usize;
    let mut shape1 = r.input_shape.clone();
    shape1[0] = 1;
    let one = m.infer(&r.input[per..2 * per], &shape1).unwrap();
    let k = m.output_dim();
    assert!(max_abs_diff(&one, &r.logits[k..2 * k]) <= TOL);
}

#[test]
fn headless_onnx_folder_returns_timms_pooled_features() {
    // timm with num_classes=0 ends in its pooled features; a model.onnx of such a model (here
    // this library's export of the native graph with output=features) must load and give them.
    let f = fixture("test_resnet");
    let r = reference(&f);
    let dir = edited_copy("test_resnet", "headless-onnx", |c| {
        c["num_classes"] = serde_json::json!(0);
    });
    let native = CModel::create(
        &f.spec("native"),
        true,
        &[("graph", "native"), ("output", "features")],
    )
    .unwrap();
    let onnx = dir.join("model.onnx");
    let p = std::ffi::CString::new(onnx.to_str().unwrap()).unwrap();
    assert_eq!(
        timm::ffi::export::timm_model_export_onnx(native.0, p.as_ptr()),
        TimmStatus::TIMM_OK,
        "{}",
        last_error()
    );
    drop(native);
    let spec = format!("local:{}", dir.display());
    let m = CModel::create(&spec, true, &[("graph", "onnx")]).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(m.output_dim() as i64, r.features_shape[1]);
    let out = m.infer(&r.input, &r.input_shape).unwrap();
    let scale = r.features.iter().fold(1f32, |a, v| a.max(v.abs()));
    assert!(max_abs_diff(&out, &r.features) <= TOL * scale);

    // A num_features that disagrees with the graph is named in the refusal.
    let cfg = dir.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["num_features"] = serde_json::json!(7);
    std::fs::write(&cfg, c.to_string()).unwrap();
    let e = CModel::create(&spec, true, &[("graph", "onnx")])
        .err()
        .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("config.json says num_features = 7"),
        "{}",
        e.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}
