//! `p2p-node netcheck --json` against a real rendezvous on loopback: every field is there, and
//! on loopback there is no NAT (mapping `public`, nothing filtered, hairpinning works), the
//! TLS port and the relay answer, and nothing answers port mapping. Against nothing at all it
//! exits non-zero. Everything is sent to loopback addresses only (`--gateway 127.0.0.1`).

mod common;

use std::process::Command;

use common::{node_binary, Rendezvous};
use serde_json::Value;

/// A free port on `ip` (bound and released).
fn free_udp_port(ip: &str) -> u16 {
    let socket = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
    socket.local_addr().unwrap().port()
}

fn netcheck(args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(node_binary())
        .arg("netcheck")
        .args(args)
        // A node's identity is never needed nor touched: point it somewhere empty anyway.
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn netcheck_on_loopback_reports_no_nat_and_every_service() {
    // The alternate STUN address (and with it the inbound probe) on another loopback IP.
    let alternate = format!("127.0.0.2:{}", free_udp_port("127.0.0.2"));
    let rendezvous =
        Rendezvous::start(&["--stun-listen", &alternate, "--tls-listen", "127.0.0.1:0"]);
    let target = format!("{}@{}", rendezvous.id, rendezvous.addr);
    let tls = rendezvous.tls_addr.clone().unwrap();
    let (status, stdout) = netcheck(&[
        "--json",
        "--rendezvous",
        &target,
        "--tls",
        &tls,
        "--gateway",
        "127.0.0.1",
    ]);
    assert!(status.success(), "netcheck failed: {stdout}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON object");
    eprintln!("{report:#}");
    assert_eq!(report["reachable"], true);
    assert_eq!(report["udp"], true);
    assert_eq!(report["mapping"], "public");
    assert_eq!(report["filtering"], "endpoint-independent");
    assert_eq!(report["nat_type"], "no NAT, open");
    assert_eq!(report["hairpinning"], true);
    let ipv4: std::net::SocketAddr = report["ipv4"].as_str().unwrap().parse().unwrap();
    assert!(ipv4.ip().is_loopback());
    assert!(report["ipv6"].is_null());
    assert_eq!(report["rendezvous_udp"]["reachable"], true);
    assert!(report["rendezvous_udp"]["rtt_ms"].is_number());
    let servers = report["stun_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 2, "the rendezvous and its alternate");
    assert_eq!(servers[1]["address"], alternate.as_str());
    assert!(servers.iter().all(|s| s["mapped"].is_string()));
    assert_eq!(report["registration"]["over"], "udp");
    assert_eq!(report["registration"]["relay_offered"], true);
    assert!(report["registration"]["inbound_probe"].is_string());
    assert_eq!(report["rendezvous_tls"]["reachable"], true);
    assert_eq!(report["rendezvous_tls"]["address"], tls.as_str());
    assert!(report["rendezvous_tls"]["rtt_ms"].is_number());
    assert!(report["rendezvous_tls"]["handshake_ms"].is_number());
    assert_eq!(report["relay"]["reachable"], true);
    assert!(report["relay"]["relayed"].is_string());
    assert!(report["relay"]["rtt_ms"].is_number());
    assert_eq!(report["port_mapping"]["gateway"], "127.0.0.1");
    assert_eq!(report["port_mapping_available"], false);
    assert!(report["notes"].is_array());

    // The text form says the same for people.
    let (status, text) = netcheck(&["--rendezvous", &target, "--tls", &tls, "--no-portmap"]);
    assert!(status.success());
    assert!(text.contains("no NAT, open"), "{text}");
    assert!(text.contains("relay (TURN/UDP):"), "{text}");
}

#[test]
fn netcheck_without_a_rendezvous_exits_non_zero() {
    let udp = format!("127.0.0.1:{}", free_udp_port("127.0.0.1"));
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tls = tcp.local_addr().unwrap().to_string();
    drop(tcp);
    let (status, stdout) = netcheck(&[
        "--json",
        "--rendezvous",
        &udp,
        "--tls",
        &tls,
        "--no-portmap",
    ]);
    assert!(!status.success());
    let report: Value = serde_json::from_str(&stdout).expect("a report all the same");
    assert_eq!(report["reachable"], false);
    assert_eq!(report["udp"], false);
    assert_eq!(report["mapping"], "unknown");
    assert_eq!(report["rendezvous_tls"]["reachable"], false);
}
