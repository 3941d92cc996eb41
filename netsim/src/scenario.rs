//! Named scenarios: the kinds of network a peer can sit behind, and ready-made labs.

use crate::error::{NetsimError, Result};
use crate::lab::LabBuilder;
use crate::topology::{NatKind, RouterConfig};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What stands between one peer and the internet in a matrix cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// A public address, no NAT, no firewall.
    Public,
    FullCone,
    RestrictedCone,
    PortRestrictedCone,
    /// A port-restricted cone without a WAN firewall (a bare Linux NAT box): unsolicited
    /// inbound datagrams are kept by conntrack and move the host's next mapping to a new port.
    LinuxNat,
    Symmetric,
    /// A carrier NAT (port-restricted cone, 100.64.0.0/10 inside) in front of a full-cone
    /// home router: the home router's openness is hidden by the carrier's filtering.
    DoubleNat,
    /// A port-restricted NAT whose firewall drops all UDP.
    UdpBlocked,
    /// Two bare Linux NAT boxes in a row (a carrier's and a home's, neither with a WAN
    /// firewall): not in [`PeerKind::ALL`]; the matrix has cells of its own for it.
    LinuxDoubleNat,
}

impl PeerKind {
    pub const ALL: [PeerKind; 8] = [
        PeerKind::Public,
        PeerKind::FullCone,
        PeerKind::RestrictedCone,
        PeerKind::PortRestrictedCone,
        PeerKind::LinuxNat,
        PeerKind::Symmetric,
        PeerKind::DoubleNat,
        PeerKind::UdpBlocked,
    ];

    /// Kinds outside [`PeerKind::ALL`], used only by the cells that name them.
    pub const EXTRA: [PeerKind; 1] = [PeerKind::LinuxDoubleNat];

    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Public => "public",
            PeerKind::FullCone => "full-cone",
            PeerKind::RestrictedCone => "restricted-cone",
            PeerKind::PortRestrictedCone => "port-restricted-cone",
            PeerKind::LinuxNat => "linux-nat",
            PeerKind::Symmetric => "symmetric",
            PeerKind::DoubleNat => "double-nat",
            PeerKind::UdpBlocked => "udp-blocked",
            PeerKind::LinuxDoubleNat => "linux-double-nat",
        }
    }

    /// Adds host `peer` (and the routers in front of it, named `<peer>-nat`, `<peer>-cgn`,
    /// `<peer>-home`, `<peer>-fw`) to a lab.
    pub fn attach(self, builder: LabBuilder, peer: &str) -> LabBuilder {
        let nat = |kind| RouterConfig::new(kind);
        match self {
            PeerKind::Public => builder.public_host(peer),
            PeerKind::FullCone
            | PeerKind::RestrictedCone
            | PeerKind::PortRestrictedCone
            | PeerKind::Symmetric => {
                let kind = match self {
                    PeerKind::FullCone => NatKind::FullCone,
                    PeerKind::RestrictedCone => NatKind::RestrictedCone,
                    PeerKind::PortRestrictedCone => NatKind::PortRestrictedCone,
                    _ => NatKind::Symmetric,
                };
                let router = format!("{peer}-nat");
                builder
                    .router(&router, nat(kind))
                    .host_behind(peer, &router)
            }
            PeerKind::LinuxNat => {
                let router = format!("{peer}-nat");
                let config = nat(NatKind::PortRestrictedCone).wan_firewall(false);
                builder.router(&router, config).host_behind(peer, &router)
            }
            PeerKind::DoubleNat => {
                let cgn = format!("{peer}-cgn");
                let home = format!("{peer}-home");
                builder
                    .router(&cgn, nat(NatKind::PortRestrictedCone))
                    .router(&home, nat(NatKind::FullCone).behind(&cgn))
                    .host_behind(peer, &home)
            }
            PeerKind::LinuxDoubleNat => {
                let cgn = format!("{peer}-cgn");
                let home = format!("{peer}-home");
                let bare = || nat(NatKind::PortRestrictedCone).wan_firewall(false);
                builder
                    .router(&cgn, bare())
                    .router(&home, bare().behind(&cgn))
                    .host_behind(peer, &home)
            }
            PeerKind::UdpBlocked => {
                let fw = format!("{peer}-fw");
                builder
                    .router(&fw, nat(NatKind::PortRestrictedCone).block_udp(true))
                    .host_behind(peer, &fw)
            }
        }
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PeerKind {
    type Err = NetsimError;
    fn from_str(s: &str) -> Result<Self> {
        let all = || PeerKind::ALL.into_iter().chain(PeerKind::EXTRA);
        all().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = all().map(|k| k.name()).collect();
            NetsimError::Topology(format!(
                "unknown peer kind `{s}` (one of {})",
                names.join(", ")
            ))
        })
    }
}

/// Every NAT the lab can build, each with a host behind it, plus the router options: the lab
/// `netsim check` verifies.
pub fn all_kinds() -> LabBuilder {
    let mut b = LabBuilder::default()
        .scenario("all-kinds")
        .public_host("public");
    for kind in NatKind::ALL {
        let router = format!("{}-nat", short(kind));
        let host = short(kind).to_string();
        b = b
            .router(&router, RouterConfig::new(kind))
            .host_behind(&host, &router);
    }
    b = PeerKind::DoubleNat.attach(b, "double");
    b = PeerKind::UdpBlocked.attach(b, "blocked");
    // A bare Linux NAT box: no WAN firewall, so unsolicited inbound poisons conntrack.
    b = b
        .router(
            "linux-nat",
            RouterConfig::new(NatKind::PortRestrictedCone).wan_firewall(false),
        )
        .host_behind("linux", "linux-nat");
    // Two hosts behind one NAT, with and without hairpinning.
    b = b
        .router(
            "hairpin-nat",
            RouterConfig::new(NatKind::PortRestrictedCone).hairpin(true),
        )
        .host_behind("hp1", "hairpin-nat")
        .host_behind("hp2", "hairpin-nat")
        .router(
            "nohairpin-nat",
            RouterConfig::new(NatKind::PortRestrictedCone),
        )
        .host_behind("nhp1", "nohairpin-nat")
        .host_behind("nhp2", "nohairpin-nat");
    // A short UDP mapping timeout, to test keepalives.
    b.router(
        "short-nat",
        RouterConfig::new(NatKind::FullCone).udp_timeout(Duration::from_secs(5)),
    )
    .host_behind("short", "short-nat")
}

fn short(kind: NatKind) -> &'static str {
    match kind {
        NatKind::FullCone => "full",
        NatKind::RestrictedCone => "restricted",
        NatKind::PortRestrictedCone => "portres",
        NatKind::Symmetric => "symmetric",
    }
}

/// Two peers `alice` and `bob` behind one NAT, with or without hairpinning.
pub fn same_nat(hairpin: bool) -> LabBuilder {
    LabBuilder::default()
        .scenario(if hairpin {
            "same-nat-hairpin"
        } else {
            "same-nat"
        })
        .router(
            "home",
            RouterConfig::new(NatKind::PortRestrictedCone).hairpin(hairpin),
        )
        .host_behind("alice", "home")
        .host_behind("bob", "home")
}

/// `alice` behind a port-restricted NAT whose UDP mappings expire after `timeout` idle,
/// `bob` public.
pub fn short_mapping_timeout(timeout: Duration) -> LabBuilder {
    LabBuilder::default()
        .scenario("keepalive")
        .router(
            "alice-nat",
            RouterConfig::new(NatKind::PortRestrictedCone).udp_timeout(timeout),
        )
        .host_behind("alice", "alice-nat")
        .public_host("bob")
}

/// `alice` behind `a` and `bob` behind `b`.
pub fn pair(a: PeerKind, b: PeerKind) -> LabBuilder {
    let builder = LabBuilder::default().scenario(&format!("{a}+{b}"));
    let builder = a.attach(builder, "alice");
    b.attach(builder, "bob")
}

/// Names `netsim up` accepts, with a description each.
pub fn scenario_help() -> Vec<(String, &'static str)> {
    vec![
        ("all-kinds".into(), "one host behind every NAT kind and option (what `netsim check` verifies)"),
        ("same-nat".into(), "alice and bob behind one port-restricted NAT without hairpinning"),
        ("same-nat-hairpin".into(), "alice and bob behind one port-restricted NAT with hairpinning"),
        ("keepalive".into(), "alice behind a port-restricted NAT with a 10 s UDP mapping timeout, bob public"),
        ("<kind>+<kind>".into(), "alice behind the first kind, bob behind the second; kinds: public, full-cone, restricted-cone, port-restricted-cone, linux-nat, symmetric, double-nat, udp-blocked"),
    ]
}

/// Resolves a scenario name (see [`scenario_help`]).
pub fn by_name(name: &str) -> Result<LabBuilder> {
    match name {
        "all-kinds" => Ok(all_kinds()),
        "same-nat" => Ok(same_nat(false)),
        "same-nat-hairpin" => Ok(same_nat(true)),
        "keepalive" => Ok(short_mapping_timeout(Duration::from_secs(10))),
        _ => {
            let (a, b) = name.split_once('+').ok_or_else(|| {
                NetsimError::Topology(format!(
                    "unknown scenario `{name}`; try all-kinds, same-nat, same-nat-hairpin, keepalive or <kind>+<kind>"
                ))
            })?;
            Ok(pair(a.parse()?, b.parse()?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_plans() {
        for builder in [
            all_kinds(),
            same_nat(true),
            same_nat(false),
            by_name("keepalive").unwrap(),
        ] {
            builder.topology().plan("t").unwrap();
        }
        for a in PeerKind::ALL {
            for b in PeerKind::ALL {
                let name = format!("{a}+{b}");
                by_name(&name).unwrap().topology().plan("t").unwrap();
            }
        }
        for name in [
            "linux-double-nat+linux-double-nat",
            "linux-nat+linux-double-nat",
        ] {
            by_name(name).unwrap().topology().plan("t").unwrap();
        }
        assert!(by_name("nonsense").is_err());
        assert!(by_name("public+nonsense").is_err());
    }

    #[test]
    fn peer_kinds_round_trip_through_their_names() {
        for k in PeerKind::ALL.into_iter().chain(PeerKind::EXTRA) {
            assert_eq!(k.name().parse::<PeerKind>().unwrap(), k);
        }
    }
}
