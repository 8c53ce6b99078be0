//! Wire types of the prewarm HTTP API, shared by the server, the CLI and tests.
//!
//! Field names and shapes are the contract of `docs/api.md`: camelCase JSON,
//! RFC 3339 UTC timestamps, `null` for absent optional values in views.
//! Request bodies reject unknown fields so a typo never silently does nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

mod keep_warm;

pub use keep_warm::{
    CreateKeepWarmPolicyRequest, KeepWarmPolicy, KeepWarmPolicyList, PolicyCoverage, PolicyRun,
    TaskTrigger, UpdateKeepWarmPolicyRequest,
};

/// Lifecycle of a prewarm task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Stored, waiting for the engine to pick it up.
    Pending,
    /// Pull Jobs are being created and tracked.
    Running,
    /// Every selected node holds every image.
    Completed,
    /// Some (node, image) pair failed for good, no node matched, or the task timed out.
    Failed,
    /// Stopped by a user.
    Cancelled,
}

impl TaskStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the task has ended and can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the wait before a retry grows with the attempt number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RetryStrategy {
    /// d, d, d
    #[default]
    Fixed,
    /// d, 2d, 3d
    Linear,
    /// d, 2d, 4d
    Exponential,
}

/// Image pull policy set on the pull containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub enum PullPolicy {
    /// Pull only when the node lacks the image; nodes reporting it count as done.
    #[default]
    IfNotPresent,
    /// Always ask the registry (refreshes moving tags).
    Always,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Always => "Always",
        }
    }
}

/// Kinds of workload a task can take its images and nodes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// batch/v1 Job.
    Job,
    /// batch/v1 CronJob (its job template's pod template).
    CronJob,
}

/// A workload whose pod template names the images and constrains the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job` or `CronJob`.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl WorkloadRef {
    /// `Kind/namespace/name` (the `fromWorkload` query parameter and CLI flag
    /// form) → a reference; names are checked where it is used.
    pub fn parse(raw: &str) -> Result<WorkloadRef, String> {
        let mut parts = raw.splitn(3, '/');
        let (Some(kind), Some(namespace), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("expected Kind/namespace/name, got {raw:?}"));
        };
        let kind = match kind {
            "Deployment" => WorkloadKind::Deployment,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "Job" => WorkloadKind::Job,
            "CronJob" => WorkloadKind::CronJob,
            other => {
                return Err(format!(
                    "unknown kind {other:?}; use Deployment, StatefulSet, DaemonSet, Job or CronJob"
                ))
            }
        };
        Ok(WorkloadRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

/// One requirement of a node selector term (`matchExpressions` / `matchFields`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRequirement {
    /// Label key (or `metadata.name` for a field requirement).
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt` or `Lt`.
    pub operator: String,
    /// Values the operator compares with.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A node selector term: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTerm {
    /// On node labels.
    #[serde(default)]
    pub match_expressions: Vec<NodeRequirement>,
    /// On node fields (`metadata.name`).
    #[serde(default)]
    pub match_fields: Vec<NodeRequirement>,
}

/// A pod toleration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodToleration {
    /// Taint key; empty with `Exists` tolerates every taint.
    #[serde(default)]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default)]
    pub operator: String,
    /// Taint value (for `Equal`).
    #[serde(default)]
    pub value: String,
    /// Taint effect; empty matches every effect.
    #[serde(default)]
    pub effect: String,
}

/// What a `fromWorkload` reference resolved to when the task started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedWorkload {
    /// The workload read.
    pub workload: WorkloadRef,
    /// Images of its init containers and containers, as written (digests kept).
    pub images: Vec<String>,
    /// The pod template's `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity terms (ORed); empty = no constraint.
    pub node_affinity: Vec<NodeTerm>,
    /// The pod template's tolerations, matched against node taints.
    pub tolerations: Vec<PodToleration>,
    /// Pull secrets named in the pod template (must exist in the service's namespace).
    pub image_pull_secrets: Vec<String>,
    /// The workload's `metadata.resourceVersion` when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// The workload's `metadata.generation` when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When it was read (the task's start; a schedule's fire, a keep-warm pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Nodes its constraints (with the task's own) selected at the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_nodes: Option<u32>,
}

/// A patch field that can be removed as well as set: absent stays `None`
/// (keep), `null` becomes `Some(None)` (remove), a value `Some(Some(v))`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Declares [`CreateTaskRequest`] and [`TaskConfigPatch`] from one list of the
/// task's optional settings, so the patch can set exactly what a create body
/// can (and remove `fromWorkload`), and
/// [`TaskConfigPatch::apply`] merges every one of them. Each setting has the
/// create body's doc and the patch's (as a literal: the OpenAPI derive reads
/// only literal docs).
macro_rules! task_request_and_patch {
    ($( $(#[doc = $doc:literal])+ $field:ident: $ty:ty, patch: $patch_doc:literal; )+) => {
        /// Body of `POST /api/v1/tasks` as sent by a client: only `images` is required.
        ///
        /// This is the raw wire form; the server turns it into a validated spec.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        #[schema(example = json!({"images": ["nginx:1.25", "redis:7"], "batchSize": 10, "nodeSelector": {"workload": "compute"}}))]
        pub struct CreateTaskRequest {
            /// Image references, 1..=100, no duplicates (may be empty with `fromWorkload`).
            #[serde(default)]
            pub images: Vec<String>,
            $(
                $(#[doc = $doc])+
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )+
            /// Take images (added to `images`), node constraints and pull secrets from
            /// this workload's pod template. The reference is checked at create; the
            /// workload is read when the task starts (`resolvedWorkload`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub from_workload: Option<WorkloadRef>,
        }

        /// Part of a task create body, for merging into a stored `taskConfig`: fields
        /// present replace the stored ones, absent fields keep them.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct TaskConfigPatch {
            /// Replaces the image list.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub images: Option<Vec<String>>,
            $(
                #[doc = $patch_doc]
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )+
            /// Replaces the workload the images and nodes come from; `null` removes it.
            #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<WorkloadRef>, nullable = true)]
            pub from_workload: Option<Option<WorkloadRef>>,
        }

        impl TaskConfigPatch {
            /// `base` with every field present in the patch replaced.
            pub fn apply(self, base: CreateTaskRequest) -> CreateTaskRequest {
                CreateTaskRequest {
                    images: self.images.unwrap_or(base.images),
                    $( $field: self.$field.or(base.$field), )+
                    from_workload: self.from_workload.unwrap_or(base.from_workload),
                }
            }
        }
    };
}

task_request_and_patch! {
    /// Nodes pulling at once (1..=1000, default 10).
    batch_size: u32, patch: "See [`CreateTaskRequest::batch_size`].";
    /// Exact label match on nodes.
    node_selector: BTreeMap<String, String>, patch: "See [`CreateTaskRequest::node_selector`].";
    /// Explicit node list, combined with `nodeSelector` by AND.
    node_names: Vec<String>, patch: "See [`CreateTaskRequest::node_names`].";
    /// Higher runs first (-1000..=1000, default 0).
    priority: i32, patch: "See [`CreateTaskRequest::priority`].";
    /// Retries per failed (node, image) pair (0..=10, default 0).
    max_retries: u32, patch: "See [`CreateTaskRequest::max_retries`].";
    /// `fixed` (default), `linear` or `exponential`.
    retry_strategy: RetryStrategy, patch: "See [`CreateTaskRequest::retry_strategy`].";
    /// Base retry delay in seconds (0..=3600, default 30).
    retry_delay: u32, patch: "See [`CreateTaskRequest::retry_delay`].";
    /// http(s) URL notified when the task ends.
    webhook_url: String, patch: "See [`CreateTaskRequest::webhook_url`].";
    /// `IfNotPresent` (default) or `Always`.
    pull_policy: PullPolicy, patch: "See [`CreateTaskRequest::pull_policy`].";
    /// Secret names in the service's job namespace.
    image_pull_secrets: Vec<String>, patch: "See [`CreateTaskRequest::image_pull_secrets`].";
    /// Include nodes with NoSchedule/NoExecute taints (default true).
    tolerate_taints: bool, patch: "See [`CreateTaskRequest::tolerate_taints`].";
    /// The first successful pull of each tag fixes its digest; later nodes
    /// pull `repo@sha256:…`, so every node gets the same bytes (default false).
    pin_digests: bool, patch: "See [`CreateTaskRequest::pin_digests`].";
    /// Whole-task limit in seconds, 0 = none.
    timeout_seconds: u64, patch: "See [`CreateTaskRequest::timeout_seconds`].";
    /// Priority class set on the pull pods.
    priority_class_name: String, patch: "See [`CreateTaskRequest::priority_class_name`].";
    /// This task's pull rate per registry host, `N/DURATION` (e.g.
    /// `{"ghcr.io": "600/1m"}`), instead of the service's `--registry-pull-rate`
    /// for those hosts; at most 20 hosts.
    registry_pull_rate: BTreeMap<String, String>, patch: "See [`CreateTaskRequest::registry_pull_rate`].";
}

/// Answer of `POST /api/v1/tasks?dryRun=true`: what the task would do if it
/// started now. Nothing is stored and nothing is created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskPlan {
    /// Always true: this is a plan, not a task.
    pub dry_run: bool,
    /// Nodes the task would cover (its `totalNodes`), already-warm ones included.
    pub selected_nodes: u32,
    /// The first 100 of them, by name.
    pub selected_node_names: Vec<String>,
    /// Nodes left out or needing nothing, by reason
    /// (`NotReady`, `Cordoned`, `Tainted`, `DiskPressure`, `InsufficientDisk`, `AlreadyWarm`).
    pub skipped_by_reason: BTreeMap<String, u32>,
    /// The first 100 of them, by name. `AlreadyWarm`, `DiskPressure` and
    /// `InsufficientDisk` nodes count among the selected nodes (the task
    /// completes or skips them at once) but get no Job.
    pub skipped_node_details: Vec<PlannedSkip>,
    /// Per image: nodes that already hold it and pulls needed.
    pub images: Vec<PlannedImage>,
    /// Pull Jobs that would be created (one per node needing a pull).
    pub jobs: u32,
    /// (node, image) pulls needed in all.
    pub pulls_needed: u32,
    /// Kubernetes API writes, retries not counted: one Job create and one delete per Job.
    pub api_writes: u32,
    /// Seconds to finish: each node pulls its images one after another at its
    /// learned speed (`GET /api/v1/nodes/stats`; nodes without one at the
    /// middle of the known, else at the recent mean node time), `batchSize`
    /// nodes at a time, slowest first; null when nothing is known.
    pub eta_seconds: Option<f64>,
    /// `now + etaSeconds`; null without measurements.
    pub estimated_completion: Option<DateTime<Utc>>,
    /// Nodes that would pull and have a learned speed.
    #[serde(default)]
    pub nodes_with_speed: u32,
    /// The nodes expected to take longest (at most 10, with a learned
    /// speed), slowest first: the task starts them first.
    #[serde(default)]
    pub slowest_nodes: Vec<PlannedNode>,
    /// What the pulls ask of each registry host, by host; a paced host's
    /// wait is part of `etaSeconds` (which is at least the longest wait).
    #[serde(default)]
    pub registries: Vec<PlannedRegistry>,
}

/// What a plan's pulls ask of one registry host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRegistry {
    /// Registry host as the kubelet counts it (`docker.io` for bare names).
    pub host: String,
    /// Nodes that would pull from it (each takes one of its pull tokens).
    pub nodes: u32,
    /// (node, image) pulls from it.
    pub pulls: u32,
    /// Its pull rate `N/DURATION` when paced: the task's `registryPullRate`
    /// for the host, else the service's `--registry-pull-rate`; null when not paced.
    pub pull_rate: Option<String>,
    /// Seconds until the last of its nodes may start at that rate, its tokens
    /// all free to begin with (other tasks' pulls and a 429 backoff can add
    /// to it); 0 when not paced or when the rate covers every node at once.
    pub wait_seconds: f64,
}

/// A node of a plan with its learned pull speed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedNode {
    /// The node.
    pub node_name: String,
    /// Its learned seconds per image pull.
    pub seconds_per_pull: f64,
    /// Images it would pull.
    pub pulls: u32,
    /// Seconds it is expected to take: `secondsPerPull × pulls`.
    pub expected_seconds: f64,
}

/// A node a plan leaves out or finds warm already.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedSkip {
    /// The node.
    pub node_name: String,
    /// `NotReady`, `Cordoned`, `Tainted`, `DiskPressure`, `InsufficientDisk` or `AlreadyWarm`.
    pub reason: String,
    /// For `InsufficientDisk`: the room needed and the room there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One image of a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedImage {
    /// The image as given.
    pub image: String,
    /// Selected nodes whose `status.images` lists it (kubelets report at most 50 images).
    pub nodes_with_image: u32,
    /// Selected nodes that would pull it.
    pub pulls_needed: u32,
}

/// Answer of `GET /api/v1/coverage`: how many of the matching nodes hold
/// each image, from the nodes' `status.images`.
///
/// The kubelet reports at most 50 images per node (the largest first), so on
/// a node at that cap a small image may be present without being listed:
/// `nodesAtImageCap` says how many nodes that can affect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// Ready nodes matching the selector; the percentages are over these.
    pub total_nodes: u32,
    /// Nodes matching the selector left out because they are not Ready.
    pub not_ready_nodes: u32,
    /// Counted nodes that report 50 or more images (the kubelet's cap).
    pub nodes_at_image_cap: u32,
    /// (node, image) pairs present / all pairs × 100, one decimal (0.0 with no nodes, so a gate on it fails).
    pub percentage: f64,
    /// Per image, in the order asked.
    pub images: Vec<ImageCoverage>,
    /// Per counted node, by name: the images it lacks.
    pub nodes: Vec<NodeCoverage>,
    /// With `groupBy=<label key>`: the nodes summarized per value of that label.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<CoverageGroup>,
}

/// Coverage of one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageCoverage {
    /// The image as asked; a digest matches only that digest, a tag only that tag.
    pub image: String,
    /// Counted nodes that hold it.
    pub nodes_with_image: u32,
    /// nodesWithImage / totalNodes × 100, one decimal (0.0 with no nodes, so a gate on it fails).
    pub percentage: f64,
}

/// One node of a coverage answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCoverage {
    /// The node.
    pub node_name: String,
    /// The asked images it does not report.
    pub missing: Vec<String>,
}

/// Coverage of the nodes sharing one value of the `groupBy` label.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoverageGroup {
    /// The label value (empty for nodes without the label).
    pub value: String,
    /// Counted nodes with this value.
    pub nodes: u32,
    /// Of them, nodes holding every asked image.
    pub warm_nodes: u32,
    /// Pairs present / all pairs × 100 within the group, one decimal.
    pub percentage: f64,
}

/// Node counts of a task and where the rolling window stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Nodes selected when the task started.
    pub total_nodes: u32,
    /// Nodes that hold every image.
    pub completed_nodes: u32,
    /// Nodes where some image failed for good.
    pub failed_nodes: u32,
    /// Nodes that went away (deleted or NotReady) mid-task.
    pub skipped_nodes: u32,
    /// `ceil(startedNodes / batchSize)`.
    pub current_batch: u32,
    /// `ceil(totalNodes / batchSize)`.
    pub total_batches: u32,
    /// completed / (total − skipped) × 100, one decimal.
    pub percentage: f64,
    /// Nodes ready to pull but held back because a registry they pull from is
    /// out of pull tokens (`--registry-pull-rate`, `registryPullRate`) or backing
    /// off after refusing pulls (429 `toomanyrequests`).
    #[serde(default)]
    pub waiting_for_registry: u32,
}

/// One (node, image) pair that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedNodeDetail {
    /// The node.
    pub node_name: String,
    /// The image as given in the task.
    pub image: String,
    /// `ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`, `ErrImageNeverPull`,
    /// `RegistryUnavailable`, `Timeout`, ...
    pub reason: String,
    /// What the kubelet (or the engine) said.
    pub message: String,
    /// When the failure became final.
    pub timestamp: DateTime<Utc>,
}

/// A node left out mid-task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedNodeDetail {
    /// The node.
    pub node_name: String,
    /// `NodeGone` (deleted or NotReady mid-task), or, when the task started,
    /// `DiskPressure` or `InsufficientDisk` (too little room for the images).
    pub reason: String,
    /// Human-readable cause.
    pub message: String,
    /// When it was noticed.
    pub timestamp: DateTime<Utc>,
}

/// Outcome of one image across the task's nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// The image as given in the task.
    pub image: String,
    /// Nodes that hold it.
    pub completed_nodes: u32,
    /// Nodes where it failed for good.
    pub failed_nodes: u32,
    /// Distinct digests the nodes resolved, sorted.
    pub digests: Vec<String>,
    /// With `pinDigests`: the digest the first successful pull resolved,
    /// which later nodes pull (`repo@sha256:…`); null until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_digest: Option<String>,
    /// The nodes resolved more than one digest: the tag moved during the task.
    #[serde(default)]
    pub digest_drift: bool,
}

/// The task view of `GET /api/v1/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `task-YYYYMMDD-xxxxxx`.
    pub task_id: String,
    /// Lifecycle state.
    pub status: TaskStatus,
    /// Images as given.
    pub images: Vec<String>,
    /// Nodes pulling at once.
    pub batch_size: u32,
    /// Exact label match on nodes.
    pub node_selector: BTreeMap<String, String>,
    /// Explicit node list (empty = all matching nodes).
    pub node_names: Vec<String>,
    /// Higher runs first.
    pub priority: i32,
    /// Retries per failed (node, image) pair.
    pub max_retries: u32,
    /// Growth of the retry delay.
    pub retry_strategy: RetryStrategy,
    /// Base retry delay in seconds.
    pub retry_delay: u32,
    /// Notified when the task ends.
    pub webhook_url: Option<String>,
    /// Pull policy of the pull containers.
    pub pull_policy: PullPolicy,
    /// Secrets for private registries.
    pub image_pull_secrets: Vec<String>,
    /// Whether tainted nodes are included.
    pub tolerate_taints: bool,
    /// Whether the first successful pull of each tag fixes the digest the
    /// other nodes pull (`imageStatuses[].pinnedDigest`).
    #[serde(default)]
    pub pin_digests: bool,
    /// Whole-task limit, 0 = none.
    pub timeout_seconds: u64,
    /// Priority class of the pull pods.
    pub priority_class_name: Option<String>,
    /// The workload the targets come from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_workload: Option<WorkloadRef>,
    /// What `fromWorkload` resolved to when the task started (absent while pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_workload: Option<ResolvedWorkload>,
    /// What created it: `api`, `schedule` or `keep-warm`.
    #[serde(default)]
    pub trigger: TaskTrigger,
    /// The keep-warm policy that started it (`trigger: keep-warm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_warm_policy_id: Option<String>,
    /// Pull rates of this task by registry host (`registryPullRate`), normalized.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub registry_pull_rate: BTreeMap<String, String>,
    /// Node counts and window position.
    pub progress: Progress,
    /// (node, image) pairs that failed for good: the first 100 (oldest
    /// first); every one is paged from `GET /api/v1/tasks/{id}/nodes?status=failed`.
    pub failed_node_details: Vec<FailedNodeDetail>,
    /// How many (node, image) pairs failed for good in all.
    #[serde(default)]
    pub failed_node_details_total: u64,
    /// Nodes left out (gone mid-task, or their disk could not take the
    /// images): the first 100 (`progress.skippedNodes` counts them all).
    pub skipped_node_details: Vec<SkippedNodeDetail>,
    /// Per-image outcome with resolved digests.
    pub image_statuses: Vec<ImageStatus>,
    /// Why the task failed as a whole (`Timeout`, `NoMatchingNodes`, `WorkloadUnresolved`), if it did.
    pub reason: Option<String>,
    /// Human-readable explanation accompanying `reason`.
    pub error_message: Option<String>,
    /// Name of the caller that created it (`anonymous` when auth is off).
    pub created_by: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When the engine picked it up.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Projected end: each node's learned seconds per pull times its images
    /// (pulled one after another), `batchSize` nodes at a time in start
    /// order; from the observed node throughput while nothing is learned.
    pub estimated_completion: Option<DateTime<Utc>>,
    /// How the end-of-task webhook went: `pending` from the moment the task
    /// ended until it was delivered or gave up; `null` when none is set.
    #[serde(default)]
    pub webhook_status: Option<WebhookStatus>,
    /// Why the webhook was not delivered, when it was not.
    #[serde(default)]
    pub webhook_error: Option<String>,
}

/// Outcome of a task's end-of-task webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Owed: recorded with the task's end, delivered (or resumed after a restart) in the background.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed (see `webhookError`).
    Failed,
    /// The destination resolves to a private, loopback or link-local address.
    Refused,
}

/// Webhook body: what happened and the task as it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// `task.completed`, `task.failed` or `task.cancelled`.
    pub event: String,
    /// The task view.
    pub task: Task,
}

/// Answer of `POST /api/v1/tasks`: the task view plus a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskCreated {
    /// The stored task.
    #[serde(flatten)]
    pub task: Task,
    /// `Task created successfully`.
    pub message: String,
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskList {
    /// This page.
    pub tasks: Vec<Task>,
    /// Tasks matching the filter, across all pages.
    pub total: u64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}

/// Where one image stands on one node of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeImageStatus {
    /// Not pulled yet (waiting, pulling, or waiting to retry).
    Pending,
    /// A pull container ran with it on the node.
    Pulled,
    /// The node listed it already; nothing was created.
    Present,
    /// Failed for good.
    Failed,
    /// The node went away before the image was pulled.
    Skipped,
}

impl NodeImageStatus {
    /// Every status.
    pub const ALL: [NodeImageStatus; 5] = [
        NodeImageStatus::Pending,
        NodeImageStatus::Pulled,
        NodeImageStatus::Present,
        NodeImageStatus::Failed,
        NodeImageStatus::Skipped,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeImageStatus::Pending => "pending",
            NodeImageStatus::Pulled => "pulled",
            NodeImageStatus::Present => "present",
            NodeImageStatus::Failed => "failed",
            NodeImageStatus::Skipped => "skipped",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<NodeImageStatus> {
        NodeImageStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One (node, image) pair of a task, from `GET /api/v1/tasks/{id}/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageResult {
    /// The node.
    pub node_name: String,
    /// The image as given in the task.
    pub image: String,
    /// Where the image stands on the node.
    pub status: NodeImageStatus,
    /// The failure reason (`ErrImagePull`, `Timeout`, `NodeGone`, …): the
    /// final one when failed, the last one while a retry is pending.
    #[serde(default)]
    pub reason: Option<String>,
    /// What the kubelet (or the engine) said with `reason`.
    #[serde(default)]
    pub message: Option<String>,
    /// Digest the node resolved, when pulled and reported.
    #[serde(default)]
    pub digest: Option<String>,
    /// When the pair's outcome became final (or its last failure, while pending).
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

/// A page of a task's (node, image) results, by node name then image order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResultList {
    /// This page.
    pub nodes: Vec<NodeImageResult>,
    /// Results matching the filters, across all pages.
    pub total: u64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}

/// Answer of `DELETE /api/v1/tasks/{id}` and of the scheduled-task actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResponse {
    /// The task (or scheduled task) acted upon.
    pub task_id: String,
    /// `cancelled` for a task, `success` for scheduled-task actions.
    pub status: String,
    /// Human-readable summary.
    pub message: String,
}

/// Every error body: a short title, what exactly went wrong, and the id when one applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Short title, e.g. `Validation failed`.
    pub error: String,
    /// What exactly, naming the field where one is at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The task concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Current status, for conflicts on ended tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// What a scheduled fire does while an earlier run of the same schedule is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverlapPolicy {
    /// Record a `skipped` execution and start nothing (default).
    #[default]
    Skip,
    /// Start another task in parallel.
    Allow,
    /// Start as soon as the running one ends; fires meanwhile coalesce into one run.
    Queue,
}

/// Outcome of one execution of a scheduled task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Its task has not ended yet.
    Running,
    /// Its task completed.
    Success,
    /// Its task failed, was cancelled by a user, or could not be started.
    Failed,
    /// Nothing was started (overlap policy `skip`, or a fire missed while the service was down).
    Skipped,
    /// Its task ran past the schedule's `timeoutSeconds` and was cancelled.
    Timeout,
}

impl ExecutionStatus {
    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Success => "success",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Skipped => "skipped",
            ExecutionStatus::Timeout => "timeout",
        }
    }
}

/// What started an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionTrigger {
    /// The cron schedule fired.
    Schedule,
    /// `POST /api/v1/scheduled-tasks/{id}/trigger`.
    Manual,
}

/// A scheduled task as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledTask {
    /// `scheduled-task-YYYYMMDD-xxxxxx`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// 5-field cron expression or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron_expr: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// Whether it fires.
    pub enabled: bool,
    /// The task create body each run uses, every default spelled out.
    pub task_config: CreateTaskRequest,
    /// What a fire does while an earlier run still goes.
    pub overlap_policy: OverlapPolicy,
    /// A run still going after this many seconds is cancelled (0 = no limit).
    pub timeout_seconds: u64,
    /// How late a fire missed while the service was down may still run (0 = never).
    pub starting_deadline_seconds: u64,
    /// When a run was last started (by the schedule or by hand).
    pub last_execution_at: Option<DateTime<Utc>>,
    /// When it fires next; null while disabled.
    pub next_execution_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed through the API.
    pub updated_at: DateTime<Utc>,
}

/// Body of `POST /api/v1/scheduled-tasks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "Nightly base images", "cronExpr": "30 5 * * *", "timezone": "Europe/Berlin", "taskConfig": {"images": ["nginx:1.25"]}}))]
pub struct CreateScheduledTaskRequest {
    /// Human name (required, 1..=253 characters).
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Cron expression (required).
    pub cron_expr: String,
    /// IANA time zone, default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A task create body, validated like `POST /api/v1/tasks`.
    pub task_config: CreateTaskRequest,
    /// Default `skip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_policy: Option<OverlapPolicy>,
    /// Default 0 (no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Default 0 (missed fires are not run late).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
}

/// Body of `PUT /api/v1/scheduled-tasks/{id}`: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateScheduledTaskRequest {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New cron expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_expr: Option<String>,
    /// New time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Enable or disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Fields merged into the stored task config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_config: Option<TaskConfigPatch>,
    /// New overlap policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap_policy: Option<OverlapPolicy>,
    /// New run time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// New catch-up deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
}

/// One run (or skipped fire) of a scheduled task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// 1, 2, … per scheduled task.
    pub id: u64,
    /// The scheduled task.
    pub scheduled_task_id: String,
    /// The task it started; empty when skipped.
    pub task_id: String,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// When its task was created (null when skipped).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// `finishedAt − startedAt` in seconds, once ended.
    pub duration_seconds: Option<f64>,
    /// Why it failed, timed out or was skipped; empty otherwise.
    pub error_message: String,
    /// The scheduled fire time (or the time of a manual trigger).
    pub triggered_at: DateTime<Utc>,
    /// `schedule` or `manual`.
    pub trigger: ExecutionTrigger,
}

/// A page of scheduled tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledTaskList {
    /// This page.
    pub tasks: Vec<ScheduledTask>,
    /// All scheduled tasks.
    pub total: u64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}

/// A page of executions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionList {
    /// This page.
    pub executions: Vec<Execution>,
    /// Executions of this scheduled task.
    pub total: u64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}

/// The progress part of a task view, pushed on every change by the watch and
/// events streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressUpdate {
    /// Node counts and window position.
    #[serde(flatten)]
    pub progress: Progress,
    /// Lifecycle state.
    pub status: TaskStatus,
    /// Projected end from the observed node throughput.
    #[serde(default)]
    pub estimated_completion: Option<DateTime<Utc>>,
}

impl ProgressUpdate {
    /// The progress part of `task`.
    pub fn of(task: &Task) -> ProgressUpdate {
        ProgressUpdate {
            progress: task.progress.clone(),
            status: task.status,
            estimated_completion: task.estimated_completion,
        }
    }
}

/// One message of `GET /api/v1/tasks/{id}/watch` (WebSocket, the whole JSON)
/// and `/events` (Server-Sent Events: `type` is the `event:` name, `data` the
/// `data:` line): progress on every change, then the final task view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum TaskEvent {
    /// The task changed and has not ended.
    Progress(ProgressUpdate),
    /// The task ended; the last message of the stream.
    Finished(Box<Task>),
}

impl TaskEvent {
    /// The event name (`progress` or `finished`).
    pub fn kind(&self) -> &'static str {
        match self {
            TaskEvent::Progress(_) => "progress",
            TaskEvent::Finished(_) => "finished",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_request_rejects_unknown_fields() {
        let err = serde_json::from_str::<CreateTaskRequest>(r#"{"images":["a"],"batchsize":3}"#)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `batchsize`"),
            "{err}"
        );
    }

    #[test]
    fn create_request_reads_camel_case() {
        let req: CreateTaskRequest = serde_json::from_str(
            r#"{"images":["nginx"],"batchSize":5,"pullPolicy":"Always","retryStrategy":"linear"}"#,
        )
        .unwrap();
        assert_eq!(req.batch_size, Some(5));
        assert_eq!(req.pull_policy, Some(PullPolicy::Always));
        assert_eq!(req.retry_strategy, Some(RetryStrategy::Linear));
    }

    #[test]
    fn status_round_trips() {
        for st in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert_eq!(TaskStatus::parse("done"), None);
    }
}

/// One node's learned pull speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// Node name.
    pub node: String,
    /// Seconds per image pull: the mean of the node's measured pulls, each
    /// weighing half as much a week later. A node's expected time in a task
    /// is this times the images it pulls there (one after another).
    pub seconds_per_pull: f64,
    /// Pull attempts measured on the node in all.
    pub samples: u64,
    /// When the last pull was measured.
    pub updated_at: DateTime<Utc>,
    /// Since when the node is missing from the cluster (absent while it is
    /// there); its speed is forgotten once it has been gone `--retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gone_since: Option<DateTime<Utc>>,
}

/// Body of `GET /api/v1/nodes/stats`: the slowest nodes first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatsList {
    /// At most `limit` nodes, most seconds per pull first (then by name).
    pub nodes: Vec<NodeStats>,
    /// Nodes with a learned speed.
    pub total: u64,
}
