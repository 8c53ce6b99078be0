//! Per-caller token buckets: each caller (token name, or client address when
//! authentication is off) may make `burst` requests at once and `rps` a second
//! on average. Time comes from the injected `Clock`, so tests step it by hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::Clock;

/// Most callers tracked at once; beyond it, buckets that have refilled are dropped.
const MAX_BUCKETS: usize = 10_000;

/// Rate and burst of one limit; `rps == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Sustained requests per second.
    pub rps: f64,
    /// Requests allowed at once (bucket size).
    pub burst: u32,
}

impl Limit {
    /// Whether the limit applies at all.
    pub fn enabled(&self) -> bool {
        self.rps > 0.0 && self.burst > 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

/// Token buckets of one limit, keyed by caller.
pub struct RateLimiter {
    limit: Limit,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter of `limit` reading time from `clock`.
    pub fn new(limit: Limit, clock: Arc<dyn Clock>) -> RateLimiter {
        RateLimiter {
            limit,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if !self.limit.enabled() {
            return Ok(());
        }
        let now = self.clock.now();
        let burst = f64::from(self.limit.burst);
        let rps = self.limit.rps;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            buckets.retain(|_, b| refill(b, now, rps, burst) < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = refill(bucket, now, rps, burst);
        *bucket = Bucket { tokens, at: now };
        if tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / rps))
        }
    }
}

fn refill(b: &Bucket, now: DateTime<Utc>, rps: f64, burst: f64) -> f64 {
    let secs = (now - b.at).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6;
    (b.tokens + secs * rps).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(rps: f64, burst: u32) -> (RateLimiter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new("2024-01-16T10:00:00Z".parse().unwrap()));
        (RateLimiter::new(Limit { rps, burst }, clock.clone()), clock)
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let (rl, clock) = limiter(2.0, 3);
        for _ in 0..3 {
            rl.check("alice").unwrap();
        }
        let wait = rl.check("alice").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another caller has its own bucket.
        rl.check("bob").unwrap();
        clock.advance(Duration::from_millis(500));
        rl.check("alice").unwrap();
        assert!(rl.check("alice").is_err());
        // A long pause refills only up to the burst.
        clock.advance(Duration::from_secs(60));
        for _ in 0..3 {
            rl.check("alice").unwrap();
        }
        assert!(rl.check("alice").is_err());
    }

    #[test]
    fn zero_turns_it_off() {
        let (rl, _) = limiter(0.0, 100);
        for _ in 0..1000 {
            rl.check("x").unwrap();
        }
    }
}
