//! nrt-sendrecv: a drop-in replacement for the Neuron runtime's `nrt_async_sendrecv_*` C API.
//!
//! Layers, each using only those below it (docs/architecture.md): `ffi` (the C exports) →
//! `runtime` (init/close, the lnc table) → `engine` (an lnc: listener, progress thread,
//! handshakes, transport choice) → `comm` (communicators, requests, the request table) →
//! `transport` (one interface; tcp, shm, verbs) → `wire`, `tensor`, `sys` (frames, tensor memory,
//! system calls), with `config`, `status`, `log` and `registry` beside them. Unsafe code sits in
//! `ffi`, `sys`, `transport`, `tensor` and the request table (`comm/slots.rs`), each block with its
//! `// SAFETY:` line.
//!
//! Everything is crate-private but the C exports and [`fuzzing`], the narrow surface the fuzz
//! targets drive.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// The LD_PRELOAD build leaves the standalone tensor API (the vendor library has its own) unused.
#![cfg_attr(feature = "preload", allow(dead_code, unused_imports))]

pub(crate) mod comm;
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod ffi;
pub(crate) mod log;
pub(crate) mod registry;
pub(crate) mod runtime;
pub(crate) mod status;
pub(crate) mod sys;
pub(crate) mod tensor;
pub(crate) mod transport;
pub(crate) mod wire;

/// What the fuzz targets (fuzz/) drive: the frame decoder, and lncs started with a given
/// configuration whose listeners take hostile bytes.
pub mod fuzzing {
    pub use crate::comm::Comm;
    pub use crate::config::{Config, Transport};
    pub use crate::log::reload as reload_log;
    pub use crate::runtime::{accept, close, connect, init_with, nrt_close, nrt_init};
    pub use crate::status::{Error, NRT_STATUS};
    pub use crate::wire::{FLAG_AUTH, Frame, HEADER_LEN, ack};
}

/// Tests that measure this process's memory (RSS) hold this lock, and so do tests that allocate
/// tens of MiB at once, so the two never overlap (the test harness runs tests on threads).
#[cfg(test)]
pub(crate) static MEMORY_HEAVY_TESTS: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
