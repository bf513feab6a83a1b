//! Transports and the system calls under them: the only place (with `tensor` and `ffi`) that
//! holds unsafe code.

pub mod poll;
pub mod tcp;
