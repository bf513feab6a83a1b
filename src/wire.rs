//! Frames on the wire: one fixed 40-byte header, little-endian.
//!
//! ```text
//! 0..4   magic "NRSR"        4  version      5  kind      6..8  aux (u16)
//! 8..16  a (u64)   16..24 b (u64)   24..32 c (u64)   32..40 d (u64)
//! ```
//! | kind      | aux        | a        | b          | c                       | d        |
//! |-----------|------------|----------|------------|-------------------------|----------|
//! | Hello     | stream idx | nonce    | conn seq   | src lnc << 48 \| dst lnc << 32 \| flags << 16 \| nstreams | kernel tag |
//! | HelloAck  | status     | nonce    | conn seq   | flags                   | kernel tag |
//! | Data      | src page   | msg seq  | offset     | chunk length            | total    |
//! | Ack       | status     | msg seq  | size       | 0                       | 0        |
//! | QpInfo    | verbs protocol | psn << 32 \| qpn | gid[0..8] | gid[8..16]   | lid      |
//! | Challenge | 0          | random   | random     | sender's instance nonce | sender's lnc |
//! | Proof     | 0          | HMAC-SHA256 over the handshake (engine/auth.rs), 32 bytes over a..d |
//! | ShmInfo   | 0          | pid << 32 \| fd | token | channel address       | channel size |
//! | ShmReady  | status     | 0        | 0          | 0                       | 0        |
//! | Wake      | 0          | 0        | 0          | 0                       | 0        |
//! | OfiName   | rail << 8 \| piece | provider hash << 32 \| mode << 24 \| nrails << 16 \| length | name bytes 24 * piece .. +24 over b, c, d |
//!
//! Flags (Hello: what the connecting side offers; HelloAck: what the accepting side chose):
//! bit 0 = RDMA verbs for data and control, the TCP streams kept for set-up (QpInfo) and to
//! notice a dead peer;
//! bit 1 (Hello only) = the connecting side holds a secret: a Challenge of its own follows the Hello;
//! bit 2 = same-host shared memory for the data (ShmInfo, ShmReady, Wake on stream 0);
//! bit 3 = libfabric for data and control, the TCP streams kept to notice a dead peer (OfiName on
//! stream 0 names each rail's endpoint).
//!
//! Kernel tag (Hello: the connecting side's; HelloAck: the accepting side's): a hash of the
//! sender's boot id and the Hello's nonce, equal on both sides when both run on one kernel (in
//! whatever network namespaces); 0 where the sender does not know its own (engine/kernel.rs).
//! Refusals carry 0. With authentication both tags lie inside what the proofs cover.
//!
//! Authentication (both sides hold `NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET`), on every stream:
//!
//! ```text
//! connecting side                              accepting side
//!   Hello (flag bit 1), Challenge C      ->
//!                                        <-    Challenge A
//!   Proof (connecting side's, over Hello, C, A)  ->   checked; the stream joins its connection
//!                                        <-    HelloAck, Proof (accepting side's, over Hello,
//!                                              C, A and that HelloAck)
//!   checked before any other frame is sent or any transport is built
//! ```
//!
//! A Challenge carries 128 random bits, the instance nonce of the lnc that sends it (the nonce of
//! that lnc's Hellos) and that lnc's number. The two proofs are keyed with the secret and begin
//! with different labels, so neither can stand for the other (engine/auth.rs). A side with a
//! secret and one without refuse each other (HelloAck status NO_AUTH); a Proof that does not
//! check is answered with BAD_PROOF by the accepting side, and ends set-up on the connecting one.
//!
//! A Data header is followed by `chunk length` payload bytes; nothing else carries payload.
//! The decoder rejects everything it does not fully understand, so a garbage stream fails the
//! communicator instead of steering writes into a tensor.

pub const MAGIC: [u8; 4] = *b"NRSR";
/// 2: Data frames may name their payload's source offset in its 4 KiB page (aux).
/// 3: mutual authentication: Challenges in both directions, carrying their sender's instance
/// nonce and lnc; the accepting side's Proof after its HelloAck; HelloAck statuses NO_AUTH and
/// BAD_PROOF. A peer of another version is answered with a BAD_VERSION HelloAck.
/// 4: Hello and HelloAck carry their sender's kernel tag (d); the Hello's lncs, flags and stream
/// count share c.
pub const VERSION: u8 = 4;
pub const HEADER_LEN: usize = 40;
/// Largest message we accept (bounds every length the peer sends us).
pub const MAX_MESSAGE: u64 = 1 << 48;
/// Largest chunk one Data frame may announce.
pub const MAX_CHUNK: u64 = 1 << 30;
pub const MAX_STREAMS: u64 = crate::config::MAX_STREAMS as u64;
/// Data aux: the payload's source page offset follows in the low 12 bits.
pub const SRC_PAGE: u16 = 0x8000;
/// Hello/HelloAck flag: RDMA verbs data path.
pub const FLAG_VERBS: u32 = 1;
/// Hello flag: the connecting side holds a shared secret (its Challenge follows the Hello).
pub const FLAG_AUTH: u32 = 2;
/// Hello/HelloAck flag: same-host shared-memory data path.
pub const FLAG_SHM: u32 = 4;
/// Hello/HelloAck flag: libfabric data path.
pub const FLAG_OFI: u32 = 8;
const KNOWN_FLAGS: u64 = (FLAG_VERBS | FLAG_AUTH | FLAG_SHM | FLAG_OFI) as u64;
/// Bytes of an endpoint name one OfiName frame carries.
pub const OFI_PIECE: usize = 24;
/// Longest endpoint name (`fi_getname`) OfiName frames carry.
pub const OFI_NAME_MAX: usize = 16 * OFI_PIECE;

/// Status carried by HelloAck and Ack frames.
pub mod ack {
    pub const OK: u16 = 0;
    /// HelloAck: the peer speaks another protocol version.
    pub const BAD_VERSION: u16 = 1;
    /// HelloAck: no such lnc / refused.
    pub const REFUSED: u16 = 2;
    /// Ack: the receive was shorter than the send; nothing was written.
    pub const TOO_LONG: u16 = 3;
    pub const MAX: u16 = 3;
    /// ShmReady only: the channel is mapped, but this side may not read the sender's memory
    /// (`process_vm_readv` refused): what does not lie in a memfd must be staged in one.
    pub const STAGE: u16 = 4;
    /// HelloAck only: one side has an authentication secret and the other has none.
    pub const NO_AUTH: u16 = 5;
    /// HelloAck only: the connecting side's Proof did not check (a different secret).
    pub const BAD_PROOF: u16 = 6;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello {
        stream: u16,
        nstreams: u16,
        nonce: u64,
        conn_seq: u64,
        src_lnc: u32,
        dst_lnc: u32,
        flags: u32,
        /// The connecting side's kernel tag (0: unknown).
        kernel: u64,
    },
    HelloAck {
        status: u16,
        nonce: u64,
        conn_seq: u64,
        flags: u32,
        /// The accepting side's kernel tag (0: unknown, and on refusals).
        kernel: u64,
    },
    Data {
        seq: u64,
        offset: u64,
        len: u64,
        total: u64,
        /// Where the payload's first byte lies in its 4 KiB page at the sender, when the socket
        /// takes the pages themselves (`sendfile`) and the peer is on the same host: the
        /// receiver's copy then reads from that offset (sys/copy.rs, "Copy distance").
        /// Aux: 0 for none, else SRC_PAGE | offset.
        src_page: Option<u16>,
    },
    Ack {
        seq: u64,
        status: u16,
        size: u64,
    },
    /// A queue pair's address (verbs set-up): 24-bit QPN and PSN, GID, LID, and the version of
    /// the verbs protocol the sender runs (`transport/verbs/proto.rs`; aux).
    QpInfo {
        qpn: u32,
        psn: u32,
        gid: [u8; 16],
        lid: u16,
        proto: u16,
    },
    /// Authentication: a side's random challenge (each side sends one), with its sender's
    /// instance nonce and lnc; answered by a Proof.
    Challenge {
        nonce: [u8; 16],
        instance: u64,
        lnc: u32,
    },
    Proof {
        mac: [u8; 32],
    },
    /// Shared memory (sender → receiver): the channel memfd is descriptor `fd` of process `pid`.
    ShmInfo {
        pid: u32,
        fd: u32,
        token: u64,
        addr: u64,
        size: u64,
    },
    /// Shared memory (receiver → sender): OK, or REFUSED (both use TCP).
    ShmReady {
        status: u16,
    },
    /// Shared memory: new descriptors wait in the channel.
    Wake,
    /// libfabric: piece `piece` of rail `rail`'s endpoint name (`len` bytes in all), of `nrails`
    /// rails; `write`: this side's protocol writes large messages (else the receiver reads);
    /// `provider`: a hash of the provider's name (both sides must run the same).
    OfiName {
        rail: u8,
        piece: u8,
        nrails: u8,
        write: bool,
        provider: u32,
        len: u16,
        bytes: [u8; OFI_PIECE],
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    Truncated,
    BadMagic,
    /// Carries the version the peer announced.
    BadVersion(u8),
    BadKind(u8),
    BadField(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "truncated frame"),
            WireError::BadMagic => write!(f, "bad magic (not an nrt-sendrecv peer)"),
            WireError::BadVersion(v) => write!(f, "protocol version {v}, we speak {VERSION}"),
            WireError::BadKind(k) => write!(f, "unknown frame kind {k}"),
            WireError::BadField(w) => write!(f, "invalid frame field: {w}"),
        }
    }
}

const K_HELLO: u8 = 1;
const K_HELLO_ACK: u8 = 2;
const K_DATA: u8 = 3;
const K_ACK: u8 = 4;
const K_QP_INFO: u8 = 5;
const K_CHALLENGE: u8 = 7;
const K_PROOF: u8 = 8;
const K_SHM_INFO: u8 = 9;
const K_SHM_READY: u8 = 10;
const K_WAKE: u8 = 11;
const K_OFI_NAME: u8 = 12;

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Frame {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let (kind, aux, a, b, c, d) = match *self {
            Frame::Hello { stream, nstreams, nonce, conn_seq, src_lnc, dst_lnc, flags, kernel } => {
                // Each of the four fits 16 bits (the decoder checks them): lncs up to MAX_LNC,
                // flags KNOWN_FLAGS, the stream count MAX_STREAMS.
                let c = (src_lnc as u64 & 0xffff) << 48 | (dst_lnc as u64 & 0xffff) << 32 | (flags as u64 & 0xffff) << 16 | nstreams as u64;
                (K_HELLO, stream, nonce, conn_seq, c, kernel)
            }
            Frame::HelloAck { status, nonce, conn_seq, flags, kernel } => (K_HELLO_ACK, status, nonce, conn_seq, flags as u64, kernel),
            Frame::Data { seq, offset, len, total, src_page } => (K_DATA, src_page.map_or(0, |p| SRC_PAGE | p), seq, offset, len, total),
            Frame::Ack { seq, status, size } => (K_ACK, status, seq, size, 0, 0),
            Frame::QpInfo { qpn, psn, gid, lid, proto } => {
                let (g0, g1) = (u64::from_le_bytes(gid[..8].try_into().unwrap()), u64::from_le_bytes(gid[8..].try_into().unwrap()));
                (K_QP_INFO, proto, (psn as u64) << 32 | qpn as u64, g0, g1, lid as u64)
            }
            Frame::Challenge { nonce, instance, lnc } => (
                K_CHALLENGE,
                0,
                u64::from_le_bytes(nonce[..8].try_into().unwrap()),
                u64::from_le_bytes(nonce[8..].try_into().unwrap()),
                instance,
                lnc as u64,
            ),
            Frame::Proof { mac } => {
                let w = |i: usize| u64::from_le_bytes(mac[8 * i..8 * i + 8].try_into().unwrap());
                (K_PROOF, 0, w(0), w(1), w(2), w(3))
            }
            Frame::ShmInfo { pid, fd, token, addr, size } => (K_SHM_INFO, 0, (pid as u64) << 32 | fd as u64, token, addr, size),
            Frame::ShmReady { status } => (K_SHM_READY, status, 0, 0, 0, 0),
            Frame::Wake => (K_WAKE, 0, 0, 0, 0, 0),
            Frame::OfiName { rail, piece, nrails, write, provider, len, bytes } => {
                let w = |i: usize| u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().unwrap());
                let a = (provider as u64) << 32 | (write as u64) << 24 | (nrails as u64) << 16 | len as u64;
                (K_OFI_NAME, (rail as u16) << 8 | piece as u16, a, w(0), w(1), w(2))
            }
        };
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5] = kind;
        h[6..8].copy_from_slice(&aux.to_le_bytes());
        for (i, v) in [a, b, c, d].into_iter().enumerate() {
            h[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// Decodes one header from the start of `buf` (extra bytes are ignored).
    pub fn decode(buf: &[u8]) -> Result<Frame, WireError> {
        if buf.len() < HEADER_LEN {
            // A short buffer that already disagrees on the magic is garbage, not a partial read.
            let n = buf.len().min(4);
            if buf[..n] != MAGIC[..n] {
                return Err(WireError::BadMagic);
            }
            return Err(WireError::Truncated);
        }
        if buf[0..4] != MAGIC {
            return Err(WireError::BadMagic);
        }
        if buf[4] != VERSION {
            return Err(WireError::BadVersion(buf[4]));
        }
        let aux = u16::from_le_bytes([buf[6], buf[7]]);
        let (a, b, c, d) = (u64_at(buf, 8), u64_at(buf, 16), u64_at(buf, 24), u64_at(buf, 32));
        match buf[5] {
            K_HELLO => {
                let (src, dst, flags, n) = (c >> 48, (c >> 32) & 0xffff, (c >> 16) & 0xffff, c & 0xffff);
                if flags & !KNOWN_FLAGS != 0 {
                    return Err(WireError::BadField("hello flags"));
                }
                if n == 0 || n > MAX_STREAMS {
                    return Err(WireError::BadField("stream count"));
                }
                if aux as u64 >= n {
                    return Err(WireError::BadField("stream index"));
                }
                if src > crate::config::MAX_LNC as u64 || dst > crate::config::MAX_LNC as u64 {
                    return Err(WireError::BadField("lnc"));
                }
                Ok(Frame::Hello {
                    stream: aux,
                    nstreams: n as u16,
                    nonce: a,
                    conn_seq: b,
                    src_lnc: src as u32,
                    dst_lnc: dst as u32,
                    flags: flags as u32,
                    kernel: d,
                })
            }
            K_HELLO_ACK => {
                let status_ok = aux <= ack::MAX || aux == ack::NO_AUTH || aux == ack::BAD_PROOF;
                if !status_ok || c & !KNOWN_FLAGS != 0 {
                    return Err(WireError::BadField("hello ack"));
                }
                Ok(Frame::HelloAck { status: aux, nonce: a, conn_seq: b, flags: c as u32, kernel: d })
            }
            K_QP_INFO => {
                let (qpn, psn) = (a & 0xffff_ffff, a >> 32);
                if qpn >= 1 << 24 || psn >= 1 << 24 || d > 0xffff {
                    return Err(WireError::BadField("qp info"));
                }
                let mut gid = [0u8; 16];
                gid[..8].copy_from_slice(&b.to_le_bytes());
                gid[8..].copy_from_slice(&c.to_le_bytes());
                Ok(Frame::QpInfo { qpn: qpn as u32, psn: psn as u32, gid, lid: d as u16, proto: aux })
            }
            K_DATA => {
                let src_page = match aux {
                    0 => None,
                    p if p & SRC_PAGE != 0 && p & !SRC_PAGE < 4096 => Some(p & !SRC_PAGE),
                    _ => return Err(WireError::BadField("data aux")),
                };
                if d > MAX_MESSAGE {
                    return Err(WireError::BadField("message length"));
                }
                if c > MAX_CHUNK {
                    return Err(WireError::BadField("chunk length"));
                }
                match b.checked_add(c) {
                    Some(end) if end <= d => {}
                    _ => return Err(WireError::BadField("chunk outside message")),
                }
                Ok(Frame::Data { seq: a, offset: b, len: c, total: d, src_page })
            }
            K_ACK => {
                if aux > ack::MAX || b > MAX_MESSAGE || c != 0 || d != 0 {
                    return Err(WireError::BadField("ack"));
                }
                Ok(Frame::Ack { seq: a, status: aux, size: b })
            }
            K_CHALLENGE => {
                if aux != 0 || d > crate::config::MAX_LNC as u64 {
                    return Err(WireError::BadField("challenge"));
                }
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&a.to_le_bytes());
                nonce[8..].copy_from_slice(&b.to_le_bytes());
                Ok(Frame::Challenge { nonce, instance: c, lnc: d as u32 })
            }
            K_PROOF => {
                if aux != 0 {
                    return Err(WireError::BadField("proof"));
                }
                let mut mac = [0u8; 32];
                for (i, v) in [a, b, c, d].into_iter().enumerate() {
                    mac[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
                }
                Ok(Frame::Proof { mac })
            }
            K_SHM_INFO => {
                if aux != 0 || a >> 32 == 0 || d > 1 << 30 {
                    return Err(WireError::BadField("shm info"));
                }
                Ok(Frame::ShmInfo { pid: (a >> 32) as u32, fd: a as u32, token: b, addr: c, size: d })
            }
            K_SHM_READY => {
                if !matches!(aux, ack::OK | ack::REFUSED | ack::STAGE) || a != 0 || b != 0 || c != 0 || d != 0 {
                    return Err(WireError::BadField("shm ready"));
                }
                Ok(Frame::ShmReady { status: aux })
            }
            K_WAKE => {
                if aux != 0 || a != 0 || b != 0 || c != 0 || d != 0 {
                    return Err(WireError::BadField("wake"));
                }
                Ok(Frame::Wake)
            }
            K_OFI_NAME => {
                let (rail, piece) = ((aux >> 8) as u8, aux as u8);
                let (len, nrails, mode) = (a as u16, (a >> 16) as u8, (a >> 24) as u8);
                if nrails == 0 || nrails as usize > crate::config::MAX_STREAMS || rail >= nrails || mode > 1 {
                    return Err(WireError::BadField("ofi rails"));
                }
                if len == 0 || len as usize > OFI_NAME_MAX || piece as usize * OFI_PIECE >= len as usize {
                    return Err(WireError::BadField("ofi name length"));
                }
                let mut bytes = [0u8; OFI_PIECE];
                for (i, v) in [b, c, d].into_iter().enumerate() {
                    bytes[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
                }
                Ok(Frame::OfiName { rail, piece, nrails, write: mode == 1, provider: (a >> 32) as u32, len, bytes })
            }
            k => Err(WireError::BadKind(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello { stream: 3, nstreams: 4, nonce: 0xdead_beef_0123, conn_seq: 7, src_lnc: 0, dst_lnc: 1023, flags: 0, kernel: 0 },
            Frame::Hello { stream: 0, nstreams: 1, nonce: 1, conn_seq: 0, src_lnc: 5, dst_lnc: 6, flags: FLAG_VERBS, kernel: u64::MAX },
            Frame::Hello {
                stream: 15,
                nstreams: 16,
                nonce: u64::MAX,
                conn_seq: u64::MAX,
                src_lnc: 1023,
                dst_lnc: 1023,
                flags: (KNOWN_FLAGS as u32),
                kernel: 0x0123_4567_89ab_cdef,
            },
            Frame::HelloAck { status: ack::OK, nonce: 9, conn_seq: 1, flags: 0, kernel: 0 },
            Frame::HelloAck { status: ack::OK, nonce: 9, conn_seq: 1, flags: FLAG_VERBS, kernel: 0xfeed_f00d },
            Frame::QpInfo { qpn: 0xab_cdef, psn: 0x12_3456, gid: [7; 16], lid: 0xffff, proto: 2 },
            Frame::Challenge { nonce: [0x5a; 16], instance: 0x0123_4567_89ab_cdef, lnc: 1023 },
            Frame::HelloAck { status: ack::NO_AUTH, nonce: 9, conn_seq: 1, flags: 0, kernel: 7 },
            Frame::HelloAck { status: ack::BAD_PROOF, nonce: 9, conn_seq: 1, flags: 0, kernel: 7 },
            Frame::Proof { mac: [0xa5; 32] },
            Frame::Data { seq: 5, offset: 1 << 20, len: 4096, total: (1 << 20) + 4096, src_page: None },
            Frame::Data { seq: 0, offset: 0, len: 0, total: 0, src_page: None },
            Frame::Data { seq: 1, offset: 0, len: 1 << 19, total: 1 << 26, src_page: Some(0) },
            Frame::Data { seq: 2, offset: 1 << 19, len: 1 << 19, total: 1 << 26, src_page: Some(4095) },
            Frame::Ack { seq: u64::MAX, status: ack::TOO_LONG, size: 12 },
            Frame::HelloAck { status: ack::OK, nonce: 9, conn_seq: 1, flags: FLAG_SHM, kernel: 7 },
            Frame::ShmInfo { pid: 4242, fd: 17, token: 0x1234_5678_9abc_def0, addr: 0x7f00_0000_0000, size: 133_632 },
            Frame::ShmReady { status: ack::OK },
            Frame::ShmReady { status: ack::REFUSED },
            Frame::ShmReady { status: ack::STAGE },
            Frame::Wake,
            Frame::OfiName { rail: 1, piece: 0, nrails: 2, write: true, provider: 0xdead_beef, len: 16, bytes: [7; OFI_PIECE] },
            Frame::OfiName { rail: 0, piece: 1, nrails: 1, write: false, provider: 1, len: 32, bytes: [0xa5; OFI_PIECE] },
            Frame::HelloAck { status: ack::OK, nonce: 9, conn_seq: 1, flags: FLAG_OFI, kernel: 7 },
        ]
    }

    #[test]
    fn round_trip() {
        for f in samples() {
            assert_eq!(Frame::decode(&f.encode()), Ok(f));
        }
    }

    #[test]
    fn truncated_frames_are_reported_as_truncated() {
        for f in samples() {
            let h = f.encode();
            for n in 0..HEADER_LEN {
                assert_eq!(Frame::decode(&h[..n]), Err(WireError::Truncated), "{f:?} cut at {n}");
            }
        }
    }

    #[test]
    fn oversized_lengths_are_rejected() {
        let big = [
            Frame::Data { seq: 0, offset: 0, len: 1, total: MAX_MESSAGE + 1, src_page: None },
            Frame::Data { seq: 0, offset: 0, len: MAX_CHUNK + 1, total: MAX_MESSAGE, src_page: None },
            Frame::Data { seq: 0, offset: u64::MAX, len: 2, total: MAX_MESSAGE, src_page: None },
            Frame::Data { seq: 0, offset: 0, len: 2, total: 2, src_page: Some(4096) },
            Frame::Data { seq: 0, offset: 10, len: 10, total: 19, src_page: None },
            Frame::Data { seq: 0, offset: u64::MAX - 1, len: u64::MAX - 1, total: u64::MAX, src_page: None },
        ];
        for f in big {
            assert!(matches!(Frame::decode(&f.encode()), Err(WireError::BadField(_))), "{f:?}");
        }
        let mut h = Frame::Ack { seq: 1, status: 0, size: 0 }.encode();
        h[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Frame::decode(&h).is_err());
        let mut h = Frame::Hello { stream: 0, nstreams: 1, nonce: 0, conn_seq: 0, src_lnc: 0, dst_lnc: 0, flags: 0, kernel: 0 }.encode();
        h[24..32].copy_from_slice(&(MAX_STREAMS + 1).to_le_bytes());
        assert_eq!(Frame::decode(&h), Err(WireError::BadField("stream count")));
        h[24..32].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Frame::decode(&h), Err(WireError::BadField("stream count")));
        h[24..32].copy_from_slice(&2u64.to_le_bytes());
        h[6..8].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(Frame::decode(&h), Err(WireError::BadField("stream index")));
        h[6..8].copy_from_slice(&0u16.to_le_bytes());
        for (c, why) in [(1u64 << 48 | 1024 << 32 | 2, "lnc"), (1024 << 48 | 2, "lnc"), ((KNOWN_FLAGS + 1) << 16 | 2, "hello flags")] {
            h[24..32].copy_from_slice(&c.to_le_bytes());
            assert_eq!(Frame::decode(&h), Err(WireError::BadField(why)), "c = {c:#x}");
        }
        let name = |rail, piece, nrails, len| Frame::OfiName { rail, piece, nrails, write: true, provider: 0, len, bytes: [0; OFI_PIECE] };
        for (f, why) in [
            (name(2, 0, 2, 8), "ofi rails"),
            (name(0, 0, 0, 8), "ofi rails"),
            (name(0, 0, 17, 8), "ofi rails"),
            (name(0, 0, 1, 0), "ofi name length"),
            (name(0, 1, 1, 24), "ofi name length"),
            (name(0, 0, 1, OFI_NAME_MAX as u16 + 1), "ofi name length"),
        ] {
            assert_eq!(Frame::decode(&f.encode()), Err(WireError::BadField(why)), "{f:?}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let data = Frame::Data { seq: 5, offset: 1 << 20, len: 4096, total: (1 << 20) + 4096, src_page: None };
        let mut h = data.encode();
        h[0] = b'X';
        assert_eq!(Frame::decode(&h), Err(WireError::BadMagic));
        assert_eq!(Frame::decode(b"GET / HTTP/1.1"), Err(WireError::BadMagic));
        let mut h = data.encode();
        h[4] = 9;
        assert_eq!(Frame::decode(&h), Err(WireError::BadVersion(9)));
        let mut h = data.encode();
        h[5] = 77;
        assert_eq!(Frame::decode(&h), Err(WireError::BadKind(77)));
        // pseudo-random garbage after a valid magic and version: never a panic, never accepted
        // unless it is a well-formed frame that re-encodes to the same bytes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            let mut b = [0u8; HEADER_LEN];
            for byte in b.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            b[0..4].copy_from_slice(&MAGIC);
            b[4] = VERSION;
            b[5] = (x % 13) as u8;
            if let Ok(f) = Frame::decode(&b) {
                assert_eq!(f.encode(), b, "accepted frame must re-encode identically");
            }
        }
    }
}
