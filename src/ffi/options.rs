//! The options object: `timm_options_new`, `_set`, `_set_progress`, `_free`.

use std::os::raw::c_char;

use super::boundary::{guard, guard_status, str_arg, Registry};
use crate::error::{Error, Result, TimmStatus};
use crate::options::Options;

/// Creation options (string keys and values). Opaque; create with `timm_options_new`, release
/// with `timm_options_free`.
pub struct TimmOptions {
    pub(super) options: Options,
}

static OPTIONS: Registry = Registry::new();

/// The live options behind `p`, or None for NULL.
///
/// # Safety
/// A non-null `p` that is registered must still point to its `TimmOptions`.
pub(super) unsafe fn options_arg<'a>(p: *const TimmOptions) -> Result<Option<&'a TimmOptions>> {
    if p.is_null() {
        return Ok(None);
    }
    if !OPTIONS.contains(p as usize) {
        return Err(Error::invalid_argument(
            "`options` is not a live options handle",
        ));
    }
    // SAFETY: registered, hence live.
    Ok(Some(unsafe { &*p }))
}

/// A new, empty options object. Release with `timm_options_free`. Never NULL unless out of memory.
#[no_mangle]
pub extern "C" fn timm_options_new() -> *mut TimmOptions {
    guard("timm_options_new", std::ptr::null_mut(), || {
        let p = Box::into_raw(Box::new(TimmOptions {
            options: Options::new(),
        }));
        OPTIONS.insert(p as usize);
        Ok(p)
    })
}

/// Sets option `key` to `value` (NUL-terminated UTF-8 strings). The keys, generated from
/// src/options/table.rs:
///
/// - `intra_op_threads`: an integer in 0..=1024; default 0. threads inside one operator; 0 = ONNX Runtime's default (one per physical core).
/// - `inter_op_threads`: an integer in 0..=1024; default 0. threads across operators; 0 = ONNX Runtime's default.
/// - `graph_optimization_level`: one of disable, basic, extended, all; default all. how far ONNX Runtime rewrites the graph before running it.
/// - `ort_library`: a non-empty path; default see "How ONNX Runtime is found". path of libonnxruntime.so to load (one runtime serves the whole process).
/// - `backend`: one of onnxruntime, openvino; default onnxruntime. the runtime that runs the model: ONNX Runtime, or OpenVINO (bf16 on AMX/AVX512_BF16 CPUs, Intel GPU/NPU; see "The OpenVINO backend").
/// - `precision`: one of fp32, bf16, fp16; default fp32. float precision of the computation, on every backend: fp32 is timm-exact; bf16/fp16 on OpenVINO (CPU bf16 needs AMX or AVX512_BF16), fp16 on ONNX Runtime is TensorRT's fp16.
/// - `device`: one of cpu, gpu, npu, auto; default cpu. OpenVINO's device for backend=openvino: CPU, an Intel GPU or NPU, or OpenVINO's AUTO choice.
/// - `openvino_library`: a non-empty path; default see "The OpenVINO backend". path of OpenVINO's libopenvino_c.so to load for backend=openvino (one runtime serves the whole process).
/// - `output`: one of logits, features, feature_maps, tokens; default logits. what the model returns: class logits, timm's pooled features (forward_head(pre_logits=True)), timm's features_only backbone maps (timm_infer_outputs), or an encoder tower's token sequence [N, T, D] (the forward of the *_enc VLM towers, which have no classifier; timm_infer writes it as N rows of T*D).
/// - `out_indices`: any text; default timm's for the architecture. output=feature_maps: comma list of feature_info indices, negative ones counted from the end (timm's out_indices).
/// - `output_stride`: an integer in 8..=32; default 32. 8, 16 or 32: dilate the last stages as timm's output_stride does (families that implement it).
/// - `dynamic_img_size`: true or false; default false. ViT-style models take any input size, position embeddings resampled per call as timm's dynamic_img_size=True.
/// - `input_size`: any text; default the config's input_size. HxW: build and preprocess at this size (position embeddings resampled once at load, like timm's img_size=).
/// - `max_params`: an integer >= 1; default 4000000000. largest parameter count a config.json may describe before it is refused (checked before anything is allocated).
/// - `graph`: one of auto, native, onnx; default auto. which graph runs: auto = the folder's model.onnx when present, else the native graph.
/// - `seed`: an integer >= 0; default 0. seed of the random weights of pretrained=false models.
/// - `use_test_size`: true or false; default false. preprocess at the config's test_input_size / test_crop_pct when it has them (timm's validate.py default).
/// - `weights_memory`: one of copy, map; default copy. copy: weights are read into memory ONNX Runtime owns, the files may change afterwards; map: zero-copy views of a shared mapping, the files must not change while the model lives.
/// - `cache_dir`: a non-empty path; default HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub. Hugging Face cache folder for hf-hub: specs.
/// - `graph_cache`: true or false; default true. cache ONNX Runtime's optimised graph of a native model (CPU) so later loads map it instead of rebuilding.
/// - `graph_cache_dir`: a non-empty path; default XDG_CACHE_HOME/timm/graphs or ~/.cache/timm/graphs. folder of the optimised-graph cache.
/// - `graph_cache_max_mb`: an integer in 1..=1099511627776; default 8192. bound of the optimised-graph cache in MiB; least recently used entries go first.
/// - `offline`: true or false; default HF_HUB_OFFLINE. never use the network for hf-hub: specs.
/// - `endpoint`: an http:// or https:// URL; default HF_ENDPOINT or https://huggingface.co. Hugging Face endpoint URL.
/// - `token`: any text; default HF_TOKEN or the saved token file. Hugging Face access token; empty = none.
/// - `providers`: a comma list of tensorrt, cuda, cpu; default cpu. execution providers in priority order, cpu last; GPU providers need the onnxruntime-gpu runtime (docs/GPU.md).
/// - `device_id`: an integer in 0..=1023; default 0. CUDA device ordinal for cuda and tensorrt.
/// - `strict_providers`: true or false; default false. fail instead of falling back when a requested GPU provider cannot be used or nodes would run on the CPU.
/// - `cuda_mem_limit`: an integer >= 1; default no limit. CUDA provider memory arena limit in bytes.
/// - `cudnn_conv_algo_search`: one of exhaustive, heuristic, default; default exhaustive. how cuDNN picks convolution algorithms.
/// - `trt_fp16`: true or false; default false. let TensorRT run in float16 (an alias of precision=fp16 for TensorRT).
/// - `trt_engine_cache_dir`: a non-empty path; default none: engines are rebuilt per process. folder for TensorRT engines and timing caches, kept per model, GPU and version.
/// - `trt_workspace_size`: an integer >= 1; default TensorRT's. TensorRT workspace limit in bytes.
/// - `max_batch`: an integer in 1..=4096; default 32. largest batch of the TensorRT optimisation profile.
/// - `export_external_data`: true or false; default false. exported ONNX files keep their weights in a `.data` file beside them (always so above 2 GB).
/// - `load_truncated_images`: true or false; default false. decode a JPEG file whose data ends early instead of refusing it (Pillow's ImageFile.LOAD_TRUNCATED_IMAGES).
///
/// Values are checked here, so a mistake surfaces at the call that made it: an unknown key
/// or a bad value is `TIMM_ERR_INVALID_ARGUMENT`, and the message lists the known keys.
/// GPU options are described in docs/GPU.md. Not thread-safe on the same options object.
#[no_mangle]
pub extern "C" fn timm_options_set(
    options: *mut TimmOptions,
    key: *const c_char,
    value: *const c_char,
) -> TimmStatus {
    guard_status("timm_options_set", || {
        if options.is_null() || !OPTIONS.contains(options as usize) {
            return Err(Error::invalid_argument(
                "`options` is NULL or not a live options handle",
            ));
        }
        // SAFETY: checked above; strings are NUL-terminated per the contract.
        unsafe {
            let key = str_arg(key, "key")?;
            let value = str_arg(value, "value")?;
            (*options).options.set(key, value)
        }
    })
}

/// Download progress: bytes done and total of the file being fetched, and the caller's pointer.
pub type TimmProgressFn =
    Option<extern "C" fn(done: u64, total: u64, user_data: *mut std::os::raw::c_void)>;

/// Sets a callback for download progress of `hf-hub:` models (NULL removes it). It is called
/// on the thread that runs `timm_create_model_with_options`, at least every MiB and at the end
/// of each file; `user_data` is passed back untouched and must stay valid while models are
/// created with these options. The callback must return normally (no longjmp, no exception).
#[no_mangle]
pub extern "C" fn timm_options_set_progress(
    options: *mut TimmOptions,
    callback: TimmProgressFn,
    user_data: *mut std::os::raw::c_void,
) -> TimmStatus {
    guard_status("timm_options_set_progress", || {
        if options.is_null() || !OPTIONS.contains(options as usize) {
            return Err(Error::invalid_argument(
                "`options` is NULL or not a live options handle",
            ));
        }
        // The pointer is carried as an integer so the closure is Send; the caller vouches for it.
        let user = user_data as usize;
        let progress = callback.map(|f| -> crate::source::hub::Progress {
            std::sync::Arc::new(move |done, total| {
                f(done, total, user as *mut std::os::raw::c_void)
            })
        });
        // SAFETY: checked live above.
        unsafe { (*options).options.set_progress(progress) };
        Ok(())
    })
}

/// Releases options. NULL is a no-op; a double free is detected and ignored.
#[no_mangle]
pub extern "C" fn timm_options_free(options: *mut TimmOptions) {
    guard("timm_options_free", (), || {
        if options.is_null() {
            return Ok(());
        }
        if !OPTIONS.remove(options as usize) {
            return Err(Error::invalid_argument(
                "timm_options_free: not a live options handle (double free?); ignored",
            ));
        }
        // SAFETY: registered pointers come from Box::into_raw.
        drop(unsafe { Box::from_raw(options) });
        Ok(())
    })
}
