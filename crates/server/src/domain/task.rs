//! A validated task specification and the task's identity.
//!
//! `TaskSpec::from_request` is the only way to build a spec, so a spec that
//! exists is valid: the engine never re-checks what the API accepted.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use prewarm_api::{
    CreateTaskRequest, Progress, PullPolicy, ResolvedWorkload, RetryStrategy, Task, TaskStatus,
    TaskTrigger, WorkloadRef,
};
use rand::Rng;

use super::image_ref::ImageRef;
use super::labels::{
    validate_dns1123_label, validate_dns1123_subdomain, validate_label_key, validate_label_value,
};
use super::pacing::{normalize_host, RegistryRate};

/// A rejected request field: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// JSON path of the offending field, e.g. `images[2]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// A rejection of `field` for `message`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Largest accepted number of images in one task.
pub const MAX_IMAGES: usize = 100;
/// Largest accepted `batchSize`.
pub const MAX_BATCH_SIZE: u32 = 1000;
/// Largest accepted `maxRetries`.
pub const MAX_RETRIES: u32 = 10;
/// Largest accepted `retryDelay` in seconds.
pub const MAX_RETRY_DELAY: u32 = 3600;
/// Largest accepted `|priority|`.
pub const MAX_PRIORITY: i32 = 1000;
/// Largest accepted whole-task timeout (30 days).
pub const MAX_TIMEOUT_SECONDS: u64 = 30 * 24 * 3600;
/// Largest accepted `nodeNames` list.
pub const MAX_NODE_NAMES: usize = 10_000;

/// Largest number of hosts in a task's `registryPullRate`.
pub const MAX_REGISTRY_RATES: usize = 20;

/// A task's validated configuration: everything the engine needs to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Images to pull, distinct, in the order given.
    pub images: Vec<ImageRef>,
    /// Nodes pulling at once.
    pub batch_size: u32,
    /// Exact label match.
    pub node_selector: BTreeMap<String, String>,
    /// Explicit node list; empty means no restriction.
    pub node_names: Vec<String>,
    /// Higher first.
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
    /// Whether nodes with NoSchedule/NoExecute taints are included.
    pub tolerate_taints: bool,
    /// The first successful pull of each tag fixes the digest later nodes pull.
    pub pin_digests: bool,
    /// Whole-task limit, 0 = none.
    pub timeout_seconds: u64,
    /// Priority class of the pull pods.
    pub priority_class_name: Option<String>,
    /// The workload the targets come from, if any.
    pub from_workload: Option<WorkloadRef>,
    /// What it resolved to (set by [`TaskSpec::with_workload`]); its node
    /// constraints and tolerations narrow the selection.
    pub workload: Option<ResolvedWorkload>,
    /// What creates the task (recorded on it; the engine ignores it).
    pub trigger: TaskTrigger,
    /// The keep-warm policy behind a `keep-warm` task.
    pub keep_warm_policy_id: Option<String>,
    /// `registryPullRate`: this task's own pull rates by registry host
    /// (instead of `--registry-pull-rate` for those hosts).
    pub registry_pull_rates: BTreeMap<String, RegistryRate>,
}

impl TaskSpec {
    /// Validates a create body, applying the API's defaults (docs/api.md).
    pub fn from_request(req: CreateTaskRequest) -> Result<TaskSpec, ValidationError> {
        if let Some(w) = &req.from_workload {
            validate_dns1123_label(&w.namespace)
                .map_err(|e| ValidationError::new("fromWorkload.namespace", e.to_string()))?;
            validate_dns1123_subdomain(&w.name)
                .map_err(|e| ValidationError::new("fromWorkload.name", e.to_string()))?;
        }
        if req.images.is_empty() && req.from_workload.is_none() {
            return Err(ValidationError::new(
                "images",
                "at least one image is required",
            ));
        }
        if req.images.len() > MAX_IMAGES {
            return Err(ValidationError::new(
                "images",
                format!(
                    "at most {MAX_IMAGES} images per task, got {}",
                    req.images.len()
                ),
            ));
        }
        let mut images = Vec::with_capacity(req.images.len());
        let mut seen = HashSet::new();
        for (i, raw) in req.images.iter().enumerate() {
            let image = ImageRef::parse(raw)
                .map_err(|e| ValidationError::new(format!("images[{i}]"), e.to_string()))?;
            if !seen.insert(raw.as_str()) {
                return Err(ValidationError::new(
                    format!("images[{i}]"),
                    format!("duplicate image \"{raw}\""),
                ));
            }
            images.push(image);
        }

        let batch_size = req.batch_size.unwrap_or(10);
        in_range("batchSize", batch_size as i64, 1, MAX_BATCH_SIZE as i64)?;
        let priority = req.priority.unwrap_or(0);
        in_range(
            "priority",
            priority as i64,
            -(MAX_PRIORITY as i64),
            MAX_PRIORITY as i64,
        )?;
        let max_retries = req.max_retries.unwrap_or(0);
        in_range("maxRetries", max_retries as i64, 0, MAX_RETRIES as i64)?;
        let retry_delay = req.retry_delay.unwrap_or(30);
        in_range("retryDelay", retry_delay as i64, 0, MAX_RETRY_DELAY as i64)?;
        let timeout_seconds = req.timeout_seconds.unwrap_or(0);
        if timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(ValidationError::new(
                "timeoutSeconds",
                format!("must be between 0 and {MAX_TIMEOUT_SECONDS}"),
            ));
        }

        let node_selector = req.node_selector.unwrap_or_default();
        for (k, v) in &node_selector {
            validate_label_key(k)
                .map_err(|e| ValidationError::new(format!("nodeSelector[{k:?}]"), e.to_string()))?;
            validate_label_value(v)
                .map_err(|e| ValidationError::new(format!("nodeSelector[{k:?}]"), e.to_string()))?;
        }

        let node_names = req.node_names.unwrap_or_default();
        if node_names.len() > MAX_NODE_NAMES {
            return Err(ValidationError::new(
                "nodeNames",
                format!("at most {MAX_NODE_NAMES} node names"),
            ));
        }
        let mut seen = HashSet::new();
        for (i, name) in node_names.iter().enumerate() {
            validate_dns1123_subdomain(name)
                .map_err(|e| ValidationError::new(format!("nodeNames[{i}]"), e.to_string()))?;
            if !seen.insert(name.as_str()) {
                return Err(ValidationError::new(
                    format!("nodeNames[{i}]"),
                    format!("duplicate node name \"{name}\""),
                ));
            }
        }

        let image_pull_secrets = req.image_pull_secrets.unwrap_or_default();
        for (i, name) in image_pull_secrets.iter().enumerate() {
            validate_dns1123_subdomain(name).map_err(|e| {
                ValidationError::new(format!("imagePullSecrets[{i}]"), e.to_string())
            })?;
        }
        if let Some(pc) = &req.priority_class_name {
            validate_dns1123_subdomain(pc)
                .map_err(|e| ValidationError::new("priorityClassName", e.to_string()))?;
        }
        if let Some(url) = &req.webhook_url {
            validate_webhook_url(url)?;
        }
        let registry_pull_rates = registry_rates(req.registry_pull_rate.unwrap_or_default())?;

        Ok(TaskSpec {
            images,
            batch_size,
            node_selector,
            node_names,
            priority,
            max_retries,
            retry_strategy: req.retry_strategy.unwrap_or_default(),
            retry_delay,
            webhook_url: req.webhook_url,
            pull_policy: req.pull_policy.unwrap_or_default(),
            image_pull_secrets,
            tolerate_taints: req.tolerate_taints.unwrap_or(true),
            pin_digests: req.pin_digests.unwrap_or(false),
            timeout_seconds,
            priority_class_name: req.priority_class_name,
            from_workload: req.from_workload,
            workload: None,
            trigger: TaskTrigger::Api,
            keep_warm_policy_id: None,
            registry_pull_rates,
        })
    }

    /// This spec with `resolved`'s images (its pod template's first, then the
    /// ones given), pull secrets and node constraints added.
    pub fn with_workload(
        mut self,
        resolved: ResolvedWorkload,
    ) -> Result<TaskSpec, ValidationError> {
        let mut images: Vec<ImageRef> = Vec::new();
        for raw in &resolved.images {
            let image = ImageRef::parse(raw).map_err(|e| {
                ValidationError::new("fromWorkload", format!("pod template image: {e}"))
            })?;
            if !images.iter().any(|i| i.as_str() == raw) {
                images.push(image);
            }
        }
        for image in self.images.drain(..) {
            if !images.iter().any(|i| i.as_str() == image.as_str()) {
                images.push(image);
            }
        }
        if images.is_empty() || images.len() > MAX_IMAGES {
            return Err(ValidationError::new(
                "fromWorkload",
                format!(
                    "the task would pull {} images; 1..={MAX_IMAGES} are allowed",
                    images.len()
                ),
            ));
        }
        self.images = images;
        for secret in &resolved.image_pull_secrets {
            if !self.image_pull_secrets.contains(secret) {
                self.image_pull_secrets.push(secret.clone());
            }
        }
        self.workload = Some(resolved);
        Ok(self)
    }

    /// The spec as a fully explicit create body (every default spelled out).
    pub fn to_request(&self) -> CreateTaskRequest {
        CreateTaskRequest {
            images: self.images.iter().map(|i| i.as_str().to_owned()).collect(),
            batch_size: Some(self.batch_size),
            node_selector: Some(self.node_selector.clone()),
            node_names: Some(self.node_names.clone()),
            priority: Some(self.priority),
            max_retries: Some(self.max_retries),
            retry_strategy: Some(self.retry_strategy),
            retry_delay: Some(self.retry_delay),
            webhook_url: self.webhook_url.clone(),
            pull_policy: Some(self.pull_policy),
            image_pull_secrets: Some(self.image_pull_secrets.clone()),
            tolerate_taints: Some(self.tolerate_taints),
            pin_digests: Some(self.pin_digests),
            timeout_seconds: Some(self.timeout_seconds),
            priority_class_name: self.priority_class_name.clone(),
            registry_pull_rate: (!self.registry_pull_rates.is_empty())
                .then(|| self.registry_pull_rate()),
            from_workload: self.from_workload.clone(),
        }
    }

    /// `registryPullRate` as the view shows it: host → `N/DURATION`.
    pub fn registry_pull_rate(&self) -> BTreeMap<String, String> {
        self.registry_pull_rates
            .iter()
            .map(|(host, rate)| (host.clone(), rate.to_string()))
            .collect()
    }

    /// The spec of a stored task view (which was validated when it was created).
    pub fn from_view(task: &Task) -> Result<TaskSpec, ValidationError> {
        let mut spec = TaskSpec::from_request(CreateTaskRequest {
            images: task.images.clone(),
            batch_size: Some(task.batch_size),
            node_selector: Some(task.node_selector.clone()),
            node_names: Some(task.node_names.clone()),
            priority: Some(task.priority),
            max_retries: Some(task.max_retries),
            retry_strategy: Some(task.retry_strategy),
            retry_delay: Some(task.retry_delay),
            webhook_url: task.webhook_url.clone(),
            pull_policy: Some(task.pull_policy),
            image_pull_secrets: Some(task.image_pull_secrets.clone()),
            tolerate_taints: Some(task.tolerate_taints),
            pin_digests: Some(task.pin_digests),
            timeout_seconds: Some(task.timeout_seconds),
            priority_class_name: task.priority_class_name.clone(),
            registry_pull_rate: Some(task.registry_pull_rate.clone()),
            from_workload: task.from_workload.clone(),
        })?;
        spec.workload = task.resolved_workload.clone();
        spec.trigger = task.trigger;
        spec.keep_warm_policy_id = task.keep_warm_policy_id.clone();
        Ok(spec)
    }

    /// Wait before retry number `retry` (1-based) of a failed pull.
    pub fn retry_wait(&self, retry: u32) -> std::time::Duration {
        let d = u64::from(self.retry_delay);
        let factor = match self.retry_strategy {
            RetryStrategy::Fixed => 1,
            RetryStrategy::Linear => u64::from(retry.max(1)),
            RetryStrategy::Exponential => 1u64 << (retry.max(1) - 1).min(20),
        };
        std::time::Duration::from_secs(d.saturating_mul(factor))
    }

    /// A new pending task view for this spec.
    pub fn new_task(&self, id: TaskId, created_by: &str, now: DateTime<Utc>) -> Task {
        Task {
            task_id: id.0,
            status: TaskStatus::Pending,
            images: self.images.iter().map(|i| i.as_str().to_owned()).collect(),
            batch_size: self.batch_size,
            node_selector: self.node_selector.clone(),
            node_names: self.node_names.clone(),
            priority: self.priority,
            max_retries: self.max_retries,
            retry_strategy: self.retry_strategy,
            retry_delay: self.retry_delay,
            webhook_url: self.webhook_url.clone(),
            pull_policy: self.pull_policy,
            image_pull_secrets: self.image_pull_secrets.clone(),
            tolerate_taints: self.tolerate_taints,
            pin_digests: self.pin_digests,
            timeout_seconds: self.timeout_seconds,
            priority_class_name: self.priority_class_name.clone(),
            from_workload: self.from_workload.clone(),
            resolved_workload: self.workload.clone(),
            trigger: self.trigger,
            keep_warm_policy_id: self.keep_warm_policy_id.clone(),
            registry_pull_rate: self.registry_pull_rate(),
            progress: Progress::default(),
            failed_node_details: Vec::new(),
            failed_node_details_total: 0,
            skipped_node_details: Vec::new(),
            image_statuses: self
                .images
                .iter()
                .map(|i| prewarm_api::ImageStatus {
                    image: i.as_str().to_owned(),
                    ..Default::default()
                })
                .collect(),
            reason: None,
            error_message: None,
            created_by: created_by.to_owned(),
            created_at: now,
            started_at: None,
            finished_at: None,
            estimated_completion: None,
            webhook_status: None,
            webhook_error: None,
        }
    }
}

/// Validates `registryPullRate`: hosts normalized, rates `N/DURATION`.
fn registry_rates(
    given: BTreeMap<String, String>,
) -> Result<BTreeMap<String, RegistryRate>, ValidationError> {
    if given.len() > MAX_REGISTRY_RATES {
        return Err(ValidationError::new(
            "registryPullRate",
            format!("at most {MAX_REGISTRY_RATES} registry hosts"),
        ));
    }
    let mut rates = BTreeMap::new();
    for (host, rate) in given {
        let field = format!("registryPullRate[{host:?}]");
        let normalized = normalize_host(&host).map_err(|e| ValidationError::new(&field, e))?;
        let rate = RegistryRate::parse(&rate).map_err(|e| ValidationError::new(&field, e))?;
        if rates.insert(normalized, rate).is_some() {
            return Err(ValidationError::new(
                field,
                "names a registry host given twice",
            ));
        }
    }
    Ok(rates)
}

fn in_range(field: &str, v: i64, lo: i64, hi: i64) -> Result<(), ValidationError> {
    if v < lo || v > hi {
        return Err(ValidationError::new(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}

/// Cancels `task` at `at`, the change every store makes in one atomic write:
/// status `cancelled`, `finishedAt`, no ETA, and its webhook owed if it has
/// an address. A task that already ended stays as it is: `Err(its status)`.
pub fn cancel(task: &mut Task, at: DateTime<Utc>) -> Result<(), TaskStatus> {
    if task.status.is_terminal() {
        return Err(task.status);
    }
    task.status = TaskStatus::Cancelled;
    task.finished_at = Some(at);
    task.estimated_completion = None;
    if task.webhook_url.is_some() {
        task.webhook_status = Some(prewarm_api::WebhookStatus::Pending);
    }
    Ok(())
}

/// Checks that a webhook URL is an absolute http(s) URL with a host.
pub fn validate_webhook_url(url: &str) -> Result<(), ValidationError> {
    let err = |m: &str| ValidationError::new("webhookUrl", m.to_owned());
    if url.len() > 2048 {
        return Err(err("must be at most 2048 characters"));
    }
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| err("must be an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(err("must name a host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("must not contain whitespace"));
    }
    Ok(())
}

/// A task identifier: `task-YYYYMMDD-` followed by 6 lowercase letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub String);

impl TaskId {
    /// A fresh random id dated `now`.
    pub fn generate(now: DateTime<Utc>) -> TaskId {
        TaskId(format!(
            "task-{}-{}",
            now.format("%Y%m%d"),
            random_suffix(6)
        ))
    }

    /// The 6-character random part, used to name the task's Jobs.
    pub fn suffix(&self) -> &str {
        self.0.rsplit('-').next().unwrap_or(&self.0)
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `n` random lowercase letters and digits.
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(images: &[&str]) -> CreateTaskRequest {
        CreateTaskRequest {
            images: images.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let spec = TaskSpec::from_request(req(&["nginx:latest"])).unwrap();
        assert_eq!(spec.batch_size, 10);
        assert_eq!(spec.retry_delay, 30);
        assert_eq!(spec.max_retries, 0);
        assert_eq!(spec.pull_policy, PullPolicy::IfNotPresent);
        assert!(spec.tolerate_taints);
        assert_eq!(spec.timeout_seconds, 0);
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let cases: Vec<(CreateTaskRequest, &str)> = vec![
            (req(&[]), "images"),
            (req(&["nginx::latest"]), "images[0]"),
            (req(&["nginx", "nginx"]), "images[1]"),
            (req(&["nginx", ""]), "images[1]"),
            (
                CreateTaskRequest {
                    batch_size: Some(0),
                    ..req(&["nginx"])
                },
                "batchSize",
            ),
            (
                CreateTaskRequest {
                    batch_size: Some(1001),
                    ..req(&["nginx"])
                },
                "batchSize",
            ),
            (
                CreateTaskRequest {
                    priority: Some(1001),
                    ..req(&["nginx"])
                },
                "priority",
            ),
            (
                CreateTaskRequest {
                    max_retries: Some(11),
                    ..req(&["nginx"])
                },
                "maxRetries",
            ),
            (
                CreateTaskRequest {
                    retry_delay: Some(3601),
                    ..req(&["nginx"])
                },
                "retryDelay",
            ),
            (
                CreateTaskRequest {
                    node_selector: Some([("bad key!".into(), "v".into())].into()),
                    ..req(&["nginx"])
                },
                "nodeSelector[\"bad key!\"]",
            ),
            (
                CreateTaskRequest {
                    webhook_url: Some("ftp://x".into()),
                    ..req(&["nginx"])
                },
                "webhookUrl",
            ),
            (
                CreateTaskRequest {
                    node_names: Some(vec!["Node_1".into()]),
                    ..req(&["nginx"])
                },
                "nodeNames[0]",
            ),
            (
                CreateTaskRequest {
                    registry_pull_rate: Some([("ghcr.io".into(), "600".into())].into()),
                    ..req(&["nginx"])
                },
                "registryPullRate[\"ghcr.io\"]",
            ),
            (
                CreateTaskRequest {
                    registry_pull_rate: Some([("ghcr.io/org".into(), "1/1m".into())].into()),
                    ..req(&["nginx"])
                },
                "registryPullRate[\"ghcr.io/org\"]",
            ),
            (
                CreateTaskRequest {
                    registry_pull_rate: Some(
                        [
                            ("docker.io".into(), "1/1m".into()),
                            ("index.docker.io".into(), "2/1m".into()),
                        ]
                        .into(),
                    ),
                    ..req(&["nginx"])
                },
                "registryPullRate[\"index.docker.io\"]",
            ),
        ];
        for (r, field) in cases {
            let err = TaskSpec::from_request(r.clone()).expect_err(&format!("{r:?}"));
            assert_eq!(err.field, field, "{err}");
        }
        let too_many: Vec<String> = (0..101).map(|i| format!("img{i}")).collect();
        let err = TaskSpec::from_request(CreateTaskRequest {
            images: too_many,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.field, "images");
    }

    #[test]
    fn spec_round_trips_through_the_view() {
        let spec = TaskSpec::from_request(CreateTaskRequest {
            batch_size: Some(3),
            node_selector: Some([("workload".into(), "compute".into())].into()),
            retry_strategy: Some(RetryStrategy::Exponential),
            registry_pull_rate: Some([("GHCR.io".into(), "600/1m".into())].into()),
            ..req(&["nginx:1", "registry.example.com:5000/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"])
        })
        .unwrap();
        let view = spec.new_task(TaskId("task-20240116-abc123".into()), "me", Utc::now());
        assert_eq!(TaskSpec::from_view(&view).unwrap(), spec);
        assert_eq!(
            view.registry_pull_rate,
            BTreeMap::from([("ghcr.io".to_owned(), "600/1m".to_owned())])
        );
        assert_eq!(TaskSpec::from_request(spec.to_request()).unwrap(), spec);
    }

    #[test]
    fn retry_waits_grow_per_strategy() {
        let mut spec = TaskSpec::from_request(CreateTaskRequest {
            retry_delay: Some(5),
            ..req(&["nginx"])
        })
        .unwrap();
        let secs = |s: &TaskSpec| {
            (1..=3)
                .map(|n| s.retry_wait(n).as_secs())
                .collect::<Vec<_>>()
        };
        assert_eq!(secs(&spec), vec![5, 5, 5]);
        spec.retry_strategy = RetryStrategy::Linear;
        assert_eq!(secs(&spec), vec![5, 10, 15]);
        spec.retry_strategy = RetryStrategy::Exponential;
        assert_eq!(secs(&spec), vec![5, 10, 20]);
    }

    #[test]
    fn ids_have_the_spec_shape() {
        let now = "2024-01-16T10:00:00Z".parse().unwrap();
        let id = TaskId::generate(now);
        assert!(id.0.starts_with("task-20240116-"), "{id}");
        assert_eq!(id.suffix().len(), 6);
        assert!(id
            .suffix()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }
}
