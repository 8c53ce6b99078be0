//! Keep-warm benchmark on the real local control plane with kube-sim nodes.
//!
//! ```sh
//! cargo bench -p prewarm --bench keep_warm -- --nodes 5000 --joining 100 --images 50
//! ```
//!
//! N nodes hold `--images` images each (the policy's image among them, so
//! the policy has nothing to do at creation); then `--joining` cold nodes
//! register at once. Prints, for the joiners, the time from the node first
//! seen Ready (a watch) to its `status.images` listing the policy's image
//! (p50, p95, max), and the latency of `GET /api/v1/coverage` for all the
//! images over all the nodes (p50, p95).

mod common;
use common::{percentile, Service};

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube_sim::testing::{LocalCluster, Sim};

/// The policy's image.
const KEEP_IMAGE: &str = "bench/keep:1";

#[derive(clap::Parser)]
#[command(
    about = "Keep-warm over N kube-sim nodes: Ready → warm for nodes joining at once, coverage latency"
)]
struct Args {
    /// Nodes there from the start (warm already).
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Nodes joining at once under the policy.
    #[arg(long, default_value_t = 100)]
    joining: usize,
    /// Images every initial node reports (the policy's included; the kubelet lists at most 50).
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// Seconds after the initial nodes are registered that the joiners register.
    #[arg(long, default_value_t = 60)]
    join_after: u64,
    /// Simulated seconds per image pull.
    #[arg(long, default_value_t = 1.0)]
    pull_seconds: f64,
    /// Coverage requests timed.
    #[arg(long, default_value_t = 20)]
    coverage_requests: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long = "bench", hide = true)]
    _bench: bool,
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn holds(n: &Node, image: &str) -> bool {
    let suffix = format!("/{image}");
    n.status
        .as_ref()
        .and_then(|s| s.images.as_ref())
        .is_some_and(|images| {
            images
                .iter()
                .flat_map(|i| i.names.iter().flatten())
                .any(|name| name.ends_with(&suffix))
        })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let cluster = LocalCluster::up();
    let mut scenario = format!(
        "timeScale: 1.0\nnodes:\n  - namePrefix: bench-\n    count: {}\n    labels: {{suite: bench}}\n  - namePrefix: late-\n    count: {}\n    labels: {{suite: bench}}\n    joinAfter: {}s\nimages:\n  - match: \"*\"\n    pullSeconds: {}\npreloaded:\n  - image: prewarm:bench\n  - image: {KEEP_IMAGE}\n    nodes: \"bench-*\"\n",
        args.nodes, args.joining, args.join_after, args.pull_seconds
    );
    let others: Vec<String> = (0..args.images.saturating_sub(2))
        .map(|i| format!("bench/img-{i}:1"))
        .collect();
    for image in &others {
        scenario.push_str(&format!("  - image: {image}\n    nodes: \"bench-*\"\n"));
    }
    // Joiners are watched from before they exist.
    let client = cluster.kube_client().await;
    let seen_ready: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let warm: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    {
        let (seen_ready, warm) = (seen_ready.clone(), warm.clone());
        let api: Api<Node> = Api::all(client.clone());
        tokio::spawn(async move {
            let mut s = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(Ok(ev)) = s.next().await {
                if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = ev {
                    let name = n.metadata.name.clone().unwrap_or_default();
                    if !name.starts_with("late-") {
                        continue;
                    }
                    if ready(&n) {
                        seen_ready
                            .lock()
                            .unwrap()
                            .entry(name.clone())
                            .or_insert_with(Instant::now);
                    }
                    if holds(&n, KEEP_IMAGE) {
                        warm.lock()
                            .unwrap()
                            .entry(name)
                            .or_insert_with(Instant::now);
                    }
                }
            }
        });
    }
    let t = Instant::now();
    let _sim = Sim::start(cluster.kubeconfig_path(), &scenario);
    let registered = Instant::now();
    eprintln!(
        "{} nodes with {} images each registered in {:.1}s",
        args.nodes,
        args.images,
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("bench.db");
    let service = Service::start(
        cluster.kubeconfig_path(),
        "bench",
        [
            OsStr::new("--database"),
            database.as_os_str(),
            OsStr::new("--max-concurrent-nodes"),
            OsStr::new("1000"),
        ],
    );
    let url = service.url.clone();
    let http = prewarm_cli::tls::http_client_builder().build().unwrap();

    // Coverage of every image over all the nodes, once the cache holds them.
    let mut all_images = vec![KEEP_IMAGE.to_owned()];
    all_images.extend(others.iter().cloned());
    let coverage_url = format!(
        "{url}/api/v1/coverage?images={}&nodeSelector=suite=bench",
        all_images.join(",")
    );
    loop {
        let v: serde_json::Value = http
            .get(&coverage_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["totalNodes"].as_u64() == Some(args.nodes as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut coverage_ms = Vec::new();
    let mut body_bytes = 0;
    for _ in 0..args.coverage_requests {
        let sent = Instant::now();
        let body = http
            .get(&coverage_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        coverage_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        body_bytes = body.len();
    }
    coverage_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());

    let v: serde_json::Value = http
        .post(format!("{url}/api/v1/keep-warm"))
        .json(&serde_json::json!({"name": "bench", "images": [KEEP_IMAGE], "nodeSelector": {"suite": "bench"}, "batchSize": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["id"].is_string(), "policy not created: {v}");
    assert!(
        registered.elapsed() < Duration::from_secs(args.join_after),
        "the policy was created after the joiners registered; raise --join-after"
    );

    let deadline = Instant::now() + Duration::from_secs(args.join_after + 600);
    loop {
        if warm.lock().unwrap().len() >= args.joining {
            break;
        }
        assert!(Instant::now() < deadline, "joiners never all warm");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_at = seen_ready.lock().unwrap().clone();
    let mut ready_to_warm: Vec<f64> = warm
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(n, at)| ready_at.get(n).map(|r| at.duration_since(*r).as_secs_f64()))
        .collect();
    ready_to_warm.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let policy: serde_json::Value = http
        .get(format!(
            "{url}/api/v1/keep-warm/{}",
            v["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    println!(
        "nodes={} joining={} images/node={} pull={}s",
        args.nodes, args.joining, args.images, args.pull_seconds
    );
    println!(
        "ready→warm (s): p50={:.2} p95={:.2} max={:.2} (n={}, runs={})",
        percentile(&ready_to_warm, 0.5),
        percentile(&ready_to_warm, 0.95),
        ready_to_warm.last().copied().unwrap_or(f64::NAN),
        ready_to_warm.len(),
        policy["lastRuns"].as_array().map_or(0, Vec::len)
    );
    println!(
        "coverage {} images × {} nodes (ms): p50={:.1} p95={:.1} ({} bytes)",
        all_images.len(),
        args.nodes,
        percentile(&coverage_ms, 0.5),
        percentile(&coverage_ms, 0.95),
        body_bytes
    );
    drop(service);
}
