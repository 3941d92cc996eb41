//! The node's relay: one TURN allocation ([`p2pnat_proto::turn::client::TurnClient`]) reached
//! through the node's one UDP socket, seen by the path agent as the local socket
//! [`LocalSocketId::RELAY`].
//!
//! - **Receiving.** Every datagram from the TURN server's address goes to the client first
//!   (RFC 9443: ChannelData and QUIC short headers share first bytes 0x40-0x4F, so traffic is
//!   split by source before content). Data it unwraps (ChannelData or a Data indication) is
//!   classified like any datagram: QUIC waits in a bounded queue ([`RELAYED_QUIC_QUEUE`]) that
//!   the socket hands to quinn on its next receive; checks and STUN go to the side channel with
//!   local socket `RELAY` and the peer's address as the relay saw it. Responses to the client's
//!   own requests wake the driver task.
//! - **Sending.** A datagram for local socket `RELAY` is wrapped by the client (ChannelData once
//!   a channel is bound, a Send indication before) and sent to the server from the main socket.
//!   The first datagram towards a peer IP asks for its permission and channel (the server sees
//!   the CreatePermission/ChannelBind before the data that follows it on the same path).
//! - **The driver task** ([`drive`]) owns the client's timers and requests: it allocates with
//!   the credentials the rendezvous offers with each registration, refreshes, and tells the
//!   path agent and the rendezvous keeper when the allocation comes and goes.
//!
//! - **Over TLS** ([`RelayTransport::Tls`], for networks that drop UDP): the driver connects to
//!   the rendezvous's TLS port ([`crate::relay_stream`], one connection per allocation) and
//!   the same client runs over it: its requests and the socket's wrapped datagrams are queued
//!   on the connection (bounded, never waited on, drops counted in
//!   [`RelayCounters::stream_dropped`]), and the frames read from it go to
//!   [`RelayLink::receive`] as datagrams from the server would. The server's UDP address is
//!   then unset, so no UDP datagram is taken for the relay's. A connection that ends takes its
//!   allocation with it: the driver reports the relay lost and connects again after 1 s,
//!   doubling to 30 s while attempts keep failing. A new offer on another transport (UDP to TLS
//!   or back) closes the old client and connection and allocates afresh.
//!
//! Relayed QUIC packets fit: over UDP, quinn's largest datagram (1,452 bytes) plus
//! ChannelData's 4-byte header stays under the 1,472 bytes of UDP payload an Ethernet MTU
//! carries. A Send indication adds 36 bytes, so a packet over 1,436 bytes sent before its
//! channel is bound is dropped here (counted) rather than fragmented; QUIC retransmits it, by
//! then on the channel. Over TLS there is no path MTU: payloads up to
//! [`STREAM_MAX_PAYLOAD`] (8,144 bytes, the server's frame limit less the framing) are framed
//! whole, so every quinn datagram is.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2pnat_proto::demux::{classify, DatagramKind};
use p2pnat_proto::path::{LocalSocketId, PathAgent};
use p2pnat_proto::turn::channel_data;
use p2pnat_proto::turn::client::{
    ClientEvent, ClientOutput, Received, TurnClient, TurnClientConfig,
};
use tokio::sync::{watch, Notify};

use crate::node::rendezvous_client::{RelayOffer, RelayTransport};
use crate::relay_stream::{StreamConnection, StreamEvent, StreamOut, STREAM_MAX_PAYLOAD};
use crate::socket::{NodeSocket, SideDatagram};

/// Relayed QUIC packets waiting for quinn's next receive; more are dropped (QUIC retransmits).
pub const RELAYED_QUIC_QUEUE: usize = 1024;
/// IP MTU assumed on the way to the relay server (Ethernet).
pub const RELAY_PATH_MTU: usize = 1500;
/// First wait before connecting again to a relay over TLS after a failure; doubles per
/// failure in a row up to [`STREAM_BACKOFF_MAX`].
pub const STREAM_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Ceiling of the reconnect backoff over TLS.
pub const STREAM_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A TURN request over TLS is sent once (TCP retransmits, RFC 8489 section 6.2.2) and fails
/// if unanswered for this long.
pub const STREAM_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A relayed QUIC packet unwrapped, waiting for quinn.
#[derive(Debug)]
pub struct RelayedQuic {
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Counters of relayed traffic, for logs and tests.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Datagrams from the server the client rejected.
    pub rejected: AtomicU64,
    /// Sends refused (no allocation, no permission, too large).
    pub unsent: AtomicU64,
    /// Relayed QUIC dropped because quinn's queue was full.
    pub queue_full: AtomicU64,
    /// Messages for the relay's TLS connection dropped: its queue was full (or it was not up).
    pub stream_dropped: AtomicU64,
}

/// The relay server's address for a lock-free comparison with every datagram's source: an
/// IPv4 address and port packed in one atomic word (bit 63 marks one set); an IPv6 server (rare)
/// sets [`ServerAddr::V6`] and is compared under a lock.
#[derive(Debug, Default)]
struct ServerAddr {
    packed: AtomicU64,
    v6: Mutex<Option<SocketAddr>>,
}

impl ServerAddr {
    const SET: u64 = 1 << 63;
    const V6: u64 = u64::MAX;

    fn pack(addr: SocketAddr) -> u64 {
        match addr {
            SocketAddr::V4(v4) => {
                Self::SET | u64::from(u32::from(*v4.ip())) << 16 | u64::from(v4.port())
            }
            SocketAddr::V6(_) => Self::V6,
        }
    }

    fn set(&self, addr: Option<SocketAddr>) {
        *self.v6.lock().expect("relay server lock") = addr.filter(SocketAddr::is_ipv6);
        self.packed
            .store(addr.map_or(0, Self::pack), Ordering::Release);
    }

    fn is(&self, source: SocketAddr) -> bool {
        match self.packed.load(Ordering::Acquire) {
            0 => false,
            Self::V6 => *self.v6.lock().expect("relay server lock") == Some(source),
            packed => source.is_ipv4() && Self::pack(source) == packed,
        }
    }
}

/// What the socket shares with the driver task. See the module documentation.
#[derive(Debug, Default)]
pub struct RelayLink {
    client: Mutex<Option<TurnClient>>,
    /// The server's address, read on every received datagram (direct traffic included), so
    /// without a lock.
    server: ServerAddr,
    quic: Mutex<VecDeque<RelayedQuic>>,
    wake: Notify,
    /// Set while the relay is reached over TLS; `server` is unset meanwhile.
    on_stream: AtomicBool,
    /// The TLS connection's queue, while it is up.
    stream: Mutex<Option<StreamOut>>,
    pub counters: RelayCounters,
}

impl RelayLink {
    /// Whether `source` is the TURN server in use over UDP (never while on TLS).
    pub fn is_server(&self, source: SocketAddr) -> bool {
        self.server.is(source)
    }

    /// Whether the relay is reached over TLS: relayed datagrams go to
    /// [`RelayLink::send_on_stream`], not to a UDP socket.
    pub fn on_stream(&self) -> bool {
        self.on_stream.load(Ordering::Acquire)
    }

    /// Wraps each datagram of `contents` (segments of `size` bytes, the last may be shorter)
    /// for `peer` and queues it on the relay's TLS connection. Datagrams the relay cannot take
    /// (no allocation, no permission, over [`STREAM_MAX_PAYLOAD`], a full queue) are dropped
    /// and counted, as on a dead link; nothing here waits.
    pub fn send_on_stream(&self, peer: SocketAddr, contents: &[u8], size: usize) {
        // Both locks are taken once per send, not once per segment.
        let wrapped: Vec<Vec<u8>> = {
            let mut guard = self.client.lock().expect("relay client lock");
            let Some(client) = guard.as_mut() else {
                self.counters.unsent.fetch_add(1, Ordering::Relaxed);
                return;
            };
            contents
                .chunks(size.max(1))
                .filter_map(|segment| {
                    let mut out = Vec::with_capacity(segment.len() + 52);
                    self.wrap_with(client, peer, segment, STREAM_MAX_PAYLOAD, &mut out)
                        .then_some(out)
                })
                .collect()
        };
        let stream = self.stream.lock().expect("relay stream lock");
        for message in wrapped {
            if !stream.as_ref().is_some_and(|out| out.try_queue(message)) {
                self.counters.stream_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues a TURN message (UDP form) on the TLS connection; `false`: dropped (counted).
    fn queue_stream(&self, message: Vec<u8>) -> bool {
        let queued = self
            .stream
            .lock()
            .expect("relay stream lock")
            .as_ref()
            .is_some_and(|out| out.try_queue(message));
        if !queued {
            self.counters.stream_dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Hands a datagram from the TURN server to the client. Returns the unwrapped non-QUIC
    /// datagram for the side channel, if it was one; relayed QUIC is queued for quinn.
    pub fn receive(&self, datagram: &[u8]) -> Option<SideDatagram> {
        let mut guard = self.client.lock().expect("relay client lock");
        let client = guard.as_mut()?;
        match client.handle_datagram(Instant::now(), datagram) {
            Ok(Received::Data { peer, payload }) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                match classify(payload) {
                    DatagramKind::Quic => {
                        let mut queue = self.quic.lock().expect("relayed QUIC lock");
                        if queue.len() >= RELAYED_QUIC_QUEUE {
                            self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
                        } else {
                            queue.push_back(RelayedQuic {
                                from: peer,
                                bytes: payload.to_vec(),
                            });
                        }
                        None
                    }
                    kind @ (DatagramKind::Stun | DatagramKind::Project) => Some(SideDatagram {
                        kind,
                        local: LocalSocketId::RELAY,
                        from: peer,
                        bytes: payload.to_vec(),
                    }),
                    DatagramKind::Garbage => {
                        tracing::debug!(%peer, "dropped an unrecognised relayed datagram");
                        None
                    }
                }
            }
            Ok(Received::Control) => {
                self.wake.notify_one();
                None
            }
            Err(e) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("datagram from the relay server dropped: {e}");
                None
            }
        }
    }

    /// The next relayed QUIC packet waiting for quinn.
    pub fn next_quic(&self) -> Option<RelayedQuic> {
        self.quic.lock().expect("relayed QUIC lock").pop_front()
    }

    /// Whether relayed QUIC packets are waiting.
    pub fn has_quic(&self) -> bool {
        !self.quic.lock().expect("relayed QUIC lock").is_empty()
    }

    /// Wraps several datagrams of `size` bytes (the last may be shorter) for `peer` into `out`
    /// as ChannelData segments of one stride, for a single segmented (GSO) send. Returns the
    /// server and the stride; `None` when no channel is bound yet or a segment would not fit
    /// (then wrap them one by one with [`RelayLink::wrap`]). UDP only: `None` over TLS.
    pub fn wrap_segments(
        &self,
        peer: SocketAddr,
        contents: &[u8],
        size: usize,
        out: &mut Vec<u8>,
    ) -> Option<(SocketAddr, usize)> {
        if self.on_stream() {
            return None;
        }
        let mut guard = self.client.lock().expect("relay client lock");
        let client = guard.as_mut()?;
        if size > client.max_payload(RELAY_PATH_MTU, peer) {
            return None;
        }
        let count = contents.len().div_ceil(size) as u64;
        let channel = client.channel_for_send(Instant::now(), peer, count)?;
        out.clear();
        for segment in contents.chunks(size) {
            channel_data::encode_into(channel, segment, out);
        }
        self.counters.sent.fetch_add(count, Ordering::Relaxed);
        Some((client.server(), size + channel_data::CHANNEL_DATA_HEADER))
    }

    /// Wraps `payload` for `peer` into `out`; returns the server to send it to, or `None` (the
    /// datagram is dropped, as on a dead link). UDP only: `None` over TLS (use
    /// [`RelayLink::send_on_stream`]).
    pub fn wrap(&self, peer: SocketAddr, payload: &[u8], out: &mut Vec<u8>) -> Option<SocketAddr> {
        if self.on_stream() {
            // Over TLS there is no UDP address to send to: see `send_on_stream`.
            return None;
        }
        let mut guard = self.client.lock().expect("relay client lock");
        let client = guard.as_mut()?;
        let max = client.max_payload(RELAY_PATH_MTU, peer);
        self.wrap_with(client, peer, payload, max, out)
            .then(|| client.server())
    }

    /// Wraps `payload` for `peer` into `out` if it is at most `max` bytes, asking for the
    /// peer's permission and channel first if it has none. `false`: not wrapped (counted).
    fn wrap_with(
        &self,
        client: &mut TurnClient,
        peer: SocketAddr,
        payload: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        let now = Instant::now();
        if client.bound_channel(peer).is_none() && !client.has_permission(peer.ip()) {
            if let Err(e) = client.permit(now, peer.ip()) {
                tracing::debug!(%peer, "relay permission not requested: {e}");
            }
            if let Err(e) = client.bind_channel(now, peer) {
                tracing::debug!(%peer, "relay channel not requested: {e}");
            }
            self.wake.notify_one();
        }
        if payload.len() > max {
            // Over UDP it would fragment; over TLS it would exceed the server's frame limit.
            self.counters.unsent.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match client.send_to(now, peer, payload, out) {
            Ok(()) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.counters.unsent.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(%peer, "relayed datagram not sent: {e}");
                false
            }
        }
    }
}

/// Everything the relay driver needs.
pub struct RelayDriver {
    pub link: Arc<RelayLink>,
    pub socket: Arc<NodeSocket>,
    pub agent: Arc<Mutex<PathAgent>>,
    /// The relay offered with each registration.
    pub offers: watch::Receiver<Option<RelayOffer>>,
    /// Our relayed address, for the rendezvous keeper (it registers every change).
    pub relayed: watch::Sender<Option<SocketAddr>>,
    pub shutdown: watch::Receiver<bool>,
    pub config: TurnClientConfig,
    /// The rendezvous session the current allocation was made in (see
    /// `RelayOffer::session`).
    pub session: AtomicU64,
    /// Expiry (unix seconds) of the username the current client allocates with.
    pub expires_unix: AtomicU64,
    /// Where `error relay ...` events go when allocating fails (once per failure streak).
    pub outputs: crate::node::app_io::Outputs,
    /// The last allocation attempt failed (an event was written for it).
    pub failing: std::sync::atomic::AtomicBool,
}

/// The driver's own state beside [`RelayDriver`]: the offer the current client was made from
/// (with the latest credentials), and over TLS the connection and when to connect again.
struct Current {
    offer: Option<RelayOffer>,
    stream: Option<StreamConnection>,
    /// When to connect again after the TLS connection failed or ended.
    retry_at: Option<Instant>,
    /// The next reconnect wait: [`STREAM_BACKOFF_INITIAL`] doubling to [`STREAM_BACKOFF_MAX`].
    backoff: Duration,
}

/// What woke the driver.
enum Wake {
    Offer(Option<RelayOffer>),
    Stream(StreamEvent),
    Timer,
    Other,
    Stop,
}

/// Runs the TURN client: allocates on the offered server (over UDP, or over TLS when the offer
/// says so), keeps the allocation, and reports it. Ends at shutdown (after asking the server
/// to delete the allocation, and closing the TLS connection if there is one).
pub async fn drive(mut driver: RelayDriver) {
    let mut next_timeout: Option<Instant> = None;
    let mut current = Current {
        offer: None,
        stream: None,
        retry_at: None,
        backoff: STREAM_BACKOFF_INITIAL,
    };
    loop {
        let wake_at = match (next_timeout, current.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let stream_event = async {
            match current.stream.as_mut() {
                Some(connection) => connection.next_event().await,
                None => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            changed = driver.offers.changed() => match changed {
                Ok(()) => Wake::Offer(driver.offers.borrow_and_update().clone()),
                Err(_) => Wake::Stop,
            },
            event = stream_event => Wake::Stream(event),
            _ = driver.link.wake.notified() => Wake::Other,
            _ = sleep => Wake::Timer,
            _ = driver.shutdown.changed() => {
                if *driver.shutdown.borrow() { Wake::Stop } else { Wake::Other }
            }
        };
        match wake {
            Wake::Offer(offer) => take_offer(&driver, &mut current, offer),
            Wake::Stream(event) => on_stream_event(&driver, &mut current, event).await,
            Wake::Timer => {
                if let Some(client) = driver
                    .link
                    .client
                    .lock()
                    .expect("relay client lock")
                    .as_mut()
                {
                    client.handle_timeout(Instant::now());
                }
            }
            Wake::Other => {}
            Wake::Stop => break,
        }
        if current.retry_at.is_some_and(|at| at <= Instant::now()) {
            current.retry_at = None;
            connect_stream(&driver, &mut current);
        }
        next_timeout = flush(&driver).await;
    }
    if let Some(client) = driver
        .link
        .client
        .lock()
        .expect("relay client lock")
        .as_mut()
    {
        client.close(Instant::now());
    }
    flush(&driver).await;
    *driver.link.stream.lock().expect("relay stream lock") = None;
    if let Some(connection) = current.stream.take() {
        connection.close().await;
    }
}

/// A client with a fresh random seed.
fn new_client(
    config: TurnClientConfig,
    server: SocketAddr,
    username: String,
    password: String,
) -> TurnClient {
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    TurnClient::new(
        config,
        server,
        username,
        password,
        Instant::now(),
        u64::from_le_bytes(seed),
    )
}

/// The client's timers over a reliable stream: each request sent once, failing after
/// [`STREAM_REQUEST_TIMEOUT`]; the rest as over UDP.
fn stream_config(config: &TurnClientConfig) -> TurnClientConfig {
    TurnClientConfig {
        rto: STREAM_REQUEST_TIMEOUT,
        max_rto: STREAM_REQUEST_TIMEOUT,
        max_attempts: 1,
        ..config.clone()
    }
}

/// Starts a client for a new server or transport, or gives the current one fresh credentials.
///
/// Every request on one allocation must carry the username it was made with (RFC 8656; coturn
/// answers 441 Wrong Credentials otherwise), while REST usernames carry their expiry. So an
/// allocated client keeps its username, and shortly before that username expires
/// ([`CREDENTIAL_RENEWAL`]) the driver allocates afresh with the new one; a client still
/// allocating just takes the new credentials (and a TLS reconnect uses the latest).
fn take_offer(driver: &RelayDriver, current: &mut Current, offer: Option<RelayOffer>) {
    let mut guard = driver.link.client.lock().expect("relay client lock");
    let same_place = match (&offer, &current.offer) {
        // Over UDP the client is the allocation. Over TLS the connection goes to the
        // transport's address (`server` is not used), and its client comes and goes with it.
        (Some(new), Some(old)) if new.transport == RelayTransport::Udp => {
            old.transport == RelayTransport::Udp
                && new.session == old.session
                && new.server == old.server
                && guard.is_some()
        }
        (Some(new), Some(old)) => new.transport == old.transport && new.session == old.session,
        _ => false,
    };
    let allocated = guard.as_ref().is_some_and(TurnClient::is_allocated);
    if let Some(offer) = offer.clone().filter(|_| same_place) {
        if !allocated || !expiring(driver) {
            if let Some(client) = guard.as_mut().filter(|client| !client.is_allocated()) {
                driver
                    .expires_unix
                    .store(expiry_of(&offer.username), Ordering::Relaxed);
                client.set_credentials(offer.username.clone(), offer.password.clone());
            }
            current.offer = Some(offer);
            return;
        }
    }
    // Afresh: the old client and connection go (the server ends an allocation over TLS with
    // its connection).
    if let Some(old) = guard.as_mut() {
        old.close(Instant::now());
    }
    *guard = None;
    *driver.link.stream.lock().expect("relay stream lock") = None;
    current.stream = None;
    current.retry_at = None;
    current.backoff = STREAM_BACKOFF_INITIAL;
    driver.session.store(
        offer.as_ref().map_or(0, |offer| offer.session),
        Ordering::Relaxed,
    );
    driver.expires_unix.store(
        offer.as_ref().map_or(0, |offer| expiry_of(&offer.username)),
        Ordering::Relaxed,
    );
    match offer.as_ref() {
        None => {
            driver.link.on_stream.store(false, Ordering::Release);
            driver.link.server.set(None);
        }
        Some(offer) if offer.transport == RelayTransport::Udp => {
            tracing::info!(server = %offer.server, "allocating on the relay");
            *guard = Some(new_client(
                driver.config.clone(),
                offer.server,
                offer.username.clone(),
                offer.password.clone(),
            ));
            driver.link.on_stream.store(false, Ordering::Release);
            driver.link.server.set(Some(offer.server));
        }
        Some(_) => {
            // No UDP datagram is the relay's while it is reached over TLS.
            driver.link.server.set(None);
            driver.link.on_stream.store(true, Ordering::Release);
        }
    }
    drop(guard);
    current.offer = offer;
    connect_stream(driver, current);
    relay_lost(driver);
}

/// Connects to the relay over TLS if the current offer says so.
fn connect_stream(driver: &RelayDriver, current: &mut Current) {
    let Some(RelayOffer {
        transport: RelayTransport::Tls { addr, pinned },
        ..
    }) = &current.offer
    else {
        return;
    };
    tracing::info!(%addr, "connecting to the relay over TLS");
    current.stream = Some(StreamConnection::spawn(
        *addr,
        *pinned,
        driver.link.clone(),
        driver.socket.clone(),
    ));
}

/// Allocates once the TLS connection is up; when it ends, reports the relay lost (and an
/// `error relay` event, once per failure streak) and schedules the next connection.
async fn on_stream_event(driver: &RelayDriver, current: &mut Current, event: StreamEvent) {
    match event {
        StreamEvent::Connected { local } => {
            let Some(offer) = current.offer.clone() else {
                return;
            };
            let RelayTransport::Tls { addr, .. } = offer.transport else {
                return;
            };
            let Some(out) = current.stream.as_ref().and_then(StreamConnection::out) else {
                return;
            };
            tracing::info!(server = %addr, %local, "allocating on the relay over TLS");
            *driver.link.stream.lock().expect("relay stream lock") = Some(out);
            driver
                .expires_unix
                .store(expiry_of(&offer.username), Ordering::Relaxed);
            *driver.link.client.lock().expect("relay client lock") = Some(new_client(
                stream_config(&driver.config),
                addr,
                offer.username,
                offer.password,
            ));
        }
        StreamEvent::Closed(reason) => {
            let had_allocation = driver
                .link
                .client
                .lock()
                .expect("relay client lock")
                .take()
                .is_some_and(|client| client.is_allocated());
            *driver.link.stream.lock().expect("relay stream lock") = None;
            current.stream = None;
            relay_lost(driver);
            if had_allocation {
                // It worked until now: try again soon.
                current.backoff = STREAM_BACKOFF_INITIAL;
            }
            let retry_in = current.backoff;
            current.retry_at = Some(Instant::now() + retry_in);
            current.backoff = (retry_in * 2).min(STREAM_BACKOFF_MAX);
            tracing::warn!(
                ?retry_in,
                "relay connection over TLS ended: {reason}; reconnecting"
            );
            if !driver.failing.swap(true, Ordering::Relaxed) {
                let message = format!(
                    "no relay allocation (TLS connection to the relay: {reason}); peers that \
                     cannot be reached directly are unreachable until it works; retrying in {} s",
                    retry_in.as_secs()
                );
                driver.outputs.error("relay", message).await;
            }
        }
    }
}

/// Allocate afresh this long before the allocation's username expires.
pub const CREDENTIAL_RENEWAL: u64 = 600;

/// The expiry (unix seconds) in a REST username; 0 when it has none (never renewed early).
fn expiry_of(username: &str) -> u64 {
    p2pnat_proto::turn::credentials::parse_username(username).map_or(0, |p| p.expires_unix)
}

/// Whether the current allocation's username expires within [`CREDENTIAL_RENEWAL`].
fn expiring(driver: &RelayDriver) -> bool {
    let expires = driver.expires_unix.load(Ordering::Relaxed);
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    expires != 0 && now_unix + CREDENTIAL_RENEWAL >= expires
}

/// No allocation (any more): the agent stops checking through the relay and the keeper
/// registers no relayed address.
fn relay_lost(driver: &RelayDriver) {
    driver
        .agent
        .lock()
        .expect("path agent lock")
        .set_relay(false);
    driver.relayed.send_replace(None);
}

/// Sends what the client has to send and handles its events. Returns its next deadline.
async fn flush(driver: &RelayDriver) -> Option<Instant> {
    loop {
        let (output, server) = {
            let mut guard = driver.link.client.lock().expect("relay client lock");
            let client = guard.as_mut()?;
            (client.poll_output(Instant::now()), client.server())
        };
        match output {
            ClientOutput::Transmit(bytes) => {
                if driver.link.on_stream() {
                    if !driver.link.queue_stream(bytes) {
                        tracing::debug!(%server, "relay request dropped: TLS queue full");
                    }
                } else if let Err(e) = driver.socket.send_raw(server, &bytes) {
                    tracing::debug!(%server, "relay request not sent: {e}");
                }
            }
            ClientOutput::Event(event) => report(driver, event).await,
            ClientOutput::Timeout(at) => return Some(at),
            ClientOutput::Closed => {
                *driver.link.client.lock().expect("relay client lock") = None;
                return None;
            }
        }
    }
}

async fn report(driver: &RelayDriver, event: ClientEvent) {
    match event {
        ClientEvent::Allocated {
            relayed, lifetime, ..
        } => {
            tracing::info!(%relayed, ?lifetime, "relay allocated");
            driver
                .agent
                .lock()
                .expect("path agent lock")
                .set_relay(true);
            driver.relayed.send_replace(Some(relayed));
            driver.failing.store(false, Ordering::Relaxed);
        }
        ClientEvent::AllocationFailed { reason, retry_in } => {
            tracing::warn!(?retry_in, "relay allocation failed: {reason}; retrying");
            relay_lost(driver);
            if !driver.failing.swap(true, Ordering::Relaxed) {
                let message = format!(
                    "no relay allocation ({reason}); peers that cannot be reached directly are \
                     unreachable until it works; retrying in {} s",
                    retry_in.as_secs()
                );
                driver.outputs.error("relay", message).await;
            }
        }
        ClientEvent::PermissionFailed { ip, code } => {
            tracing::info!(%ip, ?code, "relay refused a permission");
        }
        ClientEvent::ChannelFailed { peer, code } => {
            tracing::debug!(%peer, ?code, "relay channel not bound");
        }
        ClientEvent::Refreshed { .. } | ClientEvent::ChannelBound { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::ServerAddr;

    #[test]
    fn server_address_matches_only_itself() {
        let server = ServerAddr::default();
        let addr = "203.0.113.10:3479".parse().unwrap();
        assert!(!server.is(addr));
        server.set(Some(addr));
        assert!(server.is(addr));
        assert!(!server.is("203.0.113.10:3478".parse().unwrap()));
        assert!(!server.is("203.0.113.11:3479".parse().unwrap()));
        assert!(!server.is("[2001:db8::1]:3479".parse().unwrap()));
        let v6 = "[2001:db8::1]:3479".parse().unwrap();
        server.set(Some(v6));
        assert!(server.is(v6));
        assert!(!server.is(addr));
        server.set(None);
        assert!(!server.is(v6));
    }
}
