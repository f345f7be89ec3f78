//! A corpus of hostile inputs, driven through the C ABI exactly as a C caller would: malformed
//! model folders (safetensors, config.json, model.onnx), malformed specs, and misused
//! inference / image calls. Each case must fail with a specific status and a message that says
//! what is wrong; none may crash, and none may report `TIMM_ERR_INTERNAL` (a caught panic).
//!
//! Folders are built at test time in temp dirs from the `test_resnet` fixture (its stripped
//! model.onnx binds every weight from model.safetensors, so hostile weights reach the
//! safetensors validation and the ONNX binding checks without a native graph family).
//! A second test repeats the cheap cases and checks the process does not grow (no leaks).

mod common;
use common::*;

use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};
use timm::ffi::*;
use timm::TimmStatus::{self, *};

type Files = Vec<(String, Vec<u8>)>;

struct Case {
    name: String,
    /// `TIMM_OK` for inputs that must be accepted (NaN and Inf are computed, not refused).
    want: TimmStatus,
    needles: Vec<String>,
    /// Cheap and self-contained: repeated by the leak check.
    repeat: bool,
    run: Box<dyn Fn() -> Result<(), CError> + Send + Sync>,
}

fn case(
    name: impl Into<String>,
    want: TimmStatus,
    needles: &[&str],
    run: impl Fn() -> Result<(), CError> + Send + Sync + 'static,
) -> Case {
    Case {
        name: name.into(),
        want,
        needles: needles.iter().map(|s| s.to_string()).collect(),
        repeat: true,
        run: Box::new(run),
    }
}

fn expensive(mut c: Case) -> Case {
    c.repeat = false;
    c
}

fn status(st: TimmStatus) -> Result<(), CError> {
    if st == TIMM_OK {
        Ok(())
    } else {
        Err(CError {
            status: st,
            message: last_error(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Folders

/// Inputs found by fuzzing, kept as files (tests/hostile/).
fn hostile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

fn base_dir() -> PathBuf {
    fixture("test_resnet").folder("onnx_stripped").unwrap()
}

fn base_file(name: &str) -> Vec<u8> {
    std::fs::read(base_dir().join(name)).unwrap()
}

/// config.json, model.onnx and model.safetensors of the fixture.
fn base_files() -> Files {
    ["config.json", "model.onnx", "model.safetensors"]
        .iter()
        .map(|n| (n.to_string(), base_file(n)))
        .collect()
}

fn with(mut files: Files, name: &str, bytes: Vec<u8>) -> Files {
    files.retain(|(n, _)| n != name);
    files.push((name.to_string(), bytes));
    files
}

fn without(mut files: Files, name: &str) -> Files {
    files.retain(|(n, _)| n != name);
    files
}

fn create_in(files: &Files, options: &[(&str, &str)]) -> Result<(), CError> {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    CModel::create(&format!("local:{}", dir.path().display()), true, options).map(drop)
}

/// A folder with only `config.json`, created with `pretrained=false` (seeded random weights).
fn create_config_only(config: &[u8]) -> Result<(), CError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    CModel::create(&format!("local:{}", dir.path().display()), false, &[]).map(drop)
}

fn folder_case(name: &str, files: Files, want: TimmStatus, needles: &[&str]) -> Case {
    case(name, want, needles, move || create_in(&files, &[]))
}

// safetensors helpers -------------------------------------------------------------------

fn st_split(buf: &[u8]) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&buf[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), buf[8 + n..].to_vec())
}

fn st_join(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The fixture's weights with the header edited by `f` (the data section unchanged).
fn st_edit(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Vec<u8> {
    let (mut header, data) = st_split(&base_file("model.safetensors"));
    f(&mut header);
    st_join(&Value::Object(header).to_string(), &data)
}

fn st_case(name: &str, bytes: Vec<u8>, want: TimmStatus, needles: &[&str]) -> Case {
    folder_case(
        name,
        with(base_files(), "model.safetensors", bytes),
        want,
        needles,
    )
}

fn offsets(h: &serde_json::Map<String, Value>, name: &str) -> (u64, u64) {
    let o = &h[name]["data_offsets"];
    (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
}

fn set_offsets(h: &mut serde_json::Map<String, Value>, name: &str, begin: u64, end: u64) {
    h.get_mut(name).unwrap()["data_offsets"] = json!([begin, end]);
}

fn safetensors_cases() -> Vec<Case> {
    let orig = base_file("model.safetensors");
    let (_, data) = st_split(&orig);
    let data_len = data.len() as u64;
    let with_len = |n: u64| {
        let mut v = n.to_le_bytes().to_vec();
        v.extend_from_slice(&orig[8..]);
        v
    };
    let header_text = {
        let n = u64::from_le_bytes(orig[..8].try_into().unwrap()) as usize;
        String::from_utf8(orig[8..8 + n].to_vec()).unwrap()
    };
    let inv = TIMM_ERR_INVALID_MODEL;
    vec![
        st_case(
            "safetensors: empty file",
            vec![],
            inv,
            &["model.safetensors", "0 bytes long"],
        ),
        st_case(
            "safetensors: header length u64::MAX",
            with_len(u64::MAX),
            inv,
            &["header length 18446744073709551615 exceeds the 100000000-byte limit"],
        ),
        st_case(
            "safetensors: header length > 100 MB",
            with_len(100_000_001),
            inv,
            &["exceeds the 100000000-byte limit"],
        ),
        st_case(
            "safetensors: header length past EOF",
            with_len(orig.len() as u64),
            inv,
            &["runs past the end"],
        ),
        st_case(
            "safetensors: header does not start with `{`",
            st_join(&format!(" {}", header_text.trim_end()), &data),
            inv,
            &["does not start with `{`"],
        ),
        st_case(
            "safetensors: header is a JSON array",
            st_join(&format!("[{header_text}]"), &data),
            inv,
            &["does not start with `{`"],
        ),
        st_case(
            "safetensors: non-UTF-8 header",
            {
                let mut h = header_text.clone().into_bytes();
                // Inside the first tensor name: still `{`-first JSON, but not UTF-8.
                h[2] = 0xff;
                let mut v = (h.len() as u64).to_le_bytes().to_vec();
                v.extend_from_slice(&h);
                v.extend_from_slice(&data);
                v
            },
            inv,
            &["bad header"],
        ),
        st_case(
            "safetensors: duplicate tensor name",
            {
                // Repeat the fc.bias entry verbatim: the safetensors crate would keep the last.
                let (h, _) = st_split(&orig);
                let entry = format!("\"fc.bias\":{}", h["fc.bias"]);
                let text = format!("{{{entry},{}", &header_text[1..]);
                st_join(&text, &data)
            },
            inv,
            &["tensor name `fc.bias` appears twice"],
        ),
        st_case(
            "safetensors: data_offsets past the data",
            st_edit(|h| {
                let (b, _) = offsets(h, "fc.weight");
                set_offsets(h, "fc.weight", b, data_len + 4096);
            }),
            inv,
            &["not a valid safetensors file"],
        ),
        st_case(
            "safetensors: begin > end",
            st_edit(|h| {
                let (b, e) = offsets(h, "fc.bias");
                set_offsets(h, "fc.bias", e, b);
            }),
            inv,
            &["not a valid safetensors file", "fc.bias"],
        ),
        st_case(
            "safetensors: hole between tensors",
            {
                // Shift every tensor after fc.bias by 4 bytes and pad the data to match.
                let (mut h, mut d) = st_split(&orig);
                let (b0, _) = offsets(&h, "fc.bias");
                for v in h.values_mut() {
                    if let Some(o) = v.get_mut("data_offsets") {
                        let (b, e) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
                        if b >= b0 {
                            *o = json!([b + 4, e + 4]);
                        }
                    }
                }
                d.splice(b0 as usize..b0 as usize, [0u8; 4]);
                st_join(&Value::Object(h).to_string(), &d)
            },
            inv,
            &["invalid offset for tensor `fc.bias`"],
        ),
        st_case(
            "safetensors: overlapping tensors",
            st_edit(|h| {
                let (b, e) = offsets(h, "fc.bias");
                let (_, e2) = offsets(h, "fc.weight");
                // fc.weight starts inside fc.bias.
                set_offsets(h, "fc.weight", b + 4, e2 - (e - b) + 4);
            }),
            inv,
            &["not a valid safetensors file"],
        ),
        st_case(
            "safetensors: offsets near u64::MAX",
            st_edit(|h| set_offsets(h, "fc.bias", u64::MAX - 39, u64::MAX)),
            inv,
            &["not a valid safetensors file"],
        ),
        st_case(
            "safetensors: end - begin != numel x dtype size",
            st_edit(|h| h.get_mut("fc.bias").unwrap()["shape"] = json!([11])),
            inv,
            &[
                "not a valid safetensors file",
                "invalid shape, data type, or offset",
            ],
        ),
        st_case(
            "safetensors: shape product overflows",
            st_edit(|h| {
                h.get_mut("fc.bias").unwrap()["shape"] = json!([4611686018427387904u64, 4])
            }),
            inv,
            &[
                "not a valid safetensors file",
                "overflow computing buffer size",
            ],
        ),
        st_case(
            "safetensors: trailing bytes",
            {
                let mut v = orig.clone();
                v.extend_from_slice(&[0; 16]);
                v
            },
            inv,
            &["not a valid safetensors file"],
        ),
        st_case(
            "safetensors: truncated file",
            orig[..orig.len() / 2].to_vec(),
            inv,
            &["not a valid safetensors file"],
        ),
        st_case(
            "safetensors: dtype unknown to the format",
            st_edit(|h| h.get_mut("fc.bias").unwrap()["dtype"] = json!("Q4")),
            inv,
            &["not a valid safetensors file", "Q4"],
        ),
        st_case(
            "safetensors: dtype this library does not read",
            st_edit(|h| {
                // F8_E4M3 is a valid safetensors dtype of size 1: make the sizes agree.
                let o = h.get_mut("fc.bias").unwrap();
                o["dtype"] = json!("F8_E4M3");
                o["shape"] = json!([40]);
            }),
            inv,
            &["tensor `fc.bias` has dtype F8_E4M3, which this library does not read"],
        ),
        st_case(
            "safetensors: int tensor where a float is needed",
            st_edit(|h| h.get_mut("fc.weight").unwrap()["dtype"] = json!("I32")),
            inv,
            &["fc.weight", "I32", "model.onnx declares ONNX type 1"],
        ),
        st_case(
            "safetensors: header nested 100000 deep",
            {
                let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
                st_join(&format!("{{\"a\":{deep}}}"), &[])
            },
            inv,
            &["not a valid safetensors file", "recursion limit"],
        ),
        st_case(
            "safetensors: tensor entry is not an object",
            st_join(r#"{"fc.bias":5}"#, &[]),
            inv,
            &["not a valid safetensors file"],
        ),
        st_case(
            "onnx+safetensors: stripped initializer dims disagree with the weights",
            st_edit(|h| h.get_mut("conv1.0.weight").unwrap()["shape"] = json!([16, 27])),
            inv,
            &[
                "weight `conv1.0.weight` has shape [16, 27]",
                "model.onnx declares [16, 3, 3, 3]",
            ],
        ),
        st_case(
            "onnx+safetensors: initializer missing from the weights",
            st_edit(|h| {
                let v = h.remove("fc.weight").unwrap();
                h.insert("fc.weight_renamed".into(), v);
            }),
            inv,
            &["model.onnx needs initializer `fc.weight`", "no such tensor"],
        ),
    ]
}

// config.json -----------------------------------------------------------------------------

fn base_config() -> Value {
    serde_json::from_slice(&base_file("config.json")).unwrap()
}

fn config_case(name: &str, cfg: Vec<u8>, want: TimmStatus, needles: &[&str]) -> Case {
    folder_case(name, with(base_files(), "config.json", cfg), want, needles)
}

/// The fixture config with the value at `path` (keys, `/`-separated) replaced.
fn config_with(path: &str, v: Value) -> Vec<u8> {
    let mut cfg = base_config();
    let mut slot = &mut cfg;
    for key in path.split('/') {
        slot = &mut slot[key];
    }
    *slot = v;
    cfg.to_string().into_bytes()
}

fn config_cases() -> Vec<Case> {
    let inv = TIMM_ERR_INVALID_MODEL;
    let mut cases = vec![
        config_case("config: not JSON", b"{not json".to_vec(), inv, &["config.json", "not valid JSON"]),
        config_case("config: empty file", vec![], inv, &["not valid JSON", "EOF"]),
        config_case("config: not an object", b"[1, 2]".to_vec(), inv, &["must hold a JSON object"]),
        config_case(
            "config: missing architecture",
            {
                let mut c = base_config();
                c.as_object_mut().unwrap().remove("architecture");
                c.to_string().into_bytes()
            },
            inv,
            &["has no `architecture`"],
        ),
        config_case("config: empty architecture", config_with("architecture", json!("")), inv, &["`architecture` is empty"]),
        config_case(
            "config: NaN crop_pct",
            br#"{"architecture":"test_resnet","num_classes":10,"pretrained_cfg":{"crop_pct":NaN}}"#.to_vec(),
            inv,
            &["not valid JSON"],
        ),
        config_case(
            "config: crop_pct 1e400",
            br#"{"architecture":"test_resnet","num_classes":10,"pretrained_cfg":{"crop_pct":1e400}}"#.to_vec(),
            inv,
            &["not valid JSON", "out of range"],
        ),
        config_case("config: negative crop_pct", config_with("pretrained_cfg/crop_pct", json!(-0.5)), inv, &["`crop_pct` is -0.5; expected a number in (0, 10]"]),
        config_case("config: zero crop_pct", config_with("pretrained_cfg/crop_pct", json!(0.0)), inv, &["`crop_pct` is 0"]),
        config_case("config: std 0", config_with("pretrained_cfg/std", json!([0.5, 0.0, 0.5])), inv, &["`std` contains 0"]),
        config_case(
            "config: absurd input_size 10^9",
            config_with("pretrained_cfg/input_size", json!([3, 1_000_000_000u64, 160])),
            inv,
            &["`input_size` is 1000000000; the limit is 8192"],
        ),
        config_case("config: zero input_size", config_with("pretrained_cfg/input_size", json!([3, 0, 160])), inv, &["`input_size` has a zero dimension"]),
        config_case("config: absurd num_classes", config_with("num_classes", json!(99_999_999_999u64)), inv, &["`num_classes` is 99999999999; the limit is 1048576"]),
        config_case(
            "config: nested 100000 deep",
            {
                let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
                let mut c = base_config().to_string();
                c.truncate(c.len() - 1);
                format!("{c},\"junk\":{deep}}}").into_bytes()
            },
            inv,
            &["not valid JSON", "recursion limit"],
        ),
        expensive(config_case(
            "config: 2,000,000 label names for 10 classes",
            config_with("label_names", Value::Array(vec![json!(0); 2_000_000])),
            inv,
            &["has 2000000 label names for 10 classes"],
        )),
        expensive(config_case(
            "config: 10^7 label names (over the size limit)",
            config_with("label_names", Value::Array(vec![json!(0); 10_000_000])),
            inv,
            &["over the limit of 16777216 bytes"],
        )),
        config_case("config: label index past num_classes", config_with("label_names", json!({"12": "x"})), inv, &["`label_names` has index 12 but the model has 10 classes"]),
        config_case("config: unknown crop_mode", config_with("pretrained_cfg/crop_mode", json!("zoom")), inv, &["`crop_mode` is `zoom`"]),
        config_case(
            "config: unknown interpolation",
            config_with("pretrained_cfg/interpolation", json!("cubic")),
            inv,
            &["unknown interpolation \"cubic\""],
        ),
        config_case(
            "config: input channels disagree with model.onnx",
            {
                let mut c = base_config();
                // model_args.in_chans rewrites input_size[0], as timm does: set both.
                c["model_args"]["in_chans"] = json!(1);
                c["pretrained_cfg"]["input_size"] = json!([1, 64, 64]);
                c["pretrained_cfg"]["mean"] = json!([0.5]);
                c["pretrained_cfg"]["std"] = json!([0.5]);
                c.to_string().into_bytes()
            },
            inv,
            &["the graph takes input channels 3 but preprocessing produces [1, 64, 64]"],
        ),
        config_case(
            "config: num_classes disagrees with model.onnx",
            {
                let mut c = base_config();
                c["num_classes"] = json!(7);
                c["pretrained_cfg"]["num_classes"] = json!(7);
                c.to_string().into_bytes()
            },
            inv,
            &["outputs 10 values per image but config.json says num_classes = 7"],
        ),
    ];
    // Wrong JSON types for every field the library reads.
    let wrong_types: &[(&str, Value, &str)] = &[
        (
            "architecture",
            json!(5),
            "`architecture` must be a string, not a number",
        ),
        (
            "num_classes",
            json!("10"),
            "`num_classes` must be a non-negative integer, not a string",
        ),
        (
            "num_classes",
            json!(-1),
            "`num_classes` must be a non-negative integer",
        ),
        (
            "num_classes",
            json!(2.5),
            "`num_classes` must be a non-negative integer",
        ),
        (
            "num_features",
            json!("32"),
            "`num_features` must be a non-negative integer",
        ),
        ("global_pool", json!(1), "`global_pool` must be a string"),
        (
            "pretrained_cfg",
            json!([]),
            "`pretrained_cfg` must be an object, not an array",
        ),
        (
            "model_args",
            json!("x"),
            "`model_args` must be an object or null, not a string",
        ),
        (
            "model_args/in_chans",
            json!("3"),
            "`model_args.in_chans` must be a non-negative integer",
        ),
        (
            "pretrained_cfg/input_size",
            json!("224"),
            "`input_size` must be an array [channels, height, width]",
        ),
        (
            "pretrained_cfg/input_size",
            json!([3, 160]),
            "`input_size` has 2 entries; expected [channels, height, width]",
        ),
        (
            "pretrained_cfg/test_input_size",
            json!({}),
            "`test_input_size` must be an array",
        ),
        (
            "pretrained_cfg/mean",
            json!("0.5"),
            "`mean` must be an array of 1 to 16 numbers, not a string",
        ),
        (
            "pretrained_cfg/mean",
            json!([0.5, "x", 0.5]),
            "`mean` must be an array of numbers",
        ),
        (
            "pretrained_cfg/std",
            json!({"r": 1}),
            "`std` must be an array of 1 to 16 numbers, not an object",
        ),
        (
            "pretrained_cfg/crop_pct",
            json!("0.9"),
            "`crop_pct` must be a number, not a string",
        ),
        (
            "pretrained_cfg/interpolation",
            json!(3),
            "`interpolation` must be a string, not a number",
        ),
        (
            "pretrained_cfg/crop_mode",
            json!(true),
            "`crop_mode` must be a string, not a boolean",
        ),
        (
            "pretrained_cfg/fixed_input_size",
            json!("yes"),
            "`fixed_input_size` must be a boolean",
        ),
        (
            "pretrained_cfg/label_offset",
            json!(1000),
            "`label_offset` must be a small integer",
        ),
        (
            "pretrained_cfg/pool_size",
            json!("7"),
            "`pool_size` must be a short array of integers",
        ),
        (
            "label_names",
            json!(5),
            "`label_names` must be a list or an object, not a number",
        ),
        (
            "label_names",
            json!([1, 2]),
            "`label_names entries` must be strings, not a number",
        ),
        (
            "label_descriptions",
            json!([]),
            "`label_descriptions` must be an object, not an array",
        ),
        (
            "label_descriptions",
            json!({"a": 1}),
            "`label_descriptions values` must be strings",
        ),
    ];
    for (path, v, needle) in wrong_types {
        cases.push(config_case(
            &format!("config: {path} = {v}"),
            config_with(path, v.clone()),
            inv,
            &[needle],
        ));
    }
    cases
}

// Folders without the usual files ----------------------------------------------------------

fn folder_cases() -> Vec<Case> {
    let unknown_arch = config_with("architecture", json!("no_such_net"));
    let mut cases = vec![
        folder_case(
            "folder: no config.json",
            without(base_files(), "config.json"),
            TIMM_ERR_NOT_FOUND,
            &["has no config.json"],
        ),
        folder_case(
            "folder: unknown architecture, no model.onnx",
            vec![
                ("config.json".into(), unknown_arch),
                ("model.safetensors".into(), base_file("model.safetensors")),
            ],
            TIMM_ERR_UNSUPPORTED,
            &["architecture `no_such_net` has no native graph builder; supported families:"],
        ),
        folder_case(
            "onnx: random bytes",
            with(base_files(), "model.onnx", pseudo_random(4096)),
            TIMM_ERR_INVALID_MODEL,
            &["model.onnx is not a valid ONNX model"],
        ),
        folder_case(
            "onnx: truncated",
            with(base_files(), "model.onnx", {
                let b = base_file("model.onnx");
                b[..b.len() / 2].to_vec()
            }),
            TIMM_ERR_INVALID_MODEL,
            &["model.onnx is not a valid ONNX model", "truncated"],
        ),
        folder_case(
            "onnx: empty file",
            with(base_files(), "model.onnx", vec![]),
            TIMM_ERR_INVALID_MODEL,
            &["model.onnx is not a valid ONNX model"],
        ),
        folder_case(
            "onnx: stripped initializer location escapes the folder",
            with(
                base_files(),
                "model.onnx",
                // Same length, so every protobuf length prefix stays right.
                replace_all(
                    &base_file("model.onnx"),
                    b"model.safetensors",
                    b"../mo.safetensors",
                ),
            ),
            TIMM_ERR_INVALID_MODEL,
            &[
                "points at `../mo.safetensors`",
                "must be a file in the model folder",
            ],
        ),
        folder_case(
            "onnx: stripped initializer location is an absolute path",
            with(
                base_files(),
                "model.onnx",
                replace_all(
                    &base_file("model.onnx"),
                    b"model.safetensors",
                    b"/ab/c.safetensors",
                ),
            ),
            TIMM_ERR_INVALID_MODEL,
            &[
                "points at `/ab/c.safetensors`",
                "must be a file in the model folder",
            ],
        ),
        folder_case(
            "onnx: external data (not safetensors) outside the folder",
            with(
                base_files(),
                "model.onnx",
                // Left to ONNX Runtime, which must refuse to read a file outside the folder.
                replace_all(
                    &base_file("model.onnx"),
                    b"model.safetensors",
                    b"/etc/../etc/hosts",
                ),
            ),
            TIMM_ERR_RUNTIME,
            &["ONNX Runtime", "external"],
        ),
        folder_case(
            "onnx: protobuf that ONNX Runtime rejects",
            // ir_version 8 and an empty graph: our scanner accepts it, the runtime does not.
            with(base_files(), "model.onnx", vec![0x08, 0x08, 0x3a, 0x00]),
            TIMM_ERR_RUNTIME,
            &["ONNX Runtime"],
        ),
    ];
    // A pickle-only folder is explained once the architecture has a native builder; in a
    // build without one (no family yet) the architecture is what is reported.
    let pickle_files = vec![
        ("config.json".to_string(), base_file("config.json")),
        ("pytorch_model.bin".to_string(), b"\x80\x02}q\x00.".to_vec()),
    ];
    if timm::graph::family_for("test_resnet").is_some() {
        cases.push(folder_case(
            "folder: pickle-only weights",
            pickle_files,
            TIMM_ERR_UNSUPPORTED,
            &[
                "pytorch_model.bin",
                "never unpickles",
                "safetensors.torch.save_file",
                // written into the model folder, not the shell's directory
                "/model.safetensors')",
            ],
        ));
        cases.push(case(
            "native graph: weight shape disagrees with the architecture",
            TIMM_ERR_INVALID_MODEL,
            &[
                "weight `conv1.0.weight` has shape [16, 27]",
                "the architecture needs [16, 3, 3, 3]",
            ],
            || {
                let files = with(
                    base_files(),
                    "model.safetensors",
                    st_edit(|h| h.get_mut("conv1.0.weight").unwrap()["shape"] = json!([16, 27])),
                );
                create_in(&files, &[("graph", "native")])
            },
        ));
        // Found by the `folder` fuzz target: a block string without `k` made the conv padding
        // overflow (a panic in a debug build, a wrapped padding in a release one).
        cases.push(case(
            "model_args: EfficientNet block without a kernel size",
            TIMM_ERR_INVALID_MODEL,
            &["block definition `ir_r1_s5_s2_e4_c24` has no kernel size (`k`)"],
            || {
                create_config_only(
                    &std::fs::read(hostile_dir().join("efficientnet-block-without-kernel.json"))
                        .unwrap(),
                )
            },
        ));
        cases.push(case(
            "model_args: EfficientNet block with a zero kernel",
            TIMM_ERR_INVALID_MODEL,
            &["a convolution with kernel 0x0", "each must be at least 1"],
            || {
                let path = hostile_dir().join("efficientnet-block-without-kernel.json");
                let mut c: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
                c["model_args"]["arch_def"][5] = json!(["ir_r1_k0_s2_e4_c24"]);
                create_config_only(&serde_json::to_vec(&c).unwrap())
            },
        ));
    } else {
        cases.push(folder_case(
            "folder: pickle-only weights (no native family in this build)",
            pickle_files,
            TIMM_ERR_UNSUPPORTED,
            &["has no model.onnx and architecture `test_resnet` has no native graph builder"],
        ));
        cases.push(case(
            "native graph: requested without a native family",
            TIMM_ERR_UNSUPPORTED,
            &["architecture `test_resnet` has no native graph builder; supported families: none in this build"],
            || create_in(&base_files(), &[("graph", "native")]),
        ));
    }
    cases
}

fn pseudo_random(n: usize) -> Vec<u8> {
    // xorshift: deterministic junk, so a failure reproduces.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(
        from.len(),
        to.len(),
        "same-length replacement keeps protobuf lengths valid"
    );
    let mut out = hay.to_vec();
    let mut i = 0;
    let mut n = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
            n += 1;
        } else {
            i += 1;
        }
    }
    assert!(n > 0, "nothing replaced");
    out
}

// Specs ---------------------------------------------------------------------------------------

fn create_raw(spec: &[u8]) -> Result<(), CError> {
    init_runtime();
    let s = CString::new(spec).unwrap();
    // A stale value in `out` must be overwritten with NULL on failure.
    let mut m = std::ptr::NonNull::<TimmModel>::dangling().as_ptr();
    let status = timm_model_create(s.as_ptr(), true, std::ptr::null(), &mut m);
    if status != TIMM_OK {
        assert!(m.is_null(), "*out is not NULL after {status:?}");
        Err(CError {
            status,
            message: last_error(),
        })
    } else {
        timm_free(m);
        Ok(())
    }
}

fn spec_case(name: &str, spec: String, want: TimmStatus, needles: &[&str]) -> Case {
    case(name, want, needles, move || create_raw(spec.as_bytes()))
}

fn spec_cases() -> Vec<Case> {
    let arg = TIMM_ERR_INVALID_ARGUMENT;
    let mut cases = vec![
        case("spec: NULL", arg, &["`spec` is NULL"], || {
            init_runtime();
            // The NULL-returning wrapper keeps working beside the status-returning constructor.
            assert!(timm_create_model(std::ptr::null(), true).is_null());
            let mut m = std::ptr::null_mut();
            let status = timm_model_create(std::ptr::null(), true, std::ptr::null(), &mut m);
            assert!(m.is_null());
            Err(CError {
                status,
                message: last_error(),
            })
        }),
        case("spec: NULL out", arg, &["`out` is NULL"], || {
            init_runtime();
            let s = CString::new("resnet18").unwrap();
            let status =
                timm_model_create(s.as_ptr(), false, std::ptr::null(), std::ptr::null_mut());
            Err(CError {
                status,
                message: last_error(),
            })
        }),
        spec_case("spec: empty", String::new(), arg, &["empty model spec"]),
        spec_case(
            "spec: whitespace",
            " \t\n ".into(),
            arg,
            &["empty model spec"],
        ),
        case(
            "spec: not UTF-8",
            arg,
            &["`spec` is not valid UTF-8"],
            || create_raw(b"local:\xff\xfe/x"),
        ),
        spec_case(
            "spec: unknown prefix",
            "s3://bucket/model".into(),
            arg,
            &["unknown prefix `s3:`", "hf-hub:"],
        ),
        spec_case(
            "spec: drive letter path",
            "C:\\x".into(),
            arg,
            &["looks like a path", "local:C:\\x"],
        ),
        spec_case(
            "spec: bare name with `/`",
            "timm/resnet50".into(),
            arg,
            &["looks like a path or a repository", "hf-hub:timm/resnet50"],
        ),
        spec_case(
            "spec: name with a newline",
            "resnet\n50".into(),
            arg,
            &["is not a timm model name"],
        ),
        spec_case(
            "spec: empty local path",
            "local:".into(),
            arg,
            &["empty path after `local:`"],
        ),
        spec_case(
            "spec: hub id climbing out",
            "hf-hub:a/../b".into(),
            arg,
            &["not a valid Hugging Face repository id"],
        ),
        spec_case(
            "spec: hub id with three parts",
            "hf-hub:a/b/c".into(),
            arg,
            &["more than one `/`"],
        ),
        expensive(spec_case(
            "spec: absurd bare name (10^6 chars)",
            "a".repeat(1_000_000),
            arg,
            &["longer than 96 characters"],
        )),
        expensive(spec_case(
            "spec: absurd local path (10^6 chars)",
            format!("local:/{}", "a".repeat(1_000_000)),
            TIMM_ERR_IO,
            &["model folder", "name too long"],
        )),
        spec_case(
            "spec: missing folder",
            "local:/nonexistent/timm/model".into(),
            TIMM_ERR_NOT_FOUND,
            &["/nonexistent/timm/model"],
        ),
        spec_case(
            "spec: local path is a file",
            format!("local:{}", base_dir().join("config.json").display()),
            arg,
            &["is not a folder"],
        ),
    ];
    // A revision that would climb out of the cache's refs/ folder, refused before any network.
    cases.push(case(
        "spec: hub revision with `..`",
        arg,
        &["`../../etc` is not a valid revision"],
        || {
            let cache = tempfile::tempdir().unwrap();
            let dir = cache.path().display().to_string();
            CModel::create(
                "hf-hub:timm/x@../../etc",
                true,
                &[("offline", "true"), ("cache_dir", &dir)],
            )
            .map(drop)
        },
    ));
    cases
}

// Inputs on a valid model -----------------------------------------------------------------------

struct Shared {
    model: CModel,
    k: usize,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let model = CModel::create(&format!("local:{}", base_dir().display()), true, &[])
            .expect("fixture model");
        let mut chw = [0i64; 3];
        assert_eq!(timm_model_input_size(model.0, chw.as_mut_ptr()), TIMM_OK);
        // The input cases below are written for this fixture's [3, 64, 64] → 10 classes.
        assert_eq!(chw, [3, 64, 64]);
        let k = model.output_dim();
        assert_eq!(k, 10);
        Shared { model, k }
    })
}

fn infer(shape: &[i64], input_len: usize, output_len: usize) -> Result<(), CError> {
    let s = shared();
    let input = vec![0.5f32; input_len];
    let mut out = vec![0f32; output_len];
    status(timm_infer(
        s.model.0,
        input.as_ptr(),
        shape.as_ptr(),
        shape.len(),
        out.as_mut_ptr(),
        out.len(),
    ))
}

/// A TimmImage as C would lay it out, with the format as a raw integer (any value).
#[repr(C)]
struct RawImage {
    data: *const u8,
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
}

fn preprocess_raw(img: &RawImage, output_len: usize) -> Result<(), CError> {
    let s = shared();
    let mut out = vec![0f32; output_len];
    status(timm_preprocess(
        s.model.0,
        img as *const RawImage as *const TimmImage,
        out.as_mut_ptr(),
        out.len(),
    ))
}

fn image_case(
    name: &str,
    needles: &[&str],
    width: u32,
    height: u32,
    stride: usize,
    format: u32,
    null: bool,
) -> Case {
    case(name, TIMM_ERR_INVALID_ARGUMENT, needles, move || {
        let pixels = vec![128u8; 4 * 64 * 64];
        let img = RawImage {
            data: if null {
                std::ptr::null()
            } else {
                pixels.as_ptr()
            },
            width,
            height,
            stride,
            format,
        };
        preprocess_raw(&img, 3 * 64 * 64)
    })
}

fn classify_file(path: &Path, k: usize) -> Result<(), CError> {
    let s = shared();
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut results: Vec<TimmClass> = (0..k.max(1))
        .map(|_| TimmClass {
            index: 0,
            probability: 0.0,
            logit: 0.0,
            label: std::ptr::null(),
            description: std::ptr::null(),
        })
        .collect();
    status(timm_classify_file(
        s.model.0,
        p.as_ptr(),
        k,
        results.as_mut_ptr(),
    ))
}

fn file_case(name: &str, bytes: Vec<u8>, want: TimmStatus, needles: &[&str]) -> Case {
    case(name, want, needles, move || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.png");
        std::fs::write(&path, &bytes).unwrap();
        classify_file(&path, 3)
    })
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let mut chunk = kind.to_vec();
    chunk.extend_from_slice(data);
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(&chunk);
    png.extend_from_slice(&crc32(&chunk).to_be_bytes());
}

/// A 65-byte PNG whose IHDR claims `w`×`h` RGB8 (valid CRCs) followed by an empty IDAT: the
/// decoder reads the size from it, and decoding would need `w*h*3` bytes.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut png, b"IHDR", &ihdr);
    // An empty zlib stream.
    png_chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

fn input_cases() -> Vec<Case> {
    let arg = TIMM_ERR_INVALID_ARGUMENT;
    let per = 3 * 64 * 64;
    let mut cases = vec![
        case(
            "infer: zero batch",
            arg,
            &["zero or negative dimension"],
            move || infer(&[0, 3, 64, 64], per, 10),
        ),
        case(
            "infer: negative channel",
            arg,
            &["zero or negative dimension"],
            move || infer(&[1, -3, 64, 64], per, 10),
        ),
        case("infer: 3 dims", arg, &["expected NCHW"], move || {
            infer(&[3, 64, 64], per, 10)
        }),
        case("infer: 9 dims", arg, &["input_ndim is 9"], move || {
            infer(&[1; 9], per, 10)
        }),
        case("infer: N*C*H*W overflows", arg, &["overflows"], move || {
            infer(&[i64::MAX / 2, 1 << 20, 1 << 20, 1 << 20], per, 10)
        }),
        case(
            "infer: wrong channel count",
            arg,
            &["does not match the model's [N, 3,"],
            move || infer(&[1, 4, 64, 64], 4 * 64 * 64, 10),
        ),
        case(
            "infer: output buffer too small",
            TIMM_ERR_BUFFER_TOO_SMALL,
            &["needs 20"],
            move || infer(&[2, 3, 64, 64], 2 * per, 19),
        ),
        case("infer: NULL input", arg, &["must not be NULL"], || {
            let s = shared();
            let mut out = [0f32; 10];
            status(timm_infer(
                s.model.0,
                std::ptr::null(),
                [1i64, 3, 64, 64].as_ptr(),
                4,
                out.as_mut_ptr(),
                10,
            ))
        }),
        case("infer: NaN and Inf are computed", TIMM_OK, &[], move || {
            let s = shared();
            let mut input = vec![f32::NAN; 2 * per];
            input[per..].fill(f32::INFINITY);
            let mut out = vec![0f32; 2 * s.k];
            status(timm_infer(
                s.model.0,
                input.as_ptr(),
                [2i64, 3, 64, 64].as_ptr(),
                4,
                out.as_mut_ptr(),
                out.len(),
            ))?;
            assert!(
                out.iter().any(|v| !v.is_finite()),
                "NaN input gave finite logits: {out:?}"
            );
            Ok(())
        }),
        image_case(
            "image: stride < row",
            &["stride 10 is less than width × 3 = 24 bytes"],
            8,
            8,
            10,
            0,
            false,
        ),
        image_case("image: data NULL", &["`data` is NULL"], 8, 8, 0, 0, true),
        image_case("image: width 0", &["size 0x8 is empty"], 0, 8, 0, 0, false),
        image_case("image: height 0", &["size 8x0 is empty"], 8, 0, 0, 0, false),
        image_case(
            "image: pixel format 99",
            &["pixel format 99 is not a TimmPixelFormat"],
            8,
            8,
            0,
            99,
            false,
        ),
        case("image: NULL image", arg, &["`image` is NULL"], || {
            let s = shared();
            let mut out = vec![0f32; 3 * 64 * 64];
            status(timm_preprocess(
                s.model.0,
                std::ptr::null(),
                out.as_mut_ptr(),
                out.len(),
            ))
        }),
        case(
            "image: output too small",
            TIMM_ERR_BUFFER_TOO_SMALL,
            &["3x64x64 = 12288 are needed"],
            || {
                let pixels = [7u8; 8 * 8 * 3];
                preprocess_raw(
                    &RawImage {
                        data: pixels.as_ptr(),
                        width: 8,
                        height: 8,
                        stride: 0,
                        format: 0,
                    },
                    100,
                )
            },
        ),
        case(
            "image: wider than 65535",
            arg,
            &["each side must be 1..=65535"],
            || {
                let pixels = vec![7u8; 70_000];
                preprocess_raw(
                    &RawImage {
                        data: pixels.as_ptr(),
                        width: 70_000,
                        height: 1,
                        stride: 0,
                        format: 4,
                    },
                    3 * 64 * 64,
                )
            },
        ),
        case("classify: k = 0", arg, &["k = 0; expected 1..=10"], || {
            classify_pixels(1, 0)
        }),
        case(
            "classify: k > classes",
            arg,
            &["k = 11; expected 1..=10"],
            || classify_pixels(1, 11),
        ),
        case("classify: count = 0", arg, &["count = 0"], || {
            classify_pixels(0, 1)
        }),
        file_case(
            "classify_file: not an image",
            b"hello, world\n".to_vec(),
            arg,
            &["image.png", "not an image in a known format"],
        ),
        file_case("classify_file: empty file", vec![], arg, &["image.png"]),
        file_case(
            "classify_file: truncated PNG",
            {
                let b = std::fs::read(fixtures_dir().join("images/chelsea.png")).unwrap();
                b[..b.len() / 3].to_vec()
            },
            arg,
            &["image.png", "cannot decode image"],
        ),
        file_case(
            "classify_file: 100000x100000 PNG header",
            png_header(100_000, 100_000),
            arg,
            &["image is 100000x100000; each side must be 1..=65535"],
        ),
        file_case(
            "classify_file: 60000x60000 PNG header",
            png_header(60_000, 60_000),
            arg,
            &["image is 60000x60000, more than the 100000000 pixels allowed"],
        ),
        case(
            "classify_file: missing file",
            TIMM_ERR_NOT_FOUND,
            &["/nonexistent/image.png"],
            || classify_file(Path::new("/nonexistent/image.png"), 1),
        ),
        case(
            "classify_file: a directory",
            TIMM_ERR_INVALID_ARGUMENT,
            &["is a folder, not a regular file", "cannot read image"],
            || {
                let dir = tempfile::tempdir().unwrap();
                classify_file(dir.path(), 1)
            },
        ),
        case("classify_file: NULL path", arg, &["`path` is NULL"], || {
            let s = shared();
            let mut r = std::mem::MaybeUninit::<TimmClass>::uninit();
            status(timm_classify_file(
                s.model.0,
                std::ptr::null::<c_char>(),
                1,
                r.as_mut_ptr(),
            ))
        }),
    ];
    // Found by the `image` fuzz target: with crop_mode `border` (fit the long side, pad the
    // rest) an image this elongated would be resized to a zero-pixel side; it is refused.
    cases.push(expensive(case(
        "image: 4105x7 with crop_mode border (zero-pixel resize)",
        arg,
        &[
            "a 4105x7 image would be resized to 67x0",
            "the aspect ratio is too extreme",
        ],
        || {
            let dir = tempfile::tempdir().unwrap();
            let files = with(
                base_files(),
                "config.json",
                config_with("pretrained_cfg/crop_mode", json!("border")),
            );
            for (name, bytes) in &files {
                std::fs::write(dir.path().join(name), bytes).unwrap();
            }
            let m = CModel::create(&format!("local:{}", dir.path().display()), true, &[])
                .expect("border-crop model");
            let pixels = vec![9u8; 4105 * 7];
            let img = RawImage {
                data: pixels.as_ptr(),
                width: 4105,
                height: 7,
                stride: 0,
                format: 4,
            };
            let mut out = vec![0f32; 3 * 64 * 64];
            let ptr = &img as *const RawImage as *const TimmImage;
            status(timm_preprocess(m.0, ptr, out.as_mut_ptr(), out.len()))
        },
    )));
    // Found by the `image` fuzz target: a 697-byte JPEG on which zune-jpeg's AVX2 IDCT panics
    // (an unwrap; upstream etemesi254/zune-image#361). The decoder's panic must come back as
    // a decode error, not TIMM_ERR_INTERNAL. Without AVX2 the scalar IDCT may decode it.
    let jpeg = std::fs::read(hostile_dir().join("zune-jpeg-avx2-idct-panic.jpg")).unwrap();
    // It also ends inside a segment, so it is refused as truncated (as Pillow does) before the
    // decoder sees it; the decoder's panic itself stays contained (preprocess::decode's unit
    // test feeds it with truncated files allowed).
    cases.push(file_case(
        "classify_file: JPEG that panics the decoder",
        jpeg,
        arg,
        &["image file is truncated"],
    ));
    // A freed handle is refused (the registry), as long as its address was not reused.
    cases.push(expensive(case(
        "handle: infer on a freed model",
        arg,
        &["not a live model handle"],
        || {
            let m = CModel::create(&format!("local:{}", base_dir().display()), true, &[]).unwrap();
            let raw = m.0;
            drop(m);
            let input = vec![0f32; 3 * 64 * 64];
            let mut out = [0f32; 10];
            status(timm_infer(
                raw,
                input.as_ptr(),
                [1i64, 3, 64, 64].as_ptr(),
                4,
                out.as_mut_ptr(),
                10,
            ))
        },
    )));
    cases
}

fn classify_pixels(count: usize, k: usize) -> Result<(), CError> {
    let s = shared();
    let pixels = vec![100u8; 32 * 24 * 3];
    let img = TimmImage {
        data: pixels.as_ptr(),
        width: 32,
        height: 24,
        stride: 0,
        format: TimmPixelFormat::TIMM_PIXEL_RGB8,
    };
    let images: Vec<TimmImage> = (0..count.max(1)).map(|_| TimmImage { ..img }).collect();
    let mut results: Vec<TimmClass> = (0..(count.max(1) * k.max(1)))
        .map(|_| TimmClass {
            index: 0,
            probability: 0.0,
            logit: 0.0,
            label: std::ptr::null(),
            description: std::ptr::null(),
        })
        .collect();
    status(timm_classify(
        s.model.0,
        images.as_ptr(),
        count,
        k,
        results.as_mut_ptr(),
    ))
}

// ------------------------------------------------------------------------------------------------

fn all_cases() -> Vec<Case> {
    let mut v = safetensors_cases();
    v.extend(config_cases());
    v.extend(folder_cases());
    v.extend(spec_cases());
    v.extend(input_cases());
    v
}

/// Runs one case; returns the message and a description of what went wrong, if anything.
fn check(c: &Case) -> (String, Option<String>) {
    let (st, msg) = match (c.run)() {
        Ok(()) => (TIMM_OK, String::new()),
        Err(e) => (e.status, e.message),
    };
    let bad = judge(c, st, &msg);
    (msg, bad)
}

fn judge(c: &Case, st: TimmStatus, msg: &str) -> Option<String> {
    if st == TIMM_ERR_INTERNAL {
        return Some(format!(
            "{}: INTERNAL (a panic reached the boundary): {msg}",
            c.name
        ));
    }
    if st != c.want {
        return Some(format!(
            "{}: want {}, got {}: {msg}",
            c.name,
            c.want.name(),
            st.name()
        ));
    }
    if st != TIMM_OK && !msg.starts_with(st.name()) {
        return Some(format!(
            "{}: message does not start with the status: {msg}",
            c.name
        ));
    }
    let missing: Vec<_> = c
        .needles
        .iter()
        .filter(|n| !msg.contains(n.as_str()))
        .collect();
    if !missing.is_empty() {
        return Some(format!("{}: message lacks {missing:?}: {msg}", c.name));
    }
    None
}

/// The leak check measures the whole process, so the two tests must not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn hostile_inputs_fail_cleanly_with_specific_errors() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cases = all_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let t = std::time::Instant::now();
        let (msg, bad) = check(c);
        // The message, shortened (some quote a 10^6-character spec), for reviewing the wording.
        let short: String = msg.chars().take(200).collect();
        eprintln!(
            "{:<4} {:>6.0} ms  {}\n                {short}",
            if bad.is_some() { "FAIL" } else { "ok" },
            t.elapsed().as_secs_f64() * 1e3,
            c.name
        );
        failures.extend(bad);
    }
    let errors = cases.iter().filter(|c| c.want != TIMM_OK).count();
    eprintln!(
        "hostile: {} cases ({errors} refused, {} accepted), {} failed",
        cases.len(),
        cases.len() - errors,
        failures.len()
    );
    assert!(
        cases.len() >= 40,
        "the corpus shrank to {} cases",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Resident set size in KiB (Linux).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

#[test]
#[cfg(target_os = "linux")]
fn hostile_inputs_do_not_leak() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cases: Vec<Case> = all_cases().into_iter().filter(|c| c.repeat).collect();
    let run_all = || {
        for c in &cases {
            let _ = (c.run)();
        }
    };
    // Warm up: the runtime, the shared model, allocator arenas and thread-local buffers.
    for _ in 0..3 {
        run_all();
    }
    let before = rss_kib();
    const ROUNDS: u64 = 20;
    for _ in 0..ROUNDS {
        run_all();
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!(
        "leak check: {} cases x {ROUNDS} rounds, RSS grew {grown} KiB",
        cases.len()
    );
    // Catches leaks of a few KiB or more per call (a config, a mapping, a session: 2,400+
    // calls x 4 KiB > 8 MiB) above allocator noise; byte-sized leaks are valgrind's job
    // (scripts/valgrind-c).
    assert!(
        grown < 8 * 1024,
        "RSS grew {grown} KiB over {ROUNDS} rounds: something leaks"
    );
}
