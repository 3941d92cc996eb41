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
    let wan = router.wan_addr;
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
            "    iifname \"lan0\" ip daddr {wan} dnat ip to udp dport map @mappings"
        );
    }
    r.push_str("  }\n");

    // Source NAT.
    r.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    let masquerade = match cfg.nat {
        NatKind::Symmetric => "masquerade fully-random",
        _ => "masquerade",
    };
    let _ = writeln!(r, "    oifname \"wan0\" {masquerade}");
    if cfg.hairpin {
        // `iifname` is unset in postrouting, so hairpinned traffic is recognised by its LAN
        // source address.
        let prefix = router.lan_prefix_len.min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = std::net::Ipv4Addr::from(u32::from(router.lan_addr) & mask);
        let _ = writeln!(
            r,
            "    oifname \"lan0\" ip saddr {network}/{prefix} ct status dnat snat ip to {wan}"
        );
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
