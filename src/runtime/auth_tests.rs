//! Mutual authentication through the entry points the C functions use: both sides prove the
//! secret on every stream and transport; a listener that speaks the handshake but cannot prove
//! the secret (another secret, a proof replayed from an earlier connection, a reflected
//! challenge or proof, the connecting side's own listener reached through a relay) gets no byte
//! beyond the handshake and the connecting side's `test_comm` fails with NRT_FAILURE.
use super::*;
use crate::comm::request::Kind;
use crate::comm::test_request;
use crate::config::Transport;
use crate::engine::{Transcript, accepting_proof, connecting_proof};
use crate::status::NRT_STATUS;
use crate::tensor::Tensor;
use crate::wire::{Frame, HEADER_LEN, ack};
use parking_lot::Mutex;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BASE: u16 = 25000;
const SECRET: &[u8] = b"s3cret";

fn cfg(port_base: u16, secret: Option<&[u8]>, transport: Transport, streams: usize) -> Config {
    Config {
        transport,
        auth_secret: secret.map(<[u8]>::to_vec),
        connect_timeout: Duration::from_secs(4),
        request_timeout: Some(Duration::from_secs(20)),
        streams,
        ..Config::loopback(port_base)
    }
}

/// Polls set-up until it is done or fails (bounded).
pub(super) fn settle(c: &Comm) -> Result<bool> {
    let end = Instant::now() + Duration::from_secs(8);
    loop {
        match c.test() {
            Ok(false) if Instant::now() < end => std::thread::sleep(Duration::from_millis(2)),
            other => return other,
        }
    }
}

/// Set-up of `c` fails with NRT_FAILURE, for a reason that mentions `why`; nothing can be sent.
fn fails_with(c: &Arc<Comm>, why: &str) {
    let e = settle(c).expect_err("set-up must fail");
    assert_eq!(e.status, NRT_STATUS::NRT_FAILURE, "{e}");
    assert!(e.msg.contains(why), "expected {why:?} in: {e}");
    let t = Tensor::allocate(4096, String::new()).unwrap();
    let e = c.post(Kind::Send, t.region(0, 4096).unwrap()).expect_err("a send on a failed communicator");
    assert_eq!(e.status, NRT_STATUS::NRT_FAILURE, "{e}");
}

/// Polls request `id` until it completes (bounded: 20 s); its size.
pub(super) fn wait_request(id: u64) -> u64 {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = test_request(id).expect("request failed") {
            return n;
        }
        assert!(Instant::now() < end, "request not done in 20 s");
        std::thread::yield_now();
    }
}

/// Sends `len` patterned bytes from `s` to `r`; every byte checked.
fn xfer(s: &Arc<Comm>, r: &Arc<Comm>, len: usize, salt: u8) {
    let (src, dst) = (Tensor::allocate(len, String::new()).unwrap(), Tensor::allocate(len, String::new()).unwrap());
    let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ salt ^ (i >> 11) as u8).collect();
    crate::tensor::write_from(&src, 0, &data).unwrap();
    let rq = r.post(Kind::Recv, dst.region(0, len).unwrap()).unwrap();
    let sq = s.post(Kind::Send, src.region(0, len).unwrap()).unwrap();
    assert_eq!(wait_request(rq), len as u64);
    assert_eq!(wait_request(sq), len as u64);
    let mut got = vec![0u8; len];
    crate::tensor::read_into(&dst, 0, &mut got).unwrap();
    assert!(got == data, "{len} bytes: corrupted");
}

fn read_frame(s: &mut TcpStream) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    s.read_exact(&mut b).expect("a handshake frame");
    b
}

/// Counts what the peer sends until it closes (at most 10 s).
fn bytes_until_closed(s: &mut TcpStream) -> usize {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let (mut n, mut buf) = (0, [0u8; 4096]);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return n,
        }
    }
    panic!("the connecting side kept the connection open for 10 s after the handshake failed");
}

/// A listener on `addr` that plays the accepting side of one connection with `script`, then
/// returns the number of bytes the connecting side sent after it (until it closed).
fn fake_peer(addr: SocketAddr, script: impl FnOnce(&mut TcpStream) + Send + 'static) -> JoinHandle<usize> {
    let l = TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        let mut s = accept_within(&l);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        script(&mut s);
        bytes_until_closed(&mut s)
    })
}

/// The connecting side's Hello and Challenge, as the accepting side reads them.
fn hello_and_challenge(s: &mut TcpStream) -> (Frame, [u8; HEADER_LEN], [u8; HEADER_LEN]) {
    let hello = read_frame(s);
    let challenge = read_frame(s);
    assert!(matches!(Frame::decode(&challenge), Ok(Frame::Challenge { .. })), "a Challenge follows the Hello");
    (Frame::decode(&hello).unwrap(), hello, challenge)
}

fn ok_ack(hello: &Frame) -> [u8; HEADER_LEN] {
    let Frame::Hello { nonce, conn_seq, .. } = *hello else { panic!("not a Hello: {hello:?}") };
    Frame::HelloAck { status: ack::OK, nonce, conn_seq, flags: 0, kernel: 0 }.encode()
}

/// With the same secret on both ends, connections pair over TCP (4 streams, each proved) and
/// over shared memory, and bytes move.
#[test]
fn both_sides_prove_the_secret_on_every_stream_and_bytes_move() {
    nrt_init();
    for (i, (transport, streams)) in [(Transport::Tcp, 4), (Transport::Shm, 2)].into_iter().enumerate() {
        let (a, b) = (970 + 2 * i as i32, 971 + 2 * i as i32);
        init_with(a, Some(cfg(BASE, Some(SECRET), transport, streams))).unwrap();
        init_with(b, Some(cfg(BASE, Some(SECRET), transport, streams))).unwrap();
        let s = connect("127.0.0.1", b, a).unwrap();
        let r = accept("127.0.0.1", a, b).unwrap();
        assert_eq!(settle(&s), Ok(true), "{transport:?}");
        assert_eq!(settle(&r), Ok(true), "{transport:?}");
        xfer(&s, &r, 3 << 20, i as u8);
        close(a).unwrap();
        close(b).unwrap();
    }
}

/// A listener that speaks the handshake with another secret: its proof does not check.
#[test]
fn a_listener_with_another_secret_gets_nothing() {
    nrt_init();
    let (me, peer) = (974, 975);
    init_with(me, Some(cfg(BASE, Some(SECRET), Transport::Tcp, 1))).unwrap();
    let fake = fake_peer(SocketAddr::from(([127, 0, 0, 1], BASE + peer as u16)), move |s| {
        let (hello, hello_bytes, conn_challenge) = hello_and_challenge(s);
        let acc_challenge = Frame::Challenge { nonce: [7; 16], instance: 99, lnc: peer as u32 }.encode();
        s.write_all(&acc_challenge).unwrap();
        let proof = read_frame(s);
        let t = Transcript { hello: hello_bytes, conn_challenge, acc_challenge };
        // The connecting side's proof is over the frames as sent.
        let Ok(Frame::Proof { mac }) = Frame::decode(&proof) else { panic!("no proof") };
        assert_eq!(mac, connecting_proof(SECRET, &t));
        let ack = ok_ack(&hello);
        s.write_all(&ack).unwrap();
        s.write_all(&Frame::Proof { mac: accepting_proof(b"not the secret", &t, &ack) }.encode()).unwrap();
    });
    let c = connect("127.0.0.1", peer, me).unwrap();
    fails_with(&c, "did not prove the shared secret");
    assert_eq!(fake.join().unwrap(), 0, "bytes went to a listener that did not prove the secret");
    let _ = close(me);
}

/// The kernel tags travel inside what the proofs cover: a HelloAck whose tag was changed on the
/// path (to claim this kernel, or another) no longer matches the accepting side's proof.
#[test]
fn a_kernel_tag_changed_on_the_path_breaks_the_proof() {
    nrt_init();
    let (me, peer) = (988, 1010);
    init_with(me, Some(cfg(BASE, Some(SECRET), Transport::Tcp, 1))).unwrap();
    let fake = fake_peer(SocketAddr::from(([127, 0, 0, 1], BASE + peer as u16)), move |s| {
        let (hello, hello_bytes, conn_challenge) = hello_and_challenge(s);
        let acc_challenge = Frame::Challenge { nonce: [8; 16], instance: 98, lnc: peer as u32 }.encode();
        s.write_all(&acc_challenge).unwrap();
        let _proof = read_frame(s);
        let t = Transcript { hello: hello_bytes, conn_challenge, acc_challenge };
        let Frame::Hello { nonce, conn_seq, kernel, .. } = hello else { unreachable!() };
        assert_ne!(kernel, 0, "the Hello names the kernel");
        let proved = Frame::HelloAck { status: ack::OK, nonce, conn_seq, flags: 0, kernel: 0x1111 }.encode();
        let sent = Frame::HelloAck { status: ack::OK, nonce, conn_seq, flags: 0, kernel }.encode();
        s.write_all(&sent).unwrap();
        s.write_all(&Frame::Proof { mac: accepting_proof(SECRET, &t, &proved) }.encode()).unwrap();
    });
    let c = connect("127.0.0.1", peer, me).unwrap();
    fails_with(&c, "did not prove the shared secret");
    assert_eq!(fake.join().unwrap(), 0, "bytes went to a listener whose HelloAck was altered");
    let _ = close(me);
}

/// Accepts one connection on `l` within 10 s.
/// The first connection to `l` (blocking again), within 10 s (the handshake tests' listeners).
pub(super) fn accept_within(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => panic!("no connection in 10 s: {e}"),
        }
    }
}

type Record = Arc<Mutex<Vec<u8>>>;

/// Relays the connection `down` to `to` (dialled from `source`), both ways, until either end
/// closes (or 30 s pass without a byte); records what goes up and what comes back.
fn relay(down: TcpStream, to: SocketAddr, source: Option<SocketAddr>, went_up: Record, came_back: Record) -> JoinHandle<()> {
    let up: TcpStream = match source {
        None => TcpStream::connect(to).unwrap(),
        Some(src) => {
            let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&src.into()).unwrap();
            sock.connect(&to.into()).unwrap();
            sock.into()
        }
    };
    let pump = |mut a: TcpStream, mut b: TcpStream, rec: Record| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            while let Ok(n) = a.read(&mut buf) {
                if n == 0 {
                    break;
                }
                rec.lock().extend_from_slice(&buf[..n]);
                if b.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = b.shutdown(std::net::Shutdown::Both);
            let _ = a.shutdown(std::net::Shutdown::Both);
        })
    };
    let t1 = pump(down.try_clone().unwrap(), up.try_clone().unwrap(), went_up);
    let t2 = pump(up, down, came_back);
    std::thread::spawn(move || {
        let _ = t1.join();
        let _ = t2.join();
    })
}

/// A listener that holds the secret answers a first connection, which pairs; a listener that
/// replays those answers (the HelloAck adjusted to the new connection) to a second one fails:
/// the proof covers the second connection's fresh challenges.
#[test]
fn a_proof_replayed_from_an_earlier_connection_does_not_check() {
    nrt_init();
    let (me, peer) = (976, 977);
    init_with(me, Some(cfg(BASE, Some(SECRET), Transport::Tcp, 1))).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], BASE + peer as u16));
    let l = TcpListener::bind(addr).unwrap();
    let genuine = std::thread::spawn(move || {
        let mut s = accept_within(&l);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let (hello, hello_bytes, conn_challenge) = hello_and_challenge(&mut s);
        let acc_challenge = Frame::Challenge { nonce: crate::sys::random::random_128().unwrap(), instance: 5, lnc: peer as u32 }.encode();
        s.write_all(&acc_challenge).unwrap();
        let t = Transcript { hello: hello_bytes, conn_challenge, acc_challenge };
        assert_eq!(read_frame(&mut s), Frame::Proof { mac: connecting_proof(SECRET, &t) }.encode());
        let ack = ok_ack(&hello);
        let proof = Frame::Proof { mac: accepting_proof(SECRET, &t, &ack) }.encode();
        s.write_all(&ack).unwrap();
        s.write_all(&proof).unwrap();
        (acc_challenge, proof, s)
    });
    let first = connect("127.0.0.1", peer, me).unwrap();
    assert_eq!(settle(&first), Ok(true), "a listener that proves the secret pairs");
    let (acc_challenge, proof, first_stream) = genuine.join().unwrap();

    let fake = fake_peer(addr, move |s| {
        let (hello, _, _) = hello_and_challenge(s);
        s.write_all(&acc_challenge).unwrap();
        read_frame(s); // the connecting side's proof
        s.write_all(&ok_ack(&hello)).unwrap();
        s.write_all(&proof).unwrap();
    });
    let c = connect("127.0.0.1", peer, me).unwrap();
    fails_with(&c, "did not prove the shared secret");
    assert_eq!(fake.join().unwrap(), 0, "bytes went to a listener that replayed an old proof");
    drop(first_stream);
    let _ = close(me);
}

/// A listener that sends the connecting side's own challenge back, or answers its proof with
/// that same proof: refused, nothing sent.
#[test]
fn a_reflected_challenge_or_proof_is_refused() {
    nrt_init();
    let (me, peer) = (978, 979);
    init_with(me, Some(cfg(BASE, Some(SECRET), Transport::Tcp, 1))).unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], BASE + peer as u16));
    // The challenge, echoed.
    let fake = fake_peer(addr, |s| {
        let (_, _, conn_challenge) = hello_and_challenge(s);
        s.write_all(&conn_challenge).unwrap();
    });
    let c = connect("127.0.0.1", peer, me).unwrap();
    fails_with(&c, "sent back a challenge of this process's own");
    assert_eq!(fake.join().unwrap(), 0, "the connecting side answered its own challenge");
    // The connecting side's proof, echoed as the accepting side's.
    let fake = fake_peer(addr, move |s| {
        let (hello, _, _) = hello_and_challenge(s);
        s.write_all(&Frame::Challenge { nonce: [3; 16], instance: 1, lnc: peer as u32 }.encode()).unwrap();
        let proof = read_frame(s);
        s.write_all(&ok_ack(&hello)).unwrap();
        s.write_all(&proof).unwrap();
    });
    let c = connect("127.0.0.1", peer, me).unwrap();
    fails_with(&c, "did not prove the shared secret");
    assert_eq!(fake.join().unwrap(), 0, "bytes went to a listener that reflected the proof");
    let _ = close(me);
}

/// The reflection where one process plays both parts: lnc 980 sends to lnc 980 at 127.0.0.2
/// (a peer with its own number) and accepts from it; a party holding 127.0.0.2 relays the
/// connection back to lnc 980's own listener, which would prove the secret for it. Its
/// accepting side sees its own connecting side's challenge arrive from another address and
/// drops the connection; the sender fails and nothing but its Hello and Challenge went out.
#[test]
fn a_connection_relayed_back_to_its_own_listener_is_refused() {
    nrt_init();
    let me = 980;
    init_with(me, Some(cfg(BASE, Some(SECRET), Transport::Tcp, 1))).unwrap();
    let cap = crate::log::capture::start(&format!("lnc {me}:"));
    let l = TcpListener::bind(("127.0.0.2", BASE + me as u16)).unwrap();
    let (went_up, came_back): (Record, Record) = (Arc::default(), Arc::default());
    let s = connect("127.0.0.2", me, me).unwrap();
    let r = accept("127.0.0.2", me, me).unwrap();
    let down = accept_within(&l);
    let relayed = relay(
        down,
        SocketAddr::from(([127, 0, 0, 1], BASE + me as u16)),
        Some(SocketAddr::from(([127, 0, 0, 2], 0))),
        went_up.clone(),
        came_back.clone(),
    );
    let e = settle(&s).expect_err("the relayed connection must fail");
    assert_eq!(e.status, NRT_STATUS::NRT_FAILURE, "{e}");
    assert_ne!(settle(&r), Ok(true), "the accept paired with the relayed connection");
    relayed.join().unwrap();
    assert_eq!(went_up.lock().len(), 2 * HEADER_LEN, "the sender sent more than its Hello and Challenge");
    assert!(came_back.lock().is_empty(), "the lnc's accepting side answered the relayed connection");
    assert!(cap.lines().iter().any(|l| l.contains("relayed back to us")), "{:?}", cap.lines());
    let _ = close(me);
}
