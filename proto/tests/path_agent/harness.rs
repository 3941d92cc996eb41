//! A Pair-style harness (after quinn-proto's tests/util.rs): two path agents on a simulated
//! network with NAT models, in virtual time. Nothing sleeps; every run is deterministic.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pnat_proto::nat::{InboundBehaviour, NatBehaviour, NatReport};
use p2pnat_proto::path::auth::OwnSecret;
use p2pnat_proto::path::{
    AgentConfig, AgentEvent, CheckRole, LocalSocketId, Output, Path, PathAgent, PeerCandidates,
};
use p2pnat_proto::sim::{HostId, NatConfig, NatId, Network};
use p2pnat_proto::PeerId;

/// Every node binds this port (port preservation then gives it as the public port too).
pub const PORT: u16 = 5000;
pub const RENDEZVOUS: &str = "203.0.113.10:3478";
const APP_TAG: u8 = b'Q';

pub struct Node {
    pub agent: PathAgent,
    pub host: HostId,
    timeout: Instant,
    pub events: Vec<(Duration, AgentEvent)>,
    /// Sequence numbers of application datagrams received from the peer's virtual address.
    pub app_received: Vec<u64>,
    /// Application datagrams sent with no selected path.
    pub app_unsent: u64,
    app_next_seq: u64,
    /// The node's NAT as its NAT detection would report it.
    pub nat: NatReport,
    /// Extra local sockets open now (socket `n` is bound to port `PORT + n`).
    pub sockets: BTreeSet<u16>,
    next_socket: u16,
    /// Most extra sockets open at once.
    pub max_sockets: usize,
}

impl Node {
    pub fn id(&self) -> PeerId {
        self.agent.own()
    }

    pub fn selections(&self) -> Vec<(Duration, Path, Option<Path>)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                AgentEvent::PathSelected { path, previous, .. } => Some((*at, *path, *previous)),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, want: fn(&AgentEvent) -> bool) -> usize {
        self.events.iter().filter(|(_, e)| want(e)).count()
    }
}

pub struct Pair {
    pub net: Network,
    pub nodes: Vec<Node>,
    pub rendezvous: HostId,
    pub now: Instant,
    pub start: Instant,
    /// Each connected node sends an application datagram to its peer this often.
    pub app_interval: Option<Duration>,
    next_app: Instant,
    /// Answer `NeedCandidates` as the real node does: look the peer up again and punch.
    pub repunch: bool,
    observed_log: Vec<SocketAddr>,
}

/// A network with a rendezvous host on the internet.
pub fn network(seed: u64) -> (Network, HostId) {
    let mut net = Network::new(seed);
    let rendezvous = net.add_host(RENDEZVOUS.parse::<SocketAddr>().unwrap().ip(), None);
    (net, rendezvous)
}

/// A NAT of `config` on the internet at `public`, with one host at `private` behind it.
pub fn behind(
    net: &mut Network,
    config: NatConfig,
    public: &str,
    private: &str,
) -> (NatId, HostId) {
    let nat = net.add_nat(config, public.parse().unwrap(), None);
    let host = net.add_host(private.parse().unwrap(), Some(nat));
    (nat, host)
}

impl Pair {
    pub fn new(net: Network, rendezvous: HostId, hosts: [HostId; 2], config: AgentConfig) -> Self {
        let now = Instant::now();
        let nodes = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| Node {
                agent: PathAgent::new(
                    OwnSecret::from_seed(&[i as u8 + 1; 32]),
                    config,
                    [i as u8 + 10; 32],
                ),
                host: *host,
                timeout: now,
                events: Vec::new(),
                app_received: Vec::new(),
                app_unsent: 0,
                app_next_seq: 0,
                nat: NatReport::UNKNOWN,
                sockets: BTreeSet::new(),
                next_socket: 1,
                max_sockets: 0,
            })
            .collect();
        Pair {
            net,
            nodes,
            rendezvous,
            now,
            start: now,
            app_interval: None,
            next_app: now,
            repunch: true,
            observed_log: Vec::new(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn own_addr(&self, i: usize) -> SocketAddr {
        self.socket_addr(i, LocalSocketId(0))
    }

    fn socket_addr(&self, i: usize, socket: LocalSocketId) -> SocketAddr {
        SocketAddr::new(self.net.host_ip(self.nodes[i].host), PORT + socket.0)
    }

    /// Sets each node's NAT mapping behaviour (as its detection would find it) on its agent.
    pub fn set_nats(&mut self, nats: [NatBehaviour; 2]) {
        self.set_reports(nats.map(|mapping| NatReport {
            mapping,
            inbound: InboundBehaviour::Unknown,
        }));
    }

    /// Sets each node's whole NAT report on its agent.
    pub fn set_reports(&mut self, reports: [NatReport; 2]) {
        for (node, nat) in self.nodes.iter_mut().zip(reports) {
            node.nat = nat;
            node.agent.set_own_nat(nat);
        }
    }

    /// The address the rendezvous observes for node `i` (a datagram is sent to find out).
    pub fn observed(&mut self, i: usize) -> Option<SocketAddr> {
        // The real node learns it over QUIC, which retransmits: so does this, until answered.
        let before = self.observed_log.len();
        let (host, src) = (self.nodes[i].host, self.own_addr(i));
        for _ in 0..50 {
            self.net
                .send(self.now, host, src, RENDEZVOUS.parse().unwrap(), vec![b'R']);
            let deadline = self.now + Duration::from_millis(200);
            if self.run_until(deadline, |pair| pair.observed_log.len() > before) {
                break;
            }
        }
        self.observed_log.get(before).copied()
    }

    /// What the rendezvous would tell the other side about node `i`.
    pub fn candidates(&mut self, i: usize) -> Vec<SocketAddr> {
        let mut candidates = vec![self.own_addr(i)];
        candidates.extend(self.observed(i));
        candidates
    }

    /// A coordinated punch: `dialler` asks the rendezvous for the other node, which answers it
    /// and pushes a punch request to the other node at the same moment.
    pub fn punch(&mut self, dialler: usize) {
        let answerer = 1 - dialler;
        let (to_dialler, to_answerer) = (self.candidates(answerer), self.candidates(dialler));
        let now = self.now;
        for (me, role, candidates) in [
            (dialler, CheckRole::Dialler, &to_dialler),
            (answerer, CheckRole::Answerer, &to_answerer),
        ] {
            let (peer, nat) = (self.nodes[1 - me].id(), self.nodes[1 - me].nat);
            let candidates = PeerCandidates {
                addrs: candidates,
                observed: candidates.get(1).copied(),
                nat,
            };
            self.nodes[me]
                .agent
                .start_checks(now, peer, &candidates, role)
                .expect("checks start");
        }
    }

    /// Both sides selected a path.
    pub fn both_selected(&self) -> bool {
        (0..2).all(|i| self.selected(i).is_some())
    }

    pub fn selected(&self, i: usize) -> Option<Path> {
        self.nodes[i].agent.peer_path(&self.nodes[1 - i].id())
    }

    /// What QUIC does once connected: both agents run heartbeats.
    pub fn connect(&mut self) {
        let now = self.now;
        for i in 0..2 {
            let peer = self.nodes[1 - i].id();
            self.nodes[i].agent.set_connected(now, &peer, true);
        }
    }

    /// Runs until `done` holds (true) or `deadline` passes (false).
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Pair) -> bool) -> bool {
        loop {
            for i in 0..self.nodes.len() {
                if self.drive(i) && self.repunch {
                    self.punch(i);
                }
            }
            if done(self) {
                return true;
            }
            let mut next = self.nodes.iter().map(|n| n.timeout).min().unwrap();
            if let Some(at) = self.net.next_delivery_time() {
                next = next.min(at);
            }
            if self.app_interval.is_some() {
                next = next.min(self.next_app);
            }
            if next > deadline {
                self.now = deadline;
                return false;
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// Runs for `duration` whatever happens.
    pub fn run_for(&mut self, duration: Duration) {
        let deadline = self.now + duration;
        self.run_until(deadline, |_| false);
    }

    fn step(&mut self) {
        let now = self.now;
        while let Some(delivery) = self.net.poll_delivery(now) {
            if delivery.host == self.rendezvous {
                self.observed_log.push(delivery.src);
                continue;
            }
            let Some(i) = self.nodes.iter().position(|n| n.host == delivery.host) else {
                continue;
            };
            let node = &mut self.nodes[i];
            let socket = LocalSocketId(delivery.dst.port().wrapping_sub(PORT));
            if socket != LocalSocketId(0) && !node.sockets.contains(&socket.0) {
                continue; // no socket on that port (any more)
            }
            if delivery.payload.first() == Some(&APP_TAG) {
                // QUIC stands-in: shown under a virtual address only from a known route.
                let vaddr = node
                    .agent
                    .vaddr_for_source(socket, delivery.src, false)
                    .unwrap();
                if vaddr.is_some() {
                    let seq = u64::from_be_bytes(delivery.payload[1..9].try_into().unwrap());
                    node.app_received.push(seq);
                }
            } else {
                let _ = node
                    .agent
                    .handle_datagram(now, socket, delivery.src, &delivery.payload);
            }
        }
        for node in &mut self.nodes {
            if node.timeout <= now {
                node.agent.handle_timeout(now);
            }
        }
        if let Some(interval) = self.app_interval {
            if self.next_app <= now {
                self.next_app = now + interval;
                for i in 0..2 {
                    self.send_app(i);
                }
            }
        }
    }

    fn send_app(&mut self, i: usize) {
        let peer = self.nodes[1 - i].id();
        let Some(vaddr) = self.nodes[i].agent.table().vaddr_of(&peer) else {
            return;
        };
        let Some(path) = self.nodes[i].agent.selected_path(vaddr) else {
            self.nodes[i].app_unsent += 1;
            return;
        };
        let src = self.socket_addr(i, path.local);
        let node = &mut self.nodes[i];
        let mut payload = vec![APP_TAG];
        payload.extend_from_slice(&node.app_next_seq.to_be_bytes());
        node.app_next_seq += 1;
        self.net
            .send(self.now, node.host, src, path.remote, payload);
    }

    /// Sends what node `i` wants to send; true when it asked for fresh candidates.
    fn drive(&mut self, i: usize) -> bool {
        let now = self.now;
        let elapsed = self.elapsed();
        let mut repunch = false;
        loop {
            match self.nodes[i].agent.poll_output(now) {
                Output::Transmit(t) => {
                    let open =
                        t.local == LocalSocketId(0) || self.nodes[i].sockets.contains(&t.local.0);
                    assert!(open, "sent on socket {:?}, which is not open", t.local);
                    let (host, src) = (self.nodes[i].host, self.socket_addr(i, t.local));
                    self.net.send(now, host, src, t.destination, t.contents);
                }
                Output::Event(event) => {
                    repunch |= matches!(event, AgentEvent::NeedCandidates { .. });
                    let node = &mut self.nodes[i];
                    match &event {
                        AgentEvent::OpenSockets { peer, count } => {
                            let mut opened = Vec::new();
                            while opened.len() < *count && node.sockets.len() < node.max_sockets {
                                node.sockets.insert(node.next_socket);
                                opened.push(LocalSocketId(node.next_socket));
                                node.next_socket += 1;
                            }
                            node.agent.sockets_opened(now, *peer, &opened);
                        }
                        AgentEvent::CloseSockets { sockets } => {
                            for socket in sockets {
                                assert!(node.sockets.remove(&socket.0), "closed {socket:?} twice");
                            }
                        }
                        _ => {}
                    }
                    node.events.push((elapsed, event));
                }
                Output::Timeout(at) => {
                    self.nodes[i].timeout = at;
                    break;
                }
            }
        }
        repunch
    }
}

pub fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}
