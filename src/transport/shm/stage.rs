//! A sender's staging memory: what the receiver may not read where it lies is copied into a
//! memfd of the sender's (a copy on each side, still no socket).

use crate::sys::memfd::{Mapping, memfd, memfd_name};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Staging memfds per communicator for messages above STAGE_ALWAYS_MAX: an acknowledged one is
/// kept for reuse while those in flight and those kept stay within this many bytes and memfds
/// (beyond, it is unmapped). A send never waits for staging memory: one that waited would depend
/// on its caller polling sends to go out, and a caller waiting on a receive that needs it would
/// wait for ever. The staging memory in flight is the caller's own window.
pub(super) const STAGE_KEEP: usize = 512 << 20;
pub(super) const STAGE_KEEP_BUFS: usize = 32;
/// Messages up to this size that do not lie in a memfd are staged even where the receiver may
/// `process_vm_readv` them: two memcpys of cache-resident bytes beat that system call's fixed
/// cost (4 KiB over shared memory: p50 half round trip 2.65 -> 0.70 µs, docs/transports.md). They go through
/// one staging memfd per communicator, RING slots of this size (one descriptor, not one per
/// message in flight): a message takes the slot freed most recently (cache-warm; the pages
/// touched are those of the most messages ever in flight) and gives it back at its
/// acknowledgement; at most RING messages are in flight, so a slot is always free.
pub(super) const STAGE_ALWAYS_MAX: usize = crate::sys::memfd::MEMFD_MIN;
/// Staging memfds are sized in powers of two from this size (so they are reused), and above
/// STAGE_ROUND_MAX in multiples of it.
pub(super) const STAGE_MIN: usize = 64 * 1024;
pub(super) const STAGE_ROUND_MAX: usize = 64 << 20;

/// A sender's staging memfd: a message that does not lie in one of our memfds is copied here
/// when the receiver may not read our memory, and described as if it were tensor memory.
pub(super) struct StageBuf {
    pub(super) fd: OwnedFd,
    pub(super) map: Mapping,
    /// A tensor-memory id (the receiver checks the memfd's name and caches its mapping by it).
    pub(super) id: u64,
}

impl StageBuf {
    pub(super) fn new(len: usize, populate: bool) -> io::Result<StageBuf> {
        let id = crate::tensor::next_memory_id();
        let fd = memfd(&memfd_name(id), len)?;
        let map = Mapping::map(fd.as_raw_fd(), len, true, populate)?;
        Ok(StageBuf { fd, map, id })
    }
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Where a message in flight was staged.
pub(super) enum Staged {
    No,
    /// A slot of the small-message ring.
    Slot(u16),
    /// A staging memfd of its own.
    Buf(StageBuf),
}

/// The size of a new staging memfd for `len` bytes.
pub(super) fn stage_size(len: usize) -> usize {
    if len <= STAGE_ROUND_MAX { len.next_power_of_two().max(STAGE_MIN) } else { len.div_ceil(STAGE_ROUND_MAX) * STAGE_ROUND_MAX }
}

/// A sender's staging memfds for large messages: those in flight (counted) and those free for
/// reuse, within STAGE_KEEP bytes and STAGE_KEEP_BUFS memfds together.
#[derive(Default)]
pub(super) struct StagePool {
    free: Vec<StageBuf>,
    /// Memfds handed out and not yet released, and their bytes.
    busy: (usize, usize),
}

impl StagePool {
    /// Staging memfds of their own (in flight and free): how many, how many bytes.
    fn count(&self) -> (usize, usize) {
        self.free.iter().fold(self.busy, |(n, bytes), b| (n + 1, bytes + b.len()))
    }

    /// A staging memfd of at least `len` bytes: the smallest free one that fits, else a new one
    /// (free ones that would push the total over STAGE_KEEP are dropped first).
    pub(super) fn take(&mut self, len: usize) -> io::Result<StageBuf> {
        let best = self.free.iter().enumerate().filter(|(_, b)| b.len() >= len).min_by_key(|(_, b)| b.len()).map(|(i, _)| i);
        let b = match best {
            Some(i) => self.free.swap_remove(i),
            None => {
                let size = stage_size(len);
                while let (n, bytes) = self.count()
                    && (bytes + size > STAGE_KEEP || n >= STAGE_KEEP_BUFS)
                    && let Some(i) = self.free.iter().enumerate().max_by_key(|(_, b)| b.len()).map(|(i, _)| i)
                {
                    self.free.swap_remove(i);
                }
                StageBuf::new(size, true)?
            }
        };
        self.busy = (self.busy.0 + 1, self.busy.1 + b.len());
        Ok(b)
    }

    /// `b`'s message was acknowledged: it no longer counts as in flight.
    pub(super) fn release(&mut self, b: &StageBuf) {
        self.busy = (self.busy.0 - 1, self.busy.1 - b.len());
    }

    /// A released memfd: kept for reuse while the total stays within STAGE_KEEP.
    pub(super) fn keep(&mut self, b: StageBuf) {
        let (n, bytes) = self.count();
        if bytes + b.len() <= STAGE_KEEP && n < STAGE_KEEP_BUFS {
            self.free.push(b);
        }
    }
}
