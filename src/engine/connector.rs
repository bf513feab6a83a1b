//! The connecting side of set-up, on a short-lived thread per connection: connects the
//! communicator's TCP streams (retrying while the peer is not listening yet), sends a Hello on
//! each (nonce, connection sequence, both lnc ids, stream index and count, the transports it
//! offers, its kernel tag) and waits for one HelloAck per stream (the transport chosen, the
//! accepting side's kernel tag: kernel.rs).
//!
//! With a shared secret, each Hello is followed by this side's Challenge; each stream's answer is
//! the accepting side's Challenge, which this side proves the secret over, and after its
//! HelloAck the accepting side's proof (auth.rs). Until every stream's proof checked, nothing
//! else is sent and no transport is built: no tensor byte, no shared-memory channel, no queue
//! pair or libfabric address goes to a peer that has not proved the secret.

use super::auth::{Issued, Transcript, accepting_proof_checks, connecting_proof, issued_here};
use super::choice::{Chooser, Chosen, Offer, build, not_here};
use super::kernel::Peer;
use crate::comm::Comm;
use crate::config::Transport as Setting;
use crate::status::{Error, NRT_STATUS, Result};
use crate::transport::tcp::Stream;
use crate::wire::{FLAG_AUTH, FLAG_SHM, Frame, HEADER_LEN, VERSION, WireError, ack};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one read of the handshake waits before it checks the communicator again.
const TICK: Duration = Duration::from_millis(100);

fn connect_once(addr: SocketAddr, deadline: Instant, comm: &Comm, cc: Option<&std::ffi::CStr>) -> Result<TcpStream> {
    let mut backoff = Duration::from_millis(10);
    let mut last: Option<std::io::Error> = None;
    loop {
        if !comm.is_connecting() {
            return Err(Error::failure("communicator closed during set-up"));
        }
        let now = Instant::now();
        if now >= deadline {
            let why = last.map(|e| format!(" (last error: {e})")).unwrap_or_default();
            return Err(Error::timeout(format!("no connection to {addr} within {} ms{why}", comm.hub.cfg.connect_timeout.as_millis())));
        }
        let slice = (deadline - now).min(Duration::from_secs(1));
        match crate::transport::tcp::connect_with(addr, slice, cc) {
            Ok(s) => return Ok(s),
            Err(e) => {
                crate::log_debug!("{}: connect to {addr}: {e}; retrying", comm.describe());
                last = Some(e);
                std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
                backoff = (backoff * 2).min(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one 40-byte frame of the handshake, within the set-up deadline.
fn read_frame(comm: &Comm, s: &TcpStream, deadline: Instant, addr: SocketAddr, i: usize) -> Result<[u8; HEADER_LEN]> {
    let mut buf = [0u8; HEADER_LEN];
    let mut have = 0;
    while have < HEADER_LEN {
        if !comm.is_connecting() {
            return Err(Error::failure("communicator closed during set-up"));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::timeout(format!(
                "{addr} did not accept this connection within {} ms (no matching accept?)",
                comm.hub.cfg.connect_timeout.as_millis()
            )));
        }
        s.set_read_timeout(Some((deadline - now).min(TICK))).ok();
        match (&*s).read(&mut buf[have..]) {
            Ok(0) => return Err(Error::failure(format!("{addr} closed stream {i} during the handshake"))),
            Ok(n) => have += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(Error::io(NRT_STATUS::NRT_FAILURE, &format!("handshake with {addr}"), &e)),
        }
    }
    Ok(buf)
}

/// One stream being set up.
struct Hs {
    sock: TcpStream,
    /// With a secret: this side's challenge (out while set-up runs) and the frames the proofs
    /// cover.
    auth: Option<(Issued, Transcript)>,
}

/// Why the accepting side's answer ends set-up (`f`: the frame read where another was due).
fn answer_error(addr: SocketAddr, have_secret: bool, f: std::result::Result<Frame, WireError>) -> Error {
    const SECRET: &str = "NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET";
    Error::failure(match f {
        Ok(Frame::Challenge { .. }) if !have_secret => format!("{addr} requires authentication: set {SECRET} (the same on both ends)"),
        Ok(Frame::HelloAck { status: ack::NO_AUTH, .. }) if have_secret => {
            format!("{addr} has no {SECRET}, and this side requires authentication; refused (set the same secret on both ends)")
        }
        Ok(Frame::HelloAck { status: ack::NO_AUTH, .. }) => format!("{addr} requires authentication: set {SECRET} (the same on both ends)"),
        Ok(Frame::HelloAck { status: ack::BAD_PROOF, .. }) => {
            format!("{addr} rejected this side's proof of the shared secret (a different {SECRET}?)")
        }
        Ok(Frame::HelloAck { status: ack::REFUSED, .. }) => {
            format!("{addr} refused the connection (wrong lnc, or its accept had already timed out)")
        }
        Err(WireError::BadVersion(v)) => {
            format!("{addr} speaks protocol version {v}, this side {VERSION}: both ends must run the same nrt-sendrecv release")
        }
        Ok(Frame::HelloAck { status: ack::BAD_VERSION, .. }) => {
            format!("{addr} speaks another protocol version than this side's {VERSION}: both ends must run the same nrt-sendrecv release")
        }
        Ok(f) => format!("{addr} answered the handshake with {f:?}"),
        Err(e) => format!("{addr}: bad handshake answer: {e}"),
    })
}

/// The transport of the accepting side's choice (`flags` of its HelloAck) among what this side
/// offered: shared memory (only with a peer on this kernel), the other transport offered, or TCP
/// where it declined, unless the setting requires what it declined.
fn taken(cfg: &crate::config::Config, addr: SocketAddr, offer: Offer, flags: u32, peer: Peer) -> Result<Chosen> {
    if flags & !offer.flags() != 0 {
        return Err(Error::failure(format!("{addr} chose a transport this side did not offer (HelloAck flags {flags:#x}); refused")));
    }
    if flags & FLAG_SHM != 0 {
        if !peer.same {
            return Err(Error::failure(format!("{addr} chose shared memory, but it is not on this host ({}); refused", not_here(peer))));
        }
        return Ok(Chosen::Shm);
    }
    if offer.other.flag() != 0 && flags & offer.other.flag() != 0 {
        return Ok(offer.other);
    }
    // Declined (or TCP was all there was): TCP, unless the setting requires another transport.
    let (what, setting) = match cfg.transport {
        Setting::Shm if !peer.same => {
            return Err(Error::failure(format!(
                "{addr}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm, but the peer is not on this host ({})",
                not_here(peer)
            )));
        }
        Setting::Shm => ("shared memory", "shm"),
        Setting::Verbs => ("RDMA verbs", "verbs"),
        Setting::Ofi => ("libfabric", "ofi"),
        Setting::Auto | Setting::Tcp => return Ok(Chosen::Tcp),
    };
    Err(Error::failure(format!("{addr} declined {what} (NEURON_RT_ASYNC_SENDRECV_TRANSPORT={setting} here)")))
}

/// The connecting side's set-up; runs on its own thread.
pub(super) fn connector(chooser: &Chooser, nonce: u64, comm: &Arc<Comm>, addr: SocketAddr) -> Result<()> {
    let cfg = &comm.hub.cfg;
    let (me, nstreams) = (comm.hub.id, cfg.streams);
    let secret = cfg.auth_secret.as_deref();
    let deadline = comm.setup_deadline;
    let mut streams: Vec<Hs> = Vec::with_capacity(nstreams);
    let mut offer = Offer { shm: false, other: Chosen::Tcp };
    let mine = super::kernel::tag(cfg, nonce);
    // Every stream starts with the congestion control for this host (set before `connect`: BBR,
    // once started, leaves a socket paced when replaced); one whose peer the handshake finds on
    // another kernel gets the system's (`Stream::new`). Without kernel tags, the address decides
    // before the handshake.
    let cc = crate::transport::tcp::congestion_for(cfg.boot_id || crate::sys::net::is_this_host(addr.ip()));
    for i in 0..nstreams {
        let s = connect_once(addr, deadline, comm, cc)?;
        if i == 0 {
            // Shared memory where the peer may be on this kernel, and the transport for a peer
            // elsewhere: verbs or libfabric when a device serves this connection, else TCP.
            offer = chooser.offer(cfg, comm, &s)?;
        }
        let hello = Frame::Hello {
            flags: offer.flags() | if secret.is_some() { FLAG_AUTH } else { 0 },
            stream: i as u16,
            nstreams: nstreams as u16,
            nonce,
            conn_seq: comm.pair_seq,
            src_lnc: me as u32,
            dst_lnc: comm.peer_lnc as u32,
            kernel: mine,
        }
        .encode();
        let mut out = hello.to_vec();
        let auth = match secret {
            None => None,
            Some(_) => {
                let local = s.local_addr().map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "local address of the connection", &e))?;
                let issued = Issued::new(local).map_err(|e| {
                    Error::io(NRT_STATUS::NRT_FAILURE, "no random numbers from the kernel (getrandom) for the authentication challenge", &e)
                })?;
                let challenge = Frame::Challenge { nonce: issued.0, instance: nonce, lnc: me as u32 }.encode();
                out.extend_from_slice(&challenge);
                Some((issued, Transcript { hello, conn_challenge: challenge, acc_challenge: [0; HEADER_LEN] }))
            }
        };
        s.set_write_timeout(Some(Duration::from_secs(1))).ok();
        (&s).write_all(&out).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("sending Hello to {addr}"), &e))?;
        streams.push(Hs { sock: s, auth });
    }
    // With a secret: each stream's Challenge from the accepting side, answered with this side's
    // proof (the accepting side answers every stream's Hello at once; the HelloAcks wait until
    // every stream has proved the secret, so all proofs go out before any HelloAck is read).
    if let Some(secret) = secret {
        for (i, hs) in streams.iter_mut().enumerate() {
            let buf = read_frame(comm, &hs.sock, deadline, addr, i)?;
            let Some((_, t)) = hs.auth.as_mut() else { return Err(Error::failure("internal: a stream without its challenge")) };
            match Frame::decode(&buf) {
                Ok(Frame::Challenge { nonce: theirs, lnc, .. }) => {
                    if issued_here(&theirs).is_some() {
                        return Err(Error::failure(format!(
                            "{addr} sent back a challenge of this process's own (a reflection, not a peer); refused"
                        )));
                    }
                    if lnc != comm.peer_lnc as u32 {
                        return Err(Error::failure(format!("{addr} answered as lnc {lnc}, not lnc {}; refused", comm.peer_lnc)));
                    }
                    t.acc_challenge = buf;
                    let mac = connecting_proof(secret, t);
                    (&hs.sock)
                        .write_all(&Frame::Proof { mac }.encode())
                        .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("sending the authentication proof to {addr}"), &e))?;
                }
                other => return Err(answer_error(addr, true, other)),
            }
        }
    }
    // The accepting side's answer: the transport it chose and its kernel tag (the same on every
    // stream).
    let mut answer: Option<(u32, u64)> = None;
    for (i, hs) in streams.iter().enumerate() {
        let buf = read_frame(comm, &hs.sock, deadline, addr, i)?;
        match Frame::decode(&buf) {
            Ok(Frame::HelloAck { status: ack::OK, nonce: n, conn_seq, flags, kernel }) if n == nonce && conn_seq == comm.pair_seq => {
                // With a secret, the accepting side's proof follows its HelloAck.
                if let (Some(secret), Some((_, t))) = (secret, &hs.auth) {
                    let proof = read_frame(comm, &hs.sock, deadline, addr, i)?;
                    let proved = matches!(Frame::decode(&proof), Ok(Frame::Proof { mac }) if accepting_proof_checks(secret, t, &buf, &mac));
                    if !proved {
                        return Err(Error::failure(format!(
                            "{addr} did not prove the shared secret (NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET) on stream {i}: \
                             not the peer asked for, or another secret; nothing was sent to it"
                        )));
                    }
                }
                match answer {
                    None => answer = Some((flags, kernel)),
                    Some(a) if a == (flags, kernel) => {}
                    Some(_) => return Err(Error::failure(format!("{addr} answered stream {i} otherwise than stream 0; refused"))),
                }
            }
            other => return Err(answer_error(addr, secret.is_some(), other)),
        }
    }
    let (flags, theirs) = answer.ok_or_else(|| Error::failure("internal: no stream"))?;
    let peer = Peer::of(mine, theirs, &streams[0].sock);
    let chosen = taken(cfg, addr, offer, flags, peer)?;
    chooser.announce(comm, &chosen);
    chooser.tell_kernel(comm, peer, &chosen);
    let mut ready = Vec::with_capacity(nstreams);
    for hs in streams {
        let s = hs.sock;
        s.set_read_timeout(None).ok();
        s.set_write_timeout(None).ok();
        ready.push(Stream::new(s, peer.same).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "socket options", &e))?);
    }
    comm.install(build(cfg, comm.kind, ready, chosen, comm.describe())?)?;
    crate::log_info!("{}: connected", comm.describe());
    Ok(())
}
