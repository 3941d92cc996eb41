//! One allocation's state: its permissions, channels and byte budget. All tables are bounded by
//! the limits passed in; expired entries are ignored at once and purged when room is needed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_rs::HMACKey;

/// Identifies an allocation between the machine and its driver (never reused by one machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u64);

impl std::fmt::Display for AllocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "alloc#{}", self.0)
    }
}

/// Where an allocation is in its life.
pub(super) enum Phase {
    /// Waiting for the driver's `relay_bound`; `lifetime` is what will be granted.
    Binding { lifetime: Duration },
    /// Relaying; `response` is the Allocate success response, resent verbatim to a
    /// retransmitted Allocate.
    Active {
        relayed: SocketAddr,
        response: Vec<u8>,
    },
}

pub(super) struct Allocation {
    /// The client's side of the 5-tuple (its transport and address).
    pub client: super::Client,
    pub user: String,
    pub key: HMACKey,
    /// Transaction of the Allocate that created it.
    pub transaction: [u8; 12],
    pub phase: Phase,
    pub expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    /// channel -> (peer, expiry) and its reverse; always the same bindings.
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    pub bucket: ByteBucket,
}

/// Why a permission or channel could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    #[error("table full")]
    Full,
    #[error("channel or peer already bound to another")]
    Conflict,
}

impl Allocation {
    pub fn new(
        client: super::Client,
        credentials: super::auth::Credentials,
        transaction: [u8; 12],
        phase: Phase,
        expires: Instant,
        bucket: ByteBucket,
    ) -> Self {
        Allocation {
            client,
            user: credentials.user,
            key: credentials.key,
            transaction,
            phase,
            expires,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_of_peer: HashMap::new(),
            bucket,
        }
    }

    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.phase {
            Phase::Active { relayed, .. } => Some(relayed),
            Phase::Binding { .. } => None,
        }
    }

    pub fn has_permission(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions.get(&ip).is_some_and(|e| *e > now)
    }

    /// Whether `ips` could all get a permission without exceeding `max`.
    pub fn permission_room(&mut self, now: Instant, ips: &[IpAddr], max: usize) -> bool {
        let new = ips
            .iter()
            .filter(|ip| !self.permissions.contains_key(ip))
            .count();
        if self.permissions.len() + new > max {
            self.permissions.retain(|_, expires| *expires > now);
        }
        let new = ips
            .iter()
            .filter(|ip| !self.permissions.contains_key(ip))
            .count();
        self.permissions.len() + new <= max
    }

    /// Installs or refreshes a permission (call [`Self::permission_room`] first).
    pub fn permit(&mut self, ip: IpAddr, expires: Instant) {
        self.permissions.insert(ip, expires);
    }

    /// The peer bound to `channel`, if the binding is live.
    pub fn channel_peer(&self, now: Instant, channel: u16) -> Option<SocketAddr> {
        self.channels
            .get(&channel)
            .filter(|(_, expires)| *expires > now)
            .map(|(peer, _)| *peer)
    }

    /// The channel bound to `peer`, if the binding is live.
    pub fn peer_channel(&self, now: Instant, peer: SocketAddr) -> Option<u16> {
        let channel = *self.channel_of_peer.get(&peer)?;
        self.channel_peer(now, channel).map(|_| channel)
    }

    /// Binds or refreshes `channel` to `peer` (RFC 8656 section 12.2: a channel stays bound to
    /// one peer and a peer to one channel while the binding lives).
    pub fn bind_channel(
        &mut self,
        now: Instant,
        channel: u16,
        peer: SocketAddr,
        expires: Instant,
        max: usize,
    ) -> Result<(), BindError> {
        let live_channel = self.channel_peer(now, channel);
        let live_peer = self.peer_channel(now, peer);
        match (live_channel, live_peer) {
            (Some(bound), _) if bound != peer => return Err(BindError::Conflict),
            (_, Some(bound)) if bound != channel => return Err(BindError::Conflict),
            _ => {}
        }
        if !self.channels.contains_key(&channel) && self.channels.len() >= max {
            self.purge_channels(now);
            if self.channels.len() >= max {
                return Err(BindError::Full);
            }
        }
        if let Some((old_peer, _)) = self.channels.insert(channel, (peer, expires)) {
            if old_peer != peer {
                self.channel_of_peer.remove(&old_peer);
            }
        }
        if let Some(old_channel) = self.channel_of_peer.insert(peer, channel) {
            if old_channel != channel {
                self.channels.remove(&old_channel);
            }
        }
        Ok(())
    }

    fn purge_channels(&mut self, now: Instant) {
        let channel_of_peer = &mut self.channel_of_peer;
        self.channels.retain(|_, (peer, expires)| {
            let live = *expires > now;
            if !live {
                channel_of_peer.remove(peer);
            }
            live
        });
    }

    #[cfg(test)]
    pub fn table_sizes(&self) -> (usize, usize) {
        (self.permissions.len(), self.channels.len())
    }
}

/// A token bucket over bytes: `rate` bytes a second, up to `burst` saved. A rate of 0 means no
/// limit.
pub(super) struct ByteBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    refilled: Instant,
}

impl ByteBucket {
    /// A full bucket. The burst is one second's worth, at least 64 KiB (one largest datagram).
    pub fn new(rate: u64, now: Instant) -> Self {
        let burst = rate.max(65_536);
        ByteBucket {
            rate,
            burst,
            tokens: burst,
            refilled: now,
        }
    }

    /// Takes `bytes` if available.
    pub fn take(&mut self, now: Instant, bytes: usize) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos();
        let earned = elapsed * u128::from(self.rate) / 1_000_000_000;
        if earned > 0 {
            let room = u128::from(self.burst - self.tokens);
            if earned >= room {
                self.tokens = self.burst;
                self.refilled = now;
            } else {
                self.tokens += earned as u64;
                // Advance by exactly the time those tokens took, keeping the remainder.
                let spent = earned * 1_000_000_000 / u128::from(self.rate);
                self.refilled += Duration::from_nanos(spent as u64);
            }
        }
        let bytes = bytes as u64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_bucket_rate() {
        let start = Instant::now();
        let mut bucket = ByteBucket::new(100_000, start);
        assert!(bucket.take(start, 100_000));
        assert!(!bucket.take(start, 1));
        let later = start + Duration::from_millis(10);
        assert!(bucket.take(later, 1_000));
        assert!(!bucket.take(later, 1));
        // Many small refills lose nothing to rounding.
        let mut t = later;
        let mut taken = 0;
        for _ in 0..1000 {
            t += Duration::from_micros(1000);
            while bucket.take(t, 10) {
                taken += 10;
            }
        }
        assert!((99_000..=100_010).contains(&taken), "{taken}");
        let mut unlimited = ByteBucket::new(0, start);
        assert!(unlimited.take(start, usize::MAX));
    }
}
