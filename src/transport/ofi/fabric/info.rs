//! `fi_getinfo`'s offers: the list, the names in one offer, and the offer with device memory that
//! matches another (for `open_rails`).

use super::fi::{fi_error, text};
use crate::status::{Error, Result};
use crate::transport::ofi::sys;
use std::ffi::CString;
use std::ptr::{null, null_mut};

/// A list from `fi_getinfo` (or one `fi_allocinfo`), freed on drop.
pub(super) struct InfoList(pub(super) *mut sys::fi_info);

impl Drop for InfoList {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: allocated by libfabric (fi_getinfo / fi_allocinfo), freed once.
            unsafe { sys::fi_freeinfo(self.0) };
        }
    }
}

/// `fi_getinfo` for RDM endpoints with tagged messages (and RMA when `rma`, and device memory,
/// `FI_HMEM` with `FI_MR_HMEM`, when `hmem`). `Ok(None)`: the provider offers nothing that
/// matches (`-FI_ENODATA`).
pub(super) fn getinfo(provider: Option<&str>, rma: bool, hmem: bool) -> Result<Option<InfoList>> {
    // SAFETY: plain allocation; checked below.
    let hints = InfoList(unsafe { sys::nrt_fi_allocinfo() });
    if hints.0.is_null() {
        return Err(Error::resource("fi_allocinfo: out of memory"));
    }
    let prov = match provider {
        Some(p) => Some(CString::new(p).map_err(|_| Error::invalid(format!("libfabric provider name {p:?} holds a NUL")))?),
        None => None,
    };
    // SAFETY: fi_allocinfo allocated the info and each of its attribute structures (zeroed), all
    // ours until freed; the provider name is strdup'ed because fi_freeinfo frees it.
    unsafe {
        let h = &mut *hints.0;
        h.caps = sys::FI_TAGGED | sys::FI_MSG;
        if rma {
            h.caps |= sys::FI_RMA | sys::FI_READ | sys::FI_WRITE | sys::FI_REMOTE_READ | sys::FI_REMOTE_WRITE;
        }
        if hmem {
            h.caps |= sys::FI_HMEM;
        }
        h.mode = sys::FI_CONTEXT | sys::FI_CONTEXT2;
        (*h.ep_attr).type_ = sys::FI_EP_RDM;
        (*h.domain_attr).mr_mode = sys::FI_MR_LOCAL | sys::FI_MR_VIRT_ADDR | sys::FI_MR_ALLOCATED | sys::FI_MR_PROV_KEY;
        if hmem {
            // Device buffers are registered with fi_mr_regattr and their descriptors passed.
            (*h.domain_attr).mr_mode |= sys::FI_MR_HMEM;
        }
        if let Some(p) = &prov {
            (*h.fabric_attr).prov_name = libc::strdup(p.as_ptr());
            if (*h.fabric_attr).prov_name.is_null() {
                return Err(Error::resource("strdup: out of memory"));
            }
        }
    }
    let mut out = null_mut();
    // SAFETY: the hints are a complete fi_info; `out` receives a list we free (InfoList).
    let ret = unsafe { sys::fi_getinfo(sys::API_VERSION, null(), null(), 0, hints.0, &mut out) };
    let list = InfoList(out);
    if ret == -sys::FI_ENODATA || (ret == 0 && out.is_null()) {
        return Ok(None);
    }
    if ret != 0 {
        return Err(fi_error("fi_getinfo", ret.into()));
    }
    Ok(Some(list))
}

/// The domain name of one info.
///
/// # Safety
/// `i` is an element of a live list from `fi_getinfo`.
pub(super) unsafe fn domain_name(i: &sys::fi_info) -> String {
    // SAFETY: the caller's contract: fi_getinfo fills the attributes, names NUL-terminated.
    unsafe { i.domain_attr.as_ref().map(|d| text(d.name)).unwrap_or_default() }
}

/// The provider name of one info ("tcp;ofi_rxm", "shm" ...).
///
/// # Safety
/// `i` is an element of a live list from `fi_getinfo`.
pub(super) unsafe fn provider_name(i: &sys::fi_info) -> String {
    // SAFETY: the caller's contract.
    unsafe { i.fabric_attr.as_ref().map(|f| text(f.prov_name)).unwrap_or_default() }
}

/// Whether an info's provider offers RMA writes with 4 bytes of CQ data (`Limits::write_data`).
///
/// # Safety
/// `i` is an element of a live list from `fi_getinfo`.
unsafe fn writes_data(i: &sys::fi_info) -> bool {
    // SAFETY: the caller's contract.
    i.caps & sys::FI_RMA != 0 && unsafe { i.domain_attr.as_ref() }.is_some_and(|d| d.cq_data_size >= 4)
}

/// The element of `hmem` (a list from `getinfo` with `FI_HMEM`) of `p`'s provider and domain
/// whose capabilities do hold `FI_HMEM` and `FI_RMA`, and whose RMA writes are `p`'s (the
/// protocol's mode must not change: a peer without device memory opens `p`), else `p` itself.
///
/// # Safety
/// `p` and the elements of `hmem` belong to live lists from `fi_getinfo`.
pub(super) unsafe fn with_hmem(p: *mut sys::fi_info, hmem: &InfoList) -> *mut sys::fi_info {
    // SAFETY: the caller's contract.
    let (want_dom, want_prov, want_writes) = unsafe { (domain_name(&*p), provider_name(&*p), writes_data(&*p)) };
    let mut q = hmem.0;
    while !q.is_null() {
        // SAFETY: an element of the live list.
        let i = unsafe { &*q };
        // SAFETY: as above.
        let offers = i.caps & sys::FI_HMEM != 0 && i.caps & sys::FI_RMA != 0 && unsafe { writes_data(i) } == want_writes;
        // SAFETY: as above.
        if offers && unsafe { domain_name(i) == want_dom && provider_name(i) == want_prov } {
            return q;
        }
        q = i.next;
    }
    p
}
