//! backend=openvino through the C ABI: fp32 parity with timm on every native fixture, bf16 on
//! the real EfficientNet-Lite0 demo, threads sharing one compiled model, and the errors
//! (missing runtime, bf16 on a CPU without it, unknown device, reduced precision on ONNX
//! Runtime's CPU provider). Needs scripts/fetch-openvino (scripts/test runs it).

mod common;
use common::*;

use std::ffi::{CStr, CString};
use std::path::Path;
use timm::ffi::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// Points the library at the project's OpenVINO (scripts/fetch-openvino) unless the caller chose one.
fn init_openvino() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    init_runtime();
    ONCE.call_once(|| {
        if std::env::var_os("TIMM_OPENVINO_LIBRARY").is_none() {
            let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".openvino/libopenvino_c.so.2641");
            assert!(
                lib.exists(),
                "OpenVINO is missing: run scripts/fetch-openvino (or scripts/test, which does)"
            );
            std::env::set_var("TIMM_OPENVINO_LIBRARY", lib);
        }
    });
}

fn ov(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("backend", "openvino"), ("graph", "native")];
    v.extend_from_slice(extra);
    v
}

fn providers(m: &CModel) -> String {
    // SAFETY: the model is live; the string is owned by it.
    unsafe { CStr::from_ptr(timm_model_providers(m.0)) }
        .to_string_lossy()
        .into_owned()
}

fn cpu_has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16") || {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        cpuinfo.contains(" amx_bf16")
    }
}

#[test]
fn fp32_matches_timm_on_every_native_fixture() {
    init_openvino();
    let all = fixtures();
    let native: Vec<&Fixture> = all
        .iter()
        .filter(|f| f.folder("native").is_some())
        .collect();
    assert!(native.len() >= 40, "only {} native fixtures", native.len());
    for f in native {
        check_fixture(f, "native", &ov(&[("precision", "fp32")]), TOL);
    }
}

#[test]
fn fp32_is_reported_and_set_explicitly() {
    init_openvino();
    let f = fixture("test_resnet");
    let m = CModel::create(&f.spec("native"), true, &ov(&[])).unwrap();
    assert_eq!(providers(&m), "OpenVINO:CPU:fp32");
}

#[test]
fn folder_model_onnx_runs_on_openvino_like_timm() {
    init_openvino();
    for name in [
        "test_resnet",
        "test_convnext",
        "test_vit",
        "test_efficientnet",
    ] {
        let f = fixture(name);
        for mode in ["onnx_embedded", "onnx_stripped", "onnx_external"] {
            if f.folder(mode).is_some() {
                check_fixture(&f, mode, &[("backend", "openvino"), ("graph", "onnx")], TOL);
            }
        }
    }
}

#[test]
fn feature_maps_and_infer_outputs_work_on_openvino() {
    init_openvino();
    let f = fixture("test_resnet");
    let r = reference(&f);
    let opts = ov(&[("output", "feature_maps")]);
    let ovm = CModel::create(&f.spec("native"), true, &opts).unwrap();
    let ortm = CModel::create(
        &f.spec("native"),
        true,
        &[("graph", "native"), ("output", "feature_maps")],
    )
    .unwrap();
    let a = ovm.infer_outputs(&r.input, &r.input_shape).unwrap();
    let b = ortm.infer_outputs(&r.input, &r.input_shape).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.len() >= 2);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.shape, y.shape);
        let d = max_abs_diff(&x.data, &y.data);
        assert!(d <= TOL, "feature map differs from ONNX Runtime by {d}");
    }
}

#[test]
fn an_any_size_graph_compiles_fixed_at_its_input_size_and_serves_other_sizes_like_timm() {
    // OpenVINO gets the nominal size as a static shape; another size is compiled on first use.
    init_openvino();
    let f = fixture("convnext_atto-small");
    let nominal = reference(&f).input_shape;
    let plain = [("output".to_string(), "feature_maps".to_string())];
    let refs: Vec<_> = feature_map_refs(&f)
        .into_iter()
        .filter(|c| c.options == plain)
        .collect();
    let sizes: Vec<_> = refs.iter().map(|c| c.input_shape[2..].to_vec()).collect();
    assert!(
        sizes.contains(&nominal[2..].to_vec()) && sizes.iter().any(|s| s[..] != nominal[2..]),
        "references at the nominal and another size: {sizes:?}"
    );
    let m = CModel::create(
        &f.spec("native"),
        true,
        &ov(&[("precision", "fp32"), ("output", "feature_maps")]),
    )
    .unwrap();
    for c in refs.iter().rev() {
        let maps = m.infer_outputs(&c.input, &c.input_shape).unwrap();
        assert_eq!(maps.len(), c.outputs.len());
        for (got, want) in maps.iter().zip(&c.outputs) {
            assert_eq!(got.shape, want.shape);
            let scale = want.data.iter().fold(1f32, |a, v| a.max(v.abs()));
            let d = max_abs_diff(&got.data, &want.data);
            assert!(
                d <= TOL * scale,
                "input {:?}, map {:?}: differs from timm by {d}",
                c.input_shape,
                got.shape
            );
        }
    }
}

fn classify(m: &CModel, image: &str, k: usize) -> Vec<TimmClass> {
    let path = CString::new(fixtures_dir().join("images").join(image).to_str().unwrap()).unwrap();
    let mut top: Vec<TimmClass> = Vec::with_capacity(k);
    assert_eq!(
        timm_classify_file(m.0, path.as_ptr(), k, top.as_mut_ptr()),
        TimmStatus::TIMM_OK,
        "{}",
        last_error()
    );
    // SAFETY: timm_classify_file wrote k entries.
    unsafe { top.set_len(k) };
    top
}

#[test]
fn bf16_keeps_the_demo_models_top1_and_chelseas_top5() {
    if !cpu_has_bf16() {
        eprintln!("skipped: this CPU has no native bf16 (the refusal is tested instead)");
        return;
    }
    init_openvino();
    let _g = ENV_LOCK.lock().unwrap();
    let spec = format!("local:{}", demo_folder().display());
    let fp32 = CModel::create(&spec, true, &[]).unwrap();
    let bf16 = CModel::create(
        &spec,
        true,
        &[("backend", "openvino"), ("precision", "bf16")],
    )
    .unwrap();
    assert_eq!(providers(&bf16), "OpenVINO:CPU:bf16");
    for image in ["chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg"] {
        let (a, b) = (classify(&fp32, image, 5), classify(&bf16, image, 5));
        eprintln!(
            "{image}: fp32 top-1 {} p={:.4}, bf16 top-1 {} p={:.4}",
            a[0].index, a[0].probability, b[0].index, b[0].probability
        );
        assert_eq!(
            a[0].index, b[0].index,
            "{image}: bf16 changed the top-1 class"
        );
        if image == "chelsea.png" {
            let set = |v: &[TimmClass]| {
                let mut s: Vec<usize> = v.iter().map(|c| c.index).collect();
                s.sort();
                s
            };
            assert_eq!(set(&a), set(&b), "chelsea: bf16 changed the top-5 set");
        }
    }
    // And bf16 is not silently fp32: the logits move.
    let r = reference(&fixture("test_resnet"));
    let f = fixture("test_resnet");
    let x = CModel::create(&f.spec("native"), true, &ov(&[("precision", "bf16")])).unwrap();
    let d = max_abs_diff(&x.infer(&r.input, &r.input_shape).unwrap(), &r.logits);
    assert!(
        d > 1e-6,
        "bf16 logits equal timm's fp32 logits exactly ({d})"
    );
}

#[test]
fn many_threads_share_one_compiled_model_bit_identically() {
    init_openvino();
    let f = fixture("test_convnext");
    let r = reference(&f);
    let m = std::sync::Arc::new(CModel::create(&f.spec("native"), true, &ov(&[])).unwrap());
    let want = m.infer(&r.input, &r.input_shape).unwrap();
    let input = std::sync::Arc::new(r.input.clone());
    let shape = r.input_shape.clone();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (m, input, shape, want) = (m.clone(), input.clone(), shape.clone(), want.clone());
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let out = m.infer(&input, &shape).unwrap();
                    assert!(
                        out == want,
                        "a concurrent run differs from the single-thread run"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn bf16_is_refused_on_a_cpu_without_it() {
    init_openvino();
    // The test-only override hides the CPU's bf16 from libtimm's check, as on a CPU without
    // it. It is read at each creation; ENV_LOCK keeps the bf16 test from creating meanwhile.
    let _g = ENV_LOCK.lock().unwrap();
    std::env::set_var("TIMM_TEST_HIDE_CPU_FEATURES", "bf16,fp16");
    let f = fixture("test_resnet");
    let e = CModel::create(&f.spec("native"), true, &ov(&[("precision", "bf16")]))
        .err()
        .expect("creation should fail");
    let e16 = CModel::create(&f.spec("native"), true, &ov(&[("precision", "fp16")]))
        .err()
        .expect("creation should fail");
    std::env::remove_var("TIMM_TEST_HIDE_CPU_FEATURES");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{}", e.message);
    assert!(
        e.message.contains("AMX or AVX512_BF16") && e.message.contains("precision=fp32"),
        "{}",
        e.message
    );
    assert_eq!(
        e16.status,
        TimmStatus::TIMM_ERR_UNSUPPORTED,
        "{}",
        e16.message
    );
}

static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn unknown_and_absent_devices_are_clear_errors() {
    init_openvino();
    let f = fixture("test_resnet");
    let e = CModel::create(&f.spec("native"), true, &ov(&[("device", "tpu")]))
        .err()
        .expect("creation should fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
    assert!(
        e.message.contains("device") && e.message.contains("npu"),
        "{}",
        e.message
    );
    // No NPU on test machines: OpenVINO's device list says so.
    let e = CModel::create(&f.spec("native"), true, &ov(&[("device", "npu")]))
        .err()
        .expect("creation should fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_RUNTIME, "{}", e.message);
    assert!(
        e.message.contains("no NPU device") && e.message.contains("CPU"),
        "{}",
        e.message
    );
}

#[test]
fn reduced_precision_on_onnx_runtimes_cpu_provider_names_openvino() {
    init_runtime();
    let f = fixture("test_resnet");
    for p in ["bf16", "fp16"] {
        let e = CModel::create(&f.spec("native"), true, &[("precision", p)])
            .err()
            .expect("creation should fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{}", e.message);
        assert!(e.message.contains("backend=openvino"), "{}", e.message);
    }
}
