//! Creation options: string keys and values from the C ABI, checked when set and turned into
//! typed settings when a model is created. Which keys exist and what they take is
//! [`table::OPTIONS`], the one list of them.

pub mod table;

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::graph::OutputKind;
use crate::runtime::SessionOptions;
use crate::source::hub::HubOptions;
use crate::weights::WeightsMode;

use self::table::OPTIONS;

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
    /// backend, precision, OpenVINO device and library.
    pub backend: crate::runtime::backend::BackendOptions,
    pub output: OutputKind,
    pub graph: GraphChoice,
    pub seed: u64,
    pub use_test_size: bool,
    pub hub: HubOptions,
    pub weights_mode: WeightsMode,
    /// timm's `out_indices` for feature maps.
    pub out_indices: Option<Vec<i64>>,
    /// timm's `output_stride` (dilated stages).
    pub output_stride: Option<usize>,
    /// timm's `dynamic_img_size=True`.
    pub dynamic_img_size: bool,
    /// Build and preprocess at this `(H, W)` (timm's `img_size=`).
    pub input_size: Option<(usize, usize)>,
    /// Largest parameter count a config may describe.
    pub max_params: u64,
    /// Exported ONNX files keep their weights beside them.
    pub export_external_data: bool,
    /// `timm_classify_file` decodes truncated JPEGs.
    pub load_truncated_images: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            session: SessionOptions::default(),
            backend: Default::default(),
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

/// Checks `value` against the table's row for `key` and stores it in `m`.
fn apply(m: &mut ModelOptions, key: &str, value: &str) -> Result<()> {
    let Some(spec) = table::find(key) else {
        let known: Vec<String> = OPTIONS
            .iter()
            .map(|o| {
                format!(
                    "  {}: {} (default {}): {}",
                    o.key,
                    o.kind.expected(),
                    o.default,
                    o.doc
                )
            })
            .collect();
        return Err(Error::invalid_argument(format!(
            "unknown option `{key}`; known options:\n{}",
            known.join("\n")
        )));
    };
    table::check(spec, value)
        .and_then(|v| (spec.apply)(m, &v))
        .map_err(|expected| {
            Error::invalid_argument(format!("option `{key}` = `{value}`: expected {expected}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;
    use crate::runtime::providers::ConvAlgoSearch;
    use crate::runtime::OptLevel;

    #[test]
    fn unknown_key_lists_known_keys() {
        let e = Options::new().set("threads", "4").unwrap_err();
        assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT);
        for o in OPTIONS {
            assert!(e.message().contains(o.key), "{e}");
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
