//! Register signature checks (docs/PROTOCOL.md section 4.1, "Signature"): one at a time
//! ([`verify_register`], ed25519-dalek's `verify_strict`), or many at once
//! ([`verify_registers`]: `verify_strict`'s verdicts, but for one case below, at a fraction of
//! the cost each).
//!
//! A batch checks the sum of every signature's equation, each weighted by a random factor, in
//! one multi-scalar multiplication instead of one double-base multiplication each (and no
//! point compression). If the sum fails, each datagram of the batch is checked again alone with
//! `verify_strict`, so one bad signature costs the batch its saving, never its good signatures.
//!
//! Why the verdicts are `verify_strict`'s. Write a signature (R, s) of key A with challenge
//! h = SHA-512(R || A || message) mod l. `verify_strict` accepts exactly when: A and R
//! decompress and neither has small order, s is canonical (below l), and the compression of
//! [s]B - [h]A equals R's 32 bytes, i.e. R's encoding is canonical (y below 2^255 - 19) and
//! D = [s]B - [h]A - R is the identity. Every condition but the last is checked here one by one
//! exactly so (a datagram failing one is refused without entering the sum). For the last the
//! sum is sum(z_i D_i) with factors z_i derived from SHA-512 of the whole batch (its
//! challenges and s values: nothing in a batch can be chosen knowing its factors; see
//! [`factors`]). The group is (order l) x (order 8): D_i = P_i + T_i, and the factors are
//! chosen so that the sum is sum(z_i P_i) + sum(T_i), zero only if both parts are. If some
//! P_i is not zero, sum(z_i P_i) is zero for one value of z_i only: probability below 2^-105.
//! So a sum of zero means every P_i is zero (no forged or altered signature passes) and the
//! T_i cancel. A lone signature with T_i not zero (only its key's holder can make one: a valid
//! signature with a small-order part added to R or to the key) fails the sum and then
//! `verify_strict`; ed25519-dalek's `verify_batch` (random 128-bit factors) would pass it
//! whenever its factor is a multiple of T_i's order, which is why it is not used. The one
//! difference left: two or more such crafted signatures, by their keys' holders, whose
//! small-order parts cancel exactly, in the same batch, are accepted though `verify_strict`
//! refuses each; they prove possession of their keys all the same (a forgery needs a P_i).

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha512};

use super::wire::{self, Datagram};
use crate::PeerId;

/// Most signatures checked in one sum: the multiplication's shared doublings are then a small
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
    let mut message = Vec::with_capacity(wire::SIGNATURE_DOMAIN.len() + signed.len());
    message.extend_from_slice(wire::SIGNATURE_DOMAIN);
    message.extend_from_slice(signed);
    key.verify_strict(&message, &Signature::from_bytes(signature))
        .is_ok()
}

/// [`verify_register`] of each of `datagrams`, in order, checked together (see the module
/// documentation: the same verdicts, cheaper). At most [`MAX_BATCH`] are summed at once.
pub fn verify_registers<B: AsRef<[u8]>>(datagrams: &[B]) -> Vec<bool> {
    let mut verdicts = Vec::with_capacity(datagrams.len());
    for chunk in datagrams.chunks(MAX_BATCH) {
        if let [one] = chunk {
            verdicts.push(verify_register(one.as_ref()));
            continue;
        }
        let prepared: Vec<Option<Prepared>> =
            chunk.iter().map(|d| Prepared::new(d.as_ref())).collect();
        let factors = factors(&prepared);
        let summed: Vec<(&Prepared, &Factors)> = prepared
            .iter()
            .zip(&factors)
            .filter_map(|(item, factors)| Some((item.as_ref()?, factors.as_ref()?)))
            .collect();
        // One alone is checked alone.
        let sum_holds = summed.len() >= 2 && sum_is_identity(&summed);
        for ((bytes, item), factors) in chunk.iter().zip(&prepared).zip(&factors) {
            verdicts.push(match (item, factors) {
                (None, _) => false,
                (Some(_), Some(_)) if sum_holds => true,
                _ => verify_register(bytes.as_ref()),
            });
        }
    }
    verdicts
}

/// A Register that passed every check but the equation, ready for the sum.
struct Prepared {
    key: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    /// SHA-512(R || A || domain || signed), before reduction (the batch factors hash it).
    challenge: [u8; 64],
}

impl Prepared {
    /// `None`: not a Register, or refused by a check `verify_strict` makes before its
    /// equation.
    fn new(bytes: &[u8]) -> Option<Prepared> {
        let Ok(Datagram::Register {
            peer,
            signed,
            signature,
            ..
        }) = wire::decode(bytes)
        else {
            return None;
        };
        let key = CompressedEdwardsY(peer.0).decompress()?;
        if key.is_small_order() {
            return None;
        }
        let r_bytes: [u8; 32] = signature[..32].try_into().ok()?;
        let s_bytes: [u8; 32] = signature[32..].try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        if !canonical_y(&r_bytes) {
            return None;
        }
        let r = CompressedEdwardsY(r_bytes).decompress()?;
        if r.is_small_order() {
            return None;
        }
        let mut hash = Sha512::new();
        hash.update(r_bytes);
        hash.update(peer.0);
        hash.update(wire::SIGNATURE_DOMAIN);
        hash.update(signed);
        Some(Prepared {
            key,
            r,
            s,
            challenge: hash.finalize().into(),
        })
    }
}

/// Whether a point's encoding has its y coordinate below p = 2^255 - 19 (the sign bit aside):
/// `verify_strict` compares R's bytes with a compression, which is always canonical.
fn canonical_y(encoding: &[u8; 32]) -> bool {
    let top = encoding[31] & 0x7f;
    !(top == 0x7f && encoding[1..31].iter().all(|&b| b == 0xff) && encoding[0] >= 0xed)
}

/// A signature's factors in the sum: z for R, c = z h mod l for A.
struct Factors {
    z: Scalar,
    c: Scalar,
}

/// Looking for a signature's factors: at most this many rounds, each from freshly derived
/// bits, of [`FACTOR_STEPS`] steps. A step succeeds with probability about 1/8, but a walk
/// can stall (a step moves c by 8 K h mod l, which for some K and h hardly changes c mod 8):
/// in a simulation (random h) one round failed 11% of the time and 4 rounds 0.013%, so 8
/// fail about once in 10^8 signatures, which is then checked alone.
const FACTOR_ROUNDS: u32 = 8;
const FACTOR_STEPS: u128 = 16;

/// The factors of each prepared signature (`None` for the rest), derived from SHA-512 of the
/// whole batch: its challenges and s values, so nothing in it can be chosen knowing them.
///
/// A scalar is reduced mod l, and a point with a small-order part is multiplied by the
/// scalar's representative in [0, l): its small-order part by that number mod 8. So the
/// factors are chosen for the small-order parts to be multiplied exactly as `verify_strict`
/// multiplies them: R_i by z_i = 8 w_i + 1 itself (below l, 1 mod 8: R_i's part once), and
/// A_i by c_i = z_i h_i mod l only if c_i = h_i mod 8 (then A_i's part h_i times, as alone).
/// Each round derives w (115 bits) and an odd step K (112 bits) and tries w, w + K, ...,
/// w + 15 K: z_i < 2^120, and a given value of z_i comes out with probability below
/// 2^7 * 2^-112 = 2^-105.
fn factors(prepared: &[Option<Prepared>]) -> Vec<Option<Factors>> {
    let mut transcript = Sha512::new();
    transcript.update(b"p2pnat register batch v1");
    for item in prepared.iter().flatten() {
        transcript.update(item.challenge);
        transcript.update(item.s.as_bytes());
    }
    let transcript = transcript.finalize();
    let mut all = Vec::with_capacity(prepared.len());
    for (i, item) in prepared.iter().enumerate() {
        all.push(item.as_ref().and_then(|item| {
            let h = Scalar::from_bytes_mod_order_wide(&item.challenge);
            (0..FACTOR_ROUNDS).find_map(|round| {
                let mut derive = Sha512::new();
                derive.update(transcript);
                derive.update((i as u32).to_be_bytes());
                derive.update(round.to_be_bytes());
                let bits = derive.finalize();
                let word =
                    |at: usize| u128::from_le_bytes(bits[at..at + 16].try_into().expect("16"));
                let mut w = word(0) >> 13;
                let k = (word(16) >> 16) | 1;
                let step = Scalar::from(8 * k) * h;
                let mut c = Scalar::from(8 * w + 1) * h;
                for _ in 0..FACTOR_STEPS {
                    if c.as_bytes()[0] & 7 == h.as_bytes()[0] & 7 {
                        let z = Scalar::from(8 * w + 1);
                        return Some(Factors { z, c });
                    }
                    w += k;
                    c += step;
                }
                None
            })
        }));
    }
    all
}

/// Whether sum(z_i ([s_i]B - [h_i]A_i - R_i)) is the identity (module documentation), as
/// sum(z_i s_i) B + sum(z_i (-R_i)) + sum(c_i (-A_i)).
fn sum_is_identity(items: &[(&Prepared, &Factors)]) -> bool {
    let mut b_factor = Scalar::ZERO;
    let mut scalars = Vec::with_capacity(1 + 2 * items.len());
    let mut points = Vec::with_capacity(1 + 2 * items.len());
    for (item, factors) in items {
        b_factor += factors.z * item.s;
        scalars.push(factors.z);
        points.push(-item.r);
        scalars.push(factors.c);
        points.push(-item.key);
    }
    scalars.push(b_factor);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points).is_identity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rv::wire::Builder;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer, SigningKey};

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

    /// A signature by secret scalar `a` (unclamped: the test needs only the equation) whose
    /// key has the small-order part `on_key` added and whose R has `on_r` added: what only
    /// the key's holder can make. `verify_strict` accepts it when h * on_key + on_r = 0.
    fn torsion_register(a: u64, on_key: &EdwardsPoint, on_r: &EdwardsPoint, id: u8) -> Vec<u8> {
        let a = Scalar::from(a);
        let public = (ED25519_BASEPOINT_POINT * a + on_key).compress().to_bytes();
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
            sig[32..].copy_from_slice((r + h * a).as_bytes());
            sig
        })
    }

    fn one_by_one(batch: &[Vec<u8>]) -> Vec<bool> {
        batch.iter().map(|d| verify_register(d)).collect()
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
        // All good: accepted by the sum alone; with the forged one the sum fails.
        let good: Vec<Vec<u8>> = (1..=MAX_BATCH as u8 + 3).map(register).collect();
        assert!(verify_registers(&good).iter().all(|&ok| ok));
        let sum = |batch: &[Vec<u8>]| {
            let prepared: Vec<Option<Prepared>> = batch.iter().map(|d| Prepared::new(d)).collect();
            let factors = factors(&prepared);
            let summed: Vec<(&Prepared, &Factors)> = prepared
                .iter()
                .zip(&factors)
                .filter_map(|(p, f)| Some((p.as_ref()?, f.as_ref()?)))
                .collect();
            (summed.len(), sum_is_identity(&summed))
        };
        assert_eq!(sum(&good[..MAX_BATCH]), (MAX_BATCH, true));
        assert_eq!(sum(&batch), (batch.len(), false));
    }

    #[test]
    fn verdicts_are_verify_stricts_on_malformed_and_edge_signatures() {
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
        // Valid equations but for a small-order part added to R: verify_strict refuses each.
        let none = EdwardsPoint::default();
        for (t, on_r) in EIGHT_TORSION.iter().enumerate().skip(1) {
            cases.push(torsion_register(1000 + t as u64, &none, on_r, 7));
        }
        cases.push(torsion_register(5, &none, &none, 7));
        let expected = one_by_one(&cases);
        assert_eq!(expected[..2], [true, true]);
        assert!(expected[2..cases.len() - 1].iter().all(|&ok| !ok));
        assert!(
            expected[cases.len() - 1],
            "the torsion-free control signs validly"
        );
        assert_eq!(verify_registers(&cases), expected);
        // Each crafted one also in a batch of good ones.
        for case in &cases[2..] {
            let batch = vec![register(3), case.clone(), register(4)];
            assert_eq!(verify_registers(&batch), one_by_one(&batch));
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
    fn keys_with_a_small_order_part_get_verify_stricts_verdict() {
        // verify_strict accepts such a key's signature exactly when h times the key's
        // small-order part is zero (h even for order 2, a multiple of 8 for order 8): the sum
        // must multiply the key's part by h itself, not by z h mod l.
        let none = EdwardsPoint::default();
        let mut batch = vec![register(1)];
        for id in 0..48u8 {
            let on_key = &EIGHT_TORSION[[4, 1, 2][usize::from(id) % 3]];
            batch.push(torsion_register(77 + u64::from(id), on_key, &none, id));
        }
        batch.push(register(2));
        let expected = one_by_one(&batch);
        let accepted = expected.iter().filter(|&&ok| ok).count();
        assert!(accepted > 2 && accepted < batch.len(), "{accepted}");
        // Only those verify_strict accepts, together (the sum holds) ...
        let accepted_only: Vec<Vec<u8>> = batch
            .iter()
            .zip(&expected)
            .filter(|(_, ok)| **ok)
            .map(|(d, _)| d.clone())
            .collect();
        assert!(verify_registers(&accepted_only).iter().all(|&ok| ok));
        // ... and each alone among good ones (several refused ones in one batch could cancel:
        // see the next test).
        for case in &batch {
            let three = vec![register(3), case.clone(), register(4)];
            assert_eq!(verify_registers(&three), one_by_one(&three));
        }
    }

    #[test]
    fn crafted_small_order_parts_that_cancel_pass_a_batch() {
        // The one difference from verify_strict (module documentation): two signatures made
        // by their keys' holders with opposite small-order parts on R, in one batch.
        let none = EdwardsPoint::default();
        let batch = vec![
            torsion_register(11, &none, &EIGHT_TORSION[1], 7),
            torsion_register(12, &none, &EIGHT_TORSION[7], 7),
        ];
        assert_eq!(one_by_one(&batch), [false, false]);
        assert_eq!(verify_registers(&batch), [true, true]);
        // Not opposite: refused, as one by one.
        let batch = vec![
            torsion_register(11, &none, &EIGHT_TORSION[1], 7),
            torsion_register(12, &none, &EIGHT_TORSION[1], 7),
        ];
        assert_eq!(verify_registers(&batch), [false, false]);
    }

    #[test]
    fn sums_of_honest_signatures_hold() {
        // Random keys and challenges: every signature finds its factors, and the sum holds.
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
            let prepared: Vec<Option<Prepared>> = batch.iter().map(|d| Prepared::new(d)).collect();
            let factors = factors(&prepared);
            let summed: Vec<(&Prepared, &Factors)> = prepared
                .iter()
                .zip(&factors)
                .filter_map(|(p, f)| Some((p.as_ref()?, f.as_ref()?)))
                .collect();
            assert_eq!(summed.len(), MAX_BATCH, "round {round}");
            assert!(sum_is_identity(&summed), "round {round}");
        }
    }
}
