//! A loaded model: spec → folder → config + weights → graph → session, and inference on it.

use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::graph::{self, FeatureInfo, OutputKind, OutputShape, ParamSource};
use crate::onnx;
use crate::options::{GraphChoice, ModelOptions};
use crate::preprocess::{self, CropMode, DataConfig, Interpolation, RgbImage};
use crate::runtime::backend::{Backend, Engine};
use crate::runtime::session::Bound;
use crate::runtime::{sys, Session};
use crate::source::{hub, ModelFolder};
use crate::spec::{self, Spec};
use crate::weights::{DType, Weights, WeightsMode};

/// Which graph a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    Onnx,
    Native,
}

pub struct Model {
    // Dropped first: the sessions may read the mapped weights until they are gone.
    session: Engine,
    /// When `session` is a native graph fixed to the nominal input size: the session for the
    /// other sizes the graph takes, made on first use.
    other_size: Option<OtherSize>,
    _weights: Vec<Arc<Weights>>,
    config: ModelConfig,
    graph_kind: GraphKind,
    output_kind: OutputKind,
    /// `[C, H, W]` the model takes; H/W are `None` when any size is accepted.
    input_dims: [Option<usize>; 3],
    output_dim: usize,
    /// The shape of each output (one for logits and features).
    outputs: Vec<OutputShape>,
    /// timm's `feature_info` of each output, for feature maps.
    feature_info: Vec<FeatureInfo>,
    feature_modules: Vec<CString>,
    /// The spatial chains a native graph tracks: inputs one maps to nothing are too small.
    min_input: graph::spatial::Fit,
    labels: Vec<Option<CString>>,
    descriptions: Vec<Option<CString>>,
    config_json: CString,
    options: ModelOptions,
    data_config: DataConfig,
    /// The folder's model.onnx when the model runs it (the export copies it).
    onnx_file: Option<std::path::PathBuf>,
}

/// The symbolic-size session of a model whose main session is fixed to `nominal` (H, W).
struct OtherSize {
    nominal: (usize, usize),
    engine: OnceLock<Engine>,
    /// Held while the session is made, so concurrent callers make it once.
    making: Mutex<()>,
}

/// One of the top-k classes of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Class {
    pub index: usize,
    /// Softmax over the logits.
    pub probability: f32,
    pub logit: f32,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("architecture", &self.config.architecture)
            .field("graph", &self.graph_kind)
            .finish()
    }
}

impl Model {
    /// Creates a model from a spec (`local:<dir>`, `local-dir:<dir>`, a bare timm name, ...).
    pub fn create(spec_text: &str, pretrained: bool, options: &ModelOptions) -> Result<Model> {
        let spec = spec::parse(spec_text)?;
        // Load the runtime first: a missing runtime is the most common setup error, and weights
        // are bound to ORT tensors while the folder is read.
        options.backend.load_runtime(&options.session)?;
        match spec {
            Spec::Local(dir) => Self::from_folder(&dir, pretrained, options),
            // timm: a bare `arch.tag` with pretrained weights is the Hub repo `timm/arch.tag`.
            Spec::Name { arch, tag } if pretrained => {
                let repo = hub::repo_for_name(&arch, tag.as_deref());
                let dir = hub::resolve_snapshot(&repo, None, &options.hub)?;
                Self::from_folder(&dir, true, options)
            }
            Spec::Name { arch, .. } => Self::from_arch(&arch, options),
            Spec::HfHub { repo, revision } => {
                let dir = hub::resolve_snapshot(&repo, revision.as_deref(), &options.hub)?;
                Self::from_folder(&dir, pretrained, options)
            }
        }
    }

    /// A model from a folder timm wrote.
    pub fn from_folder(dir: &Path, pretrained: bool, options: &ModelOptions) -> Result<Model> {
        let folder = ModelFolder::open(dir)?;
        let config = ModelConfig::from_dir(dir)?;
        // Resolved once; the graph, the session and preprocessing all take this size.
        let data = data_config(&config, options)?;
        let native_known = graph::family_for(&config.architecture).is_some();
        let use_onnx = match options.graph {
            GraphChoice::Native => false,
            GraphChoice::Onnx => {
                if folder.onnx.is_none() {
                    return Err(Error::not_found(format!(
                        "option graph=onnx but {} has no model.onnx",
                        dir.display()
                    )));
                }
                true
            }
            GraphChoice::Auto => folder.onnx.is_some(),
        };
        if !pretrained {
            if !native_known {
                return Err(Error::unsupported(format!(
                    "pretrained=false needs a native graph to initialise, and architecture `{}` has none \
                     (a model.onnx carries its own weights; create it with pretrained=true). Native families: {}",
                    config.architecture,
                    graph::supported_list()
                )));
            }
            return Self::native(config, data, None, options);
        }
        if use_onnx {
            let onnx_path = folder.onnx.clone().unwrap_or_default();
            return Self::onnx(config, data, &folder, &onnx_path, options);
        }
        if !native_known {
            return Err(Error::unsupported(format!(
                "{} has no model.onnx and architecture `{}` has no native graph builder; supported families: {}",
                dir.display(),
                config.architecture,
                graph::supported_list()
            )));
        }
        let weights = Arc::new(Weights::open(
            folder.require_weights()?,
            options.weights_mode,
        )?);
        Self::native(config, data, Some(weights), options)
    }

    /// A model with timm's default arguments for `arch` and seeded random weights.
    pub fn from_arch(arch: &str, options: &ModelOptions) -> Result<Model> {
        let family = graph::family_for(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "architecture `{arch}` has no native graph builder; supported families: {}",
                graph::supported_list()
            ))
        })?;
        let cfg_json = (family.default_config)(arch).ok_or_else(|| {
            Error::unsupported(format!(
                "`{arch}` is not a {} architecture this build knows",
                family.name
            ))
        })?;
        let config = ModelConfig::parse(cfg_json.to_string().as_bytes())?;
        let data = data_config(&config, options)?;
        Self::native(config, data, None, options)
    }

    fn native(
        config: ModelConfig,
        data: DataConfig,
        weights: Option<Arc<Weights>>,
        options: &ModelOptions,
    ) -> Result<Model> {
        // The graph takes what preprocessing produces: input_size, or test_input_size with
        // option use_test_size (timm's validate.py evaluates convnets at the larger test size).
        let size = data.input_size;
        let (session, g, fixed_free_hw) = match options.backend.backend {
            Backend::OnnxRuntime => {
                let (s, g, fixed) = ort_native(&config, &data, weights.as_ref(), options, true)?;
                (Engine::Ort(s), g, fixed)
            }
            Backend::OpenVino => ov_native(&config, &data, weights.as_ref(), options, true)?,
        };
        let outputs: Vec<OutputShape> = g.outputs.iter().map(|o| o.shape.clone()).collect();
        let output_dim = match &outputs[0] {
            OutputShape::Vector(d) => *d,
            OutputShape::Map { channels, .. } => *channels,
            // Floats per image `timm_infer` writes: the whole [T, D] sequence.
            OutputShape::Tokens { tokens, dim } => tokens * dim,
        };
        let mut m = Self::finish(
            session,
            weights.into_iter().collect(),
            config,
            data,
            GraphKind::Native,
            options,
            output_dim,
        )?;
        m.outputs = outputs;
        m.feature_modules = g
            .feature_info
            .iter()
            .map(|f| CString::new(f.module.as_str()).unwrap_or_default())
            .collect();
        m.feature_info = g.feature_info;
        m.min_input = g.min_input;
        if fixed_free_hw {
            // The session is fixed to the nominal size; the graph takes any size, the other
            // sizes through the other-size session.
            m.input_dims[1] = None;
            m.input_dims[2] = None;
            m.other_size = Some(OtherSize {
                nominal: (size[1], size[2]),
                engine: OnceLock::new(),
                making: Mutex::new(()),
            });
        }
        Ok(m)
    }

    fn onnx(
        config: ModelConfig,
        data: DataConfig,
        folder: &ModelFolder,
        path: &Path,
        options: &ModelOptions,
    ) -> Result<Model> {
        if options.output != OutputKind::Logits {
            return Err(Error::unsupported(
                "options output=features and output=feature_maps need the native graph (model.onnx ends in the classifier); set option graph=native",
            ));
        }
        if options.backend.backend == Backend::OpenVino {
            let engine = Engine::openvino_folder(path, &options.backend, &options.session)?;
            let num_classes = config.num_classes;
            let mut model = Self::finish(
                engine,
                Vec::new(),
                config,
                data,
                GraphKind::Onnx,
                options,
                num_classes,
            )?;
            model.onnx_file = Some(path.to_path_buf());
            return Ok(model);
        }
        // Read once: scanned here, handed to ORT from memory, hashed for TensorRT's engine cache.
        let (mut file, _) = crate::files::open_regular(path, "cannot open", Error::invalid_model)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|e| Error::from_io(&e, "cannot read", path))?;
        let info = onnx::scan(&bytes)?;

        // Initializers whose data lives in a safetensors file are bound by name from it.
        let mut opened: Vec<(String, Arc<Weights>)> = Vec::new();
        let mut external_checked: Vec<String> = Vec::new();
        let mut wanted = Vec::new();
        for init in info.initializers.iter().filter(|i| i.external) {
            let Some(loc) = init.location.as_deref() else {
                continue;
            };
            if !loc.ends_with(".safetensors") {
                // ONNX Runtime opens external data itself, by path: it must not meet a FIFO.
                if !external_checked.iter().any(|l| l == loc) {
                    crate::files::check_regular(
                        &folder.dir.join(loc),
                        "model.onnx external data",
                        Error::invalid_model,
                    )?;
                    external_checked.push(loc.to_string());
                }
                continue;
            }
            if loc.contains(['/', '\\']) || loc.starts_with('.') {
                return Err(Error::invalid_model(format!(
                    "model.onnx initializer `{}` points at `{loc}`; bound weights must be a file in the model folder",
                    init.name
                )));
            }
            if !opened.iter().any(|(n, _)| n == loc) {
                let w = Arc::new(Weights::open(&folder.dir.join(loc), options.weights_mode)?);
                opened.push((loc.to_string(), w));
            }
            wanted.push((init, loc));
        }
        let bound = wanted
            .into_iter()
            .map(|(init, loc)| {
                let w = opened.iter().find(|(n, _)| n == loc).map(|(_, w)| w);
                bound_tensor(w.expect("opened above"), init)
            })
            .collect::<Result<Vec<_>>>()?;
        let session = Engine::Ort(Session::from_onnx(
            &bytes,
            &info,
            &folder.dir,
            &session_options(&data, options)?,
            &bound,
        )?);
        drop(bound);
        // In copy mode ORT owns every byte now; only mapped weights must outlive the session.
        let weights = opened
            .into_iter()
            .map(|(_, w)| w)
            .filter(|w| w.mode() == WeightsMode::Map)
            .collect();
        let num_classes = config.num_classes;
        let mut model = Self::finish(
            session,
            weights,
            config,
            data,
            GraphKind::Onnx,
            options,
            num_classes,
        )?;
        model.onnx_file = Some(path.to_path_buf());
        Ok(model)
    }

    fn finish(
        session: Engine,
        weights: Vec<Arc<Weights>>,
        config: ModelConfig,
        data_config: DataConfig,
        graph_kind: GraphKind,
        options: &ModelOptions,
        output_dim: usize,
    ) -> Result<Model> {
        let [c, h, w] = data_config.input_size;
        let sd = session.input_dims();
        let dim = |i: usize| {
            if sd[i] > 0 {
                Some(sd[i] as usize)
            } else {
                None
            }
        };
        let input_dims = [dim(1).or(Some(c)), dim(2), dim(3)];
        // The ONNX graph and config.json must agree, or preprocessing would feed the wrong size.
        for (i, (name, want)) in [("channels", c), ("height", h), ("width", w)]
            .into_iter()
            .enumerate()
        {
            if let Some(got) = input_dims[i] {
                if got != want {
                    return Err(Error::invalid_model(format!(
                        "the graph takes input {name} {got} but preprocessing produces {:?} (config.json's {})",
                        data_config.input_size,
                        if options.use_test_size && config.pretrained_cfg.test_input_size.is_some() {
                            "test_input_size, option use_test_size"
                        } else {
                            "input_size"
                        }
                    )));
                }
            }
        }
        // Floats per image of the first output: K, a map's channels, or an encoder's T * D.
        let out_static = match session.output_dims()[0].as_slice() {
            [_, t, d] if *t > 0 && *d > 0 => Some((t * d) as usize),
            dims => (dims[1] > 0).then_some(dims[1] as usize),
        };
        // timm's headless model (num_classes 0) returns its pooled features, num_features wide.
        let (output_dim, source) = match (output_dim, config.num_features) {
            (0, Some(f)) => (f, "num_features"),
            (0, None) => (
                out_static.ok_or_else(|| {
                    Error::invalid_model(
                        "config.json says num_classes = 0 and gives no num_features, and the graph's output width is not fixed; add the model's num_features to config.json",
                    )
                })?,
                "num_features",
            ),
            (n, _) => (n, "num_classes"),
        };
        if let Some(got) = out_static.filter(|&g| g != output_dim) {
            return Err(Error::invalid_model(format!(
                "the graph outputs {got} values per image but config.json says {source} = {output_dim}"
            )));
        }
        let cstr = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let labels = config
            .label_names
            .iter()
            .map(|l| l.as_deref().map(cstr))
            .collect();
        let descriptions = (0..config.num_classes)
            .map(|i| config.label_description(i).map(cstr))
            .collect();
        let config_json = cstr(&config.resolved_json().to_string());
        Ok(Model {
            session,
            _weights: weights,
            config,
            graph_kind,
            output_kind: options.output,
            input_dims,
            output_dim,
            outputs: vec![OutputShape::Vector(output_dim)],
            feature_info: Vec::new(),
            feature_modules: Vec::new(),
            min_input: Default::default(),
            labels,
            descriptions,
            config_json,
            options: options.clone(),
            data_config,
            onnx_file: None,
            other_size: None,
        })
    }

    /// The weights file a native graph was built from (`None` for random weights).
    pub fn native_weights(&self) -> Option<&Weights> {
        match self.graph_kind {
            GraphKind::Native => self._weights.first().map(|w| &**w),
            GraphKind::Onnx => None,
        }
    }

    /// The folder's model.onnx, for models that run it.
    pub fn onnx_file(&self) -> Option<&Path> {
        self.onnx_file.as_deref()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }
    pub fn graph_kind(&self) -> GraphKind {
        self.graph_kind
    }
    pub fn output_kind(&self) -> OutputKind {
        self.output_kind
    }
    pub fn output_dim(&self) -> usize {
        self.output_dim
    }
    pub fn options(&self) -> &ModelOptions {
        &self.options
    }
    /// The ONNX Runtime providers that run nodes of this model, comma-separated, or
    /// `OpenVINO:<device>:<precision>` on backend=openvino.
    pub fn providers(&self) -> &std::ffi::CStr {
        self.session.providers()
    }
    /// `[C, H, W]` the graph takes and preprocessing produces (test size with `use_test_size`).
    pub fn input_size(&self) -> [usize; 3] {
        self.data_config.input_size
    }
    pub fn num_classes(&self) -> usize {
        self.config.num_classes
    }
    pub fn label(&self, index: usize) -> Option<&CString> {
        self.labels.get(index)?.as_ref()
    }
    pub fn description(&self, index: usize) -> Option<&CString> {
        self.descriptions.get(index)?.as_ref()
    }
    pub fn config_json(&self) -> &CString {
        &self.config_json
    }

    /// timm's eval data config for this model (`resolve_data_config`, with the test size when
    /// option `use_test_size` is set).
    pub fn data_config(&self) -> &DataConfig {
        &self.data_config
    }

    /// timm's eval transform of one image into `out` (`C*H*W` floats).
    pub fn preprocess(&self, image: &RgbImage, out: &mut [f32]) -> Result<()> {
        preprocess::preprocess(&self.data_config, image, out)
    }

    /// Preprocesses `images`, runs them as one batch and returns each image's top `k` classes,
    /// most probable first.
    pub fn classify(&self, images: &[RgbImage], k: usize) -> Result<Vec<Vec<Class>>> {
        if self.output_kind != OutputKind::Logits {
            return Err(Error::invalid_argument(
                "classify needs a model created with output=logits",
            ));
        }
        let classes = self.output_dim;
        if k == 0 || k > classes {
            return Err(Error::invalid_argument(format!(
                "k = {k}; expected 1..={classes} (the model's class count)"
            )));
        }
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let [c, h, w] = self.data_config.input_size;
        let per = c * h * w;
        let mut input = vec![0f32; per * images.len()];
        for (img, chunk) in images.iter().zip(input.chunks_exact_mut(per)) {
            self.preprocess(img, chunk)?;
        }
        let mut logits = vec![0f32; classes * images.len()];
        self.infer(
            &input,
            &[images.len() as i64, c as i64, h as i64, w as i64],
            &mut logits,
        )?;
        Ok(logits
            .chunks_exact(classes)
            .map(|row| top_k(row, k))
            .collect())
    }

    /// Runs a batch: `input` is NCHW float32 of `shape`, `output` receives `[N, output_dim]`.
    /// Safe to call from many threads at once.
    pub fn infer(&self, input: &[f32], shape: &[i64], output: &mut [f32]) -> Result<usize> {
        if self.outputs.len() != 1 || matches!(self.outputs[0], OutputShape::Map { .. }) {
            return Err(Error::invalid_argument(format!(
                "this model returns {} feature map(s) (option output=feature_maps); use timm_infer_outputs",
                self.outputs.len()
            )));
        }
        let n = self.check_input(input.len(), shape)?;
        let needed = n
            .checked_mul(self.output_dim)
            .ok_or_else(|| Error::invalid_argument("batch too large"))?;
        if output.len() < needed {
            return Err(Error::buffer_too_small(format!(
                "output buffer holds {} floats but batch {n} × {} outputs needs {needed}",
                output.len(),
                self.output_dim
            )));
        }
        // [N, T, D] for tokens, written row-major: N rows of output_dim = T * D floats.
        let dims = match self.outputs[0] {
            OutputShape::Tokens { tokens, dim } => [n as i64, tokens as i64, dim as i64],
            _ => [n as i64, self.output_dim as i64, 0],
        };
        let out_shape = if dims[2] > 0 { &dims[..] } else { &dims[..2] };
        self.engine_for(shape)?
            .run(input, shape, &mut output[..needed], out_shape)?;
        Ok(needed)
    }

    /// Number of outputs (1 for logits and features, one per map for feature maps).
    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    /// timm's `feature_info` of each output (empty unless output=feature_maps).
    pub fn feature_info(&self) -> &[FeatureInfo] {
        &self.feature_info
    }

    /// The module name of feature map `index`, as a C string.
    pub fn feature_module(&self, index: usize) -> Option<&CString> {
        self.feature_modules.get(index)
    }

    /// The shape output `index` has for an input of `input_shape` (NCHW).
    pub fn output_shape(&self, index: usize, input_shape: &[i64]) -> Result<Vec<usize>> {
        let out = self.outputs.get(index).ok_or_else(|| {
            Error::invalid_argument(format!(
                "output index {index} is out of range; the model has {} output(s)",
                self.outputs.len()
            ))
        })?;
        let numel = input_shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))
            .ok_or_else(|| {
                Error::invalid_argument(format!("input shape {input_shape:?} overflows"))
            })?;
        let n = self.check_input(numel, input_shape)?;
        let (h, w) = (input_shape[2] as usize, input_shape[3] as usize);
        out.dims(n, h, w).ok_or_else(|| self.too_small(h, w))
    }

    /// Runs a batch and writes every output: `outputs[i]` receives output `i` (its length at
    /// least [`Model::output_shape`]'s product). Safe to call from many threads at once.
    pub fn infer_outputs(
        &self,
        input: &[f32],
        shape: &[i64],
        outputs: &mut [&mut [f32]],
    ) -> Result<()> {
        if outputs.len() != self.outputs.len() {
            return Err(Error::invalid_argument(format!(
                "{} output buffer(s) given; the model has {} output(s) (timm_model_output_count)",
                outputs.len(),
                self.outputs.len()
            )));
        }
        let mut shapes = Vec::with_capacity(outputs.len());
        for (i, out) in outputs.iter_mut().enumerate() {
            let dims = self.output_shape(i, shape)?;
            let needed: usize = dims.iter().product();
            if out.len() < needed {
                return Err(Error::buffer_too_small(format!(
                    "output {i} buffer holds {} floats but its shape {dims:?} needs {needed}",
                    out.len()
                )));
            }
            *out = &mut std::mem::take(out)[..needed];
            shapes.push(dims.iter().map(|&d| d as i64).collect::<Vec<i64>>());
        }
        if input.len() != shape.iter().map(|&d| d as usize).product::<usize>() {
            return Err(Error::invalid_argument(format!(
                "input has {} floats but shape {shape:?} needs {}",
                input.len(),
                shape.iter().map(|&d| d as usize).product::<usize>()
            )));
        }
        self.engine_for(shape)?
            .run_outputs(input, shape, outputs, &shapes)
    }

    /// The engine that runs an input of `shape` (checked NCHW): the main session, or for a size
    /// other than the nominal one of a fixed-size session, the symbolic-size one (made now if
    /// this is the first such call).
    fn engine_for(&self, shape: &[i64]) -> Result<&Engine> {
        let Some(o) = &self.other_size else {
            return Ok(&self.session);
        };
        let hw = (shape[2] as usize, shape[3] as usize);
        if hw == o.nominal {
            return Ok(&self.session);
        }
        if let Some(e) = o.engine.get() {
            return Ok(e);
        }
        let _making = o.making.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = o.engine.get() {
            return Ok(e);
        }
        let (config, data, weights) = (&self.config, &self.data_config, self._weights.first());
        let engine = match self.options.backend.backend {
            Backend::OnnxRuntime => {
                ort_native(config, data, weights, &self.options, false).map(|m| Engine::Ort(m.0))
            }
            Backend::OpenVino => {
                ov_native(config, data, weights, &self.options, false).map(|m| m.0)
            }
        }
        .map_err(|e| e.context(format!("making the session for {}x{} inputs", hw.0, hw.1)))?;
        Ok(o.engine.get_or_init(|| engine))
    }

    fn too_small(&self, h: usize, w: usize) -> Error {
        let least = self.min_input.least();
        Error::invalid_argument(format!(
            "input {h}x{w} is too small for this model: it needs at least {least}x{least}"
        ))
    }

    /// Checks an input shape against the model; returns the batch size.
    fn check_input(&self, len: usize, shape: &[i64]) -> Result<usize> {
        let expected = || {
            let d = |x: Option<usize>| x.map_or("any".to_string(), |v| v.to_string());
            format!(
                "[N, {}, {}, {}]",
                d(self.input_dims[0]),
                d(self.input_dims[1]),
                d(self.input_dims[2])
            )
        };
        if shape.len() != 4 {
            return Err(Error::invalid_argument(format!(
                "input shape has {} dims {shape:?}; expected NCHW {}",
                shape.len(),
                expected()
            )));
        }
        if shape.iter().any(|&d| d <= 0) {
            return Err(Error::invalid_argument(format!(
                "input shape {shape:?} has a zero or negative dimension; expected {}",
                expected()
            )));
        }
        for (i, want) in self.input_dims.iter().enumerate() {
            if let Some(w) = want {
                if shape[i + 1] as u64 != *w as u64 {
                    return Err(Error::invalid_argument(format!(
                        "input shape {shape:?} does not match the model's {}",
                        expected()
                    )));
                }
            }
        }
        let total = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?));
        let total = total
            .ok_or_else(|| Error::invalid_argument(format!("input shape {shape:?} overflows")))?;
        if total != len {
            return Err(Error::invalid_argument(format!(
                "input has {len} floats but shape {shape:?} needs {total}"
            )));
        }
        let (h, w) = (shape[2] as usize, shape[3] as usize);
        if !self.min_input.fits(h) || !self.min_input.fits(w) {
            return Err(self.too_small(h, w));
        }
        Ok(shape[0] as usize)
    }
}

/// The safetensors tensor for one stripped ONNX initializer, checked against its declared dims
/// and type; `runtime::values` turns it into the value (a view in map mode, else one copy,
/// converted when the file stores another float type).
fn bound_tensor<'w>(w: &'w Weights, init: &onnx::Initializer) -> Result<Bound<'w>> {
    let info = w.get(&init.name).ok_or_else(|| {
        Error::invalid_model(format!(
            "model.onnx needs initializer `{}` from {}, which has no such tensor",
            init.name,
            w.path().display()
        ))
    })?;
    let dims: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
    if dims != init.dims {
        return Err(Error::invalid_model(format!(
            "weight `{}` has shape {:?} in {} but model.onnx declares {:?}",
            init.name,
            info.shape,
            w.path().display(),
            init.dims
        )));
    }
    let elem = match (init.data_type, info.dtype) {
        (onnx::FLOAT, DType::F32) => sys::F32,
        (onnx::FLOAT16, DType::F16) => sys::F16,
        (onnx::BFLOAT16, DType::BF16) => sys::BF16,
        (onnx::FLOAT, d) if d.is_float() || d == DType::F64 => sys::F32,
        (t, d) => {
            return Err(Error::invalid_model(format!(
            "weight `{}` is {d:?} in the safetensors file but model.onnx declares ONNX type {t}",
            init.name
        )))
        }
    };
    Ok(Bound {
        name: init.name.clone(),
        weights: w,
        info,
        dims,
        elem,
    })
}

/// The `k` largest entries of `logits` with their softmax probabilities (ties: lower index first).
pub fn top_k(logits: &[f32], k: usize) -> Vec<Class> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Softmax in f64 so probabilities of large-logit models do not lose their small tails.
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
        .into_iter()
        .map(|i| Class {
            index: i,
            probability: (exps[i] / sum) as f32,
            logit: logits[i],
        })
        .collect()
}

/// The native graph of `config` at the data config's input size, from `weights` or seeded
/// random weights.
fn build_native(
    config: &ModelConfig,
    data: &DataConfig,
    weights: Option<&Arc<Weights>>,
    request: &graph::Request,
    seed: u64,
) -> Result<graph::Graph> {
    let size = data.input_size;
    let source = match weights {
        Some(w) => ParamSource::Weights(w),
        None => ParamSource::Random(graph::rng::Rng::new(seed)),
    };
    graph::build(config, source, request, (size[1], size[2]))
}

/// A native graph compiled by OpenVINO, and the graph. With `fix_size`, free input H/W are
/// fixed to the nominal size (OpenVINO compiles static spatial shapes into faster kernels:
/// convnext_tiny fp32 5% faster); the third value says whether the graph had free H/W that were
/// fixed.
fn ov_native(
    config: &ModelConfig,
    data: &DataConfig,
    weights: Option<&Arc<Weights>>,
    options: &ModelOptions,
    fix_size: bool,
) -> Result<(Engine, graph::Graph, bool)> {
    let mut req = request(options);
    req.fixed_size = fix_size;
    let g = build_native(config, data, weights, &req, options.seed)?;
    let e = Engine::openvino_native(
        &g,
        weights.map(|w| &**w),
        &config.architecture,
        data.input_size,
        &options.backend,
        &options.session,
    )?;
    let fixed = req.fixed_size && g.any_size;
    Ok((e, g, fixed))
}

/// A native graph's ONNX Runtime session (from the optimised-model cache when it has one) and
/// the graph (weights released on CPU). With `fix_size` on CPU, free input H/W are fixed to the
/// nominal size; the third value says whether the graph had free H/W that were fixed.
fn ort_native(
    config: &ModelConfig,
    data: &DataConfig,
    weights: Option<&Arc<Weights>>,
    options: &ModelOptions,
    fix_size: bool,
) -> Result<(Session, graph::Graph, bool)> {
    let size = data.input_size;
    let sopts = session_options(data, options)?;
    let mut req = request(options);
    req.fixed_size = fix_size && !sopts.providers.wants_gpu();
    // Keyed by what the graph is built from, so a hit needs no graph data at all.
    let keyed = Instant::now();
    let cache = weights.and_then(|w| {
        Session::graph_cache_for(&sopts, |h| source_identity(h, config, &req, &sopts, w))
    });
    let key_s = keyed.elapsed().as_secs_f64();
    let hit = match (&cache, weights) {
        (Some(c), Some(w)) => Session::from_cache_hit(c, &sopts, || {
            graph::build_shapes(config, ParamSource::Weights(w), &req, (size[1], size[2]))
        })?,
        _ => None,
    };
    let (s, g) = match (hit, cache.as_ref().zip(weights)) {
        (Some(found), _) => found,
        (None, Some((c, w))) => first_load(c, &sopts, config, data, w, &req, options.seed, key_s)?,
        (None, None) => {
            let mut g = build_native(config, data, weights, &req, options.seed)?;
            let s = Session::from_graph(&mut g, weights.map(|w| &**w), &sopts)?;
            (s, g)
        }
    };
    let fixed = req.fixed_size && g.any_size;
    Ok((s, g, fixed))
}

/// A first load with the optimised-model cache: the graph is built, ONNX Runtime optimises it
/// into a new cache entry ([`Session::write_entry`]), and the session is opened from that entry
/// as every later load opens it, while the entry is written to disk; then it is published.
/// Where the entry cannot be written or opened, the graph is built once more and run without
/// the cache (a warning says why).
#[allow(clippy::too_many_arguments)]
fn first_load(
    cache: &crate::runtime::graph_cache::Cache,
    sopts: &crate::runtime::SessionOptions,
    config: &ModelConfig,
    data: &DataConfig,
    weights: &Arc<Weights>,
    req: &graph::Request,
    seed: u64,
    key_s: f64,
) -> Result<(Session, graph::Graph)> {
    let built = Instant::now();
    let mut g = build_native(config, data, Some(weights), req, seed)?;
    let build_s = built.elapsed().as_secs_f64();
    match Session::write_entry(&mut g, Some(weights), sopts, cache) {
        Ok((sealed, times)) => {
            let size = data.input_size;
            let shapes = || {
                graph::build_shapes(
                    config,
                    ParamSource::Weights(weights),
                    req,
                    (size[1], size[2]),
                )
            };
            let opened = Instant::now();
            if let Some(found) = Session::from_sealed(cache, sealed, sopts, shapes)? {
                // Where a first load's time goes, for whoever wonders why it is slower than
                // the next (the callback gets it; nothing is printed without one).
                crate::runtime::log::info(&format!(
                    "{}: optimised-model cache entry written; load phases (s): key={key_s:.3} \
                     build={build_s:.3} stage={:.3} optimise_save={:.3} reopen_sync={:.3}",
                    config.architecture,
                    times.stage_s,
                    times.optimise_s,
                    opened.elapsed().as_secs_f64()
                ));
                return Ok(found);
            }
        }
        Err(e) => crate::runtime::log::warn(&format!(
            "optimised-model cache not written: {}",
            e.message()
        )),
    }
    let mut g = build_native(config, data, Some(weights), req, seed)?;
    let s = Session::from_graph(&mut g, Some(weights), sopts)?;
    Ok((s, g))
}

/// What the options ask of a native graph.
pub(crate) fn request(options: &ModelOptions) -> graph::Request {
    graph::Request {
        output: options.output,
        out_indices: options.out_indices.clone(),
        output_stride: options.output_stride,
        dynamic_img_size: options.dynamic_img_size,
        max_params: options.max_params,
        fixed_size: false,
    }
}

/// ONNX Runtime's session options (precision applied) plus the image size the model will be
/// fed (TensorRT's profile shapes).
fn session_options(
    data: &DataConfig,
    options: &ModelOptions,
) -> Result<crate::runtime::SessionOptions> {
    let mut s = options.backend.ort_session(&options.session)?;
    s.image_chw = Some(data.input_size);
    Ok(s)
}

/// What a native graph is built from, for the optimised-model cache's key: the parsed config,
/// the output request, the input size and the weights' content (BLAKE3, remembered by the
/// file's identity, see `graph_cache::weights_digest`).
fn source_identity(
    h: &mut sha2::Sha256,
    config: &ModelConfig,
    request: &graph::Request,
    sopts: &crate::runtime::SessionOptions,
    weights: &Weights,
) -> Result<()> {
    use sha2::Digest;
    let root = sopts.graph_cache.root();
    let digest = crate::runtime::graph_cache::weights_digest(root.as_deref(), weights)?;
    h.update(
        format!(
            "native|{config:?}|{request:?}|{:?}|{digest}",
            sopts.image_chw
        )
        .as_bytes(),
    );
    Ok(())
}

/// timm's `resolve_data_config` for the model's pretrained cfg (at option `input_size` when set).
fn data_config(config: &ModelConfig, options: &ModelOptions) -> Result<DataConfig> {
    let p = &config.pretrained_cfg;
    let (mut input_size, crop_pct) = match (options.use_test_size, p.test_input_size) {
        (true, Some(t)) => (t, p.test_crop_pct.unwrap_or(p.crop_pct)),
        _ => (p.input_size, p.crop_pct),
    };
    if let Some((h, w)) = options.input_size {
        input_size = [input_size[0], h, w];
    }
    let three = |v: &[f64]| -> [f32; 3] {
        match v {
            [a] => [*a as f32; 3],
            [a, b, c, ..] => [*a as f32, *b as f32, *c as f32],
            _ => [0.0; 3],
        }
    };
    // Problems here are the folder's, not the caller's.
    let bad =
        |e: Error| Error::invalid_model(format!("config.json's data config: {}", e.message()));
    let cfg = DataConfig {
        input_size,
        interpolation: Interpolation::from_timm(&p.interpolation).map_err(bad)?,
        crop_pct,
        crop_mode: CropMode::from_timm(&p.crop_mode).map_err(bad)?,
        mean: three(&p.mean),
        std: three(&p.std),
    };
    cfg.validate().map_err(bad)?;
    Ok(cfg)
}
