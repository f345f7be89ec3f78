//! Native BEiT / BEiT v2 (timm `beit.py`) through the C ABI, against timm's logits, pre-logits
//! features and features_only maps.

use crate::common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

#[test]
fn every_beit_fixture_matches_timm_natively() {
    let fs = fixtures_of_family("beit");
    assert!(fs.len() >= 3, "beit fixtures missing from index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f, TOL);
    }
}

#[test]
fn feature_maps_match_timms_features_only() {
    // timm's default (the last 3 blocks), out_indices with a negative one, the last block only.
    let n = check_feature_maps(&fixture("beit_base_relpos"), TOL)
        + check_feature_maps(&fixture("beitv2_shared_abs_token"), TOL);
    assert_eq!(n, 3, "feature-map references");
}

fn create_err(name: &str, options: &[(&str, &str)]) -> CError {
    let mut opts = vec![("graph", "native")];
    opts.extend_from_slice(options);
    CModel::create(&fixture(name).spec("native"), true, &opts)
        .err()
        .expect("must fail")
}

#[test]
fn requests_this_build_does_not_reproduce_are_refused_naming_why() {
    // The bias tables cover the 4x4 grid; timm resizes them only in its checkpoint filter.
    let e = create_err("beit_base_relpos", &[("input_size", "48x48")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("patch grid"), "{}", e.message);
    let maps = ("output", "feature_maps");
    let e = create_err("beit_base_relpos", &[maps, ("output_stride", "16")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    let e = create_err("beit_base_relpos", &[maps, ("out_indices", "3")]);
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_ARGUMENT, "{e:?}");
}

#[test]
fn bare_names_build_with_seeded_weights() {
    let input: Vec<f32> = (0..3 * 224 * 224)
        .map(|i| ((i as f32) * 0.618_034).sin() * 2.0)
        .collect();
    let shape = [1, 3, 224, 224];
    let run = |seed: &str| {
        let m = CModel::create("beitv2_base_patch16_224", false, &[("seed", seed)]).unwrap();
        assert_eq!(m.output_dim(), 1000);
        m.infer(&input, &shape).unwrap()
    };
    // Two builds only: the smallest BEiT has 86M parameters.
    let a = run("7");
    assert!(a.iter().all(|x| x.is_finite()));
    assert_ne!(a, run("8"), "another seed, another network");
}
