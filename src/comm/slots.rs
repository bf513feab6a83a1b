//! Request handles: a process-wide table of slots in which every communicator owns one block of
//! `BLOCK` slots (its posting window), so that posting and polling take no lock and touch no
//! shared free list.
//!
//! What C holds is an id (slot index + generation), never a trusted pointer. A slot's `tag` holds
//! its generation and state:
//! - FREE: no live value (at most a retired one, kept for reuse). Only the block's owner touches
//!   it: it fills it (`claim`, called under the owner's own lock, so one claimer at a time), then
//!   publishes LIVE with Release.
//! - LIVE: holds a value. A lookup pins it (one compare-exchange, LIVE → PINNED, generation
//!   checked in the same instruction), uses the value in place, and unpins it with a plain
//!   Release store: back to LIVE, or FREE with the next generation once the value is removed
//!   (retired in place when nothing else holds it, else taken out).
//! - PINNED: one lookup uses it; a second one for the same id waits (yielding) until it is
//!   unpinned (as a second locker of a mutex would), then finds it LIVE again or stale.
//!
//! A stale or forged id finds a generation or state that does not match and touches nothing.
//! Blocks are never freed or moved (pages of blocks, grown on demand); a communicator's block
//! goes back to a free list when it is dropped, with its generations running on.
//!
//! In the unit tests built with `cfg(loom)` (`RUSTFLAGS="--cfg loom"`, scripts/test.sh's "loom"
//! step) the slots' atomics, their value cells and the lookup's wait come from loom, blocks are
//! two slots and a table's first page one block, and `loom_tests` model-checks this code (claim,
//! pin, unpin, take, retire, reuse) on tables of its own; the crate's other tests are not meant to
//! run there. Any other build, with `cfg(loom)` or not, is the plain one.

use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use sync::{AtomicU32, AtomicU64, Ordering, UnsafeCell, spin_loop, yield_now};

/// What the slot protocol synchronizes with: std's atomics and cell, or loom's in loom's tests.
mod sync {
    #[cfg(all(test, loom))]
    pub(super) use loom::{
        cell::UnsafeCell,
        hint::spin_loop,
        sync::atomic::{AtomicU32, AtomicU64, Ordering},
        thread::yield_now,
    };
    #[cfg(not(all(test, loom)))]
    pub(super) use std::{
        hint::spin_loop,
        sync::atomic::{AtomicU32, AtomicU64, Ordering},
        thread::yield_now,
    };

    /// std's `UnsafeCell` with the part of loom's API used here: `get_mut` hands out a pointer
    /// that loom counts as a write access for as long as it lives (here: a plain `*mut T`).
    #[cfg(not(all(test, loom)))]
    pub(super) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(all(test, loom)))]
    impl<T> UnsafeCell<T> {
        pub(super) const fn new(v: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(v))
        }

        #[inline(always)]
        pub(super) fn get_mut(&self) -> MutPtr<T> {
            MutPtr(self.0.get())
        }
    }

    #[cfg(not(all(test, loom)))]
    pub(super) struct MutPtr<T>(*mut T);

    #[cfg(not(all(test, loom)))]
    impl<T> MutPtr<T> {
        /// # Safety
        /// As for `&mut *ptr`: nothing else reads or writes the value while the reference lives.
        #[inline(always)]
        #[allow(clippy::mut_from_ref)] // (loom's signature: the pointer, not `&self`, is the borrow)
        pub(super) unsafe fn deref(&self) -> &mut T {
            // SAFETY: the caller's.
            unsafe { &mut *self.0 }
        }
    }
}

/// Slots per block: a communicator's limit of posted, not yet reported requests.
#[cfg(not(all(test, loom)))]
pub const BLOCK: usize = crate::config::MAX_PENDING_PER_COMM;
/// (Two under loom: a full block, a wrap-around and a reused slot within a few operations.)
#[cfg(all(test, loom))]
pub const BLOCK: usize = 2;
const _: () = assert!(BLOCK.is_power_of_two() && BLOCK <= 1 << 12);
const BLOCK_BITS: u32 = BLOCK.trailing_zeros();
const PAGES: usize = 18;
#[cfg(not(all(test, loom)))]
const FIRST_PAGE: usize = 8;
#[cfg(all(test, loom))]
const FIRST_PAGE: usize = 1;
/// Generations stay below 2^28 so an id never has bits 60-63 set (as `registry`'s).
const GEN_MASK: u64 = 0x0fff_ffff;

const FREE: u64 = 0;
const LIVE: u64 = 1;
const PINNED: u64 = 2;
const STATE: u64 = 3;

fn tag(generation: u64, state: u64) -> u64 {
    generation << 2 | state
}

struct Slot<T> {
    tag: AtomicU64,
    value: UnsafeCell<Option<Arc<T>>>,
}

// SAFETY: `value` is only accessed by the thread that owns the slot through its tag: the
// claimer of a FREE slot (one at a time per block, by the owner's contract) or the pinner of a
// LIVE one (the compare-exchange admits one); Arc<T> is Send + Sync for T: Send + Sync.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}

struct Block<T> {
    slots: Box<[Slot<T>]>,
    /// The slot freed last (a hint for the next claim: its request is the one most likely still
    /// in the cache).
    freed: AtomicU32,
}

/// One communicator's block: where its posts find free slots.
pub struct BlockRef<T: Send + Sync + 'static> {
    table: &'static Slots<T>,
    idx: u32,
    /// Where a claim scans from when the slot freed last is taken (slots are usually freed in
    /// posting order).
    cursor: AtomicU32,
}

impl<T: Send + Sync + 'static> Drop for BlockRef<T> {
    fn drop(&mut self) {
        // Values hold no reference to the owner here (or it would not be dropped): the caller
        // took them out first (`take_all`); any left are dropped now.
        drop(self.take_all(|_| true));
        drop(self.clear());
        self.table.free_blocks.lock().push(self.idx);
    }
}

pub struct Slots<T> {
    pages: [OnceLock<Box<[Block<T>]>>; PAGES],
    /// (std's under loom too: `new` is const, and handing out blocks is not the slot protocol.)
    next_fresh: std::sync::atomic::AtomicU32,
    free_blocks: Mutex<Vec<u32>>,
    /// Readies a removed value for reuse (drops what it should not keep alive).
    retire: fn(&mut T),
}

/// Page and offset of a block index.
fn locate(idx: u32) -> (usize, usize) {
    crate::registry::locate_in(idx, FIRST_PAGE)
}

fn capacity() -> u32 {
    crate::registry::capacity_of(FIRST_PAGE, PAGES)
}

fn encode(block: u32, k: usize, generation: u64) -> u64 {
    ((generation & GEN_MASK) << 32) | (((block as u64) << BLOCK_BITS | k as u64) + 1)
}

fn decode(id: u64) -> Option<(u32, usize, u64)> {
    let low = id & 0xffff_ffff;
    let generation = id >> 32;
    if low == 0 || generation > GEN_MASK {
        return None;
    }
    let i = low - 1;
    Some(((i >> BLOCK_BITS) as u32, (i & (BLOCK as u64 - 1)) as usize, generation))
}

impl<T: Send + Sync + 'static> Slots<T> {
    /// A table whose removed values are kept in their slot for the next claim when nothing
    /// else holds them (`retire` readies them: one allocation saved per use).
    pub const fn new(retire: fn(&mut T)) -> Self {
        Slots {
            pages: [const { OnceLock::new() }; PAGES],
            next_fresh: std::sync::atomic::AtomicU32::new(0),
            free_blocks: Mutex::new(Vec::new()),
            retire,
        }
    }

    fn block(&self, idx: u32) -> Option<&Block<T>> {
        if idx >= capacity() {
            return None;
        }
        let (page, off) = locate(idx);
        self.pages[page].get().map(|p| &p[off])
    }

    /// A block for a new owner; `None` when the table is full.
    pub fn new_block(&'static self) -> Option<BlockRef<T>> {
        let idx = match self.free_blocks.lock().pop() {
            Some(i) => i,
            None => {
                let i = self.next_fresh.fetch_add(1, Ordering::Relaxed);
                if i >= capacity() {
                    self.next_fresh.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                let (page, _) = locate(i);
                self.pages[page].get_or_init(|| {
                    (0..FIRST_PAGE << page)
                        .map(|_| Block {
                            slots: (0..BLOCK).map(|_| Slot { tag: AtomicU64::new(tag(1, FREE)), value: UnsafeCell::new(None) }).collect(),
                            freed: AtomicU32::new(0),
                        })
                        .collect()
                });
                i
            }
        };
        Some(BlockRef { table: self, idx, cursor: AtomicU32::new(0) })
    }

    /// Pins the slot of `id` if it is LIVE with that generation; waits while another lookup has
    /// it pinned. `None`: stale or forged.
    fn pin(&self, id: u64) -> Option<(&Block<T>, usize, u64)> {
        let (b, k, generation) = decode(id)?;
        let block = self.block(b)?;
        let slot = &block.slots[k];
        let mut spins = 0u32;
        loop {
            match slot.tag.compare_exchange(tag(generation, LIVE), tag(generation, PINNED), Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Some((block, k, generation)),
                Err(t) if t == tag(generation, PINNED) => {
                    spins += 1;
                    if spins.is_multiple_of(64) {
                        yield_now();
                    } else {
                        spin_loop();
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Calls `f` with the value of a current `id` in place (no reference counting), and removes
    /// it when `f` says so (its second result). A removed value that nothing else holds stays in
    /// the slot, retired, for the block's next claim; one still held elsewhere is returned, for
    /// the caller to drop. `None` when the id is stale or forged. `f` must not look up this same
    /// id (it would wait on itself).
    pub fn with_take<R>(&self, id: u64, f: impl FnOnce(&Arc<T>) -> (R, bool)) -> Option<(R, Option<Arc<T>>)> {
        self.with_remove(id, f, false)
    }

    fn with_remove<R>(&self, id: u64, f: impl FnOnce(&Arc<T>) -> (R, bool), out: bool) -> Option<(R, Option<Arc<T>>)> {
        let (block, k, generation) = self.pin(id)?;
        let slot = &block.slots[k];
        /// Unpins on the way out, also if `f` panics (the value stays).
        struct Unpin<'a>(&'a AtomicU64, u64);
        impl Drop for Unpin<'_> {
            fn drop(&mut self) {
                self.0.store(self.1, Ordering::Release);
            }
        }
        let unpin = Unpin(&slot.tag, tag(generation, LIVE));
        // (The access to `value` ends with this block, before the unpin on every way out.)
        let (r, taken) = {
            let value = slot.value.get_mut();
            // SAFETY: the slot is pinned by us (the compare-exchange above admits one thread), so
            // no other thread reads or writes `value` until we unpin it.
            let v = unsafe { value.deref() };
            let (r, take) = f(v.as_ref().expect("a LIVE slot holds a value"));
            if !take {
                return Some((r, None));
            }
            let taken = match v.as_mut().filter(|_| !out).and_then(Arc::get_mut) {
                Some(t) => {
                    (self.retire)(t);
                    None
                }
                None => v.take(),
            };
            (r, taken)
        };
        std::mem::forget(unpin);
        slot.tag.store(tag((generation + 1) & GEN_MASK, FREE), Ordering::Release);
        block.freed.store(k as u32, Ordering::Relaxed);
        Some((r, taken))
    }

    /// A clone of the value of a current `id`.
    #[cfg(test)]
    pub fn get(&self, id: u64) -> Option<Arc<T>> {
        self.with_take(id, |v| (v.clone(), false)).map(|(v, _)| v)
    }

    /// Removes the value if `id` is current and returns it: afterwards the id is stale.
    #[cfg(test)]
    pub fn remove(&self, id: u64) -> Option<Arc<T>> {
        self.with_remove(id, |_| ((), true), true).and_then(|(_, v)| v)
    }
}

impl<T: Send + Sync + 'static> BlockRef<T> {
    fn own(&self) -> &Block<T> {
        self.table.block(self.idx).expect("an owned block exists")
    }

    fn slots(&self) -> &[Slot<T>] {
        &self.own().slots
    }

    /// Fills a free slot of this block: `fill(id, retired)` updates the slot's retired value in
    /// place (and returns `None`) or returns a new value (always when there is none). `None`
    /// when all `BLOCK` slots are in use. The owner calls this under its own lock: one claimer at
    /// a time per block.
    pub fn claim(&self, fill: impl FnOnce(u64, Option<&mut T>) -> Option<Arc<T>>) -> Option<(u64, Arc<T>)> {
        let block = self.own();
        let slots = &block.slots;
        // The slot freed last first (in a ping-pong, the same one or two requests stay hot in
        // the cache), then onwards from the last claim (in order, as a window completes).
        let last = block.freed.load(Ordering::Relaxed) as usize % BLOCK;
        let start = self.cursor.load(Ordering::Relaxed) as usize;
        for n in 0..=BLOCK {
            let k = if n == 0 { last } else { (start + n - 1) % BLOCK };
            let slot = &slots[k];
            let t = slot.tag.load(Ordering::Acquire);
            if t & STATE != FREE {
                continue;
            }
            let generation = t >> 2;
            let id = encode(self.idx, k, generation);
            // (The access to `value` ends with this block, before the publishing store.)
            let out = {
                let value = slot.value.get_mut();
                // SAFETY: the slot is FREE: no lookup pins a FREE slot, and claims of this block
                // (and `clear`) are serialized by the owner, so we are the only thread touching
                // `value` until the Release store below publishes it.
                let v = unsafe { value.deref() };
                // (Nothing else holds a retired value: `with_remove` kept it only when unique, and
                // a FREE slot hands out no clones.)
                if let Some(new) = fill(id, v.as_mut().and_then(Arc::get_mut)) {
                    *v = Some(new);
                }
                let Some(out) = v.clone() else {
                    panic!("claim: fill returned nothing for a slot without a value");
                };
                out
            };
            slot.tag.store(tag(generation, LIVE), Ordering::Release);
            if n > 0 {
                self.cursor.store(((k + 1) % BLOCK) as u32, Ordering::Relaxed);
            }
            return Some((id, out));
        }
        None
    }

    /// Takes out the retired values kept in free slots, for the caller to drop (they may hold
    /// the owner: an owner that goes away calls this after `take_all`, with its claims stopped).
    pub fn clear(&self) -> Vec<Arc<T>> {
        let slots = self.slots();
        slots
            .iter()
            .filter(|s| s.tag.load(Ordering::Acquire) & STATE == FREE)
            // SAFETY: FREE slots are touched only by the owner's claims, which the caller has
            // stopped (the owner's contract, as for `claim`).
            .filter_map(|s| unsafe { s.value.get_mut().deref().take() })
            .collect()
    }

    /// Ids of this block's values (a snapshot).
    fn ids(&self) -> Vec<u64> {
        let slots = self.slots();
        (0..BLOCK)
            .filter_map(|k| {
                let t = slots[k].tag.load(Ordering::Acquire);
                (t & STATE != FREE).then(|| encode(self.idx, k, t >> 2))
            })
            .collect()
    }

    /// How many of this block's values `pred` holds for.
    pub fn count_where(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        self.ids().into_iter().filter(|&id| self.table.with_take(id, |v| (pred(v), false)).is_some_and(|(p, _)| p)).count()
    }

    /// Removes every value of this block for which `pred` holds; returns them.
    pub fn take_all(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<Arc<T>> {
        self.ids().into_iter().filter_map(|id| self.table.with_remove(id, |v| ((), pred(v)), true).and_then(|(_, v)| v)).collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// A claim's fill that stores `v` (in the retired value when there is one).
    fn put<V>(v: V) -> impl FnOnce(u64, Option<&mut V>) -> Option<Arc<V>> {
        move |_, old| match old {
            Some(o) => {
                *o = v;
                None
            }
            None => Some(Arc::new(v)),
        }
    }

    #[test]
    fn ids_cover_every_slot() {
        // (The page arithmetic is registry's `locate_in`, tested there.) Every slot index of the last block fits the id's 32 low bits.
        assert!(((capacity() as u64) << BLOCK_BITS) < 1 << 32);
        let id = encode(capacity() - 1, BLOCK - 1, GEN_MASK);
        assert_eq!(decode(id), Some((capacity() - 1, BLOCK - 1, GEN_MASK)));
        assert_eq!(id >> 63, 0);
    }

    #[test]
    fn stale_and_forged_ids_find_nothing() {
        static T: Slots<u32> = Slots::new(|_| {});
        let b = T.new_block().unwrap();
        let (id, _) = b.claim(put(5)).unwrap();
        assert_eq!(*T.get(id).unwrap(), 5);
        assert_eq!(T.with_take(id, |v| (**v * 2, false)).map(|(r, v)| (r, v.is_some())), Some((10, false)));
        for bad in [0, u64::MAX, id + 1, id ^ (1 << 40), id ^ (1 << 62)] {
            assert!(T.get(bad).is_none(), "{bad:#x}");
            assert!(T.remove(bad).is_none(), "{bad:#x}");
        }
        assert_eq!(*T.remove(id).unwrap(), 5);
        assert!(T.get(id).is_none());
        assert!(T.remove(id).is_none());
        // Every slot of the block: then the block is full; a freed slot is reused with a new
        // generation, and the old id stays dead.
        let ids: Vec<u64> = (0..BLOCK as u32).map(|i| b.claim(put(i)).unwrap().0).collect();
        assert!(b.claim(put(0)).is_none(), "a block holds BLOCK values");
        assert_eq!(b.count_where(|_| true), BLOCK);
        let old = ids[3];
        assert_eq!(*T.remove(old).unwrap(), 3);
        let (new, _) = b.claim(put(99)).unwrap();
        assert_ne!(old, new);
        assert!(T.get(old).is_none());
        assert_eq!(*T.get(new).unwrap(), 99);
        // take_all by predicate.
        let odd = b.take_all(|v| v % 2 == 1);
        assert_eq!(odd.len(), (0..BLOCK as u32).filter(|v| v % 2 == 1 && *v != 3).count() + 1);
        assert!(b.count_where(|v| v % 2 == 1) == 0);
        // A dropped block's ids are stale; its index is reused with generations running on.
        drop(b);
        assert!(ids.iter().all(|&id| T.get(id).is_none()));
        let b2 = T.new_block().unwrap();
        let (id2, _) = b2.claim(put(7)).unwrap();
        assert!(!ids.contains(&id2) && id2 != new && id2 != id);
    }

    #[test]
    fn a_panic_in_the_lookup_leaves_the_value_in_place() {
        static T: Slots<u32> = Slots::new(|_| {});
        let b = T.new_block().unwrap();
        let (id, _) = b.claim(put(1)).unwrap();
        let r = std::panic::catch_unwind(|| T.with_take(id, |_| -> ((), bool) { panic!("inside") }));
        assert!(r.is_err());
        assert_eq!(*T.get(id).unwrap(), 1);
    }

    /// Owners claim and reap in their blocks while other threads look up current, stale and
    /// foreign ids and hold on to what they found (each value is its own id): every id is handed
    /// out once and removed once, a lookup never yields another id's value, and a value someone
    /// still holds is never reused.
    #[test]
    fn threads_hammer_claim_lookup_remove() {
        static T: Slots<u64> = Slots::new(|v| *v = 0);
        let seen: Arc<Vec<AtomicU64>> = Arc::new((0..4096).map(|_| AtomicU64::new(0)).collect());
        let threads: Vec<_> = (0..4u64)
            .map(|_| {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let b = T.new_block().unwrap();
                    let mut ids = HashSet::new();
                    let mut live = std::collections::VecDeque::new();
                    let mut held: std::collections::VecDeque<(u64, Arc<u64>)> = Default::default();
                    let mut reused = 0;
                    for i in 0..50_000u64 {
                        if live.len() == BLOCK {
                            let id = live.pop_front().unwrap();
                            if i % 2 == 0 {
                                assert_eq!(T.with_take(id, |v| (**v, true)).map(|(v, _)| v), Some(id));
                            } else {
                                assert_eq!(*T.remove(id).unwrap(), id);
                            }
                        }
                        let (id, _) = b
                            .claim(|id, old| {
                                if let Some(o) = old {
                                    assert_eq!(*o, 0, "a reused value was retired");
                                    reused += 1;
                                    *o = id;
                                    return None;
                                }
                                Some(Arc::new(id))
                            })
                            .unwrap();
                        assert!(ids.insert(id), "id handed out twice");
                        live.push_back(id);
                        seen[(i % 4096) as usize].store(id, Ordering::Relaxed);
                        let other = seen[((i * 7919) % 4096) as usize].load(Ordering::Relaxed);
                        if let Some(x) = T.get(other) {
                            assert_eq!(*x, other, "a lookup found another id's value");
                            held.push_back((other, x));
                            if held.len() > 8 {
                                held.pop_front();
                            }
                        }
                        for (id, x) in &held {
                            assert_eq!(**x, *id, "a value still held was reused");
                        }
                        assert_eq!(*T.get(id).unwrap(), id);
                    }
                    assert!(reused > 10_000, "retired values are reused ({reused})");
                    for id in live {
                        assert_eq!(*T.remove(id).unwrap(), id);
                        assert!(T.get(id).is_none());
                    }
                    assert_eq!(b.count_where(|_| true), 0);
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
        // Two threads race to remove each id: exactly one wins.
        let b = T.new_block().unwrap();
        for _ in 0..200 {
            let ids: Vec<u64> = (0..BLOCK as u64).map(|i| b.claim(put(i)).unwrap().0).collect();
            let ids2 = ids.clone();
            let h = std::thread::spawn(move || ids2.iter().filter(|&&id| T.remove(id).is_some()).count());
            let mine = ids.iter().filter(|&&id| T.remove(id).is_some()).count();
            assert_eq!(mine + h.join().unwrap(), BLOCK);
        }
    }
}

/// Model checks of the slot protocol above: loom runs each model under every interleaving of its
/// threads' atomic operations, each load also returning the older values its ordering allows
/// (within loom's model of memory), and fails on any access to a value cell that is not ordered
/// after the previous one by the tags' Release/Acquire. The code is this file's own claim, pin,
/// unpin, take and retire, on a fresh table per execution whose blocks are two slots (std's `Arc`,
/// `OnceLock` and the block free list's mutex are not modeled).
/// `RUSTFLAGS="--cfg loom" cargo test --release --lib --target-dir target/loom loom_`;
/// `LOOM_MAX_PREEMPTIONS=n` bounds the exploration (none by default: each model is explored whole).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    type Table = &'static Slots<u64>;

    /// Runs `f` under loom, on a table of its own each execution (retiring a value sets it to 0).
    fn model(name: &str, f: impl Fn(Table) + Send + Sync + 'static) {
        // No preemption bound unless LOOM_MAX_PREEMPTIONS sets one: these models are small enough
        // to explore whole (about 150,000 executions, seconds).
        let builder = loom::model::Builder::new();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        builder.check(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            let table: Table = Box::leak(Box::new(Slots::new(|v: &mut u64| *v = 0)));
            f(table);
            // SAFETY: `f` joined the threads it spawned and dropped its blocks: nothing refers to
            // the table any more. (A model that panics leaks it.)
            unsafe { drop(Box::from_raw(std::ptr::from_ref(table).cast_mut())) };
        });
        let bound = builder.preemption_bound.map_or("none".to_string(), |b| b.to_string());
        println!("{name}: {} executions, preemption bound {bound}", runs.load(Ordering::Relaxed));
    }

    /// A claim's fill that stores `v` (in the retired value when there is one).
    fn put(v: u64) -> impl FnOnce(u64, Option<&mut u64>) -> Option<Arc<u64>> {
        move |_, old| match old {
            Some(o) => {
                assert_eq!(*o, 0, "a reused value was retired");
                *o = v;
                None
            }
            None => Some(Arc::new(v)),
        }
    }

    /// The slot (block and index) of an id, without its generation.
    fn slot_of(id: u64) -> u64 {
        id & 0xffff_ffff
    }

    /// (a) test_request's lookups (one that leaves the request, one that reaps it) pin a slot while
    /// the owner posts (into the other slot, or into that one once reaped), reaps and posts again;
    /// the owner hands its new id over with a Relaxed store only, so what the lookup finds there
    /// is published by the slot's own tag.
    #[test]
    fn loom_lookup_pins_while_the_owner_claims() {
        model("lookup_pins_while_the_owner_claims", |t| {
            let b = t.new_block().unwrap();
            let (id1, v) = b.claim(put(1)).unwrap();
            drop(v);
            let handed = Arc::new(AtomicU64::new(0));
            let h = {
                let handed = handed.clone();
                thread::spawn(move || {
                    let pending = t.with_take(id1, |v| (**v, false));
                    assert!(matches!(pending, Some((1, None))), "{pending:?}");
                    let id2 = handed.load(Ordering::Relaxed);
                    if id2 != 0 {
                        // Published by the claim's Release store: the filled value, or (once the
                        // owner removed it) nothing; never the value of the slot's next use.
                        let found = t.get(id2).map(|v| *v);
                        assert!(found.is_none() || found == Some(2), "{found:?}");
                    }
                    let reaped = t.with_take(id1, |v| (**v, true));
                    assert!(matches!(reaped, Some((1, None))), "{reaped:?}");
                })
            };
            // The other slot, or id1's once the lookup reaped it (its value retired in place).
            let (id2, v) = b.claim(put(2)).unwrap();
            assert_ne!(id2, id1);
            assert_eq!(*v, 2);
            drop(v);
            handed.store(id2, Ordering::Relaxed);
            let reaped = t.with_take(id2, |v| (**v, true)).map(|(r, _)| r);
            assert_eq!(reaped, Some(2));
            // Posting again: the slot just freed (id2's, its value retired in place) or, once the
            // lookup reaped id1, that one; never one still pinned or LIVE.
            let (id3, v) = b.claim(put(3)).unwrap();
            assert!(id3 != id1 && id3 != id2);
            assert_eq!(*v, 3);
            drop(v);
            h.join().unwrap();
            assert!(t.get(id1).is_none() && t.get(id2).is_none());
            assert_eq!(t.get(id3).as_deref(), Some(&3));
            drop(b);
        });
    }

    /// (b) Two lookups of one id, both removing it, while the owner posts: exactly one finds it
    /// (and retires it in place, nothing else holding it); the other finds it stale, having waited
    /// if it came while pinned, also when the owner's claim has reused the slot by then.
    #[test]
    fn loom_two_lookups_of_one_id_one_takes() {
        model("two_lookups_of_one_id_one_takes", |t| {
            let b = t.new_block().unwrap();
            let (id, v) = b.claim(put(7)).unwrap();
            drop(v);
            let take = move || t.with_take(id, |v| (**v, true)).map(|(r, taken)| (r, taken.is_none()));
            let hs = [thread::spawn(take), thread::spawn(take)];
            // The owner posts: into id's slot (its retired value, the next generation) once taken,
            // else into the other one.
            let (first, v) = b.claim(put(8)).unwrap();
            assert_ne!(first, id);
            assert_eq!(*v, 8);
            drop(v);
            let found: Vec<_> = hs.into_iter().filter_map(|h| h.join().unwrap()).collect();
            assert_eq!(found, [(7, true)], "exactly one lookup takes the value, retired in place");
            assert!(t.get(id).is_none());
            if slot_of(first) != slot_of(id) {
                let (next, v) = b.claim(put(9)).unwrap();
                assert!(slot_of(next) == slot_of(id) && next != id, "the freed slot is reused");
                assert_eq!(*v, 9);
            }
            assert_eq!(t.get(first).as_deref(), Some(&8));
            drop(b);
        });
    }

    /// (c) A lookup with an id that the owner removes and whose slot the owner's next claim reuses
    /// (new generation): it finds the old value or nothing, never the new one; a clone it took
    /// keeps the old value (the removal then takes it out rather than retiring it in place).
    #[test]
    fn loom_stale_id_races_removal_and_reuse() {
        model("stale_id_races_removal_and_reuse", |t| {
            let b = t.new_block().unwrap();
            let (old, v) = b.claim(put(1)).unwrap();
            drop(v);
            let h = thread::spawn(move || {
                let held = t.get(old);
                let found = t.with_take(old, |v| (**v, false)).map(|(r, _)| r);
                assert!(found.is_none() || found == Some(1), "{found:?}");
                held
            });
            let removed = t.with_take(old, |v| (**v, true));
            assert!(matches!(removed, Some((1, _))), "{removed:?}");
            drop(removed);
            let (new, v) = b.claim(put(2)).unwrap();
            assert!(slot_of(new) == slot_of(old) && new != old, "the freed slot is reused");
            assert_eq!(*v, 2);
            drop(v);
            let held = h.join().unwrap();
            assert!(held.is_none_or(|v| *v == 1), "a held value was reused");
            assert!(t.get(old).is_none());
            assert_eq!(t.get(new).as_deref(), Some(&2));
            drop(b);
        });
    }

    /// (d) The block is full and a lookup has one slot pinned (it takes the value, yielding in
    /// the middle): the owner's claim finds no slot until the lookup unpins it as FREE, and then
    /// gets that slot with the retired value, never while pinned.
    #[test]
    fn loom_pinned_slot_is_not_reused_until_unpinned() {
        model("pinned_slot_is_not_reused_until_unpinned", |t| {
            let b = t.new_block().unwrap();
            let (id1, v) = b.claim(put(1)).unwrap();
            drop(v);
            let (id2, v) = b.claim(put(2)).unwrap();
            drop(v);
            let h = thread::spawn(move || {
                t.with_take(id1, |v| {
                    let before = **v;
                    thread::yield_now();
                    assert_eq!(**v, before, "a pinned value changed");
                    (before, true)
                })
                .map(|(r, taken)| (r, taken.is_none()))
            });
            let claimed = b.claim(put(3)).map(|(id, v)| (id, *v));
            assert_eq!(h.join().unwrap(), Some((1, true)));
            let (id3, v3) = claimed.or_else(|| b.claim(put(3)).map(|(id, v)| (id, *v))).expect("a slot once unpinned");
            assert!(slot_of(id3) == slot_of(id1) && id3 != id1);
            assert_eq!(v3, 3);
            assert!(t.get(id1).is_none());
            assert_eq!(t.get(id2).as_deref(), Some(&2));
            assert_eq!(t.get(id3).as_deref(), Some(&3));
            drop(b);
        });
    }
}
