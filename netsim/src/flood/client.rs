//! The flood's protocol code: how one throw-away identity talks to the rendezvous, over
//! either transport the rendezvous serves on its UDP port:
//!
//! - control datagrams (docs/PROTOCOL.md section 4.1), as nodes register now: a Hello for a
//!   cookie, the signed Register, then requests under the session ([`super::dgram`] drives
//!   the `p2pnat_proto::rv::client` machines);
//! - the old QUIC control (ALPN `p2pnat-rendezvous/1`, mutual TLS with the identity's ed25519
//!   key, one bidirectional stream per request), which the rendezvous still serves for nodes
//!   of the previous release: a held connection per identity, as `rendezvous/tests/flood.rs`
//!   does.
//!
//! The rest of `netsim flood` sees only [`FloodClient`] and the wire-free [`Answer`].

use super::dgram::{self, DgramSocket};
use p2pnat::identity::Identity;
use p2pnat::tls;
use p2pnat_proto::control::{self, Request, Response};
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::rv::client::{ClientConfig, Outcome};
use p2pnat_proto::rv::wire;
use p2pnat_proto::PeerId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a handshake or for the answer to one request: the rendezvous's idle
/// timeout (30 s). Under the junk flood a datagram may be dropped by the rendezvous's full
/// socket buffer and QUIC's retransmissions back off, so an answer can take seconds; one
/// that has not come when the connection would be dropped anyway has failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Keep-alive interval of the held connection (a node's: the flood may outlast the
/// rendezvous's idle timeout).
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Why a flooding client could not do what it tried.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("identity: {0}")]
    Identity(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    #[error("QUIC connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed or the rendezvous refused the connection (`--max-connections`).
    #[error("QUIC handshake: {0}")]
    Handshake(quinn::ConnectionError),
    #[error("request stream: {0}")]
    Stream(String),
    #[error("undecodable answer: {0}")]
    Decode(#[from] control::ControlDecodeError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// How an identity talks to the rendezvous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Transport {
    /// Control datagrams (docs/PROTOCOL.md section 4.1).
    Dgram,
    /// A held QUIC connection (the old control carrier).
    Quic,
}

/// An answer, as the flood counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Over datagrams, a request under a session the rendezvous does not hold (an identity
    /// whose registration was refused has none): answered `Unknown`, 22 bytes, and nothing
    /// else done.
    UnknownSession,
    /// Registered; the address the rendezvous saw the client at.
    Registered {
        observed: SocketAddr,
    },
    Found,
    NotFound,
    /// Refused, with the refusal code's name (`RateLimited`, `RegistryFull`, ...).
    Refused(String),
}

impl From<Response> for Answer {
    fn from(response: Response) -> Answer {
        match response {
            Response::Registered { observed, .. } => Answer::Registered { observed },
            Response::Found { .. } => Answer::Found,
            Response::NotFound { .. } => Answer::NotFound,
            Response::Refused { code, .. } => Answer::Refused(format!("{code:?}")),
            // The flood never unregisters: counted apart from every refusal code.
            Response::Unregistered => Answer::Refused("unexpected Unregistered".to_string()),
        }
    }
}

/// A fresh random identity's peer ID (for lookups of nobody).
pub fn random_peer() -> Result<PeerId, ClientError> {
    Ok(Identity::generate()
        .map_err(|e| ClientError::Identity(e.to_string()))?
        .peer_id())
}

/// A client endpoint on `socket` (must be called inside a tokio runtime). Several clients may
/// share one endpoint (one source address and port, several connections).
pub fn endpoint(socket: std::net::UdpSocket) -> Result<quinn::Endpoint, ClientError> {
    let mut config = quinn::EndpointConfig::default();
    // The rendezvous splits STUN from QUIC by content: QUIC's fixed bit must stay set.
    config.grease_quic_bit(false);
    let runtime = quinn::default_runtime().ok_or_else(|| {
        ClientError::Endpoint(std::io::Error::other("no tokio runtime for quinn"))
    })?;
    quinn::Endpoint::new(config, None, socket, runtime).map_err(ClientError::Endpoint)
}

/// One throw-away identity that reached the rendezvous (a QUIC handshake, or a Hello
/// answered).
pub enum FloodClient {
    Quic(QuicClient),
    Dgram(DgramClient),
}

impl FloodClient {
    pub fn transport(&self) -> Transport {
        match self {
            FloodClient::Quic(_) => Transport::Quic,
            FloodClient::Dgram(_) => Transport::Dgram,
        }
    }

    /// Registers with no local addresses and an unknown NAT (what a node knows at first).
    pub async fn register(&self) -> Result<Answer, ClientError> {
        self.request(Request::Register {
            local_addrs: Vec::new(),
            nat: NatReport::UNKNOWN,
            relayed: None,
        })
        .await
    }

    pub async fn lookup(&self, peer: PeerId) -> Result<Answer, ClientError> {
        self.request(Request::Lookup { peer }).await
    }

    /// Asks for a punch to `peer`: the rendezvous answers with its record and, within its
    /// limits, pushes a punch request to it.
    pub async fn punch(&self, peer: PeerId) -> Result<Answer, ClientError> {
        self.request(Request::Connect { peer }).await
    }

    async fn request(&self, request: Request) -> Result<Answer, ClientError> {
        match self {
            FloodClient::Quic(c) => c.request(&request).await,
            FloodClient::Dgram(c) => c.request(request).await,
        }
    }
}

/// An identity over control datagrams: machine `index` of a shared [`DgramSocket`].
pub struct DgramClient {
    socket: Arc<DgramSocket>,
    index: usize,
    id: PeerId,
}

impl DgramClient {
    /// Makes a new identity on `socket` and asks the rendezvous for a cookie (a Hello), as a
    /// node does first.
    pub async fn connect(socket: Arc<DgramSocket>) -> Result<DgramClient, ClientError> {
        Self::connect_with(socket, dgram::flood_config()).await
    }

    /// [`Self::connect`] with other timers.
    pub async fn connect_with(
        socket: Arc<DgramSocket>,
        config: ClientConfig,
    ) -> Result<DgramClient, ClientError> {
        let identity = Identity::generate().map_err(|e| ClientError::Identity(e.to_string()))?;
        let index = socket.add(config, &identity);
        match socket.run(index, |c, now| c.hello(now)).await? {
            Outcome::Cookie => Ok(DgramClient {
                socket,
                index,
                id: identity.peer_id(),
            }),
            other => Err(ClientError::Stream(format!("Hello answered {other:?}"))),
        }
    }

    pub fn peer(&self) -> PeerId {
        self.id
    }

    /// `request` under the session; without one (refused), the same request under a session
    /// nobody holds, which the rendezvous must answer `Unknown` and do nothing for.
    async fn request(&self, request: Request) -> Result<Answer, ClientError> {
        let registering = matches!(request, Request::Register { .. });
        if !registering && !self.socket.is_registered(self.index) {
            return self.without_session(&request).await;
        }
        match self
            .socket
            .run(self.index, |c, now| c.request(now, request))
            .await?
        {
            Outcome::Response(response) => Ok(Answer::from(response)),
            Outcome::UnknownSession => Ok(Answer::UnknownSession),
            Outcome::TimedOut => Err(ClientError::Timeout(REQUEST_TIMEOUT)),
            Outcome::Cookie => Err(ClientError::Stream("a request answered by a Cookie".into())),
        }
    }

    async fn without_session(&self, request: &Request) -> Result<Answer, ClientError> {
        let datagram = no_session_request(request)?;
        match self.socket.raw(datagram, REQUEST_TIMEOUT).await {
            Some(answer) if answer.get(5) == Some(&wire::KIND_UNKNOWN) => {
                Ok(Answer::UnknownSession)
            }
            Some(answer) => Err(ClientError::Stream(format!(
                "a request under no session answered by kind {:#04x}, {} bytes",
                answer.get(5).copied().unwrap_or(0),
                answer.len()
            ))),
            None => Err(ClientError::Timeout(REQUEST_TIMEOUT)),
        }
    }
}

/// `request` as a Request datagram of a random peer under a random session, tagged under a
/// random key: what an identity without a session (or an attacker) can send.
pub fn no_session_request(request: &Request) -> Result<Vec<u8>, ClientError> {
    let mut random = [0u8; 8 + 32 + 8 + 16];
    getrandom::getrandom(&mut random).map_err(|e| ClientError::Identity(e.to_string()))?;
    let id: wire::Id = random[..8].try_into().expect("8 bytes");
    let key: wire::SessionKey = random[48..].try_into().expect("16 bytes");
    Ok(wire::Builder::new(wire::KIND_REQUEST, &id)
        .bytes(&random[8..40])
        .bytes(&random[40..48])
        .u64(1)
        .body(&control::encode(request))
        .tagged(&key))
}

/// One throw-away identity over a held QUIC connection.
pub struct QuicClient {
    connection: quinn::Connection,
    pub id: PeerId,
}

impl QuicClient {
    /// Makes a new identity and connects it to the rendezvous at `to` through `endpoint`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        to: SocketAddr,
    ) -> Result<QuicClient, ClientError> {
        let identity = Identity::generate().map_err(|e| ClientError::Identity(e.to_string()))?;
        let crypto = tls::client_crypto(&identity, tls::ALPN_RENDEZVOUS, true)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(crypto);
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(KEEP_ALIVE));
        config.transport_config(Arc::new(transport));
        let connecting = endpoint.connect_with(config, to, tls::UNPINNED_SERVER_NAME)?;
        let connection = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))?
            .map_err(ClientError::Handshake)?;
        Ok(QuicClient {
            connection,
            id: identity.peer_id(),
        })
    }

    async fn request(&self, request: &Request) -> Result<Answer, ClientError> {
        let exchange = async {
            let stream = |e: &dyn std::fmt::Display| ClientError::Stream(e.to_string());
            let (mut send, mut recv) = self.connection.open_bi().await.map_err(|e| stream(&e))?;
            send.write_all(&control::encode(request))
                .await
                .map_err(|e| stream(&e))?;
            send.finish().map_err(|e| stream(&e))?;
            let bytes = recv
                .read_to_end(control::MAX_CONTROL_MESSAGE)
                .await
                .map_err(|e| stream(&e))?;
            Ok(Answer::from(control::decode::<Response>(&bytes)?))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))?
    }
}
