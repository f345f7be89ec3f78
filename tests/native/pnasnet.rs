//! Native PNASNet-5 graphs through the C ABI, against timm's logits, pooled features and
//! `features_only` maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_pnasnet_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("pnasnet");
    assert!(!fs.is_empty(), "no pnasnet fixtures");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // Every tap; [1, -1] at another input size (the fixture narrows timm's feature_info too).
    assert_eq!(check_feature_maps(&fixture("pnasnet5large-narrow"), TOL), 2);
}

#[test]
fn feature_info_is_timms_five_taps_at_the_real_widths() {
    let f = fixture("pnasnet5large-narrow");
    let m = CModel::create(&f.spec("native"), true, &[("output", "feature_maps")]).unwrap();
    let want: Vec<(usize, usize, String)> = [
        (4, 2, "conv_0"),
        (5, 4, "cell_stem_1.conv_1x1.act"),
        (20, 8, "cell_4.conv_1x1.act"),
        (40, 16, "cell_8.conv_1x1.act"),
        (80, 32, "act"),
    ]
    .iter()
    .map(|&(c, r, n)| (c, r, n.to_string()))
    .collect();
    assert_eq!(m.feature_info(), want);
}

fn create_err(options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture("pnasnet5large-narrow").spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_timm_cannot_serve_are_refused() {
    let fm = ("output", "feature_maps");
    let e = create_err(&[fm, ("out_indices", "5")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
    // timm's PNASNet asserts output_stride 32.
    let e = create_err(&[fm, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
}

#[test]
fn variants_not_built_are_refused_naming_the_argument() {
    for (key, value) in [
        ("output_stride", serde_json::json!(16)),
        ("pad_type", "valid".into()),
    ] {
        let dir = edited_copy("pnasnet5large-narrow", key, |c| {
            c["model_args"][key] = value.clone()
        });
        let e = CModel::create(
            &format!("local:{}", dir.display()),
            true,
            &[("graph", "native")],
        )
        .err()
        .expect("must fail");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
        assert!(e.message.contains(key), "{}", e.message);
    }
}

#[test]
fn bare_name_without_weights_builds_runs_and_is_seeded() {
    // timm's defaults: the full-size network, at a small input.
    assert_bare_seeded("pnasnet5large", 64, 1000);
}
