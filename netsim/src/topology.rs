//! What a lab is made of: the user's description ([`Topology`]) and its resolved form with
//! names and addresses ([`LabPlan`]). Pure data; building it touches no system state.
//!
//! Address plan (all IPv4; documentation and shared ranges only, never routed anywhere real):
//! - internet: one bridge `br0` in namespace `inet`; every public address is on-link there.
//! - `rendezvous`: 203.0.113.10 and 203.0.113.11 (two addresses for NAT behaviour detection).
//! - `witness`: 198.51.100.250, an unrelated public host used for filtering probes.
//! - public hosts: 198.51.100.10, .11, ...; routers on the internet: 192.0.2.1, .2, ...
//! - router number `r` (1-based, declaration order) serves the LAN 10.r.0.0/24, or
//!   100.64.r.0/24 (RFC 6598 carrier space) when other routers sit on its LAN; its LAN
//!   address is `.1`, members get `.10`, `.11`, ... in declaration order.

use crate::classify::NatBehaviour;
use crate::classify::{FilteringBehaviour as F, MappingBehaviour as M};
use crate::error::{NetsimError, Result};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Prefix of every namespace netsim creates; `netsim down` removes leftovers by it.
pub const NETNS_PREFIX: &str = "nsim";
/// Name of the internet namespace and of the reserved hosts every lab has.
pub const INTERNET: &str = "inet";
pub const RENDEZVOUS: &str = "rendezvous";
pub const WITNESS: &str = "witness";
/// The rendezvous host's two addresses.
pub const RENDEZVOUS_ADDRS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(203, 0, 113, 10),
    Ipv4Addr::new(203, 0, 113, 11),
];
/// Suffix of shaper namespaces (reserved in names).
pub const LINK_SUFFIX: &str = "-link";
pub const WITNESS_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 250);
/// Most hosts or routers of one kind the address plan has room for.
pub const MAX_PER_SEGMENT: usize = 200;

/// The NAT a router performs, named by RFC 4787 behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (plain Linux
    /// masquerade, which keeps the source port when it can).
    PortRestrictedCone,
    /// Address-and-port-dependent mapping with random ports, and filtering to match.
    Symmetric,
}

impl NatKind {
    pub const ALL: [NatKind; 4] = [
        NatKind::FullCone,
        NatKind::RestrictedCone,
        NatKind::PortRestrictedCone,
        NatKind::Symmetric,
    ];

    /// The behaviour a host behind this NAT must observe.
    pub fn behaviour(self) -> NatBehaviour {
        let (mapping, filtering) = match self {
            NatKind::FullCone => (M::EndpointIndependent, F::EndpointIndependent),
            NatKind::RestrictedCone => (M::EndpointIndependent, F::AddressDependent),
            NatKind::PortRestrictedCone => (M::EndpointIndependent, F::AddressAndPortDependent),
            NatKind::Symmetric => (M::AddressAndPortDependent, F::AddressAndPortDependent),
        };
        NatBehaviour {
            translated: true,
            mapping,
            filtering,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NatKind::FullCone => "full-cone",
            NatKind::RestrictedCone => "restricted-cone",
            NatKind::PortRestrictedCone => "port-restricted-cone",
            NatKind::Symmetric => "symmetric",
        }
    }
}

/// Impairments of the link between a host (or router) and its upstream segment, applied in
/// both directions. Zero means "none".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkImpairment {
    /// Percentage (0..=100) of IPv4 packets dropped at random, in each direction (nftables).
    pub loss_percent: u8,
    /// Added one-way delay in milliseconds, each direction (userspace shaper).
    pub delay_ms: u32,
    /// Bandwidth cap in kbit/s, each direction; 0 = none (userspace shaper).
    pub rate_kbit: u32,
}

impl LinkImpairment {
    /// Whether the link needs the userspace shaper (delay or rate).
    pub fn needs_shaper(&self) -> bool {
        self.delay_ms > 0 || self.rate_kbit > 0
    }
}

impl std::str::FromStr for LinkImpairment {
    type Err = NetsimError;
    /// Parses `loss=5,delay=40,rate=10000` (any subset, in any order).
    fn from_str(spec: &str) -> Result<Self> {
        let mut imp = LinkImpairment::default();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let bad = || {
                NetsimError::Topology(format!(
                    "bad link impairment `{part}` (want loss=PERCENT, delay=MS or rate=KBIT)"
                ))
            };
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            match key {
                "loss" => {
                    imp.loss_percent = value.parse().map_err(|_| bad())?;
                    if imp.loss_percent > 100 {
                        return Err(bad());
                    }
                }
                "delay" => imp.delay_ms = value.parse().map_err(|_| bad())?,
                "rate" => imp.rate_kbit = value.parse().map_err(|_| bad())?,
                _ => return Err(bad()),
            }
        }
        Ok(imp)
    }
}

/// How a router is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterConfig {
    pub nat: NatKind,
    /// Name of the router this one sits behind (double NAT); `None` = on the internet.
    pub upstream: Option<String>,
    /// LAN hosts may reach each other through the router's public address.
    pub hairpin: bool,
    /// Drop new inbound traffic addressed to the router itself on its WAN side before
    /// conntrack keeps it (a home router's firewall). Without it, an unsolicited datagram to
    /// a port that a LAN host later uses is remembered by conntrack and moves that host's
    /// mapping to another port (a bare Linux NAT box).
    pub wan_firewall: bool,
    /// Drop all UDP from the LAN (a firewall that allows only TCP out).
    pub block_udp: bool,
    /// UDP mapping lifetime without traffic; `None` keeps the kernel defaults (30 s before a
    /// reply is seen, 120 s after).
    pub udp_timeout: Option<Duration>,
}

impl RouterConfig {
    /// A home router of the given kind: on the internet, firewall on, no hairpinning.
    pub fn new(nat: NatKind) -> Self {
        RouterConfig {
            nat,
            upstream: None,
            hairpin: false,
            wan_firewall: true,
            block_udp: false,
            udp_timeout: None,
        }
    }
    pub fn behind(mut self, router: impl Into<String>) -> Self {
        self.upstream = Some(router.into());
        self
    }
    pub fn hairpin(mut self, on: bool) -> Self {
        self.hairpin = on;
        self
    }
    pub fn wan_firewall(mut self, on: bool) -> Self {
        self.wan_firewall = on;
        self
    }
    pub fn block_udp(mut self, on: bool) -> Self {
        self.block_udp = on;
        self
    }
    pub fn udp_timeout(mut self, timeout: Duration) -> Self {
        self.udp_timeout = Some(timeout);
        self
    }
}

/// Where a host is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attachment {
    Internet,
    Router(String),
}

/// The user's description of a lab, before names and addresses are resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// (name, config, uplink impairment), in declaration order.
    pub routers: Vec<(String, RouterConfig, LinkImpairment)>,
    /// (name, attachment, uplink impairment), in declaration order.
    pub hosts: Vec<(String, Attachment, LinkImpairment)>,
    /// Hosts or routers whose uplink gets the userspace shaper even without a delay or rate
    /// at build time, so that one can be set while the lab runs.
    pub shaped: Vec<String>,
}

/// What a namespace of the lab is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Internet,
    Rendezvous,
    Witness,
    Host,
    Router,
    /// The shaper namespace in the middle of a delayed or rate-limited link.
    Link,
}

/// The link from a namespace up to the segment it is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// Name (in the plan) of the namespace holding the segment's bridge.
    pub upstream: String,
    /// The bridge in the upstream namespace (`br0` on the internet, `lan0` in a router).
    pub bridge: String,
    /// The veth end in the upstream namespace, a port of `bridge`.
    pub port: String,
    /// The veth end in this namespace.
    pub interface: String,
    /// Address prefix length on `interface`.
    pub prefix_len: u8,
    /// Default gateway, or `None` for an on-link default route (the internet is one segment).
    pub gateway: Option<Ipv4Addr>,
    pub impairment: LinkImpairment,
    /// Plan name of the shaper namespace the link runs through, if shaped.
    pub shaper: Option<String>,
}

/// A router's own addressing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterPlan {
    pub config: RouterConfig,
    /// The router's address on its upstream segment: the NAT's public side.
    pub wan_addr: Ipv4Addr,
    /// The router's address on its LAN (the gateway of its members).
    pub lan_addr: Ipv4Addr,
    pub lan_prefix_len: u8,
}

/// One namespace of the lab, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Name as the user knows it (`alice`, `home`, `rendezvous`, ...).
    pub name: String,
    /// The kernel's name of the network namespace (`nsim<run>-<name>`).
    pub netns: String,
    pub role: Role,
    /// Addresses on the uplink interface; the first is the primary one.
    pub addrs: Vec<Ipv4Addr>,
    pub uplink: Option<Uplink>,
    pub router: Option<RouterPlan>,
}

/// A resolved lab: every namespace with its names and addresses.
///
/// Invariants: node names are unique; `nodes[0]` is the internet; every uplink's upstream
/// names a node that comes earlier in `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPlan {
    pub run_id: String,
    pub nodes: Vec<NodePlan>,
}

impl LabPlan {
    pub fn node(&self, name: &str) -> Result<&NodePlan> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| NetsimError::UnknownHost(name.to_string()))
    }

    /// The namespace-name prefix shared by every namespace of this lab.
    pub fn netns_prefix(&self) -> String {
        netns_prefix(&self.run_id)
    }

    /// The router a node sits directly behind, if any.
    pub fn router_of(&self, node: &NodePlan) -> Option<&NodePlan> {
        let up = node.uplink.as_ref()?;
        self.nodes
            .iter()
            .find(|n| n.name == up.upstream && n.router.is_some())
    }

    /// The behaviour a host must observe towards the internet: the composition of every NAT
    /// between it and the internet, or `None` if UDP is blocked on the way.
    pub fn expected_behaviour(&self, node: &NodePlan) -> Option<NatBehaviour> {
        let mut behaviour = NatBehaviour::PUBLIC;
        let mut current = self.router_of(node);
        while let Some(router) = current {
            let plan = router.router.as_ref().expect("router_of returns routers");
            if plan.config.block_udp {
                return None;
            }
            behaviour = behaviour.behind(plan.config.nat.behaviour());
            current = self.router_of(router);
        }
        Some(behaviour)
    }
}

/// The namespace-name prefix of one run.
pub fn netns_prefix(run_id: &str) -> String {
    format!("{NETNS_PREFIX}{run_id}-")
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(NetsimError::Topology(format!(
            "name `{name}` must be 1-24 characters of a-z, 0-9 and -"
        )));
    }
    if [INTERNET, RENDEZVOUS, WITNESS].contains(&name) || name.ends_with(LINK_SUFFIX) {
        return Err(NetsimError::Topology(format!("name `{name}` is reserved")));
    }
    Ok(())
}

/// Counts members on each segment to hand out ports and addresses.
struct SegmentCounter {
    name: String,
    members: usize,
}

impl Topology {
    /// Resolves names and addresses. Fails on duplicate or reserved names, unknown or later-
    /// declared upstream routers, and segments too full for the address plan.
    pub fn plan(&self, run_id: &str) -> Result<LabPlan> {
        let prefix = netns_prefix(run_id);
        let mut seen = std::collections::HashSet::new();
        for name in self
            .routers
            .iter()
            .map(|r| &r.0)
            .chain(self.hosts.iter().map(|h| &h.0))
        {
            validate_name(name)?;
            if !seen.insert(name.clone()) {
                return Err(NetsimError::Topology(format!("duplicate name `{name}`")));
            }
        }
        if self.routers.len() > MAX_PER_SEGMENT || self.hosts.len() > MAX_PER_SEGMENT {
            return Err(NetsimError::Topology("too many routers or hosts".into()));
        }
        let has_child_router = |name: &str| {
            self.routers
                .iter()
                .any(|(_, c, _)| c.upstream.as_deref() == Some(name))
        };

        let mut segments = vec![SegmentCounter {
            name: INTERNET.into(),
            members: 0,
        }];
        if let Some(unknown) = self.shaped.iter().find(|n| !seen.contains(n.as_str())) {
            return Err(NetsimError::Topology(format!(
                "cannot shape unknown `{unknown}`"
            )));
        }
        let mut nodes = vec![NodePlan {
            name: INTERNET.into(),
            netns: format!("{prefix}{INTERNET}"),
            role: Role::Internet,
            addrs: vec![],
            uplink: None,
            router: None,
        }];
        let internet_uplink = |segments: &mut Vec<SegmentCounter>, impairment| {
            let seg = &mut segments[0];
            let port = format!("p{}", seg.members);
            seg.members += 1;
            Uplink {
                upstream: INTERNET.into(),
                bridge: "br0".into(),
                port,
                interface: "eth0".into(),
                prefix_len: 24,
                gateway: None,
                impairment,
                shaper: None,
            }
        };
        for (name, role, addrs) in [
            (RENDEZVOUS, Role::Rendezvous, RENDEZVOUS_ADDRS.to_vec()),
            (WITNESS, Role::Witness, vec![WITNESS_ADDR]),
        ] {
            let uplink = internet_uplink(&mut segments, LinkImpairment::default());
            nodes.push(NodePlan {
                name: name.into(),
                netns: format!("{prefix}{name}"),
                role,
                addrs,
                uplink: Some(uplink),
                router: None,
            });
        }

        // Routers, in declaration order; an upstream router must already be placed.
        let mut routers_on_internet = 0u8;
        let mut lan_of: Vec<(String, [u8; 3])> = Vec::new();
        for (index, (name, config, impairment)) in self.routers.iter().enumerate() {
            let number = u8::try_from(index + 1).expect("bounded by MAX_PER_SEGMENT");
            let (uplink, wan_addr) = match &config.upstream {
                None => {
                    routers_on_internet += 1;
                    let mut up = internet_uplink(&mut segments, *impairment);
                    up.interface = "wan0".into();
                    (up, Ipv4Addr::new(192, 0, 2, routers_on_internet))
                }
                Some(parent) => {
                    let (_, net) = lan_of.iter().find(|(n, _)| n == parent).ok_or_else(|| {
                        NetsimError::Topology(format!(
                            "router `{name}` is behind `{parent}`, which is not a router declared before it"
                        ))
                    })?;
                    let net = *net;
                    let up = lan_uplink(&mut segments, parent, net, *impairment, "wan0")?;
                    let addr = Ipv4Addr::new(net[0], net[1], net[2], member_host_octet(&up));
                    (up, addr)
                }
            };
            let net = if has_child_router(name) {
                [100, 64, number]
            } else {
                [10, number, 0]
            };
            lan_of.push((name.clone(), net));
            segments.push(SegmentCounter {
                name: name.clone(),
                members: 0,
            });
            nodes.push(NodePlan {
                name: name.clone(),
                netns: format!("{prefix}{name}"),
                role: Role::Router,
                addrs: vec![wan_addr],
                uplink: Some(uplink),
                router: Some(RouterPlan {
                    config: config.clone(),
                    wan_addr,
                    lan_addr: Ipv4Addr::new(net[0], net[1], net[2], 1),
                    lan_prefix_len: 24,
                }),
            });
        }

        let mut public_hosts = 0u8;
        for (name, attachment, impairment) in &self.hosts {
            let (uplink, addr) = match attachment {
                Attachment::Internet => {
                    let up = internet_uplink(&mut segments, *impairment);
                    let addr = Ipv4Addr::new(198, 51, 100, 10 + public_hosts);
                    public_hosts += 1;
                    (up, addr)
                }
                Attachment::Router(router) => {
                    let (_, net) = lan_of.iter().find(|(n, _)| n == router).ok_or_else(|| {
                        NetsimError::Topology(format!(
                            "host `{name}` is behind `{router}`, which is not a router"
                        ))
                    })?;
                    let net = *net;
                    let up = lan_uplink(&mut segments, router, net, *impairment, "eth0")?;
                    let addr = Ipv4Addr::new(net[0], net[1], net[2], member_host_octet(&up));
                    (up, addr)
                }
            };
            nodes.push(NodePlan {
                name: name.clone(),
                netns: format!("{prefix}{name}"),
                role: Role::Host,
                addrs: vec![addr],
                uplink: Some(uplink),
                router: None,
            });
        }
        // Shaper namespaces for delayed or rate-limited links.
        let mut shapers = Vec::new();
        for node in &mut nodes {
            let Some(up) = node.uplink.as_mut() else {
                continue;
            };
            if up.impairment.needs_shaper() || self.shaped.contains(&node.name) {
                let name = format!("{}{LINK_SUFFIX}", node.name);
                up.shaper = Some(name.clone());
                shapers.push(NodePlan {
                    netns: format!("{prefix}{name}"),
                    name,
                    role: Role::Link,
                    addrs: vec![],
                    uplink: None,
                    router: None,
                });
            }
        }
        nodes.extend(shapers);
        Ok(LabPlan {
            run_id: run_id.to_string(),
            nodes,
        })
    }
}

/// The host octet of a LAN member, derived from its port number (`p0` -> .10).
fn member_host_octet(uplink: &Uplink) -> u8 {
    let index: u8 = uplink.port[1..].parse().expect("ports are p<number>");
    10 + index
}

fn lan_uplink(
    segments: &mut [SegmentCounter],
    router: &str,
    net: [u8; 3],
    impairment: LinkImpairment,
    interface: &str,
) -> Result<Uplink> {
    let seg = segments
        .iter_mut()
        .find(|s| s.name == router)
        .expect("every router has a segment");
    if seg.members >= MAX_PER_SEGMENT {
        return Err(NetsimError::Topology(format!("LAN of `{router}` is full")));
    }
    let port = format!("p{}", seg.members);
    seg.members += 1;
    Ok(Uplink {
        upstream: router.to_string(),
        bridge: "lan0".into(),
        port,
        interface: interface.into(),
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(net[0], net[1], net[2], 1)),
        impairment,
        shaper: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double_nat() -> Topology {
        Topology {
            routers: vec![
                (
                    "carrier".into(),
                    RouterConfig::new(NatKind::PortRestrictedCone),
                    LinkImpairment::default(),
                ),
                (
                    "home".into(),
                    RouterConfig::new(NatKind::FullCone).behind("carrier"),
                    LinkImpairment::default(),
                ),
            ],
            hosts: vec![
                (
                    "alice".into(),
                    Attachment::Router("home".into()),
                    LinkImpairment::default(),
                ),
                (
                    "bob".into(),
                    Attachment::Internet,
                    LinkImpairment::default(),
                ),
            ],
            shaped: vec![],
        }
    }

    #[test]
    fn double_nat_gets_carrier_space_and_nested_addresses() {
        let plan = double_nat().plan("ab12cd").unwrap();
        let carrier = plan.node("carrier").unwrap();
        let home = plan.node("home").unwrap();
        let alice = plan.node("alice").unwrap();
        assert_eq!(carrier.netns, "nsimab12cd-carrier");
        assert_eq!(carrier.addrs, vec![Ipv4Addr::new(192, 0, 2, 1)]);
        let carrier_lan = carrier.router.as_ref().unwrap().lan_addr;
        assert_eq!(carrier_lan, Ipv4Addr::new(100, 64, 1, 1));
        assert_eq!(home.addrs, vec![Ipv4Addr::new(100, 64, 1, 10)]);
        assert_eq!(home.uplink.as_ref().unwrap().gateway, Some(carrier_lan));
        assert_eq!(alice.addrs, vec![Ipv4Addr::new(10, 2, 0, 10)]);
        assert_eq!(
            plan.node("bob").unwrap().addrs,
            vec![Ipv4Addr::new(198, 51, 100, 10)]
        );
        let expected = plan.expected_behaviour(alice).unwrap();
        assert_eq!(expected.mapping, M::EndpointIndependent);
        assert_eq!(expected.filtering, F::AddressAndPortDependent);
        assert_eq!(
            plan.expected_behaviour(plan.node("bob").unwrap()),
            Some(NatBehaviour::PUBLIC)
        );
    }

    #[test]
    fn every_uplink_points_to_an_earlier_node_and_ports_are_unique() {
        let plan = double_nat().plan("x").unwrap();
        for (i, node) in plan.nodes.iter().enumerate() {
            if let Some(up) = &node.uplink {
                let pos = plan
                    .nodes
                    .iter()
                    .position(|n| n.name == up.upstream)
                    .unwrap();
                assert!(pos < i, "{} before its upstream", node.name);
                let same_port = plan
                    .nodes
                    .iter()
                    .filter_map(|n| n.uplink.as_ref())
                    .filter(|u| u.upstream == up.upstream && u.port == up.port)
                    .count();
                assert_eq!(same_port, 1);
            }
        }
    }

    #[test]
    fn rejects_bad_topologies() {
        let mut t = double_nat();
        t.hosts.push((
            "alice".into(),
            Attachment::Internet,
            LinkImpairment::default(),
        ));
        assert!(matches!(t.plan("x"), Err(NetsimError::Topology(_))));
        let mut t = double_nat();
        t.routers.swap(0, 1);
        assert!(matches!(t.plan("x"), Err(NetsimError::Topology(_))));
        let mut t = double_nat();
        t.hosts[0].0 = "Alice".into();
        assert!(matches!(t.plan("x"), Err(NetsimError::Topology(_))));
        let mut t = double_nat();
        t.hosts[0].0 = RENDEZVOUS.into();
        assert!(matches!(t.plan("x"), Err(NetsimError::Topology(_))));
        let mut t = double_nat();
        t.hosts[0].1 = Attachment::Router("nowhere".into());
        assert!(matches!(t.plan("x"), Err(NetsimError::Topology(_))));
    }

    #[test]
    fn delayed_links_get_a_shaper_namespace() {
        let mut t = double_nat();
        t.hosts[0].2 = "delay=20,rate=1000".parse().unwrap();
        t.shaped.push("bob".into());
        let plan = t.plan("x").unwrap();
        let alice = plan.node("alice").unwrap();
        assert_eq!(
            alice.uplink.as_ref().unwrap().shaper.as_deref(),
            Some("alice-link")
        );
        assert_eq!(plan.node("alice-link").unwrap().role, Role::Link);
        assert!(plan.node("bob-link").is_ok());
        assert!(plan
            .node("carrier")
            .unwrap()
            .uplink
            .as_ref()
            .unwrap()
            .shaper
            .is_none());
        t.shaped.push("nobody".into());
        assert!(t.plan("x").is_err());
        let mut t = double_nat();
        t.hosts[0].0 = "x-link".into();
        assert!(t.plan("x").is_err(), "the -link suffix is reserved");
    }

    #[test]
    fn impairment_specs_parse() {
        let imp: LinkImpairment = "loss=5,delay=40,rate=10000".parse().unwrap();
        assert_eq!(
            imp,
            LinkImpairment {
                loss_percent: 5,
                delay_ms: 40,
                rate_kbit: 10000
            }
        );
        assert_eq!(
            "".parse::<LinkImpairment>().unwrap(),
            LinkImpairment::default()
        );
        for bad in ["loss=101", "loss", "speed=3", "delay=-1"] {
            assert!(bad.parse::<LinkImpairment>().is_err(), "{bad}");
        }
    }

    #[test]
    fn udp_blocking_router_has_no_expected_nat_behaviour() {
        let t = Topology {
            routers: vec![(
                "fw".into(),
                RouterConfig::new(NatKind::PortRestrictedCone).block_udp(true),
                LinkImpairment::default(),
            )],
            hosts: vec![(
                "h".into(),
                Attachment::Router("fw".into()),
                LinkImpairment::default(),
            )],
            shaped: vec![],
        };
        let plan = t.plan("x").unwrap();
        assert_eq!(plan.expected_behaviour(plan.node("h").unwrap()), None);
    }
}
