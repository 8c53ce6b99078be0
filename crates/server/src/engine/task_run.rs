//! One running task in the engine's memory: its spec, its nodes, and the
//! bookkeeping that decides what to write and which Jobs to delete.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};
use tokio::time::Instant;

use crate::cluster::pull_job::{container_index, job_name};
use crate::cluster::{ContainerState, PodObservation};
use crate::domain::node_pull::{
    digest_of, pinned_reference, summarize, ImagePull, ImageReport, NodePhase, NodePull,
    PULL_FAILURE_REASONS,
};
use crate::domain::node_speed::{self, makespan, NodeSpeed};
use crate::domain::pacing::{is_rate_limited, BucketKey};
use crate::domain::selection::{DISK_PRESSURE, DISK_PRESSURE_MESSAGE};
use crate::domain::task::{TaskId, TaskSpec};
use crate::store::NodeRecord;

/// A task the engine is driving.
#[derive(Debug)]
pub struct TaskRun {
    /// The stored view, kept current and written back coalesced.
    pub view: Task,
    /// Validated spec.
    pub spec: TaskSpec,
    /// Task id.
    pub id: TaskId,
    /// Every selected node.
    pub nodes: Vec<NodePull>,
    /// Node name → index in `nodes`.
    pub index: HashMap<String, usize>,
    /// Window slots in use: nodes whose Job is alive or being deleted.
    pub in_flight: usize,
    /// Position of the next never-started node to consider.
    pub cursor: usize,
    /// Nodes whose record must be written before their Job is deleted.
    pub unrecorded: BTreeSet<usize>,
    /// Jobs to delete once the records above are written, each with whether
    /// it still holds its window slot until deleted (see `attempt_ended`).
    pub doomed_jobs: Vec<(String, bool)>,
    /// The view changed since the last write.
    pub dirty: bool,
    /// When each node's current attempt started (for the pull duration metric).
    pub attempt_started: HashMap<usize, DateTime<Utc>>,
    /// Node attempts ended since the metrics were last updated: (outcome, seconds).
    pub ended: Vec<(&'static str, f64)>,
    /// Reasons of the failed node attempts among `ended`.
    pub failure_reasons: Vec<String>,
    /// When the task started, on the monotonic clock (for `timeoutSeconds`).
    pub started: Instant,
    /// Monotonic deadlines behind the nodes' wall-clock phase times.
    pub timers: HashMap<usize, NodeTimer>,
    /// Nodes whose current attempt's Job the API server confirmed, and when.
    pub confirmed: HashMap<usize, Instant>,
    /// Nodes whose Job creation keeps failing: failures so far and since when.
    pub create_failures: HashMap<usize, (u32, Instant)>,
    /// Nodes whose phase changed since their timers were last fixed.
    untimed: Vec<usize>,
    /// Per node, the learned seconds per image pull (`None`: no history).
    pub seconds_per_pull: Vec<Option<f64>>,
    /// The middle of the learned seconds per pull, for nodes without history.
    history_median: Option<f64>,
    /// Per node in flight: when its pod was first seen and how many images
    /// it pulls; `None` for an attempt taken up after a restart (not measurable).
    pod_seen: HashMap<usize, Option<(Instant, usize)>>,
    /// Measured seconds per pull not yet handed to the engine: (node, seconds).
    pub speed_samples: Vec<(String, f64)>,
    /// Sum and count of the seconds per pull measured in this task.
    measured: (f64, u32),
    /// With `pinDigests`, per image: the digest its first successful pull
    /// resolved (or the one it was given by), which later Jobs pull.
    pub pins: Vec<Option<String>>,
    /// Registry host of each task image, in `spec.images` order.
    pub image_hosts: Vec<String>,
    /// Pull tokens held by started nodes' attempts.
    pub grants: HashMap<usize, Vec<BucketKey>>,
    /// Tokens of ended attempts to give back, and whether the attempt completed.
    pub ended_grants: Vec<(Vec<BucketKey>, bool)>,
    /// Registry hosts that refused a pull for their rate limit since the engine last looked.
    pub throttled: Vec<String>,
    /// Never-started nodes the window passed over for want of registry
    /// tokens, grouped by the hosts they pull from, with since when.
    pub held_back: BTreeMap<Vec<String>, BTreeMap<usize, Instant>>,
    /// Ready nodes held back by registry pacing at the last window pass.
    pub waiting_for_registry: u32,
    /// How long the paced registries need for the pulls still to start (set by the engine).
    pub pacing_wait: Option<std::time::Duration>,
}

/// The monotonic instant a node's phase refers to (attempt start or retry
/// time), fixed when first seen so that wall-clock steps move nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeTimer {
    attempt: u32,
    started: bool,
    wall: DateTime<Utc>,
    /// The instant itself.
    pub at: Instant,
}

/// `wall_at` on the monotonic clock, given that `wall` and `mono` are now.
pub fn to_monotonic(wall_at: DateTime<Utc>, wall: DateTime<Utc>, mono: Instant) -> Instant {
    let offset = wall_at - wall;
    match offset.to_std() {
        Ok(ahead) => mono + ahead,
        Err(_) => {
            let behind = (-offset).to_std().unwrap_or_default();
            mono.checked_sub(behind).unwrap_or(mono)
        }
    }
}

impl TaskRun {
    /// Node `i`'s current Job was deleted by someone else: its attempt fails
    /// (and is retried if the task allows).
    pub fn job_deleted(&mut self, i: usize, now: DateTime<Utc>) {
        self.nodes[i].fail_attempt(
            "JobDeleted",
            "the pull Job was deleted outside the service",
            &self.spec,
            now,
        );
        self.attempt_ended(i);
    }

    /// A run over `nodes` (already in the order they will be started).
    pub fn new(view: Task, spec: TaskSpec, nodes: Vec<NodePull>) -> TaskRun {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node.clone(), i))
            .collect();
        let in_flight = nodes.iter().filter(|n| n.is_started()).count();
        let node_count = nodes.len();
        let pins = initial_pins(&view, &spec, &nodes);
        let image_hosts = spec
            .images
            .iter()
            .map(|i| i.registry().to_owned())
            .collect();
        TaskRun {
            id: TaskId(view.task_id.clone()),
            view,
            spec,
            nodes,
            index,
            in_flight,
            cursor: 0,
            unrecorded: BTreeSet::new(),
            doomed_jobs: Vec::new(),
            dirty: true,
            attempt_started: HashMap::new(),
            ended: Vec::new(),
            failure_reasons: Vec::new(),
            started: Instant::now(),
            timers: HashMap::new(),
            confirmed: HashMap::new(),
            create_failures: HashMap::new(),
            untimed: Vec::new(),
            seconds_per_pull: vec![None; node_count],
            history_median: None,
            pod_seen: HashMap::new(),
            speed_samples: Vec::new(),
            measured: (0.0, 0),
            pins,
            image_hosts,
            grants: HashMap::new(),
            ended_grants: Vec::new(),
            throttled: Vec::new(),
            held_back: BTreeMap::new(),
            waiting_for_registry: 0,
            pacing_wait: None,
        }
    }

    /// Nodes this task may have pulling at once: `batchSize`, or one while a
    /// task with `pinDigests` waits for the first successful pull of an
    /// image that nodes still need (so no two nodes resolve a tag apart).
    pub fn window(&self) -> usize {
        let awaits_pin = self.spec.pin_digests
            && self.pins.iter().enumerate().any(|(ix, pin)| {
                pin.is_none()
                    && self
                        .nodes
                        .iter()
                        .any(|n| matches!(n.images.get(ix), Some(ImagePull::Pending { .. })))
            });
        if awaits_pin {
            1
        } else {
            self.spec.batch_size as usize
        }
    }

    /// What Jobs pull for image `ix`: the pinned digest once there is one,
    /// else the image as given.
    pub fn pull_reference(&self, ix: usize) -> String {
        let image = &self.spec.images[ix];
        match &self.pins[ix] {
            Some(digest) if image.digest().is_none() => pinned_reference(image, digest),
            _ => image.as_str().to_owned(),
        }
    }

    /// With `pinDigests`, fixes the digest of every image node `i` is the
    /// first to have pulled.
    fn pin_pulled(&mut self, i: usize) {
        if !self.spec.pin_digests {
            return;
        }
        for (pin, slot) in self.pins.iter_mut().zip(&self.nodes[i].images) {
            if let (None, ImagePull::Pulled { digest: Some(d) }) = (&pin, slot) {
                *pin = Some(d.clone());
                self.dirty = true;
            }
        }
    }

    /// The registry hosts node `i` still pulls from, sorted, without repeats.
    pub fn registries_of(&self, i: usize) -> Vec<String> {
        let mut hosts: Vec<String> = self.nodes[i]
            .pending_images()
            .into_iter()
            .map(|ix| self.image_hosts[ix].clone())
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Node `i`'s attempt is over (or never got its Job): its pull tokens go back.
    pub fn give_back(&mut self, i: usize, completed: bool) {
        if let Some(keys) = self.grants.remove(&i) {
            self.ended_grants.push((keys, completed));
        }
    }

    /// Takes in the learned speeds of the run's nodes (when the run is built).
    pub fn know_speeds(&mut self, speeds: &HashMap<String, NodeSpeed>, now: DateTime<Utc>) {
        self.seconds_per_pull = self
            .nodes
            .iter()
            .map(|n| speeds.get(&n.node).and_then(|s| s.expected_at(now)))
            .collect();
        self.history_median =
            node_speed::median(self.seconds_per_pull.iter().flatten().copied().collect());
    }

    /// Node `i`'s attempt was taken up running (after a restart): its pull
    /// time cannot be measured.
    pub fn unmeasured(&mut self, i: usize) {
        self.pod_seen.insert(i, None);
    }

    /// Fixes the timers of nodes whose phase changed (call with the clocks
    /// read when the change was made).
    pub fn arm_timers(&mut self, wall: DateTime<Utc>, mono: Instant) {
        for i in std::mem::take(&mut self.untimed) {
            self.timer(i, wall, mono);
        }
    }

    /// Places the task's start on the monotonic clock from its stored
    /// `startedAt` (once, when the run is built).
    pub fn anchor_start(&mut self, wall: DateTime<Utc>, mono: Instant) {
        if let Some(started_at) = self.view.started_at {
            self.started = to_monotonic(started_at.min(wall), wall, mono);
        }
    }

    /// The monotonic instant behind node `i`'s phase: when its attempt
    /// started, or when its retry may start. Derived once from the phase's
    /// wall time and then kept.
    pub fn timer(&mut self, i: usize, wall: DateTime<Utc>, mono: Instant) -> Option<Instant> {
        let node = &self.nodes[i];
        let (started, wall_at) = match node.phase {
            NodePhase::Started { since } => (true, since),
            NodePhase::RetryWait { until } => (false, until),
            _ => {
                self.timers.remove(&i);
                return None;
            }
        };
        let key = (node.attempt, started, wall_at);
        if let Some(t) = self.timers.get(&i) {
            if (t.attempt, t.started, t.wall) == key {
                return Some(t.at);
            }
        }
        let at = to_monotonic(wall_at, wall, mono);
        self.set_timer(i, at);
        Some(at)
    }

    /// Fixes node `i`'s current phase to the monotonic instant `at`.
    pub fn set_timer(&mut self, i: usize, at: Instant) {
        let node = &self.nodes[i];
        let (started, wall) = match node.phase {
            NodePhase::Started { since } => (true, since),
            NodePhase::RetryWait { until } => (false, until),
            _ => return,
        };
        self.timers.insert(
            i,
            NodeTimer {
                attempt: node.attempt,
                started,
                wall,
                at,
            },
        );
    }

    /// Whether node `i` may start an attempt now.
    pub fn ready(&mut self, i: usize, wall: DateTime<Utc>, mono: Instant) -> bool {
        match self.nodes[i].phase {
            NodePhase::Waiting => true,
            NodePhase::RetryWait { .. } => self.timer(i, wall, mono).is_some_and(|at| at <= mono),
            _ => false,
        }
    }

    /// Name of node `i`'s Job for its current attempt.
    pub fn job_of(&self, i: usize) -> String {
        job_name(self.id.suffix(), &self.nodes[i].node, self.nodes[i].attempt)
    }

    /// Whether every node's outcome is final.
    pub fn all_done(&self) -> bool {
        self.nodes.iter().all(NodePull::is_done)
    }

    /// Marks node `i` as having ended its attempt: record it, then delete its
    /// Job. Its window slot is freed once the deletion went through, so the
    /// task never has more than `batchSize` Jobs in the cluster.
    pub fn attempt_ended(&mut self, i: usize) {
        self.unrecorded.insert(i);
        let seen = self.pod_seen.remove(&i).flatten();
        let outcome = match self.nodes[i].phase {
            NodePhase::Completed { at } => {
                if let Some((seen, pulls)) = seen {
                    let spp = node_speed::seconds_per_pull(seen.elapsed().as_secs_f64(), pulls);
                    self.speed_samples.push((self.nodes[i].node.clone(), spp));
                    self.measured.0 += spp;
                    self.measured.1 += 1;
                }
                let secs = self
                    .attempt_started
                    .get(&i)
                    .map(|s| (at - *s).num_milliseconds() as f64 / 1000.0);
                self.ended.push(("success", secs.unwrap_or(-1.0)));
                None
            }
            NodePhase::Failed { .. } => Some("failed"),
            NodePhase::Skipped { .. } => Some("skipped"),
            _ => Some("retried"),
        };
        if let Some(outcome) = outcome {
            self.ended.push((outcome, -1.0));
            if outcome != "skipped" {
                if let Some(reason) = self.nodes[i].last_failure_reason() {
                    self.failure_reasons.push(reason.to_owned());
                }
            }
        }
        let completed = matches!(self.nodes[i].phase, NodePhase::Completed { .. });
        self.give_back(i, completed);
        self.attempt_started.remove(&i);
        self.confirmed.remove(&i);
        self.untimed.push(i);
        // A node whose every image ran pulls nothing more: its slot goes to
        // the next node now, while the record is written and the Job
        // deleted behind it. Any other end (a failed pull the kubelet may
        // retry, a timeout, a Job still pulling) holds the slot until the
        // deletion is done, so no more than `batchSize` nodes ever pull.
        if completed {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let job = self.job_of(i);
        self.doomed_jobs.push((job, !completed));
        self.dirty = true;
    }

    /// Applies a pod observation of this task. Returns true if it changed anything.
    pub fn observe_pod(&mut self, pod: &PodObservation, now: DateTime<Utc>) -> bool {
        let Some(&i) = self.index.get(&pod.node) else {
            return false;
        };
        let node = &self.nodes[i];
        if !node.is_started() || node.attempt != pod.attempt {
            return false;
        }
        let pulls = node.pending_images().len();
        self.pod_seen
            .entry(i)
            .or_insert_with(|| Some((Instant::now(), pulls)));
        // The helper init container failing to pull fails every image of the attempt.
        if let Some(helper_failure) = pod.init_containers.iter().find_map(pull_failure) {
            let (reason, message) = helper_failure;
            let message = format!("helper image could not be pulled: {message}");
            self.nodes[i].fail_attempt(&reason, &message, &self.spec, now);
            self.attempt_ended(i);
            return true;
        }
        let reports: Vec<(usize, ImageReport)> = pod
            .containers
            .iter()
            .filter_map(|c| {
                let index = container_index(&c.name)?;
                let report = match &c.state {
                    ContainerState::Running | ContainerState::Terminated => {
                        ImageReport::Pulled(digest_of(&c.image_id))
                    }
                    ContainerState::Waiting { reason, message } => {
                        if PULL_FAILURE_REASONS.contains(&reason.as_str()) {
                            ImageReport::Failed {
                                reason: reason.clone(),
                                message: message.clone(),
                            }
                        } else {
                            ImageReport::Pulling
                        }
                    }
                };
                Some((index, report))
            })
            .collect();
        let before = self.nodes[i].clone();
        let ended = self.nodes[i].observe(&reports, &self.spec, now);
        self.pin_pulled(i);
        if ended {
            for (index, report) in &reports {
                if let ImageReport::Failed { message, .. } = report {
                    if is_rate_limited(message) {
                        self.throttled.extend(self.image_hosts.get(*index).cloned());
                    }
                }
            }
            self.attempt_ended(i);
            return true;
        }
        if pod.phase == "Failed" {
            let (reason, message) = if pod.reason == "DeadlineExceeded" {
                (
                    crate::domain::node_pull::TIMEOUT_REASON.to_owned(),
                    format!("pulls did not finish in time: {}", pod.message),
                )
            } else {
                (
                    if pod.reason.is_empty() {
                        "PodFailed".to_owned()
                    } else {
                        pod.reason.clone()
                    },
                    pod.message.clone(),
                )
            };
            self.nodes[i].fail_attempt(&reason, &message, &self.spec, now);
            self.attempt_ended(i);
            return true;
        }
        let changed = before != self.nodes[i];
        self.dirty |= changed;
        changed
    }

    /// Node `name` went away: skip it (and drop its Job if one runs).
    pub fn node_gone(&mut self, name: &str, message: &str, now: DateTime<Utc>) -> bool {
        let Some(&i) = self.index.get(name) else {
            return false;
        };
        if self.nodes[i].is_done() {
            return false;
        }
        let was_started = self.nodes[i].is_started();
        self.nodes[i].skip(message, now);
        if was_started {
            self.attempt_ended(i);
        } else {
            self.unrecorded.insert(i);
            self.dirty = true;
        }
        true
    }

    /// Node `name` came under DiskPressure: if it has not started pulling
    /// (or waits to retry) it is skipped; a pull under way is left to end.
    pub fn node_under_disk_pressure(&mut self, name: &str, now: DateTime<Utc>) -> bool {
        let Some(&i) = self.index.get(name) else {
            return false;
        };
        if self.nodes[i].is_done() || self.nodes[i].is_started() {
            return false;
        }
        self.nodes[i].skip_for(DISK_PRESSURE, DISK_PRESSURE_MESSAGE, now);
        self.unrecorded.insert(i);
        self.dirty = true;
        true
    }

    /// Node records still to write.
    pub fn take_records(&mut self) -> Vec<NodeRecord> {
        let indices = std::mem::take(&mut self.unrecorded);
        indices
            .into_iter()
            .map(|i| record_of(&self.nodes[i]))
            .collect()
    }

    /// Refreshes the view's derived fields from the node states.
    pub fn refresh_view(&mut self, now: DateTime<Utc>) {
        let images = self.view.images.clone();
        let s = summarize(&images, self.spec.batch_size, &self.nodes);
        self.view.progress = s.progress;
        self.view.failed_node_details = s.failed;
        self.view.failed_node_details_total = s.failed_total;
        self.view.skipped_node_details = s.skipped;
        self.view.image_statuses = s.images;
        for (status, pin) in self.view.image_statuses.iter_mut().zip(&self.pins) {
            status.pinned_digest.clone_from(pin);
        }
        self.view.progress.waiting_for_registry = self.waiting_for_registry;
        self.view.estimated_completion = if self.view.status == TaskStatus::Running {
            let paced = self
                .pacing_wait
                .and_then(|w| chrono::Duration::from_std(w).ok())
                .map(|w| now + w);
            self.expected_end(now)
                .or_else(|| {
                    estimate(
                        self.view.started_at,
                        now,
                        s.done_nodes,
                        self.nodes.len() as u32,
                    )
                })
                .max(paced)
        } else {
            None
        };
    }

    /// When the task should end if every node pulls at its learned speed,
    /// one image after another, `batchSize` nodes at a time in start order.
    /// Nodes without history count at this task's measured mean (or the
    /// middle of the others' history); `None` while nothing is known.
    fn expected_end(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let fallback = match self.measured {
            (sum, n) if n > 0 => sum / f64::from(n),
            _ => self.history_median?,
        };
        let mut running = Vec::new();
        let mut waiting = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.is_done() {
                continue;
            }
            let work =
                self.seconds_per_pull[i].unwrap_or(fallback) * node.pending_images().len() as f64;
            if node.is_started() {
                let elapsed = self.attempt_started.get(&i).map_or(0.0, |s| {
                    (now - *s).num_milliseconds().max(0) as f64 / 1000.0
                });
                running.push((work - elapsed).max(0.0));
            } else {
                waiting.push(work);
            }
        }
        let secs = makespan(&running, &waiting, self.spec.batch_size as usize);
        Some(now + chrono::Duration::milliseconds((secs * 1000.0) as i64))
    }

    /// Ends the task with `status`; returns the node indices whose Jobs may still exist.
    pub fn finish(
        &mut self,
        status: TaskStatus,
        reason: Option<(&str, String)>,
        now: DateTime<Utc>,
    ) {
        if let Some((reason, message)) = reason {
            self.view.reason = Some(reason.to_owned());
            self.view.error_message = Some(message);
        }
        self.view.status = status;
        self.view.finished_at = Some(now);
        self.refresh_view(now);
        self.dirty = true;
    }
}

/// The pins a run starts with: an image given by digest is pinned to it;
/// a tag to the digest the stored view shows, else (the view was not written
/// before a restart) to one a node record holds.
fn initial_pins(view: &Task, spec: &TaskSpec, nodes: &[NodePull]) -> Vec<Option<String>> {
    spec.images
        .iter()
        .enumerate()
        .map(|(ix, image)| {
            if !spec.pin_digests {
                return None;
            }
            image
                .digest()
                .map(str::to_owned)
                .or_else(|| {
                    view.image_statuses
                        .iter()
                        .find(|s| s.image == image.as_str())
                        .and_then(|s| s.pinned_digest.clone())
                })
                .or_else(|| {
                    nodes.iter().find_map(|n| match n.images.get(ix) {
                        Some(ImagePull::Pulled { digest: Some(d) }) => Some(d.clone()),
                        _ => None,
                    })
                })
        })
        .collect()
}

/// `(reason, message)` if a container is stuck on a pull failure.
fn pull_failure(c: &crate::cluster::ContainerObservation) -> Option<(String, String)> {
    match &c.state {
        ContainerState::Waiting { reason, message }
            if PULL_FAILURE_REASONS.contains(&reason.as_str()) =>
        {
            Some((reason.clone(), message.clone()))
        }
        _ => None,
    }
}

/// Version of the node record layout this build writes and reads.
pub const NODE_RECORD_VERSION: u64 = 1;
/// Field of a node record holding its layout version.
const VERSION_FIELD: &str = "recordVersion";

/// The durable record of a node, tagged with its layout version.
pub fn record_of(node: &NodePull) -> NodeRecord {
    let mut body = serde_json::to_value(node).unwrap_or(serde_json::Value::Null);
    if let Some(fields) = body.as_object_mut() {
        fields.insert(VERSION_FIELD.to_owned(), NODE_RECORD_VERSION.into());
    }
    NodeRecord {
        node: node.node.clone(),
        body,
    }
}

/// A node back from its record; why not, if the record is from a newer
/// build or does not decode (records without a version are version 1).
pub fn node_of(record: &NodeRecord) -> Result<NodePull, String> {
    let version = record
        .body
        .get(VERSION_FIELD)
        .map_or(Some(1), serde_json::Value::as_u64);
    match version {
        Some(v) if v <= NODE_RECORD_VERSION => {}
        _ => {
            return Err(format!(
                "node record {} has layout version {}, newer than this build reads ({NODE_RECORD_VERSION})",
                record.node,
                record.body.get(VERSION_FIELD).unwrap_or(&serde_json::Value::Null)
            ))
        }
    }
    let node: NodePull = serde_json::from_value(record.body.clone())
        .map_err(|e| format!("node record {} does not decode: {e}", record.node))?;
    if node.node != record.node {
        return Err(format!(
            "node record {} names node {}",
            record.node, node.node
        ));
    }
    Ok(node)
}

/// Projected end from the throughput observed since the task started.
fn estimate(
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    done: u32,
    total: u32,
) -> Option<DateTime<Utc>> {
    let started = started?;
    if done == 0 || total == 0 {
        return None;
    }
    let elapsed = (now - started).num_milliseconds().max(1) as f64;
    let remaining = f64::from(total - done.min(total));
    let per_node = elapsed / f64::from(done);
    Some(now + chrono::Duration::milliseconds((per_node * remaining) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_extrapolates_throughput() {
        let start: DateTime<Utc> = "2024-01-16T10:00:00Z".parse().unwrap();
        let now = start + chrono::Duration::seconds(10);
        let eta = estimate(Some(start), now, 5, 10).unwrap();
        assert_eq!(eta, now + chrono::Duration::seconds(10));
        assert_eq!(estimate(Some(start), now, 0, 10), None);
        assert_eq!(estimate(None, now, 5, 10), None);
    }

    #[test]
    fn pins_come_back_after_a_restart_from_the_view_or_the_node_records() {
        let now: DateTime<Utc> = "2024-01-16T10:00:00Z".parse().unwrap();
        let spec = TaskSpec::from_request(prewarm_api::CreateTaskRequest {
            images: vec![
                "nginx:1".into(),
                "redis:7".into(),
                format!("app@sha256:{}", "c".repeat(64)),
            ],
            pin_digests: Some(true),
            ..Default::default()
        })
        .unwrap();
        let mut view = spec.new_task(TaskId("task-20240116-aaaaaa".into()), "t", now);
        view.image_statuses[0].pinned_digest = Some("sha256:aa".into());
        let mut pulled = NodePull::new("n0".into(), vec![false, false, false]);
        pulled.start(now);
        pulled.observe(
            &[
                (0, ImageReport::Pulled(Some("sha256:other".into()))),
                (1, ImageReport::Pulled(Some("sha256:bb".into()))),
            ],
            &spec,
            now,
        );
        let fresh = NodePull::new("n1".into(), vec![false, false, false]);
        let run = TaskRun::new(view, spec.clone(), vec![pulled, fresh]);
        // The view's pin wins; a tag without one takes a node record's digest.
        assert_eq!(run.pull_reference(0), "docker.io/library/nginx@sha256:aa");
        assert_eq!(run.pull_reference(1), "docker.io/library/redis@sha256:bb");
        assert_eq!(run.pull_reference(2), spec.images[2].as_str());
        assert_eq!(run.window(), spec.batch_size as usize);

        let mut unpinned = spec.clone();
        unpinned.pin_digests = false;
        let view = unpinned.new_task(TaskId("task-20240116-bbbbbb".into()), "t", now);
        let run = TaskRun::new(
            view,
            unpinned,
            vec![NodePull::new("n0".into(), vec![false; 3])],
        );
        assert_eq!(run.pull_reference(0), "nginx:1");
        assert_eq!(run.pins, [None, None, None]);
    }
}
