//! Durable scheduled tasks and their executions: the `ScheduleStore` trait.
//!
//! Besides its API view, a stored schedule carries the scheduler's durable
//! state: the *fire cursor* (the last fire time handled, or the instant
//! from which fires count) and a queued run. Both only change through
//! [`ScheduleStore::record_fire`], a compare-and-set that also records the
//! execution in the same atomic step, so two schedulers can never both handle
//! one fire time and a crash can never leave a handled fire unrecorded.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prewarm_api::{Execution, ExecutionStatus, ScheduledTask};

use super::{Retention, StoreResult};

/// A scheduled task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSchedule {
    /// The API view (`nextExecutionAt` is computed when read, not stored).
    pub task: ScheduledTask,
    /// The last fire time handled, or the instant from which fires count.
    pub fire_cursor: DateTime<Utc>,
    /// A run waiting for the running one to end (overlap policy `queue`):
    /// the latest fire time it stands for.
    pub queued_fire: Option<DateTime<Utc>>,
}

/// An optional instant, compared and set as a whole.
pub type MaybeAt = Option<DateTime<Utc>>;

/// One atomic scheduler step on a schedule: optional compare-and-sets of
/// the cursor and the queued run, and an execution to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fire {
    /// `(expected, new)` fire cursor.
    pub cursor: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// `(expected, new)` queued run.
    pub queued: Option<(MaybeAt, MaybeAt)>,
    /// Recorded with the next execution id of the schedule (its `id` is
    /// ignored). A `running` one moves the schedule's `lastExecutionAt` to
    /// its `startedAt`.
    pub execution: Option<Execution>,
}

/// Outcome of [`ScheduleStore::record_fire`].
#[derive(Debug, Clone, PartialEq)]
pub enum FireOutcome {
    /// No schedule with that id.
    NotFound,
    /// The cursor or the queued run was not what the caller expected; nothing changed.
    Conflict,
    /// Done; the recorded execution with its id, if one was given.
    Recorded(Option<Execution>),
}

/// Where scheduled tasks and executions live. Every method is one atomic step.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Stores a new schedule. `Duplicate` if the id exists.
    async fn insert_schedule(&self, schedule: &StoredSchedule) -> StoreResult<()>;

    /// One schedule by id.
    async fn get_schedule(&self, id: &str) -> StoreResult<Option<StoredSchedule>>;

    /// A page of schedules, newest (`createdAt`, then id) first, and the total.
    async fn list_schedules(
        &self,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<StoredSchedule>, u64)>;

    /// Every schedule (for the scheduler).
    async fn all_schedules(&self) -> StoreResult<Vec<StoredSchedule>>;

    /// Replaces the configuration of `task.id`, keeping the stored
    /// `lastExecutionAt`; with `reset = Some(at)` also sets the fire cursor to
    /// `at` and drops a queued run (enable, disable, new cron or zone).
    /// Returns whether the schedule exists.
    async fn update_schedule(
        &self,
        task: &ScheduledTask,
        reset: Option<DateTime<Utc>>,
    ) -> StoreResult<bool>;

    /// Deletes a schedule and its executions. Returns whether it existed.
    async fn delete_schedule(&self, id: &str) -> StoreResult<bool>;

    /// Applies `fire` to schedule `id` if its compare-and-sets hold.
    async fn record_fire(&self, id: &str, fire: &Fire) -> StoreResult<FireOutcome>;

    /// Replaces an execution if it is still `running`; returns whether it wrote.
    async fn finish_execution(&self, execution: &Execution) -> StoreResult<bool>;

    /// A page of a schedule's executions, newest (highest id) first, and the total.
    async fn list_executions(
        &self,
        schedule_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<Execution>, u64)>;

    /// One execution.
    async fn get_execution(&self, schedule_id: &str, id: u64) -> StoreResult<Option<Execution>>;

    /// Every execution still `running`, across schedules.
    async fn running_executions(&self) -> StoreResult<Vec<Execution>>;

    /// Deletes at most `batch` ended executions outside `retention`: ended
    /// ([`ended_at`]) before its cutoff, or beyond the newest `max_tasks`
    /// executions of their schedule. Running executions are never deleted.
    /// Returns how many went.
    async fn trim_executions(&self, retention: &Retention, batch: u32) -> StoreResult<u32>;
}

/// When an execution ended, for the retention trim: its `finishedAt`, or
/// its fire time when it was skipped (a skip ends as it is recorded);
/// `None` while it runs.
pub(crate) fn ended_at(execution: &Execution) -> Option<DateTime<Utc>> {
    match execution.status {
        ExecutionStatus::Running => None,
        _ => Some(execution.finished_at.unwrap_or(execution.triggered_at)),
    }
}

/// Whether `execution` may replace a stored one (only running ones change).
pub(crate) fn may_finish(stored: &Execution) -> bool {
    stored.status == ExecutionStatus::Running
}
