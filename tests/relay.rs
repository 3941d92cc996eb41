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

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn relayed_pair_survives_a_rendezvous_and_relay_restart() {
    let (port, turn_port) = (free_udp_port(), free_udp_port());
    let listen = format!("127.0.0.1:{port}");
    let turn_listen = format!("127.0.0.1:{turn_port}");
    let rendezvous = Rendezvous::start_on(&listen, &["--turn-listen", &turn_listen]);
    let mut a = Node::start(&rendezvous, &["--relay-only"]);
    let mut b = Node::start(&rendezvous, &["--relay-only"]);
    let b_id = b.id.clone();
    a.send(1, &b_id, b"before");
    assert_eq!(b.wait_recvs(1)[0].1, b"before");
    a.wait_event(|e| e == format!("delivered 1 {b_id}"));

    // The relay (built into the rendezvous) restarts: every allocation is forgotten.
    drop(rendezvous);
    let _restarted = Rendezvous::start_on(&listen, &["--turn-listen", &turn_listen]);
    // Both nodes reconnect, allocate anew and register their new relayed addresses.
    a.wait_event(|e| e.starts_with("registered "));
    b.wait_event(|e| e.starts_with("registered "));

    // A message sent now ends in exactly one verdict; a later one is delivered.
    a.send(2, &b_id, b"during");
    let verdict = a.wait_event(|e| e.ends_with(&format!("2 {b_id}")) || e.starts_with("failed 2 "));
    let mut id = 3;
    loop {
        a.send(id, &b_id, format!("after {id}").as_bytes());
        let verdict = a.wait_event(|e| {
            e == format!("delivered {id} {b_id}") || e.starts_with(&format!("failed {id} "))
        });
        if verdict.starts_with("delivered ") {
            break;
        }
        assert!(id < 6, "still failing after the restart: {verdict}");
        id += 1;
    }
    let received: Vec<Vec<u8>> = b.wait_recvs(1).into_iter().map(|(_, p)| p).collect();
    assert!(
        received[0] == b"during" || received[0] == format!("after {id}").as_bytes(),
        "{verdict}"
    );
}

#[test]
fn over_the_relay_quota_a_node_says_so_and_still_connects_directly() {
    let rendezvous = Rendezvous::start(&["--turn-max-allocations", "1"]);
    let first = Node::start(&rendezvous, &[]);
    assert!(relay_of(&first.ready).is_some(), "{}", first.ready);
    let mut second = Node::start(&rendezvous, &[]);
    assert_eq!(relay_of(&second.ready), None, "{}", second.ready);
    let error = second.wait_event(|e| e.starts_with("error relay "));
    assert!(error.contains("508"), "{error}");
    let first_id = first.id.clone();
    second.send(1, &first_id, b"direct still works");
    second.wait_event(|e| e == format!("delivered 1 {first_id}"));
}
