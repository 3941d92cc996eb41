//! The flood's verdict: pure functions from what the flood counted, what the rendezvous's
//! metrics say and what the legitimate nodes did, to a list of checks that pass or fail.
//! Unit-tested without root, including the failures.

use super::generator::{Source, SourceTally};
use crate::matrix::cell::MessageTally;
use serde::Serialize;

/// The limits the rendezvous was told to apply (the flood sets refills of ten minutes, so
/// each is an exact count during the run).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub new_per_ip_burst: u32,
    pub punch_per_ip_burst: u32,
}

/// The rendezvous's metrics that the checks read (`None`: absent from the scrape).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scraped {
    pub registration_rate_limit_drops: Option<f64>,
    pub registration_quota_drops: Option<f64>,
    pub punch_rate_limit_drops: Option<f64>,
    pub punch_pushed: Option<f64>,
    pub quic_control_connections: Option<f64>,
    pub tls_control_connections: Option<f64>,
    pub registrations: Option<f64>,
    pub lookups_not_found: Option<f64>,
    pub stun_malformed_drops: Option<f64>,
    pub quic_quota_drops: Option<f64>,
    pub registered_peers: Option<f64>,
    pub datagram_auth_failures: Option<f64>,
    pub datagram_malformed: Option<f64>,
    pub datagram_verify_queue: Option<f64>,
    pub datagram_push_quota: Option<f64>,
}

/// Reads [`Scraped`] from a Prometheus text exposition.
pub fn scraped(text: &str) -> Scraped {
    let drops = |component: &str, reason: &str| {
        metric(
            text,
            "p2pnat_rendezvous_drops_total",
            &[("component", component), ("reason", reason)],
        )
    };
    Scraped {
        registration_rate_limit_drops: drops("registration", "rate_limit"),
        registration_quota_drops: drops("registration", "quota"),
        punch_rate_limit_drops: drops("punch", "rate_limit"),
        punch_pushed: metric(
            text,
            "p2pnat_rendezvous_punch_requests_total",
            &[("result", "pushed")],
        ),
        quic_control_connections: metric(
            text,
            "p2pnat_rendezvous_connections",
            &[("kind", "quic_control")],
        ),
        tls_control_connections: metric(
            text,
            "p2pnat_rendezvous_connections",
            &[("kind", "tls_control")],
        ),
        registrations: metric(text, "p2pnat_rendezvous_registrations_total", &[]),
        lookups_not_found: metric(
            text,
            "p2pnat_rendezvous_lookups_total",
            &[("result", "not_found")],
        ),
        stun_malformed_drops: drops("stun", "malformed"),
        quic_quota_drops: drops("quic", "quota"),
        registered_peers: metric(text, "p2pnat_rendezvous_registered_peers", &[]),
        datagram_auth_failures: drops("datagram", "auth_failure"),
        datagram_malformed: drops("datagram", "malformed"),
        datagram_verify_queue: drops("datagram", "verify_queue"),
        datagram_push_quota: drops("datagram", "push_quota"),
    }
}

/// The value of the first sample named `name` whose labels include every one of `labels`
/// (Prometheus/OpenMetrics text format; label values here never hold commas or quotes).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(inner) => inner.split_once('}')?,
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        let have: Vec<(&str, &str)> = label_text
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k.trim(), v.trim().trim_matches('"')))
            })
            .collect();
        if !labels.iter().all(|want| have.contains(want)) {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// What the two legitimate nodes did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Legit {
    /// Flooders done (connected and answered) when both nodes were ready: below the total,
    /// they registered in the middle of the flood.
    pub flooders_arrived_at_ready: usize,
    pub alice_ready: String,
    pub bob_ready: String,
    /// Times alice dialled bob (her first send, and one per disconnect round), each one a
    /// lookup and a punch request at the rendezvous during the flood.
    pub dials: usize,
    /// Whether the punch flood was still running when the exchange ended (else the exchange
    /// did not meet it).
    pub under_punch_flood: bool,
    pub connected: bool,
    pub path: Option<String>,
    /// From a send to its arrival, the slowest of their messages (a figure, not a check).
    pub slowest_message_ms: Option<f64>,
    /// Punch requests the nodes dropped because their queue of pushes was full (counted in
    /// their logs; a figure, not a check).
    pub pushes_dropped: usize,
    /// Pushes over control datagrams that found the queue full and were left unacknowledged
    /// for the rendezvous to resend (a figure, not a check).
    pub pushes_deferred: usize,
    pub messages: MessageTally,
    /// Where a node's `ready` disagrees with the lab (observed address, NAT behaviour), for
    /// nodes registered over UDP.
    pub observed_mismatches: Vec<String>,
    /// Nodes that registered over TLS: a node tries the rendezvous's TLS port beside QUIC when
    /// QUIC has not answered within a second (and moves back to QUIC later). The flood's junk
    /// and handshakes can delay that answer; served, but reported.
    pub fell_back_to_tls: Vec<String>,
    pub notes: Vec<String>,
}

/// The rendezvous's memory.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    /// VmRSS before the flood, KiB.
    pub before_kib: u64,
    /// VmRSS at the end, connections still held, KiB.
    pub after_kib: u64,
    /// VmHWM (peak resident set) at the end, KiB.
    pub peak_kib: u64,
    /// The documented bound for this many held connections and datagram sessions, KiB.
    pub bound_kib: u64,
    pub connections: usize,
    pub sessions: usize,
}

/// The documented memory bound (docs/PERFORMANCE.md, "What a public rendezvous withstands"):
/// `base_mib`, plus `per_connection_kib` for each held QUIC connection, plus
/// `per_session_kib` for each datagram session.
pub fn memory_bound_kib(
    base_mib: u64,
    per_connection_kib: u64,
    connections: usize,
    per_session_kib: u64,
    sessions: usize,
) -> u64 {
    base_mib * 1024 + per_connection_kib * connections as u64 + per_session_kib * sessions as u64
}

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

pub(super) fn check(name: &str, passed: bool, detail: String) -> Check {
    Check {
        name: name.into(),
        passed,
        detail,
    }
}

fn exact(name: &str, what: &str, got: Option<f64>, want: usize) -> Check {
    let passed = got == Some(want as f64);
    let shown = got.map_or("(missing)".to_string(), |g| format!("{g}"));
    check(name, passed, format!("{what}: {shown}, expected {want}"))
}

/// Every check of the flood but the datagram ones ([`super::checks_dgram`]).
pub fn verdict(
    sources: &[Source],
    tallies: &[SourceTally],
    limits: Limits,
    metrics: &Scraped,
    legit: &Legit,
    memory: Memory,
    rendezvous_alive: bool,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let identities: usize = sources.iter().map(|s| s.identities).sum();
    let connected: usize = tallies.iter().map(|t| t.connected).sum();
    let quic_connected: usize = tallies.iter().map(|t| t.quic_connected).sum();
    let quic_planned: usize = sources.iter().map(|s| s.quic.min(s.identities)).sum();
    checks.push(check(
        "every flooder connected",
        connected == identities && quic_connected == quic_planned,
        format!(
            "{connected} of {identities}: {quic_connected} of {quic_planned} QUIC handshakes completed, {} of {} Hellos answered (the global caps are not what this flood tests)",
            connected - quic_connected,
            identities - quic_planned
        ),
    ));

    // Registrations: exactly min(burst, n) per source IP, the rest refused RateLimited.
    let burst = limits.new_per_ip_burst as usize;
    let mut wrong = Vec::new();
    let mut refused_total = 0;
    for (s, t) in sources.iter().zip(tallies) {
        let want = burst.min(t.connected);
        let limited = t.refused.get("RateLimited").copied().unwrap_or(0);
        refused_total += limited;
        let others: Vec<String> = t
            .refused
            .iter()
            .filter(|(code, _)| code.as_str() != "RateLimited")
            .map(|(code, n)| format!("{n} {code}"))
            .collect();
        if t.registered != want
            || limited != t.connected - want
            || !others.is_empty()
            || t.register_errors > 0
        {
            wrong.push(format!(
                "{} ({}): {} registered, {limited} RateLimited{}{}, expected {want} and {}",
                s.name,
                s.seen_ip,
                t.registered,
                others.iter().map(|o| format!(", {o}")).collect::<String>(),
                if t.register_errors > 0 {
                    format!(", {} unanswered", t.register_errors)
                } else {
                    String::new()
                },
                t.connected - want
            ));
        }
    }
    let registered: usize = tallies.iter().map(|t| t.registered).sum();
    let registered_dgram: usize = tallies.iter().map(|t| t.registered_dgram).sum();
    checks.push(check(
        "new registrations per source IP",
        wrong.is_empty(),
        if wrong.is_empty() {
            format!("exactly {burst} per IP (--new-per-ip-burst), both transports together: {registered} registered ({registered_dgram} over datagrams, {} over QUIC), {refused_total} refused RateLimited, from {} source IPs", registered - registered_dgram, sources.len())
        } else {
            wrong.join("; ")
        },
    ));
    // Over datagrams the rendezvous refuses (and counts) every copy of a Register that
    // reaches it, and answers each: the flooders count every refusal that comes back.
    let register_resends: u64 = tallies.iter().map(|t| t.register_resends).sum();
    let quic_refused: u64 = tallies
        .iter()
        .map(|t| t.refused_quic.get("RateLimited").copied().unwrap_or(0) as u64)
        .sum();
    let dgram_copies: u64 = tallies.iter().map(|t| t.rate_limited_copies).sum();
    checks.push(exact(
        "registration refusals counted",
        &format!(
            "drops_total{{component=\"registration\",reason=\"rate_limit\"}} ({quic_refused} refused over QUIC, {dgram_copies} refusals received over datagrams: {} identities refused, {register_resends} Register datagrams sent again)",
            (refused_total as u64).saturating_sub(quic_refused)
        ),
        metrics.registration_rate_limit_drops,
        (quic_refused + dgram_copies) as usize,
    ));
    let elsewhere: usize = tallies.iter().map(|t| t.observed_elsewhere).sum();
    checks.push(check(
        "the rendezvous saw each flooder at its lab source address",
        elsewhere == 0,
        format!("{elsewhere} registrations observed from an address other than the source's (its own, or its NAT's public address)"),
    ));

    // Punch requests: exactly min(burst, requests) pushed per source IP.
    let punch_burst = limits.punch_per_ip_burst as usize;
    let answered: usize = tallies.iter().map(|t| t.punch_answered).sum();
    let found: usize = tallies.iter().map(|t| t.punch_found).sum();
    let unanswered: usize = tallies.iter().map(|t| t.punch_errors).sum();
    let without_session: usize = tallies.iter().map(|t| t.punch_unknown).sum();
    let pushed: usize = tallies
        .iter()
        .map(|t| punch_burst.min(t.punch_answered))
        .sum();
    checks.push(check(
        "every punch request answered Found",
        unanswered == 0 && found == answered && answered > 0,
        format!("{answered} answered ({found} Found), {unanswered} unanswered; besides, {without_session} from datagram identities without a session answered Unknown"),
    ));
    checks.push(exact(
        "punch pushes per source IP",
        &format!("drops_total{{component=\"punch\",reason=\"rate_limit\"}} (all but {punch_burst} per IP, --punch-per-ip-burst; the legitimate nodes' own requests must never be limited)"),
        metrics.punch_rate_limit_drops,
        answered - pushed,
    ));
    let legit_pushes = legit.dials;
    checks.push(check(
        "punch pushes counted",
        metrics
            .punch_pushed
            .is_some_and(|p| p >= (pushed + legit_pushes) as f64),
        format!(
            "punch_requests_total{{result=\"pushed\"}}: {}, expected at least {pushed} from the flood and {legit_pushes} from alice's dials",
            metrics.punch_pushed.map_or("(missing)".into(), |p| p.to_string())
        ),
    ));
    // Over QUIC a lookup needs no registration; over datagrams it needs a session.
    let not_found: usize = tallies.iter().map(|t| t.lookups_not_found).sum();
    let served = quic_connected + registered_dgram;
    checks.push(check(
        "flooders' lookups of nobody answered NotFound",
        not_found == served,
        format!("{not_found} of {served} (every QUIC flooder and every datagram flooder with a session)"),
    ));
    // Every QUIC flooder's connection is still held; the nodes hold none (datagrams, or TLS).
    let quic = metrics.quic_control_connections;
    checks.push(check(
        "connections held",
        quic == Some(quic_connected as f64),
        format!(
            "connections{{kind=\"quic_control\"}}: {}, expected the {quic_connected} QUIC flooders'; tls_control: {}",
            quic.map_or("(missing)".into(), |q| q.to_string()),
            metrics
                .tls_control_connections
                .map_or("(missing)".into(), |q| q.to_string())
        ),
    ));

    // The legitimate nodes.
    let m = &legit.messages;
    let ready = legit.alice_ready != "-" && legit.bob_ready != "-";
    checks.push(check(
        "legitimate nodes registered under the flood",
        ready && legit.observed_mismatches.is_empty(),
        format!(
            "alice ready {}; bob ready {}{}{}",
            ready_summary(&legit.alice_ready),
            ready_summary(&legit.bob_ready),
            if legit.fell_back_to_tls.is_empty() {
                String::new()
            } else {
                format!(
                    "; registered over TLS (QUIC's answer took over a second): {}",
                    legit.fell_back_to_tls.join(", ")
                )
            },
            legit
                .observed_mismatches
                .iter()
                .map(|p| format!("; {p}"))
                .collect::<String>()
        ),
    ));
    let all_delivered = legit.connected
        && m.sent > 0
        && m.delivered == m.sent
        && m.unconfirmed == 0
        && m.failed == 0
        && m.lost == 0
        && m.corrupted == 0
        && m.duplicated == 0
        && m.double_terminal == 0;
    checks.push(check(
        "legitimate nodes served",
        all_delivered,
        format!(
            "{} dials by alice (lookup + punch each) during the punch flood; {} of {} messages delivered intact with a delivered event ({} failed, {} lost, {} unconfirmed); slowest {} ms; path at the end: {}; {} pushes dropped by the nodes' full push queues, {} deferred until resent",
            legit.dials,
            m.delivered,
            m.sent,
            m.failed,
            m.lost,
            m.unconfirmed,
            legit
                .slowest_message_ms
                .map_or("-".to_string(), |v| v.to_string()),
            legit.path.as_deref().unwrap_or("-"),
            legit.pushes_dropped,
            legit.pushes_deferred
        ),
    ));

    checks.push(check(
        "the exchange ran under the punch flood",
        legit.under_punch_flood,
        "the punch flood was still running when the legitimate exchange ended".into(),
    ));
    checks.push(check(
        "rendezvous memory under the documented bound",
        memory.peak_kib > 0 && memory.peak_kib < memory.bound_kib,
        format!(
            "VmRSS {:.1} MiB before, {:.1} MiB after, peak (VmHWM) {:.1} MiB, bound {:.1} MiB for {} QUIC connections and {} datagram sessions",
            mib(memory.before_kib),
            mib(memory.after_kib),
            mib(memory.peak_kib),
            mib(memory.bound_kib),
            memory.connections,
            memory.sessions
        ),
    ));
    checks.push(check(
        "junk counted and dropped",
        metrics.stun_malformed_drops.is_some_and(|d| d > 0.0),
        format!(
            "drops_total{{component=\"stun\",reason=\"malformed\"}}: {}",
            metrics
                .stun_malformed_drops
                .map_or("(missing)".into(), |d| d.to_string())
        ),
    ));
    checks.push(check(
        "rendezvous still running",
        rendezvous_alive,
        String::new(),
    ));
    checks
}

/// The `observed=` and `nat=` fields of a `ready` event, or `-`.
fn ready_summary(ready: &str) -> String {
    let fields: Vec<&str> = ready
        .split(' ')
        .filter(|w| w.starts_with("observed=") || w.starts_with("nat=") || w.starts_with("over="))
        .collect();
    if fields.is_empty() {
        "-".into()
    } else {
        fields.join(" ")
    }
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// The names of the checks that failed (for tests).
#[cfg(test)]
pub(super) fn failed_names(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    const TEXT: &str = "# HELP p2pnat_rendezvous_drops Requests dropped\n\
        # TYPE p2pnat_rendezvous_drops counter\n\
        p2pnat_rendezvous_drops_total{component=\"registration\",reason=\"rate_limit\"} 40\n\
        p2pnat_rendezvous_drops_total{component=\"punch\",reason=\"rate_limit\"} 76\n\
        p2pnat_rendezvous_drops_total{component=\"stun\",reason=\"malformed\"} 1234\n\
        p2pnat_rendezvous_punch_requests_total{result=\"pushed\"} 26\n\
        p2pnat_rendezvous_connections{kind=\"quic_control\"} 100\n\
        p2pnat_rendezvous_registrations_total 42\n\
        p2pnat_rendezvous_registrations_created 1.7e9\n\
        p2pnat_rendezvous_lookups_total{result=\"not_found\"} 100\n";

    fn sources() -> Vec<Source> {
        let s = |name: &str, ip: u8, n| Source {
            name: name.into(),
            host: "flood".into(),
            bind: Ipv4Addr::new(198, 51, 100, ip),
            seen_ip: Ipv4Addr::new(198, 51, 100, ip),
            identities: n,
            quic: n,
            socket_each: false,
        };
        vec![s("a", 100, 50), s("b", 101, 30), s("c", 102, 20)]
    }

    /// What a correct run with bursts 20/8 and one punch round looks like.
    fn tallies() -> Vec<SourceTally> {
        [50usize, 30, 20]
            .iter()
            .map(|&n| {
                let refused: BTreeMap<String, usize> = [("RateLimited".to_string(), n - 20.min(n))]
                    .into_iter()
                    .filter(|(_, c)| *c > 0)
                    .collect();
                SourceTally {
                    connected: n,
                    quic_connected: n,
                    registered: 20.min(n),
                    refused_quic: refused.clone(),
                    refused,
                    lookups_not_found: n,
                    punch_answered: n,
                    punch_found: n,
                    ..SourceTally::default()
                }
            })
            .collect()
    }

    fn legit() -> Legit {
        Legit {
            alice_ready: "id=a".into(),
            bob_ready: "id=b".into(),
            dials: 2,
            under_punch_flood: true,
            connected: true,
            path: Some("direct".into()),
            messages: MessageTally {
                sent: 4,
                delivered: 4,
                ..MessageTally::default()
            },
            ..Legit::default()
        }
    }

    const LIMITS: Limits = Limits {
        new_per_ip_burst: 20,
        punch_per_ip_burst: 8,
    };

    fn memory() -> Memory {
        Memory {
            before_kib: 10_000,
            after_kib: 34_000,
            peak_kib: 35_000,
            bound_kib: memory_bound_kib(32, 48, 100, 8, 0),
            connections: 100,
            sessions: 0,
        }
    }

    use super::failed_names as failed;

    #[test]
    fn metrics_are_read_by_name_and_labels() {
        let m = scraped(TEXT);
        assert_eq!(m.registration_rate_limit_drops, Some(40.0));
        assert_eq!(m.punch_rate_limit_drops, Some(76.0));
        assert_eq!(m.punch_pushed, Some(26.0));
        assert_eq!(m.quic_control_connections, Some(100.0));
        assert_eq!(m.registrations, Some(42.0), "not the _created line");
        assert_eq!(m.registration_quota_drops, None);
        assert_eq!(
            metric(
                TEXT,
                "p2pnat_rendezvous_drops_total",
                &[("reason", "malformed")]
            ),
            Some(1234.0)
        );
    }

    #[test]
    fn a_run_within_the_limits_passes() {
        let checks = verdict(
            &sources(),
            &tallies(),
            LIMITS,
            &scraped(TEXT),
            &legit(),
            memory(),
            true,
        );
        assert_eq!(failed(&checks), Vec::<&str>::new(), "{checks:#?}");
    }

    #[test]
    fn a_raised_registration_limit_fails() {
        // The rendezvous let 40 a source through instead of 20.
        let mut t = tallies();
        t[0].registered = 40;
        t[0].refused.insert("RateLimited".into(), 10);
        t[0].refused_quic.insert("RateLimited".into(), 10);
        let checks = verdict(
            &sources(),
            &t,
            LIMITS,
            &scraped(TEXT),
            &legit(),
            memory(),
            true,
        );
        assert!(failed(&checks).contains(&"new registrations per source IP"));
        // And the metric no longer matches what was refused.
        assert!(failed(&checks).contains(&"registration refusals counted"));
    }

    #[test]
    fn every_refused_datagram_copy_must_be_counted_once() {
        // Source a's 30 refusals came over datagrams instead: 36 refusals came back (6
        // copies sent again and refused again); the metric must say 36 + 10.
        let mut t = tallies();
        t[0].refused_quic.clear();
        t[0].rate_limited_copies = 36;
        t[0].register_resends = 9;
        let text = TEXT.replace("reason=\"rate_limit\"} 40", "reason=\"rate_limit\"} 46");
        let run = |text: &str| {
            verdict(
                &sources(),
                &t,
                LIMITS,
                &scraped(text),
                &legit(),
                memory(),
                true,
            )
        };
        assert_eq!(failed(&run(&text)), Vec::<&str>::new());
        assert_eq!(failed(&run(TEXT)), vec!["registration refusals counted"]);
    }

    #[test]
    fn a_raised_punch_limit_or_another_refusal_fails() {
        let text = TEXT.replace("reason=\"rate_limit\"} 76", "reason=\"rate_limit\"} 70");
        let checks = verdict(
            &sources(),
            &tallies(),
            LIMITS,
            &scraped(&text),
            &legit(),
            memory(),
            true,
        );
        assert_eq!(failed(&checks), vec!["punch pushes per source IP"]);
        let mut t = tallies();
        t[1].refused.insert("RegistryFull".into(), 1);
        t[1].registered -= 1;
        let checks = verdict(
            &sources(),
            &t,
            LIMITS,
            &scraped(TEXT),
            &legit(),
            memory(),
            true,
        );
        assert!(failed(&checks).contains(&"new registrations per source IP"));
    }

    #[test]
    fn a_node_over_tls_is_served_but_a_dropped_flooder_connection_fails() {
        let mut l = legit();
        l.fell_back_to_tls.push("bob".into());
        let text = TEXT;
        let checks = verdict(
            &sources(),
            &tallies(),
            LIMITS,
            &scraped(text),
            &l,
            memory(),
            true,
        );
        assert_eq!(failed(&checks), Vec::<&str>::new(), "{checks:#?}");
        let registered = checks
            .iter()
            .find(|c| c.name.starts_with("legitimate nodes registered"));
        assert!(registered.is_some_and(|c| c.detail.contains("over TLS")));
        let text = TEXT.replace("quic_control\"} 100", "quic_control\"} 99");
        let checks = verdict(
            &sources(),
            &tallies(),
            LIMITS,
            &scraped(&text),
            &l,
            memory(),
            true,
        );
        assert_eq!(failed(&checks), vec!["connections held"]);
    }

    #[test]
    fn unserved_nodes_or_too_much_memory_fail() {
        let mut l = legit();
        l.messages.delivered = 3;
        l.messages.lost = 1;
        let checks = verdict(
            &sources(),
            &tallies(),
            LIMITS,
            &scraped(TEXT),
            &l,
            memory(),
            true,
        );
        assert_eq!(failed(&checks), vec!["legitimate nodes served"]);
        let mut big = memory();
        big.peak_kib = big.bound_kib;
        let checks = verdict(
            &sources(),
            &tallies(),
            LIMITS,
            &scraped(TEXT),
            &legit(),
            big,
            false,
        );
        assert_eq!(
            failed(&checks),
            vec![
                "rendezvous memory under the documented bound",
                "rendezvous still running"
            ]
        );
    }
}
