//! The verbs protocol over the in-memory queue pair (`fake.rs`): every byte, every outcome, the
//! credits (no SEND ever finds the peer's receive queue empty), in many delivery orders.

use super::fake::{FakeNic, Net, pair_limits};
use super::proto::{EAGER_MAX, Proto, RECV_DEPTH};
use crate::tensor::Region;
use crate::transport::{Completions, Done, Kind, Msg};
use parking_lot::Mutex;
use std::sync::Arc;

fn pattern(k: u64, i: usize) -> u8 {
    (k.wrapping_mul(131) as usize ^ i.wrapping_mul(7) ^ (i >> 9)) as u8
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

struct Pair {
    s: Proto<FakeNic>,
    r: Proto<FakeNic>,
    net: Arc<Mutex<Net>>,
    slog: Vec<Done>,
    rlog: Vec<Done>,
    /// Buffers: (send bytes, receive buffer with one guard byte before and after).
    bufs: Vec<(Vec<u8>, Vec<u8>)>,
    rng: Rng,
}

impl Pair {
    fn new(max_write: u64, seed: u64) -> Pair {
        Pair::with_limits(max_write, [u64::MAX; 2], seed)
    }

    /// The sender registers at most `max_mr[0]` bytes at once, the receiver `max_mr[1]`.
    fn with_limits(max_write: u64, max_mr: [u64; 2], seed: u64) -> Pair {
        let (a, b, net) = pair_limits(max_write, max_mr);
        let mut p = Pair {
            s: Proto::new(a, Kind::Send).unwrap(),
            r: Proto::new(b, Kind::Recv).unwrap(),
            net,
            slog: Vec::new(),
            rlog: Vec::new(),
            bufs: Vec::new(),
            rng: Rng(seed | 1),
        };
        let (mut sl, mut rl) = (Vec::new(), Vec::new());
        p.s.start(&mut Completions::new(&mut |d| sl.push(d), None)).unwrap();
        p.r.start(&mut Completions::new(&mut |d| rl.push(d), None)).unwrap();
        assert!(sl.is_empty() && rl.is_empty());
        p
    }

    /// Message k: `len` bytes sent into a receive of `cap`.
    fn buffers(&mut self, k: usize, len: usize, cap: usize) {
        while self.bufs.len() <= k {
            self.bufs.push((Vec::new(), Vec::new()));
        }
        self.bufs[k] = ((0..len).map(|i| pattern(k as u64, i)).collect(), vec![0xee; cap + 2]);
    }

    fn post_send(&mut self, k: usize) {
        let b = &mut self.bufs[k].0;
        let m = Msg { seq: k as u64, region: Region::borrowed(b.as_mut_ptr(), b.len()) };
        let log = &mut self.slog;
        self.s.post(m, &mut Completions::new(&mut |d| log.push(d), None)).unwrap();
    }

    fn post_recv(&mut self, k: usize) {
        let b = &mut self.bufs[k].1;
        // One byte in: odd addresses, and a guard byte on each side.
        // SAFETY: b has cap + 2 bytes.
        let m = Msg { seq: k as u64, region: Region::borrowed(unsafe { b.as_mut_ptr().add(1) }, b.len() - 2) };
        let log = &mut self.rlog;
        self.r.post(m, &mut Completions::new(&mut |d| log.push(d), None)).unwrap();
    }

    /// One step: some work requests cross each way (in random amounts), both sides poll.
    fn step(&mut self) {
        {
            let mut net = self.net.lock();
            for from in [0, 1] {
                let q = net.queued(from) as u64;
                let n = if self.rng.below(4) == 0 { q } else { self.rng.below(q + 1) };
                net.deliver(from, n as usize);
            }
            assert!(net.violations.is_empty(), "{:?}", net.violations);
        }
        let (sl, rl) = (&mut self.slog, &mut self.rlog);
        self.s.poll(&mut Completions::new(&mut |d| sl.push(d), None)).unwrap();
        self.r.poll(&mut Completions::new(&mut |d| rl.push(d), None)).unwrap();
    }

    /// Steps until both logs hold `n` reports each (bounded).
    fn run_until(&mut self, n: usize) {
        for _ in 0..200_000 {
            if self.slog.len() >= n && self.rlog.len() >= n {
                return;
            }
            self.step();
        }
        panic!("stuck: {} sends and {} receives reported of {n}", self.slog.len(), self.rlog.len());
    }

    fn outcome(log: &[Done], k: usize) -> Option<u64> {
        match log.iter().find(|d| d.seq() == k as u64) {
            Some(Done::Ok { bytes, .. }) => Some(*bytes),
            Some(Done::Failed { .. }) => None,
            None => panic!("message {k} not reported: {log:?}"),
        }
    }

    /// Message k arrived whole (or failed on both sides when `fits` is false), nothing written
    /// around it.
    fn check(&self, k: usize, fits: bool) {
        let (sent, got) = (&self.bufs[k].0, &self.bufs[k].1);
        let (s, r) = (Self::outcome(&self.slog, k), Self::outcome(&self.rlog, k));
        let what = format!("message {k}: {} bytes into {}", sent.len(), got.len() - 2);
        assert_eq!(got[0], 0xee, "{what}: written before");
        assert_eq!(got[got.len() - 1], 0xee, "{what}: written after");
        if fits {
            assert_eq!((s, r), (Some(sent.len() as u64), Some(sent.len() as u64)), "{what}");
            assert!(got[1..=sent.len()] == sent[..], "{what}: bytes differ");
            assert!(got[1 + sent.len()..got.len() - 1].iter().all(|&b| b == 0xee), "{what}: written past the message");
        } else {
            assert_eq!((s, r), (None, None), "{what}: both must fail");
        }
    }
}

const MIB: usize = 1 << 20;

/// Each size sent into a receive `extra` bytes longer, both orders of posting, in the delivery
/// orders of `seeds`, over pairs from `pair`: every message arrives whole.
fn every_size(sizes: &[usize], extra: usize, seeds: std::ops::RangeInclusive<u64>, pair: impl Fn(u64) -> Pair) {
    for seed in seeds {
        for receiver_first in [true, false] {
            let mut p = pair(seed);
            for (k, &len) in sizes.iter().enumerate() {
                p.buffers(k, len, len + extra);
            }
            for k in 0..sizes.len() {
                if receiver_first {
                    p.post_recv(k);
                    p.step();
                    p.post_send(k);
                } else {
                    p.post_send(k);
                    p.step();
                    p.post_recv(k);
                }
            }
            p.run_until(sizes.len());
            for k in 0..sizes.len() {
                p.check(k, true);
            }
        }
    }
}

#[test]
fn every_size_arrives_whole_in_any_delivery_order() {
    let sizes = [0, 1, 8, EAGER_MAX - 1, EAGER_MAX, EAGER_MAX + 1, 100_003, MIB, 3 * MIB + 3];
    every_size(&sizes, 0, 1..=12, |seed| Pair::new(MIB as u64, seed));
}

#[test]
fn a_message_longer_than_one_write_goes_as_several() {
    // 64 MiB + 3 bytes at an odd offset with writes of at most 1 MiB: 65 writes (as the VM does).
    let mut p = Pair::new(MIB as u64, 7);
    let len = 64 * MIB + 3;
    p.buffers(0, len, len + 5);
    p.post_recv(0);
    p.post_send(0);
    p.run_until(1);
    p.check(0, true);
    assert_eq!(p.net.lock().writes, 65);
}

#[test]
fn memory_longer_than_one_registration_goes_in_parts_on_either_side() {
    // 10 MiB + 7 bytes, the sender's memory registered in parts of 3 MiB + 1, the receiver's of
    // 1 MiB + 3 (at an odd address), writes of at most 2 MiB: no write may cross a part of either
    // side (the fake NIC records one that does as a violation), and the receiver's Cts comes in
    // eleven records.
    let (len, sp, rp, w) = (10 * MIB + 7, 3 * MIB as u64 + 1, MIB as u64 + 3, 2 * MIB as u64);
    let mut p = Pair::with_limits(w, [sp, rp], 3);
    p.buffers(0, len, len);
    p.post_recv(0);
    p.post_send(0);
    p.run_until(1);
    p.check(0, true);
    // The cuts: every part boundary of either side, and no piece longer than w.
    let mut cuts: Vec<u64> = (1..).map(|i| i * sp).take_while(|&c| c < len as u64).collect();
    cuts.extend((1..).map(|i| i * rp).take_while(|&c| c < len as u64));
    cuts.push(len as u64);
    cuts.sort_unstable();
    cuts.dedup();
    let (mut from, mut want) = (0, 0);
    for c in cuts {
        want += (c - from).div_ceil(w);
        from = c;
    }
    assert_eq!(p.net.lock().writes, want, "writes");
    assert!(want > 10, "parts, not the write limit, cut it ({want} writes)");
    // Messages on both sides of it still arrive whole: eager, and one within a single part.
    for (k, n) in [(1, 8), (2, 100_003)] {
        p.buffers(k, n, n);
        p.post_send(k);
        p.post_recv(k);
    }
    p.run_until(3);
    p.check(1, true);
    p.check(2, true);
}

#[test]
fn every_size_arrives_whole_in_parts_in_any_delivery_order() {
    // Registrations of at most 64 KiB + 3 (sender) and 40 KiB + 3 (receiver), writes of 512 KiB.
    let sizes = [EAGER_MAX + 1, 100_003, MIB, 3 * MIB + 3];
    every_size(&sizes, 9, 1..=6, |seed| Pair::with_limits(MIB as u64 / 2, [65_539, 40_963], seed));
}

#[test]
fn a_short_receive_fails_with_its_send_and_the_next_ones_go_on() {
    // (send, receive): eager into a shorter receive; a large send into a short receive (Rts,
    // answered TOO_LONG); a large send into a shorter large receive (Refuse).
    let cases = [(100, 99), (EAGER_MAX, 10), (EAGER_MAX + 1, EAGER_MAX), (100_000, 5000), (300_000, 299_999), (0, 0), (5000, 5000)];
    for seed in 1..=8u64 {
        for receiver_first in [true, false] {
            let mut p = Pair::new(MIB as u64, seed);
            for (k, &(len, cap)) in cases.iter().enumerate() {
                p.buffers(k, len, cap);
                if receiver_first {
                    p.post_recv(k);
                    p.post_send(k);
                } else {
                    p.post_send(k);
                    p.step();
                    p.post_recv(k);
                }
                p.step();
            }
            p.run_until(cases.len());
            for (k, &(len, cap)) in cases.iter().enumerate() {
                p.check(k, len <= cap);
            }
        }
    }
}

#[test]
fn credits_keep_every_send_within_the_peers_posted_receives() {
    // 3000 messages, 200 in flight, small and large mixed; the receiver is left alone for long
    // stretches (the sender runs out of credits and waits, the fake NIC fails on any SEND that
    // finds no posted receive).
    let n = 3000;
    let mut p = Pair::new(MIB as u64, 99);
    for k in 0..n {
        let len = match k % 7 {
            0 => 70_000,
            1 => EAGER_MAX,
            _ => k % 300,
        };
        p.buffers(k, len, len);
    }
    let (mut sent, mut posted) = (0, 0);
    for round in 0..100_000 {
        if p.slog.len() >= n && p.rlog.len() >= n {
            break;
        }
        while sent < n && sent < p.slog.len() + 200 {
            p.post_send(sent);
            sent += 1;
        }
        if round % 50 < 25 {
            while posted < n && posted < p.rlog.len() + 200 {
                p.post_recv(posted);
                posted += 1;
            }
            p.step();
        } else {
            // The receiver does not poll: only the sender's side moves.
            let mut net = p.net.lock();
            let q = net.queued(0);
            net.deliver(0, q);
            assert!(net.violations.is_empty(), "{:?}", net.violations);
            drop(net);
            let sl = &mut p.slog;
            p.s.poll(&mut Completions::new(&mut |d| sl.push(d), None)).unwrap();
        }
    }
    assert!(p.slog.len() >= n && p.rlog.len() >= n, "stuck at {} / {}", p.slog.len(), p.rlog.len());
    for k in 0..n {
        p.check(k, true);
    }
    let net = p.net.lock();
    assert!(net.max_posted(0) <= RECV_DEPTH && net.max_posted(1) <= RECV_DEPTH);
}

#[test]
fn a_sender_far_ahead_of_the_receives_waits_for_credits() {
    // 500 eager messages before any receive is posted: at most the receiver's queue goes out.
    let mut p = Pair::new(MIB as u64, 5);
    for k in 0..500 {
        p.buffers(k, 64, 64);
        p.post_send(k);
    }
    for _ in 0..50 {
        p.step();
    }
    let sends = p.net.lock().sends;
    assert!(sends < RECV_DEPTH as u64, "sent {sends} eagerly with no receive posted");
    assert!(p.slog.is_empty());
    for k in 0..500 {
        p.post_recv(k);
    }
    p.run_until(500);
    for k in 0..500 {
        p.check(k, true);
    }
}

#[test]
fn one_at_a_time_costs_two_inline_sends_per_small_message() {
    // The round trip the VM measures: one eager SEND, one Ack batch (plus a credit return every
    // half queue).
    let mut p = Pair::new(MIB as u64, 3);
    let n = 1000;
    for k in 0..n {
        p.buffers(k, 8, 8);
        p.post_recv(k);
        p.post_send(k);
        p.run_until(k + 1);
        p.check(k, true);
    }
    let (sends, inline) = {
        let net = p.net.lock();
        (net.sends, net.inline)
    };
    assert!(sends <= 2 * n as u64 + (n as u64 / (RECV_DEPTH as u64 / 2)) + 2, "{sends} SENDs for {n} messages");
    // The message and its Ack batch (16 + 32 bytes) fit the fake NIC's 64 inline bytes.
    assert!(inline >= 2 * n as u64, "{inline} of {sends} SENDs inline");
}
