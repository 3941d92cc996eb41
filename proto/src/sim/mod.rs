//! A deterministic, virtual-time network simulator with NAT models, for testing the sans-IO
//! machines (path agent, hole punching, path switching) without sockets, clocks or sleeps.
//!
//! - [`rng`]: [`SimRng`], the seeded generator behind every random choice;
//! - [`nat`]: [`Nat`], one NAT with the RFC 4787 behaviours of the netsim lab's routers (full,
//!   restricted, port-restricted cone, symmetric; port preservation, mapping timeout, hairpin,
//!   and the conntrack poisoning of a bare Linux NAT without a WAN firewall);
//! - [`net`]: [`Network`], hosts and NATs (double NAT included) joined by uplinks with delay and
//!   loss; datagrams are events in virtual time, translated when they reach each NAT.
//!
//! Everything is std only and deterministic: the same seed and the same calls give the same
//! deliveries. Time is whatever `Instant` the caller passes; nothing here reads the clock.
//! Every table and queue is bounded (limits are documented in each module) and nothing panics
//! on any datagram.
//!
//! A harness drives it like this:
//!
//! ```
//! use p2pnat_proto::sim::{NatConfig, Network};
//! use std::time::{Duration, Instant};
//!
//! let mut net = Network::new(1);
//! let nat = net.add_nat(NatConfig::port_restricted_cone(), "192.0.2.1".parse().unwrap(), None);
//! let alice = net.add_host("10.0.0.10".parse().unwrap(), Some(nat));
//! let server = net.add_host("203.0.113.10".parse().unwrap(), None);
//! net.set_host_link(alice, Duration::from_millis(10), 0.0);
//! net.set_nat_link(nat, Duration::from_millis(20), 0.0);
//!
//! let t0 = Instant::now();
//! let (src, dst) = ("10.0.0.10:5000".parse().unwrap(), "203.0.113.10:3478".parse().unwrap());
//! net.send(t0, alice, src, dst, b"hello".to_vec());
//! let mut received = Vec::new();
//! while let Some(at) = net.next_delivery_time() {
//!     while let Some(d) = net.poll_delivery(at) {
//!         received.push((at - t0, d));
//!     }
//! }
//! let (took, d) = &received[0];
//! assert_eq!(*took, Duration::from_millis(30)); // alice's uplink + the NAT's uplink
//! assert_eq!(d.host, server);
//! assert_eq!(d.src, "192.0.2.1:5000".parse().unwrap()); // the port is preserved
//! ```

pub mod nat;
pub mod net;
pub mod rng;
#[cfg(test)]
mod scenarios;

pub use nat::{Filtering, Mapping, Nat, NatConfig, NatCounters};
pub use net::{Delivery, HostId, NatId, NetCounters, Network};
pub use rng::SimRng;
