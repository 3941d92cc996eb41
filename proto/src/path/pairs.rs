//! One peer's candidate pairs: what has been checked, what answered, which path is selected.
//! Plain data with no I/O; [`super::agent::PathAgent`] drives it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::auth::PairKey;
use super::{LocalSocketId, Path, PathKind};

/// A check's progress on one pair (RFC 8445 section 6.1.2.6, without Frozen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairState {
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

/// One (local socket, remote address) pair of a peer.
#[derive(Debug, Clone)]
pub struct CandidatePair {
    pub path: Path,
    pub state: PairState,
    /// When the next check on this pair is due (`None`: none scheduled).
    pub next_check: Option<Instant>,
    /// Checks on this pair stop after this instant (unless it succeeded).
    pub check_until: Option<Instant>,
    /// A check from the peer arrived on this pair: check it ahead of ordinary checks.
    pub triggered: bool,
    /// The peer's heartbeat (sent on its selected path) arrived here: its NAT now sends from
    /// this address, so a success here replaces the selected path of the same class.
    pub follow: bool,
    pub last_reply: Option<Instant>,
    pub rtt: Option<Duration>,
    /// Gap between checks until it answers (birthday pairs use a longer one).
    pub retransmit: Option<Duration>,
    /// Checks sent on this pair.
    pub checks_sent: u32,
}

impl CandidatePair {
    pub fn new(local: LocalSocketId, remote: SocketAddr, kind: PathKind) -> Self {
        CandidatePair {
            path: Path {
                local,
                remote,
                kind,
            },
            state: PairState::Waiting,
            next_check: None,
            check_until: None,
            triggered: false,
            follow: false,
            last_reply: None,
            rtt: None,
            retransmit: None,
            checks_sent: 0,
        }
    }

    /// Schedules checks from `at` until `until` (a pair already being checked keeps its
    /// earlier schedule; the window only grows).
    pub fn schedule(&mut self, at: Instant, until: Instant) {
        if self.state != PairState::Succeeded {
            self.state = match self.state {
                PairState::Failed => PairState::Waiting,
                other => other,
            };
        }
        self.next_check = Some(self.next_check.map_or(at, |t| t.min(at)));
        self.check_until = Some(self.check_until.map_or(until, |t| t.max(until)));
    }
}

/// Path class: a path inside a LAN (private, loopback or link-local address, 2) beats one
/// across the internet (1), which beats a relayed one (0); within a class the agent keeps what
/// works (see the agent's selection rules).
pub fn class(path: &Path) -> u8 {
    if path.kind == PathKind::Relayed {
        return 0;
    }
    let lan = match path.remote.ip() {
        IpAddr::V4(ip) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local(),
    };
    1 + u8::from(lan)
}

/// Everything the agent keeps about one peer.
#[derive(Debug)]
pub struct PeerPaths {
    pub key: PairKey,
    /// The peer's virtual addresses: the first is the one we dial; an incoming connection that
    /// got another address before the peer was known adds it. The selected path is set on all.
    pub vaddrs: Vec<SocketAddr>,
    pub pairs: Vec<CandidatePair>,
    pub selected: Option<Path>,
    /// The selected path is only the source of the peer's check: no check of ours succeeded
    /// on it yet (see the agent's `select`).
    pub provisional: bool,
    /// End of the current round of checks (from `start_checks`); `None` when no round runs.
    pub round_until: Option<Instant>,
    /// A QUIC connection is up: heartbeats run on the selected path.
    pub connected: bool,
    pub next_heartbeat: Option<Instant>,
    /// When the agent last asked the driver for fresh candidates (re-punch).
    pub repunch_at: Option<Instant>,
    pub last_activity: Instant,
    /// The birthday attempt in progress, if this pair of NATs needs one.
    pub birthday: Option<super::birthday::Birthday>,
    /// Extra local sockets this peer holds (a birthday's, or the one its path won on).
    pub sockets: Vec<LocalSocketId>,
    /// The peer's relayed address (from the rendezvous): paths to it are relayed.
    pub peer_relayed: Option<SocketAddr>,
    /// While the selected path is relayed: when to try for a direct one again, and the gap
    /// after that (see `super::relay`).
    pub upgrade_at: Option<Instant>,
    pub upgrade_gap: Duration,
    /// What the peer detected of its NAT, and the address the rendezvous observes it at (from
    /// the last `start_checks`).
    pub peer_nat: crate::nat::NatReport,
    pub peer_observed: Option<SocketAddr>,
    /// The crossing sweep in progress (two bare Linux NATs), and rounds run since the last
    /// punch (`super::crossing`).
    pub crossing: Option<super::crossing::Crossing>,
    pub crossing_rounds: u8,
}

impl PeerPaths {
    pub fn new(now: Instant, key: PairKey, vaddr: SocketAddr) -> Self {
        PeerPaths {
            key,
            vaddrs: vec![vaddr],
            pairs: Vec::new(),
            selected: None,
            provisional: false,
            round_until: None,
            connected: false,
            next_heartbeat: None,
            repunch_at: None,
            last_activity: now,
            birthday: None,
            sockets: Vec::new(),
            peer_relayed: None,
            upgrade_at: None,
            upgrade_gap: Duration::ZERO,
            peer_nat: crate::nat::NatReport::UNKNOWN,
            peer_observed: None,
            crossing: None,
            crossing_rounds: 0,
        }
    }

    pub fn pair_mut(
        &mut self,
        local: LocalSocketId,
        remote: SocketAddr,
    ) -> Option<&mut CandidatePair> {
        self.pairs
            .iter_mut()
            .find(|p| p.path.local == local && p.path.remote == remote)
    }

    /// The pair for (local, remote), added if there is room (`max` pairs; a failed pair, then
    /// the oldest non-selected, makes room for a new one).
    pub fn pair_or_insert(
        &mut self,
        local: LocalSocketId,
        remote: SocketAddr,
        max: usize,
    ) -> Option<&mut CandidatePair> {
        if let Some(index) = self
            .pairs
            .iter()
            .position(|p| p.path.local == local && p.path.remote == remote)
        {
            return self.pairs.get_mut(index);
        }
        if self.pairs.len() >= max {
            let selected = self.selected;
            let victim = self
                .pairs
                .iter()
                .position(|p| p.state == PairState::Failed)
                .or_else(|| self.pairs.iter().position(|p| Some(p.path) != selected))?;
            self.pairs.remove(victim);
        }
        let kind = if local == LocalSocketId::RELAY || Some(remote) == self.peer_relayed {
            PathKind::Relayed
        } else {
            PathKind::Direct
        };
        self.pairs.push(CandidatePair::new(local, remote, kind));
        self.pairs.last_mut()
    }

    /// The earliest instant a check on some pair is due.
    pub fn next_check_due(&self) -> Option<Instant> {
        self.pairs.iter().filter_map(|p| p.next_check).min()
    }

    /// The pair whose check should go next at `now`: triggered first, then the earliest due,
    /// LAN before internet.
    pub fn due_pair(&self, now: Instant) -> Option<usize> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.next_check.is_some_and(|t| t <= now))
            .min_by_key(|(_, p)| {
                (
                    !p.triggered,
                    p.next_check,
                    std::cmp::Reverse(class(&p.path)),
                )
            })
            .map(|(index, _)| index)
    }

    /// Whether any pair still has checks to send.
    pub fn checking(&self) -> bool {
        self.pairs.iter().any(|p| p.next_check.is_some())
    }

    /// Pairs allowed: `max`, plus one per birthday socket.
    pub fn pair_limit(&self, max: usize) -> usize {
        max + self.sockets.len()
    }
}

/// Node-wide pacing of checks: a bucket of `burst` tokens, refilled one per `gap`.
#[derive(Debug)]
pub struct Pacer {
    burst: u32,
    gap: Duration,
    tokens: u32,
    /// Tokens were last counted at this instant.
    since: Option<Instant>,
}

impl Pacer {
    pub fn new(burst: u32, gap: Duration) -> Self {
        let burst = burst.max(1);
        Pacer {
            burst,
            gap: gap.max(Duration::from_micros(1)),
            tokens: burst,
            since: None,
        }
    }

    /// Counts the tokens earned by `now`; true when one is available.
    pub fn ready(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        if self.tokens >= self.burst {
            self.since = Some(now);
        } else {
            let earned = now.saturating_duration_since(since).as_nanos() / self.gap.as_nanos();
            if earned > 0 {
                let earned = u32::try_from(earned).unwrap_or(u32::MAX);
                self.tokens = self.tokens.saturating_add(earned).min(self.burst);
                self.since = Some(if self.tokens >= self.burst {
                    now
                } else {
                    since + self.gap * earned
                });
            }
        }
        self.tokens > 0
    }

    /// Spends a token (call after `ready` said yes).
    pub fn take(&mut self) {
        self.tokens = self.tokens.saturating_sub(1);
    }

    /// When the next token is earned; `None` while one is available.
    pub fn next_token_at(&self) -> Option<Instant> {
        if self.tokens > 0 {
            return None;
        }
        self.since.map(|t| t + self.gap)
    }
}
