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
//! runs over `--nodes` nodes (sampled for `--run-seconds`, peak = VmHWM),
//! and `--settle-seconds` after that task is cancelled.
//!
//! `--service 'LABEL=PATH [NAME=VALUE ...]'` (repeatable) measures other
//! `prewarm` binaries one after another on the same cluster, each on its own
//! copy of the stored tasks and in its own namespace, and prints them side by
//! side; `scripts/bench-memory.sh` builds the release binaries (system
//! allocator, jemalloc) and runs it that way.

mod common;
use common::{Binary, Service};

use std::ffi::OsStr;
use std::path::Path;
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
    /// How long after the task is cancelled the RSS is read again.
    #[arg(long, default_value_t = 30)]
    settle_seconds: u64,
    /// A `prewarm` binary to measure: `LABEL=PATH [NAME=VALUE ...]`
    /// (repeatable; default: the one built with the bench).
    #[arg(long = "service", value_parser = Binary::parse)]
    services: Vec<Binary>,
    /// The SQLite file of stored tasks: used as it is if it exists (it must
    /// hold `--tasks` tasks), else written there (default: a temporary file).
    #[arg(long)]
    database: Option<std::path::PathBuf>,
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

/// What one binary measured.
struct Figures {
    label: String,
    list: (f64, f64),
    list_100: (f64, f64),
    list_running: (f64, f64),
    fresh: String,
    idle: String,
    at_peak: String,
    settled: String,
    peak_rss: f64,
    hwm: f64,
    sampled: f64,
    status: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let dir = tempfile::tempdir().unwrap();
    let db = args
        .database
        .clone()
        .unwrap_or_else(|| dir.path().join("history.db"));
    if !db.exists() {
        let t = Instant::now();
        let store = SqliteStore::open(&db).unwrap();
        let now = Utc::now();
        for i in 0..args.tasks {
            store.insert(&stored_task(i, now)).await.unwrap();
        }
        eprintln!(
            "{} tasks stored in {:.1}s",
            args.tasks,
            t.elapsed().as_secs_f64()
        );
    }
    let db_mib = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0;

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

    let services = if args.services.is_empty() {
        vec![Binary::built()]
    } else {
        args.services.clone()
    };
    let mut all = Vec::new();
    for (i, binary) in services.iter().enumerate() {
        // Each binary starts from the same stored tasks.
        let copy = dir.path().join(format!("service-{i}.db"));
        std::fs::copy(&db, &copy).unwrap();
        let figures = measure(&args, binary, i, cluster.kubeconfig_path(), &copy).await;
        std::fs::remove_file(&copy).ok();
        print_figures(&args, db_mib, &figures);
        all.push(figures);
    }
    if all.len() > 1 {
        println!();
        println!("| service | list p50 (10) | list p50 (100) | list p50, task running | RSS idle after lists | RSS peak sampled | VmHWM | RSS after cancel + {} s |", args.settle_seconds);
        println!("|---|---|---|---|---|---|---|---|");
        for f in &all {
            println!(
                "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {:.1} MiB | {:.1} MiB | {} |",
                f.label,
                f.list.0,
                f.list_100.0,
                f.list_running.0,
                f.idle,
                f.peak_rss,
                f.hwm,
                f.settled
            );
        }
    }
}

/// Runs `binary` on `db` in namespace `bench-history-<index>`: the list calls,
/// one task over every node (images of its own, so no earlier run's pulls
/// count), then its cancel.
async fn measure(
    args: &Args,
    binary: &Binary,
    index: usize,
    kubeconfig: &Path,
    db: &Path,
) -> Figures {
    let max_tasks = (args.tasks + 100).to_string();
    let namespace = format!("bench-history-{index}");
    let service = Service::start_binary(
        binary,
        kubeconfig,
        &namespace,
        [
            OsStr::new("--max-concurrent-nodes"),
            OsStr::new("1000"),
            OsStr::new("--store"),
            OsStr::new("sqlite"),
            OsStr::new("--database"),
            db.as_os_str(),
            OsStr::new("--max-tasks"),
            OsStr::new(&max_tasks),
            // The list calls go back to back; a release build answers them
            // faster than the default per-client rate limit allows.
            OsStr::new("--rate-limit-rps"),
            OsStr::new("0"),
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
    let list_10 = latency(&http, &list, args.requests).await;
    let list_100 = latency(&http, &format!("{list}?limit=100"), args.requests).await;
    let idle_rss = service.status_mib("VmRSS:");
    let idle = service.memory();

    let images = [
        format!("history/app-{index}:1"),
        format!("history/db-{index}:1"),
    ];
    let id = http
        .post(&list)
        .json(&json!({"images": images, "batchSize": args.batch, "nodeSelector": {"suite": "history"}}))
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
    let sampled = started.elapsed().as_secs_f64();
    let list_running = latency(&http, &list, args.requests).await;
    let hwm = service.status_mib("VmHWM:");
    // Cancelling deletes the task's pull Pods, so the next binary's run has the nodes to itself.
    let cancelled = http.delete(format!("{list}/{id}")).send().await.unwrap();
    assert!(
        cancelled.status().is_success() || cancelled.status() == 409,
        "cancel: {}",
        cancelled.status()
    );
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let settled = service.memory();
    drop(service);
    Figures {
        label: binary.label.clone(),
        list: list_10,
        list_100,
        list_running,
        fresh,
        idle,
        at_peak,
        settled,
        peak_rss,
        hwm,
        sampled,
        status,
    }
}

fn print_figures(args: &Args, db_mib: f64, f: &Figures) {
    println!("== {}", f.label);
    println!("stored tasks: {} (SQLite file {db_mib:.1} MiB)", args.tasks);
    println!(
        "GET /api/v1/tasks (limit 10), idle: p50 {:.1} ms, p95 {:.1} ms ({} requests)",
        f.list.0, f.list.1, args.requests
    );
    println!(
        "GET /api/v1/tasks?limit=100, idle: p50 {:.1} ms, p95 {:.1} ms",
        f.list_100.0, f.list_100.1
    );
    println!(
        "GET /api/v1/tasks (limit 10), during the task: p50 {:.1} ms, p95 {:.1} ms",
        f.list_running.0, f.list_running.1
    );
    println!("service memory at start, before any call: {}", f.fresh);
    println!("  after the list calls: {}", f.idle);
    println!("  at the peak while the task runs: {}", f.at_peak);
    println!(
        "  {} s after the task was cancelled: {}",
        args.settle_seconds, f.settled
    );
    println!(
        "service RSS while a {}-node task runs ({:.0} s sampled, task {}): peak sampled {:.1} MiB, VmHWM {:.1} MiB",
        args.nodes, f.sampled, f.status, f.peak_rss, f.hwm
    );
}
