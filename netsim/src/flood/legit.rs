//! The legitimate side of `netsim flood`: alice and bob exchange messages through the
//! rendezvous while it is flooded.

use super::checks::Legit;
use crate::matrix::cell::CellResult;
use crate::matrix::session::{self, Session};
use std::time::{Duration, Instant};

/// alice and bob, under the punch flood: one message each way (alice dials), then `redials`
/// times alice disconnects and both send again (alice dials anew: a lookup and a punch
/// request at the rendezvous). Every message is accounted for by [`Session::finish`].
pub fn exchange(
    session: &mut Session,
    redials: usize,
    timeout: Duration,
    result: &mut CellResult,
) -> Legit {
    let mut legit = Legit {
        alice_ready: result.alice_ready.clone(),
        bob_ready: result.bob_ready.clone(),
        ..Legit::default()
    };
    // A node registered over TLS reports no NAT behaviour and over=tls: that is its fallback
    // (reported), not a disagreement with the lab.
    for (host, ready) in [("alice", &result.alice_ready), ("bob", &result.bob_ready)] {
        if ready.split(' ').any(|w| w == "over=tls") {
            legit.fell_back_to_tls.push(host.to_string());
        }
    }
    for problem in &result.observed_mismatches {
        let host = problem.split(' ').next().unwrap_or("");
        if legit.fell_back_to_tls.iter().any(|h| h == host) {
            legit.notes.push(format!("over TLS: {problem}"));
        } else {
            legit.observed_mismatches.push(problem.clone());
        }
    }
    let hello = session.hello(timeout);
    // (sender, message id, sent at), for the slowest message.
    let mut sends = vec![(0, 1, hello.t0), (1, 2, hello.t1)];
    // Each round closes the connection: first wait for the senders' `delivered` events, or a
    // message that arrived would be failed by the close before its acknowledgement came back.
    settle(session, &[(0, 1), (1, 2)], timeout);
    legit.dials = 1;
    let bob = session.ids[1].clone();
    let alice = session.ids[0].clone();
    for round in 0..redials {
        session.nodes[0].command(&format!("disconnect {bob}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let gone = |node: &mut crate::matrix::node::NodeProcess, peer: &str| {
            node.wait_for(deadline, |h| {
                let n = h
                    .iter()
                    .filter(|t| {
                        matches!(&t.output, crate::matrix::node::Output::Event(l)
                        if l.starts_with(&format!("disconnected {peer}")))
                    })
                    .count();
                (n > round).then_some(())
            })
            .is_some()
        };
        if !gone(&mut session.nodes[0], &bob) || !gone(&mut session.nodes[1], &alice) {
            legit.notes.push(format!(
                "redial {}: no disconnected event on both sides",
                round + 1
            ));
        }
        let id = 10 + 2 * round as u64;
        sends.push((0, id, session.send(0, id, b"again, bob")));
        session.wait(0, id, Instant::now() + timeout);
        sends.push((1, id + 1, session.send(1, id + 1, b"again, alice")));
        session.wait(1, id + 1, Instant::now() + timeout);
        settle(session, &[(0, id), (1, id + 1)], timeout);
        legit.dials += 1;
    }
    session.finish(&hello, Duration::from_secs(5), result);
    legit.slowest_message_ms = sends
        .iter()
        .filter_map(|&(from, id, at)| {
            let to = &session.nodes[1 - from];
            to.history.iter().find_map(|t| match &t.output {
                crate::matrix::node::Output::Recv { peer, payload }
                    if *peer == session.ids[from]
                        && payload.get(..8) == Some(&id.to_be_bytes()[..]) =>
                {
                    Some(t.at.saturating_duration_since(at))
                }
                _ => None,
            })
        })
        .max()
        .map(session::ms);
    legit.connected = result.connected;
    legit.path = result.path.clone();
    legit.messages = result.messages.clone();
    legit.notes.extend(result.notes.iter().cloned());
    legit
}

/// Waits up to `timeout` for each (sender, message id)'s `delivered` or `failed` event.
fn settle(session: &mut Session, messages: &[(usize, u64)], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for (from, id) in messages {
        let key = id.to_string();
        session.nodes[*from].wait_for(deadline, |h| {
            session::find_event(h, &["delivered", "failed"], &key)
        });
    }
}
