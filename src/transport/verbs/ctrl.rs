//! Control messages on the queue pair: one SEND carries a batch of fixed 32-byte records behind
//! a 16-byte header, little-endian.
//!
//! ```text
//! header: 0..4 magic "NRVC"   4..8 records (u32)   8..12 freed (u32)   12..16 0
//! record: 0 kind (u8)   1 status (u8)   2..4 0   4..8 rkey (u32)   8..16 seq (u64)
//!         16..24 a (u64)   24..32 b (u64)
//! ```
//! | kind   | direction          | a        | b      | rkey | status |
//! |--------|--------------------|----------|--------|------|--------|
//! | Cts    | receiver to sender | address  | length | rkey | 0, or 1: more follow |
//! | Ack    | receiver to sender | size     | 0      | 0    | OK or TOO_LONG |
//! | Rts    | sender to receiver | length   | 0      | 0    | 0      |
//! | Refuse | sender to receiver | length   | 0      | 0    | 0      |
//! | Size   | sender to receiver | length   | writes | 0    | 0      |
//!
//! A receive registered in several parts (its memory is longer than one registration may be)
//! sends one Cts per part, in order, each but the last with status 1.
//!
//! `freed` counts (mod 2^32) the receive requests the batch's sender has taken back from the
//! NIC and posted again since the queue pair started: the peer's credits (`proto.rs`). A batch
//! without records only returns credits.

use crate::status::{Error, Result};

const MAGIC: [u8; 4] = *b"NRVC";
pub const HEADER: usize = 16;
pub const RECORD: usize = 32;

/// Ack statuses (as the TCP transport's: `wire::ack`).
pub const OK: u8 = 0;
pub const TOO_LONG: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rec {
    /// The receive for message `seq` waits at `addr`, `len` bytes, writable with `rkey`; or that
    /// is one part of it, and `more` parts follow (each the next bytes of the receive).
    Cts { seq: u64, addr: u64, len: u64, rkey: u32, more: bool },
    /// The verdict on eager message `seq` (or on a request to send that the receive cannot take).
    Ack { seq: u64, status: u8, size: u64 },
    /// Message `seq` of `len` bytes waits for its Cts (a receive that sends none, one of at most
    /// `EAGER_MAX` bytes, answers Ack TOO_LONG).
    Rts { seq: u64, len: u64 },
    /// The sender refuses message `seq` of `len` bytes: the receive is shorter (both fail).
    Refuse { seq: u64, len: u64 },
    /// Message `seq` is `len` bytes in `writes` RDMA writes; the last one carries the immediate.
    Size { seq: u64, len: u64, writes: u64 },
}

impl Rec {
    fn parts(&self) -> (u8, u8, u32, u64, u64, u64) {
        match *self {
            Rec::Cts { seq, addr, len, rkey, more } => (1, more as u8, rkey, seq, addr, len),
            Rec::Ack { seq, status, size } => (2, status, 0, seq, size, 0),
            Rec::Rts { seq, len } => (3, 0, 0, seq, len, 0),
            Rec::Refuse { seq, len } => (4, 0, 0, seq, len, 0),
            Rec::Size { seq, len, writes } => (5, 0, 0, seq, len, writes),
        }
    }

    fn from_bytes(r: &[u8]) -> Result<Rec> {
        let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().expect("8 bytes"));
        let rkey = u32::from_le_bytes(r[4..8].try_into().expect("4 bytes"));
        let (kind, status, seq, a, b) = (r[0], r[1], u64_at(8), u64_at(16), u64_at(24));
        let bad = || Error::failure(format!("bad control record on the queue pair: kind {kind}, status {status}, seq {seq}"));
        if r[2] != 0 || r[3] != 0 {
            return Err(bad());
        }
        let rec = match kind {
            1 if status <= 1 && a.checked_add(b).is_some() => Rec::Cts { seq, addr: a, len: b, rkey, more: status == 1 },
            2 if (status == OK || status == TOO_LONG) && rkey == 0 && b == 0 => Rec::Ack { seq, status, size: a },
            3 if status == 0 && rkey == 0 && b == 0 => Rec::Rts { seq, len: a },
            4 if status == 0 && rkey == 0 && b == 0 => Rec::Refuse { seq, len: a },
            5 if status == 0 && rkey == 0 && b >= 2 && b <= a => Rec::Size { seq, len: a, writes: b },
            _ => return Err(bad()),
        };
        Ok(rec)
    }
}

/// Records that fit a control buffer of `buf` bytes.
pub const fn capacity(buf: usize) -> usize {
    (buf - HEADER) / RECORD
}

/// Writes a batch into `out` (at least `HEADER + RECORD * recs.len()` bytes); its length.
pub fn encode(out: &mut [u8], freed: u32, recs: &[Rec]) -> usize {
    out[..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&(recs.len() as u32).to_le_bytes());
    out[8..12].copy_from_slice(&freed.to_le_bytes());
    out[12..16].fill(0);
    for (i, r) in recs.iter().enumerate() {
        let (kind, status, rkey, seq, a, b) = r.parts();
        let o = &mut out[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
        o[0] = kind;
        o[1] = status;
        o[2..4].fill(0);
        o[4..8].copy_from_slice(&rkey.to_le_bytes());
        o[8..16].copy_from_slice(&seq.to_le_bytes());
        o[16..24].copy_from_slice(&a.to_le_bytes());
        o[24..32].copy_from_slice(&b.to_le_bytes());
    }
    HEADER + recs.len() * RECORD
}

/// Reads a batch: the peer's `freed` count and its records.
pub fn decode(bytes: &[u8], out: &mut Vec<Rec>) -> Result<u32> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC || bytes[12..16] != [0; 4] {
        return Err(Error::failure(format!("bad control message on the queue pair ({} bytes)", bytes.len())));
    }
    let n = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if bytes.len() != HEADER + n * RECORD {
        return Err(Error::failure(format!("control message of {} bytes announces {n} records", bytes.len())));
    }
    for r in bytes[HEADER..].chunks_exact(RECORD) {
        out.push(Rec::from_bytes(r)?);
    }
    Ok(u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_comes_back_as_it_went() {
        let recs = [
            Rec::Cts { seq: u64::MAX, addr: 0x7fff_0000_1003, len: (64 << 20) + 3, rkey: 0xdead_beef, more: false },
            Rec::Cts { seq: 3, addr: 0x1000, len: 1 << 20, rkey: 5, more: true },
            Rec::Ack { seq: 7, status: TOO_LONG, size: 0 },
            Rec::Ack { seq: 8, status: OK, size: 4096 },
            Rec::Rts { seq: 9, len: 1 << 40 },
            Rec::Refuse { seq: 10, len: 5000 },
            Rec::Size { seq: 11, len: (64 << 20) + 3, writes: 65 },
        ];
        let mut buf = vec![0u8; HEADER + recs.len() * RECORD];
        let n = encode(&mut buf, 0xfffe_0001, &recs);
        assert_eq!(n, buf.len());
        let mut got = Vec::new();
        assert_eq!(decode(&buf, &mut got).unwrap(), 0xfffe_0001);
        assert_eq!(got, recs);
        // A credit-only batch.
        let n = encode(&mut buf, 5, &[]);
        got.clear();
        assert_eq!((decode(&buf[..n], &mut got).unwrap(), got.len()), (5, 0));
    }

    #[test]
    fn malformed_batches_are_refused() {
        let mut buf = vec![0u8; HEADER + 2 * RECORD];
        let n = encode(&mut buf, 1, &[Rec::Rts { seq: 1, len: 9000 }, Rec::Ack { seq: 2, status: OK, size: 3 }]);
        let mut out = Vec::new();
        assert!(decode(&buf[..n - 1], &mut out).is_err(), "short");
        assert!(decode(&buf[..HEADER - 1], &mut out).is_err(), "no header");
        let mut b = buf.clone();
        b[0] = b'X';
        assert!(decode(&b, &mut out).is_err(), "magic");
        for (at, v) in [(HEADER, 9u8), (HEADER + 1, 1), (HEADER + 2, 1), (HEADER + RECORD + 1, 7), (HEADER + RECORD + 5, 1)] {
            let mut b = buf.clone();
            b[at] = v;
            out.clear();
            assert!(decode(&b, &mut out).is_err(), "byte {at} = {v}");
        }
        // A Cts whose range wraps, a Size of fewer than two writes.
        for r in [Rec::Cts { seq: 1, addr: u64::MAX, len: 2, rkey: 1, more: false }, Rec::Size { seq: 1, len: 5, writes: 1 }] {
            let n = encode(&mut buf, 0, &[r]);
            out.clear();
            assert!(decode(&buf[..n], &mut out).is_err(), "{r:?}");
        }
        // A Cts whose status is neither 0 nor 1.
        let n = encode(&mut buf, 0, &[Rec::Cts { seq: 1, addr: 64, len: 2, rkey: 1, more: true }]);
        buf[HEADER + 1] = 2;
        out.clear();
        assert!(decode(&buf[..n], &mut out).is_err(), "Cts status 2");
    }
}
