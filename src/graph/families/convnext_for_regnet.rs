//! The old ConvNeXt helpers `regnet.rs` still imports (`super::convnext::{arg_*, check_args,
//! global_pool, Pcfg, config_json, make_divisible}`), moved here verbatim when ConvNeXt moved to
//! the layer library. REMOVE this file (and its `mod` line in `convnext.rs`) once RegNet is
//! ported: ConvNeXt itself uses none of it.

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::graph::legacy as layers;
use crate::graph::{Attr, Builder, Value};

pub(crate) fn arg_usize(m: &Map<String, Json>, key: &str) -> Result<Option<usize>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0 && n <= 1 << 20)
            .map(|n| Some(n as usize))
            .ok_or_else(|| {
                Error::invalid_model(format!(
                    "model_args `{key}` must be a positive integer, got {v}"
                ))
            }),
    }
}

pub(crate) fn arg_f32(m: &Map<String, Json>, key: &str) -> Result<Option<f32>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| Some(f as f32))
            .ok_or_else(|| {
                Error::invalid_model(format!("model_args `{key}` must be a number, got {v}"))
            }),
    }
}

pub(crate) fn arg_bool(m: &Map<String, Json>, key: &str) -> Result<Option<bool>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(Error::invalid_model(format!(
            "model_args `{key}` must be true or false, got {v}"
        ))),
    }
}

pub(crate) fn arg_str(m: &Map<String, Json>, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(Error::unsupported(format!("model_args `{key}` = {v} is not supported by the native graph (only timm's names as strings)"))),
    }
}

/// Refuses `model_args` keys that would change the graph in ways this builder does not know.
pub(crate) fn check_args(
    m: &Map<String, Json>,
    arch: &str,
    honoured: &[&str],
    ignored: &[&str],
) -> Result<()> {
    let unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !honoured.contains(k) && !ignored.contains(k))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::unsupported(format!(
            "model_args {} of `{arch}` are not supported by the native graph (supported: {})",
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", "),
            honoured.join(", ")
        )))
    }
}

/// timm's `SelectAdaptivePool2d` followed by flatten: `[N, C, H, W]` → `[N, C·mult]`.
/// Returns the pooled value and the width multiplier (2 for `catavgmax`).
pub(crate) fn global_pool(
    b: &mut Builder,
    x: &Value,
    pool: &str,
    allow_cat: bool,
) -> Result<(Value, usize)> {
    let flat = |b: &mut Builder, v: &Value| b.op("Flatten", &[v], vec![("axis", Attr::Int(1))]);
    Ok(match pool {
        "avg" => (layers::global_avg_pool_flat(b, x), 1),
        "max" => {
            let p = b.op("GlobalMaxPool", &[x], vec![]);
            (flat(b, &p), 1)
        }
        "avgmax" | "catavgmax" if pool == "avgmax" || allow_cat => {
            let a = layers::global_avg_pool_flat(b, x);
            let m = b.op("GlobalMaxPool", &[x], vec![]);
            let m = flat(b, &m);
            if pool == "avgmax" {
                let s = layers::add(b, &a, &m);
                let half = b.const_f32(vec![0.5], &[]);
                (layers::mul(b, &s, &half), 1)
            } else {
                (b.op("Concat", &[&a, &m], vec![("axis", Attr::Int(1))]), 2)
            }
        }
        other => {
            return Err(Error::unsupported(format!(
                "global_pool `{other}` is not supported by the native graph (supported: avg, max, avgmax{})",
                if allow_cat { ", catavgmax" } else { "" }
            )))
        }
    })
}

/// One row of timm 1.0.31's default (first) pretrained cfg for an architecture.
pub(crate) struct Pcfg {
    pub tag: &'static str,
    pub size: usize,
    pub test_size: Option<usize>,
    pub crop_pct: f64,
    pub test_crop_pct: Option<f64>,
    pub crop_mode: &'static str,
    pub norm: ([f64; 3], [f64; 3]),
    pub license: &'static str,
}

/// The config.json timm writes for a model with this pretrained cfg.
pub(crate) fn config_json(arch: &str, p: &Pcfg, num_features: usize, first_conv: &str) -> Json {
    let mut pc = json!({
        "tag": p.tag,
        "custom_load": false,
        "input_size": [3, p.size, p.size],
        "fixed_input_size": false,
        "interpolation": "bicubic",
        "crop_pct": p.crop_pct,
        "crop_mode": p.crop_mode,
        "mean": p.norm.0,
        "std": p.norm.1,
        "num_classes": 1000,
        "pool_size": [p.size / 32, p.size / 32],
        "first_conv": first_conv,
        "classifier": "head.fc",
        "license": p.license,
    });
    if let Some(t) = p.test_size {
        pc["test_input_size"] = json!([3, t, t]);
    }
    if let Some(t) = p.test_crop_pct {
        pc["test_crop_pct"] = json!(t);
    }
    json!({
        "architecture": arch,
        "num_classes": 1000,
        "num_features": num_features,
        "global_pool": "avg",
        "model_args": {},
        "pretrained_cfg": pc,
    })
}
