//! timm 1.0.31's `transforms_imagenet_eval` (timm/data/transforms_factory.py) on an
//! already-decoded image: resize, center crop or pad, `ToTensor`, `Normalize`.

use super::resample::{resize_region, Plane};
use super::{CropMode, DataConfig, RgbImage, MAX_RESIZED_SIDE};
use crate::error::{Error, Result};

/// `math.floor(side / crop_pct)`: the side of the image before the crop.
pub(crate) fn scale_side(side: usize, crop_pct: f64) -> u64 {
    let v = (side as f64 / crop_pct).floor();
    // Saturating cast: absurd values are rejected by the caller's range check.
    v as u64
}

/// Python's `round()` of `n / 2` (ties to even), for the center-crop offset.
fn half_round_even(n: u64) -> u64 {
    let q = n / 2;
    if n % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// The Python float a config's mean was written as, recovered from its f32: the shortest
/// decimal that round-trips the f32 (e.g. `0.9`), read as f64. This matters at ties:
/// `255 * 0.9` is exactly 229.5 in f64 (rounds to 230) but 229.49999 from the f32 (229).
fn decimal_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// Where the crop window of the model input sits on the resized image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Size of the resized image (width, height).
    resized: (u64, u64),
    /// Resized-image coordinates of the crop's top-left pixel; negative where padding comes first.
    left: i64,
    top: i64,
    /// Padding colour for each channel.
    fill: [u8; 3],
}

/// torchvision `Resize(int)`: the short side becomes `size`, the long side
/// `int(size * long / short)` (truncated).
fn resize_short_side(w: u64, h: u64, size: u64) -> (u64, u64) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // `size * long` is exact in Python's int and below 2^53 here, so the float divide matches.
    let new_long = ((size * long) as f64 / short as f64) as u64;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// timm `ResizeKeepRatio.get_params` without the random parts: scale both sides by one
/// ratio, taken from the short side (`longest = 0`) or the long side (`longest = 1`).
fn resize_keep_ratio(w: u64, h: u64, target: (u64, u64), longest: f64) -> (u64, u64) {
    let (th, tw) = target;
    let ratio_h = h as f64 / th as f64;
    let ratio_w = w as f64 / tw as f64;
    let ratio = ratio_h.max(ratio_w) * longest + ratio_h.min(ratio_w) * (1.0 - longest);
    let new_h = (h as f64 * 1.0 / ratio).round_ties_even();
    let new_w = (w as f64 * 1.0 / ratio).round_ties_even();
    (new_w as u64, new_h as u64)
}

/// torchvision `center_crop` / timm `center_crop_or_pad`: pad each short side by
/// `(d // 2, (d + 1) // 2)`, then crop at `round((size - crop) / 2)`.
fn crop_origin(size: u64, crop: u64) -> i64 {
    if crop > size {
        let pad_before = (crop - size) / 2;
        let pad_after = (crop - size).div_ceil(2);
        let padded = size + pad_before + pad_after;
        half_round_even(padded - crop) as i64 - pad_before as i64
    } else {
        half_round_even(size - crop) as i64
    }
}

fn plan(cfg: &DataConfig, width: u32, height: u32) -> Result<Plan> {
    let [_, th, tw] = cfg.input_size;
    let (w, h) = (width as u64, height as u64);
    let (sh, sw) = (scale_side(th, cfg.crop_pct), scale_side(tw, cfg.crop_pct));
    let mut fill = [0u8; 3];
    let resized = match cfg.crop_mode {
        CropMode::Squash => (sw, sh),
        CropMode::Border => {
            // `[round(255 * v) for v in mean]` on Python floats.
            for (f, &m) in fill.iter_mut().zip(&cfg.mean) {
                *f = (255.0 * decimal_f64(m)).round_ties_even().clamp(0.0, 255.0) as u8;
            }
            resize_keep_ratio(w, h, (sh, sw), 1.0)
        }
        CropMode::Center if sh == sw => resize_short_side(w, h, sh),
        CropMode::Center => resize_keep_ratio(w, h, (sh, sw), 0.0),
    };
    let (rw, rh) = resized;
    if rw == 0 || rh == 0 || rw > MAX_RESIZED_SIDE || rh > MAX_RESIZED_SIDE {
        return Err(Error::invalid_argument(format!(
            "a {width}x{height} image would be resized to {rw}x{rh} for a {th}x{tw} input; \
             the aspect ratio is too extreme"
        )));
    }
    Ok(Plan {
        resized,
        left: crop_origin(rw, tw as u64),
        top: crop_origin(rh, th as u64),
        fill,
    })
}

/// Pillow's `convert("L")` from RGB: ITU-R 601-2 luma in 16-bit fixed point, rounded.
fn rgb_to_luma(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3)
        .map(|p| {
            ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
        })
        .collect()
}

/// The 8-bit image timm hands to `ToTensor`: HWC, `input_size[0]` channels (RGB, or
/// Pillow's `L` for one-channel models), `input_size[1] x input_size[2]` pixels.
pub fn eval_crop(cfg: &DataConfig, img: &RgbImage) -> Result<Vec<u8>> {
    cfg.validate()?;
    img.check()?;
    let [c, th, tw] = cfg.input_size;
    let p = plan(cfg, img.width, img.height)?;
    let luma;
    let plane = Plane {
        data: if c == 1 {
            luma = rgb_to_luma(&img.data);
            &luma
        } else {
            &img.data
        },
        width: img.width as usize,
        height: img.height as usize,
        channels: c,
    };

    // The part of the crop window that lies on the resized image; the rest is padding.
    let (rw, rh) = (p.resized.0 as i64, p.resized.1 as i64);
    let x0 = p.left.clamp(0, rw);
    let x1 = (p.left + tw as i64).clamp(0, rw);
    let y0 = p.top.clamp(0, rh);
    let y1 = (p.top + th as i64).clamp(0, rh);
    let (xr, yr) = (x0 as usize..x1 as usize, y0 as usize..y1 as usize);
    let region = resize_region(
        &plane,
        rw as usize,
        rh as usize,
        cfg.interpolation,
        xr.clone(),
        yr.clone(),
    );

    let mut out = Vec::with_capacity(th * tw * c);
    for _ in 0..th * tw {
        out.extend_from_slice(&p.fill[..c]);
    }
    // Output pixel (y, x) shows resized pixel (y + top, x + left).
    let (dx, dy) = ((x0 - p.left) as usize, (y0 - p.top) as usize);
    let row_len = xr.len() * c;
    if row_len > 0 {
        for (i, src) in region.chunks_exact(row_len).enumerate() {
            let start = ((dy + i) * tw + dx) * c;
            out[start..start + row_len].copy_from_slice(src);
        }
    }
    Ok(out)
}

/// Runs timm's eval transform on `img` and writes the normalised CHW float tensor to `out`,
/// which must hold exactly `C * H * W` values of `cfg.input_size`.
pub fn preprocess(cfg: &DataConfig, img: &RgbImage, out: &mut [f32]) -> Result<()> {
    cfg.validate()?;
    let needed = cfg.output_len();
    if out.len() != needed {
        let [c, h, w] = cfg.input_size;
        return Err(Error::buffer_too_small(format!(
            "output buffer holds {} floats; a {c}x{h}x{w} input needs exactly {needed}",
            out.len()
        )));
    }
    let crop = eval_crop(cfg, img)?;
    normalize(cfg, &crop, out);
    Ok(())
}

/// `ToTensor` then `Normalize`, in float32 with torchvision's operation order:
/// `(u8 / 255 - mean) / std`, each step rounded to f32.
fn normalize(cfg: &DataConfig, hwc: &[u8], out: &mut [f32]) {
    let c = cfg.channels();
    let plane = cfg.input_size[1] * cfg.input_size[2];
    for ch in 0..c {
        let (m, s) = (cfg.mean[ch], cfg.std[ch]);
        // A 256-entry table: identical values, one division per level instead of per pixel.
        let lut: [f32; 256] = std::array::from_fn(|v| (v as f32 / 255.0 - m) / s);
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for (o, px) in dst.iter_mut().zip(hwc.chunks_exact(c)) {
            *o = lut[px[ch] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round_of_halves() {
        // Python: [round(n / 2) for n in (0, 1, 2, 3, 5, 7)] == [0, 0, 1, 2, 2, 4]
        let got: Vec<u64> = [0, 1, 2, 3, 5, 7]
            .iter()
            .map(|&n| half_round_even(n))
            .collect();
        assert_eq!(got, vec![0, 0, 1, 2, 2, 4]);
    }
}
