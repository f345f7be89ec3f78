//! The backend a model runs on (ONNX Runtime or OpenVINO) and the precision it runs in: the
//! options, their checks, and [`Engine`], what the model layer calls either way.

use std::path::{Path, PathBuf};

use super::openvino;
use super::session::Session;
use super::SessionOptions;
use crate::error::{Error, Result};
use crate::export::onnx_writer::{self, Dim, Io};
use crate::graph::Graph;
use crate::runtime::providers::Provider;
use crate::weights::Weights;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    #[default]
    OnnxRuntime,
    OpenVino,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// timm-exact.
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

/// OpenVINO's device for backend=openvino.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OvDevice {
    #[default]
    Cpu,
    Gpu,
    Npu,
    Auto,
}

impl OvDevice {
    pub fn name(self) -> &'static str {
        match self {
            OvDevice::Cpu => "CPU",
            OvDevice::Gpu => "GPU",
            OvDevice::Npu => "NPU",
            OvDevice::Auto => "AUTO",
        }
    }
}

/// The options that pick and set up the backend.
#[derive(Debug, Clone, Default)]
pub struct BackendOptions {
    pub backend: Backend,
    pub precision: Precision,
    pub device: OvDevice,
    pub openvino_library: Option<PathBuf>,
}

impl BackendOptions {
    /// ONNX Runtime's session options with the precision applied: fp16 is TensorRT's fp16
    /// (the same switch as option trt_fp16); ORT's CPU provider has no reduced-precision
    /// float kernels on x86, so bf16 and fp16 without TensorRT are refused.
    pub fn ort_session(&self, s: &SessionOptions) -> Result<SessionOptions> {
        let mut s = s.clone();
        match self.precision {
            Precision::Fp32 => {}
            Precision::Fp16 if s.providers.providers.contains(&Provider::TensorRt) => {
                s.providers.trt_fp16 = true;
            }
            p => {
                return Err(Error::unsupported(format!(
                    "option precision={} is not available on backend=onnxruntime with providers {}: ONNX Runtime's CPU \
                     provider has no {} kernels (only TensorRT runs fp16, providers=tensorrt,cuda,cpu). For reduced \
                     precision on a CPU (AMX, AVX512_BF16) or an Intel GPU/NPU set backend=openvino",
                    p.name(),
                    s.providers
                        .providers
                        .iter()
                        .map(|p| p.human())
                        .collect::<Vec<_>>()
                        .join(","),
                    p.name()
                )));
            }
        }
        Ok(s)
    }

    fn openvino(&self, s: &SessionOptions) -> openvino::Config {
        openvino::Config {
            device: self.device,
            precision: self.precision,
            threads: s.intra_threads,
            library: self.openvino_library.clone(),
        }
    }

    /// Loads the backend's runtime up front: a missing runtime is the most common setup error.
    pub fn load_runtime(&self, s: &SessionOptions) -> Result<()> {
        match self.backend {
            Backend::OnnxRuntime => {
                super::loader::environment(s.ort_library.as_deref()).map(|_| ())
            }
            Backend::OpenVino => {
                openvino::loader::load(self.openvino_library.as_deref()).map(|_| ())
            }
        }
    }
}

/// A model's runnable form on either backend.
// One per model, never moved on a hot path: boxing the session would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Engine {
    Ort(Session),
    OpenVino(openvino::Compiled),
}

impl Engine {
    /// A native graph on OpenVINO: written to ONNX in memory (weights inline, nothing on disk).
    pub fn openvino_native(
        g: &Graph,
        weights: Option<&Weights>,
        architecture: &str,
        chw: [usize; 3],
        b: &BackendOptions,
        s: &SessionOptions,
    ) -> Result<Engine> {
        let native = crate::export::native_onnx(g, weights, architecture, chw, &[])?;
        let bytes = onnx_writer::to_bytes(&native.model)?;
        drop(native.model);
        let compiled = openvino::Compiled::new(
            &bytes,
            dims(&native.input),
            native.outputs.iter().map(dims).collect(),
            &b.openvino(s),
        )?;
        Ok(Engine::OpenVino(compiled))
    }

    /// A folder's model.onnx on OpenVINO: its graph as it is, with weights bound from the
    /// folder's safetensors (or external data) embedded in memory.
    pub fn openvino_folder(path: &Path, b: &BackendOptions, s: &SessionOptions) -> Result<Engine> {
        let g = crate::export::folder::read(path)?;
        let input = g
            .inputs
            .first()
            .ok_or_else(|| Error::invalid_model("model.onnx has no graph input"))?;
        let output = g
            .outputs
            .first()
            .ok_or_else(|| Error::invalid_model("model.onnx has no graph output"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut opened = Vec::new();
        let bytes = {
            let m = crate::export::folder::model(&g, dir, path, &[], &mut opened)?;
            onnx_writer::to_bytes(&m)?
        };
        drop(opened);
        let compiled =
            openvino::Compiled::new(&bytes, dims(input), vec![dims(output)], &b.openvino(s))?;
        Ok(Engine::OpenVino(compiled))
    }

    pub fn input_dims(&self) -> &[i64] {
        match self {
            Engine::Ort(s) => &s.input_dims,
            Engine::OpenVino(c) => &c.input_dims,
        }
    }

    pub fn output_dims(&self) -> &[Vec<i64>] {
        match self {
            Engine::Ort(s) => &s.output_dims,
            Engine::OpenVino(c) => &c.output_dims,
        }
    }

    /// The providers (ONNX Runtime) or `OpenVINO:<device>:<precision>` that run the model.
    pub fn providers(&self) -> &std::ffi::CStr {
        match self {
            Engine::Ort(s) => s.providers(),
            Engine::OpenVino(c) => c.providers(),
        }
    }

    pub fn run(
        &self,
        input: &[f32],
        shape: &[i64],
        output: &mut [f32],
        out_shape: &[i64],
    ) -> Result<()> {
        match self {
            Engine::Ort(s) => s.run(input, shape, output, out_shape),
            Engine::OpenVino(c) => c.run(input, shape, output, out_shape),
        }
    }

    pub fn run_outputs(
        &self,
        input: &[f32],
        shape: &[i64],
        outputs: &mut [&mut [f32]],
        shapes: &[Vec<i64>],
    ) -> Result<()> {
        match self {
            Engine::Ort(s) => s.run_outputs(input, shape, outputs, shapes),
            Engine::OpenVino(c) => c.run_outputs(input, shape, outputs, shapes),
        }
    }
}

/// An Io's dims with -1 for symbolic ones.
fn dims(io: &Io) -> Vec<i64> {
    io.dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => *v,
            Dim::Symbolic(_) => -1,
        })
        .collect()
}
