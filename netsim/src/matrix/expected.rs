//! Expected outcomes of matrix cells (data in `netsim/expected.toml`) and the verdict of a
//! measured cell against them: a pure comparison, unit-tested.

use super::cell::CellResult;
use crate::error::{NetsimError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What one cell is expected to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Cell name, e.g. `public+symmetric` or `same-nat-hairpin`.
    pub pair: String,
    pub connected: bool,
    /// `direct` or `relayed` when `connected`: the path the connection must END on (a
    /// connection that starts relayed and turns direct is direct).
    pub path: Option<String>,
    /// alice's own dial connects, so her first message is delivered (default false: the cell
    /// may connect only when bob dials back).
    #[serde(default)]
    pub first_try: bool,
    /// Run the cell as this many trials, each a fresh lab and fresh nodes sending one
    /// message each way (default 1: one run with the bulk transfer). `netsim matrix` caps it
    /// with --max-trials and overrides it with --trials.
    #[serde(default = "one")]
    pub trials: usize,
    /// Trials (of `trials`) that must succeed; default all of them when `connected`, else
    /// none. With fewer trials run than written, it scales down (rounded down).
    pub min_success: Option<usize>,
    /// Trial cells with `path = "direct"` only: trials (of `trials`, scaled down like
    /// `min_success`) that must end direct; the others may end relayed (pairs whose punching
    /// works most of the time, e.g. the birthday method). Default: every trial that connects.
    pub direct_min: Option<usize>,
    /// Disruption cells only (NAT rebinding, address change, relay cut): whether the
    /// transfer survives the disruption (every byte arrives in order, every message
    /// `delivered`, none `failed`; relay cut: also a `path ... relayed` event and a direct
    /// path again once the cut is lifted).
    pub survives_rebind: Option<bool>,
    /// Relayed-throughput cell only: the relayed transfer's rate must be at least this
    /// percentage of the direct one's.
    pub relayed_min_percent: Option<u32>,
}

fn one() -> usize {
    1
}

/// Most trials a cell may ask for.
pub const MAX_TRIALS: usize = 1000;

impl Expectation {
    /// Successes expected of `trials` (of the file's `trials`, then scaled to `run`):
    /// (at least this many, more than this many is better than expected).
    pub fn success_bounds(&self, run: usize) -> (usize, usize) {
        let written = self.trials.max(1);
        let k = self
            .min_success
            .unwrap_or(if self.connected { written } else { 0 })
            .min(written);
        ((k * run) / written, (k * run).div_ceil(written))
    }

    /// Trials of `run` that must end direct under `direct_min` (scaled down, rounded down),
    /// or `None` when every connected trial must.
    pub fn direct_bound(&self, run: usize) -> Option<usize> {
        let written = self.trials.max(1);
        self.direct_min.map(|k| (k.min(written) * run) / written)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedFile {
    cell: Vec<Expectation>,
}

/// Parses the expectations file and checks it names each of `cells` exactly once.
pub fn parse(text: &str, cells: &[String]) -> Result<Vec<Expectation>> {
    let file: ExpectedFile = toml::from_str(text).map_err(|e| NetsimError::Format {
        context: "expected outcomes".into(),
        message: e.to_string(),
    })?;
    for e in &file.cell {
        if !cells.contains(&e.pair) {
            return Err(NetsimError::Matrix(format!(
                "expected outcomes name an unknown cell `{}`",
                e.pair
            )));
        }
        if e.connected != e.path.is_some() {
            return Err(NetsimError::Matrix(format!(
                "cell `{}`: give a path (direct or relayed) exactly when connected = true",
                e.pair
            )));
        }
        if e.trials == 0 || e.trials > MAX_TRIALS {
            return Err(NetsimError::Matrix(format!(
                "cell `{}`: trials must be 1..={MAX_TRIALS}",
                e.pair
            )));
        }
        match e.min_success {
            Some(_) if e.trials < 2 => {
                return Err(NetsimError::Matrix(format!(
                    "cell `{}`: min_success needs trials > 1",
                    e.pair
                )))
            }
            Some(k) if k > e.trials => {
                return Err(NetsimError::Matrix(format!(
                    "cell `{}`: min_success {k} is more than its {} trials",
                    e.pair, e.trials
                )))
            }
            _ => {}
        }
        if let Some(k) = e.direct_min {
            if e.trials < 2 || e.path.as_deref() != Some("direct") || k > e.trials {
                return Err(NetsimError::Matrix(format!(
                    "cell `{}`: direct_min needs trials > 1, path = \"direct\" and at most `trials`",
                    e.pair
                )));
            }
        }
        if let Some(p) = &e.path {
            if p != "direct" && p != "relayed" {
                return Err(NetsimError::Matrix(format!(
                    "cell `{}`: path must be direct or relayed, not `{p}`",
                    e.pair
                )));
            }
        }
    }
    for c in cells {
        let n = file.cell.iter().filter(|e| &e.pair == c).count();
        if n != 1 {
            return Err(NetsimError::Matrix(format!(
                "expected outcomes must name cell `{c}` exactly once (found {n})"
            )));
        }
    }
    Ok(file.cell)
}

/// Checks the expectations against what each cell is: `survives_rebind` is required for
/// the rebinding cells and refused elsewhere, and only `multi_trial` cells (those that can
/// run as trials) may ask for several.
pub fn check_kinds(
    expectations: &[Expectation],
    rebind_cells: &[String],
    multi_trial: &[String],
) -> Result<()> {
    for e in expectations {
        let rebind = rebind_cells.contains(&e.pair);
        if rebind != e.survives_rebind.is_some() {
            return Err(NetsimError::Matrix(format!(
                "cell `{}`: survives_rebind is {} for this cell",
                e.pair,
                if rebind {
                    "required"
                } else {
                    "only for NAT rebinding cells, not"
                }
            )));
        }
        if e.trials > 1 && !multi_trial.contains(&e.pair) {
            return Err(NetsimError::Matrix(format!(
                "cell `{}` runs once (it has a phase of its own): trials must be 1",
                e.pair
            )));
        }
    }
    Ok(())
}

/// Reads and parses the expectations file.
pub fn load(path: &Path, cells: &[String]) -> Result<Vec<Expectation>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NetsimError::io(format!("reading {}", path.display()), e))?;
    parse(&text, cells)
}

/// How a measured cell compares with its expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict", content = "reasons")]
pub enum Verdict {
    /// Exactly as expected.
    AsExpected,
    /// Better than expected (not a failure: update expected.toml).
    Better(Vec<String>),
    /// Worse than expected (the matrix fails).
    Worse(Vec<String>),
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::AsExpected => "as expected",
            Verdict::Better(_) => "better than expected",
            Verdict::Worse(_) => "WORSE than expected",
        }
    }
}

/// Compares a cell with its expectation. Anything lost, corrupted or duplicated, a message
/// that arrived without its sender reporting `delivered`, a failed lab self-check and a
/// message failing on a live connection are always worse; in a single-run cell expected to
/// connect, so is any failed message. The path judged is where the connection ended.
pub fn verdict(expect: &Expectation, got: &CellResult) -> Verdict {
    let mut worse = Vec::new();
    let mut better = Vec::new();
    if let Some(problem) = &got.lab_problem {
        worse.push(format!("lab problem: {problem}"));
    }
    if let Some(t) = &got.trials {
        // Trials are judged by their count of successes alone (and their paths).
        trial_verdict(expect, t, &mut worse, &mut better);
    } else {
        match (expect.connected, got.connected) {
            (true, false) => worse.push("expected to connect, did not".into()),
            (false, true) => better.push(format!(
                "connected ({}) where no connection was expected",
                got.path.as_deref().unwrap_or("?")
            )),
            (true, true) => match (expect.path.as_deref(), got.path.as_deref()) {
                (Some("direct"), Some(p)) if p != "direct" => worse.push(format!(
                    "ended {p}, expected direct (at connect: {})",
                    got.path_at_connect.as_deref().unwrap_or("?")
                )),
                (Some("relayed"), Some("direct")) => {
                    better.push("ended direct, expected relayed".into())
                }
                _ => {}
            },
            (false, false) => {}
        }
        let got_first_try = got.connected && got.dialled_by.as_deref() == Some("alice");
        match (expect.first_try, got_first_try) {
            (true, false) if got.connected => worse
                .push("alice's own dial failed; expected it to connect on the first try".into()),
            (false, true) => better.push("alice's own dial connected on the first try".into()),
            _ => {}
        }
    }
    // The rebinding cell: its transfer's fate is what `survives_rebind` says; when it is
    // expected not to survive, messages failing on the live connection and the transfer not
    // completing are that expected outcome, not extra failures.
    let mut rebind_excused = false;
    if let Some(r) = &got.rebind {
        match (expect.survives_rebind, r.survived) {
            (Some(true), false) => {
                for p in &r.problems {
                    worse.push(format!("did not survive the NAT rebinding: {p}"));
                }
                if r.problems.is_empty() {
                    worse.push("did not survive the NAT rebinding".into());
                }
            }
            (Some(false), true) | (None, true) => better.push("survived the NAT rebinding".into()),
            (Some(false), false) | (None, false) => rebind_excused = got.connected,
            (Some(true), true) => {}
        }
    }
    if let Some(b) = &got.relay_bench {
        for p in &b.problems {
            worse.push(format!("relayed throughput: {p}"));
        }
        if let (Some(min), Some(pc)) = (expect.relayed_min_percent, b.relayed_percent) {
            if pc < f64::from(min) {
                worse.push(format!(
                    "relayed rate {pc:.0}% of direct, expected at least {min}%"
                ));
            }
        }
    }
    for mismatch in &got.observed_mismatches {
        worse.push(format!("ready event disagrees with the lab: {mismatch}"));
    }
    let m = &got.messages;
    if m.lost > 0 {
        worse.push(format!("{} message(s) lost without a failed event", m.lost));
    }
    if m.corrupted > 0 {
        worse.push(format!("{} message(s) corrupted", m.corrupted));
    }
    if m.duplicated > 0 {
        worse.push(format!("{} message(s) delivered twice", m.duplicated));
    }
    if m.double_terminal > 0 {
        worse.push(format!(
            "{} message(s) got more than one delivered/failed event",
            m.double_terminal
        ));
    }
    if m.unconfirmed > 0 {
        worse.push(format!(
            "{} message(s) arrived but their sender reported no `delivered`",
            m.unconfirmed
        ));
    }
    if expect.connected
        && got.trials.is_none()
        && m.failed > m.failed_while_connected
        && !rebind_excused
    {
        worse.push(format!(
            "{} message(s) failed (before any connection)",
            m.failed - m.failed_while_connected
        ));
    }
    if m.failed_while_connected > 0 && !rebind_excused {
        worse.push(format!(
            "{} message(s) failed on a live connection",
            m.failed_while_connected
        ));
    }
    let bulk_done = match &got.rebind {
        Some(r) => r.throughput_mib_s.is_some() || rebind_excused,
        None => got.throughput_mib_s.is_some() || got.trials.is_some(),
    };
    if got.connected && !bulk_done {
        worse.push("connected but the bulk transfer did not complete".into());
    }
    if !worse.is_empty() {
        Verdict::Worse(worse)
    } else if !better.is_empty() {
        Verdict::Better(better)
    } else {
        Verdict::AsExpected
    }
}

/// Trials: enough successes (the written minimum scaled to the trials run), and every
/// connection on the expected path.
fn trial_verdict(
    expect: &Expectation,
    t: &super::trials::TrialSummary,
    worse: &mut Vec<String>,
    better: &mut Vec<String>,
) {
    let (at_least, better_above) = expect.success_bounds(t.trials);
    let written = format!(
        "min_success {} of {}",
        expect
            .min_success
            .unwrap_or(if expect.connected { expect.trials } else { 0 }),
        expect.trials
    );
    if t.successes < at_least {
        worse.push(format!(
            "{} of {} trials succeeded, expected at least {at_least} ({written})",
            t.successes, t.trials
        ));
    } else if t.successes > better_above {
        better.push(format!(
            "{} of {} trials succeeded, expected {at_least} ({written})",
            t.successes, t.trials
        ));
    }
    let ended = |p: &str| {
        t.runs
            .iter()
            .filter(|r| r.connected && r.path.as_deref() == Some(p))
            .count()
    };
    let connected = t.runs.iter().filter(|r| r.connected).count();
    let direct = ended("direct");
    match (expect.path.as_deref(), expect.direct_bound(t.trials)) {
        (Some("direct"), None) if direct < connected => worse.push(format!(
            "{} trial(s) ended on a path other than direct",
            connected - direct
        )),
        (Some("direct"), Some(k)) if direct < k => worse.push(format!(
            "{direct} of {} trials ended direct, expected at least {k} (direct_min {} of {})",
            t.trials,
            expect.direct_min.unwrap_or(0),
            expect.trials
        )),
        (Some("relayed"), _) if direct > 0 => better.push(format!(
            "{direct} of {} trials ended direct, expected relayed",
            t.trials
        )),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::cell::MessageTally;

    fn cells() -> Vec<String> {
        vec!["public+public".into(), "public+symmetric".into()]
    }

    const GOOD: &str = r#"
        [[cell]]
        pair = "public+public"
        connected = true
        path = "direct"

        [[cell]]
        pair = "public+symmetric"
        connected = false
    "#;

    #[test]
    fn parses_and_requires_every_cell_once() {
        let e = parse(GOOD, &cells()).unwrap();
        assert_eq!(e.len(), 2);
        let missing = "[[cell]]\npair = \"public+public\"\nconnected = true\npath = \"direct\"\n";
        assert!(parse(missing, &cells()).is_err());
        let unknown = format!("{GOOD}\n[[cell]]\npair = \"x+y\"\nconnected = false\n");
        assert!(parse(&unknown, &cells()).is_err());
        let no_path = GOOD.replace("path = \"direct\"", "");
        assert!(parse(&no_path, &cells()).is_err());
        let bad_path = GOOD.replace("\"direct\"", "\"teleported\"");
        assert!(parse(&bad_path, &cells()).is_err());
    }

    fn result(connected: bool, path: Option<&str>) -> CellResult {
        CellResult {
            cell: "public+public".into(),
            connected,
            dialled_by: connected.then(|| "bob".to_string()),
            path: path.map(str::to_string),
            throughput_mib_s: connected.then_some(10.0),
            ..CellResult::default()
        }
    }

    fn expect(connected: bool) -> Expectation {
        Expectation {
            pair: "public+public".into(),
            connected,
            path: connected.then(|| "direct".to_string()),
            first_try: false,
            trials: 1,
            min_success: None,
            direct_min: None,
            survives_rebind: None,
            relayed_min_percent: None,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(&expect(true), &result(true, Some("direct"))),
            Verdict::AsExpected
        );
        assert_eq!(
            verdict(&expect(false), &result(false, None)),
            Verdict::AsExpected
        );
        assert!(matches!(
            verdict(&expect(true), &result(false, None)),
            Verdict::Worse(_)
        ));
        assert!(matches!(
            verdict(&expect(false), &result(true, Some("direct"))),
            Verdict::Better(_)
        ));
        assert!(matches!(
            verdict(&expect(true), &result(true, Some("relayed"))),
            Verdict::Worse(_)
        ));
    }

    #[test]
    fn the_path_judged_is_where_the_connection_ended() {
        let mut started_relayed = result(true, Some("direct"));
        started_relayed.path_at_connect = Some("relayed".into());
        assert_eq!(
            verdict(&expect(true), &started_relayed),
            Verdict::AsExpected
        );
        let mut fell_back = result(true, Some("relayed"));
        fell_back.path_at_connect = Some("direct".into());
        match verdict(&expect(true), &fell_back) {
            Verdict::Worse(r) => assert!(r[0].contains("ended relayed"), "{r:?}"),
            other => panic!("{other:?}"),
        }
        let mut relayed = expect(true);
        relayed.path = Some("relayed".into());
        assert!(matches!(
            verdict(&relayed, &started_relayed),
            Verdict::Better(_)
        ));
        assert_eq!(verdict(&relayed, &fell_back), Verdict::AsExpected);
    }

    #[test]
    fn unconfirmed_and_failed_messages_are_worse() {
        let mut r = result(true, Some("direct"));
        r.messages.unconfirmed = 1;
        assert!(matches!(verdict(&expect(true), &r), Verdict::Worse(_)));
        let mut r = result(true, Some("direct"));
        r.messages.double_terminal = 1;
        assert!(matches!(verdict(&expect(true), &r), Verdict::Worse(_)));
        let mut r = result(true, Some("direct"));
        r.messages.failed = 1;
        assert!(matches!(verdict(&expect(true), &r), Verdict::Worse(_)));
        // Where no connection is expected, failing is the expected outcome.
        let mut r = result(false, None);
        r.messages.failed = 2;
        assert_eq!(verdict(&expect(false), &r), Verdict::AsExpected);
    }

    #[test]
    fn direct_min_lets_some_trials_end_relayed() {
        let with = |extra: &str| {
            GOOD.replace(
                "path = \"direct\"",
                &format!("path = \"direct\"\ntrials = 20\n{extra}"),
            )
        };
        let e = parse(&with("direct_min = 17"), &cells()).unwrap();
        assert_eq!(e[0].direct_bound(20), Some(17));
        assert_eq!(e[0].direct_bound(3), Some(2));
        assert!(parse(&with("direct_min = 21"), &cells()).is_err());
        let relayed = with("direct_min = 3").replace("\"direct\"", "\"relayed\"");
        assert!(
            parse(&relayed, &cells()).is_err(),
            "direct_min needs path direct"
        );
        let mut got = trial_result(3, 3);
        if let Some(t) = got.trials.as_mut() {
            t.runs[0].path = Some("relayed".into());
        }
        assert_eq!(verdict(&e[0], &got), Verdict::AsExpected, "2 of 3 direct");
        if let Some(t) = got.trials.as_mut() {
            t.runs[1].path = Some("relayed".into());
        }
        assert!(matches!(verdict(&e[0], &got), Verdict::Worse(_)));
    }

    #[test]
    fn first_try_expectation() {
        let mut first_try = expect(true);
        first_try.first_try = true;
        let by_bob = result(true, Some("direct"));
        assert!(matches!(verdict(&first_try, &by_bob), Verdict::Worse(_)));
        let mut by_alice = result(true, Some("direct"));
        by_alice.dialled_by = Some("alice".into());
        assert_eq!(verdict(&first_try, &by_alice), Verdict::AsExpected);
        assert!(matches!(
            verdict(&expect(true), &by_alice),
            Verdict::Better(_)
        ));
        assert_eq!(verdict(&expect(true), &by_bob), Verdict::AsExpected);
    }

    #[test]
    fn loss_corruption_and_lab_problems_are_always_worse() {
        let mut r = result(false, None);
        r.messages = MessageTally {
            lost: 1,
            ..MessageTally::default()
        };
        assert!(matches!(verdict(&expect(false), &r), Verdict::Worse(_)));
        let mut r = result(true, Some("direct"));
        r.messages.corrupted = 1;
        assert!(matches!(verdict(&expect(true), &r), Verdict::Worse(_)));
        let mut r = result(true, Some("direct"));
        r.throughput_mib_s = None;
        assert!(matches!(verdict(&expect(true), &r), Verdict::Worse(_)));
        let mut r = result(false, None);
        r.lab_problem = Some("self-check failed".into());
        assert!(matches!(verdict(&expect(false), &r), Verdict::Worse(_)));
        let mut r = result(true, Some("direct"));
        r.observed_mismatches
            .push("alice reported observed=10.1.0.10:5".into());
        assert!(matches!(verdict(&expect(true), &r), Verdict::Worse(_)));
    }

    #[test]
    fn trials_fields_are_validated() {
        let with =
            |extra: &str| GOOD.replace("connected = false", &format!("connected = false\n{extra}"));
        let e = parse(&with("trials = 20\nmin_success = 0"), &cells()).unwrap();
        assert_eq!(e[1].trials, 20);
        assert_eq!(e[0].trials, 1, "default");
        for bad in [
            "trials = 0",
            "trials = 100000",
            "min_success = 1",
            "trials = 3\nmin_success = 4",
            "trials = -1",
            "survive = true",
        ] {
            assert!(parse(&with(bad), &cells()).is_err(), "{bad}");
        }
        let e = parse(&with("trials = 5"), &cells()).unwrap();
        let rebind = vec!["public+symmetric".to_string()];
        assert!(check_kinds(&e, &[], &cells()).is_ok());
        assert!(
            check_kinds(&e, &[], &["public+public".into()]).is_err(),
            "trials on a one-run cell"
        );
        assert!(
            check_kinds(&e, &rebind, &cells()).is_err(),
            "rebind cell without survives_rebind"
        );
        let e = parse(&with("survives_rebind = false"), &cells()).unwrap();
        assert!(check_kinds(&e, &rebind, &cells()).is_ok());
        assert!(
            check_kinds(&e, &[], &cells()).is_err(),
            "survives_rebind elsewhere"
        );
    }

    #[test]
    fn min_success_scales_with_the_trials_run() {
        let mut e = expect(true);
        e.trials = 20;
        assert_eq!(e.success_bounds(20), (20, 20), "connected: all by default");
        assert_eq!(e.success_bounds(3), (3, 3));
        e.min_success = Some(18);
        assert_eq!(e.success_bounds(20), (18, 18));
        assert_eq!(e.success_bounds(3), (2, 3));
        let mut e = expect(false);
        e.trials = 20;
        assert_eq!(e.success_bounds(3), (0, 0));
        e.min_success = Some(10);
        assert_eq!(e.success_bounds(3), (1, 2));
    }

    fn trial_result(successes: usize, run: usize) -> CellResult {
        use crate::matrix::trials::{TrialRecord, TrialSummary};
        let record = |success: bool| TrialRecord {
            success,
            connected: success,
            path: success.then(|| "direct".to_string()),
            path_at_connect: success.then(|| "direct".to_string()),
            dialled_by: success.then(|| "alice".to_string()),
            first_message_ms: None,
            time_to_direct_ms: None,
            messages: MessageTally::default(),
            lab_problem: None,
            duration_s: 1.0,
        };
        CellResult {
            connected: successes > 0,
            path: (successes > 0).then(|| "direct".to_string()),
            trials: Some(TrialSummary {
                trials: run,
                successes,
                direct: successes,
                relayed_at_connect: 0,
                first_try: successes,
                runs: (0..run).map(|i| record(i < successes)).collect(),
            }),
            ..CellResult::default()
        }
    }

    #[test]
    fn trial_verdicts_count_successes() {
        let mut e = expect(true);
        e.trials = 20;
        e.min_success = Some(18);
        assert_eq!(verdict(&e, &trial_result(2, 3)), Verdict::AsExpected);
        assert_eq!(verdict(&e, &trial_result(3, 3)), Verdict::AsExpected);
        assert!(matches!(
            verdict(&e, &trial_result(1, 3)),
            Verdict::Worse(_)
        ));
        let mut e = expect(false);
        e.trials = 20;
        e.min_success = Some(0);
        assert_eq!(verdict(&e, &trial_result(0, 3)), Verdict::AsExpected);
        assert!(matches!(
            verdict(&e, &trial_result(1, 3)),
            Verdict::Better(_)
        ));
        let mut relayed = trial_result(3, 3);
        if let Some(t) = relayed.trials.as_mut() {
            t.runs[0].path = Some("relayed".into());
        }
        let mut e = expect(true);
        e.trials = 3;
        assert!(matches!(verdict(&e, &relayed), Verdict::Worse(_)));
    }

    #[test]
    fn rebinding_verdicts() {
        use crate::matrix::rebind::RebindResult;
        let mut e = expect(true);
        let mut got = result(true, Some("direct"));
        got.dialled_by = Some("alice".into());
        e.first_try = true;
        let survived = RebindResult {
            survived: true,
            throughput_mib_s: Some(20.0),
            ..RebindResult::default()
        };
        let broke = RebindResult {
            problems: vec!["3 message(s) failed".into()],
            ..RebindResult::default()
        };
        got.throughput_mib_s = None;
        got.messages.failed_while_connected = 3;
        got.messages.failed = 3;
        e.survives_rebind = Some(true);
        got.rebind = Some(broke.clone());
        match verdict(&e, &got) {
            Verdict::Worse(r) => {
                assert!(r.iter().any(|r| r.contains("3 message(s) failed")), "{r:?}")
            }
            other => panic!("{other:?}"),
        }
        e.survives_rebind = Some(false);
        assert_eq!(
            verdict(&e, &got),
            Verdict::AsExpected,
            "today's expected outcome"
        );
        got.messages.lost = 1;
        assert!(
            matches!(verdict(&e, &got), Verdict::Worse(_)),
            "silent loss is never excused"
        );
        got.messages.lost = 0;
        got.messages.failed_while_connected = 0;
        got.messages.failed = 0;
        got.rebind = Some(survived);
        assert!(matches!(verdict(&e, &got), Verdict::Better(_)));
        e.survives_rebind = Some(true);
        assert_eq!(verdict(&e, &got), Verdict::AsExpected);
    }
}
