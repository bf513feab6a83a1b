//! Links the tool dynamically against libnrt.so.1.
//!
//! The library directory is $NRT_LIB_DIR, default ../../build/lib (the library's `make lib`
//! output, relative to this manifest). The binary gets RUNPATH `$ORIGIN/../lib` (build/bin/
//! next to build/lib, or an installed bin/ next to lib/), then that directory's absolute path
//! (so target/release/nrt-sr-perf runs in place). LD_LIBRARY_PATH still overrides both.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=NRT_LIB_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = match std::env::var_os("NRT_LIB_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => manifest.join("../../build/lib"),
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    if !dir.join("libnrt.so.1").exists() {
        eprintln!(
            "error: libnrt.so.1 not found in {}: build it first (`make lib` in the repository root) or set NRT_LIB_DIR \
             to the directory that holds it",
            dir.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    // `-l:libnrt.so.1`: the SONAME itself, no need for the libnrt.so development link.
    println!("cargo:rustc-link-lib=dylib:+verbatim=libnrt.so.1");
    // Every linked target (the binary and its unit-test harness in target/*/deps/).
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib:{}", dir.display());
}
