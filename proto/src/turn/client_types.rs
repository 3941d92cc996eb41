//! What goes in and out of the [`super::TurnClient`] besides datagrams: its configuration,
//! outputs, events, errors and counters.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::turn::channel_data::ChannelDataError;

/// Timers and limits of a [`super::TurnClient`]. The defaults suit a node that depends on the
/// relay for its first packets to a peer: quick retransmissions, refreshes well before expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnClientConfig {
    /// First retransmission timeout of a request (RFC 8489 suggests 500 ms on the open
    /// internet; a relay the node waits on is worth 100 ms). Doubles per attempt.
    pub rto: Duration,
    /// Ceiling of the doubling RTO.
    pub max_rto: Duration,
    /// Transmissions of one request before it times out (the last one waits one more RTO).
    /// Default 7: with 100 ms doubling and a 3.2 s ceiling, about 9.5 s in all.
    pub max_attempts: u32,
    /// LIFETIME asked for in Allocate and Refresh (`None`: the server's default, 600 s).
    pub requested_lifetime: Option<u32>,
    /// Refresh the allocation this long before it expires; an allocation shorter than twice
    /// this is refreshed at half its lifetime.
    pub refresh_margin: Duration,
    /// After a Refresh that failed (other than 437), try again after this long while the
    /// allocation has not expired.
    pub refresh_retry: Duration,
    /// CreatePermission again this often while a permission is wanted (RFC lifetime 300 s).
    pub permission_refresh: Duration,
    /// ChannelBind again this often while a channel is wanted (RFC lifetime 600 s).
    pub channel_refresh: Duration,
    /// Most peer IPs with a wanted permission; [`super::TurnClient::permit`] refuses more.
    pub max_permissions: usize,
    /// Most peer IPs in one CreatePermission request (keeps requests well under 1,280 bytes).
    pub permissions_per_request: usize,
    /// Most channels (0x4000..); peers beyond that are reached by Send indications.
    pub max_channels: usize,
    /// First wait after a failed allocation; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Ceiling of the allocation retry backoff.
    pub backoff_max: Duration,
    /// Least wait after 486 Allocation Quota Reached (the server holds allocations of ours
    /// that have to expire first).
    pub quota_backoff: Duration,
    /// Send a Binding indication (20 bytes, unanswered) after this long without sending the
    /// server anything, so the NAT keeps the mapping towards it open and peers' data keeps
    /// arriving (NATs forget idle UDP mappings after 30 s to a few minutes; 15 s is below the
    /// shortest common timeout).
    pub keepalive: Duration,
}

impl Default for TurnClientConfig {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(100),
            max_rto: Duration::from_millis(3_200),
            max_attempts: 7,
            requested_lifetime: None,
            refresh_margin: Duration::from_secs(60),
            refresh_retry: Duration::from_secs(5),
            permission_refresh: Duration::from_secs(240),
            channel_refresh: Duration::from_secs(300),
            max_permissions: 256,
            permissions_per_request: 32,
            max_channels: 256,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            quota_backoff: Duration::from_secs(30),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// One result of [`super::TurnClient::poll_output`]. Drain transmits, then events, then wait
/// for the timeout (or the next input), then poll again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOutput {
    /// A datagram to send to the TURN server (always [`super::TurnClient::server`]).
    Transmit(Vec<u8>),
    Event(ClientEvent),
    /// Nothing more now: call `handle_timeout` at this instant (or on the next input).
    Timeout(Instant),
    /// The machine was closed and has nothing more to send: drop it.
    Closed,
}

/// Why an allocation attempt (or an allocation) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationFailure {
    /// No response after all retransmissions.
    Timeout,
    /// The server answered with this error (after the 401/438 exchange, if any).
    Error { code: u16, reason: String },
    /// A success response without the addresses it must carry, or a challenge without REALM
    /// and NONCE.
    Malformed(&'static str),
    /// The allocation expired without a successful Refresh.
    Expired,
}

impl std::fmt::Display for AllocationFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllocationFailure::Timeout => f.write_str("no response from the TURN server"),
            AllocationFailure::Error { code, reason } => write!(f, "error {code} {reason}"),
            AllocationFailure::Malformed(what) => write!(f, "malformed response: {what}"),
            AllocationFailure::Expired => f.write_str("allocation expired"),
        }
    }
}

/// What the client tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// An allocation exists (first time, or again after one was lost: tell peers the new
    /// relayed address). Permissions and channels wanted before are being reinstalled.
    Allocated {
        relayed: SocketAddr,
        mapped: Option<SocketAddr>,
        lifetime: Duration,
    },
    /// The allocation was refreshed for `lifetime` more.
    Refreshed { lifetime: Duration },
    /// Allocating failed, or the allocation was lost; the client tries again in `retry_in`.
    AllocationFailed {
        reason: AllocationFailure,
        retry_in: Duration,
    },
    /// CreatePermission for `ip` failed (`code` is `None` on timeout). The permission stays
    /// failed (sends to `ip` are refused) until `permit` is called for it again.
    PermissionFailed { ip: IpAddr, code: Option<u16> },
    /// `channel` is bound to `peer`: sends to `peer` now use ChannelData.
    ChannelBound { peer: SocketAddr, channel: u16 },
    /// ChannelBind for `peer` failed; sends to it keep using Send indications.
    ChannelFailed { peer: SocketAddr, code: Option<u16> },
}

/// Why a datagram from the server was not used (for logs; the client carries on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnClientError {
    #[error("client is closed")]
    Closed,
    #[error("empty datagram")]
    Empty,
    #[error("datagram is neither STUN nor ChannelData (first byte {0:#04x})")]
    NotTurn(u8),
    #[error("malformed ChannelData: {0}")]
    ChannelData(#[from] ChannelDataError),
    #[error("ChannelData on unknown channel {0:#06x}")]
    UnknownChannel(u16),
    #[error("malformed STUN message: {0}")]
    Malformed(&'static str),
    #[error("STUN message failed to decode: {0}")]
    Decode(String),
    #[error("STUN message of {0} bytes is too large for a response")]
    TooLarge(usize),
    #[error("unexpected STUN message (type {0:#06x})")]
    Unexpected(u16),
    #[error("response to no transaction in progress")]
    UnknownTransaction,
    #[error("response MESSAGE-INTEGRITY does not match")]
    IntegrityFailed,
    #[error("success response to an authenticated request lacks MESSAGE-INTEGRITY")]
    MissingIntegrity,
}

/// Why [`super::TurnClient::send_to`] encoded nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnSendError {
    #[error("client is closed")]
    Closed,
    #[error("no allocation yet")]
    NotAllocated,
    #[error("no permission requested for {0}")]
    NoPermission(IpAddr),
    #[error("permission for {0} failed")]
    PermissionFailed(IpAddr),
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    PayloadTooLarge { len: usize, max: usize },
}

/// Why [`super::TurnClient::permit`] or [`super::TurnClient::bind_channel`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnPermitError {
    #[error("client is closed")]
    Closed,
    #[error("already {max} permissions wanted")]
    TooManyPermissions { max: usize },
    #[error("already {max} channels")]
    TooManyChannels { max: usize },
    #[error("no channel number free")]
    NoChannelNumber,
}

/// Counters for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClientCounters {
    /// Requests sent, first transmissions only.
    pub requests: u64,
    /// Retransmissions of requests.
    pub retransmits: u64,
    /// Datagrams from the server rejected (any [`TurnClientError`]).
    pub rejected: u64,
    /// Allocations obtained.
    pub allocations: u64,
    /// Payloads sent in ChannelData / in Send indications.
    pub sent_channel: u64,
    pub sent_indication: u64,
    /// Payloads received in ChannelData / in Data indications.
    pub received_channel: u64,
    pub received_indication: u64,
    /// Keepalive Binding indications sent.
    pub keepalives: u64,
}
