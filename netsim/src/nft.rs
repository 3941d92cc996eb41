//! nftables rulesets for NAT routers and link impairments, generated as text (pure functions).
//!
//! How each NAT kind is made from Linux conntrack:
//! - Linux `masquerade` keeps the internal source port when it is free, so a mapping is the
//!   same for every destination (endpoint-independent mapping), and conntrack lets in only
//!   replies from the exact remote address and port (address-and-port-dependent filtering):
//!   that is a port-restricted cone as it is.
//! - `masquerade fully-random` picks a fresh random port for every new 5-tuple: symmetric.
//! - Full and restricted cones need inbound datagrams that match no conntrack entry to reach
//!   the internal endpoint. The router records each live mapping after source NAT in a
//!   dynamic map `mappings` (external port -> internal address . port) and each contacted
//!   remote in a set `contacted` (external port . remote address); prerouting then DNATs
//!   inbound datagrams through `mappings`, for anyone (full cone) or only for contacted
//!   remote addresses (restricted cone). Both expire with the mapping timeout and are
//!   refreshed by outbound traffic (RFC 4787 REQ-6).
//! - Hairpinning DNATs LAN traffic addressed to the router's public address through the same
//!   map and source-NATs it to the public address.

use crate::topology::{LinkImpairment, NatKind, RouterPlan};
use std::fmt::Write;
use std::time::Duration;

/// Name of the nftables table netsim creates in router namespaces.
pub const ROUTER_TABLE: &str = "netsim_nat";
/// Mapping lifetime used for the map and set when the router keeps the kernel's UDP timeouts
/// (the kernel's `nf_conntrack_udp_timeout_stream` default).
pub const DEFAULT_MAPPING_TIMEOUT: Duration = Duration::from_secs(120);

/// The full ruleset of a NAT router whose WAN interface is `wan0` and LAN bridge is `lan0`.
pub fn router_ruleset(router: &RouterPlan) -> String {
    let cfg = &router.config;
    let timeout = cfg
        .udp_timeout
        .unwrap_or(DEFAULT_MAPPING_TIMEOUT)
        .as_secs()
        .max(1);
    let mut r = String::new();
    let _ = writeln!(r, "table ip {ROUTER_TABLE} {{");
    let _ = writeln!(
        r,
        "  map mappings {{\n    type inet_service : ipv4_addr . inet_service\n    flags dynamic,timeout\n    timeout {timeout}s\n  }}"
    );
    let _ = writeln!(
        r,
        "  set contacted {{\n    type inet_service . ipv4_addr\n    flags dynamic,timeout\n    timeout {timeout}s\n  }}"
    );

    // Inbound DNAT for datagrams that match no conntrack entry.
    r.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n",
    );
    match cfg.nat {
        NatKind::FullCone => {
            r.push_str("    iifname \"wan0\" dnat ip to udp dport map @mappings\n");
        }
        NatKind::RestrictedCone => {
            r.push_str(
                "    iifname \"wan0\" udp dport . ip saddr @contacted dnat ip to udp dport map @mappings\n",
            );
        }
        NatKind::PortRestrictedCone | NatKind::Symmetric => {}
    }
    if cfg.hairpin {
        let _ = writeln!(
            r,
            "    iifname \"lan0\" ip daddr {} dnat ip to udp dport map @mappings",
            router.wan_addr
        );
    }
    r.push_str("  }\n");

    // Source NAT.
    r.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for rule in source_nat_rules(router, None) {
        let _ = writeln!(r, "    {rule}");
    }
    r.push_str("  }\n");

    // Bookkeeping after source NAT: the packet already carries its external port here.
    r.push_str(
        "  chain record {\n    type filter hook postrouting priority srcnat + 10; policy accept;\n",
    );
    r.push_str("    oifname \"wan0\" ct direction original update @mappings { udp sport : ct original ip saddr . ct original proto-src }\n");
    r.push_str("    oifname \"wan0\" ct direction reply update @mappings { udp sport : ct reply ip saddr . ct reply proto-src }\n");
    r.push_str("    oifname \"wan0\" update @contacted { udp sport . ip daddr }\n");
    r.push_str("  }\n");

    // Forwarding policy.
    r.push_str("  chain forward {\n    type filter hook forward priority filter; policy drop;\n");
    if cfg.block_udp {
        r.push_str("    iifname \"lan0\" meta l4proto udp drop\n");
        r.push_str("    iifname \"wan0\" meta l4proto udp drop\n");
    }
    r.push_str("    ct state established,related accept\n");
    r.push_str("    iifname \"lan0\" accept\n");
    r.push_str("    ct status dnat accept\n");
    r.push_str("  }\n");

    // Traffic to the router itself.
    r.push_str("  chain input {\n    type filter hook input priority filter; policy accept;\n");
    if cfg.wan_firewall {
        r.push_str("    iifname \"wan0\" ct state established,related accept\n");
        r.push_str("    iifname \"wan0\" drop\n");
    }
    r.push_str("  }\n");
    r.push_str("}\n");
    r
}

/// The rules of the `postrouting` chain: masquerade on the WAN side (fully random ports for
/// a symmetric NAT) and, with hairpinning, source NAT of hairpinned LAN traffic. With
/// `udp_ports`, UDP is masqueraded to that port range instead (used by [`rebind_script`]).
fn source_nat_rules(router: &RouterPlan, udp_ports: Option<PortRange>) -> Vec<String> {
    let cfg = &router.config;
    let random = if cfg.nat == NatKind::Symmetric {
        " fully-random"
    } else {
        ""
    };
    let mut rules = Vec::new();
    if let Some(ports) = udp_ports {
        rules.push(format!(
            "oifname \"wan0\" meta l4proto udp masquerade to :{}-{}{random}",
            ports.first, ports.last
        ));
    }
    rules.push(format!("oifname \"wan0\" masquerade{random}"));
    if cfg.hairpin {
        // `iifname` is unset in postrouting, so hairpinned traffic is recognised by its LAN
        // source address.
        let prefix = router.lan_prefix_len.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = std::net::Ipv4Addr::from(u32::from(router.lan_addr) & mask);
        rules.push(format!(
            "oifname \"lan0\" ip saddr {network}/{prefix} ct status dnat snat ip to {}",
            router.wan_addr
        ));
    }
    rules
}

/// An inclusive range of public ports a NAT maps UDP to after a rebinding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// The range of the `generation`-th rebinding of a router (1, 2, ...): 20000-24999 and
    /// 25000-29999 in turn. Both lie below Linux's ephemeral ports (32768-60999), so no
    /// host's own port falls in them and masquerade can never keep a host's port; and each
    /// generation's range excludes the previous one's, so every rebinding changes the port.
    pub fn for_rebind(generation: u32) -> PortRange {
        let first = if generation % 2 == 1 { 20000 } else { 25000 };
        PortRange {
            first,
            last: first + 4999,
        }
    }
}

/// An nftables script (one transaction) that makes a router's NAT forget its mappings and
/// map UDP to `udp_ports` from now on: the postrouting chain is rewritten with the new port
/// range, and the full/restricted-cone bookkeeping (`mappings`, `contacted`) is emptied.
/// The caller then deletes the router's UDP conntrack entries (where Linux keeps the
/// mappings themselves); new ones take ports from the new range.
pub fn rebind_script(router: &RouterPlan, udp_ports: PortRange) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "flush chain ip {ROUTER_TABLE} postrouting");
    for rule in source_nat_rules(router, Some(udp_ports)) {
        let _ = writeln!(r, "add rule ip {ROUTER_TABLE} postrouting {rule}");
    }
    let _ = writeln!(r, "flush map ip {ROUTER_TABLE} mappings");
    let _ = writeln!(r, "flush set ip {ROUTER_TABLE} contacted");
    r
}

/// Name of the table [`cut_ruleset`] creates in a router's namespace.
pub const CUT_TABLE: &str = "netsim_cut";

/// A table that drops forwarded UDP between a router's WAN side and `remote`, both ways (its
/// own table, removed by deleting it): cuts a direct path between two NATs while everything
/// else, the rendezvous and the relay included, still flows.
pub fn cut_ruleset(remote: std::net::Ipv4Addr) -> String {
    format!(
        "table ip {CUT_TABLE} {{\n  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    oifname \"wan0\" ip daddr {remote} meta l4proto udp drop\n    iifname \"wan0\" ip saddr {remote} meta l4proto udp drop\n  }}\n}}\n"
    )
}

/// A table (the same one [`cut_ruleset`] uses, removed the same way) that drops all UDP a
/// router forwards, both ways: a network that blocks UDP until the table goes.
pub fn block_udp_ruleset() -> String {
    format!(
        "table ip {CUT_TABLE} {{\n  chain forward {{\n    type filter hook forward priority -10; policy accept;\n    oifname \"wan0\" meta l4proto udp drop\n    iifname \"wan0\" meta l4proto udp drop\n  }}\n}}\n"
    )
}

/// A UDP mapping as `conntrack -L` lists it: the inside endpoint, the public port the NAT
/// gave it, and the remote endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpMapping {
    pub inside: std::net::SocketAddrV4,
    pub public_port: u16,
    pub remote: std::net::SocketAddrV4,
}

/// Parses `conntrack -L -p udp` output: each line holds the original tuple
/// (`src= dst= sport= dport=`) and then the reply tuple; the reply's `dport` is the public
/// port the NAT chose. Lines that do not parse are skipped.
pub fn parse_conntrack_udp(text: &str) -> Vec<UdpMapping> {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some("udp"))
        .filter_map(|line| {
            let field = |key: &str, nth: usize| -> Option<&str> {
                line.split_whitespace()
                    .filter_map(|w| w.strip_prefix(key))
                    .nth(nth)
            };
            let ip = |key, nth| field(key, nth)?.parse::<std::net::Ipv4Addr>().ok();
            let port = |key, nth| field(key, nth)?.parse::<u16>().ok();
            Some(UdpMapping {
                inside: std::net::SocketAddrV4::new(ip("src=", 0)?, port("sport=", 0)?),
                remote: std::net::SocketAddrV4::new(ip("dst=", 0)?, port("dport=", 0)?),
                public_port: port("dport=", 1)?,
            })
        })
        .collect()
}

/// The nftables table that impairs the link behind bridge port `port` (in the upstream
/// namespace), or `None` when the link has no impairment nftables can express.
pub fn impairment_ruleset(port: &str, impairment: &LinkImpairment) -> Option<String> {
    if impairment.loss_percent == 0 {
        return None;
    }
    let loss = impairment.loss_percent.min(100);
    let mut r = String::new();
    let _ = writeln!(r, "table netdev netsim_link_{port} {{");
    for hook in ["ingress", "egress"] {
        let _ = writeln!(
            r,
            "  chain {hook} {{\n    type filter hook {hook} device \"{port}\" priority filter; policy accept;\n    meta protocol ip numgen random mod 100 < {loss} drop\n  }}"
        );
    }
    r.push_str("}\n");
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::RouterConfig;
    use std::net::Ipv4Addr;

    fn plan(config: RouterConfig) -> RouterPlan {
        RouterPlan {
            config,
            wan_addr: Ipv4Addr::new(192, 0, 2, 1),
            lan_addr: Ipv4Addr::new(10, 1, 0, 1),
            lan_prefix_len: 24,
        }
    }

    #[test]
    fn each_kind_gets_its_inbound_rule() {
        let full = router_ruleset(&plan(RouterConfig::new(NatKind::FullCone)));
        assert!(full.contains("iifname \"wan0\" dnat ip to udp dport map @mappings"));
        let restricted = router_ruleset(&plan(RouterConfig::new(NatKind::RestrictedCone)));
        assert!(restricted.contains("@contacted dnat"));
        for kind in [NatKind::PortRestrictedCone, NatKind::Symmetric] {
            let rules = router_ruleset(&plan(RouterConfig::new(kind)));
            assert!(!rules.contains("iifname \"wan0\" dnat"), "{kind:?}");
            assert!(!rules.contains("@contacted dnat"), "{kind:?}");
        }
        let symmetric = router_ruleset(&plan(RouterConfig::new(NatKind::Symmetric)));
        assert!(symmetric.contains("masquerade fully-random"));
    }

    #[test]
    fn options_change_the_ruleset() {
        let base = router_ruleset(&plan(RouterConfig::new(NatKind::PortRestrictedCone)));
        assert!(
            base.contains("iifname \"wan0\" drop"),
            "firewall on by default"
        );
        assert!(!base.contains("snat ip to"));
        let bare = router_ruleset(&plan(
            RouterConfig::new(NatKind::PortRestrictedCone).wan_firewall(false),
        ));
        assert!(!bare.contains("iifname \"wan0\" drop"));
        let hairpin = router_ruleset(&plan(
            RouterConfig::new(NatKind::PortRestrictedCone).hairpin(true),
        ));
        assert!(hairpin.contains("ip saddr 10.1.0.0/24 ct status dnat snat ip to 192.0.2.1"));
        assert!(hairpin.contains("ip daddr 192.0.2.1 dnat"));
        let blocked = router_ruleset(&plan(
            RouterConfig::new(NatKind::PortRestrictedCone).block_udp(true),
        ));
        assert!(blocked.contains("meta l4proto udp drop"));
        let short = router_ruleset(&plan(
            RouterConfig::new(NatKind::FullCone).udp_timeout(Duration::from_secs(5)),
        ));
        assert!(short.contains("timeout 5s"));
    }

    #[test]
    fn rebinding_moves_udp_to_a_new_port_range_and_forgets_the_cone_state() {
        let hairpin = plan(RouterConfig::new(NatKind::FullCone).hairpin(true));
        let script = rebind_script(&hairpin, PortRange::for_rebind(1));
        assert!(script.starts_with("flush chain ip netsim_nat postrouting\n"));
        assert!(script.contains(
            "add rule ip netsim_nat postrouting oifname \"wan0\" meta l4proto udp masquerade to :20000-24999\n"
        ));
        assert!(
            script.contains("ct status dnat snat ip to 192.0.2.1"),
            "hairpin kept"
        );
        assert!(script.contains("flush map ip netsim_nat mappings"));
        assert!(script.contains("flush set ip netsim_nat contacted"));
        let symmetric = rebind_script(
            &plan(RouterConfig::new(NatKind::Symmetric)),
            PortRange::for_rebind(2),
        );
        assert!(symmetric.contains("masquerade to :25000-29999 fully-random"));
        // Consecutive generations never overlap, and none reaches the ephemeral ports.
        for g in 1..6 {
            let (a, b) = (PortRange::for_rebind(g), PortRange::for_rebind(g + 1));
            assert!(a.last < b.first || b.last < a.first);
            assert!(a.last < 32768 && a.first >= 1024);
        }
        // The build-time ruleset is unchanged: plain masquerade, ports kept.
        let base = router_ruleset(&plan(RouterConfig::new(NatKind::PortRestrictedCone)));
        assert!(base.contains("    oifname \"wan0\" masquerade\n"));
        assert!(!base.contains("masquerade to"));
    }

    #[test]
    fn a_cut_drops_udp_to_and_from_one_address_only() {
        let r = cut_ruleset(Ipv4Addr::new(192, 0, 2, 2));
        assert!(r.starts_with("table ip netsim_cut {"));
        assert!(r.contains("oifname \"wan0\" ip daddr 192.0.2.2 meta l4proto udp drop"));
        assert!(r.contains("iifname \"wan0\" ip saddr 192.0.2.2 meta l4proto udp drop"));
        assert_eq!(r.matches("drop").count(), 2);
    }

    #[test]
    fn conntrack_listings_parse() {
        let text = "udp      17 28 src=10.1.0.10 dst=203.0.113.10 sport=40000 dport=3478 src=203.0.113.10 dst=192.0.2.1 sport=3478 dport=20345 [ASSURED] mark=0 use=1\n\
                    udp      17 3 src=10.1.0.10 dst=198.51.100.10 sport=40000 dport=5000 [UNREPLIED] src=198.51.100.10 dst=192.0.2.1 sport=5000 dport=20345 mark=0 use=1\n\
                    tcp      6 10 ESTABLISHED src=1.2.3.4 dst=5.6.7.8 sport=1 dport=2 src=5.6.7.8 dst=1.2.3.4 sport=2 dport=1\n\
                    udp      17 garbage\n";
        let m = parse_conntrack_udp(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].inside, "10.1.0.10:40000".parse().unwrap());
        assert_eq!(m[0].remote, "203.0.113.10:3478".parse().unwrap());
        assert_eq!(m[0].public_port, 20345);
        assert_eq!(m[1].remote.port(), 5000);
        assert!(parse_conntrack_udp("").is_empty());
    }

    #[test]
    fn loss_only_when_asked() {
        assert_eq!(impairment_ruleset("p1", &LinkImpairment::default()), None);
        let r = impairment_ruleset(
            "p1",
            &LinkImpairment {
                loss_percent: 7,
                ..LinkImpairment::default()
            },
        )
        .unwrap();
        assert!(r.contains("device \"p1\""));
        assert!(r.contains("numgen random mod 100 < 7 drop"));
        assert!(r.contains("hook egress"));
        assert!(r.contains("hook ingress"));
    }
}
