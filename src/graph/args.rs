//! The one typed reader of config.json's `model_args` over timm's per-architecture defaults.
//!
//! A family declares its arguments once with [`timm_args!`]: a struct whose fields are timm's
//! keyword arguments with timm's defaults. Reading merges, as timm does, the entrypoint's
//! arguments (the generated table) under the saved `model_args`, converts each value with one
//! rule for bounds, and refuses any key the family does not implement as unsupported, naming
//! the key and its value — an argument is never silently ignored.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::{Map, Value as Json};

use crate::error::{Error, Result};

/// Integers in `model_args` are at most this (channels, depths, sizes).
pub const MAX_INT: u64 = 1 << 20;
/// Floats in `model_args` are finite and at most this in magnitude (ratios, scales, eps).
pub const MAX_FLOAT: f64 = 1e6;

/// Sizes, strides and head counts: 0 is no model (timm's torch modules fail on it, our arithmetic
/// would divide by it), so a 0 anywhere in their values is refused before anything is built.
const POSITIVE: &[&str] = &[
    "patch_size",
    "patch_sizes",
    "patch_stride",
    "num_heads",
    "heads",
    "window_size",
    "window_sizes",
    "transformer_window_size",
    "stride",
    "strides",
    "kernel_size",
    "kernel_sizes",
    "conv_kernel_size",
    "down_kernel_size",
    "downsample_kernel_size",
    "stem_kernel_size",
    "img_size",
    "sr_ratios",
];

/// Keyword arguments timm's model classes take that only affect training or initialisation:
/// they never change the inference graph.
pub const TRAINING_ONLY: &[&str] = &[
    "drop_rate",
    "drop_path_rate",
    "drop_block_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "pos_drop_rate",
    "patch_drop_rate",
    "weight_init",
    "fix_init",
    "zero_init_last",
    "head_init_scale",
    "head_init_bias",
    "init_values_scale",
    "pretrained_cfg_overlay",
    "pretrained_cfg",
    "pretrained_strict",
    "grad_checkpointing",
];

/// Whether a number in `v` (or in its arrays) is zero.
fn has_zero(v: &Json) -> bool {
    match v {
        Json::Number(n) => n.as_f64() == Some(0.0),
        Json::Array(items) => items.iter().any(has_zero),
        _ => false,
    }
}

/// `model_args` of one architecture: the generated defaults under config.json's values.
pub struct Args {
    arch: String,
    merged: Map<String, Json>,
    explicit: BTreeSet<String>,
    read: RefCell<BTreeSet<String>>,
}

impl Args {
    /// `defaults`: the entrypoint's arguments (from the family's table); `saved`: config.json.
    pub fn new(
        arch: &str,
        defaults: Option<&Map<String, Json>>,
        saved: &Map<String, Json>,
    ) -> Self {
        let mut merged = defaults.cloned().unwrap_or_default();
        for (k, v) in saved {
            merged.insert(k.clone(), v.clone());
        }
        Args {
            arch: arch.to_string(),
            merged,
            explicit: saved.keys().cloned().collect(),
            read: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `key`, or `default` when absent. `null` is a value (timm passes `None` through).
    pub fn get<T: FromArg>(&self, key: &str, default: T) -> Result<T> {
        self.read.borrow_mut().insert(key.to_string());
        match self.merged.get(key) {
            None => Ok(default),
            Some(v) if POSITIVE.contains(&key) && has_zero(v) => {
                Err(Error::invalid_model(format!(
                    "`{}`: model_args `{key}` = {v}: each size must be at least 1",
                    self.arch
                )))
            }
            Some(v) => T::from_arg(v).map_err(|want| self.bad(key, v, &want, T::kind_matches(v))),
        }
    }

    /// Whether config.json itself sets `key` (not only the architecture's defaults).
    pub fn explicit(&self, key: &str) -> bool {
        self.explicit.contains(key)
    }

    /// Whether `key` is set at all (defaults or config.json).
    pub fn has(&self, key: &str) -> bool {
        self.merged.contains_key(key)
    }

    /// The raw value, for arguments with several shapes (timm's block-definition strings).
    pub fn raw(&self, key: &str) -> Option<&Json> {
        self.read.borrow_mut().insert(key.to_string());
        self.merged.get(key)
    }

    /// Refuses an argument value this build does not implement.
    pub fn unsupported(&self, key: &str, why: &str) -> Error {
        let v = self
            .merged
            .get(key)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "(default)".into());
        Error::unsupported(format!(
            "`{}` with model_args {key} = {v}: {why}",
            self.arch
        ))
    }

    /// Refuses every argument the family never read and that is not training-only.
    pub fn finish(&self) -> Result<()> {
        let read = self.read.borrow();
        let unknown: Vec<String> = self
            .merged
            .iter()
            .filter(|(k, _)| !read.contains(*k) && !TRAINING_ONLY.contains(&k.as_str()))
            .filter(|(k, _)| !matches!(k.as_str(), "num_classes" | "global_pool" | "in_chans"))
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(Error::unsupported(format!(
            "`{}`: model_args {} not supported by the native graph",
            self.arch,
            unknown.join(", ")
        )))
    }

    /// A value of the right kind out of bounds is an invalid model; a value of another form
    /// (a list where this build takes a number, say) may be valid for timm and is unsupported.
    fn bad(&self, key: &str, v: &Json, want: &str, kind_matches: bool) -> Error {
        if kind_matches {
            Error::invalid_model(format!(
                "config.json model_args `{key}` of `{}` must be {want}, got {v}",
                self.arch
            ))
        } else {
            Error::unsupported(format!(
                "`{}`: model_args `{key}` = {v} is not a form the native graph implements (it takes {want})",
                self.arch
            ))
        }
    }
}

/// A `model_args` value type. The error is what was expected, for the message.
pub trait FromArg: Sized {
    fn from_arg(v: &Json) -> std::result::Result<Self, String>;
    /// Whether `v` is of the JSON kind this type reads (so a failure is a bound, not a form).
    fn kind_matches(v: &Json) -> bool {
        let _ = v;
        true
    }
}

impl FromArg for usize {
    fn kind_matches(v: &Json) -> bool {
        v.is_number()
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        v.as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .filter(|&n| n <= MAX_INT)
            .map(|n| n as usize)
            .ok_or_else(|| format!("an integer in 0..={MAX_INT}"))
    }
}

impl FromArg for i64 {
    fn kind_matches(v: &Json) -> bool {
        v.is_number()
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        v.as_i64()
            .filter(|n| n.unsigned_abs() <= MAX_INT)
            .ok_or_else(|| format!("an integer in -{MAX_INT}..={MAX_INT}"))
    }
}

impl FromArg for f64 {
    fn kind_matches(v: &Json) -> bool {
        v.is_number()
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() <= MAX_FLOAT)
            .ok_or_else(|| format!("a finite number of magnitude at most {MAX_FLOAT}"))
    }
}

impl FromArg for f32 {
    fn kind_matches(v: &Json) -> bool {
        v.is_number()
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        f64::from_arg(v).map(|f| f as f32)
    }
}

impl FromArg for bool {
    fn kind_matches(v: &Json) -> bool {
        v.is_boolean()
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        v.as_bool().ok_or_else(|| "true or false".to_string())
    }
}

impl FromArg for String {
    fn kind_matches(v: &Json) -> bool {
        v.is_string()
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| "a string (timm's name for it)".to_string())
    }
}

impl<T: FromArg> FromArg for Option<T> {
    fn kind_matches(v: &Json) -> bool {
        v.is_null() || T::kind_matches(v)
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        match v {
            Json::Null => Ok(None),
            v => T::from_arg(v).map(Some).map_err(|w| format!("null or {w}")),
        }
    }
}

/// A list; timm's `to_ntuple` also accepts one value for every entry, which [`PerStage`]
/// expands.
impl<T: FromArg> FromArg for Vec<T> {
    fn kind_matches(v: &Json) -> bool {
        v.as_array().is_some_and(|a| a.iter().all(T::kind_matches))
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        match v {
            Json::Array(a) => a
                .iter()
                .map(T::from_arg)
                .collect::<std::result::Result<_, _>>()
                .map_err(|w| format!("a list of {w}")),
            _ => Err("a list".to_string()),
        }
    }
}

/// A per-stage value: a list, or one value for every stage (timm's `to_ntuple`).
#[derive(Debug, Clone, PartialEq)]
pub enum PerStage<T> {
    Each(Vec<T>),
    All(T),
}

impl<T: Clone> PerStage<T> {
    /// The values for `n` stages; a list of another length is an error naming `key`.
    pub fn expand(&self, key: &str, n: usize) -> Result<Vec<T>> {
        match self {
            PerStage::All(v) => Ok(vec![v.clone(); n]),
            PerStage::Each(v) if v.len() == n => Ok(v.clone()),
            PerStage::Each(v) => Err(Error::invalid_model(format!(
                "model_args `{key}` has {} entries but the model has {n} stages",
                v.len()
            ))),
        }
    }
}

impl<T: FromArg> FromArg for PerStage<T> {
    fn kind_matches(v: &Json) -> bool {
        Vec::<T>::kind_matches(v) || T::kind_matches(v)
    }
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        match v {
            Json::Array(_) => Vec::<T>::from_arg(v).map(PerStage::Each),
            v => T::from_arg(v)
                .map(PerStage::All)
                .map_err(|w| format!("{w} or a list of them")),
        }
    }
}

/// A JSON value kept as it is (a nested config a family decodes itself).
impl FromArg for Json {
    fn from_arg(v: &Json) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}

/// Declares a family's arguments: `timm_args! { pub struct ResNetArgs { layers: Vec<usize> =
/// vec![2, 2, 2, 2], ... } }` gives the struct and `ResNetArgs::read(&Args)`, which reads every
/// field with its default and then refuses any other key of `model_args`.
#[macro_export]
macro_rules! timm_args {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name { $($(#[$fmeta])* pub $field: $ty,)* }

        impl $name {
            /// Reads every argument (timm's default when absent) and refuses unknown ones.
            pub fn read(a: &$crate::graph::args::Args) -> $crate::error::Result<Self> {
                let v = Self::read_only(a)?;
                a.finish()?;
                Ok(v)
            }

            /// Reads the declared arguments and leaves the check for unknown keys to the
            /// caller (for a family that reads more of them by hand).
            pub fn read_only(a: &$crate::graph::args::Args) -> $crate::error::Result<Self> {
                Ok($name { $($field: a.get(stringify!($field), $default)?,)* })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    timm_args! {
        struct Demo {
            depths: Vec<usize> = vec![2, 2],
            ratio: f64 = 4.0,
            act_layer: String = "gelu".into(),
            ls: Option<f32> = Some(1e-6),
            dims: PerStage<usize> = PerStage::All(8),
            patch_size: usize = 16,
            window_sizes: Vec<usize> = vec![7, 7],
        }
    }

    fn obj(v: serde_json::Value) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn saved_args_override_the_architecture_defaults() {
        let defaults = obj(json!({"depths": [3, 4], "ratio": 2.0}));
        let a = Args::new(
            "x",
            Some(&defaults),
            &obj(json!({"ratio": 3.0, "ls": null})),
        );
        let d = Demo::read(&a).unwrap();
        assert_eq!(d.depths, vec![3, 4]);
        assert_eq!(d.ratio, 3.0);
        assert_eq!(d.ls, None);
        assert_eq!(d.act_layer, "gelu");
        assert_eq!(d.dims.expand("dims", 3).unwrap(), vec![8, 8, 8]);
        assert!(a.explicit("ratio") && !a.explicit("depths"));
    }

    #[test]
    fn an_unknown_argument_is_unsupported_naming_it_and_its_value() {
        let a = Args::new(
            "x",
            None,
            &obj(json!({"use_magic": true, "drop_rate": 0.1})),
        );
        let e = Demo::read(&a).unwrap_err();
        assert_eq!(e.status(), crate::error::TimmStatus::TIMM_ERR_UNSUPPORTED);
        assert!(e.message().contains("use_magic = true"), "{}", e.message());
        assert!(!e.message().contains("drop_rate"));
    }

    #[test]
    fn a_value_of_another_form_is_unsupported_not_invalid() {
        let a = Args::new("x", None, &obj(json!({"ratio": [1, 2]})));
        let e = Demo::read(&a).unwrap_err();
        assert_eq!(
            e.status(),
            crate::error::TimmStatus::TIMM_ERR_UNSUPPORTED,
            "{}",
            e.message()
        );
        assert!(e.message().contains("ratio"));
    }

    #[test]
    fn values_out_of_bounds_are_invalid_with_the_rule() {
        for bad in [
            json!({"depths": [1, -1]}),
            json!({"ratio": 1e300}),
            json!({"depths": [1 << 21]}),
        ] {
            let a = Args::new("x", None, &obj(bad));
            let e = Demo::read(&a).unwrap_err();
            assert_eq!(
                e.status(),
                crate::error::TimmStatus::TIMM_ERR_INVALID_MODEL,
                "{}",
                e.message()
            );
        }
    }

    #[test]
    fn a_zero_size_stride_or_head_count_is_invalid_naming_the_key() {
        for (bad, key) in [
            (json!({"patch_size": 0}), "patch_size"),
            (json!({"window_sizes": [7, 0]}), "window_sizes"),
        ] {
            let a = Args::new("x", None, &obj(bad));
            let e = Demo::read(&a).unwrap_err();
            assert_eq!(e.status(), crate::error::TimmStatus::TIMM_ERR_INVALID_MODEL);
            assert!(
                e.message().contains(&format!("`{key}`")) && e.message().contains("at least 1"),
                "{}",
                e.message()
            );
        }
        // Other counts may be 0 (no classifier, no blocks in a stage).
        let a = Args::new("x", None, &obj(json!({"depths": [0, 2], "patch_size": 14})));
        let d = Demo::read(&a).unwrap();
        assert_eq!(
            (d.depths, d.patch_size, d.window_sizes),
            (vec![0, 2], 14, vec![7, 7])
        );
    }
}
