//! RegNet native graphs through the C ABI, against timm's logits and pooled features.

mod common;
use common::*;
use timm::TimmStatus;

const TOL: f32 = 1e-4;

/// Logits and `output=features` of the native graph of `spec` against fixture `f`'s reference.
fn check_spec(f: &Fixture, spec: &str, what: &str) {
    let r = reference(f);
    for (output, want, shape) in [
        ("logits", &r.logits, &r.logits_shape),
        ("features", &r.features, &r.features_shape),
    ] {
        let m = CModel::create(spec, true, &[("graph", "native"), ("output", output)])
            .unwrap_or_else(|e| panic!("{} [{what} {output}]: {e:?}", f.name));
        assert_eq!(
            m.output_dim() as i64,
            shape[1],
            "{}: timm_model_output_dim for {output}",
            f.name
        );
        let out = m
            .infer(&r.input, &r.input_shape)
            .unwrap_or_else(|e| panic!("{} [{what} {output}]: {e:?}", f.name));
        let d = max_abs_diff(&out, want);
        eprintln!("{:<32} {what:<22} {output:<8} max|diff| = {d:.3e}", f.name);
        assert!(
            d <= TOL,
            "{} [{what}]: {output} differ from timm by {d}",
            f.name
        );
    }
}

#[test]
fn every_regnet_fixture_matches_timm_natively() {
    let fixtures = fixtures_of_family("regnet");
    assert!(
        fixtures.len() >= 4,
        "only {} regnet fixtures",
        fixtures.len()
    );
    for f in &fixtures {
        check_fixture(f, "native", &[("graph", "native")], TOL);
        check_spec(f, &f.spec("native"), "native");
    }
}

#[test]
fn half_precision_weight_file_matches_timm() {
    let f = fixtures_of_family("regnet")
        .into_iter()
        .find(|f| f.weights_dtype == "F16")
        .expect("an F16 regnet fixture");
    check_spec(&f, &f.spec("native"), "native f16");
}

#[test]
fn structure_is_read_from_the_weights_when_model_args_are_lost() {
    // transformers' TimmWrapper writes "model_args": null; the widths then differ from the
    // architecture's defaults and only the weights know them (global_pool stays at the root).
    for f in fixtures_of_family("regnet") {
        let dir = edited_copy(&f.name, "lost", |c| {
            c["model_args"] = serde_json::Value::Null
        });
        check_spec(&f, &format!("local:{}", dir.display()), "model_args=null");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn bare_names_without_weights_build_run_and_are_seeded() {
    let run = |arch: &str, seed: &str| {
        let m = CModel::create(arch, false, &[("seed", seed)])
            .unwrap_or_else(|e| panic!("{arch}: {e:?}"));
        assert_eq!(m.output_dim(), 1000);
        let x: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i % 251) as f32 / 125.0) - 1.0)
            .collect();
        m.infer(&x, &[1, 3, 224, 224]).unwrap()
    };
    let a = run("regnety_002", "1");
    assert!(a.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(a.iter().any(|v| *v != 0.0), "all-zero logits");
    assert_eq!(
        a,
        run("regnety_002", "1"),
        "same seed must give the same network"
    );
    assert_ne!(
        a,
        run("regnety_002", "2"),
        "another seed must give another network"
    );
    for arch in ["regnetx_002", "regnetx_004_tv", "regnetz_005"] {
        assert!(run(arch, "0").iter().all(|v| v.is_finite()), "{arch}");
    }
}

#[test]
fn weights_that_disagree_with_the_architecture_are_an_invalid_model() {
    // model_args describe wider stages than the weights hold.
    let dir = edited_copy("regnetx_002-small", "w0", |c| {
        c["model_args"]["w0"] = 16.into()
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("s1.b1."),
        "message must name the tensor: {}",
        e.message
    );
    let _ = std::fs::remove_dir_all(&dir);

    // An X file (no SE) under a Y architecture with the SE ratio given.
    let dir = edited_copy("regnetx_002-small", "se", |c| {
        c["architecture"] = "regnety_002".into();
        c["model_args"]["se_ratio"] = 0.25.into();
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_INVALID_MODEL, "{e:?}");
    assert!(
        e.message.contains("se.fc1.weight"),
        "message must name the tensor: {}",
        e.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_variants_say_so() {
    for (arch, needle) in [
        ("regnetv_040", "pre-activation"),
        ("regnety_040_sgn", "groupnorm"),
    ] {
        let e = CModel::create(arch, false, &[]).err().expect("must fail");
        assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{arch}: {e:?}");
        assert!(
            e.message.contains(arch) || e.message.contains(needle),
            "{arch}: {}",
            e.message
        );
    }
    let dir = edited_copy("regnetx_002-small", "args", |c| {
        c["model_args"]["block_type"] = "dark".into()
    });
    let e = CModel::create(
        &format!("local:{}", dir.display()),
        true,
        &[("graph", "native")],
    )
    .err()
    .expect("must fail");
    assert_eq!(e.status, TimmStatus::TIMM_ERR_UNSUPPORTED, "{e:?}");
    assert!(e.message.contains("block_type"), "{}", e.message);
    let _ = std::fs::remove_dir_all(&dir);
}
