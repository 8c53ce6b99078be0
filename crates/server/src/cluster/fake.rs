//! The one in-memory `Cluster` for unit tests of the engine and the HTTP
//! layer. Jobs live in a map; pods are whatever a test reports; Job
//! creations can be made to fail on demand the ways a real API server
//! fails (throttling with `Retry-After`, server errors, quota refusals,
//! calls that never answer).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    Cluster, ClusterError, ClusterEvent, ClusterResult, JobObservation, NodeInfo, PodObservation,
    PullJob,
};

/// How one Job creation fails.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// An error status, as the API server sends it.
    Status {
        /// HTTP status.
        code: u16,
        /// Kubernetes reason.
        reason: &'static str,
        /// `Retry-After`, if the server sets one.
        retry_after: Option<Duration>,
    },
    /// The call never answers (the caller's timeout must end it).
    Hang,
}

impl Fault {
    /// 429 with `Retry-After: secs`.
    pub(crate) fn throttled(secs: u64) -> Fault {
        Fault::Status {
            code: 429,
            reason: "TooManyRequests",
            retry_after: Some(Duration::from_secs(secs)),
        }
    }
    /// 500 without advice.
    pub(crate) fn server_error() -> Fault {
        Fault::Status {
            code: 500,
            reason: "InternalError",
            retry_after: None,
        }
    }
    /// 403 as a ResourceQuota answers it.
    pub(crate) fn quota() -> Fault {
        Fault::Status {
            code: 403,
            reason: "Forbidden",
            retry_after: None,
        }
    }
    /// 422: the Job itself is invalid.
    pub(crate) fn invalid() -> Fault {
        Fault::Status {
            code: 422,
            reason: "Invalid",
            retry_after: None,
        }
    }
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeInfo>,
    alive: BTreeMap<String, PullJob>,
    creates: Vec<String>,
    create_calls: usize,
    /// Jobs whose every container was reported terminated (done pulling).
    finished: HashSet<String>,
    max_pulling_per_task: HashMap<String, usize>,
    faults: VecDeque<Fault>,
}

/// A cluster in memory.
pub(crate) struct FakeCluster {
    state: Mutex<State>,
    events: broadcast::Sender<ClusterEvent>,
    /// Whether `probe` succeeds.
    pub(crate) probe_ok: AtomicBool,
    /// While set, Job deletions never answer (an API server slow to delete).
    pub(crate) hold_deletes: AtomicBool,
}

impl Default for FakeCluster {
    fn default() -> Self {
        FakeCluster::with_nodes(Vec::new())
    }
}

impl FakeCluster {
    /// A connected cluster without nodes whose probe succeeds.
    pub(crate) fn new() -> FakeCluster {
        FakeCluster::default()
    }

    /// A connected cluster with these nodes.
    pub(crate) fn with_nodes(nodes: Vec<NodeInfo>) -> FakeCluster {
        FakeCluster {
            state: Mutex::new(State {
                nodes,
                ..State::default()
            }),
            events: broadcast::channel(1024).0,
            probe_ok: AtomicBool::new(true),
            hold_deletes: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next creations fail with these faults, one each, in order.
    pub(crate) fn fail_creates(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Jobs that exist now.
    pub(crate) fn alive(&self) -> Vec<PullJob> {
        self.lock().alive.values().cloned().collect()
    }

    /// Names of the Jobs created, in order (adopted ones not counted again).
    pub(crate) fn creates(&self) -> Vec<String> {
        self.lock().creates.clone()
    }

    /// Create calls made, failed ones included.
    pub(crate) fn create_calls(&self) -> usize {
        self.lock().create_calls
    }

    /// Most Jobs of `task` pulling at once: alive and not reported finished.
    pub(crate) fn max_pulling(&self, task: &str) -> usize {
        self.lock()
            .max_pulling_per_task
            .get(task)
            .copied()
            .unwrap_or(0)
    }

    /// Notes that Job `name`'s containers all ended: it pulls nothing more.
    pub(crate) fn finished(&self, name: &str) {
        self.lock().finished.insert(name.to_owned());
    }

    /// Replaces the nodes without telling any watcher (the next resync sees them).
    pub(crate) fn set_nodes(&self, nodes: Vec<NodeInfo>) {
        self.lock().nodes = nodes;
    }

    /// Removes a Job without telling any watcher (deleted during a watch gap).
    pub(crate) fn delete_unseen(&self, name: &str) {
        self.lock().alive.remove(name);
    }
}

#[async_trait]
impl Cluster for FakeCluster {
    async fn synced(&self) {}
    fn nodes(&self) -> Vec<NodeInfo> {
        self.lock().nodes.clone()
    }
    fn jobs(&self) -> Vec<JobObservation> {
        self.alive()
            .into_iter()
            .map(|j| JobObservation {
                name: j.name(),
                task_id: j.task_id.clone(),
                node: j.node.clone(),
                attempt: j.attempt,
                failed_reason: None,
            })
            .collect()
    }
    fn pods(&self) -> Vec<PodObservation> {
        Vec::new()
    }
    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }
    async fn create_job(&self, job: &PullJob) -> ClusterResult<()> {
        let fault = {
            let mut s = self.lock();
            s.create_calls += 1;
            s.faults.pop_front()
        };
        match fault {
            Some(Fault::Status {
                code,
                reason,
                retry_after,
            }) => {
                return Err(ClusterError::Api {
                    code,
                    reason: reason.to_owned(),
                    message: format!("injected {code} {reason}"),
                    retry_after,
                })
            }
            Some(Fault::Hang) => std::future::pending::<()>().await,
            None => {}
        }
        let mut s = self.lock();
        // An existing Job of that name is adopted (the trait's 409 rule).
        if s.alive.contains_key(&job.name()) {
            return Ok(());
        }
        s.creates.push(job.name());
        s.alive.insert(job.name(), job.clone());
        let n = s
            .alive
            .values()
            .filter(|j| j.task_id == job.task_id && !s.finished.contains(&j.name()))
            .count();
        let m = s
            .max_pulling_per_task
            .entry(job.task_id.clone())
            .or_default();
        *m = (*m).max(n);
        Ok(())
    }
    async fn delete_job(&self, name: &str) -> ClusterResult<()> {
        if self.hold_deletes.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.lock().alive.remove(name);
        Ok(())
    }
    async fn delete_task_jobs(&self, task_id: &str) -> ClusterResult<()> {
        self.lock().alive.retain(|_, j| j.task_id != task_id);
        Ok(())
    }
    fn connected(&self) -> bool {
        true
    }
    async fn probe(&self) -> ClusterResult<()> {
        if self.probe_ok.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(ClusterError::Unreachable("connection refused".into()))
        }
    }
}
