//! The service end to end: real kube-apiserver + controller-manager, kube-sim
//! nodes, the real `prewarm` binary, and only HTTP from the test's side.
//! Tests are isolated by namespace (their Jobs) and by node labels (their nodes).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_three_images_complete_and_clean_up() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: full-
    count: 20
    labels: {suite: full}
images:
  - match: "*"
    pullSeconds: 2
"#);
    let svc = Service::start("t-full");
    let jobs = JobLog::watch("t-full").await;
    let pods = JobLog::watch_pods("t-full").await;
    let id = svc
        .create(json!({
            "images": ["nginx:1.25", "redis:7", "registry.example.com:5000/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
            "batchSize": 5,
            "nodeSelector": {"suite": "full"}
        }))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.total_nodes, 20);
    assert_eq!(task.progress.completed_nodes, 20);
    assert_eq!(task.progress.percentage, 100.0);
    assert_eq!(task.progress.total_batches, 4);
    for img in &task.image_statuses {
        assert_eq!(img.completed_nodes, 20, "{img:?}");
        assert_eq!(img.digests.len(), 1, "one digest per image: {img:?}");
        assert!(img.digests[0].starts_with("sha256:"));
    }
    assert!(task.started_at.is_some() && task.finished_at.is_some());
    assert!(task.failed_node_details.is_empty());
    wait_no_jobs("t-full", Duration::from_secs(30)).await;
    assert_eq!(jobs.created(), 20, "one Job per node");
    assert!(
        pods.max_pulling() <= 5,
        "window of 5, saw {}",
        pods.max_pulling()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_reported_per_node_and_retries_recover() {
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: fail-
    count: 5
    labels: {suite: fail}
images:
  - match: "registry.example.com/missing/*"
    fail: ErrImagePull
    message: "manifest unknown"
  - match: "flaky/*"
    failTimes: 2
  - match: "busybox*"
    nodes: "fail-3"
    fail: ImagePullBackOff
  - match: "*"
    pullSeconds: 1
"#);
    let svc = Service::start("t-fail");
    let sel = json!({"suite": "fail"});

    let missing = svc
        .create(json!({"images": ["registry.example.com/missing/app:1"], "nodeSelector": sel, "maxRetries": 3, "retryDelay": 0}))
        .await;
    let task = svc.wait_end(&missing, LONG).await;
    assert_eq!(status(&task), "failed");
    assert_eq!(task.progress.failed_nodes, 5);
    assert_eq!(task.failed_node_details.len(), 5);
    for d in &task.failed_node_details {
        assert_eq!(d.image, "registry.example.com/missing/app:1");
        assert_eq!(d.reason, "ErrImagePull");
        assert!(d.message.contains("manifest unknown"), "{d:?}");
    }

    let one_node = svc
        .create(json!({"images": ["busybox:1.36"], "nodeSelector": sel}))
        .await;
    let task = svc.wait_end(&one_node, LONG).await;
    assert_eq!(status(&task), "failed");
    assert_eq!(task.progress.completed_nodes, 4);
    let failed: Vec<&str> = task
        .failed_node_details
        .iter()
        .map(|d| d.node_name.as_str())
        .collect();
    assert_eq!(failed, ["fail-3"]);
    assert!(
        ["ErrImagePull", "ImagePullBackOff"].contains(&task.failed_node_details[0].reason.as_str())
    );

    let retried = svc
        .create(json!({"images": ["flaky/app:1"], "nodeNames": ["fail-0", "fail-1"], "maxRetries": 3, "retryDelay": 0}))
        .await;
    let task = svc.wait_end(&retried, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 2);

    let no_retry = svc
        .create(json!({"images": ["flaky/app:2"], "nodeNames": ["fail-0"], "maxRetries": 0}))
        .await;
    let task = svc.wait_end(&no_retry, LONG).await;
    assert_eq!(status(&task), "failed");
    assert_eq!(task.failed_node_details[0].node_name, "fail-0");
    wait_no_jobs("t-fail", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_bounds_the_jobs_alive() {
    let _sim = sim(r#"
timeScale: 1.0
nodes:
  - namePrefix: win-
    count: 20
    labels: {suite: win}
images:
  - match: "*"
    pullSeconds: 0.5
"#);
    let svc = Service::start("t-win");
    let jobs = JobLog::watch("t-win").await;
    let pods = JobLog::watch_pods("t-win").await;
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "batchSize": 3, "nodeSelector": {"suite": "win"}}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed");
    assert_eq!(jobs.created(), 20);
    assert_eq!(
        pods.max_pulling(),
        3,
        "the window is full but never exceeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run_stops_and_cleans_up() {
    let _sim = sim(r#"
timeScale: 1.0
nodes:
  - namePrefix: cxl-
    count: 20
    labels: {suite: cxl}
images:
  - match: "*"
    pullSeconds: 30
"#);
    let svc = Service::start("t-cxl");
    let jobs = JobLog::watch("t-cxl").await;
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "batchSize": 2, "nodeSelector": {"suite": "cxl"}}))
        .await;
    svc.wait_until(&id, Duration::from_secs(60), |t| {
        t.progress.current_batch >= 1
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while jobs.alive() < 2 {
        assert!(std::time::Instant::now() < deadline, "Jobs never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = svc.cancel(&id).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["taskId"], id.as_str());
    wait_no_jobs("t-cxl", Duration::from_secs(30)).await;
    let created = jobs.created();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(jobs.created(), created, "no new Jobs after cancel");
    assert_eq!(created, 2);
    let (_, v) = svc.get(&id).await;
    assert_eq!(v["status"], "cancelled");
    assert!(v["finishedAt"].is_string());

    let (code, body) = svc.cancel(&id).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert!(body["error"].as_str().unwrap().contains("already"));
    let (code, body) = svc.cancel("task-20240101-nosuch").await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = svc.get("task-20240101-nosuch").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["taskId"], "task-20240101-nosuch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_respects_selectors_readiness_taints_and_preloads() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: sel-a-
    count: 3
    labels: {suite: sel, pool: a}
  - namePrefix: sel-b-
    count: 2
    labels: {suite: sel, pool: b}
  - names: [sel-cordoned]
    labels: {suite: sel, pool: a}
    unschedulable: true
  - names: [sel-down]
    labels: {suite: sel, pool: a}
    ready: false
  - names: [sel-tainted]
    labels: {suite: sel, pool: a}
    taints: [{key: dedicated, value: "gpu", effect: NoSchedule}]
images:
  - match: "*"
    pullSeconds: 1
preloaded:
  - image: nginx:1.25
    nodes: "sel-a-0"
"#);
    let svc = Service::start("t-sel");
    let jobs = JobLog::watch("t-sel").await;
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "sel", "pool": "a"}, "tolerateTaints": false}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed");
    assert_eq!(
        task.progress.total_nodes, 3,
        "only Ready, uncordoned, untainted pool-a nodes"
    );
    assert_eq!(task.progress.completed_nodes, 3);
    let per_node = jobs.per_node();
    assert!(
        !per_node.contains_key("sel-a-0"),
        "preloaded node needs no Job: {per_node:?}"
    );
    assert_eq!(per_node.len(), 2);

    let id = svc
        .create(json!({"images": ["redis:7"], "nodeSelector": {"suite": "sel", "pool": "a"}}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(
        task.progress.total_nodes, 4,
        "tainted node included by default"
    );

    let id = svc
        .create(json!({"images": ["redis:7"], "nodeSelector": {"suite": "sel", "pool": "nope"}}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "failed");
    assert_eq!(task.reason.as_deref(), Some("NoMatchingNodes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deleted_mid_task_is_skipped() {
    let _sim = sim(r#"
timeScale: 1.0
nodes:
  - namePrefix: gone-
    count: 4
    labels: {suite: gone}
images:
  - match: "*"
    nodes: "gone-3"
    pullSeconds: 60
  - match: "*"
    pullSeconds: 1
events:
  - after: 6s
    deleteNodes: "gone-3"
"#);
    let svc = Service::start("t-gone");
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "gone"}}))
        .await;
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.skipped_nodes, 1);
    assert_eq!(task.progress.completed_nodes, 3);
    assert_eq!(task.progress.percentage, 100.0);
    assert_eq!(task.skipped_node_details[0].node_name, "gone-3");
    assert_eq!(task.skipped_node_details[0].reason, "NodeGone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_resumes_without_duplicate_jobs() {
    let _sim = sim(r#"
timeScale: 1.0
nodes:
  - namePrefix: crash-
    count: 20
    labels: {suite: crash}
images:
  - match: "*"
    pullSeconds: 1.5
"#);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prewarm.db");
    let jobs = JobLog::watch("t-crash").await;
    let mut svc = Service::start_with("t-crash", &db, &[]);
    let id = svc
        .create(json!({"images": ["nginx:1.25", "redis:7"], "batchSize": 4, "nodeSelector": {"suite": "crash"}}))
        .await;
    svc.wait_until(&id, Duration::from_secs(120), |t| {
        t.progress.completed_nodes >= 5
    })
    .await;
    svc.kill9();
    let svc = Service::start_with("t-crash", &db, &[]);
    let task = svc.wait_end(&id, LONG).await;
    assert_eq!(status(&task), "completed", "{task:#?}");
    assert_eq!(task.progress.completed_nodes, 20);
    assert_eq!(task.progress.failed_nodes, 0);
    for img in &task.image_statuses {
        assert_eq!(img.completed_nodes, 20);
    }
    let per_node = jobs.per_node();
    assert_eq!(per_node.len(), 20);
    for (node, names) in &per_node {
        assert_eq!(names.len(), 1, "node {node} got several Jobs: {names:?}");
    }
    wait_no_jobs("t-crash", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_curl_and_jq_loop_works_unchanged() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: curl-
    count: 10
    labels: {suite: curl}
images:
  - match: "*"
    pullSeconds: 2
"#);
    let svc = Service::start("t-curl");
    let script = format!(
        r#"
set -e
API={url}
TASK_ID=$(curl -s -X POST $API/api/v1/tasks \
  -H "Content-Type: application/json" \
  -d '{{"images": ["nginx:latest", "redis:7"], "batchSize": 10, "nodeSelector": {{"suite": "curl"}}}}' \
  | jq -r .taskId)
echo "task: $TASK_ID"
for i in $(seq 1 600); do
  STATUS=$(curl -s $API/api/v1/tasks/$TASK_ID | jq -r .status)
  PROGRESS=$(curl -s $API/api/v1/tasks/$TASK_ID | jq -r .progress.percentage)
  echo "status: $STATUS, progress: $PROGRESS%"
  if [ "$STATUS" = "completed" ]; then
    echo "done $PROGRESS"
    exit 0
  elif [ "$STATUS" = "failed" ]; then
    exit 1
  fi
  sleep 0.5
done
exit 2
"#,
        url = svc.url
    );
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("done 100"), "{stdout}");
    assert!(
        stdout.lines().next().unwrap().starts_with("task: task-"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_store_nothing() {
    let svc = Service::start("t-bad");
    let cases = [
        (json!({"images": ["nginx::latest"]}), "images[0]"),
        (json!({"images": ["nginx", "nginx"]}), "images[1]"),
        (json!({"images": []}), "images"),
        (
            json!({"images": ["nginx"], "batchSize": "ten"}),
            "batchSize",
        ),
        (json!({"images": ["nginx"], "batchsize": 3}), "batchsize"),
        (json!({"images": ["Nginx"]}), "images[0]"),
        (
            json!({"images": ["nginx"], "retryStrategy": "random"}),
            "retryStrategy",
        ),
    ];
    for (body, field) in cases {
        let (code, v) = svc.post(body.clone()).await;
        assert_eq!(code, 400, "{body} -> {v}");
        assert!(v["error"].is_string(), "{v}");
        assert!(
            v["details"].as_str().unwrap_or("").contains(field),
            "{body} -> {v}"
        );
    }
    let r = http()
        .post(format!("{}/api/v1/tasks", svc.url))
        .header("content-type", "application/json")
        .body("{\"images\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let big = format!("{{\"images\": [\"{}\"]}}", "a".repeat(2 << 20));
    let r = http()
        .post(format!("{}/api/v1/tasks", svc.url))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: serde_json::Value = http()
        .get(format!("{}/api/v1/tasks", svc.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 0, "nothing stored: {v}");
    for q in ["limit=0", "limit=101", "offset=-1", "status=done"] {
        let r = http()
            .get(format!("{}/api/v1/tasks?{q}", svc.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{q}");
    }
}
