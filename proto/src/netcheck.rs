//! Decisions of `p2p-node netcheck`, sans-IO: what the observations of the network probes
//! mean. The tokio driver (`p2pnat::netcheck`) sends the datagrams and records what came back;
//! everything here is a pure function of those records, unit-tested without sockets.
//!
//! - **Filtering** (RFC 4787 section 5): the rendezvous's *inbound probe* (a socket on its
//!   alternate IP, `crate::nat`) sends one unsolicited datagram (a *poke*) to the source of a
//!   poke request. From a fresh socket the node asks for a poke before it has sent anything to
//!   the alternate IP: if the poke arrives, anyone may send to the mapping (endpoint-independent
//!   filtering). If not, the socket sends a Binding request to the alternate STUN address (same
//!   IP as the probe, another port) and asks for a poke again: arriving now, the NAT filters by
//!   IP only (address-dependent); still not, by IP and port (address-and-port-dependent).
//! - **Hairpinning**: the node sends a datagram from a second socket to the first socket's
//!   public (mapped) address; it arrives only if the NAT loops it back (RFC 4787 section 6).
//! - **Port mapping** (NAT-PMP, RFC 6886; PCP, RFC 6887; UPnP IGD): the requests the driver
//!   sends to the default gateway and the parsing of whatever answers.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use crate::nat::NatBehaviour;

/// Which unsolicited inbound datagrams reach a mapping (RFC 4787 section 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilteringBehaviour {
    /// Anyone may send to the mapping ("full cone", or no NAT and no firewall).
    EndpointIndependent,
    /// Only IP addresses the socket has sent to ("restricted cone").
    AddressDependent,
    /// Only IP address and port pairs the socket has sent to ("port-restricted", symmetric).
    AddressAndPortDependent,
    /// Not measured: no inbound probe on the rendezvous, or requests unanswered.
    Unknown,
}

impl FilteringBehaviour {
    pub fn as_str(&self) -> &'static str {
        match self {
            FilteringBehaviour::EndpointIndependent => "endpoint-independent",
            FilteringBehaviour::AddressDependent => "address-dependent",
            FilteringBehaviour::AddressAndPortDependent => "address-and-port-dependent",
            FilteringBehaviour::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FilteringBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the filtering probe saw. `None` in a step means the step could not be run (its request
/// was never answered, so the absence of a poke says nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilteringObservations {
    /// Step 1: a poke requested before the socket sent anything to the probe's IP arrived.
    pub unsolicited: Option<bool>,
    /// Step 2: after a Binding request to the alternate STUN address (the probe's IP, another
    /// port) was answered, a second poke arrived.
    pub after_contacting_ip: Option<bool>,
}

/// Classifies filtering from the probe's observations.
pub fn classify_filtering(observed: FilteringObservations) -> FilteringBehaviour {
    match (observed.unsolicited, observed.after_contacting_ip) {
        (Some(true), _) => FilteringBehaviour::EndpointIndependent,
        (Some(false), Some(true)) => FilteringBehaviour::AddressDependent,
        (Some(false), Some(false)) => FilteringBehaviour::AddressAndPortDependent,
        _ => FilteringBehaviour::Unknown,
    }
}

/// One line summary of a NAT, in the manner of the old STUN (RFC 3489) names people know.
pub fn nat_type_name(mapping: NatBehaviour, filtering: FilteringBehaviour) -> &'static str {
    use FilteringBehaviour as F;
    match (mapping, filtering) {
        (NatBehaviour::Public, F::EndpointIndependent) => "no NAT, open",
        (NatBehaviour::Public, F::Unknown) => "no NAT",
        (NatBehaviour::Public, _) => "no NAT, firewalled",
        (NatBehaviour::EndpointIndependent, F::EndpointIndependent) => "full cone",
        (NatBehaviour::EndpointIndependent, F::AddressDependent) => "restricted cone",
        (NatBehaviour::EndpointIndependent, F::AddressAndPortDependent) => "port-restricted cone",
        (NatBehaviour::EndpointIndependent, F::Unknown) => "cone (filtering unknown)",
        (NatBehaviour::EndpointDependent, _) => "symmetric",
        (NatBehaviour::Unknown, _) => "unknown",
    }
}

/// Whether a datagram is the Binding request with `transaction` that the node sent to its own
/// public address (the hairpin test): only the header is looked at, never trusted further.
pub fn is_hairpin_echo(datagram: &[u8], transaction: &[u8; 12]) -> bool {
    datagram.len() >= 20
        && datagram[0..2] == [0x00, 0x01]
        && datagram[4..8] == [0x21, 0x12, 0xA4, 0x42]
        && datagram[8..20] == transaction[..]
}

/// The port both NAT-PMP and PCP servers listen on, on the gateway.
pub const PORT_MAPPING_PORT: u16 = 5351;
/// The port UPnP's SSDP answers M-SEARCH on.
pub const SSDP_PORT: u16 = 1900;

/// NAT-PMP "external address" request (RFC 6886 section 3.2): version 0, opcode 0.
pub fn nat_pmp_request() -> [u8; 2] {
    [0, 0]
}

/// PCP ANNOUNCE request (RFC 6887 sections 7.1 and 14.1): version 2, opcode 0, lifetime 0, the
/// client's IP as an IPv4-mapped IPv6 address. A server answers with its result code.
pub fn pcp_announce_request(client: Ipv4Addr) -> [u8; 24] {
    let mut request = [0u8; 24];
    request[0] = 2;
    request[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    request
}

/// A unicast SSDP search for an Internet Gateway Device (UPnP Device Architecture 1.1,
/// section 1.3.2), addressed to the gateway.
pub fn ssdp_search(gateway: SocketAddr) -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {gateway}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n\
         ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
    )
    .into_bytes()
}

/// What answered on the gateway's port-mapping port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMappingAnswer {
    /// A NAT-PMP server; `external` is its public IPv4 address when the result was success.
    NatPmp { external: Option<Ipv4Addr> },
    /// A PCP server (any result code: it speaks PCP).
    Pcp { result: u8 },
}

/// Reads a datagram from the gateway's port 5351. Anything else (too short, wrong version or
/// opcode) is `None`: logged and dropped by the caller.
pub fn parse_port_mapping_answer(datagram: &[u8]) -> Option<PortMappingAnswer> {
    match datagram {
        // NAT-PMP external-address response: version 0, opcode 128, result, epoch, address.
        [0, 128, result_hi, result_lo, _, _, _, _, a, b, c, d, ..] => {
            let success = *result_hi == 0 && *result_lo == 0;
            Some(PortMappingAnswer::NatPmp {
                external: success.then(|| Ipv4Addr::new(*a, *b, *c, *d)),
            })
        }
        // A NAT-PMP server's answer to a PCP request: "unsupported version" (result 1). It is a
        // NAT-PMP server all the same.
        [0, op, 0, 1, ..] if *op >= 128 => Some(PortMappingAnswer::NatPmp { external: None }),
        // PCP response: version 2, R bit with opcode ANNOUNCE, reserved, result code.
        [2, 0x80, _, result, ..] if datagram.len() >= 24 => {
            Some(PortMappingAnswer::Pcp { result: *result })
        }
        _ => None,
    }
}

/// Whether an SSDP answer is a positive one (`HTTP/1.1 200`).
pub fn is_ssdp_answer(datagram: &[u8]) -> bool {
    datagram.starts_with(b"HTTP/1.1 200") || datagram.starts_with(b"HTTP/1.0 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(unsolicited: Option<bool>, after: Option<bool>) -> FilteringBehaviour {
        classify_filtering(FilteringObservations {
            unsolicited,
            after_contacting_ip: after,
        })
    }

    #[test]
    fn filtering_from_observations() {
        use FilteringBehaviour as F;
        assert_eq!(observed(Some(true), None), F::EndpointIndependent);
        assert_eq!(observed(Some(true), Some(false)), F::EndpointIndependent);
        assert_eq!(observed(Some(false), Some(true)), F::AddressDependent);
        assert_eq!(
            observed(Some(false), Some(false)),
            F::AddressAndPortDependent
        );
        assert_eq!(observed(Some(false), None), F::Unknown, "step 2 not run");
        assert_eq!(observed(None, None), F::Unknown, "no probe");
        assert_eq!(observed(None, Some(true)), F::Unknown);
    }

    #[test]
    fn nat_type_names() {
        use FilteringBehaviour as F;
        assert_eq!(
            nat_type_name(NatBehaviour::EndpointIndependent, F::AddressDependent),
            "restricted cone"
        );
        assert_eq!(
            nat_type_name(NatBehaviour::EndpointDependent, F::AddressAndPortDependent),
            "symmetric"
        );
        assert_eq!(
            nat_type_name(NatBehaviour::Public, F::EndpointIndependent),
            "no NAT, open"
        );
    }

    #[test]
    fn hairpin_echo_matches_only_its_own_request() {
        let request = crate::stun::binding_request([9; 12]);
        assert!(is_hairpin_echo(&request, &[9; 12]));
        assert!(!is_hairpin_echo(&request, &[8; 12]));
        assert!(!is_hairpin_echo(&request[..19], &[9; 12]));
        let answer =
            crate::stun::answer_binding_request(&request, "192.0.2.1:1".parse().unwrap()).unwrap();
        assert!(!is_hairpin_echo(&answer, &[9; 12]), "a response is no echo");
    }

    #[test]
    fn port_mapping_answers_are_parsed_and_garbage_is_not() {
        let nat_pmp = [0, 128, 0, 0, 0, 0, 0, 7, 192, 0, 2, 1];
        assert_eq!(
            parse_port_mapping_answer(&nat_pmp),
            Some(PortMappingAnswer::NatPmp {
                external: Some(Ipv4Addr::new(192, 0, 2, 1))
            })
        );
        let refused = [0, 128, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0];
        assert_eq!(
            parse_port_mapping_answer(&refused),
            Some(PortMappingAnswer::NatPmp { external: None })
        );
        assert_eq!(
            parse_port_mapping_answer(&[0, 128, 0, 1]),
            Some(PortMappingAnswer::NatPmp { external: None }),
            "NAT-PMP answering a PCP request"
        );
        let mut pcp = [0u8; 24];
        pcp[..4].copy_from_slice(&[2, 0x80, 0, 0]);
        assert_eq!(
            parse_port_mapping_answer(&pcp),
            Some(PortMappingAnswer::Pcp { result: 0 })
        );
        assert_eq!(parse_port_mapping_answer(&pcp[..10]), None);
        assert_eq!(parse_port_mapping_answer(&[]), None);
        assert_eq!(parse_port_mapping_answer(&[0, 0]), None, "a request");
        assert_eq!(parse_port_mapping_answer(&[7; 40]), None);
        let announce = pcp_announce_request(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(announce[0], 2);
        assert_eq!(&announce[20..24], &[10, 0, 0, 2]);
        assert_eq!(parse_port_mapping_answer(&announce), None, "a request");
        assert!(is_ssdp_answer(b"HTTP/1.1 200 OK\r\n"));
        assert!(!is_ssdp_answer(b"M-SEARCH * HTTP/1.1"));
    }
}
