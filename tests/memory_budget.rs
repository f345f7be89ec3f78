//! Load memory against the weights' size, measured in child processes (each load alone in a
//! fresh process: peak RSS is per process). The model is the demo's EfficientNet-Lite0 (18 MB of
//! weights: large enough that the runtime's own allocations do not hide a copy of them); the
//! runtime baseline is a process that loaded a tiny model. A load from the optimised-model cache
//! must peak within 1.25 × the weights over that baseline and settle within 1.1 ×, in both
//! `weights_memory` modes: one extra copy of the weights anywhere in that path fails it. A first
//! load (empty cache) must settle within 1.1 × too and peak below a second copy of the weights.

mod common;
use common::*;

const SPEC: &str = "TIMM_TEST_MEMORY_SPEC";
const OPTIONS: &str = "TIMM_TEST_MEMORY_OPTIONS";

/// Peak and current RSS (KiB) of a child process that created the model `spec` with `options`
/// (`key=value` pairs separated by `;`).
fn load_in_child(spec: &str, options: &str) -> (u64, u64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "memory_helper_creates_the_given_model",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SPEC, spec)
        .env(OPTIONS, options)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loading {spec} ({options}) failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.split_once("MEMORY ").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no MEMORY line from the child: {text}"));
    let v: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Median over three processes of (peak, after load).
fn measure(spec: &str, options: &str) -> (u64, u64) {
    let runs: Vec<_> = (0..3).map(|_| load_in_child(spec, options)).collect();
    (
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
    )
}

/// The runtime baseline: (peak, after load) of a process that loaded a tiny model.
fn baseline() -> (u64, u64) {
    measure(&fixture("test_resnet").spec("native"), "graph_cache=false")
}

/// The demo model's spec and its weights' size in KiB.
fn demo() -> (String, f64) {
    let folder = demo_folder();
    let bytes = std::fs::metadata(folder.join("model.safetensors"))
        .unwrap()
        .len();
    (format!("local:{}", folder.display()), bytes as f64 / 1024.0)
}

#[test]
fn a_cached_load_peaks_within_a_quarter_of_the_weights_over_the_runtime_baseline() {
    let (base_peak, base_rss) = baseline();
    let (spec, weights_kib) = demo();
    for mode in ["copy", "map"] {
        let cache = tempfile::tempdir().unwrap();
        let options = format!(
            "weights_memory={mode};graph_cache_dir={}",
            cache.path().display()
        );
        // The first load writes the cache entry; the ones measured map it.
        load_in_child(&spec, &options);
        let (peak, rss) = measure(&spec, &options);
        let over = |x: u64, base: u64| x.saturating_sub(base) as f64 / weights_kib;
        let (p, r) = (over(peak, base_peak), over(rss, base_rss));
        eprintln!(
            "weights_memory={mode}: cached load peak {p:.2}x and steady {r:.2}x the weights over the baseline \
             (weights {weights_kib:.0} KiB, baseline peak {base_peak} KiB)"
        );
        assert!(
            p <= 1.25,
            "weights_memory={mode}: a cached load peaks at {p:.2}x the weights over the runtime baseline (budget 1.25x)"
        );
        assert!(
            r <= 1.1,
            "weights_memory={mode}: after a cached load RSS is {r:.2}x the weights over the runtime baseline (budget 1.1x)"
        );
    }
}

/// A first load's peak over the baseline, as a ratio to the weights, above which it holds a
/// second copy of them. The release build measures 1.1x on the demo model and 1.14-1.21x on
/// resnet50 (`scripts/bench_memory`), within the 1.25x budget; this debug build adds up to 0.25x of
/// its own on an 18 MB model (slower code, larger scratch), so the test holds the line a
/// second copy would cross (the graph handed to ONNX Runtime in memory peaked at 2.9x).
const FIRST_LOAD_PEAK: f64 = 1.5;

#[test]
fn a_first_load_peaks_below_a_second_copy_and_settles_where_a_cached_load_does() {
    // The first load writes the graph to a file that ONNX Runtime optimises from into the cache
    // entry, then opens the session from that entry: neither the optimiser's copies nor a
    // second copy of the weights is kept.
    let (base_peak, base_rss) = baseline();
    let (spec, weights_kib) = demo();
    for mode in ["copy", "map"] {
        // An empty cache for each process, so each load is a first one.
        let runs: Vec<(u64, u64)> = (0..3)
            .map(|_| {
                let cache = tempfile::tempdir().unwrap();
                let options = format!(
                    "weights_memory={mode};graph_cache_dir={}",
                    cache.path().display()
                );
                let got = load_in_child(&spec, &options);
                let entries = std::fs::read_dir(cache.path()).unwrap().count();
                assert!(entries > 0, "weights_memory={mode}: no cache entry written");
                got
            })
            .collect();
        let over = |x: u64, base: u64| x.saturating_sub(base) as f64 / weights_kib;
        let p = over(median(runs.iter().map(|r| r.0).collect()), base_peak);
        let r = over(median(runs.iter().map(|r| r.1).collect()), base_rss);
        eprintln!("weights_memory={mode}: a first load peaks at {p:.2}x and settles at {r:.2}x the weights over the baseline");
        assert!(
            p <= FIRST_LOAD_PEAK,
            "weights_memory={mode}: a first load peaks at {p:.2}x the weights over the runtime baseline (a second copy is over {FIRST_LOAD_PEAK}x)"
        );
        assert!(
            r <= 1.1,
            "weights_memory={mode}: after a first load RSS is {r:.2}x the weights over the runtime baseline (budget 1.1x)"
        );
    }
}

/// Run by the tests above in child processes: creates the model and prints its process's RSS.
#[test]
#[ignore = "a child process of the memory-budget test"]
fn memory_helper_creates_the_given_model() {
    let spec = std::env::var(SPEC).expect("run by the memory-budget test");
    let options = std::env::var(OPTIONS).unwrap_or_default();
    let pairs: Vec<(&str, &str)> = options
        .split(';')
        .filter(|s| !s.is_empty())
        .map(|kv| kv.split_once('=').expect("key=value"))
        .collect();
    let m = CModel::create(&spec, true, &pairs).unwrap_or_else(|e| panic!("{spec}: {e:?}"));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
    };
    println!("MEMORY {} {}", kib("VmHWM:"), kib("VmRSS:"));
    drop(m);
}
