//! Transports behind one interface: what a communicator hands down is a message (its sequence
//! number and its memory); what comes back up is a completion (sequence, bytes, outcome), as a
//! NIC and its driver meet at a completion queue. A transport never sees a request or a
//! communicator: the communicator (`comm`) pairs completions with its requests.
//!
//! - `tcp/`: the streams of a connection; the data path over them, and the control link that
//!   the other transports keep for their control frames and to notice a dead peer;
//! - `shm/`: same-host shared memory (a ring channel per communicator, one copy);
//! - `verbs/`: RDMA verbs (RC queue pair; eager sends and RDMA-write rendezvous);
//! - `ofi/`: libfabric RDM endpoints over one or more rails (eager sends, and striped RMA writes
//!   with remote CQ data or reads), for EFA and every other libfabric provider.
//!
//! Adding a transport is a folder that implements [`Transport`], one variant of
//! [`any::AnyTransport`] (what a communicator holds), and one arm where the lnc chooses a
//! communicator's transport (`engine/choice.rs`).

pub mod any;
pub mod ofi;
pub mod shm;
#[cfg(any(feature = "verbs", feature = "ofi"))]
pub mod staging;
pub mod tcp;
pub mod verbs;

use crate::status::{Error, Result};
use crate::tensor::Region;
use crate::wire::ack;
use std::os::fd::RawFd;

/// A communicator's direction: it sends, or it receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Send,
    Recv,
}

/// What to move: the communicator's number for the message (it counts its posts from 0, sends
/// and receives alike, so the k-th send pairs with the k-th receive) and the memory, which the
/// transport keeps alive (a `Region` holds its tensor memory) until it reports the message.
pub struct Msg {
    pub seq: u64,
    pub region: Region,
}

/// A message the transport is done with, reported once. A failed message leaves the
/// communicator working (a receive shorter than its send fails both, and nothing else); a
/// communicator that cannot go on is an `Err` from the transport's call instead.
#[derive(Debug)]
pub enum Done {
    /// A send the peer received whole, or a receive that holds `bytes`.
    Ok {
        seq: u64,
        bytes: u64,
    },
    Failed {
        seq: u64,
        err: Error,
    },
}

impl Done {
    pub fn seq(&self) -> u64 {
        match self {
            Done::Ok { seq, .. } | Done::Failed { seq, .. } => *seq,
        }
    }
}

/// Where a transport reports the messages it is done with. A report takes effect at once (the
/// communicator completes the request then), so a transport reports a message before it tells
/// the peer anything that follows from it (a receive completes before its acknowledgement is
/// published, so a sender that sees its send done finds the receive done too). It also tells
/// the transport whether the message a caller polls for was reported during this call.
pub struct Completions<'a> {
    apply: &'a mut dyn FnMut(Done),
    /// The message a caller polls for.
    watch: Option<u64>,
    /// It was reported: `Some(bytes)` done, `None` failed.
    seen: Option<Option<u64>>,
}

impl<'a> Completions<'a> {
    /// Reports go to `apply`; `watch`: the message a caller polls for.
    pub fn new(apply: &'a mut dyn FnMut(Done), watch: Option<u64>) -> Completions<'a> {
        Completions { apply, watch, seen: None }
    }

    pub fn push(&mut self, d: Done) {
        if self.watch == Some(d.seq()) {
            self.seen = Some(match d {
                Done::Ok { bytes, .. } => Some(bytes),
                Done::Failed { .. } => None,
            });
        }
        (self.apply)(d);
    }

    /// The message a caller polls for.
    #[cfg_attr(not(feature = "ofi"), allow(dead_code))]
    pub fn watch(&self) -> Option<u64> {
        self.watch
    }

    /// Whether message `seq`, the one a caller polls for, was reported during this call.
    pub fn saw(&self, seq: u64) -> bool {
        self.watch == Some(seq) && self.seen.is_some()
    }

    /// What was reported of the watched message during this call: `Some(Some(bytes))` done,
    /// `Some(None)` failed, `None` nothing.
    pub fn watched(&self) -> Option<Option<u64>> {
        self.seen
    }
}

/// A send's outcome from the peer's verdict (TCP's Ack frames, the shared-memory ring's
/// acknowledgement entries, verbs' eager Acks).
pub fn send_verdict(seq: u64, len: u64, status: u16, size: u64) -> Result<Done> {
    match status {
        ack::OK if size == len => Ok(Done::Ok { seq, bytes: size }),
        ack::TOO_LONG => {
            Ok(Done::Failed { seq, err: Error::failure(format!("the peer's matching receive is shorter than this send of {len} bytes")) })
        }
        s => Err(Error::failure(format!("message {seq}: acknowledgement status {s} for {size} of {len} bytes"))),
    }
}

/// A receive of `cap` bytes shorter than the matching send of `sent` bytes: both fail, nothing is
/// written.
pub fn short_receive(cap: u64, sent: u64) -> Error {
    Error::failure(format!("receive of {cap} bytes is shorter than the matching send of {sent} bytes; both fail"))
}

/// The message a caller is polling for (`test_request` on a pending request): what to read
/// first, and when to stop.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    pub seq: u64,
    pub len: usize,
}

/// A descriptor for the lnc's epoll: the communicator's bytes move when it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitFd {
    pub fd: RawFd,
    /// Readiness for input matters (else only output and hang-ups).
    pub input: bool,
}

/// One communicator's data path. Called under the communicator's lock, one thread at a time.
/// Every call that moves bytes reports the messages it finished to `done`, in any order.
pub trait Transport: Send {
    /// "tcp", "shm", "verbs" (logs and tests).
    fn name(&self) -> &'static str;

    /// Queues a message of the communicator's direction.
    fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()>;

    /// Right after a post: moves what the post made movable. With `pump` false a receive leaves
    /// the bytes that waited for it to the progress thread and returns true when there were any
    /// (its caller works between requests; see `comm`).
    fn after_post(&mut self, pump: bool, done: &mut Completions<'_>) -> Result<bool>;

    /// Moves everything that can move without blocking (the progress thread, woken by
    /// edge-triggered readiness, relies on it reading until it would block).
    fn progress(&mut self, done: &mut Completions<'_>) -> Result<()>;

    /// A caller's poll: as little work as finds `wait`'s completion. With `defer_control`, a
    /// completed small receive may leave its control frame queued: `Ok(true)` says so (sent by
    /// `flush_control` soon after).
    fn poll(&mut self, wait: Option<Wait>, defer_control: bool, done: &mut Completions<'_>) -> Result<bool>;

    /// Sends the control frames left queued, as far as the socket takes them now.
    fn flush_control(&mut self) -> Result<()>;

    /// What the lnc's progress thread watches for this communicator.
    fn wait_fds(&self, out: &mut Vec<WaitFd>);

    /// The sockets a spinning caller may take over from the progress thread (empty: the
    /// transport's polls need no sockets, or its caller must not take them).
    fn spin_fds(&self, out: &mut Vec<WaitFd>);

    /// A caller's poll reads sockets (its polls count as a live caller for the lnc's parking
    /// rules); false where a poll only reads memory (shared memory).
    fn polls_sockets(&self) -> bool;

    /// The communicator failed (it drops the transport next, instead of a normal close).
    fn broken(&mut self) {}

    /// A parked caller's poll may leave control frames queued (`poll`'s `defer_control`): the
    /// lnc's progress thread then ticks every millisecond while the communicator is parked, to
    /// send them should the caller stop polling.
    fn defers_control(&self) -> bool {
        false
    }

    /// The progress thread must poll this transport every tick (it has completions that no
    /// descriptor of `wait_fds` announces: a libfabric provider without wait objects).
    fn wants_ticks(&self) -> bool {
        false
    }

    /// A caller spinning on `wait` should give its CPU away between polls (another thread of
    /// this host does the work it waits for).
    fn yield_while(&self, wait: Wait) -> bool {
        let _ = wait;
        false
    }

    /// A caller that has waited a while for `wait` should sleep this long between polls: the
    /// work it waits for runs on this host's CPUs, which its spinning would take (verbs on a
    /// software device: Soft-RoCE or siw).
    fn pause_while(&self, wait: Wait) -> Option<std::time::Duration> {
        let _ = wait;
        None
    }

    /// The largest message this transport takes.
    fn max_message(&self) -> u64;

    /// Control frames wait for the socket (tests).
    #[cfg(test)]
    fn has_queued_control(&self) -> bool;

    /// The congestion control of each TCP stream (tests).
    #[cfg(test)]
    fn congestion(&self) -> Vec<String> {
        Vec::new()
    }

    /// Messages a shared-memory sender staged so far (tests).
    #[cfg(test)]
    fn staged_messages(&self) -> Option<u64> {
        None
    }
}
