//! Image preprocessing that reproduces timm 1.0.31's eval transform bit for bit.
//!
//! timm's `transforms_imagenet_eval` runs torchvision transforms on a PIL image:
//! a resize (Pillow's antialiased, fixed-point `Image.resize`), a center crop that pads
//! with a fill colour when the image is too small, `ToTensor` (÷255 in float32, CHW) and
//! `Normalize` (`(x - mean) / std` in float32). This module does the same steps with the
//! same integer and float arithmetic, so the tensor a model sees is the one timm would
//! have produced from the same decoded pixels.
//!
//! - `resample`: Pillow's `Image.resize` for 8-bit images ([`resize`]).
//! - `transform`: the eval transform itself ([`preprocess`], [`eval_crop`]).
//! - `pixels`: caller pixel buffers in several layouts ([`ImageView`]).
//! - `decode`: JPEG / PNG / WebP / BMP / GIF / TIFF files ([`decode_file`], [`decode_bytes`]).

mod decode;
mod pixels;
mod resample;
mod transform;

pub use decode::{
    decode_bytes, decode_bytes_limited, decode_bytes_with, decode_file, decode_file_with,
    DecodeOptions, MAX_DECODED_PIXELS, MAX_IMAGE_FILE_BYTES,
};
pub use pixels::{ImageView, PixelFormat, MAX_VIEW_SIDE};
pub use resample::resize;
pub use transform::{eval_crop, preprocess};

use crate::error::{Error, Result};

/// Resampling filter, named as timm names it in `pretrained_cfg["interpolation"]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos,
    Box,
    Hamming,
}

impl Interpolation {
    /// Parses a timm interpolation string.
    ///
    /// An empty string means "unset": `resolve_data_config` then falls back to bicubic.
    /// `"random"` is a training-only choice (timm's eval `Resize` would raise on it).
    pub fn from_timm(s: &str) -> Result<Self> {
        Ok(match s {
            "" | "bicubic" => Interpolation::Bicubic,
            "nearest" => Interpolation::Nearest,
            "bilinear" => Interpolation::Bilinear,
            "lanczos" => Interpolation::Lanczos,
            "box" => Interpolation::Box,
            "hamming" => Interpolation::Hamming,
            "random" => {
                return Err(Error::invalid_argument(
                    "interpolation \"random\" is only used by timm's training transforms",
                ))
            }
            other => {
                return Err(Error::invalid_argument(format!(
                    "unknown interpolation {other:?} (expected nearest, bilinear, bicubic, lanczos, box or hamming)"
                )))
            }
        })
    }

    /// The timm spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
            Interpolation::Lanczos => "lanczos",
            Interpolation::Box => "box",
            Interpolation::Hamming => "hamming",
        }
    }
}

/// How the eval transform fits the image to the model input (timm's `crop_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CropMode {
    /// Resize keeping the aspect ratio so the short side fills the scaled target, then center crop.
    Center,
    /// Resize each side to the scaled target (aspect ratio not kept), then center crop.
    Squash,
    /// Resize keeping the aspect ratio so the long side fits, then pad with the mean colour.
    Border,
}

impl CropMode {
    /// Parses a timm crop mode; empty means unset, which timm resolves to `center`.
    ///
    /// timm's eval transform silently treats any other string as `center`; we reject it
    /// instead so a typo in a config is reported rather than changing the crop.
    pub fn from_timm(s: &str) -> Result<Self> {
        match s {
            "" | "center" => Ok(CropMode::Center),
            "squash" => Ok(CropMode::Squash),
            "border" => Ok(CropMode::Border),
            other => Err(Error::invalid_argument(format!(
                "unknown crop_mode {other:?} (expected center, squash or border)"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CropMode::Center => "center",
            CropMode::Squash => "squash",
            CropMode::Border => "border",
        }
    }
}

/// The resolved data config (timm's `resolve_data_config` output) that drives the transform.
///
/// For `use_test_size`, the caller puts `test_input_size` / `test_crop_pct` here when the
/// pretrained config has them. For one-channel models only `mean[0]` / `std[0]` are used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataConfig {
    /// (channels, height, width); channels is 1 or 3.
    pub input_size: [usize; 3],
    pub interpolation: Interpolation,
    pub crop_pct: f64,
    pub crop_mode: CropMode,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// timm's `IMAGENET_DEFAULT_MEAN`.
pub const IMAGENET_DEFAULT_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// timm's `IMAGENET_DEFAULT_STD`.
pub const IMAGENET_DEFAULT_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// timm's `DEFAULT_CROP_PCT`.
pub const DEFAULT_CROP_PCT: f64 = 0.875;
/// Largest model input side accepted by [`DataConfig::validate`].
pub const MAX_INPUT_SIDE: usize = 8192;
/// Largest `crop_pct` accepted; timm models use 0.75 to 1.0, a few up to ~1.15.
pub const MAX_CROP_PCT: f64 = 10.0;
/// Largest side of the intermediate resized image (`input / crop_pct`, or the resize of a
/// very elongated image); keeps coordinates exact in Pillow's `float` box arithmetic.
pub(crate) const MAX_RESIZED_SIDE: u64 = 1 << 20;

impl Default for DataConfig {
    /// What `resolve_data_config` returns with no model information.
    fn default() -> Self {
        DataConfig {
            input_size: [3, 224, 224],
            interpolation: Interpolation::Bicubic,
            crop_pct: DEFAULT_CROP_PCT,
            crop_mode: CropMode::Center,
            mean: IMAGENET_DEFAULT_MEAN,
            std: IMAGENET_DEFAULT_STD,
        }
    }
}

impl DataConfig {
    /// Number of channels (1 or 3 once validated).
    pub fn channels(&self) -> usize {
        self.input_size[0]
    }

    /// Length of the CHW float output, `C * H * W`.
    pub fn output_len(&self) -> usize {
        self.input_size.iter().product()
    }

    /// Rejects configs no timm model has and that would make the transform misbehave.
    pub fn validate(&self) -> Result<()> {
        let [c, h, w] = self.input_size;
        if c != 1 && c != 3 {
            return Err(Error::invalid_argument(format!(
                "input_size has {c} channels; only 1 (grayscale) and 3 (RGB) are supported"
            )));
        }
        if h == 0 || w == 0 || h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
            return Err(Error::invalid_argument(format!(
                "input_size {h}x{w} is out of range (each side must be 1..={MAX_INPUT_SIDE})"
            )));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= MAX_CROP_PCT) {
            return Err(Error::invalid_argument(format!(
                "crop_pct {} is out of range (0, {MAX_CROP_PCT}]",
                self.crop_pct
            )));
        }
        for side in [h, w] {
            let scaled = transform::scale_side(side, self.crop_pct);
            if scaled == 0 || scaled > MAX_RESIZED_SIDE {
                return Err(Error::invalid_argument(format!(
                    "input side {side} / crop_pct {} gives a resize target of {scaled} pixels",
                    self.crop_pct
                )));
            }
        }
        for i in 0..c {
            let (m, s) = (self.mean[i], self.std[i]);
            if !m.is_finite() {
                return Err(Error::invalid_argument(format!(
                    "mean[{i}] = {m} is not finite"
                )));
            }
            if !s.is_finite() || s == 0.0 {
                return Err(Error::invalid_argument(format!(
                    "std[{i}] = {s} must be finite and non-zero"
                )));
            }
        }
        Ok(())
    }
}

/// A decoded image: packed 8-bit RGB, rows top to bottom, no padding.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// Size only: the pixels would flood logs and test failures.
impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RgbImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl RgbImage {
    /// Wraps packed RGB8 pixels, checking the length.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        let img = RgbImage {
            width,
            height,
            data,
        };
        img.check()?;
        Ok(img)
    }

    /// The fields are public, so every consumer re-checks them before indexing.
    pub(crate) fn check(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::invalid_argument(format!(
                "image is {}x{}; both sides must be non-zero",
                self.width, self.height
            )));
        }
        let expected = (self.width as u64) * (self.height as u64) * 3;
        if self.data.len() as u64 != expected {
            return Err(Error::invalid_argument(format!(
                "RGB image {}x{} needs {expected} bytes, got {}",
                self.width,
                self.height,
                self.data.len()
            )));
        }
        Ok(())
    }
}
