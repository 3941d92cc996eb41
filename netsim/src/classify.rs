//! NAT behaviour classification (RFC 4787 terms) from probe observations: a pure function.
//!
//! The self-check ([`crate::selfcheck`]) gathers [`ProbeObservations`] by sending STUN Binding
//! requests from a host behind a router to the rendezvous's endpoints and unsolicited datagrams
//! from other public endpoints; [`classify`] turns them into a [`Classification`]. Keeping the
//! decision here, free of sockets, lets it be unit-tested without root.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;

/// How a NAT chooses the external endpoint for an internal one (RFC 4787 section 4.1).
/// Ordered from the most to the least traversal-friendly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MappingBehaviour {
    /// Same external endpoint whatever the destination.
    EndpointIndependent,
    /// A new external endpoint per destination IP address.
    AddressDependent,
    /// A new external endpoint per destination IP address and port ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound datagrams a NAT lets through to a mapping (RFC 4787 section 5).
/// Ordered from the most to the least permissive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FilteringBehaviour {
    /// Anyone may send to the mapping ("full cone").
    EndpointIndependent,
    /// Only IP addresses the internal endpoint has sent to ("restricted cone").
    AddressDependent,
    /// Only IP address and port pairs it has sent to ("port-restricted cone").
    AddressAndPortDependent,
}

/// The behaviour of everything between a host and the public internet, as seen from that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NatBehaviour {
    /// False when the host's own address is what the internet sees (no NAT on the path).
    pub translated: bool,
    pub mapping: MappingBehaviour,
    pub filtering: FilteringBehaviour,
}

impl NatBehaviour {
    /// A host with a public address and no firewall.
    pub const PUBLIC: NatBehaviour = NatBehaviour {
        translated: false,
        mapping: MappingBehaviour::EndpointIndependent,
        filtering: FilteringBehaviour::EndpointIndependent,
    };

    /// The behaviour of `inner` NAT placed behind `outer` (double NAT), as seen from a host
    /// behind both: each property is the more restrictive of the two.
    pub fn behind(self, outer: NatBehaviour) -> NatBehaviour {
        NatBehaviour {
            translated: self.translated || outer.translated,
            mapping: self.mapping.max(outer.mapping),
            filtering: self.filtering.max(outer.filtering),
        }
    }
}

impl fmt::Display for NatBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.translated {
            return write!(f, "no NAT (public address)");
        }
        let m = match self.mapping {
            MappingBehaviour::EndpointIndependent => "endpoint-independent",
            MappingBehaviour::AddressDependent => "address-dependent",
            MappingBehaviour::AddressAndPortDependent => "address-and-port-dependent",
        };
        let fl = match self.filtering {
            FilteringBehaviour::EndpointIndependent => "endpoint-independent",
            FilteringBehaviour::AddressDependent => "address-dependent",
            FilteringBehaviour::AddressAndPortDependent => "address-and-port-dependent",
        };
        write!(f, "{m} mapping, {fl} filtering")
    }
}

/// What the self-check concluded about a path to the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Classification {
    /// No STUN response came back at all: UDP does not get through.
    UdpBlocked,
    /// UDP works; the NAT (if any) behaves like this.
    Nat(NatBehaviour),
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Classification::UdpBlocked => write!(f, "UDP blocked"),
            Classification::Nat(b) => b.fmt(f),
        }
    }
}

/// Raw results of the probes, each from the same client socket unless noted.
///
/// Invariant expected by [`classify`]: the mapping probes were sent from one socket whose own
/// address is `local`; the filtering observations come from a *fresh* socket that has sent only
/// to the primary endpoint before the unsolicited datagrams were sent to its mapped address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeObservations {
    /// The client socket's own address (host IP and port).
    pub local: SocketAddr,
    /// Mapped address reported by the primary endpoint (rendezvous address 1, port 1).
    pub mapped_primary: Option<SocketAddr>,
    /// Mapped address reported by the same IP, another port (address 1, port 2).
    pub mapped_other_port: Option<SocketAddr>,
    /// Mapped address reported by the other IP, same port (address 2, port 1).
    pub mapped_other_ip: Option<SocketAddr>,
    /// An unsolicited datagram from address 1, port 2 reached the client.
    pub inbound_same_ip_other_port: bool,
    /// An unsolicited datagram from address 2 (the rendezvous's second address) reached it.
    pub inbound_other_ip: bool,
    /// An unsolicited datagram from an unrelated public host reached it.
    pub inbound_other_host: bool,
}

/// Observations that no real NAT produces; the self-check reports them as failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("the primary endpoint answered but {0} did not (UDP is neither open nor blocked)")]
    PartialResponses(&'static str),
    #[error("an unsolicited datagram from the other IP got in but one from the same IP and another port did not")]
    FilteringNotMonotonic,
    #[error("datagrams from the rendezvous's second IP and from an unrelated host were treated differently (other ip: {other_ip}, other host: {other_host})")]
    InconsistentAddressFiltering { other_ip: bool, other_host: bool },
}

/// Classifies a path from its probe observations (RFC 5780 style, without CHANGE-REQUEST: the
/// filtering probes are sent by the lab itself from the other endpoints).
pub fn classify(obs: &ProbeObservations) -> Result<Classification, ClassifyError> {
    let Some(primary) = obs.mapped_primary else {
        return Ok(Classification::UdpBlocked);
    };
    let other_port = obs
        .mapped_other_port
        .ok_or(ClassifyError::PartialResponses("address 1 port 2"))?;
    let other_ip = obs
        .mapped_other_ip
        .ok_or(ClassifyError::PartialResponses("address 2 port 1"))?;

    let mapping = if primary == other_port && primary == other_ip {
        MappingBehaviour::EndpointIndependent
    } else if primary == other_port {
        MappingBehaviour::AddressDependent
    } else {
        MappingBehaviour::AddressAndPortDependent
    };
    let translated = !(primary == obs.local && other_port == obs.local && other_ip == obs.local);

    if obs.inbound_other_ip != obs.inbound_other_host {
        return Err(ClassifyError::InconsistentAddressFiltering {
            other_ip: obs.inbound_other_ip,
            other_host: obs.inbound_other_host,
        });
    }
    let filtering = match (obs.inbound_other_ip, obs.inbound_same_ip_other_port) {
        (true, true) => FilteringBehaviour::EndpointIndependent,
        (false, true) => FilteringBehaviour::AddressDependent,
        (false, false) => FilteringBehaviour::AddressAndPortDependent,
        (true, false) => return Err(ClassifyError::FilteringNotMonotonic),
    };
    Ok(Classification::Nat(NatBehaviour {
        translated,
        mapping,
        filtering,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use FilteringBehaviour as F;
    use MappingBehaviour as M;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn obs(mapped: [Option<&str>; 3], inbound: (bool, bool, bool)) -> ProbeObservations {
        ProbeObservations {
            local: addr("10.1.0.10:40000"),
            mapped_primary: mapped[0].map(addr),
            mapped_other_port: mapped[1].map(addr),
            mapped_other_ip: mapped[2].map(addr),
            inbound_same_ip_other_port: inbound.0,
            inbound_other_ip: inbound.1,
            inbound_other_host: inbound.2,
        }
    }

    const EIM: [Option<&str>; 3] = [
        Some("192.0.2.1:40000"),
        Some("192.0.2.1:40000"),
        Some("192.0.2.1:40000"),
    ];

    fn nat(mapping: M, filtering: F) -> Classification {
        Classification::Nat(NatBehaviour {
            translated: true,
            mapping,
            filtering,
        })
    }

    #[test]
    fn full_restricted_and_port_restricted_cones() {
        let full = classify(&obs(EIM, (true, true, true))).unwrap();
        assert_eq!(full, nat(M::EndpointIndependent, F::EndpointIndependent));
        let restricted = classify(&obs(EIM, (true, false, false))).unwrap();
        assert_eq!(restricted, nat(M::EndpointIndependent, F::AddressDependent));
        let port_restricted = classify(&obs(EIM, (false, false, false))).unwrap();
        assert_eq!(
            port_restricted,
            nat(M::EndpointIndependent, F::AddressAndPortDependent)
        );
    }

    #[test]
    fn symmetric_and_address_dependent_mapping() {
        let symmetric = [
            Some("192.0.2.1:51000"),
            Some("192.0.2.1:62000"),
            Some("192.0.2.1:33000"),
        ];
        assert_eq!(
            classify(&obs(symmetric, (false, false, false))).unwrap(),
            nat(M::AddressAndPortDependent, F::AddressAndPortDependent)
        );
        let per_address = [
            Some("192.0.2.1:51000"),
            Some("192.0.2.1:51000"),
            Some("192.0.2.1:33000"),
        ];
        assert_eq!(
            classify(&obs(per_address, (true, false, false))).unwrap(),
            nat(M::AddressDependent, F::AddressDependent)
        );
    }

    #[test]
    fn public_host_is_not_translated() {
        let public = [
            Some("10.1.0.10:40000"),
            Some("10.1.0.10:40000"),
            Some("10.1.0.10:40000"),
        ];
        assert_eq!(
            classify(&obs(public, (true, true, true))).unwrap(),
            Classification::Nat(NatBehaviour::PUBLIC)
        );
        // Same port kept but another address: translated.
        let c = classify(&obs(EIM, (true, true, true))).unwrap();
        assert!(matches!(c, Classification::Nat(b) if b.translated));
    }

    #[test]
    fn no_answer_means_udp_blocked_but_partial_answers_are_errors() {
        assert_eq!(
            classify(&obs([None, None, None], (false, false, false))).unwrap(),
            Classification::UdpBlocked
        );
        assert_eq!(
            classify(&obs([EIM[0], None, EIM[2]], (false, false, false))),
            Err(ClassifyError::PartialResponses("address 1 port 2"))
        );
        assert_eq!(
            classify(&obs([EIM[0], EIM[1], None], (false, false, false))),
            Err(ClassifyError::PartialResponses("address 2 port 1"))
        );
    }

    #[test]
    fn impossible_filtering_is_rejected() {
        assert_eq!(
            classify(&obs(EIM, (false, true, true))),
            Err(ClassifyError::FilteringNotMonotonic)
        );
        assert!(matches!(
            classify(&obs(EIM, (true, true, false))),
            Err(ClassifyError::InconsistentAddressFiltering { .. })
        ));
    }

    #[test]
    fn double_nat_takes_the_stricter_of_each_property() {
        let full = NatBehaviour {
            translated: true,
            mapping: M::EndpointIndependent,
            filtering: F::EndpointIndependent,
        };
        let carrier = NatBehaviour {
            translated: true,
            mapping: M::EndpointIndependent,
            filtering: F::AddressAndPortDependent,
        };
        let both = full.behind(carrier);
        assert_eq!(both.mapping, M::EndpointIndependent);
        assert_eq!(both.filtering, F::AddressAndPortDependent);
        assert_eq!(
            NatBehaviour::PUBLIC.behind(NatBehaviour::PUBLIC),
            NatBehaviour::PUBLIC
        );
    }
}
