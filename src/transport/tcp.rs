//! The TCP data path: several streams per communicator, bytes straight between tensor and socket.
//!
//! A message of `total` bytes is cut into chunks (one chunk when small), each a Data header
//! followed by its bytes, dealt round-robin over the streams starting at `seq % streams`. The
//! receiver reads a header into a 40-byte buffer, then the payload with `recv` straight into the
//! posted tensor: no staging copy. A chunk whose receive is not posted yet stays in the socket
//! (the stream is parked) so TCP flow control holds the sender back. The receiver answers every
//! message with an Ack on stream 0; a send completes when its Ack arrives, so a receive that was
//! too short fails both sides.

use crate::comm::request::{Kind, Request};
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::copy::{ALIAS, BOUNCE, slow_distance, with_bounce};
use crate::tensor::StagedMemory;
use crate::wire::{Frame, HEADER_LEN, ack};
use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// Messages above this are split into chunks of this size over the streams.
pub const CHUNK: usize = 512 * 1024;
/// Messages up to this size all travel on stream 0.
pub(crate) const SMALL: usize = 64 * 1024;
/// Bytes one `recv` may read ahead of a frame header (its payload, the next frames).
const INBOX: usize = 4096;
/// A caller waiting for a small receive reads stream 0 alone; every this many polls it checks
/// all streams (a message longer than the receive, cut into chunks over them, fails it).
const ALL_STREAMS_EVERY: u32 = 16;
/// A caller spinning on a send above SMALL reads stream 0 for its Ack on one poll in this many
/// (the others only push bytes): a caller cycling through 64 send communicators made 2 million
/// `recv` calls that found nothing per 16 GiB, on the CPU that also sends (README, "TCP tuning").
const ACK_READ_EVERY: u32 = 8;
/// A spinning caller's completed receive of at most this many bytes leaves its Ack queued for a
/// moment (`poll_fast`); a longer one sends it at once. The deferral saves an answer one
/// `sendmsg` (a few µs, which matters next to a small message's ~8 µs), but while the caller then
/// computes without calling the library the sender waits for that Ack: a pipeline of large
/// messages (send i+1 while the receiver works on i) would lose its overlap (README, "TCP tuning").
const DEFER_ACK_MAX: u64 = SMALL as u64;
/// Chunks at least this long go by `sendfile` when they lie in a memfd tensor.
const SENDFILE_MIN: usize = 64 * 1024;

/// `NEURON_RT_ASYNC_SENDRECV_TCP_SOCKBUF`: SO_SNDBUF/SO_RCVBUF in bytes (0, the default: the
/// kernel's autotuning, which measured best; see README).
fn sockbuf() -> usize {
    static B: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *B.get_or_init(|| std::env::var("NEURON_RT_ASYNC_SENDRECV_TCP_SOCKBUF").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// `NEURON_RT_ASYNC_SENDRECV_TCP_CONGESTION`: unset, streams to a peer on this host run `reno`
/// and streams across hosts the system's default (what the host's administrator chose for its
/// network); a name: that algorithm on every stream; `system`: never set. On loopback there is no
/// network to share, but BBR (a common default, this VM's included) paces every socket with
/// timers and drains it periodically to probe the round trip: 64 MiB messages measured 3.3-5.3
/// GB/s under BBR against 5.0-6.8 under reno (README, "TCP tuning"). Reno is the one algorithm the
/// kernel lets every process choose. It must be chosen before the handshake: BBR, once started
/// on a connection, leaves the socket paced when replaced.
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

/// Chunks of 64 KiB or more that lie in one of our memfd tensors go by `sendfile` (page
/// references instead of a copy into the socket: one copy in all, the receiver's, and half the
/// sender's CPU); `NEURON_RT_ASYNC_SENDRECV_TCP_SENDFILE=0` copies them with `sendmsg` instead.
/// Measured in README, "TCP tuning".
fn sendfile_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NEURON_RT_ASYNC_SENDRECV_TCP_SENDFILE").map(|v| v.trim() != "0").unwrap_or(true))
}
/// `sendfile` into a socket whose peer has gone raises SIGPIPE (it has no MSG_NOSIGNAL), whose
/// default action ends the process: a library must never do that to its caller. SIGPIPE is
/// blocked in this thread around the call, and the one the call raised, if any, is taken back
/// before it is unblocked (a caller that blocks SIGPIPE itself keeps its mask and its signals).
/// Returns what `sendfile` returned, with its errno.
fn sendfile_nosignal(sock: RawFd, fd: RawFd, off: &mut libc::off_t, len: usize) -> isize {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut pipe: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers; pthread_sigmask changes only this thread's mask.
    let blocked = unsafe {
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old) == 0 && libc::sigismember(&old, libc::SIGPIPE) == 0
    };
    // SAFETY: fd is the memfd of a request's tensor, open while the request lives (the caller
    // holds it); off is a valid offset pointer; the kernel bounds the read by the file.
    let n = unsafe { libc::sendfile(sock, fd, off, len) };
    let err = std::io::Error::last_os_error();
    if blocked {
        // A call that failed with EPIPE raised SIGPIPE; so did one that moved part of its bytes
        // before the peer's reset (it returns the count, the signal stays pending): take it back.
        let short = n >= 0 && (n as usize) < len;
        if (n < 0 && err.raw_os_error() == Some(libc::EPIPE)) || short {
            // SAFETY: sigset_t is plain data, filled by sigpending.
            let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers; SIGPIPE is blocked in this thread, so a pending one is the
            // call's (one already pending for the process would have gone to a thread that
            // does not block it).
            if unsafe { libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1 } {
                let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                // SAFETY: valid pointers; takes back the pending SIGPIPE.
                unsafe { libc::sigtimedwait(&pipe, std::ptr::null_mut(), &zero) };
            }
        }
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if n < 0 {
            // The errno the caller reads is sendfile's.
            // SAFETY: __errno_location is this thread's errno.
            unsafe { *libc::__errno_location() = err.raw_os_error().unwrap_or(libc::EIO) };
        }
    }
    n
}

const MAX_IOV: usize = 64;
/// Staged (device) chunks read into host buffers ahead of the socket, per stream.
const MAX_STAGED: usize = 4;

struct TxItem {
    hdr: [u8; HEADER_LEN],
    hdr_done: usize,
    data: *const u8,
    data_len: usize,
    data_done: usize,
    /// Keeps the tensor memory under `data` alive while the item is queued.
    _req: Option<Arc<Request>>,
    /// Device memory: where to read the chunk from (region offset) when it nears the socket.
    staged: Option<(Arc<dyn StagedMemory>, usize)>,
    /// The host copy of a staged chunk; `data` points into it once it exists.
    buf: Option<Box<[u8]>>,
    /// The bytes lie in one of our memfd tensors: sent with `sendfile` from (descriptor, offset
    /// of the chunk's first byte), no copy into the socket (the descriptor lives as long as `_req`).
    file: Option<(RawFd, u64)>,
}

// SAFETY: `data` points into memory owned by `_req`'s region, which is Send + Sync.
unsafe impl Send for TxItem {}

impl TxItem {
    fn remaining(&self) -> usize {
        HEADER_LEN - self.hdr_done + self.data_len - self.data_done
    }
}

enum Rx {
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    Payload {
        seq: u64,
        ptr: *mut u8,
        remaining: usize,
        len: u64,
        /// At a slow copy distance from the sender's pages (copy.rs, "Copy distance"): the next
        /// byte's offset in its page there, and the bytes go through this thread's bounce buffer.
        bounce: Option<usize>,
    },
    Discard {
        seq: u64,
        remaining: usize,
        len: u64,
    },
    /// Into device memory: through a host buffer, written out whenever it fills.
    Staged {
        seq: u64,
        mem: Arc<dyn StagedMemory>,
        off: usize,
        buf: Vec<u8>,
        fill: usize,
        remaining: usize,
        len: u64,
    },
}

// SAFETY: `ptr` points into the region of a request held in `RecvSide::slots` for as long as the
// state exists (slots are only dropped after their last chunk, or all at once on failure, which
// also resets every stream's Rx).
unsafe impl Send for Rx {}

/// Bytes read from a socket ahead of the frame being parsed: a header is read with one `recv`
/// of up to [`INBOX`] bytes, so a small message (header and payload) and the frames behind it
/// take one system call. Always drained before the socket is read again; a reader that stops
/// early leaves them for the next one (`Stream::has_inbox` counts as readable).
struct Inbox {
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox { buf: vec![0; INBOX].into_boxed_slice(), pos: 0, len: 0 }
    }

    fn pending(&self) -> usize {
        self.len - self.pos
    }

    /// Up to `len` bytes into `dst`: what the inbox holds, else straight from the socket (a
    /// payload goes from the socket into the tensor, no staging copy).
    fn read(&mut self, fd: RawFd, dst: *mut u8, len: usize) -> Result<Io> {
        let have = self.pending();
        if have == 0 {
            return recv_raw(fd, dst, len);
        }
        let n = have.min(len);
        // SAFETY: dst is valid for len >= n bytes of writes (callers pass a live buffer or
        // region); pos + n <= self.len <= buf.len(); the inbox never overlaps dst.
        unsafe { std::ptr::copy_nonoverlapping(self.buf.as_ptr().add(self.pos), dst, n) };
        self.pos += n;
        Ok(Io::Done(n))
    }

    /// [`Inbox::read`] through this thread's bounce buffer, placed for source page offset `src`.
    fn read_bounced(&mut self, fd: RawFd, dst: *mut u8, src: usize, len: usize) -> Result<Io> {
        with_bounce(src, |at| {
            let r = self.read(fd, at, len.min(BOUNCE));
            if let Ok(Io::Done(n)) = r {
                // SAFETY: dst is valid for len >= n bytes of writes (as for `read`); at holds the
                // n bytes just read, in this thread's buffer, which no region overlaps.
                unsafe { std::ptr::copy_nonoverlapping(at, dst, n) };
            }
            r
        })
    }

    /// Header bytes: an empty inbox is refilled with one `recv` first.
    fn read_header(&mut self, fd: RawFd, dst: *mut u8, len: usize) -> Result<Io> {
        if self.pending() == 0 {
            match recv_raw(fd, self.buf.as_mut_ptr(), self.buf.len())? {
                Io::Done(n) if n > 0 => {
                    self.pos = 0;
                    self.len = n;
                }
                other => return Ok(other),
            }
        }
        self.read(fd, dst, len)
    }
}

pub struct Stream {
    sock: TcpStream,
    tx: VecDeque<TxItem>,
    rx: Rx,
    inbox: Inbox,
    /// The peer is a process of this host (loopback, or our own address): pages handed to the
    /// socket arrive as they are, so a Data frame's source page offset means something.
    same_host: bool,
    /// The peer closed this (non-control) stream between frames. Not an error by itself: the
    /// peer's Acks may still be on their way on stream 0, whose end decides. Sending on it is.
    peer_closed: bool,
    /// A Data header waits for its receive to be posted (the stream is not read meanwhile).
    parked: bool,
}

impl Stream {
    pub fn new(sock: TcpStream) -> std::io::Result<Stream> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let buf = sockbuf();
        if buf > 0 {
            for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
                let v = buf as libc::c_int;
                // SAFETY: a valid c_int option value for our socket.
                unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&v as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
            }
        }
        let same_host = crate::sys::net::on_this_host(&sock);
        // Normally chosen before the handshake already (`connect_with`, the lnc's listener); an
        // accepted stream from another host inherited the listener's and gets the system's.
        if let Some(cc) = congestion_for(same_host) {
            set_congestion(socket2::SockRef::from(&sock), cc);
        }
        Ok(Stream {
            same_host,
            sock,
            tx: VecDeque::new(),
            rx: Rx::Header { buf: [0; HEADER_LEN], have: 0 },
            inbox: Inbox::new(),
            peer_closed: false,
            parked: false,
        })
    }
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The congestion control the socket runs (its name).
    #[cfg(test)]
    pub fn congestion(&self) -> String {
        congestion_name(&socket2::SockRef::from(&self.sock))
    }

    /// Bytes already read from the socket wait to be parsed.
    fn has_inbox(&self) -> bool {
        self.inbox.pending() > 0
    }
}

struct RecvSlot {
    req: Arc<Request>,
    total: Option<u64>,
    got: u64,
    failed: bool,
    finished: bool,
}

pub struct CommIo {
    kind: Kind,
    pub streams: Vec<Stream>,
    next_seq: u64,
    /// Send side: sends whose Ack has not come yet.
    awaiting_ack: VecDeque<(u64, Arc<Request>)>,
    /// Receive side: posted receives, `slots[i]` pairs with message `base_seq + i`.
    base_seq: u64,
    slots: VecDeque<RecvSlot>,
    /// RDMA data path (the streams then carry control frames only).
    #[cfg(feature = "verbs")]
    verbs: Option<super::verbs::VerbsIo>,
    /// Same-host shared-memory data path (stream 0 then carries its control frames).
    shm: Option<super::shm::ShmIo>,
    /// Calls of `poll_fast` (which of them check every stream).
    polls: u32,
}

enum Io {
    Done(usize),
    WouldBlock,
}

fn os_err(what: &str) -> Error {
    let e = std::io::Error::last_os_error();
    Error::io(NRT_STATUS::NRT_FAILURE, what, &e)
}

/// `recv` into raw memory; `Ok(Done(0))` is end of stream.
fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> Result<Io> {
    loop {
        // SAFETY: ptr is valid for len bytes of writes (callers pass a live buffer or region).
        let n = unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(Io::Done(n as usize));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Io::WouldBlock),
            _ => return Err(os_err("recv")),
        }
    }
}

impl CommIo {
    pub fn new(kind: Kind) -> CommIo {
        CommIo {
            kind,
            streams: Vec::new(),
            next_seq: 0,
            awaiting_ack: VecDeque::new(),
            base_seq: 0,
            slots: VecDeque::new(),
            #[cfg(feature = "verbs")]
            verbs: None,
            shm: None,
            polls: 0,
        }
    }

    /// Switches the data path to shared memory (the sending side names its channel at once).
    pub fn start_shm(&mut self, required: bool, vm_readv: bool) -> Result<()> {
        self.shm = Some(super::shm::ShmIo::new(self.kind, required, vm_readv)?);
        self.drain_shm_out();
        Ok(())
    }

    fn drain_shm_out(&mut self) {
        let frames = match self.shm.as_mut() {
            Some(s) if !s.out.is_empty() => std::mem::take(&mut s.out),
            _ => return,
        };
        for f in frames {
            self.queue_control(f.encode());
        }
    }

    /// Whether the data moves through shared memory (or will, once the peer has answered).
    pub fn is_shm(&self) -> bool {
        self.shm.is_some()
    }

    /// Applies a shared-memory set-up verdict; a fallback replays the queued posts over TCP.
    fn shm_setup(&mut self, r: Result<super::shm::Setup>) -> Result<()> {
        match r? {
            super::shm::Setup::Ok => self.drain_shm_out(),
            super::shm::Setup::Fallback(queued) => {
                self.drain_shm_out();
                self.shm = None;
                for req in queued {
                    self.post(req)?;
                }
            }
        }
        Ok(())
    }

    /// The sockets a spinning caller can take over from the progress thread: TCP data paths only.
    pub fn spin_fds(&self) -> Vec<RawFd> {
        if self.shm.is_some() || self.is_verbs() {
            return Vec::new();
        }
        self.streams.iter().map(|s| s.fd()).collect()
    }

    /// Sends what stream 0 has queued, as far as the socket takes it now.
    pub fn flush_control(&mut self) -> Result<()> {
        if !self.streams.is_empty() && !self.streams[0].tx.is_empty() {
            self.flush_tx(0)?;
        }
        Ok(())
    }

    /// Progress right after a post: a receive may unpark a stream, so everything is read; a
    /// send over TCP only needs its bytes pushed (its Ack and any error come with an epoll edge).
    ///
    /// With `pump` false a receive does not read the streams whose next chunk waited for it,
    /// and returns true when there were any: the progress thread is to read them (the caller
    /// works between its requests and should not spend its post copying a message; the bytes
    /// may lie in the inbox already, so no readiness event would tell that thread).
    pub fn after_post(&mut self, kind: Kind, pump: bool) -> Result<bool> {
        let mut left = false;
        if self.shm.is_none() && !self.is_verbs() {
            for i in 0..self.streams.len() {
                if !self.streams[i].tx.is_empty() {
                    self.flush_tx(i)?;
                }
                // A receive unparks the streams whose next chunk waited for it; every other
                // stream was read until it would block (edge-triggered epoll's rule), so only
                // new data, with a new edge, can be there.
                if kind == Kind::Recv && self.streams[i].parked && !self.streams[i].peer_closed {
                    // Unpumped, the stream waits no more all the same (a caller that takes the
                    // sockets back reads it like any other).
                    if pump {
                        self.pump_rx(i)?;
                    } else {
                        self.streams[i].parked = false;
                        left = true;
                    }
                }
            }
            if kind == Kind::Recv && !self.streams.is_empty() && !self.streams[0].tx.is_empty() {
                self.flush_tx(0)?;
            }
            return Ok(left);
        }
        match self.shm.as_ref() {
            // A send over shared memory is published by the post itself (its Wake frame, if
            // any, is flushed here); its acknowledgement is read by its test.
            Some(s) if s.is_active() && kind == Kind::Send => {
                self.drain_shm_out();
                self.flush_control()
            }
            Some(s) if s.is_active() => self.poll_fast(None, false).map(|_| ()),
            _ => self.progress(),
        }
        .map(|_| false)
    }

    /// Progress from a caller's `test_request`: over shared memory only the rings are read (no
    /// system call unless a control frame must go out); otherwise a full `progress`.
    ///
    /// With `defer_acks`, when the tested receive completed, its Ack stays queued and `Ok(true)`
    /// says so: the caller is usually about to answer, and its answer should not wait behind a
    /// `sendmsg` of the Ack (`engine::defer_acks` says when it goes out).
    pub fn poll_fast(&mut self, tested: Option<&Request>, defer_acks: bool) -> Result<bool> {
        match self.shm.as_mut() {
            Some(s) if s.is_active() => {
                s.poll()?;
                if let Some(r) = tested
                    && r.kind == Kind::Recv
                {
                    s.note_poll(r.is_pending());
                }
                self.drain_shm_out();
                if !self.streams.is_empty() && !self.streams[0].tx.is_empty() {
                    self.flush_tx(0)?;
                }
                Ok(false)
            }
            _ if self.streams.is_empty() => self.progress().map(|_| false),
            _ => {
                // Over TCP: a send waits for its Ack on stream 0, a small receive for its data on
                // stream 0; only when that is not enough are the other streams read too.
                for i in 0..self.streams.len() {
                    if !self.streams[i].tx.is_empty() {
                        self.flush_tx(i)?;
                    }
                }
                // What this wait concerns: a send's Ack comes on stream 0, and so does a small
                // receive's data when it is the oldest one posted. Then stream 0 is read
                // directly (one `recv`, which brings header and payload together); otherwise
                // one poll() over all streams, then reads only where something arrived.
                self.polls = self.polls.wrapping_add(1);
                let only0 = !self.is_verbs()
                    && tested.is_some_and(|r| match r.kind {
                        Kind::Send => true,
                        Kind::Recv => {
                            r.region.len() <= SMALL
                                && !self.polls.is_multiple_of(ALL_STREAMS_EVERY)
                                && self.slots.front().is_some_and(|s| std::ptr::eq(&*s.req, r))
                        }
                    });
                if only0 {
                    let s0 = &self.streams[0];
                    // A large send's Ack comes no sooner than its last byte has crossed (16 µs
                    // for 64 KiB at 4 GB/s): only every ACK_READ_EVERY-th poll reads for it.
                    let ack_later = tested.is_some_and(|r| r.kind == Kind::Send && r.region.len() > SMALL)
                        && !self.polls.is_multiple_of(ACK_READ_EVERY);
                    if !ack_later && !s0.peer_closed && !s0.parked {
                        self.pump_rx_until(0, tested)?;
                    }
                } else {
                    let all = tested.is_none_or(|r| r.kind == Kind::Recv || self.is_verbs());
                    let n = if all { self.streams.len() } else { 1 };
                    let mut fds = [0 as RawFd; crate::config::MAX_STREAMS];
                    for (f, s) in fds.iter_mut().zip(&self.streams[..n]) {
                        *f = s.fd();
                    }
                    let mut ready = [false; crate::config::MAX_STREAMS];
                    crate::sys::epoll::readable(&fds[..n], &mut ready[..n]).map_err(|e| Error::io(NRT_STATUS::NRT_FAILURE, "poll", &e))?;
                    for (i, ready) in ready.iter().enumerate().take(n) {
                        let s = &self.streams[i];
                        if (*ready || s.has_inbox()) && !s.peer_closed && !s.parked && tested.is_none_or(|r| r.is_pending()) {
                            self.pump_rx_until(i, tested)?;
                        }
                    }
                }
                if tested.is_none_or(|r| r.is_pending() && self.is_verbs()) {
                    #[cfg(feature = "verbs")]
                    if let Some(v) = self.verbs.as_mut() {
                        v.poll()?;
                        self.drain_verbs_out();
                    }
                }
                if !self.streams[0].tx.is_empty() {
                    if defer_acks
                        && self.kind == Kind::Recv
                        && !self.is_verbs()
                        && tested.is_some_and(|r| !r.is_pending() && r.size() <= DEFER_ACK_MAX)
                    {
                        return Ok(true);
                    }
                    self.flush_tx(0)?;
                }
                Ok(false)
            }
        }
    }

    /// Switches the data path to RDMA verbs; returns the completion channel to watch.
    pub fn start_verbs(&mut self, dev: std::sync::Arc<super::RdmaDevice>) -> Result<RawFd> {
        #[cfg(feature = "verbs")]
        {
            let v = super::verbs::VerbsIo::new(dev, self.kind)?;
            let fd = v.fd();
            self.verbs = Some(v);
            self.drain_verbs_out();
            Ok(fd)
        }
        #[cfg(not(feature = "verbs"))]
        match *dev {}
    }

    #[cfg(feature = "verbs")]
    fn drain_verbs_out(&mut self) {
        let frames = match self.verbs.as_mut() {
            Some(v) => std::mem::take(&mut v.out),
            None => return,
        };
        for f in frames {
            self.queue_control(f.encode());
        }
    }

    /// The largest message this data path takes (one RDMA write over verbs).
    pub fn max_message(&self) -> u64 {
        #[cfg(feature = "verbs")]
        if self.verbs.is_some() {
            return super::verbs::MAX_VERBS_MESSAGE as u64;
        }
        crate::wire::MAX_MESSAGE
    }

    /// Whether the data moves over RDMA verbs.
    pub fn is_verbs(&self) -> bool {
        #[cfg(feature = "verbs")]
        return self.verbs.is_some();
        #[cfg(not(feature = "verbs"))]
        false
    }

    /// Queues a request (its chunks on the send side, its slot on the receive side).
    pub fn post(&mut self, req: Arc<Request>) -> Result<()> {
        if let Some(s) = self.shm.as_mut() {
            s.post(req)?;
            self.drain_shm_out();
            return Ok(());
        }
        #[cfg(feature = "verbs")]
        if let Some(v) = self.verbs.as_mut() {
            v.post(req)?;
            self.drain_verbs_out();
            return Ok(());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.kind {
            Kind::Recv => self.slots.push_back(RecvSlot { req, total: None, got: 0, failed: false, finished: false }),
            Kind::Send => {
                let total = req.region.len();
                let n = self.streams.len().max(1);
                let nchunks = total.div_ceil(CHUNK).max(1);
                let chunk = if nchunks == 1 { total } else { CHUNK };
                let staged = req.region.staging().cloned();
                // Large messages from our own (memfd) tensors: the socket takes references to the
                // pages instead of a copy. Safe to reuse once the send completes: that is at the
                // receiver's Ack, after it has read every byte.
                let file = match req.region.memory() {
                    Some(m) if staged.is_none() && chunk >= SENDFILE_MIN && sendfile_enabled() => {
                        m.fd().map(|fd| (fd, req.region.ptr() as u64 - m.base() as u64))
                    }
                    _ => None,
                };
                for k in 0..nchunks {
                    let off = k * chunk;
                    let len = chunk.min(total - off);
                    // Pages handed to a socket to this host arrive as they are: the receiver
                    // may have to steer its copy around their offsets (copy.rs, "Copy
                    // distance"). Across hosts the NIC's buffers decide, not ours.
                    let src_page = file
                        .filter(|_| self.streams.first().is_some_and(|s| s.same_host))
                        .map(|(_, base)| ((base + off as u64) % ALIAS as u64) as u16);
                    let hdr = Frame::Data { seq, offset: off as u64, len: len as u64, total: total as u64, src_page }.encode();
                    // Small messages share stream 0 with the Acks: a ping-pong touches one socket.
                    let s = if total <= SMALL { 0 } else { (seq as usize + k) % n };
                    self.streams[s].tx.push_back(TxItem {
                        hdr,
                        hdr_done: 0,
                        data: if staged.is_some() { std::ptr::null() } else { req.region.ptr().wrapping_add(off) },
                        data_len: len,
                        data_done: 0,
                        _req: Some(req.clone()),
                        staged: staged.clone().map(|m| (m, off)),
                        buf: None,
                        file: file.map(|(fd, base)| (fd, base + off as u64)),
                    });
                }
                self.awaiting_ack.push_back((seq, req));
            }
        }
        Ok(())
    }

    /// Moves bytes until every socket would block; an error breaks the communicator.
    pub fn progress(&mut self) -> Result<()> {
        // Shared memory first: acknowledgements already in the ring complete their sends even
        // when the peer closed its streams right after (its end is read below).
        if let Some(s) = self.shm.as_mut() {
            s.poll()?;
        }
        for i in 0..self.streams.len() {
            self.flush_tx(i)?;
            if !self.streams[i].peer_closed {
                self.pump_rx(i)?;
            }
        }
        #[cfg(feature = "verbs")]
        if let Some(v) = self.verbs.as_mut() {
            v.poll()?;
            self.drain_verbs_out();
        }
        if let Some(s) = self.shm.as_mut() {
            s.poll()?;
            self.drain_shm_out();
        }
        // Acks queued while reading go out now rather than at the next event.
        if !self.streams.is_empty() && !self.streams[0].tx.is_empty() {
            self.flush_tx(0)?;
        }
        Ok(())
    }

    fn flush_tx(&mut self, i: usize) -> Result<()> {
        let s = &mut self.streams[i];
        if s.peer_closed && !s.tx.is_empty() {
            return Err(Error::failure(format!("peer closed stream {i}")));
        }
        while !s.tx.is_empty() {
            let front = s.tx.front_mut().expect("not empty");
            if let Some((fd, off)) = front.file
                && front.data_done < front.data_len
            {
                let sock = s.sock.as_raw_fd();
                let n = if front.hdr_done < HEADER_LEN {
                    let h = &front.hdr[front.hdr_done..];
                    // SAFETY: h is a live slice of the item's header.
                    unsafe { libc::send(sock, h.as_ptr().cast(), h.len(), libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | libc::MSG_MORE) }
                } else {
                    let mut o = (off + front.data_done as u64) as libc::off_t;
                    sendfile_nosignal(sock, fd, &mut o, front.data_len - front.data_done)
                };
                if n < 0 {
                    match std::io::Error::last_os_error().raw_os_error() {
                        Some(libc::EINTR) => continue,
                        Some(libc::EAGAIN) => return Ok(()),
                        _ => return Err(os_err(&format!("send on stream {i}"))),
                    }
                }
                if n == 0 && front.hdr_done == HEADER_LEN {
                    return Err(Error::failure(format!("stream {i}: sendfile sent nothing (tensor memory shorter than its region?)")));
                }
                if front.hdr_done < HEADER_LEN {
                    front.hdr_done += n as usize;
                } else {
                    front.data_done += n as usize;
                }
                if front.remaining() == 0 {
                    s.tx.pop_front();
                }
                continue;
            }
            let mut iov: [libc::iovec; MAX_IOV] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOV];
            let mut cnt = 0;
            let mut staged_ahead = 0;
            for it in s.tx.iter_mut() {
                if cnt + 2 > MAX_IOV || (it.file.is_some() && it.data_done < it.data_len) {
                    break;
                }
                if let Some((mem, off)) = &it.staged {
                    if staged_ahead == MAX_STAGED {
                        break;
                    }
                    staged_ahead += 1;
                    if it.buf.is_none() && it.data_len > 0 {
                        let mut b = vec![0u8; it.data_len].into_boxed_slice();
                        mem.read(*off, &mut b)?;
                        it.data = b.as_ptr();
                        it.buf = Some(b);
                    }
                }
                if it.hdr_done < HEADER_LEN {
                    iov[cnt] =
                        libc::iovec { iov_base: it.hdr[it.hdr_done..].as_ptr() as *mut libc::c_void, iov_len: HEADER_LEN - it.hdr_done };
                    cnt += 1;
                }
                if it.data_done < it.data_len {
                    iov[cnt] = libc::iovec {
                        iov_base: it.data.wrapping_add(it.data_done) as *mut libc::c_void,
                        iov_len: it.data_len - it.data_done,
                    };
                    cnt += 1;
                }
            }
            // SAFETY: msghdr is plain data; zeroed is a valid empty header.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = cnt;
            // SAFETY: every iovec points into a live header array or into tensor memory kept
            // alive by the item's request, each for the stated length.
            let n = unsafe { libc::sendmsg(s.sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => return Ok(()),
                    _ => return Err(os_err(&format!("send on stream {i}"))),
                }
            }
            let mut n = n as usize;
            while n > 0 {
                let it = s.tx.front_mut().expect("sent bytes belong to queued items");
                let h = (HEADER_LEN - it.hdr_done).min(n);
                it.hdr_done += h;
                n -= h;
                let d = (it.data_len - it.data_done).min(n);
                it.data_done += d;
                n -= d;
                if it.remaining() == 0 {
                    s.tx.pop_front();
                }
            }
        }
        Ok(())
    }

    fn pump_rx(&mut self, i: usize) -> Result<()> {
        self.pump_rx_until(i, None)
    }

    /// Reads stream `i` until it would block, or (a caller's poll) as soon as `until` is no
    /// longer pending: only the progress thread, which relies on edges, must read to the end,
    /// and it is woken by the same edge and does.
    fn pump_rx_until(&mut self, i: usize, until: Option<&Request>) -> Result<()> {
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
                    let frame = Frame::decode(&buf[..]).map_err(|e| Error::failure(format!("stream {i}: {e}")))?;
                    let next = match frame {
                        Frame::Data { seq, offset, len, total, src_page } if self.kind == Kind::Recv && self.shm.is_none() => {
                            match self.start_chunk(seq, offset, len, total, src_page)? {
                                Some(rx) => rx,
                                None => {
                                    // Receive not posted yet: parked until a post.
                                    self.streams[i].parked = true;
                                    return Ok(());
                                }
                            }
                        }
                        Frame::ShmInfo { pid, fd, token, addr, size } if self.kind == Kind::Recv && self.shm.is_some() => {
                            let r = self.shm.as_mut().expect("checked").on_info(pid, fd, token, addr, size);
                            self.shm_setup(r)?;
                            Rx::Header { buf: [0; HEADER_LEN], have: 0 }
                        }
                        Frame::ShmReady { status } if self.kind == Kind::Send && self.shm.is_some() => {
                            let r = self.shm.as_mut().expect("checked").on_ready(status);
                            self.shm_setup(r)?;
                            Rx::Header { buf: [0; HEADER_LEN], have: 0 }
                        }
                        // The rings are read below, after the streams.
                        Frame::Wake if self.kind == Kind::Recv && self.shm.is_some() => Rx::Header { buf: [0; HEADER_LEN], have: 0 },
                        Frame::Ack { seq, status, size } if self.kind == Kind::Send && !self.is_verbs() && self.shm.is_none() => {
                            self.on_ack(seq, status, size)?;
                            if until.is_some_and(|r| !r.is_pending()) {
                                self.streams[i].rx = Rx::Header { buf: [0; HEADER_LEN], have: 0 };
                                return Ok(());
                            }
                            Rx::Header { buf: [0; HEADER_LEN], have: 0 }
                        }
                        #[cfg(feature = "verbs")]
                        f @ (Frame::QpInfo { .. } | Frame::Cts { .. } | Frame::Ack { .. }) if self.verbs.is_some() => {
                            let v = self.verbs.as_mut().expect("checked");
                            match f {
                                Frame::QpInfo { qpn, psn, gid, lid } => v.on_qp_info(qpn, psn, gid, lid)?,
                                Frame::Cts { seq, addr, len, rkey } => v.on_cts(seq, addr, len, rkey)?,
                                Frame::Ack { seq, status: ack::TOO_LONG, .. } if self.kind == Kind::Recv => v.on_refused(seq)?,
                                Frame::Ack { seq, status, size } if self.kind == Kind::Send => v.on_verdict(seq, status, size)?,
                                f => return Err(Error::failure(format!("stream {i}: unexpected frame {f:?}"))),
                            }
                            self.drain_verbs_out();
                            Rx::Header { buf: [0; HEADER_LEN], have: 0 }
                        }
                        f => return Err(Error::failure(format!("stream {i}: unexpected frame {f:?}"))),
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
                    if self.chunk_read(i, seq, len, until) {
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
                    if self.chunk_read(i, seq, len, until) {
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
                    if self.chunk_read(i, seq, len, until) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A Data header arrived: where its bytes go, or `None` when its receive is not posted yet.
    fn start_chunk(&mut self, seq: u64, offset: u64, len: u64, total: u64, src_page: Option<u16>) -> Result<Option<Rx>> {
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
                let cap = slot.req.region.len() as u64;
                if total > cap {
                    slot.failed = true;
                    slot.req.reject_short(total);
                    let h = Frame::Ack { seq, status: ack::TOO_LONG, size: 0 }.encode();
                    self.queue_control(h);
                }
            }
        }
        let slot = &self.slots[idx as usize];
        let rx = if slot.failed {
            Rx::Discard { seq, remaining: len as usize, len }
        } else if let Some(mem) = slot.req.region.staging() {
            let cap = (len as usize).min(CHUNK);
            Rx::Staged { seq, mem: mem.clone(), off: offset as usize, buf: vec![0; cap], fill: 0, remaining: len as usize, len }
        } else {
            let ptr = slot.req.region.ptr().wrapping_add(offset as usize);
            let bounce = src_page.map(usize::from).filter(|&p| slow_distance(ptr as usize, p, len as usize));
            Rx::Payload { seq, ptr, remaining: len as usize, len, bounce }
        };
        Ok(Some(rx))
    }

    /// Stream `i` has read the last byte of a chunk: back to headers, the chunk counted; true when
    /// a caller's poll should stop here (`until` completed).
    fn chunk_read(&mut self, i: usize, seq: u64, len: u64, until: Option<&Request>) -> bool {
        self.streams[i].rx = Rx::Header { buf: [0; HEADER_LEN], have: 0 };
        self.end_chunk(seq, len);
        until.is_some_and(|r| !r.is_pending())
    }

    fn end_chunk(&mut self, seq: u64, len: u64) {
        let idx = (seq - self.base_seq) as usize;
        let slot = &mut self.slots[idx];
        slot.got += len;
        if Some(slot.got) == slot.total {
            slot.finished = true;
            if !slot.failed {
                slot.req.complete(slot.got);
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
            _req: None,
            staged: None,
            buf: None,
            file: None,
        });
    }

    fn on_ack(&mut self, seq: u64, status: u16, size: u64) -> Result<()> {
        let pos = self
            .awaiting_ack
            .iter()
            .position(|(s, _)| *s == seq)
            .ok_or_else(|| Error::failure(format!("ack for unknown message {seq}")))?;
        let (_, req) = self.awaiting_ack.remove(pos).expect("position is in range");
        req.finish_send(seq, status, size)
    }

    /// Control frames (Acks) wait on stream 0 for the socket.
    #[cfg(test)]
    /// Over shared memory, as a sender: the messages it staged in its own memfds so far.
    #[cfg(test)]
    pub fn shm_staged(&self) -> Option<u64> {
        self.shm.as_ref().filter(|s| s.is_active()).map(|s| s.staged_msgs)
    }

    pub fn has_queued_control(&self) -> bool {
        self.streams.first().is_some_and(|s| !s.tx.is_empty())
    }

    /// Whether any request is queued or in flight.
    pub fn has_pending(&self) -> bool {
        #[cfg(feature = "verbs")]
        if self.verbs.as_ref().is_some_and(|v| v.has_pending()) {
            return true;
        }
        if self.shm.as_ref().is_some_and(|s| s.has_pending()) {
            return true;
        }
        !self.awaiting_ack.is_empty() || !self.slots.is_empty()
    }

    /// Fails every request still queued and closes the sockets.
    pub fn fail_all(&mut self, e: &Error) {
        for (_, r) in self.awaiting_ack.drain(..) {
            r.fail(e.clone());
        }
        for s in self.slots.drain(..) {
            s.req.fail(e.clone());
        }
        #[cfg(feature = "verbs")]
        if let Some(mut v) = self.verbs.take() {
            v.fail_all(e);
        }
        if let Some(mut s) = self.shm.take() {
            s.fail_all(e);
        }
        self.streams.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SIGPIPES: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn count_sigpipe(_: libc::c_int) {
        SIGPIPES.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn sendfile_into_a_socket_whose_peer_has_gone_raises_no_sigpipe() {
        // A C caller's SIGPIPE ends its process by default, and sendfile has no MSG_NOSIGNAL:
        // a sender whose receiver died was killed (the fault matrix's "receiver SIGKILLed" saw
        // it). Here a handler counts SIGPIPEs (the Rust test harness ignores them otherwise):
        // plain sendfile into a socket whose peer is closed raises one, ours does not, returns
        // EPIPE, and leaves this thread's signal mask as it was.
        // SAFETY: sigaction with a handler that only touches an atomic; restored below.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = count_sigpipe as *const () as usize;
        // SAFETY: valid sigaction structs.
        assert_eq!(unsafe { libc::sigaction(libc::SIGPIPE, &act, &mut old) }, 0);
        let file = crate::sys::memfd::memfd("nrt-sr-sigpipe-test", 1 << 20).unwrap();
        let pair = || {
            let mut sv = [0 as RawFd; 2];
            // SAFETY: sv has room for the two descriptors.
            assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()) }, 0);
            // SAFETY: closes the peer end we just made.
            unsafe { libc::close(sv[1]) };
            sv[0]
        };
        let before = SIGPIPES.load(Ordering::SeqCst);
        let a = pair();
        let mut off: libc::off_t = 0;
        // SAFETY: valid descriptors and offset pointer.
        let n = unsafe { libc::sendfile(a, file.as_raw_fd(), &mut off, 65536) };
        assert!(n < 0, "sendfile into a closed peer succeeded");
        assert_eq!(SIGPIPES.load(Ordering::SeqCst), before + 1, "plain sendfile raised no SIGPIPE: the test shows nothing");
        let b = pair();
        let mut off: libc::off_t = 0;
        let n = sendfile_nosignal(b, file.as_raw_fd(), &mut off, 65536);
        let err = std::io::Error::last_os_error().raw_os_error();
        assert!(n < 0 && err == Some(libc::EPIPE), "sendfile_nosignal: {n}, errno {err:?}");
        assert_eq!(SIGPIPES.load(Ordering::SeqCst), before + 1, "sendfile_nosignal raised SIGPIPE");
        // SAFETY: plain queries of this thread's mask and pending set.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            assert_eq!(libc::sigismember(&mask, libc::SIGPIPE), 0, "SIGPIPE left blocked");
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            assert_eq!(libc::sigismember(&pending, libc::SIGPIPE), 0, "a SIGPIPE left pending");
            libc::close(a);
            libc::close(b);
            libc::sigaction(libc::SIGPIPE, &old, std::ptr::null_mut());
        }
    }
}
