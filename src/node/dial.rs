//! Finding and dialling a peer: look it up at the rendezvous (which also tells the peer to check
//! us at the same moment), hand its candidates to the path agent, wait until the agent selects a
//! path, and open a QUIC connection to the peer's virtual address. Punch requests from the
//! rendezvous go to the agent the same way, as the answering side.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use p2pnat_proto::control::{PeerRecord, Push, RegisteredOver};
use p2pnat_proto::path::{CheckRole, PeerCandidates};
use p2pnat_proto::rate_limit::TokenBuckets;
use p2pnat_proto::{stun, PeerId};
use tokio::sync::mpsc;

use super::paths::Paths;
use super::rendezvous_client::{RendezvousClient, RendezvousError};

/// Most STUN transactions in progress at once (bounds the STUN routing table).
pub const MAX_PROBES: usize = 1024;

/// Punch answers per requesting peer: a burst, then one per interval.
pub const PUNCH_ANSWERS_PER_PEER: (u32, Duration) = (4, Duration::from_secs(2));
/// Punch answers per requester IP: a burst, then one per interval.
pub const PUNCH_ANSWERS_PER_IP: (u32, Duration) = (16, Duration::from_millis(250));

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("unknown-peer: the rendezvous has no registration for this peer")]
    UnknownPeer,
    #[error("rendezvous: lookup failed: {0}")]
    Lookup(#[from] RendezvousError),
    #[error("unreachable: no candidate address answered checks within {0:?}")]
    Unreachable(Duration),
    #[error("busy: too many connection attempts in progress")]
    Busy,
    #[error("busy: the path agent refused: {0}")]
    Paths(#[from] p2pnat_proto::path::agent::PathError),
    #[error("connect: QUIC connect failed: {0}")]
    Connect(String),
    #[error("connect: QUIC handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("connect: the peer presented a different identity")]
    WrongIdentity,
}

/// Routes answers (STUN responses by transaction ID) to the task waiting for them. Holds at most [`MAX_PROBES`] keys.
#[derive(Debug)]
pub struct Routes<K, T> {
    routes: Mutex<HashMap<K, mpsc::Sender<T>>>,
}

/// STUN Binding responses by transaction ID.
pub type StunRoutes = Routes<[u8; 12], stun::BindingResponse>;

impl<K, T> Default for Routes<K, T> {
    fn default() -> Self {
        Routes {
            routes: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy, T> Routes<K, T> {
    /// Routes every key in `keys` to `sender`; refuses when the table is full.
    pub fn insert_all(&self, keys: &[K], sender: &mpsc::Sender<T>) -> Result<(), DialError> {
        let mut routes = self.routes.lock().expect("routes lock");
        if routes.len() + keys.len() > MAX_PROBES {
            return Err(DialError::Busy);
        }
        for key in keys {
            routes.insert(*key, sender.clone());
        }
        Ok(())
    }

    /// Removes the keys that still route to `sender` (another task may have taken one over).
    pub fn remove_all(&self, keys: &[K], sender: &mpsc::Sender<T>) {
        let mut routes = self.routes.lock().expect("routes lock");
        for key in keys {
            if routes.get(key).is_some_and(|s| s.same_channel(sender)) {
                routes.remove(key);
            }
        }
    }

    /// Hands `value` to the waiter for `key`; false when nobody waits (or it is behind).
    pub fn deliver(&self, key: &K, value: T) -> bool {
        let route = self.routes.lock().expect("routes lock").get(key).cloned();
        route.is_some_and(|route| route.try_send(value).is_ok())
    }
}

/// Shared pieces a dial needs.
#[derive(Debug, Clone)]
pub struct Dialler {
    pub own: PeerId,
    pub endpoint: quinn::Endpoint,
    pub paths: Arc<Paths>,
    pub client_config: quinn::ClientConfig,
    /// The same for a direct path to a loopback address (a larger MTU discovery bound).
    pub loopback_client_config: quinn::ClientConfig,
    pub rendezvous: RendezvousClient,
    /// How long checks may take before the dial gives up.
    pub check_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl Dialler {
    /// Looks `peer` up, finds a path and connects.
    pub async fn dial(&self, peer: PeerId) -> Result<quinn::Connection, DialError> {
        let vaddr = self.find_path(peer).await?;
        tracing::debug!(%vaddr, "path selected; connecting");
        let config = if self.paths.max_udp_payload(vaddr)
            == crate::datagram_size::LOOPBACK_MAX_UDP_PAYLOAD
        {
            &self.loopback_client_config
        } else {
            &self.client_config
        };
        let connecting = self
            .endpoint
            .connect_with(config.clone(), vaddr, &peer.to_text())
            .map_err(|e| DialError::Connect(e.to_string()))?;
        let connection = tokio::time::timeout(self.handshake_timeout, connecting)
            .await
            .map_err(|_| DialError::HandshakeTimeout(self.handshake_timeout))?
            .map_err(|e| DialError::Connect(e.to_string()))?;
        if crate::tls::peer_id_of(&connection) != Some(peer) {
            connection.close(1u32.into(), b"wrong identity");
            return Err(DialError::WrongIdentity);
        }
        Ok(connection)
    }

    /// Asks the rendezvous for `peer` (the rendezvous tells the peer to check us now) and has
    /// the agent check its candidates. Returns at once; the agent reports on the peer's watch.
    pub async fn punch(&self, peer: PeerId) -> Result<SocketAddr, DialError> {
        let record = self
            .rendezvous
            .lookup_and_announce(peer)
            .await?
            .ok_or(DialError::UnknownPeer)?;
        start(&self.paths, peer, &record, CheckRole::Dialler)
    }

    /// Punches and waits until the agent selects a path or the round fails.
    async fn find_path(&self, peer: PeerId) -> Result<SocketAddr, DialError> {
        let mut state = self.paths.subscribe(peer);
        let failed_before = state.borrow().failed_rounds;
        let vaddr = self.punch(peer).await?;
        // The agent ends the round after check_timeout; the margin covers the answer delay.
        let limit = self.check_timeout + Duration::from_secs(1);
        let selected = tokio::time::timeout(limit, async {
            let wait = state.wait_for(|s| s.selected.is_some() || s.failed_rounds > failed_before);
            wait.await.map(|s| s.selected.is_some()).unwrap_or(false)
        })
        .await;
        match selected {
            // The peer's own handshake may already hold the path under another address: dial
            // there, so both connections share it.
            Ok(true) => Ok(self.paths.dial_vaddr(&peer).unwrap_or(vaddr)),
            _ => Err(DialError::Unreachable(self.check_timeout)),
        }
    }
}

/// Hands `record`'s candidates and NAT report to the agent (which decides on a birthday attempt
/// and on who checks first).
fn start(
    paths: &Paths,
    peer: PeerId,
    record: &PeerRecord,
    role: CheckRole,
) -> Result<SocketAddr, DialError> {
    let mut addrs = candidates_of(record);
    if role == CheckRole::Answerer {
        // Never a reflector: only the requester's own IP and private addresses, briefly.
        addrs = p2pnat_proto::path::answer::answerable_candidates(&addrs, record.observed.ip());
    }
    tracing::debug!(candidates = ?addrs, nat = %record.nat.mapping, inbound = %record.nat.inbound, over = ?record.over, ?role, "checking candidates");
    // A peer registered over TLS was observed at a TCP address, no UDP one: it is reached
    // through its relayed address (and its host addresses, on a shared LAN).
    let observed = (record.over == RegisteredOver::Quic).then_some(record.observed);
    let candidates = PeerCandidates {
        addrs: &addrs,
        observed,
        nat: record.nat,
        relayed: record.relayed,
    };
    Ok(paths.start_checks(peer, &candidates, role)?)
}

/// A peer's candidate addresses, host addresses first: the ones this IPv4 socket can use.
fn candidates_of(record: &PeerRecord) -> Vec<SocketAddr> {
    let mut candidates = record.local_addrs.clone();
    if record.over == RegisteredOver::Quic {
        candidates.push(record.observed);
    }
    candidates.retain(|addr| addr.is_ipv4() && !addr.ip().is_unspecified() && addr.port() != 0);
    candidates
}

/// Hands the rendezvous's punch requests to the path agent as the answering side: it checks
/// the dialling peer's candidates (after its answer delay, paced, for its check timeout), which
/// opens this node's NAT towards the dialler.
///
/// Answers are limited per requesting peer ([`PUNCH_ANSWERS_PER_PEER`]) and per requester IP
/// ([`PUNCH_ANSWERS_PER_IP`]): many identities behind one address get no more than one.
pub async fn answer_punch_requests(paths: Arc<Paths>, mut pushes: mpsc::Receiver<Push>) {
    let mut limits = PunchAnswerLimits::new();
    while let Some(Push::PunchRequest { peer, record }) = pushes.recv().await {
        if !limits.admit(Instant::now(), peer, record.observed.ip()) {
            tracing::info!(peer = %peer.short(), from = %record.observed.ip(), "punch request over the limit; not answered");
            continue;
        }
        if let Err(e) = start(&paths, peer, &record, CheckRole::Answerer) {
            tracing::debug!(peer = %peer.short(), "punch request not answered: {e}");
        }
    }
}

/// Which punch requests a node answers: [`PUNCH_ANSWERS_PER_PEER`] per requesting peer and
/// [`PUNCH_ANSWERS_PER_IP`] per requester IP (each a token bucket; at most 4,096 of each are
/// tracked, the oldest forgotten first). A request must pass both; the IP's token is taken
/// first, so a request refused by its IP does not spend its peer's token.
#[derive(Debug)]
pub struct PunchAnswerLimits {
    per_peer: TokenBuckets<PeerId>,
    per_ip: TokenBuckets<IpAddr>,
}

impl PunchAnswerLimits {
    pub fn new() -> Self {
        let (peer_burst, peer_interval) = PUNCH_ANSWERS_PER_PEER;
        let (ip_burst, ip_interval) = PUNCH_ANSWERS_PER_IP;
        PunchAnswerLimits {
            per_peer: TokenBuckets::new(peer_burst, peer_interval, 4096),
            per_ip: TokenBuckets::new(ip_burst, ip_interval, 4096),
        }
    }

    /// Whether to answer a punch request from `peer`, whose registration the rendezvous
    /// observed at `ip`, arriving at `now`.
    pub fn admit(&mut self, now: Instant, peer: PeerId, ip: IpAddr) -> bool {
        self.per_ip.take(now, ip) && self.per_peer.take(now, peer)
    }
}

impl Default for PunchAnswerLimits {
    fn default() -> Self {
        Self::new()
    }
}

/// Looks peers up again and punches when the agent reports their selected path silent (a NAT
/// rebinding, a network change). Runs beside the peer tasks, which may be blocked writing to a
/// stream that cannot move until the new path exists.
pub async fn repunch(dialler: Dialler, mut requests: mpsc::Receiver<PeerId>) {
    while let Some(peer) = requests.recv().await {
        let dialler = dialler.clone();
        tokio::spawn(async move {
            if let Err(e) = dialler.punch(peer).await {
                tracing::info!(peer = %peer.short(), "re-punch failed: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    #[test]
    fn punch_answers_are_limited_per_requesting_peer() {
        let mut limits = PunchAnswerLimits::new();
        let start = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let answered = (0..10).filter(|_| limits.admit(start, peer(1), ip)).count();
        assert_eq!(answered, PUNCH_ANSWERS_PER_PEER.0 as usize);
        // Another peer on the same IP is still answered.
        assert!(limits.admit(start, peer(2), ip));
        // One more for the first peer per interval.
        let later = start + PUNCH_ANSWERS_PER_PEER.1;
        assert!(limits.admit(later, peer(1), ip));
        assert!(!limits.admit(later, peer(1), ip));
    }

    #[test]
    fn punch_answers_are_limited_per_requester_ip_whatever_the_keys() {
        let mut limits = PunchAnswerLimits::new();
        let start = Instant::now();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let answered = (0..40u8)
            .filter(|n| limits.admit(start, peer(*n), ip))
            .count();
        assert_eq!(answered, PUNCH_ANSWERS_PER_IP.0 as usize);
        // Another IP is not affected.
        assert!(limits.admit(start, peer(100), "198.51.100.8".parse().unwrap()));
        // One more per interval; a peer refused by its IP kept its own token.
        let later = start + PUNCH_ANSWERS_PER_IP.1;
        assert!(limits.admit(later, peer(39), ip));
        assert!(!limits.admit(later, peer(38), ip));
    }
}
