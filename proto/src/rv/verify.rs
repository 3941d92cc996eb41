//! Register signature checks (docs/PROTOCOL.md section 4.1, "Signature"): one at a time
//! ([`verify_register`], ed25519-dalek's `verify_strict`), or many at once
//! ([`verify_registers`], ed25519-dalek's `verify_batch`, falling back to `verify_strict` one by
//! one).
//!
//! A batch: every datagram that is a Register whose key decompresses and is not weak (small
//! order) is a candidate, with the message `verify_strict` would check ([`wire::SIGNATURE_DOMAIN`]
//! then the signed bytes) and its signature. With two candidates or more, `verify_batch` checks
//! them in one multi-scalar multiplication; if it passes, every candidate is accepted and every
//! other datagram refused. If it fails (one bad signature is enough), or with fewer than two
//! candidates, each datagram of the batch is checked alone with [`verify_register`]: one bad
//! signature costs the batch its saving, never its good signatures.
//!
//! What a passing batch accepts. `verify_batch` (ed25519-dalek 2.2, `batch` feature; see its
//! documentation, "Batch verification" in its README, and `src/batch.rs`) checks
//! sum(z_i ([s_i]B - [h_i]A_i - R_i)) = 0 with 128-bit factors z_i drawn from a merlin
//! transcript of every signature's challenge h_i = SHA-512(R_i || A_i || message_i) and s_i:
//! deterministic (the same batch always gets the same verdict), and nothing in a batch can be
//! chosen knowing its factors. Its `s` must be canonical, as for `verify_strict`. The equation is
//! cofactorless, so it differs from `verify_strict` only on signatures with a small-order
//! component (a small-order point added to R or to the key; `verify_strict` also refuses a
//! small-order R, and R in a non-canonical encoding, which in a signature anyone can make, one
//! needing R's discrete logarithm, is again a small-order R): such a signature passes when z_i times that component vanishes, which depends
//! on the batch's factors, so it may pass a batch though `verify_strict` refuses it. Only the
//! key's own holder can make one (it needs a valid equation for the key's prime-order part), so
//! it still proves possession of that key. Weak keys, which would let anyone sign (ed25519-dalek's
//! README), are never candidates. No forged signature and no altered message passes: a
//! signature whose prime-order part does not verify makes the sum zero with probability below
//! 2^-128 per batch. And a passing batch never refuses what `verify_strict` accepts, a failing
//! one gives exactly `verify_strict`'s verdicts.

use ed25519_dalek::{verify_batch, Signature, VerifyingKey};

use super::wire::{self, Datagram};
use crate::PeerId;

/// Most signatures checked in one batch: the multiplication's shared doublings are then a small
/// part of each signature's cost, and one failed batch re-checks at most this many alone.
pub const MAX_BATCH: usize = 64;

/// Whether `bytes` is a Register whose signature verifies. Pure: safe on any thread.
pub fn verify_register(bytes: &[u8]) -> bool {
    match wire::decode(bytes) {
        Ok(Datagram::Register {
            peer,
            signed,
            signature,
            ..
        }) => verify_signature(&peer, signed, &signature),
        _ => false,
    }
}

/// Whether `signature` is `peer`'s over [`wire::SIGNATURE_DOMAIN`] then `signed`
/// (`verify_strict`; weak keys refused).
pub fn verify_signature(peer: &PeerId, signed: &[u8], signature: &[u8; wire::SIG_LEN]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&peer.0) else {
        return false;
    };
    if key.is_weak() {
        return false;
    }
    key.verify_strict(&signed_message(signed), &Signature::from_bytes(signature))
        .is_ok()
}

/// What a Register's signature signs: [`wire::SIGNATURE_DOMAIN`] then `signed`.
fn signed_message(signed: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(wire::SIGNATURE_DOMAIN.len() + signed.len());
    message.extend_from_slice(wire::SIGNATURE_DOMAIN);
    message.extend_from_slice(signed);
    message
}

/// A verdict for each of `datagrams`, in order, at most [`MAX_BATCH`] checked together (see the
/// module documentation): every Register [`verify_register`] accepts is accepted; a passing
/// batch may also accept a signature with a small-order component, which only its key's holder
/// can make; nothing else is.
pub fn verify_registers<B: AsRef<[u8]>>(datagrams: &[B]) -> Vec<bool> {
    let mut verdicts = Vec::with_capacity(datagrams.len());
    for chunk in datagrams.chunks(MAX_BATCH) {
        let candidates: Vec<Option<Candidate>> =
            chunk.iter().map(|d| Candidate::new(d.as_ref())).collect();
        if batch_holds(candidates.iter().flatten()) {
            verdicts.extend(candidates.iter().map(Option::is_some));
        } else {
            verdicts.extend(chunk.iter().map(|d| verify_register(d.as_ref())));
        }
    }
    verdicts
}

/// A Register whose key decompresses and is not weak: its part in `verify_batch`.
struct Candidate {
    message: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
}

impl Candidate {
    /// `None`: not a Register, or its key does not decompress or is weak.
    fn new(bytes: &[u8]) -> Option<Candidate> {
        let Ok(Datagram::Register {
            peer,
            signed,
            signature,
            ..
        }) = wire::decode(bytes)
        else {
            return None;
        };
        let key = VerifyingKey::from_bytes(&peer.0).ok()?;
        if key.is_weak() {
            return None;
        }
        Some(Candidate {
            message: signed_message(signed),
            signature: Signature::from_bytes(&signature),
            key,
        })
    }
}

/// Whether there are two candidates or more and `verify_batch` accepts them together.
fn batch_holds<'a>(candidates: impl Iterator<Item = &'a Candidate>) -> bool {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    let mut signatures = Vec::with_capacity(MAX_BATCH);
    let mut keys = Vec::with_capacity(MAX_BATCH);
    for candidate in candidates {
        messages.push(candidate.message.as_slice());
        signatures.push(candidate.signature);
        keys.push(candidate.key);
    }
    messages.len() >= 2 && verify_batch(&messages, &signatures, &keys).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rv::wire::Builder;
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::scalar::Scalar;
    use ed25519_dalek::{Signer, SigningKey};
    use sha2::{Digest, Sha512};

    /// A Register signed by the key of `seed`.
    fn register(seed: u8) -> Vec<u8> {
        let key = SigningKey::from_bytes(&[seed; 32]);
        signed_register(&key.verifying_key().to_bytes(), 7, |m| {
            key.sign(m).to_bytes()
        })
    }

    fn signed_register(peer: &[u8; 32], id: u8, sign: impl Fn(&[u8]) -> [u8; 64]) -> Vec<u8> {
        let body = crate::control::encode(&crate::control::Request::Lookup {
            peer: PeerId(*peer),
        });
        let mut bytes = Builder::new(wire::KIND_REGISTER, &[id; 8])
            .bytes(&[9; wire::COOKIE_LEN])
            .bytes(peer)
            .bytes(&[0])
            .body(&body)
            .finish();
        let mut message = wire::SIGNATURE_DOMAIN.to_vec();
        message.extend_from_slice(&bytes);
        bytes.extend_from_slice(&sign(&message));
        bytes
    }

    /// A Register naming the key [a]B + `on_key` whose signature, made with the secret scalar
    /// `signer` (unclamped: the tests need only the equation), has `on_r` added to R. With
    /// `signer == a` it is what the key's holder can make; otherwise a forgery.
    fn torsion_register(
        a: u64,
        signer: u64,
        on_key: &EdwardsPoint,
        on_r: &EdwardsPoint,
        id: u8,
    ) -> Vec<u8> {
        let public = (ED25519_BASEPOINT_POINT * Scalar::from(a) + on_key)
            .compress()
            .to_bytes();
        let signer = Scalar::from(signer);
        signed_register(&public, id, |message| {
            let r = Scalar::from(0x1234_5678u64 + u64::from(id));
            let big_r = (ED25519_BASEPOINT_POINT * r + on_r).compress().to_bytes();
            let mut h = Sha512::new();
            h.update(big_r);
            h.update(public);
            h.update(message);
            let h = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let mut sig = [0; 64];
            sig[..32].copy_from_slice(&big_r);
            sig[32..].copy_from_slice((r + h * signer).as_bytes());
            sig
        })
    }

    fn one_by_one(batch: &[Vec<u8>]) -> Vec<bool> {
        batch.iter().map(|d| verify_register(d)).collect()
    }

    /// Whether `verify_batch` accepts `batch`'s candidates together, and how many there are.
    fn batch_check(batch: &[Vec<u8>]) -> (usize, bool) {
        let candidates: Vec<Candidate> = batch.iter().filter_map(|d| Candidate::new(d)).collect();
        (candidates.len(), batch_holds(candidates.iter()))
    }

    #[test]
    fn a_forged_register_fails_alone_and_the_good_ones_pass() {
        let mut batch: Vec<Vec<u8>> = (1..=9).map(register).collect();
        // Forged: signed by another key than the one it names.
        let mut forged = register(100);
        forged[14 + wire::COOKIE_LEN..14 + wire::COOKIE_LEN + 32]
            .copy_from_slice(&batch[0][14 + wire::COOKIE_LEN..14 + wire::COOKIE_LEN + 32]);
        batch.insert(4, forged);
        // Altered after signing.
        let mut altered = register(101);
        let n = altered.len() - 65;
        altered[n] ^= 1;
        batch.push(altered);
        let verdicts = verify_registers(&batch);
        let mut expected = vec![true; batch.len()];
        expected[4] = false;
        expected[10] = false;
        assert_eq!(verdicts, expected);
        assert_eq!(verdicts, one_by_one(&batch));
        // All good: accepted by the batch check alone; with the forged one it fails.
        let good: Vec<Vec<u8>> = (1..=MAX_BATCH as u8 + 3).map(register).collect();
        assert!(verify_registers(&good).iter().all(|&ok| ok));
        assert_eq!(batch_check(&good[..MAX_BATCH]), (MAX_BATCH, true));
        assert_eq!(batch_check(&batch), (batch.len(), false));
    }

    #[test]
    fn malformed_and_edge_signatures_are_refused() {
        let good = register(1);
        let sig_at = good.len() - 64;
        let mut cases = vec![good.clone(), register(2), b"not a register".to_vec()];
        // s not canonical (s + l).
        let mut big_s = good.clone();
        let s = Scalar::from_canonical_bytes(big_s[sig_at + 32..].try_into().unwrap()).unwrap();
        let mut plus_l = [0u8; 32];
        let mut carry = 0u16;
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        for i in 0..32 {
            let sum = u16::from(s.as_bytes()[i]) + u16::from(l[i]) + carry;
            plus_l[i] = sum as u8;
            carry = sum >> 8;
        }
        big_s[sig_at + 32..].copy_from_slice(&plus_l);
        cases.push(big_s);
        // R small order; R not a point; R with a non-canonical y.
        for r in [EIGHT_TORSION[1].compress().to_bytes(), [0xff; 32], {
            let mut r = [0xff; 32];
            r[0] = 0xee;
            r[31] = 0x7f;
            r
        }] {
            let mut bad = good.clone();
            bad[sig_at..sig_at + 32].copy_from_slice(&r);
            cases.push(bad);
        }
        // A weak (small-order) key.
        cases.push(signed_register(
            &EIGHT_TORSION[2].compress().to_bytes(),
            7,
            |_| [1; 64],
        ));
        // A key that is not a point.
        let mut no_key = good.clone();
        let not_a_point = {
            let mut y = [0; 32];
            y[0] = 2;
            y
        };
        assert!(VerifyingKey::from_bytes(&not_a_point).is_err());
        no_key[14 + wire::COOKIE_LEN..14 + wire::COOKIE_LEN + 32].copy_from_slice(&not_a_point);
        cases.push(no_key);
        // Control: the test's own signing, torsion-free, is valid.
        let none = EdwardsPoint::default();
        cases.push(torsion_register(5, 5, &none, &none, 7));
        let expected = one_by_one(&cases);
        assert_eq!(expected[..2], [true, true]);
        assert!(expected[2..cases.len() - 1].iter().all(|&ok| !ok));
        assert!(expected[cases.len() - 1], "the control signs validly");
        assert_eq!(verify_registers(&cases), expected);
        // Each bad one also in a batch of good ones.
        for case in &cases[2..cases.len() - 1] {
            let batch = vec![register(3), case.clone(), register(4)];
            assert_eq!(verify_registers(&batch), [true, false, true]);
        }
    }

    #[test]
    fn truncated_and_extended_registers_are_refused_without_panic() {
        let good = register(1);
        let mut batch: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        let mut longer = good.clone();
        longer.push(0);
        batch.push(longer);
        batch.push(good);
        let mut expected = vec![false; batch.len()];
        expected[batch.len() - 1] = true;
        assert_eq!(verify_registers(&batch), expected);
    }

    #[test]
    fn small_order_parts_never_cost_an_honest_register_and_forgeries_fail() {
        // Signatures with a small-order component, made by their keys' holders: verify_strict
        // refuses those with a part on R, and those with a part on the key unless h times it
        // vanishes. A passing batch may accept them (module documentation); all that is
        // guaranteed is that whatever verify_strict accepts is accepted and that the honest
        // Registers beside them pass.
        let none = EdwardsPoint::default();
        let mut crafted = Vec::new();
        for (t, on_r) in EIGHT_TORSION.iter().enumerate().skip(1) {
            crafted.push(torsion_register(
                1000 + t as u64,
                1000 + t as u64,
                &none,
                on_r,
                7,
            ));
        }
        for id in 0..24u8 {
            let on_key = &EIGHT_TORSION[[4, 1, 2][usize::from(id) % 3]];
            let a = 77 + u64::from(id);
            crafted.push(torsion_register(a, a, on_key, &none, id));
        }
        let strict = one_by_one(&crafted);
        assert!(strict[..7].iter().all(|&ok| !ok));
        assert!(strict.iter().any(|&ok| ok), "some key parts vanish under h");
        let at_least_strict = |batch: &[Vec<u8>], verdicts: &[bool]| {
            for ((bytes, &ok), &strict) in batch.iter().zip(verdicts).zip(&one_by_one(batch)) {
                assert!(
                    ok || !strict,
                    "refused though verify_strict accepts: {bytes:?}"
                );
            }
        };
        // Each among honest ones, and all of them together with honest ones.
        for case in &crafted {
            let batch = vec![register(3), case.clone(), register(4)];
            let verdicts = verify_registers(&batch);
            assert!(verdicts[0] && verdicts[2]);
            at_least_strict(&batch, &verdicts);
        }
        let mut all = vec![register(3)];
        all.extend(crafted.iter().cloned());
        all.push(register(4));
        let verdicts = verify_registers(&all);
        assert!(verdicts[0] && verdicts[all.len() - 1]);
        at_least_strict(&all, &verdicts);
        assert_eq!(verify_registers(&all), verdicts, "deterministic");

        // Forgeries with small-order parts, by someone without the key's secret: refused alone
        // and in any batch, also beside crafted ones, and the honest ones still pass.
        let mut forged = Vec::new();
        for (t, on_r) in EIGHT_TORSION.iter().enumerate() {
            let on_key = &EIGHT_TORSION[(t + 3) % 8];
            forged.push(torsion_register(
                2000 + t as u64,
                3000 + t as u64,
                on_key,
                on_r,
                9,
            ));
        }
        // A crafted one altered after signing.
        let mut altered = crafted[0].clone();
        let n = altered.len() - 65;
        altered[n] ^= 1;
        forged.push(altered);
        assert!(one_by_one(&forged).iter().all(|&ok| !ok));
        for case in &forged {
            let batch = vec![register(3), case.clone(), register(4)];
            assert_eq!(verify_registers(&batch), [true, false, true]);
            let mut with_crafted = all.clone();
            with_crafted.insert(5, case.clone());
            let verdicts = verify_registers(&with_crafted);
            assert!(!verdicts[5]);
            assert!(verdicts[0] && verdicts[with_crafted.len() - 1]);
            at_least_strict(&with_crafted, &verdicts);
        }
    }

    #[test]
    fn honest_batches_pass_the_batch_check() {
        // Random keys and messages: verify_batch accepts each full batch at once.
        for round in 0..8u32 {
            let batch: Vec<Vec<u8>> = (0..MAX_BATCH as u32)
                .map(|i| {
                    let seed = Sha512::digest((round * 1000 + i).to_be_bytes());
                    let key = SigningKey::from_bytes(&seed[..32].try_into().unwrap());
                    signed_register(&key.verifying_key().to_bytes(), i as u8, |m| {
                        key.sign(m).to_bytes()
                    })
                })
                .collect();
            assert_eq!(batch_check(&batch), (MAX_BATCH, true), "round {round}");
            assert!(
                verify_registers(&batch).iter().all(|&ok| ok),
                "round {round}"
            );
        }
    }
}
