//! Pillow's `Image.resize` for 8-bit images (Pillow 13, `libImaging/Resample.c` and the
//! nearest-neighbour branch of `_imaging.c::_resize` / `Geometry.c::ImagingScaleAffine`).
//!
//! Convolution filters are separable: a horizontal and a vertical pass through an 8-bit
//! temporary, each skipped when that side keeps its size. The horizontal pass runs first
//! unless the height shrinks much more than the width (Pillow 13's order rule). Coefficients are computed in
//! `f64`, normalised to sum to one, then quantised to 22-bit fixed point; each pass
//! accumulates in `i32` from a rounding bias and clamps to `0..=255`. Downscaling widens
//! the filter support by the scale factor (antialiasing).
//!
//! Every output pixel depends only on its own coefficient row, so [`resize_region`] can
//! compute just the window that the center crop keeps and still match Pillow exactly.

use std::ops::Range;

use super::{Interpolation, RgbImage};

/// `32 - 8 - 2`: 8 bits of pixel, 2 bits of headroom for negative lobes and overshoot.
const PRECISION_BITS: u32 = 22;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// An 8-bit image with 1 or 3 interleaved channels.
#[derive(Clone, Copy)]
pub(crate) struct Plane<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub channels: usize,
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * std::f64::consts::PI;
    // Pillow writes these constants as C `float` literals (0.54f, 0.46f); keep their rounding.
    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// The filter function and its support radius at scale 1.
fn filter_of(f: Interpolation) -> (fn(f64) -> f64, f64) {
    match f {
        Interpolation::Box => (box_filter, 0.5),
        Interpolation::Bilinear => (bilinear_filter, 1.0),
        Interpolation::Hamming => (hamming_filter, 1.0),
        Interpolation::Bicubic => (bicubic_filter, 2.0),
        Interpolation::Lanczos => (lanczos_filter, 3.0),
        Interpolation::Nearest => unreachable!("nearest does not use convolution"),
    }
}

/// Fixed-point coefficients for a range of output positions along one axis.
struct Coeffs {
    /// Per output position: first input index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `bounds.len() * ksize` coefficients, row `i` holding output position `range.start + i`.
    k: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (min, n) = self.bounds[i];
        (min, &self.k[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` with box `(0, in_size)`,
/// evaluated only for output positions in `range`.
fn precompute(
    in_size: usize,
    out_size: usize,
    filter: Interpolation,
    range: Range<usize>,
) -> Coeffs {
    let (func, base_support) = filter_of(filter);
    // Pillow keeps the box in C `float`; `in1 - in0` is exact for the sizes we allow.
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = base_support * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(range.len());
    let mut k = vec![0i32; range.len() * ksize];
    let mut w = vec![0f64; ksize];
    for (i, xx) in range.enumerate() {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        // C `(int)` truncates toward zero; both ends are then clamped to the image.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        // Never more than ksize taps; the `min` only guards the slice below.
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w.iter_mut().enumerate().take(n) {
            *wx = func(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        let row = &mut k[i * ksize..i * ksize + n];
        for (dst, &wx) in row.iter_mut().zip(&w[..n]) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            let scaled = v * (1u32 << PRECISION_BITS) as f64;
            *dst = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { bounds, k, ksize }
}

/// Pillow's `clip8`: arithmetic shift then clamp (its lookup table saturates the same way).
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass: each row of `src` (rows `rows`), output columns given by `co`, into
/// `out` (packed). `src` rows start at input column `col0`.
fn horizontal<const C: usize>(
    src: &Rows,
    col0: usize,
    rows: Range<usize>,
    co: &Coeffs,
    out: &mut [u8],
) {
    let out_stride = co.bounds.len() * C;
    for (ri, y) in rows.enumerate() {
        let srow = src.row(y);
        let orow = &mut out[ri * out_stride..(ri + 1) * out_stride];
        for (i, opx) in orow.chunks_exact_mut(C).enumerate() {
            let (xmin, k) = co.taps(i);
            let px = &srow[(xmin - col0) * C..(xmin - col0 + k.len()) * C];
            let mut ss = [HALF; C];
            for (&kv, p) in k.iter().zip(px.chunks_exact(C)) {
                for c in 0..C {
                    ss[c] += p[c] as i32 * kv;
                }
            }
            for c in 0..C {
                opx[c] = clip8(ss[c]);
            }
        }
    }
}

/// Rows of an image or of a window of it: row `y` is `data[(y - first) * stride + offset..][..len]`.
struct Rows<'a> {
    data: &'a [u8],
    first: usize,
    stride: usize,
    offset: usize,
    len: usize,
}

impl Rows<'_> {
    #[inline]
    fn row(&self, y: usize) -> &[u8] {
        let start = (y - self.first) * self.stride + self.offset;
        &self.data[start..start + self.len]
    }
}

/// Vertical pass over whole rows; accumulating row by row gives the same integer sums as
/// Pillow's per-pixel loop (addition order does not matter, no overflow) and vectorises.
fn vertical(src: &Rows, co: &Coeffs, out: &mut [u8]) {
    let mut acc = vec![0i32; src.len];
    for (i, orow) in out.chunks_exact_mut(src.len).enumerate() {
        let (ymin, k) = co.taps(i);
        acc.fill(HALF);
        for (t, &kv) in k.iter().enumerate() {
            for (a, &p) in acc.iter_mut().zip(src.row(ymin + t)) {
                *a += p as i32 * kv;
            }
        }
        for (o, &a) in orow.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

/// Resizes `src` to `out_w x out_h` as Pillow would, returning only the window
/// `xr x yr` of the result (packed, `src.channels` per pixel).
pub(crate) fn resize_region(
    src: &Plane,
    out_w: usize,
    out_h: usize,
    filter: Interpolation,
    xr: Range<usize>,
    yr: Range<usize>,
) -> Vec<u8> {
    assert!(src.channels == 1 || src.channels == 3, "1 or 3 channels");
    assert!(
        src.width > 0 && src.height > 0 && out_w > 0 && out_h > 0,
        "empty image"
    );
    assert!(
        xr.end <= out_w && yr.end <= out_h,
        "window outside the resized image"
    );
    assert_eq!(src.data.len(), src.width * src.height * src.channels);
    let ch = src.channels;
    let (rw, rh) = (xr.len(), yr.len());
    let mut out = vec![0u8; rw * rh * ch];
    if rw == 0 || rh == 0 {
        return out;
    }

    // Same size: Pillow (and torchvision before it) returns a copy.
    if out_w == src.width && out_h == src.height {
        for (i, y) in yr.enumerate() {
            let s = (y * src.width + xr.start) * ch;
            out[i * rw * ch..(i + 1) * rw * ch].copy_from_slice(&src.data[s..s + rw * ch]);
        }
        return out;
    }

    if filter == Interpolation::Nearest {
        nearest(src, out_w, out_h, xr, yr, &mut out);
        return out;
    }

    let need_h = out_w != src.width;
    let need_v = out_h != src.height;
    let hco = need_h.then(|| precompute(src.width, out_w, filter, xr.clone()));
    let vco = need_v.then(|| precompute(src.height, out_h, filter, yr.clone()));
    let whole = Rows {
        data: src.data,
        first: 0,
        stride: src.width * ch,
        offset: 0,
        len: src.width * ch,
    };
    let h_pass = |src: &Rows, col0: usize, rows: Range<usize>, co: &Coeffs, out: &mut [u8]| match ch
    {
        1 => horizontal::<1>(src, col0, rows, co, out),
        _ => horizontal::<3>(src, col0, rows, co, out),
    };

    match (hco, vco) {
        (Some(h), None) => h_pass(&whole, 0, yr, &h, &mut out),
        (None, Some(v)) => {
            let window = Rows {
                offset: xr.start * ch,
                len: rw * ch,
                ..whole
            };
            vertical(&window, &v, &mut out);
        }
        (Some(h), Some(v)) => {
            // Pillow 13 runs the vertical pass first when the height shrinks by more than
            // twice as many pixels as the width does; the 8-bit rounding between the passes
            // makes the order visible, so follow it.
            let (in_w, in_h) = (src.width as i64, src.height as i64);
            let vertical_first =
                out_h < src.height && in_h - out_h as i64 > 2 * (in_w - out_w as i64);
            if vertical_first {
                let cols = span(&h);
                let mut temp = vec![0u8; rh * cols.len() * ch];
                let window = Rows {
                    offset: cols.start * ch,
                    len: cols.len() * ch,
                    ..whole
                };
                vertical(&window, &v, &mut temp);
                let temp_rows = Rows {
                    data: &temp,
                    first: 0,
                    stride: cols.len() * ch,
                    offset: 0,
                    len: cols.len() * ch,
                };
                h_pass(&temp_rows, cols.start, 0..rh, &h, &mut out);
            } else {
                let rows = span(&v);
                let mut temp = vec![0u8; rows.len() * rw * ch];
                h_pass(&whole, 0, rows.clone(), &h, &mut temp);
                let temp_rows = Rows {
                    data: &temp,
                    first: rows.start,
                    stride: rw * ch,
                    offset: 0,
                    len: rw * ch,
                };
                vertical(&temp_rows, &v, &mut out);
            }
        }
        (None, None) => unreachable!("same-size resize is handled above"),
    }
    out
}

/// The input indices that a set of output positions reads.
fn span(co: &Coeffs) -> Range<usize> {
    let first = co.bounds.iter().map(|b| b.0).min().unwrap_or(0);
    let last = co.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(first);
    first..last.max(first)
}

/// Pillow's NEAREST resize: an affine scale (`ImagingScaleAffine`) that samples at
/// `(i + 0.5) * in / out`, accumulated by repeated addition exactly as the C loop does.
/// Positions falling outside the source are left 0, as Pillow fills them.
fn nearest(
    src: &Plane,
    out_w: usize,
    out_h: usize,
    xr: Range<usize>,
    yr: Range<usize>,
    out: &mut [u8],
) {
    // C `(int)` of a non-negative double, -1 for negatives (Geometry.c `COORD`).
    fn coord(v: f64) -> i64 {
        if v < 0.0 {
            -1
        } else {
            v as i64
        }
    }
    fn positions(in_size: usize, out_size: usize, r: &Range<usize>) -> Vec<Option<usize>> {
        let a = (in_size as f32 - 0.0f32) as f64 / out_size as f64;
        let mut pos = Vec::with_capacity(r.len());
        let mut o = 0.0 + a * 0.5;
        for i in 0..r.end {
            if i >= r.start {
                let c = coord(o);
                pos.push((c >= 0 && (c as usize) < in_size).then_some(c as usize));
            }
            o += a;
        }
        pos
    }
    let ch = src.channels;
    let xs = positions(src.width, out_w, &xr);
    let ys = positions(src.height, out_h, &yr);
    let rw = xr.len();
    for (orow, y) in out.chunks_exact_mut(rw * ch).zip(ys) {
        let Some(y) = y else { continue };
        let srow = &src.data[y * src.width * ch..(y + 1) * src.width * ch];
        for (opx, x) in orow.chunks_exact_mut(ch).zip(&xs) {
            if let Some(x) = *x {
                opx.copy_from_slice(&srow[x * ch..(x + 1) * ch]);
            }
        }
    }
}

/// Resizes an RGB image to `width x height` exactly as Pillow's `Image.resize` does
/// for an RGB image with the given filter.
///
/// # Panics
/// If `width` or `height` is 0, or `img` is empty or its buffer length is not
/// `width * height * 3` (Pillow raises in the same cases).
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Interpolation) -> RgbImage {
    if let Err(e) = img.check() {
        panic!("resize: {e}");
    }
    let (w, h) = (width as usize, height as usize);
    let plane = Plane {
        data: &img.data,
        width: img.width as usize,
        height: img.height as usize,
        channels: 3,
    };
    let data = resize_region(&plane, w, h, filter, 0..w, 0..h);
    RgbImage {
        width,
        height,
        data,
    }
}
