//! Communicators: Connecting → Ready → Failed/Closed, FIFO posting, deadlines; the request
//! table and `test_request`; what the communicators of one lnc share with its progress thread
//! (`Hub`).
//!
//! A communicator owns its requests and one transport object (chosen by the lnc at set-up). It
//! hands each posted request to the transport as a message numbered in posting order and
//! completes the request from the transport's completions (`io.rs`), so the k-th send pairs
//! with the k-th receive whatever order the transport reports in.

pub mod io;
mod park;
/// How long a parked communicator's caller must stay away before it goes back (runtime tests).
#[cfg(test)]
pub use park::PARK_IDLE_NS;
pub mod request;
pub mod slots;

use crate::config::{Config, MAX_PENDING_PER_COMM};
use crate::registry::Table;
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::epoll::Poller;
use crate::tensor::Region;
use crate::transport::Transport;
use crate::transport::any::AnyTransport;
use io::CommIo;
use parking_lot::Mutex;
use request::{Kind, Outcome, Request};
use slots::{BlockRef, Slots};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub static COMMS: Table<Comm> = Table::new();

/// Every posted request, found by its handle; each communicator owns a block of slots.
pub static REQUESTS: Slots<Request<Comm>> = Slots::new(Request::retire);

const CONNECTING: u8 = 0;
pub(super) const READY: u8 = 1;
const FAILED: u8 = 2;
const CLOSED: u8 = 3;

pub struct Comm {
    pub id: u64,
    /// The lnc's shared state (its epoll, configuration, parked and kicked lists).
    pub hub: Arc<Hub>,
    pub kind: Kind,
    pub peer: IpAddr,
    pub peer_lnc: i32,
    /// Position of this communicator among those between the same two cores (call order).
    pub pair_seq: u64,
    pub setup_deadline: Instant,
    pub(super) state: AtomicU8,
    ever_ready: AtomicBool,
    pub(super) error: Mutex<Option<Error>>,
    pub io: Mutex<CommIo<Comm>>,
    /// This communicator's slots in the request table: posted requests until their test
    /// reports them (at most MAX_PENDING_PER_COMM). Claimed under `io`'s lock.
    pub reqs: BlockRef<Request<Comm>>,
    /// When a caller last polled a pending request of this communicator (ns, CLOCK_MONOTONIC).
    pub(super) polled_at: AtomicU64,
    /// A caller polls in a tight loop: the progress thread stopped watching the sockets.
    pub(crate) parked: AtomicBool,
    /// Parked with a transport whose polls may defer control frames (`Transport::defers_control`):
    /// the progress thread keeps its millisecond tick.
    pub(super) park_ticks: AtomicBool,
    /// When a caller's test last reported a large request done: (wall ns, that thread's tag,
    /// its CPU ns); `None` once the caller's next post or poll has looked at it.
    pub(super) completed_at: Mutex<Option<(u64, u64, u64)>>,
    /// `completed_at` is set: the next post or poll looks at it (one atomic load otherwise).
    pub(super) completed_look: AtomicBool,
    /// The caller works between its requests (`judge_work`).
    pub(super) works_between: AtomicBool,
}

/// Requests above this many bytes count as large for `judge_work`: those cut into chunks over
/// all streams (the transport's Ack rules draw the same line).
pub(super) const LARGE: usize = crate::transport::tcp::SMALL;

impl Comm {
    pub fn new(id: u64, hub: Arc<Hub>, kind: Kind, peer: IpAddr, peer_lnc: i32, pair_seq: u64, reqs: BlockRef<Request<Comm>>) -> Comm {
        let setup_deadline = Instant::now() + hub.cfg.connect_timeout;
        let who = describe(hub.id, kind, peer, peer_lnc, pair_seq);
        Comm {
            id,
            hub,
            kind,
            peer,
            peer_lnc,
            pair_seq,
            setup_deadline,
            state: AtomicU8::new(CONNECTING),
            ever_ready: AtomicBool::new(false),
            error: Mutex::new(None),
            io: Mutex::new(CommIo::new(who)),
            reqs,
            polled_at: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            park_ticks: AtomicBool::new(false),
            completed_at: Mutex::new(None),
            completed_look: AtomicBool::new(false),
            works_between: AtomicBool::new(false),
        }
    }

    /// "lnc 0 → 10.0.0.2 lnc 1 (send #2)": the cause prefix of every log line about this comm.
    pub fn describe(&self) -> String {
        describe(self.hub.id, self.kind, self.peer, self.peer_lnc, self.pair_seq)
    }

    pub fn is_connecting(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTING
    }

    pub fn ever_ready(&self) -> bool {
        self.ever_ready.load(Ordering::Acquire)
    }

    /// Hands the connected transport to the communicator and makes it Ready.
    pub fn install(self: &Arc<Self>, t: AnyTransport) -> Result<()> {
        let mut io = self.io.lock();
        if self.state.load(Ordering::Acquire) != CONNECTING {
            return Err(Error::failure("communicator was closed or failed during set-up"));
        }
        let mut fds = Vec::new();
        t.wait_fds(&mut fds);
        for w in fds {
            self.hub
                .watch(w.fd, self.id, w.input)
                .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("epoll add of {}", t.name()), &e))?;
        }
        let ticks = t.wants_ticks();
        io.install(t);
        self.ever_ready.store(true, Ordering::Release);
        self.state.store(READY, Ordering::Release);
        // Data may already wait in the sockets: edge-triggered epoll reported it at registration,
        // but progress once here as well so nothing depends on that.
        if let Err(e) = io.progress() {
            drop(io);
            self.fail(e);
            return Ok(());
        }
        drop(io);
        if ticks {
            self.hub.tick(self.clone());
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

    pub(super) fn fail_locked(&self, io: &mut CommIo<Comm>, e: Error) {
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
                    self.setup_failed(Error::timeout(format!("no connection within {} ms", self.hub.cfg.connect_timeout.as_millis())));
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
        let deadline = self.hub.cfg.request_timeout.map(|t| crate::sys::clock::coarse_ns() + t.as_nanos() as u64);
        let mut io = self.io.lock();
        if self.state.load(Ordering::Acquire) != READY {
            return Err(Error::failure(format!("{}: communicator failed: {}", self.describe(), self.error())));
        }
        let max = io.transport().max_message();
        if region.len() as u64 > max {
            // Refused before it takes a sequence number, so FIFO pairing is untouched.
            return Err(Error::invalid(format!(
                "{}: {} bytes exceed this transport's message limit of {} bytes",
                self.describe(),
                region.len(),
                max
            )));
        }
        // A slot of this communicator's block (claims are serialized by the lock held here).
        // (A slot's previous request is reused when nothing holds it any more: no allocation.)
        let seq = io.next_seq;
        let len = region.len();
        let claimed = self.reqs.claim(|id, old| match old {
            Some(r) => {
                r.reuse(id, len, seq, deadline);
                None
            }
            None => Some(Arc::new(Request::new(id, kind, self.clone(), len, seq, deadline))),
        });
        let Some((id, req)) = claimed else {
            return Err(Error::resource(format!("{}: {MAX_PENDING_PER_COMM} requests already pending", self.describe())));
        };
        io.next_seq += 1;
        // A caller that works between its requests, with the sockets at the progress thread:
        // the chunks that waited for this receive are the progress thread's to read (it is
        // kicked: they may lie in a stream's inbox, which raises no readiness), not this post's.
        let pump = !(kind == Kind::Recv && self.works_between.load(Ordering::Relaxed) && !self.parked.load(Ordering::Relaxed));
        let left = match io.post(req, region).and_then(|_| io.after_post(pump)) {
            Ok(left) => left,
            Err(e) => {
                self.fail_locked(&mut io, e);
                false
            }
        };
        drop(io);
        if left {
            self.hub.kick(self.clone());
        }
        // Deferred Acks go out after this send's bytes (a receive post leaves them: its caller
        // is about to answer with a send, which should go first).
        if kind == Kind::Send {
            flush_deferred();
        }
        Ok(id)
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
            if end && was_pending && was_parked && req.len > LARGE {
                req.comm.stamp_completion();
            }
            ((out, req.kind), end)
        })
        .ok_or_else(|| Error::handle(format!("request handle {id:#x} is not a live request")))?;
    let res = match out {
        Outcome::Pending => {
            // The caller waits: Acks it left queued go out now (`flush_deferred`).
            flush_deferred();
            return Ok(None);
        }
        Outcome::Done(n) => Ok(Some(n)),
        Outcome::Failed(e) => Err(e),
    };
    if kind == Kind::Send {
        flush_deferred();
    }
    res
}

/// "lnc 0 → 10.0.0.2 lnc 1 (Send comm #2)": the cause prefix of every log line about a comm.
fn describe(lnc: i32, kind: Kind, peer: IpAddr, peer_lnc: i32, pair_seq: u64) -> String {
    let arrow = if kind == Kind::Send { "→" } else { "←" };
    format!("lnc {lnc} {arrow} {peer} lnc {peer_lnc} ({kind:?} comm #{pair_seq})")
}

/// The progress thread's shortest sleep: its tick while a communicator is ticking, or parked
/// with control frames a caller's poll may defer (see `Hub::sleep`).
pub const PARK_TICK: Duration = Duration::from_millis(1);
/// The progress thread's longest sleep (nothing to look at before a readiness event).
pub const TICK: Duration = Duration::from_millis(100);

/// What the communicators of one lnc share with its progress thread: the lnc's epoll (which
/// wakes that thread), its configuration, and the communicators a caller's poll hands to it.
pub struct Hub {
    /// The lnc's number.
    pub id: i32,
    pub cfg: Config,
    pub poller: Poller,
    /// Communicators whose spinning caller moves their bytes (sockets not watched meanwhile).
    parked: Mutex<Vec<Arc<Comm>>>,
    /// Communicators whose bytes the progress thread should move at its next turn, with no
    /// readiness event to tell it (`kick`).
    kicked: Mutex<Vec<Arc<Comm>>>,
    /// Communicators the progress thread moves at every tick (`tick`).
    ticking: Mutex<Vec<Arc<Comm>>>,
    /// When a caller last tested a request of any TCP communicator of this lnc, or helped a
    /// parked one (`sys::clock::mono_ns`): parked communicators go back to the progress thread
    /// once every caller of the lnc has gone quiet (see `Comm::unpark_if_idle`).
    pub(super) polled_at: AtomicU64,
    /// When a polling caller last moved the bytes of the lnc's quiet parked communicators
    /// (`help_parked`).
    helped_at: AtomicU64,
}

impl Hub {
    pub fn new(id: i32, cfg: Config, poller: Poller) -> Hub {
        Hub {
            id,
            cfg,
            poller,
            parked: Mutex::new(Vec::new()),
            kicked: Mutex::new(Vec::new()),
            ticking: Mutex::new(Vec::new()),
            polled_at: AtomicU64::new(0),
            helped_at: AtomicU64::new(0),
        }
    }

    /// Registers a communicator socket with the progress thread.
    pub fn watch(&self, fd: RawFd, comm_id: u64, input: bool) -> std::io::Result<()> {
        self.poller.watch(fd, comm_id, input)
    }

    /// Pauses or resumes the progress thread's watch of a communicator socket.
    pub fn rearm(&self, fd: RawFd, comm_id: u64, armed: bool, input: bool) -> std::io::Result<()> {
        self.poller.rearm(fd, comm_id, armed, input)
    }

    /// A spinning caller took over `comm`'s sockets: the progress thread watches them again
    /// when the caller stops (it wakes to check when the caller may have, `sleep`).
    pub fn park(&self, comm: Arc<Comm>) {
        // A caller that works between requests parks and hands back once per message.
        self.list_once(&self.parked, comm);
    }

    /// The progress thread moves `comm`'s bytes at its next turn (woken now).
    pub fn kick(&self, comm: Arc<Comm>) {
        self.list_once(&self.kicked, comm);
    }

    /// The progress thread moves `comm`'s bytes at every tick (`PARK_TICK`) while it is ready:
    /// its transport has completions no descriptor announces.
    pub fn tick(&self, comm: Arc<Comm>) {
        self.list_once(&self.ticking, comm);
    }

    /// Adds `comm` to one of the progress thread's lists unless it is there, and wakes it.
    fn list_once(&self, list: &Mutex<Vec<Arc<Comm>>>, comm: Arc<Comm>) {
        let mut l = list.lock();
        if !l.iter().any(|c| c.id == comm.id) {
            l.push(comm);
        }
        drop(l);
        self.poller.wake();
    }

    /// How long the progress thread may wait for readiness events before its next turn
    /// (`tend`), between `PARK_TICK` and `TICK`:
    /// - `PARK_TICK` while a communicator is ticking (its transport has completions no
    ///   descriptor announces), or parked with control frames its caller's poll may defer, or
    ///   while deferred Acks wait;
    /// - else, while communicators are parked, until the earliest moment one of them can be
    ///   found idle (`Comm::idle_in`): a caller that keeps polling has the thread wake every
    ///   `PARK_IDLE_NS` rather than every millisecond, each wake a timer interrupt and a context
    ///   switch taken from the CPUs (on a software RDMA device, the CPUs that move the bytes);
    /// - else `TICK`.
    pub fn sleep(&self) -> Duration {
        if !self.ticking.lock().is_empty() || HAS_DEFERRED.load(Ordering::Acquire) {
            return PARK_TICK;
        }
        let parked = self.parked.lock();
        if parked.is_empty() {
            return TICK;
        }
        if parked.iter().any(|c| c.park_ticks.load(Ordering::Relaxed)) {
            return PARK_TICK;
        }
        let now = crate::sys::clock::mono_ns();
        let due = parked.iter().map(|c| c.idle_in(now)).min().unwrap_or(0);
        // epoll counts whole milliseconds: rounded up, so the turn finds the caller idle.
        Duration::from_millis(due.div_ceil(1_000_000)).clamp(PARK_TICK, TICK)
    }

    /// The progress thread's turn: moves the bytes of the kicked communicators, and watches the
    /// sockets of parked ones again whose caller went quiet.
    pub fn tend(&self) {
        for c in std::mem::take(&mut *self.kicked.lock()) {
            c.progress();
        }
        let ticking: Vec<Arc<Comm>> = {
            let mut t = self.ticking.lock();
            t.retain(|c| c.state.load(Ordering::Acquire) == READY);
            t.clone()
        };
        for c in ticking {
            // A parked one is its spinning caller's (`unpark_if_idle` below hands it back).
            if !c.parked.load(Ordering::Relaxed) {
                c.progress();
            }
        }
        let parked = std::mem::take(&mut *self.parked.lock());
        if parked.is_empty() {
            return;
        }
        let now = crate::sys::clock::mono_ns();
        let keep: Vec<Arc<Comm>> = parked.into_iter().filter(|c| !c.unpark_if_idle(now)).collect();
        self.parked.lock().extend(keep);
    }

    /// The lnc closes: the lists let their communicators go.
    pub fn clear(&self) {
        self.parked.lock().clear();
        self.kicked.lock().clear();
        self.ticking.lock().clear();
    }

    /// A caller polling `from` (one of this lnc's communicators, at `now`) also moves the bytes of
    /// the other parked communicators no caller polled for `PARK_IDLE_NS` (until
    /// `PARK_NEGLECT_NS`), at most once per `PARK_TICK`: a caller cycling through many
    /// communicators keeps them all going between its visits, and the progress thread, which
    /// would contend with it for the CPUs and the locks, stays out of it.
    pub fn help_parked(&self, from: u64, now: u64) {
        let prev = self.helped_at.load(Ordering::Relaxed);
        if now.saturating_sub(prev) < PARK_TICK.as_nanos() as u64
            || self.helped_at.compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let quiet: Vec<Arc<Comm>> = match self.parked.try_lock() {
            Some(p) => p.iter().filter(|c| c.id != from && c.quiet(now)).cloned().collect(),
            None => return,
        };
        for c in quiet {
            // Helping is a caller's work too (it can take a while, many communicators' bytes).
            self.polled_at.store(crate::sys::clock::mono_ns(), Ordering::Relaxed);
            c.help();
        }
    }
}

/// Communicators whose Acks a spinning caller left queued when its receive completed (it is
/// usually about to answer, and its answer should not wait behind the Ack's `sendmsg`), process
/// wide: they go out after that caller's next send, as soon as any caller polls a request that
/// is still pending (it is waiting then, not answering: often for the very Ack of its peer that
/// is queued behind its own, as in an exchange where each side waits for its receive and then its
/// send), or at the next tick of any lnc's progress thread (`PARK_TICK`: such a caller's
/// communicator is parked).
static DEFERRED: Mutex<Vec<Arc<Comm>>> = Mutex::new(Vec::new());
static HAS_DEFERRED: AtomicBool = AtomicBool::new(false);

fn defer(comm: Arc<Comm>) {
    let mut d = DEFERRED.lock();
    if !d.iter().any(|c| c.id == comm.id) {
        d.push(comm);
    }
    HAS_DEFERRED.store(true, Ordering::Release);
}

/// Sends deferred Acks (one atomic load when there are none). A communicator another thread
/// holds stays listed for the next call.
pub fn flush_deferred() {
    if !HAS_DEFERRED.load(Ordering::Acquire) {
        return;
    }
    let mut d = DEFERRED.lock();
    d.retain(|c| !c.flush_deferred());
    HAS_DEFERRED.store(!d.is_empty(), Ordering::Release);
}

/// The lnc of `hub` closes: its communicators' deferred Acks go out now (best effort).
pub fn forget_deferred(hub: &Hub) {
    DEFERRED.lock().retain(|c| {
        if std::ptr::eq(&*c.hub, hub) {
            c.flush_deferred();
            return false;
        }
        true
    });
}
