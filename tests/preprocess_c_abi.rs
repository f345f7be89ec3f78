//! timm_preprocess through the C ABI equals timm's eval transform: for each PNG case of the
//! preprocessing references, a model folder whose config.json carries that case's
//! pretrained_cfg is created, and its timm_preprocess output is compared with timm's.

mod common;
use common::*;

use std::ffi::CString;
use timm::ffi::*;
use timm::TimmStatus;

fn png_rgb(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let img = timm::preprocess::decode_file(path).unwrap();
    (img.width, img.height, img.data)
}

/// A native ResNet folder whose pretrained_cfg is replaced by `pcfg` (ResNet takes any input size).
fn folder_with_cfg(tmp: &std::path::Path, pcfg: &serde_json::Value) -> String {
    let f = fixture("resnet18-tiny");
    let src = f.folder("native").unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let p = cfg["pretrained_cfg"].as_object_mut().unwrap();
    for k in [
        "input_size",
        "interpolation",
        "crop_pct",
        "crop_mode",
        "mean",
        "std",
        "test_input_size",
        "test_crop_pct",
    ] {
        p.remove(k);
    }
    for (k, v) in pcfg.as_object().unwrap() {
        p.insert(k.clone(), v.clone());
    }
    std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), tmp.join("model.safetensors")).unwrap();
    format!("local:{}", tmp.display())
}

#[test]
fn timm_preprocess_matches_timm_for_every_png_case() {
    let dir = fixtures_dir().join("preprocess");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let image = case["image"].as_str().unwrap();
        let channels = case["data_config"]["input_size"][0].as_u64().unwrap();
        if !image.ends_with(".png") || channels != 3 {
            continue; // JPEG decoders differ (measured in preprocess_parity); ResNet fixtures are RGB.
        }
        let tmp = tempfile::tempdir().unwrap();
        let spec = folder_with_cfg(tmp.path(), &case["pretrained_cfg"]);
        let use_test = if case["use_test_size"].as_bool().unwrap() {
            "true"
        } else {
            "false"
        };
        let m = CModel::create(&spec, true, &[("use_test_size", use_test)])
            .unwrap_or_else(|e| panic!("{}: {e:?}", case["name"]));
        let (w, h, rgb) = png_rgb(&fixtures_dir().join("images").join(image));
        let img = TimmImage {
            data: rgb.as_ptr(),
            width: w,
            height: h,
            stride: 0,
            format: TimmPixelFormat::TIMM_PIXEL_RGB8,
        };
        let [ih, iw] = [
            case["shape_hwc"][0].as_u64().unwrap() as usize,
            case["shape_hwc"][1].as_u64().unwrap() as usize,
        ];
        let mut out = vec![0f32; 3 * ih * iw];
        let st = timm_preprocess(m.0, &img, out.as_mut_ptr(), out.len());
        assert_eq!(
            st,
            TimmStatus::TIMM_OK,
            "{}: {}",
            case["name"],
            last_error()
        );
        // timm's tensor: the stored uint8 crop (HWC) through ToTensor + Normalize in float32.
        let u8s = std::fs::read(dir.join(case["u8"].as_str().unwrap())).unwrap();
        let mean: Vec<f32> = case["data_config"]["mean"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let std: Vec<f32> = case["data_config"]["std"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let mut maxd = 0f32;
        for c in 0..3 {
            for i in 0..ih * iw {
                let want = (u8s[i * 3 + c] as f32 / 255.0 - mean[c]) / std[c];
                maxd = maxd.max((out[c * ih * iw + i] - want).abs());
            }
        }
        assert!(maxd <= 1e-6, "{}: max |diff| {maxd}", case["name"]);
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} PNG cases checked");
    eprintln!("{checked} PNG cases equal timm's transform through timm_preprocess");
}

#[test]
fn preprocess_and_classify_reject_bad_images_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = folder_with_cfg(tmp.path(), &serde_json::json!({"input_size": [3, 32, 32]}));
    let m = CModel::create(&spec, true, &[]).unwrap();
    let px = vec![0u8; 64 * 64 * 4];
    let mut out = vec![0f32; 3 * 32 * 32];
    let good = TimmImage {
        data: px.as_ptr(),
        width: 64,
        height: 64,
        stride: 0,
        format: TimmPixelFormat::TIMM_PIXEL_RGB8,
    };
    assert_eq!(
        timm_preprocess(m.0, &good, out.as_mut_ptr(), out.len()),
        TimmStatus::TIMM_OK
    );
    let cases: Vec<(TimmImage, usize, &str)> = vec![
        (TimmImage { stride: 10, ..good }, out.len(), "stride"),
        (
            TimmImage {
                data: std::ptr::null(),
                ..good
            },
            out.len(),
            "NULL",
        ),
        (TimmImage { width: 0, ..good }, out.len(), "empty"),
        (good, out.len() - 1, "3072"),
    ];
    for (img, len, needle) in cases {
        let st = timm_preprocess(m.0, &img, out.as_mut_ptr(), len);
        assert_ne!(st, TimmStatus::TIMM_OK);
        assert!(last_error().contains(needle), "{needle}: {}", last_error());
    }
    // A pixel format value outside the enum is an error, not undefined behaviour.
    let mut raw = [0u8; std::mem::size_of::<TimmImage>()];
    unsafe {
        std::ptr::copy_nonoverlapping(
            &good as *const TimmImage as *const u8,
            raw.as_mut_ptr(),
            raw.len(),
        )
    };
    let fmt_off = std::mem::offset_of!(TimmImage, format);
    raw[fmt_off..fmt_off + 4].copy_from_slice(&99u32.to_ne_bytes());
    let st = timm_preprocess(
        m.0,
        raw.as_ptr() as *const TimmImage,
        out.as_mut_ptr(),
        out.len(),
    );
    assert_eq!(st, TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("pixel format 99"), "{}", last_error());

    let mut top = Vec::with_capacity(3);
    let path = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
    let missing = path(&tmp.path().join("missing.png"));
    assert_eq!(
        timm_classify_file(m.0, missing.as_ptr(), 3, top.as_mut_ptr()),
        TimmStatus::TIMM_ERR_NOT_FOUND
    );
    let junk = tmp.path().join("junk.png");
    std::fs::write(&junk, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_eq!(
        timm_classify_file(m.0, path(&junk).as_ptr(), 3, top.as_mut_ptr()),
        TimmStatus::TIMM_ERR_INVALID_ARGUMENT
    );
    let chelsea = path(&fixtures_dir().join("images/chelsea.png"));
    assert_eq!(
        timm_classify_file(m.0, chelsea.as_ptr(), 0, top.as_mut_ptr()),
        TimmStatus::TIMM_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        timm_classify_file(m.0, chelsea.as_ptr(), 1000, top.as_mut_ptr()),
        TimmStatus::TIMM_ERR_INVALID_ARGUMENT
    );
    let _ = &mut top;
}

#[test]
fn a_batch_classifies_like_single_images_and_formats_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = folder_with_cfg(tmp.path(), &serde_json::json!({"input_size": [3, 48, 48]}));
    let m = CModel::create(&spec, true, &[]).unwrap();
    let (w, h, rgb) = png_rgb(&fixtures_dir().join("images/coffee.png"));
    let (w2, h2, rgb2) = png_rgb(&fixtures_dir().join("images/astronaut.png"));
    // The coffee image again as BGRA with a padded stride, as a camera buffer would be.
    let stride = w as usize * 4 + 12;
    let mut bgra = vec![0u8; stride * h as usize];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let s = &rgb[(y * w as usize + x) * 3..][..3];
            bgra[y * stride + x * 4..][..4].copy_from_slice(&[s[2], s[1], s[0], 255]);
        }
    }
    let images = [
        TimmImage {
            data: rgb.as_ptr(),
            width: w,
            height: h,
            stride: 0,
            format: TimmPixelFormat::TIMM_PIXEL_RGB8,
        },
        TimmImage {
            data: rgb2.as_ptr(),
            width: w2,
            height: h2,
            stride: 0,
            format: TimmPixelFormat::TIMM_PIXEL_RGB8,
        },
        TimmImage {
            data: bgra.as_ptr(),
            width: w,
            height: h,
            stride,
            format: TimmPixelFormat::TIMM_PIXEL_BGRA8,
        },
    ];
    let k = 3;
    let mut batch: Vec<TimmClass> = Vec::with_capacity(images.len() * k);
    assert_eq!(
        timm_classify(m.0, images.as_ptr(), images.len(), k, batch.as_mut_ptr()),
        TimmStatus::TIMM_OK,
        "{}",
        last_error()
    );
    unsafe { batch.set_len(images.len() * k) };
    for (i, img) in images.iter().enumerate() {
        let mut one: Vec<TimmClass> = Vec::with_capacity(k);
        assert_eq!(
            timm_classify(m.0, img, 1, k, one.as_mut_ptr()),
            TimmStatus::TIMM_OK
        );
        unsafe { one.set_len(k) };
        for j in 0..k {
            assert_eq!(one[j].index, batch[i * k + j].index);
            assert!((one[j].probability - batch[i * k + j].probability).abs() < 1e-5);
        }
        assert!(batch[i * k].probability >= batch[i * k + 1].probability);
    }
    for j in 0..k {
        assert_eq!(
            batch[j].index,
            batch[2 * k + j].index,
            "BGRA with stride must equal RGB"
        );
        assert_eq!(batch[j].logit, batch[2 * k + j].logit);
    }
}

#[test]
fn use_test_size_builds_the_graph_at_the_test_size() {
    // resnet18-tiny's config: input_size 32, test_input_size 288 (as timm's resnet cfgs have).
    let f = fixture("resnet18-tiny");
    let m = CModel::create(&f.spec("native"), true, &[("use_test_size", "true")]).unwrap();
    let mut chw = [0i64; 3];
    assert_eq!(
        timm_model_input_size(m.0, chw.as_mut_ptr()),
        TimmStatus::TIMM_OK
    );
    assert_eq!(chw, [3, 288, 288]);
    let path = CString::new(fixtures_dir().join("images/coffee.png").to_str().unwrap()).unwrap();
    let mut top: Vec<TimmClass> = Vec::with_capacity(2);
    assert_eq!(
        timm_classify_file(m.0, path.as_ptr(), 2, top.as_mut_ptr()),
        TimmStatus::TIMM_OK,
        "{}",
        last_error()
    );
}
