//! The receiver's cache of mapped sender memfds (tensor memory and staging areas), by memory id.

use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::memfd::{Mapping, describe_fd, memfd_name, open_peer_fd};
use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;

/// Receiver-side cache of mapped sender memfds: at most this many, this many bytes.
const MAP_CACHE_ENTRIES: usize = 64;
const MAP_CACHE_BYTES: usize = 4 << 30;

/// A memfd of the peer's, as a descriptor names it.
pub(super) struct Wanted {
    pub mem_id: u64,
    pub mem_fd: u32,
    pub mem_len: u64,
    /// Fault the pages in at once (tensor memory; a staging area is touched only where its
    /// messages land).
    pub populate: bool,
}

/// Mapped sender memfds, by memory id (least recently used evicted).
#[derive(Default)]
pub(super) struct MapCache {
    maps: HashMap<u64, (Mapping, u64)>,
    /// The peer's descriptor number of each mapped memfd.
    fds: HashMap<u64, u32>,
    bytes: usize,
    clock: u64,
}

impl MapCache {
    fn sweep(&mut self, pid: u32) {
        let gone: Vec<u64> = self
            .fds
            .iter()
            .filter(|(id, fd)| {
                let want = format!("/memfd:{}", memfd_name(**id));
                !std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .is_ok_and(|p| p.to_string_lossy().split(' ').next() == Some(want.as_str()))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.fds.remove(&id);
            if let Some((m, _)) = self.maps.remove(&id) {
                self.bytes -= m.len();
            }
        }
    }

    /// A read-only mapping of the peer's tensor memfd `d` (its id, descriptor number and length;
    /// `populate`: fault it in at once).
    pub(super) fn get(&mut self, pid: u32, d: &Wanted) -> Result<*const u8> {
        self.clock += 1;
        let now = self.clock;
        if let Some((m, used)) = self.maps.get_mut(&d.mem_id)
            && m.len() as u64 >= d.mem_len
        {
            *used = now;
            return Ok(m.ptr());
        }
        // A miss: first drop the mappings of tensors the peer has freed since (their descriptor
        // no longer names them), so freed memory is not kept alive here.
        self.sweep(pid);
        let fail = |what: &str, e: io::Error| {
            Error::io(NRT_STATUS::NRT_FAILURE, &format!("shm: {what} of the peer's tensor memfd (pid {pid}, fd {})", d.mem_fd), &e)
        };
        let fd = open_peer_fd(pid, d.mem_fd, false).map_err(|e| fail("open", e))?;
        let (name, size, seals) = describe_fd(&fd).map_err(|e| fail("stat", e))?;
        let want = format!("/memfd:{}", memfd_name(d.mem_id));
        if !(name == want || name.starts_with(&format!("{want} "))) || size < d.mem_len || seals & libc::F_SEAL_SHRINK == 0 {
            return Err(Error::failure(format!(
                "shm: the peer's fd {} is {name:?} ({size} bytes, seals {seals:#x}), not tensor memory {} of {} bytes",
                d.mem_fd, d.mem_id, d.mem_len
            )));
        }
        let m = Mapping::map(fd.as_raw_fd(), d.mem_len as usize, false, d.populate).map_err(|e| fail("mmap", e))?;
        let ptr = m.ptr() as *const u8;
        if let Some((old, _)) = self.maps.insert(d.mem_id, (m, now)) {
            self.bytes -= old.len();
        }
        self.fds.insert(d.mem_id, d.mem_fd);
        self.bytes += d.mem_len as usize;
        while self.maps.len() > MAP_CACHE_ENTRIES || (self.bytes > MAP_CACHE_BYTES && self.maps.len() > 1) {
            let victim = self.maps.iter().filter(|(id, _)| **id != d.mem_id).min_by_key(|(_, (_, u))| *u).map(|(id, _)| *id);
            let Some(v) = victim else { break };
            if let Some((m, _)) = self.maps.remove(&v) {
                self.bytes -= m.len();
            }
            self.fds.remove(&v);
        }
        Ok(ptr)
    }
}
