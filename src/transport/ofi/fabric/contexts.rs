//! The `fi_context2` slab of one rail: the provider holds a slot's address from an operation's
//! post to its completion, which gives the protocol's `u64` back.

use crate::transport::ofi::rail::CqKind;
use crate::transport::ofi::sys;
use std::ffi::c_void;

/// Contexts allocated at a time.
const CHUNK: usize = 256;

/// What an operation in flight holds in its context slot.
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub(super) user: u64,
    pub(super) len: usize,
    pub(super) kind: CqKind,
    pub(super) busy: bool,
}

impl Slot {
    const IDLE: Slot = Slot { user: 0, len: 0, kind: CqKind::Send, busy: false };
}

/// The rail's `fi_context2` slab. The provider holds a slot's address from the post until the
/// completion, so the blocks never move (allocated CHUNK at a time, freed when the rail drops,
/// after its endpoint is closed) and Rust makes no references into them.
pub(super) struct Contexts {
    blocks: Vec<*mut sys::fi_context2>,
    slots: Vec<Slot>,
    free: Vec<usize>,
}

impl Contexts {
    pub(super) fn new() -> Contexts {
        Contexts { blocks: Vec::new(), slots: Vec::new(), free: Vec::new() }
    }

    /// A slot for an operation about to be posted.
    pub(super) fn take(&mut self, user: u64, len: usize, kind: CqKind) -> usize {
        if self.free.is_empty() {
            let block: Box<[sys::fi_context2]> = (0..CHUNK).map(|_| sys::fi_context2::default()).collect();
            let first = self.slots.len();
            self.blocks.push(Box::into_raw(block).cast::<sys::fi_context2>());
            self.slots.resize(first + CHUNK, Slot::IDLE);
            self.free.extend((first..first + CHUNK).rev());
        }
        let i = self.free.pop().expect("a free slot");
        self.slots[i] = Slot { user, len, kind, busy: true };
        i
    }

    /// The address the provider gets for slot `i`.
    pub(super) fn ptr(&self, i: usize) -> *mut c_void {
        self.blocks[i / CHUNK].wrapping_add(i % CHUNK).cast()
    }

    /// The slot whose address a completion carries, if it is one of ours and in use.
    pub(super) fn index(&self, p: *mut c_void) -> Option<usize> {
        let size = size_of::<sys::fi_context2>();
        self.blocks.iter().enumerate().find_map(|(b, base)| {
            let off = p.addr().wrapping_sub(base.addr());
            let i = b * CHUNK + off / size;
            (off < CHUNK * size && off % size == 0 && self.slots[i].busy).then_some(i)
        })
    }

    /// Gives slot `i` back (its operation completed, or was not posted).
    pub(super) fn release(&mut self, i: usize) -> Slot {
        let s = self.slots[i];
        self.slots[i] = Slot::IDLE;
        self.free.push(i);
        s
    }

    pub(super) fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The addresses of the slots whose operations are still posted.
    pub(super) fn busy(&self) -> Vec<*mut c_void> {
        (0..self.slots.len()).filter(|&i| self.slots[i].busy).map(|i| self.ptr(i)).collect()
    }
}

impl Drop for Contexts {
    fn drop(&mut self) {
        for &b in &self.blocks {
            // SAFETY: each block is a CHUNK-long boxed slice leaked in `take`, freed once here;
            // the endpoint that held addresses in it was closed first (FabricRail::drop runs
            // before its fields drop).
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(b, CHUNK)) });
        }
    }
}
