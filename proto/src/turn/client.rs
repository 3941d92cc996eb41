//! The sans-IO TURN client (RFC 8656 over UDP): one allocation on one TURN server, kept alive,
//! with permissions and channels for the peers the node relays to.
//!
//! Driving it: hand every datagram *from the server's address* to [`TurnClient::handle_datagram`]
//! (ChannelData and QUIC short headers share first bytes 0x40-0x4F, RFC 9443, so split by source
//! first), call [`TurnClient::poll_output`] until it returns a [`ClientOutput::Timeout`], and call
//! [`TurnClient::handle_timeout`] at that instant. Every input carries `now`; transaction IDs come
//! from the seed given to [`TurnClient::new`] (SplitMix64), so a run is reproducible.
//!
//! Invariants and limits:
//! - at most one Allocate or Refresh in flight, at most one CreatePermission per wanted IP and
//!   one ChannelBind per channel: the transaction table is bounded by
//!   `max_permissions + max_channels + 1`;
//! - requests are retransmitted `max_attempts` times with a doubling RTO (default 100 ms to
//!   3.2 s, 7 attempts, ~9.5 s in all), then fail;
//! - a failed allocation is retried forever with a doubling backoff (1 s to 60 s; at least 30 s
//!   after 486), each failure reported by [`ClientEvent::AllocationFailed`];
//! - responses are matched by transaction ID before anything else is decoded; a response that
//!   carries MESSAGE-INTEGRITY must match the key its request was sent with, and a success
//!   response to an authenticated request must carry it. Error responses without it are
//!   accepted (401 and 438 never carry it, and servers omit it on other errors too); the
//!   96-bit transaction ID is what an off-path attacker would have to guess;
//! - relayed payloads are neither copied nor allocated: ChannelData and Send indications are
//!   written into the caller's buffer, Data indications and ChannelData borrow the datagram.

#[path = "client_exchange.rs"]
mod exchange;
#[path = "client_types.rs"]
mod types;
#[path = "client_wire.rs"]
mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_rs::methods::{ALLOCATE, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH};
use stun_rs::{HMACKey, MessageMethod};

pub use types::{
    AllocationFailure, ClientCounters, ClientEvent, ClientOutput, TurnClientConfig,
    TurnClientError, TurnPermitError, TurnSendError,
};
pub use wire::{max_payload_for_mtu, overhead_channel, overhead_send_indication, MAX_PAYLOAD};

use super::channel_data::{self, CHANNEL_MAX, CHANNEL_MIN};
use crate::path::normalize;
use wire::SplitMix64;

/// Largest response decoded (responses to our requests are a few hundred bytes).
const MAX_RESPONSE: usize = 2048;
/// Consecutive 438 Stale Nonce answers a request is retried through.
const MAX_STALE_RETRIES: u8 = 3;
/// The server's allocation lifetime when a response has no LIFETIME (RFC 8656 default).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// A channel number is reusable for another peer this long after its last ChannelBind was
/// sent (600 s channel lifetime plus the 300 s the RFC bars rebinding it).
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(900);

/// What [`TurnClient::handle_datagram`] found in a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// A relayed payload from `peer` (borrowing the datagram).
    Data { peer: SocketAddr, payload: &'a [u8] },
    /// A response the client consumed; look at [`TurnClient::poll_output`].
    Control,
}

#[derive(Debug, Clone)]
enum Phase {
    Allocating,
    Backoff { until: Instant },
    Allocated(Allocation),
    Closed,
}

#[derive(Debug, Clone)]
struct Allocation {
    relayed: SocketAddr,
    mapped: Option<SocketAddr>,
    expires_at: Instant,
    refresh_at: Instant,
    refreshing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TxKind {
    Allocate,
    Refresh { lifetime: Option<u32> },
    CreatePermission { ips: Vec<IpAddr> },
    ChannelBind { channel: u16, peer: SocketAddr },
}

impl TxKind {
    fn method(&self) -> MessageMethod {
        match self {
            TxKind::Allocate => ALLOCATE,
            TxKind::Refresh { .. } => REFRESH,
            TxKind::CreatePermission { .. } => CREATE_PERMMISSION,
            TxKind::ChannelBind { .. } => CHANNEL_BIND,
        }
    }
}

#[derive(Debug)]
struct Transaction {
    kind: TxKind,
    bytes: Vec<u8>,
    /// The key MESSAGE-INTEGRITY was computed with (`None`: unauthenticated request).
    key: Option<HMACKey>,
    attempts: u32,
    rto: Duration,
    /// Next retransmission, or the timeout after the last one.
    deadline: Instant,
    stale_retries: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Installed,
    Failed,
}

#[derive(Debug, Clone)]
struct Permission {
    state: State,
    in_flight: bool,
    /// When to send CreatePermission next (while not failed and not in flight).
    due: Instant,
}

#[derive(Debug, Clone)]
struct Channel {
    number: u16,
    state: State,
    in_flight: bool,
    due: Instant,
    /// When the last ChannelBind for it was sent (for reusing its number).
    last_request: Option<Instant>,
}

/// The TURN client machine. See the module documentation for how to drive it.
pub struct TurnClient {
    config: TurnClientConfig,
    server: SocketAddr,
    username: String,
    password: String,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<HMACKey>,
    rng: SplitMix64,
    phase: Phase,
    backoff: Duration,
    transactions: HashMap<[u8; 12], Transaction>,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    channel_peers: HashMap<u16, SocketAddr>,
    next_channel: u16,
    /// Numbers of forgotten channels and when they may be bound again (`None`: never
    /// requested, at once). At most 4,096 entries.
    quarantine: VecDeque<(u16, Option<Instant>)>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    counters: ClientCounters,
    /// When the client last sent anything to the server (see `TurnClientConfig::keepalive`).
    last_sent: Instant,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("phase", &self.phase)
            .field("permissions", &self.permissions.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    /// Creates the client and starts allocating at once (the first Allocate is waiting in
    /// [`TurnClient::poll_output`]). `seed` seeds the transaction IDs: give each client its own
    /// random seed.
    pub fn new(
        config: TurnClientConfig,
        server: SocketAddr,
        username: String,
        password: String,
        now: Instant,
        seed: u64,
    ) -> Self {
        let backoff = config.backoff_initial;
        let mut client = Self {
            config,
            server,
            username,
            password,
            realm: None,
            nonce: None,
            key: None,
            rng: SplitMix64::new(seed),
            phase: Phase::Allocating,
            backoff,
            transactions: HashMap::new(),
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_peers: HashMap::new(),
            next_channel: CHANNEL_MIN,
            quarantine: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: ClientCounters::default(),
            last_sent: now,
        };
        client.start(now, TxKind::Allocate, 0);
        client
    }

    /// The TURN server every transmit goes to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The relayed transport address peers send to, once allocated.
    pub fn relayed_address(&self) -> Option<SocketAddr> {
        match &self.phase {
            Phase::Allocated(a) => Some(a.relayed),
            _ => None,
        }
    }

    /// Our address as the server saw it (XOR-MAPPED-ADDRESS of the Allocate response).
    pub fn mapped_address(&self) -> Option<SocketAddr> {
        match &self.phase {
            Phase::Allocated(a) => a.mapped,
            _ => None,
        }
    }

    pub fn is_allocated(&self) -> bool {
        matches!(self.phase, Phase::Allocated(_))
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    pub fn counters(&self) -> ClientCounters {
        self.counters
    }

    /// Whether the server confirmed a permission for `ip` (and it has not failed since).
    pub fn has_permission(&self, ip: IpAddr) -> bool {
        let ip = normalize(SocketAddr::new(ip, 0)).ip();
        self.permissions
            .get(&ip)
            .is_some_and(|p| p.state == State::Installed)
    }

    /// The channel bound and confirmed for `peer`, if any (sends to it use ChannelData).
    pub fn bound_channel(&self, peer: SocketAddr) -> Option<u16> {
        let peer = normalize(peer);
        self.channels
            .get(&peer)
            .filter(|c| c.state == State::Installed)
            .map(|c| c.number)
    }

    /// For a caller that frames `datagrams` payloads to `peer` as ChannelData itself (several
    /// at once, for one segmented send): the confirmed channel, if any, with the sends counted
    /// as [`TurnClient::send_to`] would count them.
    pub fn channel_for_send(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        datagrams: u64,
    ) -> Option<u16> {
        let channel = self.bound_channel(peer)?;
        self.counters.sent_channel += datagrams;
        self.last_sent = now;
        Some(channel)
    }

    /// Largest payload to `peer` fitting an IP packet of `path_mtu` bytes with the framing
    /// the client would use now. Use [`max_payload_for_mtu`] for the value that holds
    /// whichever framing is used.
    pub fn max_payload(&self, path_mtu: usize, peer: SocketAddr) -> usize {
        let server_v6 = self.server.is_ipv6();
        if self.bound_channel(peer).is_some() {
            let overhead = if server_v6 { 48 } else { 28 } + overhead_channel();
            path_mtu.saturating_sub(overhead).min(MAX_PAYLOAD)
        } else {
            max_payload_for_mtu(path_mtu, server_v6, normalize(peer).is_ipv6())
        }
    }

    /// New credentials (REST credentials expire): used from the next request on, with the
    /// realm and nonce already learnt. Requests in flight keep the key they were sent with.
    pub fn set_credentials(&mut self, username: String, password: String) {
        self.username = username;
        self.password = password;
        self.rebuild_key();
    }

    /// Wants a permission for `ip`: CreatePermission is sent (batched with others wanted at
    /// the same time) once allocated, and again every `permission_refresh` until
    /// [`TurnClient::forget`]. Calling it for a failed permission tries again.
    pub fn permit(&mut self, now: Instant, ip: IpAddr) -> Result<(), TurnPermitError> {
        if self.is_closed() {
            return Err(TurnPermitError::Closed);
        }
        let ip = normalize(SocketAddr::new(ip, 0)).ip();
        if let Some(permission) = self.permissions.get_mut(&ip) {
            if permission.state == State::Failed {
                permission.state = State::Pending;
                permission.due = now;
            }
            return Ok(());
        }
        if self.permissions.len() >= self.config.max_permissions {
            return Err(TurnPermitError::TooManyPermissions {
                max: self.config.max_permissions,
            });
        }
        self.permissions.insert(
            ip,
            Permission {
                state: State::Pending,
                in_flight: false,
                due: now,
            },
        );
        Ok(())
    }

    /// Stops refreshing the permission for `ip` and the channels to it (they expire on the
    /// server); sends to `ip` are refused from now on.
    pub fn forget(&mut self, ip: IpAddr) {
        let ip = normalize(SocketAddr::new(ip, 0)).ip();
        self.permissions.remove(&ip);
        let peers: Vec<SocketAddr> = self
            .channels
            .keys()
            .filter(|p| p.ip() == ip)
            .copied()
            .collect();
        for peer in peers {
            if let Some(channel) = self.channels.remove(&peer) {
                self.channel_peers.remove(&channel.number);
                let reusable_at = channel.last_request.map(|sent| sent + CHANNEL_QUARANTINE);
                self.quarantine.push_back((channel.number, reusable_at));
            }
        }
    }

    /// Binds a channel to `peer` (also wanting a permission for its IP) and returns its
    /// number; ChannelData is used for `peer` once the server confirms it.
    pub fn bind_channel(&mut self, now: Instant, peer: SocketAddr) -> Result<u16, TurnPermitError> {
        let peer = normalize(peer);
        self.permit(now, peer.ip())?;
        if let Some(channel) = self.channels.get(&peer) {
            return Ok(channel.number);
        }
        if self.channels.len() >= self.config.max_channels {
            return Err(TurnPermitError::TooManyChannels {
                max: self.config.max_channels,
            });
        }
        let number = self
            .free_channel_number(now)
            .ok_or(TurnPermitError::NoChannelNumber)?;
        self.channels.insert(
            peer,
            Channel {
                number,
                state: State::Pending,
                in_flight: false,
                due: now,
                last_request: None,
            },
        );
        self.channel_peers.insert(number, peer);
        Ok(number)
    }

    /// Encodes `payload` for `peer` into `out` (cleared first): ChannelData when a channel is
    /// bound and confirmed, a Send indication otherwise. The first send to a peer binds a
    /// channel for it (while fewer than `max_channels` exist). A permission must have been
    /// asked for with [`TurnClient::permit`]; until the server confirms it, it may drop what
    /// is sent. Allocates nothing beyond `out`'s growth.
    pub fn send_to(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TurnSendError> {
        out.clear();
        match self.phase {
            Phase::Closed => return Err(TurnSendError::Closed),
            Phase::Allocated(_) => {}
            _ => return Err(TurnSendError::NotAllocated),
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(TurnSendError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let peer = normalize(peer);
        match self.permissions.get(&peer.ip()).map(|p| p.state) {
            None => return Err(TurnSendError::NoPermission(peer.ip())),
            Some(State::Failed) => return Err(TurnSendError::PermissionFailed(peer.ip())),
            Some(_) => {}
        }
        match self.channels.get(&peer) {
            Some(channel) if channel.state == State::Installed => {
                channel_data::encode_into(channel.number, payload, out);
                self.counters.sent_channel += 1;
                self.last_sent = now;
                return Ok(());
            }
            Some(_) => {}
            None => {
                // Best effort: beyond the limit the peer is reached by Send indications.
                let _ = self.bind_channel(now, peer);
            }
        }
        let txid = self.rng.transaction_id();
        wire::encode_send_indication(&txid, peer, payload, out);
        self.counters.sent_indication += 1;
        self.last_sent = now;
        Ok(())
    }

    /// Takes a datagram that came from the server's address. Relayed data is returned
    /// borrowing `datagram`; responses are consumed (look at [`TurnClient::poll_output`]).
    /// Errors are for logs: the datagram is dropped and the client carries on.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        datagram: &'a [u8],
    ) -> Result<Received<'a>, TurnClientError> {
        let result = self.handle_inner(now, datagram);
        if result.is_err() {
            self.counters.rejected += 1;
        }
        result
    }

    fn handle_inner<'a>(
        &mut self,
        now: Instant,
        datagram: &'a [u8],
    ) -> Result<Received<'a>, TurnClientError> {
        if self.is_closed() {
            return Err(TurnClientError::Closed);
        }
        let first = *datagram.first().ok_or(TurnClientError::Empty)?;
        if channel_data::may_be_channel_data(first) {
            let message = channel_data::decode(datagram)?;
            let peer = *self
                .channel_peers
                .get(&message.channel)
                .ok_or(TurnClientError::UnknownChannel(message.channel))?;
            self.counters.received_channel += 1;
            return Ok(Received::Data {
                peer,
                payload: message.data,
            });
        }
        if first & 0xC0 != 0 {
            return Err(TurnClientError::NotTurn(first));
        }
        let header = wire::peek_header(datagram)?;
        match wire::class_of(header.msg_type) {
            1 if header.msg_type == wire::DATA_INDICATION => {
                let (peer, payload) = wire::parse_data_indication(datagram, &header)?;
                self.counters.received_indication += 1;
                Ok(Received::Data {
                    peer: normalize(peer),
                    payload,
                })
            }
            2 | 3 => {
                let message = &datagram[..wire::STUN_HEADER + header.length];
                self.handle_response(now, &header, message)?;
                Ok(Received::Control)
            }
            _ => Err(TurnClientError::Unexpected(header.msg_type)),
        }
    }

    fn free_channel_number(&mut self, now: Instant) -> Option<u16> {
        if self.next_channel <= CHANNEL_MAX {
            let number = self.next_channel;
            self.next_channel += 1;
            return Some(number);
        }
        let index = self
            .quarantine
            .iter()
            .position(|(_, reusable_at)| reusable_at.is_none_or(|at| at <= now))?;
        self.quarantine.remove(index).map(|(number, _)| number)
    }

    /// Retransmits and times out requests, refreshes what is due, retries the allocation.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        let due: Vec<[u8; 12]> = self
            .transactions
            .iter()
            .filter(|(_, tx)| tx.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(tx) = self.transactions.get_mut(&id) else {
                continue; // removed by an earlier failure in this loop
            };
            if tx.attempts < self.config.max_attempts {
                tx.attempts += 1;
                tx.rto = (tx.rto * 2).min(self.config.max_rto);
                tx.deadline = now + tx.rto;
                self.transmits.push_back(tx.bytes.clone());
                self.counters.retransmits += 1;
            } else if let Some(tx) = self.transactions.remove(&id) {
                self.on_failure(now, tx.kind, None);
            }
        }
        match &mut self.phase {
            Phase::Backoff { until } if *until <= now => {
                self.phase = Phase::Allocating;
                self.start(now, TxKind::Allocate, 0);
            }
            Phase::Allocated(allocation) if allocation.expires_at <= now => {
                self.allocation_lost(now, AllocationFailure::Expired);
            }
            Phase::Allocated(allocation)
                if !allocation.refreshing && allocation.refresh_at <= now =>
            {
                allocation.refreshing = true;
                self.start(now, TxKind::Refresh { lifetime: None }, 0);
            }
            _ => {}
        }
        if self.is_allocated() {
            self.send_due_permissions(now);
            self.send_due_channels(now);
            let keepalive = self.config.keepalive;
            if self.transmits.is_empty()
                && now.saturating_duration_since(self.last_sent) >= keepalive
            {
                // A Binding indication: no answer, it only holds the NAT's mapping (and its
                // filter) towards the server open, so peers' traffic keeps reaching us.
                let txid = self.rng.transaction_id();
                let mut indication = vec![0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
                indication.extend_from_slice(&txid);
                self.transmits.push_back(indication);
                self.counters.keepalives += 1;
            }
        }
    }

    fn send_due_permissions(&mut self, now: Instant) {
        let mut due: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|(_, p)| p.state != State::Failed && !p.in_flight && p.due <= now)
            .map(|(ip, _)| *ip)
            .collect();
        due.sort();
        for ip in &due {
            if let Some(permission) = self.permissions.get_mut(ip) {
                permission.in_flight = true;
            }
        }
        for batch in due.chunks(self.config.permissions_per_request.max(1)) {
            let ips = batch.to_vec();
            self.start(now, TxKind::CreatePermission { ips }, 0);
        }
    }

    fn send_due_channels(&mut self, now: Instant) {
        let mut due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.state != State::Failed && !c.in_flight && c.due <= now)
            .map(|(peer, c)| (*peer, c.number))
            .collect();
        due.sort();
        for (peer, channel) in due {
            if let Some(entry) = self.channels.get_mut(&peer) {
                entry.in_flight = true;
                entry.last_request = Some(now);
            }
            self.start(now, TxKind::ChannelBind { channel, peer }, 0);
        }
    }

    /// The next thing to do: transmits first, then events, then the next deadline.
    pub fn poll_output(&mut self, now: Instant) -> ClientOutput {
        self.handle_timeout(now);
        if let Some(bytes) = self.transmits.pop_front() {
            self.last_sent = now;
            return ClientOutput::Transmit(bytes);
        }
        if let Some(event) = self.events.pop_front() {
            return ClientOutput::Event(event);
        }
        match self.next_timeout() {
            Some(at) => ClientOutput::Timeout(at),
            None => ClientOutput::Closed,
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        let mut next = self.transactions.values().map(|tx| tx.deadline).min();
        let mut consider = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
        match &self.phase {
            Phase::Closed => return None,
            Phase::Allocating => {}
            Phase::Backoff { until } => consider(*until),
            Phase::Allocated(allocation) => {
                consider(allocation.expires_at);
                consider(self.last_sent + self.config.keepalive);
                if !allocation.refreshing {
                    consider(allocation.refresh_at);
                }
                self.permissions
                    .values()
                    .filter(|p| p.state != State::Failed && !p.in_flight)
                    .for_each(|p| consider(p.due));
                self.channels
                    .values()
                    .filter(|c| c.state != State::Failed && !c.in_flight)
                    .for_each(|c| consider(c.due));
            }
        }
        next
    }

    /// Deletes the allocation (Refresh with LIFETIME 0, sent once, best effort) and closes the
    /// machine: after that transmit, `poll_output` returns [`ClientOutput::Closed`].
    pub fn close(&mut self, _now: Instant) {
        if self.is_closed() {
            return;
        }
        let allocated = self.is_allocated();
        self.transactions.clear();
        self.transmits.clear();
        self.events.clear();
        if allocated {
            if let Some((bytes, _, _)) = self.build(&TxKind::Refresh { lifetime: Some(0) }) {
                self.transmits.push_back(bytes);
            }
        }
        self.phase = Phase::Closed;
    }
}
