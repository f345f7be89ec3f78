//! Exported ONNX files (timm_model_export_onnx / timm_model_export_triton) from every fixture
//! load in ONNX Runtime and OpenVINO from their own Python packages and give timm's logits
//! within 1e-4 at batch 2 and 1; onnx.checker passes; metadata round-trips; forced external
//! data loads; Triton's config.pbtxt parses with Triton's own protobuf and matches the file.
//! The Python side is tests/export_interop.py in the venv scripts/setup-test-python makes.

mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use timm::ffi::export::{timm_model_export_onnx, timm_model_export_triton};
use timm::TimmStatus;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TOL: f64 = 1e-4;

fn venv_python() -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("scripts/setup-test-python"))
        .output()
        .expect("run scripts/setup-test-python");
    assert!(
        out.status.success(),
        "scripts/setup-test-python failed (it needs PyPI the first time):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Path::new(ROOT).join(".venv-test/bin/python")
}

fn export(m: &CModel, path: &Path) -> Result<(), CError> {
    let p = CString::new(path.to_str().unwrap()).unwrap();
    match timm_model_export_onnx(m.0, p.as_ptr()) {
        TimmStatus::TIMM_OK => Ok(()),
        status => Err(CError {
            status,
            message: last_error(),
        }),
    }
}

/// The metadata the file must carry, built from the model through the Rust API (the round
/// trip) and checked here against what the fixture says independently.
fn expected_metadata(f: &Fixture, spec: &str, options: &[(&str, &str)]) -> serde_json::Value {
    let mut o = timm::options::Options::new();
    for (k, v) in options {
        o.set(k, v).unwrap();
    }
    let model = timm::model::Model::create(spec, true, &o.parse().unwrap()).unwrap();
    let meta: serde_json::Map<String, serde_json::Value> = timm::export::metadata(&model)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    assert_eq!(meta["timm.architecture"], f.arch.as_str());
    let dc: serde_json::Value =
        serde_json::from_str(meta["timm.data_config"].as_str().unwrap()).unwrap();
    let r = reference(f);
    assert_eq!(dc["input_size"], serde_json::json!(r.input_shape[1..]));
    let labels: Vec<serde_json::Value> =
        serde_json::from_str(meta["timm.label_names"].as_str().unwrap()).unwrap();
    assert!(labels.is_empty() || labels.len() as i64 == r.logits_shape[1]);
    let want_output = if f.output == "tokens" {
        "tokens"
    } else {
        "logits"
    };
    assert_eq!(meta["timm.output"], want_output);
    serde_json::Value::Object(meta)
}

struct Case {
    fixture: Fixture,
    mode: &'static str,
    options: Vec<(&'static str, &'static str)>,
    tag: &'static str,
    triton_batch: Option<u32>,
}

fn case_json(c: &Case, dir: &Path) -> serde_json::Value {
    let f = &c.fixture;
    let spec = f.spec(c.mode);
    let m = CModel::create(&spec, true, &c.options)
        .unwrap_or_else(|e| panic!("{} [{}]: {e:?}", f.name, c.mode));
    let name = format!("{}-{}{}", f.name, c.mode, c.tag);
    let (file, triton) = match c.triton_batch {
        None => {
            let file = dir.join(format!("{name}.onnx"));
            export(&m, &file).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            (file, None)
        }
        Some(b) => {
            let repo = CString::new(dir.join("triton").to_str().unwrap()).unwrap();
            let n = CString::new(name.as_str()).unwrap();
            let st = timm_model_export_triton(m.0, repo.as_ptr(), n.as_ptr(), b);
            assert_eq!(st, TimmStatus::TIMM_OK, "{name}: {}", last_error());
            let d = dir.join("triton").join(&name);
            (d.join("1/model.onnx"), Some(d.join("config.pbtxt")))
        }
    };
    let r = fixtures_dir().join(&f.reference);
    let rf = reference(f);
    let native = c.mode == "native";
    // Families that declare free height and width (convnets): run them at another size too
    // (a multiple of the largest stride, 32, as timm needs for its stride-2 paths to agree).
    // Transformers with fixed-size position tables or window masks take one size.
    let any_size = timm::graph::family_for(&f.arch).is_some_and(|fam| fam.any_size);
    let other = (native && any_size)
        .then(|| serde_json::json!([rf.input_shape[2] + 32, rf.input_shape[3] + 64]));
    serde_json::json!({
        "name": name,
        "file": file,
        "input": r.join("input.f32"),
        "input_shape": rf.input_shape,
        "logits": r.join("logits.f32"),
        "logits_shape": rf.logits_shape,
        "tol": TOL,
        "metadata": expected_metadata(f, &spec, &c.options),
        "portable": native,
        "other_size": other,
        "triton": triton,
        "max_batch": c.triton_batch.unwrap_or(0),
    })
}

#[test]
fn exports_load_in_onnxruntime_and_openvino_with_timm_logits() {
    let py = venv_python();
    let dir = tempfile::tempdir().unwrap();
    // TIMM_TEST_KEEP=1 keeps the exported files for a look after a failure.
    let dir_path = if std::env::var_os("TIMM_TEST_KEEP").is_some() {
        let p = dir.keep();
        eprintln!("exported files kept in {}", p.display());
        p
    } else {
        dir.path().to_path_buf()
    };
    let mut cases = Vec::new();
    for f in fixtures() {
        for mode in ["native", "onnx_embedded", "onnx_stripped", "onnx_external"] {
            if f.folder(mode).is_none() {
                continue;
            }
            let graph = if mode == "native" { "native" } else { "onnx" };
            cases.push(Case {
                fixture: f.clone(),
                mode,
                options: with_fixture_output(&f, &[("graph", graph)]),
                tag: "",
                triton_batch: None,
            });
        }
    }
    assert!(cases.iter().filter(|c| c.mode == "native").count() >= 40);
    // Forced external data (the >2 GB layout), native and from a folder's model.onnx.
    for (name, mode, graph) in [
        ("test_vit", "native", "native"),
        ("test_resnet", "onnx_stripped", "onnx"),
    ] {
        cases.push(Case {
            fixture: fixture(name),
            mode,
            options: vec![("graph", graph), ("export_external_data", "true")],
            tag: "-external",
            triton_batch: None,
        });
    }
    // Triton repositories, batched and not.
    for (name, b) in [("resnet18-tiny", 8), ("deit_tiny", 0)] {
        cases.push(Case {
            fixture: fixture(name),
            mode: "native",
            options: vec![("graph", "native")],
            tag: "-triton",
            triton_batch: Some(b),
        });
    }
    let mut manifest: Vec<serde_json::Value> =
        cases.iter().map(|c| case_json(c, &dir_path)).collect();
    // The same files through the command-line tool, run from an unrelated folder.
    for name in [
        "effnet_mnv3_small-native",
        "vit_small_patch8_qknorm_avgmax-native",
    ] {
        let mut case = manifest.iter().find(|m| m["name"] == name).unwrap().clone();
        let file = dir_path.join(format!("{name}-cli.onnx"));
        let spec = fixture(name.trim_end_matches("-native")).spec("native");
        let out = Command::new(env!("CARGO_BIN_EXE_timm"))
            .args(["export", &spec, file.to_str().unwrap()])
            .current_dir(&dir_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        case["name"] = format!("{name}-cli").into();
        case["file"] = file.to_str().unwrap().into();
        manifest.push(case);
    }
    for (c, m) in cases.iter().zip(&manifest) {
        if c.tag == "-external" {
            let file = PathBuf::from(m["file"].as_str().unwrap());
            let data = std::fs::metadata(timm::export::onnx_writer::external_path(&file)).unwrap();
            let inline = std::fs::metadata(&file).unwrap();
            assert!(
                data.len() > inline.len(),
                "{}: weights not external",
                c.fixture.name
            );
        }
    }
    let mpath = dir_path.join("manifest.json");
    std::fs::write(&mpath, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let out = Command::new(&py)
        .arg(Path::new(ROOT).join("tests/export_interop.py"))
        .arg(&mpath)
        .output()
        .expect("run tests/export_interop.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "exported files failed in Python ({}):\n{text}",
        out.status
    );
}

#[test]
fn export_errors_are_statuses_with_messages() {
    let f = fixture("resnet18-tiny");
    let m = CModel::create(&f.spec("native"), true, &[]).unwrap();
    let e = export(&m, Path::new("")).unwrap_err();
    assert_eq!(
        e.status,
        TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
        "{}",
        e.message
    );
    let e = export(&m, Path::new("/nonexistent-folder/x/model.onnx")).unwrap_err();
    assert_eq!(e.status, TimmStatus::TIMM_ERR_NOT_FOUND, "{}", e.message);
    assert!(
        e.message.contains("/nonexistent-folder/x/model.onnx"),
        "{}",
        e.message
    );
    let dir = tempfile::tempdir().unwrap();
    let e = export(&m, dir.path()).unwrap_err();
    assert!(e.message.contains("is a folder"), "{}", e.message);
    assert_eq!(
        timm_model_export_onnx(std::ptr::null(), c"x.onnx".as_ptr()),
        TimmStatus::TIMM_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        timm_model_export_onnx(m.0, std::ptr::null()),
        TimmStatus::TIMM_ERR_INVALID_ARGUMENT
    );
    let repo = CString::new(dir.path().to_str().unwrap()).unwrap();
    let st = timm_model_export_triton(m.0, repo.as_ptr(), c"../escape".as_ptr(), 4);
    assert_eq!(st, TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("../escape"));
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}
