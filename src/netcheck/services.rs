//! The rendezvous's services as `p2p-node netcheck` checks them: a registration (over QUIC, or
//! over the TLS port where UDP does not answer) with a throw-away identity, to learn the STUN
//! alternates, the inbound probe and the relay offered; the TLS port's TCP and TLS handshakes;
//! and a TURN allocation over UDP that is released at once.

use std::net::SocketAddr;
use std::time::Duration;

use p2pnat_proto::control::{Request, Response, TurnServerAddr, MAX_STUN_ALTERNATES};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::turn::client::{ClientEvent, ClientOutput, TurnClient, TurnClientConfig};
use p2pnat_proto::PeerId;
use tokio::time::Instant;

use super::udp::fresh_socket;
use super::{millis, Rtt};
use crate::identity::{Identity, IdentityError};
use crate::node::rendezvous_session::{self as session, Dialing};
use crate::tls::TlsSetupError;

/// Why the registration that tells netcheck what the rendezvous offers failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Connect(String),
    #[error("registration failed: {0}")]
    Refused(String),
}

/// What the rendezvous offered to the throw-away registration.
#[derive(Debug, Clone)]
pub struct Offered {
    /// `udp` (QUIC) or `tls`.
    pub over: &'static str,
    /// This host's address as the rendezvous saw the control connection.
    pub observed: SocketAddr,
    pub stun_alternates: Vec<SocketAddr>,
    pub inbound_probe: Option<SocketAddr>,
    /// The TURN server (resolved), if one is offered, and its credentials.
    pub turn: Option<(SocketAddr, String, String)>,
    /// Time of the QUIC or TLS handshake, and of the Register request.
    pub handshake: Duration,
    pub request: Duration,
}

/// Registers with a fresh identity (never the node's own: a running node with the same key would
/// lose its registration when this connection closes) and closes the connection again.
pub async fn register(
    pinned: Option<PeerId>,
    udp: SocketAddr,
    tls_addr: SocketAddr,
    over_udp: bool,
) -> Result<Offered, RegisterError> {
    let identity = Identity::generate()?;
    let std_socket =
        std::net::UdpSocket::bind(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0))?;
    let (socket, _side) = crate::socket::NodeSocket::new(std_socket, None)?;
    // The endpoint is what reads the socket (its driver polls it); control datagrams are
    // routed from there to the session.
    let endpoint = crate::socket::endpoint(socket.clone(), None)?;
    let dialing = Dialing {
        socket: &socket,
        identity: &identity,
        pinned,
        udp,
        tls: tls_addr,
    };
    let started = Instant::now();
    let session = if over_udp {
        session::connect_udp(&dialing).await
    } else {
        session::connect_tls(&dialing).await.map(|(s, _pushes)| s)
    }
    .map_err(RegisterError::Connect)?;
    let handshake = started.elapsed();
    let started = Instant::now();
    let answer = session
        .request(&Request::Register {
            local_addrs: Vec::new(),
            nat: NatReport::UNKNOWN,
            relayed: None,
        })
        .await;
    let request = started.elapsed();
    crate::node::rendezvous_client::unregister(&session).await;
    session.close(b"netcheck done");
    let offered = match answer {
        Ok(Response::Registered {
            observed,
            mut stun_alternates,
            inbound_probe,
            turn,
            ..
        }) => {
            stun_alternates.truncate(MAX_STUN_ALTERNATES);
            Ok(Offered {
                over: session.over(),
                observed: p2pnat_proto::path::normalize(observed),
                stun_alternates,
                inbound_probe,
                turn: turn.map(|offer| {
                    let at = match offer.server {
                        TurnServerAddr::SameHost { port } => SocketAddr::new(udp.ip(), port),
                        TurnServerAddr::Addr(addr) => p2pnat_proto::path::normalize(addr),
                    };
                    (at, offer.username, offer.password)
                }),
                handshake,
                request,
            })
        }
        Ok(Response::Refused { code, message }) => {
            Err(RegisterError::Refused(format!("{code:?}: {message}")))
        }
        Ok(_) => Err(RegisterError::Refused("unexpected answer".into())),
        Err(e) => Err(RegisterError::Refused(e.to_string())),
    };
    drop(session);
    endpoint.close(0u32.into(), b"netcheck done");
    let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
    offered
}

/// The TLS port: a TCP connect (one round trip) and then a full TLS handshake (ALPN
/// `stun.turn`, no client certificate, the key checked as pinned).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsCheck {
    pub address: SocketAddr,
    pub reachable: bool,
    /// TCP connect time (one round trip).
    pub rtt_ms: Option<f64>,
    /// TCP connect plus TLS 1.3 handshake.
    pub handshake_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn check_tls(addr: SocketAddr, pinned: Option<PeerId>) -> TlsCheck {
    let mut check = TlsCheck {
        address: addr,
        reachable: false,
        rtt_ms: None,
        handshake_ms: None,
        error: None,
    };
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            check.rtt_ms = Some(millis(started.elapsed()));
            drop(stream);
        }
        Ok(Err(e)) => {
            check.error = Some(format!("TCP connect: {e}"));
            return check;
        }
        Err(_) => {
            check.error = Some("TCP connect timed out".into());
            return check;
        }
    }
    let config = match crate::relay_stream::client_config(pinned) {
        Ok(config) => config,
        Err(e) => {
            check.error = Some(e.to_string());
            return check;
        }
    };
    let started = Instant::now();
    match crate::rendezvous_tls::dial(config, addr, pinned).await {
        Ok((stream, _)) => {
            check.reachable = true;
            check.handshake_ms = Some(millis(started.elapsed()));
            drop(stream);
        }
        Err(e) => check.error = Some(e.to_string()),
    }
    check
}

/// A TURN allocation over UDP, released as soon as it exists.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RelayCheck {
    pub server: SocketAddr,
    pub reachable: bool,
    /// From the first Allocate to the server's first answer (its 401 challenge).
    pub rtt_ms: Option<f64>,
    /// Until the allocation existed (two round trips: challenge, then the allocation).
    pub allocate_ms: Option<f64>,
    pub relayed: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long the allocation may take before it counts as failed.
pub const ALLOCATE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn check_relay(server: SocketAddr, username: String, password: String) -> RelayCheck {
    let mut check = RelayCheck {
        server,
        reachable: false,
        rtt_ms: None,
        allocate_ms: None,
        relayed: None,
        error: None,
    };
    let socket = match fresh_socket(server.ip()).await {
        Ok(socket) => socket,
        Err(e) => {
            check.error = Some(e.to_string());
            return check;
        }
    };
    let config = TurnClientConfig {
        max_attempts: 5,
        ..TurnClientConfig::default()
    };
    let started = Instant::now();
    let give_up = started + ALLOCATE_TIMEOUT;
    let mut seed = [0u8; 8];
    getrandom::getrandom(&mut seed).expect("the OS random source works");
    let mut client = TurnClient::new(
        config,
        server,
        username,
        password,
        started.into_std(),
        u64::from_le_bytes(seed),
    );
    let mut buf = [0u8; 1500];
    loop {
        match client.poll_output(Instant::now().into_std()) {
            ClientOutput::Transmit(bytes) => {
                if let Err(e) = socket.send_to(&bytes, server).await {
                    tracing::debug!(%server, "TURN request not sent: {e}");
                }
            }
            ClientOutput::Event(ClientEvent::Allocated { relayed, .. }) => {
                check.reachable = true;
                check.allocate_ms = Some(millis(started.elapsed()));
                check.relayed = Some(relayed);
                client.close(Instant::now().into_std());
            }
            ClientOutput::Event(ClientEvent::AllocationFailed { reason, .. }) => {
                check.error = Some(format!("allocation failed: {reason}"));
                client.close(Instant::now().into_std());
            }
            ClientOutput::Event(_) => {}
            ClientOutput::Closed => return check,
            ClientOutput::Timeout(at) => {
                let at = Instant::from_std(at).min(give_up);
                if Instant::now() >= give_up {
                    check
                        .error
                        .get_or_insert_with(|| "no answer in time".into());
                    client.close(Instant::now().into_std());
                    continue;
                }
                let received = tokio::time::timeout_at(at, socket.recv_from(&mut buf)).await;
                let Ok(Ok((len, from))) = received else {
                    continue;
                };
                if p2pnat_proto::path::normalize(from) != server {
                    tracing::debug!(%from, "datagram from another address than the TURN server dropped");
                    continue;
                }
                check
                    .rtt_ms
                    .get_or_insert_with(|| millis(started.elapsed()));
                if let Err(e) = client.handle_datagram(Instant::now().into_std(), &buf[..len]) {
                    tracing::debug!(%server, "TURN datagram dropped: {e}");
                }
            }
        }
    }
}

/// The round trip of the registration, for the report.
pub fn registration_rtt(offered: &Offered) -> Rtt {
    Rtt {
        handshake_ms: millis(offered.handshake),
        request_ms: millis(offered.request),
    }
}
