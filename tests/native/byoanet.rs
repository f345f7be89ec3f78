//! The byoanet self-attention ResNets (timm `byoanet.py`, built by the byobnet family:
//! BottleneckAttn, HaloAttn, LambdaLayer) through the C ABI, against timm's logits, pooled
//! features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_byoanet_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("byoanet");
    assert!(fs.len() >= 3, "only {} byoanet fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    assert_eq!(check_feature_maps(&fixture("halonet26t-small"), TOL), 1);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |arch: &str, seed: &str, hw: usize| {
        let size = format!("{hw}x{hw}");
        let m = CModel::create(arch, false, &[("seed", seed), ("input_size", &size)])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000, "{arch}");
        let x: Vec<f32> = (0..3 * hw * hw)
            .map(|i| ((i as f32) * 0.618_034).sin())
            .collect();
        m.infer(&x, &[1, 3, hw as i64, hw as i64]).unwrap()
    };
    let a = run("lambda_resnet26t", "1", 64);
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(
        a,
        run("lambda_resnet26t", "1", 64),
        "same seed, same network"
    );
    assert_ne!(
        a,
        run("lambda_resnet26t", "2", 64),
        "another seed, another network"
    );
    // Halo blocks of 8 need maps of multiples of 8 down to stride 32.
    assert!(run("halonet26t", "0", 256).iter().all(|v| v.is_finite()));
}

#[test]
fn halo_maps_of_partial_blocks_are_invalid_arguments() {
    let e = CModel::create("halonet26t", false, &[("input_size", "64x64")])
        .err()
        .expect("a 64x64 input must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("HaloAttn"), "{}", e.message);
}

#[test]
fn a_fixed_size_model_at_another_input_size_is_an_invalid_argument() {
    // BottleneckAttn's relative-position tables fix the map size (timm asserts it).
    let f = fixture("botnet26t_256-small");
    let e = CModel::create(&f.spec("native"), true, &[("input_size", "64x64")])
        .err()
        .expect("another input size must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    assert!(e.message.contains("BottleneckAttn"), "{}", e.message);
}

#[test]
fn unknown_self_attention_layers_are_unsupported() {
    let dir = edited_copy("halonet26t-small", "sa", |c| {
        c["model_args"]["self_attn_layer"] = "swin".into()
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("an unknown self_attn_layer must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("swin"), "{}", e.message);
}
