//! The normalization-free networks' native graphs (timm's nfnet.py: NFNet-F, the DeepMind
//! `dm_nfnet_*` with TF "SAME" padding, ECA-NFNet-L, NF-RegNet-B, NF-ResNet with SE / ECA)
//! through the C ABI, against timm.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

fn native_fixtures() -> Vec<Fixture> {
    fixtures_of_family("nfnet")
}

#[test]
fn every_fixture_matches_timm_logits_and_features() {
    let fixtures = native_fixtures();
    assert!(
        fixtures.len() >= 7,
        "only {} nfnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Default out_indices, negative ones, output_stride 16 and 8 (dilated stages, AvgPool2dSame
    // shortcuts), odd input sizes (dynamic TF "SAME" padding of dm_nfnet).
    let mut checked = 0;
    for f in native_fixtures() {
        checked += check_feature_maps(&f, TOL);
    }
    assert!(checked >= 9, "only {checked} feature-map references");
}

#[test]
fn feature_info_is_timms_stem_stages_and_final_conv() {
    let info = |arch: &str| {
        CModel::create(arch, false, &[("output", "feature_maps")])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"))
            .feature_info()
    };
    let owned = |v: &[(usize, usize, &str)]| -> Vec<(usize, usize, String)> {
        v.iter().map(|&(c, r, m)| (c, r, m.to_string())).collect()
    };
    // 'deep_quad' stem tapped at conv3; final_conv replaces the last stage.
    assert_eq!(
        info("test_nfnet"),
        owned(&[
            (64, 2, "stem.conv3"),
            (32, 4, "stages.0"),
            (64, 8, "stages.1"),
            (96, 16, "stages.2"),
            (192, 32, "final_conv"),
        ])
    );
    // '7x7_pool' stem, no final conv.
    assert_eq!(
        info("nf_resnet26"),
        owned(&[
            (64, 2, "stem.conv"),
            (256, 4, "stages.0"),
            (512, 8, "stages.1"),
            (1024, 16, "stages.2"),
            (2048, 32, "stages.3"),
        ])
    );
    let m = CModel::create(
        "test_nfnet",
        false,
        &[("output", "feature_maps"), ("output_stride", "8")],
    )
    .unwrap();
    let reductions: Vec<usize> = m.feature_info().iter().map(|i| i.1).collect();
    assert_eq!(reductions, [2, 4, 8, 8, 8]);
    assert_eq!(m.output_shape(4, &[1, 3, 64, 80]).unwrap(), [1, 192, 8, 10]);
}

#[test]
fn bare_name_pretrained_false_is_seeded_and_has_timms_widths() {
    let create = |seed: &str| {
        CModel::create("test_nfnet", false, &[("seed", seed)]).unwrap_or_else(|e| panic!("{e:?}"))
    };
    let m = create("5");
    assert_eq!(m.output_dim(), 1000);
    let input: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
        .collect();
    let out = m.infer(&input, &[1, 3, 64, 64]).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    assert_eq!(out, create("5").infer(&input, &[1, 3, 64, 64]).unwrap());
    assert!(max_abs_diff(&out, &create("6").infer(&input, &[1, 3, 64, 64]).unwrap()) > 1e-6);
    let f = CModel::create("nf_regnet_b0", false, &[("output", "features")]).unwrap();
    assert_eq!(f.output_dim(), 960);
}

#[test]
fn unimplemented_arguments_are_refused_by_name() {
    let f = fixture("nf_resnet26-tiny");
    for (key, value, why) in [
        ("attn_layer", "\"cbam\"", "attn_layer"),
        ("act_layer", "\"mish\"", "act_layer"),
        ("stem_type", "\"same\"", "stem_type"),
    ] {
        let dir = edited_copy(&f.name, key, |c| {
            c["model_args"][key] = serde_json::from_str(value).unwrap()
        });
        let e = CModel::create(&format!("local:{}", dir.display()), true, &[])
            .err()
            .expect("must fail");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{key}: {e:?}");
        assert!(e.message.contains(why), "{key}: {}", e.message);
    }
}

#[test]
fn logits_take_any_input_size() {
    // dm_nfnet's dynamic "SAME" padding and the ceil-mode shortcut pools on odd sizes.
    for name in ["dm_nfnet_f0-tiny", "nf_regnet_b0-tiny"] {
        let f = fixture(name);
        let m = CModel::create(&f.spec("native"), true, &[("graph", "native")]).unwrap();
        for (h, w) in [(1, 1), (45, 61)] {
            let out = m
                .infer(&vec![0.25f32; 3 * h * w], &[1, 3, h as i64, w as i64])
                .unwrap();
            assert_eq!(out.len(), m.output_dim());
            assert!(out.iter().all(|v| v.is_finite()), "{name} {h}x{w}");
        }
    }
}
