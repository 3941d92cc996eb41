//! The birthday method: how a peer behind an endpoint-dependent (symmetric) NAT meets a peer
//! behind an endpoint-independent one whose filter admits only what it sent to.
//!
//! The *hard* side (behind the symmetric NAT) opens [`BIRTHDAY_SOCKETS`] extra local sockets and
//! checks the easy side's public address from each: its NAT gives each socket a random public
//! port, open towards exactly that address. The *easy* side checks [`BIRTHDAY_PROBES`] random
//! ports of the hard side's public IP from its main socket, which opens its own filter towards
//! each. When a probed port is one of the hard side's, the probe gets in (or the hard side's next
//! check does) and an ordinary check completes on that pair. With 256 ports open among 64,512,
//! 1,024 probes find one with probability 1 - (1 - 256/64512)^1024, about 98% (Tailscale's
//! figures); both budgets are bounded and each check is paced like any other.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::LocalSocketId;
use crate::nat::NatBehaviour;

/// Extra sockets the hard side opens (node-wide at most this many at once).
pub const BIRTHDAY_SOCKETS: usize = 256;
/// Random ports the easy side probes.
pub const BIRTHDAY_PROBES: u32 = 1024;
/// Gap between checks from one birthday socket (there are many; the node-wide pacer shares
/// its budget between them).
pub const BIRTHDAY_RETRANSMIT: Duration = Duration::from_secs(1);
/// Lowest port probed (below are privileged ports no NAT hands out).
const FIRST_PORT: u16 = 1024;

/// One peer's birthday attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Birthday {
    /// We are behind the symmetric NAT: check `target` from many sockets.
    Hard {
        target: SocketAddr,
        sockets: Vec<LocalSocketId>,
    },
    /// The peer is: probe random ports of `ip`, from `not_before` on.
    Easy {
        ip: IpAddr,
        remaining: u32,
        not_before: Instant,
    },
}

/// The attempt this pair of NAT behaviours needs, if any. `observed` is the peer's public
/// address as the rendezvous saw it; probes start at `start`.
pub fn plan(
    own: NatBehaviour,
    peer: NatBehaviour,
    observed: SocketAddr,
    start: Instant,
) -> Option<Birthday> {
    match (own, peer) {
        (NatBehaviour::EndpointDependent, NatBehaviour::EndpointIndependent) => {
            Some(Birthday::Hard {
                target: observed,
                sockets: Vec::new(),
            })
        }
        (NatBehaviour::EndpointIndependent, NatBehaviour::EndpointDependent) => {
            Some(Birthday::Easy {
                ip: observed.ip(),
                remaining: BIRTHDAY_PROBES,
                not_before: start,
            })
        }
        _ => None,
    }
}

/// A probe port from random bytes: uniform over [`FIRST_PORT`]..=65535 up to a bias of one
/// part in 2^32 / 64512.
pub fn probe_port(random: [u8; 4]) -> u16 {
    let span = u32::from(u16::MAX - FIRST_PORT) + 1;
    FIRST_PORT + (u32::from_be_bytes(random) % span) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_symmetric_against_endpoint_independent_plans_a_birthday() {
        use NatBehaviour::*;
        let addr: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let now = Instant::now();
        assert!(matches!(
            plan(EndpointDependent, EndpointIndependent, addr, now),
            Some(Birthday::Hard { target, .. }) if target == addr
        ));
        assert!(matches!(
            plan(EndpointIndependent, EndpointDependent, addr, now),
            Some(Birthday::Easy {
                remaining: BIRTHDAY_PROBES,
                ..
            })
        ));
        for (own, peer) in [
            (EndpointDependent, EndpointDependent),
            (Public, EndpointDependent),
            (EndpointDependent, Public),
            (Unknown, EndpointDependent),
            (EndpointIndependent, EndpointIndependent),
        ] {
            assert_eq!(plan(own, peer, addr, now), None, "{own:?} {peer:?}");
        }
    }

    #[test]
    fn probe_ports_cover_the_unprivileged_range() {
        assert_eq!(probe_port([0; 4]), FIRST_PORT);
        assert_eq!(probe_port(64511u32.to_be_bytes()), u16::MAX);
        assert_eq!(probe_port(64512u32.to_be_bytes()), FIRST_PORT);
        assert!(probe_port([0xFF; 4]) >= FIRST_PORT);
    }
}
