//! Requests: one posted send or receive, completed by its communicator from its transport's
//! completions, reaped by `test_request`.
//!
//! The state is a single atomic: the communicator moves it once from Pending to Done or Failed
//! with Release after the last byte landed, `test_request` reads it with Acquire, so a caller
//! that sees Done also sees the bytes. A request names its communicator (`C`, the type of
//! `comm::Comm`; generic here so that this file needs nothing above it).

pub use crate::transport::Kind;

use crate::status::{Error, NRT_STATUS};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

pub struct Request<C> {
    pub id: u64,
    pub kind: Kind,
    pub comm: Arc<C>,
    /// Bytes of the posted region (the transport holds the region itself until it reports the
    /// message).
    pub len: usize,
    /// The communicator's number of this message (its k-th post pairs with the peer's k-th).
    pub seq: u64,
    /// CLOCK_MONOTONIC_COARSE nanoseconds (see `sys::clock::coarse_ns`).
    pub deadline: Option<u64>,
    state: AtomicU8,
    size: AtomicU64,
    error: Mutex<Option<Error>>,
}

/// What `test_request` sees.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Done(u64),
    Failed(Error),
}

impl<C> Request<C> {
    pub fn new(id: u64, kind: Kind, comm: Arc<C>, len: usize, seq: u64, deadline: Option<u64>) -> Request<C> {
        Request { id, kind, comm, len, seq, deadline, state: AtomicU8::new(PENDING), size: AtomicU64::new(0), error: Mutex::new(None) }
    }

    /// A reported request kept for its communicator's next post.
    pub fn retire(&mut self) {
        *self.error.get_mut() = None;
    }

    /// A retired request posted again (same communicator, so same kind).
    pub fn reuse(&mut self, id: u64, len: usize, seq: u64, deadline: Option<u64>) {
        self.id = id;
        self.len = len;
        self.seq = seq;
        self.deadline = deadline;
        *self.state.get_mut() = PENDING;
        *self.size.get_mut() = 0;
        *self.error.get_mut() = None;
    }

    /// Marks the request done with `size` bytes; false when it had already finished.
    pub fn complete(&self, size: u64) -> bool {
        self.size.store(size, Ordering::Relaxed);
        self.state.compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Marks the request failed; the first failure (or completion) wins.
    pub fn fail(&self, e: Error) -> bool {
        let mut g = self.error.lock();
        if self.state.load(Ordering::Acquire) != PENDING {
            return false;
        }
        *g = Some(e);
        self.state.compare_exchange(PENDING, FAILED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Bytes moved: meaningful once the request is done (0 while pending or failed).
    pub fn size(&self) -> u64 {
        if self.state.load(Ordering::Acquire) == DONE { self.size.load(Ordering::Relaxed) } else { 0 }
    }

    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    pub fn outcome(&self) -> Outcome {
        match self.state.load(Ordering::Acquire) {
            PENDING => Outcome::Pending,
            DONE => Outcome::Done(self.size.load(Ordering::Relaxed)),
            _ => Outcome::Failed(self.error.lock().clone().unwrap_or_else(|| Error::new(NRT_STATUS::NRT_FAILURE, "request failed"))),
        }
    }
}
