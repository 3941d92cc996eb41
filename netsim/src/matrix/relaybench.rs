//! The relayed-throughput cell: one pair that punches (two port-restricted cones), both
//! uplinks capped at 100 Mbit/s ([`DEFAULT_LINK`], unless `--link` is given), moves the
//! same bulk transfer twice in one lab, first over its direct path, then with a fresh pair of
//! nodes started with `--relay-only` (every byte through the rendezvous's built-in TURN
//! server, started with `--turn-max-bps 0`: no per-allocation quota). Measured: both rates,
//! their ratio, and the rendezvous process's CPU time (utime + stime from /proc) during the
//! relayed transfer, per GiB relayed. A third pair, started with `--relay-only
//! --rendezvous-over tls`, moves it once more with both nodes registered and allocated over
//! TLS on the rendezvous's TLS port (TURN over TLS, issue #13): each direction then crosses
//! one TCP leg (UDP from the sender to the receiver's allocation, TLS from the relay to the
//! receiver), as it does for a peer whose network blocks UDP.

use super::cell::{CellConfig, CellResult};
use super::session::{Session, BULK_CHUNK};
use crate::lab::Lab;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// Bytes of each of the two transfers.
pub const BENCH_BYTES: usize = 32 * BULK_CHUNK;
/// The peers' uplinks in this cell: 100 Mbit/s, a common home uplink. Without a cap the lab
/// measures how two nodes, the relay and the NATs share its two cores (the relay is a third
/// busy process on the same machine), not what a relay costs a pair on the internet; run
/// `netsim matrix --only relay-throughput --link rate=0` for that figure.
pub const DEFAULT_LINK: &str = "rate=100000";
/// Arguments the rendezvous of this cell gets: no relay quota.
pub const RENDEZVOUS_ARGS: [&str; 2] = ["--turn-max-bps", "0"];

/// What the relayed-throughput cell measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RelayBenchResult {
    pub bytes: usize,
    /// The path the first pair's connection ended on (should be direct).
    pub direct_path: Option<String>,
    pub direct_mib_s: Option<f64>,
    /// The path the `--relay-only` pair's connection ended on (must be relayed).
    pub relayed_path: Option<String>,
    pub relayed_mib_s: Option<f64>,
    /// relayed / direct, in percent.
    pub relayed_percent: Option<f64>,
    /// The same transfer with both nodes over TLS (`--rendezvous-over tls`): path, rate and
    /// percent of direct.
    pub tls_path: Option<String>,
    pub tls_mib_s: Option<f64>,
    pub tls_percent: Option<f64>,
    /// CPU seconds (user + system) the rendezvous spent during the relayed transfer.
    pub rendezvous_cpu_s: Option<f64>,
    /// The same per GiB of payload relayed.
    pub cpu_s_per_gib: Option<f64>,
    /// The `--relay-only` pair's messages (added to the cell's tally after it is made).
    pub relay_only_messages: super::cell::MessageTally,
    pub problems: Vec<String>,
}

/// CPU seconds (utime + stime) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall, the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// Runs both transfers: `session` (started normally, `hello` done) sends first, then a `--relay-only`
/// pair started in `dir/relay-only`; the second pair's messages join `result`'s tally.
pub fn run(
    cfg: &CellConfig,
    lab: &Lab,
    session: &mut Session,
    hello: &super::session::Hello,
    rendezvous: &super::cell::Rendezvous,
    dir: &Path,
    result: &mut CellResult,
) {
    let mut r = RelayBenchResult {
        bytes: BENCH_BYTES,
        ..RelayBenchResult::default()
    };
    let bench = CellConfig {
        bulk_bytes: BENCH_BYTES,
        bulk_timeout: Duration::from_secs(90),
        ..cfg.clone()
    };
    super::cell::bulk(&bench, session, hello, result);
    r.direct_mib_s = result.throughput_mib_s;
    let relay_dir = dir.join("relay-only");
    let mut relay_cfg = bench.clone();
    relay_cfg.node_args.push("--relay-only".into());
    let mut second = CellResult::new(&result.cell);
    let outcome = std::fs::create_dir_all(&relay_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            Session::start(&relay_cfg, lab, &relay_dir, &rendezvous.id, &mut second)
                .map_err(|e| e.to_string())
        });
    match outcome {
        Ok(mut relayed) => {
            let hello = relayed.hello(cfg.message_timeout);
            let before = cpu_seconds(rendezvous.pid);
            super::cell::bulk(&relay_cfg, &mut relayed, &hello, &mut second);
            let after = cpu_seconds(rendezvous.pid);
            relayed.finish(&hello, Duration::from_secs(2), &mut second);
            r.relayed_mib_s = second.throughput_mib_s;
            r.relayed_path = second.path.clone();
            if let (Some(b), Some(a), Some(_)) = (before, after, r.relayed_mib_s) {
                r.rendezvous_cpu_s = Some(a - b);
                r.cpu_s_per_gib = Some((a - b) / (BENCH_BYTES as f64 / (1u64 << 30) as f64));
            }
        }
        Err(e) => r
            .problems
            .push(format!("the --relay-only pair did not start: {e}")),
    }
    // Over TLS: both nodes reach the rendezvous and relay over its TLS port. Their `ready`
    // lines say over=tls in a lab that lets UDP through, so their observed-address checks are
    // not this cell's business and are not added.
    let tls_dir = dir.join("relay-tls");
    let mut tls_cfg = relay_cfg.clone();
    tls_cfg
        .node_args
        .extend(["--rendezvous-over".to_string(), "tls".to_string()]);
    let mut third = CellResult::new(&result.cell);
    let outcome = std::fs::create_dir_all(&tls_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            Session::start(&tls_cfg, lab, &tls_dir, &rendezvous.id, &mut third)
                .map_err(|e| e.to_string())
        });
    match outcome {
        Ok(mut tls) => {
            let hello = tls.hello(cfg.message_timeout);
            super::cell::bulk(&tls_cfg, &mut tls, &hello, &mut third);
            tls.finish(&hello, Duration::from_secs(2), &mut third);
            r.tls_mib_s = third.throughput_mib_s;
            r.tls_path = third.path.clone();
        }
        Err(e) => r.problems.push(format!("the TLS pair did not start: {e}")),
    }
    if r.tls_mib_s.is_none() {
        r.problems
            .push("the transfer over the TLS relay did not complete".into());
    }
    for note in third.notes {
        result.notes.push(format!("TLS pair: {note}"));
    }
    if let (Some(d), Some(rl)) = (r.direct_mib_s, r.relayed_mib_s) {
        r.relayed_percent = Some(rl / d * 100.0);
    }
    if let (Some(d), Some(t)) = (r.direct_mib_s, r.tls_mib_s) {
        r.tls_percent = Some(t / d * 100.0);
    }
    if r.relayed_mib_s.is_none() {
        r.problems
            .push("the relayed transfer (--relay-only) did not complete".into());
    }
    if second.connected && r.relayed_path.as_deref() != Some("relayed") {
        r.problems.push(format!(
            "the --relay-only pair ended {}, not relayed",
            r.relayed_path.as_deref().unwrap_or("?")
        ));
    }
    for note in second.notes {
        result.notes.push(format!("--relay-only pair: {note}"));
    }
    for m in second.observed_mismatches {
        result
            .observed_mismatches
            .push(format!("--relay-only pair: {m}"));
    }
    r.relay_only_messages = second.messages;
    r.relay_only_messages.add(&third.messages);
    result.relay_bench = Some(r);
}
