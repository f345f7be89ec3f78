//! What went wrong with a provider, in words that say what to install: the runtime build
//! without it, a library the loader could not open, a session that would put nodes on the CPU.

use super::Provider;
use crate::error::Error;

/// The GPU wheel whose provider libraries this build was tested against.
pub const GPU_WHEEL: &str = "onnxruntime-gpu==1.31.1";
/// TensorRT major version the TensorRT provider of that wheel links (`libnvinfer.so.10`).
pub const TENSORRT_WHEEL: &str = "tensorrt-cu13-libs==10.16.1.11";

fn runtime_path() -> String {
    crate::runtime::loader::loaded_path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the loaded ONNX Runtime".into())
}

pub(super) fn not_compiled_in(p: Provider, available: &[String]) -> Error {
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
pub(super) fn commit_error(p: Provider, e: Error) -> Error {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
