//! Images in the caller's memory and the calls that take them: `timm_preprocess`,
//! `timm_classify`, `timm_classify_file`.

use std::os::raw::c_char;

use super::boundary::{arg, guard_status, str_arg};
use super::model::{model_arg, TimmModel};
use crate::error::{Error, Result, TimmStatus};
use crate::model::{Class, Model};
use crate::preprocess::{self, ImageView, PixelFormat, RgbImage};

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
            let img = decode_for(&m.model, path)?;
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
            let img = decode_for(&m.model, path)?;
            let out = std::slice::from_raw_parts_mut(output, needed);
            m.model.preprocess(&img, out)
        }
    })
}

/// An image file decoded as the model's options say (`load_truncated_images`).
fn decode_for(model: &Model, path: &str) -> Result<RgbImage> {
    let opts = preprocess::DecodeOptions {
        allow_truncated: model.options().load_truncated_images,
    };
    preprocess::decode_file_with(std::path::Path::new(path), opts)
}
