//! The connecting side of the handshake on arbitrary answers: each input is what a listener
//! answers a real `connect` with, after reading its Hello (and, with a secret, its Challenge).
//! The first byte picks how far the listener plays the handshake properly first: not at all, a
//! valid Challenge, or a valid Challenge and (once the proof is read) a valid HelloAck, so the
//! fuzzer reaches the parsing of the accepting side's Challenge, HelloAck and Proof. The
//! connecting lnc must not crash (a panic aborts the fuzzer), its `test_comm` must end within a
//! few seconds, and where it holds a secret it must never connect: no input proves it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nrt_sendrecv::fuzzing::{self as runtime, Config, Frame, HEADER_LEN, NRT_STATUS, ack};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

const BASE: u16 = 27600;
/// lnc 0 holds a secret and connects to lnc 1; lnc 2 holds none and connects to lnc 3; lncs 1
/// and 3 are the listeners below.
static START: Once = Once::new();
static LISTENERS: Mutex<Vec<TcpListener>> = Mutex::new(Vec::new());
static RUNS: AtomicU64 = AtomicU64::new(0);

fn cfg(secret: bool) -> Config {
    Config {
        connect_timeout: Duration::from_secs(3),
        request_timeout: Some(Duration::from_secs(5)),
        auth_secret: secret.then(|| b"fuzz".to_vec()),
        ..Config::loopback(BASE)
    }
}

fn start_lncs() {
    runtime::nrt_init();
    runtime::init_with(0, Some(cfg(true))).unwrap();
    runtime::init_with(2, Some(cfg(false))).unwrap();
}

fn frame(s: &mut TcpStream) -> Option<[u8; HEADER_LEN]> {
    let mut b = [0u8; HEADER_LEN];
    s.read_exact(&mut b).ok().map(|_| b)
}

fuzz_target!(|data: &[u8]| {
    START.call_once(|| {
        // SAFETY: set once, before any other thread of this process reads the environment.
        unsafe { std::env::set_var("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL", "off") };
        runtime::reload_log();
        let mut l = LISTENERS.lock().unwrap();
        for peer in [1u16, 3] {
            let fake = TcpListener::bind(("127.0.0.1", BASE + peer)).expect("the fake listener's port");
            fake.set_nonblocking(true).unwrap();
            l.push(fake);
        }
        start_lncs();
    });
    let mode = data.first().copied().unwrap_or(0) % 4;
    let secret = mode != 3;
    let (me, peer) = if secret { (0, 1) } else { (2, 3) };
    let answer = data.get(1..).unwrap_or(&[]);
    let comm = runtime::connect("127.0.0.1", peer, me).expect("connect");
    {
        let listeners = LISTENERS.lock().unwrap();
        let l = &listeners[if secret { 0 } else { 1 }];
        let dialled = Instant::now() + Duration::from_secs(5);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < dialled => {
                    std::thread::sleep(Duration::from_micros(100))
                }
                Err(e) => panic!("the connecting side did not dial: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let hello = frame(&mut s).expect("a Hello");
        let Ok(Frame::Hello { nonce, conn_seq, .. }) = Frame::decode(&hello) else { panic!("not a Hello") };
        if secret {
            assert!(matches!(frame(&mut s).map(|c| Frame::decode(&c)), Some(Ok(Frame::Challenge { .. }))), "no Challenge");
        }
        if mode >= 1 && secret {
            let _ = s.write_all(&Frame::Challenge { nonce: [0x11; 16], instance: 77, lnc: peer as u32 }.encode());
        }
        if mode == 2 && frame(&mut s).is_some() {
            let _ = s.write_all(&Frame::HelloAck { status: ack::OK, nonce, conn_seq, flags: 0, kernel: 0 }.encode());
        }
        let _ = s.write_all(answer);
        let _ = s.shutdown(Shutdown::Write);
        // What follows must not be a tensor byte: with a secret nothing is sent past the proof.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        if secret {
            assert!(rest.len() <= HEADER_LEN, "{} bytes sent to a listener that never proved the secret", rest.len());
        }
    }
    let end = Instant::now() + Duration::from_secs(6);
    loop {
        match comm.test() {
            Ok(true) => {
                assert!(!secret, "connected to a listener that never proved the secret");
                break;
            }
            Ok(false) => {
                assert!(Instant::now() < end, "set-up neither ended nor failed in 6 s");
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => {
                assert!(matches!(e.status, NRT_STATUS::NRT_FAILURE | NRT_STATUS::NRT_TIMEOUT), "{e}");
                break;
            }
        }
    }
    // 128 communicators per lnc: start afresh now and then.
    if RUNS.fetch_add(1, Ordering::Relaxed) % 100 == 99 {
        runtime::nrt_close();
        start_lncs();
    }
});
