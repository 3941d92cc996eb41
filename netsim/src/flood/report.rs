//! What `netsim flood` prints and keeps: the Markdown report (also flood.md) and each
//! legitimate node's events (`<host>.events` in the logs folder).

use super::{FloodArgs, FloodReport};
use crate::matrix::node::Output;
use crate::matrix::session::Session;
use std::path::Path;
use std::time::Instant;

/// Each node's events, with their times from the start of the exchange, to
/// `<host>.events` (for reading a failure).
pub fn write_events(session: &Session, start: Instant, work: &Path) {
    for node in &session.nodes {
        let mut text = String::new();
        for t in &node.history {
            let at = t.at.saturating_duration_since(start).as_secs_f64() * 1000.0;
            match &t.output {
                Output::Event(line) => text.push_str(&format!("{at:9.1} ms  {line}\n")),
                Output::Recv { peer, payload } => text.push_str(&format!(
                    "{at:9.1} ms  (recv {} bytes from {peer})\n",
                    payload.len()
                )),
                Output::Broken(why) => text.push_str(&format!("{at:9.1} ms  (stdout: {why})\n")),
            }
        }
        let _ = std::fs::write(work.join(format!("{}.events", node.host)), text);
    }
}

/// The run as Markdown: sources, figures, checks.
pub fn markdown(r: &FloodReport, args: &FloodArgs) -> String {
    let mut out = format!(
        "# netsim flood: {} identities from {} source IPs ({:?} transports), alice {} / bob {}\n\n\
         | source | seen as | identities (QUIC) | connected | registered (datagrams) | refused | NAT mappings | punch requests (Unknown) |\n\
         |---|---|---|---|---|---|---|---|\n",
        r.identities,
        r.sources.len(),
        r.transport,
        args.alice,
        args.bob
    );
    for (s, t) in &r.sources {
        let refused: Vec<String> = t.refused.iter().map(|(c, n)| format!("{n} {c}")).collect();
        out.push_str(&format!(
            "| {} | {} | {} ({}) | {} | {} ({}) | {} | {} | {} ({}) |\n",
            s.name,
            s.seen_ip,
            s.identities,
            s.quic,
            t.connected,
            t.registered,
            t.registered_dgram,
            if refused.is_empty() {
                "-".into()
            } else {
                refused.join(", ")
            },
            t.nat_mappings.map_or("-".to_string(), |n| n.to_string()),
            t.punch_answered,
            t.punch_unknown
        ));
    }
    out.push_str(&format!(
        "\nalice and bob ready when {} of {} flooders had arrived; punch rounds: {}; junk datagrams sent: {}; limits: --new-per-ip-burst {} --punch-per-ip-burst {} (no refill)\n",
        r.legit.flooders_arrived_at_ready, r.identities,
        r.punch_rounds, r.junk_sent, r.limits.new_per_ip_burst, r.limits.punch_per_ip_burst
    ));
    let f = &r.dgram.flooders;
    out.push_str(&format!(
        "datagram flooders: {} datagrams sent, {} received; {} Registers and {} requests sent again, {} Registers answered by a Cookie, {} requests under no session (with retransmissions)\n",
        f.sent, f.received, f.register_resends, f.request_resends, f.register_cookies, f.raw_sent
    ));
    for (what, s) in &r.seconds {
        out.push_str(&format!("{what}: {s} s\n"));
    }
    out.push('\n');
    for c in &r.checks {
        out.push_str(&format!(
            "{} {}: {}\n",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    for (s, t) in &r.sources {
        for e in &t.errors {
            out.push_str(&format!("note: {}: {e}\n", s.name));
        }
    }
    for n in &r.legit.notes {
        out.push_str(&format!("note: legitimate nodes: {n}\n"));
    }
    let failed = r.checks.iter().filter(|c| !c.passed).count();
    out.push_str(&format!(
        "flood: {} checks, {failed} failed\n",
        r.checks.len()
    ));
    out
}
