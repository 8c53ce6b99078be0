//! The reconciler that turns tasks into pull Jobs and Job/Pod states into
//! task progress.
//!
//! One loop owns every running task. It wakes on cluster events (from the
//! shared watches), on `EngineHandle::wake` (a task was created or
//! cancelled) and on a short tick (retry delays, timeouts, coalesced
//! writes). It is level-triggered: after a restart or a lagging event
//! stream it re-reads the cluster snapshots and reaches the same decisions.
//! Node outcomes are written to the store before their Jobs are deleted.
//!
//! The loop and its state live here; each part of a pass has its own file:
//! - `store_check`: cancellations, new and orphaned tasks from the store, with backoff;
//! - `recovery`: taking up running tasks and their live Jobs, `Unrecoverable` ends;
//! - `cluster_events`: watch events, relists and the periodic resync applied to the runs;
//! - `window`: starting tasks and filling each task's window within the global cap,
//!   with registry pull tokens (`domain::pacing`);
//! - `job_calls`: Job creations and deletions in the background, create retries;
//! - `timeouts`: pull and task timeouts on the monotonic clock;
//! - `writes`: coalesced progress writes, ended tasks, records before deletions;
//! - `speeds`: learned node speeds (start order, ETAs), written in batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prewarm_api::Task;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster::{Cluster, JobObservation};
use crate::domain::node_speed::NodeSpeed;
use crate::domain::pacing::{HostRate, Pacing};
pub use crate::domain::selection::select_nodes;
use crate::domain::selection::DiskMargin;
use crate::metrics::Metrics;
use crate::progress::ProgressHub;
use crate::store::{MemoryStore, NodeSpeedStore, TaskStore};
use crate::webhook::Webhooks;

mod cluster_events;
mod job_calls;
pub mod keep_warm;
mod pacing;
mod recovery;
pub mod scheduler;
mod speeds;
mod store_check;
pub mod submit;
mod task_run;
mod timeouts;
mod window;
mod writes;

use job_calls::JobCalls;
pub use recovery::UNRECOVERABLE_REASON;
use store_check::StoreChecks;
pub use task_run::node_of;
use task_run::TaskRun;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Namespace of the pull Jobs.
    pub namespace: String,
    /// Image carrying the static no-op binary.
    pub helper_image: String,
    /// Cluster-wide cap of nodes pulling at once, across tasks.
    pub max_concurrent_nodes: usize,
    /// Per-node limit for one attempt's pulls.
    pub pull_timeout: Duration,
    /// Room kept free beyond a node's new images (disk preflight).
    pub disk_margin: DiskMargin,
    /// `--registry-pull-rate`: registry hosts whose pulls are paced.
    pub registry_pull_rates: Vec<HostRate>,
    /// `--retention`: a node gone from the cluster this long loses its learned speed.
    pub node_retention: Duration,
}

/// How often the loop wakes without events.
const TICK: Duration = Duration::from_millis(200);
/// How often owed webhooks are looked for in the store (after a restart, a full queue).
const WEBHOOK_RESUME_EVERY: Duration = Duration::from_secs(60);

/// A cheap handle for the API: tells the engine something changed.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    notify: Arc<Notify>,
    disk_margin: DiskMargin,
    registry_pull_rates: Arc<[HostRate]>,
}

impl EngineHandle {
    /// Tells the engine a task was created or cancelled.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Whether waking `self` wakes the engine `other` belongs to.
    #[cfg(test)]
    pub(crate) fn wakes_the_same(&self, other: &EngineHandle) -> bool {
        Arc::ptr_eq(&self.notify, &other.notify)
    }

    /// The disk margin the engine selects nodes with (for plans).
    pub fn disk_margin(&self) -> DiskMargin {
        self.disk_margin
    }

    /// `--registry-pull-rate`: the registry hosts the engine paces (for plans).
    pub fn registry_pull_rates(&self) -> &[HostRate] {
        &self.registry_pull_rates
    }
}

/// The reconciler.
pub struct Engine {
    /// Where tasks and their node records live.
    store: Arc<dyn TaskStore>,
    /// The watch-fed caches the engine reads (Jobs, Pods, Nodes).
    cluster: Arc<dyn Cluster>,
    /// Wall clock for timestamps users read; durations use `Instant`.
    clock: Arc<dyn Clock>,
    /// Settings.
    config: EngineConfig,
    /// Woken by `EngineHandle::wake`.
    notify: Arc<Notify>,
    /// Running tasks by id.
    runs: HashMap<String, TaskRun>,
    /// Pending tasks in admission order, as of the last store check.
    pending: Vec<Task>,
    /// Kubernetes calls in the background, owned and drained on shutdown.
    calls: JobCalls,
    /// When the store is asked next, and how often it failed in a row.
    store_checks: StoreChecks,
    /// When owed webhooks are looked for next.
    next_webhook_resume: Instant,
    /// When the caches are replayed next (`cluster_events::RESYNC_EVERY`).
    next_resync: Instant,
    /// When progress views were last written.
    last_view_flush: Instant,
    /// Shutting down: start nothing new.
    stopping: bool,
    /// Task, node and pull figures.
    metrics: Arc<Metrics>,
    /// Live readers of task views.
    progress: Arc<ProgressHub>,
    /// Deliveries of ended tasks.
    webhooks: Arc<Webhooks>,
    /// Where learned node speeds are kept across tasks and restarts.
    node_speeds: Arc<dyn NodeSpeedStore>,
    /// The learned node speeds, by node name (loaded once, then kept current here).
    speeds: HashMap<String, NodeSpeed>,
    /// Whether `speeds` was loaded from the store.
    speeds_loaded: bool,
    /// Nodes whose learned speed changed since it was last written.
    speeds_unwritten: Vec<String>,
    /// Nodes whose learned speed was forgotten but not yet deleted from the store.
    speeds_forgotten: Vec<String>,
    /// Live Jobs of pending tasks (a start cut short by a crash or a failed
    /// write), found at take-up; the task's next start adopts them.
    prestarted: HashMap<String, Vec<JobObservation>>,
    /// Registry pull tokens and 429 backoffs, across tasks.
    pacing: Pacing,
}

impl Engine {
    /// An engine over these parts; nothing runs until `run`.
    pub fn new(
        store: Arc<dyn TaskStore>,
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Engine {
        let now = Instant::now();
        Engine {
            store,
            calls: JobCalls::new(cluster.clone()),
            pacing: Pacing::new(&config.registry_pull_rates),
            cluster,
            clock,
            config,
            notify: Arc::new(Notify::new()),
            runs: HashMap::new(),
            pending: Vec::new(),
            store_checks: StoreChecks::new(now),
            next_webhook_resume: now,
            next_resync: now + cluster_events::RESYNC_EVERY,
            last_view_flush: now,
            stopping: false,
            metrics: Arc::new(Metrics::new()),
            progress: Arc::new(ProgressHub::new()),
            webhooks: Webhooks::disabled(),
            node_speeds: Arc::new(MemoryStore::new()),
            speeds: HashMap::new(),
            speeds_loaded: false,
            speeds_unwritten: Vec::new(),
            speeds_forgotten: Vec::new(),
            prestarted: HashMap::new(),
        }
    }

    /// Learns node speeds into `store` (and starts from what it holds).
    pub fn with_node_speeds(mut self, store: Arc<dyn NodeSpeedStore>) -> Engine {
        self.node_speeds = store;
        self
    }

    /// Hands every ended task to `webhooks` (queued; never waits).
    pub fn with_webhooks(mut self, webhooks: Arc<Webhooks>) -> Engine {
        self.webhooks = webhooks;
        self
    }

    /// Publishes every stored task view to `hub` for live readers.
    pub fn with_progress(mut self, hub: Arc<ProgressHub>) -> Engine {
        self.progress = hub;
        self
    }

    /// Reports into `metrics` (task, node and pull figures).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Engine {
        self.metrics = metrics;
        self
    }

    /// Listens to `handle` (the one the API wakes, shared across leadership
    /// terms) instead of its own.
    pub fn with_handle(mut self, handle: &EngineHandle) -> Engine {
        self.notify = handle.notify.clone();
        self
    }

    /// A handle for the HTTP layer.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            notify: self.notify.clone(),
            disk_margin: self.config.disk_margin,
            registry_pull_rates: self.config.registry_pull_rates.clone().into(),
        }
    }

    /// Runs until `shutdown` is cancelled: then stops starting Jobs, writes
    /// what it knows and returns. Jobs left running are adopted at the next start.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut events = self.cluster.subscribe();
        tokio::select! {
            _ = self.cluster.synced() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        self.recover().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = events.recv() => {
                    self.on_recv(ev);
                    // Take whatever else is queued before acting, so a burst costs one step.
                    for _ in 0..4096 {
                        match events.try_recv() {
                            Ok(ev) => self.on_recv(Ok(ev)),
                            Err(broadcast::error::TryRecvError::Empty) => break,
                            Err(e) => { self.on_recv(Err(match e {
                                broadcast::error::TryRecvError::Lagged(n) => broadcast::error::RecvError::Lagged(n),
                                _ => broadcast::error::RecvError::Closed,
                            })); break; }
                        }
                    }
                }
                Some(done) = self.calls.done.recv() => self.on_call_done(done),
                _ = self.notify.notified() => self.store_checks.ask(),
                _ = tick.tick() => {}
            }
            self.step().await;
        }
        self.stopping = true;
        self.flush(true).await;
        self.drain().await;
        Ok(())
    }

    /// One reconcile pass: store checks, timers, windows, completions, writes.
    pub async fn step(&mut self) {
        let now = self.clock.now();
        let mono = Instant::now();
        if !self.speeds_loaded && self.store_checks.is_due(mono) {
            self.load_speeds().await;
        }
        if self.store_checks.is_due(mono) {
            let ok = self.check_store().await;
            self.store_checks.checked(ok, mono);
        }
        if mono >= self.next_webhook_resume {
            self.next_webhook_resume = mono + WEBHOOK_RESUME_EVERY;
            self.webhooks.resume_owed().await;
        }
        if mono >= self.next_resync {
            self.next_resync = mono + cluster_events::RESYNC_EVERY;
            self.resync();
        }
        self.check_timers(now, mono);
        if !self.stopping {
            self.admit_and_fill().await;
        }
        self.complete_finished().await;
        self.flush(false).await;
        self.metrics.engine_state(
            self.runs.len(),
            self.pending.len(),
            self.in_flight_total(),
            self.config.max_concurrent_nodes,
        );
    }

    /// Nodes in flight across every task (the global cap's measure).
    pub(super) fn in_flight_total(&self) -> usize {
        self.runs.values().map(|r| r.in_flight).sum()
    }
}

#[cfg(test)]
mod tests;
