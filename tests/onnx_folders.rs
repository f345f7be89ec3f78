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
