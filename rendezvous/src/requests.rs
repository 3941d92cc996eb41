//! Control requests, whatever carried them: QUIC (`control_quic`) or TLS over TCP
//! (`control_tls`). A node registered over one transport is found by, pushed to and
//! punch-coordinated with nodes on the other exactly as with its own kind.
//!
//! Each connection is an [`Owner`] once it registers: the registry's record of the peer points
//! at it, pushes go to it, and its current remote address is the peer's `observed` address
//! (quinn follows a migrating QUIC client; a TCP connection's address never changes).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2pnat_proto::control::{
    self, PeerRecord, Push, RefusalCode, RegisteredOver, Request, Response,
};
use p2pnat_proto::path::normalize;
use p2pnat_proto::registry::RegisterError;
use p2pnat_proto::PeerId;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::metrics::{Dropped, METRICS};
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
    /// A node registered with control datagrams (`control_dgram`): no connection; `remote`
    /// is where the datagram being handled came from, and pushes go through the datagram
    /// machine to the session's observed address.
    Datagram {
        remote: SocketAddr,
    },
}

/// The owner number of every datagram registration: no connection closes it (it expires),
/// and no connection's close removes it.
pub const DATAGRAM_OWNER: u64 = u64::MAX;

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
            Link::Tls { remote, .. } | Link::Datagram { remote } => *remote,
        }
    }

    pub fn over(&self) -> RegisteredOver {
        match self.link {
            Link::Quic(_) | Link::Datagram { .. } => RegisteredOver::Quic,
            Link::Tls { .. } => RegisteredOver::Tls,
        }
    }

    fn is_open(&self) -> bool {
        match &self.link {
            Link::Quic(connection) => connection.close_reason().is_none(),
            Link::Tls { pushes, .. } => !pushes.is_closed(),
            // The registry's record follows the session (`Registry::set_observed`).
            Link::Datagram { .. } => false,
        }
    }

    /// Sends `push` without waiting; failures are logged (the target may have just gone away)
    /// and never affect the requester.
    fn push(&self, state: &State, target: &PeerId, push: Push) {
        match &self.link {
            Link::Datagram { .. } => crate::control_dgram::push(state, target, &push),
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
    ///
    /// Invariant (issue #14): the registry entry and the `owners` entry each carry the
    /// connection number that made them, and each is removed only by that connection. A
    /// registration runs in two steps ([`Self::register_entry`], then [`Self::set_owner`]) and
    /// so does this (registry, then owners), each under its own lock; however the steps of an
    /// old connection's close interleave with a new connection's registration, the new one's
    /// entries stay. (Before, the close checked only `owners`, which the new connection had not
    /// yet taken, and then removed the registry entry the new connection had just made.)
    /// Returns whether the registration was removed.
    pub fn connection_closed(&self, peer: &PeerId, me: &Owner) -> bool {
        let removed = {
            let mut registry = self.registry.lock().expect("registry lock");
            let removed = registry.unregister_owned(peer, me.conn);
            METRICS.registered_peers.set(registry.len() as i64);
            removed
        };
        let mut owners = self.owners.lock().expect("owners lock");
        if owners.get(peer).map(|o| o.conn) == Some(me.conn) {
            owners.remove(peer);
        }
        if removed {
            tracing::debug!("registration removed");
        }
        removed
    }

    /// First step of a registration: the registry entry, owned by connection `me`.
    fn register_entry(
        &self,
        now: std::time::Instant,
        peer: PeerId,
        me: &Owner,
        record: PeerRecord,
    ) -> Result<Duration, RegisterError> {
        let mut registry = self.registry.lock().expect("registry lock");
        let result = registry.register_owned(now, peer, me.conn, record);
        METRICS.registered_peers.set(registry.len() as i64);
        result
    }

    /// Second step of a registration: pushes for `peer` go to connection `me`.
    fn set_owner(&self, peer: PeerId, me: &Owner) {
        self.owners
            .lock()
            .expect("owners lock")
            .insert(peer, me.clone());
    }
}

/// The response to one encoded request from `peer` on connection `me`.
pub fn respond(state: &State, peer: PeerId, me: &Owner, bytes: &[u8]) -> Response {
    match control::decode::<Request>(bytes) {
        Ok(request) => handle(state, peer, me, request),
        Err(e) => {
            METRICS.count_drop(Dropped::ControlMalformed);
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
    }
}

/// The response to `request` from `peer` on connection `me` (or datagram session).
pub fn handle(state: &State, peer: PeerId, me: &Owner, request: Request) -> Response {
    match request {
        Request::Register {
            local_addrs,
            nat,
            relayed,
        } => register(
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
        Request::Lookup { peer: wanted } => {
            let now = Instant::now().into_std();
            let registry = state.registry.lock().expect("registry lock");
            match registry.lookup(now, &wanted) {
                Some(record) => {
                    METRICS.lookups_found.inc();
                    Response::Found {
                        peer: wanted,
                        record: record.clone(),
                    }
                }
                None => {
                    METRICS.lookups_not_found.inc();
                    Response::NotFound { peer: wanted }
                }
            }
        }
        Request::Connect { peer: wanted } => connect(state, peer, me, wanted),
        Request::Unregister => {
            // Only the registration this connection (or the datagram session) made.
            if state.connection_closed(&peer, me) {
                tracing::info!("unregistered (asked)");
            }
            Response::Unregistered
        }
    }
}

fn register(state: &State, peer: PeerId, me: &Owner, record: PeerRecord) -> Response {
    let observed = record.observed;
    let now = Instant::now().into_std();
    match state.register_entry(now, peer, me, record) {
        Ok(ttl) => {
            METRICS.registrations.inc();
            state.set_owner(peer, me);
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
            METRICS.count_drop(match e {
                RegisterError::RateLimited(_) => Dropped::RegisterRateLimit,
                RegisterError::Full(_) => Dropped::RegisterQuota,
                RegisterError::TooManyAddresses(_) => Dropped::RegisterMalformed,
            });
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
        METRICS.punch_not_pushed.inc();
        return Response::NotFound { peer: wanted };
    };
    // Tell the target to probe the requester: both NATs then expect the other.
    let mut requester = requester.unwrap_or_else(|| PeerRecord {
        observed: me.remote(),
        local_addrs: Vec::new(),
        nat: p2pnat_proto::nat::NatReport::UNKNOWN,
        relayed: None,
        over: me.over(),
    });
    if strip_unforwardable(&mut requester) {
        METRICS.count_drop(Dropped::PunchForbiddenAddress);
        tracing::info!("punch request: the requester's non-unicast addresses are not forwarded");
    }
    let target = state
        .owners
        .lock()
        .expect("owners lock")
        .get(&wanted)
        .cloned();
    // Both limits are charged only when there is someone to push to.
    let allowed = target.is_some() && punch_allowed(state, now, peer, me.remote().ip());
    match target {
        Some(target) if allowed => {
            METRICS.punch_pushed.inc();
            target.push(
                state,
                &wanted,
                Push::PunchRequest {
                    peer,
                    record: requester,
                },
            );
        }
        Some(_) => {
            METRICS.punch_not_pushed.inc();
            METRICS.count_drop(Dropped::PunchRateLimit);
            tracing::warn!(
                target_peer = %wanted.short(),
                "punch request not pushed: this node or its IP asked too often (rate limited)"
            );
        }
        None => {
            METRICS.punch_not_pushed.inc();
        }
    }
    Response::Found {
        peer: wanted,
        record,
    }
}

/// Takes a punch token for the requesting key and one for its source IP; the request may be
/// pushed only if both had one. (A key refused by its IP's bucket has used its own token: a
/// host cannot get around the IP limit by taking turns between keys.)
fn punch_allowed(state: &State, now: std::time::Instant, peer: PeerId, ip: IpAddr) -> bool {
    let by_key = state
        .punch_limits
        .lock()
        .expect("punch limits lock")
        .take(now, peer);
    by_key
        && state
            .punch_ip_limits
            .lock()
            .expect("punch IP limits lock")
            .take(now, ip)
}

/// Whether the rendezvous may ask a node to send probes to `addr`, an address a requester
/// registered itself: never to an unspecified, multicast or broadcast address or port 0, and to
/// a loopback address only when the requester itself connects from loopback (it then shares a
/// host with the rendezvous: a lab or a test; a remote node cannot make another node probe its
/// own loopback services).
pub fn forwardable(addr: &SocketAddr, requester_on_loopback: bool) -> bool {
    let ip = addr.ip();
    let broadcast = match ip {
        IpAddr::V4(v4) => v4.is_broadcast(),
        IpAddr::V6(_) => false,
    };
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !broadcast
        && (!ip.is_loopback() || requester_on_loopback)
}

/// Removes from the requester's `record` the addresses it registered that are not
/// [`forwardable`] (local addresses and the relayed address; `observed` is the rendezvous's
/// own observation). Returns whether any was removed.
pub fn strip_unforwardable(record: &mut PeerRecord) -> bool {
    let on_loopback = record.observed.ip().is_loopback();
    let before = record.local_addrs.len();
    record
        .local_addrs
        .retain(|addr| forwardable(addr, on_loopback));
    let mut removed = record.local_addrs.len() != before;
    if record
        .relayed
        .is_some_and(|addr| !forwardable(&addr, on_loopback))
    {
        record.relayed = None;
        removed = true;
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(observed: &str, local: &[&str], relayed: Option<&str>) -> PeerRecord {
        PeerRecord {
            observed: observed.parse().unwrap(),
            local_addrs: local.iter().map(|a| a.parse().unwrap()).collect(),
            nat: p2pnat_proto::nat::NatReport::UNKNOWN,
            relayed: relayed.map(|a| a.parse().unwrap()),
            over: RegisteredOver::Quic,
        }
    }

    #[test]
    fn remote_requesters_addresses_are_stripped_of_non_unicast_ones() {
        let mut r = record(
            "203.0.113.5:4000",
            &[
                "192.168.1.10:4000",
                "127.0.0.1:22",
                "0.0.0.0:4000",
                "224.0.0.1:4000",
                "255.255.255.255:4000",
                "192.168.1.11:0",
                "[::1]:22",
                "[ff02::1]:4000",
                "[::]:4000",
                "10.0.0.2:4000",
            ],
            Some("127.0.0.1:3479"),
        );
        assert!(strip_unforwardable(&mut r));
        let kept: Vec<String> = r.local_addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(kept, ["192.168.1.10:4000", "10.0.0.2:4000"]);
        assert_eq!(r.relayed, None);
        let mut clean = record(
            "203.0.113.5:4000",
            &["192.168.1.10:4000"],
            Some("198.51.100.1:50000"),
        );
        assert!(!strip_unforwardable(&mut clean));
        assert_eq!(clean.relayed, Some("198.51.100.1:50000".parse().unwrap()));
    }

    fn tls_owner(conn: u64) -> Owner {
        let (pushes, _rx) = crate::turn_stream::out_queue(1024);
        Owner {
            conn,
            link: Link::Tls {
                remote: "127.0.0.1:4000".parse().unwrap(),
                pushes: std::sync::Arc::new(pushes),
            },
        }
    }

    /// Issue #14: a node reconnects (connection 2) while its old connection's (1) close is
    /// being handled. Every interleaving of the two registration steps with the two close
    /// steps must leave the peer registered, owned by connection 2. With the close removing
    /// the registry entry whatever its owner (the old code's `unregister`), the interleavings
    /// where connection 2's entry is made before the close's registry step lose it.
    #[test]
    fn reconnect_racing_the_old_connections_close_stays_registered() {
        let peer = PeerId([7; 32]);
        let (old, new) = (tls_owner(1), tls_owner(2));
        // 0, 1: the new connection's steps; 2, 3: the old connection's close (registry, owners).
        let orders: [[u8; 4]; 6] = [
            [0, 1, 2, 3],
            [0, 2, 1, 3],
            [0, 2, 3, 1],
            [2, 0, 1, 3],
            [2, 0, 3, 1],
            [2, 3, 0, 1],
        ];
        for order in orders {
            let state = State::for_tests();
            let now = std::time::Instant::now();
            let first = record("127.0.0.1:4000", &[], None);
            state.register_entry(now, peer, &old, first).unwrap();
            state.set_owner(peer, &old);
            for step in order {
                match step {
                    0 => {
                        let again = record("127.0.0.1:4001", &[], None);
                        state.register_entry(now, peer, &new, again).unwrap();
                    }
                    1 => state.set_owner(peer, &new),
                    2 => {
                        state
                            .registry
                            .lock()
                            .unwrap()
                            .unregister_owned(&peer, old.conn);
                    }
                    _ => {
                        let mut owners = state.owners.lock().unwrap();
                        if owners.get(&peer).map(|o| o.conn) == Some(old.conn) {
                            owners.remove(&peer);
                        }
                    }
                }
            }
            let registry = state.registry.lock().unwrap();
            let found = registry.lookup(now, &peer);
            assert_eq!(
                found.map(|r| r.observed.port()),
                Some(4001),
                "order {order:?}: the new registration was lost"
            );
            let owners = state.owners.lock().unwrap();
            assert_eq!(
                owners.get(&peer).map(|o| o.conn),
                Some(2),
                "order {order:?}"
            );
        }
        // And the whole close, after the new registration, leaves it too.
        let state = State::for_tests();
        let now = std::time::Instant::now();
        let first = record("127.0.0.1:4000", &[], None);
        state.register_entry(now, peer, &old, first).unwrap();
        state.set_owner(peer, &old);
        let again = record("127.0.0.1:4001", &[], None);
        state.register_entry(now, peer, &new, again).unwrap();
        state.connection_closed(&peer, &old);
        assert!(state.registry.lock().unwrap().lookup(now, &peer).is_some());
        state.connection_closed(&peer, &new);
        assert!(state.registry.lock().unwrap().lookup(now, &peer).is_none());
        assert!(state.owners.lock().unwrap().is_empty());
    }

    /// `Unregister` removes only what the asking connection (or datagram session) made:
    /// a peer's old TLS connection cannot remove the registration its datagram session holds.
    #[test]
    fn unregister_removes_only_the_askers_own_registration() {
        let state = State::for_tests();
        let peer = PeerId([8; 32]);
        let datagram = Owner {
            conn: DATAGRAM_OWNER,
            link: Link::Datagram {
                remote: "127.0.0.1:4000".parse().unwrap(),
            },
        };
        let register = Request::Register {
            local_addrs: vec![],
            nat: p2pnat_proto::nat::NatReport::UNKNOWN,
            relayed: None,
        };
        assert!(matches!(
            handle(&state, peer, &datagram, register),
            Response::Registered { .. }
        ));
        let now = std::time::Instant::now();
        assert!(state.registry.lock().unwrap().lookup(now, &peer).is_some());
        let stale = tls_owner(5);
        assert_eq!(
            handle(&state, peer, &stale, Request::Unregister),
            Response::Unregistered
        );
        assert!(
            state.registry.lock().unwrap().lookup(now, &peer).is_some(),
            "another connection's Unregister left it"
        );
        assert_eq!(
            handle(&state, peer, &datagram, Request::Unregister),
            Response::Unregistered
        );
        assert!(state.registry.lock().unwrap().lookup(now, &peer).is_none());
        assert!(state.owners.lock().unwrap().is_empty());
    }

    /// Punch pushes are limited per requesting key (32 at once in `State::for_tests`) and per
    /// source IP (64 at once), whichever runs out first; `now` is fixed, so nothing refills.
    #[test]
    fn punches_are_limited_per_key_and_per_source_ip() {
        let state = State::for_tests();
        let now = std::time::Instant::now();
        let ip = |n: u8| IpAddr::from([198, 51, 100, n]);
        // Many keys from one IP: the IP's 64.
        let allowed = (0..200u8)
            .filter(|n| punch_allowed(&state, now, PeerId([*n; 32]), ip(1)))
            .count();
        assert_eq!(allowed, 64);
        // Another IP is not affected by the first one's flood.
        assert!(punch_allowed(&state, now, PeerId([250; 32]), ip(2)));
        // One key from many IPs: the key's 32.
        let key = PeerId([251; 32]);
        let allowed = (10..100u8)
            .filter(|n| punch_allowed(&state, now, key, ip(*n)))
            .count();
        assert_eq!(allowed, 32);
    }

    #[test]
    fn loopback_is_forwarded_only_for_a_requester_on_loopback() {
        let mut r = record(
            "127.0.0.1:4000",
            &["127.0.0.1:4000", "224.0.0.1:1"],
            Some("127.0.0.1:50000"),
        );
        assert!(strip_unforwardable(&mut r));
        assert_eq!(r.local_addrs, vec!["127.0.0.1:4000".parse().unwrap()]);
        assert!(r.relayed.is_some());
    }
}
