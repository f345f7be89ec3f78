//! Shared test support: the committed fixtures and a small safe wrapper over the C ABI, so
//! integration tests exercise the same exported functions C programs call.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use timm::ffi::*;
use timm::TimmStatus;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The demo's real EfficientNet-Lite0 folder (scripts/fetch-demo-model).
pub fn demo_folder() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".models/tf_efficientnet_lite0.in1k");
    assert!(
        dir.join("model.safetensors").exists(),
        "the demo model is missing: run scripts/fetch-demo-model (scripts/test does)"
    );
    dir
}

/// Points the library at the project's ONNX Runtime (scripts/fetch-ort) unless the caller chose one.
pub fn init_runtime() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TIMM_ORT_LIBRARY").is_none() {
            let lib = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(".onnxruntime/cpu/libonnxruntime.so.1.31.1");
            assert!(
                lib.exists(),
                "ONNX Runtime is missing: run scripts/fetch-ort (or scripts/test, which does)"
            );
            std::env::set_var("TIMM_ORT_LIBRARY", lib);
        }
    });
}

#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub arch: String,
    pub family: String,
    /// weight mode ("native", "onnx_stripped", ...) → folder relative to tests/fixtures
    pub folders: BTreeMap<String, String>,
    pub reference: String,
    pub weights_dtype: String,
    /// What the reference's logits hold: `logits`, or `tokens` for an encoder tower (created
    /// with option output=tokens; `[N, T, D]`).
    pub output: String,
}

impl Fixture {
    pub fn folder(&self, mode: &str) -> Option<PathBuf> {
        self.folders.get(mode).map(|f| fixtures_dir().join(f))
    }
    pub fn spec(&self, mode: &str) -> String {
        format!(
            "local:{}",
            self.folder(mode)
                .unwrap_or_else(|| panic!("{} has no {mode} folder", self.name))
                .display()
        )
    }
}

pub fn fixtures() -> Vec<Fixture> {
    let text = std::fs::read_to_string(fixtures_dir().join("index.json"))
        .expect("tests/fixtures/index.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("index.json");
    v["fixtures"]
        .as_array()
        .expect("fixtures array")
        .iter()
        .map(|f| Fixture {
            name: f["name"].as_str().unwrap().to_string(),
            arch: f["arch"].as_str().unwrap().to_string(),
            family: f["family"].as_str().unwrap_or("").to_string(),
            folders: f["folders"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            reference: f["reference"].as_str().unwrap().to_string(),
            weights_dtype: f["weights_dtype"].as_str().unwrap_or("F32").to_string(),
            output: f["output"].as_str().unwrap_or("logits").to_string(),
        })
        .collect()
}

pub fn fixture(name: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name} in index.json"))
}

pub fn fixtures_of_family(family: &str) -> Vec<Fixture> {
    fixtures()
        .into_iter()
        .filter(|f| f.family == family)
        .collect()
}

pub struct Reference {
    pub input: Vec<f32>,
    pub input_shape: Vec<i64>,
    pub logits: Vec<f32>,
    pub logits_shape: Vec<i64>,
    pub features: Vec<f32>,
    pub features_shape: Vec<i64>,
}

pub fn read_f32(p: &Path) -> Vec<f32> {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn reference(f: &Fixture) -> Reference {
    let dir = fixtures_dir().join(&f.reference);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    // An encoder tower's reference has no pooled features.
    let shape = |k: &str| {
        meta[k]
            .as_array()
            .map(|a| a.iter().map(|d| d.as_i64().unwrap()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let features = dir.join("features.f32");
    Reference {
        input: read_f32(&dir.join("input.f32")),
        input_shape: shape("input_shape"),
        logits: read_f32(&dir.join("logits.f32")),
        logits_shape: shape("logits_shape"),
        features: if features.exists() {
            read_f32(&features)
        } else {
            Vec::new()
        },
        features_shape: shape("features_shape"),
    }
}

/// The scale a relative tolerance is taken against: a reference's largest magnitude, at least 1.
pub fn scale(v: &[f32]) -> f32 {
    v.iter().fold(1f32, |m, x| m.max(x.abs()))
}

/// A model built without weights (`pretrained=false`, option `seed`) runs: finite outputs of
/// `dim` values per image, the same network for the same seed and another for another seed.
pub fn assert_seeded(
    spec: &str,
    options: &[(&str, &str)],
    dim: usize,
    input: &[f32],
    shape: &[i64],
    (seed, other): (&str, &str),
) {
    let run = |seed: &str| {
        let mut opts = vec![("seed", seed)];
        opts.extend_from_slice(options);
        let m = CModel::create(spec, false, &opts).unwrap_or_else(|e| panic!("{spec}: {e:?}"));
        assert_eq!(m.output_dim(), dim, "{spec}");
        m.infer(input, shape).unwrap()
    };
    let a = run(seed);
    assert!(
        a.iter().all(|v| v.is_finite()),
        "{spec}: non-finite outputs"
    );
    assert_eq!(a, run(seed), "{spec}: same seed, same network");
    assert_ne!(a, run(other), "{spec}: another seed, another network");
}

/// `assert_seeded` on bare name `arch` (timm's defaults, seeded weights) at `size`x`size`, fed a
/// fixed ramp: the input size only keeps a large model's runs short.
pub fn assert_bare_seeded(arch: &str, size: usize, dim: usize) {
    let x: Vec<f32> = (0..3 * size * size)
        .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
        .collect();
    let input_size = format!("{size}x{size}");
    let n = size as i64;
    assert_seeded(
        arch,
        &[("input_size", &input_size)],
        dim,
        &x,
        &[1, 3, n, n],
        ("1", "2"),
    );
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// An error from the C ABI: the status and `timm_last_error()`.
#[derive(Debug, Clone, PartialEq)]
pub struct CError {
    pub status: TimmStatus,
    pub message: String,
}

pub fn last_error() -> String {
    unsafe { CStr::from_ptr(timm_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A model handle created through the C ABI, freed on drop.
pub struct CModel(pub *mut TimmModel);
unsafe impl Send for CModel {}
unsafe impl Sync for CModel {}

impl CModel {
    pub fn create(
        spec: &str,
        pretrained: bool,
        options: &[(&str, &str)],
    ) -> Result<CModel, CError> {
        init_runtime();
        let spec = CString::new(spec).unwrap();
        let opts = timm_options_new();
        for (k, v) in options {
            let (k, v) = (CString::new(*k).unwrap(), CString::new(*v).unwrap());
            let st = timm_options_set(opts, k.as_ptr(), v.as_ptr());
            if st != TimmStatus::TIMM_OK {
                let e = CError {
                    status: st,
                    message: last_error(),
                };
                timm_options_free(opts);
                return Err(e);
            }
        }
        let mut m = std::ptr::null_mut();
        let st = timm_model_create(spec.as_ptr(), pretrained, opts, &mut m);
        timm_options_free(opts);
        if st != TimmStatus::TIMM_OK {
            assert!(
                m.is_null(),
                "a failed timm_model_create left a model in *out"
            );
            // The message must say what went wrong.
            let message = last_error();
            assert!(!message.is_empty(), "{st:?} without a message");
            return Err(CError {
                status: st,
                message,
            });
        }
        assert!(!m.is_null(), "TIMM_OK without a model");
        Ok(CModel(m))
    }

    pub fn output_dim(&self) -> usize {
        timm_model_output_dim(self.0)
    }

    pub fn infer(&self, input: &[f32], shape: &[i64]) -> Result<Vec<f32>, CError> {
        let n = shape.first().copied().unwrap_or(1).max(1) as usize;
        let mut out = vec![f32::NAN; n * self.output_dim()];
        self.infer_into(input, shape, &mut out).map(|_| out)
    }

    pub fn infer_into(&self, input: &[f32], shape: &[i64], out: &mut [f32]) -> Result<(), CError> {
        let st = timm_infer(
            self.0,
            input.as_ptr(),
            shape.as_ptr(),
            shape.len(),
            out.as_mut_ptr(),
            out.len(),
        );
        if st == TimmStatus::TIMM_OK {
            Ok(())
        } else {
            Err(CError {
                status: st,
                message: last_error(),
            })
        }
    }
}

impl Drop for CModel {
    fn drop(&mut self) {
        timm_free(self.0);
    }
}

/// Runs a fixture's reference input in the given mode and checks its logits against timm
/// within `tol` relative to the largest logit (at least 1): the criterion timm parity is judged by.
pub fn check_fixture(f: &Fixture, mode: &str, options: &[(&str, &str)], tol: f32) {
    let r = reference(f);
    let options = with_fixture_output(f, options);
    let m = CModel::create(&f.spec(mode), true, &options)
        .unwrap_or_else(|e| panic!("{} [{mode}]: {e:?}", f.name));
    let out = m
        .infer(&r.input, &r.input_shape)
        .unwrap_or_else(|e| panic!("{} [{mode}]: {e:?}", f.name));
    let scale = r.logits.iter().fold(1f32, |a, v| a.max(v.abs()));
    let d = max_abs_diff(&out, &r.logits) / scale;
    eprintln!("{:<32} {:<14} logits rel max|diff| = {d:.3e}", f.name, mode);
    assert!(
        d <= tol,
        "{} [{mode}]: logits differ from timm by {d}",
        f.name
    );
}

/// `options` plus option output=tokens for an encoder tower's fixture (its forward, which
/// `timm_infer` writes as N rows of T * D floats).
pub fn with_fixture_output<'a>(
    f: &Fixture,
    options: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut o = options.to_vec();
    if f.output == "tokens" && !o.iter().any(|(k, _)| *k == "output") {
        o.push(("output", "tokens"));
    }
    o
}

/// An encoder tower's fixture (output=tokens): through `timm_infer` (N rows of T * D floats) and
/// `timm_infer_outputs` (shape `[N, T, D]` from `timm_model_output_shape`), against timm's forward.
pub fn check_tokens_fixture(f: &Fixture, tol: f32) {
    assert_eq!(
        f.output, "tokens",
        "{} is not an encoder tower fixture",
        f.name
    );
    let r = reference(f);
    assert_eq!(r.logits_shape.len(), 3, "{}", f.name);
    check_fixture(f, "native", &[("graph", "native")], tol);
    let m = CModel::create(&f.spec("native"), true, &[("output", "tokens")]).unwrap();
    assert_eq!(m.output_count(), 1);
    let per_image = (r.logits_shape[1] * r.logits_shape[2]) as usize;
    assert_eq!(
        m.output_dim(),
        per_image,
        "{}: timm_infer writes T * D floats per image",
        f.name
    );
    assert_eq!(m.output_shape(0, &r.input_shape).unwrap(), r.logits_shape);
    let out = m.infer_outputs(&r.input, &r.input_shape).unwrap();
    let d = max_abs_diff(&out[0].data, &r.logits) / scale(&r.logits);
    assert!(d <= tol, "{}: tokens differ from timm by {d}", f.name);
}

/// An encoder tower (no forward_head) refuses logits and pooled features, naming output=tokens.
pub fn assert_tower_refuses_heads(arch: &str) {
    for output in ["logits", "features"] {
        let e = CModel::create(arch, false, &[("output", output)])
            .err()
            .unwrap_or_else(|| panic!("{arch}: output={output} must be refused (no head)"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains("output=tokens"), "{}", e.message);
    }
}

/// Checks timm's pooled features (`output=features`) for a fixture's native graph: output
/// dim equals timm's `num_features`, values within `tol`. Returns the max difference.
pub fn check_features(f: &Fixture, tol: f32) -> f32 {
    let r = reference(f);
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("graph", "native"), ("output", "features")],
    )
    .unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    assert_eq!(
        m.output_dim() as i64,
        r.features_shape[1],
        "{}: output dim is not num_features",
        f.name
    );
    let out = m
        .infer(&r.input, &r.input_shape)
        .unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    // Judged as logits are: relative to the largest feature (at least 1).
    let scale = r.features.iter().fold(1f32, |a, v| a.max(v.abs()));
    let d = max_abs_diff(&out, &r.features);
    eprintln!(
        "{:<32} {:<14} features max|diff| = {d:.3e} (largest {scale:.3})",
        f.name, "native"
    );
    assert!(
        d <= tol * scale,
        "{}: features differ from timm by {d} (largest feature {scale})",
        f.name
    );
    d
}

/// A temp folder removed when dropped, also when the test fails.
pub struct TempFolder(PathBuf);

impl std::ops::Deref for TempFolder {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempFolder {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of a fixture's native folder in a temp dir (removed when dropped), its config.json
/// edited by `edit`.
pub fn edited_copy(name: &str, tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> TempFolder {
    let src = fixture(name).folder("native").unwrap();
    let dir = std::env::temp_dir().join(format!("timm-{name}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    TempFolder(dir)
}

/// The error of creating fixture `name` natively once `edit` has changed its config.json (the
/// edited copy is removed); panics when the creation succeeds.
pub fn edited_native_error(
    name: &str,
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> CError {
    let dir = edited_copy(name, tag, edit);
    let r = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    );
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(_) => panic!("{name} edited ({tag}) must fail to build"),
        Err(e) => e,
    }
}

/// A feature map as the C ABI returns it.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub shape: Vec<i64>,
    pub data: Vec<f32>,
}

impl CModel {
    pub fn output_count(&self) -> usize {
        timm_model_output_count(self.0)
    }

    pub fn output_shape(&self, index: usize, input_shape: &[i64]) -> Result<Vec<i64>, CError> {
        let mut shape = [0i64; 8];
        let mut ndim = 0usize;
        let st = timm_model_output_shape(
            self.0,
            index,
            input_shape.as_ptr(),
            input_shape.len(),
            shape.as_mut_ptr(),
            shape.len(),
            &mut ndim,
        );
        if st != TimmStatus::TIMM_OK {
            return Err(CError {
                status: st,
                message: last_error(),
            });
        }
        Ok(shape[..ndim].to_vec())
    }

    /// Every output for one batch, shaped by `timm_model_output_shape`.
    pub fn infer_outputs(&self, input: &[f32], shape: &[i64]) -> Result<Vec<Tensor>, CError> {
        let n = self.output_count();
        let shapes = (0..n)
            .map(|i| self.output_shape(i, shape))
            .collect::<Result<Vec<_>, _>>()?;
        let mut bufs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|s| vec![f32::NAN; s.iter().product::<i64>() as usize])
            .collect();
        let ptrs: Vec<*mut f32> = bufs.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let lens: Vec<usize> = bufs.iter().map(Vec::len).collect();
        let st = timm_infer_outputs(
            self.0,
            input.as_ptr(),
            shape.as_ptr(),
            shape.len(),
            ptrs.as_ptr(),
            lens.as_ptr(),
            n,
        );
        if st != TimmStatus::TIMM_OK {
            return Err(CError {
                status: st,
                message: last_error(),
            });
        }
        Ok(shapes
            .into_iter()
            .zip(bufs)
            .map(|(shape, data)| Tensor { shape, data })
            .collect())
    }

    /// timm's feature_info of each output: (channels, reduction, module).
    pub fn feature_info(&self) -> Vec<(usize, usize, String)> {
        (0..self.output_count())
            .map(|i| {
                let (mut c, mut r) = (0usize, 0usize);
                let mut m: *const std::os::raw::c_char = std::ptr::null();
                let st = timm_model_feature_info(self.0, i, &mut c, &mut r, &mut m);
                assert_eq!(st, TimmStatus::TIMM_OK, "{}", last_error());
                let module = unsafe { CStr::from_ptr(m) }.to_string_lossy().into_owned();
                (c, r, module)
            })
            .collect()
    }
}

/// One `features_only` reference of a fixture (meta.json `feature_maps`).
#[derive(Debug, Clone)]
pub struct FeatureMapsRef {
    /// The kwargs timm got, as options of this library.
    pub options: Vec<(String, String)>,
    pub input: Vec<f32>,
    pub input_shape: Vec<i64>,
    pub outputs: Vec<Tensor>,
    /// timm's feature_info of each output: (channels, reduction, module).
    pub feature_info: Vec<(usize, usize, String)>,
}

/// Every `features_only` reference the generator made for a fixture.
pub fn feature_map_refs(f: &Fixture) -> Vec<FeatureMapsRef> {
    let dir = fixtures_dir().join(&f.reference);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let ints = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect()
    };
    let base = reference(f);
    let Some(entries) = meta["feature_maps"].as_array() else {
        return vec![];
    };
    entries
        .iter()
        .map(|e| {
            let mut options = vec![("output".to_string(), "feature_maps".to_string())];
            for (k, v) in e["kwargs"].as_object().unwrap() {
                // timm's `img_size=[h, w]` is this library's option `input_size=HxW`.
                let (k, sep) = match k.as_str() {
                    "img_size" => ("input_size", "x"),
                    k => (k, ","),
                };
                let value = match v {
                    serde_json::Value::Array(a) => a
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(sep),
                    other => other.to_string(),
                };
                options.push((k.to_string(), value));
            }
            let input = match e["input"].as_str() {
                Some(file) => read_f32(&dir.join(file)),
                None => base.input.clone(),
            };
            let outputs = e["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| Tensor {
                    shape: ints(&o["shape"]),
                    data: read_f32(&dir.join(o["file"].as_str().unwrap())),
                })
                .collect();
            let feature_info = e["feature_info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    (
                        d["num_chs"].as_u64().unwrap() as usize,
                        d["reduction"].as_u64().unwrap() as usize,
                        d["module"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            FeatureMapsRef {
                options,
                input,
                input_shape: ints(&e["input_shape"]),
                outputs,
                feature_info,
            }
        })
        .collect()
}

/// Checks every `features_only` reference of a fixture through the C ABI: the same number of
/// maps, timm's feature_info, the shapes `timm_model_output_shape` reports, and values within
/// `rel_tol` of each map's largest |value|. Returns how many references were checked.
pub fn check_feature_maps(f: &Fixture, rel_tol: f32) -> usize {
    let refs = feature_map_refs(f);
    for (k, r) in refs.iter().enumerate() {
        let opts: Vec<(&str, &str)> = r
            .options
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let m = CModel::create(&f.spec("native"), true, &opts)
            .unwrap_or_else(|e| panic!("{} feature maps {k} {opts:?}: {e:?}", f.name));
        assert_eq!(
            m.output_count(),
            r.outputs.len(),
            "{} [{k}]: map count",
            f.name
        );
        assert_eq!(
            m.feature_info(),
            r.feature_info,
            "{} [{k}]: feature_info",
            f.name
        );
        let got = m
            .infer_outputs(&r.input, &r.input_shape)
            .unwrap_or_else(|e| panic!("{} feature maps {k}: {e:?}", f.name));
        for (i, (g, want)) in got.iter().zip(&r.outputs).enumerate() {
            assert_eq!(g.shape, want.shape, "{} [{k}] map {i}: shape", f.name);
            let scale = want
                .data
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()))
                .max(1e-12);
            let d = max_abs_diff(&g.data, &want.data) / scale;
            eprintln!(
                "{:<32} maps[{k}] {i} {:?} rel max|diff| = {d:.3e}",
                f.name, g.shape
            );
            assert!(
                d <= rel_tol,
                "{} [{k}] map {i}: differs from timm by {d} (relative)",
                f.name
            );
        }
    }
    refs.len()
}
