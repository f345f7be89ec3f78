//! GPU check driver for scripts/gpu-check (run it through that script, which installs the CUDA,
//! cuDNN and TensorRT libraries and sets TIMM_ORT_LIBRARY and LD_LIBRARY_PATH).
//!
//! For every fixture in tests/fixtures/index.json (and any extra model specs given as
//! arguments) it runs the model on cpu, cuda, tensorrt and tensorrt+fp16, and prints:
//! - max |diff| of the logits against the CPU run (pass: fp32 <= 1e-3; fp16: same top-1),
//! - the providers that ran nodes (must start with the requested GPU provider),
//! - images/s at batch 1 and 32,
//! - TensorRT session creation time with an empty engine cache (cold) and again (warm).
//!
//! Exits 1 when any check fails.
//!
//!   gpu_check [--quick] [spec ...]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use timm::model::Model;
use timm::options::Options;

const FP32_TOL: f32 = 1e-3;

struct Case {
    label: &'static str,
    options: Vec<(&'static str, &'static str)>,
    /// The provider the report must start with.
    expect: &'static str,
    fp16: bool,
}

fn cases() -> Vec<Case> {
    // Strict: a GPU run that silently fell back would make every number below meaningless.
    let strict = ("strict_providers", "true");
    vec![
        Case {
            label: "cpu",
            options: vec![("providers", "cpu")],
            expect: "CPUExecutionProvider",
            fp16: false,
        },
        Case {
            label: "cuda",
            options: vec![("providers", "cuda"), strict],
            expect: "CUDAExecutionProvider",
            fp16: false,
        },
        Case {
            label: "tensorrt",
            options: vec![("providers", "tensorrt,cuda"), strict],
            expect: "TensorrtExecutionProvider",
            fp16: false,
        },
        Case {
            label: "tensorrt-fp16",
            options: vec![("providers", "tensorrt,cuda"), strict, ("trt_fp16", "true")],
            expect: "TensorrtExecutionProvider",
            fp16: true,
        },
    ]
}

fn read_f32(p: &Path) -> Vec<f32> {
    std::fs::read(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// (name, spec, one image's input `[C,H,W]` floats, its shape)
fn fixtures(root: &Path) -> Vec<(String, String, Vec<f32>, [usize; 3])> {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/index.json")).expect("index.json"),
    )
    .expect("index.json");
    let mut out = Vec::new();
    for f in index["fixtures"].as_array().expect("fixtures") {
        let name = f["name"].as_str().unwrap_or_default().to_string();
        let folders = f["folders"].as_object().expect("folders");
        let folder = folders
            .get("native")
            .or_else(|| folders.values().next())
            .and_then(|v| v.as_str())
            .expect("a folder");
        let refdir = root
            .join("tests/fixtures")
            .join(f["reference"].as_str().expect("reference"));
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(refdir.join("meta.json")).expect("meta.json"),
        )
        .expect("meta.json");
        let shape: Vec<usize> = meta["input_shape"]
            .as_array()
            .expect("input_shape")
            .iter()
            .map(|d| d.as_u64().unwrap_or(0) as usize)
            .collect();
        let input = read_f32(&refdir.join("input.f32"));
        let chw = [shape[1], shape[2], shape[3]];
        let per = chw.iter().product::<usize>();
        let spec = format!(
            "local:{}",
            root.join("tests/fixtures").join(folder).display()
        );
        out.push((name, spec, input[..per].to_vec(), chw));
    }
    out
}

fn create(spec: &str, options: &[(&str, &str)]) -> Result<Model, String> {
    let mut o = Options::new();
    for (k, v) in options {
        o.set(k, v).map_err(|e| e.to_string())?;
    }
    Model::create(spec, true, &o.parse().map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

fn batch(image: &[f32], n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(image.len() * n);
    for _ in 0..n {
        v.extend_from_slice(image);
    }
    v
}

fn infer(m: &Model, input: &[f32], chw: [usize; 3], n: usize) -> Result<Vec<f32>, String> {
    let mut out = vec![0f32; n * m.output_dim()];
    let shape = [n as i64, chw[0] as i64, chw[1] as i64, chw[2] as i64];
    m.infer(input, &shape, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Images per second at batch `n`, after warm-up, over at least `budget`.
fn throughput(
    m: &Model,
    image: &[f32],
    chw: [usize; 3],
    n: usize,
    budget: Duration,
) -> Result<f64, String> {
    let input = batch(image, n);
    for _ in 0..3 {
        infer(m, &input, chw, n)?;
    }
    let start = Instant::now();
    let mut runs = 0usize;
    while start.elapsed() < budget || runs < 5 {
        infer(m, &input, chw, n)?;
        runs += 1;
    }
    Ok((runs * n) as f64 / start.elapsed().as_secs_f64())
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 2000 });
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut models = fixtures(&root);
    for spec in args.iter().filter(|a| !a.starts_with("--")) {
        // Extra models: a deterministic input at the model's own size.
        let m = create(spec, &[]).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let chw = m.input_size();
        let n = chw.iter().product::<usize>();
        let input = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        models.push((spec.clone(), spec.clone(), input, chw));
    }
    println!(
        "{:<34} {:<14} {:>10} {:>6} {:>10} {:>10} {:>9} {:>9}  providers",
        "model", "provider", "max|diff|", "check", "img/s b1", "img/s b32", "trt cold", "trt warm"
    );
    let mut failures = Vec::new();
    // Providers that could not even be created once: a setup problem, reported once.
    let mut broken: Vec<&str> = Vec::new();
    for (name, spec, image, chw) in &models {
        let mut cpu_logits: Option<Vec<f32>> = None;
        for case in cases() {
            if broken.contains(&case.label) {
                continue;
            }
            let mut options = case.options.clone();
            let cache = tempfile_dir(name, case.label);
            let cache_str = cache.to_string_lossy().into_owned();
            let is_trt = case.label.starts_with("tensorrt");
            if is_trt {
                options.push(("trt_engine_cache_dir", cache_str.as_str()));
            }
            let t0 = Instant::now();
            let m = match create(spec, &options) {
                Ok(m) => m,
                Err(e) => {
                    println!("{name:<34} {:<14} FAILED to create: {e}", case.label);
                    failures.push(format!("{name} {}: {e}", case.label));
                    if e.contains("TIMM_ERR_UNSUPPORTED") {
                        println!("    (not trying {} on the other models)", case.label);
                        broken.push(case.label);
                    }
                    continue;
                }
            };
            let cold = t0.elapsed();
            let providers = m.providers().to_string_lossy().into_owned();
            let mut ok = providers.starts_with(case.expect);
            let logits = match infer(&m, image, *chw, 1) {
                Ok(l) => l,
                Err(e) => {
                    println!("{name:<34} {:<14} FAILED to run: {e}", case.label);
                    failures.push(format!("{name} {}: {e}", case.label));
                    continue;
                }
            };
            let (diff, check) = match &cpu_logits {
                None => (0.0, "ref"),
                Some(r) => {
                    let d = r
                        .iter()
                        .zip(&logits)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    let pass = if case.fp16 {
                        argmax(r) == argmax(&logits)
                    } else {
                        d <= FP32_TOL
                    };
                    ok &= pass;
                    (d, if pass { "ok" } else { "FAIL" })
                }
            };
            if case.label == "cpu" {
                cpu_logits = Some(logits.clone());
            }
            let b1 = throughput(&m, image, *chw, 1, budget);
            let b32 = throughput(&m, image, *chw, 32, budget);
            let warm = if is_trt {
                drop(m);
                let t1 = Instant::now();
                match create(spec, &options) {
                    Ok(_) => format!("{:.2}s", t1.elapsed().as_secs_f64()),
                    Err(e) => {
                        ok = false;
                        format!("error: {e}")
                    }
                }
            } else {
                "-".into()
            };
            let fmt = |r: &Result<f64, String>| match r {
                Ok(v) => format!("{v:.0}"),
                Err(_) => "error".into(),
            };
            ok &= b1.is_ok() && b32.is_ok();
            println!(
                "{name:<34} {:<14} {diff:>10.2e} {check:>6} {:>10} {:>10} {:>9} {:>9}  {providers}",
                case.label,
                fmt(&b1),
                fmt(&b32),
                if is_trt {
                    format!("{:.2}s", cold.as_secs_f64())
                } else {
                    "-".into()
                },
                warm,
            );
            for r in [&b1, &b32] {
                if let Err(e) = r {
                    println!("    throughput run failed: {e}");
                }
            }
            if !ok {
                failures.push(format!(
                    "{name} {} (providers {providers}, max|diff| {diff:.2e})",
                    case.label
                ));
            }
            let _ = std::fs::remove_dir_all(&cache);
        }
    }
    if failures.is_empty() {
        println!(
            "gpu_check: all {} models passed on cpu, cuda, tensorrt and tensorrt-fp16",
            models.len()
        );
    } else {
        println!("gpu_check: {} failure(s):", failures.len());
        for f in &failures {
            println!("  {f}");
        }
        std::process::exit(1);
    }
}

/// An empty engine cache folder for one model and case (cold start), removed afterwards.
fn tempfile_dir(name: &str, label: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let d = std::env::temp_dir().join(format!(
        "timm-gpu-check-{}-{safe}-{label}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}
