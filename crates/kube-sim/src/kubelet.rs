//! The kubelet's pod lifecycle as a pure state machine: given a pod spec, the
//! scenario, the node's images and the current time, it advances container
//! states and renders the `PodStatus` a kubelet would report. No I/O, no clock
//! of its own: callers pass `now`, so tests step time by hand.
//!
//! Model (documented behaviour):
//! - init containers run one at a time, in order; then all app containers start
//!   together; **pulls are serialized per node** (the kubelet's default
//!   `serializeImagePulls: true`): a pull starts once the node's previous one,
//!   of any pod, has finished, so N images take N × the pull time;
//! - an image present on the node starts at once unless the policy is `Always`;
//!   `Never` with a missing image is `ErrImageNeverPull`;
//! - a failed pull shows `ErrImagePull` for one scaled second (or half the
//!   backoff, if shorter), then `ImagePullBackOff` until the backoff expires
//!   (10 s doubling to 300 s, × timeScale), then the kubelet pulls again;
//! - a started container terminates at once with exit code 0
//!   (`restartPolicy: Always` pods keep running instead);
//! - `activeDeadlineSeconds` is real (unscaled) time from `startTime`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::image::{default_size_bytes, hex_sha256, ImageRef};
use crate::registry::Answer;
use crate::scenario::{Failures, Scenario};

/// First kubelet image pull backoff.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Longest kubelet image pull backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How long `ErrImagePull` shows before `ImagePullBackOff` (× timeScale).
pub const ERR_IMAGE_PULL_SHOWN: Duration = Duration::from_secs(1);
/// The kubelet reports at most this many images in `node.status.images`.
pub const MAX_NODE_IMAGES: usize = 50;
/// The kubelet's message for `activeDeadlineSeconds`.
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// The kubelet backoff before pull attempt `failures + 1`, unscaled:
/// 10 s, 20 s, 40 s … capped at 300 s.
pub fn backoff_after(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (BACKOFF_INITIAL * 2u32.pow(exp)).min(BACKOFF_MAX)
}

/// One image as listed in `node.status.images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeImage {
    /// containerd names: `repo@sha256:…` and `repo:tag`.
    pub names: Vec<String>,
    /// Reported size.
    pub size_bytes: i64,
}

/// What one node knows: its images and how often each was pulled.
#[derive(Debug, Clone, Default)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// The node's InternalIP (a pod's `hostIP`).
    pub ip: String,
    /// Images on the node, newest first (all of them; the status shows the first 50).
    images: Vec<NodeImage>,
    /// Every name of every image on the node, for presence checks.
    present: HashSet<String>,
    /// Pull attempts per normalized reference, across pods (for `failTimes`).
    attempts: HashMap<String, u32>,
    /// Counter for pod IPs.
    pods_started: u32,
    /// When the node's image puller is free again (pulls run one at a time).
    puller_free_at: Option<Timestamp>,
}

impl NodeState {
    /// A node with the scenario's preloaded images.
    pub fn new(name: &str, scenario: &Scenario) -> Self {
        let mut s = NodeState {
            name: name.to_string(),
            ip: node_ip(name),
            ..Default::default()
        };
        let pre: Vec<ImageRef> = scenario.preloaded_on(name).cloned().collect();
        for image in pre.iter().rev() {
            let plan = scenario.pull_plan(name, image);
            let digest = image.resolved_digest(plan.digest.as_deref());
            let size = plan
                .size_bytes
                .unwrap_or_else(|| default_size_bytes(&digest));
            s.add_image(image, &digest, size);
        }
        s
    }

    /// Whether `image` is on the node.
    pub fn has_image(&self, image: &ImageRef) -> bool {
        self.present.contains(&image.lookup_name())
    }

    /// Records a pulled image as the newest one.
    pub fn add_image(&mut self, image: &ImageRef, digest: &str, size_bytes: i64) {
        let names = image.node_names(digest);
        if let Some(i) = self.images.iter().position(|e| e.names[0] == names[0]) {
            let mut old = self.images.remove(i);
            for n in names.iter().cloned() {
                if !old.names.contains(&n) {
                    old.names.push(n);
                }
            }
            self.images.insert(0, old);
        } else {
            self.images.insert(
                0,
                NodeImage {
                    names: names.clone(),
                    size_bytes,
                },
            );
        }
        self.present.extend(names);
    }

    /// What `node.status.images` shows: newest first, at most 50.
    pub fn reported_images(&self) -> &[NodeImage] {
        &self.images[..self.images.len().min(MAX_NODE_IMAGES)]
    }

    /// Counts one more pull attempt of `image` here and returns its number (1-based).
    fn next_attempt(&mut self, image: &ImageRef) -> u32 {
        let n = self.attempts.entry(image.normalized()).or_insert(0);
        *n += 1;
        *n
    }

    /// Queues a pull of `duration` requested at `now` behind the node's
    /// earlier pulls; returns when it finishes.
    fn queue_pull(&mut self, now: Timestamp, duration: Duration) -> Timestamp {
        let begin = self.puller_free_at.map_or(now, |free| free.max(now));
        let done = begin + duration;
        self.puller_free_at = Some(done);
        done
    }

    fn next_pod_ip(&mut self) -> String {
        self.pods_started = self.pods_started.wrapping_add(1);
        let h = hex_sha256(self.name.as_bytes());
        let b = u8::from_str_radix(&h[..2], 16).unwrap_or(0);
        let c = u8::from_str_radix(&h[2..4], 16).unwrap_or(0);
        // 10.<64+b%64>.<c>.0/24 per node, like a podCIDR; hosts .2 … .254
        format!("10.{}.{}.{}", 64 + b % 64, c, 2 + self.pods_started % 253)
    }
}

/// A stable InternalIP for a node, derived from its name (10.0.0.0/10 minus the pod range).
pub fn node_ip(name: &str) -> String {
    let h = hex_sha256(name.as_bytes());
    let byte = |i: usize| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap_or(0);
    format!("10.{}.{}.{}", byte(4) % 64, byte(5), 1 + byte(6) % 254)
}

/// When the state machine wants to be advanced again, and whether node images changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Advance {
    /// Earliest time at which something will change without outside input.
    pub next_wake: Option<Timestamp>,
    /// A pull finished, so `node.status.images` needs a write.
    pub node_images_changed: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Not reached yet (waiting on init containers) or about to start.
    Waiting,
    /// The image reference does not parse.
    Invalid(String),
    /// `imagePullPolicy: Never` and the image is missing.
    NeverPull,
    /// Pulling until `done`; the outcome was decided when the pull began.
    Pulling {
        done: Timestamp,
        result: Result<(String, i64), String>,
        /// A retry after a failure: the status keeps showing `ImagePullBackOff`.
        retry: bool,
    },
    /// A pull just failed.
    ErrImagePull {
        message: String,
        backoff_from: Timestamp,
        retry_at: Timestamp,
    },
    /// Waiting for the backoff to expire.
    BackOff { retry_at: Timestamp },
    /// Started and running (`restartPolicy: Always`).
    Running { started: Timestamp, digest: String },
    /// Ran and exited 0.
    Terminated { at: Timestamp, digest: String },
}

#[derive(Debug, Clone)]
struct ContainerRun {
    name: String,
    image: String,
    parsed: Result<ImageRef, String>,
    policy: PullPolicy,
    failures: u32,
    stage: Stage,
    id: String,
    /// The pod carries `imagePullSecrets` (credentials for the registry).
    credentials: bool,
}

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull if missing.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The field's value, defaulted as the API server does (`Always` for
    /// `:latest` or untagged references, else `IfNotPresent`).
    pub fn from_spec(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some(_) => PullPolicy::IfNotPresent,
            None => {
                let last = image.rsplit('/').next().unwrap_or(image);
                if image.contains('@') || !last.contains(':') || last.ends_with(":latest") {
                    if image.contains('@') {
                        PullPolicy::IfNotPresent
                    } else {
                        PullPolicy::Always
                    }
                } else {
                    PullPolicy::IfNotPresent
                }
            }
        }
    }
}

/// How a pod ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodOutcome {
    /// All containers exited 0.
    Succeeded,
    /// `activeDeadlineSeconds` passed.
    DeadlineExceeded,
}

/// The kubelet's view of one pod.
#[derive(Debug, Clone)]
pub struct PodRun {
    start: Timestamp,
    host_ip: String,
    pod_ip: String,
    deadline: Option<Timestamp>,
    keep_running: bool,
    init: Vec<ContainerRun>,
    main: Vec<ContainerRun>,
    outcome: Option<PodOutcome>,
    conditions: Vec<(&'static str, bool, Timestamp)>,
}

impl PodRun {
    /// Starts tracking `pod`, admitted on `node` at `now` (or at its existing `startTime`).
    pub fn new(pod: &Pod, node: &mut NodeState, now: Timestamp) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let start = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .unwrap_or(now);
        let start = whole_seconds(start);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let credentials = spec
            .image_pull_secrets
            .as_ref()
            .is_some_and(|s| !s.is_empty());
        let run = |c: &k8s_openapi::api::core::v1::Container| {
            let image = c.image.clone().unwrap_or_default();
            ContainerRun {
                name: c.name.clone(),
                parsed: ImageRef::parse(&image).map_err(|e| e.to_string()),
                policy: PullPolicy::from_spec(c.image_pull_policy.as_deref(), &image),
                image,
                failures: 0,
                stage: Stage::Waiting,
                id: hex_sha256(format!("{uid}/{}", c.name).as_bytes()),
                credentials,
            }
        };
        PodRun {
            start,
            host_ip: node.ip.clone(),
            pod_ip: node.next_pod_ip(),
            deadline: spec
                .active_deadline_seconds
                .map(|s| start + Duration::from_secs(s.max(0) as u64)),
            keep_running: spec.restart_policy.as_deref().unwrap_or("Always") == "Always",
            init: spec.init_containers.iter().flatten().map(run).collect(),
            main: spec.containers.iter().map(run).collect(),
            outcome: None,
            conditions: Vec::new(),
        }
    }

    /// How the pod ended, once it has.
    pub fn outcome(&self) -> Option<PodOutcome> {
        self.outcome
    }

    /// Advances every container as far as `now` allows. Call it again at
    /// [`Advance::next_wake`] (or earlier; extra calls are harmless).
    pub fn advance(
        &mut self,
        now: Timestamp,
        node: &mut NodeState,
        scenario: &Scenario,
    ) -> Advance {
        let mut images_changed = false;
        if self.outcome.is_none() && self.deadline.is_some_and(|d| now >= d) {
            self.outcome = Some(PodOutcome::DeadlineExceeded);
        }
        // Transitions that are due at the same instant cascade (a finished init
        // container lets the next one start), so loop to a fixed point.
        while self.outcome.is_none() {
            let mut progressed = false;
            let keep_running = self.keep_running;
            let active: &mut [ContainerRun] = match self
                .init
                .iter()
                .position(|c| !matches!(c.stage, Stage::Terminated { .. }))
            {
                Some(i) => &mut self.init[i..=i],
                None => &mut self.main,
            };
            for c in active.iter_mut() {
                progressed |= step(c, now, node, scenario, keep_running, &mut images_changed);
            }
            if self
                .init
                .iter()
                .chain(&self.main)
                .all(|c| matches!(c.stage, Stage::Terminated { .. }))
            {
                self.outcome = Some(PodOutcome::Succeeded);
            }
            if !progressed {
                break;
            }
        }
        self.update_conditions(now);
        Advance {
            next_wake: self.next_wake(),
            node_images_changed: images_changed,
        }
    }

    fn next_wake(&self) -> Option<Timestamp> {
        if self.outcome.is_some() {
            return None;
        }
        let stage_wake = self
            .init
            .iter()
            .chain(&self.main)
            .filter_map(|c| match &c.stage {
                Stage::Pulling { done, .. } => Some(*done),
                Stage::ErrImagePull { backoff_from, .. } => Some(*backoff_from),
                Stage::BackOff { retry_at } => Some(*retry_at),
                _ => None,
            })
            .min();
        match (stage_wake, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn init_done(&self) -> bool {
        self.init
            .iter()
            .all(|c| matches!(c.stage, Stage::Terminated { .. }))
    }

    fn phase(&self) -> &'static str {
        match self.outcome {
            Some(PodOutcome::Succeeded) => return "Succeeded",
            Some(PodOutcome::DeadlineExceeded) => return "Failed",
            None => {}
        }
        if !self.init_done() {
            return "Pending";
        }
        let running = self
            .main
            .iter()
            .filter(|c| matches!(c.stage, Stage::Running { .. }))
            .count();
        let stopped = self
            .main
            .iter()
            .filter(|c| matches!(c.stage, Stage::Terminated { .. }))
            .count();
        if running + stopped < self.main.len() {
            "Pending"
        } else {
            "Running"
        }
    }

    fn update_conditions(&mut self, now: Timestamp) {
        let now = whole_seconds(now);
        let ready = self.outcome.is_none()
            && self.init_done()
            && self
                .main
                .iter()
                .all(|c| matches!(c.stage, Stage::Running { .. }));
        let wanted = [
            ("Initialized", self.init_done()),
            ("Ready", ready),
            ("ContainersReady", ready),
            ("PodScheduled", true),
        ];
        if self.conditions.is_empty() {
            self.conditions = wanted.iter().map(|&(t, s)| (t, s, self.start)).collect();
            return;
        }
        for (cond, (_, want)) in self.conditions.iter_mut().zip(wanted) {
            if cond.1 != want {
                cond.1 = want;
                cond.2 = now;
            }
        }
    }

    /// The status a kubelet would write now. Equal statuses mean no write is due.
    pub fn status(&self) -> PodStatus {
        let completed = self.outcome == Some(PodOutcome::Succeeded);
        let unready: Vec<&str> = self
            .main
            .iter()
            .filter(|c| !matches!(c.stage, Stage::Running { .. }))
            .map(|c| c.name.as_str())
            .collect();
        let uninit: Vec<&str> = self
            .init
            .iter()
            .filter(|c| !matches!(c.stage, Stage::Terminated { .. }))
            .map(|c| c.name.as_str())
            .collect();
        let conditions = self
            .conditions
            .iter()
            .map(|&(kind, ok, at)| {
                let (reason, message) = match (kind, ok) {
                    (_, true) if completed && kind == "Initialized" => (Some("PodCompleted"), None),
                    (_, true) => (None, None),
                    ("Initialized", false) => (
                        Some("ContainersNotInitialized"),
                        Some(format!(
                            "containers with incomplete status: [{}]",
                            uninit.join(" ")
                        )),
                    ),
                    (_, false) if completed => (Some("PodCompleted"), None),
                    (_, false) => (
                        Some("ContainersNotReady"),
                        Some(format!(
                            "containers with unready status: [{}]",
                            unready.join(" ")
                        )),
                    ),
                };
                PodCondition {
                    type_: kind.to_string(),
                    status: if ok { "True" } else { "False" }.to_string(),
                    last_transition_time: Some(Time(at)),
                    reason: reason.map(str::to_string),
                    message,
                    ..Default::default()
                }
            })
            .collect();
        let init_done = self.init_done();
        let waiting_reason = |init: bool| {
            if init || !init_done {
                "PodInitializing"
            } else {
                "ContainerCreating"
            }
        };
        let statuses = |list: &[ContainerRun], init: bool| -> Vec<ContainerStatus> {
            list.iter()
                .map(|c| container_status(c, waiting_reason(init)))
                .collect()
        };
        let deadline = self.outcome == Some(PodOutcome::DeadlineExceeded);
        PodStatus {
            phase: Some(self.phase().to_string()),
            conditions: Some(conditions),
            host_ip: Some(self.host_ip.clone()),
            host_ips: None,
            pod_ip: Some(self.pod_ip.clone()),
            pod_ips: Some(vec![PodIP {
                ip: self.pod_ip.clone(),
            }]),
            start_time: Some(Time(self.start)),
            init_container_statuses: (!self.init.is_empty()).then(|| statuses(&self.init, true)),
            container_statuses: Some(statuses(&self.main, false)),
            reason: deadline.then(|| "DeadlineExceeded".to_string()),
            message: deadline.then(|| DEADLINE_MESSAGE.to_string()),
            ..Default::default()
        }
    }
}

/// Moves one container forward; returns whether its stage changed.
fn step(
    c: &mut ContainerRun,
    now: Timestamp,
    node: &mut NodeState,
    scenario: &Scenario,
    keep_running: bool,
    images_changed: &mut bool,
) -> bool {
    let image = match &c.parsed {
        Ok(i) => i.clone(),
        Err(msg) => {
            if c.stage == Stage::Waiting {
                c.stage = Stage::Invalid(msg.clone());
                return true;
            }
            return false;
        }
    };
    let start = |digest: String| {
        if keep_running {
            Stage::Running {
                started: now,
                digest,
            }
        } else {
            Stage::Terminated { at: now, digest }
        }
    };
    let next = match &c.stage {
        Stage::Waiting | Stage::BackOff { .. } => {
            let retry = matches!(c.stage, Stage::BackOff { .. });
            if let Stage::BackOff { retry_at } = c.stage {
                if now < retry_at {
                    return false;
                }
            }
            let plan = scenario.pull_plan(&node.name, &image);
            if node.has_image(&image) && c.policy != PullPolicy::Always {
                start(image.resolved_digest(plan.digest.as_deref()))
            } else if c.policy == PullPolicy::Never {
                Stage::NeverPull
            } else {
                let answer = scenario.registries.begin_pull(
                    image.registry(),
                    &node.name,
                    image.original(),
                    now,
                );
                let refused = answer == Answer::TooManyRequests;
                // A refused pull never reached the image: `failTimes` counts served attempts.
                let attempt = if refused {
                    0
                } else {
                    node.next_attempt(&image)
                };
                let result = if refused {
                    Err(image.too_many_requests_message())
                } else if plan.failures.fails(attempt, c.credentials) {
                    let n = image.normalized();
                    Err(match (plan.message, plan.failures) {
                        (_, Failures::Unauthorized) => image.unauthorized_message(),
                        // Failures that later succeed look like a registry hiccup, not a missing image.
                        (None, Failures::First(_)) => format!(
                            "rpc error: code = Unknown desc = failed to pull and unpack image \"{n}\": \
                             failed to copy: httpReadSeeker: failed open: failed to do request: \
                             dial tcp 10.96.0.10:443: i/o timeout"
                        ),
                        (detail, _) => {
                            let detail = detail.unwrap_or_else(|| format!("{n}: not found"));
                            format!(
                                "rpc error: code = NotFound desc = failed to pull and unpack image \"{n}\": \
                                 failed to resolve reference \"{n}\": {detail}"
                            )
                        }
                    })
                } else {
                    let digest = image.resolved_digest(plan.digest.as_deref());
                    let size = plan
                        .size_bytes
                        .unwrap_or_else(|| default_size_bytes(&digest));
                    Ok((digest, size))
                };
                Stage::Pulling {
                    done: node.queue_pull(now, plan.duration),
                    result,
                    retry,
                }
            }
        }
        Stage::Pulling { done, result, .. } => {
            if now < *done {
                return false;
            }
            match result {
                Ok((digest, size)) => {
                    node.add_image(&image, digest, *size);
                    *images_changed = true;
                    start(digest.clone())
                }
                Err(message) => {
                    c.failures += 1;
                    let backoff = scenario
                        .scaled(backoff_after(c.failures))
                        .max(Duration::from_millis(1));
                    let shown = scenario.scaled(ERR_IMAGE_PULL_SHOWN).min(backoff / 2);
                    Stage::ErrImagePull {
                        message: message.clone(),
                        backoff_from: *done + shown,
                        retry_at: *done + backoff,
                    }
                }
            }
        }
        Stage::ErrImagePull {
            backoff_from,
            retry_at,
            ..
        } => {
            if now < *backoff_from {
                return false;
            }
            Stage::BackOff {
                retry_at: *retry_at,
            }
        }
        Stage::Invalid(_) | Stage::NeverPull | Stage::Running { .. } | Stage::Terminated { .. } => {
            return false
        }
    };
    c.stage = next;
    true
}

/// Kubernetes timestamps carry whole seconds.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn container_status(c: &ContainerRun, waiting_reason: &str) -> ContainerStatus {
    let waiting = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    };
    let image_id = |digest: &str| match &c.parsed {
        Ok(i) => i.image_id(digest),
        Err(_) => String::new(),
    };
    let (state, image_id, started, ready) = match &c.stage {
        Stage::Waiting | Stage::Pulling { retry: false, .. } => {
            (waiting(waiting_reason, None), String::new(), false, false)
        }
        Stage::Invalid(msg) => (
            waiting("InvalidImageName", Some(msg.clone())),
            String::new(),
            false,
            false,
        ),
        Stage::NeverPull => (
            waiting(
                "ErrImageNeverPull",
                Some(format!(
                    "Container image \"{}\" is not present with pull policy of Never",
                    c.image
                )),
            ),
            String::new(),
            false,
            false,
        ),
        Stage::ErrImagePull { message, .. } => (
            waiting("ErrImagePull", Some(message.clone())),
            String::new(),
            false,
            false,
        ),
        Stage::BackOff { .. } | Stage::Pulling { retry: true, .. } => (
            waiting(
                "ImagePullBackOff",
                Some(format!("Back-off pulling image \"{}\"", c.image)),
            ),
            String::new(),
            false,
            false,
        ),
        Stage::Running { started, digest } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(whole_seconds(*started))),
                }),
                ..Default::default()
            },
            image_id(digest),
            true,
            true,
        ),
        Stage::Terminated { at, digest } => (
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    reason: Some("Completed".to_string()),
                    started_at: Some(Time(whole_seconds(*at))),
                    finished_at: Some(Time(whole_seconds(*at))),
                    container_id: Some(format!("containerd://{}", c.id)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            image_id(digest),
            false,
            false,
        ),
    };
    let has_container = matches!(c.stage, Stage::Running { .. } | Stage::Terminated { .. });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id,
        ready,
        restart_count: 0,
        started: Some(started),
        state: Some(state),
        container_id: has_container.then(|| format!("containerd://{}", c.id)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn pod(
        images: &[(&str, Option<&str>)],
        init: &[&str],
        restart: &str,
        deadline: Option<i64>,
    ) -> Pod {
        let c = |(i, (image, policy)): (usize, &(&str, Option<&str>))| Container {
            name: format!("c{i}"),
            image: Some(image.to_string()),
            image_pull_policy: policy.map(str::to_string),
            ..Default::default()
        };
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: images.iter().enumerate().map(c).collect(),
                init_containers: Some(
                    init.iter()
                        .enumerate()
                        .map(|(i, image)| Container {
                            name: format!("init{i}"),
                            image: Some(image.to_string()),
                            image_pull_policy: Some("IfNotPresent".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                restart_policy: Some(restart.into()),
                active_deadline_seconds: deadline,
                node_name: Some("node-0".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    const SCENARIO: &str = r#"
nodes: [{count: 2}]
images:
  - match: "missing/*"
    fail: ErrImagePull
    message: "manifest unknown"
  - match: "flaky/*"
    failTimes: 2
    pullSeconds: 3
  - match: "slow/*"
    pullSeconds: 30
preloaded:
  - image: nginx:latest
"#;

    struct Harness {
        scenario: Scenario,
        node: NodeState,
        run: PodRun,
        now: Timestamp,
        log: Vec<(i64, PodStatus)>,
    }

    impl Harness {
        fn new(scenario: &str, pod: Pod) -> Self {
            let scenario = Scenario::parse(scenario).unwrap();
            let mut node = NodeState::new("node-0", &scenario);
            let now = Timestamp::from_second(1_700_000_000).unwrap();
            let run = PodRun::new(&pod, &mut node, now);
            let mut h = Harness {
                scenario,
                node,
                run,
                now,
                log: vec![],
            };
            h.advance();
            h
        }

        fn advance(&mut self) -> Advance {
            let a = self.run.advance(self.now, &mut self.node, &self.scenario);
            let s = self.run.status();
            if self.log.last().map(|l| &l.1) != Some(&s) {
                self.log
                    .push((self.now.as_millisecond() - 1_700_000_000_000, s));
            }
            a
        }

        /// Runs until nothing is scheduled or `limit` passes; returns the log of
        /// (ms since start, waiting reason of container 0 or phase).
        fn run_until(&mut self, limit: Duration) -> Vec<(i64, String)> {
            let end = self.now + limit;
            loop {
                let a = self.advance();
                match a.next_wake {
                    Some(t) if t <= end => self.now = t,
                    _ => break,
                }
            }
            self.log.iter().map(|(t, s)| (*t, summary(s))).collect()
        }
    }

    fn summary(s: &PodStatus) -> String {
        let c = &s.container_statuses.as_ref().unwrap()[0];
        let st = c.state.as_ref().unwrap();
        if let Some(w) = &st.waiting {
            return w.reason.clone().unwrap();
        }
        if st.terminated.is_some() {
            return format!("Terminated/{}", s.phase.as_deref().unwrap());
        }
        format!("Running/{}", s.phase.as_deref().unwrap())
    }

    #[test]
    fn backoff_schedule_doubles_to_five_minutes() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff_after(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn preloaded_if_not_present_starts_at_once() {
        let mut h = Harness::new(
            SCENARIO,
            pod(
                &[("nginx:latest", Some("IfNotPresent"))],
                &[],
                "Never",
                None,
            ),
        );
        let log = h.run_until(Duration::from_secs(60));
        assert_eq!(log, [(0, "Terminated/Succeeded".to_string())]);
        let s = h.run.status();
        let c = &s.container_statuses.unwrap()[0];
        assert!(c.image_id.starts_with("docker.io/library/nginx@sha256:"));
        assert_eq!(
            c.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            0
        );
        let conds: Vec<_> = s
            .conditions
            .unwrap()
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect();
        assert_eq!(
            conds[0],
            (
                "Initialized".into(),
                "True".into(),
                Some("PodCompleted".into())
            )
        );
        assert_eq!(
            conds[1],
            ("Ready".into(), "False".into(), Some("PodCompleted".into()))
        );
        assert_eq!(conds[3], ("PodScheduled".into(), "True".into(), None));
        assert_eq!(s.host_ip.as_deref(), Some(h.node.ip.as_str()));
        assert!(s.pod_ip.is_some() && s.start_time.is_some());
    }

    #[test]
    fn policy_always_pulls_even_when_present() {
        let mut h = Harness::new(
            SCENARIO,
            pod(&[("nginx:latest", Some("Always"))], &[], "Never", None),
        );
        let log = h.run_until(Duration::from_secs(60));
        assert_eq!(
            log,
            [
                (0, "ContainerCreating".to_string()),
                (1000, "Terminated/Succeeded".to_string())
            ]
        );
    }

    #[test]
    fn pulled_images_land_on_the_node_newest_first() {
        let mut h = Harness::new(
            SCENARIO,
            pod(&[("slow/model:v1", None)], &[], "Never", None),
        );
        h.run_until(Duration::from_secs(60));
        let names = &h.node.reported_images()[0].names;
        assert_eq!(names[1], "docker.io/slow/model:v1");
        assert!(names[0].starts_with("docker.io/slow/model@sha256:"));
        assert_eq!(h.node.reported_images().len(), 2);
        assert_eq!(h.log.last().map(|l| l.0), Some(30_000));
    }

    #[test]
    fn pulls_on_one_node_run_one_after_another() {
        // Two 30 s images in one pod: the second pull starts when the first ends.
        let mut h = Harness::new(
            SCENARIO,
            pod(
                &[("slow/a:1", None), ("slow/b:1", None)],
                &[],
                "Never",
                None,
            ),
        );
        h.run_until(Duration::from_secs(120));
        assert_eq!(h.log.last().map(|l| l.0), Some(60_000));
        let first = &h.log.iter().find(|(_, s)| {
            s.container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .terminated
                .is_some()
        });
        assert_eq!(first.map(|l| l.0), Some(30_000));

        // Two pods admitted at once on one node: the second pod's pull waits for the first's.
        let mut node = NodeState::new("node-0", &h.scenario);
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let mut a = PodRun::new(
            &pod(&[("slow/c:1", None)], &[], "Never", None),
            &mut node,
            t0,
        );
        let mut b = PodRun::new(
            &pod(&[("slow/d:1", None)], &[], "Never", None),
            &mut node,
            t0,
        );
        let wake_a = a.advance(t0, &mut node, &h.scenario).next_wake;
        let wake_b = b.advance(t0, &mut node, &h.scenario).next_wake;
        assert_eq!(wake_a, Some(t0 + Duration::from_secs(30)));
        assert_eq!(wake_b, Some(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn node_reports_at_most_fifty_images() {
        let scenario = Scenario::parse("nodes: [{count: 1}]").unwrap();
        let mut node = NodeState::new("node-0", &scenario);
        for i in 0..60 {
            let r = ImageRef::parse(&format!("img{i}")).unwrap();
            node.add_image(&r, &r.resolved_digest(None), 1);
        }
        assert_eq!(node.reported_images().len(), 50);
        assert_eq!(
            node.reported_images()[0].names[1],
            "docker.io/library/img59:latest"
        );
        assert!(node.has_image(&ImageRef::parse("img0").unwrap()));
    }

    #[test]
    fn failing_pull_alternates_err_image_pull_and_backoff() {
        let mut h = Harness::new(
            SCENARIO,
            pod(&[("missing/app:1", None)], &[], "Never", None),
        );
        let log = h.run_until(Duration::from_secs(100));
        let expect: Vec<(i64, String)> = [
            (0, "ContainerCreating"),
            (1_000, "ErrImagePull"),
            (2_000, "ImagePullBackOff"),
            (12_000, "ErrImagePull"), // retry at 11 s, pull 1 s
            (13_000, "ImagePullBackOff"),
            (33_000, "ErrImagePull"), // backoff 20 s
            (34_000, "ImagePullBackOff"),
            (74_000, "ErrImagePull"), // backoff 40 s
            (75_000, "ImagePullBackOff"),
        ]
        .iter()
        .map(|(t, s)| (*t, s.to_string()))
        .collect();
        assert_eq!(log, expect);
        let msg = waiting(&h, 1).message.unwrap();
        assert_eq!(
            msg,
            "rpc error: code = NotFound desc = failed to pull and unpack image \"docker.io/missing/app:1\": \
             failed to resolve reference \"docker.io/missing/app:1\": manifest unknown"
        );
        let msg = waiting(&h, 2).message.unwrap();
        assert_eq!(msg, "Back-off pulling image \"missing/app:1\"");
        assert_eq!(h.log[2].1.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn fail_times_recovers_within_one_pod_under_backoff() {
        let mut h = Harness::new(SCENARIO, pod(&[("flaky/app:1", None)], &[], "Never", None));
        let log = h.run_until(Duration::from_secs(600));
        let reasons: Vec<_> = log.iter().map(|l| l.1.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "ContainerCreating",
                "ErrImagePull",
                "ImagePullBackOff",
                "ErrImagePull",
                "ImagePullBackOff",
                "Terminated/Succeeded"
            ]
        );
        // 3 s pull, fail; 10 s backoff; 3 s pull, fail; 20 s backoff; 3 s pull.
        assert_eq!(
            log.last().unwrap().0,
            3_000 + 10_000 + 3_000 + 20_000 + 3_000
        );
    }

    #[test]
    fn fail_times_counts_attempts_per_node_across_pods() {
        let scenario = Scenario::parse(SCENARIO).unwrap();
        let mut node = NodeState::new("node-0", &scenario);
        let mut now = Timestamp::from_second(1_700_000_000).unwrap();
        for expect_failed in [true, true, false] {
            let mut run = PodRun::new(
                &pod(&[("flaky/app:1", None)], &[], "Never", None),
                &mut node,
                now,
            );
            run.advance(now, &mut node, &scenario);
            now += Duration::from_secs(3);
            run.advance(now, &mut node, &scenario);
            let reason = summary(&run.status());
            assert_eq!(reason == "ErrImagePull", expect_failed, "{reason}");
        }
    }

    #[test]
    fn invalid_reference_is_invalid_image_name() {
        let mut h = Harness::new(SCENARIO, pod(&[("Bad Image", None)], &[], "Never", None));
        let log = h.run_until(Duration::from_secs(600));
        assert_eq!(log, [(0, "InvalidImageName".to_string())]);
        let msg = waiting(&h, 0).message.unwrap();
        assert_eq!(
            msg,
            "Failed to apply default image tag \"Bad Image\": couldn't parse image reference \"Bad Image\": invalid reference format"
        );
    }

    /// The waiting state of container 0 in the `i`-th status the harness logged.
    fn waiting(h: &Harness, i: usize) -> ContainerStateWaiting {
        h.log[i].1.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap()
    }

    /// The message of container 0 while it shows `ErrImagePull`.
    fn err_image_pull_message(h: &Harness) -> Option<String> {
        h.log.iter().find_map(|(_, s)| {
            let w = s.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .waiting
                .as_ref()?;
            (w.reason.as_deref() == Some("ErrImagePull")).then(|| w.message.clone().unwrap())
        })
    }

    #[test]
    fn messages_are_the_real_kubelets() {
        // As kubelet 1.20.2 on containerd 1.6 reported them for the same references.
        let mut h = Harness::new(
            "images: [{match: \"*/missing:*\", fail: ErrImagePull}]",
            pod(&[("127.0.0.1:5000/missing:1", None)], &[], "Never", None),
        );
        h.run_until(Duration::from_secs(5));
        assert_eq!(
            err_image_pull_message(&h).unwrap(),
            "rpc error: code = NotFound desc = failed to pull and unpack image \"127.0.0.1:5000/missing:1\": \
             failed to resolve reference \"127.0.0.1:5000/missing:1\": 127.0.0.1:5000/missing:1: not found"
        );
        let mut h = Harness::new(
            SCENARIO,
            pod(&[("127.0.0.1:5000/Bad:1", None)], &[], "Never", None),
        );
        h.run_until(Duration::from_secs(5));
        let w = waiting(&h, 0);
        assert_eq!(w.reason.as_deref(), Some("InvalidImageName"));
        assert_eq!(
            w.message.as_deref(),
            Some(
                "Failed to apply default image tag \"127.0.0.1:5000/Bad:1\": couldn't parse image reference \
                 \"127.0.0.1:5000/Bad:1\": invalid reference format: repository name must be lowercase"
            )
        );
    }

    #[test]
    fn limited_registry_answers_too_many_requests_past_its_limit() {
        let scenario =
            Scenario::parse("registries: [{host: docker.io, limit: 1, window: 60s}]").unwrap();
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        // One pod of `image` on its own node, 1.5 s after `at` (pulled, or refused and
        // still showing ErrImagePull): container 0's waiting reason and message.
        let pull = |node: &str, image: &str, at: Timestamp| {
            let mut state = NodeState::new(node, &scenario);
            let mut run = PodRun::new(&pod(&[(image, None)], &[], "Never", None), &mut state, at);
            run.advance(at, &mut state, &scenario);
            run.advance(at + Duration::from_millis(1500), &mut state, &scenario);
            let status = run.status().container_statuses.unwrap().remove(0);
            let waiting = status.state.unwrap().waiting.unwrap_or_default();
            (waiting.reason, waiting.message)
        };
        assert_eq!(pull("node-0", "nginx:1.25", t0), (None, None), "served");
        let (reason, message) = pull("node-1", "nginx:1.25", t0 + Duration::from_secs(1));
        assert_eq!(reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(
            message.as_deref(),
            Some(
                "rpc error: code = Unknown desc = failed to pull and unpack image \"docker.io/library/nginx:1.25\": \
                 failed to resolve reference \"docker.io/library/nginx:1.25\": pulling from host registry-1.docker.io \
                 failed with status code [manifests 1.25]: 429 Too Many Requests - Server message: \
                 toomanyrequests: You have reached your pull rate limit."
            )
        );
        assert_eq!(
            pull("node-2", "ghcr.io/org/app:1", t0 + Duration::from_secs(1)),
            (None, None),
            "another registry"
        );
        assert_eq!(
            pull("node-3", "nginx:1.25", t0 + Duration::from_secs(60)),
            (None, None),
            "next window"
        );
    }

    #[test]
    fn unauthorized_fails_without_pull_secrets_and_pulls_with_them() {
        let scenario = "images: [{match: \"127.0.0.1:5000/private/*\", fail: Unauthorized}]";
        let image = "127.0.0.1:5000/private/hello:1";
        let mut h = Harness::new(scenario, pod(&[(image, None)], &[], "Never", None));
        h.run_until(Duration::from_secs(60));
        assert_eq!(
            err_image_pull_message(&h).unwrap(),
            "rpc error: code = Unknown desc = failed to pull and unpack image \"127.0.0.1:5000/private/hello:1\": \
             failed to resolve reference \"127.0.0.1:5000/private/hello:1\": pulling from host 127.0.0.1:5000 \
             failed with status code [manifests 1]: 401 Unauthorized"
        );
        assert!(h.run.outcome().is_none(), "still failing");

        let mut with_secret = pod(&[(image, None)], &[], "Never", None);
        with_secret.spec.as_mut().unwrap().image_pull_secrets =
            Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
                name: "regcred".into(),
            }]);
        let mut h = Harness::new(scenario, with_secret);
        let log = h.run_until(Duration::from_secs(60));
        assert_eq!(log.last().unwrap().1, "Terminated/Succeeded");
    }

    #[test]
    fn init_containers_run_first_in_order() {
        let mut h = Harness::new(
            SCENARIO,
            pod(
                &[("nginx:latest", Some("IfNotPresent"))],
                &["a/one", "a/two"],
                "Never",
                None,
            ),
        );
        h.run_until(Duration::from_secs(60));
        let first = &h.log[0].1;
        let w = |s: &ContainerStatus| {
            s.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .map(|w| w.reason.clone().unwrap())
        };
        assert_eq!(
            w(&first.container_statuses.as_ref().unwrap()[0]).as_deref(),
            Some("PodInitializing")
        );
        assert_eq!(
            first.conditions.as_ref().unwrap()[0].reason.as_deref(),
            Some("ContainersNotInitialized")
        );
        let times: Vec<_> = h.log.iter().map(|l| l.0).collect();
        assert_eq!(times, [0, 1_000, 2_000]);
        assert_eq!(h.log[2].1.phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn active_deadline_fails_the_pod() {
        let mut h = Harness::new(SCENARIO, pod(&[("slow/x", None)], &[], "Never", Some(5)));
        let log = h.run_until(Duration::from_secs(60));
        assert_eq!(log.last().unwrap().0, 5_000);
        let s = &h.log.last().unwrap().1;
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(s.message.as_deref(), Some(DEADLINE_MESSAGE));
        assert_eq!(h.run.outcome(), Some(PodOutcome::DeadlineExceeded));
    }

    #[test]
    fn restart_always_keeps_running_and_ready() {
        let mut h = Harness::new(
            SCENARIO,
            pod(
                &[("nginx:latest", Some("IfNotPresent"))],
                &[],
                "Always",
                None,
            ),
        );
        h.run_until(Duration::from_secs(60));
        let s = h.run.status();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.conditions.unwrap()[1].status, "True");
    }

    #[test]
    fn time_scale_shrinks_pulls_and_backoff() {
        let scaled = SCENARIO.replace("nodes:", "timeScale: 0.01\nnodes:");
        let mut h = Harness::new(&scaled, pod(&[("flaky/app:1", None)], &[], "Never", None));
        let log = h.run_until(Duration::from_secs(10));
        assert_eq!(
            log.last().unwrap(),
            &(390, "Terminated/Succeeded".to_string())
        );
    }

    #[test]
    fn default_pull_policy_matches_the_api_server() {
        assert_eq!(PullPolicy::from_spec(None, "nginx"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::from_spec(None, "nginx:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::from_spec(None, "nginx:1.25"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_spec(None, "localhost:5000/nginx"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::from_spec(None, "nginx@sha256:ab"),
            PullPolicy::IfNotPresent
        );
    }
}
