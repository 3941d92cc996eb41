//! The matrix report: a markdown table for people, JSON for programs, and an SVG picture
//! (`super::svg`).

use super::cell::CellResult;
use super::expected::{Expectation, Verdict};
use super::rebind::RebindResult;
use crate::error::{NetsimError, Result};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;

/// One row: what was expected, what happened, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub expected: Expectation,
    pub result: CellResult,
    pub verdict: Verdict,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line that produced the report.
    pub command: String,
    /// Seconds since the Unix epoch when the matrix finished.
    pub finished_unix: u64,
    pub node_bin: String,
    pub rendezvous_bin: String,
    /// Impairment of both peers' uplinks, if any.
    pub link: Option<crate::topology::LinkImpairment>,
    pub duration_s: f64,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Verdict) -> bool) -> usize {
        self.rows.iter().filter(|r| f(&r.verdict)).count()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} cells: {} as expected, {} better than expected, {} worse than expected ({:.0} s)",
            self.rows.len(),
            self.count(|v| matches!(v, Verdict::AsExpected)),
            self.count(|v| matches!(v, Verdict::Better(_))),
            self.count(|v| matches!(v, Verdict::Worse(_))),
            self.duration_s
        )
    }

    /// Renders the markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# netsim matrix\n");
        let _ = writeln!(md, "Command: `{}`  ", self.command);
        let _ = writeln!(
            md,
            "Finished: {} (Unix time)  \nNode: `{}`  \nRendezvous: `{}`\n",
            self.finished_unix, self.node_bin, self.rendezvous_bin
        );
        if let Some(link) = &self.link {
            let _ = writeln!(
                md,
                "Peers' uplinks impaired: {}% loss, {} ms delay each way, {} kbit/s (0 = no cap)\n",
                link.loss_percent, link.delay_ms, link.rate_kbit
            );
        }
        let _ = writeln!(md, "**{}**\n", self.summary());
        md.push_str("Cell `A+B`: alice behind A, bob behind B; alice sends first (dialling bob), then bob sends to alice \
(dialling her if no connection exists). Every pair of kinds runs in both directions. \
*path*: where the connection ENDED (each side's last `connected`/`path` event for the other; direct only if both ended direct), which the verdict judges, after the path of the first `connected` event (`relayed -> direct`: connected through the relay, then a direct path took over); \
*trials*: cells run as several trials (fresh lab and nodes each, one message each way) show successful/run, how many ended direct, and how many connected relayed; \
*first msg ms*: from queueing the first message that arrived to its arrival at the other application (trials: median); \
*direct after ms*: from alice's first send to the first `connected`/`path` event with a direct path (trials: median); \
*bulk*: the bulk transfer in 1 MiB framed messages, first byte queued to last byte received; \
*messages*: delivered/failed/lost/corrupted/duplicated of sent, and how many arrived without a `delivered` event for their sender (unconfirmed; a failure) (trials: all trials together).\n\n");
        md.push_str("| cell (alice dials) | expected | connected | path (connect -> end) | dialled by | trials (ended direct, connected relayed) | first msg ms | direct after ms | bulk MiB/s | messages | verdict |\n");
        md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        for row in &self.rows {
            let r = &row.result;
            let e = &row.expected;
            let mut expected = if e.connected {
                e.path.clone().unwrap_or_default()
            } else {
                "no connection".into()
            };
            if let Some(t) = &r.trials {
                let (at_least, _) = e.success_bounds(t.trials);
                let _ = write!(expected, ", >= {at_least}/{} trials", t.trials);
                if let Some(k) = e.direct_bound(t.trials) {
                    let _ = write!(expected, ", >= {k} direct");
                }
            }
            if let Some(survives) = e.survives_rebind {
                let _ = write!(
                    expected,
                    ", {} the rebinding",
                    if survives {
                        "survives"
                    } else {
                        "does not survive"
                    }
                );
            }
            let trials = r.trials.as_ref().map_or("-".into(), |t| {
                format!(
                    "{}/{} ({}, {})",
                    t.successes, t.trials, t.direct, t.relayed_at_connect
                )
            });
            let path = match (r.path_at_connect.as_deref(), r.path.as_deref()) {
                (Some(a), Some(b)) if a != b => format!("{a} -> {b}"),
                (_, Some(b)) => b.to_string(),
                _ => "-".into(),
            };
            let bulk = match &r.rebind {
                Some(rb) => opt(rb.throughput_mib_s, 1),
                None => opt(r.throughput_mib_s, 1),
            };
            let m = &r.messages;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}/{}/{}/{} of {}{} | {} |",
                r.cell,
                expected,
                if r.connected { "yes" } else { "no" },
                path,
                r.dialled_by.as_deref().unwrap_or("-"),
                trials,
                opt(r.first_message_ms, 1),
                opt(r.time_to_direct_ms, 1),
                bulk,
                m.delivered,
                m.failed,
                m.lost,
                m.corrupted,
                m.duplicated,
                m.sent,
                if m.unconfirmed > 0 {
                    format!(", {} unconfirmed", m.unconfirmed)
                } else {
                    String::new()
                },
                row.verdict.label()
            );
        }
        for row in &self.rows {
            if let Some(rb) = &row.result.rebind {
                rebind_section(&mut md, &row.result.cell, rb);
            }
        }
        for row in &self.rows {
            if let Some(b) = &row.result.relay_bench {
                relay_bench_section(&mut md, &row.result.cell, b);
            }
        }
        let trial_rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.result.trials.is_some())
            .collect();
        if !trial_rows.is_empty() {
            md.push_str(
                "\n## Trials\n\nPer trial: outcome, dialled by, path (at connect -> at end), first message ms, seconds.\n\n",
            );
            for row in trial_rows {
                let t = row.result.trials.as_ref().expect("filtered");
                let runs: Vec<String> = t
                    .runs
                    .iter()
                    .map(|tr| {
                        let path = match (tr.path_at_connect.as_deref(), tr.path.as_deref()) {
                            (Some(a), Some(b)) if a != b => format!("{a}->{b}"),
                            (_, Some(b)) => b.to_string(),
                            _ => "-".into(),
                        };
                        format!(
                            "{} {} {path} {} {:.0}s",
                            if tr.success { "ok" } else { "FAILED" },
                            tr.dialled_by.as_deref().unwrap_or("-"),
                            opt(tr.first_message_ms, 0),
                            tr.duration_s
                        )
                    })
                    .collect();
                let _ = writeln!(
                    md,
                    "- **{}**: {}/{} succeeded, {} ended direct, {} connected relayed, {} on alice's first dial: {}",
                    row.result.cell,
                    t.successes,
                    t.trials,
                    t.direct,
                    t.relayed_at_connect,
                    t.first_try,
                    runs.join("; ")
                );
            }
        }
        let details: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| !matches!(r.verdict, Verdict::AsExpected) || !r.result.notes.is_empty())
            .collect();
        if !details.is_empty() {
            md.push_str("\n## Details\n\n");
            for row in details {
                let reasons = match &row.verdict {
                    Verdict::AsExpected => Vec::new(),
                    Verdict::Better(r) | Verdict::Worse(r) => r.clone(),
                };
                let _ = writeln!(md, "- **{}** ({}):", row.result.cell, row.verdict.label());
                for reason in reasons.iter().chain(row.result.notes.iter()) {
                    let _ = writeln!(md, "  - {reason}");
                }
            }
        }
        md.push_str("\n## Ready events\n\n| cell | alice | bob |\n|---|---|---|\n");
        for row in &self.rows {
            let _ = writeln!(
                md,
                "| {} | `{}` | `{}` |",
                row.result.cell, row.result.alice_ready, row.result.bob_ready
            );
        }
        md
    }

    /// Writes `matrix.md` and `matrix.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| NetsimError::io(format!("creating {}", dir.display()), e))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| NetsimError::Format {
            context: "serialising the matrix report".into(),
            message: e.to_string(),
        })?;
        let svg = super::svg::render(self);
        for (name, text) in [
            ("matrix.md", self.markdown()),
            ("matrix.json", json),
            ("matrix.svg", svg),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| NetsimError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }
}

/// The NAT rebinding cell in detail.
fn rebind_section(md: &mut String, cell: &str, r: &RebindResult) {
    let title = match (r.lan_before, &r.cut) {
        (_, Some(_)) => "Direct path cut (relay fallback)",
        (Some(_), _) => "Address change",
        _ => "NAT rebinding",
    };
    let _ = writeln!(md, "\n## {title} (`{cell}`)\n");
    let addr = |a: Option<std::net::SocketAddrV4>| a.map_or("-".into(), |a| a.to_string());
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let yes = |b: bool| if b { "yes" } else { "no" };
    let lines = [
        (
            "transfer",
            format!(
                "{:.0} MiB alice -> bob in {} messages",
                mib(r.bytes),
                r.messages
            ),
        ),
        (
            "moved",
            match (
                r.lan_before,
                r.lan_after,
                r.rebound_after_bytes,
                r.rebound_at_ms,
            ) {
                (Some(old), Some(new), Some(b), Some(t)) => format!(
                    "alice from {old} to {new} after {:.1} MiB had arrived ({t:.0} ms in)",
                    mib(b)
                ),
                _ => String::new(),
            },
        ),
        (
            "cut",
            match (&r.cut, r.rebound_after_bytes, r.rebound_at_ms) {
                (Some(cut), Some(b), Some(t)) => format!(
                    "{cut} after {:.1} MiB had arrived ({t:.0} ms in); lifted {} ms after the cut, once the transfer was done",
                    mib(b),
                    opt(r.restored_at_ms, 0)
                ),
                _ => String::new(),
            },
        ),
        (
            "rebound",
            match (r.rebound_after_bytes, r.rebound_at_ms, r.new_ports) {
                _ if r.lan_before.is_some() || r.cut.is_some() => String::new(),
                (Some(b), Some(t), Some(p)) => format!(
                    "`{}` after {:.1} MiB had arrived ({t:.0} ms in); UDP now mapped to {}:{}-{}",
                    r.router,
                    mib(b),
                    r.public_ip.map_or("?".into(), |ip| ip.to_string()),
                    p.first,
                    p.last
                ),
                _ => "no".into(),
            },
        ),
        (
            "alice's public address (conntrack)",
            format!(
                "{} before, {} after",
                addr(r.public_before),
                addr(r.public_after)
            ),
        ),
        ("alice's mappings after", r.mappings_after.join(", ")),
        (
            "bob saw alice at",
            r.address_before.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "arrived",
            format!(
                "{} of {} messages, {:.1} MiB, in order: {}, resumed afterwards: {}",
                r.messages_arrived,
                r.messages,
                mib(r.bytes_arrived),
                yes(r.in_order),
                yes(r.resumed)
            ),
        ),
        ("longest stall", format!("{} ms", opt(r.stall_ms, 0))),
        (
            "fell back to the relay",
            match r.fallback_ms {
                Some(v) => format!("{v:.0} ms after the disruption (first `path <peer> relayed`)"),
                None => "no".into(),
            },
        ),
        (
            "direct again",
            match (r.back_direct_ms, r.cut.is_some()) {
                (Some(v), true) => format!("{v:.0} ms after the cut was lifted"),
                (Some(v), false) => format!("{v:.0} ms after the disruption"),
                (None, _) => "no (within the wait, or the transfer did not complete)".into(),
            },
        ),
        (
            "throughput",
            format!(
                "{} MiB/s overall; {} MiB/s after the disruption (stall included)",
                opt(r.throughput_mib_s, 1),
                opt(r.after_mib_s, 1)
            ),
        ),
        (
            "path events",
            if r.path_events.is_empty() {
                "none".into()
            } else {
                r.path_events.join("; ")
            },
        ),
        (
            "bob saw alice's new address",
            yes(r.bob_saw_new_address).into(),
        ),
        ("survived", yes(r.survived).into()),
        ("problems", r.problems.join("; ")),
    ];
    for (what, value) in lines {
        if !value.is_empty() {
            let _ = writeln!(md, "- {what}: {value}");
        }
    }
}

/// The relayed-throughput cell in detail.
fn relay_bench_section(md: &mut String, cell: &str, b: &super::relaybench::RelayBenchResult) {
    let _ = writeln!(md, "\n## Relayed throughput (`{cell}`)\n");
    let _ = writeln!(
        md,
        "- transfer: {} MiB alice -> bob, once over the direct path ({}), once by a `--relay-only` pair ({}); rendezvous with `--turn-max-bps 0`",
        b.bytes >> 20,
        b.direct_path.as_deref().unwrap_or("-"),
        b.relayed_path.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        md,
        "- direct: {} MiB/s; relayed: {} MiB/s ({}% of direct; requirement >= 70%: {})",
        opt(b.direct_mib_s, 1),
        opt(b.relayed_mib_s, 1),
        opt(b.relayed_percent, 0),
        match b.relayed_percent {
            Some(p) if p >= 70.0 => "met",
            Some(_) => "NOT met",
            None => "-",
        }
    );
    let _ = writeln!(
        md,
        "- over the TLS relay (both nodes `--relay-only --rendezvous-over tls`, ended {}): {} MiB/s ({}% of direct)",
        b.tls_path.as_deref().unwrap_or("-"),
        opt(b.tls_mib_s, 1),
        opt(b.tls_percent, 0)
    );
    let _ = writeln!(
        md,
        "- rendezvous CPU (user + system) during the relayed transfer: {} s, {} s per GiB relayed",
        opt(b.rendezvous_cpu_s, 2),
        opt(b.cpu_s_per_gib, 1)
    );
    if !b.problems.is_empty() {
        let _ = writeln!(md, "- problems: {}", b.problems.join("; "));
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_has_a_row_per_cell_and_explains_non_matches() {
        let expected = Expectation {
            pair: "public+public".into(),
            connected: false,
            path: None,
            first_try: false,
            trials: 1,
            min_success: None,
            direct_min: None,
            survives_rebind: None,
            relayed_min_percent: None,
        };
        let result = CellResult {
            cell: "public+public".into(),
            connected: true,
            path: Some("direct".into()),
            throughput_mib_s: Some(12.345),
            ..CellResult::default()
        };
        let verdict = super::super::expected::verdict(&expected, &result);
        let report = Report {
            command: "netsim matrix".into(),
            finished_unix: 0,
            node_bin: "n".into(),
            rendezvous_bin: "r".into(),
            link: None,
            duration_s: 1.0,
            rows: vec![Row {
                expected,
                result,
                verdict,
            }],
        };
        let md = report.markdown();
        assert!(md.contains("| public+public | no connection | yes | direct |"));
        assert!(md.contains("12.3"));
        assert!(md.contains("better than expected"));
        assert!(md.contains("## Details"));
        assert!(report.summary().contains("1 better than expected"));
    }
}
