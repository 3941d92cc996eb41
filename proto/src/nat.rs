//! NAT mapping-behaviour detection (RFC 4787 / RFC 5780 section 4.3), sans-IO.
//!
//! From its one socket the node sends STUN Binding requests to the rendezvous's main address and
//! to each alternate STUN address the rendezvous advertises (another IP). If every answer reports
//! the same mapped address, the NAT keeps one mapping whatever the destination
//! (endpoint-independent: hole punching can work); if they differ, the mapping depends on the
//! destination (endpoint-dependent, "symmetric"). A mapped address equal to one of the node's own
//! addresses means no NAT. Filtering behaviour is not detected here (it needs the server to answer
//! from another address).
//!
//! [`InboundProbe`] tells how an endpoint-independent NAT treats *unsolicited inbound*
//! datagrams, from a throw-away socket (so the main socket's mapping is never disturbed). Its
//! first Binding request to the rendezvous carries a transaction ID starting with
//! [`POKE_PREFIX`]: besides answering, the rendezvous sends one datagram to the request's source
//! from its *inbound probe* address, which the socket has never sent to. After a short wait the
//! socket asks the probe address (which answers STUN) for its mapping. A home router's WAN
//! firewall drops the unsolicited datagram before connection tracking keeps it, so the mapping
//! is the same ([`InboundBehaviour::KeepsPort`]); a bare Linux NAT keeps the unsolicited flow
//! in conntrack and moves the socket's traffic to that address to another public port
//! ([`InboundBehaviour::MovesPort`]): such a NAT must send first when punching (design brief).
//! (Done on the main socket, the moved mapping would become the one Linux reuses for the
//! socket's next flows: measured in netsim, it broke punching.)
//!
//! [`NatProbe`] retransmits each request every [`NatProbeConfig::interval`] until answered or
//! [`NatProbeConfig::timeout`]. Poll order after any input: `poll_transmit` until `None`, then
//! `poll_event`, then `poll_timeout` (call `handle_timeout` when it passes).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::stun;

/// What the probe concluded about the NAT in front of the node. Nodes report it when they
/// register, so a peer can tell whether the birthday method is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum NatBehaviour {
    /// The node's own address is what the internet sees.
    Public,
    /// One mapping for every destination.
    EndpointIndependent,
    /// A different mapping per destination (symmetric NAT).
    EndpointDependent,
    /// Not enough answers to tell (no alternate address, or requests unanswered).
    Unknown,
}

impl NatBehaviour {
    /// The word used in the `ready` event (`nat=<word>`).
    pub fn as_str(&self) -> &'static str {
        match self {
            NatBehaviour::Public => "public",
            NatBehaviour::EndpointIndependent => "endpoint-independent",
            NatBehaviour::EndpointDependent => "endpoint-dependent",
            NatBehaviour::Unknown => "unknown",
        }
    }
}

/// What an unsolicited inbound datagram does to the NAT's next mapping towards its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum InboundBehaviour {
    /// The port stays (a WAN firewall dropped the datagram, or the NAT let it in).
    KeepsPort,
    /// The port moves: the NAT kept the unsolicited flow (a bare Linux NAT).
    MovesPort,
    /// Not measured (no probe address, no answer, no NAT, or a symmetric NAT).
    Unknown,
}

impl InboundBehaviour {
    /// The word used in the `ready` event (`inbound=<word>`).
    pub fn as_str(&self) -> &'static str {
        match self {
            InboundBehaviour::KeepsPort => "keeps-port",
            InboundBehaviour::MovesPort => "moves-port",
            InboundBehaviour::Unknown => "unknown",
        }
    }
}

impl fmt::Display for InboundBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything NAT detection found, as a node reports it to the rendezvous and peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct NatReport {
    pub mapping: NatBehaviour,
    pub inbound: InboundBehaviour,
}

impl NatReport {
    /// Nothing known yet.
    pub const UNKNOWN: NatReport = NatReport {
        mapping: NatBehaviour::Unknown,
        inbound: InboundBehaviour::Unknown,
    };
}

/// First bytes of the transaction ID of a Binding request that asks the server to send one
/// unsolicited datagram from its inbound probe address to the request's source.
pub const POKE_PREFIX: [u8; 4] = *b"p2pP";

/// Whether a Binding request's transaction ID asks for a poke ([`POKE_PREFIX`]).
pub fn is_poke(transaction: &[u8; 12]) -> bool {
    transaction[..4] == POKE_PREFIX
}

/// How long [`InboundProbe`] waits after the server's answer before asking the probe address:
/// the poke left the server with the answer and must reach the NAT first.
pub const POKE_SETTLE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InboundPhase {
    /// Asking the server (with a poke) for the mapping.
    Server,
    /// Answered; waiting for the poke to reach the NAT.
    Settling(Instant),
    /// Asking the probe address for the mapping.
    Probe,
}

/// See the module documentation. Poll like [`NatProbe`]; the conclusion comes once.
#[derive(Debug)]
pub struct InboundProbe {
    server: SocketAddr,
    probe: SocketAddr,
    server_transaction: [u8; 12],
    probe_transaction: [u8; 12],
    phase: InboundPhase,
    next_send: Instant,
    interval: Duration,
    deadline: Instant,
    server_mapped: Option<SocketAddr>,
    result: Option<InboundBehaviour>,
    result_taken: bool,
}

impl InboundProbe {
    /// `server`: the rendezvous's STUN address; `probe`: its inbound probe address; two random
    /// transaction IDs (the first gets the [`POKE_PREFIX`]).
    pub fn new(
        now: Instant,
        server: SocketAddr,
        probe: SocketAddr,
        mut transactions: [[u8; 12]; 2],
        config: NatProbeConfig,
    ) -> Self {
        transactions[0][..4].copy_from_slice(&POKE_PREFIX);
        if is_poke(&transactions[1]) {
            transactions[1][0] ^= 0xFF;
        }
        InboundProbe {
            server,
            probe,
            server_transaction: transactions[0],
            probe_transaction: transactions[1],
            phase: InboundPhase::Server,
            next_send: now,
            interval: config.interval,
            deadline: now + config.timeout + POKE_SETTLE,
            server_mapped: None,
            result: None,
            result_taken: false,
        }
    }

    /// Both transaction IDs, for routing responses.
    pub fn transactions(&self) -> [[u8; 12]; 2] {
        [self.server_transaction, self.probe_transaction]
    }

    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.result.is_some() || self.next_send > now {
            return None;
        }
        let (to, transaction) = match self.phase {
            InboundPhase::Server => (self.server, self.server_transaction),
            InboundPhase::Probe => (self.probe, self.probe_transaction),
            InboundPhase::Settling(_) => return None,
        };
        self.next_send = now + self.interval;
        Some((to, stun::binding_request(transaction)))
    }

    pub fn handle_response(&mut self, now: Instant, response: stun::BindingResponse) {
        match self.phase {
            InboundPhase::Server if response.transaction_id == self.server_transaction => {
                self.server_mapped = Some(response.mapped);
                self.phase = InboundPhase::Settling(now + POKE_SETTLE);
            }
            InboundPhase::Probe if response.transaction_id == self.probe_transaction => {
                self.result = Some(if Some(response.mapped) == self.server_mapped {
                    InboundBehaviour::KeepsPort
                } else {
                    InboundBehaviour::MovesPort
                });
            }
            _ => {}
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_some() {
            return;
        }
        if let InboundPhase::Settling(until) = self.phase {
            if now >= until {
                self.phase = InboundPhase::Probe;
                self.next_send = now;
            }
        }
        if now >= self.deadline {
            self.result = Some(InboundBehaviour::Unknown);
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        let next = match self.phase {
            InboundPhase::Settling(until) => until,
            _ => self.next_send,
        };
        Some(next.min(self.deadline))
    }

    /// The conclusion, returned once.
    pub fn poll_event(&mut self) -> Option<InboundBehaviour> {
        if self.result_taken {
            return None;
        }
        let result = self.result?;
        self.result_taken = true;
        Some(result)
    }
}

impl fmt::Display for NatBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies from the mapped address each STUN server reported (`None`: no answer).
/// `mapped[0]` is the main server; the rest are alternates on other addresses.
pub fn classify_mapping(local: &[SocketAddr], mapped: &[Option<SocketAddr>]) -> NatBehaviour {
    let answers: Vec<SocketAddr> = mapped.iter().flatten().copied().collect();
    let Some(first) = answers.first() else {
        return NatBehaviour::Unknown;
    };
    if local.contains(first) {
        return NatBehaviour::Public;
    }
    if answers.len() < 2 {
        return NatBehaviour::Unknown;
    }
    if answers.iter().all(|a| a == first) {
        NatBehaviour::EndpointIndependent
    } else {
        NatBehaviour::EndpointDependent
    }
}

/// Timing of a [`NatProbe`].
#[derive(Debug, Clone, Copy)]
pub struct NatProbeConfig {
    /// Time between retransmissions of an unanswered request (default 200 ms).
    pub interval: Duration,
    /// Time after which unanswered requests count as no answer (default 1.5 s).
    pub timeout: Duration,
}

impl Default for NatProbeConfig {
    fn default() -> Self {
        NatProbeConfig {
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(1500),
        }
    }
}

#[derive(Debug)]
struct Request {
    server: SocketAddr,
    transaction: [u8; 12],
    next_send: Instant,
    mapped: Option<SocketAddr>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct NatProbe {
    local: Vec<SocketAddr>,
    requests: Vec<Request>,
    interval: Duration,
    deadline: Instant,
    result: Option<NatBehaviour>,
    result_taken: bool,
}

impl NatProbe {
    /// `servers[0]` is the main STUN server, the rest alternates; `transactions` yields one random
    /// transaction ID per server.
    pub fn new(
        now: Instant,
        local: Vec<SocketAddr>,
        servers: &[SocketAddr],
        mut transactions: impl FnMut() -> [u8; 12],
        config: NatProbeConfig,
    ) -> Self {
        let requests = servers
            .iter()
            .map(|server| Request {
                server: *server,
                transaction: transactions(),
                next_send: now,
                mapped: None,
            })
            .collect::<Vec<_>>();
        let mut probe = NatProbe {
            local,
            requests,
            interval: config.interval,
            deadline: now + config.timeout,
            result: None,
            result_taken: false,
        };
        if probe.requests.is_empty() {
            probe.result = Some(NatBehaviour::Unknown);
        }
        probe
    }

    /// The transaction IDs in use, for routing responses.
    pub fn transactions(&self) -> impl Iterator<Item = [u8; 12]> + '_ {
        self.requests.iter().map(|r| r.transaction)
    }

    /// The next STUN request to send, as (server, datagram).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.result.is_some() {
            return None;
        }
        let interval = self.interval;
        let request = self
            .requests
            .iter_mut()
            .find(|r| r.mapped.is_none() && r.next_send <= now)?;
        request.next_send = now + interval;
        Some((request.server, stun::binding_request(request.transaction)))
    }

    /// A Binding success response arrived (already decoded).
    pub fn handle_response(&mut self, response: stun::BindingResponse) {
        if self.result.is_some() {
            return;
        }
        if let Some(request) = self
            .requests
            .iter_mut()
            .find(|r| r.transaction == response.transaction_id)
        {
            request.mapped = Some(response.mapped);
        }
        if self.requests.iter().all(|r| r.mapped.is_some()) {
            self.conclude();
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.result.is_none() && now >= self.deadline {
            self.conclude();
        }
    }

    fn conclude(&mut self) {
        let mapped: Vec<Option<SocketAddr>> = self.requests.iter().map(|r| r.mapped).collect();
        self.result = Some(classify_mapping(&self.local, &mapped));
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        let next_send = self
            .requests
            .iter()
            .filter(|r| r.mapped.is_none())
            .map(|r| r.next_send)
            .min();
        Some(next_send.map_or(self.deadline, |t| t.min(self.deadline)))
    }

    /// The conclusion, returned once.
    pub fn poll_event(&mut self) -> Option<NatBehaviour> {
        if self.result_taken {
            return None;
        }
        let result = self.result?;
        self.result_taken = true;
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn classification_from_answers() {
        let local = [addr("10.0.0.2:5000")];
        let same = Some(addr("192.0.2.1:5000"));
        assert_eq!(
            classify_mapping(&local, &[same, same]),
            NatBehaviour::EndpointIndependent
        );
        assert_eq!(
            classify_mapping(&local, &[same, Some(addr("192.0.2.1:6001"))]),
            NatBehaviour::EndpointDependent
        );
        assert_eq!(
            classify_mapping(&local, &[Some(addr("10.0.0.2:5000")), None]),
            NatBehaviour::Public
        );
        assert_eq!(classify_mapping(&local, &[same]), NatBehaviour::Unknown);
        assert_eq!(
            classify_mapping(&local, &[same, None]),
            NatBehaviour::Unknown
        );
        assert_eq!(
            classify_mapping(&local, &[None, None]),
            NatBehaviour::Unknown
        );
    }

    /// A simulated NAT in front of the probe: `symmetric` gives each destination its own port.
    fn run(symmetric: bool, answering: &[bool]) -> NatBehaviour {
        let start = Instant::now();
        let servers = [addr("203.0.113.10:3478"), addr("203.0.113.11:3478")];
        let mut next = 0u8;
        let mut probe = NatProbe::new(
            start,
            vec![addr("10.0.0.2:5000")],
            &servers,
            || {
                next += 1;
                [next; 12]
            },
            NatProbeConfig::default(),
        );
        let mut now = start;
        let mut sent = 0;
        loop {
            while let Some((server, bytes)) = probe.poll_transmit(now) {
                sent += 1;
                let index = servers.iter().position(|s| *s == server).unwrap();
                if answering[index] {
                    let port = if symmetric {
                        40000 + index as u16
                    } else {
                        40000
                    };
                    let mapped = SocketAddr::from(([192, 0, 2, 1], port));
                    let answer = stun::answer_binding_request(&bytes, mapped).unwrap();
                    probe.handle_response(stun::parse_binding_response(&answer).unwrap());
                }
            }
            if let Some(result) = probe.poll_event() {
                assert!(sent >= servers.len());
                return result;
            }
            now = probe.poll_timeout().expect("waiting");
            probe.handle_timeout(now);
        }
    }

    #[test]
    fn detects_mapping_through_simulated_nats_with_virtual_time() {
        assert_eq!(run(false, &[true, true]), NatBehaviour::EndpointIndependent);
        assert_eq!(run(true, &[true, true]), NatBehaviour::EndpointDependent);
        assert_eq!(run(false, &[true, false]), NatBehaviour::Unknown);
        assert_eq!(run(false, &[false, false]), NatBehaviour::Unknown);
    }

    /// The inbound probe through a simulated NAT: `moves_port` makes the poke poison the
    /// socket's mapping towards the probe; `answering` drops the first `lost` requests.
    fn run_inbound(moves_port: bool, lost: usize) -> (InboundBehaviour, usize) {
        let start = Instant::now();
        let (server, probe_addr) = (addr("203.0.113.10:3478"), addr("203.0.113.11:40000"));
        let mut probe = InboundProbe::new(
            start,
            server,
            probe_addr,
            [[1; 12], *b"p2pPxxxxxxxx"],
            NatProbeConfig::default(),
        );
        let [poke, plain] = probe.transactions();
        assert!(is_poke(&poke) && !is_poke(&plain));
        let (mut now, mut sent, mut lost) = (start, 0, lost);
        let mut poked = false;
        loop {
            while let Some((to, bytes)) = probe.poll_transmit(now) {
                sent += 1;
                if lost > 0 {
                    lost -= 1;
                    continue;
                }
                let request = stun::answer_binding_request(&bytes, addr("192.0.2.1:1")).unwrap();
                let transaction = stun::parse_binding_response(&request)
                    .unwrap()
                    .transaction_id;
                poked |= to == server && is_poke(&transaction);
                let port = if to == probe_addr && moves_port && poked {
                    41000
                } else {
                    40000
                };
                let answer =
                    stun::answer_binding_request(&bytes, SocketAddr::from(([192, 0, 2, 1], port)))
                        .unwrap();
                probe.handle_response(now, stun::parse_binding_response(&answer).unwrap());
            }
            if let Some(result) = probe.poll_event() {
                return (result, sent);
            }
            now = probe.poll_timeout().expect("waiting");
            probe.handle_timeout(now);
        }
    }

    #[test]
    fn inbound_probe_tells_a_firewalled_nat_from_a_bare_one() {
        assert_eq!(run_inbound(false, 0), (InboundBehaviour::KeepsPort, 2));
        assert_eq!(run_inbound(true, 0), (InboundBehaviour::MovesPort, 2));
        assert_eq!(
            run_inbound(true, 3).0,
            InboundBehaviour::MovesPort,
            "retransmits"
        );
        assert_eq!(
            run_inbound(false, 100).0,
            InboundBehaviour::Unknown,
            "no answer"
        );
    }
}
