//! The C ABI: `#[unsafe(no_mangle)] extern "C"` functions with the vendor's exact signatures.
//!
//! Every function catches panics (they become `NRT_FAILURE`), checks every pointer it is given,
//! turns handles into registry ids (never dereferencing them), and logs each error once, naming
//! the function and the cause.

#[cfg(not(feature = "preload"))]
mod info;
#[cfg(not(feature = "preload"))]
mod runtime;
mod sendrecv;
#[cfg(not(feature = "preload"))]
mod tensor;

#[cfg(all(test, not(feature = "preload")))]
mod tests;

/// A tensor (opaque; in the standalone library the pointer is a checked handle, in preload mode
/// it is the vendor runtime's own tensor).
#[allow(non_camel_case_types)]
pub struct nrt_tensor {
    _opaque: [u8; 0],
}
#[allow(non_camel_case_types)]
pub type nrt_tensor_t = nrt_tensor;

use crate::status::{Error, NRT_STATUS, Result};
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, mapping its error (or a panic) to a status; logs the failure once.
pub(crate) fn guard(func: &str, f: impl FnOnce() -> Result<()>) -> NRT_STATUS {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => NRT_STATUS::NRT_SUCCESS,
        Ok(Err(e)) => {
            report(func, &e);
            e.status
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            crate::log_error!("{func}: internal error (panic: {what}); returning NRT_FAILURE");
            NRT_STATUS::NRT_FAILURE
        }
    }
}

/// Like `guard` for functions without a status: a panic gives `default`.
#[cfg_attr(feature = "preload", allow(dead_code))]
pub(crate) fn guard_value<T>(func: &str, default: T, f: impl FnOnce() -> Result<T>) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            report(func, &e);
            default
        }
        Err(_) => {
            crate::log_error!("{func}: internal error (panic)");
            default
        }
    }
}

fn report(func: &str, e: &Error) {
    // Time-outs and peer failures are reported by the call that observes them; bad input from
    // the caller too. All at error level: each is one event the caller will want explained.
    crate::log_error!("{func}: {e}");
}

/// A NULL check for out-pointers and buffers.
pub(crate) fn non_null<T>(p: *const T, name: &str) -> Result<()> {
    if p.is_null() { Err(Error::invalid(format!("{name} is NULL"))) } else { Ok(()) }
}

/// Reads a C string argument; `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn c_str<'a>(p: *const c_char) -> Option<std::borrow::Cow<'a, str>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy())
}

/// The kind of object a handle names, in its bits 60-62 (ids leave them clear: generations stay
/// below 2^28), so that a handle of one kind passed where another is expected (a request handle
/// as a communicator) names nothing rather than whatever object of that kind has the same id.
pub(crate) trait HandleKind {
    const KIND: u64;
    /// For the log: "tensor", "communicator", "request".
    const NAME: &'static str;
}

impl HandleKind for nrt_tensor {
    const KIND: u64 = 1;
    const NAME: &'static str = "tensor";
}

const KIND_SHIFT: u32 = 60;

/// Handles are registry ids, tagged with their kind, cast to pointers: the id, or
/// NRT_INVALID_HANDLE for a handle of another kind (or a forged value).
pub(crate) fn handle_id<T: HandleKind>(p: *const T) -> Result<u64> {
    let v = p as usize as u64;
    if v >> KIND_SHIFT != T::KIND {
        return Err(Error::handle(format!("{p:p} is not a {} handle", T::NAME)));
    }
    Ok(v & ((1 << KIND_SHIFT) - 1))
}

pub(crate) fn id_handle<T: HandleKind>(id: u64) -> *mut T {
    debug_assert!(id >> KIND_SHIFT == 0, "id {id:#x} overlaps the kind bits");
    (id | T::KIND << KIND_SHIFT) as usize as *mut T
}
