//! The accepting side of set-up: sockets accepted by the lnc's listener say Hello (and, where a
//! shared secret is set, the two sides exchange challenges and the connecting side proves the
//! secret: auth.rs), are grouped by connection, and a complete group is handed to the `accept`
//! communicator with the same peer address, peer lnc and sequence number (the k-th connect
//! pairs with the k-th accept), whichever comes first. Each stream's HelloAck is then followed
//! by this side's proof of the secret.
//!
//! Everything a remote party can make this side log (one line per rejected connection) goes
//! through the lnc's rate limit (`log::Limiter`).

use super::auth::{Transcript, accepting_proof, connecting_proof_checks, issued_here};
use super::choice::{Chooser, build};
use super::kernel::Peer;
use crate::comm::{Comm, Hub};
use crate::log::Limiter;
use crate::status::{Error, NRT_STATUS};
use crate::sys::net::canonical;
use crate::sys::random::random_128;
use crate::transport::tcp::Stream;
use crate::wire::{FLAG_AUTH, Frame, HEADER_LEN, WireError, ack};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Handshake tokens in the lnc's epoll have this bit set (communicators' ids never do).
pub(super) const HS_BIT: u64 = 1 << 63;
/// Connections that have not finished their handshake, per lnc; more are closed at once.
pub const MAX_HALF_OPEN: usize = 1024;
/// How long an accepted socket may take to send its Hello (and, with a secret, its Challenge and
/// Proof).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How much longer than the connect deadline an unmatched incoming connection is kept.
const GROUP_GRACE: Duration = Duration::from_secs(2);

/// Where a stream's handshake stands.
enum Stage {
    /// Waiting for the Hello.
    Hello,
    /// The Hello said the connecting side holds a secret: waiting for its Challenge.
    PeerChallenge { hello: Frame, hello_bytes: [u8; HEADER_LEN] },
    /// This side's Challenge went out: waiting for the connecting side's Proof.
    Proof { hello: Frame, t: Transcript },
}

struct Handshake {
    sock: TcpStream,
    peer: IpAddr,
    buf: [u8; HEADER_LEN],
    have: usize,
    deadline: Instant,
    stage: Stage,
}

/// What one frame did to a handshake.
enum Step {
    /// Read on.
    More,
    /// The connection is dropped (logged).
    Drop,
    /// The Hello (and, with a secret, the proof) is in: the stream joins its connection.
    Joined(Frame, Option<Transcript>),
}

/// The streams of one incoming connection, collected until all have said Hello: each with the
/// frames this side's proof covers (with a secret).
struct Group {
    streams: Vec<Option<(TcpStream, Option<Transcript>)>>,
    /// What the connecting side offered (Hello flags; the same on every stream).
    flags: u32,
    /// The connecting side's kernel tag (the same on every stream).
    kernel: u64,
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
    /// The lnc's instance nonce (its Hellos' nonce), which its Challenges name.
    instance: u64,
    /// The rate limit of the warnings connecting parties cause.
    limit: Limiter,
}

/// Answers a Hello with a refusal (a HelloAck with `status`). What else the connecting side sent
/// (its Challenge) is read first: a socket closed with bytes unread sends a reset, which can
/// overtake the refusal.
fn refuse(sock: &TcpStream, status: u16, nonce: u64, conn_seq: u64) {
    let mut rest = [0u8; 2 * HEADER_LEN];
    let _ = (&*sock).read(&mut rest);
    let _ = (&*sock).write(&Frame::HelloAck { status, nonce, conn_seq, flags: 0, kernel: 0 }.encode());
}

fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    canonical(a.ip()) == canonical(b.ip()) && a.port() == b.port()
}

impl Acceptor {
    pub fn new(lnc: i32, instance: u64) -> Acceptor {
        Acceptor { st: Mutex::new(AcceptState::default()), instance, limit: Limiter::new(format!("lnc {lnc}"), "incoming connections") }
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
                        stage: Stage::Hello,
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

    /// Reads what a handshaking socket sent, frame by frame; a stream whose handshake is done
    /// joins its connection's group.
    pub fn ready(&self, hub: &Hub, chooser: &Chooser, token: u64) {
        let mut st = self.st.lock();
        loop {
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
            let step = match res {
                Ok(None) => return,
                Ok(Some(frame)) => {
                    hs.have = 0;
                    let bytes = hs.buf;
                    self.step(hub, hs, frame, bytes)
                }
                Err(why) => {
                    match why {
                        Some(WireError::BadVersion(v)) => {
                            crate::log_warn_limited!(
                                self.limit,
                                "lnc {}: {} speaks protocol version {v}, this lnc {}; refused",
                                hub.id,
                                hs.peer,
                                crate::wire::VERSION
                            );
                            let _ = (&hs.sock)
                                .write(&Frame::HelloAck { status: ack::BAD_VERSION, nonce: 0, conn_seq: 0, flags: 0, kernel: 0 }.encode());
                        }
                        Some(w) => crate::log_warn_limited!(self.limit, "lnc {}: connection from {} dropped: {w}", hub.id, hs.peer),
                        None => crate::log_debug!("lnc {}: connection from {} closed during handshake", hub.id, hs.peer),
                    }
                    Step::Drop
                }
            };
            match step {
                Step::More => continue,
                Step::Drop => {
                    let hs = st.handshakes.remove(&token).expect("present above");
                    hub.poller.unwatch(hs.sock.as_raw_fd());
                    return;
                }
                Step::Joined(hello, t) => {
                    let hs = st.handshakes.remove(&token).expect("present above");
                    hub.poller.unwatch(hs.sock.as_raw_fd());
                    self.join(hub, chooser, &mut st, hs, hello, t);
                    return;
                }
            }
        }
    }

    /// One frame of a stream's handshake.
    fn step(&self, hub: &Hub, hs: &mut Handshake, frame: Frame, bytes: [u8; HEADER_LEN]) -> Step {
        let secret = hub.cfg.auth_secret.as_deref();
        let (id, peer) = (hub.id, hs.peer);
        match (std::mem::replace(&mut hs.stage, Stage::Hello), frame) {
            (Stage::Hello, hello @ Frame::Hello { nonce, conn_seq, src_lnc, dst_lnc, flags, .. }) => {
                if dst_lnc != id as u32 {
                    crate::log_warn_limited!(self.limit, "lnc {id}: {peer} lnc {src_lnc} asked for lnc {dst_lnc} on our port; refused");
                    refuse(&hs.sock, ack::REFUSED, nonce, conn_seq);
                    return Step::Drop;
                }
                match (secret.is_some(), flags & FLAG_AUTH != 0) {
                    (true, true) => {
                        hs.stage = Stage::PeerChallenge { hello, hello_bytes: bytes };
                        Step::More
                    }
                    (false, false) => Step::Joined(hello, None),
                    (mine, _) => {
                        let why = if mine {
                            "has no authentication secret, and this lnc requires one"
                        } else {
                            "requires authentication, and this lnc has no NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET"
                        };
                        crate::log_warn_limited!(self.limit, "lnc {id}: connection from {peer} lnc {src_lnc} refused: it {why}");
                        refuse(&hs.sock, ack::NO_AUTH, nonce, conn_seq);
                        Step::Drop
                    }
                }
            }
            (Stage::PeerChallenge { hello, hello_bytes }, Frame::Challenge { nonce: theirs, instance, lnc }) => {
                let Frame::Hello { nonce, src_lnc, .. } = hello else { return Step::Drop };
                if instance != nonce || lnc != src_lnc {
                    crate::log_warn_limited!(
                        self.limit,
                        "lnc {id}: connection from {peer} lnc {src_lnc}: its Challenge contradicts its Hello; dropped"
                    );
                    return Step::Drop;
                }
                // A challenge of this process's own connecting side must come straight from the
                // stream it left on: from elsewhere, it was relayed back to us (auth.rs).
                if let Some(from) = issued_here(&theirs)
                    && !hs.sock.peer_addr().is_ok_and(|p| same_address(p, from))
                {
                    crate::log_warn_limited!(
                        self.limit,
                        "lnc {id}: connection from {peer} lnc {src_lnc} carries a challenge this process sent from {from}: relayed back to us; dropped"
                    );
                    return Step::Drop;
                }
                let mine = match random_128() {
                    Ok(c) => c,
                    Err(e) => {
                        crate::log_warn_limited!(
                            self.limit,
                            "lnc {id}: no random numbers from the kernel (getrandom) for the challenge to {peer} lnc {src_lnc}: {e} (errno {}); connection dropped",
                            e.raw_os_error().unwrap_or(0)
                        );
                        return Step::Drop;
                    }
                };
                let challenge = Frame::Challenge { nonce: mine, instance: self.instance, lnc: id as u32 }.encode();
                // 40 bytes into a fresh socket's send buffer: written whole.
                if (&hs.sock).write_all(&challenge).is_err() {
                    crate::log_debug!("lnc {id}: connection from {peer} closed during the handshake");
                    return Step::Drop;
                }
                hs.stage = Stage::Proof { hello, t: Transcript { hello: hello_bytes, conn_challenge: bytes, acc_challenge: challenge } };
                Step::More
            }
            (Stage::Proof { hello, t }, Frame::Proof { mac }) => {
                let Frame::Hello { nonce, conn_seq, src_lnc, .. } = hello else { return Step::Drop };
                if secret.is_some_and(|s| connecting_proof_checks(s, &t, &mac)) {
                    return Step::Joined(hello, Some(t));
                }
                crate::log_warn_limited!(
                    self.limit,
                    "lnc {id}: connection from {peer} lnc {src_lnc} failed authentication (its proof of NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET does not check); refused"
                );
                refuse(&hs.sock, ack::BAD_PROOF, nonce, conn_seq);
                Step::Drop
            }
            (stage, f) => {
                let wanted = match stage {
                    Stage::Hello => "Hello",
                    Stage::PeerChallenge { .. } => "its Challenge",
                    Stage::Proof { .. } => "its authentication proof",
                };
                crate::log_warn_limited!(self.limit, "lnc {id}: connection from {peer} sent {f:?} instead of {wanted}; dropped");
                Step::Drop
            }
        }
    }

    /// A stream whose handshake is done joins its connection's group; a complete group meets its
    /// accept communicator.
    fn join(&self, hub: &Hub, chooser: &Chooser, st: &mut AcceptState, hs: Handshake, hello: Frame, t: Option<Transcript>) {
        let Frame::Hello { stream, nstreams, nonce, conn_seq, src_lnc, flags, kernel, .. } = hello else { return };
        let key = (hs.peer, src_lnc as i32, nonce, conn_seq);
        // Kept a little past the connect deadline, so that the connecting side, which counts from
        // its own connect call, reaches its deadline (TIMEOUT) before we close on it (FAILURE).
        let deadline = Instant::now() + hub.cfg.connect_timeout + GROUP_GRACE;
        let g = st.groups.entry(key).or_insert_with(|| Group { streams: (0..nstreams).map(|_| None).collect(), flags, kernel, deadline });
        if g.streams.len() != nstreams as usize || g.streams[stream as usize].is_some() || g.flags != flags || g.kernel != kernel {
            crate::log_warn_limited!(
                self.limit,
                "lnc {}: inconsistent Hello from {} lnc {src_lnc} (stream {stream}/{nstreams}); connection dropped",
                hub.id,
                hs.peer
            );
            st.groups.remove(&key);
            return;
        }
        g.streams[stream as usize] = Some((hs.sock, t));
        if g.streams.iter().all(Option::is_some) {
            self.try_match(hub, chooser, st, key);
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
        let (socks, transcripts): (Vec<TcpStream>, Vec<Option<Transcript>>) = g.streams.into_iter().flatten().unzip();
        let refused = Frame::HelloAck { status: ack::REFUSED, nonce, conn_seq: seq, flags: 0, kernel: 0 }.encode();
        // Shared memory when both sides may and run on one kernel, else verbs when both have a
        // device, else TCP.
        let mine = super::kernel::tag(&hub.cfg, nonce);
        let peer = Peer::of(mine, g.kernel, &socks[0]);
        let chosen = match chooser.choose(&hub.cfg, &comm, g.flags, &socks[0], peer) {
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
        let ok = Frame::HelloAck { status: ack::OK, nonce, conn_seq: seq, flags, kernel: mine }.encode();
        if !comm.is_connecting() {
            crate::log_warn!("{}: connection arrived after set-up had already ended; refused", comm.describe());
            for s in &socks {
                let _ = (&*s).write(&refused);
            }
            return;
        }
        let mut streams = Vec::with_capacity(socks.len());
        for (s, t) in socks.into_iter().zip(transcripts) {
            // With a secret, this side's proof follows the HelloAck it covers.
            let mut out = ok.to_vec();
            if let (Some(t), Some(secret)) = (t, hub.cfg.auth_secret.as_deref()) {
                out.extend_from_slice(&Frame::Proof { mac: accepting_proof(secret, &t, &ok) }.encode());
            }
            // 80 bytes into a fresh socket's empty buffer: the write does not block.
            if let Err(e) = (&s).write_all(&out) {
                comm.setup_failed(Error::io(NRT_STATUS::NRT_FAILURE, "sending HelloAck", &e));
                return;
            }
            match Stream::new(s, peer.same) {
                Ok(st) => streams.push(st),
                Err(e) => {
                    comm.setup_failed(Error::io(NRT_STATUS::NRT_FAILURE, "socket options", &e));
                    return;
                }
            }
        }
        chooser.announce(&comm, &chosen);
        chooser.tell_kernel(&comm, peer, &chosen);
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
                "lnc {}: {} connection(s) did not finish their handshake in time; dropped",
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
