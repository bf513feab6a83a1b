//! epoll with an eventfd to wake the waiting thread, and a non-blocking readiness check.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An epoll instance plus an eventfd registered in it under `wake_token`.
pub struct Poller {
    ep: OwnedFd,
    wake: OwnedFd,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

impl Poller {
    pub fn new(wake_token: u64) -> io::Result<Poller> {
        // SAFETY: plain system call; the result is checked before use.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: ep is a fresh descriptor that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        // SAFETY: plain system call; the result is checked before use.
        let wake = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: wake is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let p = Poller { ep, wake };
        p.add(p.wake.as_raw_fd(), wake_token, libc::EPOLLIN as u32)?;
        Ok(p)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Watches a socket, edge-triggered, for output and hang-up, and for input unless `input`
    /// is false (a TCP send communicator: its Acks are read by `test_request`, which is the only
    /// place their effect can be seen, so they need not wake the progress thread).
    pub fn watch(&self, fd: RawFd, token: u64, input: bool) -> io::Result<()> {
        self.add(fd, token, Self::events(input))
    }

    fn events(input: bool) -> u32 {
        let e = libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        (if input { e | libc::EPOLLIN } else { e }) as u32
    }

    /// Stops (`armed` false) or resumes edge-triggered watching of a socket already watched.
    /// Stopping removes the socket from the epoll set altogether, so that each arriving segment
    /// finds no waiter to call (a socket in the set, even with no events, costs the sender's
    /// delivery a locked wait-queue walk): the caller that paused it reads it, and sees hang-ups
    /// and errors there. Resuming adds it back, which reports data already waiting.
    pub fn rearm(&self, fd: RawFd, token: u64, armed: bool, input: bool) -> io::Result<()> {
        if !armed {
            self.unwatch(fd);
            return Ok(());
        }
        match self.add(fd, token, Self::events(input)) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => self.ctl(libc::EPOLL_CTL_MOD, fd, token, Self::events(input)),
            r => r,
        }
    }

    /// Watches a listening socket, level-triggered, for incoming connections.
    pub fn watch_listener(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.add(fd, token, libc::EPOLLIN as u32)
    }

    pub fn unwatch(&self, fd: RawFd) {
        // A descriptor that is not watched just returns ENOENT, ignored.
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Waits up to `timeout` and appends the tokens of ready descriptors to `out`.
    pub fn wait(&self, out: &mut Vec<u64>, timeout: Duration) -> io::Result<()> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 128];
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: evs is a writable array of the length we pass.
        let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), evs.as_mut_ptr(), evs.len() as libc::c_int, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        out.extend(evs[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd; EAGAIN (counter full) is harmless.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn drain_wake(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN when already drained is harmless.
        unsafe { libc::read(self.wake.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

/// Which of `fds` have input, a hang-up or an error, without waiting (one `poll`, which unlike a
/// `recv` takes no socket lock: a caller spinning on it does not hold off the peer's delivery).
pub fn readable(fds: &[RawFd], out: &mut [bool]) -> io::Result<()> {
    let mut p = [libc::pollfd { fd: -1, events: 0, revents: 0 }; crate::config::MAX_STREAMS];
    let n = fds.len().min(p.len());
    for (slot, fd) in p.iter_mut().zip(fds) {
        *slot = libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 };
    }
    // SAFETY: p holds n initialised pollfd entries; timeout 0 never blocks.
    let r = unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        out.iter_mut().for_each(|o| *o = false);
        return Ok(());
    }
    for (o, pf) in out.iter_mut().zip(&p[..n]) {
        *o = pf.revents != 0;
    }
    Ok(())
}
