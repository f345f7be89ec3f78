//! Native MViTv2 graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_mvitv2_fixture_matches_timm_natively() {
    // The fixtures' cfgs are narrower and shallower than their architectures': widths, head
    // counts and depths come from the weights.
    let fs = fixtures_of_family("mvitv2");
    assert!(fs.len() >= 2, "only {} mvitv2 fixtures", fs.len());
    for f in &fs {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    assert_eq!(
        check_feature_maps(&fixture("mvitv2_small_cls-small"), TOL),
        2
    );
}

#[test]
fn feature_info_is_timms_four_blocks() {
    let f = fixture("mvitv2_large-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    // expand_attn=False: a stage ends at the next stage's width.
    let want: Vec<(usize, usize, String)> = [(8, 4), (16, 8), (32, 16), (32, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("block.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    // 24M parameters: two builds only (seeded determinism is the builder's, tested elsewhere).
    let arch = "mvitv2_tiny";
    // A smaller input than the architecture's: fewer relative positions are gathered.
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
    assert_ne!(a, run("2"), "another seed, another network");
}

#[test]
fn unsupported_variants_say_so() {
    for (key, value, said) in [
        ("pool_first", serde_json::Value::from(true), "pool_first"),
        ("mode", serde_json::Value::from("conv_unshared"), "mode"),
        ("global_pool", serde_json::Value::from(""), "global_pool"),
    ] {
        let dir = edited_copy("mvitv2_large-small", key, |c| {
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
