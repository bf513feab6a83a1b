//! Random numbers from the kernel.

/// 64 random bits from the kernel (falls back to time and pid if getrandom is unavailable).
pub fn random_u64() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: writes at most 8 bytes into a live u64.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        v = (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 40);
    }
    v
}
