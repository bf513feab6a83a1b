//! The handshake's proof of the shared secret (`NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET`).

use crate::wire::HEADER_LEN;

pub(super) type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// HMAC-SHA256(secret, challenge ‖ Hello frame bytes).
pub(super) fn auth_mac(secret: &[u8], challenge: &[u8; 16], hello: &[u8; HEADER_LEN]) -> HmacSha256 {
    use hmac::Mac;
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(challenge);
    m.update(hello);
    m
}
