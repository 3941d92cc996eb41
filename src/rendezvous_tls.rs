//! The rendezvous over TCP and TLS, for networks that drop UDP (docs/PROTOCOL.md section 7).
//!
//! - [`RendezvousTls::connect`]: the node's control connection (ALPN [`ALPN_RENDEZVOUS_TLS`]):
//!   TLS 1.3 with the node's identity certificate as client certificate (the rendezvous takes
//!   the node's peer ID from it, exactly as over QUIC), the rendezvous's key checked as the QUIC
//!   client checks it (pinned: must equal; unpinned: any ed25519 key). Requests and responses
//!   are matched by request id ([`p2pnat_proto::control_stream`]); pushes arrive on a bounded
//!   channel.
//! - [`server_configs`]: the rendezvous's TLS configurations for its TLS port, with its
//!   identity certificate: one for the control ALPN (client certificate required) and one for
//!   TURN over TLS (client certificate optional: TURN clients such as coturn's present none).
//! - [`peer_id_of_server_connection`]: the client's peer ID from a rustls server connection, the
//!   TLS-over-TCP counterpart of [`crate::tls::peer_id_of`].
//!
//! The node's choice between QUIC and this connection is `crate::node::rendezvous_session`'s;
//! its TURN client over TLS is `crate::relay_stream`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pnat_proto::control::{self, Push, Request, Response};
use p2pnat_proto::control_stream::{encode_frame, FrameHeader, FrameKind, FRAME_HEADER};
use p2pnat_proto::PeerId;
use rustls::pki_types::ServerName;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::identity::Identity;
pub use crate::tls::ALPN_RENDEZVOUS_TLS;
use crate::tls::{
    certificate, peer_id_of_certificate, provider, PeerClientVerifier, PeerServerVerifier,
    TlsSetupError, UNPINNED_SERVER_NAME,
};

/// ALPN of TURN over TLS (RFC 7443). A client offering no ALPN also gets TURN.
pub const ALPN_TURN: &[u8] = b"stun.turn";
/// Requests in flight on one connection at most (as over QUIC: 16 concurrent streams).
pub const MAX_IN_FLIGHT: usize = 16;
/// Pushes received and not yet taken by the caller; more are dropped (logged).
pub const PUSH_QUEUE: usize = 64;
/// How long the TCP connect and TLS handshake may take together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request waits for its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The rendezvous's TLS configurations for its TLS port.
#[derive(Debug, Clone)]
pub struct ServerConfigs {
    /// For the control ALPN: a client certificate (an ed25519 identity) is required.
    pub control: Arc<rustls::ServerConfig>,
    /// For TURN over TLS (ALPN `stun.turn` or none): a client certificate is optional.
    pub turn: Arc<rustls::ServerConfig>,
}

/// Accepting side of the TLS port: a client certificate is checked like QUIC's when given, and
/// not asked to be given.
#[derive(Debug)]
struct OptionalClientCert(PeerClientVerifier);

impl ClientCertVerifier for OptionalClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS port's configurations, both presenting `identity`'s certificate (TLS 1.3 only, as
/// over QUIC; the rendezvous's key is an ed25519 key, so a TURN client must support ed25519
/// signatures, which OpenSSL 1.1.1 and later do).
pub fn server_configs(identity: &Identity) -> Result<ServerConfigs, TlsSetupError> {
    let make = |mandatory: bool, alpn: &[u8]| -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        let provider = provider();
        let (cert, key) = certificate(identity)?;
        let verifier = PeerClientVerifier {
            provider: provider.clone(),
        };
        let verifier: Arc<dyn ClientCertVerifier> = if mandatory {
            Arc::new(verifier)
        } else {
            Arc::new(OptionalClientCert(verifier))
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(config))
    };
    Ok(ServerConfigs {
        control: make(true, ALPN_RENDEZVOUS_TLS)?,
        turn: make(false, ALPN_TURN)?,
    })
}

/// The authenticated peer ID of a TLS server connection's client, if it presented an ed25519
/// certificate (checked during the handshake by the verifiers of [`server_configs`]).
pub fn peer_id_of_server_connection(connection: &rustls::ServerConnection) -> Option<PeerId> {
    connection
        .peer_certificates()?
        .first()
        .and_then(|cert| peer_id_of_certificate(cert))
}

/// TLS for the node's control connection: the node's identity as client certificate; the
/// rendezvous's key must be `pinned` when given (as over QUIC).
pub fn client_config(
    identity: &Identity,
    pinned: Option<PeerId>,
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let provider = provider();
    let (cert, key) = certificate(identity)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerServerVerifier {
            provider,
            accept_any_key: pinned.is_none(),
        }))
        .with_client_auth_cert(vec![cert], key)?;
    config.alpn_protocols = vec![ALPN_RENDEZVOUS_TLS.to_vec()];
    Ok(Arc::new(config))
}

/// Why a TCP connection and TLS handshake to the rendezvous's TLS port failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsDialError {
    #[error("{0:?} is not a usable TLS server name")]
    ServerName(String),
    #[error("TCP connection to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    Timeout(SocketAddr),
}

/// Connects TCP to `addr` (no Nagle) and runs the TLS handshake with `config`, naming the
/// server as the QUIC client does (its peer ID when `pinned`), all within
/// [`CONNECT_TIMEOUT`]. Returns the stream and the local TCP address. Used by the control
/// connection and by the node's TURN client over TLS (`crate::relay_stream`).
pub async fn dial(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    pinned: Option<PeerId>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, SocketAddr), TlsDialError> {
    let name = pinned.map_or(UNPINNED_SERVER_NAME.to_string(), |id| id.to_text());
    let name = ServerName::try_from(name.clone()).map_err(|_| TlsDialError::ServerName(name))?;
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| TlsDialError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let local = tcp
            .local_addr()
            .map_err(|source| TlsDialError::Connect { addr, source })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| TlsDialError::Handshake { addr, source })?;
        Ok((tls, local))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| TlsDialError::Timeout(addr))?
}

/// Why the control connection over TLS could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsConnectError {
    #[error(transparent)]
    Setup(#[from] TlsSetupError),
    #[error(transparent)]
    Dial(#[from] TlsDialError),
}

/// Why a request over the TLS control connection failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsRequestError {
    #[error("the connection to the rendezvous is closed")]
    Closed,
    #[error("{MAX_IN_FLIGHT} requests already in flight")]
    Busy,
    #[error("the rendezvous did not answer in time")]
    Timeout,
    #[error("the rendezvous sent a malformed answer: {0}")]
    Malformed(#[from] control::ControlDecodeError),
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Vec<u8>>>>>;

/// A control connection to the rendezvous over TLS. Dropping it closes the connection.
pub struct RendezvousTls {
    frames: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: Mutex<u32>,
    local: SocketAddr,
    rendezvous: Option<PeerId>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RendezvousTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RendezvousTls {
    /// Connects to the rendezvous's TLS port at `addr` as `identity`. Returns the connection
    /// and the pushes the rendezvous sends on it (at most [`PUSH_QUEUE`] waiting; malformed
    /// ones are logged and dropped).
    pub async fn connect(
        identity: &Identity,
        addr: SocketAddr,
        pinned: Option<PeerId>,
    ) -> Result<(Self, mpsc::Receiver<Push>), TlsConnectError> {
        let config = client_config(identity, pinned)?;
        let (tls, local) = dial(config, addr, pinned).await?;
        let rendezvous = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| peer_id_of_certificate(cert));
        let (frames, frames_rx) = mpsc::channel(MAX_IN_FLIGHT);
        let (push_tx, push_rx) = mpsc::channel(PUSH_QUEUE);
        let pending: Pending = Arc::default();
        let task = tokio::spawn(run(tls, frames_rx, push_tx, pending.clone()));
        let connection = RendezvousTls {
            frames,
            pending,
            next_id: Mutex::new(1),
            local,
            rendezvous,
            task,
        };
        Ok((connection, push_rx))
    }

    /// The local TCP address of the connection (the rendezvous observes its NAT mapping).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The rendezvous's peer ID, from its certificate.
    pub fn rendezvous_id(&self) -> Option<PeerId> {
        self.rendezvous
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }

    /// Sends `request` and waits (at most [`REQUEST_TIMEOUT`]) for its response.
    pub async fn request(&self, request: &Request) -> Result<Response, TlsRequestError> {
        let id = {
            let mut next = self.next_id.lock().expect("id lock");
            let id = *next;
            *next = next.wrapping_add(1).max(1);
            id
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            if pending.len() >= MAX_IN_FLIGHT {
                return Err(TlsRequestError::Busy);
            }
            pending.insert(id, tx);
        }
        let frame = encode_frame(FrameKind::Request, id, &control::encode(request));
        let exchange = async {
            self.frames
                .send(frame)
                .await
                .map_err(|_| TlsRequestError::Closed)?;
            let payload = rx.await.map_err(|_| TlsRequestError::Closed)?;
            Ok(control::decode::<Response>(&payload)?)
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange).await;
        self.pending.lock().expect("pending lock").remove(&id);
        answer.map_err(|_| TlsRequestError::Timeout)?
    }
}

/// Reads one frame: the header is checked before the payload (at most
/// `MAX_CONTROL_MESSAGE` bytes) is read. `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> std::io::Result<Option<(FrameHeader, Vec<u8>)>> {
    let mut header = [0u8; FRAME_HEADER];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    reader.read_exact(&mut header[1..]).await?;
    let header = FrameHeader::parse(&header)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut payload = vec![0u8; header.len];
    reader.read_exact(&mut payload).await?;
    Ok(Some((header, payload)))
}

/// The connection's task: writes request frames, routes responses to their requests and
/// pushes to the push channel, until either side closes.
async fn run(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    mut frames: mpsc::Receiver<Vec<u8>>,
    pushes: mpsc::Sender<Push>,
    pending: Pending,
) {
    let (mut reader, mut writer) = tokio::io::split(tls);
    let write = async {
        while let Some(frame) = frames.recv().await {
            if let Err(e) = writer.write_all(&frame).await {
                return format!("write failed: {e}");
            }
        }
        let _ = writer.shutdown().await;
        "closed locally".to_string()
    };
    let read = async {
        loop {
            let (header, payload) = match read_frame(&mut reader).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return "closed by the rendezvous".to_string(),
                Err(e) => return format!("read failed: {e}"),
            };
            match header.kind {
                FrameKind::Response => {
                    let waiter = pending.lock().expect("pending lock").remove(&header.id);
                    match waiter {
                        Some(waiter) => {
                            let _ = waiter.send(payload);
                        }
                        None => tracing::debug!(id = header.id, "response to no request dropped"),
                    }
                }
                FrameKind::Push => match control::decode::<Push>(&payload) {
                    Ok(push) => {
                        if pushes.try_send(push).is_err() {
                            tracing::warn!("push from the rendezvous dropped: queue full");
                        }
                    }
                    Err(e) => tracing::warn!("malformed push dropped: {e}"),
                },
                FrameKind::Request => return "the rendezvous sent a request".to_string(),
            }
        }
    };
    let reason = tokio::select! {
        reason = read => reason,
        reason = write => reason,
    };
    tracing::debug!("rendezvous TLS connection ended: {reason}");
    pending.lock().expect("pending lock").clear();
}
