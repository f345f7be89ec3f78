//! One compiled OpenVINO model and its pool of infer requests.

use std::ffi::{c_char, CStr, CString};
use std::path::PathBuf;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

use super::sys::{self, Api, OvCompiled, OvCore, OvRequest, OvTensor};
use super::{cpu, loader};
use crate::error::{Error, Result};
use crate::runtime::backend::{OvDevice, Precision};

/// What a model asks of OpenVINO.
#[derive(Debug, Clone)]
pub struct Config {
    pub device: OvDevice,
    pub precision: Precision,
    /// INFERENCE_NUM_THREADS; `None` = OpenVINO's default (all physical cores).
    pub threads: Option<usize>,
    pub library: Option<PathBuf>,
}

struct Request(NonNull<OvRequest>);
// SAFETY: an infer request may move between threads; the pool hands each to one thread at a time.
unsafe impl Send for Request {}

pub struct Compiled {
    api: &'static Api,
    core: NonNull<OvCore>,
    compiled: NonNull<OvCompiled>,
    /// Idle requests; a run takes one (or makes one) and puts it back.
    pool: Mutex<Vec<Request>>,
    /// Input dims as the model declares them; -1 for free dimensions.
    pub input_dims: Vec<i64>,
    /// Dims of each output (-1 for free ones).
    pub output_dims: Vec<Vec<i64>>,
    /// `OpenVINO:<execution devices>:<precision>` as the compiled model reports them.
    providers: CString,
    /// This library's `ov_element_type_e` value for f32 (it changed across releases).
    f32_code: i32,
}

// SAFETY: OpenVINO's handles may be used from any thread; the core and compiled model are
// only freed in Drop.
unsafe impl Send for Compiled {}
// SAFETY: OpenVINO's compiled model is thread-safe (requests are created from any thread and
// its CPU plugin serialises runs on a stream); each infer request is used by one thread at a
// time through `pool`.
unsafe impl Sync for Compiled {}

impl Drop for Compiled {
    fn drop(&mut self) {
        let pool = std::mem::take(self.pool.get_mut().unwrap_or_else(|p| p.into_inner()));
        // SAFETY: the handles were created by this API and are freed once, requests before the
        // compiled model, the core last.
        unsafe {
            for r in pool {
                (self.api.request_free)(r.0.as_ptr());
            }
            (self.api.compiled_free)(self.compiled.as_ptr());
            (self.api.core_free)(self.core.as_ptr());
        }
    }
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in static strings")
}

impl Compiled {
    /// Reads `onnx` (a whole ONNX model with its weights inline) and compiles it.
    /// `input_dims`/`output_dims` are the graph's declared dims (-1 for free ones).
    pub fn new(
        onnx: &[u8],
        input_dims: Vec<i64>,
        output_dims: Vec<Vec<i64>>,
        cfg: &Config,
    ) -> Result<Compiled> {
        let lib = loader::load(cfg.library.as_deref())?;
        let api = &lib.api;
        let fail = |what: &str, st: sys::Status| {
            Error::runtime(format!("OpenVINO {what} failed: {}", api.error_text(st)))
        };
        check_precision(cfg)?;

        let mut core = ptr::null_mut();
        // SAFETY: core_create writes a new handle to `core`.
        let st = unsafe { (api.core_create)(&mut core) };
        let core = NonNull::new(core)
            .filter(|_| st == sys::OK)
            .ok_or_else(|| fail("creating its core", st))?;
        // From here `guard` frees the core (and model) on every error path.
        let guard = CoreGuard { api, core };
        let device = cfg.device.name();
        if cfg.device != OvDevice::Auto {
            let available = available_devices(api, core);
            if !available
                .iter()
                .any(|d| d == device || d.starts_with(&format!("{device}.")))
            {
                return Err(Error::runtime(format!(
                    "option device={device}: OpenVINO sees no {device} device on this machine (available: {}); \
                     use device=CPU, or install the {device} driver",
                    if available.is_empty() { "none".into() } else { available.join(", ") }
                )));
            }
        }

        let mut model = ptr::null_mut();
        // SAFETY: the bytes are live for this synchronous call; ONNX carries its weights
        // inline, so no weights tensor is passed.
        let st = unsafe {
            (api.core_read_model_from_memory_buffer)(
                core.as_ptr(),
                onnx.as_ptr().cast::<c_char>(),
                onnx.len(),
                ptr::null(),
                &mut model,
            )
        };
        if st != sys::OK || model.is_null() {
            return Err(fail("reading the ONNX graph", st));
        }

        // INFERENCE_PRECISION_HINT always explicit: OpenVINO's own CPU default on bf16-capable
        // CPUs is bf16, which would silently break timm-exactness of precision=fp32.
        let precision = c(match cfg.precision {
            Precision::Fp32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "f16",
        });
        let (k_prec, k_hint, v_latency, k_threads) = (
            c("INFERENCE_PRECISION_HINT"),
            c("PERFORMANCE_HINT"),
            c("LATENCY"),
            c("INFERENCE_NUM_THREADS"),
        );
        let threads = cfg.threads.map(|n| c(&n.to_string()));
        let dev = c(device);
        let mut compiled = ptr::null_mut();
        // SAFETY: every key and value is a live NUL-terminated string for this synchronous
        // call; the count is the number of variadic arguments (a key and a value each).
        let st = unsafe {
            match &threads {
                Some(t) => (api.core_compile_model)(
                    core.as_ptr(),
                    model,
                    dev.as_ptr(),
                    6,
                    &mut compiled,
                    k_prec.as_ptr(),
                    precision.as_ptr(),
                    k_hint.as_ptr(),
                    v_latency.as_ptr(),
                    k_threads.as_ptr(),
                    t.as_ptr(),
                ),
                None => (api.core_compile_model)(
                    core.as_ptr(),
                    model,
                    dev.as_ptr(),
                    4,
                    &mut compiled,
                    k_prec.as_ptr(),
                    precision.as_ptr(),
                    k_hint.as_ptr(),
                    v_latency.as_ptr(),
                ),
            }
        };
        // SAFETY: the compiled model keeps what it needs; the source model is freed once.
        unsafe { (api.model_free)(model) };
        let compiled = NonNull::new(compiled)
            .filter(|_| st == sys::OK)
            .ok_or_else(|| fail(&format!("compiling for device {device}"), st))?;
        std::mem::forget(guard);
        let mut out = Compiled {
            api,
            core,
            compiled,
            pool: Mutex::new(Vec::new()),
            input_dims,
            output_dims,
            providers: CString::default(),
            f32_code: 0,
        };
        out.f32_code = out.input_f32_code()?;
        out.providers = out.report(cfg)?;
        // One request up front: creation problems surface at load, not at the first run.
        let r = out.create_request()?;
        out.pool
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
        Ok(out)
    }

    /// What really runs, checked against what was asked: a device or precision OpenVINO did
    /// not honour is an error, never a silent change.
    fn report(&self, cfg: &Config) -> Result<CString> {
        let devices = self
            .property("EXECUTION_DEVICES")
            .unwrap_or_else(|| cfg.device.name().to_string());
        let devices = devices.split_whitespace().collect::<Vec<_>>().join("+");
        let used = self.property("INFERENCE_PRECISION_HINT");
        let used = match used.as_deref() {
            Some("f32") => Some(Precision::Fp32),
            Some("bf16") => Some(Precision::Bf16),
            Some("f16") => Some(Precision::Fp16),
            _ => None,
        };
        if let Some(u) = used {
            if u != cfg.precision {
                return Err(Error::unsupported(format!(
                    "option precision={} but OpenVINO compiled the model for {} in {}; refusing a precision that was not asked for",
                    cfg.precision.name(),
                    devices,
                    u.name()
                )));
            }
        }
        let shown = used.unwrap_or(cfg.precision).name();
        Ok(CString::new(format!("OpenVINO:{devices}:{shown}")).unwrap_or_default())
    }

    /// The element type of the model's input, which must be float32 (the numbering of
    /// `ov_element_type_e` differs between OpenVINO releases, so it is read, not assumed).
    fn input_f32_code(&self) -> Result<i32> {
        let mut port = ptr::null_mut();
        let mut ty = -1;
        // SAFETY: input 0 exists (every graph has its image input); the port is freed once.
        unsafe {
            let st = (self.api.compiled_input_by_index)(self.compiled.as_ptr(), 0, &mut port);
            if st != sys::OK || port.is_null() {
                return Err(Error::runtime(format!(
                    "OpenVINO input port: {}",
                    self.api.error_text(st)
                )));
            }
            (self.api.port_get_element_type)(port, &mut ty);
            (self.api.port_free)(port);
        }
        if !sys::F32_CANDIDATES.contains(&ty) {
            return Err(Error::invalid_model(format!(
                "the graph's input has OpenVINO element type {ty}; libtimm feeds float32 images"
            )));
        }
        Ok(ty)
    }

    fn property(&self, key: &str) -> Option<String> {
        let k = c(key);
        let mut v: *mut c_char = ptr::null_mut();
        // SAFETY: on success `v` is a NUL-terminated string OpenVINO allocated, freed with ov_free.
        unsafe {
            let st = (self.api.compiled_get_property)(self.compiled.as_ptr(), k.as_ptr(), &mut v);
            if st != sys::OK || v.is_null() {
                return None;
            }
            let s = CStr::from_ptr(v).to_string_lossy().trim().to_string();
            (self.api.free)(v);
            Some(s)
        }
    }

    fn create_request(&self) -> Result<Request> {
        let mut r = ptr::null_mut();
        // SAFETY: the compiled model is live; a new request is written to `r`.
        let st =
            unsafe { (self.api.compiled_create_infer_request)(self.compiled.as_ptr(), &mut r) };
        NonNull::new(r)
            .filter(|_| st == sys::OK)
            .map(Request)
            .ok_or_else(|| {
                Error::runtime(format!(
                    "OpenVINO could not create an infer request: {}",
                    self.api.error_text(st)
                ))
            })
    }

    /// `OpenVINO:<devices>:<precision>`.
    pub fn providers(&self) -> &CStr {
        &self.providers
    }

    /// Runs one batch and copies output `i` into `outputs[i]`, whose dims are `shapes[i]`.
    /// Safe to call from many threads at once.
    pub fn run_outputs(
        &self,
        input: &[f32],
        input_shape: &[i64],
        outputs: &mut [&mut [f32]],
        shapes: &[Vec<i64>],
    ) -> Result<()> {
        if outputs.len() != self.output_dims.len() || shapes.len() != outputs.len() {
            return Err(Error::internal(
                "output buffers do not match the compiled model's outputs",
            ));
        }
        let taken = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let req = match taken {
            Some(r) => r,
            None => self.create_request()?,
        };
        let result = self.run_on(&req, input, input_shape, outputs, shapes);
        match result {
            Ok(()) => self
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(req),
            // A request whose run failed is not reused.
            // SAFETY: `req` came from this compiled model and is in no pool.
            Err(_) => unsafe { (self.api.request_free)(req.0.as_ptr()) },
        }
        result
    }

    pub fn run(
        &self,
        input: &[f32],
        input_shape: &[i64],
        output: &mut [f32],
        output_shape: &[i64],
    ) -> Result<()> {
        self.run_outputs(input, input_shape, &mut [output], &[output_shape.to_vec()])
    }

    fn run_on(
        &self,
        req: &Request,
        input: &[f32],
        input_shape: &[i64],
        outputs: &mut [&mut [f32]],
        shapes: &[Vec<i64>],
    ) -> Result<()> {
        let api = self.api;
        let fail = |what: &str, st: sys::Status| {
            Error::runtime(format!("OpenVINO {what} failed: {}", api.error_text(st)))
        };
        let tensor = self.input_tensor(input, input_shape)?;
        // SAFETY: the request is ours alone for this call; the input tensor wraps `input`,
        // which outlives the synchronous infer; OpenVINO reads it and never writes it. The
        // request's reference to the tensor is replaced by the next run before it is read.
        let st = unsafe {
            let st = (api.request_set_input_tensor_by_index)(req.0.as_ptr(), 0, tensor.1.as_ptr());
            if st == sys::OK {
                (api.request_infer)(req.0.as_ptr())
            } else {
                st
            }
        };
        drop(tensor);
        if st != sys::OK {
            return Err(fail("inference", st));
        }
        for (i, (out, want)) in outputs.iter_mut().zip(shapes).enumerate() {
            let mut t: *mut OvTensor = ptr::null_mut();
            // SAFETY: output `i` exists (the graph declares it); the tensor handle is freed
            // by `Owned`, its data read only while it lives.
            unsafe {
                let st = (api.request_get_output_tensor_by_index)(req.0.as_ptr(), i, &mut t);
                let t = NonNull::new(t)
                    .filter(|_| st == sys::OK)
                    .map(|t| OwnedTensor(api, t))
                    .ok_or_else(|| fail("reading an output", st))?;
                let mut ty = 0;
                (api.tensor_get_element_type)(t.1.as_ptr().cast_const(), &mut ty);
                let mut shape = sys::Shape {
                    rank: 0,
                    dims: ptr::null_mut(),
                };
                let st = (api.tensor_get_shape)(t.1.as_ptr().cast_const(), &mut shape);
                if st != sys::OK {
                    return Err(fail("reading an output shape", st));
                }
                let dims = std::slice::from_raw_parts(shape.dims, shape.rank as usize).to_vec();
                (api.shape_free)(&mut shape);
                if ty != self.f32_code || dims != *want {
                    return Err(Error::internal(format!(
                        "OpenVINO output {i} is type {ty} with dims {dims:?}; expected float32 {want:?}"
                    )));
                }
                let mut data = ptr::null_mut();
                let st = (api.tensor_data)(t.1.as_ptr().cast_const(), &mut data);
                if st != sys::OK || data.is_null() {
                    return Err(fail("reading output data", st));
                }
                let n = out.len();
                out.copy_from_slice(std::slice::from_raw_parts(data.cast::<f32>(), n));
            }
        }
        Ok(())
    }

    fn input_tensor(&self, input: &[f32], shape: &[i64]) -> Result<OwnedTensor> {
        let api = self.api;
        let mut s = sys::Shape {
            rank: 0,
            dims: ptr::null_mut(),
        };
        let mut t = ptr::null_mut();
        // SAFETY: shape_create copies `shape`; the tensor wraps `input` without copying and
        // copies the shape, which is freed right after.
        let st = unsafe {
            let st = (api.shape_create)(shape.len() as i64, shape.as_ptr(), &mut s);
            if st != sys::OK {
                return Err(Error::runtime(format!(
                    "OpenVINO shape: {}",
                    api.error_text(st)
                )));
            }
            let st = (api.tensor_create_from_host_ptr)(
                self.f32_code,
                sys::Shape {
                    rank: s.rank,
                    dims: s.dims,
                },
                input.as_ptr().cast_mut().cast(),
                &mut t,
            );
            (api.shape_free)(&mut s);
            st
        };
        NonNull::new(t)
            .filter(|_| st == sys::OK)
            .map(|t| OwnedTensor(api, t))
            .ok_or_else(|| Error::runtime(format!("OpenVINO input tensor: {}", api.error_text(st))))
    }
}

struct OwnedTensor(&'static Api, NonNull<OvTensor>);
impl Drop for OwnedTensor {
    fn drop(&mut self) {
        // SAFETY: the handle was created for us and is freed once.
        unsafe { (self.0.tensor_free)(self.1.as_ptr()) }
    }
}

/// Frees the core when compilation fails part-way.
struct CoreGuard {
    api: &'static Api,
    core: NonNull<OvCore>,
}
impl Drop for CoreGuard {
    fn drop(&mut self) {
        // SAFETY: the core was created above and nothing else frees it on this path.
        unsafe { (self.api.core_free)(self.core.as_ptr()) }
    }
}

/// The devices OpenVINO can use here (`CPU`, `GPU.0`, `NPU`, ...).
fn available_devices(api: &Api, core: NonNull<OvCore>) -> Vec<String> {
    let mut d = sys::Devices {
        devices: ptr::null_mut(),
        size: 0,
    };
    // SAFETY: on success `d` holds `size` NUL-terminated names, freed with available_devices_free.
    unsafe {
        if (api.core_get_available_devices)(core.as_ptr(), &mut d) != sys::OK || d.devices.is_null()
        {
            return Vec::new();
        }
        let names = std::slice::from_raw_parts(d.devices, d.size)
            .iter()
            .filter(|p| !p.is_null())
            .map(|&p| CStr::from_ptr(p).to_string_lossy().into_owned())
            .collect();
        (api.available_devices_free)(&mut d);
        names
    }
}

/// Reduced precision on the CPU only where the CPU computes it natively.
fn check_precision(cfg: &Config) -> Result<()> {
    if cfg.device != OvDevice::Cpu {
        return Ok(());
    }
    let (found, needs) = match cfg.precision {
        Precision::Fp32 => return Ok(()),
        Precision::Bf16 => (cpu::native_bf16(), "AMX or AVX512_BF16"),
        Precision::Fp16 => (cpu::native_fp16(), "AMX-FP16 or AVX512_FP16"),
    };
    if found.is_none() {
        return Err(Error::unsupported(format!(
            "option precision={} on device=CPU needs a CPU with native {} ({needs}); this CPU has none, \
             and emulating it would be slower than fp32. Use precision=fp32{}",
            cfg.precision.name(),
            cfg.precision.name(),
            if cfg.precision == Precision::Fp16 { " (or precision=bf16 where the CPU has it)" } else { "" }
        )));
    }
    Ok(())
}
