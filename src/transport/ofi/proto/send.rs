//! The sending direction: eager sends (complete on the receiver's acknowledgement), large sends
//! written once their clear-to-send arrives (write mode, announced with a ready-to-send when none
//! is here yet; the writes go with a size message; complete when every write completed and the
//! receiver acknowledged the message, or on its refusal), or announced with a ready-to-send and
//! read by the receiver (read mode, complete on the acknowledgement).

use super::ctrl::{Ack, CTRL_SIZE, Cts, Ctx, MAX_WRITE, Refuse, Rts, Size, Type, cq_data, tag};
use super::mr::RegionMr;
use super::shared::{Core, Op, rma_addr};
use crate::status::{Error, Result};
use crate::transport::{Completions, Msg, send_verdict};
use crate::wire::ack;
use std::collections::{BTreeMap, HashMap};

/// Write mode: where a rail's share of a message starts is rounded down to this (when shares
/// are at least this long), so that writes start on page boundaries of page-aligned memory.
const SHARE_ALIGN: u64 = 4096;

/// Write mode: the writes of a message of `len` bytes, (rail, offset, length) each. The message
/// is cut into one contiguous share per rail used, a rail for every `stripe` bytes (at least
/// one, at most every rail; the first share on rail `first`, the next on the following rail),
/// and each share into writes of at most `max_write` bytes.
pub(super) fn plan_writes(len: u64, first: usize, nrails: usize, stripe: u64, max_write: u64) -> Vec<(usize, u64, u64)> {
    debug_assert!(len > 0 && nrails > 0 && stripe > 0 && max_write > 0);
    let shares = (len / stripe).clamp(1, nrails as u64);
    let align = if stripe >= SHARE_ALIGN { SHARE_ALIGN } else { 1 };
    // Shares are at least `stripe` >= `align` long, so the rounded starts still increase.
    let start = |j: u64| if j == shares { len } else { (j * len / shares) / align * align };
    let mut out = Vec::with_capacity((len.div_ceil(max_write) + shares) as usize);
    for j in 0..shares {
        let rail = (first + j as usize) % nrails;
        let (mut off, end) = (start(j), start(j + 1));
        while off < end {
            let n = max_write.min(end - off);
            out.push((rail, off, n));
            off += n;
        }
    }
    out
}

enum State {
    /// Sent eagerly: waits for the receiver's acknowledgement.
    Eager,
    /// Large, write mode: waits for its clear-to-send (or an acknowledgement TOO_LONG).
    WaitCts,
    /// Large, write mode: `left` writes not completed yet.
    Writing { left: u64, ack: Option<Ack> },
    /// Large, read mode: announced, waits for the receiver's acknowledgement.
    Announced,
}

struct Item {
    m: Msg,
    len: u64,
    state: State,
    mr: Option<RegionMr>,
}

#[derive(Default)]
pub struct Sender {
    items: BTreeMap<u64, Item>,
    /// Clear-to-send that arrived before their send was posted.
    early_cts: HashMap<u64, Cts>,
    /// One past the highest seq posted.
    posted_upto: u64,
}

impl Sender {
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn in_flight(&self) -> bool {
        !self.items.is_empty()
    }

    /// State kept for messages other than those in flight (tests: none once all are done).
    #[cfg(test)]
    pub fn leftovers(&self) -> usize {
        self.early_cts.len()
    }

    /// Takes a send; `pre`: its region's registration, made at post (device memory).
    pub fn issue(&mut self, core: &mut Core, m: Msg, pre: Option<RegionMr>, done: &mut Completions<'_>) -> Result<()> {
        let seq = m.seq;
        let len = m.region.len();
        self.posted_upto = self.posted_upto.max(seq + 1);
        if len <= core.eager_max {
            core.release(pre);
            let rail = seq as usize % core.nrails;
            if let Some(mem) = m.region.staging() {
                // Device memory (Proto::post refuses other staged memory): copied out through
                // the vendor, never read at its device address.
                let mut bytes = vec![0u8; len];
                mem.read(0, &mut bytes)?;
                core.send_tagged(rail, tag(Type::Eager, seq), &bytes)?;
            } else {
                // SAFETY: the region is host memory mapped for `len` bytes while the message is
                // held; an empty one has a dangling, non-null pointer.
                let bytes = unsafe { std::slice::from_raw_parts(m.region.ptr(), len) };
                core.send_tagged(rail, tag(Type::Eager, seq), bytes)?;
            }
            // Its clear-to-send, if the receive was posted first, is not needed.
            self.early_cts.remove(&seq);
            self.items.insert(seq, Item { m, len: len as u64, state: State::Eager, mr: None });
            return Ok(());
        }
        if core.write_mode {
            let item = Item { m, len: len as u64, state: State::WaitCts, mr: pre };
            return match self.early_cts.remove(&seq) {
                Some(cts) => self.cleared(core, item, cts, done),
                None => {
                    // The receiver sends a clear-to-send unasked only for a receive longer than
                    // eager_max: announce the length (no addresses), so that it answers a shorter
                    // receive, or one not posted yet.
                    self.items.insert(seq, item);
                    let mut b = [0u8; CTRL_SIZE];
                    let n = Rts { len: len as u64, rails: Vec::new() }.put(&mut b);
                    core.send_tagged(0, tag(Type::Rts, seq), &b[..n])
                }
            };
        }
        let mr = match pre {
            Some(mr) => mr,
            None => core.register(&m.region)?.ok_or_else(|| Error::failure("large message without memory"))?,
        };
        let rts = Rts { len: len as u64, rails: mr.remote() };
        self.items.insert(seq, Item { m, len: len as u64, state: State::Announced, mr: Some(mr) });
        let mut b = [0u8; CTRL_SIZE];
        let n = rts.put(&mut b);
        core.send_tagged(0, tag(Type::Rts, seq), &b[..n])
    }

    /// Write mode: the receiver's clear-to-send for message `seq`.
    pub fn on_cts(&mut self, core: &mut Core, seq: u64, cts: Cts, done: &mut Completions<'_>) -> Result<()> {
        match self.items.get(&seq).map(|i| &i.state) {
            Some(State::WaitCts) => {
                let item = self.items.remove(&seq).expect("found");
                self.cleared(core, item, cts, done)
            }
            // Sent eagerly (or its clear-to-send came twice: no harm, nothing is written).
            Some(State::Eager) => Ok(()),
            Some(_) => Err(Error::failure(format!("second clear-to-send for message {seq}"))),
            // Sent eagerly and already acknowledged.
            None if seq < self.posted_upto => Ok(()),
            None => match self.early_cts.insert(seq, cts) {
                None => Ok(()),
                Some(_) => Err(Error::failure(format!("second clear-to-send for message {seq}"))),
            },
        }
    }

    /// Write mode: a large send meets its clear-to-send: refuse it (the receive is shorter) or
    /// write it (`plan_writes`), each write's remote CQ data its seq, and send its size (length
    /// and the number of writes) on rail 0 with them.
    fn cleared(&mut self, core: &mut Core, mut item: Item, cts: Cts, done: &mut Completions<'_>) -> Result<()> {
        let seq = item.m.seq;
        let len = item.len;
        let mut pre = item.mr.take();
        if len > cts.cap || cts.rails.len() != core.nrails {
            core.release(pre.take());
        }
        if len > cts.cap {
            done.push(send_verdict(seq, len, ack::TOO_LONG, 0)?);
            let mut b = [0u8; CTRL_SIZE];
            let n = Refuse { len }.put(&mut b);
            return core.send_tagged(0, tag(Type::Refuse, seq), &b[..n]);
        }
        if cts.rails.len() != core.nrails {
            return Err(Error::failure(format!(
                "clear-to-send for message {seq} of {len} bytes names {} rails; this side has {}",
                cts.rails.len(),
                core.nrails
            )));
        }
        let mr = match pre {
            Some(mr) => mr,
            None => core.register(&item.m.region)?.ok_or_else(|| Error::failure("large message without memory"))?,
        };
        let first = (seq % core.nrails as u64) as usize;
        let writes = plan_writes(len, first, core.nrails, core.stripe, MAX_WRITE.min(core.max_msg));
        let data = cq_data(seq);
        // Device memory is written from its device address, by the provider.
        let base = rma_addr(&item.m.region);
        let ops: Vec<(usize, Op)> = writes
            .iter()
            .map(|&(rail, off, n)| {
                let (raddr, rkey) = cts.rails[rail];
                let op = Op::Write {
                    buf: base + off as usize,
                    len: n as usize,
                    mr: mr.desc(rail).copied(),
                    data,
                    raddr: raddr + off,
                    rkey,
                    ctx: Ctx::Write(seq).encode(),
                };
                (rail, op)
            })
            .collect();
        item.state = State::Writing { left: ops.len() as u64, ack: None };
        item.mr = Some(mr);
        self.items.insert(seq, item);
        // The size goes first: it is small, and the receiver needs it as much as the writes.
        let mut b = [0u8; CTRL_SIZE];
        let n = Size { len, writes: ops.len() as u64 }.put(&mut b);
        core.send_tagged(0, tag(Type::Size, seq), &b[..n])?;
        for (rail, op) in ops {
            core.submit(rail, op)?;
        }
        Ok(())
    }

    /// Write mode: one of message `seq`'s writes completed.
    pub fn on_write_done(&mut self, core: &mut Core, seq: u64, done: &mut Completions<'_>) -> Result<()> {
        let Some(Item { state: State::Writing { left, ack }, .. }) = self.items.get_mut(&seq) else {
            return Err(Error::failure(format!("write completion for message {seq}, which is not being written")));
        };
        *left -= 1;
        match (*left, *ack) {
            (0, Some(a)) => self.finish(core, seq, a, done),
            _ => Ok(()),
        }
    }

    /// The message is done with: its registration goes, and the receiver's verdict reports it.
    fn finish(&mut self, core: &mut Core, seq: u64, a: Ack, done: &mut Completions<'_>) -> Result<()> {
        let item = self.items.remove(&seq).expect("finish on a message held");
        core.release(item.mr);
        done.push(send_verdict(seq, item.len, a.status, a.size)?);
        Ok(())
    }

    /// The receiver's verdict on an eager message, (read mode) on a message it read, (write
    /// mode) on a written one once it landed, or on an announced one whose receive is shorter. A
    /// written message completes when its verdict and all its writes' completions are in.
    pub fn on_ack(&mut self, core: &mut Core, seq: u64, a: Ack, done: &mut Completions<'_>) -> Result<()> {
        match self.items.get_mut(&seq).map(|i| &mut i.state) {
            Some(State::Eager | State::Announced) => self.finish(core, seq, a, done),
            Some(State::Writing { left, ack: got @ None }) => {
                *got = Some(a);
                if *left == 0 { self.finish(core, seq, a, done) } else { Ok(()) }
            }
            Some(State::WaitCts) if a.status == ack::TOO_LONG => self.finish(core, seq, a, done),
            _ => Err(Error::failure(format!("acknowledgement for message {seq}, which waits for none"))),
        }
    }

    /// Releases the registrations of the messages left (the communicator goes).
    pub fn release_all(&mut self, core: &mut Core) {
        for (_, item) in std::mem::take(&mut self.items) {
            core.release(item.mr);
        }
    }
}
