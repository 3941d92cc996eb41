//! The matrix report: a markdown table for people and JSON for programs.

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
*trials*: cells run as several trials (fresh lab and nodes each, one message each way) show successful/run, and how many were direct; \
*first msg ms*: from queueing the first message that arrived to its arrival at the other application (trials: median); \
*direct after ms*: from alice's first send to the first `connected`/`path` event with a direct path (trials: median); \
*bulk*: the bulk transfer in 1 MiB framed messages, first byte queued to last byte received; \
*messages*: delivered/failed/lost/corrupted/duplicated of sent (trials: all trials together).\n\n");
        md.push_str("| cell (alice dials) | expected | connected | path | dialled by | trials (direct) | first msg ms | direct after ms | bulk MiB/s | messages | verdict |\n");
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
                format!("{}/{} ({})", t.successes, t.trials, t.direct)
            });
            let bulk = match &r.rebind {
                Some(rb) => opt(rb.throughput_mib_s, 1),
                None => opt(r.throughput_mib_s, 1),
            };
            let m = &r.messages;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}/{}/{}/{} of {} | {} |",
                r.cell,
                expected,
                if r.connected { "yes" } else { "no" },
                r.path.as_deref().unwrap_or("-"),
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
                row.verdict.label()
            );
        }
        for row in &self.rows {
            if let Some(rb) = &row.result.rebind {
                rebind_section(&mut md, &row.result.cell, rb);
            }
        }
        let trial_rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.result.trials.is_some())
            .collect();
        if !trial_rows.is_empty() {
            md.push_str(
                "\n## Trials\n\nPer trial: outcome, dialled by, first message ms, seconds.\n\n",
            );
            for row in trial_rows {
                let t = row.result.trials.as_ref().expect("filtered");
                let runs: Vec<String> = t
                    .runs
                    .iter()
                    .map(|tr| {
                        format!(
                            "{} {} {} {:.0}s",
                            if tr.success { "ok" } else { "FAILED" },
                            tr.dialled_by.as_deref().unwrap_or("-"),
                            opt(tr.first_message_ms, 0),
                            tr.duration_s
                        )
                    })
                    .collect();
                let _ = writeln!(
                    md,
                    "- **{}**: {}/{} succeeded, {} direct, {} on alice's first dial: {}",
                    row.result.cell,
                    t.successes,
                    t.trials,
                    t.direct,
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
        for (name, text) in [("matrix.md", self.markdown()), ("matrix.json", json)] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| NetsimError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(())
    }
}

/// The NAT rebinding cell in detail.
fn rebind_section(md: &mut String, cell: &str, r: &RebindResult) {
    let title = match r.lan_before {
        Some(_) => "Address change",
        None => "NAT rebinding",
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
            "rebound",
            match (r.rebound_after_bytes, r.rebound_at_ms, r.new_ports) {
                _ if r.lan_before.is_some() => String::new(),
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
            "throughput",
            format!("{} MiB/s", opt(r.throughput_mib_s, 1)),
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
            survives_rebind: None,
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
