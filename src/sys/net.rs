//! What an address says: its canonical form, and whether it belongs to this host.

use std::net::{IpAddr, TcpStream};

/// IPv4-mapped IPv6 addresses compare as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `ip` is an address of this host: loopback, or one a socket can be bound to.
pub fn is_this_host(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Whether the connection's peer is on this host: a loopback address, or our own.
pub fn on_this_host(sock: &TcpStream) -> bool {
    match (sock.local_addr(), sock.peer_addr()) {
        (Ok(l), Ok(p)) => {
            let (l, p) = (canonical(l.ip()), canonical(p.ip()));
            p.is_loopback() || l == p
        }
        _ => false,
    }
}
