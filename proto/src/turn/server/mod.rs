//! The TURN server (RFC 8656; clients over UDP, TCP or TLS, relayed side UDP), sans-IO: the
//! rendezvous's built-in relay.
//!
//! # Driving it
//! The driver owns a listener socket and one relay socket per allocation, and feeds the machine:
//! - [`TurnServer::handle_client_datagram`] for every datagram on the UDP listener (STUN
//!   requests, Send indications, ChannelData), [`TurnServer::handle_client_message`] for every
//!   frame of a TCP or TLS client (cut by [`crate::turn::stream::StreamDecoder`]), and
//!   [`TurnServer::client_closed`] when such a connection ends (its allocation goes with it);
//! - [`TurnServer::handle_relay_datagram`] for every datagram a peer sends to a relayed address;
//! - or, on the hot path, [`TurnServer::handle_client_message_direct`] and
//!   [`TurnServer::handle_relay_datagram_into`]: the same, except that relayed data is handed
//!   back at once (a slice of the ChannelData, or the client's message written into the
//!   caller's buffer) instead of queued as an allocated [`Output::Transmit`];
//! - [`TurnServer::relay_bound`] to answer [`Output::BindRelay`];
//! - [`TurnServer::handle_timeout`] once [`TurnServer::poll_timeout`] has passed.
//!
//! After each input it drains [`TurnServer::poll_output`]: [`Output::Transmit`] (send `contents`
//! to `to` over the client's transport, or from the named relayed address), [`Output::BindRelay`] (bind a UDP
//! socket of `family`, an even port if asked, and report its address with `relay_bound`; the
//! Allocate's answer waits for it), [`Output::ReleaseRelay`] (close that relay socket).
//! Time comes in as `now` ([`Instant`], for lifetimes and rates) and `unix_now` (seconds, for
//! REST-API username expiry and nonces); randomness as the `seed` given to [`TurnServer::new`].
//!
//! # Who may relay to whom
//! Only clients holding REST-API credentials from the shared secret allocate. A permission (and
//! so any relaying) is installed only toward an IP the [`PeerPolicy`] accepts: for the
//! rendezvous, the observed IP of a registered peer or the relay's own IP. Unspecified,
//! multicast and broadcast IPs are always refused; the policy decides everything else (loopback
//! included, which a sensible policy refuses unless it knows a peer is there). Refusals are 403.
//!
//! # Limits (memory is bounded whatever the input)
//! Allocations total and per user ([`TurnServerConfig`]; over them 508 and 486), permissions and
//! channels per allocation (over them 508), allocations waiting for a relay socket
//! ([`TurnServerConfig::max_pending_binds`]), queued outputs ([`MAX_QUEUED_OUTPUTS`]), source
//! IPs tracked by the limiter of unauthenticated answers. Relayed bytes per allocation are
//! limited in both directions by one token bucket; excess datagrams are dropped and counted.
//!
//! # Amplification
//! An unauthenticated request gets at most one error response (401 with REALM and NONCE, 438,
//! 400 or 420), and only while its source IP has tokens left in
//! [`TurnServerConfig::unauthenticated_burst`]. The error is sent only if it is at most
//! [`MAX_AMPLIFICATION`] times the request's size. A 401 is 92 bytes with the default realm; the
//! smallest request it answers is an Allocate with REQUESTED-TRANSPORT, 28 bytes: factor 3.3. A Binding request
//! (20 bytes) gets a 32-byte (IPv4) or 44-byte (IPv6) answer: factor 2.2.
//!
//! # Departures from RFC 8656, on purpose
//! - A Refresh, CreatePermission or ChannelBind may use another username than the Allocate's as
//!   long as the user part (after the colon) is the same: REST-API credentials are reissued with
//!   a new expiry, and the allocation should survive that. Another user gets 441.
//! - EVEN-PORT with R=1 and RESERVATION-TOKEN get 508 (no port reservations); EVEN-PORT with R=0
//!   is honoured by the driver.
//! - An expired channel number may be rebound to another peer at once (RFC: after 5 minutes).
//! - Channel numbers 0x4000-0x7FFF are accepted (RFC 5766's range; RFC 8656 says 0x4FFF), as
//!   coturn 4.6's `turnutils_uclient` binds numbers above 0x4FFF (`wire::LEGACY_CHANNEL_MAX`).

mod allocation;
mod auth;
mod data;
mod handlers;
mod wire;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::rate_limit::TokenBuckets;
use crate::turn::credentials::SharedSecret;

pub use allocation::AllocationId;
use allocation::{Allocation, Phase};
pub use auth::AuthError;
pub use data::ToPeer;
pub use handlers::RequestError;

/// Outputs queued beyond this are dropped (and counted): the driver drains after each input,
/// and one input queues at most a few.
pub const MAX_QUEUED_OUTPUTS: usize = 1024;
/// An unauthenticated error answer is sent only if at most this many times the request's size.
pub const MAX_AMPLIFICATION: usize = 4;

/// The server's settings, with their defaults.
#[derive(Debug, Clone)]
pub struct TurnServerConfig {
    /// REALM (default `p2pnat`). Part of the long-term key: clients must use the same.
    pub realm: String,
    /// Allocations at once, binding ones included (default 1,024). Over it: 508.
    pub max_allocations: usize,
    /// Allocations at once per user, the username's part after the colon (default 8). Over
    /// it: 486.
    pub max_allocations_per_user: usize,
    /// Relayed bytes a second per allocation, both directions together; 0 for no limit
    /// (default 4,000,000: 32 Mbit/s). Bursts of one second's worth (at least 64 KiB).
    pub max_bytes_per_sec: u64,
    /// Lifetime granted when the client asks for less or nothing (default 600 s; RFC 8656).
    pub default_lifetime: Duration,
    /// Longest lifetime granted (default 3,600 s).
    pub max_lifetime: Duration,
    /// Permission lifetime (300 s, RFC 8656).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (600 s, RFC 8656).
    pub channel_lifetime: Duration,
    /// How long a nonce stays valid (default 3,600 s, as coturn's stale-nonce).
    pub nonce_lifetime: Duration,
    /// Permissions per allocation (default 64).
    pub max_permissions: usize,
    /// Channels per allocation (default 64).
    pub max_channels: usize,
    /// Allocations waiting for the driver's relay socket (default 64). Over it: 508.
    pub max_pending_binds: usize,
    /// A relay socket not reported within this is given up on (default 10 s).
    pub bind_timeout: Duration,
    /// Unauthenticated answers (401, 438, 400, 420, Binding) per source IP in a burst
    /// (default 64), then one per `unauthenticated_interval` (default 10 ms).
    pub unauthenticated_burst: u32,
    pub unauthenticated_interval: Duration,
    /// Source IPs the limiter of unauthenticated answers tracks (default 65,536).
    pub max_tracked_sources: usize,
}

impl Default for TurnServerConfig {
    fn default() -> Self {
        TurnServerConfig {
            realm: "p2pnat".to_string(),
            max_allocations: 1024,
            max_allocations_per_user: 8,
            max_bytes_per_sec: 4_000_000,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(3600),
            max_permissions: 64,
            max_channels: 64,
            max_pending_binds: 64,
            bind_timeout: Duration::from_secs(10),
            unauthenticated_burst: 64,
            unauthenticated_interval: Duration::from_millis(10),
            max_tracked_sources: 65_536,
        }
    }
}

/// Decides which peer IPs the server relays to (see the module documentation).
pub trait PeerPolicy {
    fn may_relay_to(&self, ip: IpAddr) -> bool;
}

impl<F: Fn(IpAddr) -> bool> PeerPolicy for F {
    fn may_relay_to(&self, ip: IpAddr) -> bool {
        self(ip)
    }
}

/// The policy that refuses every peer (a server that relays nowhere).
pub struct RefuseAll;

impl PeerPolicy for RefuseAll {
    fn may_relay_to(&self, _ip: IpAddr) -> bool {
        false
    }
}

/// IPs no policy can allow: nothing sensible answers there.
pub fn never_relayed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// The transport between a client and the server (RFC 8656 section 3.1). The relayed side is
/// always UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientTransport {
    Udp,
    Tcp,
    Tls,
}

impl ClientTransport {
    /// TCP or TLS: a byte stream, where ChannelData is padded to a multiple of 4.
    pub fn is_stream(self) -> bool {
        !matches!(self, ClientTransport::Udp)
    }
}

/// The client's side of an allocation's 5-tuple: its transport and address. A UDP client and a
/// TCP client may have the same address; they are different clients. (The server's side is the
/// listener of that transport, one per transport.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    pub transport: ClientTransport,
    pub addr: SocketAddr,
}

impl Client {
    pub fn udp(addr: SocketAddr) -> Self {
        Client {
            transport: ClientTransport::Udp,
            addr,
        }
    }
}

/// Which socket a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// To a client (`Transmit::to` is its address) over its transport: the UDP listener, or
    /// the client's TCP or TLS connection. Messages for a stream client are already framed
    /// for the stream (ChannelData padded).
    Client(ClientTransport),
    /// The relay socket bound to this (relayed) address.
    Relay(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub from: Via,
    pub to: SocketAddr,
    pub contents: Vec<u8>,
}

/// Address family of a relay socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit(Transmit),
    /// Bind a relay socket and call [`TurnServer::relay_bound`] with its address.
    BindRelay {
        id: AllocationId,
        family: Family,
        even_port: bool,
    },
    /// Close the relay socket of this allocation (expired, deleted, or given up on).
    ReleaseRelay {
        id: AllocationId,
        relayed: SocketAddr,
    },
}

/// Why the driver could not bind a relay socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayBindError {
    /// No relay address of the requested family (answered 440).
    #[error("no relay address of this family")]
    FamilyUnsupported,
    /// No port (or no even port) could be bound (answered 508).
    #[error("no port available")]
    NoPort,
}

/// Why a datagram did not lead to any answer or relaying (also counted in [`TurnStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("malformed datagram")]
    Malformed,
    #[error("STUN response or unknown indication")]
    Unexpected,
    #[error("no allocation for this source or relayed address")]
    NoAllocation,
    #[error("no permission for the peer")]
    NoPermission,
    #[error("channel not bound")]
    NoChannel,
    #[error("allocation over its byte rate")]
    RateLimited,
    #[error("unauthenticated answers from this source are rate limited")]
    SourceLimited,
    #[error("answer would amplify the request too much")]
    Amplification,
    #[error("output queue full")]
    QueueFull,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TurnStats {
    pub allocations_created: u64,
    pub allocations_released: u64,
    pub relayed_to_peers: u64,
    pub relayed_to_clients: u64,
    pub bytes_to_peers: u64,
    pub bytes_to_clients: u64,
    pub refused_forbidden: u64,
    pub refused_quota: u64,
    pub unauthorized: u64,
    pub dropped_malformed: u64,
    pub dropped_unexpected: u64,
    pub dropped_no_allocation: u64,
    pub dropped_no_permission: u64,
    pub dropped_rate_limited: u64,
    pub dropped_unauthenticated: u64,
    pub dropped_queue_full: u64,
}

/// The server machine. See the module documentation.
pub struct TurnServer {
    config: TurnServerConfig,
    secret: SharedSecret,
    nonces: auth::Nonces,
    next_id: u64,
    /// Indication transaction IDs: a counter mixed with the seed.
    seed: u64,
    indications: u64,
    allocations: HashMap<AllocationId, Allocation>,
    by_client: HashMap<Client, AllocationId>,
    by_relay: HashMap<SocketAddr, AllocationId>,
    per_user: HashMap<String, usize>,
    /// Exactly one `(expires, id)` per allocation.
    expiries: BTreeSet<(Instant, AllocationId)>,
    pending: usize,
    unauthenticated: TokenBuckets<IpAddr>,
    outputs: VecDeque<Output>,
    stats: TurnStats,
}

impl TurnServer {
    /// `seed` (drawn at random once by the driver) keys the nonces and indication IDs.
    pub fn new(config: TurnServerConfig, secret: SharedSecret, seed: u64) -> Self {
        let unauthenticated = TokenBuckets::new(
            config.unauthenticated_burst,
            config.unauthenticated_interval,
            config.max_tracked_sources,
        );
        TurnServer {
            nonces: auth::Nonces::new(seed, config.nonce_lifetime.as_secs()),
            config,
            secret,
            next_id: 0,
            seed,
            indications: 0,
            allocations: HashMap::new(),
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            expiries: BTreeSet::new(),
            pending: 0,
            unauthenticated,
            outputs: VecDeque::new(),
            stats: TurnStats::default(),
        }
    }

    pub fn config(&self) -> &TurnServerConfig {
        &self.config
    }

    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    /// Allocations now (binding ones included).
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// The next output, until `None`.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Removes the allocations expired at `now` (their relay sockets are released).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.remove(id);
        }
    }

    /// A datagram from a client on the UDP listener. `Err` says why nothing came of it.
    pub fn handle_client_datagram(
        &mut self,
        now: Instant,
        unix_now: u64,
        from: SocketAddr,
        datagram: &[u8],
        policy: &dyn PeerPolicy,
    ) -> Result<(), DropReason> {
        self.handle_client_message(now, unix_now, Client::udp(from), datagram, policy)
    }

    /// One message from `from`: a UDP datagram, or a frame cut from a TCP/TLS stream by
    /// [`crate::turn::stream::StreamDecoder`] (ChannelData without its stream padding).
    pub fn handle_client_message(
        &mut self,
        now: Instant,
        unix_now: u64,
        from: Client,
        datagram: &[u8],
        policy: &dyn PeerPolicy,
    ) -> Result<(), DropReason> {
        let result = match datagram.first() {
            // ChannelData: channels 0x4000-0x7FFF (see `wire::LEGACY_CHANNEL_MAX`).
            Some(byte) if (0x40..=0x7F).contains(byte) => {
                self.client_channel_data(now, from, datagram)
            }
            Some(byte) if byte & 0xC0 == 0 => {
                self.client_stun(now, unix_now, from, datagram, policy)
            }
            _ => Err(DropReason::Malformed),
        };
        if let Err(reason) = result {
            self.count_drop(reason);
        }
        result
    }

    /// The TCP or TLS connection of `client` closed: its allocation (if any) goes with it, as
    /// its 5-tuple is gone (RFC 8656 section 3.1).
    pub fn client_closed(&mut self, client: Client) {
        if let Some(&id) = self.by_client.get(&client) {
            self.remove(id);
        }
    }

    /// A datagram from `from_peer` to the relayed address `relayed`.
    pub fn handle_relay_datagram(
        &mut self,
        now: Instant,
        relayed: SocketAddr,
        from_peer: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let result = self.relay_to_client(now, relayed, from_peer, datagram);
        if let Err(reason) = result {
            self.count_drop(reason);
        }
        result
    }

    /// The driver's answer to [`Output::BindRelay`]. A late answer for an allocation given up
    /// on is released at once.
    pub fn relay_bound(
        &mut self,
        now: Instant,
        id: AllocationId,
        result: Result<SocketAddr, RelayBindError>,
    ) {
        let Some(allocation) = self.allocations.get(&id) else {
            if let Ok(relayed) = result {
                self.push(Output::ReleaseRelay { id, relayed });
            }
            return;
        };
        let Phase::Binding { lifetime } = allocation.phase else {
            return;
        };
        match result {
            Ok(relayed) => {
                self.pending -= 1;
                self.activate(now, id, relayed, lifetime);
            }
            Err(e) => {
                let code = match e {
                    RelayBindError::FamilyUnsupported => 440,
                    RelayBindError::NoPort => 508,
                };
                let answer = wire::error(
                    stun_rs::methods::ALLOCATE,
                    allocation.transaction.into(),
                    code,
                    Vec::new(),
                    Some(&allocation.key),
                );
                let client = allocation.client;
                self.transmit_to_client(client, answer);
                self.remove(id);
            }
        }
    }

    fn count_drop(&mut self, reason: DropReason) {
        let stats = &mut self.stats;
        let counter = match reason {
            DropReason::Malformed => &mut stats.dropped_malformed,
            DropReason::Unexpected => &mut stats.dropped_unexpected,
            DropReason::NoAllocation => &mut stats.dropped_no_allocation,
            DropReason::NoPermission | DropReason::NoChannel => &mut stats.dropped_no_permission,
            DropReason::RateLimited => &mut stats.dropped_rate_limited,
            DropReason::SourceLimited | DropReason::Amplification => {
                &mut stats.dropped_unauthenticated
            }
            DropReason::QueueFull => &mut stats.dropped_queue_full,
        };
        *counter += 1;
    }

    fn push(&mut self, output: Output) {
        if self.outputs.len() >= MAX_QUEUED_OUTPUTS {
            // Releases must never be lost (a leaked socket); transmits may.
            if matches!(output, Output::Transmit(_)) {
                self.stats.dropped_queue_full += 1;
                return;
            }
        }
        self.outputs.push_back(output);
    }

    fn transmit(&mut self, from: Via, to: SocketAddr, contents: Vec<u8>) {
        if !contents.is_empty() {
            self.push(Output::Transmit(Transmit { from, to, contents }));
        }
    }

    fn transmit_to_client(&mut self, client: Client, contents: Vec<u8>) {
        self.transmit(Via::Client(client.transport), client.addr, contents);
    }

    fn next_indication_id(&mut self) -> [u8; 12] {
        self.indications = self.indications.wrapping_add(1);
        // splitmix64 of seed + counter: distinct for 2^64 indications, not guessable cheaply.
        let mut z = self
            .seed
            .wrapping_add(self.indications.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&z.to_be_bytes());
        id[8..].copy_from_slice(&(self.indications as u32).to_be_bytes());
        id
    }

    fn set_expiry(&mut self, id: AllocationId, expires: Instant) {
        if let Some(allocation) = self.allocations.get_mut(&id) {
            self.expiries.remove(&(allocation.expires, id));
            allocation.expires = expires;
            self.expiries.insert((expires, id));
        }
    }

    fn activate(
        &mut self,
        now: Instant,
        id: AllocationId,
        relayed: SocketAddr,
        lifetime: Duration,
    ) {
        let Some(allocation) = self.allocations.get(&id) else {
            return;
        };
        let client = allocation.client;
        let answer = handlers::allocate_success(allocation, relayed, lifetime);
        // An address reported twice would be a driver bug; the newest allocation keeps it.
        self.by_relay.insert(relayed, id);
        if let Some(allocation) = self.allocations.get_mut(&id) {
            allocation.phase = Phase::Active {
                relayed,
                response: answer.clone(),
            };
        }
        self.set_expiry(id, now + lifetime);
        self.stats.allocations_created += 1;
        self.transmit_to_client(client, answer);
    }

    fn remove(&mut self, id: AllocationId) {
        let Some(allocation) = self.allocations.remove(&id) else {
            return;
        };
        self.expiries.remove(&(allocation.expires, id));
        if self.by_client.get(&allocation.client) == Some(&id) {
            self.by_client.remove(&allocation.client);
        }
        if let Some(count) = self.per_user.get_mut(&allocation.user) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(&allocation.user);
            }
        }
        match allocation.phase {
            Phase::Active { relayed, .. } => {
                if self.by_relay.get(&relayed) == Some(&id) {
                    self.by_relay.remove(&relayed);
                }
                self.stats.allocations_released += 1;
                self.push(Output::ReleaseRelay { id, relayed });
            }
            Phase::Binding { .. } => self.pending -= 1,
        }
    }
}

#[cfg(test)]
#[path = "../server_tests.rs"]
mod tests;
