//! Keep-warm policies end to end (real kube-apiserver, kube-sim nodes, the
//! real `prewarm` binary on SQLite): nodes joining later are warmed through
//! the engine, a gating taint comes off only warm nodes, a disabled policy
//! does nothing, and a policy outlives a kill -9.

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

/// How long a node may take from joining to warm before the test gives up
/// (generous: the machine is shared; BENCHMARKS.md has the measured figures).
const WARM_DEADLINE: Duration = Duration::from_secs(60);
const GATE: &str = "prewarm.io/cold";

/// `method` `path` with an optional JSON body; (status, JSON body).
async fn call(
    svc: &Service,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http().request(method, format!("{}{path}", svc.url));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Creates a policy that must be accepted; its view.
async fn create_policy(svc: &Service, body: Value) -> Value {
    let (code, v) = call(svc, reqwest::Method::POST, "/api/v1/keep-warm", Some(body)).await;
    assert_eq!(code, 201, "{v}");
    v
}

async fn policy(svc: &Service, id: &str) -> Value {
    let (code, v) = call(
        svc,
        reqwest::Method::GET,
        &format!("/api/v1/keep-warm/{id}"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v
}

/// A node as the API server has it now; `None` once it is gone.
async fn node(name: &str) -> Option<Node> {
    let api: kube::Api<Node> = kube::Api::all(cluster().kube_client().await);
    api.get_opt(name).await.unwrap()
}

fn reported_images(n: &Node) -> Vec<String> {
    n.status
        .as_ref()
        .and_then(|s| s.images.clone())
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.names.unwrap_or_default())
        .collect()
}

fn has_gate(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == GATE))
}

/// Whether `n` reports `image` (`repo:tag`, matched on containerd's normalized name).
fn holds(n: &Node, image: &str) -> bool {
    reported_images(n)
        .iter()
        .any(|r| r == image || r.ends_with(&format!("/{image}")))
}

/// Waits until `name` exists, holds `image` and carries no gating taint;
/// returns how long that took from the node's creation.
async fn wait_warm(svc: &Service, name: &str, image: &str) -> Duration {
    let deadline = Instant::now() + WARM_DEADLINE;
    loop {
        if let Some(n) = node(name).await {
            if holds(&n, image) && !has_gate(&n) {
                let created = n.metadata.creation_timestamp.unwrap().0;
                let ms = chrono::Utc::now().timestamp_millis() - created.as_millisecond();
                return Duration::from_millis(ms.max(0) as u64);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} not warm and ungated within {WARM_DEADLINE:?}: {:#?}\n--- service log ---\n{}",
            node(name).await.map(|n| (reported_images(&n), n.spec)),
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tasks of the service, newest first.
async fn tasks(svc: &Service) -> Vec<Value> {
    let (code, v) = call(svc, reqwest::Method::GET, "/api/v1/tasks?limit=100", None).await;
    assert_eq!(code, 200, "{v}");
    v["tasks"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_nodes_are_warmed_and_ungated_only_once_warm() {
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: kwj-base-
    count: 2
    labels: {suite: kwj}
  - namePrefix: kwj-late-
    count: 3
    labels: {suite: kwj}
    taints: [{key: prewarm.io/cold, effect: NoSchedule}]
    joinAfter: 15s
  - names: [kwj-broken]
    labels: {suite: kwj}
    taints: [{key: prewarm.io/cold, effect: NoSchedule}]
    joinAfter: 15s
  - names: [kwj-other]
    labels: {suite: elsewhere}
images:
  - match: "*"
    nodes: "kwj-broken"
    fail: ErrImagePull
    message: "manifest unknown"
"#);
    let ns = "t-kwj";
    let jobs = JobLog::watch(ns).await;
    let svc = Service::start(ns);
    let image = "nginx:1.27";
    let created = create_policy(
        &svc,
        json!({"name": "web pool", "images": [image], "nodeSelector": {"suite": "kwj"},
               "removeTaint": GATE, "batchSize": 5}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("keep-warm-"), "{created}");
    assert_eq!(created["enabled"], true);
    assert!(
        node("kwj-late-0").await.is_none(),
        "the machine is too slow for this test: the late nodes joined before the policy existed"
    );

    // At creation, the nodes there already are warmed.
    for base in ["kwj-base-0", "kwj-base-1"] {
        wait_warm(&svc, base, image).await;
    }
    // Nodes that join later (tainted by their node template) are warmed and
    // ungated; the one whose pull fails keeps its taint.
    let mut took = Vec::new();
    for late in ["kwj-late-0", "kwj-late-1", "kwj-late-2"] {
        took.push(wait_warm(&svc, late, image).await);
    }
    eprintln!("joined → warm and ungated: {took:?}");
    let view = {
        let deadline = Instant::now() + WARM_DEADLINE;
        loop {
            let v = policy(&svc, &id).await;
            let failed = v["lastRuns"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["status"] == "failed" && r["failedNodes"] == 1);
            if failed {
                break v;
            }
            assert!(Instant::now() < deadline, "no failed run shown: {v:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let broken = node("kwj-broken").await.unwrap();
    assert!(
        has_gate(&broken),
        "a node that failed to warm lost its taint"
    );
    assert!(!holds(&broken, image));
    let coverage = &view["coverage"];
    assert_eq!(coverage["totalNodes"], 6, "{view:#}");
    assert_eq!(coverage["warmNodes"], 5, "{view:#}");
    assert_eq!(coverage["coldNodes"], json!(["kwj-broken"]), "{view:#}");
    assert_eq!(coverage["gatedNodes"], json!(["kwj-broken"]), "{view:#}");

    // Every run is a task of the engine, linked to the policy; the joiners
    // shared runs (not one task per node), and no node outside the policy pulled.
    let runs: Vec<Value> = tasks(&svc)
        .await
        .into_iter()
        .filter(|t| t["trigger"] == "keep-warm")
        .collect();
    assert!(
        runs.iter().all(|t| t["keepWarmPolicyId"] == id.as_str()),
        "{runs:#?}"
    );
    assert!(
        runs.len() <= 4,
        "joining nodes should share runs: {runs:#?}"
    );
    let failed: Vec<&Value> = runs.iter().filter(|t| t["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{runs:#?}");
    assert_eq!(failed[0]["failedNodeDetails"][0]["nodeName"], "kwj-broken");
    assert_eq!(view["lastRuns"].as_array().unwrap().len(), runs.len());
    let pulled = jobs.per_node();
    assert!(!pulled.contains_key("kwj-other"), "{pulled:?}");
    for n in ["kwj-base-0", "kwj-late-0", "kwj-late-1", "kwj-late-2"] {
        assert_eq!(pulled[n].len(), 1, "{n} pulled more than once: {pulled:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_policy_does_nothing_and_a_policy_outlives_kill_9() {
    let _sim = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: kwk-
    count: 2
    labels: {suite: kwk}
"#);
    let ns = "t-kwk";
    let jobs = JobLog::watch(ns).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prewarm.db");
    let mut svc = Service::start_with(ns, &db, &[]);
    let off = create_policy(
        &svc,
        json!({"name": "off", "enabled": false, "images": ["redis:7"], "nodeSelector": {"suite": "kwk"}}),
    )
    .await;
    let on = create_policy(
        &svc,
        json!({"name": "on", "images": ["busybox:1.36"], "nodeSelector": {"suite": "kwk"}}),
    )
    .await;
    let (off, on) = (off["id"].as_str().unwrap(), on["id"].as_str().unwrap());
    for n in ["kwk-0", "kwk-1"] {
        wait_warm(&svc, n, "busybox:1.36").await;
    }
    // The pass that warmed the enabled policy's nodes looked at the disabled one too.
    let disabled = policy(&svc, off).await;
    assert_eq!(disabled["lastRuns"], json!([]), "{disabled:#}");
    assert_eq!(disabled["coverage"]["warmNodes"], 0, "{disabled:#}");
    for n in ["kwk-0", "kwk-1"] {
        assert!(!holds(&node(n).await.unwrap(), "redis:7"));
        assert_eq!(jobs.per_node()[n].len(), 1, "{:?}", jobs.per_node());
    }

    // Down hard; nodes join meanwhile; back up on the same database.
    svc.kill9();
    let _joiners = sim(r#"
timeScale: 0.05
nodes:
  - namePrefix: kwk-late-
    count: 2
    labels: {suite: kwk}
"#);
    let mut svc = Service::start_with(ns, &db, &[]);
    for n in ["kwk-late-0", "kwk-late-1"] {
        wait_warm(&svc, n, "busybox:1.36").await;
    }
    let survived = policy(&svc, on).await;
    assert_eq!(survived["coverage"]["totalNodes"], 4, "{survived:#}");
    assert!(
        survived["lastRuns"].as_array().unwrap().len() >= 2,
        "{survived:#}"
    );
    assert_eq!(policy(&svc, off).await["lastRuns"], json!([]));
    svc.kill9();
}
