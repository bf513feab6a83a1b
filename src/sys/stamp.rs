//! The polling-stamp clock shared by the processes of one host (the TSC where the kernel keeps
//! time with it, else CLOCK_MONOTONIC).

use super::clock::mono_ns;

/// The clock of the polling stamps (the receiver writes one every few µs while it polls, the
/// sender reads it at every post): the CPU's time-stamp counter on x86_64 where the kernel itself
/// keeps time with it (clocksource `tsc`: constant rate, synchronised across CPUs), a third of the
/// cost of `clock_gettime`; else CLOCK_MONOTONIC. Both ends must agree: the channel names its
/// clock (header word 24) and a receiver with another one declines the channel.
pub(crate) struct StampClock {
    tsc: bool,
    /// Ticks per microsecond.
    per_us: u64,
}

pub(crate) const CLOCK_MONO: u64 = 1;
pub(crate) const CLOCK_TSC: u64 = 2;

pub(crate) fn stamp_clock() -> &'static StampClock {
    static C: std::sync::OnceLock<StampClock> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let src = std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource").unwrap_or_default();
            if src.trim() == "tsc" {
                // Calibrated against CLOCK_MONOTONIC over 200 µs (once per process).
                let (t0, c0) = (mono_ns(), tsc_now());
                let mut t1 = t0;
                while t1 - t0 < 200_000 {
                    std::hint::spin_loop();
                    t1 = mono_ns();
                }
                let c1 = tsc_now();
                let per_us = (c1.saturating_sub(c0) * 1000 / (t1 - t0)).max(1);
                return StampClock { tsc: true, per_us };
            }
        }
        StampClock { tsc: false, per_us: 1000 }
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn tsc_now() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// Now, on the stamp clock.
pub(crate) fn stamp_now(c: &StampClock) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if c.tsc {
        return tsc_now();
    }
    let _ = c;
    mono_ns()
}

impl StampClock {
    pub(crate) fn id(&self) -> u64 {
        if self.tsc { CLOCK_TSC } else { CLOCK_MONO }
    }
    /// `ns` nanoseconds in ticks.
    pub(crate) fn ticks(&self, ns: u64) -> u64 {
        ns * self.per_us / 1000
    }
}
