//! Image files to packed RGB8 with the `image` crate (JPEG, PNG, WebP).
//!
//! Matches what timm's loader gets from `Image.open(path).convert("RGB")` where the formats
//! allow: no EXIF rotation, alpha dropped (not blended), gray replicated, palettes expanded,
//! 16-bit samples reduced to their high byte as Pillow's PNG reader does for RGB(A). (Pillow
//! opens 16-bit gray PNGs as `I;16` and `convert("RGB")` clips those values to 255; we take
//! the high byte there too rather than copy that.) PNG and lossless
//! WebP decode to the same pixels as Pillow; JPEG decoders differ slightly (IDCT and chroma
//! upsampling), which shows up as small per-pixel differences from Pillow's libjpeg-turbo.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, Limits};

use super::RgbImage;
use crate::error::{Error, Result};

/// Largest decoded image accepted, in pixels (checked from the header before decoding).
pub const MAX_DECODED_PIXELS: u64 = 100_000_000;
/// Largest decoded side, as Pillow and [`super::MAX_VIEW_SIDE`].
const MAX_DECODED_SIDE: u32 = 65535;

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::invalid_argument(format!("cannot read image: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::invalid_argument(
            "not an image in a known format (expected JPEG, PNG or WebP)",
        ));
    }
    Ok(reader)
}

fn decode_error(e: image::ImageError) -> Error {
    Error::invalid_argument(format!("cannot decode image: {e}"))
}

/// Decodes an in-memory JPEG, PNG or WebP file.
pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage> {
    decode_bytes_limited(bytes, MAX_DECODED_PIXELS)
}

/// [`decode_bytes`] with a lower pixel cap (clamped to [`MAX_DECODED_PIXELS`]); the fuzzer
/// uses a small one so each input decodes in microseconds, not seconds.
pub fn decode_bytes_limited(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    let max_pixels = max_pixels.min(MAX_DECODED_PIXELS);
    // Read the header first so a huge image is refused before any pixel buffer exists.
    let (w, h) = reader(bytes)?.into_dimensions().map_err(decode_error)?;
    if w == 0 || h == 0 || w > MAX_DECODED_SIDE || h > MAX_DECODED_SIDE {
        return Err(Error::invalid_argument(format!(
            "image is {w}x{h}; each side must be 1..={MAX_DECODED_SIDE}"
        )));
    }
    if w as u64 * h as u64 > max_pixels {
        return Err(Error::invalid_argument(format!(
            "image is {w}x{h}, more than the {max_pixels} pixels allowed"
        )));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    // Room for the largest allowed image as 16-bit RGBA plus decoder scratch.
    limits.max_alloc = Some(max_pixels * 8 + (64 << 20));
    let mut r = reader(bytes)?;
    r.limits(limits);
    // The decoders are third-party code reading untrusted bytes, and some still panic on
    // malformed files (zune-jpeg's AVX2 IDCT unwraps an out-of-range slice on a fuzzed JPEG,
    // etemesi254/zune-image#361). Contain that here as a decode error: the panic carries no
    // state out of the decoder, which owns everything it touched.
    let img = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| r.decode()))
        .map_err(|_| {
            Error::invalid_argument(
                "cannot decode image: the decoder failed on malformed data (it panicked)",
            )
        })?
        .map_err(decode_error)?;
    Ok(to_rgb(img))
}

/// Reads and decodes a JPEG, PNG or WebP file; a missing file is `TIMM_ERR_NOT_FOUND`.
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::from_io(&e, "cannot read image", path))?;
    decode_bytes(&bytes).map_err(|e| e.context(path.display()))
}

/// Pillow's `convert("RGB")` for each decoded layout.
fn to_rgb(img: DynamicImage) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    let data = match img {
        DynamicImage::ImageRgb8(b) => b.into_raw(),
        DynamicImage::ImageRgba8(b) => b.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma8(b) => b.iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(b) => {
            b.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect()
        }
        DynamicImage::ImageRgb16(b) => b.iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(b) => b
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8))
            .collect(),
        DynamicImage::ImageLuma16(b) => b.iter().flat_map(|&v| [(v >> 8) as u8; 3]).collect(),
        DynamicImage::ImageLumaA16(b) => b
            .chunks_exact(2)
            .flat_map(|p| [(p[0] >> 8) as u8; 3])
            .collect(),
        other => other.into_rgb8().into_raw(),
    };
    RgbImage {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image::RgbImage::new(w, h)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    /// A fuzzer-found JPEG on which zune-jpeg 0.5.15's AVX2 IDCT panics (upstream #361).
    #[test]
    fn decoder_panic_is_a_decode_error() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/hostile/zune-jpeg-avx2-idct-panic.jpg"
        );
        let bytes = std::fs::read(path).unwrap();
        // Without AVX2 the scalar IDCT may decode it; either way nothing panics out.
        if let Err(e) = decode_bytes(&bytes) {
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
            assert!(e.message().starts_with("cannot decode image"), "{e}");
        }
    }

    #[test]
    fn pixel_cap_is_checked_from_the_header() {
        let bytes = png(20, 20);
        let img = decode_bytes_limited(&bytes, 400).unwrap();
        assert_eq!((img.width, img.height), (20, 20));
        let e = decode_bytes_limited(&bytes, 399).unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
        assert!(
            e.message().contains("more than the 399 pixels allowed"),
            "{e}"
        );
        // A cap above the library's own is clamped to it, never raised.
        assert!(decode_bytes_limited(&bytes, u64::MAX).is_ok());
    }
}
