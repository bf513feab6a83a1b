//! What both directions share: the rails and their queues of operations the provider did not
//! take yet (`Posted::Again`), the bounce receives, the pool of registered send buffers, the
//! registration cache and the per-rail byte counters.

use super::ctrl::{CTRL_SIZE, Ctx, EAGER_MAX, STRIPE};
use super::mr::{MrCache, RegionMr};
use crate::config::MAX_PENDING_PER_COMM;
use crate::status::{Error, Result};
use crate::tensor::Region;
use crate::transport::Kind;
use crate::transport::ofi::rail::{Cqe, Mr, Posted, Rail};
use std::alloc::Layout;
use std::collections::VecDeque;

/// Bounce receives of a receiving communicator, over all its rails: twice the messages a
/// communicator may have in flight, so that eager messages waiting for their receive never hold
/// every bounce buffer of a rail (control messages always find one).
const BOUNCES: usize = 2 * MAX_PENDING_PER_COMM;
/// At least this many bounce receives on each rail of a receiving communicator.
const MIN_BOUNCES_PER_RAIL: usize = 32;
/// Registered send buffers (eager copies and control payloads); more wait in a backlog.
const SLOTS: usize = MAX_PENDING_PER_COMM;

/// One operation, kept until the provider takes it. Addresses are plain numbers: the memory is
/// held by the message (or the pools) until the operation's completion.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Send { buf: usize, len: usize, mr: Mr, tag: u64, ctx: u64 },
    Recv { buf: usize, len: usize, mr: Mr, ctx: u64 },
    Write { buf: usize, len: usize, mr: Option<Mr>, data: u64, raddr: u64, rkey: u64, ctx: u64 },
    Read { buf: usize, len: usize, mr: Option<Mr>, raddr: u64, rkey: u64, ctx: u64 },
}

/// Page-aligned buffers of `size` bytes each, allocated once; only reached through raw pointers
/// (the provider writes into them behind the compiler's back).
struct Pool {
    base: *mut u8,
    count: usize,
    size: usize,
}

// SAFETY: the pool is plain memory owned by one communicator, used under its lock.
unsafe impl Send for Pool {}

impl Pool {
    fn new(count: usize, size: usize) -> Pool {
        let len = count * size;
        if len == 0 {
            return Pool { base: std::ptr::NonNull::dangling().as_ptr(), count: 0, size };
        }
        let layout = Layout::from_size_align(len, 4096).expect("pool layout");
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Pool { base, count, size }
    }
    fn len(&self) -> usize {
        self.count * self.size
    }
    fn at(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.count);
        self.base.wrapping_add(i * self.size)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.len() > 0 {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { std::alloc::dealloc(self.base, Layout::from_size_align(self.len(), 4096).expect("pool layout")) };
        }
    }
}

pub struct Core {
    /// First field: the endpoints close (and stop writing into the pools) before the pools go.
    pub rails: Vec<Box<dyn Rail>>,
    pub nrails: usize,
    pub write_mode: bool,
    /// Stripe of large messages (`STRIPE`, less where a rail's `max_msg` is smaller): read mode's
    /// reads, and write mode's bytes per rail used.
    pub stripe: u64,
    /// The largest eager message (`EAGER_MAX`, less where a rail's `max_msg` is smaller).
    pub eager_max: usize,
    /// The smallest `max_msg` of the rails.
    pub max_msg: u64,
    /// Device memory goes as it is: every rail offers `FI_HMEM`, and no registration of device
    /// memory has failed on this communicator yet.
    pub hmem: bool,
    pub started: bool,
    queued: Vec<VecDeque<Op>>,
    bytes: Vec<u64>,
    /// Per rail: its bounce buffers and their registration on that rail.
    bounce: Vec<(Pool, Option<Mr>)>,
    /// Send buffers, registered on every rail; free ones; payloads waiting for one.
    slots: Pool,
    slot_mrs: Vec<Mr>,
    free: Vec<usize>,
    backlog: VecDeque<(usize, u64, Vec<u8>)>,
    pub cache: MrCache,
    /// Acknowledgements of eager messages are held back (`send_ack`) while a spinning caller
    /// takes its receive: it is usually about to answer, and its answer goes first.
    pub hold_acks: bool,
    held: Vec<(u64, [u8; ACK_LEN])>,
}

/// An acknowledgement's payload (`ctrl::Ack`).
const ACK_LEN: usize = 16;

impl Core {
    /// Allocates and registers the pools and queues the bounce receives (posted at `start`).
    pub fn new(kind: Kind, mut rails: Vec<Box<dyn Rail>>, write_mode: bool) -> Result<Core> {
        let nrails = rails.len();
        if nrails == 0 || nrails > super::ctrl::MAX_RAILS {
            return Err(Error::invalid(format!("{nrails} rails (1 to {} are supported)", super::ctrl::MAX_RAILS)));
        }
        let l0 = rails[0].limits().clone();
        let mut max_msg = u64::MAX;
        for r in &rails {
            let l = r.limits();
            if l.provider != l0.provider || l.write_data != l0.write_data {
                return Err(Error::invalid(format!("rails of different providers ({} and {})", l0.provider, l.provider)));
            }
            max_msg = max_msg.min(l.max_msg);
        }
        if write_mode && !l0.write_data {
            return Err(Error::invalid(format!("provider {} offers no RMA write with remote CQ data", l0.provider)));
        }
        if max_msg < CTRL_SIZE as u64 {
            return Err(Error::invalid(format!("provider {} moves at most {max_msg} bytes per message", l0.provider)));
        }
        // Bounce receives: eager messages land on any rail of a receiver; a sender only gets
        // control messages, all on rail 0. Send buffers: eager copies on a sender, control
        // payloads on a receiver.
        let (bounces, bounce_size, slot_size) = match kind {
            Kind::Recv => ((BOUNCES / nrails).max(MIN_BOUNCES_PER_RAIL), EAGER_MAX, CTRL_SIZE),
            Kind::Send => (BOUNCES, CTRL_SIZE, EAGER_MAX),
        };
        let mut c = Core {
            nrails,
            write_mode,
            stripe: STRIPE.min(max_msg),
            eager_max: EAGER_MAX.min(max_msg as usize),
            max_msg,
            hmem: rails.iter().all(|r| r.limits().hmem),
            started: false,
            queued: (0..nrails).map(|_| VecDeque::new()).collect(),
            bytes: vec![0; nrails],
            bounce: Vec::new(),
            slots: Pool::new(SLOTS, slot_size),
            slot_mrs: Vec::new(),
            free: (0..SLOTS).rev().collect(),
            backlog: VecDeque::new(),
            cache: MrCache::default(),
            hold_acks: false,
            held: Vec::new(),
            rails: Vec::new(),
        };
        // From here on Drop deregisters what was registered.
        c.slot_mrs = super::mr::register_all(&mut rails, c.slots.base, c.slots.len(), false)?;
        c.rails = rails;
        for r in 0..nrails {
            let pool = Pool::new(if kind == Kind::Recv || r == 0 { bounces } else { 0 }, bounce_size);
            let mr = if pool.len() > 0 { Some(c.rails[r].register(pool.base, pool.len(), false)?) } else { None };
            c.bounce.push((pool, mr));
            for slot in 0..c.bounce[r].0.count {
                c.repost(r, slot)?;
            }
        }
        Ok(c)
    }

    /// Queues an operation on `rail` and posts what the rail takes.
    pub fn submit(&mut self, rail: usize, op: Op) -> Result<()> {
        self.queued[rail].push_back(op);
        self.flush(rail)
    }

    /// Posts `rail`'s queued operations until the provider answers Again (nothing before start).
    pub fn flush(&mut self, rail: usize) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        while let Some(op) = self.queued[rail].front().copied() {
            let r = &mut self.rails[rail];
            // SAFETY: every address in a queued operation lies in memory held until the
            // operation's completion: a pool of this Core, or a message's region kept by its
            // item (which is removed only once its operations completed).
            let (posted, n) = unsafe {
                match op {
                    Op::Send { buf, len, mr, tag, ctx } => (r.tsend(buf as *const u8, len, Some(&mr), tag, ctx)?, len),
                    Op::Recv { buf, len, mr, ctx } => (r.trecv(buf as *mut u8, len, Some(&mr), 0, !0, ctx)?, 0),
                    Op::Write { buf, len, mr, data, raddr, rkey, ctx } => {
                        (r.write_data(buf as *const u8, len, mr.as_ref(), data, raddr, rkey, ctx)?, len)
                    }
                    Op::Read { buf, len, mr, raddr, rkey, ctx } => (r.read(buf as *mut u8, len, mr.as_ref(), raddr, rkey, ctx)?, len),
                }
            };
            if posted == Posted::Again {
                break;
            }
            self.queued[rail].pop_front();
            self.bytes[rail] += n as u64;
        }
        Ok(())
    }

    pub fn flush_all(&mut self) -> Result<()> {
        (0..self.nrails).try_for_each(|r| self.flush(r))
    }

    /// Operations or payloads wait for the provider or for a send buffer.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn has_queued(&self) -> bool {
        self.queued.iter().any(|q| !q.is_empty()) || !self.backlog.is_empty()
    }

    /// Reads `rail`'s completions.
    pub fn poll(&mut self, rail: usize, out: &mut Vec<Cqe>) -> Result<()> {
        self.rails[rail].poll(out)
    }

    /// Counts bytes a rail carried that no local operation posted (received messages and the
    /// peer's writes).
    pub fn count(&mut self, rail: usize, n: u64) {
        self.bytes[rail] += n;
    }
    pub fn rail_bytes(&self) -> Vec<u64> {
        self.bytes.clone()
    }

    /// Gives bounce `slot` of `rail` back to the provider.
    pub fn repost(&mut self, rail: usize, slot: usize) -> Result<()> {
        let (pool, mr) = &self.bounce[rail];
        let (Some(mr), true) = (*mr, slot < pool.count) else {
            return Err(Error::failure(format!("no bounce buffer {slot} on rail {rail}")));
        };
        let op = Op::Recv { buf: pool.at(slot) as usize, len: pool.size, mr, ctx: Ctx::Bounce(slot).encode() };
        self.submit(rail, op)
    }

    /// The `len` bytes a bounce receive holds.
    pub fn bounce_bytes(&self, rail: usize, slot: usize, len: usize) -> Result<&[u8]> {
        let pool = &self.bounce[rail].0;
        if slot >= pool.count || len > pool.size {
            return Err(Error::failure(format!("receive of {len} bytes into bounce buffer {slot} on rail {rail}")));
        }
        // SAFETY: the slot lies in the pool; its receive completed, so the provider no longer
        // writes it until it is reposted (after this borrow ends).
        Ok(unsafe { std::slice::from_raw_parts(pool.at(slot), len) })
    }

    /// Sends `payload` tagged `tag` on `rail` from a send buffer (now, or when one frees up).
    pub fn send_tagged(&mut self, rail: usize, tag: u64, payload: &[u8]) -> Result<()> {
        if payload.len() > self.slots.size {
            return Err(Error::failure(format!("tagged payload of {} bytes exceeds a send buffer", payload.len())));
        }
        match self.free.pop() {
            Some(slot) => self.send_from(slot, rail, tag, payload),
            None => {
                self.backlog.push_back((rail, tag, payload.to_vec()));
                Ok(())
            }
        }
    }

    /// An eager message's acknowledgement (rail 0): sent now, or held while `hold_acks`.
    pub fn send_ack(&mut self, tag: u64, payload: &[u8]) -> Result<()> {
        if self.hold_acks && payload.len() == ACK_LEN {
            let mut b = [0u8; ACK_LEN];
            b.copy_from_slice(payload);
            self.held.push((tag, b));
            return Ok(());
        }
        self.send_tagged(0, tag, payload)
    }

    /// Acknowledgements are held back.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// Sends the held acknowledgements.
    pub fn send_held(&mut self) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        for (tag, b) in std::mem::take(&mut self.held) {
            self.send_tagged(0, tag, &b)?;
        }
        Ok(())
    }

    fn send_from(&mut self, slot: usize, rail: usize, tag: u64, payload: &[u8]) -> Result<()> {
        let buf = self.slots.at(slot);
        // SAFETY: the slot is free (its last send completed) and holds `size` >= len bytes.
        unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), buf, payload.len()) };
        let op = Op::Send { buf: buf as usize, len: payload.len(), mr: self.slot_mrs[rail], tag, ctx: Ctx::Slot(slot).encode() };
        self.submit(rail, op)
    }

    /// A send from buffer `slot` completed: the next waiting payload takes it.
    pub fn slot_done(&mut self, slot: usize) -> Result<()> {
        if slot >= self.slots.count || self.free.contains(&slot) {
            return Err(Error::failure(format!("send completion for send buffer {slot}, not in use")));
        }
        match self.backlog.pop_front() {
            Some((rail, tag, payload)) => self.send_from(slot, rail, tag, &payload),
            None => {
                self.free.push(slot);
                Ok(())
            }
        }
    }

    pub fn register(&mut self, region: &Region) -> Result<Option<RegionMr>> {
        self.cache.register(&mut self.rails, region)
    }

    pub fn release(&mut self, r: Option<RegionMr>) {
        self.cache.release(&mut self.rails, r)
    }
}

/// The address RMA operations use for a region's first byte: its device address for device
/// memory (registered as such), else its host address. Only handed to the provider.
pub fn rma_addr(region: &Region) -> usize {
    region.device_addr().map_or(region.ptr() as usize, |d| d.va)
}

impl Drop for Core {
    fn drop(&mut self) {
        // The endpoints stop first: nothing posted may still use a buffer or registration below.
        for r in &mut self.rails {
            r.quiesce();
        }
        self.cache.clear(&mut self.rails);
        let mrs = std::mem::take(&mut self.slot_mrs);
        super::mr::deregister_all(&mut self.rails, &mrs);
        for (r, (_, mr)) in self.bounce.iter().enumerate() {
            if let Some(mr) = mr {
                self.rails[r].deregister(mr);
            }
        }
    }
}
