//! Clocks: CLOCK_MONOTONIC (and its coarse variant) and a thread's CPU time.

/// CLOCK_MONOTONIC in nanoseconds (vDSO, no system call).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a few ms of resolution, a third of the cost; for
/// request deadlines (milliseconds to minutes), read on every poll.
pub fn coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_MONOTONIC_COARSE exists since Linux 2.6.32.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// This thread's CPU time in nanoseconds (a system call: for rare events only), and a number
/// that tells this thread from the others (0 never).
pub fn thread_cpu_ns() -> (u64, u64) {
    thread_local!(static ME: u8 = const { 0 });
    let me = ME.with(|m| m as *const u8 as u64);
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write; CLOCK_THREAD_CPUTIME_ID always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (me, ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
