//! Asking the store what changed: cancellations made through the API, tasks
//! deleted, running tasks without a run, and the pending queue. Checks run
//! on every wake and every `STORE_CHECK_EVERY`; while the store fails they
//! back off with jitter.

use std::time::Duration;

use prewarm_api::{Task, TaskStatus};
use rand::Rng;
use tokio::time::Instant;

use super::Engine;
use crate::store::StoreError;

/// How often the store is asked about cancellations and new tasks without a wake.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between store checks while the store keeps failing.
const STORE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// When the store is asked next.
pub(super) struct StoreChecks {
    /// Asked for (a wake, a lost write): check at the next pass.
    due: bool,
    /// The next check without a wake.
    next: Instant,
    /// Checks failed in a row.
    failures: u32,
}

impl StoreChecks {
    /// Due at once.
    pub(super) fn new(now: Instant) -> StoreChecks {
        StoreChecks {
            due: true,
            next: now,
            failures: 0,
        }
    }

    /// Check at the next pass.
    pub(super) fn ask(&mut self) {
        self.due = true;
    }

    /// Whether a pass at `now` should check the store.
    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.due || now >= self.next
    }

    /// A check at `now` succeeded (`ok`) or failed: sets the next one.
    pub(super) fn checked(&mut self, ok: bool, now: Instant) {
        self.due = false;
        let wait = if ok {
            self.failures = 0;
            STORE_CHECK_EVERY
        } else {
            self.failures += 1;
            let step = STORE_CHECK_EVERY
                .saturating_mul(1u32 << self.failures.min(8))
                .min(STORE_BACKOFF_MAX);
            step.mul_f64(rand::rng().random_range(0.5..=1.0))
        };
        self.next = now + wait;
    }
}

impl Engine {
    /// run and the list of pending tasks. False if the store failed.
    pub(super) async fn check_store(&mut self) -> bool {
        let now = self.clock.now();
        let mut ok = true;
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            match self.store.get(&id).await {
                Ok(Some(t)) if t.status == TaskStatus::Cancelled => {
                    if let Some(mut run) = self.runs.remove(&id) {
                        run.view.finished_at = t.finished_at;
                        run.finish(TaskStatus::Cancelled, None, t.finished_at.unwrap_or(now));
                        self.end_run(run, TaskStatus::Cancelled).await;
                    }
                }
                Ok(None) => {
                    if let Some(mut run) = self.runs.remove(&id) {
                        self.end_pacing(&mut run, tokio::time::Instant::now());
                    }
                    self.calls.delete_task_jobs(id);
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "store check failed");
                    ok = false;
                }
            }
        }
        if !self.stopping && self.take_up_running().await.is_err() {
            ok = false;
        }
        match self.store.list_with_status(&[TaskStatus::Pending]).await {
            Ok(mut pending) => {
                pending.sort_by(|a, b| {
                    b.priority
                        .cmp(&a.priority)
                        .then(a.created_at.cmp(&b.created_at))
                        .then(a.task_id.cmp(&b.task_id))
                });
                let before = std::mem::replace(&mut self.pending, pending);
                self.publish_ended_without_run(before).await;
            }
            Err(StoreError::Corrupt { id, message }) => {
                self.end_unrecoverable(&id, None, &message).await;
                ok = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list pending tasks");
                ok = false;
            }
        }
        ok
    }

    /// Tasks that left `pending` without being started were cancelled
    /// through the store (by the scheduler's timeout, say); no run publishes
    /// their end, so live readers learn it here.
    async fn publish_ended_without_run(&self, was_pending: Vec<Task>) {
        for task in was_pending {
            let id = &task.task_id;
            if self.runs.contains_key(id) || self.pending.iter().any(|p| p.task_id == *id) {
                continue;
            }
            if let Ok(Some(now)) = self.store.get(id).await {
                if now.status.is_terminal() {
                    self.progress.publish(&now);
                }
            }
        }
    }
}
