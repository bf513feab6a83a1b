//! One `Lnc` per initialised logical core: its listener, its progress thread, its handshakes,
//! and the choice of each connection's transport.
//!
//! The progress thread waits on epoll and moves bytes for every communicator of the lnc; callers
//! of `test_*` move bytes too when they find the communicator idle. Tokens in epoll are comm ids
//! (bit 63 clear), handshake ids (bit 63 set), the listener and the wake-up eventfd.
//!
//! Set-up: the connecting side runs a short-lived thread (`connector.rs`); the accepting side
//! reads Hellos on the progress thread (`accept.rs`); both choose the transport the same way
//! (`choice.rs`) and hand it to the communicator.

mod accept;
mod auth;
mod choice;
mod connector;
mod kernel;

#[cfg(test)]
pub use accept::MAX_HALF_OPEN;
/// The proofs of the secret, for tests that play a peer (runtime/auth_tests.rs).
#[cfg(test)]
pub(crate) use auth::{Transcript, accepting_proof, connecting_proof};
/// This kernel's tag, for tests that play a peer (runtime/kernel_tests.rs).
#[cfg(test)]
pub(crate) use kernel::tag as kernel_tag;

use crate::comm::request::Kind;
use crate::comm::{COMMS, Comm, Hub, REQUESTS};
use crate::config::Config;
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::epoll::Poller;
use crate::sys::net::canonical;
use crate::sys::random::random_u64;
use accept::{Acceptor, HS_BIT};
use choice::Chooser;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

const TOKEN_WAKE: u64 = u64::MAX;
const TOKEN_LISTENER: u64 = u64::MAX - 1;
#[derive(Default)]
struct Counters {
    connects: HashMap<(IpAddr, i32), u64>,
    accepts: HashMap<(IpAddr, i32), u64>,
}

pub struct Lnc {
    pub id: i32,
    /// What the lnc's communicators share with its progress thread (epoll, configuration).
    pub hub: Arc<Hub>,
    nonce: u64,
    stop: AtomicBool,
    listener: Mutex<Option<TcpListener>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Every communicator created since init (they count against the limit until close).
    comms: Mutex<Vec<Arc<Comm>>>,
    counters: Mutex<Counters>,
    acceptor: Acceptor,
    chooser: Chooser,
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
        // The lnc's instance nonce: its Hellos and Challenges name it, and it keys its
        // connections' groups at the peer.
        let nonce = random_u64()
            .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, &format!("lnc {id}: no random numbers from the kernel (getrandom)"), &e))?;
        let listener = bind(&cfg, port).map_err(|e| {
            let st = if e.kind() == ErrorKind::AddrInUse { NRT_STATUS::NRT_RESOURCE } else { NRT_STATUS::NRT_FAILURE };
            Error::io(st, &format!("lnc {id}: cannot listen on TCP port {port} (NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT + lnc)"), &e)
        })?;
        listener.set_nonblocking(true).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "listener nonblocking", &e))?;
        // Accepted connections start with the listener's congestion control: the one for a peer
        // on this host (`Stream::new` gives one the handshake finds elsewhere the system's).
        if let Some(cc) = crate::transport::tcp::congestion_for(true) {
            crate::transport::tcp::set_congestion(socket2::SockRef::from(&listener), cc);
        }
        let poller = Poller::new(TOKEN_WAKE).map_err(|e| Error::io(NRT_STATUS::NRT_RESOURCE, "epoll/eventfd", &e))?;
        poller
            .watch_listener(listener.as_raw_fd(), TOKEN_LISTENER)
            .map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "epoll add listener", &e))?;
        let setting = cfg.transport;
        let lnc = Arc::new(Lnc {
            id,
            hub: Arc::new(Hub::new(id, cfg, poller)),
            nonce,
            stop: AtomicBool::new(false),
            listener: Mutex::new(Some(listener)),
            thread: Mutex::new(None),
            comms: Mutex::new(Vec::new()),
            counters: Mutex::new(Counters::default()),
            acceptor: Acceptor::new(id, nonce),
            chooser: Chooser::default(),
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
        crate::log_info!("lnc {id}: listening on TCP port {port} (transport setting {setting:?}; chosen per connection)");
        Ok(lnc)
    }

    pub fn cfg(&self) -> &Config {
        &self.hub.cfg
    }

    /// One turn of the progress loop; false when the thread should end.
    fn run_once(self: &Arc<Self>) -> bool {
        let mut tokens = Vec::with_capacity(128);
        let hub = &*self.hub;
        if let Err(e) = hub.poller.wait(&mut tokens, hub.sleep()) {
            crate::log_error!("lnc {}: epoll_wait failed, progress thread stops: {e}", self.id);
            return false;
        }
        for t in tokens {
            if self.stop.load(Ordering::Acquire) {
                return false;
            }
            match t {
                TOKEN_WAKE => hub.poller.drain_wake(),
                TOKEN_LISTENER => {
                    if let Some(l) = self.listener.lock().as_ref() {
                        self.acceptor.accept_sockets(hub, &self.chooser, l);
                    }
                }
                t if t & HS_BIT != 0 => self.acceptor.ready(hub, &self.chooser, t),
                id => {
                    if let Some(c) = COMMS.get(id) {
                        c.progress();
                    }
                }
            }
        }
        hub.tend();
        crate::comm::flush_deferred();
        self.acceptor.expire(hub);
        true
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
        let hub = self.hub.clone();
        let reqs = REQUESTS.new_block().ok_or_else(|| Error::resource("request table full"))?;
        let (_, comm) = COMMS
            .insert_with(|id| Arc::new(Comm::new(id, hub, kind, peer, peer_lnc, seq, reqs)))
            .ok_or_else(|| Error::resource("communicator table full"))?;
        comms.push(comm.clone());
        Ok(comm)
    }

    /// `nrt_async_sendrecv_connect`: returns at once; a thread does the set-up.
    pub fn connect(self: &Arc<Self>, peer: IpAddr, peer_lnc: i32) -> Result<Arc<Comm>> {
        let peer = canonical(peer);
        let port = self.cfg().port_of(peer_lnc).ok_or_else(|| Error::invalid(format!("peer lnc {peer_lnc}: port beyond 65535")))?;
        let comm = self.add_comm(Kind::Send, peer, peer_lnc)?;
        let c = comm.clone();
        let lnc = self.clone();
        let spawned = std::thread::Builder::new().name(format!("nrt-sr-conn{}", self.id)).spawn(move || {
            if let Err(e) = connector::connector(&lnc.chooser, lnc.nonce, &c, SocketAddr::new(peer, port)) {
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
        self.acceptor.wait_for(&self.hub, &self.chooser, comm.clone());
        Ok(comm)
    }

    /// Stops the progress thread and shuts every communicator. Returns the communicators.
    pub fn shutdown(&self) -> Vec<Arc<Comm>> {
        self.stop.store(true, Ordering::Release);
        self.hub.poller.wake();
        let th = self.thread.lock().take();
        if let Some(th) = th
            && th.thread().id() != std::thread::current().id()
        {
            let _ = th.join();
        }
        *self.listener.lock() = None;
        self.hub.clear();
        crate::comm::forget_deferred(&self.hub);
        self.acceptor.clear();
        let comms = std::mem::take(&mut *self.comms.lock());
        for c in &comms {
            c.shut();
        }
        comms
    }

    /// Connections accepted and still mid-handshake (bounded by `MAX_HALF_OPEN`).
    #[cfg(test)]
    pub fn half_open(&self) -> usize {
        self.acceptor.half_open()
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
