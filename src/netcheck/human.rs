//! The text form of a netcheck [`Report`], for people.

use std::fmt::Write;

use super::Report;

fn ms(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.1} ms"))
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  * {label:<24} {value}");
    };
    line("rendezvous:", report.rendezvous.clone());
    line("UDP:", yes_no(Some(report.udp)).into());
    line(
        "IPv4:",
        report.ipv4.map_or("none".into(), |a| format!("yes, {a}")),
    );
    line(
        "IPv6:",
        report.ipv6.map_or("none".into(), |a| format!("yes, {a}")),
    );
    line(
        "NAT:",
        format!(
            "{} (mapping {}, filtering {})",
            report.nat_type, report.mapping, report.filtering
        ),
    );
    line(
        "mapping varies by dest:",
        match report.mapping {
            "endpoint-dependent" => "yes".into(),
            "endpoint-independent" | "public" => "no".into(),
            _ => "unknown".into(),
        },
    );
    line("hairpinning:", yes_no(report.hairpinning).into());
    line(
        "rendezvous UDP:",
        if report.rendezvous_udp.reachable {
            format!(
                "{} reachable, rtt {}",
                report.rendezvous_udp.address,
                ms(report.rendezvous_udp.rtt_ms)
            )
        } else {
            format!("{} no answer", report.rendezvous_udp.address)
        },
    );
    for server in report.stun_servers.iter().skip(1) {
        line(
            "  STUN alternate:",
            format!(
                "{} -> {}",
                server.address,
                server
                    .mapped
                    .map_or("no answer".into(), |m| format!("sees {m}"))
            ),
        );
    }
    let tls = &report.rendezvous_tls;
    line(
        "rendezvous TLS:",
        if tls.reachable {
            format!(
                "{} reachable, rtt {} (TCP+TLS {})",
                tls.address,
                ms(tls.rtt_ms),
                ms(tls.handshake_ms)
            )
        } else {
            format!(
                "{} not reachable: {}",
                tls.address,
                tls.error.as_deref().unwrap_or("no answer")
            )
        },
    );
    if let Some(registration) = &report.registration {
        line(
            "registration:",
            format!(
                "over {}, seen as {}, handshake {}, request {}",
                registration.over,
                registration.observed,
                ms(Some(registration.rtt.handshake_ms)),
                ms(Some(registration.rtt.request_ms))
            ),
        );
    }
    line(
        "relay (TURN/UDP):",
        match &report.relay {
            Some(relay) if relay.reachable => format!(
                "{} allocated {} and released, rtt {}, allocate {}",
                relay.server,
                relay.relayed.map_or("-".into(), |a| a.to_string()),
                ms(relay.rtt_ms),
                ms(relay.allocate_ms)
            ),
            Some(relay) => format!(
                "{} failed: {}",
                relay.server,
                relay.error.as_deref().unwrap_or("no answer")
            ),
            None => "not checked".into(),
        },
    );
    let pm = &report.port_mapping;
    line(
        "port mapping:",
        match pm.gateway {
            None => "not checked".into(),
            Some(gateway) if !pm.available() => {
                format!("not available (nothing answered at {gateway})")
            }
            Some(gateway) => {
                let mut found = Vec::new();
                for (on, name) in [(pm.nat_pmp, "NAT-PMP"), (pm.pcp, "PCP"), (pm.upnp, "UPnP")] {
                    if on {
                        found.push(name);
                    }
                }
                format!("{} at {gateway}", found.join(", "))
            }
        },
    );
    let mut text = String::from("Report:\n");
    text.push_str(&out);
    for note in &report.notes {
        let _ = writeln!(text, "  note: {note}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::super::{portmap::PortMapping, services::TlsCheck, UdpCheck};
    use super::*;

    fn addr(text: &str) -> std::net::SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_unreachable_rendezvous_reads_honestly() {
        let report = Report {
            rendezvous: "192.0.2.9:3478".into(),
            reachable: false,
            udp: false,
            ipv4: None,
            ipv6: None,
            mapping: "unknown",
            filtering: "unknown",
            nat_type: "unknown",
            hairpinning: None,
            rendezvous_udp: UdpCheck {
                address: addr("192.0.2.9:3478"),
                reachable: false,
                rtt_ms: None,
            },
            stun_servers: Vec::new(),
            registration: None,
            rendezvous_tls: TlsCheck {
                address: addr("192.0.2.9:443"),
                reachable: false,
                rtt_ms: None,
                handshake_ms: None,
                error: Some("TCP connect timed out".into()),
            },
            relay: None,
            port_mapping: PortMapping {
                gateway: Some(std::net::Ipv4Addr::new(10, 0, 0, 1)),
                ..PortMapping::default()
            },
            port_mapping_available: false,
            notes: vec!["IPv6 not checked".into()],
        };
        let text = render(&report);
        for line in [
            "UDP:                     no",
            "192.0.2.9:3478 no answer",
            "not reachable: TCP connect timed out",
            "hairpinning:             unknown",
            "relay (TURN/UDP):        not checked",
            "not available (nothing answered at 10.0.0.1)",
            "note: IPv6 not checked",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }
}
