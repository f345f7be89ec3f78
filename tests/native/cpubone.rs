//! Native CPUBone graphs through the C ABI, against timm's logits, pre-logits features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_cpubone_fixture_matches_timm_natively() {
    // Fused and unfused local blocks, 2x2 and 5x5 / 3x3 attention projections, nearest and
    // transposed-conv upsampling (depthwise, and carrying the fused output projection).
    let fs = fixtures_of_family("cpubone");
    assert!(fs.len() >= 3, "only {} cpubone fixtures", fs.len());
    for f in &fs {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every stage; [1, -1] on 40x24, whose odd grids pad the 2x2 projection and crop the
    // upsampled attention.
    assert_eq!(check_feature_maps(&fixture("cpubone_nano-small"), TOL), 2);
}

#[test]
fn feature_info_is_timms_four_stages() {
    let f = fixture("cpubone_b0_bfrobust-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(4, 4), (8, 8), (8, 16), (8, 32)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let f = fixture("cpubone_nano-small");
    let fm = ("output", "feature_maps");
    let e = CModel::create(&f.spec("native"), true, &[fm, ("out_indices", "4")])
        .err()
        .expect("out_indices=4 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // timm's CPUBone has no output_stride.
    let e = CModel::create(&f.spec("native"), true, &[fm, ("output_stride", "16")])
        .err()
        .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let arch = "cpubone_nano";
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
    let m = CModel::create(arch, false, &[("output", "features")]).unwrap();
    // head_widths[1]
    assert_eq!(m.output_dim(), 1600);
}

#[test]
fn unsupported_variants_say_so() {
    for (key, value, said) in [
        ("global_pool", serde_json::Value::from(""), "global_pool"),
        (
            "norm_layer",
            serde_json::Value::from("layernorm2d"),
            "norm_layer",
        ),
    ] {
        let dir = edited_copy("cpubone_nano-small", key, |c| {
            c["model_args"][key] = value.clone();
            if key == "global_pool" {
                c["global_pool"] = value.clone();
            }
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
