//! Image files to packed RGB8 with the `image` crate (JPEG, PNG, WebP, BMP, GIF's first frame,
//! TIFF: the formats timm users feed Pillow).
//!
//! Matches what timm's loader gets from `Image.open(path).convert("RGB")` where the formats
//! allow: no EXIF rotation, alpha dropped (not blended), gray replicated, palettes expanded,
//! 16-bit samples reduced to their high byte as Pillow's PNG reader does for RGB(A). (Pillow
//! opens 16-bit gray PNGs as `I;16` and `convert("RGB")` clips those values to 255; we take
//! the high byte there too rather than copy that.) PNG and lossless
//! WebP decode to the same pixels as Pillow; JPEG decoders differ slightly (IDCT and chroma
//! upsampling), which shows up as small per-pixel differences from Pillow's libjpeg-turbo.

use std::io::{BufRead, BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use super::RgbImage;
use crate::error::{Error, Result};

/// Largest decoded image accepted, in pixels (checked from the header before decoding).
pub const MAX_DECODED_PIXELS: u64 = 100_000_000;
/// Largest decoded side, as Pillow and [`super::MAX_VIEW_SIDE`].
const MAX_DECODED_SIDE: u32 = 65535;
/// Largest image file read. The largest image allowed ([`MAX_DECODED_PIXELS`]) takes 800 MB as
/// uncompressed 16-bit RGBA (TIFF, BMP); a bigger file is not an image we would decode, and
/// JPEG decoding holds the whole file in memory, so the cap bounds what a file can cost.
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

/// How a decode treats damaged files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Decode a JPEG whose data ends early (Pillow's `ImageFile.LOAD_TRUNCATED_IMAGES`); the
    /// missing part comes out gray or black. Off by default, as in Pillow, which raises
    /// "image file is truncated".
    pub allow_truncated: bool,
}

fn reader<R: BufRead + Seek>(mut input: R) -> Result<ImageReader<R>> {
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(format!("cannot read image: {e}")))?;
    let reader = ImageReader::new(input)
        .with_guessed_format()
        .map_err(|e| Error::invalid_argument(format!("cannot read image: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::invalid_argument(
            "not an image in a known format (expected JPEG, PNG, WebP, BMP, GIF or TIFF)",
        ));
    }
    Ok(reader)
}

fn decode_error(e: image::ImageError) -> Error {
    Error::invalid_argument(format!("cannot decode image: {e}"))
}

/// Decodes an in-memory image file (JPEG, PNG, WebP, BMP, GIF, TIFF).
pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage> {
    decode_bytes_limited(bytes, MAX_DECODED_PIXELS)
}

/// [`decode_bytes`] with a lower pixel cap (clamped to [`MAX_DECODED_PIXELS`]); the fuzzer
/// uses a small one so each input decodes in microseconds, not seconds.
pub fn decode_bytes_limited(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    decode_bytes_with(bytes, max_pixels, DecodeOptions::default())
}

/// [`decode_bytes_limited`] with options (the fuzzer also lets truncated JPEGs reach the decoder).
pub fn decode_bytes_with(bytes: &[u8], max_pixels: u64, opts: DecodeOptions) -> Result<RgbImage> {
    decode(Cursor::new(bytes), max_pixels, opts)
}

fn decode<R: BufRead + Seek>(
    mut input: R,
    max_pixels: u64,
    opts: DecodeOptions,
) -> Result<RgbImage> {
    let max_pixels = max_pixels.min(MAX_DECODED_PIXELS);
    // Read the header first so a huge image is refused before any pixel buffer exists.
    let r = reader(&mut input)?;
    let format = r.format();
    let (w, h) = r.into_dimensions().map_err(decode_error)?;
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
    if format == Some(ImageFormat::Jpeg) && !opts.allow_truncated {
        input
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(format!("cannot read image: {e}")))?;
        if !jpeg_reaches_eoi(&mut input)
            .map_err(|e| Error::io(format!("cannot read image: {e}")))?
        {
            return Err(Error::invalid_argument(
                "image file is truncated: the JPEG data ends before its end-of-image marker (Pillow \
                 refuses it too; option `load_truncated_images=true` decodes it anyway, as \
                 Pillow's ImageFile.LOAD_TRUNCATED_IMAGES does)",
            ));
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    // Room for the largest allowed image as 16-bit RGBA plus decoder scratch.
    limits.max_alloc = Some(max_pixels * 8 + (64 << 20));
    let mut r = reader(&mut input)?;
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

/// Reads and decodes an image file; a missing file is `TIMM_ERR_NOT_FOUND`. The file is
/// streamed (only JPEG is held whole, by its decoder) and capped at [`MAX_IMAGE_FILE_BYTES`].
pub fn decode_file(path: &Path) -> Result<RgbImage> {
    decode_file_with(path, DecodeOptions::default())
}

/// [`decode_file`] with options.
pub fn decode_file_with(path: &Path, opts: DecodeOptions) -> Result<RgbImage> {
    let (file, len) =
        crate::files::open_regular(path, "cannot read image", Error::invalid_argument)?;
    if len > MAX_IMAGE_FILE_BYTES {
        return Err(Error::invalid_argument(format!(
            "image file {} is {len} bytes, over the limit of {MAX_IMAGE_FILE_BYTES} bytes for an image file",
            path.display()
        )));
    }
    // Never past the size seen at open: a file that grows meanwhile cannot raise the cost.
    let input = BufReader::with_capacity(1 << 16, Capped { file, pos: 0, len });
    decode(input, MAX_DECODED_PIXELS, opts).map_err(|e| e.context(path.display()))
}

/// A file read as if it ended at `len`.
struct Capped {
    file: std::fs::File,
    pos: u64,
    len: u64,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = self.len.saturating_sub(self.pos).min(buf.len() as u64) as usize;
        if room == 0 {
            return Ok(0);
        }
        let n = self.file.read(&mut buf[..room])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Capped {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start")
        })?;
        self.pos = self.file.seek(SeekFrom::Start(target))?;
        Ok(self.pos)
    }
}

/// Whether a JPEG's marker stream reaches EOI, walked as libjpeg does: segments skipped by
/// their length, entropy-coded data scanned for the next marker (`FF 00` is a stuffed byte,
/// `FF D0`..`FF D7` restart markers), stray bytes between markers skipped. Pillow raises
/// "image file is truncated" exactly when the file ends first. Streams: constant memory.
fn jpeg_reaches_eoi<R: BufRead>(r: &mut R) -> std::io::Result<bool> {
    fn byte<R: BufRead>(r: &mut R) -> std::io::Result<Option<u8>> {
        let b = r.fill_buf()?.first().copied();
        if b.is_some() {
            r.consume(1);
        }
        Ok(b)
    }
    fn skip<R: BufRead>(r: &mut R, mut n: u64) -> std::io::Result<bool> {
        while n > 0 {
            let avail = r.fill_buf()?.len() as u64;
            if avail == 0 {
                return Ok(false);
            }
            let k = avail.min(n);
            r.consume(k as usize);
            n -= k;
        }
        Ok(true)
    }
    /// Skips to just past the next `FF` outside a stuffed pair; false at the end of the file.
    fn to_ff<R: BufRead>(r: &mut R) -> std::io::Result<bool> {
        loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            match buf.iter().position(|&b| b == 0xFF) {
                Some(i) => {
                    r.consume(i + 1);
                    return Ok(true);
                }
                None => {
                    let n = buf.len();
                    r.consume(n);
                }
            }
        }
    }
    if byte(r)? != Some(0xFF) || byte(r)? != Some(0xD8) {
        return Ok(false);
    }
    let mut in_scan = false;
    loop {
        if !to_ff(r)? {
            return Ok(false);
        }
        // Fill bytes: any number of FF before the marker code.
        let mut m = 0xFF;
        while m == 0xFF {
            match byte(r)? {
                Some(b) => m = b,
                None => return Ok(false),
            }
        }
        match m {
            0xD9 => return Ok(true),
            // Stuffed zero or restart marker: still inside the entropy-coded data.
            0x00 | 0xD0..=0xD7 if in_scan => continue,
            // Stray or standalone codes (TEM, a stray zero, a misplaced RST) carry no length.
            0x00 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {
                let (Some(hi), Some(lo)) = (byte(r)?, byte(r)?) else {
                    return Ok(false);
                };
                let len = u16::from_be_bytes([hi, lo]) as u64;
                if !skip(r, len.saturating_sub(2))? {
                    return Ok(false);
                }
                in_scan = m == 0xDA;
            }
        }
    }
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
        // The file ends inside a segment, so the truncation check alone refuses it; allowing
        // truncated files lets the bytes reach the decoder, whose panic is what this checks.
        assert!(decode_bytes(&bytes)
            .unwrap_err()
            .message()
            .contains("truncated"));
        let allow = DecodeOptions {
            allow_truncated: true,
        };
        // Without AVX2 the scalar IDCT may decode it; either way nothing panics out.
        if let Err(e) = decode(Cursor::new(&bytes[..]), MAX_DECODED_PIXELS, allow) {
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
