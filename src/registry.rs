//! Handle tables of communicators and tensors: what C holds is an id (slot index + generation),
//! never a trusted pointer. (Requests, posted and tested far more often, have their own table
//! without locks or a shared free list: `transport::slots`.)
//!
//! A table is a list of pages that grow on demand (page k holds `64 << k` slots) and are never
//! freed or moved, so a lookup is an index computation plus one uncontended per-slot lock: there
//! is no table-wide lock. Free slot indices go through a lock-free queue. Every slot carries a
//! generation that changes when its value is removed, so a stale or forged id finds no value.

use crossbeam::queue::SegQueue;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

const PAGES: usize = 20;
const FIRST_PAGE: usize = 64;
/// Generations stay below 2^28 so an id never has bits 60-63 set (the engine uses bit 63, C
/// handles carry their kind in 60-62: `ffi::handle_id`).
const GEN_MASK: u32 = 0x0fff_ffff;

struct Slot<T> {
    inner: Mutex<(u32, Option<Arc<T>>)>,
}

pub struct Table<T> {
    pages: [OnceLock<Box<[Slot<T>]>>; PAGES],
    next_fresh: AtomicU32,
    free: SegQueue<u32>,
}

/// Page and offset of index `idx` in pages that double in size from `first` entries (page k
/// holds `first << k`; shared with `transport::slots`).
pub(crate) fn locate_in(idx: u32, first: usize) -> (usize, usize) {
    let n = idx as usize / first + 1;
    let page = (usize::BITS - 1 - n.leading_zeros()) as usize;
    let start = first * ((1usize << page) - 1);
    (page, idx as usize - start)
}

/// How many entries `pages` such pages hold.
pub(crate) fn capacity_of(first: usize, pages: usize) -> u32 {
    (first * ((1usize << pages) - 1)) as u32
}

fn locate(idx: u32) -> (usize, usize) {
    locate_in(idx, FIRST_PAGE)
}

fn capacity() -> u32 {
    capacity_of(FIRST_PAGE, PAGES)
}

pub fn encode(idx: u32, generation: u32) -> u64 {
    ((generation as u64) << 32) | (idx as u64 + 1)
}

fn decode(id: u64) -> Option<(u32, u32)> {
    let low = (id & 0xffff_ffff) as u32;
    let generation = (id >> 32) as u32;
    if low == 0 || generation > GEN_MASK {
        return None;
    }
    Some((low - 1, generation))
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Table<T> {
    pub const fn new() -> Self {
        Table { pages: [const { OnceLock::new() }; PAGES], next_fresh: AtomicU32::new(0), free: SegQueue::new() }
    }

    fn slot(&self, idx: u32) -> Option<&Slot<T>> {
        if idx >= capacity() {
            return None;
        }
        let (page, off) = locate(idx);
        self.pages[page].get().map(|p| &p[off])
    }

    fn slot_or_create(&self, idx: u32) -> &Slot<T> {
        let (page, off) = locate(idx);
        let p = self.pages[page]
            .get_or_init(|| (0..FIRST_PAGE << page).map(|_| Slot { inner: Mutex::new((1, None)) }).collect::<Vec<_>>().into_boxed_slice());
        &p[off]
    }

    /// Stores a value; the closure gets the id it will have (so the value can know its own id).
    /// `None` when the table is full.
    pub fn insert_with(&self, make: impl FnOnce(u64) -> Arc<T>) -> Option<(u64, Arc<T>)> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = self.next_fresh.fetch_add(1, Ordering::Relaxed);
                if i >= capacity() {
                    self.next_fresh.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                i
            }
        };
        let slot = self.slot_or_create(idx);
        let mut g = slot.inner.lock();
        let id = encode(idx, g.0);
        let v = make(id);
        g.1 = Some(v.clone());
        Some((id, v))
    }

    pub fn get(&self, id: u64) -> Option<Arc<T>> {
        let (idx, generation) = decode(id)?;
        let g = self.slot(idx)?.inner.lock();
        if g.0 == generation { g.1.clone() } else { None }
    }

    /// Calls `f` with the value of a current `id`, in place under its slot's lock (no reference
    /// count traffic: for lookups in a polling loop); `None` when the id is stale or forged.
    /// `f` must not use this table's slot of `id` (it would wait on itself).
    pub fn with<R>(&self, id: u64, f: impl FnOnce(&Arc<T>) -> R) -> Option<R> {
        let (idx, generation) = decode(id)?;
        let g = self.slot(idx)?.inner.lock();
        if g.0 != generation {
            return None;
        }
        g.1.as_ref().map(f)
    }

    /// Like `with`, and under the same lock removes the value when `f` says so (its second
    /// result): a lookup that ends a value's life takes the slot's lock once. The removed value
    /// is returned (dropped by the caller, outside the lock).
    pub fn with_take<R>(&self, id: u64, f: impl FnOnce(&Arc<T>) -> (R, bool)) -> Option<(R, Option<Arc<T>>)> {
        let (idx, generation) = decode(id)?;
        let slot = self.slot(idx)?;
        let mut g = slot.inner.lock();
        if g.0 != generation {
            return None;
        }
        let (r, take) = f(g.1.as_ref()?);
        if !take {
            return Some((r, None));
        }
        let v = g.1.take();
        g.0 = if g.0 >= GEN_MASK { 1 } else { g.0 + 1 };
        drop(g);
        self.free.push(idx);
        Some((r, v))
    }

    /// Replaces the value of a current `id` by what `f` makes of it (the id stays the same);
    /// `None` when the id is stale or forged.
    pub fn replace<E>(&self, id: u64, f: impl FnOnce(&Arc<T>) -> Result<Arc<T>, E>) -> Option<Result<(), E>> {
        let (idx, generation) = decode(id)?;
        let mut g = self.slot(idx)?.inner.lock();
        if g.0 != generation {
            return None;
        }
        let old = g.1.as_ref()?;
        Some(f(old).map(|new| {
            let old = g.1.replace(new);
            drop(g);
            drop(old);
        }))
    }

    /// Removes the value if `id` is current: afterwards the id is stale.
    pub fn remove(&self, id: u64) -> Option<Arc<T>> {
        self.with_take(id, |_| ((), true)).and_then(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn locate_covers_pages() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(63), (0, 63));
        assert_eq!(locate(64), (1, 0));
        assert_eq!(locate(191), (1, 127));
        assert_eq!(locate(192), (2, 0));
        // Other first-page sizes (transport::slots uses 8).
        assert_eq!(locate_in(7, 8), (0, 7));
        assert_eq!(locate_in(8, 8), (1, 0));
        assert_eq!(locate_in(23, 8), (1, 15));
        assert_eq!(locate_in(24, 8), (2, 0));
        assert_eq!(capacity_of(8, 3), 56);
    }

    #[test]
    fn stale_and_forged_ids_find_nothing() {
        let t: Table<u32> = Table::new();
        let (id, _) = t.insert_with(|_| Arc::new(5)).unwrap();
        assert_eq!(*t.get(id).unwrap(), 5);
        assert_eq!(t.with(id, |v| **v + 1), Some(6));
        // with_take: looks without removing, or removes under the same lock.
        assert_eq!(t.with_take(id, |v| (**v * 2, false)).map(|(r, v)| (r, v.is_some())), Some((10, false)));
        assert_eq!(t.with_take(id ^ (1 << 40), |_| ((), true)), None);
        assert_eq!(t.with(id ^ (1 << 40), |v| **v), None);
        assert!(t.get(0).is_none());
        assert!(t.get(u64::MAX).is_none());
        assert!(t.get(id + 1).is_none());
        assert!(t.get(id ^ (1 << 40)).is_none());
        assert_eq!(*t.remove(id).unwrap(), 5);
        assert!(t.get(id).is_none());
        assert_eq!(t.with(id, |v| **v), None);
        assert!(t.remove(id).is_none());
        // the slot is reused with a new generation: the old id stays dead
        let (id2, _) = t.insert_with(|_| Arc::new(6)).unwrap();
        assert_ne!(id, id2);
        assert!(t.get(id).is_none());
        assert_eq!(*t.get(id2).unwrap(), 6);
        let (r, v) = t.with_take(id2, |v| (**v + 1, true)).unwrap();
        assert_eq!((r, *v.unwrap()), (7, 6));
        assert!(t.get(id2).is_none());
        assert_eq!(t.with_take(id2, |_| ((), true)), None, "a taken id is stale");
        // its slot is reused, with a new generation
        let (id3, _) = t.insert_with(|_| Arc::new(8)).unwrap();
        assert_ne!(id2, id3);
        assert_eq!(*t.get(id3).unwrap(), 8);
    }

    #[test]
    fn replace_keeps_the_id_and_refuses_stale_ones() {
        let t: Table<u32> = Table::new();
        let (id, _) = t.insert_with(|_| Arc::new(1)).unwrap();
        let held = t.get(id).unwrap();
        assert_eq!(t.replace(id, |old| Ok::<_, ()>(Arc::new(**old + 1))), Some(Ok(())));
        assert_eq!(*t.get(id).unwrap(), 2, "the id names the new value");
        assert_eq!(*held, 1, "a holder of the old value keeps it");
        assert_eq!(t.replace(id, |_| Err("no")), Some(Err("no")));
        assert_eq!(*t.get(id).unwrap(), 2, "a failed replace changes nothing");
        assert_eq!(t.replace(id ^ (1 << 40), |_| Ok::<_, ()>(Arc::new(9))), None);
        t.remove(id).unwrap();
        assert_eq!(t.replace(id, |_| Ok::<_, ()>(Arc::new(9))), None, "a removed id is stale");
    }

    #[test]
    fn threads_hammer_insert_get_remove() {
        let t: Arc<Table<u64>> = Arc::new(Table::new());
        let threads: Vec<_> = (0..8u64)
            .map(|th| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let mut live = Vec::new();
                    for i in 0..20_000u64 {
                        let v = th << 32 | i;
                        let (id, _) = t.insert_with(|_| Arc::new(v)).unwrap();
                        live.push((id, v));
                        if i % 3 == 0 {
                            let (id, v) = live.swap_remove((i as usize * 7) % live.len());
                            assert_eq!(*t.get(id).unwrap(), v);
                            assert_eq!(*t.remove(id).unwrap(), v);
                            assert!(t.get(id).is_none());
                        }
                    }
                    for (id, v) in &live {
                        assert_eq!(*t.get(*id).unwrap(), *v);
                    }
                    live
                })
            })
            .collect();
        let mut ids = HashSet::new();
        for h in threads {
            for (id, v) in h.join().unwrap() {
                assert!(ids.insert(id), "id handed out twice");
                assert_eq!(*t.remove(id).unwrap(), v);
            }
        }
    }
}
