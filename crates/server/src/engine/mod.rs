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
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterError, ClusterEvent, NodeInfo, PullJob};
use crate::domain::image_ref::matches_node_image;
use crate::domain::node_pull::{NodePull, TIMEOUT_REASON};
use crate::domain::task::TaskSpec;
use crate::metrics::{Metrics, StatusLabels};
use crate::progress::ProgressHub;
use crate::store::TaskStore;
use crate::webhook::Webhooks;

pub mod scheduler;
pub mod submit;
mod task_run;

use task_run::{ready_to_start, record_of, TaskRun};

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
/// Wait before retrying a Job creation the API server refused transiently.
const CREATE_RETRY: Duration = Duration::from_secs(3);
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
    last_view_flush: DateTime<Utc>,
    last_store_check: DateTime<Utc>,
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
        let now = clock.now();
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
            last_view_flush: now,
            last_store_check: now,
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
        Ok(())
    }

    /// One reconcile pass: store checks, timers, windows, completions, writes.
    pub async fn step(&mut self) {
        let now = self.clock.now();
        if self.store_check_due || elapsed(self.last_store_check, now) >= STORE_CHECK_EVERY {
            self.store_check_due = false;
            self.last_store_check = now;
            self.check_store().await;
        }
        self.check_timers(now);
        if !self.stopping {
            self.admit_and_fill().await;
        }
        self.complete_finished().await;
        self.flush(false).await;
        self.metrics.tasks_running.set(self.runs.len() as i64);
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
    }

    /// Takes up running tasks after a (re)start from the store and the cluster.
    async fn recover(&mut self) {
        let now = self.clock.now();
        let running = match self.store.list_with_status(&[TaskStatus::Running]).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "could not load running tasks; will retry");
                return;
            }
        };
        let mut jobs_by_task: HashMap<String, Vec<crate::cluster::JobObservation>> = HashMap::new();
        for job in self.cluster.jobs() {
            jobs_by_task
                .entry(job.task_id.clone())
                .or_default()
                .push(job);
        }
        for view in running {
            let spec = match TaskSpec::from_view(&view) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(task = %view.task_id, error = %e, "stored task no longer valid");
                    continue;
                }
            };
            let records = match self.store.nodes(&view.task_id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(task = %view.task_id, error = %e, "could not load node records");
                    continue;
                }
            };
            let mut nodes: Vec<NodePull> = records
                .into_iter()
                .filter_map(|r| serde_json::from_value(r.body).ok())
                .collect();
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            let mut run = TaskRun::new(view.clone(), spec, nodes);
            run.in_flight = 0;
            let mut jobs: HashMap<usize, Vec<crate::cluster::JobObservation>> = HashMap::new();
            let mut stale = Vec::new();
            for job in jobs_by_task.remove(&view.task_id).unwrap_or_default() {
                match run.index.get(&job.node) {
                    Some(&i) => jobs.entry(i).or_default().push(job),
                    None => stale.push(job.name),
                }
            }
            for i in 0..run.nodes.len() {
                let node_jobs = jobs.remove(&i).unwrap_or_default();
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
                } else if node.is_started() {
                    // Recorded as started but its Job never made it: start it again
                    // under the same attempt number.
                    node.unstart(now);
                }
            }
            tracing::info!(task = %view.task_id, in_flight = run.in_flight, "resumed task");
            self.delete_jobs(stale.into_iter().map(|j| (None, j)).collect());
            self.runs.insert(view.task_id.clone(), run);
        }
        // Jobs of tasks that are not running any more (crash between "ended" and cleanup).
        for task_id in jobs_by_task.into_keys() {
            match self.store.get(&task_id).await {
                Ok(Some(t)) if !t.status.is_terminal() => {}
                Ok(_) => self.delete_task_jobs(task_id),
                Err(e) => tracing::warn!(task = %task_id, error = %e, "orphan check failed"),
            }
        }
        self.resync();
    }

    /// Picks up cancellations made through the API and the list of pending tasks.
    async fn check_store(&mut self) {
        let now = self.clock.now();
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
                Err(e) => tracing::warn!(task = %id, error = %e, "store check failed"),
            }
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
            Err(e) => tracing::warn!(error = %e, "could not list pending tasks"),
        }
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
                tracing::error!(task = %view.task_id, error = %e, "stored task is invalid");
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
        run.refresh_view(now);
        match self
            .store
            .update_if(&run.view, &[TaskStatus::Pending])
            .await
        {
            Ok(true) => {
                self.progress.publish(&run.view);
                tracing::info!(task = %run.view.task_id, nodes = run.nodes.len(), "task started");
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
            let retries: Vec<usize> = run
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| {
                    n.started
                        && matches!(
                            n.phase,
                            crate::domain::node_pull::NodePhase::RetryWait { .. }
                        )
                        && ready_to_start(&n.phase, now)
                })
                .map(|(i, _)| i)
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
                if !run.nodes[i].started && ready_to_start(&run.nodes[i].phase, now) {
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
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let result = cluster.create_job(&job).await;
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
        let Err(err) = created.result else {
            return;
        };
        let now = self.clock.now();
        let Some(run) = self.runs.get_mut(&created.task_id) else {
            return;
        };
        let node = &mut run.nodes[created.node];
        if !node.is_started() || node.attempt != created.attempt {
            return;
        }
        match &err {
            ClusterError::Api { code, message, .. }
                if (400..500).contains(code) && *code != 409 && *code != 429 =>
            {
                tracing::warn!(task = %created.task_id, node = %node.node, error = %err, "pull Job rejected");
                let spec = run.spec.clone();
                run.nodes[created.node].abort("JobRejected", message, now);
                run.attempt_ended(created.node);
                let _ = spec;
            }
            _ => {
                tracing::warn!(task = %created.task_id, node = %node.node, error = %err, "pull Job creation failed; retrying");
                node.unstart(now + chrono::Duration::from_std(CREATE_RETRY).unwrap_or_default());
                run.in_flight = run.in_flight.saturating_sub(1);
                run.cursor = run.cursor.min(created.node);
            }
        }
    }

    fn on_deleted(&mut self, deleted: Deleted) {
        if let Some(run) = self.runs.get_mut(&deleted.task_id) {
            run.in_flight = run.in_flight.saturating_sub(1);
        }
    }

    /// Pull timeouts, task timeouts.
    fn check_timers(&mut self, now: DateTime<Utc>) {
        let pull_timeout = chrono::Duration::from_std(self.config.pull_timeout).unwrap_or_default();
        for run in self.runs.values_mut() {
            if run.spec.timeout_seconds > 0 {
                if let Some(started) = run.view.started_at {
                    let limit = chrono::Duration::seconds(run.spec.timeout_seconds as i64);
                    if now - started > limit && !run.all_done() {
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
                }
            }
            for i in 0..run.nodes.len() {
                if let crate::domain::node_pull::NodePhase::Started { since } = run.nodes[i].phase {
                    if now - since > pull_timeout {
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
        if !force_views && elapsed(self.last_view_flush, now) < VIEW_FLUSH_EVERY {
            return;
        }
        self.last_view_flush = now;
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
            tokio::spawn(async move {
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
        tokio::spawn(async move {
            if let Err(e) = cluster.delete_task_jobs(&task_id).await {
                tracing::warn!(task = %task_id, error = %e, "could not delete the task's Jobs");
            }
        });
    }
}

/// Moves a run's ended node attempts into the pull counters and histogram.
fn count_ended_attempts(metrics: &Metrics, run: &mut TaskRun) {
    for (outcome, secs) in run.ended.drain(..) {
        metrics.node_pull(outcome);
        if secs >= 0.0 {
            metrics.image_pull_duration.observe(secs);
        }
    }
}

fn elapsed(since: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (now - since).to_std().unwrap_or_default()
}

/// Nodes a task pulls on: selector ∧ names, Ready, not cordoned, taints per spec; sorted by name.
pub fn select_nodes<'a>(nodes: &'a [NodeInfo], spec: &TaskSpec) -> Vec<&'a NodeInfo> {
    let names: HashSet<&str> = spec.node_names.iter().map(String::as_str).collect();
    let mut selected: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| {
            spec.node_selector
                .iter()
                .all(|(k, v)| n.labels.get(k) == Some(v))
                && (names.is_empty() || names.contains(n.name.as_str()))
                && n.usable()
                && (spec.tolerate_taints || !n.tainted)
        })
        .collect();
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    selected
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
