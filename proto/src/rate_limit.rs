//! Token buckets per key (source IP, peer ID), sans-IO: `now` is passed in.
//!
//! Each key may take `burst` tokens at once and earns one more every `interval`, up to `burst`.
//! At most `max_keys` keys are tracked: when the table is full, keys whose bucket has refilled
//! (indistinguishable from new ones) are forgotten; if none has, a new key is refused. Memory is
//! therefore bounded whatever the callers do.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
}

/// See the module documentation.
#[derive(Debug)]
pub struct TokenBuckets<K> {
    burst: u32,
    interval: Duration,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Copy> TokenBuckets<K> {
    pub fn new(burst: u32, interval: Duration, max_keys: usize) -> Self {
        TokenBuckets {
            burst,
            interval: interval.max(Duration::from_nanos(1)),
            max_keys,
            buckets: HashMap::new(),
        }
    }

    fn earned(&self, bucket: &Bucket, now: Instant) -> u128 {
        now.saturating_duration_since(bucket.refilled).as_nanos() / self.interval.as_nanos()
    }

    /// Takes one token for `key`; false when it has none left (or no room to track it).
    pub fn take(&mut self, now: Instant, key: K) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            let burst = u128::from(self.burst);
            let interval = self.interval.as_nanos();
            self.buckets.retain(|_, bucket| {
                let earned = now.saturating_duration_since(bucket.refilled).as_nanos() / interval;
                u128::from(bucket.tokens) + earned < burst
            });
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        let burst = self.burst;
        let fresh = Bucket {
            tokens: burst,
            refilled: now,
        };
        let mut bucket = *self.buckets.get(&key).unwrap_or(&fresh);
        let earned = self.earned(&bucket, now);
        if earned > 0 {
            bucket.tokens = (u128::from(bucket.tokens) + earned).min(u128::from(burst)) as u32;
            bucket.refilled += self.interval * (earned.min(u128::from(u32::MAX)) as u32);
        }
        let allowed = bucket.tokens > 0;
        if allowed {
            bucket.tokens -= 1;
        }
        self.buckets.insert(key, bucket);
        allowed
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let start = Instant::now();
        let mut buckets = TokenBuckets::new(2, Duration::from_secs(1), 10);
        assert!(buckets.take(start, 'a'));
        assert!(buckets.take(start, 'a'));
        assert!(!buckets.take(start, 'a'));
        assert!(buckets.take(start, 'b'), "keys are independent");
        assert!(!buckets.take(start + Duration::from_millis(999), 'a'));
        assert!(buckets.take(start + Duration::from_millis(1000), 'a'));
        // A long rest refills only up to the burst.
        let rested = start + Duration::from_secs(100);
        assert!(buckets.take(rested, 'a'));
        assert!(buckets.take(rested, 'a'));
        assert!(!buckets.take(rested, 'a'));
    }

    #[test]
    fn table_is_bounded_and_forgets_refilled_keys() {
        let start = Instant::now();
        let mut buckets = TokenBuckets::new(1, Duration::from_secs(10), 2);
        assert!(buckets.take(start, 1));
        assert!(buckets.take(start, 2));
        assert!(!buckets.take(start, 3), "full of active keys");
        assert_eq!(buckets.len(), 2);
        assert!(buckets.take(start + Duration::from_secs(10), 3));
        assert!(buckets.len() <= 2);
    }
}
