//! The relay on loopback, with real binaries: the rendezvous's built-in TURN server carries a
//! connection when both nodes are told to use relayed paths only, and every message arrives
//! intact and confirmed; with the default settings the same pair ends on a direct path.

mod common;

use common::{pseudo_random_bytes, Node, Rendezvous};

/// `ready ... relay=<addr>`: the node's relayed address, if it has one.
fn relay_of(ready: &str) -> Option<String> {
    ready
        .split_whitespace()
        .find_map(|field| field.strip_prefix("relay="))
        .filter(|addr| *addr != "-")
        .map(str::to_string)
}

#[test]
fn relay_only_pair_connects_through_the_built_in_relay_and_delivers_everything() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &["--relay-only"]);
    let mut b = Node::start(&rendezvous, &["--relay-only"]);
    assert!(relay_of(&a.ready).is_some(), "no relay in {}", a.ready);
    let b_relay = relay_of(&b.ready).expect("b has a relay");
    let b_id = b.id.clone();
    let big = pseudo_random_bytes(256 * 1024, 11);
    let count = 200u64;
    for i in 0..count {
        a.send(i, &b_id, format!("relayed {i}").as_bytes());
    }
    a.send(count, &b_id, &big);
    let connected = a.wait_event(|e| e.starts_with("connected "));
    assert!(
        connected.starts_with(&format!("connected {b_id} relayed ")),
        "{connected}"
    );
    let received = b.wait_recvs(count as usize + 1);
    for (i, (peer, payload)) in received.iter().take(count as usize).enumerate() {
        assert_eq!(peer, &a.id);
        assert_eq!(payload, format!("relayed {i}").as_bytes(), "message {i}");
    }
    assert!(received[count as usize].1 == big, "large message differs");
    for i in 0..=count {
        a.wait_event(|e| e == format!("delivered {i} {b_id}"));
    }
    // One of the two relayed addresses carried it: a's path names the peer as its relay saw
    // it, or b's relayed address.
    let remote = connected.split_whitespace().nth(3).unwrap().to_string();
    assert!(
        remote == b_relay || remote.starts_with("127.0.0.1:"),
        "{connected} (b's relay {b_relay})"
    );
    assert!(a.quit().success());
    assert!(b.quit().success());
}

#[test]
fn with_a_relay_available_a_loopback_pair_still_ends_direct() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let mut b = Node::start(&rendezvous, &[]);
    assert!(relay_of(&a.ready).is_some(), "no relay in {}", a.ready);
    let b_id = b.id.clone();
    a.send(1, &b_id, b"hello");
    b.wait_recvs(1);
    a.wait_event(|e| e == format!("delivered 1 {b_id}"));
    let connected = a.wait_event(|e| e.starts_with("connected "));
    if connected.starts_with(&format!("connected {b_id} relayed ")) {
        // The relay answered first; the direct path must take over under the same connection.
        let path = a.wait_event(|e| e.starts_with(&format!("path {b_id} direct ")));
        assert!(path.contains("127.0.0.1:"), "{path}");
    } else {
        assert!(
            connected.starts_with(&format!("connected {b_id} direct ")),
            "{connected}"
        );
    }
    a.send(2, &b_id, b"after");
    assert_eq!(b.wait_recvs(1)[0].1, b"after");
    a.wait_event(|e| e == format!("delivered 2 {b_id}"));
}

#[test]
fn no_relay_flag_leaves_the_node_without_one() {
    let rendezvous = Rendezvous::start(&[]);
    let a = Node::start(&rendezvous, &["--no-relay"]);
    assert_eq!(relay_of(&a.ready), None, "{}", a.ready);
}
