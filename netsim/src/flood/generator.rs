//! The flood itself: throw-away identities on sockets opened inside lab namespaces (the flood
//! host's many addresses, hosts behind the lab's NATs), each reaching the rendezvous (over
//! control datagrams or a QUIC connection: [`Source::quic`]), registering, looking up nobody
//! and, later, asking for punches to the legitimate nodes; and junk datagrams from the flood
//! host's addresses. Everything protocol-specific is in [`super::client`] and
//! [`super::dgram`].
//!
//! The sockets are created in the namespaces (one helper thread per namespace, `setns`) and
//! then driven by this process's tokio runtime: a socket keeps the namespace it was made in,
//! so its datagrams leave from that host, through its router's NAT when it has one.

use super::client::{self, Answer, DgramClient, FloodClient, QuicClient, Transport};
use super::dgram::{DgramSocket, DgramStats};
use crate::error::{NetsimError, Result};
use crate::lab::Lab;
use p2pnat_proto::PeerId;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Handshakes (and registrations) in flight at once.
const IN_FLIGHT: usize = 64;
/// Rounds of the punch flood start at least this far apart: each identity then asks at most
/// twice a second, slower than the rendezvous's per-key refill (one every 250 ms after a
/// burst of 32, its defaults), so only the per-IP limit ever refuses it.
const PUNCH_ROUND_GAP: Duration = Duration::from_millis(500);
/// Errors kept per source, as examples.
const ERROR_EXAMPLES: usize = 3;

/// Where a share of the flood comes from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// e.g. `flood 198.51.100.100` or `flood-lan1 via flood-nat1 (symmetric)`.
    pub name: String,
    /// The lab host whose namespace its sockets live in.
    pub host: String,
    /// The address its sockets bind to.
    pub bind: Ipv4Addr,
    /// The address the rendezvous sees: `bind`, or the public address of the NAT in front.
    pub seen_ip: Ipv4Addr,
    pub identities: usize,
    /// Of `identities`, how many use the old QUIC control (a held connection each); the
    /// others register with control datagrams. Both kinds share the source IP's limits.
    pub quic: usize,
    /// One socket (so one NAT mapping) per identity; else all of one transport share one
    /// socket.
    pub socket_each: bool,
}

impl Source {
    /// The transport of identity `n` of this source: the QUIC ones spread evenly among the
    /// others, so both kinds arrive together and race for the source IP's registrations.
    pub fn transport(&self, n: usize) -> Transport {
        let (q, all) = (self.quic, self.identities.max(1));
        if (n + 1) * q / all > n * q / all {
            Transport::Quic
        } else {
            Transport::Dgram
        }
    }
}

/// What one source's identities got.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceTally {
    /// Identities that reached the rendezvous: a QUIC handshake, or a Hello answered.
    pub connected: usize,
    /// ... of which over QUIC.
    pub quic_connected: usize,
    pub connect_failures: usize,
    pub registered: usize,
    /// ... of which over datagrams (each holds a session).
    pub registered_dgram: usize,
    /// Refused registrations by refusal code.
    pub refused: BTreeMap<String, usize>,
    /// ... of which over QUIC.
    pub refused_quic: BTreeMap<String, usize>,
    /// Registrations without an answer, or with an answer that is neither.
    pub register_errors: usize,
    /// `Registered` answers whose observed IP is not the source's `seen_ip`.
    pub observed_elsewhere: usize,
    /// Register datagrams sent more than once (each refused copy is counted again by the
    /// rendezvous).
    pub register_resends: u64,
    /// `RateLimited` refusals received over datagrams, every copy (the first ends the
    /// identity's registration; each one is a copy the rendezvous refused and counted).
    pub rate_limited_copies: u64,
    /// Distinct source ports the rendezvous reported to the registered ones.
    pub observed_ports: usize,
    /// Behind a NAT: the UDP mappings its router holds toward the rendezvous at the end
    /// (conntrack), one per flooding socket.
    pub nat_mappings: Option<usize>,
    pub lookups_not_found: usize,
    /// Lookups by datagram identities without a session (refused), answered Unknown.
    pub lookups_unknown: usize,
    /// Lookups of random keys answered otherwise, or not at all.
    pub lookups_other: usize,
    /// Punch requests answered (each one charged to the per-IP limit).
    pub punch_answered: usize,
    /// ... of which `Found` (the target is registered).
    pub punch_found: usize,
    /// Punch requests by datagram identities without a session, answered Unknown (charged
    /// to no limit).
    pub punch_unknown: usize,
    /// Punch requests without an answer.
    pub punch_errors: usize,
    /// A few of the errors, as examples.
    pub errors: Vec<String>,
}

impl SourceTally {
    fn error(&mut self, e: impl std::fmt::Display) {
        if self.errors.len() < ERROR_EXAMPLES {
            self.errors.push(e.to_string());
        }
    }
}

/// The flood's identities, connected and holding their connections.
pub struct Flood {
    runtime: tokio::runtime::Runtime,
    pub sources: Vec<Source>,
    pub tallies: Vec<SourceTally>,
    /// (source index, client) for each identity that connected.
    clients: Vec<(usize, Arc<FloodClient>)>,
    _endpoints: Vec<quinn::Endpoint>,
    /// (source index, socket) of the datagram identities.
    dgram_sockets: Vec<(usize, Arc<DgramSocket>)>,
    dgram_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One identity's first steps: connect, register, look up nobody.
struct Arrival {
    source: usize,
    client: Option<FloodClient>,
    register: Option<std::result::Result<Answer, String>>,
    lookup: Option<std::result::Result<Answer, String>>,
    error: Option<String>,
}

impl Flood {
    /// Opens the sockets in their namespaces, then connects every identity to the rendezvous
    /// at `rendezvous`, registers it and has it look up a random key; returns once all have
    /// answered or failed. The connections stay open until the [`Flood`] is dropped.
    /// `arrived` counts the identities done so far (connected and answered, or failed).
    pub fn connect_all(
        lab: &Lab,
        sources: Vec<Source>,
        rendezvous: SocketAddr,
        arrived: Arc<AtomicUsize>,
    ) -> Result<Flood> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| NetsimError::io("starting the flood's runtime", e))?;
        // Sockets per source and transport: one per identity, or one shared.
        let mut sockets: Vec<[Vec<UdpSocket>; 2]> = Vec::new();
        for source in &sources {
            let quic = source.quic.min(source.identities);
            let dgram = source.identities - quic;
            let count = |n: usize| if source.socket_each { n } else { n.min(1) };
            let (nq, nd) = (count(quic), count(dgram));
            let bind = SocketAddr::from((source.bind, 0));
            let netns = lab.node(&source.host)?.netns.clone();
            let mut made: Vec<UdpSocket> = crate::netns::in_netns(&netns, move || {
                (0..nq + nd).map(|_| UdpSocket::bind(bind)).collect()
            })?;
            let dgram_sockets = made.split_off(nq);
            sockets.push([made, dgram_sockets]);
        }
        let _guard = runtime.enter();
        let error = |e: &dyn std::fmt::Display| NetsimError::Matrix(e.to_string());
        let mut endpoints: Vec<Vec<quinn::Endpoint>> = Vec::new();
        let mut dgram_sockets: Vec<Vec<Arc<DgramSocket>>> = Vec::new();
        let mut dgram_tasks = Vec::new();
        for [quic, dgram] in sockets {
            let made: std::result::Result<Vec<_>, _> =
                quic.into_iter().map(client::endpoint).collect();
            endpoints.push(made.map_err(|e| error(&e))?);
            let mut list = Vec::new();
            for socket in dgram {
                let (socket, task) =
                    DgramSocket::start(socket, rendezvous).map_err(|e| error(&e))?;
                list.push(socket);
                dgram_tasks.push(task);
            }
            dgram_sockets.push(list);
        }
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut tasks = Vec::new();
        for (index, source) in sources.iter().enumerate() {
            let (mut quic_n, mut dgram_n) = (0, 0);
            for n in 0..source.identities {
                let how = match source.transport(n) {
                    Transport::Quic => {
                        quic_n += 1;
                        let list = &endpoints[index];
                        Via::Quic(list[(quic_n - 1) % list.len()].clone())
                    }
                    Transport::Dgram => {
                        dgram_n += 1;
                        let list = &dgram_sockets[index];
                        Via::Dgram(list[(dgram_n - 1) % list.len()].clone())
                    }
                };
                let (slots, arrived) = (slots.clone(), arrived.clone());
                tasks.push(runtime.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    let arrival = arrive(index, how, rendezvous).await;
                    arrived.fetch_add(1, Ordering::SeqCst);
                    arrival
                }));
            }
        }
        let arrivals: Vec<Arrival> = runtime.block_on(async {
            let mut arrivals = Vec::new();
            for task in tasks {
                match task.await {
                    Ok(arrival) => arrivals.push(arrival),
                    Err(e) => arrivals.push(Arrival {
                        source: usize::MAX,
                        client: None,
                        register: None,
                        lookup: None,
                        error: Some(format!("flood task failed: {e}")),
                    }),
                }
            }
            arrivals
        });
        let mut tallies = vec![SourceTally::default(); sources.len()];
        let mut ports: Vec<BTreeSet<u16>> = vec![BTreeSet::new(); sources.len()];
        let mut clients = Vec::new();
        for a in arrivals {
            let Some(t) = tallies.get_mut(a.source) else {
                return Err(NetsimError::Matrix(a.error.unwrap_or_default()));
            };
            if let Some(e) = &a.error {
                t.error(e);
            }
            let over = a.client.as_ref().map(FloodClient::transport);
            match a.client {
                Some(c) => {
                    t.connected += 1;
                    if over == Some(Transport::Quic) {
                        t.quic_connected += 1;
                    }
                    clients.push((a.source, Arc::new(c)));
                }
                None => t.connect_failures += 1,
            }
            match a.register {
                Some(Ok(Answer::Registered { observed })) => {
                    t.registered += 1;
                    if over == Some(Transport::Dgram) {
                        t.registered_dgram += 1;
                    }
                    ports[a.source].insert(observed.port());
                    if observed.ip() != std::net::IpAddr::V4(sources[a.source].seen_ip) {
                        t.observed_elsewhere += 1;
                    }
                }
                Some(Ok(Answer::Refused(code))) => {
                    if over == Some(Transport::Quic) {
                        *t.refused_quic.entry(code.clone()).or_default() += 1;
                    }
                    *t.refused.entry(code).or_default() += 1;
                }
                Some(Ok(other)) => {
                    t.register_errors += 1;
                    t.error(format!("registration answered {other:?}"));
                }
                Some(Err(e)) => {
                    t.register_errors += 1;
                    t.error(e);
                }
                None => {}
            }
            match a.lookup {
                Some(Ok(Answer::NotFound)) => t.lookups_not_found += 1,
                Some(Ok(Answer::UnknownSession)) => t.lookups_unknown += 1,
                Some(other) => {
                    t.lookups_other += 1;
                    t.error(format!("lookup of nobody: {other:?}"));
                }
                None => {}
            }
        }
        for (t, p) in tallies.iter_mut().zip(&ports) {
            t.observed_ports = p.len();
        }
        drop(_guard);
        Ok(Flood {
            runtime,
            sources,
            tallies,
            clients,
            _endpoints: endpoints.into_iter().flatten().collect(),
            dgram_sockets: dgram_sockets
                .into_iter()
                .enumerate()
                .flat_map(|(i, list)| list.into_iter().map(move |s| (i, s)))
                .collect(),
            dgram_tasks,
        })
    }

    /// What the datagram identities' sockets sent and received, summed.
    pub fn dgram_stats(&self) -> DgramStats {
        let mut all = DgramStats::default();
        for s in self.dgram_sockets.iter().map(|(_, s)| s.stats()) {
            all.sent += s.sent;
            all.received += s.received;
            all.register_resends += s.register_resends;
            all.request_resends += s.request_resends;
            all.register_cookies += s.register_cookies;
            all.rate_limited += s.rate_limited;
            all.raw_sent += s.raw_sent;
            all.dropped += s.dropped;
            all.pushes += s.pushes;
        }
        all
    }

    /// (peer, session, first Request) of the registered datagram identities: the junk's
    /// material for forged tags and replays.
    pub fn dgram_sessions(&self) -> Vec<(p2pnat_proto::PeerId, u64, Option<Vec<u8>>)> {
        self.dgram_sockets
            .iter()
            .flat_map(|(_, s)| s.sessions())
            .collect()
    }

    /// Copies each source's Register resends and refusals received into its tally.
    pub fn count_resends(&mut self) {
        for (source, socket) in &self.dgram_sockets {
            let stats = socket.stats();
            self.tallies[*source].register_resends += stats.register_resends;
            self.tallies[*source].rate_limited_copies += stats.rate_limited;
        }
    }

    /// Identities holding a connection.
    pub fn connected(&self) -> usize {
        self.clients.len()
    }

    /// Starts the punch flood in the background: in rounds at least [`PUNCH_ROUND_GAP`] apart,
    /// every connected identity asks for a punch to one of `targets` (in turn), until `stop` is
    /// set after a round or `max_rounds` rounds are done. [`Flood::finish_punches`] waits for it.
    pub fn start_punches(
        &self,
        targets: Vec<PeerId>,
        max_rounds: usize,
        stop: Arc<AtomicBool>,
    ) -> PunchFlood {
        let clients = self.clients.clone();
        let rounds = Arc::new(AtomicU64::new(0));
        let done = rounds.clone();
        let sources = self.sources.len();
        let handle = self.runtime.spawn(async move {
            let mut tallies = vec![PunchTally::default(); sources];
            let rounds = if targets.is_empty() { 0 } else { max_rounds };
            for round in 0..rounds {
                if round > 0 && stop.load(Ordering::SeqCst) {
                    break;
                }
                let next_round = tokio::time::Instant::now() + PUNCH_ROUND_GAP;
                let mut tasks = Vec::new();
                for (i, (source, client)) in clients.iter().enumerate() {
                    let (client, source) = (client.clone(), *source);
                    let target = targets[(i + round) % targets.len()];
                    tasks.push(tokio::spawn(
                        async move { (source, client.punch(target).await) },
                    ));
                }
                for task in tasks {
                    let Ok((source, answer)) = task.await else {
                        continue;
                    };
                    let t = &mut tallies[source];
                    match answer {
                        Ok(Answer::UnknownSession) => t.unknown += 1,
                        Ok(answer) => {
                            t.answered += 1;
                            if answer == Answer::Found {
                                t.found += 1;
                            }
                        }
                        Err(e) => {
                            t.errors += 1;
                            if t.example.is_none() {
                                t.example = Some(e.to_string());
                            }
                        }
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep_until(next_round).await;
            }
            tallies
        });
        PunchFlood { handle, rounds }
    }

    /// Waits for the punch flood and adds its counts to the tallies; returns the rounds run.
    pub fn finish_punches(&mut self, punches: PunchFlood) -> u64 {
        let tallies = self.runtime.block_on(punches.handle).unwrap_or_default();
        for (t, p) in self.tallies.iter_mut().zip(tallies) {
            t.punch_answered += p.answered;
            t.punch_found += p.found;
            t.punch_unknown += p.unknown;
            t.punch_errors += p.errors;
            if let Some(e) = p.example {
                t.error(e);
            }
        }
        punches.rounds.load(Ordering::SeqCst)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.clients.clear();
        for endpoint in &self._endpoints {
            endpoint.close(0u32.into(), b"flood over");
        }
        for task in &self.dgram_tasks {
            task.abort();
        }
    }
}

/// The running punch flood.
pub struct PunchFlood {
    handle: tokio::task::JoinHandle<Vec<PunchTally>>,
    /// Rounds completed so far.
    pub rounds: Arc<AtomicU64>,
}

impl PunchFlood {
    /// Whether it is still sending (it stops when told, or after its last round).
    pub fn running(&self) -> bool {
        !self.handle.is_finished()
    }
}

#[derive(Debug, Clone, Default)]
struct PunchTally {
    answered: usize,
    found: usize,
    unknown: usize,
    errors: usize,
    example: Option<String>,
}

/// How one identity reaches the rendezvous.
enum Via {
    Quic(quinn::Endpoint),
    Dgram(Arc<DgramSocket>),
}

async fn arrive(source: usize, via: Via, rendezvous: SocketAddr) -> Arrival {
    let mut arrival = Arrival {
        source,
        client: None,
        register: None,
        lookup: None,
        error: None,
    };
    let connected = match via {
        Via::Quic(endpoint) => QuicClient::connect(&endpoint, rendezvous)
            .await
            .map(FloodClient::Quic),
        Via::Dgram(socket) => DgramClient::connect(socket).await.map(FloodClient::Dgram),
    };
    let client = match connected {
        Ok(c) => c,
        Err(e) => {
            arrival.error = Some(e.to_string());
            return arrival;
        }
    };
    arrival.register = Some(client.register().await.map_err(|e| e.to_string()));
    arrival.lookup = Some(match client::random_peer() {
        Ok(nobody) => client.lookup(nobody).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    });
    arrival.client = Some(client);
    arrival
}

/// Junk from the flood host's addresses to the rendezvous's QUIC+STUN port, until stopped:
/// STUN Binding indications (the rendezvous does not answer them; it counts each one that
/// reaches its STUN task as `drops_total{component="stun",reason="malformed"}`) and, every
/// other datagram, 64 random-looking bytes with QUIC's fixed bit set (quinn drops them).
pub struct Junk {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Junk {
    /// Starts sending about `per_sec` datagrams a second, in bursts every 10 ms, from
    /// sockets bound to each of `addrs` inside `host`.
    pub fn start(
        lab: &Lab,
        host: &str,
        addrs: &[Ipv4Addr],
        to: SocketAddr,
        per_sec: u64,
    ) -> Result<Junk> {
        let netns = lab.node(host)?.netns.clone();
        let binds: Vec<SocketAddr> = addrs.iter().map(|a| SocketAddr::from((*a, 0))).collect();
        let sockets: Vec<UdpSocket> =
            crate::netns::in_netns(&netns, move || binds.iter().map(UdpSocket::bind).collect())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let burst = (per_sec / 100).max(1);
        let thread = std::thread::spawn(move || {
            let mut sent = 0u64;
            let mut n = 0u32;
            while !flag.load(Ordering::SeqCst) && !sockets.is_empty() {
                for _ in 0..burst {
                    let socket = &sockets[n as usize % sockets.len()];
                    let _ = socket.send_to(&junk_datagram(n), to);
                    n = n.wrapping_add(1);
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            sent
        });
        Ok(Junk {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the junk; returns how many datagrams were sent.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Junk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Junk datagram number `n`: a STUN Binding indication when `n` is even, else 64 bytes that
/// are neither STUN nor valid QUIC.
pub fn junk_datagram(n: u32) -> Vec<u8> {
    if n.is_multiple_of(2) {
        let mut indication = vec![0u8; 20];
        indication[..8].copy_from_slice(&[0x00, 0x11, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42]);
        indication[8..12].copy_from_slice(&n.to_be_bytes());
        indication
    } else {
        let mut x = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut bytes = Vec::with_capacity(64);
        while bytes.len() < 64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        // A short header (fixed bit set, long-header bit clear): not STUN, not a project packet.
        bytes[0] = 0x40 | (bytes[0] & 0x3F);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_alternates_stun_indications_and_quic_lookalikes() {
        let stun = junk_datagram(4);
        assert_eq!(stun.len(), 20);
        assert_eq!(&stun[..2], &[0x00, 0x11], "Binding indication");
        assert_eq!(&stun[4..8], &[0x21, 0x12, 0xA4, 0x42], "magic cookie");
        let other = junk_datagram(5);
        assert_eq!(other.len(), 64);
        assert_eq!(other[0] & 0xC0, 0x40, "short header, fixed bit");
        assert_ne!(junk_datagram(7), other);
    }
}
