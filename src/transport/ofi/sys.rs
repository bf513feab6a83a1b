//! The libfabric bindings build.rs generates (bindgen over the system's headers, allowlisted to
//! what the transport uses) and the `nrt_fi_*` out-of-line copies of the headers' inline entry
//! points (`wrapper.c`). Raw pointers to libfabric objects stay in this module and `fabric/`.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, unsafe_op_in_unsafe_fn)]
#![allow(clippy::all, clippy::pedantic, clippy::undocumented_unsafe_blocks)]

include!(concat!(env!("OUT_DIR"), "/ofi_bindings.rs"));

/// `FI_VERSION(1, 17)`: the API version asked for at `fi_getinfo` (a function-like macro, which
/// bindgen does not translate). The oldest this transport is written against, so that the same
/// binary runs on a newer libfabric.so.1.
pub const API_VERSION: u32 = (1 << 16) | 17;

/// `FI_ADDR_UNSPEC` (`(uint64_t) -1`, a cast bindgen does not evaluate).
pub const ADDR_UNSPEC: fi_addr_t = u64::MAX;
