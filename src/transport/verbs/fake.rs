//! An in-memory queue pair for the protocol's tests: two ends joined by a wire whose work
//! requests the test delivers when it chooses (`Net::deliver`), with the checks a NIC makes: a
//! SEND needs a posted receive of its size (else the test fails: the credits are there so that
//! this never happens), writes need a registration of the peer's that covers them, local
//! buffers need one of this side's.

use super::proto::{Keys, Nic, Op, Part, RecvWr, Reg, SendWr, Wc};
use crate::status::{Error, Result};
use crate::tensor::Region;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

#[derive(Default)]
struct End {
    posted: VecDeque<(u64, u64, u32)>,
    cq: VecDeque<Wc>,
    /// (key, address, length)
    regs: Vec<(u32, u64, u64)>,
    /// Work requests on the wire toward the peer: (id, op, bytes, signaled).
    wire: VecDeque<(u64, Op, Vec<u8>, bool)>,
    /// Receives posted at most at once (the deepest the queue was kept).
    max_posted: usize,
}

#[derive(Default)]
pub struct Net {
    ends: [End; 2],
    next_key: u32,
    /// What went wrong (a SEND without a posted receive, an unregistered range...).
    pub violations: Vec<String>,
    pub sends: u64,
    pub writes: u64,
    pub inline: u64,
}

pub struct FakeNic {
    net: Arc<Mutex<Net>>,
    me: usize,
    max_write: u64,
    /// The longest registration: a message's memory is registered in parts of this size.
    max_mr: u64,
}

/// A pair whose ends register at most `max_mr[0]` and `max_mr[1]` bytes at once.
pub fn pair_limits(max_write: u64, max_mr: [u64; 2]) -> (FakeNic, FakeNic, Arc<Mutex<Net>>) {
    let net = Arc::new(Mutex::new(Net { next_key: 1, ..Net::default() }));
    let end = |me: usize| FakeNic { net: net.clone(), me, max_write, max_mr: max_mr[me] };
    (end(0), end(1), net)
}

fn covered(regs: &[(u32, u64, u64)], key: u32, addr: u64, len: u64) -> bool {
    len == 0 || regs.iter().any(|&(k, a, l)| k == key && addr >= a && addr + len <= a + l)
}

impl Net {
    /// Delivers up to `n` work requests from end `from` to its peer, in order; returns how many.
    pub fn deliver(&mut self, from: usize, n: usize) -> usize {
        let to = 1 - from;
        let mut k = 0;
        while k < n {
            let Some((id, op, bytes, signaled)) = self.ends[from].wire.pop_front() else { break };
            k += 1;
            match op {
                Op::Send { imm } => {
                    self.sends += 1;
                    let Some((rid, addr, cap)) = self.ends[to].posted.pop_front() else {
                        self.violations.push(format!("SEND from end {from} found no posted receive (receiver not ready)"));
                        continue;
                    };
                    if bytes.len() > cap as usize {
                        self.violations.push(format!("SEND of {} bytes into a receive buffer of {cap}", bytes.len()));
                        continue;
                    }
                    // SAFETY: a posted receive buffer of `cap` bytes, registered by its owner,
                    // which keeps it alive while the protocol lives.
                    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
                    self.ends[to].cq.push_back(Wc::Recv { id: rid, len: bytes.len() as u32, imm });
                }
                Op::Write { addr, rkey, imm } => {
                    self.writes += 1;
                    if !covered(&self.ends[to].regs, rkey, addr, bytes.len() as u64) {
                        self.violations.push(format!("write of {} bytes at {addr:#x} outside rkey {rkey}", bytes.len()));
                        continue;
                    }
                    if !bytes.is_empty() {
                        // SAFETY: inside memory the peer registered (checked) and keeps alive
                        // until the message completes.
                        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as *mut u8, bytes.len()) };
                    }
                    if let Some(imm) = imm {
                        let Some((rid, _, _)) = self.ends[to].posted.pop_front() else {
                            self.violations.push(format!("write with immediate from end {from} found no posted receive"));
                            continue;
                        };
                        self.ends[to].cq.push_back(Wc::Written { id: rid, len: bytes.len() as u32, imm });
                    }
                }
            }
            if signaled {
                self.ends[from].cq.push_back(Wc::Sent { id });
            }
        }
        k
    }

    /// Work requests waiting on the wire from end `from`.
    pub fn queued(&self, from: usize) -> usize {
        self.ends[from].wire.len()
    }

    /// The deepest end `e`'s receive queue was.
    pub fn max_posted(&self, e: usize) -> usize {
        self.ends[e].max_posted
    }
}

impl FakeNic {
    fn reg(&self, ptr: *mut u8, len: usize) -> Keys {
        let mut net = self.net.lock();
        let key = net.next_key;
        net.next_key += 1;
        net.ends[self.me].regs.push((key, ptr as u64, len as u64));
        Keys { lkey: key, _hold: Some(Arc::new(())) }
    }
}

impl Nic for FakeNic {
    fn register(&mut self, region: &Region) -> Result<Reg> {
        let (base, len) = (region.ptr() as u64, region.len() as u64);
        let step = self.max_mr.clamp(1, len.max(1));
        let mut reg = Reg { parts: Vec::new(), _hold: Vec::new() };
        let mut at = 0;
        while at < len {
            let n = step.min(len - at);
            let k = self.reg((base + at) as *mut u8, n as usize);
            reg.parts.push(Part { addr: base + at, len: n, lkey: k.lkey, rkey: k.lkey });
            reg._hold.extend(k._hold);
            at += n;
        }
        Ok(reg)
    }

    fn register_raw(&mut self, ptr: *mut u8, len: usize) -> Result<Keys> {
        Ok(self.reg(ptr, len))
    }

    fn post_send(&mut self, wr: &SendWr) -> Result<()> {
        let mut net = self.net.lock();
        if !covered(&net.ends[self.me].regs, wr.lkey, wr.addr, wr.len as u64) {
            return Err(Error::failure(format!("send of {} bytes at {:#x} outside lkey {}", wr.len, wr.addr, wr.lkey)));
        }
        let mut bytes = vec![0u8; wr.len as usize];
        if wr.len > 0 {
            // SAFETY: registered local memory (checked) the protocol keeps alive; the fake NIC
            // reads it at posting (a real one reads it before the completion).
            unsafe { std::ptr::copy_nonoverlapping(wr.addr as *const u8, bytes.as_mut_ptr(), bytes.len()) };
        }
        let op = match wr.op {
            Op::Send { imm } => Op::Send { imm },
            Op::Write { addr, rkey, imm } => Op::Write { addr, rkey, imm },
        };
        if wr.inline && wr.len > self.max_inline() {
            return Err(Error::failure(format!("{} bytes inline, at most {}", wr.len, self.max_inline())));
        }
        if wr.inline {
            net.inline += 1;
        }
        net.ends[self.me].wire.push_back((wr.id, op, bytes, wr.signaled));
        Ok(())
    }

    fn post_recv(&mut self, wr: &RecvWr) -> Result<()> {
        let mut net = self.net.lock();
        if !covered(&net.ends[self.me].regs, wr.lkey, wr.addr, wr.len as u64) {
            return Err(Error::failure("receive buffer outside its registration"));
        }
        let e = &mut net.ends[self.me];
        e.posted.push_back((wr.id, wr.addr, wr.len));
        e.max_posted = e.max_posted.max(e.posted.len());
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Wc>) -> Result<()> {
        let mut net = self.net.lock();
        let cq = &mut net.ends[self.me].cq;
        let n = cq.len().min(16);
        out.extend(cq.drain(..n));
        Ok(())
    }

    fn max_write(&self) -> u64 {
        self.max_write
    }

    fn max_inline(&self) -> u32 {
        64
    }
}
