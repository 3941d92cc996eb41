//! A Pair-style harness (after quinn-proto's tests/util.rs): two path agents on a simulated
//! network with NAT models, in virtual time. Nothing sleeps; every run is deterministic.
//!
//! With [`Pair::enable_relay`], a TURN relay ([`crate::relay_model`]) sits on the internet:
//! a transmit on [`LocalSocketId::RELAY`] leaves the node's main socket wrapped for the relay,
//! and what the relay forwards is unwrapped and handed over on `RELAY` with the peer's address
//! as the relay saw it. Application datagrams take the same ways.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use p2pnat_proto::nat::{InboundBehaviour, NatBehaviour, NatReport};
use p2pnat_proto::path::auth::OwnSecret;
use p2pnat_proto::path::{
    AgentConfig, AgentEvent, CheckRole, LocalSocketId, Output, Path, PathAgent, PeerCandidates,
    Transmit,
};
use p2pnat_proto::sim::{HostId, NatConfig, NatId, Network};
use p2pnat_proto::PeerId;

use crate::relay_model::{self, FromServer, Relay};

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
    /// When each of `app_received` arrived (time since the start).
    pub app_received_at: Vec<Duration>,
    /// When each application datagram was sent, by sequence number.
    pub app_sent_at: Vec<Duration>,
    /// Application datagrams sent with no selected path.
    pub app_unsent: u64,
    /// Application datagrams whose selected path ran through the node's relay while it had
    /// none (dropped; not counted in `relay_sends_while_down`, which counts the agent's).
    pub app_relay_down: u64,
    app_next_seq: u64,
    /// The node's NAT as its NAT detection would report it.
    pub nat: NatReport,
    /// Extra local sockets open now (socket `n` is bound to port `PORT + n`).
    pub sockets: BTreeSet<u16>,
    next_socket: u16,
    /// Most extra sockets open at once.
    pub max_sockets: usize,
    /// The node's relayed address while its allocation is up.
    pub relay: Option<SocketAddr>,
    /// The agent's transmits on `RELAY` while the node had no allocation (dropped).
    pub relay_sends_while_down: u64,
    /// Times the agent asked to be woken at an instant whose `handle_timeout` had already run
    /// (a driver would spin; the harness wakes it 1 ms later instead).
    pub stale_timeouts: u64,
    handled_at: Option<Instant>,
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
    /// The TURN relay, once [`Pair::enable_relay`] added it.
    pub relay: Option<Relay>,
    /// Cuts the direct path: datagrams a node sends to anything but the rendezvous and the
    /// relay are dropped (counted in `cut_dropped`).
    pub cut_direct: bool,
    pub cut_dropped: u64,
    /// Each node with an allocation sends the relay a keepalive this often (holds its NAT
    /// mapping towards the relay open while no relayed traffic does).
    pub relay_keepalive: Duration,
    next_keepalive: Instant,
    pub now: Instant,
    pub start: Instant,
    /// Each connected node sends an application datagram to its peer this often.
    pub app_interval: Option<Duration>,
    next_app: Instant,
    /// Answer `NeedCandidates` as the real node does: look the peer up again and punch.
    pub repunch: bool,
    observed_log: Vec<SocketAddr>,
    /// Transmits of `AgentEvent::Burst`s not yet due: (when, node, transmit).
    burst_queue: Vec<(Instant, usize, Transmit)>,
    /// Each node's bursts leave this much later than asked (a driver's scheduling error).
    pub burst_skew: [Duration; 2],
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
                app_relay_down: 0,
                app_next_seq: 0,
                nat: NatReport::UNKNOWN,
                sockets: BTreeSet::new(),
                next_socket: 1,
                max_sockets: 0,
                app_received_at: Vec::new(),
                app_sent_at: Vec::new(),
                relay: None,
                relay_sends_while_down: 0,
                stale_timeouts: 0,
                handled_at: None,
            })
            .collect();
        Pair {
            net,
            nodes,
            rendezvous,
            relay: None,
            cut_direct: false,
            cut_dropped: 0,
            relay_keepalive: Duration::from_secs(25),
            next_keepalive: now,
            now,
            start: now,
            app_interval: None,
            next_app: now,
            repunch: true,
            observed_log: Vec::new(),
            burst_queue: Vec::new(),
            burst_skew: [Duration::ZERO; 2],
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
            let peer = &self.nodes[1 - me];
            let (peer, nat, relayed) = (peer.id(), peer.nat, peer.relay);
            let candidates = PeerCandidates {
                addrs: candidates,
                observed: candidates.get(1).copied(),
                nat,
                relayed,
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
            if let Some(at) = self.burst_queue.iter().map(|(at, ..)| *at).min() {
                next = next.min(at);
            }
            if self.nodes.iter().any(|n| n.relay.is_some()) {
                next = next.min(self.next_keepalive);
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
        let (due, later) = std::mem::take(&mut self.burst_queue)
            .into_iter()
            .partition::<Vec<_>, _>(|(at, ..)| *at <= now);
        self.burst_queue = later;
        for (_, i, t) in due {
            // A sweep that won closes its other sockets while the rest of it is still due: the
            // driver's sends on them fail.
            let closed = t.local.0 != 0 && !self.nodes[i].sockets.contains(&t.local.0);
            if t.local == LocalSocketId::RELAY || !closed {
                self.transmit(i, t.local, t.destination, t.contents);
            }
        }
        while let Some(delivery) = self.net.poll_delivery(now) {
            if delivery.host == self.rendezvous {
                self.observed_log.push(delivery.src);
                continue;
            }
            if let Some(relay) = self.relay.as_mut().filter(|r| r.host == delivery.host) {
                if let Some((src, dst, payload)) = relay.handle(now, delivery) {
                    self.net.send(now, relay.host, src, dst, payload);
                }
                continue;
            }
            let Some(i) = self.nodes.iter().position(|n| n.host == delivery.host) else {
                continue;
            };
            let socket = LocalSocketId(delivery.dst.port().wrapping_sub(PORT));
            if socket != LocalSocketId(0) && !self.nodes[i].sockets.contains(&socket.0) {
                continue; // no socket on that port (any more)
            }
            let server = self.relay.as_ref().map(Relay::server);
            if socket == LocalSocketId::MAIN && Some(delivery.src) == server {
                self.relay_envelope(i, &delivery.payload);
            } else {
                self.receive(i, socket, delivery.src, &delivery.payload);
            }
        }
        for node in &mut self.nodes {
            if node.timeout <= now {
                node.agent.handle_timeout(now);
                node.handled_at = Some(now);
            }
        }
        if self.next_keepalive <= now {
            self.next_keepalive = now + self.relay_keepalive;
            for i in 0..self.nodes.len() {
                if let (Some(_), Some(relay)) = (self.nodes[i].relay, &self.relay) {
                    let server = relay.server();
                    self.send_from(i, LocalSocketId::MAIN, server, relay_model::refresh());
                }
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

    /// A datagram for node `i` on `socket` from `src`: a check (to the agent) or an application
    /// datagram (shown under a virtual address only from a known route, as QUIC's would be).
    fn receive(&mut self, i: usize, socket: LocalSocketId, src: SocketAddr, payload: &[u8]) {
        let elapsed = self.elapsed();
        let node = &mut self.nodes[i];
        if payload.first() == Some(&APP_TAG) {
            let vaddr = node
                .agent
                .vaddr_for_source(self.now, socket, src, false)
                .unwrap();
            if vaddr.is_some() {
                let seq = u64::from_be_bytes(payload[1..9].try_into().unwrap());
                node.app_received.push(seq);
                node.app_received_at.push(elapsed);
            }
        } else {
            let _ = node.agent.handle_datagram(self.now, socket, src, payload);
        }
    }

    /// An envelope from the relay server to node `i`'s TURN client.
    fn relay_envelope(&mut self, i: usize, envelope: &[u8]) {
        match relay_model::from_server(envelope) {
            Some(FromServer::Allocated(relayed)) => self.nodes[i].relay = Some(relayed),
            Some(FromServer::Data { from, payload }) if self.nodes[i].relay.is_some() => {
                self.receive(i, LocalSocketId::RELAY, from, &payload);
            }
            Some(FromServer::Data { .. }) | None => {}
        }
    }

    /// Node `i` allocates a relayed address (retrying like a TURN client until answered) and
    /// tells its agent the relay is up. Adds the relay host (5 ms uplink) if there is none.
    pub fn enable_relay(&mut self, i: usize) {
        let relay = self
            .relay
            .get_or_insert_with(|| Relay::new(&mut self.net, Duration::from_millis(5)));
        let server = relay.server();
        for _ in 0..50 {
            self.send_from(
                i,
                LocalSocketId::MAIN,
                server,
                relay_model::allocate_request(i),
            );
            let deadline = self.now + Duration::from_millis(200);
            if self.run_until(deadline, |pair| pair.nodes[i].relay.is_some()) {
                break;
            }
        }
        assert!(self.nodes[i].relay.is_some(), "node {i} got no allocation");
        self.nodes[i].agent.set_relay(true);
    }

    /// Node `i`'s allocation is gone (deleted at the relay) and its agent is told so.
    pub fn drop_relay(&mut self, i: usize) {
        if let Some(relay) = self.relay.as_mut() {
            relay.deallocate(i);
        }
        self.nodes[i].relay = None;
        self.nodes[i].agent.set_relay(false);
    }

    /// Node `i` sends `payload` on `local` to `destination`: through its relay for `RELAY`.
    fn transmit(
        &mut self,
        i: usize,
        local: LocalSocketId,
        destination: SocketAddr,
        payload: Vec<u8>,
    ) {
        if local != LocalSocketId::RELAY {
            let open = local == LocalSocketId::MAIN || self.nodes[i].sockets.contains(&local.0);
            assert!(open, "sent on socket {local:?}, which is not open");
            self.send_from(i, local, destination, payload);
            return;
        }
        match (&self.relay, self.nodes[i].relay) {
            (Some(relay), Some(_)) => {
                let server = relay.server();
                let envelope = relay_model::send_envelope(destination, &payload);
                self.send_from(i, LocalSocketId::MAIN, server, envelope);
            }
            _ => self.nodes[i].relay_sends_while_down += 1,
        }
    }

    /// Puts a datagram from node `i`'s socket `local` on the network (unless the cut drops it).
    fn send_from(&mut self, i: usize, local: LocalSocketId, dst: SocketAddr, payload: Vec<u8>) {
        let relay_ip = self.relay.as_ref().map(|r| r.server().ip());
        let rendezvous_ip = self.net.host_ip(self.rendezvous);
        if self.cut_direct && dst.ip() != rendezvous_ip && Some(dst.ip()) != relay_ip {
            self.cut_dropped += 1;
            return;
        }
        let (host, src) = (self.nodes[i].host, self.socket_addr(i, local));
        self.net.send(self.now, host, src, dst, payload);
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
        if path.local == LocalSocketId::RELAY && self.nodes[i].relay.is_none() {
            self.nodes[i].app_relay_down += 1;
            return;
        }
        let elapsed = self.elapsed();
        let node = &mut self.nodes[i];
        let mut payload = vec![APP_TAG];
        payload.extend_from_slice(&node.app_next_seq.to_be_bytes());
        node.app_next_seq += 1;
        node.app_sent_at.push(elapsed);
        self.transmit(i, path.local, path.remote, payload);
    }

    /// Sends what node `i` wants to send; true when it asked for fresh candidates.
    fn drive(&mut self, i: usize) -> bool {
        let now = self.now;
        let elapsed = self.elapsed();
        let mut repunch = false;
        loop {
            match self.nodes[i].agent.poll_output(now) {
                Output::Transmit(t) => self.transmit(i, t.local, t.destination, t.contents),
                Output::Event(event) => {
                    repunch |= matches!(event, AgentEvent::NeedCandidates { .. });
                    let node = &mut self.nodes[i];
                    match &event {
                        AgentEvent::OpenSockets { peer, count } => {
                            let mut opened = Vec::new();
                            while opened.len() < *count && node.sockets.len() < node.max_sockets {
                                node.sockets.insert(node.next_socket);
                                opened.push((
                                    LocalSocketId(node.next_socket),
                                    PORT + node.next_socket,
                                ));
                                node.next_socket += 1;
                            }
                            node.agent.sockets_opened(now, *peer, &opened);
                        }
                        AgentEvent::CloseSockets { sockets } => {
                            for socket in sockets {
                                assert!(node.sockets.remove(&socket.0), "closed {socket:?} twice");
                            }
                        }
                        AgentEvent::Burst {
                            at, gap, transmits, ..
                        } => {
                            let start = *at + self.burst_skew[i];
                            for (k, t) in transmits.iter().enumerate() {
                                self.burst_queue
                                    .push((start + *gap * k as u32, i, t.clone()));
                            }
                        }
                        _ => {}
                    }
                    let node = &mut self.nodes[i];
                    node.events.push((elapsed, event));
                }
                Output::Timeout(at) => {
                    let node = &mut self.nodes[i];
                    node.timeout = at;
                    if at <= now && node.handled_at == Some(now) {
                        node.stale_timeouts += 1;
                        node.timeout = now + Duration::from_millis(1);
                    }
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
