//! Large same-host copies split over two threads.
//!
//! One core copies DRAM to DRAM well below what the memory system delivers to two (measured here:
//! 4.6-5.0 GB/s for one thread, 6.6-6.9 GB/s for two, 64 MiB buffers). The receiver of a large
//! shared-memory message therefore hands the second half of its copy to a helper thread and copies
//! the first half itself. The half is handed over as a job with a three-state word (queued, taken,
//! done): a caller that finishes its half while the helper has not started takes the job back and
//! copies it too, so it never waits for a helper that is not running; once the helper has taken
//! the job the caller waits for `done` (the helper is copying then, never blocked).
//!
//! `NEURON_RT_ASYNC_SENDRECV_SHM_COPY_THREADS`: `1` (the default on hosts with more than one CPU)
//! or `0` (every copy on the caller's thread).
//!
//! **Copy distance.** The kernel's copies (`recv`, `process_vm_readv`) use `rep movsb` on CPUs
//! with fast short REP MOVSB (`fsrm`), and that runs 4-5x slower when the destination lies 1-31
//! bytes past the source modulo 4 KiB (AMD EPYC here: `process_vm_readv` of 1 MiB at 1.5-2.3
//! against 8-11 GB/s; 32 bytes and more, or a destination before the source, at full speed).
//! A receive into a tensor at such a distance from the sender's bytes goes through a bounce
//! buffer [`BOUNCE_AHEAD`] bytes past the source instead: the kernel copies into it at that
//! distance and `memcpy` out of it at a negative one. glibc's `memcpy` has the same weakness
//! where it uses `rep movsb` (here from a few KiB up to 1 MiB: 64 KiB at distance 16 moved
//! 2.8 GB/s against 46 at 0), so [`copy`] hands it pieces of [`PIECE`] bytes at those distances
//! (15-16 GB/s), which it copies with vector moves.

use crossbeam::channel::{Sender, unbounded};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// Distances (destination minus source, modulo [`ALIAS`]) at which a kernel copy is slow.
const SLOW_DISTANCE: std::ops::Range<usize> = 1..32;
/// The period of the distance: a 4 KiB page, whatever the system's page size.
pub const ALIAS: usize = 4096;
/// A bounce buffer lies this far past the source (modulo [`ALIAS`]).
const BOUNCE_AHEAD: usize = SLOW_DISTANCE.end;
/// The bytes a bounce buffer holds (cache-resident), besides its [`ALIAS`] of placement room.
pub const BOUNCE: usize = 256 << 10;

/// `NEURON_RT_ASYNC_SENDRECV_COPY_DETOUR=0` turns the detours off (for measuring them, or a CPU
/// where they cost more than they save).
fn detours() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NEURON_RT_ASYNC_SENDRECV_COPY_DETOUR").map(|v| v.trim() != "0").unwrap_or(true))
}

/// Whether a kernel copy of `len` bytes to `dst` from `src` (an address, or only its offset
/// modulo [`ALIAS`]) would run at a slow distance. Copies below a page are not worth a detour.
pub fn slow_distance(dst: usize, src: usize, len: usize) -> bool {
    len >= ALIAS && SLOW_DISTANCE.contains(&(dst.wrapping_sub(src) % ALIAS)) && detours()
}

/// Where in `buf` (at least [`BOUNCE`] + [`ALIAS`] bytes) a bounce for bytes at `src` starts.
fn bounce_at(buf: &mut [u8], src: usize) -> *mut u8 {
    debug_assert!(buf.len() >= BOUNCE + ALIAS);
    let base = buf.as_mut_ptr();
    base.wrapping_add((src + BOUNCE_AHEAD).wrapping_sub(base as usize) % ALIAS)
}

/// Runs `f` with this thread's bounce buffer placed for bytes at `src` ([`BOUNCE`] bytes from
/// the pointer it gets): one per thread that meets a slow distance, not one per communicator or
/// stream (its bytes never outlive a call).
pub fn with_bounce<R>(src: usize, f: impl FnOnce(*mut u8) -> R) -> R {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        if buf.len() < BOUNCE + ALIAS {
            buf.resize(BOUNCE + ALIAS, 0);
        }
        f(bounce_at(buf, src))
    })
}

/// At a slow distance, copies below [`PIECES_MAX`] go to `memcpy` in pieces of this size.
const PIECE: usize = 2048;
const PIECES_MAX: usize = 1 << 20;

/// `memcpy`, in [`PIECE`]s where it would be slow (see the module's "Copy distance").
///
/// # Safety
/// As for `std::ptr::copy_nonoverlapping`.
pub unsafe fn memcpy(src: *const u8, dst: *mut u8, len: usize) {
    if len >= PIECES_MAX || !slow_distance(dst as usize, src as usize, len) {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
    let mut done = 0;
    while done < len {
        let n = (len - done).min(PIECE);
        // SAFETY: done + n <= len: inside the caller's ranges.
        unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), n) };
        done += n;
    }
}

/// `memmove`: [`memcpy`] where the ranges do not overlap (the user-facing tensor copies, whose
/// buffers may sit at any distance), else `std::ptr::copy`.
///
/// # Safety
/// As for `std::ptr::copy`.
pub unsafe fn memmove(src: *const u8, dst: *mut u8, len: usize) {
    let (s, d) = (src as usize, dst as usize);
    if s < d.wrapping_add(len) && d < s.wrapping_add(len) {
        // SAFETY: the caller's contract; ptr::copy allows the overlap.
        unsafe { std::ptr::copy(src, dst, len) };
    } else {
        // SAFETY: the caller's contract, and the ranges are apart.
        unsafe { memcpy(src, dst, len) };
    }
}

/// Copies at least this long are split.
pub const SPLIT_MIN: usize = 2 << 20;

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const DONE: u8 = 2;

struct Job {
    src: *const u8,
    dst: *mut u8,
    len: usize,
    state: AtomicU8,
}

// SAFETY: the pointers are only dereferenced by whoever moved `state` from QUEUED to TAKEN, and
// the submitting caller does not return (so the memory stays alive and unaliased) until the job
// is DONE or it took the job back itself.
unsafe impl Send for Job {}
// SAFETY: as for Send: shared access is only to `state`, an atomic.
unsafe impl Sync for Job {}

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("NEURON_RT_ASYNC_SENDRECV_SHM_COPY_THREADS") {
        Ok(v) => v.trim() != "0",
        Err(_) => std::thread::available_parallelism().map(|n| n.get() > 1).unwrap_or(false),
    })
}

/// The helper's queue; `None` when disabled or when the thread could not start.
fn helper() -> Option<&'static Sender<Arc<Job>>> {
    static H: OnceLock<Option<Sender<Arc<Job>>>> = OnceLock::new();
    H.get_or_init(|| {
        if !enabled() {
            return None;
        }
        let (tx, rx) = unbounded::<Arc<Job>>();
        let spawned = std::thread::Builder::new().name("nrt-sr-copy".into()).spawn(move || {
            for job in rx {
                if job.state.compare_exchange(QUEUED, TAKEN, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    // SAFETY: TAKEN gives this thread the job's ranges until it stores DONE; the
                    // submitter keeps them alive and untouched until then (see `Job`).
                    unsafe { memcpy(job.src, job.dst, job.len) };
                    job.state.store(DONE, Ordering::Release);
                }
            }
        });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                crate::log_warn!("shm: no copy helper thread ({e}); large copies use one thread");
                None
            }
        }
    })
    .as_ref()
}

/// Copies `len` bytes from `src` to `dst`, on two threads when it is long enough.
///
/// # Safety
/// As for `std::ptr::copy_nonoverlapping`: `src` readable and `dst` writable for `len` bytes,
/// not overlapping, both alive until this returns.
pub unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
    let queue = if len >= SPLIT_MIN { helper() } else { None };
    let Some(queue) = queue else {
        // SAFETY: the caller's contract.
        unsafe { memcpy(src, dst, len) };
        return;
    };
    // The helper's half starts on a page boundary of the destination.
    let first = ((len / 2) + 4095) & !4095;
    // SAFETY: first < len, so both offsets stay inside the caller's ranges.
    let (src2, dst2) = unsafe { (src.add(first), dst.add(first)) };
    let job = Arc::new(Job { src: src2, dst: dst2, len: len - first, state: AtomicU8::new(QUEUED) });
    let handed = queue.send(job.clone()).is_ok();
    // SAFETY: the first `first` bytes of the caller's ranges; the job covers only the rest.
    unsafe { memcpy(src, dst, first) };
    if !handed || job.state.compare_exchange(QUEUED, TAKEN, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        // The helper had not started (or is gone): the second half is ours too.
        // SAFETY: the job's ranges lie inside the caller's; nobody else holds them (TAKEN by us).
        unsafe { memcpy(job.src, job.dst, job.len) };
        return;
    }
    // The helper is copying: it finishes without waiting on anything.
    let mut spins = 0u32;
    while job.state.load(Ordering::Acquire) != DONE {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_copies_are_exact_at_every_boundary() {
        let _memory = crate::MEMORY_HEAVY_TESTS.lock();
        for len in [SPLIT_MIN - 1, SPLIT_MIN, SPLIT_MIN + 1, SPLIT_MIN + 4095, 3 * SPLIT_MIN + 12345] {
            let src: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
            let mut dst = vec![0u8; len + 64];
            for _ in 0..4 {
                dst.iter_mut().for_each(|b| *b = 0xee);
                // SAFETY: both vectors hold at least len bytes and do not overlap.
                unsafe { copy(src.as_ptr(), dst.as_mut_ptr(), len) };
                assert!(dst[..len] == src[..], "{len} bytes differ");
                assert!(dst[len..].iter().all(|&b| b == 0xee), "{len}: wrote past the end");
            }
        }
    }

    #[test]
    fn copies_are_exact_at_every_distance() {
        // Distances 0-40 and around the page, lengths around a piece and the pieces' limit.
        let src: Vec<u8> = (0..PIECES_MAX + 3 * ALIAS).map(|i| (i * 13 + i / 4093) as u8).collect();
        let mut dst = vec![0u8; src.len() + 2 * ALIAS];
        let s0 = src.as_ptr() as usize;
        for dist in (0..40).chain([ALIAS - 1, ALIAS + 16]) {
            for (soff, len) in [(0usize, ALIAS), (7, PIECE * 5 + 3), (100, PIECES_MAX - 1), (1, PIECES_MAX + 5), (9, 33)] {
                let d = (s0 + soff + dist).wrapping_sub(dst.as_ptr() as usize) % ALIAS;
                dst.fill(0xee);
                // SAFETY: d + len <= dst.len() and soff + len <= src.len(); separate vectors.
                unsafe { memcpy(src[soff..].as_ptr(), dst[d..].as_mut_ptr(), len) };
                assert!(dst[d..d + len] == src[soff..soff + len], "distance {dist}, {len} bytes differ");
                assert!(dst[..d].iter().chain(&dst[d + len..]).all(|&b| b == 0xee), "distance {dist}: wrote outside");
            }
        }
    }

    #[test]
    fn memmove_handles_overlap_both_ways_and_apart() {
        let len = 64 << 10;
        let orig: Vec<u8> = (0..3 * len).map(|i| (i * 29 + i / 511) as u8).collect();
        for (from, to) in [(0usize, 16usize), (16, 0), (0, len), (len + 5, 3), (100, 100)] {
            let mut buf = orig.clone();
            let mut want = orig.clone();
            want.copy_within(from..from + len, to);
            let p = buf.as_mut_ptr();
            // SAFETY: both ranges lie inside buf (from, to + len <= 3 * len).
            unsafe { memmove(p.add(from), p.add(to), len) };
            assert!(buf == want, "{len} bytes from {from} to {to}");
        }
    }

    #[test]
    fn slow_distances_and_bounce_placement() {
        assert!(!slow_distance(0x1000, 0x1000, 1 << 20));
        assert!(slow_distance(0x1010, 0x1000, 1 << 20));
        assert!(slow_distance(0x5010, 0x0000, ALIAS));
        assert!(!slow_distance(0x1010, 0x1000, ALIAS - 1), "below a page: no detour");
        assert!(!slow_distance(0x1020, 0x1000, 1 << 20), "32 bytes: full speed");
        assert!(!slow_distance(0x1000, 0x1010, 1 << 20), "destination before the source");
        let mut buf = vec![0u8; BOUNCE + ALIAS];
        for src in [0usize, 1, 16, 4095, 0x7f00_0000_0123] {
            let at = bounce_at(&mut buf, src) as usize;
            assert!(at >= buf.as_ptr() as usize && at + BOUNCE <= buf.as_ptr() as usize + buf.len());
            assert_eq!(at.wrapping_sub(src) % ALIAS, BOUNCE_AHEAD, "into the bounce: fast distance");
            for d in SLOW_DISTANCE {
                // Out of it to a destination at slow distance d from the source: negative, fast.
                assert!(!slow_distance(src + d, at, 1 << 20));
            }
        }
    }

    #[test]
    fn many_threads_share_the_helper() {
        let _memory = crate::MEMORY_HEAVY_TESTS.lock();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let len = SPLIT_MIN + t * 1000;
                    let src: Vec<u8> = (0..len).map(|i| (i ^ (t * 31)) as u8).collect();
                    let mut dst = vec![0u8; len];
                    for _ in 0..8 {
                        // SAFETY: both vectors hold len bytes and do not overlap.
                        unsafe { copy(src.as_ptr(), dst.as_mut_ptr(), len) };
                        assert!(dst == src);
                        dst.iter_mut().for_each(|b| *b = 0);
                    }
                })
            })
            .collect();
        for h in threads {
            h.join().unwrap();
        }
    }
}
