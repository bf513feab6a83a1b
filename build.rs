//! Build script. Without the `ofi` feature it does nothing (and asks cargo to run it again only
//! when it changes). With `ofi`: bindgen over the system's libfabric headers (through
//! `src/transport/ofi/wrapper.c`, which includes them), the wrapper compiled by `cc` for the
//! headers' `static inline` entry points, and libfabric linked dynamically.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // (The feature's build-dependencies exist only with it, hence the cfg as well.)
    #[cfg(feature = "ofi")]
    if std::env::var_os("CARGO_FEATURE_OFI").is_some() {
        ofi::build();
    }
}

#[cfg(feature = "ofi")]
mod ofi {
    use bindgen::callbacks::{IntKind, ParseCallbacks};
    use std::env;
    use std::path::PathBuf;

    const WRAPPER: &str = "src/transport/ofi/wrapper.c";
    const HEADERS: [&str; 8] = ["fabric.h", "fi_domain.h", "fi_endpoint.h", "fi_tagged.h", "fi_rma.h", "fi_cm.h", "fi_eq.h", "fi_errno.h"];

    /// Integer macros as the transport uses them: flags, capabilities and modes are `u64` (the
    /// headers' `1ULL << n`; bindgen would pick `u32` for the small ones); memory-registration
    /// modes are `int` like `fi_domain_attr::mr_mode`; error numbers are `int`.
    #[derive(Debug)]
    struct MacroTypes;

    impl ParseCallbacks for MacroTypes {
        fn int_macro(&self, name: &str, value: i64) -> Option<IntKind> {
            if !name.starts_with("FI_") {
                return None;
            }
            let int = name.starts_with("FI_MR_")
                || name == "FI_SUCCESS"
                || (name.starts_with("FI_E") && !name.starts_with("FI_EVENT"))
                || name.ends_with("_VERSION");
            // (Newer headers have 64-bit registration flags named FI_MR_*: those stay u64.)
            Some(if int && i32::try_from(value).is_ok() {
                IntKind::Int
            } else if value < 0 {
                IntKind::I64
            } else {
                IntKind::U64
            })
        }
    }

    /// Where the libfabric headers are: `$LIBFABRIC_DIR/include` when that is set (a libfabric
    /// built elsewhere, e.g. /opt/amazon/efa), else the compiler's default paths (Debian:
    /// /usr/include/rdma from libfabric-dev).
    fn include_dir() -> Option<PathBuf> {
        println!("cargo:rerun-if-env-changed=LIBFABRIC_DIR");
        env::var_os("LIBFABRIC_DIR").filter(|d| !d.is_empty()).map(|d| PathBuf::from(d).join("include"))
    }

    pub fn build() {
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
        let inc = include_dir();
        println!("cargo:rerun-if-changed={WRAPPER}");
        let hdr_dir = inc.clone().unwrap_or_else(|| PathBuf::from("/usr/include"));
        for h in HEADERS {
            let p = hdr_dir.join("rdma").join(h);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }

        let mut b = bindgen::Builder::default()
            .header(WRAPPER)
            .rust_target(bindgen::RustTarget::stable(85, 0).expect("a Rust target bindgen knows"))
            .rust_edition(bindgen::RustEdition::Edition2024)
            .parse_callbacks(Box::new(MacroTypes))
            .prepend_enum_name(false)
            .derive_default(true)
            .derive_debug(false)
            .generate_comments(false)
            .layout_tests(true)
            .wrap_unsafe_ops(true)
            .merge_extern_blocks(true)
            // Types: the objects and attributes the transport touches (what they point to
            // comes along).
            .allowlist_type("fi_info")
            .allowlist_type("fi_(tx|rx|ep|domain|fabric|cq|av)_attr")
            .allowlist_type("fid(_(fabric|domain|ep|cq|av|mr))?")
            .allowlist_type("fi_cq_tagged_entry")
            .allowlist_type("fi_cq_err_entry")
            .allowlist_type("fi_context2")
            .allowlist_type("fi_mr_attr")
            .allowlist_type("fi_addr_t")
            // Constants: the FI_* macros and anonymous-enum values (capabilities, modes, flags,
            // error numbers, FI_GETWAIT ...).
            .allowlist_var("FI_.*")
            // Functions: the exported ones, and the wrapper's out-of-line copies of the inline ones.
            .allowlist_function("fi_(getinfo|freeinfo|dupinfo|fabric|strerror|version)")
            .allowlist_function("nrt_fi_.*");
        if let Some(dir) = &inc {
            b = b.clang_arg(format!("-I{}", dir.display()));
        }
        let bindings = b.generate().expect("bindgen over the libfabric headers (libfabric-dev, libclang-dev)");
        bindings.write_to_file(out.join("ofi_bindings.rs")).expect("writing the libfabric bindings");

        let mut cc = cc::Build::new();
        cc.file(WRAPPER).warnings(true).extra_warnings(true);
        if let Some(dir) = &inc {
            cc.include(dir);
        }
        cc.compile("nrt_ofi_wrapper");

        if let Some(dir) = &inc {
            let lib = dir.parent().expect("LIBFABRIC_DIR/include").join("lib");
            println!("cargo:rustc-link-search=native={}", lib.display());
            let lib64 = lib.with_file_name("lib64");
            if lib64.exists() {
                println!("cargo:rustc-link-search=native={}", lib64.display());
            }
        }
        println!("cargo:rustc-link-lib=dylib=fabric");
    }
}
