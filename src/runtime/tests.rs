//! The request table under load: threads posting, testing and completing requests on shared
//! communicators through the same entry points the C functions use.
use super::*;
use crate::comm::request::Kind;
use crate::comm::test_request;
use crate::tensor::Tensor;
use std::time::{Duration, Instant};

fn cfg(port_base: u16) -> Config {
    Config { streams: 2, ..Config::loopback(port_base) }
}

fn wait_ready(c: &Comm) {
    let end = Instant::now() + Duration::from_secs(10);
    while !c.test().expect("set-up failed") {
        assert!(Instant::now() < end, "not connected in 10 s");
        std::thread::yield_now();
    }
}

fn byte(thread: usize, msg: usize, i: usize) -> u8 {
    (i.wrapping_mul(31) ^ thread.wrapping_mul(7) ^ msg.wrapping_mul(13)) as u8
}

/// 4 sender threads and 4 receiver threads, each on its own communicator pair, 16 requests
/// in flight each, tested out of order; every byte and size checked, every reaped handle
/// stale afterwards, and the table empty at the end.
#[test]
fn hammer_post_test_complete() {
    nrt_init();
    let (a, b) = (900, 901);
    init_with(a, Some(cfg(26000))).unwrap();
    init_with(b, Some(cfg(26000))).unwrap();
    const THREADS: usize = 4;
    const MSGS: usize = 200;
    const WINDOW: usize = 16;
    let mut pairs = Vec::new();
    for _ in 0..THREADS {
        let s = connect("127.0.0.1", b, a).unwrap();
        let r = accept("127.0.0.1", a, b).unwrap();
        pairs.push((s, r));
    }
    for (s, r) in &pairs {
        wait_ready(s);
        wait_ready(r);
    }
    let all: Vec<Arc<Comm>> = pairs.iter().flat_map(|(s, r)| [s.clone(), r.clone()]).collect();
    let mut handles = Vec::new();
    for (t, (s, r)) in pairs.into_iter().enumerate() {
        for (kind, comm) in [(Kind::Send, s), (Kind::Recv, r)] {
            handles.push(std::thread::spawn(move || {
                let size_of = |m: usize| (m * 977 + t * 131) % 70_000;
                let tensors: Vec<Tensor> = (0..WINDOW).map(|_| Tensor::allocate(70_000, String::new()).unwrap()).collect();
                let mut inflight: Vec<Option<(u64, usize)>> = vec![None; WINDOW];
                let (mut posted, mut reaped) = (0, 0);
                let end = Instant::now() + Duration::from_secs(60);
                let mut turn = 0usize;
                while reaped < MSGS {
                    assert!(Instant::now() < end, "thread {t} {kind:?}: stuck at {reaped}/{MSGS}");
                    // Test slots in a scrambled order.
                    turn = turn.wrapping_mul(5).wrapping_add(3) % WINDOW;
                    let slot = turn;
                    match inflight[slot] {
                        Some((id, m)) => match test_request(id).expect("request failed") {
                            None => continue,
                            Some(n) => {
                                assert_eq!(n as usize, size_of(m), "size of message {m}");
                                if kind == Kind::Recv {
                                    let mut buf = vec![0u8; n as usize];
                                    crate::tensor::read_into(&tensors[slot], 0, &mut buf).unwrap();
                                    for (i, v) in buf.iter().enumerate() {
                                        assert_eq!(*v, byte(t, m, i), "thread {t} message {m} byte {i}");
                                    }
                                }
                                assert_eq!(test_request(id).unwrap_err().status, crate::status::NRT_STATUS::NRT_INVALID_HANDLE);
                                inflight[slot] = None;
                                reaped += 1;
                            }
                        },
                        None if posted < MSGS => {
                            // FIFO pairing: both sides post message m into the slot they
                            // choose; the bytes follow the message, not the slot.
                            let m = posted;
                            let len = size_of(m);
                            let region = if kind == Kind::Send {
                                let data: Vec<u8> = (0..len).map(|i| byte(t, m, i)).collect();
                                crate::tensor::write_from(&tensors[slot], 0, &data).unwrap();
                                tensors[slot].region(0, len).unwrap()
                            } else {
                                tensors[slot].region(0, 70_000).unwrap()
                            };
                            let id = comm.post(kind, region).expect("post");
                            inflight[slot] = Some((id, m));
                            posted += 1;
                        }
                        None => {}
                    }
                }
            }));
        }
    }
    for h in handles {
        h.join().unwrap();
    }
    // Every request was reaped by its test: none of these lncs' requests is left.
    assert!(all.iter().all(|c| c.reqs.count_where(|_| true) == 0), "requests left in the table");
    drop(all);
    close(a).unwrap();
    close(b).unwrap();
}

/// The first of complete/fail wins, whatever the interleaving; the loser changes nothing.
#[test]
fn complete_and_fail_race() {
    nrt_init();
    init_with(902, Some(cfg(26000))).unwrap();
    let comm = connect("127.0.0.1", 903, 902).unwrap();
    for round in 0..2000 {
        let req = Arc::new(crate::comm::request::Request::new(round, Kind::Send, comm.clone(), 0, round, None));
        let r2 = req.clone();
        let h = std::thread::spawn(move || r2.complete(7));
        let failed = req.fail(Error::failure("x"));
        let completed = h.join().unwrap();
        assert!(failed ^ completed, "round {round}: exactly one must win");
        match req.outcome() {
            crate::comm::request::Outcome::Done(7) => assert!(completed),
            crate::comm::request::Outcome::Failed(_) => assert!(failed),
            o => panic!("round {round}: {o:?}"),
        }
    }
    let _ = close(902);
}
