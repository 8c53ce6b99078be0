//! Bounded history benchmark on the real local control plane with kube-sim nodes.
//!
//! ```sh
//! cargo bench -p prewarm --bench history -- --tasks 10000 --nodes 5000 --batch 500 --pull-seconds 20
//! ```
//!
//! Stores `--tasks` ended tasks (3 images and 100 failed pairs in each view,
//! as large as a view gets) in a SQLite file, starts the service on it, then
//! prints the list endpoint's latency (`GET /api/v1/tasks`, default page and
//! `limit=100`), and the service's RSS idle and while one task of 2 images
//! runs over `--nodes` nodes (sampled for `--run-seconds`, peak = VmHWM).

mod common;
use common::Service;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use chrono::Utc;
use kube_sim::testing::{LocalCluster, Sim};
use prewarm::store::{SqliteStore, TaskStore};
use prewarm_api::Task;
use serde_json::json;

#[derive(Debug, clap::Parser)]
struct Args {
    /// Ended tasks stored before the service starts.
    #[arg(long, default_value_t = 10_000)]
    tasks: usize,
    /// Simulated nodes of the running task.
    #[arg(long, default_value_t = 5_000)]
    nodes: usize,
    /// The running task's batch size.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Simulated seconds per image pull.
    #[arg(long, default_value_t = 20.0)]
    pull_seconds: f64,
    /// List requests per measurement.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// How long the running task is sampled.
    #[arg(long, default_value_t = 120)]
    run_seconds: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

/// An ended task as large as a view gets: 3 images, 100 failed pairs shown.
fn stored_task(i: usize, now: chrono::DateTime<Utc>) -> Task {
    let created = now - chrono::Duration::seconds((i * 30) as i64);
    let failed: Vec<_> = (0..100)
        .map(|n| {
            json!({"nodeName": format!("pool-a-node-{n:05}"), "image": "registry.example.com/team/service-1:2024.01.16",
                   "reason": "ErrImagePull",
                   "message": "Failed to pull image: rpc error: code = Unknown desc = failed to resolve reference: 401 Unauthorized",
                   "timestamp": created})
        })
        .collect();
    serde_json::from_value(json!({
        "taskId": format!("task-20260101-{i:06}"), "status": "failed",
        "images": ["registry.example.com/team/service-0:2024.01.16", "registry.example.com/team/service-1:2024.01.16", "redis:7"],
        "batchSize": 500, "nodeSelector": {"pool": "a"}, "nodeNames": [], "priority": 0, "maxRetries": 0,
        "retryStrategy": "fixed", "retryDelay": 30, "webhookUrl": null, "pullPolicy": "IfNotPresent",
        "imagePullSecrets": [], "tolerateTaints": true, "timeoutSeconds": 0, "priorityClassName": null,
        "progress": {"totalNodes": 5000, "completedNodes": 4900, "failedNodes": 100, "skippedNodes": 0,
                     "currentBatch": 10, "totalBatches": 10, "percentage": 98.0},
        "failedNodeDetails": failed, "failedNodeDetailsTotal": 100, "skippedNodeDetails": [],
        "imageStatuses": [], "reason": null, "errorMessage": null, "createdBy": "bench",
        "createdAt": created, "startedAt": created, "finishedAt": created + chrono::Duration::minutes(4),
        "estimatedCompletion": null,
    }))
    .unwrap()
}

/// p50 and p95 of `requests` sequential GETs of `url`, in milliseconds.
async fn latency(http: &reqwest::Client, url: &str, requests: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(requests);
    for _ in 0..requests {
        let sent = Instant::now();
        let r = http.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await.unwrap();
        ms.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[(ms.len() - 1) * 95 / 100])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    let t = Instant::now();
    {
        let store = SqliteStore::open(&db).unwrap();
        let now = Utc::now();
        for i in 0..args.tasks {
            store.insert(&stored_task(i, now)).await.unwrap();
        }
    }
    let db_mib = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;
    eprintln!(
        "{} tasks stored in {:.1}s",
        args.tasks,
        t.elapsed().as_secs_f64()
    );

    let cluster = LocalCluster::up();
    let scenario = format!(
        "timeScale: 1.0\nnodes:\n  - namePrefix: hist-\n    count: {}\n    labels: {{suite: history}}\nimages:\n  - match: \"*\"\n    pullSeconds: {}\npreloaded:\n  - image: prewarm:bench\n    nodes: \"*\"\n",
        args.nodes, args.pull_seconds
    );
    let t = Instant::now();
    let _sim = Sim::start(cluster.kubeconfig_path(), &scenario);
    eprintln!(
        "{} nodes registered in {:.1}s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );

    let max_tasks = (args.tasks + 100).to_string();
    let service = Service::start(
        cluster.kubeconfig_path(),
        "bench-history",
        [
            OsStr::new("--max-concurrent-nodes"),
            OsStr::new("1000"),
            OsStr::new("--store"),
            OsStr::new("sqlite"),
            OsStr::new("--database"),
            db.as_os_str(),
            OsStr::new("--max-tasks"),
            OsStr::new(&max_tasks),
        ],
    );
    let url = service.url.clone();
    let http = prewarm_cli::tls::http_client_builder().build().unwrap();
    let list = format!("{url}/api/v1/tasks");
    let total = http
        .get(&list)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["total"]
        .clone();
    assert_eq!(total, args.tasks, "stored tasks seen by the service");

    let fresh = service.memory();
    let (p50, p95) = latency(&http, &list, args.requests).await;
    let (p50_100, p95_100) = latency(&http, &format!("{list}?limit=100"), args.requests).await;
    let idle_rss = service.status_mib("VmRSS:");
    let idle = service.memory();

    let id = http
        .post(&list)
        .json(&json!({"images": ["history/app:1", "history/db:1"], "batchSize": args.batch, "nodeSelector": {"suite": "history"}}))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let mut peak_rss = idle_rss;
    let mut at_peak = idle.clone();
    let mut status = String::new();
    while started.elapsed() < Duration::from_secs(args.run_seconds) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = service.status_mib("VmRSS:");
        if rss > peak_rss {
            peak_rss = rss;
            at_peak = service.memory();
        }
        let task: serde_json::Value = http
            .get(format!("{list}/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = format!(
            "{} {}/{}",
            task["status"], task["progress"]["completedNodes"], task["progress"]["totalNodes"]
        );
        if task["status"] != "running" && task["status"] != "pending" {
            break;
        }
    }
    let (run_p50, run_p95) = latency(&http, &list, args.requests).await;
    let hwm = service.status_mib("VmHWM:");
    drop(service);

    println!("stored tasks: {} (SQLite file {db_mib:.1} MiB)", args.tasks);
    println!(
        "GET /api/v1/tasks (limit 10), idle: p50 {p50:.1} ms, p95 {p95:.1} ms ({} requests)",
        args.requests
    );
    println!("GET /api/v1/tasks?limit=100, idle: p50 {p50_100:.1} ms, p95 {p95_100:.1} ms");
    println!(
        "GET /api/v1/tasks (limit 10), during the task: p50 {run_p50:.1} ms, p95 {run_p95:.1} ms"
    );
    println!("service memory at start, before any call: {fresh}");
    println!("service RSS idle with the stored tasks: {idle_rss:.1} MiB");
    println!("  after the list calls: {idle}");
    println!("  at the peak while the task runs: {at_peak}");
    println!(
        "service RSS while a {}-node task runs ({:.0} s sampled, task {status}): peak sampled {peak_rss:.1} MiB, VmHWM {hwm:.1} MiB",
        args.nodes,
        started.elapsed().as_secs_f64()
    );
}
