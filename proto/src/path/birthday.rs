//! The birthday method: how a peer behind an endpoint-dependent (symmetric) NAT meets a peer
//! behind an endpoint-independent one whose filter admits only what it sent to.
//!
//! The *hard* side (behind the symmetric NAT) opens [`BIRTHDAY_SOCKETS`] extra local sockets and
//! checks the easy side's public address from each: its NAT gives each socket a random public
//! port, open towards exactly that address. The *easy* side checks [`BIRTHDAY_PROBES`] random
//! ports of the hard side's public IP from its main socket, which opens its own filter towards
//! each. When a probed port is one of the hard side's, the probe gets in (or the hard side's next
//! check does) and an ordinary check completes on that pair. With 256 ports open among 64,512,
//! 1,024 probes find one with probability 1 - (1 - 256/64512)^1024, about 98% (Tailscale's
//! figures); both budgets are bounded and each check is paced like any other.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::agent::{AgentEvent, PathAgent, Transmit};
use super::crossing::Crossing;
use super::{normalize, LocalSocketId, Path, PathKind};
use crate::nat::{InboundBehaviour, NatBehaviour, NatReport};
use crate::PeerId;

/// Extra sockets the hard side opens (node-wide at most this many at once).
pub const BIRTHDAY_SOCKETS: usize = 256;
/// Random ports the easy side probes.
pub const BIRTHDAY_PROBES: u32 = 1024;
/// Gap between checks from one birthday socket (there are many; the node-wide pacer shares
/// its budget between them).
pub const BIRTHDAY_RETRANSMIT: Duration = Duration::from_secs(1);
/// Added to the easy side's probing time before the hard side checks (see [`plan`]).
pub const SPRAY_MARGIN: Duration = Duration::from_millis(100);
/// Lowest port probed (below are privileged ports no NAT hands out).
pub const FIRST_PORT: u16 = 1024;

/// One peer's birthday attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Birthday {
    /// We are behind the symmetric NAT: check `target` from many sockets, from `not_before` on.
    Hard {
        target: SocketAddr,
        sockets: Vec<LocalSocketId>,
        not_before: Instant,
    },
    /// The peer is: probe random ports of `ip`, from `not_before` on.
    Easy {
        ip: IpAddr,
        remaining: u32,
        not_before: Instant,
    },
}

/// The attempt this pair of NATs needs, if any. `observed` is the peer's public address as the
/// rendezvous saw it; checks start at `start`.
///
/// When the easy side's NAT moves its port after unsolicited inbound (a bare Linux NAT), each
/// of the hard side's checks would poison the port it reaches before the easy side's probe
/// to that port leaves, so the probe would leave from another port: the hard side then waits
/// `spray_time` (the easy side's whole probe budget) before its sockets check, and every
/// port the easy side probed is already open when the hard side's check arrives.
pub fn plan(
    own: NatBehaviour,
    peer: NatReport,
    observed: SocketAddr,
    start: Instant,
    spray_time: Duration,
) -> Option<Birthday> {
    match (own, peer.mapping) {
        (NatBehaviour::EndpointDependent, NatBehaviour::EndpointIndependent) => {
            let wait = match peer.inbound {
                InboundBehaviour::MovesPort => spray_time,
                _ => Duration::ZERO,
            };
            Some(Birthday::Hard {
                target: observed,
                sockets: Vec::new(),
                not_before: start + wait,
            })
        }
        (NatBehaviour::EndpointIndependent, NatBehaviour::EndpointDependent) => {
            Some(Birthday::Easy {
                ip: observed.ip(),
                remaining: BIRTHDAY_PROBES,
                not_before: start,
            })
        }
        _ => None,
    }
}

/// A probe port from random bytes: uniform over [`FIRST_PORT`]..=65535 up to a bias of one
/// part in 2^32 / 64512.
pub fn probe_port(random: [u8; 4]) -> u16 {
    let span = u32::from(u16::MAX - FIRST_PORT) + 1;
    FIRST_PORT + (u32::from_be_bytes(random) % span) as u16
}

/// The agent's side of the birthday method: asking for sockets, checking from them, probing.
impl PathAgent {
    pub(super) fn close_sockets(&mut self, sockets: Vec<LocalSocketId>) {
        if !sockets.is_empty() {
            self.extra_sockets = self.extra_sockets.saturating_sub(sockets.len());
            self.events.push_back(AgentEvent::CloseSockets { sockets });
        }
    }

    /// What NAT detection found of this node's NAT: it decides birthday roles and who checks
    /// first.
    pub fn set_own_nat(&mut self, nat: NatReport) {
        self.own_nat = nat;
    }

    /// Starts the birthday method towards `peer` (from `start`) if this pair of NATs needs it.
    /// `observed` is the peer's public address as the rendezvous saw it.
    pub(super) fn start_birthday(
        &mut self,
        start: Instant,
        peer: PeerId,
        observed: SocketAddr,
        peer_nat: NatReport,
    ) -> bool {
        // The easy side's probes leave one per pace after its burst (same defaults both sides).
        let spray_time = self.config.pace * BIRTHDAY_PROBES + SPRAY_MARGIN;
        let Some(plan) = plan(
            self.own_nat.mapping,
            peer_nat,
            normalize(observed),
            start,
            spray_time,
        ) else {
            return false;
        };
        let room = BIRTHDAY_SOCKETS.saturating_sub(self.extra_sockets);
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        // A relayed path does not stop an attempt: it is what tries for a direct one go past.
        let direct = state
            .selected
            .is_some_and(|p| p.kind == super::PathKind::Direct);
        if state.birthday.is_some() || direct {
            return false;
        }
        if let Birthday::Hard { .. } = plan {
            if room < BIRTHDAY_SOCKETS {
                return false; // another attempt holds the sockets
            }
            self.extra_sockets += room;
            self.events
                .push_back(AgentEvent::OpenSockets { peer, count: room });
        }
        state.birthday = Some(plan);
        true
    }

    /// The driver opened `opened` (as many as it could, each with its local port) for `peer`'s
    /// birthday attempt or crossing sweep.
    pub fn sockets_opened(&mut self, now: Instant, peer: PeerId, opened: &[(LocalSocketId, u16)]) {
        if let Some(Some(Crossing::Opening { .. } | Crossing::Arming)) =
            self.peers.get(&peer).map(|s| &s.crossing)
        {
            self.crossing_sockets_opened(now, peer, opened);
            return;
        }
        let sockets: Vec<LocalSocketId> = opened.iter().map(|(id, _)| *id).collect();
        let sockets = &sockets[..];
        let config = self.config;
        let asked = BIRTHDAY_SOCKETS;
        self.extra_sockets = self.extra_sockets.saturating_sub(asked) + sockets.len();
        let (target, not_before) = match self.peers.get(&peer).and_then(|s| s.birthday.as_ref()) {
            Some(Birthday::Hard {
                target, not_before, ..
            }) => (*target, *not_before),
            _ => {
                // The attempt ended meanwhile: nobody needs them.
                self.close_sockets(sockets.to_vec());
                return;
            }
        };
        let state = self.peers.get_mut(&peer).expect("checked above");
        let until = state
            .round_until
            .unwrap_or(now + config.check_timeout)
            .max(now + config.retransmit);
        state.sockets.extend_from_slice(sockets);
        if let Some(Birthday::Hard { sockets: own, .. }) = state.birthday.as_mut() {
            own.extend_from_slice(sockets);
        }
        let limit = state.pair_limit(config.max_pairs);
        for socket in sockets {
            if let Some(pair) = state.pair_or_insert(*socket, target, limit) {
                pair.retransmit = Some(BIRTHDAY_RETRANSMIT);
                pair.schedule(now.max(not_before), until);
            }
        }
    }

    /// Ends `peer`'s birthday attempt: closes its sockets but `keep` (the winning one).
    pub(super) fn end_birthday(&mut self, peer: &PeerId, keep: Option<LocalSocketId>) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        let Some(Birthday::Hard { sockets, .. }) = state.birthday.take() else {
            return;
        };
        let closing: Vec<LocalSocketId> =
            sockets.into_iter().filter(|s| Some(*s) != keep).collect();
        state.sockets.retain(|s| !closing.contains(s));
        state.pairs.retain(|p| !closing.contains(&p.path.local));
        self.close_sockets(closing);
    }

    /// The next birthday probe to a random port of a peer behind a symmetric NAT, if one is due.
    pub(super) fn next_spray(&mut self, now: Instant) -> Option<Transmit> {
        let (peer, ip) = self
            .peers
            .iter()
            .find_map(|(id, state)| match state.birthday {
                Some(Birthday::Easy {
                    ip,
                    remaining,
                    not_before,
                }) if remaining > 0 && not_before <= now && state.round_until.is_some() => {
                    Some((*id, ip))
                }
                _ => None,
            })?;
        let random = self.transaction();
        let port = probe_port([random[0], random[1], random[2], random[3]]);
        if let Some(Some(Birthday::Easy { remaining, .. })) =
            self.peers.get_mut(&peer).map(|s| s.birthday.as_mut())
        {
            *remaining -= 1;
        }
        let path = Path {
            local: LocalSocketId(0),
            remote: SocketAddr::new(ip, port),
            kind: PathKind::Direct,
        };
        Some(self.send_check_at(now, peer, path, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_symmetric_against_endpoint_independent_plans_a_birthday() {
        use NatBehaviour::*;
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let now = Instant::now();
        let spray = Duration::from_secs(2);
        let report = |mapping, inbound| NatReport { mapping, inbound };
        let eim = |inbound| report(EndpointIndependent, inbound);
        assert!(matches!(
            plan(EndpointDependent, eim(InboundBehaviour::KeepsPort), addr, now, spray),
            Some(Birthday::Hard { target, not_before, .. }) if target == addr && not_before == now
        ));
        assert!(matches!(
            plan(EndpointDependent, eim(InboundBehaviour::MovesPort), addr, now, spray),
            Some(Birthday::Hard { not_before, .. }) if not_before == now + spray
        ));
        assert!(matches!(
            plan(
                EndpointIndependent,
                report(EndpointDependent, InboundBehaviour::Unknown),
                addr,
                now,
                spray
            ),
            Some(Birthday::Easy {
                remaining: BIRTHDAY_PROBES,
                ..
            })
        ));
        for (own, peer) in [
            (EndpointDependent, EndpointDependent),
            (Public, EndpointDependent),
            (EndpointDependent, Public),
            (Unknown, EndpointDependent),
            (EndpointIndependent, EndpointIndependent),
        ] {
            let peer = report(peer, InboundBehaviour::Unknown);
            assert_eq!(plan(own, peer, addr, now, spray), None, "{own:?} {peer:?}");
        }
    }

    #[test]
    fn probe_ports_cover_the_unprivileged_range() {
        assert_eq!(probe_port([0; 4]), FIRST_PORT);
        assert_eq!(probe_port(64511u32.to_be_bytes()), u16::MAX);
        assert_eq!(probe_port(64512u32.to_be_bytes()), FIRST_PORT);
        assert!(probe_port([0xFF; 4]) >= FIRST_PORT);
    }
}
