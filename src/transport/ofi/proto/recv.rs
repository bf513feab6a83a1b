//! The receiving direction: eager messages copied out of the bounce buffers (kept there until
//! their receive is posted), clear-to-send for every posted receive longer than eager_max (and
//! for one the sender's ready-to-send asks for), then the sender's writes and its size message,
//! in any order (write mode), or the stripes this side reads once the receive meets its
//! ready-to-send (read mode). A receive is reported before the acknowledgement that follows from
//! it is sent.

use super::ctrl::{Ack, CQ_DATA_MASK, CTRL_SIZE, Cts, Ctx, Refuse, Rts, Size, Type, cq_seq, tag};
use super::mr::RegionMr;
use super::shared::{Core, Op, rma_addr};
use crate::status::{Error, Result};
use crate::transport::{Completions, Done, Msg, short_receive};
use crate::wire::ack;
use std::collections::{BTreeMap, HashMap};

enum State {
    /// Posted; nothing of its message arrived.
    Waiting,
    /// Write mode: `got` of the message's writes landed, `bytes` of them as the provider
    /// reported, on the rails of bitmask `rails`; `size`: the sender's size message, once here.
    Landing { got: u64, bytes: u64, rails: u32, size: Option<Size> },
    /// Read mode: `left` reads of the message's `len` bytes not completed yet.
    Reading { left: u64, len: u64 },
}

struct Item {
    m: Msg,
    cap: u64,
    state: State,
    mr: Option<RegionMr>,
    /// Write mode: its clear-to-send was sent (a ready-to-send for it is then ignored).
    cts: bool,
}

/// What arrived before its receive was posted.
enum Early {
    /// An eager message, still in bounce buffer `slot` of `rail`.
    Eager {
        rail: usize,
        slot: usize,
        len: usize,
    },
    Rts(Rts),
}

#[derive(Default)]
pub struct Receiver {
    items: BTreeMap<u64, Item>,
    early: HashMap<u64, Early>,
    /// One past the highest seq posted.
    posted_upto: u64,
}

fn unexpected(what: &str, seq: u64) -> Error {
    Error::failure(format!("{what} for message {seq}, whose receive is not waiting for it"))
}

impl Receiver {
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn in_flight(&self) -> bool {
        !self.items.is_empty()
    }

    #[cfg(test)]
    pub fn leftovers(&self) -> usize {
        self.early.len()
    }

    /// Takes a receive; `pre`: its region's registration, made at post (device memory).
    pub fn issue(&mut self, core: &mut Core, m: Msg, pre: Option<RegionMr>, done: &mut Completions<'_>) -> Result<()> {
        let seq = m.seq;
        let cap = m.region.len() as u64;
        self.posted_upto = self.posted_upto.max(seq + 1);
        let item = Item { m, cap, state: State::Waiting, mr: pre, cts: false };
        match self.early.remove(&seq) {
            // Its message is here: no clear-to-send.
            Some(Early::Eager { rail, slot, len }) => self.deliver(core, item, rail, slot, len, done),
            Some(Early::Rts(rts)) if core.write_mode => self.answer_rts(core, item, rts, done),
            Some(Early::Rts(rts)) => self.read(core, item, rts, done),
            // Only a receive longer than eager_max may take a written message: clear it now (a
            // shorter one waits for an eager message, or for a ready-to-send to refuse).
            None if core.write_mode && cap > core.eager_max as u64 => self.clear(core, item),
            None => {
                self.items.insert(seq, item);
                Ok(())
            }
        }
    }

    /// Write mode: registers the receive and sends its clear-to-send (capacity, address and key
    /// per rail).
    fn clear(&mut self, core: &mut Core, mut item: Item) -> Result<()> {
        let seq = item.m.seq;
        if item.mr.is_none() {
            item.mr = core.register(&item.m.region)?;
        }
        item.cts = true;
        let cts = Cts { cap: item.cap, rails: item.mr.as_ref().map_or_else(Vec::new, |r| r.remote()) };
        self.items.insert(seq, item);
        let mut b = [0u8; CTRL_SIZE];
        let n = cts.put(&mut b);
        core.send_tagged(0, tag(Type::Cts, seq), &b[..n])
    }

    /// Write mode: a receive that sent no clear-to-send meets the sender's ready-to-send: fail
    /// both (the receive is shorter), or clear it.
    fn answer_rts(&mut self, core: &mut Core, item: Item, rts: Rts, done: &mut Completions<'_>) -> Result<()> {
        if rts.len > item.cap {
            return self.too_long(core, item, rts.len, done);
        }
        self.clear(core, item)
    }

    /// Fails a receive shorter than its message of `len` bytes, then tells the sender.
    fn too_long(&mut self, core: &mut Core, item: Item, len: u64, done: &mut Completions<'_>) -> Result<()> {
        let seq = item.m.seq;
        core.release(item.mr);
        done.push(Done::Failed { seq, err: short_receive(item.cap, len) });
        let mut b = [0u8; CTRL_SIZE];
        let n = Ack { status: ack::TOO_LONG, size: item.cap }.put(&mut b);
        core.send_tagged(0, tag(Type::Ack, seq), &b[..n])
    }

    /// An eager message landed in bounce buffer `slot` of `rail`.
    pub fn on_eager(&mut self, core: &mut Core, rail: usize, slot: usize, seq: u64, len: usize, done: &mut Completions<'_>) -> Result<()> {
        match self.items.get(&seq).map(|i| &i.state) {
            Some(State::Waiting) => {
                let item = self.items.remove(&seq).expect("found");
                self.deliver(core, item, rail, slot, len, done)
            }
            Some(_) => Err(unexpected("eager message", seq)),
            None if seq < self.posted_upto => Err(unexpected("eager message", seq)),
            None => match self.early.insert(seq, Early::Eager { rail, slot, len }) {
                None => Ok(()),
                Some(_) => Err(Error::failure(format!("second message for receive {seq}"))),
            },
        }
    }

    /// Copies an eager message out of its bounce buffer into its receive (or fails both when
    /// the receive is shorter), gives the buffer back, reports the receive, then acknowledges.
    fn deliver(&mut self, core: &mut Core, item: Item, rail: usize, slot: usize, len: usize, done: &mut Completions<'_>) -> Result<()> {
        let seq = item.m.seq;
        let a = if len as u64 > item.cap {
            core.repost(rail, slot)?;
            done.push(Done::Failed { seq, err: short_receive(item.cap, len as u64) });
            Ack { status: ack::TOO_LONG, size: item.cap }
        } else {
            let src = core.bounce_bytes(rail, slot, len)?;
            let copied = match item.m.region.staging() {
                // Device memory (Proto::post refuses other staged memory): copied in through the
                // vendor, never written at its device address. A failure fails this receive (the
                // bytes did arrive: the sender's send completes).
                Some(mem) => mem.write(0, src),
                None => {
                    // SAFETY: the receive's region is host memory mapped for cap >= len bytes
                    // while the message is held; the bounce is another buffer.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), item.m.region.ptr(), len) };
                    Ok(())
                }
            };
            core.repost(rail, slot)?;
            done.push(match copied {
                Ok(()) => Done::Ok { seq, bytes: len as u64 },
                Err(err) => Done::Failed { seq, err },
            });
            Ack { status: ack::OK, size: len as u64 }
        };
        core.release(item.mr);
        let mut b = [0u8; CTRL_SIZE];
        let n = a.put(&mut b);
        core.send_ack(tag(Type::Ack, seq), &b[..n])
    }

    /// The sender's ready-to-send for message `seq`: its length (write mode), and its address
    /// and key per rail (read mode).
    pub fn on_rts(&mut self, core: &mut Core, seq: u64, rts: Rts, done: &mut Completions<'_>) -> Result<()> {
        let want = if core.write_mode { 0 } else { core.nrails };
        if rts.rails.len() != want {
            return Err(Error::failure(format!("ready-to-send for message {seq} names {} rails; {want} expected", rts.rails.len())));
        }
        match self.items.get(&seq).map(|i| (&i.state, i.cts)) {
            // Write mode: its clear-to-send is on its way, or the message already came.
            Some((_, true)) => Ok(()),
            None if core.write_mode && seq < self.posted_upto => Ok(()),
            Some((State::Waiting, false)) => {
                let item = self.items.remove(&seq).expect("found");
                if core.write_mode { self.answer_rts(core, item, rts, done) } else { self.read(core, item, rts, done) }
            }
            Some(_) => Err(unexpected("ready-to-send", seq)),
            None if seq < self.posted_upto => Err(unexpected("ready-to-send", seq)),
            None => match self.early.insert(seq, Early::Rts(rts)) {
                None => Ok(()),
                Some(_) => Err(Error::failure(format!("second message for receive {seq}"))),
            },
        }
    }

    /// Read mode: a receive meets its ready-to-send: fail both (the receive is shorter), or read
    /// the stripes, stripe i over rail i mod rails.
    fn read(&mut self, core: &mut Core, mut item: Item, rts: Rts, done: &mut Completions<'_>) -> Result<()> {
        let seq = item.m.seq;
        let len = rts.len;
        if len > item.cap {
            return self.too_long(core, item, len, done);
        }
        let stripe = core.stripe;
        let stripes = len.div_ceil(stripe);
        if item.mr.is_none() {
            item.mr = core.register(&item.m.region)?;
        }
        // Device memory is read into at its device address, by the provider.
        let base = rma_addr(&item.m.region);
        let ops: Vec<(usize, Op)> = (0..stripes)
            .map(|i| {
                let rail = (i % core.nrails as u64) as usize;
                let off = i * stripe;
                let (raddr, rkey) = rts.rails[rail];
                let mr = item.mr.as_ref().and_then(|r| r.desc(rail).copied());
                let op = Op::Read {
                    buf: base + off as usize,
                    len: stripe.min(len - off) as usize,
                    mr,
                    raddr: raddr + off,
                    rkey,
                    ctx: Ctx::Read(seq).encode(),
                };
                (rail, op)
            })
            .collect();
        item.state = State::Reading { left: stripes, len };
        self.items.insert(seq, item);
        if stripes == 0 {
            return self.read_done(core, seq, done);
        }
        for (rail, op) in ops {
            core.submit(rail, op)?;
        }
        Ok(())
    }

    /// Read mode: a read of message `seq` completed (or, with `left` at 0, it had none).
    pub fn on_read_done(&mut self, core: &mut Core, seq: u64, done: &mut Completions<'_>) -> Result<()> {
        let Some(Item { state: State::Reading { left, .. }, .. }) = self.items.get_mut(&seq) else {
            return Err(Error::failure(format!("read completion for message {seq}, which is not being read")));
        };
        if *left == 0 {
            return Err(Error::failure(format!("extra read completion for message {seq}")));
        }
        *left -= 1;
        if *left == 0 {
            return self.read_done(core, seq, done);
        }
        Ok(())
    }

    fn read_done(&mut self, core: &mut Core, seq: u64, done: &mut Completions<'_>) -> Result<()> {
        let item = self.items.remove(&seq).expect("read_done on a message being read");
        let State::Reading { len, .. } = item.state else { unreachable!("read_done on a message being read") };
        core.release(item.mr);
        done.push(Done::Ok { seq, bytes: len });
        let mut b = [0u8; CTRL_SIZE];
        let n = Ack { status: ack::OK, size: len }.put(&mut b);
        core.send_tagged(0, tag(Type::Ack, seq), &b[..n])
    }

    /// Write mode: the sender refused message `seq` (this receive is shorter).
    pub fn on_refuse(&mut self, core: &mut Core, seq: u64, r: Refuse, done: &mut Completions<'_>) -> Result<()> {
        let Some(Item { state: State::Waiting, .. }) = self.items.get(&seq) else {
            return Err(unexpected("refusal", seq));
        };
        let item = self.items.remove(&seq).expect("found");
        core.release(item.mr);
        done.push(Done::Failed { seq, err: short_receive(item.cap, r.len) });
        Ok(())
    }

    /// Write mode: the sender's size message for message `seq` (sent with its writes).
    pub fn on_size(&mut self, core: &mut Core, seq: u64, sz: Size, done: &mut Completions<'_>) -> Result<()> {
        let Some(item) = self.items.get_mut(&seq) else {
            return Err(unexpected("size message", seq));
        };
        if !item.cts {
            return Err(Error::failure(format!("size message for message {seq}, which was not cleared to send")));
        }
        if sz.len > item.cap || sz.writes == 0 || sz.writes > sz.len {
            return Err(Error::failure(format!(
                "size message for message {seq}: {} bytes in {} writes, into a receive of {}",
                sz.len, sz.writes, item.cap
            )));
        }
        let got = match &mut item.state {
            State::Waiting => {
                item.state = State::Landing { got: 0, bytes: 0, rails: 0, size: Some(sz) };
                0
            }
            State::Landing { got, size: size @ None, .. } if *got <= sz.writes => {
                *size = Some(sz);
                *got
            }
            _ => return Err(Error::failure(format!("size message for message {seq} does not fit what landed"))),
        };
        if got == sz.writes { self.landed(core, seq, done) } else { Ok(()) }
    }

    /// Write mode: one of the sender's writes (`len` bytes as the provider reports them) landed
    /// on `rail` with remote CQ data `data`.
    pub fn on_remote_write(&mut self, core: &mut Core, rail: usize, data: u64, len: usize, done: &mut Completions<'_>) -> Result<()> {
        let low = cq_seq(data);
        // The full seq: receives in flight span far fewer than 2^32 messages, and this one is
        // still posted, so it is the first posted receive's seq plus the distance in 32 bits.
        let Some((&first, _)) = self.items.first_key_value() else {
            return Err(Error::failure(format!("remote write (data {low:#x}) with no receive posted")));
        };
        let seq = first + (low.wrapping_sub(first) & CQ_DATA_MASK);
        let Some(item) = self.items.get_mut(&seq) else {
            return Err(Error::failure(format!("remote write (data {low:#x}) for message {seq}, not posted")));
        };
        if let State::Waiting = item.state
            && item.cts
        {
            item.state = State::Landing { got: 0, bytes: 0, rails: 0, size: None };
        }
        let State::Landing { got, bytes, rails, size } = &mut item.state else {
            return Err(Error::failure(format!("remote write for message {seq}, which was not cleared to send")));
        };
        *got += 1;
        *bytes += len as u64;
        *rails |= 1 << rail;
        // Every write carries a byte at least.
        if size.map_or(*got > item.cap, |sz| *got > sz.writes) {
            return Err(Error::failure(format!("more remote writes for message {seq} than it has")));
        }
        core.count(rail, len as u64);
        if size.is_some_and(|sz| *got == sz.writes) { self.landed(core, seq, done) } else { Ok(()) }
    }

    /// Write mode: the size message and every write it announces landed: the receive is
    /// reported, then acknowledged.
    fn landed(&mut self, core: &mut Core, seq: u64, done: &mut Completions<'_>) -> Result<()> {
        let Some(Item { state: State::Landing { bytes, rails, size: Some(sz), .. }, .. }) = self.items.get(&seq) else {
            return Err(Error::failure(format!("message {seq} completed without its size")));
        };
        let (bytes, rails, sz) = (*bytes, *rails, *sz);
        let item = self.items.remove(&seq).expect("found");
        // Where the provider did not report the writes' lengths, the rest is spread over the
        // rails that carried them (the counters are for the log only).
        if bytes < sz.len && rails != 0 {
            let n = rails.count_ones() as u64;
            let rest = sz.len - bytes;
            for (k, rail) in (0..core.nrails).filter(|r| rails & (1 << r) != 0).enumerate() {
                core.count(rail, rest / n + u64::from((k as u64) < rest % n));
            }
        }
        core.release(item.mr);
        done.push(Done::Ok { seq, bytes: sz.len });
        // The sender's send completes on this acknowledgement, not on its writes' local
        // completions (those can come before the bytes land: the sender could then close, and its
        // TCP link's end overtake the last writes, failing this receive).
        let mut b = [0u8; CTRL_SIZE];
        let n = Ack { status: ack::OK, size: sz.len }.put(&mut b);
        core.send_tagged(0, tag(Type::Ack, seq), &b[..n])
    }

    pub fn release_all(&mut self, core: &mut Core) {
        for (_, item) in std::mem::take(&mut self.items) {
            core.release(item.mr);
        }
    }
}
