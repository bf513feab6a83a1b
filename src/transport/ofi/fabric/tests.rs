//! Two rails in one process (two endpoints of the same provider) talking to each other: tcp
//! (tcp;ofi_rxm on the loopback domain) and shm. Every wait is bounded (10 s).

use super::*;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as u8).collect()
}

fn one_rail(provider: &str, domain: Option<&str>) -> FabricRail {
    let want = domain.map_or(RailsWanted::Count(1), |d| RailsWanted::Domains(vec![d.to_string()]));
    let mut rails = open_rails(Some(provider), want, false).unwrap_or_else(|e| panic!("open_rails({provider}): {e}"));
    assert_eq!(rails.len(), 1);
    rails.remove(0)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    A,
    B,
}

/// Rail `a` and rail `b`, connected to each other, and what each reported and nobody took yet.
struct Pair {
    a: FabricRail,
    b: FabricRail,
    ca: Vec<Cqe>,
    cb: Vec<Cqe>,
}

impl Pair {
    fn new(provider: &str, domain: Option<&str>) -> Pair {
        let mut a = one_rail(provider, domain);
        let mut b = one_rail(provider, domain);
        eprintln!("{}", a.describe());
        let (na, nb) = (a.name(), b.name());
        assert!(!na.is_empty() && na != nb, "endpoint names {na:?} {nb:?}");
        a.connect(&nb).unwrap();
        b.connect(&na).unwrap();
        Pair { a, b, ca: Vec::new(), cb: Vec::new() }
    }

    fn progress(&mut self) {
        self.a.poll(&mut self.ca).unwrap();
        self.b.poll(&mut self.cb).unwrap();
    }

    /// Posts `op` (on either rail) until the provider takes it.
    fn post(&mut self, mut op: impl FnMut(&mut FabricRail, &mut FabricRail) -> Result<Posted>) {
        let end = Instant::now() + DEADLINE;
        while op(&mut self.a, &mut self.b).unwrap() == Posted::Again {
            assert!(Instant::now() < end, "the provider did not take the operation within {DEADLINE:?}");
            self.progress();
        }
    }

    /// The first completion on `side` that `want` accepts, polling both rails meanwhile.
    fn take(&mut self, side: Side, want: impl Fn(&Cqe) -> bool) -> Cqe {
        let end = Instant::now() + DEADLINE;
        loop {
            let list = if side == Side::A { &mut self.ca } else { &mut self.cb };
            if let Some(i) = list.iter().position(&want) {
                return list.remove(i);
            }
            assert!(Instant::now() < end, "no such completion on {side:?} within {DEADLINE:?}: a {:?} b {:?}", self.ca, self.cb);
            self.progress();
        }
    }

    /// Every context went back to its slab, and nothing is left unreported.
    fn assert_idle(&mut self) {
        self.progress();
        assert!(self.ca.is_empty() && self.cb.is_empty(), "left over: a {:?} b {:?}", self.ca, self.cb);
        assert_eq!(self.a.ctxs.in_use(), 0);
        assert_eq!(self.b.ctxs.in_use(), 0);
    }
}

/// A tagged message of `len` bytes from a to b; `recv_first`: the receive is posted before
/// the send (else the message arrives unexpected).
fn tagged(p: &mut Pair, len: usize, recv_first: bool) {
    let send = pattern(len, len as u32);
    let mut recv = vec![0u8; len];
    let (sptr, rptr) = (send.as_ptr(), recv.as_mut_ptr());
    let smr = p.a.register(sptr, len, false).unwrap();
    let rmr = p.b.register(rptr, len, false).unwrap();
    let tag = 0x7a6_0000_0000 | len as u64;
    // SAFETY: the buffers outlive their completions, taken below (both closures).
    let post_recv = |p: &mut Pair| p.post(|_, b| unsafe { b.trecv(rptr, len, Some(&rmr), tag, 0, 10) });
    // SAFETY: as above.
    let post_send = |p: &mut Pair| p.post(|a, _| unsafe { a.tsend(sptr, len, Some(&smr), tag, 11) });
    if recv_first {
        post_recv(p);
        post_send(p);
    } else {
        post_send(p);
        post_recv(p);
    }
    let r = p.take(Side::B, |c| c.ctx == 10);
    assert_eq!((r.kind, r.len, r.tag, r.err.as_deref()), (CqKind::Recv, len, tag, None), "{r:?}");
    let s = p.take(Side::A, |c| c.ctx == 11);
    assert_eq!((s.kind, s.err.as_deref()), (CqKind::Send, None), "{s:?}");
    assert!(recv == send, "{len} bytes received differ from those sent");
    p.a.deregister(&smr);
    p.b.deregister(&rmr);
}

/// 1 MiB written from a into b's registered buffer, with remote CQ data.
fn write_data(p: &mut Pair) {
    let src = pattern(MIB, 7);
    let mut dst = vec![0u8; MIB];
    let smr = p.a.register(src.as_ptr(), MIB, false).unwrap();
    let dmr = p.b.register(dst.as_mut_ptr(), MIB, true).unwrap();
    // 32 bits: what every provider with remote CQ data carries (EFA and verbs: 4 bytes).
    let data = 0x89ab_cdef;
    let sptr = src.as_ptr();
    // SAFETY: src outlives the completion, taken below; dst is registered for remote writes.
    p.post(|a, _| unsafe { a.write_data(sptr, MIB, Some(&smr), data, dmr.remote_base, dmr.key, 20) });
    let w = p.take(Side::A, |c| c.ctx == 20);
    assert_eq!((w.kind, w.err.as_deref()), (CqKind::Write, None), "{w:?}");
    let r = p.take(Side::B, |c| c.kind == CqKind::RemoteWrite);
    assert_eq!((r.ctx, r.data & 0xffff_ffff, r.err.as_deref()), (0, data, None), "{r:?}");
    eprintln!("{}: remote write completion reports {} of {MIB} bytes", p.a.limits.provider, r.len);
    assert!(dst == src, "1 MiB written differs from the source");
    p.a.deregister(&smr);
    p.b.deregister(&dmr);
}

/// 1 MiB read by b from a's registered buffer.
fn read(p: &mut Pair) {
    let src = pattern(MIB, 9);
    let mut dst = vec![0u8; MIB];
    let smr = p.a.register(src.as_ptr(), MIB, true).unwrap();
    let dptr = dst.as_mut_ptr();
    let dmr = p.b.register(dptr, MIB, false).unwrap();
    // SAFETY: dst outlives the completion, taken below; src is registered for remote reads.
    p.post(|_, b| unsafe { b.read(dptr, MIB, Some(&dmr), smr.remote_base, smr.key, 30) });
    let r = p.take(Side::B, |c| c.ctx == 30);
    assert_eq!((r.kind, r.len, r.err.as_deref()), (CqKind::Read, MIB, None), "{r:?}");
    assert!(dst == src, "1 MiB read differs from the source");
    p.a.deregister(&smr);
    p.b.deregister(&dmr);
}

/// A receive shorter than its send completes with an error (fi_cq_readerr), its context kept.
fn truncated(p: &mut Pair) {
    let send = pattern(1024, 3);
    let mut recv = vec![0u8; 8];
    let (sptr, rptr) = (send.as_ptr(), recv.as_mut_ptr());
    let smr = p.a.register(sptr, send.len(), false).unwrap();
    let rmr = p.b.register(rptr, recv.len(), false).unwrap();
    // SAFETY: the buffers outlive their completions, taken below.
    p.post(|_, b| unsafe { b.trecv(rptr, 8, Some(&rmr), 0x51, 0, 40) });
    // SAFETY: as above.
    p.post(|a, _| unsafe { a.tsend(sptr, 1024, Some(&smr), 0x51, 41) });
    let r = p.take(Side::B, |c| c.ctx == 40);
    assert_eq!(r.kind, CqKind::Recv);
    let msg = r.err.unwrap_or_else(|| panic!("a receive of 8 bytes for 1024 completed without an error"));
    eprintln!("{}: truncated receive: {msg}", p.a.limits.provider);
    // The send completes too, however the provider judges it.
    let s = p.take(Side::A, |c| c.ctx == 41);
    assert_eq!(s.kind, CqKind::Send);
    p.a.deregister(&smr);
    p.b.deregister(&rmr);
}

fn exercise(provider: &str, domain: Option<&str>) {
    exercise_with(Pair::new(provider, domain));
}

fn exercise_with(mut p: Pair) {
    let provider = p.a.limits.provider.clone();
    if let Some(fd) = p.a.wait_fd() {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0, "FI_GETWAIT gave a closed descriptor");
    }
    tagged(&mut p, 8, false);
    tagged(&mut p, MIB, true);
    p.assert_idle();
    if p.a.limits.write_data {
        write_data(&mut p);
        p.assert_idle();
    } else {
        eprintln!("{provider}: no RMA write with remote CQ data; skipped");
    }
    if p.a.rma() {
        read(&mut p);
        p.assert_idle();
    } else {
        eprintln!("{provider}: no RMA; read skipped");
    }
    truncated(&mut p);
    p.assert_idle();
}

#[test]
fn ofi_tcp_loopback_tagged_write_read() {
    exercise("tcp", Some("lo"));
}

#[test]
fn ofi_shm_tagged_write_read() {
    exercise("shm", None);
}

/// Rails opened with device memory asked for (as the LD_PRELOAD library opens them): `shm`
/// then offers `FI_HMEM` (with another inject size and more capabilities) and must move host
/// memory as before; `tcp` offers none and is opened as without.
#[test]
fn ofi_rails_opened_with_fi_hmem_asked_for_move_host_memory() {
    for provider in ["tcp", "shm"] {
        let domain = (provider == "tcp").then(|| "lo".to_string());
        let want = domain.map_or(RailsWanted::Count(1), |d| RailsWanted::Domains(vec![d]));
        let mut a = open_rails(Some(provider), want.clone(), true).unwrap().remove(0);
        let mut b = open_rails(Some(provider), want, true).unwrap().remove(0);
        eprintln!("{}", a.describe());
        let (na, nb) = (a.name(), b.name());
        a.connect(&nb).unwrap();
        b.connect(&na).unwrap();
        exercise_with(Pair { a, b, ca: Vec::new(), cb: Vec::new() });
    }
}

/// Where the queue has a descriptor (tcp): a receiver blocked on it (after `trywait`) is
/// woken by a message, the first one (which sets up rxm's connection) and the next; the
/// sender runs on its own thread meanwhile.
#[test]
fn ofi_tcp_wait_fd_wakes_the_receiver() {
    WAIT_FD_FOR_TESTS.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut a = one_rail("tcp", Some("lo"));
    let mut b = one_rail("tcp", Some("lo"));
    let (na, nb) = (a.name(), b.name());
    a.connect(&nb).unwrap();
    b.connect(&na).unwrap();
    let Some(fd) = b.wait_fd() else {
        panic!("tcp offers FI_WAIT_FD (libfabric 1.17); none was given");
    };
    let mut cb = Vec::new();
    for round in 0..2u64 {
        let mut recv = [0u8; 8];
        let rptr = recv.as_mut_ptr();
        // SAFETY: recv outlives the completion, awaited below.
        assert_eq!(unsafe { b.trecv(rptr, 8, None, 0x77, 0, 50 + round) }.unwrap(), Posted::Ok);
        let end = Instant::now() + DEADLINE;
        while !b.trywait() {
            b.poll(&mut cb).unwrap();
            assert!(cb.is_empty() && Instant::now() < end, "the receiver does not settle: {cb:?}");
        }
        // Blocked from here on: the sender, on its own thread, sends and progresses its end.
        let sender = std::thread::spawn(move || {
            let send = pattern(8, 5);
            let mut ca = Vec::new();
            let end = Instant::now() + DEADLINE;
            // SAFETY: send outlives the completion, awaited below.
            while unsafe { a.tsend(send.as_ptr(), 8, None, 0x77, 60 + round) }.unwrap() == Posted::Again {
                a.poll(&mut ca).unwrap();
            }
            while !ca.iter().any(|c| c.ctx == 60 + round) {
                assert!(Instant::now() < end, "the send did not complete");
                a.poll(&mut ca).unwrap();
            }
            // The sender keeps progressing a while (rxm's rendezvous/connection steps).
            let until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < until {
                a.poll(&mut ca).unwrap();
            }
            (a, send)
        });
        let mut wakes = 0;
        loop {
            if b.trywait() {
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
                assert_eq!(n, 1, "round {round}: the descriptor did not wake the receiver within 5 s ({wakes} wakes so far)");
                wakes += 1;
            }
            b.poll(&mut cb).unwrap();
            if cb.iter().any(|c| c.ctx == 50 + round) {
                break;
            }
            assert!(Instant::now() < end, "round {round}: the receive did not complete");
        }
        let (a2, send) = sender.join().unwrap();
        a = a2;
        let r = cb.remove(cb.iter().position(|c| c.ctx == 50 + round).unwrap());
        assert_eq!((r.len, r.err.as_deref()), (8, None));
        assert!(recv[..] == send[..]);
        eprintln!("tcp wait fd, round {round}: woken {wakes} times before the receive completed");
    }
}

/// The `fi_mr_regattr` path (`register_device`'s) moves bytes: an RMA write between two
/// buffers registered with it as host memory (`FI_HMEM_SYSTEM`; no provider here offers
/// `FI_HMEM`, so `FI_HMEM_NEURON` itself never runs here). And `register_device` is an error,
/// never a crash, where the provider has no `FI_HMEM`.
#[test]
fn ofi_tcp_regattr_registrations_carry_writes_and_device_memory_needs_fi_hmem() {
    let mut p = Pair::new("tcp", Some("lo"));
    assert!(p.a.limits.write_data, "tcp;ofi_rxm offers RMA writes with CQ data");
    let src = pattern(MIB, 13);
    let mut dst = vec![0u8; MIB];
    let smr = p.a.reg(src.as_ptr(), MIB, false, Some((sys::FI_HMEM_SYSTEM, 0))).unwrap();
    let dmr = p.b.reg(dst.as_mut_ptr(), MIB, true, Some((sys::FI_HMEM_SYSTEM, 0))).unwrap();
    let sptr = src.as_ptr();
    // SAFETY: src outlives the completion, taken below; dst is registered for remote writes.
    p.post(|a, _| unsafe { a.write_data(sptr, MIB, Some(&smr), 0x1234, dmr.remote_base, dmr.key, 70) });
    let w = p.take(Side::A, |c| c.ctx == 70);
    assert_eq!((w.kind, w.err.as_deref()), (CqKind::Write, None), "{w:?}");
    let r = p.take(Side::B, |c| c.kind == CqKind::RemoteWrite);
    assert_eq!((r.data & 0xffff_ffff, r.err.as_deref()), (0x1234, None), "{r:?}");
    assert!(dst == src, "1 MiB written between fi_mr_regattr registrations differs");
    p.a.deregister(&smr);
    p.b.deregister(&dmr);
    p.assert_idle();
    for provider in ["tcp", "shm"] {
        let mut r = open_rails(Some(provider), RailsWanted::Count(1), true).unwrap().remove(0);
        eprintln!("{}", r.describe());
        let buf = [0u8; 64];
        match r.register_device(buf.as_ptr(), buf.len(), true, -1) {
            Err(e) if !r.limits.hmem => assert!(e.msg.contains("FI_HMEM"), "{e}"),
            Err(e) => eprintln!("{provider}: FI_HMEM offered, FI_HMEM_NEURON registration refused: {e}"),
            Ok(mr) => {
                eprintln!("{provider}: FI_HMEM_NEURON registration of host memory accepted");
                r.deregister(&mr);
            }
        }
    }
}

#[test]
fn ofi_open_rails_refuses_what_is_not_offered() {
    let e = open_rails(Some("tcp"), RailsWanted::Domains(vec!["no-such-domain".into()]), false).err().expect("an unknown domain");
    assert!(e.msg.contains("no-such-domain") && e.msg.contains("lo"), "{e}");
    assert!(open_rails(Some("tcp"), RailsWanted::Count(100_000), false).is_err());
    assert!(open_rails(Some("tcp"), RailsWanted::Count(0), true).is_err());
    assert!(open_rails(Some("no-such-provider"), RailsWanted::All, true).is_err());
}

/// No provider named: libfabric's first choice (FI_PROVIDER narrows it), one provider for
/// every rail.
#[test]
fn ofi_no_provider_named_gives_rails_of_one_provider() {
    let rails = open_rails(None, RailsWanted::All, false).unwrap();
    let first = &rails[0].limits().provider;
    for r in &rails {
        eprintln!("no provider named: {}", r.describe());
        assert_eq!(&r.limits().provider, first);
    }
}

#[test]
fn ofi_operations_need_a_peer() {
    let mut r = one_rail("tcp", Some("lo"));
    let buf = [0u8; 8];
    let mr = r.register(buf.as_ptr(), buf.len(), false).unwrap();
    // SAFETY: not posted (no peer); buf outlives the call anyway.
    let e = unsafe { r.tsend(buf.as_ptr(), buf.len(), Some(&mr), 1, 1) }.expect_err("a send without a peer");
    assert!(e.msg.contains("no peer"), "{e}");
    assert_eq!(r.ctxs.in_use(), 0);
    assert!(r.connect(&[]).is_err());
    r.deregister(&mr);
}

/// A region that a dead process with this process id left in /dev/shm (killed, or exited with
/// an endpoint open) does not stop an shm rail from opening: libfabric takes it for a live one
/// (its /proc/<pid> exists: ours) and refuses with EBUSY, removing it; the rail enables again.
/// The stale regions are copies of a live rail's region (so they carry this process id and
/// libfabric's version) under the names the next endpoints will take.
#[test]
fn ofi_shm_opens_over_a_stale_region_with_this_process_id() {
    let live = one_rail("shm", None);
    let name = String::from_utf8_lossy(&live.name()).trim_end_matches('\0').to_string();
    // "fi_shm://<pid>:<uid>:<index>" (the index counts this process's endpoints).
    let bare = name.strip_prefix("fi_shm://").unwrap_or(&name).to_string();
    let mut parts = bare.rsplitn(2, ':');
    let index: u32 = parts.next().and_then(|i| i.parse().ok()).unwrap_or_else(|| panic!("shm endpoint name {name:?}"));
    let stem = parts.next().unwrap().to_string();
    assert!(stem.starts_with(&format!("{}:", std::process::id())), "{name:?}");
    let region = std::fs::read(format!("/dev/shm/{bare}")).expect("the live rail's region in /dev/shm");
    // Other tests of this binary open endpoints meanwhile: plant the next 64 names.
    let planted: Vec<String> = (index + 1..index + 65).map(|i| format!("/dev/shm/{stem}:{i}")).collect();
    for p in &planted {
        std::fs::write(p, &region[..region.len().min(1 << 16)]).unwrap();
    }
    let opened = open_rails(Some("shm"), RailsWanted::Count(1), false);
    let new_name = opened.as_ref().ok().map(|r| String::from_utf8_lossy(&r[0].name()).trim_end_matches('\0').to_string());
    let path = new_name.as_ref().map(|n| format!("/dev/shm/{}", n.strip_prefix("fi_shm://").unwrap_or(n)));
    for p in planted.iter().filter(|p| Some(*p) != path.as_ref()) {
        let _ = std::fs::remove_file(p);
    }
    let rail = opened.unwrap_or_else(|e| panic!("an shm rail over a stale region: {e}"));
    let (new_name, path) = (new_name.unwrap(), path.unwrap());
    assert!(planted.contains(&path), "the new rail {new_name:?} took none of the planted names");
    eprintln!("opened {new_name} where a stale region lay");
    drop(rail);
    drop(live);
}

/// A process that exits with an shm endpoint open leaves no region in /dev/shm: this test runs
/// itself again as a child that opens a rail, checks that its region exists, and exits without
/// closing it; the region is gone afterwards.
#[test]
fn ofi_shm_region_of_an_endpoint_open_at_exit_is_removed() {
    const TEST: &str = "transport::ofi::fabric::tests::ofi_shm_region_of_an_endpoint_open_at_exit_is_removed";
    if std::env::var_os("NRT_TEST_SHM_EXIT_CHILD").is_some() {
        let rail = one_rail("shm", None);
        let name = shm_names::region_name(&rail.name()).expect("an shm region name");
        let path = format!("/dev/shm/{}", name.to_str().unwrap());
        println!("REGION {path} exists={}", std::path::Path::new(&path).exists());
        std::mem::forget(rail);
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env("NRT_TEST_SHM_EXIT_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the child did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "child: {status}\n{out}");
    // The harness may print "test ... " before it on the same line.
    let line = out.lines().find_map(|l| l.find("REGION ").map(|i| &l[i..])).unwrap_or_else(|| panic!("child printed no region:\n{out}"));
    let mut words = line.split(' ').skip(1);
    let (path, existed) = (words.next().unwrap(), words.next().unwrap());
    assert_eq!(existed, "exists=true", "the child's region was not where expected: {line}");
    assert!(!std::path::Path::new(path).exists(), "{path} is still in /dev/shm after its process exited");
}
