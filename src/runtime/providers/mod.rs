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
//!
//! One file per job, as ort's `ep/` is split: [`cuda`] and [`tensorrt`] register their
//! provider (and ask the CUDA libraries about the device), [`diagnose`] turns a failure into
//! what to install, [`report`] reads ORT's record of which provider got which nodes, [`dl`]
//! reaches NVIDIA's libraries through the dynamic loader. This file parses the options and
//! drives the registration and its fallbacks.

mod cuda;
#[forbid(unsafe_code)]
mod diagnose;
mod dl;
mod report;
mod tensorrt;

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::PathBuf;

use ort::AsPointer;
use sha2::Sha256;

use super::log;
use super::sys;
use crate::error::{Error, Result};

pub use self::cuda::gpu_identity;
pub(crate) use self::cuda::{cuda_error_text, CUDART};
pub use self::diagnose::{explain, install_hint, missing_library, GPU_WHEEL, TENSORRT_WHEEL};
pub(crate) use self::dl::symbol;
pub use self::tensorrt::{profile_shapes, tensorrt_version};

use self::cuda::check_device;
use self::diagnose::{commit_error, not_compiled_in};
use self::report::assignment;

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
    pub(crate) fn human(self) -> &'static str {
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
            // SAFETY: valid session options; 2 is ORT_LOGGING_LEVEL_WARNING.
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

pub(crate) fn add_config(
    b: &mut ort::session::builder::SessionBuilder,
    key: &str,
    value: &str,
) -> Result<()> {
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
            // SAFETY: `i < n`, and ORT returned `n` NUL-terminated names.
            unsafe { CStr::from_ptr(*list.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: releases exactly what GetAvailableProviders returned.
    sys::check(unsafe { (api.ReleaseAvailableProviders)(list, n) })?;
    Ok(names)
}

/// Registers one GPU provider on the builder.
fn register(
    b: &mut ort::session::builder::SessionBuilder,
    p: Provider,
    opts: &ProviderOptions,
    target: &Target<'_>,
) -> Result<()> {
    match p {
        Provider::Cuda => cuda::register(b, opts),
        Provider::TensorRt => tensorrt::register(b, opts, target),
        Provider::Cpu => Ok(()),
    }
}

/// Provider option keys and values as C strings, with arrays of pointers into them, for
/// ORT's `Update*ProviderOptions`.
struct KeyValues {
    _keys: Vec<CString>,
    _values: Vec<CString>,
    keys: Vec<*const c_char>,
    values: Vec<*const c_char>,
}

impl KeyValues {
    fn new(kv: &[(String, String)]) -> Result<Self> {
        let c = |s: &str| {
            CString::new(s).map_err(|_| Error::invalid_argument("a provider option has a NUL byte"))
        };
        let keys_c: Vec<CString> = kv.iter().map(|(k, _)| c(k)).collect::<Result<_>>()?;
        let values_c: Vec<CString> = kv.iter().map(|(_, v)| c(v)).collect::<Result<_>>()?;
        Ok(KeyValues {
            keys: keys_c.iter().map(|k| k.as_ptr()).collect(),
            values: values_c.iter().map(|v| v.as_ptr()).collect(),
            _keys: keys_c,
            _values: values_c,
        })
    }
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
}
