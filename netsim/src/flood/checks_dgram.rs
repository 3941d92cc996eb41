//! The flood's datagram checks (docs/PROTOCOL.md section 4.1): sessions held, requests
//! without a session refused, the junk answered only as documented and its drops counted,
//! the witness served throughout. Pure, unit-tested with their failures.

use super::checks::{check, Check, Scraped};
use super::dgram::DgramStats;
use super::dgram_junk::{KindTally, WitnessTally};
use super::generator::{Source, SourceTally};
use serde::Serialize;

/// What the datagram side of a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DgramFigures {
    /// The datagram flooders' sockets, summed.
    pub flooders: DgramStats,
    pub junk: Vec<KindTally>,
    pub witness: WitnessTally,
    /// Punch rounds run (every identity asks once a round).
    pub punch_rounds: u64,
    /// Sends of one push at most (the rendezvous's default, 5): a node acknowledges every
    /// copy it gets, and every ack after the first is a stray one the rendezvous counts as an
    /// authentication failure.
    pub push_attempts: u64,
}

/// The documented answers (section 8, "Amplification"): (junk kind, the one answer kind
/// allowed, its size). Other kinds must get no answer at all.
const ANSWERED: [(&str, &str, u64); 3] = [
    ("hello", "Cookie", 30),
    ("stale-register", "Cookie", 30),
    ("no-session", "Unknown", 22),
];

fn shown(v: Option<f64>) -> String {
    v.map_or("(missing)".into(), |v| v.to_string())
}

/// The datagram checks. `nodes`: registrations besides the flooders' (alice, bob, the
/// witness).
pub fn verdict(
    sources: &[Source],
    tallies: &[SourceTally],
    metrics: &Scraped,
    figures: &DgramFigures,
    nodes: usize,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let registered: usize = tallies.iter().map(|t| t.registered).sum();
    let want = registered + nodes;
    checks.push(check(
        "registry holds every registration",
        metrics.registered_peers == Some(want as f64),
        format!(
            "registered_peers: {}, expected {registered} flooders (both transports) and {nodes} nodes (alice, bob, the witness)",
            shown(metrics.registered_peers)
        ),
    ));

    // Requests without a session: answered Unknown, one per lookup and one per punch round.
    let mut wrong = Vec::new();
    let (mut lookups, mut punches) = (0, 0);
    for (s, t) in sources.iter().zip(tallies) {
        let sessionless = (t.connected - t.quic_connected).saturating_sub(t.registered_dgram);
        let rounds = figures.punch_rounds as usize;
        lookups += t.lookups_unknown;
        punches += t.punch_unknown;
        if t.lookups_unknown != sessionless || t.punch_unknown != sessionless * rounds {
            wrong.push(format!(
                "{}: {sessionless} datagram identities without a session, {} lookups and {} punch requests answered Unknown, expected {sessionless} and {}",
                s.name,
                t.lookups_unknown,
                t.punch_unknown,
                sessionless * rounds
            ));
        }
    }
    checks.push(check(
        "requests without a session answered Unknown",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!("{lookups} lookups and {punches} punch requests ({} rounds) from refused datagram identities answered Unknown (22 bytes), charged to no limit", figures.punch_rounds)
        } else {
            wrong.join("; ")
        },
    ));

    // The junk: each kind answered only as documented, never with more bytes than it sent.
    let mut wrong = Vec::new();
    let mut parts = Vec::new();
    for k in &figures.junk {
        let (answers, bytes) = k.answered();
        let allowed = ANSWERED.iter().find(|(kind, _, _)| *kind == k.kind);
        let ok = match allowed {
            Some((_, answer, size)) => {
                let (n, b) = k.answers.get(*answer).copied().unwrap_or((0, 0));
                n == answers && n <= k.sent && b == n * size && b <= k.sent_bytes
            }
            // Cookies to the forged-register socket's own Hellos are taken apart before
            // counting: nothing may remain.
            None => answers == 0,
        };
        let text = format!(
            "{} {} sent ({} bytes), {answers} answered ({bytes} bytes{})",
            k.kind,
            k.sent,
            k.sent_bytes,
            if k.answers.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    k.answers
                        .iter()
                        .map(|(kind, (n, _))| format!("{n} {kind}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        if !ok || k.sent == 0 {
            wrong.push(text.clone());
        }
        parts.push(text);
    }
    // A rendezvous that answers nothing at all would pass the rest.
    let hellos = figures.junk.iter().find(|k| k.kind == "hello");
    let hello_answers = hellos.map_or(0, |k| k.answered().0);
    checks.push(check(
        "datagram junk answered only as documented",
        wrong.is_empty() && hello_answers > 0 && !figures.junk.is_empty(),
        format!(
            "{}{}",
            if wrong.is_empty() {
                String::new()
            } else {
                format!("WRONG (or none sent): {}; all: ", wrong.join("; "))
            },
            parts.join("; ")
        ),
    ));

    // Authentication failures: at least every one the rendezvous answered (a Cookie to a
    // stale Register, an Unknown), at most every datagram that could have been one.
    let kind = |name: &str| figures.junk.iter().find(|k| k.kind == name);
    let answered_as = |name: &str, answer: &str| {
        kind(name).map_or(0, |k| k.answers.get(answer).map_or(0, |a| a.0))
    };
    let low = answered_as("stale-register", "Cookie")
        + answered_as("no-session", "Unknown")
        + (lookups + punches) as u64;
    let junk_sent: u64 = figures
        .junk
        .iter()
        .filter(|k| k.kind != "hello")
        .map(|k| k.sent)
        .sum();
    let pushes = metrics.punch_pushed.unwrap_or(0.0) as u64;
    let high = junk_sent
        + figures.flooders.raw_sent
        + figures.flooders.register_cookies
        + pushes * figures.push_attempts.saturating_sub(1);
    let counted = metrics.datagram_auth_failures;
    checks.push(check(
        "datagram authentication failures counted",
        counted.is_some_and(|c| c >= low as f64 && c <= high as f64),
        format!(
            "drops_total{{component=\"datagram\",reason=\"auth_failure\"}}: {}, expected {low} (answered: Cookies to stale Registers, Unknowns) to {high} (junk but Hellos {junk_sent}, requests without a session {}, Registers answered by a Cookie {}, stray acks of {pushes} pushes at most {} each); malformed: {}, verify_queue: {}, push_quota: {}",
            shown(counted),
            figures.flooders.raw_sent,
            figures.flooders.register_cookies,
            figures.push_attempts.saturating_sub(1),
            shown(metrics.datagram_malformed),
            shown(metrics.datagram_verify_queue),
            shown(metrics.datagram_push_quota),
        ),
    ));

    let w = &figures.witness;
    let registered = w
        .registered
        .as_deref()
        .is_some_and(|r| r.parse::<std::net::SocketAddr>().is_ok());
    checks.push(check(
        "the witness was served throughout",
        registered && w.of_nodes > 0 && w.failed == 0 && w.found == w.lookups,
        format!(
            "registered at {}; {} lookups every 250 ms from before the flood to its end ({} of alice and bob), {} Found, {} failed{}",
            w.registered.as_deref().unwrap_or("-"),
            w.lookups,
            w.of_nodes,
            w.found,
            w.failed,
            w.example
                .as_ref()
                .map_or(String::new(), |e| format!(" (e.g. {e})"))
        ),
    ));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    fn sources() -> Vec<Source> {
        vec![Source {
            name: "a".into(),
            host: "flood".into(),
            bind: Ipv4Addr::new(198, 51, 100, 100),
            seen_ip: Ipv4Addr::new(198, 51, 100, 100),
            identities: 40,
            quic: 20,
            socket_each: false,
        }]
    }

    /// 40 identities, 20 over QUIC; 20 registered (12 over datagrams); 2 punch rounds.
    fn tallies() -> Vec<SourceTally> {
        vec![SourceTally {
            connected: 40,
            quic_connected: 20,
            registered: 20,
            registered_dgram: 12,
            lookups_unknown: 8,
            punch_unknown: 16,
            ..SourceTally::default()
        }]
    }

    fn kind(name: &str, sent: u64, size: u64, answer: Option<(&str, u64, u64)>) -> KindTally {
        KindTally {
            kind: name.into(),
            sent,
            sent_bytes: sent * size,
            cookie_hellos: 0,
            answers: answer
                .map(|(a, n, s)| (a.to_string(), (n, n * s)))
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn figures() -> DgramFigures {
        DgramFigures {
            flooders: DgramStats {
                raw_sent: 30,
                ..DgramStats::default()
            },
            junk: vec![
                kind("hello", 100, 48, Some(("Cookie", 90, 30))),
                kind("stale-register", 100, 144, Some(("Cookie", 100, 30))),
                kind("forged-register", 100, 144, None),
                kind("bad-tag", 100, 118, None),
                kind("replay", 100, 118, None),
                kind("no-session", 100, 118, Some(("Unknown", 100, 22))),
            ],
            witness: WitnessTally {
                registered: Some("198.51.100.250:4000".into()),
                lookups: 40,
                found: 40,
                of_nodes: 30,
                ..WitnessTally::default()
            },
            punch_rounds: 2,
            push_attempts: 5,
        }
    }

    fn metrics() -> Scraped {
        Scraped {
            registered_peers: Some(23.0),
            // 100 stale + 100 no-session + 24 sessionless, plus 300 silent ones.
            datagram_auth_failures: Some(524.0),
            punch_pushed: Some(10.0),
            ..Scraped::default()
        }
    }

    use super::super::checks::failed_names as failed;

    #[test]
    fn a_run_as_documented_passes() {
        let checks = verdict(&sources(), &tallies(), &metrics(), &figures(), 3);
        assert_eq!(failed(&checks), Vec::<&str>::new(), "{checks:#?}");
    }

    #[test]
    fn a_lost_session_or_an_unrefused_request_fails() {
        let mut m = metrics();
        m.registered_peers = Some(22.0);
        let checks = verdict(&sources(), &tallies(), &m, &figures(), 3);
        assert_eq!(failed(&checks), vec!["registry holds every registration"]);
        let mut t = tallies();
        t[0].punch_unknown = 15;
        let checks = verdict(&sources(), &t, &metrics(), &figures(), 3);
        assert_eq!(
            failed(&checks),
            vec!["requests without a session answered Unknown"]
        );
    }

    #[test]
    fn an_answer_to_silent_junk_or_a_larger_answer_fails() {
        let mut f = figures();
        f.junk[3].answers.insert("Response".into(), (1, 60));
        let checks = verdict(&sources(), &tallies(), &metrics(), &f, 3);
        assert_eq!(
            failed(&checks),
            vec!["datagram junk answered only as documented"]
        );
        let mut f = figures();
        f.junk[0].answers.insert("Cookie".into(), (90, 90 * 31));
        let checks = verdict(&sources(), &tallies(), &metrics(), &f, 3);
        assert_eq!(
            failed(&checks),
            vec!["datagram junk answered only as documented"]
        );
        // A rendezvous that answers nothing fails too.
        let mut f = figures();
        f.junk[0].answers.clear();
        let checks = verdict(&sources(), &tallies(), &metrics(), &f, 3);
        assert_eq!(
            failed(&checks),
            vec!["datagram junk answered only as documented"]
        );
    }

    #[test]
    fn drops_outside_the_bounds_or_an_unserved_witness_fail() {
        let mut m = metrics();
        m.datagram_auth_failures = Some(223.0);
        let checks = verdict(&sources(), &tallies(), &m, &figures(), 3);
        assert_eq!(
            failed(&checks),
            vec!["datagram authentication failures counted"]
        );
        // 500 junk but Hellos + 30 + 0 + 10 pushes x 4 = 570.
        m.datagram_auth_failures = Some(571.0);
        let checks = verdict(&sources(), &tallies(), &m, &figures(), 3);
        assert_eq!(
            failed(&checks),
            vec!["datagram authentication failures counted"]
        );
        let mut f = figures();
        f.witness.failed = 1;
        f.witness.found = 39;
        let checks = verdict(&sources(), &tallies(), &metrics(), &f, 3);
        assert_eq!(failed(&checks), vec!["the witness was served throughout"]);
    }
}
