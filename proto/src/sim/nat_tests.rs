//! Tests of the NAT model (each RFC 4787 behaviour, bare Linux poisoning, limits).
use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid address")
}

fn nat(config: NatConfig) -> Nat {
    Nat::new(config, "192.0.2.1".parse().expect("ip"), 1)
}

const IN: &str = "10.0.0.10:5000";
const R1: &str = "203.0.113.10:3478";
const R1_OTHER_PORT: &str = "203.0.113.10:3479";
const R2: &str = "203.0.113.11:3478";
const WITNESS: &str = "198.51.100.250:9000";

/// Sends to R1, R1 port 2 and R2 (the lab's mapping probes): the three public sources.
fn mapping_probe(n: &mut Nat, now: Instant) -> [SocketAddr; 3] {
    [R1, R1_OTHER_PORT, R2].map(|r| n.outbound(now, addr(IN), addr(r)).expect("mapped"))
}

/// After sending to R1 only, which of R1 port 2, R2 and the witness get in (the lab's
/// filtering probes).
fn filtering_probe(n: &mut Nat, now: Instant) -> [bool; 3] {
    let public = n.outbound(now, addr(IN), addr(R1)).expect("mapped");
    assert_eq!(n.inbound(now, addr(R1), public), Some(addr(IN)));
    [R1_OTHER_PORT, R2, WITNESS].map(|r| n.inbound(now, addr(r), public).is_some())
}

#[test]
fn full_cone_maps_independently_and_admits_anyone() {
    let t0 = Instant::now();
    let [a, b, c] = mapping_probe(&mut nat(NatConfig::full_cone()), t0);
    assert!(a == b && b == c);
    assert_eq!(a, addr("192.0.2.1:5000"), "port preserved");
    assert_eq!(
        filtering_probe(&mut nat(NatConfig::full_cone()), t0),
        [true; 3]
    );
}

#[test]
fn restricted_cone_admits_contacted_addresses_only() {
    let t0 = Instant::now();
    let [a, b, c] = mapping_probe(&mut nat(NatConfig::restricted_cone()), t0);
    assert!(a == b && b == c);
    let seen = filtering_probe(&mut nat(NatConfig::restricted_cone()), t0);
    assert_eq!(seen, [true, false, false]);
}

#[test]
fn port_restricted_cone_admits_contacted_endpoints_only() {
    let t0 = Instant::now();
    let [a, b, c] = mapping_probe(&mut nat(NatConfig::port_restricted_cone()), t0);
    assert!(a == b && b == c);
    let seen = filtering_probe(&mut nat(NatConfig::port_restricted_cone()), t0);
    assert_eq!(seen, [false, false, false]);
}

#[test]
fn symmetric_maps_each_endpoint_to_a_random_port() {
    let t0 = Instant::now();
    let mut n = nat(NatConfig::symmetric());
    let [a, b, c] = mapping_probe(&mut n, t0);
    assert!(a != b && b != c && a != c);
    assert!([a, b, c]
        .iter()
        .all(|p| p.port() != 5000 && p.port() >= MIN_RANDOM_PORT));
    assert_eq!(
        n.outbound(t0, addr(IN), addr(R1)),
        Some(a),
        "stable per endpoint"
    );
    assert_eq!(n.mapping_count(), 3);
    let seen = filtering_probe(&mut nat(NatConfig::symmetric()), t0);
    assert_eq!(seen, [false, false, false]);
}

#[test]
fn address_dependent_mapping_is_per_remote_ip() {
    let t0 = Instant::now();
    let config = NatConfig {
        mapping: Mapping::AddressDependent,
        ..NatConfig::port_restricted_cone()
    };
    let [a, b, c] = mapping_probe(&mut nat(config), t0);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn port_preservation_keeps_a_free_port_only() {
    let t0 = Instant::now();
    let mut n = nat(NatConfig::port_restricted_cone());
    let first = n.outbound(t0, addr(IN), addr(R1)).expect("mapped");
    assert_eq!(first.port(), 5000);
    // Another host with the same inside port cannot have it too.
    let second = n
        .outbound(t0, addr("10.0.0.11:5000"), addr(R1))
        .expect("mapped");
    assert_ne!(second.port(), 5000);
    let config = NatConfig::port_restricted_cone().with_port_preservation(false);
    let random = nat(config)
        .outbound(t0, addr(IN), addr(R1))
        .expect("mapped");
    assert_ne!(random.port(), 5000);
}

#[test]
fn mappings_expire_after_the_timeout_without_traffic() {
    let t0 = Instant::now();
    let timeout = Duration::from_secs(10);
    let mut n = nat(NatConfig::full_cone().with_mapping_timeout(timeout));
    let public = n.outbound(t0, addr(IN), addr(R1)).expect("mapped");
    // Inbound traffic refreshes the mapping.
    let t1 = t0 + Duration::from_secs(9);
    assert_eq!(n.inbound(t1, addr(R2), public), Some(addr(IN)));
    let t2 = t1 + timeout - Duration::from_millis(1);
    assert_eq!(n.inbound(t2, addr(R1), public), Some(addr(IN)));
    assert_eq!(n.inbound(t2 + timeout, addr(R1), public), None);
    assert_eq!(n.mapping_count(), 0);
    assert_eq!(n.counters().expired, 1);
    // A flow's permission expires on its own while the mapping lives on.
    let mut n = nat(NatConfig::port_restricted_cone().with_mapping_timeout(timeout));
    let public = n.outbound(t0, addr(IN), addr(R1)).expect("mapped");
    let t3 = t0 + Duration::from_secs(6);
    n.outbound(t3, addr(IN), addr(R2)).expect("mapped");
    let t4 = t0 + Duration::from_secs(12);
    assert_eq!(n.inbound(t4, addr(R2), public), Some(addr(IN)));
    assert_eq!(n.inbound(t4, addr(R1), public), None);
}

#[test]
fn bare_linux_unsolicited_datagram_moves_the_flow_to_another_port() {
    let t0 = Instant::now();
    let mut n = nat(NatConfig::bare_linux());
    let about_to_use = addr("192.0.2.1:5000");
    assert_eq!(n.inbound(t0, addr(WITNESS), about_to_use), None);
    assert_eq!(n.conntrack_count(), 1);
    let towards_witness = n.outbound(t0, addr(IN), addr(WITNESS)).expect("mapped");
    assert_ne!(towards_witness.port(), 5000, "the tuple is taken");
    assert_eq!(n.counters().diverted, 1);
    // Flows to anyone else keep the preserved port.
    assert_eq!(n.outbound(t0, addr(IN), addr(R1)), Some(about_to_use));
    assert_eq!(
        n.outbound(t0, addr(IN), addr(WITNESS)),
        Some(towards_witness)
    );
    // The witness reaches the host only on the diverted port; the record keeps 5000 shut.
    assert_eq!(
        n.inbound(t0, addr(WITNESS), towards_witness),
        Some(addr(IN))
    );
    assert_eq!(n.inbound(t0, addr(WITNESS), about_to_use), None);
}

#[test]
fn bare_linux_poisons_an_existing_mapping_until_the_record_expires() {
    let t0 = Instant::now();
    let mut n = nat(NatConfig::bare_linux());
    let public = n.outbound(t0, addr(IN), addr(R1)).expect("mapped");
    assert_eq!(n.inbound(t0, addr(R2), public), None);
    let moved = n.outbound(t0, addr(IN), addr(R2)).expect("mapped");
    assert_ne!(moved, public);
    // A fresh host whose record expired keeps its port.
    let mut n = nat(NatConfig::bare_linux());
    assert_eq!(n.inbound(t0, addr(R2), public), None);
    // More unsolicited datagrams refresh the record.
    let t1 = t0 + Duration::from_secs(20);
    assert_eq!(n.inbound(t1, addr(R2), public), None);
    assert_eq!(n.counters().conntrack_records, 1);
    let t2 = t0 + CONNTRACK_UNREPLIED_TIMEOUT;
    let mut probe = nat(NatConfig::bare_linux());
    let _ = probe.inbound(t0, addr(R2), public);
    let _ = probe.inbound(t1, addr(R2), public);
    assert_ne!(
        probe.outbound(t2, addr(IN), addr(R2)),
        Some(public),
        "still taken"
    );
    let later = t1 + CONNTRACK_UNREPLIED_TIMEOUT;
    assert_eq!(n.outbound(later, addr(IN), addr(R2)), Some(public));
    assert_eq!(n.conntrack_count(), 0);
}

#[test]
fn wan_firewall_drops_unsolicited_datagrams_without_a_record() {
    let t0 = Instant::now();
    let mut n = nat(NatConfig::port_restricted_cone());
    assert_eq!(n.inbound(t0, addr(WITNESS), addr("192.0.2.1:5000")), None);
    assert_eq!(n.conntrack_count(), 0);
    let public = n.outbound(t0, addr(IN), addr(WITNESS)).expect("mapped");
    assert_eq!(public.port(), 5000);
    assert_eq!(n.counters().diverted, 0);
}

#[test]
fn rebind_gives_every_host_a_new_port() {
    let t0 = Instant::now();
    for config in [NatConfig::port_restricted_cone(), NatConfig::symmetric()] {
        let mut n = nat(config);
        let before = n.outbound(t0, addr(IN), addr(R1)).expect("mapped");
        n.rebind();
        assert_eq!(n.mapping_count(), 0);
        assert_eq!(n.inbound(t0, addr(R1), before), None);
        let after = n.outbound(t0, addr(IN), addr(R1)).expect("mapped");
        assert_ne!(before.port(), after.port());
        n.rebind();
        let third = n.outbound(t0, addr(IN), addr(R1)).expect("mapped");
        assert!(third.port() != before.port() && third.port() != after.port());
    }
}

#[test]
fn hairpin_reaches_a_live_mapping_when_enabled() {
    let t0 = Instant::now();
    for on in [true, false] {
        let mut n = nat(NatConfig::port_restricted_cone().with_hairpin(on));
        let b = n
            .outbound(t0, addr("10.0.0.11:6000"), addr(R1))
            .expect("mapped");
        let got = n.hairpin(t0, addr(IN), b);
        if on {
            assert_eq!(got, Some((addr("192.0.2.1:5000"), addr("10.0.0.11:6000"))));
        } else {
            assert_eq!(got, None);
        }
        let none = n.hairpin(t0, addr(IN), addr("192.0.2.1:7"));
        assert_eq!(none, None, "no mapping on that port");
    }
}

#[test]
fn tables_are_bounded() {
    let t0 = Instant::now();
    let mut n = nat(NatConfig::symmetric());
    for i in 0..=MAX_MAPPINGS {
        let port = u16::try_from(1 + i).expect("small");
        let _ = n.outbound(
            t0,
            addr(IN),
            SocketAddr::new("203.0.113.10".parse().expect("ip"), port),
        );
    }
    assert_eq!(n.mapping_count(), MAX_MAPPINGS);
    assert_eq!(n.counters().table_full, 1);
    let mut n = nat(NatConfig::bare_linux());
    for i in 0..=MAX_CONNTRACK_RECORDS {
        let port = u16::try_from(1 + i).expect("small");
        let _ = n.inbound(t0, addr(R1), SocketAddr::new(n.public_ip(), port));
    }
    assert_eq!(n.conntrack_count(), MAX_CONNTRACK_RECORDS);
    assert_eq!(n.counters().table_full, 1);
    // Wrong address, port 0, far future: no panic.
    assert_eq!(n.inbound(t0, addr(R1), addr("192.0.2.99:1")), None);
    let far = t0 + Duration::from_secs(1 << 40);
    assert!(n.outbound(far, addr("10.0.0.10:0"), addr(R1)).is_some());
    let n = NatConfig::full_cone().with_mapping_timeout(Duration::MAX);
    let mut n = nat(n);
    assert!(n.outbound(t0, addr(IN), addr(R1)).is_some());
    assert!(n.outbound(far, addr(IN), addr(R2)).is_some());
}
