//! Registry pacing: how many pulls each registry host gets, and when.
//!
//! A rate `N/DURATION` (`docker.io=100/6h`) is a token bucket of `N` tokens per
//! registry host. A needed (node, image) pull takes a token when its node's Job
//! is created, and the token comes back one `DURATION` after that node's
//! attempt ended. So the registry never sees more than `N` pulls begin in any
//! `DURATION` — the rolling-window rule registries such as Docker Hub apply —
//! however late the kubelet begins a pull after its Job was created, and
//! pulls still run at `N` per `DURATION` when the window is long.
//!
//! A pull the registry refused for its rate limit (`429`, `toomanyrequests`)
//! closes that host for everyone for at least [`THROTTLE_BACKOFF`], growing
//! exponentially with jitter while refusals go on, and lowers the throttled
//! task's bucket for that host for the rest of the task.
//!
//! Time is the monotonic clock (`tokio::time::Instant`), handed in by the caller.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// Shortest wait after a registry refused a pull for its rate limit.
pub const THROTTLE_BACKOFF: Duration = Duration::from_secs(60);
/// Longest wait after repeated refusals.
pub const THROTTLE_BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);

/// `N` pulls per `per`, as given by `N/DURATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryRate {
    /// Pulls per period (at least 1).
    pub pulls: u32,
    /// The period (at least one second).
    pub per: Duration,
}

impl RegistryRate {
    /// Parses `N/DURATION`: `100/6h`, `600/1m`, `20/30s`.
    pub fn parse(s: &str) -> Result<RegistryRate, String> {
        let bad =
            |why: &str| format!("expected N/DURATION such as 100/6h or 600/1m, got {s:?}: {why}");
        let (n, per) = s.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let pulls: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        if pulls == 0 {
            return Err(bad("N must be at least 1"));
        }
        let per = humantime::parse_duration(per.trim()).map_err(|e| bad(&e.to_string()))?;
        if per < Duration::from_secs(1) {
            return Err(bad("DURATION must be at least 1s"));
        }
        Ok(RegistryRate { pulls, per })
    }

    /// Pulls per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.pulls) / self.per.as_secs_f64()
    }
}

impl fmt::Display for RegistryRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pulls, humantime::format_duration(self.per))
    }
}

/// A registry host with its rate, as given by `--registry-pull-rate HOST=N/DURATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRate {
    /// Registry host as references normalize it (`docker.io`, `ghcr.io`, `registry:5000`).
    pub host: String,
    /// Its rate.
    pub rate: RegistryRate,
}

impl std::str::FromStr for HostRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, rate) = s.split_once('=').ok_or_else(|| {
            format!("expected HOST=N/DURATION such as docker.io=100/6h, got {s:?}")
        })?;
        let host = normalize_host(host)?;
        Ok(HostRate {
            host,
            rate: RegistryRate::parse(rate)?,
        })
    }
}

/// A registry host as the kubelet counts it: lower case, `docker.io` for the
/// legacy Docker Hub names. Rejects empty hosts and hosts with a path.
pub fn normalize_host(host: &str) -> Result<String, String> {
    let host = host.trim().to_ascii_lowercase();
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(format!(
            "expected a registry host such as docker.io or ghcr.io, got {host:?}"
        ));
    }
    Ok(match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    })
}

/// Whether a kubelet pull failure says the registry refused it for its rate limit.
pub fn is_rate_limited(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("toomanyrequests") || m.contains("429 too many requests")
}

/// Pull tokens of one registry host: `capacity` per `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Tokens in all.
    capacity: u32,
    /// How long after its pull ended a token comes back.
    window: Duration,
    /// Tokens taken by attempts still running.
    held: u32,
    /// When the tokens of ended attempts come back, earliest first.
    returning: VecDeque<Instant>,
}

impl Bucket {
    /// A full bucket of `rate`.
    pub fn new(rate: RegistryRate) -> Bucket {
        Bucket {
            capacity: rate.pulls,
            window: rate.per,
            held: 0,
            returning: VecDeque::new(),
        }
    }

    fn settle(&mut self, now: Instant) {
        while self.returning.front().is_some_and(|&t| t <= now) {
            self.returning.pop_front();
        }
    }

    /// Tokens free at `now`.
    pub fn available(&mut self, now: Instant) -> u32 {
        self.settle(now);
        self.capacity
            .saturating_sub(self.held + self.returning.len() as u32)
    }

    /// Takes a token for an attempt starting now (call only when `available` > 0).
    pub fn take(&mut self) {
        self.held += 1;
    }

    /// The attempt holding a token ended at `now`: the token comes back one window later.
    pub fn release(&mut self, now: Instant) {
        self.held = self.held.saturating_sub(1);
        self.returning.push_back(now + self.window);
    }

    /// When `needed` more tokens will have been free, at the earliest, counting
    /// the tokens held now as coming back one window after `now`.
    pub fn time_for(&mut self, needed: u64, now: Instant) -> Duration {
        let free = u64::from(self.available(now));
        if needed <= free {
            return Duration::ZERO;
        }
        let capacity = u64::from(self.capacity.max(1));
        let short = needed - free;
        // Tokens come back in rounds of one window; the first round is what is out now.
        let mut out: Vec<Instant> = self.returning.iter().copied().collect();
        out.extend((0..self.held).map(|_| now + self.window));
        out.sort();
        if short <= out.len() as u64 {
            return out[short as usize - 1].saturating_duration_since(now);
        }
        let last = out.last().copied().unwrap_or(now);
        let rounds = (short - out.len() as u64).div_ceil(capacity);
        last.saturating_duration_since(now) + self.window * rounds as u32
    }

    /// The same bucket with half the tokens (at least one), for the rest of a
    /// task after its registry refused it. Tokens out now stay out.
    pub fn halved(&self, now: Instant) -> Bucket {
        let mut lowered = self.clone();
        lowered.capacity = (self.capacity / 2).max(1);
        lowered.held = 0;
        lowered
            .returning
            .extend((0..self.held).map(|_| now + self.window));
        lowered.returning.make_contiguous().sort();
        lowered
    }

    /// Tokens in all.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

/// Which bucket a pull draws from: a task's own (its `registryPullRate`, or
/// lowered after a refusal) or the service's (`--registry-pull-rate`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketKey {
    /// The task owning the bucket; `None` for the service-wide one.
    pub task: Option<String>,
    /// Registry host.
    pub host: String,
}

/// A registry host that refused pulls: closed until `until`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Backoff {
    until: Instant,
    refusals: u32,
}

/// Whether a node may start now, as far as its registries go.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    /// Every registry has a token (or no limit): take these buckets' tokens.
    Open(Vec<BucketKey>),
    /// Some registry is out of tokens or backing off.
    Closed,
}

/// Every bucket and backoff of the engine.
#[derive(Debug, Default)]
pub struct Pacing {
    /// `--registry-pull-rate`, by host.
    rates: BTreeMap<String, RegistryRate>,
    buckets: HashMap<BucketKey, Bucket>,
    backoffs: HashMap<String, Backoff>,
}

impl Pacing {
    /// Pacing with the service-wide rates.
    pub fn new(rates: &[HostRate]) -> Pacing {
        Pacing {
            rates: rates.iter().map(|r| (r.host.clone(), r.rate)).collect(),
            ..Pacing::default()
        }
    }

    /// Whether nothing is paced for a task with `overrides`: no service-wide
    /// rate, no backoff, no bucket (the window's fast path).
    pub fn is_idle(&self, overrides: &BTreeMap<String, RegistryRate>) -> bool {
        self.rates.is_empty()
            && overrides.is_empty()
            && self.backoffs.is_empty()
            && self.buckets.is_empty()
    }

    /// The bucket `task` draws from for `host`, creating it on first use; `None` if unpaced.
    fn key(
        &mut self,
        task: &str,
        overrides: &BTreeMap<String, RegistryRate>,
        host: &str,
    ) -> Option<BucketKey> {
        let own = BucketKey {
            task: Some(task.to_owned()),
            host: host.to_owned(),
        };
        if self.buckets.contains_key(&own) {
            return Some(own);
        }
        if let Some(rate) = overrides.get(host) {
            self.buckets.insert(own.clone(), Bucket::new(*rate));
            return Some(own);
        }
        let rate = *self.rates.get(host)?;
        let shared = BucketKey {
            task: None,
            host: host.to_owned(),
        };
        self.buckets
            .entry(shared.clone())
            .or_insert_with(|| Bucket::new(rate));
        Some(shared)
    }

    /// Whether a node of `task` pulling from `hosts` may start at `now`.
    pub fn gate(
        &mut self,
        task: &str,
        overrides: &BTreeMap<String, RegistryRate>,
        hosts: &[String],
        now: Instant,
    ) -> Gate {
        let mut keys = Vec::new();
        for host in hosts {
            if let Some(b) = self.backoffs.get(host) {
                if b.until > now {
                    return Gate::Closed;
                }
            }
            if let Some(key) = self.key(task, overrides, host) {
                let bucket = self.buckets.get_mut(&key).expect("bucket just made");
                if bucket.available(now) == 0 {
                    return Gate::Closed;
                }
                keys.push(key);
            }
        }
        Gate::Open(keys)
    }

    /// Takes one token from each bucket of an open gate.
    pub fn take(&mut self, keys: &[BucketKey]) {
        for key in keys {
            if let Some(b) = self.buckets.get_mut(key) {
                b.take();
            }
        }
    }

    /// The attempt that took tokens from `keys` ended at `now`.
    pub fn release(&mut self, keys: &[BucketKey], now: Instant) {
        for key in keys {
            if let Some(b) = self.buckets.get_mut(key) {
                b.release(now);
            }
        }
    }

    /// `host` refused a pull of `task` for its rate limit at `now`. Unless a
    /// backoff is already running (refusals of one burst count once), the host
    /// closes for `THROTTLE_BACKOFF × 2^(refusals-1)` (capped) stretched by
    /// `jitter` (0..1 → up to +50 %), and the task's bucket is halved — or,
    /// for a host without a rate, becomes `in_flight` (the task's pulls from it
    /// that were running, the refused one included) per `THROTTLE_BACKOFF`,
    /// instead of all at once. Returns the wait when a new backoff began.
    pub fn throttled(
        &mut self,
        task: &str,
        overrides: &BTreeMap<String, RegistryRate>,
        host: &str,
        in_flight: u32,
        jitter: f64,
        now: Instant,
    ) -> Option<Duration> {
        let previous = self.backoffs.get(host).copied();
        if previous.is_some_and(|b| b.until > now) {
            return None;
        }
        let refusals = previous.map_or(1, |b| b.refusals + 1);
        let step = THROTTLE_BACKOFF
            .saturating_mul(1 << (refusals - 1).min(8))
            .min(THROTTLE_BACKOFF_MAX);
        let wait = step.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0));
        self.backoffs.insert(
            host.to_owned(),
            Backoff {
                until: now + wait,
                refusals,
            },
        );
        let own = BucketKey {
            task: Some(task.to_owned()),
            host: host.to_owned(),
        };
        let lowered = match self.key(task, overrides, host) {
            Some(key) => self.buckets[&key].halved(now),
            None => Bucket::new(RegistryRate {
                pulls: in_flight.max(1),
                per: THROTTLE_BACKOFF,
            }),
        };
        self.buckets.insert(own, lowered);
        Some(wait)
    }

    /// A pull from `host` went through: later refusals start the backoff again at its shortest.
    pub fn served(&mut self, host: &str, now: Instant) {
        if self.backoffs.get(host).is_some_and(|b| b.until <= now) {
            self.backoffs.remove(host);
        }
    }

    /// When `needed` more pulls of `task` from `host` can have begun, from `now`.
    pub fn time_for(
        &mut self,
        task: &str,
        overrides: &BTreeMap<String, RegistryRate>,
        host: &str,
        needed: u64,
        now: Instant,
    ) -> Duration {
        let backoff = self
            .backoffs
            .get(host)
            .map_or(Duration::ZERO, |b| b.until.saturating_duration_since(now));
        let tokens = match self.key(task, overrides, host) {
            Some(key) => self
                .buckets
                .get_mut(&key)
                .expect("bucket just made")
                .time_for(needed, now),
            None => Duration::ZERO,
        };
        backoff.max(tokens)
    }

    /// The task ended: its own buckets go.
    pub fn task_ended(&mut self, task: &str) {
        self.buckets.retain(|k, _| k.task.as_deref() != Some(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> RegistryRate {
        RegistryRate::parse(s).unwrap()
    }

    #[test]
    fn rates_parse_and_bad_ones_say_why() {
        assert_eq!(
            rate("100/6h"),
            RegistryRate {
                pulls: 100,
                per: Duration::from_secs(6 * 3600)
            }
        );
        assert_eq!(rate(" 600/1m ").per, Duration::from_secs(60));
        assert_eq!(rate("20/30s").to_string(), "20/30s");
        for bad in ["100", "0/1m", "x/1m", "10/", "10/0s", "10/500ms", "-1/1m"] {
            let e = RegistryRate::parse(bad).unwrap_err();
            assert!(e.contains("N/DURATION"), "{bad}: {e}");
        }
        let h: HostRate = "Index.Docker.io=100/6h".parse().unwrap();
        assert_eq!(h.host, "docker.io");
        assert!("ghcr.io/org=1/1m".parse::<HostRate>().is_err());
        assert!("=1/1m".parse::<HostRate>().is_err());
        assert!("ghcr.io".parse::<HostRate>().is_err());
    }

    #[test]
    fn rate_limit_messages_are_recognised() {
        assert!(is_rate_limited(
            "failed to resolve reference \"docker.io/library/nginx:1\": pulling from host \
             registry-1.docker.io failed with status code [manifests 1]: 429 Too Many Requests - \
             Server message: toomanyrequests: You have reached your pull rate limit."
        ));
        assert!(is_rate_limited("toomanyrequests: Rate exceeded"));
        assert!(!is_rate_limited("dial tcp 10.96.0.10:443: i/o timeout"));
        assert!(!is_rate_limited("manifest unknown"));
    }

    #[test]
    fn a_token_comes_back_one_window_after_its_pull_ended() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b = Bucket::new(rate("2/60s"));
        assert_eq!(b.available(at(0)), 2);
        b.take();
        b.take();
        assert_eq!(b.available(at(0)), 0);
        b.release(at(5));
        assert_eq!(
            b.available(at(64)),
            0,
            "held until 60 s after the pull ended"
        );
        assert_eq!(b.available(at(65)), 1);
        b.release(at(70));
        assert_eq!(b.available(at(129)), 1);
        assert_eq!(b.available(at(130)), 2);
    }

    #[test]
    fn time_for_counts_whole_windows() {
        let t0 = Instant::now();
        let mut b = Bucket::new(rate("10/60s"));
        assert_eq!(b.time_for(10, t0), Duration::ZERO);
        for _ in 0..10 {
            b.take();
        }
        // The 10 out come back 60 s after they end (taken as now), then 10 per window.
        assert_eq!(b.time_for(1, t0), Duration::from_secs(60));
        assert_eq!(b.time_for(10, t0), Duration::from_secs(60));
        assert_eq!(b.time_for(11, t0), Duration::from_secs(120));
        assert_eq!(b.time_for(30, t0), Duration::from_secs(180));
    }

    fn open(g: Gate) -> Vec<BucketKey> {
        match g {
            Gate::Open(keys) => keys,
            Gate::Closed => panic!("gate closed"),
        }
    }

    #[test]
    fn service_buckets_are_shared_and_task_rates_are_the_tasks_own() {
        let now = Instant::now();
        let mut p = Pacing::new(&["docker.io=1/1m".parse().unwrap()]);
        let none = BTreeMap::new();
        let hub = vec!["docker.io".to_owned()];
        let ghcr = vec!["ghcr.io".to_owned()];
        assert!(!p.is_idle(&none));
        let keys = open(p.gate("a", &none, &hub, now));
        p.take(&keys);
        assert_eq!(
            p.gate("b", &none, &hub, now),
            Gate::Closed,
            "one bucket for both tasks"
        );
        assert_eq!(
            open(p.gate("b", &none, &ghcr, now)),
            vec![],
            "ghcr.io is not paced"
        );
        let own: BTreeMap<String, RegistryRate> = [("docker.io".to_owned(), rate("5/1m"))].into();
        let keys = open(p.gate("c", &own, &hub, now));
        assert_eq!(keys[0].task.as_deref(), Some("c"));
        p.task_ended("c");
        assert!(!p.buckets.keys().any(|k| k.task.is_some()));
        assert!(Pacing::new(&[]).is_idle(&none));
    }

    #[test]
    fn refusal_closes_the_host_then_lowers_the_tasks_bucket() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = Pacing::new(&["docker.io=8/1m".parse().unwrap()]);
        let none = BTreeMap::new();
        let hub = vec!["docker.io".to_owned()];
        let keys = open(p.gate("a", &none, &hub, at(0)));
        p.take(&keys);
        let wait = p.throttled("a", &none, "docker.io", 1, 0.0, at(1)).unwrap();
        assert_eq!(wait, THROTTLE_BACKOFF);
        assert_eq!(
            p.throttled("a", &none, "docker.io", 1, 0.0, at(2)),
            None,
            "same burst"
        );
        assert_eq!(
            p.gate("a", &none, &hub, at(60)),
            Gate::Closed,
            "backing off"
        );
        assert_eq!(
            p.gate("b", &none, &hub, at(60)),
            Gate::Closed,
            "for every task"
        );
        let keys = open(p.gate("a", &none, &hub, at(61)));
        assert_eq!(
            keys[0].task.as_deref(),
            Some("a"),
            "the task's own, lowered bucket"
        );
        assert_eq!(p.buckets[&keys[0]].capacity(), 4);
        // Another refusal after the backoff: twice as long, up to +50 % jitter.
        let wait = p
            .throttled("a", &none, "docker.io", 1, 1.0, at(70))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(180));
        p.served("docker.io", at(300));
        assert!(p.backoffs.is_empty());
        // A host without a rate gets what was in flight per backoff period.
        p.throttled("a", &none, "ghcr.io", 10, 0.0, at(300))
            .unwrap();
        let key = BucketKey {
            task: Some("a".into()),
            host: "ghcr.io".into(),
        };
        assert_eq!(p.buckets[&key].capacity(), 10);
        assert!(p.time_for("a", &none, "ghcr.io", 1, at(300)) >= THROTTLE_BACKOFF);
    }
}
