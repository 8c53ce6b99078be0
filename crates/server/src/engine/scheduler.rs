//! The cron scheduler: fires scheduled tasks on time, exactly once, and
//! accounts for every run in the executions history.
//!
//! Each step reads the schedules and the running executions from the store
//! (level-triggered, so a restart reaches the same decisions):
//! 1. Running executions are settled from their task in the task store:
//!    completed → `success`, failed or cancelled by a user → `failed`; a task
//!    past the schedule's `timeoutSeconds` is cancelled through the store
//!    (like `DELETE /api/v1/tasks/{id}`), the engine woken, and the
//!    execution ends `timeout`.
//! 2. For each enabled schedule, fires due since its *fire cursor* (the last
//!    fire time handled) are handled: the cursor moves to the fire time and
//!    the execution is recorded in one compare-and-set
//!    ([`ScheduleStore::record_fire`]), and only then is the task created.
//!    A crash between the two leaves a `running` execution without a task,
//!    which step 1 ends `failed`; the fire is never run twice.
//!
//! A fire handled within [`ON_TIME_GRACE`] of its time is on time; older
//! ones were missed while the service was down and follow
//! `startingDeadlineSeconds` (0: one `skipped` execution; > 0: one late run
//! if still within the deadline, several missed fires coalesced).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prewarm_api::{Execution, ExecutionStatus, ExecutionTrigger, OverlapPolicy, Task, TaskStatus};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::submit::submit_task_with_id;
use super::EngineHandle;
use crate::clock::Clock;
use crate::cluster::workload::resolve_spec;
use crate::cluster::Cluster;
use crate::domain::schedule::{cron_of, task_spec};
use crate::domain::task::{TaskId, TaskSpec};
use crate::metrics::{Metrics, StatusLabels};
use crate::store::{
    CancelOutcome, Fire, FireOutcome, ScheduleStore, StoreError, StoreResult, StoredSchedule,
    TaskStore,
};

/// How late a fire may be handled and still count as on time.
pub const ON_TIME_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(10);
/// How long a recorded run may wait for its task to appear in the store
/// before it is taken for one whose start was cut off by a crash.
pub const ORPHAN_GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(30);
/// Longest sleep between steps (running executions are settled this often).
const MAX_NAP: Duration = Duration::from_secs(1);
/// `errorMessage` of a fire missed while the service was down.
pub const MISSED_MESSAGE: &str = "missed while the service was down";

/// A cheap handle for the API: tells the scheduler a schedule changed.
#[derive(Clone, Debug)]
pub struct SchedulerHandle {
    notify: Arc<Notify>,
}

impl SchedulerHandle {
    /// Makes the scheduler look at the schedules now.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Whether waking `self` wakes the scheduler `other` belongs to.
    #[cfg(test)]
    pub(crate) fn wakes_the_same(&self, other: &SchedulerHandle) -> bool {
        Arc::ptr_eq(&self.notify, &other.notify)
    }
}

/// The cron scheduler loop.
pub struct Scheduler {
    schedules: Arc<dyn ScheduleStore>,
    /// Reads the workload of a `fromWorkload` task config at each run.
    cluster: Option<Arc<dyn Cluster>>,
    tasks: Arc<dyn TaskStore>,
    engine: EngineHandle,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    notify: Arc<Notify>,
}

impl Scheduler {
    /// A scheduler over these parts; nothing runs until `run` (or `step`).
    pub fn new(
        schedules: Arc<dyn ScheduleStore>,
        tasks: Arc<dyn TaskStore>,
        engine: EngineHandle,
        clock: Arc<dyn Clock>,
    ) -> Scheduler {
        Scheduler {
            schedules,
            cluster: None,
            tasks,
            engine,
            clock,
            metrics: Arc::new(Metrics::new()),
            notify: Arc::new(Notify::new()),
        }
    }

    /// Counts executions into `metrics` (`prewarm_scheduled_executions_total`).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Scheduler {
        self.metrics = metrics;
        self
    }

    /// Reads the workloads of `fromWorkload` task configs through `cluster`
    /// (without one, such runs fail saying so).
    pub fn with_cluster(mut self, cluster: Arc<dyn Cluster>) -> Scheduler {
        self.cluster = Some(cluster);
        self
    }

    /// Listens to `handle` (the one the API wakes, shared across leadership
    /// terms) instead of its own.
    pub fn with_handle(mut self, handle: &SchedulerHandle) -> Scheduler {
        self.notify = handle.notify.clone();
        self
    }

    /// A handle for the HTTP layer.
    pub fn handle(&self) -> SchedulerHandle {
        SchedulerHandle {
            notify: self.notify.clone(),
        }
    }

    /// Steps until `shutdown` is cancelled, sleeping until the next fire, a
    /// wake from the API, or at most [`MAX_NAP`].
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        loop {
            let next = self.step().await;
            let nap = next
                .and_then(|at| (at - self.clock.now()).to_std().ok())
                .map_or(MAX_NAP, |d| d.min(MAX_NAP));
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    /// One pass: settles running executions, handles due fires. Returns the
    /// next fire time of any enabled schedule. Store failures are logged and
    /// retried at the next step.
    pub async fn step(&self) -> Option<DateTime<Utc>> {
        match self.try_step().await {
            Ok(next) => next,
            Err(err) => {
                tracing::warn!(error = %err, "scheduler step failed; retrying");
                None
            }
        }
    }

    async fn try_step(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let now = self.clock.now();
        let schedules: HashMap<String, StoredSchedule> = self
            .schedules
            .all_schedules()
            .await?
            .into_iter()
            .map(|s| (s.task.id.clone(), s))
            .collect();
        let mut active: HashMap<String, Vec<String>> = HashMap::new();
        for execution in self.schedules.running_executions().await? {
            let timeout = schedules
                .get(&execution.scheduled_task_id)
                .map_or(0, |s| s.task.timeout_seconds);
            if self.settle(&execution, timeout, now).await? {
                active
                    .entry(execution.scheduled_task_id.clone())
                    .or_default()
                    .push(execution.task_id.clone());
            }
        }
        let mut next = None;
        for schedule in schedules.values().filter(|s| s.task.enabled) {
            let running = active.remove(&schedule.task.id).unwrap_or_default();
            let at = self.handle_schedule(schedule, running, now).await?;
            next = match (next, at) {
                (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                (a, b) => a.or(b),
            };
        }
        Ok(next)
    }

    /// Ends `execution` if its task has ended (or must be timed out); returns
    /// whether it is still running.
    async fn settle(
        &self,
        execution: &Execution,
        timeout_seconds: u64,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let started = execution.started_at.unwrap_or(execution.triggered_at);
        let deadline = (timeout_seconds > 0)
            .then(|| started + chrono::TimeDelta::seconds(timeout_seconds as i64));
        let task = self.tasks.get(&execution.task_id).await?;
        let (status, finished_at, message) = match task {
            None if now - started < ORPHAN_GRACE => return Ok(true),
            None => (
                ExecutionStatus::Failed,
                now,
                "the service stopped before the task was created".to_owned(),
            ),
            Some(task) if task.status.is_terminal() => {
                let finished = task.finished_at.unwrap_or(now);
                let (status, message) = outcome(&task, deadline);
                (status, finished, message)
            }
            Some(task) => match deadline {
                Some(deadline) if now >= deadline => {
                    let finished = match self.tasks.cancel(&task.task_id, now).await? {
                        CancelOutcome::Cancelled(t) => t.finished_at.unwrap_or(now),
                        // It ended meanwhile: settle it from its real end next step.
                        _ => return Ok(true),
                    };
                    self.engine.wake();
                    (
                        ExecutionStatus::Timeout,
                        finished,
                        format!(
                            "task {} ran longer than timeoutSeconds ({timeout_seconds}) and was cancelled",
                            task.task_id
                        ),
                    )
                }
                _ => return Ok(true),
            },
        };
        let ended = Execution {
            status,
            finished_at: Some(finished_at),
            duration_seconds: Some(seconds_between(started, finished_at)),
            error_message: message,
            ..execution.clone()
        };
        if self.schedules.finish_execution(&ended).await? {
            self.count(status);
        }
        Ok(false)
    }

    /// Handles the fires of one enabled schedule due by `now`; returns its next fire time.
    async fn handle_schedule(
        &self,
        schedule: &StoredSchedule,
        mut running: Vec<String>,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let Some(cron) = cron_of(&schedule.task, now) else {
            tracing::warn!(schedule = %schedule.task.id, "stored cron expression no longer parses");
            return Ok(None);
        };
        let id = &schedule.task.id;
        let mut queued = schedule.queued_fire;
        if let (Some(fire), true) = (queued, running.is_empty()) {
            let start = Fire {
                cursor: None,
                queued: Some((Some(fire), None)),
                execution: None,
            };
            if let Some(task_id) = self
                .start(schedule, start, fire, ExecutionTrigger::Schedule, now)
                .await?
            {
                running.push(task_id);
                queued = None;
            } else {
                return Ok(cron.next_fire_after(now));
            }
        }
        let Some(due) = cron.due_between(schedule.fire_cursor, now) else {
            return Ok(cron.next_fire_after(schedule.fire_cursor.max(now)));
        };
        let mut cursor = schedule.fire_cursor;
        let deadline = chrono::TimeDelta::seconds(schedule.task.starting_deadline_seconds as i64);
        let late = now - due.latest > ON_TIME_GRACE;
        let run_latest =
            !late || (deadline > chrono::TimeDelta::zero() && now - due.latest <= deadline);
        let missed_earlier = late || due.earlier_missed;
        if missed_earlier && (!run_latest || deadline.is_zero()) {
            // One skipped execution stands for every fire missed while down.
            let missed_at = if run_latest {
                cron.next_fire_after(schedule.fire_cursor)
                    .unwrap_or(due.latest)
            } else {
                due.latest
            };
            let claim_to = if run_latest {
                // Hold the latest fire back for the run below.
                missed_at
            } else {
                due.latest
            };
            let fire = Fire {
                cursor: Some((cursor, claim_to)),
                queued: None,
                execution: Some(skipped(id, missed_at, MISSED_MESSAGE.to_owned())),
            };
            if !self.record(id, &fire).await? {
                return Ok(cron.next_fire_after(now));
            }
            cursor = claim_to;
        }
        if run_latest && cursor < due.latest {
            let claim = Some((cursor, due.latest));
            match (running.first(), schedule.task.overlap_policy) {
                (None, _) | (Some(_), OverlapPolicy::Allow) => {
                    let fire = Fire {
                        cursor: claim,
                        queued: None,
                        execution: None,
                    };
                    self.start(schedule, fire, due.latest, ExecutionTrigger::Schedule, now)
                        .await?;
                }
                (Some(task_id), OverlapPolicy::Skip) => {
                    let fire = Fire {
                        cursor: claim,
                        queued: None,
                        execution: Some(skipped(
                            id,
                            due.latest,
                            format!("previous run still in progress (task {task_id})"),
                        )),
                    };
                    self.record(id, &fire).await?;
                }
                (Some(_), OverlapPolicy::Queue) => {
                    // Fires arriving while one is queued coalesce into it.
                    let fire = Fire {
                        cursor: claim,
                        queued: Some((queued, Some(due.latest))),
                        execution: None,
                    };
                    self.record(id, &fire).await?;
                }
            }
        }
        Ok(cron.next_fire_after(now))
    }

    /// Records `fire`; true when it won its compare-and-set.
    async fn record(&self, id: &str, fire: &Fire) -> StoreResult<bool> {
        match self.schedules.record_fire(id, fire).await? {
            FireOutcome::Recorded(execution) => {
                if let Some(e) = execution.filter(|e| e.status != ExecutionStatus::Running) {
                    self.count(e.status);
                }
                Ok(true)
            }
            FireOutcome::Conflict | FireOutcome::NotFound => Ok(false),
        }
    }

    /// Records a run with `fire`, then creates its task. Returns the task id
    /// when this scheduler won the fire.
    async fn start(
        &self,
        schedule: &StoredSchedule,
        fire: Fire,
        triggered_at: DateTime<Utc>,
        trigger: ExecutionTrigger,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let started = start_run(
            self.schedules.as_ref(),
            self.tasks.as_ref(),
            self.cluster.as_deref(),
            &self.engine,
            schedule,
            fire,
            RunStart {
                triggered_at,
                trigger,
                created_by: schedule.task.created_by.clone(),
                now,
            },
        )
        .await?;
        Ok(match started {
            Started::Task(_, task) => Some(task.task_id),
            Started::NotCreated(execution) => {
                self.count(execution.status);
                None
            }
            Started::Lost => None,
        })
    }

    fn count(&self, status: ExecutionStatus) {
        self.metrics
            .scheduled_executions
            .get_or_create(&StatusLabels {
                status: status.as_str().to_owned(),
            })
            .inc();
    }
}

/// Who, when and why a run starts.
#[derive(Debug, Clone)]
pub struct RunStart {
    /// The fire time (or the time of a manual trigger).
    pub triggered_at: DateTime<Utc>,
    /// Schedule or manual.
    pub trigger: ExecutionTrigger,
    /// `createdBy` of the task.
    pub created_by: String,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Outcome of [`start_run`].
#[derive(Debug)]
pub enum Started {
    /// The run is recorded and its task created.
    Task(Execution, Box<Task>),
    /// The run is recorded but its task could not be created; the execution
    /// ended `failed` saying why.
    NotCreated(Execution),
    /// Another scheduler handled this fire, or the schedule is gone.
    Lost,
}

/// Starts a run of `schedule`: records the execution together with `fire`
/// (one compare-and-set), then creates the task the way `POST /api/v1/tasks`
/// does, a `fromWorkload` read now through `cluster`. Shared by the
/// scheduler and `POST /scheduled-tasks/{id}/trigger`.
pub async fn start_run(
    schedules: &dyn ScheduleStore,
    tasks: &dyn TaskStore,
    cluster: Option<&dyn Cluster>,
    engine: &EngineHandle,
    schedule: &StoredSchedule,
    fire: Fire,
    run: RunStart,
) -> StoreResult<Started> {
    let spec: Result<TaskSpec, String> = match task_spec(&schedule.task) {
        Ok(spec) if spec.from_workload.is_some() => match cluster {
            Some(cluster) => resolve_spec(cluster, spec, run.now)
                .await
                .map_err(|e| format!("taskConfig.fromWorkload: {e}")),
            None => Err("taskConfig.fromWorkload: this scheduler cannot read workloads".to_owned()),
        },
        Ok(spec) => Ok(spec),
        Err(_) => Err("the stored taskConfig is no longer valid".to_owned()),
    };
    let task_id = TaskId::generate(run.now);
    let execution = Execution {
        id: 0,
        scheduled_task_id: schedule.task.id.clone(),
        task_id: task_id.0.clone(),
        status: ExecutionStatus::Running,
        started_at: Some(run.now),
        finished_at: None,
        duration_seconds: None,
        error_message: String::new(),
        triggered_at: run.triggered_at,
        trigger: run.trigger,
    };
    let fire = Fire {
        execution: Some(execution),
        ..fire
    };
    let recorded = match schedules.record_fire(&schedule.task.id, &fire).await? {
        FireOutcome::Recorded(Some(e)) => e,
        FireOutcome::Recorded(None) | FireOutcome::Conflict | FireOutcome::NotFound => {
            return Ok(Started::Lost)
        }
    };
    let created = match spec {
        Ok(spec) => submit_task_with_id(tasks, engine, &spec, task_id, &run.created_by, run.now)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(id) => format!("task id {id} already taken"),
                other => other.to_string(),
            }),
        Err(why) => Err(why),
    };
    match created {
        Ok(task) => Ok(Started::Task(recorded, Box::new(task))),
        Err(why) => {
            let failed = Execution {
                status: ExecutionStatus::Failed,
                finished_at: Some(run.now),
                duration_seconds: Some(0.0),
                error_message: format!("could not create the task: {why}"),
                ..recorded
            };
            schedules.finish_execution(&failed).await?;
            Ok(Started::NotCreated(failed))
        }
    }
}

/// A skipped execution of `schedule_id` for the fire at `at`.
fn skipped(schedule_id: &str, at: DateTime<Utc>, message: String) -> Execution {
    Execution {
        id: 0,
        scheduled_task_id: schedule_id.to_owned(),
        task_id: String::new(),
        status: ExecutionStatus::Skipped,
        started_at: None,
        finished_at: None,
        duration_seconds: None,
        error_message: message,
        triggered_at: at,
        trigger: ExecutionTrigger::Schedule,
    }
}

/// Execution status and message for an ended task. A cancellation at or
/// after the schedule's deadline is the scheduler's timeout (also when a
/// crash came between cancelling and recording it).
fn outcome(task: &Task, deadline: Option<DateTime<Utc>>) -> (ExecutionStatus, String) {
    match task.status {
        TaskStatus::Completed => (ExecutionStatus::Success, String::new()),
        TaskStatus::Cancelled
            if deadline.is_some_and(|d| task.finished_at.is_some_and(|f| f >= d)) =>
        {
            (
                ExecutionStatus::Timeout,
                format!(
                    "task {} ran longer than timeoutSeconds and was cancelled",
                    task.task_id
                ),
            )
        }
        TaskStatus::Cancelled => (
            ExecutionStatus::Failed,
            format!("task {} was cancelled", task.task_id),
        ),
        _ => {
            let why = task
                .error_message
                .clone()
                .or_else(|| task.reason.clone())
                .unwrap_or_else(|| {
                    format!(
                        "{} of {} nodes failed",
                        task.progress.failed_nodes, task.progress.total_nodes
                    )
                });
            (
                ExecutionStatus::Failed,
                format!("task {} failed: {why}", task.task_id),
            )
        }
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds().max(0) as f64 / 1000.0
}

#[cfg(test)]
mod tests;
