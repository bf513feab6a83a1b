//! The accepting side of set-up: sockets accepted by the lnc's listener say Hello (after
//! proving the shared secret, where one is set), are grouped by connection, and a complete
//! group is handed to the `accept` communicator with the same peer address, peer lnc and
//! sequence number (the k-th connect pairs with the k-th accept), whichever comes first.
//!
//! Everything a remote party can make this side log (one line per rejected connection) goes
//! through the lnc's rate limit (`log::Limiter`).

use super::auth::auth_mac;
use super::choice::{Chooser, build};
use crate::comm::{Comm, Hub};
use crate::log::Limiter;
use crate::status::{Error, NRT_STATUS};
use crate::sys::net::canonical;
use crate::sys::random::random_128;
use crate::transport::tcp::Stream;
use crate::wire::{Frame, HEADER_LEN, WireError, ack};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Handshake tokens in the lnc's epoll have this bit set (communicators' ids never do).
pub(super) const HS_BIT: u64 = 1 << 63;
/// Connections that have not finished their handshake, per lnc; more are closed at once.
pub const MAX_HALF_OPEN: usize = 1024;
/// How long an accepted socket may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the connect deadline an unmatched incoming connection is kept.
const GROUP_GRACE: Duration = Duration::from_secs(2);

struct Handshake {
    sock: TcpStream,
    peer: IpAddr,
    buf: [u8; HEADER_LEN],
    have: usize,
    deadline: Instant,
    /// Authentication: the Hello received and the challenge sent, while the Proof is awaited.
    challenged: Option<(Frame, [u8; HEADER_LEN], [u8; 16])>,
}

/// The streams of one incoming connection, collected until all have said Hello.
struct Group {
    streams: Vec<Option<TcpStream>>,
    /// What the connecting side offered (Hello flags; the same on every stream).
    flags: u32,
    deadline: Instant,
}

/// (peer address, peer lnc, peer's nonce, connection sequence)
type GroupKey = (IpAddr, i32, u64, u64);

#[derive(Default)]
struct AcceptState {
    next_hs: u64,
    handshakes: HashMap<u64, Handshake>,
    groups: HashMap<GroupKey, Group>,
    /// accept communicators still waiting for their connection: (peer, peer lnc, seq) → comm.
    waiting: HashMap<(IpAddr, i32, u64), Arc<Comm>>,
}

/// The lnc's accepting side.
pub(super) struct Acceptor {
    st: Mutex<AcceptState>,
    /// The rate limit of the warnings connecting parties cause.
    limit: Limiter,
}

impl Acceptor {
    pub fn new(lnc: i32) -> Acceptor {
        Acceptor { st: Mutex::new(AcceptState::default()), limit: Limiter::new(format!("lnc {lnc}"), "incoming connections") }
    }

    /// An `accept` communicator waits for its connection, which may already be here.
    pub fn wait_for(&self, hub: &Hub, chooser: &Chooser, comm: Arc<Comm>) {
        let (peer, peer_lnc, seq) = (comm.peer, comm.peer_lnc, comm.pair_seq);
        let mut st = self.st.lock();
        st.waiting.insert((peer, peer_lnc, seq), comm);
        let keys: Vec<GroupKey> = st.groups.keys().filter(|(p, l, _, s)| *p == peer && *l == peer_lnc && *s == seq).copied().collect();
        for k in keys {
            self.try_match(hub, chooser, &mut st, k);
        }
    }

    /// Connections accepted and still mid-handshake (bounded by `MAX_HALF_OPEN`).
    #[cfg(test)]
    pub fn half_open(&self) -> usize {
        self.st.lock().handshakes.len()
    }

    /// The lnc closes (the count of warnings left out is written).
    pub fn clear(&self) {
        let mut st = self.st.lock();
        st.handshakes.clear();
        st.groups.clear();
        st.waiting.clear();
        drop(st);
        self.limit.finish();
    }

    pub fn accept_sockets(&self, hub: &Hub, chooser: &Chooser, l: &TcpListener) {
        loop {
            match l.accept() {
                Ok((sock, addr)) => {
                    let mut st = self.st.lock();
                    if st.handshakes.len() >= MAX_HALF_OPEN {
                        crate::log_warn_limited!(
                            self.limit,
                            "lnc {}: {} connections mid-handshake; dropping one from {}",
                            hub.id,
                            MAX_HALF_OPEN,
                            addr
                        );
                        continue;
                    }
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    st.next_hs += 1;
                    let token = HS_BIT | st.next_hs;
                    if let Err(e) = hub.poller.watch(sock.as_raw_fd(), token, true) {
                        crate::log_warn_limited!(self.limit, "lnc {}: cannot watch connection from {addr}: {e}", hub.id);
                        continue;
                    }
                    let hs = Handshake {
                        sock,
                        peer: canonical(addr.ip()),
                        buf: [0; HEADER_LEN],
                        have: 0,
                        deadline: Instant::now() + HELLO_TIMEOUT,
                        challenged: None,
                    };
                    st.handshakes.insert(token, hs);
                    drop(st);
                    // Bytes may have arrived before the socket was watched.
                    self.ready(hub, chooser, token);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    crate::log_warn_limited!(self.limit, "lnc {}: accept failed: {e} (errno {})", hub.id, e.raw_os_error().unwrap_or(0));
                    return;
                }
            }
        }
    }

    /// Reads what a handshaking socket sent; a complete Hello joins its connection's group.
    pub fn ready(&self, hub: &Hub, chooser: &Chooser, token: u64) {
        let mut st = self.st.lock();
        let Some(hs) = st.handshakes.get_mut(&token) else { return };
        let res = loop {
            if hs.have == HEADER_LEN {
                break Frame::decode(&hs.buf).map(Some).map_err(Some);
            }
            match hs.sock.read(&mut hs.buf[hs.have..]) {
                Ok(0) => break Err(None),
                Ok(n) => {
                    hs.have += n;
                    // Fail fast on garbage instead of waiting for 40 bytes.
                    if let Err(WireError::BadMagic) = Frame::decode(&hs.buf[..hs.have]) {
                        break Err(Some(WireError::BadMagic));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break Err(None),
            }
        };
        let frame = match res {
            Ok(None) => return,
            Ok(Some(f)) => f,
            Err(why) => {
                let hs = st.handshakes.remove(&token).expect("present above");
                hub.poller.unwatch(hs.sock.as_raw_fd());
                match why {
                    Some(WireError::BadVersion(v)) => {
                        crate::log_warn_limited!(self.limit, "lnc {}: {} speaks protocol version {v}; refused", hub.id, hs.peer);
                        let _ = (&hs.sock).write(&Frame::HelloAck { status: ack::BAD_VERSION, nonce: 0, conn_seq: 0, flags: 0 }.encode());
                    }
                    Some(w) => crate::log_warn_limited!(self.limit, "lnc {}: connection from {} dropped: {w}", hub.id, hs.peer),
                    None => crate::log_debug!("lnc {}: connection from {} closed during handshake", hub.id, hs.peer),
                }
                return;
            }
        };
        // Authentication: a Hello is answered with a Challenge; the Proof must match.
        let frame = {
            let hs = st.handshakes.get_mut(&token).expect("present above");
            match (hs.challenged.take(), &hub.cfg.auth_secret, frame) {
                (None, Some(secret), hello @ Frame::Hello { .. }) => {
                    let challenge = match random_128() {
                        Ok(c) => c,
                        Err(e) => {
                            let hs = st.handshakes.remove(&token).expect("present above");
                            hub.poller.unwatch(hs.sock.as_raw_fd());
                            crate::log_warn_limited!(
                                self.limit,
                                "lnc {}: no random numbers from the kernel (getrandom) for the challenge to {}: {e} (errno {}); connection dropped",
                                hub.id,
                                hs.peer,
                                e.raw_os_error().unwrap_or(0)
                            );
                            return;
                        }
                    };
                    // 40 bytes into a fresh socket's empty send buffer: written whole.
                    if (&hs.sock).write_all(&Frame::Challenge { nonce: challenge }.encode()).is_err() {
                        let hs = st.handshakes.remove(&token).expect("present above");
                        hub.poller.unwatch(hs.sock.as_raw_fd());
                        return;
                    }
                    let _ = secret;
                    hs.challenged = Some((hello, hs.buf, challenge));
                    hs.have = 0;
                    drop(st);
                    // The Proof may already be waiting.
                    return self.ready(hub, chooser, token);
                }
                (Some((hello, hello_bytes, challenge)), Some(secret), Frame::Proof { mac }) => {
                    use hmac::Mac;
                    if auth_mac(secret, &challenge, &hello_bytes).verify_slice(&mac).is_err() {
                        let hs = st.handshakes.remove(&token).expect("present above");
                        hub.poller.unwatch(hs.sock.as_raw_fd());
                        crate::log_warn_limited!(
                            self.limit,
                            "lnc {}: connection from {} failed authentication (NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET); dropped",
                            hub.id,
                            hs.peer
                        );
                        return;
                    }
                    hello
                }
                (Some(_), _, f) => {
                    let hs = st.handshakes.remove(&token).expect("present above");
                    hub.poller.unwatch(hs.sock.as_raw_fd());
                    crate::log_warn_limited!(
                        self.limit,
                        "lnc {}: connection from {} sent {f:?} instead of its authentication proof; dropped",
                        hub.id,
                        hs.peer
                    );
                    return;
                }
                (None, _, f) => f,
            }
        };
        let hs = st.handshakes.remove(&token).expect("present above");
        hub.poller.unwatch(hs.sock.as_raw_fd());
        let Frame::Hello { stream, nstreams, nonce, conn_seq, src_lnc, dst_lnc, flags } = frame else {
            crate::log_warn_limited!(self.limit, "lnc {}: connection from {} sent {frame:?} instead of Hello; dropped", hub.id, hs.peer);
            return;
        };
        if dst_lnc != hub.id as u32 {
            crate::log_warn_limited!(self.limit, "lnc {}: {} lnc {src_lnc} asked for lnc {dst_lnc} on our port; refused", hub.id, hs.peer);
            let _ = (&hs.sock).write(&Frame::HelloAck { status: ack::REFUSED, nonce, conn_seq, flags: 0 }.encode());
            return;
        }
        let key = (hs.peer, src_lnc as i32, nonce, conn_seq);
        // Kept a little past the connect deadline, so that the connecting side, which counts from
        // its own connect call, reaches its deadline (TIMEOUT) before we close on it (FAILURE).
        let deadline = Instant::now() + hub.cfg.connect_timeout + GROUP_GRACE;
        let g = st.groups.entry(key).or_insert_with(|| Group { streams: (0..nstreams).map(|_| None).collect(), flags, deadline });
        if g.streams.len() != nstreams as usize || g.streams[stream as usize].is_some() || g.flags != flags {
            crate::log_warn_limited!(
                self.limit,
                "lnc {}: inconsistent Hello from {} lnc {src_lnc} (stream {stream}/{nstreams}); connection dropped",
                hub.id,
                hs.peer
            );
            st.groups.remove(&key);
            return;
        }
        g.streams[stream as usize] = Some(hs.sock);
        if g.streams.iter().all(Option::is_some) {
            self.try_match(hub, chooser, &mut st, key);
        }
    }

    /// Joins a complete group with its waiting accept communicator, if both exist.
    fn try_match(&self, hub: &Hub, chooser: &Chooser, st: &mut AcceptState, key: GroupKey) {
        let (peer, peer_lnc, nonce, seq) = key;
        if !st.groups.get(&key).is_some_and(|g| g.streams.iter().all(Option::is_some)) {
            return;
        }
        let Some(comm) = st.waiting.remove(&(peer, peer_lnc, seq)) else { return };
        let g = st.groups.remove(&key).expect("checked above");
        let socks: Vec<TcpStream> = g.streams.into_iter().map(|s| s.expect("complete group")).collect();
        let refused = Frame::HelloAck { status: ack::REFUSED, nonce, conn_seq: seq, flags: 0 }.encode();
        // Shared memory when both sides may, else verbs when both have a device, else TCP.
        let chosen = match chooser.choose(&hub.cfg, &comm, g.flags, &socks[0]) {
            Ok(c) => c,
            Err(e) => {
                for s in &socks {
                    let _ = (&*s).write(&refused);
                }
                comm.setup_failed(e);
                return;
            }
        };
        let flags = chosen.flag();
        let ok = Frame::HelloAck { status: ack::OK, nonce, conn_seq: seq, flags }.encode();
        if !comm.is_connecting() {
            crate::log_warn!("{}: connection arrived after set-up had already ended; refused", comm.describe());
            for s in &socks {
                let _ = (&*s).write(&refused);
            }
            return;
        }
        let mut streams = Vec::with_capacity(socks.len());
        for s in socks {
            // A 40-byte write into a fresh socket's empty buffer does not block.
            if let Err(e) = (&s).write_all(&ok) {
                comm.setup_failed(Error::io(NRT_STATUS::NRT_FAILURE, "sending HelloAck", &e));
                return;
            }
            match Stream::new(s) {
                Ok(st) => streams.push(st),
                Err(e) => {
                    comm.setup_failed(Error::io(NRT_STATUS::NRT_FAILURE, "socket options", &e));
                    return;
                }
            }
        }
        if let Err(e) = build(&hub.cfg, comm.kind, streams, chosen, comm.describe()).and_then(|t| comm.install(t)) {
            comm.setup_failed(e);
        } else {
            crate::log_info!("{}: connected", comm.describe());
        }
    }

    pub fn expire(&self, hub: &Hub) {
        let now = Instant::now();
        let mut st = self.st.lock();
        let before = st.handshakes.len();
        st.handshakes.retain(|_, hs| {
            let keep = hs.deadline > now;
            if !keep {
                hub.poller.unwatch(hs.sock.as_raw_fd());
            }
            keep
        });
        if st.handshakes.len() < before {
            crate::log_warn_limited!(
                self.limit,
                "lnc {}: {} connection(s) sent no Hello in time; dropped",
                hub.id,
                before - st.handshakes.len()
            );
        }
        st.groups.retain(|(peer, plnc, _, seq), g| {
            let keep = g.deadline > now;
            if !keep {
                crate::log_warn_limited!(
                    self.limit,
                    "lnc {}: connection #{seq} from {peer} lnc {plnc} matched no accept in time; dropped",
                    hub.id
                );
            }
            keep
        });
        st.waiting.retain(|_, c| c.is_connecting());
        drop(st);
        self.limit.tick();
    }
}
