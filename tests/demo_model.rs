//! The main job: the real EfficientNet-Lite0 (ImageNet weights, converted to a timm folder by
//! scripts/fetch-demo-model) classifies chelsea.png through the C ABI with timm's top-5 and
//! timm's probabilities (references written by the generator from real timm).

mod common;
use common::*;

use std::ffi::CString;
use timm::ffi::*;
use timm::TimmStatus;

#[test]
fn efficientnet_lite0_classifies_chelsea_like_timm() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            fixtures_dir().join("reference/demo_tf_efficientnet_lite0/top5.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let m = CModel::create(&format!("local:{}", demo_folder().display()), true, &[]).unwrap();
    let path = CString::new(fixtures_dir().join("images/chelsea.png").to_str().unwrap()).unwrap();
    let mut top: Vec<TimmClass> = Vec::with_capacity(5);
    assert_eq!(
        timm_classify_file(m.0, path.as_ptr(), 5, top.as_mut_ptr()),
        TimmStatus::TIMM_OK,
        "{}",
        last_error()
    );
    unsafe { top.set_len(5) };
    for (ours, theirs) in top.iter().zip(reference["top5"].as_array().unwrap()) {
        let label = unsafe { std::ffi::CStr::from_ptr(ours.label) }
            .to_str()
            .unwrap();
        let desc = unsafe { std::ffi::CStr::from_ptr(ours.description) }
            .to_str()
            .unwrap();
        eprintln!(
            "{:>4} {:<12} {:<24} p={:.5} (timm {:.5})",
            ours.index, label, desc, ours.probability, theirs["probability"]
        );
        assert_eq!(ours.index as u64, theirs["index"].as_u64().unwrap());
        assert_eq!(label, theirs["label_name"].as_str().unwrap());
        assert_eq!(desc, theirs["label_description"].as_str().unwrap());
        assert!((ours.probability as f64 - theirs["probability"].as_f64().unwrap()).abs() <= 1e-3);
    }
    assert_eq!(
        unsafe { std::ffi::CStr::from_ptr(top[0].description) }
            .to_str()
            .unwrap(),
        "tiger cat"
    );
}

#[test]
fn efficientnet_lite0_logits_on_timms_preprocessed_chelsea() {
    // All 1000 logits for the image, preprocessed by our transform, against timm's logits.
    let m = CModel::create(&format!("local:{}", demo_folder().display()), true, &[]).unwrap();
    let img = timm::preprocess::decode_file(&fixtures_dir().join("images/chelsea.png")).unwrap();
    let view = TimmImage {
        data: img.data.as_ptr(),
        width: img.width,
        height: img.height,
        stride: 0,
        format: TimmPixelFormat::TIMM_PIXEL_RGB8,
    };
    let mut input = vec![0f32; 3 * 224 * 224];
    assert_eq!(
        timm_preprocess(m.0, &view, input.as_mut_ptr(), input.len()),
        TimmStatus::TIMM_OK
    );
    let logits = m.infer(&input, &[1, 3, 224, 224]).unwrap();
    let want = read_f32(&fixtures_dir().join("reference/demo_tf_efficientnet_lite0/logits.f32"));
    let d = max_abs_diff(&logits, &want);
    eprintln!("EfficientNet-Lite0 chelsea: max |logit diff| vs timm = {d:.3e}");
    assert!(d <= 1e-3, "logits differ from timm by {d}");
}
