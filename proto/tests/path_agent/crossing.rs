//! Two bare Linux NATs in virtual time: the crossing sweep (`p2pnat_proto::path::crossing`)
//! takes them from the relayed path to a direct one, and cleans up when it cannot.

use std::time::Duration;

use p2pnat_proto::nat::{InboundBehaviour, NatBehaviour, NatReport};
use p2pnat_proto::path::crossing::SWEEP_ROUNDS;
use p2pnat_proto::path::{AgentConfig, AgentEvent, PathKind};
use p2pnat_proto::sim::NatConfig;

use crate::harness::{behind, network, Pair};

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

const BARE: NatReport = NatReport {
    mapping: NatBehaviour::EndpointIndependent,
    inbound: InboundBehaviour::MovesPort,
};

/// alice and bob behind bare Linux NATs 20 µs from the internet (as close as netsim's
/// namespaces: a check crosses from one NAT to the other in 40 µs), hosts 100 µs from their
/// NATs, a relay 1 ms from the internet, both allocated; NAT reports as given.
fn bare_pair(seed: u64, reports: [NatReport; 2]) -> Pair {
    let (mut net, rendezvous) = network(seed);
    let (nat_a, alice) = behind(&mut net, NatConfig::bare_linux(), "192.0.2.1", "10.0.0.10");
    let (nat_b, bob) = behind(&mut net, NatConfig::bare_linux(), "192.0.2.2", "10.0.0.10");
    for host in [alice, bob] {
        net.set_host_link(host, us(100), 0.0);
    }
    for nat in [nat_a, nat_b] {
        net.set_nat_link(nat, us(20), 0.0);
    }
    let mut pair = Pair::new(net, rendezvous, [alice, bob], AgentConfig::default());
    pair.set_reports(reports);
    for i in 0..2 {
        pair.enable_relay(i);
        pair.nodes[i].max_sockets = 256;
    }
    pair
}

fn kinds(pair: &Pair) -> [Option<PathKind>; 2] {
    [0, 1].map(|i| pair.selected(i).map(|p| p.kind))
}

fn both_direct(pair: &Pair) -> bool {
    kinds(pair) == [Some(PathKind::Direct); 2]
}

fn bursts(pair: &Pair, i: usize) -> usize {
    pair.nodes[i].count(|e| matches!(e, AgentEvent::Burst { .. }))
}

/// Connects relayed (the ordinary checks poison both NATs), then runs until both are direct
/// or `within` passes.
fn punch_then_sweep(pair: &mut Pair, within: Duration) -> bool {
    pair.punch(0);
    let start = pair.now;
    assert!(
        pair.run_until(start + Duration::from_secs(1), |p| p.both_selected()),
        "connects through the relay"
    );
    pair.connect();
    pair.run_until(start + within, both_direct)
}

#[test]
fn two_bare_linux_nats_meet_by_the_crossing_sweep() {
    for seed in 0..10 {
        let mut pair = bare_pair(seed, [BARE; 2]);
        assert!(
            punch_then_sweep(&mut pair, Duration::from_secs(2)),
            "seed {seed}: {:?}",
            kinds(&pair)
        );
        // One side fanned out from extra sockets, the other aimed from its main socket; the
        // fan side keeps only the winning socket.
        let fan = (0..2).find(|&i| bursts(&pair, i) > 0 && pair.nodes[i].sockets.len() == 1);
        assert!(fan.is_some(), "seed {seed}: no fan side kept one socket");
        let fan = fan.unwrap();
        assert_eq!(
            pair.selected(fan).unwrap().local.0,
            *pair.nodes[fan].sockets.first().unwrap()
        );
        assert!(bursts(&pair, 1 - fan) > 0, "seed {seed}");
        // It stays direct: heartbeats keep the winning tuple open.
        pair.run_for(Duration::from_secs(10));
        assert!(both_direct(&pair), "seed {seed}: {:?}", kinds(&pair));
    }
}

#[test]
fn the_sweep_covers_a_start_error_of_half_a_millisecond() {
    for (seed, skew) in [
        (20, [us(500), us(0)]),
        (21, [us(0), us(550)]),
        (22, [us(300), us(0)]),
    ] {
        let mut pair = bare_pair(seed, [BARE; 2]);
        pair.burst_skew = skew;
        assert!(
            punch_then_sweep(&mut pair, Duration::from_secs(2)),
            "seed {seed}, skew {skew:?}: {:?}",
            kinds(&pair)
        );
    }
}

#[test]
fn beyond_its_reach_the_sweep_gives_up_and_closes_every_socket() {
    let mut pair = bare_pair(30, [BARE; 2]);
    // 2 ms late: more than the sweep's ±640 µs, every round.
    pair.burst_skew = [Duration::from_millis(2), Duration::ZERO];
    assert!(!punch_then_sweep(&mut pair, Duration::from_secs(3)));
    assert_eq!(kinds(&pair), [Some(PathKind::Relayed); 2]);
    let rounds = (0..2).map(|i| bursts(&pair, i)).max().unwrap();
    assert_eq!(rounds, usize::from(SWEEP_ROUNDS));
    for node in &pair.nodes {
        assert!(
            node.sockets.is_empty(),
            "sockets left open: {:?}",
            node.sockets
        );
    }
}

#[test]
fn without_the_sweep_two_bare_linux_nats_stay_relayed() {
    // The negative control: one side's NAT report does not say `moves-port`, so no sweep runs,
    // and the ordinary checks poison both NATs.
    let unmeasured = NatReport {
        inbound: InboundBehaviour::Unknown,
        ..BARE
    };
    for seed in 40..45 {
        let mut pair = bare_pair(seed, [BARE, unmeasured]);
        assert!(
            !punch_then_sweep(&mut pair, Duration::from_secs(2)),
            "seed {seed}"
        );
        assert_eq!(kinds(&pair), [Some(PathKind::Relayed); 2], "seed {seed}");
        assert_eq!(bursts(&pair, 0) + bursts(&pair, 1), 0);
    }
}
