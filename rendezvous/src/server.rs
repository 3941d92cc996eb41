//! The rendezvous server's tokio layer: sockets, QUIC, the TLS port, and the sans-IO registry
//! behind a lock. Requests are handled in `requests`, whatever carried them.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pnat::identity::{Identity, IdentityError};
use p2pnat::socket::{NodeSocket, SideDatagram};
use p2pnat::tls;
use p2pnat_proto::control::{self, TurnOffer, TurnServerAddr};
use p2pnat_proto::demux::{classify, DatagramKind};
use p2pnat_proto::rate_limit::TokenBuckets;
use p2pnat_proto::registry::{Registry, RegistryLimits};
use p2pnat_proto::turn::credentials::SharedSecret;
use p2pnat_proto::{stun, PeerId};
use tokio::time::Instant;

use crate::limits::ConnectionLimiter;
use crate::metrics::{Dropped, METRICS};
use crate::requests::Owner;
use crate::tls_port::{TlsPort, TlsPortSettings};

/// Settings of one server run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub stun_listen: Vec<SocketAddr>,
    /// The metrics and health endpoint (`None`: off).
    pub metrics_listen: Option<SocketAddr>,
    pub identity_path: PathBuf,
    pub limits: RegistryLimits,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Punch requests one node may cause in a burst, and the time to earn one more.
    pub punch_burst: u32,
    pub punch_interval: Duration,
    /// Punch requests the nodes of one source IP may cause together in a burst, and the time
    /// to earn one more.
    pub punch_per_ip_burst: u32,
    pub punch_per_ip_interval: Duration,
    /// An external TURN server offered to registering nodes instead of the built-in one.
    pub relay_offer: Option<RelayOffering>,
    /// How long the built-in server's credentials work.
    pub turn_credential_lifetime: Duration,
    /// The built-in TURN server (`None`: `--no-turn`).
    pub turn: Option<crate::turn::TurnSettings>,
    /// The TLS port (`None`: `--no-tls`). Its connection limits also bound TURN over TCP.
    pub tls: Option<TlsPortSettings>,
    /// Connection limits of TURN over TCP when there is no TLS port: (in all, per IP).
    pub tcp_limits: (usize, usize),
    /// Kernel buffer asked for per direction on the main and TURN UDP sockets (0: default).
    pub socket_buffer: usize,
}

/// Which TURN server the rendezvous offers nodes, and how it makes their credentials (the
/// REST-API scheme, `p2pnat_proto::turn::credentials`).
#[derive(Debug, Clone)]
pub struct RelayOffering {
    pub server: TurnServerAddr,
    pub secret: SharedSecret,
    /// How long issued credentials work (each registration refresh brings fresh ones).
    pub credential_lifetime: Duration,
}

impl RelayOffering {
    /// An offer for `peer`, valid from now.
    pub fn offer(&self, peer: &PeerId) -> TurnOffer {
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let issued = self.secret.issue(
            &peer.to_text(),
            now_unix,
            self.credential_lifetime.as_secs(),
        );
        TurnOffer {
            server: self.server,
            username: issued.username,
            password: issued.password,
            expires_unix: issued.expires_unix,
        }
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Turn(#[from] crate::turn::TurnError),
    #[error(transparent)]
    TlsPort(#[from] crate::tls_port::TlsPortError),
    #[error(transparent)]
    Metrics(#[from] crate::http::MetricsBindError),
}

/// Shared state: the registry and which connection holds each registration.
pub struct State {
    pub registry: Mutex<Registry>,
    /// peer -> the connection (QUIC or TLS) that registered it last (pushes go there).
    pub owners: Mutex<HashMap<PeerId, Owner>>,
    /// Numbers control connections, QUIC and TLS alike ([`Owner::conn`]).
    pub next_conn: AtomicU64,
    /// QUIC connections now, handshakes in flight included (`control_quic::Slot`; TCP
    /// connections are counted by the TLS port's limiter).
    pub connections: AtomicUsize,
    pub registry_changed: tokio::sync::Notify,
    /// `--stun-listen` addresses told to nodes for NAT mapping detection.
    pub stun_alternates: Vec<SocketAddr>,
    /// Punch requests each node may cause: bounds how hard one node can make others probe it.
    pub punch_limits: Mutex<TokenBuckets<PeerId>>,
    /// Punch requests the nodes of each source IP may cause together: one host with many keys
    /// cannot multiply its key's allowance (at most `max_tracked_ips` IPs tracked).
    pub punch_ip_limits: Mutex<TokenBuckets<std::net::IpAddr>>,
    /// The inbound probe's address (see [`Poker`]), told to registering nodes.
    pub inbound_probe: Option<SocketAddr>,
    /// The relay offered to nodes: the external one configured, or the built-in one once its
    /// listener is bound.
    pub relay_offer: std::sync::OnceLock<RelayOffering>,
    /// The control datagram machine (sessions of nodes registered with datagrams), and the
    /// wake-up of its driver when a push was queued (`control_dgram`).
    pub dgram: Mutex<p2pnat_proto::rv::server::Server>,
    pub dgram_wake: tokio::sync::Notify,
    /// The rendezvous's identity, for the pair keys of nodes that pinned it (`None` in unit
    /// tests: pinned registrations are then refused).
    pub identity_secret: Option<p2pnat_proto::path::auth::OwnSecret>,
}

/// The datagram machine for a registry with `limits`, its secrets drawn now.
fn dgram_machine(limits: &RegistryLimits) -> Mutex<p2pnat_proto::rv::server::Server> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).expect("the OS random source works");
    let config = p2pnat_proto::rv::server::ServerConfig {
        max_sessions: limits.max_registrations,
        ..Default::default()
    };
    Mutex::new(p2pnat_proto::rv::server::Server::new(
        config,
        seed,
        Instant::now().into_std(),
    ))
}

#[cfg(test)]
impl State {
    /// A state with the default limits and nothing bound, for unit tests.
    pub fn for_tests() -> State {
        let limits = RegistryLimits::default();
        State {
            registry: Mutex::new(Registry::new(limits.clone())),
            owners: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            registry_changed: tokio::sync::Notify::new(),
            stun_alternates: Vec::new(),
            punch_limits: Mutex::new(TokenBuckets::new(32, Duration::from_millis(250), 1024)),
            punch_ip_limits: Mutex::new(TokenBuckets::new(64, Duration::from_millis(100), 1024)),
            inbound_probe: None,
            relay_offer: std::sync::OnceLock::new(),
            dgram: dgram_machine(&limits),
            dgram_wake: tokio::sync::Notify::new(),
            identity_secret: None,
        }
    }
}

/// What the inbound probe sends: a STUN Binding indication (20 bytes, no attributes). A node
/// that receives it drops it; it is meant for the node's NAT (`p2pnat_proto::nat`).
const INBOUND_PROBE_DATAGRAM: [u8; 20] = [
    0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, b'p', b'2', b'p', b'N', b'i', b'n', b'b', b'o',
    b'u', b'n', b'd', b'!',
];

fn bind(addr: SocketAddr) -> Result<std::net::UdpSocket, ServerError> {
    std::net::UdpSocket::bind(addr).map_err(|source| ServerError::Bind { addr, source })
}

pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    let identity = Identity::load_or_create(&config.identity_path)?;
    let metrics_listener = config.metrics_listen.map(crate::http::bind).transpose()?;
    let main_socket = bind(config.listen)?;
    p2pnat::socket_buffers::enlarge(&main_socket, config.socket_buffer);
    let (socket, side_rx) = NodeSocket::new(main_socket, None)?;
    let local = quinn::AsyncUdpSocket::local_addr(&*socket)?;
    let mut server_config =
        quinn::ServerConfig::with_crypto(tls::server_crypto(&identity, tls::ALPN_RENDEZVOUS)?);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(config.idle_timeout.try_into().ok())
        .max_concurrent_bidi_streams(16u32.into())
        .max_concurrent_uni_streams(0u32.into());
    server_config.transport_config(Arc::new(transport));
    let endpoint = p2pnat::socket::endpoint(socket.clone(), Some(server_config))?;

    let mut stun_alternates = Vec::new();
    for addr in &config.stun_listen {
        let stun_socket = tokio::net::UdpSocket::from_std({
            let s = bind(*addr)?;
            s.set_nonblocking(true)?;
            s
        })?;
        let bound = stun_socket.local_addr()?;
        tracing::info!(addr = %bound, "STUN-only responder listening");
        // A wildcard address cannot be told to nodes; they could not know which IP to use.
        if bound.ip().is_unspecified() {
            tracing::warn!(addr = %bound, "not advertised for NAT detection: give a specific IP");
        } else if stun_alternates.len() < control::MAX_STUN_ALTERNATES {
            stun_alternates.push(bound);
        }
        tokio::spawn(answer_stun_only(Arc::new(stun_socket)));
    }
    // The inbound probe: a STUN-answering socket on the first alternate's IP (port chosen by
    // the OS) that pokes whoever asks with a poke request on the main socket.
    let poker = match stun_alternates.first() {
        Some(alternate) => {
            let socket = tokio::net::UdpSocket::from_std({
                let s = bind(SocketAddr::new(alternate.ip(), 0))?;
                s.set_nonblocking(true)?;
                s
            })?;
            tracing::info!(addr = %socket.local_addr()?, "inbound probe listening");
            let socket = Arc::new(socket);
            tokio::spawn(answer_stun_only(socket.clone()));
            Some(Poker::new(socket)?)
        }
        None => None,
    };
    let inbound_probe = poker.as_ref().map(|p| p.addr);
    let state = Arc::new(State {
        registry: Mutex::new(Registry::new(config.limits.clone())),
        owners: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        connections: AtomicUsize::new(0),
        registry_changed: tokio::sync::Notify::new(),
        stun_alternates,
        punch_limits: Mutex::new(TokenBuckets::new(
            config.punch_burst,
            config.punch_interval,
            config.limits.max_registrations,
        )),
        punch_ip_limits: Mutex::new(TokenBuckets::new(
            config.punch_per_ip_burst,
            config.punch_per_ip_interval,
            config.limits.max_tracked_ips,
        )),
        inbound_probe,
        relay_offer: std::sync::OnceLock::new(),
        dgram: dgram_machine(&config.limits),
        dgram_wake: tokio::sync::Notify::new(),
        identity_secret: Some(identity.path_secret()),
    });
    if let Some(external) = config.relay_offer.clone() {
        tracing::info!(server = ?external.server, "offering an external TURN server");
        let _ = state.relay_offer.set(external);
    }

    tokio::spawn(answer_on_main_socket(
        socket.clone(),
        side_rx,
        poker,
        state.clone(),
    ));
    tokio::spawn(crate::control_dgram::drive(state.clone(), socket.clone()));
    tokio::spawn(expire_registrations(state.clone()));

    // One limiter for every TCP connection: the TLS port's and TURN over TCP's.
    let (max_tcp, max_tcp_per_ip) = config.tls.as_ref().map_or(config.tcp_limits, |tls| {
        (tls.max_connections, tls.max_per_ip)
    });
    let limiter = ConnectionLimiter::new(max_tcp, max_tcp_per_ip);
    let mut turn_streams = None;

    if let Some(settings) = config.turn.clone() {
        // The TURN server relays only toward registered peers' observed IPs.
        let registry = state.clone();
        let policy: crate::turn::PeerIpPolicy = Arc::new(move |ip| {
            registry
                .registry
                .lock()
                .expect("registry lock")
                .has_observed_ip(ip)
        });
        let secret = settings.secret.clone();
        if let Some(bound) = crate::turn::spawn(settings, policy, limiter.clone())? {
            turn_streams = Some(bound.streams.clone());
            let _ = state.relay_offer.set(RelayOffering {
                server: TurnServerAddr::SameHost {
                    port: bound.udp.port(),
                },
                secret,
                credential_lifetime: config.turn_credential_lifetime,
            });
        }
    }

    let mut tls_listening = None;
    if let Some(settings) = config.tls.clone() {
        if let Some(listener) = crate::tls_port::bind(&settings)? {
            let bound = listener.local_addr()?;
            tracing::info!(addr = %bound, "tls listening {bound}");
            tls_listening = Some(bound);
            let port = TlsPort {
                configs: p2pnat::rendezvous_tls::server_configs(&identity)?,
                limiter: limiter.clone(),
                state: state.clone(),
                turn: turn_streams,
                settings,
            };
            tokio::spawn(port.run(listener));
        }
    }

    // SIGTERM (`systemctl stop`) is a clean shutdown from the moment it says it listens.
    let signals = p2pnat::process::ShutdownSignals::install();
    // Everything is bound: /healthz answers ok from before the first line is printed.
    crate::http::set_ready(true);
    tracing::info!(%local, id = %identity.peer_id(), "rendezvous listening");
    {
        // `listening` stays the first line (scripts read it); the TLS port's follows.
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening {local} {}", identity.peer_id());
        if let Some(bound) = tls_listening {
            let _ = writeln!(stdout, "tls listening {bound}");
        }
        if let Some(listener) = metrics_listener {
            let bound = listener.local_addr()?;
            tracing::info!(addr = %bound, "metrics listening (GET /metrics, GET /healthz)");
            let _ = writeln!(stdout, "metrics listening {bound}");
            tokio::spawn(crate::http::serve(listener));
        }
        let _ = stdout.flush();
    }

    let accept = async {
        let _alive = crate::http::loop_guard("QUIC accept");
        while let Some(incoming) = endpoint.accept().await {
            if state.connections.load(Ordering::Relaxed) >= config.max_connections {
                METRICS.count_drop(Dropped::QuicQuota);
                tracing::warn!(remote = %incoming.remote_address(), "connection limit reached: refused");
                incoming.refuse();
                continue;
            }
            let slot = crate::control_quic::Slot::take(&state);
            tokio::spawn(crate::control_quic::serve_connection(
                incoming,
                state.clone(),
                slot,
            ));
        }
    };
    // Pinned here, `accept` (and its loop guard) lives to the end of this function, past
    // set_ready(false): a stop by signal is not a loop that failed.
    tokio::pin!(accept);
    tokio::select! {
        _ = &mut accept => {}
        _ = signals.recv() => tracing::info!("shutting down"),
    }
    crate::http::set_ready(false);
    endpoint.close(0u32.into(), b"rendezvous shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}

fn stun_answer(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    match stun::answer_binding_request(datagram, from) {
        Ok(answer) => Some(answer),
        Err(e) => {
            METRICS.count_drop(Dropped::StunMalformed);
            tracing::debug!(%from, "STUN datagram dropped: {e}");
            None
        }
    }
}

/// Sends the inbound probe's poke (`p2pnat_proto::nat`): one 20-byte datagram to the source of
/// a poke request, never more than the request's size, at most [`POKE_BURST`] per source IP
/// and then one per [`POKE_INTERVAL`] (a spoofed request can make it send one small datagram,
/// no amplification).
struct Poker {
    socket: Arc<tokio::net::UdpSocket>,
    addr: SocketAddr,
    limits: TokenBuckets<std::net::IpAddr>,
}

/// Pokes per source IP at once, then one per [`POKE_INTERVAL`].
const POKE_BURST: u32 = 8;
const POKE_INTERVAL: Duration = Duration::from_secs(1);
/// Source IPs the poke limiter tracks.
const POKE_SOURCES: usize = 65_536;

impl Poker {
    fn new(socket: Arc<tokio::net::UdpSocket>) -> std::io::Result<Self> {
        Ok(Poker {
            addr: socket.local_addr()?,
            socket,
            limits: TokenBuckets::new(POKE_BURST, POKE_INTERVAL, POKE_SOURCES),
        })
    }

    fn poke_if_asked(&mut self, request: &[u8], from: SocketAddr) {
        let asked = request
            .get(8..20)
            .and_then(|t| <[u8; 12]>::try_from(t).ok())
            .is_some_and(|t| p2pnat_proto::nat::is_poke(&t));
        if !asked {
            return;
        }
        if !self.limits.take(Instant::now().into_std(), from.ip()) {
            METRICS.count_drop(Dropped::PokeRateLimit);
            tracing::debug!(%from, "poke refused: rate limited");
            return;
        }
        if let Err(e) = self.socket.try_send_to(&INBOUND_PROBE_DATAGRAM, from) {
            tracing::debug!(%from, "poke not sent: {e}");
        }
    }
}

/// Answers what arrives on the main socket besides QUIC: STUN, and control datagrams.
async fn answer_on_main_socket(
    socket: Arc<NodeSocket>,
    mut side_rx: tokio::sync::mpsc::Receiver<SideDatagram>,
    mut poker: Option<Poker>,
    state: Arc<State>,
) {
    let _alive = crate::http::loop_guard("STUN and control datagrams");
    let verifiers = match crate::control_dgram::Verifiers::start(state.clone(), socket.clone()) {
        Ok(verifiers) => verifiers,
        Err(e) => {
            tracing::error!("cannot start the signature checkers: {e}");
            return;
        }
    };
    while let Some(datagram) = side_rx.recv().await {
        match datagram.kind {
            DatagramKind::Stun => {
                if let Some(answer) = stun_answer(&datagram.bytes, datagram.from) {
                    // The poke leaves first, so it reaches the asker's NAT before the asker,
                    // having read the answer, contacts the probe address.
                    if let Some(poker) = poker.as_mut() {
                        poker.poke_if_asked(&datagram.bytes, datagram.from);
                    }
                    if let Err(e) = socket.send_raw(datagram.from, &answer) {
                        tracing::debug!(from = %datagram.from, "STUN answer not sent: {e}");
                    }
                }
            }
            DatagramKind::Project => {
                crate::control_dgram::receive(
                    &state,
                    &socket,
                    &verifiers,
                    datagram.from,
                    datagram.bytes,
                );
            }
            kind => tracing::debug!(from = %datagram.from, ?kind, "unexpected datagram dropped"),
        }
    }
}

async fn answer_stun_only(socket: Arc<tokio::net::UdpSocket>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!("STUN-only socket receive error: {e}");
                continue;
            }
        };
        let from = p2pnat_proto::path::normalize(from);
        if classify(&buf[..len]) != DatagramKind::Stun {
            tracing::debug!(%from, "non-STUN datagram on STUN-only socket dropped");
            continue;
        }
        if let Some(answer) = stun_answer(&buf[..len], from) {
            let _ = socket.send_to(&answer, from).await;
        }
    }
}

async fn expire_registrations(state: Arc<State>) {
    let _alive = crate::http::loop_guard("registry expiry");
    loop {
        let next = state.registry.lock().expect("registry lock").poll_timeout();
        match next {
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline.into()) => {}
                    _ = state.registry_changed.notified() => continue,
                }
                let removed = {
                    let mut registry = state.registry.lock().expect("registry lock");
                    let removed = registry.handle_timeout(Instant::now().into_std());
                    METRICS.registered_peers.set(registry.len() as i64);
                    removed
                };
                for peer in removed {
                    crate::control_dgram::forget(&state, &peer);
                    tracing::info!(peer = %peer, "registration expired");
                }
            }
            None => state.registry_changed.notified().await,
        }
    }
}
