//! Every creation option in one table: key, type, allowed values, default, one-line doc, and
//! where a checked value goes. Parsing ([`super::Options`]), the unknown-key message, the doc
//! comment of `timm_options_set`, the README's table and the typed C++ and Go helpers all come
//! from these rows (`tests/options_table.rs` regenerates or checks each of them).
//!
//! Adding an option is one row here (plus its field in [`ModelOptions`]); then
//! `scripts/gen-header` rewrites the docs and wrappers.

// Most rows store one value: `Ok(field = value)` keeps such a row's `apply` on one line.
#![allow(clippy::unit_arg)]

use std::path::PathBuf;

use super::{GraphChoice, ModelOptions};
use crate::graph::OutputKind;
use crate::runtime::backend::{Backend, OvDevice, Precision};
use crate::runtime::providers::{self, ConvAlgoSearch};
use crate::runtime::OptLevel;
use crate::weights::WeightsMode;

/// The type of an option's value, which decides how it is checked and how the C++ and Go
/// helpers take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A decimal integer in `min..=max`.
    Int { min: u64, max: u64 },
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// One of these words (case-insensitive).
    Enum(&'static [&'static str]),
    /// An ordered comma list of distinct words from these.
    List(&'static [&'static str]),
    /// A non-empty file or folder path.
    Path,
    /// Any string, empty included.
    Text,
    /// An `http://` or `https://` URL.
    Url,
}

/// One option.
pub struct OptionSpec {
    pub key: &'static str,
    pub kind: Kind,
    /// The default, as a person reads it.
    pub default: &'static str,
    /// One line: what it does.
    pub doc: &'static str,
    /// Stores a value that passed [`check`] (enum and list words are lower-case).
    pub apply: fn(&mut ModelOptions, &str) -> Result<(), String>,
}

const U64: u64 = u64::MAX;

fn threads(v: &str) -> Option<usize> {
    v.parse().ok().filter(|&n: &usize| n > 0)
}
fn int<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| "an integer".to_string())
}
fn boolean(v: &str) -> bool {
    matches!(v, "1" | "true" | "yes" | "on")
}

/// The options, in the order the docs list them.
pub const OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "intra_op_threads",
        kind: Kind::Int { min: 0, max: 1024 },
        default: "0",
        doc: "threads inside one operator; 0 = ONNX Runtime's default (one per physical core)",
        apply: |m, v| Ok(m.session.intra_threads = threads(v)),
    },
    OptionSpec {
        key: "inter_op_threads",
        kind: Kind::Int { min: 0, max: 1024 },
        default: "0",
        doc: "threads across operators; 0 = ONNX Runtime's default",
        apply: |m, v| Ok(m.session.inter_threads = threads(v)),
    },
    OptionSpec {
        key: "graph_optimization_level",
        kind: Kind::Enum(&["disable", "basic", "extended", "all"]),
        default: "all",
        doc: "how far ONNX Runtime rewrites the graph before running it",
        apply: |m, v| {
            m.session.opt_level = Some(match v {
                "disable" => OptLevel::Disable,
                "basic" => OptLevel::Basic,
                "extended" => OptLevel::Extended,
                "all" => OptLevel::All,
                _ => return Err(v.into()),
            });
            Ok(())
        },
    },
    OptionSpec {
        key: "ort_library",
        kind: Kind::Path,
        default: "see \"How ONNX Runtime is found\"",
        doc: "path of libonnxruntime.so to load (one runtime serves the whole process)",
        apply: |m, v| Ok(m.session.ort_library = Some(PathBuf::from(v))),
    },
    OptionSpec {
        key: "backend",
        kind: Kind::Enum(&["onnxruntime", "openvino"]),
        default: "onnxruntime",
        doc: "the runtime that runs the model: ONNX Runtime, or OpenVINO (bf16 on AMX/AVX512_BF16 CPUs, Intel GPU/NPU; see \"The OpenVINO backend\")",
        apply: |m, v| {
            m.backend.backend = match v {
                "onnxruntime" => Backend::OnnxRuntime,
                "openvino" => Backend::OpenVino,
                _ => return Err(v.into()),
            };
            Ok(())
        },
    },
    OptionSpec {
        key: "precision",
        kind: Kind::Enum(&["fp32", "bf16", "fp16"]),
        default: "fp32",
        doc: "float precision of the computation, on every backend: fp32 is timm-exact; bf16/fp16 on OpenVINO (CPU bf16 needs AMX or AVX512_BF16), fp16 on ONNX Runtime is TensorRT's fp16",
        apply: |m, v| {
            m.backend.precision = match v {
                "fp32" => Precision::Fp32,
                "bf16" => Precision::Bf16,
                "fp16" => Precision::Fp16,
                _ => return Err(v.into()),
            };
            Ok(())
        },
    },
    OptionSpec {
        key: "device",
        kind: Kind::Enum(&["cpu", "gpu", "npu", "auto"]),
        default: "cpu",
        doc: "OpenVINO's device for backend=openvino: CPU, an Intel GPU or NPU, or OpenVINO's AUTO choice",
        apply: |m, v| {
            m.backend.device = match v {
                "cpu" => OvDevice::Cpu,
                "gpu" => OvDevice::Gpu,
                "npu" => OvDevice::Npu,
                "auto" => OvDevice::Auto,
                _ => return Err(v.into()),
            };
            Ok(())
        },
    },
    OptionSpec {
        key: "openvino_library",
        kind: Kind::Path,
        default: "see \"The OpenVINO backend\"",
        doc: "path of OpenVINO's libopenvino_c.so to load for backend=openvino (one runtime serves the whole process)",
        apply: |m, v| Ok(m.backend.openvino_library = Some(PathBuf::from(v))),
    },
    OptionSpec {
        key: "output",
        kind: Kind::Enum(&["logits", "features", "feature_maps", "tokens"]),
        default: "logits",
        doc: "what the model returns: class logits, timm's pooled features (forward_head(pre_logits=True)), timm's features_only backbone maps (timm_infer_outputs), or an encoder tower's token sequence [N, T, D] (the forward of the *_enc VLM towers, which have no classifier; timm_infer writes it as N rows of T*D)",
        apply: |m, v| {
            m.output = match v {
                "logits" => OutputKind::Logits,
                "features" => OutputKind::Features,
                "feature_maps" => OutputKind::FeatureMaps,
                "tokens" => OutputKind::Tokens,
                _ => return Err(v.into()),
            };
            Ok(())
        },
    },
    OptionSpec {
        key: "out_indices",
        kind: Kind::Text,
        default: "timm's for the architecture",
        doc: "output=feature_maps: comma list of feature_info indices, negative ones counted from the end (timm's out_indices)",
        apply: |m, v| {
            let idx: Option<Vec<i64>> = v
                .split(',')
                .map(|t| t.trim().parse().ok().filter(|i: &i64| i.unsigned_abs() < 1024))
                .collect();
            m.out_indices = Some(
                idx.filter(|i| !i.is_empty())
                    .ok_or("a comma list of integers such as 1,2,3 or -1")?,
            );
            Ok(())
        },
    },
    OptionSpec {
        key: "output_stride",
        kind: Kind::Int { min: 8, max: 32 },
        default: "32",
        doc: "8, 16 or 32: dilate the last stages as timm's output_stride does (families that implement it)",
        apply: |m, v| {
            let s: usize = int(v)?;
            if ![8, 16, 32].contains(&s) {
                return Err("8, 16 or 32".into());
            }
            Ok(m.output_stride = Some(s))
        },
    },
    OptionSpec {
        key: "dynamic_img_size",
        kind: Kind::Bool,
        default: "false",
        doc: "ViT-style models take any input size, position embeddings resampled per call as timm's dynamic_img_size=True",
        apply: |m, v| Ok(m.dynamic_img_size = boolean(v)),
    },
    OptionSpec {
        key: "input_size",
        kind: Kind::Text,
        default: "the config's input_size",
        doc: "HxW: build and preprocess at this size (position embeddings resampled once at load, like timm's img_size=)",
        apply: |m, v| {
            let parsed = v.to_ascii_lowercase().split_once('x').and_then(|(h, w)| {
                let h: usize = h.trim().parse().ok()?;
                let w: usize = w.trim().parse().ok()?;
                ((1..=8192).contains(&h) && (1..=8192).contains(&w)).then_some((h, w))
            });
            Ok(m.input_size = Some(parsed.ok_or("HxW with 1..=8192 pixels each, e.g. 384x384")?))
        },
    },
    OptionSpec {
        key: "max_params",
        kind: Kind::Int { min: 1, max: U64 },
        default: "4000000000",
        doc: "largest parameter count a config.json may describe before it is refused (checked before anything is allocated)",
        apply: |m, v| Ok(m.max_params = int(v)?),
    },
    OptionSpec {
        key: "graph",
        kind: Kind::Enum(&["auto", "native", "onnx"]),
        default: "auto",
        doc: "which graph runs: auto = the folder's model.onnx when present, else the native graph",
        apply: |m, v| {
            m.graph = match v {
                "auto" => GraphChoice::Auto,
                "native" => GraphChoice::Native,
                "onnx" => GraphChoice::Onnx,
                _ => return Err(v.into()),
            };
            Ok(())
        },
    },
    OptionSpec {
        key: "seed",
        kind: Kind::Int { min: 0, max: U64 },
        default: "0",
        doc: "seed of the random weights of pretrained=false models",
        apply: |m, v| Ok(m.seed = int(v)?),
    },
    OptionSpec {
        key: "use_test_size",
        kind: Kind::Bool,
        default: "false",
        doc: "preprocess at the config's test_input_size / test_crop_pct when it has them (timm's validate.py default)",
        apply: |m, v| Ok(m.use_test_size = boolean(v)),
    },
    OptionSpec {
        key: "weights_memory",
        kind: Kind::Enum(&["copy", "map"]),
        default: "copy",
        doc: "copy: weights are read into memory ONNX Runtime owns, the files may change afterwards; map: zero-copy views of a shared mapping, the files must not change while the model lives",
        apply: |m, v| {
            m.weights_mode = match v {
                "copy" => WeightsMode::Copy,
                "map" => WeightsMode::Map,
                _ => return Err(v.into()),
            };
            Ok(())
        },
    },
    OptionSpec {
        key: "cache_dir",
        kind: Kind::Path,
        default: "HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub",
        doc: "Hugging Face cache folder for hf-hub: specs",
        apply: |m, v| Ok(m.hub.cache_dir = Some(PathBuf::from(v))),
    },
    OptionSpec {
        key: "graph_cache",
        kind: Kind::Bool,
        default: "true",
        doc: "cache ONNX Runtime's optimised graph of a native model (CPU) so later loads map it instead of rebuilding",
        apply: |m, v| Ok(m.session.graph_cache.enabled = boolean(v)),
    },
    OptionSpec {
        key: "graph_cache_dir",
        kind: Kind::Path,
        default: "XDG_CACHE_HOME/timm/graphs or ~/.cache/timm/graphs",
        doc: "folder of the optimised-graph cache",
        apply: |m, v| Ok(m.session.graph_cache.dir = Some(PathBuf::from(v))),
    },
    OptionSpec {
        key: "graph_cache_max_mb",
        kind: Kind::Int { min: 1, max: 1 << 40 },
        default: "8192",
        doc: "bound of the optimised-graph cache in MiB; least recently used entries go first",
        apply: |m, v| Ok(m.session.graph_cache.max_bytes = int::<u64>(v)? << 20),
    },
    OptionSpec {
        key: "offline",
        kind: Kind::Bool,
        default: "HF_HUB_OFFLINE",
        doc: "never use the network for hf-hub: specs",
        apply: |m, v| Ok(m.hub.offline = Some(boolean(v))),
    },
    OptionSpec {
        key: "endpoint",
        kind: Kind::Url,
        default: "HF_ENDPOINT or https://huggingface.co",
        doc: "Hugging Face endpoint URL",
        apply: |m, v| Ok(m.hub.endpoint = Some(v.to_string())),
    },
    OptionSpec {
        key: "token",
        kind: Kind::Text,
        default: "HF_TOKEN or the saved token file",
        doc: "Hugging Face access token; empty = none",
        apply: |m, v| Ok(m.hub.token = Some(v.to_string())),
    },
    OptionSpec {
        key: "providers",
        kind: Kind::List(&["tensorrt", "cuda", "cpu"]),
        default: "cpu",
        doc: "execution providers in priority order, cpu last; GPU providers need the onnxruntime-gpu runtime (docs/GPU.md)",
        apply: |m, v| {
            m.session.providers.providers = providers::parse_list(v)
                .map_err(|why| format!("a comma list of tensorrt, cuda, cpu ({why})"))?;
            Ok(())
        },
    },
    OptionSpec {
        key: "device_id",
        kind: Kind::Int { min: 0, max: 1023 },
        default: "0",
        doc: "CUDA device ordinal for cuda and tensorrt",
        apply: |m, v| Ok(m.session.providers.device_id = int(v)?),
    },
    OptionSpec {
        key: "strict_providers",
        kind: Kind::Bool,
        default: "false",
        doc: "fail instead of falling back when a requested GPU provider cannot be used or nodes would run on the CPU",
        apply: |m, v| Ok(m.session.providers.strict = boolean(v)),
    },
    OptionSpec {
        key: "cuda_mem_limit",
        kind: Kind::Int { min: 1, max: U64 },
        default: "no limit",
        doc: "CUDA provider memory arena limit in bytes",
        apply: |m, v| Ok(m.session.providers.cuda_mem_limit = Some(int(v)?)),
    },
    OptionSpec {
        key: "cudnn_conv_algo_search",
        kind: Kind::Enum(&["exhaustive", "heuristic", "default"]),
        default: "exhaustive",
        doc: "how cuDNN picks convolution algorithms",
        apply: |m, v| {
            m.session.providers.cudnn_conv_algo_search = Some(match v {
                "exhaustive" => ConvAlgoSearch::Exhaustive,
                "heuristic" => ConvAlgoSearch::Heuristic,
                "default" => ConvAlgoSearch::Default,
                _ => return Err(v.into()),
            });
            Ok(())
        },
    },
    OptionSpec {
        key: "trt_fp16",
        kind: Kind::Bool,
        default: "false",
        doc: "let TensorRT run in float16 (an alias of precision=fp16 for TensorRT)",
        apply: |m, v| Ok(m.session.providers.trt_fp16 = boolean(v)),
    },
    OptionSpec {
        key: "trt_engine_cache_dir",
        kind: Kind::Path,
        default: "none: engines are rebuilt per process",
        doc: "folder for TensorRT engines and timing caches, kept per model, GPU and version",
        apply: |m, v| Ok(m.session.providers.trt_engine_cache_dir = Some(PathBuf::from(v))),
    },
    OptionSpec {
        key: "trt_workspace_size",
        kind: Kind::Int { min: 1, max: U64 },
        default: "TensorRT's",
        doc: "TensorRT workspace limit in bytes",
        apply: |m, v| Ok(m.session.providers.trt_workspace_size = Some(int(v)?)),
    },
    OptionSpec {
        key: "max_batch",
        kind: Kind::Int { min: 1, max: 4096 },
        default: "32",
        doc: "largest batch of the TensorRT optimisation profile",
        apply: |m, v| Ok(m.session.providers.max_batch = int(v)?),
    },
    OptionSpec {
        key: "export_external_data",
        kind: Kind::Bool,
        default: "false",
        doc: "exported ONNX files keep their weights in a `.data` file beside them (always so above 2 GB)",
        apply: |m, v| Ok(m.export_external_data = boolean(v)),
    },
    OptionSpec {
        key: "load_truncated_images",
        kind: Kind::Bool,
        default: "false",
        doc: "decode a JPEG file whose data ends early instead of refusing it (Pillow's ImageFile.LOAD_TRUNCATED_IMAGES)",
        apply: |m, v| Ok(m.load_truncated_images = boolean(v)),
    },
];

/// The row of `key`.
pub fn find(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.key == key)
}

impl Kind {
    /// What a value must look like, for messages and docs.
    pub fn expected(&self) -> String {
        match self {
            Kind::Int { min, max: U64 } => format!("an integer >= {min}"),
            Kind::Int { min, max } => format!("an integer in {min}..={max}"),
            Kind::Bool => "true or false".into(),
            Kind::Enum(values) => format!("one of {}", values.join(", ")),
            Kind::List(values) => format!("a comma list of {}", values.join(", ")),
            Kind::Path => "a non-empty path".into(),
            Kind::Text => "any text".into(),
            Kind::Url => "an http:// or https:// URL".into(),
        }
    }
}

/// Checks `value` against the row's type and returns it normalised (trimmed; enum, list and
/// boolean words lower-cased), ready for `apply`.
pub fn check(spec: &OptionSpec, value: &str) -> Result<String, String> {
    let expected = || spec.kind.expected();
    match spec.kind {
        Kind::Int { min, max } => {
            let n: u64 = value.trim().parse().map_err(|_| expected())?;
            if n < min || n > max {
                return Err(expected());
            }
            Ok(n.to_string())
        }
        Kind::Bool => {
            let v = value.trim().to_ascii_lowercase();
            match v.as_str() {
                "1" | "true" | "yes" | "on" | "0" | "false" | "no" | "off" => Ok(v),
                _ => Err(expected()),
            }
        }
        Kind::Enum(values) => {
            let v = value.trim().to_ascii_lowercase();
            if values.contains(&v.as_str()) {
                Ok(v)
            } else {
                Err(expected())
            }
        }
        Kind::List(values) => {
            let v = value.to_ascii_lowercase();
            let items: Vec<&str> = v.split(',').map(str::trim).collect();
            for (i, item) in items.iter().enumerate() {
                if item.is_empty() {
                    return Err(format!("{} (an empty entry)", expected()));
                }
                if !values.contains(item) {
                    return Err(format!("{} (unknown `{item}`)", expected()));
                }
                if items[..i].contains(item) {
                    return Err(format!("{} (`{item}` twice)", expected()));
                }
            }
            Ok(items.join(","))
        }
        Kind::Path => {
            if value.is_empty() {
                Err(expected())
            } else {
                Ok(value.to_string())
            }
        }
        Kind::Text => Ok(value.to_string()),
        Kind::Url => {
            if value.starts_with("https://") || value.starts_with("http://") {
                Ok(value.to_string())
            } else {
                Err(expected())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_snake_case() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(
                o.key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                o.key
            );
            assert!(
                OPTIONS[..i].iter().all(|p| p.key != o.key),
                "{} twice",
                o.key
            );
        }
    }

    #[test]
    fn every_allowed_word_is_applied() {
        for o in OPTIONS {
            if let Kind::Enum(words) | Kind::List(words) = o.kind {
                for w in words {
                    let mut m = ModelOptions::default();
                    // `cpu` alone is a valid list; a GPU provider is valid before it.
                    let v = if matches!(o.kind, Kind::List(_)) && *w != "cpu" {
                        format!("{w},cpu")
                    } else {
                        w.to_string()
                    };
                    let v = check(o, &v).unwrap();
                    (o.apply)(&mut m, &v).unwrap_or_else(|e| panic!("{}={w}: {e}", o.key));
                }
            }
        }
    }

    #[test]
    fn every_default_that_is_a_value_passes_the_check() {
        for o in OPTIONS {
            let is_value = match o.kind {
                Kind::Int { .. } => o.default.parse::<u64>().is_ok(),
                Kind::Bool => matches!(o.default, "true" | "false"),
                Kind::Enum(w) | Kind::List(w) => w.contains(&o.default),
                _ => false,
            };
            if is_value {
                let v = check(o, o.default).unwrap();
                (o.apply)(&mut ModelOptions::default(), &v).unwrap();
            }
        }
    }
}
