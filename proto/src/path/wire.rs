//! Connectivity checks on the wire (docs/PROTOCOL.md section 2.1).
//!
//! ```text
//! offset size field
//! 0      1    0x81: bits 10 mark a project datagram, low 6 bits = format version 1
//! 1      4    "p2pN"
//! 5      1    kind: 1 = Check, 2 = Reply, 3 = SweepOffer, 4 = SweepGo
//! 6      1    flags: bit 0 = heartbeat (the sender's selected path); bit 1 = relayed (sent
//!             through the sender's own TURN allocation); other bits sent as 0
//! 7      12   transaction ID
//! 19     32   sender's peer ID
//! 51     32   receiver's peer ID
//! Reply: 83   family 4 or 6, then the IP (4 or 16 bytes) and port (2) the Check came from
//! SweepOffer: 83  2: wait in ms (big-endian), 2: port count n (1..=256), n x 2: ports
//! SweepGo: 83  2: the port the answering side sweeps from, 0 = its main socket (its
//!             transaction ID is the offer's)
//! last   16   HMAC-SHA256 tag (truncated) over every byte before it, under the pair key
//! ```
//! A Check is 99 bytes, a Reply 106 (IPv4) or 118 (IPv6): a Reply is never more than 1.2 times
//! the Check it answers, and only a Check carrying a valid tag is answered. A SweepOffer is
//! 103 + 2n bytes (at most 615) and is answered only by a 101-byte SweepGo, and only when its
//! tag is valid (`super::crossing`). Every length is checked before it is read; decoding never
//! panics and never allocates from a length field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::auth::{PairKey, TAG_LEN};
use crate::demux::PROJECT_MAGIC;
use crate::PeerId;

/// First byte of a version-1 project datagram.
pub const FIRST_BYTE: u8 = 0x81;
const KIND_CHECK: u8 = 1;
const KIND_REPLY: u8 = 2;
const KIND_SWEEP_OFFER: u8 = 3;
const KIND_SWEEP_GO: u8 = 4;
/// Most ports one SweepOffer carries.
pub const MAX_SWEEP_PORTS: usize = 256;
const FLAG_HEARTBEAT: u8 = 0x01;
const FLAG_RELAYED: u8 = 0x02;
const HEADER: usize = 83;
/// Length of a Check on the wire.
pub const CHECK_LEN: usize = HEADER + TAG_LEN;

/// A transaction ID: chosen by the checker, echoed by the reply.
pub type Transaction = [u8; 12];

/// What a datagram says, before its tag is verified. A SweepOffer holds its ports inline
/// (512 bytes): decoding stays free of allocation, and a decoded datagram lives on the stack
/// only while it is handled.
#[allow(clippy::large_enum_variant)]
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
    /// The ports of the sender's extra sockets for a crossing sweep (`super::crossing`), and
    /// how long after this offer left the sweep should start.
    SweepOffer {
        wait_ms: u16,
        ports: SweepPorts,
    },
    /// The answer to the SweepOffer with the same transaction ID: the answering side sweeps
    /// from local port `port` (kept by its NAT), or from its main socket if 0.
    SweepGo {
        port: u16,
    },
}

/// Up to [`MAX_SWEEP_PORTS`] ports, held inline so that a decoded datagram stays `Copy` and
/// decoding never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SweepPorts {
    len: usize,
    ports: [u16; MAX_SWEEP_PORTS],
}

impl SweepPorts {
    /// The first [`MAX_SWEEP_PORTS`] of `ports`.
    pub fn new(ports: &[u16]) -> Self {
        let len = ports.len().min(MAX_SWEEP_PORTS);
        let mut all = [0u16; MAX_SWEEP_PORTS];
        all[..len].copy_from_slice(&ports[..len]);
        SweepPorts { len, ports: all }
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.ports[..self.len]
    }
}

impl std::fmt::Debug for SweepPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
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
            CheckBody::SweepOffer { .. } => {
                out.push(KIND_SWEEP_OFFER);
                out.push(0);
            }
            CheckBody::SweepGo { .. } => {
                out.push(KIND_SWEEP_GO);
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
        if let CheckBody::SweepGo { port } = self.body {
            out.extend_from_slice(&port.to_be_bytes());
        }
        if let CheckBody::SweepOffer { wait_ms, ports } = &self.body {
            out.extend_from_slice(&wait_ms.to_be_bytes());
            out.extend_from_slice(&(ports.len as u16).to_be_bytes());
            for port in ports.as_slice() {
                out.extend_from_slice(&port.to_be_bytes());
            }
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
        if !matches!(
            kind,
            KIND_CHECK | KIND_REPLY | KIND_SWEEP_OFFER | KIND_SWEEP_GO
        ) {
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
            KIND_SWEEP_GO if rest.len() == 2 => CheckBody::SweepGo {
                port: u16::from_be_bytes([rest[0], rest[1]]),
            },
            KIND_SWEEP_GO => return Err(bad_length),
            KIND_SWEEP_OFFER => decode_offer(rest).ok_or(bad_length)?,
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

/// A SweepOffer's body, or `None` if its lengths disagree.
fn decode_offer(rest: &[u8]) -> Option<CheckBody> {
    let (head, ports) = (rest.get(..4)?, rest.get(4..)?);
    let wait_ms = u16::from_be_bytes([head[0], head[1]]);
    let count = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if count == 0 || count > MAX_SWEEP_PORTS || ports.len() != 2 * count {
        return None;
    }
    let mut all = [0u16; MAX_SWEEP_PORTS];
    for (slot, bytes) in all.iter_mut().zip(ports.chunks_exact(2)) {
        *slot = u16::from_be_bytes([bytes[0], bytes[1]]);
    }
    Some(CheckBody::SweepOffer {
        wait_ms,
        ports: SweepPorts {
            len: count,
            ports: all,
        },
    })
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
            CheckDatagram {
                transaction: [10; 12],
                sender: bob.id(),
                receiver: alice.id(),
                body: CheckBody::SweepOffer {
                    wait_ms: 20,
                    ports: SweepPorts::new(&[40000, 40001, 65535]),
                },
            },
            CheckDatagram {
                transaction: [10; 12],
                sender: alice.id(),
                receiver: bob.id(),
                body: CheckBody::SweepGo { port: 40999 },
            },
        ];
        let lengths = [99, 106, 118, 109, 101];
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
        bytes[5] = KIND_SWEEP_GO;
        assert!(matches!(
            CheckDatagram::decode(&bytes),
            Err(CheckDecodeError::BadLength { .. })
        ));
    }

    #[test]
    fn sweep_offers_with_lengths_that_disagree_are_errors() {
        let key = OwnSecret::from_seed(&[1; 32])
            .pair_key(&OwnSecret::from_seed(&[2; 32]).id())
            .unwrap();
        let offer = |ports: &[u16]| CheckDatagram {
            transaction: [1; 12],
            sender: PeerId([1; 32]),
            receiver: PeerId([2; 32]),
            body: CheckBody::SweepOffer {
                wait_ms: 5,
                ports: SweepPorts::new(ports),
            },
        };
        let full: Vec<u16> = (1..=MAX_SWEEP_PORTS as u16).collect();
        let bytes = offer(&full).encode(&key);
        assert_eq!(bytes.len(), 615);
        assert_eq!(CheckDatagram::decode(&bytes), Ok(offer(&full)));
        // More ports than given are cut to the limit on encoding.
        let more: Vec<u16> = (1..=400).collect();
        assert_eq!(offer(&more).encode(&key).len(), 615);
        // A count that disagrees with the length, zero ports, or too many: errors.
        for count in [0u16, 255, 257, 1000] {
            let mut bad = bytes.clone();
            bad[HEADER + 2..HEADER + 4].copy_from_slice(&count.to_be_bytes());
            assert!(
                matches!(
                    CheckDatagram::decode(&bad),
                    Err(CheckDecodeError::BadLength { .. })
                ),
                "count {count}"
            );
        }
        let mut odd = bytes.clone();
        odd.insert(HEADER + 4, 0);
        assert!(CheckDatagram::decode(&odd).is_err());
    }
}
