//! Helpers shared by the fuzz targets (`fuzz_targets/`) and the seed generator
//! (`examples/seeds.rs`).
//!
//! - [`Records`]: the input format of the stateful targets, a sequence of operations;
//! - [`stun_fix`]: repairs a mutated STUN message so that it gets past the checks a fuzzer
//!   cannot forge (transaction ID of an outstanding request, NONCE, MESSAGE-INTEGRITY), so the
//!   machines behind those checks are reached. The repairs never touch anything the decoder
//!   reads for lengths: they only overwrite bytes in place.

/// A sequence of operations: each record is `op: u8`, `len: u16` (big-endian), then `len`
/// payload bytes (fewer if the input ends first). The stateful targets read their input this
/// way; the seed generator writes it with [`record`].
pub struct Records<'a> {
    data: &'a [u8],
}

impl<'a> Records<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Records { data }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&op, rest) = self.data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (rest.len(), &[][..]),
        };
        let len = len.min(rest.len());
        let (payload, rest) = rest.split_at(len);
        self.data = rest;
        Some((op, payload))
    }
}

/// One record of the [`Records`] format.
///
/// # Panics
/// If `payload` exceeds 65,535 bytes (seed generation only).
pub fn record(op: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("a record payload fits in 65,535 bytes");
    let mut out = vec![op];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads a big-endian u16 at `at`, 0 past the end.
pub fn u16_at(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}

pub mod stun_fix {
    use hmac::{Hmac, Mac};
    use md5::{Digest, Md5};

    pub const ATTR_USERNAME: u16 = 0x0006;
    pub const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ATTR_REALM: u16 = 0x0014;
    pub const ATTR_NONCE: u16 = 0x0015;
    const HEADER: usize = 20;

    /// Whether `msg` looks like a STUN message (two zero bits, a full header).
    pub fn is_stun(msg: &[u8]) -> bool {
        msg.len() >= HEADER && msg[0] & 0xC0 == 0
    }

    /// The attributes of a STUN message as (offset of the attribute header, type, value length),
    /// walking at most the bytes present (the message's length field is not trusted).
    pub fn attributes(msg: &[u8]) -> Vec<(usize, u16, usize)> {
        let mut out = Vec::new();
        let mut at = HEADER;
        while at + 4 <= msg.len() {
            let kind = u16::from_be_bytes([msg[at], msg[at + 1]]);
            let len = usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]));
            if at + 4 + len > msg.len() {
                break;
            }
            out.push((at, kind, len));
            at += 4 + len.next_multiple_of(4);
        }
        out
    }

    /// The value of the first attribute of type `kind`.
    pub fn find(msg: &[u8], kind: u16) -> Option<&[u8]> {
        attributes(msg)
            .into_iter()
            .find(|&(_, k, _)| k == kind)
            .map(|(at, _, len)| &msg[at + 4..at + 4 + len])
    }

    /// Overwrites the value of the first attribute of type `kind` if it has `value`'s length.
    pub fn replace(msg: &mut [u8], kind: u16, value: &[u8]) {
        if let Some((at, _, len)) = attributes(msg).into_iter().find(|&(_, k, _)| k == kind) {
            if len == value.len() {
                msg[at + 4..at + 4 + len].copy_from_slice(value);
            }
        }
    }

    /// Sets the transaction ID (bytes 8..20).
    pub fn set_transaction(msg: &mut [u8], transaction: &[u8; 12]) {
        if msg.len() >= HEADER {
            msg[8..20].copy_from_slice(transaction);
        }
    }

    /// The long-term credential key, MD5(username ":" realm ":" password) (RFC 8489 9.2.2).
    pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
        let mut md5 = Md5::new();
        md5.update(format!("{username}:{realm}:{password}").as_bytes());
        md5.finalize().into()
    }

    /// Recomputes the first MESSAGE-INTEGRITY (HMAC-SHA1, 20 bytes) under `key`, as RFC 8489
    /// section 14.5 says: over the message before the attribute, with the header's length set
    /// as if the attribute ended the message. Nothing happens without such an attribute.
    pub fn fix_integrity(msg: &mut [u8], key: &[u8]) {
        let Some((at, _, len)) = attributes(msg)
            .into_iter()
            .find(|&(_, k, _)| k == ATTR_MESSAGE_INTEGRITY)
        else {
            return;
        };
        if len != 20 {
            return;
        }
        let Ok(covered) = u16::try_from(at + 4 + 20 - HEADER) else {
            return;
        };
        let mut input = msg[..at].to_vec();
        input[2..4].copy_from_slice(&covered.to_be_bytes());
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&input);
        msg[at + 4..at + 24].copy_from_slice(&mac.finalize().into_bytes());
    }
}
