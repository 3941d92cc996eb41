//! Connectivity checks on the wire (docs/PROTOCOL.md section 2.1).
//!
//! ```text
//! offset size field
//! 0      1    0x81: bits 10 mark a project datagram, low 6 bits = format version 1
//! 1      4    "p2pN"
//! 5      1    kind: 1 = Check, 2 = Reply
//! 6      1    flags: bit 0 = heartbeat (the sender's selected path); bit 1 = relayed (sent
//!             through the sender's own TURN allocation); other bits sent as 0
//! 7      12   transaction ID
//! 19     32   sender's peer ID
//! 51     32   receiver's peer ID
//! Reply: 83   family 4 or 6, then the IP (4 or 16 bytes) and port (2) the Check came from
//! last   16   HMAC-SHA256 tag (truncated) over every byte before it, under the pair key
//! ```
//! A Check is 99 bytes, a Reply 106 (IPv4) or 118 (IPv6): a Reply is never more than 1.2 times
//! the Check it answers, and only a Check carrying a valid tag is answered. Every length is
//! checked before it is read; decoding never panics and never allocates from a length field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::auth::{PairKey, TAG_LEN};
use crate::demux::PROJECT_MAGIC;
use crate::PeerId;

/// First byte of a version-1 project datagram.
pub const FIRST_BYTE: u8 = 0x81;
const KIND_CHECK: u8 = 1;
const KIND_REPLY: u8 = 2;
const FLAG_HEARTBEAT: u8 = 0x01;
const FLAG_RELAYED: u8 = 0x02;
const HEADER: usize = 83;
/// Length of a Check on the wire.
pub const CHECK_LEN: usize = HEADER + TAG_LEN;

/// A transaction ID: chosen by the checker, echoed by the reply.
pub type Transaction = [u8; 12];

/// What a datagram says, before its tag is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckBody {
    /// `relayed`: the sender sent it through its own relay allocation, so the path it arrives
    /// on is a relayed one whatever its source address looks like.
    Check {
        heartbeat: bool,
        relayed: bool,
    },
    Reply {
        observed: SocketAddr,
    },
}

/// A decoded check datagram. [`CheckDatagram::decode`] checks the layout only; the tag must be
/// checked with [`CheckDatagram::verify`] (the key depends on `sender`) before anything is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckDatagram {
    pub transaction: Transaction,
    pub sender: PeerId,
    pub receiver: PeerId,
    pub body: CheckBody,
}

/// Why a project datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckDecodeError {
    #[error("not a project datagram of version 1")]
    NotProject,
    #[error("unknown check kind {0}")]
    UnknownKind(u8),
    #[error("check datagram of kind {kind} has bad length {len}")]
    BadLength { kind: u8, len: usize },
    #[error("reply carries unknown address family {0}")]
    BadFamily(u8),
}

impl CheckDatagram {
    /// The datagram with its tag under `key`.
    pub fn encode(&self, key: &PairKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + 19 + TAG_LEN);
        out.push(FIRST_BYTE);
        out.extend_from_slice(&PROJECT_MAGIC);
        match self.body {
            CheckBody::Check { heartbeat, relayed } => {
                out.push(KIND_CHECK);
                let mut flags = 0;
                if heartbeat {
                    flags |= FLAG_HEARTBEAT;
                }
                if relayed {
                    flags |= FLAG_RELAYED;
                }
                out.push(flags);
            }
            CheckBody::Reply { .. } => {
                out.push(KIND_REPLY);
                out.push(0);
            }
        }
        out.extend_from_slice(&self.transaction);
        out.extend_from_slice(&self.sender.0);
        out.extend_from_slice(&self.receiver.0);
        if let CheckBody::Reply { observed } = self.body {
            match observed.ip() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&observed.port().to_be_bytes());
        }
        let tag = key.tag(&out);
        out.extend_from_slice(&tag);
        out
    }

    /// Decodes the layout, every length checked first. Never panics.
    pub fn decode(datagram: &[u8]) -> Result<Self, CheckDecodeError> {
        if datagram.len() < 6 || datagram[0] != FIRST_BYTE || datagram[1..5] != PROJECT_MAGIC {
            return Err(CheckDecodeError::NotProject);
        }
        let kind = datagram[5];
        let bad_length = CheckDecodeError::BadLength {
            kind,
            len: datagram.len(),
        };
        if !matches!(kind, KIND_CHECK | KIND_REPLY) {
            return Err(CheckDecodeError::UnknownKind(kind));
        }
        if datagram.len() < CHECK_LEN {
            return Err(bad_length);
        }
        let flags = datagram[6];
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&datagram[7..19]);
        let mut sender = [0u8; 32];
        sender.copy_from_slice(&datagram[19..51]);
        let mut receiver = [0u8; 32];
        receiver.copy_from_slice(&datagram[51..83]);
        let rest = &datagram[HEADER..datagram.len() - TAG_LEN];
        let body = match kind {
            KIND_CHECK if rest.is_empty() => CheckBody::Check {
                heartbeat: flags & FLAG_HEARTBEAT != 0,
                relayed: flags & FLAG_RELAYED != 0,
            },
            KIND_CHECK => return Err(bad_length),
            _ => {
                let (&family, address) = rest.split_first().ok_or(bad_length.clone())?;
                let ip = match (family, address.len()) {
                    (4, 6) => IpAddr::V4(Ipv4Addr::new(
                        address[0], address[1], address[2], address[3],
                    )),
                    (6, 18) => {
                        let mut octets = [0u8; 16];
                        octets.copy_from_slice(&address[..16]);
                        IpAddr::V6(Ipv6Addr::from(octets))
                    }
                    (4 | 6, _) => return Err(bad_length),
                    (other, _) => return Err(CheckDecodeError::BadFamily(other)),
                };
                let port =
                    u16::from_be_bytes([address[address.len() - 2], address[address.len() - 1]]);
                CheckBody::Reply {
                    observed: SocketAddr::new(ip, port),
                }
            }
        };
        Ok(CheckDatagram {
            transaction,
            sender: PeerId(sender),
            receiver: PeerId(receiver),
            body,
        })
    }

    /// Whether `datagram` (the bytes this was decoded from) carries a valid tag under `key`.
    pub fn verify(datagram: &[u8], key: &PairKey) -> bool {
        datagram.len() >= CHECK_LEN && {
            let (message, tag) = datagram.split_at(datagram.len() - TAG_LEN);
            key.verify(message, tag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demux::{classify, DatagramKind};
    use crate::path::auth::OwnSecret;

    #[test]
    fn round_trip_verify_and_every_truncation_fails() {
        let alice = OwnSecret::from_seed(&[1; 32]);
        let bob = OwnSecret::from_seed(&[2; 32]);
        let key = alice.pair_key(&bob.id()).unwrap();
        let datagrams = [
            CheckDatagram {
                transaction: [7; 12],
                sender: alice.id(),
                receiver: bob.id(),
                body: CheckBody::Check {
                    heartbeat: true,
                    relayed: true,
                },
            },
            CheckDatagram {
                transaction: [8; 12],
                sender: bob.id(),
                receiver: alice.id(),
                body: CheckBody::Reply {
                    observed: "192.0.2.1:4000".parse().unwrap(),
                },
            },
            CheckDatagram {
                transaction: [9; 12],
                sender: bob.id(),
                receiver: alice.id(),
                body: CheckBody::Reply {
                    observed: "[2001:db8::1]:9".parse().unwrap(),
                },
            },
        ];
        let lengths = [99, 106, 118];
        for (datagram, len) in datagrams.iter().zip(lengths) {
            let bytes = datagram.encode(&key);
            assert_eq!(bytes.len(), len);
            assert_eq!(classify(&bytes), DatagramKind::Project);
            assert_eq!(CheckDatagram::decode(&bytes), Ok(*datagram));
            assert!(CheckDatagram::verify(&bytes, &key));
            for cut in 0..bytes.len() {
                let short = &bytes[..cut];
                assert!(
                    CheckDatagram::decode(short).is_err() || !CheckDatagram::verify(short, &key)
                );
            }
            // Any flipped bit breaks the tag.
            for i in 0..bytes.len() {
                let mut tampered = bytes.clone();
                tampered[i] ^= 0x10;
                assert!(!CheckDatagram::verify(&tampered, &key), "byte {i}");
            }
        }
        let other = OwnSecret::from_seed(&[3; 32]).pair_key(&bob.id()).unwrap();
        assert!(!CheckDatagram::verify(&datagrams[0].encode(&other), &key));
    }

    #[test]
    fn malformed_layouts_are_errors() {
        assert_eq!(
            CheckDatagram::decode(&[]),
            Err(CheckDecodeError::NotProject)
        );
        let mut v0 = vec![0x80];
        v0.extend_from_slice(&PROJECT_MAGIC);
        v0.extend_from_slice(&[1; 90]);
        assert_eq!(
            CheckDatagram::decode(&v0),
            Err(CheckDecodeError::NotProject)
        );
        let mut bytes = vec![FIRST_BYTE];
        bytes.extend_from_slice(&PROJECT_MAGIC);
        bytes.push(9);
        bytes.extend_from_slice(&[0; 93]);
        assert_eq!(
            CheckDatagram::decode(&bytes),
            Err(CheckDecodeError::UnknownKind(9))
        );
        bytes[5] = KIND_REPLY;
        bytes.extend_from_slice(&[0; 7]);
        bytes[HEADER] = 5;
        assert_eq!(
            CheckDatagram::decode(&bytes),
            Err(CheckDecodeError::BadFamily(5))
        );
        bytes[5] = KIND_CHECK;
        assert!(matches!(
            CheckDatagram::decode(&bytes),
            Err(CheckDecodeError::BadLength { .. })
        ));
    }
}
