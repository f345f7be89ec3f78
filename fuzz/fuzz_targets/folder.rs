//! A whole model folder from bytes, without ONNX Runtime: what `Model::from_folder` does up to
//! the session. The input is `u32 LE config length ‖ config.json ‖ model.safetensors`; the
//! config is parsed, the weights validated (in an anonymous mapping, as `Weights::open` maps
//! the file), and the native graph for the config's architecture is built from the weights
//! (logits, features and feature maps) and from seeded random parameters, as `pretrained=false`
//! does. Families without a builder end in UNSUPPORTED; a built graph must only reference
//! weights that exist with the declared shape, since the session binds them by name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use timm::config::ModelConfig;
use timm::graph::{self, InitData, OutputKind, ParamSource, Request};
use timm::weights::Weights;
use timm::TimmStatus;

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(n)
}

/// Parameters a fuzzed graph may have: the budget refuses larger ones before anything is
/// allocated (the library's default of 4e9 would let one input fill the fuzzer's 2 GiB limit
/// with seeded random parameters), so the refusal is exercised too.
const MAX_PARAMS: u64 = 1_000_000;

fuzz_target!(|data: &[u8]| {
    let (config_bytes, weight_bytes) = split(data);
    let Ok(cfg) = ModelConfig::parse(config_bytes) else {
        return;
    };
    let size = cfg.pretrained_cfg.input_size;
    let nominal_hw = (size[1], size[2]);
    let weights = match Weights::from_bytes("fuzz/model.safetensors", weight_bytes) {
        Ok(w) => Some(w),
        Err(e) => {
            assert_eq!(e.status(), TimmStatus::TIMM_ERR_INVALID_MODEL, "{e}");
            None
        }
    };
    let check = |r: timm::Result<graph::Graph>, w: Option<&Weights>| match r {
        Ok(g) => {
            assert!(!g.outputs.is_empty());
            assert!(g.params <= MAX_PARAMS, "{} parameters passed the budget", g.params);
            for init in &g.initializers {
                let numel = init.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
                match &init.data {
                    InitData::Weight(name) => {
                        let t = w
                            .and_then(|w| w.get(name))
                            .unwrap_or_else(|| panic!("graph binds missing weight {name}"));
                        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
                        assert_eq!(dims, init.dims, "{name}");
                    }
                    InitData::F32(v) => assert_eq!(numel, Some(v.len() as i64), "{}", init.name),
                    InitData::I64(v) => assert_eq!(numel, Some(v.len() as i64), "{}", init.name),
                }
            }
        }
        Err(e) => assert!(
            matches!(
                e.status(),
                TimmStatus::TIMM_ERR_INVALID_MODEL
                    | TimmStatus::TIMM_ERR_UNSUPPORTED
                    | TimmStatus::TIMM_ERR_INVALID_ARGUMENT
            ),
            "{e}"
        ),
    };
    let request = |output| Request {
        output,
        max_params: MAX_PARAMS,
        ..Request::default()
    };
    if let Some(w) = &weights {
        for output in [OutputKind::Logits, OutputKind::Features, OutputKind::FeatureMaps] {
            let r = graph::build(&cfg, ParamSource::Weights(w), &request(output), nominal_hw);
            check(r, Some(w));
        }
    }
    let rng = graph::rng::Rng::new(0);
    let r = graph::build(&cfg, ParamSource::Random(rng), &request(OutputKind::Logits), nominal_hw);
    check(r, None);
});
