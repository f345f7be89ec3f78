// Generated from src/options/table.rs by scripts/gen-header; do not edit.
// The typed setters of timm::Options, one per option, and the enum classes of the options
// that take one of a few words. Included by timm.hpp.
#ifndef TIMM_OPTIONS_HPP
#define TIMM_OPTIONS_HPP

#include <string>
#include <utility>
#include <vector>

namespace timm {

// Values of option `graph_optimization_level`.
enum class GraphOptimizationLevel { Disable, Basic, Extended, All };

inline const char* option_value(GraphOptimizationLevel v) noexcept {
  switch (v) {
    case GraphOptimizationLevel::Disable: return "disable";
    case GraphOptimizationLevel::Basic: return "basic";
    case GraphOptimizationLevel::Extended: return "extended";
    case GraphOptimizationLevel::All: return "all";
  }
  return "";
}

// Values of option `backend`.
enum class Backend { Onnxruntime, Openvino };

inline const char* option_value(Backend v) noexcept {
  switch (v) {
    case Backend::Onnxruntime: return "onnxruntime";
    case Backend::Openvino: return "openvino";
  }
  return "";
}

// Values of option `precision`.
enum class Precision { Fp32, Bf16, FP16 };

inline const char* option_value(Precision v) noexcept {
  switch (v) {
    case Precision::Fp32: return "fp32";
    case Precision::Bf16: return "bf16";
    case Precision::FP16: return "fp16";
  }
  return "";
}

// Values of option `device`.
enum class Device { CPU, Gpu, Npu, Auto };

inline const char* option_value(Device v) noexcept {
  switch (v) {
    case Device::CPU: return "cpu";
    case Device::Gpu: return "gpu";
    case Device::Npu: return "npu";
    case Device::Auto: return "auto";
  }
  return "";
}

// Values of option `output`.
enum class Output { Logits, Features, FeatureMaps, Tokens };

inline const char* option_value(Output v) noexcept {
  switch (v) {
    case Output::Logits: return "logits";
    case Output::Features: return "features";
    case Output::FeatureMaps: return "feature_maps";
    case Output::Tokens: return "tokens";
  }
  return "";
}

// Values of option `graph`.
enum class Graph { Auto, Native, ONNX };

inline const char* option_value(Graph v) noexcept {
  switch (v) {
    case Graph::Auto: return "auto";
    case Graph::Native: return "native";
    case Graph::ONNX: return "onnx";
  }
  return "";
}

// Values of option `weights_memory`.
enum class WeightsMemory { Copy, Map };

inline const char* option_value(WeightsMemory v) noexcept {
  switch (v) {
    case WeightsMemory::Copy: return "copy";
    case WeightsMemory::Map: return "map";
  }
  return "";
}

// Values of option `providers`.
enum class Provider { TensorRT, CUDA, CPU };

inline const char* option_value(Provider v) noexcept {
  switch (v) {
    case Provider::TensorRT: return "tensorrt";
    case Provider::CUDA: return "cuda";
    case Provider::CPU: return "cpu";
  }
  return "";
}

// Values of option `cudnn_conv_algo_search`.
enum class CuDNNConvAlgoSearch { Exhaustive, Heuristic, Default };

inline const char* option_value(CuDNNConvAlgoSearch v) noexcept {
  switch (v) {
    case CuDNNConvAlgoSearch::Exhaustive: return "exhaustive";
    case CuDNNConvAlgoSearch::Heuristic: return "heuristic";
    case CuDNNConvAlgoSearch::Default: return "default";
  }
  return "";
}

namespace detail {

template <class E>
inline std::string join_option_values(const std::vector<E>& values) {
  std::string s;
  for (E v : values) s += (s.empty() ? "" : ",") + std::string(option_value(v));
  return s;
}

// Base of timm::Options: each setter calls Self::set(key, value) and returns *this.
template <class Self>
class OptionSetters {
 public:
  // threads inside one operator; 0 = ONNX Runtime's default (one per physical core); default 0.
  Self& intra_op_threads(int v) & { return self().set("intra_op_threads", std::to_string(v)); }
  Self&& intra_op_threads(int v) && { return std::move(self().set("intra_op_threads", std::to_string(v))); }

  // threads across operators; 0 = ONNX Runtime's default; default 0.
  Self& inter_op_threads(int v) & { return self().set("inter_op_threads", std::to_string(v)); }
  Self&& inter_op_threads(int v) && { return std::move(self().set("inter_op_threads", std::to_string(v))); }

  // how far ONNX Runtime rewrites the graph before running it; default all.
  Self& graph_optimization_level(GraphOptimizationLevel v) & { return self().set("graph_optimization_level", option_value(v)); }
  Self&& graph_optimization_level(GraphOptimizationLevel v) && { return std::move(self().set("graph_optimization_level", option_value(v))); }

  // path of libonnxruntime.so to load (one runtime serves the whole process); default see "How ONNX Runtime is found".
  Self& ort_library(const std::string& v) & { return self().set("ort_library", v); }
  Self&& ort_library(const std::string& v) && { return std::move(self().set("ort_library", v)); }

  // the runtime that runs the model: ONNX Runtime, or OpenVINO (bf16 on AMX/AVX512_BF16 CPUs, Intel GPU/NPU; see "The OpenVINO backend"); default onnxruntime.
  Self& backend(Backend v) & { return self().set("backend", option_value(v)); }
  Self&& backend(Backend v) && { return std::move(self().set("backend", option_value(v))); }

  // float precision of the computation, on every backend: fp32 is timm-exact; bf16/fp16 on OpenVINO (CPU bf16 needs AMX or AVX512_BF16), fp16 on ONNX Runtime is TensorRT's fp16; default fp32.
  Self& precision(Precision v) & { return self().set("precision", option_value(v)); }
  Self&& precision(Precision v) && { return std::move(self().set("precision", option_value(v))); }

  // OpenVINO's device for backend=openvino: CPU, an Intel GPU or NPU, or OpenVINO's AUTO choice; default cpu.
  Self& device(Device v) & { return self().set("device", option_value(v)); }
  Self&& device(Device v) && { return std::move(self().set("device", option_value(v))); }

  // path of OpenVINO's libopenvino_c.so to load for backend=openvino (one runtime serves the whole process); default see "The OpenVINO backend".
  Self& openvino_library(const std::string& v) & { return self().set("openvino_library", v); }
  Self&& openvino_library(const std::string& v) && { return std::move(self().set("openvino_library", v)); }

  // what the model returns: class logits, timm's pooled features (forward_head(pre_logits=True)), timm's features_only backbone maps (timm_infer_outputs), or an encoder tower's token sequence [N, T, D] (the forward of the *_enc VLM towers, which have no classifier; timm_infer writes it as N rows of T*D); default logits.
  Self& output(Output v) & { return self().set("output", option_value(v)); }
  Self&& output(Output v) && { return std::move(self().set("output", option_value(v))); }

  // output=feature_maps: comma list of feature_info indices, negative ones counted from the end (timm's out_indices); default timm's for the architecture.
  Self& out_indices(const std::string& v) & { return self().set("out_indices", v); }
  Self&& out_indices(const std::string& v) && { return std::move(self().set("out_indices", v)); }

  // 8, 16 or 32: dilate the last stages as timm's output_stride does (families that implement it); default 32.
  Self& output_stride(int v) & { return self().set("output_stride", std::to_string(v)); }
  Self&& output_stride(int v) && { return std::move(self().set("output_stride", std::to_string(v))); }

  // ViT-style models take any input size, position embeddings resampled per call as timm's dynamic_img_size=True; default false.
  Self& dynamic_img_size(bool v) & { return self().set("dynamic_img_size", v ? "true" : "false"); }
  Self&& dynamic_img_size(bool v) && { return std::move(self().set("dynamic_img_size", v ? "true" : "false")); }

  // HxW: build and preprocess at this size (position embeddings resampled once at load, like timm's img_size=); default the config's input_size.
  Self& input_size(const std::string& v) & { return self().set("input_size", v); }
  Self&& input_size(const std::string& v) && { return std::move(self().set("input_size", v)); }

  // largest parameter count a config.json may describe before it is refused (checked before anything is allocated); default 4000000000.
  Self& max_params(uint64_t v) & { return self().set("max_params", std::to_string(v)); }
  Self&& max_params(uint64_t v) && { return std::move(self().set("max_params", std::to_string(v))); }

  // which graph runs: auto = the folder's model.onnx when present, else the native graph; default auto.
  Self& graph(Graph v) & { return self().set("graph", option_value(v)); }
  Self&& graph(Graph v) && { return std::move(self().set("graph", option_value(v))); }

  // seed of the random weights of pretrained=false models; default 0.
  Self& seed(uint64_t v) & { return self().set("seed", std::to_string(v)); }
  Self&& seed(uint64_t v) && { return std::move(self().set("seed", std::to_string(v))); }

  // preprocess at the config's test_input_size / test_crop_pct when it has them (timm's validate.py default); default false.
  Self& use_test_size(bool v) & { return self().set("use_test_size", v ? "true" : "false"); }
  Self&& use_test_size(bool v) && { return std::move(self().set("use_test_size", v ? "true" : "false")); }

  // copy: weights are read into memory ONNX Runtime owns, the files may change afterwards; map: zero-copy views of a shared mapping, the files must not change while the model lives; default copy.
  Self& weights_memory(WeightsMemory v) & { return self().set("weights_memory", option_value(v)); }
  Self&& weights_memory(WeightsMemory v) && { return std::move(self().set("weights_memory", option_value(v))); }

  // Hugging Face cache folder for hf-hub: specs; default HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub.
  Self& cache_dir(const std::string& v) & { return self().set("cache_dir", v); }
  Self&& cache_dir(const std::string& v) && { return std::move(self().set("cache_dir", v)); }

  // cache ONNX Runtime's optimised graph of a native model (CPU) so later loads map it instead of rebuilding; default true.
  Self& graph_cache(bool v) & { return self().set("graph_cache", v ? "true" : "false"); }
  Self&& graph_cache(bool v) && { return std::move(self().set("graph_cache", v ? "true" : "false")); }

  // folder of the optimised-graph cache; default XDG_CACHE_HOME/timm/graphs or ~/.cache/timm/graphs.
  Self& graph_cache_dir(const std::string& v) & { return self().set("graph_cache_dir", v); }
  Self&& graph_cache_dir(const std::string& v) && { return std::move(self().set("graph_cache_dir", v)); }

  // bound of the optimised-graph cache in MiB; least recently used entries go first; default 8192.
  Self& graph_cache_max_mb(int v) & { return self().set("graph_cache_max_mb", std::to_string(v)); }
  Self&& graph_cache_max_mb(int v) && { return std::move(self().set("graph_cache_max_mb", std::to_string(v))); }

  // never use the network for hf-hub: specs; default HF_HUB_OFFLINE.
  Self& offline(bool v) & { return self().set("offline", v ? "true" : "false"); }
  Self&& offline(bool v) && { return std::move(self().set("offline", v ? "true" : "false")); }

  // Hugging Face endpoint URL; default HF_ENDPOINT or https://huggingface.co.
  Self& endpoint(const std::string& v) & { return self().set("endpoint", v); }
  Self&& endpoint(const std::string& v) && { return std::move(self().set("endpoint", v)); }

  // Hugging Face access token; empty = none; default HF_TOKEN or the saved token file.
  Self& token(const std::string& v) & { return self().set("token", v); }
  Self&& token(const std::string& v) && { return std::move(self().set("token", v)); }

  // execution providers in priority order, cpu last; GPU providers need the onnxruntime-gpu runtime (docs/GPU.md); default cpu.
  Self& providers(const std::vector<Provider>& v) & { return self().set("providers", detail::join_option_values(v)); }
  Self&& providers(const std::vector<Provider>& v) && { return std::move(self().set("providers", detail::join_option_values(v))); }

  // CUDA device ordinal for cuda and tensorrt; default 0.
  Self& device_id(int v) & { return self().set("device_id", std::to_string(v)); }
  Self&& device_id(int v) && { return std::move(self().set("device_id", std::to_string(v))); }

  // fail instead of falling back when a requested GPU provider cannot be used or nodes would run on the CPU; default false.
  Self& strict_providers(bool v) & { return self().set("strict_providers", v ? "true" : "false"); }
  Self&& strict_providers(bool v) && { return std::move(self().set("strict_providers", v ? "true" : "false")); }

  // CUDA provider memory arena limit in bytes; default no limit.
  Self& cuda_mem_limit(uint64_t v) & { return self().set("cuda_mem_limit", std::to_string(v)); }
  Self&& cuda_mem_limit(uint64_t v) && { return std::move(self().set("cuda_mem_limit", std::to_string(v))); }

  // how cuDNN picks convolution algorithms; default exhaustive.
  Self& cudnn_conv_algo_search(CuDNNConvAlgoSearch v) & { return self().set("cudnn_conv_algo_search", option_value(v)); }
  Self&& cudnn_conv_algo_search(CuDNNConvAlgoSearch v) && { return std::move(self().set("cudnn_conv_algo_search", option_value(v))); }

  // let TensorRT run in float16 (an alias of precision=fp16 for TensorRT); default false.
  Self& trt_fp16(bool v) & { return self().set("trt_fp16", v ? "true" : "false"); }
  Self&& trt_fp16(bool v) && { return std::move(self().set("trt_fp16", v ? "true" : "false")); }

  // folder for TensorRT engines and timing caches, kept per model, GPU and version; default none: engines are rebuilt per process.
  Self& trt_engine_cache_dir(const std::string& v) & { return self().set("trt_engine_cache_dir", v); }
  Self&& trt_engine_cache_dir(const std::string& v) && { return std::move(self().set("trt_engine_cache_dir", v)); }

  // TensorRT workspace limit in bytes; default TensorRT's.
  Self& trt_workspace_size(uint64_t v) & { return self().set("trt_workspace_size", std::to_string(v)); }
  Self&& trt_workspace_size(uint64_t v) && { return std::move(self().set("trt_workspace_size", std::to_string(v))); }

  // largest batch of the TensorRT optimisation profile; default 32.
  Self& max_batch(int v) & { return self().set("max_batch", std::to_string(v)); }
  Self&& max_batch(int v) && { return std::move(self().set("max_batch", std::to_string(v))); }

  // exported ONNX files keep their weights in a `.data` file beside them (always so above 2 GB); default false.
  Self& export_external_data(bool v) & { return self().set("export_external_data", v ? "true" : "false"); }
  Self&& export_external_data(bool v) && { return std::move(self().set("export_external_data", v ? "true" : "false")); }

  // decode a JPEG file whose data ends early instead of refusing it (Pillow's ImageFile.LOAD_TRUNCATED_IMAGES); default false.
  Self& load_truncated_images(bool v) & { return self().set("load_truncated_images", v ? "true" : "false"); }
  Self&& load_truncated_images(bool v) && { return std::move(self().set("load_truncated_images", v ? "true" : "false")); }

private:
  Self& self() { return static_cast<Self&>(*this); }
};

}  // namespace detail
}  // namespace timm

#endif  // TIMM_OPTIONS_HPP
