//! The node's connection to the rendezvous: keeps it up, keeps the registration fresh, and runs
//! lookups.
//!
//! The keeper task connects (control datagrams from the node's one socket, so the rendezvous
//! observes the same NAT mapping peers will use; or TLS over TCP to the rendezvous's TLS port
//! where UDP is blocked: [`super::rendezvous_session`]), registers with the node's local
//! addresses, refreshes every [`UDP_REFRESH`] over UDP (every third of the granted TTL over
//! TLS), and reconnects with backoff (1 s doubling to 30 s) when the session or a refresh
//! fails. Registered over TLS, it tries UDP again every [`UDP_RETRY`] and moves the
//! registration back when UDP answers.
//! Lookups wait up to [`LOOKUP_TIMEOUT`] for a connection and an answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2pnat_proto::app::Event;
use p2pnat_proto::control::{self, PeerRecord, Push, Request, Response, TurnOffer, TurnServerAddr};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::PeerId;
use tokio::sync::{mpsc, oneshot, watch};

use super::app_io::Outputs;
use super::rendezvous_session::{
    self as session, Dialing, RendezvousOver, Session, DEFAULT_TLS_PORT, UDP_RETRY,
};
use crate::identity::Identity;
use crate::socket::NodeSocket;

/// How long a lookup (or a registration) may take, connection wait included.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a node registered over UDP refreshes: below the 30 s after which many NATs
/// (Linux conntrack's unreplied UDP timeout among them; RFC 4787 asks for 2 min, which
/// not all follow) forget an idle UDP mapping, so the mapping the rendezvous pushes to stays
/// open, and a NAT rebinding reaches the registry within 25 s even when the node looks
/// nobody up.
pub const UDP_REFRESH: Duration = Duration::from_secs(25);

/// Where the rendezvous is and, if pinned, which key it must present.
#[derive(Debug, Clone)]
pub struct RendezvousTarget {
    /// `host:port` as given by the user.
    pub address: String,
    pub pinned: Option<PeerId>,
}

impl std::str::FromStr for RendezvousTarget {
    type Err = String;

    /// `host:port` or `<peer_id>@host:port`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (pinned, address) = match text.split_once('@') {
            Some((id, address)) => (
                Some(
                    id.parse::<PeerId>()
                        .map_err(|e| format!("bad rendezvous peer ID: {e}"))?,
                ),
                address,
            ),
            None => (None, text),
        };
        if !address.contains(':') {
            return Err(format!(
                "rendezvous address {address:?} needs a port (host:port)"
            ));
        }
        Ok(RendezvousTarget {
            address: address.to_string(),
            pinned,
        })
    }
}

/// Why a rendezvous request failed.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    #[error("not connected to the rendezvous")]
    NotConnected,
    #[error("rendezvous did not answer in time")]
    Timeout,
    #[error("rendezvous stream failed: {0}")]
    Stream(String),
    #[error("rendezvous sent a malformed answer: {0}")]
    Malformed(#[from] control::ControlDecodeError),
    #[error("rendezvous refused: {0}")]
    Refused(String),
    #[error("rendezvous answered with an unexpected message")]
    Unexpected,
}

/// Cloneable handle for lookups.
#[derive(Debug, Clone)]
pub struct RendezvousClient {
    session: watch::Receiver<Option<Session>>,
    /// Woken when a request times out: the keeper then drops the connection and reconnects
    /// (a restarted rendezvous forgets connections silently; waiting for QUIC's idle timeout
    /// would leave this node unregistered and its relay allocation lost for 30 s).
    unanswered: Arc<tokio::sync::Notify>,
}

impl RendezvousClient {
    /// Looks `peer` up and has the rendezvous tell it to probe us now (coordinated punching).
    /// `Ok(None)` when the rendezvous does not know `peer`.
    pub async fn lookup_and_announce(
        &self,
        peer: PeerId,
    ) -> Result<Option<PeerRecord>, RendezvousError> {
        let mut watch = self.session.clone();
        let session = tokio::time::timeout(LOOKUP_TIMEOUT, watch.wait_for(|c| c.is_some()))
            .await
            .map_err(|_| RendezvousError::NotConnected)?
            .map_err(|_| RendezvousError::NotConnected)?
            .clone()
            .ok_or(RendezvousError::NotConnected)?;
        let answer = session.request(&Request::Connect { peer }).await;
        if let Err(RendezvousError::Timeout) = answer {
            self.unanswered.notify_one();
        }
        match answer? {
            Response::Found {
                peer: found,
                record,
            } if found == peer => Ok(Some(record)),
            Response::NotFound { peer: missing } if missing == peer => Ok(None),
            Response::Refused { code, message } => {
                Err(RendezvousError::Refused(format!("{code:?}: {message}")))
            }
            _ => Err(RendezvousError::Unexpected),
        }
    }

    /// The current session, if any (closed at shutdown).
    pub fn current(&self) -> Option<Session> {
        self.session.borrow().clone()
    }
}

/// Everything the keeper needs.
pub struct Keeper {
    pub target: RendezvousTarget,
    /// Which transports the node may reach the rendezvous over, and the TLS port's address
    /// (`host:port`; `None`: the rendezvous's host, port 443).
    pub over: RendezvousOver,
    pub tls_address: Option<String>,
    /// The node's identity: signs registrations over UDP, the client certificate over TLS.
    pub identity: Identity,
    pub socket: Arc<NodeSocket>,
    pub local_addrs: Vec<SocketAddr>,
    /// What NAT detection found, once it has: a change is registered at once.
    pub nat: watch::Receiver<NatReport>,
    /// The NAT report the rendezvous has on record for this node (after each registration).
    pub nat_registered: watch::Sender<NatReport>,
    pub outputs: Outputs,
    /// Becomes true when the node shuts down: the keeper closes its connection quietly and ends.
    pub shutdown: watch::Receiver<bool>,
    /// Where messages the rendezvous pushes go (bounded; a full queue drops and logs them).
    pub pushes: mpsc::Sender<Push>,
    /// This node's relayed address, once it has an allocation: a change is registered at once.
    pub relayed: watch::Receiver<Option<SocketAddr>>,
    /// The relay offered with the last registration (fresh credentials with each refresh).
    pub turn: watch::Sender<Option<RelayOffer>>,
    /// The relayed address the rendezvous has on record for this node.
    pub relayed_registered: watch::Sender<Option<SocketAddr>>,
    /// Connections to the rendezvous so far (see [`RelayOffer::session`]).
    pub sessions: u64,
}

/// How the node reaches the TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayTransport {
    /// UDP datagrams from the node's one socket to [`RelayOffer::server`].
    Udp,
    /// TURN over TLS (RFC 8656 section 3.1, ALPN `stun.turn`) to the rendezvous's TLS port
    /// `addr`, its key checked as the control connection checks it (`pinned`: must equal).
    /// Used when the node reaches the rendezvous only over TLS (UDP blocked).
    Tls {
        addr: SocketAddr,
        pinned: Option<PeerId>,
    },
}

/// A TURN server to allocate on and the credentials for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOffer {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
    /// How to reach it: over UDP to `server`, or over TLS to the rendezvous's TLS port.
    pub transport: RelayTransport,
    /// Counts connections to the rendezvous. A new one means the rendezvous restarted or this
    /// node's network changed: either way the old allocation is likely gone (a restarted
    /// built-in server forgot it; a new address is a new 5-tuple), so the relay driver
    /// allocates afresh instead of only taking the new credentials.
    pub session: u64,
}

impl RelayOffer {
    /// Resolves where the offered server is: the built-in one is on the rendezvous's host.
    fn from_offer(
        offer: TurnOffer,
        rendezvous: SocketAddr,
        session: u64,
        transport: RelayTransport,
    ) -> Self {
        let server = match offer.server {
            TurnServerAddr::SameHost { port } => SocketAddr::new(rendezvous.ip(), port),
            TurnServerAddr::Addr(addr) => p2pnat_proto::path::normalize(addr),
        };
        RelayOffer {
            server,
            username: offer.username,
            password: offer.password,
            transport,
            session,
        }
    }
}

/// A successful registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The rendezvous's address on the transport used (QUIC and STUN on UDP, or its TLS port).
    pub server: SocketAddr,
    /// `udp` or `tls` (see [`Session::over`]).
    pub over: &'static str,
    /// This node's address as the rendezvous sees it.
    pub observed: SocketAddr,
    /// Other addresses where the rendezvous answers STUN.
    pub stun_alternates: Vec<SocketAddr>,
    /// How long the registration lives without a refresh.
    pub ttl: Duration,
    /// Where the rendezvous sent an unsolicited datagram from (`p2pnat_proto::nat`).
    pub inbound_probe: Option<SocketAddr>,
    /// The relay offered, if any.
    pub relay: Option<RelayOffer>,
}

/// Starts the keeper. `first` receives the outcome of the first registration attempt.
pub fn spawn(
    keeper: Keeper,
) -> (
    RendezvousClient,
    oneshot::Receiver<Result<Registration, String>>,
) {
    let (session_tx, session_rx) = watch::channel(None);
    let (first_tx, first_rx) = oneshot::channel();
    let unanswered = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(keep(keeper, session_tx, first_tx, unanswered.clone()));
    (
        RendezvousClient {
            session: session_rx,
            unanswered,
        },
        first_rx,
    )
}

async fn resolve(address: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("{address} has no IPv4 address"))
}

/// The rendezvous's UDP and TLS addresses.
async fn addresses(keeper: &Keeper) -> Result<(SocketAddr, SocketAddr), String> {
    let udp = resolve(&keeper.target.address).await?;
    let tls = match &keeper.tls_address {
        Some(address) => resolve(address).await?,
        None => SocketAddr::new(udp.ip(), DEFAULT_TLS_PORT),
    };
    Ok((udp, tls))
}

fn dialing(keeper: &Keeper, (udp, tls): (SocketAddr, SocketAddr)) -> Dialing<'_> {
    Dialing {
        socket: &keeper.socket,
        identity: &keeper.identity,
        pinned: keeper.target.pinned,
        udp,
        tls,
    }
}

async fn connect_and_register(
    keeper: &mut Keeper,
) -> Result<(Session, Option<mpsc::Receiver<Push>>, Registration), String> {
    let addresses = addresses(keeper).await?;
    let (session, pushes) = session::connect(&dialing(keeper, addresses), keeper.over).await?;
    keeper.sessions += 1;
    let registration = register_now(keeper, &session).await?;
    Ok((session, pushes, registration))
}

async fn register(
    session: &Session,
    local_addrs: &[SocketAddr],
    nat: NatReport,
    relayed: Option<SocketAddr>,
    session_count: u64,
    pinned: Option<PeerId>,
) -> Result<Registration, String> {
    let request_message = Request::Register {
        local_addrs: local_addrs.to_vec(),
        nat,
        relayed,
    };
    match session.request(&request_message).await {
        Ok(Response::Registered {
            observed,
            ttl_secs,
            mut stun_alternates,
            inbound_probe,
            turn,
        }) => {
            stun_alternates.truncate(p2pnat_proto::control::MAX_STUN_ALTERNATES);
            let server = session.server();
            let transport = match session {
                Session::Udp(_) => RelayTransport::Udp,
                Session::Tls { .. } => RelayTransport::Tls {
                    addr: server,
                    pinned,
                },
            };
            Ok(Registration {
                server,
                over: session.over(),
                observed,
                stun_alternates,
                ttl: Duration::from_secs(u64::from(ttl_secs.max(3))),
                inbound_probe,
                relay: turn.map(|offer| {
                    RelayOffer::from_offer(offer, server, session_count, transport.clone())
                }),
            })
        }
        Ok(Response::Refused { code, message }) => {
            Err(format!("registration refused ({code:?}): {message}"))
        }
        Ok(_) => Err("unexpected answer to registration".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Starts delivering `session`'s pushes to the node.
fn deliver_pushes(keeper: &Keeper, session: &Session, pushes: Option<mpsc::Receiver<Push>>) {
    match (session, pushes) {
        (Session::Udp(udp), _) => udp.deliver_pushes(keeper.pushes.clone()),
        (Session::Tls { .. }, Some(pushes)) => {
            tokio::spawn(session::forward_tls_pushes(pushes, keeper.pushes.clone()));
        }
        (Session::Tls { .. }, None) => {}
    }
}

/// Registered over TLS: whether QUIC answers now; if so, the registration moves to it.
async fn try_udp_again(keeper: &mut Keeper) -> Option<(Session, Registration)> {
    let addresses = addresses(keeper).await.ok()?;
    let quic = session::connect_udp(&dialing(keeper, addresses))
        .await
        .ok()?;
    keeper.sessions += 1;
    match register_now(keeper, &quic).await {
        Ok(registration) => Some((quic, registration)),
        Err(e) => {
            tracing::debug!("QUIC answered but registering over it failed: {e}");
            quic.close(b"registration failed");
            None
        }
    }
}

async fn keep(
    mut keeper: Keeper,
    session_tx: watch::Sender<Option<Session>>,
    first_tx: oneshot::Sender<Result<Registration, String>>,
    unanswered: Arc<tokio::sync::Notify>,
) {
    let mut first = Some(first_tx);
    let mut backoff = Duration::from_secs(1);
    loop {
        match connect_and_register(&mut keeper).await {
            Ok((mut session, pushes, registration)) => {
                let (observed, ttl) = (registration.observed, registration.ttl);
                tracing::info!(%observed, over = session.over(), "registered with the rendezvous");
                backoff = Duration::from_secs(1);
                // The first success is reported in `ready`; any later one (after a failure,
                // or once `ready` went out without it) as a `registered` event.
                let reported_in_ready = first
                    .take()
                    .is_some_and(|first| first.send(Ok(registration)).is_ok());
                if !reported_in_ready {
                    let over = session.over();
                    keeper
                        .outputs
                        .event(Event::Registered { observed, over })
                        .await;
                }
                let _ = session_tx.send(Some(session.clone()));
                deliver_pushes(&keeper, &session, pushes);
                let retry_udp = keeper.over == RendezvousOver::Auto;
                let reason = loop {
                    let over_tls = matches!(session, Session::Tls { .. });
                    let every = if over_tls {
                        ttl / 3
                    } else {
                        (ttl / 3).min(UDP_REFRESH)
                    };
                    tokio::select! {
                        biased;
                        _ = stopped(&mut keeper.shutdown) => {
                            unregister(&session).await;
                            session.close(b"quit");
                            return;
                        }
                        _ = tokio::time::sleep(every) => {
                            if let Err(e) = refresh(&mut keeper, &session).await {
                                break e;
                            }
                        }
                        Ok(()) = keeper.nat.changed() => {
                            if let Err(e) = refresh(&mut keeper, &session).await {
                                break e;
                            }
                        }
                        Ok(()) = keeper.relayed.changed() => {
                            if let Err(e) = refresh(&mut keeper, &session).await {
                                break e;
                            }
                        }
                        _ = tokio::time::sleep(UDP_RETRY), if over_tls && retry_udp => {
                            if let Some((quic, registration)) = try_udp_again(&mut keeper).await {
                                let observed = registration.observed;
                                tracing::info!(%observed, "UDP answers again: registered over UDP");
                                session = quic;
                                let _ = session_tx.send(Some(session.clone()));
                                deliver_pushes(&keeper, &session, None);
                                let over = session.over();
                                keeper.outputs.event(Event::Registered { observed, over }).await;
                            }
                        }
                        e = session.closed() => break e,
                        _ = unanswered.notified() => {
                            break "a request went unanswered".to_string();
                        }
                    }
                };
                let _ = session_tx.send(None);
                session.close(b"reconnecting");
                if *keeper.shutdown.borrow() {
                    return;
                }
                keeper
                    .outputs
                    .error(
                        "rendezvous",
                        format!("lost the rendezvous ({reason}); reconnecting"),
                    )
                    .await;
            }
            Err(e) => {
                tracing::warn!("rendezvous: {e}");
                match first.take() {
                    Some(first) => {
                        let _ = first.send(Err(e));
                    }
                    None => tracing::debug!("still cannot reach the rendezvous"),
                }
            }
        }
        let stopping = *keeper.shutdown.borrow();
        if session_tx.is_closed() || stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut keeper.shutdown) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Registers again with what the node knows now (NAT report, relayed address) and takes the
/// fresh relay credentials.
async fn refresh(keeper: &mut Keeper, session: &Session) -> Result<(), String> {
    register_now(keeper, session).await.map(|_| ())
}

/// Registers with what the node knows now and publishes what the rendezvous then has on
/// record (NAT report, relayed address) and the relay it offered (only when it changed, so
/// the relay driver is not woken for nothing).
async fn register_now(keeper: &mut Keeper, session: &Session) -> Result<Registration, String> {
    let nat = *keeper.nat.borrow_and_update();
    let relayed = *keeper.relayed.borrow_and_update();
    let registration = register(
        session,
        &keeper.local_addrs,
        nat,
        relayed,
        keeper.sessions,
        keeper.target.pinned,
    )
    .await?;
    keeper.nat_registered.send_replace(nat);
    keeper.relayed_registered.send_replace(relayed);
    if *keeper.turn.borrow() != registration.relay {
        keeper.turn.send_replace(registration.relay.clone());
    }
    Ok(registration)
}

/// How long a quitting node waits for the rendezvous to confirm it unregistered.
pub const UNREGISTER_WAIT: Duration = Duration::from_millis(500);

/// Asks the rendezvous to forget this node now (it quits), waiting at most
/// [`UNREGISTER_WAIT`]: peers then find it gone at once instead of a stale record until the
/// TTL. Best effort: an unanswered request changes nothing else.
pub async fn unregister(session: &Session) {
    match tokio::time::timeout(UNREGISTER_WAIT, session.request(&Request::Unregister)).await {
        Ok(Ok(Response::Unregistered)) => tracing::debug!("unregistered from the rendezvous"),
        Ok(Ok(other)) => tracing::debug!("unregister answered {other:?}"),
        Ok(Err(e)) => tracing::debug!("unregister failed: {e}"),
        Err(_) => tracing::debug!("unregister unanswered within {UNREGISTER_WAIT:?}"),
    }
}

/// Completes once `shutdown` holds true (never, if its sender is gone without saying so).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    loop {
        let stop = *shutdown.borrow_and_update();
        if stop {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
