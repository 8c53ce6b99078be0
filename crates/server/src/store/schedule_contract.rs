//! The behaviour every `ScheduleStore` backend must show, as one test suite
//! (run by each backend with [`schedule_contract_tests!`], like `contract.rs`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prewarm_api::{
    CreateTaskRequest, Execution, ExecutionStatus, ExecutionTrigger, OverlapPolicy, ScheduledTask,
};

use super::contract::t;
use super::schedules::{Fire, FireOutcome, ScheduleStore, StoredSchedule};
use super::{Retention, StoreError};

/// Expands to one `#[tokio::test]` per contract behaviour, each on a fresh store.
macro_rules! schedule_contract_tests {
    (guarded: $make:expr) => {
        $crate::store::schedule_contract::schedule_contract_tests!(@tests $make;
            schedule_round_trip_and_duplicates,
            schedules_list_newest_first_and_page,
            update_keeps_last_execution_and_resets_on_request,
            record_fire_is_a_compare_and_set,
            only_one_of_many_concurrent_claims_wins,
            queued_run_is_a_compare_and_set,
            executions_are_numbered_listed_and_finished_once,
            delete_takes_the_executions_along,
            trim_deletes_old_ended_executions_and_keeps_running_ones,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        mod schedule_contract {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _guard) = $make;
                    $crate::store::schedule_contract::$name(store).await;
                }
            )+
        }
    };
    ($make:expr) => {
        $crate::store::schedule_contract::schedule_contract_tests!(guarded: ($make, ()));
    };
}

pub(crate) use schedule_contract_tests;

/// A scheduled task with every field set.
pub(crate) fn sample_schedule(id: &str, created_at: DateTime<Utc>) -> StoredSchedule {
    StoredSchedule {
        task: ScheduledTask {
            id: id.to_owned(),
            name: "Nightly \"base\" images".to_owned(),
            description: "prewarm before the morning scale-up\nsecond line".to_owned(),
            cron_expr: "30 5 * * 1-5".to_owned(),
            timezone: "Europe/Berlin".to_owned(),
            enabled: true,
            task_config: CreateTaskRequest {
                images: vec!["nginx:1.25".to_owned()],
                batch_size: Some(7),
                ..Default::default()
            },
            overlap_policy: OverlapPolicy::Queue,
            timeout_seconds: 600,
            starting_deadline_seconds: 120,
            last_execution_at: None,
            next_execution_at: None,
            created_by: "alice".to_owned(),
            created_at,
            updated_at: created_at,
        },
        fire_cursor: created_at,
        queued_fire: None,
    }
}

/// A running execution started at `at`.
pub(crate) fn running(schedule_id: &str, task_id: &str, at: DateTime<Utc>) -> Execution {
    Execution {
        id: 0,
        scheduled_task_id: schedule_id.to_owned(),
        task_id: task_id.to_owned(),
        status: ExecutionStatus::Running,
        started_at: Some(at),
        finished_at: None,
        duration_seconds: None,
        error_message: String::new(),
        triggered_at: at,
        trigger: ExecutionTrigger::Schedule,
    }
}

pub(crate) async fn schedule_round_trip_and_duplicates<S: ScheduleStore>(store: S) {
    let s = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    store.insert_schedule(&s).await.unwrap();
    assert_eq!(
        store.get_schedule(&s.task.id).await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(store.get_schedule("nope").await.unwrap(), None);
    let err = store.insert_schedule(&s).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Duplicate(ref id) if *id == s.task.id),
        "{err}"
    );
    assert_eq!(store.all_schedules().await.unwrap(), vec![s]);
}

pub(crate) async fn schedules_list_newest_first_and_page<S: ScheduleStore>(store: S) {
    for i in 0..5 {
        let s = sample_schedule(&format!("scheduled-task-20260101-00000{i}"), t(i));
        store.insert_schedule(&s).await.unwrap();
    }
    let (page, total) = store.list_schedules(2, 1).await.unwrap();
    assert_eq!(total, 5);
    let ids: Vec<&str> = page.iter().map(|s| s.task.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "scheduled-task-20260101-000003",
            "scheduled-task-20260101-000002"
        ]
    );
    let (page, total) = store.list_schedules(10, 10).await.unwrap();
    assert!(page.is_empty());
    assert_eq!(total, 5);
}

pub(crate) async fn update_keeps_last_execution_and_resets_on_request<S: ScheduleStore>(store: S) {
    let s = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    store.insert_schedule(&s).await.unwrap();
    let fired = store
        .record_fire(
            &s.task.id,
            &Fire {
                cursor: Some((t(0), t(60))),
                queued: Some((None, Some(t(60)))),
                execution: Some(running(&s.task.id, "task-1", t(61))),
            },
        )
        .await
        .unwrap();
    assert!(matches!(fired, FireOutcome::Recorded(Some(_))), "{fired:?}");

    // A stale copy of the view must not undo lastExecutionAt.
    let mut changed = s.task.clone();
    changed.name = "renamed".to_owned();
    assert!(store.update_schedule(&changed, None).await.unwrap());
    let got = store.get_schedule(&s.task.id).await.unwrap().unwrap();
    assert_eq!(got.task.name, "renamed");
    assert_eq!(got.task.last_execution_at, Some(t(61)));
    assert_eq!((got.fire_cursor, got.queued_fire), (t(60), Some(t(60))));

    assert!(store.update_schedule(&changed, Some(t(500))).await.unwrap());
    let got = store.get_schedule(&s.task.id).await.unwrap().unwrap();
    assert_eq!((got.fire_cursor, got.queued_fire), (t(500), None));

    let mut unknown = changed.clone();
    unknown.id = "nope".to_owned();
    assert!(!store.update_schedule(&unknown, None).await.unwrap());
}

pub(crate) async fn record_fire_is_a_compare_and_set<S: ScheduleStore>(store: S) {
    let s = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    store.insert_schedule(&s).await.unwrap();
    let claim = |from, to| Fire {
        cursor: Some((from, to)),
        queued: None,
        execution: Some(running(&s.task.id, "task-x", to)),
    };
    assert_eq!(
        store
            .record_fire("nope", &claim(t(0), t(60)))
            .await
            .unwrap(),
        FireOutcome::NotFound
    );
    let FireOutcome::Recorded(Some(first)) = store
        .record_fire(&s.task.id, &claim(t(0), t(60)))
        .await
        .unwrap()
    else {
        panic!("first claim must win");
    };
    assert_eq!(first.id, 1);
    assert_eq!(first.scheduled_task_id, s.task.id);
    // The same fire time again: the cursor has moved, nothing is recorded.
    assert_eq!(
        store
            .record_fire(&s.task.id, &claim(t(0), t(60)))
            .await
            .unwrap(),
        FireOutcome::Conflict
    );
    let got = store.get_schedule(&s.task.id).await.unwrap().unwrap();
    assert_eq!(got.fire_cursor, t(60));
    assert_eq!(got.task.last_execution_at, Some(t(60)));
    assert_eq!(store.list_executions(&s.task.id, 10, 0).await.unwrap().1, 1);

    // A skipped execution moves the cursor but not lastExecutionAt.
    let skipped = Execution {
        status: ExecutionStatus::Skipped,
        started_at: None,
        task_id: String::new(),
        error_message: "busy".to_owned(),
        ..running(&s.task.id, "", t(120))
    };
    let out = store
        .record_fire(
            &s.task.id,
            &Fire {
                cursor: Some((t(60), t(120))),
                queued: None,
                execution: Some(skipped),
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(out, FireOutcome::Recorded(Some(ref e)) if e.id == 2),
        "{out:?}"
    );
    let got = store.get_schedule(&s.task.id).await.unwrap().unwrap();
    assert_eq!(
        (got.fire_cursor, got.task.last_execution_at),
        (t(120), Some(t(60)))
    );
}

pub(crate) async fn only_one_of_many_concurrent_claims_wins<S: ScheduleStore>(store: S) {
    let store = Arc::new(store);
    let s = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    store.insert_schedule(&s).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        let id = s.task.id.clone();
        handles.push(tokio::spawn(async move {
            store
                .record_fire(
                    &id,
                    &Fire {
                        cursor: Some((t(0), t(60))),
                        queued: None,
                        execution: Some(running(&id, &format!("task-{i}"), t(60))),
                    },
                )
                .await
                .unwrap()
        }));
    }
    let mut wins = 0;
    for h in handles {
        if matches!(h.await.unwrap(), FireOutcome::Recorded(_)) {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(
        store.list_executions(&s.task.id, 100, 0).await.unwrap().1,
        1
    );
}

pub(crate) async fn queued_run_is_a_compare_and_set<S: ScheduleStore>(store: S) {
    let s = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    store.insert_schedule(&s).await.unwrap();
    let start_queued = Fire {
        cursor: None,
        queued: Some((Some(t(60)), None)),
        execution: Some(running(&s.task.id, "task-q", t(90))),
    };
    assert_eq!(
        store.record_fire(&s.task.id, &start_queued).await.unwrap(),
        FireOutcome::Conflict,
        "nothing queued yet"
    );
    let queue = Fire {
        cursor: Some((t(0), t(60))),
        queued: Some((None, Some(t(60)))),
        execution: None,
    };
    assert_eq!(
        store.record_fire(&s.task.id, &queue).await.unwrap(),
        FireOutcome::Recorded(None)
    );
    assert!(matches!(
        store.record_fire(&s.task.id, &start_queued).await.unwrap(),
        FireOutcome::Recorded(Some(_))
    ));
    assert_eq!(
        store.record_fire(&s.task.id, &start_queued).await.unwrap(),
        FireOutcome::Conflict,
        "a queued run starts once"
    );
    let got = store.get_schedule(&s.task.id).await.unwrap().unwrap();
    assert_eq!(got.queued_fire, None);
}

pub(crate) async fn executions_are_numbered_listed_and_finished_once<S: ScheduleStore>(store: S) {
    let s = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    let other = sample_schedule("scheduled-task-20260101-bbbbbb", t(1));
    store.insert_schedule(&s).await.unwrap();
    store.insert_schedule(&other).await.unwrap();
    for i in 1..=3 {
        for sched in [&s, &other] {
            store
                .record_fire(
                    &sched.task.id,
                    &Fire {
                        execution: Some(running(&sched.task.id, &format!("task-{i}"), t(i))),
                        ..Fire::default()
                    },
                )
                .await
                .unwrap();
        }
    }
    let (page, total) = store.list_executions(&s.task.id, 2, 0).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [3, 2]);
    let (page, _) = store.list_executions(&s.task.id, 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [1]);
    assert_eq!(
        store.list_executions("nope", 10, 0).await.unwrap(),
        (vec![], 0)
    );

    let mut second = store.get_execution(&s.task.id, 2).await.unwrap().unwrap();
    assert_eq!(second.task_id, "task-2");
    assert_eq!(store.get_execution(&s.task.id, 9).await.unwrap(), None);
    assert_eq!(store.running_executions().await.unwrap().len(), 6);

    second.status = ExecutionStatus::Success;
    second.finished_at = Some(t(100));
    second.duration_seconds = Some(98.0);
    assert!(store.finish_execution(&second).await.unwrap());
    let mut again = second.clone();
    again.status = ExecutionStatus::Timeout;
    assert!(
        !store.finish_execution(&again).await.unwrap(),
        "ended executions stay as they are"
    );
    assert_eq!(
        store.get_execution(&s.task.id, 2).await.unwrap(),
        Some(second)
    );
    assert_eq!(store.running_executions().await.unwrap().len(), 5);
}

pub(crate) async fn delete_takes_the_executions_along<S: ScheduleStore>(store: S) {
    let s = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    store.insert_schedule(&s).await.unwrap();
    store
        .record_fire(
            &s.task.id,
            &Fire {
                execution: Some(running(&s.task.id, "task-1", t(1))),
                ..Fire::default()
            },
        )
        .await
        .unwrap();
    assert!(store.delete_schedule(&s.task.id).await.unwrap());
    assert!(!store.delete_schedule(&s.task.id).await.unwrap());
    assert_eq!(store.get_schedule(&s.task.id).await.unwrap(), None);
    assert_eq!(store.get_execution(&s.task.id, 1).await.unwrap(), None);
    assert!(store.running_executions().await.unwrap().is_empty());
    // A new schedule with the same id starts its numbering afresh.
    store.insert_schedule(&s).await.unwrap();
    let out = store
        .record_fire(
            &s.task.id,
            &Fire {
                execution: Some(running(&s.task.id, "task-2", t(2))),
                ..Fire::default()
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(out, FireOutcome::Recorded(Some(ref e)) if e.id == 1),
        "{out:?}"
    );
}

/// Executions that ended before the cutoff, or beyond the newest
/// `max_tasks` of their schedule, go in batches; running ones stay.
pub(crate) async fn trim_deletes_old_ended_executions_and_keeps_running_ones<S: ScheduleStore>(
    store: S,
) {
    let a = sample_schedule("scheduled-task-20260101-aaaaaa", t(0));
    let b = sample_schedule("scheduled-task-20260101-bbbbbb", t(1));
    store.insert_schedule(&a).await.unwrap();
    store.insert_schedule(&b).await.unwrap();
    // Records a run fired at `fired`, ended `status` at `finished` (running
    // when `None`; a skip ends as it is recorded).
    let record = async |schedule: &StoredSchedule,
                        fired: i64,
                        status: ExecutionStatus,
                        finished: Option<i64>| {
        let id = &schedule.task.id;
        let execution = match status {
            ExecutionStatus::Skipped => Execution {
                status,
                started_at: None,
                task_id: String::new(),
                ..running(id, "", t(fired))
            },
            _ => running(id, "task-x", t(fired)),
        };
        let fire = Fire {
            execution: Some(execution),
            ..Fire::default()
        };
        let FireOutcome::Recorded(Some(mut recorded)) = store.record_fire(id, &fire).await.unwrap()
        else {
            panic!("not recorded");
        };
        if let Some(finished) = finished {
            recorded.status = status;
            recorded.finished_at = Some(t(finished));
            assert!(store.finish_execution(&recorded).await.unwrap());
        }
    };
    record(&a, 10, ExecutionStatus::Success, Some(100)).await;
    record(&a, 200, ExecutionStatus::Skipped, None).await;
    record(&a, 300, ExecutionStatus::Running, None).await;
    record(&a, 400, ExecutionStatus::Failed, Some(450)).await;
    record(&a, 500, ExecutionStatus::Success, Some(5_000)).await;
    record(&b, 20, ExecutionStatus::Timeout, Some(50)).await;
    record(&b, 30, ExecutionStatus::Running, None).await;
    let ids = async |schedule: &StoredSchedule| {
        let (page, total) = store
            .list_executions(&schedule.task.id, 100, 0)
            .await
            .unwrap();
        assert_eq!(total, page.len() as u64);
        page.iter().map(|e| e.id).collect::<Vec<_>>()
    };

    // Ended before t(150): a1 and b1; beyond the newest 3 of a: a1 and a2.
    let retention = Retention {
        ended_before: t(150),
        max_tasks: 3,
    };
    assert_eq!(store.trim_executions(&retention, 2).await.unwrap(), 2);
    assert_eq!(store.trim_executions(&retention, 10).await.unwrap(), 1);
    assert_eq!(store.trim_executions(&retention, 10).await.unwrap(), 0);
    assert_eq!(ids(&a).await, [5, 4, 3]);
    assert_eq!(ids(&b).await, [2]);

    // Keeping one per schedule: a4 goes, the running a3 and b2 stay.
    let retention = Retention {
        ended_before: t(0),
        max_tasks: 1,
    };
    assert_eq!(store.trim_executions(&retention, 10).await.unwrap(), 1);
    assert_eq!(store.trim_executions(&retention, 10).await.unwrap(), 0);
    assert_eq!(ids(&a).await, [5, 3]);
    assert_eq!(ids(&b).await, [2]);
    assert_eq!(store.running_executions().await.unwrap().len(), 2);
    // A finished run is counted from its end: a3 ending now goes at once.
    let mut third = store.get_execution(&a.task.id, 3).await.unwrap().unwrap();
    third.status = ExecutionStatus::Success;
    third.finished_at = Some(t(6_000));
    assert!(store.finish_execution(&third).await.unwrap());
    assert_eq!(store.trim_executions(&retention, 10).await.unwrap(), 1);
    assert_eq!(ids(&a).await, [5]);
    // Deleting a schedule leaves nothing behind for the trim.
    assert!(store.delete_schedule(&a.task.id).await.unwrap());
    assert!(store.delete_schedule(&b.task.id).await.unwrap());
    let all = Retention {
        ended_before: t(1_000_000),
        max_tasks: 0,
    };
    assert_eq!(store.trim_executions(&all, 10).await.unwrap(), 0);
}
