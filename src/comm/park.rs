//! Who moves a communicator's bytes: the lnc's progress thread (woken by epoll) or a caller
//! that polls `test_request` in a tight loop, which takes the sockets over ("parks" the
//! communicator) and hands them back when it stops, or at each large completion when it works
//! between its requests.

use super::io::CommIo;
use super::request::Request;
use super::{Comm, LARGE, READY, defer};
use crate::transport::{Transport, Wait};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// `NEURON_RT_ASYNC_SENDRECV_BUSY_POLL=0`: a polling caller never takes over its sockets (the
/// progress thread keeps waking on every edge; measured in docs/transports.md, "Busy polling").
fn park_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NEURON_RT_ASYNC_SENDRECV_BUSY_POLL").map(|v| v.trim() != "0").unwrap_or(true))
}

/// Two polls of a pending request of one communicator this close together make a spinning
/// caller (wide enough for one thread polling 64 communicators in turn).
const SPIN_GAP_NS: u64 = 1_000_000;
/// A parked communicator's sockets are watched again once no caller polled it, or any other
/// communicator of its lnc, for this long (see also `PARK_NEGLECT_NS`).
pub const PARK_IDLE_NS: u64 = 5_000_000;
/// A parked communicator that no caller polled for this long goes back to the progress thread
/// even while callers poll others of its lnc (they help it until then: `Lnc::help_parked`). A
/// caller cycling through many communicators comes back to each well within this; one spinning
/// on a single communicator has left the others, which then get the progress thread (another
/// CPU, where there is one) rather than its own loop.
pub const PARK_NEGLECT_NS: u64 = 50_000_000;
/// A caller that comes back to the communicator more than this long after one of its large
/// requests completed, having run as long on its CPU meanwhile, works between its requests (a
/// spinning one is back within microseconds; a preempted one ran nothing meanwhile).
const WORK_GAP_NS: u64 = 50_000;
/// The longest sleep between two polls of a long wait (`Transport::pause_while`).
const PAUSE_MAX_NS: u64 = 1_000_000;
impl Comm {
    /// Progress from a caller's thread: skipped when another thread is already at it.
    ///
    /// Busy polling versus epoll wake-ups: a caller that polls a pending request in a tight loop
    /// moves the bytes itself, so the progress thread stops watching this communicator's sockets
    /// ("parks" it) instead of waking for every segment and contending for the lock; it watches
    /// them again once the caller has not polled for `PARK_IDLE_NS`.
    pub fn try_progress(self: &Arc<Self>, tested: Option<&Request<Comm>>) {
        let Some(mut io) = self.io.try_lock() else {
            // Another thread (often the progress thread) is moving this communicator's bytes:
            // give it the CPU rather than spin against it (on a busy host it may have been
            // preempted while holding the lock).
            std::thread::yield_now();
            return;
        };
        {
            // Pending when this poll began: a poll that completes its request (which over TCP
            // can take a while, a 64 MiB message read in one go) still counts as polling.
            let wait = tested.filter(|r| r.is_pending()).map(|r| Wait { seq: r.seq, len: r.len });
            let polling = wait.is_some();
            if polling && self.take_look() {
                self.judge_work();
            }
            match io.poll(wait, self.parked.load(Ordering::Relaxed)) {
                Ok(false) => {}
                Ok(true) => defer(self.clone()),
                Err(e) => {
                    self.fail_locked(&mut io, e);
                    return;
                }
            }
            // Any caller's poll over TCP shows the lnc has a live caller (see `unpark_if_idle`).
            let help_at = (io.transport().polls_sockets() && park_enabled()).then(crate::sys::clock::mono_ns);
            if let Some(now) = help_at {
                self.hub.polled_at.store(now, Ordering::Relaxed);
            }
            if let Some(now) = help_at.filter(|_| polling) {
                // A caller that works between its requests (`judge_work`) gets its sockets back
                // to the progress thread at each large completion, so that the next message
                // moves meanwhile; a spinning caller keeps them (it would only pay the epoll_ctl
                // calls), and so does one that blocks between its requests (its sockets go back
                // after PARK_IDLE_NS, as before).
                let handed = tested.is_some_and(|r| !r.is_pending() && r.len > LARGE)
                    && self.works_between.load(Ordering::Relaxed)
                    && self.parked.load(Ordering::Relaxed)
                    && io.has_pending();
                if handed {
                    self.hand_back(&mut io);
                }
                let prev = self.polled_at.swap(now, Ordering::Relaxed);
                if !handed && now.saturating_sub(prev) < SPIN_GAP_NS && !self.parked.load(Ordering::Relaxed) {
                    // A transport the progress thread polls every tick (libfabric) parks too,
                    // with or without descriptors: the ticks then leave it to its caller.
                    let fds = io.spin_fds();
                    if !fds.is_empty() || io.transport().wants_ticks() {
                        self.park_ticks.store(io.transport().defers_control(), Ordering::Relaxed);
                        self.parked.store(true, Ordering::Release);
                        for w in fds {
                            let _ = self.hub.rearm(w.fd, self.id, false, w.input);
                        }
                        self.hub.park(self.clone());
                    }
                }
            }
            // The work this caller waits for runs on another thread of this host (a large
            // shared-memory send waits for the receiver's copy): it gives its CPU away between
            // polls instead of competing with that work.
            // So does a caller that has waited for one request for a while (`CommIo::long_wait`).
            let pending = tested.is_some_and(|r| r.is_pending());
            let long = io.long_wait(wait.filter(|_| pending));
            let yield_cpu = pending && (long || wait.is_some_and(|w| io.transport().yield_while(w)));
            // A software RDMA device is this host's CPUs: a long wait for a large message
            // sleeps between polls rather than take them (`Transport::pause_while`), a quarter
            // of the time waited so far (so a message is late by at most a quarter of its time),
            // between the transport's pause and `PAUSE_MAX_NS`.
            let pause = if long && pending { wait.and_then(|w| io.transport().pause_while(w)) } else { None }
                .map(|d| d.max(std::time::Duration::from_nanos(io.waited_ns() / 4)).min(std::time::Duration::from_nanos(PAUSE_MAX_NS)));
            drop(io);
            if let Some(d) = pause {
                std::thread::sleep(d);
            } else if yield_cpu {
                std::thread::yield_now();
            }
            if let Some(now) = help_at {
                self.hub.help_parked(self.id, now);
            }
        }
    }

    /// Parked, and no caller polled it for `PARK_IDLE_NS` (but for less than `PARK_NEGLECT_NS`,
    /// after which the progress thread takes it), at `now`.
    pub fn quiet(&self, now: u64) -> bool {
        let idle = now.saturating_sub(self.polled_at.load(Ordering::Relaxed));
        self.parked.load(Ordering::Relaxed) && idle > PARK_IDLE_NS && idle <= PARK_NEGLECT_NS
    }

    /// Moves a quiet parked communicator's bytes from another caller's thread (`Hub::help_parked`);
    /// skipped when some thread holds it.
    pub fn help(&self) {
        if self.state.load(Ordering::Acquire) != READY {
            return;
        }
        let Some(mut io) = self.io.try_lock() else { return };
        if !self.parked.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = io.progress() {
            self.fail_locked(&mut io, e);
        }
    }

    /// A caller's test reported a large request of this parked communicator done: the clock for
    /// `judge_work` starts (at the end of the library's call, so none of its own work counts).
    pub(super) fn stamp_completion(&self) {
        let (me, cpu) = crate::sys::clock::thread_cpu_ns();
        *self.completed_at.lock() = Some((crate::sys::clock::mono_ns(), me, cpu));
        self.completed_look.store(true, Ordering::Relaxed);
    }

    /// Whether a stamp waits to be judged, clearing it (a plain load on the polling path,
    /// where it is almost always false).
    pub(super) fn take_look(&self) -> bool {
        self.completed_look.load(Ordering::Relaxed) && self.completed_look.swap(false, Ordering::Relaxed)
    }

    /// At the caller's first post or poll after a large completion (before it moves any
    /// bytes): whether it works between its requests. It does when it comes back more than
    /// `WORK_GAP_NS` later, on the same thread, having run as long on its CPU meanwhile
    /// (computing, not preempted), and no poll of the lnc's other communicators filled the gap
    /// (a caller cycling through many is busy with them, not working).
    pub(super) fn judge_work(&self) {
        let Some((wall, who, cpu)) = self.completed_at.lock().take() else { return };
        let now = crate::sys::clock::mono_ns();
        let (me, cpu_now) = crate::sys::clock::thread_cpu_ns();
        let gap = |t: u64| now.saturating_sub(t) > WORK_GAP_NS;
        let worked = gap(wall) && gap(self.hub.polled_at.load(Ordering::Relaxed)) && who == me && cpu_now.saturating_sub(cpu) > WORK_GAP_NS;
        self.works_between.store(worked, Ordering::Relaxed);
    }

    /// When (ns after `now`) `unpark_if_idle` can first find this parked communicator idle,
    /// if no caller polls meanwhile: 0 when it can now, or the communicator is no longer ready.
    pub fn idle_in(&self, now: u64) -> u64 {
        if self.state.load(Ordering::Acquire) != READY {
            return 0;
        }
        let own = self.polled_at.load(Ordering::Relaxed);
        let lnc = self.hub.polled_at.load(Ordering::Relaxed);
        // The first moment both hold: own + PARK_IDLE_NS passed, and lnc + PARK_IDLE_NS or
        // own + PARK_NEGLECT_NS passed (strictly).
        let at = (own + PARK_IDLE_NS).max((lnc + PARK_IDLE_NS).min(own + PARK_NEGLECT_NS)) + 1;
        at.saturating_sub(now)
    }

    /// Progress thread: watches a parked communicator's sockets again when its caller went
    /// quiet (or it failed); true when it did.
    pub fn unpark_if_idle(&self, now: u64) -> bool {
        // Idle (`idle_in` is 0): no caller polled it for PARK_IDLE_NS, and either none polled
        // any of the lnc's communicators for as long (one that does moves this one's bytes too,
        // `Hub::help_parked`) or this one was left for PARK_NEGLECT_NS; or it is not ready.
        if self.idle_in(now) > 0 {
            return false;
        }
        // A caller holding the lock is polling right now (one poll can last long: a large
        // message read in one go); it stamps `polled_at` before letting go. Next tick then.
        let Some(mut io) = self.io.try_lock() else { return false };
        if self.idle_in(crate::sys::clock::mono_ns()) > 0 {
            return false;
        }
        self.hand_back(&mut io);
        true
    }

    /// The progress thread watches the sockets again (the caller holds `io`).
    fn hand_back(&self, io: &mut CommIo<Comm>) {
        for w in io.spin_fds() {
            let _ = self.hub.rearm(w.fd, self.id, true, w.input);
        }
        self.parked.store(false, Ordering::Release);
        // Re-arming reports data already waiting; progress once anyway.
        if let Err(e) = io.progress() {
            self.fail_locked(io, e);
        }
    }
}
