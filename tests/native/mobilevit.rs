//! MobileViT v1 / v2 (timm `mobilevit.py`, built by the byobnet family) through the C ABI,
//! against timm's logits, pooled features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_mobilevit_fixture_matches_timm_natively() {
    // v1 at 32x32 resizes its 1x1 last map up to the patch size and back; v2 at 40x40 resizes
    // its 5x5 and 3x3 maps up (align_corners) and keeps the larger map.
    let fs = fixtures_of_family("mobilevit");
    assert!(fs.len() >= 2, "only {} mobilevit fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // out_indices [1, -1] at output stride 16: the last stage's MobileViT block dilated.
    assert_eq!(check_feature_maps(&fixture("mobilevit_xxs-small"), TOL), 1);
}

#[test]
fn feature_info_is_the_stages_and_final_conv() {
    let f = fixture("mobilevitv2_050-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(
        modules,
        ["stages.0", "stages.1", "stages.2", "stages.3", "final_conv"]
    );
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin())
        .collect();
    let run = |arch: &str, seed: &str| {
        let m = CModel::create(arch, false, &[("seed", seed), ("input_size", "64x64")])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000, "{arch}");
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("mobilevit_xxs", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("mobilevit_xxs", "1"), "same seed, same network");
    assert_ne!(
        a,
        run("mobilevit_xxs", "2"),
        "another seed, another network"
    );
    assert!(run("mobilevitv2_050", "0").iter().all(|v| v.is_finite()));
}

#[test]
fn unknown_block_arguments_are_unsupported() {
    // A key MobileVitBlock does not take is refused, naming it.
    let dir = edited_copy("mobilevit_xxs-small", "kw", |c| {
        c["model_args"]["blocks"] = serde_json::json!([[{
            "type": "mobilevit", "c": 16, "s": 2,
            "block_kwargs": {"transformer_dim": 8, "patch_sizes": 2}
        }]]);
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("an unknown block argument must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("patch_sizes"), "{}", e.message);
}
