//! The scheduler stepped by hand on a manual clock over the memory store.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prewarm_api::{
    CreateScheduledTaskRequest, CreateTaskRequest, Execution, ExecutionStatus, ExecutionTrigger,
    OverlapPolicy, TaskStatus,
};

use super::*;
use crate::clock::ManualClock;
use crate::cluster::fake::FakeCluster;
use crate::domain::schedule::new_scheduled_task;
use crate::engine::Engine;
use crate::store::MemoryStore;
use crate::testing::engine_config;

struct World {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    engine: EngineHandle,
    metrics: Arc<Metrics>,
}

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

impl World {
    fn new(at: &str) -> World {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(utc(at)));
        let engine = Engine::new(
            store.clone(),
            Arc::new(FakeCluster::new()),
            clock.clone(),
            engine_config(),
        )
        .handle();
        World {
            store,
            clock,
            engine,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// A scheduler over the world's store (a fresh one = a restarted service).
    fn scheduler(&self) -> Scheduler {
        Scheduler::new(
            self.store.clone(),
            self.store.clone(),
            self.engine.clone(),
            self.clock.clone(),
        )
        .with_metrics(self.metrics.clone())
    }

    async fn schedule(
        &self,
        cron: &str,
        tz: &str,
        edit: impl FnOnce(&mut CreateScheduledTaskRequest),
    ) -> String {
        let mut req = CreateScheduledTaskRequest {
            name: "test".into(),
            cron_expr: cron.into(),
            timezone: Some(tz.into()),
            task_config: CreateTaskRequest {
                images: vec!["nginx:1".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        edit(&mut req);
        let now = self.clock.now();
        let task =
            new_scheduled_task(req, "scheduled-task-20240116-aaaaaa".into(), "alice", now).unwrap();
        let id = task.id.clone();
        self.store
            .insert_schedule(&StoredSchedule {
                task,
                fire_cursor: now,
                queued_fire: None,
            })
            .await
            .unwrap();
        id
    }

    fn at(&self, s: &str) {
        self.clock.set(utc(s));
    }

    async fn executions(&self, id: &str) -> Vec<Execution> {
        let mut all = self.store.list_executions(id, 100, 0).await.unwrap().0;
        all.reverse();
        all
    }

    async fn tasks(&self) -> usize {
        self.store.list(None, 100, 0).await.unwrap().1 as usize
    }

    /// Ends a task the way the engine would.
    async fn end_task(&self, task_id: &str, status: TaskStatus) {
        let mut task = self.store.get(task_id).await.unwrap().unwrap();
        task.status = status;
        task.finished_at = Some(self.clock.now());
        task.error_message = (status == TaskStatus::Failed).then(|| "2 nodes failed".to_owned());
        assert!(self
            .store
            .update_if(&task, &[TaskStatus::Pending, TaskStatus::Running])
            .await
            .unwrap());
    }

    fn counted(&self, status: &str) -> u64 {
        self.metrics
            .scheduled_executions
            .get_or_create(&StatusLabels {
                status: status.to_owned(),
            })
            .get()
    }
}

#[tokio::test]
async fn fires_on_time_exactly_once_and_follows_the_task_to_success() {
    let w = World::new("2024-01-16T10:01:00Z");
    let id = w.schedule("*/5 * * * *", "UTC", |_| {}).await;
    let s = w.scheduler();

    w.at("2024-01-16T10:04:59.999Z");
    assert_eq!(s.step().await, Some(utc("2024-01-16T10:05:00Z")));
    assert!(w.executions(&id).await.is_empty(), "not before its time");

    w.at("2024-01-16T10:05:00Z");
    assert_eq!(s.step().await, Some(utc("2024-01-16T10:10:00Z")));
    w.at("2024-01-16T10:05:00.300Z");
    s.step().await;
    w.at("2024-01-16T10:06:00Z");
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(w.tasks().await, 1, "one task per fire time");
    let run = &runs[0];
    assert_eq!(run.id, 1);
    assert_eq!(run.status, ExecutionStatus::Running);
    assert_eq!(run.trigger, ExecutionTrigger::Schedule);
    assert_eq!(run.triggered_at, utc("2024-01-16T10:05:00Z"));
    let task = w
        .store
        .get(&run.task_id)
        .await
        .unwrap()
        .expect("task created");
    assert_eq!(task.status, TaskStatus::Pending);
    assert_eq!(task.images, ["nginx:1"]);
    assert_eq!(task.created_by, "alice");
    let sched = w.store.get_schedule(&id).await.unwrap().unwrap();
    assert_eq!(
        sched.task.last_execution_at,
        Some(utc("2024-01-16T10:05:00Z"))
    );

    w.at("2024-01-16T10:07:30Z");
    w.end_task(&run.task_id, TaskStatus::Completed).await;
    s.step().await;
    let run = &w.executions(&id).await[0];
    assert_eq!(run.status, ExecutionStatus::Success);
    assert_eq!(run.finished_at, Some(utc("2024-01-16T10:07:30Z")));
    assert_eq!(run.duration_seconds, Some(150.0));
    assert_eq!(run.error_message, "");
    assert_eq!(w.counted("success"), 1);
}

#[tokio::test]
async fn failed_and_user_cancelled_tasks_end_their_runs_failed() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("* * * * *", "UTC", |r| {
            r.overlap_policy = Some(OverlapPolicy::Allow)
        })
        .await;
    let s = w.scheduler();
    w.at("2024-01-16T10:01:00Z");
    s.step().await;
    w.at("2024-01-16T10:02:00Z");
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 2);
    w.end_task(&runs[0].task_id, TaskStatus::Failed).await;
    w.store
        .cancel(&runs[1].task_id, w.clock.now())
        .await
        .unwrap();
    w.at("2024-01-16T10:02:01Z");
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs[0].status, ExecutionStatus::Failed);
    assert!(
        runs[0].error_message.contains("2 nodes failed"),
        "{runs:#?}"
    );
    assert_eq!(runs[1].status, ExecutionStatus::Failed);
    assert!(runs[1].error_message.contains("cancelled"), "{runs:#?}");
    assert_eq!(w.counted("failed"), 2);
}

#[tokio::test]
async fn overlap_skip_records_a_skipped_run_naming_the_running_task() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w.schedule("* * * * *", "UTC", |_| {}).await;
    let s = w.scheduler();
    w.at("2024-01-16T10:01:00Z");
    s.step().await;
    w.at("2024-01-16T10:02:00Z");
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].status, ExecutionStatus::Skipped);
    assert_eq!(runs[1].task_id, "");
    assert_eq!(runs[1].triggered_at, utc("2024-01-16T10:02:00Z"));
    assert!(
        runs[1].error_message.contains(&runs[0].task_id),
        "{runs:#?}"
    );
    assert_eq!(w.tasks().await, 1);
    assert_eq!(w.counted("skipped"), 1);
}

#[tokio::test]
async fn overlap_allow_runs_in_parallel() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("* * * * *", "UTC", |r| {
            r.overlap_policy = Some(OverlapPolicy::Allow)
        })
        .await;
    let s = w.scheduler();
    for at in [
        "2024-01-16T10:01:00Z",
        "2024-01-16T10:02:00Z",
        "2024-01-16T10:03:00Z",
    ] {
        w.at(at);
        s.step().await;
    }
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.status == ExecutionStatus::Running));
    assert_eq!(w.tasks().await, 3);
}

#[tokio::test]
async fn overlap_queue_starts_once_when_the_running_one_ends_coalescing_fires() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("* * * * *", "UTC", |r| {
            r.overlap_policy = Some(OverlapPolicy::Queue)
        })
        .await;
    let s = w.scheduler();
    w.at("2024-01-16T10:01:00Z");
    s.step().await;
    for at in [
        "2024-01-16T10:02:00Z",
        "2024-01-16T10:03:00Z",
        "2024-01-16T10:04:00Z",
    ] {
        w.at(at);
        s.step().await;
    }
    assert_eq!(w.executions(&id).await.len(), 1, "queued fires wait");
    assert_eq!(w.tasks().await, 1);

    let first = w.executions(&id).await[0].task_id.clone();
    w.at("2024-01-16T10:04:20Z");
    w.end_task(&first, TaskStatus::Completed).await;
    // A restarted scheduler still knows about the queued run.
    let s = w.scheduler();
    s.step().await;
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(
        runs.len(),
        2,
        "three fires coalesced into one run: {runs:#?}"
    );
    assert_eq!(runs[0].status, ExecutionStatus::Success);
    assert_eq!(runs[1].status, ExecutionStatus::Running);
    assert_eq!(runs[1].triggered_at, utc("2024-01-16T10:04:00Z"));
    assert_eq!(runs[1].started_at, Some(utc("2024-01-16T10:04:20Z")));
    assert_eq!(w.tasks().await, 2);
}

#[tokio::test]
async fn a_run_past_timeout_seconds_is_cancelled_and_ends_timeout() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("* * * * *", "UTC", |r| r.timeout_seconds = Some(90))
        .await;
    let s = w.scheduler();
    w.at("2024-01-16T10:01:00Z");
    s.step().await;
    let task_id = w.executions(&id).await[0].task_id.clone();
    w.at("2024-01-16T10:02:29Z");
    s.step().await;
    assert_eq!(w.executions(&id).await[0].status, ExecutionStatus::Running);
    w.at("2024-01-16T10:02:30Z");
    s.step().await;
    let run = &w.executions(&id).await[0];
    assert_eq!(run.status, ExecutionStatus::Timeout, "{run:#?}");
    assert_eq!(run.duration_seconds, Some(90.0));
    assert!(run.error_message.contains("timeoutSeconds"), "{run:#?}");
    let task = w.store.get(&task_id).await.unwrap().unwrap();
    assert_eq!(
        task.status,
        TaskStatus::Cancelled,
        "cancelled through the store"
    );
    assert_eq!(w.counted("timeout"), 1);
}

#[tokio::test]
async fn a_crash_between_cancel_and_record_still_ends_timeout() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("* * * * *", "UTC", |r| r.timeout_seconds = Some(60))
        .await;
    w.at("2024-01-16T10:01:00Z");
    w.scheduler().step().await;
    let task_id = w.executions(&id).await[0].task_id.clone();
    w.at("2024-01-16T10:02:05Z");
    // The cancel landed, then the service died before recording the execution.
    w.store.cancel(&task_id, w.clock.now()).await.unwrap();
    w.scheduler().step().await;
    assert_eq!(w.executions(&id).await[0].status, ExecutionStatus::Timeout);
}

#[tokio::test]
async fn missed_fires_with_no_deadline_are_one_skipped_run() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w.schedule("*/5 * * * *", "UTC", |_| {}).await;
    // Down from 10:00:30 to 12:07:30: a fresh scheduler comes up.
    w.at("2024-01-16T12:07:30Z");
    let s = w.scheduler();
    assert_eq!(s.step().await, Some(utc("2024-01-16T12:10:00Z")));
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].status, ExecutionStatus::Skipped);
    assert_eq!(runs[0].error_message, MISSED_MESSAGE);
    assert_eq!(runs[0].triggered_at, utc("2024-01-16T12:05:00Z"));
    assert_eq!(w.tasks().await, 0);
    // Then back on schedule.
    w.at("2024-01-16T12:10:00Z");
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].status, ExecutionStatus::Running);
}

#[tokio::test]
async fn missed_fires_within_the_deadline_are_one_late_run() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("*/5 * * * *", "UTC", |r| {
            r.starting_deadline_seconds = Some(300)
        })
        .await;
    w.at("2024-01-16T12:07:30Z");
    let s = w.scheduler();
    s.step().await;
    s.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 1, "missed fires coalesce: {runs:#?}");
    assert_eq!(runs[0].status, ExecutionStatus::Running);
    assert_eq!(runs[0].triggered_at, utc("2024-01-16T12:05:00Z"));
    assert_eq!(runs[0].started_at, Some(utc("2024-01-16T12:07:30Z")));
    assert_eq!(w.tasks().await, 1);
}

#[tokio::test]
async fn missed_fires_past_the_deadline_are_skipped() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("*/5 * * * *", "UTC", |r| {
            r.starting_deadline_seconds = Some(60)
        })
        .await;
    w.at("2024-01-16T12:07:30Z");
    w.scheduler().step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, ExecutionStatus::Skipped);
    assert_eq!(runs[0].error_message, MISSED_MESSAGE);
    assert_eq!(w.tasks().await, 0);
}

#[tokio::test]
async fn a_short_outage_skips_the_missed_fire_and_runs_the_current_one() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w.schedule("* * * * *", "UTC", |_| {}).await;
    // Down across 10:01; back 3 s after 10:02.
    w.at("2024-01-16T10:02:03Z");
    w.scheduler().step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0].status, ExecutionStatus::Skipped);
    assert_eq!(runs[0].triggered_at, utc("2024-01-16T10:01:00Z"));
    assert_eq!(runs[1].status, ExecutionStatus::Running);
    assert_eq!(runs[1].triggered_at, utc("2024-01-16T10:02:00Z"));
}

#[tokio::test]
async fn a_crash_between_claim_and_start_never_fires_twice() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w.schedule("* * * * *", "UTC", |_| {}).await;
    w.at("2024-01-16T10:01:00Z");
    // The first half of a fire: the claim (cursor + execution) is stored, then the process dies.
    let claimed = w
        .store
        .record_fire(
            &id,
            &Fire {
                cursor: Some((utc("2024-01-16T10:00:30Z"), utc("2024-01-16T10:01:00Z"))),
                queued: None,
                execution: Some(Execution {
                    id: 0,
                    scheduled_task_id: id.clone(),
                    task_id: "task-20240116-zzzzzz".into(),
                    status: ExecutionStatus::Running,
                    started_at: Some(w.clock.now()),
                    finished_at: None,
                    duration_seconds: None,
                    error_message: String::new(),
                    triggered_at: w.clock.now(),
                    trigger: ExecutionTrigger::Schedule,
                }),
            },
        )
        .await
        .unwrap();
    assert!(matches!(claimed, FireOutcome::Recorded(Some(_))));

    w.at("2024-01-16T10:01:02Z");
    let restarted = w.scheduler();
    restarted.step().await;
    assert_eq!(
        w.tasks().await,
        0,
        "the claimed fire time is not fired again"
    );
    assert_eq!(w.executions(&id).await.len(), 1);

    w.at("2024-01-16T10:01:45Z");
    restarted.step().await;
    let runs = w.executions(&id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, ExecutionStatus::Failed, "accounted for");
    assert!(runs[0]
        .error_message
        .contains("stopped before the task was created"));
    assert_eq!(w.tasks().await, 0);
}

#[tokio::test]
async fn two_schedulers_on_one_store_fire_a_time_once() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("* * * * *", "UTC", |r| {
            r.overlap_policy = Some(OverlapPolicy::Allow)
        })
        .await;
    let (a, b) = (w.scheduler(), w.scheduler());
    w.at("2024-01-16T10:01:00Z");
    tokio::join!(a.step(), b.step());
    a.step().await;
    assert_eq!(w.executions(&id).await.len(), 1);
    assert_eq!(w.tasks().await, 1);
}

#[tokio::test]
async fn daylight_saving_spring_forward_and_fall_back() {
    // New York 2024-03-10: 02:00 EST → 03:00 EDT (07:00Z). 02:30 runs once, at 03:00.
    let w = World::new("2024-03-09T12:00:00Z");
    let spring = w
        .schedule("30 2 * * *", "America/New_York", |r| {
            r.overlap_policy = Some(OverlapPolicy::Allow)
        })
        .await;
    let s = w.scheduler();
    w.at("2024-03-10T06:59:59Z");
    assert_eq!(s.step().await, Some(utc("2024-03-10T07:00:00Z")));
    for at in [
        "2024-03-10T07:00:00Z",
        "2024-03-10T07:30:00Z",
        "2024-03-10T08:00:00Z",
    ] {
        w.at(at);
        s.step().await;
    }
    let runs = w.executions(&spring).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].triggered_at, utc("2024-03-10T07:00:00Z"));

    // 2024-11-03: 02:00 EDT → 01:00 EST (06:00Z). 01:30 runs once, at 01:30 EDT (05:30Z).
    let w = World::new("2024-11-02T12:00:00Z");
    let fall = w
        .schedule("30 1 * * *", "America/New_York", |r| {
            r.overlap_policy = Some(OverlapPolicy::Allow)
        })
        .await;
    let s = w.scheduler();
    for at in [
        "2024-11-03T05:30:00Z",
        "2024-11-03T06:30:00Z",
        "2024-11-03T07:30:00Z",
    ] {
        w.at(at);
        s.step().await;
    }
    let runs = w.executions(&fall).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].triggered_at, utc("2024-11-03T05:30:00Z"));
    assert_eq!(s.step().await, Some(utc("2024-11-04T06:30:00Z")));
}

#[tokio::test]
async fn disabled_schedules_do_not_fire() {
    let w = World::new("2024-01-16T10:00:30Z");
    let id = w
        .schedule("* * * * *", "UTC", |r| r.enabled = Some(false))
        .await;
    w.at("2024-01-16T10:05:00Z");
    assert_eq!(w.scheduler().step().await, None);
    assert!(w.executions(&id).await.is_empty());
}
