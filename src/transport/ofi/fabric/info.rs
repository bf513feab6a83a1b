//! Choosing rails: `fi_getinfo`'s offers for a provider, one per domain, and the rails opened on
//! those that are asked for ([`open_rails`]).

use super::fi::{fi_error, text};
use super::{FabricRail, RailsWanted, sys};
use crate::status::{Error, Result};
use std::ffi::CString;
use std::ptr::{null, null_mut};

/// A list from `fi_getinfo` (or one `fi_allocinfo`), freed on drop.
struct InfoList(*mut sys::fi_info);

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
fn getinfo(provider: Option<&str>, rma: bool, hmem: bool) -> Result<Option<InfoList>> {
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
unsafe fn domain_name(i: &sys::fi_info) -> String {
    // SAFETY: the caller's contract: fi_getinfo fills the attributes, names NUL-terminated.
    unsafe { i.domain_attr.as_ref().map(|d| text(d.name)).unwrap_or_default() }
}

/// The provider name of one info ("tcp;ofi_rxm", "shm" ...).
///
/// # Safety
/// `i` is an element of a live list from `fi_getinfo`.
unsafe fn provider_name(i: &sys::fi_info) -> String {
    // SAFETY: the caller's contract.
    unsafe { i.fabric_attr.as_ref().map(|f| text(f.prov_name)).unwrap_or_default() }
}

/// Opens one rail per domain `rails` asks for, of `provider` ("tcp", "shm", "efa", "verbs" ...;
/// `None`: libfabric's first choice, which `FI_PROVIDER` narrows). RMA (`FI_RMA`) is asked for
/// first, and done without where the provider has none. The domains are chosen as if device
/// memory were not asked for; then, with `hmem` and RMA, each chosen domain that the provider
/// also offers with `FI_HMEM` (a second `fi_getinfo`) is opened with that offer instead (which
/// may differ in more than `FI_HMEM`: `shm`'s has no inject size, for one; hence only callers
/// with device memory ask).
pub fn open_rails(provider: Option<&str>, rails: RailsWanted, hmem: bool) -> Result<Vec<FabricRail>> {
    let (list, rma) = match getinfo(provider, true, false)? {
        Some(l) => (l, true),
        None => (
            getinfo(provider, false, false)?.ok_or_else(|| {
                let env = std::env::var("FI_PROVIDER").map(|v| format!(" (FI_PROVIDER={v})")).unwrap_or_default();
                Error::failure(format!(
                    "libfabric offers no RDM endpoint with tagged messages from provider {}{env}",
                    provider.unwrap_or("(any)")
                ))
            })?,
            false,
        ),
    };
    // One candidate per domain name, in the provider's order (tcp lists a NIC once per address
    // family and endpoint flavour; the first is taken), all of one provider: libfabric's first
    // choice when none is named (rails of different providers could not talk to one peer).
    let mut domains: Vec<(String, *mut sys::fi_info)> = Vec::new();
    let mut first_provider: Option<String> = None;
    let mut p = list.0;
    while !p.is_null() {
        // SAFETY: p is an element of the list, alive until `list` drops at the end.
        let i = unsafe { &*p };
        // SAFETY: as above.
        let (name, prov) = unsafe { (domain_name(i), provider_name(i)) };
        let same = *first_provider.get_or_insert_with(|| prov.clone()) == prov;
        if same && !domains.iter().any(|(n, _)| *n == name) {
            domains.push((name, p));
        }
        p = i.next;
    }
    let offered = || domains.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
    let chosen: Vec<*mut sys::fi_info> = match &rails {
        RailsWanted::All => domains.iter().map(|(_, p)| *p).collect(),
        RailsWanted::Count(n) => {
            if domains.len() < *n {
                return Err(Error::invalid(format!(
                    "{n} libfabric rails asked for; the provider offers {} ({})",
                    domains.len(),
                    offered()
                )));
            }
            domains.iter().take(*n).map(|(_, p)| *p).collect()
        }
        RailsWanted::Domains(names) => names
            .iter()
            .map(|want| {
                domains
                    .iter()
                    .find(|(n, _)| n == want)
                    .map(|(_, p)| *p)
                    .ok_or_else(|| Error::invalid(format!("libfabric domain {want:?} is not offered (offered: {})", offered())))
            })
            .collect::<Result<_>>()?,
    };
    if chosen.is_empty() {
        return Err(Error::invalid("no libfabric rails asked for"));
    }
    // Device memory, optional: where it cannot be had, the rails are those chosen above.
    let hmem_list = if rma && hmem {
        getinfo(provider, true, true).unwrap_or_else(|e| {
            crate::log_debug!("libfabric: fi_getinfo with FI_HMEM: {e}; device memory is staged");
            None
        })
    } else {
        None
    };
    let chosen: Vec<*mut sys::fi_info> = match &hmem_list {
        // SAFETY: elements of `list` and `hmem_list`, alive until the end of this function.
        Some(h) => chosen.into_iter().map(|p| unsafe { with_hmem(p, h) }).collect(),
        None => chosen,
    };
    chosen
        .into_iter()
        // SAFETY: each is an element of `list`, alive during the calls.
        .map(|p| unsafe { FabricRail::open(p) })
        .collect()
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
unsafe fn with_hmem(p: *mut sys::fi_info, hmem: &InfoList) -> *mut sys::fi_info {
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
