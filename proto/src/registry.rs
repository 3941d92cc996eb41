//! The rendezvous peer registry: a sans-IO state machine.
//!
//! Entries expire [`RegistryLimits::ttl`] after their last registration unless refreshed. New
//! registrations (not refreshes) are rate limited per source IP with a token bucket, and the
//! number of entries and of tracked source IPs is capped, so memory is bounded whatever clients do.
//!
//! Driving it: call [`Registry::register`], [`Registry::lookup`] and [`Registry::unregister`] as
//! requests arrive (or [`Registry::register_owned`] and [`Registry::unregister_owned`] when each
//! registration belongs to a connection), and [`Registry::handle_timeout`] when the instant from
//! [`Registry::poll_timeout`] has passed. `now` is always passed in; the registry never reads a
//! clock. Lookups never return an expired entry, even before `handle_timeout` removed it.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::control::{PeerRecord, RefusalCode, RegisteredOver, MAX_LOCAL_ADDRS};
use crate::nat::NatReport;
use crate::rate_limit::TokenBuckets;
use crate::PeerId;

/// Limits of the registry, with the rendezvous's defaults.
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    /// Most peers registered at once (default 100,000).
    pub max_registrations: usize,
    /// How long a registration lives without a refresh (default 120 s).
    pub ttl: Duration,
    /// New registrations a source IP may make in a burst (default 20).
    pub new_per_ip_burst: u32,
    /// One more new registration is allowed per source IP each interval (default 200 ms, 5/s).
    pub new_per_ip_interval: Duration,
    /// Most source IPs tracked by the rate limiter (default 100,000).
    pub max_tracked_ips: usize,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_registrations: 100_000,
            ttl: Duration::from_secs(120),
            new_per_ip_burst: 20,
            new_per_ip_interval: Duration::from_millis(200),
            max_tracked_ips: 100_000,
        }
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("registry is full ({0} peers)")]
    Full(usize),
    #[error("too many new registrations from {0}; try again later")]
    RateLimited(IpAddr),
    #[error("{0} local addresses reported; at most {MAX_LOCAL_ADDRS} are accepted")]
    TooManyAddresses(usize),
}

impl RegisterError {
    /// The wire code for this refusal.
    pub fn code(&self) -> RefusalCode {
        match self {
            RegisterError::Full(_) => RefusalCode::RegistryFull,
            RegisterError::RateLimited(_) => RefusalCode::RateLimited,
            RegisterError::TooManyAddresses(_) => RefusalCode::TooManyAddresses,
        }
    }
}

#[derive(Debug)]
struct Entry {
    record: PeerRecord,
    expires: Instant,
    /// The connection that registered it last (a number the caller chose; 0 when none).
    owner: u64,
}

/// The registry. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Registry {
    limits: RegistryLimits,
    entries: HashMap<PeerId, Entry>,
    /// Expiry index: exactly one `(expires, peer)` per entry.
    expiries: BTreeSet<(Instant, PeerId)>,
    buckets: TokenBuckets<IpAddr>,
    /// How many entries have each observed IP: the TURN server's "is this a registered peer's
    /// IP" query, O(1). At most one key per entry.
    observed_ips: HashMap<IpAddr, usize>,
}

impl Registry {
    pub fn new(limits: RegistryLimits) -> Self {
        let buckets = TokenBuckets::new(
            limits.new_per_ip_burst,
            limits.new_per_ip_interval,
            limits.max_tracked_ips,
        );
        Registry {
            limits,
            entries: HashMap::new(),
            expiries: BTreeSet::new(),
            buckets,
            observed_ips: HashMap::new(),
        }
    }

    pub fn limits(&self) -> &RegistryLimits {
        &self.limits
    }

    /// Registers or refreshes `peer`, observed at `observed` over QUIC. Returns the TTL granted.
    pub fn register(
        &mut self,
        now: Instant,
        peer: PeerId,
        observed: SocketAddr,
        local_addrs: Vec<SocketAddr>,
        nat: NatReport,
        relayed: Option<SocketAddr>,
    ) -> Result<Duration, RegisterError> {
        let record = PeerRecord {
            observed,
            local_addrs,
            nat,
            relayed,
            over: RegisteredOver::Quic,
        };
        self.register_record(now, peer, record)
    }

    /// Registers or refreshes `peer` with `record` (`record.observed` is where the rendezvous
    /// sees its connection, over `record.over`). Returns the TTL granted.
    pub fn register_record(
        &mut self,
        now: Instant,
        peer: PeerId,
        record: PeerRecord,
    ) -> Result<Duration, RegisterError> {
        self.register_owned(now, peer, 0, record)
    }

    /// [`Self::register_record`] on behalf of connection `owner` (a number unique to each
    /// connection): the entry now belongs to it, and [`Self::unregister_owned`] by another
    /// connection leaves it alone.
    pub fn register_owned(
        &mut self,
        now: Instant,
        peer: PeerId,
        owner: u64,
        record: PeerRecord,
    ) -> Result<Duration, RegisterError> {
        let observed = record.observed;
        let local_addrs = &record.local_addrs;
        if local_addrs.len() > MAX_LOCAL_ADDRS {
            return Err(RegisterError::TooManyAddresses(local_addrs.len()));
        }
        self.handle_timeout(now);
        let refresh = self.entries.contains_key(&peer);
        if !refresh {
            if self.entries.len() >= self.limits.max_registrations {
                return Err(RegisterError::Full(self.limits.max_registrations));
            }
            self.take_token(now, observed.ip())?;
        }
        let expires = now + self.limits.ttl;
        let entry = Entry {
            record,
            expires,
            owner,
        };
        if let Some(old) = self.entries.insert(peer, entry) {
            self.expiries.remove(&(old.expires, peer));
            self.forget_ip(old.record.observed.ip());
        }
        self.expiries.insert((expires, peer));
        *self.observed_ips.entry(observed.ip()).or_insert(0) += 1;
        Ok(self.limits.ttl)
    }

    /// Moves `peer`'s observed address to `observed` (its NAT rebound; the caller has
    /// authenticated the move). Returns whether `peer` is registered.
    pub fn set_observed(&mut self, peer: &PeerId, observed: SocketAddr) -> bool {
        let Some(entry) = self.entries.get_mut(peer) else {
            return false;
        };
        let old = std::mem::replace(&mut entry.record.observed, observed);
        *self.observed_ips.entry(observed.ip()).or_insert(0) += 1;
        self.forget_ip(old.ip());
        true
    }

    /// The record of `peer`, if registered and not expired at `now`.
    pub fn lookup(&self, now: Instant, peer: &PeerId) -> Option<&PeerRecord> {
        self.entries
            .get(peer)
            .filter(|entry| entry.expires > now)
            .map(|entry| &entry.record)
    }

    /// Removes `peer` (e.g. its connection closed). Returns whether it was registered.
    pub fn unregister(&mut self, peer: &PeerId) -> bool {
        match self.entries.remove(peer) {
            Some(entry) => {
                self.expiries.remove(&(entry.expires, *peer));
                self.forget_ip(entry.record.observed.ip());
                true
            }
            None => false,
        }
    }

    /// Removes `peer` only if connection `owner` registered it last: the close of a peer's old
    /// connection must not remove the registration its new connection just made (they race when
    /// a node reconnects). Returns whether it was removed.
    pub fn unregister_owned(&mut self, peer: &PeerId, owner: u64) -> bool {
        match self.entries.get(peer) {
            Some(entry) if entry.owner == owner => self.unregister(peer),
            _ => false,
        }
    }

    /// Number of live entries (expired ones not yet removed count until `handle_timeout`).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next instant at which an entry expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(expires, _)| *expires)
    }

    /// Removes every entry expired at `now`; returns the removed peers.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<PeerId> {
        let mut removed = Vec::new();
        while let Some(&(expires, peer)) = self.expiries.first() {
            if expires > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(entry) = self.entries.remove(&peer) {
                self.forget_ip(entry.record.observed.ip());
            }
            removed.push(peer);
        }
        removed
    }

    /// Whether some registered peer was observed at `ip` (entries expired but not yet removed by
    /// [`Self::handle_timeout`] still count).
    pub fn has_observed_ip(&self, ip: IpAddr) -> bool {
        self.observed_ips.contains_key(&ip)
    }

    fn forget_ip(&mut self, ip: IpAddr) {
        if let Some(count) = self.observed_ips.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.observed_ips.remove(&ip);
            }
        }
    }

    fn take_token(&mut self, now: Instant, ip: IpAddr) -> Result<(), RegisterError> {
        if self.buckets.take(now, ip) {
            Ok(())
        } else {
            Err(RegisterError::RateLimited(ip))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId([n; 32])
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn entries_expire_after_ttl_unless_refreshed() {
        let start = Instant::now();
        let mut registry = Registry::new(RegistryLimits {
            ttl: Duration::from_secs(10),
            ..RegistryLimits::default()
        });
        registry
            .register(start, peer(1), addr(1), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        registry
            .register(start, peer(2), addr(2), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        assert_eq!(
            registry.poll_timeout(),
            Some(start + Duration::from_secs(10))
        );
        let later = start + Duration::from_secs(6);
        registry
            .register(later, peer(2), addr(3), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        let expired_time = start + Duration::from_secs(10);
        assert!(registry.lookup(expired_time, &peer(1)).is_none());
        assert_eq!(registry.handle_timeout(expired_time), vec![peer(1)]);
        let record = registry.lookup(expired_time, &peer(2)).unwrap();
        assert_eq!(record.observed, addr(3), "refresh updates the address");
        assert_eq!(registry.len(), 1);
        assert_eq!(
            registry.handle_timeout(later + Duration::from_secs(10)),
            vec![peer(2)]
        );
        assert!(registry.is_empty());
        assert_eq!(registry.poll_timeout(), None);
    }

    #[test]
    fn capacity_and_address_limits() {
        let now = Instant::now();
        let mut registry = Registry::new(RegistryLimits {
            max_registrations: 2,
            ..RegistryLimits::default()
        });
        registry
            .register(now, peer(1), addr(1), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        registry
            .register(now, peer(2), addr(2), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        assert_eq!(
            registry.register(now, peer(3), addr(3), vec![], NatReport::UNKNOWN, None),
            Err(RegisterError::Full(2))
        );
        // Refreshing an existing entry is allowed when full.
        assert!(registry
            .register(now, peer(1), addr(1), vec![], NatReport::UNKNOWN, None)
            .is_ok());
        let too_many = vec![addr(9); MAX_LOCAL_ADDRS + 1];
        assert_eq!(
            registry.register(now, peer(1), addr(1), too_many, NatReport::UNKNOWN, None),
            Err(RegisterError::TooManyAddresses(MAX_LOCAL_ADDRS + 1))
        );
        assert!(registry.unregister(&peer(2)));
        assert!(registry
            .register(now, peer(3), addr(3), vec![], NatReport::UNKNOWN, None)
            .is_ok());
    }

    #[test]
    fn new_registrations_are_rate_limited_per_ip_and_refill() {
        let now = Instant::now();
        let mut registry = Registry::new(RegistryLimits {
            new_per_ip_burst: 3,
            new_per_ip_interval: Duration::from_secs(1),
            ..RegistryLimits::default()
        });
        for n in 0..3 {
            registry
                .register(now, peer(n), addr(1), vec![], NatReport::UNKNOWN, None)
                .unwrap();
        }
        assert!(matches!(
            registry.register(now, peer(9), addr(1), vec![], NatReport::UNKNOWN, None),
            Err(RegisterError::RateLimited(_))
        ));
        // Another source IP has its own bucket; refreshes are not limited.
        let other = SocketAddr::from(([198, 51, 100, 1], 1));
        assert!(registry
            .register(now, peer(10), other, vec![], NatReport::UNKNOWN, None)
            .is_ok());
        assert!(registry
            .register(now, peer(0), addr(1), vec![], NatReport::UNKNOWN, None)
            .is_ok());
        let later = now + Duration::from_millis(1500);
        assert!(registry
            .register(later, peer(9), addr(1), vec![], NatReport::UNKNOWN, None)
            .is_ok());
        assert!(registry
            .register(later, peer(11), addr(1), vec![], NatReport::UNKNOWN, None)
            .is_err());
    }

    #[test]
    fn observed_ip_index_follows_entries() {
        let now = Instant::now();
        let mut registry = Registry::new(RegistryLimits {
            ttl: Duration::from_secs(10),
            ..RegistryLimits::default()
        });
        let at = |ip: [u8; 4], port| SocketAddr::from((ip, port));
        let ip = |a: [u8; 4]| IpAddr::from(a);
        let (a, b) = ([192, 0, 2, 1], [192, 0, 2, 2]);
        registry
            .register(now, peer(1), at(a, 1), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        registry
            .register(now, peer(2), at(a, 2), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        assert!(registry.has_observed_ip(ip(a)));
        assert!(!registry.has_observed_ip(ip(b)));
        // peer 1 moves to b: a is still peer 2's.
        registry
            .register(now, peer(1), at(b, 1), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        assert!(registry.has_observed_ip(ip(a)) && registry.has_observed_ip(ip(b)));
        assert!(registry.unregister(&peer(2)));
        assert!(!registry.has_observed_ip(ip(a)));
        registry.handle_timeout(now + Duration::from_secs(10));
        assert!(!registry.has_observed_ip(ip(b)));
        assert!(registry.observed_ips.is_empty());
    }

    #[test]
    fn set_observed_moves_the_record_and_the_ip_index() {
        let now = Instant::now();
        let mut registry = Registry::new(RegistryLimits::default());
        let (a, b) = (
            SocketAddr::from(([192, 0, 2, 1], 1)),
            SocketAddr::from(([198, 51, 100, 1], 2)),
        );
        registry
            .register(now, peer(1), a, vec![], NatReport::UNKNOWN, None)
            .unwrap();
        assert!(registry.set_observed(&peer(1), b));
        assert_eq!(registry.lookup(now, &peer(1)).unwrap().observed, b);
        assert!(registry.has_observed_ip(b.ip()) && !registry.has_observed_ip(a.ip()));
        assert!(!registry.set_observed(&peer(2), a), "not registered");
        assert!(registry.unregister(&peer(1)));
        assert!(registry.observed_ips.is_empty());
    }

    fn record(port: u16) -> PeerRecord {
        PeerRecord {
            observed: addr(port),
            local_addrs: vec![],
            nat: NatReport::UNKNOWN,
            relayed: None,
            over: RegisteredOver::Quic,
        }
    }

    #[test]
    fn an_old_connections_close_leaves_the_new_connections_registration() {
        let now = Instant::now();
        let mut registry = Registry::new(RegistryLimits::default());
        // Connection 1 registers the peer; the peer reconnects (connection 2) and registers
        // again before connection 1's close is handled.
        registry.register_owned(now, peer(1), 1, record(1)).unwrap();
        registry.register_owned(now, peer(1), 2, record(2)).unwrap();
        assert!(
            !registry.unregister_owned(&peer(1), 1),
            "not connection 1's any more"
        );
        assert_eq!(registry.lookup(now, &peer(1)).unwrap().observed, addr(2));
        assert!(registry.has_observed_ip(addr(2).ip()));
        // Connection 2's own close removes it, with its index entries.
        assert!(registry.unregister_owned(&peer(1), 2));
        assert!(registry.lookup(now, &peer(1)).is_none());
        assert!(registry.is_empty() && registry.poll_timeout().is_none());
        assert!(!registry.unregister_owned(&peer(1), 2), "already gone");
    }

    #[test]
    fn tracked_ips_are_bounded() {
        let now = Instant::now();
        let mut registry = Registry::new(RegistryLimits {
            new_per_ip_burst: 1,
            new_per_ip_interval: Duration::from_secs(60),
            max_tracked_ips: 2,
            ..RegistryLimits::default()
        });
        let ip = |n: u8| SocketAddr::from(([203, 0, 113, n], 1));
        registry
            .register(now, peer(1), ip(1), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        registry
            .register(now, peer(2), ip(2), vec![], NatReport::UNKNOWN, None)
            .unwrap();
        assert!(matches!(
            registry.register(now, peer(3), ip(3), vec![], NatReport::UNKNOWN, None),
            Err(RegisterError::RateLimited(_))
        ));
        // Once the old buckets refilled they are forgotten and room is made.
        let later = now + Duration::from_secs(61);
        assert!(registry
            .register(later, peer(3), ip(3), vec![], NatReport::UNKNOWN, None)
            .is_ok());
    }
}
