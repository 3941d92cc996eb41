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
    /// `direct` or `relayed` when `connected`.
    pub path: Option<String>,
    /// alice's own dial connects, so her first message is delivered (default false: the cell
    /// may connect only when bob dials back).
    #[serde(default)]
    pub first_try: bool,
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

/// Compares a cell with its expectation. Anything lost, corrupted or duplicated, a failed
/// lab self-check and a message failing on a live connection are always worse.
pub fn verdict(expect: &Expectation, got: &CellResult) -> Verdict {
    let mut worse = Vec::new();
    let mut better = Vec::new();
    if let Some(problem) = &got.lab_problem {
        worse.push(format!("lab problem: {problem}"));
    }
    match (expect.connected, got.connected) {
        (true, false) => worse.push("expected to connect, did not".into()),
        (false, true) => better.push(format!(
            "connected ({}) where no connection was expected",
            got.path.as_deref().unwrap_or("?")
        )),
        (true, true) => match (expect.path.as_deref(), got.path.as_deref()) {
            (Some("direct"), Some(p)) if p != "direct" => {
                worse.push(format!("path {p}, expected direct"))
            }
            (Some("relayed"), Some("direct")) => better.push("direct, expected relayed".into()),
            _ => {}
        },
        (false, false) => {}
    }
    let got_first_try = got.connected && got.dialled_by.as_deref() == Some("alice");
    match (expect.first_try, got_first_try) {
        (true, false) if got.connected => {
            worse.push("alice's own dial failed; expected it to connect on the first try".into())
        }
        (false, true) => better.push("alice's own dial connected on the first try".into()),
        _ => {}
    }
    for mismatch in &got.observed_mismatches {
        worse.push(format!("wrong observed address: {mismatch}"));
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
    if m.failed_while_connected > 0 {
        worse.push(format!(
            "{} message(s) failed on a live connection",
            m.failed_while_connected
        ));
    }
    if got.connected && got.throughput_mib_s.is_none() {
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
}
