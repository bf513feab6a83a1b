//! Tests: host memory standing in for device memory (HBM with a virtual address, as the
//! LD_PRELOAD library's vendor tensors may be). Its regions are `Region::device`: their bytes are
//! reached through a `StagedMemory` that copies to and from the memory and counts its calls, and
//! their device address is either the memory itself (for a transport that registers device
//! memory and lets its provider move the bytes there: the fake libfabric provider copies through
//! it) or, `guarded`, a separate mapping without any access (`PROT_NONE`), so that a transport
//! that loads or stores through a device address crashes the test.

use super::{DeviceAddr, Memory, Region, StagedMemory};
use crate::status::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct FakeDevice {
    mem: Memory,
    /// The `PROT_NONE` mapping handed out as the device address (guarded devices).
    guard: Option<(usize, usize)>,
    /// `StagedMemory` calls, and the bytes they copied.
    reads: AtomicUsize,
    writes: AtomicUsize,
    bytes_read: AtomicUsize,
    bytes_written: AtomicUsize,
}

/// A region of a `FakeDevice` (offsets of its `StagedMemory` are relative to the region).
struct View {
    dev: Arc<FakeDevice>,
    base: usize,
    len: usize,
}

impl FakeDevice {
    /// `len` bytes of zeroes; with `guarded`, the device address is a mapping without access.
    pub fn new(len: usize, guarded: bool) -> Arc<FakeDevice> {
        let mem = Memory::allocate(len.max(1)).expect("fake device memory");
        let guard = guarded.then(|| {
            // SAFETY: a fresh anonymous mapping without access, unmapped on drop; the result is
            // checked.
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), len.max(1), libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
            assert!(p != libc::MAP_FAILED, "PROT_NONE mapping");
            (p.addr(), len.max(1))
        });
        Arc::new(FakeDevice {
            mem,
            guard,
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
            bytes_read: AtomicUsize::new(0),
            bytes_written: AtomicUsize::new(0),
        })
    }

    /// The device address of byte `off`.
    fn va(&self, off: usize) -> usize {
        self.guard.map_or(self.mem.base().addr(), |(p, _)| p) + off
    }

    /// Bytes `off..off+len` as device memory (hbm_index 0).
    pub fn region(self: &Arc<Self>, off: usize, len: usize) -> Region {
        assert!(off + len <= self.mem.len(), "fake device region out of range");
        let view = View { dev: self.clone(), base: off, len };
        Region::device(Arc::new(view), len, DeviceAddr { va: self.va(off), hbm_index: 0 })
    }

    /// Writes `bytes` at `off` (the test's own access: not counted).
    pub fn fill(&self, off: usize, bytes: &[u8]) {
        assert!(off + bytes.len() <= self.mem.len());
        // SAFETY: the range lies in the memory (checked); no transfer uses it meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.ptr_at(off), bytes.len()) };
    }

    /// The bytes `off..off+len` (not counted).
    pub fn contents(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.mem.len());
        let mut v = vec![0u8; len];
        // SAFETY: as in `fill`.
        unsafe { std::ptr::copy_nonoverlapping(self.mem.ptr_at(off), v.as_mut_ptr(), len) };
        v
    }

    /// (`StagedMemory::read` calls, `StagedMemory::write` calls) so far.
    pub fn calls(&self) -> (usize, usize) {
        (self.reads.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }

    /// (bytes read, bytes written) through `StagedMemory` so far.
    pub fn copied(&self) -> (usize, usize) {
        (self.bytes_read.load(Ordering::Relaxed), self.bytes_written.load(Ordering::Relaxed))
    }
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        if let Some((p, len)) = self.guard {
            // SAFETY: the mapping made in `new`, unmapped once.
            unsafe { libc::munmap(std::ptr::with_exposed_provenance_mut(p), len) };
        }
    }
}

impl View {
    fn check(&self, offset: usize, n: usize) -> Result<usize> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(Error::invalid(format!("fake device: {n} bytes at {offset} of a region of {}", self.len))),
        }
    }
}

impl StagedMemory for View {
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let at = self.check(offset, buf.len())?;
        self.dev.reads.fetch_add(1, Ordering::Relaxed);
        self.dev.bytes_read.fetch_add(buf.len(), Ordering::Relaxed);
        // SAFETY: the range lies in the device's memory (checked); buf is another buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.dev.mem.ptr_at(at), buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&self, offset: usize, buf: &[u8]) -> Result<()> {
        let at = self.check(offset, buf.len())?;
        self.dev.writes.fetch_add(1, Ordering::Relaxed);
        self.dev.bytes_written.fetch_add(buf.len(), Ordering::Relaxed);
        // SAFETY: as in `read`.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.dev.mem.ptr_at(at), buf.len()) };
        Ok(())
    }
}
