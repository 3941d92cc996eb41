//! p2p-bench's report: medians of the interleaved rounds, ratios against the other tools, and
//! the markdown, JSON and SVG written from them. Split from `p2p_bench.rs`.

use super::*;

pub(super) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One row of the table: what it is, its unit, whether higher is better, the target.
pub(super) struct Metric {
    key: &'static str,
    name: &'static str,
    unit: &'static str,
    higher_better: bool,
}

const METRICS: &[Metric] = &[
    Metric {
        key: "bulk_mib_s",
        name: "loopback bulk, stdin -> peer stdout",
        unit: "MiB/s",
        higher_better: true,
    },
    Metric {
        key: "small_msgs_per_s",
        name: "64-byte messages",
        unit: "msg/s",
        higher_better: true,
    },
    Metric {
        key: "latency_p50_us",
        name: "one-way latency p50 (64 B)",
        unit: "us",
        higher_better: false,
    },
    Metric {
        key: "latency_p99_us",
        name: "one-way latency p99 (64 B)",
        unit: "us",
        higher_better: false,
    },
    Metric {
        key: "first_byte_ms",
        name: "connect to first byte",
        unit: "ms",
        higher_better: false,
    },
    Metric {
        key: "idle_rss_mib",
        name: "idle RSS, both ends",
        unit: "MiB",
        higher_better: false,
    },
    Metric {
        key: "loaded_rss_mib",
        name: "peak RSS after bulk, both ends",
        unit: "MiB",
        higher_better: false,
    },
    Metric {
        key: "python_json_msgs_per_s",
        name: "Python P2PClient -> P2PServer, JSON, bulk API",
        unit: "msg/s",
        higher_better: true,
    },
    Metric {
        key: "python_json_per_message_msgs_per_s",
        name: "Python P2PClient -> P2PServer, JSON, per-message API",
        unit: "msg/s",
        higher_better: true,
    },
];

pub(super) fn fmt_value(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// p2p-node's median against another tool's, as "how many times as good" (>1 = p2p-node better).
pub(super) fn ratio(metric: &Metric, node: f64, other: f64) -> f64 {
    if metric.higher_better {
        node / other
    } else {
        other / node
    }
}

pub(super) struct Report {
    pub(super) markdown: String,
    pub(super) json: serde_json::Value,
    /// (label, ratio, target) bars for the SVG.
    pub(super) bars: Vec<(String, f64, Option<f64>)>,
}

pub(super) fn report(o: &Options, samples: &Samples, rounds_done: usize, started: &str) -> Report {
    let variant_names: Vec<String> = o
        .node_variants
        .iter()
        .map(|(name, _)| format!("{NODE} {name}"))
        .collect();
    let mut tools: Vec<&str> = vec![NODE];
    tools.extend(variant_names.iter().map(String::as_str));
    tools.extend([QUINN, DUMB]);
    let mut md = String::new();
    md.push_str(&format!(
        "# scripts/bench.sh{}\n\nStarted {started} UTC; {rounds_done} round(s), tools interleaved in each round; median of the rounds (range in brackets).\nBulk {} MiB, {} 64-byte messages, {} latency samples, {} Python messages. Ratios are p2p-node against the other tool, >1 means p2p-node is better (higher rate, or lower time/memory).\n\n",
        if o.label.is_empty() { String::new() } else { format!(" ({})", o.label) },
        o.bulk_mib, o.small_messages, o.latency_samples, o.python_messages
    ));
    md.push_str("| measure | unit | p2p-node |");
    for (name, args) in &o.node_variants {
        md.push_str(&format!(" p2p-node {name} (`{}`) |", args.join(" ")));
    }
    md.push_str(" quinn-pipe | dumbpipe 0.40.1 | p2p-node / quinn-pipe | p2p-node / dumbpipe |\n|---|---|---|");
    for _ in &o.node_variants {
        md.push_str("---|");
    }
    md.push_str("---|---|---|---|\n");
    let mut json_rows = Vec::new();
    let mut bars = Vec::new();
    for metric in METRICS {
        let Some(by_tool) = samples.get(metric.key) else {
            continue;
        };
        let cell = |tool: &str| {
            by_tool.get(tool).filter(|v| !v.is_empty()).map(|v| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (median(v), lo, hi)
            })
        };
        let shown = |tool: &str| match cell(tool) {
            Some((m, lo, hi)) if v_len(by_tool, tool) > 1 => {
                format!("{} [{}-{}]", fmt_value(m), fmt_value(lo), fmt_value(hi))
            }
            Some((m, _, _)) => fmt_value(m),
            None => "-".into(),
        };
        let node = cell(NODE).map(|c| c.0);
        let r_quinn = node.zip(cell(QUINN)).map(|(n, q)| ratio(metric, n, q.0));
        let r_dumb = node.zip(cell(DUMB)).map(|(n, d)| ratio(metric, n, d.0));
        let fmt_ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
        let variant_cells: String = variant_names
            .iter()
            .map(|t| format!(" {} |", shown(t)))
            .collect();
        md.push_str(&format!(
            "| {} | {} | {} |{variant_cells} {} | {} | {} | {} |\n",
            metric.name,
            metric.unit,
            shown(NODE),
            shown(QUINN),
            shown(DUMB),
            fmt_ratio(r_quinn),
            fmt_ratio(r_dumb)
        ));
        if metric.key == "bulk_mib_s" {
            if let Some(r) = r_quinn {
                bars.push(("loopback bulk / quinn-pipe".into(), r, Some(0.9)));
            }
            if let Some(r) = r_dumb {
                bars.push(("loopback bulk / dumbpipe".into(), r, Some(5.0)));
            }
        }
        if metric.key == "latency_p50_us" {
            if let Some(r) = r_quinn {
                bars.push(("latency p50: quinn-pipe / p2p-node".into(), r, None));
            }
        }
        let mut row = serde_json::json!({
            "key": metric.key, "name": metric.name, "unit": metric.unit,
            "higher_is_better": metric.higher_better,
            "ratio_vs_quinn_pipe": r_quinn, "ratio_vs_dumbpipe": r_dumb,
        });
        for tool in &tools {
            if let Some((m, lo, hi)) = cell(tool) {
                row[*tool] = serde_json::json!({"median": m, "min": lo, "max": hi, "samples": by_tool[*tool]});
            }
        }
        json_rows.push(row);
    }
    // Issue targets against p2p-node's medians.
    let node_median = |key: &str| {
        samples
            .get(key)
            .and_then(|t| t.get(NODE))
            .filter(|v| !v.is_empty())
            .map(|v| median(v))
    };
    let mut targets = Vec::new();
    let mut target = |what: &str, value: Option<f64>, goal: f64, higher: bool, unit: &str| {
        let status = match value {
            Some(v) if (higher && v >= goal) || (!higher && v <= goal) => "met",
            Some(_) => "not met",
            None => "not measured",
        };
        targets.push(
            serde_json::json!({"target": what, "value": value, "goal": goal, "status": status}),
        );
        format!(
            "| {what} | {} | {}{}{unit} | {status} |\n",
            value.map_or("-".into(), |v| format!("{}{unit}", fmt_value(v))),
            if higher { ">= " } else { "<= " },
            fmt_value(goal)
        )
    };
    let bulk = samples.get("bulk_mib_s");
    let ratio_of =
        |tool: &str| bulk.and_then(|t| Some(median(t.get(NODE)?) / median(t.get(tool)?)));
    let mut tmd = String::from(
        "\n## Issue #16 targets (loopback)\n\n| target | measured | goal | status |\n|---|---|---|---|\n",
    );
    tmd.push_str(&target(
        "loopback bulk / quinn-pipe",
        ratio_of(QUINN),
        0.9,
        true,
        "x",
    ));
    tmd.push_str(&target(
        "loopback bulk / dumbpipe",
        ratio_of(DUMB),
        5.0,
        true,
        "x",
    ));
    tmd.push_str(&target(
        "64-byte messages",
        node_median("small_msgs_per_s"),
        500_000.0,
        true,
        " msg/s",
    ));
    tmd.push_str(&target(
        "one-way latency p50",
        node_median("latency_p50_us"),
        100.0,
        false,
        " us",
    ));
    tmd.push_str(&target(
        "Python JSON",
        node_median("python_json_msgs_per_s"),
        100_000.0,
        true,
        " msg/s",
    ));
    md.push_str(&tmd);
    // Figures measured elsewhere (netsim long link, rendezvous load), merged as given.
    let mut extra = Vec::new();
    for path in &o.extra_json {
        match std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            Some(v) => {
                if let Some(text) = v["markdown"].as_str() {
                    md.push('\n');
                    md.push_str(text);
                }
                if let Some(list) = v["bars"].as_array() {
                    for b in list {
                        if let (Some(l), Some(r)) = (b["label"].as_str(), b["ratio"].as_f64()) {
                            bars.push((l.to_string(), r, b["target"].as_f64()));
                        }
                    }
                }
                extra.push(v);
            }
            None => md.push_str(&format!("\n({} could not be read)\n", path.display())),
        }
    }
    if let Some(notes) = o
        .notes
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        md.push_str("\n## Notes\n\n");
        md.push_str(&notes);
    }
    let json = serde_json::json!({
        "started_utc": started, "label": o.label, "rounds": rounds_done,
        "bulk_mib": o.bulk_mib, "small_messages": o.small_messages,
        "latency_samples": o.latency_samples, "python_messages": o.python_messages,
        "node_args": o.node_args, "pipe_args": o.pipe_args, "node_variants": o.node_variants,
        "rows": json_rows, "targets": targets, "included": extra,
    });
    Report {
        markdown: md,
        json,
        bars,
    }
}

pub(super) fn v_len(by_tool: &BTreeMap<String, Vec<f64>>, tool: &str) -> usize {
    by_tool.get(tool).map_or(0, Vec::len)
}

/// Ratios as horizontal bars, with the target as a tick; hand-written SVG.
pub(super) fn svg(bars: &[(String, f64, Option<f64>)], title: &str) -> String {
    let row = 28.0;
    // Room for the longest label (about 6.6 px a character at 12 px sans-serif).
    let left = bars
        .iter()
        .map(|(label, _, _)| label.chars().count() as f64 * 6.6 + 24.0)
        .fold(200.0f64, f64::max);
    let width = 420.0;
    let top = 40.0;
    let max = bars
        .iter()
        .flat_map(|(_, r, t)| [*r, t.unwrap_or(0.0)])
        .fold(1.0f64, f64::max)
        * 1.1;
    let x = |v: f64| left + width * (v / max);
    let height = top + row * bars.len() as f64 + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\">{}</text>\n",
        left + width + 80.0,
        xml(title)
    );
    for (i, (label, r, target)) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let colour = match target {
            None => "#7a86a8",
            Some(t) if *r >= *t => "#4a8f4a",
            Some(_) => "#c8553d",
        };
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"/>\n<text x=\"{:.1}\" y=\"{}\">{r:.2}x</text>\n",
            left - 8.0,
            y + 15.0,
            xml(label),
            y + 4.0,
            (x(*r) - left).max(1.0),
            row - 8.0,
            x(*r) + 4.0,
            y + 15.0
        ));
        if let Some(t) = target {
            s.push_str(&format!(
                "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1}\" y2=\"{2}\" stroke=\"black\" stroke-width=\"2\"/>\n",
                x(*t),
                y + 1.0,
                y + row - 1.0
            ));
        }
    }
    let base_y = top + row * bars.len() as f64;
    s.push_str(&format!(
        "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{base_y}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n<text x=\"{0:.1}\" y=\"{1}\" text-anchor=\"middle\" fill=\"#555\">1x</text>\n<text x=\"10\" y=\"{2}\" fill=\"#555\">black tick: the issue's target; green: met, red: not met, blue: no target</text>\n</svg>\n",
        x(1.0),
        base_y + 14.0,
        base_y + 32.0
    ));
    s
}

pub(super) fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
