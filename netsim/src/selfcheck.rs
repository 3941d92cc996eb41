//! The lab's self-check: probes the path from each host to the internet with STUN Binding
//! requests and unsolicited datagrams, classifies it ([`crate::classify`]) and compares the
//! result with what the topology says it must be.
//!
//! All probe sockets are opened by this process inside the lab's namespaces
//! ([`Lab::udp_socket`]), so one thread drives client, responders and witness step by step:
//! no subprocesses, no races. The responders are STUN servers this module runs on the
//! rendezvous host's two addresses (two ports on the first) and on the witness host.

use crate::classify::{classify, Classification, ProbeObservations};
use crate::error::{NetsimError, Result};
use crate::lab::Lab;
use crate::stun;
use crate::topology::{NodePlan, Role, RENDEZVOUS, RENDEZVOUS_ADDRS, WITNESS, WITNESS_ADDR};
use serde::Serialize;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Ports of the self-check's STUN responders (chosen away from the usual 3478 so a real
/// rendezvous in the same lab is not disturbed).
pub const PROBE_PORTS: [u16; 2] = [34780, 34781];
/// How long one probe waits for its datagram. Lab links are virtual, so answers take well
/// under a millisecond unless a link is impaired.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const PROBE_ATTEMPTS: usize = 2;
/// How long the client listens for unsolicited datagrams.
const INBOUND_WAIT: Duration = Duration::from_millis(250);
/// The longest configured UDP timeout the self-check will wait out to verify expiry.
pub const MAX_VERIFIED_TIMEOUT: Duration = Duration::from_secs(15);

/// One named property checked beyond the classification.
#[derive(Debug, Clone, Serialize)]
pub struct ExtraCheck {
    pub name: String,
    pub expected: bool,
    pub observed: bool,
    pub detail: String,
}

/// The self-check of one host's path to the internet.
#[derive(Debug, Clone, Serialize)]
pub struct HostCheck {
    pub host: String,
    /// Routers between the host and the internet, nearest first.
    pub routers: Vec<String>,
    pub expected: Classification,
    /// The classification, or why the observations made no sense.
    pub observed: std::result::Result<Classification, String>,
    pub observations: ProbeObservations,
    pub extras: Vec<ExtraCheck>,
}

impl HostCheck {
    pub fn passed(&self) -> bool {
        self.observed.as_ref() == Ok(&self.expected)
            && self.extras.iter().all(|e| e.expected == e.observed)
    }
}

/// The self-check of a whole lab.
#[derive(Debug, Clone, Serialize)]
pub struct SelfCheckReport {
    pub hosts: Vec<HostCheck>,
    /// Hairpin checks, one per router with at least two hosts on its LAN.
    pub hairpins: Vec<(String, ExtraCheck)>,
}

impl SelfCheckReport {
    pub fn passed(&self) -> bool {
        self.hosts.iter().all(HostCheck::passed)
            && self.hairpins.iter().all(|(_, c)| c.expected == c.observed)
    }

    /// Human-readable lines, one per check, failures marked.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for h in &self.hosts {
            let mark = if h.passed() { "ok  " } else { "FAIL" };
            let observed = match &h.observed {
                Ok(c) => c.to_string(),
                Err(e) => format!("unclassifiable: {e}"),
            };
            let via = if h.routers.is_empty() {
                "internet".to_string()
            } else {
                h.routers.join(" -> ")
            };
            out.push(format!(
                "{mark} {} (via {via}): expected {}, observed {observed}",
                h.host, h.expected
            ));
            for e in &h.extras {
                let mark = if e.expected == e.observed {
                    "ok  "
                } else {
                    "FAIL"
                };
                out.push(format!(
                    "{mark}   {}: expected {}, observed {} ({})",
                    e.name, e.expected, e.observed, e.detail
                ));
            }
        }
        for (router, e) in &self.hairpins {
            let mark = if e.expected == e.observed {
                "ok  "
            } else {
                "FAIL"
            };
            out.push(format!(
                "{mark} {router} {}: expected {}, observed {} ({})",
                e.name, e.expected, e.observed, e.detail
            ));
        }
        out
    }

    /// `Ok` if every check passed, otherwise [`NetsimError::SelfCheck`] naming the failures.
    pub fn ensure_passed(&self) -> Result<()> {
        if self.passed() {
            return Ok(());
        }
        let failures: Vec<String> = self
            .lines()
            .into_iter()
            .filter(|l| l.starts_with("FAIL"))
            .collect();
        Err(NetsimError::SelfCheck(failures.join("; ")))
    }
}

/// The self-check's STUN responders, bound in the rendezvous and witness namespaces.
pub struct Responders {
    /// Rendezvous address 1 port 1, address 1 port 2, address 2 port 1.
    primary: (UdpSocket, SocketAddr),
    other_port: (UdpSocket, SocketAddr),
    other_ip: (UdpSocket, SocketAddr),
    witness: (UdpSocket, SocketAddr),
}

impl Responders {
    pub fn open(lab: &Lab) -> Result<Self> {
        let bind = |host: &str, ip, port| -> Result<(UdpSocket, SocketAddr)> {
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
            Ok((lab.udp_socket(host, addr)?, addr))
        };
        Ok(Responders {
            primary: bind(RENDEZVOUS, RENDEZVOUS_ADDRS[0], PROBE_PORTS[0])?,
            other_port: bind(RENDEZVOUS, RENDEZVOUS_ADDRS[0], PROBE_PORTS[1])?,
            other_ip: bind(RENDEZVOUS, RENDEZVOUS_ADDRS[1], PROBE_PORTS[0])?,
            witness: bind(WITNESS, WITNESS_ADDR, PROBE_PORTS[0])?,
        })
    }
}

/// Runs the self-check on every host of the lab (hosts only, not routers or the fixed
/// public hosts) and on every router with at least two hosts on its LAN (hairpinning).
pub fn check_lab(lab: &Lab) -> Result<SelfCheckReport> {
    let responders = Responders::open(lab)?;
    let mut hosts = Vec::new();
    for node in lab.plan().nodes.iter().filter(|n| n.role == Role::Host) {
        hosts.push(check_host(lab, &responders, node)?);
    }
    let mut hairpins = Vec::new();
    for router in lab.plan().nodes.iter().filter(|n| n.router.is_some()) {
        let members: Vec<&NodePlan> = lab
            .plan()
            .nodes
            .iter()
            .filter(|n| n.role == Role::Host)
            .filter(|n| n.uplink.as_ref().is_some_and(|u| u.upstream == router.name))
            .collect();
        if let [a, b, ..] = members.as_slice() {
            hairpins.push((
                router.name.clone(),
                check_hairpin(lab, &responders, router, a, b)?,
            ));
        }
    }
    Ok(SelfCheckReport { hosts, hairpins })
}

/// Probes one host's path: the classification plus, where the topology makes them
/// meaningful, the WAN-firewall (conntrack poisoning) and mapping-timeout properties.
pub fn check_host(lab: &Lab, responders: &Responders, host: &NodePlan) -> Result<HostCheck> {
    let plan = lab.plan();
    let mut routers = Vec::new();
    let mut current = plan.router_of(host);
    while let Some(r) = current {
        routers.push(r.clone());
        current = plan.router_of(r);
    }
    let expected = match plan.expected_behaviour(host) {
        Some(b) => Classification::Nat(b),
        None => Classification::UdpBlocked,
    };
    let any = "0.0.0.0:0".parse().expect("valid address");

    // Mapping: one socket, three destinations.
    let client = lab.udp_socket(&host.name, any)?;
    let local = client
        .local_addr()
        .map_err(|e| NetsimError::io("local address", e))?;
    let local = SocketAddr::new(host.addrs[0].into(), local.port());
    let mapped_primary = transact(&client, &responders.primary)?;
    let mapped_other_port = transact(&client, &responders.other_port)?;
    let mapped_other_ip = transact(&client, &responders.other_ip)?;

    // Filtering: a fresh socket that has talked only to the primary endpoint.
    let fresh = lab.udp_socket(&host.name, any)?;
    let mut inbound = [false; 3];
    if let Some(mapped) = transact(&fresh, &responders.primary)? {
        let senders = [
            &responders.other_port.0,
            &responders.other_ip.0,
            &responders.witness.0,
        ];
        let got = unsolicited(&fresh, &senders, mapped)?;
        inbound = got;
    }
    let observations = ProbeObservations {
        local,
        mapped_primary,
        mapped_other_port,
        mapped_other_ip,
        inbound_same_ip_other_port: inbound[0],
        inbound_other_ip: inbound[1],
        inbound_other_host: inbound[2],
    };
    let observed = classify(&observations);

    let mut extras = Vec::new();
    let all_eim = !routers.is_empty()
        && routers.iter().all(|r| {
            let cfg = &r.router.as_ref().expect("routers").config;
            cfg.nat != crate::topology::NatKind::Symmetric && !cfg.block_udp
        });
    if all_eim {
        let outermost = routers.last().expect("non-empty");
        let firewall = outermost
            .router
            .as_ref()
            .expect("router")
            .config
            .wan_firewall;
        extras.push(check_wan_firewall(
            lab, responders, host, outermost, firewall,
        )?);
    }
    let timeouts: Vec<Duration> = routers
        .iter()
        .filter_map(|r| r.router.as_ref().expect("router").config.udp_timeout)
        .collect();
    if let Some(&timeout) = timeouts.iter().min() {
        if timeout <= MAX_VERIFIED_TIMEOUT && expected != Classification::UdpBlocked {
            extras.push(check_mapping_expiry(lab, responders, host, timeout)?);
        }
    }
    Ok(HostCheck {
        host: host.name.clone(),
        routers: routers.iter().map(|r| r.name.clone()).collect(),
        expected,
        observed: observed.map_err(|e| e.to_string()),
        observations,
        extras,
    })
}

/// An unsolicited datagram from the witness to the router's public address and a port the
/// host is about to use; then the host sends from that port. With a WAN firewall the
/// datagram is dropped before conntrack keeps it and the host keeps its port; without one,
/// conntrack remembers it and the host's mapping moves to another port.
fn check_wan_firewall(
    lab: &Lab,
    responders: &Responders,
    host: &NodePlan,
    outermost: &NodePlan,
    firewall: bool,
) -> Result<ExtraCheck> {
    let socket = lab.udp_socket(&host.name, "0.0.0.0:0".parse().expect("valid"))?;
    let port = socket
        .local_addr()
        .map_err(|e| NetsimError::io("local address", e))?
        .port();
    let public = SocketAddr::new(outermost.addrs[0].into(), port);
    send(&responders.witness.0, b"netsim-poison", public)?;
    std::thread::sleep(Duration::from_millis(20));
    let mapped = transact(&socket, &responders.witness)?;
    let kept = mapped.map(|m| m.port()) == Some(port);
    Ok(ExtraCheck {
        name: format!(
            "{} keeps the port after unsolicited inbound",
            outermost.name
        ),
        expected: firewall,
        observed: kept,
        detail: format!(
            "wan firewall {}; local port {port}, mapped {}",
            if firewall { "on" } else { "off" },
            mapped.map_or("none".into(), |m| m.to_string())
        ),
    })
}

/// The mapping answers while fresh and stops answering after `timeout` without traffic.
fn check_mapping_expiry(
    lab: &Lab,
    responders: &Responders,
    host: &NodePlan,
    timeout: Duration,
) -> Result<ExtraCheck> {
    let socket = lab.udp_socket(&host.name, "0.0.0.0:0".parse().expect("valid"))?;
    let mapped = transact(&socket, &responders.primary)?;
    let Some(mapped) = mapped else {
        return Ok(ExtraCheck {
            name: "mapping expires".into(),
            expected: true,
            observed: false,
            detail: "no mapping to begin with".into(),
        });
    };
    let fresh = unsolicited(&socket, &[&responders.primary.0], mapped)?[0];
    std::thread::sleep(timeout + Duration::from_secs(2));
    let stale = unsolicited(&socket, &[&responders.primary.0], mapped)?[0];
    Ok(ExtraCheck {
        name: format!("mapping expires after {} s idle", timeout.as_secs()),
        expected: true,
        observed: fresh && !stale,
        detail: format!(
            "reply while fresh: {fresh}; after {} s idle: {stale}",
            timeout.as_secs() + 2
        ),
    })
}

/// Hairpinning: host `a` sends to host `b`'s public mapping; it must arrive exactly when the
/// router hairpins, and then appear to come from the router's public address.
fn check_hairpin(
    lab: &Lab,
    responders: &Responders,
    router: &NodePlan,
    a: &NodePlan,
    b: &NodePlan,
) -> Result<ExtraCheck> {
    let any = "0.0.0.0:0".parse().expect("valid");
    let expected = router.router.as_ref().expect("router").config.hairpin;
    let sock_b = lab.udp_socket(&b.name, any)?;
    let sock_a = lab.udp_socket(&a.name, any)?;
    let Some(mapped_b) = transact(&sock_b, &responders.primary)? else {
        return Ok(ExtraCheck {
            name: "hairpin".into(),
            expected,
            observed: false,
            detail: format!("{} got no mapping", b.name),
        });
    };
    for _ in 0..PROBE_ATTEMPTS {
        send(&sock_a, b"netsim-hairpin", mapped_b)?;
    }
    let deadline = Instant::now() + INBOUND_WAIT;
    let mut from = None;
    while let Some((data, src)) = recv_until(&sock_b, deadline)? {
        if data == b"netsim-hairpin" {
            from = Some(src);
            break;
        }
    }
    let wan = router.addrs[0];
    Ok(ExtraCheck {
        name: format!("hairpin {} -> {}", a.name, b.name),
        expected,
        observed: from.is_some_and(|s| s.ip() == wan),
        detail: format!(
            "sent to {mapped_b}; arrived from {}",
            from.map_or("nowhere".into(), |s| s.to_string())
        ),
    })
}

/// One STUN Binding transaction from `client` to a responder this process owns; returns the
/// mapped address the responder reported, or `None` if nothing got through.
fn transact(client: &UdpSocket, responder: &(UdpSocket, SocketAddr)) -> Result<Option<SocketAddr>> {
    let (server, server_addr) = responder;
    for _ in 0..PROBE_ATTEMPTS {
        let txid = next_txid();
        send(client, &stun::binding_request(&txid), *server_addr)?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let mut answered = false;
        while let Some((data, src)) = recv_until(server, deadline)? {
            if stun::parse_binding_request(&data) == Some(txid) {
                let SocketAddr::V4(src4) = src else { continue };
                send(server, &stun::binding_success(&txid, src4), src)?;
                answered = true;
                break;
            }
        }
        if !answered {
            continue;
        }
        let deadline = Instant::now() + PROBE_TIMEOUT;
        while let Some((data, _)) = recv_until(client, deadline)? {
            if let Some(mapped) = stun::parse_binding_success(&data, &txid) {
                return Ok(Some(mapped));
            }
        }
    }
    Ok(None)
}

/// Sends a tagged datagram from each sender to `target`, then reports which tags `client`
/// received within [`INBOUND_WAIT`].
fn unsolicited<const N: usize>(
    client: &UdpSocket,
    senders: &[&UdpSocket; N],
    target: SocketAddr,
) -> Result<[bool; N]> {
    let tags: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let txid = next_txid();
            let serial = u64::from_be_bytes(txid[..8].try_into().expect("8 bytes"));
            format!("netsim-unsolicited-{i}-{serial}").into_bytes()
        })
        .collect();
    for _ in 0..PROBE_ATTEMPTS {
        for (sender, tag) in senders.iter().zip(&tags) {
            send(sender, tag, target)?;
        }
    }
    let mut got = [false; N];
    let deadline = Instant::now() + INBOUND_WAIT;
    while let Some((data, _)) = recv_until(client, deadline)? {
        if let Some(i) = tags.iter().position(|t| *t == data) {
            got[i] = true;
        }
    }
    Ok(got)
}

fn send(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> Result<()> {
    match socket.send_to(data, to) {
        Ok(_) => Ok(()),
        // ICMP errors from earlier probes surface on later sends; they are not failures of
        // the lab (a blocked probe is an observation), so they are ignored.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        Err(e) => Err(NetsimError::io(format!("sending a probe to {to}"), e)),
    }
}

/// Receives one datagram before `deadline`, or `None` when the deadline passes.
fn recv_until(socket: &UdpSocket, deadline: Instant) -> Result<Option<(Vec<u8>, SocketAddr)>> {
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        socket
            .set_read_timeout(Some(deadline - now))
            .map_err(|e| NetsimError::io("setting a read timeout", e))?;
        match socket.recv_from(&mut buf) {
            Ok((n, src)) => return Ok(Some((buf[..n].to_vec(), src))),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue
            }
            Err(e) => return Err(NetsimError::io("receiving a probe", e)),
        }
    }
}

fn next_txid() -> stun::TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut txid = [0u8; 12];
    txid[..8].copy_from_slice(&n.to_be_bytes());
    txid[8..].copy_from_slice(&std::process::id().to_be_bytes());
    txid
}
