//! The scenario matrix: every pair of peer kinds, plus two peers behind one NAT, each run
//! with the real `p2p-rendezvous` and `p2p-node`, measured, and compared with the expected
//! outcomes kept as data in `netsim/expected.toml`.
//!
//! Cells run one after another (the machine has two cores and timings matter). The matrix
//! exits non-zero if any cell does worse than expected; better is reported, not failed.

pub mod cell;
pub mod coturn;
pub mod expected;
pub mod longlink;
pub mod node;
pub mod rebind;
pub mod relaybench;
pub mod report;
pub mod session;
pub mod svg;
pub mod trials;

use crate::error::{NetsimError, Result};
use crate::scenario::{self, PeerKind};
use cell::{CellConfig, CellSpec, Phase};
use rebind::Disruption;
use report::{Report, Row};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Default expectations file, next to this crate's manifest.
pub const DEFAULT_EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/expected.toml");

/// Arguments of `netsim matrix`.
#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    /// Report folder (matrix.md, matrix.json, matrix.svg, and per-cell logs under logs/).
    #[arg(long, default_value = "reports/netsim")]
    pub out: PathBuf,
    /// Expected outcomes.
    #[arg(long, default_value = DEFAULT_EXPECTED)]
    pub expected: PathBuf,
    /// p2p-node binary [default: $P2P_NODE_BIN, else next to netsim, else the workspace's
    /// target/debug].
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// p2p-rendezvous binary [default: $P2P_RENDEZVOUS_BIN, else as for --node-bin].
    #[arg(long)]
    pub rendezvous_bin: Option<PathBuf>,
    /// Run only the cells whose name contains one of these (repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// Bytes of the bulk transfer.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    pub bulk_bytes: usize,
    /// Seconds to wait for one message to arrive or fail.
    #[arg(long, default_value_t = 15)]
    pub message_timeout: u64,
    /// Seconds to wait for the bulk transfer.
    #[arg(long, default_value_t = 30)]
    pub bulk_timeout: u64,
    /// Bytes alice sends bob in the NAT rebinding cell (at least 3 MiB); her router's NAT is
    /// rebound when a third has arrived.
    #[arg(long, default_value_t = 100 * 1024 * 1024)]
    pub rebind_bytes: usize,
    /// Seconds (at least 5) the rebinding cell waits after the rebinding for the rest of the
    /// transfer (longer than the node's 30 s idle timeout, so a dead connection is reported).
    #[arg(long, default_value_t = 60)]
    pub rebind_wait: u64,
    /// Run every selected pair cell as this many trials (fresh lab and nodes, one message
    /// each way), overriding expected.toml's `trials` and --max-trials.
    #[arg(long)]
    pub trials: Option<usize>,
    /// Run at most this many of the trials expected.toml asks for (its min_success scales
    /// down). The default keeps CI fast; `--max-trials 1000` runs every trial written.
    #[arg(long, default_value_t = DEFAULT_MAX_TRIALS)]
    pub max_trials: usize,
    /// Time budget for the whole matrix in seconds: cells not started by then are reported
    /// as not run, which fails the matrix (keeps a hanging binary from stalling CI).
    #[arg(long, default_value_t = 900)]
    pub max_seconds: u64,
    /// Impair both peers' uplinks after the self-check, e.g. --link loss=1,delay=20,rate=50000
    /// (expected outcomes are written for an unimpaired network).
    #[arg(long)]
    pub link: Option<crate::topology::LinkImpairment>,
    /// Extra argument for every p2p-node (repeatable), e.g. --node-arg=--probe-timeout-ms=3000.
    #[arg(long, allow_hyphen_values = true)]
    pub node_arg: Vec<String>,
}

/// Every cell of the matrix, in order: each pair of [`PeerKind::ALL`] in both dial
/// directions (cell `A+B`: alice behind A dials bob behind B; `B+A` follows right after),
/// two peers behind one NAT without and with hairpinning, a keepalive cell (a short NAT
/// mapping timeout and an idle period longer than it), the NAT rebinding cell, the
/// address-change cell, the relay-cut cell, the UDP-unblock cell, the coturn cell and the
/// relayed-throughput cell.
pub fn all_cells() -> Vec<CellSpec> {
    let cell = |name: String, builder, phase| CellSpec {
        name,
        builder,
        phase,
    };
    let mut cells = Vec::new();
    for (i, a) in PeerKind::ALL.iter().enumerate() {
        for b in &PeerKind::ALL[i..] {
            cells.push(cell(
                format!("{a}+{b}"),
                scenario::pair(*a, *b),
                Phase::Plain,
            ));
            if a != b {
                cells.push(cell(
                    format!("{b}+{a}"),
                    scenario::pair(*b, *a),
                    Phase::Plain,
                ));
            }
        }
    }
    // Bare Linux NATs two deep (issue #11's "double NAT pairs"): against each other and
    // against a single bare Linux NAT, both ways.
    let bare_double = PeerKind::LinuxDoubleNat;
    for (a, b) in [
        (bare_double, bare_double),
        (bare_double, PeerKind::LinuxNat),
        (PeerKind::LinuxNat, bare_double),
    ] {
        cells.push(cell(format!("{a}+{b}"), scenario::pair(a, b), Phase::Plain));
    }
    cells.push(cell(
        "same-nat".into(),
        scenario::same_nat(false),
        Phase::Plain,
    ));
    cells.push(cell(
        "same-nat-hairpin".into(),
        scenario::same_nat(true),
        Phase::Plain,
    ));
    cells.push(cell(
        KEEPALIVE_CELL.into(),
        scenario::short_mapping_timeout(KEEPALIVE_NAT_TIMEOUT),
        Phase::Idle(KEEPALIVE_NAT_TIMEOUT * 5 / 2),
    ));
    let prc = || scenario::pair(PeerKind::PortRestrictedCone, PeerKind::PortRestrictedCone);
    cells.push(cell(
        REBIND_CELL.into(),
        prc().scenario(REBIND_CELL),
        Phase::Disrupt(Disruption::Rebind {
            router: "alice-nat".into(),
        }),
    ));
    cells.push(cell(
        ADDRESS_CHANGE_CELL.into(),
        prc().scenario(ADDRESS_CHANGE_CELL),
        Phase::Disrupt(Disruption::Move {
            router: "alice-nat".into(),
            host: "alice".into(),
        }),
    ));
    cells.push(cell(
        RELAY_CUT_CELL.into(),
        prc().scenario(RELAY_CUT_CELL),
        Phase::Disrupt(Disruption::Cut {
            router: "alice-nat".into(),
            remote: "bob-nat".into(),
        }),
    ));
    cells.push(cell(
        UDP_UNBLOCK_CELL.into(),
        prc().scenario(UDP_UNBLOCK_CELL),
        Phase::Disrupt(Disruption::Unblock {
            router: "alice-nat".into(),
        }),
    ));
    cells.push(cell(
        COTURN_CELL.into(),
        scenario::pair(PeerKind::Symmetric, PeerKind::Symmetric)
            .public_host(coturn::COTURN_HOST)
            .scenario(COTURN_CELL),
        Phase::Coturn,
    ));
    cells.push(cell(
        RELAY_THROUGHPUT_CELL.into(),
        prc().scenario(RELAY_THROUGHPUT_CELL),
        Phase::RelayBench,
    ));
    cells
}

/// The keepalive cell's name and its NAT's UDP mapping timeout.
pub const KEEPALIVE_CELL: &str = "keepalive-10s-nat";
pub const KEEPALIVE_NAT_TIMEOUT: Duration = Duration::from_secs(10);
/// The NAT rebinding cell's name.
pub const REBIND_CELL: &str = "rebind";
/// The address-change cell's name (alice's host moves to another LAN address).
pub const ADDRESS_CHANGE_CELL: &str = "address-change";
/// The relay-cut cell's name (the direct path is cut mid-transfer, then restored).
pub const RELAY_CUT_CELL: &str = "relay-cut";
/// The UDP-unblock cell's name (alice's network blocks UDP until a third has arrived).
pub const UDP_UNBLOCK_CELL: &str = "udp-unblock";
/// The cell relaying through coturn instead of the built-in TURN server.
pub const COTURN_CELL: &str = "coturn";
/// The cell measuring relayed against direct throughput.
pub const RELAY_THROUGHPUT_CELL: &str = "relay-throughput";
/// Default of --max-trials.
pub const DEFAULT_MAX_TRIALS: usize = 3;

/// How many times the matrix runs a cell: 1 for cells with a phase of their own, else
/// --trials, else expected.toml's `trials` capped by --max-trials.
pub fn trials_to_run(spec: &CellSpec, written: usize, args: &MatrixArgs) -> usize {
    if spec.phase != Phase::Plain {
        return 1;
    }
    match args.trials {
        Some(n) => n.clamp(1, expected::MAX_TRIALS),
        None => written.min(args.max_trials).max(1),
    }
}

/// Finds a binary: the explicit path, else `$env_var`, else next to the running executable,
/// else the workspace's target/debug.
pub fn locate_binary(explicit: Option<&Path>, env_var: &str, name: &str) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    } else if let Some(p) = std::env::var_os(env_var) {
        candidates.push(PathBuf::from(p));
    } else {
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                candidates.push(dir.join(name));
                // Test binaries live in target/debug/deps.
                if let Some(up) = dir.parent() {
                    candidates.push(up.join(name));
                }
            }
        }
        candidates.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/debug")
                .join(name),
        );
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            NetsimError::Matrix(format!(
                "cannot find {name} (looked at {}); build it with `cargo build --workspace --bins` or set {env_var}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Runs the matrix and writes the report; the exit code is non-zero if a cell did worse than
/// expected.
pub fn run_cli(args: &MatrixArgs) -> Result<ExitCode> {
    crate::netns::require_root_and_tools()?;
    let report = run(args)?;
    println!("{}", report.summary());
    println!(
        "report: {} and matrix.json",
        args.out.join("matrix.md").display()
    );
    let worse = report.count(|v| matches!(v, expected::Verdict::Worse(_)));
    // A plain closing line for CI: a cell passes unless it did worse than expected.
    println!(
        "matrix: {} passed, {worse} failed",
        report.rows.len() - worse
    );
    Ok(if worse == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the selected cells and writes the report into `args.out`.
pub fn run(args: &MatrixArgs) -> Result<Report> {
    let started = Instant::now();
    let node_bin = locate_binary(args.node_bin.as_deref(), "P2P_NODE_BIN", "p2p-node")?;
    let rendezvous_bin = locate_binary(
        args.rendezvous_bin.as_deref(),
        "P2P_RENDEZVOUS_BIN",
        "p2p-rendezvous",
    )?;
    let cells = all_cells();
    let expectations = load_expectations(&args.expected, &cells)?;
    let work_dir = args.out.join("logs");
    if work_dir.exists() {
        std::fs::remove_dir_all(&work_dir)
            .map_err(|e| NetsimError::io(format!("clearing {}", work_dir.display()), e))?;
    }
    let cfg = CellConfig {
        node_bin: absolute(&node_bin),
        rendezvous_bin: absolute(&rendezvous_bin),
        work_dir: absolute(&work_dir),
        ready_timeout: Duration::from_secs(15),
        message_timeout: Duration::from_secs(args.message_timeout),
        bulk_bytes: args.bulk_bytes.max(1024),
        bulk_timeout: Duration::from_secs(args.bulk_timeout),
        rebind_bytes: args.rebind_bytes.max(rebind::MIN_REBIND_BYTES),
        rebind_wait: Duration::from_secs(args.rebind_wait.max(5)),
        node_args: args.node_arg.clone(),
        link: args.link,
    };
    let mut rows = Vec::new();
    for spec in cells {
        let name = spec.name.clone();
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        if crate::signals::interrupted() {
            break;
        }
        let expected = expectations
            .iter()
            .find(|e| e.pair == name)
            .expect("load checked every cell is named")
            .clone();
        let result = if started.elapsed() > Duration::from_secs(args.max_seconds) {
            let mut r = cell::CellResult::new(&name);
            r.lab_problem = Some(format!(
                "not run: the matrix exceeded its budget of {} s (--max-seconds)",
                args.max_seconds
            ));
            r
        } else {
            match trials_to_run(&spec, expected.trials, args) {
                1 => cell::run_cell(&cfg, spec)?,
                // A cell expected to stay relayed is judged as it connects: waiting for a
                // direct path that cannot come would cost every trial the whole settle time.
                n => {
                    let settle = match expected.path.as_deref() {
                        Some("relayed") => Duration::ZERO,
                        _ => trials::SETTLE,
                    };
                    trials::run_trials(&cfg, &spec, n, settle)?
                }
            }
        };
        let verdict = expected::verdict(&expected, &result);
        let extra = match (&result.trials, &result.rebind) {
            (Some(t), _) => format!(
                "trials={}/{} direct={} relayed-at-connect={}",
                t.successes, t.trials, t.direct, t.relayed_at_connect
            ),
            (None, None) if result.relay_bench.is_some() => {
                let b = result.relay_bench.as_ref().expect("checked");
                let f = |v: Option<f64>, d: usize| v.map_or("-".into(), |v| format!("{v:.d$}"));
                format!(
                    "direct={} MiB/s relayed={} MiB/s ({}%) tls-relayed={} MiB/s ({}%) rendezvous-cpu={} s/GiB",
                    f(b.direct_mib_s, 1),
                    f(b.relayed_mib_s, 1),
                    f(b.relayed_percent, 0),
                    f(b.tls_mib_s, 1),
                    f(b.tls_percent, 0),
                    f(b.cpu_s_per_gib, 1)
                )
            }
            (None, Some(r)) => format!(
                "disrupted: survived={} stall={} ms fallback={} ms direct-again={} ms",
                r.survived,
                r.stall_ms.map_or("-".into(), |v| format!("{v:.0}")),
                r.fallback_ms.map_or("-".into(), |v| format!("{v:.0}")),
                r.back_direct_ms.map_or("-".into(), |v| format!("{v:.0}")),
            ),
            _ => format!(
                "bulk={:>7} MiB/s",
                result
                    .throughput_mib_s
                    .map_or("-".into(), |v| format!("{v:.1}"))
            ),
        };
        let path = match (result.path_at_connect.as_deref(), result.path.as_deref()) {
            (Some(a), Some(b)) if a != b => format!("{a}->{b}"),
            (_, Some(b)) => b.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<42} connected={:<5} path={:<14} first={:>8} ms  {extra}  {:.1} s  {}",
            name,
            result.connected,
            path,
            result
                .first_message_ms
                .map_or("-".into(), |v| format!("{v:.1}")),
            result.duration_s,
            verdict.label()
        );
        if let expected::Verdict::Worse(reasons) | expected::Verdict::Better(reasons) = &verdict {
            for r in reasons {
                println!("    {r}");
            }
        }
        rows.push(Row {
            expected,
            result,
            verdict,
        });
    }
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        finished_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        node_bin: cfg.node_bin.display().to_string(),
        rendezvous_bin: cfg.rendezvous_bin.display().to_string(),
        link: args.link,
        duration_s: started.elapsed().as_secs_f64(),
        rows,
    };
    report.write(&args.out)?;
    Ok(report)
}

/// Loads expected.toml for these cells: each named once, and each entry fitting its cell.
pub fn load_expectations(path: &Path, cells: &[CellSpec]) -> Result<Vec<expected::Expectation>> {
    let names: Vec<String> = cells.iter().map(|c| c.name.clone()).collect();
    let expectations = expected::load(path, &names)?;
    let of = |f: fn(&Phase) -> bool| -> Vec<String> {
        cells
            .iter()
            .filter(|c| f(&c.phase))
            .map(|c| c.name.clone())
            .collect()
    };
    expected::check_kinds(
        &expectations,
        &of(|p| matches!(p, Phase::Disrupt(_))),
        &of(|p| *p == Phase::Plain),
    )?;
    Ok(expectations)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_expectations_cover_every_cell() {
        let cells = all_cells();
        // Every ordered pair of kinds (same kind once), three bare-double-NAT cells, two
        // same-NAT cells, keepalive, rebind, address change, relay cut, UDP unblock, coturn,
        // relayed throughput.
        assert_eq!(cells.len(), 8 * 8 + 3 + 9);
        let mut names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cells.len(), "cell names are unique");
        load_expectations(Path::new(DEFAULT_EXPECTED), &cells).unwrap();
    }
}
