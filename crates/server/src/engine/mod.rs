//! The reconciler that turns tasks into pull Jobs and Job/Pod states into
//! task progress.
//!
//! One loop owns every running task. It wakes on cluster events (from the
//! shared watches), on `EngineHandle::wake` (a task was created or
//! cancelled) and on a short tick (retry delays, timeouts, coalesced
//! writes). It is level-triggered: after a restart or a lagging event
//! stream it re-reads the cluster snapshots and reaches the same decisions.
//! Node outcomes are written to the store before their Jobs are deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prewarm_api::{PullPolicy, Task, TaskStatus};
use rand::Rng;
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterError, ClusterEvent, NodeInfo, PullJob};
use crate::domain::image_ref::matches_node_image;
use crate::domain::node_pull::{NodePull, TIMEOUT_REASON};
pub use crate::domain::selection::select_nodes;
use crate::domain::task::TaskSpec;
use crate::metrics::{Metrics, StatusLabels};
use crate::progress::ProgressHub;
use crate::store::{StoreError, TaskStore};
use crate::webhook::Webhooks;

pub mod scheduler;
pub mod submit;
mod task_run;

use task_run::{node_of, record_of, TaskRun};

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
}

/// How often the loop wakes without events.
const TICK: Duration = Duration::from_millis(200);
/// Least time between two progress writes of one task.
const VIEW_FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How often the store is asked about cancellations and new tasks without a wake.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// First wait before retrying a Job creation the API server refused
/// transiently; doubles per failure of the same node, up to `CREATE_BACKOFF_MAX`.
const CREATE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two creation attempts of one node (unless the server asks for more).
const CREATE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Limit on one Kubernetes call; a call that takes longer counts as a transient failure.
const API_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A confirmed Job younger than this may be missing from a fresh list
/// without being gone (the list was taken before it was created).
const RELIST_GRACE: Duration = Duration::from_secs(5);
/// Longest wait between store checks while the store keeps failing.
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Reason of a task the engine cannot take up again (its stored form is bad).
pub const UNRECOVERABLE_REASON: &str = "Unrecoverable";
/// How long a stopping engine waits for its in-flight Kubernetes calls.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(20);
/// How often owed webhooks are looked for in the store (after a restart, a full queue).
const WEBHOOK_RESUME_EVERY: Duration = Duration::from_secs(60);
/// Kubernetes calls in flight at once.
const API_CONCURRENCY: usize = 32;

/// A cheap handle for the API: tells the engine something changed.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    notify: Arc<Notify>,
}

impl EngineHandle {
    /// Tells the engine a task was created or cancelled.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Outcome of a spawned Job creation.
struct Created {
    task_id: String,
    node: usize,
    attempt: u32,
    result: Result<(), ClusterError>,
}

/// A finished Job deletion that frees a window slot of `task_id`.
struct Deleted {
    task_id: String,
}

/// The reconciler.
pub struct Engine {
    store: Arc<dyn TaskStore>,
    cluster: Arc<dyn Cluster>,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    notify: Arc<Notify>,
    runs: HashMap<String, TaskRun>,
    pending: Vec<Task>,
    created_tx: mpsc::UnboundedSender<Created>,
    created_rx: mpsc::UnboundedReceiver<Created>,
    deleted_tx: mpsc::UnboundedSender<Deleted>,
    deleted_rx: mpsc::UnboundedReceiver<Deleted>,
    api_permits: Arc<Semaphore>,
    /// Every Kubernetes call the engine spawned; drained on shutdown.
    tracker: TaskTracker,
    next_webhook_resume: Instant,
    last_view_flush: Instant,
    next_store_check: Instant,
    store_failures: u32,
    store_check_due: bool,
    stopping: bool,
    metrics: Arc<Metrics>,
    progress: Arc<ProgressHub>,
    webhooks: Arc<Webhooks>,
}

impl Engine {
    /// An engine over these parts; nothing runs until `run`.
    pub fn new(
        store: Arc<dyn TaskStore>,
        cluster: Arc<dyn Cluster>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Engine {
        let (created_tx, created_rx) = mpsc::unbounded_channel();
        let (deleted_tx, deleted_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        Engine {
            store,
            cluster,
            clock,
            config,
            notify: Arc::new(Notify::new()),
            runs: HashMap::new(),
            pending: Vec::new(),
            created_tx,
            created_rx,
            deleted_tx,
            deleted_rx,
            api_permits: Arc::new(Semaphore::new(API_CONCURRENCY)),
            tracker: TaskTracker::new(),
            next_webhook_resume: now,
            last_view_flush: now,
            next_store_check: now,
            store_failures: 0,
            store_check_due: true,
            stopping: false,
            metrics: Arc::new(Metrics::new()),
            progress: Arc::new(ProgressHub::new()),
            webhooks: Webhooks::disabled(),
        }
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

    /// A handle for the HTTP layer.
    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            notify: self.notify.clone(),
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
                Some(created) = self.created_rx.recv() => self.on_created(created),
                Some(deleted) = self.deleted_rx.recv() => self.on_deleted(deleted),
                _ = self.notify.notified() => self.store_check_due = true,
                _ = tick.tick() => {}
            }
            self.step().await;
        }
        self.stopping = true;
        self.flush(true).await;
        self.drain().await;
        Ok(())
    }

    /// Lets the Kubernetes calls in flight finish (within `SHUTDOWN_DRAIN`),
    /// takes in their results and writes what changed.
    async fn drain(&mut self) {
        self.tracker.close();
        let tracker = self.tracker.clone();
        let all_done = tracker.wait();
        tokio::pin!(all_done);
        let deadline = tokio::time::sleep(SHUTDOWN_DRAIN);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut all_done => break,
                _ = &mut deadline => {
                    tracing::warn!(calls = tracker.len(), "Kubernetes calls still running at shutdown");
                    break;
                }
                Some(created) = self.created_rx.recv() => self.on_created(created),
                Some(deleted) = self.deleted_rx.recv() => self.on_deleted(deleted),
            }
        }
        while let Ok(created) = self.created_rx.try_recv() {
            self.on_created(created);
        }
        while let Ok(deleted) = self.deleted_rx.try_recv() {
            self.on_deleted(deleted);
        }
        self.flush(true).await;
    }

    /// One reconcile pass: store checks, timers, windows, completions, writes.
    pub async fn step(&mut self) {
        let now = self.clock.now();
        let mono = Instant::now();
        if self.store_check_due || mono >= self.next_store_check {
            self.store_check_due = false;
            let wait = if self.check_store().await {
                self.store_failures = 0;
                STORE_CHECK_EVERY
            } else {
                self.store_failures += 1;
                let step = STORE_CHECK_EVERY
                    .saturating_mul(1u32 << self.store_failures.min(8))
                    .min(STORE_BACKOFF_MAX);
                step.mul_f64(rand::rng().random_range(0.5..=1.0))
            };
            self.next_store_check = mono + wait;
        }
        if mono >= self.next_webhook_resume {
            self.next_webhook_resume = mono + WEBHOOK_RESUME_EVERY;
            self.webhooks.resume_owed().await;
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

    fn on_recv(&mut self, ev: Result<ClusterEvent, broadcast::error::RecvError>) {
        match ev {
            Ok(ev) => self.on_event(ev),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "cluster events lagged; re-reading the caches");
                self.resync();
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }

    /// Applies one cluster change.
    pub fn on_event(&mut self, ev: ClusterEvent) {
        let now = self.clock.now();
        self.apply_event(ev, now);
        let mono = Instant::now();
        for run in self.runs.values_mut() {
            run.arm_timers(now, mono);
        }
    }

    fn apply_event(&mut self, ev: ClusterEvent, now: DateTime<Utc>) {
        match ev {
            ClusterEvent::PodChanged(pod) => {
                if let Some(run) = self.runs.get_mut(&pod.task_id) {
                    run.observe_pod(&pod, now);
                }
            }
            ClusterEvent::JobChanged(job) => {
                let Some(reason) = job.failed_reason.as_deref() else {
                    return;
                };
                if let Some(run) = self.runs.get_mut(&job.task_id) {
                    if let Some(&i) = run.index.get(&job.node) {
                        let node = &run.nodes[i];
                        if node.is_started() && node.attempt == job.attempt {
                            let (reason, message) = if reason == "DeadlineExceeded" {
                                (
                                    TIMEOUT_REASON,
                                    "the pull Job exceeded its deadline".to_owned(),
                                )
                            } else {
                                (reason, format!("the pull Job failed: {reason}"))
                            };
                            let spec = run.spec.clone();
                            run.nodes[i].fail_attempt(reason, &message, &spec, now);
                            run.attempt_ended(i);
                        }
                    }
                }
            }
            ClusterEvent::JobDeleted(job) => {
                if let Some(run) = self.runs.get_mut(&job.task_id) {
                    if let Some(&i) = run.index.get(&job.node) {
                        let node = &run.nodes[i];
                        if node.is_started() && node.attempt == job.attempt {
                            let spec = run.spec.clone();
                            run.nodes[i].fail_attempt(
                                "JobDeleted",
                                "the pull Job was deleted outside the service",
                                &spec,
                                now,
                            );
                            run.attempt_ended(i);
                        }
                    }
                }
            }
            ClusterEvent::NodeChanged(node) => {
                if !node.ready {
                    for run in self.runs.values_mut() {
                        run.node_gone(&node.name, "node became NotReady", now);
                    }
                }
            }
            ClusterEvent::NodeDeleted(name) => {
                for run in self.runs.values_mut() {
                    run.node_gone(&name, "node was deleted", now);
                }
            }
            ClusterEvent::Resynced => self.resync(),
        }
    }

    /// Re-reads the cluster caches and applies them as if every object changed.
    fn resync(&mut self) {
        let now = self.clock.now();
        let nodes: HashMap<String, NodeInfo> = self
            .cluster
            .nodes()
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        for run in self.runs.values_mut() {
            let names: Vec<String> = run.nodes.iter().map(|n| n.node.clone()).collect();
            for name in names {
                match nodes.get(&name) {
                    None => {
                        run.node_gone(&name, "node was deleted", now);
                    }
                    Some(n) if !n.ready => {
                        run.node_gone(&name, "node became NotReady", now);
                    }
                    _ => {}
                }
            }
        }
        for pod in self.cluster.pods() {
            if let Some(run) = self.runs.get_mut(&pod.task_id) {
                run.observe_pod(&pod, now);
            }
        }
        // Jobs: a failed one ends its attempt; a confirmed one missing from a
        // fresh list was deleted while no watch was looking.
        let jobs = self.cluster.jobs();
        let listed: HashSet<(&str, &str, u32)> = jobs
            .iter()
            .map(|j| (j.task_id.as_str(), j.node.as_str(), j.attempt))
            .collect();
        for job in &jobs {
            if job.failed_reason.is_some() {
                self.on_event(ClusterEvent::JobChanged(job.clone()));
            }
        }
        let mono = Instant::now();
        for run in self.runs.values_mut() {
            let gone: Vec<usize> = run
                .confirmed
                .iter()
                .filter(|(&i, &at)| {
                    let node = &run.nodes[i];
                    node.is_started()
                        && mono.duration_since(at) >= RELIST_GRACE
                        && !listed.contains(&(
                            run.view.task_id.as_str(),
                            node.node.as_str(),
                            node.attempt,
                        ))
                })
                .map(|(&i, _)| i)
                .collect();
            for i in gone {
                let spec = run.spec.clone();
                run.nodes[i].fail_attempt(
                    "JobDeleted",
                    "the pull Job was deleted outside the service",
                    &spec,
                    now,
                );
                run.attempt_ended(i);
            }
        }
    }

    /// Takes up running tasks after a (re)start from the store and the
    /// cluster. Whatever fails here is tried again at every store check.
    async fn recover(&mut self) {
        if self.take_up_running().await.is_ok() {
            self.resync();
        }
    }

    /// Takes up every stored running task that has no run in memory (after a
    /// restart, a store outage or a lost write), adopting its live Jobs, and
    /// deletes Jobs that belong to no running task.
    async fn take_up_running(&mut self) -> Result<(), ()> {
        let running = match self.store.list_with_status(&[TaskStatus::Running]).await {
            Ok(t) => t,
            Err(StoreError::Corrupt { id, message }) => {
                self.end_unrecoverable(&id, None, &message).await;
                return Err(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not load running tasks; will retry");
                return Err(());
            }
        };
        let mut jobs_by_task: HashMap<String, Vec<crate::cluster::JobObservation>> = HashMap::new();
        for job in self.cluster.jobs() {
            if !self.runs.contains_key(&job.task_id) {
                jobs_by_task
                    .entry(job.task_id.clone())
                    .or_default()
                    .push(job);
            }
        }
        let mut result = Ok(());
        for view in running {
            if self.runs.contains_key(&view.task_id) {
                continue;
            }
            let jobs = jobs_by_task.remove(&view.task_id).unwrap_or_default();
            if self.take_up(view, jobs).await.is_err() {
                result = Err(());
            }
        }
        // Jobs of tasks that are not running any more (crash between "ended" and cleanup).
        for task_id in jobs_by_task.into_keys() {
            match self.store.get(&task_id).await {
                Ok(Some(t)) if !t.status.is_terminal() => {}
                Ok(_) => self.delete_task_jobs(task_id),
                Err(e) => tracing::warn!(task = %task_id, error = %e, "orphan check failed"),
            }
        }
        result
    }

    /// Takes up one running task from its stored records and its live Jobs.
    /// `Err` if the store failed (try again later); a task whose stored form
    /// is bad ends `Unrecoverable` instead.
    async fn take_up(
        &mut self,
        view: Task,
        jobs: Vec<crate::cluster::JobObservation>,
    ) -> Result<(), ()> {
        let now = self.clock.now();
        let spec = match TaskSpec::from_view(&view) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("the stored task no longer validates: {e}");
                self.end_unrecoverable(&view.task_id, Some(view.clone()), &message)
                    .await;
                return Ok(());
            }
        };
        let records = match self.store.nodes(&view.task_id).await {
            Ok(r) => r,
            Err(StoreError::Corrupt { message, .. }) => {
                self.end_unrecoverable(&view.task_id, Some(view.clone()), &message)
                    .await;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(task = %view.task_id, error = %e, "could not load node records; will retry");
                return Err(());
            }
        };
        let nodes: Result<Vec<NodePull>, String> = records.iter().map(node_of).collect();
        let mut nodes = match nodes {
            Ok(n) => n,
            Err(message) => {
                self.end_unrecoverable(&view.task_id, Some(view.clone()), &message)
                    .await;
                return Ok(());
            }
        };
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        let mut run = TaskRun::new(view.clone(), spec, nodes);
        run.anchor_start(now, Instant::now());
        run.in_flight = 0;
        let mut by_node: HashMap<usize, Vec<crate::cluster::JobObservation>> = HashMap::new();
        let mut stale = Vec::new();
        for job in jobs {
            match run.index.get(&job.node) {
                Some(&i) => by_node.entry(i).or_default().push(job),
                None => stale.push(job.name),
            }
        }
        for i in 0..run.nodes.len() {
            let node_jobs = by_node.remove(&i).unwrap_or_default();
            let node = &mut run.nodes[i];
            // The attempt a live Job may legitimately belong to: the recorded
            // one if the record says it started, else the next one.
            let live_attempt = if node.is_done() {
                None
            } else if node.is_started() || !node.started {
                Some(node.attempt)
            } else {
                Some(node.attempt + 1)
            };
            let mut adopted = false;
            for job in node_jobs {
                if Some(job.attempt) == live_attempt && !adopted {
                    node.adopt(job.attempt, now);
                    adopted = true;
                } else {
                    stale.push(job.name);
                }
            }
            if adopted {
                run.in_flight += 1;
                run.confirmed.insert(i, Instant::now());
            } else if node.is_started() {
                // Recorded as started but its Job never made it: start it again
                // under the same attempt number.
                node.unstart(now);
            }
        }
        tracing::info!(task = %view.task_id, in_flight = run.in_flight, "resumed task");
        self.delete_jobs(stale.into_iter().map(|j| (None, j)).collect());
        self.runs.insert(view.task_id.clone(), run);
        Ok(())
    }

    /// Ends a running or pending task whose stored form the engine cannot
    /// use: `failed` with reason `Unrecoverable` and `message`; its Jobs go.
    /// `view` is the stored view if it decoded at all.
    async fn end_unrecoverable(&mut self, id: &str, view: Option<Task>, message: &str) {
        let now = self.clock.now();
        tracing::error!(task = %id, error = %message, "task cannot be taken up; ending it");
        let mut task = match view {
            Some(v) => v,
            None => unreadable_view(id, now),
        };
        task.status = TaskStatus::Failed;
        task.reason = Some(UNRECOVERABLE_REASON.to_owned());
        task.error_message = Some(message.to_owned());
        task.finished_at = Some(now);
        task.estimated_completion = None;
        owe_webhook(&mut task);
        match self
            .store
            .update_if(&task, &[TaskStatus::Running, TaskStatus::Pending])
            .await
        {
            Ok(true) => {
                self.progress.publish(&task);
                self.webhooks.notify(&task);
                self.metrics
                    .tasks_total
                    .get_or_create(&StatusLabels {
                        status: "failed".into(),
                    })
                    .inc();
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(task = %id, error = %e, "could not end the task; will retry"),
        }
        self.delete_task_jobs(id.to_owned());
    }

    /// Picks up cancellations made through the API, running tasks without a
    /// run and the list of pending tasks. False if the store failed.
    async fn check_store(&mut self) -> bool {
        let now = self.clock.now();
        let mut ok = true;
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            match self.store.get(&id).await {
                Ok(Some(t)) if t.status == TaskStatus::Cancelled => {
                    if let Some(mut run) = self.runs.remove(&id) {
                        run.view.finished_at = t.finished_at;
                        run.finish(TaskStatus::Cancelled, None, t.finished_at.unwrap_or(now));
                        self.end_run(run, TaskStatus::Cancelled).await;
                    }
                }
                Ok(None) => {
                    self.runs.remove(&id);
                    self.delete_task_jobs(id);
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "store check failed");
                    ok = false;
                }
            }
        }
        if !self.stopping && self.take_up_running().await.is_err() {
            ok = false;
        }
        match self.store.list_with_status(&[TaskStatus::Pending]).await {
            Ok(mut pending) => {
                pending.sort_by(|a, b| {
                    b.priority
                        .cmp(&a.priority)
                        .then(a.created_at.cmp(&b.created_at))
                        .then(a.task_id.cmp(&b.task_id))
                });
                let before = std::mem::replace(&mut self.pending, pending);
                self.publish_ended_without_run(before).await;
            }
            Err(StoreError::Corrupt { id, message }) => {
                self.end_unrecoverable(&id, None, &message).await;
                ok = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list pending tasks");
                ok = false;
            }
        }
        ok
    }

    /// Tasks that left `pending` without being started were cancelled
    /// through the store (by the scheduler's timeout, say); no run publishes
    /// their end, so live readers learn it here.
    async fn publish_ended_without_run(&self, was_pending: Vec<Task>) {
        for task in was_pending {
            let id = &task.task_id;
            if self.runs.contains_key(id) || self.pending.iter().any(|p| p.task_id == *id) {
                continue;
            }
            if let Ok(Some(now)) = self.store.get(id).await {
                if now.status.is_terminal() {
                    self.progress.publish(&now);
                }
            }
        }
    }

    fn in_flight_total(&self) -> usize {
        self.runs.values().map(|r| r.in_flight).sum()
    }

    /// Admits pending tasks while there is room, then hands free slots to
    /// running tasks in priority order.
    async fn admit_and_fill(&mut self) {
        loop {
            self.fill_windows();
            if self.in_flight_total() >= self.config.max_concurrent_nodes || self.pending.is_empty()
            {
                break;
            }
            let view = self.pending.remove(0);
            self.start_task(view).await;
        }
    }

    /// Starts a pending task: selects its nodes and stores them.
    async fn start_task(&mut self, mut view: Task) {
        let now = self.clock.now();
        let spec = match TaskSpec::from_view(&view) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("the stored task no longer validates: {e}");
                self.end_unrecoverable(&view.task_id, Some(view.clone()), &message)
                    .await;
                return;
            }
        };
        let all_nodes = self.cluster.nodes();
        let selected = select_nodes(&all_nodes, &spec);
        if selected.is_empty() {
            let mut run = TaskRun::new(view, spec.clone(), Vec::new());
            run.view.started_at = Some(now);
            run.finish(
                TaskStatus::Failed,
                Some(("NoMatchingNodes", no_match_message(&spec, all_nodes.len()))),
                now,
            );
            owe_webhook(&mut run.view);
            match self
                .store
                .update_if(&run.view, &[TaskStatus::Pending])
                .await
            {
                Ok(true) => {
                    self.progress.publish(&run.view);
                    self.webhooks.notify(&run.view);
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(task = %run.view.task_id, error = %e, "could not store task end")
                }
            }
            self.metrics
                .tasks_total
                .get_or_create(&StatusLabels {
                    status: "failed".into(),
                })
                .inc();
            tracing::info!(task = %run.view.task_id, "task failed: no matching node");
            return;
        }
        let nodes: Vec<NodePull> = selected
            .into_iter()
            .map(|n| {
                let present = spec
                    .images
                    .iter()
                    .map(|img| {
                        spec.pull_policy == PullPolicy::IfNotPresent
                            && matches_node_image(img, &n.images)
                    })
                    .collect();
                let mut pull = NodePull::new(n.name.clone(), present);
                pull.settle_without_pull(now);
                pull
            })
            .collect();
        let records: Vec<_> = nodes.iter().map(record_of).collect();
        if let Err(e) = self.store.put_nodes(&view.task_id, &records).await {
            tracing::error!(task = %view.task_id, error = %e, "could not store selected nodes; will retry");
            return;
        }
        view.status = TaskStatus::Running;
        view.started_at = Some(now);
        let mut run = TaskRun::new(view, spec, nodes);
        run.anchor_start(now, Instant::now());
        run.refresh_view(now);
        match self
            .store
            .update_if(&run.view, &[TaskStatus::Pending])
            .await
        {
            Ok(true) => {
                self.progress.publish(&run.view);
                tracing::info!(task = %run.view.task_id, nodes = run.nodes.len(), "task started");
                self.metrics.progressed();
                run.dirty = false;
                self.runs.insert(run.view.task_id.clone(), run);
            }
            Ok(false) => {} // cancelled before it started
            Err(e) => tracing::error!(task = %run.view.task_id, error = %e, "could not start task"),
        }
    }

    /// Starts nodes in every task's window, highest priority first, within the global cap.
    fn fill_windows(&mut self) {
        let now = self.clock.now();
        let mono = Instant::now();
        let mut order: Vec<(i32, DateTime<Utc>, String)> = self
            .runs
            .values()
            .map(|r| (r.view.priority, r.view.created_at, r.view.task_id.clone()))
            .collect();
        order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut total = self.in_flight_total();
        for (_, _, id) in order {
            if total >= self.config.max_concurrent_nodes {
                break;
            }
            let Some(run) = self.runs.get_mut(&id) else {
                continue;
            };
            let window = run.spec.batch_size as usize;
            let mut starts = Vec::new();
            // Retries whose wait is over come first, then never-started nodes in order.
            let retries: Vec<usize> = (0..run.nodes.len())
                .filter(|&i| run.nodes[i].started && run.ready(i, now, mono))
                .collect();
            for i in retries {
                if run.in_flight >= window || total >= self.config.max_concurrent_nodes {
                    break;
                }
                starts.push(i);
                run.in_flight += 1;
                total += 1;
            }
            while run.in_flight < window
                && total < self.config.max_concurrent_nodes
                && run.cursor < run.nodes.len()
            {
                let i = run.cursor;
                if !run.nodes[i].started && run.ready(i, now, mono) {
                    starts.push(i);
                    run.in_flight += 1;
                    total += 1;
                } else if !run.nodes[i].started && !run.nodes[i].is_done() {
                    // A node waiting on a failed create: look again on the next pass.
                    break;
                }
                run.cursor += 1;
            }
            for i in starts {
                let attempt = run.nodes[i].start(now);
                run.set_timer(i, mono);
                run.attempt_started.insert(i, now);
                run.dirty = true;
                let job = PullJob {
                    task_id: run.view.task_id.clone(),
                    task_suffix: run.id.suffix().to_owned(),
                    node: run.nodes[i].node.clone(),
                    attempt,
                    images: run.nodes[i]
                        .pending_images()
                        .into_iter()
                        .map(|ix| (ix, run.spec.images[ix].as_str().to_owned()))
                        .collect(),
                    pull_policy: run.spec.pull_policy.as_str().to_owned(),
                    image_pull_secrets: run.spec.image_pull_secrets.clone(),
                    priority_class_name: run.spec.priority_class_name.clone(),
                    helper_image: self.config.helper_image.clone(),
                    active_deadline_seconds: self.config.pull_timeout.as_secs().max(1) as i64,
                };
                let cluster = self.cluster.clone();
                let permits = self.api_permits.clone();
                let tx = self.created_tx.clone();
                let task_id = run.view.task_id.clone();
                self.tracker.spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let result = match tokio::time::timeout(
                        API_CALL_TIMEOUT,
                        cluster.create_job(&job),
                    )
                    .await
                    {
                        Ok(result) => result,
                        Err(_) => Err(ClusterError::Unreachable(format!(
                            "no answer within {}s",
                            API_CALL_TIMEOUT.as_secs()
                        ))),
                    };
                    let _ = tx.send(Created {
                        task_id,
                        node: i,
                        attempt,
                        result,
                    });
                });
            }
        }
    }

    fn on_created(&mut self, created: Created) {
        let now = self.clock.now();
        let mono = Instant::now();
        let pull_timeout = self.config.pull_timeout;
        let Some(run) = self.runs.get_mut(&created.task_id) else {
            return;
        };
        let i = created.node;
        let node = &run.nodes[i];
        if !node.is_started() || node.attempt != created.attempt {
            return;
        }
        let err = match created.result {
            Ok(()) => {
                run.confirmed.insert(i, mono);
                run.create_failures.remove(&i);
                return;
            }
            Err(err) => err,
        };
        let (failures, since) = {
            let entry = run.create_failures.entry(i).or_insert((0, mono));
            entry.0 += 1;
            *entry
        };
        let give_up = match create_failure(&err) {
            CreateFailure::Permanent => true,
            CreateFailure::UntilPullTimeout => mono.duration_since(since) >= pull_timeout,
            CreateFailure::Transient => false,
        };
        if give_up {
            tracing::warn!(task = %created.task_id, node = %node.node, error = %err, "pull Job rejected");
            let message = match &err {
                ClusterError::Api { message, .. } => message.clone(),
                other => other.to_string(),
            };
            run.create_failures.remove(&i);
            run.nodes[i].abort("JobRejected", &message, now);
            run.attempt_ended(i);
            return;
        }
        let wait = create_backoff(failures, err.retry_after());
        tracing::warn!(task = %created.task_id, node = %node.node, error = %err, failures, retry_in_ms = wait.as_millis() as u64, "pull Job creation failed; retrying");
        run.nodes[i].unstart(now + chrono::Duration::from_std(wait).unwrap_or_default());
        run.set_timer(i, mono + wait);
        run.in_flight = run.in_flight.saturating_sub(1);
        run.cursor = run.cursor.min(i);
    }

    fn on_deleted(&mut self, deleted: Deleted) {
        if let Some(run) = self.runs.get_mut(&deleted.task_id) {
            run.in_flight = run.in_flight.saturating_sub(1);
        }
    }

    /// Pull timeouts, task timeouts.
    fn check_timers(&mut self, now: DateTime<Utc>, mono: Instant) {
        let pull_timeout = self.config.pull_timeout;
        for run in self.runs.values_mut() {
            let limit = Duration::from_secs(run.spec.timeout_seconds);
            if run.spec.timeout_seconds > 0
                && mono.duration_since(run.started) > limit
                && !run.all_done()
            {
                let message = format!(
                    "task did not finish within timeoutSeconds={}",
                    run.spec.timeout_seconds
                );
                for i in 0..run.nodes.len() {
                    if !run.nodes[i].is_done() {
                        let was_started = run.nodes[i].is_started();
                        run.nodes[i].abort(TIMEOUT_REASON, &message, now);
                        if was_started {
                            run.attempt_ended(i);
                        } else {
                            run.unrecorded.insert(i);
                        }
                    }
                }
                run.view.reason = Some(TIMEOUT_REASON.to_owned());
                run.view.error_message = Some(message);
                run.dirty = true;
                continue;
            }
            for i in 0..run.nodes.len() {
                if !run.nodes[i].is_started() {
                    continue;
                }
                if let Some(since) = run.timer(i, now, mono) {
                    if mono.duration_since(since) > pull_timeout {
                        let spec = run.spec.clone();
                        let message = format!(
                            "image pulls did not finish within {}s",
                            self.config.pull_timeout.as_secs()
                        );
                        run.nodes[i].fail_attempt(TIMEOUT_REASON, &message, &spec, now);
                        run.attempt_ended(i);
                    }
                }
            }
        }
    }

    /// Ends tasks whose every node is done.
    async fn complete_finished(&mut self) {
        let now = self.clock.now();
        let done: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.all_done())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            let Some(mut run) = self.runs.remove(&id) else {
                continue;
            };
            run.refresh_view(now);
            let p = &run.view.progress;
            let (status, reason) =
                if run.view.reason.as_deref() == Some(TIMEOUT_REASON) || p.failed_nodes > 0 {
                    (TaskStatus::Failed, None)
                } else if p.completed_nodes == 0 && p.skipped_nodes == p.total_nodes {
                    (
                        TaskStatus::Failed,
                        Some(("NoNodesLeft", "every selected node went away".to_owned())),
                    )
                } else {
                    (TaskStatus::Completed, None)
                };
            run.finish(status, reason, now);
            self.end_run(run, TaskStatus::Running).await;
        }
    }

    /// Writes a finished run (records first), then deletes all of its Jobs.
    async fn end_run(&mut self, mut run: TaskRun, expected: TaskStatus) {
        // Attempts that ended in the same step as the task are not flushed with the runs.
        count_ended_attempts(&self.metrics, &mut run);
        let records: Vec<_> = run.nodes.iter().map(record_of).collect();
        run.unrecorded.clear();
        owe_webhook(&mut run.view);
        if let Err(e) = self.store.put_nodes(&run.view.task_id, &records).await {
            tracing::error!(task = %run.view.task_id, error = %e, "could not store node outcomes");
        }
        match self.store.update_if(&run.view, &[expected]).await {
            Ok(true) => {
                self.progress.publish(&run.view);
                self.webhooks.notify(&run.view);
            }
            Ok(false) => {
                tracing::info!(task = %run.view.task_id, "task changed meanwhile; keeping the stored status")
            }
            Err(e) => {
                tracing::error!(task = %run.view.task_id, error = %e, "could not store task end")
            }
        }
        self.metrics
            .tasks_total
            .get_or_create(&StatusLabels {
                status: run.view.status.to_string(),
            })
            .inc();
        if let (Some(start), Some(end)) = (run.view.started_at, run.view.finished_at) {
            self.metrics
                .task_duration
                .observe((end - start).num_milliseconds().max(0) as f64 / 1000.0);
        }
        tracing::info!(
            task = %run.view.task_id,
            status = %run.view.status,
            completed = run.view.progress.completed_nodes,
            failed = run.view.progress.failed_nodes,
            skipped = run.view.progress.skipped_nodes,
            "task ended"
        );
        self.delete_task_jobs(run.view.task_id.clone());
    }

    /// Writes node records, deletes the Jobs they free, and writes changed views.
    async fn flush(&mut self, force_views: bool) {
        let now = self.clock.now();
        let mut doomed = Vec::new();
        for run in self.runs.values_mut() {
            count_ended_attempts(&self.metrics, run);
            let records = run.take_records();
            if !records.is_empty() {
                if let Err(e) = self.store.put_nodes(&run.view.task_id, &records).await {
                    tracing::error!(task = %run.view.task_id, error = %e, "could not store node outcomes; keeping their Jobs");
                    for r in records {
                        if let Some(&i) = run.index.get(&r.node) {
                            run.unrecorded.insert(i);
                        }
                    }
                    continue;
                }
            }
            let task_id = &run.view.task_id;
            doomed.extend(
                run.doomed_jobs
                    .drain(..)
                    .map(|j| (Some(task_id.clone()), j)),
            );
        }
        self.delete_jobs(doomed);
        let mono = Instant::now();
        if !force_views && mono.duration_since(self.last_view_flush) < VIEW_FLUSH_EVERY {
            return;
        }
        self.last_view_flush = mono;
        let mut lost = Vec::new();
        for run in self.runs.values_mut().filter(|r| r.dirty) {
            run.refresh_view(now);
            match self
                .store
                .update_if(&run.view, &[TaskStatus::Running])
                .await
            {
                Ok(true) => {
                    run.dirty = false;
                    self.progress.publish(&run.view);
                }
                Ok(false) => lost.push(run.view.task_id.clone()),
                Err(e) => {
                    tracing::warn!(task = %run.view.task_id, error = %e, "progress write failed")
                }
            }
        }
        if !lost.is_empty() {
            self.store_check_due = true;
        }
    }

    /// Deletes Jobs in the background; those tagged with a task free one of
    /// its window slots when the deletion is done (or failed for good).
    fn delete_jobs(&self, jobs: Vec<(Option<String>, String)>) {
        for (task_id, name) in jobs {
            let cluster = self.cluster.clone();
            let permits = self.api_permits.clone();
            let tx = self.deleted_tx.clone();
            self.tracker.spawn(async move {
                let _permit = permits.acquire_owned().await;
                if let Err(e) = cluster.delete_job(&name).await {
                    tracing::warn!(job = %name, error = %e, "could not delete pull Job");
                }
                if let Some(task_id) = task_id {
                    let _ = tx.send(Deleted { task_id });
                }
            });
        }
    }

    fn delete_task_jobs(&self, task_id: String) {
        let cluster = self.cluster.clone();
        self.tracker.spawn(async move {
            if let Err(e) = cluster.delete_task_jobs(&task_id).await {
                tracing::warn!(task = %task_id, error = %e, "could not delete the task's Jobs");
            }
        });
    }
}

/// Moves a run's ended node attempts into the pull counters and histogram.
fn count_ended_attempts(metrics: &Metrics, run: &mut TaskRun) {
    if !run.ended.is_empty() {
        metrics.progressed();
    }
    for reason in run.failure_reasons.drain(..) {
        metrics.node_failure(&reason);
    }
    for (outcome, secs) in run.ended.drain(..) {
        metrics.node_pull(outcome);
        if secs >= 0.0 {
            metrics.observe_node_pull(secs);
        }
    }
}

/// Records, in the view that ends a task, that its webhook is owed; the
/// delivery worker (now or after a restart) settles it.
fn owe_webhook(view: &mut Task) {
    if view.webhook_url.is_some() && view.webhook_status.is_none() {
        view.webhook_status = Some(prewarm_api::WebhookStatus::Pending);
    }
}

/// A view standing in for a stored task that does not decode.
fn unreadable_view(id: &str, now: DateTime<Utc>) -> Task {
    let spec = TaskSpec::from_request(prewarm_api::CreateTaskRequest {
        images: vec!["unknown".to_owned()],
        ..Default::default()
    })
    .expect("a one-image request is valid");
    let mut task = spec.new_task(crate::domain::task::TaskId(id.to_owned()), "unknown", now);
    task.images.clear();
    task.image_statuses.clear();
    task
}

/// How the engine treats a refused Job creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateFailure {
    /// Throttling, server errors, timeouts, a lost connection: retry with backoff.
    Transient,
    /// A ResourceQuota or an admission webhook said no (403): usually temporary,
    /// so retry with backoff until the pull timeout, then fail with the server's message.
    UntilPullTimeout,
    /// The request itself is wrong (400, 422, ...): fail the node now.
    Permanent,
}

fn create_failure(err: &ClusterError) -> CreateFailure {
    match err {
        ClusterError::Unreachable(_) => CreateFailure::Transient,
        ClusterError::Api { code, .. } => match code {
            403 => CreateFailure::UntilPullTimeout,
            408 | 409 | 429 => CreateFailure::Transient,
            c if *c >= 500 => CreateFailure::Transient,
            _ => CreateFailure::Permanent,
        },
    }
}

/// Wait before the next creation attempt after `failures` failures in a row:
/// exponential with jitter (half to all of the step), never less than what
/// the server asked for with `Retry-After`.
fn create_backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let step = CREATE_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(CREATE_BACKOFF_MAX);
    let jittered = step.mul_f64(rand::rng().random_range(0.5..=1.0));
    jittered.max(retry_after.unwrap_or_default())
}

fn no_match_message(spec: &TaskSpec, cluster_nodes: usize) -> String {
    let selector: BTreeMap<&str, &str> = spec
        .node_selector
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    format!(
        "no Ready, schedulable node matches nodeSelector {selector:?}{}{} ({cluster_nodes} nodes in the cluster)",
        if spec.node_names.is_empty() {
            String::new()
        } else {
            format!(" and nodeNames {:?}", spec.node_names)
        },
        if spec.tolerate_taints {
            ""
        } else {
            " without NoSchedule/NoExecute taints"
        },
    )
}

#[cfg(test)]
mod tests;
