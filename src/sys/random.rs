//! Random numbers from the kernel: the handshake's challenges, an lnc's instance nonce, the
//! shared-memory channel's token, the verbs queue pair's first packet number. Everything of the
//! library that must not be guessed comes from here.
//!
//! Crate `getrandom`: the `getrandom(2)` system call without `GRND_NONBLOCK`, so a call early in
//! boot waits until the kernel's pool is initialised (once; these numbers are drawn a few times
//! per connection); where the call does not exist or a seccomp policy refuses it, `/dev/urandom`
//! once `/dev/random` is ready. Where the kernel gives nothing, the caller gets the error and the
//! operation that wanted the number fails: there is no fallback on the time or the process id.

use std::io;

/// Fills `buf` with random bytes from the kernel.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    #[cfg(test)]
    if refusal::refused_here() {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    getrandom::fill(buf).map_err(|e| match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::other(format!("getrandom: {e}")),
    })
}

/// 64 random bits from the kernel.
pub fn random_u64() -> io::Result<u64> {
    let mut b = [0u8; 8];
    fill(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// 128 random bits from the kernel.
pub fn random_128() -> io::Result<[u8; 16]> {
    let mut b = [0u8; 16];
    fill(&mut b)?;
    Ok(b)
}

/// Tests: the kernel refuses random numbers to the threads named here (a test's own thread, an
/// lnc's progress thread `nrt-sr-lnc<id>`, its set-up thread `nrt-sr-conn<id>`), as a seccomp
/// policy would, while the tests beside it go on drawing.
#[cfg(test)]
pub mod refusal {
    use parking_lot::Mutex;

    static THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Refusal for the thread called `name` until the guard is dropped.
    pub struct Refused(String);

    pub fn refuse_to(name: &str) -> Refused {
        THREADS.lock().push(name.to_string());
        Refused(name.to_string())
    }

    impl Drop for Refused {
        fn drop(&mut self) {
            let mut t = THREADS.lock();
            if let Some(i) = t.iter().position(|n| *n == self.0) {
                t.remove(i);
            }
        }
    }

    pub(super) fn refused_here() -> bool {
        let t = THREADS.lock();
        !t.is_empty() && std::thread::current().name().is_some_and(|n| t.iter().any(|r| r == n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_differ_and_a_refusal_is_an_error() {
        let a: Vec<u64> = (0..64).map(|_| random_u64().unwrap()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(b.len(), a.len(), "64 draws of 64 bits repeated a value");
        assert_ne!(random_128().unwrap(), random_128().unwrap());
        let me = std::thread::current().name().unwrap().to_string();
        let refused = refusal::refuse_to(&me);
        let e = random_u64().expect_err("a refused draw must fail, not fall back");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(random_128().is_err());
        // Another thread still draws.
        assert!(std::thread::spawn(random_u64).join().unwrap().is_ok());
        drop(refused);
        assert!(random_u64().is_ok());
    }
}
