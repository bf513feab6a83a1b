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
}

impl<C> CommIo<C> {
    pub fn new(who: String) -> CommIo<C> {
        CommIo { t: AnyTransport::None, inflight: VecDeque::new(), next_seq: 0, who }
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
