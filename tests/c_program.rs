//! Builds tests/c/test_c_api.c with the system C compiler against include/timm.h, links it to
//! the libtimm.so cargo just built, and runs it: the C ABI exactly as a C program uses it.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>, where cargo put libtimm.so.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn build() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let lib_dir = target_dir();
            // `cargo test` links the rlib into test binaries but does not refresh libtimm.so;
            // build it so the C program never runs against a stale library.
            let mut cargo = Command::new(env!("CARGO"));
            cargo.args(["build", "--quiet", "--lib"]).current_dir(root);
            if lib_dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            assert!(
                cargo.status().expect("run cargo").success(),
                "cargo build --lib failed"
            );
            // libtimm.so records its SONAME libtimm.so.0 (build.rs); the install layout provides
            // that name as a symlink, so provide it in the build folder too.
            let soname = lib_dir.join("libtimm.so.0");
            if std::fs::symlink_metadata(&soname).is_err() {
                std::os::unix::fs::symlink("libtimm.so", &soname)
                    .expect("create libtimm.so.0 symlink");
            }
            assert!(
                lib_dir.join("libtimm.so").exists(),
                "libtimm.so not found in {}",
                lib_dir.display()
            );
            let out = lib_dir.join("c-tests");
            std::fs::create_dir_all(&out).unwrap();
            let bin = out.join("test_c_api");
            let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
            let status = Command::new(&cc)
                .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-o"])
                .arg(&bin)
                .arg(root.join("tests/c/test_c_api.c"))
                .arg(format!("-I{}", root.join("include").display()))
                .arg(format!("-L{}", lib_dir.display()))
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
                .args(["-ltimm", "-lpthread", "-lm"])
                .status()
                .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
            assert!(status.success(), "compiling tests/c/test_c_api.c failed");
            bin
        })
        .clone()
}

/// Splits `items` round-robin into one share per core (at most 4) and runs `check` on each share
/// on its own thread, so the C processes of a share run beside the others'; panics with the first
/// failure a share reports.
fn in_shares<T: Sync>(items: &[T], check: impl Fn(Vec<&T>) -> Result<(), String> + Sync) {
    let procs = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..procs)
            .map(|k| {
                let share: Vec<&T> = items.iter().skip(k).step_by(procs).collect();
                let check = &check;
                s.spawn(move || check(share))
            })
            .collect();
        for r in runs {
            if let Err(what) = r.join().expect("C program runner") {
                panic!("{what}");
            }
        }
    });
}

fn run(args: &[String], env: &[(&str, &str)]) -> (bool, String) {
    init_runtime();
    let mut cmd = Command::new(build());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    (out.status.success(), text)
}

#[test]
fn c_program_reproduces_timm_logits_for_every_fixture_folder() {
    let mut pairs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // Encoder towers (output=tokens) have their own C-ABI tests in tests/native.
    for f in fixtures().into_iter().filter(|f| f.output == "logits") {
        for mode in f.folders.keys() {
            let folder = f.folder(mode).unwrap();
            if seen.insert(folder.clone()) {
                pairs.push([
                    folder.display().to_string(),
                    fixtures_dir().join(&f.reference).display().to_string(),
                ]);
            }
        }
    }
    assert!(
        seen.len() >= 13,
        "expected the foundation fixtures, found {}",
        seen.len()
    );
    // Hundreds of folders, one model each: a C process per core, each checking its share,
    // keeps this test from being most of the suite's serial time.
    in_shares(&pairs, |share| {
        let mut args = vec!["check".to_string()];
        args.extend(share.into_iter().flatten().cloned());
        match run(&args, &[]) {
            (true, _) => Ok(()),
            (false, _) => Err("C program failed".into()),
        }
    });
}

#[test]
fn c_program_gets_timms_feature_maps_for_every_family() {
    // For every fixture with features_only references: the default out_indices and the first
    // custom configuration, through timm_infer_outputs from C.
    let dir = fixtures_dir();
    let mut families = std::collections::BTreeSet::new();
    let mut checks = Vec::new();
    for f in fixtures() {
        // timm's Swin, MambaOut and Sequencer features_only maps are NHWC; their own tests
        // compare them permuted.
        if f.family.starts_with("swin_transformer")
            || ["mambaout", "sequencer"].contains(&f.family.as_str())
        {
            continue;
        }
        let refs = feature_map_refs(&f);
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(&f.reference).join("meta.json")).unwrap(),
        )
        .unwrap();
        for (k, r) in refs.iter().enumerate().take(2) {
            let entry = &meta["feature_maps"][k];
            let input = match entry["input"].as_str() {
                Some(file) => dir.join(&f.reference).join(file),
                None => dir.join(&f.reference).join("input.f32"),
            };
            let shape: Vec<String> = r.input_shape.iter().map(|d| d.to_string()).collect();
            let opts: Vec<String> = r
                .options
                .iter()
                .filter(|(k, _)| k != "output")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let mut args = vec![
                "fmaps".to_string(),
                f.folder("native").unwrap().display().to_string(),
                input.display().to_string(),
                shape.join(","),
                if opts.is_empty() {
                    "-".into()
                } else {
                    opts.join(";")
                },
            ];
            for o in entry["outputs"].as_array().unwrap() {
                args.push(
                    dir.join(&f.reference)
                        .join(o["file"].as_str().unwrap())
                        .display()
                        .to_string(),
                );
            }
            checks.push((format!("{} feature maps {k}", f.name), args));
            families.insert(f.family.clone());
        }
    }
    assert!(families.len() >= 5, "feature maps checked for {families:?}");
    // One C process per check, as many at once as there are cores.
    in_shares(&checks, |share| {
        match share.into_iter().find(|(_, args)| !run(args, &[]).0) {
            Some((what, _)) => Err(format!("{what}: C program failed")),
            None => Ok(()),
        }
    });
}

#[test]
fn c_program_error_paths_return_statuses_and_messages() {
    let f = fixture("test_resnet");
    let (ok, text) = run(
        &[
            "errors".into(),
            f.folder("onnx_stripped").unwrap().display().to_string(),
        ],
        &[],
    );
    assert!(
        ok && text.contains("errors: 0 failure(s)"),
        "C error-path checks failed"
    );
}

#[test]
fn c_program_eight_threads_match_single_thread() {
    let f = fixture("test_vit");
    let (ok, text) = run(
        &[
            "threads".into(),
            f.folder("onnx_stripped").unwrap().display().to_string(),
            fixtures_dir().join(&f.reference).display().to_string(),
        ],
        &[],
    );
    assert!(ok && text.contains("0 differ"), "threaded results differ");
}

#[test]
fn missing_runtime_is_an_error_listing_the_places_tried() {
    let f = fixture("test_resnet");
    let (ok, text) = run(
        &[
            "no-runtime".into(),
            f.folder("onnx_stripped").unwrap().display().to_string(),
        ],
        &[("TIMM_ORT_LIBRARY", "/nonexistent/libonnxruntime.so.1.31.1")],
    );
    assert!(ok, "missing runtime was not reported as expected");
    assert!(
        text.contains("/nonexistent/libonnxruntime.so.1.31.1"),
        "{text}"
    );
}
