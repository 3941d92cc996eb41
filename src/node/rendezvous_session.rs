//! One control session with the rendezvous: control datagrams on its UDP port (section 4.1,
//! [`super::rendezvous_dgram`]), or TLS over TCP on its TLS port (docs/PROTOCOL.md section 7)
//! where UDP is blocked. The keeper ([`super::rendezvous_client`]) chooses; requests, pushes and
//! closing look the same either way.
//!
//! Choosing ([`connect`]): with [`RendezvousOver::Auto`] UDP is tried first, and if the
//! rendezvous has not answered a Hello after [`UDP_GRACE`] a TLS connection is started beside
//! it; the first to complete wins (UDP also wins a tie, and a late UDP answer while TLS is
//! still connecting). A node registered over TLS keeps trying UDP in the background
//! ([`UDP_RETRY`]) and moves back to it when it answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use p2pnat_proto::control::{Push, Request, Response};
use p2pnat_proto::PeerId;
use tokio::sync::mpsc;

use super::rendezvous_client::{RendezvousError, LOOKUP_TIMEOUT};
use super::rendezvous_dgram::DgramSession;
use crate::identity::Identity;
use crate::rendezvous_tls::{RendezvousTls, TlsRequestError};
use crate::socket::NodeSocket;

/// How long UDP may take to answer before TLS is tried beside it.
pub const UDP_GRACE: Duration = Duration::from_secs(1);
/// While registered over TLS, how often UDP is tried again.
pub const UDP_RETRY: Duration = Duration::from_secs(10);
/// The TLS port assumed when none is given: the one web traffic uses, so it passes
/// firewalls that allow nothing else.
pub const DEFAULT_TLS_PORT: u16 = 443;

/// Which transport the node may reach the rendezvous over (`--rendezvous-over`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RendezvousOver {
    /// UDP (control datagrams), and TLS when UDP does not answer within [`UDP_GRACE`].
    #[default]
    Auto,
    Udp,
    Tls,
}

impl std::str::FromStr for RendezvousOver {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(RendezvousOver::Auto),
            "udp" => Ok(RendezvousOver::Udp),
            "tls" => Ok(RendezvousOver::Tls),
            other => Err(format!("{other:?} is not auto, udp or tls")),
        }
    }
}

/// A live control session.
#[derive(Clone)]
pub enum Session {
    Udp(Arc<DgramSession>),
    Tls {
        connection: Arc<RendezvousTls>,
        server: SocketAddr,
    },
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({} to {})", self.over(), self.server())
    }
}

impl Session {
    /// `udp` or `tls`, as the `ready` and `registered` events say it.
    pub fn over(&self) -> &'static str {
        match self {
            Session::Udp(_) => "udp",
            Session::Tls { .. } => "tls",
        }
    }

    /// The rendezvous's address on this transport.
    pub fn server(&self) -> SocketAddr {
        match self {
            Session::Udp(session) => session.server(),
            Session::Tls { server, .. } => *server,
        }
    }

    /// Sends `request` and waits (at most [`LOOKUP_TIMEOUT`]) for the answer.
    pub async fn request(&self, request: &Request) -> Result<Response, RendezvousError> {
        match self {
            Session::Udp(session) => tokio::time::timeout(LOOKUP_TIMEOUT, session.request(request))
                .await
                .map_err(|_| RendezvousError::Timeout)?,
            Session::Tls { connection, .. } => {
                connection.request(request).await.map_err(|e| match e {
                    TlsRequestError::Timeout => RendezvousError::Timeout,
                    TlsRequestError::Malformed(e) => RendezvousError::Malformed(e),
                    other => RendezvousError::Stream(other.to_string()),
                })
            }
        }
    }

    /// Completes when the session has closed; says why.
    pub async fn closed(&self) -> String {
        match self {
            Session::Udp(session) => session.closed().await,
            Session::Tls { connection, .. } => {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                while !connection.is_closed() {
                    tick.tick().await;
                }
                "the TLS connection closed".to_string()
            }
        }
    }

    /// Closes the session (a TLS one closes when its last handle is dropped).
    pub fn close(&self, reason: &'static [u8]) {
        if let Session::Udp(session) = self {
            session.close(&String::from_utf8_lossy(reason));
        }
    }
}

/// Where and how to reach the rendezvous.
pub struct Dialing<'a> {
    pub socket: &'a Arc<NodeSocket>,
    pub identity: &'a Identity,
    pub pinned: Option<PeerId>,
    /// The rendezvous's UDP address and its TLS address.
    pub udp: SocketAddr,
    pub tls: SocketAddr,
}

/// A datagram session with the rendezvous's UDP port, or why not (within [`LOOKUP_TIMEOUT`]).
pub async fn connect_udp(dialing: &Dialing<'_>) -> Result<Session, String> {
    DgramSession::connect(
        dialing.socket.clone(),
        dialing.identity,
        dialing.udp,
        dialing.pinned,
    )
    .await
    .map(Session::Udp)
}

/// A TLS session to the rendezvous's TLS port, and the pushes that arrive on it.
pub async fn connect_tls(dialing: &Dialing<'_>) -> Result<(Session, mpsc::Receiver<Push>), String> {
    let addr = dialing.tls;
    let (connection, pushes) = RendezvousTls::connect(dialing.identity, addr, dialing.pinned)
        .await
        .map_err(|e| format!("rendezvous TLS port {addr}: {e}"))?;
    let session = Session::Tls {
        connection: Arc::new(connection),
        server: addr,
    };
    Ok((session, pushes))
}

/// Connects over the allowed transports (see the module documentation). A TLS session comes
/// with its pushes; a UDP session's are handed over with [`DgramSession::deliver_pushes`].
pub async fn connect(
    dialing: &Dialing<'_>,
    over: RendezvousOver,
) -> Result<(Session, Option<mpsc::Receiver<Push>>), String> {
    match over {
        RendezvousOver::Udp => connect_udp(dialing).await.map(|s| (s, None)),
        RendezvousOver::Tls => connect_tls(dialing).await.map(|(s, p)| (s, Some(p))),
        RendezvousOver::Auto => {
            let quic = connect_udp(dialing);
            tokio::pin!(quic);
            // QUIC alone for the grace period.
            let quic_error = tokio::select! {
                biased;
                result = &mut quic => match result {
                    Ok(session) => return Ok((session, None)),
                    Err(e) => Some(e),
                },
                _ = tokio::time::sleep(UDP_GRACE) => None,
            };
            tracing::info!(
                "no answer over UDP within {UDP_GRACE:?}; trying the rendezvous's TLS port {} too",
                dialing.tls
            );
            let tls = connect_tls(dialing);
            tokio::pin!(tls);
            let (mut quic_failed, mut tls_failed) = (quic_error, None::<String>);
            loop {
                tokio::select! {
                    biased;
                    result = &mut quic, if quic_failed.is_none() => match result {
                        Ok(session) => return Ok((session, None)),
                        Err(e) => quic_failed = Some(e),
                    },
                    result = &mut tls, if tls_failed.is_none() => match result {
                        Ok((session, pushes)) => return Ok((session, Some(pushes))),
                        Err(e) => tls_failed = Some(e),
                    },
                }
                if let (Some(quic), Some(tls)) = (&quic_failed, &tls_failed) {
                    return Err(format!("{quic}; {tls}"));
                }
            }
        }
    }
}

/// Forwards a TLS session's pushes until it closes.
pub async fn forward_tls_pushes(mut from: mpsc::Receiver<Push>, pushes: mpsc::Sender<Push>) {
    while let Some(push) = from.recv().await {
        forward(&pushes, push);
    }
}

fn forward(pushes: &mpsc::Sender<Push>, push: Push) {
    if pushes.try_send(push).is_err() {
        tracing::warn!("too many pushes from the rendezvous at once: one dropped");
    }
}
