//! Project datagrams (path probes) and the direct-path prober.
//!
//! # Wire format (docs/PROTOCOL.md section 2)
//! ```text
//! 0      1     byte 0x80 (top bits 10 mark a project datagram; low 6 bits: format version 0)
//! 1..5   4     magic "p2pN"
//! 5      1     kind: 1 = Ping, 2 = Pong
//! 6..18  12    transaction ID
//! Ping:  18..50 sender's peer ID, 50..82 target's peer ID     total 82 bytes
//! Pong:  18     family (4 or 6), then IP (4 or 16), port u16: the address the Ping came from
//! ```
//! Anything else (other version, kind or length) is malformed and dropped. A node answers a Ping
//! only if the target is its own ID, so a probe that reaches the wrong host (a stale or local
//! candidate address) gets no answer. Probes are not authenticated: they only choose where QUIC
//! packets are sent; QUIC's TLS handshake still proves who is at the other end.
//!
//! # Prober
//! [`DirectProber`] checks candidate addresses of one peer, str0m-style: each candidate is plain
//! data with a deadline. Pings are sent to every candidate every [`ProbeConfig::interval`] until a
//! Pong arrives or [`ProbeConfig::timeout`] passes. The first Pong selects the path: the address it
//! came from. Poll order after any input: `poll_transmit` until `None`, then `poll_event`, then
//! `poll_timeout` (call `handle_timeout` when it passes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::demux::PROJECT_MAGIC;
use crate::PeerId;

const FIRST_BYTE: u8 = 0x80;
const KIND_PING: u8 = 1;
const KIND_PONG: u8 = 2;
const HEADER: usize = 18;

/// A decoded project datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectDatagram {
    Ping {
        transaction: [u8; 12],
        sender: PeerId,
        target: PeerId,
    },
    Pong {
        transaction: [u8; 12],
        observed: SocketAddr,
    },
}

/// Why a project datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectDatagramError {
    #[error("not a project datagram of version 0")]
    NotProject,
    #[error("unknown project datagram kind {0}")]
    UnknownKind(u8),
    #[error("project datagram of kind {kind} has bad length {len}")]
    BadLength { kind: u8, len: usize },
    #[error("Pong carries unknown address family {0}")]
    BadFamily(u8),
}

fn header(kind: u8, transaction: &[u8; 12]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(FIRST_BYTE);
    out.extend_from_slice(&PROJECT_MAGIC);
    out.push(kind);
    out.extend_from_slice(transaction);
    out
}

impl ProjectDatagram {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ProjectDatagram::Ping {
                transaction,
                sender,
                target,
            } => {
                let mut out = header(KIND_PING, transaction);
                out.extend_from_slice(&sender.0);
                out.extend_from_slice(&target.0);
                out
            }
            ProjectDatagram::Pong {
                transaction,
                observed,
            } => {
                let mut out = header(KIND_PONG, transaction);
                match observed.ip() {
                    IpAddr::V4(ip) => {
                        out.push(4);
                        out.extend_from_slice(&ip.octets());
                    }
                    IpAddr::V6(ip) => {
                        out.push(6);
                        out.extend_from_slice(&ip.octets());
                    }
                }
                out.extend_from_slice(&observed.port().to_be_bytes());
                out
            }
        }
    }

    /// Decodes with every length checked before it is read. Never panics.
    pub fn decode(datagram: &[u8]) -> Result<Self, ProjectDatagramError> {
        if datagram.len() < HEADER || datagram[0] != FIRST_BYTE || datagram[1..5] != PROJECT_MAGIC {
            return Err(ProjectDatagramError::NotProject);
        }
        let kind = datagram[5];
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&datagram[6..HEADER]);
        let body = &datagram[HEADER..];
        let bad_length = ProjectDatagramError::BadLength {
            kind,
            len: datagram.len(),
        };
        match kind {
            KIND_PING => {
                if body.len() != 64 {
                    return Err(bad_length);
                }
                let sender: [u8; 32] = body[..32].try_into().expect("length checked");
                let target: [u8; 32] = body[32..].try_into().expect("length checked");
                Ok(ProjectDatagram::Ping {
                    transaction,
                    sender: PeerId(sender),
                    target: PeerId(target),
                })
            }
            KIND_PONG => {
                let (&family, rest) = body.split_first().ok_or(bad_length.clone())?;
                let ip = match (family, rest.len()) {
                    (4, 6) => IpAddr::V4(Ipv4Addr::new(rest[0], rest[1], rest[2], rest[3])),
                    (6, 18) => {
                        let octets: [u8; 16] = rest[..16].try_into().expect("length checked");
                        IpAddr::V6(Ipv6Addr::from(octets))
                    }
                    (4 | 6, _) => return Err(bad_length),
                    (other, _) => return Err(ProjectDatagramError::BadFamily(other)),
                };
                let port = u16::from_be_bytes([rest[rest.len() - 2], rest[rest.len() - 1]]);
                Ok(ProjectDatagram::Pong {
                    transaction,
                    observed: SocketAddr::new(ip, port),
                })
            }
            other => Err(ProjectDatagramError::UnknownKind(other)),
        }
    }
}

/// Most candidate addresses one prober checks (reported ones plus peer-reflexive ones).
pub const MAX_CANDIDATES: usize = 32;

/// Timing of a [`DirectProber`].
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Time between Pings to one candidate (default 200 ms).
    pub interval: Duration,
    /// Time after which probing gives up (default 5 s).
    pub timeout: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a prober concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A Pong arrived: the peer answers at `remote`; `rtt` is from the matching Ping.
    Selected { remote: SocketAddr, rtt: Duration },
    /// No candidate answered before the timeout.
    TimedOut,
}

#[derive(Debug, Clone)]
struct CandidateCheck {
    remote: SocketAddr,
    transaction: [u8; 12],
    next_ping: Instant,
    last_ping: Option<Instant>,
}

/// Probes a peer's candidate addresses; see the module documentation.
#[derive(Debug)]
pub struct DirectProber {
    own: PeerId,
    target: PeerId,
    config: ProbeConfig,
    checks: Vec<CandidateCheck>,
    deadline: Instant,
    outcome: Option<ProbeOutcome>,
    outcome_taken: bool,
}

impl DirectProber {
    /// `transactions` yields one random transaction ID per candidate (randomness is passed in).
    /// Duplicate candidates are probed once.
    pub fn new(
        now: Instant,
        own: PeerId,
        target: PeerId,
        candidates: &[SocketAddr],
        mut transactions: impl FnMut() -> [u8; 12],
        config: ProbeConfig,
    ) -> Self {
        let mut checks: Vec<CandidateCheck> = Vec::new();
        for remote in candidates {
            if checks.len() >= MAX_CANDIDATES {
                break;
            }
            if checks.iter().any(|check| check.remote == *remote) {
                continue;
            }
            checks.push(CandidateCheck {
                remote: *remote,
                transaction: transactions(),
                next_ping: now,
                last_ping: None,
            });
        }
        let outcome = checks.is_empty().then_some(ProbeOutcome::TimedOut);
        DirectProber {
            own,
            target,
            config,
            checks,
            deadline: now + config.timeout,
            outcome,
            outcome_taken: false,
        }
    }

    /// The next Ping to send, as (destination, datagram).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.outcome.is_some() {
            return None;
        }
        let (own, target) = (self.own, self.target);
        let interval = self.config.interval;
        let check = self
            .checks
            .iter_mut()
            .find(|check| check.next_ping <= now)?;
        check.last_ping = Some(now);
        check.next_ping = now + interval;
        let ping = ProjectDatagram::Ping {
            transaction: check.transaction,
            sender: own,
            target,
        };
        Some((check.remote, ping.encode()))
    }

    /// A Pong arrived from `from`.
    pub fn handle_pong(&mut self, now: Instant, from: SocketAddr, transaction: [u8; 12]) {
        if self.outcome.is_some() {
            return;
        }
        if let Some(check) = self
            .checks
            .iter()
            .find(|check| check.transaction == transaction)
        {
            let rtt = check
                .last_ping
                .map(|sent| now.saturating_duration_since(sent))
                .unwrap_or_default();
            self.outcome = Some(ProbeOutcome::Selected { remote: from, rtt });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            self.outcome = Some(ProbeOutcome::TimedOut);
        }
    }

    /// The next instant the prober needs `handle_timeout` or `poll_transmit`; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        let next_ping = self.checks.iter().map(|check| check.next_ping).min();
        Some(next_ping.map_or(self.deadline, |ping| ping.min(self.deadline)))
    }

    /// The outcome, returned once.
    pub fn poll_event(&mut self) -> Option<ProbeOutcome> {
        if self.outcome_taken {
            return None;
        }
        let outcome = self.outcome?;
        self.outcome_taken = true;
        Some(outcome)
    }

    /// Adds a *peer-reflexive* candidate: the address a Ping from the target came from. Behind an
    /// endpoint-dependent (symmetric) NAT that address is not among the ones the rendezvous knows,
    /// yet it is the one the target's NAT expects an answer from. Checked at once. Returns false
    /// (and does nothing) when done, when the address is known, or at [`MAX_CANDIDATES`].
    pub fn add_candidate(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        transaction: [u8; 12],
    ) -> bool {
        if self.outcome.is_some()
            || self.checks.len() >= MAX_CANDIDATES
            || self.checks.iter().any(|check| check.remote == remote)
        {
            return false;
        }
        self.checks.push(CandidateCheck {
            remote,
            transaction,
            next_ping: now,
            last_ping: None,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demux::{classify, DatagramKind};

    #[test]
    fn datagrams_round_trip_and_classify_as_project() {
        let ping = ProjectDatagram::Ping {
            transaction: [9; 12],
            sender: PeerId([4; 32]),
            target: PeerId([5; 32]),
        };
        let pong4 = ProjectDatagram::Pong {
            transaction: [1; 12],
            observed: "192.0.2.1:77".parse().unwrap(),
        };
        let pong6 = ProjectDatagram::Pong {
            transaction: [1; 12],
            observed: "[2001:db8::1]:77".parse().unwrap(),
        };
        for datagram in [ping, pong4, pong6] {
            let bytes = datagram.encode();
            assert_eq!(classify(&bytes), DatagramKind::Project);
            assert_eq!(ProjectDatagram::decode(&bytes), Ok(datagram));
            for len in 0..bytes.len() {
                assert!(ProjectDatagram::decode(&bytes[..len]).is_err());
            }
        }
        let mut bad = ping.encode();
        bad[5] = 7;
        assert_eq!(
            ProjectDatagram::decode(&bad),
            Err(ProjectDatagramError::UnknownKind(7))
        );
    }

    /// Simulated network: candidate `reachable` answers after `one_way` each direction, others
    /// never do. Drives the prober with virtual time only.
    fn run(candidates: &[SocketAddr], reachable: SocketAddr, one_way: Duration) -> ProbeOutcome {
        run_lossy(candidates, reachable, one_way, 0)
    }

    /// As [`run`], but the network drops the first `lost` Pings to the reachable candidate.
    fn run_lossy(
        candidates: &[SocketAddr],
        reachable: SocketAddr,
        one_way: Duration,
        mut lost: usize,
    ) -> ProbeOutcome {
        let start = Instant::now();
        let mut counter = 0u8;
        let mut prober = DirectProber::new(
            start,
            PeerId([1; 32]),
            PeerId([2; 32]),
            candidates,
            || {
                counter += 1;
                [counter; 12]
            },
            ProbeConfig::default(),
        );
        let mut now = start;
        let mut in_flight: Vec<(Instant, [u8; 12])> = Vec::new();
        loop {
            while let Some((to, bytes)) = prober.poll_transmit(now) {
                if to == reachable && lost > 0 {
                    lost -= 1;
                } else if to == reachable {
                    let ProjectDatagram::Ping { transaction, .. } =
                        ProjectDatagram::decode(&bytes).unwrap()
                    else {
                        panic!("prober sent a non-Ping");
                    };
                    in_flight.push((now + one_way * 2, transaction));
                }
            }
            if let Some(outcome) = prober.poll_event() {
                return outcome;
            }
            let next_pong = in_flight.iter().map(|(at, _)| *at).min();
            let next = match (prober.poll_timeout(), next_pong) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("prober is waiting for something"),
            };
            now = next;
            let (due, later): (Vec<_>, Vec<_>) =
                in_flight.into_iter().partition(|(at, _)| *at <= now);
            in_flight = later;
            for (_, transaction) in due {
                prober.handle_pong(now, reachable, transaction);
            }
            prober.handle_timeout(now);
        }
    }

    #[test]
    fn selects_the_answering_candidate_with_its_rtt() {
        let dead: SocketAddr = "10.0.0.9:1".parse().unwrap();
        let live: SocketAddr = "192.0.2.5:9".parse().unwrap();
        let outcome = run(&[dead, live, dead], live, Duration::from_millis(30));
        assert_eq!(
            outcome,
            ProbeOutcome::Selected {
                remote: live,
                rtt: Duration::from_millis(60)
            }
        );
    }

    #[test]
    fn slow_path_still_found_after_retransmits() {
        let live: SocketAddr = "192.0.2.5:9".parse().unwrap();
        // RTT 700 ms: several Pings go out before the first Pong; the match uses the latest Ping.
        let outcome = run(&[live], live, Duration::from_millis(350));
        assert!(matches!(outcome, ProbeOutcome::Selected { remote, .. } if remote == live));
    }

    #[test]
    fn peer_reflexive_candidate_found_behind_a_symmetric_nat() {
        // The reported address is dead (the peer's symmetric NAT gave its traffic to us a new
        // port); the peer's own Ping reveals the live one.
        let start = Instant::now();
        let reported: SocketAddr = "192.0.2.8:4000".parse().unwrap();
        let reflexive: SocketAddr = "192.0.2.8:51234".parse().unwrap();
        let mut prober = DirectProber::new(
            start,
            PeerId([1; 32]),
            PeerId([2; 32]),
            &[reported],
            || [1; 12],
            ProbeConfig::default(),
        );
        assert_eq!(prober.poll_transmit(start).unwrap().0, reported);
        let later = start + Duration::from_millis(50);
        assert!(prober.add_candidate(later, reflexive, [2; 12]));
        assert!(
            !prober.add_candidate(later, reflexive, [3; 12]),
            "known already"
        );
        let (to, bytes) = prober.poll_transmit(later).unwrap();
        assert_eq!(to, reflexive);
        let ProjectDatagram::Ping { transaction, .. } = ProjectDatagram::decode(&bytes).unwrap()
        else {
            panic!("not a Ping");
        };
        prober.handle_pong(later + Duration::from_millis(10), reflexive, transaction);
        assert_eq!(
            prober.poll_event(),
            Some(ProbeOutcome::Selected {
                remote: reflexive,
                rtt: Duration::from_millis(10)
            })
        );
        assert!(!prober.add_candidate(later, "192.0.2.9:1".parse().unwrap(), [4; 12]));
    }

    #[test]
    fn lost_pings_are_retransmitted_until_the_deadline() {
        let live: SocketAddr = "192.0.2.5:9".parse().unwrap();
        let rtt = Duration::from_millis(20);
        // Default: a Ping every 200 ms for 5 s, so 25 Pings; 24 lost still finds the path.
        let outcome = run_lossy(&[live], live, rtt / 2, 24);
        assert_eq!(outcome, ProbeOutcome::Selected { remote: live, rtt });
        assert_eq!(
            run_lossy(&[live], live, rtt / 2, 25),
            ProbeOutcome::TimedOut
        );
    }

    #[test]
    fn times_out_when_nothing_answers_or_no_candidates() {
        let dead: SocketAddr = "10.0.0.9:1".parse().unwrap();
        let unreachable: SocketAddr = "10.0.0.10:1".parse().unwrap();
        assert_eq!(
            run(&[dead], unreachable, Duration::from_millis(1)),
            ProbeOutcome::TimedOut
        );
        let mut prober = DirectProber::new(
            Instant::now(),
            PeerId([1; 32]),
            PeerId([2; 32]),
            &[],
            || [0; 12],
            ProbeConfig::default(),
        );
        assert_eq!(prober.poll_event(), Some(ProbeOutcome::TimedOut));
        assert_eq!(prober.poll_event(), None);
    }
}
