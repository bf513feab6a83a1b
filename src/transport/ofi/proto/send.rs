//! The sending direction: eager sends (complete on the receiver's acknowledgement), large sends
//! written in stripes once their clear-to-send arrives (write mode, announced with a ready-to-send
//! when none is here yet; complete when every write completed and the receiver acknowledged the
//! message, or on its refusal), or
//! announced with a ready-to-send and read by the receiver (read mode, complete on the
//! acknowledgement).

use super::ctrl::{Ack, CTRL_SIZE, Cts, Ctx, MAX_STRIPES, Refuse, Rts, STRIPE, Type, cq_data, tag};
use super::mr::RegionMr;
use super::shared::{Core, Op};
use crate::status::{Error, Result};
use crate::transport::{Completions, Msg, send_verdict};
use crate::wire::ack;
use std::collections::{BTreeMap, HashMap};

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

    pub fn issue(&mut self, core: &mut Core, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        let seq = m.seq;
        let len = m.region.len();
        self.posted_upto = self.posted_upto.max(seq + 1);
        if len <= core.eager_max {
            // SAFETY: the region is mapped for `len` bytes (a host region; Proto::post refuses
            // staged ones) while the message is held; an empty one has a dangling, non-null pointer.
            let bytes = unsafe { std::slice::from_raw_parts(m.region.ptr(), len) };
            core.send_tagged(seq as usize % core.nrails, tag(Type::Eager, seq), bytes)?;
            // Its clear-to-send, if the receive was posted first, is not needed.
            self.early_cts.remove(&seq);
            self.items.insert(seq, Item { m, len: len as u64, state: State::Eager, mr: None });
            return Ok(());
        }
        if core.write_mode {
            let item = Item { m, len: len as u64, state: State::WaitCts, mr: None };
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
        let mr = core.register(&m.region)?.ok_or_else(|| Error::failure("large message without memory"))?;
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
    /// write its stripes, stripe i over rail i mod rails.
    fn cleared(&mut self, core: &mut Core, mut item: Item, cts: Cts, done: &mut Completions<'_>) -> Result<()> {
        let seq = item.m.seq;
        let len = item.len;
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
        let stripe = cts.stripe;
        if stripe == 0 || stripe > STRIPE || stripe > core.max_msg {
            return Err(Error::failure(format!("clear-to-send for message {seq} with a stripe of {stripe} bytes")));
        }
        let stripes = len.div_ceil(stripe);
        if stripes > MAX_STRIPES {
            return Err(Error::failure(format!("message {seq} of {len} bytes needs {stripes} stripes of {stripe} bytes")));
        }
        let mr = core.register(&item.m.region)?.ok_or_else(|| Error::failure("large message without memory"))?;
        let last = len - (stripes - 1) * stripe;
        let data = cq_data(seq, stripes, last);
        let base = item.m.region.ptr() as usize;
        let ops: Vec<(usize, Op)> = (0..stripes)
            .map(|i| {
                let rail = (i % core.nrails as u64) as usize;
                let off = i * stripe;
                let (raddr, rkey) = cts.rails[rail];
                let op = Op::Write {
                    buf: base + off as usize,
                    len: stripe.min(len - off) as usize,
                    mr: mr.desc(rail).copied(),
                    data,
                    raddr: raddr + off,
                    rkey,
                    ctx: Ctx::Write(seq).encode(),
                };
                (rail, op)
            })
            .collect();
        item.state = State::Writing { left: stripes, ack: None };
        item.mr = Some(mr);
        self.items.insert(seq, item);
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
