//! The matrix at a glance: `matrix.svg`, written beside `matrix.md` and `matrix.json`.
//!
//! A grid of NAT pairs (rows: alice's network, columns: bob's) coloured by outcome (direct,
//! relayed, failed, expected failure), each direct cell shaded by how soon the path turned
//! direct (darker is sooner) and labelled with that time; a red frame marks a cell worse than
//! expected. Cells that are not a pair of peer kinds (same NAT, rebinding, relay benchmark...)
//! follow below the grid, one box each. Every row of the report is exactly one `<g
//! class="cell">`, whose `<title>` says everything (a browser shows it on hover).
//! Hand-written SVG: no dependency.

use super::expected::Verdict;
use super::report::{Report, Row};
use crate::scenario::PeerKind;
use std::fmt::Write;

const LABEL_W: u32 = 150;
const CELL_W: u32 = 72;
const CELL_H: u32 = 40;
/// Top of the grid: the legend, then room for the slanted column names.
const TOP: u32 = 190;
const OTHER_W: u32 = 144;
const OTHERS_PER_LINE: u32 = 5;

/// How a cell ended, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Direct,
    Relayed,
    /// Did not connect, and was not expected to.
    ExpectedFailure,
    /// Did not connect although expected to, or the lab could not be trusted.
    Failed,
}

impl Outcome {
    pub fn of(row: &Row) -> Outcome {
        let r = &row.result;
        if r.lab_problem.is_some() {
            return Outcome::Failed;
        }
        match (r.connected, r.path.as_deref()) {
            (true, Some("direct")) => Outcome::Direct,
            (true, _) => Outcome::Relayed,
            (false, _) if !row.expected.connected => Outcome::ExpectedFailure,
            (false, _) => Outcome::Failed,
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Outcome::Direct => "#1a9850",
            Outcome::Relayed => "#f0a202",
            Outcome::ExpectedFailure => "#9e9e9e",
            Outcome::Failed => "#d73027",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Direct => "direct",
            Outcome::Relayed => "relayed",
            Outcome::ExpectedFailure => "no connection (expected)",
            Outcome::Failed => "failed",
        }
    }
}

/// Opacity of a direct cell: 1 at 100 ms or sooner down to 0.35 at 10 s or later (log scale).
fn shade(time_to_direct_ms: Option<f64>) -> f64 {
    let Some(ms) = time_to_direct_ms else {
        return 0.35;
    };
    let t = ((ms.max(100.0).log10() - 2.0) / 2.0).clamp(0.0, 1.0);
    1.0 - 0.65 * t
}

fn short_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// Escapes text for XML content and attribute values.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The pair of kinds of a cell named `a+b`, if it is one.
fn pair_of(cell: &str) -> Option<(PeerKind, PeerKind)> {
    let (a, b) = cell.split_once('+')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// One cell: a group with its title, rectangle and label.
fn cell(svg: &mut String, row: &Row, x: u32, y: u32, w: u32, name_in_box: bool) {
    let r = &row.result;
    let outcome = Outcome::of(row);
    let opacity = match outcome {
        Outcome::Direct => shade(r.time_to_direct_ms),
        _ => 1.0,
    };
    let mut title = format!("{}: {}", r.cell, outcome.label());
    if let Some(ms) = r.time_to_direct_ms {
        let _ = write!(title, ", direct after {}", short_ms(ms));
    }
    if let Some(t) = &r.trials {
        let _ = write!(
            title,
            ", trials {}/{} ({} direct)",
            t.successes, t.trials, t.direct
        );
    }
    let _ = write!(title, "; {}", row.verdict.label());
    if let Verdict::Worse(why) | Verdict::Better(why) = &row.verdict {
        let _ = write!(title, ": {}", why.join("; "));
    }
    let worse = matches!(row.verdict, Verdict::Worse(_));
    let (stroke, stroke_w) = if worse {
        ("#b2182b", 3)
    } else {
        ("#ffffff", 1)
    };
    let label = match (outcome, r.time_to_direct_ms) {
        (Outcome::Direct | Outcome::Relayed, Some(ms)) => short_ms(ms),
        (Outcome::Relayed, None) => "relay".into(),
        (Outcome::Direct, None) => "direct".into(),
        (Outcome::ExpectedFailure, _) => "-".into(),
        (Outcome::Failed, _) => "fail".into(),
    };
    let _ = writeln!(
        svg,
        "<g class=\"cell\" data-cell=\"{}\"><title>{}</title>\
<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{CELL_H}\" fill=\"{}\" fill-opacity=\"{opacity:.2}\" stroke=\"{stroke}\" stroke-width=\"{stroke_w}\"/>",
        esc(&r.cell),
        esc(&title),
        outcome.colour()
    );
    let cx = x + w / 2;
    if name_in_box {
        let _ = writeln!(
            svg,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{}</text>",
            y + 16,
            esc(&r.cell)
        );
        let _ = writeln!(
            svg,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{}</text></g>",
            y + 31,
            esc(&label)
        );
    } else {
        let _ = writeln!(
            svg,
            "<text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text></g>",
            y + 25,
            esc(&label)
        );
    }
}

/// Renders the report as an SVG document.
pub fn render(report: &Report) -> String {
    let kinds: Vec<PeerKind> = PeerKind::ALL
        .into_iter()
        .chain(PeerKind::EXTRA)
        .filter(|k| {
            report
                .rows
                .iter()
                .any(|row| pair_of(&row.result.cell).is_some_and(|(a, b)| a == *k || b == *k))
        })
        .collect();
    let others: Vec<&Row> = report
        .rows
        .iter()
        .filter(|row| pair_of(&row.result.cell).is_none())
        .collect();
    let n = kinds.len() as u32;
    let grid_w = LABEL_W + n * CELL_W;
    let others_top = TOP + n * CELL_H + if n > 0 { 40 } else { 0 };
    let other_lines = (others.len() as u32).div_ceil(OTHERS_PER_LINE);
    let width = (grid_w + 100).max(LABEL_W + OTHERS_PER_LINE * OTHER_W) + 20;
    let height = others_top + other_lines * (CELL_H + 8) + 30;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\">"
    );
    let _ = writeln!(
        svg,
        "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">netsim matrix: {}</text>",
        esc(&report.summary())
    );
    // Legend.
    let mut x = 10;
    for outcome in [
        Outcome::Direct,
        Outcome::Relayed,
        Outcome::Failed,
        Outcome::ExpectedFailure,
    ] {
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"32\" width=\"14\" height=\"14\" fill=\"{}\"/><text x=\"{}\" y=\"44\" font-size=\"12\">{}</text>",
            outcome.colour(),
            x + 18,
            outcome.label()
        );
        x += 30 + 7 * outcome.label().len() as u32;
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{x}\" y=\"32\" width=\"14\" height=\"14\" fill=\"#ffffff\" stroke=\"#b2182b\" stroke-width=\"3\"/><text x=\"{}\" y=\"44\" font-size=\"12\">worse than expected</text>",
        x + 18
    );
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"62\" font-size=\"12\">Label: time from alice's first send to a direct path. Direct cells are darker the sooner (100 ms) and paler the later (10 s).</text>"
    );
    if n > 0 {
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-size=\"12\" font-style=\"italic\">alice \u{2193} / bob \u{2192}</text>",
            TOP - 6
        );
    }
    for (i, kind) in kinds.iter().enumerate() {
        let i = i as u32;
        let (hx, hy) = (LABEL_W + i * CELL_W + CELL_W / 2, TOP - 8);
        let _ = writeln!(
            svg,
            "<text x=\"{hx}\" y=\"{hy}\" font-size=\"11\" transform=\"rotate(-40 {hx} {hy})\">{}</text>",
            kind.name()
        );
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            LABEL_W - 6,
            TOP + i * CELL_H + 25,
            kind.name()
        );
    }
    for (row_i, a) in kinds.iter().enumerate() {
        for (col_i, b) in kinds.iter().enumerate() {
            let (x, y) = (LABEL_W + col_i as u32 * CELL_W, TOP + row_i as u32 * CELL_H);
            match report
                .rows
                .iter()
                .find(|row| pair_of(&row.result.cell) == Some((*a, *b)))
            {
                Some(row) => cell(&mut svg, row, x, y, CELL_W, false),
                None => {
                    let _ = writeln!(
                        svg,
                        "<rect class=\"empty\" x=\"{x}\" y=\"{y}\" width=\"{CELL_W}\" height=\"{CELL_H}\" fill=\"#f4f4f4\" stroke=\"#ffffff\"/>"
                    );
                }
            }
        }
    }
    if !others.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"10\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">Other cells</text>",
            others_top - 10
        );
    }
    for (i, row) in others.iter().enumerate() {
        let i = i as u32;
        let x = 10 + (i % OTHERS_PER_LINE) * OTHER_W;
        let y = others_top + (i / OTHERS_PER_LINE) * (CELL_H + 8);
        cell(&mut svg, row, x, y, OTHER_W - 4, true);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::cell::CellResult;
    use crate::matrix::expected::{verdict, Expectation};

    fn row(name: &str, expect: bool, connected: bool, path: &str, ms: Option<f64>) -> Row {
        let expected = Expectation {
            pair: name.into(),
            connected: expect,
            path: expect.then(|| "direct".into()),
            first_try: false,
            trials: 1,
            min_success: None,
            direct_min: None,
            survives_rebind: None,
            relayed_min_percent: None,
        };
        let result = CellResult {
            cell: name.into(),
            connected,
            path: connected.then(|| path.into()),
            time_to_direct_ms: ms,
            ..CellResult::default()
        };
        let verdict = verdict(&expected, &result);
        Row {
            expected,
            result,
            verdict,
        }
    }

    /// Checks that every tag is closed in order (a small well-formedness check: no XML
    /// dependency) and returns the opening tags as (name, text of the tag).
    fn tags(svg: &str) -> Vec<(String, String)> {
        let mut stack: Vec<String> = Vec::new();
        let mut opened = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("tag closed") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "stray < in {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "closing {name}");
            } else {
                let name = tag.split_whitespace().next().unwrap().trim_end_matches('/');
                opened.push((name.to_string(), tag.to_string()));
                if !tag.ends_with('/') {
                    stack.push(name.to_string());
                }
            }
            // Text between tags must not hold raw ampersands outside entities.
            let text = &rest[end + 1..];
            let text = &text[..text.find('<').unwrap_or(text.len())];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;"].contains(&entity),
                    "raw & in {text}"
                );
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        opened
    }

    #[test]
    fn the_svg_is_well_formed_with_one_cell_per_row() {
        let rows = vec![
            row("public+public", true, true, "direct", Some(40.0)),
            row("public+symmetric", true, true, "direct", Some(2500.0)),
            row("symmetric+symmetric", true, true, "relayed", None),
            row("udp-blocked+udp-blocked", false, false, "", None),
            row("full-cone+symmetric", true, false, "", None),
            row("same-nat-hairpin", true, true, "direct", Some(12.0)),
            row("rebind <&>", true, true, "direct", None),
        ];
        let report = Report {
            command: "netsim matrix".into(),
            finished_unix: 0,
            node_bin: "n".into(),
            rendezvous_bin: "r".into(),
            link: None,
            duration_s: 1.0,
            rows,
        };
        let svg = render(&report);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        let opened = tags(&svg);
        let cells: Vec<&String> = opened
            .iter()
            .filter(|(name, tag)| name == "g" && tag.contains("class=\"cell\""))
            .map(|(_, tag)| tag)
            .collect();
        assert_eq!(cells.len(), report.rows.len(), "one cell per row");
        for row in &report.rows {
            let marker = format!("data-cell=\"{}\"", esc(&row.result.cell));
            assert_eq!(
                cells.iter().filter(|t| t.contains(&marker)).count(),
                1,
                "{marker}"
            );
        }
        // Four kinds appear in pairs: a 4x4 grid, 5 of its slots run, 11 empty.
        let empty = opened
            .iter()
            .filter(|(_, tag)| tag.contains("class=\"empty\""))
            .count();
        assert_eq!(empty, 16 - 5);
        // Colours by outcome, the legend, and the time labels.
        for colour in ["#1a9850", "#f0a202", "#9e9e9e", "#d73027"] {
            assert!(svg.contains(colour), "{colour}");
        }
        assert!(svg.contains(">40 ms<") && svg.contains(">2.5 s<"));
        assert!(svg.contains("worse than expected"));
        assert!(
            svg.contains("stroke=\"#b2182b\" stroke-width=\"3\"/>"),
            "the failed cell is framed"
        );
        assert!(shade(Some(40.0)) > shade(Some(2500.0)));
    }
}
