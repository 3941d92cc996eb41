//! Limits on TCP connections (the TLS port and TURN over TCP): how many in all, how many per
//! source IP, and refusals logged once per IP per [`REFUSAL_LOG_INTERVAL`], not per attempt.
//!
//! A connection holds a [`ConnectionPermit`] from the moment it is accepted (before its TLS
//! handshake) until it is closed; dropping the permit frees its slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A refused IP is logged again only after this long (with the count refused meanwhile).
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Refused IPs remembered for the log; past it the memory is cleared (logs more, never more
/// memory).
const REFUSAL_LOG_ENTRIES: usize = 4096;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} TCP connections in all: the limit")]
    Total(usize),
    #[error("{0} TCP connections from this IP: the limit")]
    PerIp(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// IP -> (last logged, refused since without a log line).
    logged: HashMap<IpAddr, (Instant, u64)>,
}

/// Counts open connections. Shared by every TCP listener of the rendezvous.
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

/// One admitted connection's slot; freed on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl ConnectionLimiter {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionLimiter {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Admits a connection from `ip`, or says why not. A refusal is logged (warn) at most once
    /// per IP per [`REFUSAL_LOG_INTERVAL`].
    pub fn admit(self: &Arc<Self>, now: Instant, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let mut counts = self.counts.lock().expect("limiter lock");
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        let refusal = if counts.total >= self.max_total {
            Some(Refusal::Total(self.max_total))
        } else if from_ip >= self.max_per_ip {
            Some(Refusal::PerIp(self.max_per_ip))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            crate::metrics::METRICS.count_drop(crate::metrics::Dropped::TcpQuota);
            if counts.logged.len() >= REFUSAL_LOG_ENTRIES && !counts.logged.contains_key(&ip) {
                counts.logged.clear();
            }
            match counts.logged.get_mut(&ip) {
                Some((last, suppressed)) if now.duration_since(*last) < REFUSAL_LOG_INTERVAL => {
                    *suppressed += 1;
                }
                entry => {
                    let suppressed = entry.map_or(0, |(_, n)| *n);
                    tracing::warn!(%ip, refused_since_last_log = suppressed, "TCP connection refused: {refusal}");
                    counts.logged.insert(ip, (now, 0));
                }
            }
            return Err(refusal);
        }
        counts.total += 1;
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        Ok(ConnectionPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.counts.lock().expect("limiter lock").total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts.lock().expect("limiter lock");
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn per_ip_and_total_limits_free_on_drop() {
        let limiter = ConnectionLimiter::new(3, 2);
        let now = Instant::now();
        let a1 = limiter.admit(now, ip(1)).unwrap();
        let _a2 = limiter.admit(now, ip(1)).unwrap();
        assert_eq!(limiter.admit(now, ip(1)).unwrap_err(), Refusal::PerIp(2));
        let _b1 = limiter.admit(now, ip(2)).unwrap();
        assert_eq!(limiter.admit(now, ip(3)).unwrap_err(), Refusal::Total(3));
        assert_eq!(limiter.open(), 3);
        drop(a1);
        assert_eq!(limiter.open(), 2);
        let _a3 = limiter.admit(now, ip(1)).unwrap();
        assert_eq!(limiter.admit(now, ip(1)).unwrap_err(), Refusal::Total(3));
    }

    #[test]
    fn refusals_are_counted_between_logs() {
        let limiter = ConnectionLimiter::new(1, 1);
        let now = Instant::now();
        let _held = limiter.admit(now, ip(1)).unwrap();
        for _ in 0..5 {
            assert!(limiter.admit(now, ip(1)).is_err());
        }
        // First refusal logged, four more counted since.
        let logged = limiter.counts.lock().unwrap().logged[&ip(1)];
        assert_eq!(logged, (now, 4));
        let soon = now + REFUSAL_LOG_INTERVAL / 2;
        assert!(limiter.admit(soon, ip(1)).is_err());
        assert_eq!(limiter.counts.lock().unwrap().logged[&ip(1)], (now, 5));
        let later = now + REFUSAL_LOG_INTERVAL;
        assert!(limiter.admit(later, ip(1)).is_err());
        assert_eq!(limiter.counts.lock().unwrap().logged[&ip(1)], (later, 0));
    }
}
