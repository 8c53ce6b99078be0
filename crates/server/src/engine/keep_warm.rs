//! The keep-warm controller: keeps every enabled policy's images on the
//! nodes it selects, through the same engine (and cluster-wide window) as
//! any task.
//!
//! Each pass is level-triggered: it reads the policies, the running
//! keep-warm tasks and the node cache, and for each enabled policy starts one
//! task (`trigger: keep-warm`, linked to the policy) for the selected nodes
//! that lack an image and are neither in a running task of the policy nor
//! backing off after a failure; it removes the policy's gating taint from
//! the nodes that are warm. After a restart the same reading reaches the
//! same decisions, so nodes that joined while the service was down are
//! warmed at the first pass.
//!
//! A pass runs when the cluster reports a node change that matters here (one
//! joins or leaves, turns Ready or NotReady, changes its taints, labels or
//! image list; after [`SETTLE`], so nodes joining together share one task),
//! after a relist, when the API changes a policy, when a failed node's
//! backoff ends, and at least every [`RESYNC`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use prewarm_api::{KeepWarmPolicy, PodToleration, PolicyRun, TaskStatus, TaskTrigger};
use rand::Rng;
use tokio::sync::{broadcast, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::submit::submit_task;
use super::EngineHandle;
use crate::clock::Clock;
use crate::cluster::workload::resolve_spec;
use crate::cluster::{Cluster, ClusterEvent};
use crate::domain::keep_warm::{decide, policy_spec, GATE_EFFECT};
use crate::domain::node_pull::{NodePhase, NodePull};
use crate::domain::task::{TaskSpec, MAX_NODE_NAMES};
use crate::store::{PolicyStore, StoreResult, TaskStore};

/// Longest time between passes without a wake.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long node changes are gathered before a pass.
pub const SETTLE: Duration = Duration::from_millis(500);
/// First wait before a node whose run failed is tried again; doubles per failure.
const RETRY_FIRST: Duration = Duration::from_secs(30);
/// Longest wait before a failed node is tried again.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// A cheap handle for the API: tells the controller a policy changed.
#[derive(Clone, Debug, Default)]
pub struct KeepWarmHandle {
    notify: Arc<Notify>,
}

impl KeepWarmHandle {
    /// A handle no controller listens to yet (see [`KeepWarm::with_handle`]).
    pub fn new() -> KeepWarmHandle {
        KeepWarmHandle {
            notify: Arc::new(Notify::new()),
        }
    }

    /// Makes the controller run a pass now.
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// A (policy id, node name) pair.
type PolicyNode = (String, String);

/// When a node whose run failed may be tried again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

/// The keep-warm controller loop.
pub struct KeepWarm {
    policies: Arc<dyn PolicyStore>,
    tasks: Arc<dyn TaskStore>,
    cluster: Arc<dyn Cluster>,
    engine: EngineHandle,
    clock: Arc<dyn Clock>,
    notify: Arc<Notify>,
    /// Keep-warm tasks seen pending or running (task id → policy id); their
    /// outcome is read once they end.
    runs: HashMap<String, String>,
    /// Pairs a run completed, though the kubelet (listing 50 images) may not show it.
    warmed: HashSet<PolicyNode>,
    /// Pairs whose last run did not complete: not tried again before `until`.
    backoff: HashMap<PolicyNode, Backoff>,
    /// Last seen `updatedAt` per policy: an edited policy starts afresh.
    versions: HashMap<String, chrono::DateTime<chrono::Utc>>,
}

impl KeepWarm {
    /// A controller over these parts; nothing runs until `run` (or `pass`).
    pub fn new(
        policies: Arc<dyn PolicyStore>,
        tasks: Arc<dyn TaskStore>,
        cluster: Arc<dyn Cluster>,
        engine: EngineHandle,
        clock: Arc<dyn Clock>,
    ) -> KeepWarm {
        KeepWarm {
            policies,
            tasks,
            cluster,
            engine,
            clock,
            notify: Arc::new(Notify::new()),
            runs: HashMap::new(),
            warmed: HashSet::new(),
            backoff: HashMap::new(),
            versions: HashMap::new(),
        }
    }

    /// Listens to `handle` (shared across leadership terms) instead of its own.
    pub fn with_handle(mut self, handle: &KeepWarmHandle) -> KeepWarm {
        self.notify = handle.notify.clone();
        self
    }

    /// A handle for the HTTP layer.
    pub fn handle(&self) -> KeepWarmHandle {
        KeepWarmHandle {
            notify: self.notify.clone(),
        }
    }

    /// Runs passes until `shutdown` is cancelled. A failed pass (store or
    /// cluster away) is logged and tried again at the next wake.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut events = self.cluster.subscribe();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = self.cluster.synced() => {}
        }
        loop {
            if let Err(err) = self.pass().await {
                tracing::warn!(error = %err, "keep-warm pass failed; trying again shortly");
            }
            if !self.wait(&mut events, &shutdown).await {
                return Ok(());
            }
        }
    }

    /// Waits for a reason to pass again; false once `shutdown` is cancelled.
    async fn wait(
        &self,
        events: &mut broadcast::Receiver<ClusterEvent>,
        shutdown: &CancellationToken,
    ) -> bool {
        let now = Instant::now();
        // The next backoff to end, if sooner than the resync.
        let deadline = self
            .backoff
            .values()
            .map(|b| b.until)
            .filter(|until| *until > now)
            .fold(now + RESYNC, Instant::min);
        let mut events_open = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = self.notify.notified() => return true,
                _ = tokio::time::sleep_until(deadline) => return true,
                event = events.recv(), if events_open => match event {
                    Ok(ClusterEvent::NodeChanged(_) | ClusterEvent::NodeDeleted(_) | ClusterEvent::Resynced)
                    | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Closed) => events_open = false,
                },
            }
        }
        // Nodes joining together share one pass (and one task).
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(SETTLE) => {}
        }
        // The pass reads the state as it is now, so whatever else is queued
        // is seen by it. Left queued, every event (a task's pod updates
        // included) would stay in the shared channel: a receiver that reads
        // only up to the next node change falls behind by the channel's
        // whole capacity, and the channel keeps that many events in memory.
        drain(events);
        true
    }

    /// One level-triggered pass over every policy.
    pub async fn pass(&mut self) -> StoreResult<()> {
        let policies = self.policies.all_policies().await?;
        let active = self
            .tasks
            .list_with_status(&[TaskStatus::Pending, TaskStatus::Running])
            .await?;
        let mut busy: HashMap<String, HashSet<String>> = HashMap::new();
        let mut running = HashSet::new();
        for task in active
            .into_iter()
            .filter(|t| t.trigger == TaskTrigger::KeepWarm)
        {
            let Some(policy) = task.keep_warm_policy_id else {
                continue;
            };
            busy.entry(policy.clone())
                .or_default()
                .extend(task.node_names);
            running.insert(task.task_id.clone());
            self.runs.insert(task.task_id, policy);
        }
        let ended: Vec<(String, String)> = self
            .runs
            .iter()
            .filter(|(id, _)| !running.contains(*id))
            .map(|(id, policy)| (id.clone(), policy.clone()))
            .collect();
        for (task_id, policy) in ended {
            self.settle(&task_id, &policy).await?;
            self.runs.remove(&task_id);
        }
        self.forget_changed(&policies);

        let nodes = self.cluster.nodes();
        for policy in policies.iter().filter(|p| p.enabled) {
            let Some(spec) = self.run_spec(policy).await else {
                continue;
            };
            let gate = policy.remove_taint.as_deref();
            let now = Instant::now();
            let no_busy = HashSet::new();
            let busy = busy.get(&policy.id).unwrap_or(&no_busy);
            let pass = decide(
                &nodes,
                &spec,
                gate,
                |n| self.warmed.contains(&(policy.id.clone(), n.to_owned())),
                |n| {
                    busy.contains(n)
                        || self
                            .backoff
                            .get(&(policy.id.clone(), n.to_owned()))
                            .is_some_and(|b| b.until > now)
                },
            );
            for chunk in pass.to_warm.chunks(MAX_NODE_NAMES) {
                self.start_run(policy, &spec, chunk).await?;
            }
            if let Some(key) = gate {
                for node in &pass.to_untaint {
                    match self.cluster.remove_node_taint(node, key, GATE_EFFECT).await {
                        Ok(true) => {
                            tracing::info!(policy = %policy.id, node, taint = key, "node warm; gating taint removed")
                        }
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(policy = %policy.id, node, taint = key, error = %err, "removing the gating taint failed; trying again at the next pass")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The spec of the policy's next run, its workload read now; `None`
    /// (logged) when it cannot be built.
    async fn run_spec(&self, policy: &KeepWarmPolicy) -> Option<TaskSpec> {
        let spec = match policy_spec(policy) {
            Ok(spec) => spec,
            Err(err) => {
                tracing::warn!(policy = %policy.id, error = %err, "stored keep-warm policy is invalid; skipped");
                return None;
            }
        };
        let mut spec = match resolve_spec(self.cluster.as_ref(), spec, self.clock.now()).await {
            Ok(spec) => spec,
            Err(err) => {
                tracing::warn!(policy = %policy.id, error = %err, "keep-warm policy's workload cannot be resolved; skipped this pass");
                return None;
            }
        };
        if let Some(key) = &policy.remove_taint {
            // A run names its nodes; the gating taint must not make the engine leave them out.
            spec.tolerate_taints = true;
            if let Some(workload) = spec.workload.as_mut() {
                workload.tolerations.push(PodToleration {
                    key: key.clone(),
                    operator: "Exists".to_owned(),
                    value: String::new(),
                    effect: GATE_EFFECT.to_owned(),
                });
            }
        }
        Some(spec)
    }

    /// Starts a run of `policy` for `nodes` and records it on the policy.
    async fn start_run(
        &mut self,
        policy: &KeepWarmPolicy,
        spec: &TaskSpec,
        nodes: &[String],
    ) -> StoreResult<()> {
        let mut spec = spec.clone();
        spec.node_names = nodes.to_vec();
        let task = submit_task(
            self.tasks.as_ref(),
            &self.engine,
            self.clock.as_ref(),
            &spec,
            &policy.created_by,
        )
        .await?;
        tracing::info!(policy = %policy.id, task = %task.task_id, nodes = nodes.len(), "keep-warm run started");
        self.runs.insert(task.task_id.clone(), policy.id.clone());
        let run = PolicyRun {
            task_id: task.task_id.clone(),
            created_at: task.created_at,
            nodes: nodes.len() as u32,
            status: None,
            completed_nodes: 0,
            failed_nodes: 0,
        };
        self.policies.record_policy_run(&policy.id, &run).await?;
        Ok(())
    }

    /// Reads how an ended run went: completed nodes count as warm, the others
    /// back off before they are tried again.
    async fn settle(&mut self, task_id: &str, policy: &str) -> StoreResult<()> {
        let Some(task) = self.tasks.get(task_id).await? else {
            return Ok(());
        };
        let mut completed = HashSet::new();
        for record in self.tasks.nodes(task_id).await? {
            if let Ok(node) = serde_json::from_value::<NodePull>(record.body) {
                if matches!(node.phase, NodePhase::Completed { .. }) {
                    completed.insert(node.node);
                }
            }
        }
        let now = Instant::now();
        for node in task.node_names {
            let key = (policy.to_owned(), node);
            if completed.contains(&key.1) {
                self.backoff.remove(&key);
                self.warmed.insert(key);
            } else {
                let failures = self.backoff.get(&key).map_or(0, |b| b.failures) + 1;
                let base = RETRY_FIRST
                    .saturating_mul(1 << (failures - 1).min(10))
                    .min(RETRY_MAX);
                let jitter = rand::rng().random_range(0.0..0.2);
                let until = now + base.mul_f64(1.0 + jitter);
                self.backoff.insert(key, Backoff { failures, until });
            }
        }
        Ok(())
    }

    /// Drops what was learned about deleted or edited policies.
    fn forget_changed(&mut self, policies: &[KeepWarmPolicy]) {
        let current: HashMap<&str, _> = policies
            .iter()
            .map(|p| (p.id.as_str(), p.updated_at))
            .collect();
        let stale: HashSet<String> = self
            .versions
            .iter()
            .filter(|(id, at)| current.get(id.as_str()) != Some(*at))
            .map(|(id, _)| id.clone())
            .collect();
        if !stale.is_empty() {
            self.warmed.retain(|(p, _)| !stale.contains(p));
            self.backoff.retain(|(p, _), _| !stale.contains(p));
        }
        self.versions = policies
            .iter()
            .map(|p| (p.id.clone(), p.updated_at))
            .collect();
    }
}

/// Takes every event queued for `events` without waiting.
fn drain(events: &mut broadcast::Receiver<ClusterEvent>) {
    loop {
        match events.try_recv() {
            Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::cluster::fake::FakeCluster;
    use crate::cluster::JobObservation;
    use crate::engine::Engine;
    use crate::store::MemoryStore;

    fn controller() -> KeepWarm {
        let store = Arc::new(MemoryStore::new());
        let cluster = Arc::new(FakeCluster::new());
        let clock = Arc::new(ManualClock::new("2024-01-16T10:00:00Z".parse().unwrap()));
        let engine = Engine::new(
            store.clone(),
            cluster.clone(),
            clock.clone(),
            crate::testing::engine_config(),
        );
        KeepWarm::new(store.clone(), store, cluster, engine.handle(), clock)
    }

    fn job_event(i: usize) -> ClusterEvent {
        ClusterEvent::JobChanged(Box::new(JobObservation {
            name: format!("pw-{i}"),
            task_id: "task-1".into(),
            node: format!("n{i}"),
            attempt: 0,
            failed_reason: None,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_leaves_no_event_queued_behind_it() {
        let kw = controller();
        let (tx, mut rx) = broadcast::channel(4096);
        let stop = CancellationToken::new();
        // A task's pod and Job updates, a node change among them, more updates.
        for i in 0..1000 {
            tx.send(job_event(i)).unwrap();
        }
        tx.send(ClusterEvent::NodeChanged(Box::default())).unwrap();
        for i in 0..1000 {
            tx.send(job_event(i)).unwrap();
        }
        assert!(kw.wait(&mut rx, &stop).await, "woken for the node change");
        assert_eq!(
            rx.len(),
            0,
            "the updates after the node change are taken, not left in the channel"
        );
        // Events sent while it settles are taken as well.
        tx.send(ClusterEvent::NodeChanged(Box::default())).unwrap();
        let waiting = kw.wait(&mut rx, &stop);
        tokio::pin!(waiting);
        tokio::select! {
            biased;
            _ = &mut waiting => panic!("returned before settling"),
            () = tokio::time::sleep(SETTLE / 2) => {}
        }
        for i in 0..100 {
            tx.send(job_event(i)).unwrap();
        }
        assert!(waiting.await);
        assert_eq!(tx.len(), 0, "nothing left queued for the controller");
    }
}
