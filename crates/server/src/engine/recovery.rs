//! Taking tasks up again: after a start, a store outage or a lost write,
//! every stored running task without a run gets one, adopting its live Jobs;
//! a task whose stored form is bad ends `Unrecoverable` and its Jobs go.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use prewarm_api::{Task, TaskStatus};
use tokio::time::Instant;

use super::task_run::{node_of, TaskRun};
use super::writes::owe_webhook;
use super::Engine;
use crate::cluster::JobObservation;
use crate::domain::node_pull::NodePull;
use crate::domain::task::TaskSpec;
use crate::metrics::StatusLabels;
use crate::store::StoreError;

/// Reason of a task the engine cannot take up again (its stored form is bad).
pub const UNRECOVERABLE_REASON: &str = "Unrecoverable";

impl Engine {
    /// Takes up running tasks after a (re)start from the store and the
    /// cluster. Whatever fails here is tried again at every store check.
    pub(super) async fn recover(&mut self) {
        self.load_speeds().await;
        if self.take_up_running().await.is_ok() {
            self.resync();
        }
    }

    /// Takes up every stored running task that has no run in memory (after a
    /// restart, a store outage or a lost write), adopting its live Jobs, and
    /// deletes Jobs that belong to no running task.
    pub(super) async fn take_up_running(&mut self) -> Result<(), ()> {
        let running = match self.store.list_with_status(&[TaskStatus::Running]).await {
            Ok(t) => t,
            Err(StoreError::Corrupt { id, message }) => {
                self.end_unrecoverable(&id, None, &message).await;
                return Err(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not load running tasks; will retry");
                return Err(());
            }
        };
        let mut jobs_by_task: HashMap<String, Vec<JobObservation>> = HashMap::new();
        for job in self.cluster.jobs() {
            if !self.runs.contains_key(&job.task_id) {
                jobs_by_task
                    .entry(job.task_id.clone())
                    .or_default()
                    .push(job);
            }
        }
        let mut result = Ok(());
        for view in running {
            if self.runs.contains_key(&view.task_id) {
                continue;
            }
            let jobs = jobs_by_task.remove(&view.task_id).unwrap_or_default();
            if self.take_up(view, jobs).await.is_err() {
                result = Err(());
            }
        }
        // Jobs of tasks that are not running: a pending task's start was cut
        // short after its first Jobs (its next start adopts them); an ended
        // task's cleanup was (crash between "ended" and cleanup).
        let mut prestarted = HashMap::new();
        for (task_id, jobs) in jobs_by_task {
            match self.store.get(&task_id).await {
                Ok(Some(t)) if t.status == TaskStatus::Pending => {
                    prestarted.insert(task_id, jobs);
                }
                Ok(Some(t)) if !t.status.is_terminal() => {}
                Ok(_) => self.calls.delete_task_jobs(task_id),
                Err(e) => tracing::warn!(task = %task_id, error = %e, "orphan check failed"),
            }
        }
        self.prestarted = prestarted;
        result
    }

    /// Takes up one running task from its stored records and its live Jobs.
    /// `Err` if the store failed (try again later); a task whose stored form
    /// is bad ends `Unrecoverable` instead.
    async fn take_up(&mut self, view: Task, jobs: Vec<JobObservation>) -> Result<(), ()> {
        let now = self.clock.now();
        let Some(spec) = self.spec_or_unrecoverable(&view).await else {
            return Ok(());
        };
        let records = match self.store.nodes(&view.task_id).await {
            Ok(r) => r,
            Err(StoreError::Corrupt { message, .. }) => {
                self.end_unrecoverable(&view.task_id, Some(view.clone()), &message)
                    .await;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(task = %view.task_id, error = %e, "could not load node records; will retry");
                return Err(());
            }
        };
        let nodes: Result<Vec<NodePull>, String> = records.iter().map(node_of).collect();
        let mut nodes = match nodes {
            Ok(n) => n,
            Err(message) => {
                self.end_unrecoverable(&view.task_id, Some(view.clone()), &message)
                    .await;
                return Ok(());
            }
        };
        // The start order fixed when the task started (records before ranks: by name).
        nodes.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.node.cmp(&b.node)));
        let mut run = TaskRun::new(view.clone(), spec, nodes);
        run.know_speeds(&self.speeds, now);
        run.anchor_start(now, Instant::now());
        run.in_flight = 0;
        let mut by_node: HashMap<usize, Vec<JobObservation>> = HashMap::new();
        let mut stale = Vec::new();
        for job in jobs {
            match run.index.get(&job.node) {
                Some(&i) => by_node.entry(i).or_default().push(job),
                None => stale.push(job.name),
            }
        }
        for i in 0..run.nodes.len() {
            let node_jobs = by_node.remove(&i).unwrap_or_default();
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
                run.confirmed.insert(i, Instant::now());
                run.unmeasured(i);
            } else if node.is_started() {
                // Recorded as started but its Job never made it: start it again
                // under the same attempt number.
                node.unstart(now);
            }
        }
        tracing::info!(task = %view.task_id, in_flight = run.in_flight, "resumed task");
        self.calls
            .delete_jobs(stale.into_iter().map(|j| (None, j)).collect());
        self.runs.insert(view.task_id.clone(), run);
        Ok(())
    }

    /// The validated spec of a stored task; `None` if it no longer validates,
    /// and then the task has ended `Unrecoverable`.
    pub(super) async fn spec_or_unrecoverable(&mut self, view: &Task) -> Option<TaskSpec> {
        match TaskSpec::from_view(view) {
            Ok(spec) => Some(spec),
            Err(e) => {
                let message = format!("the stored task no longer validates: {e}");
                self.end_unrecoverable(&view.task_id, Some(view.clone()), &message)
                    .await;
                None
            }
        }
    }

    /// Ends a running or pending task whose stored form the engine cannot
    /// use: `failed` with reason `Unrecoverable` and `message`; its Jobs go.
    /// `view` is the stored view if it decoded at all.
    pub(super) async fn end_unrecoverable(&mut self, id: &str, view: Option<Task>, message: &str) {
        let now = self.clock.now();
        tracing::error!(task = %id, error = %message, "task cannot be taken up; ending it");
        let mut task = match view {
            Some(v) => v,
            None => unreadable_view(id, now),
        };
        task.status = TaskStatus::Failed;
        task.reason = Some(UNRECOVERABLE_REASON.to_owned());
        task.error_message = Some(message.to_owned());
        task.finished_at = Some(now);
        task.estimated_completion = None;
        owe_webhook(&mut task);
        match self
            .store
            .update_if(&task, &[TaskStatus::Running, TaskStatus::Pending])
            .await
        {
            Ok(true) => {
                self.progress.publish(&task);
                self.webhooks.notify(&task);
                self.metrics
                    .tasks_total
                    .get_or_create(&StatusLabels {
                        status: "failed".into(),
                    })
                    .inc();
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(task = %id, error = %e, "could not end the task; will retry"),
        }
        self.calls.delete_task_jobs(id.to_owned());
    }
}

/// A view standing in for a stored task that does not decode.
fn unreadable_view(id: &str, now: DateTime<Utc>) -> Task {
    let spec = TaskSpec::from_request(prewarm_api::CreateTaskRequest {
        images: vec!["unknown".to_owned()],
        ..Default::default()
    })
    .expect("a one-image request is valid");
    let mut task = spec.new_task(crate::domain::task::TaskId(id.to_owned()), "unknown", now);
    task.images.clear();
    task.image_statuses.clear();
    task
}
