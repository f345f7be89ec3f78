//! Execution providers on machines without a GPU, through the C ABI: what happens when CUDA or
//! TensorRT is asked of a runtime or a machine that cannot serve it. Nothing here fakes a
//! provider: the CPU runtime really has none, and the GPU runtime really fails to load its
//! CUDA libraries on a machine without them.
//!
//! ONNX Runtime is one per process, so the cases for the GPU build (`.onnxruntime/gpu`, from
//! scripts/fetch-ort-gpu) run in a child process: `gpu_runtime_without_cuda_libraries` re-runs
//! this test binary with `TIMM_ORT_LIBRARY` pointing at the GPU build and runs the ignored test
//! `gpu_runtime_child` there. Without the GPU build it is skipped with a message, unless
//! `TIMM_REQUIRE_GPU_RUNTIME=1` (scripts/test sets it) makes that a failure.

mod common;
use common::*;

use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;
use std::sync::Mutex;

use timm::ffi::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;
const CHILD_ENV: &str = "TIMM_PROVIDERS_CHILD";

// ---- a log collector shared by every test of this process ----------------------------------

static LOGS: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

extern "C" fn collect(level: i32, message: *const c_char, user: *mut c_void) {
    assert_eq!(user as usize, 0x7157, "user_data must come back untouched");
    let m = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    LOGS.lock().unwrap().push((level, m));
}

fn install_collector() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let st = timm_set_log_callback(Some(collect), 0x7157 as *mut c_void);
        assert_eq!(st, TimmStatus::TIMM_OK);
    });
}

/// Warnings logged so far that contain every one of `needles`.
fn warnings_with(needles: &[&str]) -> Vec<String> {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|(l, m)| {
            *l == TimmLogLevel::TIMM_LOG_WARNING as i32 && needles.iter().all(|n| m.contains(n))
        })
        .map(|(_, m)| m.clone())
        .collect()
}

fn providers_of(m: &CModel) -> String {
    let p = timm_model_providers(m.0);
    assert!(
        !p.is_null(),
        "timm_model_providers returned NULL: {}",
        last_error()
    );
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Creates the fixture in `mode` with `options`, runs timm's reference input and checks the
/// logits; returns the model for more checks.
fn run_fixture(name: &str, mode: &str, options: &[(&str, &str)]) -> Result<CModel, CError> {
    let f = fixture(name);
    let r = reference(&f);
    let m = CModel::create(&f.spec(mode), true, options)?;
    let out = m
        .infer(&r.input, &r.input_shape)
        .unwrap_or_else(|e| panic!("{name} [{mode}] {options:?}: {e:?}"));
    let d = max_abs_diff(&out, &r.logits);
    assert!(
        d <= TOL,
        "{name} [{mode}] {options:?}: logits differ from timm by {d}"
    );
    Ok(m)
}

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

// ---- the CPU runtime (what TIMM_ORT_LIBRARY points at in tests) ----------------------------

#[test]
fn default_runs_on_the_cpu_provider_and_says_so() {
    if in_child() {
        return;
    }
    for mode in ["native", "onnx_embedded"] {
        let m = run_fixture("test_resnet", mode, &[]).unwrap();
        assert_eq!(providers_of(&m), "CPUExecutionProvider", "{mode}");
        let m = run_fixture("test_resnet", mode, &[("providers", "cpu")]).unwrap();
        assert_eq!(providers_of(&m), "CPUExecutionProvider", "{mode}");
    }
}

#[test]
fn strict_cuda_on_the_cpu_runtime_says_it_has_no_cuda_provider() {
    if in_child() {
        return;
    }
    for (list, name) in [
        ("cuda", "CUDA"),
        ("tensorrt,cuda", "TensorRT"),
        ("cuda,cpu", "CUDA"),
    ] {
        let e = run_fixture(
            "test_resnet",
            "native",
            &[("providers", list), ("strict_providers", "true")],
        )
        .err()
        .unwrap_or_else(|| panic!("providers={list} strict must fail on the CPU runtime"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        for needle in [
            &format!("has no {name} provider") as &str,
            "CPU build",
            "onnxruntime-gpu==1.31.1",
            "scripts/fetch-ort-gpu",
            "TIMM_ORT_LIBRARY",
        ] {
            assert!(
                e.message.contains(needle),
                "`{needle}` missing from: {}",
                e.message
            );
        }
    }
}

#[test]
fn cuda_without_strict_falls_back_to_cpu_reports_it_and_warns() {
    if in_child() {
        return;
    }
    install_collector();
    for mode in ["native", "onnx_embedded"] {
        let m = run_fixture("test_resnet", mode, &[("providers", "cuda")]).unwrap();
        assert_eq!(providers_of(&m), "CPUExecutionProvider", "{mode}");
    }
    let w = warnings_with(&["no CUDA provider", "CPU provider"]);
    assert!(
        w.len() >= 2,
        "expected a fallback warning per model, got {w:?}"
    );

    // Both GPU providers requested: one warning each, still the right numbers on the CPU.
    let m = run_fixture(
        "test_resnet",
        "native",
        &[("providers", "tensorrt,cuda,cpu")],
    )
    .unwrap();
    assert_eq!(providers_of(&m), "CPUExecutionProvider");
    assert!(!warnings_with(&["no TensorRT provider", "trying the CUDA provider next"]).is_empty());
}

#[test]
fn provider_options_are_checked_when_set() {
    if in_child() {
        return;
    }
    for (k, v) in [
        ("providers", "gpu"),
        ("providers", "cpu,cuda"),
        ("strict_providers", "sometimes"),
        ("max_batch", "0"),
        ("cudnn_conv_algo_search", "fastest"),
    ] {
        let e = CModel::create("local:/nonexistent", true, &[(k, v)])
            .err()
            .expect("bad option value must fail");
        assert_eq!(
            e.status,
            TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
            "{k}={v}: {e:?}"
        );
        assert!(e.message.contains(k), "{}", e.message);
    }
}

#[test]
fn providers_of_null_is_null() {
    if in_child() {
        return;
    }
    assert!(timm_model_providers(std::ptr::null()).is_null());
    assert!(last_error().contains("model"), "{}", last_error());
}

// ---- the GPU runtime, in a child process ---------------------------------------------------

fn gpu_runtime() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".onnxruntime/gpu/libonnxruntime.so.1.31.1")
}

#[test]
fn gpu_runtime_without_cuda_libraries() {
    if in_child() {
        return;
    }
    let lib = gpu_runtime();
    if !lib.exists() {
        let why = format!(
            "skipped: {} is missing; run scripts/fetch-ort-gpu (a ~256 MB download) to test the GPU runtime's fallbacks",
            lib.display()
        );
        assert!(
            std::env::var("TIMM_REQUIRE_GPU_RUNTIME").as_deref() != Ok("1"),
            "TIMM_REQUIRE_GPU_RUNTIME=1 but {why}"
        );
        eprintln!("{why}");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "gpu_runtime_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .env("TIMM_ORT_LIBRARY", &lib)
        .output()
        .expect("re-run the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("---- child (GPU runtime) ----\n{text}---- end of child ----");
    assert!(out.status.success(), "the GPU-runtime child failed");
    assert!(
        text.contains("1 passed"),
        "the child did not run gpu_runtime_child"
    );
}

/// Runs only in the child started above (the runtime loaded here is the GPU build).
#[test]
#[ignore = "run by gpu_runtime_without_cuda_libraries in a child process with the GPU runtime"]
fn gpu_runtime_child() {
    assert!(
        in_child(),
        "run through gpu_runtime_without_cuda_libraries (it sets {CHILD_ENV} and TIMM_ORT_LIBRARY)"
    );
    install_collector();

    // Strict CUDA: either this machine has everything (then CUDA must run nodes), or the error
    // names what is missing: a library the loader could not open, or the device.
    let strict = run_fixture(
        "test_resnet",
        "native",
        &[("providers", "cuda"), ("strict_providers", "true")],
    );
    let cuda_usable = match &strict {
        Ok(m) => {
            let p = providers_of(m);
            assert!(
                p.starts_with("CUDAExecutionProvider"),
                "strict CUDA ran on {p}"
            );
            true
        }
        Err(e) => {
            assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
            assert!(
                !e.message.contains("has no CUDA provider"),
                "the GPU build has one: {}",
                e.message
            );
            let named = [
                "libcudart",
                "libcublas",
                "libcublasLt",
                "libcurand",
                "libcudnn",
                "libcufft",
                "libcuda.so",
            ]
            .iter()
            .any(|l| e.message.contains(&format!("could not open {l}")));
            assert!(
                named || e.message.contains("no usable GPU"),
                "the error names neither a CUDA library nor the device: {}",
                e.message
            );
            if named {
                assert!(
                    e.message.contains("install") && e.message.contains("LD_LIBRARY_PATH")
                        || e.message.contains("driver"),
                    "no install hint: {}",
                    e.message
                );
            }
            eprintln!("strict CUDA error (expected here): {}", e.message);
            false
        }
    };

    // Strict TensorRT: same, with TensorRT's libraries in the list.
    let trt = run_fixture(
        "test_resnet",
        "native",
        &[("providers", "tensorrt"), ("strict_providers", "true")],
    );
    if let Err(e) = &trt {
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(
            e.message.contains("TensorRT provider cannot be used"),
            "{}",
            e.message
        );
        eprintln!("strict TensorRT error: {}", e.message);
    }

    // Without strict: it runs, the numbers are right, and the report says where.
    for mode in ["native", "onnx_embedded"] {
        let m = run_fixture("test_resnet", mode, &[("providers", "cuda")]).unwrap();
        let p = providers_of(&m);
        if cuda_usable {
            assert!(p.starts_with("CUDAExecutionProvider"), "{mode}: {p}");
        } else {
            assert_eq!(p, "CPUExecutionProvider", "{mode}");
        }
    }
    if !cuda_usable {
        let w = warnings_with(&[
            "CUDA provider cannot be used",
            "running on the CPU provider",
        ]);
        assert!(w.len() >= 2, "expected a fallback warning per model: {w:?}");
    }

    // The log callback cannot be replaced from inside itself.
    extern "C" fn reenter(_: i32, _: *const c_char, out: *mut c_void) {
        let st = timm_set_log_callback(None, std::ptr::null_mut());
        unsafe { *(out as *mut TimmStatus) = st };
    }
    let mut seen = TimmStatus::TIMM_OK;
    assert_eq!(
        timm_set_log_callback(Some(reenter), &mut seen as *mut TimmStatus as *mut c_void),
        TimmStatus::TIMM_OK
    );
    let _ = CModel::create(
        &fixture("test_resnet").spec("native"),
        true,
        &[("providers", "cuda")],
    );
    assert_eq!(
        timm_set_log_callback(None, std::ptr::null_mut()),
        TimmStatus::TIMM_OK
    );
    if !cuda_usable {
        assert_eq!(
            seen,
            TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
            "re-entry was not refused"
        );
    }
}
