//! Control requests, whatever carried them: QUIC (`control_quic`) or TLS over TCP
//! (`control_tls`). A node registered over one transport is found by, pushed to and
//! punch-coordinated with nodes on the other exactly as with its own kind.
//!
//! Each connection is an [`Owner`] once it registers: the registry's record of the peer points
//! at it, pushes go to it, and its current remote address is the peer's `observed` address
//! (quinn follows a migrating QUIC client; a TCP connection's address never changes).

use std::net::SocketAddr;
use std::time::Duration;

use p2pnat_proto::control::{
    self, PeerRecord, Push, RefusalCode, RegisteredOver, Request, Response,
};
use p2pnat_proto::path::normalize;
use p2pnat_proto::PeerId;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::server::State;
use crate::turn_stream::StreamOut;

/// How to reach a connection: to read its address and push to it.
#[derive(Clone)]
pub enum Link {
    Quic(quinn::Connection),
    /// A TLS control connection: its fixed remote address and its bounded queue of encoded
    /// push frames (see `control_tls`).
    Tls {
        remote: SocketAddr,
        pushes: std::sync::Arc<StreamOut>,
    },
}

/// A node's control connection, with a number unique among all connections of this run.
#[derive(Clone)]
pub struct Owner {
    pub conn: u64,
    pub link: Link,
}

impl Owner {
    /// Where the connection comes from now.
    pub fn remote(&self) -> SocketAddr {
        match &self.link {
            Link::Quic(connection) => normalize(connection.remote_address()),
            Link::Tls { remote, .. } => *remote,
        }
    }

    pub fn over(&self) -> RegisteredOver {
        match self.link {
            Link::Quic(_) => RegisteredOver::Quic,
            Link::Tls { .. } => RegisteredOver::Tls,
        }
    }

    fn is_open(&self) -> bool {
        match &self.link {
            Link::Quic(connection) => connection.close_reason().is_none(),
            Link::Tls { pushes, .. } => !pushes.is_closed(),
        }
    }

    /// Sends `push` without waiting; failures are logged (the target may have just gone away)
    /// and never affect the requester.
    fn push(&self, push: Push) {
        match &self.link {
            Link::Quic(connection) => {
                tokio::spawn(push_quic(connection.clone(), push).in_current_span());
            }
            Link::Tls { pushes, .. } => {
                if crate::control_tls::queue_push(pushes, &push) {
                    tracing::debug!("punch request pushed (TLS)");
                } else {
                    tracing::debug!("punch request not pushed: the TLS connection's queue is full");
                }
            }
        }
    }
}

/// Sends one push message on a new unidirectional QUIC stream.
async fn push_quic(target: quinn::Connection, push: Push) {
    let send = async {
        let mut stream = target.open_uni().await?;
        stream.write_all(&control::encode(&push)).await?;
        stream.finish()?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    };
    match tokio::time::timeout(Duration::from_secs(5), send).await {
        Ok(Ok(())) => tracing::debug!("punch request pushed"),
        Ok(Err(e)) => tracing::debug!("punch request not pushed: {e}"),
        Err(_) => tracing::debug!("punch request not pushed: timed out"),
    }
}

impl State {
    /// `record` of `peer` with `observed` taken from its registration connection as it is now.
    fn fresh(&self, peer: &PeerId, mut record: PeerRecord) -> PeerRecord {
        if let Some(owner) = self.owners.lock().expect("owners lock").get(peer) {
            if owner.is_open() {
                record.observed = owner.remote();
            }
        }
        record
    }

    /// The connection `me` of `peer` closed: its registration goes with it, unless a newer
    /// connection has registered the peer since.
    pub fn connection_closed(&self, peer: &PeerId, me: &Owner) {
        let mut owners = self.owners.lock().expect("owners lock");
        if owners.get(peer).map(|o| o.conn) == Some(me.conn) {
            owners.remove(peer);
            self.registry
                .lock()
                .expect("registry lock")
                .unregister(peer);
            tracing::info!("unregistered (connection closed)");
        }
    }
}

/// The response to one encoded request from `peer` on connection `me`.
pub fn respond(state: &State, peer: PeerId, me: &Owner, bytes: &[u8]) -> Response {
    match control::decode::<Request>(bytes) {
        Err(e) => {
            tracing::warn!("malformed request: {e}");
            let code = match e {
                control::ControlDecodeError::UnsupportedVersion(_) => {
                    RefusalCode::UnsupportedVersion
                }
                _ => RefusalCode::BadRequest,
            };
            Response::Refused {
                code,
                message: e.to_string(),
            }
        }
        Ok(Request::Register {
            local_addrs,
            nat,
            relayed,
        }) => register(
            state,
            peer,
            me,
            PeerRecord {
                observed: me.remote(),
                local_addrs,
                nat,
                relayed,
                over: me.over(),
            },
        ),
        Ok(Request::Lookup { peer: wanted }) => {
            let now = Instant::now().into_std();
            let registry = state.registry.lock().expect("registry lock");
            match registry.lookup(now, &wanted) {
                Some(record) => Response::Found {
                    peer: wanted,
                    record: record.clone(),
                },
                None => Response::NotFound { peer: wanted },
            }
        }
        Ok(Request::Connect { peer: wanted }) => connect(state, peer, me, wanted),
    }
}

fn register(state: &State, peer: PeerId, me: &Owner, record: PeerRecord) -> Response {
    let observed = record.observed;
    let now = Instant::now().into_std();
    let result = state
        .registry
        .lock()
        .expect("registry lock")
        .register_record(now, peer, record);
    match result {
        Ok(ttl) => {
            state
                .owners
                .lock()
                .expect("owners lock")
                .insert(peer, me.clone());
            state.registry_changed.notify_one();
            tracing::debug!(%observed, over = ?me.over(), "registered");
            Response::Registered {
                observed,
                ttl_secs: ttl.as_secs().try_into().unwrap_or(u32::MAX),
                stun_alternates: state.stun_alternates.clone(),
                inbound_probe: state.inbound_probe,
                turn: state
                    .relay_offer
                    .get()
                    .map(|offering| offering.offer(&peer)),
            }
        }
        Err(e) => {
            tracing::warn!("registration refused: {e}");
            Response::Refused {
                code: e.code(),
                message: e.to_string(),
            }
        }
    }
}

fn connect(state: &State, peer: PeerId, me: &Owner, wanted: PeerId) -> Response {
    let now = Instant::now().into_std();
    let (found, requester) = {
        let registry = state.registry.lock().expect("registry lock");
        (
            registry.lookup(now, &wanted).cloned(),
            registry.lookup(now, &peer).cloned(),
        )
    };
    // A NAT may have rebound since the last registration refresh: the registration
    // connection's current address is the fresh one.
    let found = found.map(|record| state.fresh(&wanted, record));
    let requester = requester.map(|mut record| {
        record.observed = me.remote();
        record
    });
    let Some(record) = found else {
        return Response::NotFound { peer: wanted };
    };
    // Tell the target to probe the requester: both NATs then expect the other.
    let requester = requester.unwrap_or_else(|| PeerRecord {
        observed: me.remote(),
        local_addrs: Vec::new(),
        nat: p2pnat_proto::nat::NatReport::UNKNOWN,
        relayed: None,
        over: me.over(),
    });
    let target = state
        .owners
        .lock()
        .expect("owners lock")
        .get(&wanted)
        .cloned();
    let allowed = state
        .punch_limits
        .lock()
        .expect("punch limits lock")
        .take(now, peer);
    match target {
        Some(target) if allowed => target.push(Push::PunchRequest {
            peer,
            record: requester,
        }),
        Some(_) => tracing::warn!(
            target_peer = %wanted.short(),
            "punch request not pushed: this node asked too often (rate limited)"
        ),
        None => {}
    }
    Response::Found {
        peer: wanted,
        record,
    }
}
