//! Preload mode: tensors belong to the vendor's libnrt, reached with `dlsym(RTLD_NEXT, ...)`.
//!
//! A tensor with a host address (`nrt_tensor_get_va` non-NULL) moves straight between that memory
//! and the socket. A tensor without one (device memory) is staged: the transport reads or writes
//! it through `nrt_tensor_read`/`nrt_tensor_write` one chunk at a time, so host memory stays
//! bounded whatever the message size.

use super::{Region, StagedMemory};
use crate::status::{Error, NRT_STATUS, Result};
use std::ffi::{CStr, c_int, c_void};
use std::sync::{Arc, OnceLock};

type GetVa = unsafe extern "C" fn(*const c_void) -> *mut c_void;
type GetSize = unsafe extern "C" fn(*const c_void) -> usize;
type Read = unsafe extern "C" fn(*const c_void, *mut c_void, usize, usize) -> c_int;
type Write = unsafe extern "C" fn(*mut c_void, *const c_void, usize, usize) -> c_int;

struct Vendor {
    get_va: GetVa,
    get_size: GetSize,
    read: Read,
    write: Write,
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
        // SAFETY: these are the vendor's functions of the documented nrt.h signatures.
        Some(unsafe {
            Vendor {
                get_va: std::mem::transmute::<*mut c_void, GetVa>(va),
                get_size: std::mem::transmute::<*mut c_void, GetSize>(size),
                read: std::mem::transmute::<*mut c_void, Read>(read),
                write: std::mem::transmute::<*mut c_void, Write>(write),
            }
        })
    })
    .as_ref()
    .ok_or_else(|| Error::failure("preload mode: the vendor's nrt_tensor_* functions are not loaded (is libnrt.so.1 linked?)"))
}

/// A range of a vendor tensor without a host address.
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
    if !va.is_null() {
        return Ok(Region::borrowed(va.cast::<u8>().wrapping_add(offset), len));
    }
    Ok(Region::staged(Arc::new(VendorTensor { t, base: offset }), len))
}
