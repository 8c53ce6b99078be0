//! What the engine writes: node records first, then the Jobs they free are
//! deleted; task views coalesced to at most one write per `VIEW_FLUSH_EVERY`;
//! ended tasks with their webhook owed.

use std::time::Duration;

use prewarm_api::{Task, TaskStatus};
use tokio::time::Instant;

use super::task_run::{record_of, TaskRun};
use super::Engine;
use crate::domain::node_pull::{NodePull, TIMEOUT_REASON};
use crate::metrics::{Metrics, StatusLabels};
use crate::store::{StoreResult, TaskStore};

/// Node records per store write when every node is written at once (a
/// task's start and end): each batch is one transaction, and only one
/// batch is encoded at a time.
const NODE_RECORD_BATCH: usize = 1000;

/// Writes the records of all of a task's `nodes`, in batches.
pub(super) async fn put_all_records(
    store: &dyn TaskStore,
    task_id: &str,
    nodes: &[NodePull],
) -> StoreResult<()> {
    for batch in nodes.chunks(NODE_RECORD_BATCH) {
        let records: Vec<_> = batch.iter().map(record_of).collect();
        store.put_nodes(task_id, &records).await?;
    }
    Ok(())
}

/// Least time between two progress writes of one task.
const VIEW_FLUSH_EVERY: Duration = Duration::from_millis(500);

impl Engine {
    /// Ends tasks whose every node is done.
    pub(super) async fn complete_finished(&mut self) {
        let now = self.clock.now();
        let done: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, r)| r.all_done())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            let Some(mut run) = self.runs.remove(&id) else {
                continue;
            };
            run.refresh_view(now);
            let p = &run.view.progress;
            let (status, reason) =
                if run.view.reason.as_deref() == Some(TIMEOUT_REASON) || p.failed_nodes > 0 {
                    (TaskStatus::Failed, None)
                } else if p.completed_nodes == 0 && p.skipped_nodes == p.total_nodes {
                    (
                        TaskStatus::Failed,
                        Some((
                            "NoNodesLeft",
                            "every selected node went away or was skipped".to_owned(),
                        )),
                    )
                } else {
                    (TaskStatus::Completed, None)
                };
            run.finish(status, reason, now);
            self.end_run(run, TaskStatus::Running).await;
        }
    }

    /// Writes a finished run (records first), then deletes all of its Jobs.
    pub(super) async fn end_run(&mut self, mut run: TaskRun, expected: TaskStatus) {
        self.end_pacing(&mut run, Instant::now());
        // Attempts that ended in the same step as the task are not flushed with the runs.
        count_ended_attempts(&self.metrics, &mut run);
        self.learn(std::mem::take(&mut run.speed_samples));
        run.unrecorded.clear();
        owe_webhook(&mut run.view);
        if let Err(e) = put_all_records(self.store.as_ref(), &run.view.task_id, &run.nodes).await {
            tracing::error!(task = %run.view.task_id, error = %e, "could not store node outcomes");
        }
        match self.store.update_if(&run.view, &[expected]).await {
            Ok(true) => {
                self.progress.publish(&run.view);
                self.webhooks.notify(&run.view);
            }
            Ok(false) => {
                tracing::info!(task = %run.view.task_id, "task changed meanwhile; keeping the stored status")
            }
            Err(e) => {
                tracing::error!(task = %run.view.task_id, error = %e, "could not store task end")
            }
        }
        self.metrics
            .tasks_total
            .get_or_create(&StatusLabels {
                status: run.view.status.to_string(),
            })
            .inc();
        if let (Some(start), Some(end)) = (run.view.started_at, run.view.finished_at) {
            self.metrics
                .task_duration
                .observe((end - start).num_milliseconds().max(0) as f64 / 1000.0);
        }
        tracing::info!(
            task = %run.view.task_id,
            status = %run.view.status,
            completed = run.view.progress.completed_nodes,
            failed = run.view.progress.failed_nodes,
            skipped = run.view.progress.skipped_nodes,
            "task ended"
        );
        self.calls.delete_task_jobs(run.view.task_id.clone());
    }

    /// Writes node records, deletes the Jobs they free, and writes changed views.
    pub(super) async fn flush(&mut self, force_views: bool) {
        let now = self.clock.now();
        let mut doomed = Vec::new();
        let mut samples = Vec::new();
        for run in self.runs.values_mut() {
            count_ended_attempts(&self.metrics, run);
            samples.append(&mut run.speed_samples);
            let records = run.take_records();
            if !records.is_empty() {
                if let Err(e) = self.store.put_nodes(&run.view.task_id, &records).await {
                    tracing::error!(task = %run.view.task_id, error = %e, "could not store node outcomes; keeping their Jobs");
                    for r in records {
                        if let Some(&i) = run.index.get(&r.node) {
                            run.unrecorded.insert(i);
                        }
                    }
                    continue;
                }
            }
            let task_id = &run.view.task_id;
            doomed.extend(
                run.doomed_jobs
                    .drain(..)
                    .map(|(job, holds_slot)| (holds_slot.then(|| task_id.clone()), job)),
            );
        }
        self.calls.delete_jobs(doomed);
        self.learn(samples);
        let mono = Instant::now();
        if !force_views && mono.duration_since(self.last_view_flush) < VIEW_FLUSH_EVERY {
            return;
        }
        self.last_view_flush = mono;
        self.write_speeds().await;
        self.update_pacing_waits(mono);
        let mut lost = Vec::new();
        for run in self.runs.values_mut().filter(|r| r.dirty) {
            run.refresh_view(now);
            match self
                .store
                .update_if(&run.view, &[TaskStatus::Running])
                .await
            {
                Ok(true) => {
                    run.dirty = false;
                    self.progress.publish(&run.view);
                }
                Ok(false) => lost.push(run.view.task_id.clone()),
                Err(e) => {
                    tracing::warn!(task = %run.view.task_id, error = %e, "progress write failed")
                }
            }
        }
        if !lost.is_empty() {
            self.store_checks.ask();
        }
    }
}

/// Moves a run's ended node attempts into the pull counters and histogram.
fn count_ended_attempts(metrics: &Metrics, run: &mut TaskRun) {
    if !run.ended.is_empty() {
        metrics.progressed();
    }
    for reason in run.failure_reasons.drain(..) {
        metrics.node_failure(&reason);
    }
    for (outcome, secs) in run.ended.drain(..) {
        metrics.node_pull(outcome);
        if secs >= 0.0 {
            metrics.observe_node_pull(secs);
        }
    }
}

/// Records, in the view that ends a task, that its webhook is owed; the
/// delivery worker (now or after a restart) settles it.
pub(super) fn owe_webhook(view: &mut Task) {
    if view.webhook_url.is_some() && view.webhook_status.is_none() {
        view.webhook_status = Some(prewarm_api::WebhookStatus::Pending);
    }
}
