//! One simulated NAT with the RFC 4787 mapping and filtering behaviours the netsim lab builds
//! from Linux nftables, including the conntrack poisoning of a bare Linux NAT box.
//!
//! Model:
//! - A *mapping* is one public port serving one inside `ip:port` towards a scope of remotes: all
//!   of them (endpoint-independent), one remote IP (address-dependent) or one remote `ip:port`
//!   (address-and-port-dependent, "symmetric"). Public ports are unique among live mappings.
//! - Each mapping remembers the remotes it has sent to (its *flows*), for filtering.
//! - A mapping, and each of its flows, lives until `mapping_timeout` has passed without traffic
//!   (a flow: traffic with that remote; the mapping: any traffic). Expiry is checked lazily
//!   against the `now` of each call: state is as of the latest call.
//! - Without a WAN firewall, an unsolicited inbound datagram is dropped but recorded as a
//!   conntrack entry (remote -> public port) for [`CONNTRACK_UNREPLIED_TIMEOUT`], refreshed by
//!   each further such datagram. While it lives, a new flow of any inside host towards that
//!   remote cannot use that public port (the tuple is taken), so it leaves from another, random
//!   port; flows towards other remotes keep the port. That is Linux masquerade as it is.
//! - Hairpinning ([`Nat::hairpin`]) follows the lab's nftables rules: a datagram from the LAN to
//!   the public address reaches the inside host of a live mapping on that port without a
//!   filtering check, from the sender's own public mapping.
//!
//! Limits (each drops the datagram and counts it in [`NatCounters::table_full`]):
//! [`MAX_MAPPINGS`] mappings, [`MAX_FLOWS`] flows over all mappings, [`MAX_CONNTRACK_RECORDS`]
//! records of unsolicited datagrams. No method panics; times may go backwards without harm.

use super::rng::SimRng;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Most live mappings one NAT holds.
pub const MAX_MAPPINGS: usize = 4096;
/// Most live flows (mapping, remote) one NAT holds, over all its mappings.
pub const MAX_FLOWS: usize = 65_536;
/// Most live records of unsolicited inbound datagrams (bare Linux NAT only).
pub const MAX_CONNTRACK_RECORDS: usize = 4096;
/// Lifetime of a record of an unsolicited datagram: Linux's `nf_conntrack_udp_timeout`.
pub const CONNTRACK_UNREPLIED_TIMEOUT: Duration = Duration::from_secs(30);
/// Default mapping lifetime: Linux's `nf_conntrack_udp_timeout_stream`, as in netsim.
pub const DEFAULT_MAPPING_TIMEOUT: Duration = Duration::from_secs(120);
/// Lowest public port a NAT picks at random (it picks in `1024..=65535`).
pub const MIN_RANDOM_PORT: u16 = 1024;

const RANDOM_PORT_SPAN: u64 = 65_536 - MIN_RANDOM_PORT as u64;
const RANDOM_PORT_TRIES: usize = 64;

/// How a NAT picks the public port of an outbound flow (RFC 4787 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One public port per inside `ip:port` for every remote.
    EndpointIndependent,
    /// One public port per inside `ip:port` and remote IP.
    AddressDependent,
    /// One public port per inside `ip:port` and remote `ip:port` (symmetric NAT).
    AddressPortDependent,
}

/// Which inbound datagrams a mapping admits (RFC 4787 section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// From any remote.
    EndpointIndependent,
    /// From remote IPs the mapping has sent to.
    AddressDependent,
    /// From exact remote `ip:port`s the mapping has sent to.
    AddressPortDependent,
}

/// The behaviour of one NAT. The constructors match the netsim lab's router kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatConfig {
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// Keep the inside port as the public port when it is free (Linux masquerade).
    pub port_preservation: bool,
    /// Drop unsolicited inbound before conntrack records it (a home router). Off: a bare Linux
    /// NAT box, where such a datagram moves the next flow towards its sender to another port.
    pub wan_firewall: bool,
    /// A mapping (and each flow) expires after this long without traffic.
    pub mapping_timeout: Duration,
    /// LAN hosts reach each other through the public address.
    pub hairpin: bool,
}

impl NatConfig {
    fn cone(filtering: Filtering) -> Self {
        NatConfig {
            mapping: Mapping::EndpointIndependent,
            filtering,
            port_preservation: true,
            wan_firewall: true,
            mapping_timeout: DEFAULT_MAPPING_TIMEOUT,
            hairpin: false,
        }
    }

    /// Endpoint-independent mapping and filtering.
    pub fn full_cone() -> Self {
        Self::cone(Filtering::EndpointIndependent)
    }

    /// Endpoint-independent mapping, address-dependent filtering.
    pub fn restricted_cone() -> Self {
        Self::cone(Filtering::AddressDependent)
    }

    /// Endpoint-independent mapping, address-and-port-dependent filtering (plain masquerade).
    pub fn port_restricted_cone() -> Self {
        Self::cone(Filtering::AddressPortDependent)
    }

    /// Address-and-port-dependent mapping and filtering, random ports (`masquerade fully-random`).
    pub fn symmetric() -> Self {
        NatConfig {
            mapping: Mapping::AddressPortDependent,
            filtering: Filtering::AddressPortDependent,
            port_preservation: false,
            ..Self::cone(Filtering::AddressPortDependent)
        }
    }

    /// A port-restricted cone with port preservation and no WAN firewall: a bare Linux box.
    pub fn bare_linux() -> Self {
        NatConfig {
            wan_firewall: false,
            ..Self::port_restricted_cone()
        }
    }

    /// This configuration with hairpinning on or off.
    pub fn with_hairpin(self, hairpin: bool) -> Self {
        NatConfig { hairpin, ..self }
    }

    /// This configuration with another mapping lifetime.
    pub fn with_mapping_timeout(self, mapping_timeout: Duration) -> Self {
        NatConfig {
            mapping_timeout,
            ..self
        }
    }

    /// This configuration with the WAN firewall on or off.
    pub fn with_wan_firewall(self, wan_firewall: bool) -> Self {
        NatConfig {
            wan_firewall,
            ..self
        }
    }

    /// This configuration with port preservation on or off.
    pub fn with_port_preservation(self, port_preservation: bool) -> Self {
        NatConfig {
            port_preservation,
            ..self
        }
    }
}

/// What a NAT did, for assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Outbound datagrams translated.
    pub outbound: u64,
    /// Inbound datagrams admitted.
    pub inbound: u64,
    /// Inbound datagrams dropped: no live mapping on the port, or filtering refused them.
    pub filtered: u64,
    /// Datagrams dropped because a table was full (see the module limits).
    pub table_full: u64,
    /// Unsolicited inbound datagrams newly recorded in conntrack (no WAN firewall).
    pub conntrack_records: u64,
    /// New flows moved to another public port by a conntrack record.
    pub diverted: u64,
    /// Mappings that expired.
    pub expired: u64,
    /// Datagrams hairpinned.
    pub hairpinned: u64,
    /// Conntrack flushes.
    pub rebinds: u64,
}

/// The remotes a mapping serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Any,
    Ip(IpAddr),
    Exact(SocketAddr),
}

#[derive(Debug)]
struct Entry {
    inside: SocketAddr,
    scope: Scope,
    last_active: Instant,
    /// Remotes sent to, with the time of the last traffic with each.
    flows: BTreeMap<SocketAddr, Instant>,
}

/// A set of ports as a fixed 8 KiB bitmap.
#[derive(Clone)]
struct PortSet(Vec<u64>);

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count: u32 = self.0.iter().map(|w| w.count_ones()).sum();
        write!(f, "PortSet({count} ports)")
    }
}

impl PortSet {
    fn new() -> Self {
        PortSet(vec![0; 1024])
    }

    fn insert(&mut self, port: u16) {
        if let Some(word) = self.0.get_mut(usize::from(port / 64)) {
            *word |= 1 << (port % 64);
        }
    }

    fn contains(&self, port: u16) -> bool {
        self.0
            .get(usize::from(port / 64))
            .is_some_and(|word| word & (1 << (port % 64)) != 0)
    }
}

/// True while `last + lifetime` is still ahead of `now` (forever if that overflows).
fn alive(last: Instant, lifetime: Duration, now: Instant) -> bool {
    last.checked_add(lifetime).is_none_or(|end| now < end)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// One NAT: translation state for one public IP.
#[derive(Debug)]
pub struct Nat {
    config: NatConfig,
    public_ip: IpAddr,
    rng: SimRng,
    /// Live mappings by public port.
    by_port: BTreeMap<u16, Entry>,
    /// The public port of each live mapping, by inside address and scope.
    by_scope: BTreeMap<(SocketAddr, Scope), u16>,
    /// Flows over all mappings.
    flow_count: usize,
    /// Unsolicited datagrams seen: (remote, public port) -> last seen.
    conntrack: BTreeMap<(SocketAddr, u16), Instant>,
    /// No state expires before this instant (a lower bound; `None`: nothing can expire).
    next_expiry: Option<Instant>,
    /// Every public port ever handed out.
    ever_used: PortSet,
    /// Ports in use before the latest rebind: never handed out again while others are free.
    retired: PortSet,
    counters: NatCounters,
}

impl Nat {
    /// A NAT with no state; `seed` fixes its random port choices.
    pub fn new(config: NatConfig, public_ip: IpAddr, seed: u64) -> Self {
        Nat {
            config,
            public_ip,
            rng: SimRng::new(seed),
            by_port: BTreeMap::new(),
            by_scope: BTreeMap::new(),
            flow_count: 0,
            conntrack: BTreeMap::new(),
            next_expiry: None,
            ever_used: PortSet::new(),
            retired: PortSet::new(),
            counters: NatCounters::default(),
        }
    }

    /// A datagram from inside `src` to outside `dst`: the public source it leaves with, or
    /// `None` (dropped: a table is full).
    pub fn outbound(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let port = self.outbound_port(now, src, dst)?;
        self.counters.outbound += 1;
        Some(SocketAddr::new(self.public_ip, port))
    }

    /// A datagram from outside `src` to `dst` (this NAT's public ip:port): the inside
    /// destination, or `None` (filtered, or no live mapping). Without a WAN firewall a refused
    /// datagram is recorded in conntrack (see the module documentation).
    pub fn inbound(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let ours = dst.ip() == self.public_ip;
        if ours {
            if let Some(entry) = self.by_port.get_mut(&dst.port()) {
                let admit = match self.config.filtering {
                    Filtering::EndpointIndependent => true,
                    Filtering::AddressDependent => entry.flows.keys().any(|r| r.ip() == src.ip()),
                    Filtering::AddressPortDependent => entry.flows.contains_key(&src),
                };
                if admit {
                    entry.last_active = entry.last_active.max(now);
                    if let Some(seen) = entry.flows.get_mut(&src) {
                        *seen = (*seen).max(now);
                    }
                    self.counters.inbound += 1;
                    return Some(entry.inside);
                }
            }
        }
        self.counters.filtered += 1;
        if ours && !self.config.wan_firewall {
            self.record(now, src, dst.port());
        }
        None
    }

    /// A datagram from inside `src` to this NAT's own public address `dst`: with hairpinning on
    /// and a live mapping on `dst`'s port, the source the receiver sees (the sender's public
    /// mapping towards `dst`) and the inside destination; otherwise `None` (dropped).
    pub fn hairpin(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<(SocketAddr, SocketAddr)> {
        self.expire(now);
        if !self.config.hairpin
            || dst.ip() != self.public_ip
            || !self.by_port.contains_key(&dst.port())
        {
            self.counters.filtered += 1;
            return None;
        }
        let public_src = self.outbound(now, src, dst)?;
        let entry = self.by_port.get_mut(&dst.port())?;
        entry.last_active = entry.last_active.max(now);
        self.counters.hairpinned += 1;
        Some((public_src, entry.inside))
    }

    /// Conntrack flush: forget every mapping and record. Afterwards new mappings get ports
    /// different from every port handed out before (while any such port is free), so every
    /// host behind this NAT appears from a new public address: a real rebinding.
    pub fn rebind(&mut self) {
        self.by_port.clear();
        self.by_scope.clear();
        self.conntrack.clear();
        self.flow_count = 0;
        self.next_expiry = None;
        self.retired = self.ever_used.clone();
        self.counters.rebinds += 1;
    }

    /// The NAT's public (WAN) address.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    /// Live mappings as of the latest call (expired ones are removed lazily).
    pub fn mapping_count(&self) -> usize {
        self.by_port.len()
    }

    /// Live conntrack records of unsolicited datagrams as of the latest call.
    pub fn conntrack_count(&self) -> usize {
        self.conntrack.len()
    }

    /// The NAT's behaviour.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// What the NAT did so far.
    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    fn scope_for(&self, dst: SocketAddr) -> Scope {
        match self.config.mapping {
            Mapping::EndpointIndependent => Scope::Any,
            Mapping::AddressDependent => Scope::Ip(dst.ip()),
            Mapping::AddressPortDependent => Scope::Exact(dst),
        }
    }

    fn outbound_port(&mut self, now: Instant, src: SocketAddr, dst: SocketAddr) -> Option<u16> {
        // A flow of its own (a symmetric mapping, or one diverted by a record) comes first.
        if let Some(&port) = self.by_scope.get(&(src, Scope::Exact(dst))) {
            return self.use_mapping(now, port, dst);
        }
        let scope = self.scope_for(dst);
        if let Some(&port) = self.by_scope.get(&(src, scope)) {
            let known = self
                .by_port
                .get(&port)
                .is_some_and(|e| e.flows.contains_key(&dst));
            if known || !self.conntrack.contains_key(&(dst, port)) {
                return self.use_mapping(now, port, dst);
            }
            // The tuple (dst -> port) is taken by a record: this flow needs its own port.
            self.counters.diverted += 1;
            let port = self.random_port(dst)?;
            return self.insert(now, src, Scope::Exact(dst), port, dst);
        }
        let preserved = (self.config.port_preservation && src.port() != 0)
            .then_some(src.port())
            .filter(|p| !self.by_port.contains_key(p) && !self.retired.contains(*p));
        match preserved {
            Some(port) if self.conntrack.contains_key(&(dst, port)) => {
                // Linux keeps the port for later flows to other remotes; only this one moves.
                self.counters.diverted += 1;
                let port = self.random_port(dst)?;
                self.insert(now, src, Scope::Exact(dst), port, dst)
            }
            Some(port) => self.insert(now, src, scope, port, dst),
            None => {
                let port = self.random_port(dst)?;
                self.insert(now, src, scope, port, dst)
            }
        }
    }

    /// Sends on the live mapping on `port` towards `dst`.
    fn use_mapping(&mut self, now: Instant, port: u16, dst: SocketAddr) -> Option<u16> {
        let full = self.flow_count >= MAX_FLOWS;
        let entry = self.by_port.get_mut(&port)?;
        match entry.flows.get_mut(&dst) {
            Some(seen) => *seen = (*seen).max(now),
            None if full => {
                self.counters.table_full += 1;
                return None;
            }
            None => {
                entry.flows.insert(dst, now);
                self.flow_count += 1;
                self.next_expiry = earliest(
                    self.next_expiry,
                    now.checked_add(self.config.mapping_timeout),
                );
            }
        }
        entry.last_active = entry.last_active.max(now);
        Some(port)
    }

    fn insert(
        &mut self,
        now: Instant,
        inside: SocketAddr,
        scope: Scope,
        port: u16,
        dst: SocketAddr,
    ) -> Option<u16> {
        if self.by_port.len() >= MAX_MAPPINGS || self.flow_count >= MAX_FLOWS {
            self.counters.table_full += 1;
            return None;
        }
        let mut flows = BTreeMap::new();
        flows.insert(dst, now);
        self.by_port.insert(
            port,
            Entry {
                inside,
                scope,
                last_active: now,
                flows,
            },
        );
        self.by_scope.insert((inside, scope), port);
        self.flow_count += 1;
        self.ever_used.insert(port);
        self.next_expiry = earliest(
            self.next_expiry,
            now.checked_add(self.config.mapping_timeout),
        );
        Some(port)
    }

    /// A random free public port whose tuple towards `dst` is not taken by a record; ports
    /// retired by a rebind only when no other is free.
    fn random_port(&mut self, dst: SocketAddr) -> Option<u16> {
        let usable = |nat: &Nat, port: u16, allow_retired: bool| {
            !nat.by_port.contains_key(&port)
                && (allow_retired || !nat.retired.contains(port))
                && !nat.conntrack.contains_key(&(dst, port))
        };
        let port_at = |offset: u64| {
            u16::try_from(offset % RANDOM_PORT_SPAN)
                .ok()
                .and_then(|o| o.checked_add(MIN_RANDOM_PORT))
        };
        for _ in 0..RANDOM_PORT_TRIES {
            let draw = self.rng.below(RANDOM_PORT_SPAN);
            if let Some(port) = port_at(draw).filter(|p| usable(self, *p, false)) {
                return Some(port);
            }
        }
        // Nearly full: scan from a random start, first avoiding retired ports.
        let start = self.rng.below(RANDOM_PORT_SPAN);
        for allow_retired in [false, true] {
            for i in 0..RANDOM_PORT_SPAN {
                let candidate = port_at(start.wrapping_add(i));
                if let Some(port) = candidate.filter(|p| usable(self, *p, allow_retired)) {
                    return Some(port);
                }
            }
        }
        self.counters.table_full += 1;
        None
    }

    fn record(&mut self, now: Instant, remote: SocketAddr, port: u16) {
        if let Some(seen) = self.conntrack.get_mut(&(remote, port)) {
            *seen = (*seen).max(now);
            return;
        }
        if self.conntrack.len() >= MAX_CONNTRACK_RECORDS {
            self.counters.table_full += 1;
            return;
        }
        self.conntrack.insert((remote, port), now);
        self.counters.conntrack_records += 1;
        self.next_expiry = earliest(
            self.next_expiry,
            now.checked_add(CONNTRACK_UNREPLIED_TIMEOUT),
        );
    }

    /// Removes everything that expired by `now` (only when something may have).
    fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|t| now < t) {
            return;
        }
        let timeout = self.config.mapping_timeout;
        let mut next = None;
        let by_scope = &mut self.by_scope;
        let flow_count = &mut self.flow_count;
        let counters = &mut self.counters;
        self.by_port.retain(|_, entry| {
            let before = entry.flows.len();
            entry.flows.retain(|_, seen| alive(*seen, timeout, now));
            if !alive(entry.last_active, timeout, now) {
                *flow_count = flow_count.saturating_sub(before);
                by_scope.remove(&(entry.inside, entry.scope));
                counters.expired += 1;
                return false;
            }
            *flow_count = flow_count.saturating_sub(before - entry.flows.len());
            next = earliest(next, entry.last_active.checked_add(timeout));
            for seen in entry.flows.values() {
                next = earliest(next, seen.checked_add(timeout));
            }
            true
        });
        self.conntrack.retain(|_, seen| {
            let keep = alive(*seen, CONNTRACK_UNREPLIED_TIMEOUT, now);
            if keep {
                next = earliest(next, seen.checked_add(CONNTRACK_UNREPLIED_TIMEOUT));
            }
            keep
        });
        self.next_expiry = next;
    }
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
