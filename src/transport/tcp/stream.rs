//! One TCP stream of a connection: its socket (options set at creation), the frames and chunks
//! queued for it, the frame or payload being read from it, and the bytes read ahead of that.

#[cfg(test)]
use super::congestion::congestion_name;
use super::congestion::{congestion_for, set_congestion};
use crate::status::{Error, NRT_STATUS, Result};
use crate::sys::copy::{BOUNCE, with_bounce};
use crate::tensor::{Region, StagedMemory};
use crate::wire::HEADER_LEN;
use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

/// Bytes one `recv` may read ahead of a frame header (its payload, the next frames).
const INBOX: usize = 4096;

/// `NEURON_RT_ASYNC_SENDRECV_TCP_SOCKBUF`: SO_SNDBUF/SO_RCVBUF in bytes (0, the default: the
/// kernel's autotuning, which measured best; docs/transports.md).
fn sockbuf() -> usize {
    static B: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *B.get_or_init(|| std::env::var("NEURON_RT_ASYNC_SENDRECV_TCP_SOCKBUF").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

/// Chunks of 64 KiB or more that lie in one of our memfd tensors go by `sendfile` (page
/// references instead of a copy into the socket: one copy in all, the receiver's, and half the
/// sender's CPU); `NEURON_RT_ASYNC_SENDRECV_TCP_SENDFILE=0` copies them with `sendmsg` instead.
/// Measured in docs/transports.md, "Zero copy: sendfile".
pub(super) fn sendfile_enabled() -> bool {
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

pub(super) struct TxItem {
    pub(super) hdr: [u8; HEADER_LEN],
    pub(super) hdr_done: usize,
    pub(super) data: *const u8,
    pub(super) data_len: usize,
    pub(super) data_done: usize,
    /// Keeps the tensor memory under `data` alive while the item is queued.
    pub(super) _mem: Option<Region>,
    /// Device memory: where to read the chunk from (region offset) when it nears the socket.
    pub(super) staged: Option<(Arc<dyn StagedMemory>, usize)>,
    /// The host copy of a staged chunk; `data` points into it once it exists.
    pub(super) buf: Option<Box<[u8]>>,
    /// The bytes lie in one of our memfd tensors: sent with `sendfile` from (descriptor, offset
    /// of the chunk's first byte), no copy into the socket (the descriptor lives as long as `_mem`).
    pub(super) file: Option<(RawFd, u64)>,
}

// SAFETY: `data` points into memory owned by `_mem`, which is Send + Sync.
unsafe impl Send for TxItem {}

impl TxItem {
    pub(super) fn remaining(&self) -> usize {
        HEADER_LEN - self.hdr_done + self.data_len - self.data_done
    }
}

pub(super) enum Rx {
    Header {
        buf: [u8; HEADER_LEN],
        have: usize,
    },
    Payload {
        seq: u64,
        ptr: *mut u8,
        remaining: usize,
        len: u64,
        /// At a slow copy distance from the sender's pages (sys/copy.rs, "Copy distance"): the next
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

// SAFETY: `ptr` points into the region of a receive held in `TcpTransport::slots` for as long as the
// state exists (slots are only dropped after their last chunk, or all at once on failure, which
// also resets every stream's Rx).
unsafe impl Send for Rx {}

/// Bytes read from a socket ahead of the frame being parsed: a header is read with one `recv`
/// of up to [`INBOX`] bytes, so a small message (header and payload) and the frames behind it
/// take one system call. Always drained before the socket is read again; a reader that stops
/// early leaves them for the next one (`Stream::has_inbox` counts as readable).
pub(super) struct Inbox {
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
}

impl Inbox {
    pub(super) fn new() -> Inbox {
        Inbox { buf: vec![0; INBOX].into_boxed_slice(), pos: 0, len: 0 }
    }

    pub(super) fn pending(&self) -> usize {
        self.len - self.pos
    }

    /// Up to `len` bytes into `dst`: what the inbox holds, else straight from the socket (a
    /// payload goes from the socket into the tensor, no staging copy).
    pub(super) fn read(&mut self, fd: RawFd, dst: *mut u8, len: usize) -> Result<Io> {
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
    pub(super) fn read_bounced(&mut self, fd: RawFd, dst: *mut u8, src: usize, len: usize) -> Result<Io> {
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
    pub(super) fn read_header(&mut self, fd: RawFd, dst: *mut u8, len: usize) -> Result<Io> {
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

pub(super) enum Io {
    Done(usize),
    WouldBlock,
}

pub(super) fn os_err(what: &str) -> Error {
    let e = std::io::Error::last_os_error();
    Error::io(NRT_STATUS::NRT_FAILURE, what, &e)
}

/// `recv` into raw memory; `Ok(Done(0))` is end of stream.
pub(super) fn recv_raw(fd: RawFd, ptr: *mut u8, len: usize) -> Result<Io> {
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

pub struct Stream {
    pub(super) sock: TcpStream,
    pub(super) tx: VecDeque<TxItem>,
    pub(super) rx: Rx,
    pub(super) inbox: Inbox,
    /// The peer is a process of this kernel (the handshake's kernel tags, or its address): pages
    /// handed to the socket arrive as they are, so a Data frame's source page offset means
    /// something.
    pub(super) same_host: bool,
    /// The peer closed this (non-control) stream between frames. Not an error by itself: the
    /// peer's Acks may still be on their way on stream 0, whose end decides. Sending on it is.
    pub(super) peer_closed: bool,
    /// A Data header waits for its receive to be posted (the stream is not read meanwhile).
    pub(super) parked: bool,
}

impl Stream {
    /// A stream whose handshake is done; `same_host`: the peer runs on this kernel (engine's
    /// judgement: kernel tags, else the address).
    pub fn new(sock: TcpStream, same_host: bool) -> std::io::Result<Stream> {
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
        // Every stream starts with the algorithm for this host, chosen before its handshake
        // (`connect_with`, the lnc's listener); a stream whose peer the handshake found on
        // another kernel gets the system's now.
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
    pub(super) fn has_inbox(&self) -> bool {
        self.inbox.pending() > 0
    }

    /// Sends what is queued, as far as the socket takes it now (`i`: the stream's index, for
    /// errors).
    pub(super) fn flush(&mut self, i: usize) -> Result<()> {
        let s = self;
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
