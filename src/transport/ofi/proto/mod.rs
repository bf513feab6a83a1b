//! The libfabric transport's protocol for one communicator, over one or more rails (RDM
//! endpoints of one provider, each to the peer's matching endpoint). It assumes what EFA
//! promises and nothing more: no order between any two messages, operations or completions,
//! every buffer registered and its descriptor passed, keys chosen by the provider, and remote
//! addresses as the provider's registration names them (`Mr::remote_base`).
//!
//! # Tags and contexts
//!
//! A tag is 64 bits: the message type in the top 4 bits, the communicator's message number
//! (`Msg::seq`, low 60 bits) below. The k-th send pairs with the k-th receive by that number,
//! whatever order things arrive in. Types: EAGER 1 (the message itself), CTS 2 (clear-to-send),
//! RTS 3 (ready-to-send), ACK 4 (verdict), REFUSE 5, SIZE 6 (a written message's length). Every
//! tagged message lands in one of the bounce receives each side keeps posted (`trecv` ignoring
//! all tag bits): a receiver keeps 256 buffers of `EAGER_MAX` = 8 KiB spread over its rails (at
//! least 32 a rail), a sender 256 of 512 bytes on rail 0 (it receives control messages only). A
//! bounce is posted again once its message has been handled; an eager message whose receive is
//! not posted yet stays in its bounce until it is (a communicator has at most 128 messages in
//! flight, so at most half the bounces are held). Control messages all go over rail 0; eager
//! message k over rail k mod rails. What is sent is copied into one of 128 registered send
//! buffers (eager data up to 8 KiB on a sender, control payloads on either side), reused after
//! its local send completion; when all are in use the payload waits in a backlog.
//!
//! # Payloads (little-endian)
//!
//! | type   | payload                                                                       |
//! |--------|-------------------------------------------------------------------------------|
//! | EAGER  | the message's bytes (0 to `EAGER_MAX`)                                        |
//! | ACK    | 0..2 status (`wire::ack`: OK, TOO_LONG), 2..8 zero, 8..16 size (OK: the bytes received; TOO_LONG: the receive's capacity) |
//! | CTS    | 0..8 capacity, 8..12 zero (unused), 12..16 rails n, then n × (address u64, key u64) |
//! | RTS    | 0..8 length, 8..12 zero, 12..16 rails n, then n × (address u64, key u64)      |
//! | REFUSE | 0..8 the send's length                                                        |
//! | SIZE   | 0..8 the message's length, 8..16 the number of writes that carry it           |
//!
//! Remote CQ data (write mode): each write of message seq carries seq's low 32 bits, nothing
//! else. Only 32 bits are read, whatever the provider offers (`cq_data_size` 4 on EFA and
//! `verbs;ofi_rxm`, 8 on `tcp` and `shm`); the bits above are ignored.
//!
//! # Messages
//!
//! - **Eager** (length <= `EAGER_MAX`, and <= every rail's `max_msg`; zero-byte messages too):
//!   EAGER|seq. The receiver copies it into the posted receive (or keeps its bounce until the
//!   receive is posted), reports the receive, then answers ACK OK with the size, or, when the
//!   receive is shorter, reports it failed (`short_receive`) and answers ACK TOO_LONG. The send
//!   completes on the ACK (`send_verdict`), not on its local completion.
//! - **Write mode** (both ends are built with `write_mode`; the rails offer `write_data`: RMA
//!   and at least 4 bytes of remote CQ data): for every posted receive whose message has not
//!   already arrived eagerly, the receiver sends CTS|seq with its capacity; a receive longer than
//!   `EAGER_MAX` is first registered on every rail and the CTS names its address and key per
//!   rail (a shorter one takes nothing but an eager message and names none). A sender holding a
//!   send longer than `EAGER_MAX` whose CTS has not come sends RTS|seq with the length and no
//!   addresses: a receive that sent no CTS answers it, failing both ends when shorter (ACK
//!   TOO_LONG) or sending its CTS then; one that sent its CTS drops it.
//!   The sender, holding the matching send longer than `EAGER_MAX`: when it is longer than the
//!   capacity, reports it failed and sends REFUSE|seq (the receiver fails its receive); else
//!   chooses its writes (`send::plan_writes`: one contiguous share per rail used, a rail per
//!   `STRIPE` bytes up to every rail, the first share on rail seq mod rails; each share in writes
//!   of at most `MAX_WRITE` = 4 MiB, less where a rail's `max_msg` is smaller), sends SIZE|seq
//!   with the length and the number of writes over rail 0 and posts the writes right after it
//!   (no round trip is added), each a `write_data` with remote CQ data = seq (low 32 bits).
//!   The receiver takes the SIZE message and the RemoteWrite completions in any order (the full
//!   seq of a write is the one of its posted receives that matches in 32 bits: fewer than 2^32
//!   are in flight); when the SIZE message and as many writes as it names are in, it reports the
//!   receive with the SIZE's length and answers ACK OK. The send completes when the ACK and all
//!   its write completions are in. A CTS for a message sent eagerly is dropped, whether it comes
//!   before the send is posted, after, or after its ACK.
//! - **Read mode** (no `write_data`): the sender registers the message on every rail and sends
//!   RTS|seq with its length and address and key per rail. The receiver, once the matching
//!   receive is posted: when the receive is shorter, reports it failed and answers ACK TOO_LONG;
//!   else registers it, reads the stripes (`STRIPE`, less where a rail's `max_msg` is smaller;
//!   stripe i over rail i mod rails), reports the receive when every read completed and answers
//!   ACK OK with the length; the send completes on the ACK.
//!
//! A message is at most 2^20 stripes (`max_message`: 512 GiB with 512 KiB stripes), in either
//! mode: it bounds the reads one message takes (and its writes, which are no more than its
//! stripes plus one a rail). Every message is reported once (`Done::Ok` or `Done::Failed`),
//! before anything that follows from it is sent. A completion with an error, an operation's
//! error, or a message that breaks the protocol (a malformed payload, a SIZE or a write that
//! fits no cleared receive, more writes than the SIZE names, a length beyond the receive) is an
//! `Err`: the communicator is broken. An operation the provider does not take now
//! (`Posted::Again`) waits in its rail's queue and is tried again at the next call
//! (`has_queued_ops`). Operations are posted only once `start` has connected the rails: the
//! bounce receives and the messages posted before then wait.
//!
//! Memory: a message's region is registered on every rail through a per-communicator cache
//! (`mr.rs`: tensor memory registered whole, keyed by its id), and released when the message
//! is done; the pools are registered once. Counters: bytes each rail carried (this side's
//! sends, writes and reads as posted, messages received, and the peer's writes landed: as their
//! completions report them, and where a provider reports none (`tcp;ofi_rxm`), the message's
//! length spread over the rails its writes came on; a read-mode sender does not see the peer's
//! reads of its memory).
//!
//! Device memory (the LD_PRELOAD library's device tensors with a virtual address, `Region::device`;
//! taken only where every rail offers `FI_HMEM`, `post_device`): a message longer than
//! `eager_max` is registered at post as device memory (`Rail::register_device`, per message, on
//! every rail) and is written or read at its device address by the provider like any large
//! message (its CTS or RTS names the device registration); a shorter one is copied through the
//! region's `StagedMemory` (into the send buffer; out of the bounce buffer), since device memory
//! may only be given to RMA. The peer sees the same protocol either way. Device memory the rails
//! do not take (no `FI_HMEM`, or a registration refused, after which the communicator takes none)
//! is given back to the caller, which stages it (`transport.rs`).
//!
//! Assumed of the rails (`fabric/`): a write's local completion means the bytes were
//! delivered (`FI_DELIVERY_COMPLETE`: a completed send says the peer has them whole); remote CQ
//! data consumes no posted receive (no `FI_RX_CQ_DATA` mode), so a RemoteWrite never takes a
//! bounce; an eager send's data is this side's copy, so its local completion only frees the
//! send buffer.

mod ctrl;
mod mr;
mod recv;
mod send;
mod shared;
#[cfg(test)]
mod tests;

use crate::status::{Error, Result};
use crate::transport::ofi::rail::{CqKind, Cqe, Rail};
use crate::transport::{Completions, Done, Kind, Msg};
use ctrl::{Ack, Cts, Ctx, MAX_STRIPES, Refuse, Rts, Size, Type, untag};
use mr::RegionMr;
use recv::Receiver;
use send::Sender;
use shared::Core;
use std::collections::VecDeque;
use std::os::fd::RawFd;

/// Completion passes one `progress` makes at most (it stops early once the rails are empty).
const MAX_PASSES: usize = 64;

enum Side {
    Send(Sender),
    Recv(Receiver),
}

pub struct Proto {
    /// First field: the rails close before the messages' memory may go.
    core: Core,
    side: Side,
    /// Messages posted before `start` (with their device memory's registration).
    waiting: VecDeque<(Msg, Option<RegionMr>)>,
    /// Reports made where no caller's `Completions` was at hand (`start`), for the next call.
    deferred: Vec<Done>,
    cqes: Vec<Cqe>,
}

impl Proto {
    /// A communicator of direction `kind` over `rails` (one provider); `write_mode` (the rails
    /// must offer `write_data`) must be the same at both ends.
    pub fn new(kind: Kind, rails: Vec<Box<dyn Rail>>, write_mode: bool) -> Result<Proto> {
        let core = Core::new(kind, rails, write_mode)?;
        let side = match kind {
            Kind::Send => Side::Send(Sender::default()),
            Kind::Recv => Side::Recv(Receiver::default()),
        };
        Ok(Proto { core, side, waiting: VecDeque::new(), deferred: Vec::new(), cqes: Vec::new() })
    }

    /// This side's endpoint addresses, one per rail, for the peer's `start`.
    pub fn names(&self) -> Vec<Vec<u8>> {
        self.core.rails.iter().map(|r| r.name()).collect()
    }

    /// Connects each rail to the peer's (`peer_names`, one per rail, in order), then posts the
    /// bounce receives and the messages that waited.
    pub fn start(&mut self, peer_names: Vec<Vec<u8>>) -> Result<()> {
        if self.core.started {
            return Err(Error::failure("libfabric communicator started twice"));
        }
        if peer_names.len() != self.core.nrails {
            return Err(Error::failure(format!("the peer has {} rails; this side has {}", peer_names.len(), self.core.nrails)));
        }
        for (rail, name) in self.core.rails.iter_mut().zip(&peer_names) {
            rail.connect(name)?;
        }
        self.core.started = true;
        self.core.flush_all()?;
        let mut reports = Vec::new();
        let mut apply = |d: Done| reports.push(d);
        let mut done = Completions::new(&mut apply, None);
        for (m, pre) in std::mem::take(&mut self.waiting) {
            self.issue(m, pre, &mut done)?;
        }
        self.deferred.extend(reports);
        Ok(())
    }

    /// Queues a message of the communicator's direction. Device memory that `post_device`
    /// would give back is refused (the caller stages it instead).
    pub fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        match self.post_device(m, done)? {
            None => Ok(()),
            Some(_) => Err(Error::invalid(
                "device memory cannot go over these libfabric rails as it is (no FI_HMEM, or registering it failed): stage it",
            )),
        }
    }

    /// Device memory goes as it is: the rails offer `FI_HMEM` and no registration of device
    /// memory failed on this communicator.
    pub fn takes_device(&self) -> bool {
        self.core.hmem
    }

    /// Every rail offers `FI_HMEM` (whether or not a registration failed since).
    pub fn hmem_offered(&self) -> bool {
        self.core.rails.iter().all(|r| r.limits().hmem)
    }

    /// Queues a message of the communicator's direction, which may be device memory (a region
    /// with a device address): where `takes_device`, one longer than the largest eager message
    /// is registered as device memory now (its writes or reads then go straight from or to it),
    /// a shorter one is copied through its `StagedMemory` (into a send buffer, or out of a
    /// bounce buffer). Device memory is given back (`Some`) for the caller to stage when
    /// `!takes_device`, or when registering it fails (logged; device memory of this communicator
    /// is given back from then on). Staged memory without a device address is refused.
    pub fn post_device(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<Option<Msg>> {
        self.report_deferred(done);
        let device = m.region.device_addr().is_some();
        if m.region.staging().is_some() && !device {
            return Err(Error::invalid("device memory without a host address cannot go over libfabric"));
        }
        if device && !self.core.hmem {
            return Ok(Some(m));
        }
        if m.region.len() as u64 > self.max_message() {
            return Err(Error::invalid(format!("message of {} bytes; libfabric takes at most {}", m.region.len(), self.max_message())));
        }
        let pre = if device && m.region.len() > self.core.eager_max {
            match self.core.register(&m.region) {
                Ok(r) => r,
                Err(e) => {
                    crate::log_warn!(
                        "libfabric: registering {} bytes of device memory (FI_HMEM_NEURON) failed: {e}; this communicator stages device memory through host memory from now on",
                        m.region.len()
                    );
                    self.core.hmem = false;
                    return Ok(Some(m));
                }
            }
        } else {
            None
        };
        if !self.core.started {
            self.waiting.push_back((m, pre));
            return Ok(None);
        }
        self.issue(m, pre, done).map(|_| None)
    }

    fn issue(&mut self, m: Msg, pre: Option<RegionMr>, done: &mut Completions<'_>) -> Result<()> {
        match &mut self.side {
            Side::Send(s) => s.issue(&mut self.core, m, pre, done),
            Side::Recv(r) => r.issue(&mut self.core, m, pre, done),
        }
    }

    fn report_deferred(&mut self, done: &mut Completions<'_>) {
        for d in self.deferred.drain(..) {
            done.push(d);
        }
    }

    /// Posts what waited for the provider, then reads every rail's completions and handles
    /// them, until the rails have none (at most `MAX_PASSES` passes) or the message a caller
    /// polls for is in.
    pub fn progress(&mut self, done: &mut Completions<'_>) -> Result<()> {
        self.report_deferred(done);
        if !self.core.started {
            return Ok(());
        }
        if !self.core.hold_acks {
            self.core.send_held()?;
        }
        self.core.flush_all()?;
        let mut cqes = std::mem::take(&mut self.cqes);
        for _ in 0..MAX_PASSES {
            let mut any = false;
            for rail in 0..self.core.nrails {
                cqes.clear();
                self.core.poll(rail, &mut cqes)?;
                any |= !cqes.is_empty();
                for c in cqes.drain(..) {
                    self.completion(rail, c, done)?;
                }
            }
            // The caller's message is in: it returns now (the rest at its next call).
            if !any || done.watched().is_some() {
                break;
            }
        }
        self.cqes = cqes;
        self.core.flush_all()
    }

    fn completion(&mut self, rail: usize, c: Cqe, done: &mut Completions<'_>) -> Result<()> {
        if let Some(e) = &c.err {
            return Err(Error::failure(format!("libfabric rail {rail}: {:?} completion (context {:#x}) failed: {e}", c.kind, c.ctx)));
        }
        let core = &mut self.core;
        match (c.kind, &mut self.side) {
            (CqKind::Recv, side) => {
                let Ctx::Bounce(slot) = Ctx::decode(c.ctx)? else {
                    return Err(Error::failure(format!("receive completion with context {:#x}", c.ctx)));
                };
                core.count(rail, c.len as u64);
                let (t, seq) = untag(c.tag)?;
                match (t, side) {
                    (Type::Eager, Side::Recv(r)) => r.on_eager(core, rail, slot, seq, c.len, done),
                    (Type::Cts, Side::Send(s)) if core.write_mode => {
                        let cts = Cts::parse(core.bounce_bytes(rail, slot, c.len)?)?;
                        core.repost(rail, slot)?;
                        s.on_cts(core, seq, cts, done)
                    }
                    (Type::Ack, Side::Send(s)) => {
                        let a = Ack::parse(core.bounce_bytes(rail, slot, c.len)?)?;
                        core.repost(rail, slot)?;
                        s.on_ack(core, seq, a, done)
                    }
                    (Type::Rts, Side::Recv(r)) => {
                        let rts = Rts::parse(core.bounce_bytes(rail, slot, c.len)?)?;
                        core.repost(rail, slot)?;
                        r.on_rts(core, seq, rts, done)
                    }
                    (Type::Refuse, Side::Recv(r)) if core.write_mode => {
                        let refuse = Refuse::parse(core.bounce_bytes(rail, slot, c.len)?)?;
                        core.repost(rail, slot)?;
                        r.on_refuse(core, seq, refuse, done)
                    }
                    (Type::Size, Side::Recv(r)) if core.write_mode => {
                        let size = Size::parse(core.bounce_bytes(rail, slot, c.len)?)?;
                        core.repost(rail, slot)?;
                        r.on_size(core, seq, size, done)
                    }
                    (t, _) => Err(Error::failure(format!("unexpected {t:?} message for message {seq} on rail {rail}"))),
                }
            }
            (CqKind::Send, _) => match Ctx::decode(c.ctx)? {
                Ctx::Slot(slot) => core.slot_done(slot),
                x => Err(Error::failure(format!("send completion with context {x:?}"))),
            },
            (CqKind::Write, Side::Send(s)) => match Ctx::decode(c.ctx)? {
                Ctx::Write(seq) => s.on_write_done(core, seq, done),
                x => Err(Error::failure(format!("write completion with context {x:?}"))),
            },
            (CqKind::Read, Side::Recv(r)) => match Ctx::decode(c.ctx)? {
                Ctx::Read(seq) => r.on_read_done(core, seq, done),
                x => Err(Error::failure(format!("read completion with context {x:?}"))),
            },
            (CqKind::RemoteWrite, Side::Recv(r)) if core.write_mode => r.on_remote_write(core, rail, c.data, c.len, done),
            (k, _) => Err(Error::failure(format!("unexpected {k:?} completion on rail {rail}"))),
        }
    }

    /// A caller's poll: like `progress`, but with `hold` the acknowledgements of the eager
    /// messages it lands are held back (`send_held`); true when some are held.
    pub fn poll(&mut self, hold: bool, done: &mut Completions<'_>) -> Result<bool> {
        self.core.hold_acks = hold;
        let r = self.progress(done);
        self.core.hold_acks = false;
        r.map(|_| self.core.has_held())
    }

    /// Sends the acknowledgements a `poll` held back.
    pub fn send_held(&mut self) -> Result<()> {
        self.core.send_held()
    }

    /// Messages posted and not reported yet.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn in_flight(&self) -> bool {
        !self.waiting.is_empty()
            || !self.deferred.is_empty()
            || match &self.side {
                Side::Send(s) => s.in_flight(),
                Side::Recv(r) => r.in_flight(),
            }
    }

    /// Operations wait for the provider (or payloads for a send buffer): call `progress` again
    /// even when no completion is signalled.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn has_queued_ops(&self) -> bool {
        self.core.has_queued()
    }

    /// The largest message: 2^20 stripes (512 GiB; less where a rail's `max_msg` is below
    /// `STRIPE`).
    pub fn max_message(&self) -> u64 {
        MAX_STRIPES * self.core.stripe
    }

    /// Bytes each rail carried so far (for the caller's debug log).
    pub fn rail_bytes(&self) -> Vec<u64> {
        self.core.rail_bytes()
    }

    /// The rails' completion descriptors, where the provider has them.
    pub fn wait_fds(&self) -> Vec<RawFd> {
        self.core.rails.iter().filter_map(|r| r.wait_fd()).collect()
    }

    /// Protocol state kept besides messages in flight (what arrived before its message was
    /// posted), and live cache entries (tests).
    #[cfg(test)]
    fn leftovers(&self) -> (usize, usize) {
        let early = match &self.side {
            Side::Send(s) => s.leftovers(),
            Side::Recv(r) => r.leftovers(),
        };
        (early, self.core.cache.len())
    }
}

impl Drop for Proto {
    fn drop(&mut self) {
        // The endpoints stop before any registration goes (Core's drop would be too late).
        for r in &mut self.core.rails {
            r.quiesce();
        }
        match &mut self.side {
            Side::Send(s) => s.release_all(&mut self.core),
            Side::Recv(r) => r.release_all(&mut self.core),
        }
        for (_, pre) in std::mem::take(&mut self.waiting) {
            self.core.release(pre);
        }
    }
}
