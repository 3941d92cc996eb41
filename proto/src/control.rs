//! Control messages between a node and the rendezvous (docs/PROTOCOL.md section 4).
//!
//! Each request travels on its own QUIC bidirectional stream; the stream's end delimits the
//! message, and the response comes back on the same stream. A message is
//! `version: u16 (big-endian)` followed by the bincode 2 encoding (standard config, big-endian,
//! variable-length integers) of [`Request`] or [`Response`]. Decoding refuses anything larger
//! than [`MAX_CONTROL_MESSAGE`] before reading it, and bincode's own limit stops any length field
//! from allocating more than that.

use std::net::SocketAddr;

use bincode::config::{BigEndian, Configuration, Limit, Varint};

use crate::nat::NatReport;
use crate::PeerId;

/// Version of the control protocol; a different version is refused.
pub const CONTROL_VERSION: u16 = 4;
/// Largest encoded control message, version included.
pub const MAX_CONTROL_MESSAGE: usize = 16 * 1024;
/// Most local addresses a node may report.
pub const MAX_LOCAL_ADDRS: usize = 16;
/// Most alternate STUN addresses the rendezvous advertises.
pub const MAX_STUN_ALTERNATES: usize = 4;

type ControlConfig = Configuration<BigEndian, Varint, Limit<MAX_CONTROL_MESSAGE>>;

fn config() -> ControlConfig {
    bincode::config::standard()
        .with_big_endian()
        .with_limit::<MAX_CONTROL_MESSAGE>()
}

/// A node's request to the rendezvous. The requester's identity is not in the message: the
/// rendezvous takes it from the QUIC (TLS) handshake.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Request {
    /// Register (or refresh) the caller: the rendezvous records the address it observes the
    /// connection coming from, the addresses the node reports for itself and what it detected
    /// of its NAT ([`NatReport::UNKNOWN`] until it has).
    ///
    /// `relayed`: the node's relayed address on the TURN server it was offered
    /// ([`Response::Registered`]'s `turn`), once it has an allocation.
    Register {
        local_addrs: Vec<SocketAddr>,
        nat: NatReport,
        relayed: Option<SocketAddr>,
    },
    /// Look up a registered peer.
    Lookup { peer: PeerId },
    /// Look up a registered peer and ask the rendezvous to tell it, with a [`Push::PunchRequest`],
    /// to probe the caller's addresses now: coordinated hole punching. Answered like `Lookup`.
    Connect { peer: PeerId },
    /// Remove the caller's registration now (a node quitting): answered
    /// [`Response::Unregistered`]. A registration over a connection also goes when the
    /// connection closes; a datagram registration otherwise stays until its TTL. (Variant 3,
    /// added without a version change: a rendezvous that predates it refuses it as a bad
    /// request, and the node's registration then expires as before.)
    Unregister,
}

/// A message the rendezvous pushes to a registered node, each on a unidirectional stream it
/// opens on the node's registration connection (same framing: version, then bincode).
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Push {
    /// `peer` (whose addresses are in `record`) is dialling you: send probes to its addresses
    /// now, so that your NAT expects its packets.
    PunchRequest { peer: PeerId, record: PeerRecord },
}

/// What the rendezvous knows of a registered peer.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct PeerRecord {
    /// The address the rendezvous observes the peer's connection coming from (server-reflexive).
    pub observed: SocketAddr,
    /// The addresses the peer reported for itself (host candidates), at most [`MAX_LOCAL_ADDRS`].
    pub local_addrs: Vec<SocketAddr>,
    /// The peer's NAT, as the peer reported it.
    pub nat: NatReport,
    /// The peer's relayed address (its TURN allocation), as the peer reported it.
    pub relayed: Option<SocketAddr>,
    /// How the peer reached the rendezvous. Over [`RegisteredOver::Tls`] `observed` is a TCP
    /// source address, no UDP candidate: such a peer is reached through its relayed address.
    pub over: RegisteredOver,
}

/// The transport a node registered over (control protocol version 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, bincode::Encode, bincode::Decode)]
pub enum RegisteredOver {
    /// QUIC on the rendezvous's UDP port: `observed` is the node's UDP mapping.
    #[default]
    Quic,
    /// TLS over TCP on the rendezvous's TLS port (UDP blocked): `observed` is a TCP address.
    Tls,
}

/// Where the TURN server a node is offered listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum TurnServerAddr {
    /// On the rendezvous's own host (the IP the node reaches the rendezvous at), this UDP port:
    /// the built-in server.
    SameHost { port: u16 },
    /// Elsewhere (an external TURN server such as coturn).
    Addr(SocketAddr),
}

/// A TURN server and REST-API credentials for it (`crate::turn::credentials`), handed to a
/// node with every registration. The password is derived from the username and a secret the
/// rendezvous shares with the TURN server; it works until `expires_unix`, and each refresh of
/// the registration brings a fresh one.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct TurnOffer {
    pub server: TurnServerAddr,
    pub username: String,
    pub password: String,
    pub expires_unix: u64,
}

/// Why the rendezvous refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum RefusalCode {
    RegistryFull,
    RateLimited,
    TooManyAddresses,
    BadRequest,
    UnsupportedVersion,
}

/// The rendezvous's answer to one [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Response {
    /// `stun_alternates`: other addresses (at most [`MAX_STUN_ALTERNATES`]) where the rendezvous
    /// answers STUN, for NAT mapping-behaviour detection (`crate::nat`).
    ///
    /// `inbound_probe`: an address the rendezvous sent one unsolicited datagram from to
    /// `observed` just before this answer, and where it answers STUN (`crate::nat`).
    ///
    /// `turn`: the relay this node may allocate on, with credentials (`None`: no relay).
    Registered {
        observed: SocketAddr,
        ttl_secs: u32,
        stun_alternates: Vec<SocketAddr>,
        inbound_probe: Option<SocketAddr>,
        turn: Option<TurnOffer>,
    },
    Found {
        peer: PeerId,
        record: PeerRecord,
    },
    NotFound {
        peer: PeerId,
    },
    Refused {
        code: RefusalCode,
        message: String,
    },
    /// The answer to [`Request::Unregister`]: the caller is no longer registered.
    Unregistered,
}

/// Why a control message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ControlDecodeError {
    #[error("control message of {0} bytes exceeds the {MAX_CONTROL_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("control message too short for its version field")]
    Truncated,
    #[error("unsupported control protocol version {0} (this build speaks {CONTROL_VERSION})")]
    UnsupportedVersion(u16),
    #[error("malformed control message: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the control message")]
    TrailingBytes(usize),
}

/// Encodes a control message with its version prefix.
pub fn encode<T: bincode::Encode>(message: &T) -> Vec<u8> {
    let mut out = CONTROL_VERSION.to_be_bytes().to_vec();
    bincode::encode_into_std_write(message, &mut out, config())
        .expect("writing to a Vec cannot fail and control messages are within the limit");
    out
}

/// Decodes a control message, checking size and version before the body.
pub fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<T, ControlDecodeError> {
    if bytes.len() > MAX_CONTROL_MESSAGE {
        return Err(ControlDecodeError::TooLarge(bytes.len()));
    }
    let (version, body) = bytes
        .split_first_chunk::<2>()
        .ok_or(ControlDecodeError::Truncated)?;
    let version = u16::from_be_bytes(*version);
    if version != CONTROL_VERSION {
        return Err(ControlDecodeError::UnsupportedVersion(version));
    }
    let (message, used) = bincode::decode_from_slice(body, config())?;
    if used != body.len() {
        return Err(ControlDecodeError::TrailingBytes(body.len() - used));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::NatBehaviour;

    #[test]
    fn round_trips() {
        let request = Request::Register {
            local_addrs: vec![
                "10.0.0.2:5000".parse().unwrap(),
                "[fd00::1]:5".parse().unwrap(),
            ],
            nat: NatReport {
                mapping: NatBehaviour::EndpointDependent,
                inbound: crate::nat::InboundBehaviour::Unknown,
            },
            relayed: Some("203.0.113.7:50000".parse().unwrap()),
        };
        assert_eq!(decode::<Request>(&encode(&request)).unwrap(), request);
        let push = Push::PunchRequest {
            peer: PeerId([4; 32]),
            record: PeerRecord {
                observed: "192.0.2.4:4000".parse().unwrap(),
                local_addrs: vec!["10.0.0.4:4000".parse().unwrap()],
                nat: NatReport {
                    mapping: NatBehaviour::EndpointIndependent,
                    inbound: crate::nat::InboundBehaviour::MovesPort,
                },
                relayed: None,
                over: RegisteredOver::Tls,
            },
        };
        assert_eq!(decode::<Push>(&encode(&push)).unwrap(), push);
        let connect = Request::Connect {
            peer: PeerId([5; 32]),
        };
        assert_eq!(decode::<Request>(&encode(&connect)).unwrap(), connect);
        assert_eq!(encode(&Request::Unregister), [0, 4, 3]);
        assert_eq!(
            decode::<Response>(&encode(&Response::Unregistered)).unwrap(),
            Response::Unregistered
        );
        let response = Response::Found {
            peer: PeerId([3; 32]),
            record: PeerRecord {
                observed: "203.0.113.4:1000".parse().unwrap(),
                local_addrs: vec![],
                nat: NatReport::UNKNOWN,
                relayed: Some("203.0.113.9:49152".parse().unwrap()),
                over: RegisteredOver::Quic,
            },
        };
        assert_eq!(decode::<Response>(&encode(&response)).unwrap(), response);
    }

    #[test]
    fn rejects_bad_version_truncation_trailing_and_huge_lengths() {
        let mut bytes = encode(&Request::Lookup {
            peer: PeerId([1; 32]),
        });
        bytes[1] = 9;
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(ControlDecodeError::UnsupportedVersion(9))
        ));
        assert!(matches!(
            decode::<Request>(&[0]),
            Err(ControlDecodeError::Truncated)
        ));
        let mut bytes = encode(&Request::Lookup {
            peer: PeerId([1; 32]),
        });
        bytes.push(0);
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(ControlDecodeError::TrailingBytes(1))
        ));
        // Register with a claimed vector length of 2^60 entries: must fail without allocating.
        let mut bytes = CONTROL_VERSION.to_be_bytes().to_vec();
        bytes.push(0); // variant 0: Register
        bytes.push(253); // varint u64 marker
        bytes.extend_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(matches!(
            decode::<Request>(&bytes),
            Err(ControlDecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Request>(&vec![0; MAX_CONTROL_MESSAGE + 1]),
            Err(ControlDecodeError::TooLarge(_))
        ));
    }

    #[test]
    fn every_truncation_of_a_valid_message_is_an_error() {
        let bytes = encode(&Response::Registered {
            observed: "198.51.100.9:7".parse().unwrap(),
            ttl_secs: 60,
            stun_alternates: vec!["203.0.113.11:3478".parse().unwrap()],
            inbound_probe: Some("203.0.113.11:40000".parse().unwrap()),
            turn: Some(TurnOffer {
                server: TurnServerAddr::SameHost { port: 3479 },
                username: "1700000000:peer".into(),
                password: "cGFzc3dvcmQ=".into(),
                expires_unix: 1_700_000_000,
            }),
        });
        for len in 0..bytes.len() {
            assert!(decode::<Response>(&bytes[..len]).is_err(), "length {len}");
        }
    }
}
