//! include/timm.h must be exactly what cbindgen generates from the Rust exports, so C, C++ and
//! Go never build against a stale header. Set TIMM_BLESS=1 (scripts/gen-header) to rewrite it.

use std::path::Path;

#[test]
fn committed_header_matches_a_fresh_generation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen failed");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let path = root.join("include/timm.h");
    if std::env::var_os("TIMM_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/timm.h is out of date with src/ffi: run scripts/gen-header and commit the result"
    );
}
