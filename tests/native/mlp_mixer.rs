//! Native MLP-Mixer / ResMLP / gMLP / Glu-Mixer graphs through the C ABI, against timm's logits,
//! pooled features and `features_only` maps (`forward_intermediates`).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_mlp_mixer_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("mlp_mixer");
    assert!(fs.len() >= 4, "only {} mlp_mixer fixtures", fs.len());
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default (last three blocks) and a subset with a negative index.
    assert_eq!(check_feature_maps(&fixture("mixer_s16-small"), TOL), 2);
    assert_eq!(check_feature_maps(&fixture("gmixer_12-small"), TOL), 1);
    assert_eq!(check_feature_maps(&fixture("resmlp_24-small"), TOL), 2);
    assert_eq!(check_feature_maps(&fixture("gmlp_s16-small"), TOL), 1);
}

#[test]
fn feature_info_is_every_block_on_the_patch_grid() {
    let f = fixture("resmlp_24-small");
    let m = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("out_indices", "0,1,2")],
    )
    .unwrap();
    let want: Vec<(usize, usize, String)> =
        (0..3).map(|i| (16, 8, format!("blocks.{i}"))).collect();
    assert_eq!(m.feature_info(), want);
    assert_eq!(
        m.output_shape(0, &[1, 3, 32, 32]).unwrap(),
        vec![1, 16, 4, 4]
    );
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let fm = ("output", "feature_maps");
    let e = create_err("mixer_s16-small", &[fm, ("out_indices", "3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // No dilated form of a token MLP.
    let e = create_err("mixer_s16-small", &[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    // The token MLPs are sized for the 4x4 grid the weights were trained on.
    let e = create_err("gmlp_s16-small", &[("input_size", "48x48")]);
    assert_ne!(e.status, TimmStatus::TIMM_OK, "{e:?}");
    assert!(e.message.contains("shape"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    // Built at a 64x64 input: a 4x4 token grid.
    for (arch, dim) in [("gmlp_ti16_224", 128), ("resmlp_12_224", 384)] {
        let opts = |seed: &'static str| vec![("seed", seed), ("input_size", "64x64")];
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
            .collect();
        let run = |seed: &'static str| {
            let m = CModel::create(arch, false, &opts(seed))
                .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
            assert_eq!(m.output_dim(), 1000, "{arch}");
            m.infer(&x, &[1, 3, 64, 64]).unwrap()
        };
        let a = run("1");
        assert!(a.iter().all(|v| v.is_finite()), "{arch}: non-finite logits");
        assert_eq!(a, run("1"), "{arch}: same seed, same network");
        assert_ne!(a, run("2"), "{arch}: another seed, another network");
        let mut o = opts("1");
        o.push(("output", "features"));
        let m = CModel::create(arch, false, &o).unwrap();
        assert_eq!(m.output_dim(), dim, "{arch}");
    }
}

#[test]
fn unsupported_variants_say_so() {
    let e = edited_native_error("mixer_s16-small", "norm", |c| {
        c["model_args"]["norm_layer"] = "batchnorm2d".into()
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("norm_layer"), "{}", e.message);

    let e = edited_native_error("mixer_s16-small", "pool", |c| {
        c["model_args"]["global_pool"] = "".into();
        c["global_pool"] = "".into();
    });
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("global_pool"), "{}", e.message);
}
