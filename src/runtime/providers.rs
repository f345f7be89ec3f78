//! Execution providers: registering CUDA and TensorRT on a session as the options ask, saying
//! plainly why one could not be used, and reporting which providers really run the nodes.
//!
//! Registration goes through ORT's C API directly rather than `ort::ep`, because we need the
//! error of each step (to name the missing library) and full control over falling back.
//!
//! What is checked, in order, for each requested GPU provider:
//! 1. `GetAvailableProviders`: is the provider compiled into the loaded ONNX Runtime at all
//!    (the CPU wheel has none)?
//! 2. `SessionOptionsAppendExecutionProvider_*_V2`: ORT loads `libonnxruntime_providers_*.so`
//!    and with it the CUDA/cuDNN/TensorRT libraries; a failure carries the loader's (dlopen's)
//!    message, from which the missing file is named.
//! 3. `cudaGetDeviceCount` through the CUDA runtime that step 2 loaded: is there a device with
//!    the requested `device_id`?
//! 4. Session creation itself (the provider creates its CUDA context then).
//!
//! In non-strict mode a failing provider is dropped with a warning and the next one is tried;
//! in strict mode the first failure is the error (`TIMM_ERR_UNSUPPORTED`: a valid request this
//! runtime or machine cannot serve), and `session.disable_cpu_ep_fallback` makes ORT refuse to
//! place nodes on the CPU unless `cpu` was listed.
//!
//! The report comes from ORT's own record of the graph partitioning
//! (`session.record_ep_graph_assignment_info` + `Session_GetEpGraphAssignmentInfo`, ORT ≥ 1.24):
//! the providers that received at least one node, not the ones merely registered.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use ort::AsPointer;
use sha2::{Digest, Sha256};

use super::log;
use super::sys;
use crate::error::{Error, Result};

/// The GPU wheel whose provider libraries this build was tested against.
pub const GPU_WHEEL: &str = "onnxruntime-gpu==1.31.1";
/// TensorRT major version the TensorRT provider of that wheel links (`libnvinfer.so.10`).
pub const TENSORRT_WHEEL: &str = "tensorrt-cu13-libs==10.16.1.11";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    TensorRt,
    Cuda,
    Cpu,
}

impl Provider {
    /// ORT's name, as `timm_model_providers` reports it.
    pub fn ort_name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorrtExecutionProvider",
            Provider::Cuda => "CUDAExecutionProvider",
            Provider::Cpu => "CPUExecutionProvider",
        }
    }
    fn human(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorRT",
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
        }
    }
    pub fn is_gpu(self) -> bool {
        self != Provider::Cpu
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgoSearch {
    Exhaustive,
    Heuristic,
    Default,
}

/// Provider settings, parsed from the options.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// In priority order; `Cpu`, when present, is last.
    pub providers: Vec<Provider>,
    pub device_id: u32,
    pub strict: bool,
    pub cuda_mem_limit: Option<u64>,
    pub cudnn_conv_algo_search: Option<ConvAlgoSearch>,
    pub trt_fp16: bool,
    pub trt_engine_cache_dir: Option<PathBuf>,
    pub trt_workspace_size: Option<u64>,
    /// Largest batch of the TensorRT optimization profile.
    pub max_batch: u32,
}

pub const DEFAULT_MAX_BATCH: u32 = 32;

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            providers: vec![Provider::Cpu],
            device_id: 0,
            strict: false,
            cuda_mem_limit: None,
            cudnn_conv_algo_search: None,
            trt_fp16: false,
            trt_engine_cache_dir: None,
            trt_workspace_size: None,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

impl ProviderOptions {
    pub fn wants_gpu(&self) -> bool {
        self.providers.iter().any(|p| p.is_gpu())
    }
}

/// Parses option `providers`: an ordered comma list of `tensorrt`, `cuda`, `cpu`.
pub fn parse_list(value: &str) -> std::result::Result<Vec<Provider>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim) {
        let p = match item.to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Provider::TensorRt,
            "cuda" => Provider::Cuda,
            "cpu" => Provider::Cpu,
            "" => return Err("an empty entry".into()),
            other => return Err(format!("unknown provider `{other}`")),
        };
        if out.contains(&p) {
            return Err(format!("`{item}` twice"));
        }
        out.push(p);
    }
    // ORT gives each node to the first provider that takes it and the CPU provider takes every
    // node, so anything listed after `cpu` would never run.
    if let Some(i) = out.iter().position(|p| *p == Provider::Cpu) {
        if i + 1 != out.len() {
            return Err(
                "`cpu` must come last (it takes every node, so later providers would get none)"
                    .into(),
            );
        }
    }
    Ok(out)
}

/// What the session is for: used for TensorRT's profile shapes and engine cache key.
pub struct Target<'a> {
    /// The image input's name; `None` when unknown (no profile is set then).
    pub input_name: Option<&'a str>,
    pub input_chw: Option<[usize; 3]>,
    /// Feeds the model's identity (graph bytes + weights) into the engine cache key; only
    /// called when an engine cache folder is set, since hashing weights costs time.
    pub identity: &'a dyn Fn(&mut Sha256) -> Result<()>,
}

/// The outcome of session creation.
pub struct Created {
    pub session: ort::session::Session,
    /// ORT provider names that received nodes, in priority order.
    pub assigned: Vec<String>,
    /// GPU providers that were registered on the session that was created.
    pub registered: Vec<Provider>,
}

/// Creates a session with the requested providers. `make_builder` returns a fresh builder with
/// the non-provider settings (threads, optimization, initializers); `commit` creates the session
/// from it. Both may be called more than once when a GPU provider fails in non-strict mode.
pub fn create_session(
    opts: &ProviderOptions,
    target: &Target<'_>,
    mut make_builder: impl FnMut() -> Result<ort::session::builder::SessionBuilder>,
    mut commit: impl FnMut(&mut ort::session::builder::SessionBuilder) -> Result<ort::session::Session>,
) -> Result<Created> {
    let gpu: Vec<Provider> = opts
        .providers
        .iter()
        .copied()
        .filter(|p| p.is_gpu())
        .collect();
    let cpu_listed = opts.providers.contains(&Provider::Cpu);
    let mut dropped: Vec<Provider> = Vec::new();
    let available = if gpu.is_empty() {
        Vec::new()
    } else {
        available_providers()?
    };
    'attempt: loop {
        let mut b = make_builder()?;
        let mut registered = Vec::new();
        let todo: Vec<Provider> = gpu
            .iter()
            .copied()
            .filter(|p| !dropped.contains(p))
            .collect();
        for p in todo {
            // `appended`: the provider already sits on the builder when a later check fails,
            // and a provider cannot be taken off a builder, so that case starts over.
            let (outcome, appended) = if !available.iter().any(|a| a == p.ort_name()) {
                (Err(not_compiled_in(p, &available)), false)
            } else {
                match register(&mut b, p, opts, target) {
                    Ok(()) => (check_device(p, opts.device_id), true),
                    Err(e) => (Err(e), false),
                }
            };
            match outcome {
                Ok(()) => registered.push(p),
                Err(e) => {
                    if opts.strict {
                        return Err(e);
                    }
                    log::warn(&format!(
                        "{}; {}",
                        e.message(),
                        fallback_note(p, &gpu, &dropped, cpu_listed)
                    ));
                    dropped.push(p);
                    if appended {
                        continue 'attempt;
                    }
                }
            }
        }
        if opts.strict && !gpu.is_empty() && !cpu_listed {
            add_config(&mut b, "session.disable_cpu_ep_fallback", "1")?;
        }
        add_config(&mut b, "session.record_ep_graph_assignment_info", "1")?;
        if log::has_callback() {
            // SAFETY: `from_ort` is a plain function that lives for the process.
            sys::check(unsafe {
                (ort::api().SetUserLoggingFunction)(
                    b.ptr_mut(),
                    log::from_ort,
                    std::ptr::null_mut(),
                )
            })?;
            sys::check(unsafe { (ort::api().SetSessionLogSeverityLevel)(b.ptr_mut(), 2) })?;
        }
        match commit(&mut b) {
            Ok(session) => {
                let assigned = assignment(&session, &opts.providers)?;
                for p in &registered {
                    if !assigned.iter().any(|a| a == p.ort_name()) {
                        log::warn(&format!(
                            "the {} provider was registered but ONNX Runtime gave it no node of this model; it runs on {}",
                            p.human(),
                            if assigned.is_empty() { "nothing".to_string() } else { assigned.join(", ") }
                        ));
                    }
                }
                return Ok(Created {
                    session,
                    assigned,
                    registered,
                });
            }
            Err(e) => {
                let Some(&first) = registered.first() else {
                    return Err(e);
                };
                let e = commit_error(first, e);
                if opts.strict {
                    return Err(e);
                }
                log::warn(&format!(
                    "creating the session with the {} provider failed: {}; {}",
                    first.human(),
                    e.message(),
                    fallback_note(first, &gpu, &dropped, cpu_listed)
                ));
                dropped.push(first);
            }
        }
    }
}

fn fallback_note(p: Provider, gpu: &[Provider], dropped: &[Provider], cpu_listed: bool) -> String {
    let next = gpu
        .iter()
        .skip_while(|q| **q != p)
        .skip(1)
        .find(|q| !dropped.contains(q));
    match next {
        Some(q) => format!("trying the {} provider next", q.human()),
        None if cpu_listed => "running on the CPU provider".into(),
        None => {
            "running on the CPU provider (set strict_providers=true to make this an error)".into()
        }
    }
}

fn add_config(b: &mut ort::session::builder::SessionBuilder, key: &str, value: &str) -> Result<()> {
    let k = CString::new(key).map_err(|_| Error::internal("config key with NUL"))?;
    let v = CString::new(value).map_err(|_| Error::internal("config value with NUL"))?;
    // SAFETY: valid session options and NUL-terminated strings; ORT copies them.
    sys::check(unsafe { (ort::api().AddSessionConfigEntry)(b.ptr_mut(), k.as_ptr(), v.as_ptr()) })
}

/// Providers compiled into the loaded ONNX Runtime.
pub fn available_providers() -> Result<Vec<String>> {
    let api = super::loader::api()?;
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut n: c_int = 0;
    // SAFETY: ORT fills an array of `n` strings we release below.
    sys::check(unsafe { (api.GetAvailableProviders)(&mut list, &mut n) })?;
    if list.is_null() {
        return Ok(Vec::new());
    }
    let names = (0..n.max(0) as usize)
        .map(|i| {
            unsafe { CStr::from_ptr(*list.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: releases exactly what GetAvailableProviders returned.
    sys::check(unsafe { (api.ReleaseAvailableProviders)(list, n) })?;
    Ok(names)
}

fn runtime_path() -> String {
    super::loader::loaded_path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the loaded ONNX Runtime".into())
}

fn not_compiled_in(p: Provider, available: &[String]) -> Error {
    let build = if available.iter().any(|a| a == "CUDAExecutionProvider") {
        "a GPU build without it".to_string()
    } else {
        "the CPU build".to_string()
    };
    Error::unsupported(format!(
        "this ONNX Runtime ({}) has no {} provider (it is {build}; it offers {}): install {GPU_WHEEL}'s library \
         (scripts/fetch-ort-gpu puts it in .onnxruntime/gpu) and point option ort_library or TIMM_ORT_LIBRARY at its \
         libonnxruntime.so.1.31.1; the CUDA/cuDNN{} libraries must be on LD_LIBRARY_PATH (see docs/GPU.md)",
        runtime_path(),
        p.human(),
        available.join(", "),
        if p == Provider::TensorRt { "/TensorRT" } else { "" },
    ))
}

/// Turns ORT's error for a provider into one that names what is missing and what to install.
pub fn explain(p: Provider, ort_message: &str) -> Error {
    let msg = ort_message.trim_start_matches("ONNX Runtime: ").trim();
    if let Some(lib) = missing_library(msg) {
        return Error::unsupported(format!(
            "the {} provider cannot be used: the loader could not open {lib}; {} (ONNX Runtime said: {msg})",
            p.human(),
            install_hint(&lib)
        ));
    }
    Error::unsupported(format!("the {} provider cannot be used: {msg}", p.human()))
}

/// A session-creation failure with GPU providers registered: provider problems become
/// `TIMM_ERR_UNSUPPORTED` with what to do; anything else (a broken model) keeps its error.
fn commit_error(p: Provider, e: Error) -> Error {
    let m = e.message();
    if m.contains("fallback to CPU EP has been explicitly disabled") {
        return Error::unsupported(format!(
            "strict_providers: some nodes of this model would run on the CPU, which the {} provider does not take; \
             list `cpu` last in option providers to allow that, or unset strict_providers ({m})",
            p.human()
        ));
    }
    let provider_related = missing_library(m).is_some()
        || [
            "CUDA",
            "cuda",
            "cuDNN",
            "CUDNN",
            "TensorRT",
            "TensorrtExecutionProvider",
            "nvinfer",
        ]
        .iter()
        .any(|k| m.contains(k));
    if provider_related {
        explain(p, m)
    } else {
        e
    }
}

/// The file dlopen could not open, from ORT's message `... with error: libX.so.N: cannot open
/// shared object file: No such file or directory`.
pub fn missing_library(msg: &str) -> Option<String> {
    let at = msg.find(": cannot open shared object file")?;
    let head = &msg[..at];
    let start = head
        .rfind(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '[' || c == '(')
        .map_or(0, |i| i + 1);
    let lib = &head[start..];
    (!lib.is_empty()).then(|| lib.to_string())
}

/// What to install for a missing library.
pub fn install_hint(lib: &str) -> String {
    let file = lib.rsplit('/').next().unwrap_or(lib);
    let pip = |pkgs: &str| {
        format!("install {pkgs} (pip) and add its lib folder to LD_LIBRARY_PATH before the process starts (scripts/gpu-check shows how)")
    };
    if file.starts_with("libonnxruntime_providers") {
        format!(
            "{file} must sit next to libonnxruntime.so.1.31.1; copy it from the {GPU_WHEEL} wheel (scripts/fetch-ort-gpu)"
        )
    } else if file.starts_with("libcuda.so") {
        "libcuda.so.1 comes with the NVIDIA driver, not with a wheel: this machine has no NVIDIA driver (install one supporting CUDA 13, version 580 or newer)".into()
    } else if file.starts_with("libcudnn") {
        pip("nvidia-cudnn-cu13~=9.0 (cuDNN 9 for CUDA 13)")
    } else if file.starts_with("libcublas") {
        pip("nvidia-cublas~=13.0 (cuBLAS for CUDA 13)")
    } else if file.starts_with("libcudart") {
        pip("nvidia-cuda-runtime~=13.0 (the CUDA 13 runtime)")
    } else if file.starts_with("libcurand") {
        pip("nvidia-curand~=10.0")
    } else if file.starts_with("libcufft") {
        pip("nvidia-cufft~=12.0")
    } else if file.starts_with("libnvrtc") {
        pip("nvidia-cuda-nvrtc~=13.0")
    } else if file.starts_with("libnvinfer") || file.starts_with("libnvonnxparser") {
        format!(
            "install TensorRT 10 for CUDA 13 ({TENSORRT_WHEEL}, from https://pypi.nvidia.com) and add its tensorrt_libs folder to LD_LIBRARY_PATH"
        )
    } else {
        "install the library that provides it (the CUDA 13 wheels named by onnxruntime-gpu[cuda,cudnn]==1.31.1) and add its folder to LD_LIBRARY_PATH".into()
    }
}

fn register(
    b: &mut ort::session::builder::SessionBuilder,
    p: Provider,
    opts: &ProviderOptions,
    target: &Target<'_>,
) -> Result<()> {
    let api = ort::api();
    let mut kv: Vec<(String, String)> = vec![("device_id".into(), opts.device_id.to_string())];
    match p {
        Provider::Cuda => {
            if let Some(n) = opts.cuda_mem_limit {
                kv.push(("gpu_mem_limit".into(), n.to_string()));
            }
            if let Some(a) = opts.cudnn_conv_algo_search {
                let v = match a {
                    ConvAlgoSearch::Exhaustive => "EXHAUSTIVE",
                    ConvAlgoSearch::Heuristic => "HEURISTIC",
                    ConvAlgoSearch::Default => "DEFAULT",
                };
                kv.push(("cudnn_conv_algo_search".into(), v.into()));
            }
        }
        Provider::TensorRt => {
            if opts.trt_fp16 {
                kv.push(("trt_fp16_enable".into(), "1".into()));
            }
            if let Some(n) = opts.trt_workspace_size {
                kv.push(("trt_max_workspace_size".into(), n.to_string()));
            }
            if let Some(shapes) = profile_shapes(target, opts.max_batch) {
                kv.push(("trt_profile_min_shapes".into(), shapes[0].clone()));
                kv.push(("trt_profile_opt_shapes".into(), shapes[1].clone()));
                kv.push(("trt_profile_max_shapes".into(), shapes[2].clone()));
            }
            if let Some(root) = &opts.trt_engine_cache_dir {
                let dir = engine_cache_dir(root, opts, target)?;
                let d = dir.to_string_lossy().into_owned();
                kv.push(("trt_engine_cache_enable".into(), "1".into()));
                kv.push(("trt_engine_cache_path".into(), d.clone()));
                kv.push(("trt_timing_cache_enable".into(), "1".into()));
                kv.push(("trt_timing_cache_path".into(), d));
            }
        }
        Provider::Cpu => return Ok(()),
    }
    let keys: Vec<CString> = kv
        .iter()
        .map(|(k, _)| CString::new(k.as_str()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid_argument("a provider option has a NUL byte"))?;
    let values: Vec<CString> = kv
        .iter()
        .map(|(_, v)| CString::new(v.as_str()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::invalid_argument("a provider option has a NUL byte"))?;
    let kp: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
    let vp: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
    let fail = |e: Error| explain(p, e.message());
    // SAFETY: each options struct is created, updated with valid arrays of equal length,
    // appended (ORT copies it) and released on every path.
    unsafe {
        match p {
            Provider::Cuda => {
                let mut o = std::ptr::null_mut();
                sys::check((api.CreateCUDAProviderOptions)(&mut o)).map_err(fail)?;
                let r = sys::check((api.UpdateCUDAProviderOptions)(
                    o,
                    kp.as_ptr(),
                    vp.as_ptr(),
                    kp.len(),
                ))
                .and_then(|()| {
                    sys::check((api.SessionOptionsAppendExecutionProvider_CUDA_V2)(
                        b.ptr_mut(),
                        o,
                    ))
                });
                (api.ReleaseCUDAProviderOptions)(o);
                r.map_err(fail)
            }
            Provider::TensorRt => {
                let mut o = std::ptr::null_mut();
                sys::check((api.CreateTensorRTProviderOptions)(&mut o)).map_err(fail)?;
                let r = sys::check((api.UpdateTensorRTProviderOptions)(
                    o,
                    kp.as_ptr(),
                    vp.as_ptr(),
                    kp.len(),
                ))
                .and_then(|()| {
                    sys::check((api.SessionOptionsAppendExecutionProvider_TensorRT_V2)(
                        b.ptr_mut(),
                        o,
                    ))
                });
                (api.ReleaseTensorRTProviderOptions)(o);
                r.map_err(fail)
            }
            Provider::Cpu => Ok(()),
        }
    }
}

/// TensorRT profile shapes `name:NxCxHxW` for batch 1 (min), 1 (opt: single images are the
/// common latency case) and `max_batch` (max), so any batch in range reuses one engine.
pub fn profile_shapes(target: &Target<'_>, max_batch: u32) -> Option<[String; 3]> {
    let name = target.input_name?;
    let [c, h, w] = target.input_chw?;
    // The option's own syntax uses ':' and ','; such a name cannot be written in it.
    if name.contains([':', ',']) {
        log::warn(&format!(
            "input name `{name}` cannot be written in a TensorRT profile; TensorRT builds an engine per input shape instead"
        ));
        return None;
    }
    let s = |n: u32| format!("{name}:{n}x{c}x{h}x{w}");
    Some([s(1), s(1), s(max_batch.max(1))])
}

/// `<root>/<key>`: engines and timing caches live in a folder keyed by everything that makes an
/// engine invalid, so a changed model, GPU, TensorRT or ONNX Runtime never loads a stale one.
fn engine_cache_dir(root: &Path, opts: &ProviderOptions, target: &Target<'_>) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(b"libtimm-trt-engine-v1\0");
    (target.identity)(&mut h)?;
    let gpu = gpu_identity(opts.device_id);
    let trt = tensorrt_version();
    let settings = format!(
        "fp16={} max_batch={} chw={:?} workspace={:?} input={:?}",
        opts.trt_fp16, opts.max_batch, target.input_chw, opts.trt_workspace_size, target.input_name
    );
    let ort_build = ort::info();
    for part in [gpu.as_str(), trt.as_str(), ort_build, settings.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = root.join(key);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::from_io(&e, "cannot create the TensorRT engine cache folder", &dir))?;
    // A note for people looking at the folder; not read back.
    let _ = std::fs::write(
        dir.join("libtimm-key.txt"),
        format!("gpu: {gpu}\ntensorrt: {trt}\nonnxruntime: {ort_build}\n{settings}\n"),
    );
    Ok(dir)
}

// ---- CUDA / TensorRT libraries, reached through the dynamic loader --------------------------

/// A symbol from a library that is already loaded, or loaded now with the default search path.
/// The handle is never closed: CUDA libraries must stay for the process.
pub(crate) fn symbol<T: Copy>(libs: &[&str], name: &str) -> Option<T> {
    let cname = CString::new(name).ok()?;
    for lib in libs {
        let clib = CString::new(*lib).ok()?;
        // SAFETY: dlopen/dlsym only read the strings; RTLD_NOLOAD first reuses the copy ORT's
        // provider loaded, so we talk to the same CUDA runtime instance.
        unsafe {
            let mut h = libc::dlopen(clib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if h.is_null() {
                h = libc::dlopen(clib.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            }
            if h.is_null() {
                continue;
            }
            let s = libc::dlsym(h, cname.as_ptr());
            if !s.is_null() {
                assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
                return Some(std::mem::transmute_copy::<*mut c_void, T>(&s));
            }
        }
    }
    None
}

pub(crate) const CUDART: &[&str] = &["libcudart.so.13", "libcudart.so"];
const CUDA_DRIVER: &[&str] = &["libcuda.so.1"];
const NVINFER: &[&str] = &["libnvinfer.so.10"];

pub(crate) fn cuda_error_text(code: c_int) -> String {
    type ErrStr = unsafe extern "C" fn(c_int) -> *const c_char;
    match symbol::<ErrStr>(CUDART, "cudaGetErrorString") {
        // SAFETY: returns a static string for any code.
        Some(f) => unsafe {
            let p = f(code);
            if p.is_null() {
                format!("CUDA error {code}")
            } else {
                format!("CUDA error {code}: {}", CStr::from_ptr(p).to_string_lossy())
            }
        },
        None => format!("CUDA error {code}"),
    }
}

/// Is there a CUDA device `device_id`? Asked of the CUDA runtime the provider loaded.
fn check_device(p: Provider, device_id: u32) -> Result<()> {
    type Count = unsafe extern "C" fn(*mut c_int) -> c_int;
    let Some(count_fn) = symbol::<Count>(CUDART, "cudaGetDeviceCount") else {
        // The runtime is not loadable from here; session creation will report what is missing.
        return Ok(());
    };
    let mut n: c_int = 0;
    // SAFETY: writes one int.
    let rc = unsafe { count_fn(&mut n) };
    if rc != 0 {
        return Err(Error::unsupported(format!(
            "the {} provider cannot be used: the CUDA runtime finds no usable GPU ({}); check `nvidia-smi`, the driver \
             (CUDA 13 needs 580 or newer) and CUDA_VISIBLE_DEVICES",
            p.human(),
            cuda_error_text(rc)
        )));
    }
    if device_id as c_int >= n {
        return Err(Error::unsupported(format!(
            "the {} provider cannot be used: option device_id = {device_id} but this machine has {n} CUDA device(s)",
            p.human()
        )));
    }
    Ok(())
}

/// "NVIDIA H200 sm_90 driver 13000", or what could not be read.
pub fn gpu_identity(device_id: u32) -> String {
    type Init = unsafe extern "C" fn(u32) -> c_int;
    type Get = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type Name = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    type Attr = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
    let (Some(init), Some(get), Some(name), Some(attr)) = (
        symbol::<Init>(CUDA_DRIVER, "cuInit"),
        symbol::<Get>(CUDA_DRIVER, "cuDeviceGet"),
        symbol::<Name>(CUDA_DRIVER, "cuDeviceGetName"),
        symbol::<Attr>(CUDA_DRIVER, "cuDeviceGetAttribute"),
    ) else {
        return "no NVIDIA driver".into();
    };
    // SAFETY: driver API calls with valid out-pointers; 75/76 are
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR.
    unsafe {
        if init(0) != 0 {
            return "CUDA driver failed to initialise".into();
        }
        let mut dev = 0;
        if get(&mut dev, device_id as c_int) != 0 {
            return format!("no CUDA device {device_id}");
        }
        let mut buf = [0 as c_char; 256];
        let _ = name(buf.as_mut_ptr(), buf.len() as c_int, dev);
        let (mut major, mut minor) = (0, 0);
        let _ = attr(&mut major, 75, dev);
        let _ = attr(&mut minor, 76, dev);
        format!(
            "{} sm_{major}{minor}",
            CStr::from_ptr(buf.as_ptr()).to_string_lossy()
        )
    }
}

/// TensorRT's library version, e.g. "TensorRT 101601" (`getInferLibVersion`).
pub fn tensorrt_version() -> String {
    type V = unsafe extern "C" fn() -> i32;
    match symbol::<V>(NVINFER, "getInferLibVersion") {
        // SAFETY: no arguments, returns an int.
        Some(f) => format!("TensorRT {}", unsafe { f() }),
        None => "TensorRT not loadable".into(),
    }
}

// ---- The report -----------------------------------------------------------------------------

/// ORT provider names that received nodes, in the order the providers were requested (CPU last).
fn assignment(session: &ort::session::Session, requested: &[Provider]) -> Result<Vec<String>> {
    use ort::AsPointer;
    let api = ort::api();
    let mut subgraphs: *const *const ort_sys::OrtEpAssignedSubgraph = std::ptr::null();
    let mut n = 0usize;
    // SAFETY: the session is alive; the returned array is owned by the session.
    sys::check(unsafe {
        (api.Session_GetEpGraphAssignmentInfo)(session.ptr(), &mut subgraphs, &mut n)
    })?;
    let mut names: Vec<String> = Vec::new();
    if !subgraphs.is_null() {
        for i in 0..n {
            // SAFETY: `n` entries, each valid while the session lives.
            let sg = unsafe { *subgraphs.add(i) };
            if sg.is_null() {
                continue;
            }
            let mut ep: *const c_char = std::ptr::null();
            sys::check(unsafe { (api.EpAssignedSubgraph_GetEpName)(sg, &mut ep) })?;
            let mut nodes: *const *const ort_sys::OrtEpAssignedNode = std::ptr::null();
            let mut count = 0usize;
            sys::check(unsafe { (api.EpAssignedSubgraph_GetNodes)(sg, &mut nodes, &mut count) })?;
            if ep.is_null() || count == 0 {
                continue;
            }
            let name = unsafe { CStr::from_ptr(ep) }.to_string_lossy().into_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let rank = |n: &String| {
        requested.iter().position(|p| p.ort_name() == n).unwrap_or(
            if n == Provider::Cpu.ort_name() {
                usize::MAX
            } else {
                requested.len()
            },
        )
    };
    names.sort_by_key(rank);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_lists() {
        assert_eq!(parse_list("cuda").unwrap(), vec![Provider::Cuda]);
        assert_eq!(
            parse_list("tensorrt, CUDA,cpu").unwrap(),
            vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
        );
        assert!(parse_list("cpu,cuda").unwrap_err().contains("last"));
        assert!(parse_list("cuda,cuda").is_err());
        assert!(parse_list("rocm").unwrap_err().contains("rocm"));
        assert!(parse_list("").is_err());
    }

    #[test]
    fn names_the_missing_library() {
        let m = "Failed to load library libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared object file: No such file or directory";
        assert_eq!(missing_library(m).as_deref(), Some("libcublasLt.so.13"));
        let e = explain(Provider::Cuda, m);
        assert!(e.message().contains("libcublasLt.so.13"), "{e}");
        assert!(e.message().contains("nvidia-cublas"), "{e}");
        assert!(missing_library("no device").is_none());
        assert!(install_hint("libcuda.so.1").contains("driver"));
        assert!(install_hint("libnvinfer.so.10").contains("tensorrt-cu13-libs"));
        assert!(install_hint("/x/libcudnn_ops.so.9").contains("cudnn"));
    }

    #[test]
    fn profiles_cover_one_to_max_batch() {
        let id = |_: &mut Sha256| Ok(());
        let t = Target {
            input_name: Some("x"),
            input_chw: Some([3, 224, 224]),
            identity: &id,
        };
        let s = profile_shapes(&t, 16).unwrap();
        assert_eq!(s[0], "x:1x3x224x224");
        assert_eq!(s[1], "x:1x3x224x224");
        assert_eq!(s[2], "x:16x3x224x224");
        let bad = Target {
            input_name: Some("a:b"),
            ..t
        };
        assert!(profile_shapes(&bad, 16).is_none());
    }
}
