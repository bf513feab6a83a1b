//! The same-host data path: a shared-memory channel per communicator, bytes copied once.
//!
//! When both ends of a connection are processes of one host (the TCP connection's peer address is
//! a loopback address or our own local address), the sending side creates a small memfd, the
//! *channel*, and names it to the receiver on the TCP control stream (ShmInfo: its pid, the
//! descriptor number, a random token, the channel's address). The receiver opens
//! `/proc/<pid>/fd/<n>`, maps it and checks the token in it (only the peer, which sent the token
//! over the connection, can have put it there: the pid is the peer, not a namesake in another pid
//! namespace). It then reads the same token from the sender's address space with
//! `process_vm_readv`, to learn whether it may read the sender's memory directly. It answers
//! ShmReady: OK, or STAGE when the kernel refused that read (Yama `ptrace_scope` 1, a seccomp
//! policy) or `NEURON_RT_ASYNC_SENDRECV_SHM_VM_READV=0`: then the sender stages every message
//! that does not lie in one of its memfds in a memfd of its own (a copy on each side, still no
//! socket); or an error status, and both sides fall back to the TCP data path, which nothing has
//! used yet.
//!
//! The channel holds two single-producer rings of [`RING`] entries (the pending-request limit, so
//! neither ever overflows):
//! - descriptors, sender → receiver: message length, the sender's address, and when the bytes lie
//!   in one of our memfd-backed tensors, that memfd's descriptor number, id, size and offset;
//!   messages up to [`INLINE`] bytes travel inside the descriptor;
//! - acknowledgements, receiver → sender: sequence, status, size.
//!
//! The receiver copies each message straight from the sender's tensor into the posted receive:
//! through a read-only mapping of the sender's memfd (cached per memfd, opened through
//! `/proc/<pid>/fd`, name and seals checked), or with `process_vm_readv` for memory we do not own
//! (`nrt_tensor_attach_buffer`) above `STAGE_ALWAYS_MAX` (64 KiB). Smaller such messages, and all of
//! them where that call is refused, come from a staging memfd of the sender's (a copy on each
//! side). A send completes when its acknowledgement is seen, after the receiver's copy, so the
//! sender may reuse its tensor at once.
//!
//! Wake-ups: a receiver that is polling `test_request` sees a new descriptor within a cache-line
//! transfer. Otherwise its progress thread must be woken: the sender sends a Wake frame on the TCP
//! control stream, at most one until the receiver has looked at the ring again (`wake` flag), and
//! none while the receiver polled a pending receive within the last 2 x [`SPIN_NS`] (its stamp).
//! A receiver that stops polling leaves its stamp to run out; a sender that published meanwhile
//! and waits for its acknowledgement checks again every [`RECHECK_POLLS`] polls and wakes it once
//! the stamp is stale (so a message is never left behind a receiver that went away, and nothing
//! is written on the receiver's side when a receive completes). A receiver with no receive posted
//! leaves the `wake` flag set: its next post reads the ring. Acknowledgements need no wake-up: a
//! send's completion is only observed by `test_request`, which reads the ring itself.
//!
//! The TCP streams stay open: stream 0 carries the control frames, and its end is how either
//! side learns that the other has gone.

mod channel;
mod maps;
mod ring;
mod stage;
#[cfg(test)]
mod tests;

use super::tcp::{Stream, TcpTransport};
use super::{Completions, Msg, Transport, Wait, WaitFd};
use crate::status::{Error, Result};
use crate::transport::Kind;
use crate::wire::{Frame, MAX_MESSAGE};
use ring::{Setup, ShmIo};

#[cfg(test)]
pub use channel::INLINE;

/// A communicator's same-host data path.
pub struct ShmTransport {
    kind: Kind,
    /// The connection's streams: the channel's control frames on stream 0 and the peer's end;
    /// the data path itself once set-up fell back to TCP.
    link: TcpTransport,
    /// The channel; `None` once set-up fell back to TCP (before any message moved).
    ring: Option<ShmIo>,
}

impl ShmTransport {
    /// The sending side creates the channel and names it to the peer at once; the receiving
    /// side waits for that. `required`: a set-up that fails is an error, not a fallback to TCP.
    /// `vm_readv`: the receiver may try `process_vm_readv` on the sender's memory.
    pub fn new(kind: Kind, streams: Vec<Stream>, required: bool, vm_readv: bool) -> Result<ShmTransport> {
        let mut t = ShmTransport { kind, link: TcpTransport::link(kind, streams), ring: Some(ShmIo::new(kind, required, vm_readv)?) };
        t.drain_out();
        Ok(t)
    }

    /// The channel's control frames go to stream 0.
    fn drain_out(&mut self) {
        if let Some(r) = self.ring.as_mut()
            && !r.out.is_empty()
        {
            for f in std::mem::take(&mut r.out) {
                self.link.send_frame(&f);
            }
        }
    }

    /// The frames the link read: the channel's set-up and wake-ups.
    fn handle_frames(&mut self, done: &mut Completions<'_>) -> Result<()> {
        for f in self.link.take_frames() {
            let Some(r) = self.ring.as_mut() else {
                return Err(Error::failure(format!("unexpected frame {f:?}")));
            };
            let setup = match f {
                Frame::ShmInfo { pid, fd, token, addr, size } if self.kind == Kind::Recv => r.on_info(pid, fd, token, addr, size),
                Frame::ShmReady { status } if self.kind == Kind::Send => r.on_ready(status, done),
                // The rings are read next.
                Frame::Wake if self.kind == Kind::Recv => Ok(Setup::Ok),
                f => return Err(Error::failure(format!("unexpected frame {f:?} on the shared-memory control stream"))),
            };
            self.drain_out();
            if let Setup::Fallback(queued) = setup? {
                // TCP instead: the messages posted meanwhile go out on it, in order.
                self.ring = None;
                self.link.carry_data();
                for m in queued {
                    self.link.post(m, done)?;
                }
                self.link.progress(done)?;
            }
        }
        Ok(())
    }
}

impl Transport for ShmTransport {
    fn name(&self) -> &'static str {
        if self.ring.is_some() { "shm" } else { "tcp" }
    }

    fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        match self.ring.as_mut() {
            // Memory reached only through its StagedMemory (device memory of the LD_PRELOAD
            // library, which never chooses shared memory): the rings copy through host
            // addresses, which it has none of (a device address is never to be dereferenced).
            Some(_) if m.region.staging().is_some() => {
                Err(Error::invalid("device memory cannot go over shared memory (the LD_PRELOAD library uses TCP or libfabric)"))
            }
            Some(r) => {
                r.post(m, done)?;
                self.drain_out();
                Ok(())
            }
            None => self.link.post(m, done),
        }
    }

    fn after_post(&mut self, pump: bool, done: &mut Completions<'_>) -> Result<bool> {
        match self.ring.as_ref() {
            None => self.link.after_post(pump, done),
            // A send over shared memory is published by the post itself (its Wake frame, if
            // any, is flushed here); its acknowledgement is read by its test.
            Some(r) if r.is_active() && self.kind == Kind::Send => self.flush_control().map(|_| false),
            Some(r) if r.is_active() => self.poll(None, false, done).map(|_| false),
            Some(_) => self.progress(done).map(|_| false),
        }
    }

    fn progress(&mut self, done: &mut Completions<'_>) -> Result<()> {
        let Some(r) = self.ring.as_mut() else { return self.link.progress(done) };
        // Acknowledgements already in the ring complete their sends even when the peer closed
        // its streams right after (its end is read next).
        r.poll(done)?;
        self.link.read_all()?;
        self.handle_frames(done)?;
        if let Some(r) = self.ring.as_mut() {
            r.poll(done)?;
            self.drain_out();
        }
        self.link.flush_control()
    }

    /// Over shared memory only the rings are read (no system call unless a control frame must go
    /// out); the streams are the progress thread's.
    fn poll(&mut self, wait: Option<Wait>, defer_control: bool, done: &mut Completions<'_>) -> Result<bool> {
        match self.ring.as_mut() {
            None => self.link.poll(wait, defer_control, done),
            Some(r) if r.is_active() => {
                r.poll(done)?;
                if let Some(w) = wait
                    && self.kind == Kind::Recv
                {
                    r.note_poll(!done.saw(w.seq));
                }
                self.flush_control().map(|_| false)
            }
            Some(_) => self.progress(done).map(|_| false),
        }
    }

    fn flush_control(&mut self) -> Result<()> {
        self.drain_out();
        self.link.flush_control()
    }

    fn wait_fds(&self, out: &mut Vec<WaitFd>) {
        self.link.wait_fds(out);
    }

    fn spin_fds(&self, out: &mut Vec<WaitFd>) {
        if self.ring.is_none() {
            self.link.spin_fds(out);
        }
    }

    fn polls_sockets(&self) -> bool {
        self.ring.is_none()
    }

    /// Without a ring its polls are the link's.
    fn defers_control(&self) -> bool {
        self.ring.is_none() && self.link.defers_control()
    }

    /// A large send waits for the receiver's copy (which may use a second thread, sys/copy.rs):
    /// a caller spinning on it gives its CPU away between polls instead of competing with that
    /// copy.
    fn yield_while(&self, wait: Wait) -> bool {
        self.ring.is_some() && self.kind == Kind::Send && wait.len >= crate::sys::copy::SPLIT_MIN
    }

    fn max_message(&self) -> u64 {
        MAX_MESSAGE
    }

    #[cfg(test)]
    fn has_queued_control(&self) -> bool {
        self.link.has_queued_control()
    }

    #[cfg(test)]
    fn congestion(&self) -> Vec<String> {
        self.link.congestion()
    }

    #[cfg(test)]
    fn staged_messages(&self) -> Option<u64> {
        self.ring.as_ref().filter(|r| r.is_active()).map(|r| r.staged_msgs)
    }
}
