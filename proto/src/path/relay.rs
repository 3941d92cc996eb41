//! Relayed paths in the agent: the fallback that always works while a relay does.
//!
//! Three kinds of pair are relayed ([`PathKind::Relayed`]):
//! - *through our relay*: local [`LocalSocketId::RELAY`] (our TURN allocation; the driver wraps
//!   the datagram for the relay server) to the peer's observed address, or to wherever the
//!   peer's checks reach our relayed address from (a triggered check: a symmetric NAT gives the
//!   peer a new port towards the relay);
//! - *through the peer's relay*: our main socket to the peer's relayed address (from the
//!   rendezvous);
//! - *through both relays*: our allocation to the peer's relayed address, only when the peer
//!   has no UDP address (it registered over TLS: UDP is blocked on its side), so that two
//!   peers without UDP still meet.
//!
//! A check the peer sent through its own relay says so (the `relayed` flag of the check,
//! covered by its tag), so the pair it arrives on is known to be relayed even when its address
//! was never advertised.
//!
//! Relayed pairs are checked beside the direct ones from the first instant of a round (on the
//! answering side too: the answer delay only protects NATs from early direct checks), so the
//! first message goes through the relay when nothing direct answers at once. They rank below
//! every direct path ([`super::pairs::class`]): a direct success replaces a relayed selection
//! under the same virtual address, and quinn never sees the change. While a direct path is
//! selected, the best relayed pair that succeeded gets a check with every heartbeat, so that
//! when the direct path goes silent a live relayed path replaces it at once. While a relayed
//! path is selected, the agent asks for a fresh punch ([`AgentEvent::NeedCandidates`]) after
//! [`UPGRADE_FIRST`], then at doubling gaps up to [`UPGRADE_MAX`], until a direct path wins.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::agent::PathAgent;
use super::events::AgentEvent;
use super::pairs::{PairState, PeerPaths};
use super::{LocalSocketId, Path, PathKind};
use crate::PeerId;

/// First try for a direct path after a relayed one was selected.
pub const UPGRADE_FIRST: Duration = Duration::from_secs(10);
/// Longest gap between tries for a direct path (a symmetric pair that never punches costs one
/// round of checks per this gap).
pub const UPGRADE_MAX: Duration = Duration::from_secs(160);

impl PathAgent {
    /// Our relay allocation is up (`true`) or gone (`false`). While it is gone no pair is
    /// checked through it, and paths through it count as silent (they are replaced or
    /// re-punched at the next heartbeat).
    pub fn set_relay(&mut self, ready: bool) {
        self.relay_ready = ready;
        if ready {
            return;
        }
        for state in self.peers.values_mut() {
            for pair in &mut state.pairs {
                if pair.path.local == LocalSocketId::RELAY {
                    pair.state = PairState::Failed;
                    pair.next_check = None;
                    pair.check_until = None;
                    pair.triggered = false;
                    pair.last_reply = None;
                }
            }
        }
    }

    /// Whether pairs through our relay are checked.
    pub fn relay_ready(&self) -> bool {
        self.relay_ready
    }

    /// Adds and schedules `peer`'s relayed pairs for a round from `first` to `until`.
    pub(super) fn schedule_relay_pairs(
        &mut self,
        peer: PeerId,
        observed: Option<SocketAddr>,
        peer_relayed: Option<SocketAddr>,
        first: Instant,
        until: Instant,
    ) {
        let max_pairs = self.config.max_pairs;
        let relay_ready = self.relay_ready;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(relayed) = peer_relayed {
            state.peer_relayed = Some(relayed);
            schedule(state, LocalSocketId::MAIN, relayed, max_pairs, first, until);
        }
        match (relay_ready, observed, peer_relayed) {
            (true, Some(observed), _) => schedule(
                state,
                LocalSocketId::RELAY,
                observed,
                max_pairs,
                first,
                until,
            ),
            // No UDP address for the peer (it reaches the rendezvous over TLS): relay to relay,
            // through our allocation to its, the one path left when neither side has UDP.
            (true, None, Some(relayed)) => schedule(
                state,
                LocalSocketId::RELAY,
                relayed,
                max_pairs,
                first,
                until,
            ),
            _ => {}
        }
    }

    /// Ahead of a heartbeat on `selected` (a direct path): checks the best relayed pair that
    /// succeeded, so it is live when the direct path fails.
    pub(super) fn keep_relay_warm(
        state: &mut PeerPaths,
        selected: Path,
        now: Instant,
        relay_ready: bool,
    ) {
        if selected.kind == PathKind::Relayed {
            return;
        }
        if let Some(backup) = state
            .pairs
            .iter_mut()
            .filter(|p| p.path.kind == PathKind::Relayed && p.state == PairState::Succeeded)
            .filter(|p| relay_ready || p.path.local != LocalSocketId::RELAY)
            .max_by_key(|p| p.last_reply)
        {
            backup.next_check = Some(now);
        }
    }

    /// After `path` became `peer`'s selected path: a relayed one starts (or keeps) the timer of
    /// tries for a direct path; a direct one stops it.
    pub(super) fn relay_selected(&mut self, peer: &PeerId, path: Path, now: Instant) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        if path.kind == PathKind::Relayed {
            if state.upgrade_at.is_none() {
                state.upgrade_gap = UPGRADE_FIRST;
                state.upgrade_at = Some(now + UPGRADE_FIRST);
            }
        } else {
            state.upgrade_at = None;
            state.upgrade_gap = Duration::ZERO;
        }
    }

    /// Runs due tries for a direct path: every direct pair is checked again and the driver is
    /// asked for fresh candidates (a punch through the rendezvous, which the peer answers).
    pub(super) fn try_upgrades(&mut self, now: Instant) {
        let check_timeout = self.config.check_timeout;
        let relay_only = self.config.relay_only;
        for (peer, state) in &mut self.peers {
            if state.upgrade_at.is_none_or(|t| t > now) {
                continue;
            }
            if let Some(round_end) = state.round_until {
                // A round is running (it checks the direct pairs too): try after it.
                state.upgrade_at = Some(round_end.max(now + Duration::from_millis(1)));
                continue;
            }
            if relay_only
                || !state.connected
                || state.selected.is_none_or(|p| p.kind != PathKind::Relayed)
            {
                state.upgrade_at = None;
                continue;
            }
            state.upgrade_gap = (state.upgrade_gap * 2).min(UPGRADE_MAX);
            state.upgrade_at = Some(now + state.upgrade_gap);
            let until = now + check_timeout;
            state.round_until = Some(until);
            for pair in &mut state.pairs {
                if pair.path.kind == PathKind::Direct {
                    pair.schedule(now, until);
                }
            }
            self.events
                .push_back(AgentEvent::NeedCandidates { peer: *peer });
        }
    }

    /// The earliest try for a direct path.
    pub(super) fn next_upgrade(&self) -> Option<Instant> {
        self.peers.values().filter_map(|s| s.upgrade_at).min()
    }
}

/// Adds (or reuses) the relayed pair (`local`, `remote`) and schedules it.
fn schedule(
    state: &mut PeerPaths,
    local: LocalSocketId,
    remote: SocketAddr,
    max_pairs: usize,
    first: Instant,
    until: Instant,
) {
    let selected = state.selected;
    if let Some(pair) = state.pair_or_insert(local, remote, max_pairs) {
        mark_relayed(pair, selected);
        if pair.state != PairState::Succeeded {
            pair.schedule(first, until);
        }
    }
}

/// Marks a pair first seen as direct as relayed (its address turned out to be a relay's). The
/// selected path keeps its identity until it is replaced, so it is left as it is.
pub(super) fn mark_relayed(pair: &mut super::pairs::CandidatePair, selected: Option<Path>) {
    if pair.path.kind == PathKind::Direct && Some(pair.path) != selected {
        pair.path.kind = PathKind::Relayed;
    }
}
