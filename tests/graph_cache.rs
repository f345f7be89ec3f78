//! The optimised-model cache through the C ABI: a cached load computes timm's logits, a corrupt
//! entry is rebuilt, a changed folder gets its own entry, and processes racing to write one entry
//! all succeed and leave one complete entry.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-4;
const RACE_DIR: &str = "TIMM_TEST_GRAPH_CACHE_RACE_DIR";

fn native() -> Fixture {
    fixture("test_convnext")
}

/// The cache's entries (folders named by their 64-hex key).
fn entries(cache: &Path) -> Vec<PathBuf> {
    let is_key = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .map(|r| r.flatten().map(|e| e.path()).filter(is_key).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Loads `spec` with the cache in `cache` and checks the logits against the fixture's.
fn load_and_check(spec: &str, cache: &Path) {
    let f = native();
    let r = reference(&f);
    let dir = cache.to_str().unwrap();
    let m = CModel::create(spec, true, &[("graph", "native"), ("graph_cache_dir", dir)])
        .unwrap_or_else(|e| panic!("{spec}: {e:?}"));
    let out = m.infer(&r.input, &r.input_shape).unwrap();
    let d = max_abs_diff(&out, &r.logits);
    assert!(d <= TOL, "{spec}: logits differ from timm by {d}");
}

#[test]
fn second_load_reuses_the_entry_and_matches_timm() {
    let cache = tempfile::tempdir().unwrap();
    let spec = native().spec("native");
    load_and_check(&spec, cache.path());
    let first = entries(cache.path());
    assert_eq!(first.len(), 1, "one entry after the first load: {first:?}");
    let model = first[0].join("model.onnx");
    let written = std::fs::metadata(&model).unwrap().modified().unwrap();
    load_and_check(&spec, cache.path());
    assert_eq!(entries(cache.path()), first);
    assert_eq!(
        std::fs::metadata(&model).unwrap().modified().unwrap(),
        written,
        "a cached load does not rewrite the entry"
    );
}

// ---- what a first load reports through the log callback -------------------------------------

/// Every message with the thread that logged it (the callback is process-wide; the load's
/// report comes on the loading thread, which tells this test's own from other tests').
static LOGGED: std::sync::Mutex<Vec<(std::thread::ThreadId, String)>> =
    std::sync::Mutex::new(Vec::new());

extern "C" fn collect(level: i32, message: *const std::ffi::c_char, _: *mut std::ffi::c_void) {
    let m = unsafe { std::ffi::CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    // Other tests' warnings stay visible, as without a callback.
    if level >= timm::ffi::TimmLogLevel::TIMM_LOG_WARNING as i32 {
        eprintln!("libtimm: {m}");
    }
    LOGGED
        .lock()
        .unwrap()
        .push((std::thread::current().id(), m));
}

/// The load-phase reports logged on this thread so far.
fn phase_reports() -> Vec<String> {
    let me = std::thread::current().id();
    LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, m)| *t == me && m.contains("load phases (s):"))
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn a_first_load_reports_where_its_time_went_and_a_cached_load_does_not() {
    let st = timm::ffi::timm_set_log_callback(Some(collect), std::ptr::null_mut());
    assert_eq!(st, timm::TimmStatus::TIMM_OK);
    let cache = tempfile::tempdir().unwrap();
    let spec = native().spec("native");
    let started = std::time::Instant::now();
    load_and_check(&spec, cache.path());
    let wall = started.elapsed().as_secs_f64();
    let reports = phase_reports();
    assert_eq!(
        reports.len(),
        1,
        "one report from the first load: {reports:?}"
    );
    let tail = reports[0].split("load phases (s):").nth(1).unwrap();
    let phases: Vec<(&str, f64)> = tail
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("not k=v: {kv}"));
            (k, v.parse().unwrap_or_else(|_| panic!("not seconds: {kv}")))
        })
        .collect();
    let keys: Vec<&str> = phases.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        ["key", "build", "stage", "optimise_save", "reopen_sync"]
    );
    assert!(phases.iter().all(|(_, v)| *v >= 0.0), "{phases:?}");
    // The phases are parts of the load, not more than it (each is rounded to a millisecond).
    let sum: f64 = phases.iter().map(|(_, v)| v).sum();
    assert!(
        sum <= wall + 0.005,
        "phases sum to {sum} s of a {wall} s load"
    );
    assert!(
        phases
            .iter()
            .any(|(k, v)| *k == "optimise_save" && *v > 0.0),
        "ONNX Runtime's step took no time: {phases:?}"
    );
    load_and_check(&spec, cache.path());
    assert_eq!(
        phase_reports().len(),
        1,
        "a cached load builds nothing to report"
    );
}

#[test]
fn every_tensor_of_an_entry_starts_64_byte_aligned() {
    // ORT saves small tensors only 32-byte aligned (24 of this fixture's 40); a cached load runs
    // on the mapped file's addresses, so the entry's data file is rewritten aligned.
    let cache = tempfile::tempdir().unwrap();
    let f = fixture("cspnext_tiny-small");
    let r = reference(&f);
    let dir = cache.path().to_str().unwrap();
    for load in ["first", "cached"] {
        let m = CModel::create(
            &f.spec("native"),
            true,
            &[("graph", "native"), ("graph_cache_dir", dir)],
        )
        .unwrap_or_else(|e| panic!("{load} load: {e:?}"));
        let d = max_abs_diff(&m.infer(&r.input, &r.input_shape).unwrap(), &r.logits);
        assert!(d <= TOL, "{load} load: logits differ from timm by {d}");
    }
    let entry = &entries(cache.path())[0];
    let info = timm::onnx::scan(&std::fs::read(entry.join("model.onnx")).unwrap()).unwrap();
    let offsets: Vec<u64> = info.initializers.iter().filter_map(|i| i.offset).collect();
    assert!(
        offsets.len() > 10,
        "the entry keeps its weights external: {offsets:?}"
    );
    let off: Vec<_> = offsets.iter().filter(|o| *o % 64 != 0).collect();
    assert!(off.is_empty(), "tensors off a 64-byte boundary: {off:?}");
}

/// The cached model's input dims (`None` for a symbolic one).
fn cached_input_dims(entry: &Path) -> Vec<Option<i64>> {
    use timm::export::onnx_writer::Dim;
    let g = timm::export::folder::read(&entry.join("model.onnx")).unwrap();
    g.inputs[0]
        .dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => Some(*v),
            Dim::Symbolic(_) => None,
        })
        .collect()
}

/// An any-size convnet with the cache in `cache`, its nominal-size reference and a timm
/// `features_only` reference at another input size (the model is made with its options).
fn any_size_model(cache: &Path) -> (CModel, Reference, FeatureMapsRef) {
    let f = fixture("convnext_atto-small");
    let r = reference(&f);
    let other = feature_map_refs(&f)
        .into_iter()
        .find(|c| c.input_shape[2..] != r.input_shape[2..])
        .expect("a feature-map reference at another input size");
    let mut opts: Vec<(&str, &str)> = other
        .options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    opts.push(("graph", "native"));
    opts.push(("graph_cache_dir", cache.to_str().unwrap()));
    let m = CModel::create(&f.spec("native"), true, &opts).unwrap();
    (m, r, other)
}

#[test]
fn an_any_size_graph_runs_fixed_at_its_input_size_and_other_sizes_get_their_own_session() {
    // ORT optimises the nominal-size session as a static graph; another size is served by a
    // symbolic-size session made on first use (its own cache entry), with timm's outputs.
    let cache = tempfile::tempdir().unwrap();
    let (m, r, other) = any_size_model(cache.path());

    let first = entries(cache.path());
    assert_eq!(first.len(), 1, "{first:?}");
    let (h, w) = (r.input_shape[2], r.input_shape[3]);
    assert_eq!(cached_input_dims(&first[0])[2..], [Some(h), Some(w)]);
    m.infer_outputs(&r.input, &r.input_shape).unwrap();
    assert_eq!(
        entries(cache.path()),
        first,
        "the nominal size uses the first session"
    );

    let maps = m.infer_outputs(&other.input, &other.input_shape).unwrap();
    for (got, want) in maps.iter().zip(&other.outputs) {
        assert_eq!(got.shape, want.shape);
        let scale = want.data.iter().fold(1f32, |a, v| a.max(v.abs()));
        let d = max_abs_diff(&got.data, &want.data);
        assert!(
            d <= 1e-4 * scale,
            "{:?}: differs from timm by {d}",
            got.shape
        );
    }
    let both = entries(cache.path());
    assert_eq!(both.len(), 2, "{both:?}");
    let symbolic = both.iter().find(|e| !first.contains(e)).unwrap();
    assert_eq!(cached_input_dims(symbolic)[2..], [None, None]);
}

#[test]
fn threads_racing_on_the_first_call_at_another_size_agree_with_timm_and_leave_one_entry() {
    let cache = tempfile::tempdir().unwrap();
    let (m, _, other) = any_size_model(cache.path());
    let results: Vec<Vec<Vec<u32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let maps = m.infer_outputs(&other.input, &other.input_shape).unwrap();
                    maps.iter()
                        .map(|t| t.data.iter().map(|v| v.to_bits()).collect())
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]), "threads disagree");
    assert_eq!(entries(cache.path()).len(), 2, "one any-size entry");
    let got: Vec<f32> = results[0][0].iter().map(|&b| f32::from_bits(b)).collect();
    let want = &other.outputs[0].data;
    let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
    assert!(max_abs_diff(&got, want) <= 1e-4 * scale);
}

#[test]
fn graph_cache_false_writes_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().to_str().unwrap();
    CModel::create(
        &native().spec("native"),
        true,
        &[
            ("graph", "native"),
            ("graph_cache", "false"),
            ("graph_cache_dir", dir),
        ],
    )
    .unwrap();
    assert!(entries(cache.path()).is_empty());
}

#[test]
fn truncated_or_garbled_entry_is_rebuilt() {
    let cache = tempfile::tempdir().unwrap();
    let spec = native().spec("native");
    load_and_check(&spec, cache.path());
    let entry = entries(cache.path()).remove(0);
    let data = entry.join("weights.bin");
    let size = std::fs::metadata(&data).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    load_and_check(&spec, cache.path());
    assert_eq!(std::fs::metadata(&data).unwrap().len(), size, "rebuilt");
    std::fs::write(entry.join("model.onnx"), b"not a model").unwrap();
    load_and_check(&spec, cache.path());
    assert_ne!(
        std::fs::read(entry.join("model.onnx")).unwrap(),
        b"not a model"
    );
}

#[test]
fn changed_weights_get_their_own_entry() {
    let cache = tempfile::tempdir().unwrap();
    let src = native().folder("native").unwrap();
    let copy = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), copy.path().join(name)).unwrap();
    }
    let spec = format!("local:{}", copy.path().display());
    load_and_check(&spec, cache.path());
    // Nudge the last float of the file (a weight) by one ulp: the logits barely move.
    let st = copy.path().join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = bytes.len();
    bytes[n - 4] ^= 1;
    std::fs::write(&st, &bytes).unwrap();
    load_and_check(&spec, cache.path());
    assert_eq!(
        entries(cache.path()).len(),
        2,
        "the changed folder has a new key"
    );
}

#[test]
fn a_rewrite_that_restores_size_and_mtime_still_gets_a_new_entry() {
    // The remembered weights digest is found by the file's identity; ctime changes with every
    // write, so restoring the modification time (cp -p, rsync -t) cannot hide new bytes.
    let cache = tempfile::tempdir().unwrap();
    let src = native().folder("native").unwrap();
    let copy = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), copy.path().join(name)).unwrap();
    }
    let spec = format!("local:{}", copy.path().display());
    load_and_check(&spec, cache.path());
    let st = copy.path().join("model.safetensors");
    let mtime = std::fs::metadata(&st).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&st).unwrap();
    let n = bytes.len();
    bytes[n - 4] ^= 1;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&st).unwrap();
        f.write_all(&bytes).unwrap();
        f.set_modified(mtime).unwrap();
    }
    assert_eq!(std::fs::metadata(&st).unwrap().modified().unwrap(), mtime);
    load_and_check(&spec, cache.path());
    assert_eq!(
        entries(cache.path()).len(),
        2,
        "the rewritten file has a new key"
    );
}

#[test]
fn identical_copies_of_a_folder_share_one_entry() {
    // The key holds the weights' content hash, not their path.
    let cache = tempfile::tempdir().unwrap();
    load_and_check(&native().spec("native"), cache.path());
    let src = native().folder("native").unwrap();
    let copy = tempfile::tempdir().unwrap();
    for name in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(name), copy.path().join(name)).unwrap();
    }
    load_and_check(&format!("local:{}", copy.path().display()), cache.path());
    assert_eq!(
        entries(cache.path()).len(),
        1,
        "{:?}",
        entries(cache.path())
    );
}

#[test]
fn processes_racing_on_one_entry_all_load_it() {
    let cache = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "race_helper_loads_into_the_given_cache",
                ])
                .env(RACE_DIR, cache.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a racing load failed");
    }
    let e = entries(cache.path());
    assert_eq!(e.len(), 1, "one entry: {e:?}");
    let left: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary folders left: {left:?}");
    load_and_check(&native().spec("native"), cache.path());
}

/// Run by `processes_racing_on_one_entry_all_load_it` in child processes.
#[test]
#[ignore = "a child process of processes_racing_on_one_entry_all_load_it"]
fn race_helper_loads_into_the_given_cache() {
    let dir = PathBuf::from(std::env::var_os(RACE_DIR).expect("run by the race test"));
    load_and_check(&native().spec("native"), &dir);
}
