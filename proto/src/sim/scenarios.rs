//! End-to-end scenarios on a simulated network: hole punching between two NATs, the bare Linux
//! race that defeats it, and determinism. Virtual time only.

use super::nat::NatConfig;
use super::net::{Delivery, HostId, NatId, Network};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid ip")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid address")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A network, a clock and a log of deliveries (time since the start, delivery).
struct Sim {
    net: Network,
    t0: Instant,
    now: Instant,
    log: Vec<(Duration, Delivery)>,
}

impl Sim {
    fn new(net: Network) -> Self {
        let t0 = Instant::now();
        Sim {
            net,
            t0,
            now: t0,
            log: Vec::new(),
        }
    }

    /// Advances virtual time to `t0 + at`, logging every delivery due by then.
    fn run_until(&mut self, at: Duration) {
        let until = self.t0 + at;
        while let Some(t) = self.net.next_delivery_time().filter(|t| *t <= until) {
            self.now = self.now.max(t);
            while let Some(d) = self.net.poll_delivery(self.now) {
                self.log.push((self.now - self.t0, d));
            }
        }
        self.now = self.now.max(until);
    }

    fn send(&mut self, host: HostId, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        self.net.send(self.now, host, src, dst, payload.to_vec());
    }

    /// Deliveries to `host` carrying `payload`.
    fn received(&self, host: HostId, payload: &[u8]) -> Vec<&Delivery> {
        self.log
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d.host == host && d.payload == payload)
            .collect()
    }
}

struct Punch {
    sim: Sim,
    a: HostId,
    b: HostId,
    nat_a: NatId,
    nat_b: NatId,
    server: HostId,
}

const A_LOCAL: &str = "10.0.1.10:5000";
const B_LOCAL: &str = "10.0.2.10:6000";
const SERVER: &str = "203.0.113.10:3478";

/// Alice and bob behind NATs of kind `config` on the internet, 5 ms host uplinks and 10 ms NAT
/// uplinks (25 ms one way between them).
fn punch_lab(config: NatConfig) -> Punch {
    let mut net = Network::new(11);
    let nat_a = net.add_nat(config, ip("192.0.2.1"), None);
    let nat_b = net.add_nat(config, ip("192.0.2.2"), None);
    let a = net.add_host(ip("10.0.1.10"), Some(nat_a));
    let b = net.add_host(ip("10.0.2.10"), Some(nat_b));
    let server = net.add_host(ip("203.0.113.10"), None);
    for host in [a, b, server] {
        net.set_host_link(host, ms(5), 0.0);
    }
    for nat in [nat_a, nat_b] {
        net.set_nat_link(nat, ms(10), 0.0);
    }
    Punch {
        sim: Sim::new(net),
        a,
        b,
        nat_a,
        nat_b,
        server,
    }
}

impl Punch {
    /// Both register from `a_local` / `b_local` with the server; the public addresses it saw.
    fn register(&mut self, a_local: &str, b_local: &str) -> (SocketAddr, SocketAddr) {
        let start = self.sim.now - self.sim.t0;
        self.sim
            .send(self.a, addr(a_local), addr(SERVER), b"register a");
        self.sim
            .send(self.b, addr(b_local), addr(SERVER), b"register b");
        self.sim.run_until(start + ms(100));
        let seen = |p: &[u8]| self.sim.received(self.server, p).last().map(|d| d.src);
        (
            seen(b"register a").expect("a registered"),
            seen(b"register b").expect("b registered"),
        )
    }
}

#[test]
fn simultaneous_punch_through_two_port_restricted_nats() {
    let mut p = punch_lab(NatConfig::port_restricted_cone());
    let (a_pub, b_pub) = p.register(A_LOCAL, B_LOCAL);
    assert_eq!(
        (a_pub, b_pub),
        (addr("192.0.2.1:5000"), addr("192.0.2.2:6000"))
    );
    // Alone, a datagram to the other side's public address is filtered.
    p.sim.send(p.a, addr(A_LOCAL), b_pub, b"too early");
    p.sim.run_until(ms(200));
    assert!(p.sim.received(p.b, b"too early").is_empty());
    // At once, both get through: each NAT has sent to the other before the other's arrives.
    p.sim.send(p.a, addr(A_LOCAL), b_pub, b"punch a");
    p.sim.send(p.b, addr(B_LOCAL), a_pub, b"punch b");
    p.sim.run_until(ms(300));
    let at_b = p.sim.received(p.b, b"punch a");
    let at_a = p.sim.received(p.a, b"punch b");
    assert_eq!(at_b.len(), 1);
    assert_eq!(at_a.len(), 1);
    assert_eq!((at_b[0].src, at_a[0].src), (a_pub, b_pub));
    // The path stays open both ways.
    p.sim.send(p.a, addr(A_LOCAL), b_pub, b"data");
    p.sim.send(p.b, addr(B_LOCAL), a_pub, b"data");
    p.sim.run_until(ms(400));
    assert_eq!(p.sim.received(p.a, b"data").len(), 1);
    assert_eq!(p.sim.received(p.b, b"data").len(), 1);
}

/// Alice's punch arrives at bob's NAT before bob sends; both retry every second for 10 s.
fn staggered_punch(config: NatConfig) -> Punch {
    let mut p = punch_lab(config);
    let (a_pub, b_pub) = p.register(A_LOCAL, B_LOCAL);
    for round in 0..10u64 {
        let base = ms(1_000 + 1_000 * round);
        p.sim.run_until(base);
        p.sim.send(p.a, addr(A_LOCAL), b_pub, b"punch a");
        // Alice's datagram reaches bob's NAT at +25 ms; bob sends at +100 ms.
        p.sim.run_until(base + ms(100));
        p.sim.send(p.b, addr(B_LOCAL), a_pub, b"punch b");
    }
    p.sim.run_until(ms(12_000));
    p
}

#[test]
fn staggered_punch_succeeds_behind_wan_firewalls() {
    let p = staggered_punch(NatConfig::port_restricted_cone());
    // Alice's first datagram was dropped without a trace; bob's first one opened the way.
    assert_eq!(p.sim.received(p.a, b"punch b").len(), 10);
    assert_eq!(p.sim.received(p.b, b"punch a").len(), 9);
    assert_eq!(
        p.sim.net.nat(p.nat_b).map(|n| n.counters().diverted),
        Some(0)
    );
}

#[test]
fn staggered_punch_fails_between_bare_linux_nats() {
    let mut p = staggered_punch(NatConfig::bare_linux());
    // Alice's early datagram poisoned bob's NAT: bob's flow to alice left from another port,
    // which alice's NAT filters (and records), while alice keeps knocking on the old port,
    // refreshing the record. Nothing ever gets through.
    assert!(p.sim.received(p.a, b"punch b").is_empty());
    assert!(p.sim.received(p.b, b"punch a").is_empty());
    let nat_b = p.sim.net.nat(p.nat_b).expect("nat");
    assert_eq!(nat_b.counters().diverted, 1);
    assert!(nat_b.counters().filtered >= 10);
    assert!(p
        .sim
        .net
        .nat(p.nat_a)
        .is_some_and(|n| n.conntrack_count() >= 1));
    // Fresh tuples sidestep the poisoned entries: new local ports, punched at once.
    let (a_pub, b_pub) = p.register("10.0.1.10:5001", "10.0.2.10:6001");
    assert_eq!((a_pub.port(), b_pub.port()), (5001, 6001));
    p.sim.send(p.a, addr("10.0.1.10:5001"), b_pub, b"fresh a");
    p.sim.send(p.b, addr("10.0.2.10:6001"), a_pub, b"fresh b");
    p.sim.run_until(ms(13_000));
    assert_eq!(p.sim.received(p.a, b"fresh b").len(), 1);
    assert_eq!(p.sim.received(p.b, b"fresh a").len(), 1);
}

/// A lossy network with symmetric and cone NATs; every delivery with its time.
fn lossy_trace(seed: u64) -> Vec<(Duration, Delivery)> {
    let mut net = Network::new(seed);
    let sym = net.add_nat(NatConfig::symmetric(), ip("192.0.2.1"), None);
    let cone = net.add_nat(NatConfig::full_cone(), ip("192.0.2.2"), None);
    let a = net.add_host(ip("10.0.1.10"), Some(sym));
    let b = net.add_host(ip("10.0.2.10"), Some(cone));
    let s = net.add_host(ip("203.0.113.10"), None);
    for (i, host) in [a, b, s].into_iter().enumerate() {
        net.set_host_link(host, ms(3 + i as u64), 0.1);
    }
    net.set_nat_link(sym, ms(7), 0.1);
    let mut sim = Sim::new(net);
    for i in 0..200u64 {
        let port = 5000 + (i % 7) as u16;
        let payload = i.to_le_bytes();
        sim.send(
            a,
            SocketAddr::new(ip("10.0.1.10"), port),
            addr(SERVER),
            &payload,
        );
        sim.send(b, addr(B_LOCAL), addr("192.0.2.1:5000"), &payload);
        sim.send(s, addr(SERVER), addr("192.0.2.2:6000"), &payload);
        sim.run_until(ms(i));
    }
    sim.run_until(ms(1_000));
    sim.log
}

#[test]
fn same_seed_same_trace() {
    let first = lossy_trace(5);
    assert!(first.len() > 100, "{}", first.len());
    assert_eq!(first, lossy_trace(5));
    assert_ne!(first, lossy_trace(6));
}

/// Every delivery until the network is idle, with its arrival time since `t0`.
fn drain(net: &mut Network, t0: Instant) -> Vec<(Duration, Delivery)> {
    let mut out = Vec::new();
    while let Some(at) = net.next_delivery_time() {
        // Polling late still yields exact arrival times.
        let late = at + ms(1);
        while let Some((arrived, d)) = net.poll_timed(late) {
            out.push((arrived - t0, d));
        }
    }
    out
}

#[test]
fn moving_a_host_loses_what_was_on_its_way() {
    let t0 = Instant::now();
    let mut net = Network::new(1);
    let n1 = net.add_nat(NatConfig::full_cone(), ip("192.0.2.1"), None);
    let n2 = net.add_nat(NatConfig::full_cone(), ip("192.0.2.2"), None);
    let h = net.add_host(ip("10.0.1.10"), Some(n1));
    let s = net.add_host(ip("203.0.113.10"), None);
    net.set_host_link(h, ms(10), 0.0);
    net.send(
        t0,
        h,
        addr("10.0.1.10:5000"),
        addr("203.0.113.10:1"),
        vec![],
    );
    let public = drain(&mut net, t0)[0].1.src;
    net.send(t0, s, addr("203.0.113.10:1"), public, vec![1]);
    // Still on its way (h's uplink takes 10 ms) when h moves.
    assert!(net.poll_delivery(t0 + ms(5)).is_none());
    net.move_host(h, ip("10.0.2.10"), Some(n2));
    assert_eq!(net.host_ip(h), ip("10.0.2.10"));
    assert!(drain(&mut net, t0).is_empty());
    assert_eq!(net.counters().unroutable, 1);
    // A socket still bound to the old address sends nothing; the new one leaves via n2.
    net.send(
        t0,
        h,
        addr("10.0.1.10:5000"),
        addr("203.0.113.10:1"),
        vec![],
    );
    assert_eq!(net.counters().unroutable, 2);
    net.send(t0, h, addr("0.0.0.0:5000"), addr("203.0.113.10:1"), vec![]);
    let got = drain(&mut net, t0);
    assert_eq!(got[0].1.src, addr("192.0.2.2:5000"));
}

#[test]
fn translation_happens_when_the_datagram_reaches_the_nat() {
    let t0 = Instant::now();
    let mut net = Network::new(1);
    let nat = net.add_nat(NatConfig::port_restricted_cone(), ip("192.0.2.1"), None);
    let h = net.add_host(ip("10.0.0.10"), Some(nat));
    let s = net.add_host(ip("203.0.113.10"), None);
    net.set_host_link(s, ms(10), 0.0);
    net.send(
        t0,
        h,
        addr("10.0.0.10:5000"),
        addr("203.0.113.10:1"),
        vec![],
    );
    let public = drain(&mut net, t0)[0].1.src;
    net.send(t0 + ms(10), s, addr("203.0.113.10:1"), public, vec![]);
    assert!(net.poll_delivery(t0 + ms(15)).is_none());
    net.nat_mut(nat).rebind();
    assert!(drain(&mut net, t0).is_empty());
    assert_eq!(net.counters().filtered, 1);
}
