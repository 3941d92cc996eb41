//! The flood's only protocol code: how one throw-away identity talks to the rendezvous.
//!
//! Today a node registers over a QUIC connection it holds (ALPN `p2pnat-rendezvous/1`, mutual
//! TLS with its ed25519 key, one bidirectional stream per control request, bincode answers), as
//! `rendezvous/tests/flood.rs` does. When registration moves to another transport (control over
//! datagrams), this file is the one to change: the rest of `netsim flood` sees only
//! [`FloodClient`] and the wire-free [`Answer`].

use p2pnat::identity::Identity;
use p2pnat::tls;
use p2pnat_proto::control::{self, Request, Response};
use p2pnat_proto::nat::NatReport;
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

/// An answer, as the flood counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
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

/// One throw-away identity connected to the rendezvous.
pub struct FloodClient {
    connection: quinn::Connection,
    pub id: PeerId,
}

impl FloodClient {
    /// Makes a new identity and connects it to the rendezvous at `to` through `endpoint`.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        to: SocketAddr,
    ) -> Result<FloodClient, ClientError> {
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
        Ok(FloodClient {
            connection,
            id: identity.peer_id(),
        })
    }

    /// Registers with no local addresses and an unknown NAT (what a node knows at first).
    pub async fn register(&self) -> Result<Answer, ClientError> {
        self.request(&Request::Register {
            local_addrs: Vec::new(),
            nat: NatReport::UNKNOWN,
            relayed: None,
        })
        .await
    }

    pub async fn lookup(&self, peer: PeerId) -> Result<Answer, ClientError> {
        self.request(&Request::Lookup { peer }).await
    }

    /// Asks for a punch to `peer`: the rendezvous answers with its record and, within its
    /// limits, pushes a punch request to it.
    pub async fn punch(&self, peer: PeerId) -> Result<Answer, ClientError> {
        self.request(&Request::Connect { peer }).await
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
