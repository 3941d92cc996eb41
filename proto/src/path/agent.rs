//! The path agent: one sans-IO state machine per node that finds, chooses, keeps and changes
//! the path beneath each peer's virtual address.
//!
//! # Inputs and outputs
//! Inputs carry their time: [`PathAgent::start_checks`] (candidates from the rendezvous, as
//! dialler or as the answer to a punch request), [`PathAgent::handle_datagram`] (a project
//! datagram with the local socket it arrived on and its source), [`PathAgent::handle_timeout`],
//! and the connection's life ([`PathAgent::set_connected`], [`PathAgent::bind_incoming`],
//! [`PathAgent::release`]). Outputs come from one [`PathAgent::poll_output`]: call
//! `handle_timeout(now)` when the last `Output::Timeout` passes, and after every input call
//! `poll_output(now)` until it returns `Output::Timeout`. Transmits come first (replies, then at
//! most one paced check), then events. Nothing reads a clock or draws randomness: time is
//! passed in, and transaction IDs come from a seed given to [`PathAgent::new`].
//!
//! # Checks
//! Every check and reply is authenticated with the pair key ([`super::auth`]). A valid check is
//! answered at once and *triggers* a check back to where it came from, ahead of the others, so
//! a punch completes one round trip after the second side's first check arrives instead of on a
//! retransmit timer. Checks leave paced for the whole node: up to [`AgentConfig::pace_burst`] at
//! once (a round's first checks go out together), then one every [`AgentConfig::pace`]; each
//! pair retries 5, 15 and 30 ms after its first check ([`EARLY_RETRY_GAPS`]), then every
//! [`AgentConfig::retransmit`] until it succeeds or its window
//! ([`AgentConfig::check_timeout`]) ends. A reply counts only when it comes from the address the
//! check went to, on the same socket (ICE's symmetric rule).
//!
//! # Selection
//! The first pair that succeeds is selected (quinn can start at once). Before any succeeds, the
//! source of the peer's first authenticated check is selected provisionally, so that quinn can
//! answer a handshake that arrives first; any success replaces it. Later successes replace
//! it when they are of a better class (a LAN path beats an internet one), when the peer's
//! heartbeats now come from them (the peer's NAT rebound or the peer moved), or when the
//! selected path has been silent for [`AgentConfig::path_timeout`]. While a QUIC connection is
//! up, the selected path carries a heartbeat every [`AgentConfig::heartbeat`] (every
//! `retransmit` while one is unanswered). A selected path silent for `path_timeout` is replaced
//! by another live pair, or, if none, every pair is checked again and
//! [`AgentEvent::NeedCandidates`] asks the driver for fresh candidates (a re-punch through the
//! rendezvous). The selected path keeps carrying QUIC meanwhile: quinn never sees any of this.
//!
//! # Limits
//! [`AgentConfig::max_peers`] peer states (idle ones are evicted first), [`AgentConfig::max_pairs`]
//! pairs per peer, [`MAX_OUTSTANDING`] unanswered checks, `pace_burst` checks at once and then one
//! per `pace` (500 a second by default), keys for unknown senders derived at most [`STRANGER_KEYS_BURST`] at once and one
//! per [`STRANGER_KEY_INTERVAL`] after that.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::auth::OwnSecret;
use super::birthday::Birthday;
pub use super::events::{
    AgentCounters, AgentEvent, CheckRole, Output, PathError, PeerCandidates, Transmit,
};
use super::pairs::{class, Pacer, PairState, PeerPaths};
use super::table::PathTable;
use super::wire::{CheckBody, CheckDatagram, Transaction};
use super::{normalize, LocalSocketId, Path, PathKind};
use crate::nat::{InboundBehaviour, NatBehaviour, NatReport};
use crate::rate_limit::TokenBuckets;
use crate::PeerId;

/// Most checks awaiting a reply, node-wide; the oldest is forgotten beyond it.
pub const MAX_OUTSTANDING: usize = 8192;
/// Keys derived for senders without state, at once.
pub const STRANGER_KEYS_BURST: u32 = 64;
/// Then one per this interval.
pub const STRANGER_KEY_INTERVAL: Duration = Duration::from_millis(10);
/// Gaps before a pair's first retries (at 5, 15 and 30 ms after its first check), before the
/// steady [`AgentConfig::retransmit`] (see `next_check`).
pub const EARLY_RETRY_GAPS: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(15),
];
/// Idle `poll_output` answer when nothing is scheduled.
const IDLE: Duration = Duration::from_secs(3600);

/// Timing and limits of a [`PathAgent`].
#[derive(Debug, Clone, Copy)]
pub struct AgentConfig {
    /// Checks this node may send at once (default 16)...
    pub pace_burst: u32,
    /// ...then one per this gap (default 2 ms: 500 checks a second at most).
    pub pace: Duration,
    /// Gap between checks on one pair until it answers (default 200 ms).
    pub retransmit: Duration,
    /// How long a pair is checked before it counts as failed (default 5 s).
    pub check_timeout: Duration,
    /// Delay before an answerer's first checks, so the dialler's leave first (default 10 ms):
    /// a bare Linux NAT in front of the dialler would otherwise keep our early check as an
    /// inbound flow and move the dialler's traffic to another public port (design brief).
    pub answer_delay: Duration,
    /// How long the answering side of a punch checks each of the requester's addresses
    /// (default 250 ms: a first check and its early retries). Its checks only open our NAT;
    /// the requester's own checks trigger ours for the rest of the round (`super::answer`).
    pub answer_window: Duration,
    /// Gap between heartbeats on the selected path of a connected peer (default 2 s).
    pub heartbeat: Duration,
    /// A selected path with no reply for this long is replaced or re-punched (default 3 s: a
    /// heartbeat and a second of retransmits; a false alarm costs one lookup and a few checks,
    /// since the path stays selected until another works).
    pub path_timeout: Duration,
    /// Most peers with state (default 2048: twice the node's peer tasks, so that the node's
    /// eviction of idle peers, not this table, decides who is served).
    pub max_peers: usize,
    /// Most candidate pairs per peer (default 32).
    pub max_pairs: usize,
    /// Most virtual addresses (default 4096).
    pub max_vaddrs: usize,
    /// Check and select relayed paths only (default false): for measuring and testing the
    /// relay where a direct path would work. Checks from the peer on direct paths are still
    /// answered (the peer decides for itself).
    pub relay_only: bool,
}

impl AgentConfig {
    /// These limits for a node that keeps at most `node_peers` peer tasks: twice as many peer
    /// states (so the node's eviction of idle peers decides, not this table) and four virtual
    /// addresses per peer task, at least 16. The defaults are `sized_for_peers(1024)`.
    pub fn sized_for_peers(mut self, node_peers: usize) -> Self {
        self.max_peers = node_peers.saturating_mul(2).max(2);
        self.max_vaddrs = node_peers.saturating_mul(4).max(16);
        self
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            pace_burst: 16,
            pace: Duration::from_millis(2),
            retransmit: Duration::from_millis(200),
            check_timeout: Duration::from_secs(5),
            answer_delay: Duration::from_millis(10),
            answer_window: Duration::from_millis(250),
            heartbeat: Duration::from_secs(2),
            path_timeout: Duration::from_secs(3),
            max_peers: 2048,
            max_pairs: 32,
            max_vaddrs: 4096,
            relay_only: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Outstanding {
    pub(super) peer: PeerId,
    pub(super) path: Path,
    pub(super) sent: Instant,
}

/// See the module documentation.
#[derive(Debug)]
pub struct PathAgent {
    pub(super) secret: OwnSecret,
    pub(super) config: AgentConfig,
    seed: [u8; 32],
    next_transaction: u64,
    pub(super) table: PathTable,
    pub(super) peers: BTreeMap<PeerId, PeerPaths>,
    pub(super) stranger_keys: TokenBuckets<()>,
    pub(super) outstanding: HashMap<Transaction, Outstanding>,
    outstanding_order: VecDeque<(Instant, Transaction)>,
    pub(super) replies: VecDeque<Transmit>,
    pub(super) events: VecDeque<AgentEvent>,
    pacer: Pacer,
    pub(super) own_nat: NatReport,
    /// Extra sockets open or asked for, node-wide (at most [`BIRTHDAY_SOCKETS`]).
    pub(super) extra_sockets: usize,
    /// Our relay allocation is up: pairs through it are checked (`super::relay`).
    pub(super) relay_ready: bool,
    pub counters: AgentCounters,
}

impl PathAgent {
    /// `seed` makes transaction IDs (random bytes from the caller).
    pub fn new(secret: OwnSecret, config: AgentConfig, seed: [u8; 32]) -> Self {
        PathAgent {
            secret,
            config,
            seed,
            next_transaction: 0,
            table: PathTable::new(config.max_vaddrs),
            peers: BTreeMap::new(),
            stranger_keys: TokenBuckets::new(STRANGER_KEYS_BURST, STRANGER_KEY_INTERVAL, 1),
            outstanding: HashMap::new(),
            outstanding_order: VecDeque::new(),
            replies: VecDeque::new(),
            events: VecDeque::new(),
            pacer: Pacer::new(config.pace_burst, config.pace),
            own_nat: NatReport::UNKNOWN,
            extra_sockets: 0,
            relay_ready: false,
            counters: AgentCounters::default(),
        }
    }

    pub fn own(&self) -> PeerId {
        self.secret.id()
    }

    /// The virtual-address table (read by the socket layer).
    pub fn table(&self) -> &PathTable {
        &self.table
    }

    /// The path QUIC packets to `vaddr` go out on.
    pub fn selected_path(&self, vaddr: SocketAddr) -> Option<Path> {
        self.table.selected(vaddr)
    }

    /// The peer's selected path, if any.
    pub fn peer_path(&self, peer: &PeerId) -> Option<Path> {
        self.peers.get(peer).and_then(|p| p.selected)
    }

    pub(super) fn transaction(&mut self) -> Transaction {
        let mut hash = Sha256::new();
        hash.update(self.seed);
        hash.update(self.next_transaction.to_be_bytes());
        self.next_transaction += 1;
        let digest = hash.finalize();
        let mut id = [0u8; 12];
        id.copy_from_slice(&digest[..12]);
        id
    }

    /// The state of `peer`, created (with its key and virtual address) if needed.
    pub(super) fn peer_state(
        &mut self,
        now: Instant,
        peer: PeerId,
    ) -> Result<&mut PeerPaths, PathError> {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.config.max_peers {
                self.evict_idle_peer()?;
            }
            let key = self.secret.pair_key(&peer)?;
            let vaddr = self.table.vaddr_for_peer(peer)?;
            self.peers.insert(peer, PeerPaths::new(now, key, vaddr));
        }
        let state = self.peers.get_mut(&peer).expect("inserted above");
        state.last_activity = now;
        Ok(state)
    }

    fn evict_idle_peer(&mut self) -> Result<(), PathError> {
        let victim = self
            .peers
            .iter()
            .filter(|(_, p)| !p.connected && !p.checking() && p.round_until.is_none())
            .min_by_key(|(_, p)| p.last_activity)
            .map(|(id, _)| *id)
            .ok_or(PathError::TooManyPeers)?;
        self.forget(&victim);
        Ok(())
    }

    /// Forgets `peer`: its state, its virtual addresses and its extra sockets.
    pub fn forget(&mut self, peer: &PeerId) {
        if let Some(state) = self.peers.remove(peer) {
            for vaddr in &state.vaddrs {
                self.table.release(*vaddr);
            }
            self.close_sockets(state.sockets);
        }
    }

    /// Starts (or extends) a round of checks towards `peer`'s candidates on the main socket,
    /// and the birthday method if the two NATs need it. Returns the peer's virtual address (dial
    /// it once a path is selected).
    ///
    /// Who checks first: a side whose NAT moves its port after unsolicited inbound (a bare Linux
    /// NAT) must send before the other side's first check reaches it, so it goes at once and the
    /// other side waits [`AgentConfig::answer_delay`]; otherwise the dialler goes first.
    pub fn start_checks(
        &mut self,
        now: Instant,
        peer: PeerId,
        candidates: &PeerCandidates<'_>,
        role: CheckRole,
    ) -> Result<SocketAddr, PathError> {
        let config = self.config;
        let first = if self.goes_first(candidates.nat, role) {
            now
        } else {
            now + config.answer_delay
        };
        let until = first + config.check_timeout;
        // The answering side checks briefly; triggered checks carry it through the round.
        let pairs_until = match role {
            CheckRole::Dialler => until,
            CheckRole::Answerer => first + config.answer_window.min(config.check_timeout),
        };
        let state = self.peer_state(now, peer)?;
        state.round_until = Some(state.round_until.map_or(until, |t| t.max(until)));
        (state.peer_nat, state.peer_observed) = (candidates.nat, candidates.observed);
        state.crossing_rounds = 0;
        let direct = if config.relay_only {
            &[][..]
        } else {
            candidates.addrs
        };
        for candidate in direct {
            let remote = normalize(*candidate);
            if let Some(pair) = state.pair_or_insert(LocalSocketId(0), remote, config.max_pairs) {
                if pair.state != PairState::Succeeded {
                    pair.schedule(first, pairs_until);
                }
            }
        }
        let vaddr = state.vaddrs[0];
        // Relayed pairs start at once whoever dials: no NAT is poisoned by them (they go to and
        // come from a relay's address), and the peer's relay needs our permission early.
        self.schedule_relay_pairs(
            peer,
            candidates.observed,
            candidates.relayed,
            now,
            pairs_until,
        );
        if let (Some(observed), false) = (candidates.observed, config.relay_only) {
            self.start_birthday(first, peer, observed, candidates.nat);
        }
        Ok(vaddr)
    }

    fn goes_first(&self, peer: NatReport, role: CheckRole) -> bool {
        let moves = |inbound| inbound == InboundBehaviour::MovesPort;
        match (moves(self.own_nat.inbound), moves(peer.inbound)) {
            (true, false) => true,
            (false, true) => false,
            _ if role == CheckRole::Dialler => true,
            // The delay protects a dialler behind a port-preserving NAT that may move its port
            // after unsolicited inbound (a bare Linux NAT not measured as such). A dialler
            // that is public, behind an endpoint-dependent NAT (its checks leave from new
            // ports anyway) or measured `keeps-port` cannot be hurt by early checks.
            _ => {
                matches!(
                    peer.mapping,
                    NatBehaviour::Public | NatBehaviour::EndpointDependent
                ) || peer.inbound == InboundBehaviour::KeepsPort
            }
        }
    }

    /// A QUIC connection to `peer` is up (heartbeats run) or gone (they stop).
    pub fn set_connected(&mut self, now: Instant, peer: &PeerId, connected: bool) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.connected = connected;
            state.last_activity = now;
            state.next_heartbeat = connected.then_some(now + self.config.heartbeat);
        }
    }

    /// A project datagram arrived on `local` from `from`. An error says why it was dropped.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: LocalSocketId,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), PathError> {
        let from = normalize(from);
        let result = self.datagram(now, local, from, bytes);
        if result.is_err() {
            self.counters.rejected += 1;
        }
        result
    }

    /// Makes `path` the peer's selected path. A *provisional* selection (the source of an
    /// authenticated check, while the peer has no path at all) only gives QUIC somewhere to
    /// answer a handshake that arrives before our own check succeeds; checks go on, and any
    /// success replaces it.
    pub(super) fn select(
        &mut self,
        now: Instant,
        peer: PeerId,
        path: Path,
        rtt: Option<Duration>,
        provisional: bool,
    ) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let previous = state.selected.replace(path);
        state.provisional = provisional;
        self.route_to_peer(peer, path, true);
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if !provisional {
            if let Some(pair) = state.pair_mut(path.local, path.remote) {
                pair.follow = false;
            }
            // Higher-class pairs still being checked may replace this; lower ones stop here.
            // Relayed pairs go on until they succeed: they are the fallback (`super::relay`).
            let new_class = class(&path);
            for pair in &mut state.pairs {
                if pair.state != PairState::Succeeded
                    && class(&pair.path) <= new_class
                    && pair.path.kind != PathKind::Relayed
                {
                    pair.next_check = None;
                }
            }
            state.repunch_at = None;
            // A relayed path is only the fallback: a birthday attempt goes on under it.
            if path.kind == PathKind::Direct {
                let keep = (path.local != LocalSocketId::MAIN).then_some(path.local);
                self.end_birthday(&peer, keep);
                self.end_crossing(&peer, keep);
            }
            self.relay_selected(&peer, path, now);
            self.maybe_start_crossing(peer);
        }
        self.events.push_back(AgentEvent::PathSelected {
            peer,
            path,
            previous,
            rtt,
        });
    }

    /// Runs whatever is due at `now`: ends rounds and pair windows, schedules heartbeats,
    /// replaces or re-punches silent paths, forgets old unanswered checks.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((sent, transaction)) = self.outstanding_order.front().copied() {
            if now.saturating_duration_since(sent) < self.config.check_timeout
                && self.outstanding_order.len() <= MAX_OUTSTANDING
            {
                break;
            }
            self.outstanding_order.pop_front();
            self.outstanding.remove(&transaction);
        }
        let config = self.config;
        let relay_ready = self.relay_ready;
        let mut selections = Vec::new();
        let mut ended = Vec::new();
        for (peer, state) in &mut self.peers {
            for pair in &mut state.pairs {
                if pair.check_until.is_some_and(|t| t <= now) {
                    pair.check_until = None;
                    pair.next_check = None;
                    pair.triggered = false;
                    if pair.state != PairState::Succeeded {
                        pair.state = PairState::Failed;
                    }
                }
            }
            if state.round_until.is_some_and(|t| t <= now) {
                state.round_until = None;
                if state.selected.is_none() {
                    self.events
                        .push_back(AgentEvent::ChecksFailed { peer: *peer });
                }
                if state.birthday.is_some() {
                    ended.push(*peer);
                }
            }
            let Some(selected) = state.selected else {
                continue;
            };
            if !state.connected || state.next_heartbeat.is_none_or(|t| t > now) {
                continue;
            }
            let last_reply = state
                .pairs
                .iter()
                .find(|p| p.path == selected)
                .and_then(|p| p.last_reply);
            let silent =
                last_reply.is_none_or(|t| now.saturating_duration_since(t) >= config.path_timeout);
            let overdue =
                last_reply.is_none_or(|t| now.saturating_duration_since(t) > config.heartbeat);
            if silent {
                let alternative = state
                    .pairs
                    .iter()
                    .filter(|p| p.path != selected)
                    .filter(|p| {
                        p.last_reply
                            .is_some_and(|t| now.saturating_duration_since(t) < config.path_timeout)
                    })
                    .max_by_key(|p| (class(&p.path), p.last_reply))
                    .map(|p| (p.path, p.rtt));
                if let Some((path, rtt)) = alternative {
                    selections.push((*peer, path, rtt));
                } else if state
                    .repunch_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= config.check_timeout)
                {
                    state.repunch_at = Some(now);
                    let until = now + config.check_timeout;
                    state.round_until = Some(until);
                    for pair in &mut state.pairs {
                        if relay_ready || pair.path.local != LocalSocketId::RELAY {
                            pair.schedule(now, until);
                        }
                    }
                    self.events
                        .push_back(AgentEvent::NeedCandidates { peer: *peer });
                }
            }
            let usable = relay_ready || selected.local != LocalSocketId::RELAY;
            if let (true, Some(pair)) = (usable, state.pair_mut(selected.local, selected.remote)) {
                pair.next_check = Some(now);
            }
            Self::keep_relay_warm(state, selected, now, relay_ready);
            let gap = if overdue {
                config.retransmit
            } else {
                config.heartbeat
            };
            state.next_heartbeat = Some(now + gap);
        }
        for (peer, path, rtt) in selections {
            self.select(now, peer, path, rtt, false);
        }
        self.try_upgrades(now);
        self.crossing_timeouts(now);
        for peer in ended {
            self.end_birthday(&peer, None);
        }
    }

    /// The next output; see the module documentation for the order.
    pub fn poll_output(&mut self, now: Instant) -> Output {
        if let Some(reply) = self.replies.pop_front() {
            return Output::Transmit(reply);
        }
        if self.pacer.ready(now) {
            if let Some(transmit) = self.next_check(now) {
                self.pacer.take();
                return Output::Transmit(transmit);
            }
        }
        if let Some(event) = self.events.pop_front() {
            return Output::Event(event);
        }
        Output::Timeout(self.poll_timeout(now))
    }

    fn next_check(&mut self, now: Instant) -> Option<Transmit> {
        let due = self
            .peers
            .iter()
            .filter_map(|(id, state)| state.due_pair(now).map(|i| (id, state, i)))
            .min_by_key(|(_, state, i)| {
                let pair = &state.pairs[*i];
                (!pair.triggered, pair.next_check)
            })
            .map(|(id, _, i)| (*id, i));
        let Some((peer, index)) = due else {
            return self.next_spray(now);
        };
        let config = self.config;
        let state = self.peers.get_mut(&peer).expect("found above");
        let heartbeat = state.selected == Some(state.pairs[index].path);
        let pair = &mut state.pairs[index];
        pair.triggered = false;
        if pair.state == PairState::Waiting {
            pair.state = PairState::InProgress;
        }
        // The first retries come early: by then the answering side's first checks (at once,
        // or after its answer delay) have opened its NAT towards our address, which lets a
        // check from a new port (a symmetric NAT on our side) through an address-restricted
        // filter without waiting a full interval.
        let gap = match pair.retransmit {
            Some(gap) => gap,
            None => EARLY_RETRY_GAPS
                .get(pair.checks_sent as usize)
                .copied()
                .unwrap_or(config.retransmit),
        };
        pair.checks_sent = pair.checks_sent.saturating_add(1);
        let retry = now + gap;
        pair.next_check = match (pair.state, pair.check_until) {
            (PairState::Succeeded, _) => None,
            (_, Some(until)) if retry < until => Some(retry),
            _ => None,
        };
        let path = pair.path;
        Some(self.send_check_at(now, peer, path, heartbeat))
    }

    /// A check that leaves at `now` (a sweep's: later, `super::crossing`).
    pub(super) fn send_check_at(
        &mut self,
        now: Instant,
        peer: PeerId,
        path: Path,
        heartbeat: bool,
    ) -> Transmit {
        let transaction = self.transaction();
        let check = CheckDatagram {
            transaction,
            sender: self.own(),
            receiver: peer,
            body: CheckBody::Check {
                heartbeat,
                relayed: path.local == LocalSocketId::RELAY,
            },
        };
        let contents = check.encode(&self.peers[&peer].key);
        self.outstanding.insert(
            transaction,
            Outstanding {
                peer,
                path,
                sent: now,
            },
        );
        self.outstanding_order.push_back((now, transaction));
        if self.outstanding_order.len() > MAX_OUTSTANDING {
            if let Some((_, oldest)) = self.outstanding_order.pop_front() {
                self.outstanding.remove(&oldest);
            }
        }
        self.counters.checks_sent += 1;
        Transmit {
            local: path.local,
            destination: path.remote,
            contents,
        }
    }

    fn poll_timeout(&self, now: Instant) -> Instant {
        let mut next = now + IDLE;
        for state in self.peers.values() {
            let candidates = [
                state
                    .next_check_due()
                    .map(|t| match self.pacer.next_token_at() {
                        Some(paced) => t.max(paced),
                        None => t,
                    }),
                state.round_until,
                state.pairs.iter().filter_map(|p| p.check_until).min(),
                state.connected.then_some(state.next_heartbeat).flatten(),
                match state.birthday {
                    Some(Birthday::Easy {
                        remaining,
                        not_before,
                        ..
                    }) if remaining > 0 && state.round_until.is_some() => {
                        Some(match self.pacer.next_token_at() {
                            Some(paced) => not_before.max(paced),
                            None => not_before,
                        })
                    }
                    _ => None,
                },
                super::crossing::crossing_deadline(state),
            ];
            for t in candidates.into_iter().flatten() {
                next = next.min(t);
            }
        }
        if let Some((sent, _)) = self.outstanding_order.front() {
            next = next.min(*sent + self.config.check_timeout);
        }
        if let Some(upgrade) = self.next_upgrade() {
            next = next.min(upgrade);
        }
        next
    }
}
