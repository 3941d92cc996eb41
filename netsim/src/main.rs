//! `netsim`: build a NAT lab in network namespaces, check it, run the p2pnat matrix.

use clap::{Parser, Subcommand};
use p2pnat_netsim::lab::{state_path, LabState};
use p2pnat_netsim::topology::{netns_prefix, NETNS_PREFIX};
use p2pnat_netsim::{
    matrix, netns, scenario, selfcheck, signals, Lab, LinkImpairment, NetsimError,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "netsim",
    about = "A NAT lab in Linux network namespaces for p2pnat (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a scenario, run its self-check, print its hosts, and keep it up until Ctrl-C.
    Up {
        /// all-kinds, same-nat, same-nat-hairpin, or <kind>+<kind> (e.g. public+symmetric).
        scenario: String,
        /// Skip the NAT self-check.
        #[arg(long)]
        no_check: bool,
        /// Impair a host's or router's uplink, e.g. --link alice:loss=5,delay=40,rate=10000
        /// (loss in %, delay in ms each way, rate in kbit/s each way). Repeatable.
        #[arg(long = "link", value_name = "HOST:SPEC")]
        links: Vec<String>,
    },
    /// Run a command inside a host of a lab that is up.
    Exec {
        /// Host name (as printed by `netsim up`).
        host: String,
        /// Run id of the lab, needed only when several labs are up.
        #[arg(long)]
        run: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Build every NAT kind and verify that each behaves as configured.
    Check,
    /// Run every pair of peer kinds with p2p-node and p2p-rendezvous and write a report.
    Matrix(matrix::MatrixArgs),
    /// Run `p2p-node netcheck` behind every NAT kind and check its verdict against the lab.
    Netcheck(p2pnat_netsim::netcheck::NetcheckArgs),
    /// scripts/bench.sh's long-link figures: iperf3 TCP and p2p-node bulk on 20 ms uplinks
    /// (uncapped, 100 Mbit/s, 100 Mbit/s with 1% loss), interleaved over rounds.
    Longlink(matrix::longlink::LongLinkArgs),
    /// A public rendezvous under a flood of 1,000 throw-away clients from many lab addresses
    /// and from behind the lab's NATs, while two real nodes meet through it: limits, memory,
    /// service (netsim/README.md).
    Flood(p2pnat_netsim::flood::FloodArgs),
    /// Remove leftover labs (namespaces named nsim*) whose owning process is gone.
    Down {
        /// Also remove labs whose owner is still running.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    signals::install();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netsim: {e}");
            match e {
                NetsimError::NotRoot => ExitCode::from(77),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, NetsimError> {
    match cmd {
        Cmd::Up {
            scenario,
            no_check,
            links,
        } => up(&scenario, no_check, &links),
        Cmd::Exec { host, run, command } => exec(&host, run.as_deref(), &command),
        Cmd::Check => check(),
        Cmd::Matrix(args) => matrix::run_cli(&args),
        Cmd::Netcheck(args) => p2pnat_netsim::netcheck::run_cli(&args),
        Cmd::Longlink(args) => matrix::longlink::run_cli(&args),
        Cmd::Flood(args) => p2pnat_netsim::flood::run_cli(&args),
        Cmd::Down { all } => down(all),
    }
}

fn up(name: &str, no_check: bool, links: &[String]) -> Result<ExitCode, NetsimError> {
    let mut builder = scenario::by_name(name)?;
    let mut impaired = Vec::new();
    for link in links {
        let (host, spec) = link.split_once(':').ok_or_else(|| {
            NetsimError::Topology(format!("--link wants HOST:SPEC, got `{link}`"))
        })?;
        let impairment: LinkImpairment = spec.parse()?;
        // Shaped from the start, impaired only after the self-check.
        if impairment.needs_shaper() {
            builder = builder.shape(host);
        }
        impaired.push((host.to_string(), impairment));
    }
    let lab = builder.build()?;
    print_hosts(&lab);
    if !no_check {
        let report = selfcheck::check_lab(&lab)?;
        for line in report.lines() {
            println!("{line}");
        }
        report.ensure_passed()?;
    }
    for (host, impairment) in impaired {
        lab.set_impairment(&host, impairment)?;
        println!("impaired the uplink of {host}: {impairment:?}");
    }
    println!(
        "lab {} is up; state in {}; `netsim exec <host> -- <command>` runs inside it; Ctrl-C removes it",
        lab.run_id(),
        state_path(lab.run_id()).display()
    );
    loop {
        // The signal thread tears the lab down and exits the process.
        std::thread::park();
    }
}

fn print_hosts(lab: &Lab) {
    println!(
        "{:<16} {:<9} {:<22} {:<28} namespace",
        "host", "role", "addresses", "via"
    );
    for node in &lab.plan().nodes {
        let addrs: Vec<String> = node.addrs.iter().map(|a| a.to_string()).collect();
        let via = match (&node.router, &node.uplink) {
            (Some(r), _) => format!(
                "{} nat, lan {}/{}",
                r.config.nat.name(),
                r.lan_addr,
                r.lan_prefix_len
            ),
            (None, Some(up)) => up.upstream.clone(),
            (None, None) => "-".into(),
        };
        let role = format!("{:?}", node.role).to_lowercase();
        println!(
            "{:<16} {:<9} {:<22} {:<28} {}",
            node.name,
            role,
            if addrs.is_empty() {
                "-".into()
            } else {
                addrs.join(",")
            },
            via,
            node.netns
        );
    }
}

fn exec(host: &str, run: Option<&str>, command: &[String]) -> Result<ExitCode, NetsimError> {
    netns::require_root_and_tools()?;
    let labs: Vec<LabState> = LabState::load_all()
        .into_iter()
        .filter(|s| s.owner_alive())
        .filter(|s| run.is_none_or(|r| s.plan.run_id == r))
        .collect();
    let state = match labs.as_slice() {
        [one] => one,
        [] => {
            return Err(NetsimError::NoLab(
                "no lab is up (start one with `netsim up <scenario>`)".into(),
            ))
        }
        many => {
            let ids: Vec<&str> = many.iter().map(|s| s.plan.run_id.as_str()).collect();
            return Err(NetsimError::NoLab(format!(
                "several labs are up ({}); choose one with --run",
                ids.join(", ")
            )));
        }
    };
    let node = state.plan.node(host)?;
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .args(command)
        .status()
        .map_err(|e| NetsimError::io("running ip netns exec", e))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn check() -> Result<ExitCode, NetsimError> {
    let lab = scenario::all_kinds().build()?;
    let started = std::time::Instant::now();
    let report = selfcheck::check_lab(&lab)?;
    let lines = report.lines();
    for line in &lines {
        println!("{line}");
    }
    println!(
        "self-check of lab {}: {} in {:.1} s",
        lab.run_id(),
        if report.passed() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    let failed = lines.iter().filter(|l| l.starts_with("FAIL")).count();
    println!("check: {} passed, {failed} failed", lines.len() - failed);
    lab.teardown()?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn down(all: bool) -> Result<ExitCode, NetsimError> {
    netns::require_root_and_tools()?;
    let live: Vec<String> = LabState::load_all()
        .into_iter()
        .filter(|s| s.owner_alive() && !all)
        .map(|s| s.plan.run_id)
        .collect();
    let mut runs: Vec<String> = netns::list_netns(NETNS_PREFIX)?
        .into_iter()
        .filter_map(|ns| {
            let rest = ns.strip_prefix(NETNS_PREFIX)?;
            Some(rest.split_once('-')?.0.to_string())
        })
        .collect();
    runs.extend(LabState::load_all().into_iter().map(|s| s.plan.run_id));
    runs.sort();
    runs.dedup();
    let mut removed = 0;
    for run in runs {
        if live.contains(&run) {
            println!("keeping lab {run}: its owner is still running (use --all to remove it)");
            continue;
        }
        let n = netns::remove_by_prefix(&netns_prefix(&run))?;
        let _ = std::fs::remove_file(state_path(&run));
        println!("removed lab {run} ({n} namespaces)");
        removed += 1;
    }
    println!("{removed} lab(s) removed");
    Ok(ExitCode::SUCCESS)
}
