//! The crossing sweep: how two bare Linux NATs meet.
//!
//! A bare Linux NAT (no WAN firewall; `inbound=moves-port`) keeps an unsolicited inbound
//! datagram as a flow of its own, so a check that reaches it before its host has sent to that
//! address poisons the 4-tuple: the host's own check then leaves from another public port.
//! Between two such NATs a pair of checks only gets through if each leaves its NAT before the
//! other's arrives there, that is, if they are sent within one one-way trip of each other: 50 µs
//! in a lab, a few ms on the internet. Going first (as against any other NAT) cannot work:
//! whoever goes first poisons the other.
//!
//! So both sides send many checks on many 4-tuples, timed to cross:
//! - the *fan* side (the smaller peer ID) opens up to [`SWEEP_SOCKETS`] extra sockets (a
//!   Linux NAT keeps their ports) and sends their ports to the *aim* side in a
//!   [`CheckBody::SweepOffer`] over the selected relayed path, which already works;
//! - the aim side answers with a [`CheckBody::SweepGo`] and, the offer's `wait` after the offer
//!   arrived, checks port `k` of the fan side's public IP from its main socket, k = 0, 1, ...,
//!   one every `SWEEP_GAP + SWEEP_STEP`;
//! - the fan side measures the relay's round trip R from its offer to the Go and, `H` after
//!   the aim side's start (`R/2 + wait` after its offer left, if the relay's two directions
//!   take as long), checks the aim side's public address from socket k, k = 0, 1, ..., one
//!   every [`SWEEP_GAP`]: a vernier, like a caliper's.
//!
//! On the 4-tuple of port k the aim side's check leaves `k * SWEEP_STEP - H + e` after the fan
//! side's, where `e` is the error of the start times (the relay's asymmetry and the drivers'
//! scheduling) and `H = n * SWEEP_STEP / 2`: as k runs, the offset moves in steps of
//! [`SWEEP_STEP`] (5 µs) across `±H` (±640 µs with 256 sockets), so whenever |e| is inside
//! that some tuple's checks cross within a one-way trip and both NATs open. An ordinary check
//! then completes on that tuple, the direct path replaces the relayed one, and every extra
//! socket but the winner closes. A sweep that wins nothing within [`SWEEP_SETTLE`] is
//! followed by another from fresh sockets, [`SWEEP_ROUNDS`] per punch.
//!
//! The direction matters. The aim side's checks lead on the first tuples and trail on the
//! last: its one public port must not receive a fan-side check ahead of its own until the
//! crossing, because a bare Linux NAT that kept such checks as inbound flows gave the aim
//! side's later flows another public port (measured in netsim: no tuple crossed after fan-side
//! checks led; each fan-side port is used once, so leading checks towards it harm nothing).
//! The gaps are longer than a send costs, so neither schedule slips; a check that cannot leave
//! within [`SWEEP_MAX_LATE`] of its time (a preempted driver) is dropped rather than sent late.
//!
//! Limits: per round, one offer (at most 615 bytes) and its Go through the relay, and
//! `n` checks each way (99 bytes each: 25 KB for n = 256) in about 7 ms. The sweep's
//! checks leave in one burst the driver times itself ([`AgentEvent::Burst`]), outside the
//! node-wide pacer. Needs a relay: without a relayed path the two sides have no way to agree
//! on a moment, and the pair is left to the ordinary checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::agent::{PathAgent, Transmit};
use super::birthday::BIRTHDAY_SOCKETS;
use super::events::{AgentEvent, PathError};
use super::pairs::PeerPaths;
use super::wire::{CheckBody, CheckDatagram, SweepPorts, Transaction, MAX_SWEEP_PORTS};
use super::{LocalSocketId, Path, PathKind};
use crate::nat::{InboundBehaviour, NatBehaviour, NatReport};
use crate::PeerId;

/// Extra sockets the fan side asks for (node-wide they share [`BIRTHDAY_SOCKETS`]).
pub const SWEEP_SOCKETS: usize = MAX_SWEEP_PORTS;
/// Fewest sockets worth a sweep.
pub const SWEEP_MIN_SOCKETS: usize = 32;
/// Gap between two checks of the fan side's sweep (more than one send costs).
pub const SWEEP_GAP: Duration = Duration::from_micros(25);
/// How much longer the aim side's gap is: consecutive tuples' offsets differ by this, so it
/// must stay below the one-way trip between the NATs (a few µs in a lab of namespaces: in
/// netsim checks 30 µs apart crossed only by chance, 10 µs steps missed some sweeps).
pub const SWEEP_STEP: Duration = Duration::from_micros(5);
/// How long after its offer the fan side asks the sweep to start (more than the relay's round
/// trip; longer trips get a doubled wait on the next offer).
pub const SWEEP_WAIT: Duration = Duration::from_millis(20);
/// A sweep's check that cannot leave within this of its time is dropped: a driver preempted
/// mid-sweep (a scheduler tick is 4 ms) loses the checks due meanwhile, not the alignment of
/// all that follow.
pub const SWEEP_MAX_LATE: Duration = Duration::from_micros(20);
/// How long a sweep may take to win before the next round (a win shows within a few round
/// trips).
pub const SWEEP_SETTLE: Duration = Duration::from_millis(250);
/// Sweeps per punch (each new punch through the rendezvous allows as many again).
pub const SWEEP_ROUNDS: u8 = 5;
/// An offer unanswered for this long is sent again (with a new ID), up to [`OFFER_TRIES`].
pub const OFFER_RESEND: Duration = Duration::from_millis(250);
pub const OFFER_TRIES: u8 = 4;
/// How long before its start the aim side makes its sweep's checks.
pub const SWEEP_PREPARE: Duration = Duration::from_millis(10);
/// Longest wait an offer asks for.
const MAX_WAIT: Duration = Duration::from_millis(2000);

/// One peer's crossing sweep in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crossing {
    /// Fan side: `asked` sockets requested from the driver.
    Opening { asked: usize },
    /// Fan side: offer `id` left at `sent`, asking for `wait`; awaiting the Go.
    Offered {
        id: Transaction,
        sent: Instant,
        wait: Duration,
        sockets: Vec<(LocalSocketId, u16)>,
        tries: u8,
    },
    /// Fan side: the sweep is with the driver; it has until `until` to win.
    Swept {
        until: Instant,
        sockets: Vec<LocalSocketId>,
    },
    /// Aim side: one fresh socket asked for, to sweep from.
    Arming,
    /// Aim side: the socket to sweep from is open (`port` 0: none could be, the main socket
    /// serves).
    Armed { socket: LocalSocketId, port: u16 },
    /// Aim side: the sweep for offer `id` starts at `at`, from `socket`; its checks are made
    /// [`SWEEP_PREPARE`] before (`ports` is `None` once they went to the driver), not when the
    /// offer arrives, so the Go leaves at once (256 tags take milliseconds in a debug build,
    /// and a late Go would skew the fan side's measure of the relay's round trip). A repeated
    /// offer `id` gets its Go again but no second sweep.
    Aimed {
        id: Transaction,
        at: Instant,
        ports: Option<Box<SweepPorts>>,
        until: Instant,
        socket: LocalSocketId,
        port: u16,
    },
}

/// Whether this pair of NATs needs the crossing sweep: both bare Linux NATs (endpoint-independent
/// mapping that moves after unsolicited inbound).
pub fn needs_crossing(own: NatReport, peer: NatReport) -> bool {
    let bare = |nat: NatReport| {
        nat.mapping == NatBehaviour::EndpointIndependent
            && nat.inbound == InboundBehaviour::MovesPort
    };
    bare(own) && bare(peer)
}

impl PathAgent {
    /// Starts a sweep round towards `peer` if the pair needs one, a relayed path is selected to
    /// agree on the moment, and rounds and sockets remain: the fan side opens its sockets, the
    /// aim side one fresh socket (a port that took a sweep's trailing checks gave later flows
    /// another public port in netsim, so no sweep reuses one).
    pub(super) fn maybe_start_crossing(&mut self, peer: PeerId) {
        let own = self.own();
        let room = BIRTHDAY_SOCKETS.saturating_sub(self.extra_sockets);
        let own_nat = self.own_nat;
        let relay_only = self.config.relay_only;
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let relayed = state.selected.is_some_and(|p| p.kind == PathKind::Relayed);
        if relay_only
            || !relayed
            || state.provisional
            || state.crossing.is_some()
            || state.crossing_rounds >= SWEEP_ROUNDS
            || state.peer_observed.is_none()
            || !needs_crossing(own_nat, state.peer_nat)
        {
            return;
        }
        let fan = own < peer;
        let asked = if fan { SWEEP_SOCKETS.min(room) } else { 1 };
        if (fan && asked < SWEEP_MIN_SOCKETS) || room == 0 {
            return; // a birthday attempt holds the sockets
        }
        state.crossing_rounds += 1;
        state.crossing = Some(if fan {
            Crossing::Opening { asked }
        } else {
            Crossing::Arming
        });
        self.extra_sockets += asked;
        self.events
            .push_back(AgentEvent::OpenSockets { peer, count: asked });
    }

    /// The driver opened `sockets` (with their local ports) for `peer`'s sweep (the fan side's
    /// many, or the aim side's one).
    pub(super) fn crossing_sockets_opened(
        &mut self,
        now: Instant,
        peer: PeerId,
        sockets: &[(LocalSocketId, u16)],
    ) {
        let ids: Vec<LocalSocketId> = sockets.iter().map(|(id, _)| *id).collect();
        let crossing = self.peers.get(&peer).and_then(|s| s.crossing.clone());
        let asked = match crossing {
            Some(Crossing::Opening { asked }) => asked,
            Some(Crossing::Arming) => 1,
            _ => 0,
        };
        self.extra_sockets = self.extra_sockets.saturating_sub(asked) + sockets.len();
        let Some(state) = self.peers.get_mut(&peer).filter(|_| asked > 0) else {
            self.close_sockets(ids);
            return;
        };
        state.sockets.extend_from_slice(&ids);
        if crossing == Some(Crossing::Arming) {
            let (socket, port) = sockets.first().copied().unwrap_or((LocalSocketId::MAIN, 0));
            state.crossing = Some(Crossing::Armed { socket, port });
            return;
        }
        if sockets.is_empty() {
            state.crossing = None;
            return;
        }
        state.crossing = Some(Crossing::Offered {
            id: [0; 12],
            sent: now,
            wait: SWEEP_WAIT,
            sockets: sockets.to_vec(),
            tries: 0,
        });
        self.send_offer(now, peer);
    }

    /// Sends (again) the offer of `peer`'s sweep, with a new ID; gives the round up when the
    /// relayed path is gone or the tries are spent.
    fn send_offer(&mut self, now: Instant, peer: PeerId) {
        let id = self.transaction();
        let own = self.own();
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let path = state.selected.filter(|p| p.kind == PathKind::Relayed);
        let offer = match (state.crossing.as_mut(), path) {
            (
                Some(Crossing::Offered {
                    id: offer_id,
                    sent,
                    wait,
                    sockets,
                    tries,
                }),
                Some(path),
            ) if *tries < OFFER_TRIES => {
                *tries += 1;
                (*offer_id, *sent) = (id, now);
                let ports: Vec<u16> = sockets.iter().map(|(_, port)| *port).collect();
                Some((path, *wait, ports))
            }
            (Some(Crossing::Offered { .. }), _) => None,
            _ => return,
        };
        let Some((path, wait, ports)) = offer else {
            self.end_crossing(&peer, None);
            return;
        };
        let offer = CheckDatagram {
            transaction: id,
            sender: own,
            receiver: peer,
            body: CheckBody::SweepOffer {
                wait_ms: wait.as_millis().min(u128::from(u16::MAX)) as u16,
                ports: SweepPorts::new(&ports),
            },
        };
        let contents = offer.encode(&state.key);
        self.replies.push_back(Transmit {
            local: path.local,
            destination: path.remote,
            contents,
        });
    }

    /// A SweepOffer or SweepGo from `peer` (layout decoded, tag not yet checked).
    pub(super) fn sweep_message_arrived(
        &mut self,
        now: Instant,
        local: LocalSocketId,
        from: SocketAddr,
        bytes: &[u8],
        datagram: &CheckDatagram,
    ) -> Result<(), PathError> {
        let peer = datagram.sender;
        // Only a peer we are checking with may ask for a sweep: no key is derived for strangers.
        let state = self.peers.get(&peer).ok_or(PathError::UnknownSweep)?;
        if !CheckDatagram::verify(bytes, &state.key) {
            return Err(PathError::BadTag);
        }
        match datagram.body {
            CheckBody::SweepOffer { wait_ms, ports } => self.offer_arrived(
                now,
                peer,
                local,
                from,
                datagram.transaction,
                wait_ms,
                &ports,
            ),
            CheckBody::SweepGo { port } => self.go_arrived(now, peer, datagram.transaction, port),
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn offer_arrived(
        &mut self,
        now: Instant,
        peer: PeerId,
        local: LocalSocketId,
        from: SocketAddr,
        id: Transaction,
        wait_ms: u16,
        ports: &SweepPorts,
    ) -> Result<(), PathError> {
        let own = self.own();
        let own_nat = self.own_nat;
        let state = self.peers.get_mut(&peer).ok_or(PathError::UnknownSweep)?;
        let target = state.peer_observed;
        let direct = state.selected.is_some_and(|p| p.kind == PathKind::Direct);
        if target.is_none() || own < peer || direct || !needs_crossing(own_nat, state.peer_nat) {
            return Err(PathError::UnknownSweep);
        }
        // Sweep from the armed socket (or, for a repeated offer, from the one already chosen).
        let (socket, port, repeated) = match state.crossing {
            Some(Crossing::Armed { socket, port }) => (socket, port, false),
            Some(Crossing::Aimed {
                id: aimed,
                socket,
                port,
                ..
            }) => (socket, port, aimed == id),
            _ => (LocalSocketId::MAIN, 0, false),
        };
        let go = CheckDatagram {
            transaction: id,
            sender: own,
            receiver: peer,
            body: CheckBody::SweepGo { port },
        };
        let contents = go.encode(&state.key);
        self.replies.push_back(Transmit {
            local,
            destination: from,
            contents,
        });
        if repeated {
            return Ok(()); // our Go was lost: the sweep is already scheduled
        }
        let at = now + Duration::from_millis(u64::from(wait_ms)).min(MAX_WAIT);
        state.crossing = Some(Crossing::Aimed {
            id,
            at,
            ports: Some(Box::new(*ports)),
            until: at + SWEEP_SETTLE,
            socket,
            port,
        });
        Ok(())
    }

    /// Aim side: hands `peer`'s sweep to the driver (called [`SWEEP_PREPARE`] before it starts).
    fn aim(&mut self, peer: PeerId) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let (
            Some(target),
            Some(Crossing::Aimed {
                at, ports, socket, ..
            }),
        ) = (state.peer_observed, state.crossing.as_mut())
        else {
            return;
        };
        let (at, local, Some(ports)) = (*at, *socket, ports.take()) else {
            return;
        };
        let transmits = ports
            .as_slice()
            .iter()
            .map(|port| {
                let path = Path {
                    local,
                    remote: SocketAddr::new(target.ip(), *port),
                    kind: PathKind::Direct,
                };
                self.send_check_at(at, peer, path, false)
            })
            .collect();
        self.events.push_back(AgentEvent::Burst {
            at,
            gap: SWEEP_GAP + SWEEP_STEP,
            max_late: SWEEP_MAX_LATE,
            transmits,
        });
    }

    fn go_arrived(
        &mut self,
        now: Instant,
        peer: PeerId,
        id: Transaction,
        port: u16,
    ) -> Result<(), PathError> {
        let state = self.peers.get_mut(&peer).ok_or(PathError::UnknownSweep)?;
        let observed = state.peer_observed.ok_or(PathError::UnknownSweep)?;
        let target = match port {
            0 => observed,
            port => SocketAddr::new(observed.ip(), port),
        };
        let (sent, wait, sockets) = match state.crossing.take() {
            Some(Crossing::Offered {
                id: offer_id,
                sent,
                wait,
                sockets,
                ..
            }) if offer_id == id => (sent, wait, sockets),
            other => {
                state.crossing = other;
                return Err(PathError::UnknownSweep);
            }
        };
        // The aim side starts `wait` after the offer reached it: half the round trip after it
        // left, if the relay's two directions take as long.
        let aim_at = sent + now.saturating_duration_since(sent) / 2 + wait;
        let at = aim_at + SWEEP_STEP * sockets.len() as u32 / 2;
        if at <= now {
            // The relay took longer than the wait: offer again, asking for a longer one.
            state.crossing = Some(Crossing::Offered {
                id,
                sent,
                wait: (wait * 2).min(MAX_WAIT),
                sockets,
                tries: 0,
            });
            self.send_offer(now, peer);
            return Ok(());
        }
        let ids: Vec<LocalSocketId> = sockets.iter().map(|(id, _)| *id).collect();
        state.crossing = Some(Crossing::Swept {
            until: at + SWEEP_SETTLE,
            sockets: ids.clone(),
        });
        let transmits = ids
            .iter()
            .map(|socket| {
                let path = Path {
                    local: *socket,
                    remote: target,
                    kind: PathKind::Direct,
                };
                self.send_check_at(at, peer, path, false)
            })
            .collect();
        self.events.push_back(AgentEvent::Burst {
            at,
            gap: SWEEP_GAP,
            max_late: SWEEP_MAX_LATE,
            transmits,
        });
        Ok(())
    }

    /// Ends `peer`'s sweep: closes its sockets but `keep` (the winning one).
    pub(super) fn end_crossing(&mut self, peer: &PeerId, keep: Option<LocalSocketId>) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        let closing: Vec<LocalSocketId> = match state.crossing.take() {
            Some(Crossing::Offered { sockets, .. }) => sockets.iter().map(|(id, _)| *id).collect(),
            Some(Crossing::Swept { sockets, .. }) => sockets,
            Some(Crossing::Armed { socket, .. } | Crossing::Aimed { socket, .. }) => vec![socket]
                .into_iter()
                .filter(|s| *s != LocalSocketId::MAIN)
                .collect(),
            Some(opening @ (Crossing::Opening { .. } | Crossing::Arming)) => {
                // The driver's answer will find no round and close what it opened.
                state.crossing = Some(opening);
                return;
            }
            None => return,
        };
        let closing: Vec<LocalSocketId> =
            closing.into_iter().filter(|s| Some(*s) != keep).collect();
        state.sockets.retain(|s| !closing.contains(s));
        state.pairs.retain(|p| !closing.contains(&p.path.local));
        self.close_sockets(closing);
    }

    /// Resends unanswered offers, ends sweeps that won nothing and starts the next round.
    pub(super) fn crossing_timeouts(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut ended = Vec::new();
        let mut aim = Vec::new();
        for (peer, state) in &mut self.peers {
            match &state.crossing {
                Some(Crossing::Offered { sent, .. }) if *sent + OFFER_RESEND <= now => {
                    resend.push(*peer)
                }
                Some(Crossing::Swept { until, .. }) if *until <= now => ended.push(*peer),
                Some(Crossing::Aimed { until, .. }) if *until <= now => ended.push(*peer),
                Some(Crossing::Aimed {
                    at, ports: Some(_), ..
                }) if at.checked_sub(SWEEP_PREPARE).is_none_or(|t| t <= now) => aim.push(*peer),
                _ => {}
            }
        }
        for peer in aim {
            self.aim(peer);
        }
        for peer in resend {
            self.send_offer(now, peer);
        }
        for peer in ended {
            self.end_crossing(&peer, None);
            self.maybe_start_crossing(peer);
        }
    }
}

/// The next instant `state`'s sweep needs `handle_timeout`.
pub(super) fn crossing_deadline(state: &PeerPaths) -> Option<Instant> {
    match &state.crossing {
        Some(Crossing::Offered { sent, .. }) => Some(*sent + OFFER_RESEND),
        Some(Crossing::Aimed {
            at, ports: Some(_), ..
        }) => Some(at.checked_sub(SWEEP_PREPARE).unwrap_or(*at)),
        Some(Crossing::Swept { until, .. } | Crossing::Aimed { until, .. }) => Some(*until),
        Some(Crossing::Opening { .. } | Crossing::Arming | Crossing::Armed { .. }) | None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_two_bare_linux_nats_need_the_sweep() {
        use InboundBehaviour::*;
        use NatBehaviour::*;
        let nat = |mapping, inbound| NatReport { mapping, inbound };
        let bare = nat(EndpointIndependent, MovesPort);
        assert!(needs_crossing(bare, bare));
        for other in [
            nat(EndpointIndependent, KeepsPort),
            nat(EndpointIndependent, InboundBehaviour::Unknown),
            nat(EndpointDependent, MovesPort),
            nat(Public, MovesPort),
            NatReport::UNKNOWN,
        ] {
            assert!(!needs_crossing(bare, other), "{other:?}");
            assert!(!needs_crossing(other, bare), "{other:?}");
        }
    }
}
