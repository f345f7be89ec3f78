// Code generated from src/options/table.rs by scripts/gen-header; DO NOT EDIT.

package timm

import (
	"strconv"
	"strings"
)

// WithIntraOpThreads sets option intra_op_threads: threads inside one operator; 0 = ONNX Runtime's default (one per physical core); default 0.
func WithIntraOpThreads(v int) Option {
	return WithOption("intra_op_threads", strconv.Itoa(v))
}

// WithInterOpThreads sets option inter_op_threads: threads across operators; 0 = ONNX Runtime's default; default 0.
func WithInterOpThreads(v int) Option {
	return WithOption("inter_op_threads", strconv.Itoa(v))
}

// GraphOptimizationLevel is a value of option graph_optimization_level.
type GraphOptimizationLevel string

// The values of option graph_optimization_level.
const (
	GraphOptimizationLevelDisable  GraphOptimizationLevel = "disable"
	GraphOptimizationLevelBasic    GraphOptimizationLevel = "basic"
	GraphOptimizationLevelExtended GraphOptimizationLevel = "extended"
	GraphOptimizationLevelAll      GraphOptimizationLevel = "all"
)

// WithGraphOptimizationLevel sets option graph_optimization_level: how far ONNX Runtime rewrites the graph before running it; default all.
func WithGraphOptimizationLevel(v GraphOptimizationLevel) Option {
	return WithOption("graph_optimization_level", string(v))
}

// WithORTLibrary sets option ort_library: path of libonnxruntime.so to load (one runtime serves the whole process); default see "How ONNX Runtime is found".
func WithORTLibrary(v string) Option {
	return WithOption("ort_library", v)
}

// Backend is a value of option backend.
type Backend string

// The values of option backend.
const (
	BackendOnnxruntime Backend = "onnxruntime"
	BackendOpenvino    Backend = "openvino"
)

// WithBackend sets option backend: the runtime that runs the model: ONNX Runtime, or OpenVINO (bf16 on AMX/AVX512_BF16 CPUs, Intel GPU/NPU; see "The OpenVINO backend"); default onnxruntime.
func WithBackend(v Backend) Option {
	return WithOption("backend", string(v))
}

// Precision is a value of option precision.
type Precision string

// The values of option precision.
const (
	PrecisionFp32 Precision = "fp32"
	PrecisionBf16 Precision = "bf16"
	PrecisionFP16 Precision = "fp16"
)

// WithPrecision sets option precision: float precision of the computation, on every backend: fp32 is timm-exact; bf16/fp16 on OpenVINO (CPU bf16 needs AMX or AVX512_BF16), fp16 on ONNX Runtime is TensorRT's fp16; default fp32.
func WithPrecision(v Precision) Option {
	return WithOption("precision", string(v))
}

// Device is a value of option device.
type Device string

// The values of option device.
const (
	DeviceCPU  Device = "cpu"
	DeviceGpu  Device = "gpu"
	DeviceNpu  Device = "npu"
	DeviceAuto Device = "auto"
)

// WithDevice sets option device: OpenVINO's device for backend=openvino: CPU, an Intel GPU or NPU, or OpenVINO's AUTO choice; default cpu.
func WithDevice(v Device) Option {
	return WithOption("device", string(v))
}

// WithOpenvinoLibrary sets option openvino_library: path of OpenVINO's libopenvino_c.so to load for backend=openvino (one runtime serves the whole process); default see "The OpenVINO backend".
func WithOpenvinoLibrary(v string) Option {
	return WithOption("openvino_library", v)
}

// Output is a value of option output.
type Output string

// The values of option output.
const (
	OutputLogits      Output = "logits"
	OutputFeatures    Output = "features"
	OutputFeatureMaps Output = "feature_maps"
	OutputTokens      Output = "tokens"
)

// WithOutput sets option output: what the model returns: class logits, timm's pooled features (forward_head(pre_logits=True)), timm's features_only backbone maps (timm_infer_outputs), or an encoder tower's token sequence [N, T, D] (the forward of the *_enc VLM towers, which have no classifier; timm_infer writes it as N rows of T*D); default logits.
func WithOutput(v Output) Option {
	return WithOption("output", string(v))
}

// WithOutIndices sets option out_indices: output=feature_maps: comma list of feature_info indices, negative ones counted from the end (timm's out_indices); default timm's for the architecture.
func WithOutIndices(v string) Option {
	return WithOption("out_indices", v)
}

// WithOutputStride sets option output_stride: 8, 16 or 32: dilate the last stages as timm's output_stride does (families that implement it); default 32.
func WithOutputStride(v int) Option {
	return WithOption("output_stride", strconv.Itoa(v))
}

// WithDynamicImgSize sets option dynamic_img_size: ViT-style models take any input size, position embeddings resampled per call as timm's dynamic_img_size=True; default false.
func WithDynamicImgSize(v bool) Option {
	return WithOption("dynamic_img_size", strconv.FormatBool(v))
}

// WithInputSize sets option input_size: HxW: build and preprocess at this size (position embeddings resampled once at load, like timm's img_size=); default the config's input_size.
func WithInputSize(v string) Option {
	return WithOption("input_size", v)
}

// WithMaxParams sets option max_params: largest parameter count a config.json may describe before it is refused (checked before anything is allocated); default 4000000000.
func WithMaxParams(v uint64) Option {
	return WithOption("max_params", strconv.FormatUint(v, 10))
}

// Graph is a value of option graph.
type Graph string

// The values of option graph.
const (
	GraphAuto   Graph = "auto"
	GraphNative Graph = "native"
	GraphONNX   Graph = "onnx"
)

// WithGraph sets option graph: which graph runs: auto = the folder's model.onnx when present, else the native graph; default auto.
func WithGraph(v Graph) Option {
	return WithOption("graph", string(v))
}

// WithSeed sets option seed: seed of the random weights of pretrained=false models; default 0.
func WithSeed(v uint64) Option {
	return WithOption("seed", strconv.FormatUint(v, 10))
}

// WithUseTestSize sets option use_test_size: preprocess at the config's test_input_size / test_crop_pct when it has them (timm's validate.py default); default false.
func WithUseTestSize(v bool) Option {
	return WithOption("use_test_size", strconv.FormatBool(v))
}

// WeightsMemory is a value of option weights_memory.
type WeightsMemory string

// The values of option weights_memory.
const (
	WeightsMemoryCopy WeightsMemory = "copy"
	WeightsMemoryMap  WeightsMemory = "map"
)

// WithWeightsMemory sets option weights_memory: copy: weights are read into memory ONNX Runtime owns, the files may change afterwards; map: zero-copy views of a shared mapping, the files must not change while the model lives; default copy.
func WithWeightsMemory(v WeightsMemory) Option {
	return WithOption("weights_memory", string(v))
}

// WithCacheDir sets option cache_dir: Hugging Face cache folder for hf-hub: specs; default HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub.
func WithCacheDir(v string) Option {
	return WithOption("cache_dir", v)
}

// WithGraphCache sets option graph_cache: cache ONNX Runtime's optimised graph of a native model (CPU) so later loads map it instead of rebuilding; default true.
func WithGraphCache(v bool) Option {
	return WithOption("graph_cache", strconv.FormatBool(v))
}

// WithGraphCacheDir sets option graph_cache_dir: folder of the optimised-graph cache; default XDG_CACHE_HOME/timm/graphs or ~/.cache/timm/graphs.
func WithGraphCacheDir(v string) Option {
	return WithOption("graph_cache_dir", v)
}

// WithGraphCacheMaxMb sets option graph_cache_max_mb: bound of the optimised-graph cache in MiB; least recently used entries go first; default 8192.
func WithGraphCacheMaxMb(v int) Option {
	return WithOption("graph_cache_max_mb", strconv.Itoa(v))
}

// WithOffline sets option offline: never use the network for hf-hub: specs; default HF_HUB_OFFLINE.
func WithOffline(v bool) Option {
	return WithOption("offline", strconv.FormatBool(v))
}

// WithEndpoint sets option endpoint: Hugging Face endpoint URL; default HF_ENDPOINT or https://huggingface.co.
func WithEndpoint(v string) Option {
	return WithOption("endpoint", v)
}

// WithToken sets option token: Hugging Face access token; empty = none; default HF_TOKEN or the saved token file.
func WithToken(v string) Option {
	return WithOption("token", v)
}

// Provider is a value of option providers.
type Provider string

// The values of option providers.
const (
	ProviderTensorRT Provider = "tensorrt"
	ProviderCUDA     Provider = "cuda"
	ProviderCPU      Provider = "cpu"
)

// WithProviders sets option providers: execution providers in priority order, cpu last; GPU providers need the onnxruntime-gpu runtime (docs/GPU.md); default cpu.
func WithProviders(v ...Provider) Option {
	w := make([]string, len(v))
	for i, p := range v {
		w[i] = string(p)
	}
	return WithOption("providers", strings.Join(w, ","))
}

// WithDeviceID sets option device_id: CUDA device ordinal for cuda and tensorrt; default 0.
func WithDeviceID(v int) Option {
	return WithOption("device_id", strconv.Itoa(v))
}

// WithStrictProviders sets option strict_providers: fail instead of falling back when a requested GPU provider cannot be used or nodes would run on the CPU; default false.
func WithStrictProviders(v bool) Option {
	return WithOption("strict_providers", strconv.FormatBool(v))
}

// WithCUDAMemLimit sets option cuda_mem_limit: CUDA provider memory arena limit in bytes; default no limit.
func WithCUDAMemLimit(v uint64) Option {
	return WithOption("cuda_mem_limit", strconv.FormatUint(v, 10))
}

// CuDNNConvAlgoSearch is a value of option cudnn_conv_algo_search.
type CuDNNConvAlgoSearch string

// The values of option cudnn_conv_algo_search.
const (
	CuDNNConvAlgoSearchExhaustive CuDNNConvAlgoSearch = "exhaustive"
	CuDNNConvAlgoSearchHeuristic  CuDNNConvAlgoSearch = "heuristic"
	CuDNNConvAlgoSearchDefault    CuDNNConvAlgoSearch = "default"
)

// WithCuDNNConvAlgoSearch sets option cudnn_conv_algo_search: how cuDNN picks convolution algorithms; default exhaustive.
func WithCuDNNConvAlgoSearch(v CuDNNConvAlgoSearch) Option {
	return WithOption("cudnn_conv_algo_search", string(v))
}

// WithTRTFP16 sets option trt_fp16: let TensorRT run in float16 (an alias of precision=fp16 for TensorRT); default false.
func WithTRTFP16(v bool) Option {
	return WithOption("trt_fp16", strconv.FormatBool(v))
}

// WithTRTEngineCacheDir sets option trt_engine_cache_dir: folder for TensorRT engines and timing caches, kept per model, GPU and version; default none: engines are rebuilt per process.
func WithTRTEngineCacheDir(v string) Option {
	return WithOption("trt_engine_cache_dir", v)
}

// WithTRTWorkspaceSize sets option trt_workspace_size: TensorRT workspace limit in bytes; default TensorRT's.
func WithTRTWorkspaceSize(v uint64) Option {
	return WithOption("trt_workspace_size", strconv.FormatUint(v, 10))
}

// WithMaxBatch sets option max_batch: largest batch of the TensorRT optimisation profile; default 32.
func WithMaxBatch(v int) Option {
	return WithOption("max_batch", strconv.Itoa(v))
}

// WithExportExternalData sets option export_external_data: exported ONNX files keep their weights in a `.data` file beside them (always so above 2 GB); default false.
func WithExportExternalData(v bool) Option {
	return WithOption("export_external_data", strconv.FormatBool(v))
}

// WithLoadTruncatedImages sets option load_truncated_images: decode a JPEG file whose data ends early instead of refusing it (Pillow's ImageFile.LOAD_TRUNCATED_IMAGES); default false.
func WithLoadTruncatedImages(v bool) Option {
	return WithOption("load_truncated_images", strconv.FormatBool(v))
}
