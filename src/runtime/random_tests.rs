//! Where the kernel refuses random numbers (a seccomp policy, say: `sys::random::refusal` plays
//! it for one thread), the operation that wanted them fails instead of going on with a guessable
//! number.
use super::auth_tests::settle;
use super::*;
use crate::config::Transport;
use crate::status::NRT_STATUS;
use crate::sys::random::refusal::refuse_to;
use std::time::Duration;

const BASE: u16 = 25000;
const SECRET: &[u8] = b"s3cret";

fn cfg(secret: Option<&[u8]>, transport: Transport) -> Config {
    Config {
        transport,
        auth_secret: secret.map(<[u8]>::to_vec),
        connect_timeout: Duration::from_secs(4),
        request_timeout: Some(Duration::from_secs(20)),
        ..Config::loopback(BASE)
    }
}

/// `init` fails (the lnc's instance nonce); the connecting side's challenge, the accepting
/// side's challenge and a sender's shared-memory token each fail their connection's set-up with
/// NRT_FAILURE.
#[test]
fn without_random_numbers_the_operation_fails() {
    nrt_init();
    let me = std::thread::current().name().unwrap().to_string();
    {
        let _refused = refuse_to(&me);
        let e = init_with(981, Some(cfg(None, Transport::Tcp))).expect_err("init without random numbers");
        assert_eq!(e.status, NRT_STATUS::NRT_FAILURE, "{e}");
        assert!(e.msg.contains("no random numbers"), "{e}");
    }
    init_with(981, Some(cfg(None, Transport::Tcp))).expect("init once the kernel gives random numbers");
    close(981).unwrap();

    // (refused thread, sender, receiver, secret, transport, reason)
    let cases = [
        ("nrt-sr-conn982", 982, 983, Some(SECRET), Transport::Tcp, "no random numbers"),
        ("nrt-sr-lnc985", 984, 985, Some(SECRET), Transport::Tcp, "closed stream 0 during the handshake"),
        ("nrt-sr-conn986", 986, 987, None, Transport::Shm, "no random token"),
    ];
    for (thread, a, b, secret, transport, why) in cases {
        let _refused = refuse_to(thread);
        init_with(a, Some(cfg(secret, transport))).unwrap();
        init_with(b, Some(cfg(secret, transport))).unwrap();
        let s = connect("127.0.0.1", b, a).unwrap();
        let r = accept("127.0.0.1", a, b).unwrap();
        let e = settle(&s).expect_err("set-up must fail");
        assert_eq!(e.status, NRT_STATUS::NRT_FAILURE, "{thread}: {e}");
        assert!(e.msg.contains(why), "{thread}: expected {why:?} in: {e}");
        if secret.is_some() {
            assert!(!r.test().unwrap_or(false), "{thread}: the accept paired");
        }
        let _ = close(a);
        let _ = close(b);
    }
}
