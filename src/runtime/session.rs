//! An ONNX Runtime session with one float input and one float output, run from many threads
//! at once, reading the caller's input buffer and writing the caller's output buffer in place.

use std::ffi::CString;
use std::path::Path;

use ort::editor;
use ort::operator::Attribute;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{Outlet, Shape, SymbolicDimensions, TensorElementType, ValueType};
use ort::AsPointer;

use sha2::{Digest, Sha256};

use super::device::DeviceIo;
use super::graph_cache;
use super::loader;
use super::providers::{self, Provider, ProviderOptions, Target};
use super::sys::{self, OwnedValue};
use super::values;
use crate::error::{Error, Result};
use crate::graph::{Attr, Graph, InitData, OutputShape, MS_DOMAIN, MS_OPSET, OPSET};
use crate::weights::Weights;

/// Below this size a weight is copied rather than viewed: ORT treats tiny tensors as
/// constants it may rewrite, and the view would save nothing.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptLevel {
    Disable,
    Basic,
    Extended,
    All,
}

/// How sessions are built.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub intra_threads: Option<usize>,
    pub inter_threads: Option<usize>,
    pub opt_level: Option<OptLevel>,
    pub ort_library: Option<std::path::PathBuf>,
    /// Execution providers and their settings.
    pub providers: ProviderOptions,
    /// `[C, H, W]` of the images the model will be fed (TensorRT's profile shapes).
    pub image_chw: Option<[usize; 3]>,
    /// The optimised-model cache of native graphs.
    pub graph_cache: graph_cache::CacheOptions,
}

/// Data ORT reads in place for the session's lifetime: views over the caller's or our memory.
#[derive(Default)]
pub struct Keep {
    pub values: Vec<OwnedValue>,
    /// 8-byte aligned copies backing some of `values` (bound weights read or converted).
    pub buffers: Vec<Vec<u64>>,
}

/// Where the time of [`Session::write_entry`] went, in seconds: writing the graph and its
/// tensors to the staging file, and ONNX Runtime optimising, prepacking and saving the entry.
#[derive(Debug, Clone, Copy)]
pub struct EntryTimes {
    pub stage_s: f64,
    pub optimise_s: f64,
}

pub struct Session {
    // Dropped first: its bindings and allocators belong to `inner`.
    device_io: Option<DeviceIo>,
    // Dropped before `keep`: ORT may reference `keep` until the session is gone.
    inner: ort::session::Session,
    _keep: Keep,
    input_name: CString,
    /// Every output a native graph declares; the first one only for a model.onnx.
    output_names: Vec<CString>,
    /// Input dims as the model declares them; -1 for free dimensions.
    pub input_dims: Vec<i64>,
    /// Dims of each output in `output_names`.
    pub output_dims: Vec<Vec<i64>>,
    /// ORT provider names that run nodes of this session, comma-separated.
    providers: CString,
    /// TensorRT's profile covers batches up to this; larger ones are refused up front.
    max_batch: Option<usize>,
}

/// A safetensors tensor that replaces a model.onnx initializer of the same name, checked by
/// the caller against the initializer's dims and type.
pub struct Bound<'a> {
    pub name: String,
    pub weights: &'a Weights,
    pub info: &'a crate::weights::TensorInfo,
    pub dims: Vec<i64>,
    pub elem: ort_sys::ONNXTensorElementDataType,
}

impl Session {
    /// Loads a model.onnx from its bytes (`info` is what [`crate::onnx::scan`] read from them,
    /// so the file is read once); its external data files are found in `folder`. `bound`
    /// replaces initializers whose data lives in a safetensors file (by name).
    ///
    /// The weights in `bound` must outlive the session (the model owns both, session first).
    pub fn from_onnx(
        model: &[u8],
        info: &crate::onnx::ModelInfo,
        folder: &Path,
        opts: &SessionOptions,
        bound: &[Bound<'_>],
    ) -> Result<Self> {
        let mut buffers = Vec::new();
        let bindings: Vec<(String, OwnedValue)> = bound
            .iter()
            .map(|b| {
                let to = values::CopyTo::Caller(&mut buffers);
                // SAFETY: the caller keeps the weights alive for the session (see above).
                let v = unsafe { values::weight_value(b.weights, b.info, &b.dims, b.elem, to)? };
                Ok((b.name.clone(), v.value))
            })
            .collect::<Result<_>>()?;
        let names: Vec<CString> = bindings
            .iter()
            .map(|(n, _)| {
                CString::new(n.as_str()).map_err(|_| {
                    Error::invalid_model(format!("initializer name `{n}` has a NUL byte"))
                })
            })
            .collect::<Result<_>>()?;
        let name_ptrs: Vec<*const std::ffi::c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let value_ptrs: Vec<*const ort_sys::OrtValue> =
            bindings.iter().map(|(_, v)| v.ptr() as *const _).collect();
        let folder_text = folder.to_str().ok_or_else(|| {
            Error::invalid_argument(format!("model folder {} is not UTF-8", folder.display()))
        })?;
        let make_builder = || {
            let mut builder = builder(opts)?;
            // A model loaded from memory finds its external data files relative to this.
            providers::add_config(
                &mut builder,
                "session.model_external_initializers_file_folder_path",
                folder_text,
            )?;
            if !name_ptrs.is_empty() {
                // SAFETY: arrays of equal length; the values stay alive in `keep` for the session's lifetime.
                sys::check(unsafe {
                    (ort::api().AddExternalInitializers)(
                        builder.ptr_mut(),
                        name_ptrs.as_ptr(),
                        value_ptrs.as_ptr(),
                        name_ptrs.len(),
                    )
                })?;
            }
            Ok(builder)
        };
        // TensorRT's profile needs the image input's name before the session exists.
        let input_name = info
            .inputs
            .iter()
            .find(|i| !info.initializers.iter().any(|t| &t.name == *i));
        let identity = |h: &mut Sha256| -> Result<()> {
            h.update(model);
            for (name, value) in &bindings {
                h.update(name.as_bytes());
                h.update(sys::tensor_bytes(value)?);
            }
            Ok(())
        };
        let target = Target {
            input_name: input_name.map(String::as_str),
            input_chw: opts.image_chw,
            identity: &identity,
        };
        let created = providers::create_session(&opts.providers, &target, make_builder, |b| {
            b.commit_from_memory(model).map_err(|e| {
                Error::runtime(format!(
                    "ONNX Runtime could not load {}: {e}",
                    folder.join("model.onnx").display()
                ))
            })
        })?;
        let keep = Keep {
            values: bindings.into_iter().map(|(_, v)| v).collect(),
            buffers,
        };
        Self::wrap(created, keep, &opts.providers, false)
    }

    /// The optimised-model cache entry of a native model on CPU (see [`graph_cache`]). `source`
    /// feeds what the graph is built from (config, request, the weights' content) into the key,
    /// so a later load can find the entry before building anything. `None` on GPU providers,
    /// with the cache disabled, or when no cache folder is usable (a warning says why).
    pub fn graph_cache_for(
        opts: &SessionOptions,
        source: impl FnOnce(&mut Sha256) -> Result<()>,
    ) -> Option<graph_cache::Cache> {
        if opts.providers.wants_gpu() {
            return None;
        }
        let parts = cache_parts(opts);
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        graph_cache::Cache::new(&opts.graph_cache, source, &parts).unwrap_or_else(|e| {
            super::log::warn(&format!("optimised-model cache unused: {}", e.message()));
            None
        })
    }

    /// A session from the cache's entry when it has a usable one, with the model's shape-only
    /// graph (`shapes`, built only on a hit; its outputs are checked against the entry). An
    /// entry ORT refuses is discarded, so the caller's build rewrites it.
    pub fn from_cache_hit(
        cache: &graph_cache::Cache,
        opts: &SessionOptions,
        shapes: impl FnOnce() -> Result<Graph>,
    ) -> Result<Option<(Self, Graph)>> {
        match cache.lookup() {
            Some(hit) => Self::from_hit(cache, &hit, opts, shapes),
            None => Ok(None),
        }
    }

    /// [`Session::from_cache_hit`] for an entry already looked up (and checked) by the caller.
    pub fn from_hit(
        cache: &graph_cache::Cache,
        hit: &graph_cache::Hit,
        opts: &SessionOptions,
        shapes: impl FnOnce() -> Result<Graph>,
    ) -> Result<Option<(Self, Graph)>> {
        let graph = shapes()?;
        match Self::from_cached(&hit.model, &graph, opts) {
            Ok(s) => Ok(Some((s, graph))),
            Err(e) => {
                super::log::warn(&format!(
                    "ONNX Runtime refused the cached optimised model {} ({}); rebuilding it",
                    hit.model.display(),
                    e.message()
                ));
                cache.discard();
                Ok(None)
            }
        }
    }

    /// Builds a session from a native graph through ORT's Model Editor API. Weights are handed
    /// over as views of the mapped file where alignment allows (no copy in this library). The
    /// path of loads without the optimised-model cache (a first load with it goes through
    /// [`Session::write_entry`]). On CPU the graph's computed weights are released as soon as
    /// ORT holds them, so `graph` comes back without them.
    pub fn from_graph(
        graph: &mut Graph,
        weights: Option<&Weights>,
        opts: &SessionOptions,
    ) -> Result<Self> {
        // One attempt only on CPU: then the graph's data may be freed while ORT takes it.
        let cpu_only = !opts.providers.wants_gpu();
        let chw = graph.input_chw;
        let input_chw = match (opts.image_chw, chw) {
            (Some(s), _) => Some(s),
            (None, [Some(c), Some(h), Some(w)]) => Some([c as usize, h as usize, w as usize]),
            _ => None,
        };
        let input_name = graph.input_name.clone();
        // TensorRT hashes the graph (lazily, before any commit); commits may free its data.
        let graph = std::cell::RefCell::new(graph);
        let identity = |h: &mut Sha256| graph_identity(&graph.borrow(), weights, h);
        let target = Target {
            input_name: Some(&input_name),
            input_chw,
            identity: &identity,
        };
        let created = providers::create_session(
            &opts.providers,
            &target,
            || builder(opts),
            |b| Self::commit_graph(&mut graph.borrow_mut(), weights, b, cpu_only),
        )?;
        if let Some(w) = weights {
            w.release_pages();
        }
        // ORT's optimiser frees its working copies of the weights; the C heap keeps them.
        sys::trim_heap();
        Self::wrap(created, Keep::default(), &opts.providers, true)
    }

    /// Writes the optimised-model cache entry of a native graph on CPU without keeping a
    /// session: the graph goes to a file with its tensors in an external data file
    /// ([`crate::export::runtime_file`]), and ORT optimises it from there and saves the entry.
    /// Loaded from a file, ORT reads a tensor only when a transform rewrites it (its NCHWc
    /// filter reorder, say) and keeps only the rewritten copy, where a graph handed over in
    /// memory stays whole beside every copy made from it. ORT saves the weights it prepacks
    /// into the entry too, so a cached load maps them instead of packing again; the session is
    /// then dropped.
    ///
    /// The graph's computed weights are freed once written, so `graph` comes back without them.
    /// The entry comes back sealed, for [`Session::from_sealed`] to open and publish.
    pub fn write_entry(
        graph: &mut Graph,
        weights: Option<&Weights>,
        opts: &SessionOptions,
        cache: &graph_cache::Cache,
    ) -> Result<(graph_cache::Sealed, EntryTimes)> {
        use crate::export::onnx_writer::{self, Dim, Io};
        let started = std::time::Instant::now();
        let pending = cache.begin()?;
        let source = pending.stage_dir()?.join(graph_cache::MODEL_FILE);
        {
            let (input, outputs) = io_shapes(graph);
            let io = |s: IoShape| Io {
                name: s.name,
                dims: s
                    .dims
                    .iter()
                    .zip(s.symbols)
                    .map(|(&d, sym)| {
                        if d >= 0 {
                            Dim::Fixed(d)
                        } else {
                            Dim::Symbolic(sym)
                        }
                    })
                    .collect(),
            };
            let outputs: Vec<Io> = outputs.into_iter().map(io).collect();
            let model = crate::export::runtime_file::model(graph, weights, &io(input), &outputs)?;
            onnx_writer::write(&model, &source, true)?;
        }
        for init in &mut graph.initializers {
            if let InitData::F32(v) = &mut init.data {
                *v = Vec::new();
            }
        }
        if let Some(w) = weights {
            w.release_pages();
        }
        sys::trim_heap();
        let staged = std::time::Instant::now();
        let mut b = save_optimized(builder(opts)?, &pending.model_path())?;
        // The blobs ORT prepacks from the weights go into the entry, so later loads map them
        // instead of packing again.
        providers::add_config(
            &mut b,
            "session.save_external_prepacked_constant_initializers",
            "1",
        )?;
        let session = sys::trimming_heap(|| {
            b.commit_from_file(&source)
                .map_err(|e| Error::runtime(format!("ONNX Runtime rejected the native graph: {e}")))
        })?;
        drop(session);
        sys::trim_heap();
        pending.remove_stage()?;
        let times = EntryTimes {
            stage_s: (staged - started).as_secs_f64(),
            optimise_s: staged.elapsed().as_secs_f64(),
        };
        Ok((cache.seal(pending)?, times))
    }

    /// The session of an entry [`Session::write_entry`] just sealed, opened as a cached load
    /// opens it while the entry's data is still being written to disk; then the entry is
    /// published. `None` (with a warning, the entry dropped) when ORT refuses it.
    pub fn from_sealed(
        cache: &graph_cache::Cache,
        sealed: graph_cache::Sealed,
        opts: &SessionOptions,
        shapes: impl FnOnce() -> Result<Graph>,
    ) -> Result<Option<(Self, Graph)>> {
        let graph = shapes()?;
        // The entry's 2x the weights reach the disk while ORT opens it (vit_base: 0.25 s).
        let opened = std::thread::scope(|s| {
            let sync = std::thread::Builder::new()
                .name("timm-cache-sync".into())
                .spawn_scoped(s, || sealed.sync());
            let opened = Self::from_cached(&sealed.model_path(), &graph, opts);
            if let Ok(h) = sync {
                let _ = h.join();
            }
            opened
        });
        let session = match opened {
            Ok(s) => s,
            Err(e) => {
                super::log::warn(&format!(
                    "ONNX Runtime refused the optimised model it saved ({}); running without the \
                     cache",
                    e.message()
                ));
                return Ok(None);
            }
        };
        if let Err(e) = cache.publish(sealed) {
            super::log::warn(&format!(
                "optimised-model cache entry not published: {}",
                e.message()
            ));
        }
        Ok(Some((session, graph)))
    }

    /// Drops the session and hands the memory it freed back to the system.
    pub fn close(self) {
        drop(self);
        sys::trim_heap();
    }

    /// A session from a cached optimised model: ORT maps its weights (and prepacked blobs)
    /// from the entry's data file and runs no graph optimisation again.
    fn from_cached(model: &Path, graph: &Graph, opts: &SessionOptions) -> Result<Self> {
        let mut b = builder(opts)?
            .with_optimization_level(GraphOptimizationLevel::Disable)
            .map_err(|e| Error::runtime(format!("ONNX Runtime session options: {e}")))?;
        let session = b
            .commit_from_file(model)
            .map_err(|e| Error::runtime(e.to_string()))?;
        let assigned = vec![Provider::Cpu.ort_name().to_string()];
        let created = providers::Created {
            session,
            assigned,
            registered: Vec::new(),
        };
        let s = Self::wrap(created, Keep::default(), &opts.providers, true)?;
        if s.output_names.len() != graph.outputs.len() {
            return Err(Error::runtime(
                "the cached model's outputs differ from the graph's",
            ));
        }
        Ok(s)
    }

    /// Builds the editor model for `graph` and creates the session from it. Called once per
    /// attempt: ORT consumes the model, so a retry with other providers builds it again.
    fn commit_graph(
        graph: &mut Graph,
        weights: Option<&Weights>,
        builder: &mut SessionBuilder,
        release: bool,
    ) -> Result<ort::session::Session> {
        let mut g = editor::Graph::new()?;
        let (input, outputs) = io_shapes(graph);
        let outlet = |io: IoShape| {
            Outlet::new(
                io.name,
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    dimension_symbols: SymbolicDimensions::new(io.symbols),
                    shape: Shape::from(io.dims),
                },
            )
        };
        g.set_inputs([outlet(input)])?;
        let outputs: Vec<Outlet> = outputs.into_iter().map(outlet).collect();
        g.set_outputs(outputs)?;

        for init in &mut graph.initializers {
            let (value, external) = match &init.data {
                InitData::Weight(name) => {
                    let w = weights.ok_or_else(|| {
                        Error::internal("a native graph references weights but none were loaded")
                    })?;
                    let info = w.get(name).ok_or_else(|| {
                        Error::invalid_model(format!("weights have no tensor `{name}`"))
                    })?;
                    let elem = values::element_type(info.dtype).ok_or_else(|| {
                        Error::invalid_model(format!(
                            "weight `{name}` has dtype {:?}; expected float",
                            info.dtype
                        ))
                    })?;
                    // SAFETY: the mapping outlives the session (the model owns both, session first).
                    let v = unsafe {
                        values::weight_value(w, info, &init.dims, elem, values::CopyTo::Ort)?
                    };
                    (v.value, v.external)
                }
                InitData::F32(v) => {
                    let bytes = crate::graph::f32_bytes(v);
                    let v = values::owned(&init.dims, sys::F32, bytes.len(), |dst| {
                        dst.copy_from_slice(bytes);
                        Ok(())
                    })?;
                    // ORT holds its copy now; with no retry ahead ours is freed at once, so
                    // computed weights (folded BatchNorm) never exist twice.
                    if release {
                        init.data = InitData::F32(Vec::new());
                    }
                    (v.value, v.external)
                }
                InitData::I64(v) => (
                    sys::tensor_copy(crate::graph::i64_bytes(v), &init.dims, sys::I64)?,
                    false,
                ),
            };
            let name = CString::new(init.name.as_str())
                .map_err(|_| Error::internal("initializer name with NUL"))?;
            let raw = value.into_raw();
            // SAFETY: the graph takes ownership of the value (released with the graph/session).
            let status = unsafe {
                (ort::editor::editor_api()?.AddInitializerToGraph)(
                    g.ptr_mut(),
                    name.as_ptr(),
                    raw,
                    external,
                )
            };
            if !status.0.is_null() {
                // SAFETY: `raw` was created by the failed call and is released once.
                unsafe { (ort::api().ReleaseValue)(raw) };
            }
            sys::check(status)?;
        }

        for node in &graph.nodes {
            let attrs = node
                .attrs
                .iter()
                .map(|(k, a)| match a {
                    Attr::Int(v) => Attribute::new(k, *v),
                    Attr::Ints(v) => Attribute::new(k, v.clone()),
                    Attr::Float(v) => Attribute::new(k, *v),
                    Attr::Floats(v) => Attribute::new(k, v.clone()),
                    Attr::Str(v) => Attribute::new(k, v.clone()),
                })
                .collect::<ort::Result<Vec<_>>>()?;
            let n = editor::Node::new(
                &node.op,
                &node.domain,
                &node.name,
                &node.inputs,
                &node.outputs,
                attrs,
            )
            .map_err(|e| {
                Error::internal(format!(
                    "cannot create node {} ({}): {e}",
                    node.name, node.op
                ))
            })?;
            g.add_node(n)?;
        }

        let mut model = editor::Model::new([
            editor::Opset::new(editor::ONNX_DOMAIN, OPSET)?,
            editor::Opset::new(MS_DOMAIN, MS_OPSET)?,
        ])?;
        model.set_graph(g)?;
        model
            .into_session(builder)
            .map_err(|e| Error::runtime(format!("ONNX Runtime rejected the native graph: {e}")))
    }

    fn wrap(
        created: providers::Created,
        keep: Keep,
        popts: &ProviderOptions,
        all_outputs: bool,
    ) -> Result<Self> {
        let inner = created.session;
        if inner.inputs().len() != 1 || inner.outputs().is_empty() {
            return Err(Error::unsupported(format!(
                "the model has {} inputs and {} outputs; this library runs image classifiers with one image input",
                inner.inputs().len(),
                inner.outputs().len()
            )));
        }
        let dims_of = |o: &Outlet, what: &str| -> Result<Vec<i64>> {
            match o.dtype() {
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    shape,
                    ..
                } => Ok(shape.iter().copied().collect()),
                other => Err(Error::unsupported(format!(
                    "the model's {what} `{}` is {other:?}; a float32 tensor is needed",
                    o.name()
                ))),
            }
        };
        let input_dims = dims_of(&inner.inputs()[0], "input")?;
        // A model.onnx is a classifier: its first output. A native graph may declare several
        // (feature maps), all NCHW.
        let n_out = if all_outputs {
            inner.outputs().len()
        } else {
            1
        };
        let output_dims = inner.outputs()[..n_out]
            .iter()
            .map(|o| dims_of(o, "output"))
            .collect::<Result<Vec<_>>>()?;
        let shapes_ok = match output_dims.as_slice() {
            // Native graphs: feature maps [N, C, H, W] or an encoder's tokens [N, T, D].
            [one] => one.len() == 2 || (all_outputs && matches!(one.len(), 3 | 4)),
            many => many.iter().all(|d| d.len() == 4),
        };
        if input_dims.len() != 4 || !shapes_ok {
            return Err(Error::unsupported(format!(
                "the model's input has shape {input_dims:?} and its outputs {output_dims:?}; expected [N, C, H, W] in and [N, K] out"
            )));
        }
        let cname = |s: &str| {
            CString::new(s)
                .map_err(|_| Error::invalid_model("a model input/output name has a NUL byte"))
        };
        let input_name = cname(inner.inputs()[0].name())?;
        let output_names = inner.outputs()[..n_out]
            .iter()
            .map(|o| cname(o.name()))
            .collect::<Result<Vec<_>>>()?;
        let output_name = output_names[0].clone();
        let on_gpu = created
            .assigned
            .iter()
            .any(|a| a != Provider::Cpu.ort_name());
        let device_io = if on_gpu {
            match DeviceIo::new(&inner, &input_name, &output_name, popts.device_id) {
                Ok(d) => d,
                Err(e) => {
                    super::log::warn(&format!(
                        "inputs and outputs go through host memory on every call: {}",
                        e.message()
                    ));
                    None
                }
            }
        } else {
            None
        };
        let trt = created
            .assigned
            .iter()
            .any(|a| a == Provider::TensorRt.ort_name());
        // Pooled device buffers serve single-output models; several outputs go through host
        // memory (ORT copies them back).
        let device_io = device_io.filter(|_| n_out == 1);
        Ok(Session {
            device_io,
            input_name,
            output_names,
            inner,
            _keep: keep,
            input_dims,
            output_dims,
            providers: CString::new(created.assigned.join(",")).unwrap_or_default(),
            max_batch: trt.then_some(popts.max_batch as usize),
        })
    }

    /// The ORT providers that run nodes of this session, e.g.
    /// `CUDAExecutionProvider,CPUExecutionProvider`.
    pub fn providers(&self) -> &std::ffi::CStr {
        &self.providers
    }

    /// Whether inputs and outputs go through pooled device buffers.
    pub fn uses_device_io(&self) -> bool {
        self.device_io.is_some()
    }

    /// Runs one batch. Safe to call from many threads at once (ORT's `Run` is thread-safe);
    /// the input is read in place and the output written in place.
    pub fn run(
        &self,
        input: &[f32],
        input_shape: &[i64],
        output: &mut [f32],
        output_shape: &[i64],
    ) -> Result<()> {
        if let (Some(max), Some(&n)) = (self.max_batch, input_shape.first()) {
            if n as usize > max {
                return Err(Error::invalid_argument(format!(
                    "batch {n} is larger than option max_batch = {max}, the largest batch of this model's TensorRT profile; \
                     split the batch or create the model with a larger max_batch"
                )));
            }
        }
        if let Some(d) = &self.device_io {
            return d.run(&self.inner, input, input_shape, output, output_shape);
        }
        // SAFETY: both buffers outlive the call; ORT does not write the input.
        let in_v = unsafe {
            sys::tensor_over(
                input.as_ptr() as *const u8,
                std::mem::size_of_val(input),
                input_shape,
                sys::F32,
            )?
        };
        // SAFETY: `output` is a live, writable f32 buffer of exactly that many bytes for the run.
        let out_v = unsafe {
            sys::tensor_over(
                output.as_mut_ptr() as *const u8,
                std::mem::size_of_val(output),
                output_shape,
                sys::F32,
            )?
        };
        let in_names = [self.input_name.as_ptr()];
        let out_names = [self.output_names[0].as_ptr()];
        let inputs = [in_v.ptr() as *const ort_sys::OrtValue];
        let mut outputs = [out_v.ptr()];
        // SAFETY: the session pointer is valid for &self; Run is documented thread-safe.
        sys::check(unsafe {
            (ort::api().Run)(
                self.inner.ptr() as *mut _,
                std::ptr::null(),
                in_names.as_ptr(),
                inputs.as_ptr(),
                1,
                out_names.as_ptr(),
                1,
                outputs.as_mut_ptr(),
            )
        })?;
        if outputs[0] != out_v.ptr() {
            // ORT allocated its own output instead of using ours; never happens with a matching
            // shape, but do not leak it if it does.
            // SAFETY: ORT handed us this value; we release it once.
            unsafe { (ort::api().ReleaseValue)(outputs[0]) };
            return Err(Error::internal(
                "ONNX Runtime did not write into the caller's output buffer",
            ));
        }
        Ok(())
    }
}

impl Session {
    /// Number of outputs the session returns.
    pub fn output_count(&self) -> usize {
        self.output_names.len()
    }

    /// Runs one batch writing every output in place: `outputs[i]` has `shapes[i]`. Same
    /// threading as [`Session::run`].
    pub fn run_outputs(
        &self,
        input: &[f32],
        input_shape: &[i64],
        outputs: &mut [&mut [f32]],
        shapes: &[Vec<i64>],
    ) -> Result<()> {
        if outputs.len() != self.output_names.len() || shapes.len() != outputs.len() {
            return Err(Error::internal(
                "output buffers do not match the session's outputs",
            ));
        }
        if outputs.len() == 1 {
            return self.run(input, input_shape, outputs[0], &shapes[0]);
        }
        // SAFETY: the input buffer outlives the call; ORT does not write it.
        let in_v = unsafe {
            sys::tensor_over(
                input.as_ptr() as *const u8,
                std::mem::size_of_val(input),
                input_shape,
                sys::F32,
            )?
        };
        let mut out_vs = Vec::with_capacity(outputs.len());
        for (o, shape) in outputs.iter_mut().zip(shapes) {
            // SAFETY: each output buffer outlives the call and holds exactly `shape`.
            out_vs.push(unsafe {
                sys::tensor_over(
                    o.as_mut_ptr() as *const u8,
                    std::mem::size_of_val(*o),
                    shape,
                    sys::F32,
                )?
            });
        }
        let in_names = [self.input_name.as_ptr()];
        let out_names: Vec<_> = self.output_names.iter().map(|n| n.as_ptr()).collect();
        let inputs = [in_v.ptr() as *const ort_sys::OrtValue];
        let mut raw: Vec<_> = out_vs.iter().map(|v| v.ptr()).collect();
        // SAFETY: the session pointer is valid for &self; the name and value arrays have
        // `raw.len()` entries; Run is documented thread-safe.
        sys::check(unsafe {
            (ort::api().Run)(
                self.inner.ptr() as *mut _,
                std::ptr::null(),
                in_names.as_ptr(),
                inputs.as_ptr(),
                1,
                out_names.as_ptr(),
                raw.len(),
                raw.as_mut_ptr(),
            )
        })?;
        for (r, v) in raw.iter().zip(&out_vs) {
            if *r != v.ptr() {
                // SAFETY: ORT allocated this value for us; we own it.
                unsafe { (ort::api().ReleaseValue)(*r) };
                return Err(Error::internal(
                    "ONNX Runtime did not write into the caller's output buffer",
                ));
            }
        }
        Ok(())
    }
}

/// What the optimised graph depends on besides the model: the runtime, provider and level.
fn cache_parts(opts: &SessionOptions) -> Vec<String> {
    let lib = loader::loaded_path()
        .map(graph_cache::file_identity)
        .unwrap_or_default();
    vec![
        lib,
        format!("{:?}", opts.providers.providers),
        format!("{:?}", opts.opt_level.unwrap_or(OptLevel::All)),
    ]
}

/// Asks ORT to save the optimised graph to `path` with every initializer in one external data
/// file a later load maps (with the prepacked blobs, see `write_entry`).
fn save_optimized(b: SessionBuilder, path: &Path) -> Result<SessionBuilder> {
    let mut b = b
        .with_optimized_model_path(path)
        .map_err(|e| Error::runtime(format!("ONNX Runtime session options: {e}")))?;
    for (k, v) in [
        (
            "session.optimized_model_external_initializers_file_name",
            graph_cache::DATA_FILE,
        ),
        (
            "session.optimized_model_external_initializers_min_size_in_bytes",
            "128",
        ),
    ] {
        providers::add_config(&mut b, k, v)?;
    }
    Ok(b)
}

fn builder(opts: &SessionOptions) -> Result<SessionBuilder> {
    let env = loader::environment(opts.ort_library.as_deref())?;
    let rt = |e: ort::Error<SessionBuilder>| {
        Error::runtime(format!("ONNX Runtime session options: {e}"))
    };
    let mut b = ort::session::Session::builder(env)
        .map_err(|e| Error::runtime(format!("ONNX Runtime: {e}")))?;
    let level = match opts.opt_level.unwrap_or(OptLevel::All) {
        OptLevel::Disable => GraphOptimizationLevel::Disable,
        OptLevel::Basic => GraphOptimizationLevel::Level1,
        OptLevel::Extended => GraphOptimizationLevel::Level2,
        OptLevel::All => GraphOptimizationLevel::All,
    };
    b = b.with_optimization_level(level).map_err(rt)?;
    if let Some(n) = opts.intra_threads {
        b = b.with_intra_threads(n).map_err(rt)?;
    }
    if let Some(n) = opts.inter_threads {
        b = b.with_inter_threads(n).map_err(rt)?;
    }
    Ok(b)
}

/// The native graph's identity for the TensorRT engine cache: every node and every initializer's
/// name, shape and bytes, so changed weights or a changed graph builder give another key.
fn graph_identity(graph: &Graph, weights: Option<&Weights>, h: &mut Sha256) -> Result<()> {
    h.update(
        format!(
            "{:?}|{}|{:?}|{:?}",
            graph.nodes, graph.input_name, graph.input_chw, graph.outputs
        )
        .as_bytes(),
    );
    for init in &graph.initializers {
        h.update(init.name.as_bytes());
        h.update(format!("{:?}", init.dims).as_bytes());
        match &init.data {
            InitData::Weight(name) => {
                let w = weights.ok_or_else(|| {
                    Error::internal("a native graph references weights but none were loaded")
                })?;
                let info = w.get(name).ok_or_else(|| {
                    Error::invalid_model(format!("weights have no tensor `{name}`"))
                })?;
                w.for_each_chunk(info, |c| h.update(c))?;
                // Hashing must not leave the whole mapping resident.
                w.release_tensor(info);
            }
            InitData::F32(v) => h.update(crate::graph::f32_bytes(v)),
            InitData::I64(v) => h.update(crate::graph::i64_bytes(v)),
        }
    }
    Ok(())
}

/// A graph input or output as ONNX Runtime is told it: dims with -1 for free ones, and each
/// dim's name ("" for none).
struct IoShape {
    name: String,
    dims: Vec<i64>,
    symbols: Vec<String>,
}

/// The input and outputs of `graph` as ONNX Runtime is given them, from memory or from a file.
///
/// ORT 1.31's Model Editor API gives every free dimension of a value the first one's name: an
/// input declared `[batch, 3, height, width]` is saved as `[batch, 3, batch, batch]`, which tells
/// its shape reasoning that the batch, the height and the width are one size. So the batch is
/// named only where it is the one free dimension (its name lets ORT see that values along the
/// graph share it, which its layout fusions need); otherwise every free dimension stays
/// anonymous. A file gets the same names, so both give ORT the same graph to optimise.
fn io_shapes(graph: &Graph) -> (IoShape, Vec<IoShape>) {
    let [c, h, w] = graph.input_chw;
    let input_free = 1 + [c, h, w].iter().filter(|d| d.is_none()).count();
    let shaped = |name: &str, dims: Vec<i64>| {
        let free = dims.iter().filter(|&&d| d < 0).count();
        let mut symbols = vec![String::new(); dims.len()];
        if input_free == 1 && free == 1 {
            symbols[0] = "batch".into();
        }
        IoShape {
            name: name.to_string(),
            dims,
            symbols,
        }
    };
    let dim = |d: Option<i64>| d.unwrap_or(-1);
    let input = shaped(&graph.input_name, vec![-1, dim(c), dim(h), dim(w)]);
    let outputs = graph
        .outputs
        .iter()
        .map(|o| {
            let dims = match &o.shape {
                OutputShape::Vector(d) => vec![-1, *d as i64],
                OutputShape::Map { channels, .. } => vec![-1, *channels as i64, -1, -1],
                OutputShape::Tokens { tokens, dim } => vec![-1, *tokens as i64, *dim as i64],
            };
            shaped(&o.name, dims)
        })
        .collect();
    (input, outputs)
}
