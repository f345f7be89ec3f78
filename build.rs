//! Gives the cdylib a versioned SONAME (libtimm.so.<major>) so installs can ship
//! libtimm.so -> libtimm.so.<major> -> libtimm.so.<version> and programs linked against it record
//! the ABI-bearing name, not the unversioned development symlink. Only the cdylib gets the
//! flag: the rlib used by `cargo test` and Rust dependents is untouched.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // ELF platforms only; macOS uses install_name and Windows has no SONAME.
    if matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    ) {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtimm.so.{major}");
    }
}
