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
    handle_id(p)
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

/// Enters `t` in the tensor table and writes its handle to `*out` (left as it was when the table
/// is full: `NRT_RESOURCE`).
///
/// # Safety
/// `out` must be non-NULL (callers check it with `non_null` first), aligned, and valid for a
/// write of one pointer for the duration of the call. For the C caller's out-pointer the last two
/// are the API's contract, which the library cannot check.
unsafe fn publish(t: Tensor, out: *mut *mut nrt_tensor_t) -> Result<()> {
    let (id, _) = TENSORS.insert_with(|_| Arc::new(t)).ok_or_else(|| Error::resource("tensor table full"))?;
    // SAFETY: non-NULL, aligned and valid for writes by this function's contract.
    unsafe { out.write(id_handle(id)) };
    Ok(())
}

/// Allocates a tensor of `size` bytes of zeroed, page-aligned host memory and writes its handle
/// to `*tensor`. Every placement gets host memory and `vnc` is ignored (there are no Neuron
/// devices); `name` may be NULL (no name) and is copied. `size` 0 gives a valid, empty tensor.
/// Needs no `nrt_init`.
///
/// Returns:
/// - `NRT_SUCCESS`: `*tensor` is the new tensor.
/// - `NRT_INVALID`: `tensor` is NULL; `tensor_placement` is not one of the three values.
/// - `NRT_FAIL_HOST_MEM_ALLOC`: the memory could not be mapped.
/// - `NRT_RESOURCE`: the tensor table is full.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// `*tensor` is left as it was after a failure. The caller owns the tensor and frees it with
/// `nrt_tensor_free`; its memory is released once the tensor, every slice of it and every
/// request posted on them are gone.
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointer; it is NULL-checked before it is written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
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
        // SAFETY: `tensor` is non-NULL (checked above) and, by the API's contract, points to
        // writable storage for a tensor pointer.
        unsafe { publish(t, tensor) }
    })
}

/// Allocates a tensor without memory (size 0) and writes its handle to `*tensor`; give it memory
/// with `nrt_tensor_attach_buffer`. `name` may be NULL (no name) and is copied.
///
/// Returns:
/// - `NRT_SUCCESS`: `*tensor` is the new tensor.
/// - `NRT_INVALID`: `tensor` is NULL.
/// - `NRT_RESOURCE`: the tensor table is full.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// `*tensor` is left as it was after a failure. The caller owns the tensor and frees it with
/// `nrt_tensor_free`.
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointer; it is NULL-checked before it is written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub extern "C" fn nrt_tensor_allocate_empty(name: *const c_char, tensor: *mut *mut nrt_tensor_t) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_allocate_empty", || {
        non_null(tensor, "tensor out-pointer")?;
        // SAFETY: `tensor` is non-NULL (checked above) and, by the API's contract, points to
        // writable storage for a tensor pointer.
        unsafe { publish(Tensor::empty(name_of(name)), tensor) }
    })
}

/// Makes `tensor` a view of the caller's `buffer` of `size` bytes, replacing the memory it had
/// (the handle stays the same; slices made and requests posted before keep the old memory).
///
/// Returns:
/// - `NRT_SUCCESS`: the tensor now has size `size` and the address `buffer`.
/// - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
/// - `NRT_INVALID`: `buffer` is NULL and `size` is not 0.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// The buffer stays the caller's (the library never frees it) and must stay valid for reads and
/// writes of `size` bytes for as long as the tensor, a slice of it, or a request posted on them
/// uses it: until they are freed and every such request was reported done by
/// `nrt_async_sendrecv_test_request` (or its lnc closed).
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

/// Creates a tensor viewing the `size` bytes at `offset` of `tensor_source` (sharing its memory,
/// no copy) and writes its handle to `*tensor_slice`. `name` may be NULL and is copied.
///
/// Returns:
/// - `NRT_SUCCESS`: `*tensor_slice` is the new tensor.
/// - `NRT_INVALID_HANDLE`: `tensor_source` is NULL, stale or forged.
/// - `NRT_INVALID`: `tensor_slice` is NULL; `offset` + `size` is beyond the source's size
///   (overflow-checked); the source has no memory.
/// - `NRT_RESOURCE`: the tensor table is full.
/// - `NRT_FAILURE`: an internal error (logged).
///
/// `*tensor_slice` is left as it was after a failure. The slice is a tensor of its own, owned
/// by the caller and freed with `nrt_tensor_free`; it stays valid after the source is freed
/// (memory the library allocated lives on; an attached buffer must, by the caller's rule).
#[unsafe(no_mangle)]
// The C ABI hands us the caller's pointer; it is NULL-checked before it is written.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
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
        // SAFETY: `tensor_slice` is non-NULL (checked above) and, by the API's contract, points
        // to writable storage for a tensor pointer.
        unsafe { publish(s, tensor_slice) }
    })
}

/// Frees the tensor `*tensor` and sets `*tensor` to NULL; the handle is stale afterwards.
///
/// No status: `tensor` NULL or `*tensor` NULL is a no-op; a stale or forged `*tensor` (freed
/// twice, say) is set to NULL and logged, nothing else happens. The memory is released once no
/// slice of the tensor and no request posted on it uses it any more: a transfer in flight keeps
/// it. An attached buffer is never freed by the library.
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
            .remove(handle_id(h)?)
            .map(|_| ())
            .ok_or_else(|| Error::handle(format!("tensor handle {h:p} is not a live tensor (freed twice?)")))
    })
}

/// Copies the `size` bytes at `offset` of `tensor` into `buf`.
///
/// Returns:
/// - `NRT_SUCCESS`: copied.
/// - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
/// - `NRT_INVALID`: `buf` is NULL and `size` is not 0; `offset` + `size` is beyond the tensor's
///   size (overflow-checked; a tensor without memory has size 0).
/// - `NRT_FAILURE`: an internal error (logged).
///
/// `buf` must be valid for writes of `size` bytes. Bytes a pending receive is writing are
/// undefined until `nrt_async_sendrecv_test_request` reports it done.
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

/// Copies `size` bytes from `buf` into `tensor` at `offset`.
///
/// Returns:
/// - `NRT_SUCCESS`: copied.
/// - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
/// - `NRT_INVALID`: `buf` is NULL and `size` is not 0; `offset` + `size` is beyond the tensor's
///   size (overflow-checked; a tensor without memory has size 0).
/// - `NRT_FAILURE`: an internal error (logged).
///
/// `buf` must be valid for reads of `size` bytes. Do not write a range that a pending send or
/// receive uses until `nrt_async_sendrecv_test_request` reports it done.
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

/// Returns the tensor's size in bytes (0 for a tensor without memory).
///
/// No status: a NULL, stale or forged handle gives 0 (logged), as does an internal error.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_get_size(tensor: *const nrt_tensor_t) -> usize {
    guard_value("nrt_tensor_get_size", 0, || Ok(from_handle(tensor)?.size()))
}

/// Returns the host address of the tensor's first byte (for an attached buffer, an address in
/// it). The address stays valid as long as the tensor's memory does (see `nrt_tensor_free`).
///
/// No status: NULL for a tensor without memory, and for a NULL, stale or forged handle (logged)
/// or an internal error.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_get_va(tensor: *const nrt_tensor_t) -> *mut c_void {
    guard_value("nrt_tensor_get_va", std::ptr::null_mut(), || Ok(from_handle(tensor)?.va().cast()))
}

/// Copies `size` bytes from `src` at `src_offset` to `dst` at `dst_offset`. The ranges may
/// overlap (a tensor and its slice, or the same tensor).
///
/// Returns:
/// - `NRT_SUCCESS`: copied.
/// - `NRT_INVALID_HANDLE`: `src` or `dst` is NULL, stale or forged.
/// - `NRT_INVALID`: a range is beyond its tensor's size (overflow-checked).
/// - `NRT_FAILURE`: an internal error (logged).
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

/// Sets the `size` bytes at `offset` of `tensor` to `value` (converted to unsigned char, as
/// memset does).
///
/// Returns:
/// - `NRT_SUCCESS`: set.
/// - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
/// - `NRT_INVALID`: `offset` + `size` is beyond the tensor's size (overflow-checked).
/// - `NRT_FAILURE`: an internal error (logged).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_tensor_memset(tensor: *mut nrt_tensor_t, offset: u64, value: c_int, size: usize) -> crate::status::NRT_STATUS {
    guard("nrt_tensor_memset", || {
        let t = from_handle(tensor)?;
        let off = usize::try_from(offset).map_err(|_| Error::invalid("offset does not fit in size_t"))?;
        tensor::memset(&t, off, value as u8, size)
    })
}
