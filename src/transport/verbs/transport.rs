//! The verbs transport of one communicator: the protocol over its queue pair, and the
//! connection's TCP streams, which carry the queue pair's address at set-up and afterwards only
//! tell that the peer has gone.

use super::device::{Device, size_setting};
use super::proto::{Nic, Proto, RECV_DEPTH, SEND_DEPTH};
use super::qp::Qp;
use crate::status::{Error, Result};
use crate::transport::staging::Staging;
use crate::transport::tcp::{Stream, TcpTransport};
use crate::transport::{Completions, Kind, Msg, Transport, Wait, WaitFd};
use crate::wire::Frame;
use std::sync::Arc;

/// Messages from this size on are waited for by sleeping between polls on a software device.
const PAUSE_MIN: usize = 256 << 10;
/// The sleep (the timer's slack adds to it).
const PAUSE: std::time::Duration = std::time::Duration::from_micros(50);

/// The version of the protocol (`proto.rs`), in the QpInfo frame: 2 since control travels on
/// the queue pair, 3 since a Cts may come in parts. Both sides must run the same.
const PROTO_VERSION: u16 = 3;

/// `NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE`: the longest one RDMA write may be, in bytes
/// (suffixes K, M, G), below the device's `max_msg_sz`. Read once.
fn max_write_setting() -> Result<Option<u64>> {
    static V: std::sync::OnceLock<std::result::Result<Option<u64>, Error>> = std::sync::OnceLock::new();
    V.get_or_init(|| size_setting("NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE")).clone()
}

/// A communicator's RDMA data path.
pub struct VerbsTransport {
    kind: Kind,
    /// The device is software (Soft-RoCE, siw): long waits for large messages sleep.
    software: bool,
    link: TcpTransport,
    proto: Proto<Qp>,
    staging: Staging,
}

impl VerbsTransport {
    /// Creates the queue pair, posts its receives and names it to the peer.
    pub fn new(kind: Kind, streams: Vec<Stream>, dev: Arc<Device>) -> Result<VerbsTransport> {
        let max_write = match max_write_setting()? {
            Some(w) if w < dev.max_msg => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    crate::log_info!(
                        "verbs: RDMA writes of at most {w} bytes (NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE; {dev} allows {})",
                        dev.max_msg
                    )
                });
                w
            }
            _ => dev.max_msg,
        };
        let software = dev.software;
        let qp = Qp::new(dev, SEND_DEPTH, RECV_DEPTH, max_write)?;
        let proto = Proto::new(qp, kind)?;
        let mut t = VerbsTransport { kind, software, link: TcpTransport::link(kind, streams), proto, staging: Staging::default() };
        let (qp, dev) = (t.proto.nic(), t.proto.nic().device());
        let f = Frame::QpInfo { qpn: qp.qpn(), psn: qp.psn, gid: dev.gid, lid: dev.lid, proto: PROTO_VERSION };
        t.link.send_frame(&f);
        Ok(t)
    }

    /// Reads the TCP link (all of it, or what is ready). When the link has failed (the peer
    /// closed it: a sender whose last writes completed may exit before this side polled its
    /// completion queue), the completions already there are reported first, so that only the
    /// messages that did not arrive fail.
    fn read_link(&mut self, ready_only: bool, done: &mut Completions<'_>) -> Result<()> {
        let r = if ready_only { self.link.read_ready() } else { self.link.read_all() };
        if r.is_err() && self.proto.is_connected() {
            let proto = &mut self.proto;
            let _ = self.staging.with(done, |d| proto.poll(d));
        }
        r
    }

    /// The frames the link read: only the peer's queue pair, once.
    fn handle_frames(&mut self, done: &mut Completions<'_>) -> Result<()> {
        for f in self.link.take_frames() {
            match f {
                Frame::QpInfo { qpn, psn, gid, lid, proto } if !self.proto.is_connected() => {
                    if proto != PROTO_VERSION {
                        return Err(Error::failure(format!(
                            "the peer runs version {proto} of the verbs protocol, this side {PROTO_VERSION} (run the same nrt-sendrecv on both sides)"
                        )));
                    }
                    self.proto.nic_mut().connect(qpn, psn, gid, lid)?;
                    let proto = &mut self.proto;
                    self.staging.with(done, |d| proto.start(d))?;
                }
                f => return Err(Error::failure(format!("unexpected frame {f:?} on the verbs control stream"))),
            }
        }
        Ok(())
    }

    fn poll_qp(&mut self, done: &mut Completions<'_>) -> Result<()> {
        let proto = &mut self.proto;
        self.staging.with(done, |d| proto.poll(d))
    }
}

impl Drop for VerbsTransport {
    fn drop(&mut self) {
        if self.proto.parted > 0 {
            crate::log_info!(
                "verbs: {} message(s) registered in several parts (longer than one registration may be on {}: {} bytes)",
                self.proto.parted,
                self.proto.nic().device(),
                self.proto.nic().device().max_mr
            );
        }
        if self.proto.multi_messages > 0 {
            crate::log_info!(
                "verbs: {} message(s) went as several RDMA writes ({} writes, at most {} bytes each)",
                self.proto.multi_messages,
                self.proto.multi_writes,
                self.proto.nic().max_write()
            );
        }
    }
}

impl Transport for VerbsTransport {
    fn name(&self) -> &'static str {
        "verbs"
    }

    fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        let m = match m.region.staging().cloned() {
            Some(mem) => {
                if self.staging.count == 0 {
                    crate::log_info!("verbs: device memory staged through host memory (no device registration over verbs)");
                }
                self.staging.stage(self.kind, m, mem)?
            }
            None => m,
        };
        let proto = &mut self.proto;
        self.staging.with(done, |d| proto.post(m, d))
    }

    fn after_post(&mut self, _pump: bool, done: &mut Completions<'_>) -> Result<bool> {
        if self.proto.is_connected() {
            self.poll_qp(done)?;
        }
        Ok(false)
    }

    /// The progress thread: the link (the peer's address, or its end), then the completion
    /// channel's events, the CQ armed again, and every completion.
    fn progress(&mut self, done: &mut Completions<'_>) -> Result<()> {
        self.read_link(false, done)?;
        self.handle_frames(done)?;
        if self.proto.is_connected() {
            self.proto.nic_mut().rearm()?;
            self.poll_qp(done)?;
        }
        self.link.flush_control()
    }

    /// A caller's poll: the CQ only (no system call on the way), or the link until the queue
    /// pair is connected.
    fn poll(&mut self, _wait: Option<Wait>, _defer_control: bool, done: &mut Completions<'_>) -> Result<bool> {
        if !self.proto.is_connected() {
            self.read_link(true, done)?;
            self.handle_frames(done)?;
            return self.link.flush_control().map(|_| false);
        }
        self.poll_qp(done).map(|_| false)
    }

    fn flush_control(&mut self) -> Result<()> {
        self.link.flush_control()
    }

    fn wait_fds(&self, out: &mut Vec<WaitFd>) {
        self.link.wait_fds(out);
        out.push(WaitFd { fd: self.proto.nic().fd(), input: true });
    }

    /// A spinning caller polls the CQ itself: the progress thread stops watching the completion
    /// channel meanwhile (the streams it keeps, to notice the peer's end).
    fn spin_fds(&self, out: &mut Vec<WaitFd>) {
        out.push(WaitFd { fd: self.proto.nic().fd(), input: true });
    }

    fn polls_sockets(&self) -> bool {
        true
    }

    /// On a software device (Soft-RoCE, siw) the kernel moves the bytes on this host's CPUs: a
    /// caller that has waited a while for a message of `PAUSE_MIN` bytes or more sleeps
    /// `PAUSE` between polls instead of spinning against it (measured in docs/rdma-vm.md).
    fn pause_while(&self, wait: Wait) -> Option<std::time::Duration> {
        (self.software && wait.len >= PAUSE_MIN).then_some(PAUSE)
    }

    fn max_message(&self) -> u64 {
        crate::wire::MAX_MESSAGE
    }

    #[cfg(test)]
    fn has_queued_control(&self) -> bool {
        self.link.has_queued_control()
    }
}
