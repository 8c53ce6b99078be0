//! Bounded history: the leader deletes ended tasks (with their node records)
//! that ended longer ago than `--retention`, or that fall beyond the newest
//! `--max-tasks`, in small batches so the store never stalls other callers.
//! Running and pending tasks are never deleted. Executions of scheduled
//! tasks are trimmed the same way: those that ended longer ago than
//! `--retention`, or that fall beyond the newest `--max-tasks` of their
//! schedule; running ones stay.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{Retention, ScheduleStore, StoreResult, TaskStore};

/// Default `--retention`: 30 days after a task ended.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default `--max-tasks`.
pub const DEFAULT_MAX_TASKS: u64 = 10_000;
/// Tasks deleted per store call.
pub const TRIM_BATCH: u32 = 100;
/// Time between trim passes.
pub const TRIM_EVERY: Duration = Duration::from_secs(60);
/// Pause between two batches of one pass, so API calls interleave.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// How much ended history the service keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Ended tasks older than this (counted from `finishedAt`) are deleted.
    pub retention: Duration,
    /// At most this many tasks are kept; beyond it the oldest ended ones go.
    pub max_tasks: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            retention: DEFAULT_RETENTION,
            max_tasks: DEFAULT_MAX_TASKS,
        }
    }
}

/// Deletes ended history outside `limits` until `stop`: a pass at once, then
/// one every [`TRIM_EVERY`]; each pass deletes batches of [`TRIM_BATCH`]
/// tasks, then of executions, until nothing is left to delete. A failed
/// store call ends that part of the pass (the next one tries again).
pub async fn trim_history(
    store: Arc<dyn TaskStore>,
    schedules: Arc<dyn ScheduleStore>,
    clock: Arc<dyn Clock>,
    limits: HistoryLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let retention = Retention {
            ended_before: clock.now()
                - chrono::Duration::from_std(limits.retention).unwrap_or(chrono::Duration::MAX),
            max_tasks: limits.max_tasks,
        };
        let tasks = trim_batches(&stop, || store.trim(&retention, TRIM_BATCH)).await;
        metrics.tasks_trimmed.inc_by(tasks);
        if tasks > 0 {
            tracing::info!(
                deleted = tasks,
                "ended tasks outside the retention limits deleted"
            );
        }
        let executions =
            trim_batches(&stop, || schedules.trim_executions(&retention, TRIM_BATCH)).await;
        metrics.executions_trimmed.inc_by(executions);
        if executions > 0 {
            tracing::info!(
                deleted = executions,
                "ended executions outside the retention limits deleted"
            );
        }
    }
}

/// Calls `trim` (one batch of [`TRIM_BATCH`]) until a batch comes back short,
/// the store fails or `stop`; returns how many went.
async fn trim_batches<F, Fut>(stop: &CancellationToken, mut trim: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<u32>>,
{
    let mut deleted = 0u64;
    while !stop.is_cancelled() {
        match trim().await {
            Ok(n) => {
                deleted += u64::from(n);
                if n < TRIM_BATCH {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "history trim failed; trying again later");
                break;
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(BETWEEN_BATCHES) => {}
        }
    }
    deleted
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use prewarm_api::{Execution, ExecutionStatus, TaskStatus};

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::contract::minimal_task;
    use crate::store::schedule_contract::{self, sample_schedule};
    use crate::store::{Fire, MemoryStore};

    #[tokio::test(start_paused = true)]
    async fn trims_in_batches_until_within_the_limits_then_again_each_period() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let store = Arc::new(MemoryStore::new());
        for i in 0..450i64 {
            let created = now - chrono::Duration::minutes(450 - i);
            let id = format!("task-20260101-h{i:05}");
            let mut task = minimal_task(&id, TaskStatus::Completed, created);
            task.finished_at = Some(created + chrono::Duration::seconds(30));
            store.insert(&task).await.unwrap();
        }
        let running = minimal_task(
            "task-20260101-running",
            TaskStatus::Running,
            now - chrono::Duration::days(90),
        );
        store.insert(&running).await.unwrap();
        // A schedule with 350 skipped runs, the newest a minute ago.
        let schedule = sample_schedule("scheduled-task-20260101-h00000", now);
        store.insert_schedule(&schedule).await.unwrap();
        for i in 0..350i64 {
            let fired = now - chrono::Duration::minutes(350 - i);
            let execution = Execution {
                status: ExecutionStatus::Skipped,
                ..schedule_contract::running(&schedule.task.id, "", fired)
            };
            let fire = Fire {
                execution: Some(execution),
                ..Fire::default()
            };
            store.record_fire(&schedule.task.id, &fire).await.unwrap();
        }
        let executions = |store: &Arc<MemoryStore>| {
            let (store, id) = (store.clone(), schedule.task.id.clone());
            async move { store.list_executions(&id, 1, 0).await.unwrap().1 }
        };
        let clock = Arc::new(ManualClock::new(now));
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let trimmer = tokio::spawn(trim_history(
            store.clone(),
            store.clone(),
            clock.clone(),
            HistoryLimits {
                retention: Duration::from_secs(30 * 24 * 3600),
                max_tasks: 300,
            },
            metrics.clone(),
            stop.clone(),
        ));
        let total = |store: &Arc<MemoryStore>| {
            let store = store.clone();
            async move { store.list(None, 1, 0).await.unwrap().1 }
        };
        // The first pass runs at once: the 150 ended tasks beyond the newest
        // 300 go, in two batches; the older running task stays.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(total(&store).await, 301);
        assert_eq!(metrics.tasks_trimmed.get(), 150);
        assert!(store.get(&running.task_id).await.unwrap().is_some());
        assert!(store.get("task-20260101-h00150").await.unwrap().is_some());
        // The schedule keeps its newest 300 runs.
        assert_eq!(executions(&store).await, 300);
        assert_eq!(metrics.executions_trimmed.get(), 50);
        // Thirty days on, every ended task and run is past the retention.
        clock.advance(Duration::from_secs(30 * 24 * 3600 + 1));
        tokio::time::sleep(TRIM_EVERY).await;
        assert_eq!(total(&store).await, 1);
        assert_eq!(executions(&store).await, 0);
        assert!(store.get(&running.task_id).await.unwrap().is_some());
        stop.cancel();
        trimmer.await.unwrap();
    }
}
