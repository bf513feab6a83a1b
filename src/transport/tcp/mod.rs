//! The TCP data path: several streams per communicator, bytes straight between tensor and socket.
//!
//! A message of `total` bytes is cut into chunks (one chunk when small), each a Data header
//! followed by its bytes, dealt round-robin over the streams starting at `seq % streams`. The
//! receiver reads a header into a 40-byte buffer, then the payload with `recv` straight into the
//! posted tensor: no staging copy. A chunk whose receive is not posted yet stays in the socket
//! (the stream is parked) so TCP flow control holds the sender back. The receiver answers every
//! message with an Ack on stream 0; a send completes when its Ack arrives, so a receive that was
//! too short fails both sides.
//!
//! The same streams are the control link of the other transports ([`TcpTransport::link`]):
//! then they carry no Data, and every frame but a Data header is handed to the transport above
//! ([`TcpTransport::take_frames`]); the streams' end is how either side learns that the other
//! has gone.

mod congestion;
mod stream;

#[cfg(test)]
pub use congestion::congestion_name;
pub use congestion::{congestion_for, connect_with, set_congestion};
pub use stream::Stream;

use super::{Completions, Done, Msg, Transport, Wait, WaitFd, send_verdict, short_receive};
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::copy::{ALIAS, slow_distance};
use crate::tensor::Region;
use crate::transport::Kind;
use crate::wire::{Frame, HEADER_LEN, ack};
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use stream::{Io, Rx, TxItem, sendfile_enabled};

/// Messages above this are split into chunks of this size over the streams.
pub const CHUNK: usize = 512 * 1024;
/// Messages up to this size all travel on stream 0.
pub const SMALL: usize = 64 * 1024;
/// A caller waiting for a small receive reads stream 0 alone; every this many polls it checks
/// all streams (a message longer than the receive, cut into chunks over them, fails it).
const ALL_STREAMS_EVERY: u32 = 16;
/// A caller spinning on a send above SMALL reads stream 0 for its Ack on one poll in this many
/// (the others only push bytes): a caller cycling through 64 send communicators made 2 million
/// `recv` calls that found nothing per 16 GiB, on the CPU that also sends (docs/transports.md).
const ACK_READ_EVERY: u32 = 8;
/// A spinning caller's completed receive of at most this many bytes leaves its Ack queued for a
/// moment (`poll`); a longer one sends it at once. The deferral saves an answer one `sendmsg` (a
/// few µs, which matters next to a small message's ~8 µs), but while the caller then computes
/// without calling the library the sender waits for that Ack: a pipeline of large messages (send
/// i+1 while the receiver works on i) would lose its overlap (docs/transports.md).
const DEFER_ACK_MAX: u64 = SMALL as u64;
/// Chunks at least this long go by `sendfile` when they lie in a memfd tensor.
const SENDFILE_MIN: usize = 64 * 1024;

/// A posted receive: `slots[i]` pairs with wire message `base_seq + i`.
struct RecvSlot {
    /// The communicator's number of the receive.
    seq: u64,
    region: Region,
    total: Option<u64>,
    got: u64,
    failed: bool,
    finished: bool,
}

pub struct TcpTransport {
    kind: Kind,
    streams: Vec<Stream>,
    /// Data moves on the streams (false: the control link of another transport).
    data: bool,
    /// Control link: frames for the transport above, in arrival order.
    frames: Vec<Frame>,
    /// The next wire message number (data path).
    next_seq: u64,
    /// Send side: sends whose Ack has not come yet: (wire number, communicator's number, its
    /// memory, kept until then).
    awaiting_ack: VecDeque<(u64, u64, Region)>,
    /// Receive side: posted receives, `slots[i]` pairs with wire message `base_seq + i`.
    base_seq: u64,
    slots: VecDeque<RecvSlot>,
    /// Calls of `poll` (which of them check every stream).
    polls: u32,
}

fn failure_on(i: usize, what: &str) -> Error {
    Error::failure(format!("stream {i}: {what}"))
}

impl TcpTransport {
    /// The TCP data path over a connection's streams.
    pub fn new(kind: Kind, streams: Vec<Stream>) -> TcpTransport {
        TcpTransport {
            kind,
            streams,
            data: true,
            frames: Vec::new(),
            next_seq: 0,
            awaiting_ack: VecDeque::new(),
            base_seq: 0,
            slots: VecDeque::new(),
            polls: 0,
        }
    }

    /// The streams as another transport's control link: no Data on them.
    pub fn link(kind: Kind, streams: Vec<Stream>) -> TcpTransport {
        TcpTransport { data: false, ..TcpTransport::new(kind, streams) }
    }

    /// A control link becomes the data path (a same-host set-up fell back to TCP before any
    /// message moved).
    pub fn carry_data(&mut self) {
        self.data = true;
    }

    /// Frames the link read for the transport above.
    pub fn take_frames(&mut self) -> Vec<Frame> {
        std::mem::take(&mut self.frames)
    }

    /// Queues a control frame on stream 0.
    pub fn send_frame(&mut self, f: &Frame) {
        self.queue_control(f.encode());
    }

    /// Reads every stream until it would block, and sends what is queued (a control link's
    /// progress).
    pub fn read_all(&mut self) -> Result<()> {
        for i in 0..self.streams.len() {
            self.streams[i].flush(i)?;
            if !self.streams[i].peer_closed {
                self.pump_rx_until(i, None, &mut Completions::new(&mut |_| {}, None))?;
            }
        }
        self.flush_control()
    }

    /// Reads the streams that have input now (one `poll`), and sends what is queued (a control
    /// link read by a caller's poll).
    #[cfg_attr(not(feature = "verbs"), allow(dead_code))]
    pub fn read_ready(&mut self) -> Result<()> {
        for i in 0..self.streams.len() {
            if !self.streams[i].tx.is_empty() {
                self.streams[i].flush(i)?;
            }
        }
        self.pump_ready(self.streams.len(), None, &mut Completions::new(&mut |_| {}, None))
    }

    fn flush_tx(&mut self, i: usize) -> Result<()> {
        self.streams[i].flush(i)
    }

    /// One `poll` over the first `n` streams, then reads those with input (or bytes read ahead)
    /// until `wait` is done.
    fn pump_ready(&mut self, n: usize, wait: Option<Wait>, done: &mut Completions<'_>) -> Result<()> {
        let mut fds = [0 as RawFd; crate::config::MAX_STREAMS];
        for (f, s) in fds.iter_mut().zip(&self.streams[..n]) {
            *f = s.fd();
        }
        let mut ready = [false; crate::config::MAX_STREAMS];
        crate::sys::epoll::readable(&fds[..n], &mut ready[..n]).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "poll", &e))?;
        for (i, ready) in ready.iter().enumerate().take(n) {
            let s = &self.streams[i];
            if (*ready || s.has_inbox()) && !s.peer_closed && !s.parked && wait.is_none_or(|w| !done.saw(w.seq)) {
                self.pump_rx_until(i, wait, done)?;
            }
        }
        Ok(())
    }

    /// Reads stream `i` until it would block, or (a caller's poll) as soon as `until` is done:
    /// only the progress thread, which relies on edges, must read to the end, and it is woken by
    /// the same edge and does.
    fn pump_rx_until(&mut self, i: usize, until: Option<Wait>, done: &mut Completions<'_>) -> Result<()> {
        self.streams[i].parked = false;
        let fd = self.streams[i].sock.as_raw_fd();
        let idle_tx = self.streams[i].tx.is_empty();
        loop {
            let s = &mut self.streams[i];
            match &mut s.rx {
                Rx::Header { buf, have } => {
                    if *have < HEADER_LEN {
                        match s.inbox.read_header(fd, buf[*have..].as_mut_ptr(), HEADER_LEN - *have)? {
                            Io::WouldBlock => return Ok(()),
                            Io::Done(0) if i != 0 && *have == 0 && idle_tx => {
                                // Between frames, nothing to send here: wait for stream 0's end
                                // (under reordering it can come after this one, with Acks before it).
                                self.streams[i].peer_closed = true;
                                return Ok(());
                            }
                            Io::Done(0) => return Err(Error::failure(format!("peer closed stream {i}"))),
                            Io::Done(n) => *have += n,
                        }
                        continue;
                    }
                    let frame = Frame::decode(&buf[..]).map_err(|e| failure_on(i, &e.to_string()))?;
                    let next = match frame {
                        Frame::Data { seq, offset, len, total, src_page } if self.kind == Kind::Recv && self.data => {
                            match self.start_chunk(seq, offset, len, total, src_page, done)? {
                                Some(rx) => rx,
                                None => {
                                    // Receive not posted yet: parked until a post (the header
                                    // stays read).
                                    self.streams[i].parked = true;
                                    return Ok(());
                                }
                            }
                        }
                        Frame::Ack { seq, status, size } if self.kind == Kind::Send && self.data => {
                            self.on_ack(seq, status, size, done)?;
                            if until.is_some_and(|w| done.saw(w.seq)) {
                                self.streams[i].rx = Rx::Header { buf: [0; HEADER_LEN], have: 0 };
                                return Ok(());
                            }
                            Rx::Header { buf: [0; HEADER_LEN], have: 0 }
                        }
                        // A control link hands every frame but data to the transport above.
                        f if !self.data && !matches!(f, Frame::Data { .. }) => {
                            self.frames.push(f);
                            Rx::Header { buf: [0; HEADER_LEN], have: 0 }
                        }
                        f => return Err(failure_on(i, &format!("unexpected frame {f:?}"))),
                    };
                    self.streams[i].rx = next;
                }
                Rx::Payload { seq, ptr, remaining, len, bounce } => {
                    if *remaining > 0 {
                        let got = match bounce {
                            None => s.inbox.read(fd, *ptr, *remaining)?,
                            Some(src) => s.inbox.read_bounced(fd, *ptr, *src, *remaining)?,
                        };
                        match got {
                            Io::WouldBlock => return Ok(()),
                            Io::Done(0) => return Err(Error::failure(format!("peer closed stream {i} mid-message"))),
                            Io::Done(n) => {
                                *ptr = ptr.wrapping_add(n);
                                *remaining -= n;
                                if let Some(src) = bounce {
                                    *src = (*src + n) % ALIAS;
                                }
                            }
                        }
                        continue;
                    }
                    let (seq, len) = (*seq, *len);
                    if self.chunk_read(i, seq, len, until, done) {
                        return Ok(());
                    }
                }
                Rx::Staged { seq, mem, off, buf, fill, remaining, len } => {
                    if *remaining > 0 && *fill < buf.len() {
                        let want = (*remaining).min(buf.len() - *fill);
                        match s.inbox.read(fd, buf[*fill..].as_mut_ptr(), want)? {
                            Io::WouldBlock => return Ok(()),
                            Io::Done(0) => return Err(Error::failure(format!("peer closed stream {i} mid-message"))),
                            Io::Done(n) => {
                                *fill += n;
                                *remaining -= n;
                            }
                        }
                        continue;
                    }
                    if *fill > 0 {
                        mem.write(*off, &buf[..*fill])?;
                        *off += *fill;
                        *fill = 0;
                    }
                    if *remaining > 0 {
                        continue;
                    }
                    let (seq, len) = (*seq, *len);
                    if self.chunk_read(i, seq, len, until, done) {
                        return Ok(());
                    }
                }
                Rx::Discard { seq, remaining, len } => {
                    if *remaining > 0 {
                        let mut scratch = [0u8; 16384];
                        let want = (*remaining).min(scratch.len());
                        match s.inbox.read(fd, scratch.as_mut_ptr(), want)? {
                            Io::WouldBlock => return Ok(()),
                            Io::Done(0) => return Err(Error::failure(format!("peer closed stream {i} mid-message"))),
                            Io::Done(n) => *remaining -= n,
                        }
                        continue;
                    }
                    let (seq, len) = (*seq, *len);
                    if self.chunk_read(i, seq, len, until, done) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A Data header arrived: where its bytes go, or `None` when its receive is not posted yet.
    fn start_chunk(
        &mut self,
        seq: u64,
        offset: u64,
        len: u64,
        total: u64,
        src_page: Option<u16>,
        done: &mut Completions<'_>,
    ) -> Result<Option<Rx>> {
        let idx =
            seq.checked_sub(self.base_seq).ok_or_else(|| Error::failure(format!("data for message {seq}, which already completed")))?;
        if idx >= self.slots.len() as u64 {
            return Ok(None);
        }
        let slot = &mut self.slots[idx as usize];
        if slot.finished {
            return Err(Error::failure(format!("data for message {seq}, which already completed")));
        }
        match slot.total {
            Some(t) if t != total => {
                return Err(Error::failure(format!("message {seq}: chunks disagree on its length ({t} vs {total})")));
            }
            Some(_) => {}
            None => {
                slot.total = Some(total);
                let cap = slot.region.len() as u64;
                if total > cap {
                    // Nothing is written; the Ack fails the send too.
                    slot.failed = true;
                    done.push(Done::Failed { seq: slot.seq, err: short_receive(cap, total) });
                    self.queue_control(Frame::Ack { seq, status: ack::TOO_LONG, size: 0 }.encode());
                }
            }
        }
        let slot = &self.slots[idx as usize];
        let rx = if slot.failed {
            Rx::Discard { seq, remaining: len as usize, len }
        } else if let Some(mem) = slot.region.staging() {
            let cap = (len as usize).min(CHUNK);
            Rx::Staged { seq, mem: mem.clone(), off: offset as usize, buf: vec![0; cap], fill: 0, remaining: len as usize, len }
        } else {
            let ptr = slot.region.ptr().wrapping_add(offset as usize);
            let bounce = src_page.map(usize::from).filter(|&p| slow_distance(ptr as usize, p, len as usize));
            Rx::Payload { seq, ptr, remaining: len as usize, len, bounce }
        };
        Ok(Some(rx))
    }

    /// Stream `i` has read the last byte of a chunk: back to headers, the chunk counted; true when
    /// a caller's poll should stop here (`until` is done).
    fn chunk_read(&mut self, i: usize, seq: u64, len: u64, until: Option<Wait>, done: &mut Completions<'_>) -> bool {
        self.streams[i].rx = Rx::Header { buf: [0; HEADER_LEN], have: 0 };
        self.end_chunk(seq, len, done);
        until.is_some_and(|w| done.saw(w.seq))
    }

    fn end_chunk(&mut self, seq: u64, len: u64, done: &mut Completions<'_>) {
        let idx = (seq - self.base_seq) as usize;
        let slot = &mut self.slots[idx];
        slot.got += len;
        if Some(slot.got) == slot.total {
            slot.finished = true;
            if !slot.failed {
                done.push(Done::Ok { seq: slot.seq, bytes: slot.got });
                let h = Frame::Ack { seq, status: ack::OK, size: slot.got }.encode();
                self.queue_control(h);
            }
        }
        while self.slots.front().is_some_and(|s| s.finished) {
            self.slots.pop_front();
            self.base_seq += 1;
        }
    }

    fn queue_control(&mut self, hdr: [u8; HEADER_LEN]) {
        self.streams[0].tx.push_back(TxItem {
            hdr,
            hdr_done: 0,
            data: std::ptr::null(),
            data_len: 0,
            data_done: 0,
            _mem: None,
            staged: None,
            buf: None,
            file: None,
        });
    }

    /// The peer's verdict on a send: `ack::OK` with the bytes it received, or `ack::TOO_LONG`
    /// when the matching receive was shorter (the send fails, the communicator goes on).
    /// Anything else is a protocol error.
    fn on_ack(&mut self, wire: u64, status: u16, size: u64, done: &mut Completions<'_>) -> Result<()> {
        let pos = self
            .awaiting_ack
            .iter()
            .position(|(w, _, _)| *w == wire)
            .ok_or_else(|| Error::failure(format!("ack for unknown message {wire}")))?;
        let (_, seq, region) = self.awaiting_ack.remove(pos).expect("position is in range");
        done.push(send_verdict(seq, region.len() as u64, status, size)?);
        Ok(())
    }

    fn queue_send(&mut self, m: Msg) {
        let wire = self.next_seq;
        self.next_seq += 1;
        let region = m.region;
        let total = region.len();
        let n = self.streams.len().max(1);
        let nchunks = total.div_ceil(CHUNK).max(1);
        let chunk = if nchunks == 1 { total } else { CHUNK };
        let staged = region.staging().cloned();
        // Large messages from our own (memfd) tensors: the socket takes references to the pages
        // instead of a copy. Safe to reuse once the send completes: that is at the receiver's
        // Ack, after it has read every byte.
        let file = match region.memory() {
            Some(m) if staged.is_none() && chunk >= SENDFILE_MIN && sendfile_enabled() => {
                m.fd().map(|fd| (fd, region.ptr() as u64 - m.base() as u64))
            }
            _ => None,
        };
        for k in 0..nchunks {
            let off = k * chunk;
            let len = chunk.min(total - off);
            // Pages handed to a socket to this host arrive as they are: the receiver may have to
            // steer its copy around their offsets (sys/copy.rs, "Copy distance"). Across hosts
            // the NIC's buffers decide, not ours.
            let src_page = file
                .filter(|_| self.streams.first().is_some_and(|s| s.same_host))
                .map(|(_, base)| ((base + off as u64) % ALIAS as u64) as u16);
            let hdr = Frame::Data { seq: wire, offset: off as u64, len: len as u64, total: total as u64, src_page }.encode();
            // Small messages share stream 0 with the Acks: a ping-pong touches one socket.
            let s = if total <= SMALL { 0 } else { (wire as usize + k) % n };
            self.streams[s].tx.push_back(TxItem {
                hdr,
                hdr_done: 0,
                data: if staged.is_some() { std::ptr::null() } else { region.ptr().wrapping_add(off) },
                data_len: len,
                data_done: 0,
                _mem: Some(region.clone()),
                staged: staged.clone().map(|m| (m, off)),
                buf: None,
                file: file.map(|(fd, base)| (fd, base + off as u64)),
            });
        }
        self.awaiting_ack.push_back((wire, m.seq, region));
    }
}

impl Transport for TcpTransport {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn post(&mut self, m: Msg, _done: &mut Completions<'_>) -> Result<()> {
        debug_assert!(self.data, "a control link carries no messages");
        match self.kind {
            Kind::Recv => {
                self.slots.push_back(RecvSlot { seq: m.seq, region: m.region, total: None, got: 0, failed: false, finished: false })
            }
            Kind::Send => self.queue_send(m),
        }
        Ok(())
    }

    /// A receive may unpark a stream, so everything is read; a send only needs its bytes pushed
    /// (its Ack and any error come with an epoll edge).
    fn after_post(&mut self, pump: bool, done: &mut Completions<'_>) -> Result<bool> {
        let mut left = false;
        let recv = self.kind == Kind::Recv;
        for i in 0..self.streams.len() {
            if !self.streams[i].tx.is_empty() {
                self.flush_tx(i)?;
            }
            // A receive unparks the streams whose next chunk waited for it; every other stream
            // was read until it would block (edge-triggered epoll's rule), so only new data, with
            // a new edge, can be there.
            if recv && self.streams[i].parked && !self.streams[i].peer_closed {
                // Unpumped, the stream waits no more all the same (a caller that takes the
                // sockets back reads it like any other).
                if pump {
                    self.pump_rx_until(i, None, done)?;
                } else {
                    self.streams[i].parked = false;
                    left = true;
                }
            }
        }
        if recv && !self.streams.is_empty() && !self.streams[0].tx.is_empty() {
            self.flush_tx(0)?;
        }
        Ok(left)
    }

    fn progress(&mut self, done: &mut Completions<'_>) -> Result<()> {
        for i in 0..self.streams.len() {
            self.flush_tx(i)?;
            if !self.streams[i].peer_closed {
                self.pump_rx_until(i, None, done)?;
            }
        }
        // Acks queued while reading go out now rather than at the next event.
        self.flush_control()
    }

    fn poll(&mut self, wait: Option<Wait>, defer_control: bool, done: &mut Completions<'_>) -> Result<bool> {
        if self.streams.is_empty() {
            return self.progress(done).map(|_| false);
        }
        for i in 0..self.streams.len() {
            if !self.streams[i].tx.is_empty() {
                self.flush_tx(i)?;
            }
        }
        // What this wait concerns: a send's Ack comes on stream 0, and so does a small receive's
        // data when it is the oldest one posted. Then stream 0 is read directly (one `recv`,
        // which brings header and payload together); otherwise one poll() over all streams,
        // then reads only where something arrived.
        self.polls = self.polls.wrapping_add(1);
        let only0 = wait.is_some_and(|w| match self.kind {
            Kind::Send => true,
            Kind::Recv => {
                w.len <= SMALL && !self.polls.is_multiple_of(ALL_STREAMS_EVERY) && self.slots.front().is_some_and(|s| s.seq == w.seq)
            }
        });
        if only0 {
            let s0 = &self.streams[0];
            // A large send's Ack comes no sooner than its last byte has crossed (16 µs for
            // 64 KiB at 4 GB/s): only every ACK_READ_EVERY-th poll reads for it.
            let ack_later = self.kind == Kind::Send && wait.is_some_and(|w| w.len > SMALL) && !self.polls.is_multiple_of(ACK_READ_EVERY);
            if !ack_later && !s0.peer_closed && !s0.parked {
                self.pump_rx_until(0, wait, done)?;
            }
        } else {
            let all = wait.is_none() || self.kind == Kind::Recv;
            let n = if all { self.streams.len() } else { 1 };
            self.pump_ready(n, wait, done)?;
        }
        if !self.streams[0].tx.is_empty() {
            // The receive this caller waited for completed small (or failed): its Ack may wait.
            let small = wait.is_some_and(|w| done.saw(w.seq)) && done.watched().is_some_and(|b| b.is_none_or(|b| b <= DEFER_ACK_MAX));
            if defer_control && self.kind == Kind::Recv && small {
                return Ok(true);
            }
            self.flush_tx(0)?;
        }
        Ok(false)
    }

    fn flush_control(&mut self) -> Result<()> {
        if !self.streams.is_empty() && !self.streams[0].tx.is_empty() {
            self.flush_tx(0)?;
        }
        Ok(())
    }

    fn wait_fds(&self, out: &mut Vec<WaitFd>) {
        // A TCP send communicator receives only Acks, read by its caller's polls: no wake-ups
        // for them. A control link's owner reads every frame.
        let input = self.kind == Kind::Recv || !self.data;
        out.extend(self.streams.iter().map(|s| WaitFd { fd: s.fd(), input }));
    }

    fn spin_fds(&self, out: &mut Vec<WaitFd>) {
        if self.data {
            self.wait_fds(out);
        }
    }

    fn polls_sockets(&self) -> bool {
        true
    }

    /// A small receive's Ack waits for the caller's answer (`poll`).
    fn defers_control(&self) -> bool {
        self.kind == Kind::Recv
    }

    fn max_message(&self) -> u64 {
        crate::wire::MAX_MESSAGE
    }

    #[cfg(test)]
    fn has_queued_control(&self) -> bool {
        self.streams.first().is_some_and(|s| !s.tx.is_empty())
    }

    #[cfg(test)]
    fn congestion(&self) -> Vec<String> {
        self.streams.iter().map(|s| s.congestion()).collect()
    }
}
