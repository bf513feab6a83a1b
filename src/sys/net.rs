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

/// The name of the network interface that holds address `ip` ("lo", "eth0"), if any.
#[cfg_attr(not(feature = "ofi"), allow(dead_code))]
pub fn interface_of(ip: IpAddr) -> Option<String> {
    let ip = canonical(ip);
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut p = head;
    while !p.is_null() && found.is_none() {
        // SAFETY: p is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr of the family it names.
            let addr = unsafe {
                match (*ifa.ifa_addr).sa_family as i32 {
                    libc::AF_INET => {
                        let a = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::from(u32::from_be(a.sin_addr.s_addr).to_be_bytes()))
                    }
                    libc::AF_INET6 => {
                        let a = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::from(a.sin6_addr.s6_addr))
                    }
                    _ => None,
                }
            };
            if addr.map(canonical) == Some(ip) && !ifa.ifa_name.is_null() {
                // SAFETY: ifa_name is a NUL-terminated string of the list.
                found = Some(unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned());
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
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
