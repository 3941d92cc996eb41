//! The tokio driver of the sans-IO [`PathAgent`]: it moves datagrams and time, nothing else.
//!
//! One task ([`drive`]) owns the agent's clock: it feeds it the project datagrams and STUN
//! answers the socket splits off, calls `handle_timeout` when its deadline passes, sends every
//! `Output::Transmit` on the socket, and publishes `Output::Event`s as per-peer state on watch
//! channels (a watch never loses the latest state and never grows). Other tasks change the agent
//! through [`Paths`], which locks it, makes the call and wakes the driver so the outputs go out
//! at once. The socket layer reads the same agent (under the same lock) to translate between
//! virtual addresses and paths.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use p2pnat_proto::demux::DatagramKind;
use p2pnat_proto::nat::NatReport;
use p2pnat_proto::path::{
    AgentEvent, CheckRole, Output, Path, PathAgent, PeerCandidates, Transmit,
};
use p2pnat_proto::{stun, PeerId};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::dial::StunRoutes;
use crate::socket::{NodeSocket, SideDatagram};

/// What the agent last said about one peer, as the peer task and a dial need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPathState {
    /// The path QUIC to the peer goes out on.
    pub selected: Option<Path>,
    /// How many rounds of checks ended without any path.
    pub failed_rounds: u64,
}

/// Shared handle on the node's path agent.
#[derive(Debug)]
pub struct Paths {
    agent: Arc<Mutex<PathAgent>>,
    wake: Notify,
    states: Mutex<HashMap<PeerId, watch::Sender<PeerPathState>>>,
    /// Peers whose selected path went silent, for the re-punch task (bounded; a full queue
    /// drops the request and the agent asks again after its check timeout).
    repunch: mpsc::Sender<PeerId>,
}

/// Capacity of the queue of re-punch requests.
pub const REPUNCH_QUEUE: usize = 64;

impl Paths {
    /// The handle, and the receiver of re-punch requests (see [`super::dial::repunch`]).
    pub fn new(agent: Arc<Mutex<PathAgent>>) -> (Arc<Self>, mpsc::Receiver<PeerId>) {
        let (repunch, requests) = mpsc::channel(REPUNCH_QUEUE);
        let paths = Arc::new(Paths {
            agent,
            wake: Notify::new(),
            states: Mutex::new(HashMap::new()),
            repunch,
        });
        (paths, requests)
    }

    /// Calls `f` on the agent, then wakes the driver to send what it produced.
    fn with<R>(&self, f: impl FnOnce(&mut PathAgent, std::time::Instant) -> R) -> R {
        let result = f(
            &mut self.agent.lock().expect("path agent lock"),
            Instant::now().into_std(),
        );
        self.wake.notify_one();
        result
    }

    /// Starts checks towards `peer`'s candidates; returns its virtual address.
    pub fn start_checks(
        &self,
        peer: PeerId,
        candidates: &PeerCandidates<'_>,
        role: CheckRole,
    ) -> Result<SocketAddr, p2pnat_proto::path::agent::PathError> {
        self.with(|agent, now| agent.start_checks(now, peer, candidates, role))
    }

    pub fn set_own_nat(&self, nat: NatReport) {
        self.with(|agent, _| agent.set_own_nat(nat));
    }

    pub fn set_connected(&self, peer: PeerId, connected: bool) {
        self.with(|agent, now| agent.set_connected(now, &peer, connected));
    }

    /// The MTU discovery bound for a connection to `vaddr` on its selected path
    /// ([`crate::datagram_size::max_udp_payload`]; Ethernet's without a path).
    pub fn max_udp_payload(&self, vaddr: SocketAddr) -> u16 {
        let path = self.with(|agent, _| agent.selected_path(vaddr));
        match path {
            Some(path) => crate::datagram_size::max_udp_payload(
                path.remote,
                path.kind == p2pnat_proto::path::PathKind::Relayed,
            ),
            None => crate::datagram_size::ETHERNET_MAX_UDP_PAYLOAD,
        }
    }

    pub fn bind_incoming(&self, vaddr: SocketAddr, peer: PeerId) {
        self.with(|agent, now| agent.bind_incoming(now, vaddr, peer));
        self.sync(peer);
    }

    /// Frees `vaddr` unless a dial shares it (`only_if_anonymous`: it never proved a peer).
    pub fn release(&self, vaddr: SocketAddr, only_if_anonymous: bool) {
        let peer = self.with(|agent, _| {
            let peer = agent.table().peer(vaddr);
            if !(only_if_anonymous && peer.is_some()) {
                agent.release(vaddr);
            }
            peer
        });
        if let Some(peer) = peer {
            self.sync(peer);
        }
    }

    /// The virtual address to dial `peer` at (see `PathAgent::dial_vaddr`).
    pub fn dial_vaddr(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.agent.lock().expect("path agent lock").dial_vaddr(peer)
    }

    /// The selected path of a virtual address.
    pub fn selected(&self, vaddr: SocketAddr) -> Option<Path> {
        self.agent
            .lock()
            .expect("path agent lock")
            .selected_path(vaddr)
    }

    /// The peer's path state, updated as the agent reports.
    pub fn subscribe(&self, peer: PeerId) -> watch::Receiver<PeerPathState> {
        let mut states = self.states.lock().expect("path states lock");
        states
            .entry(peer)
            .or_insert_with(|| watch::channel(PeerPathState::default()).0)
            .subscribe()
    }

    /// Makes the published selected path match the agent's (after a release or a bind).
    fn sync(&self, peer: PeerId) {
        let selected = self.agent.lock().expect("path agent lock").peer_path(&peer);
        self.update(peer, |state| state.selected = selected);
    }

    fn update(&self, peer: PeerId, change: impl FnOnce(&mut PeerPathState)) {
        if let Some(sender) = self.states.lock().expect("path states lock").get(&peer) {
            sender.send_modify(change);
        }
    }

    fn publish(&self, event: AgentEvent) {
        match event {
            AgentEvent::PathSelected {
                peer,
                path,
                previous,
                rtt,
            } => {
                match previous {
                    None => {
                        tracing::debug!(peer = %peer.short(), %path, ?rtt, "path selected")
                    }
                    Some(old) => {
                        tracing::info!(peer = %peer.short(), from = %old, to = %path, ?rtt, "path switched")
                    }
                }
                self.update(peer, |state| state.selected = Some(path));
            }
            AgentEvent::ChecksFailed { peer } => {
                let counters = self.agent.lock().expect("path agent lock").counters;
                tracing::debug!(peer = %peer.short(), ?counters, "no candidate answered checks");
                self.update(peer, |state| state.failed_rounds += 1);
            }
            AgentEvent::NeedCandidates { peer } => {
                tracing::info!(peer = %peer.short(), "looking the peer up again to punch (its path went silent, or a try for a direct one)");
                if self.repunch.try_send(peer).is_err() {
                    tracing::warn!(peer = %peer.short(), "re-punch queue full; request dropped");
                }
            }
            AgentEvent::OpenSockets { .. }
            | AgentEvent::CloseSockets { .. }
            | AgentEvent::Burst { .. } => {
                tracing::error!("socket event reached the publisher; ignored")
            }
        }
    }
}

/// Runs the agent: see the module documentation. Also routes STUN responses to their waiters.
pub async fn drive(
    paths: Arc<Paths>,
    socket: Arc<NodeSocket>,
    stun_answers: Arc<StunRoutes>,
    mut side_rx: mpsc::Receiver<SideDatagram>,
) {
    let mut transmits: Vec<Transmit> = Vec::new();
    let mut events: Vec<AgentEvent> = Vec::new();
    loop {
        let deadline = {
            let mut agent = paths.agent.lock().expect("path agent lock");
            let now = Instant::now().into_std();
            loop {
                match agent.poll_output(now) {
                    Output::Transmit(transmit) => transmits.push(transmit),
                    Output::Event(event) => events.push(event),
                    Output::Timeout(at) => break at,
                }
            }
        };
        for transmit in transmits.drain(..) {
            let Transmit {
                local,
                destination,
                contents,
            } = &transmit;
            if let Err(e) = socket.send_raw_on(*local, *destination, contents) {
                tracing::debug!(to = %destination, "check not sent: {e}");
            }
        }
        for event in events.drain(..) {
            match event {
                AgentEvent::OpenSockets { peer, count } => {
                    // Binding hundreds of sockets takes tens of milliseconds: not on this task,
                    // which must keep answering checks meanwhile (a relayed path is being
                    // found at the same time).
                    let (paths, socket) = (paths.clone(), socket.clone());
                    tokio::task::spawn_blocking(move || {
                        let opened: Vec<_> = socket
                            .open_extra(count)
                            .into_iter()
                            .filter_map(|id| Some((id, socket.extra_addr(id)?.port())))
                            .collect();
                        tracing::info!(peer = %peer.short(), opened = opened.len(), "extra sockets open");
                        paths.with(|agent, now| agent.sockets_opened(now, peer, &opened));
                    });
                }
                AgentEvent::Burst {
                    at,
                    gap,
                    max_late,
                    transmits,
                } => {
                    let socket = socket.clone();
                    let lead = at.saturating_duration_since(std::time::Instant::now());
                    tracing::debug!(
                        ?lead,
                        ?gap,
                        checks = transmits.len(),
                        "crossing sweep scheduled"
                    );
                    tokio::task::spawn_blocking(move || {
                        send_burst(&socket, at, gap, max_late, &transmits)
                    });
                }
                AgentEvent::CloseSockets { sockets } => {
                    socket.close_extra(&sockets);
                    tracing::debug!(
                        closed = sockets.len(),
                        open = socket.extra_count(),
                        "extra sockets closed"
                    );
                }
                event => paths.publish(event),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now().into_std();
                paths.agent.lock().expect("path agent lock").handle_timeout(now);
            }
            _ = paths.wake.notified() => {}
            datagram = side_rx.recv() => {
                let Some(datagram) = datagram else { return };
                handle_side(&paths, &stun_answers, datagram);
            }
        }
    }
}

/// Sends a crossing sweep's checks at `at`, `gap` apart, as exactly as a thread can: it sleeps
/// until shortly before `at` (the kernel's timer slack is tens of µs; tokio's timer has 1 ms
/// steps) and spins from there; a check that cannot leave within `max_late` of its time is
/// dropped. A sweep lasts a few milliseconds.
fn send_burst(
    socket: &NodeSocket,
    at: std::time::Instant,
    gap: std::time::Duration,
    max_late: std::time::Duration,
    transmits: &[Transmit],
) {
    use std::time::{Duration, Instant};
    const SPIN: Duration = Duration::from_micros(300);
    let sends: Vec<_> = transmits
        .iter()
        .map(|t| socket.resolve(t.local, t.destination))
        .collect();
    if let Some(sleep) = at.checked_duration_since(Instant::now() + SPIN) {
        std::thread::sleep(sleep);
    }
    let (mut failed, mut dropped, mut sending) = (0usize, 0usize, Duration::ZERO);
    for (i, transmit) in transmits.iter().enumerate() {
        let due = at + gap * i as u32;
        let mut now = Instant::now();
        while now < due {
            std::hint::spin_loop();
            now = Instant::now();
        }
        if now > due + max_late {
            dropped += 1;
            continue;
        }
        failed += usize::from(sends[i].send(&transmit.contents).is_err());
        sending += now.elapsed();
    }
    let took = Instant::now().saturating_duration_since(at);
    let per_send = sending / (transmits.len() - dropped).max(1) as u32;
    tracing::debug!(
        checks = transmits.len(),
        failed,
        dropped,
        ?per_send,
        ?took,
        "crossing sweep sent"
    );
}

fn handle_side(paths: &Paths, stun_answers: &StunRoutes, datagram: SideDatagram) {
    let from = datagram.from;
    match datagram.kind {
        DatagramKind::Stun => match stun::parse_binding_response(&datagram.bytes) {
            Ok(response) => {
                if !stun_answers.deliver(&response.transaction_id, response) {
                    tracing::debug!(%from, "STUN response for no request in progress dropped");
                }
            }
            Err(e) => tracing::debug!(%from, "STUN datagram dropped: {e}"),
        },
        _ => {
            let now = Instant::now().into_std();
            let result = paths
                .agent
                .lock()
                .expect("path agent lock")
                .handle_datagram(now, datagram.local, from, &datagram.bytes);
            if let Err(e) = result {
                tracing::debug!(%from, "check dropped: {e}");
            }
        }
    }
}
