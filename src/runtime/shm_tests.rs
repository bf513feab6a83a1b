//! The same-host transport through the same entry points the C functions use: negotiation,
//! every copy path (inline, process_vm_readv, the sender's memfd), short receives, wake-ups
//! of a receiver that is not polling, and the fallbacks; and (same helpers) a TCP
//! communicator handed back to the progress thread when its caller stops polling.
use super::*;
use crate::comm::REQUESTS;
use crate::comm::request::Kind;
use crate::comm::test_request;
use crate::config::Transport;
use crate::status::NRT_STATUS;
use crate::tensor::Tensor;
use crate::transport::Transport as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn cfg(port_base: u16, transport: Transport) -> Config {
    Config { transport, connect_timeout: Duration::from_secs(5), streams: 2, ..Config::loopback(port_base) }
}

fn ready(c: &Comm) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(10);
    while !c.test()? {
        assert!(Instant::now() < end, "not connected in 10 s");
        std::thread::yield_now();
    }
    Ok(())
}

fn wait(id: u64) -> Result<u64> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = test_request(id)? {
            return Ok(n);
        }
        assert!(Instant::now() < end, "request not done in 20 s");
        std::thread::yield_now();
    }
}

fn pattern(len: usize, salt: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(131) ^ salt.wrapping_mul(17) ^ (i >> 9)) as u8).collect()
}

/// Sends `len` bytes into a receive of `cap` bytes; checks sizes and every byte.
fn xfer(s: &Arc<Comm>, r: &Arc<Comm>, len: usize, cap: usize, salt: usize) {
    let src = Tensor::allocate(len.max(1), String::new()).unwrap();
    let dst = Tensor::allocate(cap.max(1), String::new()).unwrap();
    let data = pattern(len, salt);
    crate::tensor::write_from(&src, 0, &data).unwrap();
    crate::tensor::memset(&dst, 0, 0xee, cap.max(1)).unwrap();
    let rq = r.post(Kind::Recv, dst.region(0, cap).unwrap()).unwrap();
    let sq = s.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
    assert_eq!(wait(rq).unwrap(), len as u64, "receive of {len}");
    assert_eq!(wait(sq).unwrap(), len as u64, "send of {len}");
    let mut got = vec![0u8; cap];
    crate::tensor::read_into(&dst, 0, &mut got).unwrap();
    assert!(got[..len] == data[..], "{len} bytes: corrupted");
    assert!(got[len..].iter().all(|b| *b == 0xee), "{len} bytes: written beyond the message");
}

/// A source tensor holding `pattern(len, salt)`, an empty destination, and the pattern.
fn loaded(len: usize, salt: usize) -> (Tensor, Tensor, Vec<u8>) {
    let src = Tensor::allocate(len, String::new()).unwrap();
    let dst = Tensor::allocate(len, String::new()).unwrap();
    let data = pattern(len, salt);
    crate::tensor::write_from(&src, 0, &data).unwrap();
    (src, dst, data)
}

/// Every byte of `want` is at `offset` of `dst`.
fn assert_landed(dst: &Tensor, offset: usize, want: &[u8], what: &str) {
    let mut got = vec![0u8; want.len()];
    crate::tensor::read_into(dst, offset, &mut got).unwrap();
    assert!(got == want, "{what}: the bytes that arrived differ");
}

/// The receive `rq` and the send `sq` both end with `len` bytes, and every byte of `want`
/// landed at the start of `dst`.
fn finish(rq: u64, sq: u64, dst: &Tensor, want: &[u8], what: &str) {
    assert_eq!(wait(rq).unwrap(), want.len() as u64, "{what}: receive");
    assert_eq!(wait(sq).unwrap(), want.len() as u64, "{what}: send");
    assert_landed(dst, 0, want, what);
}

/// Polls the pending receive `rq` of TCP communicator `r` until its caller has taken the
/// sockets over (two polls in a row do it).
fn park(r: &Comm, rq: u64, what: &str) {
    for _ in 0..8 {
        assert_eq!(test_request(rq).unwrap(), None, "{what}: completed with nothing sent");
    }
    assert!(r.parked.load(Ordering::Acquire), "{what}: two polls in a row did not take the sockets over");
}

/// Waits (bounded, without testing it) until request `id` is no longer pending.
fn until_done_untested(id: u64, limit: Duration, what: &str) {
    let req = REQUESTS.get(id).unwrap();
    let end = Instant::now() + limit;
    while req.is_pending() {
        assert!(Instant::now() < end, "{what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A connected TCP pair (lnc `a` sends to lnc `b`), both sides ready.
fn tcp_pair(base: u16, a: i32, b: i32) -> (Arc<Comm>, Arc<Comm>) {
    let (s, r) = pair(base, a, b, Transport::Tcp, Transport::Tcp);
    ready(&s).unwrap();
    ready(&r).unwrap();
    (s, r)
}

fn pair(base: u16, a: i32, b: i32, ta: Transport, tb: Transport) -> (Arc<Comm>, Arc<Comm>) {
    nrt_init();
    init_with(a, Some(cfg(base, ta))).unwrap();
    init_with(b, Some(cfg(base, tb))).unwrap();
    let s = connect("127.0.0.1", b, a).unwrap();
    let r = accept("127.0.0.1", a, b).unwrap();
    (s, r)
}

#[test]
fn every_copy_path_and_short_receives() {
    let (a, b) = (940, 941);
    let (s, r) = pair(26100, a, b, Transport::Auto, Transport::Auto);
    ready(&s).unwrap();
    ready(&r).unwrap();
    assert!(s.io.lock().is_shm() && r.io.lock().is_shm(), "loopback between auto lncs uses shared memory");
    // 0; inline (<= 960); process_vm_readv (anonymous tensors below 64 KiB); the sender's memfd.
    let inline = crate::transport::shm::INLINE;
    let memfd = crate::sys::memfd::MEMFD_MIN;
    for (k, len) in [0, 1, 8, inline, inline + 1, 4095, memfd - 1, memfd, (1 << 20) + 3, 9 << 20].into_iter().enumerate() {
        xfer(&s, &r, len, len, k);
        xfer(&s, &r, len, len + 77, k + 100);
    }
    // The same memfd again (the receiver's mapping cache), at an offset of a slice.
    let src = Tensor::allocate(3 << 20, String::new()).unwrap();
    let dst = Tensor::allocate(3 << 20, String::new()).unwrap();
    for round in 0..3 {
        let data = pattern(1 << 20, round);
        crate::tensor::write_from(&src, 12345 * round, &data).unwrap();
        let rq = r.post(Kind::Recv, dst.region(round, 1 << 20).unwrap()).unwrap();
        let sq = s.post(Kind::Send, src.region(12345 * round, 1 << 20).unwrap()).unwrap();
        assert_eq!(wait(rq).unwrap(), 1 << 20);
        assert_eq!(wait(sq).unwrap(), 1 << 20);
        assert_landed(&dst, round, &data, &format!("round {round}"));
    }
    // Shorter receives fail both sides, write nothing, and the pair goes on.
    for (len, cap) in [(5000usize, 100usize), (inline, inline - 1), (2 << 20, (2 << 20) - 1)] {
        let src = Tensor::allocate(len, String::new()).unwrap();
        let dst = Tensor::allocate(cap, String::new()).unwrap();
        crate::tensor::memset(&dst, 0, 0x5a, cap).unwrap();
        let rq = r.post(Kind::Recv, dst.region(0, cap).unwrap()).unwrap();
        let sq = s.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
        assert_eq!(wait(rq).unwrap_err().status, NRT_STATUS::NRT_FAILURE, "short receive {cap} < {len}");
        assert_eq!(wait(sq).unwrap_err().status, NRT_STATUS::NRT_FAILURE, "send {len} into {cap}");
        let mut got = vec![0u8; cap];
        crate::tensor::read_into(&dst, 0, &mut got).unwrap();
        assert!(got.iter().all(|b| *b == 0x5a), "a too-short receive writes nothing");
        xfer(&s, &r, 100, 100, len);
    }
    // A window of 128 messages in flight each way before anything is tested (the rings are
    // exactly as long as the pending limit).
    let n = crate::config::MAX_PENDING_PER_COMM;
    let srcs: Vec<Tensor> = (0..n)
        .map(|i| {
            let t = Tensor::allocate(3000, String::new()).unwrap();
            crate::tensor::write_from(&t, 0, &pattern(3000, i)).unwrap();
            t
        })
        .collect();
    let dsts: Vec<Tensor> = (0..n).map(|_| Tensor::allocate(3000, String::new()).unwrap()).collect();
    let sqs: Vec<u64> = srcs.iter().map(|t| s.post(Kind::Send, t.region(0, 3000).unwrap()).unwrap()).collect();
    let rqs: Vec<u64> = dsts.iter().map(|t| r.post(Kind::Recv, t.region(0, 3000).unwrap()).unwrap()).collect();
    for (i, (sq, rq)) in sqs.into_iter().zip(rqs).enumerate() {
        assert_eq!(wait(rq).unwrap(), 3000);
        assert_eq!(wait(sq).unwrap(), 3000);
        assert_landed(&dsts[i], 0, &pattern(3000, i), &format!("message {i} of the window"));
    }
    close(a).unwrap();
    close(b).unwrap();
}

/// A receive nobody tests still completes: the sender's Wake frame rouses the receiver's
/// progress thread, which copies.
#[test]
fn receiver_that_does_not_poll_is_woken() {
    let (a, b) = (942, 943);
    let (s, r) = pair(26110, a, b, Transport::Shm, Transport::Shm);
    ready(&s).unwrap();
    ready(&r).unwrap();
    for (k, len) in [8usize, 5000, 1 << 20].into_iter().enumerate() {
        let (src, dst, data) = loaded(len, k);
        let rq = r.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
        // Let the receiver's "recently polled" mark go stale.
        std::thread::sleep(Duration::from_millis(5));
        let sq = s.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
        until_done_untested(rq, Duration::from_secs(5), &format!("{len} bytes: the receiver's progress thread was not woken"));
        finish(rq, sq, &dst, &data, &format!("{len} bytes"));
    }
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn tcp_sockets_go_back_to_the_progress_thread_when_the_caller_stops_polling() {
    // A caller spinning on a TCP receive takes its sockets over (the progress thread stops
    // watching them); once it stops polling, the progress thread must take them back and
    // finish transfers on its own, large (read over several polls) and small.
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let (a, b) = (950, 951);
    let (s, r) = tcp_pair(26150, a, b);
    for (k, len) in [40usize << 20, 8].into_iter().enumerate() {
        let (src, dst, data) = loaded(len, k + 11);
        let rq = r.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
        park(&r, rq, &format!("{len} bytes"));
        let sq = s.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
        // Neither side polls now: the receiver's progress thread must get the bytes.
        until_done_untested(rq, Duration::from_secs(10), &format!("{len} bytes: the parked receive never completed without its caller"));
        assert!(!r.parked.load(Ordering::Acquire), "{len} bytes: still parked");
        finish(rq, sq, &dst, &data, &format!("{len} bytes"));
    }
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn streams_to_this_host_run_reno_from_their_handshake_and_others_keep_the_system_choice() {
    // BBR, a common default (this VM's), paces every loopback socket and drains it to probe
    // the round trip; once started on a connection it leaves the socket paced when replaced,
    // so the choice is made before the handshake: on the connecting socket and on the
    // listener whose accepted sockets inherit it (docs/transports.md, "Congestion control").
    let (a, b) = (968, 969);
    let (s, r) = tcp_pair(26240, a, b);
    assert_eq!(lookup(r.hub.id).unwrap().listener_congestion(), "reno", "the listener (accepted sockets inherit it)");
    for (side, c) in [("connecting", &s), ("accepting", &r)] {
        let algos = c.io.lock().transport().congestion();
        assert!(!algos.is_empty(), "{side}: no streams");
        for (i, cc) in algos.iter().enumerate() {
            assert_eq!(cc, "reno", "{side} side, stream {i}");
        }
    }
    let (src, dst, data) = loaded(3 << 20, 41);
    let sq = s.post(Kind::Send, src.region(0, 3 << 20).unwrap()).unwrap();
    let rq = r.post(Kind::Recv, dst.region(0, 3 << 20).unwrap()).unwrap();
    finish(rq, sq, &dst, &data, "a message over reno streams");
    // Across hosts (unset variable): the system's default, what the administrator chose.
    use crate::sys::net::is_this_host;
    use crate::transport::tcp::congestion_for;
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap();
    assert_eq!(congestion_for(false).map(|c| c.to_str().unwrap()), Some(system.trim()));
    assert_eq!(congestion_for(true).map(|c| c.to_str().unwrap()), Some("reno"));
    assert!(is_this_host("127.0.0.1".parse().unwrap()));
    // TEST-NET-1 (RFC 5737) is never an address of this host; nothing is sent to it.
    assert!(!is_this_host("192.0.2.1".parse().unwrap()));
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn a_caller_that_works_between_large_receives_gets_the_next_one_moved_meanwhile() {
    // A caller spinning from one large TCP receive to the next keeps its sockets (parked);
    // one that comes back late to this communicator (it worked meanwhile) hands them back to
    // the progress thread as each large receive completes, so that the next message lands
    // while it works instead of waiting in the socket for its next poll.
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let (a, b) = (966, 967);
    let (s, r) = tcp_pair(26240, a, b);
    let len = 1 << 20;
    let msgs: Vec<(Tensor, Tensor, Vec<u8>)> = (0..6).map(|k| loaded(len, k + 31)).collect();
    let recv = |k: usize| r.post(Kind::Recv, msgs[k].1.region(0, len).unwrap()).unwrap();
    let send = |k: usize| s.post(Kind::Send, msgs[k].0.region(0, len).unwrap()).unwrap();
    // Spinning: 0, then 1 and 2 at once; the sockets stay with the caller throughout.
    let rq: Vec<u64> = (0..3).map(recv).collect();
    park(&r, rq[0], "spinning caller");
    let sq: Vec<u64> = (0..3).map(send).collect();
    for (k, &q) in rq.iter().enumerate() {
        assert_eq!(wait(q).unwrap(), len as u64, "spinning, receive {k}");
        assert!(r.parked.load(Ordering::Acquire), "spinning, receive {k}: sockets handed back");
    }
    for (k, q) in sq.into_iter().enumerate() {
        assert_eq!(wait(q).unwrap(), len as u64, "spinning, send {k}");
        assert_landed(&msgs[k].1, 0, &msgs[k].2, &format!("spinning, message {k}"));
    }
    // Working: the caller computes for 2 ms after receive 2, posts receives 3 and 4, takes
    // the sockets over again (polling 3 before anything is sent), then polls 3 to the end:
    // at that completion the sockets go back, and message 4 lands with no poll from it.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2) {
        std::hint::spin_loop();
    }
    let rq3 = recv(3);
    let rq4 = recv(4);
    park(&r, rq3, "working caller");
    let sq3 = send(3);
    assert_eq!(wait(rq3).unwrap(), len as u64, "working, receive 3");
    assert!(!r.parked.load(Ordering::Acquire), "working: the sockets stayed with the caller");
    let sq4 = send(4);
    until_done_untested(rq4, Duration::from_secs(10), "working: message 4 did not land while the caller worked");
    finish(rq4, sq4, &msgs[4].1, &msgs[4].2, "working, message 4");
    assert_eq!(wait(sq3).unwrap(), len as u64, "working, send 3");
    assert_landed(&msgs[3].1, 0, &msgs[3].2, "working, message 3");
    // Message 5 is sent before its receive is posted: its first chunk waits in the socket.
    // The post leaves it to the progress thread (this caller works between requests), which
    // must read it with no poll from the caller.
    let sq5 = send(5);
    std::thread::sleep(Duration::from_millis(20));
    let rq5 = recv(5);
    until_done_untested(rq5, Duration::from_secs(10), "working: message 5, waiting before its post, did not land");
    finish(rq5, sq5, &msgs[5].1, &msgs[5].2, "working, message 5");
    // A small message sent before its receive is posted lies whole in the stream's inbox
    // (the progress thread read it with its header), with nothing left in the socket to
    // report readiness: the post itself must take it from there.
    let (src6, dst6, data6) = loaded(100, 37);
    let sq6 = s.post(Kind::Send, src6.region(0, 100).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let rq6 = r.post(Kind::Recv, dst6.region(0, 100).unwrap()).unwrap();
    until_done_untested(rq6, Duration::from_secs(5), "working: a small message waiting in the inbox did not land");
    finish(rq6, sq6, &dst6, &data6, "working, message 6");
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn an_ack_left_queued_by_a_spinning_caller_goes_out_once_that_caller_waits_on_another_request() {
    // One thread exchanging with itself over TCP, the way each side of an exchange runs:
    // post a receive and a send, spin on the receive until done, then on the send. The
    // receive's completion leaves its Ack queued (its caller may be about to answer), and the
    // send waits for the peer's Ack, here that very one: the first polls of the pending send
    // must put it on the wire, and so must flush(lnc). (Before, it waited for the progress
    // thread's next tick: two processes exchanging this way took 0.7 ms per step, not 24 µs.)
    let (a, b) = (954, 955);
    let (s, r) = tcp_pair(26170, a, b);
    let mut left_queued = 0;
    for k in 0..20 {
        let (src, dst, data) = loaded(8, k);
        let rq = r.post(Kind::Recv, dst.region(0, 8).unwrap()).unwrap();
        park(&r, rq, "exchange");
        let sq = s.post(Kind::Send, src.region(0, 8).unwrap()).unwrap();
        assert_eq!(wait(rq).unwrap(), 8, "step {k}: receive");
        assert_landed(&dst, 0, &data, &format!("step {k}"));
        let mut sent = None;
        if r.io.lock().has_queued_control() {
            // (Unless the progress thread's tick came in between: then this step shows nothing.)
            // Odd steps call flush(lnc) instead, the end of a receive for its caller: the same.
            left_queued += 1;
            let mut calls = 0;
            while r.io.lock().has_queued_control() {
                assert!(calls < 3, "step {k}: 3 polls of the waiting send (or flushes) left the receive's Ack queued");
                if k % 2 == 0 {
                    sent = test_request(sq).unwrap();
                } else {
                    flush(b).unwrap();
                }
                calls += 1;
            }
        }
        let n = match sent {
            Some(n) => n,
            None => wait(sq).unwrap(),
        };
        assert_eq!(n, 8, "step {k}: send");
    }
    assert!(left_queued > 0, "no completed receive left its Ack queued: the case was not exercised");
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn a_spinning_caller_sends_a_large_receives_ack_at_once_and_leaves_only_a_small_ones_queued() {
    // A receiver that completes a receive by spinning and then computes without calling the
    // library: the sender waits for that receive's Ack. Left queued (for the answer the
    // caller may be about to send), it would hold a pipeline of large messages (the sender's
    // next one crossing while the receiver works) until the receiver's next call. Messages
    // above 64 KiB send it within the completing poll; small ones may leave it queued (the
    // previous test says when it goes then). Every step checks every byte.
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let (a, b) = (956, 957);
    let (s, r) = tcp_pair(26180, a, b);
    let mut small_left_queued = 0;
    for k in 0..12 {
        let len = if k % 2 == 0 { (1 << 20) + 5 } else { 8 };
        let (src, dst, data) = loaded(len, 40 + k);
        let rq = r.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
        park(&r, rq, &format!("step {k}"));
        let sq = s.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
        assert_eq!(wait(rq).unwrap(), len as u64, "step {k}: receive");
        let queued = r.io.lock().has_queued_control();
        if len > 65536 {
            assert!(!queued, "step {k}: a completed {len}-byte receive left its Ack queued");
        } else if queued {
            small_left_queued += 1;
        }
        assert_landed(&dst, 0, &data, &format!("step {k}"));
        assert_eq!(wait(sq).unwrap(), len as u64, "step {k}: send");
    }
    // (The progress thread's tick may flush a small one first: then that step shows nothing.)
    assert!(small_left_queued > 0, "no small receive left its Ack queued: the contrast was not exercised");
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn over_shared_memory_a_receiver_that_may_not_read_the_sender_gets_what_is_not_in_a_memfd_staged() {
    // The receiving lnc may not use process_vm_readv (NEURON_RT_ASYNC_SENDRECV_SHM_VM_READV=0,
    // as where Yama or seccomp refuse it): the channel is still used, and the sender copies
    // messages from memory that is not a memfd (an attached buffer, a small tensor) into a
    // staging memfd of its own; memfd tensors and inline messages go as before. Every byte
    // checked; a receive shorter than a staged send fails both and the next one still arrives.
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let (a, b) = (958, 959);
    nrt_init();
    init_with(a, Some(cfg(26190, Transport::Shm))).unwrap();
    init_with(b, Some(Config { shm_vm_readv: false, ..cfg(26190, Transport::Shm) })).unwrap();
    let s = connect("127.0.0.1", b, a).unwrap();
    let r = accept("127.0.0.1", a, b).unwrap();
    ready(&s).unwrap();
    ready(&r).unwrap();
    assert!(r.io.lock().is_shm(), "the pair is not on shared memory");
    let big = (1 << 20) + 3;
    let mut attached = pattern(big, 71);
    // SAFETY: `attached` outlives every transfer from it (all waited for below).
    let src_attached = unsafe { Tensor::attached(String::new(), attached.as_mut_ptr(), big) }.unwrap();
    let want_attached = attached.clone();
    let mut staged = 0;
    // (source, length, staged?): attached 1 MiB + 3 (three times: the staging memfd is
    // reused), a small tensor's 5000 bytes, 8 bytes (inline), a memfd tensor's 3 MiB.
    let (small_src, _, small) = loaded(5000, 72);
    let (memfd_src, _, memfd_data) = loaded(3 << 20, 73);
    let cases: [(&Tensor, &[u8], bool); 6] = [
        (&src_attached, &want_attached, true),
        (&small_src, &small, true),
        (&src_attached, &want_attached, true),
        (&small_src, &small[..8], false),
        (&memfd_src, &memfd_data, false),
        (&src_attached, &want_attached, true),
    ];
    for (k, (src, want, is_staged)) in cases.iter().enumerate() {
        let dst = Tensor::allocate(want.len(), String::new()).unwrap();
        let rq = r.post(Kind::Recv, dst.region(0, want.len()).unwrap()).unwrap();
        let sq = s.post(Kind::Send, src.region(0, want.len()).unwrap()).unwrap();
        finish(rq, sq, &dst, want, &format!("case {k} ({} bytes)", want.len()));
        staged += *is_staged as u64;
        assert_eq!(s.io.lock().shm_staged(), Some(staged), "case {k}: messages staged so far");
    }
    // A receive shorter than a staged send: both fail, nothing written; the next arrives.
    let short = Tensor::allocate(100, String::new()).unwrap();
    crate::tensor::memset(&short, 0, 0xee, 100).unwrap();
    let rq = r.post(Kind::Recv, short.region(0, 100).unwrap()).unwrap();
    let sq = s.post(Kind::Send, src_attached.region(0, big).unwrap()).unwrap();
    assert!(wait(rq).is_err(), "a receive shorter than the send succeeded");
    assert!(wait(sq).is_err(), "a send longer than its receive succeeded");
    assert_landed(&short, 0, &[0xee; 100], "a refused staged message");
    let dst = Tensor::allocate(big, String::new()).unwrap();
    let rq = r.post(Kind::Recv, dst.region(0, big).unwrap()).unwrap();
    let sq = s.post(Kind::Send, src_attached.region(0, big).unwrap()).unwrap();
    finish(rq, sq, &dst, &want_attached, "after the refused one");
    close(a).unwrap();
    close(b).unwrap();
    drop(attached);
}

#[test]
fn over_shared_memory_small_messages_outside_memfds_are_staged_even_where_the_receiver_may_read_the_sender() {
    // process_vm_readv costs ~2 µs a call: messages up to 64 KiB that are not in a memfd are
    // staged anyway (above the inline limit); an attached 1 MiB buffer is read directly.
    use crate::transport::shm::INLINE;
    let (a, b) = (960, 961);
    let (s, r) = pair(26210, a, b, Transport::Shm, Transport::Shm);
    ready(&s).unwrap();
    ready(&r).unwrap();
    let big = (1 << 20) + 3;
    let mut attached = pattern(big, 81);
    // SAFETY: `attached` outlives every transfer from it (all waited for below).
    let src_attached = unsafe { Tensor::attached(String::new(), attached.as_mut_ptr(), big) }.unwrap();
    let want_attached = attached.clone();
    let (small_src, _, small) = loaded(65536 - 1, 82);
    for (k, (src, want, staged)) in [
        (&small_src, &small[..], 1),
        (&src_attached, &want_attached[..], 1),
        (&small_src, &small[..INLINE + 1], 2),
        (&small_src, &small[..INLINE], 2),
    ]
    .into_iter()
    .enumerate()
    {
        let dst = Tensor::allocate(want.len(), String::new()).unwrap();
        let rq = r.post(Kind::Recv, dst.region(0, want.len()).unwrap()).unwrap();
        let sq = s.post(Kind::Send, src.region(0, want.len()).unwrap()).unwrap();
        finish(rq, sq, &dst, want, &format!("case {k} ({} bytes)", want.len()));
        assert_eq!(s.io.lock().shm_staged(), Some(staged), "case {k}: messages staged so far");
    }
    // A full window of small staged messages (the pending limit) shares one staging memfd:
    // descriptors do not grow with the messages in flight. Four sources in turn, so a
    // message read from another's slot would show.
    let srcs: Vec<_> = (0..4).map(|k| loaded(5000, 90 + k)).collect();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();
    let n = crate::config::MAX_PENDING_PER_COMM;
    let dsts: Vec<Tensor> = (0..n).map(|_| Tensor::allocate(5000, String::new()).unwrap()).collect();
    let rqs: Vec<u64> = dsts.iter().map(|d| r.post(Kind::Recv, d.region(0, 5000).unwrap()).unwrap()).collect();
    let sqs: Vec<u64> = (0..n).map(|i| s.post(Kind::Send, srcs[i % 4].0.region(0, 5000).unwrap()).unwrap()).collect();
    // The process's other tests open and close descriptors meanwhile (a few dozen at most): a
    // descriptor per message would be 128 more.
    let grown = fds().saturating_sub(before);
    assert!(grown < n / 2, "{n} small messages in flight took {grown} descriptors");
    for i in 0..n {
        finish(rqs[i], sqs[i], &dsts[i], &srcs[i % 4].2, &format!("window message {i}"));
    }
    assert_eq!(s.io.lock().shm_staged(), Some(2 + n as u64), "the window's messages were not all staged");
    close(a).unwrap();
    close(b).unwrap();
    drop(attached);
}

#[test]
fn receives_at_every_copy_distance_land_exactly() {
    // Destinations 1-31 bytes past the source (modulo 4 KiB) take the detours of
    // sys/copy.rs: TCP from our memfd tensors (sendfile: Data frames name the source
    // page offset) through the stream's bounce buffer; shared memory by memcpy pieces, and
    // from an attached buffer by process_vm_readv through a bounce buffer. Every byte checked.
    for (base, a, b, t) in [(26220u16, 962, 963, Transport::Tcp), (26230, 964, 965, Transport::Shm)] {
        let (s, r) = pair(base, a, b, t, t);
        ready(&s).unwrap();
        ready(&r).unwrap();
        let cap = 3 << 20;
        let own = Tensor::allocate(cap, String::new()).unwrap();
        let mut buf = vec![0u8; cap];
        // SAFETY: `buf` outlives every transfer from it (all waited for below).
        let attached = unsafe { Tensor::attached(String::new(), buf.as_mut_ptr(), cap) }.unwrap();
        let dst = Tensor::allocate(cap + 8192, String::new()).unwrap();
        let mut k = 0;
        for (src, name) in [(&own, "own"), (&attached, "attached")] {
            for src_off in [0usize, 5] {
                for dst_off in [0usize, 16, 31, 32, 4096 + 8] {
                    for len in [(1 << 20) + 7, 100_000, 8192] {
                        k += 1;
                        let what = format!("{t:?}, {name} source at {src_off}, destination at {dst_off}, {len} bytes");
                        let data = pattern(len, k);
                        crate::tensor::write_from(src, src_off, &data).unwrap();
                        let rq = r.post(Kind::Recv, dst.region(dst_off, len).unwrap()).unwrap();
                        let sq = s.post(Kind::Send, src.region(src_off, len).unwrap()).unwrap();
                        assert_eq!(wait(rq).unwrap(), len as u64, "{what}: receive");
                        assert_eq!(wait(sq).unwrap(), len as u64, "{what}: send");
                        assert_landed(&dst, dst_off, &data, &what);
                    }
                }
            }
        }
        close(a).unwrap();
        close(b).unwrap();
        drop(attached);
        drop(buf);
    }
}

#[test]
fn a_caller_spinning_on_one_communicator_keeps_the_other_parked_ones_of_its_lnc_moving_until_it_leaves_them() {
    // Two TCP pairs between the same lncs. The receive on r2 is parked (its caller polled
    // it), then the caller spins only on r1: r2's 8 MiB must still arrive, moved by that
    // caller (`Lnc::help_parked`) while r2 stays parked, not by the progress thread (it takes
    // parked sockets back only once no caller polls the lnc, or r2 was left for 50 ms). A
    // test thread preempted for 5 ms, or a transfer slower than 50 ms, would see a
    // hand-back: three tries.
    let _memory = crate::MEMORY_HEAVY_TESTS.lock();
    let (a, b) = (952, 953);
    let (s1, r1) = pair(26160, a, b, Transport::Tcp, Transport::Tcp);
    let s2 = connect("127.0.0.1", b, a).unwrap();
    let r2 = accept("127.0.0.1", a, b).unwrap();
    for c in [&s1, &r1, &s2, &r2] {
        ready(c).unwrap();
    }
    let len = 8usize << 20;
    let (src, dst, data) = loaded(len, 21);
    let (small_src, small_dst, small) = loaded(8, 22);
    let mut helped = false;
    for attempt in 0..3 {
        let rq2 = r2.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
        park(&r2, rq2, &format!("attempt {attempt}: r2"));
        let rq1 = r1.post(Kind::Recv, small_dst.region(0, 8).unwrap()).unwrap();
        let sq2 = s2.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        while REQUESTS.get(rq2).unwrap().is_pending() {
            assert!(Instant::now() < end, "attempt {attempt}: r2's receive never completed while the caller polled r1");
            assert_eq!(test_request(rq1).unwrap(), None, "r1 received with nothing sent");
        }
        helped |= r2.parked.load(Ordering::Acquire);
        finish(rq2, sq2, &dst, &data, &format!("attempt {attempt}: r2"));
        let sq1 = s1.post(Kind::Send, small_src.region(0, 8).unwrap()).unwrap();
        finish(rq1, sq1, &small_dst, &small, &format!("attempt {attempt}: r1"));
        if helped {
            break;
        }
    }
    assert!(helped, "every time, r2 was handed back to the progress thread while a caller polled its lnc");
    // Left alone for 50 ms while the caller keeps polling r1 only: r2 goes back to the
    // progress thread, which then moves its bytes with no caller involved.
    let rq2 = r2.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
    park(&r2, rq2, "r2, to be left alone");
    let rq1 = r1.post(Kind::Recv, small_dst.region(0, 8).unwrap()).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while r2.parked.load(Ordering::Acquire) {
        assert!(Instant::now() < end, "r2, left alone, was never handed back while the caller polled r1");
        assert_eq!(test_request(rq1).unwrap(), None, "r1 received with nothing sent");
    }
    let sq2 = s2.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
    until_done_untested(rq2, Duration::from_secs(10), "r2's receive, handed back, never completed without its caller");
    finish(rq2, sq2, &dst, &data, "r2 after the hand-back");
    let sq1 = s1.post(Kind::Send, small_src.region(0, 8).unwrap()).unwrap();
    finish(rq1, sq1, &small_dst, &small, "r1 after the hand-back");
    close(a).unwrap();
    close(b).unwrap();
}

/// Calls `hub.sleep()` until `ok` accepts it (bounded): while another test's receive holds a
/// deferred Ack (process wide), the answer is `PARK_TICK`. `between` runs before each try.
fn sleep_until(hub: &crate::comm::Hub, ok: impl Fn(Duration) -> bool, mut between: impl FnMut(), what: &str) -> Duration {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        between();
        let d = hub.sleep();
        if ok(d) {
            return d;
        }
        assert!(Instant::now() < end, "{what}: the progress thread's sleep stayed {d:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_progress_thread_sleeps_until_a_parked_communicator_can_go_quiet() {
    // A caller spinning on a pending send parks its communicator: the lnc's progress thread
    // needs to look at it only when the caller may have stopped (PARK_IDLE_NS after its last
    // poll), not every millisecond. A parked TCP receive keeps the millisecond tick (a poll may
    // leave its Ack deferred). Nothing parked: the long tick.
    use crate::comm::{PARK_IDLE_NS, PARK_TICK, TICK};
    let (a, b) = (962, 963);
    let (s, r) = tcp_pair(26430, a, b);
    let idle = Duration::from_nanos(PARK_IDLE_NS);
    sleep_until(&s.hub, |d| d == TICK, || {}, "nothing parked");
    let (src, dst, data) = loaded(8, 31);
    let sq = s.post(Kind::Send, src.region(0, 8).unwrap()).unwrap();
    // Polled until parked (bounded: a poll that finds the progress thread at the communicator
    // counts for nothing).
    let end = Instant::now() + Duration::from_secs(5);
    while !s.parked.load(Ordering::Acquire) {
        assert!(Instant::now() < end, "polling the send never took its sockets over");
        assert_eq!(test_request(sq).unwrap(), None, "the send completed with no receive posted");
    }
    let d = sleep_until(
        &s.hub,
        |d| d > PARK_TICK,
        || assert_eq!(test_request(sq).unwrap(), None, "the send completed with no receive posted"),
        "a parked send",
    );
    assert!(d <= idle + PARK_TICK, "a parked send's caller just polled: the progress thread sleeps {d:?}, beyond {idle:?}");
    let rq = r.post(Kind::Recv, dst.region(0, 8).unwrap()).unwrap();
    // The receive completes at once (the data waited): the receiver's comm parks on a fresh one.
    finish(rq, sq, &dst, &data, "the first message");
    let rq = r.post(Kind::Recv, dst.region(0, 8).unwrap()).unwrap();
    park(&r, rq, "a receive");
    assert_eq!(r.hub.sleep(), PARK_TICK, "a parked TCP receive");
    // The send's caller left: its communicator goes back, and the sleep is long again.
    let end = Instant::now() + Duration::from_secs(5);
    while s.parked.load(Ordering::Acquire) {
        assert!(Instant::now() < end, "the send's communicator, left alone, was never handed back");
        std::thread::sleep(Duration::from_millis(1));
    }
    sleep_until(&s.hub, |d| d == TICK, || {}, "the send's communicator handed back");
    let (src, _, data) = loaded(8, 32);
    let sq = s.post(Kind::Send, src.region(0, 8).unwrap()).unwrap();
    finish(rq, sq, &dst, &data, "the second message");
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn a_waiting_sender_wakes_a_receiver_that_stopped_polling() {
    // The receiver polls its receive (its stamp is fresh, so the send's doorbell stays
    // quiet), then stops; the sender waits for its acknowledgement and must wake it.
    let (a, b) = (948, 949);
    let (s, r) = pair(26140, a, b, Transport::Shm, Transport::Shm);
    ready(&s).unwrap();
    ready(&r).unwrap();
    for (k, len) in [8usize, 5000, 1 << 20].into_iter().enumerate() {
        let (src, dst, data) = loaded(len, k + 7);
        let rq = r.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
        for _ in 0..16 {
            assert_eq!(test_request(rq).unwrap(), None);
        }
        let sq = s.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
        assert_eq!(wait(sq).unwrap(), len as u64, "{len} bytes: the send never completed");
        // The receiver's progress thread did the copy: its request is complete untested.
        assert!(!REQUESTS.get(rq).unwrap().is_pending(), "{len} bytes");
        assert_eq!(wait(rq).unwrap(), len as u64);
        assert_landed(&dst, 0, &data, &format!("{len} bytes"));
    }
    // A send that finds no receive posted waits in the ring (one Wake at most); the receive
    // posted later takes it at once.
    let (src, dst, data) = loaded(64, 3);
    let sq = s.post(Kind::Send, src.region(0, 64).unwrap()).unwrap();
    for _ in 0..1000 {
        assert_eq!(test_request(sq).unwrap(), None, "a send completed before its receive was posted");
    }
    let rq = r.post(Kind::Recv, dst.region(0, 64).unwrap()).unwrap();
    assert!(!REQUESTS.get(rq).unwrap().is_pending(), "the post did not read the ring");
    finish(rq, sq, &dst, &data, "a send posted before its receive");
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn tcp_when_one_side_declines_and_an_error_when_shm_is_required() {
    // The receiving lnc is set to TCP: the sender's offer is declined, both use TCP.
    let (a, b) = (944, 945);
    let (s, r) = pair(26120, a, b, Transport::Auto, Transport::Tcp);
    ready(&s).unwrap();
    ready(&r).unwrap();
    assert!(!s.io.lock().is_shm() && !r.io.lock().is_shm());
    xfer(&s, &r, 100_000, 100_000, 1);
    close(a).unwrap();
    close(b).unwrap();
    // Required on the sending side, declined by the receiver: set-up fails, with a reason.
    let (a, b) = (946, 947);
    let (s, _r) = pair(26130, a, b, Transport::Shm, Transport::Tcp);
    let e = ready(&s).unwrap_err();
    assert_eq!(e.status, NRT_STATUS::NRT_FAILURE);
    assert!(e.msg.contains("shared memory"), "{e}");
    let _ = close(a);
    let _ = close(b);
}

/// Device memory with a virtual address (the LD_PRELOAD library's vendor tensors in mapped HBM),
/// stood in for by host memory whose device address is a mapping without access: over TCP it is
/// staged through its StagedMemory in every direction, every byte right and nothing loaded or
/// stored through the device address (that would crash the test); shared memory refuses it
/// (the LD_PRELOAD library never chooses shared memory).
#[test]
fn device_memory_goes_over_tcp_staged_and_shared_memory_refuses_it() {
    use crate::tensor::fake_device::FakeDevice;
    let (a, b) = (970, 971);
    let (s, r) = tcp_pair(26400, a, b);
    for (k, len) in [0usize, 8, 4095, 100_000, (1 << 20) + 3, (3 << 20) + 1].into_iter().enumerate() {
        let data = pattern(len, k + 50);
        for (dev_src, dev_dst) in [(true, false), (false, true), (true, true)] {
            let what = format!("{len} bytes, device source {dev_src}, device destination {dev_dst}");
            let (sd, rd) = (FakeDevice::new(len + 7, true), FakeDevice::new(len + 9, true));
            sd.fill(5, &data);
            rd.fill(0, &vec![0xee; len + 9]);
            let (src, dst) = (Tensor::allocate(len.max(1), String::new()).unwrap(), Tensor::allocate(len + 9, String::new()).unwrap());
            crate::tensor::write_from(&src, 0, &data).unwrap();
            crate::tensor::memset(&dst, 0, 0xee, len + 9).unwrap();
            let rreg = if dev_dst { rd.region(3, len) } else { dst.region(3, len).unwrap() };
            let sreg = if dev_src { sd.region(5, len) } else { src.region(0, len).unwrap() };
            let rq = r.post(Kind::Recv, rreg).unwrap();
            let sq = s.post(Kind::Send, sreg).unwrap();
            assert_eq!(wait(rq).unwrap(), len as u64, "{what}: receive");
            assert_eq!(wait(sq).unwrap(), len as u64, "{what}: send");
            let got = if dev_dst {
                rd.contents(0, len + 9)
            } else {
                let mut g = vec![0u8; len + 9];
                crate::tensor::read_into(&dst, 0, &mut g).unwrap();
                g
            };
            assert!(got[..3].iter().chain(&got[3 + len..]).all(|&x| x == 0xee), "{what}: written outside the range");
            assert!(got[3..3 + len] == data[..], "{what}: the bytes that arrived differ");
            if dev_src {
                assert_eq!(sd.copied().0, len, "{what}: the source was not staged");
            }
            if dev_dst {
                assert_eq!(rd.copied().1, len, "{what}: the destination was not staged");
            }
        }
    }
    close(a).unwrap();
    close(b).unwrap();

    let (a, b) = (972, 973);
    let (s, r) = pair(26410, a, b, Transport::Shm, Transport::Shm);
    ready(&s).unwrap();
    ready(&r).unwrap();
    assert!(s.io.lock().is_shm() && r.io.lock().is_shm());
    let dev = FakeDevice::new(4096, true);
    let sq = s.post(Kind::Send, dev.region(0, 4096)).unwrap();
    let e = wait(sq).unwrap_err();
    assert!(e.msg.contains("shared memory"), "{e}");
    assert_eq!(dev.calls(), (0, 0));
    let _ = close(a);
    let _ = close(b);
}
