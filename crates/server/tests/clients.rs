//! The clients end to end against the real service (real kube-apiserver,
//! kube-sim nodes, the real `prewarm` binary): the CLI (`prewarm task …`),
//! the kubectl plugin through the real kubectl, the WebSocket and SSE
//! streams, and the Python and Go SDK suites.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use prewarm_api::{Task, TaskList, TaskStatus};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const LONG: Duration = Duration::from_secs(180);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_wait_exits_0_on_completion_and_1_with_the_failed_nodes() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: cliwait-
    count: 6
    labels: {suite: cliwait}
images:
  - match: "registry.example.com/missing/*"
    fail: ErrImagePull
    message: "manifest unknown"
  - match: "*"
    pullSeconds: 3
"#);
    let svc = Service::start("t-cliwait");

    let out = prewarm(
        &svc,
        &[
            "task",
            "create",
            "nginx:1.25",
            "redis:7",
            "--selector",
            "suite=cliwait",
            "--batch-size",
            "2",
            "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Status:   completed"), "{}", show(&out));
    assert!(
        stdout.contains("6 completed, 0 failed, 0 skipped of 6"),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("100.0%"), "{}", show(&out));
    // Not a terminal: plain progress lines on stderr, ending at 6/6.
    let stderr = text(&out.stderr);
    assert!(stderr.contains("6/6 nodes, completed"), "{}", show(&out));

    let out = prewarm(
        &svc,
        &[
            "task",
            "create",
            "registry.example.com/missing/app:1",
            "--node",
            "cliwait-1",
            "--node",
            "cliwait-4",
            "--wait",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Status:   failed"), "{}", show(&out));
    assert!(stdout.contains("Failed nodes:"), "{}", show(&out));
    for node in ["cliwait-1", "cliwait-4"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(node) && l.contains("ErrImagePull")),
            "{node} not listed as failed:\n{}",
            show(&out)
        );
    }

    // Every (node, image) result, paged by the CLI: here one failed pair per node.
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Task:"))
        .map(str::trim)
        .expect("task id in the output")
        .to_owned();
    let out = prewarm(
        &svc,
        &[
            "task", "nodes", &id, "--status", "failed", "--all", "-o", "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["total"], 2, "{page}");
    let nodes: Vec<&str> = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["nodeName"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["cliwait-1", "cliwait-4"]);
    let out = prewarm(&svc, &["task", "nodes", &id, "--limit", "1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let table = text(&out.stdout);
    assert!(table.starts_with("NODE"), "{}", show(&out));
    assert!(
        table.contains("(1 of 2 results, offset 0)"),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_outputs_parse_and_errors_have_exit_codes() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: cliout-
    count: 3
    labels: {suite: cliout}
images:
  - match: "slow/*"
    pullSeconds: 600
"#);
    let svc = Service::start("t-cliout");

    let out = prewarm(
        &svc,
        &[
            "task",
            "create",
            "nginx:1.25",
            "--selector",
            "suite=cliout",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let created: Value = serde_json::from_slice(&out.stdout).expect("create -o json");
    let id = created["taskId"].as_str().unwrap().to_owned();
    assert_eq!(created["message"], "Task created successfully");
    svc.wait_end(&id, LONG).await;

    let out = prewarm(&svc, &["task", "get", &id, "-o", "json"]).await;
    let task: Task = serde_json::from_slice(&out.stdout).expect("get -o json is a task view");
    assert_eq!(task.status, TaskStatus::Completed);
    let out = prewarm(&svc, &["task", "get", &id, "-o", "yaml"]).await;
    let yaml: Value = serde_saphyr::from_slice(&out.stdout).expect("get -o yaml");
    assert_eq!(yaml["taskId"], id.as_str());

    let out = prewarm(
        &svc,
        &["task", "list", "--status", "completed", "-o", "json"],
    )
    .await;
    let list: TaskList = serde_json::from_slice(&out.stdout).expect("list -o json");
    assert!(list.tasks.iter().any(|t| t.task_id == id));

    let out = prewarm(&svc, &["task", "list"]).await;
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "STATUS", "NODES", "FAILED", "PROGRESS", "IMAGES", "CREATED"]
    );
    let row: Vec<&str> = lines
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not in the table:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[1..5], ["completed", "3/3", "0", "100.0%"]);

    // Cancel from elsewhere while `watch` follows: exit 3.
    let slow = svc
        .create(json!({"images": ["slow/app:1"], "nodeSelector": {"suite": "cliout"}}))
        .await;
    let watcher = {
        let url = svc.url.clone();
        let slow = slow.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_prewarm"))
                .args(["task", "watch", &slow, "--server", &url])
                .output()
                .unwrap()
        })
    };
    svc.wait_until(&slow, LONG, |t| t.status == TaskStatus::Running)
        .await;
    let out = prewarm(&svc, &["task", "cancel", &slow]).await;
    assert_eq!(text(&out.stdout).trim(), format!("task {slow} cancelled"));
    let out = watcher.await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    let out = prewarm(&svc, &["task", "cancel", &slow]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("Task already cancelled: task")
            && text(&out.stderr).contains("(HTTP 409)"),
        "{}",
        show(&out)
    );
    let out = prewarm(&svc, &["task", "create", "nginx::bad"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("Validation failed: images[0]"),
        "{}",
        show(&out)
    );
    let out = prewarm(&svc, &["task", "create", "--selector", "nokey"]).await;
    assert_eq!(out.status.code(), Some(2), "usage error: {}", show(&out));
    let out = prewarm(&svc, &["task", "list", "--server", "http://127.0.0.1:1"]).await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert!(text(&out.stderr).contains("cannot reach the prewarm server"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prewarm_works_through_the_real_kubectl() {
    let _sim = sim(r#"
nodes:
  - namePrefix: kctl-
    count: 2
    labels: {suite: kctl}
"#);
    let svc = Service::start("t-kctl");
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "kctl"}}))
        .await;
    svc.wait_end(&id, LONG).await;

    // Installed as a copy or link named kubectl-prewarm, the binary is the plugin.
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_prewarm"),
        dir.path().join("kubectl-prewarm"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = kubectl_binary();
    let run = |args: &[&str]| {
        Command::new(&kubectl)
            .args(args)
            .env("PATH", &path)
            .env("PREWARM_SERVER", &svc.url)
            .env("KUBECONFIG", cluster().kubeconfig_path())
            .output()
            .expect("run kubectl")
    };
    let out = run(&["plugin", "list"]);
    assert!(
        text(&out.stdout).contains("kubectl-prewarm"),
        "{}",
        show(&out)
    );
    let out = run(&["prewarm", "task", "list", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let list: TaskList = serde_json::from_slice(&out.stdout).expect("plugin list -o json");
    assert_eq!(list.tasks[0].task_id, id);
    let out = run(&["prewarm", "task", "get", &id]);
    assert!(
        text(&out.stdout).contains("Status:   completed"),
        "{}",
        show(&out)
    );
    let out = run(&["prewarm", "completions", "bash"]);
    assert!(
        text(&out.stdout).contains("kubectl-prewarm"),
        "{}",
        show(&out)
    );
}

async fn current(svc: &Service, id: &str) -> Task {
    let (code, v) = svc.get(id).await;
    assert_eq!(code, 200, "{v}");
    serde_json::from_value(v).unwrap()
}

fn kubectl_binary() -> PathBuf {
    let system = Path::new("/usr/bin/kubectl");
    if system.exists() {
        return system.to_owned();
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    cache.join("prewarm/kubectl/usr/bin/kubectl")
}

/// Every message of a task's WebSocket until the server closes it.
async fn ws_messages(base: &str, id: &str) -> (Vec<Value>, Option<CloseCode>) {
    let url = format!(
        "{}/api/v1/tasks/{id}/watch",
        base.replace("http://", "ws://")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("connect");
    let mut messages = Vec::new();
    let mut close = None;
    while let Some(msg) = tokio::time::timeout(LONG, ws.next())
        .await
        .expect("silent socket")
    {
        match msg.expect("socket error") {
            Message::Text(t) => messages.push(serde_json::from_str(&t).unwrap()),
            Message::Close(frame) => {
                close = frame.map(|f| f.code);
                let _ = ws.send(Message::Close(None)).await;
                break;
            }
            _ => {}
        }
    }
    (messages, close)
}

/// SSE events of a stream: (event, id, data).
async fn sse_events(
    base: &str,
    id: &str,
    last_event_id: Option<&str>,
    max: usize,
) -> (u16, Vec<(String, u64, Value)>) {
    let mut req = http()
        .get(format!("{base}/api/v1/tasks/{id}/events"))
        .timeout(LONG);
    if let Some(last) = last_event_id {
        req = req.header("Last-Event-ID", last);
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    let mut events = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    'read: while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut eid, mut data) = (String::new(), 0, Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    eid = v.parse().unwrap();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            if !event.is_empty() {
                events.push((event, eid, data));
                if events.len() >= max {
                    break 'read;
                }
            }
        }
    }
    (code, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_sse_stream_progress_then_finish() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: strm-
    count: 20
    labels: {suite: strm}
images:
  - match: "*"
    pullSeconds: 5
"#);
    let svc = Service::start("t-strm");
    let body = json!({"images": ["nginx:1.25"], "batchSize": 4, "nodeSelector": {"suite": "strm"}});
    let id = svc.create(body).await;
    let (ws, sse, partial) = tokio::join!(
        ws_messages(&svc.url, &id),
        sse_events(&svc.url, &id, None, usize::MAX),
        sse_events(&svc.url, &id, None, 2),
    );

    let (messages, close) = ws;
    assert_eq!(close, Some(CloseCode::Normal));
    let (last, progress) = messages.split_last().expect("messages");
    assert_eq!(last["type"], "finished");
    assert_eq!(last["data"]["status"], "completed");
    assert_eq!(last["data"]["progress"]["completedNodes"], 20);
    assert!(progress.len() >= 3, "progress per change: {messages:#?}");
    let mut done = 0;
    for m in progress {
        assert_eq!(m["type"], "progress");
        assert!(m["data"]["status"] == "pending" || m["data"]["status"] == "running");
        assert!(m["data"]["totalBatches"].is_u64(), "progress fields: {m}");
        let now = m["data"]["completedNodes"].as_u64().unwrap();
        assert!(now >= done, "progress went backwards");
        done = now;
    }

    let (code, events) = sse;
    assert_eq!(code, 200);
    let (last, progress) = events.split_last().unwrap();
    assert_eq!(last.0, "finished");
    assert_eq!(last.2["status"], "completed");
    assert!(progress.len() >= 3 && progress.iter().all(|e| e.0 == "progress"));
    let ids: Vec<u64> = events.iter().map(|e| e.1).collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "ids {ids:?}");
    assert!(ids.windows(2).any(|w| w[0] < w[1]), "ids {ids:?}");

    // Resume: a client that had the first two events gets only newer ones.
    let (_, first_two) = partial;
    let seen = first_two[1].1;
    let (code, resumed) = sse_events(&svc.url, &id, Some(&seen.to_string()), usize::MAX).await;
    assert_eq!(code, 200);
    assert!(resumed.iter().all(|e| e.1 > seen), "replayed: {resumed:?}");
    assert_eq!(resumed.last().unwrap().0, "finished");
    // A client that has the end is told there is nothing more.
    let (code, rest) = sse_events(&svc.url, &id, Some(&last.1.to_string()), usize::MAX).await;
    assert_eq!((code, rest.len()), (204, 0));

    // An ended task: one finished message each.
    let (messages, close) = ws_messages(&svc.url, &id).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["type"], "finished");
    assert_eq!(close, Some(CloseCode::Normal));
    let (_, events) = sse_events(&svc.url, &id, None, usize::MAX).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_answer_404_for_unknown_tasks_before_upgrading() {
    let svc = Service::start("t-strm404");
    let r = http()
        .get(format!(
            "{}/api/v1/tasks/task-20240101-nosuch/events",
            svc.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "Task not found");
    let url = format!(
        "{}/api/v1/tasks/task-20240101-nosuch/watch",
        svc.url.replace("http://", "ws://")
    );
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 404);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["taskId"], "task-20240101-nosuch");
        }
        other => panic!("expected a 404 before upgrading, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pending_task_ends_its_streams() {
    let _sim = sim(r#"
nodes:
  - namePrefix: pend-
    count: 1
    labels: {suite: pend}
images:
  - match: "slow/*"
    pullSeconds: 600
"#);
    // One node may pull at a time: while the slow task holds it, the next one stays pending.
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_with(
        "t-pend",
        &dir.path().join("prewarm.db"),
        &["--max-concurrent-nodes", "1"],
    );
    let selector = json!({"suite": "pend"});
    let busy = svc
        .create(json!({"images": ["slow/app:1"], "nodeSelector": selector}))
        .await;
    svc.wait_until(&busy, LONG, |t| t.status == TaskStatus::Running)
        .await;
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": selector}))
        .await;
    let streams = {
        let url = svc.url.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::join!(
                ws_messages(&url, &id),
                sse_events(&url, &id, None, usize::MAX)
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&current(&svc, &id).await), "pending");
    let (code, _) = svc.cancel(&id).await;
    assert_eq!(code, 200);
    let ((messages, close), (_, events)) = tokio::time::timeout(Duration::from_secs(30), streams)
        .await
        .expect("streams end when a pending task is cancelled")
        .unwrap();
    assert_eq!(messages.first().unwrap()["data"]["status"], "pending");
    assert_eq!(messages.last().unwrap()["type"], "finished");
    assert_eq!(messages.last().unwrap()["data"]["status"], "cancelled");
    assert_eq!(close, Some(CloseCode::Normal));
    assert_eq!(events.last().unwrap().0, "finished");
    assert_eq!(events.last().unwrap().2["status"], "cancelled");
    let _ = svc.cancel(&busy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_suites_pass_against_the_live_service() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: sdk-
    count: 8
    labels: {suite: sdk}
images:
  - match: "registry.example.com/missing/*"
    fail: ErrImagePull
    message: "manifest unknown"
  - match: "slow/*"
    pullSeconds: 100
  - match: "*"
    pullSeconds: 3
"#);
    // Pulls are serialized per node and a deleted pod's pull still runs to its
    // end (as on a kubelet), so the suites' cancelled slow pulls delay later
    // tests' pulls on the same nodes: keep them short (10 s at timeScale 0.1).
    let svc = Service::start("t-sdk");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let url = svc.url.clone();
    let (python, go) = tokio::task::spawn_blocking(move || {
        let python = Command::new("python3")
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "clients/python",
            ])
            .current_dir(&repo)
            .env("PREWARM_SERVER", &url)
            .env("PREWARM_TEST_SELECTOR", "suite=sdk")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python3 runs (scripts/setup.sh installs pytest and requests)");
        let path = format!(
            "/usr/lib/go-1.19/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        let go = Command::new("go")
            .args(["test", "-count=1", "-v", "./..."])
            .current_dir(repo.join("clients/go"))
            .env("PATH", path)
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env("PREWARM_SERVER", &url)
            .env("PREWARM_TEST_SELECTOR", "suite=sdk")
            .output()
            .expect("go runs (golang-1.19-go from scripts/setup.sh)");
        (python, go)
    })
    .await
    .unwrap();
    assert!(python.status.success(), "pytest failed:\n{}", show(&python));
    assert!(go.status.success(), "go test failed:\n{}", show(&go));
    // The suites skip their live parts only without a server: here nothing may be skipped.
    assert!(
        !text(&python.stdout).contains("skipped"),
        "{}",
        show(&python)
    );
    assert!(!text(&go.stdout).contains("--- SKIP"), "{}", show(&go));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_end_when_the_service_stops() {
    let _sim = sim(r#"
nodes:
  - namePrefix: stop-
    count: 1
    labels: {suite: stop}
images:
  - match: "slow/*"
    pullSeconds: 600
"#);
    let svc = Service::start("t-stop");
    let id = svc
        .create(json!({"images": ["slow/app:1"], "nodeSelector": {"suite": "stop"}}))
        .await;
    svc.wait_until(&id, LONG, |t| t.status == TaskStatus::Running)
        .await;
    let url = svc.url.clone();
    let (sse, ws) = {
        let (u1, u2, i1, i2) = (url.clone(), url.clone(), id.clone(), id.clone());
        (
            tokio::spawn(async move { sse_events(&u1, &i1, None, usize::MAX).await }),
            tokio::spawn(async move { ws_messages(&u2, &i2).await }),
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Drop sends SIGTERM and waits up to 10 s before killing: the streams must
    // not hold the drain open until then.
    let stopping = std::time::Instant::now();
    tokio::task::spawn_blocking(move || drop(svc))
        .await
        .unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "shutdown waited {:?} on open streams",
        stopping.elapsed()
    );
    let (_, events) = sse.await.unwrap();
    assert!(events.iter().all(|e| e.0 == "progress"), "{events:?}");
    let (messages, close) = ws.await.unwrap();
    assert!(messages.iter().all(|m| m["type"] == "progress"));
    assert_eq!(close, Some(CloseCode::Away));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_manages_scheduled_tasks() {
    let _sim = sim(r#"
timeScale: 0.1
nodes:
  - namePrefix: clisched-
    count: 3
    labels: {suite: clisched}
"#);
    let svc = Service::start("t-clisched");

    let out = prewarm(
        &svc,
        &[
            "schedule",
            "create",
            "nginx:1.25",
            "--name",
            "nightly",
            "--cron",
            "0 2 * * *",
            "--overlap-policy",
            "queue",
            "--selector",
            "suite=clisched",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["overlapPolicy"], "queue");
    assert_eq!(created["taskConfig"]["nodeSelector"]["suite"], "clisched");

    let out = prewarm(
        &svc,
        &[
            "schedule",
            "update",
            &sid,
            "--cron",
            "@hourly",
            "--batch-size",
            "2",
            "-o",
            "json",
        ],
    )
    .await;
    let updated: Value = serde_json::from_slice(&out.stdout).expect("update -o json");
    assert_eq!(updated["cronExpr"], "@hourly");
    assert_eq!(updated["taskConfig"]["batchSize"], 2);
    assert_eq!(updated["taskConfig"]["images"], json!(["nginx:1.25"]));

    let out = prewarm(&svc, &["schedule", "disable", &sid]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = prewarm(&svc, &["schedule", "list"]).await;
    let row = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&sid))
        .unwrap_or_else(|| panic!("{}", show(&out)))
        .split_whitespace()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert_eq!(row[1..5], ["nightly", "@hourly", "false", "queue"]);
    let out = prewarm(&svc, &["schedule", "enable", &sid]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let out = prewarm(&svc, &["schedule", "trigger", &sid, "--wait", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let task: Task = serde_json::from_slice(&out.stdout).expect("the triggered task's final view");
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.progress.total_nodes, 3);

    let out = prewarm(&svc, &["schedule", "executions", &sid, "-o", "json"]).await;
    let executions: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(executions["executions"][0]["taskId"], task.task_id.as_str());
    assert_eq!(executions["executions"][0]["trigger"], "manual");
    let out = prewarm(&svc, &["schedule", "executions", &sid, "1"]).await;
    assert!(text(&out.stdout).contains(&task.task_id), "{}", show(&out));

    let out = prewarm(
        &svc,
        &[
            "schedule", "create", "nginx", "--name", "x", "--cron", "bad",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("cronExpr"), "{}", show(&out));
    let out = prewarm(&svc, &["schedule", "delete", &sid]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = prewarm(&svc, &["schedule", "get", &sid]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stderr).contains("(HTTP 404)"), "{}", show(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_task_cancelled_by_its_schedule_timeout_ends_its_streams() {
    let _sim = sim(r#"
nodes:
  - namePrefix: schedpend-
    count: 1
    labels: {suite: schedpend}
images:
  - match: "slow/*"
    pullSeconds: 600
"#);
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start_with(
        "t-schedpend",
        &dir.path().join("prewarm.db"),
        &["--max-concurrent-nodes", "1"],
    );
    let selector = json!({"suite": "schedpend"});
    let busy = svc
        .create(json!({"images": ["slow/app:1"], "nodeSelector": selector}))
        .await;
    svc.wait_until(&busy, LONG, |t| t.status == TaskStatus::Running)
        .await;
    let r = http()
        .post(format!("{}/api/v1/scheduled-tasks", svc.url))
        .json(&json!({
            "name": "pending-timeout", "cronExpr": "0 3 * * *", "timeoutSeconds": 2,
            "taskConfig": {"images": ["nginx:1.25"], "nodeSelector": selector}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let sid = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http()
        .post(format!("{}/api/v1/scheduled-tasks/{sid}/trigger", svc.url))
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, events) = tokio::time::timeout(
        Duration::from_secs(60),
        sse_events(&svc.url, &id, None, usize::MAX),
    )
    .await
    .expect("the stream ends when the schedule's timeout cancels the pending task");
    assert_eq!(events.first().unwrap().2["status"], "pending");
    assert_eq!(events.last().unwrap().0, "finished");
    assert_eq!(events.last().unwrap().2["status"], "cancelled");
    let _ = svc.cancel(&busy).await;
}
