//! Paths under a live connection: the sans-IO path agent and what it is made of.
//!
//! - [`answer`]: where, and how much, the answering side of a punch may check;
//! - [`auth`]: the per-pair key (from both identity keys) that authenticates every check;
//! - [`wire`]: the check and reply datagrams, byte by byte;
//! - [`birthday`]: the many-sockets, many-probes method for a symmetric NAT;
//! - [`events`]: roles, transmits, events, errors and counters of the agent;
//! - [`table`]: virtual peer addresses, each with a selected path and the routes it accepts;
//! - [`agent`]: the [`PathAgent`]: candidates, paced and triggered checks, selection,
//!   heartbeats and path switches, driven by one `poll_output()`;
//! - `incoming` (private): checks and replies as they arrive, and the checks they trigger;
//! - `pairs` (private): one peer's candidate pairs and their states;
//! - `routes` (private): the agent's side of the table (joining, releasing, routing addresses).
//!
//! A [`Path`] is a local socket and a remote transport address, and its [`PathKind`]:
//! [`PathKind::Direct`] (UDP to the peer's own address) or [`PathKind::Relayed`] (through a TURN
//! relay, ours or the peer's; see [`relay`]). The table, the agent and the socket layer treat
//! both alike; only selection prefers direct paths.

pub mod agent;
pub mod answer;
pub mod auth;
pub mod birthday;
pub mod crossing;
pub mod events;
mod incoming;
mod pairs;
pub mod relay;
mod routes;
pub mod table;
pub mod wire;

use std::net::{IpAddr, SocketAddr};

pub use agent::{AgentConfig, AgentEvent, CheckRole, Output, PathAgent, PeerCandidates, Transmit};
pub use table::{is_virtual, PathTable, PathTableFull};

/// Identifies one of the node's local UDP sockets. `0` is the main socket; [`LocalSocketId::RELAY`]
/// is the node's TURN allocation (datagrams through it leave the main socket wrapped for the
/// relay server, and arrive unwrapped with the peer's address as the relay saw it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalSocketId(pub u16);

impl LocalSocketId {
    /// The main socket.
    pub const MAIN: LocalSocketId = LocalSocketId(0);
    /// The node's relay allocation (never an extra socket's id: those count up from 1 and are
    /// at most [`birthday::BIRTHDAY_SOCKETS`]).
    pub const RELAY: LocalSocketId = LocalSocketId(u16::MAX);
}

/// How a path reaches the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// UDP straight to the peer's address (host, server-reflexive or peer-reflexive).
    Direct,
    /// Through a TURN relay: from our allocation ([`LocalSocketId::RELAY`]) to the peer, or from
    /// one of our sockets to the peer's relayed address.
    Relayed,
}

impl PathKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        }
    }
}

/// One way of reaching a peer: from a local socket to a remote address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub local: LocalSocketId,
    pub remote: SocketAddr,
    pub kind: PathKind,
}

impl std::fmt::Display for Path {
    /// `direct 192.0.2.2:5000`, `relayed 203.0.113.10:49152` (through the peer's relay),
    /// `relayed 192.0.2.2:5000 via our relay`, with ` on socket N` for an extra socket.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.remote)?;
        match self.local {
            LocalSocketId::MAIN => Ok(()),
            LocalSocketId::RELAY => f.write_str(" via our relay"),
            LocalSocketId(n) => write!(f, " on socket {n}"),
        }
    }
}

/// Converts an IPv4-mapped IPv6 address (as a dual-stack socket reports it) to IPv4.
pub fn normalize(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}
