//! Native EfficientViM graphs through the C ABI, against timm's logits, pre-logits features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_efficientvim_fixture_matches_timm_natively() {
    // The plain fused head and the distilled one (two fused heads averaged).
    let fs = fixtures_of_family("efficientvim");
    assert!(fs.len() >= 2, "only {} efficientvim fixtures", fs.len());
    for f in &fs {
        let r = reference(f);
        check_fixture(f, "native", &[("graph", "native")], TOL * scale(&r.logits));
        check_features(f, TOL * scale(&r.features));
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    assert_eq!(
        check_feature_maps(&fixture("efficientvim_m1-small"), TOL),
        2
    );
}

#[test]
fn feature_info_is_timms_three_stages() {
    let f = fixture("efficientvim_m2_dist-small");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [(8, 16), (8, 32), (16, 64)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| (c, r, format!("stages.{i}")))
        .collect();
    assert_eq!(m.feature_info(), want);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let arch = "efficientvim_m1";
    let x: Vec<f32> = (0..3 * 64 * 64)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    assert_seeded(arch, &[], 1000, &x, &[1, 3, 64, 64], ("1", "2"));
    let m = CModel::create(arch, false, &[("output", "features")]).unwrap();
    // sum(embed_dim) + embed_dim[-1]
    assert_eq!(m.output_dim(), 128 + 192 + 320 + 320);
}

#[test]
fn unsupported_variants_say_so() {
    for (key, value, said) in [
        ("global_pool", serde_json::Value::from(""), "global_pool"),
        ("use_magic", serde_json::Value::from(1), "use_magic"),
    ] {
        let dir = edited_copy("efficientvim_m1-small", key, |c| {
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
