//! Sealed memfds, shared mappings of them, and descriptors of other processes opened through
//! /proc.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Tensors of at least this size are allocated in a memfd (smaller ones go inline or by
/// process_vm_readv, and do not spend a descriptor each).
pub const MEMFD_MIN: usize = 64 * 1024;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

pub fn my_pid() -> u32 {
    std::process::id()
}

/// A shared mapping, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain address range; access is synchronised by the ring protocol.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn map(fd: RawFd, len: usize, writable: bool, populate: bool) -> io::Result<Mapping> {
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let flags = libc::MAP_SHARED | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh shared mapping of a descriptor we hold; the result is checked.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len.max(1), prot, flags, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: p.cast(), len: len.max(1) })
    }
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range mapped in `map`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A sealed memfd of `size` bytes (it can neither shrink nor grow, so a mapping of it never
/// faults with SIGBUS).
pub fn memfd(name: &str, size: usize) -> io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: cname is a valid C string; the result is checked.
    let fd = cvt(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })?;
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain system calls on our descriptor.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size.max(1) as libc::off_t) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL) })?;
    Ok(fd)
}

/// Opens descriptor `fd` of process `pid` (needs the right to read that process).
pub fn open_peer_fd(pid: u32, fd: u32, writable: bool) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd/{fd}")).expect("no NUL in a number");
    let mode = if writable { libc::O_RDWR } else { libc::O_RDONLY };
    // SAFETY: path is a valid C string; the result is checked.
    let r = cvt(unsafe { libc::open(path.as_ptr(), mode | libc::O_CLOEXEC) })?;
    // SAFETY: r is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// What our descriptor `fd` points to, and its size and seals.
pub fn describe_fd(fd: &OwnedFd) -> io::Result<(String, u64, i32)> {
    let name = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?.to_string_lossy().into_owned();
    // SAFETY: st is a plain struct the kernel fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is writable.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    // SAFETY: plain system call on our descriptor.
    let seals = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) })?;
    Ok((name, st.st_size as u64, seals))
}

/// The memfd name of tensor memory `id`.
pub fn memfd_name(id: u64) -> String {
    format!("nrt-sr-{id}")
}
