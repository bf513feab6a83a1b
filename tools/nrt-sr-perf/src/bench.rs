//! One side of a run (sender or receiver): set-up, the per-size phases, tear-down.
//!
//! Message order per size, identical on both sides (FIFO per communicator):
//!   warm-up   data comms: `warmup` messages each (the receiver verifies them)
//!   bw        comm 0: 8-byte barrier ping, echo comm: 8-byte pong; then `iters` messages on
//!             every data comm with `window` in flight
//!   lat       comm 0 → echo comm ping-pongs (warm-up pings first, untimed)
//! Start-up: the sender sends a hash of the plan on comm 0 and the receiver answers it on the
//! echo comm (mismatched options fail both sides). End: the receiver sends the number of
//! warm-up messages it verified on the echo comm, the sender answers with a goodbye on comm 0
//! and waits for its acknowledgement, the receiver closes once it has the goodbye, then the
//! sender (--local: after the child exited): nothing is in flight on either side.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::cli::{Memory, Poll, RunArgs};
use crate::error::{Context, Error, Result};
use crate::ffi::{self, Comm, Lnc, Request, Runtime, Tensor};
use crate::params::{self, SizePlan, human_size};
use crate::pattern;
use crate::progress::Progress;
use crate::report::{SizeResult, rss_bytes};
use crate::stats;

/// Something to check while waiting (the --local child still running).
pub trait Watch {
    fn check(&mut self) -> Result<()>;
    /// Whether `peer_exited` can tell when the peer process is gone (--local).
    fn sees_peer_exit(&self) -> bool {
        false
    }
    /// The peer process is known to have exited successfully.
    fn peer_exited(&self) -> bool {
        false
    }
}

pub struct NoWatch;

impl Watch for NoWatch {
    fn check(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What one side measured.
pub struct Outcome {
    pub results: Vec<SizeResult>,
    pub cpu_s: f64,
    pub bw_bytes: u64,
    pub rss_bytes_per_comm: f64,
    /// Receiver: warm-up messages it verified; sender: what the receiver reported.
    pub verified_messages: u64,
    /// Warm-up messages of the plan (all of them are verified in a successful run).
    pub expected_verified: u64,
}

/// Hooks for the table: called by the sender once the run is set up and after each size.
pub trait Sink {
    fn start(&mut self, plans: &[SizePlan]);
    fn size_done(&mut self, r: &SizeResult);
}

const CTL_BYTES: usize = 8;
/// The sender's last control message.
const GOODBYE: u64 = 0x6f6f_6462_7965_2121;
const CHUNK: usize = 4 << 20;

struct Side<'a> {
    args: &'a RunArgs,
    sender: bool,
    lnc: &'a Lnc,
    echo: &'a Comm,
    comms: &'a [Comm],
    ctl_send: Tensor,
    ctl_recv: Tensor,
    op_timeout: Duration,
    watch: &'a mut dyn Watch,
    scratch_a: Vec<u8>,
    scratch_b: Vec<u8>,
}

/// Per communicator, the tensors the bandwidth phase cycles through (one per in-flight slot unless
/// --footprint asks for more); plus the latency echo buffers.
struct Pool {
    memory: Memory,
    /// This side's byte offset of each message in the warm-up and bandwidth phases (the slot
    /// tensors hold it in front of the message).
    offset: u64,
    slots: Vec<Vec<Option<Tensor>>>,
    /// Latency phase: the sender's echo target; the receiver's second and third buffers.
    lat: Vec<Tensor>,
}

impl Pool {
    fn new(comms: usize, memory: Memory, offset: u64) -> Pool {
        Pool { memory, offset, slots: (0..comms).map(|_| Vec::new()).collect(), lat: Vec::new() }
    }

    fn fresh(memory: Memory, size: u64, name: &str) -> Result<Tensor> {
        let t = match memory {
            Memory::Own => Tensor::allocate(size as usize, name),
            Memory::Attached => Tensor::attached(size as usize, name),
        }
        .ctx(|| format!("allocating a {} tensor ({})", human_size(size), memory.as_str()))?;
        // Touch every page now, so page faults stay out of the measurement.
        t.memset(0, 0xA5, size as usize).ctx(|| format!("touching a {} tensor", human_size(size)))?;
        Ok(t)
    }

    /// Makes slots 0..tensors of every communicator hold a tensor of at least `size` bytes and
    /// frees the others (a slot's old tensor is freed before its new one is allocated).
    fn prepare(&mut self, size: u64, tensors: u64, lat: bool) -> Result<()> {
        let w = tensors as usize;
        let (memory, need) = (self.memory, size + self.offset);
        for v in &mut self.slots {
            v.truncate(w);
            v.resize_with(w, || None);
            for slot in v.iter_mut() {
                if slot.as_ref().is_some_and(|t| t.size() as u64 >= need) {
                    continue;
                }
                *slot = None;
                *slot = Some(Self::fresh(memory, need, "nrt-sr-perf")?);
            }
        }
        if lat {
            if self.lat.first().is_none_or(|t| (t.size() as u64) < size) {
                self.lat.clear();
                for _ in 0..2 {
                    self.lat.push(Self::fresh(memory, size, "nrt-sr-perf-echo")?);
                }
            }
        } else {
            self.lat.clear();
        }
        Ok(())
    }

    fn slot(&self, comm: usize, slot: usize) -> &Tensor {
        self.slots[comm][slot].as_ref().expect("prepared slot")
    }
}

fn elapsed_ms(d: Duration) -> u128 {
    d.as_millis()
}

impl Side<'_> {
    fn role(&self) -> &'static str {
        if self.sender { "sender" } else { "receiver" }
    }

    /// Polls `req` until done (spinning), bounded by the op timeout; returns the byte count.
    fn wait(&mut self, req: &mut Request, what: &dyn Fn() -> String) -> Result<usize> {
        let start = Instant::now();
        let mut spins: u32 = 0;
        loop {
            if let Some(n) = req.test().ctx(what)? {
                return Ok(n);
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                self.check_stall(start, what)?;
            }
        }
    }

    fn check_stall(&mut self, since: Instant, what: &dyn Fn() -> String) -> Result<()> {
        self.watch.check()?;
        if since.elapsed() > self.op_timeout {
            return Err(Error::msg(format!(
                "{}: no progress for {} ms (--op-timeout-ms) ({})",
                self.role(),
                elapsed_ms(self.op_timeout),
                what()
            )));
        }
        Ok(())
    }

    fn expect_size(&self, got: usize, want: u64, what: &dyn Fn() -> String) -> Result<()> {
        if got as u64 != want {
            return Err(Error::msg(format!(
                "{}: a request completed with {got} bytes, expected {want} ({})",
                self.role(),
                what()
            )));
        }
        Ok(())
    }

    fn write_ctl(&self, v: u64) -> Result<()> {
        self.ctl_send.write(0, &v.to_le_bytes()).ctx(|| "writing a control message".into())
    }

    fn read_ctl(&self) -> Result<u64> {
        let mut b = [0u8; CTL_BYTES];
        self.ctl_recv.read(0, &mut b).ctx(|| "reading a control message".into())?;
        Ok(u64::from_le_bytes(b))
    }

    /// Sender: `value` out on comm 0, the answer back on the echo comm. Receiver: the value in
    /// on comm 0, `answer(value)` back on the echo comm. Returns (sent or received value,
    /// answer).
    fn ping_pong(&mut self, value: u64, answer: &dyn Fn(u64) -> u64, what: &str) -> Result<(u64, u64)> {
        let ctx = || format!("{what} on communicator 0 and the echo communicator");
        if self.sender {
            self.write_ctl(value)?;
            let mut r = self.echo.recv(&self.ctl_recv, 0, CTL_BYTES).ctx(ctx)?;
            let mut s = self.comms[0].send(&self.ctl_send, 0, CTL_BYTES).ctx(ctx)?;
            let n = self.wait(&mut s, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)?;
            let n = self.wait(&mut r, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)?;
            Ok((value, self.read_ctl()?))
        } else {
            let mut r = self.comms[0].recv(&self.ctl_recv, 0, CTL_BYTES).ctx(ctx)?;
            let n = self.wait(&mut r, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)?;
            self.lnc.flush().ctx(ctx)?;
            let got = self.read_ctl()?;
            let ans = answer(got);
            self.write_ctl(ans)?;
            let mut s = self.echo.send(&self.ctl_send, 0, CTL_BYTES).ctx(ctx)?;
            let n = self.wait(&mut s, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)?;
            Ok((got, ans))
        }
    }

    /// The receiver's last word: how many warm-up messages it verified.
    fn final_report(&mut self, verified: u64) -> Result<u64> {
        let ctx = || "final report on the echo communicator".to_string();
        if self.sender {
            let mut r = self.echo.recv(&self.ctl_recv, 0, CTL_BYTES).ctx(ctx)?;
            let n = self.wait(&mut r, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)?;
            self.read_ctl()
        } else {
            self.write_ctl(verified)?;
            let mut s = self.echo.send(&self.ctl_send, 0, CTL_BYTES).ctx(ctx)?;
            let n = self.wait(&mut s, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)?;
            Ok(verified)
        }
    }

    /// After the final report: the sender says goodbye on communicator 0 and waits until the
    /// receiver has it (its acknowledgement, which also carries the one for the report); the
    /// receiver waits for it. Then both close with nothing in flight, the receiver first, and
    /// neither sees a request fail. (Before: the sender left an unmatched receive to fail when the
    /// receiver closed, and the library logged two ERROR lines for a run that went well.)
    fn goodbye(&mut self) -> Result<()> {
        let ctx = || "goodbye on communicator 0".to_string();
        if self.sender {
            self.write_ctl(GOODBYE)?;
            let mut s = self.comms[0].send(&self.ctl_send, 0, CTL_BYTES).ctx(ctx)?;
            let n = self.wait(&mut s, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)
        } else {
            let mut r = self.comms[0].recv(&self.ctl_recv, 0, CTL_BYTES).ctx(ctx)?;
            let n = self.wait(&mut r, &ctx)?;
            self.expect_size(n, CTL_BYTES as u64, &ctx)?;
            match self.read_ctl()? {
                GOODBYE => Ok(()),
                v => Err(Error::msg(format!("receiver: expected the sender's goodbye, got {v:#x} ({})", ctx()))),
            }
        }
    }

    /// Sender with --local: waits until the receiver's process has exited (its status is
    /// checked by the watch).
    fn linger(&mut self) -> Result<()> {
        let ctx = || "waiting for the receiver to exit".to_string();
        let start = Instant::now();
        if self.watch.sees_peer_exit() {
            while !self.watch.peer_exited() {
                self.check_stall(start, &ctx)?;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// Writes message pattern `seed` of `len` bytes at byte `base` of `t`.
    fn fill(&mut self, t: &Tensor, base: u64, len: u64, seed: u64) -> Result<()> {
        let mut off = 0u64;
        while off < len {
            let n = ((len - off) as usize).min(CHUNK);
            let buf = &mut self.scratch_a[..n];
            pattern::fill(buf, seed, off);
            t.write((base + off) as usize, buf).ctx(|| "filling a warm-up message".into())?;
            off += n as u64;
        }
        Ok(())
    }

    /// Checks the `len` bytes at byte `base` of `t` against message pattern `seed`: the first
    /// mismatch (offset in the message, got, expected).
    fn verify(&mut self, t: &Tensor, base: u64, len: u64, seed: u64) -> Result<Option<(u64, u8, u8)>> {
        let mut off = 0u64;
        while off < len {
            let n = ((len - off) as usize).min(CHUNK);
            let got = &mut self.scratch_a[..n];
            t.read((base + off) as usize, got).ctx(|| "reading a warm-up message".into())?;
            if let Some(m) = pattern::first_mismatch(got, seed, off, &mut self.scratch_b) {
                return Ok(Some(m));
            }
            off += n as u64;
        }
        Ok(None)
    }

    /// Moves `count` messages of `size` bytes on every data communicator with up to `window` in
    /// flight on each: post, then test the oldest request of each communicator round-robin and
    /// repost in its slot as it completes. `before_post` runs before a slot is (re)posted,
    /// `after_done` after its request completed; both get (comm, slot, message index).
    #[allow(clippy::too_many_arguments)]
    fn pump(
        &mut self,
        pool: &Pool,
        size: u64,
        window: u64,
        count: u64,
        poll: Poll,
        phase: &str,
        before_post: &mut dyn FnMut(&mut Self, &Tensor, usize, u64) -> Result<()>,
        after_done: &mut dyn FnMut(&mut Self, &Tensor, usize, u64) -> Result<()>,
    ) -> Result<()> {
        let ncomm = self.comms.len();
        let sender = self.sender;
        let what = |c: usize| move || format!("{phase} phase, size {}, communicator {c}", human_size(size));
        let at = pool.offset as usize;
        let post = |side: &mut Self, c: usize, slot: usize, msg: u64| -> Result<Request> {
            let t = pool.slot(c, slot);
            before_post(side, t, c, msg)?;
            let r = if sender {
                side.comms[c].send(t, at, size as usize)
            } else {
                side.comms[c].recv(t, at, size as usize)
            };
            r.ctx(what(c))
        };
        // Split borrows: `post` needs `before_post`, the loop needs `after_done`.
        let mut post = post;
        // Per communicator: requests in flight (request, slot, message index), oldest first, and
        // how many messages were posted.
        type Ring = (VecDeque<(Request, usize, u64)>, u64);
        let mut rings: Vec<Ring> = (0..ncomm).map(|_| (VecDeque::with_capacity(window as usize), 0u64)).collect();
        let first = window.min(count);
        // Message m uses tensor m % n of its communicator: at least `window` of them, so none is
        // reused while a request on it is in flight.
        let tensors = |c: usize| pool.slots[c].len() as u64;
        for (c, ring) in rings.iter_mut().enumerate() {
            for k in 0..first {
                let slot = (k % tensors(c)) as usize;
                let r = post(self, c, slot, k)?;
                ring.0.push_back((r, slot, k));
            }
            ring.1 = first;
        }
        let mut remaining = count * ncomm as u64;
        let mut last_progress = Instant::now();
        let mut idle: u32 = 0;
        while remaining > 0 {
            let mut progressed = false;
            for (c, ring) in rings.iter_mut().enumerate() {
                let Some(front) = ring.0.front_mut() else { continue };
                let Some(got) = front.0.test().ctx(what(c))? else { continue };
                let (_, slot, msg) = ring.0.pop_front().expect("front exists");
                self.expect_size(got, size, &what(c))?;
                after_done(self, pool.slot(c, slot), c, msg)?;
                remaining -= 1;
                progressed = true;
                if ring.1 < count {
                    let m = ring.1;
                    let slot = (m % tensors(c)) as usize;
                    let r = post(self, c, slot, m)?;
                    ring.0.push_back((r, slot, m));
                    ring.1 += 1;
                }
            }
            if progressed {
                idle = 0;
                last_progress = Instant::now();
            } else {
                if poll == Poll::Yield {
                    std::thread::yield_now();
                }
                idle = idle.wrapping_add(1);
                if idle.is_multiple_of(1024) {
                    self.check_stall(last_progress, &what(0))?;
                }
            }
        }
        Ok(())
    }

    /// Warm-up: patterned messages, every byte checked by the receiver. Returns the number
    /// verified (receiver) or sent (sender).
    fn warmup(&mut self, pool: &Pool, p: &SizePlan) -> Result<u64> {
        let size = p.size;
        let window = p.window.min(p.warmup).max(1);
        let mut verified = 0u64;
        if self.sender {
            let corrupt = self.args.test_corrupt_byte;
            let mut before = |side: &mut Self, t: &Tensor, c: usize, msg: u64| -> Result<()> {
                side.fill(t, pool.offset, size, pattern::seed(size, c as u64, msg))?;
                if let (Some(off), 0, 0) = (corrupt, c, msg) {
                    let off = (pool.offset + off.min(size - 1)) as usize;
                    let mut b = [0u8; 1];
                    t.read(off, &mut b).ctx(|| "--test-corrupt-byte".into())?;
                    t.write(off, &[!b[0]]).ctx(|| "--test-corrupt-byte".into())?;
                }
                Ok(())
            };
            let mut after = |_: &mut Self, _: &Tensor, _: usize, _: u64| -> Result<()> { Ok(()) };
            self.pump(pool, size, window, p.warmup, Poll::Spin, "warm-up", &mut before, &mut after)?;
            verified = p.warmup * self.comms.len() as u64;
        } else {
            let mut before = |_: &mut Self, _: &Tensor, _: usize, _: u64| -> Result<()> { Ok(()) };
            let mut after = |side: &mut Self, t: &Tensor, c: usize, msg: u64| -> Result<()> {
                side.lnc.flush().ctx(|| "flush before verifying a warm-up message".into())?;
                if let Some((off, got, want)) = side.verify(t, pool.offset, size, pattern::seed(size, c as u64, msg))? {
                    return Err(Error::msg(format!(
                        "receiver: data verification FAILED: size {}, communicator {c}, warm-up message {msg}: \
                         first mismatch at byte offset {off}: got 0x{got:02x}, expected 0x{want:02x}",
                        if size >= 1024 { format!("{} ({size} bytes)", human_size(size)) } else { human_size(size) }
                    )));
                }
                verified += 1;
                Ok(())
            };
            self.pump(pool, size, window, p.warmup, Poll::Spin, "warm-up", &mut before, &mut after)?;
        }
        Ok(verified)
    }

    /// Bandwidth: returns the elapsed time (sender: first post to last completion).
    fn bandwidth(&mut self, pool: &Pool, p: &SizePlan) -> Result<Duration> {
        self.ping_pong(p.size, &|v| v, "barrier before the bandwidth phase")?;
        let mut none = |_: &mut Self, _: &Tensor, _: usize, _: u64| -> Result<()> { Ok(()) };
        let mut none2 = |_: &mut Self, _: &Tensor, _: usize, _: u64| -> Result<()> { Ok(()) };
        let t0 = Instant::now();
        self.pump(pool, p.size, p.window, p.iters, self.args.poll, "bandwidth", &mut none, &mut none2)?;
        let dt = t0.elapsed();
        if !self.sender {
            self.lnc.flush().ctx(|| format!("flush after the bandwidth phase, size {}", human_size(p.size)))?;
        }
        Ok(dt)
    }

    /// Latency: ping-pongs on comm 0 / the echo comm; returns half round trips in µs (sender).
    fn latency(&mut self, pool: &Pool, p: &SizePlan) -> Result<Vec<f64>> {
        let size = p.size;
        let len = size as usize;
        let warm = p.warmup.min(p.lat_iters);
        let total = warm + p.lat_iters;
        let what = || format!("latency phase, size {}", human_size(size));
        let data = pool.slot(0, 0);
        let echo_buf = pool.lat.first().expect("latency tensors prepared");
        let mut samples = Vec::with_capacity(p.lat_iters as usize);
        if self.sender {
            // Like perftest's *_lat: the echo's receive is posted before the clock starts, and the
            // round trip ends when the echo has landed; the send's own completion (the peer's
            // acknowledgement) is waited for after that, untimed, before the next ping.
            for i in 0..total {
                let mut r = self.echo.recv(echo_buf, 0, len).ctx(what)?;
                let t0 = Instant::now();
                let mut s = self.comms[0].send(data, 0, len).ctx(what)?;
                let (mut sent, mut back) = (false, None);
                let mut spins: u32 = 0;
                loop {
                    if back.is_none() {
                        if let Some(n) = r.test().ctx(what)? {
                            back = Some(t0.elapsed());
                            self.expect_size(n, size, &what)?;
                        }
                    } else if let Some(n) = s.test().ctx(what)? {
                        self.expect_size(n, size, &what)?;
                        sent = true;
                    }
                    if sent {
                        break;
                    }
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(4096) {
                        self.check_stall(t0, &what)?;
                    }
                }
                let dt = back.expect("the echo landed before the send was tested");
                if i >= warm {
                    samples.push(dt.as_secs_f64() * 1e6 / 2.0);
                }
            }
        } else {
            // Three buffers in turn: ping i lands in one, its echo goes out of it, while the
            // next ping's receive is posted on another and the previous echo may still be
            // unacknowledged from the third.
            let bufs = [data, &pool.lat[0], &pool.lat[1]];
            let mut next = Some(self.comms[0].recv(bufs[0], 0, len).ctx(what)?);
            let mut prev: Option<Request> = None;
            for i in 0..total {
                let mut r = next.take().expect("a receive is posted");
                let n = self.wait(&mut r, &what)?;
                self.expect_size(n, size, &what)?;
                // Answer first, then pre-post the next receive, then collect the previous
                // answer's completion (its acknowledgement came before this ping): the ping's
                // clock waits on none of our bookkeeping, and no buffer is reused before its
                // send completed.
                let s = self.echo.send(bufs[(i % 3) as usize], 0, len).ctx(what)?;
                if i + 1 < total {
                    next = Some(self.comms[0].recv(bufs[((i + 1) % 3) as usize], 0, len).ctx(what)?);
                }
                if let Some(mut p) = prev.replace(s) {
                    let n = self.wait(&mut p, &what)?;
                    self.expect_size(n, size, &what)?;
                }
            }
            if let Some(mut p) = prev {
                let n = self.wait(&mut p, &what)?;
                self.expect_size(n, size, &what)?;
            }
        }
        Ok(samples)
    }
}

fn wait_connected(
    comms: &[&Comm],
    deadline: Instant,
    timeout_ms: u64,
    watch: &mut dyn Watch,
    who: &str,
    args: &RunArgs,
) -> Result<()> {
    let mut done = vec![false; comms.len()];
    loop {
        let mut left = 0;
        for (i, c) in comms.iter().enumerate() {
            if !done[i] {
                done[i] =
                    c.test().ctx(|| format!("connecting {who} {i} with {} lnc {}", args.peer, args.peer_lnc()))?;
                if !done[i] {
                    left += 1;
                }
            }
        }
        if left == 0 {
            return Ok(());
        }
        watch.check()?;
        if Instant::now() >= deadline {
            return Err(Error::msg(format!(
                "timed out after {timeout_ms} ms (--connect-timeout-ms): {left} of {} {who}(s) not connected with \
                 peer {} lnc {} (is the other side running, with the same options?)",
                comms.len(),
                args.peer,
                args.peer_lnc()
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Runs one side from nrt_init to nrt_close.
pub fn run_side(
    args: &RunArgs,
    rules: params::Rules,
    sizes: &[u64],
    watch: &mut dyn Watch,
    progress: &Progress,
    sink: &mut dyn Sink,
) -> Result<Outcome> {
    let sender = args.is_sender();
    let rt = Runtime::init()?;
    let max_comms = rt.max_communicators_per_lnc()?;
    let max_pending = rt.max_pending_requests()?;
    if args.comms + 1 > max_comms.max(0) as u64 {
        return Err(Error::msg(format!(
            "--comms {} needs {} communicators per lnc (the data communicators and one echo), the library allows {max_comms}",
            args.comms,
            args.comms + 1
        )));
    }
    let rules = params::Rules { max_pending: max_pending.max(1) as u64, ..rules };
    let plans = params::plan(&rules, sizes);
    let hash = params::config_hash(&plans, args.comms, args.mode.as_str());

    let lnc = Lnc::init(&rt, args.lnc()).ctx(|| format!("lnc {}", args.lnc()))?;
    let timeout_ms = args.connect_timeout_ms;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let (peer, peer_lnc) = (args.peer.as_str(), args.peer_lnc());

    // The echo pair (receiver → sender) first, so that the data communicators' RSS is measured
    // apart from the lnc's first-connection costs.
    let echo = if sender { lnc.accept(peer, peer_lnc) } else { lnc.connect(peer, peer_lnc) }
        .ctx(|| "creating the echo communicator".into())?;
    wait_connected(&[&echo], deadline, timeout_ms, watch, "echo communicator", args)?;
    let rss0 = rss_bytes();
    let mut comms = Vec::with_capacity(args.comms as usize);
    for i in 0..args.comms {
        let c = if sender { lnc.connect(peer, peer_lnc) } else { lnc.accept(peer, peer_lnc) }
            .ctx(|| format!("creating data communicator {i}"))?;
        comms.push(c);
    }
    let refs: Vec<&Comm> = comms.iter().collect();
    wait_connected(&refs, deadline, timeout_ms, watch, "data communicator", args)?;
    let rss1 = rss_bytes();
    let rss_per_comm = match (rss0, rss1) {
        (Some(a), Some(b)) => (b as f64 - a as f64) / args.comms as f64,
        _ => f64::NAN,
    };

    let ctl_send = Tensor::allocate(CTL_BYTES, "nrt-sr-perf-ctl").ctx(|| "control tensor".into())?;
    let ctl_recv = Tensor::allocate(CTL_BYTES, "nrt-sr-perf-ctl").ctx(|| "control tensor".into())?;
    let largest = sizes.iter().copied().max().unwrap_or(1) as usize;
    let scratch_len = largest.min(CHUNK);
    let mut side = Side {
        args,
        sender,
        lnc: &lnc,
        echo: &echo,
        comms: &comms,
        ctl_send,
        ctl_recv,
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        watch,
        scratch_a: vec![0u8; scratch_len],
        scratch_b: vec![0u8; scratch_len],
    };

    // Both sides must run the same plan.
    let (_, answer) = side.ping_pong(hash, &|got| if got == hash { hash } else { !hash }, "plan check")?;
    if answer != hash {
        return Err(Error::msg(format!(
            "{}: the other side runs a different plan (sizes, iterations, window, comms or mode differ): start both \
             sides with the same options",
            side.role()
        )));
    }
    sink.start(&plans);

    let mut pool = Pool::new(comms.len(), args.memory, if side.sender { 0 } else { args.recv_offset });
    let mut results = Vec::with_capacity(plans.len());
    let (mut cpu_s, mut bw_bytes, mut verified, mut expected_verified) = (0.0f64, 0u64, 0u64, 0u64);
    for p in &plans {
        let hs = human_size(p.size);
        pool.prepare(p.size, p.tensors, args.mode.lat())?;
        let mut r = SizeResult {
            size: p.size,
            iters: p.iters,
            window: p.window,
            gbytes_per_s: None,
            gbits_per_s: None,
            msgs_per_s: None,
            lat_p50_us: None,
            lat_p99_us: None,
            lat_iters: None,
            warmup: p.warmup,
        };
        if p.warmup > 0 {
            progress.phase(&hs, "warm-up");
            verified += side.warmup(&pool, p)?;
            expected_verified += p.warmup * comms.len() as u64;
        }
        if args.mode.bw() {
            progress.phase(&hs, "bandwidth");
            let c0 = ffi::cpu_seconds();
            let dt = side.bandwidth(&pool, p)?;
            cpu_s += ffi::cpu_seconds() - c0;
            let msgs = p.iters * comms.len() as u64;
            let bytes = msgs * p.size;
            bw_bytes += bytes;
            if sender {
                let secs = dt.as_secs_f64().max(1e-9);
                let gb = bytes as f64 / dt.as_nanos().max(1) as f64;
                r.gbytes_per_s = Some(gb);
                r.gbits_per_s = Some(gb * 8.0);
                r.msgs_per_s = Some(msgs as f64 / secs);
            }
        }
        if args.mode.lat() {
            progress.phase(&hs, "latency");
            let mut s = side.latency(&pool, p)?;
            r.lat_iters = Some(p.lat_iters);
            if sender {
                let (p50, p99) = stats::p50_p99(&mut s);
                r.lat_p50_us = p50;
                r.lat_p99_us = p99;
            }
        }
        progress.size_done();
        if sender {
            sink.size_done(&r);
        }
        results.push(r);
    }

    let verified_messages = side.final_report(verified)?;
    side.goodbye()?;
    if sender {
        side.linger()?;
    }
    drop(pool);
    if !sender {
        lnc.flush().ctx(|| "final flush".into())?;
    }
    drop(side);
    lnc.close().ctx(|| format!("closing lnc {}", args.lnc()))?;
    rt.close()?;
    Ok(Outcome { results, cpu_s, bw_bytes, rss_bytes_per_comm: rss_per_comm, verified_messages, expected_verified })
}

/// Rough check used by main: every size fits the per-side memory cap with one message in flight
/// on every communicator.
pub fn check_memory(sizes: &[u64], comms: u64) -> std::result::Result<(), String> {
    for &s in sizes {
        if s.saturating_mul(comms) > params::MEM_CAP_PER_SIDE {
            return Err(format!(
                "size {} x {comms} communicators exceeds the {} of tensors allowed per side",
                human_size(s),
                human_size(params::MEM_CAP_PER_SIDE)
            ));
        }
    }
    Ok(())
}
