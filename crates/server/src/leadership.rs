//! Leadership: which replica runs the engine and the cron scheduler.
//!
//! Replicas compete for a `coordination.k8s.io/v1` Lease in the service's
//! namespace (through `kube-lease-manager`). The holder runs one *term* of the
//! engine and the scheduler under a term token. As client-go's leader
//! election does, a failed renewal is retried with backoff until the renew
//! deadline (the Lease duration less the renew interval, counted from the
//! last renewal the API server accepted); only then, or when another replica
//! holds the Lease, does the term end (the token is cancelled at once).
//! [`Fenced`] wraps the cluster so that, between the loss and the
//! engine noticing, no Job is created or deleted: every such call checks the
//! term first. On shutdown the holder releases the Lease, so a follower takes
//! over within about a second instead of waiting for it to expire.
//!
//! A watch on the Lease keeps the current holder for `/api/v1/whoami` and
//! wakes followers as soon as the Lease is released.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    Cluster, ClusterError, ClusterEvent, ClusterResult, JobObservation, NodeInfo, PodObservation,
    PullJob,
};
use crate::metrics::Metrics;

/// Lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long the Lease stays valid after a renewal.
    pub duration: Duration,
    /// How often the holder renews it.
    pub renew: Duration,
}

impl LeaseTiming {
    /// How long the holder keeps retrying a failed renewal, from its last
    /// accepted one, before it steps down (client-go's `RenewDeadline`). The
    /// Lease is still valid for another renew interval then, so the term is
    /// over before another replica may take the Lease.
    pub fn renew_deadline(&self) -> Duration {
        self.duration.saturating_sub(self.renew)
    }
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// What this replica knows about leadership; shared with the HTTP layer and [`Fenced`].
#[derive(Debug)]
pub struct LeaderState {
    replica: String,
    term: Mutex<Option<CancellationToken>>,
    holder: Mutex<Option<String>>,
    leading: AtomicBool,
    metrics: Arc<Metrics>,
}

impl LeaderState {
    /// State of replica `replica`, leading nothing yet.
    pub fn new(replica: impl Into<String>, metrics: Arc<Metrics>) -> Arc<LeaderState> {
        Arc::new(LeaderState {
            replica: replica.into(),
            term: Mutex::new(None),
            holder: Mutex::new(None),
            leading: AtomicBool::new(false),
            metrics,
        })
    }

    /// A single instance that always leads (tests, no Lease).
    pub fn always(replica: impl Into<String>, metrics: Arc<Metrics>) -> Arc<LeaderState> {
        let state = LeaderState::new(replica, metrics);
        state.begin(CancellationToken::new());
        state
    }

    /// This replica's name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Whether this replica runs the engine now (its term has not ended).
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
            && lock(&self.term)
                .as_ref()
                .is_some_and(|term| !term.is_cancelled())
    }

    /// The current term's token while this replica leads (cancelled when the term ends).
    pub fn term(&self) -> Option<CancellationToken> {
        if !self.leading.load(Ordering::SeqCst) {
            return None;
        }
        lock(&self.term)
            .as_ref()
            .filter(|term| !term.is_cancelled())
            .cloned()
    }

    /// The replica holding the Lease, as last seen (`None`: nobody, or not known yet).
    pub fn leader(&self) -> Option<String> {
        if self.is_leader() {
            return Some(self.replica.clone());
        }
        lock(&self.holder).clone()
    }

    pub(crate) fn begin(&self, term: CancellationToken) {
        *lock(&self.term) = Some(term);
        self.leading.store(true, Ordering::SeqCst);
        self.metrics.leader.set(1);
    }

    pub(crate) fn end(&self) {
        self.leading.store(false, Ordering::SeqCst);
        if let Some(term) = lock(&self.term).take() {
            term.cancel();
        }
        self.metrics.leader.set(0);
    }

    fn set_holder(&self, holder: Option<String>) {
        *lock(&self.holder) = holder;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cluster as the engine of a term sees it: creates and deletes are
/// refused (as transient failures, retried later) unless this replica leads.
pub struct Fenced {
    inner: Arc<dyn Cluster>,
    state: Arc<LeaderState>,
}

impl Fenced {
    /// Wraps `inner`, checking `state` before every change.
    pub fn new(inner: Arc<dyn Cluster>, state: Arc<LeaderState>) -> Arc<Fenced> {
        Arc::new(Fenced { inner, state })
    }

    fn check(&self) -> ClusterResult<()> {
        if self.state.is_leader() {
            Ok(())
        } else {
            Err(ClusterError::Unreachable(format!(
                "replica {} does not hold the Lease; refusing to change the cluster",
                self.state.replica()
            )))
        }
    }
}

#[async_trait]
impl Cluster for Fenced {
    async fn synced(&self) {
        self.inner.synced().await;
    }
    fn nodes(&self) -> Vec<NodeInfo> {
        self.inner.nodes()
    }
    fn jobs(&self) -> Vec<JobObservation> {
        self.inner.jobs()
    }
    fn pods(&self) -> Vec<PodObservation> {
        self.inner.pods()
    }
    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.inner.subscribe()
    }
    async fn create_job(&self, job: &PullJob) -> ClusterResult<()> {
        self.check()?;
        self.inner.create_job(job).await
    }
    async fn delete_job(&self, name: &str) -> ClusterResult<()> {
        self.check()?;
        self.inner.delete_job(name).await
    }
    async fn delete_task_jobs(&self, task_id: &str) -> ClusterResult<()> {
        self.check()?;
        self.inner.delete_task_jobs(task_id).await
    }
    fn connected(&self) -> bool {
        self.inner.connected()
    }
    async fn probe(&self) -> ClusterResult<()> {
        self.inner.probe().await
    }
    async fn read_workload(
        &self,
        workload: &prewarm_api::WorkloadRef,
    ) -> ClusterResult<Option<prewarm_api::ResolvedWorkload>> {
        self.inner.read_workload(workload).await
    }
    async fn secret_exists(&self, name: &str) -> ClusterResult<bool> {
        self.inner.secret_exists(name).await
    }
    async fn remove_node_taint(&self, node: &str, key: &str, effect: &str) -> ClusterResult<bool> {
        self.check()?;
        self.inner.remove_node_taint(node, key, effect).await
    }
}

/// Why a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermEnd {
    /// Another replica holds the Lease, or a renewal failed.
    Lost,
    /// The service is stopping.
    Stopped,
}

/// The Lease competition of one replica.
pub struct Leadership {
    client: Client,
    /// When the last Lease write the API server accepted was sent.
    writes: LeaseWrites,
    api: Api<Lease>,
    namespace: String,
    name: String,
    timing: LeaseTiming,
    state: Arc<LeaderState>,
    manager: tokio::sync::Mutex<Option<LeaseManager>>,
    freed: Arc<Notify>,
}

impl Leadership {
    /// Competes for Lease `name` in `namespace` through the API server of
    /// `config`. Each Lease call is limited to the renew deadline, so a hung
    /// one cannot outlive the Lease.
    pub fn new(
        mut config: kube::Config,
        namespace: &str,
        name: &str,
        timing: LeaseTiming,
        state: Arc<LeaderState>,
    ) -> anyhow::Result<Leadership> {
        let call_timeout = timing.renew_deadline();
        config.connect_timeout = Some(call_timeout);
        config.read_timeout = Some(call_timeout);
        config.write_timeout = Some(call_timeout);
        // Failed renewals are retried here, against the renew deadline.
        config.default_retry = false;
        let writes = LeaseWrites::default();
        let client = kube::client::ClientBuilder::try_from(config)
            .context("building the Lease client")?
            .with_layer(&writes)
            .build();
        Ok(Leadership {
            api: Api::namespaced(client.clone(), namespace),
            client,
            writes,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            timing,
            state,
            manager: tokio::sync::Mutex::new(None),
            freed: Arc::new(Notify::new()),
        })
    }

    /// The shared state.
    pub fn state(&self) -> Arc<LeaderState> {
        self.state.clone()
    }

    /// The namespace of the Lease.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Another replica that holds the Lease now (not expired), if any.
    pub async fn other_holder(&self) -> anyhow::Result<Option<String>> {
        let lease = self.api.get_opt(&self.name).await?;
        Ok(lease
            .and_then(|lease| live_holder(&lease, SystemTime::now()))
            .filter(|holder| holder != self.state.replica()))
    }

    /// Follows the Lease until `stop`: keeps the holder for whoami and wakes
    /// [`acquire`](Self::acquire) when the Lease is released or expires.
    pub async fn watch(&self, stop: CancellationToken) {
        let config = watcher::Config::default().fields(&format!("metadata.name={}", self.name));
        let stream = watcher(self.api.clone(), config)
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(lease)) => {
                    let holder = live_holder(&lease, SystemTime::now());
                    if holder.is_none() {
                        self.freed.notify_one();
                    }
                    self.state.set_holder(holder);
                }
                Some(Err(err)) => tracing::debug!(error = %err, "watching the Lease"),
                None => return,
            }
        }
    }

    async fn manager(
        &self,
    ) -> kube_lease_manager::Result<tokio::sync::MappedMutexGuard<'_, LeaseManager>> {
        let mut guard = self.manager.lock().await;
        if guard.is_none() {
            let manager = LeaseManagerBuilder::new(self.client.clone(), &self.name)
                .with_namespace(&self.namespace)
                .with_identity(self.state.replica())
                .with_duration(self.timing.duration.as_secs())
                .with_grace(
                    self.timing
                        .duration
                        .saturating_sub(self.timing.renew)
                        .as_secs()
                        .max(1),
                )
                .build()
                .await?;
            *guard = Some(manager);
        }
        Ok(tokio::sync::MutexGuard::map(guard, |m| {
            m.as_mut().expect("set above")
        }))
    }

    /// Waits until this replica holds the Lease; returns the new term's token
    /// (a child of `stop`), or `None` when `stop` was cancelled first.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<CancellationToken> {
        let mut delay = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            let attempt = async {
                let manager = self.manager().await?;
                let won = manager.changed().await?;
                if won && self.writes.last().is_none_or(|w| w < started) {
                    // The Lease named this replica already (a restart, a term
                    // lost to failed renewals) and the manager took it as it
                    // was: renew it before leading, so the term counts from a
                    // write and not from a Lease that may have run out.
                    self.renew_own().await?;
                }
                anyhow::Ok(won)
            };
            tokio::select! {
                () = stop.cancelled() => return None,
                // Released or expired: look again at once. The manager caches
                // the old holder until its expiry, so a fresh one reads the Lease.
                () = self.freed.notified() => {
                    self.forget_manager().await;
                    continue;
                }
                result = attempt => match result {
                    Ok(true) => {
                        let term = stop.child_token();
                        self.state.begin(term.clone());
                        tracing::info!(replica = %self.state.replica(), lease = %self.name, "leading: running the engine and the scheduler");
                        return Some(term);
                    }
                    Ok(false) => {}
                    Err(err) => {
                        tracing::warn!(error = format!("{err:#}"), "competing for the Lease");
                        self.forget_manager().await;
                        tokio::select! {
                            () = stop.cancelled() => return None,
                            () = tokio::time::sleep(jittered(delay)) => {}
                        }
                        delay = (delay * 2).min(self.timing.renew);
                    }
                },
            }
        }
    }

    /// Renews the Lease as this replica holds it now, on condition that
    /// nobody changed it since it was read (its resourceVersion).
    async fn renew_own(&self) -> anyhow::Result<()> {
        let lease = self.api.get(&self.name).await?;
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        anyhow::ensure!(
            holder == Some(self.state.replica()),
            "the Lease is held by {holder:?} now"
        );
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": lease.metadata.resource_version },
            "spec": {
                "renewTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
                "leaseDurationSeconds": self.timing.duration.as_secs(),
            },
        });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .context("renewing this replica's Lease")?;
        tracing::info!(replica = %self.state.replica(), "the Lease named this replica already; renewed it before leading");
        Ok(())
    }

    /// Renews the Lease until it is lost or `stop` is cancelled. A failed
    /// renewal is retried with backoff and jitter until the renew deadline;
    /// the term ends (before this returns) when the deadline passes without
    /// an accepted renewal, or when another replica holds the Lease.
    pub async fn hold(&self, stop: &CancellationToken) -> TermEnd {
        let deadline = self.timing.renew_deadline();
        let overdue = self.renewal_overdue(Instant::now());
        tokio::pin!(overdue);
        // Renewals failed in a row, and the last accepted write when the last one failed.
        let mut failures = 0u32;
        let mut failed_after = None;
        loop {
            let renewing = async {
                let manager = self.manager().await?;
                manager.changed().await
            };
            let result = tokio::select! {
                () = stop.cancelled() => return TermEnd::Stopped,
                () = &mut overdue => break,
                result = renewing => result,
            };
            match result {
                Ok(true) => continue,
                Ok(false) => {
                    tracing::warn!(replica = %self.state.replica(), "another replica holds the Lease; engine stopped");
                    self.state.end();
                    return TermEnd::Lost;
                }
                Err(err) => {
                    let last = self.writes.last();
                    if last != failed_after {
                        // Renewed since the last failure: a fresh run of failures.
                        failures = 0;
                    }
                    failed_after = last;
                    failures += 1;
                    let wait = jittered(retry_step(failures, self.timing.renew));
                    tracing::warn!(
                        error = %err,
                        failures,
                        retry_in_ms = wait.as_millis() as u64,
                        renew_deadline_secs = deadline.as_secs(),
                        "renewing the Lease failed; retrying until the renew deadline"
                    );
                    tokio::select! {
                        () = stop.cancelled() => return TermEnd::Stopped,
                        () = &mut overdue => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        tracing::warn!(
            renew_deadline_secs = deadline.as_secs(),
            "the Lease was not renewed within the renew deadline; engine stopped"
        );
        // Fenced before anything else; the manager still believes it leads: start afresh next time.
        self.state.end();
        self.forget_manager().await;
        TermEnd::Lost
    }

    /// Returns once the renew deadline has passed since the last Lease write
    /// the API server accepted (or since `since`, if that is later).
    async fn renewal_overdue(&self, since: Instant) {
        loop {
            let last = self.writes.last().map_or(since, |w| w.max(since));
            let due = last + self.timing.renew_deadline();
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }

    /// Ends the term (if any) and releases the Lease so a follower takes over now.
    pub async fn release(&self) {
        self.state.end();
        let guard = self.manager.lock().await;
        if let Some(manager) = guard.as_ref() {
            // Worth waiting for as long as a renewal may take: otherwise followers wait out the Lease.
            let limit = self.timing.duration.saturating_sub(self.timing.renew);
            match tokio::time::timeout(limit, manager.release()).await {
                Ok(Ok(())) => tracing::info!(replica = %self.state.replica(), "released the Lease"),
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "releasing the Lease failed; it expires by itself")
                }
                Err(_) => tracing::warn!("releasing the Lease timed out; it expires by itself"),
            }
        }
    }

    /// Ends the current term without releasing (the engine failed).
    pub fn end_term(&self) {
        self.state.end();
    }

    async fn forget_manager(&self) {
        *self.manager.lock().await = None;
    }
}

/// The holder of `lease` if its renewal has not expired at `now`.
fn live_holder(lease: &Lease, now: SystemTime) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let seconds = u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0);
    let renewed = SystemTime::UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(renewed.0.as_nanosecond()).unwrap_or(0));
    (renewed + Duration::from_secs(seconds) > now).then_some(holder)
}

/// The wait before retry number `failures` of a renewal: 200 ms doubling,
/// at most the renew interval (jitter is added by the caller).
fn retry_step(failures: u32, renew: Duration) -> Duration {
    Duration::from_millis(200)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(renew)
}

fn jittered(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}

/// A tower layer for the Lease client that notes when the last Lease write
/// the API server accepted was sent. The renewal time a write carries is
/// taken just before it is sent, so the Lease is valid for at least its
/// duration from then: the renew deadline counts from this instant.
#[derive(Clone, Default)]
pub struct LeaseWrites(Arc<Mutex<Option<Instant>>>);

impl LeaseWrites {
    /// When the last accepted write was sent.
    pub fn last(&self) -> Option<Instant> {
        *lock(&self.0)
    }

    fn accepted(&self, sent: Instant) {
        let mut last = lock(&self.0);
        if last.is_none_or(|l| l < sent) {
            *last = Some(sent);
        }
    }
}

impl<S> tower::Layer<S> for LeaseWrites {
    type Service = NotedLeaseWrites<S>;
    fn layer(&self, inner: S) -> Self::Service {
        NotedLeaseWrites {
            inner,
            writes: self.clone(),
        }
    }
}

/// The service made by [`LeaseWrites`].
pub struct NotedLeaseWrites<S> {
    inner: S,
    writes: LeaseWrites,
}

impl<S, ReqB, ResB> tower::Service<http::Request<ReqB>> for NotedLeaseWrites<S>
where
    S: tower::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let write = matches!(
            *req.method(),
            http::Method::PATCH | http::Method::PUT | http::Method::POST
        );
        let sent = Instant::now();
        let writes = self.writes.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if write && res.as_ref().is_ok_and(|r| r.status().is_success()) {
                writes.accepted(sent);
            }
            res
        })
    }
}

/// The message a single-instance store gives when another instance leads.
pub fn single_instance_message(holder: &str, namespace: &str) -> String {
    format!(
        "another prewarm instance ({holder}) runs the engine in namespace {namespace}; several replicas need --store redis"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fake::FakeCluster;
    use crate::testing::pull_job as job;

    #[tokio::test]
    async fn a_replica_without_a_term_changes_nothing_in_the_cluster() {
        let inner = Arc::new(FakeCluster::new());
        let state = LeaderState::new("r1", Arc::new(Metrics::new()));
        let fenced = Fenced::new(inner.clone(), state.clone());

        let err = fenced.create_job(&job("n1")).await.unwrap_err();
        assert!(matches!(err, ClusterError::Unreachable(_)), "{err}");
        assert!(fenced
            .delete_task_jobs("task-20260101-abcdef")
            .await
            .is_err());
        assert_eq!(inner.create_calls(), 0);

        let term = CancellationToken::new();
        state.begin(term.clone());
        assert!(state.is_leader());
        assert_eq!(state.leader().as_deref(), Some("r1"));
        fenced.create_job(&job("n1")).await.unwrap();
        assert_eq!(inner.create_calls(), 1);

        // A cancelled term fences at once, before anyone calls `end`.
        term.cancel();
        assert!(fenced.create_job(&job("n2")).await.is_err());
        assert_eq!(inner.create_calls(), 1);
        state.end();
        assert!(!state.is_leader());
    }

    #[tokio::test(start_paused = true)]
    async fn only_accepted_lease_writes_move_the_renew_deadline() {
        use tower::{Layer, Service, ServiceExt};
        let writes = LeaseWrites::default();
        let mut client = writes.layer(tower::service_fn(|req: http::Request<()>| async move {
            let code = if req.uri().path().ends_with("/refused") {
                500
            } else {
                200
            };
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(code).body(()).unwrap(),
            )
        }));
        let mut call = async |method: http::Method, path: &str| {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            client.ready().await.unwrap().call(req).await.unwrap();
        };
        call(http::Method::GET, "/lease").await;
        assert_eq!(writes.last(), None, "a read renews nothing");
        let renewed = Instant::now();
        call(http::Method::PATCH, "/lease").await;
        assert_eq!(writes.last(), Some(renewed));
        tokio::time::advance(Duration::from_secs(4)).await;
        call(http::Method::PATCH, "/refused").await;
        assert_eq!(
            writes.last(),
            Some(renewed),
            "a refused write renews nothing"
        );
        assert_eq!(
            retry_step(1, Duration::from_secs(5)),
            Duration::from_millis(200)
        );
        assert_eq!(
            retry_step(3, Duration::from_secs(5)),
            Duration::from_millis(800)
        );
        assert_eq!(
            retry_step(9, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        let timing = LeaseTiming::default();
        assert_eq!(timing.renew_deadline(), Duration::from_secs(10));
    }

    #[test]
    fn only_an_unexpired_holder_counts() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        let now = SystemTime::now();
        let lease = |holder: Option<&str>, renewed_secs_ago: u64| Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(
                    k8s_openapi::jiff::Timestamp::try_from(
                        now - Duration::from_secs(renewed_secs_ago),
                    )
                    .unwrap(),
                )),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert_eq!(live_holder(&lease(Some("a"), 3), now).as_deref(), Some("a"));
        assert_eq!(live_holder(&lease(Some("a"), 16), now), None);
        assert_eq!(live_holder(&lease(None, 1), now), None);
        assert!(single_instance_message("a", "ns").contains("(a) runs the engine in namespace ns"));
    }
}
