//! One `Lnc` per initialised logical core: its listener, its progress thread, its handshakes.
//!
//! The progress thread waits on epoll and moves bytes for every communicator of the lnc; callers
//! of `test_*` move bytes too when they find the communicator idle. Tokens in epoll are comm ids
//! (bit 63 clear), handshake ids (bit 63 set), the listener and the wake-up eventfd.
//!
//! Set-up: the connecting side runs a short-lived thread that connects `streams` TCP sockets
//! (retrying while the peer is not listening yet), sends a Hello on each (nonce, connection
//! sequence, both lnc ids, stream index and count) and waits for one HelloAck per stream. The
//! accepting side reads Hellos on the progress thread, groups the streams of one connection, and
//! hands a complete group to the `accept` communicator with the same peer address, peer lnc and
//! sequence number (the k-th connect pairs with the k-th accept), whichever comes first.

use crate::comm::request::Kind;
use crate::comm::{COMMS, Comm};
use crate::config::{Config, Transport};
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::epoll::Poller;
use crate::sys::net::canonical;
use crate::sys::random::random_u64;
use crate::transport::tcp::Stream;
use crate::transport::{RdmaDevice, rdma_device_for};
use crate::wire::{FLAG_AUTH, FLAG_SHM, FLAG_VERBS, Frame, HEADER_LEN, WireError, ack};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_LISTENER: u64 = u64::MAX - 1;
const HS_BIT: u64 = 1 << 63;
/// Connections that have not finished their handshake, per lnc; more are closed at once.
pub const MAX_HALF_OPEN: usize = 1024;
/// How long an accepted socket may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);
/// The progress thread's tick while a communicator is parked (see `Comm::try_progress`).
const PARK_TICK: Duration = Duration::from_millis(1);
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

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// HMAC-SHA256(secret, challenge ‖ Hello frame bytes).
fn auth_mac(secret: &[u8], challenge: &[u8; 16], hello: &[u8; HEADER_LEN]) -> HmacSha256 {
    use hmac::Mac;
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(challenge);
    m.update(hello);
    m
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

#[derive(Default)]
struct Counters {
    connects: HashMap<(IpAddr, i32), u64>,
    accepts: HashMap<(IpAddr, i32), u64>,
}

/// Communicators whose Acks a spinning caller left queued when its receive completed (it is
/// usually about to answer, and its answer should not wait behind the Ack's `sendmsg`), process
/// wide: they go out after that caller's next send, as soon as any caller polls a request that
/// is still pending (it is waiting then, not answering: often for the very Ack of its peer that
/// is queued behind its own, as in an exchange where each side waits for its receive and then its
/// send), or at the next tick of any lnc's progress thread (`PARK_TICK`: such a caller's
/// communicator is parked).
static DEFERRED: Mutex<Vec<Arc<Comm>>> = Mutex::new(Vec::new());
static HAS_DEFERRED: AtomicBool = AtomicBool::new(false);

pub fn defer_acks(comm: Arc<Comm>) {
    let mut d = DEFERRED.lock();
    if !d.iter().any(|c| c.id == comm.id) {
        d.push(comm);
    }
    HAS_DEFERRED.store(true, Ordering::Release);
}

/// Sends deferred Acks (one atomic load when there are none). A communicator another thread
/// holds stays listed for the next call.
pub fn flush_deferred() {
    if !HAS_DEFERRED.load(Ordering::Acquire) {
        return;
    }
    let mut d = DEFERRED.lock();
    d.retain(|c| !c.flush_deferred());
    HAS_DEFERRED.store(!d.is_empty(), Ordering::Release);
}

pub struct Lnc {
    pub id: i32,
    pub cfg: Config,
    pub port: u16,
    nonce: u64,
    poller: Poller,
    stop: AtomicBool,
    listener: Mutex<Option<TcpListener>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Every communicator created since init (they count against the limit until close).
    comms: Mutex<Vec<Arc<Comm>>>,
    counters: Mutex<Counters>,
    accept: Mutex<AcceptState>,
    /// The transport last logged for this lnc.
    announced: Mutex<Option<String>>,
    /// Communicators whose spinning caller moves their bytes (sockets not watched meanwhile).
    parked: Mutex<Vec<Arc<Comm>>>,
    /// Communicators whose bytes the progress thread should move at its next turn, with no
    /// readiness event to tell it (`kick`).
    kicked: Mutex<Vec<Arc<Comm>>>,
    /// When a caller last tested a request of any TCP communicator of this lnc, or helped a
    /// parked one (`sys::clock::mono_ns`): parked communicators go back to the progress
    /// thread once every caller of the lnc has gone quiet (see `Comm::unpark_if_idle`).
    pub(crate) polled_at: AtomicU64,
    /// When a polling caller last moved the bytes of the lnc's quiet parked communicators
    /// (`help_parked`).
    helped_at: AtomicU64,
}

fn bind(cfg: &Config, port: u16) -> std::io::Result<TcpListener> {
    match cfg.listen_addr {
        Some(ip) => TcpListener::bind(SocketAddr::new(ip, port)),
        None => match TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
            // Dual stack unless IPv6 is off on this host.
            Err(e) if e.kind() != ErrorKind::AddrInUse => TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
            r => r,
        },
    }
}

impl Lnc {
    /// Binds the lnc's port and starts its progress thread.
    pub fn start(id: i32, cfg: Config) -> Result<Arc<Lnc>> {
        let port = cfg.port_of(id).ok_or_else(|| Error::invalid(format!("lnc {id}: port {} + {id} is beyond 65535", cfg.port_base)))?;
        let listener = bind(&cfg, port).map_err(|e| {
            let st = if e.kind() == ErrorKind::AddrInUse { NRT_STATUS::NRT_RESOURCE } else { NRT_STATUS::NRT_FAILURE };
            Error::io(st, &format!("lnc {id}: cannot listen on TCP port {port} (NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT + lnc)"), &e)
        })?;
        listener.set_nonblocking(true).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "listener nonblocking", &e))?;
        // Accepted connections start with the listener's congestion control: the one for a peer
        // on this host (`Stream::new` gives one from elsewhere the system's).
        if let Some(cc) = crate::transport::tcp::congestion_for(true) {
            crate::transport::tcp::set_congestion(socket2::SockRef::from(&listener), cc);
        }
        let poller = Poller::new(TOKEN_WAKE).map_err(|e| Error::io(NRT_STATUS::NRT_RESOURCE, "epoll/eventfd", &e))?;
        poller
            .watch_listener(listener.as_raw_fd(), TOKEN_LISTENER)
            .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "epoll add listener", &e))?;
        let lnc = Arc::new(Lnc {
            id,
            cfg,
            port,
            nonce: random_u64(),
            poller,
            stop: AtomicBool::new(false),
            listener: Mutex::new(Some(listener)),
            thread: Mutex::new(None),
            comms: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
            accept: Mutex::new(AcceptState::default()),
            announced: Mutex::new(None),
            parked: Mutex::new(Vec::new()),
            kicked: Mutex::new(Vec::new()),
            polled_at: AtomicU64::new(0),
            helped_at: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&lnc);
        let th = std::thread::Builder::new()
            .name(format!("nrt-sr-lnc{id}"))
            .spawn(move || {
                while let Some(l) = weak.upgrade() {
                    if l.stop.load(Ordering::Acquire) || !l.run_once() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::io(NRT_STATUS::NRT_RESOURCE, "spawn progress thread", &e))?;
        *lnc.thread.lock() = Some(th);
        crate::log_info!("lnc {id}: listening on TCP port {port} (transport setting {:?}; chosen per connection)", lnc.cfg.transport);
        Ok(lnc)
    }

    /// Pauses or resumes the progress thread's watch of a communicator socket.
    pub fn rearm(&self, fd: RawFd, comm_id: u64, armed: bool, input: bool) -> std::io::Result<()> {
        self.poller.rearm(fd, comm_id, armed, input)
    }

    /// A spinning caller took over `comm`'s sockets: the progress thread checks it every
    /// millisecond and watches them again when the caller stops.
    pub fn park(&self, comm: Arc<Comm>) {
        // A caller that works between requests parks and hands back once per message.
        self.list_once(&self.parked, comm);
    }

    /// The progress thread moves `comm`'s bytes at its next turn (woken now).
    pub fn kick(&self, comm: Arc<Comm>) {
        self.list_once(&self.kicked, comm);
    }

    /// Adds `comm` to one of the progress thread's lists unless it is there, and wakes it.
    fn list_once(&self, list: &Mutex<Vec<Arc<Comm>>>, comm: Arc<Comm>) {
        let mut l = list.lock();
        if !l.iter().any(|c| c.id == comm.id) {
            l.push(comm);
        }
        drop(l);
        self.poller.wake();
    }

    /// A caller polling `from` (one of this lnc's communicators, at `now`) also moves the bytes of
    /// the other parked communicators no caller polled for `PARK_IDLE_NS` (until
    /// `PARK_NEGLECT_NS`), at most once per `PARK_TICK`: a caller cycling through many
    /// communicators keeps them all going between its visits, and the progress thread, which
    /// would contend with it for the CPUs and the locks, stays out of it.
    pub fn help_parked(&self, from: u64, now: u64) {
        let prev = self.helped_at.load(Ordering::Relaxed);
        if now.saturating_sub(prev) < PARK_TICK.as_nanos() as u64
            || self.helped_at.compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let quiet: Vec<Arc<Comm>> = match self.parked.try_lock() {
            Some(p) => p.iter().filter(|c| c.id != from && c.quiet(now)).cloned().collect(),
            None => return,
        };
        for c in quiet {
            // Helping is a caller's work too (it can take a while, many communicators' bytes).
            self.polled_at.store(crate::sys::clock::mono_ns(), Ordering::Relaxed);
            c.help();
        }
    }

    /// Registers a communicator socket with the progress thread.
    pub fn watch(&self, fd: RawFd, comm_id: u64, input: bool) -> std::io::Result<()> {
        self.poller.watch(fd, comm_id, input)
    }

    /// One turn of the progress loop; false when the thread should end.
    fn run_once(self: &Arc<Self>) -> bool {
        let mut tokens = Vec::with_capacity(128);
        let tick = if self.parked.lock().is_empty() { TICK } else { PARK_TICK };
        if let Err(e) = self.poller.wait(&mut tokens, tick) {
            crate::log_error!("lnc {}: epoll_wait failed, progress thread stops: {e}", self.id);
            return false;
        }
        for t in tokens {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            match t {
                TOKEN_WAKE => self.poller.drain_wake(),
                TOKEN_LISTENER => self.accept_sockets(),
                t if t & HS_BIT != 0 => self.handshake_ready(t),
                id => {
                    if let Some(c) = COMMS.get(id) {
                        c.progress();
                    }
                }
            }
        }
        for c in std::mem::take(&mut *self.kicked.lock()) {
            c.progress();
        }
        flush_deferred();
        self.unpark();
        self.expire();
        true
    }

    fn unpark(&self) {
        let parked = std::mem::take(&mut *self.parked.lock());
        if parked.is_empty() {
            return;
        }
        let now = crate::sys::clock::mono_ns();
        let keep: Vec<Arc<Comm>> = parked.into_iter().filter(|c| !c.unpark_if_idle(now)).collect();
        self.parked.lock().extend(keep);
    }

    fn accept_sockets(&self) {
        let listener = self.listener.lock();
        let Some(l) = listener.as_ref() else { return };
        loop {
            match l.accept() {
                Ok((sock, addr)) => {
                    let mut st = self.accept.lock();
                    if st.handshakes.len() >= MAX_HALF_OPEN {
                        crate::log_warn!("lnc {}: {} connections mid-handshake; dropping one from {}", self.id, MAX_HALF_OPEN, addr);
                        continue;
                    }
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    st.next_hs += 1;
                    let token = HS_BIT | st.next_hs;
                    if let Err(e) = self.poller.watch(sock.as_raw_fd(), token, true) {
                        crate::log_warn!("lnc {}: cannot watch connection from {addr}: {e}", self.id);
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
                    self.handshake_ready(token);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    crate::log_warn!("lnc {}: accept failed: {e} (errno {})", self.id, e.raw_os_error().unwrap_or(0));
                    return;
                }
            }
        }
    }

    /// Reads what a handshaking socket sent; a complete Hello joins its connection's group.
    fn handshake_ready(&self, token: u64) {
        let mut st = self.accept.lock();
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
                self.poller.unwatch(hs.sock.as_raw_fd());
                match why {
                    Some(WireError::BadVersion(v)) => {
                        crate::log_warn!("lnc {}: {} speaks protocol version {v}; refused", self.id, hs.peer);
                        let _ = (&hs.sock).write(&Frame::HelloAck { status: ack::BAD_VERSION, nonce: 0, conn_seq: 0, flags: 0 }.encode());
                    }
                    Some(w) => crate::log_warn!("lnc {}: connection from {} dropped: {w}", self.id, hs.peer),
                    None => crate::log_debug!("lnc {}: connection from {} closed during handshake", self.id, hs.peer),
                }
                return;
            }
        };
        // Authentication: a Hello is answered with a Challenge; the Proof must match.
        let frame = {
            let hs = st.handshakes.get_mut(&token).expect("present above");
            match (hs.challenged.take(), &self.cfg.auth_secret, frame) {
                (None, Some(secret), hello @ Frame::Hello { .. }) => {
                    let mut challenge = [0u8; 16];
                    challenge[..8].copy_from_slice(&random_u64().to_le_bytes());
                    challenge[8..].copy_from_slice(&random_u64().to_le_bytes());
                    // 40 bytes into a fresh socket's empty send buffer: written whole.
                    if (&hs.sock).write_all(&Frame::Challenge { nonce: challenge }.encode()).is_err() {
                        let hs = st.handshakes.remove(&token).expect("present above");
                        self.poller.unwatch(hs.sock.as_raw_fd());
                        return;
                    }
                    let _ = secret;
                    hs.challenged = Some((hello, hs.buf, challenge));
                    hs.have = 0;
                    drop(st);
                    // The Proof may already be waiting.
                    return self.handshake_ready(token);
                }
                (Some((hello, hello_bytes, challenge)), Some(secret), Frame::Proof { mac }) => {
                    use hmac::Mac;
                    if auth_mac(secret, &challenge, &hello_bytes).verify_slice(&mac).is_err() {
                        let hs = st.handshakes.remove(&token).expect("present above");
                        self.poller.unwatch(hs.sock.as_raw_fd());
                        crate::log_warn!(
                            "lnc {}: connection from {} failed authentication (NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET); dropped",
                            self.id,
                            hs.peer
                        );
                        return;
                    }
                    hello
                }
                (Some(_), _, f) => {
                    let hs = st.handshakes.remove(&token).expect("present above");
                    self.poller.unwatch(hs.sock.as_raw_fd());
                    crate::log_warn!(
                        "lnc {}: connection from {} sent {f:?} instead of its authentication proof; dropped",
                        self.id,
                        hs.peer
                    );
                    return;
                }
                (None, _, f) => f,
            }
        };
        let hs = st.handshakes.remove(&token).expect("present above");
        self.poller.unwatch(hs.sock.as_raw_fd());
        let Frame::Hello { stream, nstreams, nonce, conn_seq, src_lnc, dst_lnc, flags } = frame else {
            crate::log_warn!("lnc {}: connection from {} sent {frame:?} instead of Hello; dropped", self.id, hs.peer);
            return;
        };
        if dst_lnc != self.id as u32 {
            crate::log_warn!("lnc {}: {} lnc {src_lnc} asked for lnc {dst_lnc} on our port; refused", self.id, hs.peer);
            let _ = (&hs.sock).write(&Frame::HelloAck { status: ack::REFUSED, nonce, conn_seq, flags: 0 }.encode());
            return;
        }
        let key = (hs.peer, src_lnc as i32, nonce, conn_seq);
        // Kept a little past the connect deadline, so that the connecting side, which counts from
        // its own connect call, reaches its deadline (TIMEOUT) before we close on it (FAILURE).
        let deadline = Instant::now() + self.cfg.connect_timeout + GROUP_GRACE;
        let g = st.groups.entry(key).or_insert_with(|| Group { streams: (0..nstreams).map(|_| None).collect(), flags, deadline });
        if g.streams.len() != nstreams as usize || g.streams[stream as usize].is_some() || g.flags != flags {
            crate::log_warn!(
                "lnc {}: inconsistent Hello from {} lnc {src_lnc} (stream {stream}/{nstreams}); connection dropped",
                self.id,
                hs.peer
            );
            st.groups.remove(&key);
            return;
        }
        g.streams[stream as usize] = Some(hs.sock);
        if g.streams.iter().all(Option::is_some) {
            self.try_match(&mut st, key);
        }
    }

    /// Joins a complete group with its waiting accept communicator, if both exist.
    fn try_match(&self, st: &mut AcceptState, key: GroupKey) {
        let (peer, peer_lnc, nonce, seq) = key;
        if !st.groups.get(&key).is_some_and(|g| g.streams.iter().all(Option::is_some)) {
            return;
        }
        let Some(comm) = st.waiting.remove(&(peer, peer_lnc, seq)) else { return };
        let g = st.groups.remove(&key).expect("checked above");
        let socks: Vec<TcpStream> = g.streams.into_iter().map(|s| s.expect("complete group")).collect();
        let refused = Frame::HelloAck { status: ack::REFUSED, nonce, conn_seq: seq, flags: 0 }.encode();
        // Shared memory when both sides may, else verbs when both have a device, else TCP.
        let chosen = self.choose_shm(&comm, g.flags & FLAG_SHM != 0, &socks[0]).and_then(|shm| {
            if shm { Ok((true, None)) } else { self.choose_rdma(&comm, g.flags & FLAG_VERBS != 0, &socks[0]).map(|d| (false, d)) }
        });
        let (shm, dev) = match chosen {
            Ok(c) => c,
            Err(e) => {
                for s in &socks {
                    let _ = (&*s).write(&refused);
                }
                comm.setup_failed(e);
                return;
            }
        };
        let flags = if shm {
            FLAG_SHM
        } else if dev.is_some() {
            FLAG_VERBS
        } else {
            0
        };
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
        if let Err(e) = comm.install(streams, dev, shm) {
            comm.setup_failed(e);
        } else {
            crate::log_info!("{}: connected", comm.describe());
        }
    }

    /// Whether a connection may use shared memory: the transport setting allows it and the peer
    /// is on this host (a loopback address, or the connection's own local address). With
    /// `NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm`, an error when it may not. `peer_offers`: the
    /// connecting side's Hello carried the flag (the connecting side itself passes true).
    fn choose_shm(&self, comm: &Comm, peer_offers: bool, sock: &TcpStream) -> Result<bool> {
        let wanted = matches!(self.cfg.transport, Transport::Auto | Transport::Shm) && !cfg!(feature = "preload");
        if !wanted {
            return Ok(false);
        }
        let local = crate::sys::net::on_this_host(sock);
        let ok = local && peer_offers;
        if self.cfg.transport == Transport::Shm && !ok {
            let why = if local { "the peer does not offer shared memory" } else { "the peer is not on this host" };
            return Err(Error::failure(format!("{}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm, but {why}", comm.describe())));
        }
        if ok {
            self.announce_what(comm, "shm (same-host shared memory)".into());
        }
        Ok(ok)
    }

    /// The RDMA device for a communicator whose first stream is `sock`, per the transport
    /// setting: `None` for TCP; an error when verbs is required but impossible.
    fn choose_rdma(&self, comm: &Comm, peer_offers: bool, sock: &TcpStream) -> Result<Option<Arc<RdmaDevice>>> {
        let local = sock.local_addr().map(|a| canonical(a.ip()));
        let dev = match (self.cfg.transport, &local) {
            (Transport::Tcp, _) => None,
            (_, Ok(ip)) => match rdma_device_for(*ip) {
                Ok(d) => d,
                Err(e) if self.cfg.transport == Transport::Verbs => return Err(e),
                Err(e) => {
                    crate::log_warn!("{}: RDMA device lookup failed, using TCP: {e}", comm.describe());
                    None
                }
            },
            (_, Err(e)) => return Err(Error::io(NRT_STATUS::NRT_FAILURE, "local address of the connection", e)),
        };
        let dev = if peer_offers { dev } else { None };
        if self.cfg.transport == Transport::Verbs && dev.is_none() {
            let why = if peer_offers { "no RDMA device here serves" } else { "the peer offers no RDMA for" };
            return Err(Error::failure(format!(
                "{}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=verbs, but {why} local address {}",
                comm.describe(),
                local.map(|a| a.to_string()).unwrap_or_default()
            )));
        }
        self.announce(comm, dev.as_deref());
        Ok(dev)
    }

    /// Logs the transport of the lnc's first communicator, and every later change.
    fn announce(&self, comm: &Comm, dev: Option<&RdmaDevice>) {
        #[cfg(feature = "verbs")]
        let what = dev.map(|d| format!("verbs on {d}")).unwrap_or_else(|| "tcp".into());
        #[cfg(not(feature = "verbs"))]
        let what = {
            let _ = dev;
            "tcp".to_string()
        };
        self.announce_what(comm, what);
    }

    fn announce_what(&self, comm: &Comm, what: String) {
        let mut last = self.announced.lock();
        if last.as_deref() != Some(what.as_str()) {
            crate::log_info!("lnc {}: transport {what} (first used by {})", self.id, comm.describe());
            *last = Some(what);
        }
    }

    fn expire(&self) {
        let now = Instant::now();
        let mut st = self.accept.lock();
        let before = st.handshakes.len();
        st.handshakes.retain(|_, hs| {
            let keep = hs.deadline > now;
            if !keep {
                self.poller.unwatch(hs.sock.as_raw_fd());
            }
            keep
        });
        if st.handshakes.len() < before {
            crate::log_warn!("lnc {}: {} connection(s) sent no Hello in time; dropped", self.id, before - st.handshakes.len());
        }
        st.groups.retain(|(peer, plnc, _, seq), g| {
            let keep = g.deadline > now;
            if !keep {
                crate::log_warn!("lnc {}: connection #{seq} from {peer} lnc {plnc} matched no accept in time; dropped", self.id);
            }
            keep
        });
        st.waiting.retain(|_, c| c.is_connecting());
    }

    fn add_comm(self: &Arc<Self>, kind: Kind, peer: IpAddr, peer_lnc: i32) -> Result<Arc<Comm>> {
        let mut comms = self.comms.lock();
        if comms.len() >= crate::config::MAX_COMMS_PER_LNC {
            return Err(Error::resource(format!(
                "lnc {}: {} communicators already (the limit per lnc)",
                self.id,
                crate::config::MAX_COMMS_PER_LNC
            )));
        }
        let seq = {
            let mut c = self.counters.lock();
            let m = if kind == Kind::Send { &mut c.connects } else { &mut c.accepts };
            let n = m.entry((peer, peer_lnc)).or_insert(0);
            *n += 1;
            *n - 1
        };
        let lnc = self.clone();
        let reqs = crate::comm::request::REQUESTS.new_block().ok_or_else(|| Error::resource("request table full"))?;
        let (_, comm) = COMMS
            .insert_with(|id| Arc::new(Comm::new(id, lnc, kind, peer, peer_lnc, seq, reqs)))
            .ok_or_else(|| Error::resource("communicator table full"))?;
        comms.push(comm.clone());
        Ok(comm)
    }

    /// `nrt_async_sendrecv_connect`: returns at once; a thread does the set-up.
    pub fn connect(self: &Arc<Self>, peer: IpAddr, peer_lnc: i32) -> Result<Arc<Comm>> {
        let peer = canonical(peer);
        let port = self.cfg.port_of(peer_lnc).ok_or_else(|| Error::invalid(format!("peer lnc {peer_lnc}: port beyond 65535")))?;
        let comm = self.add_comm(Kind::Send, peer, peer_lnc)?;
        let c = comm.clone();
        let lnc = self.clone();
        let spawned = std::thread::Builder::new().name(format!("nrt-sr-conn{}", self.id)).spawn(move || {
            if let Err(e) = connector(&lnc, &c, SocketAddr::new(peer, port)) {
                c.setup_failed(e);
            }
        });
        if let Err(e) = spawned {
            comm.setup_failed(Error::io(NRT_STATUS::NRT_RESOURCE, "spawn connect thread", &e));
        }
        Ok(comm)
    }

    /// `nrt_async_sendrecv_accept`: registers the communicator; the connection may already wait.
    pub fn accept(self: &Arc<Self>, peer: IpAddr, peer_lnc: i32) -> Result<Arc<Comm>> {
        let peer = canonical(peer);
        let comm = self.add_comm(Kind::Recv, peer, peer_lnc)?;
        let mut st = self.accept.lock();
        st.waiting.insert((peer, peer_lnc, comm.pair_seq), comm.clone());
        let keys: Vec<GroupKey> =
            st.groups.keys().filter(|(p, l, _, s)| *p == peer && *l == peer_lnc && *s == comm.pair_seq).copied().collect();
        for k in keys {
            self.try_match(&mut st, k);
        }
        Ok(comm)
    }

    /// Stops the progress thread and shuts every communicator. Returns the communicators.
    pub fn shutdown(&self) -> Vec<Arc<Comm>> {
        self.stop.store(true, Ordering::Release);
        self.poller.wake();
        let th = self.thread.lock().take();
        if let Some(th) = th
            && th.thread().id() != std::thread::current().id()
        {
            let _ = th.join();
        }
        *self.listener.lock() = None;
        self.parked.lock().clear();
        self.kicked.lock().clear();
        DEFERRED.lock().retain(|c| {
            if std::ptr::eq(&*c.lnc, self) {
                c.flush_deferred();
                return false;
            }
            true
        });
        {
            let mut st = self.accept.lock();
            st.handshakes.clear();
            st.groups.clear();
            st.waiting.clear();
        }
        let comms = std::mem::take(&mut *self.comms.lock());
        for c in &comms {
            c.shut();
        }
        comms
    }

    /// Connections accepted and still mid-handshake (bounded by `MAX_HALF_OPEN`).
    pub fn half_open(&self) -> usize {
        self.accept.lock().handshakes.len()
    }

    /// The congestion control the listener gives the connections it accepts.
    #[cfg(test)]
    pub fn listener_congestion(&self) -> String {
        let l = self.listener.lock();
        l.as_ref().map(|l| crate::transport::tcp::congestion_name(&socket2::SockRef::from(l))).unwrap_or_default()
    }

    /// Every live communicator of this lnc, for flush.
    pub fn comms(&self) -> Vec<Arc<Comm>> {
        self.comms.lock().clone()
    }
}

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
            return Err(Error::timeout(format!("no connection to {addr} within {} ms{why}", comm.lnc.cfg.connect_timeout.as_millis())));
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
                comm.lnc.cfg.connect_timeout.as_millis()
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
fn connector(lnc: &Lnc, comm: &Arc<Comm>, addr: SocketAddr) -> Result<()> {
    let (me, nonce, nstreams) = (lnc.id, lnc.nonce, lnc.cfg.streams);
    let deadline = comm.setup_deadline;
    let mut socks = Vec::with_capacity(nstreams);
    let mut dev = None;
    let mut shm = false;
    let cc = crate::transport::tcp::congestion_for(crate::sys::net::is_this_host(addr.ip()));
    for i in 0..nstreams {
        let s = connect_once(addr, deadline, comm, cc)?;
        if i == 0 {
            // Offer shared memory when the peer is on this host, else verbs when a device
            // serves the address this connection leaves from.
            shm = lnc.choose_shm(comm, true, &s)?;
            if !shm {
                dev = lnc.choose_rdma(comm, true, &s)?;
            }
        }
        let hello = Frame::Hello {
            flags: if dev.is_some() { FLAG_VERBS } else { 0 }
                | if shm { FLAG_SHM } else { 0 }
                | if lnc.cfg.auth_secret.is_some() { FLAG_AUTH } else { 0 },
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
            let Some(secret) = &lnc.cfg.auth_secret else {
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
                if flags & FLAG_SHM == 0 && shm {
                    if lnc.cfg.transport == Transport::Shm {
                        return Err(Error::failure(format!("{addr} declined shared memory (NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm here)")));
                    }
                    shm = false;
                    lnc.announce(comm, None);
                }
                if flags & FLAG_VERBS == 0 && dev.is_some() {
                    if lnc.cfg.transport == Transport::Verbs {
                        return Err(Error::failure(format!("{addr} declined RDMA verbs (NEURON_RT_ASYNC_SENDRECV_TRANSPORT=verbs here)")));
                    }
                    dev = None;
                    lnc.announce(comm, None);
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
    comm.install(streams, dev, shm)?;
    crate::log_info!("{}: connected", comm.describe());
    Ok(())
}
