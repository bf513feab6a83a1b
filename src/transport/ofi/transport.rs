//! The libfabric transport of one communicator: the protocol over its rails, and the
//! connection's TCP streams, which carry the rails' endpoint names (OfiName frames) at set-up and
//! afterwards only tell that the peer has gone.

use super::proto::Proto;
use super::rail::Rail;
use crate::status::{Error, Result};
use crate::transport::tcp::{Stream, TcpTransport};
use crate::transport::{Completions, Kind, Msg, Transport, Wait, WaitFd};
use crate::wire::{Frame, OFI_NAME_MAX, OFI_PIECE};
use std::os::fd::RawFd;

/// FNV-1a of the provider's name: both sides must run the same provider.
fn provider_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

/// A communicator's libfabric data path: the protocol over its rails, and the connection's TCP
/// streams, which carry the endpoint names at set-up and then only tell that the peer has gone.
pub struct OfiTransport {
    link: TcpTransport,
    proto: Proto,
    provider: String,
    hash: u32,
    write: bool,
    nrails: usize,
    /// The peer's endpoint names, pieces as they arrive.
    peer: Vec<Vec<u8>>,
    peer_len: Vec<usize>,
    started: bool,
    /// The rails' completion descriptors (those that have one): they wake the progress thread
    /// early, but providers progress manually (tcp needs `fi_trywait` before a wait), so the
    /// progress thread also polls the rails every tick (`wants_ticks`).
    fds: Vec<RawFd>,
    /// Who this is, for the log.
    who: String,
}

impl OfiTransport {
    /// Takes the communicator's streams and its opened rails, and names the rails' endpoints to
    /// the peer.
    pub fn new(kind: Kind, streams: Vec<Stream>, rails: Vec<Box<dyn Rail>>, who: String) -> Result<OfiTransport> {
        let limits = rails.first().map(|r| r.limits().clone()).ok_or_else(|| Error::failure("libfabric: no rail"))?;
        let write = rails.iter().all(|r| r.limits().write_data);
        let nrails = rails.len();
        let proto = Proto::new(kind, rails, write)?;
        let names = proto.names();
        let fds = proto.wait_fds();
        let mut t = OfiTransport {
            link: TcpTransport::link(kind, streams),
            proto,
            hash: provider_hash(&limits.provider),
            provider: limits.provider,
            write,
            nrails,
            peer: vec![Vec::new(); nrails],
            peer_len: vec![0; nrails],
            started: false,
            fds,
            who,
        };
        for (rail, name) in names.iter().enumerate() {
            if name.is_empty() || name.len() > OFI_NAME_MAX {
                return Err(Error::failure(format!("libfabric: rail {rail}'s endpoint name has {} bytes", name.len())));
            }
            for (piece, chunk) in name.chunks(OFI_PIECE).enumerate() {
                let mut bytes = [0u8; OFI_PIECE];
                bytes[..chunk.len()].copy_from_slice(chunk);
                t.link.send_frame(&Frame::OfiName {
                    rail: rail as u8,
                    piece: piece as u8,
                    nrails: nrails as u8,
                    write,
                    provider: t.hash,
                    len: name.len() as u16,
                    bytes,
                });
            }
        }
        Ok(t)
    }

    /// The peer's endpoint names; the protocol starts once every rail's is complete.
    fn handle_frames(&mut self, done: &mut Completions<'_>) -> Result<()> {
        for f in self.link.take_frames() {
            let Frame::OfiName { rail, piece, nrails, write, provider, len, bytes } = f else {
                return Err(Error::failure(format!("unexpected frame {f:?} on the libfabric control stream")));
            };
            if provider != self.hash {
                return Err(Error::failure(format!(
                    "the peer runs another libfabric provider than {} (set the same NEURON_RT_ASYNC_SENDRECV_OFI_PROVIDER or FI_PROVIDER on both sides)",
                    self.provider
                )));
            }
            if nrails as usize != self.nrails {
                return Err(Error::failure(format!(
                    "the peer has {nrails} libfabric rails, this side {} (NEURON_RT_ASYNC_SENDRECV_OFI_RAILS)",
                    self.nrails
                )));
            }
            if write != self.write {
                return Err(Error::failure("the peer's provider offers RMA writes differently (both sides must run the same provider)"));
            }
            let (r, at) = (rail as usize, piece as usize * OFI_PIECE);
            if self.started || (self.peer_len[r] != 0 && self.peer_len[r] != len as usize) || self.peer[r].len() != at {
                return Err(Error::failure(format!("rail {rail}: endpoint name piece {piece} out of turn")));
            }
            self.peer_len[r] = len as usize;
            let n = (len as usize - at).min(OFI_PIECE);
            self.peer[r].extend_from_slice(&bytes[..n]);
        }
        if !self.started && self.peer.iter().zip(&self.peer_len).all(|(p, &l)| l > 0 && p.len() == l) {
            self.proto.start(std::mem::take(&mut self.peer))?;
            self.started = true;
            crate::log_info!("{}: libfabric {} on {} rail(s) connected", self.who, self.provider, self.nrails);
        }
        self.proto.progress(done)
    }

    /// Bytes each rail carried (logged at debug level when the communicator goes).
    pub fn rail_bytes(&self) -> Vec<u64> {
        self.proto.rail_bytes()
    }
}

impl Drop for OfiTransport {
    fn drop(&mut self) {
        crate::log_debug!("{}: libfabric bytes per rail: {:?}", self.who, self.proto.rail_bytes());
    }
}

impl Transport for OfiTransport {
    fn name(&self) -> &'static str {
        "ofi"
    }

    fn post(&mut self, m: Msg, done: &mut Completions<'_>) -> Result<()> {
        self.proto.post(m, done)
    }

    fn after_post(&mut self, _pump: bool, done: &mut Completions<'_>) -> Result<bool> {
        self.proto.progress(done).map(|_| false)
    }

    fn progress(&mut self, done: &mut Completions<'_>) -> Result<()> {
        self.link.read_all()?;
        self.handle_frames(done)?;
        self.link.flush_control()
    }

    /// A caller's poll drives the provider (its completion queues); the streams are the
    /// progress thread's (their end wakes it), but for set-up, when the names are read here too.
    fn poll(&mut self, _wait: Option<Wait>, _defer_control: bool, done: &mut Completions<'_>) -> Result<bool> {
        if !self.started {
            self.link.read_ready()?;
            self.handle_frames(done)?;
            return self.link.flush_control().map(|_| false);
        }
        self.proto.progress(done).map(|_| false)
    }

    fn flush_control(&mut self) -> Result<()> {
        self.link.flush_control()
    }

    fn wait_fds(&self, out: &mut Vec<WaitFd>) {
        self.link.wait_fds(out);
        out.extend(self.fds.iter().map(|&fd| WaitFd { fd, input: true }));
    }

    fn spin_fds(&self, _out: &mut Vec<WaitFd>) {}

    fn polls_sockets(&self) -> bool {
        false
    }

    fn wants_ticks(&self) -> bool {
        true
    }

    fn max_message(&self) -> u64 {
        self.proto.max_message()
    }

    #[cfg(test)]
    fn has_queued_control(&self) -> bool {
        self.link.has_queued_control()
    }
}
