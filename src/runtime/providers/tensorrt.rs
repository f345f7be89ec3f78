//! The TensorRT execution provider: its options, the optimisation profile that lets one engine
//! serve every batch size, and the engine cache folder keyed by everything that invalidates an
//! engine.

use std::path::{Path, PathBuf};

use ort::AsPointer;
use sha2::{Digest, Sha256};

use super::cuda::gpu_identity;
use super::diagnose::explain;
use super::dl::symbol;
use super::{KeyValues, Provider, ProviderOptions, Target};
use crate::error::{Error, Result};
use crate::runtime::{log, sys};

const NVINFER: &[&str] = &["libnvinfer.so.10"];

/// Appends the TensorRT provider with the options' settings.
pub(super) fn register(
    b: &mut ort::session::builder::SessionBuilder,
    opts: &ProviderOptions,
    target: &Target<'_>,
) -> Result<()> {
    let mut kv: Vec<(String, String)> = vec![("device_id".into(), opts.device_id.to_string())];
    if opts.trt_fp16 {
        kv.push(("trt_fp16_enable".into(), "1".into()));
    }
    if let Some(n) = opts.trt_workspace_size {
        kv.push(("trt_max_workspace_size".into(), n.to_string()));
    }
    if let Some(shapes) = profile_shapes(target, opts.max_batch) {
        kv.push(("trt_profile_min_shapes".into(), shapes[0].clone()));
        kv.push(("trt_profile_opt_shapes".into(), shapes[1].clone()));
        kv.push(("trt_profile_max_shapes".into(), shapes[2].clone()));
    }
    if let Some(root) = &opts.trt_engine_cache_dir {
        let dir = engine_cache_dir(root, opts, target)?;
        let d = dir.to_string_lossy().into_owned();
        kv.push(("trt_engine_cache_enable".into(), "1".into()));
        kv.push(("trt_engine_cache_path".into(), d.clone()));
        kv.push(("trt_timing_cache_enable".into(), "1".into()));
        kv.push(("trt_timing_cache_path".into(), d));
    }
    let kv = KeyValues::new(&kv)?;
    let api = ort::api();
    let fail = |e: Error| explain(Provider::TensorRt, e.message());
    let mut o = std::ptr::null_mut();
    // SAFETY: creates an options struct ORT owns; released below on every path.
    sys::check(unsafe { (api.CreateTensorRTProviderOptions)(&mut o) }).map_err(fail)?;
    // SAFETY: `o` is live; the key and value arrays have equal length and point into `kv`,
    // which outlives the call; ORT copies the options when appending them.
    let r = sys::check(unsafe {
        (api.UpdateTensorRTProviderOptions)(o, kv.keys.as_ptr(), kv.values.as_ptr(), kv.keys.len())
    })
    .and_then(|()| {
        // SAFETY: valid session options and provider options.
        sys::check(unsafe {
            (api.SessionOptionsAppendExecutionProvider_TensorRT_V2)(b.ptr_mut(), o)
        })
    });
    // SAFETY: releases the struct created above, once.
    unsafe { (api.ReleaseTensorRTProviderOptions)(o) };
    r.map_err(fail)
}

/// TensorRT profile shapes `name:NxCxHxW` for batch 1 (min), 1 (opt: single images are the
/// common latency case) and `max_batch` (max), so any batch in range reuses one engine.
pub fn profile_shapes(target: &Target<'_>, max_batch: u32) -> Option<[String; 3]> {
    let name = target.input_name?;
    let [c, h, w] = target.input_chw?;
    // The option's own syntax uses ':' and ','; such a name cannot be written in it.
    if name.contains([':', ',']) {
        log::warn(&format!(
            "input name `{name}` cannot be written in a TensorRT profile; TensorRT builds an engine per input shape instead"
        ));
        return None;
    }
    let s = |n: u32| format!("{name}:{n}x{c}x{h}x{w}");
    Some([s(1), s(1), s(max_batch.max(1))])
}

/// `<root>/<key>`: engines and timing caches live in a folder keyed by everything that makes an
/// engine invalid, so a changed model, GPU, TensorRT or ONNX Runtime never loads a stale one.
fn engine_cache_dir(root: &Path, opts: &ProviderOptions, target: &Target<'_>) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(b"libtimm-trt-engine-v1\0");
    (target.identity)(&mut h)?;
    let gpu = gpu_identity(opts.device_id);
    let trt = tensorrt_version();
    let settings = format!(
        "fp16={} max_batch={} chw={:?} workspace={:?} input={:?}",
        opts.trt_fp16, opts.max_batch, target.input_chw, opts.trt_workspace_size, target.input_name
    );
    let ort_build = ort::info();
    for part in [gpu.as_str(), trt.as_str(), ort_build, settings.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = root.join(key);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::from_io(&e, "cannot create the TensorRT engine cache folder", &dir))?;
    // A note for people looking at the folder; not read back.
    let _ = std::fs::write(
        dir.join("libtimm-key.txt"),
        format!("gpu: {gpu}\ntensorrt: {trt}\nonnxruntime: {ort_build}\n{settings}\n"),
    );
    Ok(dir)
}

/// TensorRT's library version, e.g. "TensorRT 101601" (`getInferLibVersion`).
pub fn tensorrt_version() -> String {
    type V = unsafe extern "C" fn() -> i32;
    match symbol::<V>(NVINFER, "getInferLibVersion") {
        // SAFETY: no arguments, returns an int.
        Some(f) => format!("TensorRT {}", unsafe { f() }),
        None => "TensorRT not loadable".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_cover_one_to_max_batch() {
        let id = |_: &mut Sha256| Ok(());
        let t = Target {
            input_name: Some("x"),
            input_chw: Some([3, 224, 224]),
            identity: &id,
        };
        let s = profile_shapes(&t, 16).unwrap();
        assert_eq!(s[0], "x:1x3x224x224");
        assert_eq!(s[1], "x:1x3x224x224");
        assert_eq!(s[2], "x:16x3x224x224");
        let bad = Target {
            input_name: Some("a:b"),
            ..t
        };
        assert!(profile_shapes(&bad, 16).is_none());
    }
}
