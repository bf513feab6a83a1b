//! The tensor part of `nrt.h`, over host memory for every placement.

use super::{c_str, guard, guard_value, handle_id, id_handle, non_null};
use crate::status::{Error, Result};
use crate::tensor::{self, TENSORS, Tensor};
use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use super::nrt_tensor_t;

/// The placement argument as it arrives: any int a caller passes is safe to receive.
/// (Exported as `nrt_tensor_placement_t` in the header.)
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct PlacementArg(pub c_int);

fn live_id(p: *const nrt_tensor_t) -> Result<u64> {
    if p.is_null() {
        return Err(Error::handle("tensor handle is NULL"));
    }
    Ok(handle_id(p))
}

pub(crate) fn from_handle(p: *const nrt_tensor_t) -> Result<Arc<Tensor>> {
    tensor::lookup(live_id(p)?)
}

/// `from_handle` for a use that ends before the call returns: in place, no reference counting.
pub(crate) fn with_handle<R>(p: *const nrt_tensor_t, f: impl FnOnce(&Tensor) -> Result<R>) -> Result<R> {
    tensor::with(live_id(p)?, f)
}

fn name_of(name: *const c_char) -> String {
    // SAFETY: name is NULL or a C string by the API's contract.
    unsafe { c_str(name) }.map(|s| s.into_owned()).unwrap_or_default()
}

fn publish(t: Tensor, out: *mut *mut nrt_tensor_t) -> Result<()> {
    let (id, _) = TENSORS.insert_with(|_| Arc::new(t)).ok_or_else(|| Error::resource("tensor table full"))?;
    // SAFETY: out was NULL-checked by the caller and points to storage for one pointer.
    unsafe { out.write(id_handle(id)) };
    Ok(())
}

/// Allocates `size` bytes of zeroed host memory (every placement, `vnc` ignored: no devices).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_allocate(
    tensor_placement: PlacementArg,
    vnc: c_int,
    size: usize,
    name: *const c_char,
    tensor: *mut *mut nrt_tensor_t,
) -> crate::status::NRT_STATUS {
    let _ = vnc;
    guard("nrt_tensor_allocate", || {
        non_null(tensor, "tensor out-pointer")?;
        if !(0..=2).contains(&tensor_placement.0) {
            return Err(Error::invalid(format!("placement {} is not an nrt_tensor_placement_t", tensor_placement.0)));
        }
        let t = Tensor::allocate(size, name_of(name))?;
        publish(t, tensor)
    })
}

/// Allocates a tensor with no memory; give it some with `nrt_tensor_attach_buffer`.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_allocate_empty(name: *const c_char, tensor: *mut *mut nrt_tensor_t) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_allocate_empty", || {
        non_null(tensor, "tensor out-pointer")?;
        publish(Tensor::empty(name_of(name)), tensor)
    })
}

/// Makes the tensor a view of the caller's buffer (which must outlive its use by the tensor).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_attach_buffer(tensor: *mut nrt_tensor_t, buffer: *mut c_void, size: usize) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_attach_buffer", || {
        let id = live_id(tensor)?;
        if buffer.is_null() && size > 0 {
            return Err(Error::invalid("buffer is NULL"));
        }
        // SAFETY: the caller promises the buffer stays valid for `size` bytes while attached.
        unsafe { tensor::attach(id, buffer.cast(), size) }
    })
}

/// A new tensor viewing `size` bytes of `source` from `offset` (sharing its memory).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_allocate_slice(
    tensor_source: *const nrt_tensor_t,
    offset: usize,
    size: usize,
    name: *const c_char,
    tensor_slice: *mut *mut nrt_tensor_t,
) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_allocate_slice", || {
        let src = from_handle(tensor_source)?;
        non_null(tensor_slice, "slice out-pointer")?;
        let s = src.slice(offset, size, name_of(name))?;
        publish(s, tensor_slice)
    })
}

/// Frees the tensor and sets `*tensor` to NULL; NULL and stale handles are ignored (logged).
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointer; it is NULL-checked before it is read or written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn nrt_tensor_free(tensor: *mut *mut nrt_tensor_t) {
    guard_value("nrt_tensor_free", (), || {
        if tensor.is_null() {
            return Ok(());
        }
        // SAFETY: non-NULL; points to the caller's tensor pointer.
        let h = unsafe { tensor.read() };
        if h.is_null() {
            return Ok(());
        }
        // SAFETY: as above.
        unsafe { tensor.write(std::ptr::null_mut()) };
        // Memory in use by a transfer stays mapped until the transfer ends (see tensor::Region).
        TENSORS
            .remove(handle_id(h))
            .map(|_| ())
            .ok_or_else(|| Error::handle(format!("tensor handle {h:p} is not a live tensor (freed twice?)")))
    })
}

/// Copies `size` bytes at `offset` of the tensor into `buf`.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_read(tensor: *const nrt_tensor_t, buf: *mut c_void, offset: usize, size: usize) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_read", || {
        let t = from_handle(tensor)?;
        if buf.is_null() && size > 0 {
            return Err(Error::invalid("buf is NULL"));
        }
        // SAFETY: buf is valid for size bytes of writes by the API's contract (NULL checked).
        unsafe { tensor::read(&t, buf.cast(), offset, size) }
    })
}

/// Copies `size` bytes from `buf` into the tensor at `offset`.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_write(tensor: *mut nrt_tensor_t, buf: *const c_void, offset: usize, size: usize) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_write", || {
        let t = from_handle(tensor)?;
        if buf.is_null() && size > 0 {
            return Err(Error::invalid("buf is NULL"));
        }
        // SAFETY: buf is valid for size bytes of reads by the API's contract (NULL checked).
        unsafe { tensor::write(&t, buf.cast(), offset, size) }
    })
}

/// The tensor's size in bytes; 0 for a bad handle (logged).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_get_size(tensor: *const nrt_tensor_t) -> usize {
    guard_value("nrt_tensor_get_size", 0, || Ok(from_handle(tensor)?.size()))
}

/// The host address of the tensor's first byte; NULL for a bad handle (logged) or no memory.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_get_va(tensor: *const nrt_tensor_t) -> *mut c_void {
    guard_value("nrt_tensor_get_va", std::ptr::null_mut(), || Ok(from_handle(tensor)?.va().cast()))
}

/// Copies `size` bytes between tensors (overlap allowed).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_copy(
    src: *const nrt_tensor_t,
    src_offset: usize,
    dst: *mut nrt_tensor_t,
    dst_offset: usize,
    size: usize,
) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_copy", || {
        let s = from_handle(src)?;
        let d = from_handle(dst)?;
        tensor::copy(&s, src_offset, &d, dst_offset, size)
    })
}

/// Sets `size` bytes at `offset` to `value` (converted to unsigned char, as memset does).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_memset(tensor: *mut nrt_tensor_t, offset: u64, value: c_int, size: usize) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_memset", || {
        let t = from_handle(tensor)?;
        let off = usize::try_from(offset).map_err(|_| Error::invalid("offset does not fit in size_t"))?;
        tensor::memset(&t, off, value as u8, size)
    })
}
