//! The `timm` command-line tool: its subcommands, `--json` output and exit codes (the C ABI's
//! status values).

mod common;

use std::process::{Command, Output};

use common::*;

fn timm(args: &[&str]) -> Output {
    init_runtime();
    Command::new(env!("CARGO_BIN_EXE_timm"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run timm")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "timm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn chelsea() -> String {
    fixtures_dir()
        .join("images/chelsea.png")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn classify_json_matches_the_library() {
    let spec = fixture("test_convnext").spec("native");
    let v = json(&timm(&[
        "classify",
        &spec,
        &chelsea(),
        &chelsea(),
        "--k",
        "3",
        "--json",
    ]));
    let m = timm::model::Model::create(&spec, true, &Default::default()).unwrap();
    let img = timm::preprocess::decode_file(std::path::Path::new(&chelsea())).unwrap();
    let want = m.classify(&[img], 3).unwrap().remove(0);
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let top = row["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        for (got, w) in top.iter().zip(&want) {
            assert_eq!(got["index"], w.index);
            assert!((got["probability"].as_f64().unwrap() - w.probability as f64).abs() < 1e-6);
        }
    }
    let text = timm(&["classify", &spec, &chelsea(), "--k=2"]);
    assert!(text.status.success());
    assert_eq!(String::from_utf8_lossy(&text.stdout).lines().count(), 3);
}

#[test]
fn info_reports_architecture_data_config_and_outputs() {
    let f = fixture("resnet18-tiny");
    let v = json(&timm(&[
        "info",
        &f.spec("native"),
        "--json",
        "--opt",
        "output=features",
    ]));
    assert_eq!(v["architecture"], "resnet18");
    assert_eq!(v["family"], "resnet");
    assert_eq!(v["input_size"], serde_json::json!([3, 32, 32]));
    assert_eq!(v["data_config"]["interpolation"], "bicubic");
    assert_eq!(v["num_classes"], 4);
    assert_eq!(v["output"], "features");
    assert_eq!(v["output_dim"], 8);
    assert!(v["providers"].as_str().unwrap().contains("CPU"));
}

#[test]
fn export_writes_onnx_and_a_triton_repository() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let repo = dir.path().join("repo");
    let spec = fixture("deit_tiny").spec("native");
    let o = timm(&[
        "export",
        &spec,
        out.to_str().unwrap(),
        "--output",
        "features",
        "--triton",
        repo.to_str().unwrap(),
        "--name",
        "deit",
        "--max-batch",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = timm::onnx::scan(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(info.inputs, ["input"]);
    let cfg = std::fs::read_to_string(repo.join("deit/config.pbtxt")).unwrap();
    assert!(cfg.contains("max_batch_size: 4"), "{cfg}");
    // features of deit_tiny: embed dim 32 (the fixture's num_features).
    let m = timm::model::Model::create(&spec, true, &{
        let mut o = timm::options::Options::new();
        o.set("output", "features").unwrap();
        o.parse().unwrap()
    })
    .unwrap();
    assert!(
        cfg.contains(&format!("dims: [ {} ]", m.output_dim())),
        "{cfg}"
    );
    assert!(repo.join("deit/1/model.onnx").is_file());
}

#[test]
fn bench_json_has_batch_1_and_n() {
    let spec = fixture("resnet18-tiny").spec("native");
    let v = json(&timm(&[
        "bench", &spec, "--batch", "3", "--iters", "2", "--json",
    ]));
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["batch"], 1);
    assert_eq!(r[1]["batch"], 3);
    assert!(r[1]["images_per_s"].as_f64().unwrap() > 0.0);
    // No terminal on stderr: no progress bar.
    let o = timm(&["bench", &spec, "--iters", "2"]);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn exit_codes_are_c_abi_statuses() {
    let code = |args: &[&str]| {
        let o = timm(args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (o.status.code().unwrap(), err)
    };
    let (c, e) = code(&[]);
    assert_eq!(c, timm::TimmStatus::TIMM_ERR_INVALID_ARGUMENT as i32);
    assert!(
        e.starts_with("timm: TIMM_ERR_INVALID_ARGUMENT") && e.contains("usage"),
        "{e}"
    );
    let (c, e) = code(&["classify", "local:/nonexistent-timm-folder", "x.png"]);
    assert_eq!(c, timm::TimmStatus::TIMM_ERR_NOT_FOUND as i32, "{e}");
    let spec = fixture("resnet18-tiny").spec("native");
    let (c, e) = code(&["info", &spec, "--opt", "threads=2"]);
    assert_eq!(c, timm::TimmStatus::TIMM_ERR_INVALID_ARGUMENT as i32);
    assert!(e.contains("unknown option `threads`"), "{e}");
    let (c, e) = code(&["classify", &spec, "/nonexistent.png"]);
    assert_ne!(c, 0, "{e}");
    assert!(e.contains("/nonexistent.png"), "{e}");
    let (c, _) = code(&["frobnicate"]);
    assert_eq!(c, timm::TimmStatus::TIMM_ERR_INVALID_ARGUMENT as i32);
    let (c, e) = code(&["export", &spec]);
    assert_eq!(c, timm::TimmStatus::TIMM_ERR_INVALID_ARGUMENT as i32);
    assert!(e.contains("OUT.onnx"), "{e}");
}
