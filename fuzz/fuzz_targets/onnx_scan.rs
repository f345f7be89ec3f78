//! `onnx::scan`, the hand-written protobuf reader that lists a model.onnx's initializers, on
//! arbitrary bytes. Errors must say the file is not ONNX; accepted files must give initializers
//! whose fields the binding code can use without further checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timm::TimmStatus;

fuzz_target!(|data: &[u8]| {
    match timm::onnx::scan(data) {
        Ok(info) => {
            assert!(info.ir_version > 0);
            // Every initializer's record came from bytes inside the file, so there cannot be
            // more of them than bytes (a cheap check that no length was misread).
            assert!(info.initializers.len() <= data.len());
            for init in &info.initializers {
                assert!(init.dims.len() <= data.len());
            }
        }
        Err(e) => {
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_MODEL, "{e}");
            assert!(e.message().contains("not a valid ONNX model"), "{e}");
        }
    }
});
