//! Bounded history against the real `prewarm` binary on a real SQLite file:
//! a database holding 20,000 ended tasks is trimmed to `--max-tasks` and
//! `--retention` as soon as the service leads, newest kept, with its node
//! results, and so are a scheduled task's old executions; seen only through
//! HTTP.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use prewarm::store::{
    Fire, FireOutcome, NodeRecord, ScheduleStore, SqliteStore, StoredSchedule, TaskStore,
};
use prewarm_api::{Execution, ExecutionStatus, ExecutionTrigger, ScheduledTask, Task};
use serde_json::json;

/// An ended task created `age` before `now`, ended a minute later.
fn ended_task(i: usize, now: DateTime<Utc>, age: chrono::Duration) -> Task {
    let created = now - age;
    serde_json::from_value(json!({
        "taskId": format!("task-20260101-{i:06}"),
        "status": if i.is_multiple_of(3) { "failed" } else { "completed" },
        "images": ["nginx:1.25"],
        "batchSize": 10,
        "nodeSelector": {},
        "nodeNames": [],
        "priority": 0,
        "maxRetries": 0,
        "retryStrategy": "fixed",
        "retryDelay": 30,
        "webhookUrl": null,
        "pullPolicy": "IfNotPresent",
        "imagePullSecrets": [],
        "tolerateTaints": true,
        "timeoutSeconds": 0,
        "priorityClassName": null,
        "progress": {"totalNodes": 1, "completedNodes": 1, "failedNodes": 0, "skippedNodes": 0,
                     "currentBatch": 1, "totalBatches": 1, "percentage": 100.0},
        "failedNodeDetails": [],
        "skippedNodeDetails": [],
        "imageStatuses": [],
        "reason": null,
        "errorMessage": null,
        "createdBy": "history-test",
        "createdAt": created,
        "startedAt": created,
        "finishedAt": created + chrono::Duration::minutes(1),
        "estimatedCompletion": null,
    }))
    .unwrap()
}

const SCHEDULE: &str = "scheduled-task-20260101-hist00";

/// A disabled scheduled task with 40 skipped runs: 30 fired 40 days before
/// `now`, then 10 in the last hour.
async fn schedule_with_old_runs(store: &SqliteStore, now: DateTime<Utc>) {
    let created = now - chrono::Duration::days(50);
    let task: ScheduledTask = serde_json::from_value(json!({
        "id": SCHEDULE,
        "name": "nightly",
        "description": "",
        "cronExpr": "0 3 * * *",
        "timezone": "UTC",
        "enabled": false,
        "taskConfig": {"images": ["nginx:1.25"]},
        "overlapPolicy": "skip",
        "timeoutSeconds": 0,
        "startingDeadlineSeconds": 0,
        "lastExecutionAt": null,
        "nextExecutionAt": null,
        "createdBy": "history-test",
        "createdAt": created,
        "updatedAt": created,
    }))
    .unwrap();
    store
        .insert_schedule(&StoredSchedule {
            task,
            fire_cursor: created,
            queued_fire: None,
        })
        .await
        .unwrap();
    for i in 0..40i64 {
        let fired = if i < 30 {
            now - chrono::Duration::days(40) + chrono::Duration::minutes(i)
        } else {
            now - chrono::Duration::minutes(60 - i)
        };
        let execution = Execution {
            id: 0,
            scheduled_task_id: SCHEDULE.to_owned(),
            task_id: String::new(),
            status: ExecutionStatus::Skipped,
            started_at: None,
            finished_at: None,
            duration_seconds: None,
            error_message: "busy".to_owned(),
            triggered_at: fired,
            trigger: ExecutionTrigger::Schedule,
        };
        let fire = Fire {
            execution: Some(execution),
            ..Fire::default()
        };
        let out = store.record_fire(SCHEDULE, &fire).await.unwrap();
        assert!(matches!(out, FireOutcome::Recorded(Some(_))), "{out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_stored_tasks_are_trimmed_to_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prewarm.db");
    let now = Utc::now();
    {
        // 5,000 tasks that ended 40 days ago, then 15,000 from the last 15 days,
        // task 19,999 the newest; each with one node record.
        let store = SqliteStore::open(&db).unwrap();
        for i in 0..20_000usize {
            let age = if i < 5_000 {
                chrono::Duration::days(40) + chrono::Duration::seconds(5_000 - i as i64)
            } else {
                chrono::Duration::seconds(((20_000 - i) * 60) as i64)
            };
            let task = ended_task(i, now, age);
            store.insert(&task).await.unwrap();
            store
                .put_nodes(
                    &task.task_id,
                    &[NodeRecord {
                        node: "node-0".to_owned(),
                        body: json!({
                            "node": "node-0",
                            "images": [{"state": "pulled"}],
                            "attempt": 0,
                            "started": true,
                            "phase": {"phase": "completed", "at": task.finished_at},
                        }),
                    }],
                )
                .await
                .unwrap();
        }
        schedule_with_old_runs(&store, now).await;
    }
    let svc = Service::start_with(
        "t-history",
        &db,
        &["--max-tasks", "10000", "--retention", "30d"],
    );
    let tasks = format!("{}/api/v1/tasks", svc.url);
    wait_for(
        "the history trimmed to 10,000 tasks",
        Duration::from_secs(120),
        async || get_json(format!("{tasks}?limit=1")).await["total"] == 10_000,
    )
    .await;

    // The newest 10,000 stay: task 10,000 is the oldest kept.
    let newest = get_json(format!("{tasks}?limit=1")).await;
    assert_eq!(newest["tasks"][0]["taskId"], "task-20260101-019999");
    let oldest = get_json(format!("{tasks}?limit=1&offset=9999")).await;
    assert_eq!(oldest["tasks"][0]["taskId"], "task-20260101-010000");
    for (id, code) in [
        ("task-20260101-000000", 404),
        ("task-20260101-009999", 404),
        ("task-20260101-010000", 200),
    ] {
        assert_eq!(svc.get(id).await.0, code, "{id}");
    }
    // A deleted task's node results went with it; a kept one's are still there.
    let nodes = |id: &str| format!("{}/api/v1/tasks/{id}/nodes", svc.url);
    assert_eq!(
        http()
            .get(nodes("task-20260101-009999"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(get_json(nodes("task-20260101-010000")).await["total"], 1);
    let metrics = svc.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "prewarm_tasks_trimmed_total 10000"),
        "{metrics}"
    );

    // The scheduled task keeps its runs of the last hour, newest first.
    let executions = format!("{}/api/v1/scheduled-tasks/{SCHEDULE}/executions", svc.url);
    wait_for(
        "the runs older than the retention trimmed",
        Duration::from_secs(60),
        async || get_json(format!("{executions}?limit=1")).await["total"] == 10,
    )
    .await;
    let runs = get_json(format!("{executions}?limit=100")).await;
    let ids: Vec<u64> = runs["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (31..=40).rev().collect::<Vec<_>>());

    // The file stays bounded across a restart: no task comes back.
    drop(svc);
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.list(None, 1, 0).await.unwrap().1, 10_000);
    assert!(store
        .nodes("task-20260101-000001")
        .await
        .unwrap()
        .is_empty());
}
