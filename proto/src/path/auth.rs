//! Keys that authenticate connectivity checks between two peers.
//!
//! Both peers derive the same [`PairKey`] from their identity keys alone, with no help from the
//! rendezvous: static-static X25519 between the ed25519 keys in their Montgomery form (the
//! construction iroh uses to seal its disco messages with node keys), then SHA-256 over a domain
//! label, the shared secret and both peer IDs in a fixed order. A check carries an HMAC-SHA256
//! tag (truncated to [`TAG_LEN`] bytes) under that key, so nobody without one of the two private
//! keys can make a node accept a check or a reply: a forged Pong can no longer win a dial.
//!
//! Deriving a key costs one scalar multiplication (tens of microseconds); the path agent caches
//! keys per peer and bounds how many it derives for strangers.

use curve25519_dalek::montgomery::MontgomeryPoint;
use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::PeerId;

/// Bytes of the truncated HMAC-SHA256 tag on every check and reply.
pub const TAG_LEN: usize = 16;
const DOMAIN: &[u8] = b"p2pnat path check key v1";

/// Why no key can be derived with a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairKeyError {
    #[error("peer ID is not a valid ed25519 public key")]
    NotAKey,
    #[error("peer ID is a weak (small-order) key")]
    WeakKey,
}

/// This node's secret half of the Diffie-Hellman: the X25519 scalar of its ed25519 key.
#[derive(Clone)]
pub struct OwnSecret {
    id: PeerId,
    scalar: [u8; 32],
}

impl std::fmt::Debug for OwnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnSecret").field("id", &self.id).finish()
    }
}

impl OwnSecret {
    /// From the node's ed25519 seed (the 32 secret bytes of its identity).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        OwnSecret {
            id: PeerId(key.verifying_key().to_bytes()),
            scalar: key.to_scalar_bytes(),
        }
    }

    /// The peer ID of this secret.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The key both `self` and `peer` derive for checks between them.
    pub fn pair_key(&self, peer: &PeerId) -> Result<PairKey, PairKeyError> {
        let verifying = VerifyingKey::from_bytes(&peer.0).map_err(|_| PairKeyError::NotAKey)?;
        if verifying.is_weak() {
            return Err(PairKeyError::WeakKey);
        }
        let their: MontgomeryPoint = verifying.to_montgomery();
        let shared = their.mul_clamped(self.scalar);
        let (low, high) = if self.id.0 <= peer.0 {
            (&self.id.0, &peer.0)
        } else {
            (&peer.0, &self.id.0)
        };
        let mut hash = Sha256::new();
        hash.update(DOMAIN);
        hash.update(shared.as_bytes());
        hash.update(low);
        hash.update(high);
        Ok(PairKey(hash.finalize().into()))
    }
}

/// The symmetric key of one pair of peers (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct PairKey([u8; 32]);

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairKey(..)")
    }
}

impl PairKey {
    /// The truncated HMAC-SHA256 of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(message);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Whether `tag` is the tag of `message`, compared in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(message);
        mac.verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_key_and_strangers_do_not() {
        let alice = OwnSecret::from_seed(&[1; 32]);
        let bob = OwnSecret::from_seed(&[2; 32]);
        let eve = OwnSecret::from_seed(&[3; 32]);
        let ab = alice.pair_key(&bob.id()).unwrap();
        assert_eq!(ab, bob.pair_key(&alice.id()).unwrap());
        assert_ne!(ab, eve.pair_key(&bob.id()).unwrap());
        assert_ne!(ab, eve.pair_key(&alice.id()).unwrap());
        let tag = ab.tag(b"check");
        assert!(bob.pair_key(&alice.id()).unwrap().verify(b"check", &tag));
        assert!(!ab.verify(b"chock", &tag));
        assert!(!eve.pair_key(&alice.id()).unwrap().verify(b"check", &tag));
        assert!(!ab.verify(b"check", &tag[..8]), "a short tag is refused");
    }

    #[test]
    fn invalid_and_weak_keys_are_refused() {
        let alice = OwnSecret::from_seed(&[1; 32]);
        // The identity point (a small-order point) is a valid encoding but weak.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            alice.pair_key(&PeerId(identity)),
            Err(PairKeyError::WeakKey)
        );
        // y = 2 is not on the curve.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert_eq!(
            alice.pair_key(&PeerId(not_a_point)),
            Err(PairKeyError::NotAKey)
        );
    }
}
