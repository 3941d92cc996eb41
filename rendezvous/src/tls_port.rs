//! The TLS port (`--tls-listen`, default: the `--listen` IP, port 443): the rendezvous for
//! networks that drop UDP. One TCP listener; the TLS ClientHello's ALPN picks the service:
//!
//! - `p2pnat-rendezvous-tls/1` (offered at all): the control protocol (`control_tls`); the
//!   handshake requires a client certificate, and the peer ID comes from it as over QUIC;
//! - `stun.turn` (RFC 7443) or no ALPN: TURN over TLS to the built-in TURN server
//!   (`turn_stream`); a client certificate is optional;
//! - anything else: the handshake fails (no common protocol).
//!
//! Limits: each accepted connection takes a slot of the shared [`ConnectionLimiter`] (in all
//! and per source IP) before its handshake; the handshake must end within
//! `handshake_timeout`. A refused connection is closed at once (refusals logged once per IP per
//! interval). Handshake failures (garbage, wrong ALPN, no certificate) are logged at debug
//! level and close that connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2pnat::rendezvous_tls::{peer_id_of_server_connection, ServerConfigs, ALPN_RENDEZVOUS_TLS};
use p2pnat_proto::path::normalize;
use p2pnat_proto::turn::server::{Client, ClientTransport};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::limits::ConnectionLimiter;
use crate::metrics::{Dropped, METRICS};
use crate::server::State;
use crate::turn_stream::{StreamLimits, StreamLink};

/// The TLS port's settings.
#[derive(Debug, Clone)]
pub struct TlsPortSettings {
    pub listen: SocketAddr,
    /// Whether failing to bind stops the rendezvous (the address was given) or only turns the
    /// TLS port off with an error in the log (the default address, e.g. port 443 unprivileged).
    pub required: bool,
    /// Most TCP connections at once (TLS port and TURN over TCP together; default 4,096).
    pub max_connections: usize,
    /// Most TCP connections at once from one source IP (default 16).
    pub max_per_ip: usize,
    /// The TLS handshake must end within this (default 10 s).
    pub handshake_timeout: Duration,
    /// Per-connection outbound bytes and idle timeout.
    pub stream: StreamLimits,
}

/// Why the TLS port could not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsPortError {
    #[error("cannot bind the TLS port {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the TLS port; `Ok(None)` when the default address cannot be bound (logged).
pub fn bind(settings: &TlsPortSettings) -> Result<Option<TcpListener>, TlsPortError> {
    let bound = std::net::TcpListener::bind(settings.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std);
    match bound {
        Ok(listener) => Ok(Some(listener)),
        Err(source) if !settings.required => {
            tracing::error!(addr = %settings.listen, "TLS port off: cannot bind: {source}");
            Ok(None)
        }
        Err(source) => Err(TlsPortError::Bind {
            addr: settings.listen,
            source,
        }),
    }
}

/// What a TLS connection needs besides its stream.
#[derive(Clone)]
pub struct TlsPort {
    pub configs: ServerConfigs,
    pub limiter: Arc<ConnectionLimiter>,
    pub state: Arc<State>,
    /// The built-in TURN server (`None`: TURN over TLS is refused).
    pub turn: Option<StreamLink>,
    pub settings: TlsPortSettings,
}

impl TlsPort {
    /// Accepts connections forever.
    pub async fn run(self, listener: TcpListener) {
        let _alive = crate::http::loop_guard("TLS port");
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::debug!("TLS port accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let from = normalize(from);
            let Ok(permit) = self.limiter.admit(Instant::now().into_std(), from.ip()) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(self.clone().serve(stream, from, permit));
        }
    }

    async fn serve<P: Send + 'static>(self, stream: TcpStream, from: SocketAddr, permit: P) {
        let configs = self.configs.clone();
        let handshake = async move {
            let start =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                    .await?;
            let wants_control = start
                .client_hello()
                .alpn()
                .is_some_and(|mut offered| offered.any(|p| p == ALPN_RENDEZVOUS_TLS));
            let config = if wants_control {
                configs.control
            } else {
                configs.turn
            };
            start.into_stream(config).await
        };
        let tls = match tokio::time::timeout(self.settings.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                METRICS.count_drop(Dropped::TlsAuthFailure);
                tracing::debug!(%from, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                METRICS.count_drop(Dropped::TlsAuthFailure);
                tracing::debug!(%from, "TLS handshake timed out");
                return;
            }
        };
        let connection = tls.get_ref().1;
        if connection.alpn_protocol() == Some(ALPN_RENDEZVOUS_TLS) {
            let Some(peer) = peer_id_of_server_connection(connection) else {
                METRICS.count_drop(Dropped::TlsAuthFailure);
                tracing::debug!(%from, "control connection without a peer identity closed");
                return;
            };
            let _permit = permit;
            crate::control_tls::serve(tls, peer, from, self.state, self.settings.stream).await;
        } else if let Some(turn) = self.turn {
            let client = Client {
                transport: ClientTransport::Tls,
                addr: from,
            };
            turn.serve(tls, client, permit).await;
        } else {
            tracing::debug!(%from, "TURN over TLS refused: the built-in TURN server is off");
        }
    }
}
