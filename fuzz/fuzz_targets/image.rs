//! Image input: `preprocess::decode_bytes_with` (JPEG / PNG / WebP / BMP / GIF / TIFF from the
//! `image` crate; truncated JPEGs allowed for odd-length inputs so they reach the decoder,
//! behind our header checks) with a small pixel cap so each input decodes quickly, then timm's
//! eval transform with one of 18 fixed small data configs (crop mode and interpolation picked
//! by the input length). The same bytes are also read as a caller's raw pixel buffer
//! (`ImageView::to_rgb`, what `timm_preprocess` does with a `TimmImage`) with a geometry taken
//! from the first bytes, so stride and format checks get fuzzed too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timm::preprocess::{
    self, CropMode, DataConfig, ImageView, Interpolation, PixelFormat, RgbImage,
};
use timm::TimmStatus;

/// 256×256: big enough for every seed, small enough for thousands of execs per second.
const MAX_PIXELS: u64 = 1 << 16;

const INTERPOLATIONS: [Interpolation; 6] = [
    Interpolation::Nearest,
    Interpolation::Bilinear,
    Interpolation::Bicubic,
    Interpolation::Lanczos,
    Interpolation::Box,
    Interpolation::Hamming,
];

/// One eval transform per image (a fixed small config picked by `pick`), so each input costs
/// one resize: cheap enough for millions of executions.
fn run_transform(img: &RgbImage, pick: usize) {
    let (channels, crop_mode, crop_pct) = [
        (3, CropMode::Center, 0.875),
        (3, CropMode::Squash, 1.0),
        (1, CropMode::Border, 0.95),
    ][pick % 3];
    let cfg = DataConfig {
        input_size: [channels, 16, 24],
        interpolation: INTERPOLATIONS[(pick / 3) % INTERPOLATIONS.len()],
        crop_pct,
        crop_mode,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
    let mut out = vec![f32::NAN; cfg.output_len()];
    match preprocess::preprocess(&cfg, img, &mut out) {
        // Normalised 8-bit pixels are finite, and every output float is written.
        Ok(()) => assert!(out.iter().all(|v| v.is_finite())),
        // Images too elongated to resize for this input are refused, cleanly.
        Err(e) => assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e}"),
    }
}

/// Decoder panics that `decode_bytes` contains (and reports as decode errors) are known
/// upstream bugs; libfuzzer-sys's panic hook would abort on them even though they are caught.
/// Let only those unwind, so the target keeps looking for anything else.
const CONTAINED_PANICS: &[&str] = &[
    // etemesi254/zune-image#361: AVX2 IDCT unwrap on malformed sampling factors.
    "/zune-jpeg-",
];

fuzz_target!(
    init: {
        let abort_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or("");
            if !CONTAINED_PANICS.iter().any(|p| file.contains(p)) {
                abort_hook(info);
            }
        }));
    },
    |data: &[u8]| {
    let opts = preprocess::DecodeOptions {
        allow_truncated: data.len() % 2 == 1,
    };
    match preprocess::decode_bytes_with(data, MAX_PIXELS, opts) {
        Ok(img) => {
            assert_eq!(
                img.data.len() as u64,
                img.width as u64 * img.height as u64 * 3
            );
            run_transform(&img, data.len());
        }
        Err(e) => assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e}"),
    }

    if let [w, h, f, s, pixels @ ..] = data {
        let format = [
            PixelFormat::Rgb8,
            PixelFormat::Bgr8,
            PixelFormat::Rgba8,
            PixelFormat::Bgra8,
            PixelFormat::Gray8,
        ][*f as usize % 5];
        let view = ImageView {
            data: pixels,
            width: u32::from(*w % 64),
            height: u32::from(*h % 64),
            // 0 = packed; otherwise anything, including strides shorter than a row.
            stride: usize::from(*s),
            format,
        };
        match view.to_rgb() {
            Ok(img) => run_transform(&img, usize::from(*s)),
            Err(e) => assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e}"),
        }
    }
}
);
