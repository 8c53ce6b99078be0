//! Several replicas: three `prewarm` processes sharing one real
//! `redis-server` on the local control plane with kube-sim. Every replica
//! serves the whole API and its streams; exactly one (the Lease holder) runs
//! the engine; killing it (-9) or stopping it (SIGTERM) hands the work over.
//! Also: Redis restarted mid-task, a second replica on SQLite refusing to
//! start, and Lease renewals failing (through the fault proxy): briefly (the
//! term goes on), and longer than the renew deadline (the term ends and the
//! next one, here or on another replica, finishes the task).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fault_proxy::FaultProxy;
use common::redis_server::Redis;
use common::*;
use futures::StreamExt;
use prewarm_api::TaskStatus;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(180);
/// Short Lease timings keep the failover test quick; production defaults are 15 s / 5 s.
const LEASE: &[&str] = &["--lease-duration", "4", "--lease-renew", "1"];
const LEASE_DURATION: Duration = Duration::from_secs(4);

/// One replica on `redis` in `namespace`, with the short [`LEASE`] unless
/// `extra` sets its own.
fn replica(redis: &Redis, namespace: &str, name: &str, extra: &[&str]) -> Service {
    replica_against(cluster().kubeconfig_path(), redis, namespace, name, extra)
}

/// [`replica`], reaching the API server through `kubeconfig` (a fault proxy's).
fn replica_against(
    kubeconfig: &Path,
    redis: &Redis,
    namespace: &str,
    name: &str,
    extra: &[&str],
) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut args = vec![
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--replica-name",
        name,
    ];
    if !extra.contains(&"--lease-duration") {
        args.extend_from_slice(LEASE);
    }
    args.extend_from_slice(extra);
    let svc = Service::start_against(kubeconfig, namespace, &dir.path().join("unused.db"), &args);
    // The log lives beside the (unused) database: keep the directory.
    std::mem::forget(dir);
    svc
}

async fn health(url: &str) -> Option<Value> {
    let r = http()
        .get(format!("{url}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// The leader every replica of `group` agrees on, once they do.
async fn agreed_leader(group: &[&Service], timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        for svc in group {
            seen.push(
                health(&svc.url)
                    .await
                    .and_then(|h| h["leader"].as_str().map(str::to_owned)),
            );
        }
        if let Some(Some(first)) = seen.first() {
            if seen.iter().all(|s| s.as_deref() == Some(first.as_str())) {
                return first.clone();
            }
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a replica of `group` reports that it leads itself; returns its index.
async fn new_leader(group: &[&Service], names: &[&str], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, svc) in group.iter().enumerate() {
            if let Some(h) = health(&svc.url).await {
                if h["leader"].as_str() == Some(names[i]) {
                    return i;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "nobody took over within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = http()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The SSE stream of a task on `url`: every `(event, id)` until it ends.
async fn sse_events(url: &str, id: &str, last_event_id: Option<&str>) -> Vec<(String, String)> {
    let mut req = http().get(format!("{url}/api/v1/tasks/{id}/events"));
    if let Some(last) = last_event_id {
        req = req.header("Last-Event-ID", last);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        if let (Some(event), Some(id)) = (field("event:"), field("id:")) {
            out.push((event, id));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_create_cancel_and_watch_anywhere_then_sigterm_hands_over() {
    // The production Lease timings: a handover that waited for the Lease to
    // expire would take up to 15 s, a released one takes about a second.
    let extra = [
        "--lease-duration",
        "15",
        "--lease-renew",
        "5",
        "--webhook-allow-private",
        // Two nodes at once: a second task waits, pending, behind the first.
        "--max-concurrent-nodes",
        "2",
    ];
    let (hook, got) = receiver().await;
    let _sim = sim(r#"
nodes:
  - namePrefix: trio-
    count: 6
    labels: {suite: trio}
images:
  - match: "*"
    pullSeconds: 2
"#);
    let redis = Redis::start();
    let ns = "t-trio";
    let names = ["trio-a", "trio-b", "trio-c"];
    let mut svcs: Vec<Service> = names
        .iter()
        .map(|n| replica(&redis, ns, n, &extra))
        .collect();
    let group: Vec<&Service> = svcs.iter().collect();
    let leader = agreed_leader(&group, Duration::from_secs(20)).await;
    let li = names.iter().position(|n| *n == leader).unwrap();
    let (fa, fb) = ((li + 1) % 3, (li + 2) % 3);
    assert_eq!(metric(&svcs[li].url, "prewarm_leader").await, Some(1.0));
    assert_eq!(metric(&svcs[fa].url, "prewarm_leader").await, Some(0.0));

    // Created on a follower, watched on the other follower, run by the leader.
    let id = svcs[fa]
        .create(
            json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "trio"}, "batchSize": 2}),
        )
        .await;
    let watch = tokio::spawn({
        let url = svcs[fb].url.clone();
        let id = id.clone();
        async move { sse_events(&url, &id, None).await }
    });
    let done = svcs[fb].wait_end(&id, LONG).await;
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.progress.completed_nodes, 6);
    let events = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .expect("the stream on a follower ends with the task")
        .unwrap();
    assert_eq!(events.last().unwrap().0, "finished", "{events:?}");
    assert!(
        events.iter().filter(|(e, _)| e == "progress").count() >= 2,
        "a follower's stream follows the progress: {events:?}"
    );
    // Resuming on another replica with the last id: nothing left to send.
    let last = events.last().unwrap().1.clone();
    let r = http()
        .get(format!("{}/api/v1/tasks/{id}/events", svcs[li].url))
        .header("Last-Event-ID", &last)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    // Created on one follower, cancelled on the other: the leader stops it.
    // Behind it, a task still pending is cancelled on a follower too. Both
    // owe a webhook, and only the leader sends webhooks.
    let slow = svcs[fa]
        .create(json!({"images": ["busybox:1.36"], "nodeSelector": {"suite": "trio"}, "batchSize": 2, "webhookUrl": hook}))
        .await;
    svcs[li]
        .wait_until(&slow, LONG, |t| t.status == TaskStatus::Running)
        .await;
    let queued = svcs[fa]
        .create(
            json!({"images": ["redis:7"], "nodeSelector": {"suite": "trio"}, "webhookUrl": hook}),
        )
        .await;
    let (code, v) = svcs[fb].cancel(&queued).await;
    assert_eq!(code, 200, "{v}");
    let (_, v) = svcs[fb].get(&queued).await;
    assert!(v["startedAt"].is_null(), "it started: {v}");
    let (code, v) = svcs[fb].cancel(&slow).await;
    assert_eq!(code, 200, "{v}");
    let ended = svcs[li].wait_end(&slow, LONG).await;
    assert_eq!(ended.status, TaskStatus::Cancelled);
    wait_no_jobs(ns, LONG).await;
    for id in [&queued, &slow] {
        wait_for("the webhook, delivered", LONG, async || {
            svcs[fa].get(id).await.1["webhookStatus"] == "delivered"
        })
        .await;
        let sent: Vec<_> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| t == id)
            .cloned()
            .collect();
        assert_eq!(sent, [("task.cancelled".to_owned(), id.clone())]);
    }
    for f in [fa, fb] {
        assert!(
            !svcs[f].log().contains("webhook delivered"),
            "a follower sent a webhook:\n{}",
            svcs[f].log()
        );
    }

    // SIGTERM of the leader: it releases the Lease and a follower leads within 2 s.
    let stopped = Instant::now();
    svcs[li].sigterm();
    let stopping = svcs.remove(li);
    let rest: Vec<&Service> = svcs.iter().collect();
    let rest_names: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, n)| *n)
        .collect();
    let next = new_leader(&rest, &rest_names, Duration::from_secs(20)).await;
    let took = stopped.elapsed();
    println!("sigterm takeover: {} ms", took.as_millis());
    // The issue's bound (the Lease would expire only after 15 s); figures in BENCHMARKS.md.
    assert!(took <= Duration::from_secs(2), "took {took:?}");
    // It handed over by releasing, not by letting the Lease expire.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stopping.log().contains("released the Lease") {
        assert!(Instant::now() < deadline, "{}", stopping.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stopping);
    // The new leader runs tasks too.
    let id = rest[1 - next]
        .create(
            json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "trio"}, "batchSize": 6}),
        )
        .await;
    assert_eq!(
        rest[next].wait_end(&id, LONG).await.status,
        TaskStatus::Completed
    );

    // A keep-warm policy created on the follower: the leader's controller
    // hears of it through the store's policies channel and warms the nodes
    // that lack its image, well before its periodic resync would have run.
    let created = Instant::now();
    let r = http()
        .post(format!("{}/api/v1/keep-warm", rest[1 - next].url))
        .json(&json!({"name": "trio-warm", "images": ["memcached:1.6"], "nodeSelector": {"suite": "trio"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let policy: Value = r.json().await.unwrap();
    let policy = policy["id"].as_str().unwrap().to_owned();
    assert!(policy.starts_with("keep-warm-"), "{policy}");
    let url = format!("{}/api/v1/tasks?limit=100", rest[1 - next].url);
    let heard = async || {
        let list: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["trigger"] == "keep-warm" && t["keepWarmPolicyId"] == policy.as_str())
    };
    wait_for("the policy's first run", RESYNC_BOUND, heard).await;
    println!(
        "policy created on a follower to its first run: {} ms ({policy})",
        created.elapsed().as_millis()
    );
}

/// Well under the keep-warm controller's periodic resync (30 s): a run
/// sooner than this was woken by the policy's change, not by the resync.
const RESYNC_BOUND: Duration = Duration::from_secs(10);

/// A local webhook receiver: every `(event, task id)` it was sent.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    use axum::routing::post;
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        post({
            let got = got.clone();
            move |body: axum::Json<Value>| async move {
                got.lock().unwrap().push((
                    body["event"].as_str().unwrap_or("").to_owned(),
                    body["task"]["taskId"].as_str().unwrap_or("").to_owned(),
                ));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.1:{port}/hook"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_hands_the_task_over_every_time() {
    let kills: usize = std::env::var("PREWARM_FAILOVER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let nodes = 40;
    let _sim = sim(&format!(
        r#"
nodes:
  - namePrefix: kill-
    count: {nodes}
    labels: {{suite: kill}}
images:
  - match: "*"
    pullSeconds: 3
"#
    ));
    let redis = Redis::start();
    let ns = "t-kill";
    let jobs = JobLog::watch(ns).await;
    let (hook, got) = receiver().await;
    let names = ["kill-a", "kill-b", "kill-c"];
    let extra = ["--webhook-allow-private"];
    let mut svcs: Vec<Service> = names
        .iter()
        .map(|n| replica(&redis, ns, n, &extra))
        .collect();
    let group: Vec<&Service> = svcs.iter().collect();
    agreed_leader(&group, Duration::from_secs(20)).await;
    let id = svcs[0]
        .create(json!({"images": ["nginx:1.25", "redis:7"], "nodeSelector": {"suite": "kill"}, "batchSize": 8, "webhookUrl": hook}))
        .await;

    let mut takeovers = Vec::new();
    for round in 0..kills {
        let group: Vec<&Service> = svcs.iter().collect();
        let leader = new_leader(&group, &names, LONG).await;
        // Kill at a different point of the task each round.
        tokio::time::sleep(Duration::from_millis(300 + 700 * (round as u64 % 4))).await;
        svcs[leader].kill9();
        let killed = Instant::now();
        let alive: Vec<(usize, &Service)> = svcs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .collect();
        let group: Vec<&Service> = alive.iter().map(|(_, s)| *s).collect();
        let alive_names: Vec<&str> = alive.iter().map(|(i, _)| names[*i]).collect();
        new_leader(
            &group,
            &alive_names,
            LEASE_DURATION + Duration::from_secs(10),
        )
        .await;
        let took = killed.elapsed();
        println!(
            "round {round}: takeover after kill -9 in {} ms",
            took.as_millis()
        );
        takeovers.push(took);
        // The killed replica comes back (as a follower).
        svcs[leader] = replica(&redis, ns, names[leader], &extra);
    }

    let done = svcs[0].wait_end(&id, LONG).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:#?}");
    assert_eq!(done.progress.completed_nodes, nodes);
    assert_eq!(done.progress.failed_nodes, 0);
    for status in &done.image_statuses {
        assert_eq!(status.completed_nodes, nodes, "{status:?}");
    }
    // No Job was ever created twice (one name per node and attempt).
    let per_node = jobs.per_node();
    assert_eq!(per_node.len(), nodes as usize, "{per_node:?}");
    let twice: BTreeMap<_, _> = per_node.iter().filter(|(_, j)| j.len() > 1).collect();
    assert!(twice.is_empty(), "nodes with several Jobs: {twice:?}");
    assert_eq!(jobs.created(), nodes as usize);
    wait_no_jobs(ns, LONG).await;
    // The end of the task reached the webhook receiver.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !got
        .lock()
        .unwrap()
        .iter()
        .any(|(e, t)| e == "task.completed" && *t == id)
    {
        assert!(
            Instant::now() < deadline,
            "no webhook: {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    takeovers.sort();
    for took in &takeovers {
        assert!(
            *took <= LEASE_DURATION + Duration::from_secs(2),
            "takeovers {takeovers:?}"
        );
    }
    if !takeovers.is_empty() {
        println!(
            "takeover after kill -9 over {} kills: median {} ms, max {} ms (lease {} s)",
            takeovers.len(),
            takeovers[takeovers.len() / 2].as_millis(),
            takeovers.last().unwrap().as_millis(),
            LEASE_DURATION.as_secs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_task_gives_503_then_the_task_completes() {
    let _sim = sim(r#"
nodes:
  - namePrefix: rr-
    count: 4
    labels: {suite: redis-restart}
images:
  - match: "*"
    pullSeconds: 4
"#);
    let mut redis = Redis::start();
    let ns = "t-redis-restart";
    let svc = replica(&redis, ns, "rr-a", &[]);
    agreed_leader(&[&svc], Duration::from_secs(20)).await;
    let id = svc
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "redis-restart"}, "batchSize": 2}))
        .await;
    svc.wait_until(&id, LONG, |t| t.status == TaskStatus::Running)
        .await;

    redis.stop();
    let asked = Instant::now();
    let (code, v) = svc.get(&id).await;
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["error"], "Store unavailable", "{v}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "answered after {:?}",
        asked.elapsed()
    );
    let (code, _) = svc.post(json!({"images": ["nginx"]})).await;
    assert_eq!(code, 503);
    let ready = http()
        .get(format!("{}/readyz", svc.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    redis.restart();
    let done = svc.wait_end(&id, LONG).await;
    assert_eq!(done.status, TaskStatus::Completed, "{done:#?}");
    assert_eq!(done.progress.completed_nodes, 4);
    wait_no_jobs(ns, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sqlite_replica_refuses_to_start_and_deletes_nothing() {
    let _sim = sim(r#"
nodes:
  - namePrefix: solo-
    count: 2
    labels: {suite: solo}
images:
  - match: "*"
    pullSeconds: 30
"#);
    let ns = "t-solo";
    let dir = tempfile::tempdir().unwrap();
    let first = Service::start_with(ns, &dir.path().join("a.db"), &["--replica-name", "solo-a"]);
    let id = first
        .create(json!({"images": ["nginx:1.25"], "nodeSelector": {"suite": "solo"}}))
        .await;
    let jobs_deadline = Instant::now() + LONG;
    while jobs_in(ns).await < 2 {
        assert!(
            Instant::now() < jobs_deadline,
            "the first replica's Jobs never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let second_db = dir.path().join("b.db");
    let out = Command::new(env!("CARGO_BIN_EXE_prewarm"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--namespace",
            ns,
            "--replica-name",
            "solo-b",
        ])
        .arg("--kubeconfig")
        .arg(cluster().kubeconfig_path())
        .arg("--database")
        .arg(&second_db)
        .output()
        .expect("run prewarm");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "another prewarm instance (solo-a) runs the engine in namespace {ns}; several replicas need --store redis"
        )),
        "{stderr}"
    );
    assert_eq!(jobs_in(ns).await, 2, "the second replica deleted Jobs");
    let (code, v) = first.get(&id).await;
    assert_eq!(code, 200);
    assert_eq!(v["status"], "running", "{v}");
}

/// Every node of `nodes` got exactly `per_node` pull objects (one per task).
fn pulls_per_node(log: &JobLog, nodes: usize, per_node: usize) {
    let seen = log.per_node();
    assert_eq!(seen.len(), nodes, "{seen:#?}");
    let off: BTreeMap<_, _> = seen.iter().filter(|(_, j)| j.len() != per_node).collect();
    assert!(
        off.is_empty(),
        "nodes without exactly {per_node} pulls: {off:#?}"
    );
}

fn completed_exactly(task: &prewarm_api::Task, nodes: usize) {
    assert_eq!(task.status, TaskStatus::Completed, "{task:#?}");
    assert_eq!(task.progress.completed_nodes as usize, nodes);
    assert_eq!(task.progress.failed_nodes, 0);
    for status in &task.image_statuses {
        assert_eq!(status.completed_nodes as usize, nodes, "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewals_failing_within_the_deadline_keep_the_term_and_an_outage_hands_over() {
    let nodes = 16;
    let _sim = sim_suite("renew", nodes, 2);
    let redis = Redis::start();
    let ns = "t-renew";
    let jobs = JobLog::watch(ns).await;
    let names = ["renew-a", "renew-b"];
    let proxies = [
        FaultProxy::start(cluster().kubeconfig_path()).await,
        FaultProxy::start(cluster().kubeconfig_path()).await,
    ];
    let svcs: Vec<Service> = (0..2)
        .map(|i| replica_against(proxies[i].kubeconfig(), &redis, ns, names[i], &[]))
        .collect();
    let group: Vec<&Service> = svcs.iter().collect();
    let leader = agreed_leader(&group, Duration::from_secs(20)).await;
    let li = names.iter().position(|n| *n == leader).unwrap();
    let fi = 1 - li;
    let task = |images: [&str; 2]| json!({"images": images, "nodeSelector": {"suite": "renew"}, "batchSize": 4});

    // Two renewals in a row answered 500 mid-task: retried within the renew
    // deadline (3 s), the term goes on and the task does not notice.
    let id = svcs[fi].create(task(["nginx:1.25", "redis:7"])).await;
    svcs[li]
        .wait_until(&id, LONG, |t| t.progress.completed_nodes >= 1)
        .await;
    proxies[li].fail_lease_writes(2);
    let accepted = proxies[li].lease_writes_forwarded();
    wait_for(
        "two failed renewals, then an accepted one",
        LONG,
        async || {
            proxies[li].lease_writes_failed() == 2
                && proxies[li].lease_writes_forwarded() > accepted
        },
    )
    .await;
    completed_exactly(&svcs[fi].wait_end(&id, LONG).await, nodes);
    let log = svcs[li].log();
    assert!(
        log.contains("renewing the Lease failed; retrying until the renew deadline"),
        "{log}"
    );
    assert!(!log.contains("engine stopped"), "the term ended:\n{log}");
    assert_eq!(
        log.matches("leading: running the engine").count(),
        1,
        "{log}"
    );
    assert!(!svcs[fi].log().contains("leading: running the engine"));
    assert_eq!(metric(&svcs[li].url, "prewarm_leader").await, Some(1.0));

    // The leader cannot reach its Lease for longer than the renew deadline:
    // its term ends (fenced) and the other replica takes over when the Lease
    // expires, adopting the running pulls; every node is pulled once.
    let id = svcs[li].create(task(["busybox:1.36", "alpine:3.20"])).await;
    svcs[li]
        .wait_until(&id, LONG, |t| t.progress.completed_nodes >= 2)
        .await;
    proxies[li].lease_outage(true);
    let lost = Instant::now();
    let next = new_leader(&[&svcs[fi]], &[names[fi]], Duration::from_secs(30)).await;
    assert_eq!(next, 0);
    println!(
        "takeover after the leader's Lease became unreachable: {} ms",
        lost.elapsed().as_millis()
    );
    proxies[li].lease_outage(false);
    let done = svcs[fi].wait_end(&id, LONG).await;
    completed_exactly(&done, nodes);
    let log = svcs[li].log();
    assert!(
        log.contains("the Lease was not renewed within the renew deadline; engine stopped"),
        "{log}"
    );
    pulls_per_node(&jobs, nodes, 2);
    assert_eq!(jobs.created(), 2 * nodes);
    wait_no_jobs(ns, LONG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_cut_off_from_its_lease_leads_again_and_finishes_the_task() {
    // The pull mode and store of a plain install (pods, SQLite), one replica.
    let nodes = 12;
    let _sim = sim_suite("relead", nodes, 2);
    let ns = "t-relead";
    let pods = JobLog::watch_pods(ns).await;
    let proxy = FaultProxy::start(cluster().kubeconfig_path()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--replica-name", "relead-a", "--pull-mode", "pods"];
    args.extend_from_slice(LEASE);
    let svc = Service::start_against(
        proxy.kubeconfig(),
        ns,
        &dir.path().join("prewarm.db"),
        &args,
    );
    let id = svc
        .create(json!({"images": ["nginx:1.25", "redis:7"], "nodeSelector": {"suite": "relead"}, "batchSize": 3}))
        .await;
    svc.wait_until(&id, LONG, |t| t.progress.completed_nodes >= 2)
        .await;
    proxy.lease_outage(true);
    wait_for("the term to end at the renew deadline", LONG, async || {
        svc.log().contains("not renewed within the renew deadline")
    })
    .await;
    wait_for(
        "a look at the Lease after the term ended",
        LONG,
        async || svc.log().contains("leading again once it is won back"),
    )
    .await;
    let (_, v) = svc.get(&id).await;
    assert_eq!(v["status"], "running", "{v}");
    proxy.lease_outage(false);
    let done = svc.wait_end(&id, LONG).await;
    completed_exactly(&done, nodes);
    let log = svc.log();
    assert_eq!(
        log.matches("leading: running the engine").count(),
        2,
        "{log}"
    );
    // It led again only after renewing the Lease that still named it.
    let renewed = log.find("renewed it before leading").expect(&log);
    assert!(
        renewed < log.rfind("leading: running the engine").unwrap(),
        "{log}"
    );
    pulls_per_node(&pods, nodes, 1);
    wait_no_pods(ns, LONG).await;
}
