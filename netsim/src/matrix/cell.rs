//! One matrix cell: a lab with `alice` and `bob`, the rendezvous, two nodes, messages both
//! ways and a bulk transfer, measured.
//!
//! Order of events (all deadlines bounded by [`CellConfig`]):
//! 1. build the lab and run its self-check (a misbehaving router is a lab problem);
//! 2. start `p2p-rendezvous` on the rendezvous host (QUIC+STUN on address 1, STUN on 2);
//! 3. start both nodes in framed mode and wait for their `ready` events;
//! 4. alice sends to bob (alice dials); then bob sends to alice (reusing the connection, or
//!    dialling alice if there is none);
//! 5. by [`Phase`]: a bulk transfer of `bulk_bytes` in 1 MiB messages over the direction
//!    that worked (the receiver checks every byte), optionally an idle period and one more
//!    message each way (keepalive), or a disruption of a transfer (NAT rebinding, address
//!    change, direct path cut: [`super::rebind`]);
//! 6. every message is accounted for: arrived intact, failed (with a `failed` event), lost,
//!    corrupted or duplicated.
//!
//! Cells with several trials ([`super::trials`]) repeat steps 1-4 and 6 with a fresh lab and
//! fresh identities each time.

use super::rebind::RebindResult;
use super::session::{pattern, start_rendezvous, Session, BULK_CHUNK};
use super::trials::TrialSummary;
use crate::error::{NetsimError, Result};
use crate::lab::{Lab, LabBuilder};
use crate::selfcheck;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use super::session::RENDEZVOUS_PORT;

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
    /// Bytes alice sends bob in the NAT rebinding cell.
    pub rebind_bytes: usize,
    /// How long the rebinding cell waits, after the rebinding, for the transfer to end.
    pub rebind_wait: Duration,
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
    /// Arrived intact (counted in `delivered`) but its sender never reported `delivered`.
    pub unconfirmed: usize,
    /// Its sender reported more than one terminal event (`delivered`/`failed`) for it.
    pub double_terminal: usize,
}

impl MessageTally {
    /// Adds another tally to this one (trials).
    pub fn add(&mut self, other: &MessageTally) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.lost += other.lost;
        self.corrupted += other.corrupted;
        self.duplicated += other.duplicated;
        self.failed_while_connected += other.failed_while_connected;
        self.unconfirmed += other.unconfirmed;
        self.double_terminal += other.double_terminal;
    }
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
    /// Path the connection ENDED on (`direct`, `relayed`): each side's last `connected` or
    /// `path` event for the other at the end of the cell; direct only if both ended direct.
    /// This is what the verdict judges.
    pub path: Option<String>,
    /// Path of the first reported `connected` event.
    pub path_at_connect: Option<String>,
    pub remote_addr: Option<String>,
    /// From the first send to its arrival at the other application (with trials: the
    /// median over the trials where a message arrived).
    pub first_message_ms: Option<f64>,
    /// From alice's first send to the first direct path (`connected` or `path` event)
    /// reported by either side (with trials: the median over the trials that got one).
    pub time_to_direct_ms: Option<f64>,
    /// Bulk transfer rate, first byte queued to last byte received.
    pub throughput_mib_s: Option<f64>,
    pub messages: MessageTally,
    /// Set when the cell ran as several trials.
    pub trials: Option<TrialSummary>,
    /// Set for the disruption cells (NAT rebinding, address change, relay cut).
    pub rebind: Option<RebindResult>,
    /// Set for the relayed-throughput cell.
    pub relay_bench: Option<super::relaybench::RelayBenchResult>,
    pub notes: Vec<String>,
    pub duration_s: f64,
}

impl CellResult {
    /// An empty result for cell `name`.
    pub fn new(name: &str) -> CellResult {
        CellResult {
            cell: name.to_string(),
            alice_ready: "-".into(),
            bob_ready: "-".into(),
            ..CellResult::default()
        }
    }
}

/// What a cell does after the first message each way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// The bulk transfer.
    Plain,
    /// The bulk transfer, then this long idle, then one more message each way (tests
    /// keepalives against NAT mapping timeouts).
    Idle(Duration),
    /// A bulk transfer from alice to bob disrupted when a third has arrived (NAT rebinding,
    /// address change, direct path cut: [`super::rebind`]).
    Disrupt(super::rebind::Disruption),
    /// The bulk transfer with the rendezvous offering coturn (started on the lab host
    /// [`super::coturn::COTURN_HOST`]) instead of its built-in TURN server.
    Coturn,
    /// The bulk transfer direct, then again by a `--relay-only` pair
    /// ([`super::relaybench`]).
    RelayBench,
}

/// The rendezvous of a cell, for bodies that need it.
pub struct Rendezvous {
    /// Its peer ID.
    pub id: String,
    /// Its process ID (`ip netns exec` execs it in place).
    pub pid: u32,
}

/// What a cell's lab runs besides the rendezvous and the two nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabSetup {
    /// Extra arguments for p2p-rendezvous.
    pub rendezvous_args: Vec<String>,
    /// Start coturn on [`super::coturn::COTURN_HOST`] and have the rendezvous offer it.
    pub coturn: bool,
    /// A router that drops all UDP from before the nodes start ([`Lab::block_udp`]).
    pub block_udp: Option<String>,
}

impl LabSetup {
    /// The setup a phase needs.
    pub fn of(phase: &Phase) -> LabSetup {
        match phase {
            Phase::Coturn => LabSetup {
                coturn: true,
                ..LabSetup::default()
            },
            Phase::RelayBench => LabSetup {
                rendezvous_args: super::relaybench::RENDEZVOUS_ARGS
                    .map(String::from)
                    .to_vec(),
                ..LabSetup::default()
            },
            Phase::Disrupt(super::rebind::Disruption::Unblock { router }) => LabSetup {
                block_udp: Some(router.clone()),
                ..LabSetup::default()
            },
            _ => LabSetup::default(),
        }
    }
}

/// One cell to run: its name, its lab and its phase.
#[derive(Clone)]
pub struct CellSpec {
    pub name: String,
    pub builder: LabBuilder,
    pub phase: Phase,
}

/// Runs one cell once; `Err` only for failures of the harness itself (cannot start a binary,
/// cannot build the lab), never for a pair that does not connect.
pub fn run_cell(cfg: &CellConfig, spec: CellSpec) -> Result<CellResult> {
    let started = Instant::now();
    // The relayed-throughput cell compares paths where the network, not the lab's two shared
    // cores, is the limit (see relaybench::DEFAULT_LINK), unless --link says otherwise.
    let bench_cfg;
    let cfg = match (&spec.phase, cfg.link) {
        (Phase::RelayBench, None) => {
            bench_cfg = CellConfig {
                link: Some(
                    super::relaybench::DEFAULT_LINK
                        .parse()
                        .expect("valid link impairment"),
                ),
                ..cfg.clone()
            };
            &bench_cfg
        }
        _ => cfg,
    };
    let mut result = CellResult::new(&spec.name);
    let dir = cfg.work_dir.join(&spec.name);
    let phase = spec.phase.clone();
    let setup = LabSetup::of(&phase);
    let cell_dir = dir.clone();
    in_lab(
        cfg,
        spec.builder,
        &dir,
        &setup,
        &mut result,
        |lab, session, result, rendezvous| {
            let hello = session.hello(cfg.message_timeout);
            match &phase {
                Phase::Plain | Phase::Coturn => bulk(cfg, session, &hello, result),
                Phase::RelayBench => {
                    super::relaybench::run(cfg, lab, session, &hello, rendezvous, &cell_dir, result)
                }
                Phase::Idle(idle) => {
                    bulk(cfg, session, &hello, result);
                    if hello.any() {
                        after_idle(cfg, session, *idle, result);
                    }
                }
                Phase::Disrupt(disruption) => {
                    if hello.first_arrival.is_some() {
                        super::rebind::run(cfg, lab, disruption, session, result);
                    } else {
                        result.rebind = Some(RebindResult::not_run(
                            disruption.router(),
                            "alice's first message did not reach bob",
                        ));
                    }
                }
            }
            session.finish(&hello, Duration::from_secs(2), result);
            if let Some(mut bench) = result.relay_bench.take() {
                bench.direct_path = result.path.clone();
                result.messages.add(&bench.relay_only_messages);
                result.relay_bench = Some(bench);
            }
            if let Some(mut r) = result.rebind.take() {
                super::rebind::conclude(&mut r, session, &result.messages);
                result.rebind = Some(r);
            }
            Ok(())
        },
    )?;
    result.duration_s = started.elapsed().as_secs_f64();
    Ok(result)
}

/// Builds the lab, self-checks it, impairs the peers' uplinks if asked, starts the
/// rendezvous and both nodes, runs `body`, and tears everything down. A lab that fails its
/// self-check or a rendezvous that does not start is recorded as `result.lab_problem` and
/// `body` does not run.
pub fn in_lab(
    cfg: &CellConfig,
    builder: LabBuilder,
    dir: &Path,
    setup: &LabSetup,
    result: &mut CellResult,
    body: impl FnOnce(&Lab, &mut Session, &mut CellResult, &Rendezvous) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NetsimError::io(format!("creating {}", dir.display()), e))?;
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
        return lab.teardown();
    }
    if let Some(link) = cfg.link {
        lab.set_impairment("alice", link)?;
        lab.set_impairment("bob", link)?;
    }
    if let Some(router) = &setup.block_udp {
        if let Err(e) = lab.block_udp(router) {
            result.lab_problem = Some(format!("blocking UDP in {router} failed: {e}"));
            return lab.teardown();
        }
    }
    let mut rendezvous_args = setup.rendezvous_args.clone();
    let coturn = if setup.coturn {
        match super::coturn::start(&lab, super::coturn::COTURN_HOST, dir) {
            Ok(c) => {
                rendezvous_args.extend(c.rendezvous_args.iter().cloned());
                Some(c)
            }
            Err(problem) => {
                result.lab_problem = Some(problem);
                return lab.teardown();
            }
        }
    } else {
        None
    };
    let outcome = match start_rendezvous(cfg, &lab, dir, &rendezvous_args) {
        Ok((id, process)) => {
            let rendezvous = Rendezvous {
                id,
                pid: process.child.id(),
            };
            // Keep the rendezvous running until the nodes are done.
            let outcome = Session::start(cfg, &lab, dir, &rendezvous.id, result)
                .and_then(|mut session| body(&lab, &mut session, result, &rendezvous));
            drop(process);
            outcome
        }
        Err(problem) => {
            result.lab_problem = Some(problem);
            Ok(())
        }
    };
    drop(coturn);
    outcome?;
    lab.teardown()
}

/// The bulk transfer over whichever direction worked: `bulk_bytes` in 1 MiB messages, every
/// byte checked by the tally.
pub(super) fn bulk(
    cfg: &CellConfig,
    session: &mut Session,
    hello: &super::session::Hello,
    result: &mut CellResult,
) {
    let from = if hello.first_arrival.is_some() {
        0
    } else if hello.second_arrival.is_some() {
        1
    } else {
        return;
    };
    let chunks = cfg.bulk_bytes.div_ceil(BULK_CHUNK);
    let first_id = 100u64;
    let bodies: Vec<Vec<u8>> = (0..chunks as u64)
        .map(|k| {
            let len = BULK_CHUNK.min(cfg.bulk_bytes - k as usize * BULK_CHUNK) - 8;
            pattern(first_id + k, len)
        })
        .collect();
    let start = Instant::now();
    for (k, body) in bodies.into_iter().enumerate() {
        session.send(from, first_id + k as u64, &body);
    }
    let deadline = Instant::now() + cfg.bulk_timeout;
    let mut last_arrival = None;
    for id in first_id..first_id + chunks as u64 {
        match session.wait(from, id, deadline) {
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

/// Stays idle past the NATs' mapping timeout, then one more message each way (bob first: it
/// needs alice's mapping, which only keepalives can have kept open).
fn after_idle(cfg: &CellConfig, session: &mut Session, idle: Duration, result: &mut CellResult) {
    let connections =
        |s: &Session| -> usize { (0..2).map(|i| s.nodes[i].events("connected").len()).sum() };
    let before = connections(session);
    std::thread::sleep(idle);
    session.send(1, 3, b"still there, alice?");
    let after_idle = session.wait(1, 3, Instant::now() + cfg.message_timeout);
    session.send(0, 4, b"still here, bob");
    session.wait(0, 4, Instant::now() + cfg.message_timeout);
    let after = connections(session);
    result.notes.push(format!(
        "after {} s idle: bob's message {}; {} new connected event(s)",
        idle.as_secs(),
        if after_idle.is_some() {
            "arrived"
        } else {
            "did not arrive"
        },
        after - before
    ));
}
