//! Native ViT / DeiT graphs through the C ABI, against timm's logits and pooled features.

mod common;
use common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// The vit family's fixtures plus the foundation's test_vit (built natively from its folder).
fn vit_fixtures() -> Vec<Fixture> {
    let mut v = fixtures_of_family("vit");
    v.push(fixture("test_vit"));
    v
}

fn check_features(f: &Fixture) -> f32 {
    let r = reference(f);
    let m = CModel::create(&f.spec("native"), true, &[("graph", "native"), ("output", "features")])
        .unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    assert_eq!(m.output_dim() as i64, r.features_shape[1], "{}: output dim is not num_features", f.name);
    let out = m.infer(&r.input, &r.input_shape).unwrap_or_else(|e| panic!("{} [features]: {e:?}", f.name));
    let d = max_abs_diff(&out, &r.features);
    eprintln!("{:<32} {:<14} features max|diff| = {d:.3e}", f.name, "native");
    assert!(d <= TOL, "{}: features differ from timm by {d}", f.name);
    d
}

#[test]
fn every_vit_fixture_matches_timm_natively() {
    let fs = vit_fixtures();
    assert!(fs.len() >= 2, "no vit fixtures in index.json");
    for f in &fs {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_features(f);
    }
}
