//! `netsim longlink`: the long-link figures of scripts/bench.sh (issue #16). Two public peers,
//! both uplinks delayed 20 ms each way (80 ms round trip between them), then also capped at
//! 100 Mbit/s, then capped with 1% loss. For every link, interleaved over rounds: iperf3 TCP
//! between the same two lab hosts on the same link (the reference), then p2p-node's bulk
//! transfer (the matrix's `public+public` cell: rendezvous, lookup, handshake, `--bulk-bytes` in
//! 1 MiB messages) once per node variant (by default `--congestion cubic` and `--congestion bbr`).
//! Writes longlink.md and longlink.json (read by p2p-bench, which merges them into bench.md).

use super::cell::{self, CellConfig, CellSpec, Phase};
use crate::error::{NetsimError, Result};
use crate::scenario::{self, PeerKind};
use crate::topology::LinkImpairment;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `netsim longlink`.
#[derive(Debug, Clone, clap::Args)]
pub struct LongLinkArgs {
    /// Report folder (longlink.md, longlink.json, logs/).
    #[arg(long, default_value = "reports/bench/longlink")]
    pub out: PathBuf,
    /// p2p-node binary [default as for `netsim matrix`].
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// p2p-rendezvous binary [default as for `netsim matrix`].
    #[arg(long)]
    pub rendezvous_bin: Option<PathBuf>,
    /// Links to measure (repeatable; both uplinks get it).
    #[arg(long = "link", default_values_t = [
        "delay=20".to_string(),
        "delay=20,rate=100000".to_string(),
        "delay=20,rate=100000,loss=1".to_string(),
    ])]
    pub links: Vec<String>,
    /// Node variants, `NAME=ARGS` (ARGS split on spaces, given to both nodes; repeatable).
    #[arg(long = "variant", default_values_t = [
        "cubic=--congestion cubic".to_string(),
        "bbr=--congestion bbr".to_string(),
    ])]
    pub variants: Vec<String>,
    /// Rounds (each runs every link's iperf3 and every variant once).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Bytes of each p2p-node transfer (the most, with --same-bytes-as-iperf).
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub bulk_bytes: usize,
    /// Bytes of each p2p-node transfer on a lossy link (loss-based control is slow there).
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub lossy_bulk_bytes: usize,
    /// Seconds a p2p-node transfer may take before it is reported as not finished.
    #[arg(long, default_value_t = 60)]
    pub bulk_timeout: u64,
    /// Size each p2p-node transfer as the bytes iperf3 moved in its run on the same link in the
    /// same round (at least 8 MiB, at most --bulk-bytes), so both include one ramp-up over a
    /// similar time. `false`: --bulk-bytes (--lossy-bulk-bytes on lossy links).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub same_bytes_as_iperf: bool,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 10)]
    pub iperf_seconds: u32,
}

#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    link: String,
    tool: String,
    round: usize,
    mib_s: Option<f64>,
    note: Option<String>,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// iperf3 TCP from alice to bob on `link`, MiB/s of payload received.
fn iperf(link: LinkImpairment, seconds: u32, dir: &std::path::Path) -> Result<f64> {
    let lab = scenario::pair(PeerKind::Public, PeerKind::Public)
        .scenario("longlink-iperf3")
        .shape("alice")
        .shape("bob")
        .build()?;
    lab.set_impairment("alice", link)?;
    lab.set_impairment("bob", link)?;
    let bob = lab.addr("bob")?.to_string();
    let outcome = (|| {
        let _server = lab.spawn("bob", "iperf3", &["-s", "-1", "-B", &bob])?;
        std::thread::sleep(Duration::from_millis(500));
        let out = lab
            .command("alice", "iperf3")?
            .args(["-c", &bob, "-t", &seconds.to_string(), "-J"])
            .output()
            .map_err(|e| NetsimError::io("running iperf3".to_string(), e))?;
        let _ = std::fs::write(dir.join("iperf3.json"), &out.stdout);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| NetsimError::Matrix(format!("iperf3 said no JSON: {e}")))?;
        json["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|bps| bps / 8.0 / (1024.0 * 1024.0))
            .ok_or_else(|| NetsimError::Matrix(format!("iperf3: {}", json["error"])))
    })();
    lab.teardown()?;
    outcome
}

pub fn run_cli(args: &LongLinkArgs) -> Result<std::process::ExitCode> {
    crate::netns::require_root_and_tools()?;
    if std::process::Command::new("iperf3")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(NetsimError::Matrix(
            "iperf3 is missing: run scripts/install-deps.sh as root".into(),
        ));
    }
    let node_bin = super::locate_binary(args.node_bin.as_deref(), "P2P_NODE_BIN", "p2p-node")?;
    let rendezvous_bin = super::locate_binary(
        args.rendezvous_bin.as_deref(),
        "P2P_RENDEZVOUS_BIN",
        "p2p-rendezvous",
    )?;
    let work_dir = args.out.join("logs");
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| NetsimError::io(format!("creating {}", work_dir.display()), e))?;
    let work_dir = std::fs::canonicalize(&work_dir).unwrap_or(work_dir);
    let variants: Vec<(String, Vec<String>)> = args
        .variants
        .iter()
        .map(|v| {
            let (name, rest) = v.split_once('=').unwrap_or((v, ""));
            (
                name.to_string(),
                rest.split_whitespace().map(String::from).collect(),
            )
        })
        .collect();
    let mut samples = Vec::new();
    for round in 0..args.rounds {
        for spec in &args.links {
            let link: LinkImpairment = spec.parse()?;
            let dir = work_dir.join(format!("round{round}-{spec}-iperf3"));
            let _ = std::fs::create_dir_all(&dir);
            let (mib_s, note) = match iperf(link, args.iperf_seconds, &dir) {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e.to_string())),
            };
            println!(
                "round {} {spec} iperf3: {}",
                round + 1,
                mib_s.map_or(format!("failed: {note:?}"), |v| format!("{v:.2} MiB/s"))
            );
            samples.push(Sample {
                link: spec.clone(),
                tool: "iperf3".into(),
                round,
                mib_s,
                note,
            });
            // Variants in rotated order from round to round.
            let mut order: Vec<&(String, Vec<String>)> = variants.iter().collect();
            let len = order.len().max(1);
            order.rotate_left(round % len);
            for (name, node_args) in order {
                // As many bytes as iperf3 moved in its run (so both ramp up over about the same
                // time), within [8 MiB, --bulk-bytes]; --lossy-bulk-bytes if iperf3 failed on
                // a lossy link, --bulk-bytes on another.
                let bulk_bytes = match mib_s {
                    Some(r) if args.same_bytes_as_iperf => {
                        let bytes = (r * f64::from(args.iperf_seconds) * 1048576.0) as usize;
                        bytes
                            .next_multiple_of(1 << 20)
                            .clamp(8 << 20, args.bulk_bytes)
                    }
                    _ if link.loss_percent > 0 => args.lossy_bulk_bytes,
                    _ => args.bulk_bytes,
                };
                let cfg = CellConfig {
                    node_bin: node_bin.clone(),
                    rendezvous_bin: rendezvous_bin.clone(),
                    work_dir: work_dir.join(format!("round{round}-{spec}-{name}")),
                    ready_timeout: Duration::from_secs(15),
                    message_timeout: Duration::from_secs(15),
                    bulk_bytes,
                    bulk_timeout: Duration::from_secs(args.bulk_timeout),
                    rebind_bytes: super::rebind::MIN_REBIND_BYTES,
                    rebind_wait: Duration::from_secs(5),
                    node_args: node_args.clone(),
                    link: Some(link),
                };
                let cell = CellSpec {
                    name: "public+public".into(),
                    builder: scenario::pair(PeerKind::Public, PeerKind::Public),
                    phase: Phase::Plain,
                };
                let result = cell::run_cell(&cfg, cell)?;
                let note = match (&result.lab_problem, result.throughput_mib_s) {
                    (Some(p), _) => Some(p.clone()),
                    (None, None) => Some(format!(
                        "{} MiB did not arrive within {} s",
                        bulk_bytes >> 20,
                        args.bulk_timeout
                    )),
                    _ => None,
                };
                println!(
                    "round {} {spec} p2p-node {name}: {}",
                    round + 1,
                    result
                        .throughput_mib_s
                        .map_or(format!("failed: {note:?}"), |v| format!("{v:.2} MiB/s"))
                );
                samples.push(Sample {
                    link: spec.clone(),
                    tool: format!("p2p-node {name}"),
                    round,
                    mib_s: result.throughput_mib_s,
                    note,
                });
            }
        }
    }
    write_report(args, &variants, &samples)?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn write_report(
    args: &LongLinkArgs,
    variants: &[(String, Vec<String>)],
    samples: &[Sample],
) -> Result<()> {
    let med = |link: &str, tool: &str| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.link == link && s.tool == tool)
            .filter_map(|s| s.mib_s)
            .collect();
        median(&v)
    };
    let range = |link: &str, tool: &str| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.link == link && s.tool == tool)
            .filter_map(|s| s.mib_s)
            .collect();
        let failed = samples
            .iter()
            .filter(|s| s.link == link && s.tool == tool && s.mib_s.is_none())
            .count();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut text = match median(&v) {
            Some(m) if v.len() > 1 => format!("{m:.2} [{lo:.2}-{hi:.2}]"),
            Some(m) => format!("{m:.2}"),
            None => "-".into(),
        };
        if failed > 0 {
            text.push_str(&format!(" ({failed} did not finish)"));
        }
        text
    };
    let mut md = String::from("## Long link in netsim (`netsim longlink`)\n\n");
    md.push_str(&format!(
        "Two public lab hosts, both uplinks impaired as given (delay each way on each uplink: 20 ms = 80 ms round trip; rate in kbit/s; loss in % each way), {} round(s), iperf3 TCP (Linux default congestion control, {} s) and p2p-node (1 MiB messages; {}) interleaved. MiB/s, median [range].\n\n",
        args.rounds,
        args.iperf_seconds,
        if args.same_bytes_as_iperf {
            format!("each transfer as many bytes as iperf3 moved in the same round, 8-{} MiB", args.bulk_bytes >> 20)
        } else {
            format!("{} MiB, {} MiB on lossy links", args.bulk_bytes >> 20, args.lossy_bulk_bytes >> 20)
        }
    ));
    md.push_str("| link | iperf3 TCP |");
    for (name, a) in variants {
        md.push_str(&format!(" p2p-node {name} (`{}`) |", a.join(" ")));
    }
    md.push_str(" best p2p-node / iperf3 | best / cap |\n|---|---|");
    for _ in variants {
        md.push_str("---|");
    }
    md.push_str("---|---|\n");
    let mut bars = Vec::new();
    let mut targets = Vec::new();
    for link in &args.links {
        let imp: LinkImpairment = link.parse()?;
        md.push_str(&format!("| `{link}` | {} |", range(link, "iperf3")));
        let mut best: Option<(f64, &str)> = None;
        for (name, _) in variants {
            let tool = format!("p2p-node {name}");
            md.push_str(&format!(" {} |", range(link, &tool)));
            if let Some(m) = med(link, &tool) {
                if best.is_none_or(|(b, _)| m > b) {
                    best = Some((m, name));
                }
            }
        }
        let iperf = med(link, "iperf3");
        let cap_mib = (imp.rate_kbit > 0).then(|| imp.rate_kbit as f64 * 1000.0 / 8.0 / 1048576.0);
        let vs_iperf = best.zip(iperf).map(|((b, _), i)| b / i);
        let vs_cap = best.zip(cap_mib).map(|((b, _), c)| b / c);
        md.push_str(&format!(
            " {} | {} |\n",
            vs_iperf.map_or("-".into(), |r| format!(
                "{r:.2}x ({})",
                best.map_or("", |b| b.1)
            )),
            vs_cap.map_or("-".into(), |r| format!("{:.0}%", r * 100.0))
        ));
        for (name, _) in variants {
            let tool = format!("p2p-node {name}");
            if let (Some(m), Some(i)) = (med(link, &tool), iperf) {
                let (label, ratio, target) = match cap_mib {
                    Some(c) => (
                        format!("{link} {name}: share of the cap"),
                        m / c,
                        Some(if imp.loss_percent > 0 { 0.5 } else { 0.9 }),
                    ),
                    None => (format!("{link} {name} / iperf3"), m / i, Some(0.9)),
                };
                bars.push(serde_json::json!({"label": label, "ratio": ratio, "target": target}));
            }
        }
        let (goal, value, what) = match cap_mib {
            Some(_) if imp.loss_percent > 0 => {
                (0.5, vs_cap, format!("`{link}`: >= 50% of the cap"))
            }
            Some(_) => (0.9, vs_cap, format!("`{link}`: >= 90% of the cap")),
            None => (0.9, vs_iperf, format!("`{link}`: >= 0.9x iperf3 TCP")),
        };
        targets.push(serde_json::json!({
            "target": what, "value": value, "goal": goal,
            "best_variant": best.map(|b| b.1),
            "status": match value { Some(v) if v >= goal => "met", Some(_) => "not met", None => "not measured" },
        }));
    }
    md.push_str("\n| long-link target | best measured | status |\n|---|---|---|\n");
    for t in &targets {
        md.push_str(&format!(
            "| {} | {} ({}) | {} |\n",
            t["target"].as_str().unwrap_or(""),
            t["value"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.2}")),
            t["best_variant"].as_str().unwrap_or("-"),
            t["status"].as_str().unwrap_or("")
        ));
    }
    md.push_str(&format!(
        "\nCommand: `{}`\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    ));
    let json = serde_json::json!({
        "markdown": md, "bars": bars, "targets": targets, "samples": samples,
        "variants": variants, "links": args.links,
    });
    let write = |name: &str, text: String| {
        std::fs::write(args.out.join(name), text)
            .map_err(|e| NetsimError::io(format!("writing {name}"), e))
    };
    write("longlink.md", md.clone())?;
    write(
        "longlink.json",
        serde_json::to_string_pretty(&json).unwrap_or_default() + "\n",
    )?;
    print!("{md}");
    Ok(())
}
