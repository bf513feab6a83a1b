//! TCP congestion control per stream: reno to a peer on this host (this kernel, in whatever
//! network namespace), the system's across hosts (`NEURON_RT_ASYNC_SENDRECV_TCP_CONGESTION`
//! overrides). Every stream starts with the one for this host, set before its handshake; a
//! stream whose handshake finds the peer elsewhere is switched to the system's.

use std::net::TcpStream;

/// `NEURON_RT_ASYNC_SENDRECV_TCP_CONGESTION`: unset, streams to a peer on this host run `reno`
/// and streams across hosts the system's default (what the host's administrator chose for its
/// network); a name: that algorithm on every stream; `system`: never set. On loopback there is no
/// network to share, but BBR (a common default, this VM's included) paces every socket with
/// timers and drains it periodically to probe the round trip: 64 MiB messages measured 3.3-5.3
/// GB/s under BBR against 5.0-6.8 under reno (docs/transports.md, "Congestion control"); across
/// a veth between two network namespaces, 16 MiB messages one at a time 1.3-1.9 against 3.2.
/// Reno is the one algorithm the kernel lets every process choose. It must be chosen before the
/// handshake: BBR, once started on a connection, leaves the socket paced when replaced (switched
/// to reno after the handshake: 2.4 GB/s in that veth case). Switching the other way, from reno
/// to BBR once the peer is known to be elsewhere, starts BBR from the connection's state, as
/// accepted streams from other hosts always did.
enum CcPolicy {
    Default,
    System,
    Named(std::ffi::CString),
}

fn cc_policy() -> &'static CcPolicy {
    static P: std::sync::OnceLock<CcPolicy> = std::sync::OnceLock::new();
    P.get_or_init(|| match std::env::var("NEURON_RT_ASYNC_SENDRECV_TCP_CONGESTION").ok().map(|v| v.trim().to_string()) {
        None => CcPolicy::Default,
        Some(v) if v == "system" || v.is_empty() => CcPolicy::System,
        Some(v) if v.len() < 16 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            CcPolicy::Named(std::ffi::CString::new(v).expect("no NUL: checked"))
        }
        Some(v) => {
            crate::log_warn!("NEURON_RT_ASYNC_SENDRECV_TCP_CONGESTION={v:?} is not an algorithm name; the system's is used");
            CcPolicy::System
        }
    })
}

/// The system's default congestion control (every process may choose it).
fn system_cc() -> Option<&'static std::ffi::CStr> {
    static S: std::sync::OnceLock<Option<std::ffi::CString>> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let v = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control").ok()?;
        std::ffi::CString::new(v.trim()).ok().filter(|c| !c.is_empty())
    })
    .as_deref()
}

/// The congestion control a stream to a peer on this host (`same_host`) or elsewhere should
/// run; `None`: leave what the socket has.
pub fn congestion_for(same_host: bool) -> Option<&'static std::ffi::CStr> {
    match cc_policy() {
        CcPolicy::System => None,
        CcPolicy::Named(n) => Some(n.as_c_str()),
        CcPolicy::Default if same_host => Some(c"reno"),
        CcPolicy::Default => system_cc(),
    }
}

/// Sets a socket's congestion control unless it already runs `want`. A failure (the algorithm
/// is not available, or not allowed to this process) leaves the socket's own and is logged once
/// per process.
pub fn set_congestion(sock: socket2::SockRef<'_>, want: &std::ffi::CStr) {
    if congestion_name(&sock).as_bytes() == want.to_bytes() {
        return;
    }
    if let Err(e) = sock.set_tcp_congestion(want.to_bytes()) {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            crate::log_warn!("TCP congestion control {want:?} not set: {e} (the socket keeps its own)");
        }
    }
}

/// The congestion control a socket runs, by name ("" when it cannot be read).
pub fn congestion_name(sock: &socket2::Socket) -> String {
    let name = sock.tcp_congestion().unwrap_or_default();
    String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
}

/// Connects within `timeout`, choosing the congestion control `cc` before the handshake.
pub fn connect_with(addr: std::net::SocketAddr, timeout: std::time::Duration, cc: Option<&std::ffi::CStr>) -> std::io::Result<TcpStream> {
    let Some(cc) = cc else { return TcpStream::connect_timeout(&addr, timeout) };
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    set_congestion(socket2::SockRef::from(&s), cc);
    s.connect_timeout(&addr.into(), timeout)?;
    Ok(s.into())
}
