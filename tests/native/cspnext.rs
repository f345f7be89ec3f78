//! Native CSPNeXt graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_cspnext_fixture_matches_timm_natively() {
    // The fixtures are narrower than their architectures: widths and depths come from the weights.
    let fs = fixtures_of_family("cspnext");
    assert!(fs.len() >= 2, "only {} cspnext fixtures", fs.len());
    for f in &fs {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every map; output_stride 8; [1, -1] at output_stride 16 on a 24x40 input.
    assert_eq!(check_feature_maps(&fixture("cspnext_tiny-small"), TOL), 3);
}

#[test]
fn feature_info_is_the_stem_and_every_stage() {
    let f = fixture("cspnext_tiny-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    // channels [16, 24, 32, 48] x widen_factor 0.375; the stem is half the first stage.
    let mut want = vec![(3, 2, "stem".to_string())];
    for (i, &(c, r)) in [(6, 4), (9, 8), (12, 16), (18, 32)].iter().enumerate() {
        want.push((c, r, format!("stages.{i}")));
    }
    assert_eq!(m.feature_info(), want);
}

#[test]
fn other_output_strides_and_indices_are_invalid_arguments() {
    let f = fixture("cspnext_s-small");
    for (k, v) in [("out_indices", "5"), ("output_stride", "4")] {
        let e = CModel::create(
            &f.spec("native"),
            true,
            &[("output", "feature_maps"), (k, v)],
        )
        .err()
        .unwrap_or_else(|| panic!("{k}={v} must fail"));
        assert_eq!(
            e.status,
            TimmStatus::TIMM_ERR_INVALID_ARGUMENT,
            "{k}={v}: {e:?}"
        );
    }
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let arch = "cspnext_tiny";
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
    let m = CModel::create(arch, false, &[("output", "features")]).unwrap();
    // int(1024 * 0.375)
    assert_eq!(m.output_dim(), 384);
}

#[test]
fn unsupported_variants_say_so() {
    for (key, value, said) in [
        ("global_pool", serde_json::Value::from(""), "global_pool"),
        ("use_magic", serde_json::Value::from(true), "use_magic"),
    ] {
        let dir = edited_copy("cspnext_s-small", key, |c| {
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
