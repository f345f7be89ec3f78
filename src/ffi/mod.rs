//! The C ABI. The only module with `extern "C"` functions and raw-pointer work.
//!
//! Rules that hold for every function here (repeated in `include/timm.h`):
//! - No panic crosses the boundary: a caught panic is `TIMM_ERR_INTERNAL` with its message.
//! - Failures set this thread's last error (`timm_last_error`).
//! - NULL where a pointer is required is `TIMM_ERR_INVALID_ARGUMENT`.
//! - Every allocation handed to the caller has a matching `*_free`; strings returned as
//!   `const char *` are owned by the library and stay valid as the function documents.

// C entry points take raw pointers by design; each is checked (NULL, live handle) before use.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
mod outputs;
pub use outputs::*;
pub mod export;

use std::ffi::CString;
use std::os::raw::c_char;

use once_cell::sync::Lazy;

use self::boundary::{arg, guard, guard_status, str_arg, Registry};
use crate::error::{Error, Result, TimmStatus};
use crate::model::{Class, Model};
use crate::options::Options;
use crate::preprocess::{self, ImageView, PixelFormat, RgbImage};

/// A loaded model. Opaque; create with `timm_create_model*`, release with `timm_free`.
pub struct TimmModel {
    model: Model,
}

/// Creation options (string keys and values). Opaque; create with `timm_options_new`, release
/// with `timm_options_free`.
pub struct TimmOptions {
    options: Options,
}

static MODELS: Registry = Registry::new();
static OPTIONS: Registry = Registry::new();

/// Longest accepted input rank; a larger `input_ndim` is a caller bug, not a tensor.
const MAX_NDIM: usize = 8;

unsafe fn model_arg<'a>(p: *const TimmModel) -> Result<&'a TimmModel> {
    // Check liveness before forming a reference, so a freed handle is never dereferenced.
    if !p.is_null() && !MODELS.contains(p as usize) {
        return Err(Error::invalid_argument(
            "`model` is not a live model handle (already freed, or not from timm_create_model)",
        ));
    }
    arg(p, "model")
}

fn create(
    spec: *const c_char,
    pretrained: bool,
    options: Option<&Options>,
) -> Result<*mut TimmModel> {
    // SAFETY: the caller passes a NUL-terminated string or NULL.
    let spec = unsafe { str_arg(spec, "spec")? };
    let parsed = match options {
        Some(o) => o.parse()?,
        None => Default::default(),
    };
    let model = Model::create(spec, pretrained, &parsed)?;
    let p = Box::into_raw(Box::new(TimmModel { model }));
    MODELS.insert(p as usize);
    Ok(p)
}

/// The input tensor and its shape from the C arguments, checked for NULL, rank and overflow.
///
/// # Safety
/// Non-null `input_shape` holds `input_ndim` values and `input` the product of them.
unsafe fn input_slice<'a>(
    input: *const f32,
    input_shape: *const i64,
    input_ndim: usize,
) -> Result<(&'a [f32], &'a [i64])> {
    if input.is_null() || input_shape.is_null() {
        return Err(Error::invalid_argument(
            "`input`, `input_shape` and `output` must not be NULL",
        ));
    }
    if input_ndim == 0 || input_ndim > MAX_NDIM {
        return Err(Error::invalid_argument(format!(
            "input_ndim is {input_ndim}; expected 4 (NCHW)"
        )));
    }
    let shape = std::slice::from_raw_parts(input_shape, input_ndim);
    if shape.iter().any(|&d| d <= 0) {
        return Err(Error::invalid_argument(format!(
            "input shape {shape:?} has a zero or negative dimension"
        )));
    }
    let total = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
        .filter(|t| t.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| Error::invalid_argument(format!("input shape {shape:?} overflows")))?;
    Ok((std::slice::from_raw_parts(input, total), shape))
}

/// Loads a model.
///
/// `spec` is `local:<folder>` (or timm's `local-dir:<folder>`), a folder timm wrote with
/// config.json and model.safetensors and/or model.onnx; `hf-hub:org/name[@revision]`, a
/// Hugging Face repo resolved through the local Hugging Face cache (downloaded on a miss unless
/// offline); or a bare timm name: `arch.tag` with `pretrained = true` is the repo `timm/arch.tag`,
/// `arch` with `pretrained = false` builds timm's default architecture with random weights.
/// `pretrained = false` on a folder builds its architecture with seeded random weights.
///
/// Returns NULL on failure; `timm_last_error()` says why. Release the model with `timm_free`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn timm_create_model(spec: *const c_char, pretrained: bool) -> *mut TimmModel {
    guard("timm_create_model", std::ptr::null_mut(), || {
        create(spec, pretrained, None)
    })
}

/// Like `timm_create_model`, with options (may be NULL for defaults). The options are copied;
/// the caller still owns them.
#[no_mangle]
pub extern "C" fn timm_create_model_with_options(
    spec: *const c_char,
    pretrained: bool,
    options: *const TimmOptions,
) -> *mut TimmModel {
    guard(
        "timm_create_model_with_options",
        std::ptr::null_mut(),
        || {
            // SAFETY: a non-null pointer must come from timm_options_new.
            let opts = if options.is_null() {
                None
            } else {
                if !OPTIONS.contains(options as usize) {
                    return Err(Error::invalid_argument(
                        "`options` is not a live options handle",
                    ));
                }
                Some(unsafe { &(*options).options })
            };
            create(spec, pretrained, opts)
        },
    )
}

/// Runs the model on a batch.
///
/// `input` holds `N*C*H*W` floats in NCHW order, already preprocessed (see `timm_preprocess`),
/// with `input_shape` = {N, C, H, W} (`input_ndim` = 4). `output` receives `N * timm_model_output_dim(model)`
/// floats (`[N, output_dim]`, row-major); `output_len` is its capacity in floats.
///
/// Errors: `TIMM_ERR_INVALID_ARGUMENT` for NULLs or a shape that does not match the model
/// (the message names expected and got), `TIMM_ERR_BUFFER_TOO_SMALL` with the needed length.
/// NaN or Inf inputs are computed, not rejected.
///
/// Thread-safe: many threads may call `timm_infer` on the same model at once; results equal
/// single-threaded ones. The model must not be freed while a call is running.
#[no_mangle]
pub extern "C" fn timm_infer(
    model: *mut TimmModel,
    input: *const f32,
    input_shape: *const i64,
    input_ndim: usize,
    output: *mut f32,
    output_len: usize,
) -> TimmStatus {
    guard_status("timm_infer", || {
        // SAFETY: pointers are checked for NULL; lengths are the caller's contract, checked for
        // overflow before any slice is formed.
        unsafe {
            let m = model_arg(model)?;
            if output.is_null() {
                return Err(Error::invalid_argument(
                    "`input`, `input_shape` and `output` must not be NULL",
                ));
            }
            let (input, shape) = input_slice(input, input_shape, input_ndim)?;
            if output_len > isize::MAX as usize / 4 {
                return Err(Error::invalid_argument(format!(
                    "output_len {output_len} is not a buffer length"
                )));
            }
            let output = std::slice::from_raw_parts_mut(output, output_len);
            m.model.infer(input, shape, output).map(|_| ())
        }
    })
}

/// How the bytes of a `TimmImage` are laid out.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimmPixelFormat {
    /// 3 bytes per pixel, red first.
    TIMM_PIXEL_RGB8 = 0,
    /// 3 bytes per pixel, blue first (OpenCV's `cv::Mat` default).
    TIMM_PIXEL_BGR8 = 1,
    /// 4 bytes per pixel; alpha is dropped, not blended (as Pillow's `convert('RGB')`).
    TIMM_PIXEL_RGBA8 = 2,
    TIMM_PIXEL_BGRA8 = 3,
    /// 1 byte per pixel, replicated to RGB.
    TIMM_PIXEL_GRAY8 = 4,
}

/// Pixels in memory the caller owns: `height` rows of `stride` bytes (0 = tightly packed),
/// each starting with `width` pixels in `format`. Only read during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TimmImage {
    pub data: *const u8,
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub format: TimmPixelFormat,
}

/// The layout of `TimmImage` with the format read as a plain integer, so a value that is not
/// a `TimmPixelFormat` is an error instead of undefined behaviour.
#[repr(C)]
struct RawImage {
    data: *const u8,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
}

/// One of an image's top classes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TimmClass {
    pub index: usize,
    /// Softmax of the logits.
    pub probability: f32,
    pub logit: f32,
    /// The class's label name, or NULL when the config has none. Owned by the model; valid until `timm_free`.
    pub label: *const c_char,
    /// The label's description, or NULL. Owned by the model; valid until `timm_free`.
    pub description: *const c_char,
}

/// Reads a caller's image into packed RGB.
///
/// # Safety
/// `image` must be NULL or point to a TimmImage whose data covers its rows.
unsafe fn read_image(image: *const TimmImage, what: &str) -> Result<RgbImage> {
    let raw = arg(image as *const RawImage, what)?;
    let format = match raw.format {
        0 => PixelFormat::Rgb8,
        1 => PixelFormat::Bgr8,
        2 => PixelFormat::Rgba8,
        3 => PixelFormat::Bgra8,
        4 => PixelFormat::Gray8,
        other => {
            return Err(Error::invalid_argument(format!(
                "{what}: pixel format {other} is not a TimmPixelFormat"
            )))
        }
    };
    if raw.data.is_null() {
        return Err(Error::invalid_argument(format!("{what}: `data` is NULL")));
    }
    let bpp = format.bytes_per_pixel();
    let row = (raw.width as usize)
        .checked_mul(bpp)
        .ok_or_else(|| Error::invalid_argument("image row overflows"))?;
    let stride = if raw.stride == 0 { row } else { raw.stride };
    if stride < row {
        return Err(Error::invalid_argument(format!(
            "{what}: stride {stride} is less than width × {bpp} = {row} bytes"
        )));
    }
    if raw.width == 0 || raw.height == 0 {
        return Err(Error::invalid_argument(format!(
            "{what}: size {}x{} is empty",
            raw.width, raw.height
        )));
    }
    let len = stride
        .checked_mul(raw.height as usize - 1)
        .and_then(|v| v.checked_add(row))
        .filter(|&v| v <= isize::MAX as usize)
        .ok_or_else(|| Error::invalid_argument(format!("{what}: stride × height overflows")))?;
    let data = std::slice::from_raw_parts(raw.data, len);
    ImageView {
        data,
        width: raw.width,
        height: raw.height,
        stride,
        format,
    }
    .to_rgb()
}

/// Writes classes into the caller's array, with label pointers into the model.
///
/// # Safety
/// `out` must have room for `classes.len()` entries.
unsafe fn write_classes(m: &Model, classes: &[Class], out: *mut TimmClass) {
    for (i, c) in classes.iter().enumerate() {
        out.add(i).write(TimmClass {
            index: c.index,
            probability: c.probability,
            logit: c.logit,
            label: m.label(c.index).map_or(std::ptr::null(), |s| s.as_ptr()),
            description: m
                .description(c.index)
                .map_or(std::ptr::null(), |s| s.as_ptr()),
        });
    }
}

/// timm's eval transform (resize, center crop, normalize, exactly as timm + Pillow do it) of
/// one image into `output`, which must hold `C*H*W` floats of `timm_model_input_size`.
/// `TIMM_ERR_BUFFER_TOO_SMALL` names the length needed. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_preprocess(
    model: *const TimmModel,
    image: *const TimmImage,
    output: *mut f32,
    output_len: usize,
) -> TimmStatus {
    guard_status("timm_preprocess", || {
        // SAFETY: pointers checked; the caller's buffers are valid per the contract.
        unsafe {
            let m = model_arg(model)?;
            let img = read_image(image, "image")?;
            if output.is_null() {
                return Err(Error::invalid_argument("`output` is NULL"));
            }
            let [c, h, w] = m.model.data_config().input_size;
            let needed = c * h * w;
            if output_len < needed {
                return Err(Error::buffer_too_small(format!(
                    "output holds {output_len} floats; {c}x{h}x{w} = {needed} are needed"
                )));
            }
            m.model
                .preprocess(&img, std::slice::from_raw_parts_mut(output, needed))
        }
    })
}

/// Classifies `count` images in one batch: `results` receives `count * k` entries, image by
/// image, each image's `k` most probable classes first. `k` must be 1..=num_classes.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn timm_classify(
    model: *mut TimmModel,
    images: *const TimmImage,
    count: usize,
    k: usize,
    results: *mut TimmClass,
) -> TimmStatus {
    guard_status("timm_classify", || {
        // SAFETY: pointers checked; arrays sized per the contract.
        unsafe {
            let m = model_arg(model)?;
            if images.is_null() || results.is_null() {
                return Err(Error::invalid_argument(
                    "`images` and `results` must not be NULL",
                ));
            }
            if count == 0 || count > 1 << 16 {
                return Err(Error::invalid_argument(format!(
                    "count = {count}; expected 1..=65536 images"
                )));
            }
            let imgs = (0..count)
                .map(|i| read_image(images.add(i), &format!("images[{i}]")))
                .collect::<Result<Vec<_>>>()?;
            let top = m.model.classify(&imgs, k)?;
            for (i, classes) in top.iter().enumerate() {
                write_classes(&m.model, classes, results.add(i * k));
            }
            Ok(())
        }
    })
}

/// Decodes an image file (JPEG, PNG, WebP, BMP, GIF's first frame or TIFF), classifies it and
/// writes its `k` most probable classes to `results` (room for `k` entries). An undecodable or
/// truncated file (as Pillow judges it; option `load_truncated_images` accepts truncated JPEGs),
/// a file over 1 GiB or one that is not a regular file is `TIMM_ERR_INVALID_ARGUMENT` with the
/// reason; a missing one `TIMM_ERR_NOT_FOUND`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_classify_file(
    model: *mut TimmModel,
    path: *const c_char,
    k: usize,
    results: *mut TimmClass,
) -> TimmStatus {
    guard_status("timm_classify_file", || {
        // SAFETY: pointers checked; `results` has room for k entries per the contract.
        unsafe {
            let m = model_arg(model)?;
            let path = str_arg(path, "path")?;
            if results.is_null() {
                return Err(Error::invalid_argument("`results` is NULL"));
            }
            let opts = preprocess::DecodeOptions {
                allow_truncated: m.model.options().load_truncated_images,
            };
            let img = preprocess::decode_file_with(std::path::Path::new(path), opts)?;
            let top = m.model.classify(std::slice::from_ref(&img), k)?;
            write_classes(&m.model, &top[0], results);
            Ok(())
        }
    })
}

/// Decodes an image file (as `timm_classify_file` does) and writes the model's eval transform of
/// it to `output` (`C*H*W` floats of `timm_model_input_size`, NCHW for a batch of one): the input
/// for `timm_infer` / `timm_infer_outputs`. `TIMM_ERR_BUFFER_TOO_SMALL` names the length needed.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn timm_preprocess_file(
    model: *const TimmModel,
    path: *const c_char,
    output: *mut f32,
    output_len: usize,
) -> TimmStatus {
    guard_status("timm_preprocess_file", || {
        // SAFETY: pointers checked; `output` holds output_len floats per the contract.
        unsafe {
            let m = model_arg(model)?;
            let path = str_arg(path, "path")?;
            if output.is_null() {
                return Err(Error::invalid_argument("`output` is NULL"));
            }
            let [c, h, w] = m.model.input_size();
            let needed = c * h * w;
            if output_len < needed {
                return Err(Error::buffer_too_small(format!(
                    "output holds {output_len} floats but the transformed image needs {needed} ({c}x{h}x{w})"
                )));
            }
            let img = preprocess::decode_file(std::path::Path::new(path))?;
            let out = std::slice::from_raw_parts_mut(output, needed);
            m.model.preprocess(&img, out)
        }
    })
}

/// Releases a model. NULL is a no-op. Freeing the same pointer twice is detected and ignored
/// (the last error says so) as long as the address was not reused by a newer model.
#[no_mangle]
pub extern "C" fn timm_free(model: *mut TimmModel) {
    guard("timm_free", (), || {
        if model.is_null() {
            return Ok(());
        }
        if !MODELS.remove(model as usize) {
            return Err(Error::invalid_argument(
                "timm_free: not a live model handle (double free?); ignored",
            ));
        }
        // SAFETY: the registry proves this pointer came from Box::into_raw and was not freed.
        drop(unsafe { Box::from_raw(model) });
        Ok(())
    })
}

/// This thread's last failure message, "" if none. The string stays valid until the next
/// failing call on the same thread; copy it to keep it. Never NULL.
#[no_mangle]
pub extern "C" fn timm_last_error() -> *const c_char {
    boundary::last_error_ptr()
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

/// Sets an option. Keys: `intra_op_threads`, `inter_op_threads`, `graph_optimization_level`
/// (disable|basic|extended|all), `ort_library` (path), `output` (logits|features),
/// `graph` (auto|native|onnx), `seed`, `use_test_size` (true|false), and for `hf-hub:` specs
/// `cache_dir`, `offline` (true|false), `endpoint`, `token`; for GPUs (docs/GPU.md)
/// `providers` (comma list of tensorrt, cuda, cpu), `device_id`, `strict_providers`,
/// `cuda_mem_limit`, `cudnn_conv_algo_search`, `trt_fp16`, `trt_engine_cache_dir`,
/// `trt_workspace_size`, `max_batch`. An unknown key or a bad
/// value is `TIMM_ERR_INVALID_ARGUMENT`; the message lists the known keys. Not thread-safe
/// on the same options object.
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

/// Floats per image that `timm_infer` writes: the class count for logits, `num_features` for
/// the `features` output. 0 if `model` is NULL or not live. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_output_dim(model: *const TimmModel) -> usize {
    // SAFETY: checked by model_arg.
    guard("timm_model_output_dim", 0, || {
        Ok(unsafe { model_arg(model)? }.model.output_dim())
    })
}

/// The input size `{C, H, W}` the model takes and `timm_preprocess` produces into `chw[3]`:
/// config.json's `input_size`, or `test_input_size` with option `use_test_size`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_input_size(model: *const TimmModel, chw: *mut i64) -> TimmStatus {
    guard_status("timm_model_input_size", || {
        // SAFETY: checked for NULL; the caller provides room for 3 values.
        unsafe {
            let m = model_arg(model)?;
            if chw.is_null() {
                return Err(Error::invalid_argument("`chw` is NULL"));
            }
            let s = m.model.input_size();
            for (i, v) in s.iter().enumerate() {
                *chw.add(i) = *v as i64;
            }
        }
        Ok(())
    })
}

/// Number of classes of the classifier (config.json `num_classes`). 0 if `model` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_num_classes(model: *const TimmModel) -> usize {
    // SAFETY: checked by model_arg.
    guard("timm_model_num_classes", 0, || {
        Ok(unsafe { model_arg(model)? }.model.num_classes())
    })
}

/// The label name of class `index` (config.json `label_names`), or NULL when the config has
/// none for it or `index` is out of range. Owned by the model; valid until `timm_free`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_label(model: *const TimmModel, index: usize) -> *const c_char {
    guard("timm_model_label", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        let m = unsafe { model_arg(model)? };
        Ok(m.model
            .label(index)
            .map_or(std::ptr::null(), |s| s.as_ptr()))
    })
}

/// The description of class `index` (config.json `label_descriptions`, keyed by label name),
/// or NULL. Owned by the model; valid until `timm_free`. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_label_description(
    model: *const TimmModel,
    index: usize,
) -> *const c_char {
    guard("timm_model_label_description", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        let m = unsafe { model_arg(model)? };
        Ok(m.model
            .description(index)
            .map_or(std::ptr::null(), |s| s.as_ptr()))
    })
}

/// The resolved config as JSON (architecture, num_classes, model_args, pretrained_cfg with
/// timm's defaults filled in, labels). Owned by the model; valid until `timm_free`. NULL if
/// `model` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_config_json(model: *const TimmModel) -> *const c_char {
    guard("timm_model_config_json", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        Ok(unsafe { model_arg(model)? }.model.config_json().as_ptr())
    })
}

/// The ONNX Runtime execution providers that run nodes of this model, comma-separated in
/// priority order, e.g. "CUDAExecutionProvider,CPUExecutionProvider" or
/// "CPUExecutionProvider". Read from ONNX Runtime's record of how it partitioned the graph, so
/// a requested GPU provider that was silently replaced by the CPU is not listed. A GPU provider
/// listed together with CPUExecutionProvider means some nodes (often shape computations ONNX
/// Runtime prefers on the CPU) run there. Owned by the model; valid until `timm_free`. NULL if
/// `model` is NULL or not live. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_model_providers(model: *const TimmModel) -> *const c_char {
    guard("timm_model_providers", std::ptr::null(), || {
        // SAFETY: checked by model_arg.
        Ok(unsafe { model_arg(model)? }.model.providers().as_ptr())
    })
}

/// Severity passed as `level` to a `TimmLogFn`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimmLogLevel {
    TIMM_LOG_DEBUG = 0,
    TIMM_LOG_INFO = 1,
    /// e.g. a requested GPU provider could not be used and the model runs on the next one.
    TIMM_LOG_WARNING = 2,
    TIMM_LOG_ERROR = 3,
}

/// A log callback: `level` is a `TimmLogLevel`, `message` is valid only during the call.
pub type TimmLogFn = Option<
    extern "C" fn(
        level: std::os::raw::c_int,
        message: *const c_char,
        user_data: *mut std::os::raw::c_void,
    ),
>;

/// Sets the process-wide log callback (NULL restores the default: warnings and errors printed
/// to stderr). It receives libtimm's warnings (a requested GPU provider that could not be
/// used, and why) and, for models created while it is set, ONNX Runtime's session warnings and
/// errors.
///
/// Thread rules: the callback may be called from any thread, including ONNX Runtime's own,
/// and from several threads at once, so it must be thread-safe. It must return normally and
/// must not call `timm_set_log_callback` (that is refused with `TIMM_ERR_INVALID_ARGUMENT`).
/// When `timm_set_log_callback` returns, the previous callback is no longer running and will
/// not be called again, so its `user_data` may be released. `user_data` is passed back
/// untouched. Thread-safe.
#[no_mangle]
pub extern "C" fn timm_set_log_callback(
    callback: TimmLogFn,
    user_data: *mut std::os::raw::c_void,
) -> TimmStatus {
    guard_status("timm_set_log_callback", || {
        crate::runtime::log::set_callback(callback, user_data)
    })
}

/// The library version, e.g. "0.1.0". Static; never NULL.
#[no_mangle]
pub extern "C" fn timm_version() -> *const c_char {
    static V: Lazy<CString> =
        Lazy::new(|| CString::new(env!("CARGO_PKG_VERSION")).unwrap_or_default());
    V.as_ptr()
}

/// The name of a status code, e.g. "TIMM_ERR_NOT_FOUND" ("TIMM_ERR_UNKNOWN" for a value that
/// is not a status; an int, so any value is safe to pass). Static; never NULL.
#[no_mangle]
pub extern "C" fn timm_status_name(status: i32) -> *const c_char {
    static NAMES: Lazy<Vec<CString>> = Lazy::new(|| {
        use TimmStatus::*;
        [
            TIMM_OK,
            TIMM_ERR_INVALID_ARGUMENT,
            TIMM_ERR_NOT_FOUND,
            TIMM_ERR_INVALID_MODEL,
            TIMM_ERR_UNSUPPORTED,
            TIMM_ERR_RUNTIME,
            TIMM_ERR_IO,
            TIMM_ERR_BUFFER_TOO_SMALL,
            TIMM_ERR_INTERNAL,
        ]
        .iter()
        .map(|s| CString::new(s.name()).unwrap_or_default())
        .collect()
    });
    usize::try_from(status)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or(c"TIMM_ERR_UNKNOWN".as_ptr(), |s| s.as_ptr())
}
