//! The verbs protocol of one communicator over one RC queue pair, data and control alike; the
//! queue pair itself is behind [`Nic`] (`qp.rs` on libibverbs; an in-memory pair in the tests).
//!
//! - **Eager** (messages up to `EAGER_MAX`): the sender copies the bytes into one of its
//!   registered send slots and SENDs them with immediate data = seq into a receive buffer the
//!   receiver keeps posted. The receiver copies them into its receive (when it is posted, or once
//!   it is) and answers Ack OK, or Ack TOO_LONG when its receive is shorter (both fail); the send
//!   completes on that Ack.
//! - **Rendezvous** (longer messages): a receive of more than `EAGER_MAX` bytes is registered and
//!   announced at once: Cts (seq, address, length, rkey). The sender, holding the matching send,
//!   RDMA-writes its bytes straight into it; the last write carries immediate data = seq, so the
//!   receiver learns completion from its own queue, and the sender's completion of that write
//!   means the peer's NIC has every byte. A message longer than one write may be (the device's
//!   `max_msg_sz`, or `NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE`) goes as several writes, after a
//!   Size record naming its length. So does one whose memory, on either side, is registered in
//!   several parts (longer than one registration may be: `max_mr_size`, or
//!   `NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_REGISTRATION`): no write crosses a part of either side,
//!   and the receiver's Cts comes as one record per part. A send that finds no Cts sends Rts
//!   (seq, length): the receive it pairs with, if it is short (no Cts of its own), answers Ack
//!   TOO_LONG. A receive shorter than the send it gets a Cts from is refused by the sender
//!   (Refuse): both fail.
//! - **Control** (Cts, Ack, Rts, Refuse, Size) travels as SENDs without immediate data, a batch
//!   of records per SEND (`ctrl.rs`), from the same send slots.
//! - **Credits**: each side keeps `RECV_DEPTH` receive requests posted; every SEND and every
//!   write with immediate data takes one of the peer's. A side may take as many as the peer has
//!   posted and not yet reported taken back: each control batch carries its sender's count of
//!   receive requests posted again (`freed`). One credit is kept for a batch that only returns
//!   credits, sent when half the queue has been taken back unreported, so two sides out of
//!   credits always get going again, and the receive queue never runs dry (no RNR waits).

use super::ctrl::{self, Rec};
use crate::status::{Error, Result};
use crate::tensor::Region;
use crate::transport::{Completions, Done, Kind, Msg, send_verdict, short_receive};
use crate::wire::ack;
use std::collections::VecDeque;
use std::sync::Arc;

/// Messages up to this size go eagerly (copied on each side, no registration).
pub const EAGER_MAX: usize = 4096;
/// Receive requests each side keeps posted (the peer's credits).
pub const RECV_DEPTH: usize = 128;
/// Send slots (registered, `EAGER_MAX` each) for eager messages and control batches.
pub const SEND_SLOTS: usize = 32;
/// Send work requests in the queue at once.
pub const SEND_DEPTH: usize = 512;
/// A send work request in this many is signaled at least (its completion stands for the
/// unsignaled ones before it).
const SIGNAL_EVERY: u32 = 16;
/// A control batch's size (it lands in a receive buffer of either side).
const CTRL_BUF: usize = 1024;
/// The sending side's receive buffers take only control batches.
const SEND_SIDE_BUF: usize = CTRL_BUF;

/// Work request ids: receives carry their buffer's index, sends a tag and their slot or seq.
const RECV_TAG: u64 = 1 << 63;
const CTRL_TAG: u64 = 1 << 62;
const EAGER_TAG: u64 = 1 << 61;
const PIECE_TAG: u64 = 1 << 60;
const ID_MASK: u64 = (1 << 60) - 1;

/// A registration's keys; the registration lasts while `hold` lives.
pub struct Keys {
    pub lkey: u32,
    pub _hold: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// One registration of a message's memory: `len` bytes from `addr`.
pub struct Part {
    pub addr: u64,
    pub len: u64,
    pub lkey: u32,
    pub rkey: u32,
}

/// A message's memory as registered: consecutive parts covering it from its first byte (one,
/// unless it is longer than one registration may be); they last while `hold` lives.
pub struct Reg {
    pub parts: Vec<Part>,
    pub _hold: Vec<Arc<dyn std::any::Any + Send + Sync>>,
}

pub enum Op {
    /// A SEND, with immediate data or without.
    Send { imm: Option<u32> },
    /// An RDMA write to the peer's `addr` (`rkey`), with immediate data or without.
    Write { addr: u64, rkey: u32, imm: Option<u32> },
}

/// One send work request: `len` bytes at `addr` (`lkey`). Unsignaled ones make no completion of
/// their own (a later signaled one stands for them: a queue completes in order); inline ones
/// carry their bytes in the work request.
pub struct SendWr {
    pub id: u64,
    pub op: Op,
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
    pub signaled: bool,
    pub inline: bool,
}

/// One receive work request: a buffer of `len` bytes at `addr` (`lkey`).
pub struct RecvWr {
    pub id: u64,
    pub addr: u64,
    pub len: u32,
    pub lkey: u32,
}

/// A work completion.
#[derive(Debug)]
pub enum Wc {
    /// A send work request is done (for a write: the peer's NIC has its bytes).
    Sent { id: u64 },
    /// A SEND landed in receive `id`: `len` bytes, with its immediate data if it had some.
    Recv { id: u64, len: u32, imm: Option<u32> },
    /// A write with immediate data consumed receive `id` (`len`: that write's bytes).
    Written { id: u64, len: u32, imm: u32 },
    /// A work request failed (the queue pair is in error: the communicator cannot go on).
    Failed { id: u64, what: String },
}

/// The queue pair, as the protocol uses it.
pub trait Nic: Send {
    /// Registers a message's memory for local access and remote writes.
    fn register(&mut self, region: &Region) -> Result<Reg>;
    /// Registers memory of the protocol's own (its buffers), for as long as the keys live.
    fn register_raw(&mut self, ptr: *mut u8, len: usize) -> Result<Keys>;
    fn post_send(&mut self, wr: &SendWr) -> Result<()>;
    fn post_recv(&mut self, wr: &RecvWr) -> Result<()>;
    /// Appends the completions there are now.
    fn poll(&mut self, out: &mut Vec<Wc>) -> Result<()>;
    /// The longest one RDMA write may be.
    fn max_write(&self) -> u64;
    /// The most bytes a SEND may carry inline.
    fn max_inline(&self) -> u32;
}

/// A send, waiting for its Cts or being written.
struct SendItem {
    seq: u64,
    m: Msg,
    keys: Option<Reg>,
    /// Rts sent; the writes it goes as, counted once its Cts is complete (0 before; a Size
    /// record went then if more than one); bytes written so far (posted).
    rts: bool,
    writes: u64,
    written: u64,
    /// Where `written` falls: the local part and the receive's part it is in, and the message's
    /// offset where each begins.
    at: Cursor,
}

/// A receive's Cts: its parts (address, length, rkey), and whether the last has come.
struct CtsItem {
    seq: u64,
    parts: Vec<(u64, u64, u32)>,
    cap: u64,
    complete: bool,
}

/// A receive announced in more parts than this is refused (a forged peer's records stay bounded).
const MAX_CTS_PARTS: usize = 1 << 20;

/// A message's position in its local parts and its receive's parts (`next_piece`).
#[derive(Clone, Copy, Default)]
struct Cursor {
    local: usize,
    local_at: u64,
    remote: usize,
    remote_at: u64,
}

/// The next write of a message of `len` bytes from offset `off` (`at` where `off` falls, moved
/// on past the write): its length, at most `w` and within one part on either side; the local
/// address and lkey, the remote address and rkey.
fn next_piece(local: &[Part], remote: &[(u64, u64, u32)], len: u64, off: u64, w: u64, at: &mut Cursor) -> (u64, u64, u32, u64, u32) {
    while at.local + 1 < local.len() && off >= at.local_at + local[at.local].len {
        at.local_at += local[at.local].len;
        at.local += 1;
    }
    while at.remote + 1 < remote.len() && off >= at.remote_at + remote[at.remote].1 {
        at.remote_at += remote[at.remote].1;
        at.remote += 1;
    }
    let (l, r) = (&local[at.local], remote[at.remote]);
    let (in_l, in_r) = (off - at.local_at, off - at.remote_at);
    let n = (len - off).min(w).min(l.len - in_l).min(r.1 - in_r);
    (n, l.addr + in_l, l.lkey, r.0 + in_r, r.2)
}

/// How many writes `next_piece` cuts a message of `len` bytes into.
fn count_pieces(local: &[Part], remote: &[(u64, u64, u32)], len: u64, w: u64) -> u64 {
    let (mut at, mut off, mut k) = (Cursor::default(), 0, 0);
    while off < len {
        off += next_piece(local, remote, len, off, w, &mut at).0;
        k += 1;
    }
    k
}

/// A posted receive (its seq, and whether it announced itself with a Cts).
struct RecvItem {
    seq: u64,
    m: Msg,
    _keys: Option<Reg>,
    cts: bool,
}

/// Memory of the protocol's own, registered.
struct Buffers {
    keys: Keys,
    mem: Box<[u8]>,
    size: usize,
}

impl Buffers {
    fn new(nic: &mut impl Nic, n: usize, size: usize) -> Result<Buffers> {
        let mut mem = vec![0u8; n * size].into_boxed_slice();
        let keys = nic.register_raw(mem.as_mut_ptr(), mem.len())?;
        Ok(Buffers { keys, mem, size })
    }
    fn addr(&self, i: usize) -> u64 {
        self.mem[i * self.size..].as_ptr() as u64
    }
    fn slot(&self, i: usize) -> &[u8] {
        &self.mem[i * self.size..(i + 1) * self.size]
    }
    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.mem[i * self.size..(i + 1) * self.size]
    }
}

pub struct Proto<N: Nic> {
    nic: N,
    kind: Kind,
    /// The queue pair reached the peer's (RTS): nothing is posted to send before.
    connected: bool,
    next_seq: u64,
    /// This side's receive buffers (posted), and its send slots (free ones listed).
    rbuf: Buffers,
    sbuf: Buffers,
    sfree: Vec<usize>,
    /// Control records to send, in order.
    ctrl_out: VecDeque<Rec>,
    /// Credits: peer receive requests taken (sent), and given back as the peer last reported;
    /// this side's receive requests posted again, and as last reported to the peer (mod 2^32).
    sent: u32,
    peer_freed: u32,
    freed: u32,
    reported: u32,
    /// Send work requests in the queue (their ids, in order), and those posted unsignaled since
    /// the last signaled one.
    sq: VecDeque<u64>,
    unsignaled: u32,
    /// Write pieces (but the last of a message) posted so far.
    pieces: u32,
    /// Sender: sends in order, the first maybe partly written; Cts that arrived (by seq); the seq
    /// of the next send to go (every one below went or failed).
    waiting: VecDeque<SendItem>,
    cts: VecDeque<CtsItem>,
    next_issue: u64,
    /// Sender: written sends until their last write completes; eager sends waiting for their Ack
    /// (seq, the message's number, length).
    in_flight: VecDeque<SendItem>,
    verdicts: VecDeque<(u64, u64, u64)>,
    /// Receiver: posted receives not done; eager messages that came before their receive (seq,
    /// buffer, length); Rts for receives not posted yet (seq, length); Size records (seq, length).
    recvs: VecDeque<RecvItem>,
    unexpected: VecDeque<(u64, usize, usize)>,
    rts: VecDeque<(u64, u64)>,
    sizes: VecDeque<(u64, u64)>,
    wcs: Vec<Wc>,
    recs: Vec<Rec>,
    /// Messages that went as several writes, and their writes; messages whose memory on this
    /// side was registered in several parts (the log).
    pub multi_messages: u64,
    pub multi_writes: u64,
    pub parted: u64,
}

fn proto_err(what: String) -> Error {
    Error::failure(format!("verbs protocol: {what}"))
}

impl<N: Nic> Proto<N> {
    /// Registers the buffers and posts every receive request (before the peer learns the queue
    /// pair's address, so its first message finds them).
    pub fn new(mut nic: N, kind: Kind) -> Result<Proto<N>> {
        let rsize = if kind == Kind::Recv { EAGER_MAX } else { SEND_SIDE_BUF };
        let rbuf = Buffers::new(&mut nic, RECV_DEPTH, rsize)?;
        let sbuf = Buffers::new(&mut nic, SEND_SLOTS, EAGER_MAX)?;
        let mut p = Proto {
            nic,
            kind,
            connected: false,
            next_seq: 0,
            rbuf,
            sbuf,
            sfree: (0..SEND_SLOTS).rev().collect(),
            ctrl_out: VecDeque::new(),
            sent: 0,
            peer_freed: 0,
            freed: 0,
            reported: 0,
            sq: VecDeque::with_capacity(SEND_DEPTH),
            unsignaled: 0,
            pieces: 0,
            waiting: VecDeque::new(),
            cts: VecDeque::new(),
            next_issue: 0,
            in_flight: VecDeque::new(),
            verdicts: VecDeque::new(),
            recvs: VecDeque::new(),
            unexpected: VecDeque::new(),
            rts: VecDeque::new(),
            sizes: VecDeque::new(),
            wcs: Vec::with_capacity(32),
            recs: Vec::new(),
            multi_messages: 0,
            multi_writes: 0,
            parted: 0,
        };
        for i in 0..RECV_DEPTH {
            p.post_recv(i)?;
        }
        Ok(p)
    }

    pub fn nic(&self) -> &N {
        &self.nic
    }

    pub fn nic_mut(&mut self) -> &mut N {
        &mut self.nic
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The queue pair is ready to send (the peer's receive requests are posted).
    pub fn start(&mut self, done: &mut Completions<'_>) -> Result<()> {
        self.connected = true;
        self.issue(done)?;
        self.flush_ctrl()
    }

    fn post_recv(&mut self, i: usize) -> Result<()> {
        let wr = RecvWr { id: RECV_TAG | i as u64, addr: self.rbuf.addr(i), len: self.rbuf.size as u32, lkey: self.rbuf.keys.lkey };
        self.nic.post_recv(&wr)
    }

    /// Gives receive buffer `i` back to the NIC: one credit for the peer (reported later).
    fn repost(&mut self, i: usize) -> Result<()> {
        self.post_recv(i)?;
        self.freed = self.freed.wrapping_add(1);
        Ok(())
    }

    /// Posts a send work request, signaled when it must be (`must`: its completion matters at
    /// once), every `SIGNAL_EVERY`, or when send slots or queue entries run low.
    fn send(&mut self, id: u64, op: Op, addr: u64, len: u32, lkey: u32, must: bool) -> Result<()> {
        let signaled = must || self.unsignaled + 1 >= SIGNAL_EVERY || self.sfree.len() < 4 || self.sq.len() + 8 >= SEND_DEPTH;
        let inline = matches!(op, Op::Send { .. }) && len > 0 && len <= self.nic.max_inline();
        self.nic.post_send(&SendWr { id, op, addr, len, lkey, signaled, inline })?;
        self.sq.push_back(id);
        self.unsignaled = if signaled { 0 } else { self.unsignaled + 1 };
        Ok(())
    }

    /// The peer's receive requests this side may still take.
    fn credits(&self) -> u32 {
        (RECV_DEPTH as u32).saturating_sub(self.sent.wrapping_sub(self.peer_freed))
    }

    /// Room for a message that takes one of the peer's receive requests (one credit stays for a
    /// batch that only returns credits).
    fn can_take(&self) -> bool {
        self.credits() >= 2 && self.sq.len() < SEND_DEPTH
    }

    pub fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let len = m.region.len();
        match self.kind {
            Kind::Send => {
                let keys = if len > EAGER_MAX { Some(self.nic.register(&m.region)?) } else { None };
                self.parted += keys.as_ref().is_some_and(|k| k.parts.len() > 1) as u64;
                self.waiting.push_back(SendItem { seq, m, keys, rts: false, writes: 0, written: 0, at: Cursor::default() });
                self.issue(done)?;
            }
            Kind::Recv => {
                let rts = self.rts.iter().position(|r| r.0 == seq).and_then(|p| self.rts.remove(p));
                if let Some(pos) = self.unexpected.iter().position(|u| u.0 == seq) {
                    let (_, i, n) = self.unexpected.remove(pos).expect("position is in range");
                    self.deliver(seq, &m, i, n, done)?;
                } else if len > EAGER_MAX {
                    let k = self.nic.register(&m.region)?;
                    let n = k.parts.len();
                    self.parted += (n > 1) as u64;
                    for (i, p) in k.parts.iter().enumerate() {
                        self.ctrl_out.push_back(Rec::Cts { seq, addr: p.addr, len: p.len, rkey: p.rkey, more: i + 1 < n });
                    }
                    self.recvs.push_back(RecvItem { seq, m, _keys: Some(k), cts: true });
                } else if let Some((_, sent)) = rts {
                    // The send waits for a Cts that a receive this short never sends.
                    done.push(Done::Failed { seq: m.seq, err: short_receive(len as u64, sent) });
                    self.ctrl_out.push_back(Rec::Ack { seq, status: ctrl::TOO_LONG, size: 0 });
                } else {
                    self.recvs.push_back(RecvItem { seq, m, _keys: None, cts: false });
                }
            }
        }
        self.flush_ctrl()
    }

    /// Sender: posts what can go, in order: eager messages, the writes of those that have their
    /// Cts, an Rts for the first that has none.
    fn issue(&mut self, done: &mut Completions<'_>) -> Result<()> {
        while self.connected {
            while self.cts.front().is_some_and(|c| c.seq < self.next_issue) {
                self.cts.pop_front(); // its message went eagerly
            }
            let Some(front) = self.waiting.front_mut() else { break };
            let (seq, len) = (front.seq, front.m.region.len() as u64);
            if len <= EAGER_MAX as u64 {
                if !self.can_take() || self.sfree.is_empty() {
                    break;
                }
                let item = self.waiting.pop_front().expect("front exists");
                self.next_issue = seq + 1;
                let i = self.sfree.pop().expect("checked");
                if len > 0 {
                    // SAFETY: the region is `len` <= EAGER_MAX readable bytes kept alive by
                    // `item`; the slot is ours and free.
                    let src = unsafe { std::slice::from_raw_parts(item.m.region.ptr(), len as usize) };
                    self.sbuf.slot_mut(i)[..len as usize].copy_from_slice(src);
                }
                let (addr, lkey) = (self.sbuf.addr(i), self.sbuf.keys.lkey);
                if let Err(e) = self.send(EAGER_TAG | i as u64, Op::Send { imm: Some(seq as u32) }, addr, len as u32, lkey, false) {
                    self.sfree.push(i);
                    return Err(e);
                }
                self.sent = self.sent.wrapping_add(1);
                self.verdicts.push_back((seq, item.m.seq, len));
                continue;
            }
            let Some(cap) = self.cts.front().filter(|c| c.seq == seq && c.complete).map(|c| c.cap) else {
                if !front.rts {
                    front.rts = true;
                    self.ctrl_out.push_back(Rec::Rts { seq, len });
                }
                break;
            };
            if len > cap {
                let item = self.waiting.pop_front().expect("front exists");
                self.cts.pop_front();
                self.next_issue = seq + 1;
                let err = Error::failure(format!("the peer's matching receive of {cap} bytes is shorter than this send of {len} bytes"));
                done.push(Done::Failed { seq: item.m.seq, err });
                self.ctrl_out.push_back(Rec::Refuse { seq, len });
                continue;
            }
            let w = self.nic.max_write().max(1);
            if front.writes == 0 {
                let local = &front.keys.as_ref().expect("a message above EAGER_MAX is registered").parts;
                let remote = &self.cts.front().expect("checked").parts;
                let writes = if local.len() == 1 && remote.len() == 1 { len.div_ceil(w) } else { count_pieces(local, remote, len, w) };
                front.writes = writes;
                if writes > 1 {
                    // The Size record goes before the writes (one queue pair keeps their order).
                    self.ctrl_out.push_back(Rec::Size { seq, len, writes });
                }
            }
            let writes = front.writes;
            if writes > 1 {
                self.flush_ctrl()?;
                if !self.ctrl_out.is_empty() {
                    break;
                }
            }
            let credit = self.credits() >= 2;
            // Out of their queues while this loop posts (put back unless the message is done).
            let mut item = self.waiting.pop_front().expect("still there");
            let c = self.cts.pop_front().expect("checked");
            let mut finished = false;
            let mut res = Ok(());
            {
                let local = &item.keys.as_ref().expect("registered").parts;
                while self.sq.len() < SEND_DEPTH {
                    let (n, laddr, lkey, raddr, rkey) = next_piece(local, &c.parts, len, item.written, w, &mut item.at);
                    let last = item.written + n == len;
                    if last && !credit {
                        break;
                    }
                    // A piece's id is its own number (ids of requests in the queue differ).
                    self.pieces = self.pieces.wrapping_add(1);
                    let (id, imm) = if last { (seq, Some(seq as u32)) } else { (PIECE_TAG | self.pieces as u64, None) };
                    if let Err(e) = self.send(id, Op::Write { addr: raddr, rkey, imm }, laddr, n as u32, lkey, last) {
                        res = Err(e);
                        break;
                    }
                    item.written += n;
                    if last {
                        self.sent = self.sent.wrapping_add(1);
                        finished = true;
                        break;
                    }
                }
            }
            if !finished {
                self.waiting.push_front(item);
                self.cts.push_front(c);
                res?;
                break;
            }
            self.next_issue = seq + 1;
            self.in_flight.push_back(item);
            if writes > 1 {
                self.multi_messages += 1;
                self.multi_writes += writes;
            }
        }
        Ok(())
    }

    /// Receiver: eager message `seq` (`n` bytes in receive buffer `i`) into its receive, the
    /// verdict to the sender, the buffer back to the NIC.
    fn deliver(&mut self, seq: u64, m: &Msg, i: usize, n: usize, done: &mut Completions<'_>) -> Result<()> {
        let cap = m.region.len();
        if n > cap {
            done.push(Done::Failed { seq: m.seq, err: short_receive(cap as u64, n as u64) });
            self.ctrl_out.push_back(Rec::Ack { seq, status: ctrl::TOO_LONG, size: 0 });
        } else {
            if n > 0 {
                // SAFETY: the receive's region is mapped for cap >= n bytes and kept alive by
                // its request; the buffer holds the n bytes received.
                unsafe { std::ptr::copy_nonoverlapping(self.rbuf.slot(i).as_ptr(), m.region.ptr(), n) };
            }
            done.push(Done::Ok { seq: m.seq, bytes: n as u64 });
            self.ctrl_out.push_back(Rec::Ack { seq, status: ctrl::OK, size: n as u64 });
        }
        self.repost(i)
    }

    /// Sends the queued control records, a batch per SEND, as far as credits and slots allow;
    /// then, when half the receive queue has been taken back unreported, a batch that only
    /// returns credits.
    fn flush_ctrl(&mut self) -> Result<()> {
        if !self.connected {
            return Ok(());
        }
        let per = ctrl::capacity(CTRL_BUF);
        loop {
            let credit_only = self.ctrl_out.is_empty();
            if credit_only && (self.freed.wrapping_sub(self.reported) as usize) < RECV_DEPTH / 2 {
                return Ok(());
            }
            let room = if credit_only { self.credits() >= 1 && self.sq.len() < SEND_DEPTH } else { self.can_take() };
            if !room || self.sfree.is_empty() {
                return Ok(());
            }
            let n = self.ctrl_out.len().min(per);
            self.recs.clear();
            self.recs.extend(self.ctrl_out.drain(..n));
            let i = self.sfree.pop().expect("checked");
            let len = ctrl::encode(self.sbuf.slot_mut(i), self.freed, &self.recs);
            let (addr, lkey) = (self.sbuf.addr(i), self.sbuf.keys.lkey);
            if let Err(e) = self.send(CTRL_TAG | i as u64, Op::Send { imm: None }, addr, len as u32, lkey, false) {
                self.sfree.push(i);
                return Err(e);
            }
            self.sent = self.sent.wrapping_add(1);
            self.reported = self.freed;
            if credit_only {
                return Ok(());
            }
        }
    }

    /// Handles every completion there is, then sends what they made possible.
    pub fn poll(&mut self, done: &mut Completions<'_>) -> Result<()> {
        let mut wcs = std::mem::take(&mut self.wcs);
        let r = (|| {
            loop {
                wcs.clear();
                self.nic.poll(&mut wcs)?;
                if wcs.is_empty() {
                    return Ok(());
                }
                for wc in wcs.drain(..) {
                    self.completion(wc, done)?;
                }
            }
        })();
        self.wcs = wcs;
        r?;
        self.issue(done)?;
        self.flush_ctrl()
    }

    fn completion(&mut self, wc: Wc, done: &mut Completions<'_>) -> Result<()> {
        match wc {
            Wc::Failed { id, what } => {
                let on = match id {
                    id if id & RECV_TAG != 0 => "a receive request".to_string(),
                    id if id & (CTRL_TAG | EAGER_TAG) != 0 => "a send slot".to_string(),
                    id if id & PIECE_TAG != 0 => "an RDMA write".to_string(),
                    id => format!("message {}", id & ID_MASK),
                };
                Err(Error::failure(format!("RDMA completion error: {what} on {on}")))
            }
            Wc::Sent { id } => {
                // It completes every unsignaled request before it too.
                if !self.sq.contains(&id) {
                    return Err(proto_err(format!("completion of unknown send request {id:#x}")));
                }
                while let Some(done_id) = self.sq.pop_front() {
                    self.sent_done(done_id, done)?;
                    if done_id == id {
                        break;
                    }
                }
                Ok(())
            }
            Wc::Recv { id, len, imm } => {
                let i = (id & ID_MASK) as usize;
                if id & RECV_TAG == 0 || i >= RECV_DEPTH || len as usize > self.rbuf.size {
                    return Err(proto_err(format!("bad receive completion (wr {id:#x}, {len} bytes)")));
                }
                match imm {
                    Some(imm) => self.on_eager(i, len as usize, imm, done),
                    None => self.on_ctrl(i, len as usize, done),
                }
            }
            Wc::Written { id, len, imm } => {
                let i = (id & ID_MASK) as usize;
                if self.kind != Kind::Recv || id & RECV_TAG == 0 || i >= RECV_DEPTH {
                    return Err(proto_err(format!("unexpected RDMA write completion (wr {id:#x})")));
                }
                self.repost(i)?;
                let pos = self
                    .recvs
                    .iter()
                    .position(|r| r.cts && r.seq as u32 == imm)
                    .ok_or_else(|| proto_err(format!("data for unknown message {imm}")))?;
                let r = self.recvs.remove(pos).expect("position is in range");
                let bytes = match self.sizes.iter().position(|s| s.0 == r.seq) {
                    Some(p) => self.sizes.remove(p).expect("position is in range").1,
                    None => len as u64,
                };
                if bytes > r.m.region.len() as u64 {
                    return Err(proto_err(format!("message {} wrote {bytes} bytes into a receive of {}", r.seq, r.m.region.len())));
                }
                done.push(Done::Ok { seq: r.m.seq, bytes });
                Ok(())
            }
        }
    }

    /// Send request `id` is done: its slot is free again, or its message (a write's last) is
    /// with the peer.
    fn sent_done(&mut self, id: u64, done: &mut Completions<'_>) -> Result<()> {
        if id & (CTRL_TAG | EAGER_TAG) != 0 {
            self.sfree.push((id & ID_MASK) as usize);
        } else if id & PIECE_TAG == 0 {
            let item = self.in_flight.pop_front().ok_or_else(|| proto_err("write completion with nothing in flight".into()))?;
            if item.seq != id {
                return Err(proto_err(format!("write completion for {id} while {} was first", item.seq)));
            }
            done.push(Done::Ok { seq: item.m.seq, bytes: item.m.region.len() as u64 });
        }
        Ok(())
    }

    /// Receiver: an eager message in receive buffer `i`.
    fn on_eager(&mut self, i: usize, n: usize, imm: u32, done: &mut Completions<'_>) -> Result<()> {
        if self.kind != Kind::Recv {
            return Err(proto_err("eager data on a send communicator".into()));
        }
        if let Some(pos) = self.recvs.iter().position(|r| r.seq as u32 == imm) {
            let r = self.recvs.remove(pos).expect("position is in range");
            return self.deliver(r.seq, &r.m, i, n, done);
        }
        // Its receive is not posted yet: the sender sends in order, so it is the next one.
        let seq = self.next_seq + self.unexpected.len() as u64;
        if seq as u32 != imm {
            return Err(proto_err(format!("eager message {imm} arrived out of order (expected {seq})")));
        }
        self.unexpected.push_back((seq, i, n));
        Ok(())
    }

    /// A control batch in receive buffer `i`.
    fn on_ctrl(&mut self, i: usize, n: usize, done: &mut Completions<'_>) -> Result<()> {
        let mut recs = std::mem::take(&mut self.recs);
        recs.clear();
        let freed = ctrl::decode(&self.rbuf.slot(i)[..n], &mut recs);
        let r = freed.and_then(|freed| {
            if freed.wrapping_sub(self.peer_freed) > RECV_DEPTH as u32 * 4 {
                return Err(proto_err(format!("the peer reports {freed} receive requests posted again, {} before", self.peer_freed)));
            }
            self.peer_freed = freed;
            self.repost(i)?;
            recs.iter().try_for_each(|r| self.on_rec(*r, done))
        });
        self.recs = recs;
        r
    }

    fn on_rec(&mut self, r: Rec, done: &mut Completions<'_>) -> Result<()> {
        match (self.kind, r) {
            (Kind::Send, Rec::Cts { seq, addr, len, rkey, more }) => {
                if seq < self.next_issue {
                    return Ok(()); // its message went eagerly
                }
                if len == 0 {
                    return Err(proto_err(format!("clear-to-send for message {seq} with an empty part")));
                }
                match self.cts.back_mut() {
                    // The next part of a receive announced in several.
                    Some(c) if c.seq == seq && !c.complete => {
                        if c.parts.len() >= MAX_CTS_PARTS {
                            return Err(proto_err(format!("clear-to-send for message {seq} in more than {MAX_CTS_PARTS} parts")));
                        }
                        c.cap = c
                            .cap
                            .checked_add(len)
                            .ok_or_else(|| proto_err(format!("clear-to-send for message {seq}: length overflows")))?;
                        c.parts.push((addr, len, rkey));
                        c.complete = !more;
                    }
                    Some(c) if c.seq >= seq || !c.complete => {
                        return Err(proto_err(format!("clear-to-send for message {seq} out of order")));
                    }
                    _ => self.cts.push_back(CtsItem { seq, parts: vec![(addr, len, rkey)], cap: len, complete: !more }),
                }
                Ok(())
            }
            (Kind::Send, Rec::Ack { seq, status, size }) => {
                let status = if status == ctrl::OK { ack::OK } else { ack::TOO_LONG };
                if let Some(pos) = self.verdicts.iter().position(|v| v.0 == seq) {
                    let (_, id, len) = self.verdicts.remove(pos).expect("position is in range");
                    done.push(send_verdict(id, len, status, size)?);
                    return Ok(());
                }
                // The answer to an Rts: the receive is shorter.
                match self.waiting.front() {
                    Some(f) if f.seq == seq && f.rts && status == ack::TOO_LONG => {
                        let item = self.waiting.pop_front().expect("front exists");
                        self.next_issue = seq + 1;
                        let len = item.m.region.len();
                        let err = Error::failure(format!("the peer's matching receive is shorter than this send of {len} bytes"));
                        done.push(Done::Failed { seq: item.m.seq, err });
                        Ok(())
                    }
                    _ => Err(proto_err(format!("acknowledgement for unknown message {seq}"))),
                }
            }
            (Kind::Recv, Rec::Rts { seq, len }) => {
                match self.recvs.iter().position(|r| r.seq == seq) {
                    // Its Cts is on the way.
                    Some(pos) if self.recvs[pos].cts => {}
                    Some(pos) => {
                        let r = self.recvs.remove(pos).expect("position is in range");
                        done.push(Done::Failed { seq: r.m.seq, err: short_receive(r.m.region.len() as u64, len) });
                        self.ctrl_out.push_back(Rec::Ack { seq, status: ctrl::TOO_LONG, size: 0 });
                    }
                    None if seq >= self.next_seq && self.rts.len() < RECV_DEPTH * 4 => self.rts.push_back((seq, len)),
                    None => return Err(proto_err(format!("request to send for unknown message {seq}"))),
                }
                Ok(())
            }
            (Kind::Recv, Rec::Refuse { seq, len }) => {
                let pos = self
                    .recvs
                    .iter()
                    .position(|r| r.seq == seq && r.cts)
                    .ok_or_else(|| proto_err(format!("refusal for unknown message {seq}")))?;
                let r = self.recvs.remove(pos).expect("position is in range");
                done.push(Done::Failed { seq: r.m.seq, err: short_receive(r.m.region.len() as u64, len) });
                Ok(())
            }
            (Kind::Recv, Rec::Size { seq, len, .. }) => {
                if !self.recvs.iter().any(|r| r.seq == seq && r.cts) || self.sizes.len() >= RECV_DEPTH * 4 {
                    return Err(proto_err(format!("size for unknown message {seq}")));
                }
                self.sizes.push_back((seq, len));
                Ok(())
            }
            (k, r) => Err(proto_err(format!("control record {r:?} on a {k:?} communicator"))),
        }
    }
}
