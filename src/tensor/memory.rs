//! Raw host memory behind tensors: anonymous mappings we own, or buffers the caller attached.

use crate::status::{Error, NRT_STATUS, Result};
use std::sync::Arc;

pub struct Memory {
    ptr: *mut u8,
    len: usize,
    /// Mapped by us (unmapped on drop) rather than attached by the caller.
    owned: bool,
    /// The memfd behind a shared mapping (a same-host peer maps it to copy from it directly).
    fd: Option<std::os::fd::OwnedFd>,
    /// Unique in this process; names the memfd so a peer can check what it opened.
    id: u64,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh memory id (also names the shm transport's staging memfds, which share the namespace).
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `NEURON_RT_ASYNC_SENDRECV_TENSOR_PREFAULT=0`: tensors are left to fault in page by page at
/// first touch (for callers that allocate more than they touch). Default: populated at allocation.
fn prefault_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NEURON_RT_ASYNC_SENDRECV_TENSOR_PREFAULT").map(|v| v.trim() != "0").unwrap_or(true))
}

/// Populates a fresh mapping's pages for writing in one call (`MADV_POPULATE_WRITE`), so that
/// the first transfer into or out of a tensor does not pay a page fault per page (about 10 µs of
/// system time each on a VM: a 64 MiB tensor is 16,384 of them). Best effort: on a kernel without
/// it (before 5.14) or short of memory the pages fault in at first touch as before.
fn prefault(p: *mut u8, len: usize) {
    if len == 0 || !prefault_enabled() {
        return;
    }
    // SAFETY: `p..p+len` is a mapping made by the caller just now, readable and writable;
    // populating it changes no byte (fresh pages are zero either way).
    let r = unsafe { libc::madvise(p.cast(), len, libc::MADV_POPULATE_WRITE) };
    if r != 0 {
        crate::log_debug!("tensor of {len} bytes not prefaulted: {}", std::io::Error::last_os_error());
    }
}

// SAFETY: Memory is a plain address range; all access goes through raw pointers whose
// synchronisation is the request protocol's job (a request's bytes are touched by one side at a time).
unsafe impl Send for Memory {}
// SAFETY: as above; &Memory gives out only raw pointers.
unsafe impl Sync for Memory {}

impl Memory {
    pub fn allocate(size: usize) -> Result<Memory> {
        let id = next_id();
        // Large tensors live in a sealed memfd, so that a peer process of this host can map them
        // (the shm transport's single copy). Without a descriptor to spare, anonymous memory.
        #[cfg(not(feature = "preload"))]
        if size >= crate::sys::memfd::MEMFD_MIN
            && let Ok(fd) = crate::sys::memfd::memfd(&crate::sys::memfd::memfd_name(id), size)
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a shared mapping of the whole memfd we just sized; the result is checked.
            let p =
                unsafe { libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0) };
            if p != libc::MAP_FAILED {
                prefault(p.cast(), size);
                return Ok(Memory { ptr: p.cast(), len: size, owned: true, fd: Some(fd), id });
            }
        }
        let map_len = size.max(1);
        // SAFETY: anonymous private mapping, no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            return Err(Error::io(NRT_STATUS::NRT_FAIL_HOST_MEM_ALLOC, &format!("mmap of {size} bytes"), &e));
        }
        prefault(p.cast(), size);
        Ok(Memory { ptr: p.cast(), len: map_len, owned: true, fd: None, id })
    }

    /// # Safety
    /// `buf` must be valid for reads and writes of `size` bytes while the memory is in use.
    pub unsafe fn attach(buf: *mut u8, size: usize) -> Result<Memory> {
        if buf.is_null() && size > 0 {
            return Err(Error::invalid("attach_buffer: NULL buffer"));
        }
        Ok(Memory { ptr: buf, len: size, owned: false, fd: None, id: next_id() })
    }

    pub fn ptr_at(&self, offset: usize) -> *mut u8 {
        self.ptr.wrapping_add(offset)
    }
    pub fn base(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The memfd behind this memory, when it has one.
    pub fn fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Called with a memory's base address just before it is released (the RDMA registration
/// cache drops its entry, so a later mapping at the same address is never served a stale key).
static FREE_HOOK: std::sync::OnceLock<fn(usize)> = std::sync::OnceLock::new();

#[cfg_attr(not(feature = "verbs"), allow(dead_code))]
pub fn set_free_hook(f: fn(usize)) {
    let _ = FREE_HOOK.set(f);
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Some(f) = FREE_HOOK.get() {
            f(self.ptr as usize);
        }
        if self.owned {
            // SAFETY: ptr/len are exactly the mapping made in allocate, unmapped once.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// Device memory reached only through the vendor's `nrt_tensor_read`/`nrt_tensor_write`
/// (preload mode): bytes are staged through host buffers, a chunk at a time.
pub trait StagedMemory: Send + Sync {
    /// Copies `buf.len()` bytes at `offset` (relative to the region) into `buf`.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()>;
    /// Copies `buf` into the memory at `offset` (relative to the region).
    fn write(&self, offset: usize, buf: &[u8]) -> Result<()>;
}

/// Device memory (HBM) that has a virtual address in this process (the vendor runtime maps HBM
/// into it: `NEURON_RT_MAP_HBM`). The address is only for a transport that registers it with
/// the NIC as device memory (libfabric `FI_HMEM`, iface `FI_HMEM_NEURON`) and lets the NIC move
/// the bytes; no code of ours loads or stores through it (bytes are copied through the region's
/// `StagedMemory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceAddr {
    /// The address of the region's first byte.
    pub va: usize,
    /// The HBM the memory lies in (`nrt_tensor_get_device_allocation_info`'s `hbm_index`), for
    /// the log: the vendor API names no device id (see `docs/preload.md`).
    pub hbm_index: i32,
}

/// A byte range of tensor memory that stays mapped while the region lives, or (preload mode) a
/// range of device memory that is reached by staging (and, where it has a virtual address, by a
/// transport that registers device memory).
#[derive(Clone)]
pub struct Region {
    _mem: Option<Arc<Memory>>,
    ptr: *mut u8,
    len: usize,
    staged: Option<Arc<dyn StagedMemory>>,
    device: Option<DeviceAddr>,
}

// SAFETY: see Memory; a Region only hands out its raw pointer.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    pub(super) fn new(mem: Arc<Memory>, offset: usize, len: usize) -> Region {
        let ptr = mem.ptr_at(offset);
        Region { _mem: Some(mem), ptr, len, staged: None, device: None }
    }
    pub fn empty() -> Region {
        Region { _mem: None, ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(), len: 0, staged: None, device: None }
    }
    /// Host memory owned by someone else (the vendor runtime), valid while the transfer runs.
    pub fn borrowed(ptr: *mut u8, len: usize) -> Region {
        Region { _mem: None, ptr, len, staged: None, device: None }
    }
    /// Memory with no host address: the transport stages it chunk by chunk.
    pub fn staged(mem: Arc<dyn StagedMemory>, len: usize) -> Region {
        Region { _mem: None, ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(), len, staged: Some(mem), device: None }
    }
    /// Device memory with a virtual address (`dev`): staged like `staged` by every transport
    /// (`ptr` is not the address), and registered as device memory by one that can (`device`).
    pub fn device(mem: Arc<dyn StagedMemory>, len: usize, dev: DeviceAddr) -> Region {
        Region { device: Some(dev), ..Region::staged(mem, len) }
    }
    /// The host address of the first byte (dangling for staged and device memory: never to be
    /// read or written then).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The tensor memory this region lies in, when it is ours.
    pub fn memory(&self) -> Option<&Arc<Memory>> {
        self._mem.as_ref()
    }
    /// How to copy the bytes of memory without a host address (device memory).
    pub fn staging(&self) -> Option<&Arc<dyn StagedMemory>> {
        self.staged.as_ref()
    }
    /// Device memory's virtual address, for registering it with the NIC as device memory.
    pub fn device_addr(&self) -> Option<DeviceAddr> {
        self.device
    }
}
