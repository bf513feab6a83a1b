//! The protocol's names on the wire: tags, operation contexts, remote CQ data, and the control
//! payloads (little-endian byte structs). Layouts are in the module doc of `proto`.

use crate::status::{Error, Result};

/// Messages up to this size go eagerly (a tagged send into the peer's bounce buffers).
pub const EAGER_MAX: usize = 8192;
/// Read mode: a large message is read in stripes of this size, dealt round-robin over the
/// rails. Write mode: a message shorter than two stripes is written over one rail.
pub const STRIPE: u64 = 512 << 10;
/// The longest message is this many stripes (`Proto::max_message`: 512 GiB with 512 KiB
/// stripes): it bounds the reads one message takes, and its writes to about as many.
pub const MAX_STRIPES: u64 = 1 << 20;
/// Write mode: the longest single write (less where a rail's `max_msg` is smaller).
pub const MAX_WRITE: u64 = 4 << 20;
/// Rails one communicator may use (a clear-to-send names an address and key per rail).
pub const MAX_RAILS: usize = 16;
/// The largest control payload (a clear-to-send over `MAX_RAILS` rails is 272 bytes).
pub const CTRL_SIZE: usize = 512;

const TYPE_SHIFT: u32 = 60;
const SEQ_MASK: u64 = (1 << TYPE_SHIFT) - 1;

/// A tagged message's type: the top 4 bits of its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Eager = 1,
    Cts = 2,
    Rts = 3,
    Ack = 4,
    Refuse = 5,
    Size = 6,
}

pub fn tag(t: Type, seq: u64) -> u64 {
    ((t as u64) << TYPE_SHIFT) | (seq & SEQ_MASK)
}

pub fn untag(tag: u64) -> Result<(Type, u64)> {
    let t = match tag >> TYPE_SHIFT {
        1 => Type::Eager,
        2 => Type::Cts,
        3 => Type::Rts,
        4 => Type::Ack,
        5 => Type::Refuse,
        6 => Type::Size,
        t => return Err(Error::failure(format!("tagged message of unknown type {t} (tag {tag:#x})"))),
    };
    Ok((t, tag & SEQ_MASK))
}

/// What an operation's context names: a bounce receive (its slot in the rail's pool), a send
/// from the send-buffer pool (its slot), a message's write or read (its seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctx {
    Bounce(usize),
    Slot(usize),
    Write(u64),
    Read(u64),
}

impl Ctx {
    pub fn encode(self) -> u64 {
        match self {
            Ctx::Bounce(i) => (1 << TYPE_SHIFT) | i as u64,
            Ctx::Slot(i) => (2 << TYPE_SHIFT) | i as u64,
            Ctx::Write(seq) => (3 << TYPE_SHIFT) | (seq & SEQ_MASK),
            Ctx::Read(seq) => (4 << TYPE_SHIFT) | (seq & SEQ_MASK),
        }
    }

    pub fn decode(c: u64) -> Result<Ctx> {
        let v = c & SEQ_MASK;
        Ok(match c >> TYPE_SHIFT {
            1 => Ctx::Bounce(v as usize),
            2 => Ctx::Slot(v as usize),
            3 => Ctx::Write(v),
            4 => Ctx::Read(v),
            _ => return Err(Error::failure(format!("completion with an unknown context {c:#x}"))),
        })
    }
}

/// Remote CQ data is taken as 32 bits, whatever the provider offers (EFA and `verbs;ofi_rxm`
/// offer 4 bytes; what lies above them is not looked at).
pub const CQ_DATA_MASK: u64 = 0xffff_ffff;

/// Remote CQ data of each of a message's writes: its seq, low 32 bits.
pub fn cq_data(seq: u64) -> u64 {
    seq & CQ_DATA_MASK
}

/// The low 32 bits of a message's seq, from the remote CQ data of one of its writes.
pub fn cq_seq(data: u64) -> u64 {
    data & CQ_DATA_MASK
}

/// A verdict on a message (`crate::wire::ack` statuses): 0..2 status, 2..8 zero, 8..16 size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub status: u16,
    pub size: u64,
}

/// Clear-to-send: 0..8 capacity, 8..12 zero (unused: the sender chooses its writes), 12..16
/// rails (0: no addresses, the receive is too short for anything but an eager message), then per
/// rail: address u64, key u64.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cts {
    pub cap: u64,
    pub rails: Vec<(u64, u64)>,
}

/// Ready-to-send (read mode): 0..8 length, 8..12 zero, 12..16 rails, then per rail: address
/// u64, key u64 of the sender's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rts {
    pub len: u64,
    pub rails: Vec<(u64, u64)>,
}

/// Refusal (write mode, the receive is shorter than the send): 0..8 the send's length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refuse {
    pub len: u64,
}

/// Size (write mode, sent with a message's writes): 0..8 the message's length, 8..16 the number
/// of writes that carry it (the receiver's receive is complete when this and that many writes
/// landed, in any order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub len: u64,
    pub writes: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn malformed(what: &str, b: &[u8]) -> Error {
    Error::failure(format!("malformed {what} of {} bytes", b.len()))
}

/// Writes (address, key) pairs after a 16-byte header; returns the payload length.
fn put_rails(out: &mut [u8; CTRL_SIZE], rails: &[(u64, u64)]) -> usize {
    out[12..16].copy_from_slice(&(rails.len() as u32).to_le_bytes());
    for (i, (addr, key)) in rails.iter().enumerate() {
        out[16 + 16 * i..24 + 16 * i].copy_from_slice(&addr.to_le_bytes());
        out[24 + 16 * i..32 + 16 * i].copy_from_slice(&key.to_le_bytes());
    }
    16 + 16 * rails.len()
}

fn get_rails(what: &str, b: &[u8]) -> Result<Vec<(u64, u64)>> {
    if b.len() < 16 {
        return Err(malformed(what, b));
    }
    let n = u32_at(b, 12) as usize;
    if n > MAX_RAILS || b.len() != 16 + 16 * n {
        return Err(malformed(what, b));
    }
    Ok((0..n).map(|i| (u64_at(b, 16 + 16 * i), u64_at(b, 24 + 16 * i))).collect())
}

impl Ack {
    pub fn put(&self, out: &mut [u8; CTRL_SIZE]) -> usize {
        out[..16].fill(0);
        out[0..2].copy_from_slice(&self.status.to_le_bytes());
        out[8..16].copy_from_slice(&self.size.to_le_bytes());
        16
    }
    pub fn parse(b: &[u8]) -> Result<Ack> {
        if b.len() != 16 {
            return Err(malformed("acknowledgement", b));
        }
        Ok(Ack { status: u16::from_le_bytes([b[0], b[1]]), size: u64_at(b, 8) })
    }
}

impl Cts {
    pub fn put(&self, out: &mut [u8; CTRL_SIZE]) -> usize {
        debug_assert!(self.rails.len() <= MAX_RAILS);
        out[0..8].copy_from_slice(&self.cap.to_le_bytes());
        out[8..12].fill(0);
        put_rails(out, &self.rails)
    }
    pub fn parse(b: &[u8]) -> Result<Cts> {
        let rails = get_rails("clear-to-send", b)?;
        Ok(Cts { cap: u64_at(b, 0), rails })
    }
}

impl Rts {
    pub fn put(&self, out: &mut [u8; CTRL_SIZE]) -> usize {
        debug_assert!(self.rails.len() <= MAX_RAILS);
        out[0..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..12].fill(0);
        put_rails(out, &self.rails)
    }
    pub fn parse(b: &[u8]) -> Result<Rts> {
        let rails = get_rails("ready-to-send", b)?;
        Ok(Rts { len: u64_at(b, 0), rails })
    }
}

impl Refuse {
    pub fn put(&self, out: &mut [u8; CTRL_SIZE]) -> usize {
        out[0..8].copy_from_slice(&self.len.to_le_bytes());
        8
    }
    pub fn parse(b: &[u8]) -> Result<Refuse> {
        if b.len() != 8 {
            return Err(malformed("refusal", b));
        }
        Ok(Refuse { len: u64_at(b, 0) })
    }
}

impl Size {
    pub fn put(&self, out: &mut [u8; CTRL_SIZE]) -> usize {
        out[0..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..16].copy_from_slice(&self.writes.to_le_bytes());
        16
    }
    pub fn parse(b: &[u8]) -> Result<Size> {
        if b.len() != 16 {
            return Err(malformed("size message", b));
        }
        Ok(Size { len: u64_at(b, 0), writes: u64_at(b, 8) })
    }
}
