//! Creation options: string keys and values from the C ABI, checked when set and turned into
//! typed settings when a model is created.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::graph::OutputKind;
use crate::runtime::providers::{self, ConvAlgoSearch};
use crate::runtime::{OptLevel, SessionOptions};
use crate::source::hub::HubOptions;
use crate::weights::WeightsMode;

/// Every option key, with the values it takes (shown in the unknown-key error).
pub const KEYS: &[(&str, &str)] = &[
    ("intra_op_threads", "threads inside one operator; 0 = ONNX Runtime's default (one per physical core)"),
    ("inter_op_threads", "threads across operators; 0 = default"),
    ("graph_optimization_level", "disable | basic | extended | all (default)"),
    ("ort_library", "path of libonnxruntime.so to load"),
    ("output", "logits (default) | features (timm's pre-logits) | feature_maps (timm's features_only backbone maps, see timm_infer_outputs)"),
    ("out_indices", "comma list of feature_info indices for output=feature_maps (negative from the end); default: timm's for the architecture"),
    ("output_stride", "8 | 16 | 32: dilate the last stages as timm's output_stride does (families that support it)"),
    ("dynamic_img_size", "true | false (default): ViT-style models take any input size, position embeddings resampled per call as timm's dynamic_img_size=True"),
    ("input_size", "HxW: build and preprocess at this size (position embeddings resampled once at load, like timm's img_size=)"),
    ("max_params", "largest parameter count a config may describe before it is refused (default 4000000000)"),
    ("graph", "auto (default: model.onnx when present, else native) | native | onnx"),
    ("seed", "integer seed for pretrained=false initialisation (default 0)"),
    ("use_test_size", "true | false (default): preprocess at test_input_size / test_crop_pct when the config has them"),
    ("load_truncated_images", "true | false (default): decode a JPEG file whose data ends early instead of refusing it (Pillow's ImageFile.LOAD_TRUNCATED_IMAGES)"),
    ("weights_memory", "copy (default: weights are read into memory ONNX Runtime owns; the files may change afterwards) | map (zero-copy views of a shared mapping; the files must not change while the model lives)"),
    ("cache_dir", "Hugging Face cache folder (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub)"),
    ("offline", "true | false: never use the network for hf-hub: specs (default: HF_HUB_OFFLINE)"),
    ("endpoint", "Hugging Face endpoint URL (default: HF_ENDPOINT or https://huggingface.co)"),
    ("token", "Hugging Face access token (default: HF_TOKEN or the saved token file); empty = none"),
    ("providers", "ordered comma list of tensorrt, cuda, cpu (default cpu); GPU providers need the onnxruntime-gpu runtime (docs/GPU.md)"),
    ("device_id", "CUDA device ordinal for cuda/tensorrt (default 0)"),
    ("strict_providers", "true | false (default): fail instead of falling back when a requested GPU provider cannot be used or nodes would run on the CPU"),
    ("cuda_mem_limit", "CUDA provider memory arena limit in bytes (default: no limit)"),
    ("cudnn_conv_algo_search", "exhaustive (ORT's default) | heuristic | default: how cuDNN picks convolution algorithms"),
    ("trt_fp16", "true | false (default): let TensorRT run in float16"),
    ("trt_engine_cache_dir", "folder for TensorRT engines and timing caches (kept per model, GPU and version); default: none, engines are rebuilt per process"),
    ("trt_workspace_size", "TensorRT workspace limit in bytes (default: TensorRT's)"),
    ("export_external_data", "true | false (default): exported ONNX files keep their weights in a `.data` file beside them (always so above 2 GB)"),
    ("max_batch", "largest batch of the TensorRT profile, 1..=4096 (default 32)"),
];

/// Options as the caller set them.
#[derive(Clone, Default)]
pub struct Options {
    entries: BTreeMap<String, String>,
    progress: Option<crate::source::hub::Progress>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: BTreeMap<&str, &str> = self
            .entries
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if k == "token" {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("Options")
            .field("entries", &shown)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Which graph a folder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphChoice {
    Auto,
    Native,
    Onnx,
}

/// Options after parsing.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub session: SessionOptions,
    pub output: OutputKind,
    pub graph: GraphChoice,
    pub seed: u64,
    pub use_test_size: bool,
    pub hub: HubOptions,
    pub weights_mode: WeightsMode,
    pub out_indices: Option<Vec<i64>>,
    pub output_stride: Option<usize>,
    pub dynamic_img_size: bool,
    pub input_size: Option<(usize, usize)>,
    pub max_params: u64,
    pub export_external_data: bool,
    /// `timm_classify_file` decodes truncated JPEGs (option `load_truncated_images`).
    pub load_truncated_images: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            session: SessionOptions::default(),
            output: OutputKind::Logits,
            graph: GraphChoice::Auto,
            seed: 0,
            use_test_size: false,
            hub: HubOptions::default(),
            weights_mode: WeightsMode::Copy,
            out_indices: None,
            output_stride: None,
            dynamic_img_size: false,
            input_size: None,
            max_params: crate::graph::budget::DEFAULT_MAX_PARAMS,
            export_external_data: false,
            load_truncated_images: false,
        }
    }
}

impl Options {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a key, checking the key and the value now so mistakes surface at the call that made them.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        if !KEYS.iter().any(|(k, _)| *k == key) {
            let known: Vec<String> = KEYS.iter().map(|(k, d)| format!("  {k}: {d}")).collect();
            return Err(Error::invalid_argument(format!(
                "unknown option `{key}`; known options:\n{}",
                known.join("\n")
            )));
        }
        let mut probe = ModelOptions::default();
        apply(&mut probe, key, value)?;
        self.entries.insert(key.to_string(), value.to_string());
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// A callback for download progress of `hf-hub:` models (bytes done, bytes total).
    pub fn set_progress(&mut self, progress: Option<crate::source::hub::Progress>) {
        self.progress = progress;
    }

    pub fn parse(&self) -> Result<ModelOptions> {
        let mut m = ModelOptions::default();
        for (k, v) in &self.entries {
            apply(&mut m, k, v)?;
        }
        m.hub.progress = self.progress.clone();
        Ok(m)
    }
}

fn apply(m: &mut ModelOptions, key: &str, value: &str) -> Result<()> {
    let bad = |expected: &str| {
        Error::invalid_argument(format!("option `{key}` = `{value}`: expected {expected}"))
    };
    let threads = |v: &str| -> Result<Option<usize>> {
        let n: usize = v
            .trim()
            .parse()
            .map_err(|_| bad("a thread count (0 = default)"))?;
        if n > 1024 {
            return Err(bad("at most 1024 threads"));
        }
        Ok(if n == 0 { None } else { Some(n) })
    };
    let boolean = |v: &str| -> Result<bool> {
        match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(bad("true or false")),
        }
    };
    let bytes = |v: &str| -> Result<u64> {
        v.trim()
            .parse()
            .ok()
            .filter(|&n: &u64| n > 0)
            .ok_or_else(|| bad("a positive number of bytes"))
    };
    match key {
        "intra_op_threads" => m.session.intra_threads = threads(value)?,
        "inter_op_threads" => m.session.inter_threads = threads(value)?,
        "graph_optimization_level" => {
            m.session.opt_level = Some(match value.trim() {
                "disable" | "0" => OptLevel::Disable,
                "basic" | "1" => OptLevel::Basic,
                "extended" | "2" => OptLevel::Extended,
                "all" | "99" => OptLevel::All,
                _ => return Err(bad("disable, basic, extended or all")),
            })
        }
        "ort_library" => {
            if value.is_empty() {
                return Err(bad("a file path"));
            }
            m.session.ort_library = Some(PathBuf::from(value));
        }
        "output" => {
            m.output = match value.trim() {
                "logits" => OutputKind::Logits,
                "features" => OutputKind::Features,
                "feature_maps" => OutputKind::FeatureMaps,
                _ => return Err(bad("logits, features or feature_maps")),
            }
        }
        "out_indices" => {
            let v: Option<Vec<i64>> = value
                .split(',')
                .map(|t| {
                    t.trim()
                        .parse()
                        .ok()
                        .filter(|i: &i64| i.unsigned_abs() < 1024)
                })
                .collect();
            m.out_indices = Some(
                v.filter(|v| !v.is_empty())
                    .ok_or_else(|| bad("a comma list of integers such as 1,2,3 or -1"))?,
            );
        }
        "output_stride" => {
            m.output_stride = Some(
                value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|s| [8, 16, 32].contains(s))
                    .ok_or_else(|| bad("8, 16 or 32"))?,
            );
        }
        "dynamic_img_size" => m.dynamic_img_size = boolean(value)?,
        "input_size" => {
            let v = value.trim().to_ascii_lowercase();
            let parsed = v.split_once('x').and_then(|(h, w)| {
                let h: usize = h.trim().parse().ok()?;
                let w: usize = w.trim().parse().ok()?;
                ((1..=8192).contains(&h) && (1..=8192).contains(&w)).then_some((h, w))
            });
            m.input_size =
                Some(parsed.ok_or_else(|| bad("HxW with 1..=8192 pixels each, e.g. 384x384"))?);
        }
        "max_params" => {
            m.max_params = value
                .trim()
                .parse()
                .ok()
                .filter(|&n: &u64| n > 0)
                .ok_or_else(|| bad("a positive parameter count"))?;
        }
        "graph" => {
            m.graph = match value.trim() {
                "auto" => GraphChoice::Auto,
                "native" => GraphChoice::Native,
                "onnx" => GraphChoice::Onnx,
                _ => return Err(bad("auto, native or onnx")),
            }
        }
        "seed" => {
            m.seed = value
                .trim()
                .parse()
                .map_err(|_| bad("a non-negative integer"))?
        }
        "use_test_size" => m.use_test_size = boolean(value)?,
        "export_external_data" => m.export_external_data = boolean(value)?,
        "load_truncated_images" => m.load_truncated_images = boolean(value)?,
        "cache_dir" => {
            if value.is_empty() {
                return Err(bad("a folder path"));
            }
            m.hub.cache_dir = Some(PathBuf::from(value));
        }
        "weights_memory" => {
            m.weights_mode = match value.trim() {
                "copy" => WeightsMode::Copy,
                "map" => WeightsMode::Map,
                _ => return Err(bad("copy or map")),
            }
        }
        "offline" => m.hub.offline = Some(boolean(value)?),
        "endpoint" => {
            if !(value.starts_with("https://") || value.starts_with("http://")) {
                return Err(bad("an http:// or https:// URL"));
            }
            m.hub.endpoint = Some(value.to_string());
        }
        "token" => m.hub.token = Some(value.to_string()),
        "providers" => {
            m.session.providers.providers = providers::parse_list(value)
                .map_err(|why| bad(&format!("a comma list of tensorrt, cuda, cpu ({why})")))?
        }
        "device_id" => {
            m.session.providers.device_id = value
                .trim()
                .parse()
                .ok()
                .filter(|&d: &u32| d < 1024)
                .ok_or_else(|| bad("a CUDA device ordinal (0, 1, ...)"))?
        }
        "strict_providers" => m.session.providers.strict = boolean(value)?,
        "cuda_mem_limit" => m.session.providers.cuda_mem_limit = Some(bytes(value)?),
        "cudnn_conv_algo_search" => {
            m.session.providers.cudnn_conv_algo_search =
                Some(match value.trim().to_ascii_lowercase().as_str() {
                    "exhaustive" => ConvAlgoSearch::Exhaustive,
                    "heuristic" => ConvAlgoSearch::Heuristic,
                    "default" => ConvAlgoSearch::Default,
                    _ => return Err(bad("exhaustive, heuristic or default")),
                })
        }
        "trt_fp16" => m.session.providers.trt_fp16 = boolean(value)?,
        "trt_engine_cache_dir" => {
            if value.is_empty() {
                return Err(bad("a folder path"));
            }
            m.session.providers.trt_engine_cache_dir = Some(PathBuf::from(value));
        }
        "trt_workspace_size" => m.session.providers.trt_workspace_size = Some(bytes(value)?),
        "max_batch" => {
            m.session.providers.max_batch = value
                .trim()
                .parse()
                .ok()
                .filter(|n: &u32| (1..=4096).contains(n))
                .ok_or_else(|| bad("a batch size in 1..=4096"))?
        }
        _ => {
            return Err(Error::internal(format!(
                "option `{key}` is listed but not handled"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    #[test]
    fn unknown_key_lists_known_keys() {
        let e = Options::new().set("threads", "4").unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
        for (k, _) in KEYS {
            assert!(e.message().contains(k), "{e}");
        }
    }

    #[test]
    fn values_are_checked_when_set() {
        let mut o = Options::new();
        assert!(o.set("intra_op_threads", "two").is_err());
        assert!(o.set("graph_optimization_level", "max").is_err());
        assert!(o.set("output", "probs").is_err());
        o.set("intra_op_threads", "2").unwrap();
        o.set("graph_optimization_level", "basic").unwrap();
        o.set("output", "features").unwrap();
        let m = o.parse().unwrap();
        assert_eq!(m.session.intra_threads, Some(2));
        assert_eq!(m.session.opt_level, Some(OptLevel::Basic));
        assert_eq!(m.output, OutputKind::Features);
    }

    #[test]
    fn provider_options_are_checked_when_set() {
        let mut o = Options::new();
        for (k, v) in [
            ("providers", "gpu"),
            ("providers", "cpu,cuda"),
            ("providers", ""),
            ("device_id", "-1"),
            ("strict_providers", "maybe"),
            ("cuda_mem_limit", "0"),
            ("cuda_mem_limit", "2GB"),
            ("cudnn_conv_algo_search", "fast"),
            ("trt_fp16", "half"),
            ("trt_engine_cache_dir", ""),
            ("trt_workspace_size", "-5"),
            ("max_batch", "0"),
            ("max_batch", "5000"),
        ] {
            let e = o.set(k, v).unwrap_err();
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{k}={v}");
            assert!(e.message().contains(k), "{e}");
        }
        o.set("providers", "tensorrt,cuda,cpu").unwrap();
        o.set("device_id", "1").unwrap();
        o.set("strict_providers", "true").unwrap();
        o.set("cuda_mem_limit", "2147483648").unwrap();
        o.set("cudnn_conv_algo_search", "heuristic").unwrap();
        o.set("trt_fp16", "1").unwrap();
        o.set("trt_engine_cache_dir", "/tmp/engines").unwrap();
        o.set("trt_workspace_size", "1073741824").unwrap();
        o.set("max_batch", "8").unwrap();
        let p = o.parse().unwrap().session.providers;
        use crate::runtime::providers::Provider;
        assert_eq!(
            p.providers,
            vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
        );
        assert_eq!(p.device_id, 1);
        assert!(p.strict && p.trt_fp16);
        assert_eq!(p.cuda_mem_limit, Some(2147483648));
        assert_eq!(p.cudnn_conv_algo_search, Some(ConvAlgoSearch::Heuristic));
        assert_eq!(
            p.trt_engine_cache_dir.as_deref(),
            Some(std::path::Path::new("/tmp/engines"))
        );
        assert_eq!(p.trt_workspace_size, Some(1073741824));
        assert_eq!(p.max_batch, 8);
    }
}
