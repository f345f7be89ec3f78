//! Parity of `timm::preprocess` with timm 1.0.31's eval transform, against the references
//! that `scripts/fixtures/preprocess.py` generated with the real timm / torchvision / Pillow.

use std::path::{Path, PathBuf};

use serde_json::Value;
use timm::preprocess::{
    decode_bytes, decode_file, eval_crop, preprocess, resize, CropMode, DataConfig, ImageView,
    Interpolation, PixelFormat, RgbImage,
};
use timm::TimmStatus;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases_json() -> Value {
    let text = std::fs::read_to_string(fixtures().join("preprocess/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f32x3(v: &Value) -> [f32; 3] {
    let a: Vec<f32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    // One-channel configs carry one value; only element 0 is read for them.
    [a[0], *a.get(1).unwrap_or(&a[0]), *a.get(2).unwrap_or(&a[0])]
}

fn data_config(case: &Value) -> DataConfig {
    let d = &case["data_config"];
    let size: Vec<usize> = d["input_size"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    DataConfig {
        input_size: [size[0], size[1], size[2]],
        interpolation: Interpolation::from_timm(d["interpolation"].as_str().unwrap()).unwrap(),
        crop_pct: d["crop_pct"].as_f64().unwrap(),
        crop_mode: CropMode::from_timm(d["crop_mode"].as_str().unwrap()).unwrap(),
        mean: f32x3(&d["mean"]),
        std: f32x3(&d["std"]),
    }
}

fn read_ref(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("preprocess").join(name)).unwrap()
}

fn read_f32(name: &str) -> Vec<f32> {
    read_ref(name)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// `ToTensor` + `Normalize` of timm's uint8 crop; the generator asserted this equals timm's
/// float output bit for bit, so it is the expected tensor for every case.
fn expected_tensor(cfg: &DataConfig, hwc: &[u8]) -> Vec<f32> {
    let [c, h, w] = cfg.input_size;
    let mut out = vec![0f32; c * h * w];
    for ch in 0..c {
        for i in 0..h * w {
            out[ch * h * w + i] = (hwc[i * c + ch] as f32 / 255.0 - cfg.mean[ch]) / cfg.std[ch];
        }
    }
    out
}

fn max_abs_diff_u8(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn max_abs_diff_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// First differing pixel, for a readable failure.
fn first_mismatch(got: &[u8], want: &[u8], shape: [usize; 3]) -> String {
    let [_, w, c] = shape;
    match got.iter().zip(want).position(|(a, b)| a != b) {
        None => "none".into(),
        Some(i) => format!(
            "at y={} x={} c={}: got {} want {} ({} of {} bytes differ)",
            i / c / w,
            (i / c) % w,
            i % c,
            got[i],
            want[i],
            got.iter().zip(want).filter(|(a, b)| a != b).count(),
            got.len()
        ),
    }
}

fn check_case(case: &Value, img: &RgbImage) {
    let name = case["name"].as_str().unwrap();
    let cfg = data_config(case);
    let shape: Vec<usize> = case["shape_hwc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let want = read_ref(case["u8"].as_str().unwrap());
    assert_eq!(
        want.len(),
        shape.iter().product::<usize>(),
        "{name}: reference size"
    );

    let got = eval_crop(&cfg, img).unwrap();
    assert!(
        got == want,
        "{name}: uint8 crop differs from timm, first {}",
        first_mismatch(&got, &want, [shape[0], shape[1], shape[2]])
    );

    let mut tensor = vec![0f32; cfg.output_len()];
    preprocess(&cfg, img, &mut tensor).unwrap();
    let diff = max_abs_diff_f32(&tensor, &expected_tensor(&cfg, &want));
    assert!(
        diff <= 1e-6,
        "{name}: float output differs from (u8/255-mean)/std by {diff}"
    );
    if let Some(f) = case["f32"].as_str() {
        let timm_out = read_f32(f);
        let diff = max_abs_diff_f32(&tensor, &timm_out);
        assert!(
            diff <= 1e-6,
            "{name}: float output differs from timm's by {diff}"
        );
        eprintln!("{name}: max |ours - timm| float = {diff:e}");
    }
}

#[test]
fn png_cases_match_timm_exactly() {
    let meta = cases_json();
    let mut n = 0;
    for case in meta["cases"].as_array().unwrap() {
        let image = case["image"].as_str().unwrap();
        if !image.ends_with(".png") {
            continue;
        }
        let img = decode_file(&fixtures().join("images").join(image)).unwrap();
        check_case(case, &img);
        n += 1;
    }
    assert!(n >= 10, "only {n} PNG cases found");
}

#[test]
fn jpeg_case_matches_on_pillow_pixels() {
    let meta = cases_json();
    let decoded = &meta["decoded"].as_array().unwrap()[0];
    let image = decoded["image"].as_str().unwrap();
    // Pillow's own decode, stored losslessly: isolates the transform from the JPEG decoder.
    let pillow = decode_file(
        &fixtures()
            .join("preprocess")
            .join(decoded["file"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(pillow.width as u64, decoded["width"].as_u64().unwrap());
    assert_eq!(pillow.height as u64, decoded["height"].as_u64().unwrap());
    let ours = decode_file(&fixtures().join("images").join(image)).unwrap();
    assert_eq!((ours.width, ours.height), (pillow.width, pillow.height));

    let differing = ours
        .data
        .iter()
        .zip(&pillow.data)
        .filter(|(a, b)| a != b)
        .count();
    let mean: f64 = ours
        .data
        .iter()
        .zip(&pillow.data)
        .map(|(a, b)| a.abs_diff(*b) as f64)
        .sum::<f64>()
        / ours.data.len() as f64;
    eprintln!(
        "{image}: decoder vs Pillow: max |diff| = {}, mean |diff| = {mean:.4}, {differing} of {} samples differ",
        max_abs_diff_u8(&ours.data, &pillow.data),
        ours.data.len()
    );

    let mut found = 0;
    for case in meta["cases"].as_array().unwrap() {
        if case["image"].as_str().unwrap() != image {
            continue;
        }
        found += 1;
        check_case(case, &pillow);
        let cfg = data_config(case);
        let want = read_ref(case["u8"].as_str().unwrap());
        let got = eval_crop(&cfg, &ours).unwrap();
        let mut tensor = vec![0f32; cfg.output_len()];
        preprocess(&cfg, &ours, &mut tensor).unwrap();
        eprintln!(
            "{}: transform on our decode vs timm: max |diff| uint8 = {}, float = {:e}",
            case["name"].as_str().unwrap(),
            max_abs_diff_u8(&got, &want),
            max_abs_diff_f32(&tensor, &expected_tensor(&cfg, &want))
        );
    }
    assert!(found > 0, "no case uses {image}");
}

fn chelsea() -> RgbImage {
    decode_file(&fixtures().join("images/chelsea.png")).unwrap()
}

/// Lays `rgb` out in `format` with `pad` junk bytes after each row.
fn layout(rgb: &RgbImage, format: PixelFormat, pad: usize) -> (Vec<u8>, usize) {
    let bpp = format.bytes_per_pixel();
    let stride = rgb.width as usize * bpp + pad;
    let mut buf = Vec::with_capacity(stride * rgb.height as usize);
    for row in rgb.data.chunks_exact(rgb.width as usize * 3) {
        for p in row.chunks_exact(3) {
            match format {
                PixelFormat::Rgb8 => buf.extend_from_slice(p),
                PixelFormat::Bgr8 => buf.extend_from_slice(&[p[2], p[1], p[0]]),
                PixelFormat::Rgba8 => buf.extend_from_slice(&[p[0], p[1], p[2], 77]),
                PixelFormat::Bgra8 => buf.extend_from_slice(&[p[2], p[1], p[0], 200]),
                PixelFormat::Gray8 => buf.push(p[1]),
            }
        }
        buf.extend((0..pad).map(|i| (i * 37) as u8));
    }
    (buf, stride)
}

#[test]
fn pixel_formats_with_padded_rows_match_rgb() {
    let rgb = chelsea();
    let cfg = DataConfig::default();
    let run = |img: &RgbImage| {
        let mut out = vec![0f32; cfg.output_len()];
        preprocess(&cfg, img, &mut out).unwrap();
        out
    };
    let reference = run(&rgb);
    for format in [
        PixelFormat::Rgb8,
        PixelFormat::Bgr8,
        PixelFormat::Rgba8,
        PixelFormat::Bgra8,
    ] {
        for pad in [0, 13] {
            let (buf, stride) = layout(&rgb, format, pad);
            let view = ImageView {
                data: &buf,
                width: rgb.width,
                height: rgb.height,
                stride,
                format,
            };
            let converted = view.to_rgb().unwrap();
            assert_eq!(converted, rgb, "{format:?} pad {pad}");
            assert_eq!(run(&converted), reference, "{format:?} pad {pad}");
        }
    }
    // Packed rows can also be given as stride 0.
    let (buf, _) = layout(&rgb, PixelFormat::Bgra8, 0);
    let view = ImageView {
        data: &buf,
        width: rgb.width,
        height: rgb.height,
        stride: 0,
        format: PixelFormat::Bgra8,
    };
    assert_eq!(view.to_rgb().unwrap(), rgb);

    // Gray8 equals the RGB image with the gray value in every channel.
    let (gray, stride) = layout(&rgb, PixelFormat::Gray8, 5);
    let view = ImageView {
        data: &gray,
        width: rgb.width,
        height: rgb.height,
        stride,
        format: PixelFormat::Gray8,
    };
    let replicated = RgbImage {
        width: rgb.width,
        height: rgb.height,
        data: rgb.data.chunks_exact(3).flat_map(|p| [p[1]; 3]).collect(),
    };
    assert_eq!(run(&view.to_rgb().unwrap()), run(&replicated));

    // A one-channel model sees Pillow's L of a gray image as the gray value itself.
    let gray_cfg = DataConfig {
        input_size: [1, 64, 64],
        ..DataConfig::default()
    };
    let l = eval_crop(&gray_cfg, &replicated).unwrap();
    let rgb_crop = eval_crop(
        &DataConfig {
            input_size: [3, 64, 64],
            ..DataConfig::default()
        },
        &replicated,
    )
    .unwrap();
    assert_eq!(
        l,
        rgb_crop.chunks_exact(3).map(|p| p[0]).collect::<Vec<_>>()
    );
}

#[test]
fn resize_to_same_size_is_a_copy() {
    let rgb = chelsea();
    for f in [
        Interpolation::Nearest,
        Interpolation::Bicubic,
        Interpolation::Lanczos,
    ] {
        assert_eq!(resize(&rgb, rgb.width, rgb.height, f), rgb);
    }
}

fn status<T>(r: timm::Result<T>) -> TimmStatus {
    match r {
        Ok(_) => panic!("expected an error, got Ok"),
        Err(e) => e.status(),
    }
}

#[test]
fn bad_pixel_buffers_are_rejected() {
    let buf = vec![0u8; 300 * 64];
    let view = |w, h, stride, len: usize, format| ImageView {
        data: &buf[..len],
        width: w,
        height: h,
        stride,
        format,
    };
    let invalid = TimmStatus::TIMM_ERR_INVALID_ARGUMENT;
    // Stride shorter than a row.
    assert_eq!(
        status(view(64, 64, 64 * 3 - 1, buf.len(), PixelFormat::Rgb8).to_rgb()),
        invalid
    );
    // Data one byte short of the last row.
    assert_eq!(
        status(view(64, 64, 0, 64 * 64 * 4 - 1, PixelFormat::Rgba8).to_rgb()),
        invalid
    );
    assert_eq!(
        status(view(64, 64, 300, 300 * 63 + 64 * 4 - 1, PixelFormat::Bgra8).to_rgb()),
        invalid
    );
    // Exactly enough: the last row need not be padded.
    assert!(view(64, 64, 300, 300 * 63 + 64 * 4, PixelFormat::Bgra8)
        .to_rgb()
        .is_ok());
    // Zero and oversized sides.
    assert_eq!(
        status(view(0, 64, 0, buf.len(), PixelFormat::Gray8).to_rgb()),
        invalid
    );
    assert_eq!(
        status(view(64, 0, 0, buf.len(), PixelFormat::Gray8).to_rgb()),
        invalid
    );
    assert_eq!(
        status(view(70000, 1, 0, buf.len(), PixelFormat::Gray8).to_rgb()),
        invalid
    );
    // A stride that overflows usize arithmetic.
    assert_eq!(
        status(view(64, 64, usize::MAX / 2, buf.len(), PixelFormat::Gray8).to_rgb()),
        invalid
    );
    // Inconsistent RgbImage.
    assert_eq!(status(RgbImage::new(10, 10, vec![0; 299])), invalid);
    let bad = RgbImage {
        width: 10,
        height: 10,
        data: vec![0; 10],
    };
    let mut out = vec![0f32; DataConfig::default().output_len()];
    assert_eq!(
        status(preprocess(&DataConfig::default(), &bad, &mut out)),
        invalid
    );
}

#[test]
fn bad_configs_are_rejected() {
    let img = chelsea();
    let invalid = TimmStatus::TIMM_ERR_INVALID_ARGUMENT;
    let base = DataConfig::default();
    let bad = [
        DataConfig {
            std: [0.229, f32::NAN, 0.225],
            ..base
        },
        DataConfig {
            std: [0.0, 0.224, 0.225],
            ..base
        },
        DataConfig {
            std: [f32::INFINITY, 0.224, 0.225],
            ..base
        },
        DataConfig {
            mean: [f32::NAN, 0.456, 0.406],
            ..base
        },
        DataConfig {
            input_size: [3, 100_000, 224],
            ..base
        },
        DataConfig {
            input_size: [3, 0, 224],
            ..base
        },
        DataConfig {
            input_size: [2, 224, 224],
            ..base
        },
        DataConfig {
            input_size: [4, 224, 224],
            ..base
        },
        DataConfig {
            crop_pct: 0.0,
            ..base
        },
        DataConfig {
            crop_pct: -0.5,
            ..base
        },
        DataConfig {
            crop_pct: f64::NAN,
            ..base
        },
        DataConfig {
            crop_pct: 10.5,
            ..base
        },
        // 1 / 10 floors to a zero-pixel resize target.
        DataConfig {
            input_size: [3, 1, 1],
            crop_pct: 10.0,
            ..base
        },
    ];
    for cfg in bad {
        assert_eq!(status(cfg.validate()), invalid, "{cfg:?}");
        let mut out = vec![0f32; cfg.output_len()];
        assert_eq!(status(preprocess(&cfg, &img, &mut out)), invalid, "{cfg:?}");
    }
    // One-channel configs only read mean[0] / std[0].
    let gray = DataConfig {
        input_size: [1, 224, 224],
        std: [0.5, f32::NAN, 0.0],
        ..base
    };
    assert!(gray.validate().is_ok());

    // Output buffer of the wrong length, naming the length needed.
    let mut short = vec![0f32; base.output_len() - 1];
    let err = preprocess(&base, &img, &mut short).unwrap_err();
    assert_eq!(err.status(), TimmStatus::TIMM_ERR_BUFFER_TOO_SMALL);
    assert!(
        err.message().contains(&base.output_len().to_string()),
        "{err}"
    );

    // A 60000x1 strip would be resized to 15 million pixels wide for a 224 crop.
    let strip = ImageView {
        data: &[9u8; 60000],
        width: 60000,
        height: 1,
        stride: 0,
        format: PixelFormat::Gray8,
    };
    let mut out = vec![0f32; base.output_len()];
    assert_eq!(
        status(preprocess(&base, &strip.to_rgb().unwrap(), &mut out)),
        invalid
    );
}

#[test]
fn names_parse_like_timm() {
    for f in [
        Interpolation::Nearest,
        Interpolation::Bilinear,
        Interpolation::Bicubic,
        Interpolation::Lanczos,
        Interpolation::Box,
        Interpolation::Hamming,
    ] {
        assert_eq!(Interpolation::from_timm(f.as_str()).unwrap(), f);
    }
    // resolve_data_config treats an empty value as unset and falls back to bicubic / center.
    assert_eq!(
        Interpolation::from_timm("").unwrap(),
        Interpolation::Bicubic
    );
    assert_eq!(CropMode::from_timm("").unwrap(), CropMode::Center);
    assert!(Interpolation::from_timm("random").is_err());
    assert!(Interpolation::from_timm("BICUBIC").is_err());
    assert!(CropMode::from_timm("letterbox").is_err());
    for m in [CropMode::Center, CropMode::Squash, CropMode::Border] {
        assert_eq!(CropMode::from_timm(m.as_str()).unwrap(), m);
    }
}

#[test]
fn undecodable_and_missing_files() {
    let invalid = TimmStatus::TIMM_ERR_INVALID_ARGUMENT;
    assert_eq!(status(decode_bytes(b"")), invalid);
    assert_eq!(status(decode_bytes(b"definitely not an image")), invalid);
    // A PNG signature followed by garbage.
    assert_eq!(
        status(decode_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRgarbage")),
        invalid
    );
    // A truncated PNG (the JPEG decoder, like libjpeg, fills a truncated scan instead).
    let png = std::fs::read(fixtures().join("images/chelsea.png")).unwrap();
    assert_eq!(status(decode_bytes(&png[..png.len() / 3])), invalid);
    let err = decode_file(&fixtures().join("images/no-such-file.png")).unwrap_err();
    assert_eq!(err.status(), TimmStatus::TIMM_ERR_NOT_FOUND);
}

/// Encodes `img` with the `image` crate in the given color type (PNG) for decode tests.
fn encode_png(raw: &[u8], w: u32, h: u32, color: image::ExtendedColorType) -> Vec<u8> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(raw, w, h, color)
        .unwrap();
    out
}

#[test]
fn decoded_layouts_convert_like_pillow_convert_rgb() {
    let rgb = chelsea();
    let (w, h) = (rgb.width, rgb.height);
    let px = || rgb.data.chunks_exact(3);

    // Lossless WebP round-trips the pixels.
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .encode(&rgb.data, w, h, image::ExtendedColorType::Rgb8)
        .unwrap();
    assert!(decode_bytes(&webp).unwrap() == rgb, "lossless WebP");

    // RGBA: alpha is dropped, not blended.
    let rgba: Vec<u8> = px()
        .enumerate()
        .flat_map(|(i, p)| [p[0], p[1], p[2], (i * 7) as u8])
        .collect();
    let png = encode_png(&rgba, w, h, image::ExtendedColorType::Rgba8);
    assert!(decode_bytes(&png).unwrap() == rgb, "RGBA PNG");

    // Gray and gray + alpha: the gray value in all three channels.
    let gray: Vec<u8> = px().map(|p| p[0]).collect();
    let gray_rgb = RgbImage::new(w, h, gray.iter().flat_map(|&v| [v; 3]).collect()).unwrap();
    assert_eq!(
        decode_bytes(&encode_png(&gray, w, h, image::ExtendedColorType::L8)).unwrap(),
        gray_rgb
    );
    let la: Vec<u8> = gray.iter().flat_map(|&v| [v, 255 - v]).collect();
    assert_eq!(
        decode_bytes(&encode_png(&la, w, h, image::ExtendedColorType::La8)).unwrap(),
        gray_rgb
    );

    // 16-bit samples keep their high byte, as Pillow's PNG reader does (the encoder takes
    // native-endian u16 samples).
    let rgb16: Vec<u8> = rgb
        .data
        .iter()
        .flat_map(|&v| (u16::from(v) << 8 | u16::from(v ^ 0x5a)).to_ne_bytes())
        .collect();
    let png16 = encode_png(&rgb16, w, h, image::ExtendedColorType::Rgb16);
    assert!(decode_bytes(&png16).unwrap() == rgb, "16-bit PNG");
}

/// BMP, GIF (first frame) and TIFF decode to exactly what timm's loader gets from Pillow
/// (`Image.open(path).convert("RGB")`), on files Pillow wrote (scripts/fixtures/image_formats.py).
#[test]
fn bmp_gif_and_tiff_decode_like_pillow() {
    let dir = fixtures().join("images/formats");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let cases = meta["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let file = case["file"].as_str().unwrap();
        let img = decode_file(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            (img.width as u64, img.height as u64),
            (
                case["width"].as_u64().unwrap(),
                case["height"].as_u64().unwrap()
            ),
            "{file}"
        );
        let want = std::fs::read(dir.join(format!("{file}.rgb"))).unwrap();
        let differ = img.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differ, 0, "{file}: {differ} bytes differ from Pillow");
    }
}

/// Pillow raises "image file is truncated" for a JPEG that ends before its end-of-image
/// marker (even one missing only the marker), and accepts bytes after it.
#[test]
fn truncated_jpegs_are_refused_as_pillow_does() {
    let jpeg = std::fs::read(fixtures().join("images/rocket.jpg")).unwrap();
    assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9]);
    decode_bytes(&jpeg).unwrap();
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(b"trailing bytes after EOI");
    decode_bytes(&trailing).unwrap();
    for cut in [jpeg.len() / 2, jpeg.len() - 2, jpeg.len() - 1] {
        let e = decode_bytes(&jpeg[..cut]).unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
        assert!(e.message().contains("image file is truncated"), "{e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let half = dir.path().join("half.jpg");
    std::fs::write(&half, &jpeg[..jpeg.len() / 2]).unwrap();
    assert!(decode_file(&half).is_err());
    let opts = timm::preprocess::DecodeOptions {
        allow_truncated: true,
    };
    let img = timm::preprocess::decode_file_with(&half, opts).unwrap();
    assert!(img.width > 0 && img.height > 0);
}
