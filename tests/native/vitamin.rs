//! Native ViTamin through the C ABI, against timm's logits, pre-logits features and
//! `features_only` maps: the MbConv backbone (read from narrow weights), GeGluMlp blocks, with
//! and without a position embedding.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_vitamin_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("vitamin");
    assert_eq!(fs.len(), 2, "vitamin fixtures");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // The default (last three blocks) and out_indices [1, -1]; the xlarge's one block.
    assert_eq!(check_feature_maps(&fixture("vitamin_small-small"), TOL), 2);
    assert_eq!(check_feature_maps(&fixture("vitamin_xlarge-small"), TOL), 1);
}

#[test]
fn feature_info_is_the_blocks_at_stride_16() {
    let info = |name: &str, opts: &[(&str, &str)]| {
        let f = fixture(name);
        let mut o = vec![("output", "feature_maps")];
        o.extend_from_slice(opts);
        CModel::create(&f.spec("native"), true, &o)
            .unwrap()
            .feature_info()
    };
    let blk = |i: usize| (16, 16, format!("blocks.{i}"));
    // out_indices=3 (vitamin's default): the last three of the three blocks.
    assert_eq!(
        info("vitamin_small-small", &[]),
        vec![blk(0), blk(1), blk(2)]
    );
    assert_eq!(
        info("vitamin_small-small", &[("out_indices", "1")]),
        vec![blk(1)]
    );
    assert_eq!(
        info("vitamin_xlarge-small", &[("out_indices", "0")]),
        vec![blk(0)]
    );
}

#[test]
fn bare_name_builds_with_seeded_weights() {
    // pretrained=false: vitamin_small_224's own backbone (64, 64, 128 wide) and 14 blocks.
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let shape = [1, 3, 224, 224];
    let run = |seed: &str| {
        let m = CModel::create("vitamin_small_224", false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.output_dim(), 768);
        m.infer(&input, &shape).unwrap()
    };
    let a = run("3");
    assert!(a.iter().all(|x| x.is_finite()), "non-finite logits");
    assert_eq!(a, run("3"), "same seed, same network");
    assert_ne!(a, run("4"), "another seed, another network");
}

#[test]
fn narrow_config_without_weights_is_timms_assert() {
    // Without weights the backbone is the entrypoint's (384 wide at the end), so embed_dim 16
    // is HybridEmbed's assert on a projection-free backbone.
    let e = CModel::create(&fixture("vitamin_small-small").spec("native"), false, &[])
        .err()
        .expect("embed_dim 16 without weights must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(e.message.contains("embed_dim 16"), "{}", e.message);
}

#[test]
fn variants_not_built_are_refused() {
    let f = fixture("vitamin_small-small");
    let e = CModel::create(&f.spec("native"), true, &[("dynamic_img_size", "true")])
        .err()
        .expect("dynamic_img_size must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // HybridEmbed's dynamic padding is not built.
    let dir = edited_copy("vitamin_small-small", "pad", |c| {
        c["model_args"]["dynamic_img_pad"] = true.into();
    });
    let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
        .err()
        .expect("dynamic_img_pad must be refused");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("dynamic_img_pad"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}
