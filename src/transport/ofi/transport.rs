//! The libfabric transport of one communicator: the protocol over its rails, and the
//! connection's TCP streams, which carry the rails' endpoint names (OfiName frames) at set-up and
//! afterwards only tell that the peer has gone.

use super::proto::Proto;
use super::rail::Rail;
use crate::status::{Error, Result};
use crate::transport::staging::Staging;
use crate::transport::tcp::{Stream, TcpTransport};
use crate::transport::{Completions, Kind, Msg, Transport, Wait, WaitFd};
use crate::wire::{Frame, OFI_NAME_MAX, OFI_PIECE};
use std::os::fd::RawFd;

/// The protocol's version (`proto/mod.rs`): 2 since the write mode sends a SIZE message and
/// needs only 4 bytes of CQ data. Both sides must run the same.
const PROTO_VERSION: u32 = 2;

/// FNV-1a of the provider's name and the protocol version: both sides must run the same provider
/// and protocol.
fn provider_hash(name: &str) -> u32 {
    format!("{name}/{PROTO_VERSION}").bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// A communicator's libfabric data path: the protocol over its rails, and the connection's TCP
/// streams, which carry the endpoint names at set-up and then only tell that the peer has gone.
pub struct OfiTransport {
    kind: Kind,
    link: TcpTransport,
    /// Dropped (endpoints closed, buffers freed) when the communicator goes, except a failed
    /// (`broken`) one over an `ofi_rxm` provider: `tcp;ofi_rxm` 1.17 crashed now and then inside
    /// `fi_close` of an endpoint whose connection had stalled (the fault matrix's link-down
    /// case), so there the endpoints and the buffers its posted receives point into stay (a few
    /// MiB per failed communicator, given back when the process exits). Other providers close
    /// always: an shm endpoint left open would leave its region in /dev/shm after the process
    /// exits (16 MiB each).
    proto: std::mem::ManuallyDrop<Proto>,
    broken: bool,
    provider: String,
    hash: u32,
    write: bool,
    nrails: usize,
    /// The peer's endpoint names, pieces as they arrive.
    peer: Vec<Vec<u8>>,
    peer_len: Vec<usize>,
    started: bool,
    /// The rails' completion descriptors (those that have one): they wake the progress thread
    /// early, but providers progress manually (tcp needs `fi_trywait` before a wait), so the
    /// progress thread also polls the rails every tick (`wants_ticks`).
    fds: Vec<RawFd>,
    /// Who this is, for the log.
    who: String,
    /// Receives into device memory that is staged (the LD_PRELOAD library's device tensors,
    /// where the rails cannot take them as they are): the message lands in host memory of ours,
    /// copied out before it is reported.
    staging: Staging,
    /// Device-memory messages that went as they are (`FI_HMEM`), for the log.
    device_direct: u64,
}

impl OfiTransport {
    /// Takes the communicator's streams and its opened rails, and names the rails' endpoints to
    /// the peer.
    pub fn new(kind: Kind, streams: Vec<Stream>, rails: Vec<Box<dyn Rail>>, who: String) -> Result<OfiTransport> {
        let limits = rails.first().map(|r| r.limits().clone()).ok_or_else(|| Error::failure("libfabric: no rail"))?;
        let write = rails.iter().all(|r| r.limits().write_data);
        let nrails = rails.len();
        let proto = Proto::new(kind, rails, write)?;
        let names = proto.names();
        let fds = proto.wait_fds();
        let mut t = OfiTransport {
            kind,
            link: TcpTransport::link(kind, streams),
            proto: std::mem::ManuallyDrop::new(proto),
            broken: false,
            hash: provider_hash(&limits.provider),
            provider: limits.provider,
            write,
            nrails,
            peer: vec![Vec::new(); nrails],
            peer_len: vec![0; nrails],
            started: false,
            fds,
            who,
            staging: Staging::default(),
            device_direct: 0,
        };
        for (rail, name) in names.iter().enumerate() {
            if name.is_empty() || name.len() > OFI_NAME_MAX {
                return Err(Error::failure(format!("libfabric: rail {rail}'s endpoint name has {} bytes", name.len())));
            }
            for (piece, chunk) in name.chunks(OFI_PIECE).enumerate() {
                let mut bytes = [0u8; OFI_PIECE];
                bytes[..chunk.len()].copy_from_slice(chunk);
                t.link.send_frame(&Frame::OfiName {
                    rail: rail as u8,
                    piece: piece as u8,
                    nrails: nrails as u8,
                    write,
                    provider: t.hash,
                    len: name.len() as u16,
                    bytes,
                });
            }
        }
        Ok(t)
    }

    /// The peer's endpoint names; the protocol starts once every rail's is complete.
    fn handle_frames(&mut self, done: &mut Completions<'_>) -> Result<()> {
        for f in self.link.take_frames() {
            let Frame::OfiName { rail, piece, nrails, write, provider, len, bytes } = f else {
                return Err(Error::failure(format!("unexpected frame {f:?} on the libfabric control stream")));
            };
            if provider != self.hash {
                return Err(Error::failure(format!(
                    "the peer runs another libfabric provider than {}, or another version of this library's libfabric protocol ({PROTO_VERSION}) (set the same NEURON_RT_ASYNC_SENDRECV_OFI_PROVIDER or FI_PROVIDER on both sides, and the same nrt-sendrecv)",
                    self.provider
                )));
            }
            if nrails as usize != self.nrails {
                return Err(Error::failure(format!(
                    "the peer has {nrails} libfabric rails, this side {} (NEURON_RT_ASYNC_SENDRECV_OFI_RAILS)",
                    self.nrails
                )));
            }
            if write != self.write {
                return Err(Error::failure("the peer's provider offers RMA writes differently (both sides must run the same provider)"));
            }
            let (r, at) = (rail as usize, piece as usize * OFI_PIECE);
            if self.started || (self.peer_len[r] != 0 && self.peer_len[r] != len as usize) || self.peer[r].len() != at {
                return Err(Error::failure(format!("rail {rail}: endpoint name piece {piece} out of turn")));
            }
            self.peer_len[r] = len as usize;
            let n = (len as usize - at).min(OFI_PIECE);
            self.peer[r].extend_from_slice(&bytes[..n]);
        }
        if !self.started && self.peer.iter().zip(&self.peer_len).all(|(p, &l)| l > 0 && p.len() == l) {
            self.proto.start(std::mem::take(&mut self.peer))?;
            self.started = true;
            crate::log_info!("{}: libfabric {} on {} rail(s) connected", self.who, self.provider, self.nrails);
        }
        self.with_staging(done, |p, d| p.progress(d))
    }

    /// `f` over the protocol, with the receives into device memory copied out before they are
    /// reported.
    fn with_staging<R>(&mut self, done: &mut Completions<'_>, f: impl FnOnce(&mut Proto, &mut Completions<'_>) -> Result<R>) -> Result<R> {
        let proto = &mut *self.proto;
        self.staging.with(done, |d| f(proto, d))
    }

    /// Bytes each rail carried (logged at debug level when the communicator goes).
    pub fn rail_bytes(&self) -> Vec<u64> {
        self.proto.rail_bytes()
    }
}

/// Providers whose failed endpoints are left open rather than closed (see `OfiTransport::proto`).
fn leaves_failed_open(provider: &str) -> bool {
    provider.split(';').any(|p| p == "ofi_rxm")
}

impl Drop for OfiTransport {
    fn drop(&mut self) {
        crate::log_debug!("{}: libfabric bytes per rail: {:?}", self.who, self.proto.rail_bytes());
        if self.staging.count + self.device_direct > 0 {
            crate::log_debug!(
                "{}: device-memory messages: {} staged through host memory, {} as they are (FI_HMEM)",
                self.who,
                self.staging.count,
                self.device_direct
            );
        }
        if self.broken && leaves_failed_open(&self.provider) {
            crate::log_info!(
                "{}: the failed communicator's libfabric endpoints are left open ({} can crash in fi_close after a stalled connection)",
                self.who,
                self.provider
            );
            return;
        }
        // SAFETY: dropped once, here; nothing uses `proto` afterwards.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.proto) };
    }
}

impl Transport for OfiTransport {
    fn name(&self) -> &'static str {
        "ofi"
    }

    fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        // Device memory with a device address, on rails with FI_HMEM: as it is (given back when
        // its registration fails).
        let m = if m.region.device_addr().is_some() && self.proto.takes_device() {
            match self.with_staging(done, |p, d| p.post_device(m, d))? {
                None => {
                    if self.device_direct == 0 {
                        crate::log_info!(
                            "{}: device memory goes as it is over {} (FI_HMEM offered): messages above 8 KiB registered as device memory (FI_HMEM_NEURON), smaller ones copied through the vendor runtime",
                            self.who,
                            self.provider
                        );
                    }
                    self.device_direct += 1;
                    return Ok(());
                }
                Some(m) => m,
            }
        } else {
            m
        };
        let Some(mem) = m.region.staging().cloned() else { return self.with_staging(done, |p, d| p.post(m, d)) };
        // Device memory: through host memory of ours (registered like any tensor of ours).
        if self.staging.count == 0 {
            let why = match (m.region.device_addr(), self.proto.hmem_offered()) {
                (None, _) => "it has no virtual address (HBM not mapped: NEURON_RT_MAP_HBM)",
                (Some(_), false) => "the provider offers no FI_HMEM",
                (Some(_), true) => "registering it as device memory failed (logged)",
            };
            crate::log_info!("{}: device memory staged through host memory over {}: {why}", self.who, self.provider);
        }
        let m = self.staging.stage(self.kind, m, mem)?;
        self.with_staging(done, |p, d| p.post(m, d))
    }

    fn after_post(&mut self, _pump: bool, done: &mut Completions<'_>) -> Result<bool> {
        self.with_staging(done, |p, d| p.progress(d)).map(|_| false)
    }

    fn progress(&mut self, done: &mut Completions<'_>) -> Result<()> {
        self.link.read_all()?;
        self.handle_frames(done)?;
        self.link.flush_control()
    }

    /// A caller's poll drives the provider (its completion queues); the streams are the
    /// progress thread's (their end wakes it), but for set-up, when the names are read here too.
    fn poll(&mut self, _wait: Option<Wait>, defer_control: bool, done: &mut Completions<'_>) -> Result<bool> {
        if !self.started {
            self.link.read_ready()?;
            self.handle_frames(done)?;
            return self.link.flush_control().map(|_| false);
        }
        self.with_staging(done, |p, d| p.poll(defer_control, d))
    }

    fn flush_control(&mut self) -> Result<()> {
        self.proto.send_held()?;
        self.link.flush_control()
    }

    fn wait_fds(&self, out: &mut Vec<WaitFd>) {
        self.link.wait_fds(out);
        out.extend(self.fds.iter().map(|&fd| WaitFd { fd, input: true }));
    }

    /// A spinning caller polls the completion queues itself: the progress thread stops
    /// watching their descriptors (and ticking) meanwhile.
    fn spin_fds(&self, out: &mut Vec<WaitFd>) {
        out.extend(self.fds.iter().map(|&fd| WaitFd { fd, input: true }));
    }

    fn polls_sockets(&self) -> bool {
        true
    }

    fn wants_ticks(&self) -> bool {
        true
    }

    fn broken(&mut self) {
        self.broken = true;
    }

    fn max_message(&self) -> u64 {
        self.proto.max_message()
    }

    #[cfg(test)]
    fn has_queued_control(&self) -> bool {
        self.link.has_queued_control()
    }
}

#[cfg(test)]
mod tests {
    //! The transport over the fake provider's rails and a loopback TCP connection (which carries
    //! the endpoint names): where device memory goes as it is and where it is staged.

    use super::*;
    use crate::tensor::Region;
    use crate::tensor::fake_device::FakeDevice;
    use crate::transport::Done;
    use crate::transport::ofi::fake::{self, Config, Link, Order};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const E: usize = 8192;

    /// Only ofi_rxm stacks keep a failed communicator's endpoints open; shm (whose regions
    /// outlive the process) and the others close them.
    #[test]
    fn failed_endpoints_stay_open_only_over_ofi_rxm() {
        assert!(leaves_failed_open("tcp;ofi_rxm") && leaves_failed_open("verbs;ofi_rxm"));
        assert!(!leaves_failed_open("shm") && !leaves_failed_open("efa") && !leaves_failed_open("tcp"));
    }

    fn pattern(seq: u64, i: usize) -> u8 {
        (i.wrapping_mul(7) ^ (i >> 8) ^ (seq as usize).wrapping_mul(13)) as u8
    }

    /// A sending and a receiving transport over `cfg`'s fake rails (one), connected.
    fn pair(cfg: &Config) -> (OfiTransport, OfiTransport, Vec<Arc<Link>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let (ra, rb, links) = fake::pair(1, cfg);
        let s = OfiTransport::new(Kind::Send, vec![Stream::new(a, true).unwrap()], ra, "sender".into()).unwrap();
        let r = OfiTransport::new(Kind::Recv, vec![Stream::new(b, true).unwrap()], rb, "receiver".into()).unwrap();
        (s, r, links)
    }

    /// Drives both ends until each has reported `n` messages.
    fn drive(s: &mut OfiTransport, r: &mut OfiTransport, slog: &mut Vec<Done>, rlog: &mut Vec<Done>, n: usize) {
        let end = Instant::now() + Duration::from_secs(10);
        while slog.len() < n || rlog.len() < n {
            assert!(Instant::now() < end, "not done in 10 s: {slog:?} {rlog:?}");
            let mut a = |d: Done| slog.push(d);
            s.progress(&mut Completions::new(&mut a, None)).unwrap();
            let mut b = |d: Done| rlog.push(d);
            r.progress(&mut Completions::new(&mut b, None)).unwrap();
        }
    }

    /// Device memory (host memory standing in) from device to device, with and without a
    /// device address, over rails with and without FI_HMEM, in both modes: every byte arrives;
    /// with FI_HMEM and an address, large messages go by RMA on device registrations (no
    /// StagedMemory call) and small ones through StagedMemory; else every message is staged
    /// (its StagedMemory copies it whole, nothing is registered as device memory).
    #[test]
    fn device_memory_is_staged_unless_the_rails_take_it_as_it_is() {
        let sizes = [0usize, 8, E, E + 1, 3 << 19];
        for write_mode in [true, false] {
            for hmem in [false, true] {
                for with_va in [true, false] {
                    let mut cfg = Config::new(Order::Shuffled(3), write_mode);
                    cfg.hmem = hmem;
                    let (mut s, mut r, links) = pair(&cfg);
                    let (mut slog, mut rlog) = (Vec::new(), Vec::new());
                    let mut held = Vec::new();
                    for (k, &len) in sizes.iter().enumerate() {
                        let what = format!("{len} bytes, write mode {write_mode}, FI_HMEM {hmem}, address {with_va}");
                        let seq = k as u64;
                        let (sd, rd) = (FakeDevice::new(len + 4, false), FakeDevice::new(len + 6, false));
                        sd.fill(2, &(0..len).map(|i| pattern(seq, i)).collect::<Vec<u8>>());
                        rd.fill(0, &vec![0xee; len + 6]);
                        let region = |d: &Arc<FakeDevice>, off| {
                            let r = d.region(off, len);
                            if with_va { r } else { Region::staged(r.staging().unwrap().clone(), len) }
                        };
                        let (sreg, rreg) = (region(&sd, 2), region(&rd, 3));
                        let mut b = |d: Done| rlog.push(d);
                        r.post(Msg { seq, region: rreg }, &mut Completions::new(&mut b, None)).unwrap();
                        let mut a = |d: Done| slog.push(d);
                        s.post(Msg { seq, region: sreg }, &mut Completions::new(&mut a, None)).unwrap();
                        drive(&mut s, &mut r, &mut slog, &mut rlog, k + 1);
                        for log in [&slog, &rlog] {
                            assert!(matches!(log[k], Done::Ok { seq: q, bytes } if q == seq && bytes == len as u64), "{what}: {log:?}");
                        }
                        let got = rd.contents(0, len + 6);
                        assert!(got[..3].iter().chain(&got[3 + len..]).all(|&x| x == 0xee), "{what}: written outside");
                        assert!((0..len).all(|i| got[3 + i] == pattern(seq, i)), "{what}: the bytes differ");
                        let direct = hmem && with_va;
                        let (sc, rc) = (sd.copied(), rd.copied());
                        if direct && len > E {
                            assert_eq!((sd.calls(), rd.calls()), ((0, 0), (0, 0)), "{what}: large device memory was copied");
                        } else {
                            assert_eq!((sc.0, rc.1), (len, len), "{what}: not copied through StagedMemory whole");
                        }
                        held.push((sd, rd));
                    }
                    let large = sizes.iter().filter(|&&l| l > E).count();
                    let want = if hmem && with_va { (large, large) } else { (0, 0) };
                    assert_eq!((links[0].device_regs(0).0, links[0].device_regs(1).0), want, "device registrations");
                    assert_eq!((s.device_direct + s.staging.count, r.device_direct + r.staging.count), (5, 5));
                    assert_eq!(s.device_direct, if hmem && with_va { 5 } else { 0 });
                }
            }
        }
    }
}
