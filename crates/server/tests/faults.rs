//! The engine under a real cluster's faults: the service talks to the real
//! API server through the fault proxy (throttled and failing creates, cut,
//! refused and expired watches, slow answers), or the API server itself is
//! stopped and started again; the store refuses every call at start, stored
//! tasks are edited invalid, the wall clock steps. Tasks still end with exact
//! counts and no node gets a second Job unless its first one really went
//! away.

mod common;

use std::time::Duration;

use common::fault_proxy::FaultProxy;
use common::redis_server::Redis;
use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const LONG: Duration = Duration::from_secs(180);

/// The service on a fresh database in `namespace`, reaching the API server
/// through a fault proxy of its own (no faults until the test sets them).
async fn behind_proxy(namespace: &str, extra: &[&str]) -> (FaultProxy, Service, tempfile::TempDir) {
    let proxy = FaultProxy::start(cluster().kubeconfig_path()).await;
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_against(
        proxy.kubeconfig(),
        namespace,
        &dir.path().join("prewarm.db"),
        extra,
    );
    (proxy, svc, dir)
}

/// Every node got exactly one Job.
fn one_job_per_node(jobs: &JobLog, nodes: usize) {
    let per_node = jobs.per_node();
    assert_eq!(per_node.len(), nodes, "{per_node:#?}");
    for (node, names) in &per_node {
        assert_eq!(names.len(), 1, "{node} got {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_failing_creates_complete_with_exact_counts_and_one_job_per_node() {
    let _sim = sim(r#"
nodes:
  - namePrefix: fx-throttle-
    count: 12
    labels: {suite: fx-throttle}
images:
  - match: "*"
    pullSeconds: 1
"#);
    let (proxy, svc, _dir) = behind_proxy("t-fx-throttle", &[]).await;
    proxy.throttle_creates(6, Duration::from_secs(2));
    proxy.fail_creates(4);
    proxy.delay(Duration::from_millis(30));
    let jobs = JobLog::watch("t-fx-throttle").await;
    let id = svc
        .create(json!({
            "images": ["nginx:1.25", "redis:7"],
            "batchSize": 4,
            "nodeSelector": {"suite": "fx-throttle"}
        }))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.total_nodes, 12);
    assert_eq!(task.progress.completed_nodes, 12);
    assert_eq!(task.progress.failed_nodes, 0);
    for img in &task.image_statuses {
        assert_eq!(img.completed_nodes, 12, "{img:?}");
    }
    assert_eq!(proxy.throttled(), 6, "the 429s were answered");
    assert_eq!(proxy.failed(), 4, "the 500s were answered");
    assert_eq!(
        proxy.creates_forwarded(),
        12,
        "one accepted create per node"
    );
    wait_no_jobs("t-fx-throttle", Duration::from_secs(60)).await;
    one_job_per_node(&jobs, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_cut_again_and_again_still_end_the_task_exactly() {
    let _sim = sim(r#"
nodes:
  - namePrefix: fx-cut-
    count: 12
    labels: {suite: fx-cut}
images:
  - match: "*"
    pullSeconds: 2
"#);
    let (proxy, svc, _dir) = behind_proxy("t-fx-cut", &[]).await;
    let jobs = JobLog::watch("t-fx-cut").await;
    let id = svc
        .create(json!({
            "images": ["nginx:1.25"],
            "batchSize": 4,
            "nodeSelector": {"suite": "fx-cut"}
        }))
        .await;
    // Cut every watch the service holds, over and over, until the task ends.
    let task = loop {
        proxy.cut_watches();
        let (_, v) = svc.get(&id).await;
        let task: prewarm_api::Task = serde_json::from_value(v).unwrap();
        if task.status.is_terminal() {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    };
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 12);
    assert_eq!(task.progress.failed_nodes, 0);
    assert!(proxy.watches_cut() >= 3, "cut {}", proxy.watches_cut());
    wait_no_jobs("t-fx-cut", Duration::from_secs(60)).await;
    one_job_per_node(&jobs, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_deleted_by_hand_while_watches_are_down_are_resolved_without_the_pull_timeout() {
    let _sim = sim(r#"
nodes:
  - namePrefix: fx-gap-
    count: 4
    labels: {suite: fx-gap}
images:
  - match: "*"
    pullSeconds: 15
"#);
    let (proxy, svc, _dir) = behind_proxy("t-fx-gap", &["--pull-timeout", "900"]).await;
    let jobs = JobLog::watch("t-fx-gap").await;
    let id = svc
        .create(json!({
            "images": ["nginx:1.25"],
            "batchSize": 4,
            "maxRetries": 1,
            "retryDelay": 0,
            "nodeSelector": {"suite": "fx-gap"}
        }))
        .await;
    wait_for("4 Jobs pulling", LONG, async || jobs.alive() == 4).await;

    // The service's watches go down; meanwhile someone deletes every Job.
    proxy.refuse_watches(true);
    proxy.cut_watches();
    let api: Api<Job> = Api::namespaced(cluster().kube_client().await, "t-fx-gap");
    api.delete_collection(&DeleteParams::background(), &ListParams::default())
        .await
        .unwrap();
    wait_no_jobs("t-fx-gap", Duration::from_secs(60)).await;
    // The watches come back with their resourceVersion expired: a relist.
    proxy.expire_watches();
    proxy.refuse_watches(false);

    // Well within the 900 s pull timeout: a relist plus one resync period
    // (30 s), then the retry's own 15 s pull.
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 4);
    assert!(proxy.watches_refused() > 0 && proxy.watches_expired() > 0);
    let per_node = jobs.per_node();
    assert_eq!(per_node.len(), 4, "{per_node:#?}");
    for (node, names) in &per_node {
        assert_eq!(
            names.len(),
            2,
            "{node}: the deleted Job and its retry: {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_stopped_and_started_mid_task_the_task_completes() {
    // Its own control plane: the outage must not reach other tests.
    let own = LocalCluster::up();
    let _sim = Sim::start(
        own.kubeconfig_path(),
        r#"
nodes:
  - namePrefix: fx-outage-
    count: 10
    labels: {suite: fx-outage}
images:
  - match: "*"
    pullSeconds: 3
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_against(
        own.kubeconfig_path(),
        "t-fx-outage",
        &dir.path().join("prewarm.db"),
        &[],
    );
    let jobs = JobLog::watch_with(own.kube_client().await, "t-fx-outage").await;
    let id = svc
        .create(json!({
            "images": ["nginx:1.25"],
            "batchSize": 3,
            "nodeSelector": {"suite": "fx-outage"}
        }))
        .await;
    svc.wait_until(&id, LONG, |t| t.progress.completed_nodes >= 2)
        .await;
    let own = std::sync::Arc::new(own);
    let stop = own.clone();
    tokio::task::spawn_blocking(move || stop.stop_apiserver())
        .await
        .unwrap();
    wait_for("the service sees the outage", LONG, async || {
        http()
            .get(format!("{}/readyz", svc.url))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 503)
    })
    .await;
    let during = svc.get(&id).await.1;
    let start = own.clone();
    tokio::task::spawn_blocking(move || start.start_apiserver())
        .await
        .unwrap();
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(
        status(&task),
        "completed",
        "{task:#?}\nduring the outage: {during:#}"
    );
    assert_eq!(task.progress.completed_nodes, 10);
    assert_eq!(task.progress.failed_nodes, 0);
    wait_no_jobs_with(
        own.kube_client().await,
        "t-fx-outage",
        Duration::from_secs(60),
    )
    .await;
    one_job_per_node(&jobs, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_twenty_times_during_a_1000_node_task_loses_nothing_and_doubles_nothing() {
    let _sim = sim(r#"
nodes:
  - namePrefix: fx-kill-
    count: 1000
    labels: {suite: fx-kill}
images:
  - match: "*"
    pullSeconds: 8
"#);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prewarm.db");
    let jobs = JobLog::watch("t-fx-kill").await;
    let mut svc = Service::start_with("t-fx-kill", &db, &[]);
    let id = svc
        .create(json!({
            "images": ["nginx:1.25"],
            "batchSize": 100,
            "nodeSelector": {"suite": "fx-kill"}
        }))
        .await;
    // Random points of the run (the first ones fall on the task's start).
    svc.kill9_while_running(&id, 20, 2000, "FAULTS_KILL_SEED", &[])
        .await;
    let task = svc.wait_end(&id, Duration::from_secs(900)).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.total_nodes, 1000);
    assert_eq!(task.progress.completed_nodes, 1000);
    assert_eq!(task.progress.failed_nodes, 0);
    wait_no_jobs("t-fx-kill", Duration::from_secs(120)).await;
    let per_node = jobs.per_node();
    assert_eq!(per_node.len(), 1000);
    let doubled: Vec<_> = per_node.iter().filter(|(_, j)| j.len() > 1).collect();
    assert!(doubled.is_empty(), "nodes with several Jobs: {doubled:#?}");
}

/// `redis-cli` against `redis` as `user` (the default user has no password).
fn redis_cli(redis: &Redis, auth: &[&str], args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(redis.socket())
        .args(auth)
        .args(args)
        .output()
        .expect("redis-cli (scripts/setup.sh installs redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// How many times the service's log says `line`.
fn logged(svc: &Service, line: &str) -> usize {
    svc.log().matches(line).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_every_call_at_start_is_retried_and_the_task_taken_up() {
    let _sim = sim(r#"
nodes:
  - namePrefix: fx-store-
    count: 6
    labels: {suite: fx-store}
images:
  - match: "*"
    pullSeconds: 8
"#);
    let ns = "t-fx-store";
    let redis = Redis::start();
    let url = redis.url();
    let args = [
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--replica-name",
        "fx-store",
    ];
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    let jobs = JobLog::watch(ns).await;
    let mut first = Service::start_with(ns, &db, &args);
    let id = first
        .create(json!({"images": ["nginx:1.25"], "batchSize": 6, "nodeSelector": {"suite": "fx-store"}}))
        .await;
    wait_for("6 Jobs pulling", LONG, async || jobs.alive() == 6).await;
    first.kill9();

    // The store refuses every call of the next start: the service's (default)
    // user is switched off; the test keeps an admin user to switch it back.
    let admin = ["--user", "fx-admin", "--pass", "fx-admin-pass"];
    redis_cli(
        &redis,
        &[],
        &[
            "ACL",
            "SETUSER",
            "fx-admin",
            "on",
            ">fx-admin-pass",
            "~*",
            "&*",
            "+@all",
        ],
    );
    redis_cli(&redis, &admin, &["ACL", "SETUSER", "default", "off"]);
    let second = Service::start_with(ns, &db, &args);
    let retry = "could not load running tasks; will retry";
    wait_for("recovery failing twice", LONG, async || {
        logged(&second, retry) >= 2
    })
    .await;
    let (code, v) = second.get(&id).await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(jobs.alive(), 6, "no Job is deleted while the store fails");

    redis_cli(&redis, &admin, &["ACL", "SETUSER", "default", "on"]);
    let task = second.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 6);
    assert_eq!(task.progress.failed_nodes, 0);
    assert!(
        second.log().contains("resumed task"),
        "taken up by recovery"
    );
    wait_no_jobs(ns, Duration::from_secs(60)).await;
    // The Jobs of the first process were adopted, not created again.
    one_job_per_node(&jobs, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_tasks_edited_invalid_end_unrecoverable_and_their_jobs_go() {
    let _sim = sim(r#"
nodes:
  - namePrefix: fx-bad-
    count: 4
    labels: {suite: fx-bad}
images:
  - match: "*"
    pullSeconds: 600
"#);
    let ns = "t-fx-bad";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prewarm.db");
    let jobs = JobLog::watch(ns).await;
    let mut first = Service::start_with(ns, &db, &[]);
    let body = |image: &str| json!({"images": [image], "batchSize": 4, "nodeSelector": {"suite": "fx-bad"}});
    let invalid = first.create(body("nginx:1.25")).await;
    let undecodable = first.create(body("redis:7")).await;
    wait_for("8 Jobs pulling", LONG, async || jobs.alive() == 8).await;
    first.kill9();

    // One stored task no longer validates (batchSize 0), the other no
    // longer decodes as a task.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "UPDATE tasks SET body = json_set(body, '$.batchSize', 0) WHERE id = ?1",
            [&invalid],
        )
        .unwrap();
        conn.execute(
            "UPDATE tasks SET body = json_set(body, '$.images', 'not a list') WHERE id = ?1",
            [&undecodable],
        )
        .unwrap();
    }
    let second = Service::start_with(ns, &db, &[]);
    wait_for("both tasks ended", LONG, async || {
        let list = get_json(format!("{}/api/v1/tasks?status=failed", second.url)).await;
        list["total"] == 2
    })
    .await;
    let task = svc_task(&second, &invalid).await;
    assert_eq!(task["reason"], "Unrecoverable", "{task:#}");
    assert!(
        task["errorMessage"]
            .as_str()
            .unwrap()
            .contains("no longer validates"),
        "{task:#}"
    );
    assert!(task["finishedAt"].is_string(), "{task:#}");
    let task = svc_task(&second, &undecodable).await;
    assert_eq!(task["reason"], "Unrecoverable", "{task:#}");
    // Well before the 600 s pulls end: the Jobs were deleted.
    wait_no_jobs(ns, Duration::from_secs(60)).await;
    assert_eq!(jobs.created(), 8, "nothing was started again");
}

/// A task view as JSON (the stored form may no longer fit the typed view).
async fn svc_task(svc: &Service, id: &str) -> serde_json::Value {
    let (code, v) = svc.get(id).await;
    assert_eq!(code, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_steps_neither_time_out_pulls_nor_freeze_progress() {
    let _sim = sim(r#"
nodes:
  - namePrefix: fx-clock-
    count: 12
    labels: {suite: fx-clock}
images:
  - match: "*"
    pullSeconds: 4
"#);
    let ns = "t-fx-clock";
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "0").unwrap();
    let jobs = JobLog::watch(ns).await;
    let svc = Service::start_with(
        ns,
        &dir.path().join("prewarm.db"),
        &[
            "--clock-offset-file",
            offset.to_str().unwrap(),
            "--pull-timeout",
            "60",
        ],
    );
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "batchSize": 3, "nodeSelector": {"suite": "fx-clock"}}))
        .await;
    wait_for("3 Jobs pulling", LONG, async || jobs.alive() == 3).await;

    // Two hours forward with three pulls under way: measured on the wall
    // clock, each would be past the 60 s pull timeout at once.
    std::fs::write(&offset, "7200").unwrap();
    wait_for("the step forward", LONG, async || {
        svc.log().contains("offset_seconds=7200")
    })
    .await;
    let before = svc
        .wait_until(&id, LONG, |t| t.progress.completed_nodes >= 4)
        .await;
    assert_eq!(before.progress.failed_nodes, 0, "{before:#?}");

    // Four hours back: flushes and store checks timed on the wall clock
    // would wait until it caught up; progress must keep coming.
    std::fs::write(&offset, "-7200").unwrap();
    wait_for("the step back", LONG, async || {
        svc.log().contains("offset_seconds=-7200")
    })
    .await;
    let seen = svc.get(&id).await.1["progress"]["completedNodes"]
        .as_u64()
        .unwrap();
    svc.wait_until(&id, LONG, |t| u64::from(t.progress.completed_nodes) > seen)
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 12);
    assert_eq!(task.progress.failed_nodes, 0);
    // Timestamps follow the (stepped) wall clock, as users read it.
    let ended = task.finished_at.unwrap();
    let behind = chrono::Utc::now() - ended;
    assert!(
        behind > chrono::Duration::minutes(110),
        "finishedAt {ended}"
    );
    wait_no_jobs(ns, Duration::from_secs(60)).await;
    one_job_per_node(&jobs, 12);
}
