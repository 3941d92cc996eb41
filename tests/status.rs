//! The `status` command: each peer's state, path, round-trip time, bytes each way and messages
//! awaiting confirmation (docs/PROTOCOL.md 1.1); `list` names the real path.

mod common;

use common::{Node, Rendezvous};

fn field<'a>(event: &'a str, key: &str) -> &'a str {
    event
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key}= missing in {event:?}"))
}

#[test]
fn status_reports_each_peer_with_path_rtt_bytes_and_pending() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let mut b = Node::start(&rendezvous, &[]);
    a.command("status");
    assert_eq!(a.wait_event(|e| e.starts_with("peers ")), "peers 0");

    a.send(1, &b.id, &vec![5u8; 50_000]);
    a.wait_event(|e| e == format!("delivered 1 {}", b.id));
    b.wait_recvs(1);
    a.command("status");
    let status = a.wait_event(|e| e.starts_with("status "));
    assert_eq!(status.split_whitespace().nth(1), Some(b.id.as_str()));
    assert_eq!(field(&status, "state"), "connected");
    assert_eq!(field(&status, "path"), "direct");
    assert!(
        field(&status, "remote").starts_with("127.0.0.1:"),
        "{status}"
    );
    let rtt: f64 = field(&status, "rtt_ms").parse().unwrap();
    assert!(rtt > 0.0, "{status}");
    let sent: u64 = field(&status, "sent_bytes").parse().unwrap();
    let received: u64 = field(&status, "received_bytes").parse().unwrap();
    assert!(
        sent >= 50_000,
        "the message went out on this connection: {status}"
    );
    assert!(received > 0, "acknowledgements came back: {status}");
    assert_eq!(field(&status, "pending"), "0");
    assert_eq!(field(&status, "connections"), "1");
    assert_eq!(a.wait_event(|e| e.starts_with("peers ")), "peers 1");

    b.command("list");
    let peer = b.wait_event(|e| e.starts_with("peer "));
    let words: Vec<&str> = peer.split_whitespace().collect();
    assert_eq!(&words[1..4], &[a.id.as_str(), "connected", "direct"]);
}
