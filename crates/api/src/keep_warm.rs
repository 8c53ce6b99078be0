//! Keep-warm policies: images kept on every matching node, including nodes
//! that join later (`/api/v1/keep-warm`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{PullPolicy, TaskStatus, WorkloadRef};

/// What created a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TaskTrigger {
    /// `POST /api/v1/tasks`.
    #[default]
    Api,
    /// A scheduled task (its cron or a manual trigger).
    Schedule,
    /// A keep-warm policy warming nodes that lack its images.
    KeepWarm,
}

/// Body of `POST /api/v1/keep-warm`: a name and the targeting and pull
/// fields of a task create body (`images` or `fromWorkload` required).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"name": "web pool", "images": ["nginx:1.25"], "nodeSelector": {"pool": "web"}, "removeTaint": "prewarm.io/cold"}))]
pub struct CreateKeepWarmPolicyRequest {
    /// Human name (required, 1..=253 characters).
    pub name: String,
    /// Default true; a disabled policy warms nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Images kept on the nodes, 1..=100 (may be empty with `fromWorkload`).
    #[serde(default)]
    pub images: Vec<String>,
    /// Exact label match on nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Explicit node list, combined with `nodeSelector` by AND.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<String>>,
    /// Include nodes with NoSchedule/NoExecute taints (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerate_taints: Option<bool>,
    /// `IfNotPresent` (default) or `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Secret names in the service's job namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<String>>,
    /// Nodes pulling at once in each run (1..=1000, default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Priority of its runs (-1000..=1000, default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Take images and node constraints from this workload, read at each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_workload: Option<WorkloadRef>,
    /// A NoSchedule taint key removed from a node once it holds every image
    /// of the policy (nodes joining with it stay unschedulable until warm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_taint: Option<String>,
}

/// Body of `PUT /api/v1/keep-warm/{id}`: fields present replace the stored
/// ones, absent fields keep them (`removeTaint: ""` turns gating off,
/// `fromWorkload: null` removes the workload).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateKeepWarmPolicyRequest {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Enable or disable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Replaces the image list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Replaces the node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Replaces the node list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_names: Option<Vec<String>>,
    /// See [`CreateKeepWarmPolicyRequest::tolerate_taints`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerate_taints: Option<bool>,
    /// See [`CreateKeepWarmPolicyRequest::pull_policy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// See [`CreateKeepWarmPolicyRequest::image_pull_secrets`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<String>>,
    /// See [`CreateKeepWarmPolicyRequest::batch_size`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// See [`CreateKeepWarmPolicyRequest::priority`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// See [`CreateKeepWarmPolicyRequest::from_workload`]; `null` removes it.
    #[serde(
        default,
        deserialize_with = "crate::present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<WorkloadRef>, nullable = true)]
    pub from_workload: Option<Option<WorkloadRef>>,
    /// See [`CreateKeepWarmPolicyRequest::remove_taint`]; empty turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_taint: Option<String>,
}

/// A keep-warm policy as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeepWarmPolicy {
    /// `keep-warm-YYYYMMDD-xxxxxx`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Whether it warms nodes.
    pub enabled: bool,
    /// Images kept on the nodes (besides those of `fromWorkload`).
    pub images: Vec<String>,
    /// Exact label match on nodes.
    pub node_selector: BTreeMap<String, String>,
    /// Explicit node list (empty = all matching nodes).
    pub node_names: Vec<String>,
    /// Whether tainted nodes are included.
    pub tolerate_taints: bool,
    /// Pull policy of its runs.
    pub pull_policy: PullPolicy,
    /// Secrets for private registries.
    pub image_pull_secrets: Vec<String>,
    /// Nodes pulling at once in each run.
    pub batch_size: u32,
    /// Priority of its runs.
    pub priority: i32,
    /// The workload the images and nodes come from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_workload: Option<WorkloadRef>,
    /// NoSchedule taint key removed from a node once it is warm; null = no gating.
    #[serde(default)]
    pub remove_taint: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed through the API.
    pub updated_at: DateTime<Utc>,
    /// How warm its nodes are now (null when the nodes cannot be read, e.g.
    /// a `fromWorkload` that does not resolve).
    #[serde(default)]
    pub coverage: Option<PolicyCoverage>,
    /// Its most recent runs, newest first (at most 10).
    #[serde(default)]
    pub last_runs: Vec<PolicyRun>,
}

/// How many of a policy's nodes hold all of its images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCoverage {
    /// Ready, schedulable nodes the policy selects.
    pub total_nodes: u32,
    /// Of them, nodes that report every image (`node.status.images`, capped
    /// at 50 per node by the kubelet).
    pub warm_nodes: u32,
    /// warmNodes / totalNodes × 100, one decimal (0.0 without nodes).
    pub percentage: f64,
    /// The first 100 selected nodes lacking an image, by name.
    pub cold_nodes: Vec<String>,
    /// Nodes (first 100) still carrying the `removeTaint` taint: not yet warm,
    /// or failed to warm (see the runs).
    pub gated_nodes: Vec<String>,
}

/// One task a policy started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRun {
    /// The task (its `trigger` is `keep-warm`).
    pub task_id: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Nodes it was started for (those lacking an image).
    pub nodes: u32,
    /// The task's status when read; null if the task is gone from history.
    #[serde(default)]
    pub status: Option<TaskStatus>,
    /// Nodes of the task that hold every image, when read.
    #[serde(default)]
    pub completed_nodes: u32,
    /// Nodes of the task where an image failed for good, when read.
    #[serde(default)]
    pub failed_nodes: u32,
}

/// A page of keep-warm policies, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeepWarmPolicyList {
    /// This page.
    pub policies: Vec<KeepWarmPolicy>,
    /// All policies.
    pub total: u64,
    /// Page size used.
    pub limit: u32,
    /// Offset used.
    pub offset: u64,
}
