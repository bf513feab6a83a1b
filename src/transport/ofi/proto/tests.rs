//! The protocol driven over the fake provider: a sender and a receiver `Proto` exchange windows
//! of messages of mixed sizes, in both modes, over 1 and 2 rails, with completions delivered as
//! posted, reversed and shuffled; and device memory (host memory standing in), over rails with
//! and without `FI_HMEM`.

use super::Proto;
use super::ctrl::{CTRL_SIZE, EAGER_MAX, MAX_STRIPES, MAX_WRITE, STRIPE, Size, Type, tag, untag};
use super::send::plan_writes;
use crate::tensor::fake_device::FakeDevice;
use crate::tensor::{Region, Tensor, read_into, write_from};
use crate::transport::ofi::fake::{self, Config, Handed, Link, Order};
use crate::transport::{Completions, Done, Kind, Msg};
use std::sync::Arc;

const E: usize = EAGER_MAX;
const S: usize = STRIPE as usize;
const FILL: u8 = 0xEE;
/// Rounds of progress on both ends before a test gives up.
const ROUNDS: usize = 20_000;

const ORDERS: [Order; 5] = [Order::AsPosted, Order::Reversed, Order::Shuffled(1), Order::Shuffled(7), Order::Shuffled(0xdead_beef)];

/// (send length, receive capacity) of a window of messages: eager and large, exact and roomy
/// receives, zero bytes, the edges around EAGER_MAX and STRIPE.
fn mixed() -> Vec<(usize, usize)> {
    let one = [
        (0, 0),
        (8, 8),
        (E, E),
        (E + 1, E + 1),
        (3 * S + 5, 3 * S + 5),
        (1, 64),
        (S, S),
        (100_000, 200_000),
        (E - 1, E),
        (2 * S, 2 * S),
        (7, 7),
        (S + 1, 3 * S),
        (E + 1, 2 * E),
        (0, 16),
    ];
    let mut v: Vec<(usize, usize)> = one.to_vec();
    v.extend(one.iter().rev().map(|&(l, c)| (l, c + 3)));
    v
}

/// Receives shorter than their sends (eager, large, and large into a receive of at most
/// EAGER_MAX) between good ones.
fn with_short() -> Vec<(usize, usize)> {
    vec![(8, 8), (100, 50), (3 * S + 5, S), (E + 1, E), (E + 1, 0), (E, 0), (S, S), (2 * S, 2 * S - 1), (1, 0), (0, 0), (E + 1, E + 1)]
}

#[derive(Clone, Copy, Debug)]
enum Plan {
    RecvFirst,
    SendFirst,
    Alternate,
}

struct End {
    p: Proto,
    log: Vec<Done>,
}

impl End {
    fn post(&mut self, m: Msg) -> crate::status::Result<()> {
        let log = &mut self.log;
        let mut apply = |d: Done| log.push(d);
        let mut done = Completions::new(&mut apply, None);
        self.p.post(m, &mut done)
    }
    fn progress(&mut self) -> crate::status::Result<()> {
        let log = &mut self.log;
        let mut apply = |d: Done| log.push(d);
        let mut done = Completions::new(&mut apply, None);
        self.p.progress(&mut done)
    }
    fn reported(&self, seq: u64) -> bool {
        self.log.iter().any(|d| d.seq() == seq)
    }
}

fn ends(rails: usize, cfg: &Config, write_mode: bool) -> (End, End, Vec<Arc<Link>>) {
    let (a, b, links) = fake::pair(rails, cfg);
    let s = Proto::new(Kind::Send, a, write_mode).expect("sender");
    let r = Proto::new(Kind::Recv, b, write_mode).expect("receiver");
    (End { p: s, log: Vec::new() }, End { p: r, log: Vec::new() }, links)
}

fn start(s: &mut End, r: &mut End) {
    let (sn, rn) = (s.p.names(), r.p.names());
    s.p.start(rn).expect("sender start");
    r.p.start(sn).expect("receiver start");
}

fn pattern(seq: u64, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 9) ^ (seq as usize).wrapping_mul(97)) as u8
}

/// A message's memory: a tensor, or host memory standing in for device memory (its region
/// starts `DEV_OFF` bytes in).
enum Buf {
    Host(Tensor),
    Dev(Arc<FakeDevice>),
}

const DEV_OFF: usize = 3;

impl Buf {
    /// The first `n` bytes of the region.
    fn bytes(&self, n: usize) -> Vec<u8> {
        match self {
            Buf::Host(t) => {
                let mut got = vec![0u8; n];
                read_into(t, 0, &mut got).expect("read");
                got
            }
            Buf::Dev(d) => d.contents(DEV_OFF, n),
        }
    }
    fn dev(&self) -> &FakeDevice {
        match self {
            Buf::Dev(d) => d,
            Buf::Host(_) => panic!("not device memory"),
        }
    }
}

/// A send of `len` bytes (the pattern of `seq`), in device memory when `dev`.
fn send_buf(seq: u64, len: usize, dev: bool) -> (Msg, Buf) {
    if !dev {
        let (m, t) = send_msg(seq, len);
        return (m, Buf::Host(t));
    }
    let d = FakeDevice::new(DEV_OFF + len + 5, false);
    d.fill(DEV_OFF, &(0..len).map(|i| pattern(seq, i)).collect::<Vec<u8>>());
    (Msg { seq, region: d.region(DEV_OFF, len) }, Buf::Dev(d))
}

/// A receive of `cap` bytes filled with FILL, in device memory when `dev`.
fn recv_buf(seq: u64, cap: usize, dev: bool) -> (Msg, Buf) {
    if !dev {
        let (m, t) = recv_msg(seq, cap);
        return (m, Buf::Host(t));
    }
    let d = FakeDevice::new(DEV_OFF + cap + 5, false);
    d.fill(DEV_OFF, &vec![FILL; cap]);
    (Msg { seq, region: d.region(DEV_OFF, cap) }, Buf::Dev(d))
}

fn send_msg(seq: u64, len: usize) -> (Msg, Tensor) {
    let t = Tensor::allocate(len, format!("send{seq}")).expect("tensor");
    let bytes: Vec<u8> = (0..len).map(|i| pattern(seq, i)).collect();
    write_from(&t, 0, &bytes).expect("fill");
    (Msg { seq, region: t.region(0, len).expect("region") }, t)
}

fn recv_msg(seq: u64, cap: usize) -> (Msg, Tensor) {
    let t = Tensor::allocate(cap, format!("recv{seq}")).expect("tensor");
    write_from(&t, 0, &vec![FILL; cap]).expect("fill");
    (Msg { seq, region: t.region(0, cap).expect("region") }, t)
}

/// One round: the sender's progress, then the receiver's. A send that completes on the
/// receiver's acknowledgement (`acked(seq)`) must find its receive reported already.
fn round(s: &mut End, r: &mut End, acked: &dyn Fn(u64) -> bool) {
    let before = s.log.len();
    s.progress().expect("sender progress");
    for d in &s.log[before..] {
        if acked(d.seq()) {
            assert!(r.reported(d.seq()), "send {} reported before its receive", d.seq());
        }
    }
    r.progress().expect("receiver progress");
}

/// Posts the window `sizes` (seqs from `base`) in the order `plan` says, with a round every
/// third message, then drives both ends until every message is reported on both.
fn exchange(s: &mut End, r: &mut End, base: u64, sizes: &[(usize, usize)], plan: Plan, write_mode: bool) -> Vec<Buf> {
    exchange_with(s, r, base, sizes, plan, write_mode, (false, false)).0
}

/// `exchange` with the sends (`dev.0`) or receives (`dev.1`) in device memory: (the receives,
/// the sends).
fn exchange_with(
    s: &mut End,
    r: &mut End,
    base: u64,
    sizes: &[(usize, usize)],
    plan: Plan,
    write_mode: bool,
    dev: (bool, bool),
) -> (Vec<Buf>, Vec<Buf>) {
    let (mut keep, mut recvs) = (Vec::new(), Vec::new());
    // Write mode: every send completes on the receiver's acknowledgement (a written one once its
    // writes completed too), except a large one refused by this side (into a receive longer than
    // EAGER_MAX but shorter than the send).
    let on_ack: Vec<bool> = sizes.iter().map(|&(l, c)| l <= E || c <= E || l <= c).collect();
    let acked = |seq: u64| !write_mode || on_ack[(seq - base) as usize];
    let post_send = |s: &mut End, k: usize, keep: &mut Vec<Buf>| {
        let (m, t) = send_buf(base + k as u64, sizes[k].0, dev.0);
        s.post(m).expect("post send");
        keep.push(t);
    };
    let post_recv = |r: &mut End, k: usize, recvs: &mut Vec<Buf>| {
        let (m, t) = recv_buf(base + k as u64, sizes[k].1, dev.1);
        r.post(m).expect("post receive");
        recvs.push(t);
    };
    match plan {
        Plan::RecvFirst | Plan::SendFirst => {
            for k in 0..sizes.len() {
                if matches!(plan, Plan::RecvFirst) {
                    post_recv(r, k, &mut recvs)
                } else {
                    post_send(s, k, &mut keep)
                }
                if k % 3 == 2 {
                    round(s, r, &acked);
                }
            }
            for k in 0..sizes.len() {
                if matches!(plan, Plan::RecvFirst) {
                    post_send(s, k, &mut keep)
                } else {
                    post_recv(r, k, &mut recvs)
                }
                if k % 3 == 2 {
                    round(s, r, &acked);
                }
            }
        }
        Plan::Alternate => {
            for k in 0..sizes.len() {
                if k % 2 == 0 {
                    post_recv(r, k, &mut recvs);
                    post_send(s, k, &mut keep);
                } else {
                    post_send(s, k, &mut keep);
                    post_recv(r, k, &mut recvs);
                }
                if k % 3 == 2 {
                    round(s, r, &acked);
                }
            }
        }
    }
    let want = |log: &[Done]| (0..sizes.len() as u64).all(|k| log.iter().any(|d| d.seq() == base + k));
    for _ in 0..ROUNDS {
        if want(&s.log) && want(&r.log) {
            break;
        }
        round(s, r, &acked);
    }
    assert!(want(&s.log) && want(&r.log), "not every message was reported in {ROUNDS} rounds");
    (recvs, keep)
}

/// Every message reported once on each end with the right outcome and size, and every receive
/// holding its send's bytes (nothing written into a receive that failed, or past the message).
fn check(s: &End, r: &End, base: u64, sizes: &[(usize, usize)], recvs: &[Buf]) {
    for (k, &(len, cap)) in sizes.iter().enumerate() {
        let seq = base + k as u64;
        for (who, log) in [("send", &s.log), ("receive", &r.log)] {
            let ds: Vec<&Done> = log.iter().filter(|d| d.seq() == seq).collect();
            assert_eq!(ds.len(), 1, "{who} {seq} ({len} into {cap}) reported {} times: {ds:?}", ds.len());
            match ds[0] {
                Done::Ok { bytes, .. } => assert!(len <= cap && *bytes == len as u64, "{who} {seq} ({len} into {cap}): {bytes} bytes"),
                Done::Failed { err, .. } => assert!(len > cap, "{who} {seq} ({len} into {cap}) failed: {err:?}"),
            }
        }
        let got = recvs[k].bytes(cap);
        let n = if len <= cap { len } else { 0 };
        let bad = (0..cap).find(|&i| got[i] != if i < n { pattern(seq, i) } else { FILL });
        assert_eq!(bad, None, "receive {seq} ({len} into {cap}): wrong byte");
    }
    assert!(!s.p.in_flight() && !r.p.in_flight(), "messages left in flight");
    assert_eq!((s.p.leftovers().0, r.p.leftovers().0), (0, 0), "protocol state left behind");
}

fn matrix(rails: usize, write_mode: bool) {
    matrix_with(rails, write_mode, |_| {});
}

/// `matrix` on rails configured by `tweak` (the fake's defaults: 4 bytes of CQ data).
fn matrix_with(rails: usize, write_mode: bool, tweak: impl Fn(&mut Config)) {
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let sizes = mixed();
    for order in ORDERS {
        for plan in [Plan::RecvFirst, Plan::SendFirst, Plan::Alternate] {
            let mut cfg = Config::new(order, write_mode);
            tweak(&mut cfg);
            let (mut s, mut r, _links) = ends(rails, &cfg, write_mode);
            start(&mut s, &mut r);
            // Two windows on the same pair: sequence numbers go on.
            for base in [0, sizes.len() as u64] {
                let recvs = exchange(&mut s, &mut r, base, &sizes, plan, write_mode);
                check(&s, &r, base, &sizes, &recvs);
            }
        }
    }
}

#[test]
fn write_mode_one_rail() {
    matrix(1, true);
}

#[test]
fn write_mode_two_rails() {
    matrix(2, true);
}

/// Providers with 8 bytes of CQ data (tcp, shm) take the same path: only 32 bits are read.
#[test]
fn write_mode_eight_byte_cq_data() {
    matrix_with(2, true, |c| c.cq_data_size = 8);
}

#[test]
fn read_mode_one_rail() {
    matrix(1, false);
}

#[test]
fn read_mode_two_rails() {
    matrix(2, false);
}

#[test]
fn short_receive_fails_both_ends() {
    let sizes = with_short();
    for write_mode in [true, false] {
        for rails in [1, 2] {
            for (order, plan) in
                [(Order::Shuffled(3), Plan::Alternate), (Order::Reversed, Plan::SendFirst), (Order::AsPosted, Plan::RecvFirst)]
            {
                let (mut s, mut r, _links) = ends(rails, &Config::new(order, write_mode), write_mode);
                start(&mut s, &mut r);
                let recvs = exchange(&mut s, &mut r, 0, &sizes, plan, write_mode);
                check(&s, &r, 0, &sizes, &recvs);
            }
        }
    }
}

#[test]
fn both_rails_carry_bytes() {
    let sizes = [(3 * S + 5, 3 * S + 5), (E + 1, E + 1), (100, 100), (2 * S, 2 * S)];
    let large: u64 = sizes.iter().filter(|s| s.0 > E).map(|s| s.0 as u64).sum();
    for write_mode in [true, false] {
        let (mut s, mut r, _links) = ends(2, &Config::new(Order::Shuffled(11), write_mode), write_mode);
        start(&mut s, &mut r);
        let recvs = exchange(&mut s, &mut r, 0, &sizes, Plan::Alternate, write_mode);
        check(&s, &r, 0, &sizes, &recvs);
        // A read-mode sender does not see the receiver's reads of its memory.
        let sides = if write_mode {
            vec![("sender", s.p.rail_bytes()), ("receiver", r.p.rail_bytes())]
        } else {
            vec![("receiver", r.p.rail_bytes())]
        };
        assert!(s.p.rail_bytes()[0] > 0);
        for (who, bytes) in sides {
            assert_eq!(bytes.len(), 2);
            assert!(bytes.iter().all(|&b| b > S as u64), "{who}'s rails (write mode {write_mode}): {bytes:?}");
            assert!(bytes.iter().sum::<u64>() >= large, "{who}'s rails (write mode {write_mode}): {bytes:?}");
        }
    }
}

#[test]
fn error_completion_breaks_the_communicator() {
    for (side, write_mode) in [(0, true), (1, true), (0, false), (1, false)] {
        let (mut s, mut r, links) = ends(1, &Config::new(Order::AsPosted, write_mode), write_mode);
        start(&mut s, &mut r);
        let (m, _t) = recv_msg(0, 3 * S);
        r.post(m).expect("post receive");
        let (m, _t2) = send_msg(0, 3 * S);
        s.post(m).expect("post send");
        links[0].fail_next(side);
        let mut broke = false;
        for _ in 0..100 {
            let res = if side == 0 { s.progress() } else { r.progress() };
            if res.is_err() {
                broke = true;
                break;
            }
            let _ = if side == 0 { r.progress() } else { s.progress() };
        }
        assert!(broke, "an error completion on end {side} (write mode {write_mode}) did not break it");
    }
}

#[test]
fn operations_answered_again_are_retried() {
    let sizes = mixed();
    for write_mode in [true, false] {
        let mut cfg = Config::new(Order::Shuffled(5), write_mode);
        cfg.again_every = 3;
        let (mut s, mut r, _links) = ends(2, &cfg, write_mode);
        start(&mut s, &mut r);
        let recvs = exchange(&mut s, &mut r, 0, &sizes, Plan::Alternate, write_mode);
        check(&s, &r, 0, &sizes, &recvs);
        // The last bounce receives given back may have met an Again.
        for _ in 0..100 {
            if !s.p.has_queued_ops() && !r.p.has_queued_ops() {
                break;
            }
            round(&mut s, &mut r, &|_| false);
        }
        assert!(!s.p.has_queued_ops() && !r.p.has_queued_ops(), "operations left queued");
    }
}

#[test]
fn posts_wait_for_start() {
    let sizes = [(8, 8), (3 * S + 5, 3 * S + 5), (0, 0), (E + 1, E + 1)];
    for write_mode in [true, false] {
        let (mut s, mut r, links) = ends(2, &Config::new(Order::Reversed, write_mode), write_mode);
        let mut keep = Vec::new();
        let mut recvs = Vec::new();
        for (k, &(len, cap)) in sizes.iter().enumerate() {
            let (m, t) = send_msg(k as u64, len);
            s.post(m).expect("post send");
            keep.push(t);
            let (m, t) = recv_msg(k as u64, cap);
            r.post(m).expect("post receive");
            recvs.push(Buf::Host(t));
        }
        for _ in 0..3 {
            s.progress().expect("progress");
            r.progress().expect("progress");
        }
        assert!(links.iter().all(|l| l.ops(0) == 0 && l.ops(1) == 0), "operations before start");
        assert!(s.p.in_flight() && r.p.in_flight() && s.log.is_empty() && r.log.is_empty());
        start(&mut s, &mut r);
        for _ in 0..ROUNDS {
            if s.log.len() == sizes.len() && r.log.len() == sizes.len() {
                break;
            }
            round(&mut s, &mut r, &|_| false);
        }
        check(&s, &r, 0, &sizes, &recvs);
    }
}

/// Messages in one tensor at different offsets: one registration per tensor (the cache), remote
/// addresses offset within it; everything deregistered when the communicators go.
#[test]
fn regions_of_one_tensor_share_a_registration() {
    let lens = [E + 1, 3 * S + 5, 100, 2 * S, 0, S + 3];
    let total: usize = lens.iter().sum();
    for write_mode in [true, false] {
        let (mut s, mut r, links) = ends(2, &Config::new(Order::Shuffled(9), write_mode), write_mode);
        start(&mut s, &mut r);
        let st = Tensor::allocate(total, "send".into()).expect("tensor");
        let rt = Tensor::allocate(total + 64 * lens.len(), "recv".into()).expect("tensor");
        let bytes: Vec<u8> = (0..total).map(|i| pattern(1000, i)).collect();
        write_from(&st, 0, &bytes).expect("fill");
        write_from(&rt, 0, &vec![FILL; rt.size()]).expect("fill");
        let (mut so, mut ro) = (0, 0);
        let mut where_ = Vec::new();
        for (k, &len) in lens.iter().enumerate() {
            s.post(Msg { seq: k as u64, region: st.region(so, len).expect("region") }).expect("post send");
            r.post(Msg { seq: k as u64, region: rt.region(ro + 64, len).expect("region") }).expect("post receive");
            where_.push((so, ro + 64, len));
            so += len;
            ro += len + 64;
        }
        for _ in 0..ROUNDS {
            if s.log.len() == lens.len() && r.log.len() == lens.len() {
                break;
            }
            round(&mut s, &mut r, &|_| false);
        }
        assert!(s.log.iter().chain(&r.log).all(|d| matches!(d, Done::Ok { .. })), "{:?} {:?}", s.log, r.log);
        for (so, ro, len) in where_ {
            let mut got = vec![0u8; len];
            read_into(&rt, ro, &mut got).expect("read");
            assert!(got == bytes[so..so + len], "message at {so} landed wrong at {ro}");
        }
        assert_eq!((s.p.leftovers(), r.p.leftovers()), ((0, 1), (0, 1)), "one cache entry per end");
        let (sl, rl) = (links[0].live_mrs(0), links[0].live_mrs(1));
        drop(s);
        drop(r);
        for l in &links {
            assert_eq!((l.live_mrs(0), l.live_mrs(1)), (0, 0), "registrations left");
            assert_eq!((l.bad_deregs(0), l.bad_deregs(1)), (0, 0), "deregistrations of unknown keys");
        }
        // On rail 0 of each end: the send buffers, the bounce buffers, the tensor.
        assert_eq!((sl, rl), (3, 3), "registrations on rail 0 while running");
    }
}

/// A provider that moves at most 64 KiB per operation: stripes shrink to fit (the fake refuses
/// longer operations), and so does the largest message.
#[test]
fn stripes_respect_max_msg() {
    let sizes = [(300_000, 300_000), (E, E), (E + 1, E + 1), (65_536, 65_536), (65_537, 70_000)];
    for write_mode in [true, false] {
        let mut cfg = Config::new(Order::Shuffled(2), write_mode);
        cfg.max_msg = 65_536;
        let (mut s, mut r, _links) = ends(2, &cfg, write_mode);
        assert_eq!(s.p.max_message(), MAX_STRIPES * 65_536);
        start(&mut s, &mut r);
        let recvs = exchange(&mut s, &mut r, 0, &sizes, Plan::Alternate, write_mode);
        check(&s, &r, 0, &sizes, &recvs);
    }
}

#[test]
fn longest_message_is_2_20_stripes() {
    let (mut s, _r, _links) = ends(1, &Config::new(Order::AsPosted, true), true);
    assert_eq!(s.p.max_message(), 1 << 39);
    let big = Region::borrowed(std::ptr::NonNull::<u8>::dangling().as_ptr(), (1 << 39) + 1);
    assert!(s.post(Msg { seq: 0, region: big }).is_err());
    assert!(!s.p.in_flight());
}

#[test]
fn proto_is_send() {
    fn send<T: Send>() {}
    send::<Proto>();
}

/// Memory outside any tensor (a borrowed buffer) is registered for its message alone and
/// deregistered as soon as the message is done (the fake refuses reads and writes of memory
/// deregistered too early).
#[test]
fn borrowed_memory_is_registered_per_message() {
    let sizes = [(3 * S + 5, 3 * S + 5), (E + 1, 2 * E), (8, 8), (2 * S, 2 * S), (E + 1, E)];
    for write_mode in [true, false] {
        for rails in [1, 2] {
            let (mut s, mut r, links) = ends(rails, &Config::new(Order::Shuffled(4), write_mode), write_mode);
            start(&mut s, &mut r);
            let idle: Vec<(usize, usize)> = links.iter().map(|l| (l.live_mrs(0), l.live_mrs(1))).collect();
            let mut sbufs: Vec<Vec<u8>> =
                sizes.iter().enumerate().map(|(k, &(l, _))| (0..l).map(|i| pattern(k as u64, i)).collect()).collect();
            let mut rbufs: Vec<Vec<u8>> = sizes.iter().map(|&(_, c)| vec![FILL; c]).collect();
            for k in 0..sizes.len() {
                let seq = k as u64;
                s.post(Msg { seq, region: Region::borrowed(sbufs[k].as_mut_ptr(), sbufs[k].len()) }).expect("post send");
                r.post(Msg { seq, region: Region::borrowed(rbufs[k].as_mut_ptr(), rbufs[k].len()) }).expect("post receive");
            }
            for _ in 0..ROUNDS {
                if s.log.len() == sizes.len() && r.log.len() == sizes.len() {
                    break;
                }
                round(&mut s, &mut r, &|_| false);
            }
            for (k, &(len, cap)) in sizes.iter().enumerate() {
                for log in [&s.log, &r.log] {
                    let d: Vec<&Done> = log.iter().filter(|d| d.seq() == k as u64).collect();
                    assert_eq!(d.len(), 1);
                    assert_eq!(matches!(d[0], Done::Ok { bytes, .. } if *bytes == len as u64), len <= cap, "{d:?}");
                }
                let n = if len <= cap { len } else { 0 };
                assert!(rbufs[k][..n] == sbufs[k][..n] && rbufs[k][n..].iter().all(|&b| b == FILL), "receive {k}");
            }
            let now: Vec<(usize, usize)> = links.iter().map(|l| (l.live_mrs(0), l.live_mrs(1))).collect();
            assert_eq!(now, idle, "registrations left after the messages (write mode {write_mode}, {rails} rails)");
            assert_eq!((s.p.leftovers(), r.p.leftovers()), ((0, 0), (0, 0)));
        }
    }
}

/// The types of the tagged messages end `side` sent on rail 0.
fn sent(links: &[Arc<Link>], side: usize) -> Vec<Type> {
    let mut t: Vec<Type> = links[0].tags(side).into_iter().map(|t| untag(t).expect("tag").0).collect();
    t.sort_by_key(|t| *t as u8);
    t
}

/// Write mode, one message, each path of the ready-to-send: which end posts first, whether its
/// messages arrive before the other end posts, and the tagged messages each end sends.
#[test]
fn ready_to_send_paths() {
    use Type::*;
    let big = 3 * S + 5;
    // (length, capacity, receive first, rounds between the posts, sender's, receiver's messages)
    type Case = (usize, usize, bool, bool, &'static [Type], &'static [Type]);
    let cases: [Case; 10] = [
        // A small receive and a large send: both fail, whichever end posts first.
        (big, E, true, true, &[Rts], &[Ack]),
        (big, 16, false, true, &[Rts], &[Ack]),
        (E + 1, 0, false, false, &[Rts], &[Ack]),
        // A large receive posted after the ready-to-send: cleared then; the message written
        // with its size, acknowledged once landed (the send completes on it).
        (big, big, false, true, &[Rts, Size], &[Cts, Ack]),
        (big, 2 * big, false, true, &[Rts, Size], &[Cts, Ack]),
        // Ready-to-send and clear-to-send crossing: the receiver ignores the ready-to-send.
        (big, big, true, false, &[Rts, Size], &[Cts, Ack]),
        (big, 2 * S, false, false, &[Rts, Refuse], &[Cts]),
        // The clear-to-send arrived first: no ready-to-send.
        (big, big, true, true, &[Size], &[Cts, Ack]),
        // Eager messages: no clear-to-send for a small receive, dropped for a large one.
        (8, 8, true, true, &[Eager], &[Ack]),
        (8, big, true, true, &[Eager], &[Cts, Ack]),
    ];
    for (len, cap, recv_first, between, want_s, want_r) in cases {
        for order in ORDERS {
            for rails in [1, 2] {
                let (mut s, mut r, links) = ends(rails, &Config::new(order, true), true);
                start(&mut s, &mut r);
                let (sm, _st) = send_msg(0, len);
                let (rm, rt) = recv_msg(0, cap);
                let (mut sm, mut rm) = (Some(sm), Some(rm));
                if recv_first { r.post(rm.take().expect("receive")) } else { s.post(sm.take().expect("send")) }.expect("first post");
                if between {
                    for _ in 0..4 {
                        round(&mut s, &mut r, &|_| true);
                    }
                }
                if let Some(m) = sm {
                    s.post(m).expect("post send");
                }
                if let Some(m) = rm {
                    r.post(m).expect("post receive");
                }
                for _ in 0..ROUNDS {
                    if s.log.len() == 1 && r.log.len() == 1 {
                        break;
                    }
                    round(&mut s, &mut r, &|_| len <= E || cap <= E);
                }
                let what = format!("{len} into {cap}, receive first {recv_first}, rounds between {between}, {order:?}, {rails} rails");
                check(&s, &r, 0, &[(len, cap)], &[Buf::Host(rt)]);
                assert_eq!((sent(&links, 0), sent(&links, 1)), (want_s.to_vec(), want_r.to_vec()), "{what}");
            }
        }
    }
}

/// The writes of a message: contiguous, covering it once, each within the largest write, one
/// share per rail used (a rail per stripe, at most every rail), starting on rail `first`.
#[test]
fn writes_cover_the_message() {
    let m = 1 << 20;
    assert_eq!(plan_writes(4 * m, 0, 1, STRIPE, MAX_WRITE), vec![(0, 0, 4 * m)], "4 MiB on one rail: one write");
    assert_eq!(plan_writes(10 * m, 0, 1, STRIPE, MAX_WRITE), vec![(0, 0, 4 * m), (0, 4 * m, 4 * m), (0, 8 * m, 2 * m)]);
    assert_eq!(plan_writes(8 * m, 1, 2, STRIPE, MAX_WRITE), vec![(1, 0, 4 * m), (0, 4 * m, 4 * m)]);
    assert_eq!(plan_writes(E as u64 + 1, 1, 2, STRIPE, MAX_WRITE), vec![(1, 0, E as u64 + 1)]);
    for nrails in [1, 2, 3, 16] {
        for (stripe, max_write) in [(STRIPE, MAX_WRITE), (65_536, 65_536), (512, 512), (STRIPE, STRIPE)] {
            for len in [1, 511, 512, 513, 4095, 65_537, 300_001, 3 * STRIPE + 5, 16 * STRIPE - 1, 40 * STRIPE + 3] {
                for first in [0, nrails - 1] {
                    let w = plan_writes(len, first, nrails, stripe, max_write);
                    let what = format!("{len} bytes, {nrails} rails from {first}, stripe {stripe}, writes {max_write}: {w:?}");
                    let mut off = 0;
                    let mut rails = Vec::new();
                    for &(rail, o, n) in &w {
                        assert!(o == off && n > 0 && n <= max_write && rail < nrails, "{what}");
                        if rails.last() != Some(&rail) {
                            assert!(!rails.contains(&rail), "{what}");
                            rails.push(rail);
                        }
                        off += n;
                    }
                    assert_eq!(off, len, "{what}");
                    let shares = (len / stripe).clamp(1, nrails as u64) as usize;
                    assert_eq!(rails, (0..shares).map(|j| (first + j) % nrails).collect::<Vec<_>>(), "{what}");
                    assert!(w.len() as u64 <= len.div_ceil(max_write) + shares as u64, "{what}");
                }
            }
        }
    }
}

/// Write mode with 4 bytes of CQ data over one rail of 64 KiB operations, sequence numbers
/// crossing 2^32, operations lingering on the wire at random: each message's size message lands
/// before its writes, between them and after them, and every message completes once, whole.
#[test]
fn size_message_before_between_and_after_the_writes() {
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let sizes = [(300_000, 300_000), (E + 1, E + 1), (200_000, 250_000), (65_537, 65_537), (8, 8), (131_072, 131_072)];
    let base = (1u64 << 32) - 5;
    let (mut before, mut between, mut after) = (0, 0, 0);
    for order in ORDERS {
        for plan in [Plan::RecvFirst, Plan::SendFirst, Plan::Alternate] {
            let mut cfg = Config::new(order, true);
            cfg.max_msg = 65_536;
            cfg.linger = 40;
            let (mut s, mut r, links) = ends(1, &cfg, true);
            start(&mut s, &mut r);
            for w in 0..2 {
                let b = base + w * sizes.len() as u64;
                let recvs = exchange(&mut s, &mut r, b, &sizes, plan, true);
                check(&s, &r, b, &sizes, &recvs);
            }
            let handed = links[0].handed(1);
            for k in 0..2 * sizes.len() {
                let seq = base + k as u64;
                if sizes[k % sizes.len()].0 <= E {
                    continue;
                }
                let at = handed.iter().position(|&h| h == Handed::Recv(tag(Type::Size, seq))).expect("size message handed");
                let writes: Vec<usize> =
                    handed.iter().enumerate().filter(|(_, h)| **h == Handed::RemoteWrite(seq & 0xffff_ffff)).map(|(i, _)| i).collect();
                assert_eq!(writes.len() as u64, (sizes[k % sizes.len()].0 as u64).div_ceil(65_536), "writes of message {seq}");
                match (writes.iter().filter(|&&i| i < at).count(), writes.len()) {
                    (0, _) => before += 1,
                    (n, m) if n == m => after += 1,
                    _ => between += 1,
                }
            }
        }
    }
    assert!(before > 0 && between > 0 && after > 0, "size message before {before}, between {between}, after {after} the writes");
}

/// Many messages in flight at once (a full window, most of them written), over 2 and 3 rails,
/// 4 and 8 bytes of CQ data, with and without the writes' lengths in their completions,
/// sequence numbers crossing 2^32 and operations lingering on the wire: every message completes
/// once with its size, whole, short receives fail at both ends (refused), and the rails' byte
/// counters account for every byte written.
#[test]
fn many_written_messages_in_flight() {
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let mut sizes = Vec::new();
    let short = with_short();
    for k in 0..crate::config::MAX_PENDING_PER_COMM {
        let len = match k % 5 {
            0 => E + 1 + k * 37,
            1 => S + k * 1001,
            2 => 2 * S + 4096 * k,
            3 => 150_000 + k,
            _ => 3 * S + 5,
        };
        sizes.push(if k % 9 == 4 { short[k % short.len()] } else { (len, len + k % 3) });
    }
    let written: u64 = sizes.iter().filter(|&&(l, c)| l > E && l <= c).map(|&(l, _)| l as u64).sum();
    for (rails, cq, remote_len, max_msg, order) in [
        (2, 4, true, 1 << 30, Order::Shuffled(21)),
        (2, 4, false, 65_536, Order::Reversed),
        (3, 4, false, 1 << 30, Order::Shuffled(22)),
        (3, 8, true, 65_536, Order::Shuffled(23)),
    ] {
        let mut cfg = Config::new(order, true);
        (cfg.cq_data_size, cfg.remote_len, cfg.max_msg, cfg.linger) = (cq, remote_len, max_msg, 30);
        for plan in [Plan::RecvFirst, Plan::SendFirst] {
            let (mut s, mut r, _links) = ends(rails, &cfg, true);
            start(&mut s, &mut r);
            let base = (3u64 << 32) - 50;
            let recvs = exchange(&mut s, &mut r, base, &sizes, plan, true);
            check(&s, &r, base, &sizes, &recvs);
            let bytes = r.p.rail_bytes();
            let what = format!("{rails} rails, {cq} bytes of CQ data, lengths reported {remote_len}, {plan:?}: {bytes:?}");
            assert!(bytes.iter().all(|&b| b > S as u64), "{what}");
            assert!(bytes.iter().sum::<u64>() >= written, "{what}");
        }
    }
}

/// A peer that breaks the write protocol (size messages and remote writes that fit no receive,
/// a malformed or repeated size message) breaks the communicator with an error, never a panic.
#[test]
fn bad_size_messages_and_writes_are_errors() {
    let big = 3 * S as u64;
    let size = |len: u64, writes: u64| {
        let mut b = [0u8; CTRL_SIZE];
        let n = Size { len, writes }.put(&mut b);
        b[..n].to_vec()
    };
    enum Inject {
        Tagged(u64, Vec<u8>),
        Write(u64),
    }
    use Inject::*;
    // (receive capacity, what the peer sends)
    let cases: Vec<(u64, Vec<Inject>)> = vec![
        (big, vec![Tagged(tag(Type::Size, 7), size(big, 1))]),
        (big, vec![Tagged(tag(Type::Size, 0), size(big + 1, 1))]),
        (big, vec![Tagged(tag(Type::Size, 0), size(big, 0))]),
        (big, vec![Tagged(tag(Type::Size, 0), size(10, 11))]),
        (big, vec![Tagged(tag(Type::Size, 0), size(big, 1)[..15].to_vec())]),
        (big, vec![Tagged(tag(Type::Size, 0), size(big, 2)), Tagged(tag(Type::Size, 0), size(big, 2))]),
        (big, vec![Write(7)]),
        (big, vec![Write(0), Write(0), Tagged(tag(Type::Size, 0), size(big, 1))]),
        (big, vec![Tagged(tag(Type::Size, 0), size(big, 1)), Write(0xdead_0000_0000), Write(0)]),
        (100, vec![Tagged(tag(Type::Size, 0), size(50, 1))]),
        (100, vec![Write(0)]),
    ];
    for (k, (cap, injects)) in cases.into_iter().enumerate() {
        let (a, b, links) = fake::pair(1, &Config::new(Order::AsPosted, true));
        let mut r = End { p: Proto::new(Kind::Recv, b, true).expect("receiver"), log: Vec::new() };
        r.p.start(a.iter().map(|x| x.name()).collect()).expect("start");
        let (m, _t) = recv_msg(0, cap as usize);
        r.post(m).expect("post receive");
        r.progress().expect("progress");
        let mut res = Ok(());
        for i in injects {
            match i {
                Tagged(t, b) => links[0].inject_tagged(0, t, &b),
                Write(d) => links[0].inject_remote_write(1, d),
            }
            res = r.progress();
            if res.is_err() {
                break;
            }
        }
        let err = res.expect_err(&format!("case {k}: the receiver took it"));
        eprintln!("case {k}: {err:?}");
    }
    // A size message to a sender.
    let (a, b, links) = fake::pair(1, &Config::new(Order::AsPosted, true));
    let mut s = End { p: Proto::new(Kind::Send, a, true).expect("sender"), log: Vec::new() };
    s.p.start(b.iter().map(|x| x.name()).collect()).expect("start");
    links[0].inject_tagged(1, tag(Type::Size, 0), &size(big, 1));
    assert!(s.progress().is_err(), "the sender took a size message");
}

/// Rails whose provider claims `FI_HMEM`.
fn hmem_config(order: Order, write_mode: bool) -> Config {
    let mut cfg = Config::new(order, write_mode);
    cfg.hmem = true;
    cfg
}

/// Device memory (host memory standing in) on rails with `FI_HMEM`, as sender, receiver or
/// both, in both modes, over 1 and 2 rails, eager and large, exact, roomy and short receives,
/// completions in three orders: every byte arrives (and nothing outside it); a large message's
/// device memory is registered as device memory (on every rail, once per message) and moved by
/// the provider's writes or reads, never through its StagedMemory; an eager one is copied
/// through its StagedMemory once, whole (the fake refuses device memory in a tagged send or
/// receive); every device registration is released when its message is done.
#[test]
fn device_memory_over_fi_hmem_goes_by_rma_and_small_messages_through_staged_memory() {
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let windows = [mixed(), with_short()];
    for write_mode in [true, false] {
        for rails in [1, 2] {
            for (order, plan) in
                [(Order::AsPosted, Plan::RecvFirst), (Order::Shuffled(5), Plan::Alternate), (Order::Reversed, Plan::SendFirst)]
            {
                for dev in [(true, false), (false, true), (true, true)] {
                    let (mut s, mut r, links) = ends(rails, &hmem_config(order, write_mode), write_mode);
                    assert!(s.p.takes_device() && r.p.takes_device());
                    start(&mut s, &mut r);
                    let mut base = 0;
                    for sizes in &windows {
                        let what = format!("write mode {write_mode}, {rails} rails, {order:?}, {plan:?}, device {dev:?}");
                        let regs_before: Vec<(usize, usize)> = links.iter().map(|l| (l.device_regs(0).0, l.device_regs(1).0)).collect();
                        let (recvs, sends) = exchange_with(&mut s, &mut r, base, sizes, plan, write_mode, dev);
                        check(&s, &r, base, sizes, &recvs);
                        for (k, &(len, cap)) in sizes.iter().enumerate() {
                            if dev.0 {
                                let want = if len <= E { ((1, 0), (len, 0)) } else { ((0, 0), (0, 0)) };
                                let d = sends[k].dev();
                                assert_eq!((d.calls(), d.copied()), want, "{what}: send {len} into {cap}");
                            }
                            if dev.1 {
                                // A receive shorter than its message takes no byte; a large one's
                                // bytes come by RMA.
                                let want = if len <= E && len <= cap { ((0, 1), (0, len)) } else { ((0, 0), (0, 0)) };
                                let d = recvs[k].dev();
                                assert_eq!((d.calls(), d.copied()), want, "{what}: receive {len} into {cap}");
                            }
                        }
                        // Registered at post: sends longer than E, receives of more than E.
                        let want_s = if dev.0 { sizes.iter().filter(|&&(l, _)| l > E).count() } else { 0 };
                        let want_r = if dev.1 { sizes.iter().filter(|&&(_, c)| c > E).count() } else { 0 };
                        for (l, (bs, br)) in links.iter().zip(regs_before) {
                            let (ds, dr) = (l.device_regs(0).0 - bs, l.device_regs(1).0 - br);
                            assert_eq!((ds, dr), (want_s, want_r), "{what}: device registrations per rail");
                            assert_eq!((l.live_device_mrs(0), l.live_device_mrs(1)), (0, 0), "{what}: device registrations left");
                        }
                        base += sizes.len() as u64;
                    }
                    drop(s);
                    drop(r);
                    for l in &links {
                        assert_eq!((l.live_mrs(0), l.live_mrs(1)), (0, 0), "registrations left");
                        assert_eq!((l.bad_deregs(0), l.bad_deregs(1)), (0, 0), "deregistrations of unknown keys");
                    }
                }
            }
        }
    }
}

/// Device memory posted before `start` (registered at post, issued at start) and a
/// communicator dropped with device messages in flight: registrations are all released.
#[test]
fn device_memory_posted_before_start_or_left_in_flight_is_released() {
    let sizes = [(3 * S + 5, 3 * S + 5), (8, 8), (E + 1, 2 * E)];
    for write_mode in [true, false] {
        let (mut s, mut r, links) = ends(2, &hmem_config(Order::Shuffled(8), write_mode), write_mode);
        let (mut keep, mut recvs) = (Vec::new(), Vec::new());
        for (k, &(len, cap)) in sizes.iter().enumerate() {
            let (m, t) = send_buf(k as u64, len, true);
            s.post(m).expect("post send");
            keep.push(t);
            let (m, t) = recv_buf(k as u64, cap, true);
            r.post(m).expect("post receive");
            recvs.push(t);
        }
        assert!(links.iter().all(|l| l.device_regs(0).0 == 2 && l.device_regs(1).0 == 2), "registered at post");
        start(&mut s, &mut r);
        for _ in 0..ROUNDS {
            if s.log.len() == sizes.len() && r.log.len() == sizes.len() {
                break;
            }
            round(&mut s, &mut r, &|_| false);
        }
        check(&s, &r, 0, &sizes, &recvs);
        // Left in flight: a large receive (registered, cleared in write mode) with no send.
        let (m, _t) = recv_buf(sizes.len() as u64, 3 * S, true);
        r.post(m).expect("post receive");
        let (m, _t2) = send_buf(sizes.len() as u64 + 1, 2 * S, true);
        s.post(m).expect("post send");
        round(&mut s, &mut r, &|_| false);
        drop(s);
        drop(r);
        for l in &links {
            assert_eq!((l.live_mrs(0), l.live_mrs(1)), (0, 0), "registrations left (write mode {write_mode})");
            assert_eq!((l.bad_deregs(0), l.bad_deregs(1)), (0, 0));
        }
    }
}

/// Without `FI_HMEM` device memory is given back for the caller to stage (`post` refuses it),
/// before anything is registered or copied; staged memory without a device address is refused
/// either way. Where the provider claims `FI_HMEM` but refuses the registration (no Neuron
/// support), the large message that met the refusal and every device message after it are given
/// back; a small one before it went through its StagedMemory.
#[test]
fn device_memory_is_given_back_without_fi_hmem_or_when_its_registration_fails() {
    let post_device = |e: &mut End, m: Msg| {
        let log = &mut e.log;
        let mut apply = |d: Done| log.push(d);
        e.p.post_device(m, &mut Completions::new(&mut apply, None))
    };
    for write_mode in [true, false] {
        let (mut s, mut r, links) = ends(1, &Config::new(Order::AsPosted, write_mode), write_mode);
        start(&mut s, &mut r);
        assert!(!s.p.takes_device() && !r.p.takes_device());
        for len in [0, 8, 3 * S] {
            let (m, b) = send_buf(0, len, true);
            assert!(post_device(&mut s, m).expect("post_device").is_some(), "{len} bytes taken without FI_HMEM");
            let (m, b2) = recv_buf(0, len, true);
            assert!(post_device(&mut r, m).expect("post_device").is_some());
            let (m, _) = send_buf(0, len, true);
            assert!(s.post(m).is_err(), "post took device memory without FI_HMEM");
            assert_eq!((b.dev().calls(), b2.dev().calls()), ((0, 0), (0, 0)));
        }
        let d = FakeDevice::new(64, false);
        let staged = Region::staged(Arc::new(DevStaged(d.region(0, 64))), 64);
        assert!(post_device(&mut s, Msg { seq: 0, region: staged }).is_err(), "staged memory without an address");
        assert!(!s.p.in_flight() && !r.p.in_flight());
        assert_eq!((links[0].device_regs(0).0, links[0].device_regs(1).0), (0, 0));

        let mut cfg = hmem_config(Order::AsPosted, write_mode);
        cfg.device_fails = true;
        let (mut s, mut r, _links) = ends(2, &cfg, write_mode);
        start(&mut s, &mut r);
        assert!(s.p.takes_device());
        let (m, small) = send_buf(0, 100, true);
        assert!(post_device(&mut s, m).expect("post_device").is_none(), "a small device send needs no registration");
        let (m, _) = send_buf(1, 3 * S, true);
        assert!(post_device(&mut s, m).expect("post_device").is_some(), "a refused registration gives the message back");
        assert!(!s.p.takes_device());
        let (m, _) = send_buf(1, 8, true);
        assert!(post_device(&mut s, m).expect("post_device").is_some(), "device memory after a refusal");
        // The small one still arrives, through its StagedMemory.
        let (m, t) = recv_msg(0, 100);
        r.post(m).expect("post receive");
        for _ in 0..ROUNDS {
            if s.log.len() == 1 && r.log.len() == 1 {
                break;
            }
            round(&mut s, &mut r, &|_| true);
        }
        check(&s, &r, 0, &[(100, 100)], &[Buf::Host(t)]);
        assert_eq!(small.dev().copied(), (100, 0));
    }
}

/// Staged memory without a device address, wrapping a device region's StagedMemory.
struct DevStaged(Region);

impl crate::tensor::StagedMemory for DevStaged {
    fn read(&self, offset: usize, buf: &mut [u8]) -> crate::status::Result<()> {
        self.0.staging().expect("device region").read(offset, buf)
    }
    fn write(&self, offset: usize, buf: &[u8]) -> crate::status::Result<()> {
        self.0.staging().expect("device region").write(offset, buf)
    }
}
