//! A model keeps working when its weights file is truncated or replaced after creation: by
//! default (weights_memory=copy) ONNX Runtime owns every weight byte once the model exists, so
//! no later access can fault on the file (SIGBUS) or see different weights.

mod common;
use common::*;

fn copy_folder(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn truncate_then_infer(fixture_name: &str, options: &[(&str, &str)]) {
    let f = fixture(fixture_name);
    let r = reference(&f);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    copy_folder(&f.folder("native").unwrap(), &dir);
    let m = CModel::create(&format!("local:{}", dir.display()), true, options).unwrap();
    let before = m.infer(&r.input, &r.input_shape).unwrap();
    let weights = dir.join("model.safetensors");
    // Truncate in place (what a partial re-download or `> file` does), then replace the file.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(0)
        .unwrap();
    let after_truncate = m.infer(&r.input, &r.input_shape).unwrap();
    std::fs::write(&weights, b"not a safetensors file").unwrap();
    let after_replace = m.infer(&r.input, &r.input_shape).unwrap();
    assert_eq!(
        before, after_truncate,
        "{fixture_name}: truncating the file changed the results"
    );
    assert_eq!(
        before, after_replace,
        "{fixture_name}: replacing the file changed the results"
    );
    assert!(max_abs_diff(&before, &r.logits) <= 1e-4);
}

#[test]
fn truncating_weights_after_create_does_not_affect_an_onnx_stripped_model() {
    truncate_then_infer("test_vit", &[("graph", "onnx")]);
}

#[test]
fn a_weights_file_truncated_before_create_is_an_error_not_a_crash() {
    let f = fixture("test_resnet");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    copy_folder(&f.folder("native").unwrap(), &dir);
    let weights = dir.join("model.safetensors");
    let len = std::fs::metadata(&weights).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    for mode in ["copy", "map"] {
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("weights_memory", mode)],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, timm::TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
        assert!(e.message.contains("model.safetensors"), "{}", e.message);
    }
}
