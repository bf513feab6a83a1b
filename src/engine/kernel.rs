//! Whether a connection's peer runs on this kernel. Each side of the handshake names its kernel
//! with a tag (the Hello: the connecting side's; the HelloAck: the accepting side's):
//!
//! ```text
//! first 8 bytes of SHA-256("nrt-sendrecv kernel\0" ‖ boot id ‖ the Hello's nonce)
//! ```
//!
//! The boot id (sys/boot.rs) is the same in every namespace of one kernel, so two processes in
//! two network namespaces of one host (containers or pods joined by a veth) draw the same tag,
//! though neither's address is the other's. The Hello's nonce (the connecting lnc's, random)
//! keeps the boot id itself off the wire and the tags of different lncs apart.
//!
//! Equal tags make the peer "this host" for the choices that depend on it: `reno` instead of the
//! system's congestion control (transport/tcp/congestion.rs) and shared memory where the setting
//! allows it. Where either side has no tag (no boot id, or `NEURON_RT_ASYNC_SENDRECV_BOOT_ID=0`)
//! the address decides, as it did before the tag: a loopback address, or the connection's own.
//!
//! A tag proves nothing. With a shared secret both tags lie inside the frames the proofs cover
//! (auth.rs), so only a peer holding the secret can claim one. Without a secret a peer may claim
//! this kernel, and gets no more than a claim to an address of this host gets: `reno`, and an
//! offer of shared memory, whose set-up opens the peer's `/proc/<pid>/fd` and checks a random
//! token there (transport/shm), so it fails and falls back to TCP unless the peer really is a
//! process of this kernel that may be reached.

use crate::config::Config;
use sha2::Digest;
use std::net::TcpStream;

const LABEL: &[u8] = b"nrt-sendrecv kernel\0";

/// This side's tag for the connection whose Hello carries `nonce`; 0 where it has none (no boot
/// id, or `NEURON_RT_ASYNC_SENDRECV_BOOT_ID=0`).
pub(crate) fn tag(cfg: &Config, nonce: u64) -> u64 {
    match crate::sys::boot::boot_id() {
        Some(id) if cfg.boot_id => tag_of(&id, nonce),
        _ => 0,
    }
}

fn tag_of(boot_id: &[u8; 16], nonce: u64) -> u64 {
    let d = sha2::Sha256::new().chain_update(LABEL).chain_update(boot_id).chain_update(nonce.to_le_bytes()).finalize();
    // 0 means "no tag"; a hash that happens to be 0 counts as 1.
    u64::from_le_bytes(d[..8].try_into().expect("8 of 32 bytes")).max(1)
}

/// Where a connection's peer runs, as this side sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// On this kernel: "this host" for congestion control and shared memory.
    pub same: bool,
    /// Decided by the two tags (else by the address).
    pub by_tag: bool,
    /// What the address alone says (a loopback address, or the connection's own).
    pub by_address: bool,
}

impl Peer {
    /// The two tags, where both sides have one; else the address.
    pub fn judge(mine: u64, theirs: u64, by_address: bool) -> Peer {
        let by_tag = mine != 0 && theirs != 0;
        Peer { same: if by_tag { mine == theirs } else { by_address }, by_tag, by_address }
    }

    /// The peer on the other end of `sock`, given both tags.
    pub fn of(mine: u64, theirs: u64, sock: &TcpStream) -> Peer {
        Peer::judge(mine, theirs, crate::sys::net::on_this_host(sock))
    }

    /// The tags say otherwise than the address would have (worth a line in the log).
    pub fn tag_decided(&self) -> bool {
        self.by_tag && self.same != self.by_address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_match_on_one_kernel_and_nowhere_else() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert_eq!(tag_of(&a, 7), tag_of(&a, 7));
        assert_ne!(tag_of(&a, 7), tag_of(&b, 7), "another kernel");
        assert_ne!(tag_of(&a, 7), tag_of(&a, 8), "another lnc's connection");
        assert_ne!(tag_of(&a, 7), 0);
        // This process: its boot id, unless switched off.
        let mut cfg = Config::from_env().unwrap();
        cfg.boot_id = true;
        let id = crate::sys::boot::boot_id().expect("this kernel's boot id");
        assert_eq!(tag(&cfg, 9), tag_of(&id, 9));
        cfg.boot_id = false;
        assert_eq!(tag(&cfg, 9), 0);
    }

    #[test]
    fn tags_decide_where_both_sides_have_one_else_the_address() {
        // Another network namespace of this kernel: the address says elsewhere, the tags here.
        let p = Peer::judge(5, 5, false);
        assert!(p.same && p.by_tag && p.tag_decided());
        // Another kernel behind an address of this host (a port forwarded into a VM).
        let p = Peer::judge(5, 6, true);
        assert!(!p.same && p.tag_decided());
        // Agreeing: nothing to say.
        assert!(!Peer::judge(5, 5, true).tag_decided());
        assert!(!Peer::judge(5, 6, false).same);
        // Either side without a tag: the address.
        for (mine, theirs) in [(0, 5), (5, 0), (0, 0)] {
            for addr in [false, true] {
                let p = Peer::judge(mine, theirs, addr);
                assert_eq!((p.same, p.by_tag, p.tag_decided()), (addr, false, false), "{mine} {theirs} {addr}");
            }
        }
    }
}
