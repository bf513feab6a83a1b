//! The accepting side of the handshake on arbitrary bytes: each input is written to a live lnc's
//! listener (optionally behind a valid Hello, or a Hello and Challenge, so the fuzzer reaches
//! the later states: the connecting side's Challenge, its Proof, grouping). The
//! lnc must neither crash (any panic aborts the fuzzer) nor stop accepting: every 256 inputs a
//! real connect/accept pair must still connect.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nrt_sendrecv::fuzzing::{self as runtime, Config, FLAG_AUTH, Frame};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BASE: u16 = 27500;
static START: Once = Once::new();
static RUNS: AtomicU64 = AtomicU64::new(0);

fn cfg(secret: bool) -> Config {
    Config {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Some(Duration::from_secs(5)),
        streams: 2,
        auth_secret: secret.then(|| b"fuzz".to_vec()),
        ..Config::loopback(BASE)
    }
}

fn still_works() {
    let s = runtime::connect("127.0.0.1", 1, 0).expect("connect");
    let r = runtime::accept("127.0.0.1", 0, 1).expect("accept");
    let end = Instant::now() + Duration::from_secs(5);
    while !(s.test().unwrap_or(false) && r.test().unwrap_or(false)) {
        assert!(Instant::now() < end, "the lnc stopped pairing connections after hostile input");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fuzz_target!(|data: &[u8]| {
    START.call_once(|| {
        // SAFETY: set once, before any other thread of this process reads the environment.
        unsafe { std::env::set_var("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL", "off") };
        runtime::reload_log();
        runtime::nrt_init();
        runtime::init_with(0, Some(cfg(false))).unwrap();
        runtime::init_with(1, Some(cfg(false))).unwrap();
        runtime::init_with(2, Some(cfg(true))).unwrap();
    });
    let authed_hello =
        Frame::Hello { stream: 0, nstreams: 1, nonce: 9, conn_seq: 0, src_lnc: 0, dst_lnc: 2, flags: FLAG_AUTH, kernel: 0 }.encode();
    let (target, prefix) = match data.first().copied().unwrap_or(0) % 4 {
        0 => (1, Vec::new()),
        1 => (
            1,
            Frame::Hello { stream: 0, nstreams: 2, nonce: 7, conn_seq: 0, src_lnc: 0, dst_lnc: 1, flags: 0, kernel: 0 }.encode().to_vec(),
        ),
        2 => (2, authed_hello.to_vec()),
        _ => (2, [authed_hello, Frame::Challenge { nonce: [5; 16], instance: 9, lnc: 0 }.encode()].concat()),
    };
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", BASE + target)) {
        let _ = s.write_all(&prefix);
        let _ = s.write_all(data.get(1..).unwrap_or(&[]));
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
    if RUNS.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
        // Pair through lnc 0 -> 1 with fresh communicators: the limit of 128 per lnc would be
        // reached after many rounds, so start lncs 0 and 1 afresh first.
        let _ = runtime::close(0);
        let _ = runtime::close(1);
        runtime::nrt_close();
        runtime::nrt_init();
        runtime::init_with(0, Some(cfg(false))).unwrap();
        runtime::init_with(1, Some(cfg(false))).unwrap();
        runtime::init_with(2, Some(cfg(true))).unwrap();
        still_works();
    }
});
