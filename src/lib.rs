//! nrt-sendrecv: a drop-in replacement for the Neuron runtime's `nrt_async_sendrecv_*` C API.
//!
//! The C ABI lives in `ffi`; everything below it is safe Rust except the transport and tensor
//! memory modules, which touch raw memory and sockets.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod comm;
pub mod config;
pub mod engine;
pub mod ffi;
pub mod log;
pub mod registry;
pub mod runtime;
pub mod status;
pub mod sys;
pub mod tensor;
pub mod transport;
pub mod wire;

/// Tests that measure this process's memory (RSS) hold this lock, and so do tests that allocate
/// tens of MiB at once, so the two never overlap (the test harness runs tests on threads).
#[cfg(test)]
pub(crate) static MEMORY_HEAVY_TESTS: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
