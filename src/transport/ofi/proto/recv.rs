//! The receiving direction: eager messages copied out of the bounce buffers (kept there until
//! their receive is posted), clear-to-send for every posted receive longer than eager_max (and
//! for one the sender's ready-to-send asks for) and the stripes the sender writes (write mode), or
//! the stripes this side reads once the receive meets its ready-to-send (read mode). A receive is reported before the acknowledgement that follows from it is sent.

use super::ctrl::{Ack, CTRL_SIZE, Cts, Ctx, Refuse, Rts, SEQ24, Type, cq_data_decode, tag};
use super::mr::RegionMr;
use super::shared::{Core, Op};
use crate::status::{Error, Result};
use crate::transport::{Completions, Done, Msg, short_receive};
use crate::wire::ack;
use std::collections::{BTreeMap, HashMap};

enum State {
    /// Posted; nothing of its message arrived.
    Waiting,
    /// Write mode: `got` of the message's `stripes` writes landed (the last one `last` bytes).
    Landing { got: u64, stripes: u64, last: u64 },
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

    pub fn issue(&mut self, core: &mut Core, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        let seq = m.seq;
        let cap = m.region.len() as u64;
        self.posted_upto = self.posted_upto.max(seq + 1);
        let item = Item { m, cap, state: State::Waiting, mr: None, cts: false };
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

    /// Write mode: registers the receive and sends its clear-to-send (capacity, stripe, address
    /// and key per rail).
    fn clear(&mut self, core: &mut Core, mut item: Item) -> Result<()> {
        let seq = item.m.seq;
        item.mr = core.register(&item.m.region)?;
        item.cts = true;
        let cts = Cts { cap: item.cap, stripe: core.stripe, rails: item.mr.as_ref().map_or_else(Vec::new, |r| r.remote()) };
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
            // SAFETY: the receive's region is a host region (Proto::post refuses staged ones)
            // mapped for cap >= len bytes while the message is held; the bounce is another buffer.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), item.m.region.ptr(), len) };
            core.repost(rail, slot)?;
            done.push(Done::Ok { seq, bytes: len as u64 });
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
        item.mr = core.register(&item.m.region)?;
        let base = item.m.region.ptr() as usize;
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

    /// Write mode: one of the sender's writes landed on `rail` with remote CQ data `data`.
    pub fn on_remote_write(&mut self, core: &mut Core, rail: usize, data: u64, done: &mut Completions<'_>) -> Result<()> {
        let (seq24, stripes, last) = cq_data_decode(data)?;
        // The full seq: receives in flight span far fewer than 2^24 messages, and this one is
        // still posted, so it is the first posted receive's seq plus the distance in 24 bits.
        let Some((&first, _)) = self.items.first_key_value() else {
            return Err(Error::failure(format!("remote write (data {data:#x}) with no receive posted")));
        };
        let seq = first + (seq24.wrapping_sub(first) & SEQ24);
        let Some(item) = self.items.get_mut(&seq) else {
            return Err(Error::failure(format!("remote write (data {data:#x}) for message {seq}, not posted")));
        };
        let stripe = core.stripe;
        let got = match item.state {
            State::Waiting => 1,
            State::Landing { got, stripes: n, last: l } if n == stripes && l == last && got < stripes => got + 1,
            _ => return Err(Error::failure(format!("remote write (data {data:#x}) for message {seq} does not fit its others"))),
        };
        item.state = State::Landing { got, stripes, last };
        // Every stripe but the last is `stripe` bytes; the last one's rail is known at the end.
        core.count(rail, stripe);
        if got < stripes {
            return Ok(());
        }
        let size = (stripes - 1) * stripe + last;
        if size > item.cap {
            return Err(Error::failure(format!("message {seq} of {size} bytes landed in a receive of {}", item.cap)));
        }
        core.uncount(((stripes - 1) % core.nrails as u64) as usize, stripe - last);
        let item = self.items.remove(&seq).expect("found");
        core.release(item.mr);
        done.push(Done::Ok { seq, bytes: size });
        // The sender's send completes on this acknowledgement, not on its writes' local
        // completions (those can come before the bytes land: the sender could then close, and its
        // TCP link's end overtake the last writes, failing this receive).
        let mut b = [0u8; CTRL_SIZE];
        let n = Ack { status: ack::OK, size }.put(&mut b);
        core.send_tagged(0, tag(Type::Ack, seq), &b[..n])
    }

    pub fn release_all(&mut self, core: &mut Core) {
        for (_, item) in std::mem::take(&mut self.items) {
            core.release(item.mr);
        }
    }
}
