//! The NAT rebinding cell: alice and bob connect, alice sends bob a bulk transfer, and when
//! about a third of it has arrived, alice's router forgets its UDP mappings and maps her
//! next datagrams to a new public port ([`Lab::rebind_nat`]). A node survives the
//! rebinding when every byte still arrives, intact and in order, every message ends in
//! `delivered` and none in `failed`: the path under the live connection has to move to
//! alice's new address (bob's NAT must be opened towards it, so a port-restricted bob needs
//! a new punch). Measured besides: the longest stall between two arrivals, and whether
//! either node reported a `path` event (bob should see alice's new address).
//!
//! The address-change cell runs the same transfer, but instead of rebinding the NAT it moves
//! alice's host to another address on her LAN ([`Lab::move_host_address`]): her next
//! datagrams leave from the new address, and her router gives them a new mapping.
//!
//! The relay-cut cell ([`Disruption::Cut`]) runs it again between two NATs that punch: at a
//! third, alice's router starts dropping UDP between its public address and bob's router's
//! ([`Lab::cut_udp`]), so the direct path dies while the rendezvous and its relay stay
//! reachable. The transfer must go on over the relay (a `path <peer> relayed` event); when it
//! is done the rule goes, and the connection must return to a direct path by itself.
//!
//! The UDP-unblock cell ([`Disruption::Unblock`]): alice's router drops all UDP from before
//! the nodes start, so her node registers over TLS and her relay runs over TLS; at a third the
//! block goes ([`Lab::restore_udp`]) and the connection must move to UDP without loss, direct
//! in the end.
//!
//! After every disruption, once the transfer is done, the cell waits (at most
//! [`BACK_TO_DIRECT_WAIT`]) until both sides' last `path` events are direct again: a node
//! that fell back to the relay retries for a direct path 10 s later, then at doubling gaps.

use super::cell::{CellConfig, CellResult, MessageTally};
use super::node::{NodeProcess, Output};
use super::session::{find_event, ms, pattern, Session, BULK_CHUNK};
use crate::lab::Lab;
use crate::nft::PortRange;
use serde::Serialize;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Message id of the first bulk message (ids 1-4 are the small messages).
const FIRST_ID: u64 = 100;
/// How long after the rebinding the router's conntrack is read to confirm the new mapping.
const VERIFY_AFTER: Duration = Duration::from_millis(500);
/// Smallest transfer that leaves something to send after a third has arrived.
pub const MIN_REBIND_BYTES: usize = 3 * BULK_CHUNK;
/// Largest transfer of the address-change cell (it needs no more to show the outcome).
pub const ADDRESS_CHANGE_BYTES: usize = 30 * BULK_CHUNK;
/// The last octet of alice's LAN address grows by this when she moves (.10 -> .110).
const MOVE_OFFSET: u8 = 100;
/// Longest wait, after the transfer (after the cut is lifted), for both sides to be direct
/// again: the node's retries come 10 s after a fallback, then 20 s later, then 40 s later.
pub const BACK_TO_DIRECT_WAIT: Duration = Duration::from_secs(45);

/// What happens to alice's side when a third of the transfer has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruption {
    /// `router`'s NAT is rebound ([`Lab::rebind_nat`]).
    Rebind { router: String },
    /// `host`, behind `router`, moves to another address on its LAN.
    Move { router: String, host: String },
    /// `router` drops UDP between its public address and router `remote`'s until the
    /// transfer is done ([`Lab::cut_udp`]).
    Cut { router: String, remote: String },
    /// `router` drops all UDP from the start (alice reaches the rendezvous and its relay over
    /// TLS); when a third has arrived the block goes ([`Lab::restore_udp`]) and the connection
    /// must move to UDP, direct in the end.
    Unblock { router: String },
}

impl Disruption {
    /// alice's router.
    pub fn router(&self) -> &str {
        match self {
            Disruption::Rebind { router }
            | Disruption::Move { router, .. }
            | Disruption::Cut { router, .. }
            | Disruption::Unblock { router } => router,
        }
    }
}

/// What happened in the rebinding phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebindResult {
    /// The router whose NAT was rebound (alice's).
    pub router: String,
    /// Bytes alice gave her node for bob.
    pub bytes: usize,
    pub messages: usize,
    /// The router's public address and the port range it maps UDP to after the rebinding.
    pub public_ip: Option<Ipv4Addr>,
    pub new_ports: Option<PortRange>,
    /// alice's address as bob's node reported it when they connected.
    pub address_before: Option<String>,
    /// Address-change cell: alice's LAN address before and after the move.
    pub lan_before: Option<Ipv4Addr>,
    pub lan_after: Option<Ipv4Addr>,
    /// Relay-cut cell: what was cut (`UDP 192.0.2.1 <-> 192.0.2.2 dropped in alice-nat`).
    pub cut: Option<String>,
    /// UDP-unblock cell: the block that was lifted.
    pub unblocked: Option<String>,
    /// When the disruption happened (for times relative to it).
    #[serde(skip)]
    pub disrupted_at: Option<Instant>,
    /// alice's public address (router's IP, mapped port) in its conntrack just before the
    /// disruption and shortly after it.
    pub public_before: Option<SocketAddrV4>,
    pub public_after: Option<SocketAddrV4>,
    /// Bytes that had arrived at bob when the NAT was rebound, and when (from the first
    /// bulk message queued).
    pub rebound_after_bytes: Option<usize>,
    pub rebound_at_ms: Option<f64>,
    /// alice's mappings in the router's conntrack shortly after the rebinding
    /// (`inside -> public port -> remote`): proof that the lab really rebound.
    pub mappings_after: Vec<String>,
    pub messages_arrived: usize,
    pub bytes_arrived: usize,
    /// The messages arrived at bob in the order alice sent them.
    pub in_order: bool,
    /// Some message arrived after the rebinding.
    pub resumed: bool,
    /// Longest time between two consecutive arrivals at bob; when the transfer did not
    /// complete, the time from the last arrival to the end of the wait counts too.
    pub stall_ms: Option<f64>,
    /// Whole transfer, first message queued to last byte received, when it completed.
    pub throughput_mib_s: Option<f64>,
    /// The bytes that arrived after the disruption over the time from it to the last arrival
    /// (the stall included): in the relay-cut cell, the relayed rate.
    pub after_mib_s: Option<f64>,
    /// From the disruption to the first `path <peer> relayed` event of either side.
    pub fallback_ms: Option<f64>,
    /// Relay-cut cell: when the cut was lifted, from the disruption.
    pub restored_at_ms: Option<f64>,
    /// From the disruption (relay-cut cell: from lifting the cut) until both sides' last
    /// `connected`/`path` events were direct again, if they were within the wait.
    pub back_direct_ms: Option<f64>,
    /// `path` events each node reported for the other (`bob: path direct <addr> (+ms)`, the
    /// time from the disruption).
    pub path_events: Vec<String>,
    /// bob reported a `path` event for alice at the router's public IP and a new port (of
    /// the new range; after an address change, `public_after`'s).
    pub bob_saw_new_address: bool,
    /// Every byte arrived intact and in order, every message ended in `delivered`, none in
    /// `failed`.
    pub survived: bool,
    /// Why it did not survive.
    pub problems: Vec<String>,
}

impl RebindResult {
    /// The phase did not run.
    pub fn not_run(router: &str, why: &str) -> RebindResult {
        RebindResult {
            router: router.to_string(),
            problems: vec![format!("not run: {why}")],
            ..RebindResult::default()
        }
    }
}

/// Runs the transfer with `disruption` in the middle, then waits for the path to be direct
/// again; problems of the lab itself (the rebinding, move or cut failed, or conntrack does
/// not show the new mapping) go to `result.lab_problem`.
pub fn run(
    cfg: &CellConfig,
    lab: &Lab,
    disruption: &Disruption,
    session: &mut Session,
    result: &mut CellResult,
) {
    let router = disruption.router();
    let move_host = match disruption {
        Disruption::Move { host, .. } => Some(host.as_str()),
        _ => None,
    };
    let cut = match disruption {
        Disruption::Cut { remote, .. } => Some(lab.addr(remote)),
        _ => None,
    };
    let unblock = matches!(disruption, Disruption::Unblock { .. });
    let mut bytes = cfg.rebind_bytes.max(MIN_REBIND_BYTES);
    if move_host.is_some() {
        bytes = bytes.min(ADDRESS_CHANGE_BYTES);
    }
    let chunks = bytes.div_ceil(BULK_CHUNK);
    let mut r = RebindResult {
        router: router.to_string(),
        bytes,
        messages: chunks,
        public_ip: lab.addr(router).ok(),
        in_order: true,
        ..RebindResult::default()
    };
    let alice_ip = lab.addr("alice").ok();
    // bob's address as alice's node connected to it: her mapping towards it is the one
    // whose public address counts.
    let bob_addr: Option<SocketAddrV4> = session.nodes[0]
        .events("connected")
        .into_iter()
        .find(|(_, w)| w.get(1) == Some(&session.ids[1]))
        .and_then(|(_, w)| w.get(3)?.parse().ok());
    // Made before the clock starts: making 100 MiB must not hold the sending back.
    let bodies: Vec<Vec<u8>> = (0..chunks as u64)
        .map(|k| {
            pattern(
                FIRST_ID + k,
                BULK_CHUNK.min(bytes - k as usize * BULK_CHUNK) - 8,
            )
        })
        .collect();
    let start = Instant::now();
    for (k, body) in bodies.into_iter().enumerate() {
        session.send(0, FIRST_ID + k as u64, &body);
    }
    let last_id = FIRST_ID + chunks as u64 - 1;
    let mut arrived: HashSet<u64> = HashSet::new();
    let mut arrival_times: Vec<Instant> = Vec::new();
    let mut last_seen_id = None;
    let mut seen = 0;
    let mut rebound_at: Option<Instant> = None;
    let mut verified = false;
    let ended = loop {
        let now = Instant::now();
        let deadline = match rebound_at {
            None => start + cfg.bulk_timeout,
            Some(at) => at + cfg.rebind_wait,
        };
        if now >= deadline {
            r.problems.push(match rebound_at {
                None => format!(
                    "only {} of {chunks} messages arrived in {} s, before the rebinding",
                    arrived.len(),
                    cfg.bulk_timeout.as_secs()
                ),
                Some(_) => format!(
                    "{} of {chunks} messages had arrived {} s after the rebinding",
                    arrived.len(),
                    cfg.rebind_wait.as_secs()
                ),
            });
            break now;
        }
        let bob = &mut session.nodes[1];
        let known = seen;
        bob.wait_for((now + Duration::from_millis(50)).min(deadline), |h| {
            (h.len() > known).then_some(())
        });
        for timed in &bob.history[seen..] {
            let Output::Recv { peer, payload } = &timed.output else {
                continue;
            };
            let Some(id) = payload
                .get(..8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8")))
            else {
                continue;
            };
            if peer != &session.ids[0] || !(FIRST_ID..=last_id).contains(&id) {
                continue;
            }
            if last_seen_id.is_some_and(|last| id <= last) {
                r.in_order = false;
            }
            last_seen_id = Some(id);
            if arrived.insert(id) {
                arrival_times.push(timed.at);
                r.bytes_arrived += payload.len();
            }
        }
        seen = bob.history.len();
        if rebound_at.is_none() && r.bytes_arrived >= bytes / 3 {
            r.public_before = alice_ip.and_then(|ip| {
                let m = lab.udp_mappings(router).ok()?;
                let mut alices = m.iter().filter(|m| *m.inside.ip() == ip);
                let m = alices
                    .clone()
                    .find(|m| Some(m.remote) == bob_addr)
                    .or_else(|| alices.next())?;
                Some(SocketAddrV4::new(r.public_ip?, m.public_port))
            });
            let done = match (move_host, alice_ip) {
                _ if unblock => lab.restore_udp(router).map(|()| {
                    r.unblocked = Some(format!("UDP block in {router} lifted"));
                }),
                _ if cut.is_some() => match &cut {
                    Some(Ok(remote)) => lab.cut_udp(router, *remote).map(|()| {
                        r.cut = Some(format!(
                            "UDP {} <-> {remote} dropped in {router}",
                            r.public_ip.map_or("?".into(), |ip| ip.to_string())
                        ));
                    }),
                    Some(Err(e)) => Err(crate::error::NetsimError::Topology(e.to_string())),
                    None => unreachable!("cut.is_some()"),
                },
                (None, _) => lab
                    .rebind_nat(router)
                    .map(|ports| r.new_ports = Some(ports)),
                (Some(host), Some(ip)) => {
                    let [a, b, c, d] = ip.octets();
                    let new = Ipv4Addr::new(a, b, c, d.wrapping_add(MOVE_OFFSET));
                    lab.move_host_address(host, new).map(|old| {
                        r.lan_before = Some(old);
                        r.lan_after = Some(new);
                    })
                }
                (Some(host), None) => Err(crate::error::NetsimError::UnknownHost(host.into())),
            };
            match done {
                Ok(()) => {
                    let at = Instant::now();
                    rebound_at = Some(at);
                    r.rebound_after_bytes = Some(r.bytes_arrived);
                    r.rebound_at_ms = Some(ms(at - start));
                }
                Err(e) => {
                    result.lab_problem = Some(match (move_host, &cut) {
                        _ if unblock => format!("lifting the UDP block in {router} failed: {e}"),
                        (_, Some(_)) => format!("cutting UDP in {router} failed: {e}"),
                        (None, _) => format!("rebinding {router} failed: {e}"),
                        (Some(host), _) => format!("moving {host} to a new address failed: {e}"),
                    });
                    break Instant::now();
                }
            }
        }
        let inside = r.lan_after.or(alice_ip);
        if cut.is_some() || unblock {
            verified = true; // nothing moved: no mapping to verify
        }
        if let (Some(at), Some(ip), false) = (rebound_at, inside, verified) {
            if Instant::now() >= at + VERIFY_AFTER {
                let (ports, before) = (r.new_ports, r.public_before);
                match verify_mappings(lab, router, ip, ports, before, bob_addr, at) {
                    Ok(Some((lines, port))) => {
                        r.mappings_after = lines;
                        r.public_after = r.public_ip.map(|ip| SocketAddrV4::new(ip, port));
                        verified = true;
                    }
                    Ok(None) => {}
                    Err(problem) => {
                        result.lab_problem = Some(problem);
                        verified = true;
                    }
                }
            }
        }
        if arrived.len() == chunks {
            break Instant::now();
        }
        // Stop early once every message that has not arrived has failed.
        session.nodes[0].drain();
        let alice = &session.nodes[0];
        if rebound_at.is_some()
            && (FIRST_ID..=last_id)
                .filter(|id| !arrived.contains(id))
                .all(|id| find_event(&alice.history, &["failed"], &id.to_string()).is_some())
        {
            r.problems.push(format!(
                "alice's node reported every one of the {} messages that had not arrived as failed",
                chunks - arrived.len()
            ));
            break Instant::now();
        }
    };
    if rebound_at.is_some() && !verified && result.lab_problem.is_none() {
        result.lab_problem = Some(format!(
            "no mapping of alice's appeared in {router}'s conntrack after the rebinding"
        ));
    }
    r.messages_arrived = arrived.len();
    r.resumed = rebound_at.is_some_and(|at| arrival_times.iter().any(|&t| t > at));
    let mut stall = arrival_times
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max();
    if arrived.len() < chunks {
        let open = ended.saturating_duration_since(arrival_times.last().copied().unwrap_or(start));
        stall = stall.max(Some(open));
    }
    r.stall_ms = stall.map(ms);
    r.disrupted_at = rebound_at;
    if arrived.len() == chunks {
        if let Some(&end) = arrival_times.last() {
            let secs = (end - start).as_secs_f64().max(1e-6);
            r.throughput_mib_s = Some(bytes as f64 / (1024.0 * 1024.0) / secs);
            if let (Some(at), Some(before)) = (rebound_at, r.rebound_after_bytes) {
                let secs = end.saturating_duration_since(at).as_secs_f64().max(1e-6);
                r.after_mib_s = Some((bytes - before) as f64 / (1024.0 * 1024.0) / secs);
            }
        }
    }
    let mut from = rebound_at;
    if cut.is_some() && rebound_at.is_some() {
        match lab.restore_udp(router) {
            Ok(()) => {
                let now = Instant::now();
                r.restored_at_ms = rebound_at.map(|at| ms(now - at));
                from = Some(now);
            }
            Err(e) => result.lab_problem = Some(format!("lifting the cut in {router}: {e}")),
        }
    }
    if let (Some(at), Some(from), true) = (rebound_at, from, arrived.len() == chunks) {
        r.back_direct_ms = wait_direct(session, at, from + BACK_TO_DIRECT_WAIT)
            .map(|d| ms(d.saturating_duration_since(from)));
    }
    result.rebind = Some(r);
}

/// The last `connected`/`path` event `node` reported for `peer`: when, and whether direct.
fn last_path(node: &NodeProcess, peer: &str) -> Option<(Instant, bool)> {
    let mut last: Option<(Instant, bool)> = None;
    for name in ["connected", "path"] {
        for (at, words) in node.events(name) {
            if words.get(1).map(String::as_str) == Some(peer) && last.is_none_or(|l| at >= l.0) {
                last = Some((at, words.get(2).map(String::as_str) == Some("direct")));
            }
        }
    }
    last
}

/// Waits until both sides' last `connected`/`path` events for each other are direct and
/// came after `after`, or `deadline`; returns the time of the later of the two.
pub(super) fn wait_direct(
    session: &mut Session,
    after: Instant,
    deadline: Instant,
) -> Option<Instant> {
    loop {
        for node in session.nodes.iter_mut() {
            node.drain();
        }
        let ends: Vec<_> = (0..2)
            .map(|i| last_path(&session.nodes[i], &session.ids[1 - i]))
            .collect();
        if let [Some((a, true)), Some((b, true))] = ends[..] {
            if a.max(b) > after {
                return Some(a.max(b));
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// alice's UDP mappings (from `alice`, her address now) in the router's conntrack, and the
/// public port of the first: `Ok(None)` while there is none yet (she has not sent since the
/// rebinding; the port is that of her mapping towards `bob` if there is one), an error if one is outside the new port range `ports` or (after a move)
/// still on the public port she had `before`.
fn verify_mappings(
    lab: &Lab,
    router: &str,
    alice: Ipv4Addr,
    ports: Option<PortRange>,
    before: Option<SocketAddrV4>,
    bob: Option<SocketAddrV4>,
    rebound_at: Instant,
) -> std::result::Result<Option<(Vec<String>, u16)>, String> {
    let mappings = lab
        .udp_mappings(router)
        .map_err(|e| format!("reading {router}'s conntrack after the rebinding: {e}"))?;
    let alices: Vec<_> = mappings
        .iter()
        .filter(|m| *m.inside.ip() == alice)
        .collect();
    if alices.is_empty() {
        return if rebound_at.elapsed() > Duration::from_secs(5) {
            Err(format!(
                "no mapping of alice's in {router}'s conntrack 5 s after the rebinding"
            ))
        } else {
            Ok(None)
        };
    }
    let lines: Vec<String> = alices
        .iter()
        .map(|m| format!("{} -> :{} -> {}", m.inside, m.public_port, m.remote))
        .collect();
    if let Some(ports) = ports {
        if let Some(old) = alices.iter().find(|m| !ports.contains(m.public_port)) {
            return Err(format!(
                "after the rebinding {router} still maps {} to port {} (outside {}-{})",
                old.inside, old.public_port, ports.first, ports.last
            ));
        }
    }
    if let Some(old) = before.and_then(|b| alices.iter().find(|m| m.public_port == b.port())) {
        return Err(format!(
            "{router} maps alice's new address {} to her old public port {}",
            old.inside, old.public_port
        ));
    }
    let towards_bob = alices.iter().find(|m| Some(m.remote) == bob);
    Ok(Some((lines, towards_bob.unwrap_or(&alices[0]).public_port)))
}

/// After the cell's messages are accounted for: the `path` events, whether bob saw alice's
/// new address, and the verdict on the transfer.
pub fn conclude(r: &mut RebindResult, session: &Session, tally: &MessageTally) {
    let names = ["alice", "bob"];
    for (i, node) in session.nodes.iter().enumerate() {
        for (at, words) in node.events("path") {
            if words.get(1) != Some(&session.ids[1 - i]) {
                continue;
            }
            let addr = words.get(3).cloned().unwrap_or_default();
            let kind = words.get(2).map_or("?", String::as_str);
            let since = r.disrupted_at.map(|d| {
                let (a, b) = (
                    ms(at.saturating_duration_since(d)),
                    ms(d.saturating_duration_since(at)),
                );
                if b > 0.0 {
                    -b
                } else {
                    a
                }
            });
            r.path_events.push(format!(
                "{}: path {kind} {addr} ({})",
                names[i],
                since.map_or("-".into(), |v| format!("{v:+.0} ms"))
            ));
            if kind == "relayed" {
                if let Some(v) = since.filter(|v| *v >= 0.0) {
                    r.fallback_ms = Some(r.fallback_ms.map_or(v, |f: f64| f.min(v)));
                }
            }
            if i == 1 {
                let new = addr.parse::<SocketAddr>().ok().is_some_and(|a| {
                    r.public_ip.is_some_and(|ip| a.ip() == ip)
                        && match r.new_ports {
                            Some(p) => p.contains(a.port()),
                            None => r.public_after.is_some_and(|p| p.port() == a.port()),
                        }
                });
                r.bob_saw_new_address |= new;
            }
        }
    }
    r.address_before = session.nodes[1]
        .events("connected")
        .into_iter()
        .find(|(_, w)| w.get(1) == Some(&session.ids[0]))
        .and_then(|(_, w)| w.get(3).cloned());
    if r.rebound_at_ms.is_none() && r.problems.is_empty() {
        r.problems.push(
            "the disruption never happened (NAT not rebound, alice not moved, nothing cut)".into(),
        );
    }
    if r.messages_arrived < r.messages {
        let missing = format!(
            "{} of {} messages ({} of {} bytes) arrived",
            r.messages_arrived, r.messages, r.bytes_arrived, r.bytes
        );
        if !r.problems.contains(&missing) {
            r.problems.push(missing);
        }
    }
    if !r.in_order {
        r.problems.push("messages arrived out of order".into());
    }
    if r.unblocked.is_some() && r.messages_arrived == r.messages && r.back_direct_ms.is_none() {
        r.problems.push(format!(
            "not direct {} s after UDP was unblocked",
            BACK_TO_DIRECT_WAIT.as_secs()
        ));
    }
    if r.cut.is_some() {
        if r.fallback_ms.is_none() {
            r.problems
                .push("no `path <peer> relayed` event after the direct path was cut".into());
        }
        if r.messages_arrived == r.messages && r.back_direct_ms.is_none() {
            r.problems.push(format!(
                "not direct again {} s after the cut was lifted",
                BACK_TO_DIRECT_WAIT.as_secs()
            ));
        }
    }
    let undelivered: Vec<u64> = session
        .sent
        .iter()
        .filter(|m| {
            find_event(
                &session.nodes[m.from].history,
                &["delivered"],
                &m.id.to_string(),
            )
            .is_none()
        })
        .map(|m| m.id)
        .collect();
    if !undelivered.is_empty() {
        r.problems.push(format!(
            "{} message(s) without a delivered event",
            undelivered.len()
        ));
    }
    for (n, what) in [
        (tally.failed, "failed"),
        (tally.lost, "lost (no delivered or failed event)"),
        (tally.corrupted, "corrupted"),
        (tally.duplicated, "duplicated"),
        (
            tally.double_terminal,
            "with more than one delivered/failed event",
        ),
    ] {
        if n > 0 {
            r.problems.push(format!("{n} message(s) {what}"));
        }
    }
    r.survived = r.rebound_at_ms.is_some() && r.problems.is_empty();
}
