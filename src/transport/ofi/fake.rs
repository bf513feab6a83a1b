//! An in-memory provider for tests: two `FakeRail`s connected to each other through a shared
//! `Link`. Tagged messages match posted receives (tag and ignore bits, first posted first) or
//! wait in an unexpected queue; writes and reads copy between registered buffers after checking
//! the peer's key, address range and remote access; every buffer of an operation must lie in a
//! registration its descriptor names. Operations take effect, and completions are delivered,
//! in batches in a chosen order: as posted, reversed, or shuffled by a seeded xorshift. A poll
//! on either end applies every operation issued since the last poll (in that order; with
//! `linger`, some stay on the wire for a later poll, overtaken by those issued after them), then
//! hands the polling end its completions (in that order again). Remote CQ data keeps only
//! `cq_data_size` bytes (with 4, the upper 32 bits come back as noise). With `hmem` the rails
//! claim `FI_HMEM`: device registrations (`register_device`) are recorded, and may be used by
//! writes and reads only (a tagged send or receive of device memory is refused, as a provider
//! that cannot copy out of device memory would).

use crate::status::{Error, Result};
use crate::transport::ofi::rail::{CqKind, Cqe, Limits, Mr, Posted, Rail};
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The order operations take effect and completions are delivered in, within a batch.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    AsPosted,
    Reversed,
    Shuffled(u64),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub order: Order,
    /// The rails offer RMA write with remote CQ data.
    pub write_data: bool,
    pub max_msg: u64,
    /// Every n-th operation is answered `Posted::Again` (0: never).
    pub again_every: u64,
    /// Bytes of remote CQ data the rails carry (4 like EFA and verbs, or 8).
    pub cq_data_size: usize,
    /// Percent chance that an operation stays on the wire at a poll (0: none does).
    pub linger: u64,
    /// Remote write completions report the bytes written (else 0, as a provider may).
    pub remote_len: bool,
    /// The rails claim FI_HMEM (device memory may be registered).
    pub hmem: bool,
    /// Device registrations are refused all the same (FI_HMEM without Neuron support, as
    /// `shm` here).
    pub device_fails: bool,
}

impl Config {
    pub fn new(order: Order, write_data: bool) -> Config {
        Config {
            order,
            write_data,
            max_msg: 1 << 30,
            again_every: 0,
            cq_data_size: 4,
            linger: 0,
            remote_len: true,
            hmem: false,
            device_fails: false,
        }
    }
}

struct Reg {
    addr: usize,
    len: usize,
    remote: bool,
    base: u64,
    /// Registered as device memory.
    device: bool,
}

struct PostedRecv {
    buf: usize,
    len: usize,
    tag: u64,
    ignore: u64,
    ctx: u64,
}

enum Action {
    Send { from: usize, tag: u64, data: Vec<u8>, ctx: u64 },
    Write { from: usize, data: Vec<u8>, cq_data: u64, raddr: u64, rkey: u64, ctx: u64 },
    Read { from: usize, buf: usize, len: usize, raddr: u64, rkey: u64, ctx: u64 },
}

#[derive(Default)]
struct End {
    connected: bool,
    mrs: HashMap<u64, Reg>,
    posted: Vec<PostedRecv>,
    unexpected: VecDeque<(u64, Vec<u8>)>,
    cq: Vec<Cqe>,
    /// The next completion delivered to this end carries an error.
    fail_next: bool,
    bad_deregs: usize,
    /// Device registrations made (`register_device`), and the bytes they covered.
    device_regs: usize,
    device_bytes: usize,
    ops: u64,
    /// Tags of the tagged messages this end sent, in the order posted.
    tags: Vec<u64>,
    /// What this end's polls handed out, in that order: received messages and remote writes.
    handed: Vec<Handed>,
}

/// A completion a poll handed out: a received message's tag, or a remote write's CQ data (the
/// bits the link carried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handed {
    Recv(u64),
    RemoteWrite(u64),
}

struct State {
    order: Order,
    rng: u64,
    again_every: u64,
    cq_data_mask: u64,
    linger: u64,
    remote_len: bool,
    calls: u64,
    wire: Vec<Action>,
    ends: [End; 2],
}

/// The connection between two fake rails; tests reach it to inject faults and look inside.
pub struct Link {
    id: u64,
    state: Mutex<State>,
}

pub struct FakeRail {
    side: usize,
    link: Arc<Link>,
    limits: Limits,
    device_fails: bool,
}

pub type Rails = Vec<Box<dyn Rail>>;

static NEXT_LINK: AtomicU64 = AtomicU64::new(1);

/// `rails` connected pairs of fake rails: (one end's rails, the other end's, the links).
pub fn pair(rails: usize, cfg: &Config) -> (Rails, Rails, Vec<Arc<Link>>) {
    let (mut a, mut b, mut links) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rails {
        let seed = match cfg.order {
            Order::Shuffled(s) => s.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(r as u64 + 1) | 1,
            _ => 1,
        };
        let state = State {
            order: cfg.order,
            rng: seed,
            again_every: cfg.again_every,
            cq_data_mask: if cfg.cq_data_size >= 8 { !0 } else { (1 << (8 * cfg.cq_data_size)) - 1 },
            linger: cfg.linger,
            remote_len: cfg.remote_len,
            calls: 0,
            wire: Vec::new(),
            ends: Default::default(),
        };
        let link = Arc::new(Link { id: NEXT_LINK.fetch_add(1, Ordering::Relaxed), state: Mutex::new(state) });
        let limits = Limits {
            provider: "fake".into(),
            fabric: "fake".into(),
            domain: format!("fake{r}"),
            max_msg: cfg.max_msg,
            inject: 64,
            write_data: cfg.write_data && cfg.cq_data_size >= 4,
            mr_local: true,
            hmem: cfg.hmem,
        };
        let device_fails = cfg.device_fails;
        a.push(Box::new(FakeRail { side: 0, link: link.clone(), limits: limits.clone(), device_fails }) as Box<dyn Rail>);
        b.push(Box::new(FakeRail { side: 1, link: link.clone(), limits, device_fails }) as Box<dyn Rail>);
        links.push(link);
    }
    (a, b, links)
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn reorder<T>(v: &mut [T], order: Order, rng: &mut u64) {
    match order {
        Order::AsPosted => {}
        Order::Reversed => v.reverse(),
        Order::Shuffled(_) => {
            for i in (1..v.len()).rev() {
                let j = (xorshift(rng) % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
        }
    }
}

fn cqe(kind: CqKind, ctx: u64) -> Cqe {
    Cqe { ctx, kind, len: 0, tag: 0, data: 0, err: None }
}

fn fail(what: &str) -> Error {
    Error::failure(format!("fake provider: {what}"))
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The next completion delivered to end `side` (0 or 1) carries an error.
    pub fn fail_next(&self, side: usize) {
        self.lock().ends[side].fail_next = true;
    }
    /// Registrations live on end `side`.
    pub fn live_mrs(&self, side: usize) -> usize {
        self.lock().ends[side].mrs.len()
    }
    /// Device registrations end `side` made so far, and the bytes they covered.
    pub fn device_regs(&self, side: usize) -> (usize, usize) {
        let s = self.lock();
        (s.ends[side].device_regs, s.ends[side].device_bytes)
    }
    /// Device registrations live on end `side`.
    pub fn live_device_mrs(&self, side: usize) -> usize {
        self.lock().ends[side].mrs.values().filter(|r| r.device).count()
    }
    /// Deregistrations of keys that were not registered, on end `side`.
    pub fn bad_deregs(&self, side: usize) -> usize {
        self.lock().ends[side].bad_deregs
    }
    /// Operations end `side` posted (taken, not answered Again).
    pub fn ops(&self, side: usize) -> u64 {
        self.lock().ends[side].ops
    }
    /// Tags of the tagged messages end `side` sent.
    pub fn tags(&self, side: usize) -> Vec<u64> {
        self.lock().ends[side].tags.clone()
    }
    /// A tagged message from end `from` (a peer that breaks the protocol): it lands on the
    /// other end at its next poll; its send completion (context 0) goes to `from`.
    pub fn inject_tagged(&self, from: usize, tag: u64, payload: &[u8]) {
        self.lock().wire.push(Action::Send { from, tag, data: payload.to_vec(), ctx: 0 });
    }
    /// A remote write completion with CQ data `data` (and no bytes) for end `to`'s next poll.
    pub fn inject_remote_write(&self, to: usize, data: u64) {
        let mut c = cqe(CqKind::RemoteWrite, 0);
        c.data = data;
        self.lock().ends[to].cq.push(c);
    }
    /// What end `side`'s polls handed out, in order.
    pub fn handed(&self, side: usize) -> Vec<Handed> {
        self.lock().ends[side].handed.clone()
    }
}

impl State {
    /// Whether this operation is answered Again.
    fn again(&mut self) -> bool {
        self.calls += 1;
        self.again_every > 0 && self.calls.is_multiple_of(self.again_every)
    }

    /// The local buffer of an operation lies in the registration its descriptor names (device
    /// memory only for RMA: `rma`).
    fn check_local(&self, side: usize, buf: usize, len: usize, mr: Option<&Mr>, rma: bool) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mr = mr.ok_or_else(|| fail("buffer passed without a descriptor"))?;
        match self.ends[side].mrs.get(&mr.key) {
            Some(r) if r.device && !rma => Err(fail(&format!("device memory {buf:#x}+{len} given to a tagged send or receive"))),
            Some(r) if r.addr == mr.desc && buf >= r.addr && buf + len <= r.addr + r.len => Ok(()),
            Some(_) => Err(fail(&format!("buffer {buf:#x}+{len} outside the registration its descriptor names"))),
            None => Err(fail(&format!("descriptor of an unknown registration (key {:#x})", mr.key))),
        }
    }

    /// The peer's memory for `len` bytes at `raddr` with key `rkey`, if the access is allowed.
    fn remote(&self, to: usize, raddr: u64, rkey: u64, len: usize) -> Option<usize> {
        let r = self.ends[to].mrs.get(&rkey)?;
        let off = raddr.checked_sub(r.base)? as usize;
        (r.remote && off + len <= r.len).then_some(r.addr + off)
    }

    fn deliver(&mut self, to: usize, p: &PostedRecv, tag: u64, data: &[u8]) {
        let mut c = cqe(CqKind::Recv, p.ctx);
        c.tag = tag;
        c.len = data.len();
        if data.len() > p.len {
            c.err = Some(format!("message of {} bytes truncated to {}", data.len(), p.len));
        } else if !data.is_empty() {
            // SAFETY: the receive's buffer is valid for p.len >= data.len() bytes of writes until
            // its completion (the Rail contract), which has not been delivered yet.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.buf as *mut u8, data.len()) };
        }
        self.ends[to].cq.push(c);
    }

    fn apply(&mut self, a: Action) {
        match a {
            Action::Send { from, tag, data, ctx } => {
                let to = 1 - from;
                let hit = self.ends[to].posted.iter().position(|p| (p.tag & !p.ignore) == (tag & !p.ignore));
                match hit {
                    Some(i) => {
                        let p = self.ends[to].posted.remove(i);
                        self.deliver(to, &p, tag, &data);
                    }
                    None => self.ends[to].unexpected.push_back((tag, data)),
                }
                self.ends[from].cq.push(cqe(CqKind::Send, ctx));
            }
            Action::Write { from, data, cq_data, raddr, rkey, ctx } => {
                let to = 1 - from;
                let mut c = cqe(CqKind::Write, ctx);
                match self.remote(to, raddr, rkey, data.len()) {
                    Some(dst) => {
                        // SAFETY: dst..dst+len lies in memory the peer registered for remote
                        // access and has not deregistered (it must keep it valid meanwhile).
                        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst as *mut u8, data.len()) };
                        let mut r = cqe(CqKind::RemoteWrite, 0);
                        // What the link does not carry comes back as noise.
                        let noise = if self.cq_data_mask == !0 { 0 } else { xorshift(&mut self.rng) & !self.cq_data_mask };
                        r.data = (cq_data & self.cq_data_mask) | noise;
                        r.len = if self.remote_len { data.len() } else { 0 };
                        self.ends[to].cq.push(r);
                    }
                    None => c.err = Some(format!("remote access error: write of {} bytes at {raddr:#x} key {rkey:#x}", data.len())),
                }
                self.ends[from].cq.push(c);
            }
            Action::Read { from, buf, len, raddr, rkey, ctx } => {
                let to = 1 - from;
                let mut c = cqe(CqKind::Read, ctx);
                match self.remote(to, raddr, rkey, len) {
                    // SAFETY: the source lies in the peer's remote-readable registration, the
                    // destination is the reader's buffer, valid until this completion.
                    Some(src) => unsafe { std::ptr::copy_nonoverlapping(src as *const u8, buf as *mut u8, len) },
                    None => c.err = Some(format!("remote access error: read of {len} bytes at {raddr:#x} key {rkey:#x}")),
                }
                self.ends[from].cq.push(c);
            }
        }
    }
}

impl FakeRail {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.link.lock()
    }

    fn reg(&mut self, ptr: *const u8, len: usize, remote: bool, device: bool) -> Result<Mr> {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(0x51);
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        // Remote addresses are offsets from a base the provider picks (no FI_MR_VIRT_ADDR).
        let base = key << 36;
        self.lock().ends[self.side].mrs.insert(key, Reg { addr: ptr as usize, len, remote, base, device });
        Ok(Mr { desc: ptr as usize, key, remote_base: base })
    }

    /// Common checks of an operation that goes to the peer; Ok(false): answer Again.
    fn outbound(&self, s: &mut State, buf: usize, len: usize, mr: Option<&Mr>, rma: bool) -> Result<bool> {
        if !s.ends[self.side].connected {
            return Err(fail("operation before connect"));
        }
        if len as u64 > self.limits.max_msg {
            return Err(fail(&format!("operation of {len} bytes exceeds max_msg {}", self.limits.max_msg)));
        }
        s.check_local(self.side, buf, len, mr, rma)?;
        if s.again() {
            return Ok(false);
        }
        s.ends[self.side].ops += 1;
        Ok(true)
    }
}

impl Rail for FakeRail {
    fn limits(&self) -> &Limits {
        &self.limits
    }

    fn name(&self) -> Vec<u8> {
        format!("fake-{}-{}", self.link.id, self.side).into_bytes()
    }

    fn connect(&mut self, peer: &[u8]) -> Result<()> {
        if peer != format!("fake-{}-{}", self.link.id, 1 - self.side).as_bytes() {
            return Err(fail(&format!("unknown peer {:?}", String::from_utf8_lossy(peer))));
        }
        self.lock().ends[self.side].connected = true;
        Ok(())
    }

    fn register(&mut self, ptr: *const u8, len: usize, remote: bool) -> Result<Mr> {
        self.reg(ptr, len, remote, false)
    }

    fn register_device(&mut self, ptr: *const u8, len: usize, remote: bool, _device: i32) -> Result<Mr> {
        if !self.limits.hmem {
            return Err(fail("device memory registered without FI_HMEM"));
        }
        if self.device_fails {
            return Err(fail("FI_HMEM_NEURON registration: Function not implemented"));
        }
        let mr = self.reg(ptr, len, remote, true)?;
        let mut s = self.lock();
        s.ends[self.side].device_regs += 1;
        s.ends[self.side].device_bytes += len;
        Ok(mr)
    }

    fn deregister(&mut self, mr: &Mr) {
        let mut s = self.lock();
        if s.ends[self.side].mrs.remove(&mr.key).is_none() {
            s.ends[self.side].bad_deregs += 1;
        }
    }

    unsafe fn tsend(&mut self, buf: *const u8, len: usize, mr: Option<&Mr>, tag: u64, ctx: u64) -> Result<Posted> {
        let link = self.link.clone();
        let mut s = link.lock();
        if !self.outbound(&mut s, buf as usize, len, mr, false)? {
            return Ok(Posted::Again);
        }
        let data = if len == 0 {
            Vec::new()
        } else {
            // SAFETY: the caller keeps `buf` valid for `len` bytes (the Rail contract).
            unsafe { std::slice::from_raw_parts(buf, len) }.to_vec()
        };
        s.ends[self.side].tags.push(tag);
        s.wire.push(Action::Send { from: self.side, tag, data, ctx });
        Ok(Posted::Ok)
    }

    unsafe fn trecv(&mut self, buf: *mut u8, len: usize, mr: Option<&Mr>, tag: u64, ignore: u64, ctx: u64) -> Result<Posted> {
        let link = self.link.clone();
        let mut s = link.lock();
        s.check_local(self.side, buf as usize, len, mr, false)?;
        if s.again() {
            return Ok(Posted::Again);
        }
        s.ends[self.side].ops += 1;
        let p = PostedRecv { buf: buf as usize, len, tag, ignore, ctx };
        let end = &mut s.ends[self.side];
        match end.unexpected.iter().position(|(t, _)| (t & !ignore) == (tag & !ignore)) {
            Some(i) => {
                let (t, data) = end.unexpected.remove(i).expect("found");
                s.deliver(self.side, &p, t, &data);
            }
            None => end.posted.push(p),
        }
        Ok(Posted::Ok)
    }

    unsafe fn write_data(
        &mut self,
        buf: *const u8,
        len: usize,
        mr: Option<&Mr>,
        data: u64,
        raddr: u64,
        rkey: u64,
        ctx: u64,
    ) -> Result<Posted> {
        let link = self.link.clone();
        let mut s = link.lock();
        if !self.limits.write_data {
            return Err(fail("write_data is not offered"));
        }
        if !self.outbound(&mut s, buf as usize, len, mr, true)? {
            return Ok(Posted::Again);
        }
        // SAFETY: the caller keeps `buf` valid for `len` bytes (the Rail contract).
        let bytes = if len == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(buf, len) }.to_vec() };
        s.wire.push(Action::Write { from: self.side, data: bytes, cq_data: data, raddr, rkey, ctx });
        Ok(Posted::Ok)
    }

    unsafe fn read(&mut self, buf: *mut u8, len: usize, mr: Option<&Mr>, raddr: u64, rkey: u64, ctx: u64) -> Result<Posted> {
        let link = self.link.clone();
        let mut s = link.lock();
        if !self.outbound(&mut s, buf as usize, len, mr, true)? {
            return Ok(Posted::Again);
        }
        s.wire.push(Action::Read { from: self.side, buf: buf as usize, len, raddr, rkey, ctx });
        Ok(Posted::Ok)
    }

    fn poll(&mut self, out: &mut Vec<Cqe>) -> Result<()> {
        let mut s = self.lock();
        let st = &mut *s;
        let mut wire = std::mem::take(&mut st.wire);
        reorder(&mut wire, st.order, &mut st.rng);
        for a in wire {
            if st.linger > 0 && xorshift(&mut st.rng) % 100 < st.linger {
                st.wire.push(a);
            } else {
                st.apply(a);
            }
        }
        let mut cq = std::mem::take(&mut st.ends[self.side].cq);
        reorder(&mut cq, st.order, &mut st.rng);
        let end = &mut st.ends[self.side];
        for c in &cq {
            match c.kind {
                CqKind::Recv => end.handed.push(Handed::Recv(c.tag)),
                CqKind::RemoteWrite => end.handed.push(Handed::RemoteWrite(c.data & st.cq_data_mask)),
                _ => {}
            }
        }
        if st.ends[self.side].fail_next
            && let Some(c) = cq.first_mut()
        {
            c.err = Some("injected failure".into());
            st.ends[self.side].fail_next = false;
        }
        out.extend(cq);
        Ok(())
    }

    fn wait_fd(&self) -> Option<RawFd> {
        None
    }
}
