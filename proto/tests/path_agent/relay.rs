//! Relayed paths in virtual time: the harness's TURN relay model ([`crate::relay_model`])
//! carries checks and application datagrams where no direct path works, takes over when the
//! direct path is cut, and gives way to a direct path when one works again.

use std::net::SocketAddr;
use std::time::Duration;

use p2pnat_proto::path::auth::OwnSecret;
use p2pnat_proto::path::relay::UPGRADE_FIRST;
use p2pnat_proto::path::wire::{CheckBody, CheckDatagram};
use p2pnat_proto::path::{AgentConfig, AgentEvent, LocalSocketId, PathKind};
use p2pnat_proto::sim::NatConfig;

use crate::harness::{behind, network, Pair};

const SECOND: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// alice and bob behind NATs of the given kinds (5 ms from each host to the internet: 1 ms to
/// its NAT, 4 ms from the NAT), and a relay 5 ms from the internet, on which the nodes listed
/// in `relays` allocate.
fn relay_pair(
    a: NatConfig,
    b: NatConfig,
    seed: u64,
    config: AgentConfig,
    relays: &[usize],
) -> Pair {
    let (mut net, rendezvous) = network(seed);
    let (nat_a, alice) = behind(&mut net, a, "192.0.2.1", "10.0.0.10");
    let (nat_b, bob) = behind(&mut net, b, "192.0.2.2", "10.0.0.10");
    for host in [alice, bob] {
        net.set_host_link(host, ms(1), 0.0);
    }
    for nat in [nat_a, nat_b] {
        net.set_nat_link(nat, ms(4), 0.0);
    }
    let mut pair = Pair::new(net, rendezvous, [alice, bob], config);
    for &i in relays {
        pair.enable_relay(i);
    }
    pair
}

/// alice dials; the time until both sides have a path, from the moment both were told.
fn connects(pair: &mut Pair, within: Duration) -> Option<Duration> {
    pair.punch(0);
    let start = pair.now;
    let deadline = start + within;
    pair.run_until(deadline, |p| p.both_selected())
        .then(|| pair.now - start)
}

fn kind(pair: &Pair, i: usize) -> Option<PathKind> {
    pair.selected(i).map(|p| p.kind)
}

fn both(pair: &Pair, want: PathKind) -> bool {
    (0..2).all(|i| kind(pair, i) == Some(want))
}

/// Stops the application traffic and lets what is in flight arrive.
fn drain(pair: &mut Pair) {
    pair.app_interval = None;
    pair.run_for(SECOND);
}

/// Sequence numbers node `from` sent at or after `since` (time since the start) that its peer
/// never received.
fn lost_since(pair: &Pair, from: usize, since: Duration) -> Vec<u64> {
    let received = &pair.nodes[1 - from].app_received;
    (0u64..)
        .zip(&pair.nodes[from].app_sent_at)
        .filter(|(seq, at)| **at >= since && !received.contains(seq))
        .map(|(seq, _)| seq)
        .collect()
}

/// The longest stretch without an application datagram arriving at node `i` from `after` on.
fn largest_gap(pair: &Pair, i: usize, after: Duration) -> Duration {
    let mut last = after;
    let mut gap = Duration::ZERO;
    for &at in pair.nodes[i]
        .app_received_at
        .iter()
        .filter(|t| **t >= after)
    {
        gap = gap.max(at - last);
        last = at;
    }
    gap
}

fn count(pair: &Pair, i: usize, after: Duration, want: fn(&AgentEvent) -> bool) -> usize {
    pair.nodes[i]
        .events
        .iter()
        .filter(|(at, e)| *at >= after && want(e))
        .count()
}

/// Neither agent sent through a relay it did not have, nor asked to be woken at an instant it
/// had already handled (which would make a real driver spin).
fn assert_clean(pair: &Pair) {
    for (i, node) in pair.nodes.iter().enumerate() {
        assert_eq!(node.relay_sends_while_down, 0, "node {i}");
        assert_eq!(node.stale_timeouts, 0, "node {i}");
    }
}

#[test]
fn symmetric_nats_connect_through_the_relay_and_fail_without_it() {
    for seed in 0..5 {
        let relays = [0, 1];
        let mut pair = relay_pair(
            NatConfig::symmetric(),
            NatConfig::symmetric(),
            seed,
            AgentConfig::default(),
            &relays,
        );
        let took = connects(&mut pair, SECOND).expect("connects through the relay");
        // Two relay legs are 20 ms one way: the answerer's check through alice's relayed
        // address arrives 30 ms in; alice's reply and triggered check make both sides' paths
        // within about 70 ms.
        assert!(took <= ms(100), "seed {seed}: took {took:?}");
        assert!(both(&pair, PathKind::Relayed), "seed {seed}");
        println!("seed {seed}: both relayed after {took:?}");
        let both_at = pair.elapsed();
        pair.connect();
        pair.app_interval = Some(ms(10));
        pair.run_for(2 * SECOND);
        drain(&mut pair);
        for i in 0..2 {
            assert!(pair.nodes[i].app_received.len() >= 190, "seed {seed}");
            assert_eq!(
                lost_since(&pair, i, both_at),
                Vec::<u64>::new(),
                "seed {seed}"
            );
        }
        assert_clean(&pair);
        // Each datagram crossed the relay once: out of the sender's allocation, or into the
        // receiver's.
        let relay = pair.relay.as_ref().unwrap().counters;
        assert!(relay.relayed_in + relay.relayed_out >= 380, "{relay:?}");
        assert_eq!(pair.cut_dropped, 0);

        let mut pair = relay_pair(
            NatConfig::symmetric(),
            NatConfig::symmetric(),
            seed,
            AgentConfig::default(),
            &[],
        );
        assert_eq!(connects(&mut pair, 7 * SECOND), None, "seed {seed}");
        for node in &pair.nodes {
            assert_eq!(
                node.count(|e| matches!(e, AgentEvent::ChecksFailed { .. })),
                1
            );
            assert!(node.selections().is_empty());
        }
    }
}

#[test]
fn cone_nats_end_on_a_direct_path_and_the_switch_loses_nothing() {
    let nats = [
        NatConfig::port_restricted_cone(),
        NatConfig::restricted_cone(),
        NatConfig::full_cone(),
    ];
    for seed in 0..6 {
        let nat = nats[seed as usize % nats.len()];
        let mut pair = relay_pair(nat, nat, 20 + seed, AgentConfig::default(), &[0, 1]);
        pair.app_interval = Some(ms(10));
        let took = connects(&mut pair, SECOND).expect("connects");
        let both_at = pair.elapsed();
        pair.connect();
        pair.run_for(3 * SECOND);
        drain(&mut pair);
        for i in 0..2 {
            let selections = pair.nodes[i].selections();
            let last = selections.last().unwrap();
            assert_eq!(last.1.kind, PathKind::Direct, "seed {seed} node {i}");
            let direct_at = selections
                .iter()
                .find(|(_, p, _)| p.kind == PathKind::Direct)
                .map(|(at, _, _)| *at - (both_at - took))
                .unwrap();
            let relayed_first = selections[0].1.kind == PathKind::Relayed;
            println!(
                "seed {seed} node {i}: both had a path after {took:?}, direct after {direct_at:?} \
                 (relayed first: {relayed_first}); {} selections",
                selections.len()
            );
            assert_eq!(
                lost_since(&pair, i, both_at),
                Vec::<u64>::new(),
                "seed {seed}"
            );
            assert!(pair.nodes[1 - i].app_received.len() >= 300, "seed {seed}");
        }
        assert_clean(&pair);
    }
}

/// Connected over a direct path between port-restricted cones, with relays and application
/// datagrams every 10 ms; then the direct path is cut. Returns the time of the cut.
fn connected_then_cut(seed: u64) -> (Pair, Duration) {
    let mut pair = relay_pair(
        NatConfig::port_restricted_cone(),
        NatConfig::port_restricted_cone(),
        seed,
        AgentConfig::default(),
        &[0, 1],
    );
    connects(&mut pair, SECOND).expect("connects");
    pair.connect();
    pair.app_interval = Some(ms(10));
    pair.run_for(5 * SECOND);
    assert!(both(&pair, PathKind::Direct));
    pair.cut_direct = true;
    let cut_at = pair.elapsed();
    (pair, cut_at)
}

#[test]
fn a_cut_direct_path_fails_over_to_the_warm_relayed_path() {
    let config = AgentConfig::default();
    for seed in 40..43 {
        let (mut pair, cut_at) = connected_then_cut(seed);
        let deadline = pair.now + config.path_timeout + SECOND;
        assert!(
            pair.run_until(deadline, |p| both(p, PathKind::Relayed)),
            "seed {seed}: still {:?} / {:?}",
            pair.selected(0),
            pair.selected(1)
        );
        let relayed_after = pair.elapsed() - cut_at;
        pair.run_for(2 * SECOND);
        for i in 0..2 {
            let gap = largest_gap(&pair, i, cut_at);
            println!(
                "seed {seed} node {i}: relayed {relayed_after:?} after the cut; longest gap in \
                 arrivals {gap:?}"
            );
            assert!(
                gap <= config.path_timeout + SECOND,
                "seed {seed}: gap {gap:?}"
            );
            // Datagrams flow again: the last second arrived whole.
            let recent = pair.nodes[i]
                .app_received_at
                .iter()
                .filter(|at| **at + SECOND >= pair.elapsed())
                .count();
            assert!(
                recent >= 95,
                "seed {seed} node {i}: {recent} in the last second"
            );
            // The failover needed no fresh candidates: the relayed path was live.
            let need = count(&pair, i, cut_at, |e| {
                matches!(e, AgentEvent::NeedCandidates { .. })
            });
            assert_eq!(need, 0, "seed {seed} node {i}");
        }
        assert!(pair.cut_dropped > 0);
        assert_clean(&pair);
    }
}

#[test]
fn the_path_returns_to_direct_by_the_upgrade_timer_when_the_cut_heals() {
    let config = AgentConfig::default();
    for seed in 50..53 {
        let (mut pair, _) = connected_then_cut(seed);
        let deadline = pair.now + config.path_timeout + SECOND;
        assert!(pair.run_until(deadline, |p| both(p, PathKind::Relayed)));
        let relayed_at = pair.elapsed();
        pair.run_for(2 * SECOND);
        pair.cut_direct = false;
        let deadline = pair.now + UPGRADE_FIRST + 3 * SECOND;
        assert!(
            pair.run_until(deadline, |p| both(p, PathKind::Direct)),
            "seed {seed}: not direct {:?} after the relay took over",
            pair.elapsed() - relayed_at
        );
        let direct_after = pair.elapsed() - relayed_at;
        println!("seed {seed}: direct again {direct_after:?} after the relay took over");
        // Not before the first try for a direct path: nothing else looks for one meanwhile.
        assert!(direct_after >= UPGRADE_FIRST - ms(100), "{direct_after:?}");
        pair.run_for(SECOND);
        drain(&mut pair);
        for i in 0..2 {
            assert_eq!(lost_since(&pair, i, relayed_at), Vec::<u64>::new());
        }
        assert_clean(&pair);
    }
}

/// The tries for a direct path back off: a cut that outlasts the first try (10 s) is noticed
/// at the second (20 s after the first).
#[test]
fn a_long_cut_is_noticed_at_the_second_try() {
    let config = AgentConfig::default();
    let (mut pair, _) = connected_then_cut(60);
    let deadline = pair.now + config.path_timeout + SECOND;
    assert!(pair.run_until(deadline, |p| both(p, PathKind::Relayed)));
    let relayed_at = pair.elapsed();
    pair.run_for(UPGRADE_FIRST + 5 * SECOND);
    assert!(both(&pair, PathKind::Relayed));
    pair.cut_direct = false;
    let deadline = pair.now + 2 * UPGRADE_FIRST;
    assert!(pair.run_until(deadline, |p| both(p, PathKind::Direct)));
    let direct_after = pair.elapsed() - relayed_at;
    println!("direct again {direct_after:?} after the relay took over (second try)");
    let second_try = UPGRADE_FIRST * 3;
    assert!(
        direct_after >= second_try - ms(100) && direct_after <= second_try + 3 * SECOND,
        "{direct_after:?}"
    );
    assert_clean(&pair);
}

#[test]
fn relay_only_selects_relayed_paths_only() {
    let config = AgentConfig {
        relay_only: true,
        ..AgentConfig::default()
    };
    for seed in 70..73 {
        let mut pair = relay_pair(
            NatConfig::port_restricted_cone(),
            NatConfig::full_cone(),
            seed,
            config,
            &[0, 1],
        );
        let took = connects(&mut pair, SECOND).expect("connects through the relay");
        let both_at = pair.elapsed();
        pair.connect();
        pair.app_interval = Some(ms(10));
        pair.run_for(30 * SECOND);
        drain(&mut pair);
        for i in 0..2 {
            let selections = pair.nodes[i].selections();
            assert!(!selections.is_empty());
            for (at, path, _) in &selections {
                assert_eq!(
                    path.kind,
                    PathKind::Relayed,
                    "seed {seed} node {i} at {at:?}"
                );
            }
            assert_eq!(lost_since(&pair, i, both_at), Vec::<u64>::new());
            let need = count(&pair, i, Duration::ZERO, |e| {
                matches!(e, AgentEvent::NeedCandidates { .. })
            });
            println!(
                "seed {seed} node {i}: relayed after {took:?}, {} selections, {need} \
                 NeedCandidates in 30 s",
                selections.len()
            );
        }
        assert_clean(&pair);
    }
}

/// Only alice has a relay and both NATs are symmetric, so every path runs through it; after
/// 3 s connected, her allocation goes.
fn only_relay_lost() -> (Pair, Duration) {
    let mut pair = relay_pair(
        NatConfig::symmetric(),
        NatConfig::symmetric(),
        80,
        AgentConfig::default(),
        &[0],
    );
    connects(&mut pair, SECOND).expect("connects through alice's relay");
    assert_eq!(pair.selected(0).unwrap().local, LocalSocketId::RELAY);
    let alice_relayed: SocketAddr = pair.relay.as_ref().unwrap().relayed_addr(0);
    assert_eq!(pair.selected(1).unwrap().remote, alice_relayed);
    pair.connect();
    pair.app_interval = Some(ms(10));
    pair.run_for(3 * SECOND);
    let lost_at = pair.elapsed();
    pair.drop_relay(0);
    pair.run_for(10 * SECOND);
    (pair, lost_at)
}

/// With nothing else, both sides ask for fresh candidates at their next heartbeat.
#[test]
fn losing_the_only_relay_asks_for_candidates() {
    let config = AgentConfig::default();
    let (pair, lost_at) = only_relay_lost();
    for i in 0..2 {
        let first = pair.nodes[i]
            .events
            .iter()
            .find(|(at, e)| *at >= lost_at && matches!(e, AgentEvent::NeedCandidates { .. }))
            .map(|(at, _)| *at - lost_at);
        println!("node {i}: asked for candidates {first:?} after the relay went");
        let first = first.expect("asked for candidates");
        assert!(first <= config.heartbeat + config.path_timeout, "{first:?}");
    }
}

/// `set_relay(false)` promises that no pair is checked through the relay any more.
#[test]
fn nothing_is_sent_through_a_relay_that_is_down() {
    let (pair, _) = only_relay_lost();
    assert_eq!(pair.nodes[0].relay_sends_while_down, 0);
}

/// An upgrade try that falls due while a round of checks runs must not leave `poll_output`
/// answering `Timeout` at an instant already handled.
#[test]
fn an_upgrade_due_during_a_round_does_not_spin() {
    let (pair, _) = only_relay_lost();
    for node in &pair.nodes {
        assert_eq!(node.stale_timeouts, 0);
    }
}

/// Both have relays, both NATs are symmetric: when the side whose selected path runs through
/// its own relay loses it, it moves to the path through the peer's relay and datagrams flow
/// again.
#[test]
fn losing_one_relay_moves_to_the_path_through_the_other() {
    let config = AgentConfig::default();
    for seed in 90..94 {
        let mut pair = relay_pair(
            NatConfig::symmetric(),
            NatConfig::symmetric(),
            seed,
            config,
            &[0, 1],
        );
        connects(&mut pair, SECOND).expect("connects through the relays");
        pair.connect();
        pair.app_interval = Some(ms(10));
        pair.run_for(3 * SECOND);
        let Some(k) = (0..2).find(|&i| pair.selected(i).unwrap().local == LocalSocketId::RELAY)
        else {
            panic!("seed {seed}: neither side's path runs through its own relay");
        };
        let lost_at = pair.elapsed();
        pair.drop_relay(k);
        let peer_relayed = pair.relay.as_ref().unwrap().relayed_addr(1 - k);
        let deadline = pair.now + config.heartbeat + config.path_timeout + 2 * SECOND;
        let moved = pair.run_until(deadline, |p| {
            p.selected(k)
                .is_some_and(|path| path.remote == peer_relayed)
        });
        assert!(
            moved,
            "seed {seed}: node {k} still on {:?}",
            pair.selected(k)
        );
        let moved_after = pair.elapsed() - lost_at;
        pair.run_for(3 * SECOND);
        for i in 0..2 {
            let gap = largest_gap(&pair, i, lost_at);
            println!(
                "seed {seed}: node {k} lost its relay; moved after {moved_after:?}; node {i}'s \
                 longest gap {gap:?}"
            );
            let recent = pair.nodes[i]
                .app_received_at
                .iter()
                .filter(|at| **at + SECOND >= pair.elapsed())
                .count();
            assert!(
                recent >= 95,
                "seed {seed} node {i}: {recent} in the last second"
            );
        }
    }
}

/// A node keeps its NAT mapping towards the relay open while nothing is relayed (here: a
/// keepalive every 25 s). Without it, 150 idle seconds outlast the NAT's 120 s mapping: the
/// node's next envelope leaves from a new mapping and the relay drops it as coming from a
/// client with no allocation (TURN's allocation mismatch), and what the relay forwards to the
/// old mapping dies at the NAT.
#[test]
fn the_relay_mapping_outlives_an_idle_spell_only_with_keepalives() {
    for keepalive in [true, false] {
        let mut pair = relay_pair(
            NatConfig::symmetric(),
            NatConfig::symmetric(),
            110,
            AgentConfig::default(),
            &[0, 1],
        );
        if !keepalive {
            pair.relay_keepalive = Duration::from_secs(3600);
        }
        connects(&mut pair, SECOND).expect("connects through the relays");
        pair.run_for(150 * SECOND);
        // QUIC starts now on the paths chosen 150 s ago. The peer-side mappings of those paths
        // have expired too (a symmetric NAT maps each relayed address apart), which the first
        // heartbeats repair; the mapping towards the relay server is what the keepalive holds.
        pair.connect();
        pair.app_interval = Some(ms(10));
        pair.run_for(6 * SECOND);
        let last_second = pair.elapsed() - SECOND;
        let arrived: Vec<usize> = (0..2)
            .map(|i| {
                let at = &pair.nodes[i].app_received_at;
                at.iter().filter(|t| **t >= last_second).count()
            })
            .collect();
        let relay = pair.relay.as_ref().unwrap().counters;
        println!("keepalive {keepalive}: arrived in the last second {arrived:?}; {relay:?}");
        if keepalive {
            assert!(arrived.iter().all(|n| *n >= 95), "{arrived:?}");
        } else {
            assert_eq!(arrived, [0, 0]);
        }
        assert_eq!(relay.no_allocation > 0, !keepalive);
    }
}

/// The `relayed` flag of a check is covered by its tag: flipping it makes the check invalid,
/// so nobody can make a direct path look relayed (or the reverse).
#[test]
fn a_forged_relayed_flag_fails_authentication() {
    let mut pair = relay_pair(
        NatConfig::full_cone(),
        NatConfig::full_cone(),
        99,
        AgentConfig::default(),
        &[],
    );
    let (alice, bob) = (pair.nodes[0].id(), pair.nodes[1].id());
    // alice's secret as the harness makes it (node i's seed is i + 1).
    let key = OwnSecret::from_seed(&[1; 32]).pair_key(&bob).unwrap();
    let from: SocketAddr = "192.0.2.1:5000".parse().unwrap();
    for relayed in [false, true] {
        let check = CheckDatagram {
            transaction: [relayed as u8 + 1; 12],
            sender: alice,
            receiver: bob,
            body: CheckBody::Check {
                heartbeat: false,
                relayed,
            },
        };
        let mut forged = check.encode(&key);
        forged[6] ^= 0x02; // the relayed flag
        let decoded = CheckDatagram::decode(&forged).unwrap();
        assert_eq!(
            decoded.body,
            CheckBody::Check {
                heartbeat: false,
                relayed: !relayed
            }
        );
        let now = pair.now;
        let agent = &mut pair.nodes[1].agent;
        let result = agent.handle_datagram(now, LocalSocketId::MAIN, from, &forged);
        assert!(result.is_err(), "{result:?}");
        assert_eq!(agent.peer_path(&alice), None);
        assert_eq!(agent.counters.replies_sent, 0);
    }
    // The genuine check is accepted, and the path it arrived on keeps its real kind.
    let check = CheckDatagram {
        transaction: [9; 12],
        sender: alice,
        receiver: bob,
        body: CheckBody::Check {
            heartbeat: false,
            relayed: false,
        },
    };
    let now = pair.now;
    let agent = &mut pair.nodes[1].agent;
    agent
        .handle_datagram(now, LocalSocketId::MAIN, from, &check.encode(&key))
        .unwrap();
    assert_eq!(agent.peer_path(&alice).unwrap().kind, PathKind::Direct);
}
