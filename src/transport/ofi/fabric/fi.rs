//! libfabric's errors, its objects' common `struct fid` (and closing them), and the names of its
//! capability, mode and registration bits (for the logs).

use crate::status::{Error, NRT_STATUS};
use crate::transport::ofi::sys;
use std::ffi::{CStr, c_char, c_int};
use std::ptr::null_mut;

pub(super) fn eagain() -> i64 {
    -i64::from(sys::FI_EAGAIN)
}

/// A string libfabric returned.
///
/// # Safety
/// `p` is null or a NUL-terminated string that stays valid during the call.
pub(super) unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// libfabric's text for a (negative or positive) error number.
pub(super) fn strerror(ret: i64) -> String {
    let n = c_int::try_from(ret.unsigned_abs()).unwrap_or(c_int::MAX);
    // SAFETY: fi_strerror takes any number and returns a static string (or strerror's).
    unsafe { text(sys::fi_strerror(n)) }
}

/// An error from a libfabric call that returned `ret` (negative).
pub(super) fn fi_error(what: &str, ret: i64) -> Error {
    let status = if ret == -i64::from(sys::FI_ENOMEM) { NRT_STATUS::NRT_RESOURCE } else { NRT_STATUS::NRT_FAILURE };
    Error::new(status, format!("{what}: {} ({ret})", strerror(ret)))
}

/// libfabric objects, whose first member is their `struct fid`.
pub(super) trait AsFid {}
impl AsFid for sys::fid_fabric {}
impl AsFid for sys::fid_domain {}
impl AsFid for sys::fid_cq {}
impl AsFid for sys::fid_av {}
impl AsFid for sys::fid_ep {}
impl AsFid for sys::fid_mr {}

/// The object's `struct fid` (its first member, so the same address).
pub(super) fn fid<T: AsFid>(p: *mut T) -> *mut sys::fid {
    p.cast()
}

/// Closes an object if open and forgets it.
pub(super) fn close<T: AsFid>(p: &mut *mut T, what: &str) {
    if p.is_null() {
        return;
    }
    // SAFETY: an object this rail opened and closes once (nulled below); what was opened on it
    // is closed before it (FabricRail's drop order).
    let ret = unsafe { sys::nrt_fi_close(fid(*p)) };
    if ret != 0 {
        crate::log_warn!("libfabric: closing the {what}: {}", strerror(ret.into()));
    }
    *p = null_mut();
}

pub(super) const CAP_NAMES: [(u64, &str); 17] = [
    (sys::FI_MSG, "FI_MSG"),
    (sys::FI_RMA, "FI_RMA"),
    (sys::FI_TAGGED, "FI_TAGGED"),
    (sys::FI_ATOMIC, "FI_ATOMIC"),
    (sys::FI_READ, "FI_READ"),
    (sys::FI_WRITE, "FI_WRITE"),
    (sys::FI_RECV, "FI_RECV"),
    (sys::FI_SEND, "FI_SEND"),
    (sys::FI_REMOTE_READ, "FI_REMOTE_READ"),
    (sys::FI_REMOTE_WRITE, "FI_REMOTE_WRITE"),
    (sys::FI_MULTI_RECV, "FI_MULTI_RECV"),
    (sys::FI_RMA_EVENT, "FI_RMA_EVENT"),
    (sys::FI_SOURCE, "FI_SOURCE"),
    (sys::FI_DIRECTED_RECV, "FI_DIRECTED_RECV"),
    (sys::FI_LOCAL_COMM, "FI_LOCAL_COMM"),
    (sys::FI_REMOTE_COMM, "FI_REMOTE_COMM"),
    (sys::FI_HMEM, "FI_HMEM"),
];
pub(super) const MODE_NAMES: [(u64, &str); 5] = [
    (sys::FI_CONTEXT, "FI_CONTEXT"),
    (sys::FI_CONTEXT2, "FI_CONTEXT2"),
    (sys::FI_MSG_PREFIX, "FI_MSG_PREFIX"),
    (sys::FI_RX_CQ_DATA, "FI_RX_CQ_DATA"),
    (sys::FI_BUFFERED_RECV, "FI_BUFFERED_RECV"),
];
pub(super) const MR_MODE_NAMES: [(c_int, &str); 9] = [
    (sys::FI_MR_LOCAL, "FI_MR_LOCAL"),
    (sys::FI_MR_RAW, "FI_MR_RAW"),
    (sys::FI_MR_VIRT_ADDR, "FI_MR_VIRT_ADDR"),
    (sys::FI_MR_ALLOCATED, "FI_MR_ALLOCATED"),
    (sys::FI_MR_PROV_KEY, "FI_MR_PROV_KEY"),
    (sys::FI_MR_MMU_NOTIFY, "FI_MR_MMU_NOTIFY"),
    (sys::FI_MR_RMA_EVENT, "FI_MR_RMA_EVENT"),
    (sys::FI_MR_ENDPOINT, "FI_MR_ENDPOINT"),
    (sys::FI_MR_HMEM, "FI_MR_HMEM"),
];

/// "[ FI_MSG FI_TAGGED ]" for the bits of `v` the table names.
pub(super) fn names<T: Copy + std::ops::BitAnd<Output = T> + PartialEq + Default>(v: T, table: &[(T, &str)]) -> String {
    let set: Vec<&str> = table.iter().filter(|(b, _)| v & *b != T::default()).map(|(_, n)| *n).collect();
    format!("[ {} ]", set.join(" "))
}
