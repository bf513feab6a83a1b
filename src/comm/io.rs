//! A communicator's side of its transport: the transport object, and the requests it has been
//! handed, paired with its completions by sequence number (in whatever order they come).

use super::request::Request;
use crate::status::{Error, Result};
use crate::tensor::Region;
use crate::transport::any::AnyTransport;
use crate::transport::{Completions, Done, Msg, Transport, Wait, WaitFd};
use std::collections::VecDeque;
use std::sync::Arc;

/// Held under the communicator's lock.
pub struct CommIo<C> {
    t: AnyTransport,
    /// Requests handed to the transport and not reported yet, in posting order.
    inflight: VecDeque<Arc<Request<C>>>,
    /// The next message's number.
    pub next_seq: u64,
    /// The communicator, for the requests' failure messages ("lnc 0 → 10.0.0.2 lnc 1 (Send comm #0)").
    who: String,
    /// The request a caller keeps polling: its seq + 1 (0: none), the polls of it so far, when
    /// the first of them ran, and whether it has waited `LONG_WAIT_NS` (`long_wait`).
    wait_seq: u64,
    wait_polls: u32,
    wait_since: u64,
    wait_long: bool,
}

/// A caller that has polled one pending request for this long gives its CPU away between polls
/// (`CommIo::long_wait`): well above an 8-byte round trip over TCP on loopback (about 9 µs), far
/// below a scheduler time slice (milliseconds).
const LONG_WAIT_NS: u64 = 20_000;

impl<C> CommIo<C> {
    pub fn new(who: String) -> CommIo<C> {
        CommIo {
            t: AnyTransport::None,
            inflight: VecDeque::new(),
            next_seq: 0,
            who,
            wait_seq: 0,
            wait_polls: 0,
            wait_since: 0,
            wait_long: false,
        }
    }

    /// Whether the caller polling `wait` has been at it for `LONG_WAIT_NS` (the clock is read on
    /// one poll in 16). Its peer, or the thread that does the work it waits for, may need its CPU:
    /// two processes of one host that spin on the same CPU otherwise take a scheduler time slice
    /// each (about 8 ms here) per message, until the scheduler moves one of them, which it may not
    /// do for a while after they start (the first messages after connecting).
    pub fn long_wait(&mut self, wait: Option<Wait>) -> bool {
        let Some(w) = wait else {
            self.wait_seq = 0;
            return false;
        };
        if self.wait_seq != w.seq + 1 {
            self.wait_seq = w.seq + 1;
            self.wait_polls = 0;
            self.wait_long = false;
            self.wait_since = crate::sys::clock::mono_ns();
            return false;
        }
        if !self.wait_long {
            self.wait_polls = self.wait_polls.wrapping_add(1);
            self.wait_long =
                self.wait_polls.is_multiple_of(16) && crate::sys::clock::mono_ns().saturating_sub(self.wait_since) >= LONG_WAIT_NS;
        }
        self.wait_long
    }

    /// How long the caller has been polling its current request (`long_wait`), in nanoseconds.
    pub fn waited_ns(&self) -> u64 {
        if self.wait_seq == 0 { 0 } else { crate::sys::clock::mono_ns().saturating_sub(self.wait_since) }
    }

    /// The transport chosen at set-up.
    pub fn install(&mut self, t: AnyTransport) {
        self.t = t;
    }

    pub fn transport(&self) -> &AnyTransport {
        &self.t
    }

    #[cfg(test)]
    pub fn is_shm(&self) -> bool {
        self.t.name() == "shm"
    }

    #[cfg(test)]
    pub fn has_queued_control(&self) -> bool {
        self.t.has_queued_control()
    }

    #[cfg(test)]
    pub fn shm_staged(&self) -> Option<u64> {
        self.t.staged_messages()
    }

    /// Hands a request and its memory to the transport (which keeps the memory until it
    /// reports the message).
    pub fn post(&mut self, req: Arc<Request<C>>, region: Region) -> Result<()> {
        let m = Msg { seq: req.seq, region };
        self.inflight.push_back(req);
        let (t, mut apply) = self.parts();
        t.post(m, &mut Completions::new(&mut apply, None))
    }

    pub fn after_post(&mut self, pump: bool) -> Result<bool> {
        let (t, mut apply) = self.parts();
        t.after_post(pump, &mut Completions::new(&mut apply, None))
    }

    pub fn progress(&mut self) -> Result<()> {
        let (t, mut apply) = self.parts();
        t.progress(&mut Completions::new(&mut apply, None))
    }

    pub fn poll(&mut self, wait: Option<Wait>, defer_control: bool) -> Result<bool> {
        let (t, mut apply) = self.parts();
        t.poll(wait, defer_control, &mut Completions::new(&mut apply, wait.map(|w| w.seq)))
    }

    /// The transport, and what completes or fails the request a report names.
    fn parts(&mut self) -> (&mut AnyTransport, impl FnMut(Done) + '_) {
        let (inflight, who) = (&mut self.inflight, &self.who);
        let apply = move |d: Done| {
            let seq = d.seq();
            // In order for every transport so far: almost always the first.
            let Some(pos) = inflight.iter().position(|r| r.seq == seq) else {
                debug_assert!(false, "completion for message {seq}, which is not in flight");
                return;
            };
            let req = inflight.remove(pos).expect("position is in range");
            match d {
                Done::Ok { bytes, .. } => {
                    req.complete(bytes);
                }
                Done::Failed { err, .. } => {
                    // Logged once, by the test_request that reports it.
                    req.fail(Error::new(err.status, format!("{who}: {}", err.msg)));
                }
            }
        };
        (&mut self.t, apply)
    }

    pub fn flush_control(&mut self) -> Result<()> {
        self.t.flush_control()
    }

    pub fn spin_fds(&self) -> Vec<WaitFd> {
        let mut v = Vec::new();
        self.t.spin_fds(&mut v);
        v
    }

    /// Requests posted and not finished.
    pub fn has_pending(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// The communicator broke or closed: every request in flight fails with `e`, and the
    /// transport goes (its connection closes).
    pub fn fail_all(&mut self, e: &Error) {
        for r in self.inflight.drain(..) {
            r.fail(e.clone());
        }
        if e.status != crate::status::NRT_STATUS::NRT_CLOSED {
            self.t.broken();
        }
        self.t = AnyTransport::None;
    }
}
