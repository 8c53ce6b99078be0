//! One running task in the engine's memory: its spec, its nodes, and the
//! bookkeeping that decides what to write and which Jobs to delete.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};

use crate::cluster::pull_job::{container_index, job_name};
use crate::cluster::{ContainerState, PodObservation};
use crate::domain::node_pull::{
    digest_of, summarize, ImageReport, NodePhase, NodePull, PULL_FAILURE_REASONS,
};
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
    /// Jobs to delete once the records above are written.
    pub doomed_jobs: Vec<String>,
    /// The view changed since the last write.
    pub dirty: bool,
    /// When each node's current attempt started (for the pull duration metric).
    pub attempt_started: HashMap<usize, DateTime<Utc>>,
    /// Node attempts ended since the metrics were last updated: (outcome, seconds).
    pub ended: Vec<(&'static str, f64)>,
}

impl TaskRun {
    /// A run over `nodes` (already in the order they will be started).
    pub fn new(view: Task, spec: TaskSpec, nodes: Vec<NodePull>) -> TaskRun {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.node.clone(), i))
            .collect();
        let in_flight = nodes.iter().filter(|n| n.is_started()).count();
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
        let outcome = match self.nodes[i].phase {
            NodePhase::Completed { at } => {
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
        }
        self.attempt_started.remove(&i);
        let job = self.job_of(i);
        self.doomed_jobs.push(job);
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
        if self.nodes[i].observe(&reports, &self.spec, now) {
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
        self.view.skipped_node_details = s.skipped;
        self.view.image_statuses = s.images;
        self.view.estimated_completion = if self.view.status == TaskStatus::Running {
            estimate(
                self.view.started_at,
                now,
                s.done_nodes,
                self.nodes.len() as u32,
            )
        } else {
            None
        };
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

/// The durable record of a node.
pub fn record_of(node: &NodePull) -> NodeRecord {
    NodeRecord {
        node: node.node.clone(),
        body: serde_json::to_value(node).unwrap_or(serde_json::Value::Null),
    }
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

/// Whether a node phase lets a new attempt start at `now`.
pub fn ready_to_start(phase: &NodePhase, now: DateTime<Utc>) -> bool {
    match phase {
        NodePhase::Waiting => true,
        NodePhase::RetryWait { until } => *until <= now,
        _ => false,
    }
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
}
