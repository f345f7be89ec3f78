//! Caller-owned pixel buffers in common 8-bit layouts, converted to packed RGB the way
//! timm's loader does (`img.convert("RGB")`): alpha is dropped, not blended; gray is replicated.

use super::RgbImage;
use crate::error::{Error, Result};

/// Largest width or height accepted from a caller's buffer (Pillow and most codecs cap here too).
pub const MAX_VIEW_SIDE: u32 = 65535;

/// Byte layout of one pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    Rgb8,
    Bgr8,
    Rgba8,
    Bgra8,
    Gray8,
}

impl PixelFormat {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb8 | PixelFormat::Bgr8 => 3,
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => 4,
            PixelFormat::Gray8 => 1,
        }
    }
}

/// A borrowed image: `height` rows of `width` pixels, row `y` starting at byte `y * stride`.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub data: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Bytes from one row to the next; 0 means tightly packed (`width * bytes_per_pixel`).
    pub stride: usize,
    pub format: PixelFormat,
}

impl ImageView<'_> {
    /// Checks the geometry against the buffer and returns (row bytes, stride).
    fn layout(&self) -> Result<(usize, usize)> {
        let (w, h) = (self.width, self.height);
        if w == 0 || h == 0 || w > MAX_VIEW_SIDE || h > MAX_VIEW_SIDE {
            return Err(Error::invalid_argument(format!(
                "image is {w}x{h}; each side must be 1..={MAX_VIEW_SIDE}"
            )));
        }
        let bpp = self.format.bytes_per_pixel();
        let row = (w as usize)
            .checked_mul(bpp)
            .ok_or_else(|| Error::invalid_argument("image row size overflows"))?;
        let stride = if self.stride == 0 { row } else { self.stride };
        if stride < row {
            return Err(Error::invalid_argument(format!(
                "stride {stride} is smaller than a row of {w} {:?} pixels ({row} bytes)",
                self.format
            )));
        }
        let needed = stride
            .checked_mul(h as usize - 1)
            .and_then(|v| v.checked_add(row))
            .ok_or_else(|| Error::invalid_argument("image size overflows"))?;
        if self.data.len() < needed {
            return Err(Error::invalid_argument(format!(
                "a {w}x{h} {:?} image with stride {stride} needs {needed} bytes, got {}",
                self.format,
                self.data.len()
            )));
        }
        Ok((row, stride))
    }

    /// Converts to packed RGB8.
    pub fn to_rgb(&self) -> Result<RgbImage> {
        let (row, stride) = self.layout()?;
        let (w, h) = (self.width as usize, self.height as usize);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            let src = &self.data[y * stride..y * stride + row];
            match self.format {
                PixelFormat::Rgb8 => data.extend_from_slice(src),
                PixelFormat::Bgr8 => src
                    .chunks_exact(3)
                    .for_each(|p| data.extend_from_slice(&[p[2], p[1], p[0]])),
                PixelFormat::Rgba8 => src
                    .chunks_exact(4)
                    .for_each(|p| data.extend_from_slice(&p[..3])),
                PixelFormat::Bgra8 => src
                    .chunks_exact(4)
                    .for_each(|p| data.extend_from_slice(&[p[2], p[1], p[0]])),
                PixelFormat::Gray8 => src.iter().for_each(|&v| data.extend_from_slice(&[v, v, v])),
            }
        }
        Ok(RgbImage {
            width: self.width,
            height: self.height,
            data,
        })
    }
}
