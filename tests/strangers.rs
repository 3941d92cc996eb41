//! Strangers on the internet against one node: what a hostile peer can make it hold is bounded,
//! and the node keeps serving its own application and its genuine peers.

mod common;

use std::time::{Duration, Instant};

use common::stranger::{self, Stranger, STREAM_MESSAGES};
use common::{Node, Rendezvous, PATIENCE};
use p2pnat::identity::Identity;

#[test]
fn throwaway_identities_cannot_lock_the_node_out_of_new_peers() {
    let rendezvous = Rendezvous::start(&[]);
    let mut node = Node::start(&rendezvous, &[]);
    let mut friend = Node::start(&rendezvous, &[]);
    let runtime = stranger::runtime();
    let addr = stranger::node_addr(&node.ready);
    let node_id = node.id.clone();
    // More identities than the node has peer slots (1,024), each connecting once and staying.
    let strangers = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..1040 {
            let stranger = Stranger::new(Identity::generate().unwrap());
            let connection = stranger.connect(addr, &node_id).await;
            held.push((stranger, connection));
        }
        held
    });
    node.send(1, &friend.id, b"still reachable");
    node.wait_event(|e| e == format!("delivered 1 {}", friend.id));
    let got = friend.wait_recvs(1);
    assert_eq!(got[0].1, b"still reachable");
    drop(strangers);
}

#[test]
fn a_peer_announcing_large_messages_cannot_pin_the_stdout_budget() {
    let rendezvous = Rendezvous::start(&[]);
    let mut node = Node::start(&rendezvous, &["--max-message", "1048576"]);
    let mut friend = Node::start(&rendezvous, &[]);
    let runtime = stranger::runtime();
    let addr = stranger::node_addr(&node.ready);
    let node_id = node.id.clone();
    // Two connections each announce a message of --max-message bytes and send one byte of it:
    // the stdout budget is 2 x --max-message.
    let held = runtime.block_on(async {
        let stranger = Stranger::new(Identity::generate().unwrap());
        let mut held = Vec::new();
        for _ in 0..2 {
            let connection = stranger.connect(addr, &node_id).await;
            let mut stream = connection.open_uni().await.unwrap();
            stream.write_all(&[STREAM_MESSAGES]).await.unwrap();
            stream.write_all(&1_048_576u32.to_be_bytes()).await.unwrap();
            stream.write_all(b"x").await.unwrap();
            held.push((connection, stream));
        }
        (stranger, held)
    });
    std::thread::sleep(Duration::from_millis(300)); // the announcements have arrived
    let payload = vec![7u8; 100_000];
    friend.send(1, &node.id, &payload);
    let got = node.wait_recvs(1);
    assert_eq!(got[0].1.len(), payload.len());
    friend.wait_event(|e| e == format!("delivered 1 {}", node.id));
    drop(held);
}

#[test]
fn connections_per_peer_are_capped() {
    let rendezvous = Rendezvous::start(&[]);
    let node = Node::start(&rendezvous, &[]);
    let runtime = stranger::runtime();
    let addr = stranger::node_addr(&node.ready);
    let open = runtime.block_on(async {
        let stranger = Stranger::new(Identity::generate().unwrap());
        let mut connections = Vec::new();
        for _ in 0..12 {
            connections.push(stranger.connect(addr, &node.id).await);
        }
        // The node closes the surplus; wait (bounded) until it has.
        let deadline = Instant::now() + PATIENCE;
        loop {
            let open = connections
                .iter()
                .filter(|c| c.close_reason().is_none())
                .count();
            if open <= 4 || Instant::now() > deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(
        open <= 4,
        "{open} of 12 connections from one peer still open"
    );
}

/// A connection the node refuses (every peer slot holds undelivered messages) frees its
/// virtual address: a node refusing many strangers still has addresses for its genuine peers.
/// With `--max-peers 1` the path table holds 16 virtual addresses; 24 strangers from 24 source
/// addresses are each refused with a `busy` close that reaches them (an address freed at once
/// would drop the close: they would wait for their idle timeout), and then a genuine peer
/// still connects and delivers.
#[test]
fn refused_connections_free_their_virtual_addresses() {
    let rendezvous = Rendezvous::start(&[]);
    let mut node = Node::start(&rendezvous, &["--max-peers", "1"]);
    let mut friend = Node::start(&rendezvous, &[]);
    let runtime = stranger::runtime();
    let addr = stranger::node_addr(&node.ready);
    let node_id = node.id.clone();
    // The node's one slot: a stranger that takes a message and never acknowledges it.
    let _runtime_context = runtime.enter();
    let holder = Stranger::new(Identity::generate().unwrap());
    let holder_connection = runtime.block_on(holder.connect(addr, &node_id));
    // The node has taken the connection (else the send below would dial, and fail).
    node.wait_event(|e| e.starts_with(&format!("connected {} ", holder.id())));
    node.send(1, &holder.id(), b"never acknowledged");
    let held_stream = runtime.block_on(async {
        let mut stream = tokio::time::timeout(PATIENCE, holder_connection.accept_uni())
            .await
            .expect("the node opened no message stream to the holder")
            .expect("message stream");
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(first[0], STREAM_MESSAGES);
        stream
    });
    let refusals = runtime.block_on(async {
        let mut refusals = Vec::new();
        for round in 0..24 {
            if round % 6 == 5 {
                // Refused addresses are freed a second after their close: let them go.
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            let stranger = Stranger::new(Identity::generate().unwrap());
            let refused = tokio::time::timeout(Duration::from_secs(5), async {
                let connecting = stranger.endpoint.connect(addr, &node_id).unwrap();
                match connecting.await {
                    Ok(connection) => connection.closed().await.to_string(),
                    Err(e) => format!("handshake failed: {e}"),
                }
            })
            .await
            .unwrap_or_else(|_| "no answer within 5 s".to_string());
            let busy = refused.contains("busy");
            refusals.push(refused);
            if !busy {
                break; // the assertion below names it
            }
        }
        refusals
    });
    assert_eq!(
        refusals.len(),
        24,
        "a stranger was not refused: {refusals:?}"
    );
    for (i, refused) in refusals.iter().enumerate() {
        assert!(
            refused.contains("busy"),
            "stranger {i} was not refused as busy: {refused}"
        );
    }
    // The holder goes away: its message fails, its slot frees, and the friend gets in.
    holder_connection.close(0u32.into(), b"gone");
    node.wait_event(|e| e.starts_with("failed 1 "));
    drop((held_stream, holder_connection, holder));
    friend.send(2, &node.id, b"a genuine peer");
    let got = node.wait_recvs(1);
    assert_eq!(got[0].1, b"a genuine peer");
    friend.wait_event(|e| e == format!("delivered 2 {}", node.id));
}
