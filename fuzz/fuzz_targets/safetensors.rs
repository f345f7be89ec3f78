//! `weights::parse` (every rule of the safetensors format plus ours) on arbitrary bytes, then
//! what the library does with an accepted file: slice each tensor's bytes out of the buffer
//! and convert float tensors to f32. Accepted ranges must be in bounds, ordered and sized
//! exactly `numel × dtype size`, or the slicing below panics and the fuzzer reports it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timm::weights::{self, DType, Weights};

fuzz_target!(|data: &[u8]| {
    let Ok((tensors, _metadata)) = weights::parse(data) else {
        return;
    };
    let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(tensors.len());
    for (name, t) in &tensors {
        assert!(t.start <= t.end && t.end <= data.len(), "{name}: {t:?}");
        let numel = t
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .expect("accepted shape overflows");
        assert_ne!(t.dtype, DType::Other);
        assert_eq!(
            Some(t.end - t.start),
            numel.checked_mul(t.dtype.size()),
            "{name}"
        );
        let bytes = &data[t.start..t.end];
        match weights::to_f32(bytes, t.dtype) {
            Some(v) => assert_eq!(v.len(), numel, "{name}"),
            None => assert!(!t.dtype.is_float() && t.dtype != DType::F64),
        }
        ranges.push((t.start, t.end));
    }
    // No two tensors share bytes (a hostile file could otherwise alias one tensor into another).
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping tensors {w:?}");
    }
    // The mapped form used by the library accepts exactly what parse accepts.
    let w = Weights::from_bytes("fuzz.safetensors", data).expect("parse accepted it");
    assert_eq!(w.len(), tensors.len());
    for name in tensors.keys() {
        if let Err(e) = w.to_f32(name) {
            assert!(e.message().contains("expected a float tensor"), "{e}");
        }
    }
});
