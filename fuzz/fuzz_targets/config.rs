//! `ModelConfig::parse` on arbitrary bytes (config.json comes from the internet), then every
//! accessor the library calls on a parsed config: the resolved JSON that `timm_model_config_json`
//! returns, label lookups, and the eval data config `Model` derives and validates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timm::config::{ModelConfig, MAX_CLASSES};
use timm::preprocess::{CropMode, DataConfig, Interpolation};
use timm::TimmStatus;

fuzz_target!(|data: &[u8]| {
    let cfg = match ModelConfig::parse(data) {
        Ok(c) => c,
        Err(e) => {
            // Everything wrong with the file is the folder's fault, never an internal error.
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_MODEL, "{e}");
            return;
        }
    };
    assert!(cfg.num_classes <= MAX_CLASSES);
    assert_eq!(cfg.label_names.len(), cfg.num_classes);
    let p = &cfg.pretrained_cfg;
    assert!(p.input_size.iter().all(|&d| d > 0));
    assert!(p.crop_pct.is_finite() && p.crop_pct > 0.0);
    // Serialising back must work: the C ABI hands this string out.
    let json = cfg.resolved_json().to_string();
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok());
    for i in 0..cfg.num_classes.min(64) {
        let _ = cfg.label_description(i);
    }
    // What Model::finish does with the pretrained cfg (model.rs `data_config`).
    let three = |v: &[f64]| match v {
        [a] => [*a as f32; 3],
        [a, b, c, ..] => [*a as f32, *b as f32, *c as f32],
        _ => [0.0; 3],
    };
    if let (Ok(interpolation), Ok(crop_mode)) = (
        Interpolation::from_timm(&p.interpolation),
        CropMode::from_timm(&p.crop_mode),
    ) {
        for (input_size, crop_pct) in [
            (Some(p.input_size), p.crop_pct),
            (p.test_input_size, p.test_crop_pct.unwrap_or(p.crop_pct)),
        ] {
            let Some(input_size) = input_size else {
                continue;
            };
            let dc = DataConfig {
                input_size,
                interpolation,
                crop_pct,
                crop_mode,
                mean: three(&p.mean),
                std: three(&p.std),
            };
            if let Err(e) = dc.validate() {
                assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e}");
            }
        }
    }
});
