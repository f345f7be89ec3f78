//! timm's `config.json`: the architecture, its arguments and the pretrained cfg that drives
//! preprocessing and labels.
//!
//! Parsing follows timm 1.0.31 `_hub.py::_parse_model_cfg`: the nested form (`architecture`,
//! `num_classes`, `num_features`, `global_pool`, `model_args`, `pretrained_cfg`, root
//! `label_names` / `label_descriptions`) and the legacy flat form (no `pretrained_cfg`: the cfg
//! itself, with `architecture` popped out and `labels` renamed `label_names`). Root `num_classes`,
//! `label_names`, `label_descriptions` override those inside `pretrained_cfg`. Folders written by
//! transformers' `TimmWrapper` (extra keys, `"model_args": null`) parse the same way.
//!
//! Values are checked against sane bounds so a hostile file cannot ask for absurd allocations.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// config.json files larger than this are refused before reading (a real one is a few hundred KB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest accepted spatial input side and class count.
pub const MAX_INPUT_SIDE: usize = 8192;
pub const MAX_CHANNELS: usize = 16;
pub const MAX_CLASSES: usize = 1 << 20;

pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// timm's pretrained cfg, with timm's defaults filled in where the file is silent.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedCfg {
    pub input_size: [usize; 3],
    pub test_input_size: Option<[usize; 3]>,
    pub min_input_size: Option<[usize; 3]>,
    pub fixed_input_size: bool,
    pub interpolation: String,
    pub crop_pct: f64,
    pub test_crop_pct: Option<f64>,
    pub crop_mode: String,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub num_classes: Option<usize>,
    pub label_offset: Option<i64>,
    pub pool_size: Option<Vec<usize>>,
    pub first_conv: Option<String>,
    pub classifier: Option<String>,
    pub tag: Option<String>,
    pub license: Option<String>,
    /// The whole object as written, for `timm_model_config_json` and fields we do not model.
    pub raw: Map<String, Value>,
}

/// A parsed config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    pub num_classes: usize,
    pub num_features: Option<usize>,
    pub global_pool: Option<String>,
    pub model_args: Map<String, Value>,
    pub pretrained_cfg: PretrainedCfg,
    /// One entry per class index; `None` where the file has a gap or no labels at all.
    pub label_names: Vec<Option<String>>,
    pub label_descriptions: BTreeMap<String, String>,
}

impl ModelConfig {
    /// Reads and parses `<dir>/config.json`; a missing file is an error (never guess preprocessing).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let bytes = crate::files::read_capped(
            &path,
            "model config",
            MAX_CONFIG_BYTES,
            Error::invalid_model,
        )
        .map_err(|e| {
            if e.status() == crate::TimmStatus::TIMM_ERR_NOT_FOUND {
                e.context("every model folder needs timm's config.json (written by save_for_hf / push_to_hub)")
            } else {
                e
            }
        })?;
        Self::parse(&bytes).map_err(|e| e.context(path.display()))
    }

    /// Parses config.json bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(Error::invalid_model("config.json is too large"));
        }
        // serde_json refuses nesting deeper than 128 levels with an error, not a stack overflow.
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid_model(format!("config.json is not valid JSON: {e}")))?;
        let Value::Object(mut root) = value else {
            return Err(Error::invalid_model("config.json must hold a JSON object"));
        };

        // Legacy flat form: the object is the pretrained cfg itself.
        if !root.contains_key("pretrained_cfg") {
            let mut pcfg = root;
            let architecture = pcfg.remove("architecture").unwrap_or(Value::Null);
            let num_features = pcfg.remove("num_features").unwrap_or(Value::Null);
            if let Some(labels) = pcfg.remove("labels") {
                pcfg.insert("label_names".into(), labels);
            }
            root = Map::new();
            root.insert("architecture".into(), architecture);
            root.insert("num_features".into(), num_features);
            root.insert("pretrained_cfg".into(), Value::Object(pcfg));
        }

        let architecture = match root.get("architecture") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s.clone(),
            Some(Value::String(_)) => {
                return Err(Error::invalid_model(
                    "config.json `architecture` is empty or too long",
                ))
            }
            None | Some(Value::Null) => {
                return Err(Error::invalid_model("config.json has no `architecture`"))
            }
            Some(other) => return Err(type_error("architecture", "a string", other)),
        };

        let mut pcfg = match root.remove("pretrained_cfg") {
            Some(Value::Object(m)) => m,
            Some(other) => return Err(type_error("pretrained_cfg", "an object", &other)),
            None => Map::new(),
        };
        // Root overrides, as timm applies them.
        for key in ["num_classes", "label_names", "label_descriptions"] {
            if let Some(v) = root.get(key) {
                if !v.is_null() || key != "num_classes" {
                    pcfg.insert(key.into(), v.clone());
                }
            }
        }

        let model_args = match root.get("model_args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => return Err(type_error("model_args", "an object or null", other)),
        };

        let mut pretrained_cfg = PretrainedCfg::parse(pcfg)?;
        apply_model_args(&mut pretrained_cfg, &model_args)?;

        let num_classes = match pretrained_cfg.num_classes {
            Some(n) => n,
            None => return Err(Error::invalid_model("config.json gives no `num_classes`")),
        };
        let num_features = opt_usize(&root, "num_features", MAX_CLASSES)?;
        let global_pool = match root.get("global_pool") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(type_error("global_pool", "a string", other)),
        };

        let label_names = parse_label_names(pretrained_cfg.raw.get("label_names"), num_classes)?;
        let label_descriptions = match pretrained_cfg.raw.get("label_descriptions") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => {
                if m.len() > MAX_CLASSES {
                    return Err(Error::invalid_model(
                        "config.json `label_descriptions` has too many entries",
                    ));
                }
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => {
                            return Err(type_error("label_descriptions values", "strings", other))
                        }
                    }
                }
                out
            }
            Some(other) => return Err(type_error("label_descriptions", "an object", other)),
        };

        Ok(ModelConfig {
            architecture,
            num_classes,
            num_features,
            global_pool,
            model_args,
            pretrained_cfg,
            label_names,
            label_descriptions,
        })
    }

    /// The description for class `index`, looked up by its label name (timm keys descriptions by name).
    pub fn label_description(&self, index: usize) -> Option<&str> {
        let name = self.label_names.get(index)?.as_deref()?;
        self.label_descriptions.get(name).map(String::as_str)
    }

    /// The resolved config as JSON: what this library will use, defaults filled in.
    pub fn resolved_json(&self) -> Value {
        let p = &self.pretrained_cfg;
        let mut pc = p.raw.clone();
        pc.remove("label_names");
        pc.remove("label_descriptions");
        let mut set = |k: &str, v: Value| {
            pc.insert(k.to_string(), v);
        };
        set("input_size", serde_json::json!(p.input_size));
        set("interpolation", Value::from(p.interpolation.clone()));
        set("crop_pct", serde_json::json!(p.crop_pct));
        set("crop_mode", Value::from(p.crop_mode.clone()));
        set("mean", serde_json::json!(p.mean));
        set("std", serde_json::json!(p.std));
        set("fixed_input_size", Value::from(p.fixed_input_size));
        set("num_classes", Value::from(self.num_classes));
        let labels: Vec<Value> = self
            .label_names
            .iter()
            .map(|l| l.as_ref().map_or(Value::Null, |s| Value::from(s.as_str())))
            .collect();
        let has_labels = self.label_names.iter().any(Option::is_some);
        serde_json::json!({
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "num_features": self.num_features,
            "global_pool": self.global_pool,
            "model_args": self.model_args,
            "pretrained_cfg": pc,
            "label_names": if has_labels { Value::Array(labels) } else { Value::Null },
            "label_descriptions": self.label_descriptions,
        })
    }
}

impl PretrainedCfg {
    fn parse(raw: Map<String, Value>) -> Result<Self> {
        let input_size = opt_size3(&raw, "input_size")?.unwrap_or([3, 224, 224]);
        let channels = input_size[0];
        let mean = opt_f64_vec(&raw, "mean")?.unwrap_or_else(|| IMAGENET_MEAN.to_vec());
        let std = opt_f64_vec(&raw, "std")?.unwrap_or_else(|| IMAGENET_STD.to_vec());
        for (name, v) in [("mean", &mean), ("std", &std)] {
            if v.len() != channels && v.len() != 1 {
                return Err(Error::invalid_model(format!(
                    "config.json `{name}` has {} values for {channels} input channels",
                    v.len()
                )));
            }
        }
        if std.contains(&0.0) {
            return Err(Error::invalid_model("config.json `std` contains 0"));
        }
        let crop_pct = opt_f64(&raw, "crop_pct")?.unwrap_or(0.875);
        check_crop_pct("crop_pct", crop_pct)?;
        let test_crop_pct = opt_f64(&raw, "test_crop_pct")?;
        if let Some(c) = test_crop_pct {
            check_crop_pct("test_crop_pct", c)?;
        }
        let interpolation = opt_string(&raw, "interpolation")?.unwrap_or_else(|| "bicubic".into());
        let crop_mode = opt_string(&raw, "crop_mode")?.unwrap_or_else(|| "center".into());
        if !matches!(crop_mode.as_str(), "center" | "squash" | "border") {
            return Err(Error::invalid_model(format!(
                "config.json `crop_mode` is `{crop_mode}`; timm knows `center`, `squash` and `border`"
            )));
        }
        let fixed_input_size = match raw.get("fixed_input_size") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(type_error("fixed_input_size", "a boolean", other)),
        };
        let pool_size = match raw.get("pool_size") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.len() <= 3 => Some(
                a.iter()
                    .map(|v| as_usize(v, "pool_size", MAX_INPUT_SIDE))
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(other) => return Err(type_error("pool_size", "a short array of integers", other)),
        };
        let label_offset = match raw.get("label_offset") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|o| o.abs() <= 16)
                    .ok_or_else(|| type_error("label_offset", "a small integer", v))?,
            ),
        };
        Ok(PretrainedCfg {
            input_size,
            test_input_size: opt_size3(&raw, "test_input_size")?,
            min_input_size: opt_size3(&raw, "min_input_size")?,
            fixed_input_size,
            interpolation,
            crop_pct,
            test_crop_pct,
            crop_mode,
            mean,
            std,
            num_classes: opt_usize(&raw, "num_classes", MAX_CLASSES)?,
            label_offset,
            pool_size,
            first_conv: module_names(&raw, "first_conv"),
            classifier: module_names(&raw, "classifier"),
            tag: module_names(&raw, "tag"),
            license: module_names(&raw, "license"),
            raw,
        })
    }
}

/// timm rewrites the pretrained cfg from `model_args` that change the input (in_chans, img_size,
/// dynamic sizes); do the same so preprocessing matches the weights.
fn apply_model_args(p: &mut PretrainedCfg, args: &Map<String, Value>) -> Result<()> {
    let truthy = |k: &str| args.get(k).is_some_and(|v| v.as_bool() == Some(true));
    if truthy("dynamic_img_size")
        || args.get("strict_img_size") == Some(&Value::Bool(false))
        || truthy("use_naflex")
    {
        p.fixed_input_size = false;
    }
    if let Some(v) = args.get("in_chans").filter(|v| !v.is_null()) {
        let c = as_usize(v, "model_args.in_chans", MAX_CHANNELS)?;
        if c == 0 {
            return Err(Error::invalid_model(
                "config.json `model_args.in_chans` is 0",
            ));
        }
        p.input_size[0] = c;
        if let Some(t) = p.test_input_size.as_mut() {
            t[0] = c;
        }
        if let Some(t) = p.min_input_size.as_mut() {
            t[0] = c;
        }
    }
    if let Some(v) = args.get("img_size").filter(|v| !v.is_null()) {
        if p.fixed_input_size {
            let (h, w) = match v {
                Value::Array(a) if a.len() == 2 => (
                    as_usize(&a[0], "model_args.img_size", MAX_INPUT_SIDE)?,
                    as_usize(&a[1], "model_args.img_size", MAX_INPUT_SIDE)?,
                ),
                other => {
                    let s = as_usize(other, "model_args.img_size", MAX_INPUT_SIDE)?;
                    (s, s)
                }
            };
            if h == 0 || w == 0 {
                return Err(Error::invalid_model(
                    "config.json `model_args.img_size` is 0",
                ));
            }
            p.input_size = [p.input_size[0], h, w];
        }
    }
    Ok(())
}

fn parse_label_names(v: Option<&Value>, num_classes: usize) -> Result<Vec<Option<String>>> {
    let mut out = vec![None; num_classes];
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            if a.len() > num_classes {
                return Err(Error::invalid_model(format!(
                    "config.json has {} label names for {num_classes} classes",
                    a.len()
                )));
            }
            for (i, item) in a.iter().enumerate() {
                out[i] = match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => return Err(type_error("label_names entries", "strings", other)),
                };
            }
        }
        // A dict index→name, used when some classes have no name.
        Some(Value::Object(m)) => {
            for (k, item) in m {
                let idx: usize = k.parse().map_err(|_| {
                    Error::invalid_model(format!(
                        "config.json `label_names` key `{k}` is not a class index"
                    ))
                })?;
                if idx >= num_classes {
                    return Err(Error::invalid_model(format!(
                        "config.json `label_names` has index {idx} but the model has {num_classes} classes"
                    )));
                }
                out[idx] = match item {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => return Err(type_error("label_names entries", "strings", other)),
                };
            }
        }
        Some(other) => return Err(type_error("label_names", "a list or an object", other)),
    }
    Ok(out)
}

fn check_crop_pct(name: &str, c: f64) -> Result<()> {
    if !(c.is_finite() && c > 0.0 && c <= 10.0) {
        return Err(Error::invalid_model(format!(
            "config.json `{name}` is {c}; expected a number in (0, 10]"
        )));
    }
    Ok(())
}

fn type_error(key: &str, expected: &str, got: &Value) -> Error {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Error::invalid_model(format!(
        "config.json `{key}` must be {expected}, not {kind}"
    ))
}

fn as_usize(v: &Value, key: &str, max: usize) -> Result<usize> {
    let n = v
        .as_u64()
        .ok_or_else(|| type_error(key, "a non-negative integer", v))?;
    if n as u128 > max as u128 {
        return Err(Error::invalid_model(format!(
            "config.json `{key}` is {n}; the limit is {max}"
        )));
    }
    Ok(n as usize)
}

fn opt_usize(m: &Map<String, Value>, key: &str, max: usize) -> Result<Option<usize>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_usize(v, key, max).map(Some),
    }
}

fn opt_f64(m: &Map<String, Value>, key: &str) -> Result<Option<f64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| type_error(key, "a number", v)),
    }
}

/// An informational name field (`first_conv`, `classifier`, `tag`, `license`). timm writes a
/// list where a model has several (DeiT's two heads, the stems of FastViT / MobileOne / RepVGG
/// re-parameterised convs) and never reads them at inference, so any form is accepted: a string,
/// the first string of a list, or nothing.
fn module_names(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a.iter().find_map(|v| v.as_str().map(str::to_string)),
        _ => None,
    }
}

fn opt_string(m: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(type_error(key, "a string", other)),
    }
}

fn opt_f64_vec(m: &Map<String, Value>, key: &str) -> Result<Option<Vec<f64>>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_CHANNELS => {
            let v = a
                .iter()
                .map(|x| {
                    x.as_f64()
                        .ok_or_else(|| type_error(key, "an array of numbers", x))
                })
                .collect::<Result<Vec<_>>>()?;
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::invalid_model(format!(
                    "config.json `{key}` holds a non-finite number"
                )));
            }
            Ok(Some(v))
        }
        // timm also writes a bare number for single-channel models.
        Some(Value::Number(n)) => {
            Ok(Some(vec![n.as_f64().unwrap_or(f64::NAN)]).filter(|v| v[0].is_finite()))
        }
        Some(other) => Err(type_error(key, "an array of 1 to 16 numbers", other)),
    }
}

fn opt_size3(m: &Map<String, Value>, key: &str) -> Result<Option<[usize; 3]>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if a.len() == 3 => {
            let c = as_usize(&a[0], key, MAX_CHANNELS)?;
            let h = as_usize(&a[1], key, MAX_INPUT_SIDE)?;
            let w = as_usize(&a[2], key, MAX_INPUT_SIDE)?;
            if c == 0 || h == 0 || w == 0 {
                return Err(Error::invalid_model(format!(
                    "config.json `{key}` has a zero dimension"
                )));
            }
            Ok(Some([c, h, w]))
        }
        Some(Value::Array(a)) => Err(Error::invalid_model(format!(
            "config.json `{key}` has {} entries; expected [channels, height, width]",
            a.len()
        ))),
        Some(other) => Err(type_error(key, "an array [channels, height, width]", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimmStatus;

    fn parse(s: &str) -> Result<ModelConfig> {
        ModelConfig::parse(s.as_bytes())
    }

    #[test]
    fn nested_form_with_root_overrides() {
        let c = parse(
            r#"{"architecture":"resnet50","num_classes":3,"num_features":2048,"global_pool":"avg",
                "pretrained_cfg":{"num_classes":1000,"input_size":[3,256,256],"crop_pct":0.95,
                  "mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5],"label_names":["x","y","z"]},
                "label_names":["a","b","c"],"label_descriptions":{"a":"an a"}}"#,
        )
        .unwrap();
        assert_eq!(c.architecture, "resnet50");
        assert_eq!(c.num_classes, 3);
        assert_eq!(c.num_features, Some(2048));
        assert_eq!(c.pretrained_cfg.input_size, [3, 256, 256]);
        assert_eq!(c.pretrained_cfg.crop_pct, 0.95);
        assert_eq!(
            c.label_names,
            vec![Some("a".into()), Some("b".into()), Some("c".into())]
        );
        assert_eq!(c.label_description(0), Some("an a"));
        assert_eq!(c.label_description(1), None);
    }

    #[test]
    fn list_valued_name_fields_are_accepted_as_timm_writes_them() {
        // FastViT / MobileOne / RepVGG folders list several first convs; DeiT two classifiers.
        let c = parse(
            r#"{"architecture":"fastvit_t8","num_classes":1000,"pretrained_cfg":{
                "first_conv":["stem.0.conv_kxk.0.conv","stem.0.conv_scale.conv"],
                "classifier":["head","head_dist"],"tag":["a"],"license":{"x":1}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.pretrained_cfg.first_conv.as_deref(),
            Some("stem.0.conv_kxk.0.conv")
        );
        assert_eq!(c.pretrained_cfg.classifier.as_deref(), Some("head"));
        assert_eq!(c.pretrained_cfg.license, None);
    }

    #[test]
    fn defaults_follow_timm() {
        let c = parse(r#"{"architecture":"x","num_classes":10,"pretrained_cfg":{}}"#).unwrap();
        let p = &c.pretrained_cfg;
        assert_eq!(p.input_size, [3, 224, 224]);
        assert_eq!(p.interpolation, "bicubic");
        assert_eq!(p.crop_pct, 0.875);
        assert_eq!(p.crop_mode, "center");
        assert_eq!(p.mean, IMAGENET_MEAN.to_vec());
        assert_eq!(p.std, IMAGENET_STD.to_vec());
        assert_eq!(c.label_names, vec![None; 10]);
    }

    #[test]
    fn legacy_flat_form_renames_labels() {
        let c = parse(r#"{"architecture":"resnet18","num_classes":2,"num_features":512,"input_size":[3,100,120],"labels":["cat","dog"]}"#)
            .unwrap();
        assert_eq!(c.architecture, "resnet18");
        assert_eq!(c.num_features, Some(512));
        assert_eq!(c.pretrained_cfg.input_size, [3, 100, 120]);
        assert_eq!(c.label_names, vec![Some("cat".into()), Some("dog".into())]);
        assert!(!c.pretrained_cfg.raw.contains_key("architecture"));
    }

    #[test]
    fn label_dict_with_gaps() {
        let c = parse(r#"{"architecture":"x","num_classes":4,"pretrained_cfg":{},"label_names":{"0":"zero","3":"three"}}"#).unwrap();
        assert_eq!(
            c.label_names,
            vec![Some("zero".into()), None, None, Some("three".into())]
        );
        let e = parse(
            r#"{"architecture":"x","num_classes":4,"pretrained_cfg":{},"label_names":{"7":"x"}}"#,
        )
        .unwrap_err();
        assert!(e.message().contains("index 7"), "{e}");
    }

    #[test]
    fn transformers_wrapper_folder_parses() {
        let c = parse(
            r#"{"architecture":"resnet18","architectures":["TimmWrapperForImageClassification"],"model_type":"timm_wrapper",
                "dtype":"float32","transformers_version":"5.0.0","model_args":null,"num_classes":5,"pretrained_cfg":{"input_size":[3,64,64]}}"#,
        )
        .unwrap();
        assert!(c.model_args.is_empty());
        assert_eq!(c.num_classes, 5);
    }

    #[test]
    fn model_args_rewrite_input_size() {
        let c = parse(
            r#"{"architecture":"vit","num_classes":5,"model_args":{"in_chans":1,"img_size":96},
                "pretrained_cfg":{"input_size":[3,224,224],"fixed_input_size":true,"mean":[0.5],"std":[0.5]}}"#,
        )
        .unwrap();
        assert_eq!(c.pretrained_cfg.input_size, [1, 96, 96]);
    }

    #[test]
    fn hostile_values_are_rejected_with_reasons() {
        let cases = [
            (r#"[]"#, "JSON object"),
            (
                r#"{"num_classes":3,"pretrained_cfg":{}}"#,
                "no `architecture`",
            ),
            (
                r#"{"architecture":5,"num_classes":3,"pretrained_cfg":{}}"#,
                "must be a string",
            ),
            (
                r#"{"architecture":"x","num_classes":-1,"pretrained_cfg":{}}"#,
                "non-negative integer",
            ),
            (
                r#"{"architecture":"x","num_classes":1e12,"pretrained_cfg":{}}"#,
                "non-negative integer",
            ),
            (
                r#"{"architecture":"x","num_classes":99999999999,"pretrained_cfg":{}}"#,
                "limit",
            ),
            (r#"{"architecture":"x","pretrained_cfg":{}}"#, "num_classes"),
            (
                r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"input_size":[3,1000000000,224]}}"#,
                "limit",
            ),
            (
                r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"input_size":[3,0,224]}}"#,
                "zero",
            ),
            (
                r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"input_size":"big"}}"#,
                "input_size",
            ),
            (
                r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"crop_pct":-0.5}}"#,
                "crop_pct",
            ),
            (
                r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"mean":[0.5,0.5]}}"#,
                "mean",
            ),
            (
                r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"std":[0,1,1]}}"#,
                "std",
            ),
            (
                r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"crop_mode":"zoom"}}"#,
                "crop_mode",
            ),
            (
                r#"{"architecture":"x","num_classes":2,"pretrained_cfg":{},"label_names":["a","b","c"]}"#,
                "label names",
            ),
        ];
        for (json, needle) in cases {
            let e = parse(json).unwrap_err();
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_MODEL, "{json}");
            assert!(e.message().contains(needle), "{json}: {e}");
        }
        // NaN is not JSON; serde rejects it.
        assert!(parse(
            r#"{"architecture":"x","num_classes":3,"pretrained_cfg":{"mean":[NaN,1,1]}}"#
        )
        .is_err());
        // Deep nesting ends in an error, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&format!(
            r#"{{"architecture":"x","num_classes":1,"pretrained_cfg":{{}},"junk":{deep}}}"#
        ))
        .is_err());
    }
}
