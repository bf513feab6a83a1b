//! One end of a communicator's shared-memory channel: the rings of descriptors and
//! acknowledgements (the protocol is described in `shm/mod.rs`).

use super::channel::{
    CHANNEL_SIZE, Channel, DESC, Desc, F_INLINE, F_MEMFD, F_STAGE, INLINE, INLINE_HEAD, MAGIC, OFF_ACK_TAIL, OFF_RX_SPIN, OFF_SEND_TAIL,
    OFF_WAKE, RING, attach,
};
use super::maps::{MapCache, Wanted};
use super::stage::{STAGE_ALWAYS_MAX, StageBuf, StagePool, Staged};
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::memfd::{Mapping, memfd, my_pid};
use crate::sys::stamp::{stamp_clock, stamp_now};
use crate::sys::vm::vm_read;
use crate::transport::Kind;
use crate::transport::{Completions, Done, Msg, send_verdict, short_receive};
use crate::wire::{Frame, MAX_MESSAGE, ack};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

/// A receiver that polled this recently needs no Wake frame.
const SPIN_NS: u64 = 20_000;
// (The receiver stamps at most every SPIN_NS / 4, so the sender mostly reads the stamp from its own
// cache; the sender skips the Wake while the stamp is younger than 2 x SPIN_NS.)
/// A sender waiting for acknowledgements checks every this many polls whether a receiver that
/// was polling when the descriptors went out has stopped without taking them (then it wakes it).
const RECHECK_POLLS: u32 = 64;
pub(super) struct ShmIo {
    kind: Kind,
    /// Set-up fails instead of falling back (NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm).
    required: bool,
    /// Control frames for stream 0.
    pub out: Vec<Frame>,
    /// Requests posted before the channel was ready (replayed on it, or on TCP after a fallback).
    queued: VecDeque<Msg>,
    chan: Option<Channel>,
    active: bool,
    token: u64,
    peer_pid: u32,
    /// Receiver: we may read the sender's memory with `process_vm_readv` (else it stages).
    vm_readv: bool,
    /// Sender: the receiver may not read our memory: stage what is not in a memfd.
    stage: bool,
    /// Sender: the staging ring of small messages (RING x STAGE_ALWAYS_MAX), made at first use,
    /// and its free slots (a stack: the most recently freed on top).
    stage_ring: Option<StageBuf>,
    stage_slots: Vec<u16>,
    /// Sender: making the ring was tried (a failure is logged once).
    stage_ring_tried: bool,
    /// Sender: staging memfds free for reuse.
    stage_free: StagePool,
    /// Sender: messages staged so far (read by tests).
    pub staged_msgs: u64,
    /// Send side: descriptors in the ring awaiting their acknowledgement (with the staging
    /// memfd the message was copied to, if any), and those that found the ring full.
    in_flight: VecDeque<(u64, Msg, Staged)>,
    backlog: VecDeque<Msg>,
    /// Receive side: posted receives in order.
    slots: VecDeque<Msg>,
    maps: MapCache,
    last_spin: u64,
    spin_polls: u32,
    /// Sender: polls that found no new acknowledgement.
    stalled_polls: u32,
    /// Sender: the next message number, and the receiver's consumed count as last read.
    tx_next: u64,
    tx_tail_seen: u64,
    /// Sender: the next acknowledgement expected. Receiver: the next descriptor expected, and
    /// the sender's acknowledgement count as last read.
    ack_next: u64,
    rx_next: u64,
    rx_ack_seen: u64,
}

/// What the caller does after a set-up frame.
pub(super) enum Setup {
    /// Go on (the channel may now be active).
    Ok,
    /// Use TCP instead; these requests were posted meanwhile, in order.
    Fallback(VecDeque<Msg>),
}

impl ShmIo {
    /// The sending side creates the channel and queues its ShmInfo; the receiving side waits.
    pub fn new(kind: Kind, required: bool, vm_readv: bool) -> Result<ShmIo> {
        // The token proves to the receiver that the channel it maps is this connection's.
        let token = crate::sys::random::random_u64()
            .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "shm channel: no random token from the kernel (getrandom)", &e))?;
        let mut io = ShmIo {
            kind,
            required,
            vm_readv,
            stage: false,
            stage_ring: None,
            stage_ring_tried: false,
            stage_slots: (0..RING as u16).rev().collect(),
            stage_free: StagePool::default(),
            staged_msgs: 0,
            out: Vec::new(),
            queued: VecDeque::new(),
            chan: None,
            active: false,
            token,
            peer_pid: 0,
            in_flight: VecDeque::new(),
            backlog: VecDeque::new(),
            slots: VecDeque::new(),
            maps: MapCache::default(),
            last_spin: 0,
            spin_polls: 0,
            stalled_polls: 0,
            tx_next: 0,
            tx_tail_seen: 0,
            ack_next: 0,
            rx_next: 0,
            rx_ack_seen: 0,
        };
        if kind == Kind::Send {
            let err = |what: &str, e: io::Error| Error::io(NRT_STATUS::NRT_RESOURCE, &format!("shm channel: {what}"), &e);
            let fd = memfd("nrt-sr-channel", CHANNEL_SIZE).map_err(|e| err("memfd_create", e))?;
            let map = Mapping::map(fd.as_raw_fd(), CHANNEL_SIZE, true, true).map_err(|e| err("mmap", e))?;
            let ch = Channel { map, fd: Some(fd) };
            ch.word(0).store(MAGIC, Ordering::Relaxed);
            ch.word(8).store(io.token, Ordering::Relaxed);
            ch.word(24).store(stamp_clock().id(), Ordering::Relaxed);
            ch.word(16).store(my_pid() as u64, Ordering::Release);
            io.out.push(Frame::ShmInfo {
                pid: my_pid(),
                fd: ch.fd.as_ref().expect("just set").as_raw_fd() as u32,
                token: io.token,
                addr: ch.map.ptr() as u64,
                size: CHANNEL_SIZE as u64,
            });
            io.chan = Some(ch);
        }
        Ok(io)
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Receiver: the sender named its channel. Maps and checks it; answers ShmReady.
    pub fn on_info(&mut self, pid: u32, fd: u32, token: u64, addr: u64, size: u64) -> Result<Setup> {
        if self.kind != Kind::Recv || self.chan.is_some() {
            return Err(Error::failure("unexpected ShmInfo frame"));
        }
        match attach(pid, fd, token, addr, size, self.vm_readv) {
            Ok((ch, readable)) => {
                crate::log_debug!("shm: channel of pid {pid} (fd {fd}) mapped");
                self.chan = Some(ch);
                self.peer_pid = pid;
                self.active = true;
                self.vm_readv = readable;
                self.slots = std::mem::take(&mut self.queued);
                self.out.push(Frame::ShmReady { status: if readable { ack::OK } else { ack::STAGE } });
                Ok(Setup::Ok)
            }
            Err(e) => {
                self.out.push(Frame::ShmReady { status: ack::REFUSED });
                if self.required {
                    return Err(Error::failure(format!("NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm, but {e}")));
                }
                crate::log_info!("shared memory with pid {pid} is not possible ({e}); using TCP");
                Ok(Setup::Fallback(std::mem::take(&mut self.queued)))
            }
        }
    }

    /// Sender: the receiver's verdict on the channel.
    pub fn on_ready(&mut self, status: u16, done: &mut Completions<'_>) -> Result<Setup> {
        if self.kind != Kind::Send || self.active {
            return Err(Error::failure("unexpected ShmReady frame"));
        }
        if status != ack::OK && status != ack::STAGE {
            if self.required {
                return Err(Error::failure("NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm, but the peer cannot reach this process's memory"));
            }
            crate::log_info!("the peer cannot use shared memory with this process; using TCP");
            self.chan = None;
            return Ok(Setup::Fallback(std::mem::take(&mut self.queued)));
        }
        self.active = true;
        self.stage = status == ack::STAGE;
        crate::log_debug!("shm: the peer mapped the channel (staging: {}); {} queued posts go out", self.stage, self.queued.len());
        let q = std::mem::take(&mut self.queued);
        for m in q {
            self.post(m, done)?;
        }
        Ok(Setup::Ok)
    }

    pub fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        if !self.active {
            self.queued.push_back(m);
            return Ok(());
        }
        match self.kind {
            Kind::Recv => self.slots.push_back(m),
            Kind::Send => {
                if self.backlog.is_empty() && self.ring_space() {
                    if self.push_desc(m, done) {
                        self.doorbell();
                    }
                } else {
                    self.backlog.push_back(m);
                }
            }
        }
        Ok(())
    }

    fn chan(&self) -> &Channel {
        self.chan.as_ref().expect("active channel")
    }

    fn ring_space(&mut self) -> bool {
        if self.tx_next.wrapping_sub(self.tx_tail_seen) < RING as u64 {
            return true;
        }
        // Only when the ring looks full is the receiver's cache line read again.
        self.tx_tail_seen = self.chan().word(OFF_SEND_TAIL).load(Ordering::Acquire);
        self.tx_next.wrapping_sub(self.tx_tail_seen) < RING as u64
    }

    /// Publishes a send's descriptor; false when the send failed instead (no staging memory:
    /// it takes no message number, so the receiver pairs its receive with the next send).
    fn push_desc(&mut self, m: Msg, done: &mut Completions<'_>) -> bool {
        let head = self.tx_next;
        let len = m.region.len();
        let mut d = Desc { seq: 0, len: len as u64, addr: m.region.ptr() as u64, ..Desc::default() };
        let mut staged = Staged::No;
        if len <= INLINE {
            d.flags = F_INLINE;
        } else if let Some(mem) = m.region.memory()
            && let Some(fd) = mem.fd()
        {
            d.flags = F_MEMFD;
            d.mem_fd = fd as u32;
            d.mem_id = mem.id();
            d.mem_len = mem.len() as u64;
            d.mem_off = m.region.ptr() as u64 - mem.base() as u64;
        } else if self.stage || len <= STAGE_ALWAYS_MAX {
            let small = len <= STAGE_ALWAYS_MAX;
            if small && self.stage_ring.is_none() && !self.stage_ring_tried {
                self.stage_ring_tried = true;
                self.stage_ring = StageBuf::new(RING * STAGE_ALWAYS_MAX, false).map(Some).unwrap_or_else(|e| {
                    crate::log_error!(
                        "shm (peer pid {}): cannot make the small-message staging ring ({e}); one memfd per message",
                        self.peer_pid
                    );
                    None
                });
            }
            // Small: the most recently freed slot of the ring (at most RING messages are in
            // flight, each holding one); large: a staging memfd of its own until its Ack.
            // (A slot is always free: a communicator has at most RING requests pending, each
            // holding at most one; without the ring, a memfd of its own.)
            let ring = self.stage_ring.as_ref().filter(|_| small && !self.stage_slots.is_empty());
            let got = match ring {
                Some(r) => {
                    let slot = self.stage_slots.pop().expect("checked above");
                    Ok((r.fd.as_raw_fd(), r.id, r.len(), r.map.ptr(), slot as usize * STAGE_ALWAYS_MAX, Staged::Slot(slot)))
                }
                None => self.stage_free.take(len).map(|b| (b.fd.as_raw_fd(), b.id, b.len(), b.map.ptr(), 0, Staged::Buf(b))),
            };
            let (fd, id, mem_len, base, off, st) = match got {
                Ok(g) => g,
                Err(e) => {
                    // Logged once, by the test_request that reports it.
                    let msg = format!("no staging memory for a send of {len} bytes over shared memory");
                    done.push(Done::Failed { seq: m.seq, err: Error::io(NRT_STATUS::NRT_RESOURCE, &msg, &e) });
                    return false;
                }
            };
            // SAFETY: the region is the send's tensor memory (len bytes, kept alive by the
            // request); `base` is the staging mapping (kept by `st` or the ring), which holds at
            // least off + len bytes, a range that is ours alone until the descriptor is published
            // below and the receiver acknowledges it.
            unsafe { crate::sys::copy::copy(m.region.ptr(), base.add(off), len) };
            staged = st;
            d.flags = F_MEMFD | F_STAGE;
            d.mem_fd = fd as u32;
            d.mem_id = id;
            d.mem_len = mem_len as u64;
            d.mem_off = off as u64;
            self.staged_msgs += 1;
        }
        let ch = self.chan.as_ref().expect("active channel");
        let slot = ch.slot(head);
        // SAFETY: the slot (SLOT bytes inside the channel) is ours until its sequence word says
        // otherwise: the receiver reads a slot only once that word holds the number it expects,
        // and ring_space() checked that the receiver is done with this slot's previous message.
        // The sequence word itself (the first 8 bytes) is only written atomically, below.
        unsafe {
            std::ptr::write_volatile(slot.add(8) as *mut u64, d.len);
            std::ptr::write_volatile(slot.add(16) as *mut u32, d.mem_fd);
            std::ptr::write_volatile(slot.add(20) as *mut u32, d.flags);
            if d.flags == F_INLINE {
                let src = m.region.ptr() as *const u8;
                let first = len.min(INLINE_HEAD);
                std::ptr::copy_nonoverlapping(src, slot.add(24), first);
                if len > first {
                    std::ptr::copy_nonoverlapping(src.add(first), slot.add(DESC), len - first);
                }
            } else {
                std::ptr::write_volatile(slot.add(24) as *mut u64, d.addr);
                std::ptr::write_volatile(slot.add(32) as *mut u64, d.mem_id);
                std::ptr::write_volatile(slot.add(40) as *mut u64, d.mem_off);
                std::ptr::write_volatile(slot.add(48) as *mut u64, d.mem_len);
            }
        }
        // Release: the descriptor's bytes are visible before its sequence word. (No fence for
        // the doorbell: see there.)
        ch.slot_seq(head).store(head + 1, Ordering::Release);
        self.tx_next = head + 1;
        self.in_flight.push_back((head, m, staged));
        true
    }

    /// After publishing descriptors: wake the receiver unless it is polling or already woken.
    fn doorbell(&mut self) {
        let ch = self.chan();
        // No fence between the sequence word's store and this load: read early, the stamp can
        // only look older (stamps grow), which at worst sends a Wake that was not needed. The
        // `wake` swap below is a locked instruction, so the sequence word is visible before it
        // (the receiver does the mirror image: clear `wake`, then read the slot).
        let spin = ch.word(OFF_RX_SPIN).load(Ordering::Relaxed);
        let c = stamp_clock();
        if spin != 0 && stamp_now(c).saturating_sub(spin) < c.ticks(2 * SPIN_NS) {
            return;
        }
        if ch.word(OFF_WAKE).swap(1, Ordering::SeqCst) == 0 {
            self.out.push(Frame::Wake);
        }
    }

    /// Moves whatever can move: acknowledgements (sender), descriptors (receiver).
    pub fn poll(&mut self, done: &mut Completions<'_>) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        match self.kind {
            Kind::Send => self.poll_acks(done),
            Kind::Recv => self.poll_descs(done),
        }
    }

    fn poll_acks(&mut self, done: &mut Completions<'_>) -> Result<()> {
        let ch = self.chan.as_ref().expect("active channel");
        let mut next = self.ack_next;
        let mut freed = Vec::new();
        while !self.in_flight.is_empty() {
            let (w0, w1) = ch.ack_entry(next);
            if w0.load(Ordering::Acquire) != next + 1 {
                break;
            }
            let word = w1.load(Ordering::Relaxed);
            let (status, size) = ((word >> 56) as u16, word & ((1 << 56) - 1));
            let (s, m, staged) = self.in_flight.pop_front().expect("not empty");
            if s != next {
                return Err(Error::failure(format!("shm: acknowledgement for message {next}, expected {s}")));
            }
            // The receiver has copied out of the staging memfd (or refused the message).
            match staged {
                Staged::No => {}
                Staged::Slot(i) => self.stage_slots.push(i),
                Staged::Buf(b) => {
                    self.stage_free.release(&b);
                    freed.push(b);
                }
            }
            done.push(send_verdict(m.seq, m.region.len() as u64, status, size)?);
            next += 1;
        }
        if next != self.ack_next {
            self.ack_next = next;
            ch.word(OFF_ACK_TAIL).store(next, Ordering::Release);
            self.stalled_polls = 0;
        } else if !self.in_flight.is_empty() {
            self.stalled_polls = self.stalled_polls.wrapping_add(1);
            // The doorbell stayed quiet because the receiver was polling; if it has stopped
            // since without taking every descriptor, wake it now (at most one Wake until it
            // looks at the ring again: the doorbell's `wake` flag).
            if self.stalled_polls.is_multiple_of(RECHECK_POLLS) && ch.word(OFF_SEND_TAIL).load(Ordering::Acquire) < self.tx_next {
                self.doorbell();
            }
        }
        for b in freed {
            self.stage_free.keep(b);
        }
        let mut pushed = false;
        while !self.backlog.is_empty() && self.ring_space() {
            let m = self.backlog.pop_front().expect("not empty");
            pushed |= self.push_desc(m, done);
        }
        if pushed {
            self.doorbell();
        }
        Ok(())
    }

    fn poll_descs(&mut self, done: &mut Completions<'_>) -> Result<()> {
        let pid = self.peer_pid;
        let ch = self.chan.as_ref().expect("active channel");
        if self.slots.is_empty() {
            // Nothing to take descriptors into: a Wake's flag stays set (no more Wakes come),
            // and the next receive's post polls the ring.
            return Ok(());
        }
        let wake = ch.word(OFF_WAKE);
        if wake.load(Ordering::Relaxed) != 0 {
            wake.store(0, Ordering::SeqCst);
        }
        let mut tail = self.rx_next;
        while !self.slots.is_empty() {
            if ch.slot_seq(tail).load(Ordering::Acquire) != tail + 1 {
                break;
            }
            // Acknowledgement entries: the sender must have read the one RING messages back.
            if tail.wrapping_sub(self.rx_ack_seen) >= RING as u64 {
                self.rx_ack_seen = ch.word(OFF_ACK_TAIL).load(Ordering::Acquire);
                if tail.wrapping_sub(self.rx_ack_seen) >= RING as u64 {
                    break;
                }
            }
            let slot = ch.slot(tail);
            // SAFETY: the sender completed this descriptor before publishing its sequence word
            // (Release, read with Acquire above) and does not touch the slot again until our
            // tail passes it.
            let (len, fd, flags, addr, mem_id, mem_off, mem_len) = unsafe {
                (
                    std::ptr::read_volatile(slot.add(8) as *const u64),
                    std::ptr::read_volatile(slot.add(16) as *const u32),
                    std::ptr::read_volatile(slot.add(20) as *const u32),
                    std::ptr::read_volatile(slot.add(24) as *const u64),
                    std::ptr::read_volatile(slot.add(32) as *const u64),
                    std::ptr::read_volatile(slot.add(40) as *const u64),
                    std::ptr::read_volatile(slot.add(48) as *const u64),
                )
            };
            let d = Desc { seq: tail, len, mem_fd: fd, flags, addr, mem_id, mem_off, mem_len, _pad: 0 };
            if d.len > MAX_MESSAGE {
                return Err(Error::failure(format!("shm: bad descriptor in slot {tail}")));
            }
            let m = self.slots.pop_front().expect("not empty");
            let cap = m.region.len() as u64;
            let status = if d.len > cap {
                done.push(Done::Failed { seq: m.seq, err: short_receive(cap, d.len) });
                ack::TOO_LONG
            } else {
                let len = d.len as usize;
                let dst = m.region.ptr();
                if len == 0 {
                } else if d.flags & F_INLINE != 0 {
                    if len > INLINE {
                        return Err(Error::failure(format!("shm: inline descriptor of {len} bytes")));
                    }
                    let first = len.min(INLINE_HEAD);
                    // SAFETY: the slot holds the message's first bytes at 24.. and the rest after
                    // the descriptor (len <= INLINE); dst is the posted receive, >= len bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(slot.add(24), dst, first);
                        if len > first {
                            std::ptr::copy_nonoverlapping(slot.add(DESC), dst.add(first), len - first);
                        }
                    }
                } else if d.flags & F_MEMFD != 0 {
                    match d.mem_off.checked_add(d.len) {
                        Some(end) if end <= d.mem_len => {}
                        _ => return Err(Error::failure(format!("shm: descriptor {tail} lies outside its memfd"))),
                    }
                    let base = self
                        .maps
                        .get(pid, &Wanted { mem_id: d.mem_id, mem_fd: d.mem_fd, mem_len: d.mem_len, populate: d.flags & F_STAGE == 0 })?;
                    // SAFETY: the mapping covers mem_len >= mem_off + len bytes (checked; the
                    // memfd is sealed against shrinking); dst holds len bytes; both stay mapped
                    // until the copy returns (large ones use a helper thread: sys/copy.rs).
                    unsafe { crate::sys::copy::copy(base.add(d.mem_off as usize), dst, len) };
                } else if !self.vm_readv {
                    return Err(Error::failure(format!(
                        "shm: descriptor {tail} names the sender's memory, which this process may not read (the sender should have staged it)"
                    )));
                } else {
                    // SAFETY: dst is valid for len bytes of writes (the posted receive).
                    unsafe { vm_read(pid, dst, d.addr, len) }
                        .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("shm: process_vm_readv from pid {pid}"), &e))?;
                }
                done.push(Done::Ok { seq: m.seq, bytes: d.len });
                ack::OK
            };
            let (w0, w1) = ch.ack_entry(tail);
            w1.store((status as u64) << 56 | if status == ack::OK { d.len } else { 0 }, Ordering::Relaxed);
            w0.store(tail + 1, Ordering::Release);
            tail += 1;
            self.rx_next = tail;
            ch.word(OFF_SEND_TAIL).store(tail, Ordering::Release);
        }
        Ok(())
    }

    /// Receiver, from `test_request`: the caller polls a pending receive (`pending`), so no
    /// wake-up is needed for the next 2 x SPIN_NS. When it stops polling, its stamp is left to
    /// run out by itself: clearing it would be a store (with a fence) on a line the sender reads,
    /// a stall right before the caller answers; a sender that posts meanwhile and then waits for
    /// its acknowledgement wakes this side itself once the stamp is stale (`poll_acks`).
    pub fn note_poll(&mut self, pending: bool) {
        if !self.active || self.kind != Kind::Recv || !pending || self.slots.is_empty() {
            return;
        }
        self.spin_polls = self.spin_polls.wrapping_add(1);
        // The clock is read on one poll in 8 (a few hundred ns apart in a tight loop).
        if self.last_spin != 0 && !self.spin_polls.is_multiple_of(8) {
            return;
        }
        let c = stamp_clock();
        let now = stamp_now(c);
        if now.saturating_sub(self.last_spin) > c.ticks(SPIN_NS / 4) {
            // A hint read by the sender's doorbell; no ordering needed (see there).
            self.chan().word(OFF_RX_SPIN).store(now, Ordering::Relaxed);
            self.last_spin = now;
        }
    }
}
