//! The connecting side of set-up, on a short-lived thread per connection: connects the
//! communicator's TCP streams (retrying while the peer is not listening yet), sends a Hello on
//! each (nonce, connection sequence, both lnc ids, stream index and count, the transports it
//! offers), proves the shared secret when challenged, and waits for one HelloAck per stream.

use super::auth::auth_mac;
use super::choice::{Chooser, Chosen, build};
use crate::comm::Comm;
use crate::config::Transport as Setting;
use crate::status::{Error, NRT_STATUS, Result};
use crate::transport::tcp::Stream;
use crate::wire::{FLAG_AUTH, FLAG_OFI, FLAG_SHM, FLAG_VERBS, Frame, HEADER_LEN, WireError, ack};
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

/// The connecting side's set-up; runs on its own thread.
pub(super) fn connector(chooser: &Chooser, nonce: u64, comm: &Arc<Comm>, addr: SocketAddr) -> Result<()> {
    let cfg = &comm.hub.cfg;
    let (me, nstreams) = (comm.hub.id, cfg.streams);
    let deadline = comm.setup_deadline;
    let mut socks = Vec::with_capacity(nstreams);
    let mut chosen = Chosen::Tcp;
    let cc = crate::transport::tcp::congestion_for(crate::sys::net::is_this_host(addr.ip()));
    for i in 0..nstreams {
        let s = connect_once(addr, deadline, comm, cc)?;
        if i == 0 {
            // Offer shared memory when the peer is on this host, else verbs when a device
            // serves the address this connection leaves from.
            chosen = chooser.choose(cfg, comm, FLAG_SHM | FLAG_VERBS | FLAG_OFI, &s)?;
        }
        let hello = Frame::Hello {
            flags: chosen.flag() | if cfg.auth_secret.is_some() { FLAG_AUTH } else { 0 },
            stream: i as u16,
            nstreams: nstreams as u16,
            nonce,
            conn_seq: comm.pair_seq,
            src_lnc: me as u32,
            dst_lnc: comm.peer_lnc as u32,
        };
        s.set_write_timeout(Some(Duration::from_secs(1))).ok();
        (&s).write_all(&hello.encode()).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("sending Hello to {addr}"), &e))?;
        socks.push((s, hello.encode()));
    }
    for (i, (s, hello_bytes)) in socks.iter().enumerate() {
        let mut buf = read_frame(comm, s, deadline, addr, i)?;
        if let Ok(Frame::Challenge { nonce: challenge }) = Frame::decode(&buf) {
            use hmac::Mac;
            let Some(secret) = &cfg.auth_secret else {
                return Err(Error::failure(format!("{addr} requires authentication: set NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET")));
            };
            let mut mac = [0u8; 32];
            mac.copy_from_slice(&auth_mac(secret, &challenge, hello_bytes).finalize().into_bytes());
            (&*s)
                .write_all(&Frame::Proof { mac }.encode())
                .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("sending the authentication proof to {addr}"), &e))?;
            buf = read_frame(comm, s, deadline, addr, i).map_err(|e| match e.status {
                NRT_STATUS::NRT_FAILURE => {
                    Error::failure(format!("{addr} rejected this side's authentication (different secret?): {}", e.msg))
                }
                _ => e,
            })?;
        }
        match Frame::decode(&buf) {
            Ok(Frame::HelloAck { status: ack::OK, nonce: n, conn_seq, flags }) if n == nonce && conn_seq == comm.pair_seq => {
                // The accepting side may decline what this side offered: TCP then, unless the
                // setting requires the offered transport.
                if flags & chosen.flag() == 0 && !matches!(chosen, Chosen::Tcp) {
                    let (what, required, setting) = match chosen {
                        Chosen::Shm => ("shared memory", Setting::Shm, "shm"),
                        Chosen::Verbs(_) => ("RDMA verbs", Setting::Verbs, "verbs"),
                        #[cfg(feature = "ofi")]
                        Chosen::Ofi(_) => ("libfabric", Setting::Ofi, "ofi"),
                        Chosen::Tcp => unreachable!("checked above"),
                    };
                    if cfg.transport == required {
                        return Err(Error::failure(format!("{addr} declined {what} (NEURON_RT_ASYNC_SENDRECV_TRANSPORT={setting} here)")));
                    }
                    chosen = Chosen::Tcp;
                    chooser.announce(comm, None);
                }
            }
            Ok(Frame::HelloAck { status: ack::REFUSED, .. }) => {
                return Err(Error::failure(format!("{addr} refused the connection (wrong lnc, or its accept had already timed out)")));
            }
            Ok(Frame::HelloAck { status: ack::BAD_VERSION, .. }) | Err(WireError::BadVersion(_)) => {
                return Err(Error::failure(format!("{addr} speaks another protocol version")));
            }
            Ok(f) => return Err(Error::failure(format!("{addr} answered the handshake with {f:?}"))),
            Err(e) => return Err(Error::failure(format!("{addr}: bad handshake answer: {e}"))),
        }
    }
    let mut streams = Vec::with_capacity(nstreams);
    for (s, _) in socks {
        s.set_read_timeout(None).ok();
        s.set_write_timeout(None).ok();
        streams.push(Stream::new(s).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "socket options", &e))?);
    }
    comm.install(build(cfg, comm.kind, streams, chosen, comm.describe())?)?;
    crate::log_info!("{}: connected", comm.describe());
    Ok(())
}
