//! A network of hosts and NATs with per-uplink delay and loss, in virtual time.
//!
//! Topology: the internet is one segment; every NAT owns one LAN segment. Each host and each
//! NAT's WAN side sits on exactly one segment (the internet, or another NAT's LAN: double NAT,
//! carrier NAT). Every host and NAT has one *uplink* joining it to its segment, with a one-way
//! delay and a loss probability that apply in both directions.
//!
//! Routing of a datagram on a segment, by destination IP only: a host on that segment with that
//! IP gets it (across its uplink); a NAT whose WAN address is that IP on that segment gets it
//! (across the NAT's uplink, then inbound translation, then onto the NAT's LAN); otherwise a
//! datagram coming from below climbs to the segment's NAT (outbound translation, or hairpin
//! when the destination is that NAT's own public address) and across its uplink to the next
//! segment up, and one that came down from a NAT, or is on the internet, is unroutable. So
//! private addresses in different LANs never meet. Hosts come before NATs when addresses
//! collide on a segment (a misconfiguration).
//!
//! Time: a datagram is an event in a queue, ordered by time and then by the order events were
//! made (FIFO for equal times). It crosses each uplink in that uplink's delay, so the total delay
//! is the sum of the uplinks crossed; loss is drawn independently per uplink crossed, from the
//! network's seeded generator, when the datagram enters it. Translation happens when the
//! datagram reaches each NAT (at the event's own time), so NAT state changes during its flight
//! are seen. Routing is decided when a datagram reaches a segment; a host that moved meanwhile
//! (see [`Network::move_host`]) no longer receives what was on its way to it. Changes made by
//! `move_host`, `set_*` and [`Network::nat_mut`] affect every event processed after the call,
//! so drain [`Network::poll_delivery`] up to the current time first.
//!
//! Determinism: the same seed and the same calls give the same deliveries.
//!
//! Limits (each drop is counted in [`NetCounters::dropped`]): [`MAX_PAYLOAD`] bytes per
//! datagram, [`MAX_IN_FLIGHT`] datagrams and [`MAX_IN_FLIGHT_BYTES`] payload bytes in flight. A
//! routing step costs O(hosts + NATs). No method panics except [`Network::nat_mut`] and
//! [`Network::host_ip`] on an id that this network did not hand out; unknown ids elsewhere are
//! ignored (`set_*`) or lead nowhere (a `behind` that names no NAT is an isolated segment).

use super::nat::{Nat, NatConfig};
use super::rng::SimRng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Largest payload accepted (the largest UDP payload).
pub const MAX_PAYLOAD: usize = 65_535;
/// Most datagrams in flight at once.
pub const MAX_IN_FLIGHT: usize = 65_536;
/// Most payload bytes in flight at once (64 MiB).
pub const MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

/// A host of a [`Network`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// A NAT of a [`Network`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatId(pub usize);

/// A datagram handed to a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub host: HostId,
    /// The source as seen by the receiver (after every NAT on the way).
    pub src: SocketAddr,
    /// The receiver's own ip:port.
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What happened to the datagrams given to [`Network::send`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Calls to `send`.
    pub sent: u64,
    /// Datagrams handed out by `poll_delivery`.
    pub delivered: u64,
    /// Random loss on an uplink.
    pub lost: u64,
    /// Dropped by a NAT: filtering, no mapping, hairpin off, or a full NAT table.
    pub filtered: u64,
    /// No such destination on the path; a source that is not the sender's own address; a
    /// receiver that moved away meanwhile.
    pub unroutable: u64,
    /// Dropped on an uplink where UDP is blocked.
    pub blocked: u64,
    /// Dropped by the network's own limits (payload size, queue, time overflow).
    pub dropped: u64,
}

/// One uplink's impairment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Link {
    delay: Duration,
    loss: f64,
}

impl Link {
    fn new(delay: Duration, loss: f64) -> Self {
        let loss = if loss.is_nan() {
            0.0
        } else {
            loss.clamp(0.0, 1.0)
        };
        Link { delay, loss }
    }
}

#[derive(Debug)]
struct HostNode {
    ip: IpAddr,
    segment: Option<NatId>,
    link: Link,
    udp_blocked: bool,
    /// Bumped by every move: datagrams addressed to an earlier epoch are lost.
    epoch: u64,
}

#[derive(Debug)]
struct NatNode {
    nat: Nat,
    behind: Option<NatId>,
    link: Link,
}

/// Where a datagram in flight arrives when its event fires.
#[derive(Clone, Copy, Debug)]
enum Hop {
    /// Onto this segment from below (a host or an inner NAT on it).
    Up(Option<NatId>),
    /// At this NAT from its WAN side.
    NatWan(NatId),
    /// At this host, if it is still in the same epoch.
    Host(HostId, u64),
}

#[derive(Debug)]
struct InFlight {
    hop: Hop,
    src: SocketAddr,
    dst: SocketAddr,
    payload: Vec<u8>,
}

enum Target {
    Host(HostId),
    Nat(NatId),
}

/// A simulated network (see the module documentation for the model and its limits).
#[derive(Debug)]
pub struct Network {
    rng: SimRng,
    hosts: Vec<HostNode>,
    nats: Vec<NatNode>,
    events: BTreeMap<(Instant, u64), InFlight>,
    next_seq: u64,
    bytes_in_flight: usize,
    counters: NetCounters,
}

impl Network {
    /// An empty network; `seed` fixes loss and (through one derived seed per NAT) port choices.
    pub fn new(seed: u64) -> Self {
        Network {
            rng: SimRng::new(seed),
            hosts: Vec::new(),
            nats: Vec::new(),
            events: BTreeMap::new(),
            next_seq: 0,
            bytes_in_flight: 0,
            counters: NetCounters::default(),
        }
    }

    /// A NAT whose WAN side is the internet (`behind` `None`) or the LAN of another NAT (double
    /// NAT / CGNAT). `public_ip` is its WAN address.
    pub fn add_nat(
        &mut self,
        config: NatConfig,
        public_ip: IpAddr,
        behind: Option<NatId>,
    ) -> NatId {
        let seed = self.rng.next_u64();
        self.nats.push(NatNode {
            nat: Nat::new(config, public_ip, seed),
            behind,
            link: Link::default(),
        });
        NatId(self.nats.len() - 1)
    }

    /// A host on the internet (`behind` `None`) or on a NAT's LAN.
    pub fn add_host(&mut self, ip: IpAddr, behind: Option<NatId>) -> HostId {
        self.hosts.push(HostNode {
            ip,
            segment: behind,
            link: Link::default(),
            udp_blocked: false,
            epoch: 0,
        });
        HostId(self.hosts.len() - 1)
    }

    /// Impairment of a host's uplink (both directions): one-way delay and loss probability
    /// (clamped to `0.0..=1.0`; NaN is `0.0`).
    pub fn set_host_link(&mut self, host: HostId, delay: Duration, loss: f64) {
        if let Some(h) = self.hosts.get_mut(host.0) {
            h.link = Link::new(delay, loss);
        }
    }

    /// Impairment of a NAT's uplink (its WAN side, both directions), as for hosts.
    pub fn set_nat_link(&mut self, nat: NatId, delay: Duration, loss: f64) {
        if let Some(n) = self.nats.get_mut(nat.0) {
            n.link = Link::new(delay, loss);
        }
    }

    /// `host` sends from its own `src` (its ip, or the unspecified address for it; any port)
    /// to `dst`. Never fails: whatever is dropped is counted.
    pub fn send(
        &mut self,
        now: Instant,
        host: HostId,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    ) {
        self.counters.sent += 1;
        let Some(h) = self.hosts.get(host.0) else {
            self.counters.unroutable += 1;
            return;
        };
        let src = if src.ip().is_unspecified() {
            SocketAddr::new(h.ip, src.port())
        } else {
            src
        };
        if src.ip() != h.ip {
            self.counters.unroutable += 1;
            return;
        }
        if h.udp_blocked {
            self.counters.blocked += 1;
            return;
        }
        if payload.len() > MAX_PAYLOAD {
            self.counters.dropped += 1;
            return;
        }
        let (link, segment) = (h.link, h.segment);
        self.cross(now, link, Hop::Up(segment), src, dst, payload);
    }

    /// The next datagram due at or before `now`, if any (in time order, FIFO for equal times).
    /// Processes every hop due by then on the way.
    pub fn poll_delivery(&mut self, now: Instant) -> Option<Delivery> {
        self.poll_timed(now).map(|(_, delivery)| delivery)
    }

    /// As [`Network::poll_delivery`], with the instant the datagram arrived (at or before
    /// `now`), for a caller that polls late and still wants exact arrival times.
    pub fn poll_timed(&mut self, now: Instant) -> Option<(Instant, Delivery)> {
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > now {
                return None;
            }
            let ((at, _), flight) = entry.remove_entry();
            self.bytes_in_flight = self.bytes_in_flight.saturating_sub(flight.payload.len());
            if let Some(delivery) = self.step(at, flight) {
                return Some((at, delivery));
            }
        }
        None
    }

    /// The time of the next pending hop: nothing is delivered before it, and
    /// [`Network::poll_delivery`] at that time makes progress (it may deliver nothing if the
    /// hop only moves the datagram on, or drops it).
    pub fn next_delivery_time(&self) -> Option<Instant> {
        self.events.keys().next().map(|(at, _)| *at)
    }

    /// Datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.events.len()
    }

    /// The NAT `nat`, to inspect it or change its state (e.g. [`Nat::rebind`]).
    ///
    /// # Panics
    /// If `nat` was not returned by this network's [`Network::add_nat`].
    pub fn nat_mut(&mut self, nat: NatId) -> &mut Nat {
        &mut self.nats[nat.0].nat
    }

    /// The NAT `nat`, or `None` for an unknown id.
    pub fn nat(&self, nat: NatId) -> Option<&Nat> {
        self.nats.get(nat.0).map(|n| &n.nat)
    }

    /// Network change: the host gets a new address and/or moves behind another NAT (or none).
    /// Datagrams in flight to its old address are lost; its link settings stay.
    pub fn move_host(&mut self, host: HostId, ip: IpAddr, behind: Option<NatId>) {
        if let Some(h) = self.hosts.get_mut(host.0) {
            h.ip = ip;
            h.segment = behind;
            h.epoch = h.epoch.wrapping_add(1);
        }
    }

    /// The host's current address.
    ///
    /// # Panics
    /// If `host` was not returned by this network's [`Network::add_host`].
    pub fn host_ip(&self, host: HostId) -> IpAddr {
        self.hosts[host.0].ip
    }

    /// What happened to the datagrams so far.
    pub fn counters(&self) -> &NetCounters {
        &self.counters
    }

    /// Block all UDP on a host's uplink, both directions (a UDP-blocking firewall), or unblock.
    /// Checked when a datagram enters the uplink.
    pub fn set_udp_blocked(&mut self, host: HostId, blocked: bool) {
        if let Some(h) = self.hosts.get_mut(host.0) {
            h.udp_blocked = blocked;
        }
    }

    /// Puts a datagram on an uplink: lost with the link's probability, else an event after its
    /// delay.
    fn cross(
        &mut self,
        at: Instant,
        link: Link,
        hop: Hop,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    ) {
        if self.rng.chance(link.loss) {
            self.counters.lost += 1;
            return;
        }
        let Some(arrival) = at.checked_add(link.delay) else {
            self.counters.dropped += 1;
            return;
        };
        let bytes = self.bytes_in_flight.saturating_add(payload.len());
        if self.events.len() >= MAX_IN_FLIGHT || bytes > MAX_IN_FLIGHT_BYTES {
            self.counters.dropped += 1;
            return;
        }
        self.bytes_in_flight = bytes;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let flight = InFlight {
            hop,
            src,
            dst,
            payload,
        };
        self.events.insert((arrival, seq), flight);
    }

    /// One hop of a datagram, at its event time `at`.
    fn step(&mut self, at: Instant, f: InFlight) -> Option<Delivery> {
        match f.hop {
            Hop::Up(segment) => {
                self.route(at, segment, false, f.src, f.dst, f.payload);
                None
            }
            Hop::NatWan(id) => {
                let Some(node) = self.nats.get_mut(id.0) else {
                    self.counters.unroutable += 1;
                    return None;
                };
                match node.nat.inbound(at, f.src, f.dst) {
                    Some(inside) => self.route(at, Some(id), true, f.src, inside, f.payload),
                    None => self.counters.filtered += 1,
                }
                None
            }
            Hop::Host(id, epoch) => match self.hosts.get(id.0) {
                Some(h) if h.epoch == epoch && h.ip == f.dst.ip() => {
                    self.counters.delivered += 1;
                    Some(Delivery {
                        host: id,
                        src: f.src,
                        dst: f.dst,
                        payload: f.payload,
                    })
                }
                _ => {
                    self.counters.unroutable += 1;
                    None
                }
            },
        }
    }

    /// Routes a datagram that has just reached `segment`, from below or (`down`) from its NAT.
    fn route(
        &mut self,
        at: Instant,
        segment: Option<NatId>,
        down: bool,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    ) {
        match self.find(segment, dst.ip()) {
            Some(Target::Host(id)) => {
                let Some(h) = self.hosts.get(id.0) else {
                    return;
                };
                if h.udp_blocked {
                    self.counters.blocked += 1;
                    return;
                }
                let (link, epoch) = (h.link, h.epoch);
                self.cross(at, link, Hop::Host(id, epoch), src, dst, payload);
            }
            Some(Target::Nat(id)) => {
                let Some(link) = self.nats.get(id.0).map(|n| n.link) else {
                    return;
                };
                self.cross(at, link, Hop::NatWan(id), src, dst, payload);
            }
            None => match segment {
                Some(id) if !down => self.climb(at, id, src, dst, payload),
                _ => self.counters.unroutable += 1,
            },
        }
    }

    /// A datagram from NAT `id`'s LAN to an address outside it.
    fn climb(
        &mut self,
        at: Instant,
        id: NatId,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    ) {
        let Some(node) = self.nats.get_mut(id.0) else {
            self.counters.unroutable += 1;
            return;
        };
        if dst.ip() == node.nat.public_ip() {
            match node.nat.hairpin(at, src, dst) {
                Some((public_src, inside)) => {
                    self.route(at, Some(id), true, public_src, inside, payload)
                }
                None => self.counters.filtered += 1,
            }
            return;
        }
        match node.nat.outbound(at, src, dst) {
            Some(public_src) => {
                let (link, behind) = (node.link, node.behind);
                self.cross(at, link, Hop::Up(behind), public_src, dst, payload);
            }
            None => self.counters.filtered += 1,
        }
    }

    fn find(&self, segment: Option<NatId>, ip: IpAddr) -> Option<Target> {
        if let Some(i) = self
            .hosts
            .iter()
            .position(|h| h.segment == segment && h.ip == ip)
        {
            return Some(Target::Host(HostId(i)));
        }
        self.nats
            .iter()
            .position(|n| n.behind == segment && n.nat.public_ip() == ip)
            .map(|i| Target::Nat(NatId(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::nat::NatConfig;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid ip")
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("valid address")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Every delivery until the network is idle, with its time since `t0`.
    fn drain(net: &mut Network, t0: Instant) -> Vec<(Duration, Delivery)> {
        let mut out = Vec::new();
        while let Some(at) = net.next_delivery_time() {
            while let Some(d) = net.poll_delivery(at) {
                out.push((at - t0, d));
            }
        }
        out
    }

    #[test]
    fn lan_local_delivery_stays_on_the_lan() {
        let t0 = Instant::now();
        let mut net = Network::new(1);
        let nat = net.add_nat(NatConfig::symmetric(), ip("192.0.2.1"), None);
        let a = net.add_host(ip("10.0.0.10"), Some(nat));
        let b = net.add_host(ip("10.0.0.11"), Some(nat));
        net.set_host_link(a, ms(3), 0.0);
        net.set_host_link(b, ms(4), 0.0);
        net.set_nat_link(nat, ms(100), 0.0);
        net.send(
            t0,
            a,
            addr("10.0.0.10:1"),
            addr("10.0.0.11:2"),
            b"x".to_vec(),
        );
        let got = drain(&mut net, t0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, ms(7));
        assert_eq!((got[0].1.host, got[0].1.src), (b, addr("10.0.0.10:1")));
        assert_eq!(got[0].1.dst, addr("10.0.0.11:2"));
        assert_eq!(net.nat_mut(nat).mapping_count(), 0, "never crossed the NAT");
    }

    #[test]
    fn private_addresses_in_different_lans_never_meet() {
        let t0 = Instant::now();
        let mut net = Network::new(1);
        let n1 = net.add_nat(NatConfig::full_cone(), ip("192.0.2.1"), None);
        let n2 = net.add_nat(NatConfig::full_cone(), ip("192.0.2.2"), None);
        let a = net.add_host(ip("10.0.0.10"), Some(n1));
        let _other = net.add_host(ip("10.0.0.20"), Some(n2));
        net.send(t0, a, addr("10.0.0.10:1"), addr("10.0.0.20:2"), vec![1]);
        assert!(drain(&mut net, t0).is_empty());
        assert_eq!(net.counters().unroutable, 1);
        // The internet has no such host either.
        let public = net.add_host(ip("198.51.100.10"), None);
        net.send(
            t0,
            public,
            addr("198.51.100.10:1"),
            addr("10.0.0.20:2"),
            vec![1],
        );
        assert!(drain(&mut net, t0).is_empty());
        assert_eq!(net.counters().unroutable, 2);
    }

    #[test]
    fn delay_is_the_sum_of_the_uplinks_crossed() {
        let t0 = Instant::now();
        let mut net = Network::new(1);
        let n1 = net.add_nat(NatConfig::full_cone(), ip("192.0.2.1"), None);
        let n2 = net.add_nat(NatConfig::full_cone(), ip("192.0.2.2"), None);
        let a = net.add_host(ip("10.0.1.10"), Some(n1));
        let b = net.add_host(ip("10.0.2.10"), Some(n2));
        net.set_host_link(a, ms(1), 0.0);
        net.set_nat_link(n1, ms(2), 0.0);
        net.set_nat_link(n2, ms(4), 0.0);
        net.set_host_link(b, ms(8), 0.0);
        // b opens its full-cone mapping first, then a sends to it.
        net.send(t0, b, addr("10.0.2.10:6000"), addr("192.0.2.1:9"), vec![0]);
        let _ = drain(&mut net, t0);
        net.send(
            t0,
            a,
            addr("10.0.1.10:5000"),
            addr("192.0.2.2:6000"),
            vec![1],
        );
        let got = drain(&mut net, t0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, ms(15));
        assert_eq!(got[0].1.src, addr("192.0.2.1:5000"));
        assert_eq!(got[0].1.dst, addr("10.0.2.10:6000"));
    }

    #[test]
    fn double_nat_works_both_ways() {
        let t0 = Instant::now();
        let mut net = Network::new(1);
        let carrier = net.add_nat(NatConfig::port_restricted_cone(), ip("192.0.2.1"), None);
        let home = net.add_nat(NatConfig::full_cone(), ip("100.64.1.2"), Some(carrier));
        let h = net.add_host(ip("10.1.0.10"), Some(home));
        let s = net.add_host(ip("203.0.113.10"), None);
        let stranger = net.add_host(ip("198.51.100.250"), None);
        for (i, link) in [(h, 1), (s, 2)] {
            net.set_host_link(i, ms(link), 0.0);
        }
        net.set_nat_link(home, ms(4), 0.0);
        net.set_nat_link(carrier, ms(8), 0.0);
        net.send(
            t0,
            h,
            addr("10.1.0.10:5000"),
            addr("203.0.113.10:3478"),
            b"up".to_vec(),
        );
        let got = drain(&mut net, t0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, ms(15));
        let public = got[0].1.src;
        assert_eq!(public, addr("192.0.2.1:5000"), "outermost NAT's address");
        net.send(t0, s, addr("203.0.113.10:3478"), public, b"down".to_vec());
        let got = drain(&mut net, t0);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.host), (ms(15), h));
        assert_eq!(got[0].1.src, addr("203.0.113.10:3478"));
        assert_eq!(got[0].1.dst, addr("10.1.0.10:5000"));
        // The carrier's filtering still applies.
        net.send(t0, stranger, addr("198.51.100.250:1"), public, vec![]);
        assert!(drain(&mut net, t0).is_empty());
        assert_eq!(net.counters().filtered, 1);
    }

    #[test]
    fn hairpin_on_and_off() {
        let t0 = Instant::now();
        for on in [true, false] {
            let mut net = Network::new(1);
            let config = NatConfig::port_restricted_cone().with_hairpin(on);
            let nat = net.add_nat(config, ip("192.0.2.1"), None);
            let a = net.add_host(ip("10.0.0.10"), Some(nat));
            let b = net.add_host(ip("10.0.0.11"), Some(nat));
            let _s = net.add_host(ip("203.0.113.10"), None);
            net.set_nat_link(nat, ms(50), 0.0);
            net.set_host_link(a, ms(1), 0.0);
            net.set_host_link(b, ms(2), 0.0);
            net.send(
                t0,
                b,
                addr("10.0.0.11:6000"),
                addr("203.0.113.10:1"),
                vec![],
            );
            let _ = drain(&mut net, t0);
            net.send(
                t0,
                a,
                addr("10.0.0.10:5000"),
                addr("192.0.2.1:6000"),
                vec![7],
            );
            let got = drain(&mut net, t0);
            if on {
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].0, ms(3), "never crosses the NAT's uplink");
                assert_eq!(got[0].1.host, b);
                assert_eq!(got[0].1.src, addr("192.0.2.1:5000"));
            } else {
                assert!(got.is_empty());
                assert_eq!(net.counters().filtered, 1);
            }
        }
    }

    #[test]
    fn loss_rate_matches_the_probability() {
        let t0 = Instant::now();
        let mut net = Network::new(7);
        let a = net.add_host(ip("198.51.100.10"), None);
        let b = net.add_host(ip("198.51.100.11"), None);
        net.set_host_link(a, ms(1), 0.2);
        net.set_host_link(b, ms(1), 0.2);
        for i in 0..10_000u32 {
            net.send(
                t0,
                a,
                addr("198.51.100.10:1"),
                addr("198.51.100.11:2"),
                i.to_le_bytes().to_vec(),
            );
        }
        let got = drain(&mut net, t0).len();
        // Two uplinks at 20% each: 64% arrive.
        assert!((6_200..6_600).contains(&got), "{got}");
        assert_eq!(net.counters().lost + got as u64, 10_000);
    }

    #[test]
    fn udp_blocked_uplink_drops_both_directions() {
        let t0 = Instant::now();
        let mut net = Network::new(1);
        let a = net.add_host(ip("198.51.100.10"), None);
        let b = net.add_host(ip("198.51.100.11"), None);
        net.set_udp_blocked(a, true);
        net.send(
            t0,
            a,
            addr("198.51.100.10:1"),
            addr("198.51.100.11:2"),
            vec![],
        );
        net.send(
            t0,
            b,
            addr("198.51.100.11:2"),
            addr("198.51.100.10:1"),
            vec![],
        );
        assert!(drain(&mut net, t0).is_empty());
        assert_eq!(net.counters().blocked, 2);
        net.set_udp_blocked(a, false);
        net.send(
            t0,
            b,
            addr("198.51.100.11:2"),
            addr("198.51.100.10:1"),
            vec![],
        );
        assert_eq!(drain(&mut net, t0).len(), 1);
    }

    #[test]
    fn bad_input_is_counted_not_panicked_on() {
        let t0 = Instant::now();
        let mut net = Network::new(1);
        let a = net.add_host(ip("198.51.100.10"), None);
        let lost = net.add_host(ip("10.9.0.1"), Some(NatId(42)));
        net.send(t0, a, addr("198.51.100.10:1"), addr("192.0.2.77:1"), vec![]);
        net.send(
            t0,
            a,
            addr("198.51.100.99:1"),
            addr("198.51.100.10:1"),
            vec![],
        );
        net.send(
            t0,
            HostId(99),
            addr("198.51.100.10:1"),
            addr("198.51.100.10:1"),
            vec![],
        );
        net.send(
            t0,
            lost,
            addr("10.9.0.1:1"),
            addr("198.51.100.10:1"),
            vec![],
        );
        assert_eq!(drain(&mut net, t0).len(), 0);
        assert_eq!(net.counters().unroutable, 4);
        net.send(
            t0,
            a,
            addr("198.51.100.10:1"),
            addr("198.51.100.10:1"),
            vec![0; MAX_PAYLOAD + 1],
        );
        assert_eq!(net.counters().dropped, 1);
        net.set_host_link(a, Duration::MAX, f64::NAN);
        net.set_nat_link(NatId(3), ms(1), 2.0);
        net.set_udp_blocked(HostId(99), true);
        net.move_host(HostId(99), ip("1.2.3.4"), None);
        net.send(
            t0,
            a,
            addr("198.51.100.10:1"),
            addr("198.51.100.10:1"),
            vec![],
        );
        assert_eq!(net.counters().dropped, 2, "time overflow");
        assert!(net.nat(NatId(0)).is_none());
        assert_eq!(net.in_flight(), 0);
    }
}
