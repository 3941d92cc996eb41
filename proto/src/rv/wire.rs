//! The node <-> rendezvous control datagrams on the wire (docs/PROTOCOL.md section 4.1).
//!
//! ```text
//! offset size field (every datagram)
//! 0      1    0x81 (project datagram, format version 1)
//! 1      4    "p2pN"
//! 5      1    kind (0x10-0x17 node -> rendezvous, 0x18-0x1F rendezvous -> node)
//! 6      8    id: the transaction ID of a request and its answer, or a push ID
//!
//! 0x10 Hello       14: 34 zero bytes                                     = 48 bytes
//! 0x11 Register    14: cookie 16 | peer 32 | flags 1 | len 2 | body | sig 64 >= 132 bytes
//! 0x12 Request     14: peer 32 | session 8 | seq 8 | len 2 | body | tag 16 >= 83 bytes
//! 0x13 PushAck     14: peer 32 | session 8 | tag 16                       = 70 bytes
//! 0x18 Cookie      14: cookie 16                                          = 30 bytes
//! 0x19 Registered  14: session 8 | key 16 | len 2 | body | tag 16
//! 0x1A Response    14: session 8 | len 2 | body | tag 16
//! 0x1B Unknown     14: session 8                                          = 22 bytes
//! 0x1C Push        14: session 8 | len 2 | body | tag 16
//! ```
//!
//! `body` is a control message exactly as over QUIC and TLS (`crate::control`: version, then
//! bincode), at most [`MAX_BODY`] bytes. `sig` is the node's ed25519 signature over
//! [`SIGNATURE_DOMAIN`] followed by every byte before it; `tag` is the first 16 bytes of
//! HMAC-SHA256 under the session key over every byte before it. Every length is checked against
//! the datagram before anything is read, and nothing is allocated before the body's length has
//! been checked against [`MAX_BODY`]; decoding never panics.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::control;
use crate::demux::PROJECT_MAGIC;
use crate::path::wire::FIRST_BYTE;
use crate::PeerId;

pub const KIND_HELLO: u8 = 0x10;
pub const KIND_REGISTER: u8 = 0x11;
pub const KIND_REQUEST: u8 = 0x12;
pub const KIND_PUSH_ACK: u8 = 0x13;
pub const KIND_COOKIE: u8 = 0x18;
pub const KIND_REGISTERED: u8 = 0x19;
pub const KIND_RESPONSE: u8 = 0x1A;
pub const KIND_UNKNOWN: u8 = 0x1B;
pub const KIND_PUSH: u8 = 0x1C;

/// Bytes every control datagram starts with: first byte, magic, kind, id.
pub const HEADER: usize = 14;
/// A Hello's exact length: padded so that the Cookie answering it is smaller.
pub const HELLO_LEN: usize = 48;
pub const COOKIE_LEN: usize = 16;
pub const TAG_LEN: usize = 16;
pub const SIG_LEN: usize = 64;
pub const KEY_LEN: usize = 16;
/// Register flag: the node pinned the rendezvous's key, so the session key is derived from
/// both identities (X25519) and never sent; the Registered's tag then proves the rendezvous.
pub const FLAG_PINNED: u8 = 0x01;
/// What a pinned session key is derived with (under the pair key of node and rendezvous).
pub const PINNED_SESSION_DOMAIN: &[u8] = b"p2pnat rendezvous session v1";
/// Largest body (an encoded control message) a datagram may carry: with the largest framing
/// (Register, 129 bytes) a datagram stays within 1,229 bytes, under IPv6's 1,280-byte minimum
/// MTU less 48 bytes of IP and UDP headers. Real bodies are far smaller (a Register with 16
/// IPv6 addresses is about 480 bytes).
pub const MAX_BODY: usize = 1_100;
/// What a Register's signature covers before the datagram's bytes: keeps the signature from
/// meaning anything in another protocol that signs with the same key.
pub const SIGNATURE_DOMAIN: &[u8] = b"p2pnat rendezvous register v1";

/// A transaction or push ID.
pub type Id = [u8; 8];
pub type Cookie = [u8; COOKIE_LEN];
pub type SessionKey = [u8; KEY_LEN];

/// Whether `datagram` is a rendezvous control datagram (as opposed to a path check): the
/// node's demultiplexer sends these to the rendezvous client. Total; never panics.
pub fn is_control(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER
        && datagram[0] == FIRST_BYTE
        && datagram[1..5] == PROJECT_MAGIC
        && (0x10..0x20).contains(&datagram[5])
}

/// Why a control datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a control datagram")]
    NotControl,
    #[error("unknown control datagram kind {0:#04x}")]
    UnknownKind(u8),
    #[error("control datagram of kind {kind:#04x} has a bad length {len}")]
    BadLength { kind: u8, len: usize },
    #[error("control datagram body of {0} bytes exceeds {MAX_BODY}")]
    BodyTooLarge(usize),
    #[error("bad tag or signature")]
    BadAuth,
    #[error("malformed body: {0}")]
    Body(String),
}

/// A decoded control datagram, borrowing from the bytes it came from. Authentication (tag,
/// signature, cookie) is checked by the machines, which know the keys; `signed` and `tagged`
/// are the bytes the signature or tag covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    Hello {
        id: Id,
    },
    Register {
        id: Id,
        cookie: Cookie,
        peer: PeerId,
        flags: u8,
        body: &'a [u8],
        signed: &'a [u8],
        signature: [u8; SIG_LEN],
    },
    Request {
        id: Id,
        peer: PeerId,
        session: u64,
        seq: u64,
        body: &'a [u8],
        tagged: &'a [u8],
        tag: [u8; TAG_LEN],
    },
    PushAck {
        id: Id,
        peer: PeerId,
        session: u64,
        tagged: &'a [u8],
        tag: [u8; TAG_LEN],
    },
    Cookie {
        id: Id,
        cookie: Cookie,
    },
    Registered {
        id: Id,
        session: u64,
        key: SessionKey,
        body: &'a [u8],
        tagged: &'a [u8],
        tag: [u8; TAG_LEN],
    },
    Response {
        id: Id,
        session: u64,
        body: &'a [u8],
        tagged: &'a [u8],
        tag: [u8; TAG_LEN],
    },
    Unknown {
        id: Id,
        session: u64,
    },
    Push {
        id: Id,
        session: u64,
        body: &'a [u8],
        tagged: &'a [u8],
        tag: [u8; TAG_LEN],
    },
}

/// Reads fixed fields front to back, each length checked first.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    kind: u8,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(WireError::BadLength {
            kind: self.kind,
            len: self.bytes.len(),
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn body(&mut self) -> Result<&'a [u8], WireError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len > MAX_BODY {
            return Err(WireError::BodyTooLarge(len));
        }
        self.take(len)
    }
    /// The last `n` bytes must be exactly what is left.
    fn trailer<const N: usize>(&mut self) -> Result<(&'a [u8], [u8; N]), WireError> {
        if self.bytes.len() - self.at != N {
            return Err(WireError::BadLength {
                kind: self.kind,
                len: self.bytes.len(),
            });
        }
        let covered = &self.bytes[..self.at];
        Ok((covered, self.array()?))
    }
    fn end(&self) -> Result<(), WireError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(WireError::BadLength {
                kind: self.kind,
                len: self.bytes.len(),
            })
        }
    }
}

/// Decodes a control datagram's framing (not its body, not its authentication).
pub fn decode(bytes: &[u8]) -> Result<Datagram<'_>, WireError> {
    if !is_control(bytes) {
        return Err(WireError::NotControl);
    }
    let kind = bytes[5];
    let mut r = Reader { bytes, at: 6, kind };
    let id: Id = r.array()?;
    let datagram = match kind {
        KIND_HELLO => {
            if bytes.len() != HELLO_LEN {
                return Err(WireError::BadLength {
                    kind,
                    len: bytes.len(),
                });
            }
            Datagram::Hello { id }
        }
        KIND_REGISTER => {
            let cookie = r.array()?;
            let peer = PeerId(r.array()?);
            let [flags] = r.array()?;
            let body = r.body()?;
            let (signed, signature) = r.trailer::<SIG_LEN>()?;
            Datagram::Register {
                id,
                cookie,
                peer,
                flags,
                body,
                signed,
                signature,
            }
        }
        KIND_REQUEST => {
            let peer = PeerId(r.array()?);
            let session = r.u64()?;
            let seq = r.u64()?;
            let body = r.body()?;
            let (tagged, tag) = r.trailer::<TAG_LEN>()?;
            Datagram::Request {
                id,
                peer,
                session,
                seq,
                body,
                tagged,
                tag,
            }
        }
        KIND_PUSH_ACK => {
            let peer = PeerId(r.array()?);
            let session = r.u64()?;
            let (tagged, tag) = r.trailer::<TAG_LEN>()?;
            Datagram::PushAck {
                id,
                peer,
                session,
                tagged,
                tag,
            }
        }
        KIND_COOKIE => {
            let cookie = r.array()?;
            r.end()?;
            Datagram::Cookie { id, cookie }
        }
        KIND_REGISTERED => {
            let session = r.u64()?;
            let key = r.array()?;
            let body = r.body()?;
            let (tagged, tag) = r.trailer::<TAG_LEN>()?;
            Datagram::Registered {
                id,
                session,
                key,
                body,
                tagged,
                tag,
            }
        }
        KIND_RESPONSE | KIND_PUSH => {
            let session = r.u64()?;
            let body = r.body()?;
            let (tagged, tag) = r.trailer::<TAG_LEN>()?;
            if kind == KIND_RESPONSE {
                Datagram::Response {
                    id,
                    session,
                    body,
                    tagged,
                    tag,
                }
            } else {
                Datagram::Push {
                    id,
                    session,
                    body,
                    tagged,
                    tag,
                }
            }
        }
        KIND_UNKNOWN => {
            let session = r.u64()?;
            r.end()?;
            Datagram::Unknown { id, session }
        }
        other => return Err(WireError::UnknownKind(other)),
    };
    Ok(datagram)
}

/// The truncated HMAC-SHA256 of `bytes` under `key`.
pub fn tag(key: &SessionKey, bytes: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    let full = mac.finalize().into_bytes();
    let mut out = [0; TAG_LEN];
    out.copy_from_slice(&full[..TAG_LEN]);
    out
}

/// Whether `tag` is the tag of `bytes` under `key` (compared in constant time).
pub fn verify_tag(key: &SessionKey, bytes: &[u8], tag: &[u8; TAG_LEN]) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(bytes);
    mac.verify_truncated_left(tag).is_ok()
}

/// Builds datagrams: the header, then fields, then (for tagged kinds) the tag.
pub struct Builder(Vec<u8>);

impl Builder {
    pub fn new(kind: u8, id: &Id) -> Self {
        let mut out = Vec::with_capacity(160);
        out.push(FIRST_BYTE);
        out.extend_from_slice(&PROJECT_MAGIC);
        out.push(kind);
        out.extend_from_slice(id);
        Builder(out)
    }
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    pub fn u64(self, value: u64) -> Self {
        self.bytes(&value.to_be_bytes())
    }
    /// A length-prefixed body. Callers encode control messages, far below [`MAX_BODY`]; a body
    /// over it is a bug on this side and is cut to an empty one (which the receiver refuses)
    /// rather than sent too large.
    pub fn body(self, body: &[u8]) -> Self {
        let body = if body.len() > MAX_BODY { &[][..] } else { body };
        let len = u16::try_from(body.len()).unwrap_or(0);
        self.bytes(&len.to_be_bytes()).bytes(body)
    }
    pub fn tagged(self, key: &SessionKey) -> Vec<u8> {
        let tag = tag(key, &self.0);
        self.bytes(&tag).0
    }
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
    /// The bytes so far (what a signature covers).
    pub fn so_far(&self) -> &[u8] {
        &self.0
    }
}

/// A Hello: the header and zeros up to [`HELLO_LEN`].
pub fn hello(id: &Id) -> Vec<u8> {
    Builder::new(KIND_HELLO, id)
        .bytes(&[0; HELLO_LEN - HEADER])
        .finish()
}

/// Decodes a control message body, with `crate::control`'s limits.
pub fn decode_body<T: bincode::Decode<()>>(body: &[u8]) -> Result<T, WireError> {
    control::decode(body).map_err(|e| WireError::Body(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_truncation_and_extension_of_each_kind_is_refused() {
        let key = [7; KEY_LEN];
        let body = control::encode(&control::Request::Lookup {
            peer: PeerId([1; 32]),
        });
        let samples = vec![
            hello(&[1; 8]),
            Builder::new(KIND_REGISTER, &[1; 8])
                .bytes(&[2; 16])
                .bytes(&[3; 32])
                .bytes(&[FLAG_PINNED])
                .body(&body)
                .bytes(&[4; 64])
                .finish(),
            Builder::new(KIND_REQUEST, &[1; 8])
                .bytes(&[3; 32])
                .u64(5)
                .u64(6)
                .body(&body)
                .tagged(&key),
            Builder::new(KIND_PUSH_ACK, &[1; 8])
                .bytes(&[3; 32])
                .u64(5)
                .tagged(&key),
            Builder::new(KIND_COOKIE, &[1; 8]).bytes(&[9; 16]).finish(),
            Builder::new(KIND_REGISTERED, &[1; 8])
                .u64(5)
                .bytes(&key)
                .body(&body)
                .tagged(&key),
            Builder::new(KIND_RESPONSE, &[1; 8])
                .u64(5)
                .body(&body)
                .tagged(&key),
            Builder::new(KIND_UNKNOWN, &[1; 8]).u64(5).finish(),
            Builder::new(KIND_PUSH, &[1; 8])
                .u64(5)
                .body(&body)
                .tagged(&key),
        ];
        for sample in samples {
            assert!(decode(&sample).is_ok(), "kind {:#x}", sample[5]);
            for len in 0..sample.len() {
                assert!(
                    decode(&sample[..len]).is_err(),
                    "kind {:#x} len {len}",
                    sample[5]
                );
            }
            let mut longer = sample.clone();
            longer.push(0);
            assert!(decode(&longer).is_err(), "kind {:#x} + 1", sample[5]);
        }
    }

    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(hello(&[0; 8]).len(), HELLO_LEN);
        let cookie = Builder::new(KIND_COOKIE, &[0; 8]).bytes(&[0; 16]).finish();
        assert_eq!(cookie.len(), 30);
        assert!(
            cookie.len() < HELLO_LEN,
            "a Cookie is smaller than its Hello"
        );
        let unknown = Builder::new(KIND_UNKNOWN, &[0; 8]).u64(1).finish();
        assert_eq!(unknown.len(), 22);
    }

    #[test]
    fn a_body_length_over_the_limit_is_refused_before_reading() {
        let mut bytes = Builder::new(KIND_RESPONSE, &[1; 8]).u64(5).finish();
        bytes.extend_from_slice(&u16::MAX.to_be_bytes());
        bytes.extend_from_slice(&[0; 40]);
        assert_eq!(decode(&bytes), Err(WireError::BodyTooLarge(65_535)));
        assert_eq!(
            decode(&[0x81, b'p', b'2', b'p', b'N', 0x1F, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::UnknownKind(0x1F))
        );
        assert_eq!(decode(b"garbage"), Err(WireError::NotControl));
    }

    #[test]
    fn path_checks_are_not_control_datagrams() {
        let mut check = vec![FIRST_BYTE];
        check.extend_from_slice(&PROJECT_MAGIC);
        check.push(1);
        check.extend_from_slice(&[0; 93]);
        assert!(!is_control(&check));
    }
}
