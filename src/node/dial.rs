//! Finding and dialling a peer: look it up at the rendezvous, probe its candidate addresses with
//! the sans-IO [`DirectProber`], point its virtual address at the path that answered, and open a
//! QUIC connection to the virtual address. Also answers other nodes' probes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use p2pnat_proto::control::{PeerRecord, Push};
use p2pnat_proto::demux::DatagramKind;
use p2pnat_proto::path_table::{LocalSocketId, Path, PathKind};
use p2pnat_proto::probe::{DirectProber, ProbeConfig, ProbeOutcome, ProjectDatagram};
use p2pnat_proto::{stun, PeerId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::rendezvous_client::{RendezvousClient, RendezvousError};
use crate::socket::{NodeSocket, SideDatagram};

/// Most probes in progress at once (bounds the Pong routing table).
pub const MAX_PROBES: usize = 1024;

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("unknown-peer: the rendezvous has no registration for this peer")]
    UnknownPeer,
    #[error("rendezvous lookup failed: {0}")]
    Lookup(#[from] RendezvousError),
    #[error("unreachable: no candidate address answered probes within {0:?}")]
    Unreachable(Duration),
    #[error("too many connection attempts in progress")]
    Busy,
    #[error("path table full: {0}")]
    PathTable(#[from] p2pnat_proto::path_table::PathTableFull),
    #[error("QUIC connect failed: {0}")]
    Connect(String),
    #[error("QUIC handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("peer presented a different identity")]
    WrongIdentity,
}

/// A Pong as the prober needs it: where it came from and its transaction ID.
pub type PongArrival = (SocketAddr, [u8; 12]);

/// Routes answers (Pongs and STUN responses by transaction ID, Pings by the peer that sent them)
/// to the task waiting for them. Holds at most [`MAX_PROBES`] keys.
#[derive(Debug)]
pub struct Routes<K, T> {
    routes: Mutex<HashMap<K, mpsc::Sender<T>>>,
}

/// Pongs by transaction ID.
pub type PongRoutes = Routes<[u8; 12], PongArrival>;
/// STUN Binding responses by transaction ID.
pub type StunRoutes = Routes<[u8; 12], stun::BindingResponse>;
/// Where Pings from a peer came from, for the prober of that peer (peer-reflexive candidates).
pub type PingRoutes = Routes<PeerId, SocketAddr>;

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
    pub socket: Arc<NodeSocket>,
    pub client_config: quinn::ClientConfig,
    pub rendezvous: RendezvousClient,
    pub pongs: Arc<PongRoutes>,
    pub pings: Arc<PingRoutes>,
    pub probe: ProbeConfig,
    pub handshake_timeout: Duration,
}

fn random_transaction() -> [u8; 12] {
    let mut id = [0u8; 12];
    getrandom::getrandom(&mut id).expect("the OS random source works");
    id
}

impl Dialler {
    /// Looks `peer` up, finds a path and connects.
    pub async fn dial(&self, peer: PeerId) -> Result<quinn::Connection, DialError> {
        // The rendezvous also tells the peer to probe us at the same time (coordinated punching).
        let record = self
            .rendezvous
            .lookup_and_announce(peer)
            .await?
            .ok_or(DialError::UnknownPeer)?;
        let candidates = candidates_of(&record);
        tracing::debug!(?candidates, "probing candidates");
        let remote = self.probe(peer, &candidates).await?;
        let vaddr = self
            .socket
            .paths()
            .lock()
            .expect("path table lock")
            .vaddr_for_dial(
                peer,
                Path {
                    local: LocalSocketId(0),
                    remote,
                    kind: PathKind::Direct,
                },
            )?;
        tracing::debug!(%remote, %vaddr, "path selected; connecting");
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), vaddr, &peer.to_text())
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

    async fn probe(
        &self,
        peer: PeerId,
        candidates: &[SocketAddr],
    ) -> Result<SocketAddr, DialError> {
        let start = Instant::now();
        // One transaction ID per candidate, drawn here so the Pong routes can be set up first.
        let transactions: Vec<[u8; 12]> = candidates.iter().map(|_| random_transaction()).collect();
        let (tx, mut rx) = mpsc::channel(16);
        self.pongs.insert_all(&transactions, &tx)?;
        let (ping_tx, mut ping_rx) = mpsc::channel(16);
        let watching_pings = self.pings.insert_all(&[peer], &ping_tx).is_ok();
        let mut transactions = transactions;
        let mut supply = transactions.clone().into_iter();
        let mut prober = DirectProber::new(
            start.into_std(),
            self.own,
            peer,
            candidates,
            || supply.next().unwrap_or_else(random_transaction),
            self.probe,
        );
        let outcome = loop {
            let now = Instant::now();
            while let Some((to, bytes)) = prober.poll_transmit(now.into_std()) {
                if let Err(e) = self.socket.send_raw(to, &bytes) {
                    tracing::debug!(%to, "probe not sent: {e}");
                }
            }
            if let Some(outcome) = prober.poll_event() {
                break outcome;
            }
            let Some(deadline) = prober.poll_timeout() else {
                break ProbeOutcome::TimedOut;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => prober.handle_timeout(Instant::now().into_std()),
                Some((from, transaction)) = rx.recv() => prober.handle_pong(Instant::now().into_std(), from, transaction),
                Some(from) = ping_rx.recv() => {
                    // The peer's Ping came from an address we did not know: check it too.
                    let transaction = random_transaction();
                    if prober.add_candidate(Instant::now().into_std(), from, transaction)
                        && self.pongs.insert_all(&[transaction], &tx).is_ok()
                    {
                        tracing::debug!(%from, "peer-reflexive candidate");
                        transactions.push(transaction);
                    }
                }
            }
        };
        self.pongs.remove_all(&transactions, &tx);
        if watching_pings {
            self.pings.remove_all(&[peer], &ping_tx);
        }
        match outcome {
            ProbeOutcome::Selected { remote, rtt } => {
                tracing::debug!(%remote, ?rtt, "probe answered");
                Ok(remote)
            }
            ProbeOutcome::TimedOut => Err(DialError::Unreachable(self.probe.timeout)),
        }
    }
}

/// A peer's candidate addresses, host addresses first: the ones this IPv4 socket can use.
fn candidates_of(record: &PeerRecord) -> Vec<SocketAddr> {
    let mut candidates = record.local_addrs.clone();
    candidates.push(record.observed);
    candidates.retain(|addr| addr.is_ipv4() && !addr.ip().is_unspecified() && addr.port() != 0);
    candidates
}

/// Most punch requests answered at once; more are dropped (the dialler retries).
pub const MAX_PUNCH_ANSWERS: usize = 8;

/// How long the answering side waits before its first probe. The dialler starts probing as soon
/// as the rendezvous answers, while the punch request is still on its way here, so its first
/// Ping normally leaves first; this margin makes that hold despite scheduling jitter. It matters
/// for a dialler behind a NAT without a WAN firewall (a bare Linux NAT): if our Ping reached it
/// before its own host had sent anything, its conntrack would keep our flow and move the
/// dialler's probes to another public port, which a port-restricted NAT in front of us drops.
/// Found by the netsim cell linux-nat+double-nat failing once in four runs without it.
pub const PUNCH_ANSWER_DELAY: Duration = Duration::from_millis(50);

/// Answers the rendezvous's punch requests: probes the dialling peer's addresses for the probe
/// timeout, which opens this node's NAT towards it. At most [`MAX_PUNCH_ANSWERS`] at once and one
/// per peer, so a flood of requests cannot turn the node into a packet cannon.
pub async fn answer_punch_requests(dialler: Dialler, mut pushes: mpsc::Receiver<Push>) {
    let in_progress = Arc::new(Mutex::new(std::collections::HashSet::<PeerId>::new()));
    while let Some(Push::PunchRequest { peer, record }) = pushes.recv().await {
        {
            let mut active = in_progress.lock().expect("punch set lock");
            if active.len() >= MAX_PUNCH_ANSWERS || !active.insert(peer) {
                tracing::debug!(peer = %peer.short(), "punch request ignored (busy)");
                continue;
            }
        }
        let dialler = dialler.clone();
        let in_progress = in_progress.clone();
        let span = tracing::info_span!("punch", peer = %peer.short());
        tokio::spawn(
            async move {
                let candidates = candidates_of(&record);
                tokio::time::sleep(PUNCH_ANSWER_DELAY).await;
                tracing::debug!(?candidates, "punch requested: probing the dialler");
                match dialler.probe(peer, &candidates).await {
                    Ok(remote) => tracing::debug!(%remote, "dialler answered our probes"),
                    Err(e) => tracing::debug!("no answer from the dialler: {e}"),
                }
                in_progress.lock().expect("punch set lock").remove(&peer);
            }
            .instrument(span),
        );
    }
}

/// Handles STUN and project datagrams from the socket: answers Pings addressed to this node and
/// routes Pongs and STUN responses to the task waiting for them. Malformed or unexpected
/// datagrams are logged and dropped.
pub async fn handle_side_datagrams(
    own: PeerId,
    socket: Arc<NodeSocket>,
    pongs: Arc<PongRoutes>,
    pings: Arc<PingRoutes>,
    stun_answers: Arc<StunRoutes>,
    mut side_rx: mpsc::Receiver<SideDatagram>,
) {
    while let Some(datagram) = side_rx.recv().await {
        let from = datagram.from;
        if datagram.kind == DatagramKind::Stun {
            match stun::parse_binding_response(&datagram.bytes) {
                Ok(response) => {
                    if !stun_answers.deliver(&response.transaction_id, response) {
                        tracing::debug!(%from, "STUN response for no request in progress dropped");
                    }
                }
                Err(e) => tracing::debug!(%from, "STUN datagram dropped: {e}"),
            }
            continue;
        }
        match ProjectDatagram::decode(&datagram.bytes) {
            Ok(ProjectDatagram::Ping {
                transaction,
                sender,
                target,
            }) => {
                if target != own {
                    tracing::debug!(%from, "Ping for another peer ignored");
                    continue;
                }
                tracing::trace!(%from, peer = %sender, "answering Ping");
                let pong = ProjectDatagram::Pong {
                    transaction,
                    observed: from,
                };
                if let Err(e) = socket.send_raw(from, &pong.encode()) {
                    tracing::debug!(%from, "Pong not sent: {e}");
                }
                // If we are probing that peer too, its address may be news to us.
                pings.deliver(&sender, from);
            }
            Ok(ProjectDatagram::Pong { transaction, .. }) => {
                if !pongs.deliver(&transaction, (from, transaction)) {
                    tracing::debug!(%from, "Pong for no probe in progress dropped");
                }
            }
            Err(e) => tracing::debug!(%from, "malformed project datagram dropped: {e}"),
        }
    }
}
