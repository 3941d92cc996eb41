//! Integration tests that build real labs. They need root; without it each prints
//! "skipping: netsim needs root" and passes.

use p2pnat_netsim::selfcheck::{check_lab, HostCheck};
use p2pnat_netsim::topology::{netns_prefix, WITNESS, WITNESS_ADDR};
use p2pnat_netsim::{
    build_or_skip, netns, scenario, Classification, FilteringBehaviour, Lab, MappingBehaviour,
    NatKind, RouterConfig,
};
use std::net::SocketAddr;
use std::time::Duration;

fn host<'a>(checks: &'a [HostCheck], name: &str) -> &'a HostCheck {
    checks
        .iter()
        .find(|c| c.host == name)
        .expect("host was checked")
}

#[test]
fn every_nat_kind_behaves_as_configured() {
    let Some(lab) = build_or_skip(scenario::all_kinds()) else {
        return;
    };
    let report = check_lab(&lab).expect("self-check runs");
    for line in report.lines() {
        eprintln!("{line}");
    }
    report
        .ensure_passed()
        .expect("every router behaves as configured");
    // Spot-check a few classifications directly, not only through `passed`.
    let symmetric = host(&report.hosts, "symmetric");
    match symmetric.observed {
        Ok(Classification::Nat(b)) => {
            assert_eq!(b.mapping, MappingBehaviour::AddressAndPortDependent)
        }
        ref other => panic!("symmetric NAT classified as {other:?}"),
    }
    let restricted = host(&report.hosts, "restricted");
    match restricted.observed {
        Ok(Classification::Nat(b)) => assert_eq!(b.filtering, FilteringBehaviour::AddressDependent),
        ref other => panic!("restricted cone classified as {other:?}"),
    }
    assert_eq!(
        host(&report.hosts, "blocked").observed,
        Ok(Classification::UdpBlocked)
    );
    assert_eq!(
        report.hairpins.len(),
        2,
        "one hairpin check per two-host LAN"
    );
}

/// The self-check is only worth something if it fails on a router that lies: a router set up
/// as a full cone whose inbound DNAT rule is removed behaves as a port-restricted cone.
#[test]
fn self_check_catches_a_misbehaving_router() {
    let builder = Lab::builder()
        .router("home", RouterConfig::new(NatKind::FullCone))
        .host_behind("alice", "home");
    let Some(lab) = build_or_skip(builder) else {
        return;
    };
    check_lab(&lab)
        .unwrap()
        .ensure_passed()
        .expect("intact router passes");
    let router_ns = lab.node("home").unwrap().netns.clone();
    netns::run(
        "ip",
        &[
            "netns",
            "exec",
            &router_ns,
            "nft",
            "flush",
            "chain",
            "ip",
            "netsim_nat",
            "prerouting",
        ],
        None,
    )
    .unwrap();
    let report = check_lab(&lab).unwrap();
    assert!(!report.passed(), "a tampered router must fail the check");
    let alice = host(&report.hosts, "alice");
    match alice.observed {
        Ok(Classification::Nat(b)) => {
            assert_eq!(b.mapping, MappingBehaviour::EndpointIndependent);
            assert_eq!(b.filtering, FilteringBehaviour::AddressAndPortDependent);
        }
        ref other => panic!("tampered router classified as {other:?}"),
    }
    assert!(report.ensure_passed().is_err());
}

#[test]
fn the_lab_is_removed_on_drop_and_on_panic() {
    let builder = Lab::builder().public_host("alice");
    let Some(lab) = build_or_skip(builder.clone()) else {
        return;
    };
    let prefix = netns_prefix(lab.run_id());
    assert!(netns::list_netns(&prefix).unwrap().len() >= 4);
    let mut sleeper = lab.spawn("alice", "sleep", &["600"]).unwrap();
    let pid = sleeper.child.id();
    drop(lab);
    assert!(
        netns::list_netns(&prefix).unwrap().is_empty(),
        "namespaces left after drop"
    );
    // The process inside the lab was killed with it.
    let status = sleeper.child.wait().unwrap();
    assert!(!status.success(), "sleep {pid} should have been killed");

    let prefix_seen = std::sync::Mutex::new(String::new());
    let panicked = std::panic::catch_unwind(|| {
        let lab = builder.build().unwrap();
        *prefix_seen.lock().unwrap() = netns_prefix(lab.run_id());
        panic!("test panic while the lab is up");
    });
    assert!(panicked.is_err());
    let prefix = prefix_seen.lock().unwrap().clone();
    assert!(!prefix.is_empty());
    assert!(
        netns::list_netns(&prefix).unwrap().is_empty(),
        "namespaces left after a panic"
    );
}

#[test]
fn commands_run_inside_the_host_namespace() {
    let builder = Lab::builder()
        .router("home", RouterConfig::new(NatKind::PortRestrictedCone))
        .host_behind("alice", "home");
    let Some(lab) = build_or_skip(builder) else {
        return;
    };
    let out = lab
        .command("alice", "ip")
        .unwrap()
        .args(["-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{}/24", lab.addr("alice").unwrap())),
        "{text}"
    );
    // No link of the lab is visible in the machine's own namespace.
    let root = netns::run("ip", &["-o", "link"], None).unwrap();
    assert!(!root.contains("lan0") && !root.contains("br0"), "{root}");
}

/// Random loss from nftables on a host's uplink, in both directions: with 30 % per
/// direction a datagram and its echo both survive about 49 % of the time.
#[test]
fn link_loss_drops_about_the_configured_share() {
    let builder = Lab::builder()
        .public_host("lossy")
        .impair("lossy", "loss=30".parse().unwrap());
    let Some(lab) = build_or_skip(builder) else {
        return;
    };
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let client = lab.udp_socket("lossy", any).unwrap();
    let echo = lab
        .udp_socket(WITNESS, SocketAddr::new(WITNESS_ADDR.into(), 7))
        .unwrap();
    let target = echo.local_addr().unwrap();
    // One datagram at a time, so no socket buffer overflows and only the link drops.
    const N: usize = 500;
    let wait = Some(Duration::from_millis(10));
    echo.set_read_timeout(wait).unwrap();
    client.set_read_timeout(wait).unwrap();
    let mut buf = [0u8; 16];
    let (mut arrived, mut echoed) = (0, 0);
    for i in 0..N {
        client.send_to(&(i as u32).to_be_bytes(), target).unwrap();
        if let Ok((n, from)) = echo.recv_from(&mut buf) {
            arrived += 1;
            echo.send_to(&buf[..n], from).unwrap();
            if client.recv_from(&mut buf).is_ok() {
                echoed += 1;
            }
        }
    }
    let one_way = arrived as f64 / N as f64;
    let round_trip = echoed as f64 / N as f64;
    eprintln!("one way {one_way:.2} arrived, round trip {round_trip:.2}");
    assert!((0.58..=0.82).contains(&one_way), "one way {one_way}");
    assert!(
        (0.36..=0.62).contains(&round_trip),
        "round trip {round_trip}"
    );
}

/// One real cell of the matrix when the binaries are built (`cargo build --workspace
/// --bins`); skipped with a message otherwise.
#[test]
fn one_matrix_cell_with_the_real_binaries() {
    use p2pnat_netsim::matrix::{cell, locate_binary};
    let (Ok(node), Ok(rendezvous)) = (
        locate_binary(None, "P2P_NODE_BIN", "p2p-node"),
        locate_binary(None, "P2P_RENDEZVOUS_BIN", "p2p-rendezvous"),
    ) else {
        p2pnat_netsim::print_skip("skipping: p2p-node / p2p-rendezvous not built");
        return;
    };
    if let Err(p2pnat_netsim::NetsimError::NotRoot) = netns::require_root_and_tools() {
        p2pnat_netsim::print_skip("skipping: netsim needs root");
        return;
    }
    let work = std::env::temp_dir().join(format!("netsim-test-{}", std::process::id()));
    let cfg = cell::CellConfig {
        node_bin: node,
        rendezvous_bin: rendezvous,
        work_dir: work.clone(),
        ready_timeout: Duration::from_secs(15),
        message_timeout: Duration::from_secs(15),
        bulk_bytes: 2 * 1024 * 1024,
        bulk_timeout: Duration::from_secs(30),
        rebind_bytes: 3 * 1024 * 1024,
        rebind_wait: Duration::from_secs(60),
        node_args: vec![],
        link: None,
    };
    let builder = scenario::pair(scenario::PeerKind::Public, scenario::PeerKind::FullCone);
    let spec = cell::CellSpec {
        name: "public+full-cone".into(),
        builder,
        phase: cell::Phase::Plain,
    };
    let result = cell::run_cell(&cfg, spec).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("{result:?}");
    assert_eq!(result.lab_problem, None);
    assert!(result.connected);
    assert_eq!(result.path.as_deref(), Some("direct"));
    assert_eq!(result.messages.lost + result.messages.corrupted, 0);
    assert!(result.throughput_mib_s.is_some());
}

/// Round trip of small datagrams between a host and the witness, in milliseconds.
fn udp_round_trips(lab: &Lab, host: &str, count: usize) -> Vec<f64> {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let client = lab.udp_socket(host, any).unwrap();
    let echo = lab
        .udp_socket(WITNESS, SocketAddr::new(WITNESS_ADDR.into(), 7))
        .unwrap();
    let target = echo.local_addr().unwrap();
    echo.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 64];
    // One extra first round trip resolves ARP (itself delayed) and is not counted.
    (0..=count)
        .map(|_| {
            let start = std::time::Instant::now();
            client.send_to(b"ping", target).unwrap();
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], from).unwrap();
            client.recv_from(&mut buf).unwrap();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .skip(1)
        .collect()
}

/// The userspace shaper adds its delay in each direction, and it can change live.
#[test]
fn link_delay_adds_to_the_round_trip_and_changes_live() {
    let builder = Lab::builder()
        .public_host("far")
        .impair("far", "delay=40".parse().unwrap());
    let Some(lab) = build_or_skip(builder) else {
        return;
    };
    let rtts = udp_round_trips(&lab, "far", 10);
    eprintln!("round trips with 40 ms each way: {rtts:?}");
    assert!(
        rtts.iter().all(|&r| (80.0..=130.0).contains(&r)),
        "{rtts:?}"
    );
    lab.set_impairment("far", "delay=5".parse().unwrap())
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let rtts = udp_round_trips(&lab, "far", 10);
    eprintln!("round trips with 5 ms each way: {rtts:?}");
    assert!(rtts.iter().all(|&r| (10.0..=45.0).contains(&r)), "{rtts:?}");
}

/// A rate cap paces a burst: 500 KiB at 4 Mbit/s take about a second to arrive.
#[test]
fn link_rate_caps_throughput() {
    let builder = Lab::builder()
        .public_host("slow")
        .impair("slow", "rate=4000".parse().unwrap());
    let Some(lab) = build_or_skip(builder) else {
        return;
    };
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let client = lab.udp_socket("slow", any).unwrap();
    let sink = lab
        .udp_socket(WITNESS, SocketAddr::new(WITNESS_ADDR.into(), 9))
        .unwrap();
    let target = sink.local_addr().unwrap();
    // Resolve ARP first so the burst is not held behind it.
    client.send_to(b"warm-up", target).unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    sink.recv_from(&mut buf).unwrap();
    const DATAGRAMS: usize = 500;
    let payload = [7u8; 1024];
    for _ in 0..DATAGRAMS {
        client.send_to(&payload, target).unwrap();
    }
    let mut first = None;
    let mut last = std::time::Instant::now();
    let mut bytes = 0usize;
    sink.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok((n, _)) = sink.recv_from(&mut buf) {
        first.get_or_insert_with(std::time::Instant::now);
        last = std::time::Instant::now();
        bytes += n;
    }
    let secs = (last - first.expect("something arrived")).as_secs_f64();
    // Each 1024-byte payload is 1066 bytes on the wire (UDP, IP, Ethernet headers).
    let kbit = (bytes / 1024 * 1066 * 8) as f64 / secs / 1000.0;
    eprintln!("{bytes} bytes in {secs:.3} s = {kbit:.0} kbit/s on the wire");
    assert_eq!(
        bytes,
        DATAGRAMS * 1024,
        "the queue holds a burst of this size"
    );
    assert!((3400.0..=4400.0).contains(&kbit), "{kbit} kbit/s");
}

/// `Lab::rebind_nat` makes a router forget its UDP mappings (a remote's datagram to the old
/// public port no longer gets in) and map the same inside socket to a new public port in
/// the new range, while the NAT keeps its kind (endpoint-independent mapping across
/// destinations, port-restricted filtering). A second rebinding moves the port again.
#[test]
fn rebinding_a_nat_moves_its_mappings_and_keeps_its_kind() {
    use p2pnat_netsim::selfcheck::{check_host, Responders};
    let builder = Lab::builder()
        .router("home", RouterConfig::new(NatKind::PortRestrictedCone))
        .host_behind("alice", "home");
    let Some(lab) = build_or_skip(builder) else {
        return;
    };
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let alice = lab.udp_socket("alice", any).unwrap();
    let server = lab
        .udp_socket(WITNESS, SocketAddr::new(WITNESS_ADDR.into(), 7))
        .unwrap();
    let target = server.local_addr().unwrap();
    let wait = Some(Duration::from_millis(300));
    alice.set_read_timeout(wait).unwrap();
    server.set_read_timeout(wait).unwrap();
    // The public address the server sees for alice's socket, and whether its reply gets in.
    let exchange = |tag: &[u8]| -> (SocketAddr, bool) {
        let mut buf = [0u8; 64];
        alice.send_to(tag, target).unwrap();
        let (_, seen) = server.recv_from(&mut buf).unwrap();
        server.send_to(b"reply", seen).unwrap();
        (seen, alice.recv_from(&mut buf).is_ok())
    };
    let (before, replied) = exchange(b"one");
    assert!(replied);
    let local_port = alice.local_addr().unwrap().port();
    assert_eq!(before.port(), local_port, "plain masquerade keeps the port");

    let ports = lab.rebind_nat("home").unwrap();
    assert!(
        lab.udp_mappings("home").unwrap().is_empty(),
        "conntrack forgot the mapping"
    );
    server.send_to(b"to the old mapping", before).unwrap();
    assert!(
        alice.recv_from(&mut [0u8; 64]).is_err(),
        "the old public port still leads to alice"
    );
    let (after, replied) = exchange(b"two");
    eprintln!("mapped {before} before, {after} after the rebinding to {ports:?}");
    assert!(replied, "the new mapping admits replies");
    assert_eq!(after.ip(), before.ip());
    assert_ne!(after.port(), before.port());
    assert!(ports.contains(after.port()));
    let mappings = lab.udp_mappings("home").unwrap();
    assert!(!mappings.is_empty());
    assert!(
        mappings.iter().all(|m| ports.contains(m.public_port)),
        "{mappings:?}"
    );

    // Same kind: the mapping is reused for another destination, filtering unchanged.
    let responders = Responders::open(&lab).unwrap();
    let check = check_host(&lab, &responders, lab.node("alice").unwrap()).unwrap();
    assert_eq!(check.observed.as_ref(), Ok(&check.expected), "{check:?}");

    let again = lab.rebind_nat("home").unwrap();
    assert_ne!(again, ports);
    let (third, replied) = exchange(b"three");
    assert!(replied && again.contains(third.port()), "{third}");
}
