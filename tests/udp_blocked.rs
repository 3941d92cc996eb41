//! A node whose UDP gets no answer from the rendezvous, on loopback with real binaries: it
//! registers over the rendezvous's TLS port after its 1 s grace (`ready ... over=tls`), its
//! relay runs over TLS too, and a peer registered over UDP reaches it through that relay with
//! every message delivered and confirmed, both ways.

mod common;

use common::{Node, Rendezvous};

fn field<'a>(ready: &'a str, key: &str) -> Option<&'a str> {
    ready
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key))
}

#[test]
fn a_node_without_udp_to_the_rendezvous_registers_and_relays_over_tls() {
    let rendezvous = Rendezvous::start(&["--tls-listen", "127.0.0.1:0"]);
    let tls = rendezvous.tls_addr.clone().expect("TLS port");
    // A UDP port that swallows every datagram: QUIC to it never completes, as behind a
    // firewall that drops UDP.
    let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_udp = black_hole.local_addr().unwrap().to_string();
    let mut blocked = Node::start_bounded(
        tempfile::tempdir().unwrap(),
        &dead_udp,
        &["--rendezvous-tls", &tls, "--relay-only"],
        1_000_000,
    );
    assert_eq!(
        field(&blocked.ready, "over="),
        Some("tls"),
        "{}",
        blocked.ready
    );
    assert_eq!(
        field(&blocked.ready, "nat="),
        Some("unknown"),
        "{}",
        blocked.ready
    );
    let relay = field(&blocked.ready, "relay=").unwrap_or("-");
    assert_ne!(relay, "-", "no relay over TLS: {}", blocked.ready);
    let mut open = Node::start(&rendezvous, &["--relay-only"]);
    assert_eq!(field(&open.ready, "over="), Some("udp"), "{}", open.ready);

    let (blocked_id, open_id) = (blocked.id.clone(), open.id.clone());
    for i in 0..20u64 {
        open.send(
            i,
            &blocked_id,
            format!("to the blocked node {i}").as_bytes(),
        );
    }
    let connected = open.wait_event(|e| e.starts_with(&format!("connected {blocked_id} ")));
    assert!(
        connected.starts_with(&format!("connected {blocked_id} relayed ")),
        "{connected}"
    );
    let received = blocked.wait_recvs(20);
    for (i, (peer, payload)) in received.iter().enumerate() {
        assert_eq!(peer, &open_id);
        assert_eq!(payload, format!("to the blocked node {i}").as_bytes());
    }
    for i in 0..20u64 {
        open.wait_event(|e| e == format!("delivered {i} {blocked_id}"));
    }
    // And back, on the same connection.
    for i in 100..110u64 {
        blocked.send(i, &open_id, format!("from the blocked node {i}").as_bytes());
    }
    let received = open.wait_recvs(10);
    for (k, (peer, payload)) in received.iter().enumerate() {
        assert_eq!(peer, &blocked_id);
        assert_eq!(
            payload,
            format!("from the blocked node {}", 100 + k).as_bytes()
        );
    }
    for i in 100..110u64 {
        blocked.wait_event(|e| e == format!("delivered {i} {open_id}"));
    }
    assert!(open.quit().success());
    assert!(blocked.quit().success());
}
