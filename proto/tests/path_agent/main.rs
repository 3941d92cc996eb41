//! The path agent in virtual time: two agents, a simulated network with cone, symmetric and
//! bare-Linux NAT models, loss, delay, NAT rebinding and address changes. Nothing sleeps.

mod crossing;
mod harness;
mod relay;
mod relay_model;

use std::time::Duration;

use harness::{behind, ip, network, Pair};
use p2pnat_proto::nat::{InboundBehaviour, NatBehaviour, NatReport};
use p2pnat_proto::path::birthday::BIRTHDAY_SOCKETS;
use p2pnat_proto::path::{AgentConfig, AgentEvent, CheckRole, PathAgent, PeerCandidates};
use p2pnat_proto::sim::{NatConfig, NatId};

const SECOND: Duration = Duration::from_secs(1);

/// Candidates with nothing known of the peer's NAT.
fn direct(addrs: &[std::net::SocketAddr]) -> PeerCandidates<'_> {
    PeerCandidates {
        addrs,
        observed: None,
        nat: NatReport::UNKNOWN,
        relayed: None,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// alice and bob behind NATs of the given kinds, 5 ms per uplink.
fn pair(a: NatConfig, b: NatConfig, seed: u64) -> Pair {
    pair_with_nats(a, b, seed).0
}

/// As [`pair`], with alice's and bob's NATs (to rebind them).
fn pair_with_nats(a: NatConfig, b: NatConfig, seed: u64) -> (Pair, [NatId; 2]) {
    let (mut net, rendezvous) = network(seed);
    let (nat_a, alice) = behind(&mut net, a, "192.0.2.1", "10.0.0.10");
    let (nat_b, bob) = behind(&mut net, b, "192.0.2.2", "10.0.0.10");
    for host in [alice, bob] {
        net.set_host_link(host, ms(1), 0.0);
    }
    for nat in [nat_a, nat_b] {
        net.set_nat_link(nat, ms(4), 0.0);
    }
    let pair = Pair::new(net, rendezvous, [alice, bob], AgentConfig::default());
    (pair, [nat_a, nat_b])
}

fn connects_ok(pair: &mut Pair, within: Duration) -> bool {
    connects(pair, within).is_some()
}

/// Punches (alice dials) and runs until both sides selected a path; the time it took from the
/// moment the rendezvous told both sides.
fn connects(pair: &mut Pair, within: Duration) -> Option<Duration> {
    pair.punch(0);
    let start = pair.now;
    let deadline = pair.now + within;
    pair.run_until(deadline, |p| p.both_selected())
        .then(|| pair.now - start)
}

#[test]
fn port_restricted_pair_punches_one_round_trip_after_the_answerer_starts() {
    let mut pair = pair(
        NatConfig::port_restricted_cone(),
        NatConfig::port_restricted_cone(),
        1,
    );
    let took = connects(&mut pair, SECOND).expect("connects");
    // One way alice->bob is 10 ms. bob checks after his answer delay; his check reaches alice
    // (whose NAT opened when she checked bob) 10 ms later; alice replies and checks back at
    // once (a triggered check, no retransmit timer); bob replies: both have selected 30 ms
    // after bob's first check.
    let expected = AgentConfig::default().answer_delay + ms(30);
    assert!(
        took <= expected + ms(1),
        "took {took:?}, expected {expected:?}"
    );
    let alice_path = pair.selected(0).unwrap();
    assert_eq!(alice_path.remote, "192.0.2.2:5000".parse().unwrap());
    assert_eq!(
        pair.selected(1).unwrap().remote,
        "192.0.2.1:5000".parse().unwrap()
    );
    // A handful of checks, not a retransmit storm: each side's pairs retry 5, 15 and 30 ms
    // after their first check (EARLY_RETRY_GAPS), then every 200 ms.
    let sent = pair.nodes[0].agent.counters.checks_sent + pair.nodes[1].agent.counters.checks_sent;
    assert!(sent <= 12, "{sent} checks");
}

/// A handshake can reach the answerer before any of its own checks succeeds (it waits its
/// answer delay): the source of the dialler's authenticated check is selected at once, so the
/// answerer's QUIC reply has a path (without it, quinn retried after 1 s).
#[test]
fn the_answerer_has_a_path_as_soon_as_the_dialler_s_check_arrives() {
    let mut pair = pair(NatConfig::full_cone(), NatConfig::full_cone(), 12);
    pair.punch(0);
    let start = pair.now;
    let deadline = start + SECOND;
    assert!(pair.run_until(deadline, |p| p.selected(1).is_some()));
    // One way is 10 ms: bob has a path when alice's first check arrives, before his own
    // checks (after his 10 ms answer delay) could have been answered (30 ms).
    assert!(pair.now - start <= ms(11), "{:?}", pair.now - start);
    let first = pair.nodes[1].events.iter().find_map(|(_, e)| match e {
        AgentEvent::PathSelected { rtt, previous, .. } => Some((*rtt, *previous)),
        _ => None,
    });
    assert_eq!(
        first,
        Some((None, None)),
        "provisional: no check of bob's answered yet"
    );
    pair.run_for(SECOND);
    let (_, path, previous) = pair.nodes[1].selections().last().copied().unwrap();
    assert_eq!(
        Some(path),
        previous,
        "the checked path confirms the provisional one"
    );
}

#[test]
fn lan_path_is_preferred_to_the_hairpinned_internet_path() {
    let (mut net, rendezvous) = network(2);
    let nat = net.add_nat(
        NatConfig::port_restricted_cone().with_hairpin(true),
        ip("192.0.2.1"),
        None,
    );
    let alice = net.add_host(ip("10.0.0.10"), Some(nat));
    let bob = net.add_host(ip("10.0.0.11"), Some(nat));
    let mut pair = Pair::new(net, rendezvous, [alice, bob], AgentConfig::default());
    assert!(connects_ok(&mut pair, SECOND));
    pair.run_for(SECOND);
    assert_eq!(
        pair.selected(0).unwrap().remote,
        "10.0.0.11:5000".parse().unwrap()
    );
    assert_eq!(
        pair.selected(1).unwrap().remote,
        "10.0.0.10:5000".parse().unwrap()
    );
}

#[test]
fn symmetric_against_restricted_cone_connects_through_the_peer_reflexive_address() {
    let mut pair = pair(NatConfig::symmetric(), NatConfig::restricted_cone(), 3);
    let took = connects(&mut pair, 2 * SECOND).expect("connects");
    // alice's first check dies at bob's filter; bob's first check (after his answer delay)
    // opens it for alice's address; alice's early retry gets in and the rest is triggered:
    // about 55 ms with 10 ms one way, not a full 200 ms retransmit interval.
    assert!(took <= ms(60), "took {took:?}");
    // bob reaches alice at the port her symmetric NAT gave her traffic to bob, which the
    // rendezvous never saw.
    let to_alice = pair.selected(1).unwrap().remote;
    assert_eq!(to_alice.ip(), ip("192.0.2.1"));
    let observed = pair.observed(0).unwrap();
    assert_ne!(
        to_alice, observed,
        "peer-reflexive, not the reported address"
    );
}

#[test]
fn symmetric_against_port_restricted_fails_cleanly_without_the_birthday_method() {
    // Neither side knows its NAT's behaviour (detection found nothing): no birthday attempt.
    let mut pair = pair(NatConfig::symmetric(), NatConfig::port_restricted_cone(), 4);
    assert!(!connects_ok(&mut pair, 7 * SECOND));
    for node in &pair.nodes {
        assert_eq!(
            node.count(|e| matches!(e, AgentEvent::ChecksFailed { .. })),
            1
        );
        assert!(node.selections().is_empty());
    }
}

/// The birthday method in both dial directions over many seeds: the success rate, time to a
/// path, and that every extra socket but the winning one is closed.
#[test]
fn birthday_method_connects_symmetric_against_port_restricted() {
    let trials = 40;
    let mut successes = 0;
    let mut times = Vec::new();
    for seed in 0..trials {
        let mut pair = pair(
            NatConfig::symmetric(),
            NatConfig::port_restricted_cone(),
            100 + seed,
        );
        pair.set_nats([
            NatBehaviour::EndpointDependent,
            NatBehaviour::EndpointIndependent,
        ]);
        pair.nodes[0].max_sockets = BIRTHDAY_SOCKETS;
        let dialler = (seed % 2) as usize;
        pair.punch(dialler);
        let start = pair.now;
        let deadline = start + 5 * SECOND;
        if pair.run_until(deadline, |p| p.both_selected()) {
            successes += 1;
            times.push(pair.now - start);
            pair.run_for(SECOND);
            // (A provisional path, the source of the first probe that got in, may have given
            // way to the first pair whose own check succeeded.)
            let path = pair.selected(0).unwrap();
            assert_ne!(path.local.0, 0, "the path lives on a birthday socket");
            assert_eq!(
                pair.nodes[0].sockets.iter().copied().collect::<Vec<_>>(),
                vec![path.local.0],
                "every other birthday socket is closed"
            );
        } else {
            pair.run_for(2 * SECOND);
            assert!(
                pair.nodes[0].sockets.is_empty(),
                "a failed attempt closes its sockets"
            );
        }
    }
    times.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    eprintln!("birthday: {successes}/{trials} within 5 s, median {median:?}");
    // Tailscale's arithmetic says about 98%; 90% is the bar set for the lab.
    assert!(successes * 10 >= trials * 9, "{successes}/{trials}");
}

#[test]
fn dialler_behind_a_bare_linux_nat_punches_a_port_restricted_answerer() {
    // The answer delay lets the dialler's checks leave first, so its conntrack is not poisoned.
    for seed in 0..10 {
        let mut pair = pair(
            NatConfig::bare_linux(),
            NatConfig::port_restricted_cone(),
            seed,
        );
        assert!(connects_ok(&mut pair, SECOND), "seed {seed}");
    }
}

/// The birthday method against a bare Linux NAT: the symmetric side waits until the other side
/// has probed, so its checks find open ports instead of poisoning them.
#[test]
fn birthday_against_a_bare_linux_nat_waits_for_the_probes() {
    let trials = 20;
    let mut successes = 0;
    for seed in 0..trials {
        let mut pair = pair(NatConfig::symmetric(), NatConfig::bare_linux(), 300 + seed);
        pair.set_reports([
            NatReport {
                mapping: NatBehaviour::EndpointDependent,
                inbound: InboundBehaviour::Unknown,
            },
            NatReport {
                mapping: NatBehaviour::EndpointIndependent,
                inbound: InboundBehaviour::MovesPort,
            },
        ]);
        pair.nodes[0].max_sockets = BIRTHDAY_SOCKETS;
        pair.punch((seed % 2) as usize);
        let deadline = pair.now + 5 * SECOND;
        successes += u64::from(pair.run_until(deadline, |p| p.both_selected()));
    }
    eprintln!("birthday against a bare Linux NAT: {successes}/{trials}");
    assert!(successes * 10 >= trials * 9, "{successes}/{trials}");
}

/// A port-restricted cone with a WAN firewall dials a bare Linux NAT: the dialler's first check
/// would poison the answerer's NAT. Knowing from NAT detection which side moves its port after
/// unsolicited inbound, the bare side checks first and the other waits.
#[test]
fn the_side_whose_nat_moves_its_port_checks_first() {
    let eim = |inbound| NatReport {
        mapping: NatBehaviour::EndpointIndependent,
        inbound,
    };
    for seed in 0..10 {
        let mut pair = pair(
            NatConfig::port_restricted_cone(),
            NatConfig::bare_linux(),
            seed,
        );
        pair.set_reports([
            eim(InboundBehaviour::KeepsPort),
            eim(InboundBehaviour::MovesPort),
        ]);
        assert!(connects_ok(&mut pair, SECOND), "seed {seed}");
    }
    // Without the report the dialler goes first and poisons the bare NAT: nothing connects.
    let mut pair = pair(
        NatConfig::port_restricted_cone(),
        NatConfig::bare_linux(),
        1,
    );
    assert!(!connects_ok(&mut pair, 6 * SECOND));
}

#[test]
fn connects_through_loss_and_delay() {
    for seed in 0..20 {
        let (mut net, rendezvous) = network(seed);
        let (nat_a, alice) = behind(
            &mut net,
            NatConfig::port_restricted_cone(),
            "192.0.2.1",
            "10.0.0.10",
        );
        let (nat_b, bob) = behind(&mut net, NatConfig::full_cone(), "192.0.2.2", "10.0.1.10");
        net.set_nat_link(nat_a, ms(40), 0.2);
        net.set_nat_link(nat_b, ms(30), 0.2);
        let mut pair = Pair::new(net, rendezvous, [alice, bob], AgentConfig::default());
        assert!(connects_ok(&mut pair, 5 * SECOND), "seed {seed}");
    }
}

#[test]
fn nat_rebinding_moves_the_path_and_application_traffic_resumes() {
    let (mut pair, [nat_a, _]) =
        pair_with_nats(NatConfig::full_cone(), NatConfig::restricted_cone(), 6);
    assert!(connects_ok(&mut pair, SECOND));
    pair.connect();
    pair.app_interval = Some(ms(10));
    pair.run_for(3 * SECOND);
    let before = pair.selected(1).unwrap();
    let received_before = pair.nodes[1].app_received.len();
    assert!(received_before > 250);

    pair.net.nat_mut(nat_a).rebind();
    pair.run_for(10 * SECOND);
    let after = pair.selected(1).unwrap();
    assert_eq!(after.remote.ip(), before.remote.ip());
    assert_ne!(
        after.remote.port(),
        before.remote.port(),
        "bob follows alice's new mapping"
    );
    let switch = pair.nodes[1]
        .selections()
        .into_iter()
        .find(|(_, path, previous)| *path == after && *previous == Some(before));
    assert!(
        switch.is_some(),
        "a path switch event with the old path as previous"
    );
    // alice's traffic arrives from the new address and is still shown as bob's peer (the new
    // route is known); the stall lasts at most a heartbeat and a round trip or two.
    let received = &pair.nodes[1].app_received;
    let last_seq = *received.last().unwrap();
    assert!(
        last_seq >= 1200,
        "traffic flows after the rebinding: {last_seq}"
    );
    let missing = (0..=last_seq).filter(|s| !received.contains(s)).count();
    assert!(
        missing <= 300,
        "{missing} datagrams lost in the switch (at most 3 s of traffic)"
    );
    // Both directions flow again.
    assert!(*pair.nodes[0].app_received.last().unwrap() >= 1200);
}

#[test]
fn a_rebinding_behind_port_restricted_peers_is_re_punched() {
    // bob's NAT filters by address and port: alice's traffic from her new mapping is dropped
    // until both sides punch again through the rendezvous (NeedCandidates).
    let (mut pair, [nat_a, _]) = pair_with_nats(
        NatConfig::port_restricted_cone(),
        NatConfig::port_restricted_cone(),
        7,
    );
    assert!(connects_ok(&mut pair, SECOND));
    pair.connect();
    pair.app_interval = Some(ms(10));
    pair.run_for(2 * SECOND);
    let before = pair.selected(1).unwrap();
    pair.net.nat_mut(nat_a).rebind();
    pair.run_for(15 * SECOND);
    let after = pair.selected(1).unwrap();
    assert_ne!(after, before);
    assert!(pair
        .nodes
        .iter()
        .any(|n| n.count(|e| matches!(e, AgentEvent::NeedCandidates { .. })) > 0));
    let last = *pair.nodes[1].app_received.last().unwrap();
    assert!(last >= 1500, "traffic flows again: last seq {last}");
}

#[test]
fn host_moving_to_another_network_re_punches() {
    let mut pair = pair(
        NatConfig::port_restricted_cone(),
        NatConfig::port_restricted_cone(),
        8,
    );
    let cafe = pair
        .net
        .add_nat(NatConfig::restricted_cone(), ip("198.51.100.7"), None);
    let alice = pair.nodes[0].host;
    assert!(connects_ok(&mut pair, SECOND));
    pair.connect();
    pair.app_interval = Some(ms(10));
    pair.run_for(2 * SECOND);
    pair.net.move_host(alice, ip("172.16.5.20"), Some(cafe));
    pair.run_for(15 * SECOND);
    assert_eq!(pair.selected(1).unwrap().remote.ip(), ip("198.51.100.7"));
    let last = *pair.nodes[1].app_received.last().unwrap();
    assert!(last >= 1500, "traffic flows again: last seq {last}");
}

#[test]
fn forged_and_replayed_checks_never_select_an_attackers_path() {
    let mut pair = pair(NatConfig::full_cone(), NatConfig::full_cone(), 9);
    let eve_host = pair.net.add_host(ip("198.51.100.66"), None);
    let eve_addr = "198.51.100.66:6666".parse().unwrap();
    let alice = pair.nodes[0].id();
    let bob = pair.nodes[1].id();
    // eve knows both IDs but not their keys: a check "from bob" under her own key.
    let mut eve = PathAgent::new(
        p2pnat_proto::path::auth::OwnSecret::from_seed(&[66; 32]),
        AgentConfig::default(),
        [0; 32],
    );
    eve.start_checks(
        pair.now,
        alice,
        &direct(&["192.0.2.1:5000".parse().unwrap()]),
        CheckRole::Dialler,
    )
    .unwrap();
    let p2pnat_proto::path::Output::Transmit(check) = eve.poll_output(pair.now) else {
        panic!("eve has a check to send");
    };
    let mut forged = check.contents.clone();
    forged[19..51].copy_from_slice(&bob.0); // claims to be bob
    let now = pair.now;
    assert!(pair.nodes[0]
        .agent
        .handle_datagram(now, p2pnat_proto::path::LocalSocketId(0), eve_addr, &forged)
        .is_err());
    // A genuine check of bob's, captured and replayed from eve's address: alice answers it and
    // checks eve's address, but eve cannot answer that check, so it is never selected.
    pair.punch(1);
    let deadline = pair.now + SECOND;
    assert!(pair.run_until(deadline, |p| p.both_selected()));
    let bob_path = pair.selected(1).unwrap();
    let mut bob_check = None;
    let key_ok = {
        let mut replay_agent = PathAgent::new(
            p2pnat_proto::path::auth::OwnSecret::from_seed(&[2; 32]),
            AgentConfig::default(),
            [5; 32],
        );
        replay_agent
            .start_checks(
                pair.now,
                alice,
                &direct(&[bob_path.remote]),
                CheckRole::Dialler,
            )
            .unwrap();
        if let p2pnat_proto::path::Output::Transmit(t) = replay_agent.poll_output(pair.now) {
            bob_check = Some(t.contents);
        }
        bob_check.is_some()
    };
    assert!(key_ok);
    pair.net.send(
        pair.now,
        eve_host,
        eve_addr,
        "192.0.2.1:5000".parse().unwrap(),
        bob_check.unwrap(),
    );
    pair.run_for(10 * SECOND);
    assert_ne!(pair.selected(0).unwrap().remote, eve_addr);
    assert!(pair.nodes[0]
        .selections()
        .iter()
        .all(|(_, path, _)| path.remote != eve_addr));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let trace = |seed| {
        let mut pair = pair(NatConfig::symmetric(), NatConfig::restricted_cone(), seed);
        connects(&mut pair, 2 * SECOND);
        (
            pair.elapsed(),
            pair.selected(0),
            pair.selected(1),
            pair.net.counters().clone(),
        )
    };
    assert_eq!(trace(11), trace(11));
}

#[test]
fn checks_leave_in_a_burst_then_paced() {
    let config = AgentConfig::default();
    let mut agent = PathAgent::new(
        p2pnat_proto::path::auth::OwnSecret::from_seed(&[1; 32]),
        config,
        [0; 32],
    );
    let peer = p2pnat_proto::path::auth::OwnSecret::from_seed(&[2; 32]).id();
    let candidates: Vec<std::net::SocketAddr> = (0..32)
        .map(|i| format!("192.0.2.{}:4000", i + 1).parse().unwrap())
        .collect();
    let start = std::time::Instant::now();
    agent
        .start_checks(start, peer, &direct(&candidates), CheckRole::Dialler)
        .unwrap();
    let mut now = start;
    let mut sent_at = Vec::new();
    while sent_at.len() < 32 {
        match agent.poll_output(now) {
            p2pnat_proto::path::Output::Transmit(_) => sent_at.push(now - start),
            p2pnat_proto::path::Output::Event(e) => panic!("unexpected {e:?}"),
            p2pnat_proto::path::Output::Timeout(at) => {
                assert!(at > now, "a timeout in the past would spin the driver");
                now = at;
                agent.handle_timeout(now);
            }
        }
    }
    let burst = config.pace_burst as usize;
    assert!(sent_at[..burst].iter().all(|t| t.is_zero()));
    for (i, at) in sent_at[burst..].iter().enumerate() {
        assert_eq!(*at, config.pace * (i as u32 + 1), "check {}", burst + i);
    }
}

/// The peer's QUIC handshake reaches us from a path before its check does (netsim: a birthday
/// socket): the handshake gets an anonymous address, and when the check on that path proves
/// the peer, that address is adopted, keeps receiving, and is the one to dial.
#[test]
fn an_anonymous_handshake_address_is_adopted_by_the_peer_it_comes_from() {
    use p2pnat_proto::path::auth::OwnSecret;
    use p2pnat_proto::path::wire::{CheckBody, CheckDatagram};
    use p2pnat_proto::path::LocalSocketId;
    let now = std::time::Instant::now();
    let (alice, bob) = (
        OwnSecret::from_seed(&[1; 32]),
        OwnSecret::from_seed(&[2; 32]),
    );
    let mut agent = PathAgent::new(bob.clone(), AgentConfig::default(), [0; 32]);
    let peer_addr: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let socket = LocalSocketId(7);
    let dialled = agent
        .start_checks(
            now,
            alice.id(),
            &direct(&["192.0.2.1:4000".parse().unwrap()]),
            CheckRole::Answerer,
        )
        .unwrap();
    let anonymous = agent
        .vaddr_for_source(now, socket, peer_addr, true)
        .unwrap()
        .unwrap();
    assert_ne!(anonymous, dialled);
    let check = CheckDatagram {
        transaction: [9; 12],
        sender: alice.id(),
        receiver: bob.id(),
        body: CheckBody::Check {
            heartbeat: false,
            relayed: false,
        },
    };
    let key = alice.pair_key(&bob.id()).unwrap();
    agent
        .handle_datagram(now, socket, peer_addr, &check.encode(&key))
        .unwrap();
    assert_eq!(
        agent.vaddr_for_source(now, socket, peer_addr, false),
        Ok(Some(anonymous))
    );
    assert_eq!(agent.table().peer(anonymous), Some(alice.id()));
    assert_eq!(agent.dial_vaddr(&alice.id()), Some(anonymous));
    let path = agent.peer_path(&alice.id()).expect("provisional path");
    assert_eq!((path.local, path.remote), (socket, peer_addr));
    assert_eq!(agent.selected_path(anonymous), Some(path));
    assert_eq!(
        agent.selected_path(dialled),
        Some(path),
        "both addresses send there"
    );
}

/// A handshake from an address being checked for a peer is shown under the peer's own virtual
/// address, not a new anonymous one: with two addresses the peer's packets would split between
/// them when its path changes, and quinn drops a connection's packets under another address.
#[test]
fn a_handshake_from_a_pair_being_checked_joins_the_peer_s_address() {
    use p2pnat_proto::path::auth::OwnSecret;
    use p2pnat_proto::path::LocalSocketId;
    let now = std::time::Instant::now();
    let alice = OwnSecret::from_seed(&[1; 32]).id();
    let mut bob = PathAgent::new(
        OwnSecret::from_seed(&[2; 32]),
        AgentConfig::default(),
        [9; 32],
    );
    let candidate: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
    let vaddr = bob
        .start_checks(now, alice, &direct(&[candidate]), CheckRole::Answerer)
        .unwrap();
    assert_eq!(
        bob.vaddr_for_source(now, LocalSocketId::MAIN, candidate, true),
        Ok(Some(vaddr))
    );
    // ...and, with no path yet, its pair is the peer's provisional path (quinn can answer).
    let path = bob.peer_path(&alice).expect("a provisional path");
    assert_eq!((path.local, path.remote), (LocalSocketId::MAIN, candidate));
    // A stranger's handshake still gets an address of its own.
    let stranger: std::net::SocketAddr = "198.51.100.7:4000".parse().unwrap();
    let other = bob
        .vaddr_for_source(now, LocalSocketId::MAIN, stranger, true)
        .unwrap()
        .unwrap();
    assert_ne!(other, vaddr);
    // Not a handshake, not a route: dropped.
    let quiet: std::net::SocketAddr = "198.51.100.8:4000".parse().unwrap();
    assert_eq!(
        bob.vaddr_for_source(now, LocalSocketId::MAIN, quiet, false),
        Ok(None)
    );
}

/// A punch request is not a reflector: the answering side checks the requester's addresses
/// for `answer_window` only (a first check and its early retries), while the dialling side
/// checks for the whole round. Counted over the full 5 s round in virtual time.
#[test]
fn the_answering_side_sends_a_short_burst_not_a_five_second_round() {
    let count_checks = |role: CheckRole| {
        let mut agent = PathAgent::new(
            p2pnat_proto::path::auth::OwnSecret::from_seed(&[1; 32]),
            AgentConfig::default(),
            [0; 32],
        );
        let peer = p2pnat_proto::path::auth::OwnSecret::from_seed(&[2; 32]).id();
        let candidates: Vec<std::net::SocketAddr> = (0..8)
            .map(|i| format!("10.0.0.{}:4000", i + 1).parse().unwrap())
            .collect();
        let start = std::time::Instant::now();
        agent
            .start_checks(start, peer, &direct(&candidates), role)
            .unwrap();
        let (mut now, mut checks, mut bytes) = (start, 0usize, 0usize);
        while now < start + Duration::from_secs(6) {
            match agent.poll_output(now) {
                p2pnat_proto::path::Output::Transmit(t) => {
                    checks += 1;
                    bytes += t.contents.len();
                }
                p2pnat_proto::path::Output::Event(_) => {}
                p2pnat_proto::path::Output::Timeout(at) => {
                    now = at;
                    agent.handle_timeout(now);
                }
            }
        }
        (checks, bytes)
    };
    let (answer_checks, answer_bytes) = count_checks(CheckRole::Answerer);
    let (dial_checks, _) = count_checks(CheckRole::Dialler);
    // 8 addresses x (a first check + 3 early retries + at most one retransmit in 250 ms).
    assert!(
        answer_checks <= 8 * 5,
        "answerer sent {answer_checks} checks"
    );
    assert!(
        answer_checks >= 8,
        "answerer must still open its NAT: {answer_checks}"
    );
    assert!(
        dial_checks > 8 * 20,
        "dialler checks the round: {dial_checks}"
    );
    eprintln!(
        "answerer: {answer_checks} checks, {answer_bytes} bytes; dialler: {dial_checks} checks"
    );
}

/// A check's source can be spoofed: one valid check from a stranger identity (outside any
/// round or connection) is answered once and triggers one check back, not a round of them.
/// Counts what the agent sends to the spoofed address over 6 s.
#[test]
fn one_spoofed_check_from_a_stranger_is_not_amplified_into_a_round() {
    use p2pnat_proto::path::auth::OwnSecret;
    let start = std::time::Instant::now();
    let mut agent = PathAgent::new(
        OwnSecret::from_seed(&[1; 32]),
        AgentConfig::default(),
        [0; 32],
    );
    // The stranger makes a valid check to us under its own identity.
    let mut stranger = PathAgent::new(
        OwnSecret::from_seed(&[77; 32]),
        AgentConfig::default(),
        [5; 32],
    );
    let us = OwnSecret::from_seed(&[1; 32]).id();
    stranger
        .start_checks(
            start,
            us,
            &direct(&["192.0.2.1:4000".parse().unwrap()]),
            CheckRole::Dialler,
        )
        .unwrap();
    let p2pnat_proto::path::Output::Transmit(check) = stranger.poll_output(start) else {
        panic!("the stranger has a check to send");
    };
    let victim: std::net::SocketAddr = "198.51.100.200:53".parse().unwrap();
    agent
        .handle_datagram(
            start,
            p2pnat_proto::path::LocalSocketId(0),
            victim,
            &check.contents,
        )
        .unwrap();
    let (mut now, mut to_victim, mut bytes) = (start, 0usize, 0usize);
    while now < start + Duration::from_secs(6) {
        match agent.poll_output(now) {
            p2pnat_proto::path::Output::Transmit(t) => {
                if t.destination == victim {
                    to_victim += 1;
                    bytes += t.contents.len();
                }
            }
            p2pnat_proto::path::Output::Event(_) => {}
            p2pnat_proto::path::Output::Timeout(at) => {
                now = at;
                agent.handle_timeout(now);
            }
        }
    }
    eprintln!(
        "one spoofed check of {} bytes: {to_victim} datagrams, {bytes} bytes to its source",
        check.contents.len()
    );
    // The reply, a triggered check and its early retries (and at most one retransmit).
    assert!(
        to_victim <= 6,
        "{to_victim} datagrams sent to a spoofed source"
    );
    assert!(to_victim >= 1, "the check is still answered");
}
