//! Settings read from the environment when an lnc is initialised.

use std::net::IpAddr;
use std::time::Duration;

pub const MAX_LNC: i32 = 1023;
pub const MAX_COMMS_PER_LNC: usize = 128;
pub const MAX_PENDING_PER_COMM: usize = 128;
pub const MAX_STREAMS: usize = 16;
pub const DEFAULT_PORT_BASE: u16 = 31000;

/// `NEURON_RT_ASYNC_SENDRECV_TRANSPORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Shared memory when the peer is a process of this host; else RDMA verbs when a device
    /// serves the connection's local address on both sides; else TCP.
    Auto,
    Tcp,
    /// RDMA verbs or nothing: set-up fails when either side has no usable device.
    Verbs,
    /// Shared memory or nothing: set-up fails unless the peer is a process of this host that
    /// this process may read.
    Shm,
    /// libfabric or nothing: set-up fails unless both sides open the same provider.
    Ofi,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub transport: Transport,
    pub port_base: u16,
    pub listen_addr: Option<IpAddr>,
    pub connect_timeout: Duration,
    /// `None`: requests never time out.
    pub request_timeout: Option<Duration>,
    pub streams: usize,
    /// Shared secret for the HMAC challenge in the handshake (`None`: no authentication).
    pub auth_secret: Option<Vec<u8>>,
    /// `NEURON_RT_ASYNC_SENDRECV_SHM_VM_READV` (default 1): a receiver over shared memory may
    /// read a sender's memory that is not in a memfd with `process_vm_readv`; 0 never tries, and
    /// senders stage such messages in a memfd, as they do where the kernel refuses the call.
    pub shm_vm_readv: bool,
    /// `NEURON_RT_ASYNC_SENDRECV_OFI_PROVIDER`, else `FI_PROVIDER`: the libfabric provider
    /// (`None`: libfabric's own choice, `efa` where it exists for `auto`).
    pub ofi_provider: Option<String>,
    /// `NEURON_RT_ASYNC_SENDRECV_OFI_RAILS`: a count, or a comma list of domain names (`None`:
    /// every domain the provider offers for the connection).
    pub ofi_rails: Option<String>,
    /// `NEURON_RT_ASYNC_SENDRECV_BOOT_ID` (default 1): the handshake names this kernel (a tag of
    /// its boot id), so that a peer in another network namespace of this host counts as this
    /// host (engine/kernel.rs); 0 sends none, and "this host" is decided by the peer's address
    /// alone.
    pub boot_id: bool,
}

impl Config {
    /// The configuration of the runtime tests and the fuzz targets (`crate::fuzzing`), which each
    /// adjusts (`Config { streams: 2, ..Config::loopback(base) }`): TCP on 127.0.0.1 (lnc n on
    /// `port_base` + n), no secret, one stream, connect within 10 s, requests within 30 s, shared
    /// memory may read the peer, kernel tags on, libfabric's own choices.
    pub fn loopback(port_base: u16) -> Config {
        Config {
            transport: Transport::Tcp,
            port_base,
            listen_addr: Some(IpAddr::from([127, 0, 0, 1])),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Some(Duration::from_secs(30)),
            streams: 1,
            auth_secret: None,
            shm_vm_readv: true,
            ofi_provider: None,
            ofi_rails: None,
            boot_id: true,
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num(name: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
    match env(name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name}={v:?} is not a number in {min}..={max}")),
        },
    }
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let port_base = env_num("NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT", DEFAULT_PORT_BASE as u64, 1, 65535)? as u16;
        let listen_addr = match env("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| format!("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR={v:?} is not an IP address"))?,
            ),
        };
        let ct = env_num("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", 30_000, 1, 86_400_000)?;
        let rt = env_num("NEURON_RT_ASYNC_SENDRECV_REQUEST_TIMEOUT_MS", 60_000, 0, 86_400_000)?;
        let streams = env_num("NEURON_RT_ASYNC_SENDRECV_TCP_STREAMS", 4, 1, MAX_STREAMS as u64)? as usize;
        let transport = match env("NEURON_RT_ASYNC_SENDRECV_TRANSPORT").as_deref().map(str::trim) {
            None | Some("auto") => Transport::Auto,
            Some("tcp") => Transport::Tcp,
            Some("verbs") if cfg!(feature = "verbs") => Transport::Verbs,
            Some("shm") if !cfg!(feature = "preload") => Transport::Shm,
            Some("ofi") if cfg!(feature = "ofi") => Transport::Ofi,
            Some(other) => {
                let mut have = vec!["auto", "tcp"];
                if !cfg!(feature = "preload") {
                    have.push("shm");
                }
                if cfg!(feature = "verbs") {
                    have.push("verbs");
                }
                if cfg!(feature = "ofi") {
                    have.push("ofi");
                }
                let have = have.join("|");
                return Err(format!("NEURON_RT_ASYNC_SENDRECV_TRANSPORT={other:?}: this build has {have}"));
            }
        };
        let shm_vm_readv = env_num("NEURON_RT_ASYNC_SENDRECV_SHM_VM_READV", 1, 0, 1)? == 1;
        let auth_secret = std::env::var("NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET").ok().filter(|v| !v.is_empty()).map(String::into_bytes);
        let ofi_provider = env("NEURON_RT_ASYNC_SENDRECV_OFI_PROVIDER").or_else(|| env("FI_PROVIDER")).map(|v| v.trim().to_string());
        let ofi_rails = env("NEURON_RT_ASYNC_SENDRECV_OFI_RAILS").map(|v| v.trim().to_string());
        let boot_id = env_num("NEURON_RT_ASYNC_SENDRECV_BOOT_ID", 1, 0, 1)? == 1;
        Ok(Config {
            boot_id,
            ofi_provider,
            ofi_rails,
            auth_secret,
            shm_vm_readv,
            transport,
            port_base,
            listen_addr,
            connect_timeout: Duration::from_millis(ct),
            request_timeout: (rt > 0).then(|| Duration::from_millis(rt)),
            streams,
        })
    }

    pub fn port_of(&self, lnc: i32) -> Option<u16> {
        u16::try_from(self.port_base as u32 + lnc as u32).ok()
    }
}
