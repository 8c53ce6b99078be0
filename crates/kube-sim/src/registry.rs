//! Registries with a pull limit, like Docker Hub's: at most `limit` pulls
//! begun in any `window` (rolling, real time); past that the registry answers
//! `429 Too Many Requests` (`toomanyrequests`) until the oldest pull leaves the
//! window. Refused pulls are not counted. Every begun or refused pull of a
//! limited registry is logged (`registry pull` / `registry refused pull`) with
//! its time in Unix milliseconds, so tests can measure what a registry saw.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// One limited registry as the scenario gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryLimit {
    /// Registry host as the kubelet normalizes it (`docker.io` for bare names).
    pub host: String,
    /// Pulls answered per window.
    pub limit: u32,
    /// Length of the rolling window (real time, not scaled by `timeScale`).
    pub window: Duration,
}

/// What a limited registry says to a pull that begins now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The registry has no limit, or the pull is within it.
    Served,
    /// Over the limit: `429 Too Many Requests`.
    TooManyRequests,
}

/// The limited registries of a scenario and the pulls each has served,
/// shared by every node (clones share the counts).
#[derive(Debug, Clone, Default)]
pub struct Registries {
    limits: Vec<RegistryLimit>,
    served: Arc<Mutex<HashMap<String, VecDeque<Timestamp>>>>,
}

impl Registries {
    /// Registries with these limits, nothing served yet.
    pub fn new(limits: Vec<RegistryLimit>) -> Registries {
        Registries {
            limits,
            served: Arc::default(),
        }
    }

    /// Answers a pull of `image` (from `host`) by `node` beginning at `now`, counting it if served.
    pub fn begin_pull(&self, host: &str, node: &str, image: &str, now: Timestamp) -> Answer {
        let Some(limit) = self.limits.iter().find(|l| l.host == host) else {
            return Answer::Served;
        };
        let mut served = self.served.lock().expect("registry counts lock");
        let log = served.entry(limit.host.clone()).or_default();
        while log.front().is_some_and(|&t| t + limit.window <= now) {
            log.pop_front();
        }
        let at_ms = now.as_millisecond();
        if log.len() >= limit.limit as usize {
            tracing::info!(
                registry = %host,
                node = %node,
                image = %image,
                at_ms,
                "registry refused pull (toomanyrequests)"
            );
            return Answer::TooManyRequests;
        }
        log.push_back(now);
        tracing::info!(registry = %host, node = %node, image = %image, at_ms, "registry pull");
        Answer::Served
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_limit_per_rolling_window_and_ignores_other_hosts() {
        let r = Registries::new(vec![RegistryLimit {
            host: "docker.io".into(),
            limit: 2,
            window: Duration::from_secs(60),
        }]);
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(r.begin_pull("docker.io", "n0", "a", at(0)), Answer::Served);
        assert_eq!(r.begin_pull("docker.io", "n1", "a", at(10)), Answer::Served);
        assert_eq!(
            r.begin_pull("docker.io", "n2", "a", at(20)),
            Answer::TooManyRequests
        );
        assert_eq!(r.begin_pull("ghcr.io", "n2", "a", at(20)), Answer::Served);
        // The refused pull did not count: one slot is free once the first pull is 60 s old.
        assert_eq!(
            r.begin_pull("docker.io", "n2", "a", at(59)),
            Answer::TooManyRequests
        );
        assert_eq!(r.begin_pull("docker.io", "n2", "a", at(60)), Answer::Served);
        assert_eq!(
            r.begin_pull("docker.io", "n3", "a", at(61)),
            Answer::TooManyRequests
        );
        assert_eq!(r.begin_pull("docker.io", "n3", "a", at(70)), Answer::Served);
    }
}
