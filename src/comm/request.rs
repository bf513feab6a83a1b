//! Requests: one posted send or receive, completed by the engine, reaped by `test_request`.
//!
//! The state is a single atomic: the engine moves it once from Pending to Done or Failed with
//! Release after the last byte landed, `test_request` reads it with Acquire, so a caller that sees
//! Done also sees the bytes.

use crate::comm::Comm;
use crate::comm::slots::Slots;
use crate::status::{Error, NRT_STATUS};
use crate::tensor::Region;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Every posted request, found by its handle; each communicator owns a block of slots.
pub static REQUESTS: Slots<Request> = Slots::new(Request::retire);

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Send,
    Recv,
}

pub struct Request {
    pub id: u64,
    pub kind: Kind,
    pub comm: Arc<Comm>,
    pub region: Region,
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

impl Request {
    pub fn new(id: u64, kind: Kind, comm: Arc<Comm>, region: Region, deadline: Option<u64>) -> Request {
        Request { id, kind, comm, region, deadline, state: AtomicU8::new(PENDING), size: AtomicU64::new(0), error: Mutex::new(None) }
    }

    /// A reported request kept for its communicator's next post: it lets its tensor go.
    fn retire(&mut self) {
        self.region = Region::empty();
        *self.error.get_mut() = None;
    }

    /// A retired request posted again (same communicator, so same kind).
    pub fn reuse(&mut self, id: u64, region: Region, deadline: Option<u64>) {
        self.id = id;
        self.region = region;
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

    /// A send: the peer's verdict on it (`ack::OK` with the bytes it received, or `ack::TOO_LONG`
    /// when the matching receive was shorter). Anything else is a protocol error for the
    /// communicator, returned.
    pub fn finish_send(&self, seq: u64, status: u16, size: u64) -> crate::status::Result<()> {
        let len = self.region.len() as u64;
        match status {
            crate::wire::ack::OK if size == len => {
                self.complete(size);
                Ok(())
            }
            crate::wire::ack::TOO_LONG => {
                self.fail(Error::failure(format!(
                    "{}: the peer's matching receive is shorter than this send of {len} bytes",
                    self.comm.describe()
                )));
                Ok(())
            }
            s => Err(Error::failure(format!("message {seq}: acknowledgement status {s} for {size} of {len} bytes"))),
        }
    }

    /// A receive shorter than the matching send of `sent` bytes: fails (logged once, by the
    /// test_request that reports it); nothing is written (the caller answers the sender with
    /// `ack::TOO_LONG`, which fails the send: both fail).
    pub fn reject_short(&self, sent: u64) {
        let msg = format!(
            "{}: receive of {} bytes is shorter than the matching send of {sent} bytes; both fail",
            self.comm.describe(),
            self.region.len()
        );
        self.fail(Error::failure(msg));
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
