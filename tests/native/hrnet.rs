//! HRNet native graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps (`feature_location='incre'`).

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_hrnet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("hrnet");
    assert!(
        fixtures.len() >= 2,
        "only {} hrnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timm_features_only() {
    // Default out_indices, [1, -1], [2, 3, 4] and [1, 2], inputs of other sizes.
    for name in ["hrnet_w18_small-tiny", "hrnet_w18_ssld-tiny-f16"] {
        assert!(check_feature_maps(&fixture(name), TOL) >= 2, "{name}");
    }
}

#[test]
fn feature_info_is_timms_stem_and_incre_branches() {
    let f = fixture("hrnet_w18_small-tiny");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let info = m.feature_info();
    let modules: Vec<&str> = info.iter().map(|(_, _, m)| m.as_str()).collect();
    assert_eq!(modules, ["stem", "stage1", "stage2", "stage3", "stage4"]);
    let reductions: Vec<usize> = info.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(reductions, [2, 4, 8, 16, 32]);
    // The fixture's head is timm's divided by 32: Bottlenecks of 1, 2, 4, 8 planes (x4).
    let channels: Vec<usize> = info.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(channels, [64, 4, 8, 16, 32]);
}

#[test]
fn output_stride_is_refused_as_timm_has_no_dilated_hrnet() {
    let f = fixture("hrnet_w18_small-tiny");
    let e = CModel::create(
        &f.spec("native"),
        true,
        &[("output", "feature_maps"), ("output_stride", "16")],
    )
    .err()
    .expect("output_stride=16 must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("output_stride"), "{}", e.message);
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |arch: &str, seed: &str| {
        let m = CModel::create(arch, false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 64 * 64)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 64, 64]).unwrap()
    };
    let a = run("hrnet_w18_small", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert_eq!(a, run("hrnet_w18_small", "1"), "same seed, same network");
    assert_ne!(
        a,
        run("hrnet_w18_small", "2"),
        "another seed, another network"
    );
}

#[test]
fn unsupported_variants_say_so() {
    let refuse = |tag: &str, key: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let dir = edited_copy("hrnet_w18_small-tiny", tag, edit);
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains(key), "{}", e.message);
        let _ = std::fs::remove_dir_all(&dir);
    };
    // The other heads return lists of branches, not logits.
    refuse("head", "head", &|c| {
        c["model_args"]["head"] = "incre".into()
    });
    // An argument neither timm's cfg nor the native graph knows.
    refuse("unknown", "fancy_arg", &|c| {
        c["model_args"]["fancy_arg"] = 3.into()
    });
}
