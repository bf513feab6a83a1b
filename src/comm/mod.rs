//! Communicators: Connecting → Ready → Failed/Closed, FIFO posting, deadlines.

use crate::config::MAX_PENDING_PER_COMM;
use crate::engine::Lnc;
use crate::registry::Table;
pub mod request;
pub mod slots;

use crate::comm::request::{Kind, Outcome, REQUESTS, Request};
use crate::comm::slots::BlockRef;
use crate::status::{Error, NRT_STATUS, Result};
use crate::tensor::Region;
use crate::transport::tcp::{CommIo, Stream};
use parking_lot::Mutex;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

pub static COMMS: Table<Comm> = Table::new();

const CONNECTING: u8 = 0;
const READY: u8 = 1;
const FAILED: u8 = 2;
const CLOSED: u8 = 3;

pub struct Comm {
    pub id: u64,
    pub lnc: Arc<Lnc>,
    pub kind: Kind,
    pub peer: IpAddr,
    pub peer_lnc: i32,
    /// Position of this communicator among those between the same two cores (call order).
    pub pair_seq: u64,
    pub setup_deadline: Instant,
    state: AtomicU8,
    ever_ready: AtomicBool,
    error: Mutex<Option<Error>>,
    pub io: Mutex<CommIo>,
    /// This communicator's slots in the request table: posted requests until their test
    /// reports them (at most MAX_PENDING_PER_COMM). Claimed under `io`'s lock.
    pub reqs: BlockRef<Request>,
    /// When a caller last polled a pending request of this communicator (ns, CLOCK_MONOTONIC).
    polled_at: AtomicU64,
    /// A caller polls in a tight loop: the progress thread stopped watching the sockets.
    pub(crate) parked: AtomicBool,
    /// When a caller's test last reported a large request done: (wall ns, that thread's tag,
    /// its CPU ns); `None` once the caller's next post or poll has looked at it.
    completed_at: Mutex<Option<(u64, u64, u64)>>,
    /// `completed_at` is set: the next post or poll looks at it (one atomic load otherwise).
    completed_look: AtomicBool,
    /// The caller works between its requests (`judge_work`).
    works_between: AtomicBool,
    /// The progress thread watches the sockets for input (all but TCP send communicators).
    watch_input: AtomicBool,
}

/// `NEURON_RT_ASYNC_SENDRECV_BUSY_POLL=0`: a polling caller never takes over its sockets (the
/// progress thread keeps waking on every edge; measured in README, "TCP tuning").
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
/// Requests above this many bytes count as large for `judge_work`: those cut into chunks over
/// all streams (the transport's Ack rules draw the same line).
const LARGE: usize = crate::transport::tcp::SMALL;

impl Comm {
    pub fn new(id: u64, lnc: Arc<Lnc>, kind: Kind, peer: IpAddr, peer_lnc: i32, pair_seq: u64, reqs: BlockRef<Request>) -> Comm {
        let setup_deadline = Instant::now() + lnc.cfg.connect_timeout;
        Comm {
            id,
            lnc,
            kind,
            peer,
            peer_lnc,
            pair_seq,
            setup_deadline,
            state: AtomicU8::new(CONNECTING),
            ever_ready: AtomicBool::new(false),
            error: Mutex::new(None),
            io: Mutex::new(CommIo::new(kind)),
            reqs,
            polled_at: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            completed_at: Mutex::new(None),
            completed_look: AtomicBool::new(false),
            works_between: AtomicBool::new(false),
            watch_input: AtomicBool::new(true),
        }
    }

    /// "lnc 0 → 10.0.0.2 lnc 1 (send #2)": the cause prefix of every log line about this comm.
    pub fn describe(&self) -> String {
        let arrow = if self.kind == Kind::Send { "→" } else { "←" };
        format!("lnc {} {arrow} {} lnc {} ({:?} comm #{})", self.lnc.id, self.peer, self.peer_lnc, self.kind, self.pair_seq)
    }

    pub fn is_connecting(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTING
    }

    pub fn ever_ready(&self) -> bool {
        self.ever_ready.load(Ordering::Acquire)
    }

    /// Hands the connected streams to the communicator and makes it Ready.
    pub fn install(&self, streams: Vec<Stream>, rdma: Option<Arc<crate::transport::RdmaDevice>>, shm: bool) -> Result<()> {
        let mut io = self.io.lock();
        if self.state.load(Ordering::Acquire) != CONNECTING {
            return Err(Error::failure("communicator was closed or failed during set-up"));
        }
        // A TCP send communicator receives only Acks, read by test_request: no wake-ups for them.
        let input = !(self.kind == Kind::Send && !shm && rdma.is_none());
        self.watch_input.store(input, Ordering::Relaxed);
        for (i, s) in streams.iter().enumerate() {
            self.lnc.watch(s.fd(), self.id, input).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("epoll add stream {i}"), &e))?;
        }
        io.streams = streams;
        if shm {
            io.start_shm(self.lnc.cfg.transport == crate::config::Transport::Shm, self.lnc.cfg.shm_vm_readv)?;
        } else if let Some(dev) = rdma {
            let fd = io.start_verbs(dev)?;
            self.lnc.watch(fd, self.id, true).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "epoll add completion channel", &e))?;
        }
        self.ever_ready.store(true, Ordering::Release);
        self.state.store(READY, Ordering::Release);
        // Data may already wait in the sockets: edge-triggered epoll reported it at registration,
        // but progress once here as well so nothing depends on that.
        if let Err(e) = io.progress() {
            drop(io);
            self.fail(e);
        }
        Ok(())
    }

    /// Set-up failed (`TIMEOUT` or `FAILURE`): remembered, reported by test_comm.
    pub fn setup_failed(&self, e: Error) {
        let mut g = self.error.lock();
        if self.state.compare_exchange(CONNECTING, FAILED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            crate::log_error!("{}: connection set-up failed: {}", self.describe(), e);
            *g = Some(e);
        }
    }

    /// The communicator is broken: every pending request fails with `e`'s status, sockets close.
    pub fn fail(&self, e: Error) {
        let mut io = self.io.lock();
        self.fail_locked(&mut io, e);
    }

    fn fail_locked(&self, io: &mut CommIo, e: Error) {
        {
            let mut g = self.error.lock();
            let s = self.state.load(Ordering::Acquire);
            if s == READY || s == CONNECTING {
                if io.has_pending() {
                    crate::log_error!("{}: {}", self.describe(), e);
                } else {
                    // Nothing in flight: usually the peer closed its side first; not an error yet.
                    crate::log_info!("{}: {}", self.describe(), e);
                }
                self.state.store(FAILED, Ordering::Release);
                *g = Some(e.clone());
            }
        }
        io.fail_all(&e);
    }

    /// lnc close: like fail, without the log line; the communicator is dead for good.
    pub fn shut(&self) {
        let mut io = self.io.lock();
        // Acks a caller left for the progress thread still go out (best effort, no waiting).
        let _ = io.flush_control();
        self.state.store(CLOSED, Ordering::Release);
        io.fail_all(&Error::new(NRT_STATUS::NRT_CLOSED, "communicator closed"));
    }

    /// test_comm.
    pub fn test(&self) -> Result<bool> {
        match self.state.load(Ordering::Acquire) {
            READY => Ok(true),
            CONNECTING => {
                if Instant::now() > self.setup_deadline {
                    self.setup_failed(Error::timeout(format!("no connection within {} ms", self.lnc.cfg.connect_timeout.as_millis())));
                    return Err(self.error());
                }
                Ok(false)
            }
            FAILED if !self.ever_ready() => Err(self.error()),
            FAILED => Ok(true), // connected once; its failure shows on requests and posts
            _ => Err(Error::handle("communicator is closed")),
        }
    }

    fn error(&self) -> Error {
        self.error.lock().clone().unwrap_or_else(|| Error::failure("communicator failed"))
    }

    /// Posts a send or receive of `region`; returns the request id.
    pub fn post(self: &Arc<Self>, kind: Kind, region: Region) -> Result<u64> {
        if kind != self.kind {
            let what = if kind == Kind::Send { "send on a receive" } else { "receive on a send" };
            return Err(Error::invalid(format!("{}: {what} communicator", self.describe())));
        }
        match self.state.load(Ordering::Acquire) {
            READY => {}
            CONNECTING => {
                return Err(Error::invalid(format!("{}: not connected yet (poll test_comm until done)", self.describe())));
            }
            _ => return Err(Error::failure(format!("{}: communicator failed earlier: {}", self.describe(), self.error()))),
        }
        // The caller's first call after a large completion, post or poll, tells whether it
        // worked in between (a post's own work, copying or `sendfile`, must not count).
        if self.take_look() {
            self.judge_work();
        }
        let deadline = self.lnc.cfg.request_timeout.map(|t| crate::sys::clock::coarse_ns() + t.as_nanos() as u64);
        let mut io = self.io.lock();
        if self.state.load(Ordering::Acquire) != READY {
            return Err(Error::failure(format!("{}: communicator failed: {}", self.describe(), self.error())));
        }
        if region.len() as u64 > io.max_message() {
            // Refused before it takes a sequence number, so FIFO pairing is untouched.
            return Err(Error::invalid(format!(
                "{}: {} bytes exceed this transport's message limit of {} bytes",
                self.describe(),
                region.len(),
                io.max_message()
            )));
        }
        // A slot of this communicator's block (claims are serialized by the lock held here).
        // (A slot's previous request is reused when nothing holds it any more: no allocation.)
        let claimed = self.reqs.claim(|id, old| match old {
            Some(r) => {
                r.reuse(id, region, deadline);
                None
            }
            None => Some(Arc::new(Request::new(id, kind, self.clone(), region, deadline))),
        });
        let Some((id, req)) = claimed else {
            return Err(Error::resource(format!("{}: {MAX_PENDING_PER_COMM} requests already pending", self.describe())));
        };
        // A caller that works between its requests, with the sockets at the progress thread:
        // the chunks that waited for this receive are the progress thread's to read (it is
        // kicked: they may lie in a stream's inbox, which raises no readiness), not this post's.
        let pump = !(kind == Kind::Recv && self.works_between.load(Ordering::Relaxed) && !self.parked.load(Ordering::Relaxed));
        let left = match io.post(req).and_then(|_| io.after_post(kind, pump)) {
            Ok(left) => left,
            Err(e) => {
                self.fail_locked(&mut io, e);
                false
            }
        };
        drop(io);
        if left {
            self.lnc.kick(self.clone());
        }
        // Deferred Acks go out after this send's bytes (a receive post leaves them: its caller
        // is about to answer with a send, which should go first).
        if kind == Kind::Send {
            crate::engine::flush_deferred();
        }
        Ok(id)
    }

    /// Progress from a caller's thread: skipped when another thread is already at it.
    ///
    /// Busy polling versus epoll wake-ups: a caller that polls a pending request in a tight loop
    /// moves the bytes itself, so the progress thread stops watching this communicator's sockets
    /// ("parks" it) instead of waking for every segment and contending for the lock; it watches
    /// them again once the caller has not polled for `PARK_IDLE_NS`.
    pub fn try_progress(self: &Arc<Self>, tested: Option<&Request>) {
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
            let polling = tested.is_some_and(|r| r.is_pending());
            if polling && self.take_look() {
                self.judge_work();
            }
            match io.poll_fast(tested, self.parked.load(Ordering::Relaxed)) {
                Ok(false) => {}
                Ok(true) => crate::engine::defer_acks(self.clone()),
                Err(e) => {
                    self.fail_locked(&mut io, e);
                    return;
                }
            }
            // Any caller's poll over TCP shows the lnc has a live caller (see `unpark_if_idle`).
            let help_at = (!io.is_shm() && park_enabled()).then(crate::sys::clock::mono_ns);
            if let Some(now) = help_at {
                self.lnc.polled_at.store(now, Ordering::Relaxed);
            }
            if let Some(now) = help_at.filter(|_| polling) {
                // A caller that works between its requests (`judge_work`) gets its sockets back
                // to the progress thread at each large completion, so that the next message
                // moves meanwhile; a spinning caller keeps them (it would only pay the epoll_ctl
                // calls), and so does one that blocks between its requests (its sockets go back
                // after PARK_IDLE_NS, as before).
                let handed = tested.is_some_and(|r| !r.is_pending() && r.region.len() > LARGE)
                    && self.works_between.load(Ordering::Relaxed)
                    && self.parked.load(Ordering::Relaxed)
                    && io.has_pending();
                if handed {
                    self.hand_back(&mut io);
                }
                let prev = self.polled_at.swap(now, Ordering::Relaxed);
                if !handed && now.saturating_sub(prev) < SPIN_GAP_NS && !self.parked.load(Ordering::Relaxed) {
                    let fds = io.spin_fds();
                    if !fds.is_empty() {
                        self.parked.store(true, Ordering::Release);
                        for fd in fds {
                            let _ = self.lnc.rearm(fd, self.id, false, true);
                        }
                        self.lnc.park(self.clone());
                    }
                }
            }
            // A large send over shared memory waits for the receiver's copy (which may use a
            // second thread, transport/copy.rs): a caller spinning on it gives its CPU away
            // between polls instead of competing with that copy.
            let yield_cpu = io.is_shm()
                && tested.is_some_and(|r| r.kind == Kind::Send && r.region.len() >= crate::sys::copy::SPLIT_MIN && r.is_pending());
            drop(io);
            if yield_cpu {
                std::thread::yield_now();
            }
            if let Some(now) = help_at {
                self.lnc.help_parked(self.id, now);
            }
        }
    }

    /// Parked, and no caller polled it for `PARK_IDLE_NS` (but for less than `PARK_NEGLECT_NS`,
    /// after which the progress thread takes it), at `now`.
    pub fn quiet(&self, now: u64) -> bool {
        let idle = now.saturating_sub(self.polled_at.load(Ordering::Relaxed));
        self.parked.load(Ordering::Relaxed) && idle > PARK_IDLE_NS && idle <= PARK_NEGLECT_NS
    }

    /// Moves a quiet parked communicator's bytes from another caller's thread (`Lnc::help_parked`);
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

    /// Sends the Acks a caller left queued (`try_progress`); false when another thread holds
    /// the communicator (try again later).
    pub fn flush_deferred(&self) -> bool {
        let Some(mut io) = self.io.try_lock() else { return false };
        if let Err(e) = io.flush_control() {
            self.fail_locked(&mut io, e);
        }
        true
    }

    /// A caller's test reported a large request of this parked communicator done: the clock for
    /// `judge_work` starts (at the end of the library's call, so none of its own work counts).
    fn stamp_completion(&self) {
        let (me, cpu) = crate::sys::clock::thread_cpu_ns();
        *self.completed_at.lock() = Some((crate::sys::clock::mono_ns(), me, cpu));
        self.completed_look.store(true, Ordering::Relaxed);
    }

    /// Whether a stamp waits to be judged, clearing it (a plain load on the polling path,
    /// where it is almost always false).
    fn take_look(&self) -> bool {
        self.completed_look.load(Ordering::Relaxed) && self.completed_look.swap(false, Ordering::Relaxed)
    }

    /// At the caller's first post or poll after a large completion (before it moves any
    /// bytes): whether it works between its requests. It does when it comes back more than
    /// `WORK_GAP_NS` later, on the same thread, having run as long on its CPU meanwhile
    /// (computing, not preempted), and no poll of the lnc's other communicators filled the gap
    /// (a caller cycling through many is busy with them, not working).
    fn judge_work(&self) {
        let Some((wall, who, cpu)) = self.completed_at.lock().take() else { return };
        let now = crate::sys::clock::mono_ns();
        let (me, cpu_now) = crate::sys::clock::thread_cpu_ns();
        let gap = |t: u64| now.saturating_sub(t) > WORK_GAP_NS;
        let worked = gap(wall) && gap(self.lnc.polled_at.load(Ordering::Relaxed)) && who == me && cpu_now.saturating_sub(cpu) > WORK_GAP_NS;
        self.works_between.store(worked, Ordering::Relaxed);
    }

    /// Progress thread: watches a parked communicator's sockets again when its caller went
    /// quiet (or it failed); true when it did.
    pub fn unpark_if_idle(&self, now: u64) -> bool {
        // Idle: no caller polled it for PARK_IDLE_NS, and either none polled any of the lnc's
        // communicators for as long (one that does moves this one's bytes too,
        // `Lnc::help_parked`) or this one was left for PARK_NEGLECT_NS.
        let idle = |now: u64| {
            let own = now.saturating_sub(self.polled_at.load(Ordering::Relaxed));
            let lnc = now.saturating_sub(self.lnc.polled_at.load(Ordering::Relaxed));
            own > PARK_IDLE_NS && (lnc > PARK_IDLE_NS || own > PARK_NEGLECT_NS)
        };
        let ready = self.state.load(Ordering::Acquire) == READY;
        if !idle(now) && ready {
            return false;
        }
        // A caller holding the lock is polling right now (one poll can last long: a large
        // message read in one go); it stamps `polled_at` before letting go. Next tick then.
        let Some(mut io) = self.io.try_lock() else { return false };
        if ready && !idle(crate::sys::clock::mono_ns()) {
            return false;
        }
        self.hand_back(&mut io);
        true
    }

    /// The progress thread watches the sockets again (the caller holds `io`).
    fn hand_back(&self, io: &mut CommIo) {
        for fd in io.spin_fds() {
            let _ = self.lnc.rearm(fd, self.id, true, self.watch_input.load(Ordering::Relaxed));
        }
        self.parked.store(false, Ordering::Release);
        // Re-arming reports data already waiting; progress once anyway.
        if let Err(e) = io.progress() {
            self.fail_locked(io, e);
        }
    }

    /// Progress from the lnc's thread: waits for the lock so no readiness edge is lost.
    pub fn progress(&self) {
        let mut io = self.io.lock();
        if let Err(e) = io.progress() {
            self.fail_locked(&mut io, e);
        }
    }
}

/// test_request: `Ok(None)` while pending; the request is freed once it reports an end.
pub fn test_request(id: u64) -> Result<Option<u64>> {
    // Called in tight loops: the request is used in place while this call pins its slot (no
    // lock, no reference counting per poll; nothing under it touches the request table), and
    // removed under the same pin once it reports its end: only that caller reports it (a
    // concurrent second test finds a stale handle). The removed request stays in its slot for
    // the communicator's next post.
    let ((out, kind), _gone) = REQUESTS
        .with_take(id, |req| {
            let was_pending = req.is_pending();
            let was_parked = was_pending && req.comm.parked.load(Ordering::Relaxed);
            if was_pending {
                req.comm.try_progress(Some(req.as_ref()));
            }
            let mut out = req.outcome();
            if out == Outcome::Pending
                && let Some(d) = req.deadline
                && crate::sys::clock::coarse_ns() > d
            {
                let e = Error::timeout(format!("{}: {:?} request not complete within its deadline", req.comm.describe(), req.kind));
                req.fail(e.clone());
                req.comm.fail(Error::timeout("a request timed out; FIFO pairing on this communicator is lost"));
                out = req.outcome();
            }
            let end = out != Outcome::Pending;
            // Only a caller that had taken the sockets over can hand them back (TCP; shared
            // memory and verbs never park): no clock reads for the others.
            if end && was_pending && was_parked && req.region.len() > LARGE {
                req.comm.stamp_completion();
            }
            ((out, req.kind), end)
        })
        .ok_or_else(|| Error::handle(format!("request handle {id:#x} is not a live request")))?;
    let res = match out {
        Outcome::Pending => {
            // The caller waits: Acks it left queued go out now (`engine::flush_deferred`).
            crate::engine::flush_deferred();
            return Ok(None);
        }
        Outcome::Done(n) => Ok(Some(n)),
        Outcome::Failed(e) => Err(e),
    };
    if kind == Kind::Send {
        crate::engine::flush_deferred();
    }
    res
}
