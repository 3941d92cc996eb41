//! `netsim flood`: a public rendezvous under a flood of throw-away clients, across the lab
//! (issue #14), the way users meet it.
//!
//! The lab: alice and bob behind NATs (port-restricted cones by default, as in a matrix cell),
//! a flood host `flood` on the simulated internet with many addresses from the documentation
//! range 198.51.100.0/24 (198.51.100.100 and on), and two flooding NATs (`flood-nat1`, a
//! port-restricted cone, and `flood-nat2`, a symmetric NAT) with a host behind each, whose
//! flooders reach the rendezvous from NAT-mapped ports. The real `p2p-rendezvous` runs on
//! its public address with exact limits (refills of ten minutes) and its metrics on
//! 127.0.0.1:9464 inside its namespace.
//!
//! In order:
//! 1. a witness client on the lab's witness host registers with control datagrams and looks
//!    up, every 250 ms until the end, itself and then alice and bob ([`dgram_junk::Witness`]);
//! 2. junk datagrams (STUN, QUIC look-alikes) and hostile control datagrams
//!    ([`dgram_junk::DgramJunk`]) start from the flood addresses and run to the end;
//! 3. 1,000 throw-away ed25519 identities (by default: 800 from 20 flood addresses, 100
//!    behind each flooding NAT with a socket, so a mapping, each) reach the rendezvous,
//!    register and look up a random key: 750 with control datagrams, as nodes do, and 250
//!    over held QUIC connections, the old carrier the rendezvous still serves
//!    (`--transport`: half the flood addresses and `flood-nat2` mix both, so both race for
//!    one IP's registrations);
//! 4. once half of them have arrived, the two real `p2p-node`s start and register in the
//!    middle of it;
//! 5. the punch flood (in rounds half a second apart, every identity asks for a punch to alice
//!    or bob; those refused a registration over datagrams hold no session and are answered
//!    Unknown) and meanwhile alice sends bob a message and bob answers, then `--redials`
//!    times alice disconnects and dials bob again (each dial a lookup and a punch request at
//!    the rendezvous) and they exchange one more message each;
//! 6. the rendezvous's metrics are scraped and its memory read from /proc; the checks
//!    ([`checks::verdict`], [`checks_dgram::verdict`]) decide.
//!
//! The sockets of the flood are opened inside the lab's namespaces and driven by this
//! process (see [`generator`]); the protocol code is in [`client`] and [`dgram`].

pub mod checks;
pub mod checks_dgram;
pub mod client;
pub mod dgram;
pub mod dgram_junk;
pub mod generator;
pub mod legit;
pub mod report;

use crate::error::{NetsimError, Result};
use crate::lab::{Lab, LabProcess};
use crate::matrix::cell::{CellConfig, CellResult};
use crate::matrix::locate_binary;
use crate::matrix::session::{self, Session, RENDEZVOUS_PORT};
use crate::scenario::{self, PeerKind};
use crate::topology::{NatKind, RouterConfig, RENDEZVOUS, RENDEZVOUS_ADDRS, WITNESS, WITNESS_ADDR};
use checks::{Check, Legit, Limits, Memory, Scraped};
use checks_dgram::DgramFigures;
use dgram_junk::{DgramJunk, Witness};
use generator::{Flood, Junk, Source, SourceTally};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What p2p-node logs when a push from the rendezvous is lost at the node: its queue full over
/// TLS (no resend there), or over control datagrams with no queue at all.
const PUSH_DROPPED: [&str; 2] = [
    "too many pushes from the rendezvous at once",
    "push from the rendezvous dropped: nobody takes it",
];
/// What p2p-node logs when a push over control datagrams finds its queue full: left
/// unacknowledged, so the rendezvous sends it again (delayed, not lost).
const PUSH_DEFERRED: &str = "push from the rendezvous not taken yet";
/// The flood host's first extra address; the others follow.
pub const FIRST_FLOOD_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
/// Most flood addresses (198.51.100.100-.199; the witness is .250).
pub const MAX_FLOOD_ADDRS: usize = 100;
/// The rendezvous's metrics endpoint, inside its own namespace.
const METRICS_PORT: u16 = 9464;
/// Refill interval given to the per-IP limits: far longer than a run, so each limit is an
/// exact count.
const NO_REFILL_MS: &str = "600000";
/// Registrations besides the flooders': alice, bob and the witness.
const LEGIT_REGISTRATIONS: usize = 3;
/// The registrations' lifetime (s), longer than any run.
const REGISTRATION_TTL_SECS: u64 = 3600;
/// Sends of one push at most (the rendezvous's default): bounds the stray acks.
const PUSH_ATTEMPTS: u64 = 5;
/// Most punch rounds (half a second apart at least): the rounds go on until the legitimate
/// exchange is over, whose own timeouts bound it; this only bounds a broken one.
const MAX_PUNCH_ROUNDS: usize = 1000;

/// Which transport the flood's identities register over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
pub enum TransportPlan {
    /// Control datagrams from half the flood addresses and `flood-nat1`; the other half and
    /// `flood-nat2` split their identities between datagrams and QUIC, so both kinds race for
    /// one IP's registrations (750 over datagrams, 250 over QUIC by default).
    Split,
    /// Every identity over control datagrams, as nodes register now.
    Dgram,
    /// Every identity over a held QUIC connection (the old control carrier).
    Quic,
}

/// Arguments of `netsim flood`.
#[derive(Debug, Clone, clap::Args)]
pub struct FloodArgs {
    /// Throw-away identities in all.
    #[arg(long, default_value_t = 1000)]
    pub identities: usize,
    /// Source addresses of the flood host (198.51.100.100 and on, at most 100); the
    /// identities not behind a NAT are spread evenly over them.
    #[arg(long, default_value_t = 20)]
    pub addrs: usize,
    /// Identities behind the two flooding NATs (port-restricted cone, symmetric), split
    /// evenly, each with its own socket and so its own NAT mapping.
    #[arg(long, default_value_t = 200)]
    pub behind_nat: usize,
    /// `--new-per-ip-burst` for the rendezvous (no refill during the run): the exact number of
    /// registrations each source IP must get.
    #[arg(long, default_value_t = 20)]
    pub new_per_ip_burst: u32,
    /// `--punch-per-ip-burst` for the rendezvous (no refill during the run): the exact number
    /// of punch pushes each source IP must cause.
    #[arg(long, default_value_t = 8)]
    pub punch_per_ip_burst: u32,
    /// Junk datagrams a second from the flood host's addresses, from the start to the end.
    #[arg(long, default_value_t = 5000)]
    pub junk_per_sec: u64,
    /// Hostile control datagrams a second (Hellos, Registers with stale cookies or forged
    /// signatures, requests with bad tags, replays, requests under no session), from the
    /// start to the end.
    #[arg(long, default_value_t = 600)]
    pub dgram_junk_per_sec: u64,
    /// Which transport the identities register over.
    #[arg(long, value_enum, default_value_t = TransportPlan::Split)]
    pub transport: TransportPlan,
    /// Times alice disconnects from bob and dials him again during the punch flood (at most
    /// --punch-per-ip-burst minus 2: her dials count against her IP's limit too).
    #[arg(long, default_value_t = 3)]
    pub redials: usize,
    /// The memory bound: this base (MiB) ...
    #[arg(long, default_value_t = 32)]
    pub rss_base_mib: u64,
    /// ... plus this much per held QUIC connection (KiB) ...
    #[arg(long, default_value_t = 48)]
    pub rss_per_connection_kib: u64,
    /// ... plus this much per datagram session (KiB); the rendezvous's peak RSS must stay
    /// under.
    #[arg(long, default_value_t = 8)]
    pub rss_per_session_kib: u64,
    /// alice's network.
    #[arg(long, default_value = "port-restricted-cone")]
    pub alice: PeerKind,
    /// bob's network.
    #[arg(long, default_value = "port-restricted-cone")]
    pub bob: PeerKind,
    /// Extra argument for p2p-rendezvous (repeatable); a flag named here replaces the flood's
    /// own setting of it, e.g. --rendezvous-arg=--new-per-ip-burst=40 gives the rendezvous a
    /// limit the checks do not expect (they then fail).
    #[arg(long, allow_hyphen_values = true)]
    pub rendezvous_arg: Vec<String>,
    /// p2p-node binary [default: $P2P_NODE_BIN, else next to netsim, else target/debug].
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// p2p-rendezvous binary [default: $P2P_RENDEZVOUS_BIN, else as for --node-bin].
    #[arg(long)]
    pub rendezvous_bin: Option<PathBuf>,
    /// Write flood.md, flood.json and the processes' logs (logs/) into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Everything a run measured, as written to flood.json.
#[derive(Debug, Serialize)]
pub struct FloodReport {
    pub identities: usize,
    pub limits: Limits,
    pub sources: Vec<(Source, SourceTally)>,
    pub punch_rounds: u64,
    pub junk_sent: u64,
    pub transport: TransportPlan,
    pub dgram: DgramFigures,
    pub metrics: Scraped,
    pub legit: Legit,
    pub memory: Memory,
    pub checks: Vec<Check>,
    /// Seconds per phase: lab, flood connections, legitimate exchange, whole run.
    pub seconds: Vec<(String, f64)>,
}

/// How many of `n` identities of source `index` (the flood addresses first, then the two
/// NATs) use QUIC.
fn quic_share(plan: TransportPlan, index: usize, addrs: usize, n: usize) -> usize {
    match plan {
        TransportPlan::Dgram => 0,
        TransportPlan::Quic => n,
        // Odd flood addresses and the second NAT: half and half.
        TransportPlan::Split if index % 2 == 1 && (index < addrs || index == addrs + 1) => n / 2,
        TransportPlan::Split => 0,
    }
}

/// The flood's sources: `addrs` flood addresses sharing `identities - behind_nat`, and the
/// two flooding NATs sharing `behind_nat`.
pub fn plan_sources(lab_plan: &crate::topology::LabPlan, args: &FloodArgs) -> Result<Vec<Source>> {
    let direct = args.identities - args.behind_nat;
    let mut sources = Vec::new();
    for i in 0..args.addrs {
        let ip = flood_addr(i);
        let n = direct / args.addrs + usize::from(i < direct % args.addrs);
        sources.push(Source {
            name: format!("flood {ip}"),
            host: "flood".into(),
            bind: ip,
            seen_ip: ip,
            identities: n,
            quic: quic_share(args.transport, i, args.addrs, n),
            socket_each: false,
        });
    }
    for (i, (host, router, kind)) in FLOOD_NATS.iter().enumerate() {
        let n = args.behind_nat / 2 + usize::from(i < args.behind_nat % 2);
        let router_plan = lab_plan.node(router)?;
        sources.push(Source {
            name: format!("{host} via {router} ({})", kind.name()),
            host: host.to_string(),
            bind: Ipv4Addr::UNSPECIFIED,
            seen_ip: router_plan
                .addrs
                .first()
                .copied()
                .ok_or_else(|| NetsimError::Topology(format!("router {router} has no address")))?,
            identities: n,
            quic: quic_share(args.transport, args.addrs + i, args.addrs, n),
            socket_each: true,
        });
    }
    sources.retain(|s| s.identities > 0);
    Ok(sources)
}

/// (host, router, NAT kind) of the flooding NATs.
const FLOOD_NATS: [(&str, &str, NatKind); 2] = [
    ("flood-lan1", "flood-nat1", NatKind::PortRestrictedCone),
    ("flood-lan2", "flood-nat2", NatKind::Symmetric),
];

fn flood_addr(i: usize) -> Ipv4Addr {
    let [a, b, c, d] = FIRST_FLOOD_ADDR.octets();
    Ipv4Addr::new(a, b, c, d + i as u8)
}

/// The flood's lab: alice and bob as in a matrix cell, the flood host, the flooding NATs.
pub fn lab_builder(args: &FloodArgs) -> crate::lab::LabBuilder {
    let mut b = scenario::pair(args.alice, args.bob)
        .scenario("flood")
        .public_host("flood");
    for (host, router, kind) in FLOOD_NATS {
        b = b
            .router(router, RouterConfig::new(kind))
            .host_behind(host, router);
    }
    b
}

fn validate(args: &FloodArgs) -> Result<()> {
    let bad = |m: String| Err(NetsimError::Matrix(format!("flood: {m}")));
    if args.addrs == 0 || args.addrs > MAX_FLOOD_ADDRS {
        return bad(format!("--addrs must be 1 to {MAX_FLOOD_ADDRS}"));
    }
    if args.behind_nat > args.identities {
        return bad("--behind-nat cannot exceed --identities".into());
    }
    // alice's dials are punch requests from her router's IP, under the same limit without
    // refill: they must stay below it (one to spare for a dial of bob's).
    if args.redials + 2 > args.punch_per_ip_burst as usize {
        return bad(format!(
            "--redials {} needs --punch-per-ip-burst of at least {} (each dial is a punch request from alice's IP, which the flood's limits do not refill)",
            args.redials,
            args.redials + 2
        ));
    }
    if args.identities == 0 {
        return bad("--identities must be at least 1".into());
    }
    Ok(())
}

/// The rendezvous's arguments: the metrics endpoint and `limits` without refill, then `extra`;
/// a flag named in `extra` replaces the flood's own setting of it (p2p-rendezvous refuses a
/// flag given twice), while the checks still expect `limits`.
pub fn rendezvous_args(limits: Limits, extra: &[String]) -> Vec<String> {
    let own = [
        ("--metrics-listen", format!("127.0.0.1:{METRICS_PORT}")),
        ("--new-per-ip-burst", limits.new_per_ip_burst.to_string()),
        ("--new-per-ip-interval-ms", NO_REFILL_MS.to_string()),
        (
            "--punch-per-ip-burst",
            limits.punch_per_ip_burst.to_string(),
        ),
        ("--punch-per-ip-interval-ms", NO_REFILL_MS.to_string()),
        // The flooders never refresh: no registration may expire during a run, however
        // long, so the registry's size stays an exact count.
        ("--registration-ttl", REGISTRATION_TTL_SECS.to_string()),
    ];
    let named = |flag: &str| {
        extra
            .iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut out = Vec::new();
    for (flag, value) in own {
        if !named(flag) {
            out.extend([flag.to_string(), value]);
        }
    }
    out.extend(extra.iter().cloned());
    out
}

/// Runs the flood and prints its verdict; non-zero exit if any check failed.
pub fn run_cli(args: &FloodArgs) -> Result<ExitCode> {
    validate(args)?;
    crate::netns::require_root_and_tools()?;
    let node_bin = locate_binary(args.node_bin.as_deref(), "P2P_NODE_BIN", "p2p-node")?;
    let rendezvous_bin = locate_binary(
        args.rendezvous_bin.as_deref(),
        "P2P_RENDEZVOUS_BIN",
        "p2p-rendezvous",
    )?;
    let started = Instant::now();
    let lab = lab_builder(args).build()?;
    let check = crate::selfcheck::check_lab(&lab)?;
    check.ensure_passed()?;
    let (work, keep) = match &args.out {
        Some(out) => (out.join("logs"), true),
        None => (
            std::env::temp_dir().join(format!("netsim-flood-{}", lab.run_id())),
            false,
        ),
    };
    std::fs::create_dir_all(&work).map_err(|e| NetsimError::io("creating the work dir", e))?;
    let cfg = CellConfig {
        node_bin,
        rendezvous_bin,
        work_dir: work.clone(),
        // Registering in the middle of the flood can take a while (the rendezvous's idle
        // timeout bounds it).
        ready_timeout: Duration::from_secs(30),
        message_timeout: Duration::from_secs(15),
        bulk_bytes: 0,
        bulk_timeout: Duration::ZERO,
        rebind_bytes: 0,
        rebind_wait: Duration::ZERO,
        node_args: Vec::new(),
        link: None,
    };
    let report = run_in(&lab, &cfg, args, &work, started);
    if !keep {
        let _ = std::fs::remove_dir_all(&work);
    }
    lab.teardown()?;
    let report = report?;
    let text = report::markdown(&report, args);
    print!("{text}");
    if let Some(out) = &args.out {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| NetsimError::Matrix(e.to_string()))?;
        for (name, body) in [("flood.md", text), ("flood.json", json)] {
            std::fs::write(out.join(name), body)
                .map_err(|e| NetsimError::io(format!("writing {name}"), e))?;
        }
    }
    Ok(if report.checks.iter().all(|c| c.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_in(
    lab: &Lab,
    cfg: &CellConfig,
    args: &FloodArgs,
    work: &Path,
    started: Instant,
) -> Result<FloodReport> {
    let mut seconds = vec![("lab and self-check".to_string(), secs(started))];
    // The flood host's extra addresses.
    let flood = lab.node("flood")?;
    let dev = &flood
        .uplink
        .as_ref()
        .ok_or_else(|| NetsimError::Topology("the flood host has no uplink".into()))?
        .interface;
    let addrs: Vec<Ipv4Addr> = (0..args.addrs).map(flood_addr).collect();
    if let Some(taken) = addrs
        .iter()
        .find(|a| lab.plan().nodes.iter().any(|n| n.addrs.contains(a)))
    {
        return Err(NetsimError::Topology(format!(
            "flood address {taken} is taken"
        )));
    }
    let ip: Vec<String> = addrs
        .iter()
        .map(|a| format!("addr add {a}/24 dev {dev}"))
        .collect();
    crate::netns::ip_batch(Some(&flood.netns), &ip)?;
    let sources = plan_sources(lab.plan(), args)?;

    let limits = Limits {
        new_per_ip_burst: args.new_per_ip_burst,
        punch_per_ip_burst: args.punch_per_ip_burst,
    };
    let rendezvous_args = rendezvous_args(limits, &args.rendezvous_arg);
    let (rendezvous_id, mut rendezvous) =
        session::start_rendezvous(cfg, lab, work, &rendezvous_args).map_err(NetsimError::Matrix)?;
    let pid = rendezvous.child.id();
    let before_kib = status_kib(pid, "VmRSS:").unwrap_or(0);
    let quic = SocketAddr::from((RENDEZVOUS_ADDRS[0], RENDEZVOUS_PORT));

    let phase = Instant::now();
    // The witness registers before the flood; its lookups run until the end.
    let witness = Witness::start(lab, WITNESS, WITNESS_ADDR, quic)?;
    let junk = Junk::start(lab, "flood", &addrs, quic, args.junk_per_sec)?;
    let dgram_junk = DgramJunk::start(lab, "flood", &addrs, quic, args.dgram_junk_per_sec)?;
    dgram_junk.set_material(witness.material());
    // The flood connects in the background; once half of it has arrived, alice and bob start
    // and register in the middle of it.
    let arrived = Arc::new(AtomicUsize::new(0));
    let mut result = CellResult::new("flood");
    let (mut flood, session, arrived_at_ready) = std::thread::scope(|scope| {
        let counter = arrived.clone();
        let connecting = scope.spawn(move || Flood::connect_all(lab, sources, quic, counter));
        while arrived.load(Ordering::SeqCst) < args.identities / 2 && !connecting.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let session = Session::start(cfg, lab, work, &rendezvous_id, &mut result);
        let arrived_at_ready = arrived.load(Ordering::SeqCst);
        let flood = connecting
            .join()
            .map_err(|_| NetsimError::Matrix("the flood's thread panicked".into()))?;
        Ok::<_, NetsimError>((flood?, session?, arrived_at_ready))
    })?;
    seconds.push((
        format!(
            "{} identities connect, register, look up (alice and bob register meanwhile)",
            args.identities
        ),
        secs(phase),
    ));

    let mut material = witness.material();
    material.extend(flood.dgram_sessions());
    dgram_junk.set_material(material);
    let phase = Instant::now();
    let targets = session
        .ids
        .iter()
        .map(|id| id.parse())
        .collect::<std::result::Result<Vec<p2pnat_proto::PeerId>, _>>()
        .map_err(|e| NetsimError::Matrix(format!("a node's peer ID: {e}")))?;
    witness.look_up(targets.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let punches = flood.start_punches(targets, MAX_PUNCH_ROUNDS, stop.clone());
    let exchange_start = Instant::now();
    let mut session = session;
    let mut legit = legit::exchange(&mut session, args.redials, cfg.message_timeout, &mut result);
    legit.under_punch_flood = punches.running();
    legit.flooders_arrived_at_ready = arrived_at_ready;
    report::write_events(&session, exchange_start, work);
    for host in ["alice", "bob"] {
        let log = std::fs::read_to_string(work.join(format!("{host}.stderr"))).unwrap_or_default();
        legit.pushes_dropped += PUSH_DROPPED
            .iter()
            .map(|m| log.matches(m).count())
            .sum::<usize>();
        legit.pushes_deferred += log.matches(PUSH_DEFERRED).count();
    }
    stop.store(true, Ordering::SeqCst);
    let punch_rounds = flood.finish_punches(punches);
    seconds.push((
        "legitimate exchange during the punch flood".into(),
        secs(phase),
    ));
    let junk_sent = junk.stop();
    let dgram = DgramFigures {
        junk: dgram_junk.stop(),
        witness: witness.stop(),
        flooders: flood.dgram_stats(),
        punch_rounds,
        push_attempts: PUSH_ATTEMPTS,
    };

    let metrics = scrape(lab)
        .map(|t| checks::scraped(&t))
        .unwrap_or_else(|e| {
            legit.notes.push(format!("metrics scrape failed: {e}"));
            Scraped::default()
        });
    for (source, tally) in flood.sources.iter().zip(flood.tallies.iter_mut()) {
        if let Some(router) = lab.plan().router_of(lab.node(&source.host)?) {
            tally.nat_mappings = lab.udp_mappings(&router.name).ok().map(|m| {
                m.iter()
                    .filter(|m| {
                        m.remote
                            == std::net::SocketAddrV4::new(RENDEZVOUS_ADDRS[0], RENDEZVOUS_PORT)
                    })
                    .count()
            });
        }
    }
    flood.count_resends();
    let connections: usize = flood.tallies.iter().map(|t| t.quic_connected).sum();
    // Every datagram registration holds a session: the flooders', alice's, bob's, the
    // witness's.
    let sessions = flood
        .tallies
        .iter()
        .map(|t| t.registered_dgram)
        .sum::<usize>()
        + LEGIT_REGISTRATIONS;
    let memory = Memory {
        before_kib,
        after_kib: status_kib(pid, "VmRSS:").unwrap_or(0),
        peak_kib: status_kib(pid, "VmHWM:").unwrap_or(0),
        bound_kib: checks::memory_bound_kib(
            args.rss_base_mib,
            args.rss_per_connection_kib,
            connections,
            args.rss_per_session_kib,
            sessions,
        ),
        connections,
        sessions,
    };
    let alive = matches!(rendezvous.child.try_wait(), Ok(None));
    let mut checks = checks::verdict(
        &flood.sources,
        &flood.tallies,
        limits,
        &metrics,
        &legit,
        memory,
        alive,
    );
    checks.extend(checks_dgram::verdict(
        &flood.sources,
        &flood.tallies,
        &metrics,
        &dgram,
        LEGIT_REGISTRATIONS,
    ));
    let sources = flood
        .sources
        .iter()
        .cloned()
        .zip(flood.tallies.iter().cloned())
        .collect();
    drop(session);
    drop(flood);
    drop::<LabProcess>(rendezvous);
    seconds.push(("whole run".into(), secs(started)));
    Ok(FloodReport {
        identities: args.identities,
        limits,
        sources,
        punch_rounds,
        junk_sent,
        transport: args.transport,
        dgram,
        metrics,
        legit,
        memory,
        checks,
        seconds,
    })
}

/// GET /metrics from the rendezvous's metrics endpoint, from inside its namespace.
fn scrape(lab: &Lab) -> Result<String> {
    let netns = lab.node(RENDEZVOUS)?.netns.clone();
    let mut stream = crate::netns::in_netns(&netns, || {
        std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT))
    })?;
    let io = |e| NetsimError::io("scraping the rendezvous's metrics", e);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: rendezvous\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
        _ => Err(NetsimError::Matrix(format!(
            "metrics answered {:?}",
            answer.lines().next().unwrap_or("")
        ))),
    }
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_given_by_the_user_replaces_the_floods_own() {
        let limits = Limits {
            new_per_ip_burst: 20,
            punch_per_ip_burst: 8,
        };
        let args = rendezvous_args(limits, &[]);
        assert_eq!(args.len(), 12);
        assert!(args.windows(2).any(|w| w == ["--new-per-ip-burst", "20"]));
        let args = rendezvous_args(limits, &["--new-per-ip-burst=40".to_string()]);
        assert!(!args.iter().any(|a| a == "--new-per-ip-burst"));
        assert_eq!(
            args.last().map(String::as_str),
            Some("--new-per-ip-burst=40")
        );
        assert!(args.windows(2).any(|w| w == ["--punch-per-ip-burst", "8"]));
    }

    #[test]
    fn sources_share_the_identities_out() {
        let plan = lab_builder(&test_args()).topology().plan("t1").unwrap();
        let mut args_odd = test_args();
        args_odd.identities = 1002;
        args_odd.behind_nat = 201;
        let sources = plan_sources(&plan, &args_odd).unwrap();
        assert_eq!(sources.len(), 22);
        assert_eq!(sources.iter().map(|s| s.identities).sum::<usize>(), 1002);
        assert_eq!(sources[0].identities, 41);
        assert_eq!(sources[1].identities, 40);
        assert_eq!(sources[0].bind, Ipv4Addr::new(198, 51, 100, 100));
        assert_eq!(sources[19].seen_ip, Ipv4Addr::new(198, 51, 100, 119));
        let nat1 = plan.node("flood-nat1").unwrap().addrs[0];
        assert_eq!((sources[20].seen_ip, sources[20].identities), (nat1, 101));
        assert!(sources[20].socket_each && sources[21].socket_each);
        assert_eq!(sources[21].identities, 100);
        // Split: odd flood addresses and the second NAT half over QUIC, the rest datagrams.
        let quic: Vec<usize> = sources.iter().map(|s| s.quic).collect();
        assert_eq!(&quic[..4], &[0, 20, 0, 20]);
        assert_eq!(&quic[20..], &[0, 50]);
        let mine = plan_sources(&plan, &test_args()).unwrap();
        assert_eq!(mine.iter().map(|s| s.quic).sum::<usize>(), 250);
        // Within a source the QUIC identities spread evenly among the datagram ones.
        let transports: Vec<_> = (0..4).map(|n| mine[1].transport(n)).collect();
        use client::Transport::{Dgram, Quic};
        assert_eq!(transports, vec![Dgram, Quic, Dgram, Quic]);
        assert_eq!(
            (0..40).filter(|n| mine[1].transport(*n) == Quic).count(),
            20
        );
        assert_eq!((0..40).filter(|n| mine[0].transport(*n) == Quic).count(), 0);
        let mut all_quic = test_args();
        all_quic.transport = TransportPlan::Quic;
        let quic = plan_sources(&plan, &all_quic).unwrap();
        assert!(quic.iter().all(|s| s.quic == s.identities));
    }

    fn test_args() -> FloodArgs {
        FloodArgs {
            identities: 1000,
            addrs: 20,
            behind_nat: 200,
            new_per_ip_burst: 20,
            punch_per_ip_burst: 8,
            junk_per_sec: 0,
            dgram_junk_per_sec: 0,
            transport: TransportPlan::Split,
            redials: 0,
            rss_base_mib: 32,
            rss_per_connection_kib: 48,
            rss_per_session_kib: 8,
            alice: PeerKind::PortRestrictedCone,
            bob: PeerKind::Symmetric,
            rendezvous_arg: Vec::new(),
            node_bin: None,
            rendezvous_bin: None,
            out: None,
        }
    }
}
