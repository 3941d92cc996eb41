//! Integration tests: a rendezvous and nodes as real processes on loopback.

mod common;

use common::{pseudo_random_bytes, Node, Out, Rendezvous};

fn delivered(msg_id: u64, peer: &str) -> impl Fn(&str) -> bool + '_ {
    move |e: &str| e == format!("delivered {msg_id} {peer}")
}

#[test]
fn one_mebibyte_random_message_arrives_byte_exact() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let mut b = Node::start(&rendezvous, &[]);
    let payload = pseudo_random_bytes(1024 * 1024, 7);
    a.send(1, &b.id.clone(), &payload);
    let received = b.wait_recvs(1);
    assert_eq!(received[0].0, a.id);
    assert!(received[0].1 == payload, "payload differs");
    let b_id = b.id.clone();
    a.wait_event(delivered(1, &b_id));
    let connected = a.wait_event(|e| e.starts_with("connected "));
    assert!(
        connected.starts_with(&format!("connected {b_id} direct ")),
        "{connected}"
    );
    assert!(a.quit().success());
}

#[test]
fn ten_thousand_small_messages_arrive_in_order_and_are_all_acknowledged() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let mut b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    let count = 10_000u64;
    let mut batch = Vec::new();
    for i in 0..count {
        batch.extend(p2pnat_proto::app::encode_send_frame(
            i,
            &b_id,
            format!("message {i}").as_bytes(),
        ));
    }
    let mut stdin = a.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&batch).unwrap();
        stdin
    });
    let received = b.wait_recvs(count as usize);
    for (i, (peer, payload)) in received.iter().enumerate() {
        assert_eq!(peer, &a.id);
        assert_eq!(
            payload,
            format!("message {i}").as_bytes(),
            "message {i} out of order"
        );
    }
    a.stdin = Some(writer.join().unwrap());
    let mut acknowledged = Vec::new();
    while acknowledged.len() < count as usize {
        let event = a.wait_event(|e| e.starts_with("delivered ") || e.starts_with("failed "));
        assert!(event.starts_with("delivered "), "{event}");
        acknowledged.push(
            event
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    assert_eq!(acknowledged, (0..count).collect::<Vec<_>>());
}

#[test]
fn both_directions_at_once() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let mut b = Node::start(&rendezvous, &[]);
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let n = 500;
    for i in 0..n {
        a.send(i, &b_id, format!("a{i}").as_bytes());
        b.send(i, &a_id, format!("b{i}").as_bytes());
    }
    let at_b = b.wait_recvs(n as usize);
    let at_a = a.wait_recvs(n as usize);
    for i in 0..n as usize {
        assert_eq!(at_b[i], (a_id.clone(), format!("a{i}").into_bytes()));
        assert_eq!(at_a[i], (b_id.clone(), format!("b{i}").into_bytes()));
    }
    a.wait_event(delivered(n - 1, &b_id));
    b.wait_event(delivered(n - 1, &a_id));
}

#[test]
fn message_to_unknown_peer_is_reported_failed() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let stranger = p2pnat_proto::PeerId([9; 32]).to_text();
    a.send(77, &stranger, b"anyone there?");
    let failed = a.wait_event(|e| e.starts_with("failed 77 "));
    assert!(
        failed.starts_with(&format!("failed 77 {stranger} unknown-peer")),
        "{failed}"
    );
    // The node keeps working.
    let mut b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    a.send(78, &b_id, b"still here");
    assert_eq!(b.wait_recvs(1)[0].1, b"still here");
}

/// A node that quits unregisters (docs/PROTOCOL.md `Request::Unregister`): a peer looking it
/// up right after is told `unknown-peer`, not handed a stale record until the 120 s TTL.
#[test]
fn a_quitting_node_is_unregistered_at_once() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &[]);
    let b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    assert!(b.quit().success());
    a.send(5, &b_id, b"gone?");
    let failed = a.wait_event(|e| e.starts_with("failed 5 "));
    assert!(
        failed.starts_with(&format!("failed 5 {b_id} unknown-peer")),
        "{failed}"
    );
}

#[test]
fn registrations_expire_after_the_ttl() {
    let rendezvous = Rendezvous::start(&["--registration-ttl", "2"]);
    let mut a = Node::start(&rendezvous, &[]);
    let b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    // Freeze b: it stops refreshing but its connection stays (idle timeout 30 s > TTL 2 s).
    let pid = b.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(std::time::Duration::from_millis(3500));
    a.send(5, &b_id, b"hello?");
    let failed = a.wait_event(|e| e.starts_with("failed 5 ") || e.starts_with("delivered 5 "));
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    assert!(failed.contains("unknown-peer"), "{failed}");
}

#[test]
fn bad_input_gets_errors_and_the_node_keeps_working() {
    let rendezvous = Rendezvous::start(&[]);
    let mut a = Node::start(&rendezvous, &["--max-message", "1024"]);
    let mut b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (vec![0, 0, 0, 0], "error bad-frame frame with length 0"),
        (
            vec![0, 0, 0, 3, 0x7f, 1, 2],
            "error bad-frame unknown frame type 0x7f",
        ),
        (
            vec![0, 0, 0, 4, 0x01, 0, 0, 0],
            "error bad-frame SEND frame body of 3 bytes",
        ),
        (
            p2pnat_proto::app::encode_frame(0x02, b"launch rockets"),
            "error unknown-command",
        ),
        (
            p2pnat_proto::app::encode_frame(0x02, &[0xff, 0xfe]),
            "error bad-frame COMMAND frame is not UTF-8",
        ),
        (
            p2pnat_proto::app::encode_frame(0x02, b"connect xyz"),
            "error bad-peer-id",
        ),
        (
            p2pnat_proto::app::encode_send_frame(11, "not-a-peer", b"x"),
            "failed 11 not-a-peer bad-peer-id",
        ),
        (
            p2pnat_proto::app::encode_send_frame(12, &b_id, &vec![1u8; 1025]),
            "failed 12",
        ),
        (
            p2pnat_proto::app::encode_send_frame(13, &a.id.clone(), b"me"),
            "failed 13",
        ),
    ];
    for (bytes, expected) in bad {
        a.write(&bytes);
        let event = a.wait_event(|e| e.starts_with("error ") || e.starts_with("failed "));
        assert!(
            event.starts_with(expected),
            "expected {expected:?}, got {event:?}"
        );
    }
    // The oversized one says why.
    // After all that, a valid message still goes through and nothing else arrived at b.
    a.send(14, &b_id, b"after the storm");
    let received = b.wait_recvs(1);
    assert_eq!(received[0].1, b"after the storm");
    a.wait_event(delivered(14, &b_id));
    assert!(matches!(
        b.next(std::time::Duration::from_millis(300)),
        None | Some(Out::Event(_))
    ));
}

#[test]
fn list_id_and_line_commands_in_framed_mode() {
    // With an alternate STUN address the node probes both; on loopback it sees its own address.
    let stun_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rendezvous = Rendezvous::start(&["--stun-listen", &stun_port.to_string()]);
    let mut a = Node::start(&rendezvous, &[]);
    assert!(a.ready.contains(" nat=public "), "{}", a.ready);
    let mut b = Node::start(&rendezvous, &[]);
    let b_id = b.id.clone();
    a.command(&format!("connect {b_id}"));
    a.wait_event(|e| e.starts_with(&format!("connected {b_id} direct ")));
    b.wait_event(|e| e.starts_with("connected "));
    a.command("list");
    let peer = a.wait_event(|e| e.starts_with("peer "));
    assert!(
        peer.starts_with(&format!("peer {b_id} connected direct ")),
        "{peer}"
    );
    assert_eq!(a.wait_event(|e| e.starts_with("peers ")), "peers 1");
    a.command("id");
    assert_eq!(
        a.wait_event(|e| e.starts_with("id ")),
        format!("id {}", a.id)
    );
    a.command(&format!("disconnect {b_id}"));
    a.wait_event(|e| e.starts_with(&format!("disconnected {b_id}")));
}

#[test]
fn rendezvous_limits_refuse_with_a_clear_error() {
    let rendezvous = Rendezvous::start(&["--max-registrations", "1"]);
    let _first = Node::start(&rendezvous, &[]);
    let mut second = Node::start(&rendezvous, &[]);
    // The refusal is reported before ready, and ready says nothing was observed.
    let error = second.wait_event(|e| e.starts_with("error rendezvous"));
    assert!(error.contains("RegistryFull"), "{error}");
    assert!(
        second.ready.contains(" observed=- nat=unknown "),
        "{}",
        second.ready
    );
}

#[test]
fn ready_comes_first_and_registered_follows_when_the_rendezvous_appears_late() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut node = Node::start_bounded(tempfile::tempdir().unwrap(), &address, &[], 1000);
    assert!(
        node.ready.contains(" observed=- nat=unknown "),
        "{}",
        node.ready
    );
    node.wait_event(|e| e.starts_with("error rendezvous "));
    let _rendezvous = Rendezvous::start_on(&address, &[]);
    let registered = node.wait_event(|e| e.starts_with("registered "));
    assert!(
        registered.starts_with("registered 127.0.0.1:"),
        "{registered}"
    );
}

fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "process did not exit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_sigint_shut_both_programs_down_cleanly() {
    let mut rendezvous = Rendezvous::start(&[]);
    let mut node = Node::start(&rendezvous, &[]);
    let kill = |pid: u32, signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    kill(node.child.id(), "-TERM");
    assert!(wait_exit(&mut node.child).success());
    kill(rendezvous.child.id(), "-INT");
    assert!(wait_exit(&mut rendezvous.child).success());
}
