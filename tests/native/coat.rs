//! Native CoaT graphs through the C ABI, against timm's logits, pre-logits features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_coat_fixture_matches_timm_natively() {
    // CoaT with a parallel block (cross-scale resampling, Conv1d aggregate, class tokens) and
    // CoaT-Lite (serial only, average pooling); shared modules stored under all their names.
    let fs = fixtures_of_family("coat");
    assert!(fs.len() >= 2, "only {} coat fixtures", fs.len());
    for f in &fs {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    assert_eq!(check_feature_maps(&fixture("coat_tiny-small"), TOL), 2);
    assert_eq!(check_feature_maps(&fixture("coat_lite_mini-small"), TOL), 1);
}

#[test]
fn feature_info_names_the_parallel_blocks_for_coat_and_the_serial_ones_for_lite() {
    let info = |name: &str| {
        let f = fixture(name);
        let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
        m.feature_info()
    };
    let want = |v: &[(usize, usize, &str)]| {
        v.iter()
            .map(|&(c, r, m)| (c, r, m.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        info("coat_tiny-small"),
        want(&[
            (8, 4, "serial_blocks1"),
            (8, 8, "parallel_blocks"),
            (8, 16, "parallel_blocks"),
            (8, 32, "parallel_blocks")
        ])
    );
    assert_eq!(
        info("coat_lite_mini-small"),
        want(&[
            (8, 4, "serial_blocks1"),
            (8, 8, "serial_blocks2"),
            (16, 16, "serial_blocks3"),
            (16, 32, "serial_blocks4")
        ])
    );
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let arch = "coat_lite_tiny";
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let run = |seed: &str| {
        let opts = [("seed", seed), ("input_size", "64x64")];
        let m = CModel::create(arch, false, &opts).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 1000);
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("1"), "same seed, same network");
    assert_ne!(a, run("2"), "another seed, another network");
}

#[test]
fn unsupported_variants_say_so() {
    for (key, value, said) in [
        ("global_pool", serde_json::Value::from("max"), "global_pool"),
        (
            "return_interm_layers",
            serde_json::Value::from(true),
            "return_interm_layers",
        ),
    ] {
        let dir = edited_copy("coat_lite_mini-small", key, |c| {
            c["model_args"][key] = value.clone();
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .unwrap_or_else(|| panic!("{key} must fail"));
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains(said), "{}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A copy of `name` whose weights file holds each shared tensor under one name only: the
/// block-level aliases dropped (`keep_top`), or the top-level `cpe<i>` / `crpe<i>` ones.
fn deduplicated_copy(name: &str, keep_top: bool) -> TempFolder {
    let tag = if keep_top {
        "dedup-top"
    } else {
        "dedup-blocks"
    };
    let dir = edited_copy(name, tag, |_| {});
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let is_alias = |k: &str| {
        let block_alias = k.contains(".cpe.") || k.contains(".crpe.");
        let mlp_alias = k.contains(".mlp3.") || k.contains(".mlp4.");
        let top = k.starts_with("cpe") || k.starts_with("crpe");
        let first_serial = (1..=4).any(|n| k.starts_with(&format!("serial_blocks{n}.0.")));
        if keep_top {
            block_alias || mlp_alias
        } else {
            top || mlp_alias || (block_alias && !first_serial)
        }
    };
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .filter(|(k, _)| !is_alias(k))
        .collect();
    assert!(kept.len() < st.len(), "{name}: nothing deduplicated");
    safetensors::serialize_to_file(kept, meta.metadata().clone(), &path).unwrap();
    dir
}

#[test]
fn shared_modules_stored_under_one_name_give_the_same_logits() {
    let f = fixture("coat_tiny-small");
    let r = reference(&f);
    for keep_top in [true, false] {
        let dir = deduplicated_copy("coat_tiny-small", keep_top);
        let m = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .unwrap_or_else(|e| panic!("keep_top={keep_top}: {e:?}"));
        let got = m.infer(&r.input, &r.input_shape).unwrap();
        let d = max_abs_diff(&got, &r.logits);
        assert!(
            d <= TOL * scale(&r.logits),
            "keep_top={keep_top}: max|diff| {d}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
