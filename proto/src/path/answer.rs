//! What the answering side of a punch may send, and where (docs/PROTOCOL.md 4, "punch").
//!
//! A punch request arrives from the rendezvous on behalf of a peer that registered its own
//! candidate addresses, unchecked. Checking them all for the full check window would let anyone
//! with an identity make this node send tens of kilobytes to addresses of their choosing (a
//! reflector). The answering side needs only to open its own NAT towards the requester, so:
//! - **where:** only the requester's observed IP, private addresses (RFC 1918, RFC 6598 carrier
//!   space, link-local: a shared LAN), never loopback (unless the requester itself was observed
//!   on loopback), multicast, broadcast, unspecified, port 0, or any other public address;
//! - **how much:** at most [`MAX_ANSWER_CANDIDATES`] addresses, each checked for
//!   [`AgentConfig::answer_window`](super::AgentConfig::answer_window) only (a first check and
//!   its early retries); the requester's own checks, authenticated, trigger checks back on
//!   whatever pair they arrive from, so nothing is lost for a genuine peer;
//! - **how often:** the driver limits punch answers per requester key and per requester IP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Most candidate addresses the answering side checks per punch request.
pub const MAX_ANSWER_CANDIDATES: usize = 8;

/// Whether `ip` is an address a shared LAN may use: RFC 1918, RFC 6598 (100.64/10) or
/// link-local (169.254/16).
pub fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b))
}

/// The requester's candidates the answering side may check: see the module documentation.
/// `observed` is where the rendezvous saw the requester (its IP only matters).
pub fn answerable_candidates(addrs: &[SocketAddr], observed: IpAddr) -> Vec<SocketAddr> {
    let mut allowed: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|addr| is_answerable(*addr, observed))
        .collect();
    allowed.dedup();
    allowed.truncate(MAX_ANSWER_CANDIDATES);
    allowed
}

fn is_answerable(addr: SocketAddr, observed: IpAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    let ip = super::normalize(addr).ip();
    if ip == super::normalize(SocketAddr::new(observed, 0)).ip() {
        return !ip.is_unspecified() && !ip.is_multicast();
    }
    match ip {
        IpAddr::V4(v4) => {
            !v4.is_loopback()
                && !v4.is_multicast()
                && !v4.is_broadcast()
                && !v4.is_unspecified()
                && is_private_v4(v4)
        }
        // IPv6 candidates are not used yet; none is answered but the observed one.
        IpAddr::V6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn only_the_observed_ip_and_private_addresses_are_answered() {
        let observed: IpAddr = "203.0.113.5".parse().unwrap();
        let given = addrs(&[
            "203.0.113.5:4000",   // the requester's own public address: yes
            "203.0.113.5:4001",   // another port of it: yes
            "198.51.100.77:53",   // someone else's public address: never
            "127.0.0.1:22",       // our own loopback: never
            "224.0.0.251:5353",   // multicast: never
            "255.255.255.255:9",  // broadcast: never
            "0.0.0.0:80",         // unspecified: never
            "10.1.0.2:4000",      // a LAN: yes
            "192.168.1.20:4000",  // a LAN: yes
            "100.64.3.2:4000",    // carrier-grade NAT space: yes
            "169.254.10.10:4000", // link-local: yes
            "10.1.0.3:0",         // port 0: never
        ]);
        assert_eq!(
            answerable_candidates(&given, observed),
            addrs(&[
                "203.0.113.5:4000",
                "203.0.113.5:4001",
                "10.1.0.2:4000",
                "192.168.1.20:4000",
                "100.64.3.2:4000",
                "169.254.10.10:4000",
            ])
        );
    }

    #[test]
    fn loopback_only_for_a_requester_seen_on_loopback_and_at_most_eight() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            answerable_candidates(&addrs(&["127.0.0.1:4000"]), local),
            addrs(&["127.0.0.1:4000"])
        );
        let many: Vec<SocketAddr> = (0..16)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 4000)))
            .collect();
        assert_eq!(
            answerable_candidates(&many, "203.0.113.5".parse().unwrap()).len(),
            MAX_ANSWER_CANDIDATES
        );
    }
}
