//! One matrix cell: a lab with `alice` and `bob`, the rendezvous, two nodes, messages both
//! ways and a bulk transfer, measured.
//!
//! Order of events (all deadlines bounded by [`CellConfig`]):
//! 1. build the lab and run its self-check (a misbehaving router is a lab problem);
//! 2. start `p2p-rendezvous` on the rendezvous host (QUIC+STUN on address 1, STUN on 2);
//! 3. start both nodes in framed mode and wait for their `ready` events;
//! 4. alice sends to bob (alice dials); then bob sends to alice (reusing the connection, or
//!    dialling alice if there is none);
//! 5. if either message got through, the side that reached the other sends `bulk_bytes` in
//!    1 MiB messages; the receiver checks every byte;
//! 6. every message is accounted for: arrived intact, failed (with a `failed` event), lost,
//!    corrupted or duplicated.

use super::node::{NodeProcess, Output, Timed};
use crate::error::{NetsimError, Result};
use crate::lab::{Lab, LabBuilder};
use crate::selfcheck;
use crate::topology::RENDEZVOUS_ADDRS;
use serde::Serialize;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Port of the rendezvous (QUIC + STUN) on both of its addresses.
pub const RENDEZVOUS_PORT: u16 = 3478;
const BULK_CHUNK: usize = 1024 * 1024;

/// Settings shared by all cells.
#[derive(Debug, Clone)]
pub struct CellConfig {
    pub node_bin: PathBuf,
    pub rendezvous_bin: PathBuf,
    /// Per-cell folder for identities and logs is created under this.
    pub work_dir: PathBuf,
    /// Longest wait for the rendezvous's `listening` line and each node's `ready` event.
    pub ready_timeout: Duration,
    /// Longest wait for one message to arrive or fail.
    pub message_timeout: Duration,
    pub bulk_bytes: usize,
    pub bulk_timeout: Duration,
    /// Extra arguments for every p2p-node.
    pub node_args: Vec<String>,
    /// Impairment of alice's and bob's uplinks, applied after the self-check.
    pub link: Option<crate::topology::LinkImpairment>,
}

/// How the messages of a cell ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MessageTally {
    pub sent: usize,
    /// Arrived intact at the receiving application.
    pub delivered: usize,
    /// Did not arrive, and the sender was told (`failed` event).
    pub failed: usize,
    /// Did not arrive and the sender was not told within the timeout.
    pub lost: usize,
    pub corrupted: usize,
    pub duplicated: usize,
    /// Failed although a connection between the two had already been reported.
    pub failed_while_connected: usize,
}

/// Everything measured in one cell.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CellResult {
    pub cell: String,
    /// Why the cell's lab could not be trusted (self-check failure, rendezvous not up).
    pub lab_problem: Option<String>,
    /// `ready` event fields of alice and bob (`-` if none came).
    pub alice_ready: String,
    pub bob_ready: String,
    /// `ready` events whose `observed=` address disagrees with the lab (the rendezvous must
    /// see the outermost NAT's public IP, the host's own IP when public, nothing when UDP is
    /// blocked), one line each.
    pub observed_mismatches: Vec<String>,
    pub connected: bool,
    /// Who dialled the first connection that was reported (`alice` or `bob`).
    pub dialled_by: Option<String>,
    /// Path of the first reported connection (`direct`, `relayed`).
    pub path: Option<String>,
    pub remote_addr: Option<String>,
    /// From the first send to its arrival at the other application.
    pub first_message_ms: Option<f64>,
    /// From alice's first send to the first direct path reported by either side.
    pub time_to_direct_ms: Option<f64>,
    /// Bulk transfer rate, first byte queued to last byte received.
    pub throughput_mib_s: Option<f64>,
    pub messages: MessageTally,
    pub notes: Vec<String>,
    pub duration_s: f64,
}

struct SentMessage {
    id: u64,
    from: usize,
    payload: Vec<u8>,
}

/// One cell to run: its name, its lab, and optionally an idle period after the first
/// exchange, followed by one more message each way (tests keepalives against NAT timeouts).
pub struct CellSpec {
    pub name: String,
    pub builder: LabBuilder,
    pub idle: Option<Duration>,
}

/// Runs one cell; `Err` only for failures of the harness itself (cannot start a binary,
/// cannot build the lab), never for a pair that does not connect.
pub fn run_cell(cfg: &CellConfig, spec: CellSpec) -> Result<CellResult> {
    let CellSpec {
        name,
        builder,
        idle,
    } = spec;
    let name = name.as_str();
    let started = Instant::now();
    let dir = cfg.work_dir.join(name);
    std::fs::create_dir_all(&dir)
        .map_err(|e| NetsimError::io(format!("creating {}", dir.display()), e))?;
    let mut result = CellResult {
        cell: name.to_string(),
        alice_ready: "-".into(),
        bob_ready: "-".into(),
        ..CellResult::default()
    };
    let builder = match cfg.link {
        Some(link) if link.needs_shaper() => builder.shape("alice").shape("bob"),
        _ => builder,
    };
    let lab = builder.build()?;
    let check = selfcheck::check_lab(&lab)?;
    if !check.passed() {
        let failures: Vec<String> = check
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("FAIL"))
            .collect();
        result.lab_problem = Some(format!("self-check failed: {}", failures.join("; ")));
        result.duration_s = started.elapsed().as_secs_f64();
        return Ok(result);
    }
    if let Some(link) = cfg.link {
        lab.set_impairment("alice", link)?;
        lab.set_impairment("bob", link)?;
    }
    let rendezvous_id = match start_rendezvous(cfg, &lab, &dir) {
        Ok((id, process)) => {
            // Keep the rendezvous running for the whole cell.
            let outcome = run_nodes(cfg, &lab, &dir, &id, idle, &mut result);
            drop(process);
            outcome
        }
        Err(problem) => {
            result.lab_problem = Some(problem);
            Ok(())
        }
    };
    rendezvous_id?;
    lab.teardown()?;
    result.duration_s = started.elapsed().as_secs_f64();
    Ok(result)
}

fn start_rendezvous(
    cfg: &CellConfig,
    lab: &Lab,
    dir: &Path,
) -> std::result::Result<(String, crate::lab::LabProcess), String> {
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.rendezvous_bin.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let process = crate::lab::LabProcess { child };
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

fn run_nodes(
    cfg: &CellConfig,
    lab: &Lab,
    dir: &Path,
    rendezvous_id: &str,
    idle: Option<Duration>,
    result: &mut CellResult,
) -> Result<()> {
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

    let mut sent: Vec<SentMessage> = Vec::new();
    let mut send = |nodes: &mut [NodeProcess], from: usize, id: u64, body: &[u8]| -> Instant {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(body);
        let at = Instant::now();
        nodes[from].send(id, &ids[1 - from], &payload);
        sent.push(SentMessage { id, from, payload });
        at
    };
    // 4. One message each way, alice first.
    let t0 = send(&mut nodes, 0, 1, b"hello bob, this is alice");
    let first_arrival = wait_outcome(&mut nodes, &ids, 0, 1, Instant::now() + cfg.message_timeout);
    let t1 = send(&mut nodes, 1, 2, b"hello alice, this is bob");
    let second_arrival = wait_outcome(&mut nodes, &ids, 1, 2, Instant::now() + cfg.message_timeout);
    result.first_message_ms = match (first_arrival, second_arrival) {
        (Some(at), _) => Some(ms(at - t0)),
        (None, Some(at)) => Some(ms(at - t1)),
        _ => None,
    };

    // 5. Bulk transfer on whichever direction worked.
    let bulk_from = if first_arrival.is_some() {
        Some(0)
    } else if second_arrival.is_some() {
        Some(1)
    } else {
        None
    };
    if let Some(from) = bulk_from {
        let chunks = cfg.bulk_bytes.div_ceil(BULK_CHUNK);
        let first_id = 100u64;
        let start = Instant::now();
        for k in 0..chunks as u64 {
            let len = BULK_CHUNK.min(cfg.bulk_bytes - k as usize * BULK_CHUNK) - 8;
            send(&mut nodes, from, first_id + k, &pattern(first_id + k, len));
        }
        let last = first_id + chunks as u64 - 1;
        let deadline = Instant::now() + cfg.bulk_timeout;
        let mut last_arrival = None;
        for id in first_id..=last {
            match wait_outcome(&mut nodes, &ids, from, id, deadline) {
                Some(at) => last_arrival = Some(at),
                None => {
                    last_arrival = None;
                    break;
                }
            }
        }
        if let Some(end) = last_arrival {
            let secs = (end - start).as_secs_f64().max(1e-6);
            result.throughput_mib_s = Some(cfg.bulk_bytes as f64 / (1024.0 * 1024.0) / secs);
        }
    }

    // Optionally stay idle past the NATs' mapping timeout, then one more message each way
    // (bob first: it needs alice's mapping, which only keepalives can have kept open).
    if let (Some(idle), true) = (idle, first_arrival.is_some() || second_arrival.is_some()) {
        let connections_before: usize = (0..2).map(|i| nodes[i].events("connected").len()).sum();
        std::thread::sleep(idle);
        send(&mut nodes, 1, 3, b"still there, alice?");
        let after_idle = wait_outcome(&mut nodes, &ids, 1, 3, Instant::now() + cfg.message_timeout);
        send(&mut nodes, 0, 4, b"still here, bob");
        wait_outcome(&mut nodes, &ids, 0, 4, Instant::now() + cfg.message_timeout);
        let connections_after: usize = (0..2).map(|i| nodes[i].events("connected").len()).sum();
        result.notes.push(format!(
            "after {} s idle: bob's message {}; {} new connected event(s)",
            idle.as_secs(),
            if after_idle.is_some() {
                "arrived"
            } else {
                "did not arrive"
            },
            connections_after - connections_before
        ));
    }

    // Give pending delivered/failed events a moment, then account for every message.
    let grace = Instant::now() + Duration::from_secs(2);
    for m in &sent {
        let key = m.id.to_string();
        nodes[m.from].wait_for(grace, |h| find_event(h, &["delivered", "failed"], &key));
    }
    for n in nodes.iter_mut() {
        n.drain();
    }
    connection_facts(&nodes, &ids, t0, result);
    result.messages = tally(
        &nodes,
        &ids,
        &sent,
        connected_since(&nodes, &ids),
        &mut result.notes,
    );
    Ok(())
}

/// Compares the `observed=` field of a ready event with the address the lab says the
/// rendezvous must see, and its `nat=` field with the lab's mapping behaviour; returns a
/// description of any disagreement.
fn observed_mismatch(lab: &Lab, host: &str, ready: &str) -> Result<Option<String>> {
    let plan = lab.plan();
    let node = plan.node(host)?;
    let expected = match plan.expected_behaviour(node) {
        None => None,
        Some(_) => {
            let mut outermost = node;
            while let Some(router) = plan.router_of(outermost) {
                outermost = router;
            }
            Some(outermost.addrs[0])
        }
    };
    let observed = ready
        .split(' ')
        .find_map(|w| w.strip_prefix("observed="))
        .unwrap_or("");
    let observed_ip = observed
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip());
    let ok = match expected {
        Some(ip) => observed_ip == Some(ip.into()),
        None => observed == "-",
    };
    let mut problems = Vec::new();
    if !ok {
        problems.push(format!(
            "{host} reported observed={observed}, the lab expects {}",
            expected.map_or("- (UDP blocked)".to_string(), |ip| format!("{ip}:<port>"))
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
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
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
fn find_event(history: &[Timed], names: &[&str], key: &str) -> Option<Instant> {
    history.iter().find_map(|t| match &t.output {
        Output::Event(line) => {
            let mut words = line.split(' ');
            let name = words.next()?;
            (names.contains(&name) && words.next() == Some(key)).then_some(t.at)
        }
        _ => None,
    })
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
            }
        }
    }
    if let Some((_, words)) = first {
        result.connected = true;
        result.path = words.get(2).cloned();
        result.remote_addr = words.get(3).cloned();
        // alice sends first, so bob dialled only if alice's message failed before any
        // connection existed.
        let alice_failed = find_event(&nodes[0].history, &["failed"], "1").is_some();
        result.dialled_by = Some(if alice_failed { "bob" } else { "alice" }.into());
    }
    result.time_to_direct_ms = direct.map(|d| ms(d.saturating_duration_since(t0)));
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
                    notes.push(format!(
                        "message {} arrived but no delivered event came",
                        m.id
                    ));
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

/// Deterministic, position-dependent bytes, so any corruption shows.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}
