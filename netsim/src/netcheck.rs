//! `netsim netcheck`: runs `p2p-node netcheck --json` behind every NAT the lab builds (the
//! `all-kinds` lab of `netsim check`) against a real `p2p-rendezvous`, and compares its
//! verdict with what the lab is configured to be: mapping and filtering from
//! [`crate::topology::LabPlan::expected_behaviour`], UDP and the relay where UDP is not
//! blocked, and no port mapping (no router of the lab speaks NAT-PMP, PCP or UPnP).
//!
//! Hairpinning: `yes` for a public host, else the outermost router's `hairpin` flag. netcheck's
//! test is from one host to itself (a second socket to the first socket's public address); the
//! lab's routers bridge such a DNATed frame back out of the port it came in on (br_netfilter),
//! so a hairpinning router's LAN ports are in hairpin mode (`Lab::build`).
//!
//! The comparison ([`expected_for`], [`compare`]) is pure and unit-tested without root.

use crate::classify::{FilteringBehaviour, MappingBehaviour};
use crate::error::{NetsimError, Result};
use crate::lab::Lab;
use crate::matrix::cell::CellConfig;
use crate::matrix::{locate_binary, session};
use crate::scenario;
use crate::topology::{LabPlan, NodePlan, Role, RENDEZVOUS_ADDRS};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `netsim netcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetcheckArgs {
    /// p2p-node binary [default: $P2P_NODE_BIN, else next to netsim, else target/debug].
    #[arg(long)]
    pub node_bin: Option<PathBuf>,
    /// p2p-rendezvous binary [default: $P2P_RENDEZVOUS_BIN, else as for --node-bin].
    #[arg(long)]
    pub rendezvous_bin: Option<PathBuf>,
    /// Also write netcheck.md and netcheck.json into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What netcheck must say behind one host's network (`None`: the lab does not know).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expected {
    pub udp: bool,
    pub mapping: &'static str,
    pub filtering: &'static str,
    pub hairpinning: Option<bool>,
}

/// One host's result.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub host: String,
    pub expected: Expected,
    pub udp: Option<bool>,
    pub mapping: Option<String>,
    pub filtering: Option<String>,
    pub nat_type: Option<String>,
    pub hairpinning: Option<bool>,
    pub relay: Option<bool>,
    pub tls: Option<bool>,
    pub rtt_ms: Option<f64>,
    pub problems: Vec<String>,
}

fn mapping_word(m: MappingBehaviour) -> &'static str {
    match m {
        MappingBehaviour::EndpointIndependent => "endpoint-independent",
        // The node's detection tells independent from dependent only.
        _ => "endpoint-dependent",
    }
}

fn filtering_word(f: FilteringBehaviour) -> &'static str {
    match f {
        FilteringBehaviour::EndpointIndependent => "endpoint-independent",
        FilteringBehaviour::AddressDependent => "address-dependent",
        FilteringBehaviour::AddressAndPortDependent => "address-and-port-dependent",
    }
}

/// What the lab says netcheck must report behind `node`.
pub fn expected_for(plan: &LabPlan, node: &NodePlan) -> Expected {
    let Some(behaviour) = plan.expected_behaviour(node) else {
        return Expected {
            udp: false,
            mapping: "unknown",
            filtering: "unknown",
            hairpinning: None,
        };
    };
    if !behaviour.translated {
        return Expected {
            udp: true,
            mapping: "public",
            filtering: "endpoint-independent",
            // A datagram to one's own address is delivered locally.
            hairpinning: Some(true),
        };
    }
    // The outermost router's public address is the mapped one: it must loop datagrams back.
    let mut outermost = plan.router_of(node);
    while let Some(next) = outermost.and_then(|r| plan.router_of(r)) {
        outermost = Some(next);
    }
    let hairpin = outermost
        .and_then(|r| r.router.as_ref())
        .map(|r| r.config.hairpin);
    Expected {
        udp: true,
        mapping: mapping_word(behaviour.mapping),
        filtering: filtering_word(behaviour.filtering),
        hairpinning: hairpin,
    }
}

/// Compares netcheck's JSON report with `expected`.
pub fn compare(host: &str, expected: Expected, report: &Value) -> Verdict {
    let text = |key: &str| report[key].as_str().map(str::to_string);
    let mut verdict = Verdict {
        host: host.to_string(),
        udp: report["udp"].as_bool(),
        mapping: text("mapping"),
        filtering: text("filtering"),
        nat_type: text("nat_type"),
        hairpinning: report["hairpinning"].as_bool(),
        relay: report["relay"]["reachable"].as_bool(),
        tls: report["rendezvous_tls"]["reachable"].as_bool(),
        rtt_ms: report["rendezvous_udp"]["rtt_ms"].as_f64(),
        problems: Vec::new(),
        expected: expected.clone(),
    };
    let mut problems = Vec::new();
    let mut problem = |what: &str, got: String, want: String| {
        if got != want {
            problems.push(format!("{what}: netcheck says {got}, the lab is {want}"));
        }
    };
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(missing)".into());
    let show_bool = |v: Option<bool>| v.map_or("(none)".into(), |b| b.to_string());
    problem(
        "rendezvous reachable",
        show_bool(report["reachable"].as_bool()),
        "true".into(),
    );
    problem("udp", show_bool(verdict.udp), expected.udp.to_string());
    problem("mapping", show(&verdict.mapping), expected.mapping.into());
    problem(
        "filtering",
        show(&verdict.filtering),
        expected.filtering.into(),
    );
    if expected.hairpinning.is_some() {
        problem(
            "hairpinning",
            show_bool(verdict.hairpinning),
            show_bool(expected.hairpinning),
        );
    }
    problem("TLS port reachable", show_bool(verdict.tls), "true".into());
    if expected.udp {
        problem("relay allocated", show_bool(verdict.relay), "true".into());
    }
    problem(
        "port mapping",
        show_bool(report["port_mapping_available"].as_bool()),
        "false".into(),
    );
    verdict.problems = problems;
    verdict
}

/// Runs netcheck on every host of the all-kinds lab; non-zero exit if any verdict is wrong.
pub fn run_cli(args: &NetcheckArgs) -> Result<ExitCode> {
    crate::netns::require_root_and_tools()?;
    let node_bin = locate_binary(args.node_bin.as_deref(), "P2P_NODE_BIN", "p2p-node")?;
    let rendezvous_bin = locate_binary(
        args.rendezvous_bin.as_deref(),
        "P2P_RENDEZVOUS_BIN",
        "p2p-rendezvous",
    )?;
    let started = Instant::now();
    let lab = scenario::all_kinds().build()?;
    let work = std::env::temp_dir().join(format!("netsim-netcheck-{}", lab.run_id()));
    std::fs::create_dir_all(&work).map_err(|e| NetsimError::io("creating the work dir", e))?;
    let verdicts = run_in(&lab, node_bin, rendezvous_bin, &work);
    let _ = std::fs::remove_dir_all(&work);
    lab.teardown()?;
    let verdicts = verdicts?;
    let table = markdown(&verdicts);
    print!("{table}");
    let failed = verdicts.iter().filter(|v| !v.problems.is_empty()).count();
    println!(
        "netcheck: {} hosts, {failed} wrong, in {:.1} s",
        verdicts.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| NetsimError::io("creating --out", e))?;
        let json = serde_json::to_string_pretty(&verdicts)
            .map_err(|e| NetsimError::Matrix(e.to_string()))?;
        for (name, body) in [("netcheck.md", table), ("netcheck.json", json)] {
            std::fs::write(out.join(name), body)
                .map_err(|e| NetsimError::io(format!("writing {name}"), e))?;
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_in(
    lab: &Lab,
    node_bin: PathBuf,
    rendezvous_bin: PathBuf,
    work: &std::path::Path,
) -> Result<Vec<Verdict>> {
    let cfg = CellConfig {
        node_bin: node_bin.clone(),
        rendezvous_bin,
        work_dir: work.to_path_buf(),
        ready_timeout: Duration::from_secs(15),
        message_timeout: Duration::ZERO,
        bulk_bytes: 0,
        bulk_timeout: Duration::ZERO,
        rebind_bytes: 0,
        rebind_wait: Duration::ZERO,
        node_args: Vec::new(),
        link: None,
    };
    let (rendezvous_id, _rendezvous) =
        session::start_rendezvous(&cfg, lab, work, &[]).map_err(NetsimError::Matrix)?;
    let target = format!(
        "{rendezvous_id}@{}:{}",
        RENDEZVOUS_ADDRS[0],
        session::RENDEZVOUS_PORT
    );
    let plan = lab.plan();
    let hosts: Vec<&NodePlan> = plan.nodes.iter().filter(|n| n.role == Role::Host).collect();
    // All at once: each host is in its own namespace; every probe is bounded in time.
    let mut children = Vec::new();
    for host in &hosts {
        let child = lab
            .command(&host.name, &node_bin)?
            .args(["netcheck", "--json", "--rendezvous", &target])
            .env("XDG_CONFIG_HOME", work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetsimError::io("starting p2p-node netcheck", e))?;
        children.push((host, child));
    }
    let mut verdicts = Vec::new();
    for (host, child) in children {
        let expected = expected_for(plan, host);
        let out = child
            .wait_with_output()
            .map_err(|e| NetsimError::io("waiting for p2p-node netcheck", e))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        let mut verdict = compare(&host.name, expected, &report);
        if report.is_null() {
            verdict.problems.insert(
                0,
                format!(
                    "no JSON report (exit {:?}): {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
        }
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

/// The verdict table.
pub fn markdown(verdicts: &[Verdict]) -> String {
    let mut out = String::from(
        "| host | lab: mapping / filtering / hairpin | netcheck: mapping / filtering / hairpin | NAT type | relay | TLS | verdict |\n|---|---|---|---|---|---|---|\n",
    );
    let b = |v: Option<bool>| v.map_or("-".to_string(), |b| if b { "yes" } else { "no" }.into());
    for v in verdicts {
        out.push_str(&format!(
            "| {} | {} / {} / {} | {} / {} / {} | {} | {} | {} | {} |\n",
            v.host,
            v.expected.mapping,
            v.expected.filtering,
            b(v.expected.hairpinning),
            v.mapping.as_deref().unwrap_or("-"),
            v.filtering.as_deref().unwrap_or("-"),
            b(v.hairpinning),
            v.nat_type.as_deref().unwrap_or("-"),
            b(v.relay),
            b(v.tls),
            if v.problems.is_empty() {
                "ok".to_string()
            } else {
                format!("WRONG: {}", v.problems.join("; "))
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{NatKind, RouterConfig};

    fn plan() -> LabPlan {
        crate::lab::LabBuilder::default()
            .public_host("pub")
            .router(
                "r",
                RouterConfig::new(NatKind::RestrictedCone).hairpin(true),
            )
            .host_behind("h", "r")
            .router(
                "fw",
                RouterConfig::new(NatKind::PortRestrictedCone).block_udp(true),
            )
            .host_behind("b", "fw")
            .router("s", RouterConfig::new(NatKind::Symmetric))
            .host_behind("sy", "s")
            .topology()
            .plan("t1")
            .unwrap()
    }

    #[test]
    fn the_lab_plan_gives_the_expected_verdicts() {
        let plan = plan();
        let e = |name| expected_for(&plan, plan.node(name).unwrap());
        assert_eq!(e("pub").mapping, "public");
        assert_eq!(e("pub").hairpinning, Some(true));
        let h = e("h");
        assert_eq!(
            (h.mapping, h.filtering, h.hairpinning),
            ("endpoint-independent", "address-dependent", Some(true))
        );
        let sy = e("sy");
        assert_eq!(
            (sy.mapping, sy.filtering, sy.hairpinning),
            (
                "endpoint-dependent",
                "address-and-port-dependent",
                Some(false)
            )
        );
        assert!(!e("b").udp);
        assert_eq!(e("b").mapping, "unknown");
    }

    #[test]
    fn a_report_that_disagrees_is_wrong() {
        let plan = plan();
        let expected = expected_for(&plan, plan.node("h").unwrap());
        let mut report = serde_json::json!({
            "reachable": true, "udp": true, "mapping": "endpoint-independent",
            "filtering": "address-dependent", "hairpinning": true, "nat_type": "restricted cone",
            "relay": {"reachable": true}, "rendezvous_tls": {"reachable": true},
            "port_mapping_available": false,
        });
        assert_eq!(
            compare("h", expected.clone(), &report).problems,
            Vec::<String>::new()
        );
        report["filtering"] = "address-and-port-dependent".into();
        let wrong = compare("h", expected.clone(), &report);
        assert_eq!(wrong.problems.len(), 1, "{:?}", wrong.problems);
        assert!(markdown(&[wrong]).contains("WRONG: filtering"));
        let missing = compare("h", expected, &Value::Null);
        assert!(missing.problems.len() >= 3);
    }
}
