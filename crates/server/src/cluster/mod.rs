//! Everything the engine needs from Kubernetes, behind the `Cluster` trait.
//!
//! The kube-rs implementation (`kube.rs`) keeps watch-fed caches of Nodes and
//! of the service's own pull Jobs and Pods; reads come from those caches and
//! changes arrive as `ClusterEvent`s, so the engine never polls the API.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::broadcast;

#[cfg(test)]
pub(crate) mod fake;
pub mod kube;
pub mod lean;
pub mod node_taint;
pub mod pull_job;
pub mod workload;

pub use pull_job::PullJob;

/// Label on every object the service creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of `MANAGED_BY_LABEL`.
pub const MANAGED_BY_VALUE: &str = "prewarm";
/// Label naming the task a pull Job belongs to.
pub const TASK_LABEL: &str = "prewarm.io/task-id";
/// Label naming the node a pull Job is pinned to.
pub const NODE_LABEL: &str = "prewarm.io/node";
/// Label with the attempt number of a pull Job.
pub const ATTEMPT_LABEL: &str = "prewarm.io/attempt";
/// Annotation with the full node name (labels cap values at 63 characters).
pub const NODE_ANNOTATION: &str = "prewarm.io/node-name";

/// What the service creates per (task, node, attempt) to pull the images.
///
/// Both give the same guarantees (pinned with `nodeName`, a deterministic name
/// adopted after a restart, `activeDeadlineSeconds`, cleanup by label, one
/// create and one delete per node); the engine cannot tell them apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PullMode {
    /// A pull Pod created directly: no controller in between, so the
    /// controller-manager's client QPS does not pace the pulls (the default:
    /// twice as fast as Jobs at the upstream QPS of 20, see BENCHMARKS.md).
    #[default]
    Pods,
    /// A Job per node, whose pod the controller-manager's Job controller
    /// creates (for clusters whose policies admit only Jobs).
    Jobs,
}

/// Why a cluster call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server answered with an error status.
    #[error("kubernetes API: {code} {reason}: {message}")]
    Api {
        /// HTTP status.
        code: u16,
        /// Kubernetes reason (`Forbidden`, `Invalid`, ...).
        reason: String,
        /// Server message.
        message: String,
        /// How long the server asked the client to wait (`Retry-After`), if it did.
        retry_after: Option<std::time::Duration>,
    },
    /// The API server could not be reached.
    #[error("kubernetes API unreachable: {0}")]
    Unreachable(String),
}

impl ClusterError {
    /// The wait the API server asked for before trying again, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClusterError::Api { retry_after, .. } => *retry_after,
            ClusterError::Unreachable(_) => None,
        }
    }
}

/// Result of cluster calls.
pub type ClusterResult<T> = Result<T, ClusterError>;

/// A node taint (`spec.taints[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTaint {
    /// Taint key.
    pub key: String,
    /// Taint value (empty when none).
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

/// What the engine knows about a node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Ready condition is True.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Carries a NoSchedule or NoExecute taint.
    pub tainted: bool,
    /// Every taint, for matching a pod's tolerations.
    pub taints: Vec<NodeTaint>,
    /// Names from `status.images` (a hint: the kubelet reports at most 50).
    pub images: Vec<String>,
    /// `sizeBytes` of the `status.images` entry each of `images` belongs to,
    /// in the same order (shorter when sizes are not reported).
    pub image_sizes: Vec<u64>,
    /// The reported images' sizes added up, each image once.
    pub images_bytes: u64,
    /// Allocatable `ephemeral-storage` in bytes, when reported.
    pub ephemeral_storage: Option<u64>,
    /// The `DiskPressure` condition is True.
    pub disk_pressure: bool,
}

impl NodeInfo {
    /// Whether a pull may be started on it at all.
    pub fn usable(&self) -> bool {
        self.ready && !self.unschedulable
    }

    /// A digest of what the engine and keep-warm read: name, Ready, cordon,
    /// labels, taints, images, disk pressure and room (a change of any is
    /// worth an event).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &self.name,
            self.ready,
            self.unschedulable,
            &self.labels,
            &self.images,
        )
            .hash(&mut h);
        (self.disk_pressure, self.ephemeral_storage).hash(&mut h);
        for t in &self.taints {
            (&t.key, &t.value, &t.effect).hash(&mut h);
        }
        h.finish()
    }
}

/// How one pull container stands, as the kubelet reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerState {
    /// Not started; `reason` as reported (`ContainerCreating`, `ErrImagePull`, ...).
    Waiting {
        /// Kubelet reason, empty if none.
        reason: String,
        /// Kubelet message.
        message: String,
    },
    /// Started: the image is on the node.
    Running,
    /// Ran and ended: the image is on the node.
    Terminated,
}

/// One container of a pull pod.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerObservation {
    /// Container name (`img-<index>` for image containers).
    pub name: String,
    /// Its state.
    pub state: ContainerState,
    /// `imageID` as reported (holds the resolved digest once pulled).
    pub image_id: String,
}

/// A pull pod as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct PodObservation {
    /// Pod name.
    pub name: String,
    /// Owning Job name.
    pub job: String,
    /// `prewarm.io/task-id`.
    pub task_id: String,
    /// Full node name.
    pub node: String,
    /// `prewarm.io/attempt`.
    pub attempt: u32,
    /// Pod phase (`Pending`, `Running`, `Succeeded`, `Failed`).
    pub phase: String,
    /// Pod-level reason (`DeadlineExceeded`, ...).
    pub reason: String,
    /// Pod-level message.
    pub message: String,
    /// Init containers (the helper).
    pub init_containers: Vec<ContainerObservation>,
    /// Image containers.
    pub containers: Vec<ContainerObservation>,
}

/// A pull Job as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobObservation {
    /// Job name.
    pub name: String,
    /// `prewarm.io/task-id`.
    pub task_id: String,
    /// Full node name.
    pub node: String,
    /// `prewarm.io/attempt`.
    pub attempt: u32,
    /// The Job failed as a whole (e.g. `DeadlineExceeded`) without a pod saying why.
    pub failed_reason: Option<String>,
}

/// A change the engine reacts to. The payloads are boxed: the event channel
/// holds tens of thousands of slots, each as large as an event.
#[derive(Debug, Clone)]
pub enum ClusterEvent {
    /// A node was added or changed.
    NodeChanged(Box<NodeInfo>),
    /// A node was deleted.
    NodeDeleted(String),
    /// A pull pod was added or changed.
    PodChanged(Box<PodObservation>),
    /// A pull Job was added or changed.
    JobChanged(Box<JobObservation>),
    /// A pull Job is gone.
    JobDeleted(Box<JobObservation>),
    /// The caches were rebuilt from a fresh list; re-read the snapshots.
    Resynced,
}

/// The engine's view of Kubernetes.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Waits until the caches hold a complete first list.
    async fn synced(&self);
    /// Every node, from the cache.
    fn nodes(&self) -> Vec<NodeInfo>;
    /// Every pull object of the service (Jobs, or in `PullMode::Pods` the
    /// pull Pods themselves), from the cache.
    fn jobs(&self) -> Vec<JobObservation>;
    /// Every pull pod of the service, from the cache.
    fn pods(&self) -> Vec<PodObservation>;
    /// Changes, in the order seen. A receiver that lags gets `Lagged` and must
    /// re-read the snapshots (level-triggered).
    fn subscribe(&self) -> broadcast::Receiver<ClusterEvent>;
    /// Creates the pull object (a Job or a Pod, per `PullMode`) named
    /// `job.name()`; an existing one of that name counts as success (adoption).
    async fn create_job(&self, job: &PullJob) -> ClusterResult<()>;
    /// Deletes the pull object `name` (a Job with Background propagation, or
    /// a Pod); a missing one counts as success.
    async fn delete_job(&self, name: &str) -> ClusterResult<()>;
    /// Deletes every pull object of a task.
    async fn delete_task_jobs(&self, task_id: &str) -> ClusterResult<()>;
    /// Whether the API server answered recently (cached; never blocks).
    fn connected(&self) -> bool;
    /// Asks the API server now (for `/readyz`).
    async fn probe(&self) -> ClusterResult<()>;
    /// Reads a workload's pod template (one GET); `None` when it does not exist.
    async fn read_workload(
        &self,
        workload: &prewarm_api::WorkloadRef,
    ) -> ClusterResult<Option<prewarm_api::ResolvedWorkload>> {
        Err(ClusterError::Unreachable(format!(
            "this cluster cannot read {:?} workloads",
            workload.kind
        )))
    }
    /// Whether a Secret of this name exists in the service's namespace.
    async fn secret_exists(&self, name: &str) -> ClusterResult<bool> {
        Err(ClusterError::Unreachable(format!(
            "this cluster cannot read Secret {name}"
        )))
    }
    /// Removes the taint `key` with `effect` from `node`; whether one was removed.
    async fn remove_node_taint(&self, node: &str, key: &str, effect: &str) -> ClusterResult<bool> {
        Err(ClusterError::Unreachable(format!(
            "this cluster cannot remove taint {key}:{effect} from node {node}"
        )))
    }
}
