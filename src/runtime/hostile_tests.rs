//! Garbage on an lnc's port is dropped and logged; the lnc keeps working.
use super::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn cfg() -> Config {
    Config::loopback(26100)
}

/// Reads until the peer closes (Ok) or 5 s pass (Err).
fn closed_by_peer(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn garbage_wrong_magic_version_lnc_are_dropped() {
    nrt_init();
    let (a, b) = (910, 911);
    init_with(a, Some(cfg())).unwrap();
    init_with(b, Some(cfg())).unwrap();
    let port = 26100 + b as u16;
    let hello = |ver: u8, dst: u32| {
        let mut h =
            crate::wire::Frame::Hello { stream: 0, nstreams: 1, nonce: 1, conn_seq: 0, src_lnc: 5, dst_lnc: dst, flags: 0, kernel: 0 }
                .encode();
        h[4] = ver;
        h
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("wrong version", hello(99, b as u32).to_vec()),
        ("wrong lnc", hello(crate::wire::VERSION, 7).to_vec()),
        ("lengths near 2^64", {
            let mut h = crate::wire::Frame::Data { seq: 0, offset: 0, len: 1, total: 1, src_page: None }.encode();
            h[24..40].copy_from_slice(&[0xff; 16]);
            h.to_vec()
        }),
        ("data instead of hello", crate::wire::Frame::Data { seq: 0, offset: 0, len: 0, total: 0, src_page: None }.encode().to_vec()),
    ];
    for (what, bytes) in cases {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&bytes).unwrap();
        assert!(closed_by_peer(s), "{what}: the lnc kept the connection open");
    }
    // Truncated Hello, then the client goes away: nothing breaks.
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(&hello(crate::wire::VERSION, b as u32)[..17]).unwrap();
    }
    // A flood of idle connections is bounded and does not stop real ones.
    let idle: Vec<TcpStream> = (0..200).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    let s = connect("127.0.0.1", b, a).unwrap();
    let r = accept("127.0.0.1", a, b).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !(s.test().unwrap() && r.test().unwrap()) {
        assert!(Instant::now() < end, "real connection not made next to the garbage");
        std::thread::yield_now();
    }
    drop(idle);
    close(a).unwrap();
    close(b).unwrap();
}

/// A connection from an address other than accept's peer_ip never pairs: both sides reach
/// their deadline, and a later accept with the right address still pairs with a new connect.
#[test]
fn peer_address_must_match_accept() {
    nrt_init();
    let (a, b) = (912, 913);
    let mut c = cfg();
    c.connect_timeout = Duration::from_millis(600);
    init_with(a, Some(c.clone())).unwrap();
    init_with(b, Some(c)).unwrap();
    let s = connect("127.0.0.1", b, a).unwrap();
    let r = accept("127.0.0.2", a, b).unwrap(); // the connection comes from 127.0.0.1
    let end = Instant::now() + Duration::from_secs(5);
    let (mut rs, mut rr) = (Ok(false), Ok(false));
    while Instant::now() < end {
        rs = s.test();
        rr = r.test();
        if rs.is_err() && rr.is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let e = rs.unwrap_err();
    assert_eq!(e.status, crate::status::NRT_STATUS::NRT_TIMEOUT, "{e}");
    assert_eq!(rr.unwrap_err().status, crate::status::NRT_STATUS::NRT_TIMEOUT);
    assert!(close(a).is_err() && close(b).is_err(), "unconnected comms make close fail");
}

/// Shared-secret authentication: same secret connects; a missing or different secret on either
/// side is refused, with a status from test_comm and nothing paired (runtime/auth_tests.rs: the
/// accepting side's proof).
#[test]
fn hmac_challenge_in_the_handshake() {
    nrt_init();
    let with = |secret: Option<&str>| {
        let mut c = cfg();
        c.port_base = 26200;
        c.connect_timeout = Duration::from_secs(5);
        c.auth_secret = secret.map(|s| s.as_bytes().to_vec());
        c
    };
    let wait = |c: &Comm| -> crate::status::Result<bool> {
        let end = Instant::now() + Duration::from_secs(8);
        loop {
            match c.test() {
                Ok(true) => return Ok(true),
                Ok(false) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                other => return other,
            }
        }
    };
    let cases: [(Option<&str>, Option<&str>, bool, &str); 4] = [
        (Some("s3cret"), Some("s3cret"), true, ""),
        (None, Some("s3cret"), false, "requires authentication"),
        (Some("other"), Some("s3cret"), false, "rejected this side's proof"),
        (Some("s3cret"), None, false, "has no NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET"),
    ];
    for (i, (conn_secret, acc_secret, ok, why)) in cases.into_iter().enumerate() {
        let (a, b) = (920 + 2 * i as i32, 921 + 2 * i as i32);
        init_with(a, Some(with(conn_secret))).unwrap();
        init_with(b, Some(with(acc_secret))).unwrap();
        let s = connect("127.0.0.1", b, a).unwrap();
        let r = accept("127.0.0.1", a, b).unwrap();
        let rs = wait(&s);
        if ok {
            assert_eq!(rs, Ok(true), "case {i}");
            assert_eq!(wait(&r), Ok(true), "case {i}");
            assert!(close(a).is_ok() && close(b).is_ok());
        } else {
            let e = rs.expect_err("connect must fail");
            assert_eq!(e.status, crate::status::NRT_STATUS::NRT_FAILURE, "case {i}: {e}");
            assert!(e.msg.contains(why), "case {i}: {e}");
            assert!(!r.test().unwrap_or(false), "case {i}: the accept must not pair");
            let _ = close(a);
            let _ = close(b);
        }
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 4
}

/// A flood of idle connections (more than the half-open limit): the excess is closed at
/// once, memory stays bounded, and a real connection still pairs.
#[test]
fn connection_flood_is_bounded() {
    let _alone = crate::MEMORY_HEAVY_TESTS.lock();
    nrt_init();
    let (a, b) = (930, 931);
    let mut c = cfg();
    c.port_base = 26300;
    init_with(a, Some(c.clone())).unwrap();
    init_with(b, Some(c)).unwrap();
    let lnc_b = lookup(b).unwrap();
    let rss0 = rss_kib();
    let n = crate::engine::MAX_HALF_OPEN + 476;
    let flood: Vec<TcpStream> = (0..n).filter_map(|_| TcpStream::connect(("127.0.0.1", 26300 + b as u16)).ok()).collect();
    assert!(flood.len() > crate::engine::MAX_HALF_OPEN, "only {} connections made", flood.len());
    let end = Instant::now() + Duration::from_secs(10);
    let mut most = 0;
    while Instant::now() < end {
        most = most.max(lnc_b.half_open());
        if most >= crate::engine::MAX_HALF_OPEN {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(lnc_b.half_open() <= crate::engine::MAX_HALF_OPEN, "half-open connections beyond the limit");
    let grown = rss_kib().saturating_sub(rss0);
    assert!(grown < 32 * 1024, "RSS grew by {grown} KiB under a flood of {} connections", flood.len());
    drop(flood);
    let s = connect("127.0.0.1", b, a).unwrap();
    let r = accept("127.0.0.1", a, b).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !(s.test().unwrap() && r.test().unwrap()) {
        assert!(Instant::now() < end, "real connection not made after the flood");
        std::thread::sleep(Duration::from_millis(5));
    }
    close(a).unwrap();
    close(b).unwrap();
}

/// A flood of junk connections from 16 threads during a transfer: the listener writes at most
/// `LIMIT_BURST` lines per interval about them and one line with the count of the others (at
/// the latest when the lnc closes); every rejection is in the lines or in that count, and the
/// transfer goes on, every byte checked.
#[test]
fn a_flood_of_junk_connections_writes_a_few_lines() {
    use crate::comm::request::Kind;
    use crate::log::{LIMIT_BURST, LIMIT_INTERVAL};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    nrt_init();
    let (a, b) = (932, 933);
    let cap = crate::log::capture::start(&format!("lnc {b}:"));
    let mut c = cfg();
    c.port_base = 26300;
    c.streams = 2;
    init_with(a, Some(c.clone())).unwrap();
    init_with(b, Some(c)).unwrap();
    let s = connect("127.0.0.1", b, a).unwrap();
    let r = accept("127.0.0.1", a, b).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !(s.test().unwrap() && r.test().unwrap()) {
        assert!(Instant::now() < end, "not connected");
        std::thread::sleep(Duration::from_millis(2));
    }
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let junk = Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..16)
        .map(|_| {
            let (stop, junk) = (stop.clone(), junk.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", 26300 + b as u16)) else { continue };
                    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() && closed_by_peer(s) {
                        junk.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // The transfer goes on meanwhile.
    let (src, dst) = (
        crate::tensor::Tensor::allocate(1 << 18, String::new()).unwrap(),
        crate::tensor::Tensor::allocate(1 << 18, String::new()).unwrap(),
    );
    let mut messages = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let data: Vec<u8> = (0..1usize << 18).map(|i| (i ^ messages) as u8).collect();
        crate::tensor::write_from(&src, 0, &data).unwrap();
        let rq = r.post(Kind::Recv, dst.region(0, 1 << 18).unwrap()).unwrap();
        let sq = s.post(Kind::Send, src.region(0, 1 << 18).unwrap()).unwrap();
        let end = Instant::now() + Duration::from_secs(20);
        let (mut rdone, mut sdone) = (None, None);
        while rdone.is_none() || sdone.is_none() {
            assert!(Instant::now() < end, "message {messages} stuck under the flood");
            if rdone.is_none() {
                rdone = crate::comm::test_request(rq).unwrap();
            }
            if sdone.is_none() {
                sdone = crate::comm::test_request(sq).unwrap();
            }
        }
        let mut got = vec![0u8; 1 << 18];
        crate::tensor::read_into(&dst, 0, &mut got).unwrap();
        assert!(got == data, "message {messages} corrupted");
        messages += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    close(a).unwrap();
    close(b).unwrap();
    let junk = junk.load(Ordering::Relaxed);
    let lines: Vec<String> = cap.lines().into_iter().filter(|l| l.starts_with("Warn ")).collect();
    let shown = lines.iter().filter(|l| l.contains("dropped: bad magic")).count();
    let left_out: u64 = lines
        .iter()
        .filter_map(|l| l.split(" more warning(s)").next().filter(|_| l.contains(" more warning(s)")))
        .filter_map(|head| head.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(junk >= 100 && messages >= 1, "the flood made {junk} connections, the transfer {messages} messages");
    let intervals = (elapsed.as_secs_f64() / LIMIT_INTERVAL.as_secs_f64()).ceil() as usize + 1;
    assert!(lines.len() <= intervals * (LIMIT_BURST as usize + 1), "{} lines for {junk} junk connections: {lines:#?}", lines.len());
    assert_eq!(shown + left_out as usize, junk, "each rejection is written or counted: {lines:#?}");
    assert!(left_out > 0 && lines.last().unwrap().contains(" more warning(s)"), "{lines:#?}");
}
