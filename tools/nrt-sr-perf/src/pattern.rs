//! The warm-up data pattern: a byte stream that depends on (size, communicator, message index),
//! so a message delivered into the wrong buffer, out of order, or truncated is caught.

/// The seed of one message.
pub fn seed(size: u64, comm: u64, msg: u64) -> u64 {
    mix(size.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ comm.rotate_left(40) ^ msg.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

#[inline]
fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The 8 pattern bytes at word index `idx` (byte offset idx × 8).
#[inline]
fn word(seed: u64, idx: u64) -> [u8; 8] {
    let mut x = seed ^ idx.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x.to_le_bytes()
}

/// Writes the pattern bytes for message offsets `offset .. offset + buf.len()` into `buf`.
/// `offset` must be a multiple of 8.
pub fn fill(buf: &mut [u8], seed: u64, offset: u64) {
    debug_assert_eq!(offset % 8, 0);
    let base = offset / 8;
    let mut chunks = buf.chunks_exact_mut(8);
    let mut i = 0u64;
    for c in &mut chunks {
        c.copy_from_slice(&word(seed, base + i));
        i += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let w = word(seed, base + i);
        let n = rest.len();
        rest.copy_from_slice(&w[..n]);
    }
}

/// The first byte of `got` (message offsets from `offset`, a multiple of 8) that differs from
/// the pattern: (message offset, got, expected). `scratch` must be at least `got.len()` long.
pub fn first_mismatch(got: &[u8], seed: u64, offset: u64, scratch: &mut [u8]) -> Option<(u64, u8, u8)> {
    let want = &mut scratch[..got.len()];
    fill(want, seed, offset);
    if got == &*want {
        return None;
    }
    got.iter().zip(want.iter()).position(|(a, b)| a != b).map(|i| (offset + i as u64, got[i], want[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_equals_whole() {
        let s = seed(1000, 0, 3);
        let mut whole = vec![0u8; 1003];
        fill(&mut whole, s, 0);
        let mut parts = vec![0u8; 1003];
        let (a, b) = parts.split_at_mut(512);
        fill(a, s, 0);
        fill(b, s, 512);
        assert_eq!(whole, parts);
    }

    #[test]
    fn depends_on_message() {
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        fill(&mut a, seed(64, 0, 0), 0);
        fill(&mut b, seed(64, 0, 1), 0);
        assert_ne!(a, b);
        fill(&mut b, seed(64, 1, 0), 0);
        assert_ne!(a, b);
        fill(&mut b, seed(128, 0, 0), 0);
        assert_ne!(a, b);
    }

    #[test]
    fn finds_first_mismatch() {
        let s = seed(4096, 2, 7);
        let mut buf = vec![0u8; 4096];
        fill(&mut buf, s, 8192);
        let mut scratch = vec![0u8; 4096];
        assert_eq!(first_mismatch(&buf, s, 8192, &mut scratch), None);
        let orig = buf[100];
        buf[100] ^= 0xFF;
        buf[200] ^= 1;
        assert_eq!(first_mismatch(&buf, s, 8192, &mut scratch), Some((8292, orig ^ 0xFF, orig)));
    }
}
