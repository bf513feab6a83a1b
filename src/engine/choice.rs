//! Which transport a connection uses, and building it: shared memory when both sides are on
//! this host (this kernel: kernel.rs) and may, else RDMA verbs when both have a device for the
//! connection, else TCP (`NEURON_RT_ASYNC_SENDRECV_TRANSPORT` narrows the choice). The
//! connecting side offers ([`Offer`]), the accepting side chooses. A new transport is one more
//! arm in [`Chosen`] and [`build`].

use super::kernel::Peer;
use crate::comm::Comm;
use crate::comm::request::Kind;
use crate::config::{Config, Transport as Setting};
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::net::canonical;
use crate::transport::any::AnyTransport;
use crate::transport::shm::ShmTransport;
use crate::transport::tcp::{Stream, TcpTransport};
use parking_lot::Mutex;
use std::collections::HashSet;
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;

/// The RDMA device a verbs communicator uses (uninhabited in builds without verbs).
#[cfg(feature = "verbs")]
pub type RdmaDevice = crate::transport::verbs::Device;
#[cfg(not(feature = "verbs"))]
pub enum RdmaDevice {}

/// The RDMA device that serves local address `ip`, if this build and host have one.
fn rdma_device_for(ip: std::net::IpAddr) -> Result<Option<Arc<RdmaDevice>>> {
    #[cfg(feature = "verbs")]
    {
        crate::transport::verbs::device_for_ip(ip)
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = ip;
        Ok(None)
    }
}

/// A connection's transport, as chosen (and, on the connecting side, offered).
pub enum Chosen {
    Tcp,
    Shm,
    Verbs(Arc<RdmaDevice>),
    /// libfabric, with the rails opened for the connection.
    #[cfg(feature = "ofi")]
    Ofi(Vec<crate::transport::ofi::FabricRail>),
}

impl Chosen {
    /// The Hello/HelloAck flag that offers or accepts this transport.
    pub fn flag(&self) -> u32 {
        match self {
            Chosen::Tcp => 0,
            Chosen::Shm => crate::wire::FLAG_SHM,
            Chosen::Verbs(_) => crate::wire::FLAG_VERBS,
            #[cfg(feature = "ofi")]
            Chosen::Ofi(_) => crate::wire::FLAG_OFI,
        }
    }

    /// What the log calls it.
    pub fn describe(&self) -> String {
        match self {
            Chosen::Tcp => "tcp".into(),
            Chosen::Shm => "shm (same-host shared memory)".into(),
            #[cfg(feature = "verbs")]
            Chosen::Verbs(d) => format!("verbs on {d}"),
            #[cfg(not(feature = "verbs"))]
            Chosen::Verbs(d) => match **d {},
            #[cfg(feature = "ofi")]
            Chosen::Ofi(rails) => {
                use crate::transport::ofi::Rail;
                let l = rails[0].limits();
                let domains: Vec<&str> = rails.iter().map(|r| r.limits().domain.as_str()).collect();
                format!("ofi {} (fabric {}, domains {})", l.provider, l.fabric, domains.join(","))
            }
        }
    }
}

/// What the connecting side offers: shared memory (the accepting side takes it where the peer
/// runs on its kernel), and the transport it uses otherwise.
pub struct Offer {
    pub shm: bool,
    pub other: Chosen,
}

impl Offer {
    /// The Hello's flags.
    pub fn flags(&self) -> u32 {
        if self.shm { crate::wire::FLAG_SHM | self.other.flag() } else { self.other.flag() }
    }
}

/// Builds the chosen transport over the connection's streams (`who`: the communicator, for logs).
#[cfg_attr(not(feature = "ofi"), allow(unused_variables))]
pub fn build(cfg: &Config, kind: Kind, streams: Vec<Stream>, chosen: Chosen, who: String) -> Result<AnyTransport> {
    Ok(match chosen {
        Chosen::Tcp => AnyTransport::Tcp(TcpTransport::new(kind, streams)),
        Chosen::Shm => AnyTransport::Shm(ShmTransport::new(kind, streams, cfg.transport == Setting::Shm, cfg.shm_vm_readv)?),
        #[cfg(feature = "verbs")]
        Chosen::Verbs(dev) => AnyTransport::Verbs(crate::transport::verbs::VerbsTransport::new(kind, streams, dev)?),
        #[cfg(not(feature = "verbs"))]
        Chosen::Verbs(dev) => match *dev {},
        #[cfg(feature = "ofi")]
        Chosen::Ofi(rails) => {
            use crate::transport::ofi::{OfiTransport, Rail};
            let rails = rails.into_iter().map(|r| Box::new(r) as Box<dyn Rail>).collect();
            AnyTransport::Ofi(OfiTransport::new(kind, streams, rails, who)?)
        }
    })
}

/// The lnc's choices, the transport it last logged, and the peers whose kernel it logged.
#[derive(Default)]
pub struct Chooser {
    announced: Mutex<Option<String>>,
    kernels_told: Mutex<HashSet<IpAddr>>,
}

/// Shared memory is possible under the setting (never in the LD_PRELOAD library).
fn shm_allowed(cfg: &Config) -> bool {
    matches!(cfg.transport, Setting::Auto | Setting::Shm) && !cfg!(feature = "preload")
}

impl Chooser {
    /// What the connecting side offers on the connection whose first stream is `sock`.
    /// Shared memory where the setting allows it and the peer may be on this kernel: its address
    /// says so (then nothing else is offered, as no other transport serves a peer on this host),
    /// or the handshake's kernel tags may (`cfg.boot_id`); besides it the transport for a peer
    /// elsewhere (libfabric, verbs, TCP). An error when the setting requires a transport that is
    /// not possible.
    pub fn offer(&self, cfg: &Config, comm: &Comm, sock: &TcpStream) -> Result<Offer> {
        let by_address = crate::sys::net::on_this_host(sock);
        let shm = shm_allowed(cfg) && (by_address || cfg.boot_id);
        if cfg.transport == Setting::Shm && !shm {
            return Err(Error::failure(format!(
                "{}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm, but the peer is not on this host (by its address; \
                 NEURON_RT_ASYNC_SENDRECV_BOOT_ID=0 here)",
                comm.describe()
            )));
        }
        if shm && (by_address || cfg.transport == Setting::Shm) {
            return Ok(Offer { shm, other: Chosen::Tcp });
        }
        Ok(Offer { shm, other: self.choose_remote(cfg, comm, crate::wire::FLAG_OFI | crate::wire::FLAG_VERBS, sock)? })
    }

    /// The accepting side's transport for a communicator whose first stream is `sock`, given
    /// what the peer offers (`FLAG_*` bits) and where it runs. An error when the setting
    /// requires a transport that is not possible.
    pub fn choose(&self, cfg: &Config, comm: &Comm, peer_offers: u32, sock: &TcpStream, peer: Peer) -> Result<Chosen> {
        if self.choose_shm(cfg, comm, peer_offers & crate::wire::FLAG_SHM != 0, peer)? {
            return Ok(Chosen::Shm);
        }
        self.choose_remote(cfg, comm, peer_offers, sock)
    }

    /// The transport other than shared memory: libfabric, verbs or TCP.
    fn choose_remote(&self, cfg: &Config, comm: &Comm, peer_offers: u32, sock: &TcpStream) -> Result<Chosen> {
        #[cfg(feature = "ofi")]
        if let Some(rails) = self.choose_ofi(cfg, comm, peer_offers & crate::wire::FLAG_OFI != 0, sock)? {
            return Ok(Chosen::Ofi(rails));
        }
        Ok(match self.choose_rdma(cfg, comm, peer_offers & crate::wire::FLAG_VERBS != 0, sock)? {
            Some(dev) => Chosen::Verbs(dev),
            None => Chosen::Tcp,
        })
    }

    /// Whether a connection may use shared memory: the transport setting allows it, the peer
    /// offers it and runs on this kernel. With `NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm`, an
    /// error when it may not.
    fn choose_shm(&self, cfg: &Config, comm: &Comm, peer_offers: bool, peer: Peer) -> Result<bool> {
        if !shm_allowed(cfg) {
            return Ok(false);
        }
        let ok = peer.same && peer_offers;
        if cfg.transport == Setting::Shm && !ok {
            let why = if peer.same {
                "the peer does not offer shared memory".to_string()
            } else {
                format!("the peer is not on this host ({})", not_here(peer))
            };
            return Err(Error::failure(format!("{}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm, but {why}", comm.describe())));
        }
        Ok(ok)
    }

    /// libfabric rails for a communicator whose first stream is `sock`: with
    /// `NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi` (an error when they cannot be opened, or the
    /// peer offers none), or `auto` where the provider is `efa`.
    #[cfg(feature = "ofi")]
    fn choose_ofi(
        &self,
        cfg: &Config,
        comm: &Comm,
        peer_offers: bool,
        sock: &TcpStream,
    ) -> Result<Option<Vec<crate::transport::ofi::FabricRail>>> {
        let required = cfg.transport == Setting::Ofi;
        if !(required || (cfg.transport == Setting::Auto && efa_here(cfg))) {
            return Ok(None);
        }
        if !peer_offers {
            if required {
                return Err(Error::failure(format!(
                    "{}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi, but the peer offers no libfabric",
                    comm.describe()
                )));
            }
            return Ok(None);
        }
        let rails = match open_for(cfg, sock) {
            Ok(r) => r,
            Err(e) if required => {
                return Err(Error::new(e.status, format!("{}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi, but {}", comm.describe(), e.msg)));
            }
            Err(e) => {
                crate::log_warn!("{}: libfabric not available, using the next transport: {e}", comm.describe());
                return Ok(None);
            }
        };
        for r in &rails {
            crate::log_debug!("{}: rail {}", comm.describe(), r.describe());
        }
        Ok(Some(rails))
    }

    /// The RDMA device for a communicator whose first stream is `sock`, per the transport
    /// setting: `None` for TCP; an error when verbs is required but impossible.
    fn choose_rdma(&self, cfg: &Config, comm: &Comm, peer_offers: bool, sock: &TcpStream) -> Result<Option<Arc<RdmaDevice>>> {
        let local = sock.local_addr().map(|a| canonical(a.ip()));
        let dev = match (cfg.transport, &local) {
            (Setting::Tcp, _) => None,
            (_, Ok(ip)) => match rdma_device_for(*ip) {
                Ok(d) => d,
                Err(e) if cfg.transport == Setting::Verbs => return Err(e),
                Err(e) => {
                    crate::log_warn!("{}: RDMA device lookup failed, using TCP: {e}", comm.describe());
                    None
                }
            },
            (_, Err(e)) => return Err(Error::io(NRT_STATUS::NRT_FAILURE, "local address of the connection", e)),
        };
        let dev = if peer_offers { dev } else { None };
        if cfg.transport == Setting::Verbs && dev.is_none() {
            let why = if peer_offers { "no RDMA device here serves" } else { "the peer offers no RDMA for" };
            return Err(Error::failure(format!(
                "{}: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=verbs, but {why} local address {}",
                comm.describe(),
                local.map(|a| a.to_string()).unwrap_or_default()
            )));
        }
        Ok(dev)
    }

    /// Logs the transport of the lnc's first communicator, and every later change.
    pub fn announce(&self, comm: &Comm, chosen: &Chosen) {
        let what = chosen.describe();
        let mut last = self.announced.lock();
        if last.as_deref() != Some(what.as_str()) {
            crate::log_info!("lnc {}: transport {what} (first used by {})", comm.hub.id, comm.describe());
            *last = Some(what);
        }
    }

    /// Logs, once per peer address, a peer that the handshake's kernel tags place otherwise
    /// than its address would: on this kernel in another network namespace, or on another
    /// kernel behind an address of this host. Says what that changed.
    pub fn tell_kernel(&self, comm: &Comm, peer: Peer, chosen: &Chosen) {
        if !peer.tag_decided() || !self.kernels_told.lock().insert(comm.peer) {
            return;
        }
        let name = |c: Option<&std::ffi::CStr>| c.map_or_else(|| "the socket's own".to_string(), |c| c.to_string_lossy().into_owned());
        let (now, else_) = (crate::transport::tcp::congestion_for(peer.same), crate::transport::tcp::congestion_for(peer.by_address));
        let cc = if now == else_ {
            format!("TCP congestion control {} either way", name(now))
        } else {
            format!("TCP congestion control {} (by its address: {})", name(now), name(else_))
        };
        let (id, who, transport) = (comm.hub.id, comm.peer, chosen.describe());
        if peer.same {
            crate::log_info!(
                "lnc {id}: {who} runs on this kernel (the same boot id; another network namespace): this host for it: {cc}; transport {transport}"
            );
        } else {
            crate::log_info!(
                "lnc {id}: {who} runs on another kernel (another boot id), though its address is this host's (a forwarded port?): {cc}; transport {transport}"
            );
        }
    }
}

/// Why a peer is not on this host, for errors.
pub fn not_here(peer: Peer) -> &'static str {
    if peer.by_tag { "it runs on another kernel: another boot id" } else { "by its address" }
}

/// Opens the rails `NEURON_RT_ASYNC_SENDRECV_OFI_RAILS` names (a count, or domain names); by
/// default every domain the provider offers, narrowed to the connection's interface where the
/// provider's domains are interfaces (tcp: "lo", "eth0").
#[cfg(feature = "ofi")]
fn open_for(cfg: &Config, sock: &TcpStream) -> Result<Vec<crate::transport::ofi::FabricRail>> {
    use crate::transport::ofi::{Rail, RailsWanted, open_rails};
    let wanted = match cfg.ofi_rails.as_deref() {
        None => RailsWanted::All,
        Some(s) => match s.parse::<usize>() {
            Ok(n) => RailsWanted::Count(n),
            Err(_) => RailsWanted::Domains(s.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect()),
        },
    };
    // Device memory (FI_HMEM) is asked for by the LD_PRELOAD library only: the standalone
    // library's tensors are all host memory.
    let mut rails = open_rails(cfg.ofi_provider.as_deref(), wanted, cfg!(feature = "preload"))?;
    if cfg.ofi_rails.is_none()
        && let Some(ifname) = sock.local_addr().ok().and_then(|a| crate::sys::net::interface_of(a.ip()))
        && rails.iter().any(|r| r.limits().domain == ifname)
    {
        rails.retain(|r| r.limits().domain == ifname);
    }
    if rails.is_empty() {
        return Err(Error::failure("libfabric offers no rail"));
    }
    Ok(rails)
}

/// Whether this host has an `efa` provider (or the one named), for `auto` (asked once).
#[cfg(feature = "ofi")]
fn efa_here(cfg: &Config) -> bool {
    use crate::transport::ofi::{Rail, RailsWanted, open_rails};
    static EFA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *EFA.get_or_init(|| {
        let provider = cfg.ofi_provider.as_deref().unwrap_or("efa");
        open_rails(Some(provider), RailsWanted::Count(1), false)
            .is_ok_and(|r| r.first().is_some_and(|r| r.limits().provider.contains("efa")))
    })
}
