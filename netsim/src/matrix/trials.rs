//! Cells run as several trials, to measure how often a pair connects rather than whether it
//! did once. Each trial builds a fresh lab (fresh NAT state: a reused router would keep the
//! conntrack entries, and with them the poisoning, of the trial before), starts a fresh
//! rendezvous and two nodes with new identities, and sends one message each way (no bulk).
//! A trial that connected then waits up to [`SETTLE`] from alice's first send for both sides
//! to report a direct path, so that where punching works (the birthday method takes 2-3 s)
//! the trial ends direct; it is judged by the path it ends on. Cells expected to end relayed
//! skip the wait (they are judged on the path they connected on, so one that would have gone
//! direct later is not noticed as better than expected).
//! A trial succeeds when both messages arrive intact and both senders report `delivered`. A
//! failed dial ends its wait at the node's `failed` event, so a failed trial costs about two
//! probe timeouts.

use super::cell::{in_lab, CellConfig, CellResult, CellSpec, MessageTally};
use crate::error::Result;
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long after alice's first send a trial that connected waits for both sides to be on a
/// direct path before it is judged (a pair that cannot punch waits all of it).
pub const SETTLE: Duration = Duration::from_secs(4);

/// The outcome of a cell's trials.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrialSummary {
    /// Trials run.
    pub trials: usize,
    /// Trials where both messages arrived intact.
    pub successes: usize,
    /// Trials whose connection ended direct (its sides' last `connected`/`path` events).
    pub direct: usize,
    /// Trials whose first `connected` event was relayed.
    pub relayed_at_connect: usize,
    /// Trials where alice's own dial connected.
    pub first_try: usize,
    pub runs: Vec<TrialRecord>,
}

/// One trial.
#[derive(Debug, Clone, Serialize)]
pub struct TrialRecord {
    pub success: bool,
    pub connected: bool,
    /// The path the connection ended on.
    pub path: Option<String>,
    /// The path of the first `connected` event.
    pub path_at_connect: Option<String>,
    pub dialled_by: Option<String>,
    pub first_message_ms: Option<f64>,
    pub time_to_direct_ms: Option<f64>,
    pub messages: MessageTally,
    pub lab_problem: Option<String>,
    pub duration_s: f64,
}

/// Runs `n` trials of a cell and sums them up in one result: connected if any trial
/// connected (path, remote address and dialler of the first that did), the median time to
/// the first message and to a direct path, every message of every trial in the tally, and
/// each trial's problems and notes prefixed with its number.
pub fn run_trials(
    cfg: &CellConfig,
    spec: &CellSpec,
    n: usize,
    settle: Duration,
) -> Result<CellResult> {
    let started = Instant::now();
    let mut result = CellResult::new(&spec.name);
    let mut summary = TrialSummary::default();
    for k in 1..=n.max(1) {
        if crate::signals::interrupted() {
            result
                .notes
                .push(format!("interrupted after {} trials", k - 1));
            break;
        }
        let dir = cfg.work_dir.join(&spec.name).join(format!("trial-{k}"));
        let mut one = CellResult::new(&spec.name);
        let t = Instant::now();
        in_lab(
            cfg,
            spec.builder.clone(),
            &dir,
            &super::cell::LabSetup::default(),
            &mut one,
            |_, session, one, _| {
                let hello = session.hello(cfg.message_timeout);
                if hello.any() && !settle.is_zero() {
                    // Give punching (the birthday method takes 2-3 s) its chance to replace a
                    // relayed path before judging where the connection ends.
                    super::rebind::wait_direct(session, hello.t0, hello.t0 + settle);
                }
                session.finish(&hello, Duration::from_secs(2), one);
                Ok(())
            },
        )?;
        let record = TrialRecord {
            success: one.messages.sent == 2
                && one.messages.delivered == 2
                && one.messages.unconfirmed == 0,
            connected: one.connected,
            path: one.path.clone(),
            path_at_connect: one.path_at_connect.clone(),
            dialled_by: one.dialled_by.clone(),
            first_message_ms: one.first_message_ms,
            time_to_direct_ms: one.time_to_direct_ms,
            messages: one.messages.clone(),
            lab_problem: one.lab_problem.clone(),
            duration_s: t.elapsed().as_secs_f64(),
        };
        merge(&mut result, &mut summary, k, one, record);
    }
    let medians =
        |f: fn(&TrialRecord) -> Option<f64>| median(summary.runs.iter().filter_map(f).collect());
    result.first_message_ms = medians(|r| r.first_message_ms);
    result.time_to_direct_ms = medians(|r| r.time_to_direct_ms);
    let ends: Vec<&str> = summary
        .runs
        .iter()
        .filter_map(|r| r.path.as_deref())
        .collect();
    result.path = match (
        ends.contains(&"direct"),
        ends.iter().any(|p| *p != "direct"),
    ) {
        (true, true) => Some("direct/relayed".into()),
        _ => ends.first().map(|p| p.to_string()),
    };
    result.trials = Some(summary);
    result.duration_s = started.elapsed().as_secs_f64();
    Ok(result)
}

fn merge(
    result: &mut CellResult,
    summary: &mut TrialSummary,
    k: usize,
    one: CellResult,
    record: TrialRecord,
) {
    if k == 1 {
        result.alice_ready = one.alice_ready;
        result.bob_ready = one.bob_ready;
    }
    if let (None, Some(problem)) = (&result.lab_problem, &one.lab_problem) {
        result.lab_problem = Some(format!("trial {k}: {problem}"));
    }
    for m in one.observed_mismatches {
        result.observed_mismatches.push(format!("trial {k}: {m}"));
    }
    for note in one.notes {
        result.notes.push(format!("trial {k}: {note}"));
    }
    if one.connected && !result.connected {
        result.connected = true;
        result.path_at_connect = one.path_at_connect;
        result.remote_addr = one.remote_addr;
        result.dialled_by = one.dialled_by;
    }
    result.messages.add(&record.messages);
    summary.trials += 1;
    summary.successes += usize::from(record.success);
    summary.direct += usize::from(record.connected && record.path.as_deref() == Some("direct"));
    summary.relayed_at_connect +=
        usize::from(record.connected && record.path_at_connect.as_deref() == Some("relayed"));
    summary.first_try +=
        usize::from(record.connected && record.dialled_by.as_deref() == Some("alice"));
    summary.runs.push(record);
}

/// The median of some values (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0]), Some(3.0));
        assert_eq!(median(vec![5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(
            median(vec![f64::NAN, 1.0, 2.0]).map(|m| m.is_nan()),
            Some(false)
        );
    }
}
