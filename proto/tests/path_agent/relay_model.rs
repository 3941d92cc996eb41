//! A TURN relay for the Pair harness: one host on the simulated internet that does what a TURN
//! server does to datagrams, without STUN's encoding.
//!
//! - *Allocate*: a node sends `[A, index]` from its main socket to [`RELAY_SERVER`]; the relay
//!   gives it the relayed address `R = relay_ip:(FIRST_RELAYED_PORT + index)`, bound to the
//!   node's transport address as the relay sees it (its NAT mapping), and answers `[a, R]`.
//! - *Send*: `[S, destination, payload]` from that transport address: the relay installs a
//!   permission for the destination's IP ([`PERMISSION_LIFETIME`]; a real TURN client asks for
//!   one for every IP it sends to) and sends the payload from `R` to the destination, across
//!   the destination's NAT like any datagram. From another transport address it is dropped
//!   (TURN's allocation mismatch).
//! - *Data*: a datagram reaching `R` from `X` is forwarded to the node as `[D, X, payload]`
//!   from the server address to the node's mapping, only while a permission for `X`'s IP lives.
//! - *Refresh*: `[F]`, a keepalive that holds the node's NAT mapping towards the server open.
//!
//! Addresses in envelopes are IPv4, 6 bytes (address, then port, big-endian).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use p2pnat_proto::sim::{Delivery, HostId, Network};

/// The relay's server address (where nodes send their envelopes).
pub const RELAY_SERVER: &str = "203.0.113.20:3478";
/// Node `i`'s relayed address has this port plus `i`.
pub const FIRST_RELAYED_PORT: u16 = 49152;
/// A permission lives this long after the last send to its IP (RFC 8656: 300 s).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

const ALLOCATE: u8 = b'A';
const ALLOCATED: u8 = b'a';
const SEND: u8 = b'S';
const DATA: u8 = b'D';
const REFRESH: u8 = b'F';
const ADDR_LEN: usize = 6;

/// What the relay did, for assertions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayCounters {
    /// Payloads sent from a relayed address to a peer.
    pub relayed_out: u64,
    /// Payloads from a peer forwarded to a node.
    pub relayed_in: u64,
    /// Dropped at a relayed address: no permission for the source's IP.
    pub no_permission: u64,
    /// Dropped: no allocation for that relayed address or that client address.
    pub no_allocation: u64,
    /// Envelopes that did not parse.
    pub malformed: u64,
}

struct Allocation {
    client: SocketAddr,
    /// Permitted peer IPs and when each expires.
    permissions: BTreeMap<IpAddr, Instant>,
}

/// The relay host and its allocations.
pub struct Relay {
    pub host: HostId,
    server: SocketAddr,
    allocations: BTreeMap<u16, Allocation>,
    pub counters: RelayCounters,
}

/// What a node's TURN client gets from the server.
pub enum FromServer {
    Allocated(SocketAddr),
    Data { from: SocketAddr, payload: Vec<u8> },
}

impl Relay {
    /// A relay host on the internet with `delay` on its uplink.
    pub fn new(net: &mut Network, delay: Duration) -> Self {
        let server: SocketAddr = RELAY_SERVER.parse().unwrap();
        let host = net.add_host(server.ip(), None);
        net.set_host_link(host, delay, 0.0);
        Relay {
            host,
            server,
            allocations: BTreeMap::new(),
            counters: RelayCounters::default(),
        }
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Node `index`'s relayed address.
    pub fn relayed_addr(&self, index: usize) -> SocketAddr {
        SocketAddr::new(self.server.ip(), relayed_port(index))
    }

    /// Node `index`'s allocation is gone (expired, or the server restarted).
    pub fn deallocate(&mut self, index: usize) {
        self.allocations.remove(&relayed_port(index));
    }

    /// A datagram reached the relay host: what it sends in return (source, destination,
    /// payload), if anything.
    pub fn handle(
        &mut self,
        now: Instant,
        delivery: Delivery,
    ) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        if delivery.dst.port() == self.server.port() {
            return self.client_envelope(now, delivery.src, &delivery.payload);
        }
        let Some(allocation) = self.allocations.get(&delivery.dst.port()) else {
            self.counters.no_allocation += 1;
            return None;
        };
        let permitted = allocation
            .permissions
            .get(&delivery.src.ip())
            .is_some_and(|expiry| *expiry > now);
        if !permitted {
            self.counters.no_permission += 1;
            return None;
        }
        self.counters.relayed_in += 1;
        let mut envelope = vec![DATA];
        put_addr(&mut envelope, delivery.src);
        envelope.extend_from_slice(&delivery.payload);
        Some((self.server, allocation.client, envelope))
    }

    fn client_envelope(
        &mut self,
        now: Instant,
        client: SocketAddr,
        bytes: &[u8],
    ) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        match bytes.first() {
            Some(&ALLOCATE) if bytes.len() == 3 => {
                let index = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
                let port = relayed_port(index);
                let allocation = self.allocations.entry(port).or_insert(Allocation {
                    client,
                    permissions: BTreeMap::new(),
                });
                if allocation.client != client {
                    *allocation = Allocation {
                        client,
                        permissions: BTreeMap::new(),
                    };
                }
                let mut answer = vec![ALLOCATED];
                put_addr(&mut answer, self.relayed_addr(index));
                Some((self.server, client, answer))
            }
            Some(&SEND) if bytes.len() > ADDR_LEN => {
                let to = get_addr(&bytes[1..])?;
                let Some((port, allocation)) = self
                    .allocations
                    .iter_mut()
                    .find(|(_, a)| a.client == client)
                else {
                    self.counters.no_allocation += 1;
                    return None;
                };
                allocation
                    .permissions
                    .insert(to.ip(), now + PERMISSION_LIFETIME);
                self.counters.relayed_out += 1;
                let from = SocketAddr::new(self.server.ip(), *port);
                Some((from, to, bytes[1 + ADDR_LEN..].to_vec()))
            }
            Some(&REFRESH) => None,
            _ => {
                self.counters.malformed += 1;
                None
            }
        }
    }
}

fn relayed_port(index: usize) -> u16 {
    FIRST_RELAYED_PORT + u16::try_from(index).unwrap()
}

/// A node's allocate request for relayed address number `index`.
pub fn allocate_request(index: usize) -> Vec<u8> {
    let index = u16::try_from(index).unwrap().to_be_bytes();
    vec![ALLOCATE, index[0], index[1]]
}

/// A node's Send envelope: `payload` for `to`, through the node's allocation.
pub fn send_envelope(to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut envelope = vec![SEND];
    put_addr(&mut envelope, to);
    envelope.extend_from_slice(payload);
    envelope
}

/// A node's keepalive to the server.
pub fn refresh() -> Vec<u8> {
    vec![REFRESH]
}

/// Reads an envelope the server sent to a node.
pub fn from_server(bytes: &[u8]) -> Option<FromServer> {
    let addr = get_addr(bytes.get(1..)?)?;
    match bytes[0] {
        ALLOCATED => Some(FromServer::Allocated(addr)),
        DATA => Some(FromServer::Data {
            from: addr,
            payload: bytes[1 + ADDR_LEN..].to_vec(),
        }),
        _ => None,
    }
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let IpAddr::V4(ip) = addr.ip() else {
        panic!("the relay model carries IPv4 only: {addr}");
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn get_addr(bytes: &[u8]) -> Option<SocketAddr> {
    let b: [u8; ADDR_LEN] = bytes.get(..ADDR_LEN)?.try_into().ok()?;
    let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    Some(SocketAddr::new(
        IpAddr::V4(ip),
        u16::from_be_bytes([b[4], b[5]]),
    ))
}
