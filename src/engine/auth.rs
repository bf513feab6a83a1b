//! Mutual proof of the shared secret (`NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET`), on every stream
//! of a connection (the frames: wire.rs).
//!
//! The connecting side sends its Hello and a Challenge C (128 random bits); the accepting side
//! answers with its own Challenge A. The connecting side proves the secret with
//!
//! ```text
//! HMAC-SHA256(secret, "nrt-sendrecv 3 connecting side\0" ‖ Hello ‖ C ‖ A)
//! ```
//!
//! and, once that checked and the connection found its `accept`, the accepting side sends its
//! HelloAck and proves the secret with
//!
//! ```text
//! HMAC-SHA256(secret, "nrt-sendrecv 3 accepting side\0" ‖ Hello ‖ C ‖ A ‖ HelloAck)
//! ```
//!
//! (each frame its 40 bytes as sent). Both proofs cover both challenges, so neither is worth
//! anything in another handshake (each side's challenge is fresh); they begin with different
//! labels (and differ in length), so one side's proof never stands for the other's; the
//! connecting side refuses a Challenge equal to its own. Each Challenge names the instance
//! (the random nonce of an lnc's Hellos) and lnc that sent it, inside both proofs: the
//! connecting side checks it reached the lnc it asked for. One trick is left where a side plays
//! both parts: a party on the path relays a connecting side's stream back to that same process's
//! listener, which would prove the secret for it. The challenges a process's connecting sides
//! have out are therefore kept here ([`Issued`]), and an accepting side refuses one of them that
//! comes from anywhere but that very stream's local address.

use crate::wire::HEADER_LEN;
use hmac::Mac;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const CONNECTING: &[u8] = b"nrt-sendrecv 3 connecting side\0";
const ACCEPTING: &[u8] = b"nrt-sendrecv 3 accepting side\0";

/// The frames both proofs cover, as sent.
#[derive(Clone)]
pub(crate) struct Transcript {
    pub hello: [u8; HEADER_LEN],
    /// The connecting side's Challenge.
    pub conn_challenge: [u8; HEADER_LEN],
    /// The accepting side's Challenge.
    pub acc_challenge: [u8; HEADER_LEN],
}

fn mac(secret: &[u8], label: &[u8], t: &Transcript) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(label);
    m.update(&t.hello);
    m.update(&t.conn_challenge);
    m.update(&t.acc_challenge);
    m
}

/// The connecting side's proof.
pub(crate) fn connecting_proof(secret: &[u8], t: &Transcript) -> [u8; 32] {
    mac(secret, CONNECTING, t).finalize().into_bytes().into()
}

/// Whether `proof` is the connecting side's proof of `t` (compared in constant time).
pub(super) fn connecting_proof_checks(secret: &[u8], t: &Transcript, proof: &[u8; 32]) -> bool {
    mac(secret, CONNECTING, t).verify_slice(proof).is_ok()
}

/// The accepting side's proof, which also covers its HelloAck.
pub(crate) fn accepting_proof(secret: &[u8], t: &Transcript, hello_ack: &[u8; HEADER_LEN]) -> [u8; 32] {
    let mut m = mac(secret, ACCEPTING, t);
    m.update(hello_ack);
    m.finalize().into_bytes().into()
}

/// Whether `proof` is the accepting side's proof of `t` and `hello_ack` (constant time).
pub(super) fn accepting_proof_checks(secret: &[u8], t: &Transcript, hello_ack: &[u8; HEADER_LEN], proof: &[u8; 32]) -> bool {
    let mut m = mac(secret, ACCEPTING, t);
    m.update(hello_ack);
    m.verify_slice(proof).is_ok()
}

/// The challenges this process's connecting sides have out, with their stream's local address.
static ISSUED: Mutex<Option<HashMap<[u8; 16], SocketAddr>>> = Mutex::new(None);

/// A challenge a connecting side has out; forgotten when dropped (its set-up has ended).
pub(super) struct Issued(pub [u8; 16]);

impl Issued {
    /// A fresh challenge for the stream leaving from `local`.
    pub fn new(local: SocketAddr) -> std::io::Result<Issued> {
        let c = crate::sys::random::random_128()?;
        ISSUED.lock().get_or_insert_with(HashMap::new).insert(c, local);
        Ok(Issued(c))
    }
}

impl Drop for Issued {
    fn drop(&mut self) {
        if let Some(m) = ISSUED.lock().as_mut() {
            m.remove(&self.0);
        }
    }
}

/// Where a connecting side of this process sent `challenge` from, if one did and has it out.
pub(super) fn issued_here(challenge: &[u8; 16]) -> Option<SocketAddr> {
    ISSUED.lock().as_ref().and_then(|m| m.get(challenge).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seed: u8) -> Transcript {
        Transcript { hello: [seed; HEADER_LEN], conn_challenge: [seed + 1; HEADER_LEN], acc_challenge: [seed + 2; HEADER_LEN] }
    }

    #[test]
    fn proofs_check_only_for_their_side_secret_and_transcript() {
        let (s, ack) = (b"s3cret".as_slice(), [9u8; HEADER_LEN]);
        let c = connecting_proof(s, &t(1));
        let a = accepting_proof(s, &t(1), &ack);
        assert!(connecting_proof_checks(s, &t(1), &c));
        assert!(accepting_proof_checks(s, &t(1), &ack, &a));
        // Another secret, transcript or HelloAck: no.
        assert!(!connecting_proof_checks(b"other", &t(1), &c));
        assert!(!connecting_proof_checks(s, &t(4), &c));
        assert!(!accepting_proof_checks(s, &t(1), &[8u8; HEADER_LEN], &a));
        // One side's proof never stands for the other's, even over the same frames.
        assert!(!accepting_proof_checks(s, &t(1), &ack, &c));
        assert!(!connecting_proof_checks(s, &t(1), &a));
        let mut swapped = t(1);
        std::mem::swap(&mut swapped.conn_challenge, &mut swapped.acc_challenge);
        assert!(!connecting_proof_checks(s, &swapped, &c));
    }

    #[test]
    fn issued_challenges_are_known_until_dropped() {
        let local: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let i = Issued::new(local).unwrap();
        assert_eq!(issued_here(&i.0), Some(local));
        let c = i.0;
        drop(i);
        assert_eq!(issued_here(&c), None);
    }
}
