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

use crossbeam::channel::{Sender, unbounded};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

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
                    unsafe { std::ptr::copy_nonoverlapping(job.src, job.dst, job.len) };
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
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    };
    // The helper's half starts on a page boundary of the destination.
    let first = ((len / 2) + 4095) & !4095;
    // SAFETY: first < len, so both offsets stay inside the caller's ranges.
    let (src2, dst2) = unsafe { (src.add(first), dst.add(first)) };
    let job = Arc::new(Job { src: src2, dst: dst2, len: len - first, state: AtomicU8::new(QUEUED) });
    let handed = queue.send(job.clone()).is_ok();
    // SAFETY: the first `first` bytes of the caller's ranges; the job covers only the rest.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, first) };
    if !handed || job.state.compare_exchange(QUEUED, TAKEN, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        // The helper had not started (or is gone): the second half is ours too.
        // SAFETY: the job's ranges lie inside the caller's; nobody else holds them (TAKEN by us).
        unsafe { std::ptr::copy_nonoverlapping(job.src, job.dst, job.len) };
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
