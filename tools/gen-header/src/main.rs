//! `make header`: writes include/nrt/{nrt_status.h, nrt.h, nrt_async_sendrecv.h, nrt_version.h}.
//!
//! Shared settings come from the top-level `cbindgen.toml`; this program only says which items
//! belong in which header (cbindgen writes one file per run) and how they include each other.
//! Usage: gen-header CRATE_DIR OUT_DIR

use std::path::PathBuf;

struct Header {
    file: &'static str,
    guard: &'static str,
    includes: &'static [&'static str],
    /// Lines written after the includes (the vendor's macros).
    defines: &'static str,
    /// Items (types and functions) that go in this header; every other item is excluded.
    items: &'static [&'static str],
    doc: &'static str,
}

const HEADERS: &[Header] = &[
    Header {
        file: "nrt_status.h",
        guard: "NRT_STATUS_H",
        includes: &[],
        defines: "",
        items: &["NRT_STATUS", "nrt_get_status_as_str"],
        doc: "Status codes returned by every nrt_* function.",
    },
    Header {
        file: "nrt.h",
        guard: "NRT_H",
        includes: &["nrt/nrt_status.h"],
        defines: "",
        items: &[
            "nrt_framework_type_t",
            "nrt_tensor_placement_t",
            "nrt_tensor",
            "nrt_tensor_t",
            "nrt_init",
            "nrt_close",
            "nrt_tensor_allocate",
            "nrt_tensor_allocate_empty",
            "nrt_tensor_attach_buffer",
            "nrt_tensor_allocate_slice",
            "nrt_tensor_free",
            "nrt_tensor_read",
            "nrt_tensor_write",
            "nrt_tensor_get_size",
            "nrt_tensor_get_va",
            "nrt_tensor_copy",
            "nrt_tensor_memset",
            "nrt_get_total_nc_count",
            "nrt_get_visible_nc_count",
            "nrt_get_total_vnc_count",
            "nrt_get_visible_vnc_count",
        ],
        doc: "Runtime initialisation and host-memory tensors (the part of the Neuron runtime's nrt.h that nrt-sendrecv implements).",
    },
    Header {
        file: "nrt_async_sendrecv.h",
        guard: "NRT_ASYNC_SENDRECV_H",
        includes: &["nrt/nrt.h"],
        defines: "",
        items: &[
            "nrt_async_sendrecv_comm",
            "nrt_async_sendrecv_comm_t",
            "nrt_async_sendrecv_request",
            "nrt_async_sendrecv_request_t",
            "nrt_async_sendrecv_get_max_num_communicators_per_lnc",
            "nrt_async_sendrecv_get_max_num_pending_request",
            "nrt_async_sendrecv_init",
            "nrt_async_sendrecv_close",
            "nrt_async_sendrecv_connect",
            "nrt_async_sendrecv_accept",
            "nrt_async_sendrecv_test_comm",
            "nrt_async_sendrecv_send_tensor",
            "nrt_async_sendrecv_recv_tensor",
            "nrt_async_sendrecv_test_request",
            "nrt_async_sendrecv_flush",
        ],
        doc: "Asynchronous tensor send/receive between logical cores (nrt_async_sendrecv_*).",
    },
    Header {
        file: "nrt_version.h",
        guard: "NRT_VERSION_H",
        includes: &["nrt/nrt_status.h"],
        defines: "#define RT_VERSION_DETAIL_LEN 128\n#define GIT_HASH_LEN 64",
        items: &["nrt_version", "nrt_version_t", "nrt_get_version"],
        doc: "The runtime's version (nrt_get_version): nrt-sendrecv's own.",
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: gen-header CRATE_DIR OUT_DIR");
        std::process::exit(2);
    }
    let crate_dir = PathBuf::from(&args[1]);
    let out_dir = PathBuf::from(&args[2]);
    let base = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("read cbindgen.toml");
    let all: Vec<&str> = HEADERS.iter().flat_map(|h| h.items.iter().copied()).collect();
    std::fs::create_dir_all(&out_dir).expect("create output directory");
    for h in HEADERS {
        let mut cfg = base.clone();
        cfg.include_guard = Some(h.guard.to_string());
        cfg.sys_includes = vec!["stdbool.h".into(), "stddef.h".into(), "stdint.h".into()];
        cfg.includes = h.includes.iter().map(|s| s.to_string()).collect();
        if !h.defines.is_empty() {
            cfg.after_includes = Some(h.defines.to_string());
        }
        cfg.header = Some(format!(
            "/* SPDX-License-Identifier: Apache-2.0 */\n/* nrt-sendrecv: {}\n * Generated from the Rust source by `make header` (cbindgen {}); do not edit. */",
            h.doc, "0.29.4",
        ));
        cfg.export.include = h.items.iter().map(|s| s.to_string()).collect();
        cfg.export.exclude.extend(all.iter().filter(|n| !h.items.contains(n)).map(|s| s.to_string()));
        let mut text = Vec::new();
        cbindgen::Builder::new()
            .with_config(cfg)
            .with_crate(&crate_dir)
            .generate()
            .unwrap_or_else(|e| panic!("cbindgen failed for {}: {e}", h.file))
            .write(&mut text);
        let text = String::from_utf8(text).expect("cbindgen writes UTF-8");
        // The vendor declares `typedef struct nrt_version { ... } nrt_version_t;` (no typedef
        // named `nrt_version`); cbindgen's "both" style would add one.
        let text = text.replace("} nrt_version;\n\ntypedef struct nrt_version nrt_version_t;", "} nrt_version_t;");
        std::fs::write(out_dir.join(h.file), text).unwrap_or_else(|e| panic!("write {}: {e}", h.file));
    }
}
