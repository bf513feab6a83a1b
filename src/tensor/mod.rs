//! Tensors of the standalone library: every placement is backed by host memory.
//!
//! A tensor is a view (offset, size) of a `Memory` shared through an `Arc`; slices share their
//! parent's memory, and a request in flight holds a `Region` (an `Arc` to the memory plus the
//! byte range), so freeing a tensor while a transfer runs never frees the bytes under it. A
//! tensor never changes: attaching a buffer replaces the handle's tensor with a new one, so
//! reading a view (every post does) takes no lock.

#[cfg(test)]
pub mod fake_device;
mod memory;
#[cfg(feature = "preload")]
pub mod vendor;

#[cfg(any(test, feature = "preload"))]
pub use memory::DeviceAddr;
#[cfg(feature = "verbs")]
pub use memory::set_free_hook;
pub use memory::{Memory, Region, StagedMemory, next_id as next_memory_id};

use crate::registry::Table;
use crate::status::{Error, Result};
use std::sync::Arc;

pub static TENSORS: Table<Tensor> = Table::new();

#[repr(C)]
#[allow(non_camel_case_types)]
#[allow(dead_code)] // declared for the generated header
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nrt_tensor_placement_t {
    NRT_TENSOR_PLACEMENT_DEVICE = 0,
    NRT_TENSOR_PLACEMENT_HOST = 1,
    NRT_TENSOR_PLACEMENT_VIRTUAL = 2,
}

struct View {
    mem: Option<Arc<Memory>>,
    offset: usize,
    size: usize,
}

pub struct Tensor {
    pub name: String,
    view: View,
}

fn check_range(size: usize, offset: usize, len: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::invalid(format!("range offset={offset} length={len} is outside the tensor of {size} bytes"))),
    }
}

impl Tensor {
    pub fn allocate(size: usize, name: String) -> Result<Tensor> {
        let mem = Memory::allocate(size)?;
        Ok(Tensor { name, view: View { mem: Some(Arc::new(mem)), offset: 0, size } })
    }

    pub fn empty(name: String) -> Tensor {
        Tensor { name, view: View { mem: None, offset: 0, size: 0 } }
    }

    /// A tensor named `name` over the caller's buffer (what attaching makes of a tensor).
    ///
    /// # Safety
    /// `buf` must stay valid for `size` bytes of reads and writes while the tensor uses it.
    pub unsafe fn attached(name: String, buf: *mut u8, size: usize) -> Result<Tensor> {
        // SAFETY: forwarded from the caller.
        let mem = unsafe { Memory::attach(buf, size)? };
        Ok(Tensor { name, view: View { mem: Some(Arc::new(mem)), offset: 0, size } })
    }

    pub fn slice(&self, offset: usize, size: usize, name: String) -> Result<Tensor> {
        let v = &self.view;
        check_range(v.size, offset, size)?;
        let Some(mem) = v.mem.clone() else {
            return Err(Error::invalid("cannot slice a tensor that has no memory"));
        };
        Ok(Tensor { name, view: View { mem: Some(mem), offset: v.offset + offset, size } })
    }

    pub fn size(&self) -> usize {
        self.view.size
    }

    pub fn va(&self) -> *mut u8 {
        let v = &self.view;
        match &v.mem {
            Some(m) => m.ptr_at(v.offset),
            None => std::ptr::null_mut(),
        }
    }

    /// The bytes `offset..offset+len`, kept alive for as long as the region lives.
    pub fn region(&self, offset: usize, len: usize) -> Result<Region> {
        let v = &self.view;
        check_range(v.size, offset, len)?;
        match &v.mem {
            Some(m) => Ok(Region::new(m.clone(), v.offset + offset, len)),
            None if len == 0 => Ok(Region::empty()),
            None => Err(Error::invalid(format!("tensor {:?} has no memory attached", self.name))),
        }
    }
}

fn not_live(id: u64) -> Error {
    Error::handle(format!("tensor handle {id:#x} is not a live tensor"))
}

pub fn lookup(id: u64) -> Result<Arc<Tensor>> {
    TENSORS.get(id).ok_or_else(|| not_live(id))
}

/// Like `lookup`, with the tensor used in place under its table slot (no reference counting:
/// for every post); `f` must not look up this tensor's handle again.
pub fn with<R>(id: u64, f: impl FnOnce(&Tensor) -> Result<R>) -> Result<R> {
    TENSORS.with(id, |t| f(t)).unwrap_or_else(|| Err(not_live(id)))
}

/// Puts a tensor over the caller's buffer under handle `id` (same name; tensors never change, so
/// transfers in flight keep the memory they were posted with).
///
/// # Safety
/// `buf` must stay valid for `size` bytes of reads and writes while the tensor uses it.
pub unsafe fn attach(id: u64, buf: *mut u8, size: usize) -> Result<()> {
    TENSORS
        .replace(id, |old| {
            // SAFETY: forwarded from the caller.
            unsafe { Tensor::attached(old.name.clone(), buf, size) }.map(Arc::new)
        })
        .unwrap_or_else(|| Err(not_live(id)))
}

/// `nrt_tensor_read`: copies `len` bytes at `offset` of the tensor into `dst`.
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes and not overlap the tensor.
pub unsafe fn read(t: &Tensor, dst: *mut u8, offset: usize, len: usize) -> Result<()> {
    let r = t.region(offset, len)?;
    if len > 0 {
        // SAFETY: the region is mapped for len bytes (checked above); dst by the caller's
        // contract. memmove: at any distance (sys/copy.rs), overlap allowed.
        unsafe { crate::sys::copy::memmove(r.ptr(), dst, len) };
    }
    Ok(())
}

/// `nrt_tensor_write`: copies `len` bytes from `src` into the tensor at `offset`.
///
/// # Safety
/// `src` must be valid for `len` bytes of reads.
pub unsafe fn write(t: &Tensor, src: *const u8, offset: usize, len: usize) -> Result<()> {
    let r = t.region(offset, len)?;
    if len > 0 {
        // SAFETY: region mapped for len bytes; src by the caller's contract; memmove handles
        // overlap (and any distance: sys/copy.rs).
        unsafe { crate::sys::copy::memmove(src, r.ptr(), len) };
    }
    Ok(())
}

/// `read` into a Rust slice.
#[cfg(test)]
pub fn read_into(t: &Tensor, offset: usize, dst: &mut [u8]) -> Result<()> {
    // SAFETY: dst is a live, exclusive slice of dst.len() bytes, apart from the tensor's memory.
    unsafe { read(t, dst.as_mut_ptr(), offset, dst.len()) }
}

/// `write` from a Rust slice.
#[cfg(test)]
pub fn write_from(t: &Tensor, offset: usize, src: &[u8]) -> Result<()> {
    // SAFETY: src is a live slice of src.len() bytes.
    unsafe { write(t, src.as_ptr(), offset, src.len()) }
}

pub fn copy(src: &Tensor, src_off: usize, dst: &Tensor, dst_off: usize, len: usize) -> Result<()> {
    let s = src.region(src_off, len)?;
    let d = dst.region(dst_off, len)?;
    if len > 0 {
        // SAFETY: both regions are mapped for len bytes (bounds checked); memmove allows overlap
        // (a tensor copied onto a slice of itself).
        unsafe { crate::sys::copy::memmove(s.ptr(), d.ptr(), len) };
    }
    Ok(())
}

pub fn memset(t: &Tensor, offset: usize, value: u8, len: usize) -> Result<()> {
    let r = t.region(offset, len)?;
    if len > 0 {
        // SAFETY: region mapped for len bytes (bounds checked).
        unsafe { std::ptr::write_bytes(r.ptr(), value, len) };
    }
    Ok(())
}
