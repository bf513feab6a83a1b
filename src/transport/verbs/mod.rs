//! RDMA verbs data path (libibverbs through `rdma-sys`): RoCE, InfiniBand, Soft-RoCE.
//!
//! A communicator keeps its TCP streams for control and liveness and moves data over one RC
//! queue pair. Small messages (up to `EAGER_MAX`) whose Clear-To-Send has not arrived yet go
//! eagerly: a SEND with immediate data = seq into one of the receiver's pre-posted, registered
//! bounce buffers, copied out into the receive when it is (or once it gets) posted; the receiver
//! answers with an Ack (OK, or TOO_LONG when its receive is shorter: both fail) and the send
//! completes on that Ack. Every other message is a zero-copy rendezvous: the receiver registers its buffer and
//! sends Clear-To-Send (seq, address, length, rkey) over TCP stream 0; the sender, holding the
//! matching send, RDMA-WRITEs its bytes straight into that buffer with immediate data = seq. The
//! receiver's completion (RECV_RDMA_WITH_IMM) carries the byte count; the sender's completion
//! comes after the peer's NIC acknowledged the write, so a completed send means the bytes landed.
//! A receive shorter than its send is refused by the sender (Ack TOO_LONG over TCP): both fail,
//! nothing is written. Why WRITE rather than READ: one network trip after CTS instead of a READ
//! request plus response, the receiver learns completion from its own CQ (no extra "done"
//! message), and rxe/EFA-class devices handle writes with less responder state.
//!
//! Queue pair addresses (QPN, PSN, GID, LID) travel as QpInfo frames over the TCP bootstrap.
//! Completions arrive through a completion channel whose descriptor sits in the lnc's epoll.

mod device;
mod mr;
mod qp;

pub use device::{Device, device_for_ip};

use super::tcp::{Stream, TcpTransport};
use super::{Completions, Msg, Transport, Wait, WaitFd};
use crate::status::{Error, Result};
use crate::transport::Kind;
use crate::wire::{Frame, ack};
use qp::{MAX_VERBS_MESSAGE, VerbsIo};
use std::sync::Arc;

/// A communicator's RDMA data path.
pub struct VerbsTransport {
    kind: Kind,
    /// The connection's streams: control frames on stream 0, and the peer's end.
    link: TcpTransport,
    io: VerbsIo,
}

impl VerbsTransport {
    /// Reads the TCP link (all of it, or what is ready). When the link has failed (the peer
    /// closed it: a sender whose last writes completed may exit before this side polled its
    /// completion queue), the writes that already landed are reported first, so that only the
    /// messages that did not arrive fail.
    fn read_link(&mut self, ready_only: bool, done: &mut Completions<'_>) -> Result<()> {
        let r = if ready_only { self.link.read_ready() } else { self.link.read_all() };
        if r.is_err() {
            let _ = self.io.poll(done);
        }
        r
    }

    /// Creates the queue pair and names it to the peer.
    pub fn new(kind: Kind, streams: Vec<Stream>, dev: Arc<Device>) -> Result<VerbsTransport> {
        let mut t = VerbsTransport { kind, link: TcpTransport::link(kind, streams), io: VerbsIo::new(dev, kind)? };
        t.drain_out();
        Ok(t)
    }

    /// The queue pair's control frames go to stream 0.
    fn drain_out(&mut self) {
        for f in std::mem::take(&mut self.io.out) {
            self.link.send_frame(&f);
        }
    }

    /// The frames the link read: the peer's queue pair, clear-to-send, verdicts.
    fn handle_frames(&mut self, done: &mut Completions<'_>) -> Result<()> {
        for f in self.link.take_frames() {
            match f {
                Frame::QpInfo { qpn, psn, gid, lid } => self.io.on_qp_info(qpn, psn, gid, lid, done)?,
                Frame::Cts { seq, addr, len, rkey } => self.io.on_cts(seq, addr, len, rkey, done)?,
                Frame::Ack { seq, status: ack::TOO_LONG, .. } if self.kind == Kind::Recv => self.io.on_refused(seq, done)?,
                Frame::Ack { seq, status, size } if self.kind == Kind::Send => self.io.on_verdict(seq, status, size, done)?,
                f => return Err(Error::failure(format!("unexpected frame {f:?} on the verbs control stream"))),
            }
            self.drain_out();
        }
        Ok(())
    }
}

impl Transport for VerbsTransport {
    fn name(&self) -> &'static str {
        "verbs"
    }

    fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        self.io.post(m, done)?;
        self.drain_out();
        Ok(())
    }

    fn after_post(&mut self, _pump: bool, done: &mut Completions<'_>) -> Result<bool> {
        self.progress(done).map(|_| false)
    }

    fn progress(&mut self, done: &mut Completions<'_>) -> Result<()> {
        self.read_link(false, done)?;
        self.handle_frames(done)?;
        self.io.poll(done)?;
        self.drain_out();
        self.link.flush_control()
    }

    fn poll(&mut self, wait: Option<Wait>, _defer_control: bool, done: &mut Completions<'_>) -> Result<bool> {
        self.read_link(true, done)?;
        self.handle_frames(done)?;
        if wait.is_none_or(|w| !done.saw(w.seq)) {
            self.io.poll(done)?;
            self.drain_out();
        }
        self.link.flush_control().map(|_| false)
    }

    fn flush_control(&mut self) -> Result<()> {
        self.drain_out();
        self.link.flush_control()
    }

    fn wait_fds(&self, out: &mut Vec<WaitFd>) {
        self.link.wait_fds(out);
        out.push(WaitFd { fd: self.io.fd(), input: true });
    }

    fn spin_fds(&self, _out: &mut Vec<WaitFd>) {}

    fn polls_sockets(&self) -> bool {
        true
    }

    fn max_message(&self) -> u64 {
        MAX_VERBS_MESSAGE as u64
    }

    #[cfg(test)]
    fn has_queued_control(&self) -> bool {
        self.link.has_queued_control()
    }
}
