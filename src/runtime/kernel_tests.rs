//! "This host" by kernel tags (engine/kernel.rs), through the entry points the C functions use,
//! with a peer played by the test: a peer naming another kernel from a loopback address gets TCP
//! and the system's congestion control, logged once per peer; one that claims this kernel and
//! then names a channel that is not its own falls back to TCP with every byte intact; a
//! connecting side refuses shared memory chosen by a peer of another kernel; an lnc without tags
//! decides by the address as before; a peer of protocol version 3 is refused with a reason.
//! (Two network namespaces of one kernel, where the tags and the address disagree the other way,
//! need processes in namespaces: scripts/faults.sh.)
use super::auth_tests::{accept_within, settle, wait_request};
use super::*;
use crate::comm::request::Kind;
use crate::config::Transport;
use crate::engine::kernel_tag;
use crate::status::NRT_STATUS;
use crate::tensor::Tensor;
use crate::transport::Transport as _;
use crate::wire::{FLAG_SHM, Frame, HEADER_LEN, ack};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

const BASE: u16 = 25000;
/// A kernel tag that is not this kernel's (tags are hashes; this one is not ours but by a 2^-64
/// chance, which the tests check).
const FOREIGN: u64 = 0x5eed_0f0e_4e40_0001;

fn cfg(transport: Transport, boot_id: bool) -> Config {
    Config {
        transport,
        boot_id,
        connect_timeout: Duration::from_secs(4),
        request_timeout: Some(Duration::from_secs(20)),
        ..Config::loopback(BASE)
    }
}

fn system_cc() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").unwrap().trim().to_string()
}

fn read_frame(s: &mut TcpStream) -> Frame {
    let mut b = [0u8; HEADER_LEN];
    s.read_exact(&mut b).expect("a frame");
    Frame::decode(&b).expect("a frame we understand")
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(29) ^ salt ^ (i >> 10) as u8).collect()
}

/// A connecting peer played on a raw socket: its Hello (one stream) to lnc `to`'s port, as lnc
/// `from`, connection `seq`; returns the socket and the HelloAck.
fn hello(to: i32, from: i32, seq: u64, flags: u32, kernel: u64, nonce: u64) -> (TcpStream, Frame) {
    let mut s = TcpStream::connect(("127.0.0.1", BASE + to as u16)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let h = Frame::Hello { stream: 0, nstreams: 1, nonce, conn_seq: seq, src_lnc: from as u32, dst_lnc: to as u32, flags, kernel };
    s.write_all(&h.encode()).unwrap();
    let ack = read_frame(&mut s);
    (s, ack)
}

/// The played peer sends one message over TCP into a receive posted on `r`; every byte checked,
/// and the receiver's Ack read.
fn tcp_message_from_peer(s: &mut TcpStream, r: &Arc<Comm>, seq: u64, len: usize, salt: u8) {
    let data = pattern(len, salt);
    let dst = Tensor::allocate(len, String::new()).unwrap();
    let rq = r.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
    s.write_all(&Frame::Data { seq, offset: 0, len: len as u64, total: len as u64, src_page: None }.encode()).unwrap();
    s.write_all(&data).unwrap();
    assert_eq!(wait_request(rq), len as u64);
    let mut got = vec![0u8; len];
    crate::tensor::read_into(&dst, 0, &mut got).unwrap();
    assert!(got == data, "{len} bytes: corrupted");
    assert_eq!(read_frame(s), Frame::Ack { seq, status: ack::OK, size: len as u64 });
}

#[test]
fn a_peer_of_another_kernel_gets_tcp_and_the_system_congestion_control_though_its_address_is_this_hosts() {
    nrt_init();
    let (me, peer) = (990, 991);
    init_with(me, Some(cfg(Transport::Auto, true))).unwrap();
    let cap = crate::log::capture::start(&format!("lnc {me}: 127.0.0.1 runs on"));
    let nonce = 0x1234_5678;
    let mine = kernel_tag(&cfg(Transport::Auto, true), nonce);
    assert_ne!(mine, FOREIGN);
    for seq in 0..2u64 {
        let r = accept("127.0.0.1", peer, me).unwrap();
        // It offers shared memory, from a loopback address, naming another kernel.
        let (mut s, ack) = hello(me, peer, seq, FLAG_SHM, FOREIGN, nonce);
        assert_eq!(ack, Frame::HelloAck { status: ack::OK, nonce, conn_seq: seq, flags: 0, kernel: mine }, "TCP, and this kernel's tag");
        assert_eq!(settle(&r), Ok(true));
        let algos = r.io.lock().transport().congestion();
        assert_eq!(algos, vec![system_cc()], "the stream of a peer on another kernel runs the system's congestion control");
        tcp_message_from_peer(&mut s, &r, 0, 300_000, seq as u8);
    }
    let lines = cap.lines();
    assert_eq!(lines.len(), 1, "one line per peer: {lines:?}");
    assert!(lines[0].contains("another kernel") && lines[0].contains("transport tcp"), "{lines:?}");
    close(me).unwrap();
}

#[test]
fn a_peer_that_claims_this_kernel_but_names_a_channel_not_its_own_falls_back_to_tcp() {
    // Without a secret a peer may claim this kernel: it is offered shared memory, and its
    // channel must be one this process can open and that holds the token it sent.
    nrt_init();
    let (me, peer) = (992, 993);
    init_with(me, Some(cfg(Transport::Auto, true))).unwrap();
    let nonce = 77;
    let mine = kernel_tag(&cfg(Transport::Auto, true), nonce);
    let r = accept("127.0.0.1", peer, me).unwrap();
    let (mut s, ack) = hello(me, peer, 0, FLAG_SHM, mine, nonce);
    assert_eq!(ack, Frame::HelloAck { status: ack::OK, nonce, conn_seq: 0, flags: FLAG_SHM, kernel: mine }, "shared memory");
    assert_eq!(settle(&r), Ok(true));
    // pid 1's descriptor 0: not a channel with this token.
    s.write_all(&Frame::ShmInfo { pid: 1, fd: 0, token: 0x7777, addr: 0x1000, size: 4096 }.encode()).unwrap();
    // The receive goes out before the verdict is read: posted while set-up runs, it is replayed
    // over TCP.
    let dst = Tensor::allocate(64, String::new()).unwrap();
    let rq = r.post(Kind::Recv, dst.region(0, 64).unwrap()).unwrap();
    assert_eq!(read_frame(&mut s), Frame::ShmReady { status: ack::REFUSED });
    let data = pattern(64, 3);
    s.write_all(&Frame::Data { seq: 0, offset: 0, len: 64, total: 64, src_page: None }.encode()).unwrap();
    s.write_all(&data).unwrap();
    assert_eq!(wait_request(rq), 64);
    let mut got = vec![0u8; 64];
    crate::tensor::read_into(&dst, 0, &mut got).unwrap();
    assert!(got == data, "corrupted");
    assert_eq!(read_frame(&mut s), Frame::Ack { seq: 0, status: ack::OK, size: 64 });
    assert!(!r.io.lock().is_shm(), "fell back to TCP");
    tcp_message_from_peer(&mut s, &r, 1, 1 << 20, 9);
    close(me).unwrap();
}

/// An accepting peer played on a listener at lnc `peer`'s port: reads the Hello of a connect
/// from lnc `me` and answers `flags` and `kernel`; returns the Hello and the socket.
fn answered(me: i32, peer: i32, flags: u32, kernel: impl Fn(u64) -> u64) -> (Arc<Comm>, Frame, TcpStream) {
    let l = TcpListener::bind(("127.0.0.1", BASE + peer as u16)).unwrap();
    let c = connect("127.0.0.1", peer, me).unwrap();
    let mut s = accept_within(&l);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let h = read_frame(&mut s);
    let Frame::Hello { nonce, conn_seq, .. } = h else { panic!("not a Hello: {h:?}") };
    s.write_all(&Frame::HelloAck { status: ack::OK, nonce, conn_seq, flags, kernel: kernel(nonce) }.encode()).unwrap();
    (c, h, s)
}

#[test]
fn the_connecting_side_names_its_kernel_and_refuses_shared_memory_from_another() {
    nrt_init();
    let (me, peer) = (994, 995);
    init_with(me, Some(cfg(Transport::Auto, true))).unwrap();
    let cap = crate::log::capture::start(&format!("lnc {me}: 127.0.0.1 runs on"));
    // Shared memory chosen by a peer that names another kernel: refused.
    let (c, h, _s) = answered(me, peer, FLAG_SHM, |_| FOREIGN);
    let Frame::Hello { nonce, flags, kernel, .. } = h else { unreachable!() };
    assert_eq!(flags, FLAG_SHM, "a loopback peer is offered shared memory alone");
    assert_eq!(kernel, kernel_tag(&cfg(Transport::Auto, true), nonce), "the Hello names this kernel");
    let e = settle(&c).expect_err("shared memory from another kernel");
    assert_eq!(e.status, NRT_STATUS::NRT_FAILURE);
    assert!(e.msg.contains("chose shared memory, but it is not on this host (it runs on another kernel"), "{e}");
    // TCP: the stream gets the system's congestion control, and bytes move.
    let (c, _, mut s) = answered(me, peer, 0, |_| FOREIGN);
    assert_eq!(settle(&c), Ok(true));
    assert_eq!(c.io.lock().transport().congestion(), vec![system_cc()]);
    let data = pattern(200_000, 5);
    let src = Tensor::allocate(data.len(), String::new()).unwrap();
    crate::tensor::write_from(&src, 0, &data).unwrap();
    let sq = c.post(Kind::Send, src.region(0, data.len()).unwrap()).unwrap();
    let Frame::Data { seq: 0, offset: 0, len, total, src_page: None } = read_frame(&mut s) else {
        panic!("a Data frame without a source page offset (the peer is on another kernel)")
    };
    assert_eq!((len, total), (data.len() as u64, data.len() as u64));
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).unwrap();
    assert!(got == data, "corrupted");
    s.write_all(&Frame::Ack { seq: 0, status: ack::OK, size: len }.encode()).unwrap();
    assert_eq!(wait_request(sq), len);
    let lines = cap.lines();
    assert!(lines.len() == 1 && lines[0].contains("runs on another kernel"), "{lines:?}");
    // A peer without a tag: its loopback address decides (this host: reno).
    let (c, _, _s) = answered(me, peer, 0, |_| 0);
    assert_eq!(settle(&c), Ok(true));
    assert_eq!(c.io.lock().transport().congestion(), vec!["reno".to_string()]);
    let _ = close(me);
}

#[test]
fn without_kernel_tags_the_address_decides_and_this_host_still_gets_shared_memory() {
    nrt_init();
    let (a, b) = (996, 997);
    init_with(a, Some(cfg(Transport::Auto, false))).unwrap();
    init_with(b, Some(cfg(Transport::Auto, true))).unwrap();
    // a's Hello names no kernel.
    let (c, h, _s) = answered(a, 998, FLAG_SHM, |n| kernel_tag(&cfg(Transport::Auto, true), n));
    assert!(matches!(h, Frame::Hello { kernel: 0, flags: FLAG_SHM, .. }), "{h:?}");
    assert_eq!(settle(&c), Ok(true));
    drop(c);
    // A real pair, one side without tags: shared memory by the loopback address.
    let s = connect("127.0.0.1", b, a).unwrap();
    let r = accept("127.0.0.1", a, b).unwrap();
    assert_eq!(settle(&s), Ok(true));
    assert_eq!(settle(&r), Ok(true));
    assert!(s.io.lock().is_shm() && r.io.lock().is_shm());
    close(a).unwrap();
    close(b).unwrap();
}

#[test]
fn a_peer_of_protocol_version_3_is_refused_with_a_reason() {
    nrt_init();
    let (me, peer) = (999, 989);
    init_with(me, Some(cfg(Transport::Tcp, true))).unwrap();
    // Its Hello (version 3): answered with BAD_VERSION, which it can tell from the version byte.
    let mut s = TcpStream::connect(("127.0.0.1", BASE + me as u16)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut old =
        Frame::Hello { stream: 0, nstreams: 1, nonce: 5, conn_seq: 0, src_lnc: peer as u32, dst_lnc: me as u32, flags: 0, kernel: 0 }
            .encode();
    old[4] = 3;
    s.write_all(&old).unwrap();
    let mut b = [0u8; HEADER_LEN];
    s.read_exact(&mut b).unwrap();
    assert_eq!(Frame::decode(&b), Ok(Frame::HelloAck { status: ack::BAD_VERSION, nonce: 0, conn_seq: 0, flags: 0, kernel: 0 }));
    // Its answer to this side's Hello (version 3): set-up fails, naming both versions.
    let l = TcpListener::bind(("127.0.0.1", BASE + peer as u16)).unwrap();
    let c = connect("127.0.0.1", peer, me).unwrap();
    let mut t = accept_within(&l);
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let Frame::Hello { nonce, conn_seq, .. } = read_frame(&mut t) else { panic!("not a Hello") };
    let mut ack = Frame::HelloAck { status: ack::OK, nonce, conn_seq, flags: 0, kernel: 0 }.encode();
    ack[4] = 3;
    t.write_all(&ack).unwrap();
    let e = settle(&c).expect_err("a version 3 answer");
    assert!(e.msg.contains("speaks protocol version 3, this side 4"), "{e}");
    let _ = close(me);
}
