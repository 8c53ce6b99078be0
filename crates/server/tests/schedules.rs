//! Scheduled tasks end to end: the real `prewarm` binary on a real SQLite
//! file, the real control plane with kube-sim nodes, HTTP only. Fires are
//! real (`* * * * *` fires within a minute), so each test takes a minute or two.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use prewarm_api::{Execution, ExecutionList, ExecutionStatus, ExecutionTrigger, TaskStatus};
use serde_json::{json, Value};

/// A real fire of `* * * * *` comes within 60 s; leave room for a slow machine.
const FIRE_WAIT: Duration = Duration::from_secs(100);

async fn create_schedule(svc: &Service, body: Value) -> String {
    let r = http()
        .post(format!("{}/api/v1/scheduled-tasks", svc.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(code, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn executions(svc: &Service, id: &str) -> Vec<Execution> {
    let r = http()
        .get(format!(
            "{}/api/v1/scheduled-tasks/{id}/executions?limit=100",
            svc.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let list: ExecutionList = r.json().await.unwrap();
    list.executions
}

/// Polls the executions until `check` picks one.
async fn wait_execution(
    svc: &Service,
    id: &str,
    timeout: Duration,
    check: impl Fn(&Execution) -> bool,
) -> Execution {
    let deadline = Instant::now() + timeout;
    loop {
        let all = executions(svc, id).await;
        if let Some(e) = all.iter().find(|e| check(e)) {
            return e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no matching execution in {timeout:?}: {all:#?}\n--- log ---\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triggered_run_succeeds_and_the_schedule_fires_by_itself() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: sched-
    count: 3
    labels: {suite: sched}
images:
  - match: "*"
    pullSeconds: 1
"#);
    let svc = Service::start("t-sched");
    let id = create_schedule(
        &svc,
        json!({
            "name": "every minute",
            "cronExpr": "* * * * *",
            "overlapPolicy": "allow",
            "taskConfig": {"images": ["nginx:1.25"], "nodeSelector": {"suite": "sched"}}
        }),
    )
    .await;

    let r = http()
        .post(format!("{}/api/v1/scheduled-tasks/{id}/trigger", svc.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["status"], "success");
    let task_id = answer["taskId"].as_str().unwrap().to_owned();

    let run = wait_execution(&svc, &id, Duration::from_secs(120), |e| {
        e.trigger == ExecutionTrigger::Manual && e.status != ExecutionStatus::Running
    })
    .await;
    assert_eq!(run.status, ExecutionStatus::Success, "{run:#?}");
    assert_eq!(run.task_id, task_id);
    assert!(run.finished_at.is_some() && run.duration_seconds.is_some());
    let task = svc.wait_end(&task_id, Duration::from_secs(10)).await;
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.completed_nodes, 3);

    let fired = wait_execution(&svc, &id, FIRE_WAIT, |e| {
        e.trigger == ExecutionTrigger::Schedule
    })
    .await;
    assert_eq!(
        fired.triggered_at.timestamp() % 60,
        0,
        "fires on the minute: {fired:#?}"
    );
    assert!(!fired.task_id.is_empty(), "{fired:#?}");
    let (code, _) = svc.get(&fired.task_id).await;
    assert_eq!(code, 200, "its task exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_never_fires_a_time_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prewarm.db");
    let mut svc = Service::start_with("t-sched-crash", &db, &[]);
    // No node matches: each run's task fails at once, which keeps the test about fire times.
    let id = create_schedule(
        &svc,
        json!({
            "name": "every minute",
            "cronExpr": "* * * * *",
            "overlapPolicy": "allow",
            "taskConfig": {"images": ["nginx:1.25"], "nodeSelector": {"suite": "sched-none"}}
        }),
    )
    .await;
    let first = wait_execution(&svc, &id, FIRE_WAIT, |e| {
        e.trigger == ExecutionTrigger::Schedule
    })
    .await;
    svc.kill9();
    let svc = Service::start_with("t-sched-crash", &db, &[]);
    let later = wait_execution(&svc, &id, FIRE_WAIT, |e| {
        e.trigger == ExecutionTrigger::Schedule && e.triggered_at > first.triggered_at
    })
    .await;

    let all = executions(&svc, &id).await;
    let fired: Vec<&Execution> = all
        .iter()
        .filter(|e| e.trigger == ExecutionTrigger::Schedule)
        .collect();
    let times: BTreeSet<_> = fired.iter().map(|e| e.triggered_at).collect();
    assert_eq!(
        times.len(),
        fired.len(),
        "a fire time recorded twice: {all:#?}"
    );
    let tasks: BTreeSet<&str> = fired
        .iter()
        .filter(|e| !e.task_id.is_empty())
        .map(|e| e.task_id.as_str())
        .collect();
    let started = fired.iter().filter(|e| !e.task_id.is_empty()).count();
    assert_eq!(tasks.len(), started, "one task per fire: {all:#?}");
    assert!(later.triggered_at > first.triggered_at);
    // The restarted service knows the history from before the crash.
    assert!(all
        .iter()
        .any(|e| e.id == first.id && e.triggered_at == first.triggered_at));
}
