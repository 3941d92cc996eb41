//! Driving a pair of nodes in a lab: the rendezvous, `alice` and `bob` in framed mode, the
//! messages they send, and the accounting of every message (shared by plain, trial and
//! rebinding cells).

use super::cell::{CellConfig, CellResult, MessageTally};
use super::node::{NodeProcess, Output, Timed};
use crate::error::{NetsimError, Result};
use crate::lab::{Lab, LabProcess};
use crate::topology::RENDEZVOUS_ADDRS;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Port of the rendezvous (QUIC + STUN) on both of its addresses.
pub const RENDEZVOUS_PORT: u16 = 3478;
/// Size of one bulk message, as framed on the node's stdin.
pub const BULK_CHUNK: usize = 1024 * 1024;

/// A message handed to a node: its id, the sender (0 = alice, 1 = bob) and its bytes (the
/// first 8 are the id, big-endian, so the receiver can tell messages apart).
pub struct SentMessage {
    pub id: u64,
    pub from: usize,
    pub payload: Vec<u8>,
}

/// alice (index 0) and bob (index 1), running, with everything they were given to send.
pub struct Session {
    pub nodes: Vec<NodeProcess>,
    pub ids: Vec<String>,
    pub sent: Vec<SentMessage>,
}

/// When the first message each way was sent and arrived (arrival `None`: it failed or did
/// not arrive in time).
#[derive(Debug, Clone, Copy)]
pub struct Hello {
    pub t0: Instant,
    pub first_arrival: Option<Instant>,
    pub t1: Instant,
    pub second_arrival: Option<Instant>,
}

impl Hello {
    /// Whether either message got through.
    pub fn any(&self) -> bool {
        self.first_arrival.is_some() || self.second_arrival.is_some()
    }
}

impl Session {
    /// Starts alice's and bob's nodes (identities in `dir`) and waits for their `ready`
    /// events, recording them and any disagreement with the lab in `result`.
    pub fn start(
        cfg: &CellConfig,
        lab: &Lab,
        dir: &Path,
        rendezvous_id: &str,
        result: &mut CellResult,
    ) -> Result<Session> {
        let hosts = ["alice", "bob"];
        let mut ids = Vec::new();
        let mut nodes = Vec::new();
        for host in hosts {
            let identity = dir.join(format!("{host}.key"));
            ids.push(peer_id(cfg, lab, host, &identity)?);
            let mut args = vec![
                "--rendezvous".to_string(),
                format!("{rendezvous_id}@{}:{RENDEZVOUS_PORT}", RENDEZVOUS_ADDRS[0]),
                "--identity".into(),
                identity.display().to_string(),
                "--io".into(),
                "frames".into(),
            ];
            args.extend(cfg.node_args.iter().cloned());
            nodes.push(NodeProcess::start(
                lab,
                host,
                &cfg.node_bin,
                &args,
                &dir.join(format!("{host}.stderr")),
            )?);
        }
        let deadline = Instant::now() + cfg.ready_timeout;
        for (i, node) in nodes.iter_mut().enumerate() {
            let ready = node.wait_for(deadline, |h| {
                h.iter().find_map(|t| match &t.output {
                    Output::Event(l) if l.starts_with("ready ") => Some(l.clone()),
                    _ => None,
                })
            });
            let text = ready.map_or("-".to_string(), |l| {
                l.trim_start_matches("ready ").to_string()
            });
            if text != "-" {
                if let Some(problem) = observed_mismatch(lab, hosts[i], &text)? {
                    result.observed_mismatches.push(problem);
                }
            }
            if i == 0 {
                result.alice_ready = text;
            } else {
                result.bob_ready = text;
            }
        }
        Ok(Session {
            nodes,
            ids,
            sent: Vec::new(),
        })
    }

    /// Hands message `id` (the id's 8 bytes, then `body`) to node `from` for the other node;
    /// returns when it was queued.
    pub fn send(&mut self, from: usize, id: u64, body: &[u8]) -> Instant {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(body);
        let at = Instant::now();
        self.nodes[from].send(id, &self.ids[1 - from], &payload);
        self.sent.push(SentMessage { id, from, payload });
        at
    }

    /// Waits until message `id` from node `from` arrives at the other node (returns its
    /// arrival time) or its sender reports `failed` (returns `None` at once), or the deadline
    /// passes.
    pub fn wait(&mut self, from: usize, id: u64, deadline: Instant) -> Option<Instant> {
        wait_outcome(&mut self.nodes, &self.ids, from, id, deadline)
    }

    /// One message each way: alice to bob (alice dials), then bob to alice (reusing the
    /// connection, or dialling alice if there is none), each given `timeout`.
    pub fn hello(&mut self, timeout: Duration) -> Hello {
        let t0 = self.send(0, 1, b"hello bob, this is alice");
        let first_arrival = self.wait(0, 1, Instant::now() + timeout);
        let t1 = self.send(1, 2, b"hello alice, this is bob");
        let second_arrival = self.wait(1, 2, Instant::now() + timeout);
        Hello {
            t0,
            first_arrival,
            t1,
            second_arrival,
        }
    }

    /// Waits up to `grace` for every message's `delivered`/`failed` event, then records the
    /// connection facts and the tally of every message in `result`.
    pub fn finish(&mut self, hello: &Hello, grace: Duration, result: &mut CellResult) {
        result.first_message_ms = match (hello.first_arrival, hello.second_arrival) {
            (Some(at), _) => Some(ms(at - hello.t0)),
            (None, Some(at)) => Some(ms(at - hello.t1)),
            _ => None,
        };
        let deadline = Instant::now() + grace;
        for m in &self.sent {
            let key = m.id.to_string();
            self.nodes[m.from]
                .wait_for(deadline, |h| find_event(h, &["delivered", "failed"], &key));
        }
        for n in self.nodes.iter_mut() {
            n.drain();
        }
        connection_facts(&self.nodes, &self.ids, hello.t0, result);
        result.messages = tally(
            &self.nodes,
            &self.ids,
            &self.sent,
            connected_since(&self.nodes, &self.ids),
            &mut result.notes,
        );
    }
}

/// Starts `p2p-rendezvous` on the rendezvous host; returns its peer ID and process, or why
/// it could not start (a lab problem, not a harness error).
pub fn start_rendezvous(
    cfg: &CellConfig,
    lab: &Lab,
    dir: &Path,
    extra_args: &[String],
) -> std::result::Result<(String, LabProcess), String> {
    let log = std::fs::File::create(dir.join("rendezvous.stderr")).map_err(|e| e.to_string())?;
    let mut cmd = lab
        .command(crate::topology::RENDEZVOUS, &cfg.rendezvous_bin)
        .map_err(|e| e.to_string())?;
    cmd.arg("--listen")
        .arg(format!("{}:{RENDEZVOUS_PORT}", RENDEZVOUS_ADDRS[0]))
        .arg("--stun-listen")
        .arg(format!("{}:{RENDEZVOUS_PORT}", RENDEZVOUS_ADDRS[1]))
        .arg("--identity")
        .arg(dir.join("rendezvous.key"))
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.rendezvous_bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let process = LabProcess { child };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(cfg.ready_timeout)
        .map_err(|_| "the rendezvous printed no `listening` line in time".to_string())?;
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["listening", _addr, id] => Ok((id.to_string(), process)),
        _ => Err(format!(
            "unexpected first line from the rendezvous: {line:?}"
        )),
    }
}

/// The peer ID for an identity file, created by `p2p-node id` inside the host.
fn peer_id(cfg: &CellConfig, lab: &Lab, host: &str, identity: &Path) -> Result<String> {
    let out = lab
        .command(host, &cfg.node_bin)?
        .arg("id")
        .arg("--identity")
        .arg(identity)
        .output()
        .map_err(|e| NetsimError::io("running p2p-node id", e))?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || id.is_empty() || id.contains(' ') {
        return Err(NetsimError::Matrix(format!(
            "`p2p-node id` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(id)
}

/// Compares the `observed=` field of a ready event with the address the lab says the
/// rendezvous must see, and its `nat=` field with the lab's mapping behaviour; returns a
/// description of any disagreement.
fn observed_mismatch(lab: &Lab, host: &str, ready: &str) -> Result<Option<String>> {
    let plan = lab.plan();
    let node = plan.node(host)?;
    let mut outermost = node;
    while let Some(router) = plan.router_of(outermost) {
        outermost = router;
    }
    let field = |key: &str| {
        ready
            .split(' ')
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("")
            .to_string()
    };
    // Where UDP is blocked the node registers over TLS: the rendezvous then sees its TCP
    // connection, from the same outermost public address, and no NAT behaviour is measured.
    if lab.udp_blocked(host)? {
        let observed = field("observed=");
        let observed_ip = observed
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip());
        let mut problems = Vec::new();
        if field("over=") != "tls" || observed_ip != Some(outermost.addrs[0].into()) {
            problems.push(format!(
                "{host} reported over={} observed={observed}, the lab blocks UDP: expected over=tls observed={}:<port>",
                field("over="),
                outermost.addrs[0]
            ));
        }
        if field("nat=") != "unknown" {
            problems.push(format!("{host} reported nat={} over TLS", field("nat=")));
        }
        return Ok((!problems.is_empty()).then(|| problems.join("; ")));
    }
    let expected = outermost.addrs[0];
    let observed = ready
        .split(' ')
        .find_map(|w| w.strip_prefix("observed="))
        .unwrap_or("");
    let observed_ip = observed
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip());
    let mut problems = Vec::new();
    if observed_ip != Some(expected.into()) {
        problems.push(format!(
            "{host} reported observed={observed}, the lab expects {expected}:<port>"
        ));
    }
    if !matches!(field("over=").as_str(), "udp" | "") {
        problems.push(format!(
            "{host} reported over={}, the lab lets UDP through",
            field("over=")
        ));
    }
    // The node's own NAT mapping detection must agree with the lab's self-checked plan.
    let expected_nat = match plan.expected_behaviour(node) {
        None => "unknown",
        Some(b) if !b.translated => "public",
        Some(b) if b.mapping == crate::classify::MappingBehaviour::EndpointIndependent => {
            "endpoint-independent"
        }
        Some(_) => "endpoint-dependent",
    };
    let nat = ready
        .split(' ')
        .find_map(|w| w.strip_prefix("nat="))
        .unwrap_or("(missing)");
    if nat != expected_nat {
        problems.push(format!(
            "{host} reported nat={nat}, the lab expects nat={expected_nat}"
        ));
    }
    // `inbound=` (what an unsolicited datagram does to an endpoint-independent NAT), checked
    // where the lab makes it unambiguous and only when the node reports it.
    let inbound = ready.split(' ').find_map(|w| w.strip_prefix("inbound="));
    if let (Some(inbound), Some(expected)) = (inbound, expected_inbound(lab, node)) {
        if inbound != expected {
            problems.push(format!(
                "{host} reported inbound={inbound}, the lab expects inbound={expected}"
            ));
        }
    }
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}

/// What a host's `ready` must say about inbound datagrams, where the lab knows: behind
/// endpoint-independent NATs only, `moves-port` when the outermost has no WAN firewall (a
/// bare Linux NAT, as the self-check verifies), else `keeps-port`. `None` for public hosts,
/// symmetric NATs and blocked UDP.
fn expected_inbound(lab: &Lab, node: &crate::topology::NodePlan) -> Option<&'static str> {
    let plan = lab.plan();
    let behaviour = plan.expected_behaviour(node)?;
    if !behaviour.translated
        || behaviour.mapping != crate::classify::MappingBehaviour::EndpointIndependent
    {
        return None;
    }
    let mut outermost = plan.router_of(node)?;
    while let Some(up) = plan.router_of(outermost) {
        outermost = up;
    }
    let firewall = outermost.router.as_ref()?.config.wan_firewall;
    Some(if firewall { "keeps-port" } else { "moves-port" })
}

/// Waits until message `id` from node `from` arrives at the other node (returns its arrival
/// time) or its sender reports `failed` (returns `None`), or the deadline passes.
fn wait_outcome(
    nodes: &mut [NodeProcess],
    ids: &[String],
    from: usize,
    id: u64,
    deadline: Instant,
) -> Option<Instant> {
    let to = 1 - from;
    let key = id.to_string();
    loop {
        let slice = (Instant::now() + Duration::from_millis(20)).min(deadline);
        let arrived = nodes[to].wait_for(slice, |h| arrival(h, &ids[from], id));
        if arrived.is_some() {
            return arrived;
        }
        nodes[from].drain();
        if find_event(&nodes[from].history, &["failed"], &key).is_some()
            || Instant::now() >= deadline
        {
            return None;
        }
    }
}

fn arrival(history: &[Timed], from_peer: &str, id: u64) -> Option<Instant> {
    history.iter().find_map(|t| match &t.output {
        Output::Recv { peer, payload }
            if peer == from_peer && payload.get(..8) == Some(&id.to_be_bytes()[..]) =>
        {
            Some(t.at)
        }
        _ => None,
    })
}

/// An event named one of `names` whose second word is `key` (a msg_id or peer ID).
pub fn find_event(history: &[Timed], names: &[&str], key: &str) -> Option<Instant> {
    history.iter().find_map(|t| match &t.output {
        Output::Event(line) => {
            let mut words = line.split(' ');
            let name = words.next()?;
            (names.contains(&name) && words.next() == Some(key)).then_some(t.at)
        }
        _ => None,
    })
}

/// How many events named one of `names` carry `key` as their first field.
pub fn count_events(history: &[Timed], names: &[&str], key: &str) -> usize {
    history
        .iter()
        .filter(|t| match &t.output {
            Output::Event(line) => {
                let mut words = line.split(' ');
                words.next().is_some_and(|name| names.contains(&name)) && words.next() == Some(key)
            }
            _ => false,
        })
        .count()
}

/// When the first `connected` event naming the other peer appeared on either side.
fn connected_since(nodes: &[NodeProcess], ids: &[String]) -> Option<Instant> {
    (0..2)
        .filter_map(|i| find_event(&nodes[i].history, &["connected"], &ids[1 - i]))
        .min()
}

fn connection_facts(nodes: &[NodeProcess], ids: &[String], t0: Instant, result: &mut CellResult) {
    let mut first: Option<(Instant, Vec<String>)> = None;
    let mut direct: Option<Instant> = None;
    // Each side's last `connected`/`path` event for the other: where its connection ended.
    let mut last: [Option<(Instant, Vec<String>)>; 2] = [None, None];
    for (i, node) in nodes.iter().enumerate() {
        for name in ["connected", "path"] {
            for (at, words) in node.events(name) {
                if words.get(1) != Some(&ids[1 - i]) {
                    continue;
                }
                if name == "connected" && first.as_ref().is_none_or(|f| at < f.0) {
                    first = Some((at, words.clone()));
                }
                if words.get(2).map(String::as_str) == Some("direct")
                    && direct.is_none_or(|d| at < d)
                {
                    direct = Some(at);
                }
                if last[i].as_ref().is_none_or(|l| at >= l.0) {
                    last[i] = Some((at, words.clone()));
                }
            }
        }
    }
    if let Some((_, words)) = first {
        result.connected = true;
        result.path_at_connect = words.get(2).cloned();
        result.remote_addr = words.get(3).cloned();
        // alice sends first, so bob dialled only if alice's message failed before any
        // connection existed.
        let alice_failed = find_event(&nodes[0].history, &["failed"], "1").is_some();
        result.dialled_by = Some(if alice_failed { "bob" } else { "alice" }.into());
    }
    let ends: Vec<(usize, String)> = last
        .iter()
        .enumerate()
        .filter_map(|(i, l)| Some((i, l.as_ref()?.1.get(2)?.clone())))
        .collect();
    result.path = final_path(ends.iter().map(|(_, p)| p.as_str()));
    if let [(_, a), (_, b)] = ends.as_slice() {
        if a != b {
            result.notes.push(format!(
                "the sides ended on different paths: alice {a}, bob {b}"
            ));
        }
    }
    result.time_to_direct_ms = direct.map(|d| ms(d.saturating_duration_since(t0)));
}

/// The path a connection ended on, from each side's last `connected`/`path` event: direct
/// only when every side that reported one ended direct.
pub fn final_path<'a>(ends: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut out: Option<&str> = None;
    for p in ends {
        out = Some(match out {
            None => p,
            Some("direct") => p,
            Some(q) => q,
        });
    }
    out.map(str::to_string)
}

fn tally(
    nodes: &[NodeProcess],
    ids: &[String],
    sent: &[SentMessage],
    connected_at: Option<Instant>,
    notes: &mut Vec<String>,
) -> MessageTally {
    let mut t = MessageTally {
        sent: sent.len(),
        ..MessageTally::default()
    };
    // Every received payload, by (receiver, message id).
    let mut arrivals: HashMap<(usize, u64), Vec<&[u8]>> = HashMap::new();
    for (to, node) in nodes.iter().enumerate() {
        for timed in &node.history {
            if let Output::Recv { peer, payload } = &timed.output {
                if peer != &ids[1 - to] || payload.len() < 8 {
                    notes.push(format!(
                        "{} received an unexpected payload from {peer}",
                        node.host
                    ));
                    continue;
                }
                let id = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                arrivals.entry((to, id)).or_default().push(payload);
            }
        }
        if let Some(broken) = node.history.iter().find_map(|t| match &t.output {
            Output::Broken(why) if why != "stdout closed" => Some(why.clone()),
            _ => None,
        }) {
            notes.push(format!("{}: stdout broken: {broken}", node.host));
        }
    }
    for m in sent {
        let key = m.id.to_string();
        let terminal = count_events(&nodes[m.from].history, &["delivered", "failed"], &key);
        if terminal > 1 {
            t.double_terminal += 1;
            notes.push(format!(
                "message {} got {terminal} delivered/failed events",
                m.id
            ));
        }
        let failed = find_event(&nodes[m.from].history, &["failed"], &key);
        let delivered = find_event(&nodes[m.from].history, &["delivered"], &key);
        match arrivals.get(&(1 - m.from, m.id)) {
            Some(copies) => {
                if copies.iter().any(|p| *p != m.payload.as_slice()) {
                    t.corrupted += 1;
                } else {
                    t.delivered += 1;
                }
                if copies.len() > 1 {
                    t.duplicated += 1;
                }
                if failed.is_some() {
                    notes.push(format!(
                        "message {} arrived but its sender was told it failed",
                        m.id
                    ));
                }
                if delivered.is_none() {
                    t.unconfirmed += 1;
                    if t.unconfirmed <= 5 {
                        notes.push(format!(
                            "message {} arrived but no delivered event came",
                            m.id
                        ));
                    }
                }
            }
            None if failed.is_some() => {
                t.failed += 1;
                if connected_at.is_some_and(|c| failed.is_some_and(|f| f > c)) {
                    t.failed_while_connected += 1;
                }
            }
            None => t.lost += 1,
        }
    }
    t
}

/// Deterministic, position-dependent bytes, so any corruption shows (xorshift, 8 bytes a
/// step: the matrix is often a debug build, and 100 MiB must not take seconds to make).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}
