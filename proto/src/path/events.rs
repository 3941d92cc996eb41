//! What goes in and out of the [`super::PathAgent`] besides datagrams: roles, transmits,
//! events, errors and counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::auth::PairKeyError;
use super::table::PathTableFull;
use super::wire::CheckDecodeError;
use super::{LocalSocketId, Path};
use crate::nat::NatReport;
use crate::PeerId;

/// What the rendezvous says about a peer, for [`super::PathAgent::start_checks`].
#[derive(Debug, Clone, Copy)]
pub struct PeerCandidates<'a> {
    /// Addresses to check: the peer's host addresses and its observed (server-reflexive) one.
    pub addrs: &'a [SocketAddr],
    /// The address the rendezvous observes the peer at (the birthday method's target).
    pub observed: Option<SocketAddr>,
    /// What the peer detected of its NAT.
    pub nat: NatReport,
    /// The peer's relayed address (its TURN allocation), if it has one: checked through the
    /// peer's relay from our main socket, and it marks paths to it as relayed.
    pub relayed: Option<SocketAddr>,
}

/// Which side of a coordinated punch this node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckRole {
    /// We asked the rendezvous for the peer: check at once.
    Dialler,
    /// The rendezvous told us the peer is dialling: check after `AgentConfig::answer_delay`.
    Answerer,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub local: LocalSocketId,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What the agent tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// `peer`'s selected path is now `path` (`previous` is `None` for the first one).
    PathSelected {
        peer: PeerId,
        path: Path,
        previous: Option<Path>,
        rtt: Option<Duration>,
    },
    /// A round of checks ended with no path to `peer`.
    ChecksFailed { peer: PeerId },
    /// `peer`'s selected path went silent and no other works: look the peer up again (which
    /// also has the rendezvous tell it to punch) and call `start_checks`.
    NeedCandidates { peer: PeerId },
    /// Open `count` extra local sockets for `peer`'s birthday attempt and report them with
    /// `PathAgent::sockets_opened`.
    OpenSockets { peer: PeerId, count: usize },
    /// These extra sockets are no longer needed: close them.
    CloseSockets { sockets: Vec<LocalSocketId> },
    /// Send `transmits` in this order, the first at `at` and each next one `gap` after the one
    /// before, and drop any that cannot leave within `max_late` of its time (a preempted
    /// driver must not send the rest late: each would meet its counterpart at the wrong
    /// moment): a crossing sweep, whose timing decides whether it works (`super::crossing`),
    /// so the driver keeps it as exact as it can.
    Burst {
        at: Instant,
        gap: Duration,
        max_late: Duration,
        transmits: Vec<Transmit>,
    },
}

/// One result of `PathAgent::poll_output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit(Transmit),
    Event(AgentEvent),
    /// Nothing more now: call `handle_timeout` at this instant (or on the next input).
    Timeout(Instant),
}

/// Why a datagram or command was not used (for logs; the agent carries on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("malformed check: {0}")]
    Malformed(#[from] CheckDecodeError),
    #[error("check addressed to another peer")]
    NotForUs,
    #[error("check from a stranger dropped: key derivations rate limited")]
    StrangerRateLimited,
    #[error("no key with that sender: {0}")]
    BadSender(#[from] PairKeyError),
    #[error("sweep message for no sweep we take part in")]
    UnknownSweep,
    #[error("check failed authentication")]
    BadTag,
    #[error("reply to no check in progress")]
    UnknownTransaction,
    #[error("reply came from {from}, not from {expected} where the check went")]
    ReplyFromElsewhere {
        from: SocketAddr,
        expected: SocketAddr,
    },
    #[error("too many peers with path state")]
    TooManyPeers,
    #[error(transparent)]
    TableFull(#[from] PathTableFull),
}

/// Counters for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AgentCounters {
    pub checks_sent: u64,
    pub replies_sent: u64,
    pub rejected: u64,
}
