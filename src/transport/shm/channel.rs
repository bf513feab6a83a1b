//! The channel of a same-host communicator: its memory layout (header words, the ring of
//! acknowledgements, the ring of descriptor slots), and the receiver's check of a peer's channel.

use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::memfd::{Mapping, describe_fd, open_peer_fd};
use crate::sys::stamp::stamp_clock;
use crate::sys::vm::vm_read;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries per ring: the pending-request limit per communicator.
pub(super) const RING: usize = crate::config::MAX_PENDING_PER_COMM;
pub(super) const SLOT: usize = 1024;
pub(super) const DESC: usize = 64;
/// Bytes of a message that fit in its descriptor's first cache line (after sequence, length,
/// flags): an 8-byte message costs the receiver one cache-line transfer.
pub(super) const INLINE_HEAD: usize = 40;
/// Messages up to this size travel inside their descriptor.
pub const INLINE: usize = INLINE_HEAD + SLOT - DESC;
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"NRSRSHM1");
// Words 64 and 192 are spare (no head words: a slot or an entry carries its own number).
pub(super) const OFF_SEND_TAIL: usize = 128;
pub(super) const OFF_ACK_TAIL: usize = 256;
pub(super) const OFF_RX_SPIN: usize = 320;
pub(super) const OFF_WAKE: usize = 384;
pub(super) const OFF_ACKS: usize = 512;
pub(super) const OFF_SLOTS: usize = OFF_ACKS + RING * 16;
pub(super) const CHANNEL_SIZE: usize = OFF_SLOTS + RING * SLOT;
/// Descriptor flag: the bytes follow the descriptor.
pub(super) const F_INLINE: u32 = 1;
/// Descriptor flag: the bytes lie in the sender's memfd `mem_fd`.
pub(super) const F_MEMFD: u32 = 2;
/// Descriptor flag (with F_MEMFD): that memfd is a staging area, touched only where messages
/// land (the receiver maps it without populating it).
pub(super) const F_STAGE: u32 = 4;

/// The shared channel of one communicator.
pub(super) struct Channel {
    pub(super) map: Mapping,
    /// The sender keeps its memfd open for the receiver to find.
    pub(super) fd: Option<OwnedFd>,
}

impl Channel {
    pub(super) fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= CHANNEL_SIZE);
        // SAFETY: off is 8-aligned inside the page-aligned mapping of CHANNEL_SIZE bytes, which
        // lives as long as self; both processes access these words only atomically.
        unsafe { &*(self.map.ptr().add(off) as *const AtomicU64) }
    }
    pub(super) fn slot(&self, i: u64) -> *mut u8 {
        self.map.ptr().wrapping_add(OFF_SLOTS + (i as usize % RING) * SLOT)
    }
    /// The sequence word of slot `i` (message number + 1 once the descriptor is complete).
    pub(super) fn slot_seq(&self, i: u64) -> &AtomicU64 {
        self.word(OFF_SLOTS + (i as usize % RING) * SLOT)
    }
    pub(super) fn ack_entry(&self, i: u64) -> (&AtomicU64, &AtomicU64) {
        let off = OFF_ACKS + (i as usize % RING) * 16;
        (self.word(off), self.word(off + 8))
    }
}

/// A descriptor as it sits in a ring slot (64 bytes, native endianness: one host).
#[repr(C)]
#[derive(Clone, Copy, Default)]
/// `seq` holds the message number + 1 and is written last (Release): a slot is valid when it
/// holds the number the receiver expects, so the receiver reads no separate head word. For an
/// inline message the 40 bytes from `addr` on hold its first bytes.
pub(super) struct Desc {
    pub(super) seq: u64,
    pub(super) len: u64,
    pub(super) mem_fd: u32,
    pub(super) flags: u32,
    pub(super) addr: u64,
    pub(super) mem_id: u64,
    pub(super) mem_off: u64,
    pub(super) mem_len: u64,
    pub(super) _pad: u64,
}
const _: () = assert!(std::mem::size_of::<Desc>() == DESC);

/// Maps and checks the peer's channel; says whether `process_vm_readv` reaches the peer's
/// memory (false where the kernel refuses it, or when told not to try).
pub(super) fn attach(pid: u32, fd: u32, token: u64, addr: u64, size: u64, try_vm_readv: bool) -> Result<(Channel, bool)> {
    if size != CHANNEL_SIZE as u64 {
        return Err(Error::failure(format!("the peer's channel has {size} bytes, we expect {CHANNEL_SIZE}")));
    }
    let fail = |what: &str, e: io::Error| Error::io(NRT_STATUS::NRT_FAILURE, &format!("{what} (peer pid {pid})"), &e);
    let f = open_peer_fd(pid, fd, true).map_err(|e| fail("cannot open the peer's channel through /proc", e))?;
    let (_, fsize, seals) = describe_fd(&f).map_err(|e| fail("stat of the channel", e))?;
    if fsize < CHANNEL_SIZE as u64 || seals & libc::F_SEAL_SHRINK == 0 {
        return Err(Error::failure(format!("the peer's channel descriptor is not a sealed memfd of {CHANNEL_SIZE} bytes")));
    }
    let map = Mapping::map(f.as_raw_fd(), CHANNEL_SIZE, true, true).map_err(|e| fail("mmap of the channel", e))?;
    let ch = Channel { map, fd: None };
    if ch.word(0).load(Ordering::Acquire) != MAGIC || ch.word(8).load(Ordering::Acquire) != token {
        return Err(Error::failure(format!("pid {pid} fd {fd} is not the peer's channel (another pid namespace?)")));
    }
    let theirs = ch.word(24).load(Ordering::Acquire);
    if theirs != stamp_clock().id() {
        return Err(Error::failure(format!("the peer's polling stamps use clock {theirs}, ours {}", stamp_clock().id())));
    }
    if !try_vm_readv {
        crate::log_info!("shm: NEURON_RT_ASYNC_SENDRECV_SHM_VM_READV=0: pid {pid} stages what is not in a memfd (a copy on each side)");
        return Ok((ch, false));
    }
    let mut probe = [0u64; 2];
    // SAFETY: probe is a local buffer of 16 writable bytes.
    match unsafe { vm_read(pid, probe.as_mut_ptr().cast(), addr, 16) } {
        Ok(()) if probe == [MAGIC, token] => Ok((ch, true)),
        Ok(()) => Err(Error::failure(format!("process_vm_readv of pid {pid} does not reach the peer"))),
        // The kernel's policy (Yama ptrace_scope, seccomp, no such call): the channel works,
        // the rest is staged.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::ENOSYS)) => {
            crate::log_info!(
                "shm: process_vm_readv of pid {pid} is not permitted ({e}); it stages what is not in a memfd (a copy on each side)"
            );
            Ok((ch, false))
        }
        Err(e) => Err(fail("process_vm_readv", e)),
    }
}
