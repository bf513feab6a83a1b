//! Preload mode: tensors belong to the vendor's libnrt, reached with `dlsym(RTLD_NEXT, ...)`.
//!
//! A tensor is device memory when the vendor's `nrt_tensor_get_device_allocation_info` (looked up
//! too, but optional: a libnrt without it has no device tensors as far as we can tell) succeeds
//! for it; else it is host memory.
//!
//! - A host tensor with a host address (`nrt_tensor_get_va` non-NULL) moves straight between
//!   that memory and the socket or NIC.
//! - A device tensor is staged: the transport reads or writes it through
//!   `nrt_tensor_read`/`nrt_tensor_write` one chunk at a time, so host memory stays bounded
//!   whatever the message size. Where it also has a virtual address (HBM mapped into the process,
//!   `NEURON_RT_MAP_HBM`), the region carries that address too (`Region::device`): a transport
//!   that registers device memory (libfabric with `FI_HMEM`) lets the NIC reach it there; no code
//!   of ours loads or stores through it.
//! - A tensor that is neither (no address, no device information) is staged, as before.

use super::{DeviceAddr, Region, StagedMemory};
use crate::status::{Error, NRT_STATUS, Result};
use std::ffi::{CStr, c_int, c_void};
use std::sync::{Arc, OnceLock};

type GetVa = unsafe extern "C" fn(*const c_void) -> *mut c_void;
type GetSize = unsafe extern "C" fn(*const c_void) -> usize;
type Read = unsafe extern "C" fn(*const c_void, *mut c_void, usize, usize) -> c_int;
type Write = unsafe extern "C" fn(*mut c_void, *const c_void, usize, usize) -> c_int;
type GetAllocInfo = unsafe extern "C" fn(*const c_void, *mut AllocInfo) -> c_int;

/// `nrt_tensor_device_allocation_info_t` of the vendor's nrt.h.
#[repr(C)]
#[derive(Default)]
struct AllocInfo {
    physical_address: u64,
    size: usize,
    hbm_index: c_int,
}

struct Vendor {
    get_va: GetVa,
    get_size: GetSize,
    read: Read,
    write: Write,
    /// Absent from a libnrt that does not have it: then no tensor is known to be device memory.
    alloc_info: Option<GetAllocInfo>,
}

fn sym(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; the result is checked for NULL.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

fn vendor() -> Result<&'static Vendor> {
    static V: OnceLock<Option<Vendor>> = OnceLock::new();
    V.get_or_init(|| {
        let (va, size, read, write) =
            (sym(c"nrt_tensor_get_va")?, sym(c"nrt_tensor_get_size")?, sym(c"nrt_tensor_read")?, sym(c"nrt_tensor_write")?);
        let info = sym(c"nrt_tensor_get_device_allocation_info");
        // SAFETY: these are the vendor's functions of the documented nrt.h signatures.
        Some(unsafe {
            Vendor {
                get_va: std::mem::transmute::<*mut c_void, GetVa>(va),
                get_size: std::mem::transmute::<*mut c_void, GetSize>(size),
                read: std::mem::transmute::<*mut c_void, Read>(read),
                write: std::mem::transmute::<*mut c_void, Write>(write),
                alloc_info: info.map(|p| std::mem::transmute::<*mut c_void, GetAllocInfo>(p)),
            }
        })
    })
    .as_ref()
    .ok_or_else(|| Error::failure("preload mode: the vendor's nrt_tensor_* functions are not loaded (is libnrt.so.1 linked?)"))
}

/// A range of a vendor tensor reached through `nrt_tensor_read`/`nrt_tensor_write`.
struct VendorTensor {
    t: *mut c_void,
    base: usize,
}

// SAFETY: the vendor's tensor functions are thread-safe for distinct ranges; we only pass the
// handle back to them.
unsafe impl Send for VendorTensor {}
// SAFETY: as above.
unsafe impl Sync for VendorTensor {}

impl StagedMemory for VendorTensor {
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let v = vendor()?;
        // SAFETY: buf is writable for its length; the range was bounds-checked when posted.
        let st = unsafe { (v.read)(self.t, buf.as_mut_ptr().cast(), self.base + offset, buf.len()) };
        if st != 0 {
            return Err(Error::new(NRT_STATUS::NRT_FAILURE, format!("vendor nrt_tensor_read returned {st}")));
        }
        Ok(())
    }
    fn write(&self, offset: usize, buf: &[u8]) -> Result<()> {
        let v = vendor()?;
        // SAFETY: buf is readable for its length; the range was bounds-checked when posted.
        let st = unsafe { (v.write)(self.t, buf.as_ptr().cast(), self.base + offset, buf.len()) };
        if st != 0 {
            return Err(Error::new(NRT_STATUS::NRT_FAILURE, format!("vendor nrt_tensor_write returned {st}")));
        }
        Ok(())
    }
}

/// Where a vendor tensor lives: `Some(hbm_index)` for device memory (the vendor's allocation
/// information says so), `None` for host memory or when the vendor library cannot tell.
fn device_memory(v: &Vendor, t: *mut c_void) -> Option<i32> {
    let f = v.alloc_info?;
    let mut info = AllocInfo::default();
    // SAFETY: t is the caller's vendor tensor (the vendor checks its own handles); info is a
    // writable nrt_tensor_device_allocation_info_t.
    let st = unsafe { f(t, &mut info) };
    (st == 0).then_some(info.hbm_index)
}

/// The bytes `offset..offset+len` of a vendor tensor.
pub fn region(t: *mut c_void, offset: usize, len: usize) -> Result<Region> {
    if t.is_null() {
        return Err(Error::handle("tensor handle is NULL"));
    }
    let v = vendor()?;
    // SAFETY: t is the caller's vendor tensor; the vendor checks its own handles.
    let size = unsafe { (v.get_size)(t) };
    match offset.checked_add(len) {
        Some(end) if end <= size => {}
        _ => return Err(Error::invalid(format!("range offset={offset} length={len} is outside the tensor of {size} bytes"))),
    }
    // SAFETY: as above.
    let va = unsafe { (v.get_va)(t) };
    let staged = || Arc::new(VendorTensor { t, base: offset });
    match (device_memory(v, t), va.is_null()) {
        // Device memory with an address (mapped HBM): staged, and registered as device memory
        // by a transport that can. The address is never dereferenced here.
        (Some(hbm_index), false) => Ok(Region::device(staged(), len, DeviceAddr { va: va.addr().wrapping_add(offset), hbm_index })),
        (None, false) => Ok(Region::borrowed(va.cast::<u8>().wrapping_add(offset), len)),
        (_, true) => Ok(Region::staged(staged(), len)),
    }
}
