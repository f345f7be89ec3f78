//! backend=openvino without its runtime: a clear TIMM_ERR_RUNTIME naming the places tried, and
//! the default ONNX Runtime backend unaffected. Its own test binary, so no other test has
//! loaded OpenVINO in this process.

mod common;
use common::*;
use timm::TimmStatus;

#[test]
fn a_missing_openvino_lists_the_places_tried_and_onnxruntime_still_works() {
    init_runtime();
    let f = fixture("test_resnet");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[
            ("backend", "openvino"),
            ("graph", "native"),
            ("openvino_library", "/nonexistent/libopenvino_c.so"),
        ],
    )
    .err()
    .expect("creation should fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_RUNTIME, "{}", e.message);
    assert!(
        e.message.contains("option openvino_library")
            && e.message.contains("/nonexistent/libopenvino_c.so")
            && e.message.contains("scripts/fetch-openvino"),
        "{}",
        e.message
    );
    check_fixture(&f, "native", &[("graph", "native")], 1e-4);
}
