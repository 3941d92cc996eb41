//! The UDP probes of `p2p-node netcheck`, each from its own fresh socket: a STUN round trip,
//! the mapping (the sans-IO [`NatProbe`]) with hairpinning, and the filtering probe (pokes
//! from the rendezvous's inbound probe). Datagrams that are none of the expected answers are
//! logged and dropped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2pnat_proto::nat::{NatBehaviour, NatProbe, NatProbeConfig, POKE_PREFIX};
use p2pnat_proto::netcheck::{is_hairpin_echo, FilteringObservations};
use p2pnat_proto::path::normalize;
use p2pnat_proto::stun::{self, BindingResponse};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Between retransmissions of an unanswered Binding request.
pub const RETRANSMIT: Duration = Duration::from_millis(200);
/// How long a Binding request is retried before it counts as unanswered.
pub const STUN_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long to wait for a poke after the answer to its request (the poke leaves first).
pub const POKE_WAIT: Duration = Duration::from_millis(300);
/// How long to wait for the hairpin datagram.
pub const HAIRPIN_WAIT: Duration = Duration::from_millis(500);

/// The 12 bytes after the header of the rendezvous's poke (a Binding indication).
const POKE_TAG: &[u8; 12] = b"p2pNinbound!";

pub fn random_transaction() -> [u8; 12] {
    let mut id = [0u8; 12];
    getrandom::getrandom(&mut id).expect("the OS random source works");
    id
}

/// A fresh UDP socket on the wildcard address of `ip`'s family.
pub async fn fresh_socket(ip: IpAddr) -> std::io::Result<UdpSocket> {
    let any: IpAddr = match ip {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    UdpSocket::bind(SocketAddr::new(any, 0)).await
}

/// A socket and what arrived on it that was not the answer being waited for.
pub struct Probe {
    socket: UdpSocket,
    /// The rendezvous's inbound probe address: pokes from it are counted.
    poker: Option<SocketAddr>,
    pub pokes: usize,
    /// A hairpin request being waited for, and whether it came back.
    hairpin: Option<[u8; 12]>,
    pub hairpin_seen: bool,
}

impl Probe {
    pub fn new(socket: UdpSocket, poker: Option<SocketAddr>) -> Self {
        Probe {
            socket,
            poker,
            pokes: 0,
            hairpin: None,
            hairpin_seen: false,
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one datagram before `deadline`; answers are returned, pokes and hairpin
    /// echoes are recorded, anything else is logged and dropped.
    async fn receive(&mut self, deadline: Instant) -> Option<Option<BindingResponse>> {
        let mut buf = [0u8; 1500];
        let received = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf)).await;
        let (len, from) = match received {
            Err(_) => return None,
            Ok(Err(e)) => {
                // ICMP port unreachable and the like: nothing to read, keep waiting.
                tracing::debug!("netcheck receive error: {e}");
                return Some(None);
            }
            Ok(Ok(received)) => received,
        };
        let (datagram, from) = (&buf[..len], normalize(from));
        if len == 20 && datagram[..2] == [0x00, 0x11] && &datagram[8..20] == POKE_TAG {
            if Some(from) == self.poker {
                self.pokes += 1;
            } else {
                tracing::debug!(%from, "poke from an unexpected address dropped");
            }
            return Some(None);
        }
        if let Some(transaction) = &self.hairpin {
            if is_hairpin_echo(datagram, transaction) {
                self.hairpin_seen = true;
                return Some(None);
            }
        }
        match stun::parse_binding_response(datagram) {
            Ok(response) => Some(Some(response)),
            Err(e) => {
                tracing::debug!(%from, "netcheck dropped a datagram: {e}");
                Some(None)
            }
        }
    }

    /// Sends a Binding request to `to` until answered or [`STUN_TIMEOUT`]; returns the answer
    /// and the round trip from the last transmission before it.
    pub async fn exchange(
        &mut self,
        to: SocketAddr,
        transaction: [u8; 12],
    ) -> Option<(SocketAddr, Duration)> {
        let request = stun::binding_request(transaction);
        let give_up = Instant::now() + STUN_TIMEOUT;
        loop {
            let now = Instant::now();
            if now >= give_up {
                return None;
            }
            if let Err(e) = self.socket.send_to(&request, to).await {
                tracing::debug!(%to, "netcheck request not sent: {e}");
            }
            let next = (now + RETRANSMIT).min(give_up);
            while let Some(received) = self.receive(next).await {
                if let Some(response) = received.filter(|r| r.transaction_id == transaction) {
                    return Some((response.mapped, now.elapsed()));
                }
            }
        }
    }

    /// Reads (recording pokes and echoes) until `wait` has passed.
    pub async fn linger(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        while self.receive(until).await.is_some() {}
    }

    /// Sends one datagram from another fresh socket of this host to `mapped` (this socket's
    /// public address) and reports whether it arrived here within [`HAIRPIN_WAIT`]. Another
    /// socket, as RFC 4787 section 6 means two endpoints behind one NAT; a datagram from the
    /// socket to itself would also make its NAT's tuples collide when the port is preserved.
    pub async fn hairpin(&mut self, mapped: SocketAddr) -> bool {
        let sender = match fresh_socket(mapped.ip()).await {
            Ok(sender) => sender,
            Err(e) => {
                tracing::debug!("no socket for the hairpin test: {e}");
                return false;
            }
        };
        let transaction = random_transaction();
        self.hairpin = Some(transaction);
        self.hairpin_seen = false;
        let request = stun::binding_request(transaction);
        for _ in 0..2 {
            if let Err(e) = sender.send_to(&request, mapped).await {
                tracing::debug!(%mapped, "hairpin datagram not sent: {e}");
            }
            self.linger(HAIRPIN_WAIT / 2).await;
            if self.hairpin_seen {
                break;
            }
        }
        self.hairpin = None;
        self.hairpin_seen
    }
}

/// What the mapping probe found.
#[derive(Debug, Clone)]
pub struct MappingResult {
    pub behaviour: NatBehaviour,
    /// The public address the rendezvous saw (its main STUN address's answer).
    pub mapped: Option<SocketAddr>,
    /// Each server's answer, in order (`servers[0]` is the rendezvous).
    pub answers: Vec<(SocketAddr, Option<SocketAddr>)>,
    pub hairpin: Option<bool>,
}

/// Runs the sans-IO [`NatProbe`] from `probe`'s socket to `servers`, then the hairpin test
/// to the address the first server reported.
pub async fn mapping(
    probe: &mut Probe,
    local: Vec<SocketAddr>,
    servers: &[SocketAddr],
) -> MappingResult {
    let mut nat = NatProbe::new(
        Instant::now().into_std(),
        local,
        servers,
        random_transaction,
        NatProbeConfig::default(),
    );
    let transactions: Vec<[u8; 12]> = nat.transactions().collect();
    let mut answers: Vec<Option<SocketAddr>> = vec![None; servers.len()];
    let behaviour = loop {
        while let Some((server, bytes)) = nat.poll_transmit(Instant::now().into_std()) {
            if let Err(e) = probe.socket.send_to(&bytes, server).await {
                tracing::debug!(%server, "STUN request not sent: {e}");
            }
        }
        if let Some(behaviour) = nat.poll_event() {
            break behaviour;
        }
        let Some(deadline) = nat.poll_timeout() else {
            break NatBehaviour::Unknown;
        };
        match probe.receive(deadline.into()).await {
            None => nat.handle_timeout(Instant::now().into_std()),
            Some(Some(response)) => {
                if let Some(i) = transactions
                    .iter()
                    .position(|t| *t == response.transaction_id)
                {
                    answers[i] = Some(response.mapped);
                }
                nat.handle_response(response);
            }
            Some(None) => {}
        }
    };
    let mapped = answers.first().copied().flatten();
    let hairpin = match mapped {
        Some(mapped) => Some(probe.hairpin(mapped).await),
        None => None,
    };
    MappingResult {
        behaviour,
        mapped,
        answers: servers.iter().copied().zip(answers).collect(),
        hairpin,
    }
}

/// The filtering probe (see `p2pnat_proto::netcheck`): `server` is the rendezvous's main STUN
/// address, `alternate` its STUN address on the inbound probe's IP.
pub async fn filtering(
    probe: &mut Probe,
    server: SocketAddr,
    alternate: Option<SocketAddr>,
) -> FilteringObservations {
    let mut observed = FilteringObservations::default();
    let poke = || {
        let mut transaction = random_transaction();
        transaction[..4].copy_from_slice(&POKE_PREFIX);
        transaction
    };
    if probe.exchange(server, poke()).await.is_none() {
        return observed;
    }
    probe.linger(POKE_WAIT).await;
    observed.unsolicited = Some(probe.pokes > 0);
    if probe.pokes > 0 {
        return observed;
    }
    let Some(alternate) = alternate else {
        return observed;
    };
    if probe
        .exchange(alternate, random_transaction())
        .await
        .is_none()
    {
        return observed;
    }
    if probe.exchange(server, poke()).await.is_none() {
        return observed;
    }
    probe.linger(POKE_WAIT).await;
    observed.after_contacting_ip = Some(probe.pokes > 0);
    observed
}
